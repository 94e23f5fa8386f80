//! The shipped `etc/ssh/authorized_keys.template` against a real OpenSSH
//! server: its own `sshd` on 127.0.0.1 (own config, host key and
//! authorized_keys file filled from the template), a real master, and the
//! real `ssh` client. Checked: `ssh -N -L` reaches the web UI; a tunnel to
//! another port is refused, and so is `ssh -R`; a command gets the message
//! and does not run; the worker line lets a worker connect through its
//! tunnel.

use crate::common::*;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const INSTALL: &str =
    "install Debian's openssh-server (`apt-get install openssh-server`, as .ci/run does)";

/// The template with the placeholders filled for one key per line: the
/// web UI line gets `web_key`, the worker line `worker_key` (one key per
/// line, as the template says). Comments stay: sshd skips them.
fn fill_template(www: u16, wport: u16, web_key: &str, worker_key: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/ssh/authorized_keys.template");
    let text = fs::read_to_string(&path).expect("read the template");
    let mut key_lines = 0;
    let filled: Vec<String> = text
        .lines()
        .map(|line| {
            if line.starts_with('#') || line.trim().is_empty() {
                return line.to_string();
            }
            key_lines += 1;
            assert!(line.ends_with(" {{PUBLIC_KEY}}"), "{line}");
            let key = if line.contains("{{WWW_PORT}}") {
                web_key
            } else {
                worker_key
            };
            line.replace("{{WWW_PORT}}", &www.to_string())
                .replace("{{WORKER_PORT}}", &wport.to_string())
                .replace("{{PUBLIC_KEY}}", key.trim())
        })
        .collect();
    assert_eq!(key_lines, 2, "a web UI line and a worker line");
    let out = filled.join("\n") + "\n";
    for line in out.lines().filter(|l| !l.starts_with('#')) {
        assert!(!line.contains("{{"), "a placeholder is left: {line}");
    }
    out
}

fn keygen(path: &Path, comment: &str) -> String {
    run_ok(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            comment,
            "-f",
            path.to_str().unwrap(),
        ],
    );
    fs::read_to_string(path.with_extension("pub")).unwrap()
}

fn user_name() -> String {
    run_ok("id", &["-un"]).trim().to_string()
}

/// `ssh` with nothing from the user's configuration, no prompts, and our key.
fn ssh_cmd(port: u16, key: &Path) -> Command {
    let mut c = Command::new("ssh");
    c.args(["-F", "/dev/null", "-o", "BatchMode=yes"])
        .args(["-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null"])
        .args(["-o", "IdentitiesOnly=yes", "-i"])
        .arg(key)
        .args(["-p", &port.to_string()])
        .stdin(Stdio::null());
    c
}

/// An `ssh -N` process, stderr in a file.
fn tunnel(port: u16, key: &Path, args: &[&str], stderr: &Path, name: &str) -> Proc {
    let child = ssh_cmd(port, key)
        .arg("-N")
        .args(args)
        .arg(format!("{}@127.0.0.1", user_name()))
        .stdout(Stdio::null())
        .stderr(fs::File::create(stderr).unwrap())
        .spawn()
        .expect("start ssh");
    Proc {
        child,
        name: name.to_string(),
    }
}

/// Checks that connections through local port `lp` are refused by sshd:
/// ssh accepts the connection, then closes it without a byte, and says why.
fn assert_refused(lp: u16, stderr: &Path) {
    let mut conn = wait_for(
        &format!("ssh listening on {lp}"),
        Duration::from_secs(20),
        || std::net::TcpStream::connect(("127.0.0.1", lp)).ok(),
    );
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = Vec::new();
    // EOF (or a reset) with nothing read: the far side never connected.
    let _ = conn.read_to_end(&mut buf);
    assert!(buf.is_empty(), "data came through a forbidden tunnel");
    wait_for("ssh to report the refusal", Duration::from_secs(10), || {
        fs::read_to_string(stderr)
            .ok()?
            .contains("administratively prohibited")
            .then_some(())
    });
}

struct Sshd {
    /// Killed when the test ends (after the tunnels declared later).
    _proc: Proc,
    port: u16,
    log: PathBuf,
}

