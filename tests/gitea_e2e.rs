//! Gitea end to end, with the real binaries: every fixture posted with the
//! headers and signature Gitea sends; pull requests built from
//! `refs/pull/<n>/head` of a real repository; commit statuses checked by a
//! fake Gitea against `status_api_schema.json` (pending, then the final
//! state), including while Gitea is unreachable; mail through a real SMTP
//! server (aiosmtpd) with STARTTLS and login.

use crate::common::*;
use serde_json::{json, Value};
use std::time::Duration;

const TOKEN: &str = "gitea-token-123";

#[test]
fn every_fixture_stores_its_changes_and_queues_builds() {
    let s = Setup::new(PASSING_TEST, "");
    let _master = s.start_master();
    let hook = s.url("/change_hook/gitea");
    let gitea_cfg = minibot::config::GiteaDialect {
        secret: Some(SECRET.into()),
        ..Default::default()
    };
    let mut all = vec![];
    let mut names: Vec<String> = std::fs::read_dir(fixture("gitea"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json") && n != "headers.json" && n != "status_api_schema.json")
        .collect();
    names.sort();
    assert_eq!(names.len(), 19);
    for name in &names {
        let headers = fixture_headers(name);
        let (code, body) = post_with_headers(&hook, &headers, &fixture(&format!("gitea/{name}")));
        assert_eq!(code, 200, "{name}: {body}");
        let got = change_ids(&body);
        // What was stored is what the dialect (unit-tested against the
        // fixture README) makes of the same request.
        let raw = std::fs::read(fixture(&format!("gitea/{name}"))).unwrap();
        let lower: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_lowercase(), v.clone()))
            .collect();
        let req = minibot::web::dialects::HookRequest {
            headers: lower,
            query: vec![],
            body: &raw,
        };
        let expected = match minibot::web::dialects::gitea::handle(&gitea_cfg, &req) {
            Ok(minibot::web::dialects::HookOutcome::Changes { changes, .. }) => changes,
            _ => vec![],
        };
        assert_eq!(got.len(), expected.len(), "{name}: {body}");
        if expected.is_empty() {
            assert!(body.contains("ignored"), "{name}: {body}");
        }
        for (id, c) in got.iter().zip(&expected) {
            let stored = get_json(&s.url(&format!("/api/v2/changes/{id}")))["changes"][0].clone();
            assert_eq!(stored["revision"], json!(c.revision), "{name}");
            assert_eq!(stored["branch"], json!(c.branch), "{name}");
            assert_eq!(stored["category"], json!(c.category), "{name}");
            assert_eq!(stored["files"], json!(c.files), "{name}");
            assert_eq!(stored["when_timestamp"], json!(c.when_timestamp), "{name}");
            for (k, v) in &c.properties {
                assert_eq!(stored["properties"][k], json!([v, "Change"]), "{name}: {k}");
            }
        }
        all.push((name.clone(), got));
    }
    // A redelivery stores nothing new and answers the same ids.
    let (_, body) = post_with_headers(
        &hook,
        &fixture_headers("push_branch_two_commits.json"),
        &fixture("gitea/push_branch_two_commits.json"),
    );
    let first = &all
        .iter()
        .find(|(n, _)| n == "push_branch_two_commits.json")
        .unwrap()
        .1;
    assert_eq!(&change_ids(&body), first);

    let changes = get_json(&s.url("/api/v2/changes?limit=100"));
    assert_eq!(changes["meta"]["total"], 10, "{changes}");
    let change = |id: i64| get_json(&s.url(&format!("/api/v2/changes/{id}")))["changes"][0].clone();
    let c = change(first[0]);
    assert_eq!(c["revision"], "55002ca63d57bb42b79da6c119a064abae599b5a");
    assert_eq!(c["branch"], "master");
    assert_eq!(c["author"], "Isabell Example <isabell@example.org>");
    assert_eq!(
        c["files"],
        json!(["src/cli.rs", "Cargo.toml", "src/main.rs"])
    );
    assert_eq!(c["category"], "push");
    assert_eq!(c["project"], "isabell/hello-world");
    let pr = &all
        .iter()
        .find(|(n, _)| n == "pull_request_opened_from_fork.json")
        .unwrap()
        .1;
    let c = change(pr[0]);
    assert_eq!(c["category"], "pull_request");
    assert_eq!(c["branch"], "master");
    assert_eq!(c["properties"]["pr_number"][0], 4);
    assert_eq!(
        c["properties"]["head_repository"][0],
        "https://git.example.org/jdoe/hello-world.git"
    );
    let tag = &all.iter().find(|(n, _)| n == "push_tag.json").unwrap().1;
    assert_eq!(change(tag[0])["category"], "tag");

    // single_branch "master": the three pushed commits and the five pull
    // requests into master; not the new branch, not the tag.
    let reqs = wait_for("build requests", Duration::from_secs(20), || {
        let r = get_json(&s.url("/api/v2/buildrequests?limit=100"));
        (r["meta"]["total"] == 8).then_some(r)
    });
    assert!(reqs["buildrequests"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["builderid"] == 1 && r["complete"] == false));
}

