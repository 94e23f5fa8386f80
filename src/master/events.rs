//! In-process publish/subscribe of build events.
//!
//! Owns: the `Hub`, a list of subscriber channels. Worker connection threads
//! publish what happens to builds (started, step started, log appended,
//! step finished, build finished); whoever needs to react subscribes: the
//! reporters thread (commit statuses, mail), live log tails on the web
//! pages (SSE). Publishing never blocks: each subscriber has a bounded
//! channel, and a subscriber that falls behind misses events rather than
//! slowing a build (events are hints; the database and log files are the
//! truth, so a subscriber that misses one re-reads them).
//!
//! Two kinds of subscription: `subscribe` gets a build's start and end
//! only (reporters), `subscribe_all` also every step and log append (live
//! pages). A hello-world build appends to its logs ~20 times; waking a
//! thread that ignores them cost ~7 % of the master's CPU per build.
//!
//! A `subscribe` subscriber also gets a count of the events it missed
//! ([`Subscription::dropped`]), so it knows when to re-read the database
//! (the reporters sweep for unreported builds at once).
//!
//! Fault injection: `MINIBOT_FAULT_DROP_EVENTS=build_finished` (read when a
//! subscription is made; debugging and the fault tests only) drops every
//! `BuildFinished` for `subscribe` subscribers exactly as a full buffer
//! would, counted as missed.

use crate::model::{BuildId, BuilderId, LogId, StepId};
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The environment variable of the fault injection (module header).
pub(crate) const FAULT_DROP_EVENTS: &str = "MINIBOT_FAULT_DROP_EVENTS";

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Event {
    BuildStarted {
        buildid: BuildId,
        builderid: BuilderId,
        builder: String,
        number: i64,
    },
    StepStarted {
        buildid: BuildId,
        stepid: StepId,
    },
    /// New text in a log file (read it from the file).
    LogAppended {
        buildid: BuildId,
        logid: LogId,
    },
    StepFinished {
        buildid: BuildId,
        stepid: StepId,
        results: crate::model::BuildResult,
    },
    BuildFinished {
        buildid: BuildId,
        builderid: BuilderId,
        builder: String,
        number: i64,
        results: crate::model::BuildResult,
    },
}

impl Event {
    /// BuildStarted and BuildFinished: what a `subscribe` subscriber gets.
    fn is_build_level(&self) -> bool {
        matches!(
            self,
            Event::BuildStarted { .. } | Event::BuildFinished { .. }
        )
    }
}

struct Sub {
    tx: Sender<Event>,
    /// Steps and log appends too, not only build start and end.
    all: bool,
    /// Events this subscriber missed (its buffer was full).
    dropped: Arc<AtomicU64>,
    /// Told (without blocking: capacity 1) when an event is dropped, so a
    /// waiting subscriber wakes up to re-read the database.
    missed: Option<Sender<()>>,
    /// Fault injection: drop every BuildFinished (module header).
    drop_finished: bool,
}

impl Sub {
    fn dropped_one(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &self.missed {
            // Full: it has not looked since the last drop; one wake is enough.
            let _ = m.try_send(());
        }
    }
}

/// A `subscribe` subscription: the events, and how many it missed.
pub(crate) struct Subscription {
    pub(crate) events: Receiver<Event>,
    /// Ready when events were dropped since it was last read.
    pub(crate) missed: Receiver<()>,
    dropped: Arc<AtomicU64>,
}

impl Subscription {
    /// How many events were dropped for this subscriber so far (it only
    /// grows): a subscriber compares it with the value it last saw.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Cheap to clone; all clones share the subscriber list.
#[derive(Clone, Default)]
pub(crate) struct Hub {
    subs: Arc<Mutex<Vec<Sub>>>,
}

impl Hub {
    pub(crate) fn new() -> Hub {
        Hub::default()
    }

    /// A new subscriber to builds starting and finishing, holding at most
    /// `capacity` unread events; it learns how many it missed.
    pub(crate) fn subscribe(&self, capacity: usize) -> Subscription {
        let drop_finished = std::env::var(FAULT_DROP_EVENTS)
            .is_ok_and(|v| v.split(',').any(|k| k.trim() == "build_finished"));
        if drop_finished {
            log::warn!("{FAULT_DROP_EVENTS}: every BuildFinished event is dropped for reporters");
        }
        let (missed_tx, missed) = bounded(1);
        let (events, dropped) = self.add(capacity, Some(missed_tx), drop_finished);
        Subscription {
            events,
            missed,
            dropped,
        }
    }

