//! `POST /change_hook/<dialect>`: from an HTTP request to stored changes.
//!
//! Owns: dialect dispatch and the durability rule. Runs on the HTTP thread
//! that received the hook: the dialect parser (`dialects::*`) checks the
//! signature and turns the body into changes, `Store::write` commits them
//! (group commit with other hooks), and only then is the hook answered
//! 200 — and only if the database file is still the one the writer wrote
//! to (`Store::check_file`, before the write and again after the commit;
//! else 503, issue 16 point 5). Afterwards it nudges the scheduler thread (`SchedMsg::NewChanges`);
//! if the master dies before the scheduler runs, the changes are still
//! marked unscheduled and are picked up at the next start.
//!
//! It is also the hooks' front door (issue 14): a hook runs only with a
//! secret, or for the base dialect with the explicit `allow_unsigned`
//! (config validation enforces this; it is checked again here so a config
//! built some other way cannot open the door), and nothing a browser sends
//! is accepted at all (`browser_request`), since a cross-site HTML form
//! through the operator's SSH tunnel is the easiest way to reach the port.
//! Only hooks whose signature was checked store a delivery id, which the
//! gitea_status reporter takes as the sign of a change it may trust
//! (`db::ChangeSource::signed`); so does the PR poller (`master::pr_poller`,
//! through [`unique_delivery`]), whose changes are Gitea's API answer for
//! the configured repository.

use crate::config::LiveConfig;
use crate::db::{self, Store};
use crate::master::scheduler::SchedMsg;
use crate::web::dialects::{self, HookError, HookOutcome, HookRequest};
use crossbeam_channel::Sender;
use serde_json::json;

pub(crate) struct HookReply {
    pub status: u16,
    pub body: serde_json::Value,
}

fn reply(status: u16, body: serde_json::Value) -> HookReply {
    HookReply { status, body }
}

/// Why a request looks like it came from a web browser, which no hook
/// sender is: Gitea, GitHub, `minibot sendchange`, curl and git hooks send
/// neither `Origin` nor `Sec-Fetch-Site`, while browsers send `Origin` with
/// every POST (a page's cross-site form, fetch or XHR) and `Sec-Fetch-Site`
/// with every request. Refusing these is what stops a web page the operator
/// visits from posting through the tunnel; a same-origin request is refused
/// too, since no page of the master posts hooks.
pub(crate) fn browser_request(req: &HookRequest) -> Option<String> {
    if let Some(origin) = req.header("origin") {
        return Some(format!(
            "a request with an Origin header ({origin:?}) comes from a web page; change hooks accept only direct posts (Gitea, curl)"
        ));
    }
    match req.header("sec-fetch-site").map(str::trim) {
        // "none": typed into the address bar; not a POST in practice.
        None | Some("none") => None,
        Some(site) => Some(format!(
            "a request with Sec-Fetch-Site: {site} comes from a web page; change hooks accept only direct posts (Gitea, curl)"
        )),
    }
}

/// A hook id for a signed delivery that came without one, so every signed
/// change still carries a delivery id (the reporter's sign of trust) and
/// never matches another delivery's.
fn synthetic_delivery(dialect: &str) -> String {
    unique_delivery(&format!("{dialect}-no-delivery-id"))
}

/// A delivery id no other change has: `prefix`, the time, the process and
/// a counter. Also the PR poller's (`master::pr_poller`), whose changes
/// come from Gitea's API and are as trusted as a signed delivery.
pub(crate) fn unique_delivery(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{nanos}-{}-{n}", std::process::id())
}

/// 503 for a hook while the database file is lost to the master: not
/// acknowledged, so the sender (Gitea) retries once it is fixed.
fn refuse_lost(dialect: &str, lost: &db::FileLost) -> HookReply {
    log::error!("change hook {dialect}: not stored: {lost}");
    reply(503, json!({ "error": lost.to_string() }))
}

