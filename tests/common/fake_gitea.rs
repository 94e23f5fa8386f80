//! The repository-hook part of the fake Gitea ([`super::FakeGitea`], which
//! serves commit statuses on the same port): `GET`/`POST
//! /api/v1/repos/{owner}/{repo}/hooks` and `PATCH`/`DELETE
//! .../hooks/{id}`, an in-memory hook list per repository, each request
//! checked against `test-fixtures/gitea-api/hook_api_schema.json` (composed
//! from Gitea's swagger; not in `gitea/`, whose every file the dialect
//! tests post as a delivery) and recorded. Like Gitea: 401 without the right
//! token, 404 for a repository it does not have, the secret never listed,
//! PATCH unable to change it, `pull_request` listed back as its detailed
//! events.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// One request to the hook API.
#[derive(Debug, Clone)]
pub struct HookRequest {
    pub method: String,
    /// Without the query.
    pub path: String,
    pub body: Value,
}

impl HookRequest {
    pub fn writes(&self) -> bool {
        self.method != "GET"
    }
}

/// The hooks of the repositories the fake has (`owner/repo` → hooks, each
/// as Gitea stores it, secret included).
#[derive(Default)]
pub struct Hooks {
    pub repos: BTreeMap<String, Vec<Value>>,
    pub requests: Vec<HookRequest>,
    next_id: i64,
}

impl Hooks {
    /// Adds a hook as Gitea would after a CreateHookOption; returns it.
    pub fn add(&mut self, repo: &str, create: &Value) -> Value {
        self.next_id += 1;
        let hook = json!({
            "id": self.next_id,
            "type": create["type"],
            "url": create["config"]["url"],
            "content_type": create["config"]["content_type"],
            "secret": create["config"]["secret"].as_str().unwrap_or(""),
            "events": create["events"].clone(),
            "active": create["active"].as_bool().unwrap_or(false),
            "branch_filter": create["branch_filter"].as_str().unwrap_or(""),
        });
        self.repos
            .entry(repo.to_string())
            .or_default()
            .push(hook.clone());
        hook
    }
}

fn schema() -> &'static Value {
    static S: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    S.get_or_init(|| super::fixture_json("gitea-api/hook_api_schema.json"))
}

