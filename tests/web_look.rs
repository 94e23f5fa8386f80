//! Look, phones, accessibility and page weight (issue 17 points 6, 7, 8),
//! on a master with realistic data: five builders with passing, failing
//! and running builds, a change from a push, a forced request that waits
//! (its builder's only worker never connects) and a connected worker.
//!
//! - weight: every page, as a visitor (curl) and as a logged-in user (the
//!   browser fetching its own page), is under 20 KB of HTML + CSS + JS not
//!   counting log text (what is inside `<pre>`), and names no third-party
//!   URL; in the browser every resource loaded comes from the master;
//! - without JavaScript each page is whole (curl sees its content);
//! - phones: at 390 px no page scrolls sideways, every table fits the
//!   viewport and the key (first) cell of every row is visible: inside the
//!   viewport, not clipped by a scrolling ancestor, not hidden (element
//!   geometry);
//! - dark mode: with `prefers-color-scheme: dark` emulated the page's
//!   background is dark and its text light;
//! - a skip link is the first focusable element (Tab reaches it first) and
//!   the nav marks the current page with `aria-current="page"`;
//! - results carry a glyph besides colour: badges and history squares show
//!   a `::before` glyph that differs per result; failing bars of the
//!   duration chart are hatched.
//!
//! Screenshots of each page, desktop and phone, are kept in
//! `target/screenshots/` (the paths are printed) to look at.
//!
//! The weight again at the issue's scale (9 builders, 3 workers, 55
//! builds with full history strips, changes, running builds and queued
//! requests), where the home page weighs most: every page, as a visitor
//! and logged in, under 20 KB, with the table of weights printed
//! (`every_page_stays_under_20_kb_at_the_issues_scale`, curl only).

use crate::common::browser::*;
use crate::common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tungstenite::Message;

/// Four builders beside `runtests`: `gated` (runs until the test opens
/// its gate, `gated_cfg`), `lint` (passes), `docs` (fails until `flag`
/// exists), `nightly` (its worker never connects: its requests wait).
fn builders_cfg(script: &Path, gates: &Path, flag: &Path) -> String {
    let shell = |name: &str, worker: &str, cmd: &str| {
        format!(
            "[[builders]]\nname = \"{name}\"\nworkers = [\"{worker}\"]\n\
             [[builders.steps]]\ntype = \"shell\"\nname = \"{name}\"\n\
             command = [\"/bin/sh\", \"-c\", \"{cmd}\"]\n"
        )
    };
    format!(
        "{}\n[[schedulers]]\nname = \"more\"\ntype = \"force\"\n\
         builders = [\"lint\", \"docs\", \"nightly\"]\n{}{}{}",
        gated_cfg(script, gates),
        shell("lint", "example-worker", "echo lint: 0 problems"),
        shell(
            "docs",
            "example-worker",
            &format!(
                "echo building docs; test -e {} || {{ echo 'error: docs/index.md missing' >&2; exit 1; }}",
                flag.display()
            )
        ),
        shell("nightly", "second-worker", "echo nightly"),
    )
}

/// Forces `builder` with `reason`; returns the request's id.
fn force(s: &Setup, builder: &str, reason: &str) -> i64 {
    let scheduler = match builder {
        "runtests" | "gated" => "force",
        _ => "more",
    };
    let (code, v) = rpc(
        &s.url(&format!("/api/v2/forceschedulers/{scheduler}")),
        Some(&basic()),
        "force",
        json!({ "builderNames": [builder], "reason": reason }),
    );
    assert_eq!(code, 200, "{v}");
    let brid = v["result"][1].as_object().unwrap().values().next().unwrap();
    brid.as_i64().unwrap()
}

/// Forces `builder` and waits for its build to finish; returns the build.
fn force_done(s: &Setup, builder: &str, reason: &str) -> Value {
    let buildid = s.wait_build_of(force(s, builder, reason));
    wait_for("the build to finish", Duration::from_secs(60), || {
        let b = get_json(&s.url(&format!("/api/v2/builds/{buildid}")));
        let b = b["builds"][0].clone();
        (b["complete"] == true).then_some(b)
    })
}

