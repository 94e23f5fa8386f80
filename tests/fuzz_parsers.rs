//! Fuzzing on the stable toolchain for the three parsers that read input
//! from outside: the change-hook dialects (`dialects::{gitea,github,base}::handle`,
//! bytes from anyone who can reach the web port), `config::parse` (the
//! operator's `master.cfg`) and `protocol::read_frame` (bytes from anyone
//! who can reach the worker port). No libFuzzer (that needs nightly): the
//! runs are `arbtest`'s (seeds, time budget, replay, minimisation), each
//! input a few mutations of the repository's fixtures or a randomly built
//! structured one, drawn from `arbitrary::Unstructured`.
//!
//! Reproducible: a failing run prints its seed (`arbtest failed! Seed:
//! 0x...`); `FUZZ_SEED=0x...` replays that input alone, and with
//! `FUZZ_MINIMIZE=1` looks for a smaller one from it. The short tests run
//! on every `cargo test`; the `#[ignore]`d long ones run for `FUZZ_SECS`
//! seconds each (`scripts/fuzz`).

use arbtest::arbitrary::{Result, Unstructured};
use minibot::config::{BaseDialect, GiteaDialect};
use minibot::model::BuildId;
use minibot::protocol::{self, FromWorker, StepSpec, ToWorker};
use minibot::web::dialects::{self, HookRequest};
use std::collections::BTreeMap;
use std::time::Duration;

/// An index below `n` (0 when `n` is 0, or when the entropy has run out).
fn below(u: &mut Unstructured, n: usize) -> Result<usize> {
    if n == 0 {
        return Ok(0);
    }
    u.int_in_range(0..=n - 1)
}

