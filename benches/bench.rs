//! The performance benchmark of issue 7: every figure of the reference table,
//! measured on the real release binaries in one run.
//!
//! Run: `scripts/bench [--quick] [--json FILE] [--keep] [--builds N]`,
//! which builds this program with `cargo bench --no-run`, then the
//! binaries with `cargo build --release` over the bench profile's (the
//! same settings, but other symbol hashes, hence other inlining here and
//! there: the figures are those of the binaries `cargo install` makes),
//! and runs it. It makes a temp dir with a
//! master, a worker and a local git repository on free ports (the tests'
//! `Setup`, shared through `#[path]`), runs the phases below, prints a
//! Markdown table (p50/p90) and writes JSON (default
//! `target/bench.json`), and kills everything it started, also on a panic
//! (`Proc` kills on drop). Methods and what bounds each figure:
//! docs/performance.md.
//!
//! Phases, in order (one master directory throughout, so history grows):
//! 1. start/stop cycles without a worker: spawn → first 200 of
//!    `GET /api/v2/builders`; SIGTERM → exit;
//! 2. idle memory of master and worker (VmRSS, RssAnon, PSS); 100 failed
//!    logins, then the master's memory once they are over; client cost
//!    (raw socket vs ureq);
//! 3. the guide's hello-world, alternating the bare job by hand with the
//!    same job through a signed Gitea hook: hook answered, build started,
//!    build complete (paired with the bare job), master CPU per build;
//! 4. 200 hooks at once to a builder whose step is `true`: builds/s, and
//!    every request ran exactly once; after phases 3, 4 and 6 the master's
//!    memory right after the last build, and master's and worker's once
//!    the master has gone idle and given memory back (counted in its
//!    `status.json`, ~1 s later);
//!    4b. a build writing 1 MB/s with 5 live build pages reading its
//!    stream (`bench/flood.rs`): the master's peak RssAnon and PSS during
//!    it, and its memory once idle after;
//! 5. ingestion: 16 threads post distinct signed hooks, then the master is
//!    killed with SIGKILL mid-stream; every acknowledged change must be in
//!    the database;
//! 6. history: real `noop` builds through hooks up to 10,000 (with
//!    `--quick`: rows inserted into the stopped master's database, labelled
//!    synthetic), then memory, start time, and the latency of
//!    `GET /api/v2/builds?limit=50&order=-buildid` and of `/`.
//!
//! Threads: the main thread drives the phases; the `noop` builds, the
//! flood's viewers and the ingestion start client threads (scoped, joined before the phase ends).
//! No channels.
//!
//! Build start and completion are read from `state.sqlite` with a
//! read-only connection of our own, polled every 100 µs: WAL readers see
//! a transaction the moment it commits, a query costs ~10 µs of *our* CPU
//! and none of the master's, and the API's `started_at` has only 1 s
//! resolution.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "bench/flood.rs"]
mod flood;
#[path = "bench/http.rs"]
mod http;
#[path = "bench/procfs.rs"]
mod procfs;
#[path = "bench/report.rs"]
mod report;

use anyhow::{bail, ensure, Context, Result};
use argh::FromArgs;
use common::*;
use http::Conn;
use report::{percentile, Report, Target};
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[derive(FromArgs)]
/// minibot's benchmark (issue 7): runs every measure against the release
/// binaries and prints p50/p90.
struct Args {
    /// fewer samples: finishes in well under a minute
    #[argh(switch)]
    quick: bool,
    /// where to write the results as JSON (default target/bench.json)
    #[argh(option)]
    json: Option<PathBuf>,
    /// keep the temp dir (master, worker, repository) and print its path
    #[argh(switch)]
    keep: bool,
    /// the number of hello-world builds (phase 3) instead of the mode's
    #[argh(option)]
    builds: Option<usize>,
    /// passed by `cargo bench`; ignored
    #[argh(switch, hidden_help)]
    #[allow(dead_code)]
    bench: bool,
}

/// Steps run with the system PATH: a version manager's `python3` shim in
/// front would add ~100 ms to every call, in CI and by hand alike.
const SYSTEM_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// The daemons run as a user runs them: info logging, system PATH. (The
/// master's memory releases are counted in `status.json`, whatever the
/// log level.)
const DAEMON_ENV: &[(&str, &str)] = &[("RUST_LOG", "info"), ("PATH", SYSTEM_PATH)];
const WORKER_NAME: &str = "example-worker";

/// Added to the tests' config: a builder whose only step is `true`, fed by
/// its own branch. Hooks on any other branch (`ingest`) start nothing.
const EXTRA_CFG: &str = r#"
[[schedulers]]
name = "noop"
type = "single_branch"
branch = "noop"
builders = ["noop"]
[[builders]]
name = "noop"
workers = ["example-worker"]
# Every hook must give a build of its own: the figure is builds per second,
# and collapsing (on by default) would fold a queued burst into a few.
collapse_requests = false
[[builders.steps]]
type = "shell"
name = "true"
command = ["true"]
"#;

struct Sizes {
    /// Sequential hello-world builds (hook → complete).
    builds: usize,
    start_cycles: usize,
    noop_builds: usize,
    ingest_secs: f64,
    ingest_clients: usize,
    history: i64,
    api_samples: usize,
    /// Seconds of the 1 MB/s log flood (phase 4b).
    flood_secs: u32,
}

const FULL: Sizes = Sizes {
    builds: 300,
    start_cycles: 20,
    noop_builds: 200,
    ingest_secs: 10.0,
    ingest_clients: 16,
    history: 10_000,
    api_samples: 1000,
    flood_secs: 8,
};
// 100 builds, not fewer: CPU per build is read in 10 ms clock ticks, so
// ~1 tick in ~25 (±0.1 ms per build); the whole run is still ~15 s.
const QUICK: Sizes = Sizes {
    builds: 100,
    start_cycles: 10,
    noop_builds: 200,
    ingest_secs: 3.0,
    ingest_clients: 16,
    history: 10_000,
    api_samples: 200,
    flood_secs: 3,
};

