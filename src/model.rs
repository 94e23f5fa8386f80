//! Plain data shared between components: the database ids, a change as it
//! enters the system, and Buildbot's results. No threads, no I/O.
//!
//! An id of one kind is not an id of another: this does not compile.
//!
//! ```compile_fail
//! fn stop(_build: minibot::model::BuildId) {}
//! stop(minibot::model::StepId(3));
//! ```

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Defines the database ids: each a newtype over the row's integer key, so
/// that passing one kind of id where another is expected does not compile.
/// Serialized as the bare integer (`serde(transparent)`), so the JSON API
/// and the wire protocol show plain numbers; `db::ids` stores them.
macro_rules! ids {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize,
            Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = std::num::ParseIntError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse().map($name)
            }
        }
    )*};
}

ids! {
    /// A build (`builds.buildid`).
    BuildId;
    /// A build request (`buildrequests.buildrequestid`).
    RequestId;
    /// A buildset (`buildsets.buildsetid`).
    BuildsetId;
    /// A change (`changes.changeid`).
    ChangeId;
    /// A build step (`steps.stepid`).
    StepId;
    /// A log's metadata (`logs.logid`).
    LogId;
    /// A builder (`builders.builderid`).
    BuilderId;
    /// A worker (`workers.workerid`).
    WorkerId;
    /// A web user (`users.userid`).
    UserId;
    /// A stored artifact (`artifacts.artifactid`).
    ArtifactId;
}

#[cfg(feature = "master")]
/// Buildbot's results (SPEC §3). Stored, and shown in the API, as
/// Buildbot's integer codes ([`BuildResult::code`]); the database layer
/// reads an unknown code as an error naming the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum BuildResult {
    Success,
    Warnings,
    Failure,
    Skipped,
    Exception,
    Retry,
    Cancelled,
}

#[cfg(feature = "master")]
impl BuildResult {
    /// Buildbot's integer code.
    pub(crate) fn code(self) -> i64 {
        match self {
            BuildResult::Success => 0,
            BuildResult::Warnings => 1,
            BuildResult::Failure => 2,
            BuildResult::Skipped => 3,
            BuildResult::Exception => 4,
            BuildResult::Retry => 5,
            BuildResult::Cancelled => 6,
        }
    }

    /// The result with Buildbot's code `code`; None for any other integer.
    pub(crate) fn from_code(code: i64) -> Option<BuildResult> {
        Some(match code {
            0 => BuildResult::Success,
            1 => BuildResult::Warnings,
            2 => BuildResult::Failure,
            3 => BuildResult::Skipped,
            4 => BuildResult::Exception,
            5 => BuildResult::Retry,
            6 => BuildResult::Cancelled,
            _ => return None,
        })
    }

    /// The Buildbot name, as shown in state strings and pages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            BuildResult::Success => "success",
            BuildResult::Warnings => "warnings",
            BuildResult::Failure => "failure",
            BuildResult::Skipped => "skipped",
            BuildResult::Exception => "exception",
            BuildResult::Retry => "retry",
            BuildResult::Cancelled => "cancelled",
        }
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

#[cfg(feature = "master")]
/// A property (or other JSON value) as plain text: strings without their
/// quotes, null as nothing, anything else as JSON.
pub(crate) fn value_text(v: &serde_json::Value) -> String {
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

#[cfg(feature = "master")]
/// Current Unix time in seconds with sub-second precision (Buildbot's API
/// uses integers; we keep f64 internally for latency measurements).
pub(crate) fn now_f64() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(all(test, feature = "master"))]
mod tests {
    use super::BuildResult;

    #[test]
    fn build_result_codes_are_buildbots() {
        for code in 0..7 {
            let r = BuildResult::from_code(code).unwrap();
            assert_eq!(r.code(), code);
        }
        assert_eq!(BuildResult::from_code(7), None);
        assert_eq!(BuildResult::from_code(-1), None);
        assert_eq!(BuildResult::Retry.code(), 5);
        assert_eq!(BuildResult::Cancelled.name(), "cancelled");
    }
}
