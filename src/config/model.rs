//! The typed model: the config the runtime uses, made by [`super::lower`]
//! from the raw serde layer. Every kind is an enum with the data of its
//! variant, every default is already applied, regexes are compiled, and
//! durations are [`Duration`]s; code outside `config` matches these enums
//! exhaustively and never applies a default of its own.

pub(crate) use super::locks::{Lock, LockAccess, LockKind, LockUse};
use super::problems::item;
pub use super::raw::BaseDialect;
pub(crate) use super::raw::{Command, JanitorCfg, LoggingCfg, StrOrList};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// Seconds without output before a step is killed, when `timeout` is unset.
pub(crate) const DEFAULT_STEP_TIMEOUT: u64 = 1200;

/// A gitea_status reporter's `context` when unset.
pub(crate) const DEFAULT_CONTEXT: &str = "minibot/%(prop:buildername)s";

/// A forced build's reason when none is given.
pub(crate) const DEFAULT_FORCE_REASON: &str = "force build";

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub title: String,
    pub buildbot_url: Option<String>,
    pub(crate) www: Www,
    pub(crate) protocols: Protocols,
    pub workers: Vec<WorkerCfg>,
    pub schedulers: Vec<Scheduler>,
    pub builders: Vec<Builder>,
    /// `[[locks]]`: Buildbot's master and worker locks.
    pub(crate) locks: Vec<Lock>,
    pub(crate) reporters: Vec<Reporter>,
    /// Buildbot's `c['change_source']`: pollers for repositories whose
    /// server cannot reach the master's change hook.
    pub(crate) change_source: Vec<ChangeSource>,
    /// Pruning of old builds and log files (on by default: see [`JanitorCfg`]).
    pub(crate) janitor: JanitorCfg,
    /// The master's own log (`master.log`): level and rotation.
    pub(crate) logging: LoggingCfg,
    /// Per-step log cap in bytes (Buildbot's `logMaxSize`).
    pub max_log_size: u64,
    /// `[secrets] dir`: where `%(secret:NAME)s` is read from, relative to
    /// the master directory (`secret_dir`); None: no secrets.
    pub(crate) secrets_dir: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WorkerCfg {
    pub name: String,
    /// Never sent over the wire: the worker answers a challenge with it.
    pub password: String,
    /// How many builds it runs at once (Buildbot's max_builds).
    pub max_builds: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Www {
    /// 0 = any free port (reported in `addresses.json`).
    pub port: u16,
    pub bind: String,
    pub unix_socket: Option<String>,
    pub anonymous: Anonymous,
    /// Most HTTP requests served at once (`http_server`), each a thread.
    pub max_connections: usize,
    pub change_hook_dialects: Dialects,
    /// `[www.auth] type = "gitea"`: "Log in with Gitea" beside the local
    /// users; None: local users only.
    pub auth: Option<GiteaAuth>,
}

/// `[www.auth] type = "gitea"`: users log in with their Gitea account
/// (OAuth2 authorization code with PKCE, `web::gitea_login`); what they
/// may do follows `admins`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GiteaAuth {
    /// An http(s) URL without a trailing slash (`https://git.example.org`
    /// or with a sub-path).
    pub base_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub verify_tls: bool,
    /// Gitea users matching one of these may force, stop, rebuild, cancel
    /// and pause; the others get what `[www] anonymous` gives.
    pub admins: Vec<Grant>,
}

/// One entry of `[www.auth] admins`; names are lower case, as Gitea
/// compares them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Grant {
    /// `user:NAME`: that Gitea login.
    User(String),
    /// `org:NAME`: every member of that organisation.
    Org(String),
    /// `team:ORG/TEAM`: every member of that team.
    Team { org: String, team: String },
}

/// A Gitea user, organisation or team name as Gitea allows it (its
/// `AlphaDashDot` rule: letters, digits, `-`, `_`, `.`), at most 255 bytes:
/// nothing else is stored, shown or compared.
pub(crate) fn is_gitea_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// What visitors who are not logged in may do (`[www] anonymous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Anonymous {
    Read,
    None,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Dialects {
    pub gitea: Option<GiteaDialect>,
    pub base: Option<BaseDialect>,
    /// GitHub-format bodies; the same options as `gitea`.
    pub github: Option<GiteaDialect>,
}

