//! The master gives memory back once it goes quiet after builds: a burst
//! of queued builds runs, then, with none running, the botmaster releases
//! SQLite's page caches and glibc's free heap once (a debug line in
//! `master.log`), and builds keep working afterwards. RSS figures are the
//! benchmark's (docs/performance.md); nothing here is timed. The master
//! also runs without glibc's per-thread malloc caches (`daemon::MALLOC_TUNABLE`).

use crate::common::*;
use std::time::Duration;

use minibot::botmaster::RELEASED;

fn releases(s: &Setup) -> Vec<String> {
    std::fs::read_to_string(s.master.join("master.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(RELEASED))
        .map(str::to_string)
        .collect()
}

/// Waits until `master.log` holds `n` release lines; returns them.
fn wait_releases(s: &Setup, n: usize) -> Vec<String> {
    wait_for(
        &format!("{n} idle memory releases in master.log"),
        Duration::from_secs(30),
        || {
            let r = releases(s);
            (r.len() >= n).then_some(r)
        },
    )
}

#[test]
fn idle_master_releases_memory_once_after_builds_and_builds_still_run() {
    let s = Setup::new(PASSING_TEST, &quick_builder_cfg(&["example-worker"]));
    let _master = s.start_master();
    let _worker = s.start_worker("example-worker", WORKER_PW);
    s.wait_connected("example-worker");

    // A burst queued at once, as the benchmark's deep queues are.
    for i in 0..30 {
        hook_push(s.www(), &fake_sha(i), "burst").unwrap();
    }
    assert_eq!(wait_requests_done(&s.master, Duration::from_secs(60)), 30);
    let first = wait_releases(&s, 1);
    // One release for the burst: none while the master was idle before it,
    // none between its builds (the worker was never without a build long
    // enough), and the thread waits again without a timeout after it.
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(
        first[0].contains("kB of memory (anonymous RSS "),
        "{}",
        first[0]
    );

    // Builds still run after it, with a full checkout and the test step:
    // every connection whose cache was emptied reads again.
    s.push(&s.head, "master", "after the release");
    let builds = s.wait_builds(31, Duration::from_secs(60));
    let last = builds.last().unwrap();
    assert_eq!(last["results"], 0, "{last}");
    assert!(s
        .step_log(last["buildid"].as_i64().unwrap(), "test")
        .contains("hello from test_hello"));
    // ... and that busy period ends with a release of its own.
    let second = wait_releases(&s, 2);
    assert_eq!(second.len(), 2, "{second:?}");
}

/// The master runs without glibc's per-thread caches of freed chunks
/// (`daemon::MALLOC_TUNABLE`, which pin pages the idle release cannot
/// return): started without the tunable it execs itself once with it, as
/// the same process (the pid supervisord and the pid file know), keeping
/// tunables the user set. The processes it starts get the user's
/// environment back: here the git poller's git, whose ssh command (a
/// script) writes down its environment.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn master_runs_without_malloc_thread_caches_and_keeps_user_tunables() {
    use std::os::unix::fs::PermissionsExt;
    fn environ(pid: i32) -> String {
        // glibc splits GLIBC_TUNABLES in place at ':', so read it whole.
        let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        String::from_utf8_lossy(&raw).replace('\0', "\n")
    }
    let tmp = tempfile::tempdir().unwrap();
    let ssh = tmp.path().join("ssh-env");
    std::fs::write(
        &ssh,
        "#!/bin/sh\nenv > \"$1.tmp\" && mv \"$1.tmp\" \"$1\"\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755)).unwrap();
    let s = Setup::new(
        PASSING_TEST,
        r#"
[[change_source]]
type = "git_poller"
repourl = "ssh://git.invalid/isabell/hello-world.git"
poll_interval = 1
poll_at_launch = true
"#,
    );
    let dir = s.master.to_str().unwrap();
    let pid_file = || std::fs::read_to_string(s.master.join("minibot.pid")).unwrap();
    // The environment git's ssh command saw, once it has run.
    let child_env = |out: &std::path::Path| {
        wait_for(
            "the poller's git to run ssh",
            Duration::from_secs(20),
            || std::fs::read_to_string(out).ok(),
        )
    };
    let start = |out: &std::path::Path, user: &[(&str, &str)]| {
        let command = format!("{} {}", ssh.display(), out.display());
        let mut env = vec![("GIT_SSH_COMMAND", command.as_str())];
        env.extend_from_slice(user);
        start_daemon_env(MINIBOT, &["start", "--nodaemon", dir], "master", &env).0
    };

    let out = tmp.path().join("env-without");
    let master = start(&out, &[]);
    assert!(
        environ(master.pid()).contains("glibc.malloc.tcache_count=0"),
        "{}",
        environ(master.pid())
    );
    assert_eq!(pid_file().trim(), master.pid().to_string());
    let env = child_env(&out);
    assert!(!env.contains("GLIBC_TUNABLES"), "{env}");
    assert!(!env.contains("MINIBOT_"), "{env}");
    drop(master);

    let out = tmp.path().join("env-with");
    let master = start(&out, &[("GLIBC_TUNABLES", "glibc.malloc.arena_max=1")]);
    let env = environ(master.pid());
    assert!(
        env.contains("GLIBC_TUNABLES=glibc.malloc.arena_max=1"),
        "{env}"
    );
    assert!(env.contains("glibc.malloc.tcache_count=0"), "{env}");
    assert_eq!(get_status(&s.url("/api/v2/builders")), 200);
    let env = child_env(&out);
    assert!(
        env.lines()
            .any(|l| l == "GLIBC_TUNABLES=glibc.malloc.arena_max=1"),
        "{env}"
    );
    assert!(!env.contains("MINIBOT_"), "{env}");
}
