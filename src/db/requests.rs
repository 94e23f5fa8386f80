//! Buildsets and build requests: creating them, the queue the botmaster
//! reads, claiming (with collapsing), cancelling, rebuilding.
//!
//! Collapsing merges only requests that would build the same thing
//! ([`same_work`]): the same source stamp family and the same properties a
//! user or a scheduler set (force-form parameters included). It is checked
//! twice here, whatever the caller's grouping: the queue
//! ([`pending_requests`]) holds back a request while an older queued one
//! for the same source would build something else, so such requests are
//! built one after another in the order they were made (a deploy of
//! v0.2.1, then v0.2.2), and [`collapse_requests`] refuses to end a request
//! as covered by a build of other work.

use super::*;
use crate::model::BuildResult;
use anyhow::{anyhow, Context, Result};
use rusqlite::{params, OptionalExtension};

/// Creates a buildset with one request per builder; returns
/// (buildsetid, [(builderid, buildrequestid)]). Unknown builders are an error.
pub(crate) fn create_buildset(
    conn: &Tx,
    reason: &str,
    scheduler: Option<&str>,
    ss: &SourceStamp,
    props: &Props,
    changeids: &[ChangeId],
    builders: &[String],
) -> Result<(BuildsetId, Vec<(BuilderId, RequestId)>)> {
    let now = crate::model::now();
    conn.raw
        .prepare_cached(
            "INSERT INTO buildsets(reason, scheduler, submitted_at, branch, revision, repository,
           project, codebase, properties) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
            reason,
            scheduler,
            now,
            ss.branch,
            ss.revision,
            ss.repository,
            ss.project,
            ss.codebase,
            json(props)?
        ])?;
    let bsid = BuildsetId(conn.raw.last_insert_rowid());
    for c in changeids {
        conn.raw
            .prepare_cached("INSERT INTO buildset_changes(buildsetid, changeid) VALUES (?1, ?2)")?
            .execute(params![bsid, c])?;
    }
    let mut out = Vec::with_capacity(builders.len());
    for name in builders {
        let builderid: BuilderId = conn
            .raw
            .prepare_cached("SELECT builderid FROM builders WHERE name = ?1")?
            .query_row([name], |r| r.get(0))
            .optional()?
            .ok_or_else(|| anyhow!("no builder named {name:?}"))?;
        conn.raw.prepare_cached(
            "INSERT INTO buildrequests(buildsetid, builderid, submitted_at) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![bsid, builderid, now])?;
        out.push((builderid, RequestId(conn.raw.last_insert_rowid())));
    }
    Ok((bsid, out))
}

/// A queued build request with what a build needs to start.
#[derive(Debug, Clone)]
pub(crate) struct PendingRequest {
    pub buildrequestid: RequestId,
    pub builderid: BuilderId,
    pub builder: String,
    pub reason: String,
    pub ss: SourceStamp,
    pub properties: Props,
    /// Whether the buildset was made from changes (not forced or timed).
    pub has_changes: bool,
    pub priority: i64,
}

/// Properties that say what a request builds: those a user or a scheduler
/// set, i.e. every source but `Change` (a change's properties describe it;
/// a newer push's differ, and folding pushes is what collapsing is for).
fn requested_props(p: &Props) -> impl Iterator<Item = (&String, &(serde_json::Value, String))> {
    p.iter().filter(|(_, (_, source))| source != "Change")
}

/// Two queued requests of one builder are for the same source (Buildbot's
/// `canBeCollapsed`): the same branch, repository, project and codebase,
/// both from changes or both at the same revision, and the same pull
/// request (two PRs into `master` are not the same work). The botmaster
/// groups requests by the same fields (`botmaster::collapse_key`).
fn same_source(a: &PendingRequest, b: &PendingRequest) -> bool {
    let pr = |r: &PendingRequest| r.properties.get("pr_number").map(|(v, _)| v.clone());
    a.builderid == b.builderid
        && a.ss.branch == b.ss.branch
        && a.ss.repository == b.ss.repository
        && a.ss.project == b.ss.project
        && a.ss.codebase == b.ss.codebase
        && a.has_changes == b.has_changes
        && (a.has_changes || a.ss.revision == b.ss.revision)
        && pr(a) == pr(b)
}

