//! The botmaster: matches queued build requests to connected workers.
//!
//! Owns: the botmaster thread and the table of attached workers with their
//! running builds. Receives `BotMsg` from the scheduler (requests added),
//! the worker connections (attached, detached, build finished), the web
//! API (stop) and the main thread (reconfig, shutdown). Sends `ConnCmd`
//! to worker connections.
//!
//! The database is the queue: a request is "queued" while it is neither
//! claimed nor complete, so a restart or a lost worker only has to clear a
//! claim for the request to be picked up here again.
//!
//! Collapsing (Buildbot's `collapseRequests`, per builder, default on):
//! when a worker slot frees up and several queued requests of a builder are
//! for the same source (`collapse_key`), the newest is built and the older
//! ones end SKIPPED with `collapsed_into` naming that build, in the same
//! transaction that claims it.
//!
//! Locks (issue 20 point 4, docs/locks.md): a request is planned only on
//! a worker where its builder's locks are all free (with the locks this
//! round already plans to take), and the claim's transaction checks them
//! again and takes them with the claim, all or none; a request whose
//! locks are held stays queued without taking the worker. Lock holders
//! end, and so free locks, by the messages that dispatch anyway (a build
//! finished, a worker detached) or by a `RequestsAdded` from the worker
//! connection whose step gave its locks back.
//!
//! Writes that fail (issue 16, points 1 and 3): a claim the database
//! refused left nothing behind (the writer commits a batch whole or not at
//! all), so dispatching again later is all it takes; a build's end the
//! worker connection could not write (`BuildEnd`), the closing of a lost
//! worker's builds, its "disconnected" mark and the close of a stopped
//! build no connection runs are kept in `repairs` and written again every
//! [`RETRY_AFTER`] until they are in. So every build ends, with its real
//! result, once the disk has room again or the write lock comes back.
//!
//! A clean stop (`minibot stop --clean`) starts no new builds but the
//! requests a running build's trigger step waits for (`db::awaited_requests`),
//! or that build, and so the stop, would never end.
//!
//! Going idle: once builds have run and none is left running, the thread
//! waits for its next message with a timeout ([`IDLE_AFTER`]) instead of
//! blocking; if nothing comes, the master has gone quiet and it gives
//! memory back once (`Botmaster::release_memory`: SQLite page caches, then
//! glibc's free heap), then blocks again until the next build. Memory a
//! burst of builds took would otherwise stay resident for the master's
//! lifetime (docs/performance.md, "RSS").

use crate::config::Config;
use crate::daemon;
use crate::db::{self, LockHolder, LockWant, PendingRequest, Props, Store};
use crate::master::build::{BuildEnd, BuildJob};
use crate::master::{locks, status};
use crate::model::{BuildId, BuilderId, LogId, RequestId, StepId, WorkerId};
use anyhow::Result;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the botmaster tells a worker connection's thread (`worker_conn`):
/// defined here, with the sender, so the two modules do not import each
/// other.
pub enum ConnCmd {
    StartBuild(Box<BuildJob>),
    StopBuild {
        buildid: BuildId,
        reason: String,
    },
    /// Master shutdown: interrupt running steps and close.
    Shutdown,
}

pub enum BotMsg {
    /// New requests are queued, or a worker was unpaused: dispatch again.
    RequestsAdded,
    Attached {
        name: String,
        workerid: WorkerId,
        conn: Sender<ConnCmd>,
        /// Disconnected (never sent on) once the connection thread is gone.
        closed: Receiver<()>,
    },
    Detached {
        name: String,
        workerid: WorkerId,
    },
    BuildFinished {
        worker: String,
        buildid: BuildId,
        /// The build's end when the database refused it: the botmaster
        /// writes it again until it is in.
        unwritten: Option<Box<BuildEnd>>,
    },
    StopBuild {
        buildid: BuildId,
        reason: String,
    },
    Reconfig(Arc<Config>),
    /// `clean`: let running builds finish first (`minibot stop --clean`).
    Shutdown {
        clean: bool,
    },
}

/// Queued requests loaded per builder and dispatch: collapsing looks at
/// this many of a builder's oldest; later ones collapse on a later round.
const PER_BUILDER: i64 = 100;

