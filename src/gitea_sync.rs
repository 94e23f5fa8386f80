//! `minibot gitea sync MASTERDIR`: sets up the Gitea webhook of every
//! repository the config builds, through Gitea's API, so nobody clicks
//! through each repository's settings (issue 19 point 8).
//!
//! Owns: which repositories (the builders' git step `repourl`s on the Gitea
//! host of a `gitea_status` reporter, whose `base_url` and token it reuses),
//! what their hook must be (`buildbot_url` + `change_hook/gitea`, the
//! `[www.change_hook_dialects.gitea]` secret, events `push` and
//! `pull_request`, content type json, active), and the report. No channels:
//! a one-shot command, blocking HTTP with the reporter's timeouts.
//!
//! Gitea's API (swagger `templates/swagger/v1_json.tmpl`):
//! `GET/POST /api/v1/repos/{owner}/{repo}/hooks`,
//! `PATCH /api/v1/repos/{owner}/{repo}/hooks/{id}`, `Authorization: token`.
//!
//! Idempotence: only a hook whose `config.url` is minibot's is ever
//! touched; none → created; one that differs (content type, events,
//! active) → patched; else unchanged, and nothing is written. Gitea never
//! returns a hook's secret, and its edit API cannot set one, so a changed
//! secret can neither be seen nor patched: `--update-secret` (after
//! changing it in master.cfg) replaces the hook, a new one created with
//! the secret before the old one is deleted; so does a hook of another
//! type.

use crate::config::{self, Config, ReporterKind};
use crate::master::reporters::gitea::{builder_repourl, owner_repo_from_url, Target};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::path::Path;

/// The events minibot's hook needs. Gitea answers a hook created with
/// `pull_request` with the detailed list (`pull_request_sync`, ...), so a
/// hook matches when it has at least these.
const EVENTS: [&str; 2] = ["push", "pull_request"];

/// What `sync` may do.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Read only: report what would change.
    pub dry_run: bool,
    /// Send the secret to hooks that otherwise match.
    pub update_secret: bool,
}

/// What happened to one repository's hook.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Created,
    /// Patched in place: the fields that differed (the secret is kept).
    Updated(Vec<String>),
    /// Created anew and the old one deleted: `secret` (`--update-secret`)
    /// and the fields that differed, since Gitea cannot edit a secret.
    Replaced(Vec<String>),
    Unchanged,
    /// Gitea's answer (HTTP status and its message) or the transport error.
    Error(String),
}

/// The report of one run.
#[derive(Debug, Default)]
pub struct Report {
    /// The hook URL every repository gets.
    pub hook_url: String,
    /// ("owner/repo on base_url", outcome), in config order.
    pub repos: Vec<(String, Outcome)>,
    /// (repourl, why it was skipped).
    pub skipped: Vec<(String, String)>,
}

impl Report {
    pub fn has_errors(&self) -> bool {
        self.repos
            .iter()
            .any(|(_, o)| matches!(o, Outcome::Error(_)))
    }

    /// The lines to print; `dry_run` words the changes as "would".
    pub fn lines(&self, dry_run: bool) -> Vec<String> {
        let (create, update, replace) = if dry_run {
            ("would create", "would update", "would replace")
        } else {
            ("created", "updated", "replaced")
        };
        let mut out = vec![format!("hook URL: {}", self.hook_url)];
        for (repo, o) in &self.repos {
            out.push(match o {
                Outcome::Created => format!("{repo}: {create}"),
                Outcome::Updated(fields) => format!("{repo}: {update} ({})", fields.join(", ")),
                Outcome::Replaced(fields) => {
                    format!("{repo}: {replace} ({})", fields.join(", "))
                }
                Outcome::Unchanged => format!("{repo}: unchanged"),
                Outcome::Error(e) => format!("{repo}: error: {e}"),
            });
        }
        for (url, why) in &self.skipped {
            out.push(format!("skipped {url}: {why}"));
        }
        out
    }
}

/// One Gitea repository to set up.
struct Repo {
    gitea: usize,
    owner: String,
    name: String,
}

