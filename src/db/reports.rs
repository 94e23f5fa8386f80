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

/// What a reporter's final delivery for a build is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ReportKind {
    /// The final commit status (Gitea).
    Status,
    /// The mail about the finished build.
    Mail,
}

impl ReportKind {
    fn as_str(self) -> &'static str {
        match self {
            ReportKind::Status => "status",
            ReportKind::Mail => "mail",
        }
    }
}

/// How a final delivery was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReportOutcome {
    Sent,
    /// Refused for good (bad token, unknown repository): not tried again.
    Failed,
    /// Nothing to send (not this reporter's builder, no mail for this
    /// result, no commit known).
    Nothing,
    /// A newer status for the same commit and context replaced it.
    Superseded,
}

impl ReportOutcome {
    fn as_str(self) -> &'static str {
        match self {
            ReportOutcome::Sent => "sent",
            ReportOutcome::Failed => "failed",
            ReportOutcome::Nothing => "none",
            ReportOutcome::Superseded => "superseded",
        }
    }
}

/// The newest build when `reporter` was first configured (0: none): the
/// first time it is asked, the newest build now.
pub(crate) fn reporter_since(tx: &Tx, reporter: &str) -> Result<BuildId> {
    tx.raw
        .prepare_cached(
            "INSERT OR IGNORE INTO reporter_state(reporter, since, after_build)
             VALUES (?1, ?2, (SELECT COALESCE(MAX(buildid), 0) FROM builds))",
        )?
        .execute(params![reporter, crate::model::now()])?;
    Ok(tx
        .raw
        .prepare_cached("SELECT after_build FROM reporter_state WHERE reporter = ?1")?
        .query_row([reporter], |r| r.get(0))?)
}

/// Records how `reporter` settled its final `kind` delivery for `buildid`.
pub(crate) fn record_report(
    tx: &Tx,
    reporter: &str,
    buildid: BuildId,
    kind: ReportKind,
    outcome: ReportOutcome,
) -> Result<()> {
    tx.raw
        .prepare_cached(
            "INSERT OR REPLACE INTO reporter_deliveries(reporter, buildid, kind, outcome, at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            reporter,
            buildid,
            kind.as_str(),
            outcome.as_str(),
            crate::model::now()
        ])?;
    Ok(())
}

/// Whether `reporter` settled its final `kind` delivery for `buildid`.
pub(crate) fn report_settled(
    conn: &Conn,
    reporter: &str,
    buildid: BuildId,
    kind: ReportKind,
) -> Result<bool> {
    Ok(conn
        .raw
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM reporter_deliveries
               WHERE reporter = ?1 AND buildid = ?2 AND kind = ?3)",
        )?
        .query_row(params![reporter, buildid, kind.as_str()], |r| r.get(0))?)
}

/// Builds newer than `after` that finished at or after `since` (Unix
/// seconds), not RETRY (a retried build's new build reports), with no
/// settled `kind` delivery of `reporter`; oldest first, at most `limit`.
pub(crate) fn unreported_builds(
    conn: &Conn,
    reporter: &str,
    kind: ReportKind,
    (after, since): (BuildId, i64),
    limit: i64,
) -> Result<Vec<BuildId>> {
    let mut st = conn.raw.prepare_cached(
        "SELECT b.buildid FROM builds b
         WHERE b.complete_at IS NOT NULL AND b.complete_at >= ?3 AND b.buildid > ?6
           AND (b.results IS NULL OR b.results != ?5)
           AND NOT EXISTS (SELECT 1 FROM reporter_deliveries d
                WHERE d.reporter = ?1 AND d.buildid = b.buildid AND d.kind = ?2)
         ORDER BY b.buildid LIMIT ?4",
    )?;
    let rows = st.query_map(
        params![
            reporter,
            kind.as_str(),
            since,
            limit,
            BuildResult::Retry,
            after
        ],
        |r| r.get(0),
    )?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Whether a build of `builderid` newer than `buildid` checked out `sha`
/// (its `got_revision`): then its status for that commit is the newer word,
/// and `buildid`'s late one must not replace it.
pub(crate) fn newer_build_of_revision(
    conn: &Conn,
    builderid: BuilderId,
    buildid: BuildId,
    sha: &str,
) -> Result<bool> {
    Ok(conn
        .raw
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM builds WHERE builderid = ?1 AND buildid > ?2
               AND json_extract(properties, '$.got_revision[0]') = ?3)",
        )?
        .query_row(params![builderid, buildid, sha], |r| r.get(0))?)
}

