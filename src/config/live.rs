//! [`LiveConfig`]: the config in use, replaced whole by a reconfig.

use super::Config;
use std::sync::{Arc, RwLock};

/// The config the master runs with now, shared by the threads that read
/// it on each use (HTTP requests, worker connections, the janitor); a
/// reconfig replaces it whole, so a reader sees the old or the new one,
/// never a mix. Cheap to clone.
#[derive(Clone)]
pub(crate) struct LiveConfig(Arc<RwLock<Arc<Config>>>);

impl LiveConfig {
    pub(crate) fn new(cfg: Config) -> LiveConfig {
        LiveConfig(Arc::new(RwLock::new(Arc::new(cfg))))
    }

    /// The config in use now.
    pub(crate) fn current(&self) -> Arc<Config> {
        // A poisoned lock only means a writer panicked; the Arc it holds is
        // whole either way.
        match self.0.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts `new` in place for every later `current`.
    pub(crate) fn replace(&self, new: Arc<Config>) {
        match self.0.write() {
            Ok(mut g) => *g = new,
            Err(p) => *p.into_inner() = new,
        }
    }
}
