//! The JSON API's reads (`web::api`): the resources as data (table,
//! fields as SQL expressions with their types, nesting), and turning a typed
//! query (`ItemRef` for a path, `Spec` for filters with typed operators,
//! order, limit, offset, fields) into SQL with bound parameters, rendered
//! in Buildbot's data-API shapes. `web::api` parses the URL into those
//! types; SQL text is only ever assembled here, from static descriptions.

use super::Conn;
use crate::model::{BuildId, LogId};
use rusqlite::types::{ToSql, ToSqlOutput, ValueRef};
use rusqlite::{params_from_iter, OptionalExtension, Row};
use serde_json::{json, Map, Value};

/// A value from the request, bound as a parameter (never SQL text).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Param {
    Int(i64),
    Text(String),
}

impl ToSql for Param {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Param::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Param::Text(t) => ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes())),
        })
    }
}

/// A request the API answers with 400 (`bad`).
pub(crate) fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::BadRequest(msg.into())
}

/// The rendered items of a collection (under a parent's key, if any) and
/// `meta.total`.
pub(crate) fn collection(
    conn: &Conn,
    res: &Resource,
    parent: Option<(&Parent, i64)>,
    spec: &Spec,
) -> Result<(Vec<Value>, i64), ApiError> {
    let conds: Vec<(&'static str, i64)> = parent.map(|(p, id)| (p.fk, id)).into_iter().collect();
    select(conn, res, &conds, spec, true)
}

/// The rendered item with key `id` (empty when there is none).
pub(crate) fn item(
    conn: &Conn,
    res: &Resource,
    id: i64,
    spec: &Spec,
) -> Result<Vec<Value>, ApiError> {
    Ok(select(conn, res, &[(res.key, id)], spec, false)?.0)
}

impl Parent {
    /// Whether an item under this parent can be named in a path (by
    /// number or name).
    pub(crate) fn nameable(&self) -> bool {
        self.number.is_some() || self.name.is_some()
    }
}

/// Most items one collection answer holds, asked for or not: bounds the
/// memory and time of `/builds` on a master with years of history. The
/// caller sees `meta.total` and pages with `offset`.
pub(crate) const MAX_LIMIT: i64 = 10_000;

/// How a field is read from SQL, rendered to JSON, and filtered.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Ty {
    /// Integer (ids, numbers, Unix times, result codes); NULL → null.
    Int,
    /// Text; NULL → null.
    Str,
    /// A 0/1 SQL expression rendered as a JSON boolean.
    Bool,
    /// JSON text holding a list of strings (tags, files); filterable with
    /// `__contains` (element membership, as Buildbot).
    StrList,
    /// JSON text rendered as parsed JSON; not filterable.
    Json,
    /// Sourced properties `{"name": [value, "source"]}`, shown only on
    /// `?property=`; otherwise `{}` or, if `null_default`, null (builds vs
    /// buildrequests in Buildbot).
    Props { null_default: bool },
}

pub(crate) struct Field {
    pub(crate) name: &'static str,
    /// SQL expression over the resource's `from` clause. Static text only.
    sql: &'static str,
    pub(crate) ty: Ty,
    /// For a field about chained builds: the value while no build has
    /// triggered another (`build_triggers` empty, as on most masters),
    /// used instead of `sql`'s per-row subqueries.
    without_chains: Option<&'static str>,
}

const fn fld(name: &'static str, sql: &'static str, ty: Ty) -> Field {
    Field {
        name,
        sql,
        ty,
        without_chains: None,
    }
}

/// A field about chained builds ([`Field::without_chains`]).
const fn chain_fld(name: &'static str, sql: &'static str, empty: &'static str, ty: Ty) -> Field {
    Field {
        name,
        sql,
        ty,
        without_chains: Some(empty),
    }
}

/// Whether any build has triggered another: one index probe per request,
/// instead of two subqueries per row of a page of builds.
fn any_chains(conn: &Conn) -> Result<bool, ApiError> {
    let mut stmt = conn
        .raw
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM build_triggers)")?;
    Ok(stmt.query_row([], |r| r.get(0))?)
}

/// How a resource hangs under another: `/<parent>/<pid>/<plural>` lists the
/// rows whose `fk` is the parent's key; `/<parent>/<pid>/<plural>/<x>` picks
/// one by `number` (when x is numeric) or by `name`.
pub(crate) struct Parent {
    plural: &'static str,
    fk: &'static str,
    number: Option<&'static str>,
    name: Option<&'static str>,
}

