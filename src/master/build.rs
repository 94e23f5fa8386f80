//! One build, master side: the step sequence, property interpolation,
//! result computation and the build's log files.
//!
//! Owns: `RunningBuild`, a state machine driven by the worker connection
//! thread that runs the build (`worker_conn`): it asks for the next step's
//! `RunStep` message (or, for a trigger step, which the master runs itself,
//! [`Next::Trigger`]), feeds in `Log` and `StepDone` frames (never for a
//! master step: the worker has no say in it), and finishes the build. No threads or channels of its own; database writes go
//! through `Store::write`.
//!
//! Step locks (docs/locks.md): `advance` takes a step's locks in the
//! transaction that records the previous step's end (which gives that
//! step's back) and starts the step, all or none; when one is held
//! elsewhere it starts nothing, sets the build's state to what it waits
//! for, and says so (`Next::Wait`).
//!
//! Interpolation is where webhook data meets commands, so it never goes
//! through a shell as code: in an argv command `%(prop:NAME)s` is replaced
//! by the value (one argv element stays one element); in a string command
//! (run by /bin/sh) it becomes a reference to the environment variable
//! `MINIBOT_NAME`, which the step's environment holds, so a branch named
//! `$(rm -rf ~)` is only ever a value.
//!
//! Secrets (`%(secret:NAME)s`, issue 20 point 1) are read from the
//! `[secrets]` directory when the step that uses them is sent, and go only
//! into that step's `RunStep`: in an argv command and in env values as the
//! value, in a string command as `${MINIBOT_SECRET_NAME}` with the value in
//! that step's environment. They are never stored: not in the database, the
//! properties or the build's snapshot; the build keeps them in its
//! `Masker` (`masking`), through which every chunk of output, every reason
//! a worker gives and a set_property step's output pass before they are
//! written. A secret that cannot be read fails its step with a reason that
//! names it, without running anything.
//!
//! A set_property step (Buildbot's `SetPropertyFromCommand`, issue 20
//! point 5) runs as a shell step on the worker (the protocol does not know
//! it); the master keeps the step's masked stdout, up to
//! [`MAX_PROPERTY_OUTPUT`], and on success stores it stripped (or the
//! regex's group) as a build property, in the transaction that records the
//! step's end, and in the running build's properties for the later steps.

use crate::config::{
    expand, read_secret, step_secrets, Builder, Command, Ref, Step, StepKind, Trigger,
};
use crate::db::{self, LockWant, Props, SourceStamp, Store};
use crate::master::artifacts::{Download, DownloadSource, Transfer, Upload};
use crate::master::events::{Event, Hub};
use crate::master::locks;
use crate::master::logs::LogWriter;
use crate::master::masking::Masker;
use crate::model::{
    self, BuildId,
    BuildResult::{self, Cancelled, Exception, Failure, Retry, Skipped, Success, Warnings},
    BuilderId, LogId, StepId,
};
use crate::protocol::{FromWorker, StepSpec, ToWorker};
use anyhow::Result;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Everything the connection thread needs to run a build: a snapshot of the
/// builder's config (a reconfig does not change a running build).
#[derive(Debug, Clone)]
pub struct BuildJob {
    pub(crate) buildid: BuildId,
    pub(crate) builderid: BuilderId,
    pub(crate) number: i64,
    pub(crate) builder: Builder,
    pub(crate) ss: SourceStamp,
    pub(crate) props: Props,
    pub(crate) max_log_size: u64,
    /// (stepid, logid) of step 0 when the claim already started it.
    pub(crate) first_step: Option<(StepId, LogId)>,
    /// The `[secrets]` directory, if the config has one (relative to the
    /// master directory, which `RunningBuild::new` puts in front).
    pub(crate) secrets_dir: Option<PathBuf>,
    /// The locks each step takes (index = step number), as the config
    /// defined them when the build was claimed, on its worker.
    pub(crate) step_locks: Vec<Vec<LockWant>>,
}

/// The source of the `got_revision` property the master sets from a git
/// step's report. No request can produce a property with this source
/// (changes get "Change", the force form "Force Build Form"), which is what
/// lets the gitea_status reporter trust it.
pub(crate) const GOT_REVISION_SOURCE: &str = "Git";

/// The source of a property a set_property step set (Buildbot's
/// `SetPropertyFromCommand Step`).
pub(crate) const SET_PROPERTY_SOURCE: &str = "SetPropertyFromCommand Step";

/// The most of a set_property step's stdout that is kept: a command that
/// says more fails its step (the value would not be a property anyone
/// means, and properties travel in every later step's environment).
pub(crate) const MAX_PROPERTY_OUTPUT: usize = 64 * 1024;

/// How much of a git step's header stream is kept to find its last
/// `got_revision=<sha>` line (docs/protocol.md): the line comes last, and
/// the header holds only the git commands run, so this is plenty.
const GIT_HEADER_TAIL: usize = 4096;

/// The sha in the last `got_revision=` line of `header`, if it is one (40
/// or 64 lower-case hex digits, sha1 or sha256 repositories).
pub(crate) fn parse_got_revision(header: &str) -> Option<&str> {
    let sha = header
        .lines()
        .rev()
        .find_map(|l| l.trim_end().strip_prefix("got_revision="))?;
    let ok = matches!(sha.len(), 40 | 64)
        && sha
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    ok.then_some(sha)
}

