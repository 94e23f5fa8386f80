//! The git_poller change source with the real binaries: a Gitea the master
//! cannot reach is stood in for by a bare repository; commits pushed to it
//! become changes (oldest first, with author, files and comments) and
//! builds; a branch outside `branches` is ignored; and across a restart
//! no change is missed or repeated, since the last seen revision per
//! branch is kept in the database.

use crate::common::*;
use std::time::Duration;

fn revisions(s: &Setup) -> Vec<String> {
    let v = get_json(&s.url("/api/v2/changes?order=changeid&limit=100"));
    v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["revision"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn poller_finds_each_commit_once_across_restarts() {
    // Setup's repo is the work clone; the "Gitea" is a bare copy of it.
    let tmp = tempfile::tempdir().unwrap();
    let upstream = tmp.path().join("gitea.git");
    let s = Setup::new(
        PASSING_TEST,
        &format!(
            "{}project = \"isabell/hello-world\"\n",
            git_poller_cfg(&upstream)
        ),
    );
    s.bare_clone(&upstream);
    git(
        &s.repo,
        &["remote", "add", "gitea", upstream.to_str().unwrap()],
    );
    let mut master = s.start_master();
    // The first poll only records where master is.
    let state = wait_for("the first poll", Duration::from_secs(20), || {
        let v: Vec<String> = db_query(&s.master, "SELECT revision FROM poller_state");
        (!v.is_empty()).then_some(v)
    });
    assert_eq!(state, std::slice::from_ref(&s.head));
    assert!(revisions(&s).is_empty());

    let a = s.commit("a.txt", "first new commit", "first new commit");
    let b = s.commit(
        "docs.md",
        "second new commit\n\nwith a body",
        "second new commit\n\nwith a body",
    );
    git(&s.repo, &["push", "-q", "gitea", "master"]);
    git(&s.repo, &["push", "-q", "gitea", "master:feature"]);
    let revs = wait_for("two changes", Duration::from_secs(30), || {
        let r = revisions(&s);
        (r.len() >= 2).then_some(r)
    });
    assert_eq!(revs, [a.clone(), b.clone()]);
    let c = &get_json(&s.url("/api/v2/changes?order=changeid"))["changes"][1];
    assert_eq!(c["author"], "Test <test@example.org>");
    assert_eq!(c["comments"], "second new commit\n\nwith a body");
    assert_eq!(c["files"], serde_json::json!(["docs.md"]));
    assert_eq!(c["branch"], "master");
    assert_eq!(c["project"], "isabell/hello-world");
    assert_eq!(c["repository"], format!("file://{}", upstream.display()));
    // The single_branch scheduler queued them like hooked changes.
    wait_for("build requests", Duration::from_secs(20), || {
        let r = get_json(&s.url("/api/v2/buildrequests"));
        (r["meta"]["total"] == 2).then_some(())
    });

    // Stopped while a commit lands: found once after the restart.
    master.signal(libc::SIGTERM);
    assert_eq!(master.wait_exit(Duration::from_secs(20)), Some(0));
    let c3 = s.commit(
        "c.txt",
        "landed while the master was down",
        "landed while the master was down",
    );
    git(&s.repo, &["push", "-q", "gitea", "master"]);
    let _master = s.start_master();
    let revs = wait_for("the third change", Duration::from_secs(30), || {
        let r = revisions(&s);
        (r.len() >= 3).then_some(r)
    });
    assert_eq!(revs, [a, b, c3.clone()]);
    // A later commit comes once as well: nothing before it is repeated.
    let c4 = s.commit("d.txt", "one more", "one more");
    git(&s.repo, &["push", "-q", "gitea", "master"]);
    let revs = wait_for("the fourth change", Duration::from_secs(30), || {
        let r = revisions(&s);
        (r.len() >= 4).then_some(r)
    });
    assert_eq!(revs.len(), 4, "{revs:?}");
    assert_eq!(revs[3], c4);
    let state: Vec<String> = db_query(&s.master, "SELECT revision FROM poller_state");
    assert_eq!(state, [c4]);
}
