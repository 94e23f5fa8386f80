//! Build-request collapsing with the real binaries: pushes queued while no
//! worker is free are built once, at the newest revision; the older
//! requests end SKIPPED (never SUCCESS), each naming the build that covered
//! it, in the API and on its page; a pull request into the same branch is
//! not folded into the pushes; forced requests with different parameters
//! are never folded together (issue 16, point 7).

use crate::common::*;
use std::time::Duration;

fn commit(s: &Setup, n: u32) -> String {
    s.commit(
        &format!("f{n}.txt"),
        &format!("{n}\n"),
        &format!("commit {n}"),
    )
}

#[test]
fn queued_pushes_collapse_into_the_newest() {
    let s = Setup::new(PASSING_TEST, "");
    let _master = s.start_master();
    let c1 = commit(&s, 1);
    let c2 = commit(&s, 2);
    let c3 = commit(&s, 3);
    for (sha, msg) in [(&c1, "one"), (&c2, "two"), (&c3, "three")] {
        s.push(sha, "master", msg);
    }
    // A pull request into master (head = c2) while the pushes wait.
    git(&s.repo, &["update-ref", "refs/pull/3/head", &c2]);
    s.post_fixture_edited("pull_request_opened.json", |v| {
        v["pull_request"]["head"]["sha"] = c2.clone().into();
        v["pull_request"]["base"]["sha"] = s.head.clone().into();
    });
    wait_for("4 queued requests", Duration::from_secs(20), || {
        let r = get_json(&s.url("/api/v2/buildrequests"));
        (r["meta"]["total"] == 4).then_some(())
    });

    let _worker = s.start_worker("example-worker", WORKER_PW);
    let builds = s.wait_builds(2, Duration::from_secs(60));
    let revs: Vec<String> = builds
        .iter()
        .map(|b| {
            let p = get_json(&s.url(&format!("/api/v2/builds/{}?property=*", b["buildid"])));
            p["builds"][0]["properties"]["revision"][0]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    // The PR's build is at its base, with its head merged (issue 19).
    assert_eq!(
        revs,
        [c3.clone(), s.head.clone()],
        "newest push first, then the PR"
    );
    assert!(builds.iter().all(|b| b["results"] == 0), "{builds:?}");

    let reqs = get_json(&s.url("/api/v2/buildrequests?order=buildrequestid"));
    let results: Vec<i64> = reqs["buildrequests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["results"].as_i64().unwrap_or(-1))
        .collect();
    assert_eq!(results, [3, 3, 0, 0], "{reqs}");
    let covered: Vec<Option<i64>> = db_query(
        &s.master,
        "SELECT collapsed_into FROM buildrequests ORDER BY buildrequestid",
    );
    let first_build = builds[0]["buildid"].as_i64();
    assert_eq!(covered, [first_build, first_build, None, None]);
    // The API shows which build covered each collapsed request.
    let via_api: Vec<Option<i64>> = reqs["buildrequests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["collapsed_into"].as_i64())
        .collect();
    assert_eq!(via_api, covered, "{reqs}");
    let buildset_results: Vec<i64> = db_query(
        &s.master,
        "SELECT results FROM buildsets ORDER BY buildsetid",
    );
    assert_eq!(
        buildset_results,
        [3, 3, 0, 0],
        "a collapsed buildset is not a success"
    );
    // Only two builds ran.
    assert_eq!(get_json(&s.url("/api/v2/builds"))["meta"]["total"], 2);
    // The skipped request's page links the build that covered it.
    let (code, page) = curl(&[&s.url("/buildrequests/1")]);
    assert_eq!(code, 200, "{page}");
    assert!(
        page.contains("covered by build <a href=\"/builders/runtests\">runtests</a> <a href=\"/builders/runtests/builds/1\">#1</a>"),
        "{page}"
    );
}

#[test]
fn forced_requests_with_other_parameters_are_all_built_in_order() {
    let s = Setup::new(PASSING_TEST, &deploy_cfg("runtests"));
    let _master = s.start_master();
    add_user(&s.master, USER, PASSWORD);
    let force = s.url("/api/v2/forceschedulers/deploy");
    // Queued while no worker is connected: three versions, the last twice.
    for v in ["0.2.1", "0.2.2", "0.2.3", "0.2.3"] {
        let (code, r) = rpc(
            &force,
            Some(&basic()),
            "force",
            serde_json::json!({"builderid": 1, "version": v}),
        );
        assert_eq!(code, 200, "{r}");
    }
    let _worker = s.start_worker("example-worker", WORKER_PW);
    assert_eq!(wait_requests_done(&s.master, Duration::from_secs(90)), 4);
    let builds = get_json(&s.url("/api/v2/builds?order=buildid&property=version"));
    let versions: Vec<&str> = builds["builds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["properties"]["version"][0].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        versions,
        ["0.2.1", "0.2.2", "0.2.3"],
        "each version built once, in the order asked: {builds}"
    );
    let reqs = get_json(&s.url("/api/v2/buildrequests?order=buildrequestid"));
    let got: Vec<(i64, Option<i64>)> = reqs["buildrequests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["results"].as_i64().unwrap_or(-1),
                r["collapsed_into"].as_i64(),
            )
        })
        .collect();
    // Only the identical request was folded, into the build of the newer one.
    let last = builds["builds"][2]["buildid"].as_i64();
    assert_eq!(got, [(0, None), (0, None), (3, last), (0, None)], "{reqs}");
    let (code, page) = curl(&[&s.url("/buildrequests/3")]);
    assert_eq!(code, 200, "{page}");
    assert!(
        page.contains("<a href=\"/builders/runtests/builds/3\">#3</a>"),
        "{page}"
    );
}
