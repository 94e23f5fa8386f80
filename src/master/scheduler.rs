//! Schedulers: which changes start which builders, and when.
//!
//! Owns: the scheduler thread, its timers (tree-stable, periodic, nightly),
//! and the `changes.scheduled` / `scheduler_changes` / `scheduler_state`
//! bookkeeping. Receives `SchedMsg` (new change ids from the change hooks
//! and the poller, reconfig, wake, shutdown); sends `BotMsg::RequestsAdded`
//! to the botmaster after the buildsets it made are committed.
//!
//! Kinds: `single_branch` and `any_branch` react to changes (through the
//! change filters and `tree_stable_timer`); `periodic` fires every `period`
//! seconds; `nightly` fires at cron-like times (local time, as Buildbot),
//! with `only_if_changed` holding the changes that passed its filters until
//! then; `force` is driven from the web (see `config::ForceScheduler::force_values`);
//! `triggerable` and `dependent` are driven by other builds (`master::chain`).
//!
//! Every decision is written in the same transaction that marks the change
//! as scheduled, so a crash between a hook's commit and the scheduler's
//! never loses or duplicates a build: at start the thread re-reads changes
//! still unscheduled, re-arms the timers of schedulers holding changes, and
//! computes periodic/nightly fire times from `scheduler_state.last_fire`
//! (a fire missed while the master was down happens once, at start).
//!
//! Time comes from a [`Clock`], and the time arithmetic lives in pure
//! functions ([`next_nightly_fire`], [`next_periodic_fire`]), so tests drive
//! the thread with a clock they move by hand (then send `SchedMsg::Wake`).

use crate::config::{
    ChangeFilter, Config, CronSet, Nightly, Scheduler as SchedulerCfg, SchedulerKind,
};
use crate::db::{self, ChangeRow, Props, SourceStamp, Store};
use crate::master::botmaster::BotMsg;
use crate::model::ChangeId;
use anyhow::Result;
use crossbeam_channel::{after, select, Receiver, Sender};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub enum SchedMsg {
    /// Changes were committed; the table is the truth.
    NewChanges,
    Reconfig(Arc<Config>),
    /// Look at the clock again (tests move a manual clock, then send this).
    Wake,
    Shutdown,
}

/// Where the scheduler thread gets the time: Unix seconds.
pub trait Clock: Send + Sync {
    fn now(&self) -> f64;
}

/// The real clock.
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> f64 {
        crate::model::now_f64()
    }
}

/// The parts of a local date a nightly schedule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub minute: u32,
    pub hour: u32,
    /// 0 = Monday ... 6 = Sunday (Buildbot's dayOfWeek).
    pub weekday: u32,
    /// 1-31.
    pub day: u32,
}

/// `t` in UTC (pure arithmetic; for tests and for masters that want UTC).
pub fn civil_utc(t: i64) -> Civil {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    // 1970-01-01 was a Thursday (3 with Monday = 0).
    let weekday = (days + 3).rem_euclid(7) as u32;
    // Howard Hinnant's civil_from_days, day of month only.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    Civil {
        minute: ((secs / 60) % 60) as u32,
        hour: (secs / 3600) as u32,
        weekday,
        day,
    }
}

/// `t` in the master's local time zone (TZ, /etc/localtime), as Buildbot's
/// Nightly uses.
pub(crate) fn civil_local(t: i64) -> Civil {
    let Some(tm) = crate::sys::localtime(t) else {
        return civil_utc(t);
    };
    Civil {
        minute: tm.tm_min as u32,
        hour: tm.tm_hour as u32,
        // tm_wday: 0 = Sunday.
        weekday: ((tm.tm_wday + 6) % 7) as u32,
        day: tm.tm_mday as u32,
    }
}

fn field_ok(f: &CronSet, v: u32) -> bool {
    f.as_ref().is_none_or(|list| list.contains(&v))
}

