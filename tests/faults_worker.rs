//! Issue 16 point 4 with the real master and worker: a worker killed with
//! SIGKILL mid-step takes the step's processes with it, and the build the
//! master retries runs alone in the build directory.
//! (`tests/worker_steps.rs` has the same against a fake master, and the
//! build-directory lock.)

use crate::common::*;
use std::time::{Duration, Instant};

/// The repository's test: attempt N (counted in `<tmp>/stamps`, three
/// levels above the build directory) stamps its start, starts a `sleep`
/// grandchild, writes both pids to `<tmp>/pids-N`; the first attempt then
/// waits (until killed), a later one stamps its end after a second.
const ATTEMPTS_TEST: &str = r#"import os, subprocess, time
d = "../../.."
stamps = os.path.join(d, "stamps")
attempt = 1
if os.path.exists(stamps):
    with open(stamps) as f:
        attempt += sum(1 for line in f if line.startswith("start"))
with open(stamps, "a") as f:
    f.write(f"start {attempt}\n")
child = subprocess.Popen(["sleep", "300"])
with open(os.path.join(d, f"pids-{attempt}"), "w") as f:
    f.write(f"{os.getpid()} {child.pid}\n")
print("started", flush=True)
time.sleep(120 if attempt == 1 else 1)
with open(stamps, "a") as f:
    f.write(f"end {attempt}\n")
child.kill()
print("OK")
"#;

#[test]
fn worker_killed_mid_step_leaves_no_process_and_the_retry_runs_alone() {
    let s = Setup::new(ATTEMPTS_TEST, "");
    let _master = s.start_master();
    let worker = s.start_worker("example-worker", WORKER_PW);
    s.wait_connected("example-worker");
    s.push(&s.head, "master", "x");
    let pids_file = s.tmp.path().join("pids-1");
    let pids: Vec<i32> = wait_for("the first attempt's pids", Duration::from_secs(60), || {
        let t = std::fs::read_to_string(&pids_file).ok()?;
        let p: Vec<i32> = t
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        (p.len() == 2).then_some(p)
    });
    let pgid = process_group_of(pids[0]).expect("the step runs");
    let members = process_group_members(pgid);
    assert!(
        pids.iter().all(|p| members.contains(p)),
        "{pids:?} not all in group {pgid}: {members:?}"
    );

    worker.signal(libc::SIGKILL);
    drop(worker);
    let t0 = Instant::now();
    while !process_group_members(pgid).is_empty() && t0.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left = process_group_members(pgid);
    eprintln!(
        "kill -9 worker mid-step: {} step process(es) before, {} left after {:?}",
        members.len(),
        left.len(),
        t0.elapsed()
    );
    assert!(
        left.is_empty(),
        "alive 2 s after kill -9 of the worker: {left:?}"
    );

    // The master retries the build on the worker's next start; it runs
    // alone: the first attempt never wrote again.
    let _worker2 = s.start_worker("example-worker", WORKER_PW);
    let builds = s.wait_builds(2, Duration::from_secs(60));
    assert_eq!(builds[0]["results"], 5, "first build RETRY: {builds:?}");
    assert_eq!(builds[1]["results"], 0, "the retry succeeds: {builds:?}");
    assert_eq!(builds[1]["buildrequestid"], builds[0]["buildrequestid"]);
    assert_eq!(
        std::fs::read_to_string(s.tmp.path().join("stamps")).unwrap(),
        "start 1\nstart 2\nend 2\n"
    );
    let pids2: Vec<i32> = std::fs::read_to_string(s.tmp.path().join("pids-2"))
        .unwrap()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    for p in pids.iter().chain(&pids2) {
        assert!(process_gone(*p), "process {p} of a finished step is alive");
    }
}
