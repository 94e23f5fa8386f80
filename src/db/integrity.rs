//! Is `state.sqlite` sound, and is it still the file this master opened?
//! (issue 16 point 5)
//!
//! Owns: the start-up check ([`check`]: `PRAGMA quick_check` on a
//! pooled read-only connection, after `open_current` has checked the schema
//! version) and the file watch ([`FileWatch`]). No thread of its own: the
//! master's `dbwatch` thread and the change hooks call
//! [`super::Store::check_file`].
//!
//! Why the watch: SQLite keeps writing through the descriptors it opened.
//! A database file deleted (or renamed over by another file) while the
//! master runs takes every later commit with it at the next restart, while
//! each commit still succeeds; a hook acknowledged then is lost. So the
//! identity (device, inode) of the file and of its WAL, where committed
//! transactions live until a checkpoint, is recorded at open, and a
//! `stat` of both paths says whether they are still the files the writer
//! writes. Two `stat` calls: cheap enough before every hook's answer.

use anyhow::{Context, Result};
use rusqlite::Connection;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The database is corrupt: what was found and what the operator can do,
/// for `minibot start` (stderr, master.log) and `status.json`. A type of
/// its own so the master can tell it from other failures to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptDatabase {
    pub message: String,
}

impl std::fmt::Display for CorruptDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CorruptDatabase {}

/// The [`CorruptDatabase`] error for the file at `path`.
pub(crate) fn corrupt(path: &Path, found: &str) -> anyhow::Error {
    let dir = path
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| ".".into());
    let message = format!(
        "the database {db} is corrupt ({found}); the master will not serve it. \
         Keep a copy of the file, then restore {db} from a backup, or recover what \
         SQLite can still read into a new file (`sqlite3 {db} .recover | sqlite3 {dir}/recovered.sqlite`, \
         then move it in place of {db} and run `minibot upgrade-master {dir}`), or start with an \
         empty database (history lost): move {db} away and run `minibot create-master --force {dir}`",
        db = path.display(),
    );
    anyhow::Error::new(CorruptDatabase { message })
}

/// Whether an error from opening or reading the file means that the file
/// is not a sound database (rather than, say, a permission problem).
pub(crate) fn is_corruption(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<rusqlite::Error>()
                .and_then(rusqlite::Error::sqlite_error_code),
            Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
        )
    })
}

/// Most problems `quick_check` lists before it stops: enough to say what is
/// wrong, not a page of them.
const MAX_PROBLEMS: u32 = 5;

/// `PRAGMA quick_check` of the database at `path` on `conn`, a read-only
/// connection to it (or the error opening one): Ok if SQLite finds the
/// file sound, else the [`corrupt`] error. It reads every page, so it
/// takes about as long as reading the file once; the master runs it at
/// start, before it serves, on a pooled reader, which then serves the
/// first request without reading the schema again.
pub(crate) fn check(path: &Path, conn: Result<&Connection>) -> Result<()> {
    let found = conn.and_then(quick_check);
    match found {
        Ok(problems) if problems.is_empty() => Ok(()),
        Ok(problems) => Err(corrupt(
            path,
            &format!("quick_check: {}", problems.join("; ")),
        )),
        Err(e) if is_corruption(&e) => Err(corrupt(path, &format!("{e:#}"))),
        Err(e) => Err(e.context(format!("cannot check the database {}", path.display()))),
    }
}

/// What `stat` says of the database and its WAL: at a clean stop and at
/// the next start, to tell whether anything wrote to them in between.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Stamp {
    files: Vec<Option<FileStamp>>,
}

/// (device, inode, size, mtime s, mtime ns) of one file.
type FileStamp = (u64, u64, u64, i64, i64);

impl Stamp {
    /// (device, inode, size, mtime s, mtime ns) of the database, its WAL
    /// and its journal (`None`: not there).
    pub(crate) fn of(path: &Path) -> Stamp {
        let files = ["", "-wal", "-journal"]
            .iter()
            .map(|suffix| {
                let mut p = path.as_os_str().to_owned();
                p.push(suffix);
                std::fs::metadata(PathBuf::from(p))
                    .ok()
                    .map(|m| (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
            })
            .collect();
        Stamp { files }
    }
}

/// Whether `quick_check` must read the database at start: unless the file
/// `clean_stop` (written by the last master as it stopped cleanly, read
/// and removed here, so that it counts once) holds the stamp the files
/// have now. A crash, a disk that filled, another program writing to the
/// file, a copy put in its place: any of them changes the stamp, and the
/// check runs; a restart of an untouched database does not read every
/// page of it (210 ms for 10,000 builds, `scripts/bench`).
pub(crate) fn needs_check(path: &Path, clean_stop: &Path) -> bool {
    let recorded = std::fs::read(clean_stop)
        .ok()
        .and_then(|b| serde_json::from_slice::<Stamp>(&b).ok());
    let _ = std::fs::remove_file(clean_stop);
    recorded.is_none_or(|r| r != Stamp::of(path) || r.files.first() == Some(&None))
}

/// The problems `quick_check` lists (none: "ok").
fn quick_check(conn: &Connection) -> Result<Vec<String>> {
    let mut stmt = conn.prepare(&format!("PRAGMA quick_check({MAX_PROBLEMS})"))?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    let mut problems = vec![];
    for row in rows {
        let line = row?;
        if line != "ok" {
            problems.push(line);
        }
    }
    Ok(problems)
}

/// A file's identity: what a rename over it or a delete and re-create
/// changes, and what writing to it does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

fn file_id(path: &Path) -> std::io::Result<FileId> {
    let m = std::fs::metadata(path)?;
    Ok(FileId {
        dev: m.dev(),
        ino: m.ino(),
    })
}

/// How the database file was lost to the running master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// Nothing is at the path any more.
    Deleted,
    /// Another file is at the path.
    Replaced,
}

/// The database file (or its WAL) is no longer the file the master writes:
/// what to say about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLost {
    pub loss: Loss,
    /// The file at fault: `state.sqlite` or `state.sqlite-wal`.
    pub path: PathBuf,
}