/// True one time in `one_in`.
fn chance(u: &mut Unstructured, one_in: u8) -> Result<bool> {
    u.ratio(1, one_in)
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
fn mutate(u: &mut Unstructured, data: &mut Vec<u8>, other: &[u8]) -> Result<()> {
    let len = data.len();
    match below(u, 9)? {
        0 if len > 0 => {
            let i = below(u, len)?;
            data[i] ^= 1 << below(u, 8)?;
        }
        1 if len > 0 => {
            let i = below(u, len)?;
            data[i] = *u.choose(&[0u8, 0x7f, 0x80, 0xff, b'"', b'{', b'[', b'\\'])?;
        }
        2 => {
            let i = below(u, len + 1)?;
            let t = u.choose(TOKENS)?;
            data.splice(i..i, t.iter().copied());
        }
        3 if len > 0 => {
            let i = below(u, len)?;
            let n = below(u, (len - i).min(64) + 1)?;
            data.drain(i..i + n);
        }
        4 if len > 0 => {
            let i = below(u, len)?;
            let n = below(u, (len - i).min(256) + 1)?;
            let chunk = data[i..i + n].to_vec();
            let j = below(u, len + 1)?;
            data.splice(j..j, chunk);
        }
        5 => data.truncate(below(u, len + 1)?),
        6 if !other.is_empty() => {
            // Splice: our head, the other's tail.
            let i = below(u, len + 1)?;
            let j = below(u, other.len())?;
            data.truncate(i);
            data.extend_from_slice(&other[j..]);
        }
        7 => {
            // Deep nesting at a random place.
            let i = below(u, len + 1)?;
            let depth = 1 + below(u, 3000)?;
            let open = if chance(u, 2)? { b'[' } else { b'{' };
            data.splice(i..i, std::iter::repeat_n(open, depth));
        }
        _ => {
            let i = below(u, len + 1)?;
            let n = below(u, 16)?;
            let bytes: Vec<u8> = u.bytes(n)?.to_vec();
            data.splice(i..i, bytes);
        }
    }
    Ok(())
}

/// A random JSON value, biased toward the keys the hook parsers look up.
fn random_json(u: &mut Unstructured, depth: usize) -> Result<serde_json::Value> {
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
    let leaf = depth == 0 || chance(u, 3)?;
    if leaf {
        return Ok(match below(u, 7)? {
            0 => Value::Null,
            1 => Value::Bool(chance(u, 2)?),
            2 => (u.arbitrary::<u64>()? as i64).into(),
            3 => (below(u, 100)? as i64).into(),
            4 => serde_json::Number::from_f64((u.arbitrary::<u64>()? as f64) / 7.0)
                .map_or(Value::Null, Value::Number),
            5 => {
                let t = u.choose(TOKENS)?;
                String::from_utf8_lossy(t).into_owned().into()
            }
            _ => u.choose(KEYS)?.to_string().into(),
        });
    }
    if chance(u, 3)? {
        let n = below(u, 4)?;
        let items = (0..n).map(|_| random_json(u, depth - 1));
        Ok(Value::Array(items.collect::<Result<_>>()?))
    } else {
        let n = below(u, 8)?;
        let mut m = serde_json::Map::new();
        for _ in 0..n {
            m.insert(u.choose(KEYS)?.to_string(), random_json(u, depth - 1)?);
        }
        Ok(Value::Object(m))
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
            build_id: BuildId(7),
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
            build_id: BuildId(7),
            step: 0,
            builder_dir: "runtests".into(),
            spec: StepSpec::Git {
                repourl: "file:///r".into(),
                branch: Some("master".into()),
                revision: None,
                mode: "full".into(),
                pr_number: Some(3),
                merge_into: Some("e532cbfab4045c9c9ca8c5a578ed7abe73b365fe".into()),
                timeout: 10,
            },
        },
        ToWorker::Interrupt {
            build_id: BuildId(7),
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
            build_id: BuildId(7),
            step: 1,
            stream: "o".into(),
            data: "line\n".into(),
        },
        FromWorker::StepDone {
            build_id: BuildId(7),
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

/// Runs `one` on arbtest's inputs for `budget` (or, with `FUZZ_SEED`, on
/// that seed's input alone; `FUZZ_MINIMIZE=1` then looks for a smaller
/// failing one). arbtest prints the seed of a failing input.
fn fuzz(target: &str, budget: Duration, mut one: impl FnMut(&mut Unstructured) -> Result<()>) {
    let mut n = 0u64;
    let start = std::time::Instant::now();
    let mut test = arbtest::arbtest(|u| {
        n += 1;
        one(u)
    })
    // A few hundred choices make an input: 4 kB of entropy is plenty, and
    // filling arbtest's default 64 kB per input dominates a debug build.
    .size_max(4096)
    .budget(budget);
    let seed = std::env::var("FUZZ_SEED").ok();
    if let Some(seed) = seed.as_deref() {
        // arbtest prints seeds as 0x...; decimal is accepted too.
        let parsed = match seed.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => seed.parse(),
        };
        let Ok(seed) = parsed else {
            panic!("FUZZ_SEED={seed:?} is not a seed (0x... as arbtest prints it)")
        };
        test = test.seed(seed);
        if std::env::var("FUZZ_MINIMIZE").is_ok_and(|v| v == "1") {
            test = test.minimize();
        }
    }
    test.run();
    eprintln!(
        "fuzz {target}: {n} inputs in {:.1} s, no panic",
        start.elapsed().as_secs_f64()
    );
}

/// The short runs' budget, on every `cargo test` (a few hundred to a few
/// thousand inputs each in a debug build).
const SHORT: Duration = Duration::from_secs(3);

/// The long runs' budget: `FUZZ_SECS` (default 30) seconds.
fn long() -> Duration {
    let secs = std::env::var("FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    Duration::from_secs(secs)
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
fn hook_one(u: &mut Unstructured, corpus: &[(String, Vec<u8>)]) -> Result<()> {
    let (event, mut body) = u.choose(corpus)?.clone();
    if chance(u, 4)? {
        // Serialising a Value cannot fail (string keys only).
        body = serde_json::to_vec(&random_json(u, 6)?).unwrap_or_default();
    } else {
        let other = &u.choose(corpus)?.1;
        for _ in 0..1 + below(u, 8)? {
            mutate(u, &mut body, other)?;
        }
    }
    let event = if chance(u, 4)? {
        u.choose(EVENTS)?.to_string()
    } else {
        event
    };
    let secret = "fuzz-secret";
    let signed = chance(u, 2)?;
    let sig = crate::common::sign(secret, &body);
    let content_type = *u.choose(&[
        "application/json",
        "application/x-www-form-urlencoded",
        "text/plain",
        "",
    ])?;
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
        only_include_push_commit: chance(u, 2)?,
        repository_url: if chance(u, 2)? {
            minibot::config::RepositoryUrl::Clone
        } else {
            minibot::config::RepositoryUrl::Ssh
        },
        codebase: None,
        only_mergeable_pull_request: chance(u, 2)?,
        skips: GiteaDialect::default().skips,
        pull_request_checkout: if chance(u, 2)? {
            minibot::config::PullRequestCheckout::Head
        } else {
            minibot::config::PullRequestCheckout::Merge
        },
    };
    let _ = dialects::gitea::handle(&forge, &req);
    let _ = dialects::github::handle(&forge, &req);
    let base = BaseDialect {
        secret: signed.then(|| secret.to_string()),
        allow_unsigned: !signed,
    };
    let _ = dialects::base::handle(&base, &req);
    Ok(())
}

/// A corpus entry after 1 to 6 mutations (spliced with another entry).
fn mutated(u: &mut Unstructured, corpus: &[Vec<u8>]) -> Result<Vec<u8>> {
    let mut data = u.choose(corpus)?.clone();
    let other = u.choose(corpus)?;
    for _ in 0..1 + below(u, 6)? {
        mutate(u, &mut data, other)?;
    }
    Ok(data)
}

fn config_one(u: &mut Unstructured, corpus: &[Vec<u8>]) -> Result<()> {
    let text = mutated(u, corpus)?;
    let s = String::from_utf8_lossy(&text);
    let _ = minibot::config::parse(&s, "fuzz/master.cfg");
    Ok(())
}

/// Feeds mutated frame bytes to both decoders until they stop.
fn frame_one(u: &mut Unstructured, corpus: &[Vec<u8>]) -> Result<()> {
    let mut bytes = mutated(u, corpus)?;
    if chance(u, 8)? {
        // A length prefix claiming far more than follows (or than allowed).
        let n = *u.choose(&[u32::MAX, protocol::MAX_FRAME as u32 + 1, 1 << 20, 5])?;
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
    Ok(())
}

fn fuzz_hooks(budget: Duration) {
    let corpus = hook_corpus();
    fuzz("hook", budget, |u| hook_one(u, &corpus));
}

fn fuzz_config(budget: Duration) {
    let corpus = config_corpus();
    fuzz("config", budget, |u| config_one(u, &corpus));
}

fn fuzz_frames(budget: Duration) {
    let corpus = frame_corpus();
    fuzz("frame", budget, |u| frame_one(u, &corpus));
}

#[test]
fn short_fuzz_hook_parsers() {
    fuzz_hooks(SHORT);
}

#[test]
fn short_fuzz_config_loader() {
    fuzz_config(SHORT);
}

#[test]
fn short_fuzz_worker_protocol_decoder() {
    fuzz_frames(SHORT);
}

#[test]
#[ignore = "long; run by scripts/fuzz"]
fn long_fuzz_hook_parsers() {
    fuzz_hooks(long());
}

#[test]
#[ignore = "long; run by scripts/fuzz"]
fn long_fuzz_config_loader() {
    fuzz_config(long());
}

#[test]
#[ignore = "long; run by scripts/fuzz"]
fn long_fuzz_worker_protocol_decoder() {
    fuzz_frames(long());
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
