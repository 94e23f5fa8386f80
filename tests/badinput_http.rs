//! Hostile input on the web port, against a real master: broken, oversized,
//! unsigned and mis-signed hooks, `../` in every path parameter, absurd
//! paging values. Each must get a clear 4xx (JSON `error` for the API and
//! hooks) and store nothing; shell syntax in a branch name must reach a
//! build step only as data.
//! (`tests/guide.rs` already covers the basic 403/400/404/405/413 cases.)

use crate::common::*;
use std::time::Duration;

/// Posts `body` to `path` with `headers` (a signature is added when given)
/// and returns (status, body).
fn post(s: &Setup, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let n = std::fs::read_dir(s.tmp.path())
        .map(|d| d.count())
        .unwrap_or(0);
    let f = s.tmp.path().join(format!("body-{n}"));
    std::fs::write(&f, body).unwrap();
    let hs: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    post_with_headers(&s.url(path), &hs, &f)
}

fn total(s: &Setup, what: &str) -> i64 {
    get_json(&s.url(&format!("/api/v2/{what}")))["meta"]["total"]
        .as_i64()
        .unwrap()
}

#[test]
fn bad_hooks_get_a_clear_4xx_and_store_nothing() {
    let s = Setup::new(PASSING_TEST, "");
    let _master = s.start_master();
    let good = push_payload(&s.head, "master", "hello");
    let other = push_payload(&s.head, "master", "another body");
    let deep = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000)).into_bytes();
    let mut invalid_utf8 = good.clone();
    let at = invalid_utf8.windows(5).position(|w| w == b"hello").unwrap();
    invalid_utf8[at] = 0xff;
    let json = "application/json";
    // (what, content type, event, body, signature over, expected status)
    type Case<'a> = (&'a str, &'a str, &'a str, Vec<u8>, Option<Vec<u8>>, u16);
    let signed = |b: &[u8]| Some(b.to_vec());
    let cases: Vec<Case> = vec![
        (
            "truncated JSON",
            json,
            "push",
            good[..good.len() / 2].to_vec(),
            signed(&good[..good.len() / 2]),
            400,
        ),
        (
            "malformed JSON",
            json,
            "push",
            b"{\"ref\": refs/heads/master}".to_vec(),
            signed(b"{\"ref\": refs/heads/master}"),
            400,
        ),
        (
            "JSON of the wrong shape",
            json,
            "push",
            b"{\"ref\": 5, \"commits\": \"x\"}".to_vec(),
            signed(b"{\"ref\": 5, \"commits\": \"x\"}"),
            400,
        ),
        (
            "50000-deep nesting",
            json,
            "push",
            deep.clone(),
            signed(&deep),
            400,
        ),
        (
            "invalid UTF-8",
            json,
            "push",
            invalid_utf8.clone(),
            signed(&invalid_utf8),
            400,
        ),
        (
            "text/plain",
            "text/plain",
            "push",
            good.clone(),
            signed(&good),
            400,
        ),
        (
            "multipart/form-data",
            "multipart/form-data; boundary=x",
            "push",
            good.clone(),
            signed(&good),
            400,
        ),
        ("no signature", json, "push", good.clone(), None, 403),
        (
            "signature for another body",
            json,
            "push",
            good.clone(),
            signed(&other),
            403,
        ),
        (
            "missing event header",
            json,
            "",
            good.clone(),
            signed(&good),
            400,
        ),
    ];
    let mut sent = 0;
    for (what, ct, event, body, sig_over, want) in &cases {
        let sig = sig_over.as_ref().map(|b| sign(SECRET, b));
        let mut h = vec![("Content-Type", *ct)];
        if !event.is_empty() {
            h.push(("X-Gitea-Event", *event));
        }
        if let Some(sig) = &sig {
            h.push(("X-Gitea-Signature", sig));
        }
        let (code, resp) = post(&s, "/change_hook/gitea", &h, body);
        sent += 1;
        assert_eq!(code, *want, "{what}: {resp}");
        let v: serde_json::Value =
            serde_json::from_str(&resp).unwrap_or_else(|e| panic!("{what}: {e}: {resp}"));
        assert!(
            v["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: no error message: {resp}"
        );
        eprintln!("{what}: {code} {}", v["error"]);
    }
    // Signatures that are not even hex, or of the wrong length or secret.
    for bad_sig in [
        "",
        "zz",
        "sha256=",
        &sign("wrong-secret", &good),
        &sign(SECRET, &good)[..62],
        &"0".repeat(5_000),
        &"0".repeat(10_000),
    ] {
        let (code, resp) = post(
            &s,
            "/change_hook/gitea",
            &[
                ("Content-Type", json),
                ("X-Gitea-Event", "push"),
                ("X-Gitea-Signature", bad_sig),
            ],
            &good,
        );
        sent += 1;
        // A header line over 8 KiB is refused before it is read whole.
        let want = if bad_sig.len() > 8 * 1024 { 431 } else { 403 };
        assert_eq!(code, want, "signature {bad_sig:.20}: {resp}");
    }
    // An event minibot does not build is acknowledged as ignored (SPEC §3),
    // and stores nothing either.
    let sig = sign(SECRET, &good);
    let (code, resp) = post(
        &s,
        "/change_hook/gitea",
        &[
            ("Content-Type", json),
            ("X-Gitea-Event", "wiki"),
            ("X-Gitea-Signature", &sig),
        ],
        &good,
    );
    sent += 1;
    assert_eq!(code, 200, "{resp}");
    assert!(resp.contains("ignored"), "{resp}");
    // Unknown dialects, also through `../`, are 404.
    for path in [
        "/change_hook/nope",
        "/change_hook/../change_hook/nope",
        "/change_hook/..%2Fgitea",
        "/change_hook/gitea/../../api/v2/builders",
    ] {
        let data = format!("@{}", s.tmp.path().join("body-0").display());
        let (code, resp) = curl(&[
            "--path-as-is",
            "-X",
            "POST",
            "-H",
            "X-Gitea-Event: push",
            "-H",
            &format!("X-Gitea-Signature: {sig}"),
            "--data-binary",
            &data,
            &s.url(path),
        ]);
        sent += 1;
        assert_eq!(code, 404, "{path}: {resp}");
    }
    // The base dialect: fields of the wrong type, a broken form.
    for (ct, body) in [
        (json, &b"{\"branch\": [1,2], \"revision\": {}}"[..]),
        (json, b"[1,2,3]"),
        (json, b"\"just a string\""),
        (json, b"{\"when_timestamp\": \"yesterday\"}"),
    ] {
        // Signed: the fields, not the signature, are what is wrong.
        let (code, resp) = post_base(&s.url("/change_hook/base"), &[("Content-Type", ct)], body);
        sent += 1;
        assert_eq!(code, 400, "base {body:?}: {resp}");
    }
    // A 30 MB body: refused before it is read into memory.
    let big = vec![b'{'; 30 * 1024 * 1024];
    let big_sig = sign(SECRET, &big);
    let (code, _) = post(
        &s,
        "/change_hook/gitea",
        &[
            ("Content-Type", json),
            ("X-Gitea-Event", "push"),
            ("X-Gitea-Signature", &big_sig),
        ],
        &big,
    );
    sent += 1;
    assert_eq!(code, 413);
    let (changes, requests) = (total(&s, "changes"), total(&s, "buildrequests"));
    eprintln!("{sent} bad hooks sent, {changes} changes and {requests} build requests stored");
    assert_eq!((changes, requests), (0, 0));
    // The master still takes a good hook afterwards.
    assert_eq!(s.push(&s.head, "master", "good").len(), 1);
}

