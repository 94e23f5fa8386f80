//! The worker's side of file transfers: the `upload` step (files of the
//! build directory to the master) and the `download` step (one file from
//! the master into the build directory).
//!
//! Owns: finding what an upload sends (a file, a directory, a glob) without
//! leaving the build directory, and moving the bytes in pieces of at most
//! [`TRANSFER_CHUNK`], each side hashing them (sha256) as they pass.
//! Runs on the step's own thread (`worker::Session::start_step`), which
//! sends frames on the writer's channel (`Link::send`) and receives the
//! master's `UploadAck`, `DownloadData`, `DownloadEnd` and
//! `TransferAborted` on a bounded channel (`Link::rx`) that the session's
//! main loop fills ([`TransferMsg`]).
//!
//! Flow control: an upload never has more than [`TRANSFER_WINDOW`] bytes
//! sent and not acknowledged by the master; a download acknowledges each
//! piece once it is written, and the master sends no more than the window
//! beyond that, so the channel ([`CHANNEL`]) never fills for an honest
//! master (a dishonest one is cut off by the main loop).

use super::steps::{CancelToken, Out, StepOutcome};
use crate::model::BuildId;
use crate::protocol::{
    check_artifact_name, stays_inside, FromWorker, StepSpec, TRANSFER_CHUNK, TRANSFER_WINDOW,
};
use crossbeam_channel::{after, select, Receiver};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What the main loop hands a transfer step from the master's frames.
#[derive(Debug)]
pub(crate) enum TransferMsg {
    /// `UploadAck`: bytes the master has written.
    Ack(u64),
    /// `DownloadData`: a piece of the file.
    Data(Vec<u8>),
    /// `DownloadEnd`: the master's sha256 of the file.
    End(String),
    /// `TransferAborted`: why the master gave up.
    Aborted(String),
}

/// The transfer channel's capacity: a window of pieces, the end and an
/// abort, with room to spare.
pub(crate) const CHANNEL: usize = (TRANSFER_WINDOW / TRANSFER_CHUNK as u64) as usize + 4;

/// A master that neither acknowledges nor sends for this long is stuck;
/// the step fails rather than wait forever (a dead connection ends it
/// sooner, by cancelling the step).
const SILENCE: Duration = Duration::from_secs(120);

/// Most files one upload step sends, and the deepest directory it walks:
/// a bound on what a build's own output (a symlink loop, a runaway
/// generator) can make the worker list.
const MAX_FILES: usize = 10_000;
const MAX_DEPTH: usize = 64;

/// A transfer step's connection to the master.
pub(crate) struct Link<'a> {
    pub build_id: BuildId,
    pub step: u32,
    pub send: &'a dyn Fn(FromWorker),
    pub rx: &'a Receiver<TransferMsg>,
}

fn failed(out: Out<'_>, msg: String) -> StepOutcome {
    out("h", &format!("{msg}\n"));
    StepOutcome::failed(msg)
}

fn succeeded() -> StepOutcome {
    StepOutcome {
        exit_code: Some(0),
        ..Default::default()
    }
}

/// The next message from the master, or the step's end: interrupted, or
/// the master silent for [`SILENCE`].
fn next(link: &Link<'_>, cancel: &CancelToken, out: Out<'_>) -> Result<TransferMsg, StepOutcome> {
    select! {
        recv(link.rx) -> m => m.map_err(|_| failed(out, "the connection to the master is gone".into())),
        recv(cancel.receiver()) -> _ => {
            let reason = cancel.reason().unwrap_or_else(|| "interrupted".into());
            out("h", &format!("interrupted: {reason}\n"));
            Err(StepOutcome { interrupted: true, reason: Some(reason), ..Default::default() })
        },
        recv(after(SILENCE)) -> _ => Err(failed(out, format!(
            "the master sent nothing about this transfer for {} s; giving up",
            SILENCE.as_secs()
        ))),
    }
}

/// A path from the config, relative to the build directory and without
/// `..`; Err says which key is wrong.
fn check_relative(what: &str, s: &str) -> Result<(), String> {
    if stays_inside(s) {
        Ok(())
    } else {
        Err(format!(
            "{what} {s:?} must be a path inside the build directory (relative, without '..')"
        ))
    }
}

