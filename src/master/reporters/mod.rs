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
//! over unbounded channels. An outbox sends one delivery at a time and
//! retries failures with exponential backoff (1 s doubling to 5 min, 12
//! tries); a newer delivery with the same key (the same commit and status
//! context) replaces one waiting for a retry, so Gitea never ends up with a
//! stale "pending" after the final state. Nothing here can fail or delay a
//! build: failures are logged.
//!
//! Messages: `ReporterMsg::{Reconfig, Shutdown}` from the master; events
//! `BuildStarted` / `BuildFinished` from the hub.

pub(crate) mod gitea;
pub(crate) mod mail;

use crate::config::{Config, GiteaStatus, Mail, Reporter, ReporterKind};
use crate::db::{self, Store};
use crate::master::events::{Event, Hub};
use crate::model::BuildId;
use anyhow::Result;
use crossbeam_channel::{after, never, select, unbounded, Receiver, Sender};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub(crate) enum ReporterMsg {
    Reconfig(Arc<Config>),
    Shutdown,
}

/// Room for events between two reads of the reporters thread; it only
/// does a small indexed read per build event, so this is never reached
/// unless the machine stalls.
pub(crate) const EVENT_CAPACITY: usize = 4096;

/// Why a delivery failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Worth trying again (network, 5xx, 429).
    Retry(String),
    /// Would fail the same way again (bad token, unknown repository).
    Permanent(String),
}

/// One thing to deliver (a commit status, a mail).
pub(crate) trait Delivery: Send {
    /// Deliveries with the same key replace each other while waiting.
    fn key(&self) -> Option<String>;
    fn describe(&self) -> String;
    fn attempt(&self) -> Result<(), Failure>;
}

pub(crate) type Outbox = Sender<Box<dyn Delivery>>;

/// After the n-th failure (0-based), wait this long.
pub(crate) fn backoff(failures: u32) -> Duration {
    Duration::from_secs((1u64 << failures.min(16)).min(300))
}

const MAX_TRIES: u32 = 12;

struct Waiting {
    job: Box<dyn Delivery>,
    failures: u32,
    due: Instant,
}

/// Starts an outbox thread; it runs until every sender is dropped, then
/// tries what is still waiting once more and exits.
pub(crate) fn spawn_outbox(name: &str) -> Result<(Outbox, JoinHandle<()>)> {
    let (tx, rx) = unbounded::<Box<dyn Delivery>>();
    let h = std::thread::Builder::new()
        .name(name.into())
        .stack_size(256 * 1024)
        .spawn(move || outbox_loop(rx))?;
    Ok((tx, h))
}

fn outbox_loop(rx: Receiver<Box<dyn Delivery>>) {
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
                        waiting.retain(|w| w.job.key().as_deref() != Some(k.as_str()));
                    }
                    attempt(job, 0, &mut waiting);
                }
                Err(_) => break,
            },
            recv(timeout) -> _ => {
                let now = Instant::now();
                let (due, later): (Vec<Waiting>, Vec<Waiting>) =
                    waiting.drain(..).partition(|w| w.due <= now);
                waiting = later;
                for w in due {
                    attempt(w.job, w.failures, &mut waiting);
                }
            }
        }
    }
    // Shutting down: one last try for what waits, no more waiting.
    for w in std::mem::take(&mut waiting) {
        if let Err(e) = w.job.attempt() {
            log::warn!("{}: not delivered before shutdown: {e:?}", w.job.describe());
        }
    }
}

