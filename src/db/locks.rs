//! Locks held by running builds (issue 20 point 4): the `build_locks`
//! table. A row says that build B holds lock N (on worker W for a worker
//! lock, "" for a master lock), exclusively or counting, for the whole
//! build (`step` NULL) or for its step S.
//!
//! A row counts only while its build runs ([`lock_holders`] joins the
//! running builds), so every end of a build gives its locks back,
//! whatever ended it: its end, a stop, a lost worker's RETRY, the RETRY of
//! every running build at a master's start. The rows of ended builds are
//! deleted with the end where the end is written here (`finish_build`,
//! `retry_builds`) and at start ([`release_ended_builds_locks`]).
//!
//! Taking is checking and inserting in one transaction of the one writer
//! (the caller reads [`lock_holders`] on its `Tx`, decides with
//! `master::locks`, then calls [`take_locks`]), so two takers never both
//! see a lock free. Locks do not depend on the config: a reconfig leaves
//! the rows alone.

use super::*;
use anyhow::Result;
use rusqlite::params;

/// One lock a running build holds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LockHolder {
    pub buildid: BuildId,
    pub builder: String,
    pub number: i64,
    pub name: String,
    /// The worker of a worker lock; "" for a master lock.
    pub worker: String,
    pub exclusive: bool,
    /// The step it is held for; None: the whole build.
    pub step: Option<u32>,
}

/// A lock to take, as the holder it would make.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LockWant {
    pub name: String,
    /// The worker of a worker lock; "" for a master lock.
    pub worker: String,
    pub exclusive: bool,
    /// Counting holders allowed at once (the lock's `max_count`).
    pub max_count: u32,
}

/// Every lock held by a running build, oldest holder first.
pub(crate) fn lock_holders(conn: &Conn) -> Result<Vec<LockHolder>> {
    let mut st = conn.raw.prepare_cached(
        "SELECT l.buildid, bl.name, b.number, l.name, l.worker, l.exclusive, l.step
         FROM build_locks l JOIN builds b USING (buildid) JOIN builders bl USING (builderid)
         WHERE b.complete_at IS NULL ORDER BY l.buildid, l.name",
    )?;
    let rows = st.query_map([], |r| {
        Ok(LockHolder {
            buildid: r.get(0)?,
            builder: r.get(1)?,
            number: r.get(2)?,
            name: r.get(3)?,
            worker: r.get(4)?,
            exclusive: r.get(5)?,
            step: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Records that `buildid` holds each of `wants`, for step `step` or (None)
/// the whole build. The caller has checked, in the same transaction, that
/// they are free.
pub(crate) fn take_locks(
    conn: &Tx,
    buildid: BuildId,
    wants: &[LockWant],
    step: Option<u32>,
) -> Result<()> {
    let mut st = conn.raw.prepare_cached(
        "INSERT OR REPLACE INTO build_locks(buildid, name, worker, exclusive, step)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for w in wants {
        st.execute(params![buildid, w.name, w.worker, w.exclusive, step])?;
    }
    Ok(())
}

/// Gives back the locks `buildid` holds for a step (its step has ended);
/// returns how many.
pub(crate) fn release_step_locks(conn: &Tx, buildid: BuildId) -> Result<usize> {
    Ok(conn
        .raw
        .prepare_cached("DELETE FROM build_locks WHERE buildid = ?1 AND step IS NOT NULL")?
        .execute([buildid])?)
}

/// Gives back every lock `buildid` holds (it has ended).
pub(crate) fn release_build_locks(conn: &Tx, buildid: BuildId) -> Result<()> {
    conn.raw
        .prepare_cached("DELETE FROM build_locks WHERE buildid = ?1")?
        .execute([buildid])?;
    Ok(())
}

/// Deletes the rows of builds that no longer run (at start: a master
/// killed mid-build left them); returns how many.
pub(crate) fn release_ended_builds_locks(conn: &Tx) -> Result<usize> {
    Ok(conn.raw.execute(
        "DELETE FROM build_locks WHERE buildid NOT IN
           (SELECT buildid FROM builds WHERE complete_at IS NULL)",
        [],
    )?)
}

/// Adds `ms` to the time a build's steps waited for their locks.
pub(crate) fn add_lock_wait(conn: &Tx, buildid: BuildId, ms: i64) -> Result<()> {
    conn.raw
        .prepare_cached("UPDATE builds SET lock_wait_ms = lock_wait_ms + ?2 WHERE buildid = ?1")?
        .execute(params![buildid, ms])?;
    Ok(())
}

/// Sets a running build's state string (what it is doing, for its page
/// and the API), e.g. what it waits for.
pub(crate) fn set_build_state(conn: &Tx, buildid: BuildId, state: &str) -> Result<()> {
    conn.raw
        .prepare_cached(
            "UPDATE builds SET state_string = ?2 WHERE buildid = ?1 AND complete_at IS NULL",
        )?
        .execute(params![buildid, state])?;
    Ok(())
}
