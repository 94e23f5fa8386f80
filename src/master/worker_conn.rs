//! Worker connections, master side: the listener, the handshake, and one
//! thread per connected worker that runs its builds.
//!
//! Owns: the `[protocols.worker]` listener thread; per connection a reader
//! thread (blocking reads → `Incoming` channel) and the connection thread,
//! which is the socket's only writer. A blocking socket cannot wait on a
//! channel, so the reader thread turns frames into channel messages and
//! the connection thread `select!`s over frames, `botmaster::ConnCmd`s from the
//! botmaster, the answers to its waiting trigger steps (`chain::TriggerDone`)
//! and a keepalive tick. It drives each build's `RunningBuild` (running
//! trigger steps itself, `master::chain`, and telling the chain thread
//! `ChainMsg::{Wait, Forget}`) and sends `BotMsg::{Attached,
//! BuildFinished, Detached}` to the botmaster, and `BotMsg::RequestsAdded`
//! when a step gave its locks back (a queued request may wait for them).
//! While a build's next step waits for its locks, a `LOCK_POLL` tick reads
//! the locks held and moves it on once they look free
//! (`RunningBuild::advance` takes them, or waits again).
//!
//! Logins (issue 14 item 5) go through the same guessing limits as the web
//! UI (`auth::LoginLimits`: per name, per address, global), with an
//! address that logged in as a name before trusted for it; every refused
//! login gets the same [`LOGIN_REFUSED`] bytes, whether the name is
//! unknown, the password wrong, the name already connected or the limits
//! in the way, and is answered at once with the handshake slot already
//! given back: the limits slow guessing down, not the sockets.

use crate::config::LiveConfig;
use crate::db::{self, Store};
use crate::master::auth::{LoginLimits, Trust};
use crate::master::botmaster::{BotMsg, ConnCmd, Connected};
use crate::master::build::{BuildJob, Next, RunningBuild};
use crate::master::chain::{self, ChainCtx, ChainMsg, Started, TriggerDone, TriggerFailed};
use crate::master::events::Hub;
use crate::master::status::{self, Refusal};
use crate::model::BuildId;
use crate::protocol::{self, FromWorker, ToWorker, PROTOCOL_VERSION};
use anyhow::{anyhow, bail, Context, Result};
use crossbeam_channel::{select, tick, unbounded, Receiver, Sender};
use std::collections::HashMap;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Frames read from a worker's socket and not yet handled (see `run`).
const INCOMING_FRAMES: usize = 4;

/// How often a build whose next step waits for its locks looks whether
/// they are free (a read; the step takes them in a write only then).
const LOCK_POLL: Duration = Duration::from_millis(250);

#[derive(Clone)]
pub(crate) struct ConnCtx {
    pub store: Store,
    pub cfg: LiveConfig,
    pub connected: Connected,
    pub bot: Sender<BotMsg>,
    pub master_dir: PathBuf,
    pub events: Hub,
    /// The guessing limits and the summarised log of refusals.
    pub failures: WorkerLogins,
    /// The chain thread: trigger steps wait through it.
    pub chain: Sender<ChainMsg>,
}

/// [`LoginLimits`] for the worker port (its log lines say "worker login").
#[derive(Clone)]
pub(crate) struct WorkerLogins(pub LoginLimits);

impl Default for WorkerLogins {
    fn default() -> WorkerLogins {
        WorkerLogins(LoginLimits::new("worker login"))
    }
}

/// The one answer to every refused login: the same bytes whatever the
/// cause, so the port tells a guesser nothing (which names exist, whether
/// a password was right for a connected worker); the master's log says
/// which it was.
pub const LOGIN_REFUSED: &str = "login refused: unknown worker name, wrong password, a worker of that name already connected, or too many failed logins (the master's log says which)";

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections still in their handshake at once. Each holds a thread for
/// up to HANDSHAKE_TIMEOUT, so without a cap a local flood of idle
/// connections could exhaust threads; real workers handshake in a moment.
const MAX_HANDSHAKES: usize = 16;

/// A counted handshake slot, given back when dropped.
struct HandshakeSlot(Arc<AtomicUsize>);

