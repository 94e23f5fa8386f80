//! Crash safety with real faults: `kill -9` of the master in the middle of
//! a burst of signed hooks from several concurrent clients while workers
//! build. After the restart every acknowledged change must be in the
//! database and each must be built exactly once (builds cut by the kill
//! end RETRY and run again). Long: `#[ignore]`, run by `scripts/reliability`.
//! (`tests/recovery.rs` covers single hooks and single builds.)

use crate::common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CLIENTS: u64 = 4;
/// Hooks acknowledged before the kill (the burst goes on while it happens).
const KILL_AFTER: usize = 1000;

#[test]
#[ignore = "long; run by scripts/reliability"]
fn kill9_during_a_hook_burst_loses_nothing_and_builds_each_once() {
    let s = Setup::new(
        PASSING_TEST,
        &quick_builder_cfg(&["example-worker", "second-worker"]),
    );
    let master = s.start_master();
    let _workers = s.start_two_workers();

    // Clients post until the master is gone; each records what was
    // acknowledged (200 with change ids) and what was merely sent.
    let acked = Arc::new(Mutex::new(BTreeMap::<i64, String>::new()));
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (acked, sent, stop, www) = (acked.clone(), sent.clone(), stop.clone(), s.www());
            std::thread::spawn(move || {
                let mut failures = 0;
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) || failures >= 3 {
                        break;
                    }
                    let sha = fake_sha(c * 1_000_000 + i);
                    sent.fetch_add(1, Ordering::Relaxed);
                    match hook_push(www, &sha, "burst") {
                        Ok(ids) => {
                            assert_eq!(ids.len(), 1, "{sha}");
                            acked.lock().unwrap().insert(ids[0], sha);
                        }
                        // Refused connections after the kill end the client.
                        Err(_) => failures += 1,
                    }
                }
            })
        })
        .collect();
    wait_for(
        "enough acknowledged hooks",
        Duration::from_secs(120),
        || (acked.lock().unwrap().len() >= KILL_AFTER).then_some(()),
    );
    master.signal(libc::SIGKILL);
    drop(master);
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let sent = sent.load(Ordering::Relaxed);
    let running_at_kill: Vec<i64> = db_query(
        &s.master,
        "SELECT buildid FROM builds WHERE complete_at IS NULL",
    );

    let _master2 = s.start_master();
    // Every acknowledged change is there, with the revision it was sent with.
    let stored: BTreeMap<i64, String> =
        db_query::<String>(&s.master, "SELECT changeid || ' ' || revision FROM changes")
            .into_iter()
            .map(|r| {
                let (id, rev) = r.split_once(' ').unwrap();
                (id.parse().unwrap(), rev.to_string())
            })
            .collect();
    let present = acked
        .iter()
        .filter(|(id, sha)| stored.get(id) == Some(sha))
        .count();
    eprintln!(
        "{sent} hooks sent by {CLIENTS} clients, {} acknowledged before kill -9, {present} present after restart ({} stored in all; {} builds running at the kill)",
        acked.len(),
        stored.len(),
        running_at_kill.len()
    );
    assert_eq!(present, acked.len(), "acknowledged changes lost");

    // Every stored change becomes one request, built exactly once.
    let requests = wait_requests_done(&s.master, Duration::from_secs(240));
    let per_change: Vec<i64> = db_query(
        &s.master,
        "SELECT count(br.buildrequestid) FROM changes c
           LEFT JOIN buildset_changes bc ON bc.changeid = c.changeid
           LEFT JOIN buildrequests br ON br.buildsetid = bc.buildsetid
          GROUP BY c.changeid",
    );
    let good_builds: Vec<i64> = db_query(
        &s.master,
        "SELECT count(b.buildid) FROM buildrequests br
           LEFT JOIN builds b ON b.buildrequestid = br.buildrequestid AND b.results <> 5
          GROUP BY br.buildrequestid",
    );
    let retried: Vec<i64> = db_query(&s.master, "SELECT buildid FROM builds WHERE results = 5");
    let results: BTreeSet<i64> = db_query(&s.master, "SELECT results FROM buildrequests")
        .into_iter()
        .collect();
    let builds: i64 = db_query(&s.master, "SELECT count(*) FROM builds")[0];
    eprintln!(
        "{} changes -> {requests} build requests -> {builds} builds ({} RETRY after the kill, rebuilt); request results {results:?}",
        stored.len(),
        retried.len()
    );
    assert!(
        per_change.iter().all(|n| *n == 1),
        "a change without exactly one request: {per_change:?}"
    );
    assert_eq!(requests as usize, stored.len());
    assert!(
        good_builds.iter().all(|n| *n == 1),
        "a request built more or less than once"
    );
    assert_eq!(results, BTreeSet::from([0]), "every request succeeded");
    let retried_set: BTreeSet<i64> = retried.into_iter().collect();
    assert_eq!(
        retried_set,
        running_at_kill.into_iter().collect(),
        "exactly the builds cut by the kill are RETRY"
    );
}
