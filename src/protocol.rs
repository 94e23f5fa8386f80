//! The master–worker wire protocol, shared by both binaries.
//!
//! Owns: frame encoding (a 4-byte big-endian length, then one JSON object),
//! the message types, and the HMAC-SHA256 challenge–response used to
//! authenticate both ends. No threads or channels live here; `worker_conn`
//! (master side) and `worker` (worker side) call these functions on their
//! sockets. The messages are documented for humans in `docs/protocol.md`.

use crate::model::BuildId;
use anyhow::{bail, Context, Result};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::io::{Read, Write};

/// Bumped on any incompatible change to the messages below.
pub const PROTOCOL_VERSION: u32 = 1;

/// A frame larger than this is a protocol error: log chunks are sent in
/// pieces far smaller, so anything this big is garbage or an attack, and
/// refusing it bounds the memory one connection can make us allocate.
pub const MAX_FRAME: usize = 1024 * 1024;

/// Output is sent up in chunks of at most this many bytes.
pub(crate) const LOG_CHUNK: usize = 32 * 1024;

/// Worker passwords and hook secrets shorter than this draw a warning
/// (checkconfig, start), and `create-worker` refuses them without
/// `--allow-weak-password`: 12 random characters are out of reach of the
/// online guessing a local neighbour can do against the worker port.
/// Here, not in `config`, because the worker (built without `config`)
/// checks it too; `config::MIN_SECRET_LEN` is this.
pub(crate) const MIN_SECRET_LEN: usize = 12;

/// Messages from the master to the worker.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToWorker {
    /// First frame on a new connection: the master's challenge.
    Hello {
        protocol: u32,
        nonce: String,
    },
    /// Authentication accepted. `proof` shows the master knows the password
    /// too (see [`master_proof`]); `keepalive` is the interval in seconds at
    /// which both sides send `Ping` when otherwise idle.
    Welcome {
        proof: String,
        keepalive: u64,
    },
    /// Authentication or handshake refused; the connection closes after it.
    Refused {
        reason: String,
    },
    /// Run one step of a build. Steps of one build come one at a time.
    RunStep {
        build_id: BuildId,
        step: u32,
        /// Directory under the worker's base dir, e.g. the builder's name.
        builder_dir: String,
        spec: StepSpec,
    },
    /// Stop the step running for this build (kill its process group).
    Interrupt {
        build_id: BuildId,
        reason: String,
    },
    Ping,
    Pong,
}

/// Messages from the worker to the master.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromWorker {
    /// Answer to `Hello`.
    Auth {
        protocol: u32,
        name: String,
        /// The worker's own challenge for the master.
        nonce: String,
        /// `worker_proof(password, master_nonce, worker_nonce, name)`.
        proof: String,
        /// Free-form facts shown on the workers page (admin, host, version, os).
        info: BTreeMap<String, String>,
    },
    /// Output of a running step. `stream` is "o" (stdout), "e" (stderr) or
    /// "h" (header lines written by the worker itself, e.g. the command).
    Log {
        build_id: BuildId,
        step: u32,
        stream: String,
        data: String,
    },
    /// The step ended. `exit_code` is None when the process did not exit
    /// normally (killed by signal, could not be started); `reason` then says why.
    StepDone {
        build_id: BuildId,
        step: u32,
        exit_code: Option<i32>,
        interrupted: bool,
        timed_out: bool,
        reason: Option<String>,
    },
    Ping,
    Pong,
}

/// What the worker is asked to run; all interpolation is already done by the
/// master, so the worker never evaluates anything from a change.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StepSpec {
    /// Bring `builder_dir/build` to `revision` (or the tip of `branch`).
    Git {
        repourl: String,
        branch: Option<String>,
        revision: Option<String>,
        /// "incremental" or "full".
        mode: String,
        /// Fetch `refs/pull/<n>/head` instead of the branch when set.
        pr_number: Option<u64>,
        /// A pull request tested as merged (with `pr_number`): check out
        /// this commit (the base) and merge `revision` (the PR head) into
        /// it. A worker from before this field ignores it and builds
        /// `revision` alone, as minibot did then.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        merge_into: Option<String>,
        timeout: u64,
    },
    /// Run a command in `builder_dir/build/<workdir>`.
    Shell {
        /// argv; a string command from the config arrives as ["/bin/sh", "-c", s].
        argv: Vec<String>,
        env: BTreeMap<String, String>,
        /// Relative to the build directory; "" for the build directory itself.
        workdir: String,
        /// Seconds without output before the process group is killed.
        timeout: u64,
    },
}

/// Reads one frame. Returns Ok(None) on a clean EOF before the length.
pub fn read_frame<R: Read, T: for<'de> Deserialize<'de>>(r: &mut R) -> Result<Option<T>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e).context("reading frame length"),
    }
    let n = u32::from_be_bytes(len) as usize;
    if n > MAX_FRAME {
        bail!("frame of {n} bytes exceeds the {MAX_FRAME}-byte limit");
    }
    let mut buf = vec![0u8; n];
    r.read_exact(&mut buf).context("reading frame body")?;
    let msg = serde_json::from_slice(&buf).context("decoding frame")?;
    Ok(Some(msg))
}

