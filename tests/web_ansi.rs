//! ANSI colours in the log views (issue 17 point 7): a real build prints
//! 256-colour, truecolour, reverse and strike escapes (and an OSC title, a
//! 40 KB parameter list and an out-of-range colour); the build page and
//! the log page render them as classes of `/assets/ansi.css`, which only
//! pages showing logs with escapes link (beside `/assets/log.css`, which
//! every build and log page links). In headless Chromium the computed colours are the
//! ones asked for (within the 4-bit quantisation), under the pages' CSP,
//! with no console error. A live build page whose log had no colour
//! fetches the palette when a coloured line arrives.

use crate::common::browser::{browser, CHROMIUM};
use crate::common::*;
use std::time::Duration;

/// The repository's test: one line per case.
const ANSI_TEST: &str = r#"E = '\x1b'
print(E + '[38;5;196m' + 'c256' + E + '[0m')
print(E + '[38;2;0;128;255m' + 'truecolour' + E + '[0m')
print(E + '[48;5;21m' + 'bg256' + E + '[0m')
print(E + '[7m' + 'reversed' + E + '[27m')
print(E + '[9m' + 'struck' + E + '[29m')
print(E + ']0;a window title' + '\x07' + 'after-osc')
print(E + '[' + '1;' * 20000 + '1m' + 'hostile-params' + E + '[0m')
print(E + '[31;38;5;99999m' + 'bad-index' + E + '[0m')
print('OK')
"#;

/// What each case renders as on the pages.
const EXPECTED: [&str; 7] = [
    "<span class=\"fx frf fg0 fb0\">c256</span>",
    "<span class=\"fx fr0 fg8 fbf\">truecolour</span>",
    "<span class=\"bx br0 bg0 bbf\">bg256</span>",
    "<span class=\"rf rb\">reversed</span>",
    "<span class=\"as\">struck</span>",
    "<span class=\"ab\">hostile-params</span>",
    "<span class=\"f1\">bad-index</span>",
];

const LINK: &str = "<link rel=\"stylesheet\" href=\"/assets/log.css\">";
const PALETTE: &str = "<link rel=\"stylesheet\" href=\"/assets/ansi.css\">";

/// A builder for pushes to `live`: its step prints a green line once the
/// file `gate` exists (the test creates it with the page open).
fn live_cfg(gate: &std::path::Path) -> String {
    format!(
        "[[schedulers]]\nname = \"live\"\ntype = \"single_branch\"\nbranch = \"live\"\n\
         builders = [\"live\"]\n[[builders]]\nname = \"live\"\nworkers = [\"example-worker\"]\n\
         [[builders.steps]]\ntype = \"shell\"\nname = \"live\"\n\
         command = \"echo plain; while [ ! -e {} ]; do sleep 0.1; done; printf '\\\\033[32mlive-green\\\\033[0m\\\\n'\"\n",
        gate.display()
    )
}

