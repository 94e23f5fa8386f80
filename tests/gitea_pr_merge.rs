//! Issue 19 point 2: pull requests are tested as merged, as buildbot_gitea
//! does. Real master, real worker, a real git repository whose pull
//! requests live in `refs/pull/<n>/head` (as Gitea keeps them), and Gitea's
//! `pull_request` payload from `../shared/fixtures/gitea/` pointed at its
//! commits. The worker has no git identity (an empty HOME, no system
//! config, `user.useConfigOnly`), so the merge commit must bring its own.
//! Commit statuses go to the fake Gitea, which checks them against Gitea's
//! schema.

use crate::common::*;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

const TOKEN: &str = "gitea-token-pr-merge";

/// A gitea_status reporter posting to `gitea`.
fn with_gitea(gitea: &FakeGitea) -> String {
    format!(
        "[[reporters]]\ntype = \"gitea_status\"\nbase_url = \"{}\"\ntoken_file = \"gitea-token\"\n",
        gitea.url()
    )
}

/// Master and worker of `s`, the worker without any git identity.
fn start(s: &Setup) -> (Proc, Proc) {
    write_private(&s.master.join("gitea-token"), &format!("{TOKEN}\n"));
    let master = s.start_master();
    let home = s.tmp.path().join("worker-home");
    std::fs::create_dir_all(&home).unwrap();
    let home = home.to_str().unwrap();
    let worker = s.start_worker_env(
        "example-worker",
        WORKER_PW,
        &[
            ("HOME", home),
            ("XDG_CONFIG_HOME", home),
            ("GIT_CONFIG_NOSYSTEM", "1"),
            // Never guess user@host: without an identity of its own, a
            // merge commit fails.
            ("GIT_CONFIG_COUNT", "1"),
            ("GIT_CONFIG_KEY_0", "user.useConfigOnly"),
            ("GIT_CONFIG_VALUE_0", "true"),
        ],
    );
    s.wait_connected("example-worker");
    (master, worker)
}

/// Pull request `n`: `file` committed on a branch from `from`, kept only
/// as `refs/pull/<n>/head`; returns the head sha.
pub(crate) fn open_pr(s: &Setup, n: u32, from: &str, file: &str, content: &str) -> String {
    let branch = format!("pr-{n}");
    git(&s.repo, &["checkout", "-q", "-b", &branch, from]);
    let head = s.commit(file, content, &format!("PR {n}: {file}"));
    git(
        &s.repo,
        &["update-ref", &format!("refs/pull/{n}/head"), &head],
    );
    git(&s.repo, &["checkout", "-q", "master"]);
    git(&s.repo, &["branch", "-q", "-D", &branch]);
    head
}

/// Posts Gitea's `pull_request_opened` delivery for PR `n` (head `head`
/// from branch `pr-<n>`, base `master` at `base`); returns its change.
fn post_pr(s: &Setup, n: u32, head: &str, base: &str) -> Value {
    let ids = s.post_fixture_edited("pull_request_opened.json", |v| {
        v["number"] = n.into();
        let pr = &mut v["pull_request"];
        pr["number"] = n.into();
        pr["head"]["sha"] = head.into();
        pr["head"]["ref"] = format!("pr-{n}").into();
        pr["base"]["sha"] = base.into();
        pr["base"]["ref"] = "master".into();
    });
    assert_eq!(ids.len(), 1, "{ids:?}");
    get_json(&s.url(&format!("/api/v2/changes/{}", ids[0])))["changes"][0].clone()
}

/// PR #3 adds `pr.txt` to master's first commit; master then moves on
/// with `base_later.txt`. Returns (head, base).
fn clean_pr(s: &Setup) -> (String, String) {
    let head = open_pr(s, 3, &s.head, "pr.txt", "from the PR\n");
    let base = s.commit("base_later.txt", "master moved on\n", "master moves on");
    (head, base)
}

/// The worker's checkout of `runtests`.
fn checkout(s: &Setup) -> PathBuf {
    s.tmp.path().join("example-worker/runtests/build")
}

fn build_steps(s: &Setup, b: &Value) -> Value {
    get_json(&s.url(&format!("/api/v2/builds/{}/steps", b["buildid"])))
}