/// `[www.change_hook_dialects.gitea]` (and `.github`).
#[derive(Debug, Clone, PartialEq)]
pub struct GiteaDialect {
    /// Required by validation; `None` only in tests of the dialects.
    pub secret: Option<String>,
    pub only_include_push_commit: bool,
    pub repository_url: RepositoryUrl,
    pub codebase: Option<String>,
    /// Skip pull requests reported as not mergeable when they are opened.
    pub only_mergeable_pull_request: bool,
    /// A push or PR whose head commit message (PR: title or description)
    /// matches one of these is not built (Buildbot's GitHub hook `skips`).
    pub skips: Vec<Pattern>,
    /// What a pull request's build checks out (`pull_request_checkout`).
    pub pull_request_checkout: PullRequestCheckout,
}

/// Buildbot's GitHub hook `DEFAULT_SKIPS_PATTERN`: `[skip ci]`, `[ci skip]`.
pub(crate) const DEFAULT_SKIPS: [&str; 2] = [r"\[ *skip *ci *\]", r"\[ *ci *skip *\]"];

impl Default for GiteaDialect {
    fn default() -> Self {
        GiteaDialect {
            secret: None,
            only_include_push_commit: false,
            repository_url: RepositoryUrl::default(),
            codebase: None,
            only_mergeable_pull_request: false,
            pull_request_checkout: PullRequestCheckout::default(),
            skips: DEFAULT_SKIPS
                .iter()
                .map(|s| Pattern {
                    source: s.to_string(),
                    // A constant of this file, tested to compile.
                    re: regex_lite::Regex::new(s).expect("built-in skip pattern"),
                })
                .collect(),
        }
    }
}

/// What a pull request's build checks out: the dialect puts it in the
/// change's revision, and the build follows the change (`master::build`
/// asks the git step to merge the PR head when the revision is not it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PullRequestCheckout {
    /// The PR head merged into the base (buildbot_gitea's change and
    /// `Gitea` step): the change's revision is the base sha, the head is
    /// in `head_sha`; the build tests what would land.
    #[default]
    Merge,
    /// The PR head alone: the change's revision is the head sha.
    Head,
}

