//! Artifacts, master side (issue 20): receiving an `upload` step's files
//! and sending a `download` step's file, over the worker's connection.
//!
//! Owns: the files `artifacts/<buildid>/<name>` under the master directory
//! and their partial forms (`artifacts/.partial/<buildid>-<step>.part`,
//! never under a name an artifact can have). No threads or channels: a
//! [`Transfer`] is the state of one running step, held by its
//! `build::RunningBuild` and driven by the worker connection thread
//! (`worker_conn`), the connection's only writer, which sends the frames
//! these functions return.
//!
//! What a worker sends is checked here, as it may be hostile: each name
//! (`protocol::check_artifact_name`: no `..`, no absolute path, no control
//! characters), the size against the build's cap (`max_artifact_bytes`)
//! before a byte is written and again with every piece, the sha256 the
//! worker reports against the one computed here. A refused or cut-short
//! file is removed. Memory: a piece at a time (the worker never has more
//! than `TRANSFER_WINDOW` unacknowledged), and a download sends at most
//! the window ahead of the worker's acknowledgements.

use crate::config::{BuildRef, DownloadFrom};
use crate::db::{self, Store};
use crate::model::{BuildId, BuilderId};
use crate::protocol::{check_artifact_name, ToWorker, TRANSFER_CHUNK, TRANSFER_WINDOW};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Where partial uploads are written, beside the builds' directories; a
/// name that no build id is, so the janitor's walk of `artifacts/` skips it.
fn partial_dir(master_dir: &Path) -> PathBuf {
    db::artifact_root(master_dir).join(".partial")
}

/// The state of a running upload or download step.
pub(crate) enum Transfer {
    Upload(Upload),
    Download(Download),
}

impl Transfer {
    /// The step ended: a partial file is removed. Returns why the step
    /// failed on the master's side, if it did (then that is its result,
    /// whatever the worker said), and the bytes this build's artifacts
    /// take now.
    pub(crate) fn finish(self, worker_ok: bool) -> (Option<String>, Option<u64>) {
        match self {
            Transfer::Upload(mut u) => {
                let cut = u.current.take().map(|c| c.name.clone());
                let why = u.failed.take().or_else(|| {
                    cut.filter(|_| worker_ok)
                        .map(|n| format!("the upload of {n} ended before the whole file arrived"))
                });
                (why, Some(u.used))
            }
            Transfer::Download(d) => {
                let why = d.failed.or_else(|| {
                    (worker_ok && !d.ended)
                        .then(|| "the download ended before the file was sent".into())
                });
                (why, None)
            }
        }
    }
}

/// A file being received.
struct Incoming {
    name: String,
    size: u64,
    written: u64,
    tmp: PathBuf,
    file: File,
    hasher: Sha256,
}