/// The first whole minute strictly after `after` that the nightly
/// scheduler `s` fires at (Buildbot's defaults: minute 0, every hour, every
/// day), with `civil` telling what a time is locally. Steps by day, hour and
/// minute, re-reading the local time each time, so DST changes are handled;
/// None if nothing matches within about a year (e.g. day_of_month = 31 with
/// a weekday that never falls on it).
pub(crate) fn next_nightly_fire(
    s: &Nightly,
    after: i64,
    civil: impl Fn(i64) -> Civil,
) -> Option<i64> {
    let mut t = (after.div_euclid(60) + 1) * 60;
    let limit = t + 400 * 86_400;
    while t < limit {
        let c = civil(t);
        let day_ok = field_ok(&s.day_of_week, c.weekday) && field_ok(&s.day_of_month, c.day);
        if !day_ok {
            t += i64::from(24 * 60 - (c.hour * 60 + c.minute)) * 60;
        } else if !field_ok(&s.hour, c.hour) {
            t += i64::from(60 - c.minute) * 60;
        } else if !field_ok(&s.minute, c.minute) {
            t += 60;
        } else {
            return Some(t);
        }
    }
    None
}

/// When a periodic scheduler fires next: at once if it never fired
/// (Buildbot's Periodic), else `period` after the last fire (which may be
/// in the past after a restart: then at once, and once).
pub(crate) fn next_periodic_fire(period: u64, last_fire: Option<i64>) -> Option<i64> {
    Some(match last_fire {
        None => i64::MIN,
        Some(l) => l.saturating_add(period as i64),
    })
}

/// A scheduler as the thread keeps it (its regexes come compiled from the
/// config).
struct Compiled {
    cfg: SchedulerCfg,
}

/// Buildbot's ChangeFilter: every filter that is set must pass.
fn passes_filters(f: &ChangeFilter, c: &ChangeRow) -> bool {
    f.repository
        .as_ref()
        .is_none_or(|r| r.contains(&c.repository))
        && f.project.as_ref().is_none_or(|p| p.contains(&c.project))
        && f.category
            .as_ref()
            .is_none_or(|k| k.contains(c.category.as_deref().unwrap_or("")))
        && f.files_regex
            .as_ref()
            .is_none_or(|r| c.files.is_empty() || c.files.iter().any(|f| r.is_match(f)))
}

impl Compiled {
    /// Whether this scheduler wants `c`. Tags are built only by an
    /// any_branch scheduler with a `tag_regex`: most users do not want every
    /// tag push to build, and those who do say so.
    fn matches(&self, c: &ChangeRow) -> bool {
        let is_tag = c.category.as_deref() == Some("tag");
        let branch = c.branch.as_deref().unwrap_or("");
        match &self.cfg.kind {
            SchedulerKind::SingleBranch {
                branch: b, filter, ..
            } => !is_tag && b == branch && passes_filters(filter, c),
            SchedulerKind::AnyBranch {
                branch_regex,
                tag_regex,
                filter,
                ..
            } => {
                let kind_ok = if is_tag {
                    tag_regex.as_ref().is_some_and(|r| r.is_match(branch))
                } else {
                    branch_regex.as_ref().is_none_or(|r| r.is_match(branch))
                };
                kind_ok && passes_filters(filter, c)
            }
            SchedulerKind::Nightly(n) if n.only_if_changed => {
                !is_tag
                    && n.branch.as_deref().is_none_or(|b| b == branch)
                    && passes_filters(&n.filter, c)
            }
            SchedulerKind::Nightly(_)
            | SchedulerKind::Force(_)
            | SchedulerKind::Periodic { .. }
            | SchedulerKind::Triggerable
            | SchedulerKind::Dependent { .. } => false,
        }
    }
}

fn compile(cfg: &Config) -> Vec<Compiled> {
    cfg.schedulers
        .iter()
        .map(|s| Compiled { cfg: s.clone() })
        .collect()
}

/// When a periodic or nightly scheduler fires next after `last`; None for
/// the other kinds and for a schedule that never fires.
fn next_timed_fire(
    s: &SchedulerCfg,
    last: Option<i64>,
    now: i64,
    civil: fn(i64) -> Civil,
) -> Option<i64> {
    match &s.kind {
        SchedulerKind::Periodic { period, .. } => next_periodic_fire(period.as_secs(), last),
        SchedulerKind::Nightly(n) => next_nightly_fire(n, last.unwrap_or(now), civil),
        SchedulerKind::SingleBranch { .. }
        | SchedulerKind::AnyBranch { .. }
        | SchedulerKind::Force(_)
        | SchedulerKind::Triggerable
        | SchedulerKind::Dependent { .. } => None,
    }
}