/// Whether `name` matches the glob component `pat` (`*`: any run of
/// characters, `?`: one character). As a shell does, a leading `.` must be
/// matched by a literal `.`.
fn wildcard(pat: &[char], name: &[char]) -> bool {
    match pat.split_first() {
        None => name.is_empty(),
        Some(('*', rest)) => (0..=name.len()).any(|i| wildcard(rest, &name[i..])),
        Some(('?', rest)) => !name.is_empty() && wildcard(rest, &name[1..]),
        Some((c, rest)) => name.first() == Some(c) && wildcard(rest, &name[1..]),
    }
}

fn is_glob(s: &str) -> bool {
    s.contains(['*', '?'])
}

/// The paths under `root` that `pattern` (relative, `/`-separated, `*`
/// and `?` in any component) matches, sorted.
fn glob(root: &Path, pattern: &str) -> Vec<PathBuf> {
    let mut found = vec![root.to_path_buf()];
    for part in pattern.split('/').filter(|p| !p.is_empty() && *p != ".") {
        let mut next = vec![];
        for dir in &found {
            if !is_glob(part) {
                let p = dir.join(part);
                if std::fs::symlink_metadata(&p).is_ok() {
                    next.push(p);
                }
                continue;
            }
            let pat: Vec<char> = part.chars().collect();
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for e in entries.filter_map(|e| e.ok()) {
                let name = e.file_name();
                let Some(name) = name.to_str() else { continue };
                if name.starts_with('.') && !part.starts_with('.') {
                    continue;
                }
                let chars: Vec<char> = name.chars().collect();
                if wildcard(&pat, &chars) {
                    next.push(e.path());
                }
            }
        }
        next.sort();
        found = next;
    }
    found
}

/// One file to send: where it is and the name the master stores it as.
#[derive(Debug, PartialEq)]
struct ToSend {
    path: PathBuf,
    name: String,
}

fn file_name(p: &Path) -> Result<String, String> {
    p.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| format!("{} has no file name in UTF-8", p.display()))
}

/// What a symlink at `p` points to, if that is inside `root` (canonical);
/// Err otherwise: an upload never reads outside the build directory.
fn inside(root: &Path, p: &Path) -> Result<PathBuf, String> {
    let target = p
        .canonicalize()
        .map_err(|e| format!("{}: cannot follow the symlink: {e}", p.display()))?;
    if target.starts_with(root) {
        Ok(target)
    } else {
        Err(format!(
            "{} is a symlink to {}, outside the build directory: refused",
            p.display(),
            target.display()
        ))
    }
}

/// Adds everything under directory `dir` as `prefix/<relative path>`.
/// Symlinks to files inside the build directory are sent as those files;
/// symlinks to directories are not followed (noted); anything pointing
/// outside fails the step.
fn walk(
    root: &Path,
    dir: &Path,
    prefix: &str,
    depth: usize,
    files: &mut Vec<ToSend>,
    notes: &mut Vec<String>,
) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!(
            "{} is more than {MAX_DEPTH} directories deep",
            dir.display()
        ));
    }
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
        .filter_map(|e| e.ok())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let name = format!("{prefix}/{}", file_name(&path)?);
        let meta =
            std::fs::symlink_metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if meta.is_symlink() {
            let target = inside(root, &path)?;
            if target.is_dir() {
                notes.push(format!(
                    "{} is a symlink to a directory: not followed",
                    path.display()
                ));
                continue;
            }
            files.push(ToSend { path: target, name });
        } else if meta.is_dir() {
            walk(root, &path, &name, depth + 1, files, notes)?;
        } else if meta.is_file() {
            files.push(ToSend { path, name });
        } else {
            notes.push(format!("{} is not a regular file: skipped", path.display()));
        }
        if files.len() > MAX_FILES {
            return Err(format!("more than {MAX_FILES} files to upload"));
        }
    }
    Ok(())
}

