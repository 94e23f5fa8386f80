//! The janitor in a real master: real builds are run, aged by SQL while the
//! master is stopped, and pruned by the janitor's first run after the next
//! start, as `status.json` records; the API then agrees.

use crate::common::*;
use std::time::Duration;

#[test]
fn janitor_prunes_aged_builds_and_logs_after_start() {
    let s = Setup::new(
        PASSING_TEST,
        "[janitor]\nbuild_horizon_days = 30\nlog_horizon_days = 7\n",
    );
    let mut master = s.start_master();
    let _worker = s.start_worker("example-worker", WORKER_PW);
    s.wait_connected("example-worker");
    for i in 1..=3 {
        s.push(&s.head, "master", &format!("push {i}"));
        s.wait_builds(i, Duration::from_secs(60));
    }
    let builds = s.wait_builds(3, Duration::from_secs(60));
    let id = |i: usize| builds[i]["buildid"].as_i64().unwrap();
    let log_of = |i: usize| s.step_log(id(i), "test");
    assert!(log_of(1).contains("hello from test_hello"));
    master.signal(libc::SIGTERM);
    assert_eq!(master.wait_exit(Duration::from_secs(30)), Some(0));

    // The first build finished 40 days ago, the second 10 days ago.
    age_builds(&s.master, &[(id(0), 40), (id(1), 10)]);
    // How many log files of build `i` are on disk.
    let files_of = |i: usize| {
        std::fs::read_dir(minibot::db::log_root(&s.master))
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                minibot::db::log_entry_build(name.to_str().unwrap())
                    == Some(minibot::model::BuildId(id(i)))
            })
            .count()
    };
    assert_eq!(files_of(0), 2);

    let _master = s.start_master();
    let run = s.wait_status("the janitor's first run", |st| st.last_janitor_run.clone());
    assert_eq!(
        (run.rows.builds, run.rows.steps, run.rows.logs),
        (1, 2, 2),
        "one build past 30 days, with its steps and logs: {run:?}"
    );
    assert_eq!(
        (run.rows.buildrequests, run.rows.buildsets, run.rows.changes),
        (1, 1, 1),
        "{run:?}"
    );
    assert_eq!(run.log_builds, 1, "one build past 7 days: {run:?}");
    assert!(run.build_bytes > 0 && run.log_bytes > 0, "{run:?}");

    // The API agrees.
    let (code, _) = curl(&[&s.url(&format!("/api/v2/builds/{}", id(0)))]);
    assert_eq!(code, 404);
    let all = get_json(&s.url("/api/v2/builds"));
    assert_eq!(all["meta"]["total"], 2, "{all}");
    assert_eq!(get_json(&s.url("/api/v2/changes"))["meta"]["total"], 2);
    assert_eq!(
        get_json(&s.url("/api/v2/buildrequests"))["meta"]["total"],
        2
    );
    // The 10-day-old build stays, its log reads as empty, its line count
    // is kept; the newest is untouched.
    assert_eq!(log_of(1), "");
    assert!(log_of(2).contains("hello from test_hello"));
    assert_eq!(files_of(0), 0);
    assert_eq!(files_of(1), 0);
    assert_eq!(files_of(2), 2);
    let steps = get_json(&s.url(&format!("/api/v2/builds/{}/steps", id(1))));
    let stepid = steps["steps"][1]["stepid"].as_i64().unwrap();
    let l = get_json(&s.url(&format!("/api/v2/steps/{stepid}/logs")));
    assert!(l["logs"][0]["num_lines"].as_i64().unwrap() > 0, "{l}");
}
