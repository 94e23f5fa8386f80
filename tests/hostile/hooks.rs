//! Hostile-neighbour tests: the change hooks (issue 14, item 3).
//!
//! A hook stores changes and starts builds, and through the gitea_status
//! reporter makes the master post commit statuses with the operator's
//! token. Anyone on the host can reach the port, and so can any web page
//! the operator opens in a browser that uses the SSH tunnel. These tests
//! run the real master, post with real curl, and check what was stored
//! (the database) and what reached a fake Gitea.

use crate::common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

const MIN: Duration = Duration::from_secs(60);
const GITEA_TOKEN: &str = "hostile-hooks-token";

fn changes_stored(master: &Path) -> i64 {
    db_query::<i64>(master, "SELECT count(*) FROM changes")[0]
}

/// `minibot checkconfig DIR`: (exit code, stdout + stderr).
fn checkconfig(dir: &Path) -> (i32, String) {
    let out = run(MINIBOT, &["checkconfig", dir.to_str().unwrap()]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// create-master in `dir`, then master.cfg made from the sample the way
/// the guide says (rename, pick ports): only the ports (0: any free one),
/// `buildbot_url` and any `secret =` value are changed, so whatever else
/// the sample enables is tested.
fn master_from_sample(dir: &Path) {
    run_ok(MINIBOT, &["create-master", dir.to_str().unwrap()]);
    let sample = std::fs::read_to_string(dir.join("master.cfg.sample")).unwrap();
    let cfg: Vec<String> = sample
        .lines()
        .map(|l| match l.trim_start() {
            "port = 12345" | "port = 54321" => "port = 0".to_string(),
            t if t.starts_with("buildbot_url = ") => {
                "buildbot_url = \"http://127.0.0.1:8010/\"".to_string()
            }
            t if t.starts_with("repourl = ") => {
                "repourl = \"/srv/git/hello-world.git\"".to_string()
            }
            t if t.starts_with("secret = ") => {
                "secret = \"a-test-secret-of-some-length-0123456789\"".to_string()
            }
            _ => l.to_string(),
        })
        .collect();
    write_private(&dir.join("master.cfg"), &(cfg.join("\n") + "\n"));
}

#[test]
fn a_hook_without_secret_is_a_config_error_and_allow_unsigned_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("master");
    master_from_sample(&dir);
    let (code, out) = checkconfig(&dir);
    assert_eq!(code, 0, "the sample with ports and secret filled in: {out}");
    assert!(!out.contains("warning"), "{out}");
    let good = std::fs::read_to_string(dir.join("master.cfg")).unwrap();

    // The base dialect enabled as Buildbot users write it: refused, naming
    // the key and the way out.
    std::fs::write(
        dir.join("master.cfg"),
        format!("{good}\n[www.change_hook_dialects.base]\n"),
    )
    .unwrap();
    let (code, out) = checkconfig(&dir);
    println!("base without secret: exit {code}: {}", out.trim());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("www.change_hook_dialects.base.secret: required (or set allow_unsigned = true to accept unsigned posts from anyone who can reach the port)"),
        "{out}"
    );

    // The opt-out: accepted, with a warning that says what it means.
    std::fs::write(
        dir.join("master.cfg"),
        format!("{good}\n[www.change_hook_dialects.base]\nallow_unsigned = true\n"),
    )
    .unwrap();
    let (code, out) = checkconfig(&dir);
    println!("base with allow_unsigned: exit {code}: {}", out.trim());
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("warning: www.change_hook_dialects.base.allow_unsigned = true: anyone who can reach the web port"),
        "{out}"
    );

    // Gitea (and GitHub) have no opt-out: a secret or an error.
    let no_secret = good.replace(
        "secret = \"a-test-secret-of-some-length-0123456789\"",
        "# secret removed",
    );
    std::fs::write(dir.join("master.cfg"), &no_secret).unwrap();
    let (code, out) = checkconfig(&dir);
    println!("gitea without secret: exit {code}: {}", out.trim());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("www.change_hook_dialects.gitea.secret: required"),
        "{out}"
    );
    std::fs::write(
        dir.join("master.cfg"),
        format!("{good}\n[www.change_hook_dialects.github]\nallow_unsigned = true\n"),
    )
    .unwrap();
    let (code, out) = checkconfig(&dir);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("www.change_hook_dialects.github.allow_unsigned: unknown key"),
        "{out}"
    );
}

