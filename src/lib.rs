//! minibot: a small CI system in the style of Buildbot. See ARCHITECTURE.md
//! for the codemap; each module's `//!` header says what it owns.

pub mod config;
pub mod model;
pub mod protocol;
pub mod store;