/// Encodes one frame into a buffer (length prefix included).
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; 4];
    serde_json::to_writer(&mut buf, msg).context("encoding frame")?;
    let n = buf.len() - 4;
    if n > MAX_FRAME {
        bail!("frame of {n} bytes exceeds the {MAX_FRAME}-byte limit");
    }
    buf[..4].copy_from_slice(&(n as u32).to_be_bytes());
    Ok(buf)
}

/// Writes one frame with a single `write_all`, so frames from one writer
/// never interleave.
pub fn write_frame<W: Write, T: Serialize>(w: &mut W, msg: &T) -> Result<()> {
    let buf = encode_frame(msg)?;
    w.write_all(&buf).context("writing frame")?;
    w.flush().context("flushing frame")
}

/// A fresh random challenge, hex encoded.
pub fn new_nonce() -> String {
    let mut b = [0u8; 32];
    // getrandom only fails when the OS has no entropy source at all; a
    // predictable nonce would weaken auth, so that is fatal.
    getrandom::fill(&mut b).expect("OS random source unavailable");
    hex::encode(b)
}

fn mac(password: &str, parts: &[&str]) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(password.as_bytes()).expect("HMAC takes any key");
    for p in parts {
        // Length-prefix each part so ("ab","c") and ("a","bc") differ.
        m.update(&(p.len() as u64).to_be_bytes());
        m.update(p.as_bytes());
    }
    m
}

/// The worker's answer to the master's challenge.
pub fn worker_proof(password: &str, master_nonce: &str, worker_nonce: &str, name: &str) -> String {
    let m = mac(
        password,
        &["minibot-worker-v1", master_nonce, worker_nonce, name],
    );
    hex::encode(m.finalize().into_bytes())
}

/// The master's answer to the worker's challenge (mutual authentication: a
/// worker never runs commands for something that merely listens on the port).
pub fn master_proof(password: &str, master_nonce: &str, worker_nonce: &str, name: &str) -> String {
    let m = mac(
        password,
        &["minibot-master-v1", master_nonce, worker_nonce, name],
    );
    hex::encode(m.finalize().into_bytes())
}

fn verify(m: Hmac<Sha256>, proof_hex: &str) -> bool {
    match hex::decode(proof_hex) {
        // verify_slice compares in constant time.
        Ok(bytes) => m.verify_slice(&bytes).is_ok(),
        Err(_) => false,
    }
}

pub fn check_worker_proof(password: &str, mn: &str, wn: &str, name: &str, proof: &str) -> bool {
    verify(mac(password, &["minibot-worker-v1", mn, wn, name]), proof)
}

pub(crate) fn check_master_proof(
    password: &str,
    mn: &str,
    wn: &str,
    name: &str,
    proof: &str,
) -> bool {
    verify(mac(password, &["minibot-master-v1", mn, wn, name]), proof)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let msg = FromWorker::Log {
            build_id: BuildId(7),
            step: 1,
            stream: "o".into(),
            data: "héllo\n".into(),
        };
        let buf = encode_frame(&msg).unwrap();
        assert_eq!(
            u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize,
            buf.len() - 4
        );
        let back: FromWorker = read_frame(&mut &buf[..]).unwrap().unwrap();
        assert_eq!(back, msg);
        let spec = ToWorker::RunStep {
            build_id: BuildId(1),
            step: 0,
            builder_dir: "runtests".into(),
            spec: StepSpec::Shell {
                argv: vec!["true".into()],
                env: BTreeMap::new(),
                workdir: String::new(),
                timeout: 5,
            },
        };
        let buf = encode_frame(&spec).unwrap();
        let back: ToWorker = read_frame(&mut &buf[..]).unwrap().unwrap();
        assert_eq!(back, spec);
    }

    #[test]
    fn eof_and_garbage() {
        let empty: &[u8] = &[];
        assert!(read_frame::<_, ToWorker>(&mut &*empty).unwrap().is_none());
        let huge = (MAX_FRAME as u32 + 1).to_be_bytes();
        let err = read_frame::<_, ToWorker>(&mut &huge[..]).unwrap_err();
        assert!(err.to_string().contains("exceeds"), "{err}");
        let mut junk = 5u32.to_be_bytes().to_vec();
        junk.extend_from_slice(b"{{{{{");
        assert!(read_frame::<_, ToWorker>(&mut &junk[..]).is_err());
        let truncated = [0u8, 0, 0, 10, b'{'];
        assert!(read_frame::<_, ToWorker>(&mut &truncated[..]).is_err());
    }

    #[test]
    fn proofs_check_and_differ() {
        let (mn, wn) = (new_nonce(), new_nonce());
        assert_ne!(mn, wn);
        let p = worker_proof("pass", &mn, &wn, "w1");
        assert!(check_worker_proof("pass", &mn, &wn, "w1", &p));
        assert!(!check_worker_proof("wrong", &mn, &wn, "w1", &p));
        assert!(!check_worker_proof("pass", &mn, &wn, "w2", &p));
        assert!(!check_worker_proof("pass", &mn, &wn, "w1", "zz"));
        // A worker proof must not pass as a master proof (no reflection).
        assert!(!check_master_proof("pass", &mn, &wn, "w1", &p));
        let mp = master_proof("pass", &mn, &wn, "w1");
        assert!(check_master_proof("pass", &mn, &wn, "w1", &mp));
    }
}
