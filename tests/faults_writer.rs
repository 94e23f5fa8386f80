//! Faults in the database writer (issue 16, point 1, and the `stop` part
//! of point 3): another process holding the write lock past the busy
//! timeout, a claim the database refuses, and a build that no worker
//! connection runs. Each checks what is in the database afterwards, not
//! only what the callers were told.

use crate::common::*;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

/// The writer's busy timeout (`db::schema::tune`).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// A second connection to the master's database, as another process
/// (`minibot user`, sqlite3) has.
fn second_connection(master: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(master.join("state.sqlite")).expect("opening state.sqlite")
}

fn count(master: &Path, sql: &str) -> i64 {
    db_query::<i64>(master, sql)[0]
}

/// A hook whose write meets the lock held elsewhere past the busy timeout
/// answers 500 and leaves nothing behind, even when the lock comes back
/// while the batch would still be running its jobs. The old writer ran
/// them in autocommit after its BEGIN failed: a job whose first statement
/// writes (the `base` hook's INSERT; a gitea hook reads its delivery id
/// first, and a read-then-write fails at once) waited for the lock and
/// committed, while the hook said 500, and the redelivery was stored a
/// second time. Now the redelivery is stored once and built once; no
/// build is left "starting".
#[test]
fn begin_that_fails_writes_nothing_and_the_redelivery_is_stored_once() {
    let s = Setup::new(PASSING_TEST, "");
    let _master = s.start_master();
    let _worker = s.start_worker("example-worker", WORKER_PW);
    s.wait_connected("example-worker");
    let hook_url = s.url("/change_hook/base");
    let body = form_body(&[
        ("author", "Jane <jane@example.org>"),
        ("comments", "stored once"),
        ("branch", "master"),
        ("revision", &s.head),
        ("repository", &format!("file://{}", s.repo.display())),
    ]);

    let lock = second_connection(&s.master);
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let posted = Instant::now();
    let hook = {
        let (url, body) = (hook_url.clone(), body.clone());
        std::thread::spawn(move || post_base(&url, &[], &body))
    };
    // Past the writer's BEGIN (it gives up after BUSY_TIMEOUT), well
    // before a job run after it would give up on its own statements.
    let release = BUSY_TIMEOUT + BUSY_TIMEOUT / 2;
    std::thread::sleep(release.saturating_sub(posted.elapsed()));
    lock.execute_batch("ROLLBACK").unwrap();
    let (code, answer) = hook.join().unwrap();
    assert_eq!(code, 500, "the hook's write failed: {answer}");
    assert_eq!(
        count(&s.master, "SELECT count(*) FROM changes"),
        0,
        "a hook answered 500 stored its change"
    );

    // The sender delivers again, and the writes go through.
    let (code, answer) = post_base(&hook_url, &[], &body);
    assert_eq!(code, 200, "{answer}");
    wait_requests_done(&s.master, Duration::from_secs(60));
    assert_eq!(
        count(&s.master, "SELECT count(*) FROM changes"),
        1,
        "the change is stored once"
    );
    assert_eq!(count(&s.master, "SELECT count(*) FROM builds"), 1);
    assert_eq!(
        count(
            &s.master,
            "SELECT count(*) FROM builds WHERE complete_at IS NULL OR results != 0"
        ),
        0,
        "the one build ended SUCCESS; none stays starting"
    );
}

