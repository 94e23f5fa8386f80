//! The worker daemon: `worker.cfg`, `create-worker`, and the connection to
//! the master (handshake, keepalive, reconnect with backoff, running steps).
//!
//! Threads and channels while connected (one session = one TCP connection):
//! - main thread: a `select!` loop over the reader's channel, the writer's
//!   exit channel, step threads' `finished` channel, the signal channel and
//!   a dead-peer timer; it owns the table of running steps;
//! - reader thread: decodes `ToWorker` frames from the socket into a
//!   bounded channel (`ReaderEvent`);
//! - writer thread: owns the write half, takes `FromWorker` messages from a
//!   bounded channel and writes whole frames, so frames from concurrently
//!   running steps never interleave (output already queued is joined and
//!   sent in one write, `coalesce`); it sends `Ping` itself when nothing was
//!   written for the keepalive interval;
//! - one thread per running step (`steps::run_step`, or `transfer::run`
//!   for an upload or download), sending `Log`, the transfer frames and
//!   `StepDone` into the writer's channel and its build id on `finished`;
//!   a transfer step gets the master's transfer frames (acks, file pieces)
//!   from the main loop on a bounded channel of its own.
//!
//! Why a dead-peer timer in the main loop rather than socket read timeouts:
//! the reader blocks in `read_exact`, and a read timeout firing in the
//! middle of a frame would leave the stream out of sync; the main loop owns
//! "last time anything arrived" and a `crossbeam_channel::after` deadline,
//! so frames, signals, finished steps and liveness are handled in one place.
//! A write timeout on the socket bounds how long a dead master can block the
//! writer.

pub mod status;
pub(crate) mod steps;
pub(crate) mod transfer;

use crate::daemon;
use crate::model::BuildId;
use crate::protocol::{self, FromWorker, ToWorker, LOG_CHUNK, PROTOCOL_VERSION};
use anyhow::{bail, Context, Result};
use crossbeam_channel::{after, bounded, select, unbounded, Receiver, Sender};
use serde::Deserialize;
use status::{State, StatusFile};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufReader, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use steps::CancelToken;

pub const CONFIG_FILE: &str = "worker.cfg";
pub const PID_FILE: &str = "minibot-worker.pid";
pub const LOG_FILE: &str = "worker.log";
/// What the pid file and messages call us.
pub const WHAT: &str = "minibot-worker";

/// Buildbot's worker default.
const DEFAULT_KEEPALIVE: u64 = 600;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// A minibot master says hello as soon as it accepts; a service that says
/// nothing for this long is not one (an HTTP server, such as the master's
/// web port, waits silently for a request). Short, so that a detached
/// `start` can report it.
const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(5);
/// A master that accepts no bytes for this long while we have some to send
/// is dead, whatever the keepalive says.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_BACKOFF: f64 = 60.0;
/// The backoff's cap while nobody listens at the master's address (before
/// the ±25 % jitter): a refused connection costs nothing, and a master
/// back from a restart should have its workers within a few seconds.
const UNREACHABLE_BACKOFF: f64 = 4.0;

const ADMIN_PLACEHOLDER: &str = "Your Name Here <admin@youraddress.invalid>\n";
const HOST_PLACEHOLDER: &str = "Please put a description of this build host here\n";

/// `DIR/worker.cfg`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// HOST:PORT of the master's worker port.
    pub master: String,
    pub name: String,
    pub password: String,
    /// Seconds of silence after which we send `Ping`.
    #[serde(default = "default_keepalive")]
    pub keepalive: u64,
    /// Failed connection attempts in a row before giving up; 0 = never.
    #[serde(default)]
    pub maxretries: u32,
    /// Octal, e.g. "022"; None = inherit.
    #[serde(default)]
    pub umask: Option<String>,
}

fn default_keepalive() -> u64 {
    DEFAULT_KEEPALIVE
}

/// Splits "HOST:PORT" (IPv6 as "[::1]:PORT").
pub(crate) fn parse_master(s: &str) -> Result<(String, u16)> {
    let Some((host, port)) = s.rsplit_once(':') else {
        bail!("expected HOST:PORT, got {s:?}");
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        bail!("expected HOST:PORT, got {s:?} (no host)");
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok((host.to_string(), p)),
        _ => bail!("expected HOST:PORT, got {s:?} (bad port {port:?})"),
    }
}

/// Parses an octal umask such as "022" or "0o027".
pub(crate) fn parse_umask(s: &str) -> Result<u32> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o777 && !digits.is_empty() => Ok(m),
        _ => bail!("expected an octal umask such as \"022\", got {s:?}"),
    }
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        bail!("worker name {name:?} must be non-empty, without spaces or control characters");
    }
    Ok(())
}

/// Loads and checks `DIR/worker.cfg`; errors name the file and the key.
pub fn load_config(dir: &Path) -> Result<WorkerConfig> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("could not read {}", path.display()))?;
    // A syntax error or a wrong key, with its line when toml knows it.
    let describe = |key: &str, inner: toml::de::Error| {
        let line = inner
            .span()
            .map(|s| {
                format!(
                    " (line {})",
                    text[..s.start.min(text.len())].lines().count().max(1)
                )
            })
            .unwrap_or_default();
        let at = if key == "." || key.is_empty() {
            String::new()
        } else {
            format!(" key `{key}`:")
        };
        anyhow::anyhow!("{}:{at} {}{line}", path.display(), inner.message())
    };
    let de = toml::Deserializer::parse(&text).map_err(|e| describe("", e))?;
    let cfg: WorkerConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        describe(&key, e.into_inner())
    })?;
    let bad = |key: &str, e: anyhow::Error| anyhow::anyhow!("{}: key `{key}`: {e}", path.display());
    parse_master(&cfg.master).map_err(|e| bad("master", e))?;
    check_name(&cfg.name).map_err(|e| bad("name", e))?;
    if cfg.password.is_empty() {
        return Err(bad("password", anyhow::anyhow!("must not be empty")));
    }
    if cfg.keepalive == 0 {
        return Err(bad(
            "keepalive",
            anyhow::anyhow!("must be at least 1 second"),
        ));
    }
    if let Some(u) = &cfg.umask {
        parse_umask(u).map_err(|e| bad("umask", e))?;
    }
    // Last, so a broken file's own errors come first.
    daemon::check_private_file(&path, "the worker's password")?;
    Ok(cfg)
}

/// Options of `create-worker`.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    pub force: bool,
    pub keepalive: u64,
    pub maxretries: u32,
    pub umask: Option<String>,
    /// Accept a password shorter than [`protocol::MIN_SECRET_LEN`].
    pub allow_weak_password: bool,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            force: false,
            keepalive: DEFAULT_KEEPALIVE,
            maxretries: 0,
            umask: None,
            allow_weak_password: false,
        }
    }
}

