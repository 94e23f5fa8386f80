//! Issue 19 point 9: the `gitea_pr_poller` change source, for a Gitea
//! whose webhooks cannot reach the master. Real master and worker, a real
//! git repository whose pull requests live in `refs/pull/<n>/head` (as
//! Gitea keeps them), and the fake Gitea listing them through
//! `GET /api/v1/repos/{owner}/{repo}/pulls` in the shape of Gitea's
//! swagger (`fake_gitea::serve_pulls` checks its query and its answers).
//! A new pull request is the change the `pull_request` webhook brings and
//! builds merged; a moved head is a new change; nothing else is; a restart
//! repeats nothing; a closed pull request is forgotten; a Gitea that is
//! down is logged and asked again; pull requests into another repository
//! or with a head that is no commit id are left out; a refused token, a
//! page over 4 MiB and the cap on pull requests hold.

use crate::common::fake_gitea::pull_request;
use crate::common::*;
use crate::gitea_pr_merge::open_pr;
use serde_json::Value;
use std::time::Duration;

const TOKEN: &str = "gitea-token-pr-poller";
const REPO: &str = "isabell/hello-world";

/// A gitea_status reporter and a gitea_pr_poller polling every second,
/// both on `url` with the token in `gitea-token`.
fn poller_cfg(url: &str, extra: &str) -> String {
    format!(
        r#"
[[reporters]]
type = "gitea_status"
base_url = "{url}"
token_file = "gitea-token"
[[change_source]]
type = "gitea_pr_poller"
base_url = "{url}"
repository = "{REPO}"
token_file = "gitea-token"
poll_interval = 1
poll_at_launch = true
{extra}
"#
    )
}

fn changes(s: &Setup) -> Vec<Value> {
    get_json(&s.url("/api/v2/changes?order=changeid&limit=100"))["changes"]
        .as_array()
        .unwrap()
        .clone()
}

fn polls(gitea: &FakeGitea) -> usize {
    gitea.pulls.lock().unwrap().requests.len()
}

/// Waits until the poller has listed the pull requests `n` more times
/// (each poll is one list request here: one short page).
fn wait_polls(gitea: &FakeGitea, n: usize) {
    let from = polls(gitea);
    wait_for(&format!("{n} more polls"), Duration::from_secs(30), || {
        (polls(gitea) >= from + n).then_some(())
    });
}

fn wait_changes(s: &Setup, n: usize) -> Vec<Value> {
    wait_for(&format!("{n} changes"), Duration::from_secs(30), || {
        let c = changes(s);
        (c.len() >= n).then_some(c)
    })
}

/// The state rows of the poller, as (key, sha).
fn state(s: &Setup) -> Vec<String> {
    db_query(
        &s.master,
        "SELECT branch || '=' || revision FROM poller_state ORDER BY branch",
    )
}

fn prop<'a>(c: &'a Value, name: &str) -> &'a Value {
    &c["properties"][name][0]
}

