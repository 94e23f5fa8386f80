//! The queue and request pages, stop and skipped steps (issue 17 points 5
//! and 7), end to end with the real binaries and curl: each queued
//! request says who or what asked (a user's force, a change's author, a
//! rebuild of which build), what the force form set (three deploys look
//! different), and why it waits (no worker connected, a worker busy with a
//! named build, paused, an older request first, collapsing), computed from
//! the real state, on the pages and in the API's `waiting_reason`; a
//! SKIPPED request names the build that covered it.
//! Stop asks first on a page of its own and takes a bounded, one-line
//! reason, shown on the build and in its `state_string`; steps never run
//! are listed as skipped from the steps recorded at the build's start,
//! whatever a later reconfig says.

use crate::common::browser::{browser, CHROMIUM};
use crate::common::*;
use serde_json::json;
use std::path::Path;
use std::time::Duration;

const MIN: Duration = Duration::from_secs(60);

/// A master with the `gated` builder (on `example-worker` only, behind
/// gate files in `gates`) and a `deploy` force scheduler for it with a
/// `version` parameter; `extra` is added after the `runtests` builder.
fn gated_with_deploy(test_body: &str, extra: &str) -> (Setup, std::path::PathBuf) {
    let s = Setup::new(test_body, &format!("{extra}{}", deploy_cfg("gated")));
    let gates = s.add_gated(1);
    (s, gates)
}

fn page(s: &Setup, path: &str) -> String {
    let (code, body) = curl(&[&s.url(path)]);
    assert_eq!(code, 200, "GET {path}: {body}");
    body
}

/// The `<tr>` of the queue table holding request `brid` (its first cell
/// links it).
fn row_of(page: &str, brid: i64) -> String {
    let link = format!("<td><a href=\"/buildrequests/{brid}\">{brid}</a></td>");
    let at = page
        .find(&link)
        .unwrap_or_else(|| panic!("no row for request {brid} in {page}"));
    let end = page[at..].find("</tr>").map_or(page.len(), |e| at + e);
    page[at..end].to_string()
}

/// Request `brid`'s `waiting_reason` in the API.
fn api_why(s: &Setup, brid: i64) -> serde_json::Value {
    let v = get_json(&s.url(&format!(
        "/api/v2/buildrequests/{brid}?field=waiting_reason"
    )));
    v["buildrequests"][0]["waiting_reason"].clone()
}

fn assert_has(text: &str, needle: &str) {
    assert!(text.contains(needle), "{needle:?} not in {text}");
}

