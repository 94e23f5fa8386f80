//! Plain data shared between components: a change as it enters the system,
//! and Buildbot's result codes. No threads, no I/O.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Buildbot's result codes (SPEC §3).
pub const SUCCESS: i64 = 0;
pub const WARNINGS: i64 = 1;
pub const FAILURE: i64 = 2;
pub const SKIPPED: i64 = 3;
pub const EXCEPTION: i64 = 4;
pub const RETRY: i64 = 5;
pub const CANCELLED: i64 = 6;

/// The Buildbot name of a result code, as shown in state strings and pages.
pub fn result_name(r: i64) -> &'static str {
    match r {
        SUCCESS => "success",
        WARNINGS => "warnings",
        FAILURE => "failure",
        SKIPPED => "skipped",
        EXCEPTION => "exception",
        RETRY => "retry",
        CANCELLED => "cancelled",
        _ => "unknown",
    }
}

/// A change parsed from a hook (or a poller), before it is stored.
/// Field names follow Buildbot's change resource.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NewChange {
    pub author: String,
    pub committer: Option<String>,
    pub comments: String,
    pub branch: Option<String>,
    pub revision: Option<String>,
    pub repository: String,
    pub project: String,
    pub category: Option<String>,
    pub codebase: String,
    pub revlink: Option<String>,
    /// Unix seconds.
    pub when_timestamp: i64,
    pub files: Vec<String>,
    /// Buildbot keeps (value, source) pairs; we keep the value only and
    /// render `[value, "Change"]` in the API.
    pub properties: BTreeMap<String, serde_json::Value>,
}

/// A property (or other JSON value) as plain text: strings without their
/// quotes, null as nothing, anything else as JSON.
pub fn value_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Current Unix time in seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Current Unix time in seconds with sub-second precision (Buildbot's API
/// uses integers; we keep f64 internally for latency measurements).
pub fn now_f64() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
