//! The write side of the API: force, stop, rebuild, cancel, pause.
//!
//! Owns: the actions a logged-in user may take, checked and defaulted here
//! once, and their JSON-RPC 2.0 wrapping (`POST /api/v2/forceschedulers/
//! <name>`, `/builds/<id>`, `/buildrequests/<id>`, `/workers/<id>`, as
//! Buildbot's data API). The web pages' forms call the same functions.
//! No threads: the HTTP threads call in. Writes go through `Store::write`;
//! the botmaster hears of them on its channel (`BotMsg::RequestsAdded`
//! after a buildset is committed, `BotMsg::StopBuild` to stop a build).
//!
//! Who may call is decided before (`www`, `auth`): every function here
//! takes the name of the user it acts for, which goes into the build's
//! properties and the log.

use crate::config::Config;
use crate::db::{self, CancelOutcome, Props, SourceStamp, Store};
use crate::master::botmaster::BotMsg;
use crate::model::{BuildId, BuilderId, BuildsetId, RequestId};
use crate::web::api;
use crossbeam_channel::Sender;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// What the actions need: the writer, the loaded config, the botmaster's
/// channel and the caller's read-only connection for lookups.
pub(crate) struct Writer<'a> {
    pub store: &'a Store,
    pub cfg: &'a Config,
    pub bot: &'a Sender<BotMsg>,
    pub conn: &'a db::Conn,
}

/// An action refused or failed: the HTTP status, the JSON-RPC error code
/// and a message for the user.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RpcError {
    pub status: u16,
    pub code: i64,
    pub message: String,
}

// JSON-RPC 2.0 error codes.
const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
const INTERNAL_ERROR: i64 = -32603;

fn invalid(msg: impl Into<String>) -> RpcError {
    RpcError {
        status: 400,
        code: INVALID_PARAMS,
        message: msg.into(),
    }
}

fn not_found(msg: impl Into<String>) -> RpcError {
    RpcError {
        status: 404,
        code: INVALID_PARAMS,
        message: msg.into(),
    }
}

fn internal(e: impl std::fmt::Display) -> RpcError {
    // The detail goes to the log; the caller learns only that it failed.
    log::error!("api write: {e:#}");
    RpcError {
        status: 500,
        code: INTERNAL_ERROR,
        message: "internal error; see master.log".into(),
    }
}

/// A new buildset: its id and, per builder id, its build request.
pub(crate) type Submitted = (BuildsetId, BTreeMap<BuilderId, RequestId>);

/// The parameters a force scheduler accepts (Buildbot's force form
/// fields); anything else is refused so a typo is not silently ignored.
const FORCE_PARAMS: &[&str] = &[
    "builderid",
    "builderNames",
    "username",
    "owner",
    "reason",
    "priority",
    "branch",
    "revision",
    "repository",
    "project",
    "codebase",
];

fn opt_string(params: &Map<String, Value>, key: &str) -> Result<Option<String>, RpcError> {
    match params.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() > 1000 => Err(invalid(format!("{key} is too long"))),
        Some(Value::String(s)) if s.chars().any(|c| c.is_control() && c != '\t') => {
            Err(invalid(format!("{key} may not contain control characters")))
        }
        Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
        Some(_) => Err(invalid(format!("{key} must be a string"))),
    }
}

/// A branch or revision: empty means none; otherwise one git word.
/// An empty branch or revision means "the default"; anything else must be
/// a plain git word (no option injection, no control characters).
fn checked_git_word(key: &str, v: Option<String>) -> Result<Option<String>, RpcError> {
    match v {
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => {
            crate::worker::steps::validate_git_word(key, &s).map_err(invalid)?;
            Ok(Some(s))
        }
        None => Ok(None),
    }
}

fn int_param(v: &Value, key: &str) -> Result<i64, RpcError> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| invalid(format!("{key} must be an integer")))
}

