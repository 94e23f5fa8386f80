//! Running one build step on the worker: `shell` and `git`.
//!
//! Owns: spawning a step's processes, streaming their output, the
//! no-output timeout, interrupts, and the git checkout logic. It knows
//! nothing about the network: output goes to an `out(stream, data)` callback
//! and the result comes back as a [`StepOutcome`], so everything here is
//! testable with a closure and a temp dir.
//!
//! Threads and channels, per running command (see [`run_step`]):
//! - the calling thread runs the select loop: it receives output chunks,
//!   calls `out` (so `out` needs no `Sync`), watches the [`CancelToken`],
//!   the no-output timer and the child's exit, and does all the killing;
//! - two pump threads read stdout and stderr and send `(stream, text)`
//!   chunks on a small bounded channel (bounded, so a slow consumer slows
//!   the command down instead of buffering without limit);
//! - one waiter thread blocks in `waitid(WNOWAIT)` and reports the exit on
//!   a channel without reaping; the calling thread kills what the command
//!   left in its group, then reaps the command with `Child::wait` and the
//!   guard (whose unreaped pid keeps the group id ours until then): no
//!   zombies.
//!
//! Each command runs in a process group of its own, led by a guard process
//! ([`crate::sys::start_group_guard`], one per command, started before it),
//! and every kill is sent to the whole group (`kill(-pgid)`) so
//! grandchildren die too. The guard kills the group when the worker dies,
//! whatever kills it: a step never outlives its worker (issue 16 point 4).
//! A step holds its build directory's lock ([`lock_build_dir`]) from start
//! to end, and so does each guard, so a worker started after a `kill -9`
//! waits for the old step's processes to be gone before it uses the
//! directory.

use crate::model::BuildId;
use crate::protocol::{FromWorker, StepSpec, LOG_CHUNK};
use crossbeam_channel::{after, bounded, never, select, Receiver, Sender};
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Time between SIGTERM and SIGKILL to a step's process group.
const KILL_GRACE: Duration = Duration::from_secs(3);
/// After the command exits, how long to keep reading output that processes
/// it left behind still write, before those are killed.
const PIPE_GRACE: Duration = Duration::from_secs(2);

/// Asks a running step to stop. Cloning shares the token. The first
/// `cancel` wins; its reason is reported in the step's outcome.
#[derive(Clone, Debug)]
pub(crate) struct CancelToken {
    inner: Arc<CancelInner>,
}

#[derive(Debug)]
struct CancelInner {
    reason: Mutex<Option<String>>,
    // Dropping the sender disconnects `rx`, which wakes every `select!`
    // waiting on it: a one-shot broadcast without extra machinery.
    tx: Mutex<Option<Sender<()>>>,
    rx: Receiver<()>,
}

impl Default for CancelToken {
    fn default() -> Self {
        Self::new()
    }
}

impl CancelToken {
    pub(crate) fn new() -> Self {
        let (tx, rx) = bounded(0);
        CancelToken {
            inner: Arc::new(CancelInner {
                reason: Mutex::new(None),
                tx: Mutex::new(Some(tx)),
                rx,
            }),
        }
    }

    /// Requests cancellation; later calls keep the first reason.
    pub(crate) fn cancel(&self, reason: &str) {
        let mut r = self.inner.reason.lock().unwrap_or_else(|e| e.into_inner());
        if r.is_none() {
            *r = Some(reason.to_string());
        }
        drop(r);
        self.inner
            .tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    pub(crate) fn reason(&self) -> Option<String> {
        self.inner
            .reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Disconnected (so `recv` returns at once) once cancelled.
    pub(super) fn receiver(&self) -> &Receiver<()> {
        &self.inner.rx
    }
}

/// How a step ended; maps one to one onto `FromWorker::StepDone`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct StepOutcome {
    /// None when the process did not exit normally (signal, not started).
    pub exit_code: Option<i32>,
    pub interrupted: bool,
    pub timed_out: bool,
    /// Why, when it did not simply exit with a code.
    pub reason: Option<String>,
}

impl StepOutcome {
    pub(crate) fn success(&self) -> bool {
        self.exit_code == Some(0) && !self.interrupted && !self.timed_out
    }

    pub(super) fn failed(reason: String) -> Self {
        StepOutcome {
            reason: Some(reason),
            ..Default::default()
        }
    }

    pub(crate) fn to_step_done(&self, build_id: BuildId, step: u32) -> FromWorker {
        FromWorker::StepDone {
            build_id,
            step,
            exit_code: self.exit_code,
            interrupted: self.interrupted,
            timed_out: self.timed_out,
            reason: self.reason.clone(),
        }
    }
}

/// Output callback: `(stream, data)` with stream "o", "e" or "h".
pub(crate) type Out<'a> = &'a dyn Fn(&str, &str);

/// Runs one step in `build_dir` (the builder's `build` directory; created if
/// missing, or replaced by a full git checkout).
/// `lock`: the build directory's lock ([`lock_build_dir`]), handed to each
/// command's guard process so it is held as long as any of them lives.
pub(crate) fn run_step(
    build_dir: &Path,
    spec: &StepSpec,
    out: Out<'_>,
    cancel: &CancelToken,
    lock: Option<&BuildDirLock>,
) -> StepOutcome {
    let ctx = StepCtx { out, cancel, lock };
    match spec {
        StepSpec::Shell {
            argv,
            env,
            workdir,
            timeout,
        } => run_shell(build_dir, argv, env, workdir, *timeout, &ctx),
        StepSpec::Git {
            repourl,
            branch,
            revision,
            mode,
            pr_number,
            merge_into,
            timeout,
        } => run_git(
            build_dir,
            &GitArgs {
                repourl,
                branch: branch.as_deref(),
                revision: revision.as_deref(),
                mode,
                pr_number: *pr_number,
                merge_into: merge_into.as_deref(),
                timeout: *timeout,
            },
            &ctx,
        ),
        StepSpec::Upload { .. } | StepSpec::Download { .. } => {
            // `worker::transfer::run` runs those; it needs the master's frames.
            let msg = "a transfer step reached the command runner (a worker bug)";
            out("h", &format!("{msg}\n"));
            StepOutcome::failed(msg.into())
        }
    }
}

/// What every command of a step shares: where output goes, the stop
/// token, and the build directory's lock.
struct StepCtx<'a> {
    out: Out<'a>,
    cancel: &'a CancelToken,
    lock: Option<&'a BuildDirLock>,
}

/// A builder directory is one plain path component under the worker's base
/// directory: anything else could make a step write outside it.
pub(crate) fn validate_builder_dir(s: &str) -> Result<(), String> {
    if s.is_empty() || s == "." || s == ".." || s.contains('/') || s.contains('\0') {
        return Err(format!(
            "invalid builder_dir {s:?}: it must be one non-empty path component (no '/', not '..')"
        ));
    }
    Ok(())
}

/// A workdir is relative to the build directory and may not climb out of it.
fn validate_workdir(s: &str) -> Result<(), String> {
    if s.contains('\0') {
        return Err(format!("invalid workdir {s:?}: contains a NUL byte"));
    }
    for c in Path::new(s).components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            _ => {
                return Err(format!(
                "invalid workdir {s:?}: it must be relative to the build directory, without '..'"
            ))
            }
        }
    }
    Ok(())
}