/// Reads `master_dir/master.cfg` and brings each repository's hook in line
/// (or, with `dry_run`, only finds what would change). An error is returned
/// for a config that cannot be used; a repository Gitea refuses is an
/// `Outcome::Error` in the report.
pub fn sync(master_dir: &Path, opts: Options) -> Result<Report> {
    let cfg = config::load(&master_dir.join(crate::master::CONFIG_FILE))?;
    let hook_url = hook_url(&cfg)?;
    let secret = cfg
        .www
        .change_hook_dialects
        .gitea
        .as_ref()
        .and_then(|g| g.secret.clone())
        .filter(|s| !s.is_empty())
        .context(
            "master.cfg has no [www.change_hook_dialects.gitea] secret: \
             the hooks would be refused",
        )?;
    let mut giteas: Vec<Target> = Vec::new();
    for r in &cfg.reporters {
        match &r.kind {
            ReporterKind::GiteaStatus(g) => {
                let t = Target::new(g, r.verify_tls, master_dir)
                    .with_context(|| format!("gitea_status reporter for {}", g.base_url))?;
                if !giteas.iter().any(|o| o.base_url == t.base_url) {
                    giteas.push(t);
                }
            }
            ReporterKind::Mail(_) => {}
        }
    }
    if giteas.is_empty() {
        bail!(
            "master.cfg has no gitea_status reporter: `gitea sync` uses its base_url and \
             token (a Gitea API token allowed to write the repositories' settings)"
        );
    }
    let mut report = Report {
        hook_url: hook_url.clone(),
        ..Report::default()
    };
    let mut repos: Vec<Repo> = Vec::new();
    for b in &cfg.builders {
        let Some(url) = b.git_repourl() else { continue };
        if builder_repourl(b).is_none() {
            report.skipped.push((
                url.to_string(),
                "chosen by properties (%(prop:...)), not by master.cfg".into(),
            ));
            continue;
        }
        let host = repo_host(url);
        let on = giteas.iter().position(|g| {
            host.is_some() && g.base_url.host_str().map(str::to_ascii_lowercase) == host
        });
        match (on, owner_repo_from_url(url)) {
            (Some(gitea), Some((owner, name))) => {
                if !repos
                    .iter()
                    .any(|r| r.gitea == gitea && r.owner == owner && r.name == name)
                {
                    repos.push(Repo { gitea, owner, name });
                }
            }
            (None, _) => {
                let hosts: Vec<&str> = giteas.iter().map(|g| g.base_url.as_str()).collect();
                if !report.skipped.iter().any(|(u, _)| u == url) {
                    report.skipped.push((
                        url.to_string(),
                        format!("not on this Gitea ({})", hosts.join(", ")),
                    ));
                }
            }
            (Some(_), None) => report
                .skipped
                .push((url.to_string(), "no owner/repository in the URL".into())),
        }
    }
    for r in &repos {
        let g = &giteas[r.gitea];
        let outcome = sync_one(g, &r.owner, &r.name, &hook_url, &secret, opts)
            .unwrap_or_else(|e| Outcome::Error(format!("{e:#}")));
        let base = g.base_url.as_str().trim_end_matches('/');
        report
            .repos
            .push((format!("{}/{} on {base}", r.owner, r.name), outcome));
    }
    Ok(report)
}

/// `buildbot_url` + `change_hook/gitea` (the route in `web::www`).
fn hook_url(cfg: &Config) -> Result<String> {
    let base = cfg.buildbot_url.as_deref().context(
        "master.cfg has no buildbot_url: Gitea needs the master's public address for the hook",
    )?;
    let mut u = url::Url::parse(base).with_context(|| format!("buildbot_url {base:?}"))?;
    if let Ok(mut segs) = u.path_segments_mut() {
        segs.pop_if_empty().extend(["change_hook", "gitea"]);
    }
    Ok(u.to_string())
}

/// The host of a clone URL, lowercased: `https://host/o/r`,
/// `ssh://git@host:2222/o/r.git`, or scp-like `git@host:o/r.git`.
fn repo_host(u: &str) -> Option<String> {
    match url::Url::parse(u) {
        Ok(p) if p.has_host() => p.host_str().map(str::to_ascii_lowercase),
        Ok(_) => None,
        Err(_) => {
            let (before, _) = u.split_once(':')?;
            let host = before.rsplit('@').next()?;
            (!host.is_empty() && !host.contains('/')).then(|| host.to_ascii_lowercase())
        }
    }
}

/// The body minibot's hook should have (CreateHookOption; EditHookOption
/// takes the same fields but `type`).
fn wanted(hook_url: &str, secret: &str) -> Value {
    json!({
        "type": "gitea",
        "config": {"url": hook_url, "content_type": "json", "secret": secret},
        "events": EVENTS,
        "active": true,
    })
}

/// The fields of an existing hook that differ from minibot's.
fn differences(hook: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if hook["type"] != "gitea" {
        out.push(format!("type {} → \"gitea\"", hook["type"]));
    }
    if hook["config"]["content_type"] != "json" {
        out.push(format!(
            "content_type {} → \"json\"",
            hook["config"]["content_type"]
        ));
    }
    let has = |e: &str| {
        hook["events"]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v == e))
    };
    let missing: Vec<&str> = EVENTS.iter().copied().filter(|e| !has(e)).collect();
    if !missing.is_empty() {
        out.push(format!("events (missing {})", missing.join(", ")));
    }
    if hook["active"] != true {
        out.push("active".into());
    }
    out
}

