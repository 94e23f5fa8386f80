//! The command line as a newcomer meets it: `sendchange` from a real git
//! `post-receive` hook (the one in `etc/git-hooks/`), checkconfig's
//! warnings, the bare command's list, `--version`, "did you mean",
//! `create-master --force` over a config in use, the `minibot:` prefix on
//! every error line, and output into a closed pipe (the demo into `head`).

use crate::common::*;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MINIBOT_WORKER: &str = env!("CARGO_BIN_EXE_minibot-worker");

fn stderr_text(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn hook_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/git-hooks/post-receive")
}

#[test]
fn sendchange_from_a_real_post_receive_hook_builds_the_push() {
    let s = Setup::new(PASSING_TEST, "");
    let _master = s.start_master();
    let _worker = s.start_worker("example-worker", WORKER_PW);
    s.wait_connected("example-worker");

    // The repository the builder clones takes pushes (updating its work
    // tree) and runs the shipped hook, configured through its environment.
    git(
        &s.repo,
        &["config", "receive.denyCurrentBranch", "updateInstead"],
    );
    let hook = s.repo.join(".git/hooks/post-receive");
    std::fs::copy(hook_script(), &hook).unwrap();
    let secret_file = s.tmp.path().join("hook-secret");
    write_private(&secret_file, &format!("{BASE_SECRET}\n"));

    let work = s.tmp.path().join("work");
    run_ok(
        "git",
        &[
            "clone",
            "-q",
            s.repo.to_str().unwrap(),
            work.to_str().unwrap(),
        ],
    );
    std::fs::write(work.join("NEWS"), "a change\n").unwrap();
    git(&work, &["add", "NEWS"]);
    git(&work, &["commit", "-q", "-m", "Pushed through the hook"]);
    let head = git(&work, &["rev-parse", "HEAD"]);
    let bin_dir = Path::new(MINIBOT).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("git")
        .arg("-C")
        .arg(&work)
        .args(["push", "origin", "master"])
        .env("PATH", &path)
        .env("MINIBOT_URL", s.url("/"))
        .env("MINIBOT_SECRET_FILE", &secret_file)
        .output()
        .unwrap();
    let pushed = stderr_text(&out);
    println!("git push said:\n{pushed}");
    assert!(out.status.success(), "{pushed}");
    assert!(pushed.contains("change sent"), "{pushed}");

    let b = &s.wait_builds(1, Duration::from_secs(60))[0];
    assert_eq!(b["results"], 0, "{b}");
    let changes = get_json(&s.url("/api/v2/changes"));
    let c = &changes["changes"][0];
    assert_eq!(c["revision"], head.as_str(), "{c}");
    assert_eq!(c["branch"], "master");
    assert_eq!(c["author"], "Test <test@example.org>");
    assert_eq!(c["category"], "push");
    assert!(
        c["comments"]
            .as_str()
            .unwrap()
            .contains("Pushed through the hook"),
        "{c}"
    );
    let git_log = s.step_log(b["buildid"].as_i64().unwrap(), "git");
    assert!(git_log.contains(&head), "{git_log}");

    // By hand, with Buildbot's option names; a wrong secret and a master
    // that is not there are one sentence each, exit 1.
    let out = run(
        MINIBOT,
        &[
            "sendchange",
            "--master",
            &s.url("/"),
            "--secret-file",
            secret_file.to_str().unwrap(),
            "--branch",
            "master",
            "--revision",
            &head,
            "--who",
            "Jane <jane@example.org>",
            "--project",
            "hello",
            "--repository",
            s.repo.to_str().unwrap(),
            "--comments",
            "by hand",
            "--property",
            "reason:manual",
            "NEWS",
        ],
    );
    assert!(out.status.success(), "{}", stderr_text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("stored it as change"), "{said}");
    let id = said.trim().rsplit(' ').next().unwrap();
    let c = get_json(&s.url(&format!("/api/v2/changes/{id}")));
    let c = &c["changes"][0];
    assert_eq!(c["project"], "hello", "{c}");
    assert_eq!(c["author"], "Jane <jane@example.org>");
    assert_eq!(c["files"][0], "NEWS", "{c}");
    assert_eq!(c["properties"]["reason"][0], "manual", "{c}");

    let wrong = s.tmp.path().join("wrong-secret");
    write_private(&wrong, "not-the-secret\n");
    let out = run(
        MINIBOT,
        &[
            "sendchange",
            "-m",
            &s.url("/"),
            "--secret-file",
            wrong.to_str().unwrap(),
            "-b",
            "master",
        ],
    );
    let err = stderr_text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("minibot: the master refused the change") && err.contains("--secret-file"),
        "{err}"
    );
    let out = run(
        MINIBOT,
        &["sendchange", "--master", "127.0.0.1:1", "--comments", "x"],
    );
    let err = stderr_text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("nobody is listening"), "{err}");
}

