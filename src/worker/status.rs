//! `DIR/worker-status.json`: where the worker daemon says how its
//! connection to the master stands (connecting, connected, refused, not a
//! master, unreachable, stopped), so that nobody has to read `worker.log` to
//! know: a detached `minibot-worker start` waits on it for the outcome of
//! the first handshake, operators and monitoring can read it, and the tests
//! wait on it.
//!
//! Owns only the file. The daemon's main thread (the connect loop) is the
//! one writer; every write is a whole new file renamed over the old one
//! (mode 0600, like everything in the worker directory), so a reader never
//! sees half of it. No threads or channels.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

pub const STATUS_FILE: &str = "worker-status.json";

/// How the connection to the master stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Started, or the connection was lost: an attempt is under way or due.
    Connecting,
    /// Authenticated: builds can run here.
    Connected,
    /// The master said no (wrong name or password, a worker of that name
    /// already connected, another protocol version), or could not prove
    /// it knows the password.
    Refused,
    /// Something answers at that address, but not a minibot master's
    /// worker port (e.g. its web port).
    NotAMaster,
    /// Nobody listening (connection refused), no route, or the connection
    /// dropped before the master said hello.
    Unreachable,
    /// The daemon has exited (stopped, or gave up after `maxretries`).
    Stopped,
}

impl State {
    /// Whether a first attempt has come to an end in this state.
    pub fn is_outcome(self) -> bool {
        match self {
            State::Connecting => false,
            State::Connected
            | State::Refused
            | State::NotAMaster
            | State::Unreachable
            | State::Stopped => true,
        }
    }
}

/// The file's contents (docs/operations.md shows an example).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub state: State,
    /// The daemon that wrote it: a file left by an earlier run is told
    /// apart by this.
    pub pid: u32,
    /// `master` from worker.cfg.
    pub master: String,
    pub name: String,
    /// Unix seconds when this state began (repeated failures of one kind
    /// keep it).
    pub since: u64,
    /// What went wrong last, in words; None while connected.
    pub last_error: Option<String>,
    /// Failed connection attempts in a row.
    pub failures: u32,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Keeps the last status written, so `since` survives repeated failures of
/// one kind and a write is skipped when nothing changed.
pub(crate) struct StatusFile {
    dir: std::path::PathBuf,
    last: Status,
}

impl StatusFile {
    /// Writes the first status, `Connecting`.
    pub(crate) fn create(dir: &Path, master: &str, name: &str) -> StatusFile {
        let f = StatusFile {
            dir: dir.to_path_buf(),
            last: Status {
                state: State::Connecting,
                pid: std::process::id(),
                master: master.to_string(),
                name: name.to_string(),
                since: now(),
                last_error: None,
                failures: 0,
            },
        };
        f.write();
        f
    }

    /// Records a new state; `since` moves only when the state changes.
    pub(crate) fn set(&mut self, state: State, last_error: Option<String>, failures: u32) {
        let since = if state == self.last.state {
            self.last.since
        } else {
            now()
        };
        let next = Status {
            state,
            since,
            last_error,
            failures,
            ..self.last.clone()
        };
        if next != self.last {
            self.last = next;
            self.write();
        }
    }

    fn write(&self) {
        // A status that cannot be written is logged, never fatal: the
        // worker's job is to run builds, and the log says the rest.
        if let Err(e) = write(&self.dir, &self.last) {
            log::warn!("{e:#}");
        }
    }
}

fn write(dir: &Path, status: &Status) -> Result<()> {
    let text = serde_json::to_string_pretty(status).context("encoding the worker status")?;
    super::write_private(&dir.join(STATUS_FILE), &(text + "\n"), 0o600)
}

/// Reads `DIR/worker-status.json`; None if it is missing or unreadable
/// (e.g. written by a newer version).
pub fn read(dir: &Path) -> Option<Status> {
    let text = std::fs::read_to_string(dir.join(STATUS_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn written_whole_private_and_since_kept_for_repeats() {
        let tmp = tempfile::tempdir().unwrap();
        let mut f = StatusFile::create(tmp.path(), "h:1", "w");
        let s = read(tmp.path()).unwrap();
        assert_eq!(s.state, State::Connecting);
        assert_eq!(s.pid, std::process::id());
        let mode = std::fs::metadata(tmp.path().join(STATUS_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        f.set(State::Unreachable, Some("x".into()), 1);
        let first = read(tmp.path()).unwrap();
        f.last.since -= 10; // as if the first failure was 10 s ago
        f.set(State::Unreachable, Some("y".into()), 2);
        let s = read(tmp.path()).unwrap();
        assert_eq!((s.state, s.failures), (State::Unreachable, 2));
        assert_eq!(s.since, first.since - 10);
        assert_eq!(s.last_error.as_deref(), Some("y"));
        assert!(!tmp.path().join("worker-status.tmp").exists());
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(tmp.path().join(STATUS_FILE)).unwrap())
                .unwrap();
        assert_eq!(json["state"], "unreachable");
    }
}
