//! `minibot-worker start` (daemon mode) against a real master: it waits for
//! the first handshake and says how it ended (connected, refused, not a
//! minibot master at that address, nobody listening), its exit status says
//! whether it connected, and the daemon keeps retrying either way. Also the
//! master's side: a connection on its worker port that speaks something
//! else is logged as that. And a worker waiting through a master's outage
//! is back within a few seconds of its return.
//!
//! State is read from the worker's `worker-status.json`; the messages the
//! user reads are checked as messages.

use crate::common::{free_port, run, wait_for, Setup, PASSING_TEST, WORKER, WORKER_PW};
use minibot::worker::status::{self, State};
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

/// Stops (and if need be kills) the daemon of a worker directory.
struct Stopper<'a>(&'a Path);

impl Drop for Stopper<'_> {
    fn drop(&mut self) {
        let pid_file = self.0.join("minibot-worker.pid");
        let pid = minibot::daemon::running_pid(&pid_file);
        let _ = run(WORKER, &["stop", self.0.to_str().unwrap()]);
        if let Some(pid) = pid.filter(|&p| minibot::daemon::pid_alive(p)) {
            // SAFETY: kill(2) of the daemon this test started.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

fn create(dir: &Path, master: &str, name: &str, password: &str) {
    let o = run(
        WORKER,
        &[
            "create-worker",
            dir.to_str().unwrap(),
            master,
            name,
            password,
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// `start DIR` in daemon mode; its output and how long it took.
fn start(dir: &Path) -> (Output, Duration) {
    let t = Instant::now();
    let o = run(WORKER, &["start", dir.to_str().unwrap()]);
    (o, t.elapsed())
}

/// The daemon of `dir` is still running (it keeps retrying).
fn still_running(dir: &Path) -> bool {
    minibot::daemon::running_pid(&dir.join("minibot-worker.pid"))
        .is_some_and(minibot::daemon::pid_alive)
}

#[test]
fn start_reports_connected_and_exits_0() {
    let s = Setup::new(PASSING_TEST, "");
    let _master = s.start_master();
    let dir = s.tmp.path().join("w");
    create(
        &dir,
        &format!("127.0.0.1:{}", s.wport()),
        "example-worker",
        WORKER_PW,
    );
    let _stop = Stopper(&dir);
    let (o, took) = start(&dir);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(
        out.contains("connected to the master at 127.0.0.1:"),
        "{out}"
    );
    let st = status::read(&dir).unwrap();
    assert_eq!(st.state, State::Connected);
    eprintln!("start, right password: exit 0 after {took:?}");
    s.wait_connected("example-worker");
}

#[test]
fn start_reports_a_wrong_password_and_exits_3_but_keeps_running() {
    let s = Setup::new(PASSING_TEST, "");
    let _master = s.start_master();
    let dir = s.tmp.path().join("w");
    create(
        &dir,
        &format!("127.0.0.1:{}", s.wport()),
        "example-worker",
        "not-the-right-password",
    );
    let _stop = Stopper(&dir);
    let (o, took) = start(&dir);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(3), "{out}{err}");
    assert!(out.contains("running in"), "{out}");
    assert!(
        err.starts_with("minibot-worker: not connected: the master at 127.0.0.1:")
            && err.contains("refused worker \"example-worker\"")
            && err.contains("check `name` and `password` in")
            && err.contains("keeps trying"),
        "{err}"
    );
    assert_eq!(status::read(&dir).unwrap().state, State::Refused);
    assert!(still_running(&dir), "the daemon keeps retrying");
    assert!(took < Duration::from_secs(10), "{took:?}");
    eprintln!("start, wrong password: exit 3 after {took:?}: {err}");
}

#[test]
fn start_pointed_at_the_web_port_says_it_is_not_a_master() {
    let s = Setup::new(PASSING_TEST, "");
    let _master = s.start_master();
    let dir = s.tmp.path().join("w");
    create(
        &dir,
        &format!("127.0.0.1:{}", s.www()),
        "example-worker",
        WORKER_PW,
    );
    let _stop = Stopper(&dir);
    let (o, took) = start(&dir);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(3), "{out}{err}");
    assert!(
        err.contains(&format!(
            "not connected: 127.0.0.1:{} is not a minibot master's worker port",
            s.www()
        )) && err.contains("[protocols.worker]"),
        "{err}"
    );
    let st = status::read(&dir).unwrap();
    assert_eq!(st.state, State::NotAMaster);
    assert!(still_running(&dir));
    // Before: 30 s of silence, then "Resource temporarily unavailable".
    assert!(took < Duration::from_secs(10), "{took:?}");
    eprintln!("start, web port: exit 3 after {took:?}: {err}");
}

#[test]
fn start_with_nobody_listening_says_so_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("w");
    let port = free_port();
    create(
        &dir,
        &format!("127.0.0.1:{port}"),
        "example-worker",
        WORKER_PW,
    );
    let _stop = Stopper(&dir);
    let (o, took) = start(&dir);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(3), "{out}{err}");
    assert!(
        err.contains(&format!(
            "not connected: nobody is listening at 127.0.0.1:{port}"
        )) && err.contains("is the master running"),
        "{err}"
    );
    assert_eq!(status::read(&dir).unwrap().state, State::Unreachable);
    assert!(still_running(&dir));
    assert!(took < Duration::from_secs(5), "{took:?}");
    // The daemon keeps trying; once stopped its file says so.
    assert!(run(WORKER, &["stop", dir.to_str().unwrap()])
        .status
        .success());
    assert_eq!(status::read(&dir).unwrap().state, State::Stopped);
}

#[test]
fn the_master_logs_a_connection_on_its_worker_port_that_speaks_http() {
    let s = Setup::new(PASSING_TEST, "");
    let _master = s.start_master();
    // What a browser or curl pointed at the worker port sends.
    let mut c = std::net::TcpStream::connect(("127.0.0.1", s.wport())).unwrap();
    use std::io::{Read, Write};
    c.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = Vec::new();
    let _ = c.read_to_end(&mut buf);
    // The message itself is what is tested.
    wait_for("the master's log line", Duration::from_secs(20), || {
        s.master_log()
            .contains(
                "spoke something other than the minibot worker protocol (it began with \"GET / HTTP/1.1\")",
            )
            .then_some(())
    });
}

/// A worker waiting through a master's outage is back within a few
/// seconds of the master's return: while nobody listens its backoff stays
/// near 4 s. Five failed attempts in a row take ~11 s with that cap; a
/// backoff doubling on (1, 2, 4, 8, 16 s) would make the next wait 16–32 s.
#[test]
fn a_worker_is_back_within_a_few_seconds_of_its_master_after_an_outage() {
    let s = Setup::new(PASSING_TEST, "");
    let mut master = s.start_master();
    let _worker = s.start_worker("example-worker", WORKER_PW);
    s.wait_connected("example-worker");
    master.signal(libc::SIGTERM);
    assert_eq!(master.wait_exit(Duration::from_secs(30)), Some(0));
    let dir = s.tmp.path().join("example-worker");
    let st = wait_for("five failed attempts", Duration::from_secs(90), || {
        status::read(&dir).filter(|st| st.failures >= 5)
    });
    assert_eq!(st.state, State::Unreachable, "{st:?}");
    let t = Instant::now();
    let _master = s.start_master();
    s.wait_connected("example-worker");
    let back = t.elapsed();
    eprintln!("worker back {back:?} after its master's start (outage of 5 attempts)");
    assert!(back < Duration::from_secs(8), "{back:?}");
}