/// A master directory from `create-master` with the sample renamed, as
/// the guide does.
fn fresh_master(tmp: &Path) -> PathBuf {
    let dir = tmp.join("master");
    run_ok(MINIBOT, &["create-master", dir.to_str().unwrap()]);
    std::fs::rename(dir.join("master.cfg.sample"), dir.join("master.cfg")).unwrap();
    dir
}

fn checkconfig(path: &Path) -> (i32, String) {
    let out = run(MINIBOT, &["checkconfig", path.to_str().unwrap()]);
    (out.status.code().unwrap_or(-1), stderr_text(&out))
}

#[test]
fn checkconfig_warns_about_placeholders_and_mismatches() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fresh_master(tmp.path());
    let cfg = dir.join("master.cfg");
    let text = std::fs::read_to_string(&cfg).unwrap();

    // The sample as it comes: the example repository is the one thing
    // left to edit, and checkconfig says so (exit 0).
    let (code, err) = checkconfig(&dir);
    println!("{err}");
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning: builders #1 (name = \"runtests\").steps #1.repourl: \"https://git.example.org/isabell/hello-world.git\" is the sample's example repository"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one warning only: {err}");
    // ... on the line of the key it names, as problems are.
    let repourl_line = 1 + text
        .lines()
        .position(|l| l.starts_with("repourl = "))
        .unwrap();
    assert!(
        err.contains(&format!("master.cfg:{repourl_line}: warning: builders #1")),
        "{err}"
    );

    // The web port changed but not buildbot_url (the guide's old trap); a
    // builder nobody schedules; a worker no builder uses; the published
    // Gitea secret.
    let secret = text
        .lines()
        .find_map(|l| l.strip_prefix("secret = \""))
        .unwrap()
        .trim_end_matches('"')
        .to_string();
    let edited = text
        .replace("port = 12345", "port = 12399")
        .replace(
            "https://git.example.org/isabell/hello-world.git",
            "/srv/git/hello.git",
        )
        .replace(&secret, "SomeSecretPassPhraseToAuthenticateGitea")
        + r#"
[[workers]]
name = "idle-worker"
password = "0123456789abcdef0123"