/// HTML + CSS + JS of a page, not counting what is inside `<pre>` (log
/// text), with the CSS and JS it links fetched by curl.
fn weight(s: &Setup, page: &str) -> usize {
    let mut html = page.len();
    let mut rest = page;
    while let Some(i) = rest.find("<pre") {
        let after = &rest[i..];
        let open = after.find('>').expect("a whole <pre> tag") + 1;
        let close = after.find("</pre>").expect("</pre>");
        html -= close - open;
        rest = &after[close..];
    }
    let mut assets = 0;
    for attr in ["<link rel=\"stylesheet\" href=\"", "<script src=\""] {
        for piece in page.split(attr).skip(1) {
            let url = &piece[..piece.find('"').unwrap()];
            let (code, body) = curl(&[&s.url(url)]);
            assert_eq!(code, 200, "{url}");
            assets += body.len();
        }
    }
    html + assets
}

/// Every URL a page names in `src`, `href` or `action` is the master's own
/// (a path), and the CSS imports nothing.
fn assert_no_third_party(what: &str, page: &str) {
    for attr in ["src=\"", "href=\"", "action=\"", "url("] {
        for piece in page.split(attr).skip(1) {
            let url = piece.split(['"', ')']).next().unwrap_or("");
            assert!(
                url.starts_with('/') && !url.starts_with("//") || url.starts_with('#'),
                "{what} names a URL not of the master: {attr}{url}"
            );
        }
    }
    assert!(!page.contains("@import"), "{what} imports");
}

/// Problems of a page at the current width: sideways scrolling, tables
/// wider than the viewport, key cells not visible.
const PHONE_CHECK: &str = r#"(() => {
  const bad = [];
  const W = document.documentElement.clientWidth;
  if (document.documentElement.scrollWidth > W + 1)
    bad.push('the page scrolls sideways: ' + document.documentElement.scrollWidth + ' > ' + W);
  document.querySelectorAll('table').forEach((t, ti) => {
    const tr = t.getBoundingClientRect();
    if (tr.right > W + 0.5) bad.push('table ' + ti + ' is wider than the screen: ' + tr.right);
    t.querySelectorAll('tbody tr').forEach((row, ri) => {
      const c = row.cells[0];
      const what = 'table ' + ti + ' row ' + ri + ' key cell "' + (c ? c.textContent.trim() : '') + '": ';
      if (!c) { bad.push(what + 'missing'); return; }
      const st = getComputedStyle(c);
      const r = c.getBoundingClientRect();
      if (st.display === 'none' || st.visibility !== 'visible') bad.push(what + 'hidden');
      else if (r.width < 4 || r.height < 4) bad.push(what + 'no room');
      else if (r.left < -0.5 || r.right > W + 0.5) bad.push(what + 'outside the viewport');
      for (let a = c.parentElement; a && a !== document.body; a = a.parentElement) {
        const s = getComputedStyle(a);
        if (s.overflowX === 'visible' && s.overflowY === 'visible') continue;
        const ar = a.getBoundingClientRect();
        if (r.left < ar.left - 0.5 || r.right > ar.right + 0.5)
          bad.push(what + 'clipped by ' + a.tagName + '.' + a.className);
      }
      if (c.firstElementChild && c.firstElementChild.getBoundingClientRect().right > W + 0.5)
        bad.push(what + 'its content runs off the screen');
    });
  });
  return bad;
})()"#;

/// The `::before` glyphs of the result marks on a page, by class.
const GLYPHS: &str = r#"(() => {
  const out = {};
  document.querySelectorAll('.res, .strip a').forEach((el) => {
    const c = getComputedStyle(el, '::before').content;
    out[el.className] = c;
  });
  return out;
})()"#;

/// Relative luminance (0 black .. 1 white) of a CSS `rgb(...)` colour.
fn luminance(css: &str) -> f64 {
    let n: Vec<f64> = css
        .trim_start_matches(|c: char| !c.is_ascii_digit())
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter(|x| !x.is_empty())
        .map(|x| x.parse().unwrap())
        .collect();
    assert!(n.len() >= 3, "a colour: {css}");
    (0.2126 * n[0] + 0.7152 * n[1] + 0.0722 * n[2]) / 255.0
}

fn screenshots_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots")
}

