//! The `github` change-hook dialect: GitHub-format bodies, for mirrors and
//! forges that post GitHub payloads (`POST /change_hook/github`).
//!
//! Owns: the GitHub facts (header names, oldest-first commit order, PR
//! action names); the parsing is shared with `gitea` in `forge`, and so are
//! the options (`secret`, `codebase`, `repository_url`,
//! `only_include_push_commit`). No threads or channels; the HTTP layer calls
//! [`handle`]. `ping` and every other event are answered as ignored.

use super::forge::{self, Forge, Mapping, Signed};
use super::{Digest, HookError, HookOutcome, HookRequest, SignatureHeader, HUB_SHA256};
use crate::config::GiteaDialect;

const GITHUB: Forge = Forge {
    event_header: "x-github-event",
    delivery_header: "x-github-delivery",
    // "sha256=<hex>", or the older "sha1=<hex>" that Buildbot's GitHub hook
    // checks (senders that still send only that one keep working), both
    // over the raw body.
    signatures: &[
        HUB_SHA256,
        SignatureHeader {
            name: "x-hub-signature",
            digest: Digest::Sha1,
        },
    ],
    signed: Signed::BodyOrPayload,
    mapping: Mapping::GitHub,
    commits_newest_first: false,
    pr_build_actions: &["opened", "reopened", "synchronize"],
};

