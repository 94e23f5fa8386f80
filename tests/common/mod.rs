//! Shared helpers for the end-to-end tests: temp dirs, masters on port 0
//! (the ports they bound read back from `addresses.json`), real processes
//! that are killed when dropped, real git repositories, `curl` for HTTP (as
//! users do), and polling with deadlines instead of sleeps. Also compiled
//! into `benches/bench.rs` (`#[path]`): keep it where it is.
#![allow(dead_code)]

/// The headless-Chromium (DevTools) harness of the browser tests.
pub mod browser;
pub mod fake_gitea;
pub mod fake_oauth;

use hmac::{Hmac, KeyInit, Mac};
use minibot::protocol::{self, FromWorker, ToWorker};
// For the tests' `status.json` checks; the bench compiles this file too
// and needs fewer of them.
#[allow(unused_imports)]
pub use minibot::master::status::{IdleRelease, MasterState, MasterStatus};
use sha2::Sha256;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub const MINIBOT: &str = env!("CARGO_BIN_EXE_minibot");
pub const WORKER: &str = env!("CARGO_BIN_EXE_minibot-worker");
pub const SECRET: &str = "fixture-secret";
/// The workers' passwords in [`Setup::new`]'s master.cfg: as long as
/// `create-worker` requires (12 characters) without `--allow-weak-password`.
pub const WORKER_PW: &str = "fixture-password-1";
pub const WORKER2_PW: &str = "fixture-password-2";
/// The base dialect's secret in [`Setup::new`]'s master.cfg: a hook must be
/// signed (issue 14), see [`post_base`].
pub const BASE_SECRET: &str = "base-dialect-secret";

/// A port that was free a moment ago (bind 0, read it, release it): racy,
/// another test may take it before it is used. Only for programs that
/// cannot listen on port 0 and report the port (sshd, `ssh -L`); the master
/// (`port = 0`, [`master_addresses`]), the fake Gitea and the SMTP sink
/// bind 0 themselves.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// A name no other call in this test process returns (for files such as
/// cookie jars).
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// Whether a test that needs `what` may run. A missing program skips the
/// test visibly: `skipped: <what> is missing: <install command>` goes
/// straight to stderr (not through the test harness's capture, so it shows
/// in the `cargo test` output beside the test's name), the test returns
/// early, and the skip is counted in the summary printed when the test
/// program ends ([`skip_summary`]); so `cargo test` works on a machine with
/// only the toolchain, and says at its end what it did not test. With `CI`
/// set (.ci/run installs everything) a missing program FAILS the test
/// instead: nothing is skipped there. `MINIBOT_SKIP_<KEY>=1`
/// ([`capability`] names the key) skips the tests of a program that is
/// present. The one copy of this rule: [`require_program`] and the tests
/// call it.
pub fn require(what: &str, present: bool) -> bool {
    match skip_reason(what, present) {
        None => true,
        Some(why) => {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "skipped: {why}");
            note_skip(&why);
            false
        }
    }
}

/// Why a test that needs `what` is skipped (None: it runs); panics under
/// `CI`, where nothing may be skipped.
fn skip_reason(what: &str, present: bool) -> Option<String> {
    let (key, install) = capability(what);
    let var = format!("MINIBOT_SKIP_{key}");
    let skip_asked = std::env::var(&var).is_ok_and(|v| v == "1");
    if present && !skip_asked {
        return None;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{what} is missing or skipped; .ci/run should have installed it (CI is set, so this test may not be skipped, {var} or not)");
    }
    Some(if present {
        format!("{var}=1")
    } else {
        format!("{what} is missing: {install} (or set {var}=1)")
    })
}

/// The tests skipped so far in this test program: (test, why).
static SKIPS: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

/// Records a skip for [`skip_summary`], which the first skip arranges to
/// run when the test program exits: after the harness's own "test result"
/// line, so the last thing `cargo test` says about this program is what
/// it did not test. (The harness counts a skipped test as passed and has
/// no hook of its own at its end.)
fn note_skip(why: &str) {
    static AT_EXIT: std::sync::Once = std::sync::Once::new();
    // The harness names each test's thread after the test.
    let test = std::thread::current()
        .name()
        .unwrap_or("(a test)")
        .to_string();
    SKIPS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((test, why.to_string()));
    AT_EXIT.call_once(|| {
        // SAFETY: `skip_summary` is an `extern "C" fn()` that neither
        // unwinds (it catches nothing that could panic: a poisoned lock is
        // taken as it is, write errors are ignored) nor calls `exit`.
        unsafe {
            libc::atexit(skip_summary);
        }
    });
}

/// Printed on stderr when the test program exits, if any test was
/// skipped: how many, which, and what to install (README, "Running the
/// tests").
extern "C" fn skip_summary() {
    use std::io::Write;
    let skips = SKIPS.lock().unwrap_or_else(|e| e.into_inner());
    if skips.is_empty() {
        return;
    }
    let mut text = format!(
        "\nSKIPPED: {} test(s) passed without testing anything, for want of a program \
         (README.md, \"Running the tests\"):\n",
        skips.len()
    );
    let mut sorted: Vec<&(String, String)> = skips.iter().collect();
    sorted.sort();
    for (test, why) in sorted {
        text.push_str(&format!("  {test}: {why}\n"));
    }
    let _ = std::io::stderr().write_all(text.as_bytes());
}

/// The skip key (`MINIBOT_SKIP_<KEY>`) and the install command for what
/// [`require`] was asked about. One key per package, so that one variable
/// skips, say, every test needing OpenSSH; the README's "Running the tests"
/// lists the same commands, and .ci/run installs the same packages.
pub fn capability(what: &str) -> (String, &'static str) {
    let w = what.to_ascii_lowercase();
    let known: Option<(&str, &'static str)> = if w.starts_with("root") || w.contains("tmpfs") {
        Some(("ROOT", "run the tests as root (CI does)"))
    } else if w.contains("aiosmtpd") {
        Some((
            "AIOSMTPD",
            "install it for /usr/bin/python3: `apt-get install python3-aiosmtpd`",
        ))
    } else if w.contains("chromium") {
        Some(("CHROMIUM", "install it: `apt-get install chromium`"))
    } else if w.contains("supervisor") {
        Some((
            "SUPERVISOR",
            "install it: `python3 -m pip install supervisor` (as .ci/run does)",
        ))
    } else if w.contains("ssh") {
        Some((
            "OPENSSH",
            "install it: `apt-get install openssh-server openssh-client`",
        ))
    } else if w.contains("setpriv") || w.contains("prlimit") {
        Some(("UTIL_LINUX", "install it: `apt-get install util-linux`"))
    } else if w.contains("openssl") {
        Some(("OPENSSL", "install it: `apt-get install openssl`"))
    } else {
        None
    };
    match known {
        Some((key, install)) => (key.to_string(), install),
        None => {
            let first = w.split_whitespace().next().unwrap_or("");
            let base = first.rsplit('/').next().unwrap_or(first);
            let key = base
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_uppercase()
                    } else {
                        '_'
                    }
                })
                .collect();
            (key, "install it")
        }
    }
}

/// The tests are one program, so tests of every module run at once (up to
/// one per core). The few that bound how fast the master answers under an
/// attack take [`run_alone`]: they start once the tests running a master
/// ([`Setup`] holds a share of this gate) are done, and none starts while
/// they run. No timing luck from whatever else the suite is doing.
struct Gate {
    shared: usize,
    exclusive: bool,
    waiting: usize,
}

static GATE: std::sync::Mutex<Gate> = std::sync::Mutex::new(Gate {
    shared: 0,
    exclusive: false,
    waiting: 0,
});
static GATE_CHANGED: std::sync::Condvar = std::sync::Condvar::new();

