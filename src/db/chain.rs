//! Chained builds (issue 20 point 3): the buildsets `trigger` steps make
//! and wait for (`build_triggers`), those `dependent` schedulers start
//! (`buildsets.upstream_buildsetid`), and the chain as pages and the API
//! show it (triggered by, triggered).
//!
//! The database is the queue here too: a trigger step's buildsets and its
//! `build_triggers` rows are one transaction, written before the step
//! waits, so a master restart neither loses them nor, when the build is
//! retried, makes them again ([`trigger_buildsets`] finds the rows of an
//! earlier build of the same request); a dependent buildset is created only
//! if none exists for its upstream buildset, checked in the transaction
//! that creates it.

use super::*;
use crate::model::BuildResult;
use anyhow::{anyhow, Result};
use rusqlite::{params, OptionalExtension};

/// One scheduler a trigger step starts: its name and its builders (from
/// the live config).
#[derive(Debug, Clone)]
pub(crate) struct TriggerTarget {
    pub scheduler: String,
    pub builders: Vec<String>,
}

/// The buildsets step `step` of build `parent` waits for: those an earlier
/// build of the same request made at that step (a retried build, e.g.
/// after a master restart: nothing is triggered twice), else new ones,
/// one per target, with `ss` and `props`. Both are recorded for `parent`.
/// Returns the ids and whether they were made now.
pub(crate) fn trigger_buildsets(
    conn: &Tx,
    parent: BuildId,
    step: u32,
    targets: &[TriggerTarget],
    ss: &SourceStamp,
    props: &Props,
    reason: &str,
) -> Result<(Vec<BuildsetId>, bool)> {
    let earlier: Vec<BuildsetId> = conn
        .raw
        .prepare_cached(
            "SELECT DISTINCT t.buildsetid FROM build_triggers t JOIN builds b USING (buildid)
             WHERE b.buildrequestid = (SELECT buildrequestid FROM builds WHERE buildid = ?1)
               AND t.step = ?2 AND t.buildid != ?1
             ORDER BY t.buildsetid",
        )?
        .query_map(params![parent, step], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let made = earlier.is_empty();
    let ids = if made {
        let mut ids = Vec::with_capacity(targets.len());
        for t in targets {
            let mut props = props.clone();
            props.insert(
                "scheduler".into(),
                (t.scheduler.clone().into(), "Scheduler".into()),
            );
            let (bsid, _) = create_buildset(
                conn,
                reason,
                Some(&t.scheduler),
                ss,
                &props,
                &[],
                &t.builders,
            )?;
            ids.push(bsid);
        }
        ids
    } else {
        earlier
    };
    for bsid in &ids {
        conn.raw
            .prepare_cached(
                "INSERT OR IGNORE INTO build_triggers(buildid, step, buildsetid) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![parent, step, bsid])?;
    }
    Ok((ids, made))
}

/// A build a trigger step started, as its log and the pages name it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Triggered {
    pub buildsetid: BuildsetId,
    pub builder: String,
    /// Its newest build (None: still queued, or never built).
    pub build: Option<(BuildId, i64)>,
    /// The request's result once it is settled: for a request collapsed
    /// into another build, that build's result (None until it ends).
    pub results: Option<BuildResult>,
}

/// The requests of `buildsets`, with their builds and settled results.
pub(crate) fn triggered(conn: &Conn, buildsets: &[BuildsetId]) -> Result<Vec<Triggered>> {
    let mut out = vec![];
    let mut st = conn.raw.prepare_cached(
        "SELECT bl.name, br.complete, br.results, br.collapsed_into,
                cb.complete_at IS NOT NULL, cb.results, cb.number,
                (SELECT b.buildid FROM builds b WHERE b.buildrequestid = br.buildrequestid
                   ORDER BY b.buildid DESC LIMIT 1) AS last
         FROM buildrequests br JOIN builders bl USING (builderid)
         LEFT JOIN builds cb ON cb.buildid = br.collapsed_into
         WHERE br.buildsetid = ?1 ORDER BY br.buildrequestid",
    )?;
    for bsid in buildsets {
        let rows = st.query_map([bsid], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, bool>(1)?,
                result_col(r, 2, "buildrequests of buildset", bsid.0)?,
                r.get::<_, Option<BuildId>>(3)?,
                r.get::<_, Option<bool>>(4)?,
                result_col(r, 5, "builds", r.get::<_, Option<i64>>(3)?.unwrap_or(0))?,
                r.get::<_, Option<i64>>(6)?,
                r.get::<_, Option<BuildId>>(7)?,
            ))
        })?;
        for row in rows {
            let (builder, complete, results, collapsed, c_done, c_results, c_number, last) = row?;
            let (build, results) = match collapsed {
                // Covered by another build: that one says how it went.
                Some(cb) => (
                    c_number.map(|n| (cb, n)),
                    if c_done == Some(true) {
                        c_results
                    } else {
                        None
                    },
                ),
                None => {
                    let build = match last {
                        Some(b) => Some((b, build_number(conn, b)?)),
                        None => None,
                    };
                    (build, if complete { results } else { None })
                }
            };
            out.push(Triggered {
                buildsetid: *bsid,
                builder,
                build,
                results,
            });
        }
    }
    Ok(out)
}

