//! Pruning for the janitor (`master::janitor`): finding builds and
//! requests past the horizon, deleting a batch of them with everything only
//! they used, and which builds still exist for the log files on disk.

use super::{Conn, Tx};
use crate::model::{BuildId, BuildsetId, ChangeId, LogId, RequestId};
use anyhow::Result;
use rusqlite::types::FromSql;
use rusqlite::{params, Connection};
use std::collections::HashMap;

/// What one delete removed, per table (also in `status.json`'s
/// `last_janitor_run`, flattened: docs/operations.md).
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct PruneCounts {
    pub builds: u64,
    pub steps: u64,
    pub logs: u64,
    pub buildrequests: u64,
    pub buildsets: u64,
    pub changes: u64,
    /// Artifact rows (with their builds, or past the artifact horizon).
    pub artifacts: u64,
}

impl PruneCounts {
    /// Adds another batch's counts.
    pub(crate) fn add(&mut self, c: &PruneCounts) {
        self.builds += c.builds;
        self.steps += c.steps;
        self.logs += c.logs;
        self.buildrequests += c.buildrequests;
        self.buildsets += c.buildsets;
        self.changes += c.changes;
        self.artifacts += c.artifacts;
    }
}

fn json_ids<T: serde::Serialize>(ids: &[T]) -> String {
    // Infallible for integers; "[]" would only make the batch a no-op.
    serde_json::to_string(ids).unwrap_or_else(|_| "[]".into())
}

