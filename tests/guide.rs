//! The guide's hello-world, end to end, with the real binaries: create-master,
//! checkconfig, start, create-worker, start, a signed Gitea push, a green
//! build with the test's output in its log; a bad signature stores nothing.

mod common;
use common::*;
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
    let _worker = s.start_worker("example-worker", "pass");
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
    let _worker = s.start_worker("example-worker", "pass");
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