#[test]
fn every_page_is_light_accessible_and_designed_for_a_phone() {
    if !has_chromium() {
        return;
    }
    let s = Setup::new(PASSING_TEST, "");
    let (gates, script) = s.gates(1);
    let flag = s.tmp.path().join("docs-fixed");
    s.edit_cfg(|t| t + &builders_cfg(&script, &gates, &flag));
    add_user(&s.master, USER, PASSWORD);
    let _master = s.start_master();
    let _worker = s.start_worker("example-worker", WORKER_PW);
    s.wait_connected("example-worker");

    // History: a change from a push, passing and failing builds.
    s.push(&s.head, "master", "Add the hello test\n\nWith a body.");
    s.wait_builds(1, Duration::from_secs(60));
    force_done(&s, "lint", "lint by hand");
    force_done(&s, "lint", "lint again");
    let failed = force_done(&s, "docs", "docs by hand");
    assert_eq!(failed["results"], 2, "{failed}");
    std::fs::write(&flag, b"").unwrap();
    force_done(&s, "docs", "docs fixed");
    force_done(&s, "docs", "docs once more");
    // One build running, one request waiting with its forced reason.
    let running = s.wait_build_of(force(&s, "gated", "a long one"));
    let waiting = force(&s, "nightly", "nightly by hand");

    let steps = get_json(&s.url(&format!("/api/v2/builds/{}/steps", failed["buildid"])));
    let stepid = steps["steps"][0]["stepid"].as_i64().unwrap();
    let logs = get_json(&s.url(&format!("/api/v2/steps/{stepid}/logs")));
    let logid = logs["logs"][0]["logid"].as_i64().unwrap();
    let failed_path = format!("/builders/docs/builds/{}", failed["number"]);
    let running_path = get_json(&s.url(&format!("/api/v2/builds/{running}")))["builds"][0]
        ["number"]
        .as_i64()
        .map(|n| format!("/builders/gated/builds/{n}"))
        .unwrap();
    // (name, path, what the page shows without JavaScript, its nav link)
    let pages: Vec<(&str, String, &str, Option<&str>)> = vec![
        ("home", "/".into(), "Recent builds", Some("/")),
        ("builders", "/builders".into(), "Builders", Some("/")),
        ("builder", "/builders/docs".into(), "durations", None),
        ("build", failed_path.clone(), "docs/index.md missing", None),
        ("build-running", running_path, "gate-line 0", None),
        (
            "workers",
            "/workers".into(),
            "example-worker",
            Some("/workers"),
        ),
        (
            "changes",
            "/changes".into(),
            "Add the hello test",
            Some("/changes"),
        ),
        ("console", "/console".into(), "Console", Some("/console")),
        (
            "buildrequests",
            "/buildrequests".into(),
            "nightly by hand",
            Some("/buildrequests"),
        ),
        (
            "request",
            format!("/buildrequests/{waiting}"),
            "nightly by hand",
            None,
        ),
        (
            "log",
            format!("/logs/{logid}"),
            "docs/index.md missing",
            None,
        ),
        ("login", "/login".into(), "Password", None),
    ];

    // As a visitor, without JavaScript: whole, light, self-contained.
    for asset in ["/assets/minibot.css", "/assets/minibot.js"] {
        let (_, body) = curl(&[&s.url(asset)]);
        eprintln!("{asset}: {} bytes", body.len());
        let file = asset.rsplit('/').next().unwrap();
        std::fs::create_dir_all(screenshots_dir()).unwrap();
        std::fs::write(screenshots_dir().join(file), &body).unwrap();
        assert_no_third_party(asset, &body);
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "{asset}"
        );
    }
    let mut heavy = vec![];
    for (name, path, shows, _) in &pages {
        let (code, page) = curl(&["-L", &s.url(path)]);
        assert_eq!(code, 200, "{path}: {page}");
        assert!(
            page.contains(shows),
            "{name} ({path}) lacks {shows:?}: {page}"
        );
        assert_no_third_party(path, &page);
        std::fs::create_dir_all(screenshots_dir()).unwrap();
        std::fs::write(screenshots_dir().join(format!("{name}.html")), &page).unwrap();
        let w = weight(&s, &page);
        eprintln!(
            "{name:14} {path:30} visitor: {w:6} bytes of HTML+CSS+JS ({} of HTML)",
            page.len()
        );
        if w >= 20 * 1024 {
            heavy.push((path.clone(), w));
        }
    }
    assert!(heavy.is_empty(), "pages of 20 KB or more: {heavy:?}");

    let (_chromium, mut cdp) = browser(&s);
    cdp.log_in(&s.url(""), "/");

    let shots = screenshots_dir();
    let origin = s.url("");
    let mut looked = vec![];
    for (name, path, shows, nav) in &pages {
        // Desktop.
        cdp.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1200, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
        );
        cdp.call("Emulation.setEmulatedMedia", json!({"features": []}));
        let t = std::time::Instant::now();
        cdp.navigate(&s.url(path));
        // Logged in: the page as this user gets it, still light.
        let page = cdp.eval("fetch(location.href, {cache: 'no-store'}).then((r) => r.text())");
        let page = page.as_str().unwrap();
        assert!(page.contains(shows), "{name}: {page}");
        // Streams of pages left behind (in the back/forward cache) do
        // not hold the browser's connections to the master.
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{name}: loading and fetching took {:?}",
            t.elapsed()
        );
        let w = weight(&s, page);
        eprintln!("{name:14} {path:30} logged in: {w:6} bytes of HTML+CSS+JS");
        assert!(w < 20 * 1024, "{path} weighs {w} bytes logged in");
        // Everything loaded came from the master.
        let loaded = cdp.eval(
            "performance.getEntriesByType('resource').map((e) => e.name)\
             .concat([location.href])",
        );
        for u in loaded.as_array().unwrap() {
            let u = u.as_str().unwrap();
            assert!(
                u.starts_with(origin.trim_end_matches('/')),
                "{name} loaded {u}"
            );
        }
        // The skip link comes first; the nav marks this page.
        let first = cdp.eval(
            "(() => { const f = document.querySelector('a[href], button, input:not([type=hidden]), \
             select, textarea, [tabindex]'); return f.textContent + ' -> ' + f.getAttribute('href') \
             + ' ' + !!document.getElementById('main'); })()",
        );
        assert_eq!(first, "Skip to content -> #main true", "{name}");
        let current = cdp.eval(
            "Array.from(document.querySelectorAll('nav a[aria-current=page]'))\
             .map((a) => a.getAttribute('href')).join(' ')",
        );
        assert_eq!(current, nav.unwrap_or(""), "{name}: aria-current");
        // Results carry a glyph besides colour.
        let glyphs = cdp.eval(GLYPHS);
        for (class, content) in glyphs.as_object().unwrap() {
            let result = |c: &str| c == "running" || c.len() == 2 && c.starts_with('r');
            if class.split(' ').any(result) {
                assert!(
                    content != "none" && content != "normal" && content != "\"\"",
                    "{name}: .{class} has no glyph"
                );
            }
        }
        let file = shots.join(format!("{name}-desktop.png"));
        cdp.screenshot_to(&file, None);
        looked.push(file);

        // Dark.
        cdp.call(
            "Emulation.setEmulatedMedia",
            json!({"features": [{"name": "prefers-color-scheme", "value": "dark"}]}),
        );
        let bg = cdp.eval("getComputedStyle(document.body).backgroundColor");
        let fg = cdp.eval("getComputedStyle(document.body).color");
        let (bg, fg) = (bg.as_str().unwrap(), fg.as_str().unwrap());
        assert!(
            luminance(bg) < 0.2 && luminance(fg) > 0.6,
            "{name} in dark mode: background {bg}, text {fg}"
        );
        if *name == "home" || *name == "build" {
            let file = shots.join(format!("{name}-dark.png"));
            cdp.screenshot_to(&file, None);
            looked.push(file);
        }
        cdp.call("Emulation.setEmulatedMedia", json!({"features": []}));

        // Phone.
        cdp.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": true}),
        );
        cdp.navigate(&s.url(path));
        let bad = cdp.eval(PHONE_CHECK);
        assert_eq!(bad, json!([]), "{name} at 390 px");
        let h = cdp
            .eval("document.documentElement.scrollHeight")
            .as_f64()
            .unwrap();
        let file = shots.join(format!("{name}-phone.png"));
        cdp.screenshot_to(&file, Some(h.min(6000.0)));
        looked.push(file);
    }

    // Tab reaches the skip link first, and it leads to the content.
    cdp.navigate(&s.url("/"));
    for t in ["keyDown", "keyUp"] {
        cdp.call(
            "Input.dispatchKeyEvent",
            json!({"type": t, "key": "Tab", "code": "Tab", "windowsVirtualKeyCode": 9}),
        );
    }
    assert_eq!(
        cdp.eval("document.activeElement.textContent"),
        "Skip to content"
    );
    // Glyphs tell success, failure and running apart (the home page's
    // history squares and badges have all three).
    let glyphs = cdp.eval(GLYPHS);
    let g = |class: &str| glyphs[class].as_str().unwrap_or("none").to_string();
    let (ok, bad, run) = (g("r0"), g("r2"), g("running"));
    assert!(
        ok != bad && ok != run && bad != run && ok != "none" && bad != "none",
        "squares: success {ok}, failure {bad}, running {run}"
    );
    let (ok, bad) = (g("res r0"), g("res r2"));
    assert!(ok != bad && ok != "none", "badges: {ok} {bad}");
    // The duration chart: a failed build's bar is hatched, not only red.
    cdp.navigate(&s.url("/builders/docs"));
    assert_eq!(
        cdp.eval("document.querySelectorAll('#durations [fill=\"url(#hatch)\"]').length"),
        1
    );
    cdp.assert_no_errors();

    for f in &looked {
        eprintln!("screenshot: {}", f.display());
    }
    std::fs::write(gates.join("gate-0"), b"").unwrap();
    let close = json!({"id": 0, "method": "Browser.close"}).to_string();
    let _ = cdp.ws.send(Message::Text(close.into()));
}

