//! The headless-Chromium harness shared by the browser tests
//! (`web_browser`, `web_live`, `web_logs`, `web_look`): a tiny Chrome
//! DevTools Protocol client over a websocket that records JavaScript
//! errors, `start_chromium`, and `browser`, a page of a fresh Chromium.

use super::{require, Proc, Setup};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tungstenite::{Message, WebSocket};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const MIN: Duration = Duration::from_secs(60);

/// A DevTools connection to one page, collecting console errors.
pub struct Cdp {
    pub ws: WebSocket<TcpStream>,
    next_id: u64,
    pub session: Option<String>,
    pub errors: Vec<String>,
    /// Trace events received (`Tracing.dataCollected`), and whether the
    /// trace is complete (`tests/web_logs.rs` measures tasks with them).
    pub trace: Vec<Value>,
    pub trace_done: bool,
}

impl Cdp {
    pub fn connect(url: &str) -> Cdp {
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
    pub fn read(&mut self) -> Option<Value> {
        match self.ws.read() {
            Ok(Message::Text(t)) => Some(serde_json::from_str(&t).expect("CDP JSON")),
            Ok(_) => None,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        // A socket with a receive timeout returns EINTR on
                        // any caught signal, even with SA_RESTART (signal(7)).
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                None
            }
            Err(e) => panic!("DevTools connection: {e}"),
        }
    }

    /// Records what counts as a JavaScript error.
    pub fn event(&mut self, v: &Value) {
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

    pub fn call(&mut self, method: &str, params: Value) -> Value {
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
                    // The page was navigating (a clicked link, a reload):
                    // an evaluation asked meanwhile has no page to run in.
                    if method == "Runtime.evaluate" && e.to_string().contains("navigated or closed")
                    {
                        return json!({"result": {"value": null}});
                    }
                    panic!("{method}: {e}");
                }
                return v["result"].clone();
            }
            self.event(&v);
        }
    }

    /// Reads the events that have arrived.
    pub fn pump(&mut self) {
        while let Some(v) = self.read() {
            self.event(&v);
        }
    }

    /// The value of a JavaScript expression in the page.
    pub fn eval(&mut self, expr: &str) -> Value {
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
    pub fn wait_js(&mut self, what: &str, expr: &str) -> Value {
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

    pub fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
        self.wait_js("the page to load", "document.readyState === 'complete'");
    }

    /// Logs in as `USER` with the login form of `base` (the master's
    /// URL), which sends the browser on to `next`; waits for that page.
    pub fn log_in(&mut self, base: &str, next: &str) {
        use super::{PASSWORD, USER};
        self.navigate(&format!("{}/login?next={next}", base.trim_end_matches('/')));
        self.eval(&format!(
            "document.getElementById('username').value = '{USER}';
             document.getElementById('password').value = '{PASSWORD}';
             document.querySelector('form.login button').click(); true"
        ));
        self.wait_js(
            &format!("{next} after logging in"),
            &format!(
                "location.pathname === '{next}' && document.readyState === 'complete' \
                 && !!document.querySelector('.who span')"
            ),
        );
        assert_eq!(
            self.eval("document.querySelector('.who span').textContent"),
            USER
        );
    }

    pub fn assert_no_errors(&mut self) {
        self.pump();
        assert!(
            self.errors.is_empty(),
            "JavaScript errors: {:#?}",
            self.errors
        );
    }

    /// Saves a screenshot as `$MINIBOT_SCREENSHOTS/name.png`, if set.
    pub fn screenshot(&mut self, name: &str) {
        let Some(dir) = std::env::var_os("MINIBOT_SCREENSHOTS") else {
            return;
        };
        let dir = std::path::PathBuf::from(dir);
        self.screenshot_to(&dir.join(format!("{name}.png")), None);
    }

    /// Saves a PNG of the viewport, or of the page's top `height` pixels
    /// (a whole phone page, beyond the viewport).
    pub fn screenshot_to(&mut self, path: &std::path::Path, height: Option<f64>) {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        let params = match height {
            Some(h) => {
                let w = self.eval("document.documentElement.clientWidth");
                json!({"format": "png", "captureBeyondViewport": true,
                       "clip": {"x": 0, "y": 0, "width": w, "height": h, "scale": 1}})
            }
            None => json!({"format": "png"}),
        };
        let r = self.call("Page.captureScreenshot", params);
        use base64ct::Encoding;
        let png = base64ct::Base64::decode_vec(r["data"].as_str().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}

/// Whether Chromium is here; without it a browser test is skipped
/// visibly (and fails under `CI`, see `require`).
pub fn has_chromium() -> bool {
    require(
        &format!("{CHROMIUM} (apt-get install chromium)"),
        std::path::Path::new(CHROMIUM).exists(),
    )
}

/// A page (an attached target, with the Runtime, Log and Page events on)
/// of a fresh headless Chromium whose profile is in the test's temp dir.
pub fn browser(s: &Setup) -> (Proc, Cdp) {
    let (chromium, ws_url) = start_chromium(&s.tmp.path().join("chromium-profile"));
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
    (chromium, cdp)
}

/// Starts headless Chromium; returns the process and its DevTools URL.
pub fn start_chromium(profile: &std::path::Path) -> (Proc, String) {
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
