//! `minibot sendchange`: one change, posted to a master's base change hook
//! (`POST <master>/change_hook/base`), as Buildbot's `buildbot sendchange`
//! sends one to its PB port.
//!
//! Owns: turning the command's options into the base dialect's JSON fields,
//! signing the body (`X-Hub-Signature-256: sha256=<hex HMAC-SHA256>`, with
//! the secret read from a file so that it shows up in no process list), and
//! saying what the master answered in one sentence. No threads, no
//! channels: one blocking HTTP request. Used from scripts and git
//! `post-receive` hooks (`etc/git-hooks/post-receive`).

use anyhow::{anyhow, bail, Context, Result};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Map, Value};
use sha2::Sha256;
use std::path::PathBuf;
use std::time::Duration;

/// What to send; the fields of Buildbot's `sendchange` that the base
/// dialect stores.
#[derive(Debug, Default, Clone)]
pub struct Change {
    /// The master's web address (`http://localhost:12345/`), `HOST:PORT`, or
    /// the hook URL itself.
    pub master: String,
    pub who: Option<String>,
    pub repository: Option<String>,
    pub project: Option<String>,
    pub branch: Option<String>,
    pub category: Option<String>,
    pub revision: Option<String>,
    pub revlink: Option<String>,
    pub codebase: Option<String>,
    pub comments: Option<String>,
    /// `NAME:VALUE`, as Buildbot's `--property`.
    pub properties: Vec<String>,
    /// Unix seconds.
    pub when: Option<i64>,
    pub files: Vec<String>,
    /// The base dialect's secret, in a file (first line); None sends an
    /// unsigned change (accepted only with `allow_unsigned = true`).
    pub secret_file: Option<PathBuf>,
}

/// The hook URL for `--master`: a URL ending in `/change_hook/base` as is,
/// any other URL (or `HOST:PORT`) with `change_hook/base` appended.
pub fn hook_url(master: &str) -> Result<String> {
    let m = master.trim();
    if m.is_empty() {
        bail!("--master is empty: give the master's web address, e.g. http://localhost:12345/");
    }
    let base = if m.contains("://") {
        if !(m.starts_with("http://") || m.starts_with("https://")) {
            bail!("--master {m:?}: only http:// and https:// addresses are supported");
        }
        m.to_string()
    } else {
        format!("http://{m}")
    };
    if base.trim_end_matches('/').ends_with("/change_hook/base") {
        return Ok(base.trim_end_matches('/').to_string());
    }
    Ok(format!("{}/change_hook/base", base.trim_end_matches('/')))
}

/// The JSON body the base dialect reads.
pub fn body(c: &Change) -> Result<Vec<u8>> {
    let mut m = Map::new();
    let mut put = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            m.insert(k.to_string(), Value::String(v.clone()));
        }
    };
    put("author", &c.who);
    put("repository", &c.repository);
    put("project", &c.project);
    put("branch", &c.branch);
    put("category", &c.category);
    put("revision", &c.revision);
    put("revlink", &c.revlink);
    put("codebase", &c.codebase);
    // The master requires comments (Buildbot's database does too); an empty
    // text is a valid one.
    m.insert(
        "comments".into(),
        Value::String(c.comments.clone().unwrap_or_default()),
    );
    if let Some(when) = c.when {
        m.insert("when_timestamp".into(), json!(when));
    }
    if !c.files.is_empty() {
        m.insert("files".into(), json!(c.files));
    }
    if !c.properties.is_empty() {
        let mut props = Map::new();
        for p in &c.properties {
            let Some((name, value)) = p.split_once(':') else {
                bail!("--property {p:?}: expected NAME:VALUE, e.g. --property owner:alice");
            };
            if name.is_empty() {
                bail!("--property {p:?}: the name before ':' is empty");
            }
            props.insert(name.to_string(), Value::String(value.to_string()));
        }
        m.insert("properties".into(), Value::Object(props));
    }
    Ok(serde_json::to_vec(&Value::Object(m))?)
}

