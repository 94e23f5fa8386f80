//! The scheduler thread driven by a clock the test moves by hand: a burst
//! of changes collapses into one buildset after the tree-stable timer,
//! periodic and nightly schedulers fire when the clock says so (and
//! nightly with only_if_changed skips a quiet day), change filters pick
//! changes, and all of it survives a restart of the thread on the same
//! real SQLite file. No sleeps: each step waits, with a deadline, for the
//! database to show the expected buildsets.

use crate::common::{sqlite_reader, wait_for};
use crossbeam_channel::{unbounded, Receiver, Sender};
use minibot::config::{self, Config};
use minibot::db::{self, Store};
use minibot::master::botmaster::BotMsg;
use minibot::master::scheduler::{self, civil_utc, Clock, SchedMsg};
use minibot::model::{ChangeId, NewChange};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct ManualClock(Mutex<f64>);

impl Clock for ManualClock {
    fn now(&self) -> f64 {
        *self.0.lock().unwrap()
    }
}

impl ManualClock {
    fn set(&self, t: f64) {
        *self.0.lock().unwrap() = t;
    }
}

/// 2024-06-03 (a Monday) 00:00:00 UTC.
const MON: f64 = 1_717_372_800.0;

const CFG: &str = r#"
[www]
port = 8010
[protocols.worker]
port = 9989
[[workers]]
name = "w"
password = "p"
[[builders]]
name = "b"
workers = ["w"]
[[builders]]
name = "docs"
workers = ["w"]
[[builders]]
name = "nightly"
workers = ["w"]
[[builders]]
name = "hourly"
workers = ["w"]
[[schedulers]]
name = "stable"
type = "single_branch"
branch = "master"
tree_stable_timer = 60
builders = ["b"]
[[schedulers]]
name = "docs"
type = "any_branch"
files_regex = "^docs/"
project = "isabell/hello-world"
builders = ["docs"]
[[schedulers]]
name = "nightly"
type = "nightly"
branch = "master"
hour = 3
only_if_changed = true
builders = ["nightly"]
[[schedulers]]
name = "hourly"
type = "periodic"
period = 3600
builders = ["hourly"]
"#;

