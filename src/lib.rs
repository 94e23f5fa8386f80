//! minibot: a small CI system in the style of Buildbot. See ARCHITECTURE.md
//! for the codemap; each module's `//!` header says what it owns.
//!
//! The folders are the architecture: `config` (master.cfg → the typed
//! model), `db` (every SQL statement and the writer thread), `web` (HTTP,
//! pages, API, change hooks), `master` (the daemon's threads: scheduler,
//! botmaster, worker connections, reporters), `worker` (the worker daemon
//! and its steps); `protocol`, `model`, `daemon` and `sys` are shared.

// Unsafe code only in `sys`, each block with its SAFETY comment.
#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod config;
pub mod daemon;
pub mod db;
pub mod demo;
pub mod master;
pub mod model;
pub mod protocol;
#[allow(unsafe_code)]
pub mod sys;
pub mod web;
pub mod worker;
