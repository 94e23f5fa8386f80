//! Hostile input on the worker port, against a real master: protocol
//! garbage and oversized frames before and after the handshake, wrong
//! passwords (refused, logged, slowed down), and a worker that reports a
//! step's end twice. The "worker" here is the test itself speaking the
//! wire protocol (`minibot::protocol`), so it can send what a real worker
//! never would.

use crate::common::RawWorker as Raw;
use crate::common::*;
use minibot::model::BuildId;
use minibot::protocol::{self, FromWorker, ToWorker};
use std::io::Write;
use std::time::{Duration, Instant};

/// A master, the test logged in as `example-worker`, and a push queued
/// for it (the master's first RunStep is on its way).
fn master_with_fake_worker_and_a_push() -> (Setup, Proc, Raw) {
    let s = Setup::new(PASSING_TEST, "");
    let master = s.start_master();
    let mut w = Raw::connect(&s);
    assert!(matches!(
        w.auth("example-worker", WORKER_PW),
        ToWorker::Welcome { .. }
    ));
    s.push(&s.head, "master", "x");
    (s, master, w)
}

fn frame(bytes: &[u8]) -> Vec<u8> {
    let mut f = (bytes.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(bytes);
    f
}

/// Waits until build `id` is complete (read anonymously: no users here).
fn wait_complete(s: &Setup, id: BuildId) -> serde_json::Value {
    wait_for(
        &format!("build {id} complete"),
        Duration::from_secs(30),
        || {
            let v = get_json(&s.url(&format!("/api/v2/builds/{id}")));
            (v["builds"][0]["complete"] == true).then(|| v["builds"][0].clone())
        },
    )
}

#[test]
fn protocol_garbage_is_refused_and_the_master_keeps_serving() {
    let s = Setup::new(PASSING_TEST, "");
    let _master = s.start_master();
    // A connection that says nothing is closed by the handshake timeout;
    // checked at the end, so it runs alongside the others.
    let silent = std::thread::spawn({
        let mut r = Raw::connect(&s);
        move || r.rest()
    });
    let auth_of = |name: &str, version: u32| {
        serde_json::to_vec(&FromWorker::Auth {
            protocol: version,
            name: name.into(),
            nonce: "n".into(),
            proof: "p".into(),
            info: Default::default(),
        })
        .unwrap()
    };
    let log_frame = serde_json::to_vec(&FromWorker::Log {
        build_id: BuildId(1),
        step: 0,
        stream: "o".into(),
        data: "x".into(),
    })
    .unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "an HTTP request",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        ("a 4 GiB length", u32::MAX.to_be_bytes().to_vec()),
        (
            "a frame one byte over the limit",
            ((protocol::MAX_FRAME + 1) as u32).to_be_bytes().to_vec(),
        ),
        ("a frame of invalid JSON", frame(b"{\"type\": auth")),
        (
            "a frame of invalid UTF-8",
            frame(b"{\"type\": \"\xff\xfe\"}"),
        ),
        (
            "an unknown message type",
            frame(b"{\"type\": \"root_shell\"}"),
        ),
        ("a log frame before auth", frame(&log_frame)),
        (
            "auth with protocol 99",
            frame(&auth_of("example-worker", 99)),
        ),
        (
            "a truncated frame",
            frame(b"{\"type\":\"ping\"}")[..8].to_vec(),
        ),
        (
            "10000-deep nesting",
            frame(format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).as_bytes()),
        ),
    ];
    let n = cases.len();
    for (what, bytes) in cases {
        let mut r = Raw::connect(&s);
        r.stream.write_all(&bytes).unwrap();
        if what == "a truncated frame" {
            r.stream.shutdown(std::net::Shutdown::Write).unwrap();
        }
        let answers = r.rest();
        eprintln!("{what}: closed after {answers:?}");
        assert!(
            answers
                .iter()
                .all(|a| matches!(a, ToWorker::Refused { .. })),
            "{what}: {answers:?}"
        );
        if what == "auth with protocol 99" {
            assert!(
                matches!(&answers[..], [ToWorker::Refused { reason }] if reason.contains("99")),
                "{answers:?}"
            );
        }
    }
    let silent_answers = silent.join().unwrap();
    assert!(silent_answers.is_empty(), "{silent_answers:?}");
    // Nothing above connected a worker; a real one still builds.
    let w = get_json(&s.url("/api/v2/workers"));
    assert!(w["workers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|w| w["connected_to"] == serde_json::json!([])));
    let _worker = s.start_worker("example-worker", WORKER_PW);
    s.wait_connected("example-worker");
    s.push(&s.head, "master", "after the garbage");
    let b = &s.wait_builds(1, Duration::from_secs(60))[0];
    assert_eq!(b["results"], 0, "{b}");
    eprintln!(
        "{} garbage connections (one silent), all closed without a login; a real worker then built green",
        n + 1
    );
}

#[test]
fn wrong_worker_password_is_refused_logged_and_slowed_down() {
    // Bounds how fast the master answers: alone, not beside the whole suite.
    let _alone = run_alone();
    let s = Setup::new(PASSING_TEST, "");
    let _master = s.start_master();
    let mut took = vec![];
    let spaced = format!("{WORKER_PW} ");
    for (name, password) in [
        ("example-worker", "wrong"),
        ("no-such-worker", WORKER_PW),
        ("example-worker", ""),
        ("example-worker", spaced.as_str()),
        // The name has had its free failures: refused without a check.
        ("example-worker", WORKER_PW),
    ] {
        let mut r = Raw::connect(&s);
        let t = Instant::now();
        let answer = r.auth(name, password);
        took.push(t.elapsed());
        // One answer for every refused login.
        assert_eq!(
            answer,
            ToWorker::Refused {
                reason: minibot::master::worker_conn::LOGIN_REFUSED.into()
            }
        );
        assert!(r.rest().is_empty(), "closed after the refusal");
    }
    // Answered at once (the wait is on the name, not on the socket).
    for t in &took {
        assert!(*t < Duration::from_secs(2), "answered after {t:?}");
    }
    // The right password gets in once the name's wait (1 s) has passed.
    let t = Instant::now();
    wait_for("the right password let in", Duration::from_secs(10), || {
        std::thread::sleep(Duration::from_millis(200));
        let mut r = Raw::connect(&s);
        matches!(
            r.auth("example-worker", WORKER_PW),
            ToWorker::Welcome { .. }
        )
        .then_some(())
    });
    eprintln!(
        "5 refused logins answered after {took:?}; the right password let in {:?} later",
        t.elapsed()
    );
    // Logged, not flooded: a line each for the two names.
    let log = s.master_log();
    let lines = log.lines().filter(|l| l.contains("worker login")).count();
    assert!((2..=4).contains(&lines), "{log}");
}

/// A push built by a fake worker that answers the git step, then reports
/// its end a second time while the next step runs.
#[test]
fn a_repeated_step_result_is_not_recorded_twice() {
    let (s, _master, mut w) = master_with_fake_worker_and_a_push();
    let step_done = |build_id, step, code| FromWorker::StepDone {
        build_id,
        step,
        exit_code: Some(code),
        interrupted: false,
        timed_out: false,
        reason: None,
    };
    let Some(ToWorker::RunStep {
        build_id, step: 0, ..
    }) = w.next()
    else {
        panic!("expected the git step")
    };
    w.send(&step_done(build_id, 0, 0));
    w.send(&step_done(build_id, 0, 0));
    // Reports for builds and steps that are not running are ignored too.
    w.send(&step_done(BuildId(build_id.0 + 1000), 0, 0));
    w.send(&FromWorker::Log {
        build_id,
        step: 7,
        stream: "o".into(),
        data: "not a step\n".into(),
    });
    let Some(ToWorker::RunStep { step: 1, .. }) = w.next() else {
        panic!("expected the test step")
    };
    w.send(&FromWorker::Log {
        build_id,
        step: 1,
        stream: "e".into(),
        data: "the test failed\n".into(),
    });
    w.send(&step_done(build_id, 1, 1));
    w.send(&step_done(build_id, 1, 0));
    let b = wait_complete(&s, build_id);
    let steps = get_json(&s.url(&format!("/api/v2/builds/{build_id}/steps")));
    let results: Vec<_> = steps["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|st| st["results"].clone())
        .collect();
    eprintln!(
        "6 step reports sent (2 repeated, 1 foreign), build {} steps {results:?}",
        b["results"]
    );
    assert_eq!(results, [serde_json::json!(0), serde_json::json!(2)]);
    assert_eq!(b["results"], 2, "the test step's failure counts: {b}");
    let log = s.step_log(build_id.0, "test");
    assert!(log.contains("the test failed"), "{log}");
    assert!(!log.contains("not a step"), "{log}");
    assert_eq!(
        get_json(&s.url("/api/v2/builds"))["meta"]["total"],
        1,
        "one build"
    );
}

/// An authenticated worker that starts sending garbage mid-build is cut
/// off; its build is RETRY and runs on the builder's other worker.
#[test]
fn garbage_from_a_logged_in_worker_mid_build_retries_elsewhere() {
    let (s, _master, mut w) = master_with_fake_worker_and_a_push();
    let Some(ToWorker::RunStep { build_id, .. }) = w.next() else {
        panic!("expected a step")
    };
    w.stream.write_all(&u32::MAX.to_be_bytes()).unwrap();
    let rest = w.rest();
    assert!(rest.is_empty(), "{rest:?}");
    let b = wait_complete(&s, build_id);
    assert_eq!(b["results"], 5, "{b}");
    assert!(
        s.master_log().contains("exceeds the 1048576-byte limit"),
        "the reason is logged"
    );
    let _second = s.start_worker("second-worker", WORKER2_PW);
    let builds = s.wait_builds(2, Duration::from_secs(60));
    eprintln!(
        "garbage mid-build: build {build_id} RETRY, rebuilt as {} by worker {}: {}",
        builds[1]["buildid"], builds[1]["workerid"], builds[1]["results"]
    );
    assert_eq!(builds[1]["results"], 0, "{builds:?}");
    assert_eq!(builds[1]["buildrequestid"], builds[0]["buildrequestid"]);
    assert_ne!(builds[1]["workerid"], builds[0]["workerid"]);
}

#[test]
fn a_flood_of_idle_connections_does_not_exhaust_threads() {
    let s = Setup::new(PASSING_TEST, "");
    let master = s.start_master();
    let threads = || {
        std::fs::read_dir(format!("/proc/{}/task", master.pid()))
            .unwrap()
            .count()
    };
    let before = threads();
    // 60 connections that never say a word: at most 16 get a handshake
    // thread; the rest are closed at once.
    let idle: Vec<std::net::TcpStream> = (0..60)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", s.wport())).unwrap())
        .collect();
    s.wait_status("the master to drop connections over the cap", |st| {
        (st.worker_connections_dropped > 0).then_some(())
    });
    let during = threads();
    eprintln!("threads: {before} before, {during} with 60 idle connections");
    assert!(during <= before + 16, "{before} -> {during}");
    drop(idle);
    // A real worker still gets in once the flood is gone.
    let _w = s.start_worker("example-worker", WORKER_PW);
    s.wait_connected("example-worker");
}
