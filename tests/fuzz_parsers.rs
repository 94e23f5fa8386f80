//! A stable-toolchain fuzzer for the three parsers that read input from
//! outside: the change-hook dialects (`dialects::{gitea,github,base}::handle`,
//! bytes from anyone who can reach the web port), `config::parse` (the
//! operator's `master.cfg`) and `protocol::read_frame` (bytes from anyone
//! who can reach the worker port). No libFuzzer (that needs nightly): a
//! seeded xorshift mutator over the repository's fixtures plus randomly
//! built structured inputs, every call inside `catch_unwind`.
//!
//! Reproducible: each run prints its seed; `FUZZ_SEED=<n>` replays it. The
//! short tests run on every `cargo test`; the `#[ignore]`d long ones run for
//! `FUZZ_SECS` seconds each (`scripts/fuzz`). A panic prints the seed, the
//! iteration and the input, and writes the input under
//! `target/fuzz-crashes/` so it can become a regression test.

use minibot::config::{BaseDialect, GiteaDialect};
use minibot::protocol::{self, FromWorker, StepSpec, ToWorker};
use minibot::web::dialects::{self, HookRequest};
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

/// xorshift64*: tiny, seeded, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

/// Byte strings that tend to break parsers: JSON and TOML syntax, escapes,
/// huge numbers, invalid UTF-8, shell syntax, path traversal.
const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b"\\",
    b"\\u",
    b"\\ud800",
    b":",
    b",",
    b"null",
    b"true",
    b"-1",
    b"0",
    b"1e999",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"\xff\xfe",
    b"\xc3",
    b"\x00",
    b"\n",
    b"=",
    b"[[",
    b"]]",
    b"'''",
    b"\"\"\"",
    b"$(id)",
    b"`id`",
    b";rm -rf /;",
    b"../../",
    b"refs/heads/",
    b"refs/tags/",
    b"%(prop:branch)s",
    b"%(",
];

/// One random mutation of `data` (in place); `other` is a second corpus
/// entry for splicing.
fn mutate(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8]) {
    let len = data.len();
    match rng.below(9) {
        0 if len > 0 => {
            let i = rng.below(len);
            data[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            data[i] = *rng.pick(&[0u8, 0x7f, 0x80, 0xff, b'"', b'{', b'[', b'\\']);
        }
        2 => {
            let i = rng.below(len + 1);
            let t = rng.pick(TOKENS);
            data.splice(i..i, t.iter().copied());
        }
        3 if len > 0 => {
            let i = rng.below(len);
            let n = rng.below((len - i).min(64) + 1);
            data.drain(i..i + n);
        }
        4 if len > 0 => {
            let i = rng.below(len);
            let n = rng.below((len - i).min(256) + 1);
            let chunk = data[i..i + n].to_vec();
            let j = rng.below(len + 1);
            data.splice(j..j, chunk);
        }
        5 => data.truncate(rng.below(len + 1)),
        6 if !other.is_empty() => {
            // Splice: our head, the other's tail.
            let i = rng.below(len + 1);
            let j = rng.below(other.len());
            data.truncate(i);
            data.extend_from_slice(&other[j..]);
        }
        7 => {
            // Deep nesting at a random place.
            let i = rng.below(len + 1);
            let depth = 1 + rng.below(3000);
            let open = if rng.chance(2) { b'[' } else { b'{' };
            data.splice(i..i, std::iter::repeat_n(open, depth));
        }
        _ => {
            let i = rng.below(len + 1);
            let n = rng.below(16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            data.splice(i..i, bytes);
        }
    }
}

/// A random JSON value, biased toward the keys the hook parsers look up.
fn random_json(rng: &mut Rng, depth: usize) -> serde_json::Value {
    use serde_json::Value;
    const KEYS: &[&str] = &[
        "ref",
        "before",
        "after",
        "commits",
        "head_commit",
        "repository",
        "pusher",
        "sender",
        "id",
        "message",
        "timestamp",
        "author",
        "committer",
        "name",
        "email",
        "username",
        "added",
        "removed",
        "modified",
        "url",
        "html_url",
        "clone_url",
        "ssh_url",
        "full_name",
        "owner",
        "action",
        "number",
        "pull_request",
        "head",
        "base",
        "sha",
        "label",
        "repo",
        "title",
        "body",
        "mergeable",
        "ref_type",
        "compare_url",
        "total_commits",
        "branch",
        "revision",
        "project",
        "comments",
        "category",
        "when_timestamp",
        "files",
        "properties",
        "codebase",
    ];
    let leaf = depth == 0 || rng.chance(3);
    if leaf {
        return match rng.below(7) {
            0 => Value::Null,
            1 => Value::Bool(rng.chance(2)),
            2 => (rng.next() as i64).into(),
            3 => (rng.below(100) as i64).into(),
            4 => serde_json::Number::from_f64((rng.next() as f64) / 7.0)
                .map_or(Value::Null, Value::Number),
            5 => {
                let t = rng.pick(TOKENS);
                String::from_utf8_lossy(t).into_owned().into()
            }
            _ => rng.pick(KEYS).to_string().into(),
        };
    }
    if rng.chance(3) {
        let n = rng.below(4);
        Value::Array((0..n).map(|_| random_json(rng, depth - 1)).collect())
    } else {
        let n = rng.below(8);
        let mut m = serde_json::Map::new();
        for _ in 0..n {
            m.insert(rng.pick(KEYS).to_string(), random_json(rng, depth - 1));
        }
        Value::Object(m)
    }
}

fn fixture_dir() -> std::path::PathBuf {
    crate::common::fixture("gitea")
}

/// The Gitea payload fixtures with the event header each is sent with.
fn hook_corpus() -> Vec<(String, Vec<u8>)> {
    let headers: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture_dir().join("headers.json")).unwrap())
            .unwrap();
    let mut out = vec![];
    for (name, h) in headers["files"].as_object().unwrap() {
        let body = std::fs::read(fixture_dir().join(name)).unwrap();
        let event = h["X-Gitea-Event"].as_str().unwrap_or("push").to_string();
        out.push((event, body));
    }
    out.sort();
    out
}

