//! `minibot`: the master daemon and its admin commands (argh).
//!
//! Owns: command-line parsing and exit codes only (1 = user error, 2 =
//! usage), and the wording of what each command prints; the work is in
//! `minibot::master`, `minibot::daemon`, `minibot::master::auth`,
//! `minibot::db`, `minibot::demo` and `minibot::sendchange`. Every line goes
//! through `outln!`/`errln!`, which survive a closed pipe; every error line
//! starts with `minibot:`.

use anyhow::{bail, Context, Result};
use argh::FromArgs;
use minibot::master::{self, CONFIG_FILE, DB_FILE, LOG_FILE, PID_FILE};
use minibot::{config, daemon, db, demo, errln, gitea_sync, outln, sendchange};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(FromArgs)]
/// minibot: a small continuous-integration master in the style of Buildbot.
struct Cli {
    #[argh(subcommand)]
    cmd: Cmd,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Cmd {
    CreateMaster(CreateMaster),
    CheckConfig(CheckConfig),
    Start(Start),
    Stop(Stop),
    Restart(Restart),
    Reconfig(Reconfig),
    UpgradeMaster(UpgradeMaster),
    User(User),
    SendChange(Box<SendChange>),
    Demo(Demo),
    Gitea(Gitea),
}

#[derive(FromArgs)]
#[argh(subcommand, name = "create-master")]
/// create a master directory with master.cfg.sample and state.sqlite
struct CreateMaster {
    /// use DIR even if it is not empty
    #[argh(switch)]
    force: bool,
    #[argh(positional)]
    dir: PathBuf,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "checkconfig")]
/// check DIR/master.cfg (or the config file named) and report every problem found
struct CheckConfig {
    /// the master directory, or its master.cfg
    #[argh(positional)]
    dir: PathBuf,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "start")]
/// start the master in DIR
struct Start {
    /// stay in the foreground, logging to stderr and DIR/master.log (for supervisord)
    #[argh(switch)]
    nodaemon: bool,
    #[argh(positional)]
    dir: PathBuf,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "stop")]
/// stop the master running in DIR
struct Stop {
    /// wait for running builds to finish first
    #[argh(switch)]
    clean: bool,
    #[argh(positional)]
    dir: PathBuf,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "restart")]
/// stop the master running in DIR (if any), then start it
struct Restart {
    /// stay in the foreground after the restart
    #[argh(switch)]
    nodaemon: bool,
    #[argh(positional)]
    dir: PathBuf,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "reconfig")]
/// make the running master re-read DIR/master.cfg (SIGHUP)
struct Reconfig {
    #[argh(positional)]
    dir: PathBuf,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "upgrade-master")]
/// migrate DIR/state.sqlite to this version's schema
struct UpgradeMaster {
    #[argh(positional)]
    dir: PathBuf,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "user")]
/// manage the users who may log in to the web UI (stored in DIR/state.sqlite)
struct User {
    #[argh(subcommand)]
    cmd: UserCmd,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum UserCmd {
    Add(UserAdd),
    Passwd(UserPasswd),
    Remove(UserRemove),
    List(UserList),
}

#[derive(FromArgs)]
#[argh(subcommand, name = "add")]
/// add a user; the password is read from the terminal (twice) or stdin
struct UserAdd {
    /// read the password from the first line of standard input
    #[argh(switch)]
    password_stdin: bool,
    #[argh(positional)]
    dir: PathBuf,
    #[argh(positional)]
    name: String,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "passwd")]
/// set a user's password and log out their sessions
struct UserPasswd {
    /// read the password from the first line of standard input
    #[argh(switch)]
    password_stdin: bool,
    #[argh(positional)]
    dir: PathBuf,
    #[argh(positional)]
    name: String,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "remove")]
/// remove a user and their sessions
struct UserRemove {
    #[argh(positional)]
    dir: PathBuf,
    #[argh(positional)]
    name: String,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "list")]
/// list the users
struct UserList {
    #[argh(positional)]
    dir: PathBuf,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "sendchange")]
