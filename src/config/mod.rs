//! `master.cfg` (TOML) → typed, validated configuration.
//!
//! Owns: the config types, [`load`] / [`parse`], validation, the
//! `master.cfg.sample` text ([`SAMPLE`]) and small look-up helpers. Every
//! problem names the file and the key path (`builders[0].steps[1].comand`),
//! and all problems are reported together, as `checkconfig` promises.
//!
//! No threads, no channels, no I/O besides reading the file, checking its
//! own mode (0600 when it holds secrets, as it always does: worker
//! passwords) and the secret files it names (`token_file`,
//! `smtp_password_file`: present and mode 0600). Called by
//! `minibot checkconfig`, by the master at start and on SIGHUP (reconfig),
//! which hands the result to the other components as an `Arc<Config>`; a
//! config that fails here is never seen by them, so they may rely on the
//! invariants checked in `validate` (names unique and directory-safe,
//! references resolved, `protocols.worker` present, step kinds known).
//!
//! Parsing runs in three passes: TOML syntax (stops at the first error, with
//! line and column), then types (each section and list element on its own, so
//! one bad builder does not hide another; unknown keys are collected here),
//! then meaning (`validate`), which only runs on a fully typed config because
//! its findings would mostly echo the type errors.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};

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
    /// Most HTTP requests served at once (`http_server`), each a thread.
    #[serde(default)]
    pub max_connections: Option<usize>,
    #[serde(default)]
    pub change_hook_dialects: Dialects,
}

/// `[www] max_connections` when not set: requests being served at once,
/// each on a thread (idle and slow connections wait for their request head
/// in one reception thread, without a thread each). A browser sends up to
/// 6 at once, Gitea one per delivery; at the cap the request that has
/// waited longest on its client (a slow body, an answer not read) makes
/// room. Small enough that the threads stay far below a shared host's
/// per-user process limit (often 150).
pub const DEFAULT_MAX_CONNECTIONS: usize = 32;
/// Upper bound for `[www] max_connections`.
pub const MAX_MAX_CONNECTIONS: usize = 1024;

