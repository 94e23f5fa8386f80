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

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    BuildStarted {
        buildid: i64,
        builderid: i64,
        builder: String,
        number: i64,
    },
    StepStarted {
        buildid: i64,
        stepid: i64,
    },
    /// New text in a log file (read it from the file).
    LogAppended {
        buildid: i64,
        logid: i64,
    },
    StepFinished {
        buildid: i64,
        stepid: i64,
        results: i64,
    },
    BuildFinished {
        buildid: i64,
        builderid: i64,
        builder: String,
        number: i64,
        results: i64,
    },
}

/// Cheap to clone; all clones share the subscriber list.
#[derive(Clone, Default)]
pub struct Hub {
    subs: Arc<Mutex<Vec<Sender<Event>>>>,
}

impl Hub {
    pub fn new() -> Hub {
        Hub::default()
    }

    /// A new subscriber holding at most `capacity` unread events.
    pub fn subscribe(&self, capacity: usize) -> Receiver<Event> {
        let (tx, rx) = bounded(capacity.max(1));
        if let Ok(mut subs) = self.subs.lock() {
            subs.push(tx);
        }
        rx
    }

    /// Sends `ev` to every live subscriber; forgets the ones that are gone.
    pub fn publish(&self, ev: Event) {
        let Ok(mut subs) = self.subs.lock() else {
            return;
        };
        subs.retain(|s| match s.try_send(ev.clone()) {
            Ok(()) | Err(TrySendError::Full(_)) => true,
            Err(TrySendError::Disconnected(_)) => false,
        });
    }

    pub fn subscribers(&self) -> usize {
        self.subs.lock().map(|s| s.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fan_out_drop_dead_and_never_block() {
        let hub = Hub::new();
        let a = hub.subscribe(2);
        let b = hub.subscribe(2);
        let ev = Event::LogAppended {
            buildid: 1,
            logid: 2,
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
}