struct CurrentStep {
    number: u32,
    name: String,
    stepid: StepId,
    logid: LogId,
    log: LogWriter,
    /// A set_property step's stdout, masked, up to `MAX_PROPERTY_OUTPUT`.
    captured: Option<String>,
    /// It said more than that.
    overflowed: bool,
    /// Run by the master (a trigger step): the worker has no say in it.
    on_master: bool,
}

/// A step that has ended but whose end is not in the database yet. It is
/// written in the same transaction as the next step's start or the
/// build's end: one store round trip and one commit per step boundary
/// instead of two. Nothing is acknowledged in between (the worker gets no
/// answer to `StepDone`, and `StepFinished` is published after the commit).
#[derive(Clone)]
struct StepEnd {
    buildid: BuildId,
    /// The step held locks: its end gives them back.
    held_locks: bool,
    stepid: StepId,
    logid: LogId,
    totals: db::LogTotals,
    results: BuildResult,
    state: String,
    /// A property the step set, as (buildid, name, value, source): the
    /// commit a git step reported (`got_revision`), a set_property step's
    /// value.
    property: Option<(BuildId, String, String, &'static str)>,
}

impl StepEnd {
    fn record(&self, c: &db::Tx) -> Result<()> {
        if self.held_locks {
            db::release_step_locks(c, self.buildid)?;
        }
        db::update_log(c, self.logid, self.totals, true)?;
        if let Some((buildid, name, value, source)) = &self.property {
            db::set_build_property(c, *buildid, name, value, source)?;
        }
        db::finish_step(c, self.stepid, self.results, &self.state)
    }
}

pub(crate) struct RunningBuild {
    pub job: BuildJob,
    master_dir: PathBuf,
    events: Hub,
    next: usize,
    results: BuildResult,
    /// Names of the steps that made the build worse, for the state string.
    culprits: Vec<String>,
    halted: bool,
    stop_reason: Option<String>,
    current: Option<CurrentStep>,
    /// The last step's end, until it is committed (see `StepEnd`).
    ended: Option<StepEnd>,
    /// The tail of the running git step's header stream (see
    /// `GIT_HEADER_TAIL`), where the worker reports the checked-out commit.
    git_header: String,
    /// Why the build cannot go on (see `cut_short`).
    cut: Option<String>,
    /// The secrets sent to this build's steps so far, masked in the output
    /// of this and every later step (a step may leave one in a file that a
    /// later step prints).
    masker: Masker,
    /// The next step waits for its locks: what holds them (see
    /// `Next::Wait`), and since when (added to the build's `lock_wait_ms`
    /// when it takes them).
    waiting: Option<(String, std::time::Instant)>,
    /// A step's locks were given back since the botmaster was last told
    /// (`take_released`): a queued request may wait for them.
    released: bool,
    /// The running step's upload or download (`master::artifacts`).
    transfer: Option<Transfer>,
    /// Bytes of the artifacts this build has stored (against its
    /// builder's `max_artifact_bytes`).
    artifact_bytes: u64,
}

/// What [`RunningBuild::advance`] did.
pub(crate) enum Next {
    /// The next step started: send this to the worker.
    Run(ToWorker),
    /// The next step waits for its locks (the build's state says which,
    /// held by whom); nothing to send. Call `advance` again once
    /// `locks_look_free`.
    Wait,
    /// A trigger step, run by the master (`master::chain`); end it with
    /// [`RunningBuild::master_step_done`].
    Trigger { step: u32, trigger: Trigger },
    /// No step is left: call `end`.
    Done,
}

/// How a build is closed.
#[derive(Debug, Clone)]
enum Close {
    /// Its steps ran, or it was stopped: the result they give.
    Finished { results: BuildResult, state: String },
    /// The master could not record its next step: RETRY, its request
    /// queued again.
    Retry { state: String },
}

/// The end of a build, made by [`RunningBuild::end`]: the last step's end
/// and the build's result. It is kept until it is written: the worker
/// connection writes it, and when the database refuses (disk full, the
/// write lock held elsewhere) hands it to the botmaster, which writes it
/// again until it is in (issue 16, point 3). The events go out after the
/// commit, as for every write.
pub struct BuildEnd {
    pub(crate) buildid: BuildId,
    builderid: BuilderId,
    pub(crate) builder: String,
    pub(crate) number: i64,
    ended: Option<StepEnd>,
    close: Close,
    events: Hub,
}

impl BuildEnd {
    /// Writes the end; on success tells the subscribers and returns the
    /// build's result.
    pub(crate) fn write(&self, store: &Store) -> Result<BuildResult> {
        let buildid = self.buildid;
        let ended = self.ended.clone();
        let close = self.close.clone();
        let results = store.write(move |c| {
            if let Some(e) = &ended {
                // A step that cannot be closed must not keep the build
                // open, unless the whole transaction is gone with it.
                if let Err(err) = e.record(c) {
                    c.check_intact()?;
                    log::error!(
                        "build {buildid}: recording the end of step {}: {err:#}",
                        e.stepid
                    );
                }
            }
            match &close {
                Close::Finished { results, state } => {
                    db::finish_build(c, buildid, *results, state)?;
                    Ok(*results)
                }
                Close::Retry { state } => {
                    db::retry_builds(c, &[buildid], state)?;
                    Ok(Retry)
                }
            }
        })?;
        if let Some(e) = &self.ended {
            self.events.publish(Event::StepFinished {
                buildid,
                stepid: e.stepid,
                results: e.results,
            });
        }
        self.events.publish(Event::BuildFinished {
            buildid,
            builderid: self.builderid,
            builder: self.builder.clone(),
            number: self.number,
            results,
        });
        Ok(results)
    }
}

/// Buildbot's order of badness for combining results.
fn badness(r: BuildResult) -> u8 {
    match r {
        Skipped => 0,
        Success => 1,
        Warnings => 2,
        Failure => 3,
        Exception => 4,
        Retry => 5,
        Cancelled => 6,
    }
}

pub(crate) fn worst(a: BuildResult, b: BuildResult) -> BuildResult {
    if badness(b) > badness(a) {
        b
    } else {
        a
    }
}

/// Maps a finished command to a step result (Buildbot's decodeRC).
pub(crate) fn step_result(
    step: &Step,
    exit_code: Option<i32>,
    interrupted: bool,
    timed_out: bool,
) -> BuildResult {
    if interrupted {
        return Cancelled;
    }
    if timed_out {
        return Failure;
    }
    match exit_code {
        Some(0) => Success,
        Some(c) if step.warning_exit_codes.contains(&c) => Warnings,
        _ => Failure,
    }
}

/// How a step's result changes the build's: (contribution, halt), as
/// Buildbot's `computeResultAndTermination`.
pub(crate) fn contribution(step: &Step, r: BuildResult) -> (BuildResult, bool) {
    match r {
        Failure => {
            let c = if step.flunk_on_failure {
                Failure
            } else if step.warn_on_failure {
                Warnings
            } else {
                Success
            };
            (c, step.halt_on_failure)
        }
        Warnings => {
            let c = if step.flunk_on_warnings {
                Failure
            } else {
                Warnings
            };
            (c, false)
        }
        Exception | Cancelled | Retry => (r, true),
        Success | Skipped => (Success, false),
    }
}

/// `MINIBOT_<NAME>`: upper case, anything but letters and digits as `_`.
pub(crate) fn env_name(prop: &str) -> String {
    let mut s = String::from("MINIBOT_");
    s.extend(prop.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    s
}

/// `MINIBOT_SECRET_<NAME>`: the variable a string command reads secret
/// NAME from (names are letters, digits and `_`, kept as written).
pub(crate) fn secret_env_name(name: &str) -> String {
    format!("MINIBOT_SECRET_{name}")
}

/// A property's value as data (argv element, env value), or its default.
fn prop_value(props: &Props, name: &str, default: Option<&str>) -> String {
    match props.get(name) {
        Some((v, _)) if !v.is_null() => model::value_text(v),
        _ => default.unwrap_or("").to_string(),
    }
}

/// Interpolates a value that is passed as data (a reporter's template, a
/// git step's repository URL). Secrets are not replaced here: only a
/// step's command and env get them ([`interpolate_step`]).
pub(crate) fn interpolate(s: &str, props: &Props) -> String {
    expand(s, |r| match r {
        Ref::Prop { name, default } => prop_value(props, name, default),
        Ref::Secret(name) => format!("%(secret:{name})s"),
    })
}

/// Interpolates an argv element or env value of a step: properties and
/// the step's `secrets` (name → value) as values.
fn interpolate_step(s: &str, props: &Props, secrets: &BTreeMap<String, String>) -> String {
    expand(s, |r| match r {
        Ref::Prop { name, default } => prop_value(props, name, default),
        Ref::Secret(name) => secrets.get(name).cloned().unwrap_or_default(),
    })
}

/// Interpolates a /bin/sh command: properties and secrets become variable
/// references.
pub(crate) fn interpolate_shell(s: &str, _props: &Props) -> String {
    expand(s, |r| match r {
        // The default comes from master.cfg, which is trusted; still keep it
        // out of the braces' reach.
        Ref::Prop {
            name,
            default: Some(d),
        } if !d.contains('}') => format!("${{{}:-{d}}}", env_name(name)),
        Ref::Prop { name, .. } => format!("${{{}}}", env_name(name)),
        Ref::Secret(name) => format!("${{{}}}", secret_env_name(name)),
    })
}

/// A set_property step's value from its (masked) stdout: the first match's
/// group of `regex`, else the whole output, stripped.
fn property_value(
    output: &str,
    regex: Option<&crate::config::Pattern>,
) -> std::result::Result<String, String> {
    let value = match regex {
        None => output,
        Some(re) => match re.re.captures(output).and_then(|c| c.get(1)) {
            Some(m) => m.as_str(),
            None => {
                return Err(format!(
                    "set_property: regex {:?} does not match the output",
                    re.source
                ))
            }
        },
    };
    let value = value.trim();
    if value.contains('\0') {
        return Err("set_property: the output holds a NUL byte".to_string());
    }
    Ok(value.to_string())
}

/// Keeps a set_property step's masked stdout, up to `MAX_PROPERTY_OUTPUT`.
fn capture(cur: &mut CurrentStep, data: &str) {
    if let Some(out) = &mut cur.captured {
        if out.len() + data.len() > MAX_PROPERTY_OUTPUT {
            cur.overflowed = true;
        } else {
            out.push_str(data);
        }
    }
}

impl RunningBuild {
    pub(crate) fn new(mut job: BuildJob, master_dir: PathBuf, events: Hub) -> RunningBuild {
        job.secrets_dir = job.secrets_dir.map(|d| master_dir.join(d));
        events.publish(Event::BuildStarted {
            buildid: job.buildid,
            builderid: job.builderid,
            builder: job.builder.name.clone(),
            number: job.number,
        });
        RunningBuild {
            job,
            master_dir,
            events,
            next: 0,
            results: Success,
            culprits: vec![],
            halted: false,
            stop_reason: None,
            current: None,
            ended: None,
            git_header: String::new(),
            cut: None,
            masker: Masker::default(),
            waiting: None,
            released: false,
            transfer: None,
            artifact_bytes: 0,
        }
    }

    /// Whether the next step waits for its locks.
    pub(crate) fn waiting_for_locks(&self) -> bool {
        self.waiting.is_some()
    }

    /// Whether the locks the waiting step needs are free in `holders` (a
    /// read outside the writer: `advance` checks again as it takes them).
    pub(crate) fn locks_look_free(&self, holders: &[db::LockHolder]) -> bool {
        let wants = self.job.step_locks.get(self.next).map_or(&[][..], |w| w);
        self.waiting.is_some()
            && locks::first_blocker(holders, wants, Some(self.job.buildid)).is_none()
    }

    /// Whether a step gave its locks back since the last call.
    pub(crate) fn take_released(&mut self) -> bool {
        std::mem::take(&mut self.released)
    }

    /// Whether the master asked this build to stop (web UI, API).
    pub(crate) fn stop_requested(&self) -> bool {
        self.stop_reason.is_some()
    }

    /// The worker's part of `step`, with its secrets read (and added to
    /// the build's masker): None for a step the master runs; Err says why
    /// it cannot run (a secret that cannot be read).
    fn spec(job: &BuildJob, masker: &mut Masker, step: &Step) -> Result<Option<StepSpec>, String> {
        let props = &job.props;
        let timeout = step.timeout.as_secs();
        Ok(match &step.kind {
            StepKind::Git {
                repourl,
                mode,
                branch,
            } => {
                let pr_number = props.get("pr_number").and_then(|(v, _)| {
                    v.as_u64()
                        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                });
                // A pull request tested as merged (`pull_request_checkout =
                // "merge"`): the source stamp is at the base and the head is
                // `head_sha`, so the worker checks out the base and merges
                // the head. At the head itself there is nothing to merge.
                let base = job.ss.revision.clone();
                let head = pr_number
                    .and_then(|_| props.get("head_sha"))
                    .and_then(|(v, _)| v.as_str())
                    .filter(|h| base.as_deref().is_some_and(|b| b != *h));
                let (revision, merge_into) = match head {
                    Some(h) => (Some(h.to_string()), base),
                    None => (base, None),
                };
                Some(StepSpec::Git {
                    repourl: interpolate(repourl, props),
                    branch: job.ss.branch.clone().or_else(|| branch.clone()),
                    revision,
                    mode: mode.as_str().to_string(),
                    pr_number,
                    merge_into,
                    timeout,
                })
            }
            StepKind::Shell {
                command,
                env: step_env,
                workdir,
            }
            | StepKind::SetProperty {
                command,
                env: step_env,
                workdir,
                ..
            } => {
                let mut secrets = BTreeMap::new();
                for name in step_secrets(step) {
                    let value = match &job.secrets_dir {
                        Some(dir) => read_secret(dir, &name),
                        None => Err(anyhow::anyhow!("the config has no [secrets] section")),
                    }
                    .map_err(|e| format!("secret {name:?} cannot be used: {e:#}"))?;
                    masker.add(&name, &value);
                    secrets.insert(name, value);
                }
                let argv = match command {
                    Command::Argv(a) => a
                        .iter()
                        .map(|x| interpolate_step(x, props, &secrets))
                        .collect(),
                    Command::Shell(s) => vec![
                        "/bin/sh".to_string(),
                        "-c".to_string(),
                        interpolate_shell(s, props),
                    ],
                };
                let mut env: BTreeMap<String, String> = props
                    .iter()
                    .map(|(k, (v, _))| (env_name(k), model::value_text(v)))
                    .collect();
                for (k, v) in step_env {
                    env.insert(k.clone(), interpolate_step(v, props, &secrets));
                }
                // Last, so neither a property nor the step's env can stand
                // in for the secret a string command refers to.
                if let Command::Shell(_) = command {
                    for (name, value) in &secrets {
                        env.insert(secret_env_name(name), value.clone());
                    }
                }
                Some(StepSpec::Shell {
                    argv,
                    env,
                    workdir: workdir.clone(),
                    timeout,
                })
            }
            StepKind::Upload { source, dest } => Some(StepSpec::Upload {
                source: source.clone(),
                dest: dest.clone(),
            }),
            // The size is the file's, known once `advance` has opened it.
            StepKind::Download { dest, .. } => Some(StepSpec::Download {
                dest: dest.clone(),
                size: 0,
            }),
            StepKind::Trigger(_) => None,
        })
    }

    /// Starts the next step that should run, taking its locks first (all
    /// or none, once the previous step's are given back); see [`Next`].
    pub(crate) fn advance(&mut self, store: &Store) -> Result<Next> {
        while self.next < self.job.builder.steps.len() {
            let idx = self.next;
            let step = &self.job.builder.steps[idx];
            if (self.halted || self.stop_reason.is_some()) && !step.always_run {
                self.next += 1;
                continue;
            }
            let name = step.name.clone();
            let captured = matches!(step.kind, StepKind::SetProperty { .. }).then(String::new);
            let (buildid, number, name2) = (self.job.buildid, idx as u32, name.clone());
            let wants = self.job.step_locks.get(idx).cloned().unwrap_or_default();
            let (stepid, logid) = match self.job.first_step.take() {
                Some(ids) if idx == 0 => ids,
                _ => {
                    let ended = self.ended.clone();
                    let waited_ms = self.waiting.as_ref().map(|(_, since)| {
                        i64::try_from(since.elapsed().as_millis()).unwrap_or(i64::MAX)
                    });
                    let started = store.write(move |c| {
                        if let Some(e) = &ended {
                            e.record(c)?;
                        }
                        if let Some(why) = locks::check(c, &wants, Some(buildid))? {
                            db::set_build_state(c, buildid, &format!("waiting for {why}"))?;
                            return Ok(Err(why));
                        }
                        db::take_locks(c, buildid, &wants, Some(number))?;
                        if let Some(ms) = waited_ms {
                            db::add_lock_wait(c, buildid, ms)?;
                        }
                        Ok(Ok(db::start_step(c, buildid, number, &name2)?))
                    })?;
                    self.released |= self.ended.as_ref().is_some_and(|e| e.held_locks);
                    self.publish_ended();
                    match started {
                        Ok(ids) => ids,
                        Err(why) => {
                            if self.waiting.as_ref().map(|(w, _)| w) != Some(&why) {
                                log::info!(
                                    "build {} #{} (build {buildid}): step {name} waits for {why}",
                                    self.job.builder.name,
                                    self.job.number
                                );
                            }
                            let since = self
                                .waiting
                                .take()
                                .map_or_else(std::time::Instant::now, |(_, since)| since);
                            self.waiting = Some((why, since));
                            return Ok(Next::Wait);
                        }
                    }
                }
            };
            self.next += 1;
            self.waiting = None;
            // Once its locks are taken: a step waiting for them reads no
            // secret until it runs.
            let mut spec = Self::spec(&self.job, &mut self.masker, &self.job.builder.steps[idx]);
            let path = db::new_log_path(&self.master_dir, buildid, logid);
            let log = LogWriter::create(&path, self.job.max_log_size)?;
            self.events.publish(Event::StepStarted { buildid, stepid });
            self.git_header.clear();
            self.transfer = match &self.job.builder.steps[idx].kind {
                StepKind::Upload { .. } => Some(Transfer::Upload(Upload::new(
                    &self.master_dir,
                    buildid,
                    number,
                    self.job.builder.max_artifact_bytes,
                    self.artifact_bytes,
                ))),
                StepKind::Download { from, .. } => {
                    let src = DownloadSource {
                        from,
                        buildid,
                        builderid: self.job.builderid,
                    };
                    let d = Download::start(store, &self.master_dir, &src, number);
                    if let Ok(Some(StepSpec::Download { size, .. })) = &mut spec {
                        *size = d.size();
                    }
                    Some(Transfer::Download(d))
                }
                StepKind::Git { .. }
                | StepKind::Shell { .. }
                | StepKind::SetProperty { .. }
                | StepKind::Trigger(_) => None,
            };
            self.current = Some(CurrentStep {
                number,
                name,
                stepid,
                logid,
                log,
                captured,
                overflowed: false,
                on_master: matches!(spec, Ok(None)),
            });
            let spec = match spec {
                Ok(spec) => spec,
                Err(why) => {
                    // Nothing to run: the step fails here, with the reason
                    // in its log and state, and the build goes on as after
                    // any failure (its end is recorded with the next step's
                    // start or the build's end).
                    self.step_done(number, None, false, false, Some(why))?;
                    continue;
                }
            };
            return Ok(match (spec, &self.job.builder.steps[idx].kind) {
                (Some(spec), _) => Next::Run(ToWorker::RunStep {
                    build_id: buildid,
                    step: number,
                    builder_dir: self.job.builder.builddir.clone(),
                    spec,
                }),
                (None, StepKind::Trigger(t)) => Next::Trigger {
                    step: number,
                    trigger: t.clone(),
                },
                (
                    None,
                    StepKind::Git { .. }
                    | StepKind::Shell { .. }
                    | StepKind::SetProperty { .. }
                    | StepKind::Upload { .. }
                    | StepKind::Download { .. },
                ) => {
                    anyhow::bail!("step {idx} has nothing to run")
                }
            });
        }
        Ok(Next::Done)
    }

    pub(crate) fn log(&mut self, step: u32, stream: &str, data: &str) -> Result<()> {
        match &mut self.current {
            Some(cur) if cur.number == step && !cur.on_master => {
                let data = &self.masker.feed(stream, data);
                cur.log.append(stream, data)?;
                if stream == "o" {
                    capture(cur, data);
                }
                let is_git = self
                    .job
                    .builder
                    .steps
                    .get(step as usize)
                    .is_some_and(Step::is_git);
                if is_git && stream == "h" {
                    self.git_header.push_str(data);
                    if self.git_header.len() > GIT_HEADER_TAIL {
                        let mut cut = self.git_header.len() - GIT_HEADER_TAIL;
                        while !self.git_header.is_char_boundary(cut) {
                            cut += 1;
                        }
                        self.git_header.drain(..cut);
                    }
                }
                self.events.publish(Event::LogAppended {
                    buildid: self.job.buildid,
                    logid: cur.logid,
                });
                Ok(())
            }
            _ => {
                log::warn!(
                    "build {}: output for step {step}, which is not running",
                    self.job.buildid
                );
                Ok(())
            }
        }
    }

    /// The frames a download sends on its own: right after its `RunStep`,
    /// the first window of the file (or the abort, when there is no file).
    pub(crate) fn transfer_frames(&mut self) -> Vec<ToWorker> {
        match &mut self.transfer {
            Some(Transfer::Download(d)) => d.frames(),
            Some(Transfer::Upload(_)) | None => vec![],
        }
    }

    /// A transfer frame from the worker (`UploadFile`, `UploadData`,
    /// `UploadEnd`, `DownloadAck`) for the running step; returns what to
    /// send back. Frames for another step, or of the wrong kind, are late
    /// or confused and dropped.
    pub(crate) fn on_transfer(&mut self, store: &Store, frame: FromWorker) -> Vec<ToWorker> {
        let running = self.current.as_ref().map(|c| c.number);
        let answer = match (&mut self.transfer, frame) {
            (
                Some(Transfer::Upload(u)),
                FromWorker::UploadFile {
                    step, name, size, ..
                },
            ) if running == Some(step) => u.on_file(&name, size),
            (Some(Transfer::Upload(u)), FromWorker::UploadData { step, data, .. })
                if running == Some(step) =>
            {
                u.on_data(&data)
            }
            (Some(Transfer::Upload(u)), FromWorker::UploadEnd { step, sha256, .. })
                if running == Some(step) =>
            {
                u.on_end(&sha256, store)
            }
            (Some(Transfer::Download(d)), FromWorker::DownloadAck { step, received, .. })
                if running == Some(step) =>
            {
                return d.on_ack(received);
            }
            (_, f) => {
                log::warn!(
                    "build {}: dropping a transfer frame for no running transfer: {:?}",
                    self.job.buildid,
                    std::mem::discriminant(&f)
                );
                return vec![];
            }
        };
        if let (Some(line), Some(step)) = (answer.log, running) {
            if let Err(e) = self.log(step, "h", &line) {
                log::error!("build {}: writing log: {e:#}", self.job.buildid);
            }
        }
        answer.reply.into_iter().collect()
    }

    /// Ends the running step; its end is committed with the next `advance`
    /// or `finish`, which the caller makes next. Returns false (and changes
    /// nothing) when `step` is not the step running, so the caller does not
    /// move the build on.
    pub(crate) fn step_done(
        &mut self,
        step: u32,
        mut exit_code: Option<i32>,
        interrupted: bool,
        timed_out: bool,
        mut reason: Option<String>,
    ) -> Result<bool> {
        let Some(mut cur) = self.current.take() else {
            log::warn!("build {}: StepDone with no step running", self.job.buildid);
            return Ok(false);
        };
        if cur.number != step || cur.on_master {
            // A late or repeated StepDone (or a confused worker) must not
            // end the step that is running now with another step's result.
            log::warn!(
                "build {}: StepDone for step {step} ignored: step {} is running",
                self.job.buildid,
                cur.number
            );
            self.current = Some(cur);
            return Ok(false);
        }
        if let Some(t) = self.transfer.take() {
            let worker_ok = exit_code == Some(0) && !interrupted && !timed_out;
            let (why, used) = t.finish(worker_ok);
            if let Some(used) = used {
                self.artifact_bytes = used;
            }
            // The master refused what the worker sent (or could not send
            // what it asked for): that is the step's failure and its reason.
            if let Some(why) = why.filter(|_| !interrupted) {
                exit_code = None;
                reason = Some(why);
            }
        }
        let cfg = &self.job.builder.steps[cur.number as usize];
        let r = step_result(cfg, exit_code, interrupted, timed_out);
        // The output held back in case it was the start of a secret: the
        // step is over, so it is masked as it is and written.
        let mut logged = Ok(());
        for stream in ["o", "e", "h"] {
            let rest = self.masker.flush(stream);
            if !rest.is_empty() {
                if stream == "o" {
                    capture(&mut cur, &rest);
                }
                logged = logged.and_then(|_| cur.log.append(stream, &rest));
            }
        }
        let reason = reason.map(|why| self.masker.mask_all(&why));
        self.end_step(cur, r, timed_out, reason, logged);
        Ok(true)
    }

    /// Appends the master's own lines to the running master step's log.
    pub(crate) fn master_log(&mut self, text: &str) {
        if let Some(cur) = self.current.as_mut().filter(|c| c.on_master) {
            if let Err(e) = cur.log.append("h", text) {
                log::error!("build {}: writing log: {e:#}", self.job.buildid);
            }
            self.events.publish(Event::LogAppended {
                buildid: self.job.buildid,
                logid: cur.logid,
            });
        }
    }

    /// The number of the running step if the master runs it (a trigger
    /// step waiting for its builds).
    pub(crate) fn master_step(&self) -> Option<u32> {
        self.current
            .as_ref()
            .filter(|c| c.on_master)
            .map(|c| c.number)
    }

    /// Ends the master step `step` with `r` (`why`: what the state string
    /// says after a failure). False, changing nothing, when it is not the
    /// step running.
    pub(crate) fn master_step_done(
        &mut self,
        step: u32,
        r: BuildResult,
        why: Option<String>,
    ) -> bool {
        match self.current.take() {
            Some(cur) if cur.number == step && cur.on_master => {
                self.end_step(cur, r, false, why, Ok(()));
                true
            }
            other => {
                self.current = other;
                false
            }
        }
    }

    /// Closes the running step with result `r`; its end is committed with
    /// the next `advance` or `end`. `logged`: whether what was written to
    /// its log at the end went in.
    fn end_step(
        &mut self,
        mut cur: CurrentStep,
        mut r: BuildResult,
        timed_out: bool,
        mut reason: Option<String>,
        logged: Result<()>,
    ) {
        let cfg = &self.job.builder.steps[cur.number as usize];
        let header = std::mem::take(&mut self.git_header);
        let mut property = if cfg.is_git() && r == Success {
            parse_got_revision(&header).map(|sha| {
                (
                    "got_revision".to_string(),
                    sha.to_string(),
                    GOT_REVISION_SOURCE,
                )
            })
        } else {
            None
        };
        if let (
            StepKind::SetProperty {
                property: name,
                regex,
                ..
            },
            Success,
        ) = (&cfg.kind, r)
        {
            let value = if cur.overflowed {
                Err(format!(
                    "set_property: the command printed more than {MAX_PROPERTY_OUTPUT} bytes"
                ))
            } else {
                property_value(cur.captured.as_deref().unwrap_or(""), regex.as_ref())
            };
            match value {
                Ok(v) => property = Some((name.clone(), v, SET_PROPERTY_SOURCE)),
                Err(why) => {
                    r = Failure;
                    reason = Some(why);
                }
            }
        }
        if let Some((name, value, source)) = &property {
            // Later steps see it too, as Buildbot's %(prop:got_revision)s.
            self.job
                .props
                .insert(name.clone(), (value.clone().into(), source.to_string()));
        }
        let (contrib, halt) = contribution(cfg, r);
        if contrib != Success {
            self.culprits.push(cur.name.clone());
        }
        self.results = worst(self.results, contrib);
        self.halted |= halt;
        let mut state = cur.name.clone();
        match (&reason, r) {
            _ if timed_out => state.push_str(" (timeout)"),
            // The worker said why (a git step: "merge conflict: PR #3 does
            // not merge into master (e532cbf)", "git fetch failed ..."):
            // that is the state, bounded as the page shows it.
            (Some(why), Failure) if !why.trim().is_empty() => {
                let why: String = why.lines().next().unwrap_or("").chars().take(200).collect();
                state.push_str(&format!(" ({why})"));
            }
            (_, Success) => {}
            (_, r) => state.push_str(&format!(" ({})", r.name())),
        }
        // The log is the master's own file (a full disk can refuse it); the
        // step's result is the worker's and is recorded all the same.
        // (A master step's log already has its own lines.)
        let logged = match reason {
            Some(why) if !cur.on_master => {
                logged.and_then(|_| cur.log.append("h", &format!("{why}\n")))
            }
            Some(_) => logged,
            None => logged,
        };
        if let Err(e) = logged.and_then(|_| cur.log.finish()) {
            log::error!(
                "build {}: writing the end of step {}'s log: {e:#}",
                self.job.buildid,
                cur.name
            );
        }
        self.ended = Some(StepEnd {
            buildid: self.job.buildid,
            held_locks: self
                .job
                .step_locks
                .get(cur.number as usize)
                .is_some_and(|w| !w.is_empty()),
            stepid: cur.stepid,
            logid: cur.logid,
            totals: cur.log.totals(),
            results: r,
            state,
            property: property.map(|(n, v, s)| (self.job.buildid, n, v, s)),
        });
    }

    /// The ended step is committed: tell the subscribers.
    fn publish_ended(&mut self) {
        if let Some(e) = self.ended.take() {
            self.events.publish(Event::StepFinished {
                buildid: self.job.buildid,
                stepid: e.stepid,
                results: e.results,
            });
        }
    }

    /// Asks the running step to stop; the build then ends CANCELLED.
    /// Returns the Interrupt to send, if a step is running.
    pub(crate) fn request_stop(&mut self, reason: &str) -> Option<ToWorker> {
        self.stop_reason = Some(reason.to_string());
        // A master step (a trigger step waiting) is the caller's to end.
        self.current
            .as_ref()
            .filter(|c| !c.on_master)
            .map(|_| ToWorker::Interrupt {
                build_id: self.job.buildid,
                reason: reason.to_string(),
            })
    }

    /// The master could not record the build's next step (the database
    /// refused the write): the build ends now, as RETRY, and its request
    /// is queued again.
    pub(crate) fn cut_short(&mut self, why: &str) {
        self.cut = Some(why.to_string());
    }

    /// The build's end, once no step is left: write it with
    /// [`BuildEnd::write`].
    pub(crate) fn end(&mut self) -> BuildEnd {
        let close = match &self.cut {
            Some(why) => Close::Retry {
                state: format!("retry: {why}"),
            },
            None => {
                let results = if self.stop_reason.is_some() {
                    worst(self.results, Cancelled)
                } else {
                    self.results
                };
                let state = match results {
                    Success => "build successful".to_string(),
                    Cancelled => format!(
                        "cancelled: {}",
                        self.stop_reason.as_deref().unwrap_or("stopped")
                    ),
                    r @ (Warnings | Failure | Skipped | Exception | Retry) => {
                        format!("{} {}", r.name(), self.culprits.join(", "))
                    }
                };
                Close::Finished { results, state }
            }
        };
        BuildEnd {
            buildid: self.job.buildid,
            builderid: self.job.builderid,
            builder: self.job.builder.name.clone(),
            number: self.job.number,
            ended: self.ended.take(),
            close,
            events: self.events.clone(),
        }
    }

    /// The connection is going away mid-step: close the log cleanly. The
    /// botmaster then ends the build as RETRY in the database.
    pub(crate) fn abandon(&mut self, store: &Store, why: &str) {
        // A partial upload is removed with it.
        self.transfer = None;
        if let Some(e) = self.ended.clone() {
            // Not reached today: `step_done` is always followed by `advance`.
            if let Err(err) = store.write(move |c| e.record(c)) {
                log::error!("build {}: closing step: {err:#}", self.job.buildid);
            }
            self.publish_ended();
        }
        if let Some(mut cur) = self.current.take() {
            for stream in ["o", "e", "h"] {
                let rest = self.masker.flush(stream);
                let _ = cur.log.append(stream, &rest);
            }
            let _ = cur.log.append("h", &format!("\n{why}\n"));
            let _ = cur.log.finish();
            let (logid, totals) = (cur.logid, cur.log.totals());
            if let Err(e) = store.write(move |c| db::update_log(c, logid, totals, true)) {
                log::error!("build {}: closing log: {e:#}", self.job.buildid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props() -> Props {
        let mut p = Props::new();
        p.insert("branch".into(), ("feat/$(rm -rf ~)".into(), "Build".into()));
        p.insert("buildnumber".into(), (7.into(), "Build".into()));
        p
    }

    #[test]
    fn interpolation_as_data() {
        let p = props();
        assert_eq!(interpolate("b=%(prop:branch)s", &p), "b=feat/$(rm -rf ~)");
        assert_eq!(interpolate("%(prop:buildnumber)s", &p), "7");
        assert_eq!(interpolate("%(prop:nope:-dflt)s", &p), "dflt");
        assert_eq!(interpolate("%(prop:nope)s", &p), "");
        assert_eq!(
            interpolate("date +%Y %(prop:unterminated", &p),
            "date +%Y %(prop:unterminated"
        );
        assert_eq!(
            interpolate_shell("echo %(prop:branch)s %(prop:x-y:-d)s", &p),
            "echo ${MINIBOT_BRANCH} ${MINIBOT_X_Y:-d}"
        );
        assert_eq!(env_name("pr_number"), "MINIBOT_PR_NUMBER");
    }

    #[test]
    fn secrets_are_values_in_argv_and_variables_in_a_shell_command() {
        let p = props();
        let mut secrets = BTreeMap::new();
        secrets.insert("tok".to_string(), "v$(x)".to_string());
        assert_eq!(
            interpolate_step("--token=%(secret:tok)s@%(prop:buildnumber)s", &p, &secrets),
            "--token=v$(x)@7"
        );
        assert_eq!(
            interpolate_shell("curl -u %(secret:tok)s", &p),
            "curl -u ${MINIBOT_SECRET_tok}"
        );
        // Not replaced where secrets do not go (reporter templates, URLs).
        assert_eq!(interpolate("a %(secret:tok)s", &p), "a %(secret:tok)s");
    }

    #[test]
    fn property_values_are_stripped_or_the_regex_group() {
        let re = |s: &str| crate::config::Pattern {
            source: s.to_string(),
            re: regex_lite::Regex::new(s).unwrap(),
        };
        assert_eq!(property_value("  1.2.3\n", None).unwrap(), "1.2.3");
        assert_eq!(
            property_value("name: x\nversion: 4.5 \n", Some(&re(r"version: (\S+)"))).unwrap(),
            "4.5"
        );
        let err = property_value("nothing", Some(&re("v(\\d)"))).unwrap_err();
        assert!(err.contains("does not match"), "{err}");
        assert!(property_value("a\0b", None).is_err());
    }

    #[test]
    fn got_revision_is_the_last_well_formed_line() {
        let a = "a".repeat(40);
        let b = "0123456789abcdef".repeat(4);
        let header = format!("git fetch origin master\ngot_revision={a}\ngot_revision={b}\n");
        assert_eq!(parse_got_revision(&header), Some(b.as_str()));
        assert_eq!(
            parse_got_revision(&format!("got_revision={a}")),
            Some(a.as_str())
        );
        for bad in [
            String::new(),
            "got_revision=abc123\n".to_string(),
            format!("got_revision={}\n", "A".repeat(40)),
            format!("got_revision={a} extra\n"),
            format!("x got_revision={a}\n"),
        ] {
            assert_eq!(parse_got_revision(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn result_mapping() {
        let mut s =
            crate::config::test_config(crate::config::TEST_BUILDER).builders[0].steps[0].clone();
        assert_eq!(step_result(&s, Some(0), false, false), Success);
        assert_eq!(step_result(&s, Some(1), false, false), Failure);
        assert_eq!(step_result(&s, None, false, false), Failure);
        assert_eq!(step_result(&s, Some(0), true, false), Cancelled);
        assert_eq!(step_result(&s, None, false, true), Failure);
        s.warning_exit_codes = vec![3];
        assert_eq!(step_result(&s, Some(3), false, false), Warnings);
        assert_eq!(contribution(&s, Failure), (Failure, true));
        assert_eq!(contribution(&s, Warnings), (Warnings, false));
        s.halt_on_failure = false;
        s.flunk_on_failure = false;
        s.warn_on_failure = true;
        assert_eq!(contribution(&s, Failure), (Warnings, false));
        s.flunk_on_warnings = true;
        assert_eq!(contribution(&s, Warnings), (Failure, false));
        assert_eq!(contribution(&s, Exception), (Exception, true));
        assert_eq!(worst(Success, Failure), Failure);
        assert_eq!(worst(Cancelled, Failure), Cancelled);
        assert_eq!(worst(Warnings, Success), Warnings);
    }
}
