//! The web UI in a real browser: headless Chromium (Debian's `chromium`,
//! which `.ci/run` installs) driven over the Chrome DevTools Protocol by a
//! tiny client here. It logs in, forces a build from the builder page's
//! form, follows the queued request to the build page, and watches the
//! log grow there while the build prints line by line — the page is never
//! reloaded — until the build is green. Any JavaScript console error, page
//! exception or browser-logged error (CSP violations, failed loads) fails
//! the test.
//!
//! Without Chromium the test fails when `CI` is set and is skipped
//! otherwise. `MINIBOT_SCREENSHOTS=DIR` saves desktop and phone-sized
//! screenshots of the build page to DIR, to look at.

use crate::common::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tungstenite::{Message, WebSocket};

pub(crate) const CHROMIUM: &str = "/usr/bin/chromium";
const MIN: Duration = Duration::from_secs(60);

/// A DevTools connection to one page, collecting console errors.
pub(crate) struct Cdp {
    pub(crate) ws: WebSocket<TcpStream>,
    next_id: u64,
    pub(crate) session: Option<String>,
    pub(crate) errors: Vec<String>,
    /// Trace events received (`Tracing.dataCollected`), and whether the
    /// trace is complete (`tests/web_logs.rs` measures tasks with them).
    pub(crate) trace: Vec<Value>,
    pub(crate) trace_done: bool,
}

impl Cdp {
    pub(crate) fn connect(url: &str) -> Cdp {
        let addr = url
            .strip_prefix("ws://")
            .and_then(|r| r.split('/').next())
            .expect("a ws:// URL");
        let stream = TcpStream::connect(addr).expect("connecting to Chromium");
        let (ws, _) = tungstenite::client(url, stream).expect("DevTools handshake");
        // Reads wake up now and then, so every wait has a deadline.
        ws.get_ref()
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Cdp {
            ws,
            next_id: 1,
            session: None,
            errors: vec![],
            trace: vec![],
            trace_done: false,
        }
    }

    /// One message, or None after the read timeout.
    fn read(&mut self) -> Option<Value> {
        match self.ws.read() {
            Ok(Message::Text(t)) => Some(serde_json::from_str(&t).expect("CDP JSON")),
            Ok(_) => None,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("DevTools connection: {e}"),
        }
    }

    /// Records what counts as a JavaScript error.
    fn event(&mut self, v: &Value) {
        let p = &v["params"];
        match v["method"].as_str() {
            Some("Runtime.consoleAPICalled")
                if matches!(p["type"].as_str(), Some("error" | "assert")) =>
            {
                self.errors
                    .push(format!("console.{}: {}", p["type"], p["args"]));
            }
            Some("Runtime.exceptionThrown") => {
                self.errors
                    .push(format!("exception: {}", p["exceptionDetails"]));
            }
            Some("Tracing.dataCollected") => {
                if let Some(v) = p["value"].as_array() {
                    self.trace.extend(v.iter().cloned());
                }
            }
            Some("Tracing.tracingComplete") => self.trace_done = true,
            Some("Log.entryAdded") if p["entry"]["level"] == "error" => {
                self.errors.push(format!(
                    "log: {} ({})",
                    p["entry"]["text"], p["entry"]["url"]
                ));
            }
            _ => {}
        }
    }

    pub(crate) fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = &self.session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::Text(msg.to_string().into()))
            .expect("sending to Chromium");
        let deadline = Instant::now() + MIN;
        loop {
            assert!(Instant::now() < deadline, "no answer to {method}");
            let Some(v) = self.read() else { continue };
            if v["id"] == id {
                if let Some(e) = v.get("error") {
                    panic!("{method}: {e}");
                }
                return v["result"].clone();
            }
            self.event(&v);
        }
    }

    /// Reads the events that have arrived.
    pub(crate) fn pump(&mut self) {
        while let Some(v) = self.read() {
            self.event(&v);
        }
    }

    /// The value of a JavaScript expression in the page.
    pub(crate) fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("evaluating {expr}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Polls `expr` until it is truthy; returns its value.
    pub(crate) fn wait_js(&mut self, what: &str, expr: &str) -> Value {
        let deadline = Instant::now() + MIN;
        loop {
            let v = self.eval(expr);
            if !(v.is_null() || v == false || v == "" || v == 0) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; page: {}",
                self.eval("location.href + '\\n' + document.body.innerText")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
        self.wait_js("the page to load", "document.readyState === 'complete'");
    }

    pub(crate) fn assert_no_errors(&mut self) {
        self.pump();
        assert!(
            self.errors.is_empty(),
            "JavaScript errors: {:#?}",
            self.errors
        );
    }

    /// Saves a screenshot as `$MINIBOT_SCREENSHOTS/name.png`, if set.
    pub(crate) fn screenshot(&mut self, name: &str) {
        let Some(dir) = std::env::var_os("MINIBOT_SCREENSHOTS") else {
            return;
        };
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        use base64ct::Encoding;
        let png = base64ct::Base64::decode_vec(r["data"].as_str().unwrap()).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }
}

/// Starts headless Chromium; returns the process and its DevTools URL.
pub(crate) fn start_chromium(profile: &std::path::Path) -> (Proc, String) {
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1200,900",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting chromium");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Keep reading, so Chromium never blocks on a full pipe.
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(url) = line.split("DevTools listening on ").nth(1) {
                let _ = tx.send(url.trim().to_string());
            }
        }
    });
    let url = rx
        .recv_timeout(MIN)
        .expect("Chromium printed no DevTools address");
    (
        Proc {
            child,
            name: "chromium".into(),
        },
        url,
    )
}