impl HandshakeSlot {
    fn take(count: &Arc<AtomicUsize>) -> Option<HandshakeSlot> {
        let n = count.fetch_add(1, Ordering::SeqCst);
        let slot = HandshakeSlot(count.clone());
        (n < MAX_HANDSHAKES).then_some(slot)
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
const THREAD_STACK: usize = 256 * 1024;

pub(crate) fn spawn_listener(listener: TcpListener, ctx: ConnCtx) -> Result<()> {
    std::thread::Builder::new()
        .name("worker-listener".into())
        .stack_size(THREAD_STACK)
        .spawn(move || {
            let handshakes = Arc::new(AtomicUsize::new(0));
            for stream in listener.incoming() {
                let stream = match stream {
                    Ok(s) => s,
                    Err(e) => {
                        log::warn!("worker port: accept failed: {e}");
                        continue;
                    }
                };
                let Some(slot) = HandshakeSlot::take(&handshakes) else {
                    // A flood of connections: summarised like refusals.
                    status::worker_connection_dropped();
                    let ip = stream.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default();
                    ctx.failures.0.note(
                        &ip,
                        "flood",
                        &format!(
                            "from {ip}: more than {MAX_HANDSHAKES} connections in their handshake; dropping one"
                        ),
                    );
                    continue;
                };
                let ctx = ctx.clone();
                let spawned = std::thread::Builder::new()
                    .name("worker-conn".into())
                    .stack_size(THREAD_STACK)
                    .spawn(move || {
                        let peer = stream.peer_addr().ok();
                        if let Err(e) = serve(stream, &ctx, slot) {
                            // Mostly garbage before a login: summarised
                            // per address like refused logins.
                            let ip = peer.map(|a| a.ip().to_string()).unwrap_or_default();
                            let peer = peer.map(|a| a.to_string()).unwrap_or_default();
                            let text = format!("from {peer} failed: {e:#}");
                            ctx.failures.0.note(&ip, "handshake", &text);
                        }
                    });
                if let Err(e) = spawned {
                    log::error!("cannot start a worker connection thread: {e}");
                }
            }
        })
        .context("spawning the worker listener")?;
    Ok(())
}

fn refuse(stream: &mut TcpStream, reason: &str) -> anyhow::Error {
    let _ = protocol::write_frame(
        stream,
        &ToWorker::Refused {
            reason: reason.to_string(),
        },
    );
    anyhow!("refused: {reason}")
}

/// Answers a refused login with [`LOGIN_REFUSED`], the handshake slot
/// already given back (the caller has logged why). Ok: nothing more to log.
fn refuse_login(mut stream: TcpStream, slot: HandshakeSlot) -> Result<()> {
    drop(slot);
    let _ = protocol::write_frame(
        &mut stream,
        &ToWorker::Refused {
            reason: LOGIN_REFUSED.to_string(),
        },
    );
    let _ = stream.shutdown(Shutdown::Both);
    Ok(())
}

/// Looks at a new connection's first bytes without consuming them, so that
/// one that speaks something else (a browser or `curl` pointed at the
/// worker port, a port scanner) is logged as that rather than as a frame of
/// absurd length or a read timeout. A frame's length prefix starts with a
/// zero byte (frames are at most `MAX_FRAME` long).
fn check_speaks_the_protocol(stream: &TcpStream) -> Result<()> {
    let mut head = [0u8; 64];
    let n = match stream.peek(&mut head) {
        Ok(n) => n,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            bail!(
                "the connection said nothing for {} s: not a minibot worker",
                HANDSHAKE_TIMEOUT.as_secs()
            )
        }
        Err(e) => return Err(e).context("reading"),
    };
    match head[..n].first() {
        None | Some(0) => Ok(()),
        Some(_) => {
            let text = String::from_utf8_lossy(&head[..n]);
            let line = text.lines().next().unwrap_or("").trim();
            let shown =
                if !line.is_empty() && line.chars().all(|c| !c.is_control() && c != '\u{fffd}') {
                    format!(" (it began with {line:?})")
                } else {
                    String::new()
                };
            bail!(
                "the connection spoke something other than the minibot worker protocol{shown}: \
                 this is the worker port ([protocols.worker]), the web UI is on [www] port"
            )
        }
    }
}

/// Handshake, then the connection loop.
fn serve(mut stream: TcpStream, ctx: &ConnCtx, slot: HandshakeSlot) -> Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    stream.set_write_timeout(Some(HANDSHAKE_TIMEOUT))?;
    let ip = stream.peer_addr()?.ip();
    let nonce = protocol::new_nonce();
    protocol::write_frame(
        &mut stream,
        &ToWorker::Hello {
            protocol: PROTOCOL_VERSION,
            nonce: nonce.clone(),
        },
    )?;
    check_speaks_the_protocol(&stream)?;
    let auth: FromWorker =
        protocol::read_frame(&mut stream)?.ok_or_else(|| anyhow!("closed during the handshake"))?;
    let FromWorker::Auth {
        protocol: version,
        name,
        nonce: wnonce,
        proof,
        info,
    } = auth
    else {
        return Err(refuse(&mut stream, "expected an auth message"));
    };
    if version != PROTOCOL_VERSION {
        let why = format!(
            "protocol version {version} is not supported (master speaks {PROTOCOL_VERSION})"
        );
        return Err(refuse(&mut stream, &why));
    }
    let cfg = ctx.cfg.current();
    let limits = &ctx.failures.0;
    let addr = ip.to_string();
    // A worker's own address stays welcome while others guess its name.
    let trust = if limits.known_address(&addr, &name) {
        Trust::Address
    } else {
        Trust::None
    };
    let Ok(admitted) = limits.admit(&addr, &name, trust, "worker port") else {
        let configured = cfg.worker(&name).is_some();
        status::worker_login_refused(&name, configured, Refusal::TooManyFailures);
        return refuse_login(stream, slot);
    };
    let password = cfg.worker(&name).map(|w| w.password.clone());
    // The same HMAC work for an unknown name, so timing does not tell.
    let good = protocol::check_worker_proof(
        password.as_deref().unwrap_or("no such worker"),
        &nonce,
        &wnonce,
        &name,
        &proof,
    );
    let Some(password) = password.filter(|_| good) else {
        let configured = cfg.worker(&name).is_some();
        if configured {
            limits.failed(&addr, &name, "wrong password");
        } else {
            limits.failed_no_such_name(&addr, &name, "no worker of that name");
        }
        status::worker_login_refused(&name, configured, Refusal::WrongPassword);
        drop(admitted);
        return refuse_login(stream, slot);
    };
    drop(admitted);
    {
        let mut set = ctx.connected.lock().map_err(|_| anyhow!("lock poisoned"))?;
        if !set.insert(name.clone()) {
            drop(set);
            // Not counted as a failure (the password was right), but
            // answered exactly like one.
            limits.refused(&addr, &name, "a worker of that name is already connected");
            status::worker_login_refused(&name, true, Refusal::AlreadyConnected);
            return refuse_login(stream, slot);
        }
    }
    limits.succeeded(&addr, &name);
    // From here on the name is ours; the botmaster releases it on Detached.
    let name2 = name.clone();
    let workerid = match ctx
        .store
        .write(move |c| db::set_worker_connected(c, &name2, Some(&info), true))
    {
        Ok(id) => id,
        Err(e) => {
            if let Ok(mut set) = ctx.connected.lock() {
                set.remove(&name);
            }
            return Err(e);
        }
    };
    let keepalive = cfg.protocols.worker.keepalive.max(1);
    let (cmd_tx, cmd_rx) = unbounded();
    // Dropped when this function returns: tells the botmaster we are gone.
    let (_alive, closed) = crossbeam_channel::bounded::<()>(0);
    let res = protocol::write_frame(
        &mut stream,
        &ToWorker::Welcome {
            proof: protocol::master_proof(&password, &nonce, &wnonce, &name),
            keepalive,
        },
    )
    .and_then(|_| {
        stream.set_read_timeout(None)?;
        // A frozen worker must not block this thread forever on a full buffer.
        stream.set_write_timeout(Some(Duration::from_secs(3 * keepalive)))?;
        Ok(())
    });
    drop(slot);
    log::info!("worker {name} connected from {}", stream.peer_addr()?);
    if ctx
        .bot
        .send(BotMsg::Attached {
            name: name.clone(),
            workerid,
            conn: cmd_tx,
            closed,
        })
        .is_err()
    {
        bail!("master is shutting down");
    }
    let outcome = match res {
        Ok(()) => Conn {
            stream,
            name: name.clone(),
            ctx: ctx.clone(),
            builds: HashMap::new(),
            keepalive: Duration::from_secs(keepalive),
            last_sent: Instant::now(),
            triggers: unbounded(),
        }
        .run(cmd_rx),
        Err(e) => Err(e),
    };
    let _ = ctx.bot.send(BotMsg::Detached {
        name: name.clone(),
        workerid,
    });
    match outcome {
        Ok(why) => log::info!("worker {name} disconnected: {why}"),
        Err(e) => log::warn!("worker {name} lost: {e:#}"),
    }
    Ok(())
}

