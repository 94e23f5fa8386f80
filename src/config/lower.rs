//! Pass 3: raw → model. Lowering is the validation: each section of the
//! raw serde layer becomes its typed form here, with every default applied,
//! and whatever cannot be lowered is reported with its key path (names,
//! references, ranges, required keys, keys that the kind does not take).
//! Each kind's arm takes the keys of its variant out of the raw struct;
//! what is left over does not belong to it.

use super::locks;
use super::model::*;
use super::problems::{one_line, Problems};
use super::raw;
use super::raw::{CronField, DEFAULT_MAX_CONNECTIONS, MAX_MAX_CONNECTIONS};
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

/// The whole config, or None when anything was reported.
pub(super) fn lower(cfg: raw::Config, p: &mut Problems) -> Option<Config> {
    let before = p.list.len();
    if let Some(url) = &cfg.buildbot_url {
        match url::Url::parse(url) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            Ok(_) => p.add("buildbot_url", "must be an http:// or https:// URL"),
            Err(e) => p.add("buildbot_url", format_args!("not a URL: {e}")),
        }
    }
    let www = lower_www(&cfg.www, cfg.protocols.worker.as_ref(), p);
    let auth = lower_auth(cfg.www.auth, cfg.buildbot_url.as_deref(), p);
    let workers = lower_workers(cfg.workers, p);
    let builder_names: Vec<String> = cfg.builders.iter().filter_map(|b| b.name.clone()).collect();
    let builder_names: Vec<&str> = builder_names.iter().map(String::as_str).collect();
    let scheduler_names: Vec<Option<String>> =
        cfg.schedulers.iter().map(|s| s.name.clone()).collect();
    let builder_list: Vec<Option<String>> = cfg.builders.iter().map(|b| b.name.clone()).collect();
    let schedulers = lower_schedulers(cfg.schedulers, &builder_names, p);
    let worker_names: Vec<&str> = workers.iter().map(|w| w.name.as_str()).collect();
    let secrets_dir = lower_secrets(cfg.secrets.as_ref(), p);
    check_secret_refs(&cfg.builders, secrets_dir.is_some(), p);
    let lock_names: Vec<String> = cfg.locks.iter().filter_map(|l| l.name.clone()).collect();
    let lock_names: Vec<&str> = lock_names.iter().map(String::as_str).collect();
    let locks = locks::lower_locks(cfg.locks, p);
    let builders = lower_builders(
        cfg.builders,
        &worker_names,
        &lock_names,
        cfg.max_artifact_bytes,
        p,
    );
    locks::check_deadlocks(&builders, p);
    let reporters = lower_reporters(cfg.reporters, &builder_names, p);
    super::chains::check(&schedulers, &builders, &scheduler_names, &builder_list, p);
    let change_source = lower_change_sources(cfg.change_source, p);
    check_janitor(&cfg.janitor, p);
    check_logging(&cfg.logging, p);
    let (mut www, worker) = www?;
    www.auth = auth;
    (p.list.len() == before).then_some(Config {
        title: cfg.title,
        buildbot_url: cfg.buildbot_url,
        www,
        protocols: Protocols { worker },
        workers,
        schedulers,
        builders,
        locks,
        reporters,
        change_source,
        janitor: cfg.janitor,
        logging: cfg.logging,
        max_log_size: cfg.max_log_size,
        secrets_dir,
    })
}

/// `value`, or "required key is missing" at `at.key`.
pub(super) fn required<T>(value: Option<T>, at: &str, key: &str, p: &mut Problems) -> Option<T> {
    if value.is_none() {
        p.add(&format!("{at}.{key}"), "required key is missing");
    }
    value
}

/// Reports the keys a kind left over: they belong to another kind.
/// `set` lists (key, is set, kinds that take it).
fn leftover(at: &str, what: &str, set: &[(&str, bool, impl AsRef<str>)], p: &mut Problems) {
    for (k, is_set, takers) in set {
        let takers = takers.as_ref();
        if *is_set {
            let only = if takers.is_empty() {
                String::new()
            } else {
                format!(" (only {takers})")
            };
            p.add(
                &format!("{at}.{k}"),
                format_args!("not a key of {what}{only}"),
            );
        }
    }
}

fn pattern(
    at: &str,
    key: &str,
    source: Option<String>,
    anchored: bool,
    p: &mut Problems,
) -> Option<Pattern> {
    let source = source?;
    // Checked as written, so the error points into what the user wrote.
    let checked = regex_lite::Regex::new(&source).and_then(|re| {
        if anchored {
            regex_lite::Regex::new(&format!("^(?:{source})$"))
        } else {
            Ok(re)
        }
    });
    match checked {
        Ok(re) => Some(Pattern { source, re }),
        Err(e) => {
            p.add(
                &format!("{at}.{key}"),
                format_args!("invalid regex {source:?}: {}", one_line(&e.to_string())),
            );
            None
        }
    }
}

fn seconds(s: u64) -> Duration {
    Duration::from_secs(s)
}

// ---------------------------------------------------------------------------
// [www], [protocols]

/// `[www.auth]`: Gitea's URL, the OAuth2 application's id and secret, and
/// the `admins` list. Gitea sends the browser back to `buildbot_url`'s
/// `login/gitea/callback`, which must be registered in Gitea, so
/// `buildbot_url` is required.
fn lower_auth(
    auth: Option<raw::AuthCfg>,
    buildbot_url: Option<&str>,
    p: &mut Problems,
) -> Option<GiteaAuth> {
    let a = auth?;
    let at = "www.auth";
    let before = p.list.len();
    match a.kind.as_deref() {
        Some("gitea") => {}
        Some(k) => p.add(
            &format!("{at}.type"),
            format_args!("{k:?} is not \"gitea\" (the only kind)"),
        ),
        None => p.add(&format!("{at}.type"), "required: type = \"gitea\""),
    }
    if buildbot_url.is_none() {
        p.add(
            "buildbot_url",
            "required with [www.auth]: Gitea sends the browser back to <buildbot_url>login/gitea/callback",
        );
    }
    let base_url =
        required(a.base_url, at, "base_url", p).and_then(|u| match url::Url::parse(&u) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => {
                Some(u.trim_end_matches('/').to_string())
            }
            _ => {
                p.add(
                    &format!("{at}.base_url"),
                    format_args!("{u:?} is not an http(s) URL (e.g. \"https://git.example.org\")"),
                );
                None
            }
        });
    let client_id = required(a.client_id, at, "client_id", p);
    if client_id
        .as_deref()
        .is_some_and(|c| c.is_empty() || c.len() > 256 || c.chars().any(|ch| ch.is_control()))
    {
        p.add(
            &format!("{at}.client_id"),
            "must be Gitea's client id (1 to 256 characters, no control characters)",
        );
    }
    let client_secret = one_secret(
        at,
        "client_secret",
        a.client_secret,
        a.client_secret_file,
        p,
    );
    let mut admins = Vec::with_capacity(a.admins.len());
    for (i, entry) in a.admins.iter().enumerate() {
        let lower = entry.to_ascii_lowercase();
        let grant = match lower.split_once(':') {
            Some(("user", n)) if is_gitea_name(n) => Some(Grant::User(n.to_string())),
            Some(("org", n)) if is_gitea_name(n) => Some(Grant::Org(n.to_string())),
            Some(("team", t)) => match t.split_once('/') {
                Some((o, n)) if is_gitea_name(o) && is_gitea_name(n) => Some(Grant::Team {
                    org: o.to_string(),
                    team: n.to_string(),
                }),
                _ => None,
            },
            _ => None,
        };
        match grant {
            Some(g) => admins.push(g),
            None => p.add(
                &format!("{at}.admins #{}", i + 1),
                format_args!(
                    "{entry:?} is not \"user:NAME\", \"org:NAME\" or \"team:ORG/TEAM\" \
                     (Gitea names: letters, digits, '-', '_', '.')"
                ),
            ),
        }
    }
    (p.list.len() == before).then(|| GiteaAuth {
        base_url: base_url.unwrap_or_default(),
        client_id: client_id.unwrap_or_default(),
        client_secret: client_secret.unwrap_or(Secret::Inline(String::new())),
        verify_tls: a.verify_tls.unwrap_or(true),
        admins,
    })
}