/// A timed scheduler builds only when a change came (nightly's
/// `only_if_changed`).
fn only_if_changed(s: &SchedulerCfg) -> bool {
    match &s.kind {
        SchedulerKind::Nightly(n) => n.only_if_changed,
        SchedulerKind::Periodic { .. }
        | SchedulerKind::SingleBranch { .. }
        | SchedulerKind::AnyBranch { .. }
        | SchedulerKind::Force(_)
        | SchedulerKind::Triggerable
        | SchedulerKind::Dependent { .. } => false,
    }
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

fn make_buildset(conn: &db::Tx, s: &SchedulerCfg, changes: &[ChangeRow]) -> Result<()> {
    let (ss, props) = buildset_for(&s.name, changes);
    let ids: Vec<ChangeId> = changes.iter().map(|c| c.changeid).collect();
    let reason = format!("The {} scheduler got a change", s.name);
    db::create_buildset(conn, &reason, Some(&s.name), &ss, &props, &ids, &s.builders)?;
    Ok(())
}

/// A timed scheduler's buildset without changes: the tip of its branch.
fn make_timed_buildset(conn: &db::Tx, s: &SchedulerCfg) -> Result<()> {
    let mut props = Props::new();
    props.insert(
        "scheduler".into(),
        (s.name.clone().into(), "Scheduler".into()),
    );
    let branch = match &s.kind {
        SchedulerKind::Periodic { branch, .. } => branch.clone(),
        SchedulerKind::Nightly(n) => n.branch.clone(),
        SchedulerKind::SingleBranch { .. }
        | SchedulerKind::AnyBranch { .. }
        | SchedulerKind::Force(_)
        | SchedulerKind::Triggerable
        | SchedulerKind::Dependent { .. } => None,
    };
    let ss = SourceStamp {
        branch,
        ..Default::default()
    };
    let reason = format!(
        "The {} scheduler named '{}' triggered this build",
        s.kind.type_name(),
        s.name
    );
    db::create_buildset(conn, &reason, Some(&s.name), &ss, &props, &[], &s.builders)?;
    Ok(())
}

pub(crate) fn spawn(
    store: Store,
    cfg: Arc<Config>,
    rx: Receiver<SchedMsg>,
    bot: Sender<BotMsg>,
) -> Result<std::thread::JoinHandle<()>> {
    spawn_with_clock(store, cfg, rx, bot, Arc::new(SystemClock), civil_local)
}

/// [`spawn`] with another clock and time zone (tests).
pub fn spawn_with_clock(
    store: Store,
    cfg: Arc<Config>,
    rx: Receiver<SchedMsg>,
    bot: Sender<BotMsg>,
    clock: Arc<dyn Clock>,
    civil: fn(i64) -> Civil,
) -> Result<std::thread::JoinHandle<()>> {
    Ok(std::thread::Builder::new()
        .name("scheduler".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            let reader = match store.own_reader() {
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
                stable: HashMap::new(),
                timed: HashMap::new(),
                clock,
                civil,
                bot,
            };
            s.run(rx)
        })?)
}

/// Longest wait without looking at the clock: wall-clock jumps (NTP,
/// suspend) are noticed within this.
const MAX_WAIT: f64 = 60.0;

struct Scheduler {
    store: Store,
    reader: db::Conn,
    scheds: Vec<Compiled>,
    /// scheduler name → when its tree-stable timer fires (Unix seconds).
    stable: HashMap<String, f64>,
    /// periodic/nightly scheduler name → its next fire (Unix seconds).
    timed: HashMap<String, i64>,
    clock: Arc<dyn Clock>,
    civil: fn(i64) -> Civil,
    bot: Sender<BotMsg>,
}