struct Harness {
    _tmp: tempfile::TempDir,
    db: std::path::PathBuf,
    store: Store,
    cfg: Arc<Config>,
    clock: Arc<ManualClock>,
    tx: Sender<SchedMsg>,
    bot: Receiver<BotMsg>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Harness {
    fn new() -> Harness {
        let _ = env_logger::builder().is_test(true).try_init();
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("state.sqlite");
        db::create(&db).unwrap();
        let store = Store::open(&db).unwrap();
        let cfg = Arc::new(config::parse(CFG, "master.cfg").unwrap_or_else(|e| panic!("{e}")));
        let c2 = (*cfg).clone();
        store.write(move |c| db::sync_config(c, &c2)).unwrap();
        let clock = Arc::new(ManualClock(Mutex::new(MON)));
        let (tx, bot) = Harness::start(&store, &cfg, &clock);
        let (tx, bot, thread) = (tx.0, bot, Some(tx.1));
        Harness {
            _tmp: tmp,
            db,
            store,
            cfg,
            clock,
            tx,
            bot,
            thread,
        }
    }

    #[allow(clippy::type_complexity)]
    fn start(
        store: &Store,
        cfg: &Arc<Config>,
        clock: &Arc<ManualClock>,
    ) -> (
        (Sender<SchedMsg>, std::thread::JoinHandle<()>),
        Receiver<BotMsg>,
    ) {
        let (tx, rx) = unbounded();
        let (btx, brx) = unbounded();
        let h = scheduler::spawn_with_clock(
            store.clone(),
            cfg.clone(),
            rx,
            btx,
            clock.clone(),
            civil_utc,
        )
        .unwrap();
        ((tx, h), brx)
    }

    /// Stops the thread and starts a new one on the same database: a
    /// master restart as far as the scheduler is concerned.
    fn restart(&mut self) {
        let _ = self.tx.send(SchedMsg::Shutdown);
        self.thread.take().unwrap().join().unwrap();
        let ((tx, h), bot) = Harness::start(&self.store, &self.cfg, &self.clock);
        self.tx = tx;
        self.bot = bot;
        self.thread = Some(h);
        self.sync();
    }

    /// Returns once the thread has started and read the database: it
    /// classifies changes only after re-arming its timers, so a change that
    /// no scheduler wants is a marker.
    fn sync(&self) {
        let c = NewChange {
            branch: Some("sync".into()),
            project: "nobody".into(),
            category: Some("sync".into()),
            ..Default::default()
        };
        self.store
            .write(move |conn| db::insert_changes(conn, &[c], None))
            .unwrap();
        self.tx.send(SchedMsg::NewChanges).unwrap();
        self.settle();
    }

    fn at(&self, t: f64) {
        self.clock.set(t);
        self.tx.send(SchedMsg::Wake).unwrap();
    }

    fn change(&self, branch: &str, files: &[&str], rev: &str) -> ChangeId {
        let c = NewChange {
            author: "A <a@example.org>".into(),
            comments: "c".into(),
            branch: Some(branch.into()),
            revision: Some(rev.into()),
            repository: "ssh://git@git.example.org/isabell/hello-world.git".into(),
            project: "isabell/hello-world".into(),
            category: Some("push".into()),
            files: files.iter().map(|f| f.to_string()).collect(),
            ..Default::default()
        };
        let id = self
            .store
            .write(move |conn| db::insert_changes(conn, &[c], None))
            .unwrap()[0];
        self.tx.send(SchedMsg::NewChanges).unwrap();
        id
    }

    /// (scheduler, revision, number of changes) of every buildset, in order.
    fn buildsets(&self) -> Vec<(String, Option<String>, i64)> {
        let conn = sqlite_reader(&self.db);
        let mut st = conn
            .prepare(
                "SELECT scheduler, revision,
                   (SELECT count(*) FROM buildset_changes c WHERE c.buildsetid = b.buildsetid)
                 FROM buildsets b ORDER BY buildsetid",
            )
            .unwrap();
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    }

    fn wait_buildsets(&self, n: usize) -> Vec<(String, Option<String>, i64)> {
        wait_for(&format!("{n} buildsets"), Duration::from_secs(10), || {
            let b = self.buildsets();
            (b.len() >= n).then_some(b)
        })
    }

    /// Waits until every change is classified (the thread is idle again).
    fn settle(&self) {
        let conn = sqlite_reader(&self.db);
        wait_for("changes classified", Duration::from_secs(10), || {
            let n: i64 = conn
                .query_row(
                    "SELECT count(*) FROM changes WHERE scheduled = 0",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            (n == 0).then_some(())
        });
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = self.tx.send(SchedMsg::Shutdown);
        if let Some(h) = self.thread.take() {
            let _ = h.join();
        }
    }
}

fn count(sets: &[(String, Option<String>, i64)], sched: &str) -> usize {
    sets.iter().filter(|s| s.0 == sched).count()
}

#[test]
fn timers_filters_and_restart_with_a_manual_clock() {
    let mut h = Harness::new();
    // Periodic: never fired, so it fires at once (Buildbot's Periodic).
    let sets = h.wait_buildsets(1);
    assert_eq!(sets[0], ("hourly".into(), None, 0));
    assert!(matches!(
        h.bot.recv_timeout(Duration::from_secs(5)),
        Ok(BotMsg::RequestsAdded)
    ));

    // A burst on master: held by the tree-stable timer, which restarts with
    // each change. The docs scheduler builds only the change touching docs/.
    h.change("master", &["src/a.rs"], "r1");
    h.at(MON + 30.0);
    h.change("master", &["docs/x.md"], "r2");
    h.at(MON + 70.0); // 70 s after r1, but only 40 s after r2: still held
    h.change("master", &["src/b.rs"], "r3");
    h.settle();
    let sets = h.buildsets();
    assert_eq!(count(&sets, "stable"), 0, "{sets:?}");
    assert_eq!(count(&sets, "docs"), 1, "{sets:?}");
    assert!(
        sets.contains(&("docs".into(), Some("r2".into()), 1)),
        "{sets:?}"
    );

    // A restart while the changes are held: the timer is re-armed from the
    // table, nothing is lost or built twice.
    h.restart();
    h.at(MON + 70.0 + 59.0);
    h.settle();
    assert_eq!(count(&h.buildsets(), "stable"), 0);
    h.at(MON + 70.0 + 61.0);
    let sets = wait_for("the stable buildset", Duration::from_secs(10), || {
        let s = h.buildsets();
        (count(&s, "stable") == 1).then_some(s)
    });
    // One buildset for the whole burst, at its newest revision.
    assert!(
        sets.contains(&("stable".into(), Some("r3".into()), 3)),
        "{sets:?}"
    );

    // Periodic: an hour after its first fire; not before.
    h.at(MON + 3599.0);
    h.settle();
    assert_eq!(count(&h.buildsets(), "hourly"), 1);
    h.at(MON + 3600.0);
    wait_for("second hourly", Duration::from_secs(10), || {
        (count(&h.buildsets(), "hourly") == 2).then_some(())
    });

    // Nightly at 03:00 with only_if_changed: the master changes above
    // count, so it builds once, at the newest of them.
    h.at(MON + 3.0 * 3600.0);
    let sets = wait_for("nightly", Duration::from_secs(10), || {
        let s = h.buildsets();
        (count(&s, "nightly") == 1).then_some(s)
    });
    assert!(
        sets.contains(&("nightly".into(), Some("r3".into()), 3)),
        "{sets:?}"
    );

    // The next night nothing changed on master (a change elsewhere does not
    // count): skipped.
    h.change("feature", &["src/c.rs"], "f1");
    h.settle();
    let hourly_before = count(&h.buildsets(), "hourly");
    h.at(MON + 27.0 * 3600.0);
    wait_for("hourly caught up", Duration::from_secs(10), || {
        (count(&h.buildsets(), "hourly") > hourly_before).then_some(())
    });
    assert_eq!(count(&h.buildsets(), "nightly"), 1);

    // Down over the next 03:00: the missed nightly happens once at start.
    h.change("master", &["src/d.rs"], "r4");
    h.settle();
    let _ = h.tx.send(SchedMsg::Shutdown);
    h.thread.take().unwrap().join().unwrap();
    h.clock.set(MON + 2.0 * 86_400.0 + 5.0 * 3600.0);
    h.restart_after_stop();
    let sets = wait_for("missed nightly", Duration::from_secs(10), || {
        let s = h.buildsets();
        (count(&s, "nightly") == 2).then_some(s)
    });
    assert!(
        sets.contains(&("nightly".into(), Some("r4".into()), 1)),
        "{sets:?}"
    );
    // ... and only once.
    h.at(MON + 2.0 * 86_400.0 + 5.0 * 3600.0 + 1.0);
    h.settle();
    assert_eq!(count(&h.buildsets(), "nightly"), 2);
    assert!(Path::new(&h.db).exists());
}

impl Harness {
    fn restart_after_stop(&mut self) {
        let ((tx, h), bot) = Harness::start(&self.store, &self.cfg, &self.clock);
        self.tx = tx;
        self.bot = bot;
        self.thread = Some(h);
        self.sync();
    }
}
