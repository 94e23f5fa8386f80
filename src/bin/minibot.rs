//! `minibot`: the master daemon and its admin commands (argh).
//!
//! Owns: command-line parsing and exit codes only (1 = user error, 2 =
//! usage); the work is in `minibot::master`, `minibot::daemon`, `minibot::master::auth`,
//! `minibot::db` and `minibot::demo`.

use anyhow::{bail, Context, Result};
use argh::FromArgs;
use minibot::master::{self, CONFIG_FILE, DB_FILE, LOG_FILE, PID_FILE};
use minibot::{config, daemon, db, demo};
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
    Demo(Demo),
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
/// check DIR/master.cfg and report every problem found
struct CheckConfig {
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
        Cmd::Demo(c) => demo::run(&c.dir, c.once),
    };
    if let Err(e) = res {
        eprintln!("minibot: {e:#}");
        std::process::exit(1);
    }
}

fn create_master(dir: &Path, force: bool) -> Result<()> {
    daemon::private_umask();
    let sample = dir.join("master.cfg.sample");
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
        println!("keeping the existing {}", db.display());
    } else {
        db::create(&db)?;
    }
    println!("created master in {}", dir.display());
    println!(
        "next: mv {0}/master.cfg.sample {0}/master.cfg, edit it (ports, repourl), then\n      minibot checkconfig {0} && minibot start {0}\n      \
         master.cfg.sample has a random Gitea secret and worker password: give the\n      \
         secret to the Gitea webhook and the password to `minibot-worker create-worker`",
        dir.display()
    );
    Ok(())
}

/// Prints [`config::secret_warnings`] on stderr, so a script reading the
/// summary line on stdout is not confused. The exit code stays 0: a weak
/// secret works, it is only unwise.
/// Allowed but weak or dangerous settings: said, not refused (exit 0).
fn warn_weak_secrets(dir: &Path, cfg: &config::Config) {
    for w in config::secret_warnings(cfg) {
        eprintln!("warning: {}: {w}", dir.join(CONFIG_FILE).display());
    }
    for w in cfg.warnings() {
        eprintln!("{}: warning: {w}", dir.join(CONFIG_FILE).display());
    }
}

fn check_config(dir: &Path) -> Result<()> {
    let cfg = master::load_config(dir)?;
    warn_weak_secrets(dir, &cfg);
    println!(
        "{}: config file is good ({} builders, {} workers, {} schedulers)",
        dir.join(CONFIG_FILE).display(),
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
    println!("{line}");
    Ok(())
}

fn stop(dir: &Path, clean: bool) -> Result<()> {
    let pid_path = dir.join(PID_FILE);
    if clean {
        let Some(pid) = daemon::running_pid(&pid_path) else {
            bail!("no master is running in {}", dir.display());
        };
        println!("waiting for running builds to finish...");
        daemon::send_signal(pid, libc::SIGUSR1)?;
        while daemon::running_pid(&pid_path) == Some(pid) {
            std::thread::sleep(Duration::from_millis(100));
        }
        println!("master stopped");
        return Ok(());
    }
    daemon::stop(&pid_path, "master", Duration::from_secs(60))?;
    println!("master stopped");
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
                    println!("{}", st.message);
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
        println!(
            "{}: schema already at version {to}",
            dir.join(DB_FILE).display()
        );
    } else {
        println!(
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
            println!("added user {}", c.name);
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
            println!(
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
            println!("removed user {} and their sessions", c.name);
        }
        UserCmd::List(c) => {
            let conn = user_db(&c.dir)?;
            let users = db::list_users(&conn)?;
            if users.is_empty() {
                println!(
                    "no users yet; add one with `minibot user add {} NAME`",
                    c.dir.display()
                );
            }
            for u in users {
                println!("{}\t{} active session(s)", u.name, u.sessions);
            }
        }
    }
    Ok(())
}