impl Scheduler {
    fn run(&mut self, rx: Receiver<SchedMsg>) {
        if let Err(e) = self.rearm_stable() {
            log::error!("scheduler: cannot re-arm timers: {e:#}");
        }
        self.arm_timed_logged();
        self.classify_logged();
        self.fire_due();
        // A message found while coalescing nudges, handled next.
        let mut queued: Option<SchedMsg> = None;
        loop {
            if let Some(msg) = queued.take() {
                if !self.handle(msg, &rx, &mut queued) {
                    break;
                }
                self.fire_due();
                continue;
            }
            let next = self
                .stable
                .values()
                .copied()
                .chain(self.timed.values().map(|t| *t as f64))
                .fold(f64::INFINITY, f64::min);
            let wait = (next - self.clock.now()).clamp(0.0, MAX_WAIT);
            let timeout = after(Duration::from_secs_f64(wait));
            select! {
                recv(rx) -> msg => {
                    if !self.handle(msg.unwrap_or(SchedMsg::Shutdown), &rx, &mut queued) {
                        break;
                    }
                }
                recv(timeout) -> _ => {}
            }
            self.fire_due();
        }
        log::debug!("scheduler thread exiting");
    }

    /// Handles one message; false: shut down. The nudges already queued
    /// behind a `NewChanges` are taken with it (one pass reads every
    /// unscheduled change), so a hook burst costs one pass, not one per
    /// hook, and the channel never holds more nudges than arrive during a
    /// pass (ARCHITECTURE.md, "bounded bookkeeping").
    fn handle(
        &mut self,
        msg: SchedMsg,
        rx: &Receiver<SchedMsg>,
        queued: &mut Option<SchedMsg>,
    ) -> bool {
        match msg {
            SchedMsg::NewChanges => {
                *queued =
                    super::coalesce(rx, |m| matches!(m, SchedMsg::NewChanges | SchedMsg::Wake));
                self.classify_logged();
            }
            SchedMsg::Reconfig(cfg) => self.reconfig(&cfg),
            SchedMsg::Wake => {}
            SchedMsg::Shutdown => return false,
        }
        true
    }

    fn reconfig(&mut self, cfg: &Config) {
        self.scheds = compile(cfg);
        let names: Vec<String> = cfg.schedulers.iter().map(|s| s.name.clone()).collect();
        self.stable.retain(|n, _| names.contains(n));
        // What removed schedulers held would otherwise stay held forever.
        let keep = names.clone();
        match self
            .store
            .write(move |c| db::forget_schedulers_except(c, &keep))
        {
            Ok(n) if n > 0 => {
                log::info!("scheduler: dropped {n} change(s) held by removed schedulers")
            }
            Ok(_) => {}
            Err(e) => log::error!("scheduler: {e:#}"),
        }
        self.timed.clear();
        self.arm_timed_logged();
        self.classify_logged();
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
        let changes = db::unscheduled_changes(&self.reader)?;
        if changes.is_empty() {
            return Ok(0);
        }
        // Decide here, write in one transaction below.
        let mut immediate: Vec<(SchedulerCfg, ChangeRow)> = vec![];
        let mut held: Vec<(String, ChangeId)> = vec![];
        for c in &changes {
            for s in self.scheds.iter().filter(|s| s.matches(c)) {
                if s.cfg.kind.tree_stable_timer() == Some(Duration::ZERO) {
                    immediate.push((s.cfg.clone(), c.clone()));
                } else {
                    held.push((s.cfg.name.clone(), c.changeid));
                }
            }
        }
        let ids: Vec<ChangeId> = changes.iter().map(|c| c.changeid).collect();
        let n_immediate = immediate.len();
        let held2 = held.clone();
        self.store.write(move |conn| {
            for (s, c) in &immediate {
                make_buildset(conn, s, std::slice::from_ref(c))?;
            }
            db::hold_changes(conn, &held2)?;
            db::mark_scheduled(conn, &ids)
        })?;
        // A tree-stable timer restarts with every change it holds: it fires
        // once the tree has been quiet for the whole period. (A nightly
        // scheduler holds its changes until its own time.)
        let now = self.clock.now();
        for (name, _) in held {
            if let Some(s) = self.scheds.iter().find(|s| s.cfg.name == name) {
                if let Some(timer) = s.cfg.kind.tree_stable_timer() {
                    let at = now + timer.as_secs_f64();
                    self.stable.insert(name, at);
                }
            }
        }
        if n_immediate > 0 {
            let _ = self.bot.send(BotMsg::RequestsAdded);
        }
        Ok(changes.len())
    }

