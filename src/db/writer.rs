//! The writer thread: the one connection that writes, the job enum it
//! receives, group commit (every waiting job in one transaction, each in
//! its own savepoint), and handing each caller its result after COMMIT.
//!
//! A batch is all or nothing: when `BEGIN IMMEDIATE` fails (another
//! process held the write lock past the busy timeout) no job of the batch
//! runs, and when SQLite itself ends the transaction mid-batch (it rolls
//! back on `SQLITE_FULL`, `SQLITE_IOERR`, ...) the jobs after that are not
//! run either. Run outside a transaction, each job's statements would
//! commit one by one while its caller heard "failed" (issue 16, point 1).

use super::Tx;
use anyhow::{anyhow, Result};
use crossbeam_channel::{Receiver, Sender};
use rusqlite::Connection;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// Work for the writer thread: given the group transaction, runs inside it
/// and returns the completion to call once the transaction's fate is known;
/// given the reason there is no transaction, runs nothing and returns a
/// completion that fails.
pub(super) type Job = Box<dyn FnOnce(Result<&Tx, &str>) -> Completion + Send>;
type Completion = Box<dyn FnOnce(Result<(), String>) + Send>;

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

fn run_in_savepoint<R>(tx: &Tx, f: impl FnOnce(&Tx) -> Result<R>) -> Result<R> {
    let conn = &tx.raw;
    control(conn, "SAVEPOINT job")?;
    match f(tx) {
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

/// Runs until every Store handle is dropped or, after a batch, `stop` is
/// set (`Store::close`); returns its connection, still open. After a batch
/// that finds `checkpoint` set (`Store::release_memory`: the master has
/// gone quiet) it checkpoints the WAL ([`checkpoint`]).
pub(super) fn writer_loop(
    tx: Tx,
    rx: Receiver<Job>,
    stop: &AtomicBool,
    checkpoint_wanted: &AtomicBool,
) -> Tx {
    let conn = &tx.raw;
    conn.set_prepared_statement_cache_capacity(WRITER_STATEMENTS);
    while !stop.load(Ordering::SeqCst) {
        let Ok(first) = rx.recv() else { break };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let mut completions: Vec<Completion> = Vec::with_capacity(batch.len());
        let commit = match control(conn, "BEGIN IMMEDIATE") {
            Err(e) => {
                let why = format!("BEGIN failed, nothing was written: {e}");
                completions.extend(batch.into_iter().map(|job| job(Err(&why))));
                Err(why)
            }
            Ok(()) => {
                let mut lost: Option<String> = None;
                for job in batch {
                    match &lost {
                        Some(why) => completions.push(job(Err(why))),
                        None => {
                            completions.push(job(Ok(&tx)));
                            // SQLite rolled the whole transaction back
                            // (disk full, I/O error): what ran is undone,
                            // and what follows would run in autocommit.
                            if conn.is_autocommit() {
                                lost = Some(
                                    "the transaction was rolled back by SQLite \
                                     (disk full or I/O error), nothing was written"
                                        .to_string(),
                                );
                            }
                        }
                    }
                }
                match lost {
                    Some(why) => Err(why),
                    None => control(conn, "COMMIT").map_err(|e| e.to_string()),
                }
            }
        };
        if let Err(e) = &commit {
            log::error!("store: transaction failed: {e}");
            if !conn.is_autocommit() {
                let _ = control(conn, "ROLLBACK");
            }
        }
        for c in completions {
            c(commit.clone());
        }
        if checkpoint_wanted.swap(false, Ordering::SeqCst) {
            checkpoint(conn);
        }
    }
    log::debug!("store thread exiting");
    tx
}

/// Copies the WAL into the database and truncates it to nothing
/// (`wal_checkpoint(TRUNCATE)`), outside any transaction, on the writer's
/// connection: between batches, so no write waits on it but the next.
/// Every start reads back the WAL it finds (up to the ~4 MB at which
/// SQLite's automatic checkpoint restarts it): 6–10 ms of a start after
/// a busy day instead of ~4 ms with it empty. It also makes the commits so
/// far durable against a power loss (it fsyncs the WAL, then the
/// database) and gives back the WAL's disk space. A reader still on an old
/// snapshot makes it wait (the busy timeout) or give up; the next quiet
/// moment tries again.
fn checkpoint(conn: &Connection) {
    let t = std::time::Instant::now();
    match conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
    }) {
        Ok((0, frames)) => {
            log::debug!(
                "store: checkpointed {frames} WAL frames in {:?}",
                t.elapsed()
            )
        }
        Ok((_, frames)) => {
            log::debug!("store: checkpoint of {frames} WAL frames blocked by a reader")
        }
        Err(e) => log::warn!("store: checkpoint: {e}"),
    }
}

/// Sends `f` to the writer thread and waits for its result, which comes
/// only once its transaction has committed (see `Store::write`).
pub(super) fn submit<R, F>(tx: &Sender<Job>, f: F) -> Result<R>
where
    R: Send + 'static,
    F: FnOnce(&Tx) -> Result<R> + Send + 'static,
{
    let reply = Arc::new(Reply::default());
    let answer = Answer(Some(reply.clone()));
    let job: Job = Box::new(move |conn| {
        let res = match conn {
            Ok(conn) => run_in_savepoint(conn, f),
            // Not run: its commit result below is the error.
            Err(_) => Err(anyhow!("not run")),
        };
        Box::new(move |commit: Result<(), String>| {
            answer.send(match commit {
                Ok(()) => res,
                Err(e) => Err(anyhow!("commit failed: {e}")),
            });
        })
    });
    tx.send(job)
        .map_err(|_| anyhow!("the store thread has stopped"))?;
    reply.wait()
}

/// Wakes the writer without waiting for it: a job that writes nothing and
/// answers nobody. `Store::close` sets the stop flag first, so the writer
/// ends after the batch holding this job, and the caller joins it; waiting
/// for an answer as well would cost the stop a second thread switch.
pub(super) fn wake(tx: &Sender<Job>) {
    let _ = tx.send(Box::new(|_| Box::new(|_| {})));
}

impl Tx {
    /// Fails when SQLite has rolled back the transaction this job runs in
    /// (disk full, I/O error): a job that goes on after one of its writes
    /// failed calls this first, or its next statements would run, and
    /// commit, on their own.
    pub(crate) fn check_intact(&self) -> Result<()> {
        if self.raw.is_autocommit() {
            return Err(anyhow!(
                "the transaction was rolled back by SQLite (disk full or I/O error)"
            ));
        }
        Ok(())
    }
}
