//! gzip-compressed answers (issue 17 point 7), with the real curl and a
//! raw request: pages, CSS, JavaScript, the JSON API and the raw log
//! stream are gzip for a client that sends `Accept-Encoding: gzip` and
//! identity for one that does not (or refuses gzip with `q=0`); every such
//! answer says `Vary: Accept-Encoding`; the log download, gzip by itself,
//! is not compressed twice. Prints the sizes both ways.

use crate::common::*;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

/// A test that prints 400 lines (the raw log is worth compressing).
const CHATTY_TEST: &str =
    "for i in range(400):\n    print('line', i, 'of a log that compresses well')\nprint('OK')\n";

/// One GET over a new connection, as written here: no `Accept-Encoding`
/// unless given. Returns the head (lower case) and the body as sent.
fn raw_get(port: u16, path: &str, extra: &str) -> (String, Vec<u8>) {
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut all = Vec::new();
    c.read_to_end(&mut all).unwrap();
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a whole head");
    let head = String::from_utf8_lossy(&all[..end]).to_ascii_lowercase();
    (head, all[end + 4..].to_vec())
}

/// curl's head (lower case) and body of `url`, with `args`, the body saved
/// to `out`.
fn curl_to(out: &Path, url: &str, args: &[&str]) -> (String, Vec<u8>) {
    let mut full = vec!["-s", "-D", "-", "-o", out.to_str().unwrap()];
    full.extend_from_slice(args);
    full.push(url);
    let head = run_ok("curl", &full).to_ascii_lowercase();
    (head, std::fs::read(out).unwrap())
}

fn gunzip(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b)
        .read_to_end(&mut out)
        .expect("a gzip body");
    out
}

#[test]
fn answers_are_gzip_only_for_clients_that_take_it() {
    let s = Setup::new(CHATTY_TEST, "");
    let _master = s.start_master();
    let _worker = s.start_worker("example-worker", WORKER_PW);
    s.wait_connected("example-worker");
    s.push(&s.head, "master", "gzip");
    let b = s.wait_builds(1, Duration::from_secs(60));
    let buildid = b[0]["buildid"].as_i64().unwrap();
    let logid = s.step_logid(buildid, "test");

    let www = s.www();
    let f = s.tmp.path().join("body");
    let paths = [
        "/".to_string(),
        "/assets/minibot.css".to_string(),
        "/assets/minibot.js".to_string(),
        "/assets/log.css".to_string(),
        "/assets/log.js".to_string(),
        "/assets/request.js".to_string(),
        "/assets/logpage.js".to_string(),
        format!("/builders/runtests/builds/{}", b[0]["number"]),
        format!("/logs/{logid}"),
        format!("/api/v2/logs/{logid}/raw"),
    ];
    for p in &paths {
        let url = s.url(p);
        // Identity: a raw request without Accept-Encoding, and curl
        // without --compressed (it sends none either).
        let (head, raw) = raw_get(www, p, "");
        assert!(head.starts_with("http/1.1 200"), "{p}: {head}");
        assert!(!head.contains("content-encoding"), "{p}: {head}");
        assert!(head.contains("vary: accept-encoding"), "{p}: {head}");
        let (head, plain) = curl_to(&f, &url, &[]);
        assert!(!head.contains("content-encoding"), "{p}: {head}");
        // gzip as sent (curl does not decode without --compressed).
        let (head, zipped) = curl_to(&f, &url, &["-H", "Accept-Encoding: gzip"]);
        assert!(head.contains("content-encoding: gzip"), "{p}: {head}");
        assert!(head.contains("vary: accept-encoding"), "{p}: {head}");
        let unzipped = gunzip(&zipped);
        // Decoded by curl --compressed: the same text.
        let (head, decoded) = curl_to(&f, &url, &["--compressed"]);
        assert!(head.contains("content-encoding: gzip"), "{p}: {head}");
        let page = *p == "/" || p.starts_with("/builders/") || p.starts_with("/logs/");
        if !page {
            // Pages with times on them may differ from one answer to the
            // next; these do not.
            assert_eq!(decoded, unzipped, "{p}");
            assert_eq!(plain, unzipped, "{p}");
            if !p.ends_with("/raw") {
                // (The raw log is sent chunked, framing and all.)
                assert_eq!(raw, plain, "{p}");
            }
        } else {
            for text in [&unzipped, &decoded, &plain] {
                assert!(String::from_utf8_lossy(text).ends_with("</html>\n"), "{p}");
            }
        }
        assert!(
            zipped.len() * 2 < plain.len(),
            "{p}: {} -> {}",
            plain.len(),
            zipped.len()
        );
        eprintln!(
            "{p}: {} bytes identity, {} bytes gzip ({:.0} %)",
            plain.len(),
            zipped.len(),
            100.0 * zipped.len() as f64 / plain.len() as f64
        );
    }

    // A small answer (the build's steps: JSON under 1,000 bytes) is sent
    // as it is, gzip accepted or not: it fits one segment either way.
    let steps = format!("/api/v2/builds/{buildid}/steps");
    let (head, small) = raw_get(www, &steps, "Accept-Encoding: gzip\r\n");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!head.contains("content-encoding"), "{head}");
    assert!(head.contains("vary: accept-encoding"), "{head}");
    assert!(
        small.len() < 1000 && small.starts_with(b"{"),
        "{}",
        small.len()
    );

    // Refusing gzip, or naming only other codings: identity. `*` takes it.
    for (ae, gz) in [
        ("gzip;q=0", false),
        ("br, deflate", false),
        ("identity", false),
        ("br;q=1, GZIP;q=0.5", true),
        ("*", true),
        ("*;q=0", false),
        ("gzip;q=0, *", false),
    ] {
        let (head, _) = raw_get(
            www,
            "/assets/minibot.css",
            &format!("Accept-Encoding: {ae}\r\n"),
        );
        assert_eq!(head.contains("content-encoding: gzip"), gz, "{ae}: {head}");
    }
    // HEAD: the headers of the gzip GET, no body.
    let (head, _) = curl_to(
        &f,
        &s.url("/assets/minibot.js"),
        &["-I", "-H", "Accept-Encoding: gzip"],
    );
    let (_, zipped) = curl_to(
        &f,
        &s.url("/assets/minibot.js"),
        &["-H", "Accept-Encoding: gzip"],
    );
    assert!(
        head.contains(&format!("content-length: {}", zipped.len())),
        "{head}"
    );

    // The download is gzip by itself: not compressed again, no Vary.
    let (head, dl) = curl_to(
        &f,
        &s.url(&format!("/logs/{logid}/download")),
        &["-H", "Accept-Encoding: gzip"],
    );
    assert!(head.contains("content-type: application/gzip"), "{head}");
    assert!(!head.contains("content-encoding"), "{head}");
    let text = String::from_utf8(gunzip(&dl)).unwrap();
    assert!(text.contains("line 399 of a log"), "{text}");
}
