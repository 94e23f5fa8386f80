//! `minibot demo`: the newcomer's one command.
//!
//! Owns: setting up a throw-away master, worker and git repository in one
//! directory, then driving them the way a user would: the master runs as a
//! child process (`minibot start --nodaemon`), the worker as the
//! `minibot-worker` binary next to this one when it exists, else in a
//! thread of this process (`cargo run --bin minibot` builds only this
//! binary). A commit is pushed and a signed Gitea-style webhook is sent
//! to the master's own change hook over HTTP; the build is followed through
//! the JSON API until it is green.

use crate::db;
use crate::model::BuildResult;
use anyhow::{anyhow, bail, Context, Result};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Marks a directory as made by the demo, so a second run may reuse it.
const MARKER: &str = ".minibot-demo";

const TEST_HELLO: &str = r#"# The demo's test: what a build runs.
import hello

assert hello.greeting() == "Hello, World!"
print("test_hello: all good:", hello.greeting())
"#;

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Minibot Demo")
        .env("GIT_AUTHOR_EMAIL", "demo@example.org")
        .env("GIT_COMMITTER_NAME", "Minibot Demo")
        .env("GIT_COMMITTER_EMAIL", "demo@example.org")
        .output()
        .context("cannot run git (is it installed?)")?;
    if !out.status.success() {
        bail!(
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The python the build runs: the system one when there is one, since a
/// version-manager shim in front of `python3` costs ~100 ms per call.
fn python() -> String {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3".into()
    } else {
        "python3".into()
    }
}

fn prepare_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        let empty = std::fs::read_dir(dir)?.next().is_none();
        if !empty && !dir.join(MARKER).exists() {
            bail!(
                "{} exists and was not made by `minibot demo`; give another directory",
                dir.display()
            );
        }
        if !empty {
            std::fs::remove_dir_all(dir)
                .with_context(|| format!("cannot clear the old demo in {}", dir.display()))?;
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(dir.join(MARKER), "made by minibot demo; safe to delete\n")?;
    Ok(())
}

fn master_cfg(www: u16, wport: u16, secret: &str, repo: &Path) -> String {
    format!(
        r#"# Written by `minibot demo`. See master.cfg.sample in a fresh
# `minibot create-master` for every key, explained.
title = "minibot demo"
buildbot_url = "http://127.0.0.1:{www}/"

[www]
port = {www}
bind = "127.0.0.1"

[www.change_hook_dialects.gitea]
secret = "{secret}"
repository_url = "clone"

[protocols.worker]
port = {wport}
bind = "127.0.0.1"

[[workers]]
name = "demo-worker"
password = "{secret}"

[[schedulers]]
name = "all"
type = "single_branch"
branch = "master"
builders = ["hello"]

[[schedulers]]
name = "force"
type = "force"
builders = ["hello"]

[[builders]]
name = "hello"
workers = ["demo-worker"]

[[builders.steps]]
type = "git"
repourl = "file://{repo}"
mode = "incremental"

[[builders.steps]]
type = "shell"
name = "test"
command = ["{python}", "test_hello.py"]
env = {{ PYTHONUNBUFFERED = "1" }}
timeout = 300
"#,
        repo = repo.display(),
        python = python(),
    )
}

/// A Gitea push payload for one commit, shaped like Gitea 1.22's (without
/// the commit timestamp: the hook then takes the time of arrival).
fn push_payload(repo: &Path, before: &str, sha: &str, message: &str) -> serde_json::Value {
    let url = format!("file://{}", repo.display());
    serde_json::json!({
        "ref": "refs/heads/master",
        "before": before,
        "after": sha,
        "compare_url": "",
        "commits": [{
            "id": sha,
            "message": message,
            "url": format!("{url}/commit/{sha}"),
            "author": {"name": "Minibot Demo", "email": "demo@example.org", "username": "demo"},
            "committer": {"name": "Minibot Demo", "email": "demo@example.org", "username": "demo"},
            "verification": null,
            "added": [], "removed": [], "modified": ["hello.py"]
        }],
        "total_commits": 1,
        "head_commit": {
            "id": sha, "message": message, "url": format!("{url}/commit/{sha}"),
            "author": {"name": "Minibot Demo", "email": "demo@example.org", "username": "demo"},
            "committer": {"name": "Minibot Demo", "email": "demo@example.org", "username": "demo"},
            "verification": null,
            "added": [], "removed": [], "modified": ["hello.py"]
        },
        "repository": {
            "id": 1, "name": "hello-world", "full_name": "demo/hello-world",
            "owner": {"id": 1, "login": "demo", "username": "demo"},
            "html_url": url, "ssh_url": url, "clone_url": url, "default_branch": "master"
        },
        "pusher": {"id": 1, "login": "demo", "username": "demo"},
        "sender": {"id": 1, "login": "demo", "username": "demo"}
    })
}

fn http_get(url: &str) -> Result<serde_json::Value> {
    let mut resp = ureq::get(url)
        .call()
        .map_err(|e| anyhow!("GET {url}: {e}"))?;
    resp.body_mut()
        .read_json()
        .with_context(|| format!("GET {url}: not JSON"))
}

/// Kills the child master (SIGTERM, then SIGKILL) when the demo ends.
struct MasterProc(Child);

impl Drop for MasterProc {
    fn drop(&mut self) {
        let pid = self.0.id() as i32;
        let _ = crate::daemon::send_signal(pid, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait<T>(
    what: &str,
    timeout: Duration,
    sigs: &crossbeam_channel::Receiver<i32>,
    mut f: impl FnMut() -> Option<T>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if sigs.try_recv().is_ok() {
            bail!("interrupted while waiting for {what}; stopping");
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn run(dir: &Path, once: bool) -> Result<()> {
    // As the daemons: nothing the demo makes (its master.cfg and worker.cfg
    // hold the secret below) is for other local accounts.
    crate::daemon::private_umask();
    // From the start: a Ctrl-C at any point (the terminal sends it to the
    // master child too) ends the demo through its own cleanup, with its
    // goodbye, never by the default action in the middle of a write.
    let sigs = crate::daemon::signals()?;
    let dir: PathBuf = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir()?.join(dir)
    };
    prepare_dir(&dir)?;
    let exe = std::env::current_exe().context("cannot find the minibot binary")?;
    let (repo, master, worker) = (dir.join("repo"), dir.join("master"), dir.join("worker"));

    outln!(
        "[1/6] creating a git repository with a tiny test in {}",
        repo.display()
    );
    std::fs::create_dir_all(&repo)?;
    git(&repo, &["init", "-q", "-b", "master"])?;
    std::fs::write(
        repo.join("hello.py"),
        "def greeting():\n    return \"Hello, World!\"\n",
    )?;
    std::fs::write(repo.join("test_hello.py"), TEST_HELLO)?;
    git(&repo, &["add", "."])?;
    git(&repo, &["commit", "-q", "-m", "Hello world"])?;
    let before = git(&repo, &["rev-parse", "HEAD"])?;

    outln!("[2/6] creating a master in {}", master.display());
    let secret = crate::protocol::new_nonce();
    std::fs::create_dir_all(&master)?;
    db::create(&master.join("state.sqlite"))?;
    let cfg_path = master.join("master.cfg");
    // Ports free a moment ago may be taken before the master binds them
    // (by anything else on the host): try again with new ones.
    let mut attempt = 0;
    let (www, wport, master_proc, line) = loop {
        attempt += 1;
        let (www, wport) = (free_port()?, free_port()?);
        std::fs::write(&cfg_path, master_cfg(www, wport, &secret, &repo))?;
        db::set_private(&cfg_path)?;
        if attempt == 1 {
            outln!("[3/6] starting the master");
        }
        let mut child = Command::new(&exe)
            .arg("start")
            .arg("--nodaemon")
            .arg(&master)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start the master")?;
        let stdout = child.stdout.take().context("master stdout")?;
        let master_proc = MasterProc(child);
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        if !line.is_empty() {
            break (www, wport, master_proc, line);
        }
        drop(master_proc);
        if attempt == 3 {
            bail!(
                "the master did not start; see {}",
                master.join("master.log").display()
            );
        }
    };
    outln!("      {}", line.trim());
    let base = format!("http://127.0.0.1:{www}");
    outln!("      web UI: {base}/   (JSON API: {base}/api/v2/builds)");

    outln!(
        "[4/6] creating and starting a worker in {}",
        worker.display()
    );
    crate::worker::create_worker(
        &worker,
        &format!("127.0.0.1:{wport}"),
        "demo-worker",
        &secret,
        &crate::worker::CreateOptions::default(),
    )?;
    let sibling = exe.with_file_name("minibot-worker");
    let _worker_proc = if sibling.exists() {
        let child = Command::new(&sibling)
            .arg("start")
            .arg("--nodaemon")
            .arg(&worker)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start the worker")?;
        Some(MasterProc(child))
    } else {
        let w = worker.clone();
        std::thread::spawn(move || {
            // Logs go to worker.log only: the terminal is the demo's.
            if let Err(e) = crate::worker::run(&w, false) {
                errln!("demo worker: {e:#}");
            }
        });
        None
    };
    wait(
        "the worker to connect",
        Duration::from_secs(30),
        &sigs,
        || {
            let v = http_get(&format!("{base}/api/v2/workers/demo-worker")).ok()?;
            (!v["workers"][0]["connected_to"].as_array()?.is_empty()).then_some(())
        },
    )?;

    outln!("[5/6] pushing a commit and sending a signed Gitea push webhook");
    std::fs::write(
        repo.join("hello.py"),
        "def greeting():\n    # changed by the demo's push\n    return \"Hello, World!\"\n",
    )?;
    git(&repo, &["commit", "-q", "-am", "Say hello, politely"])?;
    let sha = git(&repo, &["rev-parse", "HEAD"])?;
    let body =
        serde_json::to_vec_pretty(&push_payload(&repo, &before, &sha, "Say hello, politely"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(&body);
    let sig = hex::encode(mac.finalize().into_bytes());
    let t0 = Instant::now();
    let mut resp = ureq::post(&format!("{base}/change_hook/gitea"))
        .header("Content-Type", "application/json")
        .header("X-Gitea-Event", "push")
        .header("X-Gitea-Signature", &sig)
        .send(&body[..])
        .map_err(|e| anyhow!("posting the webhook: {e}"))?;
    let ack: serde_json::Value = resp.body_mut().read_json()?;
    outln!(
        "      hook answered {ack} in {:.1} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );

    outln!("[6/6] waiting for the build");
    let build = wait(
        "the build to finish",
        Duration::from_secs(120),
        &sigs,
        || {
            let v = http_get(&format!(
                "{base}/api/v2/builds?complete=true&limit=1&order=-buildid"
            ))
            .ok()?;
            v["builds"].as_array()?.first().cloned()
        },
    )?;
    let results = build["results"].as_i64();
    let steps = http_get(&format!("{base}/api/v2/builds/{}/steps", build["buildid"]))?;
    for st in steps["steps"].as_array().into_iter().flatten() {
        let dur = st["complete_at"].as_i64().unwrap_or(0) - st["started_at"].as_i64().unwrap_or(0);
        outln!(
            "      step {:<6} {:<8} {}s",
            st["name"].as_str().unwrap_or("?"),
            result_name(st["results"].as_i64()),
            dur
        );
    }
    outln!(
        "      build #{} {} ({}), {:.2} s from hook to finish",
        build["number"],
        result_name(results).to_uppercase(),
        build["state_string"].as_str().unwrap_or(""),
        t0.elapsed().as_secs_f64()
    );
    if once {
        drop(master_proc);
        outln!("stopped the demo's master and worker");
        farewell(&dir, &exe);
        if results != Some(BuildResult::Success.code()) {
            bail!(
                "the demo build did not succeed; see {}",
                master.join("master.log").display()
            );
        }
        return Ok(());
    }
    outln!("\nserving the web UI at {base}/ until Ctrl-C ...");
    let _ = sigs.recv();
    outln!("stopping");
    drop(master_proc);
    farewell(&dir, &exe);
    Ok(())
}

/// What the demo leaves behind and how to use or remove it, said when it
/// stops.
fn farewell(dir: &Path, exe: &Path) {
    let d = dir.display();
    let minibot = command_for(exe, "minibot");
    let worker = command_for(exe, "minibot-worker");
    outln!("the demo stays in {d}: repo/ (the git repository), master/ (its config, database and logs), worker/");
    outln!("run it again from scratch: {minibot} demo {d}");
    outln!("or start its master and worker as they are: {minibot} start {d}/master && {worker} start {d}/worker");
    outln!("remove it: rm -rf {d}");
}

/// How the user runs `name`, a program of this package, from their shell
/// (said by [`farewell`], so that the commands work when pasted): its
/// bare name when that is what their PATH finds, its path when it was
/// built beside this binary but is not on the PATH (`cargo run` builds
/// into `target/` and installs nothing), and `cargo run` when it was not
/// built at all (the worker after `cargo run --bin minibot`).
fn command_for(exe: &Path, name: &str) -> String {
    let built = exe.with_file_name(name);
    if !built.is_file() {
        let profile = if cfg!(debug_assertions) {
            ""
        } else {
            " --release"
        };
        return format!("cargo run --locked{profile} --bin {name} --");
    }
    let same = |a: &Path| match (a.canonicalize(), built.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|c| c.is_file())
    });
    match on_path {
        Some(p) if same(&p) => name.to_string(),
        _ => built.display().to_string(),
    }
}

/// The name of a result code as the API shows it ("unknown" for none or
/// an unknown code: the demo only prints it).
fn result_name(code: Option<i64>) -> &'static str {
    code.and_then(BuildResult::from_code)
        .map_or("unknown", BuildResult::name)
}
