//! Changes: storing a hook's or poller's changes, and reading the ones the
//! scheduler has still to classify or holds for a tree-stable timer.

use super::*;
use crate::model::NewChange;
use anyhow::Result;
use rusqlite::params;

/// Stores the changes of one hook delivery. A delivery id seen before
/// (Gitea's "redeliver") returns the original ids and stores nothing.
pub fn insert_changes(
    conn: &Tx,
    changes: &[NewChange],
    delivery: Option<&str>,
) -> Result<Vec<ChangeId>> {
    if let Some(d) = delivery {
        let mut st = conn
            .raw
            .prepare_cached("SELECT changeid FROM changes WHERE delivery = ?1 ORDER BY changeid")?;
        let old: Vec<ChangeId> = st
            .query_map([d], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        if !old.is_empty() {
            return Ok(old);
        }
    }
    let mut ids = Vec::with_capacity(changes.len());
    for c in changes {
        let props: Props = c
            .properties
            .iter()
            .map(|(k, v)| (k.clone(), (v.clone(), "Change".to_string())))
            .collect();
        conn.raw
            .prepare_cached(
                "INSERT INTO changes(author, committer, comments, branch, revision, repository,
               project, category, codebase, revlink, when_timestamp, files, properties, delivery)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            )?
            .execute(params![
                c.author,
                c.committer,
                c.comments,
                c.branch,
                c.revision,
                c.repository,
                c.project,
                c.category,
                c.codebase,
                c.revlink,
                c.when_timestamp,
                json(&c.files)?,
                json(&props)?,
                delivery,
            ])?;
        ids.push(ChangeId(conn.raw.last_insert_rowid()));
    }
    Ok(ids)
}

/// A stored change, as the scheduler needs it.
#[derive(Debug, Clone)]
pub(crate) struct ChangeRow {
    pub changeid: ChangeId,
    pub branch: Option<String>,
    pub revision: Option<String>,
    pub repository: String,
    pub project: String,
    pub category: Option<String>,
    pub codebase: String,
    pub files: Vec<String>,
    pub properties: Props,
}

const CHANGE_COLS: &str =
    "changeid, branch, revision, repository, project, category, codebase, files, properties";

fn change_row(r: &rusqlite::Row) -> rusqlite::Result<ChangeRow> {
    let files: String = r.get(7)?;
    let props: String = r.get(8)?;
    Ok(ChangeRow {
        changeid: r.get(0)?,
        branch: r.get(1)?,
        revision: r.get(2)?,
        repository: r.get(3)?,
        project: r.get(4)?,
        category: r.get(5)?,
        codebase: r.get(6)?,
        files: json_col(&files, "changes", r.get(0)?, "files")?,
        properties: json_col(&props, "changes", r.get(0)?, "properties")?,
    })
}

/// Changes the scheduler has not classified yet, oldest first.
pub(crate) fn unscheduled_changes(conn: &Conn) -> Result<Vec<ChangeRow>> {
    let mut st = conn.raw.prepare_cached(&format!(
        "SELECT {CHANGE_COLS} FROM changes WHERE scheduled = 0 ORDER BY changeid LIMIT 1000"
    ))?;
    let rows = st.query_map([], change_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Changes held by a scheduler's tree-stable timer, oldest first.
pub(crate) fn held_changes(conn: &Conn, scheduler: &str) -> Result<Vec<ChangeRow>> {
    let mut st = conn.raw.prepare_cached(&format!(
        "SELECT {CHANGE_COLS} FROM changes WHERE changeid IN
           (SELECT changeid FROM scheduler_changes WHERE scheduler = ?1) ORDER BY changeid"
    ))?;
    let rows = st.query_map([scheduler], change_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Names of schedulers holding changes (to re-arm their timers at start).
pub(crate) fn schedulers_holding_changes(conn: &Conn) -> Result<Vec<String>> {
    let mut st = conn
        .raw
        .prepare_cached("SELECT DISTINCT scheduler FROM scheduler_changes")?;
    let rows = st.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// A scheduler's tree-stable timer (or nightly `only_if_changed`) holds
/// these changes until it fires; held again, a change stays held once.
pub(crate) fn hold_changes(conn: &Tx, held: &[(String, ChangeId)]) -> Result<()> {
    for (scheduler, changeid) in held {
        conn.raw
            .prepare_cached(
                "INSERT OR IGNORE INTO scheduler_changes(scheduler, changeid) VALUES (?1, ?2)",
            )?
            .execute(params![scheduler, changeid])?;
    }
    Ok(())
}

/// The scheduler has classified these changes: they are no longer pending.
pub(crate) fn mark_scheduled(conn: &Tx, changeids: &[ChangeId]) -> Result<()> {
    for id in changeids {
        conn.raw
            .prepare_cached("UPDATE changes SET scheduled = 1 WHERE changeid = ?1")?
            .execute([id])?;
    }
    Ok(())
}

/// Ends what `scheduler` holds (its timer fired, or it is gone).
pub(crate) fn release_held_changes(conn: &Tx, scheduler: &str) -> Result<usize> {
    Ok(conn
        .raw
        .prepare_cached("DELETE FROM scheduler_changes WHERE scheduler = ?1")?
        .execute([scheduler])?)
}
