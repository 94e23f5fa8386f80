//! `minibot gitea sync` against the fake Gitea (issue 19 point 8): hooks
//! created for the repositories master.cfg builds, a second run changes
//! nothing, a differing hook is patched, a secret change replaces it,
//! hooks to other URLs stay, `--dry-run` writes nothing, a bad token or a
//! token file others may read is refused.

use crate::common::fake_gitea::HookRequest;
use crate::common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

const TOKEN: &str = "gitea-api-token-1";
const HOOK_URL: &str = "https://ci.example.org/change_hook/gitea";

struct Sync {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    gitea: FakeGitea,
}

/// A master directory whose builders check out alice/app (https, twice)
/// and bob/lib (scp-like ssh) from the fake Gitea, and one repository on
/// another host.
fn setup(secret: &str) -> Sync {
    let gitea = FakeGitea::start(TOKEN);
    for r in ["alice/app", "bob/lib"] {
        gitea.hooks.lock().unwrap().repos.insert(r.into(), vec![]);
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("master");
    std::fs::create_dir(&dir).unwrap();
    write_cfg(&dir, &gitea, secret, "https://ci.example.org/");
    write_private(&dir.join("gitea-token"), &format!("{TOKEN}\n"));
    Sync {
        _tmp: tmp,
        dir,
        gitea,
    }
}

fn write_cfg(dir: &Path, gitea: &FakeGitea, secret: &str, buildbot_url: &str) {
    let builder = |name: &str, url: &str| {
        format!(
            "[[builders]]\nname = \"{name}\"\nworkers = [\"w\"]\n\
             [[builders.steps]]\ntype = \"git\"\nrepourl = \"{url}\"\n"
        )
    };
    let cfg = format!(
        r#"buildbot_url = "{buildbot_url}"
[www]
port = 0
[www.change_hook_dialects.gitea]
secret = "{secret}"
[protocols.worker]
port = 0
[[workers]]
name = "w"
password = "{WORKER_PW}"
[[reporters]]
type = "gitea_status"
base_url = "{url}"
token_file = "gitea-token"
{b1}{b2}{b3}{b4}"#,
        url = gitea.url(),
        b1 = builder("app", &format!("{}/alice/app.git", gitea.url())),
        b2 = builder("lib", "git@127.0.0.1:bob/lib.git"),
        b3 = builder("elsewhere", "https://github.com/x/y.git"),
        b4 = builder("app-again", &format!("{}/alice/app", gitea.url())),
    );
    write_private(&dir.join("master.cfg"), &cfg);
}

/// (exit code, stdout, stderr) of `minibot gitea sync [args] DIR`.
fn sync(s: &Sync, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["gitea", "sync"];
    all.extend_from_slice(args);
    all.push(s.dir.to_str().unwrap());
    let out = run(MINIBOT, &all);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn hooks(s: &Sync, repo: &str) -> Vec<Value> {
    s.gitea.hooks.lock().unwrap().repos[repo].clone()
}

fn requests(s: &Sync) -> Vec<HookRequest> {
    s.gitea.hooks.lock().unwrap().requests.clone()
}

fn writes(s: &Sync) -> usize {
    requests(s).iter().filter(|r| r.writes()).count()
}

fn no_problems(s: &Sync) {
    let p = s.gitea.problems.lock().unwrap().clone();
    assert!(p.is_empty(), "requests against the swagger: {p:?}");
}

fn line_for<'a>(out: &'a str, repo: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(&format!("{repo} on ")))
        .unwrap_or_else(|| panic!("no line for {repo} in:\n{out}"))
}

