//! The shipped `etc/services.d/*.ini` under a real supervisord (from PyPI),
//! the way a user on a shared host runs them: a home directory (a temp dir,
//! given to supervisord as HOME) with the binaries in `~/bin`, the master
//! in `~/bb-master/master`, the worker in `~/bb-workers/example-worker`, and
//! the ini files copied verbatim into `~/etc/services.d/`. Checked:
//! `reread` + `update` bring both programs to RUNNING and the worker
//! connects; `stop all` in the middle of a build whose step has a
//! background grandchild leaves no process of the build behind (by pid and
//! by a scan of /proc); `start all` brings everything back and the build is
//! retried; the order of the stop signals (supervisord's debug log): both
//! at once on `stop all`, the master before the worker on `shutdown`. And
//! the README's shared-host block, pasted as it stands, to a green build.

use crate::common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const INSTALL: &str = "install it from PyPI (`python3 -m pip install supervisor`, as .ci/run does)";

/// A supervisord in the foreground; on drop it is asked to shut down (it
/// stops its programs first) and waited for, then killed if need be.
struct Supervisord {
    child: Child,
    ctl: PathBuf,
    conf: PathBuf,
    home: PathBuf,
}

impl Supervisord {
    fn ctl(&self, args: &[&str]) -> Output {
        Command::new(&self.ctl)
            .arg("-c")
            .arg(&self.conf)
            .args(args)
            .env("HOME", &self.home)
            .output()
            .expect("run supervisorctl")
    }

    /// supervisorctl's output (stdout and stderr); its exit code only
    /// tells whether all programs run.
    fn ctl_text(&self, args: &[&str]) -> String {
        let o = self.ctl(args);
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    }

    /// The state column of `supervisorctl status` for `program`.
    fn state(&self, program: &str) -> Option<String> {
        self.ctl_text(&["status", program])
            .lines()
            .find(|l| l.starts_with(program))
            .and_then(|l| l.split_whitespace().nth(1))
            .map(str::to_string)
    }

