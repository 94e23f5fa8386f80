//! Reporters driven by the database (issue 16, point 6): a finished
//! build's final commit status and mail arrive although the event that
//! should have announced it was dropped (`MINIBOT_FAULT_DROP_EVENTS`, the
//! hub's own drop path), and although the master was killed between the
//! build's end and the delivery (Gitea and SMTP down, then back after a
//! restart). The fake Gitea checks every request against Gitea's schema;
//! the mails go through a real SMTP server (aiosmtpd).

use crate::common::*;
use std::path::Path;
use std::time::Duration;

const TOKEN: &str = "gitea-token-456";

fn reporters_cfg(gitea_port: u16, smtp_port: u16) -> String {
    format!(
        r#"
[[reporters]]
type = "gitea_status"
base_url = "http://127.0.0.1:{gitea_port}"
token_file = "gitea-token"

[[reporters]]
type = "mail"
smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
starttls = false
smtp_user = "ci"
smtp_password = "pw"
from = "minibot <ci@example.org>"
to = ["isabell@example.org"]
mode = "all"
"#
    )
}

/// Starts the master with `env` added to the tests' debug logging.
fn start_master_env(s: &Setup, env: &[(&str, &str)]) -> Proc {
    let mut all = vec![("RUST_LOG", "debug")];
    all.extend_from_slice(env);
    let (p, _line) = start_daemon_env(
        MINIBOT,
        &["start", "--nodaemon", s.master.to_str().unwrap()],
        "master",
        &all,
    );
    s.learn_ports(p.pid()).expect("addresses.json");
    p
}

/// "kind outcome" of each settled final delivery, by kind then build.
fn settled(master: &Path) -> Vec<String> {
    db_query(
        master,
        "SELECT kind || ' ' || outcome FROM reporter_deliveries ORDER BY kind, buildid",
    )
}

fn subjects(sink: &SmtpSink) -> Vec<String> {
    sink.mails()
        .iter()
        .flat_map(|m| m.iter().filter_map(|l| l.strip_prefix("|Subject: ")))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_dropped_build_finished_event_still_gets_its_status_and_mail() {
    let gitea = FakeGitea::start(TOKEN);
    let Some(sink) = SmtpSink::start(None) else {
        return;
    };
    let s = Setup::new(PASSING_TEST, &reporters_cfg(gitea.port, sink.port));
    write_private(&s.master.join("gitea-token"), &format!("{TOKEN}\n"));
    let _master = start_master_env(&s, &[("MINIBOT_FAULT_DROP_EVENTS", "build_finished")]);
    let _worker = s.start_worker("example-worker", WORKER_PW);
    s.wait_connected("example-worker");
    s.push(&s.head, "master", "one");
    let b = &s.wait_builds(1, Duration::from_secs(60))[0];
    assert_eq!(b["results"], 0, "{b}");
    let ended = std::time::Instant::now();
    // The hub dropped the BuildFinished; the reporters noticed the drop and
    // found the build in the database.
    assert_eq!(
        gitea.wait_final(&s.head, Duration::from_secs(30)),
        ["pending", "success"]
    );
    println!(
        "BuildFinished dropped: final status {:?} after the build was seen complete",
        ended.elapsed()
    );
    let mails = wait_for("the mail", Duration::from_secs(30), || {
        let m = subjects(&sink);
        (!m.is_empty()).then_some(m)
    });
    assert_eq!(mails, ["e2e: success in runtests #1"]);
    wait_for("both deliveries recorded", Duration::from_secs(10), || {
        (settled(&s.master) == ["mail sent", "status sent"]).then_some(())
    });
    assert!(
        gitea.problems.lock().unwrap().is_empty(),
        "{:?}",
        gitea.problems.lock().unwrap()
    );
    // Reported once: the periodic sweep finds nothing more to do.
    assert_eq!(subjects(&sink).len(), 1);
    assert_eq!(gitea.states(&s.head), ["pending", "success"]);
}

#[test]
fn a_master_killed_before_delivery_reports_after_its_restart() {
    // Gitea and the SMTP server are down while the build ends.
    let gitea_port = FakeGitea::start(TOKEN).port;
    let smtp_down = free_port();
    let s = Setup::new(PASSING_TEST, &reporters_cfg(gitea_port, smtp_down));
    write_private(&s.master.join("gitea-token"), &format!("{TOKEN}\n"));
    let mut master = s.start_master();
    let _worker = s.start_worker("example-worker", WORKER_PW);
    s.wait_connected("example-worker");
    s.push(&s.head, "master", "one");
    let b = &s.wait_builds(1, Duration::from_secs(60))[0];
    assert_eq!(b["results"], 0, "{b}");
    master.signal(libc::SIGKILL);
    master.wait_exit(Duration::from_secs(10));

    // Both back (the SMTP server on a port of its own, which is the same
    // reporter: its identity is the sender and recipients), then the master.
    let gitea = FakeGitea::start_on(gitea_port, TOKEN);
    let Some(sink) = SmtpSink::start(None) else {
        return;
    };
    s.edit_cfg(|c| {
        c.replace(
            &format!("smtp_port = {smtp_down}"),
            &format!("smtp_port = {}", sink.port),
        )
    });
    let restarted = std::time::Instant::now();
    let _master = s.start_master();
    assert_eq!(
        gitea.wait_final(&s.head, Duration::from_secs(30)),
        ["success"]
    );
    println!(
        "master killed before delivery: final status {:?} after the restart began",
        restarted.elapsed()
    );
    let mails = wait_for("the mail", Duration::from_secs(30), || {
        let m = subjects(&sink);
        (!m.is_empty()).then_some(m)
    });
    assert_eq!(mails, ["e2e: success in runtests #1"]);
    wait_for("both deliveries recorded", Duration::from_secs(10), || {
        (settled(&s.master) == ["mail sent", "status sent"]).then_some(())
    });
    assert!(
        gitea.problems.lock().unwrap().is_empty(),
        "{:?}",
        gitea.problems.lock().unwrap()
    );
}

#[test]
fn a_new_reporter_does_not_report_builds_from_before_it() {
    let gitea = FakeGitea::start(TOKEN);
    let s = Setup::new(PASSING_TEST, "");
    write_private(&s.master.join("gitea-token"), &format!("{TOKEN}\n"));
    let mut master = s.start_master();
    let _worker = s.start_worker("example-worker", WORKER_PW);
    s.wait_connected("example-worker");
    s.push(&s.head, "master", "old");
    s.wait_builds(1, Duration::from_secs(60));
    master.signal(libc::SIGTERM);
    master.wait_exit(Duration::from_secs(20));

    // A Gitea reporter configured after that build (as after an upgrade):
    // the start-up sweep leaves the old build alone; the next one reports.
    s.edit_cfg(|c| {
        format!(
            "{c}\n[[reporters]]\ntype = \"gitea_status\"\nbase_url = \"{}\"\ntoken_file = \"gitea-token\"\n",
            gitea.url()
        )
    });
    let _master = s.start_master();
    s.wait_connected("example-worker");
    let new = s.commit("f.txt", "new\n", "new");
    s.push(&new, "master", "new");
    s.wait_builds(2, Duration::from_secs(60));
    assert_eq!(
        gitea.wait_final(&new, Duration::from_secs(30)),
        ["pending", "success"]
    );
    assert_eq!(gitea.states(&s.head), Vec::<String>::new());
    assert_eq!(
        db_query::<i64>(&s.master, "SELECT buildid FROM reporter_deliveries"),
        [2]
    );
}
