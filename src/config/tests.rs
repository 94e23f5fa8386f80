//! The config module's tests: parsing, every problem message, defaults.

use super::raw::{DEFAULT_BUILD_HORIZON_DAYS, DEFAULT_LOG_HORIZON_DAYS};
use super::*;

/// SPEC §2, verbatim.
const SPEC_CFG: &str = r#"
title = "Hello World CI"
buildbot_url = "http://localhost:12345/"   # base of links in statuses and mails

[www]
port = 12345                 # TCP port of the web UI, API and change hooks
bind = "127.0.0.1"           # default; never 0.0.0.0 unless written here
# unix_socket = "www.sock"   # instead of port: a unix socket, mode 0600
# anonymous = "read"         # "read" (default) or "none"; writes always need a login
# max_connections = 32       # HTTP requests served at once (a thread each); idle
#                            # connections wait without one

[www.change_hook_dialects.gitea]
secret = "SomeSecretPassPhraseToAuthenticateGitea"

# [www.change_hook_dialects.base] # plain form/JSON posts, e.g. from `minibot sendchange`
# secret = "..."                  # required (X-Hub-Signature-256); an unsigned hook needs
                              # `allow_unsigned = true`, which checkconfig warns about

[protocols.worker]
port = 54321
bind = "127.0.0.1"

[[workers]]
name = "example-worker"
password = "pass"
max_builds = 1

[[schedulers]]
name = "all"
type = "single_branch"       # single_branch | any_branch | force | periodic | nightly
branch = "master"            # single_branch; any_branch takes branch_regex / tag_regex
tree_stable_timer = 0        # seconds to wait for more changes before building
builders = ["runtests"]

[[schedulers]]
name = "force"
type = "force"
builders = ["runtests"]

[[builders]]
name = "runtests"
workers = ["example-worker"]

[[builders.steps]]
type = "git"                 # clone or update the source at the change's revision
repourl = "https://git.example.org/isabell/hello-world.git"
mode = "incremental"         # incremental | full (fresh clone)

[[builders.steps]]
type = "shell"
name = "test"
command = ["python3", "test_hello.py"]   # argv list, or a string run by /bin/sh
env = { PYTHONUNBUFFERED = "1" }
timeout = 1200               # seconds without output before the step is killed
# halt_on_failure = true     # default true; warn_on_failure, flunk_on_failure as in Buildbot

# [[reporters]]
# type = "gitea_status"      # commit statuses on Gitea: pending, then success/failure/error
# base_url = "https://git.example.org"
# token = "..."
"#;

/// A valid config to break one key at a time.
const BASE: &str = r#"
[www]
port = 8010
[protocols.worker]
port = 9989
[[workers]]
name = "w1"
password = "pw"
[[schedulers]]
name = "s"
type = "force"
builders = ["b"]
[[builders]]
name = "b"
workers = ["w1"]
[[builders.steps]]
type = "shell"
command = "make test"
"#;

/// A shell step's command and environment.
#[track_caller]
fn shell(step: &Step) -> (&Command, &std::collections::BTreeMap<String, String>) {
    match &step.kind {
        StepKind::Shell { command, env, .. } => (command, env),
        _ => panic!("not a shell step"),
    }
}

/// The problems of `text`, without their line numbers
/// (`master.cfg:12: x: y` → `master.cfg: x: y`); the lines have a test of
/// their own.
fn problems(text: &str) -> Vec<String> {
    match parse(text, "master.cfg") {
        Ok(_) => Vec::new(),
        Err(e) => e.problems.iter().map(|p| without_line(p)).collect(),
    }
}

fn without_line(problem: &str) -> String {
    if let Some(rest) = problem.strip_prefix("master.cfg:") {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits > 0 && rest[digits..].starts_with(": ") {
            return format!("master.cfg{}", &rest[digits..]);
        }
    }
    problem.to_string()
}

/// The sample's example repository is the warning every sample-based
/// config has until it is edited; the others are what a test looks at.
fn warnings_besides_repourl(cfg: &Config) -> Vec<String> {
    cfg.warnings()
        .into_iter()
        .filter(|w| !w.contains("example repository"))
        .collect()
}

#[test]
fn problems_have_lines_types_in_words_and_come_in_one_pass() {
    let text = BASE.replace("port = 8010", "port = 70000").replace(
        "password = \"pw\"",
        "password = \"pw\"\nmax_builds = \"two\"",
    );
    let text = text.replace("builders = [\"b\"]", "builders = [\"nosuch\"]");
    let err = parse(&text, "master.cfg").expect_err("bad config");
    let line_of = |needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let expected = [
        format!(
            "master.cfg:{}: www.port: expected a port number (1–65535, or 0 for any free port), found 70000",
            line_of("port = 70000")
        ),
        format!(
            "master.cfg:{}: workers #1 (name = \"w1\").max_builds: expected a whole number from 0 to 4294967295, found the string \"two\"",
            line_of("max_builds")
        ),
        // A problem of meaning in the same answer as the type errors.
        format!(
            "master.cfg:{}: schedulers #1 (name = \"s\").builders #1: no builder named \"nosuch\"",
            line_of("builders = [\"nosuch\"]")
        ),
    ];
    for e in &expected {
        assert!(err.problems.contains(e), "{e:?} not in {:#?}", err.problems);
    }
    assert_eq!(err.problems.len(), 3, "{:#?}", err.problems);
}

/// Asserts that `expected` is among the problems of `text`.
#[track_caller]
fn assert_problem(text: &str, expected: &str) {
    let found = problems(text);
    assert!(
        found.iter().any(|p| p.contains(expected)),
        "expected a problem containing {expected:?}, got {found:#?}"
    );
}

fn with(extra: &str) -> String {
    format!("{BASE}{extra}")
}

#[test]
fn sample_parses() {
    let cfg = parse(SAMPLE, "master.cfg.sample").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.title, "Hello World CI");
    assert_eq!(cfg.www.port, 12345);
    assert_eq!(cfg.www.bind, "127.0.0.1");
    assert_eq!(cfg.protocols.worker.port, 54321);
    assert!(cfg.worker("example-worker").is_some());
    assert_eq!(
        cfg.scheduler("all").map(|s| s.kind.type_name()),
        Some("single_branch")
    );
    assert_eq!(
        cfg.scheduler("force").map(|s| s.kind.type_name()),
        Some("force")
    );
    let b = cfg.builder("runtests").expect("builder runtests");
    assert_eq!(b.steps.len(), 2);
    assert_eq!(
        shell(&b.steps[1]).0,
        &Command::Argv(vec!["python3".into(), "test_hello.py".into()])
    );
    assert!(cfg.reporters.is_empty());
    assert_eq!(cfg.max_log_size, 10 * 1024 * 1024);
}

