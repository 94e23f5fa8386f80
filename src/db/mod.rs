//! The SQLite database: schema, migrations, and the single writer thread.
//!
//! Owns: `state.sqlite` (WAL mode). All writes go through one thread that
//! receives jobs on a crossbeam channel (`Store::write`), runs every job that
//! is waiting in ONE transaction (group commit), and only after COMMIT sends
//! each job its result. That is what lets a hook answer 200 only once its
//! change is durable, while a burst of hooks costs one fsync-free commit
//! rather than one per hook. Readers use read-only connections, their own
//! (`open_reader`: scheduler, botmaster, live pages) or lent from a pool
//! shared by every `Store` clone (`Store::reader`: HTTP requests,
//! reporters, poller, janitor), opened on first need; WAL lets them read
//! while the writer writes. `Store::release_memory` empties the writer's
//! and the idle readers' page caches when the master has gone quiet.
//!
//! Durability: `synchronous = NORMAL` in WAL mode keeps every committed
//! transaction across a crash of the process (kill -9); only a power loss
//! can drop the last commits. That is the failure model we promise (SPEC §6).

use anyhow::{anyhow, bail, Context, Result};
use crossbeam_channel::{unbounded, Receiver, Sender};
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;

/// The schema version this binary reads and writes. `upgrade-master`
/// migrates older files; the master refuses to start on any other version.
pub const SCHEMA_VERSION: i64 = 4;

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
];

/// The directory of the log files, under the master directory.
pub fn log_root(master_dir: &Path) -> PathBuf {
    master_dir.join("logs")
}

/// Where a new log's text is written: `logs/<buildid>-<logid>.log`. One
/// directory for all builds: a directory per build cost an inode
/// allocation (`mkdir`) per build, a large part of the master's CPU per
/// build on ext4 (docs/performance.md).
pub fn new_log_path(master_dir: &Path, buildid: i64, logid: i64) -> PathBuf {
    log_root(master_dir).join(format!("{buildid}-{logid}.log"))
}

/// Where the text of an existing log is: `new_log_path`, or for a log
/// written by an older minibot (a directory per build) its
/// `logs/<buildid>/<logid>.log`, when only that file exists.
pub fn log_path(master_dir: &Path, buildid: i64, logid: i64) -> PathBuf {
    let path = new_log_path(master_dir, buildid, logid);
    if path.exists() {
        return path;
    }
    let old = legacy_log_dir(master_dir, buildid).join(format!("{logid}.log"));
    if old.exists() {
        old
    } else {
        path
    }
}

/// The per-build log directory older minibots wrote.
pub fn legacy_log_dir(master_dir: &Path, buildid: i64) -> PathBuf {
    log_root(master_dir).join(buildid.to_string())
}

/// The build a name in `log_root` belongs to: `<buildid>-<logid>.log`, or
/// an older minibot's `<buildid>` directory.
pub fn log_entry_build(name: &str) -> Option<i64> {
    let Some(stem) = name.strip_suffix(".log") else {
        return name.parse().ok();
    };
    let (build, log) = stem.split_once('-')?;
    log.parse::<i64>().ok()?;
    build.parse().ok()
}

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

pub fn schema_version(conn: &Connection) -> Result<i64> {
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
pub fn migrate(conn: &Connection) -> Result<(i64, i64)> {
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
pub fn open_admin(path: &Path) -> Result<Connection> {
    open_current(path, "is this a master directory?")
}

/// Opens an existing database read-write and checks it is at this
/// binary's schema version; `missing` says what to do when there is none.
fn open_current(path: &Path, missing: &str) -> Result<Connection> {
    if !path.exists() {
        bail!("{} does not exist; {missing}", path.display());
    }
    let conn = open_rw(path, false)?;
    let v = schema_version(&conn)?;
    if v != SCHEMA_VERSION {
        bail!(
            "{} has schema version {v} but this minibot needs {SCHEMA_VERSION}; run `minibot upgrade-master {}`",
            path.display(),
            path.parent().map(|p| p.display().to_string()).unwrap_or_default()
        );
    }
    Ok(conn)
}

/// A read-only connection for one reader thread.
pub fn open_reader(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open database {} for reading", path.display()))?;
    tune(&conn)?;
    Ok(conn)
}

/// Work for the writer thread: runs inside the group transaction and returns
/// the completion to call once the transaction's fate is known.
type Job = Box<dyn FnOnce(&Connection) -> Completion + Send>;
type Completion = Box<dyn FnOnce(Result<(), String>) + Send>;

/// Handle to the writer thread and the shared reader connections; cheap to
/// clone.
#[derive(Clone)]
pub struct Store {
    tx: Sender<Job>,
    path: PathBuf,
    idle: Arc<Mutex<Vec<Connection>>>,
}

/// Idle reader connections kept for reuse; a reader returned beyond this is
/// closed. As many as the HTTP threads: more than that rarely read at once.
const MAX_IDLE_READERS: usize = 4;

/// A read-only connection lent by [`Store::reader`]; back to the pool on
/// drop.
pub struct Reader {
    conn: Option<Connection>,
    idle: Arc<Mutex<Vec<Connection>>>,
}

impl std::ops::Deref for Reader {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
            .as_ref()
            .expect("a Reader's connection is taken only by drop")
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            give_back(&self.idle, c);
        }
    }
}

/// Returns a reader connection to the pool, or closes it if the pool is full.
fn give_back(idle: &Mutex<Vec<Connection>>, conn: Connection) {
    let mut idle = idle.lock().unwrap_or_else(|p| p.into_inner());
    if idle.len() < MAX_IDLE_READERS {
        idle.push(conn);
    }
}

