//! The guide's hello-world, end to end, with the real binaries: create-master,
//! checkconfig, start, create-worker, start, a signed Gitea push, a green
//! build with the test's output in its log; a bad signature stores nothing.

use crate::common::*;
use std::time::{Duration, Instant};

#[test]
fn guide_flow_push_to_green_build() {
    let s = Setup::new(PASSING_TEST, "");
    // create-master made the sample and the database, both private.
    use std::os::unix::fs::PermissionsExt;
    for f in ["master.cfg.sample", "state.sqlite"] {
        let mode = std::fs::metadata(s.master.join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f} mode {mode:o}");
    }
    let out = run_ok(MINIBOT, &["checkconfig", s.master.to_str().unwrap()]);
    assert!(out.contains("config file is good"), "{out}");

    let mut master = s.start_master();
    let _worker = s.start_worker("example-worker", WORKER_PW);
    s.wait_connected("example-worker");

    // A wrong signature is refused and stores nothing.
    let body = push_payload(&s.head, "master", "hello");
    let f = s.tmp.path().join("bad.json");
    std::fs::write(&f, &body).unwrap();
    let hook = s.url("/change_hook/gitea");
    let (code, _) = post_gitea(&hook, "push", &f, Some(&sign("wrong-secret", &body)));
    assert_eq!(code, 403);
    let (code, _) = post_gitea(&hook, "push", &f, None);
    assert_eq!(code, 403);
    let changes = get_json(&s.url("/api/v2/changes"));
    assert_eq!(changes["meta"]["total"], 0, "{changes}");
    // Malformed JSON (correctly signed) is 400, and stores nothing either.
    let bad = b"{\"ref\": ";
    std::fs::write(&f, bad).unwrap();
    let (code, _) = post_gitea(&hook, "push", &f, Some(&sign(SECRET, bad)));
    assert_eq!(code, 400);

    let t0 = Instant::now();
    let ids = s.push(&s.head, "master", "hello");
    assert_eq!(ids.len(), 1);
    let builds = s.wait_builds(1, Duration::from_secs(60));
    let took = t0.elapsed();
    let b = &builds[0];
    assert_eq!(b["results"], 0, "build: {b}");
    assert_eq!(b["complete"], true);
    eprintln!("hook to green: {took:?}");

    let log = s.step_log(b["buildid"].as_i64().unwrap(), "test");
    assert!(log.contains("hello from test_hello"), "log: {log}");
    assert!(log.contains("exit code 0"), "log: {log}");
    let git_log = s.step_log(b["buildid"].as_i64().unwrap(), "git");
    assert!(git_log.contains(&s.head), "git log: {git_log}");

    let change = get_json(&s.url(&format!("/api/v2/changes/{}", ids[0])));
    assert_eq!(change["changes"][0]["revision"], s.head.as_str());
    assert_eq!(change["changes"][0]["branch"], "master");
    let req = get_json(&s.url("/api/v2/buildrequests"));
    assert_eq!(req["buildrequests"][0]["complete"], true, "{req}");

    // The home page lists the builder and the build.
    let (code, html) = curl(&[&s.url("/")]);
    assert_eq!(code, 200);
    assert!(html.contains("runtests"), "{html}");

    // SIGTERM: a clean stop, exit 0.
    master.signal(libc::SIGTERM);
    assert_eq!(master.wait_exit(Duration::from_secs(20)), Some(0));
}

