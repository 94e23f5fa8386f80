//! What the HTML pages (`web::pages`) and live build pages (`web::sse`)
//! read: one view struct per table a page shows.

use super::{json_col, result_col, Conn, Props};
use crate::model::{
    BuildId, BuildResult, BuilderId, BuildsetId, ChangeId, LogId, RequestId, StepId, WorkerId,
};
use anyhow::Result;
use rusqlite::{params, OptionalExtension};
use std::collections::BTreeMap;

/// A configured builder and its newest build, for the home page.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BuilderSummary {
    pub name: String,
    pub last: Option<LastBuild>,
}

/// A builder's newest build: number, result, finished?, and when it
/// finished (or started, while running).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LastBuild {
    pub buildid: BuildId,
    pub number: i64,
    pub results: Option<BuildResult>,
    pub complete: bool,
    pub when: Option<i64>,
}

pub(crate) fn builder_summaries(conn: &Conn) -> Result<Vec<BuilderSummary>> {
    let mut stmt = conn.raw.prepare_cached(
        "SELECT bl.name, b.number, b.results, b.complete_at IS NOT NULL,
                coalesce(b.complete_at, b.started_at), b.buildid
         FROM builders bl
         LEFT JOIN builds b ON b.buildid = (SELECT buildid FROM builds
              WHERE builderid = bl.builderid ORDER BY number DESC LIMIT 1)
         WHERE bl.configured = 1 ORDER BY bl.name",
    )?;
    let rows = stmt.query_map([], |r| {
        let number: Option<i64> = r.get(1)?;
        Ok(BuilderSummary {
            name: r.get(0)?,
            last: match number {
                Some(number) => Some(LastBuild {
                    buildid: r.get(5)?,
                    number,
                    results: result_col(r, 2, "builds", r.get(5)?)?,
                    complete: r.get(3)?,
                    when: r.get(4)?,
                }),
                None => None,
            },
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// A build in a list: the home page's running and recent builds, a
/// builder's page.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BuildListRow {
    pub buildid: BuildId,
    pub builder: String,
    pub number: i64,
    pub results: Option<BuildResult>,
    pub started_at: i64,
    pub complete_at: Option<i64>,
    pub state_string: String,
    pub worker: Option<String>,
    pub branch: Option<String>,
    pub revision: Option<String>,
}

/// The columns `build_list_row` reads and the tables they come from, with
/// the source columns (`branch`, `revision`) and the joins they need as
/// the two arguments: one definition for both lists below.
macro_rules! build_list {
    ($source:literal, $source_joins:literal) => {
        concat!(
            "bl.name, b.number, b.results, b.started_at, b.complete_at,
    b.state_string, w.name, ",
            $source,
            ", b.buildid
    FROM builds b JOIN builders bl ON bl.builderid = b.builderid
    LEFT JOIN workers w ON w.workerid = b.workerid",
            $source_joins
        )
    };
}

const BUILD_LIST_COLS: &str = build_list!(
    "bs.branch, bs.revision",
    "
    JOIN buildrequests br ON br.buildrequestid = b.buildrequestid
    JOIN buildsets bs ON bs.buildsetid = br.buildsetid"
);

/// The same for the home page's lists, which show no source: `branch` and
/// `revision` are NULL, so the two joins they need (which doubled the
/// recent-builds query's time on 10,000 builds) are left out.
const HOME_LIST_COLS: &str = build_list!("NULL, NULL", "");

fn build_list_row(r: &rusqlite::Row) -> rusqlite::Result<BuildListRow> {
    Ok(BuildListRow {
        buildid: r.get(9)?,
        builder: r.get(0)?,
        number: r.get(1)?,
        results: result_col(r, 2, "builds", r.get(9)?)?,
        started_at: r.get(3)?,
        complete_at: r.get(4)?,
        state_string: r.get(5)?,
        worker: r.get(6)?,
        branch: r.get(7)?,
        revision: r.get(8)?,
    })
}

/// Builds still running, oldest first (without their source).
pub(crate) fn running_builds(conn: &Conn) -> Result<Vec<BuildListRow>> {
    let mut stmt = conn.raw.prepare_cached(&format!(
        "SELECT {HOME_LIST_COLS} WHERE b.complete_at IS NULL ORDER BY b.started_at, b.buildid"
    ))?;
    let rows = stmt.query_map([], build_list_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The newest `limit` builds of every builder (without their source).
pub(crate) fn recent_builds(conn: &Conn, limit: i64) -> Result<Vec<BuildListRow>> {
    let mut stmt = conn.raw.prepare_cached(&format!(
        "SELECT {HOME_LIST_COLS} ORDER BY b.buildid DESC LIMIT ?1"
    ))?;
    let rows = stmt.query_map([limit], build_list_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// A builder's builds, newest first: `limit` after skipping `offset`.
pub(crate) fn builder_builds(
    conn: &Conn,
    builderid: BuilderId,
    limit: i64,
    offset: i64,
) -> Result<Vec<BuildListRow>> {
    let mut stmt = conn.raw.prepare_cached(&format!(
        "SELECT {BUILD_LIST_COLS} WHERE b.builderid = ?1 ORDER BY b.number DESC LIMIT ?2 OFFSET ?3"
    ))?;
    let rows = stmt.query_map(params![builderid, limit, offset], build_list_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// How many builds a builder has.
pub(crate) fn build_count(conn: &Conn, builderid: BuilderId) -> Result<i64> {
    Ok(conn
        .raw
        .prepare_cached("SELECT count(*) FROM builds WHERE builderid = ?1")?
        .query_row([builderid], |r| r.get(0))?)
}

/// Who or what asked for a request's buildset, from what it records.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Origin {
    /// A logged-in user forced it on a force scheduler.
    Forced { user: String },
    /// A user asked to build build `of` again; its (builder, number)
    /// unless the janitor has pruned it.
    Rebuild {
        user: String,
        of: BuildId,
        build: Option<(String, i64)>,
    },
    /// A scheduler, for changes: the newest change's author and how many
    /// changes the buildset holds.
    Changes {
        scheduler: Option<String>,
        author: String,
        count: i64,
    },
    /// A scheduler on its own (a timer), with no change and no user.
    Scheduler { scheduler: Option<String> },
}

/// A build request as the queue, the request page and the list of
/// finished requests show it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RequestRow {
    pub buildrequestid: RequestId,
    pub builder: String,
    pub reason: String,
    pub submitted_at: i64,
    pub priority: i64,
    pub branch: Option<String>,
    pub revision: Option<String>,
    pub origin: Origin,
    /// What the force form set (its reason and each typed property, in
    /// name order; `owner` is in `origin`).
    pub forced: Vec<(String, serde_json::Value)>,
    pub complete: bool,
    pub results: Option<BuildResult>,
    pub claimed_at: Option<i64>,
    /// For a request collapsed into a newer one (SKIPPED): the build that
    /// covered it, as (buildid, builder, number); the builder and number
    /// are None once the janitor has pruned that build.
    pub covered_by: Option<(BuildId, Option<(String, i64)>)>,
    /// Its own newest build, as (builder, number).
    pub build: Option<(String, i64)>,
}

/// The source a property set by the force form carries.
const FORCE_FORM: &str = "Force Build Form";

/// The columns [`request_row`] reads and the joins they need; the caller
/// adds WHERE and ORDER BY.
const REQUEST_FROM: &str = "SELECT br.buildrequestid, bl.name, bs.reason, br.submitted_at,
    br.priority, bs.branch, bs.revision, bs.scheduler, bs.requested_by, bs.rebuild_of, rbl.name,
    rb.number, bs.properties, bs.buildsetid,
    (SELECT count(*) FROM buildset_changes bc WHERE bc.buildsetid = bs.buildsetid),
    (SELECT ch.author FROM buildset_changes bc JOIN changes ch ON ch.changeid = bc.changeid
       WHERE bc.buildsetid = bs.buildsetid ORDER BY bc.changeid DESC LIMIT 1),
    br.complete, br.results, br.claimed_at, br.collapsed_into, cbl.name, cb.number,
    (SELECT ob.number FROM builds ob WHERE ob.buildrequestid = br.buildrequestid
       ORDER BY ob.buildid DESC LIMIT 1)
    FROM buildrequests br JOIN builders bl ON bl.builderid = br.builderid
    JOIN buildsets bs ON bs.buildsetid = br.buildsetid
    LEFT JOIN builds rb ON rb.buildid = bs.rebuild_of
    LEFT JOIN builders rbl ON rbl.builderid = rb.builderid
    LEFT JOIN builds cb ON cb.buildid = br.collapsed_into
    LEFT JOIN builders cbl ON cbl.builderid = cb.builderid";

fn request_row(r: &rusqlite::Row) -> rusqlite::Result<RequestRow> {
    let brid: RequestId = r.get(0)?;
    let builder: String = r.get(1)?;
    let props: String = r.get(12)?;
    let props: Props = json_col(&props, "buildsets", r.get(13)?, "properties")?;
    let scheduler: Option<String> = r.get(7)?;
    // A force from before `requested_by` was recorded still names its
    // user in the `owner` property the form set.
    let owner = props
        .get("owner")
        .filter(|(_, src)| src == FORCE_FORM)
        .and_then(|(v, _)| v.as_str().map(str::to_string));
    let origin = match (r.get::<_, Option<String>>(8)?.or(owner), r.get(9)?) {
        (Some(user), Some(of)) => Origin::Rebuild {
            user,
            of,
            build: r.get::<_, Option<String>>(10)?.zip(r.get(11)?),
        },
        (Some(user), None) => Origin::Forced { user },
        (None, _) => match r.get::<_, Option<String>>(15)? {
            Some(author) => Origin::Changes {
                scheduler,
                author,
                count: r.get(14)?,
            },
            None => Origin::Scheduler { scheduler },
        },
    };
    let forced = props
        .into_iter()
        .filter(|(k, (_, src))| src == FORCE_FORM && k != "owner")
        .map(|(k, (v, _))| (k, v))
        .collect();
    Ok(RequestRow {
        buildrequestid: brid,
        reason: r.get(2)?,
        submitted_at: r.get(3)?,
        priority: r.get(4)?,
        branch: r.get(5)?,
        revision: r.get(6)?,
        origin,
        forced,
        complete: r.get(16)?,
        results: result_col(r, 17, "buildrequests", brid.0)?,
        claimed_at: r.get(18)?,
        covered_by: match (r.get::<_, Option<BuildId>>(19)?, r.get(20)?, r.get(21)?) {
            (Some(b), Some(name), Some(number)) => Some((b, Some((name, number)))),
            (Some(b), ..) => Some((b, None)),
            (None, ..) => None,
        },
        build: r.get::<_, Option<i64>>(22)?.map(|n| (builder.clone(), n)),
        builder,
    })
}

/// How many requests are queued: of every builder, or of one.
pub(crate) fn queued_count(conn: &Conn, builderid: Option<BuilderId>) -> Result<i64> {
    Ok(conn
        .raw
        .prepare_cached(
            "SELECT count(*) FROM buildrequests
             WHERE complete = 0 AND claimed_at IS NULL AND (?1 IS NULL OR builderid = ?1)",
        )?
        .query_row([builderid], |r| r.get(0))?)
}

/// Queued requests in the order the botmaster takes them, at most `limit`.
pub(crate) fn queued_requests(
    conn: &Conn,
    builderid: Option<BuilderId>,
    limit: i64,
) -> Result<Vec<RequestRow>> {
    let mut stmt = conn.raw.prepare_cached(&format!(
        "{REQUEST_FROM}
         WHERE br.complete = 0 AND br.claimed_at IS NULL AND (?1 IS NULL OR br.builderid = ?1)
         ORDER BY br.priority DESC, br.buildrequestid LIMIT ?2"
    ))?;
    let rows = stmt.query_map(params![builderid, limit], request_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The newest requests that are no longer queued (claimed or complete),
/// newest first, at most `limit`.
pub(crate) fn recent_requests(conn: &Conn, limit: i64) -> Result<Vec<RequestRow>> {
    let mut stmt = conn.raw.prepare_cached(&format!(
        "{REQUEST_FROM}
         WHERE br.complete = 1 OR br.claimed_at IS NOT NULL
         ORDER BY br.buildrequestid DESC LIMIT ?1"
    ))?;
    let rows = stmt.query_map([limit], request_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// One request by id.
pub(crate) fn request_info(conn: &Conn, brid: RequestId) -> Result<Option<RequestRow>> {
    Ok(conn
        .raw
        .prepare_cached(&format!("{REQUEST_FROM} WHERE br.buildrequestid = ?1"))?
        .query_row([brid], request_row)
        .optional()?)
}

/// What a worker is doing, for saying why a request waits.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct WorkerLoad {
    pub connected: bool,
    pub paused: bool,
    /// Its running builds, as (builder, number).
    pub running: Vec<(String, i64)>,
}

/// Every known worker's connection, pause and running builds, by name.
pub(crate) fn worker_loads(conn: &Conn) -> Result<BTreeMap<String, WorkerLoad>> {
    let mut out: BTreeMap<String, WorkerLoad> = BTreeMap::new();
    let mut stmt = conn
        .raw
        .prepare_cached("SELECT name, connected, paused FROM workers")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        out.insert(
            r.get(0)?,
            WorkerLoad {
                connected: r.get(1)?,
                paused: r.get(2)?,
                running: vec![],
            },
        );
    }
    let mut stmt = conn.raw.prepare_cached(
        "SELECT w.name, bl.name, b.number FROM builds b
         JOIN workers w ON w.workerid = b.workerid JOIN builders bl ON bl.builderid = b.builderid
         WHERE b.complete_at IS NULL ORDER BY b.buildid",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let name: String = r.get(0)?;
        out.entry(name)
            .or_default()
            .running
            .push((r.get(1)?, r.get(2)?));
    }
    Ok(out)
}

/// A builder's page head.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BuilderInfo {
    pub builderid: BuilderId,
    pub description: Option<String>,
    pub tags: Vec<String>,
}

pub(crate) fn builder_info(conn: &Conn, name: &str) -> Result<Option<BuilderInfo>> {
    Ok(conn
        .raw
        .prepare_cached("SELECT builderid, description, tags FROM builders WHERE name = ?1")?
        .query_row([name], |r| {
            let tags: String = r.get(2)?;
            Ok(BuilderInfo {
                builderid: r.get(0)?,
                description: r.get(1)?,
                tags: json_col(&tags, "builders", r.get(0)?, "tags")?,
            })
        })
        .optional()?)
}

/// The columns of a build the build page and its live updates show.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BuildRow {
    pub buildid: BuildId,
    pub number: i64,
    pub builder: String,
    pub worker: Option<String>,
    pub buildrequestid: RequestId,
    pub started_at: i64,
    pub complete_at: Option<i64>,
    pub results: Option<BuildResult>,
    pub state_string: String,
}

const BUILD_COLS: &str = "b.buildid, b.number, bl.name, w.name, b.buildrequestid, b.started_at,
    b.complete_at, b.results, b.state_string
    FROM builds b JOIN builders bl ON bl.builderid = b.builderid
    LEFT JOIN workers w ON w.workerid = b.workerid";

fn build_row(r: &rusqlite::Row) -> rusqlite::Result<BuildRow> {
    Ok(BuildRow {
        buildid: r.get(0)?,
        number: r.get(1)?,
        builder: r.get(2)?,
        worker: r.get(3)?,
        buildrequestid: r.get(4)?,
        started_at: r.get(5)?,
        complete_at: r.get(6)?,
        results: result_col(r, 7, "builds", r.get(0)?)?,
        state_string: r.get(8)?,
    })
}

pub(crate) fn build_by_id(conn: &Conn, buildid: BuildId) -> Result<Option<BuildRow>> {
    Ok(conn
        .raw
        .prepare_cached(&format!("SELECT {BUILD_COLS} WHERE b.buildid = ?1"))?
        .query_row([buildid], build_row)
        .optional()?)
}

/// Build `number` of the builder named `builder`.
pub(crate) fn build_by_number(conn: &Conn, builder: &str, number: i64) -> Result<Option<BuildRow>> {
    Ok(conn
        .raw
        .prepare_cached(&format!(
            "SELECT {BUILD_COLS} WHERE bl.name = ?1 AND b.number = ?2"
        ))?
        .query_row(params![builder, number], build_row)
        .optional()?)
}

/// The newest build of a request that is no longer queued (claimed or
/// complete); None while it is queued, or when it has no build.
pub(crate) fn request_build(conn: &Conn, brid: RequestId) -> Result<Option<BuildRow>> {
    let queued: Option<bool> = conn
        .raw
        .prepare_cached(
            "SELECT complete = 0 AND claimed_at IS NULL FROM buildrequests WHERE buildrequestid = ?1",
        )?
        .query_row([brid], |r| r.get(0))
        .optional()?;
    if queued != Some(false) {
        return Ok(None);
    }
    Ok(conn
        .raw
        .prepare_cached(&format!(
            "SELECT {BUILD_COLS} WHERE b.buildrequestid = ?1 ORDER BY b.buildid DESC LIMIT 1"
        ))?
        .query_row([brid], build_row)
        .optional()?)
}

/// A step and its logs, as the build page shows them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StepRow {
    pub stepid: StepId,
    pub number: i64,
    pub name: String,
    pub started_at: Option<i64>,
    pub complete_at: Option<i64>,
    pub results: Option<BuildResult>,
    pub state_string: String,
    /// The step's links (JSON objects, Buildbot's `urls`).
    pub urls: Vec<serde_json::Value>,
    /// (logid, name, complete)
    pub logs: Vec<(LogId, String, bool)>,
}

/// The steps of a build with their logs, in order.
pub(crate) fn steps_of(conn: &Conn, buildid: BuildId) -> Result<Vec<StepRow>> {
    let mut stmt = conn.raw.prepare_cached(
        "SELECT s.stepid, s.number, s.name, s.started_at, s.complete_at, s.results,
                s.state_string, s.urls, l.logid, l.name, l.complete
         FROM steps s LEFT JOIN logs l ON l.stepid = s.stepid
         WHERE s.buildid = ?1 AND s.hidden = 0 ORDER BY s.number, s.stepid, l.logid",
    )?;
    let mut steps: Vec<StepRow> = Vec::new();
    let mut rows = stmt.query([buildid])?;
    while let Some(r) = rows.next()? {
        let stepid: StepId = r.get(0)?;
        if steps.last().map(|s| s.stepid) != Some(stepid) {
            let urls: String = r.get(7)?;
            steps.push(StepRow {
                stepid,
                number: r.get(1)?,
                name: r.get(2)?,
                started_at: r.get(3)?,
                complete_at: r.get(4)?,
                results: result_col(r, 5, "steps", stepid.0)?,
                state_string: r.get(6)?,
                urls: json_col(&urls, "steps", stepid.0, "urls")?,
                logs: vec![],
            });
        }
        if let (Some(logid), Some(step)) = (r.get::<_, Option<LogId>>(8)?, steps.last_mut()) {
            step.logs.push((logid, r.get(9)?, r.get(10)?));
        }
    }
    Ok(steps)
}

/// The buildset a request belongs to, as the build page's "Source" shows it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BuildsetInfo {
    pub buildsetid: BuildsetId,
    pub reason: String,
    pub branch: Option<String>,
    pub revision: Option<String>,
    pub repository: String,
    pub submitted_at: i64,
}

pub(crate) fn request_buildset(conn: &Conn, brid: RequestId) -> Result<Option<BuildsetInfo>> {
    Ok(conn
        .raw
        .prepare_cached(
            "SELECT bs.buildsetid, bs.reason, bs.branch, bs.revision, bs.repository, bs.submitted_at
             FROM buildrequests br JOIN buildsets bs ON bs.buildsetid = br.buildsetid
             WHERE br.buildrequestid = ?1",
        )?
        .query_row([brid], |r| {
            Ok(BuildsetInfo {
                buildsetid: r.get(0)?,
                reason: r.get(1)?,
                branch: r.get(2)?,
                revision: r.get(3)?,
                repository: r.get(4)?,
                submitted_at: r.get(5)?,
            })
        })
        .optional()?)
}

/// A change in a list (a buildset's, the changes page).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ChangeListRow {
    pub changeid: ChangeId,
    pub author: String,
    pub comments: String,
    pub branch: Option<String>,
    pub revision: Option<String>,
    pub repository: String,
    pub when_timestamp: i64,
}

const CHANGE_LIST_COLS: &str =
    "c.changeid, c.author, c.comments, c.branch, c.revision, c.repository, c.when_timestamp";

fn change_list_row(r: &rusqlite::Row) -> rusqlite::Result<ChangeListRow> {
    Ok(ChangeListRow {
        changeid: r.get(0)?,
        author: r.get(1)?,
        comments: r.get(2)?,
        branch: r.get(3)?,
        revision: r.get(4)?,
        repository: r.get(5)?,
        when_timestamp: r.get(6)?,
    })
}

/// The newest `limit` changes of a buildset.
pub(crate) fn buildset_changes(
    conn: &Conn,
    buildsetid: BuildsetId,
    limit: i64,
) -> Result<Vec<ChangeListRow>> {
    let mut stmt = conn.raw.prepare_cached(&format!(
        "SELECT {CHANGE_LIST_COLS}
         FROM buildset_changes bc JOIN changes c ON c.changeid = bc.changeid
         WHERE bc.buildsetid = ?1 ORDER BY c.changeid DESC LIMIT ?2"
    ))?;
    let rows = stmt.query_map(params![buildsetid, limit], change_list_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Every change, newest first: `limit` after skipping `offset`.
pub(crate) fn changes_page(conn: &Conn, limit: i64, offset: i64) -> Result<Vec<ChangeListRow>> {
    let mut stmt = conn.raw.prepare_cached(&format!(
        "SELECT {CHANGE_LIST_COLS} FROM changes c ORDER BY c.changeid DESC LIMIT ?1 OFFSET ?2"
    ))?;
    let rows = stmt.query_map([limit, offset], change_list_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(crate) fn change_count(conn: &Conn) -> Result<i64> {
    Ok(conn
        .raw
        .prepare_cached("SELECT count(*) FROM changes")?
        .query_row([], |r| r.get(0))?)
}

/// A build's properties; an error when there is no such build.
pub(crate) fn build_properties(conn: &Conn, buildid: BuildId) -> Result<Props> {
    let props: String = conn
        .raw
        .prepare_cached("SELECT properties FROM builds WHERE buildid = ?1")?
        .query_row([buildid], |r| r.get(0))?;
    Ok(json_col(&props, "builds", buildid.0, "properties")?)
}

/// The build a log belongs to.
pub(crate) fn log_build(conn: &Conn, logid: LogId) -> Result<Option<BuildId>> {
    Ok(conn
        .raw
        .prepare_cached(
            "SELECT s.buildid FROM logs l JOIN steps s ON s.stepid = l.stepid WHERE l.logid = ?1",
        )?
        .query_row([logid], |r| r.get(0))
        .optional()?)
}

/// A worker as the workers page shows it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WorkerRow {
    pub workerid: WorkerId,
    pub name: String,
    pub connected: bool,
    pub paused: bool,
    /// What the worker said about itself (admin, host, ...).
    pub info: BTreeMap<String, serde_json::Value>,
    pub last_connection: Option<i64>,
    pub configured: bool,
    /// (builder, number) of the builds it runs.
    pub running: Vec<(String, i64)>,
}

/// Every worker the master knows, configured first.
pub(crate) fn worker_list(conn: &Conn) -> Result<Vec<WorkerRow>> {
    let mut stmt = conn.raw.prepare_cached(
        "SELECT w.workerid, w.name, w.connected, w.paused, w.info, w.last_connection, w.configured,
                (SELECT group_concat(bl.name || char(9) || b.number, char(10))
                 FROM builds b JOIN builders bl ON bl.builderid = b.builderid
                 WHERE b.workerid = w.workerid AND b.complete_at IS NULL)
         FROM workers w ORDER BY w.configured DESC, w.name",
    )?;
    let rows = stmt.query_map([], |r| {
        let info: String = r.get(4)?;
        let running: Option<String> = r.get(7)?;
        Ok(WorkerRow {
            workerid: r.get(0)?,
            name: r.get(1)?,
            connected: r.get(2)?,
            paused: r.get(3)?,
            info: json_col(&info, "workers", r.get(0)?, "info")?,
            last_connection: r.get(5)?,
            configured: r.get(6)?,
            running: running
                .unwrap_or_default()
                .lines()
                .filter_map(|l| {
                    let (b, n) = l.split_once('\t')?;
                    Some((b.to_string(), n.parse().ok()?))
                })
                .collect(),
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The result of a builder's newest finished build: None when there is no
/// such builder, Some(None) when it has no finished build.
pub(crate) fn builder_last_result(
    conn: &Conn,
    builder: &str,
) -> Result<Option<Option<BuildResult>>> {
    Ok(conn
        .raw
        .prepare_cached(
            "SELECT b.results, b.buildid FROM builders bl
             LEFT JOIN builds b ON b.buildid = (SELECT buildid FROM builds
                WHERE builderid = bl.builderid AND complete_at IS NOT NULL
                ORDER BY number DESC LIMIT 1)
             WHERE bl.name = ?1",
        )?
        .query_row([builder], |r| {
            let id: Option<i64> = r.get(1)?;
            result_col(r, 0, "builds", id.unwrap_or_default())
        })
        .optional()?)
}

/// A fingerprint of what the overview pages show (home, builders,
/// workers, queue, changes, console), for live pages (`web::sse`): the
/// newest build, change and request, each running build and its state,
/// the queued requests, and each worker's connection and pause. Any
/// change a page would show changes it; a page is refreshed when it
/// differs from the one it was rendered with. One query; cheap enough to
/// run every second per open page (each part is a max over a primary key
/// or a scan of a partial index of what is incomplete).
pub(crate) fn live_version(conn: &Conn) -> Result<u64> {
    use std::hash::{Hash, Hasher};
    // SipHash with fixed keys: the same data gives the same number in
    // every process, so a page rendered before a restart compares right.
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new();
    conn.raw
        .prepare_cached(
            "SELECT (SELECT max(buildid) FROM builds),
                    (SELECT group_concat(buildid || ':' || state_string, char(10))
                     FROM builds WHERE complete_at IS NULL),
                    (SELECT max(buildrequestid) FROM buildrequests),
                    (SELECT count(*) FROM buildrequests WHERE complete = 0 AND claimed_at IS NULL),
                    (SELECT total(buildrequestid) FROM buildrequests
                     WHERE complete = 0 AND claimed_at IS NULL),
                    (SELECT group_concat(workerid || ':' || connected || paused || configured
                                         || ':' || coalesce(last_connection, ''), ',')
                     FROM workers),
                    (SELECT max(changeid) FROM changes)",
        )?
        .query_row([], |r| {
            r.get::<_, Option<i64>>(0)?.hash(&mut h);
            r.get::<_, Option<String>>(1)?.hash(&mut h);
            r.get::<_, Option<i64>>(2)?.hash(&mut h);
            r.get::<_, i64>(3)?.hash(&mut h);
            r.get::<_, f64>(4)?.to_bits().hash(&mut h);
            r.get::<_, Option<String>>(5)?.hash(&mut h);
            r.get::<_, Option<i64>>(6)?.hash(&mut h);
            Ok(())
        })?;
    // 53 bits: the script handles it as a Number without loss.
    Ok(h.finish() >> 11)
}

/// One build in a history strip, chart or console cell.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HistoryBuild {
    pub buildid: BuildId,
    pub builder: String,
    pub number: i64,
    pub results: Option<BuildResult>,
    pub started_at: i64,
    pub complete_at: Option<i64>,
}

fn history_build(r: &rusqlite::Row, first: usize) -> rusqlite::Result<HistoryBuild> {
    Ok(HistoryBuild {
        buildid: r.get(first + 5)?,
        builder: r.get(first)?,
        number: r.get(first + 1)?,
        results: result_col(r, first + 2, "builds", r.get(first + 5)?)?,
        started_at: r.get(first + 3)?,
        complete_at: r.get(first + 4)?,
    })
}

/// The last `per` builds of every configured builder, newest first, in
/// builder-name order: the home page's strips, in one query (the range on
/// `UNIQUE (builderid, number)` per builder, not one query a builder).
pub(crate) fn builder_history(conn: &Conn, per: i64) -> Result<Vec<HistoryBuild>> {
    let mut stmt = conn.raw.prepare_cached(
        "SELECT bl.name, b.number, b.results, b.started_at, b.complete_at, b.buildid
         FROM builders bl JOIN builds b ON b.builderid = bl.builderid
         WHERE bl.configured = 1
           AND b.number > (SELECT max(number) FROM builds x WHERE x.builderid = bl.builderid) - ?1
         ORDER BY bl.name, b.number DESC",
    )?;
    let rows = stmt.query_map([per], |r| history_build(r, 0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The builds the changes `lo..=hi` started (through their buildsets),
/// as (change, build), newest build first: the changes page's links and
/// the console's cells, in one query.
pub(crate) fn change_builds(
    conn: &Conn,
    lo: ChangeId,
    hi: ChangeId,
) -> Result<Vec<(ChangeId, HistoryBuild)>> {
    let mut stmt = conn.raw.prepare_cached(
        "SELECT bc.changeid, bl.name, b.number, b.results, b.started_at, b.complete_at, b.buildid
         FROM buildset_changes bc
         JOIN buildrequests br ON br.buildsetid = bc.buildsetid
         JOIN builds b ON b.buildrequestid = br.buildrequestid
         JOIN builders bl ON bl.builderid = b.builderid
         WHERE bc.changeid BETWEEN ?1 AND ?2
         ORDER BY b.buildid DESC",
    )?;
    let rows = stmt.query_map(params![lo, hi], |r| Ok((r.get(0)?, history_build(r, 1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
