//! Every delivery format a forge uses, against a real master over real
//! TCP with curl (issue 19 points 1, 4, 5): bodies and headers built the
//! way Gitea's delivery code builds them (`services/webhook/deliver.go`:
//! JSON, or `payload=<url.Values.Encode()>` for form, both signed over the
//! JSON payload, with `X-Gitea-Signature`, `X-Hub-Signature` (SHA-1) and
//! `X-Hub-Signature-256`), and the way GitHub does (raw body signed). A
//! delivery is accepted exactly when it carries a signature its sender
//! could have made; a refused one stores nothing.

use crate::common::*;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;

const GITHUB_SECRET: &str = "github-dialect-secret-0123";

/// Go's `url.QueryEscape`, as `url.Values.Encode` applies it: unreserved
/// bytes (`A-Z a-z 0-9 - _ . ~`) stay, space becomes `+`, every other byte
/// is `%XX` in upper case. (The WHATWG form encoder of the url crate keeps
/// `*` and escapes `~`, so it would not be byte-exact.)
fn go_query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn sha1_hex(secret: &str, body: &[u8]) -> String {
    let mut m = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    m.update(body);
    hex::encode(m.finalize().into_bytes())
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum ContentType {
    Json,
    Form,
}

/// One delivery as `Deliver` in Gitea's services/webhook/deliver.go makes
/// it: the body per content type, the signatures over the JSON payload
/// (`t.PayloadContent`) whatever the content type, and its headers.
fn gitea_delivery(
    payload: &[u8],
    event: &str,
    ct: ContentType,
    secret: &str,
) -> (Vec<(String, String)>, Vec<u8>) {
    let text = std::str::from_utf8(payload).unwrap();
    let (content_type, body) = match ct {
        ContentType::Json => ("application/json", payload.to_vec()),
        ContentType::Form => (
            "application/x-www-form-urlencoded",
            format!("payload={}", go_query_escape(text)).into_bytes(),
        ),
    };
    let sha256 = sign(secret, payload);
    let sha1 = sha1_hex(secret, payload);
    let uuid = unique_name("delivery");
    let headers = [
        ("Content-Type", content_type.to_string()),
        ("X-Gitea-Delivery", uuid.clone()),
        ("X-Gitea-Event", event.to_string()),
        ("X-Gitea-Event-Type", event.to_string()),
        ("X-Gitea-Signature", sha256.clone()),
        ("X-Gogs-Delivery", uuid.clone()),
        ("X-Gogs-Event", event.to_string()),
        ("X-Gogs-Event-Type", event.to_string()),
        ("X-Gogs-Signature", sha256.clone()),
        ("X-Hub-Signature", format!("sha1={sha1}")),
        ("X-Hub-Signature-256", format!("sha256={sha256}")),
        ("X-GitHub-Delivery", uuid),
        ("X-GitHub-Event", event.to_string()),
        ("X-GitHub-Event-Type", event.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    (headers, body)
}

fn post(url: &str, headers: &[(String, String)], body: &[u8]) -> (u16, String) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("body");
    std::fs::write(&f, body).unwrap();
    post_with_headers(url, headers, &f)
}

fn change_total(s: &Setup) -> u64 {
    get_json(&s.url("/api/v2/changes"))["meta"]["total"]
        .as_u64()
        .expect("meta.total")
}

fn stored(s: &Setup, id: i64) -> Value {
    get_json(&s.url(&format!("/api/v2/changes/{id}")))["changes"][0].clone()
}

fn set_header(headers: &mut [(String, String)], name: &str, value: &str) {
    for (k, v) in headers.iter_mut() {
        if k.eq_ignore_ascii_case(name) {
            *v = value.to_string();
        }
    }
}

/// A fixture payload with a fresh head sha per use, so a redelivery of an
/// earlier case is never mistaken for this one.
fn fresh_push(n: u32, message: &str) -> Vec<u8> {
    let mut v: Value =
        serde_json::from_slice(&push_payload(&format!("{n:040x}"), "master", message)).unwrap();
    // The pushed head is one commit: the same message in both places.
    v["head_commit"]["message"] = message.into();
    serde_json::to_vec_pretty(&v).unwrap()
}

#[test]
fn gitea_json_and_form_deliveries_are_verified_as_gitea_signs_them() {
    let s = Setup::new(
        PASSING_TEST,
        &format!("[www.change_hook_dialects.github]\nsecret = \"{GITHUB_SECRET}\"\n"),
    );
    let _master = s.start_master();
    let gitea = s.url("/change_hook/gitea");
    let github = s.url("/change_hook/github");
    let mut n = 1;

    // Both content types, to both dialects (Gitea's headers carry both
    // families of signature), are stored, with the pushed revision.
    for (url, secret) in [(&gitea, SECRET), (&github, GITHUB_SECRET)] {
        for ct in [ContentType::Json, ContentType::Form] {
            n += 1;
            let payload = fresh_push(n, "Add a file\n\nwith * and ~ and spaces");
            let (headers, body) = gitea_delivery(&payload, "push", ct, secret);
            let (code, answer) = post(url, &headers, &body);
            assert_eq!(code, 200, "{url} {ct:?}: {answer}");
            let ids = change_ids(&answer);
            assert_eq!(ids.len(), 1, "{url} {ct:?}: {answer}");
            let c = stored(&s, ids[0]);
            assert_eq!(c["revision"], format!("{n:040x}"), "{url} {ct:?}");
            assert_eq!(c["comments"], "Add a file\n\nwith * and ~ and spaces");
        }
    }

    // Wrong signatures: 403, nothing stored.
    let before = change_total(&s);
    n += 1;
    let payload = fresh_push(n, "never stored");
    for ct in [ContentType::Json, ContentType::Form] {
        let (mut headers, body) = gitea_delivery(&payload, "push", ct, "not-the-secret");
        let (code, answer) = post(&gitea, &headers, &body);
        assert_eq!(code, 403, "{ct:?}: {answer}");
        // What minibot used to expect for a form: the form bytes signed.
        let (good, _) = gitea_delivery(&payload, "push", ct, SECRET);
        headers = good;
        set_header(&mut headers, "X-Gitea-Signature", &sign(SECRET, &body));
        if ct == ContentType::Form {
            let (code, answer) = post(&gitea, &headers, &body);
            assert_eq!(code, 403, "form bytes signed: {answer}");
        }
        // The github dialect with another secret's signatures.
        let (headers, body) = gitea_delivery(&payload, "push", ct, SECRET);
        let (code, answer) = post(&github, &headers, &body);
        assert_eq!(code, 403, "github {ct:?}: {answer}");
    }
    assert_eq!(
        change_total(&s),
        before,
        "a refused delivery stored something"
    );
}

#[test]
fn github_deliveries_signed_over_the_raw_body_with_either_header() {
    let s = Setup::new(
        PASSING_TEST,
        &format!("[www.change_hook_dialects.github]\nsecret = \"{GITHUB_SECRET}\"\n"),
    );
    let _master = s.start_master();
    let github = s.url("/change_hook/github");
    let mut n = 100;
    for ct in [ContentType::Json, ContentType::Form] {
        for header in ["X-Hub-Signature-256", "X-Hub-Signature"] {
            n += 1;
            let payload = fresh_push(n, "from GitHub");
            // GitHub signs the bytes it sends.
            let (content_type, body) = match ct {
                ContentType::Json => ("application/json", payload.clone()),
                ContentType::Form => (
                    "application/x-www-form-urlencoded",
                    form_body(&[("payload", std::str::from_utf8(&payload).unwrap())]),
                ),
            };
            let sig = match header {
                "X-Hub-Signature" => format!("sha1={}", sha1_hex(GITHUB_SECRET, &body)),
                _ => format!("sha256={}", sign(GITHUB_SECRET, &body)),
            };
            let headers: Vec<(String, String)> = [
                ("Content-Type", content_type.to_string()),
                ("X-GitHub-Event", "push".to_string()),
                ("X-GitHub-Delivery", unique_name("gh")),
                (header, sig),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            let (code, answer) = post(&github, &headers, &body);
            assert_eq!(code, 200, "{ct:?} {header}: {answer}");
            let ids = change_ids(&answer);
            let c = stored(&s, ids[0]);
            assert_eq!(c["revision"], format!("{n:040x}"));
            // Buildbot's GitHub hook: html_url, no category for a branch push,
            // github_distinct.
            assert_eq!(
                c["repository"],
                "https://git.example.org/isabell/hello-world"
            );
            assert_eq!(c["category"], Value::Null);
            assert_eq!(c["properties"]["github_distinct"][0], true);
        }
    }
}

#[test]
fn skip_markers_are_answered_and_store_nothing() {
    let s = Setup::new(PASSING_TEST, "");
    let _master = s.start_master();
    let gitea = s.url("/change_hook/gitea");
    let before = change_total(&s);
    for (n, msg) in [(201, "Fix typo [skip ci]"), (202, "[ci skip] docs only")] {
        for ct in [ContentType::Json, ContentType::Form] {
            let (headers, body) = gitea_delivery(&fresh_push(n, msg), "push", ct, SECRET);
            let (code, answer) = post(&gitea, &headers, &body);
            assert_eq!(code, 200, "{answer}");
            let v: Value = serde_json::from_str(&answer).unwrap();
            assert_eq!(v["changes"], serde_json::json!([]), "{answer}");
            let why = v["ignored"].as_str().unwrap_or_default();
            assert!(
                why.contains("skipped") && why.contains("skip pattern"),
                "{answer}"
            );
        }
    }
    assert_eq!(change_total(&s), before);
    // Without a marker the same push is stored.
    let (headers, body) = gitea_delivery(
        &fresh_push(203, "Fix typo"),
        "push",
        ContentType::Json,
        SECRET,
    );
    let (code, answer) = post(&gitea, &headers, &body);
    assert_eq!(code, 200, "{answer}");
    assert_eq!(change_ids(&answer).len(), 1);
}
