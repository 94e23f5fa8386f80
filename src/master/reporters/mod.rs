//! Reporters (Buildbot's `c['services']`): commit statuses on Gitea and
//! e-mail about finished builds.
//!
//! Owns: the `reporters` thread and one outbox thread per kind of delivery
//! (`gitea-status`, `mail`). The master runs the reporters thread only
//! while `master.cfg` has reporters ([`wanted`]), and the thread starts an
//! outbox when a reporter first needs it. The reporters thread subscribes
//! to the event hub (`events::Hub`, bounded, never blocks a build), reads
//! what it needs about a build on a reader connection lent by the store
//! (`db::build_report`) and hands ready-made deliveries to the outboxes
//! over bounded channels. An outbox sends one delivery at a time and
//! retries failures with exponential backoff (1 s doubling to 5 min, 12
//! tries); a newer delivery with the same key (the same commit and status
//! context) replaces one waiting for a retry, so Gitea never ends up with a
//! stale "pending" after the final state. Nothing here can fail or delay a
//! build: failures are logged.
//!
//! Driven by the database, not only by events (issue 16): the hub drops
//! events rather than block, and a master can stop between a build's end
//! and its delivery, so each reporter's *final* delivery for a build (the
//! final commit status, the mail) is settled in `reporter_deliveries`
//! (`db::record_report`: sent, failed for good, nothing to send, or
//! superseded) by the outbox once it is. A sweep ([`Reporters::sweep`])
//! re-reads finished builds with no settled final delivery and reports
//! them: at start, every [`SWEEP_EVERY`], and at once when the hub says it
//! dropped events for this thread. It looks only at builds newer than the
//! newest one when the reporter was first configured
//! (`reporter_state.after_build`, so the first start after an upgrade
//! re-reports nothing old) that finished within [`SWEEP_WINDOW`]. A dropped event costs latency, not a status. Delivery
//! is at least once: a master killed after sending but before recording
//! sends the final status (idempotent on Gitea) or the mail again.
//!
//! Messages: `ReporterMsg::{Reconfig, Shutdown}` from the master; events
//! `BuildStarted` / `BuildFinished` from the hub.

pub(crate) mod gitea;
pub(crate) mod mail;

use crate::config::{Config, GiteaStatus, Mail, Reporter, ReporterKind};
use crate::db::{self, ReportKind, ReportOutcome, Store};
use crate::master::events::{Event, Hub};
use crate::model::BuildId;
use anyhow::Result;
use crossbeam_channel::{after, never, select, Receiver, Sender};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub(crate) enum ReporterMsg {
    Reconfig(Arc<Config>),
    Shutdown,
}

/// Room for events between two reads of the reporters thread; it only
/// does a small indexed read per build event, so this is never reached
/// unless the machine stalls (and then the sweep catches up).
pub(crate) const EVENT_CAPACITY: usize = 4096;

/// How often the sweep looks for finished builds whose final delivery was
/// never settled (also at start and after dropped events).
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// How far back the sweep looks: builds that finished longer ago are
/// never reported late.
pub(crate) const SWEEP_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// After the hub says it dropped events, the sweep waits this long, so the
/// events still buffered are handled first.
const MISSED_DELAY: Duration = Duration::from_millis(200);

/// Builds per reporter one sweep reports (about); when there were more, the
/// next sweep comes at once.
const SWEEP_BATCH: i64 = 100;

/// Pages of [`SWEEP_BATCH`] builds one sweep reads per reporter.
const SWEEP_PAGES: usize = 10;

/// Why a delivery failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Worth trying again (network, 5xx, 429).
    Retry(String),
    /// Would fail the same way again (bad token, unknown repository).
    Permanent(String),
}

/// A reporter's final delivery for one build: what `reporter_deliveries`
/// records once it is settled.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Final {
    /// The reporter's identity ([`reporter_id`]).
    pub(crate) reporter: Arc<str>,
    pub(crate) buildid: BuildId,
    pub(crate) kind: ReportKind,
}

