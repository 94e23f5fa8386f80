//! minibot: a small CI system in the style of Buildbot. See ARCHITECTURE.md
//! for the codemap; each module's `//!` header says what it owns.

// Unsafe code only in `sys`, each block with its SAFETY comment.
#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod api;
pub mod auth;
pub mod botmaster;
pub mod build;
pub mod change_hook;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod dialects;
pub mod events;
pub mod html;
pub mod http_server;
pub mod janitor;
pub mod logs;
pub mod logview;
pub mod master;
pub mod model;
pub mod pages;
pub mod poller;
pub mod protocol;
pub mod reporters;
pub mod rpc;
pub mod scheduler;
pub mod sse;
pub mod steps;
pub mod store;
#[allow(unsafe_code)]
pub mod sys;
pub mod worker;
pub mod worker_conn;
pub mod www;
