//! Hostile-neighbour tests: files. Another account on the host must not
//! read what minibot writes (build logs, the database, checkouts, configs
//! holding passwords), and the secrets minibot hands out must not be the
//! published or guessable ones. Real `minibot` and `minibot-worker`
//! processes; the test process itself runs with the usual umask 022, so
//! every private mode measured here is the daemons' own doing.

use crate::common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", p.display()));
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts each (label, path, expected mode) and returns "label 700, ..."
/// for the test's output line.
fn check_modes(expect: &[(String, &Path, u32)]) -> String {
    let mut shown = Vec::new();
    for (label, path, want) in expect {
        let got = mode(path);
        assert_eq!(
            got,
            *want,
            "{label} ({}) is {got:o}, expected {want:o}",
            path.display()
        );
        shown.push(format!("{label} {got:o}"));
    }
    shown.join(", ")
}

/// A value quoted on the first line starting with `key = "`.
fn quoted_value(text: &str, key: &str) -> String {
    let prefix = format!("{key} = \"");
    let line = text
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {key} line in:\n{text}"));
    line[prefix.len()..].trim_end_matches('"').to_string()
}

#[test]
fn a_build_leaves_only_private_files_behind() {
    let s = Setup::new(PASSING_TEST, "");
    let _master = s.start_master();
    let _worker = s.start_worker("example-worker", WORKER_PW);
    s.wait_connected("example-worker");
    s.push(&s.head, "master", "private files");
    let builds = s.wait_builds(1, Duration::from_secs(60));
    assert_eq!(builds[0]["results"], 0, "{:?}", builds[0]);

    let logs = s.master.join("logs");
    let log_files: Vec<_> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!log_files.is_empty(), "no build log in {}", logs.display());
    let wdir = s.tmp.path().join("example-worker");
    let db = s.master.join("state.sqlite");
    let (wal, shm) = (
        s.master.join("state.sqlite-wal"),
        s.master.join("state.sqlite-shm"),
    );
    let (builder, build) = (wdir.join("runtests"), wdir.join("runtests/build"));
    let (sample, mlog) = (
        s.master.join("master.cfg.sample"),
        s.master.join("master.log"),
    );
    let mut expect = vec![
        ("master".to_string(), s.master.as_path(), 0o700),
        ("master.cfg.sample".into(), sample.as_path(), 0o600),
        ("master.log".into(), mlog.as_path(), 0o600),
        ("state.sqlite".into(), db.as_path(), 0o600),
        ("logs".into(), logs.as_path(), 0o700),
    ];
    for f in [&wal, &shm] {
        if f.exists() {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            expect.push((name, f.as_path(), 0o600));
        }
    }
    for f in &log_files {
        expect.push((
            format!("logs/{}", f.file_name().unwrap().to_string_lossy()),
            f.as_path(),
            0o600,
        ));
    }
    let (wcfg, wlog) = (wdir.join("worker.cfg"), wdir.join("worker.log"));
    expect.extend([
        ("worker basedir".to_string(), wdir.as_path(), 0o700),
        ("worker.cfg".into(), wcfg.as_path(), 0o600),
        ("worker.log".into(), wlog.as_path(), 0o600),
        ("runtests".into(), builder.as_path(), 0o700),
        ("runtests/build".into(), build.as_path(), 0o700),
    ]);
    let shown = check_modes(&expect);
    eprintln!("modes after a build: {shown}");
}

