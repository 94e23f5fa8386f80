//! The HTTP listener: routing for the change hooks, the JSON API, the pages
//! and their forms, assets, badges and live build streams.
//!
//! Owns: the application side of `http_server` (its `Handler`): each
//! request, on its connection's thread, borrows a read-only SQLite
//! connection from the store's pool
//! (`Store::reader`; hooks need none; readers never wait for the writer in
//! WAL mode), and the state those threads share: `auth::Auth`
//! (failed logins, verified Basic credentials) and `sse::Live` (live build
//! streams, which take their connection over). Hooks go through
//! `change_hook` (which writes via `Store::write` and sends
//! `SchedMsg::NewChanges`); reads go to `api` and `pages`; writes (JSON-RPC
//! and forms) go to `rpc`, which talks to the botmaster on `BotMsg`. Body
//! size limits are given to `http_server` here (`Handler::body_limit`),
//! which enforces them before any parsing.
//!
//! Who may do what is decided here, once per request: change hooks carry
//! their own signatures; reads need a user when `[www] anonymous = "none"`;
//! writes always need one, and a Gitea login one that `[www.auth] admins`
//! names (`auth::Login::may_write`); a Gitea login without that gets what
//! anonymous visitors get. "Log in with Gitea" (`/login/gitea`, its
//! callback) is `gitea_login`'s flow; the session it ends in is made here,
//! as the login form's. A form must come with a session and its CSRF
//! token; a JSON-RPC call with a session must send the token in
//! `X-CSRF-Token`, and every call must be `application/json` (which a
//! cross-site form cannot send). Every POST with a foreign `Origin` is
//! refused. Pages are sent with a Content-Security-Policy that allows no
//! inline script or style. A `Host` other than `localhost`, `127.0.0.1`,
//! `[::1]` or `buildbot_url`'s is refused with 421 (DNS rebinding), except
//! on the change hooks, which are signed.

use crate::config::LiveConfig;
use crate::config::{Anonymous, Config, ParamKind};
use crate::db::{self, Store};
use crate::master::auth::{self, Auth, AuthError, Login, Via};
use crate::master::botmaster::BotMsg;
use crate::master::events::Hub;
use crate::master::scheduler::SchedMsg;
use crate::model::{BuildId, LogId, RequestId};
use crate::web::api::{self, ApiBody};
use crate::web::assets;
use crate::web::change_hook;
use crate::web::dialects::HookRequest;
use crate::web::gitea_login::{self, Flows};
use crate::web::html::Html;
use crate::web::http_server::{
    self, error, Handler, Head, Listener, Method, Reply, Request, Response,
};
use crate::web::logview;
use crate::web::pages::{self, Ctx};
use crate::web::rpc::{self, Writer};
use crate::web::sse::{self, Live, Watch};
use anyhow::{Context, Result};
use crossbeam_channel::Sender;
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;

/// Request bodies larger than this get 413 (SPEC §3)...
const MAX_BODY: usize = 1024 * 1024;
/// ...except hooks, which Gitea allows up to 25 MiB.
const MAX_HOOK_BODY: usize = 25 * 1024 * 1024;

/// Pages may load only our own script, style and images.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
                   base-uri 'none'; object-src 'none'";

#[derive(Clone)]
pub(crate) struct WwwCtx {
    pub store: Store,
    pub cfg: LiveConfig,
    pub sched: Sender<SchedMsg>,
    /// For writes that act on builds (force, stop, rebuild).
    pub bot: Sender<BotMsg>,
    /// Live updates for pages that tail logs.
    pub events: Hub,
    pub master_dir: PathBuf,
}

/// What every request's handling shares beyond the context.
#[derive(Clone)]
struct Shared {
    auth: Auth,
    live: Live,
    /// "Log in with Gitea" logins under way.
    gitea: Flows,
}

/// The application behind the connection layer (`http_server`).
struct App {
    ctx: WwwCtx,
    shared: Shared,
}

impl Handler for App {
    fn body_limit(&self, head: &Head) -> usize {
        if head.target.starts_with("/change_hook/") {
            MAX_HOOK_BODY
        } else {
            MAX_BODY
        }
    }

    fn handle(&self, req: Request) -> Reply {
        handle(req, &self.ctx, &self.shared)
    }
}

/// Starts serving HTTP on `listener` with at most `max_connections`
/// connections open (`http_server`). Call it only once start-up recovery
/// has committed: no answer may show the state a dead master left
/// (connections made before wait in the listen backlog).
pub(crate) fn start(
    listener: Listener,
    ctx: WwwCtx,
    max_connections: usize,
) -> Result<http_server::Server> {
    let shared = Shared {
        auth: Auth::new(),
        live: Live::new(ctx.events.clone()),
        gitea: Flows::default(),
    };
    let app: Arc<dyn Handler> = Arc::new(App { ctx, shared });
    http_server::Server::start(listener, max_connections, app)
        .map_err(|e| anyhow::anyhow!("starting the HTTP server: {e}"))
}

type Resp = Response;

fn respond_bytes(status: u16, content_type: &str, body: Vec<u8>) -> Resp {
    Response::bytes(status, content_type, body)
}

fn json_resp(status: u16, v: &serde_json::Value) -> Resp {
    respond_bytes(status, "application/json", v.to_string().into_bytes())
}