#[test]
fn a_clean_pull_request_builds_its_head_merged_into_the_base() {
    let gitea = FakeGitea::start(TOKEN);
    let s = Setup::new(PASSING_TEST, &with_gitea(&gitea));
    let (head, base) = clean_pr(&s);
    let _procs = start(&s);

    let change = post_pr(&s, 3, &head, &base);
    // buildbot_gitea's change: at the base, the head in `head_sha`.
    assert_eq!(change["revision"], base.as_str(), "{change}");
    assert_eq!(change["branch"], "master");
    assert_eq!(change["properties"]["head_sha"][0], head.as_str());
    assert_eq!(change["properties"]["base_sha"][0], base.as_str());

    let b = s.wait_builds(1, Duration::from_secs(90))[0].clone();
    assert_eq!(b["results"], 0, "{b}");
    let dir = checkout(&s);
    for (file, text) in [
        ("pr.txt", "from the PR\n"),
        ("base_later.txt", "master moved on\n"),
        ("test_hello.py", PASSING_TEST),
    ] {
        assert_eq!(
            std::fs::read_to_string(dir.join(file)).ok().as_deref(),
            Some(text),
            "{file} in the checkout"
        );
    }
    assert_eq!(
        git(&dir, &["rev-parse", "HEAD^1", "HEAD^2"]),
        format!("{base}\n{head}"),
        "a merge commit of the base and the PR head"
    );
    let merged = git(&dir, &["rev-parse", "HEAD"]);
    let props = get_json(&s.url(&format!(
        "/api/v2/builds/{}?property=got_revision",
        b["buildid"]
    )));
    assert_eq!(
        props["builds"][0]["properties"]["got_revision"][0],
        merged.as_str()
    );
    let log = s.step_log(b["buildid"].as_i64().unwrap(), "git");
    assert!(log.contains("refs/pull/3/head"), "{log}");
    assert!(
        log.contains(&format!("merged PR #3 head {head} into {base}")),
        "{log}"
    );

    // Statuses on the PR head, never on the base or the merge commit.
    assert_eq!(
        gitea.wait_final(&head, Duration::from_secs(30)),
        ["pending", "success"]
    );
    let shas: Vec<String> = gitea
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.sha.clone())
        .collect();
    assert!(shas.iter().all(|sha| *sha == head), "{shas:?}");
    assert!(
        gitea.problems.lock().unwrap().is_empty(),
        "{:?}",
        gitea.problems.lock().unwrap()
    );
}

#[test]
fn a_conflicting_pull_request_fails_with_a_merge_conflict_step() {
    let gitea = FakeGitea::start(TOKEN);
    let s = Setup::new(PASSING_TEST, &with_gitea(&gitea));
    // Both change the same line of test_hello.py.
    let head = open_pr(&s, 5, &s.head, "test_hello.py", "print('the PR')\n");
    let base = s.commit("test_hello.py", "print('master')\n", "master edits");
    let _procs = start(&s);

    post_pr(&s, 5, &head, &base);
    let b = s.wait_builds(1, Duration::from_secs(90))[0].clone();
    assert_eq!(b["results"], 2, "{b}");
    let steps = build_steps(&s, &b);
    assert_eq!(
        find_step(&steps, "git")["state_string"],
        format!(
            "git (merge conflict: PR #5 does not merge into master ({}))",
            &base[..10]
        ),
        "{steps}"
    );
    assert_eq!(
        steps["meta"]["total"], 1,
        "the test step never ran: {steps}"
    );
    let log = s.step_log(b["buildid"].as_i64().unwrap(), "git");
    assert!(log.contains("conflicting files: test_hello.py"), "{log}");
    assert_eq!(
        gitea.wait_final(&head, Duration::from_secs(30)),
        ["pending", "failure"]
    );

    // No merge is left in progress: the next PR builds in the same
    // directory.
    let dir = checkout(&s);
    assert!(!dir.join(".git/MERGE_HEAD").exists());
    let head6 = open_pr(&s, 6, &base, "pr6.txt", "six\n");
    post_pr(&s, 6, &head6, &base);
    let b = s.wait_builds(2, Duration::from_secs(90))[1].clone();
    assert_eq!(b["results"], 0, "{b}");
    assert_eq!(
        git(&dir, &["rev-parse", "HEAD^1", "HEAD^2"]),
        format!("{base}\n{head6}")
    );
}

#[test]
fn pull_request_checkout_head_builds_the_head_alone() {
    let s = Setup::new(PASSING_TEST, "");
    s.edit_cfg(|c| {
        c.replace(
            "[www.change_hook_dialects.gitea]\n",
            "[www.change_hook_dialects.gitea]\npull_request_checkout = \"head\"\n",
        )
    });
    let (head, base) = clean_pr(&s);
    let _procs = start(&s);

    let change = post_pr(&s, 3, &head, &base);
    assert_eq!(change["revision"], head.as_str(), "{change}");
    let b = s.wait_builds(1, Duration::from_secs(90))[0].clone();
    assert_eq!(b["results"], 0, "{b}");
    let dir = checkout(&s);
    assert_eq!(git(&dir, &["rev-parse", "HEAD"]), head);
    assert!(dir.join("pr.txt").exists());
    assert!(!dir.join("base_later.txt").exists());
}
