//! The `mail` reporter (Buildbot's MailNotifier): a plain-text mail about a
//! finished build, over SMTP with STARTTLS and login (lettre, blocking,
//! rustls).
//!
//! Owns: which builds are mailed (`wants_mail`, Buildbot's modes), the
//! mail's text (`compose`), and sending it (`MailJob`, run by the `mail`
//! outbox thread in `reporters`, which retries transient failures).

use super::{Delivery, Failure, Final};
use crate::config::{Mail, MailMode};
use crate::db::BuildReport;
use crate::model::BuildResult;
use anyhow::{Context, Result};
use lettre::message::{header::ContentType, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport};
use std::fmt::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// An SMTP server with the sender and recipients.
pub(crate) struct Target {
    transport: SmtpTransport,
    from: Mailbox,
    to: Vec<Mailbox>,
    server: String,
}

impl Target {
    pub(crate) fn new(cfg: &Mail, verify_tls: bool, master_dir: &Path) -> Result<Target> {
        let host = cfg.smtp_host.clone();
        let (starttls, port) = (cfg.starttls, cfg.smtp_port);
        let mut b = SmtpTransport::builder_dangerous(host.as_str())
            .port(port)
            .timeout(Some(Duration::from_secs(30)));
        if starttls {
            if !verify_tls {
                log::warn!(
                    "mail via {host}: TLS certificates are not checked (verify_tls = false)"
                );
            }
            let tls = TlsParameters::builder(host.clone())
                .dangerous_accept_invalid_certs(!verify_tls)
                .dangerous_accept_invalid_hostnames(!verify_tls)
                .build_rustls()
                .context("TLS setup")?;
            b = b.tls(Tls::Required(tls));
        }
        if let Some((user, pw)) = &cfg.login {
            let pw = pw.read(master_dir).context("smtp_password")?;
            b = b.credentials(Credentials::new(user.clone(), pw));
        }
        let from = cfg.from.parse::<Mailbox>().context("from")?;
        let to = cfg
            .to
            .iter()
            .map(|t| t.parse::<Mailbox>().with_context(|| format!("to {t:?}")))
            .collect::<Result<Vec<_>>>()?;
        Ok(Target {
            transport: b.build(),
            from,
            to,
            server: format!("{host}:{port}"),
        })
    }
}

/// Whether a build with `results` is mailed under `modes`, given the
/// builder's previous result (Buildbot's MailNotifier modes).
pub(crate) fn wants_mail(
    modes: &[MailMode],
    results: BuildResult,
    previous: Option<BuildResult>,
) -> bool {
    use BuildResult::{Cancelled, Exception, Failure, Success, Warnings};
    modes.iter().any(|m| match m {
        MailMode::All => true,
        MailMode::Failing => results == Failure,
        MailMode::Passing => results == Success,
        MailMode::Warnings => results == Warnings,
        MailMode::Exception => results == Exception,
        MailMode::Cancelled => results == Cancelled,
        // Failed, and the build before did not.
        MailMode::Problem => results == Failure && previous != Some(Failure),
        // The result is not the previous one.
        MailMode::Change => previous.is_some_and(|p| p != results),
    })
}

/// (subject, body) of the mail about `rep`.
pub(crate) fn compose(title: &str, rep: &BuildReport, url: &str) -> (String, String) {
    let result = rep.results.map(BuildResult::name).unwrap_or("unknown");
    let subject = format!("{title}: {result} in {} #{}", rep.builder, rep.number);
    let mut b = String::new();
    let _ = writeln!(
        b,
        "Build #{} of {} finished: {result} ({}).\n",
        rep.number, rep.builder, rep.state_string
    );
    let _ = writeln!(b, "Build:    {url}");
    for (label, v) in [
        ("Branch:  ", rep.ss.branch.clone()),
        ("Revision:", rep.ss.revision.clone()),
        (
            "Repo:    ",
            Some(rep.ss.repository.clone()).filter(|s| !s.is_empty()),
        ),
        ("Worker:  ", rep.worker.clone()),
        ("Reason:  ", Some(rep.reason.clone())),
    ] {
        if let Some(v) = v {
            let _ = writeln!(b, "{label} {v}");
        }
    }
    if let Some(pr) = rep.prop("pr_number") {
        let _ = writeln!(b, "Pull request: #{pr}");
    }
    if !rep.changes.is_empty() {
        let _ = writeln!(b, "\nChanges:");
        for (rev, author, comments) in &rep.changes {
            let short: String = rev.as_deref().unwrap_or("").chars().take(10).collect();
            let first = comments.lines().next().unwrap_or("");
            let _ = writeln!(b, "  {short} {author}: {first}");
        }
    }
    if !rep.steps.is_empty() {
        let _ = writeln!(b, "\nSteps:");
        for (name, r) in &rep.steps {
            let _ = writeln!(
                b,
                "  {name}: {}",
                r.map(BuildResult::name).unwrap_or("not run")
            );
        }
    }
    (subject, b)
}

