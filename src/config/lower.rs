//! Pass 3: meaning. Checks what types cannot say (names, references,
//! ranges, which keys belong to which kind) and reports every problem with
//! its key path.

use super::problems::{one_line, Problems};
use super::raw::*;
use super::Config;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

// ---------------------------------------------------------------------------
// Pass 3: meaning

pub(super) fn validate(cfg: &Config, p: &mut Problems) {
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
