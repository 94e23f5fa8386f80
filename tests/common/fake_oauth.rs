//! The OAuth2-provider and user part of the fake Gitea
//! ([`super::FakeGitea`], on the same port), for "Log in with Gitea":
//! `GET /login/oauth/authorize` approves the user "signed in to Gitea"
//! ([`OAuth::user`]) at once and sends the browser back with a code and the
//! state, or, with [`OAuth::consent`], first shows Gitea's grant page, whose
//! button posts to `/login/oauth/grant` and is answered with that redirect
//! (a navigation started on Gitea's site, as a first login's is); `POST /login/oauth/access_token` checks the client id and secret,
//! that the code is known and unused, the redirect URI, and the PKCE
//! verifier against the challenge (S256), as Gitea's `AccessTokenOAuth`
//! does; `GET /api/v1/user`, `/user/orgs` and `/user/teams` answer for a
//! token (`Authorization: Bearer` or `token`), the lists paged by `page`
//! and `limit`. Every request is recorded and checked against
//! `test-fixtures/gitea-api/oauth_api_schema.json` (the authorize query
//! and token form fields Gitea binds), every answer object against its
//! swagger definition; anything wrong lands in `problems`.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// One request to these endpoints: method, path, and its query or form
/// fields.
#[derive(Debug, Clone)]
pub struct OAuthRequest {
    pub method: String,
    pub path: String,
    pub fields: HashMap<String, String>,
}

/// An answer: status, a `Location` for redirects, the body.
pub struct Answer {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
}

/// Who a code or token was issued to: a snapshot of the user then.
#[derive(Clone)]
struct Grant {
    user: Value,
    orgs: Vec<Value>,
    teams: Vec<Value>,
}

struct Code {
    challenge: String,
    method: String,
    redirect_uri: String,
    used: bool,
    grant: Grant,
}

/// The fake's OAuth2 application and the user signed in to it.
pub struct OAuth {
    /// The registered application (empty: none).
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uri: String,
    /// The user signed in to Gitea (a swagger `User`), approved at once.
    pub user: Value,
    pub orgs: Vec<Value>,
    pub teams: Vec<Value>,
    /// Extra bytes in the token answer (a hostile Gitea).
    pub pad_token_answer: usize,
    /// Show the grant page (a user who has not authorised the
    /// application yet) instead of redirecting at once.
    pub consent: bool,
    /// Grant pages shown: their form token → the redirect to answer with.
    grants: HashMap<String, String>,
    pub requests: Vec<OAuthRequest>,
    codes: HashMap<String, Code>,
    tokens: HashMap<String, Grant>,
    next: u64,
}

impl Default for OAuth {
    fn default() -> OAuth {
        OAuth {
            client_id: String::new(),
            client_secret: String::new(),
            redirect_uri: String::new(),
            user: user("isabell", 1),
            orgs: vec![],
            teams: vec![],
            pad_token_answer: 0,
            consent: false,
            grants: HashMap::new(),
            requests: vec![],
            codes: HashMap::new(),
            tokens: HashMap::new(),
            next: 0,
        }
    }
}

impl OAuth {
    /// Registers the OAuth2 application (a confidential client with one
    /// redirect URI).
    pub fn register(&mut self, client_id: &str, secret: &str, redirect_uri: &str) {
        self.client_id = client_id.into();
        self.client_secret = secret.into();
        self.redirect_uri = redirect_uri.into();
    }

    /// Signs `login` in to the fake Gitea, a member of `orgs` and of
    /// `teams` (`(org, team)`); codes issued later are theirs.
    pub fn sign_in(&mut self, login: &str, orgs: &[&str], teams: &[(&str, &str)]) {
        self.next += 1;
        self.user = user(login, self.next as i64 + 10);
        self.orgs = orgs
            .iter()
            .enumerate()
            .map(|(i, o)| org(o, i as i64 + 100))
            .collect();
        self.teams = teams
            .iter()
            .enumerate()
            .map(|(i, (o, t))| team(o, t, i as i64 + 200))
            .collect();
    }

