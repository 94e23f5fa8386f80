//! Chained builds (issue 20 point 3), end to end with a real master, two
//! real workers and a real repository: a `trigger` step with and without
//! `wait` (the triggered builds' result decides the step's; the source
//! stamp and the chosen properties are passed on), a stop while it waits,
//! a master restart while it waits (nothing triggered twice, nothing
//! lost), a `dependent` scheduler that fires only after its upstream
//! succeeded, and the chain shown both ways on the pages and in the API.

use crate::common::*;
use minibot::model::BuildId;
use minibot::protocol::{FromWorker, ToWorker};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(90);

/// The chain builders: `parent` triggers `child` and waits; `nowait`
/// triggers the gated build without waiting, `waiter` with; `late` passes
/// the gate before it triggers `child`; `up` is the upstream of the
/// dependent `after`.
fn chain_cfg(repo: &Path, gated: &Path, gates: &Path) -> String {
    format!(
        r#"
[[schedulers]]
name = "start"
type = "force"
builders = ["parent", "nowait", "waiter", "late"]
[[schedulers.properties]]
name = "version"
type = "string"
[[schedulers]]
name = "up"
type = "force"
builders = ["up"]
[[schedulers.properties]]
name = "version"
type = "string"
[[schedulers]]
name = "child"
type = "triggerable"
builders = ["child"]
[[schedulers]]
name = "slow"
type = "triggerable"
builders = ["gated"]
[[schedulers]]
name = "after"
type = "dependent"
upstream = "up"
builders = ["after"]
[[builders]]
name = "parent"
workers = ["example-worker"]
[[builders.steps]]
type = "git"
repourl = "file://{repo}"
[[builders.steps]]
type = "trigger"
name = "children"
schedulers = ["child"]
wait = true
copy_properties = ["version", "absent"]
set_properties = {{ note = "from parent %(prop:buildnumber)s" }}
[[builders.steps]]
type = "shell"
name = "after-trigger"
command = ["true"]
[[builders]]
name = "child"
workers = ["second-worker"]
[[builders.steps]]
type = "shell"
name = "child"
command = 'echo "version=$MINIBOT_VERSION note=$MINIBOT_NOTE"; test "$MINIBOT_VERSION" != bad'
[[builders]]
name = "nowait"
workers = ["example-worker"]
[[builders.steps]]
type = "trigger"
schedulers = ["slow"]
[[builders]]
name = "waiter"
workers = ["example-worker"]
[[builders.steps]]
type = "trigger"
schedulers = ["slow"]
wait = true
[[builders]]
name = "gated"
workers = ["second-worker"]
[[builders.steps]]
type = "shell"
name = "gated"
command = ["/usr/bin/python3", "-u", "{gated}", "{gates}"]
[[builders]]
name = "late"
workers = ["example-worker"]
[[builders.steps]]
type = "shell"
name = "gated"
command = ["/usr/bin/python3", "-u", "{gated}", "{gates}"]
[[builders.steps]]
type = "trigger"
schedulers = ["child"]
[[builders]]
name = "up"
workers = ["example-worker"]
[[builders.steps]]
type = "shell"
name = "up"
command = 'test "$MINIBOT_VERSION" != bad'
[[builders]]
name = "after"
workers = ["second-worker"]
[[builders.steps]]
type = "shell"
name = "after"
command = ["true"]
"#,
        repo = repo.display(),
        gated = gated.display(),
        gates = gates.display(),
    )
}

/// A master with the chain builders and two connected workers; the gates'
/// directory of the `gated` builder (one gate).
fn chain_setup() -> (Setup, Proc, (Proc, Proc), std::path::PathBuf) {
    let s = Setup::new(PASSING_TEST, "");
    let (gates, script) = s.gates(1);
    let repo = s.repo.clone();
    s.edit_cfg(|t| t + &chain_cfg(&repo, &script, &gates));
    add_user(&s.master, USER, PASSWORD);
    let master = s.start_master();
    let workers = s.start_two_workers();
    (s, master, workers, gates)
}

/// Forces `builder` through force scheduler `scheduler` with `params`;
/// returns the request's id.
fn force_chain(s: &Setup, scheduler: &str, builder: &str, params: Value) -> i64 {
    let mut params = params;
    params["builderNames"] = json!([builder]);
    force(s, scheduler, params)
}

/// The builds of `builder`, oldest first, with every property.
fn builds_of(s: &Setup, builder: &str) -> Vec<Value> {
    let v = get_json(&s.url(&format!(
        "/api/v2/builders/{builder}/builds?order=number&property=*"
    )));
    v["builds"].as_array().cloned().unwrap_or_default()
}

