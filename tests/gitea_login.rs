//! "Log in with Gitea" (issue 19 point 7) against the fake Gitea's OAuth2
//! provider (`common::fake_oauth`, which checks the client secret, the
//! code and the PKCE verifier as Gitea does): a real headless Chromium
//! clicks "Log in with Gitea" and forces a build as a Gitea admin, and as
//! a Gitea user without a role sees no force form and is refused the force
//! request; curl plays the attacker (a
//! wrong or replayed state, a callback from another browser, a replayed
//! code, a code presented with another login's verifier, an open
//! redirect) and a hostile Gitea (a huge token answer, a login with HTML
//! or control characters). The master is reached as `localhost` and the
//! fake Gitea as `127.0.0.1`: two sites, as a real Gitea and CI usually
//! are, so the cookies' SameSite rules are the real ones.

use crate::common::browser::*;
use crate::common::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const CLIENT_ID: &str = "0ba1c6f4-minibot-test";
const CLIENT_SECRET: &str = "gto_fake_client_secret_0123456789abcdef";

/// A master with `[www.auth] type = "gitea"` on the fake Gitea, whose
/// application is registered and whose signed-in user is `isabell`, a
/// member of team `myorg/ci` (an admin by the config).
struct GiteaLogin {
    s: Setup,
    gitea: FakeGitea,
    _master: Proc,
    /// `http://localhost:<port>`: `buildbot_url` without its slash.
    base: String,
}

