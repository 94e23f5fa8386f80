//! Faults of the database file, with the real binaries (issue 16 points 2
//! and 5): a database recreated under old log files, a corrupt database at
//! start, the database file deleted or replaced under a running master.

use crate::common::*;
use minibot::master::status::DatabaseState;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const DB: &str = "state.sqlite";

/// The database file and its side files in `master`.
fn db_files(master: &Path) -> [PathBuf; 3] {
    [
        master.join(DB),
        master.join(format!("{DB}-wal")),
        master.join(format!("{DB}-shm")),
    ]
}

/// Stops a master with SIGTERM and waits for it.
fn stop(mut p: Proc) {
    p.signal(libc::SIGTERM);
    assert_eq!(p.wait_exit(Duration::from_secs(30)), Some(0));
}

/// A base-dialect hook for `revision` on a branch no scheduler builds:
/// (status, body).
fn hook(s: &Setup, revision: &str) -> (u16, String) {
    let body = form_body(&[
        ("revision", revision),
        ("branch", "not-built"),
        ("repository", "file:///x"),
        ("author", "a <a@example.org>"),
        ("comments", "c"),
    ]);
    post_base(&s.url("/change_hook/base"), &[], &body)
}

/// The revisions of every change the master's API lists.
fn stored_revisions(s: &Setup) -> Vec<String> {
    let v = get_json(&s.url("/api/v2/changes?limit=100000"));
    v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["revision"].as_str().map(String::from))
        .collect()
}