#[test]
fn start_tightens_an_older_install_and_warns_about_published_secrets() {
    // An install from before issue 14: everything 0755/0644, and the
    // sample's published Gitea secret still in master.cfg.
    let s = Setup::new(PASSING_TEST, "");
    s.edit_cfg(|t| {
        t.replace(
            &format!("secret = \"{SECRET}\""),
            "secret = \"SomeSecretPassPhraseToAuthenticateGitea\"",
        )
    });
    let logs = s.master.join("logs");
    std::fs::create_dir(&logs).unwrap();
    let (db, mlog) = (s.master.join("state.sqlite"), s.master.join("master.log"));
    std::fs::write(&mlog, "").unwrap();
    for (p, m) in [
        (&s.master, 0o755),
        (&logs, 0o755),
        (&db, 0o644),
        (&mlog, 0o644),
    ] {
        chmod(p, m);
    }

    let _master = s.start_master();
    s.wait_master_log("is the sample's published secret");
    // The worker's older install (its port is known once the master runs).
    let wdir = s.tmp.path().join("example-worker");
    s.create_worker(&wdir, "example-worker", WORKER_PW);
    let wlog = wdir.join("worker.log");
    std::fs::write(&wlog, "").unwrap();
    chmod(&wdir, 0o755);
    chmod(&wlog, 0o644);
    let _worker = s.start_worker("example-worker", WORKER_PW);
    s.wait_connected("example-worker");
    let shown = check_modes(&[
        ("master".into(), &s.master, 0o700),
        ("logs".into(), &logs, 0o700),
        ("state.sqlite".into(), &db, 0o600),
        ("master.log".into(), &mlog, 0o600),
        ("worker basedir".into(), &wdir, 0o700),
        ("worker.log".into(), &wlog, 0o600),
    ]);
    eprintln!("an old install (755/644) after start: {shown}");
}

#[test]
fn configs_others_may_read_are_refused_with_the_chmod_to_run() {
    let s = Setup::new(PASSING_TEST, "");
    let dir = s.master.to_str().unwrap();
    let cfg = s.master.join("master.cfg");
    let hint = format!("chmod 600 {}", cfg.display());
    let mut refused = Vec::new();
    for m in [0o644, 0o640, 0o604, 0o620] {
        chmod(&cfg, m);
        for args in [
            vec!["checkconfig", dir],
            vec!["start", dir],
            vec!["start", "--nodaemon", dir],
        ] {
            let out = run(MINIBOT, &args);
            let err = stderr_of(&out);
            assert_eq!(out.status.code(), Some(1), "{args:?} with {m:o}: {err}");
            assert!(
                err.contains(&hint) && err.contains(&format!("mode {m:o}")),
                "{args:?} with {m:o}: {err}"
            );
        }
        refused.push(format!("{m:o}"));
    }
    assert!(!s.master.join("minibot.pid").exists(), "no master started");
    chmod(&cfg, 0o600);
    let out = run_ok(MINIBOT, &["checkconfig", dir]);
    assert!(out.contains("config file is good"), "{out}");

    // A running master: reconfig and restart refuse the loosened file, and
    // the master keeps running (restart checks before it stops anything).
    let master = s.start_master();
    chmod(&cfg, 0o644);
    for cmd in ["reconfig", "restart"] {
        let out = run(MINIBOT, &[cmd, dir]);
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {err}");
        assert!(err.contains(&hint), "{cmd}: {err}");
    }
    assert!(!process_gone(master.pid()), "the master still runs");
    chmod(&cfg, 0o600);

    // The worker's start, detached and in the foreground.
    let wdir = s.tmp.path().join("w");
    let wd = wdir.to_str().unwrap();
    run_ok(
        WORKER,
        &[
            "create-worker",
            wd,
            &format!("127.0.0.1:{}", s.wport()),
            "example-worker",
            WORKER_PW,
        ],
    );
    let wcfg = wdir.join("worker.cfg");
    assert_eq!(mode(&wcfg), 0o600, "create-worker writes worker.cfg 0600");
    let whint = format!("chmod 600 {}", wcfg.display());
    for m in [0o644, 0o660] {
        chmod(&wcfg, m);
        for args in [vec!["start", wd], vec!["start", "--nodaemon", wd]] {
            let out = run(WORKER, &args);
            let err = stderr_of(&out);
            assert_eq!(out.status.code(), Some(1), "{args:?} with {m:o}: {err}");
            assert!(err.contains(&whint), "{args:?} with {m:o}: {err}");
        }
    }
    chmod(&wcfg, 0o600);
    let (worker, line) = start_daemon(WORKER, &["start", "--nodaemon", wd], "worker");
    assert!(line.contains("running in"), "{line}");
    chmod(&wcfg, 0o644);
    let out = run(WORKER, &["restart", wd]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains(&whint), "{}", stderr_of(&out));
    assert!(!process_gone(worker.pid()), "the worker still runs");
    eprintln!(
        "master.cfg refused by checkconfig, start and start --nodaemon at modes {} (and by reconfig, restart of a running master at 644); worker.cfg by start at 644 and 660 (and restart); both accepted at 600",
        refused.join(", ")
    );
}

