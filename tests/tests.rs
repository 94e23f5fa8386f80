//! The integration tests, one binary (issue 15): each former test program
//! is a module here, so the crate is linked once, not once per file. The
//! files stay where they were (`tests/<module>.rs`, `tests/hostile/*.rs`,
//! helpers in `tests/common/mod.rs`); `Cargo.toml` sets `autotests = false`,
//! so a new file runs only once it is declared below.
//!
//! Run one module or one test by path: `cargo test --test tests hostile::http::`,
//! `cargo test --test tests recovery::`. The long `#[ignore]`d suites
//! (reliability, fuzz, the latency measurement) run from `scripts/reliability`
//! and `scripts/fuzz`, which `.ci/run` calls.

mod common;

mod artifacts;
mod badinput_http;
mod badinput_worker;
mod chain;
mod cli;
mod faults_db;
mod faults_reporters;
mod faults_worker;
mod faults_writer;
mod fuzz_parsers;
mod gitea_e2e;
mod gitea_formats;
mod gitea_login;
mod gitea_poller;
mod gitea_pr_merge;
mod gitea_pr_poller;
mod gitea_sync;
mod guide;
mod hostile;
mod locks;
mod ops_commands;
mod ops_idle_memory;
mod ops_janitor;
mod ops_sshd;
mod ops_supervisord;
mod recovery;
mod release_example;
mod reliability_crash;
mod reliability_disk;
mod reliability_worker_kill;
mod reliability_worker_reconnect;
mod reliability_workers;
mod scheduler_clock;
mod scheduler_collapse;
mod secrets;
mod upgrade;
mod web_ansi;
mod web_api;
mod web_browser;
mod web_gzip;
mod web_latency;
mod web_live;
mod web_logs;
mod web_look;
mod web_queue;
mod worker_start;
mod worker_steps;
