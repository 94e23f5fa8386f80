//! Faults around a running build, with the real binaries: a worker killed
//! mid-build, a master killed with SIGKILL mid-build, a second worker under
//! a connected name, reconfig (good and bad; starting and stopping the
//! reporters and poller threads), daemon mode.

use crate::common::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// A test that prints "started", then waits until `gate` exists: the test
/// decides when the build may finish, with no sleeps that race.
fn gated_test(gate: &Path) -> String {
    format!(
        "import os, time\nprint('started', flush=True)\nwhile not os.path.exists({gate:?}):\n    time.sleep(0.02)\nprint('released')\n",
        gate = gate.display().to_string()
    )
}

fn wait_step_running(s: &Setup) -> i64 {
    wait_for(
        "the test step to print 'started'",
        Duration::from_secs(60),
        || {
            let v = get_json(&s.url("/api/v2/builds?complete=false"));
            let b = v["builds"].as_array()?.first()?.clone();
            let id = b["buildid"].as_i64()?;
            let steps = get_json(&s.url(&format!("/api/v2/builds/{id}/steps")));
            let test = steps["steps"]
                .as_array()?
                .iter()
                .find(|s| s["name"] == "test")?
                .clone();
            let logs = get_json(&s.url(&format!("/api/v2/steps/{}/logs", test["stepid"])));
            let logid = logs["logs"].as_array()?.first()?["logid"].as_i64()?;
            let (_, raw) = curl(&[&s.url(&format!("/api/v2/logs/{logid}/raw"))]);
            raw.contains("started").then_some(id)
        },
    )
}

/// A master and a worker with a build of the gated test running.
struct Running {
    s: Setup,
    master: Proc,
    worker: Proc,
    gate: std::path::PathBuf,
    buildid: i64,
}

fn start_gated_build() -> Running {
    // The step runs in <tmp>/example-worker/runtests/build.
    let s = Setup::new(&gated_test(Path::new("../../../gate")), "");
    let gate = s.tmp.path().join("gate");
    let master = s.start_master();
    let worker = s.start_worker("example-worker", WORKER_PW);
    s.wait_connected("example-worker");
    s.push(&s.head, "master", "x");
    let buildid = wait_step_running(&s);
    Running {
        s,
        master,
        worker,
        gate,
        buildid,
    }
}

#[test]
fn worker_killed_mid_build_is_retried_and_rebuilt() {
    let Running {
        s,
        master: _master,
        worker,
        gate,
        buildid: first,
    } = start_gated_build();
    worker.signal(libc::SIGKILL);
    drop(worker);
    // The master notices (EOF) and closes the build as RETRY.
    let b = wait_for("build closed as RETRY", Duration::from_secs(30), || {
        let v = get_json(&s.url(&format!("/api/v2/builds/{first}")));
        (v["builds"][0]["complete"] == true).then(|| v["builds"][0].clone())
    });
    assert_eq!(b["results"], 5, "{b}");
    // The request went back on the queue and runs when a worker returns.
    let req = get_json(&s.url("/api/v2/buildrequests"));
    assert_eq!(req["buildrequests"][0]["claimed"], false, "{req}");
    std::fs::write(&gate, "").unwrap();
    let _worker2 = s.start_worker("example-worker", WORKER_PW);
    let builds = s.wait_builds(2, Duration::from_secs(60));
    assert_eq!(builds[1]["results"], 0, "{:?}", builds);
    assert_eq!(builds[1]["buildrequestid"], builds[0]["buildrequestid"]);
    let req = get_json(&s.url("/api/v2/buildrequests"));
    assert_eq!(req["meta"]["total"], 1, "one request, built twice: {req}");
    assert_eq!(req["buildrequests"][0]["results"], 0);
}

#[test]
fn master_killed_mid_build_retries_after_restart() {
    let Running {
        s,
        master,
        worker: _worker,
        gate,
        buildid: first,
    } = start_gated_build();
    master.signal(libc::SIGKILL);
    drop(master);
    std::fs::write(&gate, "").unwrap();
    // A stale pid file is no obstacle; the dead master's build is RETRY.
    let _master2 = s.start_master();
    let b = get_json(&s.url(&format!("/api/v2/builds/{first}")));
    assert_eq!(b["builds"][0]["results"], 5, "{b}");
    // The worker reconnects by itself (backoff) and the request runs again.
    let builds = s.wait_builds(2, Duration::from_secs(90));
    assert_eq!(builds[1]["results"], 0, "{builds:?}");
    let changes = get_json(&s.url("/api/v2/changes"));
    assert_eq!(changes["meta"]["total"], 1);
}

#[test]
fn hook_acknowledged_just_before_kill_is_built_after_restart() {
    let s = Setup::new(PASSING_TEST, "");
    let master = s.start_master();
    // No worker: the change is acknowledged, the request queued.
    let ids = s.push(&s.head, "master", "x");
    assert_eq!(ids.len(), 1);
    master.signal(libc::SIGKILL);
    drop(master);
    let _master2 = s.start_master();
    let _worker = s.start_worker("example-worker", WORKER_PW);
    let b = &s.wait_builds(1, Duration::from_secs(60))[0];
    assert_eq!(b["results"], 0);
    let reqs = get_json(&s.url("/api/v2/buildrequests"));
    assert_eq!(
        reqs["meta"]["total"], 1,
        "exactly one build request: {reqs}"
    );
}