    fn wait_state(&self, program: &str, state: &str) {
        wait_for(
            &format!("{program} to be {state}"),
            Duration::from_secs(90),
            || (self.state(program).as_deref() == Some(state)).then_some(()),
        );
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Supervisord {
    /// A user's supervisord for `home`, in the foreground, answering
    /// supervisorctl: its config (`~/supervisord.conf`, debug log in
    /// `~/supervisord.log`) includes `~/etc/services.d/*.ini`, which it
    /// creates empty.
    fn start(supervisord: &Path, ctl: PathBuf, home: &Path) -> Supervisord {
        fs::create_dir_all(home.join("etc/services.d")).unwrap();
        let conf = home.join("supervisord.conf");
        fs::write(
            &conf,
            "[unix_http_server]\nfile=%(here)s/supervisor.sock\n\
             [supervisord]\nlogfile=%(here)s/supervisord.log\npidfile=%(here)s/supervisord.pid\n\
             loglevel=debug\n\
             childlogdir=%(here)s\n\
             [rpcinterface:supervisor]\n\
             supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\
             [supervisorctl]\nserverurl=unix://%(here)s/supervisor.sock\n\
             [include]\nfiles = %(ENV_HOME)s/etc/services.d/*.ini\n",
        )
        .unwrap();
        let child = Command::new(supervisord)
            .arg("-n")
            .arg("-c")
            .arg(&conf)
            .env("HOME", home)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(home.join("supervisord.stderr")).unwrap())
            .spawn()
            .expect("start supervisord");
        let sv = Supervisord {
            child,
            ctl,
            conf,
            home: home.to_path_buf(),
        };
        wait_for("supervisord to answer", Duration::from_secs(30), || {
            sv.ctl(&["pid"]).status.success().then_some(())
        });
        sv
    }
}

impl Drop for Supervisord {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe {
            libc::kill(self.pid(), libc::SIGTERM);
        }
        let child = &mut self.child;
        let mut waited = 0;
        while child.try_wait().ok().flatten().is_none() && waited < 1200 {
            std::thread::sleep(Duration::from_millis(100));
            waited += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        // A failed test must not leave a build's processes running either.
        for p in processes_under(&self.home, &[]) {
            if let Some(pid) = p.split(':').next().and_then(|n| n.parse::<i32>().ok()) {
                // SAFETY: kill(2) on a process of this test's home (a pid
                // read from /proc a moment ago).
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

/// Processes (other than `except`) that belong to the test's home: their
/// working directory or command line is under it. Zombies have neither and
/// count as gone.
fn processes_under(home: &Path, except: &[i32]) -> Vec<String> {
    let me = std::process::id() as i32;
    let home_str = home.to_string_lossy().into_owned();
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return found;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me || except.contains(&pid) {
            continue;
        }
        let cwd_in = fs::read_link(e.path().join("cwd"))
            .map(|p| p.starts_with(home))
            .unwrap_or(false);
        let cmdline = fs::read(e.path().join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        if cwd_in || cmdline.contains(&home_str) {
            found.push(format!("{pid}: {cmdline}"));
        }
    }
    found
}

fn read_pid(path: &Path) -> Option<i32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[test]
fn supervisord_runs_the_shipped_programs_and_stop_all_leaves_no_build_process() {
    let (Some(supervisord), Some(supervisorctl)) = (
        require_program("supervisord", INSTALL),
        require_program("supervisorctl", INSTALL),
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().to_path_buf();

    // ~/bin, as `cargo install --path . --root ~` leaves it.
    fs::create_dir_all(home.join("bin")).unwrap();
    std::os::unix::fs::symlink(MINIBOT, home.join("bin/minibot")).unwrap();
    std::os::unix::fs::symlink(WORKER, home.join("bin/minibot-worker")).unwrap();

    // The guide's master and worker, under the names the ini files use.
    let master = home.join("bb-master/master");
    run_ok(MINIBOT, &["create-master", master.to_str().unwrap()]);
    let gate = home.join("gate");
    // The step starts a background grandchild, then waits; once the gate
    // exists (for the retry) it just succeeds.
    let step = format!(
        "if [ -e {gate} ]; then echo retried; exit 0; fi; \
         sleep 300 & echo $! > grandchild.pid; echo $$ > child.pid; echo started; sleep 300",
        gate = gate.display()
    );
    write_private(
        &master.join("master.cfg"),
        &format!(
            r#"
title = "ops"
[www]
port = 0
[www.change_hook_dialects.base]
# An unsigned curl post below; issue 14 makes that an explicit opt-out.
allow_unsigned = true
[protocols.worker]
port = 0
keepalive = 2
[[workers]]
name = "example-worker"
password = "{WORKER_PW}"
[[schedulers]]
name = "all"
type = "single_branch"
branch = "master"
builders = ["grandchild"]
[[builders]]
name = "grandchild"
workers = ["example-worker"]
[[builders.steps]]
type = "shell"
name = "spawn"
command = {step:?}
"#
        ),
    );
    // The ports a first start binds, kept for supervisord's starts.
    let (www, wport) = pin_ports_by_starting(&master);
    let worker_dir = home.join("bb-workers/example-worker");
    run_ok(
        WORKER,
        &[
            "create-worker",
            "--keepalive",
            "2",
            worker_dir.to_str().unwrap(),
            &format!("127.0.0.1:{wport}"),
            "example-worker",
            WORKER_PW,
        ],
    );
    // Setup's API helpers, for this layout.
    let s = Setup::for_master(tmp, master.clone(), home.join("no-repo"), (www, wport));

    // A user's supervisord: it includes ~/etc/services.d/*.ini.
    let services = home.join("etc/services.d");
    let sv = Supervisord::start(&supervisord, supervisorctl, &home);

    // The user's steps: copy the files, reread, update.
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/services.d");
    for name in ["minibot-master.ini", "minibot-worker.ini"] {
        fs::copy(shipped.join(name), services.join(name)).unwrap();
    }
    let out = sv.ctl_text(&["reread"]);
    assert!(
        out.contains("minibot-master: available") && out.contains("minibot-worker: available"),
        "{out}"
    );
    let out = sv.ctl_text(&["update"]);
    assert!(out.contains("minibot-master: added process group"), "{out}");
    sv.wait_state("minibot-master", "RUNNING");
    sv.wait_state("minibot-worker", "RUNNING");
    s.wait_connected("example-worker");
    assert!(master.join("console.log").exists() && worker_dir.join("console.log").exists());
    assert!(master.join("master.log").exists() && worker_dir.join("worker.log").exists());

    // A build whose step has a grandchild.
    let (code, body) = curl(&[
        "-X",
        "POST",
        "-d",
        "author=ops",
        "-d",
        "comments=grandchild",
        "-d",
        "branch=master",
        "-d",
        "revision=0123abc",
        "-d",
        "repository=none",
        &s.url("/change_hook/base"),
    ]);
    assert_eq!(code, 200, "{body}");
    let build_dir = worker_dir.join("grandchild/build");
    let (child_pid, grandchild_pid) = wait_for(
        "the step to start its processes",
        Duration::from_secs(60),
        || {
            Some((
                read_pid(&build_dir.join("child.pid"))?,
                read_pid(&build_dir.join("grandchild.pid"))?,
            ))
        },
    );
    assert!(minibot::daemon::pid_alive(child_pid));
    assert!(minibot::daemon::pid_alive(grandchild_pid));

    // stop all: nothing of the build is left.
    let out = sv.ctl_text(&["stop", "all"]);
    assert!(
        out.contains("minibot-master: stopped") && out.contains("minibot-worker: stopped"),
        "{out}"
    );
    assert_eq!(sv.state("minibot-master").as_deref(), Some("STOPPED"));
    assert_eq!(sv.state("minibot-worker").as_deref(), Some("STOPPED"));
    // The step's processes were killed before the worker exited; a moment
    // for init to reap the grandchild.
    wait_for(
        "the build's processes to be gone",
        Duration::from_secs(10),
        || {
            (!minibot::daemon::pid_alive(child_pid) && !minibot::daemon::pid_alive(grandchild_pid))
                .then_some(())
        },
    );
    let left = processes_under(&home, &[sv.pid()]);
    assert!(left.is_empty(), "left behind: {left:#?}");
    let sv_log = home.join("supervisord.log");
    let stop_all = fs::read_to_string(&sv_log).unwrap();
    // The order docs/operations.md states: `stop all` signals both at
    // once, before either has stopped (supervisord 4.3.0 signals the
    // worker a millisecond first; which exits first is theirs to say).
    let mut order = stop_order(&stop_all);
    assert_eq!(order.len(), 4, "{stop_all}");
    order[..2].sort();
    assert_eq!(
        order[..2],
        ["signal minibot-master", "signal minibot-worker"],
        "{stop_all}"
    );
    order[2..].sort();
    assert_eq!(
        order[2..],
        ["stopped minibot-master", "stopped minibot-worker"],
        "{stop_all}"
    );
    assert!(!master.join("minibot.pid").exists());
    assert!(!worker_dir.join("minibot-worker.pid").exists());

    // start all: both come back, and the interrupted build is retried.
    fs::write(&gate, "").unwrap();
    let out = sv.ctl_text(&["start", "all"]);
    assert!(
        out.contains("minibot-master: started") && out.contains("minibot-worker: started"),
        "{out}"
    );
    s.wait_connected("example-worker");
    let builds = s.wait_builds(2, Duration::from_secs(60));
    assert_eq!(builds[0]["results"], 5, "first build RETRY: {builds:?}");
    assert_eq!(builds[1]["results"], 0, "the retry succeeded: {builds:?}");
    assert_eq!(builds[0]["buildrequestid"], builds[1]["buildrequestid"]);
    let log = s.step_log(builds[1]["buildid"].as_i64().unwrap(), "spawn");
    assert!(log.contains("retried"), "{log}");

    // `supervisorctl shutdown` goes by priority: the master (200) is
    // signalled and waited for, and only then the worker (100).
    let before = fs::read_to_string(&sv_log).unwrap().len();
    sv.ctl(&["shutdown"]);
    let shutdown = wait_for(
        "supervisord to stop both programs",
        Duration::from_secs(90),
        || {
            let text = fs::read_to_string(&sv_log).ok()?;
            let tail = text.get(before..)?.to_string();
            (stop_order(&tail).len() == 4).then_some(tail)
        },
    );
    assert_eq!(
        stop_order(&shutdown),
        [
            "signal minibot-master",
            "stopped minibot-master",
            "signal minibot-worker",
            "stopped minibot-worker"
        ],
        "{shutdown}"
    );
}

/// The stop events of supervisord's log (at `loglevel=debug`), in order:
/// "signal P" when it sent P its stop signal, "stopped P" when it saw P
/// exit.
fn stop_order(log: &str) -> Vec<String> {
    let mut events = Vec::new();
    for line in log.lines() {
        for p in ["minibot-master", "minibot-worker"] {
            if line.contains(&format!("killing {p} (pid")) && line.contains("with signal SIGTERM") {
                events.push(format!("signal {p}"));
            } else if line.contains(&format!("stopped: {p} ")) {
                events.push(format!("stopped {p}"));
            }
        }
    }
    events
}

/// README.md's shared-host block ("On a shared host: supervisord and
/// SSH"), pasted as it stands into bash, in a home laid out as on such a
/// host: the binaries in `~/bin` (as `cargo install --root ~` leaves
/// them), this checkout as `~/minibot` (the block's `MINIBOT_SRC`), the
/// repository to build in `~/hello-world`, and a supervisord including
/// `~/etc/services.d/*.ini` whose supervisorctl finds its config (a host
/// has its own; here a wrapper adds `-c`). Both programs come up,
/// checkconfig has nothing to warn about (the block set the ports and the
/// repository), and a signed Gitea push of the repository's head builds
/// green.
#[test]
fn the_readme_shared_host_block_pastes_under_supervisord() {
    let (Some(supervisord), Some(supervisorctl)) = (
        require_program("supervisord", INSTALL),
        require_program("supervisorctl", INSTALL),
    ) else {
        return;
    };
    let blocks = crate::guide::readme_blocks("## On a shared host");
    let block = blocks.first().expect("the section's first shell block");
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().to_path_buf();
    fs::create_dir_all(home.join("bin")).unwrap();
    std::os::unix::fs::symlink(MINIBOT, home.join("bin/minibot")).unwrap();
    std::os::unix::fs::symlink(WORKER, home.join("bin/minibot-worker")).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_MANIFEST_DIR"), home.join("minibot")).unwrap();
    let head = make_repo(&home.join("hello-world"), PASSING_TEST);
    let sv = Supervisord::start(&supervisord, supervisorctl.clone(), &home);
    let wrappers = home.join("wrappers");
    fs::create_dir(&wrappers).unwrap();
    let ctl = wrappers.join("supervisorctl");
    fs::write(
        &ctl,
        format!(
            "#!/bin/sh\nexec {} -c {} \"$@\"\n",
            supervisorctl.display(),
            sv.conf.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&ctl, fs::Permissions::from_mode(0o755)).unwrap();

    let (stdout, stderr) = crate::guide::paste(block, &home, &[&wrappers, &home.join("bin")]);
    assert!(stdout.contains("config file is good"), "{stdout}");
    assert!(!stderr.contains("warning"), "{stderr}");
    sv.wait_state("minibot-master", "RUNNING");
    sv.wait_state("minibot-worker", "RUNNING");

    // The worker connects, and the repository's head builds green.
    let master = home.join("bb-master/master");
    let (www, _) = wait_master_addresses(&master, None);
    let api = |path: &str| format!("http://127.0.0.1:{www}/api/v2/{path}");
    wait_for("the worker to connect", Duration::from_secs(60), || {
        let v = get_json(&api("workers/example-worker"));
        (!v["workers"][0]["connected_to"].as_array()?.is_empty()).then_some(())
    });
    let cfg = fs::read_to_string(master.join("master.cfg")).unwrap();
    let secret = cfg
        .split("[www.change_hook_dialects.gitea]")
        .nth(1)
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("secret = \"")))
        .and_then(|s| s.strip_suffix('"'))
        .expect("the Gitea secret create-master wrote");
    let body = push_payload(&head, "master", "hello world");
    let body_file = home.join("push.json");
    fs::write(&body_file, &body).unwrap();
    let (code, answer) = post_gitea(
        &format!("http://127.0.0.1:{www}/change_hook/gitea"),
        "push",
        &body_file,
        Some(&sign(secret, &body)),
    );
    assert_eq!(code, 200, "{answer}");
    let build = wait_for("the build", Duration::from_secs(60), || {
        let v = get_json(&api("builds?complete=true"));
        v["builds"].as_array()?.first().cloned()
    });
    assert_eq!(build["results"], 0, "{build}");
}
