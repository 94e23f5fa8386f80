//! What reporters read about a finished or started build.

use super::*;
use crate::model::BuildResult;
use anyhow::Result;
use rusqlite::{params, OptionalExtension};

/// What a reporter says about a build.
#[derive(Debug, Clone, Default)]
pub(crate) struct BuildReport {
    pub builderid: BuilderId,
    pub builder: String,
    pub number: i64,
    pub worker: Option<String>,
    pub results: Option<BuildResult>,
    pub state_string: String,
    pub properties: Props,
    pub reason: String,
    pub ss: SourceStamp,
    /// (name, results) of each step, in order.
    pub steps: Vec<(String, Option<BuildResult>)>,
    /// (revision, author, comments) of the changes the build is for.
    pub changes: Vec<(Option<String>, String, String)>,
    /// The results of the builder's previous finished build (not RETRY).
    pub previous_results: Option<BuildResult>,
    /// The newest change of the build's buildset, the one whose revision
    /// the source stamp carries (None for forced and timed builds).
    pub last_change: Option<ChangeSource>,
}

/// Where a build's newest change came from, for reporters that must not
/// trust what an unauthenticated sender wrote.
#[derive(Debug, Clone, Default)]
pub(crate) struct ChangeSource {
    pub revision: Option<String>,
    pub repository: String,
    pub properties: Props,
    /// Whether it came from a change hook whose signature was verified
    /// (gitea, github): only those store a delivery id (`change_hook`
    /// makes sure of that), so the repository and revision were vouched
    /// for by the forge holding the secret.
    pub signed: bool,
}

impl BuildReport {
    /// A build property's value as text (None when unset or null).
    pub(crate) fn prop(&self, name: &str) -> Option<String> {
        match self.properties.get(name).map(|(v, _)| v) {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(v) => Some(v.to_string()),
        }
    }
}

pub(crate) fn build_report(conn: &Conn, buildid: BuildId) -> Result<Option<BuildReport>> {
    let row = conn
        .raw
        .prepare_cached(
            "SELECT b.buildid, b.builderid, bl.name, b.number, w.name, b.results,
                    b.state_string, b.properties, bs.reason, bs.branch, bs.revision,
                    bs.repository, bs.project, bs.codebase, br.buildsetid
             FROM builds b JOIN builders bl USING (builderid)
             JOIN buildrequests br USING (buildrequestid)
             JOIN buildsets bs ON bs.buildsetid = br.buildsetid
             LEFT JOIN workers w ON w.workerid = b.workerid
             WHERE b.buildid = ?1",
        )?
        .query_row([buildid], |r| {
            let props: String = r.get(7)?;
            Ok((
                BuildReport {
                    builderid: r.get(1)?,
                    builder: r.get(2)?,
                    number: r.get(3)?,
                    worker: r.get(4)?,
                    results: result_col(r, 5, "builds", r.get(0)?)?,
                    state_string: r.get(6)?,
                    properties: json_col(&props, "builds", r.get(0)?, "properties")?,
                    reason: r.get(8)?,
                    ss: SourceStamp {
                        branch: r.get(9)?,
                        revision: r.get(10)?,
                        repository: r.get(11)?,
                        project: r.get(12)?,
                        codebase: r.get(13)?,
                    },
                    ..Default::default()
                },
                r.get::<_, BuildsetId>(14)?,
            ))
        })
        .optional()?;
    let Some((mut rep, bsid)) = row else {
        return Ok(None);
    };
    let mut st = conn.raw.prepare_cached(
        "SELECT name, results, stepid FROM steps WHERE buildid = ?1 ORDER BY number",
    )?;
    rep.steps = st
        .query_map([buildid], |r| {
            Ok((r.get(0)?, result_col(r, 1, "steps", r.get(2)?)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut st = conn.raw.prepare_cached(
        "SELECT c.revision, c.author, c.comments FROM buildset_changes bc
         JOIN changes c USING (changeid) WHERE bc.buildsetid = ?1 ORDER BY c.changeid",
    )?;
    rep.changes = st
        .query_map([bsid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    rep.last_change = conn
        .raw
        .prepare_cached(
            "SELECT c.revision, c.repository, c.properties, c.delivery IS NOT NULL, c.changeid
             FROM buildset_changes bc JOIN changes c USING (changeid)
             WHERE bc.buildsetid = ?1 ORDER BY c.changeid DESC LIMIT 1",
        )?
        .query_row([bsid], |r| {
            let props: String = r.get(2)?;
            Ok(ChangeSource {
                revision: r.get(0)?,
                repository: r.get(1)?,
                properties: json_col(&props, "changes", r.get(4)?, "properties")?,
                signed: r.get(3)?,
            })
        })
        .optional()?;
    rep.previous_results = conn
        .raw
        .prepare_cached(
            "SELECT results, buildid FROM builds WHERE builderid = ?1 AND buildid < ?2
               AND complete_at IS NOT NULL AND results IS NOT NULL AND results != ?3
             ORDER BY buildid DESC LIMIT 1",
        )?
        .query_row(params![rep.builderid, buildid, BuildResult::Retry], |r| {
            result_col(r, 0, "builds", r.get(1)?)
        })
        .optional()?
        .flatten();
    Ok(Some(rep))
}
