//! Secrets in the config: how strong they are ([`secret_warnings`]), where
//! they are kept (inline, or in files of mode 0600), and the file-mode
//! checks `load` runs on `master.cfg` and on those files.

use super::model::{ChangeSource, Config, ReporterKind, Secret};
use super::problems::{io_reason, item, Problems};
use super::sample::{SAMPLE_GITEA_SECRET, SAMPLE_WORKER_PASSWORD};
use std::path::Path;

/// The shortest secret without a warning (defined in `protocol`, which the
/// worker shares).
pub(crate) use crate::protocol::MIN_SECRET_LEN;

/// `n` random bytes from the OS as lowercase hex (2n characters).
pub fn random_hex(n: usize) -> anyhow::Result<String> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b)
        .map_err(|e| anyhow::anyhow!("reading random bytes from the OS: {e}"))?;
    Ok(hex::encode(b))
}

/// Secrets in a parsed config that are known or easy to guess, as
/// "key: why" lines: the sample's published Gitea secret or password
/// placeholder, "pass", or anything shorter than [`MIN_SECRET_LEN`].
/// Warnings, not errors: a test setup may want them, and refusing to start
/// an existing install after an upgrade would be worse.
pub fn secret_warnings(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let d = &cfg.www.change_hook_dialects;
    let hooks = [
        ("gitea", d.gitea.as_ref().and_then(|g| g.secret.as_deref())),
        (
            "github",
            d.github.as_ref().and_then(|g| g.secret.as_deref()),
        ),
        ("base", d.base.as_ref().and_then(|b| b.secret.as_deref())),
    ];
    for (dialect, secret) in hooks {
        let Some(secret) = secret.filter(|s| !s.is_empty()) else {
            continue;
        };
        let key = format!("www.change_hook_dialects.{dialect}.secret");
        if secret == SAMPLE_GITEA_SECRET {
            out.push(format!(
                "{key}: is the sample's published secret: anyone can sign hooks with it; \
                 set one from `openssl rand -hex 16` here and in the webhook"
            ));
        } else if secret.chars().count() < MIN_SECRET_LEN {
            out.push(format!(
                "{key}: is shorter than {MIN_SECRET_LEN} characters and easy to guess; \
                 use one from `openssl rand -hex 16`"
            ));
        }
    }
    for (i, w) in cfg.workers.iter().enumerate() {
        let key = format!("{}.password", item("workers", i, &w.name));
        let pw = w.password.as_str();
        if pw == SAMPLE_WORKER_PASSWORD || pw == "pass" {
            out.push(format!(
                "{key}: is the sample's published password; anyone who has read the \
                 docs can connect as {:?}: use one from `openssl rand -hex 16`",
                w.name
            ));
        } else if !pw.is_empty() && pw.chars().count() < MIN_SECRET_LEN {
            out.push(format!(
                "{key}: is shorter than {MIN_SECRET_LEN} characters and easy to guess; \
                 use one from `openssl rand -hex 16` (and the same in the worker's worker.cfg)"
            ));
        }
    }
    out
}

/// The keys of `cfg` that hold a secret inline (not in a `*_file`).
fn inline_secrets(cfg: &Config) -> Vec<String> {
    let mut keys = Vec::new();
    for (i, w) in cfg.workers.iter().enumerate() {
        if !w.password.is_empty() {
            keys.push(format!("{}.password", item("workers", i, &w.name)));
        }
    }
    let d = &cfg.www.change_hook_dialects;
    for (dialect, secret) in [
        ("gitea", d.gitea.as_ref().and_then(|g| g.secret.as_deref())),
        (
            "github",
            d.github.as_ref().and_then(|g| g.secret.as_deref()),
        ),
        ("base", d.base.as_ref().and_then(|b| b.secret.as_deref())),
    ] {
        if secret.is_some_and(|s| !s.is_empty()) {
            keys.push(format!("www.change_hook_dialects.{dialect}.secret"));
        }
    }
    for (i, (key, secret)) in reporter_secrets(cfg) {
        if let Secret::Inline(_) = secret {
            keys.push(format!("reporters #{}.{key}", i + 1));
        }
    }
    if let Some(Secret::Inline(_)) = cfg.www.auth.as_ref().map(|a| &a.client_secret) {
        keys.push("www.auth.client_secret".into());
    }
    keys
}

