//! Daemon plumbing shared by `minibot` (the master) and `minibot-worker`.
//!
//! Owns: pid files (exclusive, atomic, removed on drop), finding and stopping
//! a running daemon, detaching into the background and waiting for the
//! child's "ready" line, log setup (env_logger into a log file rotated by
//! size, and optionally stderr), the signal thread, and the command-line
//! front: [`parse_args`] (the bare command's list, `--version`, "did you
//! mean") and [`say`] / [`say_err`] behind `outln!` / `errln!`, which drop
//! output into a closed pipe instead of panicking.
//!
//! Threads and channels: [`signals`] starts one thread (signal-hook's
//! iterator) that forwards SIGTERM, SIGINT, SIGHUP and SIGUSR1 into the crossbeam
//! channel it returns; the daemon's main thread selects on it. [`detach`]
//! starts one short-lived thread that reads the child's first stdout line
//! into a channel so the parent can wait for it with a deadline. Nothing else
//! here keeps state.
//!
//! The libc calls it needs (kill, setsid, dup2, mallopt, malloc_trim,
//! umask) are safe functions of `sys`.

use anyhow::{anyhow, bail, Context, Result};
use crossbeam_channel::Receiver;
use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Set in the environment of a child started by [`detach`]: it tells
/// [`announce_ready`] that stdout is the pipe to the waiting parent, which
/// exits right after reading the line, so stdout and stderr must be pointed at
/// /dev/null afterwards (a later write would otherwise fail with EPIPE, and
/// `println!` would panic). Step runners remove it from their children's
/// environment so a nested minibot run inside a build is not confused.
pub(crate) const DETACHED_ENV: &str = "MINIBOT_DETACHED_CHILD";

/// A pid file we own. Dropping it removes the file, but only while it still
/// names us, so a successor's file is never deleted by a late drop.
#[derive(Debug)]
pub(crate) struct PidFile {
    path: PathBuf,
    pid: i32,
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if read_pid(&self.path) == Some(self.pid) {
            if let Err(e) = fs::remove_file(&self.path) {
                log::warn!("could not remove pid file {}: {e}", self.path.display());
            }
        }
    }
}

fn dir_of(path: &Path) -> String {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.display().to_string(),
        _ => ".".to_string(),
    }
}

/// The pid written in `path`, if the file exists and holds a positive number.
fn read_pid(path: &Path) -> Option<i32> {
    let text = fs::read_to_string(path).ok()?;
    match text.trim().parse::<i32>() {
        Ok(pid) if pid > 0 => Some(pid),
        _ => None,
    }
}

/// Whether a process with this pid exists and is not a zombie. A zombie has
/// exited (only its parent has not collected the status yet), so for "is the
/// daemon still running" it counts as gone.
pub fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    if !crate::sys::pid_exists(pid) {
        return false;
    }
    // /proc/<pid>/stat is "pid (comm) S ..."; comm may hold spaces and
    // parentheses, so the state is the first field after the last ')'.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => match stat.rfind(')') {
            Some(i) => !stat[i + 1..].trim_start().starts_with('Z'),
            None => true,
        },
        // No /proc (or it vanished between the two checks): trust kill().
        Err(_) => true,
    }
}

/// The pid named in the pid file, if that process is alive.
pub fn running_pid(path: &Path) -> Option<i32> {
    read_pid(path).filter(|&pid| pid_alive(pid))
}