/// Quotes argv for display (never for execution): words made only of safe
/// characters stay as they are, others are single-quoted POSIX style.
pub(crate) fn shell_quote(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            let safe = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "@%+=:,./-_".contains(c));
            if safe {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn run_shell(
    build_dir: &Path,
    argv: &[String],
    env: &BTreeMap<String, String>,
    workdir: &str,
    timeout: u64,
    ctx: &StepCtx<'_>,
) -> StepOutcome {
    let out = ctx.out;
    let fail = |msg: String| {
        out("h", &format!("{msg}\n"));
        StepOutcome::failed(msg)
    };
    if argv.is_empty() {
        return fail("empty command: nothing to run".into());
    }
    if let Err(e) = validate_workdir(workdir) {
        return fail(e);
    }
    let cwd = if workdir.is_empty() {
        build_dir.to_path_buf()
    } else {
        build_dir.join(workdir)
    };
    // As Buildbot's worker does, a missing workdir is created.
    if let Err(e) = std::fs::create_dir_all(&cwd) {
        return fail(format!(
            "could not create working directory {}: {e}",
            cwd.display()
        ));
    }
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]).envs(env);
    let keys: Vec<&str> = env.keys().map(|k| k.as_str()).collect();
    run_command(cmd, argv, &cwd, &keys, timeout, ctx)
}

/// Runs one prepared command to the end. `cmd` has program, args and extra
/// env set; this sets cwd, stdio and the process group. `env_keys` are only
/// shown (values may be secrets).
fn run_command(
    mut cmd: Command,
    argv: &[String],
    cwd: &Path,
    env_keys: &[&str],
    timeout: u64,
    ctx: &StepCtx<'_>,
) -> StepOutcome {
    let (out, cancel) = (ctx.out, ctx.cancel);
    if let Some(reason) = cancel.reason() {
        out("h", &format!("not started: interrupted ({reason})\n"));
        return StepOutcome {
            interrupted: true,
            reason: Some(reason),
            ..Default::default()
        };
    }
    out("h", &format!("{}\n", shell_quote(argv)));
    let timeout_text = if timeout > 0 {
        format!("timeout {timeout} secs")
    } else {
        "no timeout".to_string()
    };
    out(
        "h",
        &format!(" in dir {} ({timeout_text})\n", cwd.display()),
    );
    if !env_keys.is_empty() {
        out(
            "h",
            &format!(" environment overrides: {}\n", env_keys.join(", ")),
        );
    }
    // The group's guard first: the command is started in its group, so
    // from the command's first instruction on, the worker's death (by any
    // signal) kills the command and everything it starts.
    let guard = match GroupGuard::start(ctx.lock) {
        Ok(g) => g,
        Err(e) => {
            let msg = format!("could not start the step's guard process: {e}");
            out("h", &format!("{msg}\n"));
            return StepOutcome::failed(msg);
        }
    };
    let pgid = guard.pgid;
    cmd.current_dir(cwd)
        .env_remove(crate::daemon::DETACHED_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // The guard's process group: killing -pgid reaches everything the
        // command starts (unless it escapes with setsid, which build tools
        // do not do).
        .process_group(pgid);
    let started = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("could not start {}: {e}", shell_quote(&argv[..1]));
            out("h", &format!("{msg}\n"));
            return StepOutcome::failed(msg);
        }
    };
    let pid = child.id() as i32;

    let (chunk_tx, chunk_rx) = bounded::<(&'static str, String)>(16);
    if let Some(stdout) = child.stdout.take() {
        let tx = chunk_tx.clone();
        std::thread::spawn(move || pump(stdout, "o", tx));
    }
    if let Some(stderr) = child.stderr.take() {
        let tx = chunk_tx.clone();
        std::thread::spawn(move || pump(stderr, "e", tx));
    }
    // Only the pumps may hold senders: the channel disconnects when both
    // pipes reached EOF.
    drop(chunk_tx);
    let (exit_tx, exit_rx) = bounded::<()>(1);
    std::thread::spawn(move || {
        wait_exited_no_reap(pid);
        let _ = exit_tx.send(());
    });

    let never_chunk = never();
    let never_unit = never();
    let mut pipes_open = true;
    let mut exited_at: Option<Instant> = None;
    let mut last_output = Instant::now();
    // Some(t): SIGTERM was sent, SIGKILL follows at t.
    let mut kill_at: Option<Instant> = None;
    let mut killing = false;
    let mut interrupted = None;
    let mut timed_out = false;
    let timeout_d = Duration::from_secs(timeout);
    loop {
        let wake = if let Some(t) = exited_at {
            Some(t + PIPE_GRACE)
        } else if let Some(t) = kill_at {
            Some(t)
        } else if timeout > 0 && !killing {
            Some(last_output + timeout_d)
        } else {
            None
        };
        let timer = match wake {
            Some(t) => after(t.saturating_duration_since(Instant::now())),
            None => never(),
        };
        let chunks = if pipes_open { &chunk_rx } else { &never_chunk };
        let exits = if exited_at.is_none() {
            &exit_rx
        } else {
            &never_unit
        };
        let cancels = if killing || exited_at.is_some() {
            &never_unit
        } else {
            cancel.receiver()
        };
        select! {
            recv(chunks) -> m => match m {
                Ok((stream, data)) => {
                    out(stream, &data);
                    last_output = Instant::now();
                }
                Err(_) => pipes_open = false,
            },
            recv(exits) -> _ => exited_at = Some(Instant::now()),
            recv(cancels) -> _ => {
                let reason = cancel.reason().unwrap_or_else(|| "interrupted".into());
                out("h", &format!("interrupted: {reason}; killing the process group\n"));
                interrupted = Some(reason);
                killing = true;
                let _ = signal_group(pgid, libc::SIGTERM);
                kill_at = Some(Instant::now() + KILL_GRACE);
            },
            recv(timer) -> _ => {},
        }
        let now = Instant::now();
        if let Some(t) = exited_at {
            if !pipes_open {
                break;
            }
            if now >= t + PIPE_GRACE {
                out(
                    "h",
                    "the command exited but processes it started still hold its output open; killing them\n",
                );
                break;
            }
        } else if let Some(t) = kill_at {
            if now >= t {
                let _ = signal_group(pgid, libc::SIGKILL);
                kill_at = None;
            }
        } else if timeout > 0 && !killing && now >= last_output + timeout_d {
            out(
                "h",
                &format!(
                    "command timed out: {timeout} seconds without output running {}, attempting to kill\n",
                    shell_quote(argv)
                ),
            );
            timed_out = true;
            killing = true;
            let _ = signal_group(pgid, libc::SIGTERM);
            kill_at = Some(now + KILL_GRACE);
        }
    }
    // The guard is not reaped, so the group id is still ours: kill
    // whatever the command left behind in it (background jobs, servers a
    // test forgot) and the guard, then reap the command. After a SIGTERM
    // the group also gets its SIGKILL here, for members that ignored TERM.
    let _ = signal_group(pgid, libc::SIGKILL);
    let status = child.wait();
    drop(guard);
    // Dropping the receiver makes pumps still blocked on leftovers' pipes
    // stop at their next send instead of lingering.
    drop(chunk_rx);
    let elapsed = started.elapsed().as_secs_f64();

    let mut outcome = StepOutcome {
        interrupted: interrupted.is_some(),
        timed_out,
        ..Default::default()
    };
    match status {
        Ok(st) => {
            let rc = finished_code(&st);
            if let Some(sig) = st.signal() {
                out("h", &format!("process killed by signal {sig}\n"));
            }
            out("h", &format!("program finished with exit code {rc}\n"));
            outcome.exit_code = st.code();
            outcome.reason = if let Some(r) = interrupted {
                Some(r)
            } else if timed_out {
                Some(format!(
                    "command timed out: {timeout} seconds without output"
                ))
            } else {
                st.signal().map(|s| format!("process killed by signal {s}"))
            };
        }
        Err(e) => {
            outcome.reason = Some(format!("could not wait for the command: {e}"));
            out(
                "h",
                &format!("{}\n", outcome.reason.as_deref().unwrap_or("")),
            );
        }
    }
    out("h", &format!("elapsedTime={elapsed:.6}\n"));
    outcome
}

