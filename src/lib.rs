//! minibot: a small CI system in the style of Buildbot. See ARCHITECTURE.md
//! for the codemap; each module's `//!` header says what it owns.

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
pub mod sys;
pub mod worker;
pub mod worker_conn;
pub mod www;