#[test]
fn browser_logs_in_forces_and_watches_the_log_grow() {
    if !require(
        &format!("{CHROMIUM} (apt-get install chromium)"),
        std::path::Path::new(CHROMIUM).exists(),
    ) {
        return;
    }
    let s = Setup::new(PASSING_TEST, "");
    let gates = s.tmp.path().join("gates");
    std::fs::create_dir(&gates).unwrap();
    let script = gated_script(&gates, 3);
    s.edit_cfg(|t| t + &gated_cfg(&script, &gates));
    add_user(&s.master, USER, PASSWORD);
    let _master = s.start_master();
    let _worker = s.start_worker("example-worker", WORKER_PW);
    s.wait_connected("example-worker");

    let (_chromium, ws_url) = start_chromium(&s.tmp.path().join("chromium-profile"));
    let mut cdp = Cdp::connect(&ws_url);
    let target = cdp.call("Target.createTarget", json!({"url": "about:blank"}));
    let session = cdp.call(
        "Target.attachToTarget",
        json!({"targetId": target["targetId"], "flatten": true}),
    );
    cdp.session = Some(session["sessionId"].as_str().unwrap().to_string());
    for domain in ["Runtime.enable", "Log.enable", "Page.enable"] {
        cdp.call(domain, json!({}));
    }

    // Log in; the login page sends us back where we came from.
    cdp.navigate(&s.url("/login?next=/builders/gated"));
    cdp.eval(&format!(
        "document.getElementById('username').value = '{USER}';
         document.getElementById('password').value = '{PASSWORD}';
         document.querySelector('form.login button').click(); true"
    ));
    cdp.wait_js(
        "the builder page after login",
        "location.pathname === '/builders/gated' && document.readyState === 'complete'",
    );
    assert_eq!(
        cdp.eval("document.querySelector('.who span').textContent"),
        USER
    );

    // Force from the form; the queued request's page opens the build.
    cdp.eval(
        "document.querySelector('form.force input[name=reason]').value = 'from the browser';
         document.querySelector('form.force button').click(); true",
    );
    let path = cdp.wait_js(
        "the build page",
        "/^\\/builders\\/gated\\/builds\\/\\d+$/.test(location.pathname) \
         && document.readyState === 'complete' && location.pathname",
    );
    eprintln!("forced from the form: {path}");
    // Anything on `window` is gone if the page reloads.
    cdp.eval("window.__sameDocument = 'yes'; true");

    // The log grows while the build runs.
    let lines = "document.querySelectorAll('pre.log')[0].textContent.split('\\n').length";
    cdp.wait_js(
        "the first line",
        "document.getElementById('steps').textContent.includes('gate-line 0')",
    );
    let mut seen = cdp.eval(lines).as_i64().unwrap();
    for i in 0..3 {
        std::fs::write(gates.join(format!("gate-{i}")), b"").unwrap();
        let next = if i < 2 {
            format!("gate-line {}", i + 1)
        } else {
            "gates done".to_string()
        };
        cdp.wait_js(
            &next,
            &format!("document.getElementById('steps').textContent.includes('{next}')"),
        );
        let now = cdp.eval(lines).as_i64().unwrap();
        assert!(now > seen, "the log did not grow: {seen} then {now} lines");
        seen = now;
        assert_eq!(
            cdp.eval("window.__sameDocument"),
            "yes",
            "the page reloaded"
        );
        if i == 0 {
            cdp.screenshot("build-running");
        }
    }
    // Colours rendered, log text never markup.
    assert_eq!(
        cdp.eval("!!document.querySelector('pre.log span.f2')"),
        true
    );
    assert_eq!(cdp.eval("document.querySelectorAll('pre.log i').length"), 0);
    // The build's head turns green by itself.
    cdp.wait_js(
        "the build to show success",
        "document.getElementById('build-head').textContent.includes('success')",
    );
    assert_eq!(
        cdp.eval("window.__sameDocument"),
        "yes",
        "the page reloaded"
    );
    assert_eq!(
        cdp.eval("!!document.querySelector('#build-head form[action$=\"/rebuild\"]')"),
        true
    );
    let b = get_json(&s.url("/api/v2/builds?builderid=2"));
    assert_eq!(b["builds"][0]["results"], 0, "{b}");

    cdp.screenshot("build-desktop");
    if std::env::var_os("MINIBOT_SCREENSHOTS").is_some() {
        cdp.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": true}),
        );
        for (page, name) in [
            (path.as_str().unwrap(), "build-phone"),
            ("/", "home-phone"),
            ("/builders/gated", "builder-phone"),
            ("/workers", "workers-phone"),
        ] {
            cdp.navigate(&s.url(page));
            cdp.screenshot(name);
        }
    }
    cdp.assert_no_errors();
    // Browser-level, so without the page's session; no answer awaited.
    let close = json!({"id": 0, "method": "Browser.close"}).to_string();
    let _ = cdp.ws.send(Message::Text(close.into()));
}