/// The guard of one command's process group ([`crate::sys::start_group_guard`]):
/// the group's leader, which kills the group when the worker dies. The
/// worker holds the write end of the pipe the guard waits on.
struct GroupGuard {
    /// The guard's pid: the process group id of the command.
    pgid: i32,
    alive: Option<std::io::PipeWriter>,
    /// The stack of a guard sharing our memory: a field, so dropped after
    /// `Drop::drop` has reaped the guard.
    _stack: Option<crate::sys::GuardStack>,
}

impl GroupGuard {
    fn start(lock: Option<&BuildDirLock>) -> std::io::Result<GroupGuard> {
        use std::os::fd::AsFd;
        let (rd, wr) = std::io::pipe()?;
        let (pgid, stack) =
            crate::sys::start_group_guard(rd.as_fd(), lock.map(|l| l.file.as_fd()))?;
        Ok(GroupGuard {
            pgid,
            alive: Some(wr),
            _stack: stack,
        })
    }
}

impl Drop for GroupGuard {
    /// Closing our end makes the guard kill the group (itself included) if
    /// it still lives; then it is reaped. Normally the command's end
    /// already killed the group with it.
    fn drop(&mut self) {
        drop(self.alive.take());
        if let Err(e) = crate::sys::reap(self.pgid) {
            log::warn!("could not reap the guard process {}: {e}", self.pgid);
        }
    }
}

/// How long a step waits for its build directory's lock before failing.
/// The lock is only held this long by something outside this worker: a
/// second worker using the same directory, or the steps of a killed worker
/// whose guard could not run (their guard kills them within milliseconds).
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// The lock on a builder's build directory: `flock` on `build.lock` beside
/// it, held by the worker while a step runs there and by each of the step's
/// guard processes, so it is free again only once every process of the step
/// is gone, even when the worker died first.
pub(crate) struct BuildDirLock {
    file: std::fs::File,
}

/// Takes the lock of `top` (a builder's directory, holding `build/`),
/// waiting up to [`LOCK_WAIT`]; Err is the failed step's outcome, with a
/// message saying who holds the directory.
pub(crate) fn lock_build_dir(
    top: &Path,
    out: Out<'_>,
    cancel: &CancelToken,
) -> Result<BuildDirLock, StepOutcome> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = top.join("build.lock");
    let fail = |msg: String| {
        out("h", &format!("{msg}\n"));
        StepOutcome::failed(msg)
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| {
            fail(format!(
                "could not open the lock file {}: {e}",
                path.display()
            ))
        })?;
    let deadline = Instant::now() + LOCK_WAIT;
    let mut said = false;
    loop {
        match file.try_lock() {
            Ok(()) => {
                if said {
                    out("h", "got the lock\n");
                }
                return Ok(BuildDirLock { file });
            }
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(fail(format!("could not lock {}: {e}", path.display())))
            }
        }
        if !said {
            out(
                "h",
                &format!(
                    "waiting for the lock on {}: another process is using this build directory\n",
                    path.display()
                ),
            );
            said = true;
        }
        if Instant::now() >= deadline {
            return Err(fail(format!(
                "the build directory {} is still in use by another process after {} s \
                 (lock file {} held): a second worker using this directory, or steps of an \
                 earlier worker still running? Not running this step there",
                top.join("build").display(),
                LOCK_WAIT.as_secs(),
                path.display()
            )));
        }
        select! {
            recv(cancel.receiver()) -> _ => {
                let reason = cancel.reason().unwrap_or_else(|| "interrupted".into());
                out("h", &format!("not started: interrupted ({reason})\n"));
                return Err(StepOutcome {
                    interrupted: true,
                    reason: Some(reason),
                    ..Default::default()
                });
            },
            recv(after(Duration::from_millis(50))) -> _ => {},
        }
    }
}

/// Buildbot's "program finished with exit code N": -1 when killed by a signal.
fn finished_code(st: &ExitStatus) -> i32 {
    st.code().unwrap_or(-1)
}

fn signal_group(pgid: i32, sig: i32) -> anyhow::Result<()> {
    crate::daemon::send_signal(-pgid, sig)
}

/// Blocks until the child `pid` has exited, without reaping it.
fn wait_exited_no_reap(pid: i32) {
    loop {
        match crate::sys::wait_exited_no_reap(pid) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            _ => return,
        }
    }
}

/// Reads one pipe to EOF, sending decoded chunks of at most `LOG_CHUNK`
/// bytes. Stops early when the receiver is gone.
fn pump(mut r: impl Read, stream: &'static str, tx: Sender<(&'static str, String)>) {
    // Leave room for up to 3 carried bytes of a split UTF-8 sequence.
    let mut buf = vec![0u8; LOG_CHUNK - 3];
    let mut dec = Utf8Decoder::default();
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let text = dec.push(&buf[..n]);
        for piece in split_at_most(&text, LOG_CHUNK) {
            if tx.send((stream, piece.to_string())).is_err() {
                return;
            }
        }
    }
    let rest = dec.finish();
    if !rest.is_empty() {
        let _ = tx.send((stream, rest));
    }
}

/// Splits `s` into pieces of at most `max` bytes on char boundaries (a
/// chunk with replacement characters can be longer than what was read).
pub(crate) fn split_at_most(s: &str, max: usize) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = s;
    while rest.len() > max {
        let mut cut = max;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        if cut == 0 {
            // `max` is smaller than one character: emit that character.
            cut = rest.chars().next().map_or(rest.len(), char::len_utf8);
        }
        pieces.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    if !rest.is_empty() {
        pieces.push(rest);
    }
    pieces
}

/// Incremental UTF-8 decoding: a multi-byte character split across two
/// reads is carried over whole; bytes that can never be valid become U+FFFD.
#[derive(Default, Debug)]
pub(crate) struct Utf8Decoder {
    carry: Vec<u8>,
}