/// One thing to deliver (a commit status, a mail).
pub(crate) trait Delivery: Send {
    /// Deliveries with the same key replace each other while waiting.
    fn key(&self) -> Option<String>;
    fn describe(&self) -> String;
    fn attempt(&self) -> Result<(), Failure>;
    /// The final delivery this is, if it is one (not a "pending" status).
    fn settles(&self) -> Option<&Final> {
        None
    }
}

pub(crate) type Outbox = Sender<Box<dyn Delivery>>;

/// Told how each final delivery ended: `Some(outcome)` to record, `None`
/// when it was given up without one (retries exhausted, shutdown), so a
/// later sweep tries again.
pub(crate) type Settle = Arc<dyn Fn(&Final, Option<ReportOutcome>) + Send + Sync>;

/// After the n-th failure (0-based), wait this long.
pub(crate) fn backoff(failures: u32) -> Duration {
    Duration::from_secs((1u64 << failures.min(16)).min(300))
}

const MAX_TRIES: u32 = 12;

/// Deliveries handed to an outbox and not yet taken by it.
const OUTBOX_QUEUE: usize = 64;

/// Failed deliveries an outbox keeps for a retry; more are left to the
/// sweep (a final status or mail) or dropped (a pending status, which the
/// final one replaces anyway).
const MAX_WAITING: usize = 1000;

struct Waiting {
    job: Box<dyn Delivery>,
    failures: u32,
    due: Instant,
}

/// Starts an outbox thread; it runs until every sender is dropped, then
/// tries what is still waiting once more and exits. `settle` hears how
/// each final delivery ended.
pub(crate) fn spawn_outbox(name: &str, settle: Settle) -> Result<(Outbox, JoinHandle<()>)> {
    // Bounded: when deliveries are slow (a Gitea that hangs until each
    // request times out) the reporters thread waits here, the hub drops
    // its events meanwhile, and the sweep finds the builds later; nothing
    // piles up in memory.
    let (tx, rx) = crossbeam_channel::bounded::<Box<dyn Delivery>>(OUTBOX_QUEUE);
    let h = std::thread::Builder::new()
        .name(name.into())
        .stack_size(256 * 1024)
        .spawn(move || outbox_loop(rx, settle))?;
    Ok((tx, h))
}

fn outbox_loop(rx: Receiver<Box<dyn Delivery>>, settle: Settle) {
    let mut waiting: Vec<Waiting> = vec![];
    loop {
        let timeout = match waiting.iter().map(|w| w.due).min() {
            Some(d) => after(d.saturating_duration_since(Instant::now())),
            None => never(),
        };
        select! {
            recv(rx) -> msg => match msg {
                Ok(job) => {
                    if let Some(k) = job.key() {
                        let (replaced, kept): (Vec<Waiting>, Vec<Waiting>) = waiting
                            .drain(..)
                            .partition(|w| w.job.key().as_deref() == Some(k.as_str()));
                        waiting = kept;
                        for w in replaced {
                            if let Some(f) = w.job.settles() {
                                settle(f, Some(ReportOutcome::Superseded));
                            }
                        }
                    }
                    attempt(job, 0, &mut waiting, &settle);
                }
                Err(_) => break,
            },
            recv(timeout) -> _ => {
                let now = Instant::now();
                let (due, later): (Vec<Waiting>, Vec<Waiting>) =
                    waiting.drain(..).partition(|w| w.due <= now);
                waiting = later;
                for w in due {
                    attempt(w.job, w.failures, &mut waiting, &settle);
                }
            }
        }
    }
    // Shutting down: one last try for what waits, no more waiting; what
    // fails is left to the next start's sweep.
    for w in std::mem::take(&mut waiting) {
        match w.job.attempt() {
            Ok(()) => {
                if let Some(f) = w.job.settles() {
                    settle(f, Some(ReportOutcome::Sent));
                }
            }
            Err(e) => {
                log::warn!("{}: not delivered before shutdown: {e:?}", w.job.describe());
                if let Some(f) = w.job.settles() {
                    settle(f, None);
                }
            }
        }
    }
}