/// The builders of the issue's scale, beside `runtests` (which pushes
/// build): name and what its step does. `docs` always fails; the `hold`
/// ones run the gated script (until the test opens gate 0) once `HOLD`
/// exists, and pass at once before.
const SCALE_BUILDERS: [(&str, &str); 8] = [
    ("lint", "echo lint: 0 problems"),
    (
        "docs",
        "echo building docs; echo 'error: docs/index.md missing' >&2; exit 1",
    ),
    ("unit-linux", "echo 412 tests passed"),
    ("unit-macos", "echo 409 tests passed, 3 skipped"),
    ("package-deb", "echo minibot_0.1_amd64.deb"),
    ("integration", "hold"),
    ("deploy-staging", "hold"),
    ("nightly-soak", "hold"),
];

/// Finished builds each builder gets: `lint`'s history strip is full (the
/// home page shows its last 20 of 25 squares; its page lists 20 builds, a
/// page's worth, draws 20 bars and links the older ones); `runtests`'
/// three come from pushes. With one running build of each `hold`
/// builder: 55 builds.
const SCALE_DONE: [(&str, usize); 9] = [
    ("runtests", 3),
    ("lint", 25),
    ("docs", 5),
    ("unit-linux", 5),
    ("unit-macos", 4),
    ("package-deb", 3),
    ("integration", 3),
    ("deploy-staging", 2),
    ("nightly-soak", 2),
];

