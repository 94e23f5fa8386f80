//! Live overview pages in a real browser (issue 17 point 1): headless
//! Chromium (the `common::browser` harness) keeps the home, builder,
//! workers, queue and changes pages open while builds start and finish,
//! a worker leaves, a request queues and a change arrives, and checks that
//! each page shows it without a reload (a marker on `window` survives),
//! that a finished build loses its "running" badge and its clock, that the
//! page shows "reconnecting" while the master is down and reloads whole
//! once a restarted master answers. Also: every overview page renders its
//! content without JavaScript and weighs under 20 KB with its CSS and JS.

use crate::common::browser::*;
use crate::common::*;
use serde_json::json;
use std::path::Path;
use std::time::Duration;
use tungstenite::Message;

/// Forces the gated builder over JSON-RPC; returns the request id.
fn force_gated(s: &Setup, gates: &Path) -> i64 {
    for i in 0..3 {
        let _ = std::fs::remove_file(gates.join(format!("gate-{i}")));
    }
    let (code, v) = rpc(
        &s.url("/api/v2/forceschedulers/force"),
        Some(&basic()),
        "force",
        json!({ "builderNames": ["gated"] }),
    );
    assert_eq!(code, 200, "{v}");
    v["result"][1]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .as_i64()
        .unwrap()
}

fn open_gates(gates: &Path) {
    for i in 0..3 {
        std::fs::write(gates.join(format!("gate-{i}")), b"").unwrap();
    }
}

/// Opens `path` and waits for its live stream; marks the document.
fn open_live(cdp: &mut Cdp, s: &Setup, path: &str) {
    cdp.navigate(&s.url(path));
    cdp.wait_js(
        &format!("{path}'s live stream"),
        "document.body.dataset.live === 'open'",
    );
    cdp.eval("window.__sameDocument = 'yes'; true");
}

fn assert_same_document(cdp: &mut Cdp, path: &str) {
    assert_eq!(cdp.eval("window.__sameDocument"), "yes", "{path} reloaded");
}

const RUNNING: &str =
    "!!document.querySelector('#live .res.running') && !!document.querySelector('#live [data-since]')";
const FINISHED: &str = "!document.querySelector('#live .res.running') \
     && !document.querySelector('#live [data-since]') \
     && document.getElementById('live').textContent.includes('success')";