const fn parent(
    plural: &'static str,
    fk: &'static str,
    number: Option<&'static str>,
    name: Option<&'static str>,
) -> Parent {
    Parent {
        plural,
        fk,
        number,
        name,
    }
}

pub(crate) struct Resource {
    /// Path segment and envelope key.
    pub(crate) plural: &'static str,
    from: &'static str,
    /// Primary key expression; also the default (and tie-breaking) order.
    key: &'static str,
    /// `/<plural>/<name>` also finds an item by this text column.
    name_col: Option<&'static str>,
    parents: &'static [Parent],
    fields: &'static [Field],
}

impl Resource {
    pub(crate) fn field(&self, name: &str) -> Option<&'static Field> {
        // Resources live in statics, so their fields are 'static too.
        let fields: &'static [Field] = self.fields;
        fields.iter().find(|f| f.name == name)
    }

    pub(crate) fn parent_link(&self, plural: &str) -> Option<&'static Parent> {
        let parents: &'static [Parent] = self.parents;
        parents.iter().find(|p| p.plural == plural)
    }
}

use Ty::{Bool, Int, Json, Props, Str, StrList};

static BUILDERS: Resource = Resource {
    plural: "builders",
    from: "builders bl",
    key: "bl.builderid",
    name_col: Some("bl.name"),
    parents: &[],
    fields: &[
        fld("builderid", "bl.builderid", Int),
        fld("name", "bl.name", Str),
        fld("description", "bl.description", Str),
        // Buildbot fields minibot has no data for; present so clients that
        // read them find them.
        fld("description_format", "NULL", Str),
        fld("description_html", "NULL", Str),
        fld("projectid", "NULL", Int),
        fld("tags", "bl.tags", StrList),
        // One master: a builder is on it while it is in the loaded config.
        fld(
            "masterids",
            "CASE WHEN bl.configured THEN '[1]' ELSE '[]' END",
            Json,
        ),
    ],
};

static BUILDS: Resource = Resource {
    plural: "builds",
    from: "builds b",
    key: "b.buildid",
    name_col: None,
    parents: &[
        parent("builders", "b.builderid", Some("b.number"), None),
        parent("buildrequests", "b.buildrequestid", None, None),
        parent("workers", "b.workerid", None, None),
    ],
    fields: &[
        fld("buildid", "b.buildid", Int),
        fld("number", "b.number", Int),
        fld("builderid", "b.builderid", Int),
        fld("buildrequestid", "b.buildrequestid", Int),
        fld("workerid", "b.workerid", Int),
        fld("masterid", "b.masterid", Int),
        fld("started_at", "b.started_at", Int),
        fld("complete_at", "b.complete_at", Int),
        fld("complete", "(b.complete_at IS NOT NULL)", Bool),
        fld("state_string", "b.state_string", Str),
        fld("results", "b.results", Int),
        // Buildbot's time spent waiting for locks: the steps' waits (a
        // builder's locks are taken before the build exists).
        fld("locks_duration_s", "(b.lock_wait_ms / 1000)", Int),
        // Not in Buildbot: the build whose trigger step started this one's
        // buildset (`db::chain`), or null.
        // Both chain fields first ask whether the build has a chain at all
        // (one index lookup): most builds have none, and the full
        // subqueries sort per row (a temporary b-tree each), which made
        // `GET /api/v2/builds?limit=50` cost 40 % more instructions.
        chain_fld(
            "triggered_by",
            "(CASE WHEN EXISTS (SELECT 1 FROM build_triggers t WHERE t.buildsetid = \
             (SELECT r.buildsetid FROM buildrequests r \
             WHERE r.buildrequestid = b.buildrequestid)) THEN \
             (SELECT json_object('buildid', p.buildid, 'builderid', p.builderid, \
             'number', p.number) FROM buildrequests r \
             JOIN build_triggers t ON t.buildsetid = r.buildsetid \
             JOIN builds p ON p.buildid = t.buildid \
             WHERE r.buildrequestid = b.buildrequestid ORDER BY p.buildid LIMIT 1) END)",
            "NULL",
            Json,
        ),
        // Not in Buildbot: the requests this build's trigger steps started,
        // each with its newest build (null while queued).
        chain_fld(
            "triggered",
            "(CASE WHEN EXISTS (SELECT 1 FROM build_triggers t WHERE t.buildid = b.buildid) \
             THEN (SELECT json_group_array(json_object('step', x.step, 'buildsetid', x.buildsetid, \
             'buildrequestid', x.buildrequestid, 'builderid', x.builderid, \
             'buildid', x.buildid, 'number', (SELECT n.number FROM builds n \
             WHERE n.buildid = x.buildid), 'complete', json(CASE WHEN x.complete THEN 'true' \
             ELSE 'false' END), 'results', x.results)) \
             FROM (SELECT t.step, t.buildsetid, r.buildrequestid, r.builderid, r.complete, \
             r.results, (SELECT max(y.buildid) FROM builds y \
             WHERE y.buildrequestid = r.buildrequestid) AS buildid \
             FROM build_triggers t JOIN buildrequests r ON r.buildsetid = t.buildsetid \
             WHERE t.buildid = b.buildid ORDER BY t.step, r.buildrequestid) x) \
             ELSE '[]' END)",
            "'[]'",
            Json,
        ),
        fld(
            "properties",
            "b.properties",
            Props {
                null_default: false,
            },
        ),
    ],
};