fn html(status: u16, body: Html) -> Resp {
    respond_bytes(status, "text/html; charset=utf-8", body.into_bytes())
        .with_header("Cache-Control", "no-store")
}

fn redirect(to: &str) -> Resp {
    respond_bytes(303, "text/plain; charset=utf-8", Vec::new()).with_header("Location", to)
}

/// One request as the routes see it.
struct Req<'a> {
    method: Method,
    /// The request body (already read, within the path's limit).
    body: &'a [u8],
    path: String,
    query: Vec<(String, String)>,
    /// Lower-case names.
    headers: Vec<(String, String)>,
    /// The client's address, or "unix" on a unix socket (rate limits).
    addr: String,
    login: Option<Login>,
    conn: &'a db::Conn,
    ctx: &'a WwwCtx,
    shared: &'a Shared,
    cfg: Arc<Config>,
}

impl Req<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn user(&self) -> Option<&str> {
        self.login.as_ref().map(|l| l.user.name.as_str())
    }

    /// The session's CSRF token.
    fn session_csrf(&self) -> Option<&str> {
        match &self.login {
            Some(Login {
                via: Via::Session { csrf, .. },
                ..
            }) => Some(csrf),
            _ => None,
        }
    }

    /// The session's CSRF token if its user may write: the pages show
    /// write forms only with it.
    fn csrf(&self) -> Option<&str> {
        let may_write = self
            .login
            .as_ref()
            .is_some_and(|l| l.may_write(self.cfg.www.auth.as_ref()));
        self.session_csrf().filter(|_| may_write)
    }

    fn page_ctx(&self) -> Ctx<'_> {
        Ctx {
            conn: self.conn,
            cfg: &self.cfg,
            user: self.user(),
            csrf: self.csrf(),
            session: self.session_csrf(),
            master_dir: &self.ctx.master_dir,
            now: crate::model::now(),
        }
    }

    fn writer(&self) -> Writer<'_> {
        Writer {
            store: &self.ctx.store,
            cfg: &self.cfg,
            bot: &self.ctx.bot,
            conn: self.conn,
        }
    }

    /// A POST that comes from another site (see [`foreign_origin`]).
    fn cross_origin(&self) -> bool {
        let url_host = self.cfg.buildbot_url.as_deref().and_then(host_of);
        let ours = [
            self.header("host"),
            self.header("x-forwarded-host"),
            url_host.as_deref(),
        ];
        foreign_origin(self.header("origin"), self.header("sec-fetch-site"), &ours)
    }
}

/// `host[:port]` of an http(s) URL.
fn host_of(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    Some(rest.split('/').next().unwrap_or("").to_string())
}

/// Whether a request's `Origin` is not ours: not the `Host` it was sent
/// to, nor `X-Forwarded-Host` behind a reverse proxy (a cross-site page
/// cannot set either), nor `buildbot_url`'s. Without an `Origin`, only
/// `Sec-Fetch-Site: cross-site` counts (curl and scripts send neither).
fn foreign_origin(origin: Option<&str>, fetch_site: Option<&str>, ours: &[Option<&str>]) -> bool {
    let Some(origin) = origin else {
        return fetch_site == Some("cross-site");
    };
    let Some(host) = host_of(origin) else {
        return true;
    };
    !ours.iter().flatten().any(|h| *h == host)
}

fn handle(req: Request, ctx: &WwwCtx, shared: &Shared) -> Reply {
    let Request { head, body } = req;
    let url = head.target.as_str();
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (url.to_string(), String::new()),
    };
    let query: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let cfg = ctx.cfg.current();
    if let Some(dialect) = path.strip_prefix("/change_hook/") {
        // Hooks carry their own signatures and only write: no reader, and
        // any Host (Gitea may name the master however it reaches it).
        let resp = change_hook(&head.method, dialect, head.headers, query, &body, ctx);
        return Reply::Respond(finish(&path, resp));
    }
    if !allowed_host(head.header("host"), cfg.buildbot_url.as_deref()) {
        return Reply::Respond(finish(
            &path,
            error(421, "this master does not serve that host name"),
        ));
    }
    // A database file deleted or replaced under the running master: its
    // pages would show (and its forms write) a file about to be lost, and
    // readers would open whatever is at the path now (issue 16 point 5).
    if let Err(lost) = ctx.store.check_file() {
        return Reply::Respond(finish(&path, error(503, &lost.to_string())));
    }
    let conn = match ctx.store.reader() {
        Ok(c) => c,
        Err(e) => {
            log::error!("http: {e:#}");
            return Reply::Respond(finish(
                &path,
                error(503, "cannot read the database; see master.log"),
            ));
        }
    };
    let addr = head
        .remote
        .map(|a| a.to_string())
        .unwrap_or_else(|| "unix".to_string());
    let mut r = Req {
        method: head.method.clone(),
        body: &body,
        path,
        query,
        headers: head.headers,
        addr,
        login: None,
        conn: &conn,
        ctx,
        shared,
        cfg,
    };
    let resp = match prepare(&mut r) {
        Ok(()) => {
            if r.method == Method::Get && r.path == "/live" {
                // An overview page's stream (`sse::Live::start_overview`).
                let version = r.param("v").and_then(|v| v.parse().ok());
                match r.shared.live.start_overview(r.ctx.store.clone(), version) {
                    Some(stream) => {
                        return Reply::Takeover(Box::new(move |out| stream(Box::new(out))))
                    }
                    None => too_many_live(),
                }
            } else if let Some(buildid) = live_path(&r) {
                // The connection goes to a live stream (or gets an answer).
                match start_live(&r, buildid) {
                    Ok(takeover) => return takeover,
                    Err(resp) => resp,
                }
            } else {
                route(&r)
            }
        }
        Err(resp) => resp,
    };
    // A write (force, stop, login) whose commit may have gone to a file
    // deleted meanwhile is not confirmed: checked again after it.
    if r.method == Method::Post {
        if let Err(lost) = ctx.store.check_file() {
            return Reply::Respond(finish(&r.path, error(503, &lost.to_string())));
        }
    }
    Reply::Respond(finish(&r.path, resp))
}

