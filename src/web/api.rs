//! The read side of the JSON API (`GET /api/v2/...`, SPEC §3).
//!
//! Owns: parsing an API path and its query string into a typed query
//! (`db::api::ItemRef` for the path, `db::api::Spec` for filters with typed
//! operators, order, limit, offset, fields, properties), the envelopes
//! (`{"builds": [...], "meta": {"total": N}}`), and the log text endpoints
//! (`/raw` streamed from disk, `/contents` by line numbers). `db::api` holds
//! the resource descriptions and turns the typed query into SQL with bound
//! parameters and the rows into Buildbot's data-API shapes.
//!
//! No threads, no channels, no writes: the HTTP layer calls [`get`] from its
//! own threads, each with a read connection lent by `Store::reader`, after
//! stripping the `/api/v2` prefix.

use crate::config::Config;
use crate::db;
use crate::db::api::{
    bad, log_info, parse_id, resolve, resource, ApiError, Filter, ItemRef, Op, Param, Resource,
    Spec, Ty::*,
};
use crate::model::{BuildId, LogId, RequestId};
use crate::web::pages;
use serde_json::{json, Map, Value};
use std::fmt;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

/// What the HTTP layer sends back.
pub(crate) struct ApiResponse {
    pub status: u16,
    pub content_type: &'static str,
    pub body: ApiBody,
}

/// A body in memory, or a stream (raw logs) the HTTP layer copies out in
/// constant memory.
pub(crate) enum ApiBody {
    Bytes(Vec<u8>),
    Reader(Box<dyn Read + Send>),
}

impl ApiBody {
    /// Reads the whole body into memory (unit tests).
    #[cfg(test)]
    pub(crate) fn into_bytes(self) -> io::Result<Vec<u8>> {
        match self {
            ApiBody::Bytes(b) => Ok(b),
            ApiBody::Reader(mut r) => {
                let mut out = Vec::new();
                r.read_to_end(&mut out)?;
                Ok(out)
            }
        }
    }
}

impl fmt::Debug for ApiBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiBody::Bytes(b) => write!(f, "Bytes({})", String::from_utf8_lossy(b)),
            ApiBody::Reader(_) => f.write_str("Reader(..)"),
        }
    }
}

impl fmt::Debug for ApiResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiResponse")
            .field("status", &self.status)
            .field("content_type", &self.content_type)
            .field("body", &self.body)
            .finish()
    }
}

pub(crate) const JSON_TYPE: &str = "application/json";
pub(crate) const TEXT_TYPE: &str = "text/plain; charset=utf-8";

/// Most bytes of log text one `/contents` answer holds; a client asking for
/// more gets fewer lines and sees where it stopped in `lastline`.
pub(crate) const MAX_CONTENTS_BYTES: usize = 8 << 20;

// ---------------------------------------------------------------------------
// Resource descriptions

// ---------------------------------------------------------------------------
// Errors

impl From<io::Error> for ApiError {
    fn from(e: io::Error) -> Self {
        ApiError::Internal(format!("i/o: {e}"))
    }
}

fn json_response(status: u16, v: &Value) -> ApiResponse {
    ApiResponse {
        status,
        content_type: JSON_TYPE,
        // Straight into bytes: `to_string` goes through `fmt::Display`,
        // whose per-token formatter calls took a quarter of the answer's
        // instructions for a page of 50 builds. A `Value` always
        // serialises (string keys only); the fallback is never taken.
        body: ApiBody::Bytes(serde_json::to_vec(v).unwrap_or_else(|_| v.to_string().into_bytes())),
    }
}

impl ApiError {
    fn into_response(self, path: &str) -> ApiResponse {
        let (status, msg) = match self {
            ApiError::BadRequest(m) => (400, m),
            ApiError::NotFound(m) => (404, m),
            ApiError::Internal(m) => {
                // The detail goes to the log, not to an anonymous client.
                log::error!("api: GET {path}: {m}");
                (500, "internal error".to_string())
            }
        };
        json_response(status, &json!({ "error": msg }))
    }
}

// ---------------------------------------------------------------------------
// Entry point

/// Answers `GET /api/v2<path>`. `path` is the rest of the URL path, still
/// percent-encoded as it came on the wire (each segment is decoded here, so
/// a builder name may hold an encoded `/`); `query` holds the decoded query
/// pairs in order. Never panics on input; errors are JSON `{"error": ...}`
/// with 400, 404 or 500.
pub(crate) fn get(
    conn: &db::Conn,
    cfg: &Config,
    master_dir: &Path,
    path: &str,
    query: &[(String, String)],
) -> ApiResponse {
    match handle(conn, cfg, master_dir, path, query) {
        Ok(r) => r,
        Err(e) => e.into_response(path),
    }
}

fn handle(
    conn: &db::Conn,
    cfg: &Config,
    master_dir: &Path,
    path: &str,
    query: &[(String, String)],
) -> Result<ApiResponse, ApiError> {
    let segs = split_path(path)?;
    match route(&segs).ok_or_else(|| ApiError::NotFound(format!("Invalid path: {path}")))? {
        Target::Collection(res, parent) => {
            let mut spec = parse_spec(res, query, true)?;
            let wait = WaitingReasons::ask(res, &mut spec);
            let mut parent_key = None;
            if let Some(p) = parent {
                let link = res
                    .parent_link(p.res.plural)
                    .ok_or_else(|| ApiError::NotFound(format!("Invalid path: {path}")))?;
                match resolve(conn, &p)? {
                    Some(pid) => parent_key = Some((link, pid)),
                    // As Buildbot: the children of a missing parent are an
                    // empty collection, not an error.
                    None => return Ok(envelope(res, Vec::new(), Some(0))),
                }
            }
            let (mut items, total) = db::api::collection(conn, res, parent_key, &spec)?;
            wait.fill(conn, cfg, &mut items)?;
            Ok(envelope(res, items, Some(total)))
        }
        Target::Item(item) => {
            let mut spec = parse_spec(item.res, query, false)?;
            let wait = WaitingReasons::ask(item.res, &mut spec);
            let id = resolve(conn, &item)?.ok_or_else(|| not_found(path))?;
            let mut items = db::api::item(conn, item.res, id, &spec)?;
            wait.fill(conn, cfg, &mut items)?;
            if items.is_empty() {
                return Err(not_found(path));
            }
            Ok(envelope(item.res, items, None))
        }
        Target::Raw(item) => {
            parse_paging(query, false)?;
            let logid = LogId(resolve(conn, &item)?.ok_or_else(|| not_found(path))?);
            raw_log(conn, master_dir, logid, path)
        }
        Target::Contents(item) => {
            let (offset, limit) = parse_paging(query, true)?;
            let logid = LogId(resolve(conn, &item)?.ok_or_else(|| not_found(path))?);
            log_contents(conn, master_dir, logid, offset, limit, path)
        }
    }
}

