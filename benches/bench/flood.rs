//! The log-flood phase: a build whose step writes 1 MB/s while five live
//! build pages watch it (issue 15's "during a build writing 1 MB/s with 5
//! live viewers"), and the master's memory during it and once idle again.
//!
//! Threads: the main thread samples `/proc` every 100 ms; one scoped thread
//! per viewer reads its Server-Sent Events stream to the end and counts the
//! bytes. No channels.

use super::{open_ro, post_hook, Bench, OnceIdle};
use crate::common::{push_payload, Proc};
use crate::procfs;
use crate::report::Target;
use anyhow::{ensure, Context, Result};
use rusqlite::OptionalExtension;
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Live pages open on the flooding build.
pub(super) const VIEWERS: usize = 5;

/// The builder of this phase, for the bench's `master.cfg`: one step that
/// writes 1 MB/s of 100-byte lines to stdout for `secs` seconds, paced in
/// 1/16 s slices (the log cap is 10 MB: keep `secs` below 10).
pub(super) fn flood_cfg(secs: u32) -> String {
    FLOOD_CFG.replace("SECS", &secs.to_string())
}

const FLOOD_CFG: &str = r#"
[[schedulers]]
name = "flood"
type = "single_branch"
branch = "flood"
builders = ["flood"]
[[builders]]
name = "flood"
workers = ["example-worker"]
[[builders.steps]]
type = "shell"
name = "flood"
command = ["/usr/bin/python3", "-c", """
import sys, time
secs = SECS
chunk = ('x' * 99 + '\\n') * 655
t0 = time.time()
for i in range(int(secs * 16)):
    sys.stdout.write(chunk)
    sys.stdout.flush()
    time.sleep(max(0.0, t0 + (i + 1) / 16 - time.time()))
"""]
"#;

impl Bench {
    /// One flood build of `secs` seconds with [`VIEWERS`] live pages:
    /// reports the master's largest RssAnon and PSS during it (sampled
    /// every 100 ms), then its memory once idle again.
    pub(super) fn log_flood(&mut self, master: &Proc, secs: u32) -> Result<()> {
        let db = open_ro(&self.db)?;
        let last: i64 = db.query_row("SELECT COALESCE(MAX(buildid), 0) FROM builds", [], |r| {
            r.get(0)
        })?;
        // The master released memory after the previous phase and does not
        // again before a build has run: the next release is this build's.
        let mark = self.releases();
        let mut c = crate::http::Conn::new(self.s.www());
        let sha = self.commit();
        post_hook(
            &mut c,
            &push_payload(&sha, "flood", "flood"),
            &format!("flood-{sha}"),
        )?;
        // The build and its log, once the step has started writing.
        let t = Instant::now();
        let (buildid, logid) = loop {
            let row: Option<(i64, i64)> = db
                .query_row(
                    "SELECT b.buildid, l.logid FROM builds b JOIN steps s ON s.buildid = b.buildid
                     JOIN logs l ON l.stepid = s.stepid
                     WHERE b.buildid > ?1 AND s.name = 'flood' LIMIT 1",
                    [last],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            if let Some(ids) = row {
                break ids;
            }
            ensure!(
                t.elapsed() < Duration::from_secs(30),
                "the flood build did not start within 30 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        let www = self.s.www();
        let path = format!("/builds/{buildid}/live?logs={logid}:0");
        let (peak, received) = std::thread::scope(|sc| -> Result<((f64, f64), Vec<u64>)> {
            let viewers: Vec<_> = (0..VIEWERS)
                .map(|_| sc.spawn(|| watch(www, &path)))
                .collect();
            let (mut anon, mut pss) = (0f64, 0f64);
            while !viewers.iter().all(|v| v.is_finished()) {
                let m = procfs::mem(master.pid())?;
                anon = anon.max(m.anon);
                pss = pss.max(m.pss);
                ensure!(
                    t.elapsed() < Duration::from_secs(u64::from(secs) + 60),
                    "the live pages did not end within a minute of the flood"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            let got = viewers
                .into_iter()
                .map(|v| v.join().map_err(|_| anyhow::anyhow!("viewer panicked"))?)
                .collect::<Result<Vec<u64>>>()?;
            Ok(((anon, pss), got))
        })?;
        let (results, size): (i64, i64) = db.query_row(
            "SELECT b.results, (SELECT SUM(l.size) FROM logs l JOIN steps s ON l.stepid = s.stepid
              WHERE s.buildid = b.buildid AND s.name = 'flood') FROM builds b WHERE b.buildid = ?1",
            [buildid],
            |r| Ok((r.get(0)?, r.get::<_, Option<i64>>(1)?.unwrap_or(0))),
        )?;
        ensure!(results == 0, "the flood build ended with result {results}");
        for (i, n) in received.iter().enumerate() {
            // Each page gets the whole log, rendered as HTML: at least its text.
            ensure!(
                *n >= size as u64,
                "viewer {i} received {n} bytes of a {size}-byte log"
            );
        }
        let what = format!("during a build writing 1 MB/s with {VIEWERS} live viewers");
        self.report.add(
            &format!("master RssAnon {what} (peak)"),
            "kB",
            vec![peak.0],
            Target::None,
            "the live streams' buffers and each viewer's log rendering, the log writer",
        );
        self.report.add(
            &format!("master PSS {what} (peak)"),
            "kB",
            vec![peak.1],
            Target::None,
            "as RssAnon, plus the text of the log and stream paths",
        );
        self.report.fact(
            "log_flood",
            json!({"secs": secs, "log_bytes": size, "viewer_bytes": received, "buildid": buildid}),
        );
        let idle: OnceIdle = self.once_idle(master, mark)?;
        idle.report(
            &mut self.report,
            &format!("a 1 MB/s build with {VIEWERS} viewers"),
        );
        Ok(())
    }
}

/// One live page: the event stream of `path`, read to its end (the build
/// complete); the number of bytes received.
fn watch(port: u16, path: &str) -> Result<u64> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).context("connecting a viewer")?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    let mut head = Vec::new();
    loop {
        let n = s.read(&mut buf).context("reading the live stream")?;
        if n == 0 {
            break;
        }
        if head.len() < 16 {
            head.extend_from_slice(&buf[..n.min(16)]);
        }
        total += n as u64;
    }
    ensure!(
        head.starts_with(b"HTTP/1.1 200"),
        "the live page answered {}",
        String::from_utf8_lossy(&head)
    );
    Ok(total)
}
