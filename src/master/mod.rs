//! The master daemon: start-up, the signal loop, reconfig and shutdown.
//!
//! Owns: the main thread of `minibot start`. It loads the config, opens
//! the store (checking the file with `quick_check` and recovering from a
//! master that died mid-build, on a short-lived `recovery` thread while it
//! binds both listeners; a corrupt database is refused, unserved), starts
//! the threads (store writer, HTTP pool, botmaster, scheduler, chain, worker
//! listener, janitor, dbwatch; reporters and poller only while
//! `master.cfg` has reporters or change sources) and then reads signals itself (`daemon::signal_set`): SIGHUP
//! re-reads `master.cfg` (`SchedMsg`, `BotMsg`, `ChainMsg`, `ReporterMsg` and
//! `PollerMsg::Reconfig`, or starts/stops the reporters and poller threads),
//! SIGTERM/SIGINT stop at once (running builds end as RETRY and are
//! re-queued), SIGUSR1 stops after the running builds finish.

pub(crate) mod artifacts;
pub mod auth;
pub mod botmaster;
pub(crate) mod build;
pub(crate) mod chain;
pub(crate) mod events;
pub(crate) mod janitor;
pub(crate) mod locks;
pub(crate) mod logs;
pub(crate) mod masking;
pub(crate) mod poller;
pub(crate) mod pr_poller;
pub(crate) mod reporters;
pub mod scheduler;
pub mod status;
pub mod worker_conn;

use crate::config::{self, Config, LiveConfig};
use crate::daemon;
use crate::db::{self, Store};
use crate::web::http_server;
use crate::web::www::{self, WwwCtx};
use anyhow::{anyhow, Context, Result};
use botmaster::{BotMsg, Connected};
use crossbeam_channel::{bounded, unbounded, Sender};
use events::Hub;
use poller::PollerMsg;
use reporters::ReporterMsg;
use scheduler::SchedMsg;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use worker_conn::ConnCtx;

pub const CONFIG_FILE: &str = "master.cfg";
pub const DB_FILE: &str = "state.sqlite";
pub const PID_FILE: &str = "minibot.pid";
pub const LOG_FILE: &str = "master.log";
/// The outcome of the last reconfig (`ReconfigStatus`), which `minibot
/// reconfig` waits for: state, not a log line (the log level may hide it).
pub(crate) const RECONFIG_FILE: &str = "reconfig.json";

/// What `RECONFIG_FILE` holds: which master (pid) did its how-manieth
/// reconfig since it started, and how it ended.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReconfigStatus {
    pub pid: u32,
    pub generation: u64,
    pub outcome: ReconfigOutcome,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReconfigOutcome {
    /// The new config is in use.
    Done,
    /// The new config was refused; the old one stays.
    Rejected,
}

impl ReconfigStatus {
    /// Reads `dir`'s status file; None if there is none or it is not one.
    pub fn read(dir: &Path) -> Option<ReconfigStatus> {
        status::read_json(&dir.join(RECONFIG_FILE))
    }

    /// Writes it whole (a temp file renamed over the old one, so a reader
    /// never sees half of it), private.
    fn write(&self, dir: &Path) -> Result<()> {
        status::write_private(&dir.join(RECONFIG_FILE), &serde_json::to_vec(self)?)
    }
}
/// The addresses the running master listens on, written (0600) when it is
/// ready and removed when it stops: `{"pid": 1234, "www":
/// "127.0.0.1:43567", "worker": "127.0.0.1:43568"}` (`www` is
/// `unix:PATH` with `www.unix_socket`). With `port = 0` in `master.cfg`
/// this is where scripts and tests find the ports the kernel chose. A
/// master killed with SIGKILL leaves it behind: compare `pid`.
pub(crate) const ADDRESSES_FILE: &str = "addresses.json";
/// What the database's files looked like when the last master stopped
/// cleanly (`Store::close`); read and removed at start.
pub(crate) const CLEAN_STOP_FILE: &str = "clean-stop.json";