/// Steps appended to `runtests` (after its git and test steps) in the
/// scale test: a realistic release build of 13 steps (git, 9 shell-like of
/// which one sets a property and one fails without halting, 2 uploads and
/// a trigger step that waits for the `package-deb` build it starts).
const RELEASE_STEPS: &str = r#"
[[builders.steps]]
type = "shell"
name = "configure"
command = "echo checking for cc... cc; echo configure: done"
[[builders.steps]]
type = "set_property"
property = "version"
command = "echo 1.4.2"
[[builders.steps]]
type = "shell"
name = "compile"
command = "echo compiling 124 files; echo built target minibot"
[[builders.steps]]
type = "shell"
name = "unit tests"
command = "echo 411 passed; echo 'FAILED tests/test_clock.py::test_dst' >&2; exit 1"
halt_on_failure = false
[[builders.steps]]
type = "shell"
name = "lint"
command = "echo lint: 0 problems"
[[builders.steps]]
type = "shell"
name = "package"
command = "mkdir -p dist && printf wheel > dist/minibot-1.4.2-py3-none-any.whl && printf docs > docs.tar.gz"
[[builders.steps]]
type = "upload"
name = "upload wheel"
source = "dist/*.whl"
dest = "wheels"
[[builders.steps]]
type = "upload"
name = "upload docs"
source = "docs.tar.gz"
[[builders.steps]]
type = "trigger"
name = "package"
schedulers = ["package"]
wait = true
copy_properties = ["version"]
[[builders.steps]]
type = "shell"
name = "smoke"
command = "echo smoke test ok"
[[builders.steps]]
type = "shell"
name = "notify"
command = "echo notified 3 watchers"
"#;