enum Incoming {
    Frame(FromWorker),
    Closed(String),
}

struct Conn {
    stream: TcpStream,
    name: String,
    ctx: ConnCtx,
    builds: HashMap<BuildId, RunningBuild>,
    keepalive: Duration,
    last_sent: Instant,
    /// Answers to this connection's waiting trigger steps (at most one per
    /// build it runs), from the chain thread.
    triggers: (Sender<TriggerDone>, Receiver<TriggerDone>),
}

impl Conn {
    fn send(&mut self, msg: &ToWorker) -> Result<()> {
        protocol::write_frame(&mut self.stream, msg)?;
        self.last_sent = Instant::now();
        Ok(())
    }

    /// Runs until the worker goes away or the master shuts down; returns
    /// why it ended. Builds still running are closed by the caller's
    /// `Detached` (the botmaster marks them RETRY).
    fn run(mut self, cmds: Receiver<ConnCmd>) -> Result<String> {
        // Bounded: a worker that sends faster than this thread stores
        // (a step printing at disk speed, or a hostile worker) waits in
        // TCP's flow control instead of queueing frames in the master's
        // memory: at most this many frames (each ≤ `MAX_FRAME`) wait.
        let (in_tx, in_rx) = crossbeam_channel::bounded(INCOMING_FRAMES);
        // Buffered: a frame is a length and a body, two `recv` calls each
        // unbuffered, and frames sent together arrive together.
        let mut reader =
            std::io::BufReader::new(self.stream.try_clone().context("cloning the socket")?);
        std::thread::Builder::new()
            .name("worker-reader".into())
            .stack_size(THREAD_STACK)
            .spawn(move || loop {
                match protocol::read_message::<_, FromWorker>(&mut reader) {
                    Ok(Some(m)) => {
                        if in_tx.send(Incoming::Frame(m)).is_err() {
                            break;
                        }
                    }
                    Ok(None) => {
                        let _ = in_tx.send(Incoming::Closed("connection closed".into()));
                        break;
                    }
                    Err(e) => {
                        let _ = in_tx.send(Incoming::Closed(format!("{e:#}")));
                        break;
                    }
                }
            })
            .context("spawning the worker reader")?;
        let ticker = tick(self.keepalive);
        let lock_poll = tick(LOCK_POLL);
        let no_poll = crossbeam_channel::never();
        let mut last_recv = Instant::now();
        let triggers = self.triggers.1.clone();
        let outcome: Result<String> = loop {
            let waiting = self.builds.values().any(RunningBuild::waiting_for_locks);
            select! {
                recv(in_rx) -> m => match m {
                    Ok(Incoming::Frame(f)) => {
                        last_recv = Instant::now();
                        if let Err(e) = self.on_frame(f) {
                            break Err(e);
                        }
                    }
                    Ok(Incoming::Closed(why)) => break Err(anyhow!(why)),
                    Err(_) => break Err(anyhow!("reader stopped")),
                },
                recv(cmds) -> c => match c {
                    Ok(ConnCmd::StartBuild(job)) => {
                        if let Err(e) = self.start_build(*job) {
                            break Err(e);
                        }
                    }
                    Ok(ConnCmd::StopBuild { buildid, reason }) => {
                        if let Err(e) = self.stop_build(buildid, &reason) {
                            break Err(e);
                        }
                    }
                    Ok(ConnCmd::Shutdown) | Err(_) => {
                        for id in self.builds.keys().copied().collect::<Vec<_>>() {
                            let _ = self.send(&ToWorker::Interrupt {
                                build_id: id,
                                reason: "master shutting down".into(),
                            });
                        }
                        break Ok("master shutting down".into());
                    }
                },
                recv(if waiting { &lock_poll } else { &no_poll }) -> _ => {
                    if let Err(e) = self.retry_waiting() {
                        break Err(e);
                    }
                }
                recv(triggers) -> d => {
                    if let Ok(d) = d {
                        if let Err(e) = self.trigger_done(d) {
                            break Err(e);
                        }
                    }
                }
                recv(ticker) -> _ => {
                    if last_recv.elapsed() > 3 * self.keepalive {
                        break Err(anyhow!(
                            "no message for {:?} (keepalive {:?})",
                            last_recv.elapsed(),
                            self.keepalive
                        ));
                    }
                    if self.last_sent.elapsed() >= self.keepalive {
                        if let Err(e) = self.send(&ToWorker::Ping) {
                            break Err(e);
                        }
                    }
                }
            }
        };
        let why = match &outcome {
            Ok(s) => s.clone(),
            Err(e) => format!("{e:#}"),
        };
        for (id, b) in self.builds.iter_mut() {
            if b.master_step().is_some() {
                let _ = self.ctx.chain.send(ChainMsg::Forget { buildid: *id });
            }
            b.abandon(
                &self.ctx.store,
                &format!("*** connection to worker lost: {why} ***"),
            );
        }
        let _ = self.stream.shutdown(Shutdown::Both);
        outcome
    }

