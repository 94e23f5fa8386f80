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

/// The pull requests of the repositories the fake has (`owner/repo` →
/// pull requests as Gitea's API renders them, [`pull_request`]), served
/// by `GET /api/v1/repos/{owner}/{repo}/pulls` ([`serve_pulls`]), and the
/// query of each list request.
#[derive(Default)]
pub struct Pulls {
    pub repos: BTreeMap<String, Vec<Value>>,
    pub requests: Vec<String>,
    /// Bumped by each change, for distinct `updated_at`s.
    clock: u32,
}

impl Pulls {
    fn tick(&mut self) -> String {
        self.clock += 1;
        format!(
            "2024-06-04T{:02}:{:02}:{:02}Z",
            9 + self.clock / 3600,
            self.clock / 60 % 60,
            self.clock % 60
        )
    }

    /// Adds `repo` with no pull requests (else the list is a 404).
    pub fn add_repo(&mut self, repo: &str) {
        self.repos.entry(repo.to_string()).or_default();
    }

    /// Opens pull request `n` of `repo` (head `head` on branch `pr-<n>`,
    /// base `master` at `base`).
    pub fn open(&mut self, repo: &str, n: i64, head: &str, base: &str) {
        let mut pr = pull_request(repo, n, head, base);
        pr["updated_at"] = self.tick().into();
        let list = self.repos.entry(repo.to_string()).or_default();
        list.retain(|p| p["number"] != n);
        list.push(pr);
    }

    /// Pull request `n`, to edit (`updated_at` is bumped).
    pub fn edit(&mut self, repo: &str, n: i64) -> &mut Value {
        let now = self.tick();
        let pr = self
            .repos
            .get_mut(repo)
            .and_then(|l| l.iter_mut().find(|p| p["number"] == n))
            .unwrap_or_else(|| panic!("no pull request {n} in {repo}"));
        pr["updated_at"] = now.into();
        pr
    }

    /// New commits on pull request `n`: its head is now `head`.
    pub fn push_head(&mut self, repo: &str, n: i64, head: &str) {
        self.edit(repo, n)["head"]["sha"] = head.into();
    }

    /// Closes pull request `n` as Gitea does (state, closed_at).
    pub fn close(&mut self, repo: &str, n: i64) {
        let pr = self.edit(repo, n);
        pr["state"] = "closed".into();
        pr["closed_at"] = pr["updated_at"].clone();
    }
}

fn pulls_schema() -> &'static Value {
    static S: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    S.get_or_init(|| {
        serde_json::from_str(
            &std::fs::read_to_string(super::fixture("gitea-api/pulls_api_schema.json")).unwrap(),
        )
        .unwrap()
    })
}

/// Pull request `n` of `repo` ("owner/name") as Gitea's API renders it
/// (`api.PullRequest`, which `pull_request` deliveries carry too): the one
/// of Gitea's `pull_request_opened` delivery in the fixtures, renumbered,
/// moved to `repo` and pointed at `head` (branch `pr-<n>`) and `base`
/// (`master`).
pub fn pull_request(repo: &str, n: i64, head: &str, base: &str) -> Value {
    let delivery: Value = serde_json::from_str(
        &std::fs::read_to_string(super::fixture("gitea/pull_request_opened.json")).unwrap(),
    )
    .unwrap();
    let mut pr = delivery["pull_request"].clone();
    let (owner, name) = repo.split_once('/').unwrap();
    let web = format!("https://git.example.org/{repo}");
    pr["number"] = n.into();
    pr["id"] = (100 + n).into();
    pr["url"] = format!("{web}/pulls/{n}").into();
    pr["html_url"] = format!("{web}/pulls/{n}").into();
    pr["diff_url"] = format!("{web}/pulls/{n}.diff").into();
    pr["patch_url"] = format!("{web}/pulls/{n}.patch").into();
    pr["title"] = format!("Pull request {n}").into();
    pr["body"] = "".into();
    for (side, git_ref, sha) in [
        ("head", format!("pr-{n}"), head),
        ("base", "master".into(), base),
    ] {
        let b = &mut pr[side];
        b["label"] = git_ref.clone().into();
        b["ref"] = git_ref.into();
        b["sha"] = sha.into();
        let r = &mut b["repo"];
        r["name"] = name.into();
        r["full_name"] = repo.into();
        r["owner"]["login"] = owner.into();
        r["html_url"] = web.clone().into();
        r["clone_url"] = format!("{web}.git").into();
        r["ssh_url"] = format!("ssh://git@git.example.org:2222/{repo}.git").into();
    }
    pr
}

