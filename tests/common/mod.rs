//! Shared helpers for the end-to-end tests: temp dirs, free ports, real
//! processes that are killed when dropped, real git repositories, `curl`
//! for HTTP (as users do), and polling with deadlines instead of sleeps.
#![allow(dead_code)]

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const MINIBOT: &str = env!("CARGO_BIN_EXE_minibot");
pub const WORKER: &str = env!("CARGO_BIN_EXE_minibot-worker");
pub const SECRET: &str = "fixture-secret";

/// A port that was free a moment ago (bind 0, read it, release it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// Polls `f` until it returns Some, or panics with `what` at the deadline.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"))
}

pub fn run_ok(cmd: &str, args: &[&str]) -> String {
    let out = run(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.org")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.org")
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A repository with the guide's hello-world test; returns its head sha.
pub fn make_repo(dir: &Path, test_body: &str) -> String {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "-q", "-b", "master"]);
    std::fs::write(dir.join("test_hello.py"), test_body).unwrap();
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", "hello world"]);
    git(dir, &["rev-parse", "HEAD"])
}

pub const PASSING_TEST: &str = "print('hello from test_hello')\nassert 1 + 1 == 2\nprint('OK')\n";

/// A child process killed (and reaped) when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on a pid we spawned and have not reaped yet.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }
    /// Waits for the process to exit and returns its status code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let name = self.name.clone();
        let child = &mut self.child;
        let st = wait_for(&format!("{name} to exit"), timeout, || {
            child.try_wait().ok().flatten()
        });
        st.code()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a `--nodaemon` daemon and waits for its ready line on stdout.
pub fn start_daemon(bin: &str, args: &[&str], name: &str) -> (Proc, String) {
    start_daemon_env(bin, args, name, &[("RUST_LOG", "debug")])
}

/// As [`start_daemon`], with these environment variables instead of the
/// tests' debug logging (the benchmark runs daemons as users do).
pub fn start_daemon_env(
    bin: &str,
    args: &[&str],
    name: &str,
    env: &[(&str, &str)],
) -> (Proc, String) {
    let mut child = Command::new(bin)
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("{name} printed no ready line"));
    (
        Proc {
            child,
            name: name.to_string(),
        },
        line,
    )
}

pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    m.update(body);
    hex::encode(m.finalize().into_bytes())
}

/// (status, body) of a curl request.
pub fn curl(args: &[&str]) -> (u16, String) {
    let mut full = vec!["-s", "-o", "-", "-w", "\n%{http_code}"];
    full.extend_from_slice(args);
    let out = run_ok("curl", &full);
    let (body, code) = out.rsplit_once('\n').expect("curl output");
    (code.trim().parse().unwrap_or(0), body.to_string())
}

pub fn get_json(url: &str) -> serde_json::Value {
    let (code, body) = curl(&[url]);
    assert_eq!(code, 200, "GET {url}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: {e}: {body}"))
}

/// Posts a body file to a Gitea hook with the given event and signature.
pub fn post_gitea(
    url: &str,
    event: &str,
    body_file: &Path,
    signature: Option<&str>,
) -> (u16, String) {
    let data = format!("@{}", body_file.display());
    let ev = format!("X-Gitea-Event: {event}");
    let mut args = vec![
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-H",
        &ev,
        "--data-binary",
        &data,
    ];
    let sig;
    if let Some(s) = signature {
        sig = format!("X-Gitea-Signature: {s}");
        args.push("-H");
        args.push(&sig);
    }
    args.push(url);
    curl(&args)
}

