//! `status.json` in the master directory: what the running master has done
//! that an operator (or a test, or the benchmark) waits for or counts, as
//! state rather than log lines (issue 15 item 6; the log level may hide a
//! line, and its wording is for people). Like `reconfig.json` and
//! `addresses.json` it is written whole (a temporary file renamed into
//! place) and private (0600).
//!
//! Owns: [`MasterStatus`] (the file's shape) and the process-wide recorder.
//! `master::run` calls [`init`] first thing; the threads call
//! the small recording functions below, which do nothing before that (unit
//! tests, `checkconfig`). A change is written at once unless the file was
//! written less than [`MIN_INTERVAL`] ago; then one short-lived `status`
//! thread writes it at the end of the interval, so a flood of refused
//! connections costs at most ten small writes a second.

pub(crate) use crate::master::janitor::Pruned;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The file's name in the master directory.
pub(crate) const STATUS_FILE: &str = "status.json";

/// At most one write of the file per this interval.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// What `STATUS_FILE` holds. Every field has a default, so a reader of an
/// older file (or a newer one with more fields) still gets one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MasterStatus {
    /// The master that wrote it (a master killed with SIGKILL leaves its
    /// file behind; the next one replaces it when it is ready).
    pub pid: u32,
    pub state: MasterState,
    /// Times the botmaster gave memory back after builds, once idle.
    pub idle_memory_releases: u64,
    pub last_idle_memory_release: Option<IdleRelease>,
    /// Janitor runs finished since the start, and what the last one removed.
    pub janitor_runs: u64,
    pub last_janitor_run: Option<Pruned>,
    /// Refused worker logins per configured worker name, by reason.
    pub worker_logins_refused: BTreeMap<String, LoginRefusals>,
    /// Refused worker logins under a name `master.cfg` does not have (one
    /// counter: the names are the guesser's choice).
    pub worker_logins_refused_unknown_name: u64,
    /// Connections to the worker port dropped because too many others were
    /// in their handshake (a flood).
    pub worker_connections_dropped: u64,
    /// Whether `state.sqlite` is sound and still the file the master
    /// writes (checked at start and every few seconds, issue 16 point 5).
    pub database: DatabaseState,
    /// What is wrong with the database and what to do; None while `ok`.
    pub database_problem: Option<String>,
    /// Whether this start read the whole database (`quick_check`), or
    /// skipped it because the files were as the last clean stop left them.
    pub start_quick_check: Option<bool>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatabaseState {
    #[default]
    Ok,
    /// `PRAGMA quick_check` found damage at start: the master did not serve.
    Corrupt,
    /// The file (or its WAL) was deleted while the master ran: hooks and
    /// the web UI answer 503.
    Deleted,
    /// Another file was put at its path while the master ran: as deleted.
    Replaced,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MasterState {
    /// Serving.
    #[default]
    Running,
    /// `stop --clean`: waiting for the running builds, starting no new ones.
    Draining,
}

/// One idle memory release (`botmaster`): kB are the process's anonymous
/// RSS (`/proc/self/status` `RssAnon`), None where `/proc` does not say.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IdleRelease {
    pub released_kb: Option<u64>,
    pub anon_rss_before_kb: Option<u64>,
    pub anon_rss_after_kb: Option<u64>,
    pub ms: f64,
}

/// Why worker logins under one name were refused, counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoginRefusals {
    pub wrong_password: u64,
    pub already_connected: u64,
    /// Refused unchecked: too many failed logins (name, address or all).
    pub too_many_failures: u64,
}

/// Why a worker login was refused (`worker_conn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    WrongPassword,
    AlreadyConnected,
    TooManyFailures,
}

impl MasterStatus {
    /// Reads `dir`'s status file; None if there is none or it is not one.
    pub fn read(dir: &Path) -> Option<MasterStatus> {
        read_json(&dir.join(STATUS_FILE))
    }
}

/// One of the master's JSON status files; None if there is none or it
/// does not parse as a `T` (a reader may race a master that never wrote
/// one: the files are replaced whole, never seen half-written).
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let text = std::fs::read(path).ok()?;
    serde_json::from_slice(&text).ok()
}

struct Recorder {
    dir: PathBuf,
    inner: Mutex<Inner>,
}

struct Inner {
    status: MasterStatus,
    last_write: Option<Instant>,
    /// A `status` thread will write the file at the end of the interval.
    flush_pending: bool,
}

static RECORDER: OnceLock<Recorder> = OnceLock::new();

/// Starts recording into `dir/status.json` and writes it (state running,
/// counters zero), replacing a previous master's. A second call in the same process (there is one master per process)
/// changes nothing.
pub(crate) fn init(dir: &Path) {
    let status = MasterStatus {
        pid: std::process::id(),
        ..MasterStatus::default()
    };
    let recorder = Recorder {
        dir: dir.to_path_buf(),
        inner: Mutex::new(Inner {
            status,
            last_write: None,
            flush_pending: false,
        }),
    };
    if RECORDER.set(recorder).is_ok() {
        update(|_| {});
    }
}