/// Quiet time, with builds run and none running, after which the master
/// gives memory back. Longer than the gap between builds of a busy series
/// (a release costs ~1 ms of this thread), short enough that the memory
/// returns soon after the work.
pub(crate) const IDLE_AFTER: Duration = Duration::from_secs(1);

/// How often a failed dispatch and the writes kept in `repairs` are tried
/// again. A failing write on a full disk fails at once; one behind another
/// process's write lock waits the busy timeout first, so this is only the
/// pause between tries.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// A write that failed and is tried again until it is in.
enum Repair {
    /// A build's end as its connection computed it.
    End(Box<BuildEnd>),
    /// The builds a lost worker connection was running: RETRY.
    Lost {
        worker: String,
        builds: Vec<BuildId>,
    },
    /// A lost worker's "disconnected" mark (skipped if it is back).
    Disconnected { name: String },
    /// A stopped build that no connection runs: CANCELLED.
    Stop { buildid: BuildId, reason: String },
}

/// How the botmaster's debug line for a release begins. Programs count
/// releases in `status.json` (`status::idle_memory_released`), not here.
const RELEASED: &str = "idle: released ";

/// Names of workers with a live, authenticated connection. The listener
/// inserts a name during the handshake (refusing a second connection under
/// that name); the botmaster removes it once the connection's builds are
/// closed, so a reconnect never overlaps its predecessor's cleanup.
pub(crate) type Connected = Arc<Mutex<HashSet<String>>>;

struct Attached {
    workerid: WorkerId,
    conn: Sender<ConnCmd>,
    closed: Receiver<()>,
    /// buildid → builder name.
    running: HashMap<BuildId, String>,
}

pub(crate) fn spawn(
    store: Store,
    cfg: Arc<Config>,
    connected: Connected,
    rx: Receiver<BotMsg>,
) -> Result<std::thread::JoinHandle<()>> {
    Ok(std::thread::Builder::new()
        .name("botmaster".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            // Opened here, not by the caller: reading the schema takes
            // ~0.3 ms that start-up need not wait for. Its own, not a
            // pooled one: dispatch's statements stay prepared (a pooled
            // reader's statement cache, shared with the requests' and the
            // worker connections' reads, evicted them: +0.35 ms of CPU a
            // build).
            let reader = match store.own_reader() {
                Ok(r) => r,
                Err(e) => {
                    log::error!("botmaster: {e:#}");
                    return;
                }
            };
            let mut b = Botmaster {
                store,
                reader,
                cfg,
                connected,
                workers: BTreeMap::new(),
                draining: false,
                built: false,
                repairs: vec![],
                dispatch_failed: false,
            };
            b.run(rx)
        })?)
}

struct Botmaster {
    store: Store,
    reader: db::Conn,
    cfg: Arc<Config>,
    connected: Connected,
    workers: BTreeMap<String, Attached>,
    /// Set by a shutdown: no new builds start.
    draining: bool,
    /// A build started since memory was last given back.
    built: bool,
    /// Writes that failed, oldest first, tried again every [`RETRY_AFTER`].
    repairs: Vec<Repair>,
    /// The last dispatch failed (its claim was refused): try it again
    /// every [`RETRY_AFTER`], as no message may come to trigger it.
    dispatch_failed: bool,
}

