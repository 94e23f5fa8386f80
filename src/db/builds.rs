//! Builds, their steps and logs' metadata as a running build writes them,
//! and crash recovery (`retry_running_builds`).

use super::*;
use crate::model::BuildResult;
use anyhow::Result;
use rusqlite::{params, OptionalExtension};

/// Closes builds of `workerid` (or of every worker when None) that are still
/// running as RETRY and puts their requests back on the queue. Used at start
/// (the previous master died) and when a worker is lost.
pub(crate) fn retry_running_builds(conn: &Tx, workerid: Option<WorkerId>) -> Result<Vec<BuildId>> {
    retry_worker_builds(conn, workerid, &[])
}

/// As [`retry_running_builds`], leaving alone the builds in `except`
/// (builds whose real end the master holds and is still writing).
pub(crate) fn retry_worker_builds(
    conn: &Tx,
    workerid: Option<WorkerId>,
    except: &[BuildId],
) -> Result<Vec<BuildId>> {
    let ids: Vec<BuildId> = {
        let mut st = conn.raw.prepare_cached(
            "SELECT buildid FROM builds WHERE complete_at IS NULL
             AND (?1 IS NULL OR workerid = ?1)",
        )?;
        let rows = st.query_map([workerid], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<Vec<BuildId>>>()?
    };
    let ids: Vec<BuildId> = ids.into_iter().filter(|i| !except.contains(i)).collect();
    retry_builds(conn, &ids, "retry: lost worker or master")
}

/// Closes the builds `ids` that are still running as RETRY with state
/// `state`, their open steps and logs with them, and puts their requests
/// back on the queue; returns those it closed.
pub(crate) fn retry_builds(conn: &Tx, ids: &[BuildId], state: &str) -> Result<Vec<BuildId>> {
    let now = crate::model::now();
    let mut closed = vec![];
    for id in ids {
        let n = conn
            .raw
            .prepare_cached(
                "UPDATE builds SET complete_at = ?2, results = ?3, state_string = ?4
                 WHERE buildid = ?1 AND complete_at IS NULL",
            )?
            .execute(params![id, now, BuildResult::Retry, state])?;
        if n == 0 {
            continue;
        }
        release_build_locks(conn, *id)?;
        close_open_steps(conn, *id, now, BuildResult::Retry, " (retry)")?;
        conn.raw
            .prepare_cached(
                "UPDATE buildrequests SET claimed_at = NULL
             WHERE buildrequestid = (SELECT buildrequestid FROM builds WHERE buildid = ?1)
               AND complete = 0",
            )?
            .execute([id])?;
        closed.push(*id);
    }
    Ok(closed)
}

/// Ends the steps of a build still open with `results`, their state
/// string suffixed with `suffix`, and completes their logs.
fn close_open_steps(
    conn: &Tx,
    buildid: BuildId,
    now: i64,
    results: BuildResult,
    suffix: &str,
) -> Result<()> {
    conn.raw
        .prepare_cached(
            "UPDATE steps SET complete_at = ?2, results = ?3, state_string = state_string || ?4
             WHERE buildid = ?1 AND complete_at IS NULL",
        )?
        .execute(params![buildid, now, results, suffix])?;
    conn.raw
        .prepare_cached(
            "UPDATE logs SET complete = 1 WHERE complete = 0
             AND stepid IN (SELECT stepid FROM steps WHERE buildid = ?1)",
        )?
        .execute([buildid])?;
    Ok(())
}

/// Stops a build that no worker connection runs (its connection is gone
/// and its close was never written, or the master lost track of it): ends
/// it, its open steps and its request as CANCELLED. Returns false when it
/// was already complete (or does not exist).
pub(crate) fn cancel_orphan_build(conn: &Tx, buildid: BuildId, state: &str) -> Result<bool> {
    let now = crate::model::now();
    let open = conn
        .raw
        .prepare_cached("SELECT 1 FROM builds WHERE buildid = ?1 AND complete_at IS NULL")?
        .query_row([buildid], |_| Ok(()))
        .optional()?
        .is_some();
    if !open {
        return Ok(false);
    }
    close_open_steps(conn, buildid, now, BuildResult::Cancelled, " (cancelled)")?;
    finish_build(conn, buildid, BuildResult::Cancelled, state)?;
    Ok(true)
}

/// Sets build property `name` to `value` (source `source`), next to the
/// properties the build started with: the commit a git step checked out
/// (`got_revision`, only from the git step's own report, so with its
/// source it names what was built, not what a request asked for) and a
/// set_property step's value.
pub(crate) fn set_build_property(
    conn: &Tx,
    buildid: BuildId,
    name: &str,
    value: &str,
    source: &str,
) -> Result<()> {
    // json_quote makes any name one path element (`$."a.b"`).
    conn.raw
        .prepare_cached(
            "UPDATE builds SET properties = json_set(properties, '$.' || json_quote(?2), json_array(?3, ?4))
         WHERE buildid = ?1",
        )?
        .execute(params![buildid, name, value, source])?;
    Ok(())
}

/// Ends a build with `results`; completes its request, and its buildset
/// when that was the buildset's last request. A build already ended (by a
/// retry or a stop) is left as it is, and so is its request, which that
/// end settled.
pub(crate) fn finish_build(
    conn: &Tx,
    buildid: BuildId,
    results: BuildResult,
    state: &str,
) -> Result<()> {
    let now = crate::model::now();
    let n = conn
        .raw
        .prepare_cached(
            "UPDATE builds SET complete_at = ?2, results = ?3, state_string = ?4
         WHERE buildid = ?1 AND complete_at IS NULL",
        )?
        .execute(params![buildid, now, results, state])?;
    if n == 0 {
        return Ok(());
    }
    release_build_locks(conn, buildid)?;
    let (brid, bsid): (RequestId, BuildsetId) = conn
        .raw
        .prepare_cached(
            "SELECT br.buildrequestid, br.buildsetid FROM builds b
             JOIN buildrequests br USING (buildrequestid) WHERE b.buildid = ?1",
        )?
        .query_row([buildid], |r| Ok((r.get(0)?, r.get(1)?)))?;
    conn.raw
        .prepare_cached(
            "UPDATE buildrequests SET complete = 1, results = ?2, complete_at = ?3
         WHERE buildrequestid = ?1",
        )?
        .execute(params![brid, results, now])?;
    complete_buildset_if_done(conn, bsid, now)
}

/// Starts a step and its stdio log; returns (stepid, logid).
pub(crate) fn start_step(
    conn: &Tx,
    buildid: BuildId,
    number: u32,
    name: &str,
) -> Result<(StepId, LogId)> {
    let now = crate::model::now();
    conn.raw
        .prepare_cached(
            "INSERT INTO steps(buildid, number, name, started_at, state_string)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            buildid,
            number,
            name,
            now,
            format!("{name} running")
        ])?;
    let stepid = StepId(conn.raw.last_insert_rowid());
    conn.raw
        .prepare_cached(
            "INSERT INTO logs(stepid, name, slug, type) VALUES (?1, 'stdio', 'stdio', 's')",
        )?
        .execute([stepid])?;
    let logid = LogId(conn.raw.last_insert_rowid());
    conn.raw
        .prepare_cached("UPDATE builds SET state_string = ?2 WHERE buildid = ?1")?
        .execute(params![buildid, format!("building: {name}")])?;
    Ok((stepid, logid))
}