#[test]
fn spec_config_parses() {
    let cfg = parse(SPEC_CFG, "master.cfg").unwrap_or_else(|e| panic!("{e}"));
    let gitea = cfg.www.change_hook_dialects.gitea.as_ref().expect("gitea");
    assert_eq!(
        gitea.secret.as_deref(),
        Some("SomeSecretPassPhraseToAuthenticateGitea")
    );
    assert!(cfg.www.change_hook_dialects.base.is_none());
    assert!(warnings_besides_repourl(&cfg).is_empty());
    assert_eq!(cfg.www.anonymous, Anonymous::Read);
    let b = cfg.builder("runtests").expect("builder");
    assert_eq!(b.builddir, "runtests");
    assert!(matches!(
        b.steps[0].kind,
        StepKind::Git {
            mode: GitMode::Incremental,
            ..
        }
    ));
    assert_eq!(
        shell(&b.steps[1])
            .1
            .get("PYTHONUNBUFFERED")
            .map(String::as_str),
        Some("1")
    );
    assert_eq!(b.steps[1].timeout.as_secs(), 1200);
    assert!(b.steps[1].halt_on_failure);
    assert_eq!(b.step_names(), vec!["git", "test"]);
}

#[test]
fn base_is_valid_and_defaults_apply() {
    let cfg = parse(BASE, "master.cfg").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.title, "minibot");
    assert_eq!(cfg.workers[0].max_builds, 1);
    assert_eq!(cfg.protocols.worker.keepalive, 30);
    assert_eq!(cfg.protocols.worker.bind, "127.0.0.1");
    assert!(cfg.builder("nope").is_none());
}

#[test]
fn command_as_string_and_argv() {
    let cfg = parse(BASE, "master.cfg").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        shell(&cfg.builders[0].steps[0]).0,
        &Command::Shell("make test".into())
    );
    let argv = BASE.replace("command = \"make test\"", "command = [\"make\", \"test\"]");
    let cfg = parse(&argv, "master.cfg").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        shell(&cfg.builders[0].steps[0]).0,
        &Command::Argv(vec!["make".into(), "test".into()])
    );
    assert_problem(
        &BASE.replace("command = \"make test\"", "command = 3"),
        "master.cfg: builders #1 (name = \"b\").steps #1.command: expected a string (run by /bin/sh) or a list of strings (argv)",
    );
}

#[test]
fn unknown_keys_everywhere() {
    let text = BASE
        .replace("command = \"make test\"", "comand = \"make test\"")
        .replace("[www]\n", "[www]\nprot = 1\n")
        .replace("[protocols.worker]\n", "[protocols.worker]\nhost = \"x\"\n");
    let text = format!("titel = \"x\"\n{text}");
    let found = problems(&text);
    for expected in [
        "master.cfg: titel: unknown key (did you mean `title`?)",
        "master.cfg: www.prot: unknown key (did you mean `port`?)",
        "master.cfg: protocols.worker.host: unknown key (known here: port, bind, keepalive)",
        "master.cfg: builders #1 (name = \"b\").steps #1.comand: unknown key (did you mean `command`?)",
    ] {
        assert!(
            found.iter().any(|p| p == expected),
            "{expected:?} not in {found:#?}"
        );
    }
    assert_problem(
        &text.replace("[www]\n", "[www.change_hook_dialects.gogs]\n[www]\n"),
        "www.change_hook_dialects.gogs: unknown key (known here: gitea, base, github)",
    );
}

#[test]
fn unknown_key_deep_in_steps_has_index_path() {
    let text =
        with("[[builders.steps]]\ntype = \"git\"\nrepourl = \"u\"\nflunk_on_failur = true\n");
    assert_problem(
        &text,
        "master.cfg: builders #1 (name = \"b\").steps #2.flunk_on_failur: unknown key (did you mean `flunk_on_failure`?)",
    );
}

#[test]
fn type_errors_name_their_path_and_all_parts_are_checked() {
    let text = BASE.replace("port = 8010", "port = 70000").replace(
        "password = \"pw\"",
        "password = \"pw\"\nmax_builds = \"two\"",
    );
    let text = format!("{text}[[builders]]\nname = \"c\"\nworkers = \"w1\"\n[[builders.steps]]\ntype = \"shell\"\ncommand = \"x\"\ntimeout = -1\n[[builders.steps]]\ntype = \"shell\"\ncommand = \"y\"\nenv = {{ A = 1 }}\n");
    let found = problems(&text);
    for expected in [
        "master.cfg: www.port: expected a port number (1–65535, or 0 for any free port), found 70000",
        "master.cfg: workers #1 (name = \"w1\").max_builds: expected a whole number from 0 to 4294967295, found the string \"two\"",
        "master.cfg: builders #2 (name = \"c\").workers: expected a list, e.g. [\"a\", \"b\"], found the string \"w1\"",
        "master.cfg: builders #2 (name = \"c\").steps #1.timeout: expected a whole number, 0 or more, found -1",
        "master.cfg: builders #2 (name = \"c\").steps #2.env.A: expected a string in quotes, found 1",
    ] {
        assert!(
            found.iter().any(|p| p == expected),
            "{expected:?} not in {found:#?}"
        );
    }
}

#[test]
fn missing_required_key_is_named() {
    assert_problem(
        &BASE.replace("password = \"pw\"\n", ""),
        "master.cfg: workers #1 (name = \"w1\").password: required key is missing",
    );
    assert_problem(
        &BASE.replace("type = \"force\"\n", ""),
        "master.cfg: schedulers #1 (name = \"s\").type: required key is missing",
    );
}

#[test]
fn syntax_error_has_line_and_column() {
    let found = problems("title = \"x\"\n[www\nport = 1\n");
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].starts_with("master.cfg: line 2, column "),
        "{found:#?}"
    );
    assert!(!found[0].contains('\n'));
}

#[test]
fn unreadable_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("master.cfg");
    let err = load(&path).expect_err("missing file");
    assert_eq!(
        err.to_string(),
        format!("cannot read {}: No such file or directory", path.display())
    );
    std::fs::write(&path, SAMPLE).expect("write");
    private(&path);
    assert!(load(&path).is_ok());
}

fn private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

#[test]
fn config_file_with_secrets_must_be_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("master.cfg");
    std::fs::write(&path, SAMPLE).expect("write");
    for mode in [0o644, 0o640, 0o604, 0o660] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let err = load(&path).expect_err("readable by others").to_string();
        assert!(
            err.contains(&format!("run `chmod 600 {}`", path.display()))
                && err.contains(&format!("mode {mode:03o}"))
                && err.contains("workers #1 (name = \"example-worker\").password"),
            "{err}"
        );
    }
    private(&path);
    assert!(load(&path).is_ok());
}

