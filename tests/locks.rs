//! Locks (issue 20 point 4), end to end with the real binaries: builds
//! that share an exclusive master lock never overlap, a counting lock
//! admits exactly `max_count`, a worker lock is counted per worker, a
//! step lock is held for its step only (and a request waiting for it
//! starts when that step ends, the build still running); a request
//! waiting for a lock says which and who holds it on its page and in the
//! queue, and takes no worker meanwhile; a lock is given
//! back when its build is stopped, when its worker is killed (kill -9) and
//! when the master restarts, and a reconfig that removes a held lock
//! leaves it with its holder until that build ends.
//!
//! Overlap is measured, not assumed: each step appends its start and end
//! times (`time.time()`) to a file itself, and the test checks the
//! intervals. Where builds must overlap (a counting lock, two workers)
//! the steps wait for each other's start (a rendezvous that fails after
//! 60 s), so a lock that kept them apart would fail the build.

use crate::common::*;
use serde_json::json;
use std::path::Path;
use std::time::Duration;

const MIN: Duration = Duration::from_secs(60);

/// The step program: `interval.py LOG TAG NEED HOLD GATE` appends `start
/// <time> TAG` to LOG, waits until LOG has NEED starts and (GATE not "-")
/// the file GATE exists, sleeps HOLD seconds and appends `end <time> TAG`.
const INTERVAL_PY: &str = r#"import os, sys, time
log, tag, need, hold, gate = sys.argv[1:6]
def note(what):
    with open(log, "a") as f:
        f.write(f"{what} {time.time():.6f} {tag}\n")
def starts():
    with open(log) as f:
        return sum(1 for l in f if l.startswith("start "))
note("start")
deadline = time.time() + 60
while starts() < int(need) or (gate != "-" and not os.path.exists(gate)):
    if time.time() > deadline:
        sys.exit(f"{tag}: gave up waiting")
    time.sleep(0.02)
time.sleep(float(hold))
note("end")
print(f"{tag} done", flush=True)
"#;

/// A master (workers `example-worker` and `second-worker`, both running)
/// with `locks`, the builders of `builders` and a force scheduler `go`
/// for them; `USER` may force and stop. (Fields drop in order: the
/// daemons before their directories.)
struct Locked {
    workers: Vec<Proc>,
    master: Proc,
    s: Setup,
}

/// One step of [`Locked`]'s builders.
struct Step<'a> {
    name: &'a str,
    /// Its intervals go to `<tmp>/<log>.log`.
    log: &'a str,
    need: usize,
    hold: f64,
    /// A file in the temp dir the step waits for before it ends.
    gate: Option<&'a str>,
    /// The TOML list inside `locks = [...]`.
    locks: &'a str,
}

impl<'a> Step<'a> {
    fn new(name: &'a str, log: &'a str) -> Step<'a> {
        Step {
            name,
            log,
            need: 1,
            hold: 0.0,
            gate: None,
            locks: "",
        }
    }
}

/// One builder of [`Locked`]: name, workers, its `locks` list (TOML), steps.
type BuilderSpec<'a> = (&'a str, &'a [&'a str], &'a str, Vec<Step<'a>>);

impl Locked {
    /// `locks`: the `[[locks]]` tables (TOML); `max_builds` of each worker.
    fn start(locks: &str, builders: &[BuilderSpec], max_builds: u32) -> Locked {
        let s = Setup::new(PASSING_TEST, "");
        let script = s.tmp.path().join("interval.py");
        std::fs::write(&script, INTERVAL_PY).unwrap();
        let tmp = s.tmp.path().to_path_buf();
        let names: Vec<String> = builders.iter().map(|b| format!("{:?}", b.0)).collect();
        let mut cfg = format!(
            "{locks}\n[[schedulers]]\nname = \"go\"\ntype = \"force\"\nbuilders = [{}]\n",
            names.join(", ")
        );
        for (name, workers, locks, steps) in builders {
            let workers: Vec<String> = workers.iter().map(|w| format!("{w:?}")).collect();
            cfg.push_str(&format!(
                "[[builders]]\nname = \"{name}\"\nworkers = [{}]\ncollapse_requests = false\nlocks = [{locks}]\n",
                workers.join(", ")
            ));
            for st in steps {
                let gate = st.gate.map_or("-".to_string(), |g| path(&tmp.join(g)));
                cfg.push_str(&format!(
                    "[[builders.steps]]\ntype = \"shell\"\nname = \"{}\"\nlocks = [{}]\n\
                     command = [\"/usr/bin/python3\", \"{}\", \"{}\", \"%(prop:buildername)s#%(prop:buildnumber)s\", \"{}\", \"{}\", \"{}\"]\n",
                    st.name,
                    st.locks,
                    path(&script),
                    path(&tmp.join(format!("{}.log", st.log))),
                    st.need,
                    st.hold,
                    gate
                ));
            }
        }
        s.edit_cfg(|t| {
            let mut t = t + &cfg;
            for (w, pw) in [("example-worker", WORKER_PW), ("second-worker", WORKER2_PW)] {
                let at = format!("name = \"{w}\"\npassword = \"{pw}\"\n");
                t = t.replace(&at, &format!("{at}max_builds = {max_builds}\n"));
            }
            t
        });
        let master = s.start_master();
        add_user(&s.master, USER, PASSWORD);
        let (w1, w2) = s.start_two_workers();
        Locked {
            workers: vec![w1, w2],
            master,
            s,
        }
    }