[[builders]]
name = "orphan"
workers = ["example-worker"]
[[builders.steps]]
type = "shell"
command = "true"
"#;
    write_private(&cfg, &edited);
    let (code, err) = checkconfig(&dir);
    println!("{err}");
    assert_eq!(code, 0, "{err}");
    for want in [
        "warning: buildbot_url: \"http://localhost:12345/\" has port 12345 but the web UI listens on port 12399",
        "warning: builders #2 (name = \"orphan\"): no scheduler starts builder \"orphan\"",
        "warning: workers #2 (name = \"idle-worker\"): no builder uses worker \"idle-worker\"",
        "warning: www.change_hook_dialects.gitea.secret: is the sample's published secret",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    assert!(!err.contains("repourl"), "{err}");
    for line in err.lines() {
        assert!(line.starts_with("minibot: "), "unprefixed line {line:?}");
    }

    // The file itself, as Buildbot's `checkconfig master.cfg`.
    let out = run(MINIBOT, &["checkconfig", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr_text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("config file is good"));
}

#[test]
fn the_command_line_explains_itself() {
    // Alone: every command with its line, exit 2 (a usage error).
    let out = run(MINIBOT, &[]);
    let err = stderr_text(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for want in [
        "create-master     create a master directory",
        "sendchange        send one change",
        "demo ",
    ] {
        assert!(err.contains(want), "missing {want:?}:\n{err}");
    }
    let out = run(MINIBOT_WORKER, &[]);
    assert!(stderr_text(&out).contains("create-worker"));
    // ... and the options, `--version` among them (answered outside argh,
    // so argh's own list would leave it out).
    for bin in [MINIBOT, MINIBOT_WORKER] {
        let alone = stderr_text(&run(bin, &[]));
        let help = run_ok(bin, &["--help"]);
        for text in [&alone, &help] {
            assert!(text.contains("  --version  "), "{text}");
            assert!(text.contains("  --help, help  "), "{text}");
        }
    }

    // --version on both, with the commit when built from a checkout.
    let from_git = Path::new(env!("CARGO_MANIFEST_DIR")).join(".git").exists();
    for bin in [MINIBOT, MINIBOT_WORKER] {
        let v = run_ok(bin, &["--version"]);
        let name = Path::new(bin).file_name().unwrap().to_str().unwrap();
        assert!(
            v.starts_with(&format!("{name} {}", env!("CARGO_PKG_VERSION"))),
            "{v}"
        );
        assert_eq!(v.contains("(git "), from_git, "{v}");
    }

    // A typo gets a suggestion.
    let out = run(MINIBOT, &["strat", "master"]);
    let err = stderr_text(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(err.contains("did you mean `start`?"), "{err}");
    let out = run(MINIBOT_WORKER, &["creat-worker"]);
    assert!(
        stderr_text(&out).contains("did you mean `create-worker`?"),
        "{}",
        stderr_text(&out)
    );

    // --force over a master whose config is in use keeps it and says so.
    let tmp = tempfile::tempdir().unwrap();
    let dir = fresh_master(tmp.path());
    let mine = std::fs::read_to_string(dir.join("master.cfg")).unwrap() + "# my edit\n";
    write_private(&dir.join("master.cfg"), &mine);
    let said = run_ok(
        MINIBOT,
        &["create-master", "--force", dir.to_str().unwrap()],
    );
    assert!(said.contains("kept your"), "{said}");
    assert!(!said.contains("mv "), "{said}");
    assert_eq!(
        std::fs::read_to_string(dir.join("master.cfg")).unwrap(),
        mine
    );

    // Several problems: every line of the answer carries the prefix.
    let bad = mine
        .replace("max_builds = 1", "max_builds = 1\nmax_bilds = 2")
        .replace("builders = [\"runtests\"]", "builders = [\"nosuch\"]");
    write_private(&dir.join("master.cfg"), &bad);
    let (code, err) = checkconfig(&dir);
    assert_eq!(code, 1, "{err}");
    assert!(err.lines().count() >= 2, "{err}");
    for line in err.lines() {
        assert!(line.starts_with("minibot: "), "unprefixed line {line:?}");
    }
}

/// `minibot demo | head -1`: the reader goes away after one line. The demo
/// must not die on the closed pipe (a `println!` there panics and aborts,
/// exit 134, leaving its master running); it finishes, stops its master
/// and exits 0.
#[test]
fn demo_into_a_closed_pipe_finishes_cleanly() {
    // The demo runs a master: not while a run_alone test is timed.
    let _gate = run_shared();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let mut child = Command::new(MINIBOT)
        .args(["demo", "--once", dir.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The reader is gone (dropped above): like `head -1` exiting.
    assert!(first.starts_with("[1/6]"), "{first}");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "demo did not finish");
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut s).unwrap();
        s
    };
    println!("demo into a closed pipe: {status}; stderr: {err}");
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // Its master is gone (pid file removed on a clean stop).
    assert!(!dir.join("master/minibot.pid").exists());

    // Read in full: the address comes while the master serves (before the
    // worker starts), and the end says what stays and how to remove it.
    let out = run_ok(MINIBOT, &["demo", "--once", dir.to_str().unwrap()]);
    let web = out.find("web UI: http://127.0.0.1:").expect(&out);
    let worker = out.find("[4/6]").expect(&out);
    assert!(web < worker, "{out}");
    assert!(out.contains(&format!("rm -rf {}", dir.display())), "{out}");
    // Its commands to start them again work as printed, from a shell whose
    // PATH does not have the binaries (as after `cargo run`): they name
    // the binaries by their paths.
    let again = out
        .lines()
        .find_map(|l| l.strip_prefix("or start its master and worker as they are: "))
        .expect(&out);
    let first = again.split_whitespace().next().unwrap();
    assert_eq!(
        Path::new(first).canonicalize().unwrap(),
        Path::new(MINIBOT).canonicalize().unwrap(),
        "{again}"
    );
    let _stop = DemoStopper(&dir);
    let started = Command::new("sh")
        .args(["-c", again])
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    assert!(started.status.success(), "{again}: {started:?}");
    let said = String::from_utf8_lossy(&started.stdout);
    assert!(said.contains("connected to the master"), "{said}");
}

/// Stops the demo's master and worker started again by the test.
struct DemoStopper<'a>(&'a Path);

impl Drop for DemoStopper<'_> {
    fn drop(&mut self) {
        let _ = run(
            MINIBOT_WORKER,
            &["stop", self.0.join("worker").to_str().unwrap()],
        );
        let _ = run(MINIBOT, &["stop", self.0.join("master").to_str().unwrap()]);
    }
}

