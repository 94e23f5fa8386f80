//! The `gitea_status` reporter: commit statuses through Gitea's API,
//! `POST /api/v1/repos/{owner}/{repo}/statuses/{sha}` with
//! `Authorization: token ...` (as the buildbot_gitea plugin).
//!
//! Owns: turning a build into a status (`status_for`, pure) and sending it
//! (`StatusJob`, run by the `gitea-status` outbox thread in `reporters`).
//! `pending` when a build starts, then `success`, `warning`, `failure` or
//! `error` from its result. The status goes on the built revision, which
//! for a pull request is its head; the repository is the one the change
//! came from (`owner` / `repository_name` properties, which for a pull
//! request, also from a fork, name the base repository), else it is read
//! off the repository URL (changes from the git poller).

use super::{Delivery, Failure};
use crate::build::interpolate;
use crate::config::ReporterCfg;
use crate::model::{CANCELLED, EXCEPTION, FAILURE, RETRY, SKIPPED, SUCCESS, WARNINGS};
use crate::store::BuildReport;
use anyhow::{Context, Result};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub const DEFAULT_CONTEXT: &str = "minibot/%(prop:buildername)s";

/// A Gitea server to post to.
pub struct Target {
    base_url: url::Url,
    token: String,
    agent: ureq::Agent,
}

impl Target {
    pub fn new(cfg: &ReporterCfg, master_dir: &Path) -> Result<Target> {
        let base = cfg.base_url.as_deref().context("base_url is missing")?;
        let base_url = url::Url::parse(base).with_context(|| format!("base_url {base:?}"))?;
        let token = cfg.gitea_token(master_dir)?;
        let mut agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("minibot/", env!("CARGO_PKG_VERSION")));
        if !cfg.verifies_tls() {
            log::warn!(
                "gitea_status for {base}: TLS certificates are not checked (verify_tls = false)"
            );
            agent = agent.tls_config(Arc::new(no_verify_tls()?));
        }
        Ok(Target {
            base_url,
            token,
            agent: agent.build(),
        })
    }
}

/// One status, ready to post.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusPost {
    pub owner: String,
    pub repo: String,
    pub sha: String,
    /// The JSON body: state, target_url, description, context.
    pub body: serde_json::Value,
}

/// The Gitea state for a finished build's result.
pub fn state_for(results: i64) -> &'static str {
    match results {
        SUCCESS => "success",
        WARNINGS => "warning",
        FAILURE => "failure",
        // Gitea has no "skipped"; a build that checked nothing is no success.
        SKIPPED => "warning",
        // Retried: a new build will report.
        RETRY => "pending",
        EXCEPTION | CANCELLED => "error",
        _ => "error",
    }
}