fn attempt(job: Box<dyn Delivery>, failures: u32, waiting: &mut Vec<Waiting>, settle: &Settle) {
    let settled = |outcome| {
        if let Some(f) = job.settles() {
            settle(f, outcome);
        }
    };
    match job.attempt() {
        Ok(()) => {
            log::debug!("{}: delivered", job.describe());
            settled(Some(ReportOutcome::Sent));
        }
        Err(Failure::Permanent(e)) => {
            log::error!("{}: failed, not retrying: {e}", job.describe());
            settled(Some(ReportOutcome::Failed));
        }
        Err(Failure::Retry(e)) if failures + 1 >= MAX_TRIES => {
            log::error!(
                "{}: failed {MAX_TRIES} times, giving up until the next sweep: {e}",
                job.describe()
            );
            settled(None);
        }
        Err(Failure::Retry(e)) if waiting.len() >= MAX_WAITING => {
            // A long outage with many builds: the retry list stays bounded;
            // a final delivery dropped here is left unsettled, so the
            // sweep sends it once the target answers again.
            log::warn!(
                "{}: failed ({e}); {MAX_WAITING} deliveries already wait for a retry, leaving this one to the sweep",
                job.describe()
            );
            settled(None);
        }
        Err(Failure::Retry(e)) => {
            let wait = backoff(failures);
            log::warn!("{}: failed ({e}); retrying in {wait:?}", job.describe());
            waiting.push(Waiting {
                job,
                failures: failures + 1,
                due: Instant::now() + wait,
            });
        }
    }
}

/// A reporter's identity in `reporter_deliveries` and `reporter_state`:
/// what it reports to, not how it gets there (a new token, SMTP port or
/// password is the same reporter; another status context or other
/// recipients are not).
pub(crate) fn reporter_id(r: &Reporter) -> String {
    match &r.kind {
        ReporterKind::GiteaStatus(g) => {
            format!("gitea_status {} {} {}", g.base_url, g.context, g.context_pr)
        }
        ReporterKind::Mail(m) => format!("mail {} -> {}", m.from, m.to.join(",")),
    }
}

/// A configured reporter, ready to use.
struct Active {
    id: Arc<str>,
    /// The newest build when it was first configured (`reporter_state`):
    /// the sweep reports only newer ones.
    after_build: BuildId,
    reporter: Reporter,
    target: Target,
}

enum Target {
    Gitea(GiteaStatus, Arc<gitea::Target>),
    Mail(Mail, Arc<mail::Target>),
}

impl Target {
    fn kind(&self) -> ReportKind {
        match self {
            Target::Gitea(..) => ReportKind::Status,
            Target::Mail(..) => ReportKind::Mail,
        }
    }
}

/// The final deliveries handed to an outbox and not settled yet: neither
/// the sweep nor a late event sends them again meanwhile.
struct Ledger {
    store: Store,
    in_flight: Mutex<HashSet<Final>>,
}

impl Ledger {
    fn settle(&self, f: &Final, outcome: Option<ReportOutcome>) {
        if let Some(o) = outcome {
            let f2 = f.clone();
            let written = self
                .store
                .write(move |tx| db::record_report(tx, &f2.reporter, f2.buildid, f2.kind, o));
            if let Err(e) = written {
                // The sweep will deliver it again: at least once.
                log::warn!(
                    "reporters: recording the delivery for build {}: {e:#}",
                    f.buildid
                );
            }
        }
        // After the row is committed: the sweep reads the set first, then
        // the table, so it never finds a delivery in neither.
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(f);
    }