    /// The token requests made, as recorded.
    pub fn token_requests(&self) -> Vec<&OAuthRequest> {
        self.requests
            .iter()
            .filter(|r| r.path == "/login/oauth/access_token")
            .collect()
    }

    fn fresh(&mut self, prefix: &str) -> String {
        self.next += 1;
        let h = Sha256::digest(format!(
            "{prefix}{}{:?}",
            self.next,
            std::time::Instant::now()
        ));
        format!("{prefix}_{}", hex::encode(&h[..16]))
    }
}

/// A swagger `User` (`GET /api/v1/user`).
pub fn user(login: &str, id: i64) -> Value {
    json!({
        "id": id, "login": login, "full_name": "", "email": format!("{login}@example.org"),
        "avatar_url": "https://git.example.org/avatars/x", "language": "en-US",
        "is_admin": false, "last_login": "2024-06-03T12:15:02Z",
        "created": "2024-01-01T00:00:00Z", "restricted": false, "active": true,
        "prohibit_login": false, "location": "", "website": "", "description": "",
        "visibility": "public", "followers_count": 0, "following_count": 0,
        "starred_repos_count": 0,
    })
}

/// A swagger `Organization` (`name` and the older `username`).
pub fn org(name: &str, id: i64) -> Value {
    json!({
        "id": id, "name": name, "username": name, "full_name": "", "email": "",
        "avatar_url": "https://git.example.org/avatars/o", "description": "",
        "website": "", "location": "", "visibility": "public",
        "repo_admin_change_team_access": false,
    })
}

/// A swagger `Team` with its organisation (as `/user/teams` lists it).
pub fn team(org_name: &str, name: &str, id: i64) -> Value {
    json!({
        "id": id, "name": name, "description": "", "organization": org(org_name, id + 1000),
        "includes_all_repositories": false, "permission": "write",
        "units": ["repo.code"], "units_map": {"repo.code": "write"},
        "can_create_org_repo": false,
    })
}

fn schema() -> &'static Value {
    static S: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    S.get_or_init(|| super::fixture_json("gitea-api/oauth_api_schema.json"))
}

/// Problems of an answer object against swagger definition `def`: fields
/// it does not have, of the wrong JSON type, or missing when required.
fn check_answer(def: &str, v: &Value, bad: &mut Vec<String>) {
    let d = &schema()["definitions"][def];
    let Some(o) = v.as_object() else {
        bad.push(format!("{def}: not an object"));
        return;
    };
    for k in d["required"].as_array().into_iter().flatten() {
        if !o.contains_key(k.as_str().unwrap()) {
            bad.push(format!("{def}: missing {k}"));
        }
    }
    for (k, val) in o {
        let p = &d["properties"][k];
        let ok = match p["type"].as_str() {
            Some("string") => val.is_string(),
            Some("integer") => val.is_i64(),
            Some("boolean") => val.is_boolean(),
            Some("array") => val.is_array(),
            Some("object") => {
                if let Some(r) = p["$ref"].as_str() {
                    check_answer(r.rsplit('/').next().unwrap(), val, bad);
                }
                val.is_object()
            }
            _ => false,
        };
        if !ok {
            bad.push(format!(
                "{def}: field {k} = {val} is not in the swagger as such"
            ));
        }
    }
}

/// Fields of a query or form not among `list` (the schema's names).
fn check_fields(list: &str, what: &str, fields: &HashMap<String, String>, bad: &mut Vec<String>) {
    let allowed = schema()[list].as_array().unwrap();
    for k in fields.keys() {
        if !allowed.iter().any(|a| a == k) {
            bad.push(format!("{what}: field {k} is not one Gitea reads"));
        }
    }
}

fn parse(q: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(q.as_bytes())
        .into_owned()
        .collect()
}

fn json_answer(status: u16, v: &Value) -> Option<Answer> {
    Some(Answer {
        status,
        location: None,
        body: v.to_string(),
    })
}

/// Gitea's `handleAuthorizeError`: back to the redirect URI with `error`.
fn authorize_error(redirect: &str, code: &str, desc: &str, state: &str) -> Option<Answer> {
    let mut u = url::Url::parse(redirect).unwrap();
    u.query_pairs_mut()
        .append_pair("error", code)
        .append_pair("error_description", desc)
        .append_pair("state", state);
    Some(Answer {
        status: 303,
        location: Some(u.to_string()),
        body: String::new(),
    })
}