/// Whether a request's `Host` is one this master answers to: the host of
/// `buildbot_url`, `localhost`, `127.0.0.1` or `[::1]`, on any port (an SSH
/// tunnel may forward another local port). Anything else is DNS rebinding:
/// a web page whose own name now points at 127.0.0.1. A request without
/// `Host` (HTTP/1.0, scripts) is no browser's and is let through.
fn allowed_host(host: Option<&str>, buildbot_url: Option<&str>) -> bool {
    let Some(host) = host else {
        return true;
    };
    let name = strip_port(host.trim());
    let url_name = buildbot_url
        .and_then(host_of)
        .map(|h| strip_port(&h).to_ascii_lowercase());
    let name = name.to_ascii_lowercase();
    matches!(name.as_str(), "localhost" | "127.0.0.1" | "[::1]")
        || url_name.is_some_and(|u| !u.is_empty() && u == name)
}

/// `host` without a `:port` suffix (`[::1]:8010` → `[::1]`).
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(i) => &host[..=i],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Adds the headers every answer carries.
fn finish(path: &str, resp: Resp) -> Resp {
    let resp = resp
        .with_header("X-Content-Type-Options", "nosniff")
        .with_header("Referrer-Policy", "same-origin")
        .with_header("X-Frame-Options", "DENY");
    if !path.starts_with("/api/") && !path.starts_with("/change_hook/") {
        resp.with_header("Content-Security-Policy", CSP)
    } else {
        resp
    }
}

/// `POST /change_hook/<dialect>`.
fn change_hook(
    method: &Method,
    dialect: &str,
    headers: Vec<(String, String)>,
    query: Vec<(String, String)>,
    body: &[u8],
    ctx: &WwwCtx,
) -> Resp {
    if *method != Method::Post {
        return error(405, "change hooks take POST");
    }
    let hook = HookRequest {
        headers,
        query,
        body,
    };
    let res = change_hook::handle(&ctx.cfg, &ctx.store, &ctx.sched, dialect, &hook);
    json_resp(res.status, &res.body)
}

/// Who is asking, and may they read at all? Assets need nobody (nor do
/// change hooks, which never get here); the login pages are always open.
fn prepare(r: &mut Req) -> Result<(), Resp> {
    if r.path.starts_with("/assets/") {
        return Ok(());
    }
    let api = r.path.starts_with("/api/");
    r.login = match r.shared.auth.identify(r.conn, &r.headers, &r.addr) {
        Ok(l) => l,
        Err(AuthError::BadCredentials) => {
            return Err(unauthorized(api, "wrong user name or password"))
        }
        Err(AuthError::RateLimited) => {
            return Err(error(
                429,
                "login not checked now (too many failed logins, or password checks busy); \
                 try again in a few seconds",
            )
            .with_header("Retry-After", "2"))
        }
        Err(AuthError::Internal(e)) => {
            log::error!("http: checking credentials: {e}");
            return Err(error(500, "internal error; see master.log"));
        }
    };
    // A Gitea login's session after a reconfig removed `[www.auth]`.
    if r.login.as_ref().is_some_and(|l| l.gitea.is_some()) && r.cfg.www.auth.is_none() {
        r.login = None;
    }
    let anonymous_read = match r.cfg.www.anonymous {
        Anonymous::Read => true,
        Anonymous::None => false,
    };
    let login_pages = r.path == "/login" || r.path.starts_with("/login/gitea");
    let may_read = anonymous_read
        || r.login
            .as_ref()
            .is_some_and(|l| l.may_write(r.cfg.www.auth.as_ref()));
    if r.login.is_some() && !may_read && !login_pages && r.path != "/logout" {
        // A Gitea login that `admins` no longer names.
        return Err(error(403, NO_ROLE));
    }
    if r.login.is_none() && !anonymous_read && !login_pages {
        if api || r.method != Method::Get {
            return Err(unauthorized(api, "log in first (anonymous = \"none\")"));
        }
        return Err(redirect(&format!(
            "/login?next={}",
            url::form_urlencoded::byte_serialize(r.path.as_bytes()).collect::<String>()
        )));
    }
    Ok(())
}

/// The refusal of a write (or, with `anonymous = "none"`, of any page) to
/// a Gitea login that `[www.auth] admins` does not name.
const NO_ROLE: &str = "Your Gitea account may not do this here: [www.auth] admins names neither \
                       it nor one of its organisations or teams (ask the master's operator).";