#[test]
fn the_sample_config_stores_no_unsigned_base_hook() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("master");
    master_from_sample(&dir);
    let (master, line) = start_daemon(
        MINIBOT,
        &["start", "--nodaemon", dir.to_str().unwrap()],
        "master",
    );
    let (www, _) = wait_master_addresses(&dir, Some(master.pid()));
    assert!(line.contains(&format!("127.0.0.1:{www}/")), "{line}");
    let url = format!("http://127.0.0.1:{www}/change_hook/base");
    let body = form_body(&[
        ("comments", "from a neighbour"),
        ("branch", "master"),
        ("revision", "0123456789abcdef0123456789abcdef01234567"),
        ("repository", "https://git.example.org/victim/other.git"),
    ]);
    let mut codes = vec![];
    for secret in [None, Some("guessed-secret")] {
        let (code, resp) = post_base_signed(&url, secret, &[], &body);
        codes.push(code);
        assert!(code == 404 || code == 403, "{code}: {resp}");
    }
    // The same through curl -d, as a copy-pasted Buildbot recipe does.
    let (code, resp) = curl(&[
        "-X",
        "POST",
        "-d",
        "comments=x",
        "-d",
        "branch=master",
        &url,
    ]);
    codes.push(code);
    assert!(code == 404 || code == 403, "{code}: {resp}");
    let stored = changes_stored(&dir);
    println!("unsigned base hooks on the sample config: {codes:?}, {stored} changes stored");
    assert_eq!(stored, 0);
}

#[test]
fn browser_posts_to_hooks_are_refused_and_store_nothing() {
    let s = Setup::new(PASSING_TEST, "");
    // The worst case: the operator opted out of the base secret.
    s.edit_cfg(|c| {
        c.replace(
            &format!("secret = \"{BASE_SECRET}\""),
            "allow_unsigned = true",
        )
    });
    let _master = s.start_master();
    // `start` says so in master.log.
    s.wait_master_log("allow_unsigned = true: anyone who can reach the web port");

    let form = "application/x-www-form-urlencoded";
    let base_body = form_body(&[("comments", "csrf"), ("branch", "master")]);
    let push = push_payload(&s.head, "master", "signed but from a page");
    let push_sig = sign(SECRET, &push);
    let browser_headers: [&[(&str, &str)]; 4] = [
        &[("Origin", "http://evil.example")],
        &[("Origin", "null")],
        &[("Sec-Fetch-Site", "cross-site")],
        &[("Sec-Fetch-Site", "same-site")],
    ];
    let mut seen = vec![];
    for extra in browser_headers {
        // A cross-site HTML form to the base dialect.
        let mut hs = vec![("Content-Type", form)];
        hs.extend_from_slice(extra);
        let (code, resp) = post_base_signed(&s.url("/change_hook/base"), None, &hs, &base_body);
        seen.push(format!("base {extra:?}: {code}"));
        assert_eq!(code, 403, "base {extra:?}: {resp}");
        assert!(resp.contains("web page"), "{resp}");
        // A correctly signed Gitea push, relayed by a page.
        let f = s.tmp.path().join("push.json");
        std::fs::write(&f, &push).unwrap();
        let mut hs: Vec<(String, String)> = vec![
            ("Content-Type".into(), "application/json".into()),
            ("X-Gitea-Event".into(), "push".into()),
            ("X-Gitea-Signature".into(), push_sig.clone()),
        ];
        hs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let (code, resp) = post_with_headers(&s.url("/change_hook/gitea"), &hs, &f);
        seen.push(format!("gitea {extra:?}: {code}"));
        assert_eq!(code, 403, "gitea {extra:?}: {resp}");
    }
    let stored = changes_stored(&s.master);
    println!("browser-shaped hook posts: {seen:?}; {stored} changes stored");
    assert_eq!(stored, 0);

    // Without those headers (as Gitea and curl send them): accepted.
    assert_eq!(s.push(&s.head, "master", "from Gitea").len(), 1);
    let (code, resp) = post_base_signed(&s.url("/change_hook/base"), None, &[], &base_body);
    assert_eq!(
        code, 200,
        "unsigned base with the opt-out, no browser headers: {resp}"
    );
    assert_eq!(changes_stored(&s.master), 2);
}

/// A builder whose git step checks out `<tmp>/isabell/hello-world` (a
/// clone of the test repository), so the status goes to isabell/hello-world,
/// the repository the Gitea fixtures name too.
fn setup_with_gitea_status(gitea_port: u16) -> Setup {
    let s = Setup::new(
        PASSING_TEST,
        &format!(
            r#"
[[schedulers]]
name = "force"
type = "force"
builders = ["runtests"]

[[reporters]]
type = "gitea_status"
base_url = "http://127.0.0.1:{gitea_port}"
token_file = "gitea-token"
"#
        ),
    );
    write_private(&s.master.join("gitea-token"), &format!("{GITEA_TOKEN}\n"));
    let ours = s.tmp.path().join("isabell/hello-world");
    std::fs::create_dir_all(ours.parent().unwrap()).unwrap();
    run_ok(
        "git",
        &[
            "clone",
            "-q",
            "--bare",
            s.repo.to_str().unwrap(),
            ours.to_str().unwrap(),
        ],
    );
    s.edit_cfg(|c| {
        c.replace(
            &format!("repourl = \"file://{}\"", s.repo.display()),
            &format!("repourl = \"file://{}\"", ours.display()),
        )
        .replace(
            &format!("secret = \"{BASE_SECRET}\""),
            "allow_unsigned = true",
        )
    });
    s
}

