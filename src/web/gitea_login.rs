//! "Log in with Gitea" (issue 19 point 7): OAuth2's authorization-code
//! flow with PKCE (S256) against Gitea's OAuth2 provider, for `[www.auth]
//! type = "gitea"`.
//!
//! Owns: the logins under way ([`Flows`]: per `state`, the PKCE verifier,
//! the hash of the browser's cookie and where to go afterwards; at most
//! [`MAX_FLOWS`], each used once and for [`FLOW_TTL`] at most), the
//! authorize URL ([`start`]), and the callback's talk with Gitea
//! ([`finish`]): the code exchanged at `/login/oauth/access_token` with the
//! verifier and the client secret, then `/api/v1/user`, `/api/v1/user/orgs`
//! and `/api/v1/user/teams` read with the access token (Gitea's swagger:
//! `User`, `Organization`, `Team`). No threads, no channels: the HTTP
//! request threads call in (`www`), which then stores the session through
//! `Store::write` (`master::auth` decides what it may do). The access
//! token serves those reads and is dropped; it is never stored.
//!
//! Attacker's view:
//! - `state` is 256 random bits, bound to the browser that started the
//!   login by a cookie (only its SHA-256 is kept), taken out of the table
//!   by the first callback that names it (a mismatch or a replay finds
//!   nothing), and dead after [`FLOW_TTL`]: a callback from another
//!   browser (login CSRF, a leaked URL) is refused.
//! - PKCE: the verifier never leaves the master except to Gitea's token
//!   endpoint, so a code injected into someone else's callback is refused
//!   by Gitea (it was issued for another challenge).
//! - `next` is only ever a same-site path (`www::safe_next`).
//! - Gitea's answers are size-capped ([`MAX_TOKEN_ANSWER`],
//!   [`MAX_USER_ANSWER`], [`MAX_LIST_ANSWER`]), the pages of lists bounded
//!   ([`MAX_PAGES`]) and the whole callback under [`DEADLINE`]; a login,
//!   organisation or team name that is not a Gitea name (control
//!   characters, HTML, spaces, over 255 bytes) is refused (the login) or
//!   left out (the others).

use crate::config::{is_gitea_name, GiteaAuth};
use crate::master::auth::{self, Membership};
use crate::master::reporters::gitea::agent;
use base64ct::{Base64UrlUnpadded, Encoding};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Cookie binding a login under way to the browser that started it.
pub(crate) const FLOW_COOKIE: &str = "minibot_gitea_login";
/// How long a login under way waits for its callback.
pub(crate) const FLOW_TTL: Duration = Duration::from_secs(600);
/// Logins under way at most; beyond, the oldest is forgotten.
pub(crate) const MAX_FLOWS: usize = 1024;
/// How long a Gitea login's session lasts: its organisations and teams
/// are read again when it logs in again.
pub(crate) const SESSION_SECS: i64 = 12 * 3600;
/// The scopes asked for: the user and its organisations and teams, read
/// only (Gitea 1.22 and later narrow the token to them; older ones ignore
/// them).
pub(crate) const SCOPE: &str = "read:user read:organization";
/// Largest answers read from Gitea, in bytes.
pub(crate) const MAX_TOKEN_ANSWER: u64 = 16 * 1024;
pub(crate) const MAX_USER_ANSWER: u64 = 64 * 1024;
pub(crate) const MAX_LIST_ANSWER: u64 = 1024 * 1024;
/// Entries per page of `/user/orgs` and `/user/teams` (Gitea's maximum).
const PAGE_SIZE: usize = 50;
/// Pages read of each list: 250 organisations and 250 teams at most.
pub(crate) const MAX_PAGES: usize = 5;
/// The whole talk with Gitea in one callback (each request also has its
/// own timeout).
pub(crate) const DEADLINE: Duration = Duration::from_secs(30);
/// The longest Gitea login (Gitea's `UserName` rule: `MaxSize(40)`).
const MAX_LOGIN: usize = 40;
/// One request to Gitea.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A login under way.
struct Flow {
    /// SHA-256 of the browser's [`FLOW_COOKIE`].
    browser: String,
    verifier: String,
    next: String,
    at: Instant,
}

/// The logins under way, shared by the HTTP threads; cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Flows {
    inner: Arc<Mutex<HashMap<String, Flow>>>,
}

