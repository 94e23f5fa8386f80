//! Artifacts' metadata (issue 20): the `artifacts` table, one row per file
//! an `upload` step stored under `artifacts/<buildid>/<name>` (the path is
//! [`artifact_path`]'s; the file is the master's `master::artifacts`).
//! Rows are written once a file is whole and its checksum checked; the
//! janitor deletes them with their build or past its artifact horizon.

use super::{Conn, Tx};
use crate::model::{ArtifactId, BuildId, BuildResult, BuilderId};
use anyhow::Result;
use rusqlite::{params, OptionalExtension};
use std::path::{Path, PathBuf};

/// One stored artifact.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ArtifactRow {
    pub artifactid: ArtifactId,
    pub buildid: BuildId,
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

const COLS: &str = "artifactid, buildid, name, size, sha256 FROM artifacts";

fn row(r: &rusqlite::Row) -> rusqlite::Result<ArtifactRow> {
    Ok(ArtifactRow {
        artifactid: r.get(0)?,
        buildid: r.get(1)?,
        name: r.get(2)?,
        size: r.get::<_, i64>(3)?.max(0) as u64,
        sha256: r.get(4)?,
    })
}

/// The directory holding every build's artifacts.
pub fn artifact_root(master_dir: &Path) -> PathBuf {
    master_dir.join("artifacts")
}

/// A build's artifact directory.
pub fn artifact_dir(master_dir: &Path, buildid: BuildId) -> PathBuf {
    artifact_root(master_dir).join(buildid.to_string())
}

/// Where artifact `name` (already checked: `protocol::check_artifact_name`)
/// of `buildid` is stored.
pub fn artifact_path(master_dir: &Path, buildid: BuildId, name: &str) -> PathBuf {
    artifact_dir(master_dir, buildid).join(name)
}

/// Records a stored artifact.
pub(crate) fn insert_artifact(
    tx: &Tx,
    buildid: BuildId,
    stepnumber: u32,
    name: &str,
    size: u64,
    sha256: &str,
) -> Result<ArtifactId> {
    tx.raw
        .prepare_cached(
            "INSERT INTO artifacts (buildid, stepnumber, name, size, sha256, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            buildid,
            stepnumber,
            name,
            size as i64,
            sha256,
            crate::model::now()
        ])?;
    Ok(ArtifactId(tx.raw.last_insert_rowid()))
}

pub(crate) fn artifact(conn: &Conn, id: ArtifactId) -> Result<Option<ArtifactRow>> {
    Ok(conn
        .raw
        .prepare_cached(&format!("SELECT {COLS} WHERE artifactid = ?1"))?
        .query_row([id], row)
        .optional()?)
}

/// A build's artifacts by name.
pub(crate) fn build_artifacts(conn: &Conn, buildid: BuildId) -> Result<Vec<ArtifactRow>> {
    let mut st = conn
        .raw
        .prepare_cached(&format!("SELECT {COLS} WHERE buildid = ?1 ORDER BY name"))?;
    let rows = st.query_map([buildid], row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Artifact `name` of build `buildid`.
pub(crate) fn artifact_of_build(
    conn: &Conn,
    buildid: BuildId,
    name: &str,
) -> Result<Option<ArtifactRow>> {
    Ok(conn
        .raw
        .prepare_cached(&format!("SELECT {COLS} WHERE buildid = ?1 AND name = ?2"))?
        .query_row(params![buildid, name], row)
        .optional()?)
}

/// Artifact `name` of build number `number` of a builder.
pub(crate) fn artifact_of_number(
    conn: &Conn,
    builderid: BuilderId,
    number: i64,
    name: &str,
) -> Result<Option<ArtifactRow>> {
    Ok(conn
        .raw
        .prepare_cached(&format!(
            "SELECT {COLS} WHERE name = ?3 AND buildid =
             (SELECT buildid FROM builds WHERE builderid = ?1 AND number = ?2)"
        ))?
        .query_row(params![builderid, number, name], row)
        .optional()?)
}

/// Artifact `name` of the newest successful build of a builder that has one.
pub(crate) fn artifact_of_last_success(
    conn: &Conn,
    builderid: BuilderId,
    name: &str,
) -> Result<Option<ArtifactRow>> {
    Ok(conn
        .raw
        .prepare_cached(
            "SELECT a.artifactid, a.buildid, a.name, a.size, a.sha256
             FROM artifacts a JOIN builds b USING (buildid)
             WHERE b.builderid = ?1 AND b.results = ?2 AND a.name = ?3
             ORDER BY b.number DESC LIMIT 1",
        )?
        .query_row(params![builderid, BuildResult::Success, name], row)
        .optional()?)
}

/// Artifact `name` of the build whose trigger step started `buildid`'s
/// buildset: of the newest such build that has one (a retried build waits
/// for the buildsets its earlier attempt made, so several builds may have
/// triggered it). None: no trigger step started `buildid`; Some(None):
/// none of its triggering builds has the artifact.
pub(crate) fn artifact_of_triggering(
    conn: &Conn,
    buildid: BuildId,
    name: &str,
) -> Result<Option<Option<ArtifactRow>>> {
    let parents: Vec<BuildId> = conn
        .raw
        .prepare_cached(
            "SELECT t.buildid FROM builds b JOIN buildrequests br USING (buildrequestid)
             JOIN build_triggers t ON t.buildsetid = br.buildsetid
             WHERE b.buildid = ?1 ORDER BY t.buildid DESC",
        )?
        .query_map([buildid], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if parents.is_empty() {
        return Ok(None);
    }
    for p in parents {
        if let Some(row) = artifact_of_build(conn, p, name)? {
            return Ok(Some(Some(row)));
        }
    }
    Ok(Some(None))
}

/// Deletes the artifact rows of the builds in `builds_json` (a JSON array
/// of ids), before the builds themselves go; returns how many.
pub(crate) fn delete_artifacts_in(tx: &Tx, builds_json: &str) -> Result<u64> {
    Ok(tx
        .raw
        .prepare_cached("DELETE FROM artifacts WHERE buildid IN (SELECT value FROM json_each(?1))")?
        .execute([builds_json])? as u64)
}

/// Up to `limit` builds that finished before `cutoff` and still have
/// artifacts, ids above `after`, in increasing order.
pub(crate) fn expired_artifact_builds(
    conn: &Conn,
    cutoff: i64,
    after: BuildId,
    limit: i64,
) -> Result<Vec<BuildId>> {
    let mut st = conn.raw.prepare_cached(
        "SELECT DISTINCT a.buildid FROM artifacts a JOIN builds b USING (buildid)
         WHERE b.complete_at IS NOT NULL AND b.complete_at < ?1 AND a.buildid > ?2
         ORDER BY a.buildid LIMIT ?3",
    )?;
    let rows = st.query_map(params![cutoff, after, limit], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Deletes the artifact rows of `builds`; returns how many.
pub(crate) fn delete_build_artifacts(tx: &Tx, builds: &[BuildId]) -> Result<u64> {
    let json = serde_json::to_string(builds)?;
    delete_artifacts_in(tx, &json)
}

/// Of `buildids`, those with artifact rows.
pub(crate) fn builds_with_artifacts(conn: &Conn, buildids: &[BuildId]) -> Result<Vec<BuildId>> {
    let mut st = conn.raw.prepare_cached(
        "SELECT DISTINCT buildid FROM artifacts WHERE buildid IN (SELECT value FROM json_each(?1))",
    )?;
    let rows = st.query_map([serde_json::to_string(buildids)?], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