impl GiteaLogin {
    fn new(anonymous: &str) -> GiteaLogin {
        let gitea = FakeGitea::start("status-token-unused");
        let s = Setup::new(PASSING_TEST, &deploy_cfg("runtests"));
        let (www, _) = s.pick_ports();
        let base = format!("http://localhost:{www}");
        write_private(&s.master.join("gitea-oauth-secret"), CLIENT_SECRET);
        let gitea_url = gitea.url();
        s.edit_cfg(|c| {
            let c = c.replace("[www]\n", &format!("[www]\nanonymous = \"{anonymous}\"\n"));
            format!(
                "buildbot_url = \"{base}/\"\n{c}\n[www.auth]\ntype = \"gitea\"\n\
                 base_url = \"{gitea_url}\"\nclient_id = \"{CLIENT_ID}\"\n\
                 client_secret_file = \"gitea-oauth-secret\"\n\
                 admins = [\"team:myorg/ci\", \"user:root\"]\n"
            )
        });
        {
            let mut o = gitea.oauth.lock().unwrap();
            o.register(
                CLIENT_ID,
                CLIENT_SECRET,
                &format!("{base}/login/gitea/callback"),
            );
            o.sign_in("isabell", &["myorg"], &[("myorg", "ci")]);
        }
        let master = s.start_master();
        GiteaLogin {
            s,
            gitea,
            _master: master,
            base,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn jar(&self) -> PathBuf {
        self.s.tmp.path().join(unique_name("jar"))
    }

    fn sessions(&self) -> Vec<String> {
        db_query::<String>(
            &self.s.master,
            "SELECT u.name FROM sessions s JOIN users u USING (userid) ORDER BY s.created_at",
        )
    }

    fn problems(&self) -> Vec<String> {
        self.gitea.problems.lock().unwrap().clone()
    }
}

/// One HTTP exchange with curl (no redirects followed), with a cookie jar.
struct Hop {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Hop {
    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }
}

fn hop(jar: &Path, url: &str) -> Hop {
    let jar = jar.to_str().unwrap();
    let out = run_ok("curl", &["-s", "-D", "-", "-c", jar, "-b", jar, url]);
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Hop {
        status,
        headers,
        body: body.to_string(),
    }
}

fn query(url: &str) -> HashMap<String, String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

/// `url` with query parameter `k` set to `v`.
fn with_param(url: &str, k: &str, v: &str) -> String {
    let mut u = url::Url::parse(url).unwrap();
    let pairs: Vec<(String, String)> = u
        .query_pairs()
        .into_owned()
        .filter(|(key, _)| key != k)
        .collect();
    u.query_pairs_mut()
        .clear()
        .extend_pairs(pairs)
        .append_pair(k, v);
    u.to_string()
}

impl GiteaLogin {
    /// `GET /login/gitea?next=...` in `jar`: Gitea's authorize URL.
    fn start(&self, jar: &Path, next: &str) -> String {
        let a = hop(jar, &self.url(&format!("/login/gitea?next={next}")));
        assert_eq!(a.status, 303, "{}", a.body);
        a.header("location").to_string()
    }

    /// Signs `login` in to the fake Gitea, a member of `orgs` and `teams`.
    fn sign_in(&self, login: &str, orgs: &[&str], teams: &[(&str, &str)]) {
        self.gitea.oauth.lock().unwrap().sign_in(login, orgs, teams);
    }

    /// A whole login in `jar` as `login` (signed in to the fake first):
    /// the callback's answer.
    fn log_in_as(&self, jar: &Path, login: &str, orgs: &[&str], teams: &[(&str, &str)]) -> Hop {
        self.sign_in(login, orgs, teams);
        hop(jar, &self.approved(jar, "/"))
    }

    /// Starts a login in `jar` and has the fake Gitea approve it: the
    /// callback URL it sends the browser to.
    fn approved(&self, jar: &Path, next: &str) -> String {
        let authorize = self.start(jar, next);
        let back = hop(jar, &authorize);
        assert_eq!(back.status, 303, "authorize: {}", back.body);
        back.header("location").to_string()
    }
}

#[test]
fn state_pkce_and_next_are_checked_and_used_once() {
    let t = GiteaLogin::new("read");
    let jar = t.jar();
    // The start: to Gitea's authorize page with an S256 challenge, the
    // read scopes and a fresh state bound to this browser by a cookie.
    let authorize = t.start(&jar, "/workers");
    assert!(
        authorize.starts_with(&format!("{}/login/oauth/authorize?", t.gitea.url())),
        "{authorize}"
    );
    let q = query(&authorize);
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["code_challenge"].len(), 43, "{q:?}");
    assert_eq!(q["state"].len(), 64);
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(q["scope"], "read:user read:organization");
    assert_eq!(q["redirect_uri"], t.url("/login/gitea/callback"));
    let jar_text = std::fs::read_to_string(&jar).unwrap();
    assert!(jar_text.contains("minibot_gitea_login"), "{jar_text}");

    // A state nobody issued: 400, nobody logged in.
    let back = hop(&jar, &authorize);
    let callback = back.header("location").to_string();
    assert!(callback.starts_with(&t.url("/login/gitea/callback?")));
    let forged = with_param(&callback, "state", &"0".repeat(64));
    let r = hop(&jar, &forged);
    assert_eq!(r.status, 400, "{}", r.body);
    // The right state in another browser (login CSRF, a leaked URL): 403,
    // and the state is used up: its own browser is refused too.
    let r = hop(&t.jar(), &callback);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("another browser"), "{}", r.body);
    let r = hop(&jar, &callback);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(t.sessions().is_empty(), "{:?}", t.sessions());