impl Flows {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Flow>> {
        // Plain data: a panic elsewhere leaves it usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers `flow` under `state`. Expired flows go first; when the
    /// table is still full the oldest goes (its browser starts again).
    fn insert(&self, state: String, flow: Flow) {
        let mut m = self.lock();
        if m.len() >= MAX_FLOWS {
            m.retain(|_, f| f.at.elapsed() < FLOW_TTL);
        }
        if m.len() >= MAX_FLOWS {
            if let Some(oldest) = m.iter().min_by_key(|(_, f)| f.at).map(|(k, _)| k.clone()) {
                m.remove(&oldest);
            }
        }
        m.insert(state, flow);
    }

    /// Takes the flow of `state` out (whatever happens next, it is used).
    fn take(&self, state: &str) -> Option<Flow> {
        self.lock().remove(state)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// RFC 7636's S256: BASE64URL(SHA256(verifier)), unpadded.
pub(crate) fn pkce_challenge(verifier: &str) -> String {
    Base64UrlUnpadded::encode_string(&Sha256::digest(verifier.as_bytes()))
}

/// Where Gitea sends the browser back: `<buildbot_url>login/gitea/callback`
/// (to be registered in Gitea's OAuth2 application).
pub(crate) fn redirect_uri(buildbot_url: &str) -> String {
    format!(
        "{}/login/gitea/callback",
        buildbot_url.trim_end_matches('/')
    )
}

/// A login just started: where to send the browser, and the value of its
/// [`FLOW_COOKIE`].
pub(crate) struct Started {
    pub location: String,
    pub cookie: String,
}

/// Starts a login that comes back to `next` (already a safe local path).
pub(crate) fn start(
    flows: &Flows,
    g: &GiteaAuth,
    buildbot_url: &str,
    next: &str,
) -> anyhow::Result<Started> {
    let state = auth::random_token()?;
    let cookie = auth::random_token()?;
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw)
        .map_err(|e| anyhow::anyhow!("reading random bytes from the OS: {e}"))?;
    // 43 characters of [A-Za-z0-9_-]: inside RFC 7636's 43..128 unreserved.
    let verifier = Base64UrlUnpadded::encode_string(&raw);
    let mut url = url::Url::parse(&format!("{}/login/oauth/authorize", g.base_url))?;
    url.query_pairs_mut()
        .append_pair("client_id", &g.client_id)
        .append_pair("redirect_uri", &redirect_uri(buildbot_url))
        .append_pair("response_type", "code")
        .append_pair("scope", SCOPE)
        .append_pair("state", &state)
        .append_pair("code_challenge", &pkce_challenge(&verifier))
        .append_pair("code_challenge_method", "S256");
    flows.insert(
        state,
        Flow {
            browser: auth::token_hash(&cookie),
            verifier,
            next: next.to_string(),
            at: Instant::now(),
        },
    );
    Ok(Started {
        location: url.to_string(),
        cookie,
    })
}

/// The `Set-Cookie` of [`FLOW_COOKIE`]: `SameSite=Lax`, as the callback
/// is a navigation from Gitea's site, which a `Strict` cookie would not
/// come with; only sent to the callback's path.
pub(crate) fn flow_cookie(value: &str, max_age: Duration) -> String {
    format!(
        "{FLOW_COOKIE}={value}; Path=/login/gitea; HttpOnly; SameSite=Lax; Max-Age={}",
        max_age.as_secs()
    )
}

/// Why a callback logs nobody in.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Refusal {
    /// No login under way by that `state`: unknown, used or expired (400).
    Stale,
    /// The login was started in another browser (403).
    OtherBrowser,
    /// Gitea said no: the user did not allow it, or the code was refused
    /// (403); what Gitea said.
    Denied(String),
    /// Gitea's answers cannot be used: unreachable, slow, too big,
    /// malformed, or a login that is not a Gitea name (502).
    BadAnswer(String),
}

impl Refusal {
    pub(crate) fn status(&self) -> u16 {
        match self {
            Refusal::Stale => 400,
            Refusal::OtherBrowser | Refusal::Denied(_) => 403,
            Refusal::BadAnswer(_) => 502,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Stale => f.write_str(
                "This login is unknown, already used or expired (10 minutes); log in again.",
            ),
            Refusal::OtherBrowser => {
                f.write_str("This login was started in another browser; log in again from here.")
            }
            Refusal::Denied(why) => write!(f, "Gitea did not let you in: {why}"),
            Refusal::BadAnswer(why) => write!(f, "Gitea's answer cannot be used: {why}"),
        }
    }
}

/// At most 200 characters of a text Gitea sent, without control
/// characters (for messages and the log; pages escape it).
fn tame(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(200).collect()
}

fn param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The callback (`GET /login/gitea/callback?code=...&state=...`): checks
/// the state against the browser's `cookie`, has Gitea exchange the code
/// and reads who the user is. Returns the membership and where to go.
pub(crate) fn finish(
    flows: &Flows,
    g: &GiteaAuth,
    buildbot_url: &str,
    master_dir: &Path,
    query: &[(String, String)],
    cookie: Option<&str>,
) -> Result<(Membership, String), Refusal> {
    let state = param(query, "state").filter(|s| !s.is_empty() && s.len() <= 128);
    let flow = state.and_then(|s| flows.take(s)).ok_or(Refusal::Stale)?;
    if flow.at.elapsed() >= FLOW_TTL {
        return Err(Refusal::Stale);
    }
    let same_browser =
        cookie.is_some_and(|c| auth::same_token(&auth::token_hash(c), &flow.browser));
    if !same_browser {
        return Err(Refusal::OtherBrowser);
    }
    if let Some(e) = param(query, "error") {
        let d = param(query, "error_description").unwrap_or("");
        return Err(Refusal::Denied(tame(&format!("{e}: {d}"))));
    }
    let code = param(query, "code")
        .filter(|c| !c.is_empty() && c.len() <= 1024)
        .ok_or_else(|| Refusal::BadAnswer("the callback has no code".into()))?;
    let secret = g.client_secret.read(master_dir).map_err(|e| {
        log::error!("gitea login: the client secret: {e:#}");
        Refusal::BadAnswer("the master cannot read its client secret; see master.log".into())
    })?;
    let deadline = Instant::now() + DEADLINE;
    let gitea = Gitea {
        agent: agent(g.verify_tls, REQUEST_TIMEOUT),
        base: &g.base_url,
        deadline,
    };
    let token = gitea.exchange(g, &secret, code, &flow.verifier, buildbot_url)?;
    let m = gitea.membership(&token)?;
    Ok((m, flow.next))
}

/// The Gitea server of one callback.
struct Gitea<'a> {
    agent: ureq::Agent,
    base: &'a str,
    deadline: Instant,
}