#[test]
fn overview_pages_update_live_and_reload_after_a_restart() {
    if !has_chromium() {
        return;
    }
    let s = Setup::new(PASSING_TEST, "");
    let gates = s.add_gated(3);
    add_user(&s.master, USER, PASSWORD);
    let mut master = s.start_master();
    let worker = s.start_worker("example-worker", WORKER_PW);
    s.wait_connected("example-worker");

    // Without JavaScript: each page is whole on load, and light.
    let asset_bytes: usize = ["/assets/minibot.css", "/assets/minibot.js"]
        .iter()
        .map(|a| curl(&[&s.url(a)]).1.len())
        .sum();
    for (path, shows) in [
        ("/", "Builders"),
        ("/builders/gated", "Builds ("),
        ("/workers", "example-worker"),
        ("/buildrequests", "pending build"),
        ("/changes", "Changes ("),
        ("/console", "Console"),
    ] {
        let (code, page) = curl(&[&s.url(path)]);
        assert_eq!(code, 200, "{path}: {page}");
        assert!(
            page.contains("<div id=\"live\" data-v=\"") && page.contains(shows),
            "{path}: {page}"
        );
        let weight = page.len() + asset_bytes;
        eprintln!(
            "{path}: {} bytes of HTML, {weight} with CSS and JS",
            page.len()
        );
        assert!(weight < 20 * 1024, "{path} weighs {weight} bytes");
        // The fragment live pages fetch: the same markup, no frame.
        let (_, frag) = curl(&[&s.url(&format!("{path}?fragment=1"))]);
        assert!(
            frag.contains("<div id=\"live\"") && !frag.contains("<html"),
            "{path}?fragment=1: {frag}"
        );
    }

    let (_chromium, mut cdp) = browser(&s);

    // Home: a build starts (running badge, a clock) and finishes (its
    // result, no badge, no clock), the page never reloaded.
    for path in ["/", "/builders/gated"] {
        open_live(&mut cdp, &s, path);
        assert_eq!(cdp.eval(RUNNING), false, "{path}");
        force_gated(&s, &gates);
        cdp.wait_js(&format!("{path} to show the build running"), RUNNING);
        open_gates(&gates);
        cdp.wait_js(&format!("{path} to show the build finished"), FINISHED);
        assert_same_document(&mut cdp, path);
        eprintln!("{path}: saw a build start and finish without a reload");
    }

    // History (point 4): the home page's strip links both builds; the
    // builder page charts their durations in inline SVG.
    open_live(&mut cdp, &s, "/");
    assert_eq!(
        cdp.eval("document.querySelectorAll('#live tr:has(a[href=\"/builders/gated\"]) .strip a.r0[href^=\"/builds/\"]').length"),
        2
    );
    cdp.screenshot("live-home");
    open_live(&mut cdp, &s, "/builders/gated");
    assert_eq!(
        cdp.eval("document.querySelectorAll('#live svg#durations rect').length"),
        2
    );
    cdp.screenshot("live-builder");
    eprintln!("history: a strip of 2 results on /, a chart of 2 durations on /builders/gated");

    // Changes: a pushed change shows up, then the build it started.
    open_live(&mut cdp, &s, "/changes");
    s.push(&s.head, "master", "a live change arrives");
    cdp.wait_js(
        "the pushed change",
        "document.getElementById('live').textContent.includes('a live change arrives')",
    );
    cdp.wait_js(
        "the change's build, finished",
        "!!document.querySelector('#live td a[href^=\"/builders/runtests/builds/\"]') \
         && document.getElementById('live').textContent.includes('success')",
    );
    assert_same_document(&mut cdp, "/changes");
    // The console: that change × runtests is its build.
    cdp.navigate(&s.url("/console"));
    cdp.wait_js(
        "the console's cell",
        "!!document.querySelector('#live table .strip a.r0[href^=\"/builds/\"]')",
    );
    cdp.screenshot("live-console");
    let heads = cdp.eval(
        "Array.from(document.querySelectorAll('#live th')).map((t) => t.textContent).join(',')",
    );
    assert!(
        heads.as_str().unwrap().contains("gated") && heads.as_str().unwrap().contains("runtests"),
        "{heads}"
    );

    // Workers: the worker leaves.
    open_live(&mut cdp, &s, "/workers");
    drop(worker);
    cdp.wait_js(
        "the worker to show as not connected",
        "document.getElementById('live').textContent.includes('not connected')",
    );
    assert_same_document(&mut cdp, "/workers");

    // Queue: a request waits (no worker), and shows up.
    open_live(&mut cdp, &s, "/buildrequests");
    assert_eq!(
        cdp.eval("document.getElementById('live').textContent.includes('0 pending')"),
        true
    );
    let brid = force_gated(&s, &gates);
    cdp.wait_js(
        "the queued request",
        &format!("!!document.querySelector('#live a[href=\"/buildrequests/{brid}\"]')"),
    );
    assert_same_document(&mut cdp, "/buildrequests");

    cdp.assert_no_errors();

    // The master goes away: the page says so; a restarted master (another
    // start id) reloads it whole.
    master.signal(libc::SIGTERM);
    master.wait_exit(Duration::from_secs(30));
    cdp.wait_js(
        "the reconnecting state",
        "document.body.dataset.live === 'reconnecting' \
         && !document.getElementById('livestate').hidden",
    );
    let _master = s.start_master();
    cdp.wait_js(
        "a full reload after the restart",
        "window.__sameDocument === undefined && !!document.body && document.body.dataset.live === 'open'",
    );
    eprintln!("after a master restart: reconnecting shown, then the page reloaded");
    // Failed reconnects while the master was down are logged by the
    // browser as network errors; nothing else may be.
    cdp.pump();
    let other: Vec<_> = cdp.errors.iter().filter(|e| !e.contains("/live")).collect();
    assert!(other.is_empty(), "JavaScript errors: {other:#?}");
    let close = json!({"id": 0, "method": "Browser.close"}).to_string();
    let _ = cdp.ws.send(Message::Text(close.into()));
}

/// Reads an HTTP response head from a raw connection (up to the blank line).
fn read_head(s: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// A neighbour opening live streams gets at most `sse::MAX_STREAMS` (32,
/// shared with the build pages): the next is refused with 503, the pages
/// still answer, and a closed stream's slot comes back.
#[test]
fn live_streams_are_capped_and_pages_still_answer() {
    use std::io::Write;
    let s = Setup::new(PASSING_TEST, "");
    let _master = s.start_master();
    let port = s.www();
    let open = || {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            c,
            "GET /live?v=0 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n"
        )
        .unwrap();
        let head = read_head(&mut c);
        (c, head)
    };
    let mut held = Vec::new();
    for i in 0..32 {
        let (c, head) = open();
        assert!(head.starts_with("HTTP/1.1 200"), "stream {i}: {head}");
        held.push(c);
    }
    let (_c, head) = open();
    assert!(head.starts_with("HTTP/1.1 503"), "the 33rd stream: {head}");
    assert!(head.contains("Retry-After"), "{head}");
    let (code, page) = curl(&[&s.url("/")]);
    assert_eq!(code, 200, "{page}");
    eprintln!("32 live streams held: the 33rd got 503, / still answered 200");
    // A stream whose client left gives its slot back (at its next write:
    // a `changed` or the 15 s keep-alive).
    drop(held.pop());
    wait_for("a freed slot", Duration::from_secs(40), || {
        let (c, head) = open();
        head.starts_with("HTTP/1.1 200").then_some(c)
    });
}