/// Connections the kernel queues for the HTTP reception thread: enough
/// that a neighbour's connection flood does not make the kernel drop a real
/// client's SYN (retried only after a second), few enough that the real
/// client does not wait long behind the queue (reception takes ~10,000
/// connections a second even in a debug build).
const HTTP_BACKLOG: i32 = 1024;

/// Loads the config, printing nothing: the caller reports errors.
pub fn load_config(dir: &Path) -> Result<Config> {
    config::load(&dir.join(CONFIG_FILE)).map_err(|e| anyhow!("{e}"))
}

/// `minibot start --nodaemon DIR` (also what the detached child runs).
pub fn run(dir: &Path, log_to_stderr: bool) -> Result<()> {
    let mut cfg = load_config(dir)?;
    daemon::limit_malloc_arenas();
    let _pid = daemon::acquire_pid_file(&dir.join(PID_FILE), "master")?;
    // A previous master's reconfig outcomes mean nothing to this one (and
    // a reused pid must not make an old generation look current).
    let _ = std::fs::remove_file(dir.join(RECONFIG_FILE));
    // A master killed with SIGKILL left its addresses behind.
    let addresses = dir.join(ADDRESSES_FILE);
    let _ = std::fs::remove_file(&addresses);
    // Counters start again with each master (the file replaces the last's).
    status::init(dir);
    daemon::init_logging_with(
        &dir.join(LOG_FILE),
        log_to_stderr,
        &cfg.logging.log_options(),
    )?;
    for w in config::secret_warnings(&cfg) {
        log::warn!("{}: {w}", dir.join(CONFIG_FILE).display());
    }
    // Read on this thread once everything runs: no thread of their own.
    let mut sigs = daemon::signal_set()?;
    let db_path = dir.join(DB_FILE);
    let clean_stop = dir.join(CLEAN_STOP_FILE);
    // Before the store opens the files. Unchanged since the last clean
    // stop, the database is sound and every log file under `logs/` is
    // one of its own: both checks at start are for a database that
    // crashed, was replaced, restored or written to by something else.
    let must_check = db::needs_check(&db_path, &clean_stop);
    let store = Store::open(&db_path).map_err(refuse_corrupt)?;
    // The first write: the config's mirror and recovery from a master that
    // died mid-build. It runs on the store thread while this thread binds
    // the listeners and starts the HTTP threads, which take requests only
    // after it has committed (the gate below): no answer shows builds
    // running on a dead master, and every other write queues behind it.
    // Before it, `quick_check` reads the whole file: a corrupt database is
    // refused before anything is served or written (issue 16 point 5).
    let recovery = {
        let store = store.clone();
        let cfg = cfg.clone();
        let dir2 = dir.to_path_buf();
        std::thread::Builder::new()
            .name("recovery".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                if must_check {
                    store.check_integrity()?;
                }
                status::start_check(must_check);
                let retried = store.write(move |c| {
                    db::sync_config(c, &cfg)?;
                    db::reset_connections(c)?;
                    let retried = db::retry_running_builds(c, None)?;
                    // Locks of builds a killed master left behind.
                    db::release_ended_builds_locks(c)?;
                    Ok(retried)
                })?;
                // Before any build can start (see `set_aside_foreign`).
                let aside = if must_check {
                    logs::set_aside_foreign(&*store.reader()?, &dir2)
                } else {
                    Ok(0)
                };
                Ok::<_, anyhow::Error>((retried, aside))
            })
            .context("spawning the recovery thread")?
    };

    // Meanwhile, on this thread: the pooled reader the first request will
    // borrow (opening one reads the whole schema, ~0.3 ms that would
    // otherwise come after the recovery, on the first answer's path).
    drop(store.reader().context("opening a reader of the database")?);
    let worker_proto = cfg.protocols.worker.clone();
    let worker_addr = format!("{}:{}", worker_proto.bind, worker_proto.port);
    let worker_listener = TcpListener::bind(&worker_addr)
        .with_context(|| format!("cannot listen for workers on {worker_addr}"))?;
    // The port the kernel chose when master.cfg says 0.
    let worker_addr = worker_listener
        .local_addr()
        .context("the worker listener's address")?;
    // (listener, what the ready line says, what addresses.json says, port)
    let (listener, www_desc, www_addr, www_port) = match &cfg.www.unix_socket {
        Some(sock) => {
            let path = dir.join(sock);
            let _ = std::fs::remove_file(&path);
            let l = std::os::unix::net::UnixListener::bind(&path)
                .with_context(|| format!("cannot listen on unix socket {}", path.display()))?;
            db::set_private(&path)?;
            crate::sys::widen_backlog(&l, HTTP_BACKLOG)
                .context("setting the HTTP listen backlog")?;
            let desc = format!("unix:{}", path.display());
            (http_server::Listener::Unix(l), desc.clone(), desc, None)
        }
        None => {
            let addr = format!("{}:{}", cfg.www.bind, cfg.www.port);
            let l = TcpListener::bind(&addr)
                .with_context(|| format!("cannot listen for HTTP on {addr}"))?;
            crate::sys::widen_backlog(&l, HTTP_BACKLOG)
                .context("setting the HTTP listen backlog")?;
            // The port the kernel chose when master.cfg says 0.
            let addr = l.local_addr().context("the HTTP listener's address")?;
            (
                http_server::Listener::Tcp(l),
                format!("http://{addr}/"),
                addr.to_string(),
                Some(addr.port()),
            )
        }
    };

    let bound = Bound {
        www: www_port,
        worker: worker_addr.port(),
    };
    // Everything after this (reporters' links to build pages) sees the
    // ports bound, not 0.
    bound.pin(&mut cfg);
    let events = Hub::new();
    let shared = LiveConfig::new(cfg.clone());
    let connected: Connected = Arc::new(Mutex::new(Default::default()));
    let (sched_tx, sched_rx) = unbounded();
    let (bot_tx, bot_rx) = unbounded();
    let (retried, aside) = recovery
        .join()
        .map_err(|_| anyhow!("the recovery thread panicked"))?
        .map_err(refuse_corrupt)?;
    match aside {
        Ok(0) => {}
        Ok(n) => log::warn!(
            "{n} log files under {} belong to no log of this database (left by an earlier one); moved to {}/set-aside-*",
            db::log_root(dir).display(),
            db::log_root(dir).display()
        ),
        Err(e) => log::warn!("setting aside old log files: {e:#}"),
    }
    // Only now: no answer may show builds running on a dead master.
    // Connections made meanwhile waited in the listen backlog.
    let http = www::start(
        listener,
        WwwCtx {
            store: store.clone(),
            cfg: shared.clone(),
            sched: sched_tx.clone(),
            bot: bot_tx.clone(),
            events: events.clone(),
            master_dir: dir.to_path_buf(),
        },
        cfg.www.max_connections,
    )?;
    if !retried.is_empty() {
        log::warn!(
            "builds {retried:?} were running when the last master stopped; closed as RETRY and re-queued"
        );
    }

    // Requests that reach the botmaster or scheduler before they run wait
    // in their channels.
    let cfg_arc = Arc::new(cfg);
    let bot = botmaster::spawn(store.clone(), cfg_arc.clone(), connected.clone(), bot_rx)?;
    let sched = scheduler::spawn(store.clone(), cfg_arc.clone(), sched_rx, bot_tx.clone())?;
    let (chain_tx, chain) = chain::spawn(store.clone(), shared.clone(), &events, bot_tx.clone())?;
    worker_conn::spawn_listener(
        worker_listener,
        ConnCtx {
            store: store.clone(),
            cfg: shared.clone(),
            connected,
            bot: bot_tx.clone(),
            master_dir: dir.to_path_buf(),
            events: events.clone(),
            failures: Default::default(),
            chain: chain_tx.clone(),
        },
    )?;
    let mut on_demand = OnDemand {
        store: store.clone(),
        dir: dir.to_path_buf(),
        events,
        sched: sched_tx.clone(),
        reporters: None,
        stopped_reporters: vec![],
        poller: None,
    };
    on_demand.apply(&cfg_arc)?;
    let mut janitor = janitor::spawn(store.clone(), shared.clone(), dir.to_path_buf())?;
    let dbwatch = spawn_dbwatch(store.clone())?;
    let ready =
        format!("minibot master serving the web UI at {www_desc} and workers on {worker_addr}");
    log::info!("{ready}");
    write_addresses(&addresses, &www_addr, &worker_addr.to_string())?;
    daemon::announce_ready(&ready);

    let mut clean = false;
    let mut reconfigs = 0;
    for sig in sigs.forever() {
        match sig {
            signal_hook::consts::SIGHUP => {
                reconfigs += 1;
                reconfig(
                    dir,
                    &shared,
                    &store,
                    &Peers {
                        sched: &sched_tx,
                        bot: &bot_tx,
                        chain: &chain_tx,
                        bound: &bound,
                    },
                    &mut on_demand,
                    reconfigs,
                )
            }
            signal_hook::consts::SIGUSR1 => {
                log::info!(
                    "stop --clean: waiting for running builds to finish, starting no new ones"
                );
                status::draining();
                clean = true;
                break;
            }
            _ => {
                log::info!("shutting down: running builds will be retried at the next start");
                break;
            }
        }
    }
    let _ = bot_tx.send(BotMsg::Shutdown { clean });
    if !clean {
        // Every thread told first, then waited for: each wait for a
        // thread to be scheduled costs a stop ~0.1 ms on a busy host.
        let _ = sched_tx.send(SchedMsg::Shutdown);
        let _ = chain_tx.send(chain::ChainMsg::Shutdown);
        janitor.signal_stop();
        http.signal_stop();
        drop(dbwatch);
    }
    // The botmaster closes every worker connection before it returns; a
    // clean stop serves the web UI and takes changes until then.
    let _ = bot.join();
    http.stop();
    let _ = sched_tx.send(SchedMsg::Shutdown);
    let _ = sched.join();
    let _ = chain_tx.send(chain::ChainMsg::Shutdown);
    let _ = chain.join();
    on_demand.shutdown();
    drop(janitor);
    // Nothing writes any more: closed, and what the files look like then
    // lets the next start skip reading every page (`Store::close`).
    if let Err(e) = store.close(&clean_stop) {
        log::warn!("{e:#}");
    }
    let _ = std::fs::remove_file(&addresses);
    log::info!("master stopped");
    Ok(())
}