    /// Forces builder `name`; returns the request id.
    fn force(&self, name: &str) -> i64 {
        force(&self.s, "go", json!({"builderNames": [name]}))
    }

    /// Waits for request `brid`'s build to finish and checks it passed;
    /// returns the build.
    fn passes(&self, brid: i64) -> serde_json::Value {
        let b = self.s.wait_build(self.s.wait_build_of(brid), MIN);
        assert_eq!(b["results"], 0, "{b}");
        b
    }

    /// (start, end) of each step that logged to `<log>.log`, by its tag
    /// (`builder#number`), in the order they started.
    fn intervals(&self, log: &str) -> Vec<(String, f64, f64)> {
        let text = std::fs::read_to_string(self.s.tmp.path().join(format!("{log}.log"))).unwrap();
        let mut out: Vec<(String, f64, Option<f64>)> = vec![];
        for line in text.lines() {
            let mut parts = line.split(' ');
            let (what, t, tag) = (parts.next(), parts.next(), parts.next());
            let t: f64 = t.and_then(|t| t.parse().ok()).expect(line);
            let tag = tag.expect(line).to_string();
            match what {
                Some("start") => out.push((tag, t, None)),
                Some("end") => {
                    let i = out.iter().position(|(g, _, _)| *g == tag).expect(line);
                    out[i].2 = Some(t);
                }
                _ => panic!("{line}"),
            }
        }
        out.into_iter()
            .map(|(g, s, e)| {
                let e = e.unwrap_or_else(|| panic!("{g} never ended: {text}"));
                (g, s, e)
            })
            .collect()
    }

    /// Creates the gate file `name`.
    fn open(&self, name: &str) {
        std::fs::write(self.s.tmp.path().join(name), "").unwrap();
    }

    fn page(&self, path: &str) -> String {
        let (code, body) = curl(&[&self.s.url(path)]);
        assert_eq!(code, 200, "GET {path}: {body}");
        body
    }

    /// The lock rows the database holds for build `buildid`.
    fn rows_of(&self, buildid: i64) -> i64 {
        db_query::<i64>(
            &self.s.master,
            &format!("SELECT count(*) FROM build_locks WHERE buildid = {buildid}"),
        )[0]
    }
}

fn path(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// Reports how long each lock stood free between two holders that never
/// overlap (one step's end to the next one's start, as the steps saw it):
/// a measurement, printed with the test's output, not a bound.
fn report_handoffs(what: &str, iv: &[(String, f64, f64)]) {
    let mut iv = iv.to_vec();
    iv.sort_by(|a, b| a.1.total_cmp(&b.1));
    let gaps: Vec<String> = iv
        .windows(2)
        .map(|w| format!("{:.0} ms", (w[1].1 - w[0].2) * 1000.0))
        .collect();
    eprintln!("{what}: from one holder's end to the next one's start: {gaps:?}");
}

/// The most intervals that overlap at any moment.
fn max_overlap(iv: &[(String, f64, f64)]) -> usize {
    let mut ev: Vec<(f64, i32)> = iv
        .iter()
        .flat_map(|(_, s, e)| [(*s, 1), (*e, -1)])
        .collect();
    // An end at the moment of a start comes first: touching is no overlap.
    ev.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut now, mut most) = (0, 0);
    for (_, d) in ev {
        now += d;
        most = most.max(now);
    }
    most as usize
}

const BOTH: &[&str] = &["example-worker", "second-worker"];
const DEPLOY: &str = "[[locks]]\nname = \"deploy\"\n";