    // A whole login: a session for gitea:isabell, then on to `next` by a
    // Refresh (the session cookie is SameSite=Strict).
    let callback = t.approved(&jar, "/workers");
    let t0 = std::time::Instant::now();
    let ok = hop(&jar, &callback);
    // The callback's four requests to Gitea (token, user, orgs, teams),
    // the session's commit and curl's own start, for docs/gitea.md.
    eprintln!("gitea login callback answered in {:?}", t0.elapsed());
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.header("refresh"), "0; url=/workers");
    assert!(
        ok.body.contains("Logged in as gitea:isabell"),
        "{}",
        ok.body
    );
    let cookies: Vec<&str> = ok
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("minibot_session=") && c.contains("SameSite=Strict")),
        "{cookies:?}"
    );
    assert_eq!(t.sessions(), vec!["gitea:isabell".to_string()]);
    let (_, page) = curl(&["-b", jar.to_str().unwrap(), &t.url("/workers")]);
    assert!(page.contains("<span>gitea:isabell</span>"), "{page}");
    // Its organisations and teams are kept with the session.
    let stored = db_query::<String>(&t.s.master, "SELECT gitea FROM sessions");
    let m: serde_json::Value = serde_json::from_str(&stored[0]).unwrap();
    assert_eq!(m["login"], "isabell");
    assert_eq!(m["teams"], serde_json::json!(["myorg/ci"]));

    // The same callback again: its state is used.
    let r = hop(&jar, &callback);
    assert_eq!(r.status, 400, "{}", r.body);
    // Its code under a new login's state: Gitea refuses it (the new
    // login's verifier does not match the code's challenge, and the code
    // is used).
    let fresh = t.approved(&jar, "/");
    let replay = with_param(&fresh, "code", &query(&callback)["code"]);
    let r = hop(&jar, &replay);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("Gitea did not let you in"), "{}", r.body);

    // A code issued for one login's challenge, presented with another's
    // state (a code injected into someone's callback): PKCE refuses it.
    let first = t.approved(&jar, "/");
    let second_auth = t.start(&jar, "/");
    let injected = with_param(
        &t.url("/login/gitea/callback?x=1"),
        "code",
        &query(&first)["code"],
    );
    let injected = with_param(&injected, "state", &query(&second_auth)["state"]);
    let r = hop(&jar, &injected);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("failed PKCE code challenge"), "{}", r.body);
    assert_eq!(t.sessions(), vec!["gitea:isabell".to_string()]);

    // `next` is a local path or nothing: no open redirect.
    for evil in [
        "//evil.example/x",
        "https://evil.example/",
        "/\\evil.example",
    ] {
        let enc: String = url::form_urlencoded::byte_serialize(evil.as_bytes()).collect();
        let callback = t.approved(&jar, &enc);
        let ok = hop(&jar, &callback);
        assert_eq!(ok.status, 200, "{}", ok.body);
        assert_eq!(ok.header("refresh"), "0; url=/", "{evil}");
    }

    // Every token request carried the secret and a verifier, and the fake
    // found nothing out of Gitea's shapes.
    let o = t.gitea.oauth.lock().unwrap();
    let tokens = o.token_requests();
    assert!(tokens.len() >= 4, "{}", tokens.len());
    for r in tokens {
        assert_eq!(r.fields["client_secret"], CLIENT_SECRET);
        assert_eq!(r.fields["code_verifier"].len(), 43, "{:?}", r.fields);
        assert_eq!(r.fields["grant_type"], "authorization_code");
    }
    drop(o);
    assert!(t.problems().is_empty(), "{:?}", t.problems());
}