/// A start-up error, told apart: a corrupt database is logged (so that
/// `minibot start`, which shows master.log's last lines, says it) and
/// recorded in `status.json` before the master exits unserved.
fn refuse_corrupt(e: anyhow::Error) -> anyhow::Error {
    if let Some(c) = e.downcast_ref::<db::CorruptDatabase>() {
        log::error!("{c}");
        status::database(status::DatabaseState::Corrupt, Some(c.to_string()));
        status::flush();
    }
    e
}

/// How often `dbwatch` looks at the database file.
const DB_WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// Starts the `dbwatch` thread: every [`DB_WATCH_INTERVAL`] it checks that
/// the database file is still the one the writer writes
/// (`Store::check_file`) and records a change in `status.json` and the
/// log. (Hooks check for themselves before they answer, and the web UI on
/// every request: this is for the operator, who may send nothing.) It
/// ends when the returned sender is dropped.
fn spawn_dbwatch(store: Store) -> Result<Sender<()>> {
    let (stop_tx, stop_rx) = bounded::<()>(0);
    std::thread::Builder::new()
        .name("dbwatch".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let mut last: Option<db::FileLost> = None;
            loop {
                let now = store.check_file().err();
                if now != last {
                    match &now {
                        Some(lost) => {
                            log::error!("{lost}");
                            let state = match lost.loss {
                                db::Loss::Deleted => status::DatabaseState::Deleted,
                                db::Loss::Replaced => status::DatabaseState::Replaced,
                            };
                            status::database(state, Some(lost.to_string()));
                        }
                        None => {
                            log::warn!("the database file is back in place: serving again");
                            status::database(status::DatabaseState::Ok, None);
                        }
                    }
                    last = now;
                }
                match stop_rx.recv_timeout(DB_WATCH_INTERVAL) {
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
            }
        })
        .context("spawning the dbwatch thread")?;
    Ok(stop_tx)
}