#[test]
fn second_worker_with_a_connected_name_is_refused() {
    let s = Setup::new(PASSING_TEST, "");
    let _master = s.start_master();
    let _w1 = s.start_worker("example-worker", WORKER_PW);
    s.wait_connected("example-worker");
    // Same name from another directory.
    let _w2 = s.start_worker_in("imposter", "example-worker", WORKER_PW, &[]);
    s.wait_status("a login as example-worker refused", |st| {
        (st.worker_logins_refused
            .get("example-worker")?
            .already_connected
            > 0)
        .then_some(())
    });
    // A wrong password is refused too.
    let _w3 = s.start_worker_in("wrongpw", "second-worker", "not-the-password", &[]);
    s.wait_status("a login as second-worker refused", |st| {
        (st.worker_logins_refused
            .get("second-worker")?
            .wrong_password
            > 0)
        .then_some(())
    });
    let w = get_json(&s.url("/api/v2/workers/second-worker"));
    assert_eq!(w["workers"][0]["connected_to"], serde_json::json!([]));
}

#[test]
fn reconfig_adds_a_builder_and_rejects_a_bad_file() {
    let s = Setup::new(PASSING_TEST, "");
    let _master = s.start_master();
    let _worker = s.start_worker("example-worker", WORKER_PW);
    s.wait_connected("example-worker");
    let cfg_path = s.master.join("master.cfg");
    let good = std::fs::read_to_string(&cfg_path).unwrap();

    // A bad file: rejected with the key named, the old config stays.
    std::fs::write(
        &cfg_path,
        format!("{good}\n[[builders]]\nname = \"x\"\nworkers = [\"nobody\"]\n"),
    )
    .unwrap();
    let out = run(MINIBOT, &["reconfig", s.master.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("builders #2 (name = \"x\").workers"), "{err}");

    // A good file adding a builder on a new branch's scheduler.
    let extra = r#"
[[schedulers]]
name = "dev"
type = "single_branch"
branch = "dev"
builders = ["devtests"]
[[builders]]
name = "devtests"
workers = ["example-worker"]
[[builders.steps]]
type = "shell"
command = "echo dev-build-%(prop:branch)s"
"#;
    std::fs::write(&cfg_path, format!("{good}{extra}")).unwrap();
    let out = run_ok(MINIBOT, &["reconfig", s.master.to_str().unwrap()]);
    assert!(out.contains("reconfig: done"), "{out}");
    let builders = get_json(&s.url("/api/v2/builders"));
    assert_eq!(builders["meta"]["total"], 2, "{builders}");
    // The connected worker takes the new builder's build without a restart.
    s.push(&s.head, "dev", "on dev");
    let b = &s.wait_builds(1, Duration::from_secs(60))[0];
    assert_eq!(b["results"], 0, "{b}");
    let log = s.step_log(b["buildid"].as_i64().unwrap(), "echo");
    assert!(log.contains("dev-build-dev"), "{log}");
}

#[test]
fn reconfig_starts_and_stops_the_reporter_and_poller_threads() {
    const TOKEN: &str = "reconfig-token";
    let s = Setup::new(PASSING_TEST, "");
    let master = s.start_master();
    let _worker = s.start_worker("example-worker", WORKER_PW);
    s.wait_connected("example-worker");
    let optional = ["gitea-status", "mail", "poller", "reporters"];
    let running = |names: &[&str]| {
        let t = thread_names(master.pid());
        optional
            .iter()
            .all(|o| t.iter().any(|n| n == o) == names.contains(o))
    };
    assert!(running(&[]), "{:?}", thread_names(master.pid()));

    // Add a gitea_status reporter and a git_poller on a bare copy of the
    // repository (the "Gitea" the master polls).
    let gitea = FakeGitea::start(TOKEN);
    write_private(&s.master.join("gitea-token"), &format!("{TOKEN}\n"));
    let upstream = s.tmp.path().join("gitea.git");
    s.bare_clone(&upstream);
    let cfg_path = s.master.join("master.cfg");
    let good = std::fs::read_to_string(&cfg_path).unwrap();
    let extra = format!(
        r#"
[[reporters]]
type = "gitea_status"
base_url = "{}"
token_file = "gitea-token"
{}"#,
        gitea.url(),
        git_poller_cfg(&upstream)
    );
    std::fs::write(&cfg_path, format!("{good}{extra}")).unwrap();
    let dir = s.master.to_str().unwrap();
    assert!(run_ok(MINIBOT, &["reconfig", dir]).contains("reconfig: done"));
    wait_for("the new threads", Duration::from_secs(10), || {
        running(&["gitea-status", "poller", "reporters"]).then_some(())
    });

    // The reporter reports the next build...
    s.push(&s.head, "master", "after the reconfig");
    assert_eq!(s.wait_builds(1, Duration::from_secs(60))[0]["results"], 0);
    assert_eq!(
        gitea.wait_final(&s.head, Duration::from_secs(30)),
        ["pending", "success"]
    );
    // ...and the poller, once it has seen where master was, finds a commit
    // pushed to the upstream.
    wait_for("the first poll", Duration::from_secs(20), || {
        let v: Vec<String> = db_query(&s.master, "SELECT revision FROM poller_state");
        (!v.is_empty()).then_some(())
    });
    let polled = s.commit("polled.txt", "polled", "found by the poller");
    git(
        &s.repo,
        &["push", "-q", upstream.to_str().unwrap(), "master"],
    );
    wait_for("the polled change", Duration::from_secs(30), || {
        let revs: Vec<String> = db_query(&s.master, "SELECT revision FROM changes");
        revs.contains(&polled).then_some(())
    });

    // Taken out again: their threads end.
    std::fs::write(&cfg_path, &good).unwrap();
    assert!(run_ok(MINIBOT, &["reconfig", dir]).contains("reconfig: done"));
    wait_for("the threads to end", Duration::from_secs(20), || {
        running(&[]).then_some(())
    });
    assert!(gitea.problems.lock().unwrap().is_empty());
}

#[test]
fn daemon_mode_start_refuse_twice_stop() {
    let s = Setup::new(PASSING_TEST, "");
    let dir = s.master.to_str().unwrap();
    let out = run_ok(MINIBOT, &["start", dir]);
    s.read_ports();
    assert!(out.contains(&format!("127.0.0.1:{}", s.www())), "{out}");
    let out = run(MINIBOT, &["start", dir]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already running"));
    let (code, _) = curl(&[&s.url("/api/v2/builders")]);
    assert_eq!(code, 200);
    run_ok(MINIBOT, &["stop", dir]);
    assert!(!s.master.join("minibot.pid").exists());
    let out = run(MINIBOT, &["stop", dir]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no master is running"));
    // A bad config is reported by start itself, naming the key.
    std::fs::write(s.master.join("master.cfg"), "title = 3\n").unwrap();
    let out = run(MINIBOT, &["start", dir]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("title"),
        "{out:?}"
    );
}

#[test]
fn sigterm_mid_build_retries_the_build_and_exits_zero() {
    let Running {
        s,
        mut master,
        worker: _worker,
        gate,
        buildid: first,
    } = start_gated_build();
    master.signal(libc::SIGTERM);
    assert_eq!(master.wait_exit(Duration::from_secs(20)), Some(0));
    assert!(!s.master.join("minibot.pid").exists(), "pid file removed");
    std::fs::write(&gate, "").unwrap();
    let _master2 = s.start_master();
    let b = get_json(&s.url(&format!("/api/v2/builds/{first}")));
    assert_eq!(b["builds"][0]["results"], 5, "{b}");
    let builds = s.wait_builds(2, Duration::from_secs(90));
    assert_eq!(builds[1]["results"], 0, "{builds:?}");
}

#[test]
fn worker_sigterm_mid_build_retries_instead_of_cancelling() {
    let Running {
        s,
        master: _master,
        mut worker,
        gate,
        buildid: first,
    } = start_gated_build();
    worker.signal(libc::SIGTERM);
    assert_eq!(worker.wait_exit(Duration::from_secs(20)), Some(0));
    let b = wait_for("build closed", Duration::from_secs(30), || {
        let v = get_json(&s.url(&format!("/api/v2/builds/{first}")));
        (v["builds"][0]["complete"] == true).then(|| v["builds"][0].clone())
    });
    assert_eq!(b["results"], 5, "a worker going away is RETRY: {b}");
    std::fs::write(&gate, "").unwrap();
    let _worker2 = s.start_worker("example-worker", WORKER_PW);
    let builds = s.wait_builds(2, Duration::from_secs(60));
    assert_eq!(builds[1]["results"], 0, "{builds:?}");
}

/// `minibot reconfig` takes the outcome from the master's status file
/// (`reconfig.json`), not from its log: with the log at "warn", where the
/// "reconfig: done" line is not written, it still answers at once, twice.
#[test]
fn reconfig_answers_with_the_log_at_warn() {
    use std::os::unix::fs::PermissionsExt;
    let s = Setup::new(PASSING_TEST, "");
    let dir = s.master.to_str().unwrap();
    let (_master, _) = start_daemon_env(
        MINIBOT,
        &["start", "--nodaemon", dir],
        "master",
        &[("RUST_LOG", "warn")],
    );
    for _ in 0..2 {
        let t = Instant::now();
        let out = run_ok(MINIBOT, &["reconfig", dir]);
        assert!(out.contains("reconfig: done (1 builders"), "{out}");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    }
    // The warn level hides the info line: the command did not need it.
    let log = s.master_log();
    assert!(!log.contains("reconfig: done"), "{log}");
    let status = s.master.join("reconfig.json");
    let mode = std::fs::metadata(&status).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let st: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&status).unwrap()).unwrap();
    assert_eq!(st["generation"], 2, "{st}");
    assert_eq!(st["outcome"], "done", "{st}");
}