fn main() {
    let args: Args = minibot::daemon::parse_args("bench");
    let mut sizes = if args.quick { QUICK } else { FULL };
    if let Some(n) = args.builds {
        sizes.builds = n;
    }
    let json_path = args
        .json
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench.json"));
    let t0 = Instant::now();
    match run(&sizes, args.quick, args.keep) {
        Ok(mut r) => {
            r.fact("mode", json!(if args.quick { "quick" } else { "full" }));
            r.fact("wall_time_s", json!(t0.elapsed().as_secs_f64()));
            println!("\n{}", r.markdown());
            let text = serde_json::to_string_pretty(&r.json()).unwrap_or_default();
            match std::fs::write(&json_path, text) {
                Ok(()) => println!("JSON written to {}", json_path.display()),
                Err(e) => {
                    eprintln!("bench: cannot write {}: {e}", json_path.display());
                    std::process::exit(1);
                }
            }
        }
        Err(e) => {
            eprintln!("bench: {e:#}");
            std::process::exit(1);
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Master's and worker's memory once the master has gone idle after
/// builds and given memory back (`Bench::once_idle`).
struct OnceIdle {
    master: procfs::Mem,
    worker: procfs::Mem,
    /// From the last build seen complete to the release seen recorded.
    waited_ms: f64,
    /// The botmaster's record of it: how much, and how long it took.
    release: IdleRelease,
}

impl OnceIdle {
    /// Rows "{who} {measure} after {what}, once idle", with issue 15's
    /// target on the master's RssAnon.
    fn report(&self, r: &mut Report, what: &str) {
        mem_rows(
            r,
            "master",
            &format!("after {what}, once idle"),
            &self.master,
            [Target::None, Target::AtMost(4096.0), Target::None],
            [
                "text of the binary and libraries as far as it ran, plus RssAnon",
                "heap in use after the release (SQLite caches emptied, malloc_trim), the pages free chunks still share with it, chunks in threads' malloc caches, thread stacks",
                "VmRSS with the shared libraries' pages divided among the processes that map them",
            ],
        );
        mem_rows(
            r,
            "worker",
            &format!("after {what}, once idle"),
            &self.worker,
            [Target::None; 3],
            [
                "as idle: a build's step threads and buffers are gone",
                "heap and stacks kept after the builds",
                "as idle",
            ],
        );
        let key = format!("release_after_{}", what.replace(' ', "_"));
        r.fact(
            &key,
            json!({"waited_ms": self.waited_ms, "release": self.release}),
        );
    }
}

/// Three rows for one process in one state: "{who} VmRSS, {state}",
/// "{who} RssAnon, {state}", "{who} PSS, {state}" (kB), with `targets` and
/// `notes` in that order.
fn mem_rows(
    r: &mut Report,
    who: &str,
    state: &str,
    m: &procfs::Mem,
    targets: [Target; 3],
    notes: [&str; 3],
) {
    for ((what, kb), (target, note)) in [("VmRSS", m.rss), ("RssAnon", m.anon), ("PSS", m.pss)]
        .into_iter()
        .zip(targets.into_iter().zip(notes))
    {
        r.add(
            &format!("{who} {what}, {state}"),
            "kB",
            vec![kb],
            target,
            note,
        );
    }
}

/// The master directory, ports and repository of the whole run.
/// The history is filled with builds queued this many at a time.
const FILL_BATCH: usize = 1000;

/// What `Bench::noop_builds` saw.
struct NoopRun {
    /// First hook sent → last hook acknowledged.
    queued: Duration,
    /// First hook sent → last build complete.
    done: Duration,
    /// Master CPU per build, ms.
    cpu: f64,
    requests: i64,
}

struct Bench {
    s: Setup,
    /// The worker started in phase 2, connected until the end.
    worker_pid: i32,
    db: PathBuf,
    /// The clone the bare job (the floor) runs in.
    bare: PathBuf,
    report: Report,
    commits: usize,
    /// `noop` hooks sent so far.
    noops: u64,
}

fn run(z: &Sizes, quick: bool, keep: bool) -> Result<Report> {
    let s = Setup::new(
        PASSING_TEST,
        &format!("{EXTRA_CFG}{}", flood::flood_cfg(z.flood_secs)),
    );
    let db = s.master.join("state.sqlite");
    let bare = s.tmp.path().join("bare");
    let mut b = Bench {
        bare,
        db,
        s,
        report: Report::default(),
        commits: 0,
        noops: 0,
        worker_pid: 0,
    };
    b.report.fact("loadavg_at_start", json!(loadavg()));
    b.report.fact(
        "machine",
        json!({
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        }),
    );
    b.bare_setup()?;
    // The user whose password the failed logins get wrong.
    add_user(&b.s.master, USER, PASSWORD);

    eprintln!("phase 1: start/stop cycles (no worker)");
    let (mut starts, mut stops) = (vec![], vec![]);
    for _ in 0..z.start_cycles {
        let (mut m, t) = b.start_master()?;
        starts.push(t);
        stops.push(stop(&mut m)?);
    }

    eprintln!("phase 2: idle master and worker");
    let (mut master, _) = b.start_master()?;
    let mut worker = b.s.start_worker_env(WORKER_NAME, WORKER_PW, DAEMON_ENV);
    b.s.wait_connected(WORKER_NAME);
    // Let start-up allocations settle before calling it idle.
    std::thread::sleep(Duration::from_millis(500));
    b.worker_pid = worker.pid();
    let (idle, worker_idle) = (procfs::mem(master.pid())?, procfs::mem(worker.pid())?);
    mem_rows(
        &mut b.report,
        "master",
        "idle",
        &idle,
        [Target::None, Target::AtMost(2048.0), Target::AtMost(6144.0)],
        [
            "the text that ran (binary and libraries, 64 kB read around each page executed), read-only data, RssAnon",
            "heap (config, SQLite schema and caches, connections), thread stacks as far as used",
            "VmRSS with libc's and the loader's pages shared with every other process that maps them",
        ],
    );
    mem_rows(
        &mut b.report,
        "worker",
        "idle",
        &worker_idle,
        [Target::None, Target::None, Target::AtMost(2048.0)],
        [
            "the text that ran, read-only data, RssAnon",
            "heap and stacks: config, the connection's buffers",
            "as the master's",
        ],
    );
    b.report
        .fact("master_threads_idle", json!(procfs::threads(master.pid())?));
    b.report
        .fact("worker_threads_idle", json!(procfs::threads(worker.pid())?));
    b.report.fact("master_smaps_idle", smaps(master.pid()));
    b.report.fact("worker_smaps_idle", smaps(worker.pid()));
    b.failed_logins(&master, 100)?;
    b.client_overhead()?;

    eprintln!("phase 3: {} hello-world builds vs. the bare job", z.builds);
    b.hello_builds(&master, &worker, z.builds)?;
    // Right after the last build, then once the master has gone idle and
    // given memory back (~1 s later).
    let mark = b.releases();
    let after300 = procfs::mem(master.pid())?;
    let idle300 = b.once_idle(&master, mark)?;

    eprintln!("phase 4: {} builds queued at once", z.noop_builds);
    b.noop_burst(&master, z.noop_builds)?;
    let mark = b.releases();
    let after_more = procfs::mem(master.pid())?;
    let idle_more = b.once_idle(&master, mark)?;
    for (n, m, note) in [
        (
            z.builds,
            &after300,
            "idle text + anonymous (SQLite page caches, 256 kB per connection, malloc arenas)",
        ),
        (
            z.builds + z.noop_builds,
            &after_more,
            "SQLite page caches filling to their cap",
        ),
    ] {
        b.report.add(
            &format!("master VmRSS after {n} builds"),
            "kB",
            vec![m.rss],
            Target::None,
            &format!("right after the last build: {note}"),
        );
        b.report.add(
            &format!("master RssAnon after {n} builds"),
            "kB",
            vec![m.anon],
            Target::None,
            "right after the last build: the part that could grow with builds",
        );
    }
    for (n, idle) in [(z.builds, &idle300), (z.builds + z.noop_builds, &idle_more)] {
        idle.report(&mut b.report, &format!("{n} builds"));
    }
    eprintln!(
        "phase 4b: a build writing 1 MB/s for {} s, {} live viewers",
        z.flood_secs,
        flood::VIEWERS
    );
    b.log_flood(&master, z.flood_secs)?;
    b.report
        .fact("master_smaps_after_builds", smaps(master.pid()));
    b.report.fact(
        "master_vmhwm_kb",
        json!(procfs::status_field(master.pid(), "VmHWM")?),
    );
    // The stop that matters: a master with a connected worker and history.
    let t = stop(&mut master)?;
    b.report.add(
        "stop with the worker connected, after the builds",
        "ms",
        vec![t],
        Target::AtMost(20.0),
        "closing the worker connection, joining threads",
    );

    eprintln!("phase 5: hook ingestion, then SIGKILL mid-stream");
    let (master, _) = b.start_master()?;
    b.ingest(master, z.ingest_clients, z.ingest_secs)?;
    // The master restarts on a database a SIGKILL left behind.
    let (mut master, t) = b.start_master()?;
    b.report.fact("start_after_sigkill_ms", json!(t));
    stop(&mut master)?;

    eprintln!(
        "phase 6: history of {} builds ({})",
        z.history,
        if quick {
            "synthetic rows"
        } else {
            "real noop builds"
        }
    );
    b.history(z.history, z.api_samples, !quick)?;

    let t = Instant::now();
    worker.signal(libc::SIGTERM);
    let st = worker.child.wait().context("waiting for the worker")?;
    ensure!(st.success(), "worker exited with {st}");
    b.report.fact("worker_stop_ms", json!(ms(t.elapsed())));

    b.report.add(
        "start → HTTP 200 (no worker)",
        "ms",
        starts,
        Target::AtMost(5.0),
        "exec and dynamic linking, config, writer connection (schema, WAL index), the recovery commit, 15 threads",
    );
    b.report.add(
        "stop, SIGTERM → exit (no worker)",
        "ms",
        stops,
        Target::AtMost(20.0),
        "joining threads",
    );
    let size = |p: &str| {
        std::fs::metadata(p)
            .map(|m| m.len() as f64)
            .unwrap_or(f64::NAN)
    };
    let (ms_, ws) = (size(MINIBOT), size(WORKER));
    b.report.fact("size_minibot_bytes", json!(ms_));
    b.report.fact("size_minibot_worker_bytes", json!(ws));
    b.report.add(
        "installed size (both binaries)",
        "kB",
        vec![(ms_ + ws) / 1024.0],
        Target::AtMost(8192.0),
        "SQLite, rustls + ring, config error paths, std; glibc is a shared library",
    );
    b.report.fact("loadavg_at_end", json!(loadavg()));
    if quick {
        b.report.fact(
            "note",
            json!("quick mode: fewer samples; use the full run for the docs"),
        );
    }
    if keep {
        let dir = b.s.tmp.keep();
        eprintln!("kept {}", dir.display());
    }
    Ok(b.report)
}

/// Other work on the machine skews every figure: say how busy it was.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn smaps(pid: i32) -> serde_json::Value {
    let keep = [
        "Rss",
        "Pss",
        "Pss_Anon",
        "Pss_File",
        "Anonymous",
        "Private_Dirty",
        "Shared_Clean",
    ];
    procfs::smaps_rollup(pid)
        .into_iter()
        .filter(|(k, _)| keep.contains(&k.as_str()))
        .map(|(k, v)| (k, json!(v)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// SIGTERM → the process has exited (waitpid returned), in ms.
fn stop(p: &mut Proc) -> Result<f64> {
    let t = Instant::now();
    p.signal(libc::SIGTERM);
    let st = p.child.wait().context("waiting for the master")?;
    let took = ms(t.elapsed());
    ensure!(st.success(), "master exited with {st} after SIGTERM");
    Ok(took)
}

/// Gitea's push headers for `body`, signed, with a unique delivery id.
fn hook_headers(body: &[u8], delivery: &str) -> [(String, String); 4] {
    [
        ("Content-Type".into(), "application/json".into()),
        ("X-Gitea-Event".into(), "push".into()),
        ("X-Gitea-Signature".into(), sign(SECRET, body)),
        ("X-Gitea-Delivery".into(), delivery.into()),
    ]
}

/// Posts one signed push; the change ids of a 200, or an error.
fn post_hook(c: &mut Conn, body: &[u8], delivery: &str) -> Result<Vec<i64>> {
    let h = hook_headers(body, delivery);
    let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (code, resp) = c.request("POST", "/change_hook/gitea", &h, body)?;
    ensure!(
        code == 200,
        "hook answered {code}: {}",
        String::from_utf8_lossy(&resp)
    );
    let v: serde_json::Value = serde_json::from_slice(&resp).context("hook reply")?;
    v["changes"]
        .as_array()
        .context("no changes in the hook reply")?
        .iter()
        .map(|x| x.as_i64().context("change id"))
        .collect()
}

fn open_ro(db: &Path) -> Result<Connection> {
    let c = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("opening {} read-only", db.display()))?;
    c.busy_timeout(Duration::from_secs(10))?;
    Ok(c)
}

fn builder_id(db: &Connection, name: &str) -> Result<i64> {
    db.query_row(
        "SELECT builderid FROM builders WHERE name = ?1",
        [name],
        |r| r.get(0),
    )
    .with_context(|| format!("builder {name} not in the database"))
}

fn max_id(db: &Connection, table: &str, col: &str) -> Result<i64> {
    Ok(db.query_row(
        &format!("SELECT COALESCE(MAX({col}), 0) FROM {table}"),
        [],
        |r| r.get(0),
    )?)
}

impl Bench {
    /// How many idle memory releases the master has recorded so far (its
    /// `status.json`): the next release is the one after this count.
    fn releases(&self) -> u64 {
        self.s
            .master_status()
            .map_or(0, |st| st.idle_memory_releases)
    }

    /// Waits until the master records a release after `mark` (counted when
    /// the last build was seen complete; the release comes
    /// `botmaster::IDLE_AFTER` after it, so it cannot be counted in the
    /// mark), then reads the master's and the worker's memory: what they
    /// hold once idle again.
    fn once_idle(&self, master: &Proc, mark: u64) -> Result<OnceIdle> {
        let t = Instant::now();
        let release = loop {
            if let Some(st) = self.s.master_status() {
                if let Some(last) = st.last_idle_memory_release {
                    if st.idle_memory_releases > mark {
                        break last;
                    }
                }
            }
            ensure!(
                t.elapsed() < Duration::from_secs(10),
                "the master did not release memory within 10 s of the last build (no release after the {mark}th in status.json)"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        Ok(OnceIdle {
            master: procfs::mem(master.pid())?,
            worker: procfs::mem(self.worker_pid)?,
            waited_ms: ms(t.elapsed()),
            release,
        })
    }

    /// Spawns `minibot start --nodaemon` and polls `GET /api/v2/builders`
    /// until it answers 200; returns the process and that time in ms.
    fn start_master(&self) -> Result<(Proc, f64)> {
        let t0 = Instant::now();
        let child = Command::new(MINIBOT)
            .args(["start", "--nodaemon"])
            .arg(&self.s.master)
            .envs(DAEMON_ENV.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning the master")?;
        let mut p = Proc {
            child,
            name: "master".into(),
        };
        // master.cfg says port = 0: the first start's ports come from its
        // addresses.json (and are pinned in master.cfg for the later ones,
        // which are timed as before).
        let mut c = self.s.known_ports().map(|(www, _)| Conn::new(www));
        loop {
            if c.is_none() && self.s.learn_ports(p.pid()).is_some() {
                c = Some(Conn::new(self.s.www()));
            }
            if let Some(Ok((200, _))) = c.as_mut().map(|c| c.get("/api/v2/builders")) {
                return Ok((p, ms(t0.elapsed())));
            }
            if let Some(st) = p.child.try_wait()? {
                bail!(
                    "the master exited with {st} before serving; see {}/master.log",
                    self.s.master.display()
                );
            }
            ensure!(
                t0.elapsed() < Duration::from_secs(30),
                "the master did not serve within 30 s"
            );
            // Connection refused comes back at once: spin, yielding the core.
            std::thread::yield_now();
        }
    }

    fn bare_setup(&mut self) -> Result<()> {
        std::fs::write(self.s.repo.join("data.txt"), "0\n")?;
        git(&self.s.repo, &["add", "data.txt"]);
        git(&self.s.repo, &["commit", "-q", "-m", "data"]);
        let url = format!("file://{}", self.s.repo.display());
        std::fs::create_dir_all(&self.bare)?;
        git(&self.bare, &["init", "-q"]);
        git(&self.bare, &["remote", "add", "origin", &url]);
        git(&self.bare, &["fetch", "-q", "origin", "master"]);
        Ok(())
    }

    /// A new commit on master (outside any timing); returns its sha.
    fn commit(&mut self) -> String {
        self.commits += 1;
        let _ = std::fs::write(self.s.repo.join("data.txt"), format!("{}\n", self.commits));
        git(
            &self.s.repo,
            &[
                "commit",
                "-q",
                "-a",
                "-m",
                &format!("bench {}", self.commits),
            ],
        );
        git(&self.s.repo, &["rev-parse", "HEAD"])
    }

    /// The job by hand: the commands the worker's incremental git step runs
    /// (`steps::run_git`), then the test, as one `sh` script, the way a
    /// person or a cron job would run them; returns ms. (Spawning each
    /// command from this process instead costs ~2 ms more per command here,
    /// which would flatter the CI.)
    fn bare_job(&self, sha: &str) -> Result<f64> {
        const SCRIPT: &str = r#"set -e
git config --get remote.origin.url >/dev/null
git fetch origin master
git rev-parse --verify --quiet "$1^{commit}" >/dev/null
git checkout -f --detach "$1"
/usr/bin/python3 test_hello.py"#;
        let t = Instant::now();
        let out = Command::new("/bin/sh")
            .args(["-c", SCRIPT, "sh", sha])
            .current_dir(&self.bare)
            .env("PATH", SYSTEM_PATH)
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(Stdio::null())
            .output()
            .context("running the bare job")?;
        let took = ms(t.elapsed());
        ensure!(
            out.status.success(),
            "the bare job failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(took)
    }

    /// `n` requests with HTTP Basic auth and a wrong password for a real
    /// user (`GET /api/v2/builders`, one at a time, as a guessing script
    /// sends them), then the master's memory once they are over. The login
    /// limits answer most of them 429 without a check (`auth::LoginLimits`);
    /// each check that does run maps Argon2's 19 MiB and unmaps it after.
    /// There is no release line to wait for (the botmaster releases after
    /// builds only): the figures are read 1 s after the last answer, when
    /// the requests' threads have ended.
    fn failed_logins(&mut self, master: &Proc, n: usize) -> Result<()> {
        use base64ct::{Base64, Encoding};
        let auth = format!(
            "Basic {}",
            Base64::encode_string(format!("{USER}:not-{PASSWORD}").as_bytes())
        );
        let mut c = Conn::new(self.s.www());
        let (mut refused, mut limited) = (0, 0);
        for _ in 0..n {
            let (code, _) =
                c.request("GET", "/api/v2/builders", &[("Authorization", &auth)], &[])?;
            match code {
                401 => refused += 1,
                429 => limited += 1,
                _ => bail!("a wrong password answered {code}"),
            }
        }
        drop(c);
        std::thread::sleep(Duration::from_secs(1));
        let m = procfs::mem(master.pid())?;
        mem_rows(
            &mut self.report,
            "master",
            &format!("after {n} failed logins, once idle"),
            &m,
            [Target::None; 3],
            [
                "as idle, plus the text of the password check",
                "as idle: Argon2's memory is unmapped after each check; the limits' counters are small",
                "as VmRSS",
            ],
        );
        self.report.fact(
            "failed_logins",
            json!({"sent": n, "answered_401": refused, "answered_429": limited}),
        );
        Ok(())
    }

    /// How much of a request's time is the client: the same GET with our
    /// raw keep-alive socket and with ureq (a dependency already).
    fn client_overhead(&mut self) -> Result<()> {
        let path = "/api/v2/builders";
        let mut c = Conn::new(self.s.www());
        let mut raw = vec![];
        for _ in 0..200 {
            let t = Instant::now();
            let (code, _) = c.get(path)?;
            ensure!(code == 200);
            raw.push(ms(t.elapsed()));
        }
        let agent = ureq::Agent::new_with_defaults();
        let url = self.s.url(path);
        let mut ur = vec![];
        for _ in 0..200 {
            let t = Instant::now();
            let body = agent.get(&url).call()?.body_mut().read_to_string()?;
            ensure!(!body.is_empty());
            ur.push(ms(t.elapsed()));
        }
        self.report.fact(
            "client_get_builders_p50_ms",
            json!({"raw_socket": percentile(&raw, 50.0), "ureq": percentile(&ur, 50.0)}),
        );
        Ok(())
    }

    /// Phase 3: `n` rounds of (bare job, same job through a hook).
    fn hello_builds(&mut self, master: &Proc, worker: &Proc, n: usize) -> Result<()> {
        let db = open_ro(&self.db)?;
        let builder = builder_id(&db, "runtests")?;
        let mut last = max_id(&db, "builds", "buildid")?;
        let mut conn = Conn::new(self.s.www());
        let (mut bare, mut ack, mut started, mut done, mut over) =
            (vec![], vec![], vec![], vec![], vec![]);
        let mut poll = db.prepare(
            "SELECT buildid, complete_at IS NOT NULL, results FROM builds
             WHERE buildid > ?1 AND builderid = ?2 ORDER BY buildid LIMIT 1",
        )?;
        // One warm-up round: the worker's first checkout is a fresh clone.
        let (mcpu0, wcpu0) = (procfs::cpu_ms(master.pid())?, procfs::cpu_ms(worker.pid())?);
        let mut cpu_start = (mcpu0, wcpu0);
        for i in 0..=n {
            let sha = self.commit();
            let b = self.bare_job(&sha)?;
            let body = push_payload(&sha, "master", &format!("bench {i}"));
            let delivery = format!("hello-{i}-{sha}");
            let t0 = Instant::now();
            let ids = post_hook(&mut conn, &body, &delivery)?;
            let t_ack = t0.elapsed();
            ensure!(ids.len() == 1, "one change per push expected, got {ids:?}");
            let mut t_start = None;
            let (id, result) = loop {
                let row: Option<(i64, bool, Option<i64>)> = poll
                    .query_row([last, builder], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()?;
                if let Some((id, complete, res)) = row {
                    t_start.get_or_insert_with(|| t0.elapsed());
                    if complete {
                        break (id, res);
                    }
                }
                ensure!(
                    t0.elapsed() < Duration::from_secs(60),
                    "build {i} did not complete within 60 s"
                );
                std::thread::sleep(Duration::from_micros(100));
            };
            let t_done = t0.elapsed();
            ensure!(result == Some(0), "build {id} ended with result {result:?}");
            last = id;
            if i == 0 {
                cpu_start = (procfs::cpu_ms(master.pid())?, procfs::cpu_ms(worker.pid())?);
                continue;
            }
            bare.push(b);
            ack.push(ms(t_ack));
            started.push(ms(t_start.unwrap_or(t_done)));
            done.push(ms(t_done));
            over.push(ms(t_done) - b);
        }
        let mcpu = (procfs::cpu_ms(master.pid())? - cpu_start.0) / n as f64;
        let wcpu = (procfs::cpu_ms(worker.pid())? - cpu_start.1) / n as f64;
        let r = &mut self.report;
        r.add(
            "bare job by hand (the floor)",
            "ms",
            bare,
            Target::None,
            "git fetch/checkout + python3, one sh script",
        );
        r.add(
            "Gitea push hook answered",
            "ms",
            ack,
            Target::AtMost(1.0),
            "HTTP + HMAC + JSON + one group commit (no fsync)",
        );
        r.add(
            "hook → build started",
            "ms",
            started,
            Target::AtMost(5.0),
            "3 commits: hook, scheduler, botmaster claim",
        );
        r.add(
            "hook → build complete",
            "ms",
            done,
            Target::None,
            "bare job + overhead",
        );
        r.add(
            "hook → complete − bare job",
            "ms",
            over,
            Target::AtMost(10.0),
            "worker spawn/reap per process, 2 step round trips, commits",
        );
        r.add(
            "master CPU per build (hello-world)",
            "ms",
            vec![mcpu],
            Target::AtMost(3.0),
            "5 commits per build, thread hand-offs, a log file per step, WAL writes",
        );
        r.fact("worker_cpu_per_build_ms", json!(wcpu));
        Ok(())
    }

    /// `n` hooks at once for the `noop` builder, from 8 threads; waits for
    /// the builds and checks that every request ran exactly once.
    fn noop_builds(&mut self, master: &Proc, n: usize) -> Result<NoopRun> {
        let db = open_ro(&self.db)?;
        let builder = builder_id(&db, "noop")?;
        let last_build = max_id(&db, "builds", "buildid")?;
        let last_req = max_id(&db, "buildrequests", "buildrequestid")?;
        let cpu0 = procfs::cpu_ms(master.pid())?;
        let t0 = Instant::now();
        let threads = 8;
        let www = self.s.www();
        // Distinct shas and delivery ids across calls (a repeated delivery
        // id would be answered with the old changes).
        let base = self.noops;
        self.noops += n as u64;
        let ids: Vec<i64> = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..threads)
                .map(|t| {
                    sc.spawn(move || -> Result<Vec<i64>> {
                        let mut c = Conn::new(www);
                        let mut ids = vec![];
                        for k in (t..n).step_by(threads) {
                            let sha = format!("{:040x}", 0xb0b0_0000_u64 + base + k as u64);
                            let body = push_payload(&sha, "noop", &format!("noop {k}"));
                            ids.extend(post_hook(&mut c, &body, &format!("noop-{k}-{sha}"))?);
                        }
                        Ok(ids)
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| {
                    h.join()
                        .map_err(|_| anyhow::anyhow!("client thread panicked"))?
                })
                .collect::<Result<Vec<Vec<i64>>>>()
                .map(|v| v.concat())
        })?;
        let queued = t0.elapsed();
        ensure!(
            ids.len() == n,
            "{} changes acknowledged, {n} sent",
            ids.len()
        );
        let done = loop {
            let c: i64 = db.query_row(
                "SELECT COUNT(*) FROM builds WHERE builderid = ?1 AND buildid > ?2 AND complete_at IS NOT NULL",
                [builder, last_build],
                |r| r.get(0),
            )?;
            if c as usize >= n {
                break t0.elapsed();
            }
            ensure!(
                t0.elapsed() < Duration::from_secs(120),
                "only {c} of {n} builds completed in 120 s"
            );
            std::thread::sleep(Duration::from_millis(1));
        };
        let cpu = (procfs::cpu_ms(master.pid())? - cpu0) / n as f64;
        // Give a duplicate build (if any) time to show up before checking.
        std::thread::sleep(Duration::from_millis(200));
        let (reqs, complete_ok): (i64, i64) = db.query_row(
            "SELECT COUNT(*), COALESCE(SUM(complete = 1 AND results = 0), 0) FROM buildrequests
             WHERE builderid = ?1 AND buildrequestid > ?2",
            [builder, last_req],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        ensure!(reqs as usize == n, "{reqs} build requests for {n} changes");
        ensure!(
            complete_ok as usize == n,
            "{complete_ok} of {n} requests complete and successful"
        );
        let bad: i64 = db.query_row(
            "SELECT COUNT(*) FROM buildrequests r WHERE r.builderid = ?1 AND r.buildrequestid > ?2
             AND (SELECT COUNT(*) FROM builds b WHERE b.buildrequestid = r.buildrequestid) != 1",
            [builder, last_req],
            |r| r.get(0),
        )?;
        ensure!(bad == 0, "{bad} build requests did not run exactly once");
        let mut st = db.prepare(
            "SELECT COUNT(*) FROM buildset_changes bc JOIN buildrequests r ON r.buildsetid = bc.buildsetid
             WHERE bc.changeid = ?1 AND r.builderid = ?2",
        )?;
        for id in &ids {
            let c: i64 = st.query_row([*id, builder], |r| r.get(0))?;
            ensure!(c == 1, "change {id} has {c} build requests");
        }
        Ok(NoopRun {
            queued,
            done,
            cpu,
            requests: reqs,
        })
    }

    /// Phase 4: 200 builds queued at once.
    fn noop_burst(&mut self, master: &Proc, n: usize) -> Result<()> {
        let NoopRun {
            queued,
            done,
            cpu,
            requests: reqs,
        } = self.noop_builds(master, n)?;
        let r = &mut self.report;
        r.fact("noop_all_hooks_acked_ms", json!(ms(queued)));
        r.add(
            &format!("{n} builds queued at once, 1 worker"),
            "builds/s",
            vec![n as f64 / done.as_secs_f64()],
            Target::AtLeast(18.0),
            "serial on one worker: round trips + commits + fork/exec of `true`",
        );
        r.add(
            "master CPU per build (noop)",
            "ms",
            vec![cpu],
            Target::AtMost(3.0),
            "includes the hook",
        );
        r.fact(
            "noop_exactly_once",
            json!({"requests": reqs, "each_ran_once": true}),
        );
        Ok(())
    }

    /// Phase 5: `clients` threads post distinct signed hooks (branch
    /// `ingest`: no scheduler builds it) for `secs`; then SIGKILL. Every
    /// acknowledged change must be in the database afterwards.
    fn ingest(&mut self, mut master: Proc, clients: usize, secs: f64) -> Result<()> {
        const MARK: &str = "feedfacefeedfacefeedfacefeedfacefeedface";
        let template = String::from_utf8(push_payload(MARK, "ingest", "ingest"))?;
        let stop = AtomicBool::new(false);
        let www = self.s.www();
        let run = format!("{:x}", std::process::id());
        let self_cpu0 = procfs::self_cpu_ms();
        let m_cpu0 = procfs::cpu_ms(master.pid())?;
        let t0 = Instant::now();
        type Acks = (Vec<(String, Vec<i64>)>, Vec<f64>, usize);
        let (results, elapsed, m_cpu): (Vec<Acks>, Duration, f64) =
            std::thread::scope(|sc| -> Result<_> {
                let hs: Vec<_> = (0..clients)
                    .map(|t| {
                        let (stop, template, run) = (&stop, &template, &run);
                        sc.spawn(move || {
                            let mut c = Conn::new(www);
                            let (mut acks, mut lat, mut errors) = (vec![], vec![], 0usize);
                            let mut k = 0u64;
                            while !stop.load(Ordering::Relaxed) {
                                k += 1;
                                let sha = format!("{t:08x}{k:032x}");
                                let body = template.replace(MARK, &sha);
                                let delivery = format!("ingest-{run}-{t}-{k}");
                                let t = Instant::now();
                                match post_hook(&mut c, body.as_bytes(), &delivery) {
                                    Ok(ids) => {
                                        lat.push(ms(t.elapsed()));
                                        acks.push((delivery, ids));
                                    }
                                    // After the SIGKILL every request fails.
                                    Err(_) => errors += 1,
                                }
                            }
                            (acks, lat, errors)
                        })
                    })
                    .collect();
                std::thread::sleep(Duration::from_secs_f64(secs));
                // Kill first, then stop the clients: hooks are in flight.
                let m_cpu = procfs::cpu_ms(master.pid())? - m_cpu0;
                let elapsed = t0.elapsed();
                master.signal(libc::SIGKILL);
                let _ = master.child.wait();
                stop.store(true, Ordering::Relaxed);
                let res = hs
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .map_err(|_| anyhow::anyhow!("client thread panicked"))
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok((res, elapsed, m_cpu))
            })?;
        let client_cpu = procfs::self_cpu_ms() - self_cpu0;
        let mut lat = vec![];
        let mut acked = vec![];
        for (a, l, _) in results {
            acked.extend(a);
            lat.extend(l);
        }
        // Every acknowledged change must be there, from the right delivery.
        let db = open_ro(&self.db)?;
        let mut st = db.prepare("SELECT delivery FROM changes WHERE changeid = ?1")?;
        let mut changes = 0usize;
        for (delivery, ids) in &acked {
            for id in ids {
                let d: Option<String> =
                    st.query_row([id], |r| r.get(0))
                        .optional()?
                        .with_context(|| {
                            format!("acknowledged change {id} ({delivery}) is not in the database")
                        })?;
                ensure!(
                    d.as_deref() == Some(delivery.as_str()),
                    "change {id} has delivery {d:?}, expected {delivery}"
                );
                changes += 1;
            }
        }
        let in_db: i64 = db.query_row(
            "SELECT COUNT(*) FROM changes WHERE delivery LIKE ?1",
            [format!("ingest-{run}-%")],
            |r| r.get(0),
        )?;
        let n = acked.len() as f64;
        let r = &mut self.report;
        r.add(
            &format!("hook ingestion, {clients} concurrent clients"),
            "hooks/s",
            vec![n / elapsed.as_secs_f64()],
            Target::AtLeast(5000.0),
            "CPU: 2 cores shared by master and the 16 clients",
        );
        r.add(
            &format!("hook answered under {clients}-client load"),
            "ms",
            lat,
            Target::None,
            "CPU contention, queueing behind the writer",
        );
        r.fact(
            "ingest",
            json!({
                "acknowledged_hooks": acked.len(),
                "acknowledged_changes_found_after_sigkill": changes,
                "committed_not_acknowledged": in_db - changes as i64,
                "seconds": elapsed.as_secs_f64(),
                "master_cpu_per_hook_ms": m_cpu / n,
                "client_cpu_per_hook_ms": client_cpu / n,
            }),
        );
        Ok(())
    }

    /// Real history: `noop` builds through hooks, in batches of 1,000,
    /// until the database holds `total` builds; then the master's RSS.
    fn fill_with_builds(&mut self, total: i64) -> Result<()> {
        let (mut master, _) = self.start_master()?;
        // The worker reconnects with backoff after the restarts above.
        self.s.wait_connected(WORKER_NAME);
        let have: i64 =
            open_ro(&self.db)?.query_row("SELECT COUNT(*) FROM builds", [], |r| r.get(0))?;
        let t = Instant::now();
        let mut left = (total - have).max(0) as usize;
        let need = left;
        let (mut rates, mut cpus) = (vec![], vec![]);
        while left > 0 {
            let k = left.min(FILL_BATCH);
            let run = self.noop_builds(&master, k)?;
            if k == FILL_BATCH {
                rates.push(k as f64 / run.done.as_secs_f64());
                cpus.push(run.cpu);
            }
            left -= k;
        }
        let secs = t.elapsed().as_secs_f64();
        let mark = self.releases();
        let after = procfs::mem(master.pid())?;
        let idle = self.once_idle(&master, mark)?;
        let r = &mut self.report;
        r.fact(
            "history_real_builds",
            json!({"added": need, "seconds": secs, "batch": FILL_BATCH}),
        );
        r.add(
            &format!("{FILL_BATCH} builds queued at once (filling the history), 1 worker"),
            "builds/s",
            rates,
            Target::AtLeast(18.0),
            "serial on one worker; the botmaster loads 100 queued requests per free builder",
        );
        r.add(
            &format!("master CPU per build, {FILL_BATCH} queued"),
            "ms",
            cpus,
            Target::AtMost(3.0),
            "half of it in the botmaster thread (perf)",
        );
        r.add(
            &format!("master VmRSS after {total} builds"),
            "kB",
            vec![after.rss],
            Target::None,
            "right after the last build: idle text + anonymous high-water mark of 1,000-deep queues",
        );
        r.add(
            &format!("master RssAnon after {total} builds"),
            "kB",
            vec![after.anon],
            Target::None,
            "right after the last build: reached with the first 1,000-deep queue, then flat",
        );
        idle.report(r, &format!("{total} builds"));
        stop(&mut master)?;
        Ok(())
    }

    /// Phase 6: a history of `total` builds (real ones, or synthetic rows
    /// inserted into the stopped master's database), then start the master
    /// and time the API and the home page.
    fn history(&mut self, total: i64, samples: usize, real: bool) -> Result<()> {
        // `hist` names the rows: say when the history is synthetic.
        let hist = if real {
            self.fill_with_builds(total)?;
            format!("{total} builds")
        } else {
            let added = insert_builds(&self.db, total)?;
            self.report.fact("synthetic_builds_inserted", json!(added));
            format!("{total} builds (synthetic)")
        };
        // The first start after the fill pays for what it left in the page
        // cache; the second is the steady state.
        let (mut master, first) = self.start_master()?;
        stop(&mut master)?;
        let (mut master, t) = self.start_master()?;
        self.report
            .fact("start_first_after_history_ms", json!(first));
        self.report.add(
            &format!("start → HTTP 200 with {hist}"),
            "ms",
            vec![t],
            Target::None,
            "as above; history is not loaded at start",
        );
        std::thread::sleep(Duration::from_millis(500));
        let idle = procfs::mem(master.pid())?;
        let www = self.s.www();
        let mut keep = Conn::new(www);
        // `fresh`: a new connection per request, as curl makes; otherwise
        // one keep-alive connection, as a browser or a script keeps.
        let mut time =
            |path: &str, fresh: bool, check: &dyn Fn(&[u8]) -> Result<()>| -> Result<Vec<f64>> {
                let mut v = vec![];
                for i in 0..samples {
                    let mut new_conn;
                    let c = if fresh {
                        new_conn = Conn::new(www);
                        &mut new_conn
                    } else {
                        &mut keep
                    };
                    let t = Instant::now();
                    let (code, body) = c.get(path)?;
                    v.push(ms(t.elapsed()));
                    ensure!(code == 200, "GET {path}: {code}");
                    if i == 0 {
                        check(&body)?;
                    }
                }
                Ok(v)
            };
        let api_path = "/api/v2/builds?limit=50&order=-buildid";
        let api_ok = |body: &[u8]| {
            let v: serde_json::Value = serde_json::from_slice(body)?;
            let n = v["builds"].as_array().map_or(0, |a| a.len());
            ensure!(n == 50, "{n} builds in the answer");
            ensure!(
                v["meta"]["total"].as_i64() >= Some(total),
                "total {}",
                v["meta"]["total"]
            );
            Ok(())
        };
        let home_ok = |body: &[u8]| {
            ensure!(
                String::from_utf8_lossy(body).contains("runtests"),
                "home page without builders"
            );
            Ok(())
        };
        let api = time(api_path, false, &api_ok)?;
        let api_fresh = time(api_path, true, &api_ok)?;
        let home = time("/", false, &home_ok)?;
        let home_fresh = time("/", true, &home_ok)?;
        let after = procfs::mem(master.pid())?;
        let r = &mut self.report;
        r.add(
            &format!("GET /api/v2/builds?limit=50&order=-buildid, {hist}"),
            "ms",
            api,
            Target::AtMost(1.0),
            "SQL + JSON on a keep-alive connection (TCP_NODELAY)",
        );
        r.add(
            &format!("GET /api/v2/builds?limit=50&order=-buildid, {hist}, new connection each"),
            "ms",
            api_fresh,
            Target::AtMost(1.0),
            "SQL + JSON + connect",
        );
        r.add(
            &format!("GET / (home page), {hist}"),
            "ms",
            home,
            Target::None,
            "as above",
        );
        r.add(
            &format!("GET / (home page), {hist}, new connection each"),
            "ms",
            home_fresh,
            Target::None,
            "SQL + HTML + connect",
        );
        mem_rows(
            r,
            "master",
            &format!("idle with {hist}"),
            &idle,
            [Target::None; 3],
            [
                "as without history: nothing is loaded",
                "as without history",
                "as without history",
            ],
        );
        mem_rows(
            r,
            "master",
            &format!("after {} API + page requests, {hist}", 4 * samples),
            &after,
            [Target::None; 3],
            [
                "page caches of the pooled reader connections (one when requests come one at a time)",
                "page caches fill to their cap, then stay",
                "as VmRSS",
            ],
        );
        r.fact("master_smaps_history", smaps(master.pid()));
        let t = stop(&mut master)?;
        r.fact("stop_with_history_ms", json!(t));
        Ok(())
    }
}

/// SYNTHETIC history: copies of the latest real `noop` build (its
/// buildset, change, request, step and log rows) inserted straight into a
/// STOPPED master's database until it holds `total` builds. Real builds
/// would take ~10 minutes at the target rate; the API and RSS figures only
/// depend on the rows. Returns how many were added.
fn insert_builds(db: &Path, total: i64) -> Result<i64> {
    let mut c = Connection::open(db).with_context(|| format!("opening {}", db.display()))?;
    let have: i64 = c.query_row("SELECT COUNT(*) FROM builds", [], |r| r.get(0))?;
    let need = total - have;
    if need <= 0 {
        return Ok(0);
    }
    let tx = c.transaction()?;
    let (tmpl, bsid, chid, stepid): (i64, i64, i64, i64) = tx
        .query_row(
            "SELECT b.buildid, r.buildsetid, bc.changeid, s.stepid FROM builds b
             JOIN buildrequests r ON r.buildrequestid = b.buildrequestid
             JOIN buildset_changes bc ON bc.buildsetid = r.buildsetid
             JOIN steps s ON s.buildid = b.buildid
             JOIN builders bl ON bl.builderid = b.builderid
             WHERE bl.name = 'noop' ORDER BY b.buildid DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .context("no real noop build to copy")?;
    let reqid: i64 = tx.query_row(
        "SELECT buildrequestid FROM builds WHERE buildid = ?1",
        [tmpl],
        |r| r.get(0),
    )?;
    {
        let mut change = tx.prepare(
            "INSERT INTO changes(author, committer, comments, branch, revision, repository, project,
               category, codebase, revlink, when_timestamp, files, properties, delivery, scheduled)
             SELECT author, committer, comments, branch, revision, repository, project, category,
               codebase, revlink, when_timestamp, files, properties, NULL, 1 FROM changes WHERE changeid = ?1",
        )?;
        let mut bset = tx.prepare(
            "INSERT INTO buildsets(reason, scheduler, submitted_at, complete, complete_at, results,
               branch, revision, repository, project, codebase, properties)
             SELECT reason, scheduler, submitted_at, complete, complete_at, results, branch, revision,
               repository, project, codebase, properties FROM buildsets WHERE buildsetid = ?1",
        )?;
        let mut link =
            tx.prepare("INSERT INTO buildset_changes(buildsetid, changeid) VALUES (?1, ?2)")?;
        let mut req = tx.prepare(
            "INSERT INTO buildrequests(buildsetid, builderid, priority, claimed_at, complete, results,
               submitted_at, complete_at, waited_for)
             SELECT ?2, builderid, priority, claimed_at, complete, results, submitted_at, complete_at,
               waited_for FROM buildrequests WHERE buildrequestid = ?1",
        )?;
        let mut build = tx.prepare(
            "INSERT INTO builds(number, builderid, buildrequestid, workerid, masterid, started_at,
               complete_at, state_string, results, properties)
             SELECT (SELECT MAX(number) + 1 FROM builds WHERE builderid = b.builderid), builderid, ?2,
               workerid, masterid, started_at, complete_at, state_string, results, properties
             FROM builds b WHERE buildid = ?1",
        )?;
        let mut step = tx.prepare(
            "INSERT INTO steps(buildid, number, name, started_at, complete_at, state_string, results, hidden, urls)
             SELECT ?2, number, name, started_at, complete_at, state_string, results, hidden, urls
             FROM steps WHERE buildid = ?1",
        )?;
        let mut log = tx.prepare(
            "INSERT INTO logs(stepid, name, slug, complete, num_lines, type, size)
             SELECT ?2, name, slug, complete, num_lines, type, size FROM logs WHERE stepid = ?1",
        )?;
        for _ in 0..need {
            change.execute([chid])?;
            let ch = tx.last_insert_rowid();
            bset.execute([bsid])?;
            let bs = tx.last_insert_rowid();
            link.execute([bs, ch])?;
            req.execute([reqid, bs])?;
            let rq = tx.last_insert_rowid();
            build.execute([tmpl, rq])?;
            let b = tx.last_insert_rowid();
            step.execute([tmpl, b])?;
            let s = tx.last_insert_rowid();
            log.execute([stepid, s])?;
        }
    }
    tx.commit()?;
    Ok(need)
}
