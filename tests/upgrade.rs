//! The upgrade procedure of the README (Install: stop the master, install
//! the new binaries, `minibot upgrade-master DIR`, start): a master
//! directory whose database an older minibot wrote, with a build in it,
//! is refused by the new binary until `upgrade-master` has migrated it,
//! then starts on it with its builds and logs, and builds again.
//!
//! The older databases are made from a current one by undoing the
//! migrations of `src/db/schema.rs` one version at a time, which leaves
//! what that version's code wrote: the tables and indexes it had, and its
//! `user_version`. A new schema version needs its undo step in [`UNDO`]
//! (the test says so).

use crate::common::*;
use std::time::Duration;

/// The schema version of this minibot (`db::SCHEMA_VERSION`).
const CURRENT: i64 = 12;

/// `(v, sql)`: `sql` takes a database at version `v` back to version
/// `v - 1`. Versions 1 and 2 made the tables every build uses, so version
/// 2's database is the oldest made here.
const UNDO: &[(i64, &str)] = &[
    (12, "ALTER TABLE builds DROP COLUMN lock_wait_ms;"),
    (11, "ALTER TABLE sessions DROP COLUMN gitea;"),
    (10, "DROP TABLE artifacts;"),
    (
        9,
        "DROP TABLE build_triggers; DROP INDEX buildsets_upstream; \
         ALTER TABLE buildsets DROP COLUMN upstream_buildsetid;",
    ),
    (8, "DROP TABLE build_locks;"),
    (
        7,
        "ALTER TABLE buildsets DROP COLUMN requested_by; \
         ALTER TABLE buildsets DROP COLUMN rebuild_of; \
         ALTER TABLE builds DROP COLUMN planned_steps;",
    ),
    (6, "DROP INDEX buildrequests_collapsed;"),
    (
        5,
        "DROP INDEX builds_complete_at; DROP TABLE reporter_state; \
         DROP TABLE reporter_deliveries;",
    ),
    (
        4,
        "DROP INDEX scheduler_changes_change; DROP INDEX buildset_changes_change; \
         DROP INDEX buildrequests_buildset;",
    ),
    (3, "DROP TABLE sessions; DROP TABLE users;"),
];

/// What must survive an upgrade of a finished build, as the API shows it.
fn build_facts(b: &serde_json::Value) -> serde_json::Value {
    serde_json::json!([
        b["buildid"],
        b["number"],
        b["builderid"],
        b["results"],
        b["started_at"],
        b["complete_at"],
        b["state_string"]
    ])
}

#[test]
fn a_master_directory_of_each_older_schema_upgrades_and_keeps_its_builds() {
    let s = Setup::new(PASSING_TEST, "");
    let dir = s.master.to_str().unwrap();
    let mut master = s.start_master();
    let _worker = s.start_worker("example-worker", WORKER_PW);
    s.wait_connected("example-worker");
    s.push(&s.head, "master", "before the upgrade");
    let before = s.wait_builds(1, Duration::from_secs(60));
    assert_eq!(before[0]["results"], 0, "{}", before[0]);
    let buildid = before[0]["buildid"].as_i64().unwrap();
    let log = s.step_log(buildid, "test");
    assert!(log.contains("hello from test_hello"), "{log}");
    // Step 1 of the procedure: stop the master.
    master.signal(libc::SIGTERM);
    assert_eq!(master.wait_exit(Duration::from_secs(20)), Some(0));

    let db = s.master.join("state.sqlite");
    assert_eq!(
        db_query::<i64>(&s.master, "PRAGMA user_version"),
        [CURRENT],
        "a new schema version: add its undo step to UNDO"
    );
    for n in 1..=UNDO.len() {
        // From the current version (each round upgraded it) down to `old`.
        let old = UNDO[n - 1].0 - 1;
        let undo: String = UNDO[..n].iter().map(|(_, sql)| *sql).collect();
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(&format!(
            "BEGIN; {undo} PRAGMA user_version = {old}; COMMIT;"
        ))
        .unwrap_or_else(|e| panic!("making version {old}'s database: {e}"));
        drop(c);

        // The new binary will not run on the old file, and says what to do.
        let out = run(MINIBOT, &["start", "--nodaemon", dir]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "version {old}: {err}");
        assert!(err.contains("`minibot upgrade-master "), "{err}");

        let out = run_ok(MINIBOT, &["upgrade-master", dir]);
        assert!(
            out.contains(&format!("schema upgraded from version {old} to {CURRENT}")),
            "{out}"
        );

        // It starts, and the build made before is there as it was, its log too.
        let mut master = s.start_master();
        let builds = get_json(&s.url("/api/v2/builds?order=buildid"));
        assert_eq!(
            build_facts(&builds["builds"][0]),
            build_facts(&before[0]),
            "version {old}: {builds}"
        );
        assert_eq!(builds["meta"]["total"], 1, "{builds}");
        assert_eq!(s.step_log(buildid, "test"), log, "version {old}");
        master.signal(libc::SIGTERM);
        assert_eq!(master.wait_exit(Duration::from_secs(20)), Some(0));
    }

    // Running it again changes nothing; the upgraded master builds.
    let out = run_ok(MINIBOT, &["upgrade-master", dir]);
    assert!(
        out.contains(&format!("schema already at version {CURRENT}")),
        "{out}"
    );
    let _master = s.start_master();
    s.wait_connected("example-worker");
    let sha = s.commit("after.txt", "after\n", "after the upgrade");
    s.push(&sha, "master", "after the upgrade");
    let builds = s.wait_builds(2, Duration::from_secs(60));
    assert_eq!(builds[1]["results"], 0, "{}", builds[1]);
    assert_eq!(build_facts(&builds[0]), build_facts(&before[0]));
}