/// Which URL of the repository a change carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RepositoryUrl {
    /// The ssh URL (buildbot_gitea's default).
    #[default]
    Ssh,
    /// The https clone URL.
    Clone,
    /// The web page URL (Buildbot's GitHub hook; the github dialect's default).
    Html,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Protocols {
    /// Required: a master without a worker port has nothing to build on.
    pub worker: WorkerProtocol,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WorkerProtocol {
    /// 0 = any free port (reported in `addresses.json`).
    pub port: u16,
    pub bind: String,
    /// Seconds between keepalive pings; a peer silent for 3× this is dead.
    pub keepalive: u64,
}

/// A regex from the config, compiled once; compared by its source.
#[derive(Debug, Clone)]
pub struct Pattern {
    pub source: String,
    pub re: regex_lite::Regex,
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Pattern {
    pub(crate) fn is_match(&self, s: &str) -> bool {
        self.re.is_match(s)
    }
}

// ---------------------------------------------------------------------------
// Schedulers

#[derive(Debug, Clone, PartialEq)]
pub struct Scheduler {
    pub name: String,
    pub builders: Vec<String>,
    pub(crate) kind: SchedulerKind,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SchedulerKind {
    /// Changes on one branch (Buildbot's SingleBranchScheduler).
    SingleBranch {
        branch: String,
        tree_stable_timer: Duration,
        filter: ChangeFilter,
    },
    /// Changes on any branch, or those matching the regexes; the only kind
    /// that builds tags (with `tag_regex`).
    AnyBranch {
        branch_regex: Option<Pattern>,
        tag_regex: Option<Pattern>,
        tree_stable_timer: Duration,
        filter: ChangeFilter,
    },
    /// The force form and `POST /api/v2/forceschedulers/<name>`.
    Force(ForceScheduler),
    /// Every `period` (Buildbot's Periodic).
    Periodic {
        branch: Option<String>,
        period: Duration,
    },
    /// At set times, local time (Buildbot's Nightly).
    Nightly(Nightly),
    /// Started only by `trigger` steps of other builds (Buildbot's
    /// Triggerable): the triggering build's source stamp and the chosen
    /// properties (`master::chain`).
    Triggerable,
    /// Starts its builders with the source stamp of each buildset of the
    /// `upstream` scheduler that completed with every build SUCCESS
    /// (Buildbot's Dependent; `master::chain`).
    Dependent { upstream: String },
}

impl SchedulerKind {
    /// The `type` as written in master.cfg (log lines, build reasons).
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            SchedulerKind::SingleBranch { .. } => "single_branch",
            SchedulerKind::AnyBranch { .. } => "any_branch",
            SchedulerKind::Force(_) => "force",
            SchedulerKind::Periodic { .. } => "periodic",
            SchedulerKind::Nightly(_) => "nightly",
            SchedulerKind::Triggerable => "triggerable",
            SchedulerKind::Dependent { .. } => "dependent",
        }
    }

    /// The tree-stable timer of a scheduler that builds the changes it
    /// sees; None for the others.
    pub(crate) fn tree_stable_timer(&self) -> Option<Duration> {
        match self {
            SchedulerKind::SingleBranch {
                tree_stable_timer, ..
            }
            | SchedulerKind::AnyBranch {
                tree_stable_timer, ..
            } => Some(*tree_stable_timer),
            SchedulerKind::Force(_)
            | SchedulerKind::Periodic { .. }
            | SchedulerKind::Nightly(_)
            | SchedulerKind::Triggerable
            | SchedulerKind::Dependent { .. } => None,
        }
    }

    /// Whether the clock starts its builds (periodic, nightly).
    pub(crate) fn is_timed(&self) -> bool {
        match self {
            SchedulerKind::Periodic { .. } | SchedulerKind::Nightly(_) => true,
            SchedulerKind::SingleBranch { .. }
            | SchedulerKind::AnyBranch { .. }
            | SchedulerKind::Force(_)
            | SchedulerKind::Triggerable
            | SchedulerKind::Dependent { .. } => false,
        }
    }

    /// The force scheduler's form, if this is one.
    pub(crate) fn force(&self) -> Option<&ForceScheduler> {
        match self {
            SchedulerKind::Force(f) => Some(f),
            SchedulerKind::SingleBranch { .. }
            | SchedulerKind::AnyBranch { .. }
            | SchedulerKind::Periodic { .. }
            | SchedulerKind::Nightly(_)
            | SchedulerKind::Triggerable
            | SchedulerKind::Dependent { .. } => None,
        }
    }

    /// The upstream scheduler of a dependent one.
    pub(crate) fn upstream(&self) -> Option<&str> {
        match self {
            SchedulerKind::Dependent { upstream } => Some(upstream),
            SchedulerKind::SingleBranch { .. }
            | SchedulerKind::AnyBranch { .. }
            | SchedulerKind::Force(_)
            | SchedulerKind::Periodic { .. }
            | SchedulerKind::Nightly(_)
            | SchedulerKind::Triggerable => None,
        }
    }
}

/// Buildbot's ChangeFilter: a change must pass every filter that is set.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ChangeFilter {
    pub repository: Option<StrOrList>,
    pub project: Option<StrOrList>,
    pub category: Option<StrOrList>,
    /// A change passes if one of its files matches (changes that carry no
    /// file list, e.g. pull requests and tags, always pass).
    pub files_regex: Option<Pattern>,
}