#[test]
fn weak_and_published_secrets_are_warned_about() {
    let cfg = parse(SAMPLE, "master.cfg.sample").unwrap_or_else(|e| panic!("{e}"));
    let w = secret_warnings(&cfg);
    assert!(
        w.iter().any(|l| l.starts_with(
            "www.change_hook_dialects.gitea.secret: is the sample's published secret"
        )),
        "{w:#?}"
    );
    assert!(
        w.iter().any(|l| l.starts_with(
            "workers #1 (name = \"example-worker\").password: is the sample's published password"
        )),
        "{w:#?}"
    );
    let fresh = sample_with_secrets(&random_hex(16).unwrap(), &random_hex(16).unwrap());
    assert!(!fresh.contains(SAMPLE_GITEA_SECRET) && !fresh.contains(SAMPLE_WORKER_PASSWORD));
    let cfg = parse(&fresh, "master.cfg.sample").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(secret_warnings(&cfg), Vec::<String>::new());
    let cfg = parse(
        &with("[[workers]]\nname = \"w2\"\npassword = \"elevenchars\"\n"),
        "m",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let w = secret_warnings(&cfg);
    assert!(
        w.iter()
            .any(|l| l
                .starts_with("workers #2 (name = \"w2\").password: is shorter than 12 characters")),
        "{w:#?}"
    );
}

#[test]
fn duplicate_names() {
    let text = with(
        "[[workers]]\nname = \"w1\"\npassword = \"x\"\n\
         [[schedulers]]\nname = \"s\"\ntype = \"force\"\nbuilders = [\"b\"]\n\
         [[builders]]\nname = \"b\"\nworkers = [\"w1\"]\n",
    );
    let found = problems(&text);
    for expected in [
        "master.cfg: workers #2 (name = \"w1\").name: duplicate worker name \"w1\" (also line 7: workers #1 (name = \"w1\").name)",
        "master.cfg: schedulers #2 (name = \"s\").name: duplicate scheduler name \"s\" (also line 10: schedulers #1 (name = \"s\").name)",
        "master.cfg: builders #2 (name = \"b\").name: duplicate builder name \"b\" (also line 14: builders #1 (name = \"b\").name)",
    ] {
        assert!(
            found.iter().any(|p| p == expected),
            "{expected:?} not in {found:#?}"
        );
    }
    assert_problem(
        &with("[[builders]]\nname = \"c\"\nworkerbuilddir = \"b\"\nworkers = [\"w1\"]\n"),
        "builders #2 (name = \"c\").workerbuilddir: duplicate build directory \"b\" (also line 14: builders #1 (name = \"b\").name)",
    );
}

#[test]
fn references() {
    assert_problem(
        &BASE.replace("builders = [\"b\"]", "builders = [\"b\", \"tests\"]"),
        "master.cfg: schedulers #1 (name = \"s\").builders #2: no builder named \"tests\"",
    );
    assert_problem(
        &BASE.replace("builders = [\"b\"]", "builders = []"),
        "schedulers #1 (name = \"s\").builders: names no builder",
    );
    assert_problem(
        &BASE.replace("workers = [\"w1\"]", "workers = [\"w2\"]"),
        "master.cfg: builders #1 (name = \"b\").workers #1: no worker named \"w2\"",
    );
    assert_problem(
        &BASE.replace("workers = [\"w1\"]", "workers = []"),
        "master.cfg: builders #1 (name = \"b\").workers: names no worker",
    );
}

#[test]
fn scheduler_checks() {
    let sched = |body: &str| {
        with(&format!(
            "[[schedulers]]\nname = \"t\"\nbuilders = [\"b\"]\n{body}"
        ))
    };
    assert_problem(
        &sched("type = \"sometimes\"\n"),
        "schedulers #2 (name = \"t\").type: \"sometimes\" is not one of \"single_branch\", \"any_branch\", \"force\", \"periodic\", \"nightly\"",
    );
    assert_problem(
        &sched("type = \"periodic\"\n"),
        "schedulers #2 (name = \"t\").period: required for a periodic scheduler",
    );
    assert_problem(
        &sched("type = \"nightly\"\nhour = 24\n"),
        "schedulers #2 (name = \"t\").hour: 24 is out of range 0-23",
    );
    assert_problem(
        &sched("type = \"nightly\"\nday_of_week = \"someday\"\n"),
        "schedulers #2 (name = \"t\").day_of_week: \"someday\": use a number",
    );
    assert_problem(
        &sched("type = \"nightly\"\nminute = 1.5\n"),
        "schedulers #2 (name = \"t\").minute: expected a number, a list of numbers or \"*\"",
    );
    assert_problem(
        &sched("type = \"nightly\"\nperiod = 5\n"),
        "schedulers #2 (name = \"t\").period: not a key of nightly schedulers (only periodic)",
    );
    assert_problem(
        &sched("type = \"force\"\nfiles_regex = \"x\"\n"),
        "schedulers #2 (name = \"t\").files_regex: not a key of force schedulers (only single_branch, any_branch, nightly)",
    );
    assert_problem(
        &sched("type = \"periodic\"\nperiod = 5\ntree_stable_timer = 3\n"),
        "schedulers #2 (name = \"t\").tree_stable_timer: not a key of periodic schedulers (only single_branch, any_branch)",
    );
    assert_problem(
        &sched("type = \"any_branch\"\nproject = 3\n"),
        "schedulers #2 (name = \"t\").project: expected a string or a list of strings",
    );
    assert_problem(
        &sched("type = \"any_branch\"\nfiles_regex = \"(\"\n"),
        "schedulers #2 (name = \"t\").files_regex: invalid regex",
    );
    assert!(problems(&sched(
        "type = \"nightly\"\nbranch = \"main\"\nhour = [1, 13]\nminute = 30\nday_of_week = \"sat\"\nonly_if_changed = true\nproject = [\"a\", \"b\"]\n"
    ))
    .is_empty());
    assert!(problems(&sched("type = \"periodic\"\nperiod = 3600\n")).is_empty());
    assert_problem(
        &sched("type = \"nightly\"\ncategory = \"push\"\n"),
        "schedulers #2 (name = \"t\").only_if_changed: change filters on a nightly scheduler need only_if_changed = true",
    );
    assert_problem(
        &sched("type = \"single_branch\"\n"),
        "schedulers #2 (name = \"t\").branch: required for a single_branch scheduler",
    );
    assert_problem(
        &sched("type = \"any_branch\"\nbranch_regex = \"(release\"\n"),
        "schedulers #2 (name = \"t\").branch_regex: invalid regex \"(release\": found open group without closing ')'",
    );
    assert_problem(
        &sched("type = \"any_branch\"\ntag_regex = \"v[\"\n"),
        "schedulers #2 (name = \"t\").tag_regex: invalid regex",
    );
    assert_problem(
        &sched("type = \"single_branch\"\nbranch = \"main\"\ntag_regex = \"v.*\"\n"),
        "schedulers #2 (name = \"t\").tag_regex: not a key of single_branch schedulers (only any_branch)",
    );
    assert!(problems(&sched(
        "type = \"any_branch\"\nbranch_regex = \"^release/.*$\"\ntag_regex = \"^v[0-9]+\"\n"
    ))
    .is_empty());
}

#[test]
fn step_checks() {
    let step = |body: &str| with(&format!("[[builders.steps]]\n{body}"));
    assert_problem(
        &step("type = \"svn\"\n"),
        "builders #1 (name = \"b\").steps #2.type: \"svn\" is not one of \"git\", \"shell\", \"set_property\"",
    );
    assert_problem(
        &step("type = \"git\"\n"),
        "builders #1 (name = \"b\").steps #2.repourl: required for a git step",
    );
    assert_problem(
        &step("type = \"git\"\nrepourl = \"u\"\nmode = \"fresh\"\n"),
        "builders #1 (name = \"b\").steps #2.mode: \"fresh\" is not one of \"incremental\", \"full\"",
    );
    assert_problem(
        &step("type = \"shell\"\n"),
        "builders #1 (name = \"b\").steps #2.command: required for a shell step",
    );
    assert_problem(
        &step("type = \"shell\"\ncommand = []\n"),
        "builders #1 (name = \"b\").steps #2.command: is an empty list",
    );
    assert_problem(
        &step("type = \"shell\"\ncommand = \"  \"\n"),
        "builders #1 (name = \"b\").steps #2.command: is empty",
    );
    assert_problem(
        &step("type = \"shell\"\ncommand = \"x\"\nrepourl = \"u\"\n"),
        "builders #1 (name = \"b\").steps #2.repourl: not a key of shell steps",
    );
    assert_problem(
        &step("type = \"shell\"\ncommand = \"x\"\nworkdir = \"../other\"\n"),
        "builders #1 (name = \"b\").steps #2.workdir: must be a path inside the build directory",
    );
    assert_problem(
        &step("type = \"shell\"\ncommand = \"x\"\ntimeout = 0\n"),
        "builders #1 (name = \"b\").steps #2.timeout: must be at least 1 second",
    );
}

#[test]
fn www_and_protocol_checks() {
    // 0: any free port, reported by the master once bound.
    assert!(problems(&BASE.replace("port = 8010", "port = 0")).is_empty());
    assert!(problems(&BASE.replace("port = 9989", "port = 0")).is_empty());
    assert!(problems(
        &BASE
            .replace("port = 8010", "port = 0")
            .replace("port = 9989", "port = 0")
    )
    .is_empty());
    assert!(problems(&BASE.replace("port = 8010", "unix_socket = \"www.sock\"")).is_empty());
    assert_problem(
        &BASE.replace("port = 8010", "port = 8010\nunix_socket = \"www.sock\""),
        "www.port: set either www.port or www.unix_socket, not both",
    );
    assert_problem(
        &BASE.replace("port = 8010", "port = 8010\nbind = \"localhost\""),
        "master.cfg: www.bind: \"localhost\" is not an IP address",
    );
    assert_problem(
        &BASE.replace("port = 8010", "port = 8010\nanonymous = \"write\""),
        "www.anonymous: \"write\" is not one of \"read\", \"none\"",
    );
    assert_problem(
        &BASE.replace("[protocols.worker]\nport = 9989\n", ""),
        "master.cfg: protocols.worker: missing",
    );
    assert_problem(
        &BASE.replace("port = 9989", "port = 8010"),
        "protocols.worker.port: 8010 is also www.port on the same address",
    );
    assert_problem(
        &BASE.replace("port = 9989", "port = 8010\nbind = \"0.0.0.0\""),
        "protocols.worker.port: 8010 is also www.port",
    );
    assert!(problems(&BASE.replace("port = 9989", "port = 8010\nbind = \"127.0.0.2\"")).is_empty());
    assert_problem(
        &with("[www.change_hook_dialects.gitea]\nsecret = \"\"\n"),
        "www.change_hook_dialects.gitea.secret: is empty",
    );
}

/// `skips` (issue 19 point 4): Buildbot's two patterns when absent, the
/// list as written otherwise, each regex checked with its position; and
/// each dialect's default repository URL is its Buildbot hook's.
#[test]
fn forge_dialect_skips_and_repository_url() {
    let hook = |key: &str, extra: &str| {
        with(&format!(
            "[www.change_hook_dialects.{key}]\nsecret = \"0123456789abcdef0123\"\n{extra}"
        ))
    };
    let cfg = parse(&hook("gitea", ""), "master.cfg").unwrap_or_else(|e| panic!("{e}"));
    let g = cfg.www.change_hook_dialects.gitea.expect("gitea");
    let sources: Vec<&str> = g.skips.iter().map(|p| p.source.as_str()).collect();
    assert_eq!(sources, DEFAULT_SKIPS);
    assert!(g.skips[0].is_match("fix [skip ci]") && g.skips[1].is_match("[ci  skip]"));
    assert_eq!(g.repository_url, RepositoryUrl::Ssh);
    let cfg =
        parse(&hook("github", "skips = []\n"), "master.cfg").unwrap_or_else(|e| panic!("{e}"));
    let g = cfg.www.change_hook_dialects.github.expect("github");
    assert!(g.skips.is_empty());
    assert_eq!(g.repository_url, RepositoryUrl::Html);
    let cfg = parse(
        &hook("github", "skips = ['NOCI']\nrepository_url = \"clone\"\n"),
        "master.cfg",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let g = cfg.www.change_hook_dialects.github.expect("github");
    assert_eq!(g.skips.len(), 1);
    assert!(g.skips[0].is_match("x NOCI y"));
    assert_eq!(g.repository_url, RepositoryUrl::Clone);
    assert_problem(
        &hook("gitea", "skips = ['ok', '[unclosed']\n"),
        "www.change_hook_dialects.gitea.skips #2: invalid regex \"[unclosed\"",
    );
    assert_problem(
        &hook("gitea", "repository_url = \"web\"\n"),
        "\"web\" is not one of \"ssh\", \"clone\", \"html\"",
    );
}

#[test]
fn every_change_hook_needs_a_secret_or_the_named_opt_out() {
    for key in ["gitea", "github"] {
        assert_problem(
            &with(&format!("[www.change_hook_dialects.{key}]\n")),
            &format!("www.change_hook_dialects.{key}.secret: required"),
        );
        // No opt-out for the forges: they can always sign.
        assert_problem(
            &with(&format!(
                "[www.change_hook_dialects.{key}]\nallow_unsigned = true\n"
            )),
            &format!("www.change_hook_dialects.{key}.allow_unsigned: unknown key"),
        );
    }
    assert_problem(
        &with("[www.change_hook_dialects.base]\n"),
        "www.change_hook_dialects.base.secret: required (or set allow_unsigned = true to accept unsigned posts from anyone who can reach the port)",
    );
    assert_problem(
        &with("[www.change_hook_dialects.base]\nallow_unsigned = false\n"),
        "www.change_hook_dialects.base.secret: required",
    );
    assert_problem(
        &with("[www.change_hook_dialects.base]\nsecret = \"\"\nallow_unsigned = true\n"),
        "www.change_hook_dialects.base.secret: is empty",
    );
    assert_problem(
        &with("[www.change_hook_dialects.base]\nsecret = \"s\"\nallow_unsigned = true\n"),
        "www.change_hook_dialects.base.allow_unsigned: set together with a secret",
    );
    let signed = parse(
        &with("[www.change_hook_dialects.base]\nsecret = \"s\"\n"),
        "master.cfg",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(signed.warnings().is_empty());
    let open = parse(
        &with("[www.change_hook_dialects.base]\nallow_unsigned = true\n"),
        "master.cfg",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let w = open.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with("www.change_hook_dialects.base.allow_unsigned = true: anyone"),
        "{w:?}"
    );
    // The sample ships no unsigned hook.
    let sample = parse(SAMPLE, "master.cfg.sample").unwrap_or_else(|e| panic!("{e}"));
    assert!(sample.www.change_hook_dialects.base.is_none());
    assert!(warnings_besides_repourl(&sample).is_empty());
}

#[test]
fn janitor_is_on_by_default_and_checked() {
    let cfg = parse(SAMPLE, "master.cfg.sample").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.janitor, JanitorCfg::default());
    // Written out, not only defaulted, so users see that it exists.
    assert!(SAMPLE.contains("\n[janitor]\n"));
    assert!(SAMPLE.contains(&format!(
        "\nbuild_horizon_days = {DEFAULT_BUILD_HORIZON_DAYS}\n"
    )));
    assert!(SAMPLE.contains(&format!(
        "\nlog_horizon_days = {DEFAULT_LOG_HORIZON_DAYS}\n"
    )));
    // Absent section: on, with the defaults.
    let cfg = parse(BASE, "master.cfg").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.janitor.build_horizon_days, DEFAULT_BUILD_HORIZON_DAYS);
    assert_eq!(cfg.janitor.log_horizon_days, DEFAULT_LOG_HORIZON_DAYS);
    assert_eq!(cfg.janitor.interval_hours, 24);
    let cfg = parse(
        &with("[janitor]\nbuild_horizon_days = 0\nlog_horizon_days = 7\n"),
        "master.cfg",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (cfg.janitor.build_horizon_days, cfg.janitor.log_horizon_days),
        (0, 7)
    );
    assert_problem(
        &with("[janitor]\nlog_horizon = 7\n"),
        "master.cfg: janitor.log_horizon: unknown key (known here: build_horizon_days, log_horizon_days, artifact_horizon_days, interval_hours)",
    );
    assert_problem(
        &with("[janitor]\nbuild_horizon_days = \"90\"\n"),
        "master.cfg: janitor.build_horizon_days: expected a whole number from 0 to 4294967295, found the string \"90\"",
    );
    assert_problem(
        &with("[janitor]\nlog_horizon_days = -1\n"),
        "master.cfg: janitor.log_horizon_days: expected a whole number from 0 to 4294967295, found -1",
    );
    assert_problem(
        &with("[janitor]\ninterval_hours = 0\n"),
        "master.cfg: janitor.interval_hours: must be at least 1",
    );
    assert_problem(
        &with("[janitor]\nbuild_horizon_days = 100000\n"),
        "janitor.build_horizon_days: 100000 days is more than a century",
    );
}

#[test]
fn logging_section() {
    let cfg = parse(BASE, "master.cfg").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        cfg.logging.log_options(),
        crate::daemon::LogOptions::default()
    );
    let cfg = parse(
        &with("[logging]\nlevel = \"info,minibot::web::www=debug\"\nrotate_length = 1000000\nmax_rotated_files = 2\n"),
        "master.cfg",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let o = cfg.logging.log_options();
    assert_eq!(
        (o.level.as_str(), o.rotate_length, o.max_rotated_files),
        ("info,minibot::web::www=debug", 1_000_000, 2)
    );
    assert!(problems(&with("[logging]\nlevel = \"DEBUG\"\n")).is_empty());
    assert_problem(
        &with("[logging]\nlevel = \"verbose\"\n"),
        "master.cfg: logging.level: \"verbose\" is not a level (off, error, warn, info, debug, trace) or MODULE=LEVEL",
    );
    assert_problem(
        &with("[logging]\nlevel = \"minibot=loud\"\n"),
        "logging.level: \"minibot=loud\" is not a level",
    );
    assert_problem(
        &with("[logging]\nlevel = \"minibot\"\n"),
        "logging.level: \"minibot\" is not a level",
    );
    assert_problem(
        &with("[logging]\nrotate_length = 10\n"),
        "master.cfg: logging.rotate_length: must be at least 65536 bytes",
    );
    assert_problem(
        &with("[logging]\nlevle = \"info\"\n"),
        "master.cfg: logging.levle: unknown key (did you mean `level`?)",
    );
}

#[test]
fn name_checks() {
    assert_problem(
        &BASE.replace("name = \"w1\"", "name = \"\""),
        "master.cfg: workers #1.name: the worker name is empty",
    );
    for bad in ["a/b", ".hidden", "..", "with space"] {
        let text = BASE
            .replace("name = \"b\"", &format!("name = {bad:?}"))
            .replace("builders = [\"b\"]", &format!("builders = [{bad:?}]"));
        assert_problem(
            &text,
            &format!(
                "master.cfg: builders #1 (name = {bad:?}).name: {bad:?}: use only letters, digits"
            ),
        );
    }
    assert_problem(
        &BASE.replace(
            "workers = [\"w1\"]",
            "workers = [\"w1\"]\nworkerbuilddir = \"../x\"",
        ),
        "builders #1 (name = \"b\").workerbuilddir: \"../x\": use only",
    );
    assert_problem(
        &BASE.replace("password = \"pw\"", "password = \"pw\"\nmax_builds = 0"),
        "master.cfg: workers #1 (name = \"w1\").max_builds: must be at least 1",
    );
}

#[test]
fn several_problems_are_all_reported() {
    let text = BASE
        .replace("port = 8010", "port = 8010\nanonymous = \"write\"")
        .replace("builders = [\"b\"]", "builders = [\"tests\"]")
        .replace("workers = [\"w1\"]", "workers = [\"w9\"]")
        .replace("command = \"make test\"", "comand = \"make test\"");
    let err = parse(&text, "master.cfg").expect_err("bad config");
    let err = ConfigError {
        problems: err.problems.iter().map(|p| without_line(p)).collect(),
    };
    let expected = [
        "master.cfg: builders #1 (name = \"b\").steps #1.comand: unknown key (did you mean `command`?)",
        "master.cfg: www.anonymous: \"write\" is not one of \"read\", \"none\"",
        "master.cfg: schedulers #1 (name = \"s\").builders #1: no builder named \"tests\"",
        "master.cfg: builders #1 (name = \"b\").workers #1: no worker named \"w9\"",
        "master.cfg: builders #1 (name = \"b\").steps #1.command: required for a shell step",
    ];
    assert_eq!(err.problems, expected, "{err}");
    assert_eq!(err.to_string(), expected.join("\n"));
}

#[test]
fn display_names() {
    let cfg = parse(
        &with(
            "[[builders.steps]]\ntype = \"shell\"\ncommand = [\"./run-tests.sh\", \"-v\"]\n\
             [[builders.steps]]\ntype = \"shell\"\nname = \"make\"\ncommand = \"true\"\n\
             [[builders.steps]]\ntype = \"git\"\nrepourl = \"u\"\nworkdir = \"src\"\n",
        ),
        "master.cfg",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let b = &cfg.builders[0];
    assert_eq!(b.steps[0].name, "make");
    assert_eq!(b.steps[1].name, "run-tests.sh");
    assert_eq!(b.steps[3].name, "git");
    assert_eq!(
        b.step_names(),
        vec!["make", "run-tests.sh", "make_1", "git"]
    );
    let bare = StepKind::Shell {
        command: Command::Argv(vec![]),
        env: Default::default(),
        workdir: String::new(),
    };
    assert_eq!(lower::display_name(None, &bare, 7), "step7");
}

#[test]
fn force_parameters_are_typed() {
    let text = with(
        "[[schedulers.properties]]\nname = \"level\"\ntype = \"choice\"\nchoices = [\"quick\", \"full\"]\ndefault = \"quick\"\n\
         [[schedulers.properties]]\nname = \"runs\"\ntype = \"int\"\ndefault = 1\n\
         [[schedulers.properties]]\nname = \"deploy\"\ntype = \"bool\"\n\
         [[schedulers.properties]]\nname = \"ticket\"\nregex = \"[A-Z]+-[0-9]+\"\nrequired = true\n\
         [[schedulers.properties]]\nname = \"target\"\ntype = \"fixed\"\ndefault = \"staging\"\n",
    )
    .replace("type = \"force\"\n", "type = \"force\"\nbranch = \"main\"\nreason = \"by hand\"\n");
    let cfg = parse(&text, "master.cfg").unwrap_or_else(|e| panic!("{e}"));
    let s = cfg.force_scheduler("s").unwrap();
    let names: Vec<String> = s
        .force_parameters()
        .iter()
        .map(|p| p.name.clone())
        .collect();
    assert_eq!(
        names,
        ["branch", "revision", "reason", "level", "runs", "deploy", "ticket", "target"]
    );
    assert_eq!(s.force_parameters()[0].default, serde_json::json!("main"));
    let submitted = serde_json::json!({
        "revision": "abc", "level": "full", "runs": "3", "deploy": "on",
        "ticket": "MB-12", "target": "production"
    });
    let f = s.force_values(submitted.as_object().unwrap()).unwrap();
    assert_eq!(f.branch.as_deref(), Some("main"));
    assert_eq!(f.revision.as_deref(), Some("abc"));
    assert_eq!(f.reason, "by hand");
    assert_eq!(
        serde_json::to_value(&f.properties).unwrap(),
        serde_json::json!({"level": "full", "runs": 3, "deploy": true, "ticket": "MB-12", "target": "staging"})
    );
    let bad = serde_json::json!({"level": "slow", "runs": "x", "ticket": "nope"});
    let errs = s.force_values(bad.as_object().unwrap()).unwrap_err();
    assert_eq!(
        errs,
        [
            "level: \"slow\" is not one of [\"quick\", \"full\"]",
            "runs: \"x\" is not a whole number",
            "ticket: \"nope\" does not match \"[A-Z]+-[0-9]+\"",
        ]
    );
    let missing = serde_json::json!({});
    assert_eq!(
        s.force_values(missing.as_object().unwrap()).unwrap_err(),
        ["ticket: is required"]
    );

    let prop = |body: &str| with(&format!("[[schedulers.properties]]\n{body}"));
    assert_problem(
        &prop("name = \"x\"\ntype = \"date\"\n"),
        "schedulers #1 (name = \"s\").properties #1 (name = \"x\").type: \"date\" is not one of",
    );
    assert_problem(
        &prop("name = \"x\"\ntype = \"choice\"\n"),
        "schedulers #1 (name = \"s\").properties #1 (name = \"x\").choices: required",
    );
    assert_problem(
        &prop("name = \"x\"\ntype = \"fixed\"\n"),
        "schedulers #1 (name = \"s\").properties #1 (name = \"x\").default: required",
    );
    assert_problem(
        &prop("name = \"x\"\ntype = \"int\"\ndefault = \"one\"\n"),
        "default: \"one\" does not fit a int parameter",
    );
    assert_problem(
        &prop("name = \"branch\"\n"),
        "\"branch\" is a field of every force form",
    );
    assert_problem(
        &prop("name = \"a b\"\n"),
        "schedulers #1 (name = \"s\").properties #1 (name = \"a b\").name: \"a b\": use only",
    );
    assert_problem(
        &prop("name = \"x\"\nlable = \"X\"\n"),
        "schedulers #1 (name = \"s\").properties #1 (name = \"x\").lable: unknown key (did you mean `label`?)",
    );
}

#[test]
fn reporters_and_change_sources() {
    let good = with(
        "[[reporters]]\ntype = \"gitea_status\"\nbase_url = \"https://git.example.org\"\ntoken = \"t\"\n\
         [[reporters]]\ntype = \"mail\"\nsmtp_host = \"localhost\"\nfrom = \"CI <ci@example.org>\"\nto = [\"a@example.org\"]\nmode = [\"problem\", \"change\"]\n\
         [[change_source]]\ntype = \"git_poller\"\nrepourl = \"https://git.example.org/a/b.git\"\nbranches = \"all\"\n",
    );
    let cfg = parse(&good, "master.cfg").unwrap_or_else(|e| panic!("{e}"));
    let ReporterKind::Mail(mail) = &cfg.reporters[1].kind else {
        panic!("not mail")
    };
    assert_eq!(mail.modes, [MailMode::Problem, MailMode::Change]);
    assert!(cfg.reporters[0].verify_tls);
    let ChangeSource::GitPoller(poller) = &cfg.change_source[0] else {
        panic!("not a git_poller")
    };
    assert_eq!(poller.branches, None);
    assert_eq!(poller.poll_interval.as_secs(), 600);
    assert_eq!(poller.name, "https://git.example.org/a/b.git");
    assert!(cfg.builders[0].collapse_requests);

    let rep = |body: &str| with(&format!("[[reporters]]\n{body}"));
    assert_problem(
        &rep("type = \"irc\"\n"),
        "reporters #1.type: \"irc\" is not one of",
    );
    assert_problem(
        &rep("type = \"gitea_status\"\ntoken = \"t\"\n"),
        "reporters #1.base_url: required",
    );
    assert_problem(
        &rep("type = \"gitea_status\"\nbase_url = \"https://g\"\n"),
        "reporters #1.token: required: set token, or token_file",
    );
    assert_problem(
        &rep("type = \"gitea_status\"\nbase_url = \"https://g\"\ntoken = \"a\"\ntoken_file = \"f\"\n"),
        "reporters #1.token: set either token or token_file, not both",
    );
    assert_problem(
        &rep(
            "type = \"gitea_status\"\nbase_url = \"https://g\"\ntoken = \"a\"\nsmtp_host = \"x\"\n",
        ),
        "reporters #1.smtp_host: not a key of gitea_status reporters",
    );
    assert_problem(
        &rep("type = \"gitea_status\"\nbase_url = \"https://g\"\ntoken = \"a\"\nbuilders = [\"zz\"]\n"),
        "reporters #1.builders #1: no builder named \"zz\"",
    );
    assert_problem(
        &rep("type = \"mail\"\nsmtp_host = \"h\"\nfrom = \"nobody\"\nto = [\"a@b.c\"]\n"),
        "reporters #1.from: \"nobody\" is not an e-mail address",
    );
    assert_problem(
        &rep("type = \"mail\"\nsmtp_host = \"h\"\nfrom = \"a@b.c\"\n"),
        "reporters #1.to: required",
    );
    assert_problem(&rep("type = \"mail\"\nsmtp_host = \"h\"\nfrom = \"a@b.c\"\nto = [\"a@b.c\"]\nmode = \"sometimes\"\n"), "reporters #1.mode: \"sometimes\" is not one of");
    assert_problem(&rep("type = \"mail\"\nsmtp_host = \"h\"\nfrom = \"a@b.c\"\nto = [\"a@b.c\"]\nsmtp_user = \"u\"\n"), "reporters #1.smtp_password: required");
    assert_problem(
        &rep("type = \"mail\"\nsmtp_hots = \"h\"\n"),
        "reporters #1.smtp_hots: unknown key (did you mean `smtp_host`?)",
    );

    let cs = |body: &str| with(&format!("[[change_source]]\n{body}"));
    assert_problem(
        &cs("type = \"svn_poller\"\nrepourl = \"u\"\n"),
        "change_source #1.type: \"svn_poller\" is not one of \"git_poller\", \"gitea_pr_poller\"",
    );
    assert_problem(
        &cs("type = \"git_poller\"\nrepourl = \"u\"\npoll_interval = 0\n"),
        "change_source #1.poll_interval: must be at least 1 second",
    );
    assert_problem(
        &cs("type = \"git_poller\"\nrepourl = \"u\"\nbranches = [\"a b\"]\n"),
        "change_source #1.branches: \"a b\" is not a branch name",
    );
    assert_problem(
        &cs("type = \"git_poller\"\n"),
        "change_source #1.repourl: required key is missing",
    );

    // gitea_pr_poller: the repository's open pull requests through the API.
    let pr = |rest: &str| {
        cs(&format!(
            "type = \"gitea_pr_poller\"\nbase_url = \"https://git.example.org/\"\n\
             repository = \"isabell/hello-world\"\ntoken_file = \"gitea-token\"\n{rest}"
        ))
    };
    let cfg = parse(&pr(""), "master.cfg").unwrap_or_else(|e| panic!("{e}"));
    let ChangeSource::GiteaPrPoller(g) = &cfg.change_source[0] else {
        panic!("not a gitea_pr_poller")
    };
    assert_eq!(
        (g.owner.as_str(), g.repo.as_str()),
        ("isabell", "hello-world")
    );
    assert_eq!(
        g.name,
        "https://git.example.org/api/v1/repos/isabell/hello-world/pulls"
    );
    assert_eq!(g.token, Secret::File("gitea-token".into()));
    assert_eq!(g.max_pull_requests, 200);
    assert!(g.verify_tls);
    assert_problem(
        &cs("type = \"gitea_pr_poller\"\nbase_url = \"https://g\"\nrepository = \"o/r\"\n"),
        "change_source #1.token_file: required",
    );
    for bad in ["o", "o/r/x", "../r", "o/..", "/r", "o/"] {
        assert_problem(
            &pr(&format!("repository = \"{bad}\"\n"))
                .replace("repository = \"isabell/hello-world\"\n", ""),
            &format!("change_source #1.repository: \"{bad}\" is not \"owner/repository\""),
        );
    }
    assert_problem(
        &pr("").replace("https://git.example.org/", "ftp://g"),
        "change_source #1.base_url: must be an http:// or https:// URL",
    );
    assert_problem(
        &pr("max_pull_requests = 0\n"),
        "change_source #1.max_pull_requests: 0 is not between 1 and 5000",
    );
    assert_problem(
        &pr("branches = \"all\"\n"),
        "change_source #1.branches: not a key of gitea_pr_poller change sources (only git_poller)",
    );
    assert_problem(
        &cs("type = \"git_poller\"\nrepourl = \"u\"\ntoken_file = \"t\"\n"),
        "change_source #1.token_file: not a key of git_poller change sources (only gitea_pr_poller)",
    );
}

#[test]
fn secret_files_must_be_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg_path = dir.path().join("master.cfg");
    std::fs::write(
        &cfg_path,
        with("[[reporters]]\ntype = \"gitea_status\"\nbase_url = \"https://g\"\ntoken_file = \"tok\"\n"),
    )
    .unwrap();
    private(&cfg_path);
    let err = load(&cfg_path).expect_err("missing token file");
    assert!(
        err.to_string()
            .contains("reporters #1.token_file: cannot read"),
        "{err}"
    );
    let tok = dir.path().join("tok");
    std::fs::write(&tok, "sekrit\n").unwrap();
    std::fs::set_permissions(&tok, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = load(&cfg_path).expect_err("readable by others");
    assert!(
        err.to_string()
            .contains("is readable by others (mode 644); run chmod 600"),
        "{err}"
    );
    std::fs::set_permissions(&tok, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cfg = load(&cfg_path).unwrap_or_else(|e| panic!("{e}"));
    let ReporterKind::GiteaStatus(g) = &cfg.reporters[0].kind else {
        panic!("not gitea_status")
    };
    assert_eq!(g.token.read(dir.path()).unwrap(), "sekrit");

    // The same for a gitea_pr_poller's token_file.
    std::fs::write(
        &cfg_path,
        with("[[change_source]]\ntype = \"gitea_pr_poller\"\nbase_url = \"https://g\"\nrepository = \"o/r\"\ntoken_file = \"tok\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(&tok, std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = load(&cfg_path).expect_err("readable by others");
    assert!(
        err.to_string().contains("change_source #1.token_file: ")
            && err
                .to_string()
                .contains("is readable by others (mode 640); run chmod 600"),
        "{err}"
    );
    std::fs::set_permissions(&tok, std::fs::Permissions::from_mode(0o600)).unwrap();
    load(&cfg_path).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn sample_examples_parse_when_uncommented() {
    // Every commented-out example in the sample is valid config once
    // its leading "# " is removed (keeping the "[[x]]" headers whole).
    let mut text = String::new();
    let mut in_example = false;
    for line in SAMPLE.lines() {
        let ex = line.strip_prefix("# ");
        match ex {
            Some(l) if l.starts_with("[[") || l.starts_with('[') && l.ends_with(']') => {
                in_example = true;
                text.push_str(l);
            }
            Some(l) if in_example && l.contains(" = ") && !l.starts_with(' ') => text.push_str(l),
            _ => {
                if !line.starts_with('#') {
                    in_example = false;
                }
                text.push_str(line);
            }
        }
        text.push('\n');
    }
    let text = text.replace("unix_socket = \"www.sock\"\n", "");
    for kind in [
        "nightly",
        "periodic",
        "mail",
        "gitea_status",
        "git_poller",
        "gitea_pr_poller",
    ] {
        assert!(
            text.contains(&format!("\ntype = \"{kind}\"")),
            "{kind} not uncommented"
        );
    }
    let found = problems(&text);
    let expected_io: Vec<&String> = found
        .iter()
        .filter(|p| !p.contains("_file: cannot read"))
        .collect();
    assert!(expected_io.is_empty(), "{found:#?}\n{text}");
}

/// Key paths count list items from 1, as a person counts the `[[builders]]`
/// tables of the file, and name the item when it has a `name`; the line is
/// the line of the key (issue 18: positions were 0-based, `builders[1]`
/// for the second builder).
#[test]
fn positions_count_from_one_and_name_the_item() {
    let text = with(
        "[[builders]]\nname = \"linux\"\nworkers = [\"w1\", \"w7\"]\n\
         [[builders.steps]]\ntype = \"shell\"\ncommand = \"true\"\n\
         [[builders.steps]]\nname = \"test\"\ntype = \"shell\"\ncomand = \"make check\"\n",
    );
    let err = parse(&text, "master.cfg").expect_err("bad config");
    let line_of = |needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let expected = [
        format!(
            "master.cfg:{}: builders #2 (name = \"linux\").steps #2 (name = \"test\").comand: unknown key (did you mean `command`?)",
            line_of("comand")
        ),
        format!(
            "master.cfg:{}: builders #2 (name = \"linux\").workers #2: no worker named \"w7\"",
            line_of("\"w7\"")
        ),
    ];
    for e in &expected {
        assert!(err.problems.contains(e), "{e:?} not in {:#?}", err.problems);
    }
    // Warnings use the same words; a path without a list is as written.
    let cfg = test_config("[[workers]]\nname = \"idle\"\npassword = \"pw-of-some-length\"\n");
    assert!(
        cfg.warnings()
            .iter()
            .any(|w| w.starts_with("workers #2 (name = \"idle\"): no builder uses worker")),
        "{:#?}",
        cfg.warnings()
    );
    assert_eq!(
        super::problems::locate(&text, "www.port"),
        (Some(line_of("port = 8010")), "www.port".to_string())
    );
}

/// Issue 19 point 2: pull requests build the merge result unless
/// `pull_request_checkout = "head"`; anything else is named.
#[test]
fn pull_request_checkout_defaults_to_merge() {
    let checkout = |extra: &str| {
        let text = with(&format!(
            "[www.change_hook_dialects.gitea]\nsecret = \"a-long-enough-secret\"\n{extra}"
        ));
        let cfg = parse(&text, "master.cfg").unwrap_or_else(|e| panic!("{e}"));
        let gitea = cfg.www.change_hook_dialects.gitea.expect("gitea");
        gitea.pull_request_checkout
    };
    assert_eq!(checkout(""), PullRequestCheckout::Merge);
    assert_eq!(
        checkout("pull_request_checkout = \"merge\"\n"),
        PullRequestCheckout::Merge
    );
    assert_eq!(
        checkout("pull_request_checkout = \"head\"\n"),
        PullRequestCheckout::Head
    );
    assert_problem(
        &with("[www.change_hook_dialects.github]\nsecret = \"a-long-enough-secret\"\npull_request_checkout = \"rebase\"\n"),
        "www.change_hook_dialects.github.pull_request_checkout: \"rebase\" is not one of \"merge\", \"head\"",
    );
}

/// `[www.auth] type = "gitea"` (issue 19 point 7): the keys it needs, the
/// `admins` grammar, names lower-cased, and the secret file checked as the
/// reporters' are.
#[test]
fn gitea_auth_section() {
    let auth = |extra: &str| {
        format!(
            "buildbot_url = \"https://ci.example.org/\"\n{BASE}[www.auth]\ntype = \"gitea\"\n\
             base_url = \"https://git.example.org/\"\nclient_id = \"abc\"\n\
             client_secret_file = \"gitea-secret\"\n{extra}"
        )
    };
    let cfg = parse(
        &auth("admins = [\"org:MyOrg\", \"team:myorg/CI\", \"user:isabell\"]\n"),
        "master.cfg",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let a = cfg.www.auth.expect("[www.auth]");
    assert_eq!(a.base_url, "https://git.example.org");
    assert_eq!(a.client_id, "abc");
    assert_eq!(a.client_secret, Secret::File("gitea-secret".into()));
    assert!(a.verify_tls);
    assert_eq!(
        a.admins,
        vec![
            Grant::Org("myorg".into()),
            Grant::Team {
                org: "myorg".into(),
                team: "ci".into()
            },
            Grant::User("isabell".into()),
        ]
    );
    assert!(parse(BASE, "master.cfg").unwrap().www.auth.is_none());
    for (bad, expected) in [
        (
            "admins = [\"isabell\"]\n",
            "www.auth.admins #1: \"isabell\" is not",
        ),
        (
            "admins = [\"user:<b>\"]\n",
            "www.auth.admins #1: \"user:<b>\" is not",
        ),
        ("admins = [\"team:myorg\"]\n", "www.auth.admins #1:"),
        ("admins = [\"org:a b\"]\n", "www.auth.admins #1:"),
    ] {
        assert_problem(&auth(bad), expected);
    }
    for (text, expected) in [
        (
            auth("").replace("type = \"gitea\"", "type = \"github\""),
            "www.auth.type: \"github\" is not \"gitea\"",
        ),
        (
            auth("").replace("buildbot_url = \"https://ci.example.org/\"\n", ""),
            "buildbot_url: required with [www.auth]",
        ),
        (
            auth("").replace("https://git.example.org/", "git.example.org"),
            "www.auth.base_url: \"git.example.org\" is not an http(s) URL",
        ),
        (
            auth("").replace("client_secret_file = \"gitea-secret\"\n", ""),
            "www.auth.client_secret: required",
        ),
        (
            auth("client_secret = \"x\"\n"),
            "www.auth.client_secret: set either client_secret or client_secret_file, not both",
        ),
    ] {
        assert_problem(&text, expected);
    }
    assert_problem(&auth("scopes = \"x\"\n"), "www.auth.scopes");
    // The secret file: present and 0600, as a reporter's token file.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("master.cfg");
    std::fs::write(&path, auth("")).expect("write");
    private(&path);
    let err = load(&path).expect_err("no secret file").to_string();
    assert!(
        err.contains("www.auth.client_secret_file: cannot read"),
        "{err}"
    );
    let secret = dir.path().join("gitea-secret");
    std::fs::write(&secret, "s3cret\n").expect("write");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let err = load(&path)
        .expect_err("secret readable by others")
        .to_string();
    assert!(err.contains("is readable by others"), "{err}");
    private(&secret);
    assert!(load(&path).is_ok());
    // An inline secret makes master.cfg a file with secrets.
    std::fs::write(
        &path,
        auth("").replace(
            "client_secret_file = \"gitea-secret\"",
            "client_secret = \"s\"",
        ),
    )
    .expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let err = load(&path).expect_err("inline secret, 0644").to_string();
    assert!(err.contains("www.auth.client_secret"), "{err}");
}
