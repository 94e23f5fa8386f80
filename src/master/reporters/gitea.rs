//! The `gitea_status` reporter: commit statuses through Gitea's API,
//! `POST /api/v1/repos/{owner}/{repo}/statuses/{sha}` with
//! `Authorization: token ...` (as the buildbot_gitea plugin).
//!
//! Owns: turning a build into a status (`status_for`, pure) and sending it
//! (`StatusJob`, run by the `gitea-status` outbox thread in `reporters`).
//! `pending` when a build starts, then `success`, `warning`, `failure` or
//! `error` from its result.
//!
//! Where a status goes is a security decision: it is posted with the
//! operator's token, so whoever can choose the repository or commit can
//! write statuses anywhere that token reaches. Anything a request supplies
//! (base-dialect fields and properties, force-form parameters, rebuilt
//! buildsets, which copy both) is therefore never used to pick them:
//!
//! - repository: the one of the build's newest change when that change came
//!   from a signed Gitea/GitHub hook or the `gitea_pr_poller` (which asks
//!   Gitea's API for the configured repository; its `owner` / `repository_name`
//!   properties, which for a pull request, also from a fork, name the base
//!   repository, else its repository URL); otherwise the repository the
//!   builder's own git step checks out (a `repourl` in master.cfg without
//!   `%(prop:...)`); otherwise no status.
//! - commit: for a signed pull-request change, its head (`head_sha`): a
//!   PR tested as merged checks out a merge commit that only the worker
//!   knows, and Gitea shows a PR's statuses on its head. Otherwise
//!   `got_revision`, the commit the git step reported checking out
//!   (set by the master, source `build::GOT_REVISION_SOURCE`), else the
//!   signed change's revision; otherwise no status. So a build from an
//!   unsigned change or the force form gets no `pending` (its commit is
//!   only known once checked out), only the final status, on what it built.

use super::{Delivery, Failure, Final};
use crate::config::{Builder, GiteaStatus, Secret};
use crate::db::BuildReport;
use crate::master::build::{interpolate, GOT_REVISION_SOURCE};
use crate::model::BuildResult;
use anyhow::{Context, Result};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A Gitea server to post to (also used by `gitea_sync`).
pub(crate) struct Target {
    pub(crate) base_url: url::Url,
    pub(crate) token: String,
    pub(crate) agent: ureq::Agent,
}

impl Target {
    pub(crate) fn new(cfg: &GiteaStatus, verify_tls: bool, master_dir: &Path) -> Result<Target> {
        Target::connect(
            &cfg.base_url,
            &cfg.token,
            verify_tls,
            master_dir,
            "gitea_status",
        )
    }

    /// A Gitea at `base` with the token `token`; `who` names the user
    /// (`gitea_status`, `gitea_pr_poller`) in the log. Every request is
    /// bounded in time: 10 s to connect, 30 s in all.
    pub(crate) fn connect(
        base: &str,
        token: &Secret,
        verify_tls: bool,
        master_dir: &Path,
        who: &str,
    ) -> Result<Target> {
        let base_url = url::Url::parse(base).with_context(|| format!("base_url {base:?}"))?;
        let token = token.read(master_dir).context("token")?;
        if !verify_tls {
            log::warn!("{who} for {base}: TLS certificates are not checked (verify_tls = false)");
        }
        Ok(Target {
            base_url,
            token,
            agent: agent(verify_tls, Duration::from_secs(30)),
        })
    }
}

/// An HTTP client for a Gitea server (statuses, `gitea_sync`, the Gitea
/// login): 10 s to connect, `timeout` for a whole request and answer.
/// Gitea's error answers are read by the caller (their text goes to the
/// log), not turned into bare status errors.
pub(crate) fn agent(verify_tls: bool, timeout: Duration) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_global(Some(timeout))
        .user_agent(concat!("minibot/", env!("CARGO_PKG_VERSION")))
        .http_status_as_error(false)
        // `verify_tls = false` (a Gitea with a self-signed certificate):
        // signatures are still checked in the handshake, only the chain of
        // trust is skipped.
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .disable_verification(!verify_tls)
                .build(),
        )
        .build();
    ureq::Agent::new_with_config(config)
}

/// One status, ready to post.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StatusPost {
    pub owner: String,
    pub repo: String,
    pub sha: String,
    /// The JSON body: state, target_url, description, context.
    pub body: serde_json::Value,
}

