//! Artifacts (issue 20 point 2) with a real master and worker: `upload`
//! steps send a file, a directory and a glob to the master over the worker
//! connection; the sha256 of what the master stored is the worker's; the
//! build page and the API list them; curl downloads them whole and by
//! range; a `download` step brings one back; names that would leave a
//! directory are refused; the per-build cap fails the step with a message
//! naming it and leaves no partial file; the janitor removes artifacts with
//! their build and after `artifact_horizon_days`; a worker lost mid-upload
//! leaves nothing partial; and a 200 MB upload leaves the master's
//! anonymous memory flat.

use crate::common::*;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub(crate) fn sha256_file(p: &Path) -> String {
    let mut f = std::fs::File::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut f, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

/// The build directory of builder `runtests` on worker `example-worker`.
fn worker_build_dir(s: &Setup) -> PathBuf {
    s.tmp.path().join("example-worker/runtests/build")
}

/// Sets the `runtests` builder's `max_artifact_bytes`.
fn builder_cap(s: &Setup, cap: u64) {
    s.edit_cfg(|t| {
        t.replace(
            "workers = [\"example-worker\", \"second-worker\"]",
            &format!(
                "workers = [\"example-worker\", \"second-worker\"]\nmax_artifact_bytes = {cap}"
            ),
        )
    });
}

/// The artifacts of build `id` as the API lists them, by name.
fn api_artifacts(s: &Setup, id: i64) -> Vec<serde_json::Value> {
    let v = get_json(&s.url(&format!("/api/v2/builds/{id}/artifacts")));
    v["artifacts"].as_array().cloned().unwrap_or_default()
}

/// A master of `extra_cfg` (as [`Setup::new`]) with `example-worker`
/// connected; `edit` changes the master's directory first.
fn running(extra_cfg: &str, edit: impl FnOnce(&Setup)) -> (Setup, Proc, Proc) {
    let s = Setup::new(PASSING_TEST, extra_cfg);
    edit(&s);
    let master = s.start_master();
    let worker = s.start_worker("example-worker", WORKER_PW);
    s.wait_connected("example-worker");
    (s, master, worker)
}

/// A build of one push, run to its end; returns it.
fn one_build(s: &Setup) -> serde_json::Value {
    s.push(&s.head, "master", "artifacts");
    s.wait_builds(1, Duration::from_secs(120)).remove(0)
}

/// The status line and headers of a GET of `url` whose body is saved at
/// `out`, with more curl arguments before the URL.
fn curl_to(out: &Path, args: &[&str], url: &str) -> String {
    let mut full = vec!["-s", "-D", "-", "-o", out.to_str().unwrap()];
    full.extend_from_slice(args);
    full.push(url);
    run_ok("curl", &full)
}

/// The step named `name` of build `id`.
fn step(s: &Setup, id: i64, name: &str) -> serde_json::Value {
    let v = get_json(&s.url(&format!("/api/v2/builds/{id}/steps")));
    v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|st| st["name"] == name)
        .unwrap_or_else(|| panic!("no step {name}: {v}"))
        .clone()
}

const MAKE_AND_UPLOAD: &str = r#"
[[builders.steps]]
type = "shell"
name = "make"
command = "mkdir -p dist/sub && printf one > dist/a.whl && printf two > dist/b.whl && printf three > dist/sub/c.txt && head -c 3000000 /dev/urandom > app.bin"
[[builders.steps]]
type = "upload"
name = "file"
source = "app.bin"
[[builders.steps]]
type = "upload"
name = "directory"
source = "dist"
dest = "tree"
[[builders.steps]]
type = "upload"
name = "glob"
source = "dist/*.whl"
dest = "wheels"
[[builders.steps]]
type = "download"
name = "fetch"
artifact = "wheels/a.whl"
dest = "fetched/a.whl"
[[builders.steps]]
type = "shell"
name = "check"
command = "test \"$(cat fetched/a.whl)\" = one"
"#;

