//! `master.cfg` (TOML) → typed, validated configuration.
//!
//! Owns: [`load`] / [`parse`] and the order of the passes; the parts live
//! in `raw` (serde layer), `lower` (validation), `model`, `problems`,
//! `locks` (the lock tables and lists, through all three layers),
//! `secrets`, `sample` and `live`. Every
//! problem names the file, its line and the key path, list items counted
//! from 1 with their name (`master.cfg:23: builders #2 (name =
//! "linux").steps #1.comand`), and all problems are reported together, as
//! `checkconfig` promises.
//!
//! No threads, no channels, no I/O besides reading the file, checking its
//! own mode (0600 when it holds secrets, as it always does: worker
//! passwords) and the secret files it names (`token_file`,
//! `smtp_password_file`, `client_secret_file`: present and mode 0600; the
//! `[secrets]` files the steps refer to, `secret_dir`). Called by
//! `minibot checkconfig`, by the master at start and on SIGHUP (reconfig),
//! which hands the result to the other components as an `Arc<Config>`; a
//! config that fails here is never seen by them, so they may rely on the
//! invariants checked in `lower` (names unique and directory-safe,
//! references resolved, `protocols.worker` present, step kinds known).
//!
//! Parsing runs in three passes: TOML syntax (stops at the first error, with
//! line and column), then types into the raw serde layer (`raw`: each
//! section and list element on its own, so one bad builder does not hide
//! another; unknown keys are collected here), then the lowering into the
//! typed model (`lower` → `model`), which is the validation: it only runs on
//! a fully typed config because its findings would mostly echo the type
//! errors, and it is where required keys, defaults and kinds are handled.

mod chains;
mod interpolate;
mod live;
mod locks;
mod lower;
mod model;
mod problems;
mod raw;
mod sample;
mod secret_dir;
mod secrets;
#[cfg(test)]
mod tests;
mod transfer;

pub(crate) use interpolate::{expand, Ref};
pub(crate) use live::LiveConfig;
pub use model::*;
pub use problems::{warning_line, ConfigError};
pub use sample::*;
#[cfg(test)]
pub(crate) use secret_dir::MAX_LEN as MAX_SECRET_LEN;
pub(crate) use secret_dir::{read as read_secret, step_secrets};
pub use secrets::{random_hex, secret_warnings};

use lower::lower;
use problems::{io_reason, line_col, one_line, Problems};
use secrets::{check_own_mode, check_secret_files};
use std::path::Path;

/// A valid config text with worker `w` (tests of other modules add to it).
#[cfg(test)]
pub(crate) const TEST_BASE: &str = "[protocols.worker]\nport = 9989\n\
    [[workers]]\nname = \"w\"\npassword = \"pw-of-some-length\"\n";

/// Builder `b` on worker `w` with one shell step `true`, for [`test_config`].
#[cfg(test)]
pub(crate) const TEST_BUILDER: &str = "[[builders]]\nname = \"b\"\nworkers = [\"w\"]\n\
    [[builders.steps]]\ntype = \"shell\"\ncommand = \"true\"\n";

/// [`TEST_BASE`] with `extra` appended, parsed (panics on a problem).
#[cfg(test)]
pub(crate) fn test_config(extra: &str) -> Config {
    parse(&format!("{TEST_BASE}{extra}"), "test.cfg").unwrap_or_else(|e| panic!("{e}"))
}

/// Reads and checks `path` (normally `DIR/master.cfg`).
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        problems: vec![format!("cannot read {}: {}", path.display(), io_reason(&e))],
    })?;
    let cfg = parse(&text, &path.display().to_string())?;
    let source = path.display().to_string();
    let mut p = Problems::new(&source, "");
    check_own_mode(path, &cfg, &mut p);
    let dir = path.parent().unwrap_or(Path::new("."));
    check_secret_files(&cfg, dir, &mut p);
    secret_dir::check_references(&cfg, dir, &mut p);
    if p.list.is_empty() {
        Ok(cfg)
    } else {
        Err(p.into_error())
    }
}

/// Parses and checks config text; `source` names the file in the problems.
pub fn parse(text: &str, source: &str) -> Result<Config, ConfigError> {
    let mut p = Problems::new(source, text);
    let table: toml::Table = match toml::from_str(text) {
        Ok(t) => t,
        Err(e) => {
            let at = match e.span() {
                Some(span) => {
                    let (line, col) = line_col(text, span.start);
                    format!("line {line}, column {col}")
                }
                None => "TOML".to_string(),
            };
            p.add(&at, one_line(e.message()));
            return Err(p.into_error());
        }
    };
    // Unknown keys are reported by `typed` but do not stop the lowering,
    // so they come with the problems of meaning.
    match raw::typed(table, &mut p).and_then(|raw| lower(raw, &mut p)) {
        Some(cfg) if p.list.is_empty() => Ok(cfg),
        _ => Err(p.into_error()),
    }
}
