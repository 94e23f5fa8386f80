//! The master daemon: start-up, the signal loop, reconfig and shutdown.
//!
//! Owns: the main thread of `minibot start`. It loads the config, opens
//! the store (recovering from a master that died mid-build), binds both
//! listeners, starts the threads (store writer, scheduler, botmaster,
//! worker listener, HTTP pool, reporters, poller, janitor) and then waits for
//! signals from `daemon`: SIGHUP re-reads `master.cfg` (`SchedMsg`,
//! `BotMsg`, `ReporterMsg` and `PollerMsg::Reconfig`),
//! SIGTERM/SIGINT stop at once (running builds end as RETRY and are
//! re-queued), SIGUSR1 stops after the running builds finish.

use crate::botmaster::{self, BotMsg, Connected};
use crate::config::{self, Config};
use crate::daemon;
use crate::events::Hub;
use crate::janitor;
use crate::poller::{self, PollerMsg};
use crate::reporters::{self, ReporterMsg};
use crate::scheduler::{self, SchedMsg};
use crate::store::{self, Store};
use crate::worker_conn::{self, ConnCtx, SharedConfig};
use crate::www::{self, WwwCtx};
use anyhow::{anyhow, Context, Result};
use crossbeam_channel::unbounded;
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

pub const CONFIG_FILE: &str = "master.cfg";
pub const DB_FILE: &str = "state.sqlite";
pub const PID_FILE: &str = "minibot.pid";
pub const LOG_FILE: &str = "master.log";

/// HTTP threads: enough for a page, a hook and a live log at once, few
/// enough that an idle master stays small.
const HTTP_THREADS: usize = 4;

/// Loads the config, printing nothing: the caller reports errors.
pub fn load_config(dir: &Path) -> Result<Config> {
    config::load(&dir.join(CONFIG_FILE)).map_err(|e| anyhow!("{e}"))
}