    fn in_flight(&self) -> HashSet<Final> {
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn start(&self, f: Final) {
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(f);
    }
}

struct Reporters {
    store: Store,
    master_dir: PathBuf,
    cfg: Arc<Config>,
    active: Vec<Active>,
    ledger: Arc<Ledger>,
    /// Outbox threads, started when a reporter first needs one.
    statuses: Option<Outbox>,
    mails: Option<Outbox>,
    outboxes: Vec<JoinHandle<()>>,
    /// When the sweep last pruned `reporter_deliveries`.
    pruned: Option<Instant>,
}

/// How often the sweep forgets delivery records older than its window.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Whether `cfg` has reporters: the master runs the reporters thread (and
/// subscribes it to the hub, whose buffer for it is 256 KB) only then.
pub(crate) fn wanted(cfg: &Config) -> bool {
    !cfg.reporters.is_empty()
}

/// Starts the reporters thread, and subscribes it to `hub`. The returned
/// handle ends after `ReporterMsg::Shutdown` (or when every sender of `ctl`
/// is dropped) once the outboxes have flushed.
pub(crate) fn spawn(
    store: Store,
    cfg: Arc<Config>,
    master_dir: PathBuf,
    hub: &Hub,
    ctl: Receiver<ReporterMsg>,
) -> Result<JoinHandle<()>> {
    let sub = hub.subscribe(EVENT_CAPACITY);
    Ok(std::thread::Builder::new()
        .name("reporters".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            let mut r = Reporters {
                ledger: Arc::new(Ledger {
                    store: store.clone(),
                    in_flight: Mutex::default(),
                }),
                store,
                master_dir,
                active: vec![],
                cfg: cfg.clone(),
                statuses: None,
                mails: None,
                outboxes: vec![],
                pruned: None,
            };
            r.configure(cfg);
            // The first sweep at once: builds that ended while the master
            // was down, or whose delivery a stop cut short.
            let mut next_sweep = Instant::now();
            loop {
                let now = Instant::now();
                if next_sweep <= now {
                    // More to do: again soon (not at once: a build that
                    // cannot be read must not make this a busy loop).
                    next_sweep = match r.sweep() {
                        true => now + Duration::from_secs(1),
                        false => now + SWEEP_EVERY,
                    };
                }
                let timer = after(next_sweep.saturating_duration_since(Instant::now()));
                select! {
                    recv(sub.events) -> ev => match ev {
                        Ok(Event::BuildStarted { buildid, .. }) => r.report(buildid, false, false),
                        Ok(Event::BuildFinished { buildid, .. }) => r.report(buildid, true, false),
                        Ok(_) => {}
                        Err(_) => break,
                    },
                    recv(ctl) -> msg => match msg {
                        Ok(ReporterMsg::Reconfig(cfg)) => r.configure(cfg),
                        Ok(ReporterMsg::Shutdown) | Err(_) => break,
                    },
                    recv(timer) -> _ => {}
                    // The hub dropped events for us: sweep once the events
                    // still buffered are handled (a short delay).
                    recv(sub.missed) -> _ => {
                        log::warn!(
                            "reporters: {} build events dropped so far; reading finished builds from the database",
                            sub.dropped()
                        );
                        next_sweep = next_sweep.min(Instant::now() + MISSED_DELAY);
                    }
                }
            }
            // Dropping the senders lets the outboxes flush and end.
            let outboxes = std::mem::take(&mut r.outboxes);
            drop(r);
            for h in outboxes {
                let _ = h.join();
            }
            log::debug!("reporters thread exiting");
        })?)
}

/// Starts the outbox thread `name` into `slot` unless it runs already.
fn start_outbox(
    slot: &mut Option<Outbox>,
    threads: &mut Vec<JoinHandle<()>>,
    name: &str,
    ledger: &Arc<Ledger>,
) -> Result<()> {
    if slot.is_none() {
        let ledger = ledger.clone();
        let (tx, h) = spawn_outbox(name, Arc::new(move |f, o| ledger.settle(f, o)))?;
        threads.push(h);
        *slot = Some(tx);
    }
    Ok(())
}

