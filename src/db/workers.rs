//! Builders and workers: the config mirror (`sync_config`), worker
//! connections, pausing.

use super::*;
use crate::config::Config;
use anyhow::Result;
use rusqlite::{params, OptionalExtension};
use std::collections::BTreeMap;

/// Makes the builders and workers tables match the loaded config. Old
/// builders and workers stay (their builds keep their history) but are
/// marked unconfigured.
pub fn sync_config(conn: &Tx, cfg: &Config) -> Result<()> {
    // Runs at every start and reconfig, once logging is up: the place the
    // config's dangerous-but-allowed settings get into master.log.
    for w in cfg.warnings() {
        log::warn!("master.cfg: {w}");
    }
    // Only what differs from the mirror is written: with the config
    // unchanged (a restart, most reconfigs) no page changes, so the WAL
    // that the next start reads back does not grow with each restart.
    let workers: Vec<&str> = cfg.workers.iter().map(|w| w.name.as_str()).collect();
    unconfigure_others(conn, "workers", &workers)?;
    for w in &workers {
        conn.raw
            .prepare_cached(
                "INSERT INTO workers(name) VALUES (?1)
                 ON CONFLICT(name) DO UPDATE SET configured = 1 WHERE configured != 1",
            )?
            .execute([w])?;
    }
    let builders: Vec<&str> = cfg.builders.iter().map(|b| b.name.as_str()).collect();
    unconfigure_others(conn, "builders", &builders)?;
    let mut pairs: Vec<[&str; 2]> = vec![];
    for b in &cfg.builders {
        conn.raw
            .prepare_cached(
                "INSERT INTO builders(name, description, tags) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO UPDATE SET configured = 1,
                   description = excluded.description, tags = excluded.tags
                 WHERE configured != 1 OR description IS NOT excluded.description
                   OR tags IS NOT excluded.tags",
            )?
            .execute(params![b.name, b.description, json(&b.tags)?])?;
        pairs.extend(b.workers.iter().map(|w| [b.name.as_str(), w.as_str()]));
    }
    conn.raw
        .prepare_cached(
            "DELETE FROM configured_workers WHERE (builderid, workerid) NOT IN
               (SELECT b.builderid, w.workerid FROM json_each(?1) p
                JOIN builders b ON b.name = p.value ->> 0
                JOIN workers w ON w.name = p.value ->> 1)",
        )?
        .execute([json(&pairs)?])?;
    for [b, w] in &pairs {
        conn.raw
            .prepare_cached(
                "INSERT OR IGNORE INTO configured_workers(builderid, workerid)
                 SELECT b.builderid, w.workerid FROM builders b, workers w
                 WHERE b.name = ?1 AND w.name = ?2",
            )?
            .execute([b, w])?;
    }
    Ok(())
}

/// Marks the rows of `table` (`workers` or `builders`) whose name is not
/// in `names` as no longer configured, writing none that already are.
fn unconfigure_others(conn: &Tx, table: &'static str, names: &[&str]) -> Result<()> {
    conn.raw
        .prepare_cached(&format!(
            "UPDATE {table} SET configured = 0
             WHERE configured != 0 AND name NOT IN (SELECT value FROM json_each(?1))"
        ))?
        .execute([json(&names)?])?;
    Ok(())
}

/// A worker's id from an id or a name (an all-digit text is tried as an id
/// first, as the API's paths do).
pub(crate) fn worker_id(conn: &Conn, worker: &str) -> Result<Option<WorkerId>> {
    if let Ok(id) = worker.parse::<i64>() {
        let found = conn
            .raw
            .prepare_cached("SELECT workerid FROM workers WHERE workerid = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?;
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(conn
        .raw
        .prepare_cached("SELECT workerid FROM workers WHERE name = ?1")?
        .query_row([worker], |r| r.get(0))
        .optional()?)
}

/// Pauses or unpauses a worker; false if there is none.
pub(crate) fn set_worker_paused(conn: &Tx, workerid: WorkerId, paused: bool) -> Result<bool> {
    let n = conn
        .raw
        .prepare_cached("UPDATE workers SET paused = ?2 WHERE workerid = ?1")?
        .execute(params![workerid, paused as i64])?;
    Ok(n > 0)
}

/// Names of paused workers: the botmaster gives them no new builds.
pub(crate) fn paused_workers(conn: &Conn) -> Result<std::collections::HashSet<String>> {
    let mut st = conn
        .raw
        .prepare_cached("SELECT name FROM workers WHERE paused = 1")?;
    let rows = st.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Marks a worker (dis)connected and records what it told us about itself.
pub(crate) fn set_worker_connected(
    conn: &Tx,
    name: &str,
    info: Option<&BTreeMap<String, String>>,
    connected: bool,
) -> Result<WorkerId> {
    conn.raw
        .prepare_cached("INSERT OR IGNORE INTO workers(name, configured) VALUES (?1, 1)")?
        .execute([name])?;
    match info {
        Some(info) => conn
            .raw.prepare_cached(
                "UPDATE workers SET connected = ?2, info = ?3, last_connection = ?4 WHERE name = ?1",
            )?
            .execute(params![name, connected as i64, json(info)?, crate::model::now()])?,
        None => conn
            .raw.prepare_cached("UPDATE workers SET connected = ?2 WHERE name = ?1")?
            .execute(params![name, connected as i64])?,
    };
    Ok(conn
        .raw
        .prepare_cached("SELECT workerid FROM workers WHERE name = ?1")?
        .query_row([name], |r| r.get(0))?)
}

/// At start: no worker is connected yet.
pub(crate) fn reset_connections(conn: &Tx) -> Result<()> {
    // Only rows that change: a restart after a clean stop writes nothing.
    conn.raw
        .execute("UPDATE workers SET connected = 0 WHERE connected != 0", [])?;
    Ok(())
}

/// A builder's name from its id.
pub(crate) fn builder_name(conn: &Conn, builderid: BuilderId) -> Result<Option<String>> {
    Ok(conn
        .raw
        .prepare_cached("SELECT name FROM builders WHERE builderid = ?1")?
        .query_row([builderid], |r| r.get(0))
        .optional()?)
}