/// `force` on force scheduler `scheduler` for `user`. Builders: `builderid`
/// or `builderNames`, each one of the scheduler's; default all of them.
pub(crate) fn force(
    w: &Writer,
    scheduler: &str,
    params: &Map<String, Value>,
    user: &str,
) -> Result<Submitted, RpcError> {
    let (sched, force) = w
        .cfg
        .scheduler(scheduler)
        .and_then(|s| Some((s, s.kind.force()?)))
        .ok_or_else(|| not_found(format!("no force scheduler named {scheduler:?}")))?;
    let typed = force.force_parameters();
    if let Some(k) = params
        .keys()
        .find(|k| !FORCE_PARAMS.contains(&k.as_str()) && !typed.iter().any(|p| &p.name == *k))
    {
        let mut known: Vec<&str> = FORCE_PARAMS.to_vec();
        known.extend(typed.iter().map(|p| p.name.as_str()));
        return Err(invalid(format!(
            "unknown parameter {k:?} (known: {})",
            known.join(", ")
        )));
    }
    // Branch, revision, reason and the scheduler's typed properties are
    // checked and defaulted by the config's own description of the form.
    let forced = force
        .force_values(params)
        .map_err(|problems| invalid(problems.join("; ")))?;
    let mut builders: Vec<String> = match (params.get("builderid"), params.get("builderNames")) {
        (Some(id), None) => {
            let id = int_param(id, "builderid")?;
            let name = db::builder_name(w.conn, BuilderId(id)).map_err(internal)?;
            vec![name.ok_or_else(|| invalid(format!("no builder with id {id}")))?]
        }
        (None, Some(Value::Array(names))) => names
            .iter()
            .map(|n| {
                n.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| invalid("builderNames must be a list of strings"))
            })
            .collect::<Result<_, _>>()?,
        (None, Some(_)) => return Err(invalid("builderNames must be a list of strings")),
        (Some(_), Some(_)) => return Err(invalid("give builderid or builderNames, not both")),
        (None, None) => sched.builders.clone(),
    };
    builders.sort();
    builders.dedup();
    if builders.is_empty() {
        return Err(invalid("no builder selected"));
    }
    if let Some(b) = builders.iter().find(|b| !sched.builders.contains(b)) {
        return Err(invalid(format!(
            "builder {b:?} is not one of force scheduler {scheduler:?}'s builders"
        )));
    }
    let reason = Some(forced.reason.clone())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "force build".to_string());
    let priority = match params.get("priority") {
        None | Some(Value::Null) => 0,
        Some(v) => int_param(v, "priority")?,
    };
    let ss = SourceStamp {
        branch: checked_git_word("branch", forced.branch)?,
        revision: checked_git_word("revision", forced.revision)?,
        repository: opt_string(params, "repository")?.unwrap_or_default(),
        project: opt_string(params, "project")?.unwrap_or_default(),
        codebase: opt_string(params, "codebase")?.unwrap_or_default(),
    };
    // The owner is whoever is logged in, whatever `username` says.
    let mut props = Props::new();
    let form = "Force Build Form".to_string();
    props.insert("owner".into(), (user.into(), form.clone()));
    props.insert("reason".into(), (reason.clone().into(), form.clone()));
    props.insert("scheduler".into(), (scheduler.into(), "Scheduler".into()));
    for (k, v) in forced.properties {
        props.insert(k, (v, form.clone()));
    }
    let bs_reason = format!("A build was forced by '{user}': {reason}");
    let name = sched.name.clone();
    let owner = user.to_string();
    let submitted = w
        .store
        .write(move |c| {
            let (bsid, reqs) =
                db::create_buildset(c, &bs_reason, Some(&name), &ss, &props, &[], &builders)?;
            db::set_buildset_origin(c, bsid, &owner, None)?;
            if priority != 0 {
                db::set_buildset_priority(c, bsid, priority)?;
            }
            Ok((bsid, reqs))
        })
        .map_err(|e| {
            if e.to_string().contains("no builder named") {
                invalid(e.to_string())
            } else {
                internal(e)
            }
        })?;
    let _ = w.bot.send(BotMsg::RequestsAdded);
    log::info!(
        "{user} forced buildset {} on scheduler {scheduler}: {reason}",
        submitted.0
    );
    Ok((submitted.0, submitted.1.into_iter().collect()))
}

/// (complete?) of a build, or 404.
fn build_complete(w: &Writer, buildid: BuildId) -> Result<bool, RpcError> {
    db::build_complete(w.conn, buildid)
        .map_err(internal)?
        .ok_or_else(|| not_found(format!("no build {buildid}")))
}

/// The longest reason a stop keeps, in characters: it becomes part of the
/// build's `state_string`, shown on the build page and in the API.
pub(crate) const MAX_STOP_REASON: usize = 200;