/// Refuses a config file that group or others may read while it holds a
/// secret, or may write at all (whoever writes master.cfg chooses the
/// commands the workers run). Like ssh with a private key: reported, not
/// fixed silently, since the secrets may already have been read.
pub(super) fn check_own_mode(path: &Path, cfg: &Config, p: &mut Problems) {
    use std::os::unix::fs::PermissionsExt;
    let mode = match std::fs::metadata(path) {
        Ok(m) => m.permissions().mode() & 0o777,
        Err(e) => {
            p.add("", format_args!("cannot stat: {}", io_reason(&e)));
            return;
        }
    };
    let secrets = inline_secrets(cfg);
    let exposed = mode & 0o077 != 0 && !secrets.is_empty();
    if !exposed && mode & 0o022 == 0 {
        return;
    }
    let what = if exposed {
        let mut shown = secrets
            .iter()
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if secrets.len() > 3 {
            shown.push_str(", ...");
        }
        format!("group or others may access it (mode {mode:03o}) and it holds secrets ({shown})")
    } else {
        format!(
            "group or others may write it (mode {mode:03o}), and so choose what the workers run"
        )
    };
    p.add(
        "",
        format_args!(
            "{what}; run `chmod 600 {}` (and change the secrets if others could have read them)",
            path.display()
        ),
    );
}

/// Checks the secret files the config names: present, readable, and not
/// readable by others (mode 0600), like ssh does for keys. Done by `load`
/// (which knows the master directory), so checkconfig reports them.
pub(super) fn check_secret_files(cfg: &Config, dir: &Path, p: &mut Problems) {
    use std::os::unix::fs::PermissionsExt;
    let reporters =
        reporter_secrets(cfg).map(|(i, (key, s))| (format!("reporters[{i}].{key}_file"), s));
    let sources = cfg
        .change_source
        .iter()
        .enumerate()
        .filter_map(|(i, cs)| match cs {
            ChangeSource::GiteaPrPoller(g) => {
                Some((format!("change_source[{i}].token_file"), &g.token))
            }
            ChangeSource::GitPoller(_) => None,
        });
    let login = cfg
        .www
        .auth
        .as_ref()
        .map(|a| ("www.auth.client_secret_file".to_string(), &a.client_secret));
    for (at, secret) in reporters.chain(sources).chain(login) {
        let f = match secret {
            Secret::File(f) => f,
            Secret::Inline(_) => continue,
        };
        let path = dir.join(f);
        match std::fs::metadata(&path) {
            Err(e) => p.add(
                &at,
                format_args!("cannot read {}: {}", path.display(), io_reason(&e)),
            ),
            Ok(m) if m.permissions().mode() & 0o077 != 0 => p.add(
                &at,
                format_args!(
                    "{} is readable by others (mode {:o}); run chmod 600 on it",
                    path.display(),
                    m.permissions().mode() & 0o777
                ),
            ),
            Ok(_) => {
                if let Err(e) = std::fs::read_to_string(&path) {
                    p.add(
                        &at,
                        format_args!("cannot read {}: {}", path.display(), io_reason(&e)),
                    );
                }
            }
        }
    }
}

/// The secrets of the reporters: (index, (key, secret)).
fn reporter_secrets(cfg: &Config) -> impl Iterator<Item = (usize, (&'static str, &Secret))> {
    cfg.reporters.iter().enumerate().filter_map(|(i, r)| {
        let secret = match &r.kind {
            ReporterKind::GiteaStatus(g) => Some(("token", &g.token)),
            ReporterKind::Mail(m) => m.login.as_ref().map(|(_, pw)| ("smtp_password", pw)),
        };
        secret.map(|s| (i, s))
    })
}
