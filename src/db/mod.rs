//! The data layer: schema, migrations, the single writer thread, and every
//! query. Nothing outside `db` holds SQL or a rusqlite type.
//!
//! **The boundary.** Callers see [`Store`] (`write` runs a job in the group
//! transaction and returns after COMMIT; `reader` lends a pooled read
//! connection; `own_reader` gives a thread one of its own), the connection
//! handles [`Conn`] (reads) and [`Tx`] (writes; it reads too), the query
//! functions that take them, and the view structs those return (`Props`,
//! `SourceStamp`, `ChangeRow`, `PendingRequest`, `BuildReport`, `BuildRow`,
//! ..., the API's typed query in `db::api`). Ids are the database's keys,
//! typed (`model::BuildId`, `RequestId`, ...; `ids` stores them), as
//! returned by the functions that create rows, never `last_insert_rowid`
//! or a rowid in a caller; errors are `anyhow` errors with context, never
//! SQLite error codes; transaction control (`BEGIN IMMEDIATE`, savepoints)
//! stays in `writer`. A second backend (PostgreSQL shared by several
//! masters) would implement that same set: `Store` over its own pool and
//! writer, `Conn`/`Tx` wrapping its connection, and the query functions
//! with its SQL; the callers would not change. (Files and their names —
//! `create`, `upgrade`, `open_admin`, `log_path` — are the SQLite
//! deployment's and would get a URL-taking counterpart.)
//!
//! Owns: `state.sqlite` (WAL mode). All writes go through one thread that
//! receives jobs on a crossbeam channel (`Store::write`), runs every job that
//! is waiting in ONE transaction (group commit), and only after COMMIT sends
//! each job its result. That is what lets a hook answer 200 only once its
//! change is durable, while a burst of hooks costs one fsync-free commit
//! rather than one per hook. Readers use read-only connections, their own
//! (`Store::own_reader`: scheduler, botmaster, live pages: threads that
//! read all their life, and keep their statements prepared) or lent from
//! a pool shared by every `Store` clone (`Store::reader`: HTTP requests,
//! worker connections, chain, reporters, poller, janitor), opened on
//! first need; WAL lets them read
//! while the writer writes. `Store::release_memory` empties the writer's
//! and the idle readers' page caches when the master has gone quiet.
//!
//! Durability: `synchronous = NORMAL` in WAL mode keeps every committed
//! transaction across a crash of the process (kill -9); only a power loss
//! can drop the last commits. That is the failure model we promise (SPEC §6).

pub(crate) mod api;
mod artifacts;
mod builds;
mod chain;
mod changes;
mod ids;
mod integrity;
mod janitor;
mod locks;
mod logs;
mod pages;
mod reports;
mod requests;
mod schema;
mod state;
mod users;
mod workers;
mod writer;

pub(crate) use artifacts::*;
pub use artifacts::{artifact_dir, artifact_path, artifact_root};
pub(crate) use builds::*;
pub(crate) use chain::*;
pub use changes::*;
pub(crate) use integrity::needs_check;
pub use integrity::{CorruptDatabase, FileLost, Loss};
pub(crate) use janitor::*;
pub(crate) use locks::*;
pub use logs::*;
pub(crate) use pages::*;
pub(crate) use reports::*;
pub(crate) use requests::*;
pub use schema::*;
pub(crate) use state::*;
pub use users::*;
pub use workers::*;
use writer::{writer_loop, Job};

use crate::model::{
    BuildId, BuildResult, BuilderId, BuildsetId, ChangeId, LogId, RequestId, StepId, WorkerId,
};
use anyhow::{Context, Result};
use crossbeam_channel::{unbounded, Sender};
use rusqlite::Connection;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;

/// Handle to the writer thread and the shared reader connections; cheap to
/// clone.
#[derive(Clone)]
pub struct Store {
    tx: Sender<Job>,
    path: PathBuf,
    idle: Arc<Mutex<Vec<Conn>>>,
    /// The files the writer opened (`check_file`).
    watch: Arc<integrity::FileWatch>,
    /// The writer thread, taken by [`Store::close`], which asks it to stop
    /// through `stop` and waits for it to hand back its connection (kept
    /// open: see `close`).
    writer: Arc<Mutex<Option<thread::JoinHandle<Tx>>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    /// Asks the writer for a checkpoint after its next batch
    /// (`release_memory`).
    checkpoint: Arc<std::sync::atomic::AtomicBool>,
}

