//! Chained builds, master side (issue 20 point 3): `trigger` steps, run
//! by the master and never sent to a worker, and `dependent` schedulers.
//!
//! Owns: the chain thread. It receives [`ChainMsg`] from worker
//! connection threads (a trigger step waits for buildsets; a stopped
//! build no longer waits), watches build ends on the event hub (a
//! `subscribe` subscription, with a one-second tick as the safety net for
//! missed events and for requests cancelled from the queue, which end no
//! build; only while a step waits or a dependent scheduler is configured),
//! answers each waiting step with a [`TriggerDone`] on the channel
//! its connection gave, and starts dependent schedulers' buildsets, then
//! sends `BotMsg::RequestsAdded`.
//!
//! A trigger step ([`start_trigger`], called on the connection thread):
//! one buildset per named triggerable scheduler, with the triggering
//! build's source stamp (at its `got_revision` once a git step reported
//! one, as Buildbot's `updateSourceStamp`), `scheduler`, and the chosen
//! properties (`set_properties`, interpolated; `copy_properties`), source
//! "Trigger". The buildsets and their `build_triggers` rows are one
//! transaction, committed before the step waits: a build retried after a
//! master restart (or a lost worker) finds them and waits for them again
//! instead of triggering twice. Without `wait` the step succeeds once
//! they are stored; with it, the worst result of the triggered builds is
//! the step's (a request collapsed into another build counts with that
//! build's result).
//!
//! Stopping the triggering build while it waits ends the step CANCELLED at
//! once; the triggered builds go on (Buildbot's default: `Trigger` cancels
//! nothing unless asked), and stop them from their own pages if wanted.
//!
//! A dependent scheduler starts its builders on the source stamp (and
//! changes) of each buildset of its `upstream` scheduler that completed
//! with every request SUCCESS, once per upstream buildset (checked in the
//! creating transaction); `scheduler_state` keeps, per dependent, the
//! upstream buildsets already looked at, starting at the newest buildset
//! when the scheduler is first seen (no builds for history), and forgotten
//! when it leaves the config.

use crate::config::{Config, LiveConfig, SchedulerKind, Trigger};
use crate::db::{self, Props, SourceStamp, Store, TriggerTarget};
use crate::master::botmaster::BotMsg;
use crate::master::build::{interpolate, worst, BuildJob, GOT_REVISION_SOURCE};
use crate::master::events::{Event, Hub};
use crate::model::{BuildId, BuildResult, BuildsetId};
use anyhow::{anyhow, Result};
use crossbeam_channel::{after, never, select, Sender};
use std::sync::Arc;
use std::time::Duration;

/// The source of the properties a trigger step passes on.
pub(crate) const TRIGGER_SOURCE: &str = "Trigger";

/// How often waits and dependents are looked at without an event.
const TICK: Duration = Duration::from_secs(1);

/// Upstream buildsets a dependent scheduler looks at per pass.
const UPSTREAM_BATCH: i64 = 100;

/// The `scheduler_state` name of a dependent's mark (module header).
const MARK: &str = "after_buildset";

pub(crate) enum ChainMsg {
    /// Step `step` of `buildid` waits for `buildsets`; answer on `reply`.
    Wait {
        buildid: BuildId,
        step: u32,
        buildsets: Vec<BuildsetId>,
        reply: Sender<TriggerDone>,
    },
    /// The build no longer waits (stopped, or its connection is gone).
    Forget {
        buildid: BuildId,
    },
    /// The config changed (read it from the `LiveConfig`): a dependent
    /// scheduler seen for the first time starts after the buildsets that
    /// exist now, not after the next build's end.
    Reconfig,
    Shutdown,
}

/// A waiting trigger step's answer: the triggered builds are all done.
#[derive(Debug)]
pub(crate) struct TriggerDone {
    pub buildid: BuildId,
    pub step: u32,
    pub results: BuildResult,
    /// One line per triggered build, for the step's log.
    pub summary: String,
}

/// Why a trigger step could not start.
#[derive(Debug)]
pub(crate) enum TriggerFailed {
    /// A named scheduler is no triggerable one now (reconfigured away):
    /// the step ends EXCEPTION.
    Config(String),
    /// The database refused the buildsets (nothing of them is stored), or
    /// the master is stopping: the build ends RETRY and is queued again, as
    /// when any step cannot be recorded (its retry finds what was stored).
    Retry(anyhow::Error),
}

/// What [`start_trigger`] did.
pub(crate) enum Started {
    /// The step is over (no `wait`): its result.
    Done(BuildResult),
    /// The step waits: the chain thread answers with a [`TriggerDone`].
    Waiting,
}

/// What a connection thread needs to run trigger steps.
#[derive(Clone)]
pub(crate) struct ChainCtx {
    pub store: Store,
    pub cfg: LiveConfig,
    pub bot: Sender<BotMsg>,
    pub chain: Sender<ChainMsg>,
}

