//! What Gitea and GitHub webhooks have in common: push and pull_request
//! payloads of the same shape, turned into changes.
//!
//! Owns: the serde model of those payloads and the request flow shared by
//! the `gitea` and `github` dialects (signature → event → body → changes).
//! The two forges differ only in the facts captured by [`Forge`]: header
//! names, the order of `commits`, and the PR action names that mean "the
//! head moved". No threads or channels; the HTTP layer calls it.
//!
//! The serde structs ignore unknown fields and take everything that is not
//! essential as `Option`, so Gitea 1.21 (fewer fields), 1.22 and GitHub
//! payloads all deserialize, and a `null` where a list was expected is read
//! as empty.

use super::{
    bad, body_kind, check_signature, forge_json_text, is_zero_sha, parse_rfc3339, select_codebase,
    select_repository_url, typed_json, BodyKind, HookError, HookOutcome, HookRequest,
    SignatureHeader,
};
use crate::config::{GiteaDialect, PullRequestCheckout};
use crate::model::{now, NewChange};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// The per-forge facts; everything else is shared.
pub(super) struct Forge {
    pub event_header: &'static str,
    pub delivery_header: &'static str,
    /// Where the signature may be, strongest first (the first one present
    /// decides).
    pub signatures: &'static [SignatureHeader],
    pub signed: Signed,
    /// Whose change mapping: buildbot_gitea's or Buildbot's GitHub hook's.
    pub mapping: Mapping,
    /// Gitea lists `commits` newest first (`git rev-list`), GitHub oldest
    /// first. Changes are always stored oldest first.
    pub commits_newest_first: bool,
    /// `pull_request` actions that put a new head sha up for testing.
    pub pr_build_actions: &'static [&'static str],
}

/// What a forge's HMAC covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Signed {
    /// The JSON payload, also when it is sent form-encoded as
    /// `payload=<urlencoded JSON>`: Gitea computes its signatures over
    /// `t.PayloadContent` before choosing the body (services/webhook/deliver.go).
    Payload,
    /// The bytes sent, whatever the content type (GitHub), or for a form
    /// the payload (Gitea posting GitHub-format headers: its deliveries
    /// carry `X-Hub-Signature(-256)` computed as above). Either way the
    /// signer knew the secret.
    BodyOrPayload,
}

/// Which Buildbot hook the changes follow (docs/gitea.md, "Differences").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mapping {
    /// buildbot_gitea's `GiteaHandler`: category = the event, a PR change on
    /// the base branch.
    Gitea,
    /// Buildbot's `GitHubEventHandler`: no category for branch pushes,
    /// `github_distinct`, a PR change on `refs/pull/N/merge`, category
    /// `pull`.
    GitHub,
}

/// `pull_request_ref` of Buildbot's GitHub hook (its default): the branch
/// name a GitHub PR change carries is `refs/pull/<number>/merge`.
const GITHUB_PR_REF: &str = "merge";

#[derive(Debug, Clone, Deserialize)]
struct Account {
    login: Option<String>,
    /// Older Gitea versions also send `username` (buildbot_gitea reads it).
    username: Option<String>,
    full_name: Option<String>,
    email: Option<String>,
}

impl Account {
    fn login(&self) -> Option<&str> {
        self.login.as_deref().or(self.username.as_deref())
    }

