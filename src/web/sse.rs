//! Live build pages: a Server-Sent Events stream per open build page.
//!
//! Owns: the live-tail threads. `GET /builds/<id>/live?logs=<logid>:<offset>,...`
//! keeps its connection's thread, which `http_server` stops counting
//! against its connection cap (at most [`MAX_STREAMS`] streams at once, so
//! live pages cannot fill the server), and subscribes to the `events::Hub`, opens its own read-only SQLite
//! connection, and sends what changes until the build is complete:
//!
//! - `event: step` — a step started or changed: its head HTML, and the whole
//!   step (with empty log views) for a step the page does not have yet;
//! - `event: log` — text appended to a log file since the offset the page
//!   has (`start`), rendered (`html`), and the new offset (`end`);
//! - `event: build` — the build's head changed (state, result);
//! - `event: end` — the build is complete and every log sent; then the
//!   stream closes.
//!
//! Overview pages (home, builder, workers, queue, changes) have one
//! stream each, `GET /live?v=<version>` ([`Live::start_overview`]), from
//! the same pool of slots. It says `event: hello` with this master's start
//! id first (a page that sees another id after a reconnect reloads
//! whole: the master restarted), then `event: changed` whenever the data
//! those pages show differs from what the page has (`db::live_version`,
//! compared at each build start or end from the hub, when the hub says
//! it dropped events for this stream, and every second anyway, so
//! requests queued, workers connecting and changes arriving show too);
//! the page then fetches its fragment again. At most one `changed` per
//! [`COALESCE`]: a burst of builds is one refresh.
//!
//! Events from the hub are hints: on each one for this build (at most ten
//! times a second) and every 2 s anyway, the thread compares the database
//! and the log files with what it has sent, so a missed event costs at
//! most a short delay. A `: keepalive` comment goes out after 15 s of
//! silence so proxies and SSH tunnels keep an idle stream open; a write
//! that fails (the page was closed) ends the thread.

use crate::config::Config;
use crate::db::{self, Store};
use crate::master::events::{Event, Hub, Subscription};
use crate::model::{BuildId, BuildResult, LogId, StepId};
use crate::web::logview;
use crate::web::pages::{self, Ctx};
use anyhow::{Context, Result};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use serde_json::json;
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most live streams at once; more get 503.
pub(crate) const MAX_STREAMS: usize = 32;
/// Silence after which a keep-alive comment is sent.
pub(crate) const KEEPALIVE: Duration = Duration::from_secs(15);
/// How often a stream compares state even without events.
const RESYNC: Duration = Duration::from_secs(2);
/// Least time between two comparisons: a chatty build is sent in batches.
const MIN_GAP: Duration = Duration::from_millis(100);
/// How often an overview stream compares the version without events.
const OVERVIEW_CHECK: Duration = Duration::from_secs(1);
/// Least time between two `changed` of one overview stream.
pub(crate) const COALESCE: Duration = Duration::from_millis(300);
/// Most logs a page may say it has (bounds the query string's work).
const MAX_LOGS: usize = 1000;

/// Shared by the HTTP threads; cheap to clone.
#[derive(Clone)]
pub(crate) struct Live {
    hub: Hub,
    active: Arc<AtomicUsize>,
    /// This master process's start id (overview streams' `hello`).
    master: Arc<str>,
}

/// Who is watching which build, and from where in each log.
pub(crate) struct Watch {
    pub buildid: BuildId,
    /// logid → byte offset the page has up to (a line start).
    pub offsets: HashMap<LogId, u64>,
    pub user: Option<String>,
    /// The session's CSRF token if the user may write (`pages::Ctx::csrf`).
    pub csrf: Option<String>,
    /// The session's CSRF token whatever the user may do
    /// (`pages::Ctx::session`).
    pub session: Option<String>,
}

/// Parses `logs=12:3456,13:0`; junk entries are skipped.
pub(crate) fn parse_offsets(s: &str) -> HashMap<LogId, u64> {
    s.split(',')
        .filter_map(|kv| {
            let (k, v) = kv.split_once(':')?;
            Some((k.trim().parse().ok()?, v.trim().parse().ok()?))
        })
        .take(MAX_LOGS)
        .collect()
}