impl Utf8Decoder {
    pub(crate) fn push(&mut self, bytes: &[u8]) -> String {
        let mut data = std::mem::take(&mut self.carry);
        data.extend_from_slice(bytes);
        let mut text = String::with_capacity(data.len());
        let mut rest = &data[..];
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    text.push_str(s);
                    break;
                }
                Err(e) => {
                    let (good, bad) = rest.split_at(e.valid_up_to());
                    // `good` is valid by construction; lossy never replaces.
                    text.push_str(&String::from_utf8_lossy(good));
                    match e.error_len() {
                        Some(n) => {
                            text.push('\u{FFFD}');
                            rest = &bad[n..];
                        }
                        None => {
                            // An incomplete sequence at the end: wait for
                            // the rest of it.
                            self.carry = bad.to_vec();
                            break;
                        }
                    }
                }
            }
        }
        text
    }

    /// Whatever is still carried at EOF can never complete.
    pub(crate) fn finish(&mut self) -> String {
        let rest = std::mem::take(&mut self.carry);
        String::from_utf8_lossy(&rest).into_owned()
    }
}

struct GitArgs<'a> {
    repourl: &'a str,
    branch: Option<&'a str>,
    revision: Option<&'a str>,
    mode: &'a str,
    pr_number: Option<u64>,
    /// Check out this commit and merge `revision` (the PR head) into it.
    merge_into: Option<&'a str>,
    timeout: u64,
}

/// The identity and settings of the merge commit of a pull request build:
/// fixed, so the merge works on a worker without a git identity and makes
/// the same commit whoever's worker runs it (the date is the newer parent's,
/// [`merge_date`]); no hooks and no signing from the worker user's config.
const MERGE_IDENTITY: [(&str, &str); 4] = [
    ("GIT_AUTHOR_NAME", "minibot"),
    ("GIT_AUTHOR_EMAIL", "minibot@localhost"),
    ("GIT_COMMITTER_NAME", "minibot"),
    ("GIT_COMMITTER_EMAIL", "minibot@localhost"),
];

/// A full commit id (SHA-1 or SHA-256), as Gitea and GitHub send them: what
/// a pull request's merge accepts from a change.
fn is_full_sha(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What a merge build needs besides the plain checkout's checks: a PR
/// number (positive) and both commits as full hex ids, since they come
/// from a webhook and name what is merged.
fn check_merge(g: &GitArgs<'_>) -> Result<(), String> {
    if g.pr_number == Some(0) {
        return Err("refusing pull request number 0".to_string());
    }
    let Some(base) = g.merge_into else {
        return Ok(());
    };
    if g.pr_number.is_none() {
        return Err("refusing merge_into without pr_number".to_string());
    }
    for (what, v) in [("PR head", g.revision.unwrap_or("")), ("base", base)] {
        if !is_full_sha(v) {
            return Err(format!("refusing {what} {v:?}: not a full hex commit id"));
        }
    }
    Ok(())
}

/// The date of a merge commit: the newer of its parents' committer dates,
/// in git's internal format, so the same merge gets the same commit id.
fn merge_date(build_dir: &Path, base: &str, head: &str) -> Option<String> {
    let times = git_capture(build_dir, &["show", "-s", "--format=%ct", base, head])?;
    let newest = times.lines().filter_map(|t| t.parse::<i64>().ok()).max()?;
    Some(format!("{newest} +0000"))
}

/// Branch names and revisions come from changes (webhooks, i.e. outside):
/// they are data, passed as single argv words, and may not look like
/// options or refspecs.
pub(crate) fn validate_git_word(what: &str, s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!("empty {what}"));
    }
    if s.starts_with('-') {
        return Err(format!("refusing {what} {s:?}: it starts with '-'"));
    }
    if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "refusing {what} {s:?}: it contains whitespace or control characters"
        ));
    }
    if what == "branch" && s.contains(':') {
        return Err(format!("refusing {what} {s:?}: it contains ':'"));
    }
    Ok(())
}

fn git_command(args: &[&str]) -> (Command, Vec<String>) {
    let mut cmd = Command::new("git");
    cmd.args(args)
        // Fail instead of waiting for a password nobody will type.
        .env("GIT_TERMINAL_PROMPT", "0")
        // If the worker itself was started from inside a git hook or
        // repository tooling, these would point git at the wrong repo.
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .env_remove("GIT_OBJECT_DIRECTORY");
    let mut argv = vec!["git".to_string()];
    argv.extend(args.iter().map(|s| s.to_string()));
    (cmd, argv)
}

/// A quick local git query (no network): its trimmed stdout if it succeeded
/// and printed something.
fn git_capture(dir: &Path, args: &[&str]) -> Option<String> {
    let (mut cmd, _) = git_command(args);
    let o = cmd
        .current_dir(dir)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&o.stdout).trim().to_string();
    (o.status.success() && !s.is_empty()).then_some(s)
}

/// Removes a directory tree; on a permission error (read-only directories
/// left by some tools, e.g. Go's module cache) makes directories writable
/// and tries again.
fn remove_tree(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            make_dirs_writable(path);
            std::fs::remove_dir_all(path)
        }
        r => r,
    }
}

fn make_dirs_writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    // symlink_metadata: never follow a link out of the tree.
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if meta.is_dir() {
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700));
        if let Ok(entries) = std::fs::read_dir(path) {
            for e in entries.flatten() {
                make_dirs_writable(&e.path());
            }
        }
    }
}