/// A build request's `waiting_reason`, which is not a column: why a
/// queued request has not started is worked out from the queue, the
/// workers and the config, in the words the queue pages use
/// (`pages::waiting_reasons`); null for a request that is not queued.
/// `db::api` declares the field (so `?field=` takes it, and it can be
/// neither filtered nor ordered on) and renders it null; this fills it.
struct WaitingReasons {
    /// Whether the answer shows it.
    wanted: bool,
    /// The fields the fill needs that `?field=` left out: fetched for it,
    /// dropped after.
    added: Vec<&'static str>,
}

impl WaitingReasons {
    const NEEDS: [&'static str; 3] = ["buildrequestid", "claimed", "complete"];

    fn ask(res: &Resource, spec: &mut Spec) -> WaitingReasons {
        let wanted = res.plural == "buildrequests"
            && spec
                .fields
                .as_ref()
                .is_none_or(|f| f.contains(&"waiting_reason"));
        let mut added = vec![];
        if let (true, Some(fields)) = (wanted, spec.fields.as_mut()) {
            for f in Self::NEEDS {
                if !fields.contains(&f) {
                    fields.push(f);
                    added.push(f);
                }
            }
        }
        WaitingReasons { wanted, added }
    }

    fn fill(&self, conn: &db::Conn, cfg: &Config, items: &mut [Value]) -> Result<(), ApiError> {
        if !self.wanted {
            return Ok(());
        }
        let queued: Vec<RequestId> = items
            .iter()
            .filter(|i| i["claimed"] == false && i["complete"] == false)
            .filter_map(|i| i["buildrequestid"].as_i64().map(RequestId))
            .collect();
        let reasons = if queued.is_empty() {
            vec![]
        } else {
            pages::waiting_reasons(conn, cfg, &queued)
                .map_err(|e| ApiError::Internal(format!("why requests wait: {e:#}")))?
        };
        for item in items.iter_mut() {
            let id = item["buildrequestid"].as_i64();
            let Some(obj) = item.as_object_mut() else {
                continue;
            };
            let reason = reasons
                .iter()
                .find(|(r, _)| Some(r.0) == id)
                .map_or(Value::Null, |(_, why)| Value::String(why.clone()));
            obj.insert("waiting_reason".to_string(), reason);
            for f in &self.added {
                obj.remove(*f);
            }
        }
        Ok(())
    }
}

fn not_found(path: &str) -> ApiError {
    ApiError::NotFound(format!("not found: {path}"))
}

/// `{"<plural>": [...], "meta": {...}}`; single items get an empty meta, as
/// Buildbot.
fn envelope(res: &Resource, items: Vec<Value>, total: Option<i64>) -> ApiResponse {
    let meta = match total {
        Some(t) => json!({ "total": t }),
        None => json!({}),
    };
    let mut body = Map::new();
    body.insert(res.plural.to_string(), Value::Array(items));
    body.insert("meta".to_string(), meta);
    json_response(200, &Value::Object(body))
}

// ---------------------------------------------------------------------------
// Routing

/// Most path segments we look at; deeper paths are not ours.
const MAX_SEGMENTS: usize = 12;

fn split_path(path: &str) -> Result<Vec<String>, ApiError> {
    // The HTTP layer should not pass the query, but a stray one must not
    // become part of an id.
    let path = path.split('?').next().unwrap_or("");
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segs.len() > MAX_SEGMENTS {
        return Err(ApiError::NotFound(format!("Invalid path: {path}")));
    }
    segs.into_iter()
        .map(|s| match percent_decode(s) {
            // Never a file path, but `..` in an API path is always a
            // mistake or a probe; say so rather than look it up.
            Some(d) if d != "." && d != ".." => Ok(d),
            _ => Err(bad(format!("bad path segment '{s}'"))),
        })
        .collect()
}

/// The percent-decoded segments of a URL path, as the API reads them
/// (also for the pages and the write side); None for a bad escape, a
/// `.`/`..` segment or more segments than any path of ours has.
pub(crate) fn path_segments(path: &str) -> Option<Vec<String>> {
    split_path(path).ok()
}

/// Decodes `%XX` escapes; None on a bad escape or non-UTF-8 result.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

enum Target<'a> {
    Collection(&'static Resource, Option<ItemRef<'a>>),
    Item(ItemRef<'a>),
    Raw(ItemRef<'a>),
    Contents(ItemRef<'a>),
}

/// Parses the path's shape without touching the database: alternating
/// `<plural>/<item>` pairs, each plural nested under the previous one as
/// its resource description allows, ending on a plural (a collection), an
/// item, or a log's `raw`/`contents`. None: no such path.
fn route(segs: &[String]) -> Option<Target<'_>> {
    let mut parent: Option<ItemRef> = None;
    let mut i = 0;
    loop {
        let res = resource(segs.get(i)?)?;
        if let Some(p) = &parent {
            res.parent_link(p.res.plural)?;
        }
        i += 1;
        let Some(seg) = segs.get(i) else {
            return Some(Target::Collection(res, parent));
        };
        if let Some(p) = &parent {
            let link = res.parent_link(p.res.plural)?;
            if !link.nameable() {
                // e.g. /builders/1/buildrequests/5: Buildbot has no such path.
                return None;
            }
        }
        let item = ItemRef {
            res,
            seg,
            parent: parent.map(Box::new),
        };
        i += 1;
        match segs.get(i).map(String::as_str) {
            None => return Some(Target::Item(item)),
            Some("raw" | "raw_inline") if res.plural == "logs" && i + 1 == segs.len() => {
                return Some(Target::Raw(item))
            }
            Some("contents") if res.plural == "logs" && i + 1 == segs.len() => {
                return Some(Target::Contents(item))
            }
            Some(_) => parent = Some(item),
        }
    }
}

// ---------------------------------------------------------------------------
// Query string: Buildbot's result spec

impl Op {
    /// The operator a `field__op` query key names.
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "lt" => Op::Lt,
            "le" => Op::Le,
            "gt" => Op::Gt,
            "ge" => Op::Ge,
            "contains" => Op::Contains,
            "in" => Op::In,
            "notin" => Op::NotIn,
            _ => return None,
        })
    }
}

/// Groups repeated keys, keeping first-seen order (so errors name the
/// first bad parameter).
fn group(query: &[(String, String)]) -> Vec<(&str, Vec<&str>)> {
    let mut out: Vec<(&str, Vec<&str>)> = Vec::new();
    for (k, v) in query {
        match out.iter_mut().find(|(key, _)| key == k) {
            Some((_, vs)) => vs.push(v),
            None => out.push((k, vec![v])),
        }
    }
    out
}