/// The Gitea state for a finished build's result.
pub(crate) fn state_for(results: BuildResult) -> &'static str {
    match results {
        BuildResult::Success => "success",
        BuildResult::Warnings => "warning",
        BuildResult::Failure => "failure",
        // Gitea has no "skipped"; a build that checked nothing is no success.
        BuildResult::Skipped => "warning",
        // Retried: a new build will report.
        BuildResult::Retry => "pending",
        BuildResult::Exception | BuildResult::Cancelled => "error",
    }
}

/// (owner, repository) from a clone URL: `ssh://git@host:2222/o/r.git`,
/// `git@host:o/r.git`, `https://host/o/r.git`, `https://host/sub/o/r`.
pub(crate) fn owner_repo_from_url(u: &str) -> Option<(String, String)> {
    let path = match url::Url::parse(u) {
        Ok(parsed) if parsed.has_host() || parsed.scheme() == "file" => parsed.path().to_string(),
        // scp-like `user@host:owner/repo.git`
        _ => u.split_once(':').map(|(_, p)| p.to_string())?,
    };
    let mut parts = path.trim_end_matches('/').rsplit('/');
    let repo = parts.next()?.trim_end_matches(".git").to_string();
    let owner = parts.next()?.to_string();
    (!repo.is_empty() && !owner.is_empty()).then_some((owner, repo))
}

/// The repository a builder's git step checks out, when master.cfg alone
/// names it: the first git step's `repourl`, unless it interpolates
/// properties (then a request could name it).
pub(crate) fn builder_repourl(builder: &Builder) -> Option<&str> {
    builder.git_repourl().filter(|u| !u.contains("%("))
}

/// Where a status for `rep` goes: (owner, repo, sha), or why not. See the
/// module comment for the rules; `builder_repo` is [`builder_repourl`] of
/// the build's builder.
pub(crate) fn status_target(
    rep: &BuildReport,
    builder_repo: Option<&str>,
) -> Result<(String, String, String), &'static str> {
    // The signed change is only trusted if it is the one the source stamp
    // was made from (a scheduler takes the newest change's revision).
    let signed = rep
        .last_change
        .as_ref()
        .filter(|c| c.signed && c.revision.is_some() && c.revision == rep.ss.revision);
    let prop = |n: &str| match signed?.properties.get(n).map(|(v, _)| v) {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    let (owner, repo) = match signed {
        Some(c) => match (prop("owner"), prop("repository_name")) {
            (Some(o), Some(r)) => (o, r),
            _ => owner_repo_from_url(&c.repository)
                .ok_or("the signed change's repository URL names no owner/repository")?,
        },
        None => owner_repo_from_url(builder_repo.ok_or(
            "no signed Gitea/GitHub change and no fixed repourl in the builder's git step",
        )?)
        .ok_or("the builder's repourl names no owner/repository")?,
    };
    let got = match rep.properties.get("got_revision") {
        Some((serde_json::Value::String(s), src))
            if src == GOT_REVISION_SOURCE && !s.is_empty() =>
        {
            Some(s.clone())
        }
        _ => None,
    };
    let pr_head = signed
        .filter(|c| c.properties.contains_key("pr_number"))
        .and_then(|_| prop("head_sha"));
    let sha = pr_head
        .or(got)
        .or_else(|| signed.and_then(|c| c.revision.clone()))
        .filter(|s| !s.is_empty())
        .ok_or("the commit is not known yet (no got_revision from a git step, no signed change)")?;
    Ok((owner, repo, sha))
}

/// The status to post for `rep` (`finished` or just started), or why there
/// is none.
pub(crate) fn status_for(
    cfg: &GiteaStatus,
    rep: &BuildReport,
    url: &str,
    finished: bool,
    builder_repo: Option<&str>,
) -> Result<StatusPost, &'static str> {
    let (owner, repo, sha) = status_target(rep, builder_repo)?;
    let is_pr = rep.properties.contains_key("pr_number");
    let template = if is_pr { &cfg.context_pr } else { &cfg.context };
    let context = interpolate(template, &rep.properties);
    let (state, description) = match (finished, rep.results) {
        (true, Some(r)) => {
            let d = if r == BuildResult::Success {
                format!("Build #{} succeeded", rep.number)
            } else {
                format!("Build #{}: {}", rep.number, rep.state_string)
            };
            (state_for(r), d)
        }
        _ => ("pending", format!("Build #{} started", rep.number)),
    };
    Ok(StatusPost {
        owner,
        repo,
        sha,
        body: json!({
            "state": state,
            "target_url": url,
            "description": description.chars().take(250).collect::<String>(),
            "context": context,
        }),
    })
}

