//! Faults in the database writer (issue 16, point 1): another process
//! holding the write lock past the busy timeout. Each checks what is in the database afterwards, not
//! only what the callers were told.

use crate::common::*;
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
