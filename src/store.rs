//! The SQLite database: schema, migrations, and the single writer thread.
//!
//! Owns: `state.sqlite` (WAL mode). All writes go through one thread that
//! receives jobs on a crossbeam channel (`Store::write`), runs every job that
//! is waiting in ONE transaction (group commit), and only after COMMIT sends
//! each job its result. That is what lets a hook answer 200 only once its
//! change is durable, while a burst of hooks costs one fsync-free commit
//! rather than one per hook. Readers (HTTP threads) open their own read-only
//! connections with `open_reader`; WAL lets them read while the writer writes.
//!
//! Durability: `synchronous = NORMAL` in WAL mode keeps every committed
//! transaction across a crash of the process (kill -9); only a power loss
//! can drop the last commits. That is the failure model we promise (SPEC §6).

use anyhow::{anyhow, bail, Context, Result};
use crossbeam_channel::{unbounded, Receiver, Sender};
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::thread;

/// The schema version this binary reads and writes. `upgrade-master`
/// migrates older files; the master refuses to start on any other version.
pub const SCHEMA_VERSION: i64 = 1;

/// Migration `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[r#"
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
"#];

/// Where the text of a log lives, under the master directory.
pub fn log_path(master_dir: &Path, buildid: i64, logid: i64) -> PathBuf {
    master_dir
        .join("logs")
        .join(buildid.to_string())
        .join(format!("{logid}.log"))
}

/// Settings every connection gets.
fn tune(conn: &Connection) -> Result<()> {
    // A reader may meet the writer's checkpoint; wait rather than fail.
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
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
        bail!("{}: could not switch to WAL mode (got {mode})", path.display());
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
        bail!("{} does not exist; is this a master directory?", path.display());
    }
    let conn = open_rw(path, false)?;
    migrate(&conn)
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

/// Handle to the writer thread; cheap to clone.
#[derive(Clone)]
pub struct Store {
    tx: Sender<Job>,
    path: PathBuf,
}

impl Store {
    /// Opens the database, checks its schema and starts the writer thread.
    pub fn open(path: &Path) -> Result<Store> {
        if !path.exists() {
            bail!(
                "{} does not exist; run `minibot create-master` first",
                path.display()
            );
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
        let (tx, rx) = unbounded::<Job>();
        thread::Builder::new()
            .name("store".into())
            .stack_size(256 * 1024)
            .spawn(move || writer_loop(conn, rx))
            .context("spawning store thread")?;
        Ok(Store {
            tx,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in the writer's transaction and returns its result once the
    /// transaction has committed. If `f` fails, its own writes are rolled
    /// back (savepoint) and the other jobs of the batch still commit.
    pub fn write<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
    {
        let (rtx, rrx) = crossbeam_channel::bounded::<Result<R>>(1);
        let job: Job = Box::new(move |conn| {
            let res = run_in_savepoint(conn, f);
            Box::new(move |commit: Result<(), String>| {
                let out = match commit {
                    Ok(()) => res,
                    Err(e) => Err(anyhow!("commit failed: {e}")),
                };
                let _ = rtx.send(out);
            })
        });
        self.tx
            .send(job)
            .map_err(|_| anyhow!("the store thread has stopped"))?;
        rrx.recv()
            .map_err(|_| anyhow!("the store thread stopped before answering"))?
    }
}

fn run_in_savepoint<R>(conn: &Connection, f: impl FnOnce(&Connection) -> Result<R>) -> Result<R> {
    conn.execute_batch("SAVEPOINT job")?;
    match f(conn) {
        Ok(r) => {
            conn.execute_batch("RELEASE job")?;
            Ok(r)
        }
        Err(e) => {
            // ROLLBACK TO keeps the savepoint open; RELEASE closes it.
            let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
            Err(e)
        }
    }
}

/// Most jobs in one transaction; bounds the latency a big burst adds to the
/// first hook in it.
const MAX_BATCH: usize = 256;

fn writer_loop(conn: Connection, rx: Receiver<Job>) {
    // Exits when every Store handle is dropped (master shutdown).
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let began = conn.execute_batch("BEGIN IMMEDIATE");
        let completions: Vec<Completion> = batch.into_iter().map(|job| job(&conn)).collect();
        let commit = began
            .and_then(|_| conn.execute_batch("COMMIT"))
            .map_err(|e| e.to_string());
        if let Err(e) = &commit {
            log::error!("store: transaction failed: {e}");
            let _ = conn.execute_batch("ROLLBACK");
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
                    c.execute(
                        "INSERT INTO builders(name) VALUES (?1)",
                        [format!("b{i}")],
                    )?;
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
