//! minibot: a small CI system in the style of Buildbot. See ARCHITECTURE.md
//! for the codemap; each module's `//!` header says what it owns.
//!
//! The folders are the architecture: `config` (master.cfg → the typed
//! model), `db` (every SQL statement and the writer thread), `web` (HTTP,
//! pages, API, change hooks), `master` (the daemon's threads: scheduler,
//! botmaster, worker connections, reporters), `worker` (the worker daemon
//! and its steps); `protocol`, `model`, `daemon` and `sys` are shared. The worker binary
//! needs only `worker` and the shared modules: see the `master` feature.

// Unsafe code only in `sys`, each block with its SAFETY comment.
#![deny(unsafe_code)]
#![warn(unreachable_pub)]
#![warn(clippy::undocumented_unsafe_blocks)]

/// `println!` that never panics on a closed pipe ([`say`]).
#[macro_export]
macro_rules! outln {
    ($($t:tt)*) => { $crate::daemon::say(format_args!($($t)*)) };
}

/// `eprintln!` that never panics on a closed pipe ([`say_err`]).
#[macro_export]
macro_rules! errln {
    ($($t:tt)*) => { $crate::daemon::say_err(format_args!($($t)*)) };
}

// Without the `master` feature (on by default) only what the worker binary
// uses is compiled: `daemon`, `protocol`, `sys`, `worker` (and the plain
// `model`), so a worker-only install needs no SQLite, TLS, mail or password
// hashing (Cargo.toml, `[features]`).
#[cfg(feature = "master")]
pub mod config;
pub mod daemon;
#[cfg(feature = "master")]
pub mod db;
#[cfg(feature = "master")]
pub mod demo;
#[cfg(feature = "master")]
pub mod gitea_sync;
#[cfg(feature = "master")]
pub mod master;
pub mod model;
pub mod protocol;
#[cfg(feature = "master")]
pub mod sendchange;
#[allow(unsafe_code)]
pub mod sys;
#[cfg(feature = "master")]
pub mod web;
pub mod worker;
