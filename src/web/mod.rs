//! The web side of the master: everything that arrives over HTTP.
//!
//! `http_server` owns connections (bounds, timeouts, the reception thread);
//! `www` routes a request to a change hook (`change_hook` + `dialects`),
//! the read API (`api`), the write actions (`rpc`), the pages (`pages`,
//! `logview`, built with `html`'s escaping type; `assets` their
//! stylesheet and script), a live stream (`sse`) or "Log in with Gitea"
//! (`gitea_login`).

pub(crate) mod api;
pub(crate) mod artifacts;
pub(crate) mod assets;
pub(crate) mod change_hook;
pub mod dialects;
pub(crate) mod gitea_login;
pub(crate) mod html;
pub(crate) mod http_server;
pub(crate) mod logview;
pub(crate) mod pages;
pub(crate) mod rpc;
pub(crate) mod sse;
pub(crate) mod www;