#[test]
fn gitea_status_goes_only_to_the_builders_repository_on_the_built_commit() {
    let gitea = FakeGitea::start(GITEA_TOKEN);
    let s = setup_with_gitea_status(gitea.port);
    let _master = s.start_master();
    add_user(&s.master, USER, PASSWORD);
    let _worker = s.start_worker("example-worker", WORKER_PW);
    s.wait_connected("example-worker");
    let ours = s.tmp.path().join("isabell/hello-world");
    let foreign = "d".repeat(40);

    // 1. An unsigned base hook naming another repository everywhere it can
    // (fields and the properties the reporter used to read) and a commit
    // that is not in the builder's repository: the checkout fails, no
    // commit is known, so no status at all.
    let victim_props = json!({
        "owner": "victim", "repository_name": "other", "project": "victim/other",
        "repository": "https://git.example.org/victim/other.git",
        "revision": foreign, "got_revision": foreign,
    })
    .to_string();
    let hook = |revision: &str| {
        post_base_signed(
            &s.url("/change_hook/base"),
            None,
            &[],
            &form_body(&[
                ("comments", "a neighbour's change"),
                ("branch", "master"),
                ("revision", revision),
                ("repository", "https://git.example.org/victim/other.git"),
                ("project", "victim/other"),
                ("properties", &victim_props),
            ]),
        )
    };
    let (code, resp) = hook(&foreign);
    assert_eq!(code, 200, "{resp}");
    let b1 = &s.wait_builds(1, MIN)[0];
    assert_ne!(
        b1["results"], 0,
        "the foreign commit cannot be checked out: {b1}"
    );

    // 2. The same with a commit that is in the builder's repository: the
    // build runs and the status goes to the builder's repository, on the
    // commit it checked out, not to the one the properties name.
    let (code, resp) = hook(&s.head);
    assert_eq!(code, 200, "{resp}");
    let b2 = &s.wait_builds(2, MIN)[1];
    assert_eq!(b2["results"], 0, "{b2}");
    assert_eq!(gitea.wait_final(&s.head, MIN), ["success"]);

    // 3. A force build by a logged-in user naming another repository and
    // project, at a second commit of ours.
    let head2 = s.commit("test_hello.py", &format!("{PASSING_TEST}# 2\n"), "second");
    git(&s.repo, &["push", "-q", ours.to_str().unwrap(), "master"]);
    let (code, v) = rpc(
        &s.url("/api/v2/forceschedulers/force"),
        Some(&basic()),
        "force",
        json!({"builderNames": ["runtests"], "branch": "master", "revision": head2,
               "repository": "https://git.example.org/victim/other.git",
               "project": "victim/other", "reason": "forced at the victim"}),
    );
    assert_eq!(code, 200, "{v}");
    let b3 = &s.wait_builds(3, MIN)[2];
    assert_eq!(b3["results"], 0, "{b3}");
    assert_eq!(gitea.wait_final(&head2, MIN), ["success"]);

    // 4. A rebuild of the base-hook build: the same buildset properties.
    let (code, v) = rpc(
        &s.url(&format!("/api/v2/builds/{}", b2["buildid"])),
        Some(&basic()),
        "rebuild",
        json!({}),
    );
    assert_eq!(code, 200, "{v}");
    s.wait_builds(4, MIN);
    wait_for("the rebuild's status", MIN, || {
        (gitea.states(&s.head).len() == 2).then_some(())
    });

    // 5. For contrast, a signed Gitea push: its repository, pending first.
    let head3 = s.commit("test_hello.py", &format!("{PASSING_TEST}# 3\n"), "third");
    git(&s.repo, &["push", "-q", ours.to_str().unwrap(), "master"]);
    s.push(&head3, "master", "signed push");
    assert_eq!(gitea.wait_final(&head3, MIN), ["pending", "success"]);

    let reqs = gitea.requests.lock().unwrap().clone();
    for r in &reqs {
        println!(
            "status {} on {}/{}@{}",
            r.body["state"], r.owner, r.repo, r.sha
        );
    }
    assert!(
        reqs.iter()
            .all(|r| (r.owner.as_str(), r.repo.as_str()) == ("isabell", "hello-world")),
        "a status left the builder's repository: {reqs:?}"
    );
    let shas: Vec<&str> = reqs.iter().map(|r| r.sha.as_str()).collect();
    assert!(!shas.contains(&foreign.as_str()), "{shas:?}");
    assert_eq!(reqs.len(), 5, "{shas:?}");
    assert!(
        gitea.problems.lock().unwrap().is_empty(),
        "{:?}",
        gitea.problems.lock().unwrap()
    );
    // The commit each build checked out is a build property the master set.
    let p = get_json(&s.url(&format!("/api/v2/builds/{}?property=*", b2["buildid"])));
    assert_eq!(
        p["builds"][0]["properties"]["got_revision"],
        json!([s.head, "Git"])
    );
    let p: Value = get_json(&s.url(&format!("/api/v2/builds/{}?property=*", b1["buildid"])));
    assert_eq!(
        p["builds"][0]["properties"]["got_revision"],
        json!([foreign, "Change"]),
        "the neighbour's property is kept as data, with its source"
    );
}
