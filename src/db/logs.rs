//! Where log text lives: files under the master directory, named by build
//! and log id (the `logs` table holds only their metadata), and what the
//! log page says about a log (`log_page_info`).

use super::Conn;
use crate::model::{BuildId, LogId};
use anyhow::Result;
use rusqlite::OptionalExtension;
use std::path::{Path, PathBuf};

/// A log as its page names it: whose step, which build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogPageInfo {
    pub logid: LogId,
    pub name: String,
    pub complete: bool,
    pub step: String,
    pub buildid: BuildId,
    pub number: i64,
    pub builder: String,
}

/// The log page's header facts of `logid`; None: no such log.
pub(crate) fn log_page_info(conn: &Conn, logid: LogId) -> Result<Option<LogPageInfo>> {
    Ok(conn
        .raw
        .prepare_cached(
            "SELECT l.name, l.complete, s.name, b.buildid, b.number, r.name \
             FROM logs l JOIN steps s ON s.stepid = l.stepid \
             JOIN builds b ON b.buildid = s.buildid \
             JOIN builders r ON r.builderid = b.builderid WHERE l.logid = ?1",
        )?
        .query_row([logid], |r| {
            Ok(LogPageInfo {
                logid,
                name: r.get(0)?,
                complete: r.get::<_, i64>(1)? != 0,
                step: r.get(2)?,
                buildid: r.get(3)?,
                number: r.get(4)?,
                builder: r.get(5)?,
            })
        })
        .optional()?)
}

/// The directory of the log files, under the master directory.
pub fn log_root(master_dir: &Path) -> PathBuf {
    master_dir.join("logs")
}

/// Where a new log's text is written: `logs/<buildid>-<logid>.log`. One
/// directory for all builds: a directory per build cost an inode
/// allocation (`mkdir`) per build, a large part of the master's CPU per
/// build on ext4 (docs/performance.md).
pub(crate) fn new_log_path(master_dir: &Path, buildid: BuildId, logid: LogId) -> PathBuf {
    log_root(master_dir).join(format!("{buildid}-{logid}.log"))
}

/// Where the text of an existing log is: `new_log_path`, or for a log
/// written by an older minibot (a directory per build) its
/// `logs/<buildid>/<logid>.log`, when only that file exists.
pub(crate) fn log_path(master_dir: &Path, buildid: BuildId, logid: LogId) -> PathBuf {
    let path = new_log_path(master_dir, buildid, logid);
    if path.exists() {
        return path;
    }
    let old = legacy_log_dir(master_dir, buildid).join(format!("{logid}.log"));
    if old.exists() {
        old
    } else {
        path
    }
}

/// The per-build log directory older minibots wrote.
pub(crate) fn legacy_log_dir(master_dir: &Path, buildid: BuildId) -> PathBuf {
    log_root(master_dir).join(buildid.to_string())
}

/// The build a name in `log_root` belongs to: `<buildid>-<logid>.log`, or
/// an older minibot's `<buildid>` directory.
pub fn log_entry_build(name: &str) -> Option<BuildId> {
    let Some(stem) = name.strip_suffix(".log") else {
        return name.parse().ok();
    };
    let (build, log) = stem.split_once('-')?;
    log.parse::<i64>().ok()?;
    build.parse().ok()
}