/// Whether one build can stand for both requests: the same source and the
/// same properties a user or a scheduler set (forced parameters included).
pub(crate) fn same_work(a: &PendingRequest, b: &PendingRequest) -> bool {
    same_source(a, b) && requested_props(&a.properties).eq(requested_props(&b.properties))
}

/// Names of the builders with unclaimed requests: one query, so that a
/// dispatch with an empty queue (after each build, the usual case) does
/// not ask for each builder's requests. Each EXISTS stops at the first
/// unclaimed request in `buildrequests_pending`, however deep the queue.
pub(crate) fn builders_with_pending(conn: &Conn) -> Result<std::collections::HashSet<String>> {
    let mut st = conn.raw.prepare_cached(
        "SELECT b.name FROM builders b WHERE EXISTS (SELECT 1 FROM buildrequests br
           WHERE br.builderid = b.builderid AND br.complete = 0 AND br.claimed_at IS NULL)",
    )?;
    let rows = st.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The columns [`pending_row`] reads, from `buildrequests br JOIN
/// builders b JOIN buildsets bs`.
const PENDING_COLS: &str = "br.buildrequestid, br.builderid, b.name, br.buildsetid, bs.reason,
    bs.branch, bs.revision, bs.repository, bs.project, bs.codebase, bs.properties,
    EXISTS (SELECT 1 FROM buildset_changes c WHERE c.buildsetid = br.buildsetid),
    br.priority";

/// Unclaimed requests of one builder the botmaster may start now, highest
/// priority then oldest first (of the `limit` first queued). A request is
/// held back while an older queued one for the same source would build
/// something else (module header): it comes once that one has started.
pub(crate) fn pending_requests(
    conn: &Conn,
    builder: &str,
    limit: i64,
) -> Result<Vec<PendingRequest>> {
    let queue = queued_of(conn, builder, limit)?;
    let held = holders(&queue);
    Ok(queue
        .into_iter()
        .zip(held)
        .filter(|(_, h)| h.is_none())
        .map(|(r, _)| r)
        .collect())
}

/// The first `limit` unclaimed requests of one builder, highest priority
/// then oldest first (the botmaster's order).
fn queued_of(conn: &Conn, builder: &str, limit: i64) -> Result<Vec<PendingRequest>> {
    let mut st = conn.raw.prepare_cached(&format!(
        "SELECT {PENDING_COLS}
         FROM buildrequests br JOIN builders b USING (builderid) JOIN buildsets bs USING (buildsetid)
         WHERE br.complete = 0 AND br.claimed_at IS NULL AND b.name = ?1
         ORDER BY br.priority DESC, br.buildrequestid LIMIT ?2"
    ))?;
    let queue = st
        .query_map(params![builder, limit], pending_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(queue)
}

/// For each request of `queue` (in the botmaster's order), the oldest
/// older one that holds it back: the same source, other work. In one pass
/// over groups of the same source, each with its distinct works in the
/// order they first came (usually one group and one work): comparing each
/// request with every older one cost the botmaster ~1 ms per build with a
/// queue of 100 (`scripts/bench`, builds queued at once), since the
/// dispatch after every build asks again.
fn holders(queue: &[PendingRequest]) -> Vec<Option<RequestId>> {
    // (a request of the source, [(a request of the work, its first id)])
    let mut groups: Vec<(usize, Vec<(usize, RequestId)>)> = vec![];
    let mut out = Vec::with_capacity(queue.len());
    for (i, r) in queue.iter().enumerate() {
        let Some((_, works)) = groups.iter_mut().find(|(g, _)| same_source(&queue[*g], r)) else {
            groups.push((i, vec![(i, r.buildrequestid)]));
            out.push(None);
            continue;
        };
        // The works are in order of first appearance, so the first one
        // that differs holds the oldest request that differs.
        out.push(
            works
                .iter()
                .find(|(w, _)| !same_work(&queue[*w], r))
                .map(|(_, first)| *first),
        );
        if !works.iter().any(|(w, _)| same_work(&queue[*w], r)) {
            works.push((i, r.buildrequestid));
        }
    }
    out
}

/// Where a queued request stands in its builder's queue (the queue
/// page's "why it waits").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueuePlace {
    /// Queued requests of its builder the botmaster takes before it.
    pub ahead: usize,
    /// An older request for the same source that builds something else:
    /// this one waits until that one has started.
    pub held_by: Option<RequestId>,
    /// The newest newer request that builds the same thing: when the
    /// builder collapses requests, that one's build covers this one.
    pub same_as_newer: Option<RequestId>,
}