#[test]
fn polled_pull_requests_build_merged_once_each_head_across_restarts() {
    let gitea = FakeGitea::start(TOKEN);
    let s = Setup::new(PASSING_TEST, &poller_cfg(&gitea.url(), ""));
    write_private(&s.master.join("gitea-token"), &format!("{TOKEN}\n"));
    // Open before the master's first poll: recorded, not built.
    let old_head = open_pr(&s, 1, &s.head, "old.txt", "an old PR\n");
    gitea
        .pulls
        .lock()
        .unwrap()
        .open(REPO, 1, &old_head, &s.head);
    let mut master = s.start_master();
    let recorded = wait_for("the first poll", Duration::from_secs(30), || {
        let st = state(&s);
        (!st.is_empty()).then_some(st)
    });
    assert_eq!(
        recorded,
        ["(listed)=1".to_string(), format!("pull/1={old_head}")]
    );
    let _worker = s.start_worker("example-worker", WORKER_PW);
    s.wait_connected("example-worker");

    // A new pull request: the webhook's change, built merged.
    let head = open_pr(&s, 3, &s.head, "pr.txt", "from the PR\n");
    let base = s.commit("base_later.txt", "master moved on\n", "master moves on");
    gitea.pulls.lock().unwrap().open(REPO, 3, &head, &base);
    let c = wait_changes(&s, 1)[0].clone();
    assert_eq!(c["revision"], base.as_str(), "{c}");
    assert_eq!(c["branch"], "master");
    assert_eq!(c["category"], "pull_request");
    assert_eq!(c["project"], REPO);
    assert_eq!(
        c["repository"],
        "ssh://git@git.example.org:2222/isabell/hello-world.git"
    );
    assert_eq!(prop(&c, "event"), "pull_request");
    assert_eq!(prop(&c, "action"), "opened");
    assert_eq!(prop(&c, "pr_number"), 3);
    assert_eq!(prop(&c, "head_sha"), head.as_str());
    assert_eq!(prop(&c, "base_sha"), base.as_str());
    assert_eq!(prop(&c, "head_branch"), "pr-3");
    let b = s.wait_builds(1, Duration::from_secs(90))[0].clone();
    assert_eq!(b["results"], 0, "{b}");
    let dir = s.tmp.path().join("example-worker/runtests/build");
    assert_eq!(
        git(&dir, &["rev-parse", "HEAD^1", "HEAD^2"]),
        format!("{base}\n{head}"),
        "a merge commit of the base and the PR head"
    );
    // Trusted like a signed hook: the statuses go on the PR head.
    assert_eq!(
        gitea.wait_final(&head, Duration::from_secs(30)),
        ["pending", "success"]
    );

    // The head moves: a new change, `synchronized`.
    git(&s.repo, &["checkout", "-q", &head]);
    let head2 = s.commit("pr.txt", "from the PR, again\n", "PR 3: more");
    git(&s.repo, &["checkout", "-q", "master"]);
    git(&s.repo, &["update-ref", "refs/pull/3/head", &head2]);
    gitea.pulls.lock().unwrap().push_head(REPO, 3, &head2);
    let c2 = wait_changes(&s, 2)[1].clone();
    assert_eq!(prop(&c2, "action"), "synchronized");
    assert_eq!(prop(&c2, "head_sha"), head2.as_str());
    assert_eq!(c2["revision"], base.as_str());

    // Unchanged: nothing, poll after poll.
    wait_polls(&gitea, 3);
    assert_eq!(changes(&s).len(), 2);

    // A restart repeats nothing.
    master.signal(libc::SIGTERM);
    assert_eq!(master.wait_exit(Duration::from_secs(20)), Some(0));
    let _master = s.start_master();
    wait_polls(&gitea, 3);
    assert_eq!(changes(&s).len(), 2);

    // Closed: no change, and forgotten.
    gitea.pulls.lock().unwrap().close(REPO, 3);
    wait_for("PR 3 forgotten", Duration::from_secs(30), || {
        (!state(&s).iter().any(|r| r.starts_with("pull/3="))).then_some(())
    });
    wait_polls(&gitea, 2);
    assert_eq!(changes(&s).len(), 2);
    assert!(
        gitea.problems.lock().unwrap().is_empty(),
        "{:?}",
        gitea.problems.lock().unwrap()
    );

    // The same pull request delivered as a webhook makes the same change.
    let listed = pull_request(REPO, 3, &head2, &base);
    let hooked = s.post_fixture_edited("pull_request_synchronized.json", |v| {
        v["number"] = 3.into();
        v["pull_request"] = listed.clone();
        v["repository"] = listed["base"]["repo"].clone();
    });
    let hooked = get_json(&s.url(&format!("/api/v2/changes/{}", hooked[0])))["changes"][0].clone();
    for k in [
        "author",
        "comments",
        "branch",
        "revision",
        "repository",
        "project",
        "category",
        "codebase",
        "revlink",
        "properties",
    ] {
        assert_eq!(hooked[k], c2[k], "{k}");
    }
}