/// The fake refuses what Gitea refuses: a wrong client secret, a wrong
/// verifier, a code used twice (so the tests above show minibot's checks
/// and Gitea's, not a fake that takes anything).
#[test]
fn the_fake_gitea_checks_secret_verifier_and_single_use() {
    let gitea = FakeGitea::start("t");
    let redirect = "http://localhost:1/login/gitea/callback";
    gitea
        .oauth
        .lock()
        .unwrap()
        .register(CLIENT_ID, CLIENT_SECRET, redirect);
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let challenge = fake_oauth::s256(verifier);
    let authorize = format!(
        "{}/login/oauth/authorize?client_id={CLIENT_ID}&redirect_uri={}&response_type=code\
         &state=s1&code_challenge={challenge}&code_challenge_method=S256",
        gitea.url(),
        url::form_urlencoded::byte_serialize(redirect.as_bytes()).collect::<String>()
    );
    let jar = std::env::temp_dir().join(unique_name("fake-oauth-jar"));
    let back = hop(&jar, &authorize);
    assert_eq!(back.status, 303);
    let code = query(back.header("location"))["code"].clone();
    let token = |secret: &str, verifier: &str| {
        let body = form_body(&[
            ("grant_type", "authorization_code"),
            ("client_id", CLIENT_ID),
            ("client_secret", secret),
            ("redirect_uri", redirect),
            ("code", &code),
            ("code_verifier", verifier),
        ]);
        curl(&[
            "--data-binary",
            std::str::from_utf8(&body).unwrap(),
            "-H",
            "Content-Type: application/x-www-form-urlencoded",
            &format!("{}/login/oauth/access_token", gitea.url()),
        ])
    };
    let (code1, body) = token("wrong", verifier);
    assert_eq!(code1, 400, "{body}");
    assert!(body.contains("invalid client secret"), "{body}");
    let (code2, body) = token(CLIENT_SECRET, "another-verifier-another-verifier-another-v");
    assert_eq!(code2, 400, "{body}");
    assert!(body.contains("failed PKCE"), "{body}");
    let (code3, body) = token(CLIENT_SECRET, verifier);
    assert_eq!(code3, 200, "{body}");
    let (code4, body) = token(CLIENT_SECRET, verifier);
    assert_eq!(code4, 400, "{body}");
    assert!(body.contains("already used"), "{body}");
    // An authorize request without PKCE is refused (and noted).
    let no_pkce = authorize.replace("&code_challenge_method=S256", "");
    let r = hop(&jar, &no_pkce);
    assert!(r.header("location").contains("error=invalid_request"));
    let _ = std::fs::remove_file(&jar);
}

#[test]
fn a_hostile_gitea_logs_nobody_in() {
    let t = GiteaLogin::new("read");
    let jar = t.jar();
    // Logins that are no Gitea names: HTML, a control character, too long.
    let long = "x".repeat(300);
    for login in ["<b>x</b>", "a\u{7}b", "isa bell", long.as_str()] {
        let r = t.log_in_as(&jar, login, &["myorg"], &[("myorg", "ci")]);
        assert_eq!(r.status, 502, "{login:?}: {}", r.body);
        assert!(r.body.contains("not a Gitea user name"), "{}", r.body);
        assert!(!r.body.contains("<b>x"), "{}", r.body);
    }
    // A token answer past the 16 KiB cap.
    {
        let mut o = t.gitea.oauth.lock().unwrap();
        o.sign_in("isabell", &["myorg"], &[("myorg", "ci")]);
        o.pad_token_answer = 100 * 1024;
    }
    let callback = t.approved(&jar, "/");
    let r = hop(&jar, &callback);
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(r.body.contains("exchanging the code"), "{}", r.body);
    // A user answer past its 64 KiB cap, a page of teams past its 1 MiB.
    {
        let mut o = t.gitea.oauth.lock().unwrap();
        o.pad_token_answer = 0;
        o.user["description"] = "x".repeat(100 * 1024).into();
    }
    let r = hop(&jar, &t.approved(&jar, "/"));
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(r.body.contains("GET /api/v1/user:"), "{}", r.body);
    {
        let mut o = t.gitea.oauth.lock().unwrap();
        o.sign_in("isabell", &["myorg"], &[("myorg", "ci")]);
        o.teams[0]["description"] = "x".repeat(2 * 1024 * 1024).into();
    }
    let r = hop(&jar, &t.approved(&jar, "/"));
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(r.body.contains("GET /api/v1/user/teams:"), "{}", r.body);
    assert!(t.sessions().is_empty(), "{:?}", t.sessions());
    // Organisation and team names that are no Gitea names are left out;
    // the login itself goes on, without a role.
    let r = t.log_in_as(&jar, "bob", &["<script>"], &[("myorg", "c i")]);
    assert_eq!(r.status, 200, "{}", r.body);
    let stored = db_query::<String>(&t.s.master, "SELECT gitea FROM sessions");
    let m: serde_json::Value = serde_json::from_str(&stored[0]).unwrap();
    assert_eq!(m["orgs"], serde_json::json!([]));
    assert_eq!(m["teams"], serde_json::json!([]));
}