/// The places of the first `limit` queued requests of `builder`, in the
/// botmaster's order, by the rules [`pending_requests`] and collapsing
/// apply.
pub(crate) fn queue_places(
    conn: &Conn,
    builder: &str,
    limit: i64,
) -> Result<std::collections::HashMap<RequestId, QueuePlace>> {
    let queue = queued_of(conn, builder, limit)?;
    let held = holders(&queue);
    Ok(queue
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let same_as_newer = queue
                .iter()
                .filter(|o| o.buildrequestid > r.buildrequestid && same_work(o, r))
                .map(|o| o.buildrequestid)
                .max();
            let place = QueuePlace {
                ahead: i,
                held_by: held[i],
                same_as_newer,
            };
            (r.buildrequestid, place)
        })
        .collect())
}

/// One request by id, as the queue reads it (None: no such request).
fn request_work(conn: &Conn, brid: RequestId) -> Result<Option<PendingRequest>> {
    Ok(conn
        .raw
        .prepare_cached(&format!(
            "SELECT {PENDING_COLS}
             FROM buildrequests br JOIN builders b USING (builderid) JOIN buildsets bs USING (buildsetid)
             WHERE br.buildrequestid = ?1"
        ))?
        .query_row([brid], pending_row)
        .optional()?)
}

fn pending_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PendingRequest> {
    let props: String = r.get(10)?;
    Ok(PendingRequest {
        buildrequestid: r.get(0)?,
        builderid: r.get(1)?,
        builder: r.get(2)?,
        reason: r.get(4)?,
        ss: SourceStamp {
            branch: r.get(5)?,
            revision: r.get(6)?,
            repository: r.get(7)?,
            project: r.get(8)?,
            codebase: r.get(9)?,
        },
        properties: json_col(&props, "buildsets", r.get(3)?, "properties")?,
        has_changes: r.get(11)?,
        priority: r.get(12)?,
    })
}

/// Claims a request for `worker` and creates its build, which is to run
/// the steps named `planned` (the builder's steps now, kept with the build
/// so its page lists the steps it never ran). Returns None when the
/// request was claimed or completed meanwhile.
pub(crate) fn claim_and_create_build(
    conn: &Tx,
    buildrequestid: RequestId,
    builderid: BuilderId,
    worker: &str,
    props: &mut Props,
    planned: &[String],
) -> Result<Option<(BuildId, i64)>> {
    let now = crate::model::now();
    let n = conn
        .raw
        .prepare_cached(
            "UPDATE buildrequests SET claimed_at = ?2
             WHERE buildrequestid = ?1 AND claimed_at IS NULL AND complete = 0",
        )?
        .execute(params![buildrequestid, now])?;
    if n == 0 {
        return Ok(None);
    }
    let workerid: WorkerId = conn
        .raw
        .prepare_cached("SELECT workerid FROM workers WHERE name = ?1")?
        .query_row([worker], |r| r.get(0))?;
    let number: i64 = conn
        .raw
        .prepare_cached("SELECT COALESCE(MAX(number), 0) + 1 FROM builds WHERE builderid = ?1")?
        .query_row([builderid], |r| r.get(0))?;
    props.insert("buildnumber".into(), (number.into(), "Build".into()));
    props.insert("workername".into(), (worker.into(), "Worker".into()));
    conn.raw.prepare_cached(
        "INSERT INTO builds(number, builderid, buildrequestid, workerid, started_at, state_string,
           properties, planned_steps)
         VALUES (?1, ?2, ?3, ?4, ?5, 'starting', ?6, ?7)",
    )?
    .execute(params![number, builderid, buildrequestid, workerid, now, json(props)?, json(&planned)?])?;
    Ok(Some((BuildId(conn.raw.last_insert_rowid()), number)))
}