#[test]
fn a_gitea_that_is_down_is_logged_and_asked_again() {
    // The port of a Gitea that is not there yet.
    let port = FakeGitea::start(TOKEN).port;
    let s = Setup::new(
        PASSING_TEST,
        &poller_cfg(&format!("http://127.0.0.1:{port}"), ""),
    );
    write_private(&s.master.join("gitea-token"), &format!("{TOKEN}\n"));
    let master = s.start_master();
    s.wait_master_log("cannot reach Gitea");
    assert!(state(&s).is_empty());
    // Back: the next poll is the first that counts; then PRs build.
    let gitea = FakeGitea::start_on(port, TOKEN);
    gitea.pulls.lock().unwrap().add_repo(REPO);
    wait_for("the first poll", Duration::from_secs(30), || {
        (state(&s) == ["(listed)=1"]).then_some(())
    });
    let head = open_pr(&s, 2, &s.head, "two.txt", "two\n");
    gitea.pulls.lock().unwrap().open(REPO, 2, &head, &s.head);
    let c = wait_changes(&s, 1);
    assert_eq!(prop(&c[0], "head_sha"), head.as_str());
    assert!(!process_gone(master.pid()));

    // Left out: a pull request into another repository (its changes would
    // be trusted for statuses there) and one whose head is no commit id.
    {
        let mut p = gitea.pulls.lock().unwrap();
        p.open(REPO, 5, &fake_sha(5), &s.head);
        p.edit(REPO, 5)["base"]["repo"]["full_name"] = "mallory/elsewhere".into();
        p.open(REPO, 6, &fake_sha(6), &s.head);
        p.edit(REPO, 6)["head"]["sha"] = "--upload-pack=touch /tmp/x".into();
    }
    s.wait_master_log("pull request #5 left out: its base repository \"mallory/elsewhere\"");
    s.wait_master_log("pull request #6 left out: its head");
    wait_polls(&gitea, 2);
    assert_eq!(changes(&s).len(), 1);

    // What docs/gitea.md says of a proxy of `/change_hook/` only: a path
    // under it with `..` reaches the hook handler, never the API.
    let (code, body) = curl(&[
        "--path-as-is",
        "-X",
        "POST",
        &s.url("/change_hook/../api/v2/changes"),
    ]);
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("is not enabled in master.cfg"), "{body}");
}

#[test]
fn bounds_a_wrong_token_a_huge_answer_and_the_cap() {
    let gitea = FakeGitea::start(TOKEN);
    gitea.pulls.lock().unwrap().add_repo(REPO);
    let s = Setup::new(
        PASSING_TEST,
        &poller_cfg(&gitea.url(), "max_pull_requests = 2\n"),
    );
    // A token Gitea refuses: logged, nothing recorded.
    write_private(&s.master.join("gitea-token"), "not-the-token\n");
    let _master = s.start_master();
    s.wait_master_log("HTTP 401 (the token is wrong or expired)");
    assert!(state(&s).is_empty());
    write_private(&s.master.join("gitea-token"), &format!("{TOKEN}\n"));
    wait_for("the first poll", Duration::from_secs(30), || {
        (state(&s) == ["(listed)=1"]).then_some(())
    });
    // Three open, the cap two: the two updated last, one page asked for.
    let heads: Vec<String> = (1..=3).map(fake_sha).collect();
    {
        let mut p = gitea.pulls.lock().unwrap();
        for (n, h) in (1..=3).zip(&heads) {
            p.open(REPO, n, h, &s.head);
        }
    }
    let c = wait_changes(&s, 2);
    wait_polls(&gitea, 2);
    let numbers: Vec<i64> = changes(&s)
        .iter()
        .map(|c| prop(c, "pr_number").as_i64().unwrap())
        .collect();
    assert_eq!(numbers.len(), 2, "{c:?}");
    assert!(numbers.contains(&3) && numbers.contains(&2), "{numbers:?}");
    let q = gitea
        .pulls
        .lock()
        .unwrap()
        .requests
        .last()
        .cloned()
        .unwrap();
    assert_eq!(q, "state=open&sort=recentupdate&page=1&limit=50");

    // A page bigger than MAX_PAGE_BYTES (4 MiB) is refused, not read.
    {
        let mut p = gitea.pulls.lock().unwrap();
        p.edit(REPO, 1)["body"] = "x".repeat(5 * 1024 * 1024).into();
    }
    s.wait_master_log("reading Gitea's answer (HTTP 200)");
    assert_eq!(changes(&s).len(), 2);
}