#[test]
fn upload_list_download_and_fetch_back() {
    let (s, _master, _worker) = running(MAKE_AND_UPLOAD, |_| {});
    let b = one_build(&s);
    let id = b["buildid"].as_i64().unwrap();
    assert_eq!(b["results"], 0, "{b}");

    // The API lists each file with its size and sha256, and the sha256 is
    // the worker's file's and the stored file's.
    let list = api_artifacts(&s, id);
    let names: Vec<&str> = list.iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "app.bin",
            "tree/a.whl",
            "tree/b.whl",
            "tree/sub/c.txt",
            "wheels/a.whl",
            "wheels/b.whl"
        ]
    );
    let wdir = worker_build_dir(&s);
    for a in &list {
        let name = a["name"].as_str().unwrap();
        let source = match name {
            "app.bin" => wdir.join("app.bin"),
            n => wdir.join("dist").join(n.split_once('/').unwrap().1),
        };
        let stored = minibot::db::artifact_path(&s.master, minibot::model::BuildId(id), name);
        let sha = sha256_file(&source);
        assert_eq!(a["sha256"], sha, "{name}");
        assert_eq!(sha256_file(&stored), sha, "{name} as stored");
        assert_eq!(
            a["size"],
            std::fs::metadata(&source).unwrap().len(),
            "{name}"
        );
    }
    eprintln!("uploaded: {names:?}");

    // The build page lists them with their download links.
    let (code, page) = curl(&[&s.url("/builders/runtests/builds/1")]);
    assert_eq!(code, 200);
    assert!(page.contains("<h3>Artifacts</h3>"), "{page}");
    let app = &list[0];
    let url = app["url"].as_str().unwrap();
    assert!(page.contains(&format!("href=\"{url}\"")), "{page}");
    assert!(page.contains(app["sha256"].as_str().unwrap()));

    // curl: the whole file, an attachment; then one range of it.
    let out = s.tmp.path().join("download");
    let headers = curl_to(&out, &[], &s.url(url));
    assert!(headers.starts_with("HTTP/1.1 200"), "{headers}");
    assert!(
        headers.contains("Content-Disposition: attachment; filename=\"app.bin\""),
        "{headers}"
    );
    assert!(headers.contains("Content-Length: 3000000"), "{headers}");
    assert!(
        headers.contains("Content-Type: application/octet-stream"),
        "{headers}"
    );
    assert!(
        headers.contains("X-Content-Type-Options: nosniff"),
        "{headers}"
    );
    let whole = std::fs::read(&out).unwrap();
    assert_eq!(whole, std::fs::read(wdir.join("app.bin")).unwrap());
    let headers = curl_to(&out, &["-r", "1000-1999"], &s.url(url));
    assert!(headers.starts_with("HTTP/1.1 206"), "{headers}");
    assert!(
        headers.contains("Content-Range: bytes 1000-1999/3000000"),
        "{headers}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), whole[1000..2000]);
    let headers = curl_headers(&["-r", "3000000-", &s.url(url)]);
    assert!(headers.starts_with("HTTP/1.1 416"), "{headers}");

    // The download step wrote the artifact into the build directory (the
    // `check` step passed on it), and logged its checksum.
    assert_eq!(std::fs::read(wdir.join("fetched/a.whl")).unwrap(), b"one");
    let log = s.step_log(id, "fetch");
    assert!(log.contains("downloaded fetched/a.whl (3 bytes"), "{log}");
    let log = s.step_log(id, "file");
    assert!(
        log.contains(&format!(
            "stored artifact app.bin (3000000 bytes, sha256 {}",
            app["sha256"].as_str().unwrap()
        )),
        "{log}"
    );
}