/// Problems of `body` against the swagger definition `def`.
fn check(def: &str, body: &Value) -> Vec<String> {
    let d = &schema()["definitions"][def];
    let mut bad = vec![];
    let Some(o) = body.as_object() else {
        return vec![format!("{def}: body is not an object: {body}")];
    };
    for k in d["required"].as_array().unwrap() {
        if !o.contains_key(k.as_str().unwrap()) {
            bad.push(format!("{def}: missing {k}"));
        }
    }
    for (k, v) in o {
        let p = &d["properties"][k];
        let ok = match p["type"].as_str() {
            None => {
                bad.push(format!("{def}: field {k} not in the swagger"));
                continue;
            }
            Some("boolean") => v.is_boolean(),
            Some("string") => v.is_string(),
            Some("array") => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
            Some("object") => v.as_object().is_some_and(|c| {
                c.values().all(Value::is_string)
                    && p["required"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .all(|r| c.contains_key(r.as_str().unwrap()))
            }),
            Some(t) => panic!("schema type {t}"),
        };
        if !ok {
            bad.push(format!(
                "{def}: field {k} is not a valid {}: {v}",
                p["type"]
            ));
        }
        if let Some(e) = p["enum"].as_array() {
            if !e.contains(v) {
                bad.push(format!("{def}: {k} {v} not in {}", p["enum"]));
            }
        }
    }
    bad
}

/// The hook as Gitea's API shows it (convert.ToHook): no secret, events
/// detailed.
fn shown(h: &Value) -> Value {
    let mut events: Vec<Value> = vec![];
    for e in h["events"].as_array().into_iter().flatten() {
        if e == "pull_request" {
            events.extend(schema()["pull_request_events"].as_array().unwrap().clone());
        } else {
            events.push(e.clone());
        }
    }
    json!({
        "id": h["id"], "type": h["type"], "branch_filter": h["branch_filter"],
        "config": {"url": h["url"], "content_type": h["content_type"]},
        "events": events, "active": h["active"], "authorization_header": "",
        "created_at": "2024-06-03T12:15:02Z", "updated_at": "2024-06-03T12:15:02Z",
    })
}

fn message(m: &str) -> Value {
    json!({"message": m, "url": "https://gitea.example/api/swagger"})
}

/// Answers a request under `/api/v1/repos/{o}/{r}/hooks`; `None` for any
/// other path (the caller serves statuses).
pub fn serve(
    hooks: &Mutex<Hooks>,
    method: &str,
    url: &str,
    authorized: bool,
    content_type: &str,
    body: &str,
    problems: &Mutex<Vec<String>>,
) -> Option<(u16, Value)> {
    let path = url.split('?').next().unwrap_or("");
    let parts: Vec<&str> = path.split('/').collect();
    // ["", "api", "v1", "repos", owner, repo, "hooks", (id)]
    if !(parts.len() >= 7
        && parts.len() <= 8
        && parts[1..4] == ["api", "v1", "repos"]
        && parts[6] == "hooks")
    {
        return None;
    }
    let mut h = hooks.lock().unwrap();
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    h.requests.push(HookRequest {
        method: method.to_string(),
        path: path.to_string(),
        body: v.clone(),
    });
    if !authorized {
        return Some((401, message("token is required")));
    }
    let repo = format!("{}/{}", parts[4], parts[5]);
    if !h.repos.contains_key(&repo) {
        return Some((404, message("The target couldn't be found.")));
    }
    let mut bad = vec![];
    if matches!(method, "POST" | "PATCH") && !content_type.starts_with("application/json") {
        bad.push(format!("{method} {path}: Content-Type {content_type:?}"));
    }
    let id: Option<i64> = parts.get(7).map(|s| s.parse().unwrap_or(-1));
    let answer = match (method, id) {
        ("GET", None) => {
            let list: Vec<Value> = h.repos[&repo].iter().map(shown).collect();
            (200, Value::Array(list))
        }
        ("POST", None) => {
            bad.extend(check("CreateHookOption", &v));
            if bad.is_empty() {
                let hook = h.add(&repo, &v);
                (201, shown(&hook))
            } else {
                (422, message(&bad.join("; ")))
            }
        }
        ("PATCH", Some(id)) => {
            bad.extend(check("EditHookOption", &v));
            let list = h.repos.get_mut(&repo).unwrap();
            match list.iter_mut().find(|x| x["id"] == id) {
                None => (404, message("The target couldn't be found.")),
                Some(_) if !bad.is_empty() => (422, message(&bad.join("; "))),
                Some(x) => {
                    // editHook: url and content_type only (never the secret).
                    for k in ["url", "content_type"] {
                        if let Some(s) = v["config"].get(k) {
                            x[k] = s.clone();
                        }
                    }
                    if let Some(e) = v.get("events") {
                        x["events"] = e.clone();
                    }
                    for k in ["active", "branch_filter"] {
                        if let Some(s) = v.get(k) {
                            x[k] = s.clone();
                        }
                    }
                    (200, shown(x))
                }
            }
        }
        ("DELETE", Some(id)) => {
            let list = h.repos.get_mut(&repo).unwrap();
            let before = list.len();
            list.retain(|x| x["id"] != id);
            if list.len() < before {
                (204, Value::Null)
            } else {
                (404, message("The target couldn't be found."))
            }
        }
        _ => {
            bad.push(format!("{method} {path}: no such endpoint"));
            (405, message("method not allowed"))
        }
    };
    problems.lock().unwrap().extend(bad);
    Some(answer)
}