/// RFC 7636 S256.
pub fn s256(verifier: &str) -> String {
    use base64ct::Encoding;
    base64ct::Base64UrlUnpadded::encode_string(&Sha256::digest(verifier.as_bytes()))
}

/// Answers a request to the OAuth2 or `/api/v1/user*` endpoints; `None`
/// for any other path.
pub fn serve(
    oauth: &std::sync::Mutex<OAuth>,
    method: &str,
    url: &str,
    authorization: &str,
    content_type: &str,
    body: &str,
    problems: &std::sync::Mutex<Vec<String>>,
) -> Option<Answer> {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let known = matches!(
        path,
        "/login/oauth/authorize"
            | "/login/oauth/grant"
            | "/login/oauth/access_token"
            | "/api/v1/user"
            | "/api/v1/user/orgs"
            | "/api/v1/user/teams"
    );
    if !known {
        return None;
    }
    let mut o = oauth.lock().unwrap();
    let fields = if method == "POST" {
        parse(body)
    } else {
        parse(query)
    };
    o.requests.push(OAuthRequest {
        method: method.into(),
        path: path.into(),
        fields: fields.clone(),
    });
    let mut bad = vec![];
    let f = |k: &str| fields.get(k).cloned().unwrap_or_default();
    let answer = match (method, path) {
        ("GET", "/login/oauth/authorize") => {
            check_fields("authorize_query", "authorize", &fields, &mut bad);
            if o.client_id.is_empty() || f("client_id") != o.client_id {
                json_answer(400, &json!({"message": "Client ID not registered"}))
            } else if f("redirect_uri") != o.redirect_uri {
                json_answer(400, &json!({"message": "Unregistered Redirect URI"}))
            } else if f("response_type") != "code" {
                authorize_error(
                    &o.redirect_uri,
                    "unsupported_response_type",
                    "Only code response type is supported.",
                    &f("state"),
                )
            } else if !matches!(f("code_challenge_method").as_str(), "S256" | "plain")
                || f("code_challenge").is_empty()
            {
                bad.push(format!("authorize without PKCE: {fields:?}"));
                authorize_error(
                    &o.redirect_uri,
                    "invalid_request",
                    "PKCE is required",
                    &f("state"),
                )
            } else {
                let code = o.fresh("code");
                let grant = Grant {
                    user: o.user.clone(),
                    orgs: o.orgs.clone(),
                    teams: o.teams.clone(),
                };
                o.codes.insert(
                    code.clone(),
                    Code {
                        challenge: f("code_challenge"),
                        method: f("code_challenge_method"),
                        redirect_uri: f("redirect_uri"),
                        used: false,
                        grant,
                    },
                );
                // code.GenerateRedirectURI(state): code and state added.
                let mut u = url::Url::parse(&o.redirect_uri).unwrap();
                u.query_pairs_mut()
                    .append_pair("code", &code)
                    .append_pair("state", &f("state"));
                if o.consent {
                    // Gitea's grant page (templates/user/auth/grant.tmpl):
                    // a form the user submits on Gitea's site.
                    let token = o.fresh("grant");
                    o.grants.insert(token.clone(), u.to_string());
                    Some(Answer {
                        status: 200,
                        location: None,
                        body: format!(
                            "<!DOCTYPE html><html><head><title>Authorize</title><link rel=\"icon\" href=\"data:,\"></head><body>\
                             <form method=\"post\" action=\"/login/oauth/grant\">\
                             <input type=\"hidden\" name=\"token\" value=\"{token}\">\
                             <button id=\"grant\" type=\"submit\">Authorize Application</button>\
                             </form></body></html>"
                        ),
                    })
                } else {
                    Some(Answer {
                        status: 303,
                        location: Some(u.to_string()),
                        body: String::new(),
                    })
                }
            }
        }
        ("POST", "/login/oauth/grant") => match o.grants.remove(&f("token")) {
            Some(location) => Some(Answer {
                status: 303,
                location: Some(location),
                body: String::new(),
            }),
            None => json_answer(400, &json!({"message": "no such grant"})),
        },
        ("POST", "/login/oauth/access_token") => {
            check_fields("access_token_form", "access_token", &fields, &mut bad);
            if !content_type.starts_with("application/x-www-form-urlencoded") {
                bad.push(format!("access_token: Content-Type {content_type:?}"));
            }
            let err = |e: &str, d: &str| {
                let v = json!({"error": e, "error_description": d});
                Some((400u16, v))
            };
            let secret_ok = !o.client_secret.is_empty() && f("client_secret") == o.client_secret;
            let res = if f("grant_type") != "authorization_code" {
                err(
                    "unsupported_grant_type",
                    "Only refresh_token or authorization_code grant type is supported",
                )
            } else if f("client_id") != o.client_id {
                err("invalid_client", "cannot load client")
            } else if !secret_ok {
                err("unauthorized_client", "invalid client secret")
            } else if f("redirect_uri") != o.redirect_uri {
                err("unauthorized_client", "unexpected redirect URI")
            } else {
                let code = f("code");
                match o.codes.get(&code) {
                    None => err("unauthorized_client", "client is not authorized"),
                    Some(c) => {
                        // ValidateCodeChallenge: S256 or plain against the verifier.
                        let v = f("code_verifier");
                        let pkce_ok = !v.is_empty()
                            && match c.method.as_str() {
                                "S256" => s256(&v) == c.challenge,
                                _ => v == c.challenge,
                            };
                        if !pkce_ok {
                            err("unauthorized_client", "failed PKCE code challenge")
                        } else if c.redirect_uri != f("redirect_uri") {
                            err(
                                "invalid_grant",
                                "redirect_uri differs from the original authorization request",
                            )
                        } else if c.used {
                            err("invalid_grant", "authorization code already used")
                        } else {
                            None
                        }
                    }
                }
            };
            match res {
                Some((s, v)) => {
                    check_answer("AccessTokenError", &v, &mut bad);
                    json_answer(s, &v)
                }
                None => {
                    let code = f("code");
                    let c = o.codes.get_mut(&code).unwrap();
                    c.used = true;
                    let grant = c.grant.clone();
                    let token = o.fresh("gta");
                    o.tokens.insert(token.clone(), grant);
                    let mut v = json!({
                        "access_token": token, "token_type": "bearer",
                        "expires_in": 3600, "refresh_token": o.fresh("gtr"),
                    });
                    check_answer("AccessTokenResponse", &v, &mut bad);
                    if o.pad_token_answer > 0 {
                        v["id_token"] = json!("x".repeat(o.pad_token_answer));
                    }
                    json_answer(200, &v)
                }
            }
        }
        ("GET", api) => {
            let token = authorization
                .strip_prefix("Bearer ")
                .or_else(|| authorization.strip_prefix("token "))
                .unwrap_or("");
            match o.tokens.get(token).cloned() {
                None => json_answer(401, &json!({"message": "token is required"})),
                Some(g) => {
                    let page = f("page").parse::<usize>().unwrap_or(1).max(1);
                    let limit = f("limit").parse::<usize>().unwrap_or(30).clamp(1, 50);
                    let paged = |list: &[Value]| -> Value {
                        Value::Array(
                            list.iter()
                                .skip((page - 1) * limit)
                                .take(limit)
                                .cloned()
                                .collect(),
                        )
                    };
                    let (def, v) = match api {
                        "/api/v1/user" => ("User", g.user.clone()),
                        "/api/v1/user/orgs" => ("Organization", paged(&g.orgs)),
                        _ => ("Team", paged(&g.teams)),
                    };
                    match &v {
                        Value::Array(items) => {
                            items.iter().for_each(|i| check_answer(def, i, &mut bad))
                        }
                        one => check_answer(def, one, &mut bad),
                    }
                    json_answer(200, &v)
                }
            }
        }
        _ => {
            bad.push(format!("{method} {path}: no such endpoint"));
            json_answer(405, &json!({"message": "method not allowed"}))
        }
    };
    problems.lock().unwrap().extend(bad);
    answer
}
