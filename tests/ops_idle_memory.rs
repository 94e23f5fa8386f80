//! The master gives memory back once it goes quiet after builds: a burst
//! of queued builds runs, then, with none running, the botmaster releases
//! SQLite's page caches and glibc's free heap once (counted in
//! `status.json`), and builds keep working afterwards. RSS figures are the
//! benchmark's (docs/performance.md); nothing here is timed.

use crate::common::*;
use std::time::Duration;

/// Waits until `status.json` counts `n` idle releases; returns the count
/// and the last release.
fn wait_releases(s: &Setup, n: u64) -> (u64, IdleRelease) {
    s.wait_status(&format!("{n} idle memory releases"), |st| {
        let last = st.last_idle_memory_release.clone()?;
        (st.idle_memory_releases >= n).then_some((st.idle_memory_releases, last))
    })
}

#[test]
fn idle_master_releases_memory_once_after_builds_and_builds_still_run() {
    let s = Setup::new(PASSING_TEST, &quick_builder_cfg(&["example-worker"]));
    let _master = s.start_master();
    let _worker = s.start_worker("example-worker", WORKER_PW);
    s.wait_connected("example-worker");

    // A burst queued at once, as the benchmark's deep queues are.
    for i in 0..30 {
        hook_push(s.www(), &fake_sha(i), "burst").unwrap();
    }
    assert_eq!(wait_requests_done(&s.master, Duration::from_secs(60)), 30);
    let (first, release) = wait_releases(&s, 1);
    // One release for the burst: none while the master was idle before it,
    // none between its builds (the worker was never without a build long
    // enough), and the thread waits again without a timeout after it.
    assert_eq!(first, 1, "{release:?}");
    // Linux says how much: the sizes are recorded.
    assert!(
        release.released_kb.is_some() && release.anon_rss_after_kb.is_some(),
        "{release:?}"
    );

    // Builds still run after it, with a full checkout and the test step:
    // every connection whose cache was emptied reads again.
    s.push(&s.head, "master", "after the release");
    let builds = s.wait_builds(31, Duration::from_secs(60));
    let last = builds.last().unwrap();
    assert_eq!(last["results"], 0, "{last}");
    assert!(s
        .step_log(last["buildid"].as_i64().unwrap(), "test")
        .contains("hello from test_hello"));
    // ... and that busy period ends with a release of its own.
    let (second, _) = wait_releases(&s, 2);
    assert_eq!(second, 2);
}