thread_local! {
    /// Shares (or the exclusive hold) this thread has: a test with two
    /// `Setup`s, or a `run_alone` test's own `Setup`, takes no second one.
    static GATE_HELD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// A hold on the gate; released when dropped.
pub struct GateGuard {
    /// Taken inside another hold of this thread: only counted.
    nested: bool,
    exclusive: bool,
}

fn gate_acquire(exclusive: bool) -> GateGuard {
    let held = GATE_HELD.with(|h| h.get());
    GATE_HELD.with(|h| h.set(held + 1));
    if held > 0 {
        return GateGuard {
            nested: true,
            exclusive: false,
        };
    }
    let mut g = GATE.lock().unwrap_or_else(|e| e.into_inner());
    if exclusive {
        g.waiting += 1;
        while g.exclusive || g.shared > 0 {
            g = GATE_CHANGED.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        g.waiting -= 1;
        g.exclusive = true;
    } else {
        while g.exclusive || g.waiting > 0 {
            g = GATE_CHANGED.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        g.shared += 1;
    }
    GateGuard {
        nested: false,
        exclusive,
    }
}

impl Drop for GateGuard {
    fn drop(&mut self) {
        GATE_HELD.with(|h| h.set(h.get().saturating_sub(1)));
        if self.nested {
            return;
        }
        let mut g = GATE.lock().unwrap_or_else(|e| e.into_inner());
        if self.exclusive {
            g.exclusive = false;
        } else {
            g.shared -= 1;
        }
        GATE_CHANGED.notify_all();
    }
}

/// For a test that starts a master without [`Setup`] (which takes this
/// itself): a share of the gate, so a [`run_alone`] test is not timed
/// while this master runs.
pub fn run_shared() -> GateGuard {
    gate_acquire(false)
}

/// For a test that asserts how fast the master answers: waits until no
/// other test runs a master, and keeps new ones from starting until the
/// guard is dropped (hold it for the whole test: `let _alone = run_alone();`).
pub fn run_alone() -> GateGuard {
    gate_acquire(true)
}

/// Polls `f` until it returns Some, or panics with `what` at the deadline.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The program run for `bin`: `bin` itself, except that with
/// `MINIBOT_BIN_DIR` set (e.g. `target/release`, relative to the
/// package) the two minibot binaries ([`MINIBOT`], [`WORKER`]) are the
/// ones of the same name in that directory. So the timing tests can
/// measure the release build (`scripts/measure-ui`); everything started
/// through [`run`], [`start_daemon`] and [`minibot_user`] follows it.
pub fn program(bin: &str) -> PathBuf {
    match std::env::var_os("MINIBOT_BIN_DIR") {
        Some(dir) if bin == MINIBOT || bin == WORKER => {
            let name = Path::new(bin).file_name().expect("a binary's file name");
            let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir).join(name);
            assert!(p.is_file(), "MINIBOT_BIN_DIR: no {}", p.display());
            p
        }
        _ => PathBuf::from(bin),
    }
}

pub fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(program(cmd))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"))
}

pub fn run_ok(cmd: &str, args: &[&str]) -> String {
    let out = run(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.org")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.org")
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A repository with the guide's hello-world test; returns its head sha.
pub fn make_repo(dir: &Path, test_body: &str) -> String {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "-q", "-b", "master"]);
    std::fs::write(dir.join("test_hello.py"), test_body).unwrap();
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", "hello world"]);
    git(dir, &["rev-parse", "HEAD"])
}

pub const PASSING_TEST: &str = "print('hello from test_hello')\nassert 1 + 1 == 2\nprint('OK')\n";

/// A child process killed (and reaped) when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on a pid we spawned and have not reaped yet.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }
    /// Waits for the process to exit and returns its status code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let name = self.name.clone();
        let child = &mut self.child;
        let st = wait_for(&format!("{name} to exit"), timeout, || {
            child.try_wait().ok().flatten()
        });
        st.code()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a `--nodaemon` daemon and waits for its ready line on stdout.
pub fn start_daemon(bin: &str, args: &[&str], name: &str) -> (Proc, String) {
    start_daemon_env(bin, args, name, &[("RUST_LOG", "debug")])
}

/// As [`start_daemon`], with these environment variables instead of the
/// tests' debug logging (the benchmark runs daemons as users do).
pub fn start_daemon_env(
    bin: &str,
    args: &[&str],
    name: &str,
    env: &[(&str, &str)],
) -> (Proc, String) {
    let mut child = Command::new(program(bin))
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("{name} printed no ready line"));
    (
        Proc {
            child,
            name: name.to_string(),
        },
        line,
    )
}

pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    m.update(body);
    hex::encode(m.finalize().into_bytes())
}

/// (status, body) of a curl request.
pub fn curl(args: &[&str]) -> (u16, String) {
    let mut full = vec!["-s", "-o", "-", "-w", "\n%{http_code}"];
    full.extend_from_slice(args);
    let out = run_ok("curl", &full);
    let (body, code) = out.rsplit_once('\n').expect("curl output");
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The status line and headers of a curl request (the body is dropped).
pub fn curl_headers(args: &[&str]) -> String {
    let mut full = vec!["-s", "-D", "-", "-o", "/dev/null"];
    full.extend_from_slice(args);
    run_ok("curl", &full)
}

pub fn get_json(url: &str) -> serde_json::Value {
    let (code, body) = curl(&[url]);
    assert_eq!(code, 200, "GET {url}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: {e}: {body}"))
}

/// Form-encodes `pairs` (what `curl --data-urlencode` sends).
pub fn form_body(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish().into_bytes()
}

/// Posts `body` to `/change_hook/base` at `url` with curl, signed with
/// [`BASE_SECRET`] in `X-Hub-Signature-256` (as `minibot sendchange` and
/// GitHub sign), with `headers` besides.
pub fn post_base(url: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    post_base_signed(url, Some(BASE_SECRET), headers, body)
}

/// As [`post_base`] with another secret, or unsigned with None.
pub fn post_base_signed(
    url: &str,
    secret: Option<&str>,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("body");
    std::fs::write(&f, body).unwrap();
    let mut hs: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if !hs
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        hs.push((
            "Content-Type".into(),
            "application/x-www-form-urlencoded".into(),
        ));
    }
    if let Some(secret) = secret {
        hs.push((
            "X-Hub-Signature-256".into(),
            format!("sha256={}", sign(secret, body)),
        ));
    }
    post_with_headers(url, &hs, &f)
}

/// Posts a body file to a Gitea hook with the given event and signature.
pub fn post_gitea(
    url: &str,
    event: &str,
    body_file: &Path,
    signature: Option<&str>,
) -> (u16, String) {
    let data = format!("@{}", body_file.display());
    let ev = format!("X-Gitea-Event: {event}");
    let mut args = vec![
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-H",
        &ev,
        "--data-binary",
        &data,
    ];
    let sig;
    if let Some(s) = signature {
        sig = format!("X-Gitea-Signature: {s}");
        args.push("-H");
        args.push(&sig);
    }
    args.push(url);
    curl(&args)
}

/// A Gitea push payload (from the fixture) rewritten to `sha` on `branch`.
pub fn push_payload(sha: &str, branch: &str, message: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(fixture("gitea/push_branch_one_commit.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["ref"] = format!("refs/heads/{branch}").into();
    v["after"] = sha.into();
    v["commits"][0]["id"] = sha.into();
    v["commits"][0]["message"] = message.into();
    v["head_commit"]["id"] = sha.into();
    serde_json::to_vec_pretty(&v).unwrap()
}

pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("test-fixtures")
        .join(rel)
}

/// A JSON fixture, parsed (the fakes' schemas).
pub fn fixture_json(rel: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(rel)).unwrap()).unwrap()
}

/// The master's report of its addresses (`master::ADDRESSES_FILE`).
pub const ADDRESSES: &str = "addresses.json";

/// The text of a daemon's log file (`master.log`, `worker.log`; empty if
/// there is none yet), for the tests whose subject is that text: an
/// operator-facing warning or error (a published sample secret,
/// `allow_unsigned = true`, why a worker gave up), the ready line, a flood
/// of refusals summarised in a few lines, a level that hides info lines.
/// That checks product output. What a test waits for or counts (a release,
/// a janitor run, a refused login, a clean stop begun) is state: read it
/// from `status.json` ([`Setup::master_status`]), `reconfig.json` or the
/// API, never from here.
pub fn operator_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The (web, worker) ports the master in `master` reported in
/// `addresses.json` (written once it serves, removed when it stops), if the
/// file is there and, with `pid`, was written by that process (a master
/// killed with SIGKILL leaves its file behind). The web port is 0 when the
/// master serves on a unix socket.
pub fn master_addresses(master: &Path, pid: Option<i32>) -> Option<(u16, u16)> {
    let text = std::fs::read_to_string(master.join(ADDRESSES)).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    if let Some(pid) = pid {
        if v["pid"].as_i64()? != i64::from(pid) {
            return None;
        }
    }
    let port = |k: &str| -> Option<u16> { v[k].as_str()?.rsplit_once(':')?.1.parse().ok() };
    Some((port("www").unwrap_or(0), port("worker")?))
}