    fn on_frame(&mut self, f: FromWorker) -> Result<()> {
        match f {
            FromWorker::Ping => self.send(&ToWorker::Pong),
            FromWorker::Pong => Ok(()),
            FromWorker::Log {
                build_id,
                step,
                stream,
                data,
            } => {
                if let Some(b) = self.builds.get_mut(&build_id) {
                    if let Err(e) = b.log(step, &stream, &data) {
                        log::error!("build {build_id}: writing log: {e:#}");
                    }
                }
                Ok(())
            }
            FromWorker::StepDone {
                build_id,
                step,
                exit_code,
                interrupted,
                timed_out,
                reason,
            } => {
                let Some(b) = self.builds.get_mut(&build_id) else {
                    log::warn!(
                        "worker {}: StepDone for unknown build {build_id}",
                        self.name
                    );
                    return Ok(());
                };
                if interrupted && !b.stop_requested() {
                    // Nobody here asked for it: the worker is shutting down
                    // (SIGTERM, supervisorctl stop). That is a lost worker,
                    // not a cancelled build: end the connection, and the
                    // botmaster closes its builds as RETRY and re-queues them.
                    bail!(
                        "the worker interrupted build {build_id} by itself ({}); treating it as gone",
                        reason.as_deref().unwrap_or("no reason given")
                    );
                }
                match b.step_done(step, exit_code, interrupted, timed_out, reason) {
                    Ok(true) => {}
                    // Not the running step: nothing changed, nothing to do.
                    Ok(false) => return Ok(()),
                    Err(e) => log::error!("build {build_id}: recording step end: {e:#}"),
                }
                self.advance(build_id)
            }
            f @ (FromWorker::UploadFile { .. }
            | FromWorker::UploadData { .. }
            | FromWorker::UploadEnd { .. }
            | FromWorker::DownloadAck { .. }) => {
                let build_id = match &f {
                    FromWorker::UploadFile { build_id, .. }
                    | FromWorker::UploadData { build_id, .. }
                    | FromWorker::UploadEnd { build_id, .. }
                    | FromWorker::DownloadAck { build_id, .. } => *build_id,
                    _ => return Ok(()),
                };
                let Some(b) = self.builds.get_mut(&build_id) else {
                    return Ok(());
                };
                for reply in b.on_transfer(&self.ctx.store, f) {
                    self.send(&reply)?;
                }
                Ok(())
            }
            FromWorker::Auth { .. } => bail!("unexpected auth message after the handshake"),
        }
    }