#[test]
fn names_and_sources_that_leave_their_directory_are_refused() {
    // In master.cfg: checkconfig names each key.
    let s = Setup::new(
        PASSING_TEST,
        r#"
[[builders.steps]]
type = "upload"
source = "../outside"
dest = "/etc/x"
[[builders.steps]]
type = "download"
artifact = "a/../../b"
dest = "../x"
[[builders.steps]]
type = "download"
file = "../state.sqlite"
dest = "x"
"#,
    );
    let out = run(MINIBOT, &["checkconfig", s.master.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for key in [
        "steps #3.source",
        "steps #3.dest",
        "steps #4.artifact",
        "steps #4.dest",
        "steps #5.file",
    ] {
        assert!(err.contains(key), "{key} not in: {err}");
    }

    // On the worker: a symlink out of the build directory is not followed,
    // the step fails saying so, and nothing is stored.
    let (s, _master, _worker) = running(
        r#"
[[builders.steps]]
type = "shell"
name = "link"
command = "ln -sf /etc/passwd passwd"
[[builders.steps]]
type = "upload"
name = "up"
source = "passwd"
"#,
        |_| {},
    );
    let b = one_build(&s);
    let id = b["buildid"].as_i64().unwrap();
    assert_eq!(b["results"], 2, "{b}");
    let up = step(&s, id, "up");
    assert!(
        up["state_string"]
            .as_str()
            .unwrap()
            .contains("outside the build directory"),
        "{up}"
    );
    assert!(api_artifacts(&s, id).is_empty());
}

#[test]
fn the_cap_fails_the_step_with_its_name_and_leaves_no_partial_file() {
    let (s, _master, _worker) = running(
        r#"
[[builders.steps]]
type = "shell"
name = "make"
command = "mkdir -p out && head -c 3000 /dev/urandom > out/1.bin && head -c 3000 /dev/urandom > out/2.bin"
[[builders.steps]]
type = "upload"
name = "up"
source = "out"
"#,
        |s| builder_cap(s, 5000),
    );
    let b = one_build(&s);
    let id = b["buildid"].as_i64().unwrap();
    assert_eq!(b["results"], 2, "{b}");
    let up = step(&s, id, "up");
    let state = up["state_string"].as_str().unwrap();
    assert!(
        state.contains("over the cap of 5000 bytes (max_artifact_bytes)"),
        "{up}"
    );
    eprintln!("step state: {state}");
    // The first file fit and is kept; the second is nowhere.
    let list = api_artifacts(&s, id);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["name"], "out/1.bin");
    let dir = minibot::db::artifact_dir(&s.master, minibot::model::BuildId(id));
    assert!(dir.join("out/1.bin").exists());
    assert!(!dir.join("out/2.bin").exists());
    let partial = minibot::db::artifact_root(&s.master).join(".partial");
    let left: Vec<_> = std::fs::read_dir(&partial)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "partial files left: {left:?}");
}

#[test]
fn the_janitor_removes_artifacts_with_their_build_and_past_the_horizon() {
    let (s, mut master, _worker) = running(
        r#"
[[builders.steps]]
type = "shell"
name = "make"
command = "printf artifact > a.txt"
[[builders.steps]]
type = "upload"
source = "a.txt"
[janitor]
build_horizon_days = 30
log_horizon_days = 0
artifact_horizon_days = 7
"#,
        |_| {},
    );
    for i in 1..=3 {
        s.push(&s.head, "master", &format!("push {i}"));
        s.wait_builds(i, Duration::from_secs(60));
    }
    let builds = s.wait_builds(3, Duration::from_secs(60));
    let id = |i: usize| builds[i]["buildid"].as_i64().unwrap();
    let dir = |i: usize| minibot::db::artifact_dir(&s.master, minibot::model::BuildId(id(i)));
    for i in 0..3 {
        assert_eq!(api_artifacts(&s, id(i)).len(), 1);
        assert!(dir(i).join("a.txt").exists());
    }
    master.signal(libc::SIGTERM);
    assert_eq!(master.wait_exit(Duration::from_secs(30)), Some(0));
    // Build 0 finished 40 days ago (past the build horizon), build 1 ten
    // days ago (past the artifact horizon only).
    age_builds(&s.master, &[(id(0), 40), (id(1), 10)]);

    let _master = s.start_master();
    let run = s.wait_status("the janitor's first run", |st| st.last_janitor_run.clone());
    assert_eq!(run.rows.builds, 1, "{run:?}");
    assert_eq!(
        run.rows.artifacts, 2,
        "one with its build, one past 7 days: {run:?}"
    );
    assert_eq!(run.artifact_builds, 1, "{run:?}");
    assert!(run.artifact_bytes >= 2 * "artifact".len() as u64, "{run:?}");
    assert!(!dir(0).exists() && !dir(1).exists());
    assert!(dir(2).join("a.txt").exists());
    let (code, _) = curl(&[&s.url(&format!("/api/v2/builds/{}", id(1)))]);
    assert_eq!(code, 200, "build 1 stays");
    assert!(api_artifacts(&s, id(1)).is_empty());
    assert_eq!(api_artifacts(&s, id(2)).len(), 1);
    let all = get_json(&s.url("/api/v2/artifacts"));
    assert_eq!(all["meta"]["total"], 1, "{all}");
}

