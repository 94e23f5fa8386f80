//! Issue 16 point 4, repeated: a worker killed with SIGKILL mid-step, round
//! after round, with the real master and worker. Each round the step (a
//! python test with a shell child and two `sleep` grandchildren) must be
//! gone within 2 s of the kill, the build closed RETRY, and the next
//! attempt must run alone (no attempt writes after the next one started).
//! Long: `#[ignore]`, run by `scripts/reliability`.

use crate::common::*;
use std::time::{Duration, Instant};

/// Kills in a row; then the build is let through.
const ROUNDS: usize = 25;

/// Attempt N (counted in `<tmp>/stamps`) stamps its start, starts
/// `sh -c "sleep 300 & sleep 300"`, writes its pids to `<tmp>/pids-N`, waits
/// for `<tmp>/gate` and stamps its end.
const GATED_ATTEMPTS_TEST: &str = r#"import os, subprocess, time
d = "../../.."
stamps = os.path.join(d, "stamps")
attempt = 1
if os.path.exists(stamps):
    with open(stamps) as f:
        attempt += sum(1 for line in f if line.startswith("start"))
with open(stamps, "a") as f:
    f.write(f"start {attempt}\n")
child = subprocess.Popen(["sh", "-c", "sleep 300 & sleep 300"])
with open(os.path.join(d, f"pids-{attempt}"), "w") as f:
    f.write(f"{os.getpid()} {child.pid}\n")
print("started", flush=True)
deadline = time.time() + 120
while not os.path.exists(os.path.join(d, "gate")) and time.time() < deadline:
    time.sleep(0.05)
with open(stamps, "a") as f:
    f.write(f"end {attempt}\n")
child.kill()
print("OK")
"#;

#[test]
#[ignore = "long; run by scripts/reliability"]
fn repeated_kill_9_of_the_worker_mid_step_leaves_no_step_behind() {
    let s = Setup::new(GATED_ATTEMPTS_TEST, "");
    let _master = s.start_master();
    let mut worker = s.start_worker("example-worker", WORKER_PW);
    s.wait_connected("example-worker");
    s.push(&s.head, "master", "x");
    let (mut before, mut left, mut slowest) = (0, 0, Duration::ZERO);
    for round in 1..=ROUNDS {
        let pids_file = s.tmp.path().join(format!("pids-{round}"));
        let pids: Vec<i32> = wait_for(
            &format!("attempt {round}'s pids"),
            Duration::from_secs(60),
            || {
                let t = std::fs::read_to_string(&pids_file).ok()?;
                let p: Vec<i32> = t
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect();
                (p.len() == 2).then_some(p)
            },
        );
        let pgid = process_group_of(pids[0]).expect("the step runs");
        // python, sh, two sleeps, the guard: wait until sh has started both.
        let members = wait_for("the step's processes", Duration::from_secs(10), || {
            let m = process_group_members(pgid);
            (m.len() >= 5).then_some(m)
        });
        worker.signal(libc::SIGKILL);
        drop(worker);
        let t0 = Instant::now();
        while !process_group_members(pgid).is_empty() && t0.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let rest = process_group_members(pgid);
        before += members.len();
        left += rest.len();
        slowest = slowest.max(t0.elapsed());
        assert!(
            rest.is_empty(),
            "round {round}: alive 2 s after kill -9 of the worker: {rest:?}"
        );
        // The master closes the build as RETRY, then a new worker process
        // takes the request again.
        s.wait_builds(round, Duration::from_secs(30));
        worker = s.start_worker("example-worker", WORKER_PW);
    }
    std::fs::write(s.tmp.path().join("gate"), "").unwrap();
    let builds = s.wait_builds(ROUNDS + 1, Duration::from_secs(60));
    let results: Vec<i64> = builds
        .iter()
        .map(|b| b["results"].as_i64().unwrap())
        .collect();
    let mut want = vec![5; ROUNDS];
    want.push(0);
    assert_eq!(results, want, "RETRY × {ROUNDS}, then SUCCESS");
    let mut stamps: String = (1..=ROUNDS + 1).map(|n| format!("start {n}\n")).collect();
    stamps.push_str(&format!("end {}\n", ROUNDS + 1));
    assert_eq!(
        std::fs::read_to_string(s.tmp.path().join("stamps")).unwrap(),
        stamps,
        "an attempt wrote after the next one had started"
    );
    eprintln!(
        "kill -9 of the worker mid-step, {ROUNDS} rounds: {before} step processes \
         (guards included) before the kills, {left} left after 2 s (slowest round \
         emptied in {slowest:?}); {ROUNDS} builds retried, the last attempt alone \
         and green"
    );
}
