//! The janitor: prunes old builds and build logs so that a small disk quota
//! never fills up (SPEC §6, `[janitor]` in `master.cfg`).
//!
//! Owns: one thread, "janitor", started by `master::run` through [`spawn`].
//! It sleeps on a crossbeam `after` timer: the first run comes
//! [`FIRST_RUN`] after start, then one every `janitor.interval_hours`. The
//! config is re-read from the shared config before each run, so a reconfig
//! applies from the next run. Dropping the [`Janitor`] handle disconnects
//! its stop channel, which wakes the thread and ends it (between two
//! batches when it is pruning); the drop then joins it.
//!
//! A run ([`run_once`]) does two things:
//! 1. Builds that finished more than `build_horizon_days` ago are deleted
//!    with their steps, log rows and log files; build requests, buildsets
//!    (with their `buildset_changes`) and changes go too once nothing refers
//!    to them any more. The newest build of each builder is always kept, so
//!    that build numbers (MAX + 1) never start again at 1 and the builder
//!    keeps its last result. Changes that never started a build are kept.
//! 2. Log files of builds that finished more than `log_horizon_days` ago are
//!    deleted; their rows stay (the API shows the log with its `num_lines`,
//!    `/raw` answers an empty text). Log files whose build is no longer in
//!    the database (a crash between a delete's commit and the file
//!    removal) are deleted too, in the flat layout and in the per-build
//!    directories older versions wrote (`db::log_path`).
//!
//! 3. Artifacts (`artifacts/<buildid>/`, issue 20) go with their build
//!    (step 1), and those of builds that finished more than
//!    `artifact_horizon_days` ago go alone (rows and files; the builds
//!    stay). Artifact directories of builds no longer in the database, or
//!    of finished builds without artifact rows, and partial uploads older
//!    than a day (a master killed mid-upload) are removed too.
//!
//! Candidates are found on a read-only connection lent by the store; the
//! deletes go through `Store::write` in batches of at most [`BATCH`]
//! builds, smaller while a batch takes longer than [`SLOW_WRITE`], so the
//! writer is never held for long and hooks keep being answered while a
//! large backlog is pruned. Files are removed only after their rows are
//! committed. Everything it removed is logged at info level.