impl Drop for Incoming {
    fn drop(&mut self) {
        // Only a file that was stored has been renamed away from here.
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// One `upload` step's files arriving.
pub(crate) struct Upload {
    master_dir: PathBuf,
    buildid: BuildId,
    step: u32,
    /// `max_artifact_bytes` of the build's builder.
    cap: u64,
    /// Bytes of this build's stored artifacts, this step's included.
    used: u64,
    /// Bytes of this step's files written (what `UploadAck` reports).
    received: u64,
    current: Option<Incoming>,
    failed: Option<String>,
}

/// What happened to a piece of an upload: the answer for the worker, and
/// a line for the step's log.
pub(crate) struct Answer {
    pub reply: Option<ToWorker>,
    pub log: Option<String>,
}

impl Upload {
    pub(crate) fn new(
        master_dir: &Path,
        buildid: BuildId,
        step: u32,
        cap: u64,
        used: u64,
    ) -> Upload {
        Upload {
            master_dir: master_dir.to_path_buf(),
            buildid,
            step,
            cap,
            used,
            received: 0,
            current: None,
            failed: None,
        }
    }

    fn abort(&mut self, why: String) -> Answer {
        // Dropping the incoming file removes it.
        self.current = None;
        let reply = ToWorker::TransferAborted {
            build_id: self.buildid,
            step: self.step,
            reason: why.clone(),
        };
        let log = format!("upload refused: {why}\n");
        self.failed = Some(why);
        Answer {
            reply: Some(reply),
            log: Some(log),
        }
    }

    fn quiet() -> Answer {
        Answer {
            reply: None,
            log: None,
        }
    }

    /// `UploadFile`: a file starts.
    pub(crate) fn on_file(&mut self, name: &str, size: u64) -> Answer {
        if self.failed.is_some() {
            return Self::quiet();
        }
        if let Some(c) = &self.current {
            let why = format!("{name} started before {} was complete", c.name);
            return self.abort(why);
        }
        if let Err(e) = check_artifact_name(name) {
            return self.abort(e);
        }
        if self.used.saturating_add(size) > self.cap {
            return self.abort(format!(
                "{name} ({size} bytes) would take this build's artifacts to {} bytes, over \
                 the cap of {} bytes (max_artifact_bytes)",
                self.used.saturating_add(size),
                self.cap
            ));
        }
        let dir = partial_dir(&self.master_dir);
        let tmp = dir.join(format!("{}-{}.part", self.buildid, self.step));
        let opened = private_dirs(&dir).and_then(|_| {
            let _ = std::fs::remove_file(&tmp);
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
        });
        match opened {
            Ok(file) => {
                self.current = Some(Incoming {
                    name: name.to_string(),
                    size,
                    written: 0,
                    tmp,
                    file,
                    hasher: Sha256::new(),
                });
                Self::quiet()
            }
            Err(e) => self.abort(format!("the master cannot write {}: {e}", dir.display())),
        }
    }

    /// `UploadData`: a piece of the current file.
    pub(crate) fn on_data(&mut self, piece: &[u8]) -> Answer {
        if self.failed.is_some() {
            return Self::quiet();
        }
        let Some(c) = self.current.as_mut() else {
            return self.abort("a piece of a file that was not announced".into());
        };
        if c.written + piece.len() as u64 > c.size {
            let why = format!(
                "{} is larger than the {} bytes announced (cap: max_artifact_bytes = {})",
                c.name, c.size, self.cap
            );
            return self.abort(why);
        }
        if let Err(e) = c.file.write_all(piece) {
            let why = format!("the master cannot write {}: {e}", c.tmp.display());
            return self.abort(why);
        }
        c.hasher.update(piece);
        c.written += piece.len() as u64;
        self.received += piece.len() as u64;
        Answer {
            reply: Some(ToWorker::UploadAck {
                build_id: self.buildid,
                step: self.step,
                received: self.received,
            }),
            log: None,
        }
    }

    /// `UploadEnd`: the current file is complete; check and store it.
    pub(crate) fn on_end(&mut self, sha256: &str, store: &Store) -> Answer {
        if self.failed.is_some() {
            return Self::quiet();
        }
        let Some(mut c) = self.current.take() else {
            return self.abort("the end of a file that was not announced".into());
        };
        if c.written != c.size {
            let why = format!(
                "{} ended after {} of the {} bytes announced",
                c.name, c.written, c.size
            );
            return self.abort(why);
        }
        let ours = hex::encode(std::mem::take(&mut c.hasher).finalize());
        if !ours.eq_ignore_ascii_case(sha256) {
            let why = format!(
                "checksum mismatch for {}: the worker read sha256 {sha256}, the master received {ours}",
                c.name
            );
            return self.abort(why);
        }
        match self.store_file(&c, &ours, store) {
            Ok(()) => {
                self.used += c.size;
                Answer {
                    reply: None,
                    log: Some(format!(
                        "stored artifact {} ({} bytes, sha256 {ours})\n",
                        c.name, c.size
                    )),
                }
            }
            Err(why) => self.abort(why),
        }
    }

    /// Moves a checked file to its place and records it.
    fn store_file(&self, c: &Incoming, sha: &str, store: &Store) -> Result<(), String> {
        let name = c.name.clone();
        let buildid = self.buildid;
        let known = store
            .reader()
            .and_then(|r| db::artifact_of_build(&r, buildid, &name))
            .map_err(|e| format!("the master cannot read its database: {e:#}"))?;
        if known.is_some() {
            return Err(format!("this build already has an artifact named {name}"));
        }
        let path = db::artifact_path(&self.master_dir, buildid, &name);
        let parent = path.parent().unwrap_or(&self.master_dir);
        private_dirs(parent)
            .and_then(|_| c.file.sync_data())
            .and_then(|_| {
                // A file here without a row was left by a database whose
                // build ids this one reuses (the logs do the same): replaced.
                if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
                    std::fs::remove_file(&path)?;
                }
                std::fs::rename(&c.tmp, &path)
            })
            .map_err(|e| format!("the master cannot store {name}: {e}"))?;
        let (step, size, sha) = (self.step, c.size, sha.to_string());
        let n = name.clone();
        if let Err(e) =
            store.write(move |tx| db::insert_artifact(tx, buildid, step, &n, size, &sha))
        {
            let _ = std::fs::remove_file(&path);
            return Err(format!("the master cannot record {name}: {e:#}"));
        }
        Ok(())
    }
}

/// Directories made 0700 (artifacts are build output: only the master's
/// account reads them, the web UI serves them to whom `[www]` allows).
fn private_dirs(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// One `download` step's file being sent.
pub(crate) struct Download {
    buildid: BuildId,
    step: u32,
    file: Option<File>,
    size: u64,
    sent: u64,
    acked: u64,
    hasher: Sha256,
    /// The sha256 the file had when it was stored (an artifact's), checked
    /// before the worker is told the file is whole.
    expected: Option<String>,
    ended: bool,
    failed: Option<String>,
    /// The abort is still to be sent.
    abort_pending: bool,
}

/// What the build wants downloaded, as its step says.
pub(crate) struct DownloadSource<'a> {
    pub from: &'a DownloadFrom,
    pub buildid: BuildId,
    pub builderid: BuilderId,
}

/// The file a download step sends and its sha256 when known; Err: why
/// there is none.
fn resolve(
    store: &Store,
    master_dir: &Path,
    src: &DownloadSource<'_>,
) -> Result<(PathBuf, Option<String>), String> {
    match src.from {
        DownloadFrom::File(rel) => {
            let root = master_dir.join("files");
            let path = root.join(rel);
            // Canonical paths: a symlink under files/ may not lead out of it.
            let (root_c, path_c) = match (root.canonicalize(), path.canonicalize()) {
                (Ok(r), Ok(p)) => (r, p),
                (_, Err(e)) => return Err(format!("files/{rel}: {e}")),
                (Err(e), _) => return Err(format!("{}: {e}", root.display())),
            };
            if !path_c.starts_with(&root_c) {
                return Err(format!("files/{rel} leads outside files/: refused"));
            }
            Ok((path_c, None))
        }
        DownloadFrom::Artifact { name, build } => {
            let reader = store
                .reader()
                .map_err(|e| format!("the master cannot read its database: {e:#}"))?;
            let row = match build {
                BuildRef::This => db::artifact_of_build(&reader, src.buildid, name),
                BuildRef::Number(n) => db::artifact_of_number(&reader, src.builderid, *n, name),
                BuildRef::LastSuccessful => {
                    db::artifact_of_last_success(&reader, src.builderid, name)
                }
                // Only the build that triggered this one: its trigger step
                // chose to start this build, so it hands over its output.
                BuildRef::Triggering => {
                    match db::artifact_of_triggering(&reader, src.buildid, name) {
                        Ok(Some(row)) => Ok(row),
                        Ok(None) => {
                            return Err(format!(
                                "this build was not started by a trigger step, so it has no \
                             triggering build to take {name} from"
                            ))
                        }
                        Err(e) => Err(e),
                    }
                }
            }
            .map_err(|e| format!("the master cannot read its database: {e:#}"))?;
            let which = match build {
                BuildRef::This => "this build".to_string(),
                BuildRef::Number(n) => format!("build #{n} of this builder"),
                BuildRef::LastSuccessful => "any successful build of this builder".to_string(),
                BuildRef::Triggering => "the triggering build".to_string(),
            };
            let row = row.ok_or_else(|| format!("{which} has no artifact named {name}"))?;
            Ok((
                db::artifact_path(master_dir, row.buildid, &row.name),
                Some(row.sha256),
            ))
        }
    }
}

impl Download {
    /// Opens what the step downloads. A source that cannot be had makes a
    /// transfer that only aborts (the worker's step then fails with why).
    pub(crate) fn start(
        store: &Store,
        master_dir: &Path,
        src: &DownloadSource<'_>,
        step: u32,
    ) -> Download {
        let mut d = Download {
            buildid: src.buildid,
            step,
            file: None,
            size: 0,
            sent: 0,
            acked: 0,
            hasher: Sha256::new(),
            expected: None,
            ended: false,
            failed: None,
            abort_pending: false,
        };
        let opened = resolve(store, master_dir, src).and_then(|(path, sha)| {
            let f = File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let meta = f
                .metadata()
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if !meta.is_file() {
                return Err(format!("{} is not a file", path.display()));
            }
            Ok((f, meta.len(), sha))
        });
        match opened {
            Ok((f, size, sha)) => {
                d.file = Some(f);
                d.size = size;
                d.expected = sha;
            }
            Err(why) => d.fail(why),
        }
        d
    }