#[test]
fn failing_test_is_failure_and_later_steps_halt() {
    let s = Setup::new(
        "import sys\nprint('boom', file=sys.stderr)\nsys.exit(3)\n",
        r#"
[[builders.steps]]
type = "shell"
name = "after"
command = "echo should-not-run"
"#,
    );
    let _master = s.start_master();
    let _worker = s.start_worker("example-worker", WORKER_PW);
    s.wait_connected("example-worker");
    s.push(&s.head, "master", "fail");
    let b = &s.wait_builds(1, Duration::from_secs(60))[0];
    assert_eq!(b["results"], 2, "{b}");
    let steps = get_json(&s.url(&format!("/api/v2/builds/{}/steps", b["buildid"])));
    let names: Vec<&str> = steps["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["git", "test"], "halt_on_failure stops the build");
    let log = s.step_log(b["buildid"].as_i64().unwrap(), "test");
    assert!(log.contains("boom"), "{log}");
    // stderr is kept apart in the stored log: the line carries the 'e' prefix.
    let logs = get_json(&s.url(&format!(
        "/api/v2/steps/{}/logs",
        steps["steps"][1]["stepid"]
    )));
    let logid = logs["logs"][0]["logid"].as_i64().unwrap();
    let contents = get_json(&s.url(&format!("/api/v2/logs/{logid}/contents")));
    assert!(
        contents["logchunks"][0]["content"]
            .as_str()
            .unwrap()
            .contains("eboom"),
        "{contents}"
    );
}

#[test]
fn checkconfig_reports_every_problem_with_its_key_path() {
    let s = Setup::new(PASSING_TEST, "");
    let cfg = s.master.join("master.cfg");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let bad = text
        .replace("builders = [\"runtests\"]", "builders = [\"nosuch\"]")
        .replace("name = \"test\"", "name = \"test\"\ncomand = \"x\"");
    std::fs::write(&cfg, bad).unwrap();
    let out = run(MINIBOT, &["checkconfig", s.master.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("builders[0].steps[1].comand"), "{err}");
    std::fs::write(
        &cfg,
        text.replace("builders = [\"runtests\"]", "builders = [\"nosuch\"]"),
    )
    .unwrap();
    let out = run(MINIBOT, &["checkconfig", s.master.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("schedulers[0].builders[0]"), "{err}");
    // Usage errors exit 2; --help exits 0.
    assert_eq!(run(MINIBOT, &["checkconfig"]).status.code(), Some(2));
    assert_eq!(run(MINIBOT, &["start", "--help"]).status.code(), Some(0));
    // The sample create-master writes passes checkconfig once renamed.
    let fresh = s.tmp.path().join("fresh");
    run_ok(MINIBOT, &["create-master", fresh.to_str().unwrap()]);
    std::fs::rename(fresh.join("master.cfg.sample"), fresh.join("master.cfg")).unwrap();
    run_ok(MINIBOT, &["checkconfig", fresh.to_str().unwrap()]);
    // create-master refuses a non-empty directory without --force.
    let out = run(MINIBOT, &["create-master", fresh.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    run_ok(
        MINIBOT,
        &["create-master", "--force", fresh.to_str().unwrap()],
    );
}

#[test]
fn old_schema_is_refused_until_upgrade_master() {
    let s = Setup::new(PASSING_TEST, "");
    let db = s.master.join("state.sqlite");
    std::fs::remove_file(&db).unwrap();
    // An empty SQLite file: schema version 0.
    rusqlite::Connection::open(&db).unwrap();
    let out = run(
        MINIBOT,
        &["start", "--nodaemon", s.master.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("upgrade-master"));
    let out = run_ok(MINIBOT, &["upgrade-master", s.master.to_str().unwrap()]);
    assert!(out.contains("upgraded from version 0"), "{out}");
    let _m = s.start_master();
}

#[test]
fn base_dialect_and_redelivery() {
    let s = Setup::new(PASSING_TEST, "");
    let _master = s.start_master();
    // Buildbot's base dialect from plain curl, form-encoded, signed with
    // the dialect's secret (X-Hub-Signature-256).
    let (code, body) = post_base(
        &s.url("/change_hook/base"),
        &[],
        &form_body(&[
            ("author", "Jane <jane@example.org>"),
            ("comments", "from curl; rm -rf / $(reboot)"),
            ("branch", "master"),
            ("revision", &s.head),
            ("repository", "file:///x"),
            ("project", "p"),
        ]),
    );
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = v["changes"][0].as_i64().unwrap();
    let c = get_json(&s.url(&format!("/api/v2/changes/{id}")));
    assert_eq!(c["changes"][0]["comments"], "from curl; rm -rf / $(reboot)");
    assert_eq!(c["changes"][0]["author"], "Jane <jane@example.org>");

    // Gitea's "redeliver": same delivery id, same answer, nothing stored.
    let body = push_payload(&s.head, "master", "hello");
    let f = s.tmp.path().join("p.json");
    std::fs::write(&f, &body).unwrap();
    let sig = format!("X-Gitea-Signature: {}", sign(SECRET, &body));
    let data = format!("@{}", f.display());
    let post = || {
        curl(&[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-H",
            "X-Gitea-Event: push",
            "-H",
            &sig,
            "-H",
            "X-Gitea-Delivery: 6b1f7e51-0000-4000-8000-000000000001",
            "--data-binary",
            &data,
            &s.url("/change_hook/gitea"),
        ])
    };
    let (c1, b1) = post();
    let (c2, b2) = post();
    assert_eq!((c1, c2), (200, 200));
    assert_eq!(b1, b2);
    let all = get_json(&s.url("/api/v2/changes"));
    assert_eq!(all["meta"]["total"], 2, "{all}");
    // Unknown dialects and paths are 404; wrong methods 405; huge bodies 413.
    assert_eq!(
        curl(&["-X", "POST", "-d", "x", &s.url("/change_hook/nope")]).0,
        404
    );
    assert_eq!(curl(&[&s.url("/change_hook/gitea")]).0, 405);
    assert_eq!(curl(&[&s.url("/nope")]).0, 404);
    let big = s.tmp.path().join("big");
    std::fs::write(&big, vec![b'x'; 26 * 1024 * 1024]).unwrap();
    let data = format!("@{}", big.display());
    let (code, _) = curl(&[
        "-X",
        "POST",
        "-H",
        "X-Gitea-Event: push",
        "--data-binary",
        &data,
        &s.url("/change_hook/gitea"),
    ]);
    assert_eq!(code, 413);
}