fn parse_count(name: &str, v: &str) -> Result<i64, ApiError> {
    v.trim()
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| bad(format!("invalid {name}")))
}

fn parse_bool(v: &str) -> Option<bool> {
    // Buildbot's string2boolean.
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn parse_spec(
    res: &'static Resource,
    query: &[(String, String)],
    collection: bool,
) -> Result<Spec, ApiError> {
    let mut spec = Spec::default();
    for (key, values) in group(query) {
        match key {
            "limit" => spec.limit = Some(parse_count("limit", values[0])?),
            "offset" => spec.offset = Some(parse_count("offset", values[0])?),
            "order" => {
                for v in values {
                    let (name, desc) = match v.strip_prefix('-') {
                        Some(n) => (n, true),
                        None => (v, false),
                    };
                    let field = res
                        .field(name)
                        .ok_or_else(|| bad(format!("no such field '{name}'")))?;
                    if matches!(field.ty, Json | StrList | Props { .. }) {
                        return Err(bad(format!("cannot order on field '{name}'")));
                    }
                    spec.order.push((field, desc));
                }
            }
            "field" => {
                let mut names = Vec::new();
                for v in values {
                    let field = res
                        .field(v)
                        .ok_or_else(|| bad(format!("no such field '{v}'")))?;
                    names.push(field.name);
                }
                spec.fields = Some(names);
            }
            "property" => spec
                .properties
                .get_or_insert_with(Vec::new)
                .extend(values.iter().map(|v| v.to_string())),
            _ => spec.filters.push(parse_filter(res, key, &values)?),
        }
    }
    if !collection && !spec.filters.is_empty() {
        return Err(bad("this is not a collection"));
    }
    Ok(spec)
}

fn parse_filter(res: &'static Resource, key: &str, values: &[&str]) -> Result<Filter, ApiError> {
    let (name, op) = if res.field(key).is_some() {
        (key, Op::Eq)
    } else if let Some((name, op)) = key.rsplit_once("__") {
        let op = Op::parse(op).ok_or_else(|| bad(format!("unknown operator '{op}' in '{key}'")))?;
        (name, op)
    } else {
        return Err(bad(format!("unrecognized query parameter '{key}'")));
    };
    let field = res
        .field(name)
        .ok_or_else(|| bad(format!("no such field '{name}'")))?;
    if !op.allowed_on(field.ty) {
        return Err(bad(format!(
            "operator '{op:?}' not supported on field '{name}'"
        )));
    }
    if op.single_valued() && values.len() != 1 {
        return Err(bad(format!("'{key}' takes a single value")));
    }
    let values = values
        .iter()
        .map(|v| {
            let parsed = match field.ty {
                Int => parse_id(v.trim_start_matches('-'))
                    .and_then(|_| v.parse::<i64>().ok())
                    .map(Param::Int),
                Bool => parse_bool(v).map(|b| Param::Int(b as i64)),
                _ => Some(Param::Text(v.to_string())),
            };
            parsed.ok_or_else(|| bad(format!("invalid filter value for {key}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Filter { field, op, values })
}

/// For endpoints that are not collections of rows (log text): only
/// `offset`/`limit` (as line numbers) where `paging`, nothing else.
fn parse_paging(
    query: &[(String, String)],
    paging: bool,
) -> Result<(Option<i64>, Option<i64>), ApiError> {
    let (mut offset, mut limit) = (None, None);
    for (key, values) in group(query) {
        match key {
            "offset" if paging => offset = Some(parse_count("offset", values[0])?),
            "limit" if paging => limit = Some(parse_count("limit", values[0])?),
            _ => return Err(bad(format!("unrecognized query parameter '{key}'"))),
        }
    }
    Ok((offset, limit))
}

// ---------------------------------------------------------------------------
// SQL and rendering

// ---------------------------------------------------------------------------
// Log text

/// Opens the log file; None when it does not exist yet (log not started).
fn open_log(
    master_dir: &Path,
    buildid: BuildId,
    logid: LogId,
) -> Result<Option<std::fs::File>, ApiError> {
    match std::fs::File::open(db::log_path(master_dir, buildid, logid)) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn raw_log(
    conn: &db::Conn,
    master_dir: &Path,
    logid: LogId,
    path: &str,
) -> Result<ApiResponse, ApiError> {
    let (buildid, _) = log_info(conn, logid)?.ok_or_else(|| not_found(path))?;
    let body = match open_log(master_dir, buildid, logid)? {
        Some(f) => ApiBody::Reader(Box::new(StripPrefix::new(BufReader::with_capacity(
            64 * 1024,
            f,
        )))),
        None => ApiBody::Bytes(Vec::new()),
    };
    // Always text/plain, even for Buildbot's 'h' (HTML) logs: serving log
    // text as HTML on our origin would let a build script inject scripts.
    Ok(ApiResponse {
        status: 200,
        content_type: TEXT_TYPE,
        body,
    })
}

/// Reads a stream log and drops the first byte of every line (the stream
/// char), streaming: memory is the inner reader's buffer, whatever the
/// size of the file or of a line.
pub(crate) struct StripPrefix<R> {
    inner: R,
    at_line_start: bool,
}

impl<R: BufRead> StripPrefix<R> {
    pub(crate) fn new(inner: R) -> Self {
        StripPrefix {
            inner,
            at_line_start: true,
        }
    }
}

impl<R: BufRead> Read for StripPrefix<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            let buf = self.inner.fill_buf()?;
            if buf.is_empty() {
                return Ok(0);
            }
            let (mut used, mut written) = (0, 0);
            while used < buf.len() && written < out.len() {
                if self.at_line_start {
                    self.at_line_start = false;
                    // An empty line has no stream char to drop.
                    if buf[used] != b'\n' {
                        used += 1;
                        continue;
                    }
                }
                let rest = &buf[used..];
                let room = (out.len() - written).min(rest.len());
                let take = match rest[..room].iter().position(|&b| b == b'\n') {
                    Some(p) => {
                        self.at_line_start = true;
                        p + 1
                    }
                    None => room,
                };
                out[written..written + take].copy_from_slice(&rest[..take]);
                written += take;
                used += take;
            }
            self.inner.consume(used);
            // Only prefix bytes in this buffer: read on rather than return 0,
            // which would mean end of file.
            if written > 0 {
                return Ok(written);
            }
        }
    }
}

/// Skips `n` lines without keeping them.
fn skip_lines(r: &mut impl BufRead, mut n: i64) -> io::Result<()> {
    while n > 0 {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        let mut used = buf.len();
        for (i, &b) in buf.iter().enumerate() {
            if b == b'\n' {
                n -= 1;
                if n == 0 {
                    used = i + 1;
                    break;
                }
            }
        }
        r.consume(used);
    }
    Ok(())
}

/// Reads up to `max_lines` whole lines (an unfinished last line, still
/// being written, is left for the next poll) within `max_bytes`. A first
/// line longer than `max_bytes` is cut to it, so the caller still moves on.
/// Returns the bytes and the number of lines.
fn read_lines(
    r: &mut impl BufRead,
    max_lines: i64,
    max_bytes: usize,
) -> io::Result<(Vec<u8>, i64)> {
    let mut out = Vec::new();
    let mut lines = 0;
    let mut line_start = 0;
    // Skipping the rest of a cut line.
    let mut skipping = false;
    while lines < max_lines {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            if !skipping {
                out.truncate(line_start);
            }
            break;
        }
        let nl = buf.iter().position(|&b| b == b'\n');
        let take = nl.map_or(buf.len(), |p| p + 1);
        if skipping {
            r.consume(take);
            if nl.is_some() {
                skipping = false;
                lines += 1;
                line_start = out.len();
            }
            continue;
        }
        if out.len() + take > max_bytes {
            if line_start > 0 {
                // Budget spent: stop before this line.
                out.truncate(line_start);
                break;
            }
            let room = max_bytes.saturating_sub(out.len());
            out.extend_from_slice(&buf[..room]);
            out.push(b'\n');
            r.consume(room);
            skipping = true;
            continue;
        }
        out.extend_from_slice(&buf[..take]);
        r.consume(take);
        if nl.is_some() {
            lines += 1;
            line_start = out.len();
        }
    }
    if skipping {
        // The cut line never ended: it is unfinished, leave it out.
        out.truncate(line_start);
    }
    Ok((out, lines))
}

fn log_contents(
    conn: &db::Conn,
    master_dir: &Path,
    logid: LogId,
    offset: Option<i64>,
    limit: Option<i64>,
    path: &str,
) -> Result<ApiResponse, ApiError> {
    let (buildid, num_lines) = log_info(conn, logid)?.ok_or_else(|| not_found(path))?;
    // Buildbot's logchunk semantics: offset is the first line (0-based),
    // limit the number of lines; without a limit, up to the last line.
    let firstline = offset.unwrap_or(0);
    let lastline = match limit {
        Some(l) => firstline.saturating_add(l) - 1,
        None => (num_lines - 1).max(0),
    };
    if firstline > lastline {
        return Err(not_found(path));
    }
    let want = lastline - firstline + 1;
    let (content, n) = match open_log(master_dir, buildid, logid)? {
        Some(f) => {
            let mut r = BufReader::with_capacity(64 * 1024, f);
            skip_lines(&mut r, firstline)?;
            read_lines(&mut r, want, MAX_CONTENTS_BYTES)?
        }
        None => (Vec::new(), 0),
    };
    let chunk = json!({
        "logid": logid,
        "firstline": firstline,
        // The last line included; firstline - 1 when none is.
        "lastline": firstline.saturating_add(n) - 1,
        "content": String::from_utf8_lossy(&content),
    });
    Ok(json_response(
        200,
        &json!({ "logchunks": [chunk], "meta": {} }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    struct Fixture {
        _dir: tempfile::TempDir,
        master: std::path::PathBuf,
        conn: db::Conn,
        cfg: Config,
    }

    impl Fixture {
        fn get(&self, path: &str, query: &[(&str, &str)]) -> (u16, Value) {
            let q: Vec<(String, String)> = query
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let r = get(&self.conn, &self.cfg, &self.master, path, &q);
            assert_eq!(r.content_type, JSON_TYPE, "{path}");
            let body = r.body.into_bytes().unwrap();
            let v: Value = serde_json::from_slice(&body)
                .unwrap_or_else(|e| panic!("{path}: {e}: {}", String::from_utf8_lossy(&body)));
            (r.status, v)
        }

        fn ok(&self, path: &str, query: &[(&str, &str)]) -> Value {
            let (status, v) = self.get(path, query);
            assert_eq!(status, 200, "{path} {query:?}: {v}");
            v
        }

        fn err(&self, path: &str, query: &[(&str, &str)], status: u16) -> String {
            let (s, v) = self.get(path, query);
            assert_eq!(s, status, "{path} {query:?}: {v}");
            v["error"].as_str().expect("error message").to_string()
        }

        fn ids(&self, path: &str, query: &[(&str, &str)], key: &str) -> Vec<i64> {
            let v = self.ok(path, query);
            let plural = path.rsplit('/').find(|s| parse_id(s).is_none()).unwrap();
            v[plural]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i[key].as_i64().unwrap())
                .collect()
        }

        fn raw(&self, path: &str) -> (u16, &'static str, Vec<u8>) {
            let r = get(&self.conn, &self.cfg, &self.master, path, &[]);
            (r.status, r.content_type, r.body.into_bytes().unwrap())
        }

        fn write_log(&self, buildid: BuildId, logid: LogId, text: &[u8]) {
            let p = db::log_path(&self.master, buildid, logid);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let master = dir.path().to_path_buf();
        let db = master.join("state.sqlite");
        db::create(&db).unwrap();
        let w = db::open_admin(&db).unwrap();
        w.sql()
            .execute_batch(
                r#"
            INSERT INTO builders VALUES (1, 'linux', 'Linux build', '["ci","linux"]', 1);
            INSERT INTO builders VALUES (2, 'old builder', NULL, '[]', 0);
            INSERT INTO builders VALUES (3, '42', NULL, '[]', 1);
            INSERT INTO workers VALUES (1, 'w1', '{"os":"linux","cpus":4}', 0, 1, 1, 1, 100);
            INSERT INTO workers VALUES (2, 'w2', '{}', 1, 0, 0, 1, NULL);
            INSERT INTO configured_workers VALUES (3, 1), (1, 1);
            INSERT INTO changes (changeid, author, comments, branch, revision, repository,
                project, when_timestamp, files, properties, revlink)
              VALUES (1, 'alice <a@x>', 'first', 'main', 'aaa', 'https://g/r.git', 'r', 1000,
                '["a.c","b.c"]', '{"event":["push","Change"]}', 'https://g/r/commit/aaa');
            INSERT INTO changes (changeid, author, comments, branch, revision, repository,
                project, when_timestamp)
              VALUES (2, 'bob', 'second', 'dev', 'bbb', 'https://g/r.git', 'r', 2000);
            INSERT INTO buildsets (buildsetid, reason, submitted_at, branch, revision,
                repository, project, properties)
              VALUES (1, 'push', 1000, 'main', 'aaa', 'https://g/r.git', 'r',
                '{"scheduler":["all","Scheduler"],"owner":["alice","Force"]}');
            INSERT INTO buildsets (buildsetid, reason, submitted_at, complete, complete_at, results)
              VALUES (2, 'forced', 1500, 1, 1600, 0);
            INSERT INTO buildset_changes VALUES (1, 1), (1, 2);
            INSERT INTO buildrequests (buildrequestid, buildsetid, builderid, priority,
                claimed_at, complete, results, submitted_at, complete_at, waited_for)
              VALUES (1, 1, 1, 0, 1001, 1, 0, 1000, 1100, 0),
                     (2, 1, 1, 5, 1002, 0, NULL, 1000, NULL, 1),
                     (3, 2, 2, 0, NULL, 0, NULL, 1500, NULL, 0),
                     (4, 2, 1, 0, NULL, 0, NULL, 1500, NULL, 0);
            INSERT INTO builds (buildid, number, builderid, buildrequestid, workerid,
                started_at, complete_at, state_string, results, properties)
              VALUES (1, 1, 1, 1, 1, 1010, 1100, 'build successful', 0,
                        '{"owner":["alice","Build"],"branch":["main","Build"]}'),
                     (2, 2, 1, 2, 1, 1200, 1300, 'failed compile', 2, '{}'),
                     (3, 3, 1, 2, 1, 1400, NULL, 'building', NULL, '{}'),
                     (4, 1, 2, 3, 2, 1500, 1600, 'exception', 4, '{}');
            INSERT INTO steps (stepid, buildid, number, name, started_at, complete_at,
                state_string, results, hidden, urls)
              VALUES (1, 1, 0, 'checkout', 1010, 1020, 'updated', 0, 0, '[]'),
                     (2, 1, 1, 'compile', 1020, 1100, 'compiled', 0, 1,
                        '[{"name":"report","url":"http://x/r"}]'),
                     (3, 3, 0, 'checkout', 1400, NULL, 'running', NULL, 0, '[]');
            INSERT INTO logs (logid, stepid, name, slug, complete, num_lines, type)
              VALUES (1, 1, 'stdio', 'stdio', 1, 3, 's'),
                     (2, 2, 'stdio', 'stdio', 0, 0, 's'),
                     (3, 2, 'Test Report', 'test_report', 1, 0, 's'),
                     (4, 3, 'stdio', 'stdio', 0, 0, 's');
            "#,
            )
            .unwrap();
        drop(w);
        let conn = db::open_read_only(&db).unwrap();
        // Builder `linux` on worker `w`, which never connected.
        let cfg = crate::config::test_config(
            "[[builders]]\nname = \"linux\"\nworkers = [\"w\"]\n\
             [[builders.steps]]\ntype = \"shell\"\ncommand = \"true\"\n",
        );
        let f = Fixture {
            _dir: dir,
            master,
            conn,
            cfg,
        };
        f.write_log(
            BuildId(1),
            LogId(1),
            b"hcmd: git checkout\nohello\neerr: <x>\n",
        );
        f
    }

    #[test]
    fn builders_shape_and_lookup() {
        let f = fixture();
        let v = f.ok("/builders", &[]);
        assert_eq!(v["meta"]["total"], 3);
        let b = &v["builders"][0];
        assert_eq!(b["builderid"], 1);
        assert_eq!(b["name"], "linux");
        assert_eq!(b["description"], "Linux build");
        assert_eq!(b["tags"], json!(["ci", "linux"]));
        assert_eq!(b["masterids"], json!([1]));
        assert_eq!(v["builders"][1]["masterids"], json!([]));
        assert_eq!(v["builders"][1]["description"], Value::Null);

        // By id, by name (percent-encoded), a numeric name falls back.
        let one = f.ok("/builders/1", &[]);
        assert_eq!(one["builders"].as_array().unwrap().len(), 1);
        assert_eq!(one["meta"], json!({}));
        assert_eq!(f.ok("/builders/linux", &[])["builders"][0]["builderid"], 1);
        assert_eq!(
            f.ok("/builders/old%20builder", &[])["builders"][0]["builderid"],
            2
        );
        assert_eq!(f.ok("/builders/3/", &[])["builders"][0]["name"], "42");
        assert_eq!(f.ok("/builders/42", &[])["builders"][0]["builderid"], 3);
        f.err("/builders/nope", &[], 404);
        f.err("/builders/99", &[], 404);
        // Filters on a single item are refused, as Buildbot.
        f.err("/builders/1", &[("name", "linux")], 400);

        assert_eq!(
            f.ids("/builders", &[("tags__contains", "ci")], "builderid"),
            [1]
        );
        assert_eq!(
            f.ids(
                "/builders",
                &[("name", "linux"), ("name", "42")],
                "builderid"
            ),
            [1, 3]
        );
        assert_eq!(
            f.ids("/builders", &[("order", "-name")], "builderid"),
            [2, 1, 3]
        );
    }

    #[test]
    fn builds_fields_properties_and_nesting() {
        let f = fixture();
        let v = f.ok("/builds", &[]);
        assert_eq!(v["meta"]["total"], 4);
        let b = &v["builds"][0];
        for k in [
            "buildid",
            "number",
            "builderid",
            "buildrequestid",
            "workerid",
            "masterid",
            "started_at",
            "complete_at",
            "complete",
            "state_string",
            "results",
            "properties",
        ] {
            assert!(b.get(k).is_some(), "missing {k}");
        }
        assert_eq!(b["complete"], true);
        assert_eq!(b["masterid"], 1);
        assert_eq!(b["properties"], json!({}));
        assert_eq!(v["builds"][2]["complete"], false);
        assert_eq!(v["builds"][2]["complete_at"], Value::Null);
        assert_eq!(v["builds"][2]["results"], Value::Null);

        let all = f.ok("/builds/1", &[("property", "*")]);
        assert_eq!(
            all["builds"][0]["properties"],
            json!({"owner":["alice","Build"],"branch":["main","Build"]})
        );
        let some = f.ok("/builds", &[("property", "owner"), ("property", "nope")]);
        assert_eq!(
            some["builds"][0]["properties"],
            json!({"owner":["alice","Build"]})
        );
        assert_eq!(some["builds"][1]["properties"], json!({}));

        assert_eq!(f.ids("/builders/1/builds", &[], "buildid"), [1, 2, 3]);
        assert_eq!(f.ids("/builders/linux/builds", &[], "buildid"), [1, 2, 3]);
        assert_eq!(f.ok("/builders/linux/builds", &[])["meta"]["total"], 3);
        assert_eq!(
            f.ok("/builders/linux/builds/2", &[])["builds"][0]["buildid"],
            2
        );
        assert_eq!(f.ok("/builders/2/builds/1", &[])["builds"][0]["buildid"], 4);
        assert_eq!(f.ids("/buildrequests/2/builds", &[], "buildid"), [2, 3]);
        assert_eq!(f.ids("/workers/2/builds", &[], "buildid"), [4]);
        // Missing parent: empty collection (Buildbot); missing item: 404.
        let empty = f.ok("/builders/nope/builds", &[]);
        assert_eq!(empty, json!({"builds": [], "meta": {"total": 0}}));
        f.err("/builders/linux/builds/9", &[], 404);
        f.err("/builds/99", &[], 404);
    }

    #[test]
    fn result_spec_on_builds() {
        let f = fixture();
        let ids = |q: &[(&str, &str)]| f.ids("/builds", q, "buildid");
        assert_eq!(ids(&[("order", "-buildid")]), [4, 3, 2, 1]);
        assert_eq!(
            ids(&[("order", "builderid"), ("order", "-number")]),
            [3, 2, 1, 4]
        );
        assert_eq!(ids(&[("limit", "2")]), [1, 2]);
        assert_eq!(ids(&[("limit", "2"), ("offset", "1")]), [2, 3]);
        assert_eq!(ids(&[("offset", "3")]), [4]);
        assert_eq!(ids(&[("limit", "0")]), Vec::<i64>::new());
        let v = f.ok(
            "/builds",
            &[("limit", "1"), ("offset", "1"), ("builderid", "1")],
        );
        assert_eq!(v["meta"]["total"], 3);
        assert_eq!(v["builds"][0]["buildid"], 2);
        let v = f.ok("/builds", &[("limit", "99999999")]);
        assert_eq!(v["meta"]["total"], 4);

        assert_eq!(ids(&[("complete", "true")]), [1, 2, 4]);
        assert_eq!(ids(&[("complete", "0")]), [3]);
        assert_eq!(ids(&[("complete__ne", "false")]), [1, 2, 4]);
        assert_eq!(ids(&[("results", "0"), ("results", "4")]), [1, 4]);
        assert_eq!(ids(&[("results__ne", "0")]), [2, 4]);
        assert_eq!(
            ids(&[("results__notin", "0"), ("results__notin", "2")]),
            [4]
        );
        assert_eq!(ids(&[("number__gt", "1")]), [2, 3]);
        assert_eq!(ids(&[("number__ge", "2"), ("number__lt", "3")]), [2]);
        assert_eq!(ids(&[("started_at__le", "1200")]), [1, 2]);
        assert_eq!(ids(&[("state_string__contains", "build")]), [1, 3]);
        assert_eq!(
            ids(&[("state_string__contains", "BUILD")]),
            Vec::<i64>::new()
        );
        assert_eq!(ids(&[("state_string__eq", "building")]), [3]);
        assert_eq!(ids(&[("builderid__in", "2")]), [4]);
        // User text never becomes SQL.
        assert_eq!(ids(&[("state_string", "x' OR 1=1 --")]), Vec::<i64>::new());
        assert_eq!(ids(&[("state_string__contains", "%")]), Vec::<i64>::new());

        // ?field= keeps only those keys.
        let v = f.ok("/builds", &[("field", "buildid"), ("field", "results")]);
        assert_eq!(v["builds"][0], json!({"buildid": 1, "results": 0}));
        // Fields left out are not computed, yet still filter and order.
        let q = [("complete", "true"), ("order", "-number")];
        let only = [q[0], q[1], ("field", "buildid")];
        assert_eq!(ids(&only), ids(&q));
        assert!(ids(&q).len() > 1, "{:?}", ids(&q));

        let e = f.err("/builds", &[("nosuch", "1")], 400);
        assert!(e.contains("nosuch"), "{e}");
        f.err("/builds", &[("nosuch__eq", "1")], 400);
        f.err("/builds", &[("number__like", "1")], 400);
        f.err("/builds", &[("number", "x")], 400);
        f.err("/builds", &[("number", "1.5")], 400);
        f.err("/builds", &[("complete", "maybe")], 400);
        f.err("/builds", &[("complete__gt", "1")], 400);
        f.err("/builds", &[("number__contains", "1")], 400);
        f.err("/builds", &[("properties", "x")], 400);
        f.err("/builds", &[("number__lt", "1"), ("number__lt", "2")], 400);
        f.err("/builds", &[("limit", "-1")], 400);
        f.err("/builds", &[("limit", "ten")], 400);
        f.err("/builds", &[("offset", "-5")], 400);
        f.err("/builds", &[("offset", "")], 400);
        f.err("/builds", &[("order", "nosuch")], 400);
        f.err("/builds", &[("order", "-properties")], 400);
        f.err("/builds", &[("field", "nosuch")], 400);
    }

    #[test]
    fn steps_and_logs() {
        let f = fixture();
        let v = f.ok("/builds/1/steps", &[]);
        assert_eq!(v["meta"]["total"], 2);
        let s = &v["steps"][1];
        assert_eq!(s["stepid"], 2);
        assert_eq!(s["name"], "compile");
        assert_eq!(s["number"], 1);
        assert_eq!(s["buildid"], 1);
        assert_eq!(s["hidden"], true);
        assert_eq!(s["complete"], true);
        assert_eq!(s["urls"], json!([{"name":"report","url":"http://x/r"}]));
        assert_eq!(v["steps"][0]["hidden"], false);
        assert_eq!(f.ok("/steps/3", &[])["steps"][0]["complete"], false);
        assert_eq!(
            f.ok("/builds/1/steps/compile", &[])["steps"][0]["stepid"],
            2
        );
        assert_eq!(f.ok("/builds/1/steps/0", &[])["steps"][0]["stepid"], 1);
        assert_eq!(
            f.ok("/builders/linux/builds/1/steps/1", &[])["steps"][0]["stepid"],
            2
        );
        assert_eq!(
            f.ids("/builds/1/steps", &[("hidden", "false")], "stepid"),
            [1]
        );
        f.err("/builds/1/steps/nope", &[], 404);

        let v = f.ok("/steps/2/logs", &[]);
        assert_eq!(v["meta"]["total"], 2);
        let l = &v["logs"][1];
        assert_eq!(
            l,
            &json!({"logid":3,"name":"Test Report","slug":"test_report","stepid":2,
                    "complete":true,"num_lines":0,"type":"s"})
        );
        assert_eq!(f.ok("/logs/1", &[])["logs"][0]["num_lines"], 3);
        assert_eq!(
            f.ok("/steps/2/logs/test_report", &[])["logs"][0]["logid"],
            3
        );
        assert_eq!(f.ids("/builds/1/steps/1/logs", &[], "logid"), [2, 3]);
        assert_eq!(
            f.ok("/builders/linux/builds/1/steps/checkout/logs/stdio", &[])["logs"][0]["logid"],
            1
        );
        assert_eq!(f.ok("/builds/99/steps", &[])["meta"]["total"], 0);
    }

    #[test]
    fn logs_in_the_older_per_build_layout_are_still_served() {
        let f = fixture();
        // Build 3's log 4, where minibot wrote logs before the flat layout.
        let dir = db::legacy_log_dir(&f.master, BuildId(3));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("4.log"), "hold\neolder\n").unwrap();
        assert_eq!(
            f.raw("/logs/4/raw"),
            (200, TEXT_TYPE, b"old\nolder\n".to_vec())
        );
        // The new layout is flat, and wins when both exist.
        assert_eq!(
            db::log_path(&f.master, BuildId(1), LogId(1)),
            f.master.join("logs").join("1-1.log")
        );
        std::fs::write(db::new_log_path(&f.master, BuildId(3), LogId(4)), "onew\n").unwrap();
        assert_eq!(f.raw("/logs/4/raw").2, b"new\n");
    }

    #[test]
    fn raw_logs_strip_prefixes() {
        let f = fixture();
        let (status, ct, body) = f.raw("/logs/1/raw");
        assert_eq!((status, ct), (200, TEXT_TYPE));
        assert_eq!(body, b"cmd: git checkout\nhello\nerr: <x>\n");
        // Nested path, and a log with no file yet: empty body.
        assert_eq!(f.raw("/builds/1/steps/0/logs/stdio/raw").2, body);
        assert_eq!(f.raw("/logs/2/raw"), (200, TEXT_TYPE, Vec::new()));
        assert_eq!(f.raw("/logs/99/raw").0, 404);
        assert_eq!(f.raw("/logs/1/raw?x=1").0, 200);

        // A multi-MB log with a line longer than any buffer on the way.
        let long = "x".repeat(200_000);
        let mut text = Vec::new();
        let mut want = Vec::new();
        for i in 0..60_000 {
            let stream = [b'o', b'e', b'h'][i % 3];
            let line = if i == 30_000 {
                long.clone()
            } else {
                format!("line {i} of the log")
            };
            text.push(stream);
            text.extend_from_slice(line.as_bytes());
            text.push(b'\n');
            want.extend_from_slice(line.as_bytes());
            want.push(b'\n');
        }
        assert!(text.len() > 1_000_000);
        f.write_log(BuildId(1), LogId(2), &text);
        let r = get(&f.conn, &f.cfg, &f.master, "/logs/2/raw", &[]);
        let ApiBody::Reader(mut rd) = r.body else {
            panic!("raw log must stream")
        };
        // Small reads, as a socket writer may do.
        let mut got = Vec::new();
        let mut buf = [0u8; 1000];
        loop {
            let n = rd.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got == want, "stripped log differs");
    }

    #[test]
    fn strip_prefix_with_tiny_buffers() {
        let text = b"oab\n\nhc\neunfinished";
        for cap in 1..6 {
            for out in 1..6 {
                let mut r = StripPrefix::new(BufReader::with_capacity(cap, &text[..]));
                let mut got = Vec::new();
                let mut buf = vec![0u8; out];
                loop {
                    let n = r.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                assert_eq!(got, b"ab\n\nc\nunfinished", "cap {cap} out {out}");
            }
        }
    }

    #[test]
    fn log_contents_by_lines() {
        let f = fixture();
        let v = f.ok("/logs/1/contents", &[]);
        assert_eq!(
            v,
            json!({"logchunks":[{"logid":1,"firstline":0,"lastline":2,
                "content":"hcmd: git checkout\nohello\neerr: <x>\n"}],"meta":{}})
        );
        let v = f.ok("/logs/1/contents", &[("offset", "1"), ("limit", "1")]);
        assert_eq!(v["logchunks"][0]["content"], "ohello\n");
        assert_eq!(v["logchunks"][0]["firstline"], 1);
        assert_eq!(v["logchunks"][0]["lastline"], 1);
        let v = f.ok("/logs/1/contents", &[("offset", "2"), ("limit", "100")]);
        assert_eq!(v["logchunks"][0]["content"], "eerr: <x>\n");
        assert_eq!(v["logchunks"][0]["lastline"], 2);
        let v = f.ok(
            "/steps/1/logs/stdio/contents",
            &[("offset", "5"), ("limit", "10")],
        );
        assert_eq!(v["logchunks"][0]["content"], "");
        // Past the end without a limit, or limit=0: Buildbot answers 404.
        f.err("/logs/1/contents", &[("offset", "5")], 404);
        f.err("/logs/1/contents", &[("limit", "0")], 404);
        f.err("/logs/1/contents", &[("limit", "-1")], 400);
        f.err("/logs/1/contents", &[("complete", "1")], 400);
        // Not started: empty content.
        let v = f.ok("/logs/4/contents", &[]);
        assert_eq!(v["logchunks"][0]["content"], "");

        // A big file: offset skips without loading, an unfinished last line
        // is left for the next poll.
        let mut text = String::new();
        for i in 0..200_000 {
            text.push_str(&format!("oline {i}\n"));
        }
        text.push_str("opartial");
        f.write_log(BuildId(1), LogId(2), text.as_bytes());
        let v = f.ok(
            "/logs/2/contents",
            &[("offset", "199998"), ("limit", "100")],
        );
        assert_eq!(v["logchunks"][0]["content"], "oline 199998\noline 199999\n");
        assert_eq!(v["logchunks"][0]["lastline"], 199_999);
    }

    #[test]
    fn read_lines_budget() {
        let text = b"aaaa\nbbbbbbbbbb\ncc\n";
        let (out, n) = read_lines(&mut BufReader::with_capacity(3, &text[..]), 10, 8).unwrap();
        assert_eq!((out.as_slice(), n), (&b"aaaa\n"[..], 1));
        // A first line over budget is cut, and counted, so a client moves on.
        let mut r = BufReader::with_capacity(3, &text[5..]);
        let (out, n) = read_lines(&mut r, 10, 4).unwrap();
        assert_eq!((out.as_slice(), n), (&b"bbbb\n"[..], 1));
        let (out, n) = read_lines(&mut r, 10, 100).unwrap();
        assert_eq!((out.as_slice(), n), (&b"cc\n"[..], 1));
        let mut big = Vec::new();
        writeln!(big, "o{}", "z".repeat(MAX_CONTENTS_BYTES * 2)).unwrap();
        let (out, n) = read_lines(&mut BufReader::new(&big[..]), 5, MAX_CONTENTS_BYTES).unwrap();
        assert_eq!((out.len(), n), (MAX_CONTENTS_BYTES + 1, 1));
    }

    #[test]
    fn workers() {
        let f = fixture();
        let v = f.ok("/workers", &[]);
        assert_eq!(v["meta"]["total"], 2);
        let w = &v["workers"][0];
        assert_eq!(w["workerid"], 1);
        assert_eq!(w["name"], "w1");
        assert_eq!(w["workerinfo"], json!({"os":"linux","cpus":4}));
        assert_eq!(w["paused"], false);
        assert_eq!(w["graceful"], true);
        assert_eq!(w["connected_to"], json!([{"masterid":1}]));
        assert_eq!(
            w["configured_on"],
            json!([{"masterid":1,"builderid":1},{"masterid":1,"builderid":3}])
        );
        let w2 = &f.ok("/workers/w2", &[])["workers"][0];
        assert_eq!(w2["paused"], true);
        assert_eq!(w2["connected_to"], json!([]));
        assert_eq!(w2["configured_on"], json!([]));
        assert_eq!(f.ids("/workers", &[("paused", "true")], "workerid"), [2]);
        f.err("/workers/w3", &[], 404);
        f.err("/workers", &[("workerinfo", "x")], 400);
    }

    #[test]
    fn changes() {
        let f = fixture();
        let v = f.ok("/changes", &[("order", "-changeid")]);
        assert_eq!(v["meta"]["total"], 2);
        let c = &v["changes"][1];
        assert_eq!(c["changeid"], 1);
        assert_eq!(c["author"], "alice <a@x>");
        assert_eq!(c["committer"], Value::Null);
        assert_eq!(c["files"], json!(["a.c", "b.c"]));
        assert_eq!(c["properties"], json!({"event":["push","Change"]}));
        assert_eq!(c["when_timestamp"], 1000);
        assert_eq!(c["revlink"], "https://g/r/commit/aaa");
        assert_eq!(
            c["sourcestamp"],
            json!({"ssid":1,"branch":"main","revision":"aaa","project":"r",
                   "repository":"https://g/r.git","codebase":"","created_at":1000,"patch":null})
        );
        assert_eq!(f.ok("/changes/2", &[])["changes"][0]["files"], json!([]));
        assert_eq!(
            f.ids("/changes", &[("files__contains", "b.c")], "changeid"),
            [1]
        );
        assert_eq!(f.ids("/changes", &[("branch", "dev")], "changeid"), [2]);
        assert_eq!(
            f.ids("/changes", &[("when_timestamp__gt", "1500")], "changeid"),
            [2]
        );
        f.err("/changes/3", &[], 404);
        f.err("/changes/abc", &[], 400);
    }

    #[test]
    fn buildrequests_and_buildsets() {
        let f = fixture();
        let v = f.ok("/buildrequests", &[]);
        assert_eq!(v["meta"]["total"], 4);
        let br = &v["buildrequests"][0];
        assert_eq!(
            br,
            &json!({"buildrequestid":1,"buildsetid":1,"builderid":1,"priority":0,
                "claimed":true,"claimed_at":1001,"claimed_by_masterid":1,"complete":true,
                "results":0,"submitted_at":1000,"complete_at":1100,"waited_for":false,
                "collapsed_into":null,"requested_by":null,"properties":null,
                "waiting_reason":null})
        );
        // Why the queued ones wait, as the queue page says it; null for
        // the others.
        let why = |v: &Value| -> Vec<Value> {
            v["buildrequests"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["waiting_reason"].clone())
                .collect()
        };
        assert_eq!(
            why(&v),
            [
                Value::Null,
                Value::Null,
                json!("its builder is no longer in the config"),
                json!("a free worker: w is not connected"),
            ]
        );
        // Asked for alone: only it, though its request's id and state are
        // read to work it out.
        let only = f.ok("/buildrequests/4", &[("field", "waiting_reason")]);
        assert_eq!(
            only["buildrequests"],
            json!([{"waiting_reason": "a free worker: w is not connected"}])
        );
        let none = f.ok("/buildrequests", &[("field", "buildrequestid")]);
        assert_eq!(none["buildrequests"][3], json!({"buildrequestid": 4}));
        for q in [
            ("waiting_reason", "x"),
            ("waiting_reason__contains", "x"),
            ("order", "waiting_reason"),
        ] {
            f.err("/buildrequests", &[q], 400);
        }
        assert_eq!(v["buildrequests"][2]["claimed"], false);
        assert_eq!(v["buildrequests"][2]["claimed_by_masterid"], Value::Null);
        assert_eq!(v["buildrequests"][1]["waited_for"], true);
        let p = f.ok("/buildrequests/1", &[("property", "owner")]);
        assert_eq!(
            p["buildrequests"][0]["properties"],
            json!({"owner":["alice","Force"]})
        );
        let p = f.ok("/buildrequests/3", &[("property", "*")]);
        assert_eq!(p["buildrequests"][0]["properties"], json!({}));
        assert_eq!(
            f.ids(
                "/buildrequests",
                &[("complete", "0"), ("claimed", "false")],
                "buildrequestid"
            ),
            [3, 4]
        );
        assert_eq!(
            f.ids("/builders/linux/buildrequests", &[], "buildrequestid"),
            [1, 2, 4]
        );
        assert_eq!(
            f.ids(
                "/buildrequests",
                &[("order", "-priority")],
                "buildrequestid"
            )[0],
            2
        );
        f.err("/builders/1/buildrequests/1", &[], 404);

        let v = f.ok("/buildsets", &[]);
        assert_eq!(v["meta"]["total"], 2);
        let bs = &v["buildsets"][0];
        assert_eq!(bs["bsid"], 1);
        assert_eq!(bs["reason"], "push");
        assert_eq!(bs["complete"], false);
        assert_eq!(bs["sourcestamps"][0]["ssid"], 2);
        assert_eq!(bs["sourcestamps"][0]["branch"], "main");
        assert_eq!(
            f.ok("/buildsets/2", &[])["buildsets"][0]["sourcestamps"][0]["ssid"],
            Value::Null
        );
        assert_eq!(f.ids("/buildsets", &[("complete", "true")], "bsid"), [2]);
    }

    #[test]
    fn bad_paths() {
        let f = fixture();
        for p in [
            "/",
            "",
            "/nope",
            "/builds/1/nope",
            "/builds/1/steps/0/logs/stdio/nope",
            "/logs/1/raw/x",
            "/builds/1/raw",
            "/builders/1/steps",
            "/a/b/c/d/e/f/g/h/i/j/k/l/m/n",
        ] {
            f.err(p, &[], 404);
        }
        f.err("/logs/../raw", &[], 400);
        f.err("/logs/..%2F..%2Fetc/raw", &[], 400);
        f.err("/builds/-1", &[], 400);
        f.err("/builds/1x", &[], 400);
        f.err("/builds/99999999999999999999999", &[], 400);
        f.err("/builders/%ff", &[], 400);
        f.err("/builders/%zz", &[], 400);
        f.err("/builders/%", &[], 400);
        f.err("/builders/../builds", &[], 400);
        f.err("/builders/./builds", &[], 400);
    }
}
