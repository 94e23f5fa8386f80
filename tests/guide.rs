//! The guide's hello-world, end to end, with the real binaries: first the
//! README's guide itself, its shell blocks run as written in a fresh HOME
//! (so the README cannot drift from the code again), then the same flow
//! through the test helpers: create-master, checkconfig, start,
//! create-worker, start, a signed Gitea push, a green build with the test's
//! output in its log; a bad signature stores nothing.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The ```sh blocks of README.md's section whose heading starts with
/// `heading`, in order.
pub(crate) fn readme_blocks(heading: &str) -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let mut lines = readme
        .lines()
        .skip_while(|l| !l.starts_with(heading))
        .skip(1)
        .take_while(|l| !l.starts_with("## "));
    let mut blocks = Vec::new();
    while let Some(l) = lines.next() {
        if l.trim() == "```sh" {
            let block: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
            blocks.push(block.join("\n"));
        }
    }
    blocks
}

/// Runs `block` (README shell text) in bash as pasted into a fresh shell,
/// stopping at the first failing command: a clean environment with HOME
/// `home` (also the working directory) and `path` before the system's
/// PATH. Prints what ran and said; asserts it succeeded; returns its
/// stdout and stderr.
pub(crate) fn paste(block: &str, home: &Path, path: &[&Path]) -> (String, String) {
    let script = format!("set -e\n{block}\n");
    let mut dirs: Vec<String> = path.iter().map(|p| p.display().to_string()).collect();
    dirs.push("/usr/local/bin:/usr/bin:/bin".to_string());
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(home)
        .env_clear()
        .env("HOME", home)
        .env("PATH", dirs.join(":"))
        .env("LANG", "C.UTF-8")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    println!("pasted:\n{script}\n--- stdout:\n{stdout}\n--- stderr:\n{stderr}");
    assert!(
        out.status.success(),
        "the pasted block failed ({}): {stderr}\n{stdout}",
        out.status
    );
    (stdout, stderr)
}

/// Stops what the guide started, whatever happened to the test.
struct GuideDaemons(PathBuf);

impl Drop for GuideDaemons {
    fn drop(&mut self) {
        let bin = Path::new(MINIBOT).parent().unwrap();
        let _ = Command::new(bin.join("minibot-worker"))
            .arg("stop")
            .arg(self.0.join("example-worker"))
            .output();
        let _ = Command::new(MINIBOT)
            .arg("stop")
            .arg(self.0.join("master"))
            .output();
    }
}

/// README.md's guide, pasted: every shell block of the section, in one
/// bash, in a fresh HOME holding only the repository it builds
/// (`~/hello-world`) and the built binaries on PATH. It must end with a
/// green build of that repository's head. The guide's random port picks
/// are unlucky here: the first two ports `shuf` gives are in use, which
/// the guide must notice (it did not when it took `shuf`'s first answer).
#[test]
fn the_readme_guide_pastes_end_to_end() {
    let blocks = readme_blocks("## The guide");
    assert!(blocks.len() >= 2, "the guide's shell blocks: {blocks:?}");
    // Its secrets come from `openssl rand`.
    if require_program("openssl", "apt-get install openssl").is_none() {
        return;
    }
    let _gate = run_shared();
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let head = make_repo(&home.join("hello-world"), PASSING_TEST);
    let _daemons = GuideDaemons(home.clone());
    let bin = Path::new(MINIBOT).parent().unwrap();
    // Two ports someone else listens on, and a `shuf` that answers them
    // first.
    let taken: Vec<std::net::TcpListener> = (0..2)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let ports: Vec<u16> = taken
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    let unlucky = tmp.path().join("unlucky");
    std::fs::create_dir(&unlucky).unwrap();
    let shuf = unlucky.join("shuf");
    std::fs::write(
        &shuf,
        format!(
            "#!/bin/sh\nn=$(cat \"$0.n\" 2>/dev/null || echo 0)\necho $((n + 1)) > \"$0.n\"\n\
             case $n in 0) echo {}; exit;; 1) echo {}; exit;; esac\nexec /usr/bin/shuf \"$@\"\n",
            ports[0], ports[1]
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&shuf, std::fs::Permissions::from_mode(0o755)).unwrap();
    let t0 = Instant::now();
    let (stdout, stderr) = paste(&blocks.join("\n"), &home, &[&unlucky, bin]);
    // The edits the guide makes leave nothing for checkconfig to warn about.
    assert!(!stderr.contains("warning"), "{stderr}");
    assert!(stdout.contains("config file is good"), "{stdout}");
    assert!(stdout.contains("stored it as change 1"), "{stdout}");
    let calls = std::fs::read_to_string(unlucky.join("shuf.n")).unwrap_or_default();
    assert!(
        calls.trim().parse::<u32>().is_ok_and(|n| n >= 3),
        "the taken ports were tried and passed over ({calls:?} calls to shuf)"
    );
    drop(taken);

    // The build of the repository's head goes green.
    let (www, _) = wait_for("the guide's master", Duration::from_secs(10), || {
        master_addresses(&home.join("master"), None)
    });
    let url = format!("http://127.0.0.1:{www}/api/v2/builds?complete=true");
    let build = wait_for("the guide's build", Duration::from_secs(60), || {
        let (_, body) = curl(&[&url]);
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["builds"].as_array()?.first().cloned()
    });
    assert_eq!(build["results"], 0, "{build}");
    let change = get_json(&format!("http://127.0.0.1:{www}/api/v2/changes/1"));
    assert_eq!(change["changes"][0]["revision"], head.as_str());
    eprintln!("the README guide: green in {:?}", t0.elapsed());
}

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
    assert!(
        err.contains("builders #1 (name = \"runtests\").steps #2 (name = \"test\").comand"),
        "{err}"
    );
    std::fs::write(
        &cfg,
        text.replace("builders = [\"runtests\"]", "builders = [\"nosuch\"]"),
    )
    .unwrap();
    let out = run(MINIBOT, &["checkconfig", s.master.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("schedulers #1 (name = \"all\").builders #1"),
        "{err}"
    );
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