/// `s` as a TOML basic string. JSON's string escapes are TOML's, except
/// that TOML also wants DEL escaped; serde_json (already in the worker)
/// instead of the toml crate's serializer, which would double its size.
fn toml_str(s: &str) -> String {
    serde_json::Value::from(s)
        .to_string()
        .replace('\u{7f}', "\\u007f")
}

/// Writes `path` with `mode` through a temporary file and a rename, so a
/// reader never sees half a file and the secret is never readable by others
/// even for a moment.
fn write_private(path: &Path, contents: &str, mode: u32) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("could not create {}", tmp.display()))?;
    // The umask may have removed bits but never adds any; set exactly.
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .and_then(|_| f.write_all(contents.as_bytes()))
        .and_then(|_| f.sync_all())
        .with_context(|| format!("could not write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("could not create {}", path.display()))
}

/// `minibot-worker create-worker`: makes DIR with `worker.cfg` (0600) and
/// the `info/` files. Returns the lines telling the user what to do next.
pub fn create_worker(
    dir: &Path,
    master: &str,
    name: &str,
    password: &str,
    opts: &CreateOptions,
) -> Result<String> {
    parse_master(master).context("MASTERHOST:PORT")?;
    check_name(name).context("NAME")?;
    if password.is_empty() {
        bail!("PASSWORD must not be empty");
    }
    if opts.keepalive == 0 {
        bail!("--keepalive must be at least 1 second");
    }
    if let Some(u) = &opts.umask {
        parse_umask(u).context("--umask")?;
    }
    // The worker port is open to every local account: a short password
    // falls to guessing. Copy the one create-master generated instead.
    if password.chars().count() < protocol::MIN_SECRET_LEN && !opts.allow_weak_password {
        bail!(
            "PASSWORD is shorter than {} characters: use the one create-master wrote into \
             master.cfg.sample, or make one with `openssl rand -hex 16` (and put it in \
             master.cfg's [[workers]] entry too); --allow-weak-password accepts it anyway",
            protocol::MIN_SECRET_LEN
        );
    }
    daemon::create_dir_for(dir, opts.force)?;
    let umask_line = match &opts.umask {
        Some(u) => format!("umask = {}\n", toml_str(u)),
        None => "# umask = \"022\"\n".to_string(),
    };
    let cfg = format!(
        "# minibot worker configuration, written by `minibot-worker create-worker`.\n\
         # It holds the worker's password: keep it private (mode 0600).\n\
         \n\
         # The master's worker port ([protocols.worker] in master.cfg), as HOST:PORT.\n\
         master = {}\n\
         # Must match a [[workers]] entry (name and password) in master.cfg.\n\
         name = {}\n\
         password = {}\n\
         # Seconds without traffic after which the worker sends a ping.\n\
         keepalive = {}\n\
         # Give up after this many failed connection attempts in a row; 0 = never.\n\
         maxretries = {}\n\
         # umask (octal) for the build steps; unset = 077 (private to this account).\n\
         # The worker's own files (worker.log, build directories) stay private either way.\n\
         {umask_line}",
        toml_str(master),
        toml_str(name),
        toml_str(password),
        opts.keepalive,
        opts.maxretries,
    );
    let cfg_path = dir.join(CONFIG_FILE);
    write_private(&cfg_path, &cfg, 0o600)?;
    let info = dir.join("info");
    std::fs::create_dir_all(&info)
        .with_context(|| format!("could not create {}", info.display()))?;
    for (file, text) in [("admin", ADMIN_PLACEHOLDER), ("host", HOST_PLACEHOLDER)] {
        let p = info.join(file);
        // With --force, keep what the user already wrote there.
        if !p.exists() {
            std::fs::write(&p, text).with_context(|| format!("could not write {}", p.display()))?;
        }
    }
    let d = dir.display();
    Ok(format!(
        "Created worker {name:?} in {d}.\n\
         Next:\n  \
         - edit {d}/info/admin (who runs this worker) and {d}/info/host (what machine it is);\n    \
         both are shown on the master's workers page\n  \
         - make sure master.cfg has a [[workers]] entry with name = {name:?} and the same password\n  \
         - start it: minibot-worker start {d}   (or `start --nodaemon` under supervisord)"
    ))
}

fn read_info(base: &Path) -> BTreeMap<String, String> {
    let mut info = BTreeMap::new();
    for key in ["admin", "host"] {
        if let Ok(t) = std::fs::read_to_string(base.join("info").join(key)) {
            info.insert(key.to_string(), t.trim().to_string());
        }
    }
    info.insert("version".into(), env!("CARGO_PKG_VERSION").into());
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let os = [std::env::consts::OS, release.trim(), std::env::consts::ARCH]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    info.insert("os".into(), os);
    info
}

/// Runs the worker in the foreground until SIGTERM/SIGINT (or until it gives
/// up reconnecting). This is `start --nodaemon`, and what a detached
/// `start` runs in its child.
pub fn run(dir: &Path, log_to_stderr: bool) -> Result<()> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("worker directory {} not found", dir.display()))?;
    // Checkouts hold the project's source and build secrets; an install
    // from before issue 14 has a 0755 base directory. The top level is
    // enough to keep others out of everything below.
    daemon::tighten_dir(&dir)?;
    daemon::init_logging(&dir.join(LOG_FILE), log_to_stderr)?;
    let r = run_logged(&dir);
    if let Err(e) = &r {
        log::error!("{e:#}");
    }
    r
}

fn run_logged(dir: &Path) -> Result<()> {
    let cfg = load_config(dir)?;
    daemon::limit_malloc_arenas();
    if let Some(u) = &cfg.umask {
        let mode = parse_umask(u)?;
        // Build steps inherit it.
        crate::sys::set_umask(mode);
    }
    // Handlers before the pid file: from the moment we are findable, a
    // SIGTERM is handled as a clean shutdown.
    let sig_rx = daemon::signals()?;
    let _pid = daemon::acquire_pid_file(&dir.join(PID_FILE), WHAT)?;
    // The status file (`status.rs`) is written once we own the directory
    // and before the ready line, so a `start` waiting for the outcome finds
    // this run's file (it checks the pid too).
    // A daemon should not keep an arbitrary directory busy.
    std::env::set_current_dir(dir)
        .with_context(|| format!("could not change to {}", dir.display()))?;
    log::info!(
        "minibot-worker {} starting in {} as {:?}, master {} (pid {})",
        env!("CARGO_PKG_VERSION"),
        dir.display(),
        cfg.name,
        cfg.master,
        std::process::id()
    );
    let mut status = StatusFile::create(dir, &cfg.master, &cfg.name);
    daemon::announce_ready(&format!(
        "minibot-worker {:?} running in {} (pid {}), connecting to {}; log: {}",
        cfg.name,
        dir.display(),
        std::process::id(),
        cfg.master,
        dir.join(LOG_FILE).display()
    ));
    let r = connect_loop(dir, &cfg, &sig_rx, &mut status);
    let why = r.as_ref().err().map(|e| format!("{e:#}"));
    status.set(State::Stopped, why, 0);
    log::info!("minibot-worker stopped");
    r
}