#[test]
fn two_builders_sharing_an_exclusive_master_lock_never_overlap() {
    let step = || Step {
        hold: 0.3,
        ..Step::new("deploy", "deploy")
    };
    let lock = "{ name = \"deploy\", access = \"exclusive\" }";
    let t = Locked::start(
        DEPLOY,
        &[
            ("d1", BOTH, lock, vec![step()]),
            ("d2", BOTH, lock, vec![step()]),
        ],
        2,
    );
    // Two of each: without the lock up to four would run at once (two
    // workers, two builds each, one per builder per worker).
    let reqs: Vec<i64> = ["d1", "d2", "d1", "d2"]
        .iter()
        .map(|b| t.force(b))
        .collect();
    for r in reqs {
        t.passes(r);
    }
    let iv = t.intervals("deploy");
    assert_eq!(iv.len(), 4, "{iv:?}");
    assert_eq!(max_overlap(&iv), 1, "deploys overlapped: {iv:?}");
    report_handoffs("builder lock", &iv);
    assert_eq!(
        db_query::<i64>(&t.s.master, "SELECT count(*) FROM build_locks")[0],
        0,
        "every lock is given back"
    );
}

#[test]
fn a_counting_lock_admits_exactly_max_count() {
    // Each step waits until two have started: two must run together.
    let step = || Step {
        need: 2,
        hold: 0.5,
        ..Step::new("work", "pool")
    };
    let lock = "{ name = \"pool\", access = \"counting\" }";
    let t = Locked::start(
        "[[locks]]\nname = \"pool\"\nmax_count = 2\n",
        &[
            ("c1", &["example-worker"], lock, vec![step()]),
            ("c2", &["example-worker"], lock, vec![step()]),
            ("c3", &["example-worker"], lock, vec![step()]),
        ],
        3,
    );
    let reqs: Vec<i64> = ["c1", "c2", "c3"].iter().map(|b| t.force(b)).collect();
    for r in reqs {
        t.passes(r);
    }
    let iv = t.intervals("pool");
    assert_eq!(iv.len(), 3, "{iv:?}");
    assert_eq!(max_overlap(&iv), 2, "max_count = 2: {iv:?}");
}

#[test]
fn a_worker_lock_is_counted_per_worker() {
    let lock = "{ name = \"cpu\" }";
    let alone = || Step {
        hold: 0.5,
        ..Step::new("heavy", "cpu")
    };
    // q1, on the other worker, waits until another heavy step has started:
    // it can only pass if a build on example-worker runs beside it.
    let beside = Step {
        need: 2,
        hold: 0.5,
        ..Step::new("heavy", "cpu")
    };
    let t = Locked::start(
        "[[locks]]\nname = \"cpu\"\nkind = \"worker\"\n",
        &[
            ("p1", &["example-worker"], lock, vec![alone()]),
            ("p2", &["example-worker"], lock, vec![alone()]),
            ("q1", &["second-worker"], lock, vec![beside]),
        ],
        2,
    );
    let reqs: Vec<i64> = ["p1", "p2", "q1"].iter().map(|b| t.force(b)).collect();
    for r in reqs {
        t.passes(r);
    }
    let iv = t.intervals("cpu");
    let on_first: Vec<_> = iv
        .iter()
        .filter(|i| i.0.starts_with('p'))
        .cloned()
        .collect();
    assert_eq!(on_first.len(), 2, "{iv:?}");
    assert_eq!(max_overlap(&on_first), 1, "one worker, one holder: {iv:?}");
    assert_eq!(max_overlap(&iv), 2, "two workers, two holders: {iv:?}");
}