/// Takes the pid file at `path` for this process. Refuses when the file
/// names a live process other than us; a stale file (dead pid, garbage) is
/// replaced, with a log line. The file is written to a temporary name and
/// hard-linked into place, which both makes the content appear atomically
/// and fails if someone else created the file in the meantime.
pub(crate) fn acquire_pid_file(path: &Path, what: &str) -> Result<PidFile> {
    let me = std::process::id() as i32;
    let dir = dir_of(path);
    let tmp = path.with_file_name(format!(
        ".{}.{me}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("pid")
    ));
    fs::write(&tmp, format!("{me}\n"))
        .with_context(|| format!("could not write pid file {}", tmp.display()))?;
    // A few rounds: retry the link only after removing a stale file.
    let result = (|| {
        for _ in 0..3 {
            match fs::hard_link(&tmp, path) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("could not create pid file {}", path.display()))
                }
            }
            match read_pid(path) {
                Some(pid) if pid != me && pid_alive(pid) => {
                    bail!("a {what} is already running in {dir} (pid {pid})")
                }
                Some(pid) if pid == me => {
                    // Left by an earlier process that had our pid (e.g.
                    // before a reboot): it is ours now.
                    log::info!("pid file {} already names us; taking it", path.display());
                }
                other => log::warn!(
                    "removing stale pid file {} ({})",
                    path.display(),
                    match other {
                        Some(pid) => format!("process {pid} is not running"),
                        None => "no valid pid in it".to_string(),
                    }
                ),
            }
            match fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("could not remove stale pid file {}", path.display())
                    })
                }
            }
        }
        bail!(
            "could not take pid file {}: it keeps reappearing",
            path.display()
        )
    })();
    let _ = fs::remove_file(&tmp);
    result?;
    Ok(PidFile {
        path: path.to_path_buf(),
        pid: me,
    })
}

/// Sends `sig` to `pid` (a negative pid addresses a process group). Refuses
/// 0 and -1, which would address our own group or every process we may
/// signal.
pub fn send_signal(pid: i32, sig: i32) -> Result<()> {
    if pid == 0 || pid == -1 {
        bail!("refusing to send signal {sig} to pid {pid}");
    }
    crate::sys::kill(pid, sig)
        .map_err(|e| anyhow!(e))
        .with_context(|| format!("could not send signal {sig} to pid {pid}"))
}