/// Log totals as the master has written them.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LogTotals {
    pub num_lines: i64,
    pub size: i64,
}

pub(crate) fn update_log(conn: &Tx, logid: LogId, t: LogTotals, complete: bool) -> Result<()> {
    conn.raw
        .prepare_cached(
            "UPDATE logs SET num_lines = ?2, size = ?3, complete = ?4 WHERE logid = ?1",
        )?
        .execute(params![logid, t.num_lines, t.size, complete as i64])?;
    Ok(())
}

pub(crate) fn finish_step(
    conn: &Tx,
    stepid: StepId,
    results: BuildResult,
    state: &str,
) -> Result<()> {
    conn.raw
        .prepare_cached(
            "UPDATE steps SET complete_at = ?2, results = ?3, state_string = ?4 WHERE stepid = ?1",
        )?
        .execute(params![stepid, crate::model::now(), results, state])?;
    Ok(())
}

/// Whether a build has ended; None when there is no such build.
pub(crate) fn build_complete(conn: &Conn, buildid: BuildId) -> Result<Option<bool>> {
    Ok(conn
        .raw
        .prepare_cached("SELECT complete_at IS NOT NULL FROM builds WHERE buildid = ?1")?
        .query_row([buildid], |r| r.get(0))
        .optional()?)
}

/// The id of build `number` of a builder named by name or id (an id
/// wins when a name is also some builder's id, as in the API's paths).
pub(crate) fn build_id_by_number(
    conn: &Conn,
    builder: &str,
    number: i64,
) -> Result<Option<BuildId>> {
    Ok(conn
        .raw
        .prepare_cached(
            "SELECT b.buildid FROM builds b JOIN builders bl USING (builderid)
             WHERE b.number = ?2 AND (bl.name = ?1 OR CAST(bl.builderid AS TEXT) = ?1)
             ORDER BY CAST(bl.builderid AS TEXT) = ?1 DESC LIMIT 1",
        )?
        .query_row(params![builder, number], |r| r.get(0))
        .optional()?)
}

/// The names of the steps a build was to run (its builder's steps when it
/// was claimed); None for a build from before they were recorded.
pub(crate) fn planned_steps(conn: &Conn, buildid: BuildId) -> Result<Option<Vec<String>>> {
    let text: Option<Option<String>> = conn
        .raw
        .prepare_cached("SELECT planned_steps FROM builds WHERE buildid = ?1")?
        .query_row([buildid], |r| r.get(0))
        .optional()?;
    match text.flatten() {
        Some(t) => Ok(Some(json_col(&t, "builds", buildid.0, "planned_steps")?)),
        None => Ok(None),
    }
}

/// Whether build `buildid` has steps it was to run and never started (a
/// build from before the plan was recorded has none).
pub(crate) fn has_unrun_steps(conn: &Conn, buildid: BuildId) -> Result<bool> {
    Ok(conn
        .raw
        .prepare_cached(
            "SELECT coalesce(json_array_length(b.planned_steps), 0)
                    > (SELECT count(*) FROM steps s WHERE s.buildid = b.buildid)
             FROM builds b WHERE b.buildid = ?1",
        )?
        .query_row([buildid], |r| r.get(0))
        .optional()?
        .unwrap_or(false))
}