    /// The file's length (for the step's `RunStep`).
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    fn fail(&mut self, why: String) {
        self.failed = Some(why);
        self.abort_pending = true;
        self.file = None;
    }

    /// `DownloadAck`: the worker has written `received` bytes.
    pub(crate) fn on_ack(&mut self, received: u64) -> Vec<ToWorker> {
        self.acked = self.acked.max(received.min(self.sent));
        self.frames()
    }

    /// The frames to send now: pieces up to the window beyond what the
    /// worker acknowledged, then the end (or the abort).
    pub(crate) fn frames(&mut self) -> Vec<ToWorker> {
        let mut out = vec![];
        let mut buf = vec![0u8; TRANSFER_CHUNK];
        while let Some(f) = self.file.as_mut() {
            if self.sent >= self.size {
                break;
            }
            let n = (self.size - self.sent).min(TRANSFER_CHUNK as u64) as usize;
            if self.sent + n as u64 - self.acked > TRANSFER_WINDOW {
                break;
            }
            if let Err(e) = f.read_exact(&mut buf[..n]) {
                self.fail(format!("reading the file to download: {e}"));
                break;
            }
            self.hasher.update(&buf[..n]);
            self.sent += n as u64;
            out.push(ToWorker::DownloadData {
                build_id: self.buildid,
                step: self.step,
                data: buf[..n].to_vec(),
            });
        }
        if self.file.is_some() && self.sent == self.size && !self.ended {
            let sha = hex::encode(std::mem::take(&mut self.hasher).finalize());
            match &self.expected {
                Some(e) if !e.eq_ignore_ascii_case(&sha) => self.fail(format!(
                    "the stored file's sha256 is {sha}, not the {e} it was stored with: \
                     it changed on the master's disk"
                )),
                _ => {
                    self.ended = true;
                    self.file = None;
                    out.push(ToWorker::DownloadEnd {
                        build_id: self.buildid,
                        step: self.step,
                        sha256: sha,
                    });
                }
            }
        }
        if self.abort_pending {
            self.abort_pending = false;
            out.push(ToWorker::TransferAborted {
                build_id: self.buildid,
                step: self.step,
                reason: self.failed.clone().unwrap_or_default(),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload(dir: &Path, cap: u64) -> Upload {
        Upload::new(dir, BuildId(7), 2, cap, 0)
    }

    fn aborted(a: &Answer) -> Option<&str> {
        match &a.reply {
            Some(ToWorker::TransferAborted { reason, .. }) => Some(reason),
            _ => None,
        }
    }

    fn partials(dir: &Path) -> usize {
        std::fs::read_dir(partial_dir(dir)).map_or(0, |d| d.count())
    }

    /// What a hostile worker may send: names out of the directory, more
    /// bytes than announced or than the cap, pieces of nothing (a piece
    /// over the size limit never gets here: `protocol::read_payload`). Each is
    /// refused with why, and no partial file stays.
    #[test]
    fn a_hostile_worker_is_refused_and_leaves_nothing() {
        let t = tempfile::tempdir().unwrap();
        for name in [
            "../../evil",
            "/etc/passwd",
            "a/../b",
            "a\u{1b}[2J",
            "",
            "a//b",
        ] {
            let mut u = upload(t.path(), 1000);
            let a = u.on_file(name, 1);
            let why = aborted(&a).unwrap_or_else(|| panic!("{name:?} accepted"));
            assert!(why.contains("refused"), "{why}");
            // Everything after a refusal is ignored, not answered.
            assert!(u.on_data(b"x").reply.is_none());
        }
        let mut u = upload(t.path(), 1000);
        let why = aborted(&u.on_file("big", 1001)).unwrap().to_string();
        assert!(
            why.contains("over the cap of 1000 bytes (max_artifact_bytes)"),
            "{why}"
        );
        assert_eq!(partials(t.path()), 0);

        let mut u = upload(t.path(), 1000);
        assert!(u.on_file("f", 3).reply.is_none());
        assert_eq!(partials(t.path()), 1);
        assert!(matches!(
            u.on_data(b"ab").reply,
            Some(ToWorker::UploadAck { received: 2, .. })
        ));
        let why = aborted(&u.on_data(b"cd")).unwrap().to_string();
        assert!(why.contains("larger than the 3 bytes announced"), "{why}");
        assert_eq!(partials(t.path()), 0, "the partial file is removed");

        let mut u = upload(t.path(), 1000);
        assert!(aborted(&u.on_data(b"x")).is_some());
        assert_eq!(partials(t.path()), 0);

        // A step that ends mid-file fails and leaves nothing either.
        let mut u = upload(t.path(), 1000);
        u.on_file("f", 3);
        u.on_data(b"a");
        let (why, used) = Transfer::Upload(u).finish(true);
        assert!(why.unwrap().contains("before the whole file arrived"));
        assert_eq!(used, Some(0));
        assert_eq!(partials(t.path()), 0);
    }
}