/// A connection to the database, for reading: every read query takes one.
/// Its SQLite connection is private to `db`, so no caller can run SQL of
/// its own or depend on SQLite's types.
pub struct Conn {
    raw: Connection,
}

/// A connection that may write: the writer thread's (a `Store::write` job
/// gets it inside the group transaction) or an admin command's
/// (`open_admin`). Every write query takes one; it reads as a [`Conn`].
pub struct Tx {
    conn: Conn,
}

impl std::ops::Deref for Tx {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        &self.conn
    }
}

/// Idle reader connections kept for reuse; a reader returned beyond this is
/// closed. As many as the HTTP threads: more than that rarely read at once.
const MAX_IDLE_READERS: usize = 4;

/// A read-only connection lent by [`Store::reader`]; back to the pool on
/// drop.
pub(crate) struct Reader {
    conn: Option<Conn>,
    idle: Arc<Mutex<Vec<Conn>>>,
}

impl std::ops::Deref for Reader {
    type Target = Conn;
    fn deref(&self) -> &Conn {
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
fn give_back(idle: &Mutex<Vec<Conn>>, conn: Conn) {
    let mut idle = idle.lock().unwrap_or_else(|p| p.into_inner());
    if idle.len() < MAX_IDLE_READERS {
        idle.push(conn);
    }
}

/// Frees the memory SQLite holds for `conn` that it can read again from
/// the file (the page cache, up to `cache_size` in `tune`):
/// `sqlite3_db_release_memory`. The next queries fill it again.
pub(crate) fn shrink(conn: &Conn) -> Result<()> {
    conn.raw
        .execute_batch("PRAGMA shrink_memory")
        .context("PRAGMA shrink_memory")
}

impl Store {
    /// Opens the database, checks its schema and starts the writer thread.
    /// (The master also runs [`Store::check_integrity`] before it serves.)
    pub fn open(path: &Path) -> Result<Store> {
        let conn = open_current(path, "run `minibot create-master` first")?;
        let watch = integrity::FileWatch::record(path)?;
        let (tx, rx) = unbounded::<Job>();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let checkpoint = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let checkpoint2 = checkpoint.clone();
        let writer = thread::Builder::new()
            .name("store".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                writer_loop(
                    Tx {
                        conn: Conn { raw: conn },
                    },
                    rx,
                    &stop2,
                    &checkpoint2,
                )
            })
            .context("spawning store thread")?;
        Ok(Store {
            tx,
            path: path.to_path_buf(),
            idle: Arc::default(),
            watch: Arc::new(watch),
            writer: Arc::new(Mutex::new(Some(writer))),
            stop,
            checkpoint,
        })
    }

    /// Ends the database's use at a clean stop, once nothing writes any
    /// more: stops the writer thread, then records in `clean_stop` what the
    /// files look like, so that the next start can skip `quick_check` and
    /// the scan for foreign log files if nothing touched them since
    /// ([`needs_check`]). A write asked of another handle afterwards fails.
    ///
    /// The connections are left open until the process exits, on purpose:
    /// the last one to close would checkpoint the WAL into the database
    /// (an fsync of each) and delete it (so the next start re-creates it
    /// and fsyncs the directory), changing the files after the stamp. Left
    /// open, the WAL stays as the commits left it and the next open reads
    /// it back. Durability is what it is while the master runs
    /// (`synchronous = NORMAL`): the commits since the last checkpoint
    /// survive the process's exit, as after `kill -9`, but not a power
    /// loss before the OS writes them; the closing checkpoint used to
    /// narrow that window at a clean stop.
    pub fn close(self, clean_stop: &Path) -> Result<()> {
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(writer) = writer {
            self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
            // Wakes the writer if it waits for a job; it stops after it.
            writer::wake(&self.tx);
            let conn = writer
                .join()
                .map_err(|_| anyhow::anyhow!("the store thread panicked"))?;
            std::mem::forget(conn);
        }
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|p| p.into_inner()));
        std::mem::forget(idle);
        let stamp = serde_json::to_vec(&integrity::Stamp::of(&self.path))?;
        std::fs::write(clean_stop, stamp)
            .with_context(|| format!("cannot write {}", clean_stop.display()))?;
        set_private(clean_stop)
    }

    /// Whether the database file and its WAL are still the files the
    /// writer opened (two `stat` calls). Err when one was deleted or
    /// replaced: every commit from then on goes to a file the next start
    /// will not see, so nothing may be acknowledged (issue 16 point 5).
    pub fn check_file(&self) -> std::result::Result<(), FileLost> {
        self.watch.check()
    }

    /// A read-only connection of its own, for a thread that reads all its
    /// life (scheduler, botmaster, a live page): not from the pool, so it
    /// never waits for one and keeps its statement cache.
    pub(crate) fn own_reader(&self) -> Result<Conn> {
        open_read_only(&self.path)
    }

    /// `PRAGMA quick_check` of the database: Ok if it is sound, else an
    /// error that says what was found and what the operator can do. The
    /// master runs it at start unless [`needs_check`] said the files are
    /// as the last clean stop left them. On a pooled reader, which goes
    /// back to the pool for the next reads.
    pub fn check_integrity(&self) -> Result<()> {
        match self.reader() {
            Ok(r) => integrity::check(&self.path, Ok(&r.raw)),
            Err(e) => integrity::check(&self.path, Err(e)),
        }
    }

    /// A read-only connection for the threads that read now and then
    /// (HTTP requests, reporters, poller, janitor): an idle one if there
    /// is one, else a new one. So the master holds as many as reads ran at
    /// once (one, when they come one at a time), not one per thread from
    /// the start; each costs its schema, lookaside and page cache in RSS,
    /// and opening it reads the schema.
    pub(crate) fn reader(&self) -> Result<Reader> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match idle {
            Some(c) => c,
            None => open_read_only(&self.path)?,
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
    /// it): the writer's part is one small job on the store thread, after
    /// which it checkpoints the WAL into the database and truncates it
    /// (`writer::checkpoint`), without the caller waiting for that.
    pub(crate) fn release_memory(&self) -> Result<()> {
        self.checkpoint
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let mut idle =
            std::mem::take(&mut *self.idle.lock().unwrap_or_else(|p| p.into_inner())).into_iter();
        // Outside the lock: a request meanwhile opens a reader of its own.
        let keep = idle.next();
        drop(idle);
        if let Some(keep) = keep {
            shrink(&keep)?;
            give_back(&self.idle, keep);
        }
        self.write(|tx| shrink(tx))
    }

    /// Runs `f` in the writer's transaction and returns its result once the
    /// transaction has committed. If `f` fails, its own writes are rolled
    /// back (savepoint) and the other jobs of the batch still commit.
    pub fn write<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Tx) -> Result<R> + Send + 'static,
    {
        writer::submit(&self.tx, f)
    }
}

