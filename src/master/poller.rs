//! `git_poller` change sources (Buildbot's GitPoller), for a repository
//! whose server cannot reach the master's change hook, and the thread
//! that also runs the `gitea_pr_poller` sources (`pr_poller`, which owns
//! their polls).
//!
//! Owns: the `poller` thread (one for all `[[change_source]]` entries, which
//! it polls in turn; the master runs it only while there are some), the
//! bare work repositories under
//! `DIR/gitpoller/<hash of the poller name>`, and the `poller_state` table.
//! Receives `PollerMsg` (reconfig, poll now, shutdown) from the master;
//! sends `SchedMsg::NewChanges` to the scheduler after storing changes.
//!
//! A poll is `git ls-remote --heads` (cheap; nothing else happens when no
//! branch moved), then one `git fetch` of the branches that moved, then
//! `git log` of the new commits. The changes and the new last-seen
//! revisions are written in ONE transaction, so a restart (or a crash at
//! any point) neither misses nor repeats a change. As in Buildbot, the
//! first poll of a repository only records where its branches are; a new
//! branch later contributes its head commit; a branch that was rewritten
//! (force push) contributes its new head.

use crate::config::{ChangeSource, Config, GitPoller, GiteaDialect};
use crate::db::{self, Store};
use crate::master::pr_poller;
use crate::master::scheduler::SchedMsg;
use crate::model::NewChange;
use anyhow::{bail, Context, Result};
use crossbeam_channel::{after, select, Receiver, Sender};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) enum PollerMsg {
    Reconfig(Arc<Config>),
    Shutdown,
}

/// Longest a git command of a poll may take (a hung server must not stop
/// the thread forever).
const GIT_TIMEOUT: Duration = Duration::from_secs(300);

/// Whether `cfg` has change sources: the master runs the poller thread
/// only then.
pub(crate) fn wanted(cfg: &Config) -> bool {
    !cfg.change_source.is_empty()
}

pub(crate) fn spawn(
    store: Store,
    cfg: Arc<Config>,
    master_dir: PathBuf,
    rx: Receiver<PollerMsg>,
    sched: Sender<SchedMsg>,
) -> Result<std::thread::JoinHandle<()>> {
    Ok(std::thread::Builder::new()
        .name("poller".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            let mut p = Poller {
                store,
                master_dir,
                sched,
                sources: vec![],
                dialect: GiteaDialect::default(),
            };
            p.configure(&cfg);
            p.run(rx)
        })?)
}

struct Poller {
    store: Store,
    master_dir: PathBuf,
    sched: Sender<SchedMsg>,
    /// Each source with its next poll.
    sources: Vec<(ChangeSource, Instant)>,
    /// What a `gitea_pr_poller` makes its changes with: the gitea
    /// dialect's options, so they are the hook's changes.
    dialect: GiteaDialect,
}

impl Poller {
    fn configure(&mut self, cfg: &Config) {
        let now = Instant::now();
        let old = std::mem::take(&mut self.sources);
        for cs in &cfg.change_source {
            // An unchanged source keeps its rhythm across a reconfig.
            let due = match old.iter().find(|(o, _)| o == cs) {
                Some((_, due)) => *due,
                None if cs.poll_at_launch() => now,
                None => now + cs.poll_interval(),
            };
            self.sources.push((cs.clone(), due));
        }
        self.dialect = cfg
            .www
            .change_hook_dialects
            .gitea
            .clone()
            .unwrap_or_default();
    }