#[test]
fn path_parameters_and_paging_values_are_checked() {
    let s = Setup::new(PASSING_TEST, "");
    let _master = s.start_master();
    s.push(&s.head, "master", "one change");
    let secret_file = std::fs::read(s.master.join("master.cfg")).unwrap();
    let db_magic = "SQLite format 3";
    let mut n = 0;
    // `../` (plain, encoded, doubled) in every place a name or id goes.
    for dots in [
        "..",
        "..%2F..",
        "..%2f..%2fmaster.cfg",
        "%2e%2e",
        "../../state.sqlite",
    ] {
        for path in [
            format!("/api/v2/builders/{dots}"),
            format!("/api/v2/builders/{dots}/builds"),
            format!("/api/v2/builders/1/builds/{dots}"),
            format!("/api/v2/builds/{dots}"),
            format!("/api/v2/builds/{dots}/steps"),
            format!("/api/v2/steps/{dots}/logs"),
            format!("/api/v2/logs/{dots}"),
            format!("/api/v2/logs/{dots}/raw"),
            format!("/api/v2/workers/{dots}"),
            format!("/api/v2/changes/{dots}"),
            format!("/api/v2/buildrequests/{dots}"),
            format!("/builders/{dots}"),
            format!("/builders/runtests/builds/{dots}"),
            format!("/builds/{dots}"),
            format!("/builds/{dots}/live"),
            format!("/badges/{dots}.svg"),
            format!("/assets/{dots}"),
            format!("/assets/{dots}/master.cfg"),
        ] {
            let (code, body) = curl(&["--path-as-is", &s.url(&path)]);
            n += 1;
            // A collection under a parent that does not exist is empty, as
            // in Buildbot; anything else that is not found is a 4xx.
            let empty = code == 200
                && serde_json::from_str::<serde_json::Value>(&body)
                    .is_ok_and(|v| v["meta"]["total"] == 0);
            assert!(
                (400..500).contains(&code) || empty,
                "{path}: {code} {body:.200}"
            );
            assert!(!body.contains(db_magic), "{path} served the database");
            assert!(
                !body.contains(String::from_utf8_lossy(&secret_file).as_ref())
                    && !body.contains(SECRET),
                "{path} served master.cfg"
            );
        }
    }
    // Unknown builders, by name and id.
    for path in [
        "/api/v2/builders/nosuch",
        "/api/v2/builders/999999",
        "/builders/nosuch",
        "/badges/nosuch.svg",
    ] {
        let (code, body) = curl(&[&s.url(path)]);
        n += 1;
        assert_eq!(code, 404, "{path}: {body:.200}");
    }
    // Negative, huge, non-numeric paging: 400 with a message, or (huge but
    // a valid number) 200; never a 5xx.
    for (q, want) in [
        ("limit=-1", 400),
        ("offset=-5", 400),
        ("limit=99999999999999999999999", 400),
        ("offset=99999999999999999999999", 400),
        ("limit=abc", 400),
        ("limit=", 400),
        ("limit=9223372036854775807", 200),
        ("offset=9223372036854775807", 200),
        ("limit=1&offset=1000000000", 200),
        ("order=-nosuchfield", 400),
        ("nosuchfield=1", 400),
    ] {
        for coll in ["builds", "changes", "builders", "buildrequests", "workers"] {
            let url = s.url(&format!("/api/v2/{coll}?{q}"));
            let (code, body) = curl(&[&url]);
            n += 1;
            assert_eq!(code, want, "{coll}?{q}: {body:.300}");
            let v: serde_json::Value =
                serde_json::from_str(&body).unwrap_or_else(|e| panic!("{coll}?{q}: {e}"));
            if want == 400 {
                assert!(v["error"].is_string(), "{coll}?{q}: {body}");
            }
        }
    }
    eprintln!("{n} hostile paths and paging values sent, no 5xx, nothing leaked");
    assert_eq!(total(&s, "changes"), 1);
}

