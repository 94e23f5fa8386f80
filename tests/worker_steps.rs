//! Runs the real `minibot-worker` binary against a tiny fake master written
//! here with `protocol.rs`: handshake, steps, interrupts, keepalive, a
//! master that cannot prove the password, a dropped connection, and the
//! daemon commands (start/stop/pid file).
//!
//! Everything listens on 127.0.0.1:0, waits with deadlines, and kills what
//! it starts (a `Worker` guard SIGTERMs, then SIGKILLs, its process).

use minibot::model::BuildId;
use minibot::protocol::{self, FromWorker, StepSpec, ToWorker, PROTOCOL_VERSION};
use minibot::worker::status::{self, State};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_minibot-worker");
const NAME: &str = "w1";
const PASSWORD: &str = "s3cret-password";
const WAIT: Duration = Duration::from_secs(20);

fn cli(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run minibot-worker")
}

fn create(dir: &Path, port: u16) {
    let o = cli(&[
        "create-worker",
        "--keepalive",
        "1",
        dir.to_str().unwrap(),
        &format!("127.0.0.1:{port}"),
        NAME,
        PASSWORD,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// A foreground worker; SIGTERM (then SIGKILL) on drop.
struct Worker {
    child: Child,
    dir: PathBuf,
}

impl Worker {
    fn start(dir: &Path) -> Worker {
        let mut child = Command::new(BIN)
            .args(["start", "--nodaemon", dir.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn worker");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("running in"), "ready line: {line:?}");
        Worker {
            child,
            dir: dir.to_path_buf(),
        }
    }

    /// What the worker tells its operator, for the tests of its messages
    /// (`operator_log`); state is waited for with [`Worker::wait_status`].
    fn log(&self) -> String {
        crate::common::operator_log(&self.dir.join("worker.log"))
    }

    /// Waits until the worker's `worker-status.json` satisfies `f`.
    fn wait_status(&self, what: &str, f: impl Fn(&status::Status) -> bool) -> status::Status {
        crate::common::wait_for(&format!("worker-status.json: {what}"), WAIT, || {
            status::read(&self.dir).filter(|s| f(s))
        })
    }

    fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "log lacks {needle:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the process to exit; its status.
    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "worker did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: plain kill(2) of our own child.
            unsafe {
                libc::kill(self.child.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn accept(l: &TcpListener) -> TcpStream {
    l.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(WAIT)).unwrap();
                return s;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "the worker did not connect");
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

fn send(s: &mut TcpStream, m: &ToWorker) {
    protocol::write_frame(s, m).unwrap();
}

fn recv(s: &mut TcpStream) -> Option<FromWorker> {
    protocol::read_frame(s).unwrap()
}

/// Reads the next frame that is not a keepalive (answering pings).
fn recv_msg(s: &mut TcpStream) -> FromWorker {
    loop {
        match recv(s).expect("connection closed") {
            FromWorker::Ping => send(s, &ToWorker::Pong),
            FromWorker::Pong => {}
            m => return m,
        }
    }
}

/// Plays the master's side of the handshake; `proof_password` is what the
/// master uses for its own proof (the wrong one to test refusal).
fn handshake(s: &mut TcpStream, proof_password: &str) -> BTreeMap<String, String> {
    let mn = protocol::new_nonce();
    send(
        s,
        &ToWorker::Hello {
            protocol: PROTOCOL_VERSION,
            nonce: mn.clone(),
        },
    );
    let Some(FromWorker::Auth {
        protocol: p,
        name,
        nonce: wn,
        proof,
        info,
    }) = recv(s)
    else {
        panic!("expected Auth");
    };
    assert_eq!(p, PROTOCOL_VERSION);
    assert_eq!(name, NAME);
    assert!(protocol::check_worker_proof(
        PASSWORD, &mn, &wn, NAME, &proof
    ));
    send(
        s,
        &ToWorker::Welcome {
            proof: protocol::master_proof(proof_password, &mn, &wn, NAME),
            keepalive: 1,
        },
    );
    info
}

fn sh(script: &str) -> StepSpec {
    StepSpec::Shell {
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        env: BTreeMap::new(),
        workdir: String::new(),
        timeout: 60,
    }
}

fn run_step(s: &mut TcpStream, build_id: i64, builder_dir: &str, spec: StepSpec) {
    send(
        s,
        &ToWorker::RunStep {
            build_id: BuildId(build_id),
            step: 1,
            builder_dir: builder_dir.into(),
            spec,
        },
    );
}

struct Done {
    logs: BTreeMap<String, String>,
    exit_code: Option<i32>,
    interrupted: bool,
    timed_out: bool,
    reason: Option<String>,
}

/// Collects Log frames of `build_id` until its StepDone (other builds'
/// frames are returned in `others`).
fn until_done(s: &mut TcpStream, build_id: i64, others: &mut Vec<FromWorker>) -> Done {
    let mut logs: BTreeMap<String, String> = BTreeMap::new();
    loop {
        match recv_msg(s) {
            FromWorker::Log {
                build_id: b,
                stream,
                data,
                ..
            } if b.0 == build_id => logs.entry(stream).or_default().push_str(&data),
            FromWorker::StepDone {
                build_id: b,
                step,
                exit_code,
                interrupted,
                timed_out,
                reason,
            } if b.0 == build_id => {
                assert_eq!(step, 1);
                return Done {
                    logs,
                    exit_code,
                    interrupted,
                    timed_out,
                    reason,
                };
            }
            other => others.push(other),
        }
    }
}

/// Waits for a build's first stdout text.
fn first_output(s: &mut TcpStream, build_id: i64) -> String {
    loop {
        if let FromWorker::Log {
            build_id: b,
            stream,
            data,
            ..
        } = recv_msg(s)
        {
            if b.0 == build_id && stream == "o" {
                return data;
            }
        }
    }
}

fn pid_gone(pid: i32) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if !minibot::daemon::pid_alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A worker in a temp dir, started and connected to the returned listener
/// (the test's "master"), after a handshake in which the master proves
/// `password` (the right one: [`PASSWORD`]).
fn connected_worker(password: &str) -> (tempfile::TempDir, TcpListener, Worker, TcpStream) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("worker");
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    create(&dir, l.local_addr().unwrap().port());
    let w = Worker::start(&dir);
    let mut s = accept(&l);
    handshake(&mut s, password);
    (tmp, l, w, s)
}

#[test]
fn runs_steps_for_an_authenticated_master() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("worker");
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    create(&dir, l.local_addr().unwrap().port());
    std::fs::write(dir.join("info/host"), "test box\n").unwrap();
    let mut w = Worker::start(&dir);
    let mut s = accept(&l);
    let info = handshake(&mut s, PASSWORD);
    assert_eq!(info["host"], "test box");
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert!(info.contains_key("admin") && info.contains_key("os"));

    // A plain step: separated streams, exit code, header lines, build dir.
    run_step(
        &mut s,
        1,
        "b1",
        sh("echo hello; echo oops >&2; pwd; exit 3"),
    );
    let mut others = Vec::new();
    let d = until_done(&mut s, 1, &mut others);
    let build_dir = dir.canonicalize().unwrap().join("b1/build");
    assert_eq!(d.exit_code, Some(3));
    assert!(!d.interrupted && !d.timed_out && d.reason.is_none());
    assert_eq!(d.logs["o"], format!("hello\n{}\n", build_dir.display()));
    assert_eq!(d.logs["e"], "oops\n");
    assert!(d.logs["h"].contains("program finished with exit code 3"));

    // A bad builder_dir is refused without running anything.
    run_step(&mut s, 2, "../escape", sh("touch /tmp/never"));
    let d = until_done(&mut s, 2, &mut others);
    assert_eq!(d.exit_code, None);
    assert!(d.reason.unwrap().contains("invalid builder_dir"));

    // Two builds at once; one interrupted while the other completes.
    run_step(&mut s, 3, "b1", sh("echo started; sleep 100"));
    assert_eq!(first_output(&mut s, 3), "started\n");
    // Not in the directory build 3 is using.
    run_step(&mut s, 6, "b1", sh("echo six"));
    let d = until_done(&mut s, 6, &mut others);
    assert!(d.reason.unwrap().contains("build 3 is running in b1/build"));
    run_step(&mut s, 4, "b2", sh("echo four"));
    let d = until_done(&mut s, 4, &mut others);
    assert_eq!(d.exit_code, Some(0));
    assert_eq!(d.logs["o"], "four\n");
    send(
        &mut s,
        &ToWorker::Interrupt {
            build_id: BuildId(3),
            reason: "stop button".into(),
        },
    );
    let d = until_done(&mut s, 3, &mut others);
    assert!(d.interrupted, "{:?}", d.reason);
    assert_eq!(d.reason.as_deref(), Some("stop button"));

    // Keepalive: the idle worker pings within ~1 s and answers our ping.
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t0 = Instant::now();
    assert_eq!(recv(&mut s), Some(FromWorker::Ping));
    assert!(t0.elapsed() < Duration::from_secs(4));
    send(&mut s, &ToWorker::Ping);
    loop {
        match recv(&mut s) {
            Some(FromWorker::Pong) => break,
            Some(FromWorker::Ping) => {}
            other => panic!("expected Pong, got {other:?}"),
        }
    }
    s.set_read_timeout(Some(WAIT)).unwrap();

    // `stop` while a step runs: the step is killed and reported, the
    // worker exits 0 and removes its pid file.
    run_step(&mut s, 5, "b1", sh("echo $$; sleep 100"));
    let pid: i32 = first_output(&mut s, 5).trim().parse().unwrap();
    assert!(dir.join("minibot-worker.pid").exists());
    let stopper = std::thread::spawn({
        let dir = dir.clone();
        move || cli(&["stop", dir.to_str().unwrap()])
    });
    let d = until_done(&mut s, 5, &mut others);
    assert!(d.interrupted);
    assert!(d.reason.unwrap().contains("shutting down"));
    assert!(pid_gone(pid));
    let o = stopper.join().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(w.wait_exit().success());
    assert!(!dir.join("minibot-worker.pid").exists());
    assert!(others.is_empty(), "{others:?}");
}

#[test]
fn refuses_a_master_that_cannot_prove_the_password() {
    let (tmp, l, w, mut s) = connected_worker("not-the-password");
    let marker = tmp.path().join("ran");
    let _ = protocol::write_frame(
        &mut s,
        &ToWorker::RunStep {
            build_id: BuildId(1),
            step: 1,
            builder_dir: "b".into(),
            spec: sh(&format!("touch {}", marker.display())),
        },
    );
    // The worker hangs up without answering anything.
    match protocol::read_frame::<_, FromWorker>(&mut s) {
        Ok(None) | Err(_) => {}
        Ok(Some(m)) => panic!("worker answered a fake master: {m:?}"),
    }
    let st = w.wait_status("refused", |s| s.state == State::Refused);
    assert_eq!(st.failures, 1, "{st:?}");
    let why = st.last_error.unwrap_or_default();
    assert!(
        why.contains("could not prove it knows the password"),
        "{why}"
    );
    assert!(!marker.exists());

    // It retries; a refusal (e.g. name already connected) is an error too.
    let mut s = accept(&l);
    let mn = protocol::new_nonce();
    send(
        &mut s,
        &ToWorker::Hello {
            protocol: PROTOCOL_VERSION,
            nonce: mn,
        },
    );
    assert!(matches!(recv(&mut s), Some(FromWorker::Auth { .. })));
    send(
        &mut s,
        &ToWorker::Refused {
            reason: "a worker named w1 is already connected".into(),
        },
    );
    let st = w.wait_status("refused again", |s| s.failures == 2);
    assert_eq!(st.state, State::Refused, "{st:?}");
    assert!(
        st.last_error
            .as_deref()
            .is_some_and(|e| e.contains("a worker named w1 is already connected")),
        "{st:?}"
    );
    // What the operator reads: an error naming the master.
    w.wait_log("ERROR minibot::worker: the master at");

    // A protocol mismatch is refused clearly.
    let mut s = accept(&l);
    send(
        &mut s,
        &ToWorker::Hello {
            protocol: PROTOCOL_VERSION + 1,
            nonce: protocol::new_nonce(),
        },
    );
    assert!(matches!(
        protocol::read_frame::<_, FromWorker>(&mut s),
        Ok(None) | Err(_)
    ));
    let st = w.wait_status("refused a third time", |s| s.failures == 3);
    assert_eq!(st.state, State::Refused, "{st:?}");
    w.wait_log(&format!(
        "the master speaks protocol version {} and this worker speaks version {PROTOCOL_VERSION}",
        PROTOCOL_VERSION + 1
    ));
}

#[test]
fn a_lost_connection_kills_running_steps_and_the_worker_reconnects() {
    let (_tmp, l, w, mut s) = connected_worker(PASSWORD);
    // The grandchild's pid: it must die with the step.
    run_step(&mut s, 1, "b", sh("sleep 100 & echo $!; wait"));
    let pid: i32 = first_output(&mut s, 1).trim().parse().unwrap();
    s.shutdown(Shutdown::Both).unwrap();
    drop(s);
    assert!(pid_gone(pid), "step survived the lost connection");
    w.wait_status("the connection lost", |s| {
        s.state != State::Connected
            && s.last_error
                .as_deref()
                .is_some_and(|e| e.contains("connection to the master lost"))
    });
    // Logged before the state changed; what the operator reads.
    assert!(w.log().contains("killing 1 running step(s)"), "{}", w.log());

    // Back again, and working.
    let mut s = accept(&l);
    handshake(&mut s, PASSWORD);
    run_step(&mut s, 2, "b", sh("echo again"));
    let d = until_done(&mut s, 2, &mut Vec::new());
    assert_eq!(d.exit_code, Some(0));
}

#[test]
fn daemon_mode_start_stop_and_usage() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("worker");
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    create(&dir, l.local_addr().unwrap().port());
    let d = dir.to_str().unwrap();

    // The listener accepts (the kernel does) but says nothing: not a
    // master. The daemon runs and keeps trying; `start` says so, exit 3.
    let o = cli(&["start", d]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("running in"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("is not a minibot master's worker port: it said nothing within 5 s"),
        "{err}"
    );
    let pid: i32 = std::fs::read_to_string(dir.join("minibot-worker.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Make sure we never leak it, whatever fails below.
    struct Kill(i32);
    impl Drop for Kill {
        fn drop(&mut self) {
            if minibot::daemon::pid_alive(self.0) {
                // SAFETY: plain kill(2) of a pid this test started.
                unsafe {
                    libc::kill(self.0, libc::SIGKILL);
                }
            }
        }
    }
    let _guard = Kill(pid);
    assert!(minibot::daemon::pid_alive(pid));

    let o = cli(&["start", d]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("already running") && err.contains(&format!("pid {pid}")),
        "{err}"
    );

    // The daemon is stuck in a handshake with our silent listener: it must
    // still stop at once.
    let t0 = Instant::now();
    let o = cli(&["stop", d]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "stop took {:?}",
        t0.elapsed()
    );
    assert!(pid_gone(pid));
    assert!(!dir.join("minibot-worker.pid").exists());
    let o = cli(&["stop", d]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no minibot-worker is running in"));

    // restart: starts when stopped, replaces a running worker.
    let read_pid = || -> i32 {
        std::fs::read_to_string(dir.join("minibot-worker.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let o = cli(&["restart", d]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let first = read_pid();
    let _g1 = Kill(first);
    let o = cli(&["restart", d]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let second = read_pid();
    let _g2 = Kill(second);
    assert_ne!(first, second);
    assert!(pid_gone(first));
    assert!(cli(&["stop", d]).status.success());
    assert!(pid_gone(second));

    // A daemon that dies before it is ready: `start` fails and points at
    // the log (here the log cannot even be opened).
    std::fs::create_dir(dir.join("worker.log.d")).unwrap();
    std::fs::rename(dir.join("worker.log"), dir.join("worker.log.d/old")).unwrap();
    std::fs::rename(dir.join("worker.log.d"), dir.join("worker.log")).unwrap();
    let o = cli(&["start", d]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("before it was ready") && err.contains("worker.log"),
        "{err}"
    );
    std::fs::remove_dir_all(dir.join("worker.log")).unwrap();

    // A broken worker.cfg fails `start` at once, naming the key.
    let cfg = dir.join("worker.cfg");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("keepalive = 1", "keepalive = \"one\"")).unwrap();
    let o = cli(&["start", d]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("key `keepalive`"));

    // Usage errors exit 2; --help exits 0.
    assert_eq!(cli(&["start"]).status.code(), Some(2));
    assert_eq!(cli(&["frobnicate"]).status.code(), Some(2));
    for sub in ["create-worker", "start", "stop", "restart"] {
        let o = cli(&[sub, "--help"]);
        assert!(o.status.success(), "{sub}");
        assert!(String::from_utf8_lossy(&o.stdout).contains("Usage"));
    }
}

#[test]
fn a_silent_master_is_declared_dead() {
    // Keepalive 1 s. We read the worker's pings but never answer: after
    // 3 × 1 s of silence it hangs up, and comes back.
    let (_tmp, l, w, mut s) = connected_worker(PASSWORD);
    let t0 = Instant::now();
    let mut pings = 0;
    while let Ok(Some(m)) = protocol::read_frame::<_, FromWorker>(&mut s) {
        assert_eq!(m, FromWorker::Ping);
        pings += 1;
    }
    let took = t0.elapsed();
    assert!(pings >= 2, "{pings} pings");
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_secs(10),
        "{took:?}"
    );
    let st = w.wait_status("the master declared dead", |s| s.state != State::Connected);
    assert_eq!(
        st.last_error.as_deref(),
        Some("nothing heard from the master for 3 s; assuming the connection is dead"),
        "{st:?}"
    );
    let mut s = accept(&l);
    handshake(&mut s, PASSWORD);
    w.wait_status("connected again", |s| s.state == State::Connected);
}

/// Every step runs on a thread of its own; a finished one must be joined
/// (an exited thread that is never joined keeps its stack mapped). Before
/// the fix, each step left a 2 MB stack and its guard page behind for the
/// whole session: +2 mappings and ~24 kB of RSS per step.
#[test]
fn finished_step_threads_do_not_accumulate() {
    let (_tmp, _l, w, mut s) = connected_worker(PASSWORD);
    let maps = || {
        std::fs::read_to_string(format!("/proc/{}/maps", w.child.id()))
            .unwrap()
            .lines()
            .count()
    };
    let mut others = Vec::new();
    let mut step = |id: i64| {
        run_step(&mut s, id, "b1", sh("true"));
        assert_eq!(until_done(&mut s, id, &mut others).exit_code, Some(0));
    };
    for id in 1..=5 {
        step(id);
    }
    let before = maps();
    for id in 6..=105 {
        step(id);
    }
    let after = maps();
    // A step's thread may still be ending when its StepDone arrives, so a
    // few stacks can be in flight; 100 leaked ones would add 200 mappings.
    assert!(
        after <= before + 12,
        "the worker's mappings grew from {before} to {after} over 100 steps"
    );
}

/// Issue 16 point 4: a worker killed with SIGKILL mid-step takes the
/// step with it (the shell, its foreground child and a background
/// grandchild) within 2 s, and the same build run again by a new worker
/// process runs alone in the build directory. Before the fix the whole
/// step survived the worker and kept running beside the retried build.
#[test]
fn a_worker_killed_with_sigkill_takes_its_step_with_it() {
    let (tmp, l, mut w, mut s) = connected_worker(PASSWORD);
    let stamps = tmp.path().join("stamps");
    let worker_pid = w.child.id() as i32;

    // A normal step leaves no process of ours behind (its guard included).
    run_step(&mut s, 1, "b", sh("echo one"));
    assert_eq!(until_done(&mut s, 1, &mut Vec::new()).exit_code, Some(0));
    let children: Vec<_> = crate::common::processes()
        .into_iter()
        .filter(|p| p.ppid == worker_pid)
        .collect();
    assert!(children.is_empty(), "left behind: {children:?}");

    // The first attempt: a background grandchild, a foreground child, and
    // a stamp on each end (the end one never written: it is killed).
    let script = format!(
        "echo start1 >> {st}; sleep 100 & echo $$ $!; sleep 100; echo end1 >> {st}",
        st = stamps.display()
    );
    run_step(&mut s, 2, "b", sh(&script));
    let line = first_output(&mut s, 2);
    let pids: Vec<i32> = line
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let pgid = crate::common::process_group_of(pids[0]).expect("the step's shell runs");
    let group = || crate::common::process_group_members(pgid);
    // The shell, `sleep 100 &`, the foreground `sleep 100` (and the guard).
    crate::common::wait_for("the step's processes", WAIT, || {
        (group().len() >= 3).then_some(())
    });
    assert!(
        pids.iter().all(|p| group().contains(p)),
        "{pids:?} {:?}",
        group()
    );

    // SIGKILL: nothing of the worker runs any more.
    // SAFETY: plain kill(2) of the worker this test started.
    unsafe {
        libc::kill(worker_pid, libc::SIGKILL);
    }
    let _ = w.wait_exit();
    let t0 = Instant::now();
    while !group().is_empty() && t0.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left = group();
    assert!(
        left.is_empty(),
        "step processes alive 2 s after the worker was killed: {left:?}"
    );
    drop(s);

    // A new worker process; the master runs the build again.
    let dir = tmp.path().join("worker");
    let _w2 = Worker::start(&dir);
    let mut s = accept(&l);
    handshake(&mut s, PASSWORD);
    let script = format!(
        "echo start2 >> {st}; sleep 1; echo end2 >> {st}",
        st = stamps.display()
    );
    run_step(&mut s, 2, "b", sh(&script));
    let d = until_done(&mut s, 2, &mut Vec::new());
    assert_eq!(d.exit_code, Some(0), "{:?}", d.logs);
    // Alone: the first attempt wrote nothing after the second began.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        std::fs::read_to_string(&stamps).unwrap(),
        "start1\nstart2\nend2\n"
    );
}

/// Issue 16 point 4: a build directory whose lock another process holds
/// (here the test; in life a step of a killed worker, or a second worker
/// in the same directory) is waited for, and after the bound the step
/// fails with a message that says so, without running.
#[test]
fn a_locked_build_directory_is_waited_for_then_refused() {
    let (tmp, _l, _w, mut s) = connected_worker(PASSWORD);
    let top = tmp.path().join("worker/b");
    std::fs::create_dir_all(&top).unwrap();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(top.join("build.lock"))
        .unwrap();
    lock.lock().unwrap();
    let marker = tmp.path().join("ran");
    run_step(&mut s, 1, "b", sh(&format!("touch {}", marker.display())));
    // The worker says it waits, and waits.
    let mut header = String::new();
    while !header.contains("waiting for the lock") {
        match recv_msg(&mut s) {
            FromWorker::Log { stream, data, .. } if stream == "h" => header.push_str(&data),
            FromWorker::StepDone { .. } => panic!("the step ran in a locked directory: {header}"),
            _ => {}
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(!marker.exists(), "the step ran in a locked directory");
    lock.unlock().unwrap();
    let d = until_done(&mut s, 1, &mut Vec::new());
    assert_eq!(d.exit_code, Some(0), "{:?}", d.logs);
    assert!(d.logs["h"].contains("got the lock"), "{:?}", d.logs);
    assert!(marker.exists());

    // Held past the bound: refused, clearly, and nothing ran.
    std::fs::remove_file(&marker).unwrap();
    lock.lock().unwrap();
    let t0 = Instant::now();
    run_step(&mut s, 2, "b", sh(&format!("touch {}", marker.display())));
    let d = until_done(&mut s, 2, &mut Vec::new());
    assert!(t0.elapsed() >= Duration::from_secs(9), "{:?}", t0.elapsed());
    let reason = d.reason.unwrap_or_default();
    assert!(
        reason.contains("still in use by another process") && reason.contains("b/build"),
        "{reason}"
    );
    assert_eq!(d.exit_code, None);
    assert!(!marker.exists());
}