fn lower_www(
    www: &raw::Www,
    worker: Option<&raw::WorkerProtocol>,
    p: &mut Problems,
) -> Option<(Www, WorkerProtocol)> {
    let before = p.list.len();
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
    let max_connections = www.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
    if !(1..=MAX_MAX_CONNECTIONS).contains(&max_connections) {
        p.add(
            "www.max_connections",
            format!("{max_connections} is not between 1 and {MAX_MAX_CONNECTIONS}"),
        );
    }
    let anonymous = one_of(
        p,
        "www.anonymous",
        www.anonymous.as_deref(),
        &[("read", Anonymous::Read), ("none", Anonymous::None)],
    );
    let dialects = &www.change_hook_dialects;
    // A hook without a secret lets anyone who can reach the port store
    // changes and start builds, and a plain cross-site HTML form is enough
    // to reach it through the operator's tunnel: no dialect runs unsigned
    // unless the config says so in words (`allow_unsigned`, base only: Gitea
    // and GitHub can always sign, so they get no opt-out).
    let mut forge = |key: &str, g: &Option<raw::GiteaDialect>| {
        let g = g.as_ref()?;
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
        // Each dialect's default is its Buildbot hook's: buildbot_gitea
        // stores `ssh_url`, Buildbot's GitHub hook `html_url`.
        let repository_url = match (g.repository_url.as_deref(), key) {
            (None, "github") | (Some("html"), _) => RepositoryUrl::Html,
            (None, _) | (Some("ssh"), _) => RepositoryUrl::Ssh,
            (Some("clone"), _) => RepositoryUrl::Clone,
            (Some(u), _) => {
                p.add(
                    &format!("www.change_hook_dialects.{key}.repository_url"),
                    format_args!("{u:?} is not one of \"ssh\", \"clone\", \"html\""),
                );
                RepositoryUrl::Ssh
            }
        };
        let at = format!("www.change_hook_dialects.{key}");
        let skips = match &g.skips {
            None => GiteaDialect::default().skips,
            Some(list) => list
                .iter()
                .enumerate()
                .filter_map(|(i, s)| {
                    pattern(&at, &format!("skips #{}", i + 1), Some(s.clone()), false, p)
                })
                .collect(),
        };
        let pull_request_checkout = one_of(
            p,
            &format!("www.change_hook_dialects.{key}.pull_request_checkout"),
            g.pull_request_checkout.as_deref(),
            &[
                ("merge", PullRequestCheckout::Merge),
                ("head", PullRequestCheckout::Head),
            ],
        );
        Some(GiteaDialect {
            secret: g.secret.clone(),
            only_include_push_commit: g.only_include_push_commit,
            repository_url,
            codebase: g.codebase.clone(),
            only_mergeable_pull_request: g.only_mergeable_pull_request,
            skips,
            pull_request_checkout,
        })
    };
    let gitea = forge("gitea", &dialects.gitea);
    let github = forge("github", &dialects.github);
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

    let Some(wp) = worker else {
        p.add(
            "protocols.worker",
            "missing: add a [protocols.worker] section with the port workers connect to",
        );
        return None;
    };
    let port = required(wp.port, "protocols.worker", "port", p)?;
    if wp.keepalive == 0 {
        p.add("protocols.worker.keepalive", "must be at least 1 second");
    }
    let worker_ip = check_bind("protocols.worker.bind", &wp.bind, p);
    if let (Some(a), Some(b)) = (www_ip, worker_ip) {
        let overlap = a == b || a.is_unspecified() || b.is_unspecified();
        if www.unix_socket.is_none() && port != 0 && port == www.port && overlap {
            p.add(
                "protocols.worker.port",
                format_args!("{port} is also www.port on the same address"),
            );
        }
    }
    (p.list.len() == before).then(|| {
        (
            Www {
                port: www.port,
                bind: www.bind.clone(),
                unix_socket: www.unix_socket.clone(),
                anonymous,
                max_connections,
                change_hook_dialects: Dialects {
                    gitea,
                    base: dialects.base.clone(),
                    github,
                },
                auth: None,
            },
            WorkerProtocol {
                port,
                bind: wp.bind.clone(),
                keepalive: wp.keepalive,
            },
        )
    })
}

// ---------------------------------------------------------------------------
// Workers

fn lower_workers(workers: Vec<raw::WorkerCfg>, p: &mut Problems) -> Vec<WorkerCfg> {
    let mut out = Vec::with_capacity(workers.len());
    for (i, w) in workers.into_iter().enumerate() {
        let at = format!("workers[{i}]");
        let name = required(w.name, &at, "name", p);
        let password = required(w.password, &at, "password", p);
        if let Some(name) = &name {
            check_name(&format!("{at}.name"), "worker", name, p);
        }
        if password.as_deref() == Some("") {
            p.add(&format!("{at}.password"), "is empty");
        }
        if w.max_builds == 0 {
            p.add(&format!("{at}.max_builds"), "must be at least 1");
        }
        if let (Some(name), Some(password)) = (name, password) {
            out.push(WorkerCfg {
                name,
                password,
                max_builds: w.max_builds,
            });
        }
    }
    check_unique(
        "worker name",
        out.iter()
            .enumerate()
            .map(|(i, w)| (format!("workers[{i}].name"), w.name.as_str())),
        p,
    );
    out
}

// ---------------------------------------------------------------------------
// Schedulers

