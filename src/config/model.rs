//! The config the runtime uses, with its look-up helpers.

use super::raw::*;
use std::collections::HashMap;

/// Seconds without output before a step is killed, when `timeout` is unset.
pub const DEFAULT_STEP_TIMEOUT: u64 = 1200;

impl Config {
    /// What is allowed but dangerous, one sentence each with its key path:
    /// `checkconfig` prints these and the master logs them at start and at
    /// reconfig.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if let Some(b) = &self.www.change_hook_dialects.base {
            if b.allow_unsigned && b.secret.is_none() {
                w.push(
                    "www.change_hook_dialects.base.allow_unsigned = true: anyone who can reach the web port \
                     (other local accounts, web pages open in a browser that uses your SSH tunnel) \
                     can store changes and start builds through /change_hook/base; set a secret instead"
                        .to_string(),
                );
            }
        }
        w
    }

    pub fn builder(&self, name: &str) -> Option<&BuilderCfg> {
        self.builders.iter().find(|b| b.name == name)
    }

    pub fn worker(&self, name: &str) -> Option<&WorkerCfg> {
        self.workers.iter().find(|w| w.name == name)
    }

    pub fn scheduler(&self, name: &str) -> Option<&SchedulerCfg> {
        self.schedulers.iter().find(|s| s.name == name)
    }
}

impl Www {
    /// `max_connections`, or [`DEFAULT_MAX_CONNECTIONS`].
    pub fn max_connections(&self) -> usize {
        self.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS)
    }

    /// Whether visitors who are not logged in may read (`anonymous`, default "read").
    pub fn anonymous_read(&self) -> bool {
        self.anonymous.as_deref() != Some("none")
    }
}

impl BuilderCfg {
    /// The build directory under the worker's base dir.
    pub fn builddir(&self) -> &str {
        self.workerbuilddir.as_deref().unwrap_or(&self.name)
    }

    /// The names of the steps in order, made unique the way Buildbot does it
    /// (a second "test" becomes "test_1"), since steps are found by name in
    /// the UI and logs.
    pub fn step_names(&self) -> Vec<String> {
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut names = Vec::with_capacity(self.steps.len());
        for (i, step) in self.steps.iter().enumerate() {
            let base = step.display_name(i);
            let mut name = base.clone();
            while let Some(count) = seen.get_mut(&name) {
                *count += 1;
                name = format!("{base}_{count}");
            }
            seen.insert(name.clone(), 0);
            names.push(name);
        }
        names
    }
}

impl StepCfg {
    /// The step's name as shown in the UI: `name`, else "git" for a git step
    /// or the command's first word (without its directory) for a shell step,
    /// else `step<index>`.
    pub fn display_name(&self, index: usize) -> String {
        if let Some(name) = self.name.as_deref().filter(|n| !n.is_empty()) {
            return name.to_string();
        }
        if self.kind == "git" {
            return "git".to_string();
        }
        let first = match &self.command {
            Some(Command::Argv(argv)) => argv.first().map(String::as_str),
            Some(Command::Shell(line)) => line.split_whitespace().next(),
            None => None,
        };
        match first.map(|w| w.rsplit('/').next().unwrap_or(w)) {
            Some(word) if !word.is_empty() => word.to_string(),
            _ => format!("step{index}"),
        }
    }

    /// `timeout`, or [`DEFAULT_STEP_TIMEOUT`].
    pub fn timeout_secs(&self) -> u64 {
        self.timeout.unwrap_or(DEFAULT_STEP_TIMEOUT)
    }

    /// `halt_on_failure`, default true (SPEC §2; Buildbot's default is false,
    /// but a build that goes on after a failed checkout only adds noise).
    pub fn halts_on_failure(&self) -> bool {
        self.halt_on_failure.unwrap_or(true)
    }
}