fn sync_one(
    g: &Target,
    owner: &str,
    repo: &str,
    hook_url: &str,
    secret: &str,
    opts: Options,
) -> Result<Outcome> {
    let auth = format!("token {}", g.token);
    let list_url = g.repo_api_url(owner, repo, &["hooks"]);
    // Gitea pages the list (default and maximum 50 a page); a repository
    // with more hooks than that is read page by page.
    let mut hooks: Vec<Value> = Vec::new();
    for page in 1..=100 {
        let mut u = list_url.clone();
        u.query_pairs_mut()
            .append_pair("page", &page.to_string())
            .append_pair("limit", "50");
        let resp = g
            .agent
            .get(u.as_str())
            .header("Authorization", &auth)
            .call();
        let got = answer(resp, "listing hooks")?;
        let Value::Array(items) = got else {
            bail!("listing hooks: Gitea answered something other than a list");
        };
        let n = items.len();
        hooks.extend(items);
        if n < 50 {
            break;
        }
    }
    let ours = hooks
        .iter()
        .find(|h| h["config"]["url"].as_str() == Some(hook_url));
    let body = wanted(hook_url, secret);
    let create = |what: &str| {
        let resp = g
            .agent
            .post(list_url.as_str())
            .header("Authorization", &auth)
            .send_json(&body);
        answer(resp, what)
    };
    let Some(hook) = ours else {
        if !opts.dry_run {
            create("creating the hook")?;
        }
        return Ok(Outcome::Created);
    };
    let id = hook["id"]
        .as_i64()
        .context("Gitea listed the hook without a numeric id")?;
    let id_url = g.repo_api_url(owner, repo, &["hooks", &id.to_string()]);
    let mut fields = differences(hook);
    // Gitea's EditHookOption cannot change a hook's type or secret (its
    // editHook reads only `url` and `content_type` from `config`): those
    // take a new hook, created before the old one is deleted so pushes
    // are never left without one.
    let replace = opts.update_secret || hook["type"] != "gitea";
    if replace {
        fields.push("secret".into());
        if !opts.dry_run {
            create("creating the replacement hook")?;
            let resp = g
                .agent
                .delete(id_url.as_str())
                .header("Authorization", &auth)
                .call();
            answer(resp, &format!("deleting the replaced hook {id}"))?;
        }
        return Ok(Outcome::Replaced(fields));
    }
    if fields.is_empty() {
        return Ok(Outcome::Unchanged);
    }
    if !opts.dry_run {
        let edit = json!({
            "config": {"url": hook_url, "content_type": "json"},
            "events": EVENTS,
            "active": true,
        });
        let resp = g
            .agent
            .patch(id_url.as_str())
            .header("Authorization", &auth)
            .send_json(&edit);
        answer(resp, &format!("updating hook {id}"))?;
    }
    Ok(Outcome::Updated(fields))
}

/// The JSON of a 2xx answer, else an error with the status and Gitea's
/// `message`.
fn answer(res: Result<ureq::http::Response<ureq::Body>, ureq::Error>, what: &str) -> Result<Value> {
    let mut resp = res.with_context(|| format!("{what}: cannot reach Gitea"))?;
    let code = resp.status().as_u16();
    let text = resp
        .body_mut()
        .with_config()
        .limit(4 * 1024 * 1024)
        .read_to_string()
        .with_context(|| format!("{what}: reading Gitea's answer (HTTP {code})"))?;
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if !(200..300).contains(&code) {
        let msg = v["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| text.chars().take(200).collect());
        let hint = match code {
            401 => " (the token is wrong or expired)",
            403 => " (the token may not change this repository's settings)",
            404 => " (no such repository, or the token cannot see it)",
            _ => "",
        };
        bail!("{what}: HTTP {code}{hint}: {msg}");
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_clone_urls() {
        for (u, h) in [
            ("https://Git.Example.org/o/r.git", Some("git.example.org")),
            (
                "ssh://git@git.example.org:2222/o/r.git",
                Some("git.example.org"),
            ),
            ("git@git.example.org:o/r.git", Some("git.example.org")),
            ("/srv/git/r.git", None),
        ] {
            assert_eq!(repo_host(u).as_deref(), h, "{u}");
        }
    }

    #[test]
    fn detailed_events_match_and_missing_ones_are_named() {
        let mut h = json!({"type": "gitea", "active": true,
            "config": {"url": "u", "content_type": "json"},
            "events": ["push", "pull_request", "pull_request_sync"]});
        assert!(differences(&h).is_empty());
        h["events"] = json!(["push"]);
        h["config"]["content_type"] = json!("form");
        assert_eq!(
            differences(&h),
            vec![
                "content_type \"form\" → \"json\"".to_string(),
                "events (missing pull_request)".into()
            ]
        );
    }
}