/// Stops the daemon named by `pid_path`: SIGTERM, then polls until it is
/// gone or `timeout` passes.
pub fn stop(pid_path: &Path, what: &str, timeout: Duration) -> Result<()> {
    let dir = dir_of(pid_path);
    let Some(pid) = running_pid(pid_path) else {
        bail!("no {what} is running in {dir}");
    };
    send_signal(pid, libc::SIGTERM)?;
    let deadline = Instant::now() + timeout;
    while pid_alive(pid) {
        if Instant::now() >= deadline {
            bail!(
                "the {what} in {dir} (pid {pid}) did not stop within {} seconds of SIGTERM",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// The last `n` lines of `path` written at or after byte `from`.
fn tail_since(path: &Path, from: u64, n: usize) -> String {
    let Ok(mut f) = fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    // The file may have been rotated or truncated: then show its end.
    let start = if from <= len {
        from.max(len.saturating_sub(64 * 1024))
    } else {
        len.saturating_sub(64 * 1024)
    };
    if f.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Starts the current executable again with `args` as a daemon (new session,
/// stdin on /dev/null, stdout and stderr pipes) and waits for its ready
/// line, which it returns. If the child exits or `ready_timeout` passes
/// first, the error names `log_hint` and quotes what the child logged there,
/// or failing that what it wrote on stderr (an error before its log was
/// open). Once ready, the child points stdout and stderr at /dev/null
/// ([`announce_ready`]), so it holds nothing of ours.
pub fn detach(args: Vec<OsString>, ready_timeout: Duration, log_hint: &Path) -> Result<String> {
    let exe = std::env::current_exe().context("could not find the path of this program")?;
    let log_start = fs::metadata(log_hint).map(|m| m.len()).unwrap_or(0);
    let mut cmd = Command::new(&exe);
    cmd.args(&args)
        .env(DETACHED_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    crate::sys::detach_on_exec(&mut cmd);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not start {}", exe.display()))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("child has no stdout pipe"))?;
    // Drain stderr while waiting (a full pipe would block the child) and
    // keep its end for the error message.
    let stderr_tail = child.stderr.take().map(|mut err| {
        std::thread::spawn(move || {
            let mut keep: Vec<u8> = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                keep.extend_from_slice(&buf[..n]);
                if keep.len() > 8192 {
                    keep.drain(..keep.len() - 8192);
                }
            }
            String::from_utf8_lossy(&keep).trim().to_string()
        })
    });
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let mut line = String::new();
        let r = BufReader::new(stdout).read_line(&mut line);
        // Ok(0) is EOF: the child closed stdout (usually: exited) unready.
        let _ = tx.send(match r {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(line),
        });
    });
    // Called once the child is gone (or killed), so stderr is at EOF.
    let log_tail = move |n| {
        let t = tail_since(log_hint, log_start, n);
        if !t.is_empty() {
            return format!("; its last log lines:\n{t}");
        }
        match stderr_tail.map(|h| h.join()) {
            Some(Ok(e)) if !e.is_empty() => format!("; it said:\n{e}"),
            _ => String::new(),
        }
    };
    match rx.recv_timeout(ready_timeout) {
        Ok(Some(line)) => Ok(line.trim_end().to_string()),
        Ok(None) | Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
            // Give it a moment to finish exiting so the status is known.
            let deadline = Instant::now() + Duration::from_secs(2);
            let mut status = None;
            while Instant::now() < deadline {
                if let Ok(Some(s)) = child.try_wait() {
                    status = Some(s);
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let how = match status {
                Some(s) => format!("exited ({s})"),
                None => "closed its output".to_string(),
            };
            bail!(
                "the daemon {how} before it was ready; see {}{}",
                log_hint.display(),
                log_tail(20)
            )
        }
        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
            // Leave nothing half-started behind while telling the user it
            // failed: kill it (its pid file, if any, is then stale).
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "the daemon did not report ready within {} seconds and was killed; see {}{}",
                ready_timeout.as_secs(),
                log_hint.display(),
                log_tail(20)
            )
        }
    }
}

/// Prints the ready line on stdout and flushes it. Write errors are ignored:
/// the reader may be gone. In a child started by [`detach`], stdout and
/// stderr are then pointed at /dev/null (see [`DETACHED_ENV`]).
pub(crate) fn announce_ready(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    if std::env::var_os(DETACHED_ENV).is_some() {
        let _ = std::io::stderr().flush();
        if let Ok(null) = fs::OpenOptions::new().write(true).open("/dev/null") {
            crate::sys::stdout_stderr_to(&null);
        }
    }
}

/// How a daemon's own log (`master.log`, `worker.log`) is written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LogOptions {
    /// env_logger filter used when `RUST_LOG` is not set.
    pub level: String,
    /// The file is rotated before a record would take it past this size.
    pub rotate_length: u64,
    /// Rotated files kept: `<file>.1` (newest) to `<file>.<n>`.
    pub max_rotated_files: u32,
}

impl Default for LogOptions {
    /// 10 MB × (1 + 5): at most ~60 MB per daemon, whatever its uptime.
    fn default() -> Self {
        LogOptions {
            level: "info".into(),
            rotate_length: 10_000_000,
            max_rotated_files: 5,
        }
    }
}

/// Where log records go: the log file and, optionally, stderr. Every record
/// is written in one `write` to the file, which is opened in append mode, so
/// lines from threads never interleave (env_logger formats a record into
/// one buffer and writes it under its lock).
///
/// Rotation by size happens here, between two records: the file is renamed
/// to `<name>.1` (older ones shift up, the oldest beyond the limit is
/// deleted) and a new file is opened. We are the file's only writer (the
/// pid file guarantees one daemon per directory), so renaming is safe and
/// nothing is lost or copied.
struct LogSink {
    file: fs::File,
    path: PathBuf,
    written: u64,
    also_stderr: bool,
    rotate_length: u64,
    keep: u32,
}

impl LogSink {
    fn open(path: &Path, also_stderr: bool, opts: &LogOptions) -> Result<LogSink> {
        let file = open_append(path)?;
        let written = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(LogSink {
            file,
            path: path.to_path_buf(),
            written,
            also_stderr,
            rotate_length: opts.rotate_length,
            keep: opts.max_rotated_files,
        })
    }

    /// `<name>.<n>`: the n-th most recent rotated file.
    fn rotated(&self, n: u32) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> Result<()> {
        let rename = |from: &Path, to: &Path| match fs::rename(from, to) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(anyhow!(e)).with_context(|| {
                    format!("could not rename {} to {}", from.display(), to.display())
                })
            }
            _ => Ok(()),
        };
        // Files beyond `keep` (left over when the setting was lowered) go
        // first; renaming .keep-1 onto .keep then replaces the oldest.
        let mut n = self.keep + 1;
        while n <= 1000 && fs::remove_file(self.rotated(n)).is_ok() {
            n += 1;
        }
        if self.keep == 0 {
            fs::remove_file(&self.path)
                .with_context(|| format!("could not remove {}", self.path.display()))?;
        } else {
            for i in (1..self.keep).rev() {
                rename(&self.rotated(i), &self.rotated(i + 1))?;
            }
            rename(&self.path, &self.rotated(1))?;
        }
        self.file = open_append(&self.path)?;
        self.written = 0;
        Ok(())
    }
}

