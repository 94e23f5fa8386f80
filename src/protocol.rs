//! The master–worker wire protocol, shared by both binaries.
//!
//! Owns: frame encoding (a 4-byte big-endian length, then one JSON object;
//! a transfer's file piece is a binary frame after its message, [`Framed`]),
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

/// Bumped on any incompatible change to the messages below. 2: the
/// `upload` and `download` steps (issue 20), whose frames a version-1
/// worker would ignore and so leave the build waiting.
pub const PROTOCOL_VERSION: u32 = 2;

/// A frame larger than this is a protocol error: log chunks are sent in
/// pieces far smaller, so anything this big is garbage or an attack, and
/// refusing it bounds the memory one connection can make us allocate.
pub const MAX_FRAME: usize = 1024 * 1024;

/// Output is sent up in chunks of at most this many bytes.
pub(crate) const LOG_CHUNK: usize = 32 * 1024;

/// File transfers (the `upload` and `download` steps) go in pieces of at
/// most this many bytes, each the binary frame that follows its
/// `upload_data` or `download_data` frame: far below `MAX_FRAME`, and big
/// enough that a frame's overhead does not show.
pub(crate) const TRANSFER_CHUNK: usize = 128 * 1024;

/// Bytes of a transfer the sender may have sent and the receiver not yet
/// acknowledged (written to disk). This is the flow control: however fast
/// one side reads its disk, the other holds at most this much of it in
/// memory, whatever TCP buffers.
pub(crate) const TRANSFER_WINDOW: u64 = 4 * TRANSFER_CHUNK as u64;

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
    /// An `upload` step: the master has written `received` bytes of this
    /// step's files (all files so far) to disk; the worker may send up
    /// to [`TRANSFER_WINDOW`] bytes beyond it.
    UploadAck {
        build_id: BuildId,
        step: u32,
        received: u64,
    },
    /// A piece of a `download` step's file: the bytes (at most
    /// [`TRANSFER_CHUNK`]) are the binary frame that follows this one
    /// ([`Framed`]), not part of the JSON.
    DownloadData {
        build_id: BuildId,
        step: u32,
        #[serde(skip)]
        data: Vec<u8>,
    },
    /// The whole file of a `download` step was sent; its sha256 as the
    /// master read it (hex), for the worker to compare with its own.
    DownloadEnd {
        build_id: BuildId,
        step: u32,
        sha256: String,
    },
    /// The master gives up on this step's transfer (an upload refused:
    /// the size cap, a bad name, a checksum mismatch; a download whose
    /// source cannot be read). The worker stops sending and ends the step
    /// failed with this reason.
    TransferAborted {
        build_id: BuildId,
        step: u32,
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
    /// An `upload` step starts sending one file: `name` is where the
    /// master is to store it (relative to the build's artifact directory,
    /// `/`-separated), `size` its length in bytes.
    UploadFile {
        build_id: BuildId,
        step: u32,
        name: String,
        size: u64,
    },
    /// A piece of the file being uploaded: the bytes (at most
    /// [`TRANSFER_CHUNK`]) are the binary frame that follows this one
    /// ([`Framed`]), not part of the JSON.
    UploadData {
        build_id: BuildId,
        step: u32,
        #[serde(skip)]
        data: Vec<u8>,
    },
    /// The file is sent whole; its sha256 as the worker read it (hex).
    UploadEnd {
        build_id: BuildId,
        step: u32,
        sha256: String,
    },
    /// A `download` step: the worker has written `received` bytes of the
    /// file; the master may send up to [`TRANSFER_WINDOW`] beyond it.
    DownloadAck {
        build_id: BuildId,
        step: u32,
        received: u64,
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
    /// Send files of the build directory to the master (`UploadFile`,
    /// `UploadData`, `UploadEnd` per file, each paced by `UploadAck`).
    Upload {
        /// Relative to the build directory: a file, a directory (sent
        /// with everything below it) or a glob (`*`, `?` in any component).
        source: String,
        /// The name prefix on the master; "" for the source's own name.
        dest: String,
    },
    /// Receive one file from the master (`DownloadData` ... `DownloadEnd`,
    /// paced by `DownloadAck`) into `dest`, relative to the build directory.
    Download {
        dest: String,
        /// The file's length in bytes.
        size: u64,
    },
}

/// Longest artifact name, and longest component of one.
pub(crate) const MAX_ARTIFACT_NAME: usize = 1024;
const MAX_NAME_COMPONENT: usize = 255;

/// Whether `name` may name an artifact: a relative `/`-separated path whose
/// components are neither empty, `.` nor `..`, without control characters
/// or backslashes, at most [`MAX_ARTIFACT_NAME`] bytes (255 a component).
/// The master stores an artifact at `artifacts/<buildid>/<name>`, so this
/// is what keeps a worker's name inside that directory; the worker checks
/// its names the same way before sending. Err says what is wrong.
pub(crate) fn check_artifact_name(name: &str) -> std::result::Result<(), String> {
    let bad = |why: &str| Err(format!("artifact name {name:?} refused: {why}"));
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_ARTIFACT_NAME {
        return bad(&format!("longer than {MAX_ARTIFACT_NAME} bytes"));
    }
    if name.chars().any(|c| c.is_control()) {
        return bad("it contains control characters");
    }
    if name.contains('\\') {
        return bad("it contains a backslash");
    }
    if name.starts_with('/') {
        return bad("an absolute path");
    }
    for part in name.split('/') {
        match part {
            "" => return bad("an empty path component"),
            "." | ".." => return bad("'.' and '..' are not allowed"),
            p if p.len() > MAX_NAME_COMPONENT => {
                return bad(&format!(
                    "a component longer than {MAX_NAME_COMPONENT} bytes"
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Whether `path` is a non-empty relative path that stays inside the
/// directory it is taken from: no `..`, not absolute, no NUL. For the
/// paths of transfer steps, checked by the config and again by the worker.
pub(crate) fn stays_inside(path: &str) -> bool {
    !path.is_empty()
        && !path.contains('\0')
        && std::path::Path::new(path).components().all(|c| {
            matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        })
}

/// A message that may carry bytes outside its JSON: a file piece of a
/// transfer is sent as a binary frame (length, then the raw bytes) right
/// after its message's frame, so it is neither base64 nor escaped (the
/// debug-built tests spent most of a 200 MB upload encoding base64).
pub trait Framed {
    /// The bytes that follow this message, if it carries any.
    fn payload(&self) -> Option<&[u8]>;
    /// Where a reader puts them, if this message carries any.
    fn payload_mut(&mut self) -> Option<&mut Vec<u8>>;
}

impl Framed for ToWorker {
    fn payload(&self) -> Option<&[u8]> {
        match self {
            ToWorker::DownloadData { data, .. } => Some(data),
            _ => None,
        }
    }
    fn payload_mut(&mut self) -> Option<&mut Vec<u8>> {
        match self {
            ToWorker::DownloadData { data, .. } => Some(data),
            _ => None,
        }
    }
}

impl Framed for FromWorker {
    fn payload(&self) -> Option<&[u8]> {
        match self {
            FromWorker::UploadData { data, .. } => Some(data),
            _ => None,
        }
    }
    fn payload_mut(&mut self) -> Option<&mut Vec<u8>> {
        match self {
            FromWorker::UploadData { data, .. } => Some(data),
            _ => None,
        }
    }
}

/// Reads the binary frame that follows a message carrying a file piece
/// into it: at most [`TRANSFER_CHUNK`] bytes, or an error.
pub fn read_payload<R: Read, T: Framed>(r: &mut R, msg: &mut T) -> Result<()> {
    let Some(data) = msg.payload_mut() else {
        return Ok(());
    };
    let mut len = [0u8; 4];
    r.read_exact(&mut len)
        .context("reading a file piece's length")?;
    let n = u32::from_be_bytes(len) as usize;
    if n > TRANSFER_CHUNK {
        bail!("a file piece of {n} bytes exceeds the {TRANSFER_CHUNK}-byte limit");
    }
    data.resize(n, 0);
    r.read_exact(data).context("reading a file piece")
}

/// Reads one message with its file piece, if it carries one
/// ([`read_frame`], then [`read_payload`]).
pub fn read_message<R: Read, T: for<'de> Deserialize<'de> + Framed>(
    r: &mut R,
) -> Result<Option<T>> {
    let Some(mut msg) = read_frame::<_, T>(r)? else {
        return Ok(None);
    };
    read_payload(r, &mut msg)?;
    Ok(Some(msg))
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

/// Encodes one message into a buffer: its frame (length prefix
/// included), then its file piece's binary frame if it carries one.
pub fn encode_frame<T: Serialize + Framed>(msg: &T) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; 4];
    serde_json::to_writer(&mut buf, msg).context("encoding frame")?;
    let n = buf.len() - 4;
    if n > MAX_FRAME {
        bail!("frame of {n} bytes exceeds the {MAX_FRAME}-byte limit");
    }
    buf[..4].copy_from_slice(&(n as u32).to_be_bytes());
    if let Some(piece) = msg.payload() {
        if piece.len() > TRANSFER_CHUNK {
            bail!(
                "a file piece of {} bytes exceeds the {TRANSFER_CHUNK}-byte limit",
                piece.len()
            );
        }
        buf.extend_from_slice(&(piece.len() as u32).to_be_bytes());
        buf.extend_from_slice(piece);
    }
    Ok(buf)
}

/// Writes one frame with a single `write_all`, so frames from one writer
/// never interleave.
pub fn write_frame<W: Write, T: Serialize + Framed>(w: &mut W, msg: &T) -> Result<()> {
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
    fn pieces_travel_as_binary_frames_and_are_bounded() {
        let b: Vec<u8> = (0..=255u8).cycle().take(TRANSFER_CHUNK).collect();
        let msg = FromWorker::UploadData {
            build_id: BuildId(1),
            step: 0,
            data: b.clone(),
        };
        let f = encode_frame(&msg).unwrap();
        // The JSON frame, then the piece as it is: no base64.
        assert!(f.len() < b.len() + 100, "{}", f.len());
        let back: FromWorker = read_message(&mut &f[..]).unwrap().unwrap();
        assert_eq!(back, msg);
        let big = FromWorker::UploadData {
            build_id: BuildId(1),
            step: 0,
            data: vec![0; TRANSFER_CHUNK + 1],
        };
        assert!(encode_frame(&big).is_err());
        // A reader refuses a piece over the limit, and a missing one.
        let mut bad = encode_frame(&FromWorker::UploadData {
            build_id: BuildId(1),
            step: 0,
            data: vec![],
        })
        .unwrap();
        bad.truncate(bad.len() - 4);
        bad.extend_from_slice(&(TRANSFER_CHUNK as u32 + 1).to_be_bytes());
        let e = read_message::<_, FromWorker>(&mut &bad[..]).unwrap_err();
        assert!(e.to_string().contains("exceeds"), "{e}");
        bad.truncate(bad.len() - 4);
        assert!(read_message::<_, FromWorker>(&mut &bad[..]).is_err());
    }

    #[test]
    fn artifact_names() {
        for good in [
            "a.tar.gz",
            "dist/app-1.0.whl",
            "d/e/f",
            "..x",
            "x..",
            "naïve",
        ] {
            assert_eq!(check_artifact_name(good), Ok(()), "{good}");
        }
        let long = "a".repeat(256);
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            "a//b",
            "a/",
            ".",
            "..",
            "a\\b",
            "a\nb",
            "a\u{7f}",
            "a\u{1b}[31m",
            long.as_str(),
        ] {
            assert!(check_artifact_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_artifact_name(&"a/".repeat(600)).is_err());
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