/// The values a nightly field accepts; `None` = every value.
pub(crate) type CronSet = Option<Vec<u32>>;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Nightly {
    /// The branch to build (and, with only_if_changed, to watch).
    pub branch: Option<String>,
    /// Default `[0]` (Buildbot's Nightly); the others default to every.
    pub minute: CronSet,
    pub hour: CronSet,
    /// 0 = Monday ... 6 = Sunday.
    pub day_of_week: CronSet,
    pub day_of_month: CronSet,
    /// Build only if a change passed the filters since the last build.
    pub only_if_changed: bool,
    pub filter: ChangeFilter,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ForceScheduler {
    /// The form's default branch.
    pub branch: Option<String>,
    /// The form's default reason.
    pub reason: String,
    /// The form's button (Buildbot's buttonName).
    pub button_name: String,
    /// Typed build properties shown on the form.
    pub properties: Vec<ForceParam>,
}

/// A typed parameter of a force scheduler's form (Buildbot's
/// StringParameter, TextParameter, IntParameter, BooleanParameter,
/// ChoiceStringParameter, FixedParameter).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ForceParam {
    pub name: String,
    /// Shown next to the field.
    pub label: String,
    /// What the form shows and what a missing value becomes.
    pub default: serde_json::Value,
    pub required: bool,
    pub kind: ParamKind,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ParamKind {
    /// One line; the value must match `regex` (whole value).
    String {
        regex: Option<Pattern>,
    },
    /// Several lines; the value must match `regex` (whole value).
    Text {
        regex: Option<Pattern>,
    },
    Int,
    Bool,
    Choice {
        choices: Vec<String>,
    },
    /// Shown, not editable: the scheduler decides the value.
    Fixed,
}

/// What a force request asks for, checked against the scheduler's
/// parameters (see [`ForceScheduler::force_values`]).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ForcedBuild {
    pub branch: Option<String>,
    pub revision: Option<String>,
    pub reason: String,
    /// The typed properties, by name.
    pub properties: BTreeMap<String, serde_json::Value>,
}

impl ForceParam {
    fn builtin(name: &str, label: &str, default: Option<&str>) -> ForceParam {
        ForceParam {
            name: name.into(),
            label: label.into(),
            default: serde_json::Value::String(default.unwrap_or("").into()),
            required: false,
            kind: ParamKind::String { regex: None },
        }
    }