pub(crate) fn handle(
    cfg: &LiveConfig,
    store: &Store,
    sched: &Sender<SchedMsg>,
    dialect: &str,
    req: &HookRequest,
) -> HookReply {
    let cfg = cfg.current();
    let dialects_cfg = &cfg.www.change_hook_dialects;
    let enabled = match dialect {
        "gitea" => dialects_cfg.gitea.is_some(),
        "github" => dialects_cfg.github.is_some(),
        "base" => dialects_cfg.base.is_some(),
        _ => false,
    };
    if !enabled {
        return reply(
            404,
            json!({"error": format!("change hook dialect {dialect:?} is not enabled in master.cfg")}),
        );
    }
    let refuse = |m: String| {
        log::warn!("change hook {dialect}: refused: {m}");
        reply(403, json!({ "error": m }))
    };
    if let Some(m) = browser_request(req) {
        return refuse(m);
    }
    // Which dialects may run without a secret: only base, only when the
    // config says so in words. Config validation refuses anything else,
    // so this is the second lock on the same door.
    let unsigned_ok = match dialect {
        "gitea" => dialects_cfg
            .gitea
            .as_ref()
            .is_some_and(|d| d.secret.is_some()),
        "github" => dialects_cfg
            .github
            .as_ref()
            .is_some_and(|d| d.secret.is_some()),
        _ => dialects_cfg
            .base
            .as_ref()
            .is_some_and(|d| d.secret.is_some() || d.allow_unsigned),
    };
    if !unsigned_ok {
        return refuse(format!(
            "www.change_hook_dialects.{dialect}.secret is not set: unsigned hooks are refused"
        ));
    }
    let outcome = match dialect {
        "gitea" => dialects_cfg
            .gitea
            .as_ref()
            .map(|d| dialects::gitea::handle(d, req)),
        "github" => dialects_cfg
            .github
            .as_ref()
            .map(|d| dialects::github::handle(d, req)),
        "base" => dialects_cfg
            .base
            .as_ref()
            .map(|d| dialects::base::handle(d, req)),
        _ => None,
    };
    let outcome = match outcome {
        None => {
            return reply(
                404,
                json!({"error": format!("change hook dialect {dialect:?} is not enabled in master.cfg")}),
            )
        }
        Some(Err(HookError::Forbidden(m))) => return refuse(m),
        Some(Err(HookError::BadRequest(m))) => return reply(400, json!({ "error": m })),
        Some(Ok(o)) => o,
    };
    match outcome {
        HookOutcome::Ignored(why) => reply(200, json!({"changes": [], "ignored": why})),
        HookOutcome::Changes { changes, delivery } => {
            if changes.is_empty() {
                return reply(200, json!({"changes": []}));
            }
            // gitea and github got here only with a verified signature (a
            // secret is required above); base, signed or not, is not a
            // forge vouching for a repository, so it never marks its
            // changes as trusted.
            let delivery = match dialect {
                "gitea" | "github" => Some(delivery.unwrap_or_else(|| synthetic_delivery(dialect))),
                _ => None,
            };
            let n = changes.len();
            if let Err(lost) = store.check_file() {
                return refuse_lost(dialect, &lost);
            }
            match store.write(move |c| db::insert_changes(c, &changes, delivery.as_deref())) {
                Ok(ids) => {
                    // Committed, but maybe into a file deleted or replaced
                    // meanwhile, which the next start will not see: checked
                    // again after the COMMIT, so every 200 means the
                    // changes were in the file at the database's path.
                    if let Err(lost) = store.check_file() {
                        return refuse_lost(dialect, &lost);
                    }
                    log::info!("change hook {dialect}: stored {n} change(s) {ids:?}");
                    let _ = sched.send(SchedMsg::NewChanges);
                    reply(200, json!({ "changes": ids }))
                }
                Err(e) => {
                    // Not acknowledged, so the sender (Gitea) may retry.
                    log::error!("change hook {dialect}: storing changes failed: {e:#}");
                    reply(
                        500,
                        json!({"error": "could not store the changes; try again"}),
                    )
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> HookRequest<'static> {
        HookRequest {
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn browser_requests_are_recognised() {
        // What Gitea, GitHub and curl send.
        for ok in [
            req(&[]),
            req(&[
                ("x-gitea-event", "push"),
                ("content-type", "application/json"),
            ]),
            req(&[("sec-fetch-site", "none")]),
        ] {
            assert_eq!(browser_request(&ok), None, "{ok:?}");
        }
        for bad in [
            req(&[("origin", "http://evil.example")]),
            req(&[("origin", "null")]),
            req(&[("origin", "http://127.0.0.1:8010")]),
            req(&[("sec-fetch-site", "cross-site")]),
            req(&[("sec-fetch-site", "same-site")]),
            req(&[("sec-fetch-site", "same-origin")]),
            req(&[("Sec-Fetch-Site", "cross-site")]),
        ] {
            let why = browser_request(&bad).unwrap_or_default();
            assert!(why.contains("web page"), "{bad:?}: {why:?}");
        }
    }

    #[test]
    fn synthetic_delivery_ids_are_unique() {
        assert_ne!(synthetic_delivery("gitea"), synthetic_delivery("gitea"));
    }
}