/// The test step's log of build `buildid`: (logid, raw text from the API).
fn test_log(s: &Setup, buildid: i64) -> (i64, String) {
    let steps = get_json(&s.url(&format!("/api/v2/builds/{buildid}/steps")));
    let st = steps["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "test")
        .unwrap_or_else(|| panic!("no test step in {steps}"))
        .clone();
    let logs = get_json(&s.url(&format!("/api/v2/steps/{}/logs", st["stepid"])));
    let logid = logs["logs"][0]["logid"].as_i64().unwrap();
    let raw = curl(&[&s.url(&format!("/api/v2/logs/{logid}/raw"))]).1;
    (logid, raw)
}

/// Point 2: after the database is recreated (ids start again at 1), the
/// new build 1's log holds only its own output, not the old build 1's.
#[test]
fn recreated_database_new_build_log_has_only_new_output() {
    let s = Setup::new("print('FIRST-DATABASE-OUTPUT')\n", "");
    let master = s.start_master();
    let _worker = s.start_worker("example-worker", WORKER_PW);
    s.wait_connected("example-worker");
    s.push(&s.head, "master", "first");
    let b = s.wait_builds(1, Duration::from_secs(90));
    let first = b[0]["buildid"].as_i64().unwrap();
    let (first_log, text) = test_log(&s, first);
    assert!(text.contains("FIRST-DATABASE-OUTPUT"), "{text}");

    stop(master);
    for f in db_files(&s.master) {
        let _ = std::fs::remove_file(f);
    }
    run_ok(
        MINIBOT,
        &["create-master", "--force", s.master.to_str().unwrap()],
    );
    let sha = s.commit(
        "test_hello.py",
        "print('SECOND-DATABASE-OUTPUT')\n",
        "second",
    );
    let _master = s.start_master();
    s.wait_connected("example-worker");
    s.push(&sha, "master", "second");
    let b = s.wait_builds(1, Duration::from_secs(90));
    let second = b[0]["buildid"].as_i64().unwrap();
    let (second_log, text) = test_log(&s, second);
    // The same ids as before: the case the old files collide with.
    assert_eq!((second, second_log), (first, first_log));
    assert!(text.contains("SECOND-DATABASE-OUTPUT"), "{text}");
    assert!(!text.contains("FIRST"), "old output in the new log: {text}");
    let file = s.master.join(format!("logs/{second}-{second_log}.log"));
    let on_disk = std::fs::read_to_string(&file).unwrap();
    assert!(!on_disk.contains("FIRST"), "{}: {on_disk}", file.display());
    let (code, page) = curl(&[&s.url("/builders/runtests/builds/1")]);
    assert_eq!(code, 200, "{page}");
    assert!(!page.contains("FIRST-DATABASE"), "old output on the page");
    // The old files were set aside at start, not deleted.
    let aside: Vec<PathBuf> = std::fs::read_dir(s.master.join("logs"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .flat_map(|d| std::fs::read_dir(d).unwrap().map(|e| e.unwrap().path()))
        .collect();
    assert!(
        aside.iter().any(|p| std::fs::read_to_string(p)
            .unwrap_or_default()
            .contains("FIRST-DATABASE")),
        "old logs set aside: {aside:?}"
    );
    eprintln!(
        "recreated database: {} old log files set aside at start, build {second} log {second_log} holds only its own output",
        aside.len()
    );
}

/// Garbage over the pages after the first `keep` bytes of `path`, up to
/// the last page (left alone).
fn garble(path: &Path, from: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    let end = bytes.len().saturating_sub(4096).max(from + 1);
    for (i, b) in bytes[from..end].iter_mut().enumerate() {
        *b = (i.wrapping_mul(31) ^ 0x5a) as u8;
    }
    std::fs::write(path, bytes).unwrap();
}

/// Point 5: `minibot start` on a corrupt database exits non-zero with a
/// message that says what to do, and serves nothing.
#[test]
fn corrupt_database_is_refused_at_start_with_what_to_do() {
    let s = Setup::new(PASSING_TEST, "");
    let dir = s.master.to_str().unwrap().to_string();
    // Used once (the schema and config rows written), then stopped and
    // checkpointed (the last connection's close folds the WAL in).
    stop(s.start_master());
    let _ = minibot::db::open_admin(&s.master.join(DB)).unwrap();
    for f in &db_files(&s.master)[1..] {
        let _ = std::fs::remove_file(f);
    }
    let len = std::fs::metadata(s.master.join(DB)).unwrap().len();
    assert!(len >= 5 * 4096, "{len}");
    // Pages in the middle (tables and indexes), not the header.
    garble(&s.master.join(DB), 2 * 4096);

    for daemon in [false, true] {
        let _ = std::fs::remove_file(s.master.join(ADDRESSES));
        let args: Vec<&str> = if daemon {
            vec!["start", &dir]
        } else {
            vec!["start", "--nodaemon", &dir]
        };
        let t = Instant::now();
        let out = std::process::Command::new(MINIBOT)
            .args(&args)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(1), "{args:?}: {text}");
        assert!(t.elapsed() < Duration::from_secs(30));
        assert!(text.contains("is corrupt"), "{args:?}: {text}");
        assert!(text.contains("create-master --force"), "{args:?}: {text}");
        assert!(!text.contains("serving"), "{args:?}: {text}");
        assert!(
            !s.master.join(ADDRESSES).exists(),
            "a corrupt database was served ({args:?})"
        );
        let st = s.master_status().expect("status.json");
        assert_eq!(st.database, DatabaseState::Corrupt, "{st:?}");
        assert!(st.database_problem.unwrap_or_default().contains(".recover"));
    }

    // A garbled header is "not a database": refused the same way.
    let mut bytes = std::fs::read(s.master.join(DB)).unwrap();
    bytes[..100].fill(0x77);
    std::fs::write(s.master.join(DB), bytes).unwrap();
    let out = run(MINIBOT, &["start", "--nodaemon", &dir]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is corrupt"), "{err}");
}

/// Moves the database files to `to` (a prefix: `to`, `to-wal`, `to-shm`):
/// to the master it is as if they were deleted, while the test keeps what
/// was committed to check it after.
fn move_db(from: &Path, to: &Path) {
    for (f, t) in db_files(from).iter().zip(db_files_at(to)) {
        if f.exists() {
            std::fs::rename(f, t).unwrap();
        }
    }
}

fn db_files_at(prefix: &Path) -> [PathBuf; 3] {
    let p = prefix.display();
    [
        PathBuf::from(format!("{p}")),
        PathBuf::from(format!("{p}-wal")),
        PathBuf::from(format!("{p}-shm")),
    ]
}

/// Point 5: the database file deleted under a running master, while hooks
/// arrive: every hook sent after the delete is refused with 503 (none is
/// acknowledged into the lost file), status.json says so within seconds,
/// the API answers 503; and after the files are put back and the master
/// restarted, every hook that was answered 200 is there.
#[test]
fn database_deleted_while_running_refuses_hooks_and_loses_no_acknowledged_one() {
    let s = Setup::new(PASSING_TEST, "");
    let master = s.start_master();
    let mut acked = vec![];
    for i in 0..5 {
        let rev = format!("before-{i}");
        let (code, body) = hook(&s, &rev);
        assert_eq!(code, 200, "{body}");
        acked.push(rev);
    }
    // Hooks keep coming while the files go.
    let stop_sending = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let stop_sending = stop_sending.clone();
        let url = s.url("/change_hook/base");
        std::thread::spawn(move || {
            let mut out = vec![];
            let mut i = 0;
            while !stop_sending.load(std::sync::atomic::Ordering::Relaxed) {
                let rev = format!("during-{i}");
                i += 1;
                let started = Instant::now();
                let body = form_body(&[
                    ("revision", rev.as_str()),
                    ("branch", "not-built"),
                    ("repository", "file:///x"),
                    ("author", "a <a@example.org>"),
                    ("comments", "c"),
                ]);
                let (code, _) = post_base(&url, &[], &body);
                out.push((rev, started, code));
            }
            out
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let kept = s.tmp.path().join("kept.sqlite");
    move_db(&s.master, &kept);
    let deleted_at = Instant::now();
    let (code, body) = hook(&s, "after-0");
    assert_eq!(
        code, 503,
        "a hook acknowledged into a deleted database: {body}"
    );
    assert!(body.contains("was deleted"), "{body}");
    let seen = s.wait_status("database deleted", |st| {
        (st.database == DatabaseState::Deleted).then_some(Instant::now())
    });
    let noticed = seen.duration_since(deleted_at);
    assert!(
        noticed < Duration::from_secs(5),
        "noticed after {noticed:?}"
    );
    let (code, body) = curl(&[&s.url("/api/v2/changes")]);
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("was deleted"), "{body}");
    std::thread::sleep(Duration::from_millis(300));
    stop_sending.store(true, std::sync::atomic::Ordering::Relaxed);
    let during = sender.join().unwrap();
    let after_delete = |t: &Instant| *t > deleted_at;
    let late_acks: Vec<_> = during
        .iter()
        .filter(|(_, t, code)| after_delete(t) && *code == 200)
        .collect();
    assert!(
        late_acks.is_empty(),
        "acknowledged after the delete: {late_acks:?}"
    );
    let refused = during.iter().filter(|(_, _, c)| *c == 503).count();
    assert!(refused > 0, "no hook was sent after the delete");
    acked.extend(
        during
            .iter()
            .filter(|(_, _, c)| *c == 200)
            .map(|(r, _, _)| r.clone()),
    );
    eprintln!(
        "deleted database: {} hooks acknowledged, {refused} refused with 503, status.json said so after {noticed:?}",
        acked.len()
    );

    // The files back, a new master: everything acknowledged is there.
    stop(master);
    move_db_back(&kept, &s.master);
    let _master = s.start_master();
    let stored = stored_revisions(&s);
    let missing: Vec<_> = acked.iter().filter(|r| !stored.contains(r)).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    assert!(!stored.iter().any(|r| r == "after-0"));
}

fn move_db_back(from: &Path, master: &Path) {
    for (f, t) in db_files_at(from).iter().zip(db_files(master)) {
        let _ = std::fs::remove_file(&t);
        if f.exists() {
            std::fs::rename(f, t).unwrap();
        }
    }
}

/// Point 5: the database file replaced by another database under a running
/// master: hooks are refused with 503, status.json and the web UI say so;
/// a restart then serves the new file.
#[test]
fn database_replaced_while_running_refuses_hooks() {
    let s = Setup::new(PASSING_TEST, "");
    let _master = s.start_master();
    let (code, body) = hook(&s, "before");
    assert_eq!(code, 200, "{body}");
    let other = s.tmp.path().join("other-master");
    run_ok(MINIBOT, &["create-master", other.to_str().unwrap()]);
    let replaced_at = Instant::now();
    std::fs::rename(other.join(DB), s.master.join(DB)).unwrap();
    let (code, body) = hook(&s, "after");
    assert_eq!(
        code, 503,
        "a hook acknowledged into a replaced database: {body}"
    );
    assert!(body.contains("was replaced"), "{body}");
    let seen = s.wait_status("database replaced", |st| {
        (st.database == DatabaseState::Replaced).then_some(Instant::now())
    });
    let noticed = seen.duration_since(replaced_at);
    assert!(
        noticed < Duration::from_secs(5),
        "noticed after {noticed:?}"
    );
    let (code, page) = curl(&[&s.url("/")]);
    assert_eq!(code, 503, "{page}");
    assert!(page.contains("minibot restart"), "{page}");
    eprintln!(
        "replaced database: hook refused with 503 at once, status.json said so after {noticed:?}"
    );
}

/// Point 2, the other side: a master killed mid-build and restarted on the
/// same database keeps the cut build's log (this database owns it: nothing
/// is set aside or truncated), and the retry writes logs of its own.
#[test]
fn restart_mid_build_keeps_the_cut_builds_log() {
    // The step prints, then waits for `gate` (in <tmp>; the step runs in
    // <tmp>/example-worker/runtests/build).
    let s = Setup::new(
        "import os, time\nprint('CUT-BUILD-OUTPUT', flush=True)\nwhile not os.path.exists('../../../gate'):\n    time.sleep(0.02)\nprint('released')\n",
        "",
    );
    let master = s.start_master();
    let _worker = s.start_worker("example-worker", WORKER_PW);
    s.wait_connected("example-worker");
    s.push(&s.head, "master", "x");
    let first = wait_for("the step's first line", Duration::from_secs(60), || {
        let v = get_json(&s.url("/api/v2/builds?complete=false"));
        let id = v["builds"].as_array()?.first()?["buildid"].as_i64()?;
        let steps = get_json(&s.url(&format!("/api/v2/builds/{id}/steps")));
        steps["steps"]
            .as_array()?
            .iter()
            .find(|x| x["name"] == "test")?;
        test_log(&s, id)
            .1
            .contains("CUT-BUILD-OUTPUT")
            .then_some(id)
    });
    master.signal(libc::SIGKILL);
    drop(master);
    let _master = s.start_master();
    std::fs::write(s.tmp.path().join("gate"), "").unwrap();
    let builds = s.wait_builds(2, Duration::from_secs(90));
    assert_eq!(
        builds[0]["results"], 5,
        "the cut build is RETRY: {builds:?}"
    );
    assert_eq!(builds[1]["results"], 0, "{builds:?}");
    let (_, cut) = test_log(&s, first);
    assert!(
        cut.contains("CUT-BUILD-OUTPUT"),
        "the cut build's log: {cut}"
    );
    assert!(!cut.contains("released"), "{cut}");
    let retry = builds[1]["buildid"].as_i64().unwrap();
    let (_, text) = test_log(&s, retry);
    assert_eq!(text.matches("CUT-BUILD-OUTPUT").count(), 1, "{text}");
    assert!(text.contains("released"), "{text}");
    let aside: Vec<_> = std::fs::read_dir(s.master.join("logs"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name())
        .collect();
    assert!(
        aside.is_empty(),
        "this database's logs set aside: {aside:?}"
    );
}

/// The start-up `quick_check` reads every page (210 ms for 10,000 builds):
/// it is skipped only when the files are exactly as the last master left
/// them as it stopped cleanly. After a kill -9, or once anything wrote to
/// the file, it runs, and a garbled file is refused as before.
#[test]
fn quick_check_is_skipped_only_for_the_files_a_clean_stop_left() {
    let s = Setup::new(PASSING_TEST, "");
    let dir = s.master.to_str().unwrap().to_string();
    let clean = s.master.join("clean-stop.json");
    let started = |s: &Setup| {
        let p = s.start_master();
        // status.json is written within a second of the change.
        let ran = s.wait_status("the start-up check", |st| {
            if i64::from(st.pid) == i64::from(p.pid()) {
                st.start_quick_check
            } else {
                None
            }
        });
        (p, Some(ran))
    };
    // First start: no clean stop recorded, so it checks.
    let (p, checked) = started(&s);
    assert_eq!(checked, Some(true));
    stop(p);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&clean)
            .expect("clean-stop.json")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    // Untouched since: skipped, and the record is used up.
    let (mut p, checked) = started(&s);
    assert_eq!(checked, Some(false));
    assert!(!clean.exists());
    // Killed: nothing recorded, so the next start checks.
    p.signal(libc::SIGKILL);
    p.wait_exit(Duration::from_secs(10));
    let (p, checked) = started(&s);
    assert_eq!(checked, Some(true));
    stop(p);
    // Written to after the clean stop (checkpointed, then garbled in place,
    // the size unchanged): checked and refused.
    let _ = minibot::db::open_admin(&s.master.join(DB)).unwrap();
    let len = std::fs::metadata(s.master.join(DB)).unwrap().len();
    garble(&s.master.join(DB), 2 * 4096);
    assert_eq!(std::fs::metadata(s.master.join(DB)).unwrap().len(), len);
    let out = run(MINIBOT, &["start", "--nodaemon", &dir]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is corrupt"), "{err}");
}
