//! The admin commands an operator uses on running daemons, with the real
//! binaries: `stop`, `restart`, `reconfig` (and the worker's `stop`,
//! `restart`) on a daemon started in the foreground (as supervisord does)
//! or detached; a clear message when nothing is running; `stop --clean`
//! letting the running build finish.

use crate::common::*;
use std::path::Path;
use std::time::Duration;

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Stops the detached master and worker a test may leave (when it fails).
fn stop_on_drop(s: &Setup, worker_dir: &Path) -> [StopOnDrop; 2] {
    [
        StopOnDrop {
            bin: WORKER,
            dir: worker_dir.to_path_buf(),
        },
        StopOnDrop {
            bin: MINIBOT,
            dir: s.master.clone(),
        },
    ]
}

#[test]
fn commands_say_so_when_nothing_runs() {
    let s = Setup::new(PASSING_TEST, "");
    let dir = s.master.to_str().unwrap();
    for args in [
        vec!["stop", dir],
        vec!["stop", "--clean", dir],
        vec!["reconfig", dir],
    ] {
        let out = run(MINIBOT, &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(
            stderr_of(&out).trim(),
            format!("minibot: no master is running in {dir}"),
            "{args:?}"
        );
    }
    // The worker's config names the master's port: bound by a first start
    // on port 0, pinned for the `restart` below.
    s.pick_ports();
    let wdir = s.tmp.path().join("w");
    s.create_worker(&wdir, "example-worker", WORKER_PW);
    let out = run(WORKER, &["stop", wdir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr_of(&out).trim(),
        format!(
            "minibot-worker: no minibot-worker is running in {}",
            wdir.display()
        )
    );
    // A directory that is not there at all: the same, no stack of errors.
    let out = run(MINIBOT, &["stop", "/nonexistent/master"]);
    assert_eq!(
        stderr_of(&out).trim(),
        "minibot: no master is running in /nonexistent/master"
    );

    // restart with nothing running starts it (as Buildbot's does).
    let _stop = stop_on_drop(&s, &wdir);
    let out = run_ok(MINIBOT, &["restart", dir]);
    assert!(out.contains(&format!("127.0.0.1:{}", s.www())), "{out}");
    let out = run_ok(WORKER, &["restart", wdir.to_str().unwrap()]);
    assert!(out.contains("minibot-worker"), "{out}");
    s.wait_connected("example-worker");
    run_ok(WORKER, &["stop", wdir.to_str().unwrap()]);
    run_ok(MINIBOT, &["stop", dir]);
}

#[test]
fn commands_work_on_foreground_daemons() {
    let s = Setup::new(PASSING_TEST, "");
    let dir = s.master.to_str().unwrap();
    // Foreground, as under supervisord.
    let mut master = s.start_master();
    let mut worker = s.start_worker("example-worker", WORKER_PW);
    s.wait_connected("example-worker");
    let out = run_ok(MINIBOT, &["reconfig", dir]);
    assert!(out.contains("reconfig: done"), "{out}");

    // The worker twin: stop ends the foreground worker with exit 0.
    let wdir = s.tmp.path().join("example-worker");
    let _stop = stop_on_drop(&s, &wdir);
    let out = run_ok(WORKER, &["stop", wdir.to_str().unwrap()]);
    assert!(out.contains("stopped"), "{out}");
    assert_eq!(worker.wait_exit(Duration::from_secs(30)), Some(0));
    // restart of the stopped worker starts a detached one.
    run_ok(WORKER, &["restart", wdir.to_str().unwrap()]);
    s.wait_connected("example-worker");

    // restart of the foreground master: stopped (exit 0), then detached.
    let out = run_ok(MINIBOT, &["restart", dir]);
    assert!(out.contains(&format!("127.0.0.1:{}", s.www())), "{out}");
    assert_eq!(master.wait_exit(Duration::from_secs(30)), Some(0));
    let (code, _) = curl(&[&s.url("/api/v2/builders")]);
    assert_eq!(code, 200);
    // The detached worker finds the new master by itself.
    s.wait_connected("example-worker");
    // And restart of a detached worker.
    run_ok(WORKER, &["restart", wdir.to_str().unwrap()]);
    s.wait_connected("example-worker");
    run_ok(WORKER, &["stop", wdir.to_str().unwrap()]);
    run_ok(MINIBOT, &["stop", dir]);
    assert!(!s.master.join("minibot.pid").exists());
    assert!(!wdir.join("minibot-worker.pid").exists());
}

/// A test that says it started (a file next to the gate), then waits for
/// the gate.
fn waiting_test(gate: &Path) -> String {
    format!(
        "import os, time\nopen({started:?}, 'w').close()\nwhile not os.path.exists({gate:?}):\n    time.sleep(0.02)\nprint('finished')\n",
        started = gate.with_extension("started").display().to_string(),
        gate = gate.display().to_string()
    )
}

#[test]
fn stop_clean_lets_the_running_build_finish() {
    let gates = tempfile::tempdir().unwrap();
    let gate = gates.path().join("go");
    let s = Setup::new(&waiting_test(&gate), "");
    let dir = s.master.to_str().unwrap().to_string();
    let mut master = s.start_master();
    let _worker = s.start_worker("example-worker", WORKER_PW);
    s.wait_connected("example-worker");
    s.push(&s.head, "master", "x");
    wait_for("the build to run", Duration::from_secs(60), || {
        gate.with_extension("started").exists().then_some(())
    });
    let stopper = std::thread::spawn(move || run(MINIBOT, &["stop", "--clean", &dir]));
    s.wait_status("the master to start its clean stop", |st| {
        (st.state == MasterState::Draining).then_some(())
    });
    // Still serving the running build: not dead, build not closed.
    assert!(
        master.child.try_wait().unwrap().is_none(),
        "the master died"
    );
    let running = get_json(&s.url("/api/v2/builds?complete=false"));
    assert_eq!(running["meta"]["total"], 1, "{running}");
    std::fs::write(&gate, "").unwrap();
    let out = stopper.join().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("master stopped"));
    assert_eq!(master.wait_exit(Duration::from_secs(30)), Some(0));
    // The build finished normally (not RETRY).
    let _master2 = s.start_master();
    let b = get_json(&s.url("/api/v2/builds"));
    assert_eq!(b["builds"][0]["results"], 0, "{b}");
}

/// `port = 0` for both listeners: the master binds free ports and reports
/// them in its ready line (stdout and master.log) and in `addresses.json`
/// (0600, its pid, removed when it stops); a worker created with the
/// reported port connects.
#[test]
fn port_zero_is_reported_and_workers_reach_it() {
    use std::os::unix::fs::PermissionsExt;
    let s = Setup::new(PASSING_TEST, "");
    let cfg = std::fs::read_to_string(s.master.join("master.cfg")).unwrap();
    assert_eq!(cfg.matches("\nport = 0\n").count(), 2, "{cfg}");
    let (mut master, line) = start_daemon(
        MINIBOT,
        &["start", "--nodaemon", s.master.to_str().unwrap()],
        "master",
    );
    let addresses = s.master.join(ADDRESSES);
    let text = std::fs::read_to_string(&addresses).expect("addresses.json once ready");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["pid"], master.pid(), "{text}");
    let mode = std::fs::metadata(&addresses).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let (www, wport) = master_addresses(&s.master, Some(master.pid())).unwrap();
    assert!(www != 0 && wport != 0 && www != wport, "{text}");
    assert_eq!(v["www"], format!("127.0.0.1:{www}"));
    assert_eq!(v["worker"], format!("127.0.0.1:{wport}"));
    let ready = format!(
        "minibot master serving the web UI at http://127.0.0.1:{www}/ and workers on 127.0.0.1:{wport}"
    );
    assert_eq!(line.trim_end(), ready);
    s.wait_master_log(&ready);

    s.learn_ports(master.pid());
    let _worker = s.start_worker("example-worker", WORKER_PW);
    s.wait_connected("example-worker");
    // Pinned for the next start, where running workers expect the master.
    let cfg = std::fs::read_to_string(s.master.join("master.cfg")).unwrap();
    assert!(
        cfg.contains(&format!("[www]\nport = {www}\n"))
            && cfg.contains(&format!("[protocols.worker]\nport = {wport}\n")),
        "{cfg}"
    );

    master.signal(libc::SIGTERM);
    assert_eq!(master.wait_exit(Duration::from_secs(30)), Some(0));
    assert!(
        !addresses.exists(),
        "addresses.json left after a clean stop"
    );
}