/// A claim the database refuses (here a trigger makes creating the build
/// fail, as a full disk or a held lock would) leaves the request queued
/// and nothing "starting", and the botmaster claims it again by itself
/// once writes succeed: the old botmaster only dispatched on a message,
/// so the request waited for the next push or worker.
#[test]
fn a_refused_claim_is_tried_again_until_the_build_runs() {
    let s = Setup::new(PASSING_TEST, "");
    let _master = s.start_master();
    let (_w1, mut w2) = s.start_two_workers();
    let db = second_connection(&s.master);
    db.execute_batch(
        "CREATE TRIGGER test_refuse_claims BEFORE INSERT ON builds
         BEGIN SELECT RAISE(ABORT, 'injected: the claim is refused'); END;",
    )
    .unwrap();
    s.push(&s.head, "master", "refused claim");
    wait_for("the build request", Duration::from_secs(30), || {
        (count(&s.master, "SELECT count(*) FROM buildrequests") == 1).then_some(())
    });
    // The botmaster takes its messages in order: once it has marked the
    // second worker gone it has tried (and failed) to claim the request,
    // for the request and again for the lost worker.
    let _ = w2.child.kill();
    let _ = w2.child.wait();
    let url = s.url("/api/v2/workers/second-worker");
    wait_for("second-worker marked gone", Duration::from_secs(30), || {
        let v = get_json(&url);
        v["workers"][0]["connected_to"]
            .as_array()?
            .is_empty()
            .then_some(())
    });
    assert_eq!(count(&s.master, "SELECT count(*) FROM builds"), 0);
    assert_eq!(
        count(
            &s.master,
            "SELECT count(*) FROM buildrequests WHERE claimed_at IS NOT NULL"
        ),
        0,
        "a refused claim left its request claimed"
    );

    db.execute_batch("DROP TRIGGER test_refuse_claims").unwrap();
    // Nothing else happens: no push, no worker comes or goes.
    wait_requests_done(&s.master, Duration::from_secs(30));
    assert_eq!(
        count(
            &s.master,
            "SELECT count(*) FROM builds WHERE complete_at IS NOT NULL AND results = 0"
        ),
        1
    );
}

/// `stop` of a build that no worker connection runs (its connection is
/// gone and its close never written) closes it in the database as
/// CANCELLED, with its open step and its request; the old master answered
/// OK and changed nothing, so the build stayed "running".
#[test]
fn stop_of_a_build_no_connection_runs_closes_it() {
    let s = Setup::new(PASSING_TEST, "");
    let _master = s.start_master();
    add_user(&s.master, USER, PASSWORD);
    // A build left "running" with no connection, as a lost close leaves it.
    let db = second_connection(&s.master);
    db.execute_batch(
        "BEGIN;
         INSERT INTO buildsets(reason, submitted_at, branch) VALUES ('orphan', 1, 'master');
         INSERT INTO buildrequests(buildsetid, builderid, submitted_at, claimed_at)
           VALUES (last_insert_rowid(), (SELECT builderid FROM builders WHERE name = 'runtests'), 1, 1);
         INSERT INTO builds(number, builderid, buildrequestid, workerid, started_at, state_string)
           SELECT 1, builderid, buildrequestid,
                  (SELECT workerid FROM workers WHERE name = 'example-worker'), 1, 'building: test'
           FROM buildrequests WHERE buildrequestid = last_insert_rowid();
         INSERT INTO steps(buildid, number, name, started_at, state_string)
           VALUES (last_insert_rowid(), 0, 'test', 1, 'test running');
         COMMIT;",
    )
    .unwrap();
    let buildid = count(&s.master, "SELECT max(buildid) FROM builds");

    let (code, v) = rpc(
        &s.url(&format!("/api/v2/builds/{buildid}")),
        Some(&basic()),
        "stop",
        json!({"reason": "it hangs"}),
    );
    assert_eq!(code, 200, "{v}");
    let b = s.wait_build(buildid, Duration::from_secs(30));
    assert_eq!(b["results"], 6, "CANCELLED: {b}");
    assert!(
        b["state_string"].as_str().unwrap().contains("it hangs"),
        "{b}"
    );
    assert_eq!(
        count(
            &s.master,
            "SELECT count(*) FROM steps WHERE complete_at IS NULL"
        ),
        0,
        "its step is closed"
    );
    assert_eq!(
        count(
            &s.master,
            "SELECT count(*) FROM buildrequests WHERE complete = 1 AND results = 6"
        ),
        1,
        "its request is complete, as CANCELLED, not queued again"
    );
}