/// Decrements the stream count when a stream thread ends, however.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Live {
    pub(crate) fn new(hub: Hub) -> Live {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Live {
            hub,
            active: Arc::new(AtomicUsize::new(0)),
            master: format!(
                "{}-{}-{}",
                t.as_secs(),
                t.subsec_nanos(),
                std::process::id()
            )
            .into(),
        }
    }

    #[cfg(test)]
    pub(crate) fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// Takes a stream slot; None when all are in use.
    fn slot(&self) -> Option<Slot> {
        let n = self.active.fetch_add(1, Ordering::SeqCst);
        let slot = Slot(self.active.clone());
        (n < MAX_STREAMS).then_some(slot)
    }

    /// Prepares a stream of build `w.buildid`: takes a slot and subscribes
    /// to the hub now (so nothing falls between the page and the stream),
    /// and returns the function that writes the stream to a connection
    /// (run on that connection's thread, which `http_server` gave up).
    /// None when every slot is taken (the caller answers 503).
    pub(crate) fn start(
        &self,
        store: Store,
        cfg: Arc<Config>,
        master_dir: PathBuf,
        w: Watch,
    ) -> Option<StreamFn> {
        let slot = self.slot()?;
        let rx = self.hub.subscribe_all(256);
        Some(Box::new(move |out| {
            let _slot = slot;
            if let Err(e) = stream(out, &store, &cfg, &master_dir, rx, w, KEEPALIVE) {
                log::debug!("live stream ended: {e:#}");
            }
        }))
    }
}

impl Live {
    /// Prepares the stream of an overview page rendered at `version`
    /// (None: unknown, the first comparison sends `changed`): takes a
    /// slot and subscribes now. None when every slot is taken.
    pub(crate) fn start_overview(&self, store: Store, version: Option<u64>) -> Option<StreamFn> {
        let slot = self.slot()?;
        let sub = self.hub.subscribe(64);
        let master = self.master.clone();
        Some(Box::new(move |out| {
            let _slot = slot;
            let r = overview(out, &store, sub, version, &master, KEEPALIVE);
            if let Err(e) = r {
                log::debug!("live overview stream ended: {e:#}");
            }
        }))
    }
}

/// The head of every event stream this module writes, and the client's
/// reconnect delay.
const SSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n\
    Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\nX-Content-Type-Options: nosniff\r\n\
    Connection: close\r\n\r\nretry: 3000\n\n";

/// Writes one overview stream until the client leaves (module header).
fn overview(
    mut out: Box<dyn Write + Send>,
    store: &Store,
    sub: Subscription,
    mut sent: Option<u64>,
    master: &str,
    keepalive: Duration,
) -> Result<()> {
    let conn = store.own_reader()?;
    out.write_all(SSE_HEAD)?;
    send(&mut out, "hello", &json!({ "master": master }))?;
    out.flush()?;
    let mut last_write = Instant::now();
    let mut last_changed: Option<Instant> = None;
    loop {
        let mut v = db::live_version(&conn)?;
        if Some(v) != sent {
            if let Some(rest) = last_changed.and_then(|t| COALESCE.checked_sub(t.elapsed())) {
                // A burst: one refresh for all of it, with what is true
                // at its end.
                std::thread::sleep(rest);
                v = db::live_version(&conn)?;
            }
            send(&mut out, "changed", &json!({ "v": v }))?;
            out.flush()?;
            sent = Some(v);
            last_changed = Some(Instant::now());
            last_write = Instant::now();
        }
        let check = Instant::now() + OVERVIEW_CHECK;
        loop {
            let deadline = check.min(last_write + keepalive);
            crossbeam_channel::select! {
                recv(sub.events) -> ev => match ev {
                    Ok(_) => break,
                    Err(_) => return Ok(()),
                },
                // Events were dropped for this stream: compare now.
                recv(sub.missed) -> _ => break,
                default(deadline.saturating_duration_since(Instant::now())) => {
                    if last_write.elapsed() >= keepalive {
                        out.write_all(b": keepalive\n\n")?;
                        out.flush()?;
                        last_write = Instant::now();
                    }
                    if Instant::now() >= check {
                        break;
                    }
                }
            }
        }
        // The comparison that follows covers everything pending.
        while sub.events.try_recv().is_ok() {}
    }
}