    /// A new subscriber to every event, steps and log appends included.
    pub(crate) fn subscribe_all(&self, capacity: usize) -> Receiver<Event> {
        self.add(capacity, None, false).0
    }

    /// A subscriber to every event unless it has a `missed` channel (then
    /// build starts and ends only, and it is told of drops).
    fn add(
        &self,
        capacity: usize,
        missed: Option<Sender<()>>,
        drop_finished: bool,
    ) -> (Receiver<Event>, Arc<AtomicU64>) {
        let (tx, rx) = bounded(capacity.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        if let Ok(mut subs) = self.subs.lock() {
            subs.push(Sub {
                tx,
                all: missed.is_none(),
                dropped: dropped.clone(),
                missed,
                drop_finished,
            });
        }
        (rx, dropped)
    }

    /// Sends `ev` to every live subscriber that wants it; forgets the ones
    /// that are gone.
    pub(crate) fn publish(&self, ev: Event) {
        let Ok(mut subs) = self.subs.lock() else {
            return;
        };
        let build_level = ev.is_build_level();
        subs.retain(|s| {
            if !s.all && !build_level {
                // Not for this one; a gone subscriber goes at the next build event.
                return true;
            }
            if s.drop_finished && matches!(ev, Event::BuildFinished { .. }) {
                // Gone subscribers go at the next event that is sent.
                s.dropped_one();
                return true;
            }
            match s.tx.try_send(ev.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    s.dropped_one();
                    true
                }
                Err(TrySendError::Disconnected(_)) => false,
            }
        });
    }

    #[cfg(test)]
    pub(crate) fn subscribers(&self) -> usize {
        self.subs.lock().map(|s| s.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fan_out_drop_dead_and_never_block() {
        let hub = Hub::new();
        let a = hub.subscribe_all(2);
        let b = hub.subscribe_all(2);
        let ev = Event::LogAppended {
            buildid: BuildId(1),
            logid: LogId(2),
        };
        hub.publish(ev.clone());
        assert_eq!(a.try_recv().unwrap(), ev);
        assert_eq!(b.try_recv().unwrap(), ev);
        drop(b);
        for _ in 0..10 {
            hub.publish(ev.clone()); // a is full after 2: never blocks
        }
        assert_eq!(hub.subscribers(), 1);
        assert_eq!(a.len(), 2);
    }

    #[test]
    fn build_subscribers_get_only_build_start_and_end() {
        let hub = Hub::new();
        let builds = hub.subscribe(8);
        let builds_dropped = builds.dropped();
        let builds = builds.events;
        let all = hub.subscribe_all(8);
        hub.publish(Event::StepStarted {
            buildid: BuildId(1),
            stepid: StepId(2),
        });
        hub.publish(Event::LogAppended {
            buildid: BuildId(1),
            logid: LogId(3),
        });
        let end = Event::BuildFinished {
            buildid: BuildId(1),
            builderid: BuilderId(1),
            builder: "b".into(),
            number: 1,
            results: crate::model::BuildResult::Success,
        };
        hub.publish(end.clone());
        assert_eq!(builds.try_iter().collect::<Vec<_>>(), vec![end]);
        assert_eq!(all.len(), 3);
        assert_eq!(builds_dropped, 0);
    }

    #[test]
    fn a_full_buffer_counts_what_it_drops() {
        let hub = Hub::new();
        let sub = hub.subscribe(1);
        let started = Event::BuildStarted {
            buildid: BuildId(1),
            builderid: BuilderId(1),
            builder: "b".into(),
            number: 1,
        };
        hub.publish(started.clone());
        hub.publish(started.clone());
        hub.publish(started.clone());
        assert_eq!(sub.dropped(), 2);
        assert_eq!(sub.missed.try_recv(), Ok(()));
        assert!(sub.missed.try_recv().is_err(), "one wake for both drops");
        assert_eq!(sub.events.try_recv().unwrap(), started);
    }
}