/// Delay before reconnect attempt after `failures` failures in a row, the
/// last of them ending in `state`: 1 s doubling, with ±25 % jitter so
/// workers restarted together (e.g. after the master restarts) do not all
/// knock at the same moment. While nobody listens it stays at most about
/// 5 s (a master back from an outage gets its workers at once); an answer
/// that was wrong (refused, not a master) grows to 60 s, since it costs
/// the master a login check and a log line and needs a person anyway.
fn backoff_delay(failures: u32, state: State) -> Duration {
    let cap = match state {
        State::Unreachable | State::Connecting => UNREACHABLE_BACKOFF,
        State::Refused | State::NotAMaster | State::Connected | State::Stopped => MAX_BACKOFF,
    };
    let base = (1u64 << failures.saturating_sub(1).min(6)) as f64;
    let mut b = [0u8; 8];
    let unit = match getrandom::fill(&mut b) {
        Ok(()) => u64::from_le_bytes(b) as f64 / u64::MAX as f64,
        Err(_) => 0.5,
    };
    Duration::from_secs_f64((base.min(cap) * (0.75 + 0.5 * unit)).min(MAX_BACKOFF))
}

fn is_shutdown_signal(sig: i32) -> bool {
    sig == libc::SIGTERM || sig == libc::SIGINT
}

enum SessionEnd {
    Shutdown,
    /// The connection or the handshake failed; the state it leaves the
    /// worker in and why.
    Failed(State, String),
    /// An authenticated session ended (resets the backoff).
    Lost(String),
}

fn connect_loop(
    base: &Path,
    cfg: &WorkerConfig,
    sig_rx: &Receiver<i32>,
    status: &mut StatusFile,
) -> Result<()> {
    let mut failures: u32 = 0;
    loop {
        let state = match session(base, cfg, sig_rx, status) {
            SessionEnd::Shutdown => return Ok(()),
            SessionEnd::Lost(why) => {
                failures = 0;
                status.set(State::Connecting, Some(why), 0);
                State::Connecting
            }
            SessionEnd::Failed(state, why) => {
                failures += 1;
                status.set(state, Some(why), failures);
                if cfg.maxretries > 0 && failures > cfg.maxretries {
                    bail!(
                        "giving up after {failures} failed attempts to connect to the master at {} (maxretries = {})",
                        cfg.master,
                        cfg.maxretries
                    );
                }
                state
            }
        };
        let delay = backoff_delay(failures, state);
        log::info!("reconnecting in {:.1} s", delay.as_secs_f64());
        let deadline = Instant::now() + delay;
        loop {
            select! {
                recv(sig_rx) -> sig => match sig {
                    Ok(s) if is_shutdown_signal(s) => {
                        log::info!("signal {s}: shutting down");
                        return Ok(());
                    }
                    Ok(s) => log::info!("signal {s} ignored (edit worker.cfg and restart to change settings)"),
                    Err(_) => return Ok(()),
                },
                recv(after(deadline.saturating_duration_since(Instant::now()))) -> _ => break,
            }
        }
    }
}

#[derive(Debug)]
enum HandshakeError {
    /// The master said no (wrong password, name already connected, ...).
    Refused(String),
    /// The master could not prove it knows the password.
    BadProof,
    /// Protocol version mismatch or an unexpected message.
    Protocol(String),
    /// What answers at that address is not a minibot master's worker port.
    NotAMaster(String),
    /// No TCP connection.
    Connect(anyhow::Error),
    Io(anyhow::Error),
}

impl From<anyhow::Error> for HandshakeError {
    fn from(e: anyhow::Error) -> Self {
        HandshakeError::Io(e)
    }
}