    /// Checks and converts a submitted value (JSON, or the string a form
    /// posts) into the typed value. `None` = not submitted.
    pub(crate) fn coerce(
        &self,
        value: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, String> {
        use serde_json::Value as J;
        let name = &self.name;
        let v = match (&self.kind, value) {
            // A fixed parameter cannot be changed from outside.
            (ParamKind::Fixed, _) | (_, None) | (_, Some(J::Null)) => self.default.clone(),
            (_, Some(v)) => v.clone(),
        };
        let text = |v: J| match v {
            J::String(s) => Ok(J::String(s)),
            J::Null => Ok(J::String(String::new())),
            J::Number(n) => Ok(J::String(n.to_string())),
            other => Err(format!("{name}: expected text, got {other}")),
        };
        let out = match &self.kind {
            ParamKind::Int => match &v {
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
            ParamKind::Bool => match &v {
                J::Bool(_) => v,
                J::String(s) => J::Bool(matches!(s.as_str(), "true" | "on" | "1" | "yes")),
                J::Null => J::Bool(false),
                other => return Err(format!("{name}: {other} is not true or false")),
            },
            ParamKind::String { .. }
            | ParamKind::Text { .. }
            | ParamKind::Choice { .. }
            | ParamKind::Fixed => text(v)?,
        };
        let empty = matches!(&out, J::Null) || out.as_str() == Some("");
        if self.required && empty {
            return Err(format!("{name}: is required"));
        }
        match &self.kind {
            ParamKind::Choice { choices } if !empty => {
                let s = out.as_str().unwrap_or("");
                if !choices.iter().any(|c| c == s) {
                    return Err(format!("{name}: {s:?} is not one of {choices:?}"));
                }
            }
            ParamKind::String { regex: Some(re) } | ParamKind::Text { regex: Some(re) } => {
                let s = out.as_str().unwrap_or("");
                // An empty optional value is fine whatever the regex says.
                if !re.is_match(s) && (!s.is_empty() || self.required) {
                    return Err(format!("{name}: {s:?} does not match {:?}", re.source));
                }
            }
            ParamKind::String { regex: None }
            | ParamKind::Text { regex: None }
            | ParamKind::Choice { .. }
            | ParamKind::Int
            | ParamKind::Bool
            | ParamKind::Fixed => {}
        }
        Ok(out)
    }
}

impl ForceScheduler {
    /// Every field of the force form in order: branch, revision, reason (the
    /// built-ins, strings), then the configured typed properties.
    pub(crate) fn force_parameters(&self) -> Vec<ForceParam> {
        let mut out = vec![
            ForceParam::builtin("branch", "Branch", self.branch.as_deref()),
            ForceParam::builtin("revision", "Revision", None),
            ForceParam::builtin("reason", "Reason", Some(&self.reason)),
        ];
        out.extend(self.properties.iter().cloned());
        out
    }

    /// Checks submitted force values (JSON-RPC `params`, or form fields as
    /// strings) against [`Self::force_parameters`]; every problem is listed.
    pub(crate) fn force_values(
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
        let reason = text("reason").unwrap_or_else(|| DEFAULT_FORCE_REASON.into());
        Ok(ForcedBuild {
            branch,
            revision,
            reason,
            properties: values,
        })
    }
}

// ---------------------------------------------------------------------------
// Builders and steps

#[derive(Debug, Clone, PartialEq)]
pub struct Builder {
    pub name: String,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub workers: Vec<String>,
    /// Directory under the worker's base dir (`workerbuilddir`, default the
    /// builder's name).
    pub builddir: String,
    pub(crate) steps: Vec<Step>,
    /// Merge queued requests for the same source into the newest one
    /// (Buildbot's collapseRequests).
    pub collapse_requests: bool,
    /// Locks its builds hold from before they start until they end, taken
    /// all at once.
    pub(crate) locks: Vec<LockUse>,
    /// Bytes of artifacts one build may upload (its own, or the top-level
    /// `max_artifact_bytes`).
    pub(crate) max_artifact_bytes: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Step {
    /// As shown in the UI: `name`, else "git" for a git step or the
    /// command's first word (without its directory), else `step<index>`.
    pub name: String,
    /// Without output for this long, the step is killed.
    pub timeout: Duration,
    /// A failure stops the build (default true: SPEC §2).
    pub halt_on_failure: bool,
    pub flunk_on_failure: bool,
    pub warn_on_failure: bool,
    pub flunk_on_warnings: bool,
    /// Runs even when an earlier step halted the build.
    pub always_run: bool,
    /// Exit codes that mean WARNINGS instead of FAILURE (Buildbot's decodeRC).
    pub warning_exit_codes: Vec<i32>,
    pub kind: StepKind,
    /// Locks held while it runs, taken all at once before it starts.
    pub locks: Vec<LockUse>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StepKind {
    Git {
        repourl: String,
        mode: GitMode,
        /// Used when the build's source stamp names no branch.
        branch: Option<String>,
    },
    Shell {
        command: Command,
        env: BTreeMap<String, String>,
        /// Relative to the build directory ("" = the build directory).
        workdir: String,
    },
    /// Buildbot's `SetPropertyFromCommand`: runs `command` as a shell step
    /// does, and on success stores its standard output (stripped), or the
    /// first group of `regex`'s first match in it, as build property
    /// `property` (`master::build`).
    SetProperty {
        command: Command,
        env: BTreeMap<String, String>,
        workdir: String,
        property: String,
        /// Exactly one capture group (checked by `lower`).
        regex: Option<Pattern>,
    },
    /// Files of the build directory to the master (Buildbot's
    /// FileUpload / DirectoryUpload / MultipleFileUpload in one).
    Upload {
        /// A file, directory or glob, relative to the build directory.
        source: String,
        /// The artifact name (prefix); "" = the source's own name.
        dest: String,
    },
    /// One file from the master into the build directory (Buildbot's
    /// FileDownload).
    Download {
        from: DownloadFrom,
        /// Relative to the build directory.
        dest: String,
    },
    /// Run by the master, never sent to the worker (`master::chain`):
    /// a buildset for each named triggerable scheduler.
    Trigger(Trigger),
}

/// Where a `download` step's file comes from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum DownloadFrom {
    /// An artifact of a build of the same builder, or of the build that
    /// triggered this one.
    Artifact { name: String, build: BuildRef },
    /// A file under the master directory's `files/` (a relative path).
    File(String),
}

/// Which build of the builder a download takes an artifact from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum BuildRef {
    /// The build the step runs in.
    This,
    /// The build with this number.
    Number(i64),
    /// The newest build that succeeded and has the artifact.
    LastSuccessful,
    /// The build whose trigger step started this build (a release build
    /// hands its tarball to the deploy it triggers): another builder's.
    Triggering,
}

/// A `trigger` step (Buildbot's Trigger).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Trigger {
    /// Names of triggerable schedulers (checked by the lowering).
    pub schedulers: Vec<String>,
    /// Wait for the triggered builds: their worst result is the step's.
    pub wait: bool,
    /// Given to the triggered builds, interpolated (`%(prop:NAME)s`).
    pub set_properties: BTreeMap<String, String>,
    /// This build's properties copied to the triggered builds.
    pub copy_properties: Vec<String>,
}

/// How a git step updates its checkout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GitMode {
    Incremental,
    /// A fresh clone.
    Full,
}