/// The secret in `path`: its first line, which must not be empty.
fn read_secret(path: &std::path::Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--secret-file: cannot read {}", path.display()))?;
    let secret = text.lines().next().unwrap_or("").trim().to_string();
    if secret.is_empty() {
        bail!(
            "--secret-file {}: the file is empty; it should hold the secret of \
             [www.change_hook_dialects.base] in master.cfg",
            path.display()
        );
    }
    Ok(secret)
}

/// Posts the change; returns the ids of the changes the master stored.
pub fn send(c: &Change) -> Result<Vec<i64>> {
    let url = hook_url(&c.master)?;
    let body = body(c)?;
    let signature = match &c.secret_file {
        Some(f) => {
            let secret = read_secret(f)?;
            let mut mac =
                Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
            mac.update(&body);
            Some(format!(
                "sha256={}",
                hex::encode(mac.finalize().into_bytes())
            ))
        }
        None => None,
    };
    let config = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_global(Some(Duration::from_secs(60)))
        .user_agent(concat!("minibot-sendchange/", env!("CARGO_PKG_VERSION")))
        .http_status_as_error(false)
        .build();
    let agent = ureq::Agent::new_with_config(config);
    let mut req = agent.post(&url).header("Content-Type", "application/json");
    if let Some(sig) = &signature {
        req = req.header("X-Hub-Signature-256", sig);
    }
    let mut resp = req.send(&body[..]).map_err(|e| match e {
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => anyhow!(
            "nobody is listening at {url} (is the master running, and is --master its [www] address?)"
        ),
        e => anyhow!("cannot post to {url}: {e}"),
    })?;
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .with_config()
        .limit(64 * 1024)
        .read_to_string()
        .unwrap_or_default();
    let answer: Option<Value> = serde_json::from_str(&text).ok();
    let error = answer
        .as_ref()
        .and_then(|v| v["error"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| text.trim().chars().take(200).collect());
    match status {
        200 => {
            let ids = answer
                .as_ref()
                .and_then(|v| v["changes"].as_array())
                .ok_or_else(|| anyhow!("{url} answered 200 but not with a change hook's answer: {text:?} (is --master a minibot master?)"))?
                .iter()
                .filter_map(Value::as_i64)
                .collect();
            Ok(ids)
        }
        403 if signature.is_none() => bail!(
            "the master refused the change ({error}); give the base hook's secret with --secret-file FILE"
        ),
        403 => bail!(
            "the master refused the change ({error}); does the file given to --secret-file hold \
             the secret of [www.change_hook_dialects.base] in master.cfg?"
        ),
        404 => bail!(
            "{url} answered 404 ({error}); enable the base hook in master.cfg: \
             [www.change_hook_dialects.base] with a secret"
        ),
        code => bail!("{url} answered {code}: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_url_from_the_forms_of_master() {
        for (m, want) in [
            (
                "http://localhost:12345/",
                "http://localhost:12345/change_hook/base",
            ),
            (
                "http://localhost:12345",
                "http://localhost:12345/change_hook/base",
            ),
            ("localhost:12345", "http://localhost:12345/change_hook/base"),
            (
                "https://ci.example.org/minibot/",
                "https://ci.example.org/minibot/change_hook/base",
            ),
            ("http://h:1/change_hook/base", "http://h:1/change_hook/base"),
        ] {
            assert_eq!(hook_url(m).unwrap(), want, "{m}");
        }
        assert!(hook_url("ftp://x").is_err());
        assert!(hook_url("").is_err());
    }

    #[test]
    fn body_has_the_base_dialect_fields() {
        let c = Change {
            who: Some("Jane <j@example.org>".into()),
            branch: Some("main".into()),
            revision: Some("abc".into()),
            properties: vec!["owner:alice".into(), "url:http://x:1/".into()],
            files: vec!["a.c".into()],
            when: Some(1717489540),
            ..Change::default()
        };
        let v: Value = serde_json::from_slice(&body(&c).unwrap()).unwrap();
        assert_eq!(v["author"], "Jane <j@example.org>");
        assert_eq!(v["comments"], "");
        assert_eq!(v["properties"]["url"], "http://x:1/");
        assert_eq!(v["files"][0], "a.c");
        assert_eq!(v["when_timestamp"], 1717489540);
        let bad = Change {
            properties: vec!["noval".into()],
            ..Change::default()
        };
        assert!(body(&bad).is_err());
    }
}