/// Ids from a one-column query.
fn ids<T: FromSql>(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<Vec<T>> {
    let mut st = conn.prepare_cached(sql)?;
    let rows = st.query_map(params, |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// `DELETE FROM table WHERE col IN (ids as a JSON array)`; returns the
/// number of rows deleted.
fn delete_in(c: &Connection, table: &str, col: &str, ids_json: &str) -> Result<u64> {
    let sql = format!("DELETE FROM {table} WHERE {col} IN (SELECT value FROM json_each(?1))");
    Ok(c.prepare_cached(&sql)?.execute([ids_json])? as u64)
}

/// `SELECT DISTINCT col FROM table WHERE key IN (ids as a JSON array)`.
fn distinct_in<T: FromSql>(
    c: &Connection,
    col: &str,
    table: &str,
    key: &str,
    ids_json: &str,
) -> Result<Vec<T>> {
    let sql = format!(
        "SELECT DISTINCT {col} FROM {table} WHERE {key} IN (SELECT value FROM json_each(?1))"
    );
    ids(c, &sql, [ids_json])
}

/// A finished build older than the cutoff that is not its builder's newest.
const PRUNABLE_BUILD: &str = "b.complete_at IS NOT NULL AND b.complete_at < ?1
    AND EXISTS (SELECT 1 FROM builds n WHERE n.builderid = b.builderid AND n.number > b.number)";

/// Up to `limit` prunable builds (finished before `cutoff`, not their
/// builder's newest) with ids above `after`, in increasing order.
pub(crate) fn prunable_builds(
    conn: &Conn,
    cutoff: i64,
    after: BuildId,
    limit: i64,
) -> Result<Vec<BuildId>> {
    let sql = format!(
        "SELECT b.buildid FROM builds b WHERE {PRUNABLE_BUILD} AND b.buildid > ?2
         ORDER BY b.buildid LIMIT ?3"
    );
    ids(&conn.raw, &sql, params![cutoff, after, limit])
}

/// Up to `limit` requests completed before `cutoff` without any build left
/// (all pruned, or never built), ids above `after`, in increasing order.
pub(crate) fn prunable_requests(
    conn: &Conn,
    cutoff: i64,
    after: RequestId,
    limit: i64,
) -> Result<Vec<RequestId>> {
    ids(
        &conn.raw,
        "SELECT br.buildrequestid FROM buildrequests br
         WHERE br.complete = 1 AND br.complete_at < ?1 AND br.buildrequestid > ?2
           AND NOT EXISTS (SELECT 1 FROM builds b WHERE b.buildrequestid = br.buildrequestid)
         ORDER BY br.buildrequestid LIMIT ?3",
        params![cutoff, after, limit],
    )
}

/// Of `buildids`, those in the database, with when each finished.
pub(crate) fn builds_complete_at(
    conn: &Conn,
    buildids: &[BuildId],
) -> Result<HashMap<BuildId, Option<i64>>> {
    let mut st = conn.raw.prepare_cached(
        "SELECT buildid, complete_at FROM builds WHERE buildid IN (SELECT value FROM json_each(?1))",
    )?;
    let rows = st.query_map([json_ids(buildids)], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// A deleted build's id and the ids of its logs.
pub(crate) type BuildLogs = (BuildId, Vec<LogId>);

/// Deletes the given builds (those still prunable) and
/// then whatever referred only to them. `extra_requests` are requests
/// without builds to consider as well. Returns the counts and the ids of
/// the builds deleted with their log ids (whose log files the caller
/// removes after commit).
pub(crate) fn delete_old(
    tx: &Tx,
    cutoff: i64,
    buildids: &[BuildId],
    extra_requests: &[RequestId],
) -> Result<(PruneCounts, Vec<BuildLogs>)> {
    let c = &tx.raw;
    let mut n = PruneCounts::default();
    // Checked again here: the reader's view may be a moment old.
    let builds: Vec<BuildId> = ids(
        c,
        &format!(
            "SELECT b.buildid FROM builds b
             WHERE b.buildid IN (SELECT value FROM json_each(?2)) AND {PRUNABLE_BUILD}"
        ),
        params![cutoff, json_ids(buildids)],
    )?;
    let b_json = json_ids(&builds);
    let mut requests: Vec<RequestId> =
        distinct_in(c, "buildrequestid", "builds", "buildid", &b_json)?;
    requests.extend_from_slice(extra_requests);
    let mut logids: std::collections::BTreeMap<BuildId, Vec<LogId>> =
        builds.iter().map(|&b| (b, vec![])).collect();
    {
        let mut st = c.prepare_cached(
            "SELECT s.buildid, l.logid FROM logs l JOIN steps s USING (stepid)
             WHERE s.buildid IN (SELECT value FROM json_each(?1))",
        )?;
        let rows = st.query_map([&b_json], |r| Ok((r.get::<_, BuildId>(0)?, r.get(1)?)))?;
        for row in rows {
            let (b, l) = row?;
            logids.entry(b).or_default().push(l);
        }
    }
    // Children first: foreign keys are on.
    n.logs = c
        .prepare_cached(
            "DELETE FROM logs WHERE stepid IN (SELECT stepid FROM steps
               WHERE buildid IN (SELECT value FROM json_each(?1)))",
        )?
        .execute([&b_json])? as u64;
    n.steps = delete_in(c, "steps", "buildid", &b_json)?;
    // A request skipped in favour of one of these builds names it
    // (`collapsed_into`): that link goes with the build, the request
    // stays until it is old enough itself.
    c.prepare_cached(
        "UPDATE buildrequests SET collapsed_into = NULL
         WHERE collapsed_into IN (SELECT value FROM json_each(?1))",
    )?
    .execute([&b_json])?;
    n.artifacts = super::delete_artifacts_in(tx, &b_json)?;
    n.builds = delete_in(c, "builds", "buildid", &b_json)?;
    // The chain links of those builds (no foreign keys: `db::chain`).
    delete_in(c, "build_triggers", "buildid", &b_json)?;

    // Requests: complete, old, and without a build any more (a retried
    // request may still have a newer build).
    let gone_requests: Vec<RequestId> = ids(
        c,
        "SELECT br.buildrequestid FROM buildrequests br
         WHERE br.buildrequestid IN (SELECT value FROM json_each(?1))
           AND br.complete = 1 AND br.complete_at < ?2
           AND NOT EXISTS (SELECT 1 FROM builds b WHERE b.buildrequestid = br.buildrequestid)",
        params![json_ids(&requests), cutoff],
    )?;
    let r_json = json_ids(&gone_requests);
    let buildsets: Vec<BuildsetId> =
        distinct_in(c, "buildsetid", "buildrequests", "buildrequestid", &r_json)?;
    n.buildrequests = delete_in(c, "buildrequests", "buildrequestid", &r_json)?;

    // Buildsets: complete and without requests left.
    let gone_sets: Vec<BuildsetId> = ids(
        c,
        "SELECT bs.buildsetid FROM buildsets bs
         WHERE bs.buildsetid IN (SELECT value FROM json_each(?1)) AND bs.complete = 1
           AND NOT EXISTS (SELECT 1 FROM buildrequests br WHERE br.buildsetid = bs.buildsetid)",
        [json_ids(&buildsets)],
    )?;
    let s_json = json_ids(&gone_sets);
    let changes: Vec<ChangeId> =
        distinct_in(c, "changeid", "buildset_changes", "buildsetid", &s_json)?;
    delete_in(c, "buildset_changes", "buildsetid", &s_json)?;
    delete_in(c, "build_triggers", "buildsetid", &s_json)?;
    n.buildsets = delete_in(c, "buildsets", "buildsetid", &s_json)?;

    // Changes of those buildsets that no other buildset builds and no
    // scheduler still holds.
    n.changes = c
        .prepare_cached(
            "DELETE FROM changes WHERE changeid IN (SELECT value FROM json_each(?1))
               AND scheduled = 1
               AND changeid NOT IN (SELECT changeid FROM buildset_changes)
               AND changeid NOT IN (SELECT changeid FROM scheduler_changes)",
        )?
        .execute([json_ids(&changes)])? as u64;
    Ok((n, logids.into_iter().collect()))
}