impl GitMode {
    /// As written in master.cfg and sent to the worker.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            GitMode::Incremental => "incremental",
            GitMode::Full => "full",
        }
    }
}

impl Step {
    /// Whether git output (the `got_revision` header) comes from this step.
    pub(crate) fn is_git(&self) -> bool {
        match self.kind {
            StepKind::Git { .. } => true,
            StepKind::Shell { .. }
            | StepKind::SetProperty { .. }
            | StepKind::Trigger(_)
            | StepKind::Upload { .. }
            | StepKind::Download { .. } => false,
        }
    }
}

impl Builder {
    /// The names of the steps in order, made unique the way Buildbot does it
    /// (a second "test" becomes "test_1").
    #[cfg(test)]
    pub(crate) fn step_names(&self) -> Vec<String> {
        let mut seen: std::collections::HashMap<String, usize> = Default::default();
        let mut names = Vec::with_capacity(self.steps.len());
        for step in &self.steps {
            let mut name = step.name.clone();
            while let Some(count) = seen.get_mut(&name) {
                *count += 1;
                name = format!("{}_{count}", step.name);
            }
            seen.insert(name.clone(), 0);
            names.push(name);
        }
        names
    }

    /// The repository the builder's first git step checks out.
    pub(crate) fn git_repourl(&self) -> Option<&str> {
        self.steps.iter().find_map(|s| match &s.kind {
            StepKind::Git { repourl, .. } => Some(repourl.as_str()),
            StepKind::Shell { .. }
            | StepKind::SetProperty { .. }
            | StepKind::Trigger(_)
            | StepKind::Upload { .. }
            | StepKind::Download { .. } => None,
        })
    }
}

// ---------------------------------------------------------------------------
// Reporters and change sources

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reporter {
    /// Only report builds of these builders (empty: all).
    pub builders: Vec<String>,
    /// Check the server's TLS certificate.
    pub verify_tls: bool,
    pub kind: ReporterKind,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ReporterKind {
    GiteaStatus(GiteaStatus),
    Mail(Mail),
}

impl ReporterKind {
    /// The `type` as written in master.cfg.
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            ReporterKind::GiteaStatus(_) => "gitea_status",
            ReporterKind::Mail(_) => "mail",
        }
    }
}

impl Reporter {
    pub(crate) fn reports_on(&self, builder: &str) -> bool {
        self.builders.is_empty() || self.builders.iter().any(|b| b == builder)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GiteaStatus {
    /// An http(s) URL.
    pub base_url: String,
    pub token: Secret,
    /// Status context; `%(prop:NAME)s` allowed.
    pub context: String,
    /// Context for pull-request builds (default: `context`).
    pub context_pr: String,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Mail {
    pub smtp_host: String,
    /// Default 587 with STARTTLS, else 25.
    pub smtp_port: u16,
    /// STARTTLS before login.
    pub starttls: bool,
    /// (user, password), when the server wants a login.
    pub login: Option<(String, Secret)>,
    pub from: String,
    pub to: Vec<String>,
    pub modes: Vec<MailMode>,
}

/// Buildbot's MailNotifier modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MailMode {
    All,
    Failing,
    Passing,
    Problem,
    Warnings,
    Exception,
    Cancelled,
    Change,
}

impl MailMode {
    /// Every mode with its name in master.cfg.
    pub(crate) const ALL: [(&'static str, MailMode); 8] = [
        ("all", MailMode::All),
        ("failing", MailMode::Failing),
        ("passing", MailMode::Passing),
        ("problem", MailMode::Problem),
        ("warnings", MailMode::Warnings),
        ("exception", MailMode::Exception),
        ("cancelled", MailMode::Cancelled),
        ("change", MailMode::Change),
    ];
}

/// A secret given inline or in a file relative to the master directory.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Secret {
    Inline(String),
    File(String),
}

impl Secret {
    /// The secret, read from its file if it is in one (trimmed of the
    /// trailing newline editors add).
    pub(crate) fn read(&self, master_dir: &Path) -> anyhow::Result<String> {
        match self {
            Secret::Inline(s) => Ok(s.clone()),
            Secret::File(f) => {
                let path = master_dir.join(f);
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    anyhow::anyhow!(
                        "cannot read {}: {}",
                        path.display(),
                        super::problems::io_reason(&e)
                    )
                })?;
                Ok(text.trim_end_matches(['\n', '\r']).to_string())
            }
        }
    }
}