/// Waits for build `number` of `builder` to be complete; returns it.
fn wait_done(s: &Setup, builder: &str, number: i64) -> Value {
    wait_for(&format!("{builder} #{number} to finish"), LONG, || {
        builds_of(s, builder)
            .into_iter()
            .find(|b| b["number"] == number && b["complete"] == true)
    })
}

/// The steps of build `buildid`.
fn steps_of(s: &Setup, buildid: i64) -> Vec<Value> {
    let v = get_json(&s.url(&format!("/api/v2/builds/{buildid}/steps")));
    v["steps"].as_array().cloned().unwrap()
}

fn step_named(s: &Setup, buildid: i64, name: &str) -> Value {
    steps_of(s, buildid)
        .into_iter()
        .find(|st| st["name"] == name)
        .unwrap_or_else(|| panic!("no step {name} in build {buildid}"))
}

/// Waits until the first build of `builder`'s trigger step (named
/// "trigger") waits for its builds; returns the build's id.
fn waiting_build(s: &Setup, builder: &str) -> i64 {
    wait_for(&format!("{builder}'s trigger step waiting"), LONG, || {
        let b = builds_of(s, builder).into_iter().next()?;
        let id = b["buildid"].as_i64()?;
        let log = steps_of(s, id).first().map(|_| s.step_log(id, "trigger"))?;
        log.contains("waiting for the triggered builds")
            .then_some(id)
    })
}

const SUCCESS: i64 = 0;
const FAILURE: i64 = 2;
const RETRY: i64 = 5;
const CANCELLED: i64 = 6;

#[test]
fn a_waiting_trigger_passes_on_source_and_properties_and_takes_the_result() {
    let (s, _master, _workers, _gates) = chain_setup();
    force_chain(&s, "start", "parent", json!({ "version": "1.0" }));
    let parent = wait_done(&s, "parent", 1);
    assert_eq!(parent["results"], SUCCESS, "{parent}");
    let child = wait_done(&s, "child", 1);
    assert_eq!(child["results"], SUCCESS, "{child}");
    let (pid, cid) = (
        parent["buildid"].as_i64().unwrap(),
        child["buildid"].as_i64().unwrap(),
    );
    // The child was done before the parent's trigger step ended, and the
    // step after it ran.
    let trigger = step_named(&s, pid, "children");
    assert_eq!(trigger["results"], SUCCESS, "{trigger}");
    assert!(
        trigger["complete_at"].as_i64() >= child["complete_at"].as_i64(),
        "{trigger} {child}"
    );
    assert_eq!(step_named(&s, pid, "after-trigger")["results"], SUCCESS);
    eprintln!(
        "child #1 ended at {}, the parent's waiting step at {} (Unix seconds)",
        child["complete_at"], trigger["complete_at"]
    );
    // Properties: the chosen ones, source "Trigger"; a missing one is
    // not invented.
    let props = &child["properties"];
    assert_eq!(props["version"], json!(["1.0", "Trigger"]), "{props}");
    assert_eq!(
        props["note"],
        json!(["from parent 1", "Trigger"]),
        "{props}"
    );
    assert_eq!(props["scheduler"], json!(["child", "Scheduler"]), "{props}");
    assert!(props.get("absent").is_none(), "{props}");
    assert!(s
        .step_log(cid, "child")
        .contains("version=1.0 note=from parent 1"));
    // The source stamp: the parent's, at the commit its git step checked out.
    let brid = child["buildrequestid"].as_i64().unwrap();
    let req = get_json(&s.url(&format!("/api/v2/buildrequests/{brid}")));
    let bsid = req["buildrequests"][0]["buildsetid"].as_i64().unwrap();
    let bs = get_json(&s.url(&format!("/api/v2/buildsets/{bsid}")))["buildsets"][0].clone();
    assert_eq!(bs["sourcestamps"][0]["revision"], json!(s.head), "{bs}");
    assert_eq!(bs["parent_buildid"], pid, "{bs}");
    assert_eq!(bs["parent_relationship"], "Triggered from", "{bs}");
    assert_eq!(bs["reason"], "Triggered by parent #1", "{bs}");
    // The API, both ways.
    assert_eq!(
        child["triggered_by"],
        json!({"buildid": pid, "builderid": parent["builderid"], "number": 1}),
        "{child}"
    );
    assert_eq!(parent["triggered_by"], Value::Null);
    let t = &parent["triggered"][0];
    assert_eq!(
        (&t["buildid"], &t["number"], &t["results"], &t["step"]),
        (&json!(cid), &json!(1), &json!(SUCCESS), &json!(1)),
        "{parent}"
    );
    // The pages, both ways.
    let (_, parent_page) = curl(&[&s.url("/builders/parent/builds/1")]);
    assert!(
        parent_page.contains("<h3>Triggered builds</h3>"),
        "{parent_page}"
    );
    assert!(parent_page.contains("href=\"/builders/child/builds/1\""));
    let (_, child_page) = curl(&[&s.url("/builders/child/builds/1")]);
    let by = child_page
        .split("<p id=\"triggered-by\">")
        .nth(1)
        .expect("a triggered-by line")
        .split("</p>")
        .next()
        .unwrap();
    assert!(by.starts_with("triggered by <a href=\"/builders/parent\">parent</a>"));
    assert!(
        by.contains("<a href=\"/builders/parent/builds/1\">#1</a>"),
        "{by}"
    );

    // A failing child fails the step, and the parent stops there.
    force_chain(&s, "start", "parent", json!({ "version": "bad" }));
    let parent = wait_done(&s, "parent", 2);
    assert_eq!(wait_done(&s, "child", 2)["results"], FAILURE);
    assert_eq!(parent["results"], FAILURE, "{parent}");
    let pid = parent["buildid"].as_i64().unwrap();
    let trigger = step_named(&s, pid, "children");
    assert_eq!(trigger["results"], FAILURE, "{trigger}");
    assert_eq!(trigger["state_string"], "children (child #2: failure)");
    assert!(steps_of(&s, pid)
        .iter()
        .all(|st| st["name"] != "after-trigger"));
    let log = s.step_log(pid, "children");
    assert!(log.contains("triggered scheduler \"child\""), "{log}");
    assert!(log.contains("child #2: failure"), "{log}");
}