static STEPS: Resource = Resource {
    plural: "steps",
    from: "steps s",
    key: "s.stepid",
    name_col: None,
    parents: &[parent(
        "builds",
        "s.buildid",
        Some("s.number"),
        Some("s.name"),
    )],
    fields: &[
        fld("stepid", "s.stepid", Int),
        fld("number", "s.number", Int),
        fld("name", "s.name", Str),
        fld("buildid", "s.buildid", Int),
        fld("started_at", "s.started_at", Int),
        // No locks: acquired the moment the step starts.
        fld("locks_acquired_at", "s.started_at", Int),
        fld("complete_at", "s.complete_at", Int),
        fld("complete", "(s.complete_at IS NOT NULL)", Bool),
        fld("state_string", "s.state_string", Str),
        fld("results", "s.results", Int),
        fld("hidden", "s.hidden", Bool),
        fld("urls", "s.urls", Json),
    ],
};

static LOGS: Resource = Resource {
    plural: "logs",
    from: "logs l",
    key: "l.logid",
    name_col: None,
    parents: &[parent("steps", "l.stepid", None, Some("l.slug"))],
    fields: &[
        fld("logid", "l.logid", Int),
        fld("name", "l.name", Str),
        fld("slug", "l.slug", Str),
        fld("stepid", "l.stepid", Int),
        fld("complete", "l.complete", Bool),
        fld("num_lines", "l.num_lines", Int),
        fld("type", "l.type", Str),
    ],
};

/// Files `upload` steps stored (issue 20); `url` downloads one
/// (`web::artifacts`).
static ARTIFACTS: Resource = Resource {
    plural: "artifacts",
    from: "artifacts a",
    key: "a.artifactid",
    name_col: None,
    parents: &[parent("builds", "a.buildid", None, Some("a.name"))],
    fields: &[
        fld("artifactid", "a.artifactid", Int),
        fld("buildid", "a.buildid", Int),
        fld("stepnumber", "a.stepnumber", Int),
        fld("name", "a.name", Str),
        fld("size", "a.size", Int),
        fld("sha256", "a.sha256", Str),
        fld("created_at", "a.created_at", Int),
        fld("url", "'/artifacts/' || a.artifactid || '/download'", Str),
    ],
};

static WORKERS: Resource = Resource {
    plural: "workers",
    from: "workers w",
    key: "w.workerid",
    name_col: Some("w.name"),
    parents: &[],
    fields: &[
        fld("workerid", "w.workerid", Int),
        fld("name", "w.name", Str),
        fld("workerinfo", "w.info", Json),
        fld("paused", "w.paused", Bool),
        fld("pause_reason", "NULL", Str),
        fld("graceful", "w.graceful", Bool),
        fld(
            "connected_to",
            "CASE WHEN w.connected THEN '[{\"masterid\":1}]' ELSE '[]' END",
            Json,
        ),
        fld(
            "configured_on",
            "(SELECT json_group_array(json_object('masterid', 1, 'builderid', cw.builderid)) \
             FROM (SELECT builderid FROM configured_workers \
                   WHERE workerid = w.workerid ORDER BY builderid) cw)",
            Json,
        ),
    ],
};