fn connect(addr: &str) -> Result<TcpStream> {
    let (host, port) = parse_master(addr)?;
    let addrs: Vec<_> = (host.as_str(), port)
        .to_socket_addrs()
        .with_context(|| format!("could not resolve {host}"))?
        .collect();
    let mut last = None;
    for a in &addrs {
        match TcpStream::connect_timeout(a, CONNECT_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    match last {
        Some(e) => Err(e.into()),
        None => bail!("{host} resolved to no address"),
    }
}

/// Waits (briefly) for the master's first bytes and looks at them without
/// consuming them: a minibot master sends a frame at once, and a frame's
/// length prefix starts with a zero byte (frames are at most
/// [`protocol::MAX_FRAME`] long). Silence, or text such as `HTTP/1.1 400`,
/// means another kind of server.
fn check_first_bytes(stream: &TcpStream) -> Result<(), HandshakeError> {
    stream
        .set_read_timeout(Some(FIRST_BYTES_TIMEOUT))
        .context("setting socket timeouts")?;
    let mut head = [0u8; 64];
    let n = match stream.peek(&mut head) {
        Ok(0) => {
            return Err(HandshakeError::Io(anyhow::anyhow!(
                "the master closed the connection before saying hello"
            )))
        }
        Ok(n) => n,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            return Err(HandshakeError::NotAMaster(format!(
                "it said nothing within {} s of connecting, and a minibot master says hello at once \
                 (a web server, such as the master's web port, waits silently for a request)",
                FIRST_BYTES_TIMEOUT.as_secs()
            )))
        }
        Err(e) => return Err(HandshakeError::Io(anyhow::Error::new(e).context("reading"))),
    };
    stream
        .set_read_timeout(Some(HANDSHAKE_TIMEOUT))
        .context("setting socket timeouts")?;
    match not_a_frame(&head[..n]) {
        Some(what) => Err(HandshakeError::NotAMaster(what)),
        None => Ok(()),
    }
}

/// What the first bytes `head` a server sent say about it, if they cannot
/// be the start of a minibot frame.
fn not_a_frame(head: &[u8]) -> Option<String> {
    // MAX_FRAME < 2^24: the length prefix's first byte is always 0.
    const _: () = assert!(protocol::MAX_FRAME < 1 << 24);
    if head.first().is_none_or(|&b| b == 0) {
        return None;
    }
    let text = String::from_utf8_lossy(head);
    let first_line = text.lines().next().unwrap_or("").trim();
    let printable = !first_line.is_empty()
        && first_line
            .chars()
            .all(|c| !c.is_control() && c != '\u{fffd}');
    Some(if first_line.starts_with("HTTP/") {
        format!("it answered in HTTP ({first_line:?}): a web server, such as the master's web port")
    } else if printable {
        format!("it began with {first_line:?}, not a minibot frame")
    } else {
        "what it sent is not a minibot frame".to_string()
    })
}

/// Hello → Auth → Welcome/Refused. Returns the reader (which may already
/// hold buffered frames sent right after Welcome) and the master's keepalive.
fn handshake(
    stream: &TcpStream,
    base: &Path,
    cfg: &WorkerConfig,
) -> Result<(BufReader<TcpStream>, u64), HandshakeError> {
    stream
        .set_read_timeout(Some(HANDSHAKE_TIMEOUT))
        .and_then(|_| stream.set_write_timeout(Some(HANDSHAKE_TIMEOUT)))
        .context("setting socket timeouts")?;
    check_first_bytes(stream)?;
    let mut reader = BufReader::new(stream.try_clone().context("cloning the socket")?);
    let mut writer = stream;
    let master_nonce = match protocol::read_frame::<_, ToWorker>(&mut reader)? {
        Some(ToWorker::Hello { protocol, nonce }) => {
            if protocol != PROTOCOL_VERSION {
                return Err(HandshakeError::Protocol(format!(
                    "the master speaks protocol version {protocol} and this worker speaks version {PROTOCOL_VERSION}; upgrade the older side"
                )));
            }
            nonce
        }
        Some(ToWorker::Refused { reason }) => return Err(HandshakeError::Refused(reason)),
        Some(other) => {
            return Err(HandshakeError::Protocol(format!(
                "expected Hello from the master, got {other:?}"
            )))
        }
        None => {
            return Err(HandshakeError::Io(anyhow::anyhow!(
                "the master closed the connection before saying hello"
            )))
        }
    };
    let worker_nonce = protocol::new_nonce();
    let auth = FromWorker::Auth {
        protocol: PROTOCOL_VERSION,
        name: cfg.name.clone(),
        nonce: worker_nonce.clone(),
        proof: protocol::worker_proof(&cfg.password, &master_nonce, &worker_nonce, &cfg.name),
        info: read_info(base),
    };
    protocol::write_frame(&mut writer, &auth)?;
    match protocol::read_frame::<_, ToWorker>(&mut reader)? {
        Some(ToWorker::Welcome { proof, keepalive }) => {
            if !protocol::check_master_proof(
                &cfg.password,
                &master_nonce,
                &worker_nonce,
                &cfg.name,
                &proof,
            ) {
                return Err(HandshakeError::BadProof);
            }
            stream
                .set_read_timeout(None)
                .and_then(|_| stream.set_write_timeout(Some(WRITE_TIMEOUT)))
                .context("setting socket timeouts")?;
            Ok((reader, keepalive))
        }
        Some(ToWorker::Refused { reason }) => Err(HandshakeError::Refused(reason)),
        Some(other) => Err(HandshakeError::Protocol(format!(
            "expected Welcome or Refused from the master, got {other:?}"
        ))),
        None => Err(HandshakeError::Io(anyhow::anyhow!(
            "the master closed the connection during the handshake"
        ))),
    }
}

/// Connects and authenticates; the stream and its reader on success.
fn connect_and_handshake(
    base: &Path,
    cfg: &WorkerConfig,
) -> Result<(TcpStream, BufReader<TcpStream>, u64), HandshakeError> {
    let stream = connect(&cfg.master).map_err(HandshakeError::Connect)?;
    let _ = stream.set_nodelay(true);
    match handshake(&stream, base, cfg) {
        Ok((reader, keepalive)) => Ok((stream, reader, keepalive)),
        Err(e) => {
            let _ = stream.shutdown(Shutdown::Both);
            Err(e)
        }
    }
}

/// One connection attempt and, if it authenticates, the session over it.
fn session(
    base: &Path,
    cfg: &WorkerConfig,
    sig_rx: &Receiver<i32>,
    status: &mut StatusFile,
) -> SessionEnd {
    // Connecting and the handshake block (up to their timeouts) on a
    // master that may be slow or silent; doing them in a helper thread keeps
    // SIGTERM answered at once. On shutdown the helper is simply abandoned:
    // the process is about to exit.
    let (tx, rx) = bounded(1);
    {
        let (base, cfg) = (base.to_path_buf(), cfg.clone());
        std::thread::spawn(move || {
            let _ = tx.send(connect_and_handshake(&base, &cfg));
        });
    }
    let attempt = loop {
        select! {
            recv(rx) -> r => match r {
                Ok(r) => break r,
                Err(_) => break Err(HandshakeError::Io(anyhow::anyhow!("connection attempt failed"))),
            },
            recv(sig_rx) -> sig => match sig {
                Ok(s) if is_shutdown_signal(s) => {
                    log::info!("signal {s}: shutting down");
                    return SessionEnd::Shutdown;
                }
                Ok(s) => log::info!("signal {s} ignored (edit worker.cfg and restart to change settings)"),
                Err(_) => return SessionEnd::Shutdown,
            },
        }
    };
    let (stream, reader, master_keepalive) = match attempt {
        Ok(r) => r,
        Err(e) => {
            let (state, level, why) = match e {
                HandshakeError::Connect(e) => (
                    State::Unreachable,
                    log::Level::Warn,
                    format!("could not connect to the master at {}: {e:#}", cfg.master),
                ),
                HandshakeError::Refused(reason) => (
                    State::Refused,
                    log::Level::Error,
                    format!(
                        "the master at {} refused worker {:?}: {reason}",
                        cfg.master, cfg.name
                    ),
                ),
                HandshakeError::BadProof => (
                    State::Refused,
                    log::Level::Error,
                    format!(
                        "the master at {} could not prove it knows the password of worker {:?}; \
                         refusing to run anything for it (wrong password in worker.cfg or master.cfg, \
                         or not our master)",
                        cfg.master, cfg.name
                    ),
                ),
                HandshakeError::Protocol(m) => (
                    State::Refused,
                    log::Level::Error,
                    format!("handshake with the master at {} failed: {m}", cfg.master),
                ),
                HandshakeError::NotAMaster(m) => (
                    State::NotAMaster,
                    log::Level::Error,
                    format!(
                        "{} is not a minibot master's worker port: {m}; `master` in worker.cfg \
                         must be the master's [protocols.worker] port",
                        cfg.master
                    ),
                ),
                HandshakeError::Io(e) => (
                    State::Unreachable,
                    log::Level::Warn,
                    format!("handshake with the master at {} failed: {e:#}", cfg.master),
                ),
            };
            log::log!(level, "{why}");
            return SessionEnd::Failed(state, why);
        }
    };
    // Our pings go out at the shorter of the two intervals; the master pings
    // at its own, so silence is judged against that (while we are busy
    // streaming logs we send no pings and hear no pongs, only its pings).
    let ping_every = match master_keepalive {
        0 => cfg.keepalive,
        k => k.min(cfg.keepalive),
    };
    let dead_after = Duration::from_secs(3 * master_keepalive.max(ping_every));
    log::info!(
        "connected to the master at {} as {:?} (keepalive {ping_every} s)",
        cfg.master,
        cfg.name
    );
    status.set(State::Connected, None, 0);
    Session::new(base, stream, reader, ping_every, dead_after).run(sig_rx)
}

enum ReaderEvent {
    Msg(ToWorker),
    /// A well-formed frame this version does not know: still proof of life.
    Unknown,
    Closed(String),
}

struct Running {
    step: u32,
    builder_dir: String,
    cancel: CancelToken,
    handle: JoinHandle<()>,
    /// An upload or download step's channel for the master's transfer
    /// frames (`transfer::TransferMsg`).
    transfer: Option<Sender<transfer::TransferMsg>>,
}

struct Session {
    base: PathBuf,
    stream: TcpStream,
    to_master: Sender<FromWorker>,
    from_master: Receiver<ReaderEvent>,
    writer_done: Receiver<Result<(), String>>,
    finished_tx: Sender<BuildId>,
    finished_rx: Receiver<BuildId>,
    running: HashMap<BuildId, Running>,
    done_handles: Vec<JoinHandle<()>>,
    threads: Vec<JoinHandle<()>>,
    dead_after: Duration,
}

impl Session {
    fn new(
        base: &Path,
        stream: TcpStream,
        mut reader: BufReader<TcpStream>,
        ping_every: u64,
        dead_after: Duration,
    ) -> Session {
        let mut threads = Vec::new();
        // Reader: frames → channel. Bounded: the main loop is quick, and a
        // flood from the master should not grow memory without limit.
        let (ev_tx, from_master) = bounded::<ReaderEvent>(64);
        threads.push(std::thread::spawn(move || loop {
            let ev = match protocol::read_frame::<_, serde_json::Value>(&mut reader) {
                Ok(Some(v)) => match serde_json::from_value::<ToWorker>(v) {
                    // A file piece follows its message as a binary frame.
                    Ok(mut m) => match protocol::read_payload(&mut reader, &mut m) {
                        Ok(()) => ReaderEvent::Msg(m),
                        Err(e) => ReaderEvent::Closed(format!("reading from the master failed: {e:#}")),
                    },
                    Err(e) => {
                        log::warn!("ignoring a message from the master this worker does not understand: {e}");
                        ReaderEvent::Unknown
                    }
                },
                Ok(None) => ReaderEvent::Closed("the master closed the connection".into()),
                Err(e) => ReaderEvent::Closed(format!("reading from the master failed: {e:#}")),
            };
            let closed = matches!(ev, ReaderEvent::Closed(_));
            if ev_tx.send(ev).is_err() || closed {
                return;
            }
        }));

        // Writer: the only thread that writes to the socket. Bounded (256
        // frames of at most ~32 KiB of output each): a slow master slows
        // the steps' output pumps down instead of filling our memory.
        let (to_master, out_rx) = bounded::<FromWorker>(256);
        let (done_tx, writer_done) = bounded::<Result<(), String>>(1);
        let mut w = stream.try_clone();
        let ping = Duration::from_secs(ping_every.max(1));
        threads.push(std::thread::spawn(move || {
            let result = (|| -> Result<(), String> {
                let w = w.as_mut().map_err(|e| format!("cloning the socket: {e}"))?;
                loop {
                    let msg = match out_rx.recv_timeout(ping) {
                        Ok(m) => m,
                        // Nothing sent for a keepalive interval.
                        Err(crossbeam_channel::RecvTimeoutError::Timeout) => FromWorker::Ping,
                        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return Ok(()),
                    };
                    let mut buf = Vec::new();
                    for msg in coalesce(msg, &out_rx) {
                        match protocol::encode_frame(&msg) {
                            Ok(b) => buf.extend_from_slice(&b),
                            // Only an oversized frame fails to encode; drop
                            // it rather than the connection.
                            Err(e) => log::error!("not sending a message to the master: {e:#}"),
                        }
                    }
                    w.write_all(&buf)
                        .and_then(|_| w.flush())
                        .map_err(|e| format!("writing to the master failed: {e}"))?;
                }
            })();
            if let (Err(_), Ok(w)) = (&result, &w) {
                // Wake the reader too: the connection is over.
                let _ = w.shutdown(Shutdown::Both);
            }
            let _ = done_tx.send(result);
        }));

        let (finished_tx, finished_rx) = unbounded();
        Session {
            base: base.to_path_buf(),
            stream,
            to_master,
            from_master,
            writer_done,
            finished_tx,
            finished_rx,
            running: HashMap::new(),
            done_handles: Vec::new(),
            threads,
            dead_after,
        }
    }

    fn run(mut self, sig_rx: &Receiver<i32>) -> SessionEnd {
        let mut last_rx = Instant::now();
        let end = loop {
            let dead_in = (last_rx + self.dead_after).saturating_duration_since(Instant::now());
            select! {
                recv(self.from_master) -> ev => match ev {
                    Ok(ReaderEvent::Msg(m)) => {
                        last_rx = Instant::now();
                        if let Err(reason) = self.handle(m) {
                            log::error!("{reason}");
                            break SessionEnd::Lost(reason);
                        }
                    }
                    Ok(ReaderEvent::Unknown) => last_rx = Instant::now(),
                    Ok(ReaderEvent::Closed(reason)) => {
                        log::warn!("connection to the master lost: {reason}");
                        break SessionEnd::Lost(format!("connection to the master lost: {reason}"));
                    }
                    Err(_) => {
                        log::warn!("connection to the master lost");
                        break SessionEnd::Lost("connection to the master lost".into());
                    }
                },
                recv(self.writer_done) -> r => {
                    let why = match r {
                        Ok(Err(e)) => e,
                        _ => "the writer stopped".to_string(),
                    };
                    log::warn!("connection to the master lost: {why}");
                    break SessionEnd::Lost(format!("connection to the master lost: {why}"));
                },
                recv(self.finished_rx) -> id => {
                    if let Ok(id) = id {
                        self.reap(id);
                    }
                },
                recv(sig_rx) -> sig => match sig {
                    Ok(s) if is_shutdown_signal(s) => {
                        log::info!("signal {s}: shutting down");
                        break SessionEnd::Shutdown;
                    }
                    Ok(s) => log::info!("signal {s} ignored (edit worker.cfg and restart to change settings)"),
                    Err(_) => break SessionEnd::Shutdown,
                },
                recv(after(dead_in)) -> _ => {
                    let why = format!(
                        "nothing heard from the master for {} s; assuming the connection is dead",
                        self.dead_after.as_secs()
                    );
                    log::warn!("{why}");
                    break SessionEnd::Lost(why);
                },
            }
        };
        match end {
            SessionEnd::Shutdown => self.shut_down(),
            SessionEnd::Lost(_) | SessionEnd::Failed(..) => self.drop_connection(),
        }
        end
    }

    fn reap(&mut self, build_id: BuildId) {
        if let Some(r) = self.running.remove(&build_id) {
            // The thread is only sending its StepDone now: kept until it has
            // ended, then joined. An exited thread that is never joined
            // keeps its stack mapped; kept for the whole session, a worker's
            // memory grew with every step (2.6 -> 9.8 MB over 300 builds)
            // and its forks slowed down with the mappings.
            self.done_handles.push(r.handle);
            let (ended, running): (Vec<_>, Vec<_>) = std::mem::take(&mut self.done_handles)
                .into_iter()
                .partition(|h| h.is_finished());
            self.done_handles = running;
            for h in ended {
                let _ = h.join();
            }
        }
    }

    /// Handles one message; Err ends the session.
    fn handle(&mut self, m: ToWorker) -> Result<(), String> {
        match m {
            ToWorker::Ping => {
                // try_send: if the queue is full we are sending anyway, and
                // any frame shows the master we are alive.
                let _ = self.to_master.try_send(FromWorker::Pong);
            }
            ToWorker::Pong => {}
            ToWorker::RunStep {
                build_id,
                step,
                builder_dir,
                spec,
            } => self.start_step(build_id, step, builder_dir, spec),
            ToWorker::Interrupt { build_id, reason } => match self.running.get(&build_id) {
                Some(r) => {
                    log::info!("build {build_id} step {}: interrupt: {reason}", r.step);
                    r.cancel.cancel(&reason);
                }
                None => log::info!("interrupt for build {build_id}, which runs nothing here"),
            },
            ToWorker::UploadAck {
                build_id,
                step,
                received,
            } => self.to_transfer(build_id, step, transfer::TransferMsg::Ack(received)),
            ToWorker::DownloadData {
                build_id,
                step,
                data,
            } => self.to_transfer(build_id, step, transfer::TransferMsg::Data(data)),
            ToWorker::DownloadEnd {
                build_id,
                step,
                sha256,
            } => self.to_transfer(build_id, step, transfer::TransferMsg::End(sha256)),
            ToWorker::TransferAborted {
                build_id,
                step,
                reason,
            } => self.to_transfer(build_id, step, transfer::TransferMsg::Aborted(reason)),
            ToWorker::Refused { reason } => {
                return Err(format!("the master dropped this worker: {reason}"));
            }
            other @ (ToWorker::Hello { .. } | ToWorker::Welcome { .. }) => {
                log::warn!("ignoring an unexpected {other:?} from the master");
            }
        }
        Ok(())
    }

    /// Hands a transfer frame to the step it is for. A frame for no
    /// transfer step is late (the step ended) and dropped; a full channel
    /// means the master sent past the window: that step is stopped.
    fn to_transfer(&self, build_id: BuildId, step: u32, msg: transfer::TransferMsg) {
        let Some(r) = self.running.get(&build_id).filter(|r| r.step == step) else {
            log::debug!("build {build_id} step {step}: transfer frame for no running step");
            return;
        };
        let Some(tx) = &r.transfer else {
            log::warn!(
                "build {build_id} step {step}: transfer frame for a step that is no transfer"
            );
            return;
        };
        if let Err(crossbeam_channel::TrySendError::Full(_)) = tx.try_send(msg) {
            r.cancel
                .cancel("the master sent more than the transfer window allows");
        }
    }

    fn refuse_step(&self, build_id: BuildId, step: u32, reason: String) {
        log::error!("build {build_id} step {step}: {reason}");
        let _ = self.to_master.send(FromWorker::Log {
            build_id,
            step,
            stream: "h".into(),
            data: format!("{reason}\n"),
        });
        let _ = self.to_master.send(FromWorker::StepDone {
            build_id,
            step,
            exit_code: None,
            interrupted: false,
            timed_out: false,
            reason: Some(reason),
        });
    }

    fn start_step(
        &mut self,
        build_id: BuildId,
        step: u32,
        builder_dir: String,
        spec: protocol::StepSpec,
    ) {
        if let Err(e) = steps::validate_builder_dir(&builder_dir) {
            return self.refuse_step(build_id, step, e);
        }
        // A step that just finished reports on `finished` before sending
        // its StepDone, so the master's next RunStep for the same build may
        // be here before we looked at `finished`: look now.
        while let Ok(id) = self.finished_rx.try_recv() {
            self.reap(id);
        }
        if let Some(r) = self.running.get(&build_id) {
            let reason = format!(
                "build {build_id} already runs step {} on this worker; refusing step {step}",
                r.step
            );
            return self.refuse_step(build_id, step, reason);
        }
        // Two builds in one build directory would wreck each other; the
        // master must not do that (one build per builder per worker, as in
        // Buildbot), and we do not trust that blindly.
        if let Some((other, _)) = self
            .running
            .iter()
            .find(|(_, r)| r.builder_dir == builder_dir)
        {
            let reason = format!(
                "build {other} is running in {builder_dir}/build on this worker; refusing build {build_id} there"
            );
            return self.refuse_step(build_id, step, reason);
        }
        // The builder's directory is made 0700 here, not left to the umask:
        // worker.cfg's `umask` may open up what the steps create, but the
        // checkout as a whole stays out of other accounts' reach.
        let top = self.base.join(&builder_dir);
        if let Err(e) = daemon::create_private_dir(&top).and_then(|_| daemon::tighten_dir(&top)) {
            return self.refuse_step(build_id, step, format!("{e:#}"));
        }
        let build_dir = steps::build_dir_for(&self.base, &builder_dir);
        let cancel = CancelToken::new();
        let (tx, finished, c) = (
            self.to_master.clone(),
            self.finished_tx.clone(),
            cancel.clone(),
        );
        let dir_name = builder_dir.clone();
        // A transfer step gets the master's transfer frames on a channel.
        let (transfer_tx, transfer_rx) = match spec {
            protocol::StepSpec::Upload { .. } | protocol::StepSpec::Download { .. } => {
                let (t, r) = bounded(transfer::CHANNEL);
                (Some(t), Some(r))
            }
            protocol::StepSpec::Git { .. } | protocol::StepSpec::Shell { .. } => (None, None),
        };
        let spawned = std::thread::Builder::new()
            .name(format!("build-{build_id}"))
            .spawn(move || {
                let kind = match &spec {
                    protocol::StepSpec::Git { .. } => "git",
                    protocol::StepSpec::Shell { .. } => "shell",
                    protocol::StepSpec::Upload { .. } => "upload",
                    protocol::StepSpec::Download { .. } => "download",
                };
                log::info!(
                    "build {build_id} step {step}: {kind} step in {}",
                    build_dir.display()
                );
                let out = |stream: &str, data: &str| {
                    for piece in steps::split_at_most(data, LOG_CHUNK) {
                        let _ = tx.send(FromWorker::Log {
                            build_id,
                            step,
                            stream: stream.to_string(),
                            data: piece.to_string(),
                        });
                    }
                };
                // Locked for the whole step (a git step's checkout
                // included); the step's guard processes hold the lock too,
                // so a worker started after this one was killed waits for
                // this step's processes to be gone.
                let send = |m: FromWorker| {
                    let _ = tx.send(m);
                };
                let o = match (steps::lock_build_dir(&top, &out, &c), &transfer_rx) {
                    (Ok(_lock), Some(rx)) => {
                        let link = transfer::Link {
                            build_id,
                            step,
                            send: &send,
                            rx,
                        };
                        transfer::run(&build_dir, &spec, &out, &c, &link)
                    }
                    (Ok(lock), None) => steps::run_step(&build_dir, &spec, &out, &c, Some(&lock)),
                    (Err(o), _) => o,
                };
                log::info!(
                    "build {build_id} step {step}: finished (exit code {:?}{}{}{})",
                    o.exit_code,
                    if o.interrupted { ", interrupted" } else { "" },
                    if o.timed_out { ", timed out" } else { "" },
                    o.reason
                        .as_deref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                );
                let _ = finished.send(build_id);
                let _ = tx.send(o.to_step_done(build_id, step));
            });
        match spawned {
            Ok(handle) => {
                self.running.insert(
                    build_id,
                    Running {
                        step,
                        builder_dir: dir_name,
                        cancel,
                        handle,
                        transfer: transfer_tx,
                    },
                );
            }
            Err(e) => self.refuse_step(build_id, step, format!("could not start a thread: {e}")),
        }
    }

    /// The connection is gone: kill every running step (the master retries
    /// those builds), and wait for all our threads before reconnecting so a
    /// new session never races an old step in the same build directory.
    fn drop_connection(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
        if !self.running.is_empty() {
            log::warn!(
                "killing {} running step(s): the master will retry their builds",
                self.running.len()
            );
        }
        for r in self.running.values() {
            r.cancel.cancel("connection to the master lost");
        }
        let Session {
            to_master,
            from_master,
            running,
            done_handles,
            threads,
            ..
        } = self;
        drop(to_master);
        drop(from_master);
        for h in running
            .into_values()
            .map(|r| r.handle)
            .chain(done_handles)
            .chain(threads)
        {
            let _ = h.join();
        }
    }

    /// SIGTERM/SIGINT: kill running steps, let their StepDone reach the
    /// master if it still listens, then close. Bounded in time so a
    /// supervisor's stop timeout is not exceeded by a stuck connection.
    fn shut_down(mut self) {
        if !self.running.is_empty() {
            log::info!("interrupting {} running step(s)", self.running.len());
        }
        for r in self.running.values() {
            r.cancel.cancel("the worker is shutting down");
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.running.is_empty() {
            match self
                .finished_rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(id) => self.reap(id),
                Err(_) => break,
            }
        }
        let Session {
            stream,
            to_master,
            from_master,
            writer_done,
            running,
            done_handles,
            threads,
            ..
        } = self;
        // With all steps finished, their last frames are queued; dropping
        // the remaining senders lets the writer drain and stop.
        for h in done_handles {
            let _ = h.join();
        }
        drop(to_master);
        let stuck = !running.is_empty();
        if stuck {
            log::warn!("{} step(s) did not stop in time", running.len());
        } else if writer_done.recv_timeout(Duration::from_secs(5)).is_err() {
            log::warn!("could not deliver the last messages to the master in time");
        }
        let _ = stream.shutdown(Shutdown::Both);
        drop(from_master);
        if !stuck {
            for h in threads {
                let _ = h.join();
            }
        }
    }
}

/// `first` and the messages already queued behind it (up to a few), with
/// consecutive output of one build, step and stream joined into one `Log`
/// of at most `LOG_CHUNK` bytes. A step's header lines, and its last output
/// with the exit code, are written a moment apart; sent as they come, each
/// was a frame the master read, routed, wrote to the log and announced on
/// its own. The writer sends the result in one write; order is kept.
fn coalesce(first: FromWorker, rx: &Receiver<FromWorker>) -> Vec<FromWorker> {
    /// Bounds the frames (and bytes, with LOG_CHUNK) gathered into one write.
    const MAX_MESSAGES: usize = 64;
    let mut out = vec![first];
    for _ in 1..MAX_MESSAGES {
        let Ok(next) = rx.try_recv() else { break };
        if let (
            Some(FromWorker::Log {
                build_id,
                step,
                stream,
                data,
            }),
            FromWorker::Log {
                build_id: b2,
                step: s2,
                stream: st2,
                data: d2,
            },
        ) = (out.last_mut(), &next)
        {
            if build_id == b2 && step == s2 && stream == st2 && data.len() + d2.len() <= LOG_CHUNK {
                data.push_str(d2);
                continue;
            }
        }
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn log(step: u32, stream: &str, data: &str) -> FromWorker {
        FromWorker::Log {
            build_id: BuildId(7),
            step,
            stream: stream.into(),
            data: data.into(),
        }
    }

    #[test]
    fn toml_str_round_trips_through_the_parser() {
        for s in [
            "pass",
            "a\"b\\c",
            "tab\tnew\nline",
            "del\u{7f}",
            "nul\u{0}",
            "é ü 𝄞",
            "",
        ] {
            let doc = format!("v = {}", toml_str(s));
            let t: toml::Table = toml::from_str(&doc).unwrap_or_else(|e| panic!("{doc}: {e}"));
            assert_eq!(t["v"].as_str(), Some(s), "{doc}");
        }
    }

    #[test]
    fn coalesce_joins_queued_output_of_one_stream_in_order() {
        let (tx, rx) = unbounded();
        for m in [
            log(0, "h", "b\n"),
            log(0, "o", "c\n"),
            log(0, "o", "d"),
            log(1, "o", "e\n"),
            FromWorker::Ping,
            log(1, "o", &"x".repeat(LOG_CHUNK)),
        ] {
            tx.send(m).unwrap();
        }
        let got = coalesce(log(0, "h", "a\n"), &rx);
        assert_eq!(
            got,
            vec![
                log(0, "h", "a\nb\n"),
                log(0, "o", "c\nd"),
                log(1, "o", "e\n"),
                FromWorker::Ping,
                log(1, "o", &"x".repeat(LOG_CHUNK)),
            ]
        );
        assert!(rx.is_empty());
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn create_worker_files_and_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("w");
        let opts = CreateOptions {
            umask: Some("027".into()),
            keepalive: 30,
            maxretries: 5,
            ..Default::default()
        };
        let msg = create_worker(&dir, "localhost:54321", "w1", "p\"a ss-long-1", &opts).unwrap();
        assert!(msg.contains("info/admin"), "{msg}");
        assert_eq!(mode(&dir.join(CONFIG_FILE)), 0o600);
        assert_eq!(
            std::fs::read_to_string(dir.join("info/admin")).unwrap(),
            ADMIN_PLACEHOLDER
        );
        assert!(dir.join("info/host").exists());
        let cfg = load_config(&dir).unwrap();
        assert_eq!(
            cfg,
            WorkerConfig {
                master: "localhost:54321".into(),
                name: "w1".into(),
                password: "p\"a ss-long-1".into(),
                keepalive: 30,
                maxretries: 5,
                umask: Some("027".into()),
            }
        );

        // Non-empty dir: refused without --force; --force keeps info files.
        std::fs::write(dir.join("info/admin"), "Me\n").unwrap();
        let err = create_worker(
            &dir,
            "h:1",
            "w1",
            "strong-enough",
            &CreateOptions::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("--force"), "{err}");
        let force = CreateOptions {
            force: true,
            ..Default::default()
        };
        create_worker(&dir, "h:1", "w2", "strong-enough", &force).unwrap();
        assert_eq!(load_config(&dir).unwrap().name, "w2");
        assert_eq!(
            std::fs::read_to_string(dir.join("info/admin")).unwrap(),
            "Me\n"
        );
        assert_eq!(mode(&dir.join(CONFIG_FILE)), 0o600);

        // Bad arguments name the argument.
        let e = create_worker(&tmp.path().join("x"), "nohostport", "w", "p", &opts).unwrap_err();
        assert!(format!("{e:#}").contains("MASTERHOST:PORT"), "{e:#}");
        let bad_umask = CreateOptions {
            umask: Some("999".into()),
            ..Default::default()
        };
        let e = create_worker(&tmp.path().join("x"), "h:1", "w", "p", &bad_umask).unwrap_err();
        assert!(format!("{e:#}").contains("--umask"), "{e:#}");

        // A short password needs --allow-weak-password.
        let e = create_worker(&tmp.path().join("y"), "h:1", "w", "elevenchars", &opts).unwrap_err();
        assert!(format!("{e:#}").contains("--allow-weak-password"), "{e:#}");
        assert!(!tmp.path().join("y").exists(), "nothing created");
        let weak = CreateOptions {
            allow_weak_password: true,
            ..Default::default()
        };
        create_worker(&tmp.path().join("y"), "h:1", "w", "elevenchars", &weak).unwrap();
        assert_eq!(mode(&tmp.path().join("y")), 0o700);
    }

    #[test]
    fn config_errors_name_the_key() {
        let tmp = tempfile::tempdir().unwrap();
        let write = |s: &str| {
            let p = tmp.path().join(CONFIG_FILE);
            std::fs::write(&p, s).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        };
        let err = |s: &str| {
            write(s);
            format!("{:#}", load_config(tmp.path()).unwrap_err())
        };
        let base = "master = \"h:1\"\nname = \"w\"\npassword = \"p\"\n";
        write(base);
        let cfg = load_config(tmp.path()).unwrap();
        assert_eq!(cfg.keepalive, DEFAULT_KEEPALIVE);
        assert_eq!(cfg.maxretries, 0);

        let e = err(&format!("{base}keepalive = \"x\"\n"));
        assert!(e.contains("key `keepalive`") && e.contains("line 4"), "{e}");
        let e = err(&format!("{base}bogus = 1\n"));
        assert!(e.contains("bogus"), "{e}");
        let e = err("master = \"h:1\"\nname = \"w\"\n");
        assert!(e.contains("password"), "{e}");
        let e = err("master = \"nope\"\nname = \"w\"\npassword = \"p\"\n");
        assert!(e.contains("key `master`"), "{e}");
        let e = err(&format!("{base}umask = \"8\"\n"));
        assert!(e.contains("key `umask`"), "{e}");
        assert!(e.contains(CONFIG_FILE), "{e}");
        // The password in a file others may read: refused, with the fix.
        write(base);
        let p = tmp.path().join(CONFIG_FILE);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = format!("{:#}", load_config(tmp.path()).unwrap_err());
        assert!(
            e.contains(&format!("run `chmod 600 {}`", p.display())) && e.contains("mode 640"),
            "{e}"
        );
        std::fs::remove_file(tmp.path().join(CONFIG_FILE)).unwrap();
        let e = format!("{:#}", load_config(tmp.path()).unwrap_err());
        assert!(
            e.contains("could not read") && e.contains(CONFIG_FILE),
            "{e}"
        );
    }

    #[test]
    fn parsing_helpers() {
        assert_eq!(
            parse_master("localhost:1").unwrap(),
            ("localhost".into(), 1)
        );
        assert_eq!(parse_master("[::1]:9989").unwrap(), ("::1".into(), 9989));
        assert!(parse_master(":1").is_err());
        assert!(parse_master("h:0").is_err());
        assert!(parse_master("h:x").is_err());
        assert_eq!(parse_umask("022").unwrap(), 0o22);
        assert_eq!(parse_umask("0o077").unwrap(), 0o77);
        assert!(parse_umask("").is_err());
        assert!(parse_umask("1000").is_err());
    }

    #[test]
    fn backoff_grows_to_a_minute_with_jitter_when_answered_wrongly() {
        for state in [State::Refused, State::NotAMaster] {
            for (failures, lo, hi) in [
                (0, 0.75, 1.25),
                (1, 0.75, 1.25),
                (2, 1.5, 2.5),
                (4, 6.0, 10.0),
            ] {
                for _ in 0..20 {
                    let d = backoff_delay(failures, state).as_secs_f64();
                    assert!(d >= lo && d <= hi, "{failures}: {d}");
                }
            }
            for f in [7, 8, 30, u32::MAX] {
                let d = backoff_delay(f, state).as_secs_f64();
                assert!((45.0..=60.0).contains(&d), "{f}: {d}");
            }
        }
    }

    /// Issue 18 point 3: after an outage the worker is back within a few
    /// seconds of its master.
    #[test]
    fn backoff_stays_at_a_few_seconds_while_nobody_listens() {
        for f in [0, 1, 2, 3, 4, 7, 30, u32::MAX] {
            for _ in 0..20 {
                let d = backoff_delay(f, State::Unreachable).as_secs_f64();
                assert!((0.75..=5.0).contains(&d), "{f}: {d}");
            }
        }
        let d = backoff_delay(3, State::Unreachable).as_secs_f64();
        assert!(d >= 3.0, "{d}");
    }

    #[test]
    fn first_bytes_that_are_no_frame_are_named() {
        assert_eq!(not_a_frame(b""), None);
        assert_eq!(not_a_frame(&[0, 0, 0, 40, b'{']), None);
        let http = not_a_frame(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n").unwrap();
        assert!(http.contains("\"HTTP/1.1 400 Bad Request\""), "{http}");
        assert!(http.contains("web port"), "{http}");
        let ssh = not_a_frame(b"SSH-2.0-OpenSSH_9.2\r\n").unwrap();
        assert!(ssh.contains("\"SSH-2.0-OpenSSH_9.2\""), "{ssh}");
        assert!(not_a_frame(&[0xff, 1, 2])
            .unwrap()
            .contains("not a minibot frame"));
    }

    #[test]
    fn info_has_the_files_and_facts() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("info")).unwrap();
        std::fs::write(tmp.path().join("info/admin"), "  Ann <a@b>\n").unwrap();
        let info = read_info(tmp.path());
        assert_eq!(info["admin"], "Ann <a@b>");
        assert!(!info.contains_key("host"));
        assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
        assert!(info["os"].starts_with(std::env::consts::OS));
    }
}
