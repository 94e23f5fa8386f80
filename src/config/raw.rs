//! The serde layer: `master.cfg` as written, one struct per section with
//! `kind: String` where the file says `type = ...`, and the deserializing
//! pass that fills them part by part (so one bad builder does not hide
//! another) and collects unknown keys with their key paths. Nothing here
//! applies a default that the runtime relies on: that is [`super::lower`]'s job.

use super::locks::{LockCfg, LockUseCfg};
use super::problems::{
    fmt_path, ignored_segs, key, one_line, tracked_segs, unknown_key_message, Problems, Seg,
};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub(crate) struct Config {
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
    /// Buildbot's `MasterLock`/`WorkerLock` (`config::locks`).
    #[serde(default)]
    pub locks: Vec<LockCfg>,
    #[serde(default)]
    pub reporters: Vec<ReporterCfg>,
    /// Buildbot's `c['change_source']`: pollers for repositories whose
    /// server cannot reach the master's change hook.
    #[serde(default)]
    pub change_source: Vec<ChangeSourceCfg>,
    /// Pruning of old builds and log files (on by default: see [`JanitorCfg`]).
    #[serde(default)]
    pub janitor: JanitorCfg,
    /// The master's own log (`master.log`): level and rotation.
    #[serde(default)]
    pub logging: LoggingCfg,
    /// Per-step log cap in bytes (Buildbot's `logMaxSize`).
    #[serde(default = "default_max_log_size")]
    pub max_log_size: u64,
    /// `[secrets]`: the provider of `%(secret:NAME)s` (`secret_dir`).
    #[serde(default)]
    pub secrets: Option<SecretsCfg>,
    /// Bytes of artifacts one build may upload (`upload` steps), unless
    /// its builder sets its own.
    #[serde(default = "default_max_artifact_bytes")]
    pub max_artifact_bytes: u64,
}

/// 1 GiB: a release's tarballs and wheels, while a runaway glob cannot
/// fill a shared host's 10 GB quota in one build.
pub(crate) const DEFAULT_MAX_ARTIFACT_BYTES: u64 = 1 << 30;

fn default_max_artifact_bytes() -> u64 {
    DEFAULT_MAX_ARTIFACT_BYTES
}

/// `[secrets]`: secrets kept one per file (Buildbot's `SecretInAFile`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub(crate) struct SecretsCfg {
    /// The directory, relative to the master directory (required).
    pub dir: Option<String>,
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
pub(crate) struct Www {
    #[serde(default)]
    pub port: u16,
    #[serde(default = "default_bind")]
    pub bind: String,
    #[serde(default)]
    pub unix_socket: Option<String>,
    #[serde(default)]
    pub anonymous: Option<String>,
    /// Most HTTP requests served at once (`http_server`), each a thread.
    #[serde(default)]
    pub max_connections: Option<usize>,
    #[serde(default)]
    pub change_hook_dialects: Dialects,
    /// `[www.auth]`: logins besides the local users (`type = "gitea"`).
    #[serde(default)]
    pub auth: Option<AuthCfg>,
}

/// `[www.auth]`: "Log in with Gitea" (OAuth2), beside the local users.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub(crate) struct AuthCfg {
    /// "gitea" (the only kind).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub base_url: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub client_secret_file: Option<String>,
    pub verify_tls: Option<bool>,
    /// `user:NAME`, `org:NAME`, `team:ORG/TEAM`: who may force, stop,
    /// rebuild, cancel and pause.
    #[serde(default)]
    pub admins: Vec<String>,
}

/// `[www] max_connections` when not set: requests being served at once,
/// each on a thread (idle and slow connections wait for their request head
/// in one reception thread, without a thread each). A browser sends up to
/// 6 at once, Gitea one per delivery; at the cap the request that has
/// waited longest on its client (a slow body, an answer not read) makes
/// room. Small enough that the threads stay far below a shared host's
/// per-user process limit (often 150).
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 32;
/// Upper bound for `[www] max_connections`.
pub(crate) const MAX_MAX_CONNECTIONS: usize = 1024;