/// `master.cfg` texts: the sample and a few small ones like the tests'.
fn config_corpus() -> Vec<Vec<u8>> {
    let small = r#"
title = "t"
buildbot_url = "http://localhost:8010/"
[www]
port = 8010
anonymous = "read"
[www.change_hook_dialects.gitea]
secret = "s"
only_include_push_commit = true
[www.change_hook_dialects.base]
secret = "b"
[protocols.worker]
port = 9989
keepalive = 2
[[workers]]
name = "w"
password = "p"
max_builds = 2
[[schedulers]]
name = "any"
type = "any_branch"
branch_regex = "^(main|rel-.*)$"
tree_stable_timer = 3
builders = ["b"]
[[schedulers]]
name = "night"
type = "nightly"
hour = 3
minute = 0
builders = ["b"]
[[schedulers]]
name = "p"
type = "periodic"
period = 60
builders = ["b"]
[[builders]]
name = "b"
workers = ["w"]
[[builders.steps]]
type = "git"
repourl = "file:///tmp/r"
mode = "full"
[[builders.steps]]
type = "shell"
command = "echo %(prop:branch)s"
env = { A = "1" }
timeout = 5
[[reporters]]
type = "gitea_status"
base_url = "https://git.example.org"
token = "t"
[janitor]
build_horizon_days = 3
"#;
    vec![
        minibot::config::SAMPLE.as_bytes().to_vec(),
        small.as_bytes().to_vec(),
    ]
}

/// Valid frames of every message kind, for the protocol fuzzer to mutate.
fn frame_corpus() -> Vec<Vec<u8>> {
    let mut env = BTreeMap::new();
    env.insert("MINIBOT_BRANCH".to_string(), "$(id)".to_string());
    let to = [
        ToWorker::Hello {
            protocol: 1,
            nonce: "abc".into(),
        },
        ToWorker::Welcome {
            proof: "00ff".into(),
            keepalive: 2,
        },
        ToWorker::Refused {
            reason: "no".into(),
        },
        ToWorker::RunStep {
            build_id: 7,
            step: 1,
            builder_dir: "runtests".into(),
            spec: StepSpec::Shell {
                argv: vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    "echo ${MINIBOT_BRANCH}".into(),
                ],
                env,
                workdir: String::new(),
                timeout: 10,
            },
        },
        ToWorker::RunStep {
            build_id: 7,
            step: 0,
            builder_dir: "runtests".into(),
            spec: StepSpec::Git {
                repourl: "file:///r".into(),
                branch: Some("master".into()),
                revision: None,
                mode: "full".into(),
                pr_number: Some(3),
                timeout: 10,
            },
        },
        ToWorker::Interrupt {
            build_id: 7,
            reason: "stop".into(),
        },
        ToWorker::Ping,
    ];
    let from = [
        FromWorker::Auth {
            protocol: 1,
            name: "w".into(),
            nonce: "n".into(),
            proof: "p".into(),
            info: BTreeMap::new(),
        },
        FromWorker::Log {
            build_id: 7,
            step: 1,
            stream: "o".into(),
            data: "line\n".into(),
        },
        FromWorker::StepDone {
            build_id: 7,
            step: 1,
            exit_code: Some(0),
            interrupted: false,
            timed_out: false,
            reason: None,
        },
        FromWorker::Pong,
    ];
    let mut out: Vec<Vec<u8>> = to
        .iter()
        .map(|m| protocol::encode_frame(m).unwrap())
        .collect();
    out.extend(from.iter().map(|m| protocol::encode_frame(m).unwrap()));
    // A stream of several frames back to back.
    let joined: Vec<u8> = out.concat();
    out.push(joined);
    out
}

