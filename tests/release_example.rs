//! The release example of `docs/release.md` (issue 20 point 6), run as
//! written: the test takes the ```toml block from the page itself, so the
//! documentation and what is tested cannot drift apart. Only the outside
//! world is swapped in: the repository URL (a real local git repository),
//! the release host (a small HTTP server on 127.0.0.1 owned by this test,
//! which checks the token and records what it received and when) and
//! `python3` (the system one). Two real workers, `w1` and `w2`.
//!
//! Two releases are forced at once, and the test checks:
//! - the chain: each release build triggered its tests on both workers and
//!   its deploy, and each of those names its release build, in the API
//!   (`triggered` / `triggered_by`) and on the deploy's page;
//! - the artifact: one sha256 in the API, in the file the release build
//!   made on its worker, in the file the deploy downloaded, in the deploy's
//!   log and in what the release host received;
//! - the lock: the two deploys' own timestamps (printed by the step) and
//!   the host's never overlap, while the second deploy was queued before
//!   the first ended;
//! - the secret: the release host got it from each deploy, and it is found
//!   nowhere else (log files, state.sqlite and its WAL, master.log, the
//!   workers' logs, the API, the pages), in any of its common encodings.

use crate::artifacts::sha256_file;
use crate::common::*;
use crate::secrets::{assert_nothing_leaks, files_under, forms};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const LONG: Duration = Duration::from_secs(180);

/// The deploy token: characters that base64, URL and JSON encodings change.
const TOKEN: &str = "dep1oy/T0ken+with=eq:42";

/// How long the release host takes to answer an upload: long enough that
/// two deploys would overlap without the lock.
const HOST_DELAY: Duration = Duration::from_secs(4);

/// The placeholders of the page's config that the test replaces.
const DOC_REPO: &str = "https://git.example.org/isabell/hello-world.git";
const DOC_HOST: &str = "https://releases.example.org/upload";
const DOC_PYTHON: &str = r#"["python3", "#;
/// The workers' passwords, as the page gives them.
const W1_PW: &str = "change-me-w1-5e0c1f2a";
const W2_PW: &str = "change-me-w2-9b47d3e6";

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn now_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The ```toml block of docs/release.md.
fn doc_config() -> String {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/release.md"))
            .unwrap();
    let blocks: Vec<&str> = doc
        .split("```toml\n")
        .skip(1)
        .map(|b| b.split("\n```").next().unwrap())
        .collect();
    assert_eq!(blocks.len(), 1, "docs/release.md has one toml block");
    blocks[0].to_string()
}

/// One upload the release host received.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    auth: String,
    sha256: String,
    start: f64,
    end: f64,
}

/// The release host: answers each PUT after [`HOST_DELAY`] (201), each
/// connection on its own thread so overlapping deploys would overlap here.
fn release_host() -> (u16, Arc<Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let got2 = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let got = got2.clone();
            std::thread::spawn(move || {
                let start = now_f64();
                conn.set_read_timeout(Some(Duration::from_secs(30))).ok();
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut head = Vec::new();
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    head.push(line.trim_end().to_string());
                }
                let header = |name: &str| {
                    head.iter()
                        .find_map(|h| {
                            let (k, v) = h.split_once(':')?;
                            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                        })
                        .unwrap_or_default()
                };
                let mut w = conn;
                if header("expect").eq_ignore_ascii_case("100-continue") {
                    w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").ok();
                }
                let len: u64 = header("content-length").parse().unwrap_or(0);
                let mut body = Vec::new();
                r.take(len).read_to_end(&mut body).ok();
                std::thread::sleep(HOST_DELAY);
                let path = head
                    .first()
                    .and_then(|l| l.split(' ').nth(1))
                    .unwrap_or_default()
                    .to_string();
                let ok = header("authorization") == format!("Bearer {TOKEN}");
                got.lock().unwrap().push(Received {
                    path,
                    auth: header("authorization"),
                    sha256: sha256_hex(&body),
                    start,
                    end: now_f64(),
                });
                let status = if ok { "201 Created" } else { "403 Forbidden" };
                let _ = write!(
                    w,
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            });
        }
    });
    (port, got)
}

fn build(s: &Setup, id: i64) -> Value {
    let v = get_json(&s.url(&format!("/api/v2/builds/{id}?property=*")));
    v["builds"][0].clone()
}

fn builds_of(s: &Setup, builder: &str) -> Vec<Value> {
    let v = get_json(&s.url(&format!(
        "/api/v2/builders/{builder}/builds?order=number&property=*"
    )));
    v["builds"].as_array().cloned().unwrap_or_default()
}