impl Default for Www {
    fn default() -> Self {
        Www {
            port: 8010,
            bind: default_bind(),
            unix_socket: None,
            anonymous: None,
            max_connections: None,
            change_hook_dialects: Dialects::default(),
            auth: None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub(crate) struct Dialects {
    pub gitea: Option<GiteaDialect>,
    pub base: Option<BaseDialect>,
    /// GitHub-format bodies (GitHub, or a forge mirroring in that format);
    /// the same options as `gitea`.
    pub github: Option<GiteaDialect>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub(crate) struct GiteaDialect {
    pub secret: Option<String>,
    #[serde(default)]
    pub only_include_push_commit: bool,
    /// "ssh" (default, as buildbot_gitea) or "clone".
    pub repository_url: Option<String>,
    pub codebase: Option<String>,
    /// Skip pull requests Gitea reports as not mergeable (conflicts) when
    /// they are opened. Off by default: Gitea sends `mergeable: false` on
    /// every `synchronized`/`reopened` while it re-checks, so only the
    /// `opened` event carries a real answer, and that is all this looks at.
    #[serde(default)]
    pub only_mergeable_pull_request: bool,
    /// Regexes; a push or PR whose head commit message matches one is not
    /// built. Absent: `[skip ci]` and `[ci skip]` (Buildbot's defaults);
    /// `[]` turns skipping off.
    pub skips: Option<Vec<String>>,
    /// "merge" (default: the PR head merged into the base) or "head".
    pub pull_request_checkout: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct BaseDialect {
    pub secret: Option<String>,
    /// The explicit, loudly named opt-out from the secret: anyone who can
    /// reach the web port (any local account, any web page the operator
    /// visits through the SSH tunnel) may then store changes and start
    /// builds. checkconfig and start warn about it.
    #[serde(default)]
    pub allow_unsigned: bool,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub(crate) struct Protocols {
    pub worker: Option<WorkerProtocol>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub(crate) struct WorkerProtocol {
    pub port: Option<u16>,
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
pub(crate) struct WorkerCfg {
    pub name: Option<String>,
    pub password: Option<String>,
    #[serde(default = "one")]
    pub max_builds: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub(crate) struct SchedulerCfg {
    pub name: Option<String>,
    /// single_branch | any_branch | force | periodic | nightly | triggerable | dependent
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// single_branch: the branch to watch; periodic/nightly: the branch to
    /// build (and, with only_if_changed, to watch); force: the form's default.
    pub branch: Option<String>,
    pub branch_regex: Option<String>,
    pub tag_regex: Option<String>,
    #[serde(default)]
    pub tree_stable_timer: u64,
    pub builders: Option<Vec<String>>,
    // change filters (Buildbot's ChangeFilter): a change must pass all that are set
    pub repository: Option<StrOrList>,
    pub project: Option<StrOrList>,
    pub category: Option<StrOrList>,
    /// A change passes if one of its files matches (changes that carry no
    /// file list, e.g. pull requests and tags, always pass).
    pub files_regex: Option<String>,
    // periodic
    /// Seconds between builds.
    pub period: Option<u64>,
    // nightly (cron-like; Buildbot's Nightly: minute defaults to 0, the rest to every)
    pub minute: Option<CronField>,
    pub hour: Option<CronField>,
    /// 0 = Monday ... 6 = Sunday (Buildbot's dayOfWeek), or "mon".."sun".
    pub day_of_week: Option<CronField>,
    pub day_of_month: Option<CronField>,
    /// Build only if a change passed the filters since the last build.
    #[serde(default)]
    pub only_if_changed: bool,
    // force
    /// The default reason on the force form.
    pub reason: Option<String>,
    /// The force form's button (Buildbot's buttonName).
    pub button_name: Option<String>,
    /// Typed build properties shown on the force form.
    #[serde(default)]
    pub properties: Vec<ForceParam>,
    // dependent
    /// The scheduler whose successful buildsets start this one's builders.
    pub upstream: Option<String>,
}

/// A string or a list of strings (e.g. a filter's accepted values).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged, expecting = "expected a string or a list of strings")]
pub(crate) enum StrOrList {
    One(String),
    Many(Vec<String>),
}

impl StrOrList {
    pub(crate) fn values(&self) -> Vec<&str> {
        match self {
            StrOrList::One(s) => vec![s.as_str()],
            StrOrList::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
    pub(crate) fn contains(&self, x: &str) -> bool {
        self.values().contains(&x)
    }
}

/// One field of a nightly schedule: a number, a list of numbers, or "*"
/// (for day_of_week also day names, "mon" .. "sun").
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged, expecting = "expected a number, a list of numbers or \"*\"")]
pub(crate) enum CronField {
    One(u32),
    Many(Vec<u32>),
    Text(String),
}

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl CronField {
    /// The accepted values, None for "every"; Err names the bad part.
    pub(super) fn values(&self, max: u32) -> Result<Option<Vec<u32>>, String> {
        let check = |v: u32| {
            if v <= max {
                Ok(v)
            } else {
                Err(format!("{v} is out of range 0-{max}"))
            }
        };
        match self {
            CronField::One(v) => Ok(Some(vec![check(*v)?])),
            CronField::Many(vs) if vs.is_empty() => Err("is an empty list".into()),
            CronField::Many(vs) => vs
                .iter()
                .map(|v| check(*v))
                .collect::<Result<_, _>>()
                .map(Some),
            CronField::Text(t) if t == "*" => Ok(None),
            CronField::Text(t) => {
                let lower = t.to_ascii_lowercase();
                match DAY_NAMES.iter().position(|d| lower.starts_with(d)) {
                    Some(i) if max == 6 => Ok(Some(vec![i as u32])),
                    _ => Err(format!("{t:?}: use a number, a list of numbers or \"*\"")),
                }
            }
        }
    }
}

/// A typed parameter of a force scheduler's form (Buildbot's
/// StringParameter, TextParameter, IntParameter, BooleanParameter,
/// ChoiceStringParameter, FixedParameter).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub(crate) struct ForceParam {
    pub name: Option<String>,
    /// string (default) | text | int | bool | choice | fixed
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Shown next to the field; defaults to the name.
    pub label: Option<String>,
    pub default: Option<toml::Value>,
    #[serde(default)]
    pub required: bool,
    /// choice: the values offered.
    #[serde(default)]
    pub choices: Vec<String>,
    /// string/text: the value must match (whole value).
    pub regex: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub(crate) struct BuilderCfg {
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub workers: Option<Vec<String>>,
    /// Directory under the worker's base dir; defaults to the builder name.
    pub workerbuilddir: Option<String>,
    #[serde(default)]
    pub steps: Vec<StepCfg>,
    /// Merge queued requests for the same source (branch, repository,
    /// codebase, project, pull request) into the newest one when a worker
    /// frees up; the older ones end SKIPPED (Buildbot's collapseRequests).
    #[serde(default = "yes")]
    pub collapse_requests: bool,
    /// Locks held for the whole build (`config::locks`).
    #[serde(default)]
    pub locks: Vec<LockUseCfg>,
    /// Bytes of artifacts one build of this builder may upload (default:
    /// the top-level `max_artifact_bytes`).
    pub max_artifact_bytes: Option<u64>,
}

fn yes() -> bool {
    true
}

/// A `[[reporters]]` entry. Flat, like steps: which keys apply depends on
/// `type`, and `validate` reports keys of the other type.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub(crate) struct ReporterCfg {
    /// "gitea_status" | "mail"
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Only report builds of these builders (default: all).
    #[serde(default)]
    pub builders: Vec<String>,
    /// Check the server's TLS certificate (default true).
    pub verify_tls: Option<bool>,
    // gitea_status
    pub base_url: Option<String>,
    pub token: Option<String>,
    /// A file holding the token (mode 0600), relative to the master dir.
    pub token_file: Option<String>,
    /// Status context; `%(prop:NAME)s` allowed. Default "minibot/%(prop:buildername)s".
    pub context: Option<String>,
    /// Context for pull-request builds (default: `context`).
    pub context_pr: Option<String>,
    // mail
    pub smtp_host: Option<String>,
    pub smtp_port: Option<u16>,
    /// STARTTLS before login (default true).
    pub starttls: Option<bool>,
    pub smtp_user: Option<String>,
    pub smtp_password: Option<String>,
    pub smtp_password_file: Option<String>,
    pub from: Option<String>,
    #[serde(default)]
    pub to: Vec<String>,
    /// all | failing | passing | problem | warnings | exception | cancelled
    /// | change, or a list of them (Buildbot's MailNotifier modes).
    pub mode: Option<StrOrList>,
}

/// A `[[change_source]]` entry (Buildbot's `c['change_source']`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub(crate) struct ChangeSourceCfg {
    /// "git_poller" | "gitea_pr_poller"
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Names the poller's state in the database; default: the repourl
    /// (gitea_pr_poller: the repository's pulls URL).
    pub name: Option<String>,
    /// git_poller: the repository to poll.
    pub repourl: Option<String>,
    /// gitea_pr_poller: the Gitea (`https://git.example.org`).
    pub base_url: Option<String>,
    /// gitea_pr_poller: "owner/repo" whose open pull requests are polled.
    pub repository: Option<String>,
    /// gitea_pr_poller: a file of mode 0600 holding a Gitea API token that
    /// may read the repository.
    pub token_file: Option<String>,
    /// gitea_pr_poller: check the server's TLS certificate (default true).
    pub verify_tls: Option<bool>,
    /// gitea_pr_poller: the most open pull requests looked at in one poll
    /// (default 200).
    pub max_pull_requests: Option<usize>,
    /// A list of branch names, or "all" (default ["master"]).
    pub branches: Option<StrOrList>,
    /// Seconds between polls (Buildbot's pollInterval, default 600).
    #[serde(default = "default_poll_interval")]
    pub poll_interval: u64,
    /// Poll once right at start instead of after the first interval.
    #[serde(default)]
    pub poll_at_launch: bool,
    /// Stored with each change (default "").
    pub project: Option<String>,
    pub category: Option<String>,
    pub codebase: Option<String>,
}

fn default_poll_interval() -> u64 {
    600
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub(crate) struct StepCfg {
    /// "git" | "shell" | "set_property" | "trigger"
    #[serde(rename = "type")]
    pub kind: Option<String>,
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
    // set_property
    pub property: Option<String>,
    pub regex: Option<String>,
    // upload
    /// A file, directory or glob relative to the build directory.
    pub source: Option<String>,
    /// upload: the name (prefix) on the master; download: the file written,
    /// relative to the build directory.
    pub dest: Option<String>,
    // download
    /// An artifact's name, of this build or of `build`.
    pub artifact: Option<String>,
    /// Which build of this builder holds `artifact`: a build number or
    /// "last_successful" or "triggering" (default: this build).
    pub build: Option<toml::Value>,
    /// A file under the master's `files/` directory.
    pub file: Option<String>,
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
    /// Locks held while this step runs (`config::locks`).
    #[serde(default)]
    pub locks: Vec<LockUseCfg>,
    // trigger (run by the master: `master::chain`)
    /// The triggerable schedulers to start.
    pub schedulers: Option<Vec<String>>,
    /// Wait for the triggered builds; their worst result is the step's.
    pub wait: Option<bool>,
    /// Properties given to the triggered builds (`%(prop:NAME)s` allowed).
    pub set_properties: Option<BTreeMap<String, String>>,
    /// Properties of this build copied to the triggered builds.
    pub copy_properties: Option<Vec<String>>,
}

/// `[janitor]`: what the janitor thread (`src/master/janitor.rs`) prunes. On by
/// default, also when the section is missing: a small disk quota must not
/// fill up with old logs because nobody knew cleanup existed. A horizon of 0
/// keeps that kind of data forever.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub(crate) struct JanitorCfg {
    /// Finished builds older than this (days since they finished) are
    /// deleted with their steps, logs and log files; their requests,
    /// buildsets and changes go when nothing refers to them any more.
    #[serde(default = "default_build_horizon")]
    pub build_horizon_days: u32,
    /// Log files of builds that finished longer ago than this are deleted;
    /// the builds and steps stay and their logs read as empty.
    #[serde(default = "default_log_horizon")]
    pub log_horizon_days: u32,
    /// Artifacts of builds that finished longer ago than this are deleted
    /// (files and rows); the builds stay. 0 keeps them as long as their
    /// build.
    #[serde(default = "default_artifact_horizon")]
    pub artifact_horizon_days: u32,
    /// Hours between two runs; the first run is shortly after start.
    #[serde(default = "default_janitor_interval")]
    pub interval_hours: u32,
}

pub(crate) const DEFAULT_BUILD_HORIZON_DAYS: u32 = 180;
pub(crate) const DEFAULT_LOG_HORIZON_DAYS: u32 = 30;

fn default_build_horizon() -> u32 {
    DEFAULT_BUILD_HORIZON_DAYS
}
fn default_log_horizon() -> u32 {
    DEFAULT_LOG_HORIZON_DAYS
}
pub(crate) const DEFAULT_ARTIFACT_HORIZON_DAYS: u32 = 30;

fn default_artifact_horizon() -> u32 {
    DEFAULT_ARTIFACT_HORIZON_DAYS
}
fn default_janitor_interval() -> u32 {
    24
}

impl Default for JanitorCfg {
    fn default() -> Self {
        JanitorCfg {
            build_horizon_days: default_build_horizon(),
            log_horizon_days: default_log_horizon(),
            artifact_horizon_days: default_artifact_horizon(),
            interval_hours: default_janitor_interval(),
        }
    }
}

/// `[logging]`: the master's own log. Buildbot keeps these settings in
/// `buildbot.tac` (`rotateLength`, `maxRotatedFiles`); here they live with
/// the rest of the config. Read at start only.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub(crate) struct LoggingCfg {
    /// env_logger filter (`info`, `debug`, `info,minibot::web::www=debug`); the
    /// `RUST_LOG` environment variable wins when it is set.
    #[serde(default = "default_log_level")]
    pub level: String,
    /// `master.log` is rotated when it would grow past this many bytes.
    #[serde(default = "default_rotate_length")]
    pub rotate_length: u64,
    /// How many rotated files (`master.log.1` ...) are kept.
    #[serde(default = "default_max_rotated_files")]
    pub max_rotated_files: u32,
}

fn default_log_level() -> String {
    "info".into()
}
fn default_rotate_length() -> u64 {
    crate::daemon::LogOptions::default().rotate_length
}
fn default_max_rotated_files() -> u32 {
    crate::daemon::LogOptions::default().max_rotated_files
}

impl Default for LoggingCfg {
    fn default() -> Self {
        LoggingCfg {
            level: default_log_level(),
            rotate_length: default_rotate_length(),
            max_rotated_files: default_max_rotated_files(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(
    untagged,
    expecting = "expected a string (run by /bin/sh) or a list of strings (argv)"
)]
pub(crate) enum Command {
    Argv(Vec<String>),
    Shell(String),
}

// ---------------------------------------------------------------------------
// Pass 2: types

/// Deserializes the parts of the file one by one, so that a type error in
/// one builder does not hide those in the next. `None` if any part failed.
pub(crate) fn typed(mut table: toml::Table, p: &mut Problems) -> Option<Config> {
    let www = table.remove("www");
    let protocols = table.remove("protocols");
    let workers = table.remove("workers");
    let schedulers = table.remove("schedulers");
    let builders = table.remove("builders");
    let reporters = table.remove("reporters");
    let change_source = table.remove("change_source");
    let janitor = table.remove("janitor");
    let logging = table.remove("logging");
    let locks = table.remove("locks");

    let mut cfg: Option<Config> = de_one(toml::Value::Table(table), &[], p);
    let janitor = match janitor {
        Some(v) => de_one::<JanitorCfg>(v, &[key("janitor")], p),
        None => Some(JanitorCfg::default()),
    };
    let logging = match logging {
        Some(v) => de_one::<LoggingCfg>(v, &[key("logging")], p),
        None => Some(LoggingCfg::default()),
    };
    let www = match www {
        Some(v) => de_one::<Www>(v, &[key("www")], p),
        None => Some(Www::default()),
    };
    let protocols = match protocols {
        Some(v) => de_one::<Protocols>(v, &[key("protocols")], p),
        None => Some(Protocols::default()),
    };
    let workers = match workers {
        Some(v) => de_list::<WorkerCfg>(v, &[key("workers")], p),
        None => Some(Vec::new()),
    };
    let schedulers = match schedulers {
        Some(v) => de_list::<SchedulerCfg>(v, &[key("schedulers")], p),
        None => Some(Vec::new()),
    };
    let reporters = match reporters {
        Some(v) => de_list::<ReporterCfg>(v, &[key("reporters")], p),
        None => Some(Vec::new()),
    };
    let locks = match locks {
        Some(v) => de_list::<LockCfg>(v, &[key("locks")], p),
        None => Some(Vec::new()),
    };
    let change_source = match change_source {
        Some(v) => de_list::<ChangeSourceCfg>(v, &[key("change_source")], p),
        None => Some(Vec::new()),
    };
    let builders = match builders {
        Some(toml::Value::Array(items)) => {
            let mut ok = true;
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                match de_builder(item, i, p) {
                    Some(b) => out.push(b),
                    None => ok = false,
                }
            }
            ok.then_some(out)
        }
        Some(other) => de_one::<Vec<BuilderCfg>>(other, &[key("builders")], p),
        None => Some(Vec::new()),
    };

    if let Some(cfg) = cfg.as_mut() {
        cfg.www = www?;
        cfg.protocols = protocols?;
        cfg.workers = workers?;
        cfg.schedulers = schedulers?;
        cfg.builders = builders?;
        cfg.reporters = reporters?;
        cfg.change_source = change_source?;
        cfg.janitor = janitor?;
        cfg.logging = logging?;
        cfg.locks = locks?;
    }
    cfg
}

/// A builder without its steps, then each step on its own.
fn de_builder(item: toml::Value, i: usize, p: &mut Problems) -> Option<BuilderCfg> {
    let at = [key("builders"), Seg::Index(i)];
    let toml::Value::Table(mut t) = item else {
        return de_one(item, &at, p);
    };
    let steps = match t.remove("steps") {
        Some(v) => de_list::<StepCfg>(v, &[key("builders"), Seg::Index(i), key("steps")], p),
        None => Some(Vec::new()),
    };
    let mut builder: BuilderCfg = de_one(toml::Value::Table(t), &at, p)?;
    builder.steps = steps?;
    Some(builder)
}

fn de_list<T: DeserializeOwned>(
    value: toml::Value,
    at: &[Seg],
    p: &mut Problems,
) -> Option<Vec<T>> {
    let toml::Value::Array(items) = value else {
        return de_one(value, at, p);
    };
    let mut ok = true;
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let mut path = at.to_vec();
        path.push(Seg::Index(i));
        match de_one(item, &path, p) {
            Some(v) => out.push(v),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// Deserializes one part found at `at`, reporting its unknown keys and its
/// type error (serde stops at the first one within a part).
fn de_one<T: DeserializeOwned>(value: toml::Value, at: &[Seg], p: &mut Problems) -> Option<T> {
    // serde stops at the first type error in a part; the key at fault is
    // then taken out and the part read again, so that every type error is
    // reported at once and the rest of the part still reaches the
    // lowering (whose findings are then part of the same answer).
    let mut value = value;
    for _ in 0..64 {
        match de_once::<T>(value.clone(), at, p) {
            Ok(v) => return Some(v),
            Err(rel) => {
                if rel.is_empty() || !remove_at(&mut value, &rel) {
                    return None;
                }
            }
        }
    }
    None
}

/// Takes the key (or list element) at `rel` out of `value`; false if there
/// is none.
fn remove_at(value: &mut toml::Value, rel: &[Seg]) -> bool {
    let Some((last, parents)) = rel.split_last() else {
        return false;
    };
    let mut v = value;
    for seg in parents {
        v = match (seg, v) {
            (Seg::Key(k), toml::Value::Table(t)) => match t.get_mut(k) {
                Some(x) => x,
                None => return false,
            },
            (Seg::Index(i), toml::Value::Array(a)) => match a.get_mut(*i) {
                Some(x) => x,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, v) {
        (Seg::Key(k), toml::Value::Table(t)) => t.remove(k).is_some(),
        (Seg::Index(i), toml::Value::Array(a)) if *i < a.len() => {
            a.remove(*i);
            true
        }
        _ => false,
    }
}

/// One attempt of [`de_one`]: the value, or the path (relative to `at`)
/// of the type error it reported.
fn de_once<T: DeserializeOwned>(
    value: toml::Value,
    at: &[Seg],
    p: &mut Problems,
) -> Result<T, Vec<Seg>> {
    let mut unknown: Vec<Vec<Seg>> = Vec::new();
    let result = {
        let mut note = |path: serde_ignored::Path| {
            let mut segs = at.to_vec();
            ignored_segs(&path, &mut segs);
            unknown.push(segs);
        };
        // A closure in a generic function is a type of its own for each
        // `T`, and with it the whole deserializer stack: every field type
        // (String, Option, Vec, ...) would be compiled again for each
        // part of the config. Through `dyn` they are compiled once
        // (~300 kB less of the master's binary; docs/performance.md).
        let mut note: &mut dyn FnMut(serde_ignored::Path) = &mut note;
        serde_path_to_error::deserialize::<_, T>(serde_ignored::Deserializer::new(value, &mut note))
    };
    for segs in &unknown {
        p.add(&fmt_path(segs), unknown_key_message(segs));
    }
    match result {
        Ok(v) => Ok(v),
        Err(e) => {
            let rel = tracked_segs(e.path());
            let mut segs = at.to_vec();
            segs.extend(rel.iter().cloned());
            // Required keys are `Option`s here and reported missing by
            // `lower`, and the untagged enums name what they expect
            // (`#[serde(expecting)]`); Rust's type names are put in words.
            p.add_type_error(&fmt_path(&segs), &one_line(e.inner().message()));
            Err(rel)
        }
    }
}