    /// buildbot_gitea's PR author, "Full Name <email>"; the login when
    /// Gitea sends neither.
    fn author(&self) -> String {
        let person = Person {
            name: self.full_name.clone(),
            email: self.email.clone(),
        };
        match person.render() {
            a if a.is_empty() => self.login().unwrap_or("").to_string(),
            a => a,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
struct Repository {
    id: Option<i64>,
    full_name: String,
    name: Option<String>,
    ssh_url: Option<String>,
    clone_url: Option<String>,
    html_url: Option<String>,
    owner: Option<Account>,
}

impl Repository {
    fn ssh_url(&self) -> &str {
        self.ssh_url.as_deref().unwrap_or("")
    }
    fn clone_url(&self) -> &str {
        self.clone_url.as_deref().unwrap_or("")
    }
    fn html_url(&self) -> &str {
        self.html_url.as_deref().unwrap_or("")
    }
    fn name(&self) -> &str {
        self.name
            .as_deref()
            .unwrap_or_else(|| self.full_name.rsplit('/').next().unwrap_or(""))
    }
    fn owner(&self) -> &str {
        self.owner
            .as_ref()
            .and_then(Account::login)
            .unwrap_or_else(|| self.full_name.split('/').next().unwrap_or(""))
    }
}

#[derive(Debug, Deserialize)]
struct Person {
    name: Option<String>,
    email: Option<String>,
}

impl Person {
    /// "Name <email>", Buildbot's author format; degrades gracefully when a
    /// part is missing.
    fn render(&self) -> String {
        let name = self.name.as_deref().unwrap_or("");
        match self.email.as_deref().unwrap_or("") {
            "" => name.to_string(),
            email if name.is_empty() => format!("<{email}>"),
            email => format!("{name} <{email}>"),
        }
    }
}

#[derive(Debug, Deserialize)]
struct Commit {
    id: String,
    message: Option<String>,
    url: Option<String>,
    author: Option<Person>,
    committer: Option<Person>,
    timestamp: Option<String>,
    /// GitHub: false when the commit was already on another branch.
    distinct: Option<bool>,
    added: Option<Vec<String>>,
    removed: Option<Vec<String>>,
    modified: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct PushPayload {
    #[serde(rename = "ref")]
    git_ref: String,
    before: Option<String>,
    after: String,
    commits: Option<Vec<Commit>>,
    head_commit: Option<Commit>,
    repository: Repository,
}

#[derive(Debug, Deserialize)]
struct PrSide {
    #[serde(rename = "ref")]
    git_ref: String,
    sha: String,
    /// Null when a fork has been deleted.
    repo: Option<Repository>,
}

#[derive(Debug, Deserialize)]
struct PullRequest {
    id: i64,
    number: i64,
    title: Option<String>,
    body: Option<String>,
    user: Option<Account>,
    html_url: Option<String>,
    #[serde(rename = "_links")]
    links: Option<Links>,
    updated_at: Option<String>,
    created_at: Option<String>,
    /// GitHub: how many commits the PR has.
    commits: Option<i64>,
    /// Gitea: false while the conflict check runs; GitHub: often null.
    mergeable: Option<bool>,
    head: PrSide,
    base: PrSide,
}

/// GitHub's `_links.html.href`, the PR page Buildbot uses as revlink.
#[derive(Debug, Deserialize)]
struct Links {
    html: Option<Link>,
}

#[derive(Debug, Deserialize)]
struct Link {
    href: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PullRequestEvent {
    action: String,
    pull_request: PullRequest,
    repository: Repository,
    sender: Option<Account>,
}

/// The request flow of both forges. The signature is checked first, over
/// the raw body, so a bad or missing one stops everything (403).
pub(super) fn handle(
    forge: &Forge,
    cfg: &GiteaDialect,
    req: &HookRequest,
) -> Result<HookOutcome, HookError> {
    // The signature comes before any JSON is parsed. A form-encoded
    // delivery may be signed over its `payload` field (Gitea), so only that
    // form is decoded first (the url crate's decoder, no JSON).
    let secret = cfg.secret.as_deref();
    let form = body_kind(req, BodyKind::Json)? == BodyKind::Form;
    if !form {
        check_signature(secret, req, forge.signatures, &[req.body])?;
    }
    let (text, doc) = match forge_json_text(req) {
        Ok(t) => t,
        // No payload, so nothing signed: with a secret that is a 403, so an
        // unsigned request learns nothing about the parser.
        Err(e) if form && secret.is_some() => {
            return Err(HookError::Forbidden(format!(
                "signature cannot be checked: {e}"
            )))
        }
        Err(e) => return Err(e),
    };
    if form {
        let signed: &[&[u8]] = match forge.signed {
            Signed::Payload => &[text.as_bytes()],
            Signed::BodyOrPayload => &[req.body, text.as_bytes()],
        };
        check_signature(secret, req, forge.signatures, signed)?;
    }
    let event = req
        .header(forge.event_header)
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .ok_or_else(|| bad(format!("missing {} header", forge.event_header)))?;
    let repo_ctx = |repo: &Repository| Target {
        repository: select_repository_url(cfg, repo.ssh_url(), repo.clone_url(), repo.html_url()),
        project: repo.full_name.clone(),
        codebase: select_codebase(req, cfg.codebase.as_deref()),
    };
    let changes = match event {
        "push" => {
            let p: PushPayload = typed_json(&text, doc, "push payload")?;
            let target = repo_ctx(&p.repository);
            push_changes(forge, cfg, p, target)?
        }
        "pull_request" => {
            let p: PullRequestEvent = typed_json(&text, doc, "pull_request payload")?;
            let target = repo_ctx(&p.repository);
            pull_request_changes(forge, cfg, p, target)?
        }
        // create/delete duplicate what push already says (or, for a branch
        // delete, have nothing to build); issues, releases, reviews, ping...
        // carry no new code.
        other => {
            // Still a 400 for a broken sender, though nothing is read.
            typed_json::<serde::de::IgnoredAny>(&text, doc, "payload")?;
            Err(format!("event '{other}' ignored"))
        }
    };
    Ok(match changes {
        Ok(changes) => HookOutcome::Changes {
            changes,
            delivery: req
                .header(forge.delivery_header)
                .filter(|d| !d.is_empty())
                .map(str::to_string),
        },
        Err(why) => HookOutcome::Ignored(why),
    })
}

/// A pull request as Gitea's API lists it (`GET
/// /api/v1/repos/{owner}/{repo}/pulls`): `api.PullRequest`, the same
/// struct a `pull_request` delivery carries, so the PR poller
/// (`master::pr_poller`) makes the webhook's change from it.
#[derive(Debug)]
pub(crate) struct ListedPull(PullRequest);

impl ListedPull {
    pub(crate) fn number(&self) -> i64 {
        self.0.number
    }

    pub(crate) fn head_sha(&self) -> &str {
        &self.0.head.sha
    }

    pub(crate) fn base_sha(&self) -> &str {
        &self.0.base.sha
    }

    /// The base repository's `owner/name`, when Gitea sent it.
    pub(crate) fn base_full_name(&self) -> Option<&str> {
        self.0.base.repo.as_ref().map(|r| r.full_name.as_str())
    }
}

/// One page of Gitea's pull request list; `doc` names it in errors.
pub(crate) fn listed_pulls(text: &str, doc: &str) -> Result<Vec<ListedPull>, HookError> {
    let list: Vec<PullRequest> = typed_json(text, doc, "pull request list")?;
    Ok(list.into_iter().map(ListedPull).collect())
}

/// The change a `pull_request` delivery with `action` would carry for
/// `pr`: the same function, with the base repository standing in for the
/// delivery's `repository` (which is the base repository) and no sender.
pub(super) fn listed_pull_changes(
    forge: &Forge,
    cfg: &GiteaDialect,
    pr: ListedPull,
    action: &str,
) -> Result<HookOutcome, HookError> {
    let pr = pr.0;
    let Some(repository) = pr.base.repo.clone() else {
        return Err(bad(format!(
            "pull request #{} has no base repository",
            pr.number
        )));
    };
    let target = Target {
        repository: select_repository_url(
            cfg,
            repository.ssh_url(),
            repository.clone_url(),
            repository.html_url(),
        ),
        project: repository.full_name.clone(),
        codebase: cfg.codebase.clone().unwrap_or_default(),
    };
    let event = PullRequestEvent {
        action: action.to_string(),
        pull_request: pr,
        repository,
        sender: None,
    };
    Ok(match pull_request_changes(forge, cfg, event, target)? {
        Ok(changes) => HookOutcome::Changes {
            changes,
            delivery: None,
        },
        Err(why) => HookOutcome::Ignored(why),
    })
}

/// Where the changes of one payload go.
struct Target {
    repository: String,
    project: String,
    codebase: String,
}

/// `Ok(Err(reason))` = understood, nothing to build.
type Built = Result<Result<Vec<NewChange>, String>, HookError>;

fn push_changes(forge: &Forge, cfg: &GiteaDialect, p: PushPayload, target: Target) -> Built {
    let (is_tag, name) = if let Some(b) = p.git_ref.strip_prefix("refs/heads/") {
        (false, b.to_string())
    } else if let Some(t) = p.git_ref.strip_prefix("refs/tags/") {
        (true, t.to_string())
    } else {
        return Ok(Err(format!(
            "push to '{}' ignored: not a branch or tag",
            p.git_ref
        )));
    };
    let kind = if is_tag { "tag" } else { "branch" };
    if is_zero_sha(&p.after) {
        // Gitea sends this for tag deletes (branch deletes come only as a
        // `delete` event); GitHub for both.
        return Ok(Err(format!("deletion of {kind} '{name}' ignored")));
    }
    // The head commit's message decides, as in Buildbot's GitHub hook.
    let head_message = p
        .head_commit
        .as_ref()
        .or_else(|| p.commits.iter().flatten().find(|c| c.id == p.after))
        .and_then(|c| c.message.as_deref());
    if let Some(why) = head_message.and_then(|m| skip_reason(cfg, m, "head commit message")) {
        return Ok(Err(format!("push to {kind} '{name}' skipped: {why}")));
    }

    let mut props = BTreeMap::new();
    props.insert("event".to_string(), Value::from("push"));
    props.insert(
        "repository_name".to_string(),
        Value::from(p.repository.name()),
    );
    props.insert("owner".to_string(), Value::from(p.repository.owner()));

    if is_tag {
        // `after` is the tag object for annotated tags and `commits` is
        // empty; `head_commit` is the peeled commit, which is what to build.
        let Some(head) = p.head_commit else {
            return Err(bad(format!("push of tag '{name}' has no head_commit")));
        };
        props.insert("tag".to_string(), Value::from(name.as_str()));
        let change = commit_change(forge, head, &name, Some("tag"), &props, &target)?;
        return Ok(Ok(vec![change]));
    }

    let mut commits = p.commits.unwrap_or_default();
    if forge.commits_newest_first {
        commits.reverse();
    }
    // A new branch's `commits` are not new commits (Gitea: up to 5 commits
    // reachable from the head, most already known), so only the head is a
    // change, as Buildbot's GitHub hook does for `created`.
    let new_branch = p.before.as_deref().is_some_and(is_zero_sha);
    if commits.is_empty() || new_branch || cfg.only_include_push_commit {
        let head = match commits.iter().position(|c| c.id == p.after) {
            Some(i) => Some(commits.swap_remove(i)),
            None => p.head_commit.or_else(|| commits.pop()),
        };
        let Some(head) = head else {
            return Ok(Err(format!(
                "push to branch '{name}' ignored: it carries no commits"
            )));
        };
        commits = vec![head];
    }
    // buildbot_gitea: the event; Buildbot's GitHub hook: none, its
    // "legacy category for when hook only supported push".
    let category = match forge.mapping {
        Mapping::Gitea => Some("push"),
        Mapping::GitHub => None,
    };
    let changes = commits
        .into_iter()
        .map(|c| commit_change(forge, c, &name, category, &props, &target))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Ok(changes))
}

/// Why `text` skips the build: the first of the dialect's `skips` patterns
/// (by default Buildbot's `[skip ci]` / `[ci skip]`) it contains.
fn skip_reason(cfg: &GiteaDialect, text: &str, what: &str) -> Option<String> {
    cfg.skips
        .iter()
        .find(|p| p.is_match(text))
        .map(|p| format!("the {what} matches skip pattern {:?}", p.source))
}

fn commit_change(
    forge: &Forge,
    c: Commit,
    branch: &str,
    category: Option<&str>,
    props: &BTreeMap<String, Value>,
    target: &Target,
) -> Result<NewChange, HookError> {
    let when_timestamp = timestamp(c.timestamp.as_deref(), &format!("commit {}", c.id))?;
    let files = [c.added, c.modified, c.removed]
        .into_iter()
        .flatten()
        .flatten()
        .collect();
    let mut properties = props.clone();
    match forge.mapping {
        Mapping::Gitea => {}
        Mapping::GitHub => {
            properties.insert(
                "github_distinct".to_string(),
                Value::from(c.distinct.unwrap_or(true)),
            );
        }
    }
    Ok(NewChange {
        author: c.author.as_ref().map(Person::render).unwrap_or_default(),
        committer: c.committer.as_ref().map(Person::render),
        comments: c.message.unwrap_or_default(),
        branch: Some(branch.to_string()),
        revision: Some(c.id),
        repository: target.repository.clone(),
        project: target.project.clone(),
        category: category.map(str::to_string),
        codebase: target.codebase.clone(),
        revlink: c.url.filter(|u| !u.is_empty()),
        when_timestamp,
        files,
        properties,
    })
}

/// A payload timestamp in Unix seconds; absent means "now" (as Buildbot
/// does for changes without a time), unparsable is the sender's bug: 400.
fn timestamp(ts: Option<&str>, what: &str) -> Result<i64, HookError> {
    match ts.filter(|t| !t.is_empty()) {
        None => Ok(now()),
        Some(t) => {
            parse_rfc3339(t).ok_or_else(|| bad(format!("{what}: bad RFC 3339 timestamp '{t}'")))
        }
    }
}

fn pull_request_changes(
    forge: &Forge,
    cfg: &GiteaDialect,
    p: PullRequestEvent,
    target: Target,
) -> Built {
    let action = p.action.as_str();
    if !forge.pr_build_actions.contains(&action) {
        // `edited` only ever reports title/body/base changes (Gitea's
        // ChangesPayload, GitHub's `changes`), never a new head; `closed`
        // (merged or not) builds nothing: a merge arrives as its own push.
        return Ok(Err(format!("pull_request action '{action}' ignored")));
    }
    // Only `opened` carries a real conflict check (see GiteaDialect).
    if cfg.only_mergeable_pull_request
        && action == "opened"
        && p.pull_request.mergeable == Some(false)
    {
        return Ok(Err(format!(
            "pull request #{} ignored: not mergeable (only_mergeable_pull_request)",
            p.pull_request.number
        )));
    }
    let pr = p.pull_request;
    let title = pr.title.unwrap_or_default();
    let body = pr.body.unwrap_or_default();
    // Buildbot reads the head commit's message from GitHub's API; neither
    // forge's payload carries it and the hook makes no API calls (it runs
    // on the HTTP thread), so the PR's title and description are checked.
    let skip_text = format!("{title}\n{body}");
    if let Some(why) = skip_reason(cfg, &skip_text, "pull request's title or description") {
        return Ok(Err(format!("pull request #{} skipped: {why}", pr.number)));
    }
    let repo_url = |r: &Option<Repository>, f: fn(&Repository) -> &str| {
        r.as_ref()
            .map_or(Value::Null, |r| Value::from(f(r).to_string()))
    };
    let repo_id = |r: &Option<Repository>| {
        r.as_ref()
            .and_then(|r| r.id)
            .map_or(Value::Null, Value::from)
    };
    let base_repository = match repo_url(&pr.base.repo, Repository::clone_url) {
        Value::Null => Value::from(p.repository.clone_url()),
        v => v,
    };
    let html_url = pr.html_url.filter(|u| !u.is_empty());
    let mut props: BTreeMap<String, Value> = [
        // buildbot_gitea and Buildbot's GitHub hook: the event, not the
        // action, so `event == "pull_request"` checks carry over.
        ("event", Value::from("pull_request")),
        ("action", Value::from(action)),
        ("pr_number", Value::from(pr.number)),
        ("pr_id", Value::from(pr.id)),
        ("base_branch", Value::from(pr.base.git_ref.as_str())),
        ("base_sha", Value::from(pr.base.sha.as_str())),
        ("base_repository", base_repository),
        ("head_branch", Value::from(pr.head.git_ref.as_str())),
        ("head_sha", Value::from(pr.head.sha.as_str())),
        // A fork PR must be fetched from the fork: its clone URL, not ours.
        (
            "head_repository",
            repo_url(&pr.head.repo, Repository::clone_url),
        ),
        (
            "head_git_ssh_url",
            repo_url(&pr.head.repo, Repository::ssh_url),
        ),
        // The rest of buildbot_gitea's properties, so its configs work.
        (
            "base_git_ssh_url",
            repo_url(&pr.base.repo, Repository::ssh_url),
        ),
        ("head_reponame", repo_url(&pr.head.repo, Repository::name)),
        ("head_owner", repo_url(&pr.head.repo, Repository::owner)),
        ("base_repo_id", repo_id(&pr.base.repo)),
        ("head_repo_id", repo_id(&pr.head.repo)),
        ("repository_name", Value::from(p.repository.name())),
        ("owner", Value::from(p.repository.owner())),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let login = |a: &Option<Account>| {
        a.as_ref()
            .and_then(Account::login)
            .unwrap_or("")
            .to_string()
    };
    let change = match forge.mapping {
        Mapping::Gitea => NewChange {
            author: pr.user.as_ref().map(Account::author).unwrap_or_default(),
            committer: None,
            // buildbot_gitea's 'PR#{}: {}\n\n{}', without the blank lines
            // after an empty description.
            comments: if body.is_empty() {
                format!("PR#{}: {title}", pr.number)
            } else {
                format!("PR#{}: {title}\n\n{body}", pr.number)
            },
            // The base branch, so branch schedulers see which line the PR
            // targets; the category and properties say it is a PR.
            branch: Some(pr.base.git_ref),
            // As buildbot_gitea: the base revision, the head in `head_sha`;
            // the build merges the head into it (`master::build`).
            revision: Some(match cfg.pull_request_checkout {
                PullRequestCheckout::Merge => pr.base.sha.clone(),
                PullRequestCheckout::Head => pr.head.sha,
            }),
            repository: target.repository,
            project: target.project,
            category: Some("pull_request".to_string()),
            codebase: target.codebase,
            revlink: html_url,
            when_timestamp: timestamp(
                pr.updated_at.as_deref(),
                &format!("pull request #{}", pr.number),
            )?,
            files: vec![],
            properties: props,
        },
        Mapping::GitHub => {
            // Buildbot's GitHub hook, field by field (handle_pull_request).
            let revlink = pr
                .links
                .and_then(|l| l.html)
                .and_then(|h| h.href)
                .filter(|u| !u.is_empty())
                .or(html_url);
            props.insert(
                "pullrequesturl".to_string(),
                revlink.clone().map_or(Value::Null, Value::from),
            );
            props.insert(
                "basename".to_string(),
                Value::from(pr.base.git_ref.as_str()),
            );
            let commits = pr.commits.unwrap_or(0);
            let plural = if commits == 1 { "" } else { "s" };
            NewChange {
                author: login(&p.sender),
                committer: None,
                comments: format!(
                    "GitHub Pull Request #{} ({commits} commit{plural})\n{title}\n{body}",
                    pr.number
                ),
                branch: Some(format!("refs/pull/{}/{GITHUB_PR_REF}", pr.number)),
                // As buildbot_gitea: the base revision, the head in `head_sha`;
                // the build merges the head into it (`master::build`).
                revision: Some(match cfg.pull_request_checkout {
                    PullRequestCheckout::Merge => pr.base.sha.clone(),
                    PullRequestCheckout::Head => pr.head.sha,
                }),
                repository: target.repository,
                project: pr
                    .base
                    .repo
                    .as_ref()
                    .map_or(target.project, |r| r.full_name.clone()),
                category: Some("pull".to_string()),
                codebase: target.codebase,
                revlink,
                when_timestamp: timestamp(
                    pr.created_at.as_deref(),
                    &format!("pull request #{}", pr.number),
                )?,
                files: vec![],
                properties: props,
            }
        }
    };
    Ok(Ok(vec![change]))
}