/// The scheduler `type`s, in the order the messages list them.
const SCHEDULER_KINDS: [&str; 7] = [
    "single_branch",
    "any_branch",
    "force",
    "periodic",
    "nightly",
    "triggerable",
    "dependent",
];

fn lower_schedulers(
    schedulers: Vec<raw::SchedulerCfg>,
    builder_names: &[&str],
    p: &mut Problems,
) -> Vec<Scheduler> {
    lower_named(
        "schedulers",
        "scheduler name",
        schedulers,
        |s| s.name.clone(),
        p,
        |at, s, p| lower_scheduler(at, s, builder_names, p),
    )
}

/// Lowers each element of the list at `section` (e.g. `schedulers`), then
/// reports names used twice (`what`: e.g. "scheduler name").
fn lower_named<R, M>(
    section: &str,
    what: &str,
    items: Vec<R>,
    name_of: fn(&R) -> Option<String>,
    p: &mut Problems,
    mut lower: impl FnMut(&str, R, &mut Problems) -> Option<M>,
) -> Vec<M> {
    let names: Vec<(String, String)> = items
        .iter()
        .enumerate()
        .filter_map(|(i, r)| Some((format!("{section}[{i}].name"), name_of(r)?)))
        .collect();
    let out = items
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| lower(&format!("{section}[{i}]"), r, p))
        .collect();
    check_unique(
        what,
        names.iter().map(|(at, n)| (at.clone(), n.as_str())),
        p,
    );
    out
}

fn lower_scheduler(
    at: &str,
    mut s: raw::SchedulerCfg,
    builder_names: &[&str],
    p: &mut Problems,
) -> Option<Scheduler> {
    let before = p.list.len();
    let name = required(s.name.take(), at, "name", p);
    if let Some(name) = &name {
        check_name(&format!("{at}.name"), "scheduler", name, p);
    }
    let builders = required(s.builders.take(), at, "builders", p);
    if let Some(builders) = &builders {
        if builders.is_empty() {
            p.add(&format!("{at}.builders"), "names no builder");
        }
        for (j, b) in builders.iter().enumerate() {
            if !builder_names.contains(&b.as_str()) {
                p.add(
                    &format!("{at}.builders[{j}]"),
                    format_args!("no builder named {b:?}"),
                );
            }
        }
    }
    let kind_name = required(s.kind.take(), at, "type", p)?;
    let kind = take_scheduler_kind(at, &kind_name, &mut s, p);
    // What the kind's arm did not take belongs to another kind; the hint
    // says which kinds' arms would take it.
    if kind.is_some() {
        let left: Vec<(&str, bool, String)> = s
            .set_keys()
            .into_iter()
            .map(|key| (key, true, scheduler_kinds_taking(at, &s, key)))
            .collect();
        leftover(at, &format!("{kind_name} schedulers"), &left, p);
    }
    let kind = kind?;
    (p.list.len() == before).then_some(Scheduler {
        name: name?,
        builders: builders?,
        kind,
    })
}