/// The threads a reconfig tells about the new config.
struct Peers<'a> {
    sched: &'a crossbeam_channel::Sender<SchedMsg>,
    bot: &'a crossbeam_channel::Sender<BotMsg>,
    chain: &'a crossbeam_channel::Sender<chain::ChainMsg>,
    bound: &'a Bound,
}

/// The ports the listeners were bound to (the kernel's choice for
/// `port = 0`); `www` is None on a unix socket.
struct Bound {
    www: Option<u16>,
    worker: u16,
}

impl Bound {
    /// Puts the bound ports in place of `port = 0`, in the config the
    /// threads see (at start and at each reconfig, which cannot move the
    /// listeners anyway).
    fn pin(&self, cfg: &mut Config) {
        if let Some(p) = self.www {
            if cfg.www.port == 0 {
                cfg.www.port = p;
            }
        }
        if cfg.protocols.worker.port == 0 {
            cfg.protocols.worker.port = self.worker;
        }
    }
}

/// Writes `ADDRESSES_FILE` (0600, whole or not at all: a temporary file
/// renamed into place).
fn write_addresses(path: &Path, www: &str, worker: &str) -> Result<()> {
    let text = serde_json::json!({
        "pid": std::process::id(),
        "www": www,
        "worker": worker,
    });
    status::write_private(path, format!("{text}\n").as_bytes())
}

