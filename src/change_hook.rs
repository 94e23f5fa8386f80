//! `POST /change_hook/<dialect>`: from an HTTP request to stored changes.
//!
//! Owns: dialect dispatch and the durability rule. Runs on the HTTP thread
//! that received the hook: the dialect parser (`dialects::*`) checks the
//! signature and turns the body into changes, `Store::write` commits them
//! (group commit with other hooks), and only then is the hook answered
//! 200. Afterwards it nudges the scheduler thread (`SchedMsg::NewChanges`);
//! if the master dies before the scheduler runs, the changes are still
//! marked unscheduled and are picked up at the next start.

use crate::dialects::{self, HookError, HookOutcome, HookRequest};
use crate::scheduler::SchedMsg;
use crate::store::{self, Store};
use crate::worker_conn::{current, SharedConfig};
use crossbeam_channel::Sender;
use serde_json::json;

pub struct HookReply {
    pub status: u16,
    pub body: serde_json::Value,
}

fn reply(status: u16, body: serde_json::Value) -> HookReply {
    HookReply { status, body }
}

pub fn handle(
    cfg: &SharedConfig,
    store: &Store,
    sched: &Sender<SchedMsg>,
    dialect: &str,
    req: &HookRequest,
) -> HookReply {
    let cfg = current(cfg);
    let dialects_cfg = &cfg.www.change_hook_dialects;
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
        Some(Err(HookError::Forbidden(m))) => {
            log::warn!("change hook {dialect}: refused: {m}");
            return reply(403, json!({ "error": m }));
        }
        Some(Err(HookError::BadRequest(m))) => return reply(400, json!({ "error": m })),
        Some(Ok(o)) => o,
    };
    match outcome {
        HookOutcome::Ignored(why) => reply(200, json!({"changes": [], "ignored": why})),
        HookOutcome::Changes { changes, delivery } => {
            if changes.is_empty() {
                return reply(200, json!({"changes": []}));
            }
            let n = changes.len();
            match store.write(move |c| store::insert_changes(c, &changes, delivery.as_deref())) {
                Ok(ids) => {
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