/// Waits for [`master_addresses`].
pub fn wait_master_addresses(master: &Path, pid: Option<i32>) -> (u16, u16) {
    wait_for(
        &format!("{} in {}", ADDRESSES, master.display()),
        Duration::from_secs(30),
        || master_addresses(master, pid),
    )
}

/// Writes the ports a master bound in place of `port = 0` in the `[www]`
/// and `[protocols.worker]` sections of its master.cfg, so that the master
/// started again listens where its workers (whose worker.cfg names the
/// port) and the test expect it. The file stays 0600.
pub fn pin_master_ports(master: &Path, www: u16, wport: u16) {
    let path = master.join("master.cfg");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut section = String::new();
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            section = t.to_string();
        }
        match (section.as_str(), t) {
            ("[www]", "port = 0") if www != 0 => out.push_str(&format!("port = {www}")),
            ("[protocols.worker]", "port = 0") => out.push_str(&format!("port = {wport}")),
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    if out != text {
        write_private(&path, &out);
    }
}

/// For a master another program starts (supervisord): starts it once on
/// the `port = 0` of its master.cfg, pins the ports it bound there
/// ([`pin_master_ports`]) and stops it; returns them. Workers can then be
/// created before the real start.
pub fn pin_ports_by_starting(master: &Path) -> (u16, u16) {
    let (mut p, _line) = start_daemon(
        MINIBOT,
        &["start", "--nodaemon", master.to_str().unwrap()],
        "master (to pick its ports)",
    );
    let (www, wport) = wait_master_addresses(master, Some(p.pid()));
    p.signal(libc::SIGTERM);
    assert_eq!(p.wait_exit(Duration::from_secs(30)), Some(0));
    pin_master_ports(master, www, wport);
    (www, wport)
}

/// Everything a test master needs: directories, a config on port 0, and
/// the ports the master bound once it has started.
pub struct Setup {
    /// First, so it runs before `tmp` is removed.
    _logs: LogsOnPanic,
    pub tmp: tempfile::TempDir,
    pub master: PathBuf,
    pub repo: PathBuf,
    /// 0 until the master has started ([`Setup::www`]).
    www: AtomicU16,
    wport: AtomicU16,
    pub head: String,
    /// A share of the gate [`run_alone`] tests wait on.
    _gate: GateGuard,
}

/// A failing test shows what its daemons said: the last lines of
/// `master.log` and of each worker's `worker.log` under `root` (a stall in
/// a browser or API wait otherwise leaves only the page's text to go on).
struct LogsOnPanic {
    root: PathBuf,
    master: PathBuf,
}

impl Drop for LogsOnPanic {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let mut logs = vec![self.master.join("master.log")];
        if let Ok(dirs) = std::fs::read_dir(&self.root) {
            logs.extend(dirs.flatten().map(|d| d.path().join("worker.log")));
        }
        for log in logs.iter().filter(|l| l.is_file()) {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!(
                "--- last lines of {} ---\n{}",
                log.display(),
                tail.join("\n")
            );
        }
    }
}

impl Setup {
    /// The web port the master bound: known once [`Setup::start_master`]
    /// (or [`Setup::learn_ports`]) has run, the same after a restart.
    pub fn www(&self) -> u16 {
        self.ports_from_a_running_master();
        let p = self.www.load(Ordering::Relaxed);
        assert_ne!(p, 0, "the web port is known once the master has started");
        p
    }

    /// The worker port the master bound; as [`Setup::www`].
    pub fn wport(&self) -> u16 {
        self.ports_from_a_running_master();
        let p = self.wport.load(Ordering::Relaxed);
        assert_ne!(p, 0, "the worker port is known once the master has started");
        p
    }

    /// Reads the ports the master `pid` reported, remembers them and pins
    /// them in master.cfg ([`pin_master_ports`]); None until it has
    /// reported them. For callers that start the master themselves (the
    /// benchmark); [`Setup::start_master`] does this.
    pub fn learn_ports(&self, pid: i32) -> Option<(u16, u16)> {
        let (www, wport) = master_addresses(&self.master, Some(pid))?;
        self.www.store(www, Ordering::Relaxed);
        self.wport.store(wport, Ordering::Relaxed);
        pin_master_ports(&self.master, www, wport);
        Some((www, wport))
    }

    /// For a master the test started itself (not with `start_master`):
    /// the ports in its `addresses.json`, learned and pinned on first use.
    fn ports_from_a_running_master(&self) {
        if self.wport.load(Ordering::Relaxed) == 0 {
            if let Some((www, wport)) = master_addresses(&self.master, None) {
                self.www.store(www, Ordering::Relaxed);
                self.wport.store(wport, Ordering::Relaxed);
                pin_master_ports(&self.master, www, wport);
            }
        }
    }

    /// The ports, once a start has reported them (None before).
    pub fn known_ports(&self) -> Option<(u16, u16)> {
        let www = self.www.load(Ordering::Relaxed);
        let wport = self.wport.load(Ordering::Relaxed);
        (wport != 0).then_some((www, wport))
    }

    /// After a detached `minibot start`/`restart` (which returns once the
    /// master is ready): the ports it reported, remembered and pinned.
    pub fn read_ports(&self) -> (u16, u16) {
        let (www, wport) = wait_master_addresses(&self.master, None);
        self.www.store(www, Ordering::Relaxed);
        self.wport.store(wport, Ordering::Relaxed);
        pin_master_ports(&self.master, www, wport);
        (www, wport)
    }