fn unauthorized(api: bool, msg: &str) -> Resp {
    let resp = error(401, msg);
    if api {
        resp.with_header("WWW-Authenticate", "Basic realm=\"minibot\"")
    } else {
        resp
    }
}

fn route(r: &Req) -> Resp {
    let path = r.path.as_str();
    let method = &r.method;
    if let Some(rest) = path.strip_prefix("/api/v2") {
        return match *method {
            Method::Get | Method::Head => api_get(r, rest),
            Method::Post => api_post(r, rest),
            _ => error(405, "the API takes GET, or POST for JSON-RPC"),
        };
    }
    let is_read = matches!(*method, Method::Get | Method::Head);
    if *method == Method::Post {
        return form_post(r);
    }
    if !is_read {
        return error(405, "pages take GET, forms POST");
    }
    match page(r) {
        Ok(resp) => resp,
        Err(e) => {
            log::error!("page {path}: {e:#}");
            html(
                500,
                pages::message(
                    &r.page_ctx(),
                    "Internal error",
                    "Something went wrong; the master's log says what.",
                    "/",
                ),
            )
        }
    }
}

fn api_get(r: &Req, rest: &str) -> Resp {
    if let Some(name) = rest.strip_prefix("/forceschedulers") {
        let (status, v) = rpc::forceschedulers(&r.cfg, name.trim_start_matches('/'));
        return json_resp(status, &v);
    }
    let res = api::get(r.conn, &r.cfg, &r.ctx.master_dir, rest, &r.query);
    match res.body {
        ApiBody::Bytes(b) => respond_bytes(res.status, res.content_type, b),
        ApiBody::Reader(rd) => Response::stream(res.status, res.content_type, rd),
    }
}

/// JSON-RPC writes: `application/json`, a user, and with a session its
/// CSRF token in `X-CSRF-Token`.
fn api_post(r: &Req, rest: &str) -> Resp {
    let fail = |status: u16, code: i64, msg: &str| {
        let (s, v) = rpc::error_response(
            &serde_json::Value::Null,
            rpc::RpcError {
                status,
                code,
                message: msg.to_string(),
            },
        );
        json_resp(s, &v)
    };
    let target = match rpc::target(r.conn, rest) {
        Ok(Some(t)) => t,
        Ok(None) => return error(405, "this API path takes GET"),
        Err(e) => return fail(e.status, e.code, &e.message),
    };
    if r.cross_origin() {
        return fail(403, -32600, "cross-origin request refused");
    }
    let json_body = r
        .header("content-type")
        .is_some_and(|t| t.trim_start().starts_with("application/json"));
    if !json_body {
        return fail(
            415,
            -32600,
            "JSON-RPC calls need Content-Type: application/json",
        );
    }
    let Some(login) = &r.login else {
        return unauthorized(true, "writes need a user: log in, or use HTTP Basic auth")
            .with_header("Cache-Control", "no-store");
    };
    if !login.may_write(r.cfg.www.auth.as_ref()) {
        return fail(403, -32600, NO_ROLE);
    }
    if let Via::Session { csrf, .. } = &login.via {
        if !r
            .header("x-csrf-token")
            .is_some_and(|t| auth::same_token(t, csrf))
        {
            return fail(403, -32600, "missing or wrong X-CSRF-Token");
        }
    }
    let (status, v) = rpc::jsonrpc(&r.writer(), &target, r.body, &login.user.name);
    json_resp(status, &v)
}

/// The path's segments after `prefix`, percent-decoded.
fn segments(path: &str) -> Option<Vec<String>> {
    api::path_segments(path)
}