impl Botmaster {
    fn run(&mut self, rx: Receiver<BotMsg>) {
        self.dispatch_logged();
        let mut shutdown: Option<bool> = None;
        let mut retry_at = Instant::now() + RETRY_AFTER;
        // A message found while coalescing nudges, handled next.
        let mut queued: Option<BotMsg> = None;
        loop {
            let idle_pending = self.built && self.workers.values().all(|w| w.running.is_empty());
            let retrying = !self.repairs.is_empty() || self.dispatch_failed;
            // Due even while messages keep coming (a busy master would
            // otherwise never time out into it).
            if retrying && Instant::now() >= retry_at {
                self.repair();
                if self.dispatch_failed {
                    self.dispatch_logged();
                }
                retry_at = Instant::now() + RETRY_AFTER;
                continue;
            }
            if !retrying {
                retry_at = Instant::now() + RETRY_AFTER;
            }
            let next = if let Some(m) = queued.take() {
                Ok(m)
            } else if retrying {
                rx.recv_deadline(retry_at)
            } else if idle_pending {
                rx.recv_timeout(IDLE_AFTER)
            } else {
                rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
            };
            let msg = match next {
                Ok(m) => m,
                // Due now: the top of the loop runs it.
                Err(RecvTimeoutError::Timeout) if retrying => continue,
                Err(RecvTimeoutError::Timeout) => {
                    self.release_memory();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            match msg {
                BotMsg::RequestsAdded => {
                    // One dispatch reads the whole queue: the nudges
                    // already behind this one go with it.
                    queued = super::coalesce(&rx, |m| matches!(m, BotMsg::RequestsAdded));
                    self.dispatch_logged();
                }
                BotMsg::Attached {
                    name,
                    workerid,
                    conn,
                    closed,
                } => {
                    log::info!("worker {name} attached");
                    self.workers.insert(
                        name,
                        Attached {
                            workerid,
                            conn,
                            closed,
                            running: HashMap::new(),
                        },
                    );
                    self.dispatch_logged();
                }
                BotMsg::Detached { name, workerid } => {
                    self.detached(&name, workerid);
                    self.dispatch_logged();
                }
                BotMsg::BuildFinished {
                    worker,
                    buildid,
                    unwritten,
                } => {
                    if let Some(w) = self.workers.get_mut(&worker) {
                        w.running.remove(&buildid);
                    }
                    if let Some(end) = unwritten {
                        self.repairs.push(Repair::End(end));
                    }
                    self.dispatch_logged();
                }
                BotMsg::StopBuild { buildid, reason } => self.stop(buildid, reason),
                BotMsg::Reconfig(cfg) => {
                    self.cfg = cfg;
                    self.dispatch_logged();
                }
                BotMsg::Shutdown { clean } => {
                    self.draining = true;
                    shutdown = Some(clean);
                }
            }
            if let Some(clean) = shutdown {
                let busy = self.workers.values().any(|w| !w.running.is_empty());
                if !clean || !busy {
                    break;
                }
            }
        }
        self.disconnect_all();
        log::debug!("botmaster thread exiting");
    }

    /// The master has gone quiet after builds: give back the memory they
    /// left behind. SQLite's page caches first (this thread's reader, the
    /// pooled readers, the writer), so that glibc has their pages free when
    /// it hands its free heap back to the kernel.
    fn release_memory(&mut self) {
        self.built = false;
        let t = Instant::now();
        let before = daemon::anon_rss_kb();
        let shrunk = db::shrink(&self.reader).and_then(|_| self.store.release_memory());
        daemon::release_free_heap();
        if let Err(e) = shrunk {
            log::warn!("idle: releasing SQLite's caches: {e:#}");
        }
        let after = daemon::anon_rss_kb();
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        status::idle_memory_released(status::IdleRelease {
            released_kb: before.zip(after).map(|(b, a)| b.saturating_sub(a)),
            anon_rss_before_kb: before,
            anon_rss_after_kb: after,
            ms,
        });
        match before.zip(after) {
            Some((b, a)) => log::debug!(
                "{RELEASED}{} kB of memory (anonymous RSS {b} → {a} kB) in {ms:.1} ms",
                b.saturating_sub(a)
            ),
            None => log::debug!("{RELEASED}memory in {ms:.1} ms"),
        }
    }

    /// Tells every connection to close (their running builds end as RETRY)
    /// and waits, bounded, until they have.
    fn disconnect_all(&mut self) {
        for w in self.workers.values() {
            let _ = w.conn.send(ConnCmd::Shutdown);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let names: Vec<(String, WorkerId)> = self
            .workers
            .iter()
            .map(|(n, w)| (n.clone(), w.workerid))
            .collect();
        for (name, workerid) in names {
            if let Some(w) = self.workers.get(&name) {
                // The connection thread drops its end of `closed` on exit.
                if let Err(RecvTimeoutError::Timeout) = w.closed.recv_deadline(deadline) {
                    log::warn!("worker {name}: connection did not close in time");
                }
            }
            self.detached(&name, workerid);
        }
    }

    fn detached(&mut self, name: &str, workerid: WorkerId) {
        let running: Vec<BuildId> = self
            .workers
            .remove(name)
            .map(|w| w.running.into_keys().collect())
            .unwrap_or_default();
        // Builds whose real end is waiting in `repairs` keep that end.
        let except = self.pending_ends();
        // One commit for both (each is a round trip to the store thread: a
        // stop with workers connected waits for them).
        let name2 = name.to_string();
        match self.store.write(move |c| {
            let ids = db::retry_worker_builds(c, Some(workerid), &except)?;
            db::set_worker_connected(c, &name2, None, false)?;
            Ok(ids)
        }) {
            Ok(ids) if !ids.is_empty() => {
                log::warn!("worker {name} lost: builds {ids:?} will be retried")
            }
            Ok(_) => {}
            Err(e) => {
                log::error!(
                    "closing builds of worker {name} and marking it disconnected (will retry): {e:#}"
                );
                self.repairs.push(Repair::Lost {
                    worker: name.to_string(),
                    builds: running,
                });
                self.repairs.push(Repair::Disconnected {
                    name: name.to_string(),
                });
            }
        }
        if let Ok(mut set) = self.connected.lock() {
            set.remove(name);
        }
        log::info!("worker {name} detached");
    }

    fn dispatch_logged(&mut self) {
        match self.dispatch() {
            Ok(()) => {
                if self.dispatch_failed {
                    log::info!("botmaster: dispatching works again");
                }
                self.dispatch_failed = false;
            }
            // Said once; the retries every RETRY_AFTER stay quiet.
            Err(e) if self.dispatch_failed => log::debug!("botmaster (retrying): {e:#}"),
            Err(e) => {
                log::error!("botmaster (will retry): {e:#}");
                self.dispatch_failed = true;
            }
        }
    }

    /// The builds whose end is kept in `repairs`.
    fn pending_ends(&self) -> Vec<BuildId> {
        self.repairs
            .iter()
            .filter_map(|r| match r {
                Repair::End(e) => Some(e.buildid),
                Repair::Lost { .. } | Repair::Disconnected { .. } | Repair::Stop { .. } => None,
            })
            .collect()
    }

    /// `stop` of a build: its connection interrupts it if one runs it.
    /// One that no connection runs is closed here, in the database, as
    /// CANCELLED: its connection is gone and its close not written yet,
    /// or the master lost track of it. One whose real end is waiting to
    /// be written keeps that end.
    fn stop(&mut self, buildid: BuildId, reason: String) {
        let owner = self
            .workers
            .values()
            .find(|w| w.running.contains_key(&buildid));
        if let Some(w) = owner {
            let _ = w.conn.send(ConnCmd::StopBuild { buildid, reason });
            return;
        }
        if self.pending_ends().contains(&buildid) {
            return;
        }
        // A lost worker's build waiting for its RETRY: the stop wins, so
        // its request is not queued again.
        for r in &mut self.repairs {
            if let Repair::Lost { builds, .. } = r {
                builds.retain(|b| *b != buildid);
            }
        }
        let repair = Repair::Stop { buildid, reason };
        match self.write_repair(&repair) {
            // Its locks are free now: a request may wait for them.
            Ok(()) => self.dispatch_logged(),
            Err(e) => {
                log::error!("stopping build {buildid}, which no worker runs (will retry): {e:#}");
                self.repairs.push(repair);
            }
        }
    }

    /// Writes one kept write.
    fn write_repair(&self, r: &Repair) -> Result<()> {
        match r {
            Repair::End(end) => {
                let results = end.write(&self.store)?;
                log::info!(
                    "build {} #{} (build {}) finished: {} (written late)",
                    end.builder,
                    end.number,
                    end.buildid,
                    results.name()
                );
            }
            Repair::Lost { worker, builds } => {
                let ids = builds.clone();
                let closed = self
                    .store
                    .write(move |c| db::retry_builds(c, &ids, "retry: lost worker or master"))?;
                if !closed.is_empty() {
                    log::warn!("worker {worker} lost: builds {closed:?} will be retried");
                }
            }
            Repair::Disconnected { name } => {
                // Back meanwhile: its connection has marked it connected.
                if !self.workers.contains_key(name) {
                    let name2 = name.clone();
                    self.store
                        .write(move |c| db::set_worker_connected(c, &name2, None, false))?;
                }
            }
            Repair::Stop { buildid, reason } => {
                let (id, state) = (
                    *buildid,
                    format!("cancelled: {reason} (no worker connection was running it)"),
                );
                if self
                    .store
                    .write(move |c| db::cancel_orphan_build(c, id, &state))?
                {
                    log::info!(
                        "build {buildid}: stopped; no worker was running it, closed as CANCELLED"
                    );
                }
            }
        }
        Ok(())
    }

    /// Tries the kept writes again, oldest first. At the first that fails
    /// the database still refuses writes: the rest wait for the next try
    /// (behind another process's lock each try would cost this thread the
    /// busy timeout).
    fn repair(&mut self) {
        let mut repairs = std::mem::take(&mut self.repairs).into_iter();
        let n = repairs.len();
        for r in repairs.by_ref() {
            if let Err(e) = self.write_repair(&r) {
                log::debug!("a kept write failed again: {e:#}");
                self.repairs.push(r);
                break;
            }
        }
        self.repairs.extend(repairs);
        if !self.repairs.is_empty() && self.repairs.len() == n {
            return;
        }
        if self.repairs.is_empty() {
            log::info!("every kept write is in the database now");
        }
        // Closed builds free slots and RETRY queues requests again.
        self.dispatch_logged();
    }

    /// Starts as many queued requests as there are free worker slots.
    fn dispatch(&mut self) -> Result<()> {
        if self.workers.is_empty() {
            return Ok(());
        }
        // A clean stop starts no new builds, but those a running build's
        // trigger step waits for (`master::chain`), or it would never end.
        let awaited = if self.draining {
            let awaited = db::awaited_requests(&self.reader)?;
            if awaited.is_empty() {
                return Ok(());
            }
            Some(awaited)
        } else {
            None
        };
        // Paused from the web UI or API: keeps its running builds, gets no
        // new ones. Read here, so a pause needs no message of its own (an
        // unpause sends RequestsAdded to get here again).
        let paused = db::paused_workers(&self.reader)?;
        // Builds per attached worker, updated as this round plans more.
        let mut load: BTreeMap<String, usize> = self
            .workers
            .iter()
            .map(|(n, w)| (n.clone(), w.running.len()))
            .collect();
        // Builds of one builder on one worker share a directory, so a
        // worker runs at most one build per builder at a time.
        let mut busy: HashSet<(String, String)> = self
            .workers
            .iter()
            .flat_map(|(n, w)| w.running.values().map(move |b| (n.clone(), b.clone())))
            .collect();
        let slot = |w: &String,
                    builder: &str,
                    load: &BTreeMap<String, usize>,
                    busy: &HashSet<(String, String)>| {
            free_slot(&self.cfg, &paused, load, busy, w, builder)
        };
        // The locks running builds hold, and those this round plans to
        // take: a request whose builder's locks are not all free on a
        // worker does not take that worker (the claim checks again).
        let mut holders: Vec<LockHolder> = if self.cfg.builders.iter().any(|b| !b.locks.is_empty())
        {
            db::lock_holders(&self.reader)?
        } else {
            vec![]
        };
        // Only builders with a free slot can start anything, and each can
        // start at most a few builds now: loading just their oldest requests
        // keeps a dispatch O(free slots), however deep the queue (a
        // 1,000-deep queue made every build pay for loading all of it).
        let waiting = db::builders_with_pending(&self.reader)?;
        let mut pending: Vec<PendingRequest> = vec![];
        for b in &self.cfg.builders {
            if waiting.contains(&b.name)
                && b.workers
                    .iter()
                    .any(|w| slot(w, &b.name, &load, &busy).is_some())
            {
                pending.extend(db::pending_requests(&self.reader, &b.name, PER_BUILDER)?);
            }
        }
        if let Some(awaited) = &awaited {
            pending.retain(|r| awaited.contains(&r.buildrequestid));
        }
        pending.sort_by_key(|r| (std::cmp::Reverse(r.priority), r.buildrequestid));
        // (request to build, worker, older requests it covers, locks)
        let mut plan: Vec<(PendingRequest, String, Vec<RequestId>, Vec<LockWant>)> = vec![];
        // Requests folded into another one of this round (collapsing).
        let mut consumed: HashSet<RequestId> = HashSet::new();
        for req in &pending {
            if consumed.contains(&req.buildrequestid) {
                continue;
            }
            let Some(builder) = self.cfg.builder(&req.builder) else {
                continue;
            };
            // The least busy of the builder's attached workers with a free
            // slot and the builder's locks free there.
            let pick = builder
                .workers
                .iter()
                .filter_map(|w| {
                    let n = slot(w, &req.builder, &load, &busy)?;
                    let wants = locks::wants(&self.cfg, &builder.locks, w);
                    locks::first_blocker(&holders, &wants, None)
                        .is_none()
                        .then_some((n, w, wants))
                })
                .min_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
            let Some((_, w, wants)) = pick else {
                continue;
            };
            holders.extend(wants.iter().map(|x| locks::planned_holder(x, &req.builder)));
            // Buildbot's collapseRequests: of the queued requests for the
            // same source, build the newest; the older ones are covered.
            let (chosen, older) = if builder.collapse_requests {
                let key = collapse_key(req);
                let mut group: Vec<&PendingRequest> = pending
                    .iter()
                    .filter(|r| {
                        r.builderid == req.builderid
                            && !consumed.contains(&r.buildrequestid)
                            && collapse_key(r) == key
                    })
                    .collect();
                group.sort_by_key(|r| r.buildrequestid);
                let newest = group.pop().unwrap_or(req);
                (newest, group.iter().map(|r| r.buildrequestid).collect())
            } else {
                (req, vec![])
            };
            consumed.insert(chosen.buildrequestid);
            consumed.extend(older.iter().copied());
            let w = w.clone();
            *load.entry(w.clone()).or_default() += 1;
            busy.insert((w.clone(), req.builder.clone()));
            plan.push((chosen.clone(), w, older, wants));
        }
        if plan.is_empty() {
            return Ok(());
        }
        let claims: Vec<Claim> = plan
            .iter()
            .map(|(r, w, older, wants)| {
                let steps = self.cfg.builder(&r.builder).map_or(&[][..], |b| &b.steps);
                Claim {
                    brid: r.buildrequestid,
                    builderid: r.builderid,
                    worker: w.clone(),
                    props: build_props(r),
                    older: older.clone(),
                    steps: steps.iter().map(|s| s.name.clone()).collect(),
                    // A first step with locks takes them as it starts.
                    start_first: steps.first().is_some_and(|s| s.locks.is_empty()),
                    locks: wants.clone(),
                }
            })
            .collect();
        let started = self.store.write(move |conn| {
            let mut out = vec![];
            for mut c in claims {
                // All of the builder's locks or none; a request whose
                // locks were taken since the plan stays queued.
                if locks::check(conn, &c.locks, None)?.is_some() {
                    out.push(None);
                    continue;
                }
                let got = db::claim_and_create_build(
                    conn,
                    c.brid,
                    c.builderid,
                    &c.worker,
                    &mut c.props,
                    &c.steps,
                )?;
                let Some((buildid, number)) = got else {
                    out.push(None);
                    continue;
                };
                db::take_locks(conn, buildid, &c.locks, None)?;
                let collapsed = match c.older.is_empty() {
                    false => db::collapse_requests(conn, &c.older, buildid)?,
                    true => vec![],
                };
                // The first step starts in the claim's transaction: one
                // store round trip and commit less per build.
                let first_step = match c.steps.first() {
                    Some(name) if c.start_first => Some(db::start_step(conn, buildid, 0, name)?),
                    _ => None,
                };
                out.push(Some(Started {
                    buildid,
                    number,
                    props: c.props,
                    collapsed,
                    first_step,
                }));
            }
            Ok(out)
        })?;
        for ((req, worker, _, _), got) in plan.into_iter().zip(started) {
            let Some(Started {
                buildid,
                number,
                props,
                collapsed,
                first_step,
            }) = got
            else {
                continue;
            };
            if !collapsed.is_empty() {
                log::info!(
                    "build requests {collapsed:?} collapsed into build {} #{number} (build {buildid}): marked SKIPPED",
                    req.builder
                );
            }
            let Some(builder) = self.cfg.builder(&req.builder).cloned() else {
                continue;
            };
            let Some(w) = self.workers.get_mut(&worker) else {
                continue;
            };
            let step_locks = builder
                .steps
                .iter()
                .map(|s| locks::wants(&self.cfg, &s.locks, &worker))
                .collect();
            let job = BuildJob {
                buildid,
                builderid: req.builderid,
                number,
                builder,
                ss: req.ss.clone(),
                props,
                max_log_size: self.cfg.max_log_size,
                first_step,
                secrets_dir: self.cfg.secrets_dir.as_deref().map(PathBuf::from),
                step_locks,
            };
            log::info!(
                "starting build {} #{number} (build {buildid}) on {worker}",
                req.builder
            );
            w.running.insert(buildid, req.builder.clone());
            self.built = true;
            if w.conn.send(ConnCmd::StartBuild(Box::new(job))).is_err() {
                // The connection ended between attach and now; its Detached
                // message is on the way and will retry this build.
                log::warn!("worker {worker} went away before build {buildid} started");
            }
        }
        Ok(())
    }
}

/// A request to claim, for the writer.
struct Claim {
    brid: RequestId,
    builderid: BuilderId,
    worker: String,
    props: Props,
    /// Older requests it covers (collapsing).
    older: Vec<RequestId>,
    /// The names of the builder's steps (all are recorded as the build's
    /// plan).
    steps: Vec<String>,
    /// The first step starts with the claim (it takes no locks).
    start_first: bool,
    /// The builder's locks, taken with the claim.
    locks: Vec<LockWant>,
}

/// A build the claim created.
struct Started {
    buildid: BuildId,
    number: i64,
    props: Props,
    collapsed: Vec<RequestId>,
    /// (stepid, logid) of its first step.
    first_step: Option<(StepId, LogId)>,
}

/// What makes two queued requests of one builder the same work (Buildbot's
/// `BuildRequest.canBeCollapsed`): the same source (branch, repository,
/// project, codebase), both from changes or both at the same revision, and
/// the same pull request, since a pull request's changes carry its base
/// branch and two PRs into `master` are not the same work.
fn collapse_key(r: &PendingRequest) -> impl PartialEq + '_ {
    let pr = r.properties.get("pr_number").map(|(v, _)| v.to_string());
    let revision = (!r.has_changes).then_some(&r.ss.revision);
    (
        &r.ss.branch,
        &r.ss.repository,
        &r.ss.project,
        &r.ss.codebase,
        r.has_changes,
        revision,
        pr,
    )
}

/// The load of `worker` if it can take a build of `builder` now: attached,
/// not paused, under its `max_builds`, and not already building `builder`.
fn free_slot(
    cfg: &Config,
    paused: &HashSet<String>,
    load: &BTreeMap<String, usize>,
    busy: &HashSet<(String, String)>,
    worker: &String,
    builder: &str,
) -> Option<usize> {
    let max = cfg.worker(worker)?.max_builds as usize;
    let n = *load.get(worker)?;
    let free = !paused.contains(worker)
        && n < max
        && !busy.contains(&(worker.clone(), builder.to_string()));
    free.then_some(n)
}

/// The properties a build starts with: the buildset's (change and scheduler
/// properties) plus what Buildbot sets for every build.
fn build_props(r: &PendingRequest) -> Props {
    let mut p = r.properties.clone();
    let mut set = |k: &str, v: serde_json::Value, src: &str| {
        p.insert(k.to_string(), (v, src.to_string()));
    };
    set("buildername", r.builder.clone().into(), "Builder");
    set(
        "branch",
        r.ss.branch
            .clone()
            .map(Into::into)
            .unwrap_or(serde_json::Value::Null),
        "Build",
    );
    set(
        "revision",
        r.ss.revision
            .clone()
            .map(Into::into)
            .unwrap_or(serde_json::Value::Null),
        "Build",
    );
    set("repository", r.ss.repository.clone().into(), "Build");
    set("project", r.ss.project.clone().into(), "Build");
    set("codebase", r.ss.codebase.clone().into(), "Build");
    set("reason", r.reason.clone().into(), "Build");
    p
}