/// (owner, repository) from a clone URL: `ssh://git@host:2222/o/r.git`,
/// `git@host:o/r.git`, `https://host/o/r.git`, `https://host/sub/o/r`.
pub fn owner_repo_from_url(u: &str) -> Option<(String, String)> {
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

/// The status to post for `rep` (`finished` or just started), or None when
/// the build has no revision or no Gitea repository to report on.
pub fn status_for(
    cfg: &ReporterCfg,
    rep: &BuildReport,
    url: &str,
    finished: bool,
) -> Option<StatusPost> {
    let sha = rep.ss.revision.clone().filter(|s| !s.is_empty())?;
    let (owner, repo) = match (rep.prop("owner"), rep.prop("repository_name")) {
        (Some(o), Some(r)) => (o, r),
        _ => owner_repo_from_url(&rep.ss.repository)?,
    };
    let is_pr = rep.properties.contains_key("pr_number");
    let template = match (is_pr, &cfg.context_pr, &cfg.context) {
        (true, Some(c), _) => c.as_str(),
        (_, _, Some(c)) => c.as_str(),
        _ => DEFAULT_CONTEXT,
    };
    let context = interpolate(template, &rep.properties);
    let (state, description) = match (finished, rep.results) {
        (true, Some(r)) => {
            let d = if r == SUCCESS {
                format!("Build #{} succeeded", rep.number)
            } else {
                format!("Build #{}: {}", rep.number, rep.state_string)
            };
            (state_for(r), d)
        }
        _ => ("pending", format!("Build #{} started", rep.number)),
    };
    Some(StatusPost {
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

pub struct StatusJob {
    pub target: Arc<Target>,
    pub post: StatusPost,
}

impl StatusJob {
    fn url(&self) -> url::Url {
        let mut u = self.target.base_url.clone();
        if let Ok(mut segs) = u.path_segments_mut() {
            segs.pop_if_empty().extend([
                "api",
                "v1",
                "repos",
                &self.post.owner,
                &self.post.repo,
                "statuses",
                &self.post.sha,
            ]);
        }
        u
    }
}

impl Delivery for StatusJob {
    fn key(&self) -> Option<String> {
        Some(format!("{} {}", self.url(), self.post.body["context"]))
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
            .request_url("POST", &self.url())
            .set("Authorization", &format!("token {}", self.target.token))
            .send_json(&self.post.body);
        match res {
            Ok(_) => Ok(()),
            Err(ureq::Error::Status(code, resp)) => {
                let body = resp.into_string().unwrap_or_default();
                let msg = format!(
                    "HTTP {code}: {}",
                    body.chars().take(200).collect::<String>()
                );
                // 5xx also covers Gitea's answer to an unknown sha (500):
                // bounded by the retry limit.
                if code >= 500 || code == 408 || code == 429 {
                    Err(Failure::Retry(msg))
                } else {
                    Err(Failure::Permanent(msg))
                }
            }
            Err(e) => Err(Failure::Retry(e.to_string())),
        }
    }
}

/// TLS without certificate checks (`verify_tls = false`, e.g. a Gitea with
/// a self-signed certificate). Signatures are still checked, so the
/// handshake is real; only the chain of trust is skipped.
pub fn no_verify_tls() -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(
        rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS setup")?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth(),
    )
}

#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Props, SourceStamp};

    fn cfg(extra: &str) -> ReporterCfg {
        toml::from_str(&format!(
            "type = 'gitea_status'\nbase_url = 'https://git.example.org'\ntoken = 't'\n{extra}"
        ))
        .unwrap()
    }

    fn report(props: &[(&str, serde_json::Value)]) -> BuildReport {
        let mut p = Props::new();
        p.insert("buildername".into(), ("runtests".into(), "Builder".into()));
        for (k, v) in props {
            p.insert(k.to_string(), (v.clone(), "Change".into()));
        }
        BuildReport {
            builder: "runtests".into(),
            number: 42,
            properties: p,
            ss: SourceStamp {
                revision: Some("abc123".into()),
                repository: "ssh://git@git.example.org:2222/isabell/hello-world.git".into(),
                ..Default::default()
            },
            ..Default::default()
        }
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
        let p = status_for(&cfg(""), &rep, url, false).unwrap();
        assert_eq!(
            (p.owner.as_str(), p.repo.as_str(), p.sha.as_str()),
            ("isabell", "hello-world", "abc123")
        );
        assert_eq!(
            p.body,
            json!({"state": "pending", "target_url": url, "description": "Build #42 started", "context": "minibot/runtests"})
        );
        rep.results = Some(FAILURE);
        rep.state_string = "failure test".into();
        let p = status_for(&cfg("context = 'ci/%(prop:buildername)s'"), &rep, url, true).unwrap();
        assert_eq!(p.body["state"], "failure");
        assert_eq!(p.body["description"], "Build #42: failure test");
        assert_eq!(p.body["context"], "ci/runtests");
        rep.results = Some(SUCCESS);
        assert_eq!(
            status_for(&cfg(""), &rep, url, true).unwrap().body["description"],
            "Build #42 succeeded"
        );
        rep.ss.revision = None;
        assert_eq!(status_for(&cfg(""), &rep, url, true), None);
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
        let p = status_for(&c, &rep, "u", false).unwrap();
        assert_eq!(
            (p.owner.as_str(), p.repo.as_str()),
            ("isabell", "hello-world")
        );
        assert_eq!(p.body["context"], "minibot/pr/runtests");
    }

    #[test]
    fn states() {
        let got: Vec<&str> = [
            SUCCESS, WARNINGS, FAILURE, SKIPPED, EXCEPTION, RETRY, CANCELLED,
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
        c.base_url = Some("https://example.org/gitea/".into());
        let t = Target::new(&c, Path::new("/")).unwrap();
        let job = StatusJob {
            target: Arc::new(t),
            post: status_for(&c, &report(&[]), "u", false).unwrap(),
        };
        assert_eq!(
            job.url().as_str(),
            "https://example.org/gitea/api/v1/repos/isabell/hello-world/statuses/abc123"
        );
    }
}
