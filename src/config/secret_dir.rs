//! The `[secrets]` provider (issue 20 point 1): each secret is one file in a
//! directory the master owns, named by its file name, as Buildbot's
//! `SecretInAFile`; steps refer to it as `%(secret:NAME)s` in a shell or
//! set_property step's command and env.
//!
//! Owns: what a secret name may be ([`name_problem`]), reading one secret
//! with every check ([`read`]), which secrets a step uses
//! ([`step_secrets`]), and the load-time check of every reference the
//! config makes ([`check_references`]), so `checkconfig` and a reconfig
//! report a missing, exposed or unusable secret file with its key path.
//! No threads or channels; the only I/O is reading the directory's
//! metadata and the secret files.
//!
//! The master reads a value again each time a step that uses it is sent
//! (`master::build`), and keeps it only for that build's masking: a
//! secret changed on disk is used from the next step on without a
//! reconfig, and no value is ever part of the config, the database or a
//! property.
//!
//! Checks, each refused with the file named and the command that fixes it:
//! the directory is a directory owned by the master's user with no access
//! for group or others (0700); a secret file is a regular file (not a
//! symlink: opened with `O_NOFOLLOW`, and `O_NONBLOCK` so a FIFO cannot
//! hang the master), owned by the master's user, with no access for group
//! or others (0600 or 0400), UTF-8, without NUL (it travels in an
//! environment variable), at most [`MAX_LEN`] bytes and at least
//! [`MIN_LEN`] once the trailing newline is stripped (a shorter value would
//! mask ordinary words in every log).

use super::interpolate::secret_refs;
use super::model::{Command, Config, Step, StepKind};
use super::problems::Problems;
use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Longest secret name.
pub(crate) const MAX_NAME: usize = 64;
/// Shortest secret value: shorter ones are refused, since masking them
/// would replace ordinary words in every log of the build.
pub(crate) const MIN_LEN: usize = 4;
/// Longest secret value (an RSA-4096 private key in PEM is ~3.3 KB). It
/// also bounds the master's masking: each encoding of a value is at most
/// 6 times as long (JSON `\u00XX` escapes).
pub(crate) const MAX_LEN: usize = 4096;

/// Why `name` cannot be a secret's name, or None. Letters, digits and `_`
/// only: a name is a file name in the secrets directory (so no `/`, no
/// `..`, no hidden files) and the suffix of the environment variable a
/// string command reads it from (`MINIBOT_SECRET_<NAME>`), kept as written
/// so two names never share a variable.
pub(crate) fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("a secret name is empty".to_string());
    }
    if name.len() > MAX_NAME {
        return Some(format!(
            "secret name {:?}... is longer than {MAX_NAME} characters",
            name.chars().take(16).collect::<String>()
        ));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Some(format!(
            "{name:?} is not a secret name: letters, digits and '_' only \
             (it names a file in the secrets directory; '/' and '..' are refused)"
        ));
    }
    None
}

/// The secrets directory: `dir` as configured, relative to the master
/// directory.
pub(crate) fn dir_path(master_dir: &Path, dir: &str) -> PathBuf {
    master_dir.join(dir)
}

/// Refuses `path` (a `what`) unless the master's user owns it and group
/// and others have no access; `mode` is the one to `chmod` it to.
fn private(
    what: &str,
    path: &Path,
    meta: &std::fs::Metadata,
    access: &str,
    mode: &str,
    also: &str,
) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let has = meta.mode() & 0o7777;
    if has & 0o077 != 0 {
        bail!(
            "{what} {}: mode {has:04o} lets group or others {access}; it must be {mode} \
             (run `chmod {} {}`{also})",
            path.display(),
            &mode[1..],
            path.display()
        );
    }
    let me = crate::sys::euid();
    if meta.uid() != me {
        bail!(
            "{what} {} belongs to uid {}, not to the master's user (uid {me})",
            path.display(),
            meta.uid()
        );
    }
    Ok(())
}

/// Checks the directory itself: a directory of the master's user, 0700.
fn check_dir(dir: &Path) -> Result<()> {
    let meta =
        std::fs::metadata(dir).with_context(|| format!("secrets directory {}", dir.display()))?;
    if !meta.is_dir() {
        bail!("secrets directory {} is not a directory", dir.display());
    }
    private("secrets directory", dir, &meta, "enter it", "0700", "")
}

