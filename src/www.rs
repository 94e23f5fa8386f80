//! The HTTP listener: routing for the change hooks, the JSON API and pages.
//!
//! Owns: the tiny_http server and a small fixed pool of HTTP threads, each
//! with its own read-only SQLite connection (readers never wait for the
//! writer in WAL mode). Hooks go through `change_hook` (which writes via
//! `Store::write` and sends `SchedMsg::NewChanges`); reads go to `api` and
//! `pages`. Body size limits are enforced here, before any parsing.

use crate::api::{self, ApiBody};
use crate::botmaster::BotMsg;
use crate::change_hook;
use crate::dialects::HookRequest;
use crate::events::Hub;
use crate::pages;
use crate::scheduler::SchedMsg;
use crate::store::{self, Store};
use crate::worker_conn::{current, SharedConfig};
use anyhow::{Context, Result};
use crossbeam_channel::Sender;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use tiny_http::{Header, Method, Request, Response, Server, StatusCode};

/// Request bodies larger than this get 413 (SPEC §3)...
const MAX_BODY: usize = 1024 * 1024;
/// ...except hooks, which Gitea allows up to 25 MiB.
const MAX_HOOK_BODY: usize = 25 * 1024 * 1024;

#[derive(Clone)]
pub struct WwwCtx {
    pub store: Store,
    pub cfg: SharedConfig,
    pub sched: Sender<SchedMsg>,
    /// For writes that act on builds (force, stop, rebuild).
    pub bot: Sender<BotMsg>,
    /// Live updates for pages that tail logs.
    pub events: Hub,
    pub master_dir: PathBuf,
}

/// Starts `threads` HTTP threads on `server`; they exit when the server is
/// unblocked (`Server::unblock`) at shutdown.
pub fn spawn(
    server: Arc<Server>,
    ctx: WwwCtx,
    threads: usize,
) -> Result<Vec<std::thread::JoinHandle<()>>> {
    let mut handles = vec![];
    for i in 0..threads {
        let server = server.clone();
        let ctx = ctx.clone();
        let conn = store::open_reader(ctx.store.path())?;
        let h = std::thread::Builder::new()
            .name(format!("http-{i}"))
            .stack_size(512 * 1024)
            .spawn(move || {
                while let Ok(req) = server.recv() {
                    handle(req, &conn, &ctx);
                }
            })
            .context("spawning an HTTP thread")?;
        handles.push(h);
    }
    Ok(handles)
}

type Resp = Response<Box<dyn Read + Send>>;

fn respond_bytes(status: u16, content_type: &str, body: Vec<u8>) -> Resp {
    let len = body.len();
    Response::new(
        StatusCode(status),
        vec![header("Content-Type", content_type)],
        Box::new(std::io::Cursor::new(body)) as Box<dyn Read + Send>,
        Some(len),
        None,
    )
}

fn json_resp(status: u16, v: &serde_json::Value) -> Resp {
    respond_bytes(status, "application/json", v.to_string().into_bytes())
}

fn error(status: u16, msg: &str) -> Resp {
    json_resp(status, &serde_json::json!({ "error": msg }))
}

fn header(name: &str, value: &str) -> Header {
    // Only called with our own constant names and values.
    Header::from_bytes(name.as_bytes(), value.as_bytes()).unwrap_or_else(|_| {
        Header::from_bytes(&b"X-Invalid"[..], &b"1"[..]).expect("static header is valid")
    })
}

fn handle(mut req: Request, conn: &rusqlite::Connection, ctx: &WwwCtx) {
    let url = req.url().to_string();
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (url.clone(), String::new()),
    };
    let query: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let method = req.method().clone();
    let resp = route(&mut req, &method, &path, &query, conn, ctx);
    let resp = resp
        .with_header(header("X-Content-Type-Options", "nosniff"))
        .with_header(header("Referrer-Policy", "same-origin"));
    if let Err(e) = req.respond(resp) {
        log::debug!("http: writing response to {path}: {e}");
    }
}

/// Reads the body up to `limit` bytes; Err(413 response) beyond.
fn read_body(req: &mut Request, limit: usize) -> Result<Vec<u8>, Resp> {
    if req.body_length().is_some_and(|n| n > limit) {
        return Err(error(413, &format!("request body over {limit} bytes")));
    }
    let mut body = Vec::new();
    match req
        .as_reader()
        .take(limit as u64 + 1)
        .read_to_end(&mut body)
    {
        Ok(n) if n > limit => Err(error(413, &format!("request body over {limit} bytes"))),
        Ok(_) => Ok(body),
        Err(e) => Err(error(400, &format!("reading the request body: {e}"))),
    }
}

fn route(
    req: &mut Request,
    method: &Method,
    path: &str,
    query: &[(String, String)],
    conn: &rusqlite::Connection,
    ctx: &WwwCtx,
) -> Resp {
    if let Some(dialect) = path.strip_prefix("/change_hook/") {
        if *method != Method::Post {
            return error(405, "change hooks take POST");
        }
        let body = match read_body(req, MAX_HOOK_BODY) {
            Ok(b) => b,
            Err(r) => return r,
        };
        let headers = req
            .headers()
            .iter()
            .map(|h| {
                (
                    h.field.as_str().as_str().to_ascii_lowercase(),
                    h.value.as_str().to_string(),
                )
            })
            .collect();
        let hook = HookRequest {
            headers,
            query: query.to_vec(),
            body: &body,
        };
        let r = change_hook::handle(&ctx.cfg, &ctx.store, &ctx.sched, dialect, &hook);
        return json_resp(r.status, &r.body);
    }
    if req.body_length().is_some_and(|n| n > MAX_BODY) {
        return error(413, &format!("request body over {MAX_BODY} bytes"));
    }
    if let Some(rest) = path.strip_prefix("/api/v2") {
        if *method != Method::Get && *method != Method::Head {
            return error(405, "this API path takes GET");
        }
        let r = api::get(conn, &ctx.master_dir, rest, query);
        return match r.body {
            ApiBody::Bytes(b) => respond_bytes(r.status, r.content_type, b),
            ApiBody::Reader(rd) => Response::new(
                StatusCode(r.status),
                vec![header("Content-Type", r.content_type)],
                rd,
                None,
                None,
            ),
        };
    }
    if path == "/" {
        if *method != Method::Get && *method != Method::Head {
            return error(405, "this page takes GET");
        }
        let title = current(&ctx.cfg).title.clone();
        return match pages::home(conn, &title) {
            Ok(html) => respond_bytes(200, "text/html; charset=utf-8", html.into_bytes()),
            Err(e) => {
                log::error!("home page: {e:#}");
                error(500, "internal error; see master.log")
            }
        };
    }
    error(404, "no such path")
}
