//! The `gitea` change-hook dialect (`POST /change_hook/gitea`).
//!
//! Owns: the Gitea facts (header names, newest-first commit order, PR
//! action names) and the tests against the Gitea 1.21/1.22 fixtures in
//! `test-fixtures/gitea/`. The parsing itself is shared with the `github`
//! dialect in `forge`. No threads or channels; the HTTP layer calls
//! [`handle`] and stores what it returns.
//!
//! Events: `push` to a branch → one change per commit, oldest first (only
//! the head with `only_include_push_commit` or for a new branch); `push` of
//! a tag → one change for the peeled commit, category `tag`; deletions →
//! ignored; `pull_request` opened/reopened/synchronized → one change,
//! category `pull_request`, at the base revision with the PR head in
//! `head_sha` (buildbot_gitea's change; the build merges the head into the
//! base), or at the head with `pull_request_checkout = "head"`; everything
//! else → ignored.

use super::forge::{self, Forge, Mapping, Signed};
use super::{Digest, HookError, HookOutcome, HookRequest, SignatureHeader};
use crate::config::GiteaDialect;

const GITEA: Forge = Forge {
    event_header: "x-gitea-event",
    delivery_header: "x-gitea-delivery",
    // Plain lowercase hex HMAC-SHA256 of the JSON payload, for JSON and
    // form deliveries alike (services/webhook/deliver.go).
    signatures: &[SignatureHeader {
        name: "x-gitea-signature",
        digest: Digest::Sha256,
    }],
    signed: Signed::Payload,
    mapping: Mapping::Gitea,
    // `git rev-list old..new` order: commits[0] is the pushed head.
    commits_newest_first: true,
    // Gitea says `synchronized` where GitHub says `synchronize`.
    pr_build_actions: &["opened", "reopened", "synchronized"],
};

/// Parses one Gitea webhook delivery into changes.
pub fn handle(cfg: &GiteaDialect, req: &HookRequest) -> Result<HookOutcome, HookError> {
    forge::handle(&GITEA, cfg, req)
}

