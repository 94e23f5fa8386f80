//! Link settings for the two binaries (no code is generated).
//!
//! Release binaries on Linux are linked with `scripts/hot-text-<binary>.ld`,
//! which puts the functions a running master or worker executes (measured by
//! `scripts/hot-text` under valgrind) into one output section, `.text.hot`,
//! ahead of the rest of `.text`. Why: the kernel maps a binary's text 64 kB
//! at a time around each page a process executes (fault-around), and in the
//! linker's default order the code that runs is spread over nearly every
//! 64 kB block, so the whole text counted in each process's RSS. Packed
//! together, only the hot part does (docs/performance.md, "Hot text").
//!
//! The script names sections by pattern: Rust symbols are mangled with the
//! v0 scheme (.cargo/config.toml), and their crate hashes are wildcarded,
//! so it holds in every release-like profile and survives code changes: a
//! function it does not name is simply linked in the default order. Debug
//! builds skip it (their thousands of extra sections would only slow the
//! link).
//!
//! Static glibc binaries are also linked with `-z pack-relative-relocs`:
//! the relocations a position-independent binary applies to itself at
//! start-up (pointers in vtables and constant tables, ~8,000 in the master)
//! take 8 bytes per run of pointers instead of 24 bytes each, which the
//! start-up code reads whole: 190 kB less on disk and in RSS. glibc reads
//! that format since 2.36; with an older one (its `libc.a` is what the
//! binary contains) the option is left out.
//!
//! Environment, for `scripts/hot-text`: `MINIBOT_HOT_TEXT=0` links without
//! the script (the layout it profiles); `MINIBOT_LINK_MAP=DIR` writes the
//! linker's map of each binary to `DIR/<binary>.map`.

use std::env;
use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=MINIBOT_HOT_TEXT");
    println!("cargo:rerun-if-env-changed=MINIBOT_LINK_MAP");

    let linux = env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux");
    let release = env::var("PROFILE").as_deref() == Ok("release");
    if !linux {
        return;
    }
    let static_gnu = env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu")
        && env::var("CARGO_CFG_TARGET_FEATURE")
            .is_ok_and(|f| f.split(',').any(|f| f == "crt-static"));
    if static_gnu && glibc_at_least(2, 36) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    let Ok(root) = env::var("CARGO_MANIFEST_DIR") else {
        return;
    };
    let hot_text = release && env::var("MINIBOT_HOT_TEXT").as_deref() != Ok("0");
    let map_dir = env::var("MINIBOT_LINK_MAP").ok();
    for bin in ["minibot", "minibot-worker"] {
        let script = Path::new(&root).join(format!("scripts/hot-text-{bin}.ld"));
        if hot_text {
            println!("cargo:rerun-if-changed={}", script.display());
            if script.exists() {
                // INSERT BEFORE .text in the script keeps the linker's
                // default layout for everything else (lld and GNU ld alike).
                println!("cargo:rustc-link-arg-bin={bin}=-Wl,-T,{}", script.display());
            }
        }
        if let Some(dir) = &map_dir {
            println!("cargo:rustc-link-arg-bin={bin}=-Wl,-Map={dir}/{bin}.map");
        }
    }
}

/// The build machine's glibc version (`getconf GNU_LIBC_VERSION` prints
/// "glibc 2.36"), which is the one a static binary links.
fn glibc_at_least(major: u32, minor: u32) -> bool {
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.trim().trim_start_matches("glibc ").split('.');
    let num = |p: Option<&str>| p.and_then(|p| p.parse::<u32>().ok());
    match (num(parts.next()), num(parts.next())) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => false,
    }
}
