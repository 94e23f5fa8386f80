//! minibot: a small CI system in the style of Buildbot. See ARCHITECTURE.md
//! for the codemap; each module's `//!` header says what it owns.

// Unsafe code only in `sys`, each block with its SAFETY comment.
#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub(crate) mod api;
pub mod auth;
pub mod botmaster;
pub(crate) mod build;
pub(crate) mod change_hook;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod dialects;
pub(crate) mod events;
pub(crate) mod html;
pub(crate) mod http_server;
pub(crate) mod janitor;
pub(crate) mod logs;
pub(crate) mod logview;
pub mod master;
pub mod model;
pub(crate) mod pages;
pub(crate) mod poller;
pub mod protocol;
pub(crate) mod reporters;
pub(crate) mod rpc;
pub mod scheduler;
pub(crate) mod sse;
pub(crate) mod steps;
pub mod store;
#[allow(unsafe_code)]
pub mod sys;
pub mod worker;
pub mod worker_conn;
pub(crate) mod www;
