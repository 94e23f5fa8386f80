//! The `github` change-hook dialect: GitHub-format bodies, for mirrors and
//! forges that post GitHub payloads (`POST /change_hook/github`).
//!
//! Owns: the GitHub facts (header names, oldest-first commit order, PR
//! action names); the parsing is shared with `gitea` in `forge`, and so are
//! the options (`secret`, `codebase`, `repository_url`,
//! `only_include_push_commit`). No threads or channels; the HTTP layer calls
//! [`handle`]. `ping` and every other event are answered as ignored.

use super::forge::{self, Forge};
use super::{HookError, HookOutcome, HookRequest};
use crate::config::GiteaDialect;

const GITHUB: Forge = Forge {
    event_header: "x-github-event",
    delivery_header: "x-github-delivery",
    // "sha256=<hex>"; the older SHA-1 `X-Hub-Signature` is not accepted.
    signature_header: "x-hub-signature-256",
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
        })
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
        let cfg = GiteaDialect {
            secret: Some("s3cret".into()),
            ..Default::default()
        };
        let Ok(HookOutcome::Changes { changes, delivery }) = post(&cfg, "push", &push_body())
        else {
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
        assert_eq!(changes[0].repository, "git@github.com:octo/hello.git");
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
    }

    #[test]
    fn push_signature_required_when_secret_set() {
        let cfg = GiteaDialect {
            secret: Some("s3cret".into()),
            ..Default::default()
        };
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
                "updated_at": "2024-06-04T08:25:40Z",
                "head": {"ref": "feat", "sha": "cafe", "repo": {
                    "name": "hello", "full_name": "contrib/hello",
                    "ssh_url": "git@github.com:contrib/hello.git",
                    "clone_url": "https://github.com/contrib/hello.git"}},
                "base": {"ref": "main", "sha": "beef", "repo": repo()},
            },
            "repository": repo(),
        })
    }

    #[test]
    fn pull_requests() {
        let cfg = GiteaDialect::default();
        for action in ["opened", "reopened", "synchronize"] {
            let Ok(HookOutcome::Changes { changes, .. }) =
                post(&cfg, "pull_request", &pr_body(action))
            else {
                panic!("{action}")
            };
            let c = &changes[0];
            // pull_request_checkout = "merge" (default): the base revision.
            assert_eq!(c.revision.as_deref(), Some("beef"));
            assert_eq!(c.properties["head_sha"], json!("cafe"));
            assert_eq!(c.branch.as_deref(), Some("main"));
            assert_eq!(c.comments, "T");
            assert_eq!(c.author, "contrib");
            assert_eq!(c.when_timestamp, 1717489540);
            assert_eq!(c.properties["event"], json!(action));
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