#[test]
fn shell_syntax_in_branch_and_message_reaches_steps_only_as_data() {
    let marker_dir = tempfile::tempdir().unwrap();
    let m = marker_dir.path().display().to_string();
    // Every shell construct there is, each trying to create a file.
    let branch = format!("x$(touch {m}/a);touch {m}/b;`touch {m}/c`|touch {m}/d&&touch {m}/e'\"");
    let extra = r#"
[[schedulers]]
name = "every-branch"
type = "any_branch"
builders = ["echo"]
[[builders]]
name = "echo"
workers = ["example-worker"]
[[builders.steps]]
type = "shell"
name = "string"
command = "echo branch=%(prop:branch)s"
[[builders.steps]]
type = "shell"
name = "argv"
command = ["/bin/echo", "argv=%(prop:branch)s"]
"#;
    let s = Setup::new(PASSING_TEST, extra);
    let _master = s.start_master();
    let _worker = s.start_worker("example-worker", WORKER_PW);
    s.wait_connected("example-worker");
    let msg = format!("$(touch {m}/f) `touch {m}/g`; touch {m}/h");
    s.push(&s.head, &branch, &msg);
    let b = &s.wait_builds(1, Duration::from_secs(60))[0];
    assert_eq!(b["results"], 0, "{b}");
    let id = b["buildid"].as_i64().unwrap();
    let string_log = s.step_log(id, "string");
    let argv_log = s.step_log(id, "argv");
    assert!(
        string_log.contains(&format!("branch={branch}")),
        "{string_log}"
    );
    assert!(argv_log.contains(&format!("argv={branch}")), "{argv_log}");
    let made: Vec<_> = std::fs::read_dir(marker_dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    eprintln!(
        "branch {branch:?} and message {msg:?} built; files the shell syntax created: {made:?}"
    );
    assert!(made.is_empty(), "shell syntax was executed: {made:?}");
    let c = get_json(&s.url("/api/v2/changes"));
    assert_eq!(c["changes"][0]["comments"], msg.as_str());
    assert_eq!(c["changes"][0]["branch"], branch.as_str());
}
