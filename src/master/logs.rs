//! Build logs on disk, master side.
//!
//! Owns: the log files `<master>/logs/<buildid>-<logid>.log`, written
//! by the worker connection thread that runs the build (one writer per
//! log, no locking). Output arrives as chunks per stream; each complete
//! line is written with its stream's prefix ('o', 'e', 'h'), Buildbot's
//! stream-log format, so stdout and stderr stay apart while keeping their
//! order. SQLite holds only the totals (`db::update_log`). Each log's
//! file is made new (`LogWriter::create`), and at start the files no log
//! of this database owns are set aside (`set_aside_foreign`): ids start
//! again when a database is recreated, and an old file must never show
//! under a new log (issue 16 point 2).

use crate::db::{self, Conn, LogTotals};
use crate::model::{BuildId, LogId};
use anyhow::{Context, Result};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

pub(crate) struct LogWriter {
    file: File,
    /// Incomplete last line of each stream: o, e, h.
    partial: [String; 3],
    totals: LogTotals,
    max_size: u64,
    truncated: bool,
}

fn stream_index(stream: &str) -> usize {
    match stream {
        "e" => 1,
        "h" => 2,
        _ => 0,
    }
}

const PREFIX: [char; 3] = ['o', 'e', 'h'];

impl LogWriter {
    /// Creates the log at `path`, new: never appended to. The log's id was
    /// allocated by the database the moment before (`db::start_step`), so a
    /// file already at that path is not this log's: it was left by a
    /// database that no longer exists (recreated, or restored from an older
    /// backup, so ids started again), and appending to it would put an old
    /// build's output above this one's. It is removed and a new file made
    /// (a new inode, so a page still reading the old text never sees the
    /// two mixed). Nothing continues a log after a restart: a build cut
    /// short is closed as RETRY and its retry is a new build with new logs.
    ///
    /// The directory is made 0700 and the file 0600 by the calls themselves,
    /// not only by the master's umask: build output often holds what only
    /// the project's owner should read (paths, environment, test data).
    pub(crate) fn create(path: &Path, max_size: u64) -> Result<LogWriter> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("cannot create log directory {}", dir.display()))?;
        }
        let open = || {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
        };
        let file = match open() {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                log::warn!(
                    "{} existed before its log was created (left by an earlier database whose ids this one reuses); replaced",
                    path.display()
                );
                match std::fs::remove_file(path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(e).with_context(|| {
                            format!("cannot remove the stale log {}", path.display())
                        })
                    }
                    _ => open(),
                }
            }
            other => other,
        }
        .with_context(|| format!("cannot create log {}", path.display()))?;
        Ok(LogWriter {
            file,
            partial: Default::default(),
            totals: LogTotals::default(),
            max_size,
            truncated: false,
        })
    }

    pub(crate) fn totals(&self) -> LogTotals {
        self.totals
    }

    /// Appends a chunk of one stream. Complete lines are written at once
    /// (one write per chunk, so a live reader sees whole lines); the rest
    /// waits for its newline.
    pub(crate) fn append(&mut self, stream: &str, data: &str) -> Result<()> {
        if self.truncated {
            return Ok(());
        }
        let i = stream_index(stream);
        self.partial[i].push_str(data);
        let Some(last_nl) = self.partial[i].rfind('\n') else {
            // A single line longer than the cap must still be cut.
            if self.partial[i].len() as u64 > self.max_size {
                let line = std::mem::take(&mut self.partial[i]);
                return self.write_lines(i, &format!("{line}\n"));
            }
            return Ok(());
        };
        let rest = self.partial[i].split_off(last_nl + 1);
        let lines = std::mem::replace(&mut self.partial[i], rest);
        self.write_lines(i, &lines)
    }

    /// Writes `text` (whole lines) with the stream prefix, up to the cap.
    fn write_lines(&mut self, i: usize, text: &str) -> Result<()> {
        let mut out = String::with_capacity(text.len() + 16);
        for line in text.split_inclusive('\n') {
            let need = (line.len() + 1) as u64;
            if self.totals.size as u64 + out.len() as u64 + need > self.max_size {
                out.push_str(&format!(
                    "h*** log truncated: it reached max_log_size ({} bytes); further output was discarded ***\n",
                    self.max_size
                ));
                self.totals.num_lines += 1;
                self.truncated = true;
                break;
            }
            out.push(PREFIX[i]);
            out.push_str(line);
            self.totals.num_lines += 1;
        }
        self.totals.size += out.len() as i64;
        self.file
            .write_all(out.as_bytes())
            .context("writing build log")
    }

    /// Flushes incomplete lines (a step's last line may lack '\n').
    pub(crate) fn finish(&mut self) -> Result<()> {
        for i in 0..3 {
            if !self.partial[i].is_empty() && !self.truncated {
                let line = std::mem::take(&mut self.partial[i]);
                self.write_lines(i, &format!("{line}\n"))?;
            }
        }
        Ok(())
    }
}