/// What a page weighs at most: HTML + CSS + JS before its log text.
const MAX_WEIGHT: usize = 20 * 1024;

/// The issue's scale (issue 17 "Why": 9 builders, 3 workers, 55 builds):
/// full history strips, three changes from pushes, three running builds,
/// two queued requests. Every page, as a visitor and logged in (curl with
/// a session: the force form, cancel and pause buttons), stays under 20 KB
/// of HTML + CSS + JS (raw bytes, not gzip) before its log text; the
/// table of weights is printed. Only the build and log pages load the
/// log stylesheet and script.
#[test]
fn every_page_stays_under_20_kb_at_the_issues_scale() {
    let s = Setup::new(PASSING_TEST, RELEASE_STEPS);
    let (gates, script) = s.gates(1);
    let hold = gates.join("HOLD");
    let workers = "[\"example-worker\", \"second-worker\", \"third-worker\"]";
    let names: Vec<String> = SCALE_BUILDERS
        .iter()
        .map(|(n, _)| format!("\"{n}\""))
        .collect();
    // `package-deb` is started by `runtests`' trigger step; `deploy-staging`
    // takes the `deploy` lock (held while it runs).
    let mut cfg = format!(
        "\n[[workers]]\nname = \"third-worker\"\npassword = \"fixture-password-3\"\n\
         [[schedulers]]\nname = \"force\"\ntype = \"force\"\nbuilders = [{}]\n\
         [[schedulers]]\nname = \"package\"\ntype = \"triggerable\"\n\
         builders = [\"package-deb\"]\n[[locks]]\nname = \"deploy\"\n",
        names.join(", ")
    );
    for (name, cmd) in SCALE_BUILDERS {
        let cmd = match cmd {
            "hold" => format!(
                "[ -e {} ] && exec /usr/bin/python3 -u {} {}; echo {name} ok",
                hold.display(),
                script.display(),
                gates.display()
            ),
            c => c.to_string(),
        };
        let locks = match name {
            "deploy-staging" => "locks = [{ name = \"deploy\", access = \"exclusive\" }]\n",
            _ => "",
        };
        cfg += &format!(
            "[[builders]]\nname = \"{name}\"\nworkers = {workers}\ncollapse_requests = false\n\
             {locks}[[builders.steps]]\ntype = \"shell\"\nname = \"{name}\"\n\
             command = [\"/bin/sh\", \"-c\", \"{cmd}\"]\n"
        );
    }
    s.edit_cfg(|t| {
        t.replace(
            "workers = [\"example-worker\", \"second-worker\"]",
            &format!("workers = {workers}"),
        ) + &cfg
    });
    // "Log in with Gitea" on the login page (no Gitea is asked to render
    // it); its redirect needs buildbot_url, so the port is pinned first.
    let (www, _) = s.pick_ports();
    write_private(&s.master.join("gitea-oauth-secret"), "fixture-oauth-secret");
    s.edit_cfg(|t| {
        format!(
            "buildbot_url = \"http://localhost:{www}/\"\n{t}\n[www.auth]\ntype = \"gitea\"\n\
             base_url = \"http://127.0.0.1:9\"\nclient_id = \"minibot-ci\"\n\
             client_secret_file = \"gitea-oauth-secret\"\n"
        )
    });
    add_user(&s.master, USER, PASSWORD);
    let _master = s.start_master();
    let _w1 = s.start_worker("example-worker", WORKER_PW);
    let _w2 = s.start_worker("second-worker", WORKER2_PW);
    let _w3 = s.start_worker("third-worker", "fixture-password-3");
    for w in ["example-worker", "second-worker", "third-worker"] {
        s.wait_connected(w);
    }

    // Three changes, each a runtests build of 13 steps that triggers a
    // package-deb build.
    for (i, msg) in [
        "Add the hello test\n\nWith a body that says why.",
        "Speed up the test runner",
        "Fix the docs link",
    ]
    .iter()
    .enumerate()
    {
        let sha = s.commit(&format!("f{i}.txt"), msg, msg);
        s.push(&sha, "master", msg);
        s.wait_builds(2 * (i + 1), Duration::from_secs(120));
    }
    // Forced rounds: round r builds each builder with more than r done
    // builds to come (one request a builder, other reasons each round,
    // so none is collapsed).
    let forced = |builders: Vec<&str>, reason: &str| {
        let (code, v) = rpc(
            &s.url("/api/v2/forceschedulers/force"),
            Some(&basic()),
            "force",
            json!({ "builderNames": builders, "reason": reason }),
        );
        assert_eq!(code, 200, "{v}");
        let ids: Vec<i64> = v["result"][1]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_i64().unwrap())
            .collect();
        ids
    };
    let total: usize = SCALE_DONE.iter().map(|(_, n)| n).sum();
    let rounds = SCALE_DONE.iter().map(|(_, n)| *n).max().unwrap();
    for round in 0..rounds {
        let builders: Vec<&str> = SCALE_DONE
            .iter()
            .filter(|(b, n)| !["runtests", "package-deb"].contains(b) && *n > round)
            .map(|(b, _)| *b)
            .collect();
        forced(builders, &format!("round {round}"));
    }
    s.wait_builds(total, Duration::from_secs(300));
    // Three running builds, then two requests that wait (every worker busy).
    std::fs::write(&hold, b"").unwrap();
    let running: Vec<i64> = forced(
        vec!["integration", "deploy-staging", "nightly-soak"],
        "a long one",
    )
    .into_iter()
    .map(|brid| s.wait_build_of(brid))
    .collect();
    let waiting = forced(vec!["lint", "unit-linux"], "waits for a worker");
    let builds = get_json(&s.url("/api/v2/builds"));
    assert_eq!(builds["meta"]["total"], 55, "{builds}");
    let queued = get_json(&s.url("/api/v2/buildrequests?claimed=false&complete=false"));
    assert_eq!(queued["meta"]["total"], 2, "{queued}");

    let failed = get_json(&s.url("/api/v2/builders/docs/builds?limit=1&order=-number"));
    let failed = &failed["builds"][0];
    assert_eq!(failed["results"], 2, "{failed}");
    let logid = s.step_logid(failed["buildid"].as_i64().unwrap(), "docs");
    let number = |buildid: i64| {
        let b = get_json(&s.url(&format!("/api/v2/builds/{buildid}")));
        let b = &b["builds"][0];
        let builder = get_json(&s.url(&format!("/api/v2/builders/{}", b["builderid"])));
        format!(
            "/builders/{}/builds/{}",
            builder["builders"][0]["name"].as_str().unwrap(),
            b["number"]
        )
    };
    let pages: Vec<(&str, String)> = vec![
        ("home", "/".into()),
        ("builder lint", "/builders/lint".into()),
        ("builder runtests", "/builders/runtests".into()),
        ("build failed", number(failed["buildid"].as_i64().unwrap())),
        ("build running", number(running[0])),
        ("build 13 steps", "/builders/runtests/builds/3".into()),
        ("build triggered", "/builders/package-deb/builds/3".into()),
        ("build locked", number(running[1])),
        ("stop", format!("/builds/{}/stop", running[0])),
        ("workers", "/workers".into()),
        ("changes", "/changes".into()),
        ("console", "/console".into()),
        ("queue", "/buildrequests".into()),
        ("request", format!("/buildrequests/{}", waiting[0])),
        ("log", format!("/logs/{logid}")),
        ("login", "/login".into()),
    ];
    let (_, jar) = login(&s, PASSWORD);
    let jar = jar.to_str().unwrap();
    eprintln!(
        "{:16} {:34} {:>8} {:>8} {:>8}",
        "page", "path", "visitor", "user", "HTML"
    );
    let mut heavy = vec![];
    for (name, path) in &pages {
        let (code, visitor) = curl(&[&s.url(path)]);
        assert_eq!(code, 200, "{path}: {visitor}");
        let (code, user) = curl(&["-b", jar, &s.url(path)]);
        assert_eq!(code, 200, "{path}: {user}");
        assert!(user.contains("Log out"), "{path}: not logged in: {user}");
        let log_page = path.starts_with("/logs/")
            || path.starts_with("/builders/") && path.contains("/builds/");
        let request_page = path.starts_with("/buildrequests/");
        for page in [&visitor, &user] {
            assert_eq!(
                page.contains("/assets/log.css"),
                log_page,
                "{path}: the log stylesheet only on build and log pages"
            );
            let script = match (log_page, request_page) {
                (true, _) if path.starts_with("/logs/") => "logpage.js",
                (true, _) => "log.js",
                (_, true) => "request.js",
                _ => "minibot.js",
            };
            assert_eq!(
                page.matches("<script src=").count(),
                1,
                "{path}: one script a page"
            );
            assert!(
                page.contains(&format!("<script src=\"/assets/{script}\"")),
                "{path}: its script is {script}"
            );
        }
        // Kept beside the screenshots, to look at what weighs.
        let file = format!("scale-{}.html", name.replace(' ', "-"));
        std::fs::create_dir_all(screenshots_dir()).unwrap();
        std::fs::write(screenshots_dir().join(file), &user).unwrap();
        let (v, u) = (weight(&s, &visitor), weight(&s, &user));
        eprintln!(
            "{name:16} {path:34} {v:8} {u:8} {:8}",
            visitor.len().max(user.len())
        );
        if v.max(u) > MAX_WEIGHT {
            heavy.push((path.clone(), v, u));
        }
    }
    // The page the weight is most at risk on shows what it should.
    let (_, home) = curl(&[&s.url("/")]);
    let strips: usize = home
        .split("<span class=\"strip\">")
        .skip(1)
        .map(|s| s[..s.find("</span>").unwrap()].matches("<a ").count())
        .sum();
    // Each builder's last 20 at most, the running builds among them.
    let held = ["integration", "deploy-staging", "nightly-soak"];
    let squares: usize = SCALE_DONE
        .iter()
        .map(|(b, n)| (n + usize::from(held.contains(b))).min(20))
        .sum();
    assert_eq!(strips, squares, "{home}");
    // The builder with more builds than a page: 20 listed and charted,
    // the older ones a page further.
    let (_, lint) = curl(&[&s.url("/builders/lint")]);
    assert!(lint.contains("<h2>Builds (25)</h2>"), "{lint}");
    assert_eq!(lint.matches("<rect ").count(), 20, "{lint}");
    assert!(lint.contains("page 1 of 2"), "{lint}");
    // The pages of the merged features show what they weigh for: the
    // release build's 13 steps, its failing one, property, change,
    // artifacts and triggered build; the build it triggered linking back;
    // the lock a running build holds; the Gitea login button.
    let (_, release) = curl(&[&s.url("/builders/runtests/builds/3")]);
    for what in [
        "unit tests",
        "notify",
        "1.4.2",
        "Fix the docs link",
        "id=\"artifacts\"",
        "wheels/minibot-1.4.2-py3-none-any.whl",
        "docs.tar.gz",
        "id=\"chain\"",
        "package-deb",
    ] {
        assert!(
            release.contains(what),
            "the release build shows {what}: {release}"
        );
    }
    assert_eq!(
        release.matches("<div class=\"step\" id=\"step-").count(),
        13,
        "{release}"
    );
    // The log colours only where a log shown has escapes: not for plain
    // echo, always on a log page.
    assert!(!release.contains("/assets/ansi.css"), "{release}");
    let (_, log_page) = curl(&[&s.url(&format!("/logs/{logid}"))]);
    assert!(log_page.contains("/assets/ansi.css"), "{log_page}");
    let (_, triggered) = curl(&[&s.url("/builders/package-deb/builds/3")]);
    assert!(triggered.contains("id=\"chain\""), "{triggered}");
    let (_, locked) = curl(&[&s.url(&number(running[1]))]);
    assert!(locked.contains("lock deploy"), "{locked}");
    let (_, login_page) = curl(&[&s.url("/login")]);
    assert!(login_page.contains("Log in with Gitea"), "{login_page}");
    assert!(
        heavy.is_empty(),
        "pages over {MAX_WEIGHT} bytes (visitor, logged in): {heavy:?}"
    );
    std::fs::write(gates.join("gate-0"), b"").unwrap();
}