/// A Gitea push payload (from the fixture) rewritten to `sha` on `branch`.
pub fn push_payload(sha: &str, branch: &str, message: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(fixture("gitea/push_branch_one_commit.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["ref"] = format!("refs/heads/{branch}").into();
    v["after"] = sha.into();
    v["commits"][0]["id"] = sha.into();
    v["commits"][0]["message"] = message.into();
    v["head_commit"]["id"] = sha.into();
    serde_json::to_vec_pretty(&v).unwrap()
}

pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("test-fixtures")
        .join(rel)
}

/// Everything a test master needs: directories, ports, a config.
pub struct Setup {
    pub tmp: tempfile::TempDir,
    pub master: PathBuf,
    pub repo: PathBuf,
    pub www: u16,
    pub wport: u16,
    pub head: String,
}

impl Setup {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.www, path)
    }

    /// create-master and a master.cfg building `repo` with `steps` (TOML).
    pub fn new(test_body: &str, extra_cfg: &str) -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let master = tmp.path().join("master");
        let repo = tmp.path().join("repo");
        let head = make_repo(&repo, test_body);
        run_ok(MINIBOT, &["create-master", master.to_str().unwrap()]);
        let (www, wport) = (free_port(), free_port());
        let cfg = format!(
            r#"
title = "e2e"
[www]
port = {www}
[www.change_hook_dialects.gitea]
secret = "{SECRET}"
[www.change_hook_dialects.base]
[protocols.worker]
port = {wport}
keepalive = 2
[[workers]]
name = "example-worker"
password = "pass"
[[workers]]
name = "second-worker"
password = "pass2"
[[schedulers]]
name = "all"
type = "single_branch"
branch = "master"
builders = ["runtests"]
[[builders]]
name = "runtests"
workers = ["example-worker", "second-worker"]
[[builders.steps]]
type = "git"
repourl = "file://{repo}"
[[builders.steps]]
type = "shell"
name = "test"
command = ["/usr/bin/python3", "test_hello.py"]
{extra_cfg}
"#,
            repo = repo.display()
        );
        std::fs::write(master.join("master.cfg"), cfg).unwrap();
        Setup {
            tmp,
            master,
            repo,
            www,
            wport,
            head,
        }
    }

    pub fn start_master(&self) -> Proc {
        let (p, line) = start_daemon(
            MINIBOT,
            &["start", "--nodaemon", self.master.to_str().unwrap()],
            "master",
        );
        assert!(line.contains(&self.www.to_string()), "ready line: {line}");
        p
    }

    /// create-worker + start --nodaemon; returns the worker process.
    pub fn start_worker(&self, name: &str, password: &str) -> Proc {
        self.start_worker_env(name, password, &[("RUST_LOG", "debug")])
    }

    /// As [`Setup::start_worker`], with these environment variables.
    pub fn start_worker_env(&self, name: &str, password: &str, env: &[(&str, &str)]) -> Proc {
        let dir = self.tmp.path().join(name);
        if !dir.exists() {
            run_ok(
                WORKER,
                &[
                    "create-worker",
                    "--keepalive",
                    "2",
                    dir.to_str().unwrap(),
                    &format!("127.0.0.1:{}", self.wport),
                    name,
                    password,
                ],
            );
        }
        let (p, _line) = start_daemon_env(
            WORKER,
            &["start", "--nodaemon", dir.to_str().unwrap()],
            name,
            env,
        );
        p
    }

    pub fn wait_connected(&self, name: &str) {
        let url = self.url(&format!("/api/v2/workers/{name}"));
        wait_for(
            &format!("worker {name} connected"),
            Duration::from_secs(30),
            || {
                let (code, body) = curl(&[&url]);
                let v: serde_json::Value = serde_json::from_str(&body).ok()?;
                (code == 200 && !v["workers"][0]["connected_to"].as_array()?.is_empty())
                    .then_some(())
            },
        );
    }

    /// Posts a signed push of `sha` and returns the change ids.
    pub fn push(&self, sha: &str, branch: &str, message: &str) -> Vec<i64> {
        let body = push_payload(sha, branch, message);
        let f = self.tmp.path().join(format!("push-{sha}.json"));
        std::fs::write(&f, &body).unwrap();
        let (code, resp) = post_gitea(
            &self.url("/change_hook/gitea"),
            "push",
            &f,
            Some(&sign(SECRET, &body)),
        );
        assert_eq!(code, 200, "{resp}");
        let v: serde_json::Value = serde_json::from_str(&resp).unwrap();
        v["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect()
    }

    /// Waits until `n` builds are complete and returns them (oldest first).
    pub fn wait_builds(&self, n: usize, timeout: Duration) -> Vec<serde_json::Value> {
        let url = self.url("/api/v2/builds?complete=true&order=buildid");
        wait_for(&format!("{n} complete builds"), timeout, || {
            let (_, body) = curl(&[&url]);
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            let b = v["builds"].as_array()?.clone();
            (b.len() >= n).then_some(b)
        })
    }

    /// The raw text of a build's step log, by step name.
    pub fn step_log(&self, buildid: i64, step: &str) -> String {
        let steps = get_json(&self.url(&format!("/api/v2/builds/{buildid}/steps")));
        let st = steps["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == step)
            .unwrap_or_else(|| panic!("no step {step} in {steps}"))
            .clone();
        let logs = get_json(&self.url(&format!("/api/v2/steps/{}/logs", st["stepid"])));
        let logid = logs["logs"][0]["logid"].as_i64().unwrap();
        curl(&[&self.url(&format!("/api/v2/logs/{logid}/raw"))]).1
    }
}
