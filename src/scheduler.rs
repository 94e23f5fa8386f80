//! Schedulers: which changes start which builders, and when.
//!
//! Owns: the scheduler thread, the tree-stable timers, and the
//! `changes.scheduled` / `scheduler_changes` bookkeeping.
//! Receives `SchedMsg` (new change ids from the change hooks, reconfig,
//! shutdown); sends `BotMsg::RequestsAdded` to the botmaster after the
//! buildsets it made are committed.
//!
//! Every decision is written in the same transaction that marks the change
//! as scheduled, so a crash between a hook's commit and the scheduler's
//! never loses or duplicates a build: at start the thread re-reads changes
//! still unscheduled and re-arms the timers of schedulers holding changes.

use crate::botmaster::BotMsg;
use crate::config::{Config, SchedulerCfg};
use crate::store::{self, ChangeRow, Props, SourceStamp, Store};
use anyhow::Result;
use crossbeam_channel::{after, never, select, Receiver, Sender};
use regex::Regex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub enum SchedMsg {
    /// Changes were committed; the ids are a hint, the table is the truth.
    NewChanges,
    Reconfig(Arc<Config>),
    Shutdown,
}

/// A scheduler with its filters compiled once per (re)config.
struct Compiled {
    cfg: SchedulerCfg,
    branch_re: Option<Regex>,
    tag_re: Option<Regex>,
}

impl Compiled {
    fn new(cfg: &SchedulerCfg) -> Compiled {
        // Regexes were validated by config::load; a failure here can only be
        // a config that skipped validation, and then matching nothing is safe.
        let re = |s: &Option<String>| s.as_deref().and_then(|s| Regex::new(s).ok());
        Compiled {
            branch_re: re(&cfg.branch_regex),
            tag_re: re(&cfg.tag_regex),
            cfg: cfg.clone(),
        }
    }

    /// Whether this scheduler wants a build for `c`. Tags are built only by
    /// an any_branch scheduler with a `tag_regex`: most users do not want
    /// every tag push to build, and those who do say so.
    fn matches(&self, c: &ChangeRow) -> bool {
        let is_tag = c.category.as_deref() == Some("tag");
        let branch = c.branch.as_deref().unwrap_or("");
        match self.cfg.kind.as_str() {
            "single_branch" => !is_tag && self.cfg.branch.as_deref() == Some(branch),
            "any_branch" if is_tag => self.tag_re.as_ref().is_some_and(|r| r.is_match(branch)),
            "any_branch" => self.branch_re.as_ref().is_none_or(|r| r.is_match(branch)),
            _ => false,
        }
    }
}

fn compile(cfg: &Config) -> Vec<Compiled> {
    cfg.schedulers.iter().map(Compiled::new).collect()
}

/// The source stamp and properties of a buildset made from `changes`
/// (non-empty, oldest first): the newest change says what to build.
fn buildset_for(sched: &str, changes: &[ChangeRow]) -> (SourceStamp, Props) {
    let last = &changes[changes.len() - 1];
    let mut props = Props::new();
    for c in changes {
        for (k, v) in &c.properties {
            props.insert(k.clone(), v.clone());
        }
    }
    props.insert("scheduler".into(), (sched.into(), "Scheduler".into()));
    let ss = SourceStamp {
        branch: last.branch.clone(),
        revision: last.revision.clone(),
        repository: last.repository.clone(),
        project: last.project.clone(),
        codebase: last.codebase.clone(),
    };
    (ss, props)
}

fn make_buildset(
    conn: &rusqlite::Connection,
    s: &SchedulerCfg,
    changes: &[ChangeRow],
) -> Result<()> {
    let (ss, props) = buildset_for(&s.name, changes);
    let ids: Vec<i64> = changes.iter().map(|c| c.changeid).collect();
    let reason = format!("The {} scheduler got a change", s.name);
    store::create_buildset(conn, &reason, Some(&s.name), &ss, &props, &ids, &s.builders)?;
    Ok(())
}

pub fn spawn(
    store: Store,
    cfg: Arc<Config>,
    rx: Receiver<SchedMsg>,
    bot: Sender<BotMsg>,
) -> Result<std::thread::JoinHandle<()>> {
    Ok(std::thread::Builder::new()
        .name("scheduler".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            let reader = match store::open_reader(store.path()) {
                Ok(r) => r,
                Err(e) => {
                    log::error!("scheduler: {e:#}");
                    return;
                }
            };
            let mut s = Scheduler {
                reader,
                store,
                scheds: compile(&cfg),
                timers: HashMap::new(),
                bot,
            };
            s.run(rx)
        })?)
}

struct Scheduler {
    store: Store,
    reader: rusqlite::Connection,
    scheds: Vec<Compiled>,
    /// scheduler name → when its tree-stable timer fires.
    timers: HashMap<String, Instant>,
    bot: Sender<BotMsg>,
}