/// The kinds whose arm in [`take_scheduler_kind`] takes `key` out of a
/// scheduler like `s` (for the hint in "not a key of ... (only ...)").
fn scheduler_kinds_taking(at: &str, s: &raw::SchedulerCfg, key: &str) -> String {
    SCHEDULER_KINDS
        .into_iter()
        .filter(|kind| {
            let mut probe = s.clone();
            let mut scratch = Problems::new("", "");
            take_scheduler_kind(at, kind, &mut probe, &mut scratch);
            !probe.set_keys().contains(&key)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The variant for `kind_name`, with the keys it takes taken out of `s`.
fn take_scheduler_kind(
    at: &str,
    kind_name: &str,
    s: &mut raw::SchedulerCfg,
    p: &mut Problems,
) -> Option<SchedulerKind> {
    match kind_name {
        "single_branch" => {
            let branch = s.branch.take().filter(|b| !b.is_empty());
            if branch.is_none() {
                p.add(
                    &format!("{at}.branch"),
                    "required for a single_branch scheduler",
                );
            }
            Some(SchedulerKind::SingleBranch {
                branch: branch.unwrap_or_default(),
                tree_stable_timer: seconds(std::mem::take(&mut s.tree_stable_timer)),
                filter: take_filter(at, s, p),
            })
        }
        "any_branch" => {
            if s.branch.take().is_some() {
                p.add(
                    &format!("{at}.branch"),
                    "an any_branch scheduler takes branch_regex / tag_regex, not branch",
                );
            }
            Some(SchedulerKind::AnyBranch {
                branch_regex: pattern(at, "branch_regex", s.branch_regex.take(), false, p),
                tag_regex: pattern(at, "tag_regex", s.tag_regex.take(), false, p),
                tree_stable_timer: seconds(std::mem::take(&mut s.tree_stable_timer)),
                filter: take_filter(at, s, p),
            })
        }
        "force" => Some(SchedulerKind::Force(ForceScheduler {
            branch: s.branch.take(),
            reason: s
                .reason
                .take()
                .unwrap_or_else(|| DEFAULT_FORCE_REASON.into()),
            button_name: s.button_name.take().unwrap_or_else(|| "Force build".into()),
            properties: lower_force_params(at, std::mem::take(&mut s.properties), p),
        })),
        "periodic" => {
            let period = match s.period.take() {
                None => {
                    p.add(
                        &format!("{at}.period"),
                        "required for a periodic scheduler (seconds)",
                    );
                    1
                }
                Some(0) => {
                    p.add(&format!("{at}.period"), "must be at least 1 second");
                    1
                }
                Some(n) => n,
            };
            Some(SchedulerKind::Periodic {
                branch: s.branch.take(),
                period: seconds(period),
            })
        }
        "nightly" => {
            let mut cron = |k: &str, f: Option<CronField>, max: u32, default: CronSet| match f {
                None => default,
                Some(f) => f.values(max).unwrap_or_else(|e| {
                    p.add(&format!("{at}.{k}"), e);
                    None
                }),
            };
            let minute = cron("minute", s.minute.take(), 59, Some(vec![0]));
            let hour = cron("hour", s.hour.take(), 23, None);
            let day_of_week = cron("day_of_week", s.day_of_week.take(), 6, None);
            let day_of_month = cron("day_of_month", s.day_of_month.take(), 31, None);
            let only_if_changed = std::mem::take(&mut s.only_if_changed);
            let filter = take_filter(at, s, p);
            let filtered = filter != ChangeFilter::default();
            if filtered && !only_if_changed {
                p.add(
                    &format!("{at}.only_if_changed"),
                    "change filters on a nightly scheduler need only_if_changed = true",
                );
            }
            if day_of_month.as_ref().is_some_and(|v| v.contains(&0)) {
                p.add(
                    &format!("{at}.day_of_month"),
                    "days of the month start at 1",
                );
            }
            Some(SchedulerKind::Nightly(Nightly {
                branch: s.branch.take(),
                minute,
                hour,
                day_of_week,
                day_of_month,
                only_if_changed,
                filter,
            }))
        }
        "triggerable" => Some(SchedulerKind::Triggerable),
        "dependent" => {
            let upstream = s.upstream.take().filter(|u| !u.is_empty());
            if upstream.is_none() {
                p.add(
                    &format!("{at}.upstream"),
                    "required for a dependent scheduler (the name of another scheduler)",
                );
            }
            Some(SchedulerKind::Dependent {
                upstream: upstream.unwrap_or_default(),
            })
        }
        other => {
            p.add(
                &format!("{at}.type"),
                format_args!(
                    "{other:?} is not one of {}",
                    SCHEDULER_KINDS.map(|k| format!("{k:?}")).join(", ")
                ),
            );
            None
        }
    }
}

impl raw::SchedulerCfg {
    /// The keys set in `s` that some kinds take and others do not.
    fn set_keys(&self) -> Vec<&'static str> {
        let raw::SchedulerCfg {
            name: _,
            kind: _,
            builders: _,
            branch,
            branch_regex,
            tag_regex,
            tree_stable_timer,
            repository,
            project,
            category,
            files_regex,
            period,
            minute,
            hour,
            day_of_week,
            day_of_month,
            only_if_changed,
            reason,
            button_name,
            properties,
            upstream,
        } = self;
        [
            ("branch", branch.is_some()),
            ("branch_regex", branch_regex.is_some()),
            ("tag_regex", tag_regex.is_some()),
            ("tree_stable_timer", *tree_stable_timer != 0),
            ("repository", repository.is_some()),
            ("project", project.is_some()),
            ("category", category.is_some()),
            ("files_regex", files_regex.is_some()),
            ("period", period.is_some()),
            ("minute", minute.is_some()),
            ("hour", hour.is_some()),
            ("day_of_week", day_of_week.is_some()),
            ("day_of_month", day_of_month.is_some()),
            ("only_if_changed", *only_if_changed),
            ("reason", reason.is_some()),
            ("button_name", button_name.is_some()),
            ("properties", !properties.is_empty()),
            ("upstream", upstream.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect()
    }
}

/// Takes the change filters out of `s`.
fn take_filter(at: &str, s: &mut raw::SchedulerCfg, p: &mut Problems) -> ChangeFilter {
    ChangeFilter {
        repository: s.repository.take(),
        project: s.project.take(),
        category: s.category.take(),
        files_regex: pattern(at, "files_regex", s.files_regex.take(), false, p),
    }
}

fn lower_force_params(at: &str, params: Vec<raw::ForceParam>, p: &mut Problems) -> Vec<ForceParam> {
    lower_named(
        &format!("{at}.properties"),
        "property",
        params,
        |fp| fp.name.clone(),
        p,
        lower_force_param,
    )
}

const PARAM_KINDS: &str = "\"string\", \"text\", \"int\", \"bool\", \"choice\", \"fixed\"";

fn lower_force_param(at: &str, fp: raw::ForceParam, p: &mut Problems) -> Option<ForceParam> {
    let before = p.list.len();
    let name = required(fp.name, at, "name", p)?;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        p.add(
            &format!("{at}.name"),
            format_args!("{name:?}: use only letters, digits, '_', '-' and '.'"),
        );
    }
    if ["branch", "revision", "reason", "repository", "project"].contains(&name.as_str()) {
        p.add(
            &format!("{at}.name"),
            format_args!("{name:?} is a field of every force form, not a property"),
        );
    }
    let type_name = fp.kind.unwrap_or_else(|| "string".into());
    // Each kind's arm takes its keys; what is left belongs to another kind.
    let mut choices = fp.choices;
    let mut regex = fp.regex;
    let kind = match type_name.as_str() {
        "string" => ParamKind::String {
            regex: pattern(at, "regex", regex.take(), true, p),
        },
        "text" => ParamKind::Text {
            regex: pattern(at, "regex", regex.take(), true, p),
        },
        "int" => ParamKind::Int,
        "bool" => ParamKind::Bool,
        "choice" => {
            let choices = std::mem::take(&mut choices);
            if choices.is_empty() {
                p.add(&format!("{at}.choices"), "required for a choice parameter");
            }
            ParamKind::Choice { choices }
        }
        "fixed" => {
            if fp.default.is_none() {
                p.add(&format!("{at}.default"), "required for a fixed parameter");
            }
            ParamKind::Fixed
        }
        other => {
            p.add(
                &format!("{at}.type"),
                format_args!("{other:?} is not one of {PARAM_KINDS}"),
            );
            return None;
        }
    };
    if !choices.is_empty() {
        p.add(
            &format!("{at}.choices"),
            "only a choice parameter takes this key",
        );
    }
    if regex.is_some() {
        p.add(
            &format!("{at}.regex"),
            "only string and text parameters take this key",
        );
    }
    let default = match &fp.default {
        Some(d) => {
            // Shown as JSON (the toml crate is built without its writer).
            let json = serde_json::to_value(d).unwrap_or(serde_json::Value::Null);
            let shown = json.to_string();
            let fits = match &kind {
                ParamKind::Int => d.is_integer(),
                ParamKind::Bool => d.is_bool(),
                ParamKind::Fixed => true,
                ParamKind::String { .. } | ParamKind::Text { .. } | ParamKind::Choice { .. } => {
                    d.is_str()
                }
            };
            if !fits {
                p.add(
                    &format!("{at}.default"),
                    format_args!("{shown} does not fit a {type_name} parameter"),
                );
            } else if let ParamKind::Choice { choices } = &kind {
                if !choices.iter().any(|c| Some(c.as_str()) == d.as_str()) {
                    p.add(
                        &format!("{at}.default"),
                        format_args!("{shown} is not one of the choices"),
                    );
                }
            }
            json
        }
        None => match &kind {
            ParamKind::Bool => serde_json::Value::Bool(false),
            ParamKind::Int => serde_json::Value::Null,
            ParamKind::Choice { choices } => choices
                .first()
                .map(|c| serde_json::Value::String(c.clone()))
                .unwrap_or(serde_json::Value::Null),
            ParamKind::String { .. } | ParamKind::Text { .. } | ParamKind::Fixed => {
                serde_json::Value::String(String::new())
            }
        },
    };
    (p.list.len() == before).then(|| ForceParam {
        label: fp.label.unwrap_or_else(|| name.clone()),
        name,
        default,
        required: fp.required,
        kind,
    })
}

// ---------------------------------------------------------------------------
// Builders and steps

fn lower_builders(
    builders: Vec<raw::BuilderCfg>,
    worker_names: &[&str],
    lock_names: &[&str],
    max_artifact_bytes: u64,
    p: &mut Problems,
) -> Vec<Builder> {
    // Two builders in one directory would clobber each other's checkouts.
    let dirs: Vec<(String, String)> = builders
        .iter()
        .enumerate()
        .filter_map(|(i, b)| match (&b.workerbuilddir, &b.name) {
            (Some(d), _) => Some((format!("builders[{i}].workerbuilddir"), d.clone())),
            (None, Some(n)) => Some((format!("builders[{i}].name"), n.clone())),
            (None, None) => None,
        })
        .collect();
    let out = lower_named(
        "builders",
        "builder name",
        builders,
        |b| b.name.clone(),
        p,
        |at, b, p| lower_builder(at, b, worker_names, lock_names, max_artifact_bytes, p),
    );
    check_unique(
        "build directory",
        dirs.iter().map(|(at, d)| (at.clone(), d.as_str())),
        p,
    );
    out
}

fn lower_builder(
    at: &str,
    b: raw::BuilderCfg,
    worker_names: &[&str],
    lock_names: &[&str],
    max_artifact_bytes: u64,
    p: &mut Problems,
) -> Option<Builder> {
    let before = p.list.len();
    let name = required(b.name, at, "name", p);
    if let Some(name) = &name {
        check_name(&format!("{at}.name"), "builder", name, p);
    }
    if let Some(dir) = &b.workerbuilddir {
        check_name(&format!("{at}.workerbuilddir"), "directory", dir, p);
    }
    let workers = required(b.workers, at, "workers", p);
    if let Some(workers) = &workers {
        if workers.is_empty() {
            p.add(
                &format!("{at}.workers"),
                "names no worker, so its builds would never run",
            );
        }
        for (j, w) in workers.iter().enumerate() {
            if !worker_names.contains(&w.as_str()) {
                p.add(
                    &format!("{at}.workers[{j}]"),
                    format_args!("no worker named {w:?}"),
                );
            }
        }
    }
    let locks = locks::lower_uses(at, b.locks, lock_names, p);
    let steps: Vec<Step> = b
        .steps
        .into_iter()
        .enumerate()
        .filter_map(|(j, mut s)| {
            let at = format!("{at}.steps[{j}]");
            let step_locks = locks::lower_uses(&at, std::mem::take(&mut s.locks), lock_names, p);
            locks::check_step_uses(&at, &locks, &step_locks, p);
            let step = lower_step(&at, j, s, p)?;
            Some(Step {
                locks: step_locks,
                ..step
            })
        })
        .collect();
    let name = name?;
    (p.list.len() == before).then(|| Builder {
        builddir: b.workerbuilddir.unwrap_or_else(|| name.clone()),
        name,
        description: b.description,
        tags: b.tags,
        workers: workers.unwrap_or_default(),
        steps,
        collapse_requests: b.collapse_requests,
        locks,
        max_artifact_bytes: b.max_artifact_bytes.unwrap_or(max_artifact_bytes),
    })
}

fn lower_step(at: &str, index: usize, mut s: raw::StepCfg, p: &mut Problems) -> Option<Step> {
    let before = p.list.len();
    if s.name.as_deref() == Some("") {
        p.add(&format!("{at}.name"), "is empty");
    }
    let kind_name = required(s.kind.take(), at, "type", p)?;
    let env = std::mem::take(&mut s.env);
    let workdir = s.workdir.take();
    let kind = match kind_name.as_str() {
        "git" => {
            let repourl = s.repourl.take().filter(|u| !u.is_empty());
            if repourl.is_none() {
                p.add(&format!("{at}.repourl"), "required for a git step");
            }
            let mode = match s.mode.take().as_deref() {
                None | Some("incremental") => GitMode::Incremental,
                Some("full") => GitMode::Full,
                Some(m) => {
                    p.add(
                        &format!("{at}.mode"),
                        format_args!("{m:?} is not one of \"incremental\", \"full\""),
                    );
                    GitMode::Incremental
                }
            };
            // env and workdir are accepted and unused, as they always were.
            StepKind::Git {
                repourl: repourl.unwrap_or_default(),
                mode,
                branch: s.branch.take(),
            }
        }
        "shell" => StepKind::Shell {
            command: step_command(at, &kind_name, s.command.take(), p),
            env: env.clone(),
            workdir: workdir.clone().unwrap_or_default(),
        },
        "set_property" => {
            let command = step_command(at, &kind_name, s.command.take(), p);
            let property = required(s.property.take(), at, "property", p);
            if let Some(why) = property.as_deref().and_then(property_name_problem) {
                p.add(&format!("{at}.property"), why);
            }
            let regex = pattern(at, "regex", s.regex.take(), false, p);
            if let Some(re) = &regex {
                // Group 0 is the whole match.
                let groups = re.re.captures_len() - 1;
                if groups != 1 {
                    p.add(
                        &format!("{at}.regex"),
                        format_args!(
                            "{:?} has {groups} capture groups; it needs exactly one, \
                             the value to keep (use (?:...) for the others)",
                            re.source
                        ),
                    );
                }
            }
            StepKind::SetProperty {
                command,
                env: env.clone(),
                workdir: workdir.clone().unwrap_or_default(),
                property: property.unwrap_or_default(),
                regex,
            }
        }
        "trigger" => {
            let schedulers = s.schedulers.take().unwrap_or_default();
            if schedulers.is_empty() {
                p.add(
                    &format!("{at}.schedulers"),
                    "required for a trigger step (names of triggerable schedulers)",
                );
            }
            StepKind::Trigger(Trigger {
                schedulers,
                wait: s.wait.take().unwrap_or(false),
                set_properties: s.set_properties.take().unwrap_or_default(),
                copy_properties: s.copy_properties.take().unwrap_or_default(),
            })
        }
        "upload" => super::transfer::lower_upload(at, &mut s, p),
        "download" => super::transfer::lower_download(at, &mut s, p),
        other => {
            p.add(
                &format!("{at}.type"),
                format_args!(
                    "{other:?} is not one of \"git\", \"shell\", \"set_property\", \"trigger\", \"upload\", \"download\""
                ),
            );
            return None;
        }
    };
    // What the kind's arm did not take belongs to the other kind.
    leftover(
        at,
        &format!("{kind_name} steps"),
        &[
            ("command", s.command.is_some(), ""),
            ("repourl", s.repourl.is_some(), ""),
            ("mode", s.mode.is_some(), ""),
            ("branch", s.branch.is_some(), ""),
            ("property", s.property.is_some(), ""),
            ("regex", s.regex.is_some(), ""),
            ("schedulers", s.schedulers.is_some(), ""),
            ("wait", s.wait.is_some(), ""),
            ("set_properties", s.set_properties.is_some(), ""),
            ("copy_properties", s.copy_properties.is_some(), ""),
            ("source", s.source.is_some(), "upload steps"),
            ("dest", s.dest.is_some(), "upload and download steps"),
            ("artifact", s.artifact.is_some(), "download steps"),
            ("build", s.build.is_some(), "download steps"),
            ("file", s.file.is_some(), "download steps"),
        ],
        p,
    );
    if s.timeout == Some(0) {
        p.add(&format!("{at}.timeout"), "must be at least 1 second");
    }
    if let Some(dir) = &workdir {
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
    for k in env.keys() {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            p.add(
                &format!("{at}.env"),
                format_args!("{k:?} is not a valid variable name"),
            );
        }
    }
    (p.list.len() == before).then(|| Step {
        name: display_name(s.name.as_deref(), &kind, index),
        timeout: seconds(s.timeout.unwrap_or(DEFAULT_STEP_TIMEOUT)),
        // Default true (SPEC §2; Buildbot's default is false, but a build
        // that goes on after a failed checkout only adds noise).
        halt_on_failure: s.halt_on_failure.unwrap_or(true),
        flunk_on_failure: s.flunk_on_failure.unwrap_or(true),
        warn_on_failure: s.warn_on_failure.unwrap_or(false),
        flunk_on_warnings: s.flunk_on_warnings.unwrap_or(false),
        always_run: s.always_run.unwrap_or(false),
        warning_exit_codes: s.warning_exit_codes,
        kind,
        // Set by the builder's lowering, which knows the declared locks.
        locks: vec![],
    })
}

/// A shell or set_property step's `command`, checked (`kind` names the
/// step's type in the message).
fn step_command(at: &str, kind: &str, command: Option<Command>, p: &mut Problems) -> Command {
    match &command {
        None => p.add(
            &format!("{at}.command"),
            format_args!("required for a {kind} step"),
        ),
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
    command.unwrap_or(Command::Argv(vec![]))
}

/// Why a set_property step may not set `name`, or None. Letters, digits,
/// `_`, `-` and `.` (the property names Buildbot uses), at most 64; not
/// `got_revision`, which only a git step sets (the gitea_status reporter
/// trusts it as the commit built).
fn property_name_problem(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !ok {
        return Some(format!(
            "{name:?} is not a property name: 1 to 64 letters, digits, '_', '-' or '.'"
        ));
    }
    (name == "got_revision").then(|| "got_revision is set by the git step only".to_string())
}

// ---------------------------------------------------------------------------
// [secrets]

/// `[secrets] dir`, checked; None without a `[secrets]` section.
fn lower_secrets(s: Option<&raw::SecretsCfg>, p: &mut Problems) -> Option<String> {
    let dir = required(s?.dir.clone(), "secrets", "dir", p)?;
    if dir.is_empty() {
        p.add("secrets.dir", "is empty");
        return None;
    }
    Some(dir)
}

/// Each `%(secret:NAME)s` in the steps: a valid name, in a place where it
/// is replaced (a shell or set_property step's command and env), with a
/// `[secrets]` section to read it from. Whether its file is there and
/// usable is checked by `load` (`secret_dir::check_references`), which
/// knows the master directory.
fn check_secret_refs(builders: &[raw::BuilderCfg], have_dir: bool, p: &mut Problems) {
    use super::interpolate::secret_refs;
    use super::secret_dir::name_problem;
    for (i, b) in builders.iter().enumerate() {
        for (j, st) in b.steps.iter().enumerate() {
            let at = format!("builders[{i}].steps[{j}]");
            let replaced = matches!(st.kind.as_deref(), Some("shell" | "set_property"));
            let mut texts: Vec<(String, &str)> = Vec::new();
            match &st.command {
                Some(Command::Shell(line)) => texts.push(("command".into(), line.as_str())),
                Some(Command::Argv(argv)) => texts.extend(
                    argv.iter()
                        .enumerate()
                        .map(|(k, a)| (format!("command[{k}]"), a.as_str())),
                ),
                None => {}
            }
            texts.extend(st.env.iter().map(|(k, v)| (format!("env.{k}"), v.as_str())));
            for (key, text) in [("repourl", &st.repourl), ("branch", &st.branch)] {
                if let Some(t) = text {
                    texts.push((key.into(), t.as_str()));
                }
            }
            for (key, text) in texts {
                for name in secret_refs(text) {
                    let path = format!("{at}.{key}");
                    if !replaced || key == "repourl" || key == "branch" {
                        p.add(
                            &path,
                            "%(secret:...)s is only replaced in a shell or set_property \
                             step's command and env",
                        );
                    } else if let Some(why) = name_problem(&name) {
                        p.add(&path, why);
                    } else if !have_dir {
                        p.add(
                            &path,
                            format_args!(
                                "%(secret:{name})s needs a [secrets] section saying where \
                                 secrets are kept (`[secrets]` `dir = \"secrets\"`)"
                            ),
                        );
                    }
                }
            }
        }
    }
}

/// The step's name as shown in the UI: `name`, else "git" for a git step
/// or the command's first word (without its directory) for a shell step,
/// else `step<index>`.
pub(super) fn display_name(name: Option<&str>, kind: &StepKind, index: usize) -> String {
    if let Some(name) = name.filter(|n| !n.is_empty()) {
        return name.to_string();
    }
    let first = match kind {
        StepKind::Git { .. } => return "git".to_string(),
        // Buildbot's SetPropertyFromCommand is "setproperty"; its command's
        // first word ("git" of `git describe`) would pass for another step.
        StepKind::SetProperty { .. } => return "set_property".to_string(),
        StepKind::Trigger(_) => return "trigger".to_string(),
        StepKind::Upload { .. } => return "upload".to_string(),
        StepKind::Download { .. } => return "download".to_string(),
        StepKind::Shell {
            command: Command::Argv(argv),
            ..
        } => argv.first().map(String::as_str),
        StepKind::Shell {
            command: Command::Shell(line),
            ..
        } => line.split_whitespace().next(),
    };
    match first.map(|w| w.rsplit('/').next().unwrap_or(w)) {
        Some(word) if !word.is_empty() => word.to_string(),
        _ => format!("step{index}"),
    }
}

// ---------------------------------------------------------------------------
// Reporters and change sources

fn lower_reporters(
    reporters: Vec<raw::ReporterCfg>,
    builder_names: &[&str],
    p: &mut Problems,
) -> Vec<Reporter> {
    reporters
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| lower_reporter(&format!("reporters[{i}]"), r, builder_names, p))
        .collect()
}

fn lower_reporter(
    at: &str,
    mut r: raw::ReporterCfg,
    builder_names: &[&str],
    p: &mut Problems,
) -> Option<Reporter> {
    let before = p.list.len();
    for (j, b) in r.builders.iter().enumerate() {
        if !builder_names.contains(&b.as_str()) {
            p.add(
                &format!("{at}.builders[{j}]"),
                format_args!("no builder named {b:?}"),
            );
        }
    }
    let kind_name = required(r.kind.take(), at, "type", p)?;
    let kind = match kind_name.as_str() {
        "gitea_status" => {
            let base_url = r.base_url.take();
            match base_url.as_deref().map(url::Url::parse) {
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
            let token = one_secret(at, "token", r.token.take(), r.token_file.take(), p);
            let context = r.context.take();
            let context_pr = r.context_pr.take();
            for (k, v) in [("context", &context), ("context_pr", &context_pr)] {
                if v.as_deref() == Some("") {
                    p.add(&format!("{at}.{k}"), "is empty");
                }
            }
            let context = context.unwrap_or_else(|| DEFAULT_CONTEXT.into());
            token.map(|token| {
                ReporterKind::GiteaStatus(GiteaStatus {
                    base_url: base_url.unwrap_or_default(),
                    token,
                    context_pr: context_pr.unwrap_or_else(|| context.clone()),
                    context,
                })
            })
        }
        "mail" => {
            let smtp_host = r.smtp_host.take().unwrap_or_default();
            if smtp_host.is_empty() {
                p.add(&format!("{at}.smtp_host"), "required for a mail reporter");
            }
            let smtp_port = r.smtp_port.take();
            if smtp_port == Some(0) {
                p.add(&format!("{at}.smtp_port"), "must be 1-65535");
            }
            let from = r.from.take();
            match &from {
                None => p.add(&format!("{at}.from"), "required for a mail reporter"),
                Some(f) => check_address(&format!("{at}.from"), f, p),
            }
            let to = std::mem::take(&mut r.to);
            if to.is_empty() {
                p.add(
                    &format!("{at}.to"),
                    "required for a mail reporter: a list of addresses",
                );
            }
            for (j, t) in to.iter().enumerate() {
                check_address(&format!("{at}.to[{j}]"), t, p);
            }
            let modes = match r.mode.take() {
                None => vec![MailMode::All],
                Some(m) => m
                    .values()
                    .into_iter()
                    .filter_map(|m| {
                        let found = MailMode::ALL.iter().find(|(n, _)| *n == m);
                        if found.is_none() {
                            let names: Vec<&str> = MailMode::ALL.iter().map(|(n, _)| *n).collect();
                            p.add(
                                &format!("{at}.mode"),
                                format_args!("{m:?} is not one of {}", names.join(", ")),
                            );
                        }
                        found.map(|(_, mode)| *mode)
                    })
                    .collect(),
            };
            let (password, password_file) = (r.smtp_password.take(), r.smtp_password_file.take());
            let login = match r.smtp_user.take() {
                Some(user) => {
                    one_secret(at, "smtp_password", password, password_file, p).map(|pw| (user, pw))
                }
                None => {
                    if password.is_some() || password_file.is_some() {
                        p.add(
                            &format!("{at}.smtp_user"),
                            "required when a password is set",
                        );
                    }
                    None
                }
            };
            let starttls = r.starttls.take().unwrap_or(true);
            Some(ReporterKind::Mail(Mail {
                smtp_host,
                smtp_port: smtp_port.unwrap_or(if starttls { 587 } else { 25 }),
                starttls,
                login,
                from: from.unwrap_or_default(),
                to,
                modes,
            }))
        }
        other => {
            p.add(
                &format!("{at}.type"),
                format_args!("{other:?} is not one of \"gitea_status\", \"mail\""),
            );
            return None;
        }
    };
    // What the kind's arm did not take belongs to the other kind.
    let raw::ReporterCfg {
        kind: _,
        builders: _,
        verify_tls: _,
        base_url,
        token,
        token_file,
        context,
        context_pr,
        smtp_host,
        smtp_port,
        starttls,
        smtp_user,
        smtp_password,
        smtp_password_file,
        from,
        to,
        mode,
    } = &r;
    leftover(
        at,
        &format!("{kind_name} reporters"),
        &[
            ("base_url", base_url.is_some(), ""),
            ("token", token.is_some(), ""),
            ("token_file", token_file.is_some(), ""),
            ("context", context.is_some(), ""),
            ("context_pr", context_pr.is_some(), ""),
            ("smtp_host", smtp_host.is_some(), ""),
            ("smtp_port", smtp_port.is_some(), ""),
            ("starttls", starttls.is_some(), ""),
            ("smtp_user", smtp_user.is_some(), ""),
            ("smtp_password", smtp_password.is_some(), ""),
            ("smtp_password_file", smtp_password_file.is_some(), ""),
            ("from", from.is_some(), ""),
            ("to", !to.is_empty(), ""),
            ("mode", mode.is_some(), ""),
        ],
        p,
    );
    let kind = kind?;
    (p.list.len() == before).then_some(Reporter {
        builders: r.builders,
        verify_tls: r.verify_tls.unwrap_or(true),
        kind,
    })
}

/// A secret is given inline or in a file, not both; None (reported) if
/// neither or it is empty.
fn one_secret(
    at: &str,
    key: &str,
    inline: Option<String>,
    file: Option<String>,
    p: &mut Problems,
) -> Option<Secret> {
    match (inline, file) {
        (Some(_), Some(_)) => p.add(
            &format!("{at}.{key}"),
            format_args!("set either {key} or {key}_file, not both"),
        ),
        (Some(s), None) if s.is_empty() => p.add(&format!("{at}.{key}"), "is empty"),
        (None, Some(f)) if f.is_empty() => p.add(&format!("{at}.{key}_file"), "is empty"),
        (Some(s), None) => return Some(Secret::Inline(s)),
        (None, Some(f)) => return Some(Secret::File(f)),
        (None, None) => p.add(
            &format!("{at}.{key}"),
            format_args!("required: set {key}, or {key}_file naming a file of mode 0600"),
        ),
    }
    None
}

fn check_address(at: &str, addr: &str, p: &mut Problems) {
    if addr.parse::<lettre::message::Mailbox>().is_err() {
        p.add(at, format_args!("{addr:?} is not an e-mail address"));
    }
}

fn lower_change_sources(sources: Vec<raw::ChangeSourceCfg>, p: &mut Problems) -> Vec<ChangeSource> {
    let mut out = Vec::with_capacity(sources.len());
    let mut names = Vec::with_capacity(sources.len());
    for (i, mut c) in sources.into_iter().enumerate() {
        let at = format!("change_source[{i}]");
        let before = p.list.len();
        let kind = required(c.kind.take(), &at, "type", p);
        if c.poll_interval == 0 {
            p.add(&format!("{at}.poll_interval"), "must be at least 1 second");
        }
        let source = match kind.as_deref() {
            Some("git_poller") => lower_git_poller(&at, &mut c, p).map(ChangeSource::GitPoller),
            Some("gitea_pr_poller") => {
                lower_gitea_pr_poller(&at, &mut c, p).map(ChangeSource::GiteaPrPoller)
            }
            None => None,
            Some(other) => {
                p.add(
                    &format!("{at}.type"),
                    format_args!("{other:?} is not one of \"git_poller\", \"gitea_pr_poller\""),
                );
                None
            }
        };
        // What the kind's arm did not take belongs to the other kind.
        if let Some(kind @ ("git_poller" | "gitea_pr_poller")) = kind.as_deref() {
            leftover(
                &at,
                &format!("{kind} change sources"),
                &[
                    ("repourl", c.repourl.is_some(), "git_poller"),
                    ("branches", c.branches.is_some(), "git_poller"),
                    ("project", c.project.is_some(), "git_poller"),
                    ("category", c.category.is_some(), "git_poller"),
                    ("codebase", c.codebase.is_some(), "git_poller"),
                    ("base_url", c.base_url.is_some(), "gitea_pr_poller"),
                    ("repository", c.repository.is_some(), "gitea_pr_poller"),
                    ("token_file", c.token_file.is_some(), "gitea_pr_poller"),
                    ("verify_tls", c.verify_tls.is_some(), "gitea_pr_poller"),
                    (
                        "max_pull_requests",
                        c.max_pull_requests.is_some(),
                        "gitea_pr_poller",
                    ),
                ],
                p,
            );
        }
        let Some(source) = source else { continue };
        names.push((format!("{at}.name"), source.name().to_string()));
        if p.list.len() == before {
            out.push(source);
        }
    }
    check_unique(
        "change source name",
        names.iter().map(|(at, n)| (at.clone(), n.as_str())),
        p,
    );
    out
}

/// A `git_poller`'s keys, taken out of `c`.
fn lower_git_poller(at: &str, c: &mut raw::ChangeSourceCfg, p: &mut Problems) -> Option<GitPoller> {
    // All taken first, so none is left for `leftover` to call foreign.
    let (repourl, branches) = (c.repourl.take(), c.branches.take());
    let (project, category, codebase) = (c.project.take(), c.category.take(), c.codebase.take());
    let repourl = required(repourl, at, "repourl", p)?;
    if repourl.is_empty() {
        p.add(&format!("{at}.repourl"), "is empty");
    } else if repourl.starts_with('-') {
        p.add(&format!("{at}.repourl"), "must not start with '-'");
    }
    let branches = match branches {
        None => Some(vec!["master".to_string()]),
        Some(StrOrList::One(s)) if s == "all" => None,
        Some(b) => Some(b.values().into_iter().map(str::to_string).collect()),
    };
    match &branches {
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
    Some(GitPoller {
        name: c.name.take().unwrap_or_else(|| repourl.clone()),
        repourl,
        branches,
        poll_interval: seconds(c.poll_interval),
        poll_at_launch: c.poll_at_launch,
        project: project.unwrap_or_default(),
        category,
        codebase: codebase.unwrap_or_default(),
    })
}

/// The most `max_pull_requests` may be: each poll reads at most this many
/// pull requests (in pages of [`crate::master::pr_poller::PAGE`]).
const MAX_MAX_PULL_REQUESTS: usize = 5_000;

/// A `gitea_pr_poller`'s keys, taken out of `c`.
fn lower_gitea_pr_poller(
    at: &str,
    c: &mut raw::ChangeSourceCfg,
    p: &mut Problems,
) -> Option<GiteaPrPoller> {
    let base_url = required(c.base_url.take(), at, "base_url", p);
    if let Some(u) = &base_url {
        match url::Url::parse(u) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            _ => p.add(
                &format!("{at}.base_url"),
                "must be an http:// or https:// URL (e.g. \"https://git.example.org\")",
            ),
        }
    }
    let repository = required(c.repository.take(), at, "repository", p);
    // One path segment each: they go into the API URL's path.
    let owner_repo = repository.as_deref().and_then(|r| {
        let segment = |s: &str| {
            !s.is_empty() && s != "." && s != ".." && !s.chars().any(|ch| ch.is_control())
        };
        match r.split_once('/') {
            Some((o, n)) if segment(o) && segment(n) && !n.contains('/') => {
                Some((o.to_string(), n.to_string()))
            }
            _ => {
                p.add(
                    &format!("{at}.repository"),
                    format_args!("{r:?} is not \"owner/repository\""),
                );
                None
            }
        }
    });
    let token = match c.token_file.take() {
        None => {
            p.add(
                &format!("{at}.token_file"),
                "required: a file of mode 0600 holding a Gitea API token that may read the repository",
            );
            None
        }
        Some(f) if f.is_empty() => {
            p.add(&format!("{at}.token_file"), "is empty");
            None
        }
        Some(f) => Some(Secret::File(f)),
    };
    let verify_tls = c.verify_tls.take().unwrap_or(true);
    let max_pull_requests = c.max_pull_requests.take().unwrap_or(200);
    if !(1..=MAX_MAX_PULL_REQUESTS).contains(&max_pull_requests) {
        p.add(
            &format!("{at}.max_pull_requests"),
            format_args!("{max_pull_requests} is not between 1 and {MAX_MAX_PULL_REQUESTS}"),
        );
    }
    let base_url = base_url?;
    let (owner, repo) = owner_repo?;
    Some(GiteaPrPoller {
        name: c.name.take().unwrap_or_else(|| {
            format!(
                "{}/api/v1/repos/{owner}/{repo}/pulls",
                base_url.trim_end_matches('/')
            )
        }),
        base_url,
        owner,
        repo,
        token: token?,
        verify_tls,
        poll_interval: seconds(c.poll_interval),
        poll_at_launch: c.poll_at_launch,
        max_pull_requests,
    })
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
        ("artifact_horizon_days", j.artifact_horizon_days),
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

/// A key that names one of a few `choices`, the first being the default
/// when the key is absent; anything else is a problem naming the choices,
/// and the default stands in so the rest is still checked.
pub(super) fn one_of<T: Copy>(
    p: &mut Problems,
    path: &str,
    value: Option<&str>,
    choices: &[(&str, T)],
) -> T {
    let default = choices[0].1;
    let Some(v) = value else {
        return default;
    };
    if let Some((_, t)) = choices.iter().find(|(name, _)| *name == v) {
        return *t;
    }
    let names: Vec<String> = choices
        .iter()
        .map(|(name, _)| format!("{name:?}"))
        .collect();
    p.add(
        path,
        format_args!("{v:?} is not one of {}", names.join(", ")),
    );
    default
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
pub(super) fn check_name(path: &str, what: &str, name: &str, p: &mut Problems) {
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
pub(super) fn check_unique<'a>(
    what: &str,
    names: impl Iterator<Item = (String, &'a str)>,
    p: &mut Problems,
) {
    let mut first: HashMap<&str, String> = HashMap::new();
    for (path, name) in names {
        if name.is_empty() {
            continue;
        }
        match first.get(name) {
            Some(prev) => {
                let prev = p.place(prev);
                p.add(
                    &path,
                    format_args!("duplicate {what} {name:?} (also {prev})"),
                )
            }
            None => {
                first.insert(name, path);
            }
        }
    }
}