impl std::fmt::Display for FileLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dir = self
            .path
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| ".".into());
        match self.loss {
            Loss::Deleted => write!(
                f,
                "the database file {} was deleted while the master ran: nothing can be stored \
                 (it would be lost at the next restart), so changes are refused. Stop the master \
                 (`minibot stop {dir}`), put the file back (or create a new database with \
                 `minibot create-master --force {dir}`) and start it again",
                self.path.display()
            ),
            Loss::Replaced => write!(
                f,
                "the database file {} was replaced by another file while the master ran: this \
                 master still writes to the old one, which the next restart would lose, so \
                 changes are refused. Restart the master (`minibot restart {dir}`) to use the \
                 new file",
                self.path.display()
            ),
        }
    }
}

/// The identities of the database file and its WAL as the writer opened
/// them.
#[derive(Debug)]
pub(crate) struct FileWatch {
    main: (PathBuf, FileId),
    /// The WAL, if it existed at open (in WAL mode it does once the first
    /// connection has read; it stays while the writer's connection is open).
    wal: Option<(PathBuf, FileId)>,
}

impl FileWatch {
    /// Records the files at `path` now: call it right after the writer's
    /// connection opened them (a swap between the two is not seen).
    pub(crate) fn record(path: &Path) -> Result<FileWatch> {
        let main = file_id(path).with_context(|| format!("cannot stat {}", path.display()))?;
        let wal_path = wal_path(path);
        let wal = file_id(&wal_path).ok().map(|id| (wal_path, id));
        Ok(FileWatch {
            main: (path.to_path_buf(), main),
            wal,
        })
    }

    /// Whether the paths still name the files recorded. A path that cannot
    /// be looked up for another reason than absence (permissions changed)
    /// counts as deleted: the master can no longer vouch for it.
    pub(crate) fn check(&self) -> Result<(), FileLost> {
        for (path, id) in std::iter::once(&self.main).chain(self.wal.as_ref()) {
            let loss = match file_id(path) {
                Ok(now) if now == *id => continue,
                Ok(_) => Loss::Replaced,
                Err(_) => Loss::Deleted,
            };
            return Err(FileLost {
                loss,
                path: path.clone(),
            });
        }
        Ok(())
    }
}

fn wal_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push("-wal");
    PathBuf::from(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{create, Store};

    /// `check` on a connection of its own, as `Store::check_integrity`
    /// does on a pooled one.
    fn check_file(path: &Path) -> Result<()> {
        match super::super::schema::open_reader(path) {
            Ok(c) => check(path, Ok(&c)),
            Err(e) => check(path, Err(e)),
        }
    }

    #[test]
    fn a_sound_database_passes_and_a_garbled_one_is_named_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        create(&path).unwrap();
        check_file(&path).unwrap();
        // Garbage over every page but the first (the header and schema
        // root): the tables' pages.
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(len > 8192, "{len}");
        let mut bytes = std::fs::read(&path).unwrap();
        for (i, b) in bytes[4096..].iter_mut().enumerate() {
            *b = (i * 7 + 13) as u8;
        }
        std::fs::write(&path, bytes).unwrap();
        let err = format!("{:#}", check_file(&path).unwrap_err());
        assert!(err.contains("is corrupt"), "{err}");
        assert!(err.contains(".recover"), "{err}");
        assert!(err.contains("create-master --force"), "{err}");
    }

    #[test]
    fn the_watch_sees_the_file_deleted_replaced_and_put_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        create(&path).unwrap();
        let store = Store::open(&path).unwrap();
        let wal = wal_path(&path);
        assert!(wal.exists(), "the writer's connection has a WAL");
        store.check_file().unwrap();
        let moved = dir.path().join("moved.sqlite");
        std::fs::rename(&path, &moved).unwrap();
        let lost = store.check_file().unwrap_err();
        assert_eq!((lost.loss, &lost.path), (Loss::Deleted, &path));
        assert!(lost.to_string().contains("was deleted"), "{lost}");
        // Another file at the path.
        std::fs::write(&path, b"another file").unwrap();
        let lost = store.check_file().unwrap_err();
        assert_eq!(lost.loss, Loss::Replaced);
        assert!(lost.to_string().contains("was replaced"), "{lost}");
        // The same file back: nothing was lost.
        std::fs::rename(&moved, &path).unwrap();
        store.check_file().unwrap();
        // The WAL alone.
        std::fs::remove_file(&wal).unwrap();
        let lost = store.check_file().unwrap_err();
        assert_eq!((lost.loss, &lost.path), (Loss::Deleted, &wal));
    }
}
