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

use crate::common::browser::*;
use crate::common::*;
use serde_json::json;
use tungstenite::Message;

#[test]
fn browser_logs_in_forces_and_watches_the_log_grow() {
    if !has_chromium() {
        return;
    }
    let s = Setup::new(PASSING_TEST, "");
    let gates = s.add_gated(3);
    add_user(&s.master, USER, PASSWORD);
    let _master = s.start_master();
    let _worker = s.start_worker("example-worker", WORKER_PW);
    s.wait_connected("example-worker");

    let (_chromium, mut cdp) = browser(&s);

    // Log in; the login page sends us back where we came from.
    cdp.log_in(&s.url(""), "/builders/gated");

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