static CHANGES: Resource = Resource {
    plural: "changes",
    from: "changes c",
    key: "c.changeid",
    name_col: None,
    parents: &[],
    fields: &[
        fld("changeid", "c.changeid", Int),
        fld("author", "c.author", Str),
        fld("committer", "c.committer", Str),
        fld("comments", "c.comments", Str),
        fld("branch", "c.branch", Str),
        fld("revision", "c.revision", Str),
        fld("repository", "c.repository", Str),
        fld("project", "c.project", Str),
        fld("category", "c.category", Str),
        fld("codebase", "c.codebase", Str),
        fld("revlink", "c.revlink", Str),
        fld("when_timestamp", "c.when_timestamp", Int),
        fld("files", "c.files", StrList),
        fld("properties", "c.properties", Json),
        fld("parent_changeids", "'[]'", Json),
        // minibot keeps the source stamp inline in the change; a change is
        // its own source stamp, so its ssid is its changeid.
        fld(
            "sourcestamp",
            "json_object('ssid', c.changeid, 'branch', c.branch, 'revision', c.revision, \
             'project', c.project, 'repository', c.repository, 'codebase', c.codebase, \
             'created_at', c.when_timestamp, 'patch', NULL)",
            Json,
        ),
    ],
};

static BUILDREQUESTS: Resource = Resource {
    plural: "buildrequests",
    from: "buildrequests br",
    key: "br.buildrequestid",
    name_col: None,
    parents: &[parent("builders", "br.builderid", None, None)],
    fields: &[
        fld("buildrequestid", "br.buildrequestid", Int),
        fld("buildsetid", "br.buildsetid", Int),
        fld("builderid", "br.builderid", Int),
        fld("priority", "br.priority", Int),
        fld("claimed", "(br.claimed_at IS NOT NULL)", Bool),
        fld("claimed_at", "br.claimed_at", Int),
        fld(
            "claimed_by_masterid",
            "CASE WHEN br.claimed_at IS NOT NULL THEN 1 END",
            Int,
        ),
        fld("complete", "br.complete", Bool),
        fld("results", "br.results", Int),
        fld("submitted_at", "br.submitted_at", Int),
        fld("complete_at", "br.complete_at", Int),
        fld("waited_for", "br.waited_for", Bool),
        // Not in Buildbot: the build that covered a collapsed (SKIPPED) request.
        fld("collapsed_into", "br.collapsed_into", Int),
        // Not in Buildbot: why a queued request waits (a string, null when
        // it is not queued). Not a column: `web::api` fills it in from the
        // queue, the workers and the config; `Json` so that it is neither
        // filtered nor ordered on here.
        fld("waiting_reason", "NULL", Json),
        // Not in Buildbot: the user who forced or rebuilt it (its buildset's).
        fld(
            "requested_by",
            "(SELECT p.requested_by FROM buildsets p WHERE p.buildsetid = br.buildsetid)",
            Str,
        ),
        // As Buildbot: a request's properties are its buildset's.
        fld(
            "properties",
            "(SELECT p.properties FROM buildsets p WHERE p.buildsetid = br.buildsetid)",
            Props { null_default: true },
        ),
    ],
};

static BUILDSETS: Resource = Resource {
    plural: "buildsets",
    from: "buildsets bs",
    key: "bs.buildsetid",
    name_col: None,
    parents: &[],
    fields: &[
        // Buildbot names a buildset's id `bsid`.
        fld("bsid", "bs.buildsetid", Int),
        fld("external_idstring", "NULL", Str),
        fld("reason", "bs.reason", Str),
        fld("submitted_at", "bs.submitted_at", Int),
        fld("complete", "bs.complete", Bool),
        fld("complete_at", "bs.complete_at", Int),
        fld("results", "bs.results", Int),
        // The build whose trigger step made it (`db::chain`), as Buildbot.
        fld(
            "parent_buildid",
            "(SELECT min(t.buildid) FROM build_triggers t WHERE t.buildsetid = bs.buildsetid)",
            Int,
        ),
        fld(
            "parent_relationship",
            "(SELECT 'Triggered from' FROM build_triggers t \
             WHERE t.buildsetid = bs.buildsetid LIMIT 1)",
            Str,
        ),
        fld("rebuilt_buildid", "bs.rebuild_of", Int),
        // Not in Buildbot: the user who forced or rebuilt it.
        fld("requested_by", "bs.requested_by", Str),
        // The inline source stamp; its ssid is the change it came from (the
        // latest, as Buildbot's sourcestamp follows the last change), null
        // for a forced build.
        fld(
            "sourcestamps",
            "json_array(json_object('ssid', (SELECT max(bc.changeid) FROM buildset_changes bc \
             WHERE bc.buildsetid = bs.buildsetid), 'branch', bs.branch, 'revision', bs.revision, \
             'project', bs.project, 'repository', bs.repository, 'codebase', bs.codebase, \
             'created_at', bs.submitted_at, 'patch', NULL))",
            Json,
        ),
    ],
};