/// Frees the memory SQLite holds for `conn` that it can read again from
/// the file (the page cache, up to `cache_size` in `tune`):
/// `sqlite3_db_release_memory`. The next queries fill it again.
pub fn shrink(conn: &Connection) -> Result<()> {
    conn.execute_batch("PRAGMA shrink_memory")
        .context("PRAGMA shrink_memory")
}

impl Store {
    /// Opens the database, checks its schema and starts the writer thread.
    pub fn open(path: &Path) -> Result<Store> {
        let conn = open_current(path, "run `minibot create-master` first")?;
        let (tx, rx) = unbounded::<Job>();
        thread::Builder::new()
            .name("store".into())
            .stack_size(256 * 1024)
            .spawn(move || writer_loop(conn, rx))
            .context("spawning store thread")?;
        Ok(Store {
            tx,
            path: path.to_path_buf(),
            idle: Arc::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A read-only connection for the threads that read now and then
    /// (HTTP requests, reporters, poller, janitor): an idle one if there
    /// is one, else a new one. So the master holds as many as reads ran at
    /// once (one, when they come one at a time), not one per thread from
    /// the start; each costs its schema, lookaside and page cache in RSS,
    /// and opening it reads the schema.
    pub fn reader(&self) -> Result<Reader> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match idle {
            Some(c) => c,
            None => open_reader(&self.path)?,
        };
        Ok(Reader {
            conn: Some(conn),
            idle: self.idle.clone(),
        })
    }

    /// Gives back what SQLite holds beyond the idle master's needs: the
    /// writer's page cache (it is never emptied otherwise: only other
    /// connections' commits reset a cache), and the idle pooled readers'.
    /// One idle reader is kept, shrunk, so that the next request need not
    /// read the schema again; the others, left from reads that overlapped,
    /// are closed. For when the master has gone quiet (the botmaster calls
    /// it): the writer's part is one small job on the store thread.
    pub fn release_memory(&self) -> Result<()> {
        let mut idle =
            std::mem::take(&mut *self.idle.lock().unwrap_or_else(|p| p.into_inner())).into_iter();
        // Outside the lock: a request meanwhile opens a reader of its own.
        let keep = idle.next();
        drop(idle);
        if let Some(keep) = keep {
            shrink(&keep)?;
            give_back(&self.idle, keep);
        }
        self.write(shrink)
    }

    /// Runs `f` in the writer's transaction and returns its result once the
    /// transaction has committed. If `f` fails, its own writes are rolled
    /// back (savepoint) and the other jobs of the batch still commit.
    pub fn write<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
    {
        let reply = Arc::new(Reply::default());
        let answer = Answer(Some(reply.clone()));
        let job: Job = Box::new(move |conn| {
            let res = run_in_savepoint(conn, f);
            Box::new(move |commit: Result<(), String>| {
                answer.send(match commit {
                    Ok(()) => res,
                    Err(e) => Err(anyhow!("commit failed: {e}")),
                });
            })
        });
        self.tx
            .send(job)
            .map_err(|_| anyhow!("the store thread has stopped"))?;
        reply.wait()
    }
}

/// The result of one `Store::write`, handed from the writer thread to the
/// caller. Not a crossbeam channel: its blocking `recv` spins and calls
/// `sched_yield` several times before it parks, and a caller here always
/// waits for a whole transaction, so that was pure cost (~7 % of the
/// master's CPU in `sched_yield`, docs/performance.md). A condvar sleeps on
/// the futex at once.
struct Reply<R> {
    slot: Mutex<Option<Result<R>>>,
    ready: Condvar,
}

impl<R> Default for Reply<R> {
    fn default() -> Self {
        Reply {
            slot: Mutex::new(None),
            ready: Condvar::new(),
        }
    }
}

impl<R> Reply<R> {
    fn wait(&self) -> Result<R> {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(r) = slot.take() {
                return r;
            }
            slot = self.ready.wait(slot).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// The writer's end of a `Reply`. Dropped unsent (the job was dropped: the
/// store thread stopped or panicked), it still wakes the caller, with an error.
struct Answer<R>(Option<Arc<Reply<R>>>);

impl<R> Answer<R> {
    fn send(mut self, r: Result<R>) {
        self.put(|| r);
    }

    /// Hands the caller its result, once: later calls (the drop after a
    /// send) find the reply gone.
    fn put(&mut self, r: impl FnOnce() -> Result<R>) {
        if let Some(reply) = self.0.take() {
            *reply.slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(r());
            reply.ready.notify_one();
        }
    }
}

impl<R> Drop for Answer<R> {
    fn drop(&mut self) {
        self.put(|| Err(anyhow!("the store thread stopped before answering")));
    }
}

/// Runs one of the fixed transaction-control statements. They are prepared
/// once per connection (`prepare_cached`) instead of parsed again by
/// `execute_batch` several times per transaction.
fn control(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

fn run_in_savepoint<R>(conn: &Connection, f: impl FnOnce(&Connection) -> Result<R>) -> Result<R> {
    control(conn, "SAVEPOINT job")?;
    match f(conn) {
        Ok(r) => {
            control(conn, "RELEASE job")?;
            Ok(r)
        }
        Err(e) => {
            // ROLLBACK TO keeps the savepoint open; RELEASE closes it.
            let _ = control(conn, "ROLLBACK TO job").and_then(|_| control(conn, "RELEASE job"));
            Err(e)
        }
    }
}

/// Most jobs in one transaction; bounds the latency a big burst adds to the
/// first hook in it.
const MAX_BATCH: usize = 256;

/// Prepared statements the writer keeps. rusqlite's default is 16, fewer
/// than the distinct statements of one build's writes (hook, buildset,
/// claim, steps, finish, transaction control), so its LRU cache missed on
/// nearly every statement and SQLite parsed each one again.
const WRITER_STATEMENTS: usize = 128;

fn writer_loop(conn: Connection, rx: Receiver<Job>) {
    conn.set_prepared_statement_cache_capacity(WRITER_STATEMENTS);
    // Exits when every Store handle is dropped (master shutdown).
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let began = control(&conn, "BEGIN IMMEDIATE");
        let completions: Vec<Completion> = batch.into_iter().map(|job| job(&conn)).collect();
        let commit = began
            .and_then(|_| control(&conn, "COMMIT"))
            .map_err(|e| e.to_string());
        if let Err(e) = &commit {
            log::error!("store: transaction failed: {e}");
            let _ = control(&conn, "ROLLBACK");
        }
        for c in completions {
            c(commit.clone());
        }
    }
    log::debug!("store thread exiting");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_migrate_and_group_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        create(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let store = Store::open(&path).unwrap();
        let mut handles = vec![];
        for i in 0..20 {
            let s = store.clone();
            handles.push(std::thread::spawn(move || {
                s.write(move |c| {
                    c.execute("INSERT INTO builders(name) VALUES (?1)", [format!("b{i}")])?;
                    Ok(c.last_insert_rowid())
                })
                .unwrap()
            }));
        }
        for h in handles {
            assert!(h.join().unwrap() > 0);
        }
        // A failing job rolls back only itself.
        let err = store.write(|c| {
            c.execute("INSERT INTO builders(name) VALUES ('x')", [])?;
            bail!("nope");
            #[allow(unreachable_code)]
            Ok(())
        });
        assert!(err.is_err());
        let reader = open_reader(&path).unwrap();
        let n: i64 = reader
            .query_row("SELECT count(*) FROM builders", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 20);
    }

    #[test]
    fn corrupt_stored_json_is_an_error_naming_the_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        create(&path).unwrap();
        let conn = open_admin(&path).unwrap();
        conn.execute(
            "INSERT INTO changes(author, comments, repository, project, when_timestamp, properties)
             VALUES ('a', 'c', 'r', 'p', 0, '{\"branch\": [\"x\", \"Change\"]')",
            [],
        )
        .unwrap();
        let err = unscheduled_changes(&conn).unwrap_err().to_string();
        assert!(
            err.contains("corrupt JSON in changes 1, column properties"),
            "{err}"
        );
    }

    #[test]
    fn release_memory_keeps_one_idle_reader_and_the_store_working() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        create(&path).unwrap();
        let store = Store::open(&path).unwrap();
        store
            .write(|c| Ok(c.execute("INSERT INTO builders(name) VALUES ('b')", [])?))
            .unwrap();
        // Three reads at once leave three idle readers in the pool.
        let readers: Vec<Reader> = (0..3).map(|_| store.reader().unwrap()).collect();
        drop(readers);
        let idle = || store.idle.lock().unwrap().len();
        assert_eq!(idle(), 3);
        store.release_memory().unwrap();
        assert_eq!(idle(), 1);
        // Both sides still work, with caches to fill again.
        store
            .write(|c| Ok(c.execute("INSERT INTO builders(name) VALUES ('c')", [])?))
            .unwrap();
        let n: i64 = store
            .reader()
            .unwrap()
            .query_row("SELECT count(*) FROM builders", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2);
        assert_eq!(idle(), 1);
    }

    #[test]
    fn refuses_old_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        Connection::open(&path).unwrap();
        let err = Store::open(&path).err().unwrap().to_string();
        assert!(err.contains("upgrade-master"), "{err}");
        assert_eq!(upgrade(&path).unwrap(), (0, SCHEMA_VERSION));
        Store::open(&path).unwrap();
    }
}

// ---------------------------------------------------------------------------
// Queries. Write helpers take the writer's `&Connection` and are called from
// inside `Store::write` closures; read helpers take any connection.

use crate::config::Config;
use crate::model::{NewChange, RETRY};
use rusqlite::{params, OptionalExtension};
use std::collections::BTreeMap;

/// Properties in the API's shape: name → (value, source).
pub type Props = BTreeMap<String, (serde_json::Value, String)>;

/// What a buildset builds: Buildbot's source stamp, inline.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceStamp {
    pub branch: Option<String>,
    pub revision: Option<String>,
    pub repository: String,
    pub project: String,
    pub codebase: String,
}

fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).context("encoding JSON for the database")
}

/// Makes the builders and workers tables match the loaded config. Old
/// builders and workers stay (their builds keep their history) but are
/// marked unconfigured.
pub fn sync_config(conn: &Connection, cfg: &Config) -> Result<()> {
    // Runs at every start and reconfig, once logging is up: the place the
    // config's dangerous-but-allowed settings get into master.log.
    for w in cfg.warnings() {
        log::warn!("master.cfg: {w}");
    }
    conn.execute("UPDATE builders SET configured = 0", [])?;
    conn.execute("UPDATE workers SET configured = 0", [])?;
    conn.execute("DELETE FROM configured_workers", [])?;
    for w in &cfg.workers {
        conn.prepare_cached(
            "INSERT INTO workers(name) VALUES (?1)
             ON CONFLICT(name) DO UPDATE SET configured = 1",
        )?
        .execute([&w.name])?;
    }
    for b in &cfg.builders {
        conn.prepare_cached(
            "INSERT INTO builders(name, description, tags) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET configured = 1,
               description = excluded.description, tags = excluded.tags",
        )?
        .execute(params![b.name, b.description, json(&b.tags)?])?;
        for w in &b.workers {
            conn.prepare_cached(
                "INSERT OR IGNORE INTO configured_workers(builderid, workerid)
                 SELECT b.builderid, w.workerid FROM builders b, workers w
                 WHERE b.name = ?1 AND w.name = ?2",
            )?
            .execute([&b.name, w])?;
        }
    }
    Ok(())
}