#[test]
fn without_wait_the_step_succeeds_at_once_and_a_stop_while_waiting_cancels_only_the_waiter() {
    let (s, _master, _workers, gates) = chain_setup();
    // Without wait: done while the triggered build still waits at its gate.
    force_chain(&s, "start", "nowait", json!({}));
    let nowait = wait_done(&s, "nowait", 1);
    assert_eq!(nowait["results"], SUCCESS, "{nowait}");
    let gated = builds_of(&s, "gated");
    assert!(
        gated.iter().all(|b| b["complete"] == false),
        "the triggered build is not done yet: {gated:?}"
    );
    assert_eq!(
        db_query::<i64>(
            &s.master,
            "SELECT count(*) FROM buildsets WHERE scheduler = 'slow'"
        )[0],
        1
    );
    // With wait: a stop ends the waiting step (and the build) cancelled;
    // the build it triggered is not stopped.
    force_chain(&s, "start", "waiter", json!({}));
    let waiter = waiting_build(&s, "waiter");
    let (code, v) = rpc(
        &s.url(&format!("/api/v2/builds/{waiter}")),
        Some(&basic()),
        "stop",
        json!({ "reason": "not today" }),
    );
    assert_eq!(code, 200, "{v}");
    let stopped = s.wait_build(waiter, LONG);
    assert_eq!(stopped["results"], CANCELLED, "{stopped}");
    assert_eq!(step_named(&s, waiter, "trigger")["results"], CANCELLED);
    let log = s.step_log(waiter, "trigger");
    assert!(
        log.contains(
            "stopped by alice: not today: the step ended while waiting; the triggered builds go on"
        ),
        "{log}"
    );
    assert_eq!(
        db_query::<i64>(
            &s.master,
            "SELECT count(*) FROM buildsets WHERE scheduler = 'slow'"
        )[0],
        2
    );
    // The stopped build's page lists the build it triggered, still queued.
    let (_, page) = curl(&[&s.url("/builders/waiter/builds/1")]);
    let list = page.split("<ul id=\"triggered\">").nth(1).unwrap_or("");
    assert!(
        list.starts_with(
            "<li><a href=\"/builders/gated\">gated</a> <span class=\"muted\">queued</span>"
        ),
        "{page}"
    );
    // Both triggered builds still run to their end once the gate opens.
    std::fs::write(gates.join("gate-0"), "").unwrap();
    assert_eq!(wait_done(&s, "gated", 1)["results"], SUCCESS);
    assert_eq!(wait_done(&s, "gated", 2)["results"], SUCCESS);
}