    /// For a test that needs the ports before the master's real start (a
    /// worker created first): [`pin_ports_by_starting`], remembered.
    pub fn pick_ports(&self) -> (u16, u16) {
        let (www, wport) = pin_ports_by_starting(&self.master);
        self.www.store(www, Ordering::Relaxed);
        self.wport.store(wport, Ordering::Relaxed);
        (www, wport)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.www(), path)
    }

    /// A `Setup` for a master laid out by the test itself, whose ports are
    /// already known (pinned in its master.cfg).
    pub fn for_master(
        tmp: tempfile::TempDir,
        master: PathBuf,
        repo: PathBuf,
        (www, wport): (u16, u16),
    ) -> Setup {
        Setup {
            _logs: LogsOnPanic {
                root: tmp.path().to_path_buf(),
                master: master.clone(),
            },
            tmp,
            master,
            repo,
            www: AtomicU16::new(www),
            wport: AtomicU16::new(wport),
            head: String::new(),
            _gate: gate_acquire(false),
        }
    }

    /// create-master and a master.cfg building `repo` with `steps` (TOML).
    pub fn new(test_body: &str, extra_cfg: &str) -> Setup {
        let gate = gate_acquire(false);
        let tmp = tempfile::tempdir().unwrap();
        let master = tmp.path().join("master");
        let repo = tmp.path().join("repo");
        let head = make_repo(&repo, test_body);
        run_ok(MINIBOT, &["create-master", master.to_str().unwrap()]);
        // Port 0: the master binds free ports and reports them (no race
        // with other tests between picking a port and binding it).
        let cfg = format!(
            r#"
title = "e2e"
[www]
port = 0
[www.change_hook_dialects.gitea]
secret = "{SECRET}"
[www.change_hook_dialects.base]
secret = "{BASE_SECRET}"
[protocols.worker]
port = 0
keepalive = 2
[[workers]]
name = "example-worker"
password = "{WORKER_PW}"
[[workers]]
name = "second-worker"
password = "{WORKER2_PW}"
[[schedulers]]
name = "all"
type = "single_branch"
branch = "master"
builders = ["runtests"]
[[builders]]
name = "runtests"
workers = ["example-worker", "second-worker"]
[[builders.steps]]
type = "git"
repourl = "file://{repo}"
[[builders.steps]]
type = "shell"
name = "test"
command = ["/usr/bin/python3", "test_hello.py"]
{extra_cfg}
"#,
            repo = repo.display()
        );
        // 0600: the master refuses a master.cfg with secrets others may read.
        write_private(&master.join("master.cfg"), &cfg);
        Setup {
            _logs: LogsOnPanic {
                root: tmp.path().to_path_buf(),
                master: master.clone(),
            },
            tmp,
            master,
            repo,
            www: AtomicU16::new(0),
            wport: AtomicU16::new(0),
            head,
            _gate: gate,
        }
    }

    /// Starts the master (`start --nodaemon`), waits for its ready line and
    /// learns the ports it bound ([`Setup::learn_ports`]): the first start
    /// binds free ones and pins them in master.cfg, later starts reuse them.
    pub fn start_master(&self) -> Proc {
        let (p, line) = start_daemon(
            MINIBOT,
            &["start", "--nodaemon", self.master.to_str().unwrap()],
            "master",
        );
        // Written before the ready line is printed.
        let (www, wport) = self
            .learn_ports(p.pid())
            .unwrap_or_else(|| panic!("no {ADDRESSES} after the ready line: {line}"));
        assert!(
            line.contains(&format!(":{wport}")) && (www == 0 || line.contains(&format!(":{www}/"))),
            "ready line: {line}"
        );
        p
    }

    /// create-worker + start --nodaemon; returns the worker process.
    pub fn start_worker(&self, name: &str, password: &str) -> Proc {
        self.start_worker_env(name, password, &[("RUST_LOG", "debug")])
    }

    /// As [`Setup::start_worker`], with these environment variables.
    pub fn start_worker_env(&self, name: &str, password: &str, env: &[(&str, &str)]) -> Proc {
        self.start_worker_in(name, name, password, env)
    }

    /// `minibot-worker create-worker` of a worker called `name` in `dir`,
    /// connecting to this master's worker port (keepalive 2 s, as the
    /// master's).
    pub fn create_worker(&self, dir: &Path, name: &str, password: &str) {
        run_ok(
            WORKER,
            &[
                "create-worker",
                "--keepalive",
                "2",
                dir.to_str().unwrap(),
                &format!("127.0.0.1:{}", self.wport()),
                name,
                password,
            ],
        );
    }

    /// A worker called `name` in the directory `<tmp>/<dir>` (created on
    /// first use), e.g. a second worker claiming a name already in use.
    pub fn start_worker_in(
        &self,
        dir: &str,
        name: &str,
        password: &str,
        env: &[(&str, &str)],
    ) -> Proc {
        let dir = self.tmp.path().join(dir);
        if !dir.exists() {
            self.create_worker(&dir, name, password);
        }
        let (p, _line) = start_daemon_env(
            WORKER,
            &["start", "--nodaemon", dir.to_str().unwrap()],
            name,
            env,
        );
        p
    }

    /// `master.log`'s text: product output only (see [`operator_log`]).
    pub fn master_log(&self) -> String {
        operator_log(&self.master.join("master.log"))
    }

    /// Waits until `master.log` says `needle`: for an operator-facing line
    /// that is the feature under test (see [`operator_log`]), never to learn
    /// that something happened.
    pub fn wait_master_log(&self, needle: &str) {
        wait_for(
            &format!("master.log to say {needle:?}"),
            Duration::from_secs(30),
            || self.master_log().contains(needle).then_some(()),
        );
    }

    /// The running master's `status.json` (what it has done, as state).
    pub fn master_status(&self) -> Option<MasterStatus> {
        MasterStatus::read(&self.master)
    }

    /// Waits (30 s) until `f` finds what it wants in `status.json`.
    pub fn wait_status<T>(&self, what: &str, mut f: impl FnMut(&MasterStatus) -> Option<T>) -> T {
        wait_for(
            &format!("status.json: {what}"),
            Duration::from_secs(30),
            || f(&self.master_status()?),
        )
    }

    pub fn wait_connected(&self, name: &str) {
        let url = self.url(&format!("/api/v2/workers/{name}"));
        wait_for(
            &format!("worker {name} connected"),
            Duration::from_secs(30),
            || {
                let (code, body) = curl(&[&url]);
                let v: serde_json::Value = serde_json::from_str(&body).ok()?;
                (code == 200 && !v["workers"][0]["connected_to"].as_array()?.is_empty())
                    .then_some(())
            },
        );
    }

    /// Posts a signed push of `sha` and returns the change ids.
    pub fn push(&self, sha: &str, branch: &str, message: &str) -> Vec<i64> {
        let body = push_payload(sha, branch, message);
        let f = self.tmp.path().join(format!("push-{sha}.json"));
        std::fs::write(&f, &body).unwrap();
        let (code, resp) = post_gitea(
            &self.url("/change_hook/gitea"),
            "push",
            &f,
            Some(&sign(SECRET, &body)),
        );
        assert_eq!(code, 200, "{resp}");
        change_ids(&resp)
    }

    /// Posts Gitea fixture `name` edited by `edit` (e.g. to point at real
    /// commits), signed, with the fixture's other headers and a delivery id
    /// of its own; returns the change ids.
    pub fn post_fixture_edited(
        &self,
        name: &str,
        edit: impl FnOnce(&mut serde_json::Value),
    ) -> Vec<i64> {
        let text = std::fs::read_to_string(fixture(&format!("gitea/{name}"))).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        edit(&mut v);
        let body = serde_json::to_vec_pretty(&v).unwrap();
        let n = std::fs::read_dir(self.tmp.path())
            .map(|d| d.count())
            .unwrap_or(0);
        let f = self.tmp.path().join(format!("edited-{n}-{name}"));
        std::fs::write(&f, &body).unwrap();
        let mut headers = fixture_headers(name);
        for (k, val) in headers.iter_mut() {
            match k.as_str() {
                "X-Gitea-Signature" => *val = sign(SECRET, &body),
                "X-Gitea-Delivery" => *val = format!("edited-{n}-{name}"),
                _ => {}
            }
        }
        headers.retain(|(k, _)| !k.starts_with("X-Hub-Signature"));
        let (code, resp) = post_with_headers(&self.url("/change_hook/gitea"), &headers, &f);
        assert_eq!(code, 200, "{resp}");
        change_ids(&resp)
    }

    /// A bare copy of the test's repository at `to` (a "Gitea" to poll).
    pub fn bare_clone(&self, to: &Path) {
        run_ok(
            "git",
            &[
                "clone",
                "-q",
                "--bare",
                self.repo.to_str().unwrap(),
                to.to_str().unwrap(),
            ],
        );
    }

    /// Commits `content` as `file` in the test's repository; returns the sha.
    pub fn commit(&self, file: &str, content: &str, message: &str) -> String {
        commit_file(&self.repo, file, content, message)
    }

    /// Waits until `n` builds are complete and returns them (oldest first).
    pub fn wait_builds(&self, n: usize, timeout: Duration) -> Vec<serde_json::Value> {
        let url = self.url("/api/v2/builds?complete=true&order=buildid");
        wait_for(&format!("{n} complete builds"), timeout, || {
            let (_, body) = curl(&[&url]);
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            let b = v["builds"].as_array()?.clone();
            (b.len() >= n).then_some(b)
        })
    }

    /// The raw text of a build's step log, by step name.
    pub fn step_log(&self, buildid: i64, step: &str) -> String {
        let logid = self.step_logid(buildid, step);
        curl(&[&self.url(&format!("/api/v2/logs/{logid}/raw"))]).1
    }

    /// A build's step, by name, from the API.
    pub fn step(&self, buildid: i64, step: &str) -> serde_json::Value {
        let steps = get_json(&self.url(&format!("/api/v2/builds/{buildid}/steps")));
        find_step(&steps, step).clone()
    }

    /// The id of a build's step log, by step name.
    pub fn step_logid(&self, buildid: i64, step: &str) -> i64 {
        let st = self.step(buildid, step);
        let logs = get_json(&self.url(&format!("/api/v2/steps/{}/logs", st["stepid"])));
        logs["logs"][0]["logid"].as_i64().unwrap()
    }
}

/// Step `name` in an API answer `{"steps": [...]}`.
pub fn find_step<'a>(steps: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    steps["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|st| st["name"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {steps}"))
}