/// send one change to a master's base change hook (from scripts and git hooks)
struct SendChange {
    /// the master's web address (e.g. http://localhost:12345/) or HOST:PORT
    #[argh(option, short = 'm')]
    master: String,
    /// file holding the secret of [www.change_hook_dialects.base] (first line)
    #[argh(option)]
    secret_file: Option<PathBuf>,
    /// the author, e.g. "Jane Doe <jane@example.org>"
    #[argh(option, short = 'W')]
    who: Option<String>,
    /// the repository's URL
    #[argh(option, short = 'R')]
    repository: Option<String>,
    /// the project
    #[argh(option, short = 'P')]
    project: Option<String>,
    /// the branch
    #[argh(option, short = 'b')]
    branch: Option<String>,
    /// the category (e.g. push)
    #[argh(option, short = 'C')]
    category: Option<String>,
    /// the revision (commit id)
    #[argh(option, short = 'r')]
    revision: Option<String>,
    /// a file holding the revision
    #[argh(option)]
    revision_file: Option<PathBuf>,
    /// a link to the revision on the web
    #[argh(option)]
    revlink: Option<String>,
    /// the codebase
    #[argh(option)]
    codebase: Option<String>,
    /// the change's comments (commit message)
    #[argh(option, short = 'c')]
    comments: Option<String>,
    /// a file holding the comments ('-' for standard input)
    #[argh(option, short = 'F')]
    logfile: Option<PathBuf>,
    /// a property of the change, NAME:VALUE (repeatable)
    #[argh(option, short = 'p')]
    property: Vec<String>,
    /// when the change was made, in Unix seconds (default: now)
    #[argh(option, short = 'w')]
    when: Option<i64>,
    /// the files the change touched
    #[argh(positional)]
    files: Vec<String>,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "demo")]
/// create and run a demo master, worker and repository, and show a green build
struct Demo {
    /// exit after the first build (0 if it succeeded)
    #[argh(switch)]
    once: bool,
    /// directory to create (default ./minibot-demo)
    #[argh(positional, default = "PathBuf::from(\"minibot-demo\")")]
    dir: PathBuf,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "gitea")]