/// Opens a daemon log for appending: created 0600 (it names workers,
/// repositories and errors that may quote secrets), and an older install's
/// 0644 file is tightened.
fn open_append(path: &Path) -> Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("could not open log file {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    let mode = f
        .metadata()
        .with_context(|| format!("cannot stat {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        f.set_permissions(fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot chmod 600 {}", path.display()))?;
    }
    Ok(f)
}

impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let would_be = self.written + buf.len() as u64;
        if self.written > 0 && would_be > self.rotate_length {
            if let Err(e) = self.rotate() {
                // Keep logging into the current file rather than lose
                // records; try again after another rotate_length bytes.
                let _ = writeln!(std::io::stderr(), "log rotation failed: {e:#}");
                self.written = 0;
            }
        }
        self.file.write_all(buf)?;
        self.written += buf.len() as u64;
        if self.also_stderr {
            // stderr may be closed (a detached daemon has /dev/null, a
            // supervisor may go away): never fail logging because of it.
            let _ = std::io::stderr().write_all(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// [`init_logging_with`] with the default [`LogOptions`] (level info,
/// 10 MB × 5 rotated files).
pub(crate) fn init_logging(log_file: &Path, also_stderr: bool) -> Result<()> {
    init_logging_with(log_file, also_stderr, &LogOptions::default())
}

/// Sets up `log` for the whole process: level from `RUST_LOG`, else
/// `opts.level`; timestamped lines appended to `log_file`, rotated by size,
/// and, if `also_stderr`, copied to stderr. Can be called once per process.
pub(crate) fn init_logging_with(
    log_file: &Path,
    also_stderr: bool,
    opts: &LogOptions,
) -> Result<()> {
    let sink = LogSink::open(log_file, also_stderr, opts)?;
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(&opts.level))
        .format(|buf, record| {
            writeln!(
                buf,
                "{} {:<5} {}: {}",
                buf.timestamp_millis(),
                record.level(),
                record.target(),
                record.args()
            )
        })
        .write_style(env_logger::WriteStyle::Never)
        .target(env_logger::Target::Pipe(Box::new(sink)))
        .try_init()
        .context("could not set up logging (already set up?)")
}

/// Catches SIGTERM, SIGINT, SIGHUP and SIGUSR1 (the master's `stop
/// --clean`); read them with `forever()` on a thread that has nothing else
/// to wait for (the master's main thread). Registering replaces the default
/// action (dying), so the caller must act on what it receives.
pub(crate) fn signal_set() -> Result<signal_hook::iterator::Signals> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
    signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1])
        .context("could not install signal handlers")
}

/// [`signal_set`] forwarded by a thread into the returned channel, for
/// loops that wait on other channels too.
pub(crate) fn signals() -> Result<Receiver<i32>> {
    let mut sigs = signal_set()?;
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in sigs.forever() {
                if tx.send(sig).is_err() {
                    break;
                }
            }
        })
        .context("could not start the signal thread")?;
    Ok(rx)
}

/// glibc gives each thread that allocates its own malloc arena (up to 8 per
/// core), and each keeps what it once held; a daemon of many mostly idle
/// threads needs two. Saves ~0.5 MB of RSS (docs/performance.md).
pub(crate) fn limit_malloc_arenas() {
    crate::sys::malloc_arena_max(2);
}