/// With `anonymous = "none"`, a Gitea user without a role is not let in;
/// an admin is.
#[test]
fn without_a_role_a_gitea_user_gets_what_anonymous_gets() {
    let t = GiteaLogin::new("none");
    let jar = t.jar();
    // The login page is open and offers Gitea.
    let (code, page) = curl(&[&t.url("/login")]);
    assert_eq!(code, 200);
    assert!(page.contains("Log in with Gitea"), "{page}");
    let r = t.log_in_as(&jar, "bob", &["otherorg"], &[]);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("admins names neither"), "{}", r.body);
    assert!(t.sessions().is_empty());
    // An admin gets in and may read.
    let r = t.log_in_as(&jar, "isabell", &["myorg"], &[("myorg", "ci")]);
    assert_eq!(r.status, 200, "{}", r.body);
    let (code, _) = curl(&["-b", jar.to_str().unwrap(), &t.url("/workers")]);
    assert_eq!(code, 200);
}

#[test]
fn in_a_browser_a_gitea_admin_forces_and_a_gitea_user_without_a_role_is_refused() {
    if !has_chromium() {
        return;
    }
    let t = GiteaLogin::new("read");
    // isabell has not authorised the application yet: Gitea shows its
    // grant page, and the way back starts on Gitea's site.
    t.gitea.oauth.lock().unwrap().consent = true;
    let (_chromium, mut cdp) = browser(&t.s);
    let log_in_with_gitea = |cdp: &mut Cdp, who: &str, consent: bool| {
        cdp.navigate(&format!("{}/login?next=/builders/runtests", t.base));
        cdp.eval("document.getElementById('gitea-login').click(); true");
        if consent {
            cdp.wait_js(
                "Gitea's grant page",
                &format!(
                    "location.host === '127.0.0.1:{}' && document.readyState === 'complete' \
                     && !!document.getElementById('grant')",
                    t.gitea.port
                ),
            );
            cdp.eval("document.getElementById('grant').click(); true");
        }
        cdp.wait_js(
            &format!("{who} logged in, on the builder page"),
            "location.pathname === '/builders/runtests' && document.readyState === 'complete' \
             && !!document.querySelector('.who span')",
        );
        assert_eq!(
            cdp.eval("document.querySelector('.who span').textContent"),
            format!("gitea:{who}")
        );
    };
    log_in_with_gitea(&mut cdp, "isabell", true);
    cdp.assert_no_errors();
    // A member of team myorg/ci forces a build.
    cdp.eval("document.querySelector('form.force button').click(); true");
    cdp.wait_js(
        "the forced build's request page",
        "location.pathname.startsWith('/buildrequests/') && document.readyState === 'complete'",
    );
    assert_eq!(
        db_query::<String>(&t.s.master, "SELECT requested_by FROM buildsets"),
        vec!["gitea:isabell".to_string()]
    );
    // Log out; bob, of another organisation, logs in and is refused.
    cdp.eval("document.querySelector('.who form button').click(); true");
    cdp.wait_js(
        "logged out",
        "document.readyState === 'complete' && !!document.querySelector('.who a')",
    );
    {
        let mut o = t.gitea.oauth.lock().unwrap();
        o.sign_in("bob", &["otherorg"], &[]);
        // bob has (the authorize page sends him straight back).
        o.consent = false;
    }
    log_in_with_gitea(&mut cdp, "bob", false);
    // No force form for him, a word why, and his "Log out".
    let text = cdp
        .eval("document.querySelector('main').innerText")
        .to_string();
    assert!(
        text.contains("Your account may not force a build here"),
        "{text}"
    );
    assert_eq!(
        cdp.eval("document.querySelectorAll('form.force').length"),
        0
    );
    // The force form's request, sent anyway with his session's token, is
    // refused.
    let answer = cdp
        .eval(
            "(async () => {                const csrf = document.querySelector('.who form input[name=csrf]').value;                const r = await fetch('/builders/runtests/force', {method: 'POST',                  headers: {'Content-Type': 'application/x-www-form-urlencoded'},                  body: 'scheduler=deploy&csrf=' + encodeURIComponent(csrf)});                return r.status + ' ' + (await r.text()); })()",
        )
        .to_string();
    assert!(
        answer.starts_with("\"403 ") && answer.contains("may not do this"),
        "{answer}"
    );
    assert_eq!(
        db_query::<i64>(&t.s.master, "SELECT count(*) FROM buildsets"),
        vec![1]
    );
    assert!(t.problems().is_empty(), "{:?}", t.problems());
}