impl Gitea<'_> {
    fn in_time(&self) -> Result<(), Refusal> {
        if Instant::now() >= self.deadline {
            return Err(Refusal::BadAnswer(format!(
                "Gitea took longer than {} s to answer",
                DEADLINE.as_secs()
            )));
        }
        Ok(())
    }

    /// Status and JSON of an answer of at most `limit` bytes.
    fn read(
        &self,
        res: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        what: &str,
        limit: u64,
    ) -> Result<(u16, Value), Refusal> {
        let mut resp =
            res.map_err(|e| Refusal::BadAnswer(format!("{what}: cannot reach Gitea: {e}")))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(limit)
            .read_to_string()
            .map_err(|e| Refusal::BadAnswer(format!("{what}: HTTP {status}: {e}")))?;
        let v = serde_json::from_str(&text)
            .map_err(|e| Refusal::BadAnswer(format!("{what}: HTTP {status}: not JSON ({e})")))?;
        Ok((status, v))
    }

    /// The access token for `code` (`POST /login/oauth/access_token`, a form
    /// as Gitea's `AccessTokenForm`).
    fn exchange(
        &self,
        g: &GiteaAuth,
        secret: &str,
        code: &str,
        verifier: &str,
        buildbot_url: &str,
    ) -> Result<String, Refusal> {
        self.in_time()?;
        let redirect = redirect_uri(buildbot_url);
        let res = self
            .agent
            .post(&format!("{}/login/oauth/access_token", self.base))
            .header("Accept", "application/json")
            .send_form([
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect.as_str()),
                ("client_id", g.client_id.as_str()),
                ("client_secret", secret),
                ("code_verifier", verifier),
            ]);
        let (status, v) = self.read(res, "exchanging the code", MAX_TOKEN_ANSWER)?;
        if status != 200 {
            let e = v["error"].as_str().unwrap_or("?");
            let d = v["error_description"].as_str().unwrap_or("");
            return Err(Refusal::Denied(tame(&format!("HTTP {status}: {e}: {d}"))));
        }
        let token = v["access_token"].as_str().unwrap_or("");
        let bearer = v["token_type"]
            .as_str()
            .is_some_and(|t| t.eq_ignore_ascii_case("bearer"));
        // It goes into a header: visible ASCII only.
        if !bearer
            || token.is_empty()
            || token.len() > 8192
            || !token.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(Refusal::BadAnswer(
                "the token answer has no usable bearer token".into(),
            ));
        }
        Ok(token.to_string())
    }

    /// `GET /api/v1/<path>` with the token: the JSON of a 200.
    fn get(&self, token: &str, path: &str, limit: u64) -> Result<Value, Refusal> {
        self.in_time()?;
        let res = self
            .agent
            .get(&format!("{}/api/v1/{path}", self.base))
            .header("Authorization", &format!("Bearer {token}"))
            .header("Accept", "application/json")
            .call();
        let what = format!("GET /api/v1/{}", path.split('?').next().unwrap_or(path));
        let (status, v) = self.read(res, &what, limit)?;
        if status != 200 {
            return Err(Refusal::BadAnswer(format!("{what}: HTTP {status}")));
        }
        Ok(v)
    }

    /// Every entry of a paged list (`user/orgs`, `user/teams`), up to
    /// [`MAX_PAGES`] pages.
    fn list(&self, token: &str, path: &str) -> Result<Vec<Value>, Refusal> {
        let mut out = Vec::new();
        for page in 1..=MAX_PAGES {
            let v = self.get(
                token,
                &format!("{path}?page={page}&limit={PAGE_SIZE}"),
                MAX_LIST_ANSWER,
            )?;
            let Value::Array(items) = v else {
                return Err(Refusal::BadAnswer(format!(
                    "GET /api/v1/{path}: not a list"
                )));
            };
            let n = items.len();
            out.extend(items.into_iter().take(PAGE_SIZE));
            if n < PAGE_SIZE {
                break;
            }
        }
        Ok(out)
    }

    /// The user's login, organisations and teams.
    fn membership(&self, token: &str) -> Result<Membership, Refusal> {
        let user = self.get(token, "user", MAX_USER_ANSWER)?;
        let login = user["login"].as_str().unwrap_or("");
        // The user name becomes `gitea:<login>`: Gitea's characters only,
        // and at most Gitea's 40 (its `RegisterForm`).
        if !is_gitea_name(login) || login.len() > MAX_LOGIN {
            return Err(Refusal::BadAnswer(format!(
                "Gitea names the user {:?}, which is not a Gitea user name",
                tame(login)
            )));
        }
        // Organisations: `name` (Gitea 1.20 and later) or `username`.
        let org_name = |o: &Value| {
            o["name"]
                .as_str()
                .or_else(|| o["username"].as_str())
                .filter(|n| is_gitea_name(n))
                .map(str::to_ascii_lowercase)
        };
        let orgs: BTreeSet<String> = self
            .list(token, "user/orgs")?
            .iter()
            .filter_map(org_name)
            .collect();
        let teams: BTreeSet<String> = self
            .list(token, "user/teams")?
            .iter()
            .filter_map(|t| {
                let team = t["name"].as_str().filter(|n| is_gitea_name(n))?;
                let org = org_name(&t["organization"])?;
                Some(format!("{org}/{}", team.to_ascii_lowercase()))
            })
            .collect();
        Ok(Membership {
            login: login.to_ascii_lowercase(),
            orgs: orgs.into_iter().collect(),
            teams: teams.into_iter().collect(),
        })
    }
}