/// Runs trigger step `step` of `job` up to its wait: stores the buildsets
/// (or finds those an earlier build of the request made), nudges the
/// botmaster, and registers the wait. `log` gets the lines for the step's
/// log.
pub(crate) fn start_trigger(
    ctx: &ChainCtx,
    job: &BuildJob,
    step: u32,
    t: &Trigger,
    reply: &Sender<TriggerDone>,
    log: &mut dyn FnMut(&str),
) -> Result<Started, TriggerFailed> {
    let cfg = ctx.cfg.current();
    let targets = t
        .schedulers
        .iter()
        .map(|name| match cfg.scheduler(name).map(|s| (&s.kind, s)) {
            Some((SchedulerKind::Triggerable, s)) => Ok(TriggerTarget {
                scheduler: name.clone(),
                builders: s.builders.clone(),
            }),
            _ => Err(TriggerFailed::Config(format!(
                "no triggerable scheduler named {name:?} in the config now (reconfigured?)"
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (ss, props) = passed_on(job, t);
    let reason = format!("Triggered by {} #{}", job.builder.name, job.number);
    let (parent, targets2) = (job.buildid, targets.clone());
    let (ids, made) = ctx
        .store
        .write(move |c| db::trigger_buildsets(c, parent, step, &targets2, &ss, &props, &reason))
        .map_err(TriggerFailed::Retry)?;
    if made {
        let _ = ctx.bot.send(BotMsg::RequestsAdded);
        for (target, bsid) in targets.iter().zip(&ids) {
            log(&format!(
                "triggered scheduler {:?}: buildset {bsid} (builders {})\n",
                target.scheduler,
                target.builders.join(", ")
            ));
        }
    } else {
        let list: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        log(&format!(
            "an earlier build of this request triggered buildsets {} at this step; not triggering again\n",
            list.join(", ")
        ));
    }
    if !t.wait {
        return Ok(Started::Done(BuildResult::Success));
    }
    log("waiting for the triggered builds\n");
    ctx.chain
        .send(ChainMsg::Wait {
            buildid: job.buildid,
            step,
            buildsets: ids,
            reply: reply.clone(),
        })
        .map_err(|_| TriggerFailed::Retry(anyhow!("the master is shutting down")))?;
    Ok(Started::Waiting)
}

/// The source stamp and properties a trigger step passes on.
fn passed_on(job: &BuildJob, t: &Trigger) -> (SourceStamp, Props) {
    let mut ss = job.ss.clone();
    if let Some((v, src)) = job.props.get("got_revision") {
        if src == GOT_REVISION_SOURCE {
            if let Some(sha) = v.as_str() {
                ss.revision = Some(sha.to_string());
            }
        }
    }
    let mut props = Props::new();
    for name in &t.copy_properties {
        if let Some((v, _)) = job.props.get(name) {
            props.insert(name.clone(), (v.clone(), TRIGGER_SOURCE.into()));
        }
    }
    for (name, v) in &t.set_properties {
        let value = interpolate(v, &job.props);
        props.insert(name.clone(), (value.into(), TRIGGER_SOURCE.into()));
    }
    (ss, props)
}

struct Waiting {
    buildid: BuildId,
    step: u32,
    buildsets: Vec<BuildsetId>,
    reply: Sender<TriggerDone>,
}

pub(crate) fn spawn(
    store: Store,
    cfg: LiveConfig,
    events: &Hub,
    bot: Sender<BotMsg>,
) -> Result<(Sender<ChainMsg>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let sub = events.subscribe(64);
    let handle = std::thread::Builder::new()
        .name("chain".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            let mut c = Chain {
                store,
                cfg,
                bot,
                waits: vec![],
                tidied: None,
            };
            // At once: a dependent scheduler seen for the first time
            // starts after the buildsets that exist now.
            c.pass();
            loop {
                // An idle master with nothing chained never wakes this
                // thread but for build ends.
                let ticker = if c.busy() { after(TICK) } else { never() };
                select! {
                    recv(rx) -> m => match m {
                        Ok(m) => if !c.handle(m) { break },
                        Err(_) => break,
                    },
                    recv(sub.events) -> e => match e {
                        Ok(Event::BuildFinished { .. }) => {}
                        Ok(_) => continue,
                        Err(_) => break,
                    },
                    recv(sub.missed) -> _ => {}
                    recv(ticker) -> _ => {}
                }
                c.pass();
            }
            log::debug!("chain thread exiting");
        })?;
    Ok((tx, handle))
}

struct Chain {
    /// Reads borrow a pooled reader when there is something to read (a
    /// wait, a dependent scheduler): a master without chains opens no
    /// connection for this thread.
    store: Store,
    cfg: LiveConfig,
    bot: Sender<BotMsg>,
    /// One per waiting trigger step: bounded by the builds running.
    waits: Vec<Waiting>,
    /// The config whose dependents' marks were last tidied.
    tidied: Option<Arc<Config>>,
}

impl Chain {
    /// Whether something may be due without an event: a step waits, or a
    /// dependent scheduler is configured.
    fn busy(&self) -> bool {
        !self.waits.is_empty()
            || self
                .cfg
                .current()
                .schedulers
                .iter()
                .any(|s| s.kind.upstream().is_some())
    }

    /// false: shut down.
    fn handle(&mut self, m: ChainMsg) -> bool {
        match m {
            ChainMsg::Wait {
                buildid,
                step,
                buildsets,
                reply,
            } => self.waits.push(Waiting {
                buildid,
                step,
                buildsets,
                reply,
            }),
            ChainMsg::Forget { buildid } => self.waits.retain(|w| w.buildid != buildid),
            ChainMsg::Reconfig => {}
            ChainMsg::Shutdown => return false,
        }
        true
    }

    fn pass(&mut self) {
        if let Err(e) = self.answer_waits() {
            log::error!("chain: looking at triggered builds: {e:#}");
        }
        if let Err(e) = self.dependents() {
            log::error!("chain: dependent schedulers: {e:#}");
        }
    }

    /// Answers the waits whose triggered builds are all done.
    fn answer_waits(&mut self) -> Result<()> {
        if self.waits.is_empty() {
            return Ok(());
        }
        let reader = self.store.reader()?;
        let mut i = 0;
        while i < self.waits.len() {
            let w = &self.waits[i];
            let builds = db::triggered(&reader, &w.buildsets)?;
            if builds.iter().any(|b| b.results.is_none()) {
                i += 1;
                continue;
            }
            let mut results = BuildResult::Success;
            let mut summary = String::new();
            for b in &builds {
                let r = b.results.unwrap_or(BuildResult::Success);
                results = worst(results, r);
                let number = b.build.map(|(_, n)| format!(" #{n}")).unwrap_or_default();
                summary.push_str(&format!("{}{number}: {}\n", b.builder, r.name()));
            }
            let w = self.waits.swap_remove(i);
            // A connection gone meanwhile: its build is retried, and the
            // retry waits for the same buildsets.
            let _ = w.reply.send(TriggerDone {
                buildid: w.buildid,
                step: w.step,
                results,
                summary,
            });
        }
        Ok(())
    }

    /// Starts the dependent schedulers' buildsets that are due.
    fn dependents(&mut self) -> Result<()> {
        let cfg = self.cfg.current();
        if !self.tidied.as_ref().is_some_and(|t| Arc::ptr_eq(t, &cfg)) {
            // At start and after each reconfig: a dependent that left the
            // config forgets its mark.
            let keep: Vec<String> = cfg
                .schedulers
                .iter()
                .filter(|s| s.kind.upstream().is_some())
                .map(|s| s.name.clone())
                .collect();
            self.store
                .write(move |c| db::forget_state_except(c, MARK, &keep))?;
            self.tidied = Some(cfg.clone());
        }
        let mut started = false;
        let mut reader = None;
        for s in &cfg.schedulers {
            let Some(upstream) = s.kind.upstream() else {
                continue;
            };
            let reader = match &mut reader {
                Some(r) => r,
                None => reader.insert(self.store.reader()?),
            };
            let name = s.name.clone();
            let mark = db::scheduler_state(reader, &name, MARK)?
                .and_then(|v| v.parse::<i64>().ok())
                .map(BuildsetId);
            let Some(mark) = mark else {
                let last = db::last_buildset(reader)?;
                self.store
                    .write(move |c| db::set_scheduler_state(c, &name, MARK, &last.0.to_string()))?;
                continue;
            };
            let rows = db::upstream_buildsets(reader, upstream, mark, UPSTREAM_BATCH)?;
            let due: Vec<BuildsetId> = rows
                .iter()
                .filter(|(_, complete, ok)| *complete && *ok)
                .map(|(id, _, _)| *id)
                .collect();
            // The mark moves over the complete ones up to the first still
            // running: those after it are looked at again.
            let new_mark = rows
                .iter()
                .take_while(|(_, complete, _)| *complete)
                .last()
                .map(|(id, _, _)| *id)
                .unwrap_or(mark);
            if due.is_empty() && new_mark == mark {
                continue;
            }
            let builders = s.builders.clone();
            let made = self.store.write(move |c| {
                let mut made = 0;
                for up in &due {
                    made += usize::from(db::start_dependent(c, &name, &builders, *up)?.is_some());
                }
                db::set_scheduler_state(c, &name, MARK, &new_mark.0.to_string())?;
                Ok(made)
            })?;
            if made > 0 {
                log::info!(
                    "scheduler {}: started {made} buildset(s) after {upstream:?}",
                    s.name
                );
                started = true;
            }
        }
        if started {
            let _ = self.bot.send(BotMsg::RequestsAdded);
        }
        Ok(())
    }
}