#[test]
fn requests_say_who_asked_what_and_why_they_wait() {
    let (s, gates) = gated_with_deploy(PASSING_TEST, "");
    let _master = s.start_master();
    add_user(&s.master, USER, PASSWORD);
    // Three deploys while no worker is connected; the last two alike.
    let r1 = force(
        &s,
        "deploy",
        json!({"builderid": 2, "version": "0.2.1", "reason": "ship one"}),
    );
    let r2 = force(&s, "deploy", json!({"builderid": 2, "version": "0.2.2"}));
    let r3 = force(&s, "deploy", json!({"builderid": 2, "version": "0.2.2"}));
    let sha = s.commit("f.txt", "1\n", "one");
    s.push(&sha, "master", "one");
    let r4 = wait_for("the push's request", MIN, || {
        db_query::<i64>(
            &s.master,
            "SELECT br.buildrequestid FROM buildrequests br JOIN builders b USING (builderid)
             WHERE b.name = 'runtests'",
        )
        .first()
        .copied()
    });

    let q = page(&s, "/buildrequests");
    let (q1, q2, q3, q4) = (
        row_of(&q, r1),
        row_of(&q, r2),
        row_of(&q, r3),
        row_of(&q, r4),
    );
    for row in [&q1, &q2, &q3] {
        assert_has(row, "forced by <strong>alice</strong>");
    }
    assert_has(&q1, "<q>ship one</q>");
    assert_has(&q1, "version=0.2.1");
    assert_has(&q2, "version=0.2.2");
    assert_has(&q1, "example-worker is not connected");
    let first = format!("request <a href=\"/buildrequests/{r1}\">{r1}</a> to start first");
    assert_has(&q2, &first);
    assert_has(&q3, &first);
    assert_has(&q4, "change by Isabell Example");
    assert_has(&q4, "(scheduler all)");
    assert_has(
        &q4,
        "example-worker is not connected; second-worker is not connected",
    );
    // The request's own page says the same, and so does the home page.
    let p1 = page(&s, &format!("/buildrequests/{r1}"));
    assert_has(&p1, "forced by <strong>alice</strong>");
    assert_has(&p1, "version=0.2.1");
    assert_has(
        &p1,
        "waiting for a free worker: example-worker is not connected",
    );
    assert_has(&row_of(&page(&s, "/"), r4), "change by Isabell Example");
    // The API names the user.
    let api = get_json(&s.url(&format!("/api/v2/buildrequests/{r1}")));
    assert_eq!(api["buildrequests"][0]["requested_by"], "alice", "{api}");
    let api = get_json(&s.url(&format!("/api/v2/buildrequests/{r4}")));
    assert_eq!(
        api["buildrequests"][0]["requested_by"],
        json!(null),
        "{api}"
    );
    // ... and why each waits, in the pages' words without the links.
    let no_worker = "a free worker: example-worker is not connected";
    assert_eq!(api_why(&s, r1), no_worker);
    assert_eq!(
        api_why(&s, r2),
        format!("request {r1} to start first (same source, other parameters)")
    );
    assert_eq!(
        api_why(&s, r4),
        format!("{no_worker}; second-worker is not connected")
    );
    let queued = get_json(&s.url("/api/v2/buildrequests?claimed=false&complete=false"));
    let whys: Vec<&str> = queued["buildrequests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["waiting_reason"].as_str().unwrap_or("null"))
        .collect();
    assert_eq!(whys.len(), 4, "{queued}");
    assert_eq!(whys[0], no_worker, "{queued}");

    // A worker: the first deploy runs, the rest wait for it by name.
    let _worker = s.start_worker("example-worker", WORKER_PW);
    let b1 = s.wait_build_of(r1);
    let q = page(&s, "/buildrequests");
    assert_has(
        &row_of(&q, r2),
        &format!("the newer request <a href=\"/buildrequests/{r3}\">{r3}</a>, whose build will cover it (collapsing)"),
    );
    let running = "example-worker is running gated <a href=\"/builders/gated/builds/1\">#1</a>";
    assert_has(&row_of(&q, r3), running);
    assert_eq!(
        api_why(&s, r3),
        "a free worker: example-worker is running gated #1"
    );
    assert_has(
        &row_of(&q, r4),
        "example-worker is busy with gated <a href=\"/builders/gated/builds/1\">#1</a>; second-worker is not connected",
    );
    let wurl = s.url("/api/v2/workers/example-worker");
    let (code, v) = rpc(&wurl, Some(&basic()), "pause", json!({}));
    assert_eq!(code, 200, "{v}");
    let q = page(&s, "/buildrequests");
    assert_has(&row_of(&q, r4), "example-worker is paused");
    assert_eq!(
        api_why(&s, r4),
        "a free worker: example-worker is paused; second-worker is not connected"
    );
    // A request that has started waits for nothing.
    assert_eq!(api_why(&s, r1), json!(null));
    let (code, v) = rpc(&wurl, Some(&basic()), "unpause", json!({}));
    assert_eq!(code, 200, "{v}");

    // Everything runs; the alike deploy is covered by the other's build.
    std::fs::write(gates.join("gate-0"), b"").unwrap();
    assert_eq!(wait_requests_done(&s.master, MIN * 2), 4);
    let covering = s.wait_build_of(r3);
    let number: Vec<i64> = db_query(
        &s.master,
        &format!("SELECT number FROM builds WHERE buildid = {covering}"),
    );
    let (code, v) = rpc(
        &s.url(&format!("/api/v2/builds/{b1}")),
        Some(&basic()),
        "rebuild",
        json!({}),
    );
    assert_eq!(code, 200, "{v}");
    let r5 = v["result"][1]["2"].as_i64().unwrap();
    s.wait_build(s.wait_build_of(r5), MIN);
    let q = page(&s, "/buildrequests");
    assert_has(
        &row_of(&q, r2),
        &format!(
            "covered by build <a href=\"/builders/gated\">gated</a> <a href=\"/builders/gated/builds/{n}\">#{n}</a>",
            n = number[0]
        ),
    );
    assert_has(
        &row_of(&q, r5),
        "rebuild of gated <a href=\"/builders/gated/builds/1\">#1</a> by <strong>alice</strong>",
    );
    // A rebuild builds what the rebuilt build did: its parameters show.
    assert_has(&row_of(&q, r5), "version=0.2.1");
    let bsid = v["result"][0].as_i64().unwrap();
    let bs = get_json(&s.url(&format!("/api/v2/buildsets/{bsid}")));
    assert_eq!(bs["buildsets"][0]["rebuilt_buildid"], b1, "{bs}");
    assert_eq!(bs["buildsets"][0]["requested_by"], "alice", "{bs}");
}

/// POSTs the stop form of build `buildid` with `reason`; the status.
fn post_stop(s: &Setup, jar: &Path, buildid: i64, reason: &str) -> (u16, String) {
    let jar_s = jar.to_str().unwrap();
    let form = page_with(s, jar, &format!("/builds/{buildid}/stop"));
    curl(&[
        "-b",
        jar_s,
        "--data-urlencode",
        &format!("csrf={}", form_token(&form)),
        "--data-urlencode",
        &format!("reason={reason}"),
        &s.url(&format!("/builds/{buildid}/stop")),
    ])
}

fn page_with(s: &Setup, jar: &Path, path: &str) -> String {
    let (code, body) = curl(&["-b", jar.to_str().unwrap(), &s.url(path)]);
    assert_eq!(code, 200, "GET {path}: {body}");
    body
}

#[test]
fn stop_asks_first_with_a_reason_and_skipped_steps_are_listed() {
    let package = r#"
[[builders.steps]]
type = "shell"
name = "package"
command = ["true"]
"#;
    let (s, _gates) = gated_with_deploy("assert False\n", package);
    s.edit_cfg(|t| {
        t + r#"
[[builders.steps]]
type = "shell"
name = "publish"
command = ["true"]
"#
    });
    let _master = s.start_master();
    add_user(&s.master, USER, PASSWORD);
    let (code, jar) = login(&s, PASSWORD);
    assert_eq!(code, 303);
    let _worker = s.start_worker("example-worker", WORKER_PW);
    let brid = force(&s, "deploy", json!({"builderid": 2, "version": "1"}));
    let buildid = s.wait_build_of(brid);

    // The build page's Stop opens a confirmation page; it does not stop.
    let build_page = page_with(&s, &jar, "/builders/gated/builds/1");
    assert_has(
        &build_page,
        &format!("<form class=\"inline\" method=\"get\" action=\"/builds/{buildid}/stop\">"),
    );
    let confirm = page_with(&s, &jar, &format!("/builds/{buildid}/stop"));
    assert_has(&confirm, "name=\"reason\" maxlength=\"200\"");
    assert_has(&confirm, "Stop the build</button>");
    // Without a session: an invitation to log in, no form.
    let anon = page(&s, &format!("/builds/{buildid}/stop"));
    assert!(!anon.contains("name=\"reason\""), "{anon}");

    // A reason with control characters or too long is refused; the build
    // goes on.
    let (code, body) = post_stop(&s, &jar, buildid, "two\nlines");
    assert_eq!(code, 400, "{body}");
    let (code, body) = post_stop(&s, &jar, buildid, &"x".repeat(201));
    assert_eq!(code, 400, "{body}");
    let b = get_json(&s.url(&format!("/api/v2/builds/{buildid}")));
    assert_eq!(b["builds"][0]["complete"], false, "{b}");

    let (code, body) = post_stop(&s, &jar, buildid, "deploy window closed");
    assert_eq!(code, 303, "{body}");
    let b = s.wait_build(buildid, MIN);
    assert_eq!(b["results"], 6, "{b}");
    let state = b["state_string"].as_str().unwrap();
    assert_eq!(state, "cancelled: stopped by alice: deploy window closed");
    let build_page = page(&s, "/builders/gated/builds/1");
    assert_has(&build_page, "stopped by alice: deploy window closed");
    assert_has(
        &build_page,
        "<strong>publish</strong><span class=\"res r3\">skipped</span><small>not run: the build was stopped</small>",
    );

    // A failing step halts the build: the step after it is listed skipped,
    // and stays so named after a reconfig renames it.
    let brid = force(&s, "force", json!({"builderNames": ["runtests"]}));
    let b = s.wait_build(s.wait_build_of(brid), MIN);
    assert_eq!(b["results"], 2, "{b}");
    s.edit_cfg(|t| t.replace("name = \"package\"", "name = \"package-renamed\""));
    run_ok(MINIBOT, &["reconfig", s.master.to_str().unwrap()]);
    let run_page = page(&s, "/builders/runtests/builds/1");
    assert_has(
        &run_page,
        "<strong>package</strong><span class=\"res r3\">skipped</span><small>not run: an earlier step halted the build</small>",
    );
    assert!(!run_page.contains("package-renamed"), "{run_page}");
}

/// In Chromium: a build page watching a build that is stopped reloads
/// once it ends and lists the step it never ran; the Stop button leads to
/// the confirmation page, whose reason ends on the build.
#[test]
fn browser_stop_confirms_and_a_live_page_lists_skipped_steps() {
    if !require(
        &format!("{CHROMIUM} (apt-get install chromium)"),
        Path::new(CHROMIUM).exists(),
    ) {
        return;
    }
    let (s, _gates) = gated_with_deploy(PASSING_TEST, "");
    s.edit_cfg(|t| {
        t + "[[builders.steps]]\ntype = \"shell\"\nname = \"publish\"\ncommand = [\"true\"]\n"
    });
    add_user(&s.master, USER, PASSWORD);
    let _master = s.start_master();
    let _worker = s.start_worker("example-worker", WORKER_PW);
    s.wait_connected("example-worker");
    let (_chromium, mut cdp) = browser(&s);
    cdp.log_in(&s.url(""), "/builders/gated");

    // Watched live, stopped from elsewhere: the page reloads and lists
    // "publish" as skipped.
    let b1 = s.wait_build_of(force(&s, "deploy", json!({"builderid": 2})));
    cdp.navigate(&s.url("/builders/gated/builds/1"));
    cdp.wait_js(
        "the live log",
        "document.getElementById('steps').textContent.includes('gate-line 0')",
    );
    cdp.eval("window.__sameDocument = 'yes'; true");
    let (code, v) = rpc(
        &s.url(&format!("/api/v2/builds/{b1}")),
        Some(&basic()),
        "stop",
        json!({"reason": "from the API"}),
    );
    assert_eq!(code, 200, "{v}");
    cdp.wait_js(
        "the skipped step after the build ends",
        "!!document.querySelector('#skipped-1 .r3') && window.__sameDocument === undefined",
    );
    cdp.wait_js(
        "the reason in the build's head",
        "!!document.getElementById('build-head')?.textContent.includes('from the API')",
    );

    // The Stop button asks first; the reason typed there ends on the build.
    s.wait_build_of(force(&s, "deploy", json!({"builderid": 2})));
    cdp.navigate(&s.url("/builders/gated/builds/2"));
    cdp.eval("document.querySelector('#build-head form[method=get] button').click(); true");
    cdp.wait_js(
        "the confirmation page",
        "/^\\/builds\\/\\d+\\/stop$/.test(location.pathname) && document.readyState === 'complete'",
    );
    cdp.eval(
        "document.getElementById('stop-reason').value = 'confirmed in the browser';
         document.querySelector('#stop-form button').click(); true",
    );
    cdp.wait_js(
        "the stopped build with its reason and skipped step",
        // The page may be between loads (it reloads when the build ends).
        "location.pathname === '/builders/gated/builds/2' && document.readyState === 'complete' \
         && !!document.getElementById('build-head')?.textContent.includes('confirmed in the browser') \
         && !!document.getElementById('skipped-1')",
    );
    cdp.assert_no_errors();
}