/// Reads secret `name` from `dir` with every check of the module header.
/// The error names the file and says what to do.
pub(crate) fn read(dir: &Path, name: &str) -> Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(why) = name_problem(name) {
        bail!("{why}");
    }
    check_dir(dir)?;
    let path = dir.join(name);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path);
    let file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("secret {name:?}: there is no file {}", path.display())
        }
        // ELOOP: O_NOFOLLOW met a symlink.
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            bail!(
                "secret file {} is a symbolic link; it must be a regular file",
                path.display()
            )
        }
        Err(e) => return Err(e).with_context(|| format!("secret file {}", path.display())),
    };
    let meta = file
        .metadata()
        .with_context(|| format!("secret file {}", path.display()))?;
    if !meta.is_file() {
        bail!("secret file {} is not a regular file", path.display());
    }
    private(
        "secret file",
        &path,
        &meta,
        "read it",
        "0600",
        ", and change the secret if others could have read it",
    )?;
    let mut bytes = Vec::new();
    file.take(MAX_LEN as u64 + 3)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading secret file {}", path.display()))?;
    let Ok(mut value) = String::from_utf8(bytes) else {
        bail!("secret file {} is not UTF-8 text", path.display());
    };
    // `echo token > file` leaves a newline that is not part of the secret.
    while value.ends_with('\n') || value.ends_with('\r') {
        value.pop();
    }
    if value.len() > MAX_LEN {
        bail!(
            "secret file {} holds more than {MAX_LEN} bytes",
            path.display()
        );
    }
    if value.len() < MIN_LEN {
        bail!(
            "secret file {} holds fewer than {MIN_LEN} bytes: too short to be masked in logs",
            path.display()
        );
    }
    if value.contains('\0') {
        bail!("secret file {} holds a NUL byte", path.display());
    }
    Ok(value)
}