/// CPU seconds (user + system) process `pid` has used.
fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // utime and stime, fields 14 and 15 of the line, in clock ticks.
    (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / 100.0
}

/// The master's anonymous resident memory (`RssAnon`), in bytes.
fn rss_anon(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("RssAnon:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[test]
fn a_200_mb_artifact_leaves_the_masters_memory_flat() {
    const SIZE: u64 = 200 * 1000 * 1000;
    let (s, master, worker) = running(
        &format!(
            r#"
[[builders.steps]]
type = "shell"
name = "make"
command = "head -c {SIZE} /dev/urandom > big.bin"
[[builders.steps]]
type = "upload"
name = "upload"
source = "big.bin"
"#
        ),
        |s| builder_cap(s, 300 * 1000 * 1000),
    );
    // Idle, connected: the baseline (the lowest of a few samples).
    let pid = master.pid();
    let idle = (0..5)
        .filter_map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            rss_anon(pid)
        })
        .min()
        .unwrap();
    s.push(&s.head, "master", "big");
    let started = Instant::now();
    let url = s.url("/api/v2/builds?complete=true");
    let mut peak = idle;
    let mut samples = 0;
    let b = loop {
        // Sampled every 20 ms while the build runs (the API poll every 10th).
        peak = peak.max(rss_anon(pid).unwrap_or(0));
        samples += 1;
        if samples % 10 == 0 {
            let v = get_json(&url);
            if let Some(b) = v["builds"].as_array().and_then(|a| a.first()) {
                break b.clone();
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the 200 MB build did not finish in 10 minutes"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = started.elapsed();
    assert_eq!(b["results"], 0, "{b}");
    let id = b["buildid"].as_i64().unwrap();
    let list = api_artifacts(&s, id);
    assert_eq!(list[0]["size"], SIZE);
    let sha = sha256_file(&worker_build_dir(&s).join("big.bin"));
    assert_eq!(list[0]["sha256"], sha);
    let stored = minibot::db::artifact_path(&s.master, minibot::model::BuildId(id), "big.bin");
    assert_eq!(sha256_file(&stored), sha);
    let growth = peak.saturating_sub(idle);
    let upload = step(&s, id, "upload");
    eprintln!(
        "200 MB artifact: build took {:.1} s (the upload step {} s); master RssAnon idle \
         {:.1} MB, peak {:.1} MB during the upload (+{:.1} MB, {samples} samples); CPU so \
         far: master {:.1} s, worker {:.1} s",
        took.as_secs_f64(),
        upload["complete_at"].as_i64().unwrap_or(0) - upload["started_at"].as_i64().unwrap_or(0),
        idle as f64 / 1e6,
        peak as f64 / 1e6,
        growth as f64 / 1e6,
        cpu_seconds(pid),
        cpu_seconds(worker.pid())
    );
    assert!(
        growth < 20 * 1000 * 1000,
        "the master's RssAnon grew by {growth} bytes during a 200 MB upload"
    );
}

#[test]
fn downloads_from_files_and_from_earlier_builds() {
    let (s, _master, _worker) = running(
        r#"
[[builders.steps]]
type = "shell"
name = "make"
command = "printf %s \"$MINIBOT_BUILDNUMBER\" > v.txt"
[[builders.steps]]
type = "upload"
name = "keep"
source = "v.txt"
[[builders.steps]]
type = "download"
name = "previous"
artifact = "v.txt"
build = "last_successful"
dest = "prev/v.txt"
flunk_on_failure = false
halt_on_failure = false
[[builders.steps]]
type = "download"
name = "first"
artifact = "v.txt"
build = 1
dest = "first.txt"
[[builders.steps]]
type = "download"
name = "parent"
artifact = "v.txt"
build = "triggering"
dest = "parent.txt"
flunk_on_failure = false
halt_on_failure = false
[[builders.steps]]
type = "download"
name = "script"
file = "deploy.sh"
dest = "bin/deploy.sh"
[[builders.steps]]
type = "download"
name = "escape"
file = "escape"
dest = "escape"
flunk_on_failure = false
halt_on_failure = false
"#,
        |s| {
            let files = s.master.join("files");
            std::fs::create_dir_all(&files).unwrap();
            std::fs::write(files.join("deploy.sh"), "echo deploy\n").unwrap();
            std::os::unix::fs::symlink(s.master.join("master.cfg"), files.join("escape")).unwrap();
        },
    );
    let wdir = worker_build_dir(&s);

    // Build 1: nothing succeeded before it, so "previous" fails (without
    // failing the build); its own v.txt is build #1's.
    let b1 = one_build(&s);
    let id1 = b1["buildid"].as_i64().unwrap();
    assert_eq!(b1["results"], 0, "{b1}");
    let prev = step(&s, id1, "previous");
    assert_eq!(prev["results"], 2, "{prev}");
    assert!(
        prev["state_string"]
            .as_str()
            .unwrap()
            .contains("any successful build of this builder has no artifact named v.txt"),
        "{prev}"
    );
    assert_eq!(
        std::fs::read_to_string(wdir.join("first.txt")).unwrap(),
        "1"
    );
    // A build no trigger step started has no triggering build to take
    // from (tests/release_example.rs has one that has).
    let parent = step(&s, id1, "parent");
    assert_eq!(parent["results"], 2, "{parent}");
    assert!(
        parent["state_string"]
            .as_str()
            .unwrap()
            .contains("not started by a trigger step"),
        "{parent}"
    );
    assert!(!wdir.join("parent.txt").exists());
    assert_eq!(
        std::fs::read_to_string(wdir.join("bin/deploy.sh")).unwrap(),
        "echo deploy\n"
    );
    // A symlink under files/ that leads out of it is not followed.
    let escape = step(&s, id1, "escape");
    assert_eq!(escape["results"], 2, "{escape}");
    assert!(
        escape["state_string"]
            .as_str()
            .unwrap()
            .contains("leads outside files/"),
        "{escape}"
    );
    assert!(!wdir.join("escape").exists());

    // Build 2 gets build 1's artifact as the last successful one.
    s.push(&s.head, "master", "second");
    let b2 = s.wait_builds(2, Duration::from_secs(120)).remove(1);
    let id2 = b2["buildid"].as_i64().unwrap();
    assert_eq!(step(&s, id2, "previous")["results"], 0);
    assert_eq!(
        std::fs::read_to_string(wdir.join("prev/v.txt")).unwrap(),
        "1"
    );
    assert_eq!(
        api_artifacts(&s, id2)[0]["sha256"],
        hex::encode(Sha256::digest(b"2"))
    );
}

#[test]
fn a_worker_lost_mid_upload_leaves_no_partial_file() {
    let (s, _master, worker) = running(
        r#"
[[builders.steps]]
type = "shell"
name = "make"
command = "head -c 150000000 /dev/urandom > big.bin"
[[builders.steps]]
type = "upload"
name = "upload"
source = "big.bin"
"#,
        |s| builder_cap(s, 300 * 1000 * 1000),
    );
    s.push(&s.head, "master", "lost");
    let partial = minibot::db::artifact_root(&s.master).join(".partial");
    let part_size = || -> Option<u64> {
        let e = std::fs::read_dir(&partial).ok()?.next()?.ok()?;
        e.metadata().ok().map(|m| m.len())
    };
    let seen = wait_for("a partial upload", Duration::from_secs(120), || {
        part_size().filter(|&n| n > 0)
    });
    worker.signal(libc::SIGKILL);
    let b = wait_for("the build to end as RETRY", Duration::from_secs(60), || {
        let v = get_json(&s.url("/api/v2/builds?complete=true"));
        v["builds"].as_array()?.first().cloned()
    });
    assert_eq!(b["results"], 5, "{b}");
    eprintln!("worker killed with {seen} bytes of the upload on the master");
    assert_eq!(part_size(), None, "the partial file is removed");
    let all = get_json(&s.url("/api/v2/artifacts"));
    assert_eq!(all["meta"]["total"], 0, "{all}");
}

/// The test as a worker on the wire (`minibot::protocol`): answers the
/// steps before the upload with success, then sends what a hostile worker
/// would. Returns the connection and the upload's `RunStep`.
fn fake_worker_at_upload(s: &Setup) -> (std::net::TcpStream, minibot::model::BuildId, u32) {
    use minibot::protocol::{self, FromWorker, StepSpec, ToWorker};
    let mut w = std::net::TcpStream::connect(("127.0.0.1", s.wport())).unwrap();
    w.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let Some(ToWorker::Hello { nonce, .. }) = protocol::read_frame(&mut w).unwrap() else {
        panic!("no hello")
    };
    send_worker_auth(&mut w, &nonce, "example-worker", WORKER_PW);
    let welcome: Option<ToWorker> = protocol::read_frame(&mut w).unwrap();
    assert!(
        matches!(welcome, Some(ToWorker::Welcome { .. })),
        "{welcome:?}"
    );
    s.push(&s.head, "master", "hostile");
    loop {
        match protocol::read_message::<_, ToWorker>(&mut w).unwrap() {
            Some(ToWorker::Ping) => protocol::write_frame(&mut w, &FromWorker::Pong).unwrap(),
            Some(ToWorker::RunStep {
                build_id,
                step,
                spec: StepSpec::Upload { .. },
                ..
            }) => return (w, build_id, step),
            Some(ToWorker::RunStep { build_id, step, .. }) => protocol::write_frame(
                &mut w,
                &FromWorker::StepDone {
                    build_id,
                    step,
                    exit_code: Some(0),
                    interrupted: false,
                    timed_out: false,
                    reason: None,
                },
            )
            .unwrap(),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn a_hostile_worker_on_the_wire_cannot_escape_the_artifact_directory() {
    use minibot::protocol::{self, FromWorker, ToWorker};
    let s = Setup::new(
        PASSING_TEST,
        "[[builders.steps]]\ntype = \"upload\"\nname = \"up\"\nsource = \"x\"\n",
    );
    let _master = s.start_master();
    let (mut w, build_id, n) = fake_worker_at_upload(&s);
    // A name out of the directory: refused before anything is written.
    protocol::write_frame(
        &mut w,
        &FromWorker::UploadFile {
            build_id,
            step: n,
            name: "../../../evil".into(),
            size: 4,
        },
    )
    .unwrap();
    protocol::write_frame(
        &mut w,
        &FromWorker::UploadData {
            build_id,
            step: n,
            data: b"evil".to_vec(),
        },
    )
    .unwrap();
    let answer = loop {
        match protocol::read_message::<_, ToWorker>(&mut w).unwrap() {
            Some(ToWorker::Ping) => protocol::write_frame(&mut w, &FromWorker::Pong).unwrap(),
            other => break other,
        }
    };
    let Some(ToWorker::TransferAborted { reason, .. }) = answer else {
        panic!("expected transfer_aborted, got {answer:?}")
    };
    assert!(reason.contains("refused"), "{reason}");
    // The worker claims success anyway: the master's refusal is the result.
    protocol::write_frame(
        &mut w,
        &FromWorker::StepDone {
            build_id,
            step: n,
            exit_code: Some(0),
            interrupted: false,
            timed_out: false,
            reason: None,
        },
    )
    .unwrap();
    let b = s.wait_builds(1, Duration::from_secs(60)).remove(0);
    assert_eq!(b["results"], 2, "{b}");
    let up = step(&s, build_id.0, "up");
    assert!(
        up["state_string"].as_str().unwrap().contains("refused"),
        "{up}"
    );
    for p in ["evil", "../evil", "../../evil", "../../../evil"] {
        let leaked = minibot::db::artifact_dir(&s.master, build_id).join(p);
        assert!(!leaked.exists(), "{}", leaked.display());
    }
    assert_eq!(get_json(&s.url("/api/v2/artifacts"))["meta"]["total"], 0);
}