/// The files an upload of `source` sends, with their names (`dest` as
/// the prefix, or the source's own name), and notes for the log.
fn collect(
    build_dir: &Path,
    source: &str,
    dest: &str,
) -> Result<(Vec<ToSend>, Vec<String>), String> {
    check_relative("source", source)?;
    let root = build_dir
        .canonicalize()
        .map_err(|e| format!("the build directory {}: {e}", build_dir.display()))?;
    let globbed = is_glob(source);
    let matches = if globbed {
        glob(&root, source)
    } else {
        vec![root.join(source)]
    };
    if matches.is_empty() {
        return Err(format!("nothing in the build directory matches {source:?}"));
    }
    let (mut files, mut notes) = (vec![], vec![]);
    for m in matches {
        let own = file_name(&m)?;
        let name = match (dest, globbed) {
            ("", _) => own,
            (d, false) => d.trim_end_matches('/').to_string(),
            (d, true) => format!("{}/{own}", d.trim_end_matches('/')),
        };
        let meta = std::fs::symlink_metadata(&m).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                format!("{source:?} does not exist in the build directory")
            }
            _ => format!("{}: {e}", m.display()),
        })?;
        let path = if meta.is_symlink() {
            inside(&root, &m)?
        } else {
            m
        };
        if path.is_dir() {
            walk(&root, &path, &name, 0, &mut files, &mut notes)?;
        } else if path.is_file() {
            files.push(ToSend { path, name });
        } else {
            return Err(format!("{} is not a file or a directory", path.display()));
        }
    }
    for f in &files {
        check_artifact_name(&f.name)?;
    }
    if files.is_empty() {
        return Err(format!("{source:?} holds no files to upload"));
    }
    Ok((files, notes))
}

/// Runs an `upload` or `download` step (`spec` is one of them).
pub(crate) fn run(
    build_dir: &Path,
    spec: &StepSpec,
    out: Out<'_>,
    cancel: &CancelToken,
    link: &Link<'_>,
) -> StepOutcome {
    match spec {
        StepSpec::Upload { source, dest } => upload(build_dir, source, dest, out, cancel, link),
        StepSpec::Download { dest, size } => download(build_dir, dest, *size, out, cancel, link),
        StepSpec::Git { .. } | StepSpec::Shell { .. } => {
            failed(out, "not a transfer step (a worker bug)".into())
        }
    }
}

/// The `upload` step: sends `source` (a file, directory or glob under
/// `build_dir`) to the master.
fn upload(
    build_dir: &Path,
    source: &str,
    dest: &str,
    out: Out<'_>,
    cancel: &CancelToken,
    link: &Link<'_>,
) -> StepOutcome {
    let (files, notes) = match collect(build_dir, source, dest) {
        Ok(x) => x,
        Err(msg) => return failed(out, msg),
    };
    for n in notes {
        out("h", &format!("{n}\n"));
    }
    out(
        "h",
        &format!("uploading {} file(s) from {source}\n", files.len()),
    );
    let (mut sent, mut acked) = (0u64, 0u64);
    let mut buf = vec![0u8; TRANSFER_CHUNK];
    for f in &files {
        let opened = std::fs::File::open(&f.path).and_then(|file| {
            let size = file.metadata()?.len();
            Ok((file, size))
        });
        let (mut file, size) = match opened {
            Ok(x) => x,
            Err(e) => return failed(out, format!("cannot read {}: {e}", f.path.display())),
        };
        (link.send)(FromWorker::UploadFile {
            build_id: link.build_id,
            step: link.step,
            name: f.name.clone(),
            size,
        });
        let mut hasher = Sha256::new();
        let mut left = size;
        while left > 0 {
            let n = left.min(TRANSFER_CHUNK as u64) as usize;
            // Within the window: wait for what lets this piece go.
            let need = (sent + n as u64).saturating_sub(TRANSFER_WINDOW);
            acked = match acked_to(need, acked, link, cancel, out) {
                Ok(a) => a,
                Err(o) => return o,
            };
            if let Err(e) = file.read_exact(&mut buf[..n]) {
                return failed(
                    out,
                    format!(
                        "reading {} (it changed while uploading?): {e}",
                        f.path.display()
                    ),
                );
            }
            hasher.update(&buf[..n]);
            (link.send)(FromWorker::UploadData {
                build_id: link.build_id,
                step: link.step,
                data: buf[..n].to_vec(),
            });
            sent += n as u64;
            left -= n as u64;
        }
        let sha = hex::encode(hasher.finalize());
        (link.send)(FromWorker::UploadEnd {
            build_id: link.build_id,
            step: link.step,
            sha256: sha.clone(),
        });
        out(
            "h",
            &format!("sent {} ({size} bytes, sha256 {sha})\n", f.name),
        );
    }
    // Everything acknowledged: the master has written it all, and a
    // refusal of the last piece is reported here too.
    match acked_to(sent, acked, link, cancel, out) {
        Ok(_) => succeeded(),
        Err(o) => o,
    }
}