/// `page=N` (1-based), defaulting to 1.
fn page_param(r: &Req) -> i64 {
    r.param("page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
        .clamp(1, 1_000_000)
}

fn not_found_page(r: &Req) -> Resp {
    html(
        404,
        pages::message(&r.page_ctx(), "Not found", "There is nothing here.", "/"),
    )
}

fn page(r: &Req) -> Result<Resp> {
    let c = r.page_ctx();
    let Some(segs) = segments(&r.path) else {
        return Ok(error(400, "bad path"));
    };
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    // `?fragment=1`: only what is inside `<main>` (as `Ctx::layout`
    // writes it), for live pages to swap
    // in (the same renderer as the whole page).
    let fragment = r.param("fragment") == Some("1");
    let ok = |s: Html| {
        let s = match fragment {
            true => s.inner("<main id=\"main\">", "</main>").unwrap_or(s),
            false => s,
        };
        Ok(html(200, s))
    };
    match segs.as_slice() {
        [] => ok(pages::home(&c)?),
        ["login"] => {
            let token = auth::random_token()?;
            let next = safe_next(r.param("next"));
            Ok(html(
                200,
                pages::login(&c, &next, None, &token, r.cfg.www.auth.is_some()),
            )
            .with_header(
                "Set-Cookie",
                auth::set_cookie(auth::LOGIN_COOKIE, &token, 3600),
            ))
        }
        ["login", "gitea"] => Ok(gitea_start(r)),
        ["login", "gitea", "callback"] => Ok(gitea_callback(r)),
        ["assets", "minibot.css"] => Ok(asset("text/css; charset=utf-8", assets::CSS)),
        ["assets", "log.css"] => Ok(asset("text/css; charset=utf-8", assets::LOG_CSS)),
        ["assets", "ansi.css"] => Ok(asset("text/css; charset=utf-8", assets::ANSI_CSS)),
        ["assets", "minibot.js"] => Ok(asset("text/javascript; charset=utf-8", assets::JS)),
        ["assets", "log.js"] => Ok(asset("text/javascript; charset=utf-8", assets::LOG_JS)),
        ["assets", "logpage.js"] => {
            Ok(asset("text/javascript; charset=utf-8", assets::LOG_PAGE_JS))
        }
        ["assets", "request.js"] => Ok(asset("text/javascript; charset=utf-8", assets::REQUEST_JS)),
        ["assets", "favicon.svg"] => Ok(asset("image/svg+xml", assets::FAVICON)),
        ["builders"] => Ok(redirect("/")),
        ["builders", name] => match pages::builder(&c, name, page_param(r))? {
            Some(p) => ok(p),
            None => Ok(not_found_page(r)),
        },
        ["builders", name, "builds", n] => {
            let Ok(n) = n.parse() else {
                return Ok(not_found_page(r));
            };
            match pages::build(&c, name, n)? {
                Some(p) => ok(p),
                None => Ok(not_found_page(r)),
            }
        }
        ["builds", id] => match id.parse().ok().map(|id| pages::build_by_id(r.conn, id)) {
            Some(Ok(Some(b))) => Ok(redirect(&pages::build_page_url(&b))),
            Some(Err(e)) => Err(e),
            _ => Ok(not_found_page(r)),
        },
        ["builds", id, "stop"] => match id.parse().ok().map(|id| pages::build_by_id(r.conn, id)) {
            Some(Ok(Some(b))) => ok(pages::stop_page(&c, &b)),
            Some(Err(e)) => Err(e),
            _ => Ok(not_found_page(r)),
        },
        ["logs", id, "chunk"] => {
            let (Ok(id), Some(end)) = (
                id.parse::<LogId>(),
                r.param("end").and_then(|e| e.parse::<u64>().ok()),
            ) else {
                return Ok(error(400, "give a log id and ?end=<offset>"));
            };
            match pages::log_chunk(r.conn, &r.ctx.master_dir, id, end)? {
                Some(v) => Ok(json_resp(200, &v)),
                None => Ok(error(404, "no such log")),
            }
        }
        ["logs", id] => {
            let Ok(id) = id.parse::<LogId>() else {
                return Ok(not_found_page(r));
            };
            let num = |k: &str| r.param(k).and_then(|v| v.parse::<u64>().ok());
            let p = logview::LogParams {
                q: r.param("q").unwrap_or("").to_string(),
                regex: r.param("re").is_some_and(|v| !v.is_empty() && v != "0"),
                line: num("line"),
                after: num("after"),
                before: num("before"),
                from: num("from"),
            };
            match logview::log_page(&c, id, &p)? {
                logview::LogAnswer::Page(h) => ok(h),
                logview::LogAnswer::Redirect(to) => Ok(redirect(&to)),
                logview::LogAnswer::NotFound => Ok(not_found_page(r)),
            }
        }
        ["logs", id, "download"] => {
            let Ok(id) = id.parse::<LogId>() else {
                return Ok(not_found_page(r));
            };
            let Some(buildid) = db::log_build(r.conn, id)? else {
                return Ok(not_found_page(r));
            };
            let path = db::log_path(&r.ctx.master_dir, buildid, id);
            let body: Box<dyn std::io::Read + Send> = match logview::gzip_reader(&path) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Box::new(
                    flate2::read::GzEncoder::new(std::io::empty(), flate2::Compression::fast()),
                ),
                Err(e) => return Err(e).context("opening a log to download"),
            };
            Ok(Response::stream(200, "application/gzip", body)
                .with_header(
                    "Content-Disposition",
                    format!("attachment; filename=\"build-{buildid}-log-{id}.txt.gz\""),
                )
                .with_header("Cache-Control", "no-store"))
        }
        ["artifacts", id, "download"] => match id.parse() {
            Ok(id) => {
                crate::web::artifacts::download(r.conn, &r.ctx.master_dir, id, r.header("range"))
            }
            Err(_) => Ok(not_found_page(r)),
        },
        ["workers"] => ok(pages::workers(&c)?),
        ["changes"] => ok(pages::changes(&c, page_param(r))?),
        ["console"] => ok(pages::console(&c)?),
        ["buildrequests"] => ok(pages::buildrequests(&c)?),
        ["buildrequests", id] => {
            let Ok(id) = id.parse::<RequestId>() else {
                return Ok(not_found_page(r));
            };
            if let Some(b) = pages::request_build(r.conn, id)? {
                return Ok(redirect(&pages::build_page_url(&b)));
            }
            match pages::buildrequest(&c, id)? {
                Some(p) => ok(p),
                None => Ok(not_found_page(r)),
            }
        }
        ["badges", file] => {
            let Some(name) = file.strip_suffix(".svg") else {
                return Ok(not_found_page(r));
            };
            let (status, svg) = match pages::badge_svg(r.conn, name)? {
                Some(svg) => (200, svg),
                None => (404, pages::svg_badge("build", "no such builder", "#ccc")),
            };
            Ok(respond_bytes(status, "image/svg+xml", svg.into_bytes())
                .with_header("Cache-Control", "no-cache"))
        }
        _ => Ok(not_found_page(r)),
    }
}