impl Reporters {
    fn configure(&mut self, cfg: Arc<Config>) {
        self.active.clear();
        for (i, r) in cfg.reporters.iter().enumerate() {
            let made = match &r.kind {
                ReporterKind::GiteaStatus(g) => start_outbox(
                    &mut self.statuses,
                    &mut self.outboxes,
                    "gitea-status",
                    &self.ledger,
                )
                .and_then(|_| gitea::Target::new(g, r.verify_tls, &self.master_dir))
                .map(|t| Target::Gitea(g.clone(), Arc::new(t))),
                ReporterKind::Mail(m) => {
                    start_outbox(&mut self.mails, &mut self.outboxes, "mail", &self.ledger)
                        .and_then(|_| mail::Target::new(m, r.verify_tls, &self.master_dir))
                        .map(|t| Target::Mail(m.clone(), Arc::new(t)))
                }
            };
            let target = match made {
                Ok(t) => t,
                Err(e) => {
                    log::error!("reporters[{i}] ({}): disabled: {e:#}", r.kind.type_name());
                    continue;
                }
            };
            let id = reporter_id(r);
            let since = {
                let id = id.clone();
                self.store.write(move |tx| db::reporter_since(tx, &id))
            };
            // Unknown: the sweep reports nothing for it until a reconfig.
            let after_build = since.unwrap_or_else(|e| {
                log::error!("reporters[{i}]: reading when it was configured: {e:#}");
                BuildId(i64::MAX)
            });
            self.active.push(Active {
                id: id.into(),
                after_build,
                reporter: r.clone(),
                target,
            });
        }
        self.cfg = cfg;
    }

    /// The base of links to build pages: `buildbot_url`, else the web UI's
    /// own address.
    fn base_url(&self) -> String {
        let base = self
            .cfg
            .buildbot_url
            .clone()
            .unwrap_or_else(|| format!("http://{}:{}/", self.cfg.www.bind, self.cfg.www.port));
        if base.ends_with('/') {
            base
        } else {
            format!("{base}/")
        }
    }