/// Writes one live stream to a connection until the build ends or the
/// client leaves.
pub(crate) type StreamFn = Box<dyn FnOnce(Box<dyn Write + Send>) + Send>;

/// What a step's head shows: state, result, started, complete.
type StepKey = (String, Option<BuildResult>, Option<i64>, Option<i64>);

/// What one stream has sent.
struct Sent {
    build: Option<(String, Option<BuildResult>, Option<i64>)>,
    steps: HashMap<StepId, StepKey>,
    offsets: HashMap<LogId, u64>,
}

fn send(out: &mut dyn Write, event: &str, data: &serde_json::Value) -> std::io::Result<()> {
    // serde_json escapes newlines, so the data is one line.
    write!(out, "event: {event}\ndata: {data}\n\n")
}

fn stream(
    mut out: Box<dyn Write + Send>,
    store: &Store,
    cfg: &Config,
    master_dir: &std::path::Path,
    rx: Receiver<Event>,
    w: Watch,
    keepalive: Duration,
) -> Result<()> {
    let conn = store.own_reader()?;
    out.write_all(SSE_HEAD)?;
    out.flush()?;
    let mut sent = Sent {
        build: None,
        steps: HashMap::new(),
        offsets: w.offsets,
    };
    let mut last_write = Instant::now();
    loop {
        let started = Instant::now();
        let c = Ctx {
            conn: &conn,
            cfg,
            user: w.user.as_deref(),
            csrf: w.csrf.as_deref(),
            session: w.session.as_deref(),
            master_dir,
            now: crate::model::now(),
        };
        let (wrote, done) = sync(&mut out, &c, w.buildid, &mut sent)?;
        if done {
            send(&mut out, "end", &json!({}))?;
            out.flush()?;
            return Ok(());
        }
        if wrote {
            out.flush()?;
            last_write = Instant::now();
        }
        // Wait for news of this build, a resync, or a keep-alive.
        loop {
            let deadline = (started + RESYNC).min(last_write + keepalive);
            match rx.recv_deadline(deadline) {
                Ok(ev) if concerns(&ev, w.buildid) => break,
                Ok(_) => continue,
                Err(RecvTimeoutError::Timeout) => {
                    if last_write.elapsed() >= keepalive {
                        out.write_all(b": keepalive\n\n")?;
                        out.flush()?;
                        last_write = Instant::now();
                    }
                    if started.elapsed() >= RESYNC {
                        break;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
        }
        if let Some(rest) = MIN_GAP.checked_sub(started.elapsed()) {
            std::thread::sleep(rest);
        }
        // Everything pending is covered by the comparison that follows.
        while rx.try_recv().is_ok() {}
    }
}

fn concerns(ev: &Event, buildid: BuildId) -> bool {
    match ev {
        Event::BuildStarted { buildid: b, .. }
        | Event::StepStarted { buildid: b, .. }
        | Event::LogAppended { buildid: b, .. }
        | Event::StepFinished { buildid: b, .. }
        | Event::BuildFinished { buildid: b, .. } => *b == buildid,
    }
}

/// Sends what changed since the last call: new or changed steps, new log
/// text, the build's head. Returns (anything written, build complete and
/// every log sent to its end).
fn sync(out: &mut dyn Write, c: &Ctx, buildid: BuildId, sent: &mut Sent) -> Result<(bool, bool)> {
    let Some(b) = pages::build_by_id(c.conn, buildid)? else {
        return Ok((false, true));
    };
    let steps = pages::steps_of(c.conn, buildid)?;
    let mut wrote = false;
    for (i, s) in steps.iter().enumerate() {
        let key = (
            s.state_string.clone(),
            s.results,
            s.started_at,
            s.complete_at,
        );
        if sent.steps.get(&s.stepid) == Some(&key) {
            continue;
        }
        // Logs the page does not have start at their tail.
        let mut ranges = Vec::new();
        for (logid, _, _) in &s.logs {
            let start = match sent.offsets.get(logid) {
                Some(o) => *o,
                None => {
                    let path = db::log_path(c.master_dir, buildid, *logid);
                    logview::chunk_before(&path, u64::MAX)
                        .with_context(|| format!("reading {}", path.display()))?
                        .start
                }
            };
            sent.offsets.insert(*logid, start);
            ranges.push((
                *logid,
                logview::Range {
                    start,
                    end: start,
                    ..Default::default()
                },
            ));
        }
        let data = json!({
            "stepid": s.stepid,
            "head": pages::step_head(c, s).into_string(),
            "html": pages::step_html(c, s, pages::step_open(s, i + 1 == steps.len()), &ranges)
                .into_string(),
        });
        send(out, "step", &data)?;
        sent.steps.insert(s.stepid, key);
        wrote = true;
    }
    let mut logs_done = true;
    for s in &steps {
        for (logid, _, complete) in &s.logs {
            logs_done &= *complete;
            let path = db::log_path(c.master_dir, buildid, *logid);
            let Some(offset) = sent.offsets.get_mut(logid) else {
                continue;
            };
            loop {
                let r = logview::read_from(&path, *offset)
                    .with_context(|| format!("reading {}", path.display()))?;
                if r.text.is_empty() {
                    break;
                }
                let data = json!({
                    "logid": logid, "start": r.start, "end": r.end,
                    "html": logview::render(&r).into_string(),
                });
                send(out, "log", &data)?;
                *offset = r.end;
                wrote = true;
            }
        }
    }
    let key = (b.state_string.clone(), b.results, b.complete_at);
    if sent.build.as_ref() != Some(&key) {
        send(
            out,
            "build",
            &json!({ "html": pages::build_head(c, &b).into_string() }),
        )?;
        sent.build = Some(key);
        wrote = true;
    }
    Ok((wrote, b.complete_at.is_some() && logs_done))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::BuilderId;

    #[test]
    fn offsets_from_the_query() {
        let o = parse_offsets("12:3456, 13:0,junk,x:1,14:-2,15:");
        assert_eq!(o, HashMap::from([(LogId(12), 3456), (LogId(13), 0)]));
        assert!(parse_offsets("").is_empty());
    }

    /// A writer the test can read while the stream writes.
    #[derive(Clone, Default)]
    struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
        fn wait_for(&self, what: &str) -> String {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let t = self.text();
                if t.contains(what) {
                    return t;
                }
                assert!(Instant::now() < deadline, "no {what:?} in {t}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    #[test]
    fn streams_steps_logs_keepalives_and_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.sqlite");
        db::create(&db).unwrap();
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(
            "INSERT INTO builders (builderid, name) VALUES (1, 'b');
             INSERT INTO buildsets (buildsetid, reason, submitted_at) VALUES (1, 'r', 0);
             INSERT INTO buildrequests (buildrequestid, buildsetid, builderid, submitted_at)
               VALUES (1, 1, 1, 0);
             INSERT INTO builds (buildid, number, builderid, buildrequestid, started_at, state_string)
               VALUES (1, 1, 1, 1, 100, 'building');
             INSERT INTO steps (stepid, buildid, number, name, started_at, state_string)
               VALUES (1, 1, 0, 'test', 100, 'test running');
             INSERT INTO logs (logid, stepid, name, slug) VALUES (1, 1, 'stdio', 'stdio');",
        )
        .unwrap();
        let log = db::log_path(dir.path(), BuildId(1), LogId(1));
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        std::fs::write(&log, "ohello <b>\n").unwrap();
        let cfg = crate::config::parse(crate::config::SAMPLE, "sample").unwrap();
        let hub = Hub::new();
        let rx = hub.subscribe_all(16);
        let out = Shared::default();
        let store = db::Store::open(&db).unwrap();
        let (out2, master) = (out.clone(), dir.path().to_path_buf());
        let t = std::thread::spawn(move || {
            let w = Watch {
                buildid: BuildId(1),
                offsets: HashMap::new(),
                user: None,
                csrf: None,
                session: None,
            };
            let keepalive = Duration::from_millis(50);
            stream(Box::new(out2), &store, &cfg, &master, rx, w, keepalive)
        });
        let t0 = out.wait_for("hello &lt;b&gt;");
        assert!(t0.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream"));
        assert!(t0.contains("event: step\ndata: {") && t0.contains("data-logid=\\\"1\\\""));
        assert!(t0.contains("event: log\ndata: {\"end\":11,"), "{t0}");
        out.wait_for("event: build\n");
        out.wait_for("\n: keepalive\n\n");
        // Appended text, announced by an event, arrives from where it left.
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(b"oworld\n").unwrap();
        hub.publish(Event::LogAppended {
            buildid: BuildId(1),
            logid: LogId(1),
        });
        let t1 = out.wait_for("world");
        assert!(t1.contains("\"start\":11"), "{t1}");
        assert_eq!(t1.matches("hello").count(), 1, "{t1}");
        // The build ends: its head, then `end`, and the thread is done.
        conn.execute_batch(
            "UPDATE steps SET complete_at = 101, results = 0, state_string = 'test';
             UPDATE logs SET complete = 1;
             UPDATE builds SET complete_at = 101, results = 0, state_string = 'build successful';",
        )
        .unwrap();
        hub.publish(Event::BuildFinished {
            buildid: BuildId(1),
            builderid: BuilderId(1),
            builder: "b".into(),
            number: 1,
            results: BuildResult::Success,
        });
        let t2 = out.wait_for("event: end\n");
        assert!(t2.contains("build successful"));
        t.join().unwrap().unwrap();
    }

    #[test]
    fn overview_says_hello_then_changed_when_the_data_moves() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.sqlite");
        db::create(&db).unwrap();
        let conn = rusqlite::Connection::open(&db).unwrap();
        let store = db::Store::open(&db).unwrap();
        let v0 = db::live_version(&store.own_reader().unwrap()).unwrap();
        let hub = Hub::new();
        // Capacity 1: the second event below is dropped for this stream.
        let sub = hub.subscribe(1);
        let out = Shared::default();
        let out2 = out.clone();
        let t = std::thread::spawn(move || {
            let keepalive = Duration::from_millis(100);
            overview(Box::new(out2), &store, sub, Some(v0), "m-1", keepalive)
        });
        let t0 = out.wait_for("\n: keepalive\n\n");
        assert!(
            t0.contains("event: hello\ndata: {\"master\":\"m-1\"}\n\n"),
            "{t0}"
        );
        assert!(!t0.contains("changed"), "the page is current: {t0}");
        // A worker connects: no hub event says so; the stream sees it.
        conn.execute_batch("INSERT INTO workers (workerid, name, connected) VALUES (1, 'w', 1)")
            .unwrap();
        let t1 = out.wait_for("event: changed\n");
        let v1 = db::live_version(&db::Store::open(&db).unwrap().own_reader().unwrap()).unwrap();
        assert_ne!(v1, v0);
        assert!(t1.contains(&format!("data: {{\"v\":{v1}}}")), "{t1}");
        // A build starts; its events overflow the stream's buffer.
        conn.execute_batch(
            "INSERT INTO builders (builderid, name) VALUES (1, 'b');
             INSERT INTO buildsets (buildsetid, reason, submitted_at) VALUES (1, 'r', 0);
             INSERT INTO buildrequests (buildrequestid, buildsetid, builderid, submitted_at, claimed_at)
               VALUES (1, 1, 1, 0, 0);
             INSERT INTO builds (buildid, number, builderid, buildrequestid, started_at)
               VALUES (1, 1, 1, 1, 100);",
        )
        .unwrap();
        for _ in 0..3 {
            hub.publish(Event::BuildStarted {
                buildid: BuildId(1),
                builderid: BuilderId(1),
                builder: "b".into(),
                number: 1,
            });
        }
        let t2 = out.wait_for("event: changed\ndata: {\"v\":");
        let deadline = Instant::now() + Duration::from_secs(20);
        while out.text().matches("event: changed").count() < 2 {
            assert!(Instant::now() < deadline, "{t2}");
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(hub);
        t.join().unwrap().unwrap();
    }

    #[test]
    fn slots_are_bounded_and_returned() {
        let live = Live::new(Hub::new());
        let slots: Vec<_> = (0..MAX_STREAMS).map(|_| live.slot().unwrap()).collect();
        assert!(live.slot().is_none());
        assert_eq!(live.active(), MAX_STREAMS);
        drop(slots);
        assert_eq!(live.active(), 0);
        assert!(live.slot().is_some());
    }
}
