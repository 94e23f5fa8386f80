//! Hostile-neighbour tests: logins (issue 14 items 5, 6, 10). A neighbour
//! on the host can connect from any address in 127.0.0.0/8 (curl's
//! `--interface`, `minibot::sys::connect_from` for the worker port), and
//! every tunnel user arrives from 127.0.0.1. Each test prints the figures
//! it measured.

use crate::common::*;
use minibot::protocol::{self, ToWorker};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The N-th loopback address an attacker rotates through (never
/// 127.0.0.1, where the owner is): 127.0.0.2 … 127.0.0.254, then again.
fn attacker_ip(n: usize) -> String {
    format!("127.0.0.{}", 2 + n % 253)
}

/// The status of a GET of `path` from `ip` with `-u user:password`.
fn basic_from(s: &Setup, ip: &str, user_pw: &str, path: &str) -> u16 {
    curl(&["--interface", ip, "-m", "20", "-u", user_pw, &s.url(path)]).0
}

/// Logs in through the form (the CSRF cookie dance) from 127.0.0.1;
/// returns the status and the cookie jar.
fn form_login(s: &Setup, user: &str, password: &str) -> (u16, String) {
    let jar = s
        .tmp
        .path()
        .join(unique_name("jar"))
        .to_string_lossy()
        .into_owned();
    let (_, page) = curl(&["-c", &jar, "-b", &jar, &s.url("/login")]);
    let at = page.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    let token = page[at..].split('"').next().unwrap_or_default().to_string();
    let (code, _) = curl(&[
        "-c",
        &jar,
        "-b",
        &jar,
        "--data-urlencode",
        &format!("username={user}"),
        "--data-urlencode",
        &format!("password={password}"),
        "--data-urlencode",
        &format!("csrf={token}"),
        &s.url("/login"),
    ]);
    (code, jar)
}

/// Status codes seen by an attack, by code.
#[derive(Default, Debug)]
struct Tally(BTreeMap<u16, u32>);

impl Tally {
    fn total(&self) -> u32 {
        self.0.values().sum()
    }
    fn of(&self, code: u16) -> u32 {
        self.0.get(&code).copied().unwrap_or(0)
    }
}

/// `threads` clients sending `attempt(n)` (the n-th attempt overall) until
/// `secs` have passed or `stop` is set; the tally of what came back.
fn attack(
    threads: usize,
    secs: f64,
    attempt: impl Fn(usize) -> u16 + Send + Sync + 'static,
) -> (Tally, Duration) {
    let attempt = Arc::new(attempt);
    let tally = Arc::new(Mutex::new(Tally::default()));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t = Instant::now();
    let deadline = t + Duration::from_secs_f64(secs);
    let hs: Vec<_> = (0..threads)
        .map(|_| {
            let (attempt, tally, next) = (attempt.clone(), tally.clone(), next.clone());
            std::thread::spawn(move || {
                while Instant::now() < deadline {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    let code = attempt(n);
                    *tally.lock().unwrap().0.entry(code).or_insert(0) += 1;
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let took = t.elapsed();
    let tally = std::mem::take(&mut *tally.lock().unwrap());
    (tally, took)
}

/// Time to a 200 for the owner, who retries every 100 ms for up to 5 s.
fn owner_gets_in(what: &str, mut get: impl FnMut() -> u16) -> Duration {
    let t = Instant::now();
    wait_for(what, Duration::from_secs(5), || {
        let ok = get() == 200;
        if !ok {
            std::thread::sleep(Duration::from_millis(100));
        }
        ok.then_some(())
    });
    t.elapsed()
}

#[test]
fn rotating_addresses_get_few_guesses_and_the_owner_gets_in() {
    // Bounds how fast the master answers: alone, not beside the whole suite.
    let _alone = run_alone();
    let s = Setup::new(PASSING_TEST, "");
    add_user(&s.master, USER, PASSWORD);
    add_user(&s.master, "bob", "bobs-password");
    let _master = s.start_master();
    // The owner has a session and a script whose Basic auth has worked.
    let (code, jar) = form_login(&s, USER, PASSWORD);
    assert_eq!(code, 303);
    assert_eq!(
        basic_from(&s, "127.0.0.1", &basic(), "/api/v2/builders"),
        200
    );

    // Guesses at alice's password from 127.0.0.2, .3, … while the owner
    // works: her session, her script, and bob (never logged in before)
    // from 127.0.0.1.
    let stop = Arc::new(AtomicBool::new(false));
    let owner = std::thread::spawn({
        let (www, jar) = (s.www(), jar.clone());
        let url = move |p: &str| format!("http://127.0.0.1:{www}{p}");
        let stop = stop.clone();
        move || {
            std::thread::sleep(Duration::from_millis(1500));
            let session = owner_gets_in("the owner's session", || {
                curl(&["-m", "20", "-b", &jar, &url("/api/v2/builders")]).0
            });
            let script = owner_gets_in("the owner's Basic auth", || {
                curl(&["-m", "20", "-u", &basic(), &url("/api/v2/builders")]).0
            });
            let bob = owner_gets_in("bob's first Basic auth", || {
                curl(&[
                    "-m",
                    "20",
                    "-u",
                    "bob:bobs-password",
                    &url("/api/v2/builders"),
                ])
                .0
            });
            stop.store(true, Ordering::SeqCst);
            (session, script, bob)
        }
    });
    let www = s.www();
    let (one_name, took) = attack(4, 5.0, move |n| {
        let ip = attacker_ip(n);
        let up = format!("{USER}:guess-{n}");
        let url = format!("http://127.0.0.1:{www}/api/v2/builders");
        curl(&["--interface", &ip, "-m", "20", "-u", &up, &url]).0
    });
    let (session, script, bob) = owner.join().unwrap();
    assert!(stop.load(Ordering::SeqCst));
    let secs = took.as_secs_f64();
    eprintln!(
        "rotating 127.0.0.0/8 at {USER:?}: {} attempts in {secs:.1} s ({:.0}/s), {} checked (401), {} refused (429) {:?}",
        one_name.total(),
        one_name.total() as f64 / secs,
        one_name.of(401),
        one_name.of(429),
        one_name.0
    );
    eprintln!(
        "during it, 200 for: the owner's session after {session:?}, her Basic auth after {script:?}, bob's first login after {bob:?}"
    );
    assert_eq!(one_name.total(), one_name.of(401) + one_name.of(429));
    // 3 free failures, then waits of 1, 2, 4 s: at most ~6 in 5 s.
    assert!(one_name.of(401) <= 7, "{one_name:?}");
    assert!(one_name.total() >= 20, "the attack ran: {one_name:?}");

    // Rotating names as well (password spraying): the global budget (5,
    // then 1/s) bounds the checks; the owner still gets in.
    let (spray, took) = attack(4, 5.0, move |n| {
        let ip = attacker_ip(n);
        let up = format!("user{n}:Password1");
        let url = format!("http://127.0.0.1:{www}/api/v2/builders");
        curl(&["--interface", &ip, "-m", "20", "-u", &up, &url]).0
    });
    let secs = took.as_secs_f64();
    eprintln!(
        "rotating 127.0.0.0/8 and names: {} attempts in {secs:.1} s ({:.0}/s), {} checked (401), {} refused (429)",
        spray.total(),
        spray.total() as f64 / secs,
        spray.of(401),
        spray.of(429)
    );
    assert_eq!(spray.total(), spray.of(401) + spray.of(429));
    assert!(f64::from(spray.of(401)) <= 5.0 + secs + 2.0, "{spray:?}");
    let t = owner_gets_in("the owner's Basic auth after the spray", || {
        basic_from(&s, "127.0.0.1", &basic(), "/api/v2/builders")
    });
    assert!(t < Duration::from_secs(3));
}

#[test]
fn five_failures_from_the_tunnel_address_lock_nobody_out() {
    let s = Setup::new(PASSING_TEST, "");
    add_user(&s.master, USER, PASSWORD);
    add_user(&s.master, "bob", "bobs-password");
    let _master = s.start_master();
    let (code, bob_jar) = form_login(&s, "bob", "bobs-password");
    assert_eq!(code, 303);
    // Someone behind the same tunnel guesses at alice, five times.
    let codes: Vec<u16> = (0..5)
        .map(|i| {
            basic_from(
                &s,
                "127.0.0.1",
                &format!("{USER}:wrong-{i}"),
                "/api/v2/builders",
            )
        })
        .collect();
    assert!(codes.iter().all(|c| [401, 429].contains(c)), "{codes:?}");
    // Bob: his session, his password by Basic auth (never checked before)
    // and the login form, all from 127.0.0.1.
    let (code, _) = curl(&["-b", &bob_jar, &s.url("/api/v2/builders")]);
    assert_eq!(code, 200);
    assert_eq!(
        basic_from(&s, "127.0.0.1", "bob:bobs-password", "/api/v2/builders"),
        200
    );
    assert_eq!(form_login(&s, "bob", "bobs-password").0, 303);
    // Alice herself, who never logged in: her name waits a few seconds
    // (the guesses were at her), not the five minutes of the old limit.
    let t = Instant::now();
    wait_for("alice let in", Duration::from_secs(30), || {
        std::thread::sleep(Duration::from_millis(250));
        (basic_from(&s, "127.0.0.1", &basic(), "/api/v2/builders") == 200).then_some(())
    });
    eprintln!(
        "after 5 bad logins from 127.0.0.1 ({codes:?}): bob's session, Basic auth and form 200/200/303 at once; alice let in after {:?}",
        t.elapsed()
    );
}

/// One worker-port login from `from`; the master's answer as raw frame
/// bytes and decoded.
fn worker_login(wport: u16, from: &str, name: &str, password: &str) -> (Vec<u8>, ToWorker) {
    let local: IpAddr = from.parse().expect("an address");
    let remote = SocketAddr::from(([127, 0, 0, 1], wport));
    let mut stream =
        minibot::sys::connect_from(local, remote).expect("connecting to the worker port");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("a read timeout");
    let hello: ToWorker = protocol::read_frame(&mut stream)
        .expect("reading hello")
        .expect("a hello");
    let ToWorker::Hello { nonce, .. } = hello else {
        panic!("expected Hello, got {hello:?}")
    };
    send_worker_auth(&mut stream, &nonce, name, password);
    use std::io::Read;
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).expect("an answer");
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).expect("the answer's body");
    let msg = serde_json::from_slice(&body).expect("a ToWorker");
    let mut raw = len.to_vec();
    raw.extend_from_slice(&body);
    (raw, msg)
}

#[test]
fn worker_refusals_are_identical_and_guessing_is_limited() {
    let s = Setup::new(PASSING_TEST, "");
    let _master = s.start_master();
    let mut real = s.start_worker("example-worker", WORKER_PW);
    s.wait_connected("example-worker");

    // The same bytes for an unknown name, a wrong password, and the right
    // password of a worker already connected (each from a fresh address,
    // so no limit is involved yet) …
    let (unknown, m) = worker_login(s.wport(), "127.0.0.20", "no-such-worker", WORKER_PW);
    assert!(matches!(m, ToWorker::Refused { .. }), "{m:?}");
    let (wrong, _) = worker_login(s.wport(), "127.0.0.21", "second-worker", "not-it");
    let (connected, _) = worker_login(s.wport(), "127.0.0.22", "example-worker", WORKER_PW);
    assert_eq!(unknown, wrong);
    assert_eq!(unknown, connected);

    // … and during a flood of guesses at second-worker from rotating
    // addresses, whose answers are all those bytes too.
    let wport = s.wport();
    let refused = unknown.clone();
    let odd = Arc::new(Mutex::new(Vec::new()));
    let probe_stop = Arc::new(AtomicBool::new(false));
    // Probes: the right password from a fresh address every 250 ms. Each
    // one let in is a check the attacker could have had.
    let probes = std::thread::spawn({
        let stop = probe_stop.clone();
        move || {
            let (mut tried, mut let_in) = (0, 0);
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(250));
                n += 1;
                tried += 1;
                let from = format!("127.0.1.{n}");
                if matches!(
                    worker_login(wport, &from, "second-worker", WORKER2_PW).1,
                    ToWorker::Welcome { .. }
                ) {
                    let_in += 1;
                }
            }
            (tried, let_in)
        }
    });
    let (flood, took) = attack(4, 5.0, {
        let odd = odd.clone();
        move |n| {
            let (raw, m) = worker_login(wport, &attacker_ip(n), "second-worker", &format!("g{n}"));
            if raw != refused {
                odd.lock().unwrap().push(m);
            }
            0
        }
    });
    probe_stop.store(true, Ordering::SeqCst);
    let (tried, let_in) = probes.join().unwrap();
    let secs = took.as_secs_f64();
    eprintln!(
        "worker port, rotating 127.0.0.0/8 at \"second-worker\": {} guesses in {secs:.1} s ({:.0}/s), all answered with the same {} bytes; right-password probes from fresh addresses during it: {let_in} of {tried} let in",
        flood.total(),
        flood.total() as f64 / secs,
        unknown.len()
    );
    assert!(odd.lock().unwrap().is_empty(), "{:?}", odd.lock().unwrap());
    assert!(flood.total() >= 20, "the flood ran");
    // The name waits 1, 2, 4 s after its free failures: the probes, like
    // the attacker, get few checks.
    assert!(let_in <= 2, "{let_in} of {tried} probes let in");

    // A guess flood at a connected worker's name does not keep it out: it
    // reconnects (from its known address) while the flood goes on.
    drop(real);
    let flood_on = std::thread::spawn({
        move || {
            attack(2, 8.0, move |n| {
                worker_login(wport, &attacker_ip(n), "example-worker", "guess");
                0
            })
        }
    });
    std::thread::sleep(Duration::from_secs(2));
    let t = Instant::now();
    real = s.start_worker("example-worker", WORKER_PW);
    s.wait_connected("example-worker");
    let back = t.elapsed();
    let (f2, _) = flood_on.join().unwrap();
    eprintln!(
        "example-worker restarted during {} guesses at its name: connected after {back:?}",
        f2.total()
    );
    drop(real);
}

#[test]
fn argon2_memory_is_given_back() {
    let s = Setup::new(PASSING_TEST, "");
    // 200 users with one hash, written straight into the database: 200
    // logins that each need an Argon2 check (first login of each).
    let phc = minibot::master::auth::hash_password("right-password").expect("hashing");
    {
        let db = s.master.join("state.sqlite");
        let conn = minibot::db::open_admin(&db).expect("the database");
        for i in 0..200 {
            minibot::db::add_user(&conn, &format!("u{i}"), &phc).expect("a user");
        }
    }
    let master = s.start_master();
    let pid = master.pid();
    let rss = || -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("RssAnon:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("RssAnon")
    };
    let www = s.www();
    let get = move |up: &str| -> u16 {
        let url = format!("http://127.0.0.1:{www}/api/v2/builders");
        curl(&["-m", "30", "-u", up, &url]).0
    };
    // Warm up every HTTP thread (and one check) before calling it idle.
    for _ in 0..8 {
        get("u199:wrong");
        curl(&[&s.url("/api/v2/builders")]);
    }
    std::thread::sleep(Duration::from_secs(2));
    let idle = rss();
    let settle = |what: &str, after: u64| {
        let t = Instant::now();
        let mut last = after;
        let ok = wait_for_ok(Duration::from_secs(5), || {
            last = rss();
            last <= idle + 1024
        });
        eprintln!(
            "RssAnon {what}: idle {idle} kB, just after {after} kB, {last} kB after {:?}",
            t.elapsed()
        );
        assert!(ok, "{what}: RssAnon {last} kB, idle {idle} kB");
    };

    // 100 failed logins, one after the other (most refused by the limits
    // without a check; the rest checked) …
    let mut checked = 0;
    for i in 0..100 {
        if get(&format!("u{}:wrong", i % 7)) == 401 {
            checked += 1;
        }
    }
    eprintln!("100 failed logins: {checked} checked");
    settle("after 100 failed logins", rss());
    // … 100 right ones (each a check), one after the other (first logins
    // wait, 429, while the failures above have the global budget spent) …
    let mut peak = 0;
    for i in 0..100 {
        wait_for("a first login", Duration::from_secs(30), || {
            let code = get(&format!("u{i}:right-password"));
            assert!([200, 429].contains(&code), "u{i}: {code}");
            if code == 429 {
                std::thread::sleep(Duration::from_millis(200));
            }
            (code == 200).then_some(())
        });
        peak = peak.max(rss());
    }
    eprintln!("100 checked logins one after the other: peak RssAnon seen {peak} kB");
    settle("after 100 checked logins, sequential", rss());
    // … and 100 more, 4 at a time (429 when the checks are busy: retried).
    let hs: Vec<_> = (0..4)
        .map(|k| {
            std::thread::spawn(move || {
                let (mut busy, mut peak) = (0, 0);
                for i in (100 + k..200).step_by(4) {
                    loop {
                        match get(&format!("u{i}:right-password")) {
                            200 => break,
                            429 => busy += 1,
                            c => panic!("u{i}: {c}"),
                        }
                    }
                    peak = peak.max(rss_of(pid));
                }
                (busy, peak)
            })
        })
        .collect();
    let res: Vec<(u32, u64)> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    let peak = res.iter().map(|r| r.1).max().unwrap_or(0);
    eprintln!(
        "100 checked logins 4 at a time: {} answered 429 (busy) and retried; peak RssAnon seen {peak} kB",
        res.iter().map(|r| r.0).sum::<u32>()
    );
    settle("after 100 checked logins, 4 in parallel", rss());
}

/// RssAnon of `pid` in kB (0 if unreadable).
fn rss_of(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("RssAnon:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Polls `f` until true or the deadline; whether it became true.
fn wait_for_ok(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn failed_logins_do_not_flood_the_log() {
    let s = Setup::new(PASSING_TEST, "");
    add_user(&s.master, USER, PASSWORD);
    let _master = s.start_master();
    // The log's size under a flood is the subject here (product output).
    let lines = || {
        s.master_log()
            .lines()
            .filter(|l| l.contains("login"))
            .count()
    };
    let before = lines();
    // 50 from one address, then 50 from 50 addresses.
    for i in 0..50 {
        basic_from(
            &s,
            "127.0.0.1",
            &format!("{USER}:wrong{i}"),
            "/api/v2/builders",
        );
    }
    let one = lines() - before;
    for i in 0..50 {
        basic_from(
            &s,
            &attacker_ip(i),
            &format!("{USER}:wrong{i}"),
            "/api/v2/builders",
        );
    }
    let many = lines() - before - one;
    // And 50 worker logins with wrong passwords from 50 addresses.
    for i in 0..50 {
        worker_login(s.wport(), &attacker_ip(i), "example-worker", "wrong");
    }
    let workers = lines() - before - one - many;
    eprintln!(
        "log lines about failed logins: {one} for 50 from one address, {many} for 50 from 50 addresses, {workers} for 50 worker logins from 50 addresses"
    );
    assert!(one <= 2, "{one}");
    assert!(many <= 11, "{many}");
    assert!(workers <= 11, "{workers}");
}

#[test]
fn a_spray_of_made_up_worker_names_keeps_no_worker_out() {
    // Bounds how fast the master answers: alone, not beside the whole suite.
    let _alone = run_alone();
    let s = Setup::new(PASSING_TEST, "");
    let master = s.start_master();
    let rss_before = rss_of(master.pid());
    let wport = s.wport();
    // Made-up names from rotating addresses: they can never get in, so
    // they spend no budget a real worker would need.
    let flood = std::thread::spawn(move || {
        attack(4, 6.0, move |n| {
            worker_login(wport, &attacker_ip(n), &format!("w{n}"), "guess");
            0
        })
    });
    std::thread::sleep(Duration::from_millis(1500));
    // A worker that never connected before (no known address) gets in.
    let t = Instant::now();
    let _w = s.start_worker("second-worker", WORKER2_PW);
    s.wait_connected("second-worker");
    let took = t.elapsed();
    let (f, secs) = flood.join().unwrap();
    eprintln!(
        "second-worker (never connected before) connected after {took:?} during {} made-up-name logins in {:.1} s ({:.0}/s); master RssAnon {rss_before} kB before, {} kB after",
        f.total(),
        secs.as_secs_f64(),
        f.total() as f64 / secs.as_secs_f64(),
        rss_of(master.pid())
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    // status.json counts the guesses under one counter, whatever names
    // they made up: it names only configured workers, so a spray of names
    // cannot grow it (or the master's memory for it).
    let guesses = f.total() as u64;
    let st = s.wait_status("every made-up name counted", |st| {
        // (A guess dropped in a handshake flood is counted there instead.)
        let counted = st.worker_logins_refused_unknown_name + st.worker_connections_dropped;
        (counted >= guesses).then(|| st.clone())
    });
    let configured = ["example-worker", "second-worker"];
    assert!(
        st.worker_logins_refused
            .keys()
            .all(|k| configured.contains(&k.as_str())),
        "{:?}",
        st.worker_logins_refused.keys()
    );
    let size = std::fs::metadata(s.master.join("status.json"))
        .unwrap()
        .len();
    assert!(
        size < 2048,
        "status.json is {size} bytes after {guesses} guesses"
    );
}

#[test]
fn worker_guesses_across_names_spend_a_global_budget() {
    let mut extra = String::new();
    for i in 3..=11 {
        extra.push_str(&format!(
            "[[workers]]\nname = \"w{i}\"\npassword = \"p{i}\"\n"
        ));
    }
    let s = Setup::new(PASSING_TEST, &extra);
    let _master = s.start_master();
    // Two guesses at each of eight real names, each from its own address:
    // no name reaches its free failures, no address its limit …
    let mut n = 0;
    for i in 3..=10 {
        for g in 0..2 {
            n += 1;
            let (_, m) = worker_login(
                s.wport(),
                &format!("127.0.2.{n}"),
                &format!("w{i}"),
                &format!("g{g}"),
            );
            assert!(matches!(m, ToWorker::Refused { .. }), "{m:?}");
        }
    }
    // … but together they have spent the master's budget: the right
    // password of a ninth name, from a fresh address, waits for it.
    let t = Instant::now();
    let (_, first) = worker_login(s.wport(), "127.0.3.1", "w11", "p11");
    assert!(matches!(first, ToWorker::Refused { .. }), "{first:?}");
    let mut tries = 1;
    wait_for("w11 let in", Duration::from_secs(10), || {
        std::thread::sleep(Duration::from_millis(100));
        tries += 1;
        let (_, m) = worker_login(s.wport(), &format!("127.0.3.{tries}"), "w11", "p11");
        matches!(m, ToWorker::Welcome { .. }).then_some(())
    });
    eprintln!(
        "16 guesses over 8 worker names from 16 addresses; then w11's right password refused until the global budget refilled: let in after {:?} ({tries} tries)",
        t.elapsed()
    );
}