/// Runs `one` on inputs until `budget` ends; panics (after saving the
/// input) if any call panicked.
fn fuzz_loop(target: &str, seed: u64, budget: Budget, mut one: impl FnMut(&mut Rng) -> Vec<u8>) {
    // The default hook prints every caught panic; keep the output to ours.
    // The hook is global, so the fuzz tests take turns (else one could
    // restore another's silent hook and lose a failure message).
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut rng = Rng::new(seed);
    let start = Instant::now();
    let mut n = 0u64;
    let mut crash = None;
    while budget.more(n, start) {
        // Each iteration draws from its own seed so a crash replays alone.
        let iter_seed = rng.next();
        let mut r = Rng::new(iter_seed);
        let mut input = vec![];
        let res = catch_unwind(AssertUnwindSafe(|| {
            input = one(&mut r);
        }));
        n += 1;
        if let Err(e) = res {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            crash = Some((iter_seed, msg));
            break;
        }
    }
    std::panic::set_hook(prev);
    eprintln!(
        "fuzz {target}: seed {seed}, {n} inputs in {:.1} s, {}",
        start.elapsed().as_secs_f64(),
        if crash.is_some() { "CRASH" } else { "no panic" }
    );
    if let Some((iter_seed, msg)) = crash {
        // Replay the crashing iteration to get its input back.
        let mut r = Rng::new(iter_seed);
        let input = catch_unwind(AssertUnwindSafe(|| one(&mut r))).unwrap_or_default();
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-crashes");
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join(format!("{target}-{iter_seed}"));
        let _ = std::fs::write(&file, &input);
        panic!(
            "{target} panicked (seed {seed}, iteration seed {iter_seed}): {msg}; input saved to {}",
            file.display()
        );
    }
}

#[derive(Clone, Copy)]
enum Budget {
    Iterations(u64),
    Time(Duration),
}