    fn start_build(&mut self, job: BuildJob) -> Result<()> {
        let id = job.buildid;
        self.builds.insert(
            id,
            RunningBuild::new(job, self.ctx.master_dir.clone(), self.ctx.events.clone()),
        );
        self.advance(id)
    }

    /// Sends the build's next step (or runs it, a trigger step), or
    /// finishes the build.
    fn advance(&mut self, id: BuildId) -> Result<()> {
        loop {
            let Some(b) = self.builds.get_mut(&id) else {
                return Ok(());
            };
            let next = b.advance(&self.ctx.store);
            if b.take_released() {
                // A queued request may wait for the locks that step gave back.
                let _ = self.ctx.bot.send(BotMsg::RequestsAdded);
            }
            match next {
                Ok(Next::Run(msg)) => {
                    // A download's first pieces follow its RunStep at once.
                    let more = b.transfer_frames();
                    self.send(&msg)?;
                    for m in more {
                        self.send(&m)?;
                    }
                    return Ok(());
                }
                Ok(Next::Wait) => return Ok(()),
                Ok(Next::Trigger { step, trigger }) => {
                    let ctx = ChainCtx {
                        store: self.ctx.store.clone(),
                        cfg: self.ctx.cfg.clone(),
                        bot: self.ctx.bot.clone(),
                        chain: self.ctx.chain.clone(),
                    };
                    let job = b.job.clone();
                    let started = chain::start_trigger(
                        &ctx,
                        &job,
                        step,
                        &trigger,
                        &self.triggers.0,
                        &mut |text| b.master_log(text),
                    );
                    match started {
                        Ok(Started::Waiting) => return Ok(()),
                        Ok(Started::Done(r)) => {
                            b.master_step_done(step, r, None);
                        }
                        Err(TriggerFailed::Config(why)) => {
                            b.master_log(&format!("{why}\n"));
                            b.master_step_done(step, crate::model::BuildResult::Exception, None);
                        }
                        Err(TriggerFailed::Retry(e)) => {
                            log::error!("build {id}: trigger step: {e:#}");
                            b.master_log(&format!("{e:#}\n"));
                            b.master_step_done(step, crate::model::BuildResult::Retry, None);
                            b.cut_short(&format!("the trigger step could not start: {e:#}"));
                            break;
                        }
                    }
                    // The next step, in this loop.
                    continue;
                }
                Ok(Next::Done) => {}
                Err(e) => {
                    // The database (or the log directory) refused the step:
                    // end the build as RETRY rather than leave it hanging.
                    log::error!("build {id}: starting the next step: {e:#}");
                    b.cut_short(&format!("the master could not start the next step: {e:#}"));
                }
            }
            break;
        }
        if let Some(mut b) = self.builds.remove(&id) {
            let end = b.end();
            let unwritten = match end.write(&self.ctx.store) {
                Ok(r) => {
                    log::info!(
                        "build {} #{} (build {id}) finished: {}",
                        b.job.builder.name,
                        b.job.number,
                        r.name()
                    );
                    None
                }
                Err(e) => {
                    // Kept: the botmaster writes it once the database
                    // takes writes again.
                    log::error!("build {id}: recording the result (will retry): {e:#}");
                    Some(Box::new(end))
                }
            };
            let _ = self.ctx.bot.send(BotMsg::BuildFinished {
                worker: self.name.clone(),
                buildid: id,
                unwritten,
            });
        }
        Ok(())
    }