#[cfg(feature = "master")]
/// Hands glibc's free heap pages back to the kernel. By itself glibc
/// returns freed memory only from the top of the main heap, past a
/// threshold; what a burst of work freed elsewhere stays resident until it
/// is reused. `malloc_trim` also gives back every whole free page inside
/// the arenas. It cannot reach the chunks a thread keeps in its own cache
/// (tcache: up to 7 per size class, counted as in use), so the pages those
/// pin stay: after 10,000 builds ~0.9 MB more than without the caches
/// (docs/performance.md, "an ordinary build"). Takes well under 1 ms, with
/// each arena's lock held while it walks it: for quiet moments only (the
/// botmaster calls it once the master has gone idle after builds).
pub(crate) fn release_free_heap() {
    crate::sys::malloc_trim();
}

/// A `Key:   value kB` field of `/proc/<pid>/status` (`pid` "self" for
/// this process): VmRSS, RssAnon, VmHWM, Threads. `None` where `/proc`
/// does not say.
pub fn proc_status_field(pid: &str, key: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(feature = "master")]
/// This process's resident anonymous memory (`RssAnon`), in kB. For log
/// lines about memory given back.
pub(crate) fn anon_rss_kb() -> Option<u64> {
    proc_status_field("self", "RssAnon")
}

/// Parses the command line with argh, with our exit codes: `--help` prints
/// to stdout and exits 0, a usage error prints to stderr and exits 2
/// (`argh::from_env` would exit 1, which we keep for user errors).
pub fn parse_args<T: argh::FromArgs>(prog: &str) -> T {
    let mut argv = Vec::new();
    for a in std::env::args_os() {
        match a.into_string() {
            Ok(s) => argv.push(s),
            Err(a) => {
                errln!("{prog}: argument {a:?} is not valid UTF-8");
                std::process::exit(2);
            }
        }
    }
    let cmd = argv
        .first()
        .and_then(|s| Path::new(s).file_name().and_then(|n| n.to_str()))
        .unwrap_or(prog)
        .to_string();
    let rest: Vec<&str> = argv.iter().skip(1).map(|s| s.as_str()).collect();
    match rest.as_slice() {
        ["--version" | "-V" | "version"] => {
            outln!("{}", version(prog));
            std::process::exit(0);
        }
        // The bare command: what it can do, each command with its line.
        [] => {
            let help = with_version_option(&help_text::<T>(&cmd));
            errln!("{help}");
            std::process::exit(2);
        }
        _ => {}
    }
    match T::from_args(&[&cmd], &rest) {
        Ok(a) => a,
        Err(early) => match early.status {
            Ok(()) => {
                // `--version` is handled above, outside argh: the top
                // level's help names it, so nobody has to guess it.
                let help = match rest.as_slice() {
                    ["--help" | "help"] => with_version_option(&early.output),
                    _ => early.output,
                };
                outln!("{help}");
                std::process::exit(0);
            }
            Err(()) => {
                let first = rest.first().copied().unwrap_or("");
                let commands = command_names(&help_text::<T>(&cmd));
                let unknown_command = !first.starts_with('-')
                    && !commands.is_empty()
                    && !commands.iter().any(|c| c == first);
                if unknown_command {
                    let hint = match closest(first, &commands) {
                        Some(c) => format!(" (did you mean `{c}`?)"),
                        None => String::new(),
                    };
                    errln!(
                        "{prog}: unknown command `{first}`{hint}; the commands are: {}",
                        commands.join(", ")
                    );
                    errln!("{prog}: `{prog} help` says what each one does");
                } else {
                    for line in early.output.trim_end().lines() {
                        errln!("{prog}: {}", line.trim());
                    }
                    let sub = rest.iter().take_while(|a| !a.starts_with('-')).take(2);
                    let sub: Vec<&str> = sub
                        .copied()
                        .filter(|a| commands.iter().any(|c| c == a))
                        .collect();
                    errln!("{prog}: see `{prog} {} --help`", sub.join(" "));
                }
                std::process::exit(2);
            }
        },
    }
}