/// The ids in a change hook's answer `{"changes": [...]}`.
pub fn change_ids(body: &str) -> Vec<i64> {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["changes"]
        .as_array()
        .unwrap_or_else(|| panic!("no changes in {body}"))
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

/// Writes `file` in the repository `dir` and commits it; returns the sha.
pub fn commit_file(dir: &Path, file: &str, content: &str, message: &str) -> String {
    std::fs::write(dir.join(file), content).unwrap();
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", message]);
    git(dir, &["rev-parse", "HEAD"])
}

/// The headers Gitea sends with fixture `name` (from `headers.json`).
pub fn fixture_headers(name: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(fixture("gitea/headers.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["files"][name]
        .as_object()
        .unwrap_or_else(|| panic!("no headers for {name}"))
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
        .collect()
}

/// Posts a body with the given headers (exact bytes, as Gitea does).
pub fn post_with_headers(
    url: &str,
    headers: &[(String, String)],
    body_file: &Path,
) -> (u16, String) {
    let data = format!("@{}", body_file.display());
    let hs: Vec<String> = headers.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    let mut args: Vec<&str> = vec!["-X", "POST", "--data-binary", &data];
    for h in &hs {
        args.push("-H");
        args.push(h);
    }
    args.push(url);
    curl(&args)
}

/// One request the fake Gitea received.
#[derive(Debug, Clone)]
pub struct StatusRequest {
    pub owner: String,
    pub repo: String,
    pub sha: String,
    pub auth: String,
    pub body: serde_json::Value,
}

/// A stand-in for Gitea's commit-status API on 127.0.0.1: records every
/// request and checks it against `status_api_schema.json` (method, path,
/// `Authorization: token ...`, required fields, no extra fields, the state
/// enum); anything wrong lands in `problems`.
pub struct FakeGitea {
    pub port: u16,
    pub requests: std::sync::Arc<std::sync::Mutex<Vec<StatusRequest>>>,
    /// The repository hooks (`fake_gitea`): add repositories to `repos`.
    pub hooks: std::sync::Arc<std::sync::Mutex<fake_gitea::Hooks>>,
    /// The pull requests it lists (`fake_gitea::Pulls`).
    pub pulls: std::sync::Arc<std::sync::Mutex<fake_gitea::Pulls>>,
    /// The OAuth2 provider and `/api/v1/user*` (`fake_oauth`): register
    /// an application and sign a user in.
    pub oauth: std::sync::Arc<std::sync::Mutex<fake_oauth::OAuth>>,
    pub problems: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    server: std::sync::Arc<tiny_http::Server>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeGitea {
    /// Listens on a free port (bound here, read back: no race); the
    /// master.cfg it goes into uses [`FakeGitea::url`] or `port`.
    pub fn start(token: &str) -> FakeGitea {
        FakeGitea::start_on(0, token)
    }

    /// Listens on `port`: Gitea back where it was after an outage.
    pub fn start_on(port: u16, token: &str) -> FakeGitea {
        let server = std::sync::Arc::new(
            tiny_http::Server::http(("127.0.0.1", port)).expect("fake gitea listen"),
        );
        let port = server
            .server_addr()
            .to_ip()
            .expect("fake gitea listens on TCP")
            .port();
        let schema: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixture("gitea/status_api_schema.json")).unwrap(),
        )
        .unwrap();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(vec![]));
        let problems = std::sync::Arc::new(std::sync::Mutex::new(vec![]));
        let hooks = std::sync::Arc::new(std::sync::Mutex::new(fake_gitea::Hooks::default()));
        let pulls = std::sync::Arc::new(std::sync::Mutex::new(fake_gitea::Pulls::default()));

        let oauth = std::sync::Arc::new(std::sync::Mutex::new(fake_oauth::OAuth::default()));
        let (s, r, p, token, hk, pl, oa) = (
            server.clone(),
            requests.clone(),
            problems.clone(),
            token.to_string(),
            hooks.clone(),
            pulls.clone(),
            oauth.clone(),
        );
        let thread = std::thread::spawn(move || {
            for mut req in s.incoming_requests() {
                let mut body = String::new();
                let _ = req.as_reader().read_to_string(&mut body);
                let header = |n: &str| {
                    req.headers()
                        .iter()
                        .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(n))
                        .map(|h| h.value.as_str().to_string())
                        .unwrap_or_default()
                };
                let auth = header("authorization");
                if let Some(a) = fake_oauth::serve(
                    &oa,
                    req.method().as_str(),
                    req.url(),
                    &auth,
                    &header("content-type"),
                    &body,
                    &p,
                ) {
                    let kind = if a.body.starts_with("<!DOCTYPE") {
                        "Content-Type: text/html; charset=utf-8"
                    } else {
                        "Content-Type: application/json"
                    };
                    let mut resp = tiny_http::Response::from_string(a.body)
                        .with_status_code(a.status)
                        .with_header(kind.parse::<tiny_http::Header>().unwrap());
                    if let Some(l) = a.location {
                        resp.add_header(tiny_http::Header::from_bytes("Location", l).unwrap());
                    }
                    let _ = req.respond(resp);
                    continue;
                }
                let authorized = auth == format!("token {token}");
                let method = req.method().as_str().to_string();
                if let Some((code, answer)) =
                    fake_gitea::serve_pulls(&pl, &method, req.url(), authorized, &p).or_else(|| {
                        fake_gitea::serve(
                            &hk,
                            &method,
                            req.url(),
                            authorized,
                            &header("content-type"),
                            &body,
                            &p,
                        )
                    })
                {
                    let text = if answer.is_null() {
                        String::new()
                    } else {
                        answer.to_string()
                    };
                    let _ =
                        req.respond(tiny_http::Response::from_string(text).with_status_code(code));
                    continue;
                }
                let mut bad = vec![];
                if req.method() != &tiny_http::Method::Post {
                    bad.push(format!("method {}", req.method()));
                }
                if auth != format!("token {token}") {
                    bad.push(format!("Authorization {auth:?}"));
                }
                if !header("content-type").starts_with("application/json") {
                    bad.push(format!("Content-Type {:?}", header("content-type")));
                }
                let parts: Vec<String> = req.url().split('/').map(str::to_string).collect();
                // ["", "api", "v1", "repos", owner, repo, "statuses", sha]
                let path_ok = parts.len() == 8
                    && parts[1] == "api"
                    && parts[2] == "v1"
                    && parts[3] == "repos"
                    && parts[6] == "statuses";
                if !path_ok {
                    bad.push(format!("path {}", req.url()));
                }
                let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                let props = schema["properties"].as_object().unwrap();
                match v.as_object() {
                    None => bad.push(format!("body is not an object: {body}")),
                    Some(o) => {
                        for k in schema["required"].as_array().unwrap() {
                            if !o.contains_key(k.as_str().unwrap()) {
                                bad.push(format!("missing {k}"));
                            }
                        }
                        for (k, val) in o {
                            if !props.contains_key(k) {
                                bad.push(format!("field {k} not in the schema"));
                            } else if !val.is_string() {
                                bad.push(format!("field {k} is not a string"));
                            }
                        }
                        let states = &props["state"]["enum"];
                        if !states.as_array().unwrap().contains(&v["state"]) {
                            bad.push(format!("state {} not in {states}", v["state"]));
                        }
                    }
                }
                let ok = bad.is_empty();
                p.lock().unwrap().extend(bad);
                if path_ok {
                    r.lock().unwrap().push(StatusRequest {
                        owner: parts[4].clone(),
                        repo: parts[5].clone(),
                        sha: parts[7].clone(),
                        auth,
                        body: v.clone(),
                    });
                }
                let answer = serde_json::json!({
                    "id": 1, "status": v["state"], "target_url": v["target_url"],
                    "description": v["description"], "url": "", "context": v["context"],
                    "creator": null, "created_at": "2024-06-03T12:15:02Z",
                    "updated_at": "2024-06-03T12:15:02Z"
                });
                let resp = tiny_http::Response::from_string(answer.to_string())
                    .with_status_code(if ok { 201 } else { 422 });
                let _ = req.respond(resp);
            }
        });
        FakeGitea {
            port,
            requests,
            hooks,
            pulls,
            oauth,
            problems,
            server,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The states posted for `sha`, in order.
    pub fn states(&self, sha: &str) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.sha == sha)
            .map(|r| r.body["state"].as_str().unwrap_or("").to_string())
            .collect()
    }

    /// Waits until the last state posted for `sha` is a final one.
    pub fn wait_final(&self, sha: &str, timeout: Duration) -> Vec<String> {
        wait_for(&format!("a final status for {sha}"), timeout, || {
            let s = self.states(sha);
            s.last()
                .filter(|l| l.as_str() != "pending")
                .map(|_| s.clone())
        })
    }
}

