//! `minibot-worker`: the worker's command line (argh).
//!
//! Owns: argument parsing, exit codes (0 ok, 1 user error, 2 usage, 3 started
//! but not connected to the master) and the mapping of commands onto
//! `worker` (create-worker, the daemon itself, its status file) and
//! `daemon` (pid file, detach, stop). No threads or channels of its own: the
//! worker daemon's are described in `src/worker/mod.rs`.

use anyhow::{bail, Context, Result};
use argh::FromArgs;
use minibot::worker::status::{self, State};
use minibot::{daemon, worker};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long `stop` waits: the worker first interrupts its running steps
/// (a few seconds each, in parallel) and says goodbye to the master.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a detached `start` waits for the ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a detached `start` then waits for the first handshake's
/// outcome: more than the worker's connect timeout (10 s, an address that
/// drops packets) and its wait for the first bytes (5 s, not a master).
const OUTCOME_TIMEOUT: Duration = Duration::from_secs(12);
/// Exit status of a `start` whose daemon runs (and keeps retrying) but did
/// not connect to the master.
const NOT_CONNECTED: i32 = 3;

#[derive(FromArgs)]
/// minibot-worker: connects to a minibot master and runs the build steps it
/// is given. Exit status: 0 ok; 1 error; 2 usage; 3 `start`/`restart`: the
/// worker runs (and keeps retrying) but did not connect to the master
/// (refused, not a minibot master at that address, nobody listening).
struct Args {
    #[argh(subcommand)]
    cmd: Cmd,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Cmd {
    CreateWorker(CreateWorker),
    Start(Start),
    Stop(Stop),
    Restart(Restart),
}

#[derive(FromArgs)]
/// Create a worker directory: DIR/worker.cfg (mode 0600) and DIR/info/.
#[argh(subcommand, name = "create-worker")]
struct CreateWorker {
    /// write into DIR even if it is not empty (existing info/ files are kept)
    #[argh(switch)]
    force: bool,
    /// seconds without traffic before the worker pings the master (default 600)
    #[argh(option, default = "600")]
    keepalive: u64,
    /// failed connection attempts in a row before giving up; 0 = never (default 0)
    #[argh(option, default = "0")]
    maxretries: u32,
    /// umask (octal, e.g. 022) for the build steps (default 077)
    #[argh(option)]
    umask: Option<String>,
    /// accept a PASSWORD shorter than 12 characters (easy to guess)
    #[argh(switch)]
    allow_weak_password: bool,
    /// the worker directory to create
    #[argh(positional)]
    dir: PathBuf,
    /// the master's worker port, as HOST:PORT
    #[argh(positional)]
    master: String,
    /// the worker's name, as in the master's [[workers]]
    #[argh(positional)]
    name: String,
    /// the worker's password, as in the master's [[workers]]
    #[argh(positional)]
    password: String,
}

#[derive(FromArgs)]
/// Start the worker (in the background unless --nodaemon).
#[argh(subcommand, name = "start")]
struct Start {
    /// stay in the foreground and log to stderr too (for supervisord)
    #[argh(switch)]
    nodaemon: bool,
    /// the worker directory
    #[argh(positional)]
    dir: PathBuf,
}

#[derive(FromArgs)]
/// Stop the running worker: its running steps are killed and reported.
#[argh(subcommand, name = "stop")]
struct Stop {
    /// the worker directory
    #[argh(positional)]
    dir: PathBuf,
}

#[derive(FromArgs)]
/// Stop the worker if it runs, then start it.
#[argh(subcommand, name = "restart")]
struct Restart {
    /// stay in the foreground and log to stderr too (for supervisord)
    #[argh(switch)]
    nodaemon: bool,
    /// the worker directory
    #[argh(positional)]
    dir: PathBuf,
}

fn pid_path(dir: &Path) -> PathBuf {
    dir.join(worker::PID_FILE)
}

/// Returns the exit status: 0, or [`NOT_CONNECTED`].
fn start(dir: &Path, nodaemon: bool) -> Result<i32> {
    // Inherited by the detached child and by build steps (unless
    // worker.cfg sets a `umask` for them).
    daemon::private_umask();
    let cfg = dir.join(worker::CONFIG_FILE);
    if !cfg.exists() {
        bail!(
            "{} not found: create the worker first with `minibot-worker create-worker`",
            cfg.display()
        );
    }
    if let Some(pid) = daemon::running_pid(&pid_path(dir)) {
        bail!(
            "a {} is already running in {} (pid {pid})",
            worker::WHAT,
            dir.display()
        );
    }
    if nodaemon {
        worker::run(dir, true)?;
        return Ok(0);
    }
    // Check the config here too, so a mistake is reported directly rather
    // than through the log.
    worker::load_config(dir)?;
    let abs = dir
        .canonicalize()
        .with_context(|| format!("worker directory {} not found", dir.display()))?;
    let line = daemon::detach(
        vec![
            OsString::from("start"),
            OsString::from("--nodaemon"),
            abs.clone().into_os_string(),
        ],
        READY_TIMEOUT,
        &abs.join(worker::LOG_FILE),
    )?;
    minibot::outln!("{line}");
    report_outcome(&abs)
}

/// Waits for the detached worker's first handshake (its status file) and
/// says how it ended; the exit status.
fn report_outcome(dir: &Path) -> Result<i32> {
    let deadline = Instant::now() + OUTCOME_TIMEOUT;
    let pid = daemon::running_pid(&pid_path(dir));
    let current =
        || status::read(dir).filter(|s| pid.is_some_and(|p| i64::from(s.pid) == i64::from(p)));
    let mut last = current();
    while Instant::now() < deadline && !last.as_ref().is_some_and(|s| s.state.is_outcome()) {
        std::thread::sleep(Duration::from_millis(50));
        last = current();
    }
    let log = dir.join(worker::LOG_FILE);
    let cfg = dir.join(worker::CONFIG_FILE);
    let Some(s) = last else {
        bail!(
            "the worker started but wrote no {}; see {}",
            status::STATUS_FILE,
            log.display()
        );
    };
    let err = s.last_error.clone().unwrap_or_default();
    let keeps = "it keeps trying; `minibot-worker stop` stops it";
    let problem = match s.state {
        State::Connected => {
            minibot::outln!("connected to the master at {} as {:?}", s.master, s.name);
            return Ok(0);
        }
        State::Stopped => bail!("the worker stopped: {err}; see {}", log.display()),
        State::Connecting => format!(
            "no answer from the master at {} within {} s; {keeps}, see {}",
            s.master,
            OUTCOME_TIMEOUT.as_secs(),
            log.display()
        ),
        State::Refused => format!(
            "{err}; check `name` and `password` in {} against the master's [[workers]] \
             entry; {keeps}",
            cfg.display()
        ),
        State::NotAMaster => format!("{err} (see {}); {keeps}", cfg.display()),
        State::Unreachable => format!(
            "nobody is listening at {} ({err}); is the master running, and is `master` in {} \
             its [protocols.worker] port? {keeps}",
            s.master,
            cfg.display()
        ),
    };
    minibot::errln!("minibot-worker: not connected: {problem}");
    Ok(NOT_CONNECTED)
}

fn stop(dir: &Path) -> Result<()> {
    daemon::stop(&pid_path(dir), worker::WHAT, STOP_TIMEOUT)?;
    minibot::outln!("{} in {} stopped", worker::WHAT, dir.display());
    Ok(())
}

/// The exit status, when not an error.
fn run(args: Args) -> Result<i32> {
    match args.cmd {
        Cmd::CreateWorker(c) => {
            daemon::private_umask();
            let opts = worker::CreateOptions {
                force: c.force,
                keepalive: c.keepalive,
                maxretries: c.maxretries,
                umask: c.umask,
                allow_weak_password: c.allow_weak_password,
            };
            let msg = worker::create_worker(&c.dir, &c.master, &c.name, &c.password, &opts)?;
            minibot::outln!("{msg}");
            Ok(0)
        }
        Cmd::Start(s) => start(&s.dir, s.nodaemon),
        Cmd::Stop(s) => stop(&s.dir).map(|()| 0),
        Cmd::Restart(r) => {
            if daemon::running_pid(&pid_path(&r.dir)).is_some() {
                // A worker.cfg start would refuse must not cost the running worker.
                worker::load_config(&r.dir)?;
                stop(&r.dir)?;
            }
            start(&r.dir, r.nodaemon)
        }
    }
}

fn main() {
    let args: Args = minibot::daemon::parse_args("minibot-worker");
    match run(args) {
        Ok(0) => {}
        Ok(code) => std::process::exit(code),
        Err(e) => {
            minibot::errln!("minibot-worker: {e:#}");
            std::process::exit(1);
        }
    }
}