static RESOURCES: [&Resource; 9] = [
    &BUILDERS,
    &BUILDS,
    &STEPS,
    &LOGS,
    &ARTIFACTS,
    &WORKERS,
    &CHANGES,
    &BUILDREQUESTS,
    &BUILDSETS,
];

pub(crate) fn resource(plural: &str) -> Option<&'static Resource> {
    RESOURCES.iter().copied().find(|r| r.plural == plural)
}

#[derive(Debug)]
pub(crate) enum ApiError {
    BadRequest(String),
    NotFound(String),
    Internal(String),
}

impl From<rusqlite::Error> for ApiError {
    fn from(e: rusqlite::Error) -> Self {
        ApiError::Internal(format!("database: {e}"))
    }
}

/// One item named in a path, possibly under another: `/builders/linux/
/// builds/3` is build `3` under builder `linux`. Resolved to a key by
/// [`resolve`].
pub(crate) struct ItemRef<'a> {
    pub(crate) res: &'static Resource,
    pub(crate) seg: &'a str,
    pub(crate) parent: Option<Box<ItemRef<'a>>>,
}

/// A decimal id as written in a path or query: digits only (no sign, no
/// spaces), fitting an i64.
pub(crate) fn parse_id(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn lookup(conn: &Conn, sql: &str, params: &[Param]) -> Result<Option<i64>, ApiError> {
    let mut stmt = conn.raw.prepare_cached(sql)?;
    Ok(stmt
        .query_row(params_from_iter(params.iter()), |r| r.get(0))
        .optional()?)
}

/// The key of the row an [`ItemRef`] names, or None when there is none.
pub(crate) fn resolve(conn: &Conn, item: &ItemRef) -> Result<Option<i64>, ApiError> {
    let res = item.res;
    let Some(p) = &item.parent else {
        if let Some(id) = parse_id(item.seg) {
            let sql = format!(
                "SELECT {k} FROM {f} WHERE {k} = ?1",
                k = res.key,
                f = res.from
            );
            let found = lookup(conn, &sql, &[Param::Int(id)])?;
            // A builder may be named "42"; the id wins, as Buildbot's n: pattern.
            if found.is_some() || res.name_col.is_none() {
                return Ok(found);
            }
        }
        let Some(col) = res.name_col else {
            return Err(bad(format!("invalid id '{}' for {}", item.seg, res.plural)));
        };
        let sql = format!("SELECT {} FROM {} WHERE {col} = ?1", res.key, res.from);
        return lookup(conn, &sql, &[Param::Text(item.seg.to_string())]);
    };
    let Some(pid) = resolve(conn, p)? else {
        return Ok(None);
    };
    let link = res
        .parent_link(p.res.plural)
        .ok_or_else(|| ApiError::NotFound(format!("no {} under {}", res.plural, p.res.plural)))?;
    let (col, value) = match (link.number, parse_id(item.seg), link.name) {
        (Some(col), Some(n), _) => (col, Param::Int(n)),
        (_, _, Some(col)) => (col, Param::Text(item.seg.to_string())),
        _ => {
            return Err(bad(format!(
                "invalid number '{}' for {}",
                item.seg, res.plural
            )))
        }
    };
    // Step names are not unique within a build; the first one wins.
    let sql = format!(
        "SELECT {k} FROM {f} WHERE {fk} = ?1 AND {col} = ?2 ORDER BY {k} LIMIT 1",
        k = res.key,
        f = res.from,
        fk = link.fk
    );
    lookup(conn, &sql, &[Param::Int(pid), value])
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Contains,
    In,
    NotIn,
}

impl Op {
    pub(crate) fn allowed_on(self, ty: Ty) -> bool {
        match ty {
            Int => !matches!(self, Op::Contains),
            Str => true,
            Bool => matches!(self, Op::Eq | Op::Ne),
            StrList => matches!(self, Op::Contains),
            Json | Props { .. } => false,
        }
    }

    /// Comparisons take one value; the others accept several (Buildbot's
    /// plural operators: several values for `eq` mean IN).
    pub(crate) fn single_valued(self) -> bool {
        matches!(self, Op::Lt | Op::Le | Op::Gt | Op::Ge)
    }
}

pub(crate) struct Filter {
    pub(crate) field: &'static Field,
    pub(crate) op: Op,
    pub(crate) values: Vec<Param>,
}

#[derive(Default)]
pub(crate) struct Spec {
    pub(crate) filters: Vec<Filter>,
    pub(crate) order: Vec<(&'static Field, bool)>,
    pub(crate) limit: Option<i64>,
    pub(crate) offset: Option<i64>,
    /// `?field=`: only these keys in each item.
    pub(crate) fields: Option<Vec<&'static str>>,
    /// `?property=`: which properties to show (`*` for all).
    pub(crate) properties: Option<Vec<String>>,
}

fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// Appends the WHERE clause of one filter; its values go to `params`.
fn filter_sql(f: &Filter, params: &mut Vec<Param>) -> String {
    let e = f.field.sql;
    let n = f.values.len();
    params.extend(f.values.iter().cloned());
    match f.op {
        Op::Eq | Op::In if n == 1 => format!("{e} = ?"),
        Op::Eq | Op::In => format!("{e} IN ({})", placeholders(n)),
        Op::Ne | Op::NotIn if n == 1 => format!("{e} <> ?"),
        Op::Ne | Op::NotIn => format!("{e} NOT IN ({})", placeholders(n)),
        Op::Lt => format!("{e} < ?"),
        Op::Le => format!("{e} <= ?"),
        Op::Gt => format!("{e} > ?"),
        Op::Ge => format!("{e} >= ?"),
        Op::Contains => {
            let one = if f.field.ty == StrList {
                // Element membership; a corrupt list matches nothing rather
                // than failing the query.
                format!(
                    "EXISTS (SELECT 1 FROM json_each(CASE WHEN json_valid({e}) THEN {e} \
                     ELSE '[]' END) WHERE value = ?)"
                )
            } else {
                // Case-sensitive substring, as Buildbot's Python `in`; instr
                // has no LIKE wildcards to escape.
                format!("instr({e}, ?) > 0")
            };
            format!("({})", vec![one; n].join(" OR "))
        }
    }
}

/// Runs the query a resource description and a result spec make. Returns
/// the rendered items and `meta.total` (rows matching, ignoring paging).
fn select(
    conn: &Conn,
    res: &Resource,
    conds: &[(&'static str, i64)],
    spec: &Spec,
    paginate: bool,
) -> Result<(Vec<Value>, i64), ApiError> {
    let mut params = Vec::new();
    let mut clauses = Vec::new();
    for (expr, v) in conds {
        clauses.push(format!("{expr} = ?"));
        params.push(Param::Int(*v));
    }
    for f in &spec.filters {
        clauses.push(filter_sql(f, &mut params));
    }
    let where_sql = if clauses.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", clauses.join(" AND "))
    };
    // A field `?field=` leaves out is not rendered (`render_row`), so it is
    // not computed either: its column is NULL (the request page's poll asks
    // for `buildid` alone, and the chain fields are subqueries).
    let wanted = |f: &Field| {
        spec.fields
            .as_ref()
            .is_none_or(|only| only.contains(&f.name))
    };
    let chains = if res
        .fields
        .iter()
        .any(|f| f.without_chains.is_some() && wanted(f))
    {
        any_chains(conn)?
    } else {
        true
    };
    let mut cols: Vec<&str> = res
        .fields
        .iter()
        .map(|f| match (f.ty, f.without_chains) {
            _ if !wanted(f) => "NULL",
            // Not asked for: don't fetch (and for buildrequests, don't run
            // the subquery).
            (Props { .. }, _) if spec.properties.is_none() => "NULL",
            (_, Some(empty)) if !chains => empty,
            _ => f.sql,
        })
        .collect();
    // Last: the row's key, which an error about its stored JSON names.
    cols.push(res.key);
    let mut order: Vec<String> = spec
        .order
        .iter()
        .map(|(f, desc)| format!("{} {}", f.sql, if *desc { "DESC" } else { "ASC" }))
        .collect();
    // Stable pages: ties always broken the same way.
    order.push(format!("{} ASC", res.key));
    let (limit, offset) = if paginate {
        (
            spec.limit.unwrap_or(MAX_LIMIT).min(MAX_LIMIT),
            spec.offset.unwrap_or(0),
        )
    } else {
        (MAX_LIMIT, 0)
    };
    let sql = format!(
        "SELECT {} FROM {}{where_sql} ORDER BY {} LIMIT ? OFFSET ?",
        cols.join(", "),
        res.from,
        order.join(", ")
    );
    let mut items = Vec::new();
    {
        let mut stmt = conn.raw.prepare_cached(&sql)?;
        let mut rows = stmt.query(params_from_iter(
            params
                .iter()
                .chain([Param::Int(limit), Param::Int(offset)].iter()),
        ))?;
        while let Some(row) = rows.next()? {
            items.push(render_row(res, row, spec)?);
        }
    }
    let n = items.len() as i64;
    let total = if !paginate || (offset == 0 && n < limit) {
        // Everything matching is here; no need to count.
        n
    } else {
        let sql = format!("SELECT count(*) FROM {}{where_sql}", res.from);
        let mut stmt = conn.raw.prepare_cached(&sql)?;
        stmt.query_row(params_from_iter(params.iter()), |r| r.get(0))?
    };
    Ok((items, total))
}

fn render_row(res: &Resource, row: &Row, spec: &Spec) -> Result<Value, ApiError> {
    let mut obj = Map::new();
    for (i, f) in res.fields.iter().enumerate() {
        if let Some(only) = &spec.fields {
            if !only.contains(&f.name) {
                continue;
            }
        }
        let v = render_value(f.ty, row.get_ref(i)?, spec).map_err(|e| {
            let id: i64 = row.get(res.fields.len()).unwrap_or_default();
            let column = f.sql.rsplit('.').next().unwrap_or(f.sql);
            ApiError::Internal(format!(
                "corrupt JSON in {} {id}, column {column}: {e}",
                res.plural
            ))
        })?;
        obj.insert(f.name.to_string(), v);
    }
    Ok(Value::Object(obj))
}

/// A column's value in the API's shape. Stored JSON that does not parse
/// (or properties that are not an object) is an error, which the caller
/// names with the row: never shown as a default.
fn render_value(ty: Ty, v: ValueRef, spec: &Spec) -> Result<Value, serde_json::Error> {
    let text = |t: &[u8]| String::from_utf8_lossy(t).into_owned();
    Ok(match (ty, v) {
        (Props { null_default }, ValueRef::Null) => {
            if null_default {
                Value::Null
            } else {
                json!({})
            }
        }
        (Props { .. }, ValueRef::Text(t)) => {
            let mut props: Map<String, Value> = serde_json::from_slice(t)?;
            let wanted = spec.properties.as_deref().unwrap_or(&[]);
            if !wanted.iter().any(|w| w == "*") {
                props.retain(|k, _| wanted.iter().any(|w| w == k));
            }
            Value::Object(props)
        }
        (_, ValueRef::Null) => Value::Null,
        (Bool, ValueRef::Integer(i)) => Value::Bool(i != 0),
        (_, ValueRef::Integer(i)) => Value::from(i),
        (_, ValueRef::Real(r)) => Value::from(r),
        // The common empty list (a build without a chain) without a parse.
        (Json | StrList, ValueRef::Text(b"[]")) => Value::Array(vec![]),
        (Json | StrList, ValueRef::Text(t)) => serde_json::from_slice(t)?,
        (_, ValueRef::Text(t)) | (_, ValueRef::Blob(t)) => Value::String(text(t)),
    })
}

/// The log's build (for its file path) and line count.
pub(crate) fn log_info(conn: &Conn, logid: LogId) -> Result<Option<(BuildId, i64)>, ApiError> {
    let mut stmt = conn.raw.prepare_cached(
        "SELECT s.buildid, l.num_lines FROM logs l JOIN steps s ON s.stepid = l.stepid \
         WHERE l.logid = ?1",
    )?;
    Ok(stmt
        .query_row([logid], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}