impl Drop for FakeGitea {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An SMTP server (Python's aiosmtpd) on 127.0.0.1 that accepts login
/// `ci` / `pw`, offers STARTTLS when given a certificate (and then
/// requires it), and prints each mail to its stdout, which this collects.
pub struct SmtpSink {
    pub port: u16,
    pub lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    _proc: Proc,
}

const SMTP_SINK: &str = r#"
import socket, sys, ssl
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
cert = sys.argv[1] if len(sys.argv) > 2 else None
key = sys.argv[2] if len(sys.argv) > 2 else None
class Handler:
    async def handle_DATA(self, server, session, envelope):
        print("FROM", envelope.mail_from, flush=True)
        print("RCPT", ",".join(envelope.rcpt_tos), flush=True)
        print("TLS", session.ssl is not None, flush=True)
        print("AUTHENTICATED", session.authenticated, flush=True)
        for line in envelope.content.decode("utf8", "replace").splitlines():
            print("|" + line, flush=True)
        print("END", flush=True)
        return "250 OK"
def auth(server, session, envelope, mechanism, data):
    ok = isinstance(data, LoginPassword) and data.login == b"ci" and data.password == b"pw"
    print("LOGIN", mechanism, ok, flush=True)
    return AuthResult(success=ok)
ctx = None
if cert:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
# The Controller cannot listen on port 0 (it connects to its own port to
# check it started): pick a free port and try again if another process took
# it in between, so the port printed is one this process holds.
for attempt in range(50):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    c = Controller(Handler(), hostname="127.0.0.1", port=port, authenticator=auth,
                   auth_require_tls=bool(cert), require_starttls=bool(cert), tls_context=ctx)
    try:
        c.start()
        break
    except Exception as e:
        print("port", port, "taken:", e, file=sys.stderr, flush=True)
else:
    sys.exit("no free port for the SMTP sink")
print("READY", port, flush=True)
sys.stdin.read()
"#;

impl SmtpSink {
    /// None (test skipped) when aiosmtpd is missing and
    /// `MINIBOT_SKIP_AIOSMTPD=1` ([`require`]).
    pub fn start(tls: Option<(&Path, &Path)>) -> Option<SmtpSink> {
        let has = Command::new("/usr/bin/python3")
            .args(["-c", "import aiosmtpd"])
            .status()
            .is_ok_and(|s| s.success());
        if !require("python3 with aiosmtpd", has) {
            return None;
        }
        let mut args = vec!["-c".to_string(), SMTP_SINK.to_string()];
        if let Some((cert, key)) = tls {
            args.push(cert.display().to_string());
            args.push(key.display().to_string());
        }
        let mut child = Command::new("/usr/bin/python3")
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3");
        let stdout = child.stdout.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let l2 = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                l2.lock().unwrap().push(line);
            }
        });
        let proc = Proc {
            child,
            name: "smtp sink".into(),
        };
        let port = wait_for("the SMTP sink", Duration::from_secs(20), || {
            lines
                .lock()
                .unwrap()
                .iter()
                .find_map(|l| l.strip_prefix("READY ")?.parse().ok())
        });
        Some(SmtpSink {
            port,
            lines,
            _proc: proc,
        })
    }

    /// The mails received so far, each as its lines.
    pub fn mails(&self) -> Vec<Vec<String>> {
        let mut out = vec![];
        let mut cur: Option<Vec<String>> = None;
        for l in self.lines.lock().unwrap().iter() {
            if l.starts_with("FROM ") {
                cur = Some(vec![]);
            }
            if let Some(c) = cur.as_mut() {
                c.push(l.clone());
            }
            if l == "END" {
                out.extend(cur.take());
            }
        }
        out
    }
}

/// A self-signed certificate and key for 127.0.0.1 (openssl). Without
/// openssl, [`require`] decides: a failure, or with `MINIBOT_SKIP_OPENSSL=1`
/// None (the mail is then tested without STARTTLS).
pub fn self_signed_cert(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    require("openssl (for a STARTTLS certificate)", ok).then_some((cert, key))
}

/// A file only its owner may read (secrets for master.cfg).
pub fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A read-only connection to a master's database file, for tests that
/// inspect it (a plain rusqlite connection: the master's own readers are
/// not part of the crate's interface). Waits for the master's writer.
pub fn sqlite_reader(db: &Path) -> rusqlite::Connection {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap_or_else(|e| panic!("opening {}: {e}", db.display()));
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn
}

/// Reads one value from the master's database (for what the API does not show).
pub fn db_query<T: rusqlite::types::FromSql>(master: &Path, sql: &str) -> Vec<T> {
    let conn = sqlite_reader(&master.join("state.sqlite"));
    let mut st = conn.prepare(sql).unwrap();
    let rows = st.query_map([], |r| r.get(0)).unwrap();
    rows.collect::<Result<_, _>>().unwrap()
}

// ---------------------------------------------------------------------------
// Web UI and API helpers

pub const USER: &str = "alice";
pub const PASSWORD: &str = "s3cret-pass";