    /// Reports finished builds whose final delivery no reporter settled
    /// (module header). Returns whether there were more than it took
    /// (sweep again soon).
    fn sweep(&mut self) -> bool {
        let now = crate::model::now();
        let floor = now - SWEEP_WINDOW.as_secs() as i64;
        // The set before the table: see `Ledger::settle`.
        let in_flight = self.ledger.in_flight();
        let mut todo: Vec<(usize, BuildId)> = vec![];
        let mut full = false;
        {
            let reader = match self.store.reader() {
                Ok(r) => r,
                Err(e) => {
                    log::error!("reporters: sweep: {e:#}");
                    return false;
                }
            };
            for (i, a) in self.active.iter().enumerate() {
                let kind = a.target.kind();
                let fin = |buildid| Final {
                    reporter: a.id.clone(),
                    buildid,
                    kind,
                };
                // Page past the deliveries still in flight (Gitea down: they
                // wait in the outbox), at most SWEEP_PAGES pages a sweep.
                let mut after = a.after_build;
                let mut found = 0;
                for _ in 0..SWEEP_PAGES {
                    let page = match db::unreported_builds(
                        &reader,
                        &a.id,
                        kind,
                        (after, floor),
                        SWEEP_BATCH,
                    ) {
                        Ok(p) => p,
                        Err(e) => {
                            log::error!("reporters: sweep: {e:#}");
                            break;
                        }
                    };
                    let last_page = (page.len() as i64) < SWEEP_BATCH;
                    after = page.last().copied().unwrap_or(after);
                    for b in page {
                        if !in_flight.contains(&fin(b)) {
                            todo.push((i, b));
                            found += 1;
                        }
                    }
                    if last_page || found >= SWEEP_BATCH {
                        full |= !last_page;
                        break;
                    }
                }
            }
        }
        if !todo.is_empty() {
            log::info!(
                "reporters: {} final deliveries of finished builds were never settled (dropped events or a restart); reporting them now",
                todo.len()
            );
        }
        for (i, buildid) in todo {
            self.report_to(buildid, true, true, Some(i));
        }
        // Rows are kept only as long as the sweep looks back: pruned hourly.
        if self.pruned.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
            self.pruned = Some(Instant::now());
            match self.store.write(move |tx| db::prune_reports(tx, floor)) {
                Ok(n) if n > 0 => log::debug!("reporters: forgot {n} old delivery records"),
                Ok(_) => {}
                Err(e) => log::warn!("reporters: pruning delivery records: {e:#}"),
            }
        }
        full
    }

    fn report(&mut self, buildid: BuildId, finished: bool, late: bool) {
        self.report_to(buildid, finished, late, None);
    }

    /// Reports `buildid` (`finished` or just started) to every reporter,
    /// or only to reporter `only`. `late`: from the sweep, so a newer
    /// build's status for the same commit must not be overwritten.
    fn report_to(&mut self, buildid: BuildId, finished: bool, late: bool, only: Option<usize>) {
        if self.active.is_empty() {
            return;
        }
        let reader = match self.store.reader() {
            Ok(r) => r,
            Err(e) => return log::error!("reporters: reading build {buildid}: {e:#}"),
        };
        let rep = match db::build_report(&reader, buildid) {
            Ok(Some(r)) => r,
            Ok(None) => return log::warn!("reporters: build {buildid} not found"),
            Err(e) => return log::error!("reporters: reading build {buildid}: {e:#}"),
        };
        let url = format!(
            "{}builders/{}/builds/{}",
            self.base_url(),
            rep.builder,
            rep.number
        );
        // Final deliveries settled here, with nothing to send.
        let mut nothing: Vec<Final> = vec![];
        for (i, a) in self.active.iter().enumerate() {
            if only.is_some_and(|o| o != i) {
                continue;
            }
            let fin = Final {
                reporter: a.id.clone(),
                buildid,
                kind: a.target.kind(),
            };
            if finished {
                // Already settled or on its way (the sweep and the event
                // may both come for one build).
                if self.ledger.in_flight().contains(&fin) {
                    continue;
                }
                match db::report_settled(&reader, &fin.reporter, buildid, fin.kind) {
                    Ok(false) => {}
                    Ok(true) => continue,
                    Err(e) => {
                        log::error!("reporters: reading build {buildid}: {e:#}");
                        continue;
                    }
                }
            }
            if !a.reporter.reports_on(&rep.builder) {
                if finished {
                    nothing.push(fin);
                }
                continue;
            }
            match &a.target {
                Target::Gitea(cfg, target) => {
                    // The builder as configured now: a reconfig between
                    // start and end moves the status as it moves the checkout.
                    let builder_repo = self
                        .cfg
                        .builder(&rep.builder)
                        .and_then(gitea::builder_repourl);
                    match gitea::status_for(cfg, &rep, &url, finished, builder_repo) {
                        Ok(post) => {
                            let Some(statuses) = &self.statuses else {
                                continue;
                            };
                            if late {
                                match db::newer_build_of_revision(
                                    &reader,
                                    rep.builderid,
                                    buildid,
                                    &post.sha,
                                ) {
                                    Ok(true) => {
                                        let o = ReportOutcome::Superseded;
                                        self.ledger.settle(&fin, Some(o));
                                        continue;
                                    }
                                    Ok(false) => {}
                                    Err(e) => {
                                        log::error!("reporters: reading build {buildid}: {e:#}");
                                        continue;
                                    }
                                }
                            }
                            let settles = finished.then(|| {
                                self.ledger.start(fin.clone());
                                fin
                            });
                            let _ = statuses.send(Box::new(gitea::StatusJob {
                                target: target.clone(),
                                post,
                                settles,
                            }));
                        }
                        // Expected for the pending status of a build
                        // whose commit is known only after its checkout.
                        Err(why) if !finished => log::debug!(
                            "gitea_status: no pending status for build {buildid}: {why}"
                        ),
                        Err(why) => {
                            log::info!("gitea_status: no status for build {buildid}: {why}");
                            nothing.push(fin);
                        }
                    }
                }
                Target::Mail(cfg, target) if finished => {
                    let results = rep.results.unwrap_or(crate::model::BuildResult::Exception);
                    if !mail::wants_mail(&cfg.modes, results, rep.previous_results) {
                        nothing.push(fin);
                        continue;
                    }
                    let (subject, body) = mail::compose(&self.cfg.title, &rep, &url);
                    let Some(mails) = &self.mails else {
                        continue;
                    };
                    self.ledger.start(fin.clone());
                    let _ = mails.send(Box::new(mail::MailJob {
                        target: target.clone(),
                        subject,
                        body,
                        settles: Some(fin),
                    }));
                }
                // No mail before the build ended.
                Target::Mail(..) => {}
            }
        }
        drop(reader);
        if !nothing.is_empty() {
            let written = self.store.write(move |tx| {
                for f in &nothing {
                    db::record_report(tx, &f.reporter, f.buildid, f.kind, ReportOutcome::Nothing)?;
                }
                Ok(())
            });
            if let Err(e) = written {
                log::warn!("reporters: recording build {buildid}: {e:#}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;

    #[test]
    fn backoff_doubles_and_caps() {
        let secs: Vec<u64> = (0..12).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
    }

    struct Fake {
        key: &'static str,
        label: &'static str,
        fail_first: u32,
        tries: Arc<AtomicU32>,
        log: Arc<Mutex<Vec<&'static str>>>,
    }

    impl Delivery for Fake {
        fn key(&self) -> Option<String> {
            Some(self.key.into())
        }
        fn describe(&self) -> String {
            self.label.into()
        }
        fn attempt(&self) -> Result<(), Failure> {
            let n = self.tries.fetch_add(1, Ordering::SeqCst);
            if n < self.fail_first {
                return Err(Failure::Retry("down".into()));
            }
            self.log.lock().unwrap().push(self.label);
            Ok(())
        }
    }

    /// A target that is down: every attempt fails with a retry.
    struct Down(Arc<AtomicU32>);

    impl Delivery for Down {
        fn key(&self) -> Option<String> {
            None
        }
        fn describe(&self) -> String {
            "down".into()
        }
        fn attempt(&self) -> Result<(), Failure> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Err(Failure::Retry("down".into()))
        }
    }

    /// A long outage keeps at most `MAX_WAITING` deliveries for a retry:
    /// those beyond are tried once and left (to the sweep, for finals).
    /// Seen from outside through the last try at shutdown, which goes only
    /// to the deliveries that were kept.
    #[test]
    fn the_retry_list_is_bounded_during_an_outage() {
        let (tx, h) = spawn_outbox("test-outbox", Arc::new(|_, _| {})).unwrap();
        let tries = Arc::new(AtomicU32::new(0));
        let extra = 25;
        for _ in 0..MAX_WAITING + extra {
            tx.send(Box::new(Down(tries.clone()))).unwrap();
        }
        drop(tx);
        h.join().unwrap();
        let kept = MAX_WAITING as u32;
        assert_eq!(tries.load(Ordering::SeqCst), kept + extra as u32 + kept);
    }

    #[test]
    fn a_newer_delivery_replaces_a_waiting_retry() {
        let (tx, h) = spawn_outbox("test-outbox", Arc::new(|_, _| {})).unwrap();
        let log = Arc::new(Mutex::new(vec![]));
        let tries = Arc::new(AtomicU32::new(0));
        // "pending" fails and waits 1 s for its retry; "final" arrives first.
        tx.send(Box::new(Fake {
            key: "k",
            label: "pending",
            fail_first: 1,
            tries: tries.clone(),
            log: log.clone(),
        }))
        .unwrap();
        tx.send(Box::new(Fake {
            key: "k",
            label: "final",
            fail_first: 0,
            tries: Arc::new(AtomicU32::new(0)),
            log: log.clone(),
        }))
        .unwrap();
        // Another key retries and gets through on its second try.
        let other_tries = Arc::new(AtomicU32::new(0));
        tx.send(Box::new(Fake {
            key: "other",
            label: "other",
            fail_first: 1,
            tries: other_tries.clone(),
            log: log.clone(),
        }))
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while log.lock().unwrap().len() < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(tx);
        h.join().unwrap();
        assert_eq!(*log.lock().unwrap(), ["final", "other"]);
        assert_eq!(tries.load(Ordering::SeqCst), 1, "pending was not retried");
        assert_eq!(other_tries.load(Ordering::SeqCst), 2);
    }
}