impl Default for Www {
    fn default() -> Self {
        Www {
            port: 8010,
            bind: default_bind(),
            unix_socket: None,
            anonymous: None,
            max_connections: None,
            change_hook_dialects: Dialects::default(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Dialects {
    pub gitea: Option<GiteaDialect>,
    pub base: Option<BaseDialect>,
    /// GitHub-format bodies (GitHub, or a forge mirroring in that format);
    /// the same options as `gitea`.
    pub github: Option<GiteaDialect>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct GiteaDialect {
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
    /// single_branch | any_branch | force | periodic | nightly
    #[serde(rename = "type")]
    pub kind: String,
    /// single_branch: the branch to watch; periodic/nightly: the branch to
    /// build (and, with only_if_changed, to watch); force: the form's default.
    pub branch: Option<String>,
    pub branch_regex: Option<String>,
    pub tag_regex: Option<String>,
    #[serde(default)]
    pub tree_stable_timer: u64,
    pub builders: Vec<String>,
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
}

/// A string or a list of strings (e.g. a filter's accepted values).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum StrOrList {
    One(String),
    Many(Vec<String>),
}

impl StrOrList {
    pub fn values(&self) -> Vec<&str> {
        match self {
            StrOrList::One(s) => vec![s.as_str()],
            StrOrList::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
    pub fn contains(&self, x: &str) -> bool {
        self.values().contains(&x)
    }
}

/// One field of a nightly schedule: a number, a list of numbers, or "*"
/// (for day_of_week also day names, "mon" .. "sun").
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum CronField {
    One(u32),
    Many(Vec<u32>),
    Text(String),
}

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl CronField {
    /// The accepted values, None for "every"; Err names the bad part.
    pub fn values(&self, max: u32) -> Result<Option<Vec<u32>>, String> {
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
pub struct ForceParam {
    pub name: String,
    /// string (default) | text | int | bool | choice | fixed
    #[serde(rename = "type", default = "default_param_type")]
    pub kind: String,
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

fn default_param_type() -> String {
    "string".into()
}

impl ForceParam {
    fn builtin(name: &str, label: &str, default: Option<&str>) -> ForceParam {
        ForceParam {
            name: name.into(),
            kind: "string".into(),
            label: Some(label.into()),
            default: default.map(|d| toml::Value::String(d.into())),
            required: false,
            choices: vec![],
            regex: None,
        }
    }

    pub fn label(&self) -> &str {
        self.label.as_deref().unwrap_or(&self.name)
    }

    /// The default as JSON (what the form shows, what a missing value becomes).
    pub fn default_json(&self) -> serde_json::Value {
        match &self.default {
            Some(v) => serde_json::to_value(v).unwrap_or(serde_json::Value::Null),
            None => match self.kind.as_str() {
                "bool" => serde_json::Value::Bool(false),
                "int" => serde_json::Value::Null,
                "choice" => self
                    .choices
                    .first()
                    .map(|c| serde_json::Value::String(c.clone()))
                    .unwrap_or(serde_json::Value::Null),
                _ => serde_json::Value::String(String::new()),
            },
        }
    }

    /// Checks and converts a submitted value (JSON, or the string a form
    /// posts) into the typed value. `None` = not submitted.
    pub fn coerce(&self, value: Option<&serde_json::Value>) -> Result<serde_json::Value, String> {
        use serde_json::Value as J;
        let name = &self.name;
        let v = match (self.kind.as_str(), value) {
            // A fixed parameter cannot be changed from outside.
            ("fixed", _) | (_, None) | (_, Some(J::Null)) => self.default_json(),
            (_, Some(v)) => v.clone(),
        };
        let out = match self.kind.as_str() {
            "int" => match &v {
                J::Number(n) if n.is_i64() => v,
                J::String(s) if s.trim().is_empty() => J::Null,
                J::String(s) => s
                    .trim()
                    .parse::<i64>()
                    .map(J::from)
                    .map_err(|_| format!("{name}: {s:?} is not a whole number"))?,
                J::Null => J::Null,
                other => return Err(format!("{name}: {other} is not a whole number")),
            },
            "bool" => match &v {
                J::Bool(_) => v,
                J::String(s) => J::Bool(matches!(s.as_str(), "true" | "on" | "1" | "yes")),
                J::Null => J::Bool(false),
                other => return Err(format!("{name}: {other} is not true or false")),
            },
            _ => match v {
                J::String(s) => J::String(s),
                J::Null => J::String(String::new()),
                J::Number(n) => J::String(n.to_string()),
                other => return Err(format!("{name}: expected text, got {other}")),
            },
        };
        let empty = matches!(&out, J::Null) || out.as_str() == Some("");
        if self.required && empty {
            return Err(format!("{name}: is required"));
        }
        if self.kind == "choice" && !empty {
            let s = out.as_str().unwrap_or("");
            if !self.choices.iter().any(|c| c == s) {
                return Err(format!("{name}: {s:?} is not one of {:?}", self.choices));
            }
        }
        if let (Some(re), Some(s)) = (&self.regex, out.as_str()) {
            let ok = regex_lite::Regex::new(&format!("^(?:{re})$")).is_ok_and(|r| r.is_match(s));
            // An empty optional value is fine whatever the regex says.
            if !ok && (!s.is_empty() || self.required) {
                return Err(format!("{name}: {s:?} does not match {re:?}"));
            }
        }
        Ok(out)
    }
}

/// What a force request asks for, checked against the scheduler's
/// parameters (see [`SchedulerCfg::force_values`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ForcedBuild {
    pub branch: Option<String>,
    pub revision: Option<String>,
    pub reason: String,
    /// The typed properties, by name.
    pub properties: BTreeMap<String, serde_json::Value>,
}

impl SchedulerCfg {
    /// Every field of the force form in order: branch, revision, reason (the
    /// built-ins, strings), then the configured typed properties.
    pub fn force_parameters(&self) -> Vec<ForceParam> {
        let mut out = vec![
            ForceParam::builtin("branch", "Branch", self.branch.as_deref()),
            ForceParam::builtin("revision", "Revision", None),
            ForceParam::builtin(
                "reason",
                "Reason",
                Some(self.reason.as_deref().unwrap_or("force build")),
            ),
        ];
        out.extend(self.properties.iter().cloned());
        out
    }

    /// Checks submitted force values (JSON-RPC `params`, or form fields as
    /// strings) against [`Self::force_parameters`]; every problem is listed.
    pub fn force_values(
        &self,
        submitted: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<ForcedBuild, Vec<String>> {
        let mut problems = vec![];
        let mut values = BTreeMap::new();
        for p in self.force_parameters() {
            match p.coerce(submitted.get(&p.name)) {
                Ok(v) => {
                    values.insert(p.name.clone(), v);
                }
                Err(e) => problems.push(e),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut text = |k: &str| {
            values
                .remove(k)
                .and_then(|v| v.as_str().map(str::to_string))
                .filter(|s| !s.is_empty())
        };
        let branch = text("branch");
        let revision = text("revision");
        let reason = text("reason").unwrap_or_else(|| "force build".into());
        Ok(ForcedBuild {
            branch,
            revision,
            reason,
            properties: values,
        })
    }
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
    /// Merge queued requests for the same source (branch, repository,
    /// codebase, project, pull request) into the newest one when a worker
    /// frees up; the older ones end SKIPPED (Buildbot's collapseRequests).
    #[serde(default = "yes")]
    pub collapse_requests: bool,
}

fn yes() -> bool {
    true
}

/// A `[[reporters]]` entry. Flat, like steps: which keys apply depends on
/// `type`, and `validate` reports keys of the other type.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ReporterCfg {
    /// "gitea_status" | "mail"
    #[serde(rename = "type")]
    pub kind: String,
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

/// Buildbot's MailNotifier modes.
pub const MAIL_MODES: &[&str] = &[
    "all",
    "failing",
    "passing",
    "problem",
    "warnings",
    "exception",
    "cancelled",
    "change",
];

impl ReporterCfg {
    pub fn verifies_tls(&self) -> bool {
        self.verify_tls.unwrap_or(true)
    }

    pub fn reports_on(&self, builder: &str) -> bool {
        self.builders.is_empty() || self.builders.iter().any(|b| b == builder)
    }

    /// The mail modes (default "all").
    pub fn modes(&self) -> Vec<&str> {
        self.mode
            .as_ref()
            .map(StrOrList::values)
            .unwrap_or(vec!["all"])
    }

    /// The Gitea token: `token`, or the contents of `token_file`.
    pub fn gitea_token(&self, master_dir: &Path) -> anyhow::Result<String> {
        secret(
            master_dir,
            self.token.as_deref(),
            self.token_file.as_deref(),
            "token",
        )
    }

    /// The SMTP password, if login is configured.
    pub fn smtp_password(&self, master_dir: &Path) -> anyhow::Result<Option<String>> {
        if self.smtp_password.is_none() && self.smtp_password_file.is_none() {
            return Ok(None);
        }
        secret(
            master_dir,
            self.smtp_password.as_deref(),
            self.smtp_password_file.as_deref(),
            "smtp_password",
        )
        .map(Some)
    }
}

/// A secret given inline or in a file (relative to the master directory),
/// trimmed of the trailing newline editors add.
fn secret(
    dir: &Path,
    inline: Option<&str>,
    file: Option<&str>,
    what: &str,
) -> anyhow::Result<String> {
    match (inline, file) {
        (Some(s), _) => Ok(s.to_string()),
        (None, Some(f)) => {
            let path = dir.join(f);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                anyhow::anyhow!("cannot read {}: {}", path.display(), io_reason(&e))
            })?;
            Ok(text.trim_end_matches(['\n', '\r']).to_string())
        }
        (None, None) => anyhow::bail!("no {what} and no {what}_file"),
    }
}

/// A `[[change_source]]` entry (Buildbot's `c['change_source']`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ChangeSourceCfg {
    /// "git_poller"
    #[serde(rename = "type")]
    pub kind: String,
    /// Names the poller's state in the database; default: the repourl.
    pub name: Option<String>,
    pub repourl: String,
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

impl ChangeSourceCfg {
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.repourl)
    }

    /// None = every branch.
    pub fn branch_list(&self) -> Option<Vec<String>> {
        match &self.branches {
            None => Some(vec!["master".into()]),
            Some(StrOrList::One(s)) if s == "all" => None,
            Some(b) => Some(b.values().into_iter().map(str::to_string).collect()),
        }
    }
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

/// `[janitor]`: what the janitor thread (`src/master/janitor.rs`) prunes. On by
/// default, also when the section is missing: a small disk quota must not
/// fill up with old logs because nobody knew cleanup existed. A horizon of 0
/// keeps that kind of data forever.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct JanitorCfg {
    /// Finished builds older than this (days since they finished) are
    /// deleted with their steps, logs and log files; their requests,
    /// buildsets and changes go when nothing refers to them any more.
    #[serde(default = "default_build_horizon")]
    pub build_horizon_days: u32,
    /// Log files of builds that finished longer ago than this are deleted;
    /// the builds and steps stay and their logs read as empty.
    #[serde(default = "default_log_horizon")]
    pub log_horizon_days: u32,
    /// Hours between two runs; the first run is shortly after start.
    #[serde(default = "default_janitor_interval")]
    pub interval_hours: u32,
}

pub const DEFAULT_BUILD_HORIZON_DAYS: u32 = 180;
pub const DEFAULT_LOG_HORIZON_DAYS: u32 = 30;

fn default_build_horizon() -> u32 {
    DEFAULT_BUILD_HORIZON_DAYS
}
fn default_log_horizon() -> u32 {
    DEFAULT_LOG_HORIZON_DAYS
}
fn default_janitor_interval() -> u32 {
    24
}

impl Default for JanitorCfg {
    fn default() -> Self {
        JanitorCfg {
            build_horizon_days: default_build_horizon(),
            log_horizon_days: default_log_horizon(),
            interval_hours: default_janitor_interval(),
        }
    }
}

/// `[logging]`: the master's own log. Buildbot keeps these settings in
/// `buildbot.tac` (`rotateLength`, `maxRotatedFiles`); here they live with
/// the rest of the config. Read at start only.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct LoggingCfg {
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

impl LoggingCfg {
    /// What `daemon::init_logging_with` needs.
    pub fn log_options(&self) -> crate::daemon::LogOptions {
        crate::daemon::LogOptions {
            level: self.level.clone(),
            rotate_length: self.rotate_length,
            max_rotated_files: self.max_rotated_files,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Command {
    Argv(Vec<String>),
    Shell(String),
}

/// The `master.cfg.sample` that `minibot create-master` writes: the
/// hello-world setup of SPEC §2, commented for someone who knows Buildbot.
pub const SAMPLE: &str = r#"# minibot master configuration: the counterpart of Buildbot's master.cfg,
# written in TOML instead of Python.
#
#   minibot checkconfig DIR    checks this file and lists every problem
#   minibot reconfig DIR       loads it into the running master (SIGHUP);
#                              running builds and connected workers stay
#
# Unknown keys are errors, so a typo is reported instead of silently ignored.

# Shown in the page header and the browser title (Buildbot's c['title']).
title = "Hello World CI"

# The address users type to reach the web UI (Buildbot's c['buildbotURL']):
# the base of the links in commit statuses and mails. Behind an SSH tunnel or
# a proxy this is the outside address, not the one the master listens on.
buildbot_url = "http://localhost:12345/"

# Cap on each step log, in bytes (Buildbot's logMaxSize); output beyond it is
# dropped and the log says so. Default 10 MiB.
# max_log_size = 10485760


######## Web UI, JSON API and change hooks (Buildbot's c['www'])

[www]
# TCP port of the web UI, the API and the change hooks. On a shared host pick
# a port nobody else uses.
port = 12345
# Address to listen on. 127.0.0.1 keeps the UI private to this machine; reach
# it from outside with `ssh -L 12345:localhost:12345 ...`. Write 0.0.0.0 only
# if you really want it open to the world.
bind = "127.0.0.1"
# Instead of port: listen on a unix socket (created with mode 0600), e.g. for
# a web server's reverse proxy. Remove `port` when you use this.
# unix_socket = "www.sock"
# What visitors who are not logged in may do: "read" (default) or "none".
# Force, stop and rebuild always need a login: see `minibot user add`.
# anonymous = "read"

# Gitea webhooks (as the buildbot_gitea plugin). In Gitea: repository
# Settings > Webhooks > Add Webhook > Gitea, target URL
# <buildbot_url>change_hook/gitea, POST, content type application/json, and
# the same secret as here. Pushes to branches and tags and pull requests
# become changes.
[www.change_hook_dialects.gitea]
# The signature of every hook is checked against it. create-master wrote a
# random one here; make your own with `openssl rand -hex 16`.
secret = "SomeSecretPassPhraseToAuthenticateGitea"
# true: one change per push (its head commit) instead of one per commit.
# only_include_push_commit = false
# Which URL of the repository a change carries: "ssh" (default) or "clone"
# (the https clone URL); the git step fetches from the step's repourl anyway.
# repository_url = "ssh"
# codebase = ""
# true: skip a pull request that Gitea reports as conflicting when it is
# opened (Gitea's answer is only reliable then; later events are built).
# only_mergeable_pull_request = false

# Buildbot's "base" dialect: plain form or JSON posts, e.g. from
# `minibot sendchange`, curl or a git post-receive hook, to
# <buildbot_url>change_hook/base. Off unless uncommented. It needs a secret:
# every post must then carry X-Hub-Signature-256 (hex HMAC-SHA256 of the body,
# as GitHub signs). `allow_unsigned = true` instead of a secret accepts
# unsigned posts from anyone who can reach the port (other accounts on this
# host, any web page in a browser using your SSH tunnel); checkconfig warns.
# [www.change_hook_dialects.base]
# secret = "..."


######## Where workers connect (Buildbot's c['protocols'] = {'pb': {...}})

[protocols.worker]
# The port given to `minibot-worker create-worker ... HOST:PORT ...`.
port = 54321
# Remote workers can come in through an SSH tunnel, so 127.0.0.1 is enough.
bind = "127.0.0.1"
# Seconds between keepalive pings; a peer silent for three times this long
# is taken for dead and its build is retried.
# keepalive = 30


######## Workers (Buildbot's c['workers'])
# Each one is created on its machine with the same name and password:
#   minibot-worker create-worker DIR localhost:54321 example-worker REPLACED-BY-CREATE-MASTER

[[workers]]
# Letters, digits, '.', '_' and '-' only.
name = "example-worker"
# Never sent over the wire: the worker answers a challenge with it.
# create-master wrote a random one here; make more with `openssl rand -hex 16`.
password = "REPLACED-BY-CREATE-MASTER"
# How many builds this worker runs at once (Buildbot's max_builds).
max_builds = 1


######## Schedulers (Buildbot's c['schedulers']): which changes start builds

[[schedulers]]
name = "all"
# single_branch: changes on one branch (Buildbot's SingleBranchScheduler).
#             Pull requests count for the branch they target.
# any_branch: changes on any branch, or those matching branch_regex /
#             tag_regex (AnyBranchScheduler); only this one builds tags.
# force:      the "force build" button and POST /api/v2/forceschedulers/<name>.
# periodic:   every `period` seconds (Periodic).
# nightly:    at set times, local time (Nightly).
type = "single_branch"
branch = "master"
# Seconds to wait for more changes before building them together (0: at once).
tree_stable_timer = 0
builders = ["runtests"]
# Change filters (Buildbot's ChangeFilter), for single_branch, any_branch and
# nightly: a change must pass each one that is set. repository, project and
# category take a string or a list; files_regex passes a change when one of
# its files matches (changes without a file list, e.g. pull requests, pass).
# project = "isabell/hello-world"
# category = ["push", "pull_request"]   # push | tag | pull_request (Gitea)
# files_regex = "^(src/|Cargo)"

[[schedulers]]
name = "force"
type = "force"
builders = ["runtests"]
# The form has branch, revision and reason fields; these set their defaults.
# branch = "master"
# reason = "force build"
# button_name = "Force build"
# More fields, each becoming a build property (%(prop:NAME)s):
# type = string | text | int | bool | choice | fixed (shown, not editable).
# [[schedulers.properties]]
# name = "level"
# type = "choice"
# label = "Test level"
# choices = ["quick", "full"]
# default = "quick"

# Every 6 hours, the tip of master:
# [[schedulers]]
# name = "every-6h"
# type = "periodic"
# period = 21600
# branch = "master"
# builders = ["runtests"]

# At 03:30 on weekdays (0 = Monday ... 6 = Sunday, or "mon".."sun"), only if
# master changed since the last time. minute defaults to 0, the others to
# every value; each takes a number, a list, or "*". A time missed while the
# master was down is made up once at start.
# [[schedulers]]
# name = "nightly"
# type = "nightly"
# branch = "master"
# hour = 3
# minute = 30
# day_of_week = [0, 1, 2, 3, 4]
# only_if_changed = true
# builders = ["runtests"]


######## Builders (Buildbot's c['builders']): what a build does

[[builders]]
# Also the directory the build runs in on the worker (unless workerbuilddir
# is set), so: letters, digits, '.', '_' and '-' only.
name = "runtests"
# Workers that may run this builder's builds.
workers = ["example-worker"]
# description = "Runs the hello-world tests"
# tags = ["hello"]
# workerbuilddir = "runtests"
# When several requests for the same branch (or pull request) wait for a
# worker, build only the newest; the older ones end SKIPPED, each naming the
# build that covered it (Buildbot's collapseRequests). Default true.
# collapse_requests = true

# The steps run in order in the build directory (Buildbot's BuildFactory).
[[builders.steps]]
# Clone or update the source at the change's revision (Buildbot's Git step)
# into the build directory's "build" subdirectory.
type = "git"
# Edit this: the repository the worker clones.
repourl = "https://git.example.org/isabell/hello-world.git"
# incremental: keep the checkout between builds; full: a fresh clone each time.
mode = "incremental"
# branch = "master"   # when the change names none (e.g. a forced build)

[[builders.steps]]
# Run a command (Buildbot's ShellCommand); exit code 0 is success.
type = "shell"
# Shown on the build page; defaults to the command's first word.
name = "test"
# An argv list, run as is; or a string, run by /bin/sh. %(prop:branch)s,
# %(prop:revision)s, %(prop:buildnumber)s ... are replaced as by Buildbot's
# Interpolate, and reach the environment as MINIBOT_BRANCH, ...
command = ["python3", "test_hello.py"]
env = { PYTHONUNBUFFERED = "1" }
# Seconds without output before the step is killed.
timeout = 1200
# As in Buildbot: halt_on_failure (default true here), flunk_on_failure,
# warn_on_failure, flunk_on_warnings, always_run; warning_exit_codes lists
# exit codes meaning WARNINGS instead of FAILURE; workdir is relative to the
# build directory (default "build").
# halt_on_failure = true


######## Housekeeping (Buildbot's JanitorConfigurator, and buildbot.tac's log settings)

# The janitor deletes old builds and build logs so that a small disk quota
# never fills up. It runs shortly after the master starts, then every
# interval_hours, and writes what it pruned to master.log. It is on even
# without this section; set a horizon to 0 to keep that data forever.
[janitor]
# Finished builds older than this many days are deleted with their steps and
# logs (the newest build of each builder is always kept, so build numbers
# never restart).
build_horizon_days = 180
# Log files of builds older than this many days are deleted; the builds stay
# in the history and their logs read as empty. The bulk of the disk is here.
log_horizon_days = 30
# interval_hours = 24

# The master's own log, master.log. RUST_LOG in the environment wins over
# level when it is set.
# [logging]
# level = "info"                # or "debug", or "info,minibot::web::www=debug"
# rotate_length = 10000000      # bytes; then master.log becomes master.log.1
# max_rotated_files = 5         # master.log.1 ... master.log.5 are kept


######## Reporters (Buildbot's c['services'])

# Commit statuses on Gitea (as buildbot_gitea's GiteaStatusPush): pending
# when a build starts, then success, warning, failure or error, linking to
# the build page under buildbot_url. Pull requests get the status on their
# head commit in the base repository. The token (Gitea: Settings >
# Applications, scope write:repository) goes in a file only you can read:
#   printf '%s' TOKEN > gitea-token && chmod 600 gitea-token
# [[reporters]]
# type = "gitea_status"
# base_url = "https://git.example.org"
# token_file = "gitea-token"          # relative to this directory; or token = "..."
# context = "minibot/%(prop:buildername)s"
# context_pr = "minibot/pr/%(prop:buildername)s"   # default: context
# verify_tls = true                   # false for a self-signed certificate
# builders = ["runtests"]             # default: every builder

# Mail about finished builds (Buildbot's MailNotifier). mode: all, failing,
# passing, warnings, exception, cancelled, problem (failed after not
# failing), change (result differs from the last build), or a list.
# [[reporters]]
# type = "mail"
# smtp_host = "smtp.example.org"
# smtp_port = 587
# starttls = true                     # default; false only for a local relay
# smtp_user = "isabell"
# smtp_password_file = "smtp-password"   # mode 0600; or smtp_password = "..."
# from = "minibot <ci@example.org>"
# to = ["isabell@example.org"]
# mode = "problem"


######## Change sources (Buildbot's c['change_source'])

# Poll a repository whose server cannot reach this master's change hook
# (Buildbot's GitPoller). The last revision seen per branch is kept in the
# database: a restart neither misses nor repeats a change. The first poll
# only records where the branches are.
# [[change_source]]
# type = "git_poller"
# repourl = "https://git.example.org/isabell/hello-world.git"
# branches = ["master"]               # or "all"
# poll_interval = 600                 # seconds
# poll_at_launch = false
# project = "isabell/hello-world"
"#;

/// The Gitea secret in [`SAMPLE`]: Buildbot's documented example, so
/// published. `create-master` replaces it with a random one
/// ([`sample_with_secrets`]); checkconfig warns when a config still has it.
pub const SAMPLE_GITEA_SECRET: &str = "SomeSecretPassPhraseToAuthenticateGitea";

/// The worker password placeholder in [`SAMPLE`], replaced the same way.
pub const SAMPLE_WORKER_PASSWORD: &str = "REPLACED-BY-CREATE-MASTER";

/// The shortest secret without a warning (defined in `protocol`, which the
/// worker shares).
pub use crate::protocol::MIN_SECRET_LEN;

/// `n` random bytes from the OS as lowercase hex (2n characters).
pub fn random_hex(n: usize) -> anyhow::Result<String> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b)
        .map_err(|e| anyhow::anyhow!("reading random bytes from the OS: {e}"))?;
    Ok(hex::encode(b))
}

/// [`SAMPLE`] with its published Gitea secret and placeholder worker
/// password replaced (the placeholder also in the create-worker example
/// comment, so it can be copied as is).
pub fn sample_with_secrets(gitea_secret: &str, worker_password: &str) -> String {
    SAMPLE
        .replace(
            &format!("secret = \"{SAMPLE_GITEA_SECRET}\""),
            &format!("secret = \"{gitea_secret}\""),
        )
        .replace(SAMPLE_WORKER_PASSWORD, worker_password)
}

/// Secrets in a parsed config that are known or easy to guess, as
/// "key: why" lines: the sample's published Gitea secret or password
/// placeholder, "pass", or anything shorter than [`MIN_SECRET_LEN`].
/// Warnings, not errors: a test setup may want them, and refusing to start
/// an existing install after an upgrade would be worse.
pub fn secret_warnings(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let d = &cfg.www.change_hook_dialects;
    let hooks = [
        ("gitea", d.gitea.as_ref().and_then(|g| g.secret.as_deref())),
        (
            "github",
            d.github.as_ref().and_then(|g| g.secret.as_deref()),
        ),
        ("base", d.base.as_ref().and_then(|b| b.secret.as_deref())),
    ];
    for (dialect, secret) in hooks {
        let Some(secret) = secret.filter(|s| !s.is_empty()) else {
            continue;
        };
        let key = format!("www.change_hook_dialects.{dialect}.secret");
        if secret == SAMPLE_GITEA_SECRET {
            out.push(format!(
                "{key}: is the sample's published secret: anyone can sign hooks with it; \
                 set one from `openssl rand -hex 16` here and in the webhook"
            ));
        } else if secret.chars().count() < MIN_SECRET_LEN {
            out.push(format!(
                "{key}: is shorter than {MIN_SECRET_LEN} characters and easy to guess; \
                 use one from `openssl rand -hex 16`"
            ));
        }
    }
    for (i, w) in cfg.workers.iter().enumerate() {
        let key = format!("workers[{i}].password");
        let pw = w.password.as_str();
        if pw == SAMPLE_WORKER_PASSWORD || pw == "pass" {
            out.push(format!(
                "{key}: is the sample's published password; anyone who has read the \
                 docs can connect as {:?}: use one from `openssl rand -hex 16`",
                w.name
            ));
        } else if !pw.is_empty() && pw.chars().count() < MIN_SECRET_LEN {
            out.push(format!(
                "{key}: is shorter than {MIN_SECRET_LEN} characters and easy to guess; \
                 use one from `openssl rand -hex 16` (and the same in the worker's worker.cfg)"
            ));
        }
    }
    out
}

/// The keys of `cfg` that hold a secret inline (not in a `*_file`).
fn inline_secrets(cfg: &Config) -> Vec<String> {
    let mut keys = Vec::new();
    for (i, w) in cfg.workers.iter().enumerate() {
        if !w.password.is_empty() {
            keys.push(format!("workers[{i}].password"));
        }
    }
    let d = &cfg.www.change_hook_dialects;
    for (dialect, secret) in [
        ("gitea", d.gitea.as_ref().and_then(|g| g.secret.as_deref())),
        (
            "github",
            d.github.as_ref().and_then(|g| g.secret.as_deref()),
        ),
        ("base", d.base.as_ref().and_then(|b| b.secret.as_deref())),
    ] {
        if secret.is_some_and(|s| !s.is_empty()) {
            keys.push(format!("www.change_hook_dialects.{dialect}.secret"));
        }
    }
    for (i, r) in cfg.reporters.iter().enumerate() {
        if r.token.is_some() {
            keys.push(format!("reporters[{i}].token"));
        }
        if r.smtp_password.is_some() {
            keys.push(format!("reporters[{i}].smtp_password"));
        }
    }
    keys
}

/// Refuses a config file that group or others may read while it holds a
/// secret, or may write at all (whoever writes master.cfg chooses the
/// commands the workers run). Like ssh with a private key: reported, not
/// fixed silently, since the secrets may already have been read.
fn check_own_mode(path: &Path, cfg: &Config, p: &mut Problems) {
    use std::os::unix::fs::PermissionsExt;
    let mode = match std::fs::metadata(path) {
        Ok(m) => m.permissions().mode() & 0o777,
        Err(e) => {
            p.add("", format_args!("cannot stat: {}", io_reason(&e)));
            return;
        }
    };
    let secrets = inline_secrets(cfg);
    let exposed = mode & 0o077 != 0 && !secrets.is_empty();
    if !exposed && mode & 0o022 == 0 {
        return;
    }
    let what = if exposed {
        let mut shown = secrets
            .iter()
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if secrets.len() > 3 {
            shown.push_str(", ...");
        }
        format!("group or others may access it (mode {mode:03o}) and it holds secrets ({shown})")
    } else {
        format!(
            "group or others may write it (mode {mode:03o}), and so choose what the workers run"
        )
    };
    p.add(
        "",
        format_args!(
            "{what}; run `chmod 600 {}` (and change the secrets if others could have read them)",
            path.display()
        ),
    );
}

/// Everything wrong with a config file, one problem per entry, each naming
/// the file and the key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problems.join("\n"))
    }
}

impl std::error::Error for ConfigError {}

/// Reads and checks `path` (normally `DIR/master.cfg`).
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        problems: vec![format!("cannot read {}: {}", path.display(), io_reason(&e))],
    })?;
    let cfg = parse(&text, &path.display().to_string())?;
    let mut p = Problems {
        source: &path.display().to_string(),
        list: Vec::new(),
    };
    check_own_mode(path, &cfg, &mut p);
    check_secret_files(&cfg, path.parent().unwrap_or(Path::new(".")), &mut p);
    if p.list.is_empty() {
        Ok(cfg)
    } else {
        Err(p.into_error())
    }
}

/// Parses and checks config text; `source` names the file in the problems.
pub fn parse(text: &str, source: &str) -> Result<Config, ConfigError> {
    let mut p = Problems {
        source,
        list: Vec::new(),
    };
    let table: toml::Table = match toml::from_str(text) {
        Ok(t) => t,
        Err(e) => {
            let at = match e.span() {
                Some(span) => {
                    let (line, col) = line_col(text, span.start);
                    format!("line {line}, column {col}")
                }
                None => "TOML".to_string(),
            };
            p.add(&at, one_line(e.message()));
            return Err(p.into_error());
        }
    };
    if let Some(cfg) = typed(table, &mut p) {
        validate(&cfg, &mut p);
        if p.list.is_empty() {
            return Ok(cfg);
        }
    }
    Err(p.into_error())
}

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

// ---------------------------------------------------------------------------
// Problems and key paths

struct Problems<'a> {
    source: &'a str,
    list: Vec<String>,
}

impl Problems<'_> {
    fn add(&mut self, path: &str, msg: impl fmt::Display) {
        self.list.push(if path.is_empty() {
            format!("{}: {}", self.source, msg)
        } else {
            format!("{}: {}: {}", self.source, path, msg)
        });
    }

    fn into_error(self) -> ConfigError {
        ConfigError {
            problems: self.list,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

fn key(k: &str) -> Seg {
    Seg::Key(k.to_string())
}

/// `builders[0].steps[1].command`, as the user would point at it.
fn fmt_path(segs: &[Seg]) -> String {
    let mut out = String::new();
    for seg in segs {
        match seg {
            Seg::Key(k) if out.is_empty() => out.push_str(k),
            Seg::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn ignored_segs(path: &serde_ignored::Path, out: &mut Vec<Seg>) {
    use serde_ignored::Path as P;
    match path {
        P::Root => {}
        P::Seq { parent, index } => {
            ignored_segs(parent, out);
            out.push(Seg::Index(*index));
        }
        P::Map { parent, key } => {
            ignored_segs(parent, out);
            out.push(Seg::Key(key.clone()));
        }
        // Option and newtype wrappers are not visible in the file.
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            ignored_segs(parent, out)
        }
    }
}

fn tracked_segs(path: &serde_path_to_error::Path) -> Vec<Seg> {
    use serde_path_to_error::Segment as S;
    path.iter()
        .filter_map(|seg| match seg {
            S::Seq { index } => Some(Seg::Index(*index)),
            S::Map { key } | S::Enum { variant: key } => Some(Seg::Key(key.clone())),
            S::Unknown => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Pass 2: types

/// Deserializes the parts of the file one by one, so that a type error in
/// one builder does not hide those in the next. `None` if any part failed.
fn typed(mut table: toml::Table, p: &mut Problems) -> Option<Config> {
    let www = table.remove("www");
    let protocols = table.remove("protocols");
    let workers = table.remove("workers");
    let schedulers = table.remove("schedulers");
    let builders = table.remove("builders");
    let reporters = table.remove("reporters");
    let change_source = table.remove("change_source");
    let janitor = table.remove("janitor");
    let logging = table.remove("logging");

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
        Ok(v) => Some(v),
        Err(e) => {
            let mut segs = at.to_vec();
            segs.extend(tracked_segs(e.path()));
            let msg = one_line(e.inner().message());
            let msg = if let Some(field) = missing_field(&msg) {
                segs.push(Seg::Key(field.to_string()));
                "required key is missing".to_string()
            } else if msg.contains("untagged enum Command") {
                "expected a string (run by /bin/sh) or a list of strings (argv)".to_string()
            } else if msg.contains("untagged enum StrOrList") {
                "expected a string or a list of strings".to_string()
            } else if msg.contains("untagged enum CronField") {
                "expected a number, a list of numbers or \"*\"".to_string()
            } else {
                msg
            };
            p.add(&fmt_path(&segs), msg);
            None
        }
    }
}

fn missing_field(msg: &str) -> Option<&str> {
    msg.strip_prefix("missing field `")?.strip_suffix('`')
}

/// "unknown key", with the likely intended key when there is one: typos are
/// the usual reason for an unknown key.
fn unknown_key_message(segs: &[Seg]) -> String {
    let Some((Seg::Key(bad), parent)) = segs.split_last() else {
        return "unknown key".to_string();
    };
    let shape: String = parent
        .iter()
        .map(|s| match s {
            Seg::Key(k) => format!(".{k}"),
            Seg::Index(_) => "[]".to_string(),
        })
        .collect();
    let known: &[&str] = match shape.as_str() {
        "" => fields_of::<Config>(),
        ".www" => fields_of::<Www>(),
        ".www.change_hook_dialects" => fields_of::<Dialects>(),
        ".www.change_hook_dialects.gitea" | ".www.change_hook_dialects.github" => {
            fields_of::<GiteaDialect>()
        }
        ".www.change_hook_dialects.base" => fields_of::<BaseDialect>(),
        ".protocols" => fields_of::<Protocols>(),
        ".protocols.worker" => fields_of::<WorkerProtocol>(),
        ".workers[]" => fields_of::<WorkerCfg>(),
        ".schedulers[]" => fields_of::<SchedulerCfg>(),
        ".schedulers[].properties[]" => fields_of::<ForceParam>(),
        ".reporters[]" => fields_of::<ReporterCfg>(),
        ".change_source[]" => fields_of::<ChangeSourceCfg>(),
        ".builders[]" => fields_of::<BuilderCfg>(),
        ".builders[].steps[]" => fields_of::<StepCfg>(),
        ".janitor" => fields_of::<JanitorCfg>(),
        ".logging" => fields_of::<LoggingCfg>(),
        _ => &[],
    };
    let best = known
        .iter()
        .map(|k| (edit_distance(&bad.to_lowercase(), k), *k))
        .min();
    match best {
        Some((d, k)) if d == 1 || (d == 2 && bad.len() >= 6) => {
            format!("unknown key (did you mean `{k}`?)")
        }
        _ if !known.is_empty() && known.len() <= 6 => {
            format!("unknown key (known here: {})", known.join(", "))
        }
        _ => "unknown key".to_string(),
    }
}

/// The field names serde knows for `T`, read off its derived `Deserialize`
/// so that they cannot drift from the types.
fn fields_of<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Introspect<'a>(&'a mut &'static [&'static str]);

    impl<'de> serde::Deserializer<'de> for Introspect<'_> {
        type Error = serde::de::value::Error;

        fn deserialize_any<V: serde::de::Visitor<'de>>(
            self,
            _: V,
        ) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(serde::de::Error::custom("fields read"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    // Always an error: the introspector never produces a value.
    let _ = T::deserialize(Introspect(&mut fields));
    fields
}

/// Edits (insert, delete, substitute, swap two neighbours) from `a` to `b`:
/// swapped letters are the commonest typo, so they count as one.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

// ---------------------------------------------------------------------------
// Pass 3: meaning

fn validate(cfg: &Config, p: &mut Problems) {
    if let Some(url) = &cfg.buildbot_url {
        match url::Url::parse(url) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            Ok(_) => p.add("buildbot_url", "must be an http:// or https:// URL"),
            Err(e) => p.add("buildbot_url", format_args!("not a URL: {e}")),
        }
    }
    check_www(cfg, p);
    check_workers(cfg, p);
    check_schedulers(cfg, p);
    check_builders(cfg, p);
    check_reporters(cfg, p);
    check_change_sources(cfg, p);
    check_janitor(&cfg.janitor, p);
    check_logging(&cfg.logging, p);
}

fn check_www(cfg: &Config, p: &mut Problems) {
    let www = &cfg.www;
    // port = 0 (or no port and no unix_socket): any free port, which the
    // master reports in its ready line and in `addresses.json`.
    match (&www.unix_socket, www.port) {
        (Some(s), _) if s.is_empty() => p.add("www.unix_socket", "is empty"),
        (Some(_), port) if port != 0 => p.add(
            "www.port",
            "set either www.port or www.unix_socket, not both",
        ),
        _ => {}
    }
    let www_ip = check_bind("www.bind", &www.bind, p);
    if let Some(n) = www.max_connections {
        if !(1..=MAX_MAX_CONNECTIONS).contains(&n) {
            p.add(
                "www.max_connections",
                format!("{n} is not between 1 and {MAX_MAX_CONNECTIONS}"),
            );
        }
    }
    if let Some(a) = &www.anonymous {
        if a != "read" && a != "none" {
            p.add(
                "www.anonymous",
                format_args!("{a:?} is not one of \"read\", \"none\""),
            );
        }
    }
    let dialects = &www.change_hook_dialects;
    // A hook without a secret lets anyone who can reach the port store
    // changes and start builds, and a plain cross-site HTML form is enough
    // to reach it through the operator's tunnel: no dialect runs unsigned
    // unless the config says so in words (`allow_unsigned`, base only: Gitea
    // and GitHub can always sign, so they get no opt-out).
    for (key, g) in [("gitea", &dialects.gitea), ("github", &dialects.github)] {
        let Some(g) = g else { continue };
        match g.secret.as_deref() {
            None => p.add(
                &format!("www.change_hook_dialects.{key}.secret"),
                "required: the same secret as in the webhook's settings (every delivery's signature is checked against it)",
            ),
            Some("") => p.add(
                &format!("www.change_hook_dialects.{key}.secret"),
                "is empty: set the same secret as in the webhook's settings",
            ),
            Some(_) => {}
        }
        if let Some(u) = &g.repository_url {
            if u != "ssh" && u != "clone" {
                p.add(
                    &format!("www.change_hook_dialects.{key}.repository_url"),
                    format_args!("{u:?} is not one of \"ssh\", \"clone\""),
                );
            }
        }
    }
    if let Some(b) = &dialects.base {
        match (b.secret.as_deref(), b.allow_unsigned) {
            (Some(""), _) => p.add(
                "www.change_hook_dialects.base.secret",
                "is empty: set a secret (posts then need X-Hub-Signature-256)",
            ),
            (Some(_), true) => p.add(
                "www.change_hook_dialects.base.allow_unsigned",
                "set together with a secret: remove one (with a secret, unsigned posts are refused)",
            ),
            (None, false) => p.add(
                "www.change_hook_dialects.base.secret",
                "required (or set allow_unsigned = true to accept unsigned posts from anyone who can reach the port)",
            ),
            _ => {}
        }
    }

    let Some(wp) = &cfg.protocols.worker else {
        p.add(
            "protocols.worker",
            "missing: add a [protocols.worker] section with the port workers connect to",
        );
        return;
    };
    if wp.keepalive == 0 {
        p.add("protocols.worker.keepalive", "must be at least 1 second");
    }
    let worker_ip = check_bind("protocols.worker.bind", &wp.bind, p);
    if let (Some(a), Some(b)) = (www_ip, worker_ip) {
        let overlap = a == b || a.is_unspecified() || b.is_unspecified();
        if www.unix_socket.is_none() && wp.port != 0 && wp.port == www.port && overlap {
            p.add(
                "protocols.worker.port",
                format_args!("{} is also www.port on the same address", wp.port),
            );
        }
    }
}

fn check_janitor(j: &JanitorCfg, p: &mut Problems) {
    if j.interval_hours == 0 {
        p.add(
            "janitor.interval_hours",
            "must be at least 1 (to turn the janitor off, set both horizons to 0)",
        );
    }
    // Beyond a century the cutoff arithmetic means nothing; 0 is "forever".
    for (k, v) in [
        ("build_horizon_days", j.build_horizon_days),
        ("log_horizon_days", j.log_horizon_days),
    ] {
        if v > 36500 {
            p.add(
                &format!("janitor.{k}"),
                format_args!("{v} days is more than a century; use 0 to keep forever"),
            );
        }
    }
}

/// Levels env_logger understands, in a filter like `info,minibot::web::www=debug`.
const LOG_LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

fn check_logging(l: &LoggingCfg, p: &mut Problems) {
    // env_logger ignores what it cannot parse (with a note on stderr, which
    // a daemon has not got): check here so a typo is an error with its key.
    let bad_level = |s: &str| !LOG_LEVELS.contains(&s.to_ascii_lowercase().as_str());
    let bad_target = |s: &str| {
        s.is_empty()
            || !s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    if l.level.trim().is_empty() {
        p.add("logging.level", "is empty (e.g. \"info\" or \"debug\")");
    }
    for part in l.level.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let wrong = match part.split_once('=') {
            Some((target, level)) => bad_target(target) || bad_level(level),
            // env_logger would take a bare non-level word for a module
            // name and log nothing else, so a misspelt level would silence
            // the log: modules must be written MODULE=LEVEL.
            None => bad_level(part),
        };
        if wrong {
            p.add(
                "logging.level",
                format_args!(
                    "{part:?} is not a level ({}) or MODULE=LEVEL",
                    LOG_LEVELS.join(", ")
                ),
            );
        }
    }
    if l.rotate_length < 64 * 1024 {
        p.add(
            "logging.rotate_length",
            "must be at least 65536 bytes (e.g. 10000000)",
        );
    }
    if l.max_rotated_files > 100 {
        p.add("logging.max_rotated_files", "must be at most 100");
    }
}

fn check_bind(path: &str, bind: &str, p: &mut Problems) -> Option<IpAddr> {
    match bind.parse::<IpAddr>() {
        Ok(ip) => Some(ip),
        Err(_) => {
            p.add(
                path,
                format_args!("{bind:?} is not an IP address (e.g. \"127.0.0.1\")"),
            );
            None
        }
    }
}

/// Names become directory names on the worker and parts of URLs, so they are
/// kept to a portable, path-safe alphabet (this also rules out `..`).
fn check_name(path: &str, what: &str, name: &str, p: &mut Problems) {
    if name.is_empty() {
        p.add(path, format_args!("the {what} name is empty"));
    } else if name.starts_with('.')
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        p.add(
            path,
            format_args!(
                "{name:?}: use only letters, digits, '.', '_' and '-', not starting with '.'"
            ),
        );
    }
}

/// Reports names seen twice; `names` yields (path of the name, name).
fn check_unique<'a>(what: &str, names: impl Iterator<Item = (String, &'a str)>, p: &mut Problems) {
    let mut first: HashMap<&str, String> = HashMap::new();
    for (path, name) in names {
        if name.is_empty() {
            continue;
        }
        match first.get(name) {
            Some(prev) => p.add(
                &path,
                format_args!("duplicate {what} {name:?} (also {prev})"),
            ),
            None => {
                first.insert(name, path);
            }
        }
    }
}

fn check_workers(cfg: &Config, p: &mut Problems) {
    for (i, w) in cfg.workers.iter().enumerate() {
        check_name(&format!("workers[{i}].name"), "worker", &w.name, p);
        if w.password.is_empty() {
            p.add(&format!("workers[{i}].password"), "is empty");
        }
        if w.max_builds == 0 {
            p.add(&format!("workers[{i}].max_builds"), "must be at least 1");
        }
    }
    check_unique(
        "worker name",
        cfg.workers
            .iter()
            .enumerate()
            .map(|(i, w)| (format!("workers[{i}].name"), w.name.as_str())),
        p,
    );
}

const SCHEDULER_KINDS: &[&str] = &[
    "single_branch",
    "any_branch",
    "force",
    "periodic",
    "nightly",
];
/// Schedulers that react to changes (and so take change filters).
const FILTERED: &[&str] = &["single_branch", "any_branch", "nightly"];
const CHANGE_DRIVEN: &[&str] = &["single_branch", "any_branch"];
const PARAM_KINDS: &[&str] = &["string", "text", "int", "bool", "choice", "fixed"];

fn check_force_params(at: &str, s: &SchedulerCfg, p: &mut Problems) {
    for (j, fp) in s.properties.iter().enumerate() {
        let at = format!("{at}.properties[{j}]");
        if fp.name.is_empty()
            || !fp
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            p.add(
                &format!("{at}.name"),
                format_args!("{:?}: use only letters, digits, '_', '-' and '.'", fp.name),
            );
        }
        if ["branch", "revision", "reason", "repository", "project"].contains(&fp.name.as_str()) {
            p.add(
                &format!("{at}.name"),
                format_args!(
                    "{:?} is a field of every force form, not a property",
                    fp.name
                ),
            );
        }
        if !PARAM_KINDS.contains(&fp.kind.as_str()) {
            p.add(
                &format!("{at}.type"),
                format_args!(
                    "{:?} is not one of {}",
                    fp.kind,
                    PARAM_KINDS
                        .iter()
                        .map(|k| format!("{k:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            continue;
        }
        if fp.kind == "choice" && fp.choices.is_empty() {
            p.add(&format!("{at}.choices"), "required for a choice parameter");
        }
        if fp.kind != "choice" && !fp.choices.is_empty() {
            p.add(
                &format!("{at}.choices"),
                "only a choice parameter takes this key",
            );
        }
        if fp.kind == "fixed" && fp.default.is_none() {
            p.add(&format!("{at}.default"), "required for a fixed parameter");
        }
        if let Some(re) = &fp.regex {
            if !matches!(fp.kind.as_str(), "string" | "text") {
                p.add(
                    &format!("{at}.regex"),
                    "only string and text parameters take this key",
                );
            } else if let Err(e) = regex_lite::Regex::new(re) {
                p.add(
                    &format!("{at}.regex"),
                    format_args!("invalid regex {re:?}: {}", one_line(&e.to_string())),
                );
            }
        }
        if let Some(d) = &fp.default {
            // Shown as JSON (the toml crate is built without its writer).
            let shown = serde_json::to_string(d).unwrap_or_default();
            let ok = match fp.kind.as_str() {
                "int" => d.is_integer(),
                "bool" => d.is_bool(),
                "fixed" => true,
                _ => d.is_str(),
            };
            if !ok {
                p.add(
                    &format!("{at}.default"),
                    format_args!("{shown} does not fit a {} parameter", fp.kind),
                );
            } else if fp.kind == "choice"
                && !fp.choices.iter().any(|c| Some(c.as_str()) == d.as_str())
            {
                p.add(
                    &format!("{at}.default"),
                    format_args!("{shown} is not one of the choices"),
                );
            }
        }
    }
    check_unique(
        "property",
        s.properties
            .iter()
            .enumerate()
            .map(|(j, fp)| (format!("{at}.properties[{j}].name"), fp.name.as_str())),
        p,
    );
}

fn check_schedulers(cfg: &Config, p: &mut Problems) {
    for (i, s) in cfg.schedulers.iter().enumerate() {
        let at = format!("schedulers[{i}]");
        check_name(&format!("{at}.name"), "scheduler", &s.name, p);
        // Keys that only some kinds take: (key, set?, kinds taking it).
        let only: [(&str, bool, &[&str]); 16] = [
            ("branch_regex", s.branch_regex.is_some(), &["any_branch"]),
            ("tag_regex", s.tag_regex.is_some(), &["any_branch"]),
            ("tree_stable_timer", s.tree_stable_timer != 0, CHANGE_DRIVEN),
            ("repository", s.repository.is_some(), FILTERED),
            ("project", s.project.is_some(), FILTERED),
            ("category", s.category.is_some(), FILTERED),
            ("files_regex", s.files_regex.is_some(), FILTERED),
            ("period", s.period.is_some(), &["periodic"]),
            ("minute", s.minute.is_some(), &["nightly"]),
            ("hour", s.hour.is_some(), &["nightly"]),
            ("day_of_week", s.day_of_week.is_some(), &["nightly"]),
            ("day_of_month", s.day_of_month.is_some(), &["nightly"]),
            ("only_if_changed", s.only_if_changed, &["nightly"]),
            ("reason", s.reason.is_some(), &["force"]),
            ("button_name", s.button_name.is_some(), &["force"]),
            ("properties", !s.properties.is_empty(), &["force"]),
        ];
        let known = SCHEDULER_KINDS.contains(&s.kind.as_str());
        for (k, set, kinds) in only {
            if set && known && !kinds.contains(&s.kind.as_str()) {
                p.add(
                    &format!("{at}.{k}"),
                    format_args!(
                        "not a key of {} schedulers (only {})",
                        s.kind,
                        kinds.join(", ")
                    ),
                );
            }
        }
        match s.kind.as_str() {
            "single_branch" => {
                if s.branch.as_deref().unwrap_or("").is_empty() {
                    p.add(
                        &format!("{at}.branch"),
                        "required for a single_branch scheduler",
                    );
                }
            }
            "any_branch" => {
                if s.branch.is_some() {
                    p.add(
                        &format!("{at}.branch"),
                        "an any_branch scheduler takes branch_regex / tag_regex, not branch",
                    );
                }
            }
            "force" => check_force_params(&at, s, p),
            "periodic" => match s.period {
                None => p.add(
                    &format!("{at}.period"),
                    "required for a periodic scheduler (seconds)",
                ),
                Some(0) => p.add(&format!("{at}.period"), "must be at least 1 second"),
                Some(_) => {}
            },
            "nightly" => {
                for (k, f, max) in [
                    ("minute", &s.minute, 59),
                    ("hour", &s.hour, 23),
                    ("day_of_week", &s.day_of_week, 6),
                    ("day_of_month", &s.day_of_month, 31),
                ] {
                    if let Some(Err(e)) = f.as_ref().map(|f| f.values(max)) {
                        p.add(&format!("{at}.{k}"), e);
                    }
                }
                let filtered = s.repository.is_some()
                    || s.project.is_some()
                    || s.category.is_some()
                    || s.files_regex.is_some();
                if filtered && !s.only_if_changed {
                    p.add(
                        &format!("{at}.only_if_changed"),
                        "change filters on a nightly scheduler need only_if_changed = true",
                    );
                }
                if matches!(s.day_of_month.as_ref().map(|f| f.values(31)), Some(Ok(Some(v))) if v.contains(&0))
                {
                    p.add(
                        &format!("{at}.day_of_month"),
                        "days of the month start at 1",
                    );
                }
            }
            other => p.add(
                &format!("{at}.type"),
                format_args!(
                    "{other:?} is not one of {}",
                    SCHEDULER_KINDS
                        .iter()
                        .map(|k| format!("{k:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
        }
        let regexes = [
            ("branch_regex", &s.branch_regex),
            ("tag_regex", &s.tag_regex),
            ("files_regex", &s.files_regex),
        ];
        for (k, re) in regexes {
            let Some(re) = re else { continue };
            if let Err(e) = regex_lite::Regex::new(re) {
                p.add(
                    &format!("{at}.{k}"),
                    format_args!("invalid regex {re:?}: {}", one_line(&e.to_string())),
                );
            }
        }
        if s.builders.is_empty() {
            p.add(&format!("{at}.builders"), "names no builder");
        }
        for (j, b) in s.builders.iter().enumerate() {
            if cfg.builder(b).is_none() {
                p.add(
                    &format!("{at}.builders[{j}]"),
                    format_args!("no builder named {b:?}"),
                );
            }
        }
    }
    check_unique(
        "scheduler name",
        cfg.schedulers
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("schedulers[{i}].name"), s.name.as_str())),
        p,
    );
}

fn check_builders(cfg: &Config, p: &mut Problems) {
    for (i, b) in cfg.builders.iter().enumerate() {
        let at = format!("builders[{i}]");
        check_name(&format!("{at}.name"), "builder", &b.name, p);
        if let Some(dir) = &b.workerbuilddir {
            check_name(&format!("{at}.workerbuilddir"), "directory", dir, p);
        }
        if b.workers.is_empty() {
            p.add(
                &format!("{at}.workers"),
                "names no worker, so its builds would never run",
            );
        }
        for (j, w) in b.workers.iter().enumerate() {
            if cfg.worker(w).is_none() {
                p.add(
                    &format!("{at}.workers[{j}]"),
                    format_args!("no worker named {w:?}"),
                );
            }
        }
        for (j, step) in b.steps.iter().enumerate() {
            check_step(&format!("{at}.steps[{j}]"), step, p);
        }
    }
    check_unique(
        "builder name",
        cfg.builders
            .iter()
            .enumerate()
            .map(|(i, b)| (format!("builders[{i}].name"), b.name.as_str())),
        p,
    );
    // Two builders in one directory would clobber each other's checkouts.
    check_unique(
        "build directory",
        cfg.builders.iter().enumerate().map(|(i, b)| {
            let key = if b.workerbuilddir.is_some() {
                "workerbuilddir"
            } else {
                "name"
            };
            (format!("builders[{i}].{key}"), b.builddir())
        }),
        p,
    );
}

fn check_reporters(cfg: &Config, p: &mut Problems) {
    for (i, r) in cfg.reporters.iter().enumerate() {
        let at = format!("reporters[{i}]");
        for (j, b) in r.builders.iter().enumerate() {
            if cfg.builder(b).is_none() {
                p.add(
                    &format!("{at}.builders[{j}]"),
                    format_args!("no builder named {b:?}"),
                );
            }
        }
        let gitea_keys = [
            ("base_url", r.base_url.is_some()),
            ("token", r.token.is_some()),
            ("token_file", r.token_file.is_some()),
            ("context", r.context.is_some()),
            ("context_pr", r.context_pr.is_some()),
        ];
        let mail_keys = [
            ("smtp_host", r.smtp_host.is_some()),
            ("smtp_port", r.smtp_port.is_some()),
            ("starttls", r.starttls.is_some()),
            ("smtp_user", r.smtp_user.is_some()),
            ("smtp_password", r.smtp_password.is_some()),
            ("smtp_password_file", r.smtp_password_file.is_some()),
            ("from", r.from.is_some()),
            ("to", !r.to.is_empty()),
            ("mode", r.mode.is_some()),
        ];
        let foreign = |keys: &[(&str, bool)], kind: &str, p: &mut Problems| {
            for (k, set) in keys {
                if *set {
                    p.add(
                        &format!("{at}.{k}"),
                        format_args!("not a key of {kind} reporters"),
                    );
                }
            }
        };
        match r.kind.as_str() {
            "gitea_status" => {
                foreign(&mail_keys, "gitea_status", p);
                match r.base_url.as_deref().map(url::Url::parse) {
                    None => p.add(
                        &format!("{at}.base_url"),
                        "required for a gitea_status reporter (e.g. \"https://git.example.org\")",
                    ),
                    Some(Ok(u)) if u.scheme() == "http" || u.scheme() == "https" => {}
                    Some(_) => p.add(
                        &format!("{at}.base_url"),
                        "must be an http:// or https:// URL",
                    ),
                }
                one_secret(
                    &at,
                    "token",
                    r.token.as_deref(),
                    r.token_file.as_deref(),
                    true,
                    p,
                );
                for (k, v) in [("context", &r.context), ("context_pr", &r.context_pr)] {
                    if v.as_deref() == Some("") {
                        p.add(&format!("{at}.{k}"), "is empty");
                    }
                }
            }
            "mail" => {
                foreign(&gitea_keys, "mail", p);
                if r.smtp_host.as_deref().unwrap_or("").is_empty() {
                    p.add(&format!("{at}.smtp_host"), "required for a mail reporter");
                }
                if r.smtp_port == Some(0) {
                    p.add(&format!("{at}.smtp_port"), "must be 1-65535");
                }
                match r.from.as_deref() {
                    None => p.add(&format!("{at}.from"), "required for a mail reporter"),
                    Some(f) => check_address(&format!("{at}.from"), f, p),
                }
                if r.to.is_empty() {
                    p.add(
                        &format!("{at}.to"),
                        "required for a mail reporter: a list of addresses",
                    );
                }
                for (j, t) in r.to.iter().enumerate() {
                    check_address(&format!("{at}.to[{j}]"), t, p);
                }
                for m in r.modes() {
                    if !MAIL_MODES.contains(&m) {
                        p.add(
                            &format!("{at}.mode"),
                            format_args!("{m:?} is not one of {}", MAIL_MODES.join(", ")),
                        );
                    }
                }
                let has_pw = r.smtp_password.is_some() || r.smtp_password_file.is_some();
                if r.smtp_user.is_some() {
                    one_secret(
                        &at,
                        "smtp_password",
                        r.smtp_password.as_deref(),
                        r.smtp_password_file.as_deref(),
                        true,
                        p,
                    );
                } else if has_pw {
                    p.add(
                        &format!("{at}.smtp_user"),
                        "required when a password is set",
                    );
                }
            }
            other => p.add(
                &format!("{at}.type"),
                format_args!("{other:?} is not one of \"gitea_status\", \"mail\""),
            ),
        }
    }
}

/// A secret is given inline or in a file, not both.
fn one_secret(
    at: &str,
    key: &str,
    inline: Option<&str>,
    file: Option<&str>,
    required: bool,
    p: &mut Problems,
) {
    match (inline, file) {
        (Some(_), Some(_)) => p.add(
            &format!("{at}.{key}"),
            format_args!("set either {key} or {key}_file, not both"),
        ),
        (Some(""), None) => p.add(&format!("{at}.{key}"), "is empty"),
        (None, Some("")) => p.add(&format!("{at}.{key}_file"), "is empty"),
        (None, None) if required => p.add(
            &format!("{at}.{key}"),
            format_args!("required: set {key}, or {key}_file naming a file of mode 0600"),
        ),
        _ => {}
    }
}

fn check_address(at: &str, addr: &str, p: &mut Problems) {
    if addr.parse::<lettre::message::Mailbox>().is_err() {
        p.add(at, format_args!("{addr:?} is not an e-mail address"));
    }
}

fn check_change_sources(cfg: &Config, p: &mut Problems) {
    for (i, c) in cfg.change_source.iter().enumerate() {
        let at = format!("change_source[{i}]");
        if c.kind != "git_poller" {
            p.add(
                &format!("{at}.type"),
                format_args!("{:?} is not \"git_poller\"", c.kind),
            );
        }
        if c.repourl.is_empty() {
            p.add(&format!("{at}.repourl"), "is empty");
        } else if c.repourl.starts_with('-') {
            p.add(&format!("{at}.repourl"), "must not start with '-'");
        }
        if c.poll_interval == 0 {
            p.add(&format!("{at}.poll_interval"), "must be at least 1 second");
        }
        match c.branch_list() {
            Some(list) if list.is_empty() => p.add(&format!("{at}.branches"), "is an empty list"),
            Some(list) => {
                for b in list {
                    if b.is_empty()
                        || b.starts_with('-')
                        || b.contains("..")
                        || b.contains(':')
                        || b.chars().any(|ch| ch.is_whitespace() || ch.is_control())
                    {
                        p.add(
                            &format!("{at}.branches"),
                            format_args!("{b:?} is not a branch name"),
                        );
                    }
                }
            }
            None => {}
        }
    }
    check_unique(
        "change source name",
        cfg.change_source
            .iter()
            .enumerate()
            .map(|(i, c)| (format!("change_source[{i}].name"), c.name())),
        p,
    );
}

/// Checks the secret files the config names: present, readable, and not
/// readable by others (mode 0600), like ssh does for keys. Done by `load`
/// (which knows the master directory), so checkconfig reports them.
fn check_secret_files(cfg: &Config, dir: &Path, p: &mut Problems) {
    use std::os::unix::fs::PermissionsExt;
    for (i, r) in cfg.reporters.iter().enumerate() {
        for (k, f) in [
            ("token_file", &r.token_file),
            ("smtp_password_file", &r.smtp_password_file),
        ] {
            let Some(f) = f.as_deref().filter(|f| !f.is_empty()) else {
                continue;
            };
            let path = dir.join(f);
            let at = format!("reporters[{i}].{k}");
            match std::fs::metadata(&path) {
                Err(e) => p.add(
                    &at,
                    format_args!("cannot read {}: {}", path.display(), io_reason(&e)),
                ),
                Ok(m) if m.permissions().mode() & 0o077 != 0 => p.add(
                    &at,
                    format_args!(
                        "{} is readable by others (mode {:o}); run chmod 600 on it",
                        path.display(),
                        m.permissions().mode() & 0o777
                    ),
                ),
                Ok(_) => {
                    if let Err(e) = std::fs::read_to_string(&path) {
                        p.add(
                            &at,
                            format_args!("cannot read {}: {}", path.display(), io_reason(&e)),
                        );
                    }
                }
            }
        }
    }
}

fn check_step(at: &str, s: &StepCfg, p: &mut Problems) {
    if s.name.as_deref() == Some("") {
        p.add(&format!("{at}.name"), "is empty");
    }
    // Keys of the other step type would be silently ignored, like unknown keys.
    let mut not_here = |key: &str, set: bool, kind: &str| {
        if set {
            p.add(
                &format!("{at}.{key}"),
                format_args!("not a key of {kind} steps"),
            );
        }
    };
    match s.kind.as_str() {
        "git" => {
            not_here("command", s.command.is_some(), "git");
            if s.repourl.as_deref().unwrap_or("").is_empty() {
                p.add(&format!("{at}.repourl"), "required for a git step");
            }
            if let Some(m) = &s.mode {
                if m != "incremental" && m != "full" {
                    p.add(
                        &format!("{at}.mode"),
                        format_args!("{m:?} is not one of \"incremental\", \"full\""),
                    );
                }
            }
        }
        "shell" => {
            not_here("repourl", s.repourl.is_some(), "shell");
            not_here("mode", s.mode.is_some(), "shell");
            not_here("branch", s.branch.is_some(), "shell");
            match &s.command {
                None => p.add(&format!("{at}.command"), "required for a shell step"),
                Some(Command::Argv(argv)) if argv.is_empty() => {
                    p.add(&format!("{at}.command"), "is an empty list")
                }
                Some(Command::Argv(argv)) if argv[0].is_empty() => {
                    p.add(&format!("{at}.command[0]"), "the program name is empty")
                }
                Some(Command::Shell(line)) if line.trim().is_empty() => {
                    p.add(&format!("{at}.command"), "is empty")
                }
                Some(_) => {}
            }
        }
        other => p.add(
            &format!("{at}.type"),
            format_args!("{other:?} is not one of \"git\", \"shell\""),
        ),
    }
    if s.timeout == Some(0) {
        p.add(&format!("{at}.timeout"), "must be at least 1 second");
    }
    if let Some(dir) = &s.workdir {
        let escapes = Path::new(dir).is_absolute()
            || Path::new(dir)
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir));
        if escapes {
            p.add(
                &format!("{at}.workdir"),
                "must be a path inside the build directory (relative, without '..')",
            );
        }
    }
    for k in s.env.keys() {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            p.add(
                &format!("{at}.env"),
                format_args!("{k:?} is not a valid variable name"),
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Small helpers

/// The io error's text without " (os error N)", which means nothing to users.
fn io_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// 1-based line and column (in characters) of byte offset `at`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

/// The config the master runs with now, shared by the threads that read
/// it on each use (HTTP requests, worker connections, the janitor); a
/// reconfig replaces it whole, so a reader sees the old or the new one,
/// never a mix. Cheap to clone.
#[derive(Clone)]
pub struct LiveConfig(Arc<RwLock<Arc<Config>>>);

impl LiveConfig {
    pub fn new(cfg: Config) -> LiveConfig {
        LiveConfig(Arc::new(RwLock::new(Arc::new(cfg))))
    }

    /// The config in use now.
    pub fn current(&self) -> Arc<Config> {
        // A poisoned lock only means a writer panicked; the Arc it holds is
        // whole either way.
        match self.0.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts `new` in place for every later `current`.
    pub fn replace(&self, new: Arc<Config>) {
        match self.0.write() {
            Ok(mut g) => *g = new,
            Err(p) => *p.into_inner() = new,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SPEC §2, verbatim.
    const SPEC_CFG: &str = r#"
title = "Hello World CI"
buildbot_url = "http://localhost:12345/"   # base of links in statuses and mails

[www]
port = 12345                 # TCP port of the web UI, API and change hooks
bind = "127.0.0.1"           # default; never 0.0.0.0 unless written here
# unix_socket = "www.sock"   # instead of port: a unix socket, mode 0600
# anonymous = "read"         # "read" (default) or "none"; writes always need a login
# max_connections = 32       # HTTP requests served at once (a thread each); idle
#                            # connections wait without one

[www.change_hook_dialects.gitea]
secret = "SomeSecretPassPhraseToAuthenticateGitea"

# [www.change_hook_dialects.base] # plain form/JSON posts, e.g. from `minibot sendchange`
# secret = "..."                  # required (X-Hub-Signature-256); an unsigned hook needs
                                  # `allow_unsigned = true`, which checkconfig warns about

[protocols.worker]
port = 54321
bind = "127.0.0.1"

[[workers]]
name = "example-worker"
password = "pass"
max_builds = 1

[[schedulers]]
name = "all"
type = "single_branch"       # single_branch | any_branch | force | periodic | nightly
branch = "master"            # single_branch; any_branch takes branch_regex / tag_regex
tree_stable_timer = 0        # seconds to wait for more changes before building
builders = ["runtests"]

[[schedulers]]
name = "force"
type = "force"
builders = ["runtests"]

[[builders]]
name = "runtests"
workers = ["example-worker"]

[[builders.steps]]
type = "git"                 # clone or update the source at the change's revision
repourl = "https://git.example.org/isabell/hello-world.git"
mode = "incremental"         # incremental | full (fresh clone)

[[builders.steps]]
type = "shell"
name = "test"
command = ["python3", "test_hello.py"]   # argv list, or a string run by /bin/sh
env = { PYTHONUNBUFFERED = "1" }
timeout = 1200               # seconds without output before the step is killed
# halt_on_failure = true     # default true; warn_on_failure, flunk_on_failure as in Buildbot

# [[reporters]]
# type = "gitea_status"      # commit statuses on Gitea: pending, then success/failure/error
# base_url = "https://git.example.org"
# token = "..."
"#;

    /// A valid config to break one key at a time.
    const BASE: &str = r#"
[www]
port = 8010
[protocols.worker]
port = 9989
[[workers]]
name = "w1"
password = "pw"
[[schedulers]]
name = "s"
type = "force"
builders = ["b"]
[[builders]]
name = "b"
workers = ["w1"]
[[builders.steps]]
type = "shell"
command = "make test"
"#;

    fn problems(text: &str) -> Vec<String> {
        match parse(text, "master.cfg") {
            Ok(_) => Vec::new(),
            Err(e) => e.problems,
        }
    }

    /// Asserts that `expected` is among the problems of `text`.
    #[track_caller]
    fn assert_problem(text: &str, expected: &str) {
        let found = problems(text);
        assert!(
            found.iter().any(|p| p.contains(expected)),
            "expected a problem containing {expected:?}, got {found:#?}"
        );
    }

    fn with(extra: &str) -> String {
        format!("{BASE}{extra}")
    }

    #[test]
    fn sample_parses() {
        let cfg = parse(SAMPLE, "master.cfg.sample").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.title, "Hello World CI");
        assert_eq!(cfg.www.port, 12345);
        assert_eq!(cfg.www.bind, "127.0.0.1");
        assert_eq!(cfg.protocols.worker.as_ref().map(|w| w.port), Some(54321));
        assert!(cfg.worker("example-worker").is_some());
        assert_eq!(
            cfg.scheduler("all").map(|s| s.kind.as_str()),
            Some("single_branch")
        );
        assert_eq!(
            cfg.scheduler("force").map(|s| s.kind.as_str()),
            Some("force")
        );
        let b = cfg.builder("runtests").expect("builder runtests");
        assert_eq!(b.steps.len(), 2);
        assert_eq!(
            b.steps[1].command,
            Some(Command::Argv(vec![
                "python3".into(),
                "test_hello.py".into()
            ]))
        );
        assert!(cfg.reporters.is_empty());
        assert_eq!(cfg.max_log_size, 10 * 1024 * 1024);
    }

    #[test]
    fn spec_config_parses() {
        let cfg = parse(SPEC_CFG, "master.cfg").unwrap_or_else(|e| panic!("{e}"));
        let gitea = cfg.www.change_hook_dialects.gitea.as_ref().expect("gitea");
        assert_eq!(
            gitea.secret.as_deref(),
            Some("SomeSecretPassPhraseToAuthenticateGitea")
        );
        assert!(cfg.www.change_hook_dialects.base.is_none());
        assert!(cfg.warnings().is_empty());
        assert!(cfg.www.anonymous_read());
        let b = cfg.builder("runtests").expect("builder");
        assert_eq!(b.builddir(), "runtests");
        assert_eq!(b.steps[0].mode.as_deref(), Some("incremental"));
        assert_eq!(
            b.steps[1].env.get("PYTHONUNBUFFERED").map(String::as_str),
            Some("1")
        );
        assert_eq!(b.steps[1].timeout_secs(), 1200);
        assert!(b.steps[1].halts_on_failure());
        assert_eq!(b.step_names(), vec!["git", "test"]);
    }

    #[test]
    fn base_is_valid_and_defaults_apply() {
        let cfg = parse(BASE, "master.cfg").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.title, "minibot");
        assert_eq!(cfg.workers[0].max_builds, 1);
        assert_eq!(cfg.protocols.worker.as_ref().map(|w| w.keepalive), Some(30));
        assert_eq!(
            cfg.protocols.worker.as_ref().map(|w| w.bind.as_str()),
            Some("127.0.0.1")
        );
        assert!(cfg.builder("nope").is_none());
    }

    #[test]
    fn command_as_string_and_argv() {
        let cfg = parse(BASE, "master.cfg").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            cfg.builders[0].steps[0].command,
            Some(Command::Shell("make test".into()))
        );
        let argv = BASE.replace("command = \"make test\"", "command = [\"make\", \"test\"]");
        let cfg = parse(&argv, "master.cfg").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            cfg.builders[0].steps[0].command,
            Some(Command::Argv(vec!["make".into(), "test".into()]))
        );
        assert_problem(
            &BASE.replace("command = \"make test\"", "command = 3"),
            "master.cfg: builders[0].steps[0].command: expected a string (run by /bin/sh) or a list of strings (argv)",
        );
    }

    #[test]
    fn unknown_keys_everywhere() {
        let text = BASE
            .replace("command = \"make test\"", "comand = \"make test\"")
            .replace("[www]\n", "[www]\nprot = 1\n")
            .replace("[protocols.worker]\n", "[protocols.worker]\nhost = \"x\"\n");
        let text = format!("titel = \"x\"\n{text}");
        let found = problems(&text);
        for expected in [
            "master.cfg: titel: unknown key (did you mean `title`?)",
            "master.cfg: www.prot: unknown key (did you mean `port`?)",
            "master.cfg: protocols.worker.host: unknown key (known here: port, bind, keepalive)",
            "master.cfg: builders[0].steps[0].comand: unknown key (did you mean `command`?)",
        ] {
            assert!(
                found.iter().any(|p| p == expected),
                "{expected:?} not in {found:#?}"
            );
        }
        assert_problem(
            &text.replace("[www]\n", "[www.change_hook_dialects.gogs]\n[www]\n"),
            "www.change_hook_dialects.gogs: unknown key (known here: gitea, base, github)",
        );
    }

    #[test]
    fn unknown_key_deep_in_steps_has_index_path() {
        let text =
            with("[[builders.steps]]\ntype = \"git\"\nrepourl = \"u\"\nflunk_on_failur = true\n");
        assert_problem(
            &text,
            "master.cfg: builders[0].steps[1].flunk_on_failur: unknown key (did you mean `flunk_on_failure`?)",
        );
    }

    #[test]
    fn type_errors_name_their_path_and_all_parts_are_checked() {
        let text = BASE.replace("port = 8010", "port = 70000").replace(
            "password = \"pw\"",
            "password = \"pw\"\nmax_builds = \"two\"",
        );
        let text = format!("{text}[[builders]]\nname = \"c\"\nworkers = \"w1\"\n[[builders.steps]]\ntype = \"shell\"\ncommand = \"x\"\ntimeout = -1\n[[builders.steps]]\ntype = \"shell\"\ncommand = \"y\"\nenv = {{ A = 1 }}\n");
        let found = problems(&text);
        for expected in [
            "master.cfg: www.port: invalid value: integer `70000`, expected u16",
            "master.cfg: workers[0].max_builds: invalid type: string \"two\", expected u32",
            "master.cfg: builders[1].workers: invalid type: string \"w1\", expected a sequence",
            "master.cfg: builders[1].steps[0].timeout: invalid value: integer `-1`, expected u64",
            "master.cfg: builders[1].steps[1].env.A: invalid type: integer `1`, expected a string",
        ] {
            assert!(
                found.iter().any(|p| p == expected),
                "{expected:?} not in {found:#?}"
            );
        }
    }

    #[test]
    fn missing_required_key_is_named() {
        assert_problem(
            &BASE.replace("password = \"pw\"\n", ""),
            "master.cfg: workers[0].password: required key is missing",
        );
        assert_problem(
            &BASE.replace("type = \"force\"\n", ""),
            "master.cfg: schedulers[0].type: required key is missing",
        );
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let found = problems("title = \"x\"\n[www\nport = 1\n");
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].starts_with("master.cfg: line 2, column "),
            "{found:#?}"
        );
        assert!(!found[0].contains('\n'));
    }

    #[test]
    fn unreadable_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("master.cfg");
        let err = load(&path).expect_err("missing file");
        assert_eq!(
            err.to_string(),
            format!("cannot read {}: No such file or directory", path.display())
        );
        std::fs::write(&path, SAMPLE).expect("write");
        private(&path);
        assert!(load(&path).is_ok());
    }

    fn private(path: &Path) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }

    #[test]
    fn config_file_with_secrets_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("master.cfg");
        std::fs::write(&path, SAMPLE).expect("write");
        for mode in [0o644, 0o640, 0o604, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            let err = load(&path).expect_err("readable by others").to_string();
            assert!(
                err.contains(&format!("run `chmod 600 {}`", path.display()))
                    && err.contains(&format!("mode {mode:03o}"))
                    && err.contains("workers[0].password"),
                "{err}"
            );
        }
        private(&path);
        assert!(load(&path).is_ok());
    }

    #[test]
    fn weak_and_published_secrets_are_warned_about() {
        let cfg = parse(SAMPLE, "master.cfg.sample").unwrap_or_else(|e| panic!("{e}"));
        let w = secret_warnings(&cfg);
        assert!(
            w.iter().any(|l| l.starts_with(
                "www.change_hook_dialects.gitea.secret: is the sample's published secret"
            )),
            "{w:#?}"
        );
        assert!(
            w.iter()
                .any(|l| l.starts_with("workers[0].password: is the sample's published password")),
            "{w:#?}"
        );
        let fresh = sample_with_secrets(&random_hex(16).unwrap(), &random_hex(16).unwrap());
        assert!(!fresh.contains(SAMPLE_GITEA_SECRET) && !fresh.contains(SAMPLE_WORKER_PASSWORD));
        let cfg = parse(&fresh, "master.cfg.sample").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(secret_warnings(&cfg), Vec::<String>::new());
        let cfg = parse(
            &with("[[workers]]\nname = \"w2\"\npassword = \"elevenchars\"\n"),
            "m",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let w = secret_warnings(&cfg);
        assert!(
            w.iter()
                .any(|l| l.starts_with("workers[1].password: is shorter than 12 characters")),
            "{w:#?}"
        );
    }

    #[test]
    fn duplicate_names() {
        let text = with(
            "[[workers]]\nname = \"w1\"\npassword = \"x\"\n\
             [[schedulers]]\nname = \"s\"\ntype = \"force\"\nbuilders = [\"b\"]\n\
             [[builders]]\nname = \"b\"\nworkers = [\"w1\"]\n",
        );
        let found = problems(&text);
        for expected in [
            "master.cfg: workers[1].name: duplicate worker name \"w1\" (also workers[0].name)",
            "master.cfg: schedulers[1].name: duplicate scheduler name \"s\" (also schedulers[0].name)",
            "master.cfg: builders[1].name: duplicate builder name \"b\" (also builders[0].name)",
        ] {
            assert!(found.iter().any(|p| p == expected), "{expected:?} not in {found:#?}");
        }
        assert_problem(
            &with("[[builders]]\nname = \"c\"\nworkerbuilddir = \"b\"\nworkers = [\"w1\"]\n"),
            "builders[1].workerbuilddir: duplicate build directory \"b\" (also builders[0].name)",
        );
    }

    #[test]
    fn references() {
        assert_problem(
            &BASE.replace("builders = [\"b\"]", "builders = [\"b\", \"tests\"]"),
            "master.cfg: schedulers[0].builders[1]: no builder named \"tests\"",
        );
        assert_problem(
            &BASE.replace("builders = [\"b\"]", "builders = []"),
            "schedulers[0].builders: names no builder",
        );
        assert_problem(
            &BASE.replace("workers = [\"w1\"]", "workers = [\"w2\"]"),
            "master.cfg: builders[0].workers[0]: no worker named \"w2\"",
        );
        assert_problem(
            &BASE.replace("workers = [\"w1\"]", "workers = []"),
            "master.cfg: builders[0].workers: names no worker",
        );
    }

    #[test]
    fn scheduler_checks() {
        let sched = |body: &str| {
            with(&format!(
                "[[schedulers]]\nname = \"t\"\nbuilders = [\"b\"]\n{body}"
            ))
        };
        assert_problem(
            &sched("type = \"sometimes\"\n"),
            "schedulers[1].type: \"sometimes\" is not one of \"single_branch\", \"any_branch\", \"force\", \"periodic\", \"nightly\"",
        );
        assert_problem(
            &sched("type = \"periodic\"\n"),
            "schedulers[1].period: required for a periodic scheduler",
        );
        assert_problem(
            &sched("type = \"nightly\"\nhour = 24\n"),
            "schedulers[1].hour: 24 is out of range 0-23",
        );
        assert_problem(
            &sched("type = \"nightly\"\nday_of_week = \"someday\"\n"),
            "schedulers[1].day_of_week: \"someday\": use a number",
        );
        assert_problem(
            &sched("type = \"nightly\"\nminute = 1.5\n"),
            "schedulers[1].minute: expected a number, a list of numbers or \"*\"",
        );
        assert_problem(
            &sched("type = \"nightly\"\nperiod = 5\n"),
            "schedulers[1].period: not a key of nightly schedulers (only periodic)",
        );
        assert_problem(
            &sched("type = \"force\"\nfiles_regex = \"x\"\n"),
            "schedulers[1].files_regex: not a key of force schedulers",
        );
        assert_problem(
            &sched("type = \"any_branch\"\nproject = 3\n"),
            "schedulers[1].project: expected a string or a list of strings",
        );
        assert_problem(
            &sched("type = \"any_branch\"\nfiles_regex = \"(\"\n"),
            "schedulers[1].files_regex: invalid regex",
        );
        assert!(problems(&sched(
            "type = \"nightly\"\nbranch = \"main\"\nhour = [1, 13]\nminute = 30\nday_of_week = \"sat\"\nonly_if_changed = true\nproject = [\"a\", \"b\"]\n"
        ))
        .is_empty());
        assert!(problems(&sched("type = \"periodic\"\nperiod = 3600\n")).is_empty());
        assert_problem(
            &sched("type = \"nightly\"\ncategory = \"push\"\n"),
            "schedulers[1].only_if_changed: change filters on a nightly scheduler need only_if_changed = true",
        );
        assert_problem(
            &sched("type = \"single_branch\"\n"),
            "schedulers[1].branch: required for a single_branch scheduler",
        );
        assert_problem(
            &sched("type = \"any_branch\"\nbranch_regex = \"(release\"\n"),
            "schedulers[1].branch_regex: invalid regex \"(release\": found open group without closing ')'",
        );
        assert_problem(
            &sched("type = \"any_branch\"\ntag_regex = \"v[\"\n"),
            "schedulers[1].tag_regex: invalid regex",
        );
        assert_problem(
            &sched("type = \"single_branch\"\nbranch = \"main\"\ntag_regex = \"v.*\"\n"),
            "schedulers[1].tag_regex: not a key of single_branch schedulers (only any_branch)",
        );
        assert!(problems(&sched(
            "type = \"any_branch\"\nbranch_regex = \"^release/.*$\"\ntag_regex = \"^v[0-9]+\"\n"
        ))
        .is_empty());
    }

    #[test]
    fn step_checks() {
        let step = |body: &str| with(&format!("[[builders.steps]]\n{body}"));
        assert_problem(
            &step("type = \"svn\"\n"),
            "builders[0].steps[1].type: \"svn\" is not one of \"git\", \"shell\"",
        );
        assert_problem(
            &step("type = \"git\"\n"),
            "builders[0].steps[1].repourl: required for a git step",
        );
        assert_problem(
            &step("type = \"git\"\nrepourl = \"u\"\nmode = \"fresh\"\n"),
            "builders[0].steps[1].mode: \"fresh\" is not one of \"incremental\", \"full\"",
        );
        assert_problem(
            &step("type = \"shell\"\n"),
            "builders[0].steps[1].command: required for a shell step",
        );
        assert_problem(
            &step("type = \"shell\"\ncommand = []\n"),
            "builders[0].steps[1].command: is an empty list",
        );
        assert_problem(
            &step("type = \"shell\"\ncommand = \"  \"\n"),
            "builders[0].steps[1].command: is empty",
        );
        assert_problem(
            &step("type = \"shell\"\ncommand = \"x\"\nrepourl = \"u\"\n"),
            "builders[0].steps[1].repourl: not a key of shell steps",
        );
        assert_problem(
            &step("type = \"shell\"\ncommand = \"x\"\nworkdir = \"../other\"\n"),
            "builders[0].steps[1].workdir: must be a path inside the build directory",
        );
        assert_problem(
            &step("type = \"shell\"\ncommand = \"x\"\ntimeout = 0\n"),
            "builders[0].steps[1].timeout: must be at least 1 second",
        );
    }

    #[test]
    fn www_and_protocol_checks() {
        // 0: any free port, reported by the master once bound.
        assert!(problems(&BASE.replace("port = 8010", "port = 0")).is_empty());
        assert!(problems(&BASE.replace("port = 9989", "port = 0")).is_empty());
        assert!(problems(
            &BASE
                .replace("port = 8010", "port = 0")
                .replace("port = 9989", "port = 0")
        )
        .is_empty());
        assert!(problems(&BASE.replace("port = 8010", "unix_socket = \"www.sock\"")).is_empty());
        assert_problem(
            &BASE.replace("port = 8010", "port = 8010\nunix_socket = \"www.sock\""),
            "www.port: set either www.port or www.unix_socket, not both",
        );
        assert_problem(
            &BASE.replace("port = 8010", "port = 8010\nbind = \"localhost\""),
            "master.cfg: www.bind: \"localhost\" is not an IP address",
        );
        assert_problem(
            &BASE.replace("port = 8010", "port = 8010\nanonymous = \"write\""),
            "www.anonymous: \"write\" is not one of \"read\", \"none\"",
        );
        assert_problem(
            &BASE.replace("[protocols.worker]\nport = 9989\n", ""),
            "master.cfg: protocols.worker: missing",
        );
        assert_problem(
            &BASE.replace("port = 9989", "port = 8010"),
            "protocols.worker.port: 8010 is also www.port on the same address",
        );
        assert_problem(
            &BASE.replace("port = 9989", "port = 8010\nbind = \"0.0.0.0\""),
            "protocols.worker.port: 8010 is also www.port",
        );
        assert!(
            problems(&BASE.replace("port = 9989", "port = 8010\nbind = \"127.0.0.2\"")).is_empty()
        );
        assert_problem(
            &with("[www.change_hook_dialects.gitea]\nsecret = \"\"\n"),
            "www.change_hook_dialects.gitea.secret: is empty",
        );
    }

    #[test]
    fn every_change_hook_needs_a_secret_or_the_named_opt_out() {
        for key in ["gitea", "github"] {
            assert_problem(
                &with(&format!("[www.change_hook_dialects.{key}]\n")),
                &format!("www.change_hook_dialects.{key}.secret: required"),
            );
            // No opt-out for the forges: they can always sign.
            assert_problem(
                &with(&format!(
                    "[www.change_hook_dialects.{key}]\nallow_unsigned = true\n"
                )),
                &format!("www.change_hook_dialects.{key}.allow_unsigned: unknown key"),
            );
        }
        assert_problem(
            &with("[www.change_hook_dialects.base]\n"),
            "www.change_hook_dialects.base.secret: required (or set allow_unsigned = true to accept unsigned posts from anyone who can reach the port)",
        );
        assert_problem(
            &with("[www.change_hook_dialects.base]\nallow_unsigned = false\n"),
            "www.change_hook_dialects.base.secret: required",
        );
        assert_problem(
            &with("[www.change_hook_dialects.base]\nsecret = \"\"\nallow_unsigned = true\n"),
            "www.change_hook_dialects.base.secret: is empty",
        );
        assert_problem(
            &with("[www.change_hook_dialects.base]\nsecret = \"s\"\nallow_unsigned = true\n"),
            "www.change_hook_dialects.base.allow_unsigned: set together with a secret",
        );
        let signed = parse(
            &with("[www.change_hook_dialects.base]\nsecret = \"s\"\n"),
            "master.cfg",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(signed.warnings().is_empty());
        let open = parse(
            &with("[www.change_hook_dialects.base]\nallow_unsigned = true\n"),
            "master.cfg",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let w = open.warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("www.change_hook_dialects.base.allow_unsigned = true: anyone"),
            "{w:?}"
        );
        // The sample ships no unsigned hook.
        let sample = parse(SAMPLE, "master.cfg.sample").unwrap_or_else(|e| panic!("{e}"));
        assert!(sample.www.change_hook_dialects.base.is_none());
        assert!(sample.warnings().is_empty());
    }

    #[test]
    fn janitor_is_on_by_default_and_checked() {
        let cfg = parse(SAMPLE, "master.cfg.sample").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.janitor, JanitorCfg::default());
        // Written out, not only defaulted, so users see that it exists.
        assert!(SAMPLE.contains("\n[janitor]\n"));
        assert!(SAMPLE.contains(&format!(
            "\nbuild_horizon_days = {DEFAULT_BUILD_HORIZON_DAYS}\n"
        )));
        assert!(SAMPLE.contains(&format!(
            "\nlog_horizon_days = {DEFAULT_LOG_HORIZON_DAYS}\n"
        )));
        // Absent section: on, with the defaults.
        let cfg = parse(BASE, "master.cfg").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.janitor.build_horizon_days, DEFAULT_BUILD_HORIZON_DAYS);
        assert_eq!(cfg.janitor.log_horizon_days, DEFAULT_LOG_HORIZON_DAYS);
        assert_eq!(cfg.janitor.interval_hours, 24);
        let cfg = parse(
            &with("[janitor]\nbuild_horizon_days = 0\nlog_horizon_days = 7\n"),
            "master.cfg",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (cfg.janitor.build_horizon_days, cfg.janitor.log_horizon_days),
            (0, 7)
        );
        assert_problem(
            &with("[janitor]\nlog_horizon = 7\n"),
            "master.cfg: janitor.log_horizon: unknown key (known here: build_horizon_days, log_horizon_days, interval_hours)",
        );
        assert_problem(
            &with("[janitor]\nbuild_horizon_days = \"90\"\n"),
            "master.cfg: janitor.build_horizon_days: invalid type: string \"90\", expected u32",
        );
        assert_problem(
            &with("[janitor]\nlog_horizon_days = -1\n"),
            "master.cfg: janitor.log_horizon_days: invalid value: integer `-1`, expected u32",
        );
        assert_problem(
            &with("[janitor]\ninterval_hours = 0\n"),
            "master.cfg: janitor.interval_hours: must be at least 1",
        );
        assert_problem(
            &with("[janitor]\nbuild_horizon_days = 100000\n"),
            "janitor.build_horizon_days: 100000 days is more than a century",
        );
    }

    #[test]
    fn logging_section() {
        let cfg = parse(BASE, "master.cfg").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            cfg.logging.log_options(),
            crate::daemon::LogOptions::default()
        );
        let cfg = parse(
            &with("[logging]\nlevel = \"info,minibot::web::www=debug\"\nrotate_length = 1000000\nmax_rotated_files = 2\n"),
            "master.cfg",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let o = cfg.logging.log_options();
        assert_eq!(
            (o.level.as_str(), o.rotate_length, o.max_rotated_files),
            ("info,minibot::web::www=debug", 1_000_000, 2)
        );
        assert!(problems(&with("[logging]\nlevel = \"DEBUG\"\n")).is_empty());
        assert_problem(
            &with("[logging]\nlevel = \"verbose\"\n"),
            "master.cfg: logging.level: \"verbose\" is not a level (off, error, warn, info, debug, trace) or MODULE=LEVEL",
        );
        assert_problem(
            &with("[logging]\nlevel = \"minibot=loud\"\n"),
            "logging.level: \"minibot=loud\" is not a level",
        );
        assert_problem(
            &with("[logging]\nlevel = \"minibot\"\n"),
            "logging.level: \"minibot\" is not a level",
        );
        assert_problem(
            &with("[logging]\nrotate_length = 10\n"),
            "master.cfg: logging.rotate_length: must be at least 65536 bytes",
        );
        assert_problem(
            &with("[logging]\nlevle = \"info\"\n"),
            "master.cfg: logging.levle: unknown key (did you mean `level`?)",
        );
    }

    #[test]
    fn name_checks() {
        assert_problem(
            &BASE.replace("name = \"w1\"", "name = \"\""),
            "master.cfg: workers[0].name: the worker name is empty",
        );
        for bad in ["a/b", ".hidden", "..", "with space"] {
            let text = BASE
                .replace("name = \"b\"", &format!("name = {bad:?}"))
                .replace("builders = [\"b\"]", &format!("builders = [{bad:?}]"));
            assert_problem(
                &text,
                &format!("master.cfg: builders[0].name: {bad:?}: use only letters, digits"),
            );
        }
        assert_problem(
            &BASE.replace(
                "workers = [\"w1\"]",
                "workers = [\"w1\"]\nworkerbuilddir = \"../x\"",
            ),
            "builders[0].workerbuilddir: \"../x\": use only",
        );
        assert_problem(
            &BASE.replace("password = \"pw\"", "password = \"pw\"\nmax_builds = 0"),
            "master.cfg: workers[0].max_builds: must be at least 1",
        );
    }

    #[test]
    fn several_problems_are_all_reported() {
        let text = BASE
            .replace("port = 8010", "port = 8010\nanonymous = \"write\"")
            .replace("builders = [\"b\"]", "builders = [\"tests\"]")
            .replace("workers = [\"w1\"]", "workers = [\"w9\"]")
            .replace("command = \"make test\"", "comand = \"make test\"");
        let err = parse(&text, "master.cfg").expect_err("bad config");
        let expected = [
            "master.cfg: builders[0].steps[0].comand: unknown key (did you mean `command`?)",
            "master.cfg: www.anonymous: \"write\" is not one of \"read\", \"none\"",
            "master.cfg: schedulers[0].builders[0]: no builder named \"tests\"",
            "master.cfg: builders[0].workers[0]: no worker named \"w9\"",
            "master.cfg: builders[0].steps[0].command: required for a shell step",
        ];
        assert_eq!(err.problems, expected, "{err}");
        assert_eq!(err.to_string(), expected.join("\n"));
    }

    #[test]
    fn display_names() {
        let cfg = parse(
            &with(
                "[[builders.steps]]\ntype = \"shell\"\ncommand = [\"./run-tests.sh\", \"-v\"]\n\
                 [[builders.steps]]\ntype = \"shell\"\nname = \"make\"\ncommand = \"true\"\n\
                 [[builders.steps]]\ntype = \"git\"\nrepourl = \"u\"\nworkdir = \"src\"\n",
            ),
            "master.cfg",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let b = &cfg.builders[0];
        assert_eq!(b.steps[0].display_name(0), "make");
        assert_eq!(b.steps[1].display_name(1), "run-tests.sh");
        assert_eq!(b.steps[3].display_name(3), "git");
        assert_eq!(
            b.step_names(),
            vec!["make", "run-tests.sh", "make_1", "git"]
        );
        let mut bare = b.steps[0].clone();
        bare.command = None;
        assert_eq!(bare.display_name(7), "step7");
    }

    #[test]
    fn force_parameters_are_typed() {
        let text = with(
            "[[schedulers.properties]]\nname = \"level\"\ntype = \"choice\"\nchoices = [\"quick\", \"full\"]\ndefault = \"quick\"\n\
             [[schedulers.properties]]\nname = \"runs\"\ntype = \"int\"\ndefault = 1\n\
             [[schedulers.properties]]\nname = \"deploy\"\ntype = \"bool\"\n\
             [[schedulers.properties]]\nname = \"ticket\"\nregex = \"[A-Z]+-[0-9]+\"\nrequired = true\n\
             [[schedulers.properties]]\nname = \"target\"\ntype = \"fixed\"\ndefault = \"staging\"\n",
        )
        .replace("type = \"force\"\n", "type = \"force\"\nbranch = \"main\"\nreason = \"by hand\"\n");
        let cfg = parse(&text, "master.cfg").unwrap_or_else(|e| panic!("{e}"));
        let s = cfg.scheduler("s").unwrap();
        let names: Vec<String> = s
            .force_parameters()
            .iter()
            .map(|p| p.name.clone())
            .collect();
        assert_eq!(
            names,
            ["branch", "revision", "reason", "level", "runs", "deploy", "ticket", "target"]
        );
        assert_eq!(
            s.force_parameters()[0].default_json(),
            serde_json::json!("main")
        );
        let submitted = serde_json::json!({
            "revision": "abc", "level": "full", "runs": "3", "deploy": "on",
            "ticket": "MB-12", "target": "production"
        });
        let f = s.force_values(submitted.as_object().unwrap()).unwrap();
        assert_eq!(f.branch.as_deref(), Some("main"));
        assert_eq!(f.revision.as_deref(), Some("abc"));
        assert_eq!(f.reason, "by hand");
        assert_eq!(
            serde_json::to_value(&f.properties).unwrap(),
            serde_json::json!({"level": "full", "runs": 3, "deploy": true, "ticket": "MB-12", "target": "staging"})
        );
        let bad = serde_json::json!({"level": "slow", "runs": "x", "ticket": "nope"});
        let errs = s.force_values(bad.as_object().unwrap()).unwrap_err();
        assert_eq!(
            errs,
            [
                "level: \"slow\" is not one of [\"quick\", \"full\"]",
                "runs: \"x\" is not a whole number",
                "ticket: \"nope\" does not match \"[A-Z]+-[0-9]+\"",
            ]
        );
        let missing = serde_json::json!({});
        assert_eq!(
            s.force_values(missing.as_object().unwrap()).unwrap_err(),
            ["ticket: is required"]
        );

        let prop = |body: &str| with(&format!("[[schedulers.properties]]\n{body}"));
        assert_problem(
            &prop("name = \"x\"\ntype = \"date\"\n"),
            "schedulers[0].properties[0].type: \"date\" is not one of",
        );
        assert_problem(
            &prop("name = \"x\"\ntype = \"choice\"\n"),
            "schedulers[0].properties[0].choices: required",
        );
        assert_problem(
            &prop("name = \"x\"\ntype = \"fixed\"\n"),
            "schedulers[0].properties[0].default: required",
        );
        assert_problem(
            &prop("name = \"x\"\ntype = \"int\"\ndefault = \"one\"\n"),
            "default: \"one\" does not fit a int parameter",
        );
        assert_problem(
            &prop("name = \"branch\"\n"),
            "\"branch\" is a field of every force form",
        );
        assert_problem(
            &prop("name = \"a b\"\n"),
            "schedulers[0].properties[0].name: \"a b\": use only",
        );
        assert_problem(
            &prop("name = \"x\"\nlable = \"X\"\n"),
            "schedulers[0].properties[0].lable: unknown key (did you mean `label`?)",
        );
    }

    #[test]
    fn reporters_and_change_sources() {
        let good = with(
            "[[reporters]]\ntype = \"gitea_status\"\nbase_url = \"https://git.example.org\"\ntoken = \"t\"\n\
             [[reporters]]\ntype = \"mail\"\nsmtp_host = \"localhost\"\nfrom = \"CI <ci@example.org>\"\nto = [\"a@example.org\"]\nmode = [\"problem\", \"change\"]\n\
             [[change_source]]\ntype = \"git_poller\"\nrepourl = \"https://git.example.org/a/b.git\"\nbranches = \"all\"\n",
        );
        let cfg = parse(&good, "master.cfg").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.reporters[1].modes(), ["problem", "change"]);
        assert!(cfg.reporters[0].verifies_tls());
        assert_eq!(cfg.change_source[0].branch_list(), None);
        assert_eq!(cfg.change_source[0].poll_interval, 600);
        assert_eq!(
            cfg.change_source[0].name(),
            "https://git.example.org/a/b.git"
        );
        assert!(cfg.builders[0].collapse_requests);

        let rep = |body: &str| with(&format!("[[reporters]]\n{body}"));
        assert_problem(
            &rep("type = \"irc\"\n"),
            "reporters[0].type: \"irc\" is not one of",
        );
        assert_problem(
            &rep("type = \"gitea_status\"\ntoken = \"t\"\n"),
            "reporters[0].base_url: required",
        );
        assert_problem(
            &rep("type = \"gitea_status\"\nbase_url = \"https://g\"\n"),
            "reporters[0].token: required: set token, or token_file",
        );
        assert_problem(
            &rep("type = \"gitea_status\"\nbase_url = \"https://g\"\ntoken = \"a\"\ntoken_file = \"f\"\n"),
            "reporters[0].token: set either token or token_file, not both",
        );
        assert_problem(
            &rep("type = \"gitea_status\"\nbase_url = \"https://g\"\ntoken = \"a\"\nsmtp_host = \"x\"\n"),
            "reporters[0].smtp_host: not a key of gitea_status reporters",
        );
        assert_problem(
            &rep("type = \"gitea_status\"\nbase_url = \"https://g\"\ntoken = \"a\"\nbuilders = [\"zz\"]\n"),
            "reporters[0].builders[0]: no builder named \"zz\"",
        );
        assert_problem(
            &rep("type = \"mail\"\nsmtp_host = \"h\"\nfrom = \"nobody\"\nto = [\"a@b.c\"]\n"),
            "reporters[0].from: \"nobody\" is not an e-mail address",
        );
        assert_problem(
            &rep("type = \"mail\"\nsmtp_host = \"h\"\nfrom = \"a@b.c\"\n"),
            "reporters[0].to: required",
        );
        assert_problem(&rep("type = \"mail\"\nsmtp_host = \"h\"\nfrom = \"a@b.c\"\nto = [\"a@b.c\"]\nmode = \"sometimes\"\n"), "reporters[0].mode: \"sometimes\" is not one of");
        assert_problem(&rep("type = \"mail\"\nsmtp_host = \"h\"\nfrom = \"a@b.c\"\nto = [\"a@b.c\"]\nsmtp_user = \"u\"\n"), "reporters[0].smtp_password: required");
        assert_problem(
            &rep("type = \"mail\"\nsmtp_hots = \"h\"\n"),
            "reporters[0].smtp_hots: unknown key (did you mean `smtp_host`?)",
        );

        let cs = |body: &str| with(&format!("[[change_source]]\n{body}"));
        assert_problem(
            &cs("type = \"svn_poller\"\nrepourl = \"u\"\n"),
            "change_source[0].type: \"svn_poller\" is not \"git_poller\"",
        );
        assert_problem(
            &cs("type = \"git_poller\"\nrepourl = \"u\"\npoll_interval = 0\n"),
            "change_source[0].poll_interval: must be at least 1 second",
        );
        assert_problem(
            &cs("type = \"git_poller\"\nrepourl = \"u\"\nbranches = [\"a b\"]\n"),
            "change_source[0].branches: \"a b\" is not a branch name",
        );
        assert_problem(
            &cs("type = \"git_poller\"\n"),
            "change_source[0].repourl: required key is missing",
        );
    }

    #[test]
    fn secret_files_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg_path = dir.path().join("master.cfg");
        std::fs::write(
            &cfg_path,
            with("[[reporters]]\ntype = \"gitea_status\"\nbase_url = \"https://g\"\ntoken_file = \"tok\"\n"),
        )
        .unwrap();
        private(&cfg_path);
        let err = load(&cfg_path).expect_err("missing token file");
        assert!(
            err.to_string()
                .contains("reporters[0].token_file: cannot read"),
            "{err}"
        );
        let tok = dir.path().join("tok");
        std::fs::write(&tok, "sekrit\n").unwrap();
        std::fs::set_permissions(&tok, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load(&cfg_path).expect_err("readable by others");
        assert!(
            err.to_string()
                .contains("is readable by others (mode 644); run chmod 600"),
            "{err}"
        );
        std::fs::set_permissions(&tok, std::fs::Permissions::from_mode(0o600)).unwrap();
        let cfg = load(&cfg_path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.reporters[0].gitea_token(dir.path()).unwrap(), "sekrit");
    }

    #[test]
    fn sample_examples_parse_when_uncommented() {
        // Every commented-out example in the sample is valid config once
        // its leading "# " is removed (keeping the "[[x]]" headers whole).
        let mut text = String::new();
        let mut in_example = false;
        for line in SAMPLE.lines() {
            let ex = line.strip_prefix("# ");
            match ex {
                Some(l) if l.starts_with("[[") || l.starts_with('[') && l.ends_with(']') => {
                    in_example = true;
                    text.push_str(l);
                }
                Some(l) if in_example && l.contains(" = ") && !l.starts_with(' ') => {
                    text.push_str(l)
                }
                _ => {
                    if !line.starts_with('#') {
                        in_example = false;
                    }
                    text.push_str(line);
                }
            }
            text.push('\n');
        }
        let text = text.replace("unix_socket = \"www.sock\"\n", "");
        for kind in ["nightly", "periodic", "mail", "gitea_status", "git_poller"] {
            assert!(
                text.contains(&format!("\ntype = \"{kind}\"")),
                "{kind} not uncommented"
            );
        }
        let found = problems(&text);
        let expected_io: Vec<&String> = found
            .iter()
            .filter(|p| !p.contains("_file: cannot read"))
            .collect();
        assert!(expected_io.is_empty(), "{found:#?}\n{text}");
    }
}