#[test]
fn a_master_restart_while_a_trigger_step_waits_neither_loses_nor_repeats_its_builds() {
    let (s, mut master, _workers, gates) = chain_setup();
    force_chain(&s, "start", "waiter", json!({}));
    // The triggered build is running, held at its gate.
    wait_for("the triggered build to run", LONG, || {
        gates.join("pids").exists().then_some(())
    });
    master.signal(libc::SIGTERM);
    assert!(master.wait_exit(Duration::from_secs(30)).is_some());
    let _master = s.start_master();
    s.wait_connected("example-worker");
    s.wait_connected("second-worker");
    std::fs::write(gates.join("gate-0"), "").unwrap();
    let retried = wait_done(&s, "waiter", 1);
    assert_eq!(retried["results"], RETRY, "{retried}");
    let again = wait_done(&s, "waiter", 2);
    assert_eq!(again["results"], SUCCESS, "{again}");
    // One buildset, its one request built to the end (once retried after
    // the restart interrupted it).
    assert_eq!(
        db_query::<i64>(
            &s.master,
            "SELECT count(*) FROM buildsets WHERE scheduler = 'slow'"
        )[0],
        1
    );
    assert_eq!(
        db_query::<i64>(
            &s.master,
            "SELECT count(*) FROM buildrequests br JOIN buildsets bs USING (buildsetid)
             WHERE bs.scheduler = 'slow' AND br.complete = 1 AND br.results = 0"
        )[0],
        1
    );
    let log = s.step_log(again["buildid"].as_i64().unwrap(), "trigger");
    assert!(
        log.contains("an earlier build of this request triggered buildsets"),
        "{log}"
    );
    // Both builds of the waiter link to the one triggered buildset.
    let links: Vec<i64> = db_query(
        &s.master,
        "SELECT count(DISTINCT buildid) FROM build_triggers",
    );
    assert_eq!(links[0], 2);
}

#[test]
fn a_dependent_scheduler_fires_only_after_its_upstream_succeeded() {
    let (s, _master, _workers, _gates) = chain_setup();
    force_chain(&s, "up", "up", json!({ "version": "bad" }));
    assert_eq!(wait_done(&s, "up", 1)["results"], FAILURE);
    force_chain(
        &s,
        "up",
        "up",
        json!({ "version": "good", "branch": "master", "revision": s.head }),
    );
    assert_eq!(wait_done(&s, "up", 2)["results"], SUCCESS);
    let after = wait_done(&s, "after", 1);
    assert_eq!(after["results"], SUCCESS, "{after}");
    assert_eq!(
        after["properties"]["scheduler"],
        json!(["after", "Scheduler"])
    );
    // Only the successful upstream buildset started one, at its source.
    let rows: Vec<String> = db_query(
        &s.master,
        "SELECT d.revision || ' ' || u.buildsetid FROM buildsets d
         JOIN buildsets u ON u.buildsetid = d.upstream_buildsetid WHERE d.scheduler = 'after'",
    );
    let up2: Vec<i64> = db_query(
        &s.master,
        "SELECT max(buildsetid) FROM buildsets WHERE scheduler = 'up'",
    );
    assert_eq!(rows, [format!("{} {}", s.head, up2[0])]);
}

/// A step the master runs is the master's: a worker (here the test,
/// logged in as the waiting build's worker) that reports the trigger
/// step's end or writes into its log changes nothing.
#[test]
fn a_worker_can_neither_end_nor_write_into_a_step_the_master_runs() {
    let s = Setup::new(PASSING_TEST, "");
    let (gates, script) = s.gates(1);
    let repo = s.repo.clone();
    s.edit_cfg(|t| t + &chain_cfg(&repo, &script, &gates));
    add_user(&s.master, USER, PASSWORD);
    let _master = s.start_master();
    let _real = s.start_worker("second-worker", WORKER2_PW);
    s.wait_connected("second-worker");
    let mut w = RawWorker::connect(&s);
    assert!(matches!(
        w.auth("example-worker", WORKER_PW),
        ToWorker::Welcome { .. }
    ));
    force_chain(&s, "start", "waiter", json!({}));
    let id = waiting_build(&s, "waiter");
    w.send(&FromWorker::Log {
        build_id: BuildId(id),
        step: 0,
        stream: "o".into(),
        data: "forged output\n".into(),
    });
    w.send(&FromWorker::StepDone {
        build_id: BuildId(id),
        step: 0,
        exit_code: Some(0),
        interrupted: false,
        timed_out: false,
        reason: None,
    });
    // Frames are handled in order: the answer to this Ping comes after.
    w.send(&FromWorker::Ping);
    assert!(matches!(w.next(), Some(ToWorker::Pong)));
    let step = step_named(&s, id, "trigger");
    assert_eq!(step["complete"], false, "{step}");
    std::fs::write(gates.join("gate-0"), "").unwrap();
    let done = s.wait_build(id, LONG);
    assert_eq!(done["results"], SUCCESS, "{done}");
    let log = s.step_log(id, "trigger");
    assert!(!log.contains("forged output"), "{log}");
    assert!(log.contains("gated #1: success"), "{log}");
}