/// The change Gitea's `pull_request` delivery with `action` ("opened",
/// "synchronized") would bring for a pull request its API listed
/// (`master::pr_poller`): the same properties, skip patterns and checkout.
pub(crate) fn listed_pull_request(
    cfg: &GiteaDialect,
    pr: forge::ListedPull,
    action: &str,
) -> Result<HookOutcome, HookError> {
    forge::listed_pull_changes(&GITEA, cfg, pr, action)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NewChange;
    use crate::web::dialects::testutil::{
        fixture, payload_names, request, set_header, FIXTURE_SECRET,
    };
    use serde_json::{json, Value};

    const REPO_SSH: &str = "ssh://git@git.example.org:2222/isabell/hello-world.git";
    const REPO_HTTPS: &str = "https://git.example.org/isabell/hello-world.git";

    fn signed_cfg() -> GiteaDialect {
        GiteaDialect {
            secret: Some(FIXTURE_SECRET.into()),
            ..Default::default()
        }
    }

    fn run(cfg: &GiteaDialect, name: &str) -> Result<HookOutcome, HookError> {
        let (headers, body) = fixture(name);
        handle(cfg, &request(&headers, &body))
    }

    fn changes(cfg: &GiteaDialect, name: &str) -> Vec<NewChange> {
        match run(cfg, name) {
            Ok(HookOutcome::Changes { changes, .. }) => changes,
            other => panic!("{name}: expected changes, got {other:?}"),
        }
    }

    fn ignored(cfg: &GiteaDialect, name: &str) -> String {
        match run(cfg, name) {
            Ok(HookOutcome::Ignored(why)) => why,
            other => panic!("{name}: expected ignored, got {other:?}"),
        }
    }

    /// Every payload in the fixture directory, signed as Gitea signs it,
    /// with what the README says a CI should do with it.
    #[test]
    fn every_fixture_per_readme() {
        let expected: &[(&str, usize)] = &[
            ("create_branch.json", 0),
            ("create_tag.json", 0),
            ("delete_branch.json", 0),
            ("delete_tag.json", 0),
            ("issues_opened.json", 0),
            ("pull_request_closed.json", 0),
            ("pull_request_closed_merged.json", 0),
            ("pull_request_edited.json", 0),
            ("pull_request_opened.json", 1),
            ("pull_request_opened_from_fork.json", 1),
            ("pull_request_opened_unmergeable.json", 1),
            ("pull_request_reopened.json", 1),
            ("pull_request_synchronized.json", 1),
            ("push_branch_new.json", 1),
            ("push_branch_one_commit.json", 1),
            ("push_branch_two_commits.json", 2),
            ("push_tag.json", 1),
            ("push_tag_delete.json", 0),
            ("release_published.json", 0),
        ];
        let listed: Vec<String> = expected.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(listed, payload_names(), "table must cover every fixture");
        for (name, n) in expected {
            for cfg in [signed_cfg(), GiteaDialect::default()] {
                if *n == 0 {
                    let why = ignored(&cfg, name);
                    assert!(why.contains("ignored"), "{name}: {why}");
                } else {
                    assert_eq!(changes(&cfg, name).len(), *n, "{name}");
                }
            }
        }
    }

    #[test]
    fn push_two_commits_oldest_first() {
        let (headers, body) = fixture("push_branch_two_commits.json");
        let out = handle(&signed_cfg(), &request(&headers, &body)).unwrap();
        let HookOutcome::Changes { changes, delivery } = out else {
            panic!("{out:?}")
        };
        assert_eq!(
            delivery.as_deref(),
            Some("75747041-6dc5-5191-8154-ae8113ce349d")
        );
        let revs: Vec<_> = changes.iter().map(|c| c.revision.as_deref()).collect();
        assert_eq!(
            revs,
            [
                Some("55002ca63d57bb42b79da6c119a064abae599b5a"),
                Some("7c6a397dc016685b4ce337430909704049f00f4c"),
            ]
        );
        let c = &changes[0];
        assert_eq!(c.author, "Isabell Example <isabell@example.org>");
        assert_eq!(
            c.committer.as_deref(),
            Some("Isabell Example <isabell@example.org>")
        );
        assert_eq!(
            c.comments,
            "Add a --name option\n\nThe greeting can now be addressed to someone.\n"
        );
        assert_eq!(c.files, ["src/cli.rs", "Cargo.toml", "src/main.rs"]);
        // 2024-06-03T14:05:31+02:00
        assert_eq!(c.when_timestamp, 1717416331);
        assert_eq!(c.branch.as_deref(), Some("master"));
        assert_eq!(c.repository, REPO_SSH);
        assert_eq!(c.project, "isabell/hello-world");
        assert_eq!(c.codebase, "");
        assert_eq!(c.category.as_deref(), Some("push"));
        assert_eq!(
            c.revlink.as_deref(),
            Some("https://git.example.org/isabell/hello-world/commit/55002ca63d57bb42b79da6c119a064abae599b5a")
        );
        assert_eq!(c.properties["event"], json!("push"));
        assert_eq!(c.properties["repository_name"], json!("hello-world"));
        assert_eq!(c.properties["owner"], json!("isabell"));
        assert!(!c.properties.contains_key("tag"));

        let head = &changes[1];
        assert_eq!(head.files, ["README.md", "docs/TODO.md"]);
        // 2024-06-03T14:11:58+02:00
        assert_eq!(head.when_timestamp, 1717416718);
    }

    #[test]
    fn only_include_push_commit_keeps_the_head() {
        let cfg = GiteaDialect {
            only_include_push_commit: true,
            ..signed_cfg()
        };
        let c = changes(&cfg, "push_branch_two_commits.json");
        assert_eq!(c.len(), 1);
        assert_eq!(
            c[0].revision.as_deref(),
            Some("7c6a397dc016685b4ce337430909704049f00f4c")
        );
        assert_eq!(c[0].comments, "Document the --name option\n");
    }

    #[test]
    fn new_branch_builds_only_its_head() {
        // `commits` holds 5 reachable (mostly old) commits: not new changes.
        let c = changes(&signed_cfg(), "push_branch_new.json");
        assert_eq!(c.len(), 1);
        assert_eq!(
            c[0].revision.as_deref(),
            Some("e0440101b2afef798ce0cab80ce920569aea8466")
        );
        assert_eq!(c[0].branch.as_deref(), Some("feature/greeting"));
    }

    #[test]
    fn tag_push_builds_the_peeled_commit() {
        let c = changes(&signed_cfg(), "push_tag.json");
        assert_eq!(c.len(), 1);
        // head_commit.id, not `after` (the tag object ec7a1e8b...).
        assert_eq!(
            c[0].revision.as_deref(),
            Some("e532cbfab4045c9c9ca8c5a578ed7abe73b365fe")
        );
        assert_eq!(c[0].branch.as_deref(), Some("v1.0.0"));
        assert_eq!(c[0].category.as_deref(), Some("tag"));
        assert_eq!(c[0].properties["tag"], json!("v1.0.0"));
        assert_eq!(c[0].properties["event"], json!("push"));
    }

    #[test]
    fn deletions_and_other_events_are_ignored() {
        let cfg = signed_cfg();
        assert_eq!(
            ignored(&cfg, "push_tag_delete.json"),
            "deletion of tag 'v0.9.0' ignored"
        );
        for (name, event) in [
            ("create_branch.json", "create"),
            ("create_tag.json", "create"),
            ("delete_branch.json", "delete"),
            ("delete_tag.json", "delete"),
            ("release_published.json", "release"),
            ("issues_opened.json", "issues"),
        ] {
            assert_eq!(ignored(&cfg, name), format!("event '{event}' ignored"));
        }
        for (name, action) in [
            ("pull_request_edited.json", "edited"),
            ("pull_request_closed.json", "closed"),
            ("pull_request_closed_merged.json", "closed"),
        ] {
            assert_eq!(
                ignored(&cfg, name),
                format!("pull_request action '{action}' ignored")
            );
        }
    }

    #[test]
    fn pull_request_opened() {
        let c = changes(&signed_cfg(), "pull_request_opened.json");
        let c = &c[0];
        assert_eq!(c.branch.as_deref(), Some("master"));
        // The base revision, as buildbot_gitea; the head is `head_sha`.
        assert_eq!(
            c.revision.as_deref(),
            Some("e532cbfab4045c9c9ca8c5a578ed7abe73b365fe")
        );
        assert_eq!(c.category.as_deref(), Some("pull_request"));
        assert_eq!(
            c.author,
            "Isabell Example <isabell@noreply.git.example.org>"
        );
        assert_eq!(
            c.comments,
            "PR#3: Greet in German\n\nAdds `--lang de` so the program can say hallo.\n\nCloses #2"
        );
        assert_eq!(
            c.revlink.as_deref(),
            Some("https://git.example.org/isabell/hello-world/pulls/3")
        );
        assert_eq!(c.repository, REPO_SSH);
        assert_eq!(c.project, "isabell/hello-world");
        let expected: Value = json!({
            "event": "pull_request",
            "action": "opened",
            "pr_number": 3,
            "pr_id": 103,
            "base_branch": "master",
            "base_sha": "e532cbfab4045c9c9ca8c5a578ed7abe73b365fe",
            "base_repository": REPO_HTTPS,
            "head_branch": "feature/greeting",
            "head_sha": "e0440101b2afef798ce0cab80ce920569aea8466",
            "head_repository": REPO_HTTPS,
            "head_git_ssh_url": REPO_SSH,
            "base_git_ssh_url": REPO_SSH,
            "head_reponame": "hello-world",
            "head_owner": "isabell",
            "base_repo_id": 7,
            "head_repo_id": 7,
            "repository_name": "hello-world",
            "owner": "isabell",
        });
        assert_eq!(serde_json::to_value(&c.properties).unwrap(), expected);
    }

    /// `pull_request_checkout = "head"`: the change is the PR head, as
    /// before issue 19; the properties are the same.
    #[test]
    fn pull_request_checkout_head_carries_the_head_revision() {
        let cfg = GiteaDialect {
            pull_request_checkout: crate::config::PullRequestCheckout::Head,
            ..signed_cfg()
        };
        let head = &changes(&cfg, "pull_request_opened.json")[0];
        let merge = &changes(&signed_cfg(), "pull_request_opened.json")[0];
        assert_eq!(
            head.revision.as_deref(),
            Some("e0440101b2afef798ce0cab80ce920569aea8466")
        );
        assert_eq!(head.properties, merge.properties);
        assert_eq!(head.branch, merge.branch);
    }

    #[test]
    fn pull_request_from_fork_fetches_from_the_fork() {
        let c = changes(&signed_cfg(), "pull_request_opened_from_fork.json");
        let p = &c[0].properties;
        assert_eq!(
            p["head_repository"],
            json!("https://git.example.org/jdoe/hello-world.git")
        );
        assert_eq!(
            p["head_git_ssh_url"],
            json!("ssh://git@git.example.org:2222/jdoe/hello-world.git")
        );
        assert_eq!(p["base_repository"], json!(REPO_HTTPS));
        assert_eq!(p["pr_number"], json!(4));
        assert_eq!(p["head_owner"], json!("jdoe"));
        assert_eq!(p["head_repo_id"], json!(12));
        assert_eq!(p["base_repo_id"], json!(7));
        // Statuses go to the base repository: owner/repository_name are its.
        assert_eq!(p["owner"], json!("isabell"));
        assert_eq!(p["repository_name"], json!("hello-world"));
        // The change itself belongs to the base repository.
        assert_eq!(c[0].repository, REPO_SSH);
        assert_eq!(c[0].author, "Jane Doe <jdoe@noreply.git.example.org>");
        // Empty body: no trailing blank lines.
        assert_eq!(c[0].comments, "PR#4: Fix typo in README");
    }

    #[test]
    fn pull_request_synchronized_reopened_unmergeable() {
        let cfg = signed_cfg();
        for (name, action, sha, base) in [
            (
                "pull_request_synchronized.json",
                "synchronized",
                "6b57dd32d64a895890f920c3c4449d05401d2c1e",
                "e532cbfab4045c9c9ca8c5a578ed7abe73b365fe",
            ),
            (
                "pull_request_reopened.json",
                "reopened",
                "6b57dd32d64a895890f920c3c4449d05401d2c1e",
                "e532cbfab4045c9c9ca8c5a578ed7abe73b365fe",
            ),
            // `mergeable: false` is unreliable in Gitea: still built.
            (
                "pull_request_opened_unmergeable.json",
                "opened",
                "e6e01260f5fb3a4049206048d03bed7017cad585",
                "30f812f06745fba28d7060a9ecdd6c66b10d2a18",
            ),
        ] {
            let c = changes(&cfg, name);
            assert_eq!(c.len(), 1, "{name}");
            // pull_request_checkout = "merge" (default): the base revision.
            assert_eq!(c[0].revision.as_deref(), Some(base), "{name}");
            assert_eq!(c[0].properties["event"], json!("pull_request"), "{name}");
            assert_eq!(c[0].properties["action"], json!(action), "{name}");
            assert_eq!(c[0].properties["head_sha"], json!(sha), "{name}");
        }
    }

    #[test]
    fn only_mergeable_pull_request_skips_conflicting_opened_only() {
        let cfg = GiteaDialect {
            only_mergeable_pull_request: true,
            ..signed_cfg()
        };
        assert_eq!(
            ignored(&cfg, "pull_request_opened_unmergeable.json"),
            "pull request #5 ignored: not mergeable (only_mergeable_pull_request)"
        );
        // `mergeable: false` on synchronized/reopened only means "being
        // checked": still built.
        for name in [
            "pull_request_opened.json",
            "pull_request_synchronized.json",
            "pull_request_reopened.json",
        ] {
            assert_eq!(changes(&cfg, name).len(), 1, "{name}");
        }
    }

    #[test]
    fn signature_failures_are_forbidden() {
        let cfg = signed_cfg();
        let (mut headers, body) = fixture("push_branch_two_commits.json");

        set_header(&mut headers, "x-gitea-signature", &"0".repeat(64));
        let r = handle(&cfg, &request(&headers, &body));
        assert!(matches!(r, Err(HookError::Forbidden(_))), "{r:?}");

        // The signature of another fixture's body.
        let (other, _) = fixture("push_branch_one_commit.json");
        let other_sig = other
            .iter()
            .find(|(k, _)| k == "x-gitea-signature")
            .map(|(_, v)| v.clone())
            .unwrap();
        set_header(&mut headers, "x-gitea-signature", &other_sig);
        let r = handle(&cfg, &request(&headers, &body));
        assert!(matches!(r, Err(HookError::Forbidden(_))), "{r:?}");

        // Missing, and empty (what Gitea sends for a webhook without secret).
        headers.retain(|(k, _)| k != "x-gitea-signature");
        let r = handle(&cfg, &request(&headers, &body));
        assert_eq!(
            r,
            Err(HookError::Forbidden(
                "missing x-gitea-signature signature".into()
            ))
        );
        set_header(&mut headers, "x-gitea-signature", "");
        let r = handle(&cfg, &request(&headers, &body));
        assert!(matches!(r, Err(HookError::Forbidden(_))), "{r:?}");

        // Signature is checked before anything else: a broken, unsigned
        // body is 403, not 400.
        let r = handle(&cfg, &request(&headers, b"{not json"));
        assert!(matches!(r, Err(HookError::Forbidden(_))), "{r:?}");
        headers.retain(|(k, _)| k != "x-gitea-event");
        let r = handle(&cfg, &request(&headers, &body));
        assert!(matches!(r, Err(HookError::Forbidden(_))), "{r:?}");
    }

    #[test]
    fn no_secret_accepts_unsigned() {
        let (mut headers, body) = fixture("push_branch_one_commit.json");
        headers.retain(|(k, _)| !k.contains("signature"));
        let r = handle(&GiteaDialect::default(), &request(&headers, &body));
        assert!(matches!(r, Ok(HookOutcome::Changes { .. })), "{r:?}");
    }

    fn unsigned_push(body: &[u8]) -> Result<HookOutcome, HookError> {
        let headers = vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("x-gitea-event".to_string(), "push".to_string()),
        ];
        handle(&GiteaDialect::default(), &request(&headers, body))
    }

    fn assert_bad_request(r: Result<HookOutcome, HookError>, needle: &str) {
        match r {
            Err(HookError::BadRequest(m)) => assert!(m.contains(needle), "{m}"),
            other => panic!("expected 400 containing {needle:?}, got {other:?}"),
        }
    }

    #[test]
    fn malformed_bodies_are_bad_requests() {
        let (_, body) = fixture("push_branch_two_commits.json");
        assert_bad_request(unsigned_push(b"{not json"), "malformed JSON");
        assert_bad_request(unsigned_push(&body[..body.len() / 2]), "malformed JSON");
        assert_bad_request(unsigned_push(b""), "malformed JSON");
        let mut latin1 = body.clone();
        let at = latin1.iter().position(|&b| b == b'I').unwrap();
        latin1[at] = 0xE9;
        assert_bad_request(unsigned_push(&latin1), "UTF-8");
        // Well-formed JSON, wrong shape: the message names the field.
        assert_bad_request(unsigned_push(b"[]"), "invalid push payload");
        assert_bad_request(unsigned_push(br#"{"ref":"refs/heads/x"}"#), "after");
        assert_bad_request(
            unsigned_push(
                br#"{"ref":"refs/heads/x","after":"1","commits":[{"id":null}],"repository":{"full_name":"a/b"}}"#,
            ),
            "commits[0].id",
        );
        assert_bad_request(
            unsigned_push(
                br#"{"ref":"refs/heads/x","before":"2","after":"1","commits":[{"id":"1","timestamp":"yesterday"}],"repository":{"full_name":"a/b"}}"#,
            ),
            "bad RFC 3339 timestamp 'yesterday'",
        );
        // Correctly signed garbage passes the signature check, then is 400.
        let garbage = b"{\"ref\": ";
        let headers = vec![
            ("x-gitea-event".to_string(), "push".to_string()),
            (
                "x-gitea-signature".to_string(),
                crate::web::dialects::testutil::sign(FIXTURE_SECRET, garbage),
            ),
        ];
        assert_bad_request(
            handle(&signed_cfg(), &request(&headers, garbage)),
            "malformed JSON",
        );
        // Missing event header.
        let r = handle(
            &GiteaDialect::default(),
            &request(&[("content-type".into(), "application/json".into())], &body),
        );
        assert_bad_request(r, "x-gitea-event");
        // Ignored events still need a readable body.
        let r = handle(
            &GiteaDialect::default(),
            &request(&[("x-gitea-event".into(), "issues".into())], b"{"),
        );
        assert_bad_request(r, "malformed JSON");
    }

    #[test]
    fn minimal_payload_tolerates_missing_optional_fields() {
        // Older/trimmed payloads: no head_commit, no committer, null lists.
        let body = br#"{"ref":"refs/heads/main","before":"a1","after":"b2",
            "commits":[{"id":"b2","message":"m","author":{"name":"N"},
                        "added":null,"timestamp":"2024-06-04T08:25:40Z"}],
            "repository":{"full_name":"o/r","clone_url":"https://h/o/r.git",
                          "owner":{"username":"o"}}}"#;
        let Ok(HookOutcome::Changes { changes, delivery }) = unsigned_push(body) else {
            panic!()
        };
        assert_eq!(delivery, None);
        let c = &changes[0];
        assert_eq!(c.author, "N");
        assert_eq!(c.committer, None);
        assert_eq!(c.files, Vec::<String>::new());
        assert_eq!(c.repository, "https://h/o/r.git"); // no ssh_url
        assert_eq!(c.properties["owner"], json!("o"));
        assert_eq!(c.properties["repository_name"], json!("r"));
        assert_eq!(c.when_timestamp, 1717489540);
    }

    #[test]
    fn empty_commits_use_head_commit() {
        // E.g. a force push back to an ancestor: nothing new, head moved.
        let body = br#"{"ref":"refs/heads/main","before":"a1","after":"b2","commits":[],
            "head_commit":{"id":"b2","message":"m"},
            "repository":{"full_name":"o/r"}}"#;
        let Ok(HookOutcome::Changes { changes, .. }) = unsigned_push(body) else {
            panic!()
        };
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].revision.as_deref(), Some("b2"));
    }

    #[test]
    fn form_encoded_payload() {
        let (mut headers, body) = fixture("push_branch_two_commits.json");
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", std::str::from_utf8(&body).unwrap())
            .finish();
        set_header(
            &mut headers,
            "content-type",
            "application/x-www-form-urlencoded",
        );
        // Gitea signs the JSON payload, not the form it sends
        // (services/webhook/deliver.go): the fixture's own signature holds.
        let r = handle(&signed_cfg(), &request(&headers, form.as_bytes()));
        let Ok(HookOutcome::Changes { changes, .. }) = r else {
            panic!("{r:?}")
        };
        assert_eq!(changes.len(), 2);
        // A signature of the form bytes is not what Gitea sends: refused.
        let sig = crate::web::dialects::testutil::sign(FIXTURE_SECRET, form.as_bytes());
        set_header(&mut headers, "x-gitea-signature", &sig);
        let r = handle(&signed_cfg(), &request(&headers, form.as_bytes()));
        assert!(matches!(r, Err(HookError::Forbidden(_))), "{r:?}");

        let r = handle(&signed_cfg(), &request(&headers, b"x=1"));
        assert!(matches!(r, Err(HookError::Forbidden(_))));
        let r = handle(&GiteaDialect::default(), &request(&headers, b"x=1"));
        assert_bad_request(r, "'payload'");
    }

    /// A push payload whose head commit says `message`.
    fn push_with_message(message: &str) -> Vec<u8> {
        let (_, body) = fixture("push_branch_two_commits.json");
        let mut v: Value = serde_json::from_slice(&body).unwrap();
        v["head_commit"]["message"] = json!(message);
        v["commits"][0]["message"] = json!(message);
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn skip_markers_skip_pushes_and_pull_requests() {
        let cfg = GiteaDialect::default();
        for msg in [
            "Fix [skip ci]",
            "[ci skip] docs",
            "wip [ skip  ci ]\n\nbody",
        ] {
            let r = unsigned_push(&push_with_message(msg));
            let Ok(HookOutcome::Ignored(why)) = r else {
                panic!("{msg}: {r:?}")
            };
            assert!(
                why.starts_with(
                    "push to branch 'master' skipped: the head commit message matches skip pattern"
                ),
                "{why}"
            );
        }
        // Only the head commit decides (an older commit's marker does not).
        let (_, body) = fixture("push_branch_two_commits.json");
        let mut v: Value = serde_json::from_slice(&body).unwrap();
        v["commits"][1]["message"] = json!("old [skip ci]");
        let r = unsigned_push(&serde_json::to_vec(&v).unwrap());
        assert!(matches!(r, Ok(HookOutcome::Changes { .. })), "{r:?}");
        // A PR: its title or description.
        let (headers, body) = fixture("pull_request_opened.json");
        let mut v: Value = serde_json::from_slice(&body).unwrap();
        v["pull_request"]["title"] = json!("Greet [ci skip]");
        let body = serde_json::to_vec(&v).unwrap();
        let mut unsigned = headers.clone();
        unsigned.retain(|(k, _)| !k.contains("signature"));
        assert_eq!(
            handle(&cfg, &request(&unsigned, &body)),
            Ok(HookOutcome::Ignored(format!(
                "pull request #3 skipped: the pull request's title or description matches skip pattern {:?}",
                crate::config::DEFAULT_SKIPS[1]
            )))
        );
        // `skips = []` builds everything; a custom pattern replaces the defaults.
        let none = GiteaDialect {
            skips: vec![],
            ..Default::default()
        };
        let r = handle(&none, &request(&unsigned, &body));
        assert!(matches!(r, Ok(HookOutcome::Changes { .. })), "{r:?}");
        let custom = GiteaDialect {
            skips: vec![crate::config::Pattern {
                source: "NOBUILD".into(),
                re: regex_lite::Regex::new("NOBUILD").unwrap(),
            }],
            ..Default::default()
        };
        let r = handle(&custom, &request(&unsigned, &body));
        assert!(matches!(r, Ok(HookOutcome::Changes { .. })), "{r:?}");
        let r = handle(
            &custom,
            &request(
                &[("x-gitea-event".into(), "push".into())],
                &push_with_message("x NOBUILD"),
            ),
        );
        assert!(matches!(r, Ok(HookOutcome::Ignored(_))), "{r:?}");
    }

    #[test]
    fn codebase_and_repository_url_options() {
        let (headers, body) = fixture("push_branch_one_commit.json");
        let mut req = request(&headers, &body);
        let cfg = GiteaDialect {
            codebase: Some("main-cb".into()),
            repository_url: crate::config::RepositoryUrl::Clone,
            ..signed_cfg()
        };
        let Ok(HookOutcome::Changes { changes, .. }) = handle(&cfg, &req) else {
            panic!()
        };
        assert_eq!(changes[0].codebase, "main-cb");
        assert_eq!(changes[0].repository, REPO_HTTPS);

        req.query = vec![("codebase".into(), "from-query".into())];
        let Ok(HookOutcome::Changes { changes, .. }) = handle(&cfg, &req) else {
            panic!()
        };
        assert_eq!(changes[0].codebase, "from-query");
    }

    /// The PR poller's change for a pull request Gitea's API lists (the
    /// same `api.PullRequest` a delivery carries) is the delivery's change,
    /// also from a fork and with `pull_request_checkout = "head"`; a skip
    /// pattern in the title skips it as it skips the hook.
    #[test]
    fn a_listed_pull_request_makes_the_deliverys_change() {
        let head = GiteaDialect {
            pull_request_checkout: crate::config::PullRequestCheckout::Head,
            ..signed_cfg()
        };
        let listed = |name: &str, edit: &dyn Fn(&mut Value)| {
            let (_, body) = fixture(name);
            let mut v: Value = serde_json::from_slice(&body).unwrap();
            edit(&mut v["pull_request"]);
            let list = serde_json::to_string(&[&v["pull_request"]]).unwrap();
            let mut pulls = crate::web::dialects::listed_pulls(&list, "list").unwrap();
            assert_eq!(pulls.len(), 1);
            pulls.remove(0)
        };
        for cfg in [signed_cfg(), head] {
            for (name, action) in [
                ("pull_request_opened.json", "opened"),
                ("pull_request_opened_from_fork.json", "opened"),
                ("pull_request_synchronized.json", "synchronized"),
            ] {
                let pr = listed(name, &|_| {});
                assert_eq!(pr.number(), changes(&cfg, name)[0].properties["pr_number"]);
                let out = listed_pull_request(&cfg, pr, action).unwrap();
                let HookOutcome::Changes { changes: got, .. } = out else {
                    panic!("{name}: {out:?}")
                };
                assert_eq!(got, changes(&cfg, name), "{name}");
            }
        }
        let skipped = listed("pull_request_opened.json", &|pr| {
            pr["title"] = "WIP [skip ci]".into();
        });
        let out = listed_pull_request(&signed_cfg(), skipped, "opened").unwrap();
        assert!(
            matches!(&out, HookOutcome::Ignored(why) if why.contains("skip")),
            "{out:?}"
        );
        // Not Gitea's list: an error naming the JSON path, no panic.
        let err = crate::web::dialects::listed_pulls(r#"[{"number": "x"}]"#, "list").unwrap_err();
        assert!(err.to_string().contains("[0]"), "{err}");
    }
}