pub(crate) struct MailJob {
    pub target: Arc<Target>,
    pub subject: String,
    pub body: String,
    /// The final delivery it is (recorded once settled).
    pub settles: Option<Final>,
}

impl Delivery for MailJob {
    fn key(&self) -> Option<String> {
        None
    }

    fn settles(&self) -> Option<&Final> {
        self.settles.as_ref()
    }

    fn describe(&self) -> String {
        format!("mail {:?} via {}", self.subject, self.target.server)
    }

    fn attempt(&self) -> Result<(), Failure> {
        let mut m = Message::builder()
            .from(self.target.from.clone())
            .subject(self.subject.clone())
            .header(ContentType::TEXT_PLAIN);
        for t in &self.target.to {
            m = m.to(t.clone());
        }
        let msg = m
            .body(self.body.clone())
            .map_err(|e| Failure::Permanent(format!("composing the mail: {e}")))?;
        match self.target.transport.send(&msg) {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(Failure::Permanent(e.to_string())),
            Err(e) => Err(Failure::Retry(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::SourceStamp;

    #[test]
    fn modes_as_buildbot() {
        use BuildResult::{Exception, Failure, Success, Warnings};
        // By name, as in master.cfg.
        let w = |m: &[&str], r, p| {
            let modes: Vec<MailMode> = m
                .iter()
                .map(|n| {
                    MailMode::ALL
                        .iter()
                        .find(|(k, _)| k == n)
                        .expect("a mode")
                        .1
                })
                .collect();
            wants_mail(&modes, r, p)
        };
        assert!(w(&["all"], Success, None));
        assert!(w(&["failing"], Failure, Some(Failure)));
        assert!(!w(&["failing"], Success, None));
        assert!(w(&["passing"], Success, None));
        assert!(w(&["warnings"], Warnings, None));
        assert!(w(&["exception"], Exception, None));
        assert!(w(&["problem"], Failure, Some(Success)));
        assert!(w(&["problem"], Failure, None));
        assert!(!w(&["problem"], Failure, Some(Failure)));
        assert!(w(&["change"], Success, Some(Failure)));
        assert!(!w(&["change"], Success, Some(Success)));
        assert!(!w(&["change"], Success, None));
        assert!(w(&["passing", "failing"], Failure, None));
        assert!(!w(&[], Failure, None));
    }

    #[test]
    fn composed_text() {
        let rep = BuildReport {
            builder: "runtests".into(),
            number: 7,
            results: Some(BuildResult::Failure),
            state_string: "failure test".into(),
            reason: "The all scheduler got a change".into(),
            worker: Some("w1".into()),
            ss: SourceStamp {
                branch: Some("master".into()),
                revision: Some("0123456789abcdef".into()),
                ..Default::default()
            },
            steps: vec![
                ("git".into(), Some(BuildResult::Success)),
                ("test".into(), Some(BuildResult::Failure)),
            ],
            changes: vec![(
                Some("0123456789abcdef".into()),
                "Isabell <i@e.org>".into(),
                "Fix\n\nmore".into(),
            )],
            ..Default::default()
        };
        let (s, b) = compose("Hello CI", &rep, "http://ci/builders/runtests/builds/7");
        assert_eq!(s, "Hello CI: failure in runtests #7");
        assert!(
            b.starts_with("Build #7 of runtests finished: failure (failure test).\n"),
            "{b}"
        );
        assert!(
            b.contains("Build:    http://ci/builders/runtests/builds/7\n"),
            "{b}"
        );
        assert!(b.contains("Branch:   master\n"), "{b}");
        assert!(b.contains("  0123456789 Isabell <i@e.org>: Fix\n"), "{b}");
        assert!(b.contains("  test: failure\n"), "{b}");
    }
}