/// Moves aside the log files under `master_dir` that are not this
/// database's: a file whose log id the database does not have, or has for
/// another build. They were left by a database that no longer exists
/// (recreated, or an older backup restored), and since ids start again, a
/// new log would otherwise be shown with an old one's text until its own
/// file is made (between its claim and its step's start, or for ever if
/// the build never starts). Run at start, before any build can start:
/// a file made after its row could otherwise be taken for a stale one.
/// Nothing is deleted: they go to `logs/set-aside-<unix time>/`, which the
/// janitor leaves alone, and the caller logs where. Returns how many.
pub(crate) fn set_aside_foreign(conn: &Conn, master_dir: &Path) -> Result<usize> {
    let root = db::log_root(master_dir);
    let entries = match std::fs::read_dir(&root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", root.display())),
    };
    let aside = root.join(format!("set-aside-{}", crate::model::now()));
    let mut moved = 0;
    let mut move_aside = |from: &Path, name: &str| -> Result<()> {
        if moved == 0 {
            std::fs::create_dir_all(&aside)
                .with_context(|| format!("cannot create {}", aside.display()))?;
        }
        let to = aside.join(name);
        std::fs::rename(from, &to)
            .with_context(|| format!("cannot move {} to {}", from.display(), to.display()))?;
        moved += 1;
        Ok(())
    };
    // This database's build for a log id.
    let owner = |log: &str| -> Result<Option<BuildId>> {
        match log.parse::<i64>() {
            Ok(id) => db::log_build(conn, LogId(id)),
            Err(_) => Ok(None),
        }
    };
    for e in entries.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        if let Some((build, log)) = name.strip_suffix(".log").and_then(|s| s.split_once('-')) {
            // The flat layout: `<buildid>-<logid>.log`.
            let Ok(build) = build.parse::<BuildId>() else {
                continue;
            };
            if owner(log)? != Some(build) {
                move_aside(&path, &name)?;
            }
        } else if let Ok(build) = name.parse::<BuildId>() {
            // An older minibot's `<buildid>/<logid>.log`.
            let Ok(files) = std::fs::read_dir(&path) else {
                continue;
            };
            for f in files.filter_map(|f| f.ok()) {
                let fname = f.file_name().to_string_lossy().into_owned();
                let Some(log) = fname.strip_suffix(".log") else {
                    continue;
                };
                if owner(log)? != Some(build) {
                    move_aside(&f.path(), &format!("{build}-{fname}"))?;
                }
            }
        }
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_lines_and_keeps_streams_apart() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("1/2.log");
        let mut w = LogWriter::create(&p, 1 << 20).unwrap();
        w.append("o", "hel").unwrap();
        w.append("e", "oops\nerr-part").unwrap();
        w.append("o", "lo\nworld").unwrap();
        w.append("h", "program finished with exit code 0\n")
            .unwrap();
        w.finish().unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(
            text,
            "eoops\nohello\nhprogram finished with exit code 0\noworld\neerr-part\n"
        );
        assert_eq!(w.totals().num_lines, 5);
        assert_eq!(w.totals().size as usize, text.len());
    }

    #[test]
    fn enforces_the_cap_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.log");
        let mut w = LogWriter::create(&p, 100).unwrap();
        for _ in 0..50 {
            w.append("o", "0123456789\n").unwrap();
        }
        w.append("o", &"y".repeat(1000)).unwrap();
        w.finish().unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("log truncated"), "{text}");
        assert!(text.len() < 100 + 120, "{}", text.len());
        // 8 lines of 12 bytes fit under 100; the 9th would not.
        assert_eq!(text.matches("0123456789").count(), 8);
        assert!(
            text.lines().all(|l| l.starts_with(['o', 'e', 'h'])),
            "{text}"
        );
        assert_eq!(w.totals().num_lines, 9);
    }

    /// Issue 16 point 2: a file left at the path by an earlier database
    /// (ids start again at 1 when it is recreated) is not continued.
    #[test]
    fn a_file_left_at_the_path_is_replaced_not_appended_to() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("1-1.log");
        std::fs::write(&p, "oOLD BUILD OUTPUT\n").unwrap();
        let mut w = LogWriter::create(&p, 1 << 20).unwrap();
        w.append("o", "new\n").unwrap();
        w.finish().unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "onew\n");
        assert_eq!(w.totals().size as usize, "onew\n".len());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