/// A stop's reason, trimmed: None when empty; refused when longer than
/// [`MAX_STOP_REASON`] or holding control characters (a line break or an
/// escape would garble the one-line state string and the master log).
fn stop_reason(reason: Option<&str>) -> Result<Option<&str>, RpcError> {
    let Some(r) = reason.map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    if r.chars().count() > MAX_STOP_REASON {
        return Err(invalid(format!(
            "the reason is longer than {MAX_STOP_REASON} characters"
        )));
    }
    if r.chars().any(char::is_control) {
        return Err(invalid(
            "the reason may not contain control characters (line breaks, tabs, escapes)",
        ));
    }
    Ok(Some(r))
}

/// Stops a running build: it ends CANCELLED and its processes are
/// killed. A build that is already complete is left alone (as Buildbot).
/// One that no worker connection runs (its connection is gone and its
/// close not written yet) is closed by the botmaster in the database.
pub(crate) fn stop_build(
    w: &Writer,
    buildid: BuildId,
    reason: Option<&str>,
    user: &str,
) -> Result<(), RpcError> {
    let reason = stop_reason(reason)?;
    if build_complete(w, buildid)? {
        return Ok(());
    }
    let reason = format!("stopped by {user}: {}", reason.unwrap_or("no reason"));
    log::info!("build {buildid}: {reason}");
    w.bot
        .send(BotMsg::StopBuild { buildid, reason })
        .map_err(|_| internal("the botmaster has stopped"))
}

/// A new build of the same builder, source stamp, properties and changes.
pub(crate) fn rebuild(w: &Writer, buildid: BuildId, user: &str) -> Result<Submitted, RpcError> {
    build_complete(w, buildid)?;
    let reason = format!("rebuild of build {buildid} by {user}");
    let owner = user.to_string();
    let got = w
        .store
        .write(move |c| db::rebuild(c, buildid, &reason, &owner))
        .map_err(internal)?
        .ok_or_else(|| not_found(format!("no build {buildid}")))?;
    let _ = w.bot.send(BotMsg::RequestsAdded);
    log::info!("{user} rebuilt build {buildid} as buildset {}", got.0);
    Ok((got.0, BTreeMap::from([(got.1, got.2)])))
}

/// Cancels a build request: a queued one never starts (it completes as
/// CANCELLED); a running one has its build stopped.
pub(crate) fn cancel_request(
    w: &Writer,
    brid: RequestId,
    reason: Option<&str>,
    user: &str,
) -> Result<(), RpcError> {
    let outcome = w
        .store
        .write(move |c| db::cancel_request(c, brid))
        .map_err(internal)?;
    match outcome {
        CancelOutcome::NotFound => Err(not_found(format!("no build request {brid}"))),
        CancelOutcome::Complete => Ok(()),
        CancelOutcome::Cancelled => {
            log::info!("{user} cancelled build request {brid}");
            Ok(())
        }
        CancelOutcome::Running { buildid } => stop_build(w, buildid, reason, user),
    }
}

/// Pauses (no new builds; running ones go on) or unpauses a worker.
pub(crate) fn set_paused(
    w: &Writer,
    worker: &str,
    paused: bool,
    user: &str,
) -> Result<(), RpcError> {
    let id = db::worker_id(w.conn, worker)
        .map_err(internal)?
        .ok_or_else(|| not_found(format!("no worker {worker:?}")))?;
    w.store
        .write(move |c| db::set_worker_paused(c, id, paused))
        .map_err(internal)?;
    if !paused {
        let _ = w.bot.send(BotMsg::RequestsAdded);
    }
    let what = if paused { "paused" } else { "unpaused" };
    log::info!("{user} {what} worker {worker}");
    Ok(())
}

/// What a JSON-RPC POST acts on.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Target {
    ForceScheduler(String),
    Build(BuildId),
    BuildRequest(RequestId),
    Worker(String),
}

/// The target of `POST /api/v2<path>`, or None when nothing there takes
/// a POST.
pub(crate) fn target(conn: &db::Conn, path: &str) -> Result<Option<Target>, RpcError> {
    let segs = api::path_segments(path).ok_or_else(|| invalid("bad path"))?;
    let id = |s: &str| {
        s.parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| invalid(format!("invalid id {s:?}")))
    };
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    Ok(Some(match segs.as_slice() {
        ["forceschedulers", name] => Target::ForceScheduler(name.to_string()),
        ["builds", b] => Target::Build(BuildId(id(b)?)),
        ["builders", builder, "builds", n] => {
            let n = id(n)?;
            let found = db::build_id_by_number(conn, builder, n).map_err(internal)?;
            Target::Build(found.ok_or_else(|| not_found(format!("no build {builder}/{n}")))?)
        }
        ["buildrequests", r] => Target::BuildRequest(RequestId(id(r)?)),
        ["workers", w] => Target::Worker(w.to_string()),
        _ => return Ok(None),
    }))
}