/// The reporters and poller threads, which run only while `master.cfg` has
/// reporters or change sources (most masters have neither): a reconfig
/// starts, reconfigures or stops them.
struct OnDemand {
    store: Store,
    dir: PathBuf,
    events: Hub,
    sched: Sender<SchedMsg>,
    reporters: Option<(Sender<ReporterMsg>, JoinHandle<()>)>,
    /// Reporters threads a reconfig stopped, maybe still flushing outboxes.
    stopped_reporters: Vec<JoinHandle<()>>,
    poller: Option<Sender<PollerMsg>>,
}

impl OnDemand {
    /// Brings both threads in line with `cfg`.
    fn apply(&mut self, cfg: &Arc<Config>) -> Result<()> {
        let want = reporters::wanted(cfg);
        match self.reporters.take() {
            Some((tx, h)) if !want => {
                let _ = tx.send(ReporterMsg::Shutdown);
                // Joined at stop; those already done now, so that reconfigs
                // toggling reporters for months keep no dead threads' stacks.
                self.stopped_reporters.retain(|t| !t.is_finished());
                self.stopped_reporters.push(h);
                log::info!("reporters: none configured any more; thread stopped");
            }
            Some((tx, h)) => {
                let _ = tx.send(ReporterMsg::Reconfig(cfg.clone()));
                self.reporters = Some((tx, h));
            }
            None if want => {
                let (tx, rx) = unbounded();
                let h = reporters::spawn(
                    self.store.clone(),
                    cfg.clone(),
                    self.dir.clone(),
                    &self.events,
                    rx,
                )?;
                self.reporters = Some((tx, h));
            }
            None => {}
        }
        let want = poller::wanted(cfg);
        match self.poller.take() {
            // Not waited for: it ends after the poll it may be in.
            Some(tx) if !want => {
                let _ = tx.send(PollerMsg::Shutdown);
                log::info!("poller: no change sources any more; thread stopped");
            }
            Some(tx) => {
                let _ = tx.send(PollerMsg::Reconfig(cfg.clone()));
                self.poller = Some(tx);
            }
            None if want => {
                let (tx, rx) = unbounded();
                poller::spawn(
                    self.store.clone(),
                    cfg.clone(),
                    self.dir.clone(),
                    rx,
                    self.sched.clone(),
                )?;
                self.poller = Some(tx);
            }
            None => {}
        }
        Ok(())
    }