/// A `[[change_source]]` entry (Buildbot's `c['change_source']`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ChangeSource {
    GitPoller(GitPoller),
    /// Open pull requests through Gitea's API (`master::pr_poller`).
    GiteaPrPoller(GiteaPrPoller),
}

impl ChangeSource {
    /// Names the poller's state in the database (unique among sources).
    pub(crate) fn name(&self) -> &str {
        match self {
            ChangeSource::GitPoller(g) => &g.name,
            ChangeSource::GiteaPrPoller(g) => &g.name,
        }
    }

    pub(crate) fn poll_interval(&self) -> Duration {
        match self {
            ChangeSource::GitPoller(g) => g.poll_interval,
            ChangeSource::GiteaPrPoller(g) => g.poll_interval,
        }
    }

    pub(crate) fn poll_at_launch(&self) -> bool {
        match self {
            ChangeSource::GitPoller(g) => g.poll_at_launch,
            ChangeSource::GiteaPrPoller(g) => g.poll_at_launch,
        }
    }

    /// The `type` as written in master.cfg.
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            ChangeSource::GitPoller(_) => "git_poller",
            ChangeSource::GiteaPrPoller(_) => "gitea_pr_poller",
        }
    }
}

/// `type = "gitea_pr_poller"`: a Gitea whose webhooks cannot reach the
/// master, asked for its open pull requests instead. The changes are the
/// ones the gitea dialect makes of a `pull_request` delivery, with its
/// options (`[www.change_hook_dialects.gitea]`, else the defaults).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GiteaPrPoller {
    /// Names the poller's state in the database (default: the pulls URL).
    pub name: String,
    /// An http(s) URL.
    pub base_url: String,
    pub owner: String,
    pub repo: String,
    /// Always a file (0600): the token is not written into master.cfg.
    pub token: Secret,
    pub verify_tls: bool,
    pub poll_interval: Duration,
    pub poll_at_launch: bool,
    /// The most open pull requests one poll looks at (newest first).
    pub max_pull_requests: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GitPoller {
    /// Names the poller's state in the database (default: the repourl).
    pub name: String,
    pub repourl: String,
    /// None = every branch (`branches = "all"`); default `["master"]`.
    pub branches: Option<Vec<String>>,
    /// Between polls (Buildbot's pollInterval).
    pub poll_interval: Duration,
    /// Poll once right at start instead of after the first interval.
    pub poll_at_launch: bool,
    /// Stored with each change.
    pub project: String,
    pub category: Option<String>,
    pub codebase: String,
}

/// A URL on one of the reserved example domains (RFC 2606), as in the
/// sample's `https://git.example.org/...`: never anyone's real repository.
fn is_example_url(u: &str) -> bool {
    let host = match url::Url::parse(u) {
        Ok(p) => p.host_str().unwrap_or("").to_string(),
        // scp-like `git@git.example.org:o/r.git`
        Err(_) => u
            .split_once(':')
            .map(|(h, _)| h.rsplit('@').next().unwrap_or(h).to_string())
            .unwrap_or_default(),
    };
    let host = host.to_ascii_lowercase();
    ["example.org", "example.com", "example.net"]
        .iter()
        .any(|d| host == *d || host.ends_with(&format!(".{d}")))
}