#[test]
fn secrets_are_generated_and_weak_ones_are_refused_or_warned_about() {
    const PUBLISHED: &str = "SomeSecretPassPhraseToAuthenticateGitea";
    let tmp = tempfile::tempdir().unwrap();
    let mut seen = Vec::new();
    for n in ["m1", "m2"] {
        let dir = tmp.path().join(n);
        run_ok(MINIBOT, &["create-master", dir.to_str().unwrap()]);
        assert_eq!(mode(&dir), 0o700, "create-master's directory");
        let sample = dir.join("master.cfg.sample");
        assert_eq!(mode(&sample), 0o600, "master.cfg.sample");
        let text = std::fs::read_to_string(&sample).unwrap();
        let secret = quoted_value(&text, "secret");
        let password = quoted_value(&text, "password");
        for v in [&secret, &password] {
            assert!(
                v.len() == 32 && v.chars().all(|c| c.is_ascii_hexdigit()),
                "not 32 hex digits: {v:?}"
            );
        }
        assert!(!text.contains(PUBLISHED), "published secret left in {n}");
        assert!(!text.contains("\"pass\""), "password \"pass\" left in {n}");
        // The create-worker example shows the same password, to copy.
        assert!(
            text.contains(&format!(
                "create-worker DIR localhost:54321 example-worker {password}"
            )),
            "{text}"
        );
        // Renamed as the guide says, it passes checkconfig without a
        // warning about its secrets (only the example repository is left
        // to edit, tests/cli.rs).
        std::fs::rename(&sample, dir.join("master.cfg")).unwrap();
        let out = run(MINIBOT, &["checkconfig", dir.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr_of(&out));
        assert!(!stderr_of(&out).contains("secret"), "{}", stderr_of(&out));
        assert!(!stderr_of(&out).contains("password"), "{}", stderr_of(&out));
        seen.push((secret, password));
    }
    assert_ne!(seen[0].0, seen[1].0, "two create-masters, one Gitea secret");
    assert_ne!(
        seen[0].1, seen[1].1,
        "two create-masters, one worker password"
    );

    // The published secret and a short or sample password: checkconfig
    // still passes, with a warning naming each key.
    let m1 = tmp.path().join("m1");
    let cfg = m1.join("master.cfg");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let weak = text
        .replace(&seen[0].0, PUBLISHED)
        .replace(&seen[0].1, "pass");
    std::fs::write(&cfg, weak).unwrap();
    let out = run(MINIBOT, &["checkconfig", m1.to_str().unwrap()]);
    let err = stderr_of(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning:")
            && err.contains(
                "www.change_hook_dialects.gitea.secret: is the sample's published secret"
            )
            && err.contains(
                "workers #1 (name = \"example-worker\").password: is the sample's published password",
            ),
        "{err}"
    );
    std::fs::write(&cfg, text.replace(&seen[0].1, "elevenchars")).unwrap();
    let err = stderr_of(&run(MINIBOT, &["checkconfig", m1.to_str().unwrap()]));
    assert!(
        err.contains(
            "workers #1 (name = \"example-worker\").password: is shorter than 12 characters"
        ),
        "{err}"
    );

    // create-worker: 11 characters need the flag; 12 do not.
    let w = tmp.path().join("w");
    let create = |pw: &str, flag: bool| {
        let mut a = vec!["create-worker"];
        if flag {
            a.push("--allow-weak-password");
        }
        a.extend([w.to_str().unwrap(), "127.0.0.1:1", "example-worker", pw]);
        run(WORKER, &a)
    };
    let out = create("elevenchars", false);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--allow-weak-password"), "{err}");
    assert!(!w.exists(), "a refused create-worker creates nothing");
    let out = create("elevenchars", true);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(mode(&w.join("worker.cfg")), 0o600);
    assert_eq!(mode(&w), 0o700);
    std::fs::remove_dir_all(&w).unwrap();
    let out = create("twelve-chars", false);
    assert!(out.status.success(), "{}", stderr_of(&out));
    eprintln!(
        "create-master secrets: {} / {} (gitea), {} / {} (worker); 11-char password refused without --allow-weak-password",
        seen[0].0, seen[1].0, seen[0].1, seen[1].1
    );
}