fn asset(content_type: &str, text: &'static str) -> Resp {
    Response::asset(200, content_type, text.as_bytes()).with_header("Cache-Control", "max-age=300")
}

/// A local path to go back to after logging in; anything else is `/`.
/// It becomes a `Location` header, so no control characters either (CR/LF
/// would split the response; `http_server` would refuse it as a 500).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && http_server::valid_header_value(n) =>
        {
            n.to_string()
        }
        _ => "/".to_string(),
    }
}

/// `GET /builds/<id>/live`: the build id, if this is one.
fn live_path(r: &Req) -> Option<BuildId> {
    if r.method != Method::Get {
        return None;
    }
    let rest = r.path.strip_prefix("/builds/")?;
    let id = rest.strip_suffix("/live")?;
    id.parse().ok()
}

/// Hands the connection to a live stream, or says why not.
fn start_live(r: &Req, buildid: BuildId) -> Result<Reply, Resp> {
    match pages::build_by_id(r.conn, buildid) {
        Ok(Some(_)) => {}
        Ok(None) => return Err(error(404, "no such build")),
        Err(e) => {
            log::error!("live stream for build {buildid}: {e:#}");
            return Err(error(500, "internal error; see master.log"));
        }
    }
    let w = Watch {
        buildid,
        offsets: sse::parse_offsets(r.param("logs").unwrap_or("")),
        user: r.user().map(str::to_string),
        csrf: r.csrf().map(str::to_string),
        session: r.session_csrf().map(str::to_string),
    };
    match r.shared.live.start(
        r.ctx.store.clone(),
        r.cfg.clone(),
        r.ctx.master_dir.clone(),
        w,
    ) {
        Some(stream) => Ok(Reply::Takeover(Box::new(move |out| stream(Box::new(out))))),
        None => Err(too_many_live()),
    }
}

/// Every live stream slot is taken (`sse::MAX_STREAMS`).
fn too_many_live() -> Resp {
    error(503, "too many live pages open; reload later").with_header("Retry-After", "10")
}