    fn shutdown(self) {
        // The poller is not waited for: a git command may hang up to its
        // time limit, and a poll cut short stores nothing (its changes and
        // state are one transaction), so the next start repeats it.
        if let Some(tx) = &self.poller {
            let _ = tx.send(PollerMsg::Shutdown);
        }
        let mut threads = self.stopped_reporters;
        if let Some((tx, h)) = self.reporters {
            let _ = tx.send(ReporterMsg::Shutdown);
            threads.push(h);
        }
        if threads.is_empty() {
            return;
        }
        // Reporters get a bounded moment to deliver the last statuses.
        let (done_tx, done_rx) = bounded::<()>(1);
        std::thread::spawn(move || {
            for h in threads {
                let _ = h.join();
            }
            let _ = done_tx.send(());
        });
        if done_rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .is_err()
        {
            log::warn!("reporters: undelivered statuses or mails dropped at shutdown");
        }
    }
}

/// SIGHUP: load the file again; keep the old config if it is bad. The log
/// lines starting with "reconfig:" are what `minibot reconfig` waits for.
/// Re-reads `master.cfg` (SIGHUP) and records the outcome in
/// `RECONFIG_FILE` for `minibot reconfig`.
fn reconfig(
    dir: &Path,
    shared: &LiveConfig,
    store: &Store,
    peers: &Peers,
    on_demand: &mut OnDemand,
    generation: u64,
) {
    let (outcome, message) = match apply_reconfig(dir, shared, store, peers, on_demand) {
        Ok(done) => (ReconfigOutcome::Done, done),
        Err(e) => {
            log::error!("reconfig: rejected, keeping the old config:\n{e:#}");
            (ReconfigOutcome::Rejected, format!("{e:#}"))
        }
    };
    let status = ReconfigStatus {
        pid: std::process::id(),
        generation,
        outcome,
        message,
    };
    if let Err(e) = status.write(dir) {
        log::error!("reconfig: {e:#}");
    }
}

/// The reconfig itself; Ok(the line saying what is now configured).
fn apply_reconfig(
    dir: &Path,
    shared: &LiveConfig,
    store: &Store,
    peers: &Peers,
    on_demand: &mut OnDemand,
) -> Result<String> {
    let mut new = load_config(dir)?;
    peers.bound.pin(&mut new);
    let old = shared.current();
    if old.www != new.www || old.protocols != new.protocols {
        log::warn!("reconfig: changes to [www] and [protocols] take effect at the next restart");
    }
    let c2 = new.clone();
    store.write(move |c| db::sync_config(c, &c2))?;
    let new = Arc::new(new);
    shared.replace(new.clone());
    let _ = peers.sched.send(SchedMsg::Reconfig(new.clone()));
    let _ = peers.bot.send(BotMsg::Reconfig(new.clone()));
    let _ = peers.chain.send(chain::ChainMsg::Reconfig);
    if let Err(e) = on_demand.apply(&new) {
        log::error!("reconfig: {e:#}");
    }
    let done = format!(
        "reconfig: done ({} builders, {} workers, {} schedulers)",
        new.builders.len(),
        new.workers.len(),
        new.schedulers.len()
    );
    log::info!("{done}");
    Ok(done)
}

/// Takes the messages queued on `rx` for which `nudge` is true (wake-ups
/// that one pass over the database answers together) and returns the
/// first other message, to be handled next; None when the queue is empty.
pub(crate) fn coalesce<M>(
    rx: &crossbeam_channel::Receiver<M>,
    nudge: impl Fn(&M) -> bool,
) -> Option<M> {
    while let Ok(m) = rx.try_recv() {
        if !nudge(&m) {
            return Some(m);
        }
    }
    None
}

#[cfg(test)]
mod coalesce_tests {
    #[test]
    fn nudges_are_taken_together_and_the_next_message_kept() {
        let (tx, rx) = crossbeam_channel::unbounded();
        for m in ["nudge", "nudge", "nudge", "reconfig", "nudge"] {
            tx.send(m).unwrap();
        }
        assert_eq!(super::coalesce(&rx, |m| *m == "nudge"), Some("reconfig"));
        assert_eq!(rx.len(), 1, "the nudge after it stays queued, in order");
        assert_eq!(super::coalesce(&rx, |m| *m == "nudge"), None);
        assert!(rx.is_empty());
    }
}