fn run_git(build_dir: &Path, g: &GitArgs<'_>, ctx: &StepCtx<'_>) -> StepOutcome {
    let out = ctx.out;
    let fail = |msg: String| {
        out("h", &format!("{msg}\n"));
        StepOutcome::failed(msg)
    };
    if g.repourl.is_empty() || g.repourl.starts_with('-') || g.repourl.contains(char::is_control) {
        return fail(format!("refusing repourl {:?}", g.repourl));
    }
    for (what, v) in [("branch", g.branch), ("revision", g.revision)] {
        if let Some(v) = v {
            if let Err(e) = validate_git_word(what, v) {
                return fail(e);
            }
        }
    }
    if let Err(e) = check_merge(g) {
        return fail(e);
    }
    if g.mode != "incremental" && g.mode != "full" {
        return fail(format!(
            "unknown git mode {:?}: expected \"incremental\" or \"full\"",
            g.mode
        ));
    }

    // Runs one git command, streamed; Err carries the outcome to return.
    let git = |args: &[&str]| -> Result<(), StepOutcome> {
        let (cmd, argv) = git_command(args);
        let mut o = run_command(cmd, &argv, build_dir, &[], g.timeout, ctx);
        if o.success() {
            Ok(())
        } else {
            if o.reason.is_none() {
                o.reason = Some(format!(
                    "git {} failed with exit code {}",
                    args.first().copied().unwrap_or(""),
                    o.exit_code.map_or("?".to_string(), |c| c.to_string())
                ));
            }
            Err(o)
        }
    };
    let result = (|| -> Result<String, StepOutcome> {
        let fresh = g.mode == "full" || !build_dir.join(".git").exists();
        if fresh {
            if build_dir.exists() {
                out(
                    "h",
                    &format!("removing {} for a fresh checkout\n", build_dir.display()),
                );
                remove_tree(build_dir)
                    .map_err(|e| fail(format!("could not remove {}: {e}", build_dir.display())))?;
            }
            std::fs::create_dir_all(build_dir)
                .map_err(|e| fail(format!("could not create {}: {e}", build_dir.display())))?;
            // init + fetch rather than clone: clone insists on an empty
            // target and fetches every branch; this fetches only what the
            // build needs and works alike for URLs and plain paths.
            git(&["-c", "init.defaultBranch=main", "init", "--quiet"])?;
            git(&["remote", "add", "origin", g.repourl])?;
        } else {
            match git_capture(build_dir, &["config", "--get", "remote.origin.url"]) {
                Some(u) if u == g.repourl => {}
                Some(_) => git(&["remote", "set-url", "origin", g.repourl])?,
                None => git(&["remote", "add", "origin", g.repourl])?,
            }
        }
        // A pull request's head (Gitea and GitHub keep `refs/pull/<n>/head`
        // in the base repository, also for PRs from forks); for a merge
        // also the base branch. No branch: whatever the remote's HEAD is.
        let pr_ref = g.pr_number.map(|n| format!("refs/pull/{n}/head"));
        let mut fetch_refs: Vec<&str> = pr_ref.iter().map(String::as_str).collect();
        if pr_ref.is_none() || g.merge_into.is_some() {
            fetch_refs.push(g.branch.unwrap_or("HEAD"));
        }
        let fetched = fetch_refs.join(" ");
        git(&[&["fetch", "origin"][..], &fetch_refs].concat())?;
        let verify = |t: &str| {
            git_capture(
                build_dir,
                &[
                    "rev-parse",
                    "--verify",
                    "--quiet",
                    &format!("{t}^{{commit}}"),
                ],
            )
        };
        // The commit `rev` names (none: the first ref fetched).
        let resolve = |rev: Option<&str>| -> Result<String, StepOutcome> {
            let target = rev.unwrap_or("FETCH_HEAD");
            let mut sha = verify(target);
            if sha.is_none() {
                if let Some(rev) = rev {
                    // Not reachable from the fetched refs (force-push,
                    // other branch): ask for the commit itself.
                    out(
                        "h",
                        &format!("revision {rev} is not in {fetched}; fetching it directly\n"),
                    );
                    git(&["fetch", "origin", rev])?;
                    sha = verify(rev);
                }
            }
            sha.ok_or_else(|| {
                fail(format!(
                    "revision {target} not found after fetching {fetched} from {}",
                    g.repourl
                ))
            })
        };
        let sha = resolve(g.revision)?;
        let Some(base) = g.merge_into else {
            // Incremental mode keeps untracked files (build products), as
            // Buildbot does; -f discards changes to tracked ones.
            git(&["checkout", "-f", "--detach", &sha])?;
            return Ok(sha);
        };
        let base = resolve(Some(base))?;
        git(&["checkout", "-f", "--detach", &base])?;
        merge_pr(build_dir, g, &base, &sha, ctx)
    })();
    match result {
        Ok(sha) => {
            out("h", &format!("got_revision={sha}\n"));
            StepOutcome {
                exit_code: Some(0),
                ..Default::default()
            }
        }
        Err(o) => o,
    }
}

/// Merges a pull request's head into the base checked out in `build_dir`
/// (buildbot_gitea's `Gitea` step: `git merge <head_sha>`, here always a
/// merge commit). Returns the merge commit; a conflict is aborted, so the
/// directory is clean for the next build, and fails the step saying so.
fn merge_pr(
    build_dir: &Path,
    g: &GitArgs<'_>,
    base: &str,
    head: &str,
    ctx: &StepCtx<'_>,
) -> Result<String, StepOutcome> {
    let out = ctx.out;
    let n = g.pr_number.unwrap_or_default();
    let short = |s: &str| s.chars().take(10).collect::<String>();
    let into = match g.branch {
        Some(b) => format!("{b} ({})", short(base)),
        None => short(base),
    };
    let message = format!("Merge pull request #{n} ({}) into {into}", short(head));
    let (mut cmd, argv) = git_command(&[
        "-c",
        "commit.gpgsign=false",
        "-c",
        "core.hooksPath=/dev/null",
        "merge",
        "--no-ff",
        "--no-edit",
        "-m",
        &message,
        head,
    ]);
    let mut keys: Vec<&str> = MERGE_IDENTITY.iter().map(|(k, _)| *k).collect();
    cmd.envs(MERGE_IDENTITY);
    if let Some(date) = merge_date(build_dir, base, head) {
        cmd.env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_DATE", &date);
        keys.extend(["GIT_AUTHOR_DATE", "GIT_COMMITTER_DATE"]);
    }
    let mut o = run_command(cmd, &argv, build_dir, &keys, g.timeout, ctx);
    if !o.success() {
        if o.interrupted || o.timed_out {
            return Err(o);
        }
        let conflicts = git_capture(build_dir, &["diff", "--name-only", "--diff-filter=U"]);
        // Leave no merge in progress behind (a later incremental build
        // checks out over it anyway).
        let (abort, abort_argv) = git_command(&["merge", "--abort"]);
        run_command(abort, &abort_argv, build_dir, &[], g.timeout, ctx);
        let why = match conflicts {
            Some(files) => {
                out(
                    "h",
                    &format!(
                        "conflicting files: {}\n",
                        files.lines().collect::<Vec<_>>().join(", ")
                    ),
                );
                format!("merge conflict: PR #{n} does not merge into {into}")
            }
            None => format!(
                "PR #{n} does not merge into {into}: git merge failed with exit code {}",
                o.exit_code.map_or("?".to_string(), |c| c.to_string())
            ),
        };
        // The master writes the reason at the end of the step's log.
        o.reason = Some(why);
        return Err(o);
    }
    let merged = git_capture(build_dir, &["rev-parse", "--verify", "HEAD^{commit}"])
        .ok_or_else(|| StepOutcome::failed("no HEAD after the merge".to_string()))?;
    out(
        "h",
        &format!("merged PR #{n} head {head} into {base}: {merged}\n"),
    );
    Ok(merged)
}

