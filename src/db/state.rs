//! What schedulers and pollers keep across restarts: a poller's last
//! revision per branch, a scheduler's named values, held changes of
//! schedulers no longer configured.

use super::{Conn, Tx};
use anyhow::Result;
use rusqlite::OptionalExtension;
use std::collections::BTreeMap;

/// The last revision poller `poller` saw, per branch.
pub(crate) fn poller_state(conn: &Conn, poller: &str) -> Result<BTreeMap<String, String>> {
    let mut st = conn
        .raw
        .prepare_cached("SELECT branch, revision FROM poller_state WHERE poller = ?1")?;
    let rows = st.query_map([poller], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(crate) fn set_poller_state(
    conn: &Tx,
    poller: &str,
    branch: &str,
    revision: &str,
) -> Result<()> {
    conn.raw
        .prepare_cached(
            "INSERT INTO poller_state(poller, branch, revision) VALUES (?1, ?2, ?3)
         ON CONFLICT(poller, branch) DO UPDATE SET revision = excluded.revision",
        )?
        .execute([poller, branch, revision])?;
    Ok(())
}

/// Forgets what a poller saw under `branch` (a pull request no longer open).
pub(crate) fn delete_poller_state(conn: &Tx, poller: &str, branch: &str) -> Result<()> {
    conn.raw
        .prepare_cached("DELETE FROM poller_state WHERE poller = ?1 AND branch = ?2")?
        .execute([poller, branch])?;
    Ok(())
}

pub(crate) fn scheduler_state(conn: &Conn, scheduler: &str, name: &str) -> Result<Option<String>> {
    Ok(conn
        .raw
        .prepare_cached("SELECT value FROM scheduler_state WHERE scheduler = ?1 AND name = ?2")?
        .query_row([scheduler, name], |r| r.get(0))
        .optional()?)
}

pub(crate) fn set_scheduler_state(
    conn: &Tx,
    scheduler: &str,
    name: &str,
    value: &str,
) -> Result<()> {
    conn.raw
        .prepare_cached(
            "INSERT INTO scheduler_state(scheduler, name, value) VALUES (?1, ?2, ?3)
         ON CONFLICT(scheduler, name) DO UPDATE SET value = excluded.value",
        )?
        .execute([scheduler, name, value])?;
    Ok(())
}

/// Drops what schedulers no longer in the config held (after a reconfig).
pub(crate) fn forget_schedulers_except(conn: &Tx, keep: &[String]) -> Result<usize> {
    let held: Vec<String> = {
        let mut st = conn
            .raw
            .prepare_cached("SELECT DISTINCT scheduler FROM scheduler_changes")?;
        let rows = st.query_map([], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let mut n = 0;
    for name in held.iter().filter(|h| !keep.contains(h)) {
        n += conn
            .raw
            .prepare_cached("DELETE FROM scheduler_changes WHERE scheduler = ?1")?
            .execute([name])?;
    }
    Ok(n)
}