/// Closes builds of `workerid` (or of every worker when None) that are still
/// running as RETRY and puts their requests back on the queue. Used at start
/// (the previous master died) and when a worker is lost.
pub fn retry_running_builds(conn: &Connection, workerid: Option<i64>) -> Result<Vec<i64>> {
    let now = crate::model::now();
    let ids: Vec<i64> = {
        let mut st = conn.prepare_cached(
            "SELECT buildid FROM builds WHERE complete_at IS NULL
             AND (?1 IS NULL OR workerid = ?1)",
        )?;
        let rows = st.query_map([workerid], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    for id in &ids {
        conn.prepare_cached(
            "UPDATE steps SET complete_at = ?2, results = ?3,
               state_string = state_string || ' (retry)'
             WHERE buildid = ?1 AND complete_at IS NULL",
        )?
        .execute(params![id, now, RETRY])?;
        conn.prepare_cached(
            "UPDATE logs SET complete = 1 WHERE complete = 0
             AND stepid IN (SELECT stepid FROM steps WHERE buildid = ?1)",
        )?
        .execute([id])?;
        conn.prepare_cached(
            "UPDATE builds SET complete_at = ?2, results = ?3, state_string = 'retry: lost worker or master'
             WHERE buildid = ?1",
        )?
        .execute(params![id, now, RETRY])?;
        conn.prepare_cached(
            "UPDATE buildrequests SET claimed_at = NULL
             WHERE buildrequestid = (SELECT buildrequestid FROM builds WHERE buildid = ?1)
               AND complete = 0",
        )?
        .execute([id])?;
    }
    Ok(ids)
}

/// Stores the changes of one hook delivery. A delivery id seen before
/// (Gitea's "redeliver") returns the original ids and stores nothing.
pub fn insert_changes(
    conn: &Connection,
    changes: &[NewChange],
    delivery: Option<&str>,
) -> Result<Vec<i64>> {
    if let Some(d) = delivery {
        let mut st = conn
            .prepare_cached("SELECT changeid FROM changes WHERE delivery = ?1 ORDER BY changeid")?;
        let old: Vec<i64> = st
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
        conn.prepare_cached(
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
        ids.push(conn.last_insert_rowid());
    }
    Ok(ids)
}

/// A stored change, as the scheduler needs it.
#[derive(Debug, Clone)]
pub struct ChangeRow {
    pub changeid: i64,
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

/// A JSON column of a stored row. Corrupt text is an error naming the
/// table, row and column, never a silent default (a rebuild would run with
/// `{}` properties).
fn json_col<T: serde::de::DeserializeOwned>(
    text: &str,
    table: &str,
    id: i64,
    column: &str,
) -> rusqlite::Result<T> {
    serde_json::from_str(text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("corrupt JSON in {table} {id}, column {column}: {e}").into(),
        )
    })
}

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
pub fn unscheduled_changes(conn: &Connection) -> Result<Vec<ChangeRow>> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT {CHANGE_COLS} FROM changes WHERE scheduled = 0 ORDER BY changeid LIMIT 1000"
    ))?;
    let rows = st.query_map([], change_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Changes held by a scheduler's tree-stable timer, oldest first.
pub fn held_changes(conn: &Connection, scheduler: &str) -> Result<Vec<ChangeRow>> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT {CHANGE_COLS} FROM changes WHERE changeid IN
           (SELECT changeid FROM scheduler_changes WHERE scheduler = ?1) ORDER BY changeid"
    ))?;
    let rows = st.query_map([scheduler], change_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Names of schedulers holding changes (to re-arm their timers at start).
pub fn schedulers_holding_changes(conn: &Connection) -> Result<Vec<String>> {
    let mut st = conn.prepare_cached("SELECT DISTINCT scheduler FROM scheduler_changes")?;
    let rows = st.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Creates a buildset with one request per builder; returns
/// (buildsetid, [(builderid, buildrequestid)]). Unknown builders are an error.
pub fn create_buildset(
    conn: &Connection,
    reason: &str,
    scheduler: Option<&str>,
    ss: &SourceStamp,
    props: &Props,
    changeids: &[i64],
    builders: &[String],
) -> Result<(i64, Vec<(i64, i64)>)> {
    let now = crate::model::now();
    conn.prepare_cached(
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
    let bsid = conn.last_insert_rowid();
    for c in changeids {
        conn.prepare_cached("INSERT INTO buildset_changes(buildsetid, changeid) VALUES (?1, ?2)")?
            .execute([bsid, *c])?;
    }
    let mut out = Vec::with_capacity(builders.len());
    for name in builders {
        let builderid: i64 = conn
            .prepare_cached("SELECT builderid FROM builders WHERE name = ?1")?
            .query_row([name], |r| r.get(0))
            .optional()?
            .ok_or_else(|| anyhow!("no builder named {name:?}"))?;
        conn.prepare_cached(
            "INSERT INTO buildrequests(buildsetid, builderid, submitted_at) VALUES (?1, ?2, ?3)",
        )?
        .execute([bsid, builderid, now])?;
        out.push((builderid, conn.last_insert_rowid()));
    }
    Ok((bsid, out))
}

/// A queued build request with what a build needs to start.
#[derive(Debug, Clone)]
pub struct PendingRequest {
    pub buildrequestid: i64,
    pub builderid: i64,
    pub builder: String,
    pub buildsetid: i64,
    pub reason: String,
    pub scheduler: Option<String>,
    pub ss: SourceStamp,
    pub properties: Props,
    /// Whether the buildset was made from changes (not forced or timed).
    pub has_changes: bool,
    pub priority: i64,
}

/// Names of the builders with unclaimed requests: one query, so that a
/// dispatch with an empty queue (after each build, the usual case) does
/// not ask for each builder's requests. Each EXISTS stops at the first
/// unclaimed request in `buildrequests_pending`, however deep the queue.
pub fn builders_with_pending(conn: &Connection) -> Result<std::collections::HashSet<String>> {
    let mut st = conn.prepare_cached(
        "SELECT b.name FROM builders b WHERE EXISTS (SELECT 1 FROM buildrequests br
           WHERE br.builderid = b.builderid AND br.complete = 0 AND br.claimed_at IS NULL)",
    )?;
    let rows = st.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Unclaimed requests of one builder, highest priority then oldest first.
pub fn pending_requests(
    conn: &Connection,
    builder: &str,
    limit: i64,
) -> Result<Vec<PendingRequest>> {
    let mut st = conn.prepare_cached(
        "SELECT br.buildrequestid, br.builderid, b.name, br.buildsetid, bs.reason, bs.scheduler,
                bs.branch, bs.revision, bs.repository, bs.project, bs.codebase, bs.properties,
                EXISTS (SELECT 1 FROM buildset_changes c WHERE c.buildsetid = br.buildsetid),
                br.priority
         FROM buildrequests br JOIN builders b USING (builderid) JOIN buildsets bs USING (buildsetid)
         WHERE br.complete = 0 AND br.claimed_at IS NULL AND b.name = ?1
         ORDER BY br.priority DESC, br.buildrequestid LIMIT ?2",
    )?;
    let rows = st.query_map(params![builder, limit], |r| {
        let props: String = r.get(11)?;
        Ok(PendingRequest {
            buildrequestid: r.get(0)?,
            builderid: r.get(1)?,
            builder: r.get(2)?,
            buildsetid: r.get(3)?,
            reason: r.get(4)?,
            scheduler: r.get(5)?,
            ss: SourceStamp {
                branch: r.get(6)?,
                revision: r.get(7)?,
                repository: r.get(8)?,
                project: r.get(9)?,
                codebase: r.get(10)?,
            },
            properties: json_col(&props, "buildsets", r.get(3)?, "properties")?,
            has_changes: r.get(12)?,
            priority: r.get(13)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Claims a request for `worker` and creates its build. Returns None when
/// the request was claimed or completed meanwhile.
pub fn claim_and_create_build(
    conn: &Connection,
    buildrequestid: i64,
    builderid: i64,
    worker: &str,
    props: &mut Props,
) -> Result<Option<(i64, i64)>> {
    let now = crate::model::now();
    let n = conn
        .prepare_cached(
            "UPDATE buildrequests SET claimed_at = ?2
             WHERE buildrequestid = ?1 AND claimed_at IS NULL AND complete = 0",
        )?
        .execute(params![buildrequestid, now])?;
    if n == 0 {
        return Ok(None);
    }
    let workerid: i64 = conn
        .prepare_cached("SELECT workerid FROM workers WHERE name = ?1")?
        .query_row([worker], |r| r.get(0))?;
    let number: i64 = conn
        .prepare_cached("SELECT COALESCE(MAX(number), 0) + 1 FROM builds WHERE builderid = ?1")?
        .query_row([builderid], |r| r.get(0))?;
    props.insert("buildnumber".into(), (number.into(), "Build".into()));
    props.insert("workername".into(), (worker.into(), "Worker".into()));
    conn.prepare_cached(
        "INSERT INTO builds(number, builderid, buildrequestid, workerid, started_at, state_string, properties)
         VALUES (?1, ?2, ?3, ?4, ?5, 'starting', ?6)",
    )?
    .execute(params![number, builderid, buildrequestid, workerid, now, json(props)?])?;
    Ok(Some((conn.last_insert_rowid(), number)))
}

/// Records the commit a build's git step checked out as the build property
/// `got_revision` (source `source`), next to the properties it started
/// with. Only the master's build code calls this, from the git step's own
/// report, so the property (with that source) names what was built, not
/// what a request asked for.
pub fn set_got_revision(conn: &Connection, buildid: i64, sha: &str, source: &str) -> Result<()> {
    conn.prepare_cached(
        "UPDATE builds SET properties = json_set(properties, '$.got_revision', json_array(?2, ?3))
         WHERE buildid = ?1",
    )?
    .execute(params![buildid, sha, source])?;
    Ok(())
}

pub fn set_build_state(conn: &Connection, buildid: i64, state: &str) -> Result<()> {
    conn.prepare_cached("UPDATE builds SET state_string = ?2 WHERE buildid = ?1")?
        .execute(params![buildid, state])?;
    Ok(())
}

/// Ends a build with `results`; completes its request, and its buildset
/// when that was the buildset's last request.
pub fn finish_build(conn: &Connection, buildid: i64, results: i64, state: &str) -> Result<()> {
    let now = crate::model::now();
    conn.prepare_cached(
        "UPDATE builds SET complete_at = ?2, results = ?3, state_string = ?4
         WHERE buildid = ?1 AND complete_at IS NULL",
    )?
    .execute(params![buildid, now, results, state])?;
    let (brid, bsid): (i64, i64) = conn
        .prepare_cached(
            "SELECT br.buildrequestid, br.buildsetid FROM builds b
             JOIN buildrequests br USING (buildrequestid) WHERE b.buildid = ?1",
        )?
        .query_row([buildid], |r| Ok((r.get(0)?, r.get(1)?)))?;
    conn.prepare_cached(
        "UPDATE buildrequests SET complete = 1, results = ?2, complete_at = ?3
         WHERE buildrequestid = ?1",
    )?
    .execute(params![brid, results, now])?;
    complete_buildset_if_done(conn, bsid, now)
}

/// Completes a buildset whose requests are all complete. Buildbot's
/// buildset result is the worst of its requests' (SKIPPED counts as worse
/// than SUCCESS here, so a collapsed request never makes a green buildset).
fn complete_buildset_if_done(conn: &Connection, bsid: i64, now: i64) -> Result<()> {
    conn.prepare_cached(
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
/// claimed or completed meanwhile are left alone; returns those collapsed.
pub fn collapse_requests(conn: &Connection, brids: &[i64], buildid: i64) -> Result<Vec<i64>> {
    let now = crate::model::now();
    let mut done = vec![];
    for brid in brids {
        let n = conn
            .prepare_cached(
                "UPDATE buildrequests SET complete = 1, results = ?2, complete_at = ?3,
                   claimed_at = ?3, collapsed_into = ?4
                 WHERE buildrequestid = ?1 AND claimed_at IS NULL AND complete = 0",
            )?
            .execute(params![brid, crate::model::SKIPPED, now, buildid])?;
        if n == 0 {
            continue;
        }
        let bsid: i64 = conn
            .prepare_cached("SELECT buildsetid FROM buildrequests WHERE buildrequestid = ?1")?
            .query_row([brid], |r| r.get(0))?;
        complete_buildset_if_done(conn, bsid, now)?;
        done.push(*brid);
    }
    Ok(done)
}

/// The last revision poller `poller` saw, per branch.
pub fn poller_state(conn: &Connection, poller: &str) -> Result<BTreeMap<String, String>> {
    let mut st =
        conn.prepare_cached("SELECT branch, revision FROM poller_state WHERE poller = ?1")?;
    let rows = st.query_map([poller], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn set_poller_state(
    conn: &Connection,
    poller: &str,
    branch: &str,
    revision: &str,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO poller_state(poller, branch, revision) VALUES (?1, ?2, ?3)
         ON CONFLICT(poller, branch) DO UPDATE SET revision = excluded.revision",
    )?
    .execute([poller, branch, revision])?;
    Ok(())
}

pub fn scheduler_state(conn: &Connection, scheduler: &str, name: &str) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT value FROM scheduler_state WHERE scheduler = ?1 AND name = ?2")?
        .query_row([scheduler, name], |r| r.get(0))
        .optional()?)
}

pub fn set_scheduler_state(
    conn: &Connection,
    scheduler: &str,
    name: &str,
    value: &str,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO scheduler_state(scheduler, name, value) VALUES (?1, ?2, ?3)
         ON CONFLICT(scheduler, name) DO UPDATE SET value = excluded.value",
    )?
    .execute([scheduler, name, value])?;
    Ok(())
}

/// Drops what schedulers no longer in the config held (after a reconfig).
pub fn forget_schedulers_except(conn: &Connection, keep: &[String]) -> Result<usize> {
    let held: Vec<String> = {
        let mut st = conn.prepare_cached("SELECT DISTINCT scheduler FROM scheduler_changes")?;
        let rows = st.query_map([], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let mut n = 0;
    for name in held.iter().filter(|h| !keep.contains(h)) {
        n += conn
            .prepare_cached("DELETE FROM scheduler_changes WHERE scheduler = ?1")?
            .execute([name])?;
    }
    Ok(n)
}

/// What a reporter says about a build.
#[derive(Debug, Clone, Default)]
pub struct BuildReport {
    pub buildid: i64,
    pub builderid: i64,
    pub builder: String,
    pub number: i64,
    pub worker: Option<String>,
    pub started_at: i64,
    pub complete_at: Option<i64>,
    pub results: Option<i64>,
    pub state_string: String,
    pub properties: Props,
    pub reason: String,
    pub ss: SourceStamp,
    /// (name, results) of each step, in order.
    pub steps: Vec<(String, Option<i64>)>,
    /// (revision, author, comments) of the changes the build is for.
    pub changes: Vec<(Option<String>, String, String)>,
    /// The results of the builder's previous finished build (not RETRY).
    pub previous_results: Option<i64>,
    /// The newest change of the build's buildset, the one whose revision
    /// the source stamp carries (None for forced and timed builds).
    pub last_change: Option<ChangeSource>,
}

/// Where a build's newest change came from, for reporters that must not
/// trust what an unauthenticated sender wrote.
#[derive(Debug, Clone, Default)]
pub struct ChangeSource {
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
    pub fn prop(&self, name: &str) -> Option<String> {
        match self.properties.get(name).map(|(v, _)| v) {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(v) => Some(v.to_string()),
        }
    }
}

pub fn build_report(conn: &Connection, buildid: i64) -> Result<Option<BuildReport>> {
    let row = conn
        .prepare_cached(
            "SELECT b.buildid, b.builderid, bl.name, b.number, w.name, b.started_at, b.complete_at,
                    b.results, b.state_string, b.properties, bs.reason, bs.branch, bs.revision,
                    bs.repository, bs.project, bs.codebase, br.buildsetid
             FROM builds b JOIN builders bl USING (builderid)
             JOIN buildrequests br USING (buildrequestid)
             JOIN buildsets bs ON bs.buildsetid = br.buildsetid
             LEFT JOIN workers w ON w.workerid = b.workerid
             WHERE b.buildid = ?1",
        )?
        .query_row([buildid], |r| {
            let props: String = r.get(9)?;
            Ok((
                BuildReport {
                    buildid: r.get(0)?,
                    builderid: r.get(1)?,
                    builder: r.get(2)?,
                    number: r.get(3)?,
                    worker: r.get(4)?,
                    started_at: r.get(5)?,
                    complete_at: r.get(6)?,
                    results: r.get(7)?,
                    state_string: r.get(8)?,
                    properties: json_col(&props, "builds", r.get(0)?, "properties")?,
                    reason: r.get(10)?,
                    ss: SourceStamp {
                        branch: r.get(11)?,
                        revision: r.get(12)?,
                        repository: r.get(13)?,
                        project: r.get(14)?,
                        codebase: r.get(15)?,
                    },
                    ..Default::default()
                },
                r.get::<_, i64>(16)?,
            ))
        })
        .optional()?;
    let Some((mut rep, bsid)) = row else {
        return Ok(None);
    };
    let mut st =
        conn.prepare_cached("SELECT name, results FROM steps WHERE buildid = ?1 ORDER BY number")?;
    rep.steps = st
        .query_map([buildid], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut st = conn.prepare_cached(
        "SELECT c.revision, c.author, c.comments FROM buildset_changes bc
         JOIN changes c USING (changeid) WHERE bc.buildsetid = ?1 ORDER BY c.changeid",
    )?;
    rep.changes = st
        .query_map([bsid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    rep.last_change = conn
        .prepare_cached(
            "SELECT c.revision, c.repository, c.properties, c.delivery IS NOT NULL
             FROM buildset_changes bc JOIN changes c USING (changeid)
             WHERE bc.buildsetid = ?1 ORDER BY c.changeid DESC LIMIT 1",
        )?
        .query_row([bsid], |r| {
            let props: String = r.get(2)?;
            Ok(ChangeSource {
                revision: r.get(0)?,
                repository: r.get(1)?,
                properties: json_col(&props, "changes of buildset", bsid, "properties")?,
                signed: r.get(3)?,
            })
        })
        .optional()?;
    rep.previous_results = conn
        .prepare_cached(
            "SELECT results FROM builds WHERE builderid = ?1 AND buildid < ?2
               AND complete_at IS NOT NULL AND results IS NOT NULL AND results != ?3
             ORDER BY buildid DESC LIMIT 1",
        )?
        .query_row(params![rep.builderid, buildid, RETRY], |r| r.get(0))
        .optional()?;
    Ok(Some(rep))
}

/// What became of a request someone asked to cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It was queued and is now complete as CANCELLED; it will never start.
    Cancelled,
    /// A build of it is running: stop that build instead.
    Running {
        buildid: i64,
    },
    /// Already complete: nothing to do.
    Complete,
    NotFound,
}

/// Cancels a queued build request (Buildbot's `cancel`): completes it as
/// CANCELLED so the botmaster's claim (which requires `complete = 0`) can
/// never start it.
pub fn cancel_request(conn: &Connection, brid: i64) -> Result<CancelOutcome> {
    let now = crate::model::now();
    let n = conn
        .prepare_cached(
            "UPDATE buildrequests SET complete = 1, results = ?2, complete_at = ?3
             WHERE buildrequestid = ?1 AND complete = 0 AND claimed_at IS NULL",
        )?
        .execute(params![brid, crate::model::CANCELLED, now])?;
    let row: Option<(i64, bool)> = conn
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
    let running: Option<i64> = conn
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

/// A new buildset for one builder with the source stamp, properties and
/// changes of the buildset `buildid` came from (Buildbot's rebuild).
/// Returns (buildsetid, builderid, buildrequestid), None if no such build.
pub fn rebuild(conn: &Connection, buildid: i64, reason: &str) -> Result<Option<(i64, i64, i64)>> {
    let row = conn
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
                r.get::<_, i64>(0)?,
                SourceStamp {
                    branch: r.get(1)?,
                    revision: r.get(2)?,
                    repository: r.get(3)?,
                    project: r.get(4)?,
                    codebase: r.get(5)?,
                },
                json_col::<Props>(&props, "buildsets", r.get(0)?, "properties")?,
                r.get::<_, String>(7)?,
                r.get::<_, i64>(8)?,
                r.get::<_, Option<String>>(9)?,
            ))
        })
        .optional()?;
    let Some((old_bsid, ss, props, builder, builderid, scheduler)) = row else {
        return Ok(None);
    };
    let changeids: Vec<i64> = conn
        .prepare_cached(
            "SELECT changeid FROM buildset_changes WHERE buildsetid = ?1 ORDER BY changeid",
        )?
        .query_map([old_bsid], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let (bsid, reqs) = create_buildset(
        conn,
        reason,
        scheduler.as_deref(),
        &ss,
        &props,
        &changeids,
        &[builder],
    )?;
    let brid = reqs
        .iter()
        .find(|(b, _)| *b == builderid)
        .map(|(_, r)| *r)
        .ok_or_else(|| anyhow!("rebuild made no request"))?;
    Ok(Some((bsid, builderid, brid)))
}

/// A worker's id from an id or a name (an all-digit text is tried as an id
/// first, as the API's paths do).
pub fn worker_id(conn: &Connection, worker: &str) -> Result<Option<i64>> {
    if let Ok(id) = worker.parse::<i64>() {
        let found = conn
            .prepare_cached("SELECT workerid FROM workers WHERE workerid = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?;
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(conn
        .prepare_cached("SELECT workerid FROM workers WHERE name = ?1")?
        .query_row([worker], |r| r.get(0))
        .optional()?)
}

/// Pauses or unpauses a worker; false if there is none.
pub fn set_worker_paused(conn: &Connection, workerid: i64, paused: bool) -> Result<bool> {
    let n = conn
        .prepare_cached("UPDATE workers SET paused = ?2 WHERE workerid = ?1")?
        .execute(params![workerid, paused as i64])?;
    Ok(n > 0)
}

/// Names of paused workers: the botmaster gives them no new builds.
pub fn paused_workers(conn: &Connection) -> Result<std::collections::HashSet<String>> {
    let mut st = conn.prepare_cached("SELECT name FROM workers WHERE paused = 1")?;
    let rows = st.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

// Users and sessions (web UI logins). The password hashing itself is in
// `auth`; these only store and fetch.

/// A web UI user as `minibot user list` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct UserRow {
    pub userid: i64,
    pub name: String,
    pub created_at: i64,
    pub sessions: i64,
}

/// Adds a user; an existing name is an error.
pub fn add_user(conn: &Connection, name: &str, password_hash: &str) -> Result<i64> {
    let n = conn
        .prepare_cached(
            "INSERT INTO users(name, password_hash, created_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO NOTHING",
        )?
        .execute(params![name, password_hash, crate::model::now()])?;
    if n == 0 {
        bail!("a user named {name:?} already exists (use `minibot user passwd`)");
    }
    Ok(conn.last_insert_rowid())
}

/// Sets a user's password and ends their sessions; false if there is none.
pub fn set_user_password(conn: &Connection, name: &str, password_hash: &str) -> Result<bool> {
    let n = conn
        .prepare_cached("UPDATE users SET password_hash = ?2 WHERE name = ?1")?
        .execute(params![name, password_hash])?;
    conn.prepare_cached(
        "DELETE FROM sessions WHERE userid = (SELECT userid FROM users WHERE name = ?1)",
    )?
    .execute([name])?;
    Ok(n > 0)
}

/// Removes a user and their sessions; false if there is none.
pub fn remove_user(conn: &Connection, name: &str) -> Result<bool> {
    conn.prepare_cached(
        "DELETE FROM sessions WHERE userid = (SELECT userid FROM users WHERE name = ?1)",
    )?
    .execute([name])?;
    let n = conn
        .prepare_cached("DELETE FROM users WHERE name = ?1")?
        .execute([name])?;
    Ok(n > 0)
}

pub fn list_users(conn: &Connection) -> Result<Vec<UserRow>> {
    let mut st = conn.prepare_cached(
        "SELECT u.userid, u.name, u.created_at,
                (SELECT count(*) FROM sessions s WHERE s.userid = u.userid AND s.expires_at > ?1)
         FROM users u ORDER BY u.name",
    )?;
    let rows = st.query_map([crate::model::now()], |r| {
        Ok(UserRow {
            userid: r.get(0)?,
            name: r.get(1)?,
            created_at: r.get(2)?,
            sessions: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// (userid, password hash) of a user.
pub fn user_password(conn: &Connection, name: &str) -> Result<Option<(i64, String)>> {
    Ok(conn
        .prepare_cached("SELECT userid, password_hash FROM users WHERE name = ?1")?
        .query_row([name], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

/// Stores a new session (and forgets expired ones).
pub fn create_session(
    conn: &Connection,
    token_hash: &str,
    userid: i64,
    csrf: &str,
    expires_at: i64,
) -> Result<()> {
    let now = crate::model::now();
    conn.prepare_cached("DELETE FROM sessions WHERE expires_at <= ?1")?
        .execute([now])?;
    conn.prepare_cached(
        "INSERT INTO sessions(token_hash, userid, csrf, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![token_hash, userid, csrf, now, expires_at])?;
    Ok(())
}

/// The live session with this token hash: (userid, user name, csrf token).
pub fn session(
    conn: &Connection,
    token_hash: &str,
    now: i64,
) -> Result<Option<(i64, String, String)>> {
    Ok(conn
        .prepare_cached(
            "SELECT s.userid, u.name, s.csrf FROM sessions s JOIN users u USING (userid)
             WHERE s.token_hash = ?1 AND s.expires_at > ?2",
        )?
        .query_row(params![token_hash, now], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?)
}

pub fn delete_session(conn: &Connection, token_hash: &str) -> Result<()> {
    conn.prepare_cached("DELETE FROM sessions WHERE token_hash = ?1")?
        .execute([token_hash])?;
    Ok(())
}

/// Starts a step and its stdio log; returns (stepid, logid).
pub fn start_step(conn: &Connection, buildid: i64, number: u32, name: &str) -> Result<(i64, i64)> {
    let now = crate::model::now();
    conn.prepare_cached(
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
    let stepid = conn.last_insert_rowid();
    conn.prepare_cached(
        "INSERT INTO logs(stepid, name, slug, type) VALUES (?1, 'stdio', 'stdio', 's')",
    )?
    .execute([stepid])?;
    let logid = conn.last_insert_rowid();
    conn.prepare_cached("UPDATE builds SET state_string = ?2 WHERE buildid = ?1")?
        .execute(params![buildid, format!("building: {name}")])?;
    Ok((stepid, logid))
}

/// Log totals as the master has written them.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogTotals {
    pub num_lines: i64,
    pub size: i64,
}

pub fn update_log(conn: &Connection, logid: i64, t: LogTotals, complete: bool) -> Result<()> {
    conn.prepare_cached(
        "UPDATE logs SET num_lines = ?2, size = ?3, complete = ?4 WHERE logid = ?1",
    )?
    .execute(params![logid, t.num_lines, t.size, complete as i64])?;
    Ok(())
}

pub fn finish_step(conn: &Connection, stepid: i64, results: i64, state: &str) -> Result<()> {
    conn.prepare_cached(
        "UPDATE steps SET complete_at = ?2, results = ?3, state_string = ?4 WHERE stepid = ?1",
    )?
    .execute(params![stepid, crate::model::now(), results, state])?;
    Ok(())
}

/// Marks a worker (dis)connected and records what it told us about itself.
pub fn set_worker_connected(
    conn: &Connection,
    name: &str,
    info: Option<&BTreeMap<String, String>>,
    connected: bool,
) -> Result<i64> {
    conn.prepare_cached("INSERT OR IGNORE INTO workers(name, configured) VALUES (?1, 1)")?
        .execute([name])?;
    match info {
        Some(info) => conn
            .prepare_cached(
                "UPDATE workers SET connected = ?2, info = ?3, last_connection = ?4 WHERE name = ?1",
            )?
            .execute(params![name, connected as i64, json(info)?, crate::model::now()])?,
        None => conn
            .prepare_cached("UPDATE workers SET connected = ?2 WHERE name = ?1")?
            .execute(params![name, connected as i64])?,
    };
    Ok(conn
        .prepare_cached("SELECT workerid FROM workers WHERE name = ?1")?
        .query_row([name], |r| r.get(0))?)
}

/// At start: no worker is connected yet.
pub fn reset_connections(conn: &Connection) -> Result<()> {
    conn.execute("UPDATE workers SET connected = 0", [])?;
    Ok(())
}