impl Budget {
    fn more(&self, n: u64, start: Instant) -> bool {
        match *self {
            Budget::Iterations(max) => n < max,
            Budget::Time(d) => start.elapsed() < d,
        }
    }
    /// The long run's budget: `FUZZ_SECS` (default 30) seconds.
    fn long() -> Budget {
        let secs = std::env::var("FUZZ_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(30);
        Budget::Time(Duration::from_secs(secs))
    }
}

fn seed() -> u64 {
    std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

const EVENTS: &[&str] = &[
    "push",
    "pull_request",
    "create",
    "delete",
    "issues",
    "release",
    "",
    "PUSH",
    "push\u{0}",
];

/// One hook input: a mutated fixture or a random structured payload, with
/// a random event, to a random dialect, signed correctly half the time so
/// the parser behind the signature check is reached.
fn hook_one(rng: &mut Rng, corpus: &[(String, Vec<u8>)]) -> Vec<u8> {
    let (event, mut body) = corpus[rng.below(corpus.len())].clone();
    if rng.chance(4) {
        body = serde_json::to_vec(&random_json(rng, 6)).unwrap();
    } else {
        let other = &corpus[rng.below(corpus.len())].1;
        for _ in 0..1 + rng.below(8) {
            mutate(rng, &mut body, other);
        }
    }
    let event = if rng.chance(4) {
        rng.pick(EVENTS).to_string()
    } else {
        event
    };
    let secret = "fuzz-secret";
    let signed = rng.chance(2);
    let sig = crate::common::sign(secret, &body);
    let content_type = *rng.pick(&[
        "application/json",
        "application/x-www-form-urlencoded",
        "text/plain",
        "",
    ]);
    let headers = vec![
        ("x-gitea-event".to_string(), event.clone()),
        ("x-github-event".to_string(), event),
        ("x-gitea-signature".to_string(), sig.clone()),
        ("x-hub-signature-256".to_string(), format!("sha256={sig}")),
        ("content-type".to_string(), content_type.to_string()),
    ];
    let req = HookRequest {
        headers,
        query: vec![],
        body: &body,
    };
    let forge = GiteaDialect {
        secret: signed.then(|| secret.to_string()),
        only_include_push_commit: rng.chance(2),
        repository_url: if rng.chance(2) {
            minibot::config::RepositoryUrl::Clone
        } else {
            minibot::config::RepositoryUrl::Ssh
        },
        codebase: None,
        only_mergeable_pull_request: rng.chance(2),
    };
    let _ = dialects::gitea::handle(&forge, &req);
    let _ = dialects::github::handle(&forge, &req);
    let base = BaseDialect {
        secret: signed.then(|| secret.to_string()),
        allow_unsigned: !signed,
    };
    let _ = dialects::base::handle(&base, &req);
    body
}

fn config_one(rng: &mut Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut text = corpus[rng.below(corpus.len())].clone();
    let other = &corpus[rng.below(corpus.len())];
    for _ in 0..1 + rng.below(6) {
        mutate(rng, &mut text, other);
    }
    let s = String::from_utf8_lossy(&text);
    let _ = minibot::config::parse(&s, "fuzz/master.cfg");
    text
}

/// Feeds mutated frame bytes to both decoders until they stop.
fn frame_one(rng: &mut Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = corpus[rng.below(corpus.len())].clone();
    let other = &corpus[rng.below(corpus.len())];
    for _ in 0..1 + rng.below(6) {
        mutate(rng, &mut bytes, other);
    }
    if rng.chance(8) {
        // A length prefix claiming far more than follows (or than allowed).
        let n = *rng.pick(&[u32::MAX, protocol::MAX_FRAME as u32 + 1, 1 << 20, 5]);
        bytes.splice(0..bytes.len().min(4), n.to_be_bytes());
    }
    for _ in 0..2 {
        let mut cur = std::io::Cursor::new(&bytes);
        for _ in 0..16 {
            match protocol::read_frame::<_, FromWorker>(&mut cur) {
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        let mut cur = std::io::Cursor::new(&bytes);
        for _ in 0..16 {
            match protocol::read_frame::<_, ToWorker>(&mut cur) {
                Ok(Some(_)) => {}
                _ => break,
            }
        }
    }
    bytes
}

fn fuzz_hooks(budget: Budget) {
    let corpus = hook_corpus();
    fuzz_loop("hook", seed(), budget, |r| hook_one(r, &corpus));
}

fn fuzz_config(budget: Budget) {
    let corpus = config_corpus();
    fuzz_loop("config", seed(), budget, |r| config_one(r, &corpus));
}

fn fuzz_frames(budget: Budget) {
    let corpus = frame_corpus();
    fuzz_loop("frame", seed(), budget, |r| frame_one(r, &corpus));
}

#[test]
fn short_fuzz_hook_parsers() {
    fuzz_hooks(Budget::Iterations(3000));
}

#[test]
fn short_fuzz_config_loader() {
    fuzz_config(Budget::Iterations(3000));
}

#[test]
fn short_fuzz_worker_protocol_decoder() {
    fuzz_frames(Budget::Iterations(20000));
}

#[test]
#[ignore = "long; run by scripts/fuzz"]
fn long_fuzz_hook_parsers() {
    fuzz_hooks(Budget::long());
}

#[test]
#[ignore = "long; run by scripts/fuzz"]
fn long_fuzz_config_loader() {
    fuzz_config(Budget::long());
}

#[test]
#[ignore = "long; run by scripts/fuzz"]
fn long_fuzz_worker_protocol_decoder() {
    fuzz_frames(Budget::long());
}

/// Regression inputs: shapes that once were (or easily could be) crashes.
#[test]
fn hostile_inputs_are_errors_not_panics() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let cfg = GiteaDialect::default();
    for body in [
        deep.as_bytes(),
        b"",
        b"\xff\xfe\xfd",
        b"{\"ref\": 1e999}",
        b"{\"ref\":\"refs/heads/\\ud800\"}",
    ] {
        let req = HookRequest {
            headers: vec![("x-gitea-event".into(), "push".into())],
            query: vec![],
            body,
        };
        assert!(dialects::gitea::handle(&cfg, &req).is_err(), "{body:?}");
    }
    let deep_toml = format!("a = {}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(minibot::config::parse(&deep_toml, "deep.cfg").is_err());
    let mut huge = (u32::MAX).to_be_bytes().to_vec();
    huge.extend_from_slice(b"{}");
    let r = protocol::read_frame::<_, FromWorker>(&mut std::io::Cursor::new(huge));
    assert!(r.is_err());
}