/// Completes a buildset whose requests are all complete. Buildbot's
/// buildset result is the worst of its requests' (SKIPPED counts as worse
/// than SUCCESS here, so a collapsed request never makes a green buildset).
pub(super) fn complete_buildset_if_done(conn: &Tx, bsid: BuildsetId, now: i64) -> Result<()> {
    conn.raw
        .prepare_cached(
            "UPDATE buildsets SET complete = 1, complete_at = ?2,
           results = (SELECT MAX(results) FROM buildrequests WHERE buildsetid = ?1)
         WHERE buildsetid = ?1 AND complete = 0
           AND NOT EXISTS (SELECT 1 FROM buildrequests WHERE buildsetid = ?1 AND complete = 0)",
        )?
        .execute(params![bsid, now])?;
    Ok(())
}

/// Buildbot's request collapsing: ends the queued requests `brids` as
/// SKIPPED, covered by `buildid` (recorded in `collapsed_into`). Requests
/// claimed or completed meanwhile are left alone, and so are requests that
/// would build something else than `buildid`'s request ([`same_work`]):
/// they stay queued. Returns those collapsed.
pub(crate) fn collapse_requests(
    conn: &Tx,
    brids: &[RequestId],
    buildid: BuildId,
) -> Result<Vec<RequestId>> {
    let now = crate::model::now();
    let covering: RequestId = conn
        .raw
        .prepare_cached("SELECT buildrequestid FROM builds WHERE buildid = ?1")?
        .query_row([buildid], |r| r.get(0))
        .with_context(|| format!("collapsing into build {buildid}"))?;
    let covering = request_work(conn, covering)?
        .ok_or_else(|| anyhow!("collapsing into build {buildid}: its request is gone"))?;
    let mut done = vec![];
    for brid in brids {
        match request_work(conn, *brid)? {
            Some(r) if same_work(&r, &covering) => {}
            Some(_) => {
                log::info!(
                    "build request {brid} not collapsed into build {buildid}: it builds something else (other source or properties); it stays queued"
                );
                continue;
            }
            None => continue,
        }
        let n = conn
            .raw
            .prepare_cached(
                "UPDATE buildrequests SET complete = 1, results = ?2, complete_at = ?3,
                   claimed_at = ?3, collapsed_into = ?4
                 WHERE buildrequestid = ?1 AND claimed_at IS NULL AND complete = 0",
            )?
            .execute(params![brid, BuildResult::Skipped, now, buildid])?;
        if n == 0 {
            continue;
        }
        let bsid: BuildsetId = conn
            .raw
            .prepare_cached("SELECT buildsetid FROM buildrequests WHERE buildrequestid = ?1")?
            .query_row([brid], |r| r.get(0))?;
        complete_buildset_if_done(conn, bsid, now)?;
        done.push(*brid);
    }
    Ok(done)
}

/// What became of a request someone asked to cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CancelOutcome {
    /// It was queued and is now complete as CANCELLED; it will never start.
    Cancelled,
    /// A build of it is running: stop that build instead.
    Running {
        buildid: BuildId,
    },
    /// Already complete: nothing to do.
    Complete,
    NotFound,
}

