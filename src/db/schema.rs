//! The schema and its migrations, and opening the database file: the
//! settings every connection gets, the writer's WAL setup, read-only
//! readers, and the schema-version check that keeps a binary off a file
//! of another version.

use super::{Conn, Tx};
use anyhow::{bail, Context, Result};
use rusqlite::{Connection, OpenFlags};
use std::path::Path;

/// The schema version this binary reads and writes. `upgrade-master`
/// migrates older files; the master refuses to start on any other version.
/// One per migration, so that a merge adding one cannot forget it.
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Migration `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE masters (
    masterid INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 0,
    last_active INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE builders (
    builderid INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT,
    tags TEXT NOT NULL DEFAULT '[]',
    -- 1 while the builder is in the loaded config; old builders keep their history.
    configured INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE workers (
    workerid INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    info TEXT NOT NULL DEFAULT '{}',
    paused INTEGER NOT NULL DEFAULT 0,
    graceful INTEGER NOT NULL DEFAULT 0,
    connected INTEGER NOT NULL DEFAULT 0,
    configured INTEGER NOT NULL DEFAULT 1,
    last_connection INTEGER
);
-- Which workers the loaded config lets each builder use (the API's
-- configured_on); rewritten at every (re)config.
CREATE TABLE configured_workers (
    builderid INTEGER NOT NULL REFERENCES builders(builderid),
    workerid INTEGER NOT NULL REFERENCES workers(workerid),
    PRIMARY KEY (builderid, workerid)
);
CREATE TABLE changes (
    changeid INTEGER PRIMARY KEY,
    author TEXT NOT NULL,
    committer TEXT,
    comments TEXT NOT NULL,
    branch TEXT,
    revision TEXT,
    repository TEXT NOT NULL,
    project TEXT NOT NULL,
    category TEXT,
    codebase TEXT NOT NULL DEFAULT '',
    revlink TEXT,
    when_timestamp INTEGER NOT NULL,
    files TEXT NOT NULL DEFAULT '[]',
    -- JSON in the API's shape: {"name": [value, "source"]}, as for builds.
    properties TEXT NOT NULL DEFAULT '{}',
    -- Id of the hook delivery that brought it (Gitea's X-Gitea-Delivery).
    delivery TEXT,
    -- 0 until the scheduler thread has classified it; a change committed
    -- just before a crash is picked up again at start.
    scheduled INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX changes_unscheduled ON changes(scheduled) WHERE scheduled = 0;
CREATE INDEX changes_delivery ON changes(delivery) WHERE delivery IS NOT NULL;
-- Changes a scheduler holds while its tree_stable_timer runs.
CREATE TABLE scheduler_changes (
    scheduler TEXT NOT NULL,
    changeid INTEGER NOT NULL REFERENCES changes(changeid),
    PRIMARY KEY (scheduler, changeid)
);
CREATE TABLE buildsets (
    buildsetid INTEGER PRIMARY KEY,
    reason TEXT NOT NULL,
    scheduler TEXT,
    submitted_at INTEGER NOT NULL,
    complete INTEGER NOT NULL DEFAULT 0,
    complete_at INTEGER,
    results INTEGER,
    -- the source stamp, inline: what to build
    branch TEXT,
    revision TEXT,
    repository TEXT NOT NULL DEFAULT '',
    project TEXT NOT NULL DEFAULT '',
    codebase TEXT NOT NULL DEFAULT '',
    properties TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE buildset_changes (
    buildsetid INTEGER NOT NULL REFERENCES buildsets(buildsetid),
    changeid INTEGER NOT NULL REFERENCES changes(changeid),
    PRIMARY KEY (buildsetid, changeid)
);
CREATE TABLE buildrequests (
    buildrequestid INTEGER PRIMARY KEY,
    buildsetid INTEGER NOT NULL REFERENCES buildsets(buildsetid),
    builderid INTEGER NOT NULL REFERENCES builders(builderid),
    priority INTEGER NOT NULL DEFAULT 0,
    claimed_at INTEGER,
    complete INTEGER NOT NULL DEFAULT 0,
    results INTEGER,
    submitted_at INTEGER NOT NULL,
    complete_at INTEGER,
    waited_for INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX buildrequests_pending ON buildrequests(builderid, priority, buildrequestid) WHERE complete = 0;
CREATE TABLE builds (
    buildid INTEGER PRIMARY KEY,
    number INTEGER NOT NULL,
    builderid INTEGER NOT NULL REFERENCES builders(builderid),
    buildrequestid INTEGER NOT NULL REFERENCES buildrequests(buildrequestid),
    workerid INTEGER REFERENCES workers(workerid),
    masterid INTEGER NOT NULL DEFAULT 1,
    started_at INTEGER NOT NULL,
    complete_at INTEGER,
    state_string TEXT NOT NULL DEFAULT '',
    results INTEGER,
    -- JSON in the API's shape: {"name": [value, "source"]}.
    properties TEXT NOT NULL DEFAULT '{}',
    UNIQUE (builderid, number)
);
CREATE INDEX builds_incomplete ON builds(buildid) WHERE complete_at IS NULL;
CREATE INDEX builds_request ON builds(buildrequestid);
CREATE TABLE steps (
    stepid INTEGER PRIMARY KEY,
    buildid INTEGER NOT NULL REFERENCES builds(buildid),
    number INTEGER NOT NULL,
    name TEXT NOT NULL,
    started_at INTEGER,
    complete_at INTEGER,
    state_string TEXT NOT NULL DEFAULT '',
    results INTEGER,
    hidden INTEGER NOT NULL DEFAULT 0,
    urls TEXT NOT NULL DEFAULT '[]',
    UNIQUE (buildid, number)
);
-- Log text lives in files under the master dir (see `log_path`), one line
-- per output line, each prefixed by its stream: 'o' stdout, 'e' stderr,
-- 'h' header (Buildbot's stream-log format, type 's'); this table holds only
-- what the API lists. num_lines and size are updated as the log grows.
CREATE TABLE logs (
    logid INTEGER PRIMARY KEY,
    stepid INTEGER NOT NULL REFERENCES steps(stepid),
    name TEXT NOT NULL,
    slug TEXT NOT NULL,
    complete INTEGER NOT NULL DEFAULT 0,
    num_lines INTEGER NOT NULL DEFAULT 0,
    type TEXT NOT NULL DEFAULT 's',
    size INTEGER NOT NULL DEFAULT 0,
    UNIQUE (stepid, slug)
);
"#,
    // 2: git poller state, scheduler state, collapsed requests.
    r#"
-- The last revision a git poller (change_source) saw on each branch: the
-- next poll's changes are the commits after it, so a restart neither
-- misses nor repeats any. Written in the transaction that stores them.
CREATE TABLE poller_state (
    poller TEXT NOT NULL,
    branch TEXT NOT NULL,
    revision TEXT NOT NULL,
    PRIMARY KEY (poller, branch)
);
-- Small named values a scheduler keeps across restarts (periodic and
-- nightly: last_fire, the Unix time of the last build they started).
CREATE TABLE scheduler_state (
    scheduler TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (scheduler, name)
);
-- A request collapsed into a newer one (results SKIPPED): the build that
-- covered it.
ALTER TABLE buildrequests ADD COLUMN collapsed_into INTEGER REFERENCES builds(buildid);
"#,
    // 3: web UI users and their login sessions.
    r#"
CREATE TABLE users (
    userid INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    -- A PHC string (argon2id with its salt and parameters); never the password.
    password_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE sessions (
    -- SHA-256 of the cookie value: a copy of the database holds no usable cookie.
    token_hash TEXT PRIMARY KEY,
    userid INTEGER NOT NULL REFERENCES users(userid) ON DELETE CASCADE,
    -- The CSRF token forms of this session must carry.
    csrf TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX sessions_user ON sessions(userid);
"#,
    // 4: indexes for the foreign keys the janitor deletes through; without
    // them every deleted buildset or change scans a whole table.
    r#"
CREATE INDEX buildrequests_buildset ON buildrequests(buildsetid);
CREATE INDEX buildset_changes_change ON buildset_changes(changeid);
CREATE INDEX scheduler_changes_change ON scheduler_changes(changeid);
"#,
    // 5: what each reporter settled for each finished build, so that a
    // dropped event or a restart costs latency, never a missing status
    // (the reporters' sweep, `master::reporters`).
    r#"
-- One row per (reporter, build, kind) once the final delivery is settled:
-- kind 'status' (Gitea's final commit status) or 'mail'; outcome 'sent',
-- 'failed' (refused for good), 'none' (nothing to send) or 'superseded'
-- (a newer status for the same commit and context replaced it). No
-- foreign key: the janitor prunes builds; the sweep prunes these rows.
CREATE TABLE reporter_deliveries (
    reporter TEXT NOT NULL,
    buildid INTEGER NOT NULL,
    kind TEXT NOT NULL,
    outcome TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (reporter, buildid, kind)
) WITHOUT ROWID;
CREATE INDEX reporter_deliveries_at ON reporter_deliveries(at);
-- When each reporter was first configured, and the newest build then: the
-- sweep never reports that build or older ones (no flood of old statuses
-- after an upgrade).
CREATE TABLE reporter_state (
    reporter TEXT PRIMARY KEY,
    since INTEGER NOT NULL,
    after_build INTEGER NOT NULL
);
-- The sweep reads builds by completion time.
CREATE INDEX builds_complete_at ON builds(complete_at) WHERE complete_at IS NOT NULL;
"#,
    // 6: the foreign key from a skipped request to the build that covered
    // it: without an index every build the janitor deletes scans the
    // requests (SQLite checks the key), and so does clearing the link.
    r#"
CREATE INDEX buildrequests_collapsed ON buildrequests(collapsed_into);
"#,
    // 7: who asked for a buildset, and the steps a build was to run, for
    // the queue and build pages (issue 17). Older rows keep NULL: their
    // pages say what the other columns tell (scheduler, changes, reason).
    r#"
-- The logged-in user who forced or rebuilt it (NULL: a scheduler did,
-- from changes or a timer).
ALTER TABLE buildsets ADD COLUMN requested_by TEXT;
-- For a rebuild, the build it repeats. No foreign key: the janitor prunes
-- builds, and the rebuild's history outlives them.
ALTER TABLE buildsets ADD COLUMN rebuild_of INTEGER;
-- The names of the builder's steps when the build was claimed (a JSON
-- array, index = step number), so a step never run (skipped after a
-- failure) is listed as such whatever a later reconfig says.
ALTER TABLE builds ADD COLUMN planned_steps TEXT;
"#,
    // 8: the locks running builds hold (issue 20 point 4, `db::locks`).
    r#"
-- One row per lock a build holds: for the whole build (step NULL) or for
-- one of its steps. A row counts only while its build runs. No foreign
-- key: the janitor prunes builds, and a build's rows go with its end.
CREATE TABLE build_locks (
    buildid INTEGER NOT NULL,
    name TEXT NOT NULL,
    -- The worker of a worker lock; '' for a master lock.
    worker TEXT NOT NULL,
    exclusive INTEGER NOT NULL,
    step INTEGER,
    PRIMARY KEY (buildid, name)
) WITHOUT ROWID;
"#,
    // 9: chained builds (issue 20 point 3): what `trigger` steps started
    // and what `dependent` schedulers fired for (`db::chain`).
    r#"
-- The buildsets a build's `trigger` step (its number) made or waits for,
-- written in the transaction that creates them, before the step waits:
-- a build retried after a master restart finds its request's earlier rows
-- and waits for those buildsets again rather than trigger new ones. No
-- foreign keys: the janitor prunes builds and buildsets, and these rows
-- with them.
CREATE TABLE build_triggers (
    buildid INTEGER NOT NULL,
    step INTEGER NOT NULL,
    buildsetid INTEGER NOT NULL,
    PRIMARY KEY (buildid, step, buildsetid)
) WITHOUT ROWID;
CREATE INDEX build_triggers_buildset ON build_triggers(buildsetid);
-- A dependent scheduler's buildset: the upstream buildset whose success
-- started it (so it is started once). No foreign key, as rebuild_of.
ALTER TABLE buildsets ADD COLUMN upstream_buildsetid INTEGER;
CREATE INDEX buildsets_upstream ON buildsets(upstream_buildsetid)
    WHERE upstream_buildsetid IS NOT NULL;
"#,
    // 10: artifacts (issue 20): the files `upload` steps sent, stored as
    // `artifacts/<buildid>/<name>` under the master directory. A row is
    // written once its file is complete and its checksum checked; the
    // janitor deletes rows with their build or past artifact_horizon_days.
    r#"
CREATE TABLE artifacts (
    artifactid INTEGER PRIMARY KEY,
    buildid INTEGER NOT NULL REFERENCES builds(buildid),
    -- The step that uploaded it (no foreign key: its number is enough to
    -- show, and steps go with the build anyway).
    stepnumber INTEGER NOT NULL,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (buildid, name)
);
"#,
    // 11: "Log in with Gitea" (issue 19 point 7). A Gitea user is a `users`
    // row named `gitea:<login>` (a name `minibot user add` refuses) with
    // an empty password hash, which no password matches.
    r#"
-- For a Gitea login's session: its Gitea login, organisations and teams
-- as Gitea listed them at login (JSON), so its role is worked out again
-- from the loaded config at every request. NULL: a password login.
ALTER TABLE sessions ADD COLUMN gitea TEXT;
"#,
    // 12: how long a build waited for its steps' locks (Buildbot's
    // `locks_duration_s` in the API).
    r#"
-- Milliseconds the build's steps waited for their locks, summed.
ALTER TABLE builds ADD COLUMN lock_wait_ms INTEGER NOT NULL DEFAULT 0;
"#,
];

/// Settings every connection gets.
fn tune(conn: &Connection) -> Result<()> {
    // A reader may meet the writer's checkpoint; wait rather than fail.
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // SQLite's default page cache is 2 MB per connection, and the master
    // holds about ten; the working set (recent builds, the queue) is small
    // and the OS caches the file anyway, so 256 KiB each keeps RSS flat as
    // history grows (docs/performance.md).
    conn.pragma_update(None, "cache_size", -256)?;
    // The query planner stability guarantee: a statement keeps the plan it
    // was prepared with, whatever is bound to it. Without it SQLite (3.47
    // and later) marks `LIMIT ?` and parameters compared with a partial
    // index's WHERE as "re-prepare on bind", so every page and API list
    // was parsed and planned again on every request although its statement
    // was cached (the home page took twice as long, docs/performance.md).
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )
    .context("enabling SQLITE_DBCONFIG_ENABLE_QPSG")?;
    Ok(())
}

/// Opens (creating if asked) the database for writing and sets WAL mode.
fn open_rw(path: &Path, create: bool) -> Result<Connection> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags)
        .with_context(|| format!("cannot open database {}", path.display()))?;
    tune(&conn)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if mode.to_lowercase() != "wal" {
        bail!(
            "{}: could not switch to WAL mode (got {mode})",
            path.display()
        );
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

pub(super) fn schema_version(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
}

/// Creates a new database at the current schema (create-master). The file
/// is made 0600: it holds change data and, later, user password hashes.
pub fn create(path: &Path) -> Result<()> {
    let conn = open_rw(path, true)?;
    migrate(&conn)?;
    drop(conn);
    set_private(path)
}

/// Restricts a file to its owner.
pub fn set_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot chmod 0600 {}", path.display()))
}

/// Brings the schema to `SCHEMA_VERSION`; returns (from, to).
pub(super) fn migrate(conn: &Connection) -> Result<(i64, i64)> {
    let from = schema_version(conn)?;
    if from > SCHEMA_VERSION {
        bail!("database schema version {from} is newer than this minibot ({SCHEMA_VERSION}); upgrade minibot");
    }
    for v in from..SCHEMA_VERSION {
        let sql = MIGRATIONS[v as usize];
        conn.execute_batch(&format!(
            "BEGIN; {sql}; PRAGMA user_version = {}; COMMIT;",
            v + 1
        ))
        .with_context(|| format!("migrating schema from version {v} to {}", v + 1))?;
    }
    Ok((from, SCHEMA_VERSION))
}

/// `minibot upgrade-master`: migrate the file at `path`.
pub fn upgrade(path: &Path) -> Result<(i64, i64)> {
    if !path.exists() {
        bail!(
            "{} does not exist; is this a master directory?",
            path.display()
        );
    }
    let conn = open_rw(path, false)?;
    migrate(&conn)
}

/// A read-write connection for an admin command (`minibot user ...`) that
/// runs beside a live master: SQLite's locking (and the busy timeout) keeps
/// it from colliding with the master's writer thread. Refuses a database at
/// another schema version, as `Store::open` does.
pub fn open_admin(path: &Path) -> Result<Tx> {
    let raw = open_current(path, "is this a master directory?")?;
    Ok(Tx { conn: Conn { raw } })
}

/// Opens an existing database read-write and checks it is at this
/// binary's schema version; `missing` says what to do when there is none.
pub(super) fn open_current(path: &Path, missing: &str) -> Result<Connection> {
    if !path.exists() {
        bail!("{} does not exist; {missing}", path.display());
    }
    // A file that is not a database at all (its header garbled) fails
    // here already: say so, and what to do, as the full check would.
    let opened = open_rw(path, false).and_then(|c| Ok((schema_version(&c)?, c)));
    let (v, conn) = match opened {
        Ok(x) => x,
        Err(e) if super::integrity::is_corruption(&e) => {
            return Err(super::integrity::corrupt(path, &format!("{e:#}")))
        }
        Err(e) => return Err(e),
    };
    if v != SCHEMA_VERSION {
        bail!(
            "{} has schema version {v} but this minibot needs {SCHEMA_VERSION}; run `minibot upgrade-master {}`",
            path.display(),
            path.parent().map(|p| p.display().to_string()).unwrap_or_default()
        );
    }
    Ok(conn)
}

/// A read-only connection for one reader thread (scheduler, botmaster, a
/// live page): [`Store::reader`] lends pooled ones to the others.
pub(crate) fn open_read_only(path: &Path) -> Result<Conn> {
    Ok(Conn {
        raw: open_reader(path)?,
    })
}

/// A raw read-only SQLite connection, tuned as the master's readers are.
pub(super) fn open_reader(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open database {} for reading", path.display()))?;
    tune(&conn)?;
    Ok(conn)
}