/// "minibot 0.1.0 (git 327037a1b2c3)": the package version, and the commit
/// when it was built from a git checkout (`build.rs`).
pub fn version(prog: &str) -> String {
    match option_env!("MINIBOT_GIT_COMMIT") {
        Some(c) => format!("{prog} {} (git {c})", env!("CARGO_PKG_VERSION")),
        None => format!("{prog} {}", env!("CARGO_PKG_VERSION")),
    }
}

/// The top-level help with `--version` among its options, after argh's
/// `--help` line (argh knows nothing of `--version`: `parse_args` answers
/// it before argh sees the arguments).
fn with_version_option(help: &str) -> String {
    let mut out = String::with_capacity(help.len() + 80);
    for line in help.lines() {
        out.push_str(line);
        out.push('\n');
        if line.trim_start().starts_with("--help, help") {
            out.push_str("  --version         the version, and the git commit it was built from\n");
        }
    }
    out.truncate(out.trim_end().len());
    out
}

/// argh's `--help` text for the top-level command.
fn help_text<T: argh::FromArgs>(cmd: &str) -> String {
    match T::from_args(&[cmd], &["--help"]) {
        Err(early) => early.output,
        Ok(_) => String::new(),
    }
}

/// The subcommand names of argh's help text (the lines under "Commands:").
fn command_names(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        // Continuation lines of a long description are indented further.
        .filter(|l| !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The command `typed` was most likely meant to be: one or two edits away
/// (a swap of neighbours counts as one), or a prefix of exactly one.
fn closest(typed: &str, names: &[String]) -> Option<String> {
    let best = names
        .iter()
        .map(|n| (edit_distance(typed, n), n))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((d, n)) if d <= 2 && d < n.len() => Some(n.clone()),
        _ => {
            let prefixed: Vec<&String> = names.iter().filter(|n| n.starts_with(typed)).collect();
            match prefixed.as_slice() {
                [one] if !typed.is_empty() => Some((*one).clone()),
                _ => None,
            }
        }
    }
}

/// Edits (insert, delete, substitute, swap two neighbours) from `a` to `b`:
/// swapped letters are the commonest typo, so they count as one. For the
/// "did you mean" of commands here and of config keys (`config::problems`).
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// Writes one line to stdout. A closed pipe (`minibot demo | head -1`, a
/// `tee` ended by Ctrl-C) is not an error worth dying for: `println!` would
/// panic there and abort the process (exit 134) with its children still
/// running, so command-line output goes through this and drops what cannot
/// be written.
pub fn say(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{args}");
    let _ = out.flush();
}

/// [`say`] for stderr.
pub fn say_err(args: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr().lock(), "{args}");
}

/// Makes `dir` ready to be filled by a create-* command: created if
/// missing (mode 0700), refused if it holds anything unless `force`. An
/// existing directory is made 0700 too: it is about to hold secrets.
pub fn create_dir_for(dir: &Path, force: bool) -> Result<()> {
    if dir.exists() {
        if !dir.is_dir() {
            bail!("{} exists and is not a directory", dir.display());
        }
        let non_empty = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .next()
            .is_some();
        if non_empty && !force {
            bail!(
                "{} is not empty (use --force to use it anyway)",
                dir.display()
            );
        }
    }
    create_private_dir(dir)?;
    tighten_dir(dir)?;
    Ok(())
}

/// The umask both daemons and the create-* commands run with: on a shared
/// host every other local account is a possible attacker, so nothing we
/// create (logs, database, checkouts, configs) may be readable by them.
pub(crate) const PRIVATE_UMASK: u32 = 0o077;

/// Sets the process umask to [`PRIVATE_UMASK`]. Inherited across exec, so
/// setting it at the start of `start` also covers the detached child and
/// the build steps (unless worker.cfg sets a `umask` of its own for them).
pub fn private_umask() {
    crate::sys::set_umask(PRIVATE_UMASK);
}

/// Permission bits (0o777 part) of `path`, following symlinks.
pub(crate) fn mode_of(path: &Path) -> Result<u32> {
    use std::os::unix::fs::PermissionsExt;
    let m = fs::metadata(path).with_context(|| format!("cannot stat {}", path.display()))?;
    Ok(m.permissions().mode() & 0o777)
}