/// Runs one JSON-RPC 2.0 call on `target` for `user`; returns the HTTP
/// status and the response object.
pub(crate) fn jsonrpc(w: &Writer, target: &Target, body: &[u8], user: &str) -> (u16, Value) {
    let req: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return error_response(
                &Value::Null,
                RpcError {
                    status: 400,
                    code: PARSE_ERROR,
                    message: format!("the body is not JSON: {e}"),
                },
            )
        }
    };
    let id = req.get("id").cloned().unwrap_or(Value::Null);
    let method = match req.get("method").and_then(Value::as_str) {
        Some(m) => m,
        None => {
            return error_response(
                &id,
                RpcError {
                    status: 400,
                    code: INVALID_REQUEST,
                    message: "a JSON-RPC request needs a \"method\"".into(),
                },
            )
        }
    };
    let empty = Map::new();
    let params = match req.get("params") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(m)) => m,
        Some(_) => return error_response(&id, invalid("params must be an object")),
    };
    let reason = params.get("reason").and_then(Value::as_str);
    let submitted = |(bsid, reqs): Submitted| {
        let reqs: Map<String, Value> = reqs
            .into_iter()
            .map(|(b, r)| (b.to_string(), r.0.into()))
            .collect();
        json!([bsid, reqs])
    };
    let res = match (target, method) {
        (Target::ForceScheduler(s), "force") => force(w, s, params, user).map(submitted),
        (Target::Build(b), "stop") => stop_build(w, *b, reason, user).map(|_| Value::Null),
        (Target::Build(b), "rebuild") => rebuild(w, *b, user).map(submitted),
        (Target::BuildRequest(r), "cancel" | "stop") => {
            cancel_request(w, *r, reason, user).map(|_| Value::Null)
        }
        (Target::Worker(n), "pause") => set_paused(w, n, true, user).map(|_| Value::Null),
        (Target::Worker(n), "unpause") => set_paused(w, n, false, user).map(|_| Value::Null),
        _ => Err(RpcError {
            status: 400,
            code: METHOD_NOT_FOUND,
            message: format!("no method {method:?} here"),
        }),
    };
    match res {
        Ok(result) => (200, json!({"jsonrpc": "2.0", "id": id, "result": result})),
        Err(e) => error_response(&id, e),
    }
}

pub(crate) fn error_response(id: &Value, e: RpcError) -> (u16, Value) {
    (
        e.status,
        json!({"jsonrpc": "2.0", "id": id,
               "error": {"code": e.code, "message": e.message}}),
    )
}

/// `GET /api/v2/forceschedulers[/<name>]` (Buildbot's shape, from the
/// loaded config): what a force form needs to know.
pub(crate) fn forceschedulers(cfg: &Config, name: &str) -> (u16, Value) {
    let field = |name: &str, label: &str, default: &str| {
        json!({"name": name, "fullName": name, "label": label, "type": "text",
               "default": default, "required": false})
    };
    let all: Vec<Value> = cfg
        .schedulers
        .iter()
        .filter(|s| name.is_empty() || s.name == name)
        .filter_map(|s| Some((s, s.kind.force()?)))
        .map(|(s, force)| {
            json!({
                "name": s.name,
                "label": s.name,
                "button_name": force.button_name,
                "builder_names": s.builders,
                "enabled": true,
                "all_fields": [
                    field("reason", "Reason", &force.reason),
                    field("branch", "Branch", force.branch.as_deref().unwrap_or("")),
                    field("revision", "Revision", ""),
                    field("repository", "Repository", ""),
                    field("project", "Project", ""),
                ],
            })
        })
        .collect();
    if !name.is_empty() {
        if all.is_empty() {
            return (
                404,
                json!({"error": format!("no force scheduler named {name:?}")}),
            );
        }
        return (200, json!({"forceschedulers": all, "meta": {}}));
    }
    let n = all.len();
    (200, json!({"forceschedulers": all, "meta": {"total": n}}))
}