    fn rearm_stable(&mut self) -> Result<()> {
        let now = self.clock.now();
        for name in db::schedulers_holding_changes(&self.reader)? {
            let timer = match self.scheds.iter().find(|s| s.cfg.name == name) {
                Some(s) => match s.cfg.kind.tree_stable_timer() {
                    Some(t) => t,
                    None => continue,
                },
                None => Duration::ZERO,
            };
            self.stable.insert(name, now + timer.as_secs_f64());
        }
        Ok(())
    }

    /// Computes the next fire of every periodic/nightly scheduler from its
    /// stored last fire.
    fn arm_timed_logged(&mut self) {
        let now = self.clock.now() as i64;
        let mut first_seen: Vec<String> = vec![];
        for s in self.scheds.iter().filter(|s| s.cfg.kind.is_timed()) {
            let name = s.cfg.name.clone();
            let last = match db::scheduler_state(&self.reader, &name, "last_fire") {
                Ok(v) => v.and_then(|v| v.parse::<i64>().ok()),
                Err(e) => {
                    log::error!("scheduler {name}: {e:#}");
                    continue;
                }
            };
            // A nightly scheduler counts from now, so that a restart before
            // its first fire still catches up on it; a periodic one fires
            // at once.
            let counts_from_now = match &s.cfg.kind {
                SchedulerKind::Nightly(_) => true,
                SchedulerKind::Periodic { .. }
                | SchedulerKind::SingleBranch { .. }
                | SchedulerKind::AnyBranch { .. }
                | SchedulerKind::Force(_)
                | SchedulerKind::Triggerable
                | SchedulerKind::Dependent { .. } => false,
            };
            if last.is_none() && counts_from_now {
                first_seen.push(name.clone());
            }
            let next = next_timed_fire(&s.cfg, last, now, self.civil);
            match next {
                Some(t) => {
                    self.timed.insert(name, t);
                }
                None => log::warn!("scheduler {name}: its schedule never fires"),
            }
        }
        if !first_seen.is_empty() {
            let res = self.store.write(move |c| {
                for n in &first_seen {
                    db::set_scheduler_state(c, n, "last_fire", &now.to_string())?;
                }
                Ok(())
            });
            if let Err(e) = res {
                log::error!("scheduler: {e:#}");
            }
        }
    }