    fn run(&mut self, rx: Receiver<PollerMsg>) {
        loop {
            let next = self.sources.iter().map(|(_, d)| *d).min();
            let timeout = match next {
                Some(d) => after(d.saturating_duration_since(Instant::now())),
                None => crossbeam_channel::never(),
            };
            select! {
                recv(rx) -> msg => match msg {
                    Ok(PollerMsg::Reconfig(cfg)) => self.configure(&cfg),
                    Ok(PollerMsg::Shutdown) | Err(_) => break,
                },
                recv(timeout) -> _ => {}
            }
            for i in 0..self.sources.len() {
                if self.sources[i].1 > Instant::now() {
                    continue;
                }
                let cs = self.sources[i].0.clone();
                let polled = match &cs {
                    ChangeSource::GitPoller(g) => poll(&self.store, &self.master_dir, g),
                    ChangeSource::GiteaPrPoller(g) => {
                        pr_poller::poll(&self.store, &self.master_dir, g, &self.dialect)
                    }
                };
                let (kind, name) = (cs.type_name(), cs.name());
                match polled {
                    Ok(0) => {}
                    Ok(n) => {
                        log::info!("{kind} {name}: {n} new change(s)");
                        let _ = self.sched.send(SchedMsg::NewChanges);
                    }
                    // Tried again at the next interval.
                    Err(e) => log::warn!("{kind} {name}: {e:#}"),
                }
                self.sources[i].1 = Instant::now() + cs.poll_interval();
            }
        }
        log::debug!("poller thread exiting");
    }
}