    /// Moves on the builds whose next step waits for locks that look free
    /// now. Err only when the worker cannot be written to.
    fn retry_waiting(&mut self) -> Result<()> {
        let holders = match self.ctx.store.reader().and_then(|r| db::lock_holders(&r)) {
            Ok(h) => h,
            Err(e) => {
                log::warn!("reading the locks held (will look again): {e:#}");
                return Ok(());
            }
        };
        let ready: Vec<BuildId> = self
            .builds
            .iter()
            .filter(|(_, b)| b.locks_look_free(&holders))
            .map(|(id, _)| *id)
            .collect();
        for id in ready {
            self.advance(id)?;
        }
        Ok(())
    }

    /// A waiting trigger step's builds are done: its result is theirs.
    fn trigger_done(&mut self, d: TriggerDone) -> Result<()> {
        // Gone, stopped meanwhile, or at another step: nothing to do.
        let Some(b) = self
            .builds
            .get_mut(&d.buildid)
            .filter(|b| b.master_step() == Some(d.step))
        else {
            return Ok(());
        };
        b.master_log(&d.summary);
        let why = (d.results != crate::model::BuildResult::Success).then(|| {
            let name = d.results.name();
            let line = d.summary.lines().find(|l| l.ends_with(name));
            line.unwrap_or("").to_string()
        });
        if b.master_step_done(d.step, d.results, why) {
            self.advance(d.buildid)?;
        }
        Ok(())
    }

    fn stop_build(&mut self, id: BuildId, reason: &str) -> Result<()> {
        let Some(b) = self.builds.get_mut(&id) else {
            return Ok(());
        };
        if let Some(step) = b.master_step() {
            // A trigger step waiting: it ends now; the triggered builds go
            // on (`master::chain`, module header).
            let _ = b.request_stop(reason);
            let _ = self.ctx.chain.send(ChainMsg::Forget { buildid: id });
            b.master_log(&format!(
                "{reason}: the step ended while waiting; the triggered builds go on\n"
            ));
            b.master_step_done(step, crate::model::BuildResult::Cancelled, None);
            return self.advance(id);
        }
        match b.request_stop(reason) {
            Some(msg) => self.send(&msg),
            // Between steps: nothing to interrupt, end it now.
            None => self.advance(id),
        }
    }
}
