//! Puts the git commit of the checkout being built into `MINIBOT_GIT_COMMIT`
//! for `--version` (`daemon::version`). Cargo says nothing about version
//! control, so a build script is the only way to learn it; outside a git
//! checkout (a source tarball) the variable is unset and `--version` shows
//! the package version alone.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
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