/// Waits until the master has acknowledged `want` bytes of the upload
/// (`acked` so far); returns what it has acknowledged, or the step's end
/// (the master refused the upload, the step was interrupted).
fn acked_to(
    want: u64,
    mut acked: u64,
    link: &Link<'_>,
    cancel: &CancelToken,
    out: Out<'_>,
) -> Result<u64, StepOutcome> {
    while acked < want {
        match next(link, cancel, out)? {
            TransferMsg::Ack(a) => acked = acked.max(a),
            TransferMsg::Aborted(why) => {
                return Err(failed(out, format!("the master refused the upload: {why}")))
            }
            TransferMsg::Data(_) | TransferMsg::End(_) => {
                log::warn!("upload: ignoring download frames from the master")
            }
        }
    }
    Ok(acked)
}

/// A partly downloaded file, removed unless it was completed.
struct Partial {
    path: PathBuf,
    done: bool,
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The `download` step: receives a file of `size` bytes from the master
/// into `dest` (relative to `build_dir`), replacing what is there.
fn download(
    build_dir: &Path,
    dest: &str,
    size: u64,
    out: Out<'_>,
    cancel: &CancelToken,
    link: &Link<'_>,
) -> StepOutcome {
    let (target, tmp) = match prepare_download(build_dir, dest) {
        Ok(x) => x,
        Err(msg) => return failed(out, msg),
    };
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
    {
        Ok(f) => f,
        Err(e) => return failed(out, format!("cannot create {}: {e}", tmp.display())),
    };
    let mut partial = Partial {
        path: tmp.clone(),
        done: false,
    };
    out("h", &format!("downloading {size} bytes to {dest}\n"));
    let mut hasher = Sha256::new();
    let mut written = 0u64;
    loop {
        match next(link, cancel, out) {
            Ok(TransferMsg::Data(piece)) => {
                if written + piece.len() as u64 > size {
                    return failed(
                        out,
                        format!("the master sent more than the {size} bytes it announced"),
                    );
                }
                if let Err(e) = file.write_all(&piece) {
                    return failed(out, format!("writing {}: {e}", tmp.display()));
                }
                hasher.update(&piece);
                written += piece.len() as u64;
                (link.send)(FromWorker::DownloadAck {
                    build_id: link.build_id,
                    step: link.step,
                    received: written,
                });
            }
            Ok(TransferMsg::End(theirs)) => {
                let ours = hex::encode(hasher.finalize());
                if written != size {
                    return failed(
                        out,
                        format!("the download ended after {written} of {size} bytes"),
                    );
                }
                if ours != theirs {
                    return failed(
                        out,
                        format!(
                            "checksum mismatch: the master sent sha256 {theirs}, {ours} arrived"
                        ),
                    );
                }
                if let Err(e) = file.flush().and_then(|_| std::fs::rename(&tmp, &target)) {
                    return failed(out, format!("cannot write {}: {e}", target.display()));
                }
                partial.done = true;
                out(
                    "h",
                    &format!("downloaded {dest} ({size} bytes, sha256 {ours})\n"),
                );
                return succeeded();
            }
            Ok(TransferMsg::Aborted(why)) => return failed(out, why),
            Ok(TransferMsg::Ack(_)) => log::warn!("download: ignoring an upload ack"),
            Err(o) => return o,
        }
    }
}

/// Where a download of `dest` goes and the temporary file it is written
/// to first (beside it, so the rename is atomic). The parent is created;
/// it must resolve inside the build directory (no symlink out of it), and
/// the rename replaces a symlink at `dest` rather than writing through it.
fn prepare_download(build_dir: &Path, dest: &str) -> Result<(PathBuf, PathBuf), String> {
    check_relative("dest", dest)?;
    std::fs::create_dir_all(build_dir)
        .map_err(|e| format!("cannot create {}: {e}", build_dir.display()))?;
    let root = build_dir
        .canonicalize()
        .map_err(|e| format!("the build directory {}: {e}", build_dir.display()))?;
    let rel = Path::new(dest);
    let name = file_name(rel)?;
    let parent = root.join(rel.parent().unwrap_or(Path::new("")));
    std::fs::create_dir_all(&parent)
        .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    let parent = parent
        .canonicalize()
        .map_err(|e| format!("{}: {e}", parent.display()))?;
    if !parent.starts_with(&root) {
        return Err(format!(
            "dest {dest:?} leads outside the build directory (through a symlink): refused"
        ));
    }
    let target = parent.join(&name);
    if target.is_dir() && !target.is_symlink() {
        return Err(format!("dest {dest:?} is a directory"));
    }
    let tmp = parent.join(format!(".{name}.minibot-download"));
    // A leftover of a download cut short (the worker killed mid-way).
    let _ = std::fs::remove_file(&tmp);
    Ok((target, tmp))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path, source: &str, dest: &str) -> Result<Vec<String>, String> {
        collect(dir, source, dest).map(|(f, _)| f.into_iter().map(|f| f.name).collect())
    }