fn build_number(conn: &Conn, b: BuildId) -> Result<i64> {
    Ok(conn
        .raw
        .prepare_cached("SELECT number FROM builds WHERE buildid = ?1")?
        .query_row([b], |r| r.get(0))?)
}

/// The buildsets `buildid`'s trigger steps made or wait for, by step.
pub(crate) fn build_triggers(conn: &Conn, buildid: BuildId) -> Result<Vec<(u32, BuildsetId)>> {
    let mut st = conn.raw.prepare_cached(
        "SELECT step, buildsetid FROM build_triggers WHERE buildid = ?1 ORDER BY step, buildsetid",
    )?;
    let rows = st.query_map([buildid], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The build whose trigger step made the buildset `buildid` came from
/// (the first, when a retried build waited for it too): (buildid, builder,
/// number). None for a build nobody triggered, or a pruned parent.
pub(crate) fn triggered_by(
    conn: &Conn,
    buildid: BuildId,
) -> Result<Option<(BuildId, String, i64)>> {
    Ok(conn
        .raw
        .prepare_cached(
            "SELECT p.buildid, bl.name, p.number
             FROM builds b JOIN buildrequests br USING (buildrequestid)
             JOIN build_triggers t ON t.buildsetid = br.buildsetid
             JOIN builds p ON p.buildid = t.buildid
             JOIN builders bl ON bl.builderid = p.builderid
             WHERE b.buildid = ?1 ORDER BY p.buildid LIMIT 1",
        )?
        .query_row([buildid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?)
}

/// The newest buildset id (a dependent scheduler seen for the first time
/// starts after it: no builds for history).
pub(crate) fn last_buildset(conn: &Conn) -> Result<BuildsetId> {
    Ok(conn
        .raw
        .prepare_cached("SELECT COALESCE(MAX(buildsetid), 0) FROM buildsets")?
        .query_row([], |r| r.get(0))?)
}

/// An upstream scheduler's buildset after the mark: (id, complete, every
/// request SUCCESS).
pub(crate) fn upstream_buildsets(
    conn: &Conn,
    upstream: &str,
    after: BuildsetId,
    limit: i64,
) -> Result<Vec<(BuildsetId, bool, bool)>> {
    let mut st = conn.raw.prepare_cached(
        "SELECT bs.buildsetid, bs.complete,
                NOT EXISTS (SELECT 1 FROM buildrequests br WHERE br.buildsetid = bs.buildsetid
                              AND (br.results IS NULL OR br.results != ?3))
         FROM buildsets bs WHERE bs.buildsetid > ?1 AND bs.scheduler = ?2
         ORDER BY bs.buildsetid LIMIT ?4",
    )?;
    let rows = st.query_map(params![after, upstream, BuildResult::Success, limit], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Starts dependent scheduler `scheduler`'s `builders` on the source stamp
/// of the upstream buildset `upstream`, unless it did already. Returns the
/// new buildset.
pub(crate) fn start_dependent(
    conn: &Tx,
    scheduler: &str,
    builders: &[String],
    upstream: BuildsetId,
) -> Result<Option<BuildsetId>> {
    let done: bool = conn
        .raw
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM buildsets
               WHERE upstream_buildsetid = ?1 AND scheduler = ?2)",
        )?
        .query_row(params![upstream, scheduler], |r| r.get(0))?;
    if done {
        return Ok(None);
    }
    let (ss, up_name) = conn
        .raw
        .prepare_cached(
            "SELECT branch, revision, repository, project, codebase, scheduler
             FROM buildsets WHERE buildsetid = ?1",
        )?
        .query_row([upstream], |r| {
            Ok((source_stamp_at(r, 0)?, r.get::<_, Option<String>>(5)?))
        })
        .optional()?
        .ok_or_else(|| anyhow!("upstream buildset {upstream} is gone"))?;
    let changeids = buildset_changeids(conn, upstream)?;
    let mut props = Props::new();
    props.insert(
        "scheduler".into(),
        (scheduler.to_string().into(), "Scheduler".into()),
    );
    let reason = format!(
        "The dependent scheduler {scheduler:?}: buildset {upstream} of {:?} succeeded",
        up_name.unwrap_or_default()
    );
    let (bsid, _) = create_buildset(
        conn,
        &reason,
        Some(scheduler),
        &ss,
        &props,
        &changeids,
        builders,
    )?;
    conn.raw
        .prepare_cached("UPDATE buildsets SET upstream_buildsetid = ?2 WHERE buildsetid = ?1")?
        .execute(params![bsid, upstream])?;
    Ok(Some(bsid))
}

/// Drops the `scheduler_state` value `name` of every scheduler not in
/// `keep` (a dependent scheduler that left the config starts afresh if it
/// comes back, rather than catching up on everything since).
pub(crate) fn forget_state_except(conn: &Tx, name: &str, keep: &[String]) -> Result<()> {
    conn.raw
        .prepare_cached(
            "DELETE FROM scheduler_state WHERE name = ?1
               AND scheduler NOT IN (SELECT value FROM json_each(?2))",
        )?
        .execute(params![name, json(&keep)?])?;
    Ok(())
}

/// Queued requests that a running build's trigger step waits for: a clean
/// stop still starts these, or the waiting build would never end.
pub(crate) fn awaited_requests(conn: &Conn) -> Result<std::collections::HashSet<RequestId>> {
    let mut st = conn.raw.prepare_cached(
        "SELECT br.buildrequestid FROM build_triggers t
         JOIN builds b ON b.buildid = t.buildid AND b.complete_at IS NULL
         JOIN buildrequests br ON br.buildsetid = t.buildsetid
         WHERE br.complete = 0 AND br.claimed_at IS NULL",
    )?;
    let rows = st.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retried_build_waits_for_the_same_buildsets_and_collapsed_requests_count_their_build() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        create(&path).unwrap();
        let conn = open_admin(&path).unwrap();
        conn.sql()
            .execute_batch(
                "INSERT INTO builders (builderid, name) VALUES (1, 'parent'), (2, 'child');
                 INSERT INTO buildsets (buildsetid, reason, submitted_at) VALUES (1, 'force', 0);
                 INSERT INTO buildrequests (buildrequestid, buildsetid, builderid, submitted_at,
                     claimed_at) VALUES (1, 1, 1, 0, 1);
                 INSERT INTO builds (buildid, number, builderid, buildrequestid, started_at,
                     complete_at, results) VALUES (1, 1, 1, 1, 0, 5, 5);
                 INSERT INTO builds (buildid, number, builderid, buildrequestid, started_at)
                     VALUES (2, 2, 1, 1, 6);",
            )
            .unwrap();
        let targets = [TriggerTarget {
            scheduler: "t".into(),
            builders: vec!["child".into()],
        }];
        let ss = SourceStamp::default();
        let trigger = |b: i64| {
            trigger_buildsets(&conn, BuildId(b), 1, &targets, &ss, &Props::new(), "r").unwrap()
        };
        // Build 1 triggers; build 2, its request's retry, waits for the same.
        let (ids, made) = trigger(1);
        assert!(made);
        assert_eq!(trigger(2), (ids.clone(), false));
        assert_eq!(build_triggers(&conn, BuildId(2)).unwrap(), [(1, ids[0])]);
        assert_eq!(trigger(2), (ids.clone(), false), "idempotent");
        let queued = triggered(&conn, &ids).unwrap();
        assert_eq!(
            (queued.len(), queued[0].build, queued[0].results),
            (1, None, None)
        );
        // Its request collapsed into child #1 (another request's build):
        // that build's result counts, once it has one.
        conn.sql()
            .execute_batch(
                "INSERT INTO buildsets (buildsetid, reason, submitted_at) VALUES (9, 'other', 0);
                 INSERT INTO buildrequests (buildrequestid, buildsetid, builderid, submitted_at,
                     claimed_at) VALUES (9, 9, 2, 0, 1);
                 INSERT INTO builds (buildid, number, builderid, buildrequestid, started_at)
                     VALUES (3, 1, 2, 9, 7);",
            )
            .unwrap();
        conn.sql()
            .execute(
                "UPDATE buildrequests SET complete = 1, results = 3, collapsed_into = 3
                 WHERE buildsetid = ?1",
                [ids[0]],
            )
            .unwrap();
        let t = &triggered(&conn, &ids).unwrap()[0];
        assert_eq!((t.build, t.results), (Some((BuildId(3), 1)), None));
        conn.sql()
            .execute_batch("UPDATE builds SET complete_at = 9, results = 2 WHERE buildid = 3")
            .unwrap();
        let t = &triggered(&conn, &ids).unwrap()[0];
        assert_eq!(t.results, Some(BuildResult::Failure));
        // The chain both ways: child #1's buildset is not a triggered one;
        // a build of the triggered buildset names build 1.
        assert_eq!(triggered_by(&conn, BuildId(3)).unwrap(), None);
        conn.sql()
            .execute(
                "INSERT INTO builds (buildid, number, builderid, buildrequestid, started_at)
                 SELECT 4, 2, 2, buildrequestid, 8 FROM buildrequests WHERE buildsetid = ?1",
                [ids[0]],
            )
            .unwrap();
        assert_eq!(
            triggered_by(&conn, BuildId(4)).unwrap(),
            Some((BuildId(1), "parent".to_string(), 1))
        );
        // A download with build = "triggering": from the newest triggering
        // build that has the artifact (build 2, the retry, waited for the
        // same buildset); none for a build nobody triggered.
        let of = |b: i64| {
            artifact_of_triggering(&conn, BuildId(b), "a.tgz")
                .unwrap()
                .map(|r| r.map(|r| r.buildid))
        };
        assert_eq!(of(4), Some(None));
        assert_eq!(of(3), None);
        let art = |b: i64| {
            conn.sql()
                .execute(
                    "INSERT INTO artifacts (buildid, stepnumber, name, size, sha256, created_at)
                     VALUES (?1, 1, 'a.tgz', 1, 'x', 0)",
                    [b],
                )
                .unwrap()
        };
        art(1);
        assert_eq!(of(4), Some(Some(BuildId(1))));
        art(2);
        assert_eq!(of(4), Some(Some(BuildId(2))));
    }
}