/// `minibot user <cmd> [--password-stdin] MASTER [NAME]`, with `password`
/// on stdin when given; returns stdout, panics on failure.
pub fn minibot_user(
    master: &Path,
    cmd: &str,
    name: Option<&str>,
    password: Option<&str>,
) -> String {
    use std::io::Write;
    let mut c = Command::new(program(MINIBOT));
    c.args(["user", cmd]);
    if password.is_some() {
        c.arg("--password-stdin");
    }
    c.arg(master).args(name);
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("minibot user");
    let mut stdin = child.stdin.take().unwrap();
    if let Some(pw) = password {
        writeln!(stdin, "{pw}").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "user {cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `minibot user add --password-stdin MASTER NAME`.
pub fn add_user(master: &Path, name: &str, password: &str) {
    minibot_user(master, "add", Some(name), Some(password));
}

/// A JSON-RPC 2.0 call as a script makes it (curl, `-u user:password`).
pub fn rpc(
    url: &str,
    auth: Option<&str>,
    method: &str,
    params: serde_json::Value,
) -> (u16, serde_json::Value) {
    let body = serde_json::json!({"jsonrpc": "2.0", "method": method, "id": 1, "params": params})
        .to_string();
    let mut args = vec![
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &body,
    ];
    if let Some(a) = auth {
        args.push("-u");
        args.push(a);
    }
    args.push(url);
    let (code, text) = curl(&args);
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: {e}: {text}"));
    (code, v)
}

/// A raw connection to the worker port that has read the master's Hello:
/// the test speaks the wire protocol itself (`minibot::protocol`), so it
/// can send what a real worker never would.
pub struct RawWorker {
    pub stream: std::net::TcpStream,
    nonce: String,
}

impl RawWorker {
    pub fn connect(s: &Setup) -> RawWorker {
        let mut stream =
            std::net::TcpStream::connect(("127.0.0.1", s.wport())).expect("worker port");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let hello: ToWorker = protocol::read_frame(&mut stream).unwrap().expect("hello");
        let ToWorker::Hello { nonce, .. } = hello else {
            panic!("expected Hello, got {hello:?}")
        };
        RawWorker { stream, nonce }
    }

    /// Sends Auth for `name` with `password`; returns the master's answer.
    pub fn auth(&mut self, name: &str, password: &str) -> ToWorker {
        send_worker_auth(&mut self.stream, &self.nonce, name, password);
        self.next().expect("an answer to Auth")
    }

    /// The next frame other than Ping (answered), or None once closed.
    pub fn next(&mut self) -> Option<ToWorker> {
        loop {
            match protocol::read_frame::<_, ToWorker>(&mut self.stream) {
                Ok(Some(ToWorker::Ping)) => self.send(&FromWorker::Pong),
                Ok(m) => return m,
                Err(_) => return None,
            }
        }
    }

    pub fn send(&mut self, m: &FromWorker) {
        protocol::write_frame(&mut self.stream, m).unwrap();
    }

    /// Everything the master sends until it closes the connection.
    pub fn rest(&mut self) -> Vec<ToWorker> {
        std::iter::from_fn(|| self.next()).collect()
    }
}

/// Forces `scheduler` over JSON-RPC as `USER` (`params`: the form's
/// fields, `builderNames`); returns the first request's id.
pub fn force(s: &Setup, scheduler: &str, params: serde_json::Value) -> i64 {
    let (code, v) = rpc(
        &s.url(&format!("/api/v2/forceschedulers/{scheduler}")),
        Some(&basic()),
        "force",
        params,
    );
    assert_eq!(code, 200, "{v}");
    v["result"][1]
        .as_object()
        .and_then(|m| m.values().next())
        .and_then(|v| v.as_i64())
        .unwrap_or_else(|| panic!("no request in {v}"))
}

/// master.cfg lines for a `deploy` force scheduler on `builder` with a
/// string parameter `version`.
pub fn deploy_cfg(builder: &str) -> String {
    format!(
        r#"
[[schedulers]]
name = "deploy"
type = "force"
builders = ["{builder}"]
[[schedulers.properties]]
name = "version"
type = "string"
"#
    )
}

/// Logs `USER` in through the login form with curl; returns the answer's
/// status and the cookie jar holding the session.
pub fn login(s: &Setup, password: &str) -> (u16, std::path::PathBuf) {
    let jar = s.tmp.path().join(unique_name("jar"));
    let jar_s = jar.to_str().unwrap();
    let (_, page) = curl(&["-c", jar_s, "-b", jar_s, &s.url("/login?next=/workers")]);
    let token = form_token(&page);
    let (code, _) = curl(&[
        "-c",
        jar_s,
        "-b",
        jar_s,
        "--data-urlencode",
        &format!("username={USER}"),
        "--data-urlencode",
        &format!("password={password}"),
        "--data-urlencode",
        &format!("csrf={token}"),
        "--data-urlencode",
        "next=/workers",
        &s.url("/login"),
    ]);
    (code, jar)
}

/// The value of the first `name="csrf"` field in a page.
pub fn form_token(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    html[at..].split('"').next().unwrap().to_string()
}

/// `USER:PASSWORD` for curl's `-u`.
pub fn basic() -> String {
    format!("{USER}:{PASSWORD}")
}

/// A build script for "gated" builds: it starts a `sleep` child, writes
/// both pids to `DIR/pids`, then for each N < n prints `gate-line N` and
/// waits for the file `DIR/gate-N`; then prints "gates done". The test
/// decides when it goes on, with no sleeps that race; it gives up after
/// 120 s so a failed test leaves nothing behind.
pub fn gated_script(dir: &Path, n: usize) -> PathBuf {
    let script = dir.join("gated.py");
    std::fs::write(
        &script,
        format!(
            r#"import os, subprocess, sys, time
d = sys.argv[1]
child = subprocess.Popen(["sleep", "300"])
with open(os.path.join(d, "pids"), "w") as f:
    f.write(f"{{os.getpid()}} {{child.pid}}\n")
deadline = time.time() + 120
for i in range({n}):
    print(f"gate-line {{i}} \x1b[32mgreen\x1b[0m <i>{{i}}</i>", flush=True)
    while not os.path.exists(os.path.join(d, f"gate-{{i}}")):
        if time.time() > deadline:
            child.kill()
            sys.exit("gave up waiting for gate %d" % i)
        time.sleep(0.02)
print("gates done", flush=True)
child.kill()
"#
        ),
    )
    .unwrap();
    script
}

impl Setup {
    /// A `gates` directory in the test's temp dir with a `gated_script` of
    /// `n` gates in it: (the directory, the script).
    pub fn gates(&self, n: usize) -> (PathBuf, PathBuf) {
        let gates = self.tmp.path().join("gates");
        std::fs::create_dir(&gates).unwrap();
        let script = gated_script(&gates, n);
        (gates, script)
    }

    /// The `gated` builder of `gated_cfg` added to master.cfg, its script
    /// waiting at `n` gates; returns the gates' directory.
    pub fn add_gated(&self, n: usize) -> PathBuf {
        let (gates, script) = self.gates(n);
        self.edit_cfg(|t| t + &gated_cfg(&script, &gates));
        gates
    }
}

/// master.cfg lines for a force scheduler on `runtests` and `gated`, and
/// the `gated` builder running `gated_script`.
pub fn gated_cfg(script: &Path, dir: &Path) -> String {
    format!(
        r#"
[[schedulers]]
name = "force"
type = "force"
builders = ["runtests", "gated"]
[[builders]]
name = "gated"
workers = ["example-worker"]
[[builders.steps]]
type = "shell"
name = "gated"
command = ["/usr/bin/python3", "-u", "{}", "{}"]
"#,
        script.display(),
        dir.display()
    )
}

/// master.cfg lines for a `git_poller` on `upstream`'s master branch,
/// polled at launch and every second.
pub fn git_poller_cfg(upstream: &Path) -> String {
    format!(
        r#"
[[change_source]]
type = "git_poller"
repourl = "file://{}"
branches = ["master"]
poll_interval = 1
poll_at_launch = true
"#,
        upstream.display()
    )
}

/// The names of a process's threads (`/proc/<pid>/task/*/comm`), sorted.
pub fn thread_names(pid: i32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                .map(|n| n.trim_end().to_string())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Whether a process is gone (or a zombie nobody reaped yet).
pub fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

impl Setup {
    /// Rewrites master.cfg (before the master starts).
    pub fn edit_cfg(&self, f: impl FnOnce(String) -> String) {
        let p = self.master.join("master.cfg");
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, f(text)).unwrap();
    }

    /// Waits until build `buildid` is complete and returns it.
    pub fn wait_build(&self, buildid: i64, timeout: Duration) -> serde_json::Value {
        let url = self.url(&format!("/api/v2/builds/{buildid}"));
        wait_for(&format!("build {buildid} to complete"), timeout, || {
            let (_, body) = curl(&["-u", &basic(), &url]);
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            let b = v["builds"].as_array()?.first()?.clone();
            (b["complete"] == true).then_some(b)
        })
    }

    /// Waits for a build of build request `brid` and returns its id.
    pub fn wait_build_of(&self, brid: i64) -> i64 {
        let url = self.url(&format!("/api/v2/buildrequests/{brid}/builds"));
        wait_for(
            &format!("a build of request {brid}"),
            Duration::from_secs(60),
            || {
                let (_, body) = curl(&["-u", &basic(), &url]);
                let v: serde_json::Value = serde_json::from_str(&body).ok()?;
                v["builds"].as_array()?.first()?["buildid"].as_i64()
            },
        )
    }
}

/// The path of an external program a test needs: `name` looked up on PATH,
/// or an absolute path checked as is. When it is missing, [`require`]
/// decides: a failure naming the install command, or with
/// `MINIBOT_SKIP_<KEY>=1` "skipped: ..." and None (the test returns early).
pub fn require_program(name: &str, install_hint: &str) -> Option<PathBuf> {
    let found = find_program(name);
    require(&format!("{name} ({install_hint})"), found.is_some());
    found
}

/// `name` if it is an executable path, else the executable of that name on
/// `PATH`.
fn find_program(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if name.contains('/') {
        Some(PathBuf::from(name)).filter(|p| executable(p))
    } else {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| executable(p))
        })
    }
}