use crate::config::JanitorCfg;
use crate::config::LiveConfig;
use crate::db::{self, Store};
use crate::model::BuildId;
use anyhow::{Context, Result};
use crossbeam_channel::{after, select, Receiver, Sender, TryRecvError};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Delay of the first run: out of the way of start-up (crash recovery,
/// workers reconnecting), yet soon enough that a restart is a way to prune.
pub(crate) const FIRST_RUN: Duration = Duration::from_secs(3);
/// Most builds deleted per write transaction.
pub(crate) const BATCH: usize = 100;
/// A delete transaction longer than this halves the next batch: hooks wait
/// for the writer while it runs. (Deleting a buildset or change makes
/// SQLite scan the tables that refer to it without an index:
/// `buildrequests.buildsetid`, `buildset_changes.changeid`.)
const SLOW_WRITE: Duration = Duration::from_millis(50);
const DAY: i64 = 86_400;

/// Handle of the janitor thread; dropping it stops and joins the thread.
pub(crate) struct Janitor {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Janitor {
    /// Tells the thread to stop, without waiting for it (the drop waits):
    /// so that a stopping master wakes its threads together and waits
    /// once, not once per thread in turn.
    pub(crate) fn signal_stop(&mut self) {
        // Disconnecting is the stop signal.
        self.stop.take();
    }
}

impl Drop for Janitor {
    fn drop(&mut self) {
        self.signal_stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the janitor thread for the master in `master_dir`.
pub(crate) fn spawn(store: Store, cfg: LiveConfig, master_dir: PathBuf) -> Result<Janitor> {
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let thread = std::thread::Builder::new()
        .name("janitor".into())
        .stack_size(256 * 1024)
        .spawn(move || thread_main(&store, &cfg, &master_dir, &stop_rx))
        .context("could not start the janitor thread")?;
    Ok(Janitor {
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

fn thread_main(store: &Store, cfg: &LiveConfig, master_dir: &Path, stop: &Receiver<()>) {
    let mut wait = FIRST_RUN;
    loop {
        select! {
            recv(stop) -> _ => return,
            recv(after(wait)) -> _ => {}
        }
        let jcfg = cfg.current().janitor.clone();
        let stopping = || !matches!(stop.try_recv(), Err(TryRecvError::Empty));
        match run_once(store, master_dir, &jcfg, crate::model::now(), &stopping) {
            Ok(p) => {
                p.log(&jcfg);
                super::status::janitor_ran(&p);
            }
            Err(e) => log::error!("janitor: {e:#}"),
        }
        wait = Duration::from_secs(u64::from(jcfg.interval_hours.max(1)) * 3600);
    }
}

/// What one run removed; also `status.json`'s `last_janitor_run`, so a
/// renamed field changes that file (docs/operations.md).
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Pruned {
    /// Rows deleted, per table (flat in `status.json`, as documented).
    #[serde(flatten)]
    pub rows: db::PruneCounts,
    /// Bytes of log files removed with the deleted builds.
    pub build_bytes: u64,
    /// Builds whose log files were removed by the log horizon.
    pub log_builds: u64,
    pub log_bytes: u64,
    /// Builds no longer in the database whose log files were still on disk.
    pub orphan_dirs: u64,
    /// Builds whose artifacts were removed by the artifact horizon, and
    /// the bytes of artifacts removed (with deleted builds too).
    pub artifact_builds: u64,
    pub artifact_bytes: u64,
}

impl Pruned {
    fn log(&self, cfg: &JanitorCfg) {
        if self.rows.builds > 0 || self.rows.buildrequests > 0 {
            log::info!(
                "janitor: deleted {} builds finished more than {} days ago, with {} steps, {} logs \
                 and {} of log files; {} build requests, {} buildsets and {} changes went with them",
                self.rows.builds,
                cfg.build_horizon_days,
                self.rows.steps,
                self.rows.logs,
                human_bytes(self.build_bytes),
                self.rows.buildrequests,
                self.rows.buildsets,
                self.rows.changes
            );
        }
        if self.log_builds > 0 {
            log::info!(
                "janitor: deleted the log files of {} builds finished more than {} days ago ({}); \
                 the builds and steps stay, their logs now read as empty",
                self.log_builds,
                cfg.log_horizon_days,
                human_bytes(self.log_bytes)
            );
        }
        if self.artifact_builds > 0 {
            log::info!(
                "janitor: deleted the artifacts of {} builds finished more than {} days ago ({} in all)",
                self.artifact_builds,
                cfg.artifact_horizon_days,
                human_bytes(self.artifact_bytes)
            );
        }
        if self.orphan_dirs > 0 {
            log::info!(
                "janitor: deleted the log files of {} builds no longer in the database",
                self.orphan_dirs
            );
        }
        if *self == Pruned::default() {
            log::debug!("janitor: nothing to prune");
        }
    }
}

/// "1.5 MB": for log lines, in decimal units as `du -h --si` shows them.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} bytes")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// One janitor run at time `now` (Unix seconds). `stopping` is polled
/// between batches; when it turns true the run ends early (what was done
/// is committed and reported).
pub(crate) fn run_once(
    store: &Store,
    master_dir: &Path,
    cfg: &JanitorCfg,
    now: i64,
    stopping: &dyn Fn() -> bool,
) -> Result<Pruned> {
    let mut p = Pruned::default();
    if cfg.build_horizon_days == 0 && cfg.log_horizon_days == 0 && cfg.artifact_horizon_days == 0 {
        return Ok(p);
    }
    let reader = store.reader()?;
    if cfg.build_horizon_days > 0 {
        let cutoff = now - i64::from(cfg.build_horizon_days) * DAY;
        prune_builds(store, &reader, master_dir, cutoff, stopping, &mut p)?;
    }
    // Also with log_horizon_days = 0: orphaned directories are garbage.
    let log_cutoff =
        (cfg.log_horizon_days > 0).then(|| now - i64::from(cfg.log_horizon_days) * DAY);
    prune_log_files(&reader, master_dir, log_cutoff, stopping, &mut p)?;
    let artifact_cutoff =
        (cfg.artifact_horizon_days > 0).then(|| now - i64::from(cfg.artifact_horizon_days) * DAY);
    prune_artifacts(
        store,
        &reader,
        master_dir,
        artifact_cutoff,
        now,
        stopping,
        &mut p,
    )?;
    Ok(p)
}

/// Artifacts past the horizon (rows, then files), then what is on disk
/// without a row: directories of builds gone or finished without
/// artifacts, and partial uploads older than a day.
fn prune_artifacts(
    store: &Store,
    reader: &db::Conn,
    master_dir: &Path,
    cutoff: Option<i64>,
    now: i64,
    stopping: &dyn Fn() -> bool,
    p: &mut Pruned,
) -> Result<()> {
    if let Some(cutoff) = cutoff {
        let builds = |last, limit| db::expired_artifact_builds(reader, cutoff, last, limit);
        in_batches(builds, stopping, |batch| {
            let t = Instant::now();
            let ids = batch.clone();
            let n = store.write(move |c| db::delete_build_artifacts(c, &ids))?;
            let took = t.elapsed();
            p.rows.artifacts += n;
            p.artifact_builds += batch.len() as u64;
            for id in batch {
                p.artifact_bytes += remove_tree(&db::artifact_dir(master_dir, id));
            }
            Ok(took)
        })?;
    }
    let root = db::artifact_root(master_dir);
    let entries = match std::fs::read_dir(&root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", root.display())),
    };
    let mut on_disk: Vec<BuildId> = vec![];
    for e in entries.filter_map(|e| e.ok()) {
        let name = e.file_name();
        match name.to_str().and_then(|n| n.parse::<i64>().ok()) {
            Some(id) => on_disk.push(BuildId(id)),
            None if name == ".partial" => remove_stale_partials(&e.path(), now),
            None => {}
        }
    }
    for chunk in on_disk.chunks(500) {
        if stopping() {
            return Ok(());
        }
        let known = db::builds_complete_at(reader, chunk)?;
        let with_rows = db::builds_with_artifacts(reader, chunk)?;
        for &id in chunk {
            // A running build's file is renamed into place just before its
            // row is written: only finished builds count as without rows.
            let orphan = match known.get(&id) {
                None => true,
                Some(Some(_)) => !with_rows.contains(&id),
                Some(None) => false,
            };
            if orphan {
                p.artifact_bytes += remove_tree(&db::artifact_dir(master_dir, id));
                p.orphan_dirs += 1;
            }
        }
    }
    Ok(())
}

/// Partial uploads (`artifacts/.partial/`) untouched for a day: left by a
/// master that died mid-upload (a live upload writes every moment).
fn remove_stale_partials(dir: &Path, now: i64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.filter_map(|e| e.ok()) {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .is_some_and(|t| (t.as_secs() as i64) < now - DAY);
        if old {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Removes a directory tree; returns the bytes of the files in it.
fn remove_tree(dir: &Path) -> u64 {
    fn size(p: &Path) -> u64 {
        match std::fs::symlink_metadata(p) {
            Ok(m) if m.is_dir() => std::fs::read_dir(p)
                .map(|d| d.filter_map(|e| e.ok()).map(|e| size(&e.path())).sum())
                .unwrap_or(0),
            Ok(m) => m.len(),
            Err(_) => 0,
        }
    }
    let n = size(dir);
    match std::fs::remove_dir_all(dir) {
        Ok(()) => n,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => {
            log::warn!("janitor: could not remove {}: {e}", dir.display());
            0
        }
    }
}

fn prune_builds(
    store: &Store,
    reader: &db::Conn,
    master_dir: &Path,
    cutoff: i64,
    stopping: &dyn Fn() -> bool,
    p: &mut Pruned,
) -> Result<()> {
    let builds = |last, limit| db::prunable_builds(reader, cutoff, last, limit);
    in_batches(builds, stopping, |batch| {
        let t = Instant::now();
        let (counts, deleted) = store.write(move |c| db::delete_old(c, cutoff, &batch, &[]))?;
        let took = t.elapsed();
        p.rows.add(&counts);
        for (id, logids) in deleted {
            let mut paths = vec![db::legacy_log_dir(master_dir, id)];
            paths.extend(logids.iter().map(|&l| db::new_log_path(master_dir, id, l)));
            p.build_bytes += remove_paths(&paths);
            p.artifact_bytes += remove_tree(&db::artifact_dir(master_dir, id));
        }
        Ok(took)
    })?;
    // Requests that completed without any build left (all pruned, or never
    // built), older than the horizon.
    let requests = |last, limit| db::prunable_requests(reader, cutoff, last, limit);
    in_batches(requests, stopping, |batch| {
        let t = Instant::now();
        let (counts, _) = store.write(move |c| db::delete_old(c, cutoff, &[], &batch))?;
        p.rows.add(&counts);
        Ok(t.elapsed())
    })
}

/// Runs `each` on the ids `fetch(last id, limit)` yields, a
/// batch at a time in increasing order, until none are left or
/// `stopping()`. Asking for ids above the last batch's guarantees progress
/// even when the writer turns a candidate down. `each` returns how long its
/// write took; the batch shrinks (down to one build) while writes take
/// longer than [`SLOW_WRITE`] and grows back (up to [`BATCH`]) when they
/// are quick, so the writer is never held long, whatever the table sizes.
fn in_batches<T: Copy + Ord + Default>(
    fetch: impl Fn(T, i64) -> Result<Vec<T>>,
    stopping: &dyn Fn() -> bool,
    mut each: impl FnMut(Vec<T>) -> Result<Duration>,
) -> Result<()> {
    let mut last = T::default();
    // Small at first: the cost of a batch is only known once one ran.
    let mut limit = 8;
    while !stopping() {
        let batch = fetch(last, limit as i64)?;
        let Some(&max) = batch.iter().max() else {
            break;
        };
        last = max;
        let took = each(batch)?;
        if took > SLOW_WRITE {
            limit = (limit / 2).max(1);
        } else if took < SLOW_WRITE / 4 {
            limit = (limit * 2).min(BATCH);
        }
    }
    Ok(())
}

/// Bytes in the files directly inside `dir` (older per-build log
/// directories are flat).
fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Removes log files and (older minibots') per-build log directories;
/// the ones already gone are skipped. Returns the bytes freed.
fn remove_paths(paths: &[PathBuf]) -> u64 {
    let mut freed = 0;
    for path in paths {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            continue;
        };
        let (size, removed) = if meta.is_dir() {
            (dir_size(path), std::fs::remove_dir_all(path))
        } else {
            (meta.len(), std::fs::remove_file(path))
        };
        match removed {
            Ok(()) => freed += size,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("janitor: could not remove {}: {e}", path.display()),
        }
    }
    freed
}

/// Walks the log files on disk (what is still there, however many builds
/// the database holds) and removes those of builds past the log horizon or
/// without a build, in either layout (`db::log_path`).
fn prune_log_files(
    reader: &db::Conn,
    master_dir: &Path,
    cutoff: Option<i64>,
    stopping: &dyn Fn() -> bool,
    p: &mut Pruned,
) -> Result<()> {
    let root = db::log_root(master_dir);
    let entries = match std::fs::read_dir(&root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", root.display())),
    };
    // Listed before the query: a build's row is committed before its log
    // files are made, so a file listed here whose build the query does not
    // find was deleted.
    let mut by_build: std::collections::BTreeMap<BuildId, Vec<PathBuf>> = Default::default();
    for e in entries.filter_map(|e| e.ok()) {
        let Some(id) = e.file_name().to_str().and_then(db::log_entry_build) else {
            continue;
        };
        by_build.entry(id).or_default().push(e.path());
    }
    let on_disk: Vec<BuildId> = by_build.keys().copied().collect();
    for chunk in on_disk.chunks(500) {
        if stopping() {
            return Ok(());
        }
        let known = db::builds_complete_at(reader, chunk)?;
        for &id in chunk {
            let paths = by_build.get(&id).map_or(&[][..], Vec::as_slice);
            match (known.get(&id), cutoff) {
                (None, _) => {
                    remove_paths(paths);
                    p.orphan_dirs += 1;
                }
                (Some(Some(done)), Some(cut)) if *done < cut => {
                    p.log_bytes += remove_paths(paths);
                    p.log_builds += 1;
                }
                _ => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{Props, SourceStamp};
    use crate::model::NewChange;

    struct Fixture {
        dir: tempfile::TempDir,
        store: Store,
        now: i64,
    }

    /// Ids of one finished build and what it hangs on.
    #[derive(Debug, Clone, Copy)]
    struct Built {
        build: BuildId,
        request: crate::model::RequestId,
        buildset: crate::model::BuildsetId,
        change: crate::model::ChangeId,
        log: crate::model::LogId,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let db = dir.path().join("state.sqlite");
            db::create(&db).unwrap();
            let store = Store::open(&db).unwrap();
            store
                .write(|c| {
                    c.sql().execute_batch(
                        "INSERT INTO builders(name) VALUES ('a'), ('b');
                         INSERT INTO workers(name) VALUES ('w');",
                    )?;
                    Ok(())
                })
                .unwrap();
            Fixture {
                dir,
                store,
                now: crate::model::now(),
            }
        }

        fn master(&self) -> &Path {
            self.dir.path()
        }

        /// A change, its buildset and request, and one build of `builder`
        /// that finished `age_days` ago with a 1000-byte log file. With
        /// `request`, the build retries that request instead.
        fn build(&self, builder: &str, age_days: i64, request: Option<Built>) -> Built {
            let t = self.now - age_days * DAY;
            let builder = builder.to_string();
            let b = self
                .store
                .write(move |c| {
                    let (change, buildset, request, builderid) = match request {
                        Some(r) => {
                            c.sql().execute(
                                "UPDATE buildrequests SET claimed_at = NULL, complete = 0
                                 WHERE buildrequestid = ?1",
                                [r.request],
                            )?;
                            let bid: crate::model::BuilderId = c.sql().query_row(
                                "SELECT builderid FROM builders WHERE name = ?1",
                                [&builder],
                                |r| r.get(0),
                            )?;
                            (r.change, r.buildset, r.request, bid)
                        }
                        None => {
                            let ch = NewChange {
                                author: "a".into(),
                                comments: "c".into(),
                                repository: "r".into(),
                                when_timestamp: t,
                                ..Default::default()
                            };
                            let change = db::insert_changes(c, &[ch], None)?[0];
                            c.sql().execute("UPDATE changes SET scheduled = 1 WHERE changeid = ?1", [change])?;
                            let (bs, reqs) = db::create_buildset(
                                c,
                                "test",
                                Some("s"),
                                &SourceStamp::default(),
                                &Props::new(),
                                &[change],
                                std::slice::from_ref(&builder),
                            )?;
                            (change, bs, reqs[0].1, reqs[0].0)
                        }
                    };
                    let (build, _) = db::claim_and_create_build(
                        c,
                        request,
                        builderid,
                        "w",
                        &mut Props::new(),
                        &[],
                    )?
                    .ok_or_else(|| anyhow::anyhow!("not claimed"))?;
                    let (step, log) = db::start_step(c, build, 0, "test")?;
                    db::finish_step(c, step, crate::model::BuildResult::Success, "done")?;
                    db::finish_build(c, build, crate::model::BuildResult::Success, "finished")?;
                    c.sql().execute(
                        "UPDATE builds SET started_at = ?2, complete_at = ?2 WHERE buildid = ?1",
                        rusqlite::params![build, t],
                    )?;
                    c.sql().execute(
                        "UPDATE buildrequests SET submitted_at = ?2, complete_at = ?2
                         WHERE buildrequestid = ?1",
                        rusqlite::params![request, t],
                    )?;
                    c.sql().execute(
                        "UPDATE buildsets SET submitted_at = ?2, complete_at = ?2 WHERE buildsetid = ?1",
                        rusqlite::params![buildset, t],
                    )?;
                    Ok(Built {
                        build,
                        request,
                        buildset,
                        change,
                        log,
                    })
                })
                .unwrap();
            let path = db::log_path(self.master(), b.build, b.log);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, "o".repeat(999) + "\n").unwrap();
            b
        }

        fn run(&self, build_days: u32, log_days: u32) -> Pruned {
            let cfg = JanitorCfg {
                build_horizon_days: build_days,
                log_horizon_days: log_days,
                artifact_horizon_days: 0,
                interval_hours: 24,
            };
            run_once(&self.store, self.master(), &cfg, self.now, &|| false).unwrap()
        }

        fn count(&self, sql: &str) -> i64 {
            let r = self.store.reader().unwrap();
            r.sql().query_row(sql, [], |row| row.get(0)).unwrap()
        }

        fn exists(&self, table: &str, col: &str, id: impl std::fmt::Display) -> bool {
            self.count(&format!("SELECT count(*) FROM {table} WHERE {col} = {id}")) > 0
        }

        fn log_file(&self, b: Built) -> PathBuf {
            db::log_path(self.master(), b.build, b.log)
        }

        /// Moves `b`'s log where older minibots wrote it (a directory per
        /// build); returns that directory.
        fn to_legacy_layout(&self, b: Built) -> PathBuf {
            let dir = db::legacy_log_dir(self.master(), b.build);
            std::fs::create_dir_all(&dir).unwrap();
            let old = dir.join(format!("{}.log", b.log));
            std::fs::rename(self.log_file(b), &old).unwrap();
            assert_eq!(self.log_file(b), old);
            dir
        }
    }

    #[test]
    fn old_builds_go_with_what_only_they_used() {
        let f = Fixture::new();
        let old1 = f.build("a", 200, None);
        let old2 = f.build("a", 190, None);
        let old2_dir = f.to_legacy_layout(old2);
        let recent = f.build("a", 10, None);
        // Builder b's only build is old, but it is its newest: kept.
        let last_of_b = f.build("b", 400, None);
        // old2's change is also held by a tree-stable timer.
        f.store
            .write(move |c| {
                c.sql().execute(
                    "INSERT INTO scheduler_changes(scheduler, changeid) VALUES ('s', ?1)",
                    [old2.change],
                )?;
                Ok(())
            })
            .unwrap();

        let p = f.run(180, 0);
        assert_eq!(
            (
                p.rows.builds,
                p.rows.steps,
                p.rows.logs,
                p.rows.buildrequests,
                p.rows.buildsets
            ),
            (2, 2, 2, 2, 2),
            "{p:?}"
        );
        assert_eq!(p.rows.changes, 1, "the held change stays: {p:?}");
        assert_eq!(p.build_bytes, 2000);
        for b in [old1, old2] {
            assert!(!f.exists("builds", "buildid", b.build));
            assert!(!f.exists("buildrequests", "buildrequestid", b.request));
            assert!(!f.exists("buildsets", "buildsetid", b.buildset));
            assert!(!f.exists("buildset_changes", "buildsetid", b.buildset));
            assert!(!f.exists("logs", "logid", b.log));
            assert!(!f.log_file(b).exists());
        }
        assert!(!old2_dir.exists());
        assert!(!f.exists("changes", "changeid", old1.change));
        assert!(f.exists("changes", "changeid", old2.change));
        for b in [recent, last_of_b] {
            assert!(f.exists("builds", "buildid", b.build));
            assert!(f.exists("buildsets", "buildsetid", b.buildset));
            assert!(f.exists("changes", "changeid", b.change));
            assert!(f.log_file(b).exists());
        }
        // Nothing dangles.
        assert_eq!(
            f.count(
                "SELECT count(*) FROM buildset_changes bc WHERE NOT EXISTS
                 (SELECT 1 FROM changes c WHERE c.changeid = bc.changeid)"
            ),
            0
        );
        assert_eq!(
            f.run(180, 0),
            Pruned::default(),
            "a second run finds nothing"
        );
    }

    #[test]
    fn a_retried_request_stays_while_its_newer_build_does() {
        let f = Fixture::new();
        let first = f.build("a", 300, None);
        let retry = f.build("a", 5, Some(first));
        f.build("a", 1, None);
        let p = f.run(180, 0);
        assert_eq!(
            (p.rows.builds, p.rows.buildrequests, p.rows.buildsets),
            (1, 0, 0),
            "{p:?}"
        );
        assert!(f.exists("buildrequests", "buildrequestid", first.request));
        assert!(f.exists("builds", "buildid", retry.build));
        assert!(f.exists("changes", "changeid", first.change));
    }

    /// A request skipped in favour of a build points at that build
    /// (`collapsed_into`, a foreign key): pruning the build must not fail
    /// on it, whether or not the skipped request goes in the same run.
    #[test]
    fn a_build_that_covered_a_skipped_request_is_pruned() {
        let f = Fixture::new();
        let covering = f.build("a", 200, None);
        let skipped = f.build("a", 30, None);
        f.build("a", 1, None);
        f.store
            .write(move |c| {
                c.sql().execute(
                    "UPDATE buildrequests SET collapsed_into = ?1 WHERE buildrequestid = ?2",
                    rusqlite::params![covering.build, skipped.request],
                )?;
                Ok(())
            })
            .unwrap();
        let p = f.run(180, 0);
        assert_eq!((p.rows.builds, p.rows.buildrequests), (1, 1), "{p:?}");
        assert!(!f.exists("builds", "buildid", covering.build));
        assert!(f.exists("buildrequests", "buildrequestid", skipped.request));
        assert_eq!(
            f.count("SELECT count(*) FROM buildrequests WHERE collapsed_into IS NOT NULL"),
            0
        );
    }

    #[test]
    fn log_horizon_removes_files_and_keeps_rows() {
        let f = Fixture::new();
        let old = f.build("a", 40, None);
        let old_legacy = f.build("a", 41, None);
        let old_legacy_dir = f.to_legacy_layout(old_legacy);
        let recent = f.build("a", 2, None);
        let recent_legacy = f.build("a", 3, None);
        f.to_legacy_layout(recent_legacy);
        // Logs of builds the database does not know (a crash after a
        // delete's commit), in both layouts: removed as well.
        let orphan = db::log_root(f.master()).join("99999");
        std::fs::create_dir_all(&orphan).unwrap();
        std::fs::write(orphan.join("1.log"), "ox\n").unwrap();
        let orphan_file = db::new_log_path(f.master(), BuildId(99998), crate::model::LogId(7));
        std::fs::write(&orphan_file, "ox\n").unwrap();
        // Not a build's log: left alone.
        std::fs::write(db::log_root(f.master()).join("README"), "keep").unwrap();

        let p = f.run(0, 30);
        assert_eq!(
            (p.log_builds, p.log_bytes, p.orphan_dirs),
            (2, 2000, 2),
            "{p:?}"
        );
        assert_eq!(p.rows.builds, 0);
        assert!(!f.log_file(old).exists());
        assert!(!old_legacy_dir.exists());
        assert!(f.log_file(recent).exists());
        assert!(f.log_file(recent_legacy).exists());
        assert!(!orphan.exists());
        assert!(!orphan_file.exists());
        assert!(db::log_root(f.master()).join("README").exists());
        // The rows stay, with their line counts.
        assert!(f.exists("builds", "buildid", old.build));
        assert!(f.exists("logs", "logid", old.log));
        assert_eq!(f.run(0, 30), Pruned::default());
    }

    #[test]
    fn horizons_of_zero_keep_everything() {
        let f = Fixture::new();
        let old = f.build("a", 5000, None);
        f.build("a", 4000, None);
        assert_eq!(f.run(0, 0), Pruned::default());
        assert!(f.log_file(old).exists());
        assert!(f.exists("builds", "buildid", old.build));
    }

    #[test]
    fn batches_and_stopping() {
        let f = Fixture::new();
        let n = BATCH + 20;
        for _ in 0..n {
            f.build("a", 365, None);
        }
        f.build("a", 0, None);
        let cfg = JanitorCfg::default();
        // Asked to stop: nothing is done.
        let p = run_once(&f.store, f.master(), &cfg, f.now, &|| true).unwrap();
        assert_eq!(p, Pruned::default());
        let p = f.run(180, 30);
        assert_eq!(p.rows.builds, n as u64, "{p:?}");
        assert_eq!(f.count("SELECT count(*) FROM builds"), 1);
        assert_eq!(f.count("SELECT count(*) FROM changes"), 1);
    }

    #[test]
    fn thread_stops_when_dropped() {
        let f = Fixture::new();
        let cfg = LiveConfig::new(crate::config::parse(crate::config::SAMPLE, "sample").unwrap());
        let j = spawn(f.store.clone(), cfg, f.master().to_path_buf()).unwrap();
        // Returns at once: the stop channel wakes the thread from its timer
        // (a janitor ignoring it would hang this test).
        drop(j);
    }

    #[test]
    fn bytes_for_humans() {
        assert_eq!(human_bytes(999), "999 bytes");
        assert_eq!(human_bytes(1500), "1.5 kB");
        assert_eq!(human_bytes(85_000_000_000), "85.0 GB");
    }
}