/// Applies `f` to the status and writes it (now, or at the end of the
/// interval). Does nothing before [`init`].
fn update(f: impl FnOnce(&mut MasterStatus)) {
    let Some(rec) = RECORDER.get() else { return };
    // A panic elsewhere while holding the lock cannot leave the counters
    // half-updated in a way that matters: keep recording.
    let mut inner = rec.inner.lock().unwrap_or_else(|p| p.into_inner());
    f(&mut inner.status);
    if inner.flush_pending {
        return;
    }
    let wait = inner
        .last_write
        .map_or(Duration::ZERO, |t| MIN_INTERVAL.saturating_sub(t.elapsed()));
    if wait.is_zero() {
        write_now(rec, &mut inner);
        return;
    }
    inner.flush_pending = true;
    drop(inner);
    let spawned = std::thread::Builder::new()
        .name("status".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            std::thread::sleep(wait);
            let mut inner = rec.inner.lock().unwrap_or_else(|p| p.into_inner());
            inner.flush_pending = false;
            write_now(rec, &mut inner);
        });
    if spawned.is_err() {
        // No thread to spare: write now rather than lose the change.
        let mut inner = rec.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.flush_pending = false;
        write_now(rec, &mut inner);
    }
}

fn write_now(rec: &Recorder, inner: &mut Inner) {
    inner.last_write = Some(Instant::now());
    let path = rec.dir.join(STATUS_FILE);
    let written = serde_json::to_vec(&inner.status)
        .context("encoding the status")
        .and_then(|text| write_private(&path, &text));
    if let Err(e) = written {
        log::warn!("{e:#}");
    }
}

/// Writes `path` whole or not at all (a temporary file, 0600 from its
/// creation, renamed into place): the master's status files.
pub(crate) fn write_private(path: &Path, text: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(text)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    drop(f);
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// The database's state changed (start-up check, `dbwatch`).
pub(crate) fn database(state: DatabaseState, problem: Option<String>) {
    update(|s| {
        s.database = state;
        s.database_problem = problem;
    });
}

/// Whether the start-up `quick_check` ran (false: skipped, the database
/// unchanged since the last clean stop).
pub(crate) fn start_check(ran: bool) {
    update(|s| s.start_quick_check = Some(ran));
}

/// Writes the status now, whatever the interval: for a master about to
/// exit, which would not live to the end of it.
pub(crate) fn flush() {
    let Some(rec) = RECORDER.get() else { return };
    let mut inner = rec.inner.lock().unwrap_or_else(|p| p.into_inner());
    write_now(rec, &mut inner);
}

/// `stop --clean` began.
pub(crate) fn draining() {
    update(|s| s.state = MasterState::Draining);
}

/// The botmaster gave memory back.
pub(crate) fn idle_memory_released(release: IdleRelease) {
    update(|s| {
        s.idle_memory_releases += 1;
        s.last_idle_memory_release = Some(release);
    });
}

/// A janitor run finished.
pub(crate) fn janitor_ran(p: &Pruned) {
    let run = p.clone();
    update(|s| {
        s.janitor_runs += 1;
        s.last_janitor_run = Some(run);
    });
}

/// A worker login was refused; `configured` says whether `name` is in
/// `master.cfg` (other names share one counter, so guessed names cannot
/// grow the file).
pub(crate) fn worker_login_refused(name: &str, configured: bool, why: Refusal) {
    update(|s| {
        if !configured {
            s.worker_logins_refused_unknown_name += 1;
            return;
        }
        let r = s.worker_logins_refused.entry(name.to_string()).or_default();
        match why {
            Refusal::WrongPassword => r.wrong_password += 1,
            Refusal::AlreadyConnected => r.already_connected += 1,
            Refusal::TooManyFailures => r.too_many_failures += 1,
        }
    });
}

/// A connection to the worker port was dropped over the handshake cap.
pub(crate) fn worker_connection_dropped() {
    update(|s| s.worker_connections_dropped += 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_it_writes_and_defaults_missing_fields() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(STATUS_FILE);
        let mut s = MasterStatus {
            pid: 7,
            idle_memory_releases: 2,
            ..MasterStatus::default()
        };
        s.worker_logins_refused
            .entry("w".into())
            .or_default()
            .already_connected = 1;
        write_private(&path, &serde_json::to_vec(&s).unwrap()).unwrap();
        assert_eq!(MasterStatus::read(tmp.path()), Some(s));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&path, r#"{"pid": 3, "state": "draining"}"#).unwrap();
        let old = MasterStatus::read(tmp.path()).unwrap();
        assert_eq!((old.pid, old.state), (3, MasterState::Draining));
    }
}