fn attempt(job: Box<dyn Delivery>, failures: u32, waiting: &mut Vec<Waiting>) {
    match job.attempt() {
        Ok(()) => log::debug!("{}: delivered", job.describe()),
        Err(Failure::Permanent(e)) => log::error!("{}: failed, not retrying: {e}", job.describe()),
        Err(Failure::Retry(e)) if failures + 1 >= MAX_TRIES => {
            log::error!(
                "{}: failed {MAX_TRIES} times, giving up: {e}",
                job.describe()
            )
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

/// A configured reporter, ready to use.
enum Active {
    Gitea(Reporter, GiteaStatus, Arc<gitea::Target>),
    Mail(Reporter, Mail, Arc<mail::Target>),
}

struct Reporters {
    store: Store,
    master_dir: PathBuf,
    cfg: Arc<Config>,
    active: Vec<Active>,
    /// Outbox threads, started when a reporter first needs one.
    statuses: Option<Outbox>,
    mails: Option<Outbox>,
    outboxes: Vec<JoinHandle<()>>,
}

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
    let events = hub.subscribe(EVENT_CAPACITY);
    Ok(std::thread::Builder::new()
        .name("reporters".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            let mut r = Reporters {
                store,
                master_dir,
                active: vec![],
                cfg: cfg.clone(),
                statuses: None,
                mails: None,
                outboxes: vec![],
            };
            r.configure(cfg);
            loop {
                select! {
                    recv(events) -> ev => match ev {
                        Ok(Event::BuildStarted { buildid, .. }) => r.report(buildid, false),
                        Ok(Event::BuildFinished { buildid, .. }) => r.report(buildid, true),
                        Ok(_) => {}
                        Err(_) => break,
                    },
                    recv(ctl) -> msg => match msg {
                        Ok(ReporterMsg::Reconfig(cfg)) => r.configure(cfg),
                        Ok(ReporterMsg::Shutdown) | Err(_) => break,
                    },
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
) -> Result<()> {
    if slot.is_none() {
        let (tx, h) = spawn_outbox(name)?;
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
                ReporterKind::GiteaStatus(g) => {
                    start_outbox(&mut self.statuses, &mut self.outboxes, "gitea-status")
                        .and_then(|_| gitea::Target::new(g, r.verify_tls, &self.master_dir))
                        .map(|t| Active::Gitea(r.clone(), g.clone(), Arc::new(t)))
                }
                ReporterKind::Mail(m) => start_outbox(&mut self.mails, &mut self.outboxes, "mail")
                    .and_then(|_| mail::Target::new(m, r.verify_tls, &self.master_dir))
                    .map(|t| Active::Mail(r.clone(), m.clone(), Arc::new(t))),
            };
            match made {
                Ok(a) => self.active.push(a),
                Err(e) => log::error!("reporters[{i}] ({}): disabled: {e:#}", r.kind.type_name()),
            }
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

    fn report(&mut self, buildid: BuildId, finished: bool) {
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
        for a in &self.active {
            match a {
                Active::Gitea(r, cfg, target) if r.reports_on(&rep.builder) => {
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
                            let _ = statuses.send(Box::new(gitea::StatusJob {
                                target: target.clone(),
                                post,
                            }));
                        }
                        // Expected for the pending status of a build
                        // whose commit is known only after its checkout.
                        Err(why) if !finished => log::debug!(
                            "gitea_status: no pending status for build {buildid}: {why}"
                        ),
                        Err(why) => {
                            log::info!("gitea_status: no status for build {buildid}: {why}")
                        }
                    }
                }
                Active::Mail(r, cfg, target) if finished && r.reports_on(&rep.builder) => {
                    let results = rep.results.unwrap_or(crate::model::BuildResult::Exception);
                    if mail::wants_mail(&cfg.modes, results, rep.previous_results) {
                        let (subject, body) = mail::compose(&self.cfg.title, &rep, &url);
                        let Some(mails) = &self.mails else {
                            continue;
                        };
                        let _ = mails.send(Box::new(mail::MailJob {
                            target: target.clone(),
                            subject,
                            body,
                        }));
                    }
                }
                // Not for this builder, or a mail before the build ended.
                Active::Gitea(..) | Active::Mail(..) => {}
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

    #[test]
    fn a_newer_delivery_replaces_a_waiting_retry() {
        let (tx, h) = spawn_outbox("test-outbox").unwrap();
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