/// What a Gitea session may do is worked out from its stored
/// organisations and teams and the config loaded now: refused (form and
/// JSON-RPC) while `admins` does not name it, allowed after a reconfig
/// that does, and no session at all once `[www.auth]` is gone.
#[test]
fn a_gitea_sessions_role_follows_the_config_at_every_request() {
    let t = GiteaLogin::new("read");
    let jar = t.jar();
    let jar_s = jar.to_str().unwrap();
    assert_eq!(t.log_in_as(&jar, "bob", &["otherorg"], &[]).status, 200);
    let (_, page) = curl(&["-b", jar_s, &t.url("/builders/runtests")]);
    let csrf = form_token(&page);
    let force_form = || {
        curl(&[
            "-b",
            jar_s,
            "--data-urlencode",
            &format!("csrf={csrf}"),
            "--data-urlencode",
            "scheduler=deploy",
            &t.url("/builders/runtests/force"),
        ])
    };
    let (code, body) = force_form();
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("may not do this"), "{body}");
    let rpc_body = r#"{"jsonrpc": "2.0", "method": "force", "id": 1, "params": {"builderNames": ["runtests"]}}"#;
    let (code, body) = curl(&[
        "-b",
        jar_s,
        "-H",
        "Content-Type: application/json",
        "-H",
        &format!("X-CSRF-Token: {csrf}"),
        "--data-binary",
        rpc_body,
        &t.url("/api/v2/forceschedulers/deploy"),
    ]);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("may not do this"), "{body}");
    assert_eq!(
        db_query::<i64>(&t.s.master, "SELECT count(*) FROM buildsets"),
        vec![0]
    );
    // The operator names bob's organisation: the same session may force.
    let dir = t.s.master.to_str().unwrap();
    t.s.edit_cfg(|c| c.replace("\"user:root\"]", "\"user:root\", \"org:OtherOrg\"]"));
    assert!(run_ok(MINIBOT, &["reconfig", dir]).contains("reconfig: done"));
    let (code, body) = force_form();
    assert_eq!(code, 303, "{body}");
    assert_eq!(
        db_query::<String>(&t.s.master, "SELECT requested_by FROM buildsets"),
        vec!["gitea:bob".to_string()]
    );
    // Gitea logins switched off: the session is no one's.
    t.s.edit_cfg(|c| c[..c.find("\n[www.auth]").unwrap()].to_string());
    assert!(run_ok(MINIBOT, &["reconfig", dir]).contains("reconfig: done"));
    let (code, page) = curl(&["-b", jar_s, &t.url("/builders/runtests")]);
    assert_eq!(code, 200);
    assert!(
        !page.contains("<span>gitea:bob</span>") && page.contains(">Log in<"),
        "{page}"
    );
    let (code, _) = force_form();
    assert_eq!(code, 401);
    assert_eq!(hop(&jar, &t.url("/login/gitea")).status, 404);
}