/// set up Gitea for this master through Gitea's API
struct Gitea {
    #[argh(subcommand)]
    cmd: GiteaCmd,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum GiteaCmd {
    Sync(GiteaSync),
}

#[derive(FromArgs)]
#[argh(subcommand, name = "sync")]
/// create or update the webhook of each Gitea repository DIR/master.cfg builds
struct GiteaSync {
    /// only report what would change
    #[argh(switch)]
    dry_run: bool,
    /// also send the secret to hooks that otherwise match (after changing it)
    #[argh(switch)]
    update_secret: bool,
    #[argh(positional)]
    dir: PathBuf,
}

fn main() {
    let cli: Cli = daemon::parse_args("minibot");
    let res = match cli.cmd {
        Cmd::CreateMaster(c) => create_master(&c.dir, c.force),
        Cmd::CheckConfig(c) => check_config(&c.dir),
        Cmd::Start(c) => start(&c.dir, c.nodaemon),
        Cmd::Stop(c) => stop(&c.dir, c.clean),
        Cmd::Restart(c) => restart(&c.dir, c.nodaemon),
        Cmd::Reconfig(c) => reconfig(&c.dir),
        Cmd::UpgradeMaster(c) => upgrade(&c.dir),
        Cmd::User(c) => user(c.cmd),
        Cmd::SendChange(c) => send_change(*c),
        Cmd::Demo(c) => demo::run(&c.dir, c.once),
        Cmd::Gitea(Gitea {
            cmd: GiteaCmd::Sync(c),
        }) => gitea_sync(c),
    };
    if let Err(e) = res {
        // A config's problems are one per line: each gets the prefix, so
        // a reader (or grep) sees every one as minibot's.
        for line in format!("{e:#}").lines() {
            errln!("minibot: {line}");
        }
        std::process::exit(1);
    }
}

/// Prints the report; exit 1 when any repository failed.
fn gitea_sync(c: GiteaSync) -> Result<()> {
    let opts = gitea_sync::Options {
        dry_run: c.dry_run,
        update_secret: c.update_secret,
    };
    let report = gitea_sync::sync(&c.dir, opts)?;
    for line in report.lines(c.dry_run) {
        outln!("{line}");
    }
    if report.has_errors() {
        bail!("some hooks could not be set up (see above)");
    }
    Ok(())
}

fn send_change(c: SendChange) -> Result<()> {
    let read = |f: &Path, what: &str| -> Result<String> {
        if f == Path::new("-") {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .with_context(|| format!("{what}: reading standard input"))?;
            Ok(s)
        } else {
            std::fs::read_to_string(f)
                .with_context(|| format!("{what}: cannot read {}", f.display()))
        }
    };
    let comments = match (c.comments, c.logfile) {
        (Some(_), Some(_)) => bail!("give --comments or --logfile, not both"),
        (Some(t), None) => Some(t),
        (None, Some(f)) => Some(read(&f, "--logfile")?),
        (None, None) => None,
    };
    let revision = match (c.revision, c.revision_file) {
        (Some(_), Some(_)) => bail!("give --revision or --revision-file, not both"),
        (Some(r), None) => Some(r),
        (None, Some(f)) => Some(read(&f, "--revision-file")?.trim().to_string()),
        (None, None) => None,
    };
    let change = sendchange::Change {
        master: c.master,
        who: c.who,
        repository: c.repository,
        project: c.project,
        branch: c.branch,
        category: c.category,
        revision,
        revlink: c.revlink,
        codebase: c.codebase,
        comments,
        properties: c.property,
        when: c.when,
        files: c.files,
        secret_file: c.secret_file,
    };
    let ids = sendchange::send(&change)?;
    match ids.as_slice() {
        [] => outln!("change sent; the master stored nothing for it"),
        [id] => outln!("change sent: the master stored it as change {id}"),
        ids => outln!("change sent: the master stored changes {ids:?}"),
    }
    Ok(())
}

fn create_master(dir: &Path, force: bool) -> Result<()> {
    daemon::private_umask();
    let sample = dir.join("master.cfg.sample");
    let existing_cfg = dir.join(CONFIG_FILE).exists();
    minibot::daemon::create_dir_for(dir, force)?;
    // Fresh secrets in every sample: the published placeholders would let
    // anyone who read the docs sign hooks or connect as the worker.
    let text = config::sample_with_secrets(&config::random_hex(16)?, &config::random_hex(16)?);
    std::fs::write(&sample, text).with_context(|| format!("cannot write {}", sample.display()))?;
    // The sample holds a worker password and a hook secret (and may be an
    // existing, looser file under --force: write keeps its mode).
    db::set_private(&sample)?;
    let db = dir.join(DB_FILE);
    if db.exists() && force {
        outln!("kept the existing {}", db.display());
    } else {
        db::create(&db)?;
    }
    if existing_cfg {
        // --force over a master in use: its config is the user's work.
        outln!(
            "kept your {0}/master.cfg as it is; a fresh sample is in {0}/master.cfg.sample \
             (compare: diff {0}/master.cfg {0}/master.cfg.sample)",
            dir.display()
        );
        return Ok(());
    }
    outln!("created master in {}", dir.display());
    outln!(
        "next: mv {0}/master.cfg.sample {0}/master.cfg, edit it (ports, buildbot_url, repourl), then\n      minibot checkconfig {0} && minibot start {0}\n      \
         master.cfg.sample has a random Gitea secret and worker password: give the\n      \
         secret to the Gitea webhook and the password to `minibot-worker create-worker`",
        dir.display()
    );
    Ok(())
}

/// Prints [`config::secret_warnings`] and [`config::Config::warnings`] on
/// stderr, so a script reading the summary line on stdout is not confused.
/// The exit code stays 0: what they name works, it is only unwise or
/// probably not what was meant.
fn warn_weak_secrets(dir: &Path, cfg: &config::Config) {
    warn_file(&dir.join(CONFIG_FILE), cfg);
}

fn warn_file(file: &Path, cfg: &config::Config) {
    // Read again only for the line numbers: the config loaded from it.
    let text = std::fs::read_to_string(file).unwrap_or_default();
    for w in config::secret_warnings(cfg)
        .into_iter()
        .chain(cfg.warnings())
    {
        match config::warning_line(&text, &w) {
            Some(line) => errln!("minibot: {}:{line}: warning: {w}", file.display()),
            None => errln!("minibot: {}: warning: {w}", file.display()),
        }
    }
}

/// `checkconfig DIR` or, as Buildbot's `checkconfig [CONFIGFILE]`, the
/// file itself.
fn check_config(path: &Path) -> Result<()> {
    let file = if path.is_dir() {
        path.join(CONFIG_FILE)
    } else {
        path.to_path_buf()
    };
    let cfg = config::load(&file).map_err(|e| anyhow::anyhow!("{e}"))?;
    warn_file(&file, &cfg);
    outln!(
        "{}: config file is good ({} builders, {} workers, {} schedulers)",
        file.display(),
        cfg.builders.len(),
        cfg.workers.len(),
        cfg.schedulers.len()
    );
    Ok(())
}

/// Makes an existing master directory private before the master touches
/// it: the directory and its logs directory 0700 (top levels only: that
/// already keeps others out of everything below), the database and its
/// side files 0600. Installs from before issue 14 have 0755/0644 here.
fn tighten_master_dir(dir: &Path) -> Result<()> {
    daemon::tighten_dir(dir)?;
    let logs = db::log_root(dir);
    if logs.is_dir() {
        daemon::tighten_dir(&logs)?;
    }
    for f in [
        dir.join(DB_FILE),
        dir.join(format!("{DB_FILE}-wal")),
        dir.join(format!("{DB_FILE}-shm")),
        dir.join(LOG_FILE),
    ] {
        daemon::tighten_file(&f)?;
    }
    Ok(())
}

fn start(dir: &Path, nodaemon: bool) -> Result<()> {
    // Inherited by the detached child and everything it starts.
    daemon::private_umask();
    if !dir.join(CONFIG_FILE).exists() {
        bail!(
            "{} does not exist (create-master writes master.cfg.sample: rename and edit it)",
            dir.join(CONFIG_FILE).display()
        );
    }
    if let Some(pid) = daemon::running_pid(&dir.join(PID_FILE)) {
        bail!(
            "a master is already running in {} (pid {pid})",
            dir.display()
        );
    }
    tighten_master_dir(dir)?;
    if nodaemon {
        return master::run(dir, true);
    }
    // Check the config here too, so its errors (and weak secrets) reach
    // the terminal; the master logs the warnings again.
    let cfg = master::load_config(dir)?;
    warn_weak_secrets(dir, &cfg);
    let args = vec![
        "start".into(),
        "--nodaemon".into(),
        dir.as_os_str().to_owned(),
    ];
    let line = daemon::detach(args, Duration::from_secs(30), &dir.join(LOG_FILE))?;
    outln!("{line}");
    Ok(())
}

fn stop(dir: &Path, clean: bool) -> Result<()> {
    let pid_path = dir.join(PID_FILE);
    if clean {
        let Some(pid) = daemon::running_pid(&pid_path) else {
            bail!("no master is running in {}", dir.display());
        };
        outln!("waiting for running builds to finish...");
        daemon::send_signal(pid, libc::SIGUSR1)?;
        while daemon::running_pid(&pid_path) == Some(pid) {
            std::thread::sleep(Duration::from_millis(100));
        }
        outln!("master stopped");
        return Ok(());
    }
    daemon::stop(&pid_path, "master", Duration::from_secs(60))?;
    outln!("master stopped");
    Ok(())
}

fn restart(dir: &Path, nodaemon: bool) -> Result<()> {
    if daemon::running_pid(&dir.join(PID_FILE)).is_some() {
        // A config start would refuse (an error, or a mode others may
        // read) must not cost the running master.
        master::load_config(dir)?;
        stop(dir, false)?;
    }
    start(dir, nodaemon)
}

/// Sends SIGHUP and reports the outcome the master logs.
fn reconfig(dir: &Path) -> Result<()> {
    let Some(pid) = daemon::running_pid(&dir.join(PID_FILE)) else {
        bail!("no master is running in {}", dir.display());
    };
    // Check first: a bad file gets its errors on the terminal (and weak
    // secrets their warnings).
    let cfg = master::load_config(dir)?;
    warn_weak_secrets(dir, &cfg);
    // The master records each reconfig's outcome in a status file (not
    // only in master.log, whose level may hide it): wait for one newer
    // than what is there now.
    let before = master::ReconfigStatus::read(dir)
        .filter(|st| st.pid == pid as u32)
        .map_or(0, |st| st.generation);
    daemon::send_signal(pid, libc::SIGHUP)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match master::ReconfigStatus::read(dir) {
            Some(st) if st.pid == pid as u32 && st.generation > before => match st.outcome {
                master::ReconfigOutcome::Done => {
                    outln!("{}", st.message);
                    return Ok(());
                }
                master::ReconfigOutcome::Rejected => bail!(
                    "the master rejected the new config and kept the old one: {}",
                    st.message
                ),
            },
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    bail!(
        "no answer from the master within 10 s; see {}",
        dir.join(LOG_FILE).display()
    )
}

fn upgrade(dir: &Path) -> Result<()> {
    let (from, to) = db::upgrade(&dir.join(DB_FILE))?;
    if from == to {
        outln!(
            "{}: schema already at version {to}",
            dir.join(DB_FILE).display()
        );
    } else {
        outln!(
            "{}: schema upgraded from version {from} to {to}",
            dir.join(DB_FILE).display()
        );
    }
    Ok(())
}

/// Opens DIR's database for a user command, keeping it (and SQLite's side
/// files) private: it holds the password hashes.
fn user_db(dir: &Path) -> Result<db::Tx> {
    let db = dir.join(DB_FILE);
    let conn = db::open_admin(&db)?;
    for f in [
        db.clone(),
        dir.join(format!("{DB_FILE}-wal")),
        dir.join(format!("{DB_FILE}-shm")),
    ] {
        if f.exists() {
            db::set_private(&f)?;
        }
    }
    Ok(conn)
}

/// A new password: one line of stdin, or typed twice without echo.
fn read_password(from_stdin: bool) -> Result<String> {
    use std::io::{BufRead, IsTerminal};
    let pw = if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        line.trim_end_matches(['\n', '\r']).to_string()
    } else {
        if !std::io::stdin().is_terminal() {
            bail!("no terminal to read the password from; pipe it in with --password-stdin");
        }
        let pw = rpassword::prompt_password("Password: ").context("reading the password")?;
        let again =
            rpassword::prompt_password("Password again: ").context("reading the password")?;
        if pw != again {
            bail!("the two passwords differ; nothing changed");
        }
        pw
    };
    minibot::master::auth::check_password(&pw)?;
    Ok(pw)
}

fn user(cmd: UserCmd) -> Result<()> {
    use minibot::master::auth;
    match cmd {
        UserCmd::Add(c) => {
            auth::check_user_name(&c.name)?;
            let conn = user_db(&c.dir)?;
            if db::user_password(&conn, &c.name)?.is_some() {
                bail!(
                    "a user named {:?} already exists (use `minibot user passwd`)",
                    c.name
                );
            }
            let hash = auth::hash_password(&read_password(c.password_stdin)?)?;
            db::add_user(&conn, &c.name, &hash)?;
            outln!("added user {}", c.name);
        }
        UserCmd::Passwd(c) => {
            let conn = user_db(&c.dir)?;
            if db::user_password(&conn, &c.name)?.is_none() {
                bail!(
                    "no user named {:?} in {}",
                    c.name,
                    c.dir.join(DB_FILE).display()
                );
            }
            let hash = auth::hash_password(&read_password(c.password_stdin)?)?;
            db::set_user_password(&conn, &c.name, &hash)?;
            outln!(
                "changed the password of {} and logged out their sessions",
                c.name
            );
        }
        UserCmd::Remove(c) => {
            let conn = user_db(&c.dir)?;
            if !db::remove_user(&conn, &c.name)? {
                bail!(
                    "no user named {:?} in {}",
                    c.name,
                    c.dir.join(DB_FILE).display()
                );
            }
            outln!("removed user {} and their sessions", c.name);
        }
        UserCmd::List(c) => {
            let conn = user_db(&c.dir)?;
            let users = db::list_users(&conn)?;
            if users.is_empty() {
                outln!(
                    "no users yet; add one with `minibot user add {} NAME`",
                    c.dir.display()
                );
            }
            for u in users {
                outln!("{}\t{} active session(s)", u.name, u.sessions);
            }
        }
    }
    Ok(())
}
