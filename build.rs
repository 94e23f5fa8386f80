//! Two jobs that only a build script can do:
//!
//! - Puts the git commit of the checkout being built into
//!   `MINIBOT_GIT_COMMIT` for `--version` (`daemon::version`). Cargo says
//!   nothing about version control; outside a git checkout (a source
//!   tarball) the variable is unset and `--version` shows the package
//!   version alone.
//! - Minifies the web UI's stylesheets and scripts (`src/web/assets/`) into
//!   `OUT_DIR` with the `minifier` crate, for `web::assets` to include:
//!   every page carries them and must stay under 20 KB, while the sources
//!   keep their comments (`ansi.css`, the log colours, apart: only
//!   pages showing coloured logs load it). At build time, not at run time: the master does
//!   no work and holds no second copy for it, and the binary has no
//!   minifier in it.

use std::path::Path;
use std::process::Command;

/// Where `minibot.css` turns to the rules only build and log pages need
/// (served as `/assets/log.css`).
const LOG_MARK: &str = "/* ==== Build and log pages only";

/// The script bundles as served, each `core.js` and one part.
const JS_BUNDLES: [(&str, &str); 4] = [
    ("minibot.js", "overview.js"),
    ("log.js", "logs.js"),
    ("logpage.js", "logpage.js"),
    ("request.js", "request.js"),
];

fn assets() {
    let dir = Path::new("src/web/assets");
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR for build scripts");
    let out = Path::new(&out);
    let read = |name: &str| {
        println!("cargo:rerun-if-changed=src/web/assets/{name}");
        std::fs::read_to_string(dir.join(name))
            .unwrap_or_else(|e| panic!("reading src/web/assets/{name}: {e}"))
    };
    let write = |name: &str, text: String| {
        std::fs::write(out.join(name), text).unwrap_or_else(|e| panic!("writing {name}: {e}"))
    };
    let css_source = read("minibot.css");
    let Some(mark) = css_source.find(LOG_MARK) else {
        panic!("src/web/assets/minibot.css has lost its `{LOG_MARK}` line");
    };
    let (page, log) = css_source.split_at(mark);
    let css = |part: &str, name: &str| match minifier::css::minify(part) {
        Ok(m) => write(name, m.to_string()),
        Err(e) => panic!("minifying src/web/assets/minibot.css ({name}): {e}"),
    };
    css(page, "minibot.css");
    css(log, "log.css");
    // The log colours (`ansi.css`, 2 KB): their own stylesheet, linked only
    // where a log shown has colours, and fetched by the script when live
    // text brings some (`web::assets`).
    match minifier::css::minify(&read("ansi.css")) {
        Ok(m) => write("ansi.css", m.to_string()),
        Err(e) => panic!("minifying src/web/assets/ansi.css: {e}"),
    }
    // The scripts: one bundle a page, the core and the part of the page's
    // kind, so a page carries only what it runs (`web::assets`).
    let core = read("core.js");
    for (bundle, part) in JS_BUNDLES {
        let js = format!(
            "'use strict';\n(function () {{\n{core}\n{}\n}})();\n",
            read(part)
        );
        write(bundle, minifier::js::minify(&js).to_string());
    }
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    assets();
    let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return;
    };
    println!("cargo:rustc-env=MINIBOT_GIT_COMMIT={commit}");
    // Build again when HEAD moves: a commit, a checkout, a pull.
    let mut watch = vec!["HEAD".to_string(), "packed-refs".to_string()];
    if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch.push(r);
    }
    for p in watch {
        // Only files that exist: Cargo runs the script on every build for
        // a missing one (a checkout without packed-refs).
        match git(&["rev-parse", "--git-path", &p]) {
            Some(path) if std::path::Path::new(&path).exists() => {
                println!("cargo:rerun-if-changed={path}");
            }
            _ => {}
        }
    }
}