/// Cancels a queued build request (Buildbot's `cancel`): completes it as
/// CANCELLED so the botmaster's claim (which requires `complete = 0`) can
/// never start it.
pub(crate) fn cancel_request(conn: &Tx, brid: RequestId) -> Result<CancelOutcome> {
    let now = crate::model::now();
    let n = conn
        .raw
        .prepare_cached(
            "UPDATE buildrequests SET complete = 1, results = ?2, complete_at = ?3
             WHERE buildrequestid = ?1 AND complete = 0 AND claimed_at IS NULL",
        )?
        .execute(params![brid, BuildResult::Cancelled, now])?;
    let row: Option<(BuildsetId, bool)> = conn
        .raw
        .prepare_cached("SELECT buildsetid, complete FROM buildrequests WHERE buildrequestid = ?1")?
        .query_row([brid], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((bsid, complete)) = row else {
        return Ok(CancelOutcome::NotFound);
    };
    if n == 1 {
        complete_buildset_if_done(conn, bsid, now)?;
        return Ok(CancelOutcome::Cancelled);
    }
    if complete {
        return Ok(CancelOutcome::Complete);
    }
    let running: Option<BuildId> = conn
        .raw
        .prepare_cached(
            "SELECT buildid FROM builds WHERE buildrequestid = ?1 AND complete_at IS NULL
             ORDER BY buildid DESC LIMIT 1",
        )?
        .query_row([brid], |r| r.get(0))
        .optional()?;
    Ok(match running {
        Some(buildid) => CancelOutcome::Running { buildid },
        // Claimed, its build not created yet or already closed: the
        // botmaster settles it; treat as complete for the caller.
        None => CancelOutcome::Complete,
    })
}

/// Records who asked for a buildset: the logged-in `user` who forced it,
/// or rebuilt build `rebuild_of` (the queue and request pages, the API's
/// `requested_by` and `rebuilt_buildid`).
pub(crate) fn set_buildset_origin(
    conn: &Tx,
    buildsetid: BuildsetId,
    user: &str,
    rebuild_of: Option<BuildId>,
) -> Result<()> {
    conn.raw
        .prepare_cached(
            "UPDATE buildsets SET requested_by = ?2, rebuild_of = ?3 WHERE buildsetid = ?1",
        )?
        .execute(params![buildsetid, user, rebuild_of])?;
    Ok(())
}

/// A new buildset for one builder with the source stamp, properties and
/// changes of the buildset `buildid` came from (Buildbot's rebuild), asked
/// for by `user`. Returns (buildsetid, builderid, buildrequestid), None if
/// no such build.
pub(crate) fn rebuild(
    conn: &Tx,
    buildid: BuildId,
    reason: &str,
    user: &str,
) -> Result<Option<(BuildsetId, BuilderId, RequestId)>> {
    let row = conn
        .raw
        .prepare_cached(
            "SELECT bs.buildsetid, bs.branch, bs.revision, bs.repository, bs.project, bs.codebase,
                    bs.properties, bl.name, b.builderid, bs.scheduler
             FROM builds b JOIN buildrequests br USING (buildrequestid)
             JOIN buildsets bs ON bs.buildsetid = br.buildsetid
             JOIN builders bl ON bl.builderid = b.builderid
             WHERE b.buildid = ?1",
        )?
        .query_row([buildid], |r| {
            let props: String = r.get(6)?;
            Ok((
                r.get::<_, BuildsetId>(0)?,
                source_stamp_at(r, 1)?,
                json_col::<Props>(&props, "buildsets", r.get(0)?, "properties")?,
                r.get::<_, String>(7)?,
                r.get::<_, BuilderId>(8)?,
                r.get::<_, Option<String>>(9)?,
            ))
        })
        .optional()?;
    let Some((old_bsid, ss, props, builder, builderid, scheduler)) = row else {
        return Ok(None);
    };
    let changeids = buildset_changeids(conn, old_bsid)?;
    let (bsid, reqs) = create_buildset(
        conn,
        reason,
        scheduler.as_deref(),
        &ss,
        &props,
        &changeids,
        &[builder],
    )?;
    set_buildset_origin(conn, bsid, user, Some(buildid))?;
    let brid = reqs
        .iter()
        .find(|(b, _)| *b == builderid)
        .map(|(_, r)| *r)
        .ok_or_else(|| anyhow!("rebuild made no request"))?;
    Ok(Some((bsid, builderid, brid)))
}

/// The source stamp in the five columns from `i` on: branch, revision,
/// repository, project, codebase (a buildset's, in that order).
pub(super) fn source_stamp_at(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<SourceStamp> {
    Ok(SourceStamp {
        branch: r.get(i)?,
        revision: r.get(i + 1)?,
        repository: r.get(i + 2)?,
        project: r.get(i + 3)?,
        codebase: r.get(i + 4)?,
    })
}

/// The changes a buildset was made from, oldest first.
pub(super) fn buildset_changeids(conn: &Conn, bsid: BuildsetId) -> Result<Vec<ChangeId>> {
    Ok(conn
        .raw
        .prepare_cached(
            "SELECT changeid FROM buildset_changes WHERE buildsetid = ?1 ORDER BY changeid",
        )?
        .query_map([bsid], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?)
}

/// Gives every request of a buildset `priority` (a forced build's).
pub(crate) fn set_buildset_priority(
    conn: &Tx,
    buildsetid: BuildsetId,
    priority: i64,
) -> Result<()> {
    conn.raw
        .prepare_cached("UPDATE buildrequests SET priority = ?2 WHERE buildsetid = ?1")?
        .execute(params![buildsetid, priority])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(
        id: i64,
        has_changes: bool,
        props: &[(&str, serde_json::Value, &str)],
    ) -> PendingRequest {
        PendingRequest {
            buildrequestid: RequestId(id),
            builderid: BuilderId(1),
            builder: "deploy".into(),
            reason: String::new(),
            ss: SourceStamp {
                branch: Some("master".into()),
                ..Default::default()
            },
            properties: props
                .iter()
                .map(|(k, v, src)| (k.to_string(), (v.clone(), src.to_string())))
                .collect(),
            has_changes,
            priority: 0,
        }
    }

    #[test]
    fn only_the_same_work_collapses() {
        let form = "Force Build Form";
        let sched = ("scheduler", json!("force"), "Scheduler");
        let v = |n: &str| req(1, false, &[sched.clone(), ("version", json!(n), form)]);
        assert!(same_work(&v("0.2.1"), &v("0.2.1")));
        assert!(same_source(&v("0.2.1"), &v("0.2.2")));
        assert!(
            !same_work(&v("0.2.1"), &v("0.2.2")),
            "a forced parameter differs"
        );
        // Pushes: the changes' own properties differ, the work does not.
        let push = |sha: &str| {
            req(
                2,
                true,
                &[
                    ("scheduler", json!("all"), "Scheduler"),
                    ("revision_note", json!(sha), "Change"),
                ],
            )
        };
        assert!(same_work(&push("a"), &push("b")));
        // Another scheduler's request, or a pull request, is other work.
        let other = req(3, true, &[("scheduler", json!("nightly"), "Scheduler")]);
        assert!(!same_work(&push("a"), &other));
        let pr = req(
            4,
            true,
            &[
                ("scheduler", json!("all"), "Scheduler"),
                ("pr_number", json!(3), "Change"),
            ],
        );
        assert!(!same_work(&push("a"), &pr));
    }

    #[test]
    fn holders_are_the_oldest_older_request_for_the_same_source_and_other_work() {
        let form = "Force Build Form";
        let sched = ("scheduler", json!("force"), "Scheduler");
        let v = |id: i64, n: &str| req(id, false, &[sched.clone(), ("version", json!(n), form)]);
        let push = |id: i64| req(id, true, &[("scheduler", json!("all"), "Scheduler")]);
        let mut other_branch = v(9, "1");
        other_branch.ss.branch = Some("next".into());
        let queue = vec![
            v(1, "1"),
            push(2),
            v(3, "2"),
            v(4, "1"),
            v(5, "3"),
            push(6),
            other_branch,
            v(8, "2"),
        ];
        // What the definition says, request by request.
        let naive: Vec<Option<RequestId>> = (0..queue.len())
            .map(|i| {
                queue[..i]
                    .iter()
                    .find(|o| same_source(o, &queue[i]) && !same_work(o, &queue[i]))
                    .map(|o| o.buildrequestid)
            })
            .collect();
        assert_eq!(holders(&queue), naive);
        let id = |n| Some(RequestId(n));
        assert_eq!(
            naive,
            vec![None, None, id(1), id(3), id(1), None, None, id(1)]
        );
    }
}