/// Whether a TCP connection to 127.0.0.1:`port` is accepted.
pub fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// Stops a detached daemon (`minibot start DIR`, `restart`) when dropped,
/// so a failing test leaves nothing running: `<bin> stop DIR`, errors
/// ignored (it may be stopped already).
pub struct StopOnDrop {
    pub bin: &'static str,
    pub dir: PathBuf,
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = Command::new(self.bin)
            .arg("stop")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

// ---------------------------------------------------------------------------
// Load and fault helpers (tests/reliability_*.rs)

/// A sha-like 40-hex string, distinct for each `n` (for hooks whose
/// revisions only need to be unique, built by steps without a git checkout).
pub fn fake_sha(n: u64) -> String {
    // Never all zeros: Gitea sends that as `after` of a branch deletion.
    format!("feed{n:036x}")
}

/// master.cfg lines for a builder `quick` (one `/bin/true` step, no
/// checkout, no collapsing, so each change is exactly one build) on
/// `workers`, fed by an any_branch scheduler on branches `burst*`.
pub fn quick_builder_cfg(workers: &[&str]) -> String {
    let list: Vec<String> = workers.iter().map(|w| format!("{w:?}")).collect();
    format!(
        r#"
[[schedulers]]
name = "burst"
type = "any_branch"
branch_regex = "^burst"
builders = ["quick"]
[[builders]]
name = "quick"
workers = [{}]
collapse_requests = false
[[builders.steps]]
type = "shell"
name = "true"
command = ["/bin/true"]
"#,
        list.join(", ")
    )
}

/// Posts a signed Gitea push of `sha` on `branch` in-process (ureq: no
/// curl process per hook, for bursts); Ok(change ids) on 200, Err(what
/// happened) on anything else, including a connection cut by a kill.
pub fn hook_push(www: u16, sha: &str, branch: &str) -> Result<Vec<i64>, String> {
    let body = push_payload(sha, branch, "burst");
    let r = ureq::post(&format!("http://127.0.0.1:{www}/change_hook/gitea"))
        .config()
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .header("Content-Type", "application/json")
        .header("X-Gitea-Event", "push")
        .header("X-Gitea-Signature", &sign(SECRET, &body))
        .send(&body[..]);
    match r {
        Ok(mut resp) => {
            let text = resp
                .body_mut()
                .read_to_string()
                .map_err(|e| e.to_string())?;
            Ok(change_ids(&text))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// The HTTP status of a GET (0 when the connection failed).
pub fn get_status(url: &str) -> u16 {
    let r = ureq::get(url)
        .config()
        .timeout_global(Some(Duration::from_secs(30)))
        .http_status_as_error(false)
        .build()
        .call();
    match r {
        Ok(mut r) => {
            let code = r.status().as_u16();
            let _ = r.body_mut().read_to_string();
            code
        }
        Err(_) => 0,
    }
}

impl Setup {
    /// Starts `example-worker` and `second-worker` and waits until both
    /// are connected.
    pub fn start_two_workers(&self) -> (Proc, Proc) {
        let w1 = self.start_worker("example-worker", WORKER_PW);
        let w2 = self.start_worker("second-worker", WORKER2_PW);
        self.wait_connected("example-worker");
        self.wait_connected("second-worker");
        (w1, w2)
    }
}

/// Waits until every stored change is scheduled and every build request is
/// complete; returns how many requests there are.
pub fn wait_requests_done(master: &Path, timeout: Duration) -> i64 {
    // A hook is answered once its change is stored; the scheduler makes
    // the request a moment later. So "done" needs every change to be in a
    // buildset as well as no open request, or a count taken in between
    // misses the last change's request.
    wait_for(
        "every change scheduled and every request complete",
        timeout,
        || {
            let unscheduled: Vec<i64> = db_query(
                master,
                "SELECT count(*) FROM changes c WHERE NOT EXISTS
               (SELECT 1 FROM buildset_changes bc WHERE bc.changeid = c.changeid)",
            );
            let open: Vec<i64> = db_query(
                master,
                "SELECT count(*) FROM buildrequests WHERE complete = 0",
            );
            (unscheduled[0] == 0 && open[0] == 0)
                .then(|| db_query::<i64>(master, "SELECT count(*) FROM buildrequests")[0])
        },
    )
}

/// Sends a worker's `Auth` for `name` with `password`, answering the
/// master's `Hello` (whose nonce is `master_nonce`), as `minibot-worker`
/// does (docs/protocol.md).
pub fn send_worker_auth<W: std::io::Write>(
    stream: &mut W,
    master_nonce: &str,
    name: &str,
    password: &str,
) {
    use minibot::protocol::PROTOCOL_VERSION;
    let wnonce = protocol::new_nonce();
    let proof = protocol::worker_proof(password, master_nonce, &wnonce, name);
    protocol::write_frame(
        stream,
        &FromWorker::Auth {
            protocol: PROTOCOL_VERSION,
            name: name.into(),
            nonce: wnonce,
            proof,
            info: Default::default(),
        },
    )
    .expect("sending Auth");
}

/// Makes builds look old, for the janitor: each `(buildid, days)` build
/// (and its request) started and finished `days` days ago. The master
/// must be stopped (this writes `state.sqlite` behind its back).
pub fn age_builds(master: &Path, ages: &[(i64, i64)]) {
    let db = rusqlite::Connection::open(master.join("state.sqlite")).unwrap();
    let now = minibot::model::now();
    for &(id, days) in ages {
        let t = now - days * 86_400;
        db.execute(
            "UPDATE builds SET started_at = ?2, complete_at = ?2 WHERE buildid = ?1",
            (id, t),
        )
        .unwrap();
        db.execute(
            "UPDATE buildrequests SET submitted_at = ?2, complete_at = ?2
             WHERE buildrequestid = (SELECT buildrequestid FROM builds WHERE buildid = ?1)",
            (id, t),
        )
        .unwrap();
    }
}

/// A live process as `/proc/<pid>/stat` shows it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcInfo {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
}

/// Every live process (zombies left out: they run nothing and only wait
/// for their parent, often init, to reap them).
pub fn processes() -> Vec<ProcInfo> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) S ppid pgid ...": comm may hold anything, so split
        // after the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() < 3 || f[0] == "Z" || f[0] == "X" {
            continue;
        }
        if let (Ok(ppid), Ok(pgid)) = (f[1].parse(), f[2].parse()) {
            out.push(ProcInfo { pid, ppid, pgid });
        }
    }
    out
}

/// The process group of `pid` (None once it is gone).
pub fn process_group_of(pid: i32) -> Option<i32> {
    processes()
        .into_iter()
        .find(|p| p.pid == pid)
        .map(|p| p.pgid)
}

/// The live members of process group `pgid`.
pub fn process_group_members(pgid: i32) -> Vec<i32> {
    processes()
        .into_iter()
        .filter(|p| p.pgid == pgid)
        .map(|p| p.pid)
        .collect()
}

/// The skip rule itself ([`require`]): a missing program fails the test
/// with its install command; only its `MINIBOT_SKIP_<KEY>=1` skips it, and
/// under `CI` nothing does.
#[cfg(test)]
mod require_rule {
    fn panic_text(r: std::thread::Result<Option<String>>) -> Option<String> {
        let e = r.err()?;
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
    }

    #[test]
    fn a_missing_program_is_skipped_visibly_and_fails_under_ci() {
        const NAME: &str = "minibot-no-such-program";
        assert_eq!(super::find_program(NAME), None);
        assert!(super::find_program("git").is_some());
        let ci = std::env::var_os("CI").is_some();
        // The rule without its report: this is no real skip to sum up.
        let r = std::panic::catch_unwind(|| {
            super::skip_reason(&format!("{NAME} (install it with `true`)"), false)
        });
        if ci {
            let text = panic_text(r).expect("under CI a missing program fails the test");
            assert!(text.contains("CI is set"), "{text}");
        } else {
            let why = r.expect("skipped").expect("skipped");
            assert!(why.contains("install it with `true`"), "{why}");
            assert!(
                why.contains("MINIBOT_SKIP_MINIBOT_NO_SUCH_PROGRAM=1"),
                "{why}"
            );
        }
        // A program that is there runs its tests unless skipped by name.
        assert!(super::require("git", true));
        assert_eq!(super::capability("/usr/sbin/sshd (x)").0, "OPENSSH");
        assert_eq!(super::capability("python3 with aiosmtpd").0, "AIOSMTPD");
        assert_eq!(
            super::capability("root (to run the master as nobody under prlimit --nproc)").0,
            "ROOT"
        );
        assert_eq!(super::capability("setpriv and prlimit").0, "UTIL_LINUX");
        assert_eq!(
            super::capability("/usr/bin/chromium (apt-get install chromium)").0,
            "CHROMIUM"
        );
        assert_eq!(super::capability("supervisorctl (pip)").0, "SUPERVISOR");
    }
}