pub(crate) struct StatusJob {
    pub target: Arc<Target>,
    pub post: StatusPost,
    /// Set for a finished build's status (recorded once settled).
    pub settles: Option<Final>,
}

impl Target {
    /// `{base_url}/api/v1/repos/{owner}/{repo}/{rest...}`, keeping a sub
    /// path of the base URL and escaping each segment.
    pub(crate) fn repo_api_url(&self, owner: &str, repo: &str, rest: &[&str]) -> url::Url {
        let mut u = self.base_url.clone();
        if let Ok(mut segs) = u.path_segments_mut() {
            segs.pop_if_empty()
                .extend(["api", "v1", "repos", owner, repo])
                .extend(rest);
        }
        u
    }
}

impl StatusJob {
    fn url(&self) -> url::Url {
        self.target.repo_api_url(
            &self.post.owner,
            &self.post.repo,
            &["statuses", &self.post.sha],
        )
    }
}

impl Delivery for StatusJob {
    fn key(&self) -> Option<String> {
        Some(format!("{} {}", self.url(), self.post.body["context"]))
    }

    fn settles(&self) -> Option<&Final> {
        self.settles.as_ref()
    }

    fn describe(&self) -> String {
        format!(
            "gitea status {} for {}/{}@{}",
            self.post.body["state"], self.post.owner, self.post.repo, self.post.sha
        )
    }

