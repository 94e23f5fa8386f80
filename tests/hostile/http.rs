//! Hostile-neighbour tests: the HTTP port itself (`src/web/http_server.rs`).
//! Header floods, idle and slow connections, slow bodies, clients that
//! stop reading, response splitting through `next`, DNS rebinding, on the
//! TCP port and the unix socket. Each prints what it measured.

use crate::common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One field of `/proc/PID/status`, in kB (or a count for `Threads`).
fn status_field(pid: i32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn rss_kb(pid: i32) -> u64 {
    status_field(pid, "VmRSS")
}

fn threads(pid: i32) -> u64 {
    status_field(pid, "Threads")
}

/// The master's threads serving a request (named `http-request`).
fn request_threads(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .flatten()
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.trim() == "http-request")
                })
                .count()
        })
        .unwrap_or(0)
}

/// Sends `request` on a fresh connection and reads the answer to the end
/// (`Connection: close`): (status, whole answer, time taken).
fn raw(port: u16, request: &[u8]) -> (u16, String, Duration) {
    let t = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    (status_of(&text), text, t.elapsed())
}

fn status_of(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn get(port: u16, path: &str) -> (u16, String, Duration) {
    raw(
        port,
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
}

/// A signed Gitea push, timed (curl, as Gitea's own client would post it).
fn signed_hook(s: &Setup, n: usize) -> (u16, Duration) {
    let body = push_payload(&format!("{n:040x}"), "master", "under attack");
    let f = s.tmp.path().join(format!("hook-{n}.json"));
    std::fs::write(&f, &body).unwrap();
    let t = Instant::now();
    let (code, _) = post_gitea(
        &s.url("/change_hook/gitea"),
        "push",
        &f,
        Some(&sign(SECRET, &body)),
    );
    (code, t.elapsed())
}

/// A header line that never ends: answered 431 after 8 KiB, and many of
/// them at once do not grow the master (tiny_http buffered it whole: 439 MB).
#[test]
fn header_without_crlf_is_refused_and_memory_stays_bounded() {
    let s = Setup::new(PASSING_TEST, "");
    let master = s.start_master();
    let pid = master.pid();
    let idle = rss_kb(pid);
    let port = s.www();
    let peak = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..16)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
                let _ = s.write_all(b"GET / HTTP/1.1\r\nX-Flood: ");
                let junk = vec![b'a'; 64 * 1024];
                let mut sent = 0usize;
                // Up to 16 MB each, until the master closes the connection.
                while sent < 16 << 20 {
                    if s.write_all(&junk).is_err() {
                        break;
                    }
                    sent += junk.len();
                }
                let mut out = Vec::new();
                let _ = s.read_to_end(&mut out);
                (status_of(&String::from_utf8_lossy(&out)), sent)
            })
        })
        .collect();
    let sampler = {
        let peak = peak.clone();
        std::thread::spawn(move || {
            for _ in 0..50 {
                peak.fetch_max(rss_kb(pid) as usize, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let results: Vec<(u16, usize)> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    sampler.join().unwrap();
    let peak = peak.load(Ordering::SeqCst) as u64;
    let max_sent = results.iter().map(|r| r.1).max().unwrap_or(0);
    println!(
        "header flood: 16 connections, each cut off after at most {max_sent} bytes sent, answers {:?}; \
         master RSS idle {idle} kB, peak {peak} kB",
        results.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    assert!(
        results.iter().all(|r| r.0 == 431 || r.0 == 0),
        "{results:?}"
    );
    assert!(results.iter().any(|r| r.0 == 431), "{results:?}");
    assert!(peak < idle + 16 * 1024, "RSS grew from {idle} to {peak} kB");
    // One long request line: 414. A head of many short lines over 64 KiB: 431.
    let long = format!(
        "GET /{} HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "a".repeat(9000)
    );
    assert_eq!(raw(port, long.as_bytes()).0, 414);
    let many = format!(
        "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{}\r\n",
        "X-A: aaaaaaaaaaaaaaaaaaaaaaaa\r\n".repeat(90)
    );
    assert_eq!(raw(port, many.as_bytes()).0, 200);
    let too_many = format!(
        "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{}\r\n",
        "X-A: a\r\n".repeat(200)
    );
    assert_eq!(raw(port, too_many.as_bytes()).0, 431);
    let big = format!(
        "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{}\r\n",
        format!("X-B: {}\r\n", "b".repeat(8000)).repeat(9)
    );
    assert_eq!(raw(port, big.as_bytes()).0, 431);
    // The master still serves.
    assert_eq!(get(port, "/").0, 200);
}

/// An attacker keeping 200 idle connections open, 40 slow heads trickling
/// in and a header flood: a signed hook and `/` are still answered within
/// 1 s, the master stays under 64 MB and its thread count under its cap,
/// and when the attack ends, threads and connections go back to idle.
#[test]
fn idle_and_slow_connections_do_not_stall_hooks_or_pages() {
    // Bounds how fast the master answers: alone, not beside the whole suite.
    let _alone = run_alone();
    let s = Setup::new(PASSING_TEST, "");
    let master = s.start_master();
    let pid = master.pid();
    let port = s.www();
    // Warm up (reader connections, page code), then take the idle figures.
    assert_eq!(get(port, "/").0, 200);
    assert_eq!(signed_hook(&s, 0).0, 200);
    std::thread::sleep(Duration::from_millis(300));
    let (idle_rss, idle_threads) = (rss_kb(pid), threads(pid));

    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicUsize::new(0));
    // 200 idle connections, each reopened when the master closes it.
    let idle = {
        let (stop, opened) = (stop.clone(), opened.clone());
        std::thread::spawn(move || {
            let connect = || {
                let c = TcpStream::connect(("127.0.0.1", port)).ok()?;
                c.set_nonblocking(true).ok()?;
                opened.fetch_add(1, Ordering::SeqCst);
                Some(c)
            };
            let mut held: Vec<Option<TcpStream>> = (0..200).map(|_| connect()).collect();
            while !stop.load(Ordering::SeqCst) {
                for c in held.iter_mut() {
                    let mut b = [0u8; 1];
                    let open = match c.as_ref().map(|s| s.peek(&mut b)) {
                        Some(Ok(0)) | None => false,
                        Some(Ok(_)) => true,
                        Some(Err(e)) => e.kind() == std::io::ErrorKind::WouldBlock,
                    };
                    if !open {
                        *c = connect();
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    // 40 slow heads: a byte each every 200 ms, reconnecting when cut off.
    let slow = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let connect = || {
                let mut c = TcpStream::connect(("127.0.0.1", port)).ok()?;
                c.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                    .ok()?;
                Some(c)
            };
            let mut conns: Vec<Option<TcpStream>> = (0..40).map(|_| connect()).collect();
            while !stop.load(Ordering::SeqCst) {
                for c in conns.iter_mut() {
                    let alive = c.as_mut().is_some_and(|s| s.write_all(b"a").is_ok());
                    if !alive {
                        *c = connect();
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    // A header flood: endless header lines on new connections.
    let flood = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let junk = vec![b'z'; 32 * 1024];
            while !stop.load(Ordering::SeqCst) {
                if let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) {
                    let _ = c.set_write_timeout(Some(Duration::from_secs(2)));
                    let _ = c.write_all(b"GET / HTTP/1.1\r\nX-Flood: ");
                    for _ in 0..8 {
                        if c.write_all(&junk).is_err() {
                            break;
                        }
                    }
                }
            }
        })
    };
    wait_for("200 attack connections", Duration::from_secs(20), || {
        (opened.load(Ordering::SeqCst) >= 200).then_some(())
    });
    let mut worst_hook = Duration::ZERO;
    let mut worst_page = Duration::ZERO;
    let mut peak_rss = 0;
    let mut peak_threads = 0;
    for n in 1..=10 {
        let (code, t) = signed_hook(&s, n);
        assert_eq!(code, 200, "signed hook under attack");
        worst_hook = worst_hook.max(t);
        let (code, _, t) = get(port, "/");
        assert_eq!(code, 200, "/ under attack");
        worst_page = worst_page.max(t);
        peak_rss = peak_rss.max(rss_kb(pid));
        peak_threads = peak_threads.max(threads(pid));
        std::thread::sleep(Duration::from_millis(100));
    }
    let attack_conns = opened.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    for t in [idle, slow, flood] {
        t.join().unwrap();
    }
    println!(
        "under attack ({attack_conns} idle connections opened, 40 slow heads, a header flood): \
         signed hook worst {worst_hook:?}, / worst {worst_page:?}; master RSS idle {idle_rss} kB, \
         peak {peak_rss} kB; threads idle {idle_threads}, peak {peak_threads}"
    );
    assert!(
        worst_hook < Duration::from_secs(1),
        "hook took {worst_hook:?}"
    );
    assert!(worst_page < Duration::from_secs(1), "/ took {worst_page:?}");
    assert!(peak_rss < 64 * 1024, "RSS {peak_rss} kB");
    // The default cap is 32 connections; displaced ones end quickly.
    assert!(
        peak_threads <= idle_threads + 2 * 32,
        "threads {idle_threads} → {peak_threads}"
    );
    let settled = wait_for("threads back to idle", Duration::from_secs(30), || {
        let t = threads(pid);
        (t <= idle_threads).then_some(t)
    });
    println!(
        "after the attack: threads {settled} (idle {idle_threads}), RSS {} kB",
        rss_kb(pid)
    );
}

/// POSTs that send one body byte and stop, and keep-alive connections that
/// send nothing: closed after their deadlines, and meanwhile pages are
/// served (four of them used to stall the 4-thread pool for 150 s).
#[test]
fn slow_bodies_are_cut_off_and_do_not_stall_pages() {
    // Bounds how fast the master answers: alone, not beside the whole suite.
    let _alone = run_alone();
    let s = Setup::new(PASSING_TEST, "");
    let _master = s.start_master();
    let port = s.www();
    let started = Instant::now();
    let slow: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
            c.write_all(
                b"POST /change_hook/gitea HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                  Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{",
            )
            .unwrap();
            c
        })
        .collect();
    let (code, _, t) = get(port, "/");
    assert_eq!(code, 200);
    assert!(
        t < Duration::from_secs(1),
        "/ took {t:?} with 8 slow bodies"
    );
    // Each is closed by the master within the body deadline (10 s + length
    // at 256 KiB/s) and a little.
    let mut closed_after = vec![];
    for mut c in slow {
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        closed_after.push(started.elapsed());
    }
    let last = closed_after.iter().max().copied().unwrap_or_default();
    println!("8 slow bodies: / answered in {t:?} meanwhile; the last was closed after {last:?}");
    assert!(last < Duration::from_secs(15), "{closed_after:?}");
    assert!(last >= Duration::from_secs(9), "{closed_after:?}");
}

/// Clients that ask for a large raw log and never read it: dropped after
/// the write timeout, and pages are served meanwhile.
#[test]
fn clients_that_stop_reading_a_large_log_are_dropped() {
    // Bounds how fast the master answers: alone, not beside the whole suite.
    let _alone = run_alone();
    // A test step that prints 8 MB.
    let s = Setup::new(
        "import sys\nsys.stdout.write(('x' * 999 + '\\n') * 8000)\n",
        "",
    );
    let master = s.start_master();
    let pid = master.pid();
    let _worker = s.start_worker("example-worker", WORKER_PW);
    s.wait_connected("example-worker");
    s.push(&s.head, "master", "big log");
    let builds = s.wait_builds(1, Duration::from_secs(60));
    let buildid = builds[0]["buildid"].as_i64().unwrap();
    let steps = get_json(&s.url(&format!("/api/v2/builds/{buildid}/steps")));
    let step = steps["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|st| st["name"] == "test")
        .unwrap()
        .clone();
    let logs = get_json(&s.url(&format!("/api/v2/steps/{}/logs", step["stepid"])));
    let logid = logs["logs"][0]["logid"].as_i64().unwrap();
    let port = s.www();
    let idle_threads = threads(pid);
    let started = Instant::now();
    let stuck: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
            // Never read: the 8 MB answer fills the socket buffers and the
            // master's writes block.
            c.write_all(
                format!("GET /api/v2/logs/{logid}/raw HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                    .as_bytes(),
            )
            .unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let (code, _, t) = get(port, "/");
    assert_eq!(code, 200);
    assert!(t < Duration::from_secs(1), "/ took {t:?}");
    let during = threads(pid);
    let dropped = wait_for(
        "the non-reading clients to be dropped",
        Duration::from_secs(40),
        || (threads(pid) <= idle_threads).then(|| started.elapsed()),
    );
    println!(
        "8 clients not reading an 8 MB raw log: / answered in {t:?}; master threads {idle_threads} → \
         {during} → {idle_threads} after {dropped:?}"
    );
    assert!(during > idle_threads, "the log downloads never started");
    drop(stuck);
}

/// Response splitting: CR, LF, tab and NUL in the login form's `next`
/// never reach the `Location` header; the owner lands on `/`.
#[test]
fn control_characters_in_next_do_not_reach_a_header() {
    let s = Setup::new(PASSING_TEST, "");
    add_user(&s.master, USER, PASSWORD);
    let _master = s.start_master();
    for (what, next) in [
        ("CR LF", "/%0D%0ASet-Cookie:%20minibot_session=attacker"),
        ("LF", "/%0ASet-Cookie:%20minibot_session=attacker"),
        ("tab", "/a%09b"),
        ("NUL", "/a%00b"),
        ("plain", "/builders"),
    ] {
        let jar = s.tmp.path().join(format!("jar-{}", what.replace(' ', "")));
        let jar = jar.to_str().unwrap();
        let page = curl(&["-c", jar, &s.url(&format!("/login?next={next}"))]);
        assert_eq!(page.0, 200, "{what}: {}", page.1);
        let token = page
            .1
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .expect("csrf field")
            .to_string();
        let form = format!("username={USER}&password={PASSWORD}&csrf={token}&next={next}");
        let head = curl_headers(&["-b", jar, "--data", &form, &s.url("/login")]);
        let location = head
            .lines()
            .find_map(|l| {
                l.strip_prefix("Location: ")
                    .or(l.strip_prefix("location: "))
            })
            .unwrap_or("")
            .trim()
            .to_string();
        let cookies: Vec<&str> = head
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
            .collect();
        println!(
            "next with {what}: Location {location:?}, {} cookies",
            cookies.len()
        );
        assert!(
            !cookies.iter().any(|c| c.contains("attacker")),
            "{what}: {head}"
        );
        if what == "plain" {
            assert_eq!(location, "/builders");
        } else {
            assert_eq!(location, "/", "{what}: {head}");
        }
    }
}

/// DNS rebinding: a page whose name now points at 127.0.0.1 sends its own
/// name as `Host`: 421 for pages and the API; localhost names on any port
/// are served; the signed hooks take any Host.
#[test]
fn foreign_host_is_misdirected() {
    let s = Setup::new(PASSING_TEST, "");
    let cfg = std::fs::read_to_string(s.master.join("master.cfg")).unwrap();
    let cfg = cfg.replacen(
        "title = \"e2e\"\n",
        "title = \"e2e\"\nbuildbot_url = \"http://ci.example.org/\"\n",
        1,
    );
    std::fs::write(s.master.join("master.cfg"), cfg).unwrap();
    let _master = s.start_master();
    let port = s.www();
    let with_host = |path: &str, host: &str| {
        raw(
            port,
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .0
    };
    let mut seen = vec![];
    for (host, want) in [
        ("evil.example", 421),
        ("evil.example:12345", 421),
        ("127.0.0.2", 421),
        ("localhost.evil.example", 421),
        ("localhost:9999", 200),
        ("127.0.0.1:1", 200),
        ("[::1]:8010", 200),
        ("ci.example.org", 200),
    ] {
        for path in ["/", "/api/v2/builders"] {
            let got = with_host(path, host);
            seen.push(format!("{host}{path}={got}"));
            assert_eq!(got, want, "Host {host} {path}");
        }
    }
    println!("Host check: {}", seen.join(", "));
    // The signed hook is not a page: no 421 for a foreign Host.
    let body = push_payload(&s.head, "master", "x");
    let sig = sign(SECRET, &body);
    let mut req = format!(
        "POST /change_hook/gitea HTTP/1.1\r\nHost: evil.example\r\nContent-Type: application/json\r\n\
         X-Gitea-Event: push\r\nX-Gitea-Signature: {sig}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    assert_eq!(raw(port, &req).0, 200);
}

/// Keep-alive works (requests one after another on one connection, and
/// again once it has been idle), an idle kept-alive connection holds no
/// thread once the request thread's short wait for a next request
/// (`KEEPALIVE_LINGER`) is over, chunked uploads are refused with 411, and
/// an oversized Content-Length is 413 before reading.
#[test]
fn keep_alive_and_body_framing() {
    let s = Setup::new(PASSING_TEST, "");
    let master = s.start_master();
    let pid = master.pid();
    let port = s.www();
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let request = b"GET /api/v2/builders HTTP/1.1\r\nHost: localhost\r\n\r\n";
    for round in 0..5 {
        if round == 3 {
            // Idle: the connection is back with reception, and no thread
            // waits on it.
            wait_for(
                "the idle connection's thread gone",
                Duration::from_secs(10),
                || (request_threads(pid) == 0).then_some(()),
            );
        }
        if round == 4 {
            // Part of a head at once after an answer, then a pause: the
            // part goes back to reception with the connection, and no
            // thread waits for the rest.
            c.write_all(&request[..20]).unwrap();
            wait_for(
                "the thread of a connection with half a head gone",
                Duration::from_secs(10),
                || (request_threads(pid) == 0).then_some(()),
            );
            c.write_all(&request[20..]).unwrap();
        } else {
            c.write_all(request).unwrap();
        }
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            c.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_string();
        assert_eq!(status_of(&head), 200);
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let mut body = vec![0u8; len];
        c.read_exact(&mut body).unwrap();
    }
    let chunked = b"POST /change_hook/gitea HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n";
    assert_eq!(raw(port, chunked).0, 411);
    let huge = b"POST /api/v2/forceschedulers/x HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n";
    assert_eq!(raw(port, huge).0, 413);
    let bad = b"POST /change_hook/gitea HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello";
    assert_eq!(raw(port, bad).0, 400);
}

/// The unix socket gets the same bounds as the TCP port.
#[test]
fn unix_socket_has_the_same_bounds() {
    // Bounds how fast the master answers: alone, not beside the whole suite.
    let _alone = run_alone();
    let s = Setup::new(PASSING_TEST, "");
    let cfg = std::fs::read_to_string(s.master.join("master.cfg")).unwrap();
    let cfg = cfg.replace("[www]\nport = 0\n", "[www]\nunix_socket = \"www.sock\"\n");
    std::fs::write(s.master.join("master.cfg"), cfg).unwrap();
    let (_master, line) = start_daemon(
        MINIBOT,
        &["start", "--nodaemon", s.master.to_str().unwrap()],
        "master",
    );
    assert!(line.contains("www.sock"), "{line}");
    let sock = s.master.join("www.sock");
    let ask = |req: &[u8]| {
        let mut c = UnixStream::connect(&sock).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let _ = c.write_all(req);
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        status_of(&String::from_utf8_lossy(&out))
    };
    let flood = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(20_000));
    assert_eq!(ask(flood.as_bytes()), 431);
    assert_eq!(
        ask(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
        200
    );
    assert_eq!(
        ask(b"GET / HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n"),
        421
    );
    // Idle connections on the socket are displaced too.
    let idle: Vec<UnixStream> = (0..100)
        .filter_map(|_| UnixStream::connect(&sock).ok())
        .collect();
    let t = Instant::now();
    assert_eq!(
        ask(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
        200
    );
    println!(
        "unix socket: 431 for a 20 kB header line, 421 for a foreign Host, / in {:?} with {} idle connections",
        t.elapsed(),
        idle.len()
    );
    assert!(t.elapsed() < Duration::from_secs(1));
}

/// A shared host's per-user process limit: the master runs as another user
/// (`nobody`) under `prlimit --nproc=48`, below what 2 × its cap of
/// request threads would need. 300 requests at once whose bodies never
/// come: the ones it cannot start a thread for get a 503, it never aborts (tiny_http panicked in
/// `thread::spawn`: SIGABRT after 184 idle connections under 150), and
/// it serves again when they are gone. Needs root (to switch user:
/// RLIMIT_NPROC does not bind root); elsewhere it says it is skipped.
#[test]
fn process_limit_gives_503s_not_a_crash() {
    // SAFETY: geteuid(2) has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !require(
        "root (to run the master as nobody under prlimit --nproc)",
        root,
    ) {
        return;
    }
    if !require(
        "setpriv and prlimit",
        Command::new("setpriv").arg("--version").output().is_ok()
            && Command::new("prlimit").arg("--version").output().is_ok(),
    ) {
        return;
    }
    let s = Setup::new(PASSING_TEST, "");
    // A copy nobody can run wherever the checkout is (CI's may be private).
    let bin = s.tmp.path().join("minibot");
    std::fs::copy(MINIBOT, &bin).unwrap();
    let chown = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(s.tmp.path())
        .status()
        .unwrap();
    assert!(chown.success());
    let master_dir = s.master.to_str().unwrap().to_string();
    let mut child = Command::new("prlimit")
        .args(["--nproc=48:48", "--"])
        .args([
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ])
        .arg(&bin)
        .args(["start", "--nodaemon", &master_dir])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    let mut master = Proc {
        child,
        name: "master".into(),
    };
    assert!(line.contains("serving"), "ready line: {line:?}");
    let port = s.www();
    assert_eq!(get(port, "/").0, 200);
    // Whole heads whose bodies never come: each needs a thread, and
    // 2 × the cap of 32 is more than the limit allows.
    let conns: Vec<TcpStream> = (0..300)
        .filter_map(|_| {
            let mut c = TcpStream::connect(("127.0.0.1", port)).ok()?;
            c.write_all(
                b"POST /change_hook/gitea HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\n",
            )
            .ok()?;
            c.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
            Some(c)
        })
        .collect();
    let mut busy = 0;
    for mut c in conns.iter() {
        let mut buf = [0u8; 64];
        if let Ok(n) = c.read(&mut buf) {
            if String::from_utf8_lossy(&buf[..n]).contains(" 503 ") {
                busy += 1;
            }
        }
    }
    let threads_peak = threads(master.pid());
    assert!(
        master.child.try_wait().unwrap().is_none(),
        "the master died under the process limit"
    );
    drop(conns);
    let code = wait_for("/ after the flood", Duration::from_secs(30), || {
        let (code, _, _) = get(port, "/");
        (code == 200).then_some(code)
    });
    println!(
        "nproc 48: 300 requests waiting for their bodies at once, {busy} answered 503, master \
         threads peaked at {threads_peak}, alive, / → {code} afterwards"
    );
    master.signal(libc::SIGTERM);
    assert_eq!(master.wait_exit(Duration::from_secs(20)), Some(0));
}