/// Forgets settled deliveries recorded before `before`: the sweep never
/// looks at builds that old again.
pub(crate) fn prune_reports(tx: &Tx, before: i64) -> Result<usize> {
    Ok(tx
        .raw
        .prepare_cached("DELETE FROM reporter_deliveries WHERE at < ?1")?
        .execute([before])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_finds_unsettled_builds_in_its_window_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        crate::db::create(&path).unwrap();
        let tx = crate::db::open_admin(&path).unwrap();
        tx.sql()
            .execute_batch(
                "INSERT INTO builders (builderid, name) VALUES (1, 'b');
                 INSERT INTO buildsets (buildsetid, reason, submitted_at) VALUES (1, 'r', 0);
                 INSERT INTO buildrequests (buildrequestid, buildsetid, builderid, submitted_at)
                   VALUES (1, 1, 1, 0);
                 INSERT INTO builds (buildid, number, builderid, buildrequestid, started_at,
                   complete_at, results, properties)
                   VALUES (1, 1, 1, 1, 0, 10, 0, '{}');",
            )
            .unwrap();
        // Build 1 is older than the reporter: never swept.
        assert_eq!(reporter_since(&tx, "r").unwrap(), BuildId(1));
        tx.sql()
            .execute_batch(
                "INSERT INTO builds (buildid, number, builderid, buildrequestid, started_at,
                   complete_at, results, properties) VALUES
                   (2, 2, 1, 1, 0, 100, 0, '{\"got_revision\":[\"abc\",\"Git\"]}'),
                   (3, 3, 1, 1, 0, 100, 5, '{}'),
                   (4, 4, 1, 1, 0, NULL, NULL, '{}'),
                   (5, 5, 1, 1, 0, 5, 2, '{}'),
                   (6, 6, 1, 1, 0, 100, 2, '{}');",
            )
            .unwrap();
        assert_eq!(reporter_since(&tx, "r").unwrap(), BuildId(1), "kept");
        let after = BuildId(1);
        let find = |kind| unreported_builds(&tx, "r", kind, (after, 50), 10).unwrap();
        // Not 3 (RETRY), 4 (running), 5 (finished before the window).
        assert_eq!(find(ReportKind::Status), [BuildId(2), BuildId(6)]);
        record_report(
            &tx,
            "r",
            BuildId(2),
            ReportKind::Status,
            ReportOutcome::Sent,
        )
        .unwrap();
        assert!(report_settled(&tx, "r", BuildId(2), ReportKind::Status).unwrap());
        assert!(!report_settled(&tx, "r", BuildId(2), ReportKind::Mail).unwrap());
        assert_eq!(find(ReportKind::Status), [BuildId(6)]);
        assert_eq!(find(ReportKind::Mail), [BuildId(2), BuildId(6)]);
        assert_eq!(
            unreported_builds(&tx, "r", ReportKind::Mail, (BuildId(2), 50), 10).unwrap(),
            [BuildId(6)],
            "pages on"
        );
        // A newer build that checked out the same commit.
        assert!(newer_build_of_revision(&tx, BuilderId(1), BuildId(1), "abc").unwrap());
        assert!(!newer_build_of_revision(&tx, BuilderId(1), BuildId(2), "abc").unwrap());
        // Pruning forgets what the window no longer covers.
        assert_eq!(prune_reports(&tx, 0).unwrap(), 0);
        assert_eq!(prune_reports(&tx, i64::MAX).unwrap(), 1);
    }
}