#[test]
fn a_step_lock_is_held_for_its_step_and_the_wait_is_shown() {
    // The first steps meet (they must overlap); the locked steps are
    // kept apart, the first to get the lock held behind a gate.
    let steps = |gate: &'static str| {
        vec![
            Step {
                need: 2,
                ..Step::new("prepare", "free")
            },
            Step {
                gate: Some(gate),
                locks: "{ name = \"db\" }",
                hold: 0.2,
                ..Step::new("migrate", "db")
            },
        ]
    };
    let t = Locked::start(
        "[[locks]]\nname = \"db\"\n",
        &[
            ("s1", &["example-worker"], "", steps("gate-s1")),
            ("s2", &["second-worker"], "", steps("gate-s2")),
        ],
        1,
    );
    let b1 = t.s.wait_build_of(t.force("s1"));
    let b2 = t.s.wait_build_of(t.force("s2"));
    // One of them holds db (behind its gate); the other waits and says so.
    let (waiter, state) = wait_for("a build waiting for lock db", MIN, || {
        [b1, b2].into_iter().find_map(|b| {
            let v = get_json(&t.s.url(&format!("/api/v2/builds/{b}")));
            let st = v["builds"][0]["state_string"].as_str()?.to_string();
            st.starts_with("waiting for lock db").then_some((b, st))
        })
    });
    let (holder, holder_name, gate) = if waiter == b1 {
        (b2, "s2", "gate-s2")
    } else {
        (b1, "s1", "gate-s1")
    };
    // The wait is timed from here: at least 1.2 s before the lock is
    // given back, so the API's whole seconds show it.
    let waiting_since = std::time::Instant::now();
    assert_eq!(
        state,
        format!("waiting for lock db, held by {holder_name} #1")
    );
    // The build page says it too.
    let waiter_name = if waiter == b1 { "s1" } else { "s2" };
    let page = t.page(&format!("/builders/{waiter_name}/builds/1"));
    assert!(
        page.contains(&format!("waiting for lock db, held by {holder_name} #1")),
        "{page}"
    );
    assert_eq!(t.rows_of(holder), 1);
    assert_eq!(t.rows_of(waiter), 0, "a waiting step holds nothing");
    let page = t.page(&format!("/builders/{holder_name}/builds/1"));
    assert!(
        page.contains("holds <span class=\"lock\">lock db (exclusive, this step)</span>"),
        "{page}"
    );
    let long_enough = waiting_since + Duration::from_millis(1200);
    while std::time::Instant::now() < long_enough {
        std::thread::sleep(Duration::from_millis(50));
    }
    t.open(gate);
    t.open(if gate == "gate-s1" {
        "gate-s2"
    } else {
        "gate-s1"
    });
    for b in [b1, b2] {
        assert_eq!(t.s.wait_build(b, MIN)["results"], 0);
    }
    // Buildbot's locks_duration_s: the waiter's wait, none for the holder.
    let waited = |b: i64| {
        get_json(&t.s.url(&format!("/api/v2/builds/{b}")))["builds"][0]["locks_duration_s"]
            .as_i64()
            .expect("locks_duration_s")
    };
    assert!(waited(waiter) >= 1, "{}", waited(waiter));
    assert_eq!(waited(holder), 0);
    assert_eq!(
        max_overlap(&t.intervals("free")),
        2,
        "the builds ran side by side"
    );
    let db = t.intervals("db");
    assert_eq!(db.len(), 2, "{db:?}");
    assert_eq!(max_overlap(&db), 1, "the locked steps did not: {db:?}");
    report_handoffs("step lock", &db);
}

/// A master where `hold` (on example-worker, its step behind gate `hold`)
/// and `next` (on second-worker) take the exclusive master lock `deploy`
/// for the whole build; `hold` is running and holds it, `next` is queued
/// and takes no worker: `other`, asked for after it on second-worker
/// without a lock, has run meanwhile. Returns (the master, hold's build,
/// next's request).
fn held() -> (Locked, i64, i64) {
    let lock = "{ name = \"deploy\" }";
    let t = Locked::start(
        DEPLOY,
        &[
            (
                "hold",
                &["example-worker"],
                lock,
                vec![Step {
                    gate: Some("hold"),
                    ..Step::new("hold", "hold")
                }],
            ),
            (
                "next",
                &["second-worker"],
                lock,
                vec![Step::new("next", "next")],
            ),
            (
                "other",
                &["second-worker"],
                "",
                vec![Step::new("other", "other")],
            ),
        ],
        1,
    );
    let hold = t.s.wait_build_of(t.force("hold"));
    assert_eq!(t.rows_of(hold), 1);
    let next = t.force("next");
    // The botmaster takes the older request first: had `next` been
    // started, `other` would wait for second-worker.
    t.passes(t.force("other"));
    let builds_of_next: Vec<i64> = db_query(
        &t.s.master,
        &format!("SELECT count(*) FROM builds WHERE buildrequestid = {next}"),
    );
    assert_eq!(builds_of_next, [0], "next waits for the lock");
    (t, hold, next)
}

#[test]
fn a_request_waiting_for_a_lock_says_which_and_who_holds_it() {
    let (t, hold, next) = held();
    let expected = "lock deploy, held by hold <a href=\"/builders/hold/builds/1\">#1</a>";
    let page = t.page(&format!("/buildrequests/{next}"));
    assert!(
        page.contains(&format!("Queued, waiting for {expected}.")),
        "{page}"
    );
    let queue = t.page("/buildrequests");
    assert!(queue.contains(expected), "{queue}");
    // The holder's page says what it holds.
    let page = t.page("/builders/hold/builds/1");
    assert!(
        page.contains("holds <span class=\"lock\">lock deploy (exclusive)</span>"),
        "{page}"
    );
    t.open("hold");
    assert_eq!(t.s.wait_build(hold, MIN)["results"], 0);
    t.passes(next);
}

