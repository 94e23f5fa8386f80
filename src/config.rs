//! `master.cfg` (TOML) → typed configuration.
//!
//! Owns: the config types, loading, and validation with key paths in every
//! error. No threads or channels: the master loads at start and on SIGHUP
//! (reconfig) and hands an `Arc<Config>` to the other components.
//!
//! TYPES ONLY FOR NOW: loading/validation/sample are being written.

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Config {
    #[serde(default = "default_title")]
    pub title: String,
    #[serde(default)]
    pub buildbot_url: Option<String>,
    #[serde(default)]
    pub www: Www,
    #[serde(default)]
    pub protocols: Protocols,
    #[serde(default)]
    pub workers: Vec<WorkerCfg>,
    #[serde(default)]
    pub schedulers: Vec<SchedulerCfg>,
    #[serde(default)]
    pub builders: Vec<BuilderCfg>,
    #[serde(default)]
    pub reporters: Vec<toml::Value>,
    #[serde(default)]
    pub janitor: Option<toml::Value>,
    /// Per-step log cap in bytes (Buildbot's `logMaxSize`).
    #[serde(default = "default_max_log_size")]
    pub max_log_size: u64,
}

fn default_title() -> String {
    "minibot".into()
}
fn default_max_log_size() -> u64 {
    10 * 1024 * 1024
}
fn default_bind() -> String {
    "127.0.0.1".into()
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Www {
    #[serde(default)]
    pub port: u16,
    #[serde(default = "default_bind")]
    pub bind: String,
    #[serde(default)]
    pub unix_socket: Option<String>,
    #[serde(default)]
    pub anonymous: Option<String>,
    #[serde(default)]
    pub change_hook_dialects: Dialects,
}

impl Default for Www {
    fn default() -> Self {
        Www {
            port: 8010,
            bind: default_bind(),
            unix_socket: None,
            anonymous: None,
            change_hook_dialects: Dialects::default(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Dialects {
    pub gitea: Option<GiteaDialect>,
    pub base: Option<BaseDialect>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct GiteaDialect {
    pub secret: Option<String>,
    #[serde(default)]
    pub only_include_push_commit: bool,
    /// "ssh" (default, as buildbot_gitea) or "clone".
    pub repository_url: Option<String>,
    pub codebase: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct BaseDialect {
    pub secret: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Protocols {
    pub worker: Option<WorkerProtocol>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct WorkerProtocol {
    pub port: u16,
    #[serde(default = "default_bind")]
    pub bind: String,
    /// Seconds between keepalive pings; a peer silent for 3× this is dead.
    #[serde(default = "default_keepalive")]
    pub keepalive: u64,
}

fn default_keepalive() -> u64 {
    30
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct WorkerCfg {
    pub name: String,
    pub password: String,
    #[serde(default = "one")]
    pub max_builds: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct SchedulerCfg {
    pub name: String,
    /// single_branch | any_branch | force
    #[serde(rename = "type")]
    pub kind: String,
    pub branch: Option<String>,
    pub branch_regex: Option<String>,
    pub tag_regex: Option<String>,
    #[serde(default)]
    pub tree_stable_timer: u64,
    pub builders: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct BuilderCfg {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub workers: Vec<String>,
    /// Directory under the worker's base dir; defaults to the builder name.
    pub workerbuilddir: Option<String>,
    #[serde(default)]
    pub steps: Vec<StepCfg>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct StepCfg {
    /// "git" | "shell"
    #[serde(rename = "type")]
    pub kind: String,
    pub name: Option<String>,
    // git
    pub repourl: Option<String>,
    pub mode: Option<String>,
    pub branch: Option<String>,
    // shell
    pub command: Option<Command>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub workdir: Option<String>,
    /// Seconds without output before the step is killed (default 1200).
    pub timeout: Option<u64>,
    pub halt_on_failure: Option<bool>,
    pub flunk_on_failure: Option<bool>,
    pub warn_on_failure: Option<bool>,
    pub flunk_on_warnings: Option<bool>,
    pub always_run: Option<bool>,
    /// Exit codes that mean WARNINGS instead of FAILURE (Buildbot's decodeRC).
    #[serde(default)]
    pub warning_exit_codes: Vec<i32>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Command {
    Argv(Vec<String>),
    Shell(String),
}