    fn fire_due(&mut self) {
        let now = self.clock.now();
        let due: Vec<String> = self
            .stable
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            self.stable.remove(&name);
            self.fire_stable(&name);
        }
        let due: Vec<String> = self
            .timed
            .iter()
            .filter(|(_, t)| (**t as f64) <= now)
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            self.timed.remove(&name);
            self.fire_timed(&name, now as i64);
        }
    }

    /// A tree-stable timer ran out: one buildset for everything held.
    fn fire_stable(&mut self, name: &str) {
        let cfg = self
            .scheds
            .iter()
            .find(|s| s.cfg.name == name)
            .map(|s| s.cfg.clone());
        if cfg
            .as_ref()
            .is_some_and(|s| s.kind.tree_stable_timer().is_none())
        {
            return; // became a nightly scheduler by reconfig: it keeps them
        }
        let res = (|| -> Result<bool> {
            let changes = db::held_changes(&self.reader, name)?;
            let name2 = name.to_string();
            self.store.write(move |conn| {
                // A scheduler removed by reconfig drops what it held.
                let made = match &cfg {
                    Some(s) if !changes.is_empty() => {
                        make_buildset(conn, s, &changes)?;
                        true
                    }
                    _ => false,
                };
                db::release_held_changes(conn, &name2)?;
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

    /// A periodic or nightly scheduler's time has come.
    fn fire_timed(&mut self, name: &str, now: i64) {
        let Some(s) = self
            .scheds
            .iter()
            .find(|s| s.cfg.name == name && s.cfg.kind.is_timed())
            .map(|s| s.cfg.clone())
        else {
            return;
        };
        let res = (|| -> Result<bool> {
            let held = if only_if_changed(&s) {
                db::held_changes(&self.reader, name)?
            } else {
                vec![]
            };
            let s2 = s.clone();
            self.store.write(move |conn| {
                let made = if !only_if_changed(&s2) {
                    make_timed_buildset(conn, &s2)?;
                    true
                } else if held.is_empty() {
                    false
                } else {
                    make_buildset(conn, &s2, &held)?;
                    db::release_held_changes(conn, &s2.name)?;
                    true
                };
                db::set_scheduler_state(conn, &s2.name, "last_fire", &now.to_string())?;
                Ok(made)
            })
        })();
        match res {
            Ok(true) => {
                log::info!(
                    "scheduler {name}: started builds ({} scheduler)",
                    s.kind.type_name()
                );
                let _ = self.bot.send(BotMsg::RequestsAdded);
            }
            Ok(false) => log::info!("scheduler {name}: no changes since the last build, skipped"),
            Err(e) => log::error!("scheduler {name}: {e:#}"),
        }
        let next = next_timed_fire(&s, Some(now), now, self.civil);
        if let Some(t) = next {
            self.timed.insert(name.to_string(), t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nightly(extra: &str) -> Nightly {
        let cfg = crate::config::test_config(&format!(
            "{}[[schedulers]]\nname = 'n'\ntype = 'nightly'\nbuilders = ['b']\n{extra}",
            crate::config::TEST_BUILDER
        ));
        let SchedulerKind::Nightly(n) = &cfg.schedulers[0].kind else {
            panic!("not nightly")
        };
        n.clone()
    }

    /// 2024-06-03 (a Monday) 00:00:00 UTC.
    const MON: i64 = 1_717_372_800;

    #[test]
    fn civil_utc_knows_the_calendar() {
        assert_eq!(
            civil_utc(MON),
            Civil {
                minute: 0,
                hour: 0,
                weekday: 0,
                day: 3
            }
        );
        assert_eq!(
            civil_utc(MON + 6 * 86_400 + 23 * 3600 + 59 * 60 + 59),
            Civil {
                minute: 59,
                hour: 23,
                weekday: 6,
                day: 9
            }
        );
        assert_eq!(civil_utc(0).weekday, 3); // Thursday
        assert_eq!(civil_utc(951_782_400).day, 29); // 2000-02-29
    }

    #[test]
    fn nightly_next_fire() {
        let at3 = nightly("hour = 3\nminute = 30\n");
        assert_eq!(
            next_nightly_fire(&at3, MON, civil_utc),
            Some(MON + 3 * 3600 + 1800)
        );
        // Strictly after: at the fire time itself, the next day.
        let fired = MON + 3 * 3600 + 1800;
        assert_eq!(
            next_nightly_fire(&at3, fired, civil_utc),
            Some(fired + 86_400)
        );
        // Default minute 0, every hour.
        assert_eq!(
            next_nightly_fire(&nightly(""), MON + 5, civil_utc),
            Some(MON + 3600)
        );
        // Weekdays: Saturday (5) and Sunday by name.
        let weekend = nightly("hour = [1, 13]\nday_of_week = [5, 6]\n");
        assert_eq!(
            next_nightly_fire(&weekend, MON, civil_utc),
            Some(MON + 5 * 86_400 + 3600)
        );
        assert_eq!(
            next_nightly_fire(&weekend, MON + 5 * 86_400 + 3600, civil_utc),
            Some(MON + 5 * 86_400 + 13 * 3600)
        );
        let sunday = nightly("hour = 0\nday_of_week = 'sun'\n");
        assert_eq!(
            next_nightly_fire(&sunday, MON, civil_utc),
            Some(MON + 6 * 86_400)
        );
        // Monthly on the 1st: 2024-07-01.
        let monthly = nightly("hour = 2\nday_of_month = 1\n");
        assert_eq!(
            next_nightly_fire(&monthly, MON, civil_utc),
            Some(1_719_799_200)
        );
        // Day 31 skips the 30-day June: July 31st.
        let thirty_first = nightly("hour = 0\nday_of_month = 31\n");
        assert_eq!(
            next_nightly_fire(&thirty_first, MON, civil_utc),
            Some(1_719_792_000 + 30 * 86_400)
        );
        // A time zone with DST: the local-time function is what decides.
        let plus2 = |t: i64| civil_utc(t + 7200);
        assert_eq!(next_nightly_fire(&at3, MON, plus2), Some(MON + 3600 + 1800));
    }

    #[test]
    fn periodic_next_fire() {
        assert_eq!(next_periodic_fire(60, None), Some(i64::MIN));
        assert_eq!(next_periodic_fire(60, Some(1000)), Some(1060));
    }
}