#[test]
fn a_stop_gives_the_lock_back() {
    let (t, hold, next) = held();
    let (code, v) = rpc(
        &t.s.url(&format!("/api/v2/builds/{hold}")),
        Some(&basic()),
        "stop",
        json!({"reason": "not now"}),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(t.s.wait_build(hold, MIN)["results"], 6, "CANCELLED");
    t.passes(next);
    assert_eq!(t.rows_of(hold), 0);
}

#[test]
fn a_killed_worker_gives_the_lock_back() {
    let (mut t, hold, next) = held();
    // kill -9 the worker running `hold`: its build ends RETRY and the
    // lock goes with it.
    t.workers[0].signal(libc::SIGKILL);
    t.workers[0].wait_exit(MIN);
    assert_eq!(t.s.wait_build(hold, MIN)["results"], 5, "RETRY");
    t.passes(next);
    assert_eq!(t.rows_of(hold), 0);
}

#[test]
fn a_master_restart_gives_back_the_locks_of_builds_that_no_longer_run() {
    let (mut t, hold, _next) = held();
    t.master.signal(libc::SIGKILL);
    t.master.wait_exit(MIN);
    assert_eq!(t.rows_of(hold), 1, "kill -9 left the row behind");
    t.master = t.s.start_master();
    assert_eq!(t.s.wait_build(hold, MIN)["results"], 5, "RETRY");
    assert_eq!(t.rows_of(hold), 0);
}

#[test]
fn a_reconfig_keeps_a_held_lock_and_one_that_removes_it_frees_its_takers() {
    let (t, hold, next) = held();
    let dir = t.s.master.to_str().unwrap();
    let waiting = "Queued, waiting for lock deploy, held by hold";
    // A reconfig that keeps the lock: it stays held, next still waits.
    t.s.edit_cfg(|c| c.replace("title = \"e2e\"", "title = \"e2e again\""));
    assert!(run_ok(MINIBOT, &["reconfig", dir]).contains("reconfig: done"));
    assert!(t.page(&format!("/buildrequests/{next}")).contains(waiting));
    assert_eq!(t.rows_of(hold), 1);
    // Removed from the config (and from both builders): the builder that
    // waited for it no longer takes it and starts; the running holder
    // keeps its row until it ends.
    t.s.edit_cfg(|c| {
        c.replace(DEPLOY, "")
            .replace("locks = [{ name = \"deploy\" }]\n", "locks = []\n")
    });
    assert!(run_ok(MINIBOT, &["reconfig", dir]).contains("reconfig: done"));
    t.passes(next);
    assert_eq!(t.rows_of(hold), 1, "held until its build ends");
    t.open("hold");
    assert_eq!(t.s.wait_build(hold, MIN)["results"], 0);
    assert_eq!(t.rows_of(hold), 0);
}

#[test]
fn a_request_waiting_for_a_lock_a_step_holds_starts_when_that_step_ends() {
    let t = Locked::start(
        DEPLOY,
        &[
            (
                "h",
                &["example-worker"],
                "",
                vec![
                    Step {
                        gate: Some("g1"),
                        locks: "{ name = \"deploy\" }",
                        ..Step::new("first", "h")
                    },
                    Step {
                        gate: Some("g2"),
                        ..Step::new("second", "h")
                    },
                ],
            ),
            (
                "n",
                &["second-worker"],
                "{ name = \"deploy\" }",
                vec![Step::new("n", "n")],
            ),
        ],
        1,
    );
    let h = t.s.wait_build_of(t.force("h"));
    wait_for("h's first step to hold the lock", MIN, || {
        (t.rows_of(h) == 1).then_some(())
    });
    let n = t.force("n");
    let page = t.page(&format!("/buildrequests/{n}"));
    assert!(
        page.contains("Queued, waiting for lock deploy, held by h <a"),
        "{page}"
    );
    // The step ends (the build goes on, behind g2): its worker connection
    // tells the botmaster, and n starts while h still runs.
    t.open("g1");
    t.passes(n);
    assert_eq!(t.rows_of(h), 0, "the second step holds nothing");
    let b = get_json(&t.s.url(&format!("/api/v2/builds/{h}")));
    assert_eq!(b["builds"][0]["complete"], false, "{b}");
    t.open("g2");
    assert_eq!(t.s.wait_build(h, MIN)["results"], 0);
}