fn start_sshd(sshd: &Path, dir: &Path, authorized_keys: &Path) -> Sshd {
    let host_key = dir.join("host_ed25519");
    keygen(&host_key, "host");
    let port = free_port();
    let cfg = dir.join("sshd_config");
    fs::write(
        &cfg,
        format!(
            "ListenAddress 127.0.0.1\nPort {port}\nHostKey {hk}\nPidFile {dir}/sshd.pid\n\
             AuthorizedKeysFile {ak}\n\
             # The temp dir's modes are not what sshd wants of a home.\nStrictModes no\n\
             PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nUsePAM no\nLogLevel VERBOSE\n",
            hk = host_key.display(),
            dir = dir.display(),
            ak = authorized_keys.display(),
        ),
    )
    .unwrap();
    // As root, sshd wants its privilege separation directory, which a
    // container without systemd may not have created.
    if user_name() == "root" {
        fs::create_dir_all("/run/sshd").unwrap();
    }
    let log = dir.join("sshd.log");
    let child = Command::new(sshd)
        .args(["-D", "-e", "-f"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .expect("start sshd");
    let proc = Proc {
        child,
        name: "sshd".into(),
    };
    wait_for("sshd listening", Duration::from_secs(20), || {
        port_open(port).then_some(())
    });
    Sshd {
        _proc: proc,
        port,
        log,
    }
}

#[test]
fn authorized_keys_template_allows_only_the_tunnels() {
    let Some(sshd_bin) = require_program("/usr/sbin/sshd", INSTALL) else {
        return;
    };
    let (Some(_), Some(_)) = (
        require_program("ssh", INSTALL),
        require_program("ssh-keygen", INSTALL),
    ) else {
        return;
    };
    let s = Setup::new(PASSING_TEST, "");
    let _master = s.start_master();
    let dir = s.tmp.path().join("ssh");
    fs::create_dir_all(&dir).unwrap();
    let web_key = dir.join("web_ed25519");
    let worker_key = dir.join("worker_ed25519");
    let web_pub = keygen(&web_key, "laptop");
    let worker_pub = keygen(&worker_key, "remote-worker");
    let ak = dir.join("authorized_keys");
    fs::write(
        &ak,
        fill_template(s.www(), s.wport(), &web_pub, &worker_pub),
    )
    .unwrap();
    let sshd = start_sshd(&sshd_bin, &dir, &ak);
    let ctx = || {
        format!(
            "sshd log:\n{}",
            fs::read_to_string(&sshd.log).unwrap_or_default()
        )
    };

    // A command (or a shell) is refused with the message and never runs.
    let marker = dir.join("marker");
    let out = ssh_cmd(sshd.port, &web_key)
        .arg(format!("{}@127.0.0.1", user_name()))
        .arg(format!("touch {}", marker.display()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}\n{}", ctx());
    assert!(
        err.contains("this key only opens a tunnel to the web UI")
            && err.contains(&format!("ssh -N -L {0}:localhost:{0}", s.www())),
        "{err}"
    );
    assert!(!marker.exists(), "the command ran");

    // The web UI through `ssh -N -L`, as the README says (by name and by
    // address: sshd compares permitopen literally).
    for host in ["localhost", "127.0.0.1"] {
        let lp = free_port();
        let _t = tunnel(
            sshd.port,
            &web_key,
            &["-L", &format!("{lp}:{host}:{}", s.www())],
            &dir.join(format!("web-{host}.err")),
            "web tunnel",
        );
        let url = format!("http://127.0.0.1:{lp}/api/v2/builders");
        let builders = wait_for(
            &format!("the web UI through the tunnel via {host}"),
            Duration::from_secs(20),
            || {
                // Until ssh listens and has the channel up, curl fails.
                let out = run("curl", &["-sf", &url]);
                out.status
                    .success()
                    .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
            },
        );
        let v: serde_json::Value = serde_json::from_str(&builders).unwrap();
        assert_eq!(v["builders"][0]["name"], "runtests", "{v}");
    }

    // Any other port is refused: here the worker port, which is listening.
    let lp = free_port();
    let err_file = dir.join("other.err");
    let _t = tunnel(
        sshd.port,
        &web_key,
        &["-L", &format!("{lp}:127.0.0.1:{}", s.wport())],
        &err_file,
        "forbidden tunnel",
    );
    assert_refused(lp, &err_file);

    // No remote forwarding either.
    let err_file = dir.join("remote.err");
    let mut r = tunnel(
        sshd.port,
        &web_key,
        &[
            "-o",
            "ExitOnForwardFailure=yes",
            "-R",
            &format!("127.0.0.1:{}:127.0.0.1:{}", free_port(), s.www()),
        ],
        &err_file,
        "ssh -R",
    );
    assert_ne!(r.wait_exit(Duration::from_secs(20)), Some(0));
    let err = fs::read_to_string(&err_file).unwrap();
    assert!(err.contains("remote port forwarding failed"), "{err}");

    // The worker line: a remote worker connects through its tunnel...
    let lp = free_port();
    let _wt = tunnel(
        sshd.port,
        &worker_key,
        &["-L", &format!("{lp}:localhost:{}", s.wport())],
        &dir.join("worker-tunnel.err"),
        "worker tunnel",
    );
    wait_for("the worker tunnel", Duration::from_secs(20), || {
        port_open(lp).then_some(())
    });
    let wdir = s.tmp.path().join("remote-worker");
    run_ok(
        WORKER,
        &[
            "create-worker",
            "--keepalive",
            "2",
            wdir.to_str().unwrap(),
            &format!("localhost:{lp}"),
            "example-worker",
            WORKER_PW,
        ],
    );
    let (_worker, _) = start_daemon(
        WORKER,
        &["start", "--nodaemon", wdir.to_str().unwrap()],
        "remote worker",
    );
    s.wait_connected("example-worker");
    // ... and its key opens nothing else.
    let lp = free_port();
    let err_file = dir.join("worker-to-www.err");
    let _t2 = tunnel(
        sshd.port,
        &worker_key,
        &["-L", &format!("{lp}:127.0.0.1:{}", s.www())],
        &err_file,
        "worker key to the web port",
    );
    assert_refused(lp, &err_file);
    let out = ssh_cmd(sshd.port, &worker_key)
        .arg(format!("{}@127.0.0.1", user_name()))
        .arg("true")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only opens a tunnel to the worker port"));
}
