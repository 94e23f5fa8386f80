//! Worker faults with the real binaries: a worker frozen by SIGSTOP is
//! found dead by keepalive and its build retried; the master killed while
//! workers are connected: they reconnect by themselves and take new
//! builds; 20 readers on the API and pages while 4 workers build and hooks
//! arrive: no 5xx, no `database is locked`, no deadlock (a deadline bounds
//! it). Long: `#[ignore]`, run by `scripts/reliability`.
//! (`tests/recovery.rs` covers SIGKILL/SIGTERM of a worker mid-build.)

use crate::common::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Keepalive of the test masters and workers (`Setup`): 2 s.
const KEEPALIVE: Duration = Duration::from_secs(2);

#[test]
#[ignore = "long; run by scripts/reliability"]
fn frozen_worker_is_detected_by_keepalive_and_its_build_retried() {
    let dir = tempfile::tempdir().unwrap();
    let script = gated_script(dir.path(), 1);
    let s = Setup::new(PASSING_TEST, &gated_cfg(&script, dir.path()));
    let _master = s.start_master();
    let worker = s.start_worker("example-worker", WORKER_PW);
    s.wait_connected("example-worker");
    let auth = basic();
    add_user(&s.master, USER, PASSWORD);
    let (code, v) = rpc(
        &s.url("/api/v2/forceschedulers/force"),
        Some(&auth),
        "force",
        serde_json::json!({"builderNames": ["gated"]}),
    );
    assert_eq!(code, 200, "{v}");
    let brid = v["result"][1].as_object().unwrap().values().next().unwrap();
    let first = s.wait_build_of(brid.as_i64().unwrap());
    wait_for("the build to start", Duration::from_secs(30), || {
        dir.path().join("pids").exists().then_some(())
    });
    let frozen_at = Instant::now();
    worker.signal(libc::SIGSTOP);
    let b = s.wait_build(first, Duration::from_secs(60));
    let detected = frozen_at.elapsed();
    eprintln!(
        "worker frozen with SIGSTOP (keepalive {KEEPALIVE:?}): build {first} closed as {} after {detected:?}",
        b["results"]
    );
    assert_eq!(b["results"], 5, "{b}");
    // Dead after 3 keepalives of silence, checked every keepalive.
    assert!(detected >= 3 * KEEPALIVE, "{detected:?}");
    let w = get_json(&s.url("/api/v2/workers/example-worker"));
    assert_eq!(w["workers"][0]["connected_to"], serde_json::json!([]));
    // Thawed, the worker finds its connection gone, reconnects, and the
    // request runs again on it; the old build's late report changes nothing.
    std::fs::write(dir.path().join("gate-0"), "").unwrap();
    worker.signal(libc::SIGCONT);
    let again = wait_for("a second build", Duration::from_secs(60), || {
        let v = get_json(&s.url("/api/v2/builds?complete=true&order=buildid"));
        let b = v["builds"].as_array()?.clone();
        (b.len() >= 2).then(|| b[1].clone())
    });
    eprintln!(
        "after SIGCONT: request {brid} rebuilt as build {}: {}",
        again["buildid"], again["results"]
    );
    assert_eq!(again["results"], 0, "{again}");
    assert_eq!(again["buildrequestid"], *brid);
    let b = get_json(&s.url(&format!("/api/v2/builds/{first}")));
    assert_eq!(b["builds"][0]["results"], 5, "the RETRY stays: {b}");
    assert_eq!(get_json(&s.url("/api/v2/builds"))["meta"]["total"], 2);
}

#[test]
#[ignore = "long; run by scripts/reliability"]
fn workers_reconnect_after_the_master_is_killed_and_take_new_builds() {
    let s = Setup::new(
        PASSING_TEST,
        &quick_builder_cfg(&["example-worker", "second-worker"]),
    );
    let master = s.start_master();
    let _workers = s.start_two_workers();
    s.push(&fake_sha(1), "burst", "before");
    s.wait_builds(1, Duration::from_secs(60));
    master.signal(libc::SIGKILL);
    drop(master);
    let t = Instant::now();
    let _master2 = s.start_master();
    s.wait_connected("example-worker");
    s.wait_connected("second-worker");
    let back = t.elapsed();
    for i in 2..12 {
        s.push(&fake_sha(i), "burst", "after");
    }
    let builds = s.wait_builds(11, Duration::from_secs(60));
    let workers: std::collections::BTreeSet<String> = builds[1..]
        .iter()
        .map(|b| b["workerid"].to_string())
        .collect();
    eprintln!(
        "master killed with 2 workers connected: both back {back:?} after the restart began; 10 new builds ran on workers {workers:?}"
    );
    assert!(builds.iter().all(|b| b["results"] == 0), "{builds:?}");
    // What the worker tells its operator while the master is away.
    let log = operator_log(&s.tmp.path().join("example-worker/worker.log"));
    assert!(
        log.contains("reconnecting in"),
        "the worker backs off: {log}"
    );
}