/// Problems of `v` against the swagger definition `def` of
/// `pulls_api_schema.json` (field names and JSON types; nested objects by
/// type only, except the two branch infos).
fn check_pull(def: &str, v: &Value) -> Vec<String> {
    let d = &pulls_schema()["definitions"][def];
    let nullable: Vec<&str> = d["nullable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    let Some(o) = v.as_object() else {
        return vec![format!("{def} is not an object: {v}")];
    };
    let mut bad = vec![];
    for (k, val) in o {
        let ok = match d["properties"][k]["type"].as_str() {
            None => {
                bad.push(format!("{def}: field {k} not in the swagger"));
                continue;
            }
            _ if val.is_null() => nullable.contains(&k.as_str()),
            Some("string") => val.is_string(),
            Some("integer") => val.is_i64(),
            Some("boolean") => val.is_boolean(),
            Some("array") => val.is_array(),
            Some("object") => val.is_object(),
            Some(t) => panic!("schema type {t}"),
        };
        if !ok {
            bad.push(format!(
                "{def}: field {k} is not a valid {}: {val}",
                d["properties"][k]["type"]
            ));
        }
    }
    if def == "PullRequest" {
        for side in ["head", "base"] {
            bad.extend(check_pull("PRBranchInfo", &v[side]));
        }
        if !d["state_enum"].as_array().unwrap().contains(&v["state"]) {
            bad.push(format!("PullRequest: state {} not in the enum", v["state"]));
        }
    }
    bad
}

/// Answers `GET /api/v1/repos/{o}/{r}/pulls` as Gitea does: state `open`
/// unless asked otherwise, `recentupdate` most recently updated first
/// (else newest first), pages of `limit` (default 30, at most 50); 401
/// without the token, 404 for a repository it does not have. The query
/// is checked against the swagger's parameters and every pull request
/// served against its definitions. `None` for any other path.
pub fn serve_pulls(
    pulls: &Mutex<Pulls>,
    method: &str,
    url: &str,
    authorized: bool,
    problems: &Mutex<Vec<String>>,
) -> Option<(u16, Value)> {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let parts: Vec<&str> = path.split('/').collect();
    // ["", "api", "v1", "repos", owner, repo, "pulls"]
    if !(parts.len() == 7 && parts[1..4] == ["api", "v1", "repos"] && parts[6] == "pulls") {
        return None;
    }
    let mut p = pulls.lock().unwrap();
    p.requests.push(query.to_string());
    if !authorized {
        return Some((401, message("token is required")));
    }
    let mut bad = vec![];
    if method != "GET" {
        bad.push(format!("{method} {path}: only GET is served"));
    }
    let schema = &pulls_schema()["query"];
    let (mut state, mut sort, mut page, mut limit) = ("open".to_string(), String::new(), 1, 30);
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        let param = &schema[k.as_ref()];
        if param.is_null() {
            bad.push(format!("query parameter {k} not in the swagger"));
            continue;
        }
        if let Some(e) = param["enum"].as_array() {
            if !e.contains(&Value::from(v.as_ref())) {
                bad.push(format!("query {k}={v} not in {}", param["enum"]));
            }
        }
        let int = || {
            v.parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .unwrap_or_else(|| {
                    problems
                        .lock()
                        .unwrap()
                        .push(format!("query {k}={v} is not a page number/size"));
                    1
                })
        };
        match k.as_ref() {
            "state" => state = v.to_string(),
            "sort" => sort = v.to_string(),
            "page" => page = int(),
            "limit" => limit = int(),
            _ => {}
        }
    }
    let repo = format!("{}/{}", parts[4], parts[5]);
    let Some(all) = p.repos.get(&repo) else {
        problems.lock().unwrap().extend(bad);
        return Some((404, message("The target couldn't be found.")));
    };
    let mut list: Vec<Value> = all
        .iter()
        .filter(|pr| state == "all" || pr["state"] == state.as_str())
        .cloned()
        .collect();
    match sort.as_str() {
        "recentupdate" => {
            list.sort_by(|a, b| b["updated_at"].as_str().cmp(&a["updated_at"].as_str()))
        }
        _ => list.sort_by_key(|pr| std::cmp::Reverse(pr["number"].as_i64())),
    }
    let limit = limit.min(pulls_schema()["max_page_items"].as_u64().unwrap() as usize);
    let page: Vec<Value> = list
        .into_iter()
        .skip((page - 1) * limit)
        .take(limit)
        .collect();
    for pr in &page {
        bad.extend(check_pull("PullRequest", pr));
    }
    problems.lock().unwrap().extend(bad);
    Some((200, Value::Array(page)))
}