    fn attempt(&self) -> Result<(), Failure> {
        let res = self
            .target
            .agent
            .post(self.url().as_str())
            .header("Authorization", &format!("token {}", self.target.token))
            .send_json(&self.post.body);
        let mut resp = match res {
            Ok(r) => r,
            Err(e) => return Err(Failure::Retry(e.to_string())),
        };
        let code = resp.status().as_u16();
        if resp.status().is_success() {
            return Ok(());
        }
        let body = resp
            .body_mut()
            .with_config()
            .limit(64 * 1024)
            .read_to_string()
            .unwrap_or_default();
        let msg = format!(
            "HTTP {code}: {}",
            body.chars().take(200).collect::<String>()
        );
        // 5xx also covers Gitea's answer to an unknown sha (500): bounded
        // by the retry limit.
        if code >= 500 || code == 408 || code == 429 {
            Err(Failure::Retry(msg))
        } else {
            Err(Failure::Permanent(msg))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{ChangeSource, Props, SourceStamp};

    fn cfg(extra: &str) -> GiteaStatus {
        let c = crate::config::test_config(&format!(
            "[[reporters]]\ntype = 'gitea_status'\nbase_url = 'https://git.example.org'\ntoken = 't'\n{extra}"
        ));
        let crate::config::ReporterKind::GiteaStatus(g) = &c.reporters[0].kind else {
            panic!("not a gitea_status reporter")
        };
        g.clone()
    }

    const REPO: &str = "ssh://git@git.example.org:2222/isabell/hello-world.git";

    /// A build of a signed Gitea change at abc123 whose change properties
    /// are `props` (also copied into the build's, as the scheduler does).
    fn report(props: &[(&str, serde_json::Value)]) -> BuildReport {
        let mut p = Props::new();
        p.insert("buildername".into(), ("runtests".into(), "Builder".into()));
        let mut change_props = Props::new();
        for (k, v) in props {
            p.insert(k.to_string(), (v.clone(), "Change".into()));
            change_props.insert(k.to_string(), (v.clone(), "Change".into()));
        }
        BuildReport {
            builder: "runtests".into(),
            number: 42,
            properties: p,
            ss: SourceStamp {
                revision: Some("abc123".into()),
                repository: REPO.into(),
                ..Default::default()
            },
            last_change: Some(ChangeSource {
                revision: Some("abc123".into()),
                repository: REPO.into(),
                properties: change_props,
                signed: true,
            }),
            ..Default::default()
        }
    }

    fn target(rep: &BuildReport, builder_repo: Option<&str>) -> Option<(String, String, String)> {
        status_target(rep, builder_repo).ok()
    }

    fn t(o: &str, r: &str, sha: &str) -> Option<(String, String, String)> {
        Some((o.into(), r.into(), sha.into()))
    }

    #[test]
    fn builder_repourl_only_when_master_cfg_names_it() {
        let b = |steps: &str| -> Builder {
            crate::config::test_config(&format!(
                "[[builders]]\nname = 'b'\nworkers = ['w']\n{steps}"
            ))
            .builders[0]
                .clone()
        };
        let git = |u: &str| format!("[[builders.steps]]\ntype = 'git'\nrepourl = '{u}'\n");
        let shell = "[[builders.steps]]\ntype = 'shell'\ncommand = 'make'\n";
        assert_eq!(
            builder_repourl(&b(&format!(
                "{shell}{}{}",
                git("https://g/o/r"),
                git("https://g/x/y")
            ))),
            Some("https://g/o/r")
        );
        assert_eq!(builder_repourl(&b(&git("%(prop:repository)s"))), None);
        assert_eq!(builder_repourl(&b(shell)), None);
    }

    #[test]
    fn request_properties_never_choose_the_repository_or_commit() {
        let ours = Some("https://git.example.org/isabell/hello-world.git");
        let sha = "c".repeat(40);
        let got = |rep: &mut BuildReport, src: &str| {
            rep.properties
                .insert("got_revision".into(), (sha.clone().into(), src.to_string()));
        };
        // An unsigned (base-dialect) change naming another repository and
        // commit, by field and by property: only the builder's own repo,
        // and only the commit its git step reported.
        let mut rep = report(&[
            ("owner", json!("victim")),
            ("repository_name", json!("other")),
            ("got_revision", json!("d".repeat(40))),
        ]);
        rep.ss.repository = "https://git.example.org/victim/other.git".into();
        rep.ss.revision = Some("e".repeat(40));
        if let Some(c) = rep.last_change.as_mut() {
            c.signed = false;
            c.repository = rep.ss.repository.clone();
            c.revision = rep.ss.revision.clone();
        }
        assert_eq!(
            target(&rep, ours),
            None,
            "no commit known before the checkout"
        );
        assert_eq!(target(&rep, None), None);
        got(&mut rep, GOT_REVISION_SOURCE);
        assert_eq!(target(&rep, ours), t("isabell", "hello-world", &sha));
        assert_eq!(target(&rep, None), None, "no fixed repourl, nothing signed");

        // A forced build: no change at all; owner is the logged-in user.
        let mut rep = report(&[]);
        rep.last_change = None;
        rep.properties.insert(
            "owner".into(),
            (json!("mallory"), "Force Build Form".into()),
        );
        rep.properties.insert(
            "repository_name".into(),
            (json!("other"), "Force Build Form".into()),
        );
        rep.ss.repository = "https://git.example.org/victim/other.git".into();
        assert_eq!(target(&rep, ours), None);
        // A got_revision property from a request is not the master's.
        got(&mut rep, "Force Build Form");
        assert_eq!(target(&rep, ours), None);
        got(&mut rep, GOT_REVISION_SOURCE);
        assert_eq!(target(&rep, ours), t("isabell", "hello-world", &sha));

        // A signed change that is not the one the source stamp came from
        // (an older change merged with a newer unsigned one) vouches for
        // nothing.
        let mut rep = report(&[]);
        rep.ss.revision = Some("f".repeat(40));
        assert_eq!(target(&rep, None), None);
        assert_eq!(
            target(&rep, Some("https://g/isabell/builder-repo")),
            None,
            "commit unknown"
        );
    }

    #[test]
    fn urls_to_owner_and_repo() {
        for u in [
            "ssh://git@git.example.org:2222/isabell/hello-world.git",
            "git@git.example.org:isabell/hello-world.git",
            "https://git.example.org/isabell/hello-world.git",
            "https://git.example.org/gitea/isabell/hello-world/",
            "file:///srv/git/isabell/hello-world.git",
        ] {
            assert_eq!(
                owner_repo_from_url(u),
                Some(("isabell".into(), "hello-world".into())),
                "{u}"
            );
        }
        assert_eq!(owner_repo_from_url("hello"), None);
        assert_eq!(owner_repo_from_url("https://host/"), None);
    }

    #[test]
    fn pending_then_final_with_context_and_url() {
        let mut rep = report(&[]);
        let url = "http://ci/builders/runtests/builds/42";
        // A signed change: its repository and commit, even before the
        // checkout, and even when the builder's repourl says otherwise.
        let p = status_for(&cfg(""), &rep, url, false, Some("https://g/x/y")).unwrap();
        assert_eq!(
            (p.owner.as_str(), p.repo.as_str(), p.sha.as_str()),
            ("isabell", "hello-world", "abc123")
        );
        assert_eq!(
            p.body,
            json!({"state": "pending", "target_url": url, "description": "Build #42 started", "context": "minibot/runtests"})
        );
        rep.results = Some(BuildResult::Failure);
        rep.state_string = "failure test".into();
        let p = status_for(
            &cfg("context = 'ci/%(prop:buildername)s'"),
            &rep,
            url,
            true,
            None,
        )
        .unwrap();
        assert_eq!(p.body["state"], "failure");
        assert_eq!(p.body["description"], "Build #42: failure test");
        assert_eq!(p.body["context"], "ci/runtests");
        rep.results = Some(BuildResult::Success);
        assert_eq!(
            status_for(&cfg(""), &rep, url, true, None).unwrap().body["description"],
            "Build #42 succeeded"
        );
        // The commit the checkout reported wins over the change's.
        let sha = "a".repeat(40);
        rep.properties.insert(
            "got_revision".into(),
            (sha.clone().into(), GOT_REVISION_SOURCE.into()),
        );
        assert_eq!(
            status_for(&cfg(""), &rep, url, true, None).unwrap().sha,
            sha
        );
        rep.properties.remove("got_revision");
        rep.ss.revision = None;
        assert!(status_for(&cfg(""), &rep, url, true, None).is_err());
    }

    #[test]
    fn pull_requests_use_the_base_repository_and_context_pr() {
        let rep = report(&[
            ("pr_number", json!(4)),
            ("owner", json!("isabell")),
            ("repository_name", json!("hello-world")),
            ("head_owner", json!("jdoe")),
        ]);
        let c = cfg("context_pr = 'minibot/pr/%(prop:buildername)s'");
        let p = status_for(&c, &rep, "u", false, None).unwrap();
        assert_eq!(
            (p.owner.as_str(), p.repo.as_str()),
            ("isabell", "hello-world")
        );
        assert_eq!(p.body["context"], "minibot/pr/runtests");
    }

    /// Issue 19 point 2: a PR tested as merged is at its base (abc123) and
    /// checks out a merge commit; its statuses go on the head, from the
    /// start. Only a signed change's `head_sha` counts.
    #[test]
    fn pull_requests_report_on_their_head_not_the_merge() {
        let head = "b".repeat(40);
        let mut rep = report(&[("pr_number", json!(3)), ("head_sha", json!(head))]);
        assert_eq!(target(&rep, None), t("isabell", "hello-world", &head));
        rep.properties.insert(
            "got_revision".into(),
            ("d".repeat(40).into(), GOT_REVISION_SOURCE.into()),
        );
        assert_eq!(target(&rep, None), t("isabell", "hello-world", &head));
        // Not from a signed hook: the commit the checkout reported.
        if let Some(c) = rep.last_change.as_mut() {
            c.signed = false;
        }
        let ours = Some("https://git.example.org/isabell/hello-world.git");
        assert_eq!(
            target(&rep, ours),
            t("isabell", "hello-world", &"d".repeat(40))
        );
    }

    #[test]
    fn states() {
        let got: Vec<&str> = [
            BuildResult::Success,
            BuildResult::Warnings,
            BuildResult::Failure,
            BuildResult::Skipped,
            BuildResult::Exception,
            BuildResult::Retry,
            BuildResult::Cancelled,
        ]
        .into_iter()
        .map(state_for)
        .collect();
        assert_eq!(
            got,
            ["success", "warning", "failure", "warning", "error", "pending", "error"]
        );
    }

    #[test]
    fn status_url_keeps_a_sub_path() {
        let mut c = cfg("verify_tls = false");
        c.base_url = "https://example.org/gitea/".into();
        let t = Target::new(&c, false, Path::new("/")).unwrap();
        let job = StatusJob {
            target: Arc::new(t),
            post: status_for(&c, &report(&[]), "u", false, None).unwrap(),
            settles: None,
        };
        assert_eq!(
            job.url().as_str(),
            "https://example.org/gitea/api/v1/repos/isabell/hello-world/statuses/abc123"
        );
    }
}