/// Properties in the API's shape: name → (value, source).
pub(crate) type Props = BTreeMap<String, (serde_json::Value, String)>;

/// What a buildset builds: Buildbot's source stamp, inline.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct SourceStamp {
    pub branch: Option<String>,
    pub revision: Option<String>,
    pub repository: String,
    pub project: String,
    pub codebase: String,
}

fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).context("encoding JSON for the database")
}

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

/// Results are stored as Buildbot's integer codes.
impl rusqlite::ToSql for BuildResult {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(rusqlite::types::ToSqlOutput::from(self.code()))
    }
}

/// A `results` column (NULL while running). An integer that is no
/// Buildbot result is an error naming the table, row and column, never a
/// guess.
fn result_col(
    r: &rusqlite::Row,
    idx: usize,
    table: &str,
    id: i64,
) -> rusqlite::Result<Option<BuildResult>> {
    let Some(code) = r.get::<_, Option<i64>>(idx)? else {
        return Ok(None);
    };
    BuildResult::from_code(code).map(Some).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            rusqlite::types::Type::Integer,
            format!("unknown result code {code} in {table} {id}, column results").into(),
        )
    })
}

/// Unit tests elsewhere in the crate set up rows no query of the interface
/// writes (old timestamps, odd states); only they see the raw connection.
#[cfg(test)]
impl Conn {
    pub(crate) fn sql(&self) -> &Connection {
        &self.raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::bail;

    /// The builders' rows, as a pooled reader of `store` sees them.
    fn count_builders(store: &Store) -> i64 {
        store
            .reader()
            .unwrap()
            .raw
            .query_row("SELECT count(*) FROM builders", [], |r| r.get(0))
            .unwrap()
    }

    /// A new database in a temporary directory, with a connection that may
    /// write rows no query of the interface writes.
    fn new_db() -> (tempfile::TempDir, Tx) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        create(&path).unwrap();
        let conn = open_admin(&path).unwrap();
        (dir, conn)
    }