/// The minibot user name of Gitea login `login`: `gitea:<login>`, which no
/// local user can have (`check_user_name` refuses ':' for them).
pub(crate) fn gitea_user_name(login: &str) -> String {
    format!("gitea:{login}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Grant, Secret};

    #[test]
    fn pkce_s256_is_rfc_7636s() {
        // RFC 7636 appendix B.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    fn gitea() -> GiteaAuth {
        GiteaAuth {
            base_url: "https://git.example.org/sub".into(),
            client_id: "id-1".into(),
            client_secret: Secret::Inline("s".into()),
            verify_tls: true,
            admins: vec![Grant::Org("ci".into())],
        }
    }

    #[test]
    fn a_start_asks_for_s256_and_binds_the_state() {
        let flows = Flows::default();
        let s = start(&flows, &gitea(), "https://ci.example.org/", "/builders/x").unwrap();
        let url = url::Url::parse(&s.location).unwrap();
        assert_eq!(url.path(), "/sub/login/oauth/authorize");
        let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["response_type"], "code");
        assert_eq!(
            q["redirect_uri"],
            "https://ci.example.org/login/gitea/callback"
        );
        assert_eq!(q["code_challenge"].len(), 43);
        assert_eq!(q["state"].len(), 64);
        let flow = flows.take(&q["state"]).unwrap();
        assert_eq!(pkce_challenge(&flow.verifier), q["code_challenge"]);
        assert_eq!(flow.browser, auth::token_hash(&s.cookie));
        assert_eq!(flow.next, "/builders/x");
        // Used once.
        assert!(flows.take(&q["state"]).is_none());
    }

    /// The `state` a start sends to Gitea.
    fn state_of(s: &Started) -> String {
        url::Url::parse(&s.location)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "state")
            .unwrap()
            .1
            .into_owned()
    }

    /// A callback without its state, with another browser's cookie, or a
    /// second time, logs nobody in, and never reaches Gitea (whose URL here
    /// would not answer).
    #[test]
    fn callbacks_need_their_state_their_browser_and_come_once() {
        let flows = Flows::default();
        let g = gitea();
        let s = start(&flows, &g, "https://ci.example.org/", "/").unwrap();
        let state = state_of(&s);
        let q = |st: &str| {
            vec![
                ("code".to_string(), "c".to_string()),
                ("state".to_string(), st.to_string()),
            ]
        };
        let dir = Path::new("/nonexistent");
        let f = |query: &[(String, String)], cookie: Option<&str>| {
            finish(&flows, &g, "https://ci.example.org/", dir, query, cookie)
        };
        assert_eq!(f(&q("nope"), Some(&s.cookie)), Err(Refusal::Stale));
        assert_eq!(f(&[], Some(&s.cookie)), Err(Refusal::Stale));
        assert_eq!(f(&q(&state), Some("other")), Err(Refusal::OtherBrowser));
        // The mismatch used it up.
        assert_eq!(f(&q(&state), Some(&s.cookie)), Err(Refusal::Stale));
        // Gitea's own refusal, with what it said (tamed).
        let s2 = start(&flows, &g, "https://ci.example.org/", "/").unwrap();
        let st2 = state_of(&s2);
        let denied = vec![
            ("state".to_string(), st2),
            ("error".to_string(), "access_denied".to_string()),
            ("error_description".to_string(), "no\r\nway".to_string()),
        ];
        assert_eq!(
            f(&denied, Some(&s2.cookie)),
            Err(Refusal::Denied("access_denied: noway".into()))
        );
    }

    #[test]
    fn flows_stay_bounded() {
        let flows = Flows::default();
        let g = gitea();
        for _ in 0..MAX_FLOWS + 10 {
            start(&flows, &g, "https://ci.example.org/", "/").unwrap();
        }
        assert_eq!(flows.len(), MAX_FLOWS);
    }

    #[test]
    fn memberships_match_grants() {
        let m = Membership {
            login: "isabell".into(),
            orgs: vec!["myorg".into()],
            teams: vec!["myorg/ci".into()],
        };
        assert!(m.matches(&[Grant::User("isabell".into())]));
        assert!(m.matches(&[Grant::Org("myorg".into())]));
        assert!(m.matches(&[Grant::Team {
            org: "myorg".into(),
            team: "ci".into()
        }]));
        assert!(!m.matches(&[Grant::Team {
            org: "myorg".into(),
            team: "owners".into()
        }]));
        assert!(!m.matches(&[Grant::Org("other".into()), Grant::User("bob".into())]));
        assert!(!m.matches(&[]));
    }
}