    #[test]
    fn what_an_upload_sends_and_what_it_refuses() {
        let t = tempfile::tempdir().unwrap();
        let b = t.path().join("build");
        std::fs::create_dir_all(b.join("dist/sub")).unwrap();
        std::fs::write(b.join("dist/a.whl"), "a").unwrap();
        std::fs::write(b.join("dist/b.whl"), "b").unwrap();
        std::fs::write(b.join("dist/.hidden.whl"), "h").unwrap();
        std::fs::write(b.join("dist/sub/c.txt"), "c").unwrap();
        std::fs::write(t.path().join("secret"), "s").unwrap();
        assert_eq!(names(&b, "dist/a.whl", "").unwrap(), ["a.whl"]);
        assert_eq!(names(&b, "dist/a.whl", "x/y.whl").unwrap(), ["x/y.whl"]);
        assert_eq!(names(&b, "dist/*.whl", "").unwrap(), ["a.whl", "b.whl"]);
        assert_eq!(
            names(&b, "dist/?.whl", "w").unwrap(),
            ["w/a.whl", "w/b.whl"]
        );
        assert_eq!(
            names(&b, "dist", "").unwrap(),
            [
                "dist/.hidden.whl",
                "dist/a.whl",
                "dist/b.whl",
                "dist/sub/c.txt"
            ]
        );
        assert!(names(&b, "../secret", "").is_err());
        assert!(names(&b, "/etc/passwd", "").is_err());
        assert!(names(&b, "dist/*.zip", "").is_err());
        assert!(names(&b, "missing", "").is_err());
        assert!(names(&b, "dist/a.whl", "../x").is_err());
        // Symlinks: to a file inside, sent as that file; out of the build
        // directory, refused, also inside a directory sent whole.
        std::os::unix::fs::symlink(b.join("dist/a.whl"), b.join("link.whl")).unwrap();
        assert_eq!(names(&b, "link.whl", "").unwrap(), ["link.whl"]);
        std::os::unix::fs::symlink(t.path().join("secret"), b.join("out")).unwrap();
        let e = names(&b, "out", "").unwrap_err();
        assert!(e.contains("outside the build directory"), "{e}");
        std::os::unix::fs::symlink(t.path().join("secret"), b.join("dist/sub/out")).unwrap();
        assert!(names(&b, "dist", "").is_err());
    }

    #[test]
    fn download_targets_stay_inside() {
        let t = tempfile::tempdir().unwrap();
        let b = t.path().join("build");
        let (target, tmp) = prepare_download(&b, "in/app.tgz").unwrap();
        assert!(target.ends_with("build/in/app.tgz"), "{}", target.display());
        assert_eq!(tmp.parent(), target.parent());
        std::os::unix::fs::symlink(t.path(), b.join("up")).unwrap();
        assert!(prepare_download(&b, "up/x").is_err());
        assert!(prepare_download(&b, "../x").is_err());
        assert!(prepare_download(&b, "/tmp/x").is_err());
    }

    #[test]
    fn wildcards() {
        let m = |p: &str, n: &str| {
            wildcard(
                &p.chars().collect::<Vec<_>>(),
                &n.chars().collect::<Vec<_>>(),
            )
        };
        assert!(m("*.whl", "a.whl"));
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "ac"));
        assert!(m("*", ""));
        assert!(!m("*.whl", "a.whl.txt"));
        assert!(m("*a*b*", "xxaxxbxx"));
    }
}