impl Scheduler {
    fn run(&mut self, rx: Receiver<SchedMsg>) {
        if let Err(e) = self.rearm_timers() {
            log::error!("scheduler: cannot re-arm timers: {e:#}");
        }
        self.classify_logged();
        loop {
            let next = self.timers.values().min().copied();
            let timeout = match next {
                Some(t) => after(t.saturating_duration_since(Instant::now())),
                None => never(),
            };
            select! {
                recv(rx) -> msg => match msg {
                    Ok(SchedMsg::NewChanges) => self.classify_logged(),
                    Ok(SchedMsg::Reconfig(cfg)) => {
                        self.scheds = compile(&cfg);
                        // Timers of removed schedulers fire and find no config.
                        self.classify_logged();
                    }
                    Ok(SchedMsg::Shutdown) | Err(_) => break,
                },
                recv(timeout) -> _ => self.fire_due_timers(),
            }
        }
        log::debug!("scheduler thread exiting");
    }

    fn classify_logged(&mut self) {
        // Loop: a burst can exceed one batch of unscheduled changes.
        loop {
            match self.classify() {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    log::error!("scheduler: {e:#}");
                    break;
                }
            }
        }
    }

    /// Classifies every unscheduled change; returns how many it handled.
    fn classify(&mut self) -> Result<usize> {
        let changes = store::unscheduled_changes(&self.reader)?;
        if changes.is_empty() {
            return Ok(0);
        }
        // Decide here, write in one transaction below.
        let mut immediate: Vec<(SchedulerCfg, ChangeRow)> = vec![];
        let mut held: Vec<(String, i64)> = vec![];
        for c in &changes {
            for s in self.scheds.iter().filter(|s| s.matches(c)) {
                if s.cfg.tree_stable_timer == 0 {
                    immediate.push((s.cfg.clone(), c.clone()));
                } else {
                    held.push((s.cfg.name.clone(), c.changeid));
                }
            }
        }
        let ids: Vec<i64> = changes.iter().map(|c| c.changeid).collect();
        let n_immediate = immediate.len();
        let held2 = held.clone();
        self.store.write(move |conn| {
            for (s, c) in &immediate {
                make_buildset(conn, s, std::slice::from_ref(c))?;
            }
            for (s, id) in &held2 {
                conn.prepare_cached(
                    "INSERT OR IGNORE INTO scheduler_changes(scheduler, changeid) VALUES (?1, ?2)",
                )?
                .execute(rusqlite::params![s, id])?;
            }
            for id in &ids {
                conn.prepare_cached("UPDATE changes SET scheduled = 1 WHERE changeid = ?1")?
                    .execute([id])?;
            }
            Ok(())
        })?;
        // A tree-stable timer restarts with every change it holds: it fires
        // once the tree has been quiet for the whole period.
        for (name, _) in held {
            if let Some(s) = self.scheds.iter().find(|s| s.cfg.name == name) {
                let at = Instant::now() + Duration::from_secs(s.cfg.tree_stable_timer);
                self.timers.insert(name, at);
            }
        }
        if n_immediate > 0 {
            let _ = self.bot.send(BotMsg::RequestsAdded);
        }
        Ok(changes.len())
    }

    fn rearm_timers(&mut self) -> Result<()> {
        for name in store::schedulers_holding_changes(&self.reader)? {
            let secs = self
                .scheds
                .iter()
                .find(|s| s.cfg.name == name)
                .map(|s| s.cfg.tree_stable_timer)
                .unwrap_or(0);
            self.timers
                .insert(name, Instant::now() + Duration::from_secs(secs));
        }
        Ok(())
    }

    fn fire_due_timers(&mut self) {
        let now = Instant::now();
        let due: Vec<String> = self
            .timers
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            self.timers.remove(&name);
            let cfg = self
                .scheds
                .iter()
                .find(|s| s.cfg.name == name)
                .map(|s| s.cfg.clone());
            let res = (|| -> Result<bool> {
                let changes = store::held_changes(&self.reader, &name)?;
                let name2 = name.clone();
                self.store.write(move |conn| {
                    // A scheduler removed by reconfig drops what it held.
                    let made = match &cfg {
                        Some(s) if !changes.is_empty() => {
                            make_buildset(conn, s, &changes)?;
                            true
                        }
                        _ => false,
                    };
                    conn.prepare_cached("DELETE FROM scheduler_changes WHERE scheduler = ?1")?
                        .execute([&name2])?;
                    Ok(made)
                })
            })();
            match res {
                Ok(true) => {
                    let _ = self.bot.send(BotMsg::RequestsAdded);
                }
                Ok(false) => {}
                Err(e) => log::error!("scheduler {name}: {e:#}"),
            }
        }
    }
}