#[test]
fn first_sync_creates_both_hooks_and_the_second_writes_nothing() {
    let s = setup(SECRET);
    let (code, out, err) = sync(&s, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(line_for(&out, "alice/app").ends_with(": created"), "{out}");
    assert!(line_for(&out, "bob/lib").ends_with(": created"), "{out}");
    assert!(out.contains(&format!("hook URL: {HOOK_URL}")), "{out}");
    assert!(
        out.contains("skipped https://github.com/x/y.git: not on this Gitea"),
        "{out}"
    );
    for repo in ["alice/app", "bob/lib"] {
        let h = hooks(&s, repo);
        assert_eq!(h.len(), 1, "{repo}: {h:?}");
        assert_eq!(h[0]["type"], "gitea");
        assert_eq!(h[0]["url"], HOOK_URL);
        assert_eq!(h[0]["content_type"], "json");
        assert_eq!(h[0]["secret"], SECRET);
        assert_eq!(h[0]["events"], json!(["push", "pull_request"]));
        assert_eq!(h[0]["active"], true);
    }
    // Every request carried the token (the fake answers 401 otherwise).
    assert_eq!(writes(&s), 2, "{:?}", requests(&s));

    let before = requests(&s).len();
    let (code, out, err) = sync(&s, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        line_for(&out, "alice/app").ends_with(": unchanged"),
        "{out}"
    );
    assert!(line_for(&out, "bob/lib").ends_with(": unchanged"), "{out}");
    let again = &requests(&s)[before..];
    assert!(again.iter().all(|r| r.method == "GET"), "{again:?}");
    assert_eq!(hooks(&s, "alice/app").len(), 1);
    no_problems(&s);
}

#[test]
fn other_hooks_stay_a_differing_hook_is_patched_and_a_new_secret_replaces_it() {
    let s = setup(SECRET);
    let other = json!({"type": "gitea", "config": {"url": "https://chat.example.org/hook",
        "content_type": "json", "secret": "theirs"}, "events": ["issues"], "active": true});
    let stale = json!({"type": "gitea", "config": {"url": HOOK_URL, "content_type": "form",
        "secret": "old-secret"}, "events": ["push"], "active": false});
    let (other, stale) = {
        let mut h = s.gitea.hooks.lock().unwrap();
        (h.add("alice/app", &other), h.add("bob/lib", &stale))
    };
    let (code, out, err) = sync(&s, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(line_for(&out, "alice/app").ends_with(": created"), "{out}");
    assert_eq!(
        line_for(&out, "bob/lib"),
        format!(
            "bob/lib on {}: updated (content_type \"form\" → \"json\", \
             events (missing pull_request), active)",
            s.gitea.url()
        )
    );
    let app = hooks(&s, "alice/app");
    assert_eq!(app.len(), 2, "{app:?}");
    assert_eq!(app[0], other, "the other URL's hook is untouched");
    let lib = hooks(&s, "bob/lib");
    assert_eq!(lib.len(), 1, "{lib:?}");
    assert_eq!(lib[0]["id"], stale["id"], "patched in place");
    assert_eq!(lib[0]["content_type"], "json");
    assert_eq!(lib[0]["active"], true);
    // Gitea's edit API cannot set a secret: it is still the old one ...
    assert_eq!(lib[0]["secret"], "old-secret");

    // ... until --update-secret, which replaces the hook (created first,
    // then the old one deleted).
    write_cfg(
        &s.dir,
        &s.gitea,
        "new-secret-0123456789",
        "https://ci.example.org/",
    );
    let (code, out, err) = sync(&s, &["--update-secret"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        line_for(&out, "bob/lib").ends_with(": replaced (secret)"),
        "{out}"
    );
    let lib = hooks(&s, "bob/lib");
    assert_eq!(lib.len(), 1, "{lib:?}");
    assert_ne!(lib[0]["id"], stale["id"]);
    assert_eq!(lib[0]["secret"], "new-secret-0123456789");
    let app = hooks(&s, "alice/app");
    assert_eq!(app.len(), 2, "{app:?}");
    assert_eq!(app[0], other);
    assert_eq!(app[1]["secret"], "new-secret-0123456789");

    // A new buildbot_url is a new hook; the old URL's hook is left alone
    // (it is no longer minibot's to judge).
    write_cfg(
        &s.dir,
        &s.gitea,
        "new-secret-0123456789",
        "https://ci2.example.org/",
    );
    let (code, out, err) = sync(&s, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(line_for(&out, "bob/lib").ends_with(": created"), "{out}");
    let urls: Vec<Value> = hooks(&s, "bob/lib")
        .iter()
        .map(|h| h["url"].clone())
        .collect();
    assert_eq!(
        urls,
        [
            json!(HOOK_URL),
            json!("https://ci2.example.org/change_hook/gitea")
        ]
    );
    no_problems(&s);
}

#[test]
fn dry_run_reports_the_same_and_writes_nothing() {
    let s = setup(SECRET);
    let stale = json!({"type": "gitea", "config": {"url": HOOK_URL, "content_type": "json",
        "secret": SECRET}, "events": ["push", "pull_request"], "active": false});
    s.gitea.hooks.lock().unwrap().add("bob/lib", &stale);
    let before = s.gitea.hooks.lock().unwrap().repos.clone();
    let (code, out, err) = sync(&s, &["--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        line_for(&out, "alice/app").ends_with(": would create"),
        "{out}"
    );
    assert!(
        line_for(&out, "bob/lib").ends_with(": would update (active)"),
        "{out}"
    );
    assert_eq!(writes(&s), 0, "{:?}", requests(&s));
    assert_eq!(s.gitea.hooks.lock().unwrap().repos, before);
    no_problems(&s);
}

#[test]
fn a_bad_token_is_a_clear_error_with_exit_1() {
    let s = setup(SECRET);
    write_private(&s.dir.join("gitea-token"), "not-the-token\n");
    let (code, out, err) = sync(&s, &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        line_for(&out, "alice/app").ends_with(
            ": error: listing hooks: HTTP 401 (the token is wrong or expired): token is required"
        ),
        "{out}"
    );
    assert!(
        err.contains("minibot: some hooks could not be set up"),
        "{err}"
    );
    assert_eq!(writes(&s), 0);

    // A repository the token cannot see: Gitea's 404, the other one done.
    write_private(&s.dir.join("gitea-token"), &format!("{TOKEN}\n"));
    s.gitea.hooks.lock().unwrap().repos.remove("bob/lib");
    let (code, out, err) = sync(&s, &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(line_for(&out, "alice/app").ends_with(": created"), "{out}");
    assert!(
        line_for(&out, "bob/lib").contains("HTTP 404 (no such repository"),
        "{out}"
    );
}

#[test]
fn a_token_file_others_may_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let s = setup(SECRET);
    let token = s.dir.join("gitea-token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, out, err) = sync(&s, &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("gitea-token is readable by others"), "{err}");
    assert!(requests(&s).is_empty(), "{:?}", requests(&s));
}