#[test]
fn logs_render_256_colours_truecolour_reverse_and_strike() {
    let s = Setup::new(ANSI_TEST, "");
    let gate = s.tmp.path().join("live-gate");
    s.edit_cfg(|t| t + &live_cfg(&gate));
    let _master = s.start_master();
    let _worker = s.start_worker("example-worker", WORKER_PW);
    s.wait_connected("example-worker");
    s.push(&s.head, "master", "ansi");
    let b = s.wait_builds(1, Duration::from_secs(60));
    assert_eq!(b[0]["results"], 0, "{b:?}");
    let buildid = b[0]["buildid"].as_i64().unwrap();
    let logid = s.step_logid(buildid, "test");

    let build_page = format!("/builders/runtests/builds/{}", b[0]["number"]);
    for page in [build_page.as_str(), &format!("/logs/{logid}")] {
        let (code, html) = curl(&[&s.url(page)]);
        assert_eq!(code, 200, "{page}");
        assert!(html.contains(LINK), "{page} does not link log.css");
        assert!(html.contains(PALETTE), "{page} does not link ansi.css");
        for want in EXPECTED {
            // The log page cuts lines at 4 KiB, inside the long one's
            // escape (which then colours nothing).
            if !(want.contains("hostile") && page.starts_with("/logs")) {
                assert!(html.contains(want), "{page}: no {want}");
            }
        }
        // The OSC string is gone with its text; no escape is left.
        assert!(html.contains("after-osc") && !html.contains("window title"));
        assert!(!html.contains('\x1b'), "{page}: an escape left");
        // The 40 KB parameter list did not reach the page.
        assert!(html.len() < 64 * 1024, "{page}: {} bytes", html.len());
    }
    // Pages without logs do not carry the palette.
    let (_, home) = curl(&[&s.url("/")]);
    assert!(!home.contains("log.css") && !home.contains("ansi.css"));
    let head = curl_headers(&[&s.url("/assets/ansi.css")]).to_ascii_lowercase();
    assert!(head.contains("content-type: text/css"), "{head}");
    let (_, css) = curl(&[&s.url("/assets/ansi.css")]);
    assert!(css.contains(".fx{") && css.contains(".f1{"), "{css}");
    let (_, log_css) = curl(&[&s.url("/assets/log.css")]);
    assert!(log_css.contains("pre.log{") && !log_css.contains(".fx{"));

    if !require(
        &format!("{CHROMIUM} (apt-get install chromium)"),
        std::path::Path::new(CHROMIUM).exists(),
    ) {
        return;
    }
    let (_chromium, mut cdp) = browser(&s);
    for page in [build_page.as_str(), &format!("/logs/{logid}")] {
        cdp.navigate(&s.url(page));
        let style = |cdp: &mut crate::common::browser::Cdp, text: &str, prop: &str| {
            cdp.wait_js(
                &format!("{text}'s {prop}"),
                &format!(
                    "(() => {{ const e = [...document.querySelectorAll('pre.log span')]
                        .find((e) => e.textContent === '{text}');
                      return e && getComputedStyle(e).{prop}; }})()"
                ),
            )
        };
        for (text, prop, want) in [
            // 196 is (255, 0, 0); (0, 128, 255) is 4 bits a channel off.
            ("c256", "color", "rgb(255, 0, 0)"),
            ("truecolour", "color", "rgb(0, 136, 255)"),
            ("bg256", "backgroundColor", "rgb(0, 0, 255)"),
            // Reverse: the log's own colours swapped.
            ("reversed", "color", "rgb(29, 31, 33)"),
            ("reversed", "backgroundColor", "rgb(221, 221, 221)"),
            ("struck", "textDecorationLine", "line-through"),
        ] {
            assert_eq!(style(&mut cdp, text, prop), want, "{page}: {text}");
        }
        cdp.screenshot(&format!(
            "ansi-{}",
            if page.starts_with("/logs") {
                "log"
            } else {
                "build"
            }
        ));
    }
    // A live build page without colours yet: no palette linked; the
    // green line that comes live brings it (logs.js `palette`).
    s.push(&s.head, "live", "live");
    let number = wait_for("the live build to start", Duration::from_secs(60), || {
        let v = get_json(&s.url("/api/v2/builders/live/builds?complete=false"));
        v["builds"][0]["number"].as_i64()
    });
    cdp.navigate(&s.url(&format!("/builders/live/builds/{number}")));
    cdp.wait_js(
        "the log's first line",
        "document.querySelector('pre.log') && document.querySelector('pre.log').textContent.includes('plain')",
    );
    let linked = "!!document.querySelector('link[href=\"/assets/ansi.css\"]')";
    assert_eq!(
        cdp.eval(linked),
        false,
        "a page without colours links the palette"
    );
    std::fs::write(&gate, b"").unwrap();
    let green = cdp.wait_js(
        "the live green line, coloured",
        "(() => { const e = [...document.querySelectorAll('pre.log span')]
            .find((e) => e.textContent === 'live-green');
          const c = e && getComputedStyle(e).color;
          return c === 'rgb(85, 204, 85)' && c; })()",
    );
    assert_eq!(green, "rgb(85, 204, 85)");
    assert_eq!(cdp.eval(linked), true);
    // No CSP violation or failed load.
    cdp.assert_no_errors();
}