impl LoggingCfg {
    /// What `daemon::init_logging_with` needs.
    pub(crate) fn log_options(&self) -> crate::daemon::LogOptions {
        crate::daemon::LogOptions {
            level: self.level.clone(),
            rotate_length: self.rotate_length,
            max_rotated_files: self.max_rotated_files,
        }
    }
}

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
        w.extend(self.url_warnings());
        w.extend(super::chains::warnings(self));
        for (i, b) in self.builders.iter().enumerate() {
            for (j, st) in b.steps.iter().enumerate() {
                if let StepKind::Git { repourl, .. } = &st.kind {
                    if is_example_url(repourl) {
                        w.push(format!(
                            "{}.steps #{}.repourl: {repourl:?} is the sample's example \
                             repository; write the URL (or path) of yours, which the worker clones",
                            item("builders", i, &b.name),
                            j + 1
                        ));
                    }
                }
            }
            if !self.schedulers.iter().any(|s| s.builders.contains(&b.name)) {
                w.push(format!(
                    "{}: no scheduler starts builder {:?}; name it in a scheduler's \
                     builders (a force scheduler at least) or it never builds",
                    item("builders", i, &b.name),
                    b.name
                ));
            }
        }
        for (i, cs) in self.change_source.iter().enumerate() {
            let (key, url) = match cs {
                ChangeSource::GitPoller(g) => ("repourl", &g.repourl),
                ChangeSource::GiteaPrPoller(g) => ("base_url", &g.base_url),
            };
            if is_example_url(url) {
                w.push(format!(
                    "change_source #{}.{key}: {url:?} is the sample's example repository; \
                     write the URL of the one to poll",
                    i + 1,
                ));
            }
        }
        for (i, wk) in self.workers.iter().enumerate() {
            if !self.builders.iter().any(|b| b.workers.contains(&wk.name)) {
                w.push(format!(
                    "{}: no builder uses worker {:?}; add it to a builder's workers \
                     or it never gets a build",
                    item("workers", i, &wk.name),
                    wk.name
                ));
            }
        }
        w
    }

    /// `buildbot_url` against `[www]`: with the web UI on a loopback
    /// address, the URL people open is a tunnel to the same port (the
    /// guide's `ssh -L 12345:localhost:12345`), so a localhost URL with
    /// another port is a forgotten edit and every link in statuses and
    /// mails would be dead.
    fn url_warnings(&self) -> Vec<String> {
        let Some(u) = &self.buildbot_url else {
            return vec![];
        };
        let Ok(parsed) = url::Url::parse(u) else {
            return vec![];
        };
        let loopback = |h: &str| matches!(h, "localhost" | "127.0.0.1" | "[::1]" | "::1");
        let www = &self.www;
        if www.unix_socket.is_some() || www.port == 0 || !loopback(&www.bind) {
            return vec![];
        }
        match (parsed.host_str(), parsed.port_or_known_default()) {
            (Some(h), Some(port)) if loopback(h) && port != www.port => vec![format!(
                "buildbot_url: {u:?} has port {port} but the web UI listens on port {} \
                 ([www] port); links in statuses and mails would not reach it",
                www.port
            )],
            _ => vec![],
        }
    }

    pub(crate) fn builder(&self, name: &str) -> Option<&Builder> {
        self.builders.iter().find(|b| b.name == name)
    }

    pub(crate) fn worker(&self, name: &str) -> Option<&WorkerCfg> {
        self.workers.iter().find(|w| w.name == name)
    }

    pub(crate) fn lock(&self, name: &str) -> Option<&Lock> {
        self.locks.iter().find(|l| l.name == name)
    }

    pub(crate) fn scheduler(&self, name: &str) -> Option<&Scheduler> {
        self.schedulers.iter().find(|s| s.name == name)
    }

    /// The force scheduler named `name`, if there is one.
    pub(crate) fn force_scheduler(&self, name: &str) -> Option<&ForceScheduler> {
        self.scheduler(name).and_then(|s| s.kind.force())
    }
}