/// Runs git with a time limit; stdout on success, stderr in the error.
fn git(dir: Option<&Path>, args: &[&str]) -> Result<String> {
    let mut cmd = Command::new("git");
    if let Some(d) = dir {
        cmd.arg("-C").arg(d);
    }
    let mut child = cmd
        .args(args)
        // Never wait for a password prompt over HTTP (ssh has no terminal
        // in a detached master, and GIT_TIMEOUT bounds it anyway).
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run git")?;
    let pump = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = pump(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let err = pump(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + GIT_TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("git {} took longer than {GIT_TIMEOUT:?}", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    if !status.success() {
        bail!(
            "git {} failed: {}",
            args.first().copied().unwrap_or(""),
            String::from_utf8_lossy(&err).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// `ls-remote --heads` output → branch name → sha.
pub(crate) fn parse_ls_remote(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let (sha, r) = l.split_once('\t')?;
            Some((
                r.strip_prefix("refs/heads/")?.to_string(),
                sha.trim().to_string(),
            ))
        })
        .collect()
}

/// A commit as `git log` describes it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LogCommit {
    pub sha: String,
    pub author: String,
    pub committer: String,
    pub when: i64,
    pub comments: String,
    pub files: Vec<String>,
}

/// `--format` for [`parse_log`]: record separator, then fields separated
/// by unit separators (characters no commit message or path contains).
const LOG_FORMAT: &str = "--format=%x1e%H%x1f%an <%ae>%x1f%cn <%ce>%x1f%ct%x1f%B%x1f";

/// Parses `git log --name-only` output made with [`LOG_FORMAT`].
pub(crate) fn parse_log(text: &str) -> Vec<LogCommit> {
    text.split('\u{1e}')
        .filter(|r| !r.trim().is_empty())
        .filter_map(|rec| {
            let mut f = rec.splitn(6, '\u{1f}');
            let sha = f.next()?.trim().to_string();
            let author = f.next()?.to_string();
            let committer = f.next()?.to_string();
            let when = f.next()?.trim().parse().unwrap_or(0);
            let comments = f.next()?.trim_end().to_string();
            let files = f
                .next()
                .unwrap_or("")
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect();
            Some(LogCommit {
                sha,
                author,
                committer,
                when,
                comments,
                files,
            })
        })
        .collect()
}

/// The bare repository a poller fetches into.
fn workdir(master_dir: &Path, name: &str) -> PathBuf {
    let h = hex::encode(Sha256::digest(name.as_bytes()));
    master_dir.join("gitpoller").join(&h[..16])
}

/// One poll of `cs`; returns how many changes it stored.
fn poll(store: &Store, master_dir: &Path, cs: &GitPoller) -> Result<usize> {
    let name = cs.name.clone();
    let heads = parse_ls_remote(&git(None, &["ls-remote", "--heads", "--", &cs.repourl])?);
    let wanted: BTreeMap<String, String> = match &cs.branches {
        None => heads,
        Some(list) => heads
            .into_iter()
            .filter(|(b, _)| list.contains(b))
            .collect(),
    };
    let seen = db::poller_state(&*store.reader()?, &name)?;
    let first_poll = seen.is_empty();
    let moved: Vec<(String, String)> = wanted
        .into_iter()
        .filter(|(b, sha)| seen.get(b) != Some(sha))
        .collect();
    if moved.is_empty() {
        return Ok(0);
    }
    let mut changes: Vec<NewChange> = vec![];
    if !first_poll {
        let dir = workdir(master_dir, &name);
        if !dir.join("HEAD").exists() {
            // git creates the missing directories.
            git(None, &["init", "--bare", "--quiet", &dir.to_string_lossy()])?;
        }
        let dir = dir.as_path();
        let refspecs: Vec<String> = moved
            .iter()
            .map(|(b, _)| format!("+refs/heads/{b}:refs/minibot/{b}"))
            .collect();
        let mut args = vec!["fetch", "--quiet", "--no-tags", "--", &cs.repourl];
        args.extend(refspecs.iter().map(String::as_str));
        git(Some(dir), &args)?;
        for (branch, tip) in &moved {
            let range = seen
                .get(branch)
                .filter(|last| git(Some(dir), &["merge-base", "--is-ancestor", last, tip]).is_ok())
                .map(|last| format!("{last}..{tip}"));
            let commits = match &range {
                // Oldest first, as changes are stored.
                Some(r) => git(
                    Some(dir),
                    &["log", "--reverse", "--name-only", LOG_FORMAT, r, "--"],
                )?,
                // A new branch, or a rewritten one: its head.
                None => git(
                    Some(dir),
                    &["log", "-1", "--name-only", LOG_FORMAT, tip, "--"],
                )?,
            };
            for c in parse_log(&commits) {
                changes.push(NewChange {
                    author: c.author,
                    committer: Some(c.committer),
                    comments: c.comments,
                    branch: Some(branch.clone()),
                    revision: Some(c.sha),
                    repository: cs.repourl.clone(),
                    project: cs.project.clone(),
                    category: cs.category.clone(),
                    codebase: cs.codebase.clone(),
                    revlink: None,
                    when_timestamp: c.when,
                    files: c.files,
                    properties: BTreeMap::new(),
                });
            }
        }
    } else {
        log::info!(
            "git_poller {name}: first poll, recording {} branch head(s) without building",
            moved.len()
        );
    }
    let n = changes.len();
    store.write(move |conn| {
        db::insert_changes(conn, &changes, None)?;
        for (branch, tip) in &moved {
            db::set_poller_state(conn, &name, branch, tip)?;
        }
        Ok(())
    })?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ls_remote_and_log_parsing() {
        let ls = "aaa\trefs/heads/master\nbbb\trefs/heads/feature/x\nccc\trefs/tags/v1\n";
        let m = parse_ls_remote(ls);
        assert_eq!(m.len(), 2);
        assert_eq!(m["feature/x"], "bbb");
        let log = "\u{1e}abc\u{1f}A <a@x>\u{1f}C <c@x>\u{1f}1700000000\u{1f}Subject\n\nBody\n\u{1f}\n\nsrc/a.rs\nREADME.md\n\
                   \u{1e}def\u{1f}B <b@x>\u{1f}C <c@x>\u{1f}1700000100\u{1f}Merge\n\u{1f}\n";
        let c = parse_log(log);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].sha, "abc");
        assert_eq!(c[0].author, "A <a@x>");
        assert_eq!(c[0].when, 1_700_000_000);
        assert_eq!(c[0].comments, "Subject\n\nBody");
        assert_eq!(c[0].files, ["src/a.rs", "README.md"]);
        assert!(c[1].files.is_empty());
    }
}