/// `minibot demo | tee demo.log`, then Ctrl-C: tee dies with the SIGINT,
/// and the demo says goodbye into a closed pipe. It must stop its master
/// and worker and exit 0, not abort (exit 134 with `println!`).
#[test]
fn demo_interrupted_after_its_reader_is_gone_exits_cleanly() {
    let _gate = run_shared();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let mut child = Command::new(MINIBOT)
        .args(["demo", dir.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    let mut line = String::new();
    while !line.contains("until Ctrl-C") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "demo ended: {seen}");
        seen.push_str(&line);
    }
    assert!(dir.join("master/minibot.pid").exists(), "{seen}");
    drop(out); // tee is gone
    minibot::daemon::send_signal(child.id() as i32, libc::SIGINT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "demo did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    println!("demo after Ctrl-C with its reader gone: {status}; stderr: {err}");
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(!dir.join("master/minibot.pid").exists());
}

/// A skipped test passes without testing anything, and the harness counts
/// it as passed; so the test program ends with a summary of the skips,
/// after its "test result" line (README, "Running the tests"). Run here on
/// this very program: the browser test, skipped by its variable, and the
/// skip rule's own test, which skips nothing and so prints no summary.
#[test]
fn skipped_tests_are_summed_up_where_cargo_test_ends() {
    let run_self = |test: &str| {
        let out = Command::new("sh")
            .arg("-c")
            .arg("exec \"$0\" \"$@\" 2>&1")
            .arg(std::env::current_exe().unwrap())
            .args([test, "--exact"])
            .env_remove("CI")
            .env("MINIBOT_SKIP_CHROMIUM", "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{text}");
        text
    };
    let test = "web_browser::browser_logs_in_forces_and_watches_the_log_grow";
    let text = run_self(test);
    let result = text
        .find("test result: ok. 1 passed")
        .unwrap_or_else(|| panic!("{text}"));
    let summary = text
        .find("SKIPPED: 1 test(s) passed without testing anything")
        .unwrap_or_else(|| panic!("no summary of the skips: {text}"));
    assert!(summary > result, "the summary comes last: {text}");
    assert!(
        text[summary..].contains(&format!("{test}: MINIBOT_SKIP_CHROMIUM=1")),
        "{text}"
    );
    let text =
        run_self("common::require_rule::a_missing_program_is_skipped_visibly_and_fails_under_ci");
    assert!(text.contains("test result: ok. 1 passed"), "{text}");
    assert!(!text.contains("SKIPPED"), "{text}");
}