fn worker_name(s: &Setup, workerid: &Value) -> String {
    let v = get_json(&s.url(&format!("/api/v2/workers/{workerid}")));
    v["workers"][0]["name"].as_str().unwrap().to_string()
}

/// The "deploy started/ended at T" timestamps a deploy step printed.
fn stamps(log: &str) -> (f64, f64) {
    let at = |what: &str| -> f64 {
        log.lines()
            .find_map(|l| l.strip_prefix(&format!("deploy {what} at ")))
            .unwrap_or_else(|| panic!("no 'deploy {what} at' in\n{log}"))
            .trim()
            .parse()
            .unwrap()
    };
    (at("started"), at("ended"))
}

#[test]
fn the_documented_release_runs_tests_on_two_workers_and_deploys_under_a_lock() {
    let s = Setup::new(PASSING_TEST, "");
    s.commit("VERSION", "1.4.2\n", "version 1.4.2");
    let (host_port, received) = release_host();

    let doc = doc_config();
    let repo_url = format!("file://{}", s.repo.display());
    let host_url = format!("http://127.0.0.1:{host_port}/upload");
    for placeholder in [DOC_REPO, DOC_HOST, DOC_PYTHON, W1_PW, W2_PW] {
        assert!(doc.contains(placeholder), "{placeholder} not in the doc");
    }
    let cfg = doc
        .replace(DOC_REPO, &repo_url)
        .replace(DOC_HOST, &host_url)
        .replace(DOC_PYTHON, r#"["/usr/bin/python3", "#);
    s.edit_cfg(|t| format!("{t}\n{cfg}"));
    let secrets = s.master.join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o700)).unwrap();
    write_private(&secrets.join("deploy_token"), &format!("{TOKEN}\n"));
    add_user(&s.master, USER, PASSWORD);
    let out = run(MINIBOT, &["checkconfig", s.master.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let _master = s.start_master();
    let _w1 = s.start_worker_in("w1", "w1", W1_PW, &[]);
    let _w2 = s.start_worker_in("w2", "w2", W2_PW, &[]);
    s.wait_connected("w1");
    s.wait_connected("w2");

    // Two releases at once.
    let params = json!({ "builderNames": ["release"] });
    force(&s, "release", params.clone());
    force(&s, "release", params);
    let releases = wait_for("two releases to finish", LONG, || {
        let b = builds_of(&s, "release");
        (b.len() == 2 && b.iter().all(|b| b["complete"] == true)).then_some(b)
    });
    for r in &releases {
        assert_eq!(r["results"], 0, "{r}");
        assert_eq!(
            r["properties"]["version"],
            json!(["1.4.2", "SetPropertyFromCommand Step"]),
            "{r}"
        );
    }

    // The chain, both ways: each release triggered test-w1, test-w2 and a
    // deploy, which all succeeded and name it as their trigger.
    let mut deploys = vec![];
    for r in &releases {
        let rid = r["buildid"].as_i64().unwrap();
        let triggered = r["triggered"].as_array().unwrap();
        let mut names = vec![];
        let mut test_workers = vec![];
        for t in triggered {
            assert_eq!(t["complete"], true, "{t}");
            assert_eq!(t["results"], 0, "{t}");
            let child = build(&s, t["buildid"].as_i64().unwrap());
            assert_eq!(child["triggered_by"]["buildid"], rid, "{child}");
            assert_eq!(child["results"], 0, "{child}");
            let builder = get_json(&s.url(&format!("/api/v2/builders/{}", child["builderid"])));
            let name = builder["builders"][0]["name"].as_str().unwrap().to_string();
            if name.starts_with("test-") {
                test_workers.push(worker_name(&s, &child["workerid"]));
            }
            if name == "deploy" {
                assert_eq!(child["properties"]["version"][0], "1.4.2", "{child}");
                deploys.push((child, r.clone()));
            }
            names.push(name);
        }
        names.sort();
        assert_eq!(names, ["deploy", "test-w1", "test-w2"], "{r}");
        test_workers.sort();
        assert_eq!(test_workers, ["w1", "w2"], "tests ran on both workers");
    }
    assert_eq!(deploys.len(), 2);
    for (d, r) in &deploys {
        let page = curl(&[&s.url(&format!("/builders/deploy/builds/{}", d["number"]))]).1;
        let link = format!("/builders/release/builds/{}", r["number"]);
        assert!(page.contains(&link), "the deploy's page links {link}");
    }

    // The artifact: the same sha256 everywhere.
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "{got:?}");
    for (d, r) in &deploys {
        let rid = r["buildid"].as_i64().unwrap();
        let arts = get_json(&s.url(&format!("/api/v2/builds/{rid}/artifacts")));
        let art = &arts["artifacts"][0];
        assert_eq!(art["name"], "hello.tar.gz", "{arts}");
        let sha = art["sha256"].as_str().unwrap().to_string();
        let made = s
            .tmp
            .path()
            .join(worker_name(&s, &r["workerid"]))
            .join("release/build/dist/hello.tar.gz");
        assert_eq!(sha256_file(&made), sha, "{made:?}");
        let fetched = s
            .tmp
            .path()
            .join(worker_name(&s, &d["workerid"]))
            .join("deploy/build/hello.tar.gz");
        assert_eq!(sha256_file(&fetched), sha, "{fetched:?}");
        let did = d["buildid"].as_i64().unwrap();
        let log = s.step_log(did, "deploy");
        assert!(log.contains(&format!("{sha}  hello.tar.gz")), "{log}");
        assert!(log.contains("deploy ended at"), "{log}");
        assert!(got
            .iter()
            .all(|g| g.sha256 == sha && g.path == "/upload/hello-1.4.2.tar.gz"));
        assert!(
            s.step_log(did, "fetch").contains(&sha),
            "the download step names the sha256"
        );
    }

    // The lock: the deploys never overlapped, by their own clocks and the
    // host's, though the second was queued before the first ended.
    let mut spans: Vec<(f64, f64)> = deploys
        .iter()
        .map(|(d, _)| stamps(&s.step_log(d["buildid"].as_i64().unwrap(), "deploy")))
        .collect();
    spans.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(spans[0].1 <= spans[1].0, "deploys overlapped: {spans:?}");
    let mut host: Vec<(f64, f64)> = got.iter().map(|g| (g.start, g.end)).collect();
    host.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(host[0].1 <= host[1].0, "uploads overlapped: {host:?}");
    let mut by_start: Vec<&Value> = deploys.iter().map(|(d, _)| d).collect();
    by_start.sort_by_key(|d| d["started_at"].as_i64());
    let second_req = get_json(&s.url(&format!(
        "/api/v2/buildrequests/{}",
        by_start[1]["buildrequestid"]
    )));
    let submitted = second_req["buildrequests"][0]["submitted_at"]
        .as_i64()
        .unwrap();
    assert!(
        submitted < by_start[0]["complete_at"].as_i64().unwrap(),
        "the second deploy was queued before the first ended: {second_req} {}",
        by_start[0]
    );

    // The secret: received by each deploy, found nowhere else.
    assert!(got.iter().all(|g| g.auth == format!("Bearer {TOKEN}")));
    let forms = forms(TOKEN);
    let mut texts: Vec<(String, Vec<u8>)> = vec![];
    let builders = ["release", "test-w1", "test-w2", "deploy"];
    let mut paths = vec![
        "/api/v2/builds?property=*".to_string(),
        "/api/v2/buildrequests?property=*".to_string(),
        "/api/v2/buildsets".to_string(),
    ];
    let mut ids = vec![];
    for name in builders {
        for b in builds_of(&s, name) {
            ids.push(b["buildid"].as_i64().unwrap());
            paths.push(format!("/builders/{name}/builds/{}", b["number"]));
        }
    }
    assert_eq!(ids.len(), 8, "two of each");
    for id in &ids {
        let steps = get_json(&s.url(&format!("/api/v2/builds/{id}/steps")));
        for st in steps["steps"].as_array().unwrap() {
            let name = st["name"].as_str().unwrap();
            let logs = get_json(&s.url(&format!("/api/v2/steps/{}/logs", st["stepid"])));
            for l in logs["logs"].as_array().unwrap() {
                let raw = curl(&[&s.url(&format!("/api/v2/logs/{}/raw", l["logid"]))]).1;
                texts.push((format!("log of build {id} step {name}"), raw.into_bytes()));
            }
        }
        texts.push((format!("steps of {id}"), steps.to_string().into_bytes()));
    }
    for path in paths {
        let (code, body) = curl(&[&s.url(&path)]);
        assert_eq!(code, 200, "{path}");
        texts.push((path, body.into_bytes()));
    }
    let mut files = files_under(&s.master);
    files.retain(|f| !f.starts_with(&secrets));
    assert!(files.iter().any(|f| f.ends_with("state.sqlite-wal")));
    assert!(files.iter().any(|f| f.starts_with(s.master.join("logs"))));
    for w in ["w1", "w2"] {
        files.push(s.tmp.path().join(w).join("worker.log"));
    }
    assert_nothing_leaks(&forms, texts, &files);
}
