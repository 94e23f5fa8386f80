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

use crate::model::{BuildId, BuilderId, LogId, StepId};
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use std::sync::{Arc, Mutex};

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
    /// `capacity` unread events.
    pub(crate) fn subscribe(&self, capacity: usize) -> Receiver<Event> {
        self.add(capacity, false)
    }

    /// A new subscriber to every event, steps and log appends included.
    pub(crate) fn subscribe_all(&self, capacity: usize) -> Receiver<Event> {
        self.add(capacity, true)
    }

    fn add(&self, capacity: usize, all: bool) -> Receiver<Event> {
        let (tx, rx) = bounded(capacity.max(1));
        if let Ok(mut subs) = self.subs.lock() {
            subs.push(Sub { tx, all });
        }
        rx
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
            match s.tx.try_send(ev.clone()) {
                Ok(()) | Err(TrySendError::Full(_)) => true,
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
    }
}
