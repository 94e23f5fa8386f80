//! Latency of the busiest reads with a long history: 10,000 builds (with
//! their buildsets, requests, steps and logs) inserted with SQL into a real
//! `state.sqlite`, then `GET /api/v2/builds?limit=50` and `GET /` timed
//! against the real master over plain HTTP/1.1.
//!
//! Every `cargo test` runs it as a check (3 s in a debug build): with that
//! history each page answers 200 and the API counts every build. Nothing
//! is timed against a limit; the figures it prints are a measurement, to
//! read from a release build:
//!
//! ```sh
//! cargo test --release --test tests web_latency -- --nocapture
//! ```

use crate::common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const BUILDS: i64 = 10_000;
const BUILDERS: [&str; 5] = ["runtests", "linux", "macos", "docs", "release"];

fn fill(db: &std::path::Path) {
    let mut conn = rusqlite::Connection::open(db).unwrap();
    let tx = conn.transaction().unwrap();
    for (i, b) in BUILDERS.iter().enumerate() {
        tx.execute(
            "INSERT OR IGNORE INTO builders(builderid, name) VALUES (?1, ?2)",
            rusqlite::params![i as i64 + 1, b],
        )
        .unwrap();
    }
    tx.execute(
        "INSERT OR IGNORE INTO workers(workerid, name) VALUES (1, 'example-worker')",
        [],
    )
    .unwrap();
    let props = r#"{"branch":["master","Build"],"buildername":["runtests","Builder"],"owner":["alice","Force Build Form"],"repository":["https://git.example.org/isabell/hello-world.git","Build"],"revision":["0123456789abcdef0123456789abcdef01234567","Build"]}"#;
    // Recent builds (one a minute up to now): older than the janitor's
    // horizon, they would be pruned while the test reads them.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let t0 = now - (BUILDS + 1) * 60;
    for id in 1..=BUILDS {
        let builderid = (id - 1) % BUILDERS.len() as i64 + 1;
        let number = (id - 1) / BUILDERS.len() as i64 + 1;
        let at = t0 + id * 60;
        tx.execute(
            "INSERT INTO buildsets(buildsetid, reason, submitted_at, complete, complete_at, results,
               branch, revision, repository) VALUES (?1, 'The all scheduler got a change', ?2, 1, ?3, 0,
               'master', '0123456789abcdef0123456789abcdef01234567', 'https://git.example.org/r.git')",
            rusqlite::params![id, at, at + 30],
        )
        .unwrap();
        tx.execute(
            "INSERT INTO buildrequests(buildrequestid, buildsetid, builderid, claimed_at, complete,
               results, submitted_at, complete_at) VALUES (?1, ?1, ?2, ?3, 1, ?4, ?3, ?5)",
            rusqlite::params![id, builderid, at, id % 7 % 3, at + 30],
        )
        .unwrap();
        tx.execute(
            "INSERT INTO builds(buildid, number, builderid, buildrequestid, workerid, started_at,
               complete_at, state_string, results, properties)
             VALUES (?1, ?2, ?3, ?1, 1, ?4, ?5, 'build successful', ?6, ?7)",
            rusqlite::params![id, number, builderid, at, at + 30, id % 7 % 3, props],
        )
        .unwrap();
        for step in 0..2 {
            let stepid = id * 2 + step;
            tx.execute(
                "INSERT INTO steps(stepid, buildid, number, name, started_at, complete_at,
                   state_string, results) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?4, 0)",
                rusqlite::params![
                    stepid,
                    id,
                    step,
                    ["git", "test"][step as usize],
                    at,
                    at + 15
                ],
            )
            .unwrap();
            tx.execute(
                "INSERT INTO logs(logid, stepid, name, slug, complete, num_lines)
                 VALUES (?1, ?1, 'stdio', 'stdio', 1, 40)",
                rusqlite::params![stepid],
            )
            .unwrap();
        }
    }
    tx.commit().unwrap();
}

/// One GET over a fresh connection, as a browser's first request; returns
/// the time to the last byte.
fn get(port: u16, path: &str) -> Duration {
    let t = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = Vec::new();
    s.read_to_end(&mut body).unwrap();
    let took = t.elapsed();
    assert!(body.starts_with(b"HTTP/1.1 200"), "{path}");
    took
}

fn percentiles(port: u16, path: &str) -> (Duration, Duration, usize) {
    let size = {
        let (_, body) = curl(&[&format!("http://127.0.0.1:{port}{path}")]);
        body.len()
    };
    for _ in 0..20 {
        get(port, path);
    }
    let mut t: Vec<Duration> = (0..200).map(|_| get(port, path)).collect();
    t.sort();
    (t[t.len() / 2], t[t.len() * 9 / 10], size)
}

#[test]
fn p50_of_builds_api_and_home_page_with_10000_builds() {
    let s = Setup::new(PASSING_TEST, "");
    // All five builders configured, so the home page lists them all.
    s.edit_cfg(|mut t| {
        for b in &BUILDERS[1..] {
            t += &format!(
                "[[builders]]\nname = \"{b}\"\nworkers = [\"example-worker\"]\n\
                 [[builders.steps]]\ntype = \"shell\"\ncommand = \"true\"\n"
            );
        }
        t
    });
    fill(&s.master.join("state.sqlite"));
    let _master = s.start_master();
    let total = get_json(&s.url("/api/v2/builds?limit=1"))["meta"]["total"].clone();
    assert_eq!(total, BUILDS);
    for path in [
        "/api/v2/builds?limit=50",
        "/",
        "/builders/linux",
        "/builders/linux/builds/1000",
    ] {
        let (p50, p90, size) = percentiles(s.www(), path);
        println!(
            "{path}: p50 {:.2} ms, p90 {:.2} ms ({size} bytes, {BUILDS} builds, 200 requests)",
            p50.as_secs_f64() * 1000.0,
            p90.as_secs_f64() * 1000.0
        );
    }
}