/// chmod 0700 `dir` if group or others have any access to it. Only the
/// directory itself: for an existing install a private top-level directory
/// already keeps everyone else out of the whole tree, and walking a large
/// tree (build logs, checkouts) on every start would cost for nothing.
/// Returns the old mode when it was changed.
pub fn tighten_dir(dir: &Path) -> Result<Option<u32>> {
    use std::os::unix::fs::PermissionsExt;
    let mode = mode_of(dir)?;
    if mode & 0o077 == 0 {
        return Ok(None);
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot chmod 700 {}", dir.display()))?;
    Ok(Some(mode))
}

/// chmod 0600 `file` if it exists and group or others have any access to
/// it (an older install's database or log). Returns the old mode when it
/// was changed.
pub fn tighten_file(file: &Path) -> Result<Option<u32>> {
    use std::os::unix::fs::PermissionsExt;
    let mode = match fs::metadata(file) {
        Ok(m) => m.permissions().mode() & 0o777,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot stat {}", file.display())),
    };
    if mode & 0o077 == 0 {
        return Ok(None);
    }
    fs::set_permissions(file, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot chmod 600 {}", file.display()))?;
    Ok(Some(mode))
}

/// Refuses a config file holding a secret (`what`: e.g. "the worker's
/// password") when group or others may read or write it, as ssh refuses a
/// private key. Not fixed silently: the secret may already have leaked, and
/// the user should know (and change it).
pub(crate) fn check_private_file(path: &Path, what: &str) -> Result<()> {
    let mode = mode_of(path)?;
    if mode & 0o077 != 0 {
        bail!(
            "{} holds {what} but group or others may access it (mode {mode:03o}); \
             run `chmod 600 {}` (and change the secret if others could have read it)",
            path.display(),
            path.display()
        );
    }
    Ok(())
}

/// Creates `dir` (and missing parents) with mode 0700; an existing `dir`
/// is left as it is. The mode is given to mkdir itself, so the directory
/// is never open to others even for a moment, whatever the umask.
pub(crate) fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dead_pid() -> i32 {
        // A child we have reaped: its pid is free (reuse within the test is
        // vanishingly unlikely).
        let mut c = Command::new("true").spawn().unwrap();
        let pid = c.id() as i32;
        c.wait().unwrap();
        pid
    }

    #[test]
    fn pid_file_fresh_stale_and_alive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.pid");

        // Fresh.
        let pf = acquire_pid_file(&path, "thing").unwrap();
        assert_eq!(read_pid(&path), Some(std::process::id() as i32));
        assert_eq!(running_pid(&path), Some(std::process::id() as i32));
        drop(pf);
        assert!(!path.exists(), "pid file removed on drop");

        // Stale: a dead pid, then garbage.
        fs::write(&path, format!("{}\n", dead_pid())).unwrap();
        assert_eq!(running_pid(&path), None);
        let pf = acquire_pid_file(&path, "thing").unwrap();
        assert_eq!(read_pid(&path), Some(std::process::id() as i32));
        drop(pf);
        fs::write(&path, "not a pid").unwrap();
        let pf = acquire_pid_file(&path, "thing").unwrap();
        drop(pf);

        // Alive: a sleeping child.
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        fs::write(&path, format!("{pid}\n")).unwrap();
        let err = acquire_pid_file(&path, "thing").unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "a thing is already running in {}",
                dir.path().display()
            )) && err.contains(&format!("(pid {pid})")),
            "{err}"
        );
        assert_eq!(read_pid(&path), Some(pid), "a live daemon's file is kept");
        child.kill().unwrap();
        child.wait().unwrap();
        let _ = fs::remove_file(&path);
    }

    #[test]
    fn drop_keeps_a_successors_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.pid");
        let pf = acquire_pid_file(&path, "thing").unwrap();
        fs::write(&path, "12345\n").unwrap();
        drop(pf);
        assert!(path.exists());
    }

    #[test]
    fn stop_signals_and_waits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.pid");
        let err = stop(&path, "thing", Duration::from_secs(1)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("no thing is running in {}", dir.path().display())
        );

        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        fs::write(&path, format!("{}\n", child.id())).unwrap();
        // The child becomes a zombie (we are its parent and have not waited
        // yet); pid_alive counts that as stopped.
        stop(&path, "thing", Duration::from_secs(10)).unwrap();
        child.wait().unwrap();

        // A process ignoring SIGTERM: the timeout error.
        let mut child = Command::new("sh")
            .args(["-c", "trap '' TERM; echo ready; sleep 30"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        fs::write(&path, format!("{}\n", child.id())).unwrap();
        let err = stop(&path, "thing", Duration::from_millis(300))
            .unwrap_err()
            .to_string();
        assert!(err.contains("did not stop"), "{err}");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn send_signal_refuses_broadcast() {
        assert!(send_signal(0, libc::SIGTERM).is_err());
        assert!(send_signal(-1, libc::SIGTERM).is_err());
        assert!(send_signal(dead_pid(), 0).is_err());
    }

    fn sink(path: &Path, rotate_length: u64, keep: u32) -> LogSink {
        let opts = LogOptions {
            level: "info".into(),
            rotate_length,
            max_rotated_files: keep,
        };
        LogSink::open(path, false, &opts).unwrap()
    }

    #[test]
    fn log_rotates_by_size_and_keeps_a_few() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("master.log");
        let mut s = sink(&log, 100, 3);
        // 40 records of 25 bytes: 4 per file (100 bytes), so 10 files' worth.
        for i in 0..40 {
            s.write_all(format!("record {i:03} .............\n").as_bytes())
                .unwrap();
        }
        let read = |p: &Path| fs::read_to_string(p).unwrap();
        assert_eq!(read(&log).lines().count(), 4);
        assert!(read(&log).starts_with("record 036"), "{}", read(&log));
        assert!(read(&s.rotated(1)).starts_with("record 032"));
        assert!(read(&s.rotated(3)).starts_with("record 024"));
        assert!(!s.rotated(4).exists(), "only 3 rotated files are kept");
        for n in 1..=3 {
            assert!(fs::metadata(s.rotated(n)).unwrap().len() <= 100);
        }
        // Records are never split across files.
        assert!(read(&s.rotated(2)).ends_with('\n'));

        // A daemon restarted on a big file rotates at its first record, and
        // a lowered limit removes the files beyond it.
        drop(s);
        let mut s = sink(&log, 50, 1);
        s.write_all(b"after restart\n").unwrap();
        assert_eq!(read(&log), "after restart\n");
        assert!(read(&s.rotated(1)).starts_with("record 036"));
        assert!(!s.rotated(2).exists() && !s.rotated(3).exists());

        // keep = 0: the full file is simply dropped.
        let mut s = sink(&log, 20, 0);
        s.write_all(b"0123456789abcdef\n").unwrap();
        s.write_all(b"next\n").unwrap();
        assert_eq!(read(&log), "next\n");
        assert!(!s.rotated(1).exists());
    }

    #[test]
    fn log_rotation_failure_keeps_logging() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("worker.log");
        let mut s = sink(&log, 10, 1);
        s.write_all(b"first line\n").unwrap();
        // A directory where the rotated file must go: the rename fails.
        fs::create_dir(s.rotated(1)).unwrap();
        fs::write(s.rotated(1).join("x"), "").unwrap();
        s.write_all(b"second line\n").unwrap();
        assert_eq!(
            fs::read_to_string(&log).unwrap(),
            "first line\nsecond line\n"
        );
    }

    #[test]
    fn tail_shows_only_new_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        fs::write(&p, "old 1\nold 2\n").unwrap();
        let from = fs::metadata(&p).unwrap().len();
        let mut f = fs::OpenOptions::new().append(true).open(&p).unwrap();
        writeln!(f, "new 1\nnew 2\nnew 3").unwrap();
        assert_eq!(tail_since(&p, from, 2), "new 2\nnew 3");
        assert_eq!(tail_since(&p, from, 10), "new 1\nnew 2\nnew 3");
        assert_eq!(tail_since(&dir.path().join("missing"), 0, 3), "");
    }
}