/// `minibot start --nodaemon DIR` (also what the detached child runs).
pub fn run(dir: &Path, log_to_stderr: bool) -> Result<()> {
    let cfg = load_config(dir)?;
    daemon::limit_malloc_arenas();
    let _pid = daemon::acquire_pid_file(&dir.join(PID_FILE), "master")?;
    daemon::init_logging_with(
        &dir.join(LOG_FILE),
        log_to_stderr,
        &cfg.logging.log_options(),
    )?;
    let sigs = daemon::signals()?;
    let store = Store::open(&dir.join(DB_FILE))?;
    let cfg2 = cfg.clone();
    let retried = store.write(move |c| {
        store::sync_config(c, &cfg2)?;
        store::reset_connections(c)?;
        store::retry_running_builds(c, None)
    })?;
    if !retried.is_empty() {
        log::warn!(
            "builds {retried:?} were running when the last master stopped; closed as RETRY and re-queued"
        );
    }

    let worker_proto = cfg
        .protocols
        .worker
        .clone()
        .context("master.cfg: protocols.worker is missing")?;
    let worker_addr = format!("{}:{}", worker_proto.bind, worker_proto.port);
    let worker_listener = TcpListener::bind(&worker_addr)
        .with_context(|| format!("cannot listen for workers on {worker_addr}"))?;
    let (server, www_desc) = match &cfg.www.unix_socket {
        Some(sock) => {
            let path = dir.join(sock);
            let _ = std::fs::remove_file(&path);
            let s = tiny_http::Server::http_unix(&path)
                .map_err(|e| anyhow!("cannot listen on unix socket {}: {e}", path.display()))?;
            store::set_private(&path)?;
            (s, format!("unix:{}", path.display()))
        }
        None => {
            let addr = format!("{}:{}", cfg.www.bind, cfg.www.port);
            let l = TcpListener::bind(&addr)
                .with_context(|| format!("cannot listen for HTTP on {addr}"))?;
            daemon::set_nodelay(&l)?;
            let s = tiny_http::Server::from_listener(l, None)
                .map_err(|e| anyhow!("cannot serve HTTP on {addr}: {e}"))?;
            (s, format!("http://{addr}/"))
        }
    };
    let server = Arc::new(server);

    let events = Hub::new();
    let shared: SharedConfig = Arc::new(RwLock::new(Arc::new(cfg.clone())));
    let connected: Connected = Arc::new(Mutex::new(Default::default()));
    let (sched_tx, sched_rx) = unbounded();
    let (bot_tx, bot_rx) = unbounded();
    let cfg_arc = Arc::new(cfg);
    let bot = botmaster::spawn(store.clone(), cfg_arc.clone(), connected.clone(), bot_rx)?;
    let sched = scheduler::spawn(store.clone(), cfg_arc.clone(), sched_rx, bot_tx.clone())?;
    let (rep_tx, rep_rx) = unbounded();
    let reporters = reporters::spawn(
        store.path().to_path_buf(),
        cfg_arc.clone(),
        dir.to_path_buf(),
        events.subscribe(reporters::EVENT_CAPACITY),
        rep_rx,
    )?;
    let (poll_tx, poll_rx) = unbounded();
    poller::spawn(
        store.clone(),
        cfg_arc,
        dir.to_path_buf(),
        poll_rx,
        sched_tx.clone(),
    )?;
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
        },
    )?;
    let http = www::spawn(
        server.clone(),
        WwwCtx {
            store: store.clone(),
            cfg: shared.clone(),
            sched: sched_tx.clone(),
            bot: bot_tx.clone(),
            events: events.clone(),
            master_dir: dir.to_path_buf(),
        },
        HTTP_THREADS,
    )?;
    let _janitor = janitor::spawn(store.clone(), shared.clone(), dir.to_path_buf())?;
    let ready =
        format!("minibot master serving the web UI at {www_desc} and workers on {worker_addr}");
    log::info!("{ready}");
    daemon::announce_ready(&ready);

    let mut clean = false;
    for sig in sigs.iter() {
        match sig {
            signal_hook::consts::SIGHUP => reconfig(
                dir,
                &shared,
                &store,
                &Peers {
                    sched: &sched_tx,
                    bot: &bot_tx,
                    reporters: &rep_tx,
                    poller: &poll_tx,
                },
            ),
            signal_hook::consts::SIGUSR1 => {
                log::info!(
                    "stop --clean: waiting for running builds to finish, starting no new ones"
                );
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
    // The botmaster closes every worker connection before it returns.
    let _ = bot.join();
    // unblock() frees one waiting thread per call.
    for _ in &http {
        server.unblock();
    }
    for h in http {
        let _ = h.join();
    }
    let _ = sched_tx.send(SchedMsg::Shutdown);
    let _ = sched.join();
    // The poller is not waited for: a git command may hang up to its time
    // limit, and a poll cut short stores nothing (its changes and state are
    // one transaction), so the next start repeats it.
    let _ = poll_tx.send(PollerMsg::Shutdown);
    // Reporters get a bounded moment to deliver the last statuses.
    let _ = rep_tx.send(ReporterMsg::Shutdown);
    let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(1);
    std::thread::spawn(move || {
        let _ = reporters.join();
        let _ = done_tx.send(());
    });
    if done_rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .is_err()
    {
        log::warn!("reporters: undelivered statuses or mails dropped at shutdown");
    }
    log::info!("master stopped");
    Ok(())
}

/// The threads a reconfig tells about the new config.
struct Peers<'a> {
    sched: &'a crossbeam_channel::Sender<SchedMsg>,
    bot: &'a crossbeam_channel::Sender<BotMsg>,
    reporters: &'a crossbeam_channel::Sender<ReporterMsg>,
    poller: &'a crossbeam_channel::Sender<PollerMsg>,
}

/// SIGHUP: load the file again; keep the old config if it is bad. The log
/// lines starting with "reconfig:" are what `minibot reconfig` waits for.
fn reconfig(dir: &Path, shared: &SharedConfig, store: &Store, peers: &Peers) {
    let new = match load_config(dir) {
        Ok(c) => c,
        Err(e) => {
            log::error!("reconfig: rejected, keeping the old config:\n{e:#}");
            return;
        }
    };
    let old = worker_conn::current(shared);
    if old.www != new.www || old.protocols != new.protocols {
        log::warn!("reconfig: changes to [www] and [protocols] take effect at the next restart");
    }
    let c2 = new.clone();
    if let Err(e) = store.write(move |c| store::sync_config(c, &c2)) {
        log::error!("reconfig: rejected, keeping the old config: {e:#}");
        return;
    }
    let new = Arc::new(new);
    match shared.write() {
        Ok(mut g) => *g = new.clone(),
        Err(p) => *p.into_inner() = new.clone(),
    }
    let _ = peers.sched.send(SchedMsg::Reconfig(new.clone()));
    let _ = peers.bot.send(BotMsg::Reconfig(new.clone()));
    let _ = peers.reporters.send(ReporterMsg::Reconfig(new.clone()));
    let _ = peers.poller.send(PollerMsg::Reconfig(new.clone()));
    log::info!(
        "reconfig: done ({} builders, {} workers, {} schedulers)",
        new.builders.len(),
        new.workers.len(),
        new.schedulers.len()
    );
}