const READERS: usize = 20;
const HOOKS: u64 = 200;

#[test]
#[ignore = "long; run by scripts/reliability"]
fn twenty_readers_four_workers_and_hooks_without_errors() {
    let workers = ["example-worker", "second-worker", "w3", "w4"];
    let extra = format!(
        "{}\n[[workers]]\nname = \"w3\"\npassword = \"fixture-password-3\"\n[[workers]]\nname = \"w4\"\npassword = \"fixture-password-4\"\n",
        quick_builder_cfg(&workers)
    );
    let s = Setup::new(PASSING_TEST, &extra);
    let _master = s.start_master();
    let _procs: Vec<Proc> = workers
        .iter()
        .zip([
            WORKER_PW,
            WORKER2_PW,
            "fixture-password-3",
            "fixture-password-4",
        ])
        .map(|(w, p)| s.start_worker(w, p))
        .collect();
    for w in workers {
        s.wait_connected(w);
    }
    s.push(&fake_sha(0), "burst", "first");
    s.wait_builds(1, Duration::from_secs(60));
    let stop = Arc::new(AtomicBool::new(false));
    let (reads, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let www = s.www();
    let readers: Vec<_> = (0..READERS)
        .map(|r| {
            let (stop, reads, errors) = (stop.clone(), reads.clone(), errors.clone());
            std::thread::spawn(move || {
                let paths = [
                    "/",
                    "/builders/quick",
                    "/builders/quick/builds/1",
                    "/workers",
                    "/changes",
                    "/badges/quick.svg",
                    "/api/v2/builds?order=-buildid&limit=20",
                    "/api/v2/builds/1/steps",
                    "/api/v2/changes?limit=50",
                    "/api/v2/buildrequests?complete=false",
                    "/api/v2/workers",
                    "/api/v2/builders",
                    "/api/v2/logs/1/raw",
                ];
                let mut i = r;
                let mut bad = vec![];
                while !stop.load(Ordering::Relaxed) {
                    let path = paths[i % paths.len()];
                    i += 1;
                    let code = get_status(&format!("http://127.0.0.1:{www}{path}"));
                    reads.fetch_add(1, Ordering::Relaxed);
                    if code != 200 {
                        errors.fetch_add(1, Ordering::Relaxed);
                        bad.push((path, code));
                    }
                }
                bad
            })
        })
        .collect();
    let mut hook_errors = vec![];
    for i in 1..=HOOKS {
        if let Err(e) = hook_push(www, &fake_sha(i), "burst") {
            hook_errors.push(e);
        }
    }
    // Bounded: a deadlock or a stuck queue fails here.
    let total = (HOOKS + 1) as usize;
    let builds = s.wait_builds(total, Duration::from_secs(180));
    stop.store(true, Ordering::Relaxed);
    let bad: Vec<_> = readers
        .into_iter()
        .flat_map(|r| r.join().unwrap())
        .collect();
    // No error reported to the operator: SQLite's own wording.
    let locked = s.master_log().matches("database is locked").count();
    let failed_builds = builds.iter().filter(|b| b["results"] != 0).count();
    let per_worker: std::collections::BTreeMap<String, usize> =
        builds.iter().fold(Default::default(), |mut m, b| {
            *m.entry(b["workerid"].to_string()).or_default() += 1;
            m
        });
    eprintln!(
        "{READERS} readers made {} requests ({} not 200) while {HOOKS} hooks ({} refused) became {} builds on 4 workers {per_worker:?} ({failed_builds} not green); 'database is locked' in the log: {locked}",
        reads.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
        hook_errors.len(),
        builds.len()
    );
    assert!(bad.is_empty(), "reads that were not 200: {bad:?}");
    assert!(hook_errors.is_empty(), "{hook_errors:?}");
    assert_eq!(locked, 0);
    assert_eq!(failed_builds, 0);
    assert_eq!(builds.len(), total);
}