/// The names of the secrets a step uses, sorted, each once: the
/// references in a shell or set_property step's command and env values
/// (the only places they are replaced).
pub(crate) fn step_secrets(step: &Step) -> Vec<String> {
    let (command, env) = match &step.kind {
        StepKind::Git { .. }
        | StepKind::Trigger(_)
        | StepKind::Upload { .. }
        | StepKind::Download { .. } => return vec![],
        StepKind::Shell { command, env, .. } | StepKind::SetProperty { command, env, .. } => {
            (command, env)
        }
    };
    let texts: Vec<&str> = match command {
        Command::Shell(s) => vec![s.as_str()],
        Command::Argv(a) => a.iter().map(String::as_str).collect(),
    };
    let mut names: Vec<String> = texts
        .into_iter()
        .chain(env.values().map(String::as_str))
        .flat_map(secret_refs)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Reads every secret the config refers to, as a step would, and reports
/// each that cannot be used at its step's key path. The names and the
/// presence of `[secrets]` were checked by `lower`.
pub(super) fn check_references(cfg: &Config, master_dir: &Path, p: &mut Problems) {
    let Some(dir) = &cfg.secrets_dir else {
        return;
    };
    let dir = dir_path(master_dir, dir);
    let used = cfg
        .builders
        .iter()
        .flat_map(|b| &b.steps)
        .any(|st| !step_secrets(st).is_empty());
    if !used {
        return;
    }
    // Once, rather than with each secret.
    if let Err(e) = check_dir(&dir) {
        p.add("secrets.dir", format_args!("{e:#}"));
        return;
    }
    for (i, b) in cfg.builders.iter().enumerate() {
        for (j, step) in b.steps.iter().enumerate() {
            for name in step_secrets(step) {
                if let Err(e) = read(&dir, &name) {
                    p.add(
                        &format!("builders[{i}].steps[{j}]"),
                        format_args!("%(secret:{name})s: {e:#}"),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, TEST_BASE};
    use std::os::unix::fs::PermissionsExt;

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A 0700 directory with secret `tok` (0600) holding `value`.
    fn dir_with(value: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        chmod(d.path(), 0o700);
        std::fs::write(d.path().join("tok"), value).unwrap();
        chmod(&d.path().join("tok"), 0o600);
        d
    }

    #[test]
    fn names_are_file_names_that_stay_in_the_directory() {
        for ok in ["tok", "PYPI_token_2", "x"] {
            assert_eq!(name_problem(ok), None, "{ok}");
        }
        for bad in [
            "", "../tok", "a/b", "..", ".hidden", "a.b", "a-b", "a b", "é",
        ] {
            assert!(name_problem(bad).is_some(), "{bad:?}");
        }
        assert!(name_problem(&"a".repeat(MAX_NAME + 1)).is_some());
    }

    #[test]
    fn a_secret_is_read_only_from_a_private_file_in_a_private_directory() {
        let d = dir_with("s3cret-value\n\n");
        assert_eq!(read(d.path(), "tok").unwrap(), "s3cret-value");
        let file = d.path().join("tok");

        chmod(&file, 0o644);
        let e = format!("{:#}", read(d.path(), "tok").unwrap_err());
        assert!(e.contains(&format!("{}: mode 0644", file.display())), "{e}");
        assert!(e.contains("chmod 600"), "{e}");
        chmod(&file, 0o400);
        assert!(read(d.path(), "tok").is_ok());
        chmod(&file, 0o600);

        chmod(d.path(), 0o755);
        let e = format!("{:#}", read(d.path(), "tok").unwrap_err());
        assert!(e.contains("mode 0755") && e.contains("chmod 700"), "{e}");
        chmod(d.path(), 0o700);

        std::os::unix::fs::symlink(&file, d.path().join("link")).unwrap();
        let e = format!("{:#}", read(d.path(), "link").unwrap_err());
        assert!(e.contains("symbolic link"), "{e}");

        let e = format!("{:#}", read(d.path(), "missing").unwrap_err());
        assert!(e.contains("there is no file"), "{e}");
        let e = format!("{:#}", read(d.path(), "../tok").unwrap_err());
        assert!(e.contains("not a secret name"), "{e}");

        for (value, says) in [
            ("abc\n", "fewer than"),
            (&"x".repeat(MAX_LEN + 1) as &str, "more than"),
            ("ab\0cd", "NUL"),
        ] {
            std::fs::write(&file, value).unwrap();
            let e = format!("{:#}", read(d.path(), "tok").unwrap_err());
            assert!(e.contains(says), "{value:?}: {e}");
        }
        std::fs::write(&file, [0xffu8, 0xfe, 0xfd, 0xfc]).unwrap();
        let e = format!("{:#}", read(d.path(), "tok").unwrap_err());
        assert!(e.contains("UTF-8"), "{e}");
    }

    const BUILDER: &str = "[[builders]]\nname = \"b\"\nworkers = [\"w\"]\n";

    fn problems(extra: &str) -> String {
        match parse(&format!("{TEST_BASE}{BUILDER}{extra}"), "t.cfg") {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn references_are_checked_where_they_are_written() {
        let sec = "\n[secrets]\ndir = \"secrets\"\n";
        let step = |body: &str| format!("[[builders.steps]]\n{body}\n");
        let ok = step("type = \"shell\"\ncommand = [\"x\", \"%(secret:tok)s\"]\nenv = { A = \"%(secret:b)s\" }");
        assert_eq!(problems(&format!("{ok}{sec}")), "");
        let cfg = parse(&format!("{TEST_BASE}{BUILDER}{ok}{sec}"), "t.cfg").unwrap();
        assert_eq!(step_secrets(&cfg.builders[0].steps[0]), vec!["b", "tok"]);

        let e = problems(&ok);
        assert!(e.contains("needs a [secrets] section"), "{e}");
        let e = problems(&format!(
            "{}{sec}",
            step("type = \"shell\"\ncommand = \"echo %(secret:../etc/passwd)s\"")
        ));
        assert!(e.contains("not a secret name"), "{e}");
        let e = problems(&format!(
            "{}{sec}",
            step("type = \"git\"\nrepourl = \"https://%(secret:tok)s@h/r.git\"")
        ));
        assert!(
            e.contains("only replaced in a shell or set_property"),
            "{e}"
        );
        let e = problems("\n[secrets]\n");
        assert!(e.contains("secrets.dir"), "{e}");
    }

    #[test]
    fn set_property_steps_are_lowered_and_checked() {
        let step = |body: &str| format!("[[builders.steps]]\ntype = \"set_property\"\n{body}\n");
        let cfg = parse(
            &format!(
                "{TEST_BASE}{BUILDER}{}",
                step("property = \"version\"\ncommand = \"git describe\"\nregex = 'v(\\S+)'")
            ),
            "t.cfg",
        )
        .unwrap();
        let st = &cfg.builders[0].steps[0];
        assert_eq!(st.name, "set_property");
        match &st.kind {
            StepKind::SetProperty {
                property, regex, ..
            } => {
                assert_eq!(property, "version");
                assert_eq!(regex.as_ref().unwrap().source, "v(\\S+)");
            }
            other => panic!("{other:?}"),
        }
        for (body, says) in [
            ("command = \"x\"", "property: required key is missing"),
            (
                "property = \"v\"",
                "command: required for a set_property step",
            ),
            ("property = \"a b\"\ncommand = \"x\"", "not a property name"),
            (
                "property = \"got_revision\"\ncommand = \"x\"",
                "git step only",
            ),
            (
                "property = \"v\"\ncommand = \"x\"\nregex = '(a'",
                "invalid regex",
            ),
            (
                "property = \"v\"\ncommand = \"x\"\nregex = '(a)(b)'",
                "exactly one",
            ),
            (
                "property = \"v\"\ncommand = \"x\"\nregex = 'a'",
                "exactly one",
            ),
            (
                "property = \"v\"\ncommand = \"x\"\nrepourl = \"u\"",
                "repourl: not a key",
            ),
        ] {
            let e = problems(&step(body));
            assert!(e.contains(says), "{body}: {e}");
        }
        let e =
            problems("[[builders.steps]]\ntype = \"shell\"\ncommand = \"x\"\nproperty = \"v\"\n");
        assert!(e.contains("property: not a key"), "{e}");
    }
}