    /// Cached statements stay planned: binding a new `LIMIT` or a value
    /// compared with a partial index's WHERE does not make SQLite parse
    /// and plan the statement again (`tune` sets the QPSG; without it both
    /// statements below are re-prepared on every run).
    #[test]
    fn cached_statements_are_not_prepared_again_on_bind() {
        let (dir, _tx) = new_db();
        let reader = open_read_only(&dir.path().join("state.sqlite")).unwrap();
        for sql in [
            "SELECT buildid FROM builds ORDER BY buildid DESC LIMIT ?1",
            "SELECT buildrequestid FROM buildrequests WHERE complete = ?1 LIMIT ?2",
        ] {
            for run in 1..=3i64 {
                let mut st = reader.raw.prepare_cached(sql).unwrap();
                let n = st.parameter_count();
                let args: Vec<i64> = (0..n as i64).map(|i| run + i).collect();
                let rows = st.query_map(rusqlite::params_from_iter(args), |r| r.get::<_, i64>(0));
                assert_eq!(rows.unwrap().count(), 0);
                let reprepared = st.get_status(rusqlite::StatementStatus::RePrepare);
                assert_eq!(reprepared, 0, "{sql} was prepared again on run {run}");
            }
        }
    }

    /// The config's mirror: syncing the same config again (every restart)
    /// changes no row, so a restart adds nothing to the WAL the next start
    /// reads back; a changed config is mirrored exactly (a builder left
    /// out is unconfigured and loses its workers, one back is configured
    /// again, a new description is written, a worker left out goes).
    #[test]
    fn the_config_mirror_writes_only_what_changed() {
        let (_dir, tx) = new_db();
        let mut cfg = crate::config::parse(crate::config::SAMPLE, "sample").unwrap();
        let first = cfg.builders[0].clone();
        let mut second = first.clone();
        second.name = "second".into();
        second.workers = vec![cfg.workers[0].name.clone()];
        cfg.builders.push(second);
        let mut other = cfg.workers[0].clone();
        other.name = "other-worker".into();
        cfg.workers.push(other);
        let mirror = |tx: &Tx| -> Vec<(String, i64, Option<String>, String)> {
            let mut st = tx
                .raw
                .prepare(
                    "SELECT b.name, b.configured, b.description,
                       (SELECT group_concat(w.name) FROM configured_workers cw
                        JOIN workers w USING (workerid) WHERE cw.builderid = b.builderid)
                     FROM builders b ORDER BY b.name",
                )
                .unwrap();
            let rows = st
                .query_map([], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get::<_, Option<String>>(3)?.unwrap_or_default(),
                    ))
                })
                .unwrap();
            rows.map(|r| r.unwrap()).collect()
        };
        let workers = |tx: &Tx| -> Vec<(String, i64)> {
            let mut st = tx
                .raw
                .prepare("SELECT name, configured FROM workers ORDER BY name")
                .unwrap();
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
            rows.map(|r| r.unwrap()).collect()
        };
        sync_config(&tx, &cfg).unwrap();
        reset_connections(&tx).unwrap();
        let before = tx.raw.total_changes();
        sync_config(&tx, &cfg).unwrap();
        reset_connections(&tx).unwrap();
        assert_eq!(
            tx.raw.total_changes(),
            before,
            "the same config again changed rows"
        );
        let w0 = cfg.workers[0].name.clone();
        assert_eq!(
            mirror(&tx),
            vec![
                (
                    first.name.clone(),
                    1,
                    first.description.clone(),
                    first.workers.join(",")
                ),
                ("second".into(), 1, first.description.clone(), w0.clone()),
            ]
        );

        // "second" and the other worker leave; the first builder's text changes.
        let mut changed = cfg.clone();
        changed.builders.truncate(1);
        changed.builders[0].description = Some("new words".into());
        changed.workers.truncate(1);
        sync_config(&tx, &changed).unwrap();
        assert_eq!(
            mirror(&tx),
            vec![
                (
                    first.name.clone(),
                    1,
                    Some("new words".into()),
                    first.workers.join(",")
                ),
                ("second".into(), 0, first.description.clone(), String::new()),
            ]
        );
        assert_eq!(
            workers(&tx),
            vec![(w0.clone(), 1), ("other-worker".into(), 0)]
        );

        // Back as it was.
        sync_config(&tx, &cfg).unwrap();
        assert_eq!(
            mirror(&tx)[1],
            ("second".into(), 1, first.description.clone(), w0.clone())
        );
        assert_eq!(workers(&tx), vec![(w0, 1), ("other-worker".into(), 1)]);
    }

    /// Going quiet checkpoints the WAL and truncates it, so that the next
    /// start reads none back; what was written stays, and writing goes on.
    #[test]
    fn release_memory_truncates_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        create(&path).unwrap();
        let store = Store::open(&path).unwrap();
        for i in 0..50 {
            store
                .write(move |c| {
                    c.raw
                        .execute("INSERT INTO builders(name) VALUES (?1)", [format!("b{i}")])?;
                    Ok(())
                })
                .unwrap();
        }
        let wal = dir.path().join("state.sqlite-wal");
        let size = || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        assert!(size() > 0, "the writes are in the WAL");
        drop(store.reader().unwrap());
        store.release_memory().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while size() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "WAL still {} bytes",
                size()
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        store
            .write(|c| {
                c.raw
                    .execute("INSERT INTO builders(name) VALUES ('after')", [])?;
                Ok(())
            })
            .unwrap();
        let n = count_builders(&store);
        assert_eq!(n, 51);
    }

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
                    c.raw
                        .execute("INSERT INTO builders(name) VALUES (?1)", [format!("b{i}")])?;
                    Ok(c.raw.last_insert_rowid())
                })
                .unwrap()
            }));
        }
        for h in handles {
            assert!(h.join().unwrap() > 0);
        }
        // A failing job rolls back only itself.
        let err = store.write(|c| {
            c.raw
                .execute("INSERT INTO builders(name) VALUES ('x')", [])?;
            bail!("nope");
            #[allow(unreachable_code)]
            Ok(())
        });
        assert!(err.is_err());
        let reader = open_read_only(&path).unwrap();
        let n: i64 = reader
            .raw
            .query_row("SELECT count(*) FROM builders", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 20);
    }

    #[test]
    fn corrupt_stored_json_is_an_error_naming_the_row() {
        let (_dir, conn) = new_db();
        conn.raw.execute(
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
    fn corrupt_json_read_by_pages_and_api_names_the_row() {
        let (_dir, conn) = new_db();
        conn.raw
            .execute_batch("INSERT INTO workers(name, info) VALUES ('w', '{\"host\": ')")
            .unwrap();
        let err = worker_list(&conn).unwrap_err().to_string();
        assert!(
            err.contains("corrupt JSON in workers 1, column info"),
            "{err}"
        );
        let workers = api::resource("workers").unwrap();
        let spec = api::Spec::default();
        match api::collection(&conn, workers, None, &spec) {
            Err(api::ApiError::Internal(e)) => {
                assert!(e.contains("corrupt JSON in workers 1, column info"), "{e}")
            }
            other => panic!("expected an error naming the row, got {other:?}"),
        }
    }

    #[test]
    fn unknown_result_code_is_an_error_naming_the_row() {
        let (_dir, conn) = new_db();
        conn.raw
            .execute_batch(
                "INSERT INTO builders(builderid, name) VALUES (1, 'b');
                 INSERT INTO buildsets(buildsetid, reason, submitted_at) VALUES (1, 'r', 0);
                 INSERT INTO buildrequests(buildrequestid, buildsetid, builderid, submitted_at)
                   VALUES (1, 1, 1, 0);
                 INSERT INTO builds(buildid, number, builderid, buildrequestid, started_at,
                   complete_at, results) VALUES (7, 1, 1, 1, 0, 1, 9);",
            )
            .unwrap();
        let err = build_by_id(&conn, BuildId(7)).unwrap_err().to_string();
        assert!(
            err.contains("unknown result code 9 in builds 7, column results"),
            "{err}"
        );
        let err = build_report(&conn, BuildId(7)).unwrap_err().to_string();
        assert!(err.contains("builds 7"), "{err}");
    }

    #[test]
    fn release_memory_keeps_one_idle_reader_and_the_store_working() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        create(&path).unwrap();
        let store = Store::open(&path).unwrap();
        store
            .write(|c| {
                Ok(c.raw
                    .execute("INSERT INTO builders(name) VALUES ('b')", [])?)
            })
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
            .write(|c| {
                Ok(c.raw
                    .execute("INSERT INTO builders(name) VALUES ('c')", [])?)
            })
            .unwrap();
        let n = count_builders(&store);
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