/// `minibot stop --clean` starts no new builds, except those a running
/// build's trigger step waits for: the waiting build ends, then the master.
#[test]
fn a_clean_stop_still_runs_the_builds_a_waiting_step_needs() {
    let (s, mut master, _workers, gates) = chain_setup();
    // The gated builder's one worker is busy with a build that is not
    // waited for; the waiter's triggered build queues behind it.
    force_chain(&s, "start", "nowait", json!({}));
    assert_eq!(wait_done(&s, "nowait", 1)["results"], SUCCESS);
    force_chain(&s, "start", "waiter", json!({}));
    let waiter = waiting_build(&s, "waiter");
    master.signal(libc::SIGUSR1);
    s.wait_status("the master draining", |st| {
        (st.state == MasterState::Draining).then_some(())
    });
    std::fs::write(gates.join("gate-0"), "").unwrap();
    assert!(
        master.wait_exit(LONG).is_some(),
        "the clean stop ended once the waiting build had"
    );
    let rows: Vec<String> = db_query(
        &s.master,
        "SELECT bl.name || ' ' || b.number || ' ' || b.results FROM builds b
         JOIN builders bl USING (builderid) ORDER BY b.buildid",
    );
    assert_eq!(rows, ["nowait 1 0", "gated 1 0", "waiter 1 0", "gated 2 0"]);
    let w: Vec<i64> = db_query(
        &s.master,
        &format!("SELECT results FROM builds WHERE buildid = {waiter}"),
    );
    assert_eq!(w, [SUCCESS]);
}

/// A dependent scheduler added by a reconfig follows its upstream from
/// then on (the chain thread is told; it does not wait for a build's end
/// to look, and builds nothing for the history).
#[test]
fn a_dependent_scheduler_added_by_reconfig_follows_from_then_on() {
    let (s, _master, _workers, _gates) = chain_setup();
    force_chain(&s, "up", "up", json!({ "version": "before" }));
    assert_eq!(wait_done(&s, "up", 1)["results"], SUCCESS);
    s.edit_cfg(|t| {
        t + "[[schedulers]]\nname = \"later\"\ntype = \"dependent\"\nupstream = \"up\"\n\
             builders = [\"child\"]\n"
    });
    let out = run_ok(MINIBOT, &["reconfig", s.master.to_str().unwrap()]);
    assert!(out.contains("reconfig: done"), "{out}");
    force_chain(&s, "up", "up", json!({ "version": "after" }));
    assert_eq!(wait_done(&s, "up", 2)["results"], SUCCESS);
    let child = wait_done(&s, "child", 1);
    assert_eq!(
        child["properties"]["scheduler"],
        json!(["later", "Scheduler"])
    );
    let later: Vec<i64> = db_query(
        &s.master,
        "SELECT u.buildsetid FROM buildsets d JOIN buildsets u
           ON u.buildsetid = d.upstream_buildsetid WHERE d.scheduler = 'later'",
    );
    let up2: Vec<i64> = db_query(
        &s.master,
        "SELECT max(buildsetid) FROM buildsets WHERE scheduler = 'up'",
    );
    assert_eq!(later, up2, "only the upstream buildset after the reconfig");
}

/// A running build keeps the steps it started with; a trigger step whose
/// scheduler a reconfig took away ends EXCEPTION, saying why.
#[test]
fn a_trigger_step_whose_scheduler_was_reconfigured_away_ends_exception() {
    let (s, _master, _workers, gates) = chain_setup();
    force_chain(&s, "start", "late", json!({}));
    wait_for("the late build at its gate", LONG, || {
        gates.join("pids").exists().then_some(())
    });
    s.edit_cfg(|t| {
        t.replace("schedulers = [\"child\"]", "schedulers = [\"child2\"]")
            .replace(
                "name = \"child\"\ntype = \"triggerable\"",
                "name = \"child2\"\ntype = \"triggerable\"",
            )
    });
    let out = run_ok(MINIBOT, &["reconfig", s.master.to_str().unwrap()]);
    assert!(out.contains("reconfig: done"), "{out}");
    std::fs::write(gates.join("gate-0"), "").unwrap();
    let late = wait_done(&s, "late", 1);
    assert_eq!(late["results"], 4, "EXCEPTION: {late}");
    let id = late["buildid"].as_i64().unwrap();
    let log = s.step_log(id, "trigger");
    assert!(
        log.contains("no triggerable scheduler named \"child\" in the config now"),
        "{log}"
    );
    assert!(builds_of(&s, "child").is_empty());
}