fn set_pr(v: &mut Value, number: i64, head: &str, base: &str) {
    v["number"] = number.into();
    v["pull_request"]["number"] = number.into();
    v["pull_request"]["head"]["sha"] = head.into();
    v["pull_request"]["base"]["sha"] = base.into();
}

/// A commit on a throwaway branch, left only as `refs/pull/<n>/head`, as
/// Gitea keeps pull requests.
fn pr_commit(s: &Setup, n: u32, test_body: &str) -> String {
    git(&s.repo, &["checkout", "-q", "-b", "tmp-pr", "master"]);
    let sha = s.commit("test_hello.py", test_body, &format!("PR {n}"));
    git(
        &s.repo,
        &["update-ref", &format!("refs/pull/{n}/head"), &sha],
    );
    git(&s.repo, &["checkout", "-q", "master"]);
    git(&s.repo, &["branch", "-q", "-D", "tmp-pr"]);
    sha
}

#[test]
fn pull_requests_build_their_head_and_report_to_gitea_and_by_mail() {
    let gitea = FakeGitea::start(TOKEN);
    let gitea_port = gitea.port;
    let tmp_certs = tempfile::tempdir().unwrap();
    let cert = self_signed_cert(tmp_certs.path());
    let Some(sink) = SmtpSink::start(cert.as_ref().map(|(c, k)| (c.as_path(), k.as_path()))) else {
        return;
    };
    let tls = cert.is_some();
    if !tls {
        eprintln!("openssl missing: mail tested without STARTTLS");
    }
    let s = Setup::new(
        PASSING_TEST,
        &format!(
            r#"
[[reporters]]
type = "gitea_status"
base_url = "http://127.0.0.1:{gitea_port}"
token_file = "gitea-token"

[[reporters]]
type = "mail"
smtp_host = "127.0.0.1"
smtp_port = {smtp}
starttls = {tls}
verify_tls = false
smtp_user = "ci"
smtp_password = "pw"
from = "minibot <ci@example.org>"
to = ["isabell@example.org", "jdoe@example.org"]
mode = "all"
"#,
            smtp = sink.port
        ),
    );
    write_private(&s.master.join("gitea-token"), &format!("{TOKEN}\n"));
    let _master = s.start_master();
    let _worker = s.start_worker("example-worker", WORKER_PW);
    s.wait_connected("example-worker");

    // PR #3 from the same repository: builds its head, goes green.
    let pr3 = pr_commit(&s, 3, "print('hello from the PR head')\n");
    s.post_fixture_edited("pull_request_opened.json", |v| set_pr(v, 3, &pr3, &s.head));
    let b = &s.wait_builds(1, Duration::from_secs(60))[0];
    assert_eq!(b["results"], 0, "{b}");
    let log = s.step_log(b["buildid"].as_i64().unwrap(), "test");
    assert!(log.contains("hello from the PR head"), "{log}");
    let git_log = s.step_log(b["buildid"].as_i64().unwrap(), "git");
    assert!(git_log.contains("refs/pull/3/head"), "{git_log}");
    assert_eq!(
        gitea.wait_final(&pr3, Duration::from_secs(30)),
        ["pending", "success"]
    );
    {
        let reqs = gitea.requests.lock().unwrap();
        let r = reqs.iter().find(|r| r.sha == pr3).unwrap();
        assert_eq!(
            (r.owner.as_str(), r.repo.as_str()),
            ("isabell", "hello-world")
        );
        assert_eq!(r.auth, format!("token {TOKEN}"));
        assert_eq!(r.body["context"], "minibot/runtests");
        assert_eq!(r.body["target_url"], s.url("/builders/runtests/builds/1"));
        assert_eq!(r.body["description"], "Build #1 started");
    }

    // PR #4 from a fork, failing: the status goes on the base repository.
    let pr4 = pr_commit(&s, 4, "import sys\nsys.exit(1)\n");
    s.post_fixture_edited("pull_request_opened_from_fork.json", |v| {
        set_pr(v, 4, &pr4, &s.head)
    });
    let b = &s.wait_builds(2, Duration::from_secs(60))[1];
    assert_eq!(b["results"], 2, "{b}");
    assert_eq!(
        gitea.wait_final(&pr4, Duration::from_secs(30)),
        ["pending", "failure"]
    );
    let last = gitea.requests.lock().unwrap().last().unwrap().clone();
    assert_eq!(
        (last.owner.as_str(), last.repo.as_str()),
        ("isabell", "hello-world")
    );
    assert_eq!(last.body["description"], "Build #2: failure test");

    // Gitea unreachable: the build is neither blocked nor failed; the
    // statuses follow once Gitea is back, ending in the final state.
    drop(gitea);
    let pr3b = pr_commit(&s, 3, "print('hello again')\n");
    s.post_fixture_edited("pull_request_synchronized.json", |v| {
        set_pr(v, 3, &pr3b, &s.head)
    });
    let b = &s.wait_builds(3, Duration::from_secs(60))[2];
    assert_eq!(b["results"], 0, "{b}");
    // Back on the port master.cfg names (released by the drop above).
    let gitea = FakeGitea::start_on(gitea_port, TOKEN);
    let states = gitea.wait_final(&pr3b, Duration::from_secs(60));
    assert_eq!(
        states.last().map(String::as_str),
        Some("success"),
        "{states:?}"
    );
    assert!(
        gitea.problems.lock().unwrap().is_empty(),
        "{:?}",
        gitea.problems.lock().unwrap()
    );

    // One mail per build (mode "all"), logged in, over STARTTLS when the
    // sink has a certificate.
    let mails = wait_for("3 mails", Duration::from_secs(30), || {
        let m = sink.mails();
        (m.len() >= 3).then_some(m)
    });
    let first = &mails[0];
    assert!(
        first.contains(&"FROM ci@example.org".to_string()),
        "{first:?}"
    );
    assert!(
        first.contains(&"RCPT isabell@example.org,jdoe@example.org".to_string()),
        "{first:?}"
    );
    assert!(
        first.contains(&"AUTHENTICATED True".to_string()),
        "{first:?}"
    );
    assert!(
        first.contains(&format!("TLS {}", if tls { "True" } else { "False" })),
        "{first:?}"
    );
    assert!(
        first
            .iter()
            .any(|l| l == "|Subject: e2e: success in runtests #1"),
        "{first:?}"
    );
    assert!(
        first.iter().any(|l| l.contains("Pull request: #3")),
        "{first:?}"
    );
    assert!(
        mails[1]
            .iter()
            .any(|l| l == "|Subject: e2e: failure in runtests #2"),
        "{:?}",
        mails[1]
    );
}