/// Where a builder's build directory lives under the worker's base dir.
pub(crate) fn build_dir_for(base: &Path, builder_dir: &str) -> PathBuf {
    base.join(builder_dir).join("build")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    struct Collect(RefCell<Vec<(String, String)>>);

    impl Collect {
        fn new() -> Self {
            Collect(RefCell::new(Vec::new()))
        }
        fn out(&self) -> impl Fn(&str, &str) + '_ {
            |s: &str, d: &str| self.0.borrow_mut().push((s.to_string(), d.to_string()))
        }
        fn stream(&self, s: &str) -> String {
            self.0
                .borrow()
                .iter()
                .filter(|(st, _)| st == s)
                .map(|(_, d)| d.as_str())
                .collect()
        }
    }

    fn shell(argv: &[&str], timeout: u64) -> StepSpec {
        StepSpec::Shell {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: BTreeMap::new(),
            workdir: String::new(),
            timeout,
        }
    }

    fn sh(script: &str, timeout: u64) -> StepSpec {
        shell(&["/bin/sh", "-c", script], timeout)
    }

    #[test]
    fn shell_separates_streams_and_reports_exit_code() {
        let dir = tempfile::tempdir().unwrap();
        let c = Collect::new();
        let o = run_step(
            dir.path(),
            &sh("echo out1; echo err1 >&2; echo out2; exit 3", 10),
            &c.out(),
            &CancelToken::new(),
            None,
        );
        assert_eq!(o.exit_code, Some(3));
        assert!(!o.interrupted && !o.timed_out && o.reason.is_none());
        assert_eq!(c.stream("o"), "out1\nout2\n");
        assert_eq!(c.stream("e"), "err1\n");
        let h = c.stream("h");
        assert!(h.starts_with("/bin/sh -c "), "{h}");
        assert!(h.contains(&format!(
            " in dir {} (timeout 10 secs)",
            dir.path().display()
        )));
        assert!(h.contains("program finished with exit code 3\n"), "{h}");
        assert!(h.contains("elapsedTime="), "{h}");

        let c = Collect::new();
        let o = run_step(
            dir.path(),
            &shell(&["true"], 0),
            &c.out(),
            &CancelToken::new(),
            None,
        );
        assert!(o.success(), "{o:?}");
    }

    #[test]
    fn shell_env_workdir_and_no_shell() {
        let dir = tempfile::tempdir().unwrap();
        let c = Collect::new();
        let mut env = BTreeMap::new();
        env.insert("MINIBOT_TEST_VAR".to_string(), "v a l".to_string());
        let spec = StepSpec::Shell {
            // printf is given the literal '$HOME': no shell expands it.
            argv: vec![
                "sh".into(),
                "-c".into(),
                "pwd; printf '%s\\n' \"$MINIBOT_TEST_VAR\" \"$1\"".into(),
                "x".into(),
                "$HOME".into(),
            ],
            env,
            workdir: "sub/dir".into(),
            timeout: 10,
        };
        let o = run_step(dir.path(), &spec, &c.out(), &CancelToken::new(), None);
        assert!(o.success(), "{o:?}");
        let real = dir.path().join("sub/dir").canonicalize().unwrap();
        assert_eq!(c.stream("o"), format!("{}\nv a l\n$HOME\n", real.display()));
        assert!(c
            .stream("h")
            .contains("environment overrides: MINIBOT_TEST_VAR"));
        assert!(!c.stream("h").contains("v a l"), "env values are not shown");

        for bad in ["/etc", "../x", "a/../../b"] {
            let c = Collect::new();
            let spec = StepSpec::Shell {
                argv: vec!["true".into()],
                env: BTreeMap::new(),
                workdir: bad.into(),
                timeout: 10,
            };
            let o = run_step(dir.path(), &spec, &c.out(), &CancelToken::new(), None);
            assert_eq!(o.exit_code, None, "{bad}");
            assert!(o.reason.unwrap().contains("invalid workdir"));
        }
    }

    #[test]
    fn command_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let c = Collect::new();
        let o = run_step(
            dir.path(),
            &shell(&["minibot-no-such-command-xyz", "a"], 10),
            &c.out(),
            &CancelToken::new(),
            None,
        );
        assert_eq!(o.exit_code, None);
        let reason = o.reason.unwrap();
        assert!(
            reason.contains("could not start minibot-no-such-command-xyz"),
            "{reason}"
        );
        assert!(c
            .stream("h")
            .contains("could not start minibot-no-such-command-xyz"));
    }

    fn alive(pid: i32) -> bool {
        crate::daemon::pid_alive(pid)
    }

    fn wait_dead(pid: i32) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !alive(pid) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    #[test]
    fn no_output_timeout_kills_grandchildren() {
        let dir = tempfile::tempdir().unwrap();
        let c = Collect::new();
        let t0 = Instant::now();
        let o = run_step(
            dir.path(),
            &sh("sleep 100 & echo $!; sleep 100", 1),
            &c.out(),
            &CancelToken::new(),
            None,
        );
        assert!(t0.elapsed() < Duration::from_secs(20));
        assert!(o.timed_out, "{o:?}");
        assert!(!o.interrupted);
        assert_eq!(o.exit_code, None);
        assert!(o.reason.unwrap().contains("timed out"));
        let grandchild: i32 = c.stream("o").trim().parse().unwrap();
        assert!(wait_dead(grandchild), "grandchild {grandchild} survived");
        let h = c.stream("h");
        assert!(
            h.contains("command timed out: 1 seconds without output"),
            "{h}"
        );
        assert!(h.contains("process killed by signal 15"), "{h}");
        assert!(h.contains("program finished with exit code -1"), "{h}");
    }

    #[test]
    fn timeout_escalates_to_sigkill() {
        let dir = tempfile::tempdir().unwrap();
        let c = Collect::new();
        let o = run_step(
            dir.path(),
            &sh("trap '' TERM; echo started; while :; do sleep 1; done", 1),
            &c.out(),
            &CancelToken::new(),
            None,
        );
        assert!(o.timed_out);
        assert!(
            c.stream("h").contains("process killed by signal 9"),
            "{}",
            c.stream("h")
        );
    }

    #[test]
    fn output_resets_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let c = Collect::new();
        let o = run_step(
            dir.path(),
            &sh("for i in 1 2 3 4; do echo $i; sleep 0.5; done", 1),
            &c.out(),
            &CancelToken::new(),
            None,
        );
        assert!(o.success(), "{o:?}");
        assert_eq!(c.stream("o"), "1\n2\n3\n4\n");
    }

    #[test]
    fn interrupt_kills_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let cancel = CancelToken::new();
        let (tx, rx) = crossbeam_channel::unbounded::<String>();
        let c2 = cancel.clone();
        let t = std::thread::spawn(move || {
            let dir = dir;
            let out = |s: &str, d: &str| {
                if s == "o" {
                    let _ = tx.send(d.to_string());
                }
            };
            run_step(
                dir.path(),
                &sh("sleep 100 & echo $!; sleep 100", 0),
                &out,
                &c2,
                None,
            )
        });
        let line = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let grandchild: i32 = line.trim().parse().unwrap();
        cancel.cancel("stopped by the user");
        let o = t.join().unwrap();
        assert!(o.interrupted && !o.timed_out, "{o:?}");
        assert_eq!(o.reason.as_deref(), Some("stopped by the user"));
        assert!(wait_dead(grandchild));

        // A token cancelled before the start runs nothing.
        let dir = tempfile::tempdir().unwrap();
        let c = Collect::new();
        let o = run_step(dir.path(), &sh("touch ran", 0), &c.out(), &cancel, None);
        assert!(o.interrupted);
        assert!(!dir.path().join("ran").exists());
    }

    #[test]
    fn leftover_background_process_is_killed_after_exit() {
        let dir = tempfile::tempdir().unwrap();
        let c = Collect::new();
        let t0 = Instant::now();
        // The background job keeps stdout open after sh exits.
        let o = run_step(
            dir.path(),
            &sh("sleep 100 & echo $!", 0),
            &c.out(),
            &CancelToken::new(),
            None,
        );
        assert!(o.success(), "{o:?}");
        assert!(t0.elapsed() < Duration::from_secs(15));
        let pid: i32 = c.stream("o").trim().parse().unwrap();
        assert!(wait_dead(pid));
    }

    #[test]
    fn utf8_split_across_chunks() {
        let mut d = Utf8Decoder::default();
        let s = "aé€😀z".as_bytes();
        let mut text = String::new();
        for b in s {
            text.push_str(&d.push(std::slice::from_ref(b)));
        }
        text.push_str(&d.finish());
        assert_eq!(text, "aé€😀z");

        let mut d = Utf8Decoder::default();
        assert_eq!(d.push(b"a\xffb\xe2\x82"), "a\u{FFFD}b");
        assert_eq!(d.push(b"\xac!"), "€!");
        assert_eq!(d.push(b"\xf0\x9f"), "");
        assert_eq!(d.finish(), "\u{FFFD}");

        assert_eq!(split_at_most("aé€", 2), vec!["a", "é", "€"]);
        assert_eq!(split_at_most("aé€b", 3), vec!["aé", "€", "b"]);
        assert_eq!(split_at_most("", 2), Vec::<&str>::new());
    }

    #[test]
    fn big_output_arrives_whole_in_bounded_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let c = Collect::new();
        // 100 000 × "é" (2 bytes) = 200 kB, forcing reads to split chars.
        let o = run_step(
            dir.path(),
            &sh(
                &format!(
                    "i=0; while [ $i -lt 1000 ]; do printf '{}'; i=$((i+1)); done",
                    "é".repeat(100)
                ),
                10,
            ),
            &c.out(),
            &CancelToken::new(),
            None,
        );
        assert!(o.success());
        let all = c.stream("o");
        assert_eq!(all.chars().count(), 100_000);
        assert!(all.chars().all(|ch| ch == 'é'));
        assert!(c.0.borrow().iter().all(|(_, d)| d.len() <= LOG_CHUNK));
    }

    #[test]
    fn validation() {
        assert!(validate_builder_dir("runtests").is_ok());
        for bad in ["", ".", "..", "a/b", "/x"] {
            assert!(validate_builder_dir(bad).is_err(), "{bad}");
        }
        assert!(validate_git_word("branch", "feature/x-1").is_ok());
        assert!(validate_git_word("branch", "--upload-pack=evil").is_err());
        assert!(validate_git_word("revision", "-n").is_err());
        assert!(validate_git_word("branch", "a:refs/heads/b").is_err());
        assert!(validate_git_word("branch", "a b").is_err());
        assert_eq!(
            shell_quote(&["echo".into(), "a b".into(), "it's".into(), "".into()]),
            "echo 'a b' 'it'\\''s' ''"
        );
    }

    // ---- git ----

    fn git_in(dir: &Path, args: &[&str]) -> String {
        let o = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "T")
            .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
            .env("GIT_COMMITTER_NAME", "T")
            .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    fn commit(repo: &Path, file: &str, text: &str) -> String {
        std::fs::write(repo.join(file), text).unwrap();
        git_in(repo, &["add", file]);
        git_in(repo, &["commit", "-q", "-m", &format!("edit {file}")]);
        git_in(repo, &["rev-parse", "HEAD"])
    }

    fn git_spec(url: &str, branch: Option<&str>, rev: Option<&str>, mode: &str) -> StepSpec {
        StepSpec::Git {
            repourl: url.into(),
            branch: branch.map(Into::into),
            revision: rev.map(Into::into),
            mode: mode.into(),
            pr_number: None,
            merge_into: None,
            timeout: 60,
        }
    }

    #[test]
    fn git_clone_incremental_and_full() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        git_in(&repo, &["init", "-q", "-b", "main"]);
        let c1 = commit(&repo, "a.txt", "one\n");
        let build = tmp.path().join("w/runtests/build");
        let url = format!("file://{}", repo.display());
        let cancel = CancelToken::new();

        // First checkout: no .git yet, tip of the remote's HEAD.
        let c = Collect::new();
        let o = run_step(
            &build,
            &git_spec(&url, None, None, "incremental"),
            &c.out(),
            &cancel,
            None,
        );
        assert!(o.success(), "{o:?}\n{}", c.stream("h"));
        assert_eq!(
            std::fs::read_to_string(build.join("a.txt")).unwrap(),
            "one\n"
        );
        assert!(c.stream("h").contains(&format!("got_revision={c1}")));
        assert!(c.stream("h").contains("git fetch origin HEAD"));

        // A build product survives an incremental update to a given revision.
        std::fs::write(build.join("product.o"), "x").unwrap();
        let c2 = commit(&repo, "a.txt", "two\n");
        let _c3 = commit(&repo, "a.txt", "three\n");
        let c = Collect::new();
        let o = run_step(
            &build,
            &git_spec(&url, Some("main"), Some(&c2), "incremental"),
            &c.out(),
            &cancel,
            None,
        );
        assert!(o.success(), "{o:?}\n{}", c.stream("h"));
        assert_eq!(
            std::fs::read_to_string(build.join("a.txt")).unwrap(),
            "two\n"
        );
        assert!(build.join("product.o").exists());
        assert!(!c.stream("h").contains("removing"));
        assert_eq!(git_in(&build, &["rev-parse", "HEAD"]), c2);

        // Full mode starts over: the product is gone; plain path URL, branch tip.
        let c = Collect::new();
        let path_url = repo.display().to_string();
        let o = run_step(
            &build,
            &git_spec(&path_url, Some("main"), None, "full"),
            &c.out(),
            &cancel,
            None,
        );
        assert!(o.success(), "{o:?}\n{}", c.stream("h"));
        assert_eq!(
            std::fs::read_to_string(build.join("a.txt")).unwrap(),
            "three\n"
        );
        assert!(!build.join("product.o").exists());
        assert_eq!(
            git_in(&build, &["config", "--get", "remote.origin.url"]),
            path_url
        );

        // Incremental with a changed URL updates origin.
        let c = Collect::new();
        let o = run_step(
            &build,
            &git_spec(&url, Some("main"), Some(&c1), "incremental"),
            &c.out(),
            &cancel,
            None,
        );
        assert!(o.success(), "{o:?}\n{}", c.stream("h"));
        assert_eq!(
            git_in(&build, &["config", "--get", "remote.origin.url"]),
            url
        );
        assert_eq!(
            std::fs::read_to_string(build.join("a.txt")).unwrap(),
            "one\n"
        );

        // A revision on another branch is fetched directly.
        git_in(&repo, &["checkout", "-q", "-b", "side"]);
        let side = commit(&repo, "b.txt", "side\n");
        git_in(&repo, &["checkout", "-q", "main"]);
        let c = Collect::new();
        let o = run_step(
            &build,
            &git_spec(&url, Some("main"), Some(&side), "incremental"),
            &c.out(),
            &cancel,
            None,
        );
        assert!(o.success(), "{o:?}\n{}", c.stream("h"));
        assert!(build.join("b.txt").exists());
    }

    #[test]
    fn git_pull_request_ref() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        git_in(&repo, &["init", "-q", "-b", "main"]);
        commit(&repo, "a.txt", "one\n");
        git_in(&repo, &["checkout", "-q", "-b", "pr"]);
        let pr = commit(&repo, "a.txt", "pr\n");
        git_in(&repo, &["update-ref", "refs/pull/7/head", &pr]);
        git_in(&repo, &["checkout", "-q", "main"]);
        let build = tmp.path().join("build");
        let spec = StepSpec::Git {
            repourl: repo.display().to_string(),
            branch: Some("main".into()),
            revision: None,
            mode: "incremental".into(),
            pr_number: Some(7),
            merge_into: None,
            timeout: 60,
        };
        let c = Collect::new();
        let o = run_step(&build, &spec, &c.out(), &CancelToken::new(), None);
        assert!(o.success(), "{o:?}\n{}", c.stream("h"));
        assert_eq!(
            std::fs::read_to_string(build.join("a.txt")).unwrap(),
            "pr\n"
        );
    }

    /// A repository with a pull request #7 (`refs/pull/7/head`) that
    /// touches `conflicting`'s line or a file of its own, and a later base
    /// commit: (repo url, base sha, head sha).
    fn pr_repo(dir: &Path, conflicting: bool) -> (String, String, String) {
        let repo = dir.join("repo");
        std::fs::create_dir(&repo).unwrap();
        git_in(&repo, &["init", "-q", "-b", "main"]);
        commit(&repo, "a.txt", "one\n");
        git_in(&repo, &["checkout", "-q", "-b", "pr"]);
        let head = match conflicting {
            true => commit(&repo, "a.txt", "pr\n"),
            false => commit(&repo, "pr.txt", "pr\n"),
        };
        git_in(&repo, &["update-ref", "refs/pull/7/head", &head]);
        git_in(&repo, &["checkout", "-q", "main"]);
        let base = commit(&repo, "a.txt", "base\n");
        (repo.display().to_string(), base, head)
    }

    fn merge_spec(url: &str, base: &str, head: &str, pr: u64) -> StepSpec {
        StepSpec::Git {
            repourl: url.into(),
            branch: Some("main".into()),
            revision: Some(head.into()),
            mode: "incremental".into(),
            pr_number: Some(pr),
            merge_into: Some(base.into()),
            timeout: 60,
        }
    }

    #[test]
    fn git_merges_a_pull_request_into_its_base() {
        let tmp = tempfile::tempdir().unwrap();
        let (url, base, head) = pr_repo(tmp.path(), false);
        let build = tmp.path().join("build");
        let c = Collect::new();
        let spec = merge_spec(&url, &base, &head, 7);
        let o = run_step(&build, &spec, &c.out(), &CancelToken::new(), None);
        assert!(o.success(), "{o:?}\n{}", c.stream("h"));
        let read = |f: &str| std::fs::read_to_string(build.join(f)).unwrap();
        assert_eq!(
            (read("a.txt"), read("pr.txt")),
            ("base\n".into(), "pr\n".into())
        );
        assert_eq!(
            git_in(&build, &["rev-parse", "HEAD^1", "HEAD^2"]),
            format!("{base}\n{head}")
        );
        let merged = git_in(&build, &["rev-parse", "HEAD"]);
        assert!(c.stream("h").ends_with(&format!("got_revision={merged}\n")));
        // The same merge on another worker is the same commit.
        let c = Collect::new();
        let other = tmp.path().join("other");
        let o = run_step(&other, &spec, &c.out(), &CancelToken::new(), None);
        assert!(o.success(), "{o:?}");
        assert_eq!(git_in(&other, &["rev-parse", "HEAD"]), merged);
    }

    #[test]
    fn git_merge_conflict_fails_saying_so_and_leaves_no_merge() {
        let tmp = tempfile::tempdir().unwrap();
        let (url, base, head) = pr_repo(tmp.path(), true);
        let build = tmp.path().join("build");
        let c = Collect::new();
        let o = run_step(
            &build,
            &merge_spec(&url, &base, &head, 7),
            &c.out(),
            &CancelToken::new(),
            None,
        );
        assert!(!o.success());
        assert_eq!(
            o.reason.as_deref(),
            Some(
                format!(
                    "merge conflict: PR #7 does not merge into main ({})",
                    &base[..10]
                )
                .as_str()
            )
        );
        assert!(
            c.stream("h").contains("conflicting files: a.txt"),
            "{}",
            c.stream("h")
        );
        assert!(!build.join(".git/MERGE_HEAD").exists());
        assert_eq!(git_in(&build, &["status", "--porcelain"]), "");
    }

    #[test]
    fn git_merge_refuses_what_is_not_a_pull_request() {
        let tmp = tempfile::tempdir().unwrap();
        let (url, base, head) = pr_repo(tmp.path(), false);
        let build = tmp.path().join("build");
        let bad = [
            (merge_spec(&url, &base, &head, 0), "pull request number 0"),
            (
                merge_spec(&url, &base[..12], &head, 7),
                "not a full hex commit id",
            ),
            (
                merge_spec(&url, &base, "HEAD~1", 7),
                "not a full hex commit id",
            ),
            (
                merge_spec(&url, &"g".repeat(40), &head, 7),
                "not a full hex commit id",
            ),
        ];
        for (spec, why) in bad {
            let c = Collect::new();
            let o = run_step(&build, &spec, &c.out(), &CancelToken::new(), None);
            assert!(
                o.reason.as_deref().is_some_and(|r| r.contains(why)),
                "{o:?}"
            );
            assert!(!build.exists(), "nothing was run");
        }
        let mut no_pr = merge_spec(&url, &base, &head, 7);
        if let StepSpec::Git { pr_number, .. } = &mut no_pr {
            *pr_number = None;
        }
        let o = run_step(
            &build,
            &no_pr,
            &Collect::new().out(),
            &CancelToken::new(),
            None,
        );
        assert_eq!(
            o.reason.as_deref(),
            Some("refusing merge_into without pr_number")
        );
    }

    #[test]
    fn git_failures_are_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let build = tmp.path().join("build");
        let cancel = CancelToken::new();

        let c = Collect::new();
        let missing = format!("file://{}/nope", tmp.path().display());
        let o = run_step(
            &build,
            &git_spec(&missing, None, None, "full"),
            &c.out(),
            &cancel,
            None,
        );
        assert!(!o.success());
        assert!(o.exit_code.is_some_and(|c| c != 0), "{o:?}");
        assert!(o.reason.unwrap().contains("git fetch failed"));

        let c = Collect::new();
        let o = run_step(
            &build,
            &git_spec("/x", Some("--upload-pack=touch pwned"), None, "full"),
            &c.out(),
            &cancel,
            None,
        );
        assert!(o.reason.unwrap().contains("starts with '-'"));
        assert!(c.stream("h").contains("refusing branch"));

        let repo = tmp.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        git_in(&repo, &["init", "-q", "-b", "main"]);
        commit(&repo, "a.txt", "one\n");
        let c = Collect::new();
        let o = run_step(
            &build,
            &git_spec(
                &repo.display().to_string(),
                Some("main"),
                Some("0123456789abcdef0123456789abcdef01234567"),
                "incremental",
            ),
            &c.out(),
            &cancel,
            None,
        );
        assert!(!o.success(), "{o:?}");
    }
}
