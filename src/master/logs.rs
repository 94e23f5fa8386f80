//! Build logs on disk, master side.
//!
//! Owns: the log files `<master>/logs/<buildid>-<logid>.log`, written
//! by the worker connection thread that runs the build (one writer per
//! log, no locking). Output arrives as chunks per stream; each complete
//! line is written with its stream's prefix ('o', 'e', 'h'), Buildbot's
//! stream-log format, so stdout and stderr stay apart while keeping their
//! order. SQLite holds only the totals (`db::update_log`).

use crate::db::LogTotals;
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
    /// Opens (creating if needed) the log at `path`. The directory is made
    /// 0700 and the file 0600 by the calls themselves, not only by the
    /// master's umask: build output often holds what only the project's
    /// owner should read (paths, environment, test data).
    pub(crate) fn create(path: &Path, max_size: u64) -> Result<LogWriter> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("cannot create log directory {}", dir.display()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("cannot open log {}", path.display()))?;
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
}