/// Parses one GitHub-format webhook delivery into changes.
pub fn handle(cfg: &GiteaDialect, req: &HookRequest) -> Result<HookOutcome, HookError> {
    forge::handle(&GITHUB, cfg, req)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::dialects::testutil::{request, sign};
    use serde_json::{json, Value};

    fn repo() -> Value {
        json!({
            "name": "hello", "full_name": "octo/hello",
            "owner": {"name": "octo", "login": "octo"},
            "ssh_url": "git@github.com:octo/hello.git",
            "clone_url": "https://github.com/octo/hello.git",
            "html_url": "https://github.com/octo/hello",
        })
    }

    /// As the config lowers `[www.change_hook_dialects.github]`.
    fn github_cfg(secret: Option<&str>) -> GiteaDialect {
        GiteaDialect {
            secret: secret.map(str::to_string),
            repository_url: crate::config::RepositoryUrl::Html,
            ..Default::default()
        }
    }

    fn commit(id: &str, ts: &str) -> Value {
        json!({
            "id": id, "distinct": true, "message": format!("commit {id}"),
            "timestamp": ts, "url": format!("https://github.com/octo/hello/commit/{id}"),
            "author": {"name": "Octo Cat", "email": "octo@example.com", "username": "octo"},
            "committer": {"name": "GitHub", "email": "noreply@github.com"},
            "added": ["a"], "removed": [], "modified": ["m"],
        })
    }

    fn post(cfg: &GiteaDialect, event: &str, body: &Value) -> Result<HookOutcome, HookError> {
        let bytes = serde_json::to_vec(body).unwrap();
        let mut headers = vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("x-github-event".to_string(), event.to_string()),
            ("x-github-delivery".to_string(), "d-1".to_string()),
        ];
        if let Some(secret) = &cfg.secret {
            headers.push((
                "x-hub-signature-256".to_string(),
                format!("sha256={}", sign(secret, &bytes)),
            ));
        }
        handle(cfg, &request(&headers, &bytes))
    }

    fn push_body() -> Value {
        json!({
            "ref": "refs/heads/main",
            "before": "1111111111111111111111111111111111111111",
            "after": "bbbb",
            "created": false, "deleted": false,
            "commits": [commit("aaaa", "2024-06-04T08:00:00Z"), commit("bbbb", "2024-06-04T09:00:00-01:00")],
            "head_commit": commit("bbbb", "2024-06-04T09:00:00-01:00"),
            "repository": repo(),
        })
    }

    #[test]
    fn push_keeps_oldest_first_order() {
        let cfg = github_cfg(Some("s3cret"));
        let mut body = push_body();
        body["commits"][0]["distinct"] = json!(false);
        let Ok(HookOutcome::Changes { changes, delivery }) = post(&cfg, "push", &body) else {
            panic!()
        };
        assert_eq!(delivery.as_deref(), Some("d-1"));
        let revs: Vec<_> = changes.iter().map(|c| c.revision.as_deref()).collect();
        assert_eq!(revs, [Some("aaaa"), Some("bbbb")]);
        assert_eq!(changes[0].author, "Octo Cat <octo@example.com>");
        assert_eq!(
            changes[0].committer.as_deref(),
            Some("GitHub <noreply@github.com>")
        );
        assert_eq!(changes[0].files, ["a", "m"]);
        // Buildbot's GitHub hook: html_url, no category, github_distinct.
        assert_eq!(changes[0].repository, "https://github.com/octo/hello");
        assert_eq!(changes[0].category, None);
        assert_eq!(changes[0].properties["github_distinct"], json!(false));
        assert_eq!(changes[1].properties["github_distinct"], json!(true));
        assert_eq!(changes[0].properties["event"], json!("push"));
        assert_eq!(changes[0].properties["owner"], json!("octo"));
        assert_eq!(changes[1].when_timestamp, 1717495200);

        let only = GiteaDialect {
            only_include_push_commit: true,
            ..Default::default()
        };
        let Ok(HookOutcome::Changes { changes, .. }) = post(&only, "push", &push_body()) else {
            panic!()
        };
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].revision.as_deref(), Some("bbbb"));
        assert_eq!(changes[0].repository, "git@github.com:octo/hello.git");

        let mut skip = push_body();
        skip["head_commit"]["message"] = json!("docs [ci skip]");
        assert_eq!(
            post(&cfg, "push", &skip),
            Ok(HookOutcome::Ignored(format!(
                "push to branch 'main' skipped: the head commit message matches skip pattern {:?}",
                crate::config::DEFAULT_SKIPS[1]
            )))
        );
    }

    /// GitHub signs the raw body (JSON or form) with SHA-256 and SHA-1;
    /// either header alone is accepted, as Buildbot accepts `X-Hub-Signature`.
    #[test]
    fn both_signature_headers_over_the_raw_body() {
        let cfg = github_cfg(Some("s3cret"));
        let json_body = serde_json::to_vec(&push_body()).unwrap();
        let form_body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", std::str::from_utf8(&json_body).unwrap())
            .finish()
            .into_bytes();
        for (ct, body) in [
            ("application/json", &json_body),
            ("application/x-www-form-urlencoded", &form_body),
        ] {
            let base = vec![
                ("content-type".to_string(), ct.to_string()),
                ("x-github-event".to_string(), "push".to_string()),
            ];
            let with = |name: &str, value: String| {
                let mut h = base.clone();
                h.push((name.to_string(), value));
                handle(&cfg, &request(&h, body))
            };
            let sha1 = format!("sha1={}", sign_sha1("s3cret", body));
            let sha256 = format!("sha256={}", sign("s3cret", body));
            for r in [
                with("x-hub-signature", sha1.clone()),
                with("x-hub-signature-256", sha256.clone()),
            ] {
                assert!(matches!(r, Ok(HookOutcome::Changes { .. })), "{ct}: {r:?}");
            }
            for r in [
                with(
                    "x-hub-signature",
                    format!("sha1={}", sign_sha1("other", body)),
                ),
                with(
                    "x-hub-signature-256",
                    format!("sha256={}", sign("other", body)),
                ),
                with("x-hub-signature", sha256.clone()),
            ] {
                assert!(matches!(r, Err(HookError::Forbidden(_))), "{ct}: {r:?}");
            }
            // A wrong SHA-256 signature is not rescued by a right SHA-1 one.
            let mut h = base.clone();
            h.push((
                "x-hub-signature-256".into(),
                format!("sha256={}", sign("x", body)),
            ));
            h.push(("x-hub-signature".into(), sha1.clone()));
            let r = handle(&cfg, &request(&h, body));
            assert!(matches!(r, Err(HookError::Forbidden(_))), "{ct}: {r:?}");
        }
        // Gitea posting GitHub-format headers signs the payload of its form.
        let h = vec![
            (
                "content-type".to_string(),
                "application/x-www-form-urlencoded".to_string(),
            ),
            ("x-github-event".to_string(), "push".to_string()),
            (
                "x-hub-signature".to_string(),
                format!("sha1={}", sign_sha1("s3cret", &json_body)),
            ),
        ];
        let r = handle(&cfg, &request(&h, &form_body));
        assert!(matches!(r, Ok(HookOutcome::Changes { .. })), "{r:?}");
    }

    fn sign_sha1(secret: &str, body: &[u8]) -> String {
        use hmac::{Hmac, KeyInit, Mac};
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn push_signature_required_when_secret_set() {
        let cfg = github_cfg(Some("s3cret"));
        let bytes = serde_json::to_vec(&push_body()).unwrap();
        let mut headers = vec![("x-github-event".to_string(), "push".to_string())];
        let r = handle(&cfg, &request(&headers, &bytes));
        assert!(matches!(r, Err(HookError::Forbidden(_))), "{r:?}");
        headers.push((
            "x-hub-signature-256".into(),
            format!("sha256={}", sign("other", &bytes)),
        ));
        let r = handle(&cfg, &request(&headers, &bytes));
        assert!(matches!(r, Err(HookError::Forbidden(_))), "{r:?}");
    }

    #[test]
    fn tags_deletes_and_ping() {
        let cfg = GiteaDialect::default();
        let mut tag = push_body();
        tag["ref"] = json!("refs/tags/v2");
        tag["after"] = json!("7a90");
        tag["commits"] = json!([]);
        let Ok(HookOutcome::Changes { changes, .. }) = post(&cfg, "push", &tag) else {
            panic!()
        };
        assert_eq!(changes[0].revision.as_deref(), Some("bbbb"));
        assert_eq!(changes[0].category.as_deref(), Some("tag"));
        assert_eq!(changes[0].properties["tag"], json!("v2"));

        let mut del = push_body();
        del["after"] = json!("0000000000000000000000000000000000000000");
        del["deleted"] = json!(true);
        del["commits"] = json!([]);
        del["head_commit"] = Value::Null;
        assert_eq!(
            post(&cfg, "push", &del),
            Ok(HookOutcome::Ignored(
                "deletion of branch 'main' ignored".into()
            ))
        );
        assert_eq!(
            post(&cfg, "ping", &json!({"zen": "Keep it logically awesome."})),
            Ok(HookOutcome::Ignored("event 'ping' ignored".into()))
        );
    }

    fn pr_body(action: &str) -> Value {
        json!({
            "action": action, "number": 7,
            "pull_request": {
                "id": 9_000_000_001_i64, "number": 7, "title": "T", "body": null,
                "user": {"login": "contrib"},
                "html_url": "https://github.com/octo/hello/pull/7",
                "_links": {"html": {"href": "https://github.com/octo/hello/pull/7"}},
                "updated_at": "2024-06-05T08:25:40Z",
                "created_at": "2024-06-04T08:25:40Z",
                "commits": 2,
                "head": {"ref": "feat", "sha": "cafe", "repo": {
                    "name": "hello", "full_name": "contrib/hello",
                    "ssh_url": "git@github.com:contrib/hello.git",
                    "clone_url": "https://github.com/contrib/hello.git"}},
                "base": {"ref": "main", "sha": "beef", "repo": repo()},
            },
            "repository": repo(),
            "sender": {"login": "pusher"},
        })
    }

    /// Buildbot's GitHub hook's PR change, field by field.
    #[test]
    fn pull_requests() {
        let cfg = github_cfg(None);
        for action in ["opened", "reopened", "synchronize"] {
            let Ok(HookOutcome::Changes { changes, .. }) =
                post(&cfg, "pull_request", &pr_body(action))
            else {
                panic!("{action}")
            };
            let c = &changes[0];
            // pull_request_checkout = "merge" (default): the base revision,
            // the head merged into it by the git step.
            assert_eq!(c.revision.as_deref(), Some("beef"));
            assert_eq!(c.properties["head_sha"], json!("cafe"));
            assert_eq!(c.branch.as_deref(), Some("refs/pull/7/merge"));
            assert_eq!(c.category.as_deref(), Some("pull"));
            assert_eq!(c.comments, "GitHub Pull Request #7 (2 commits)\nT\n");
            assert_eq!(c.author, "pusher");
            assert_eq!(c.when_timestamp, 1717489540);
            assert_eq!(c.repository, "https://github.com/octo/hello");
            assert_eq!(c.project, "octo/hello");
            assert_eq!(
                c.revlink.as_deref(),
                Some("https://github.com/octo/hello/pull/7")
            );
            assert_eq!(c.properties["event"], json!("pull_request"));
            assert_eq!(c.properties["action"], json!(action));
            assert_eq!(c.properties["basename"], json!("main"));
            assert_eq!(
                c.properties["pullrequesturl"],
                json!("https://github.com/octo/hello/pull/7")
            );
            assert_eq!(c.properties["pr_number"], json!(7));
            assert_eq!(c.properties["pr_id"], json!(9_000_000_001_i64));
            assert_eq!(
                c.properties["head_repository"],
                json!("https://github.com/contrib/hello.git")
            );
        }
        for action in ["closed", "edited", "synchronized", "labeled"] {
            assert_eq!(
                post(&cfg, "pull_request", &pr_body(action)),
                Ok(HookOutcome::Ignored(format!(
                    "pull_request action '{action}' ignored"
                )))
            );
        }
    }
}