/// Form posts from the pages: login, logout, force, stop, rebuild,
/// cancel, pause. Each needs a session and its CSRF token (login: the
/// double-submit cookie), and answers with a redirect or a message page.
fn form_post(r: &Req) -> Resp {
    let msg = |status: u16, heading: &str, text: &str| {
        html(
            status,
            pages::message(&r.page_ctx(), heading, text, &back(r)),
        )
    };
    if r.cross_origin() {
        return msg(403, "Refused", "This form was sent from another site.");
    }
    let form: Vec<(String, String)> = url::form_urlencoded::parse(r.body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if r.path == "/login" {
        return login_post(
            r,
            field("username"),
            field("password"),
            field("csrf"),
            field("next"),
        );
    }
    let (user, session_csrf, token_hash) = match &r.login {
        Some(Login {
            user,
            via: Via::Session { csrf, token_hash },
            ..
        }) => (user.name.as_str(), csrf.as_str(), token_hash.as_str()),
        Some(_) => {
            return msg(
                403,
                "Log in with the form",
                "Forms need a login session; HTTP Basic auth is for the JSON API.",
            )
        }
        None => return msg(401, "Log in first", "Only logged-in users may do this."),
    };
    if !field("csrf").is_some_and(|t| auth::same_token(t, session_csrf)) {
        return msg(
            403,
            "Refused",
            "The form's security token is missing or stale; reload the page and try again.",
        );
    }
    let may_write = r
        .login
        .as_ref()
        .is_some_and(|l| l.may_write(r.cfg.www.auth.as_ref()));
    if !may_write && r.path != "/logout" {
        log::info!(
            "{user} (a Gitea login without a role) was refused {}",
            r.path
        );
        return msg(403, "Not allowed", NO_ROLE);
    }
    let Some(segs) = segments(&r.path) else {
        return error(400, "bad path");
    };
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let w = r.writer();
    let fail = |e: rpc::RpcError| msg(e.status, "Not done", &e.message);
    match segs.as_slice() {
        ["logout"] => {
            let th = token_hash.to_string();
            if let Err(e) = r.ctx.store.write(move |c| db::delete_session(c, &th)) {
                log::error!("logout: {e:#}");
            }
            log::info!("{user} logged out");
            redirect("/").with_header("Set-Cookie", auth::set_cookie(auth::SESSION_COOKIE, "", 0))
        }
        ["builders", builder, "force"] => {
            let mut params = serde_json::Map::new();
            params.insert("builderNames".into(), json!([builder]));
            let sched = field("scheduler").unwrap_or("");
            // The scheduler's own form fields (branch, revision, reason and
            // its typed properties); an unchecked checkbox sends nothing.
            if let Some(s) = w.cfg.force_scheduler(sched) {
                for p in s.force_parameters() {
                    match (field(&p.name), &p.kind) {
                        (Some(v), _) => {
                            params.insert(p.name.clone(), json!(v));
                        }
                        (None, ParamKind::Bool) => {
                            params.insert(p.name.clone(), json!(false));
                        }
                        (
                            None,
                            ParamKind::String { .. }
                            | ParamKind::Text { .. }
                            | ParamKind::Int
                            | ParamKind::Choice { .. }
                            | ParamKind::Fixed,
                        ) => {}
                    }
                }
            }
            match rpc::force(&w, sched, &params, user) {
                Ok((_, reqs)) => match reqs.values().next() {
                    Some(brid) => redirect(&format!("/buildrequests/{brid}")),
                    None => redirect(&format!(
                        "/builders/{}",
                        pages::encode_path_segment(builder)
                    )),
                },
                Err(e) => fail(e),
            }
        }
        ["builds", b, "stop"] => match b.parse::<BuildId>().ok() {
            Some(b) => match rpc::stop_build(&w, b, field("reason"), user) {
                Ok(()) => redirect(&format!("/builds/{b}")),
                Err(e) => fail(e),
            },
            None => not_found_page(r),
        },
        ["builds", b, "rebuild"] => match b.parse::<BuildId>().ok() {
            Some(b) => match rpc::rebuild(&w, b, user) {
                Ok((_, reqs)) => match reqs.values().next() {
                    Some(brid) => redirect(&format!("/buildrequests/{brid}")),
                    None => redirect(&format!("/builds/{b}")),
                },
                Err(e) => fail(e),
            },
            None => not_found_page(r),
        },
        ["buildrequests", q, "cancel"] => match q.parse::<RequestId>().ok() {
            Some(q) => match rpc::cancel_request(&w, q, field("reason"), user) {
                Ok(()) => redirect(&format!("/buildrequests/{q}")),
                Err(e) => fail(e),
            },
            None => not_found_page(r),
        },
        ["workers", worker, action @ ("pause" | "unpause")] => {
            match rpc::set_paused(&w, worker, *action == "pause", user) {
                Ok(()) => redirect("/workers"),
                Err(e) => fail(e),
            }
        }
        _ => error(405, "nothing here takes POST"),
    }
}

/// Where a message page's "Back" goes: the page the form was on.
fn back(r: &Req) -> String {
    let referer = r.header("referer").unwrap_or("/");
    let host = r.header("host").unwrap_or("");
    let local = referer
        .strip_prefix("http://")
        .or_else(|| referer.strip_prefix("https://"))
        .and_then(|rest| rest.strip_prefix(host))
        .unwrap_or(referer);
    safe_next(Some(local))
}

fn login_post(
    r: &Req,
    name: Option<&str>,
    password: Option<&str>,
    csrf: Option<&str>,
    next: Option<&str>,
) -> Resp {
    let next = safe_next(next);
    let cookie = r
        .headers
        .iter()
        .filter(|(k, _)| k == "cookie")
        .find_map(|(_, v)| auth::cookie(v, auth::LOGIN_COOKIE));
    let again = |status: u16, err: &str| -> Resp {
        let token = match auth::random_token() {
            Ok(t) => t,
            Err(e) => {
                log::error!("login: {e:#}");
                return error(500, "internal error; see master.log");
            }
        };
        html(
            status,
            pages::login(
                &r.page_ctx(),
                &next,
                Some(err),
                &token,
                r.cfg.www.auth.is_some(),
            ),
        )
        .with_header(
            "Set-Cookie",
            auth::set_cookie(auth::LOGIN_COOKIE, &token, 3600),
        )
    };
    let fresh = matches!((cookie, csrf), (Some(a), Some(b)) if auth::same_token(a, b));
    if !fresh {
        return again(403, "The login form expired; please try again.");
    }
    let (Some(name), Some(password)) = (name, password) else {
        return again(400, "Give a user name and a password.");
    };
    let user = match r
        .shared
        .auth
        .check(r.conn, name, password, &r.addr, "login form")
    {
        Ok((user, _)) => user,
        Err(AuthError::BadCredentials) => return again(401, "Wrong user name or password."),
        Err(AuthError::RateLimited) => {
            return again(
                429,
                "Too many failed logins, or the server is busy checking passwords; wait a few \
                 seconds and try again.",
            )
        }
        Err(AuthError::Internal(e)) => {
            log::error!("login: {e}");
            return again(500, "Internal error; see master.log.");
        }
    };
    let tokens = auth::random_token().and_then(|t| Ok((t, auth::random_token()?)));
    let Ok((token, csrf)) = tokens else {
        return error(500, "internal error; see master.log");
    };
    let (th, expires, id) = (
        auth::token_hash(&token),
        crate::model::now() + auth::SESSION_SECS,
        user.id,
    );
    if let Err(e) = r
        .ctx
        .store
        .write(move |c| db::create_session(c, &th, id, &csrf, expires, None))
    {
        log::error!("login: storing the session: {e:#}");
        return error(500, "internal error; see master.log");
    }
    log::info!("{} logged in from {}", user.name, r.addr);
    redirect(&next)
        .with_header(
            "Set-Cookie",
            auth::set_cookie(auth::SESSION_COOKIE, &token, auth::SESSION_SECS),
        )
        .with_header("Set-Cookie", auth::set_cookie(auth::LOGIN_COOKIE, "", 0))
}

/// `GET /login/gitea`: sends the browser to Gitea's authorize page with a
/// new state and PKCE challenge, bound to it by a cookie.
fn gitea_start(r: &Req) -> Resp {
    let (Some(g), Some(url)) = (r.cfg.www.auth.as_ref(), r.cfg.buildbot_url.as_deref()) else {
        return not_found_page(r);
    };
    let next = safe_next(r.param("next"));
    match gitea_login::start(&r.shared.gitea, g, url, &next) {
        Ok(s) => redirect(&s.location).with_header(
            "Set-Cookie",
            gitea_login::flow_cookie(&s.cookie, gitea_login::FLOW_TTL),
        ),
        Err(e) => {
            log::error!("gitea login: {e:#}");
            error(500, "internal error; see master.log")
        }
    }
}

/// `GET /login/gitea/callback`: Gitea sends the browser back here; on
/// success, a session as the login form makes, lasting
/// `gitea_login::SESSION_SECS`, with the login's organisations and teams.
/// The answer is a page that moves on to `next` by a `Refresh` (a
/// navigation from this site, so the `SameSite=Strict` session cookie goes
/// with it; a redirect would still be Gitea's cross-site navigation).
fn gitea_callback(r: &Req) -> Resp {
    let (Some(g), Some(url)) = (r.cfg.www.auth.as_ref(), r.cfg.buildbot_url.as_deref()) else {
        return not_found_page(r);
    };
    let clear = gitea_login::flow_cookie("", std::time::Duration::ZERO);
    let fail = |status: u16, text: &str| {
        html(
            status,
            pages::message(&r.page_ctx(), "Not logged in", text, "/login"),
        )
        .with_header("Set-Cookie", clear.clone())
    };
    let cookie = r
        .headers
        .iter()
        .filter(|(k, _)| k == "cookie")
        .find_map(|(_, v)| auth::cookie(v, gitea_login::FLOW_COOKIE));
    let (m, next) =
        match gitea_login::finish(&r.shared.gitea, g, url, &r.ctx.master_dir, &r.query, cookie) {
            Ok(x) => x,
            Err(refusal) => {
                r.shared.auth.note_refusal(
                    &r.addr,
                    "gitea",
                    &format!("with Gitea refused: {refusal}"),
                );
                return fail(refusal.status(), &refusal.to_string());
            }
        };
    let name = gitea_login::gitea_user_name(&m.login);
    let admin = m.matches(&g.admins);
    if !admin && r.cfg.www.anonymous == Anonymous::None {
        r.shared.auth.note_refusal(
            &r.addr,
            "gitea",
            &format!("with Gitea of {name} refused: no role and anonymous = \"none\""),
        );
        return fail(403, NO_ROLE);
    }
    let tokens = auth::random_token().and_then(|t| Ok((t, auth::random_token()?)));
    let (Ok((token, csrf)), Ok(membership)) = (tokens, serde_json::to_string(&m)) else {
        return error(500, "internal error; see master.log");
    };
    let th = auth::token_hash(&token);
    let expires = crate::model::now() + gitea_login::SESSION_SECS;
    let user = name.clone();
    if let Err(e) = r.ctx.store.write(move |c| {
        let id = db::gitea_user(c, &user)?;
        db::create_session(c, &th, id, &csrf, expires, Some(&membership))
    }) {
        log::error!("gitea login: storing the session: {e:#}");
        return error(500, "internal error; see master.log");
    }
    let role = if admin { "admin" } else { "no role" };
    log::info!("{name} logged in with Gitea from {} ({role})", r.addr);
    let page = pages::message(
        &r.page_ctx(),
        "Logged in",
        &format!("Logged in as {name}."),
        &next,
    );
    html(200, page)
        .with_header("Refresh", format!("0; url={next}"))
        .with_header(
            "Set-Cookie",
            auth::set_cookie(auth::SESSION_COOKIE, &token, gitea_login::SESSION_SECS),
        )
        .with_header("Set-Cookie", clear)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let ours = [Some("localhost:12345"), None, Some("ci.example.org")];
        assert!(!foreign_origin(Some("http://localhost:12345"), None, &ours));
        assert!(!foreign_origin(Some("https://ci.example.org"), None, &ours));
        assert!(foreign_origin(Some("http://evil.example"), None, &ours));
        assert!(foreign_origin(Some("http://localhost:12346"), None, &ours));
        assert!(foreign_origin(Some("null"), None, &ours));
        assert!(!foreign_origin(None, None, &ours));
        assert!(!foreign_origin(None, Some("same-origin"), &ours));
        assert!(foreign_origin(None, Some("cross-site"), &ours));
        assert_eq!(
            host_of("http://ci.example.org/x/"),
            Some("ci.example.org".into())
        );
    }

    #[test]
    fn next_is_local() {
        assert_eq!(safe_next(Some("/builders/x?page=2")), "/builders/x?page=2");
        for bad in ["//evil.example/", "https://evil.example/", "/\\evil", "x"] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_next(None), "/");
        for bad in ["/\r\nSet-Cookie: a=b", "/\nx", "/\tx", "/\0x"] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad:?}");
        }
    }

    #[test]
    fn hosts() {
        for ok in [
            Some("localhost:8010"),
            Some("127.0.0.1:12345"),
            Some("[::1]:80"),
            Some("LOCALHOST"),
            Some("ci.example.org"),
            Some("ci.example.org:443"),
            None,
        ] {
            assert!(allowed_host(ok, Some("https://ci.example.org/")), "{ok:?}");
        }
        for bad in [
            "evil.example",
            "evil.example:8010",
            "127.0.0.2",
            "",
            "localhost.evil",
        ] {
            assert!(
                !allowed_host(Some(bad), Some("https://ci.example.org/")),
                "{bad}"
            );
        }
        assert!(!allowed_host(Some("ci.example.org"), None));
    }
}
