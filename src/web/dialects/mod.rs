//! Change-hook dialects: a received HTTP request → the changes it announces.
//!
//! Owns: the request/outcome types the HTTP layer exchanges with the
//! dialects, and the helpers every dialect shares (HMAC signature check,
//! body decoding, JSON errors, RFC 3339 timestamps, repository and codebase
//! selection). The dialects themselves live in `gitea`, `github` and `base`;
//! `forge` holds what Gitea and GitHub payloads have in common.
//!
//! Pure functions only: no threads, no channels, no I/O, no database. The
//! HTTP layer builds a [`HookRequest`], calls a dialect's `handle`, stores
//! the returned changes and answers 200 / 400 / 403 from the outcome.

pub mod base;
mod forge;
pub mod gitea;
pub mod github;

/// For the PR poller: Gitea's pull request list, read with the webhook's types.
pub(crate) use forge::{listed_pulls, ListedPull};

use crate::config::{GiteaDialect, RepositoryUrl};
use crate::model::NewChange;
use hmac::{Hmac, KeyInit, Mac};
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha1::Sha1;
use sha2::Sha256;
use std::fmt;

/// What a dialect needs from an HTTP request.
#[derive(Debug, Clone, Default)]
pub struct HookRequest<'a> {
    /// Header names lower-cased by the HTTP layer.
    pub headers: Vec<(String, String)>,
    /// URL query parameters, already percent-decoded.
    pub query: Vec<(String, String)>,
    /// Raw bytes exactly as received: signatures are computed over these.
    pub body: &'a [u8],
}

impl HookRequest<'_> {
    /// First value of a header. Case-insensitive even though the HTTP layer
    /// lower-cases names, so a caller that forgets cannot break signatures.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// First value of a query parameter (names are case-sensitive, as in URLs).
    pub(crate) fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A successfully understood hook.
#[derive(Debug, Clone, PartialEq)]
pub enum HookOutcome {
    /// Changes to store, oldest first. `delivery` is the sender's delivery id
    /// (`X-Gitea-Delivery` / `X-GitHub-Delivery`) for logs and deduplication.
    Changes {
        changes: Vec<NewChange>,
        delivery: Option<String>,
    },
    /// Valid but nothing to build: answer 200 with this text.
    Ignored(String),
}

/// A rejected hook. Nothing may be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookError {
    /// 403: the signature is missing or wrong.
    Forbidden(String),
    /// 400: the body cannot be understood.
    BadRequest(String),
}

impl HookError {}

impl fmt::Display for HookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HookError::Forbidden(m) | HookError::BadRequest(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for HookError {}

fn bad(msg: impl Into<String>) -> HookError {
    HookError::BadRequest(msg.into())
}

/// The hash under a webhook's HMAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Digest {
    Sha256,
    /// GitHub's older `X-Hub-Signature: sha1=<hex>`, still sent by GitHub
    /// and Gitea and the only one Buildbot's GitHub hook checks.
    Sha1,
}

/// A header that may carry a signature, and its hash.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SignatureHeader {
    pub name: &'static str,
    pub digest: Digest,
}

/// `X-Hub-Signature-256: sha256=<hex>` (GitHub, `minibot sendchange`).
pub(crate) const HUB_SHA256: SignatureHeader = SignatureHeader {
    name: "x-hub-signature-256",
    digest: Digest::Sha256,
};

fn hmac_matches<M: Mac + KeyInit>(secret: &str, body: &[u8], expected: &[u8]) -> bool {
    let Ok(mut mac) = <M as KeyInit>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(expected).is_ok()
}

/// Checks a hex HMAC of `body` keyed with `secret`, in constant time
/// (`verify_slice`), so response timing leaks nothing about the expected
/// value. Accepts GitHub's `sha256=` / `sha1=` prefix and either hex case.
pub(crate) fn verify_hmac_hex(
    digest: Digest,
    secret: &str,
    body: &[u8],
    signature_hex: &str,
) -> bool {
    let sig = signature_hex.trim();
    let prefix = match digest {
        Digest::Sha256 => "sha256=",
        Digest::Sha1 => "sha1=",
    };
    let sig = sig.strip_prefix(prefix).unwrap_or(sig);
    let Ok(expected) = hex::decode(sig) else {
        return false;
    };
    match digest {
        Digest::Sha256 => hmac_matches::<Hmac<Sha256>>(secret, body, &expected),
        Digest::Sha1 => hmac_matches::<Hmac<Sha1>>(secret, body, &expected),
    }
}

/// When a secret is configured, requires the first of `headers` the request
/// carries to hold a valid signature of one of `signed` (the bytes the
/// sender may have signed: the raw body, or for Gitea the JSON payload). Runs before the
/// payload is parsed, so an unsigned request cannot even probe the JSON
/// parser. The first header present decides, so a request with a wrong
/// SHA-256 signature cannot fall back to a SHA-1 one. Without a secret every
/// request is accepted (signed or not), as Buildbot and Gitea do.
fn check_signature(
    secret: Option<&str>,
    req: &HookRequest,
    headers: &[SignatureHeader],
    signed: &[&[u8]],
) -> Result<(), HookError> {
    let Some(secret) = secret else {
        return Ok(());
    };
    // Gitea sends the header empty when its webhook has no secret: treat an
    // empty value (or a bare "sha256=") as missing, for a clearer message.
    let found = headers.iter().find_map(|h| {
        req.header(h.name)
            .map(str::trim)
            .filter(|s| !s.is_empty() && *s != "sha256=" && *s != "sha1=")
            .map(|sig| (h, sig))
    });
    let names = || {
        headers
            .iter()
            .map(|h| h.name)
            .collect::<Vec<_>>()
            .join(" or ")
    };
    match found {
        None => Err(HookError::Forbidden(format!(
            "missing {} signature",
            names()
        ))),
        Some((h, sig))
            if signed
                .iter()
                .any(|bytes| verify_hmac_hex(h.digest, secret, bytes, sig)) =>
        {
            Ok(())
        }
        Some((h, _)) => Err(HookError::Forbidden(format!("wrong {} signature", h.name))),
    }
}

/// How the body is encoded, from `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Json,
    Form,
}

/// `default` applies when there is no `Content-Type` at all; anything else
/// we cannot read is a 400 rather than a guess.
fn body_kind(req: &HookRequest, default: BodyKind) -> Result<BodyKind, HookError> {
    let Some(ct) = req.header("content-type") else {
        return Ok(default);
    };
    // Parameters such as "; charset=utf-8" do not change the decoding.
    let media = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "" => Ok(default),
        "application/json" => Ok(BodyKind::Json),
        "application/x-www-form-urlencoded" => Ok(BodyKind::Form),
        m if m.ends_with("+json") => Ok(BodyKind::Json),
        m => Err(bad(format!(
            "unsupported content type '{m}': expected application/json or application/x-www-form-urlencoded"
        ))),
    }
}

/// Decodes an `application/x-www-form-urlencoded` body. Invalid UTF-8 after
/// percent-decoding becomes U+FFFD, which is what the WHATWG URL standard
/// prescribes for this format (and what browsers and Gitea's Go side do).
fn form_fields(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// Parses JSON from raw bytes, insisting on UTF-8 first so the message says
/// what is actually wrong.
fn parse_json_bytes(bytes: &[u8]) -> Result<Value, HookError> {
    parse_json_str(body_text(bytes)?, "body")
}

fn body_text(bytes: &[u8]) -> Result<&str, HookError> {
    std::str::from_utf8(bytes).map_err(|e| bad(format!("body is not valid UTF-8: {e}")))
}

fn parse_json_str(text: &str, what: &str) -> Result<Value, HookError> {
    serde_json::from_str(text).map_err(|e| bad(format!("malformed JSON in {what}: {e}")))
}

/// The JSON text of a Gitea/GitHub-style hook: the raw body, or the
/// `payload` field of a form-encoded body (both forges' "form" content
/// type), with what to call it in an error.
fn forge_json_text<'a>(
    req: &'a HookRequest,
) -> Result<(std::borrow::Cow<'a, str>, &'static str), HookError> {
    match body_kind(req, BodyKind::Json)? {
        BodyKind::Json => Ok((body_text(req.body)?.into(), "body")),
        BodyKind::Form => {
            let payload = form_fields(req.body)
                .into_iter()
                .find(|(k, _)| k == "payload")
                .map(|(_, v)| v)
                .ok_or_else(|| bad("form-encoded body has no 'payload' field"))?;
            Ok((payload.into(), "form field 'payload'"))
        }
    }
}

/// Typed view of a JSON document (`doc` says where it came from), parsed
/// straight from its text: a `Value` tree first would allocate a map entry
/// per field of the payload, and a Gitea push has a few hundred, nearly
/// all of which minibot skips (docs/performance.md, "Ingestion"). Broken
/// JSON is "malformed JSON in ..."; well-formed JSON of the wrong shape
/// names the JSON path (e.g. `commits[0].id: invalid type: null`), which
/// is what a person debugging a webhook needs.
fn typed_json<T: DeserializeOwned>(text: &str, doc: &str, what: &str) -> Result<T, HookError> {
    let malformed = |e: &serde_json::Error| bad(format!("malformed JSON in {doc}: {e}"));
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        use serde_json::error::Category;
        if matches!(e.inner().classify(), Category::Syntax | Category::Eof) {
            return malformed(e.inner());
        }
        let path = e.path().to_string();
        if path == "." {
            bad(format!("invalid {what}: {}", e.inner()))
        } else {
            bad(format!("invalid {what}: {path}: {}", e.inner()))
        }
    })?;
    de.end().map_err(|e| malformed(&e))?;
    Ok(value)
}

/// `?codebase=` wins (so one hook URL per codebase works, as in Buildbot),
/// then the configured default, then "".
fn select_codebase(req: &HookRequest, configured: Option<&str>) -> String {
    req.query_param("codebase")
        .or(configured)
        .unwrap_or("")
        .to_string()
}

/// The repository URL stored in changes: per `repository_url`, `ssh_url`
/// (gitea's default, as buildbot_gitea), `clone_url`, or `html_url` (github's
/// default, as Buildbot's GitHub hook). Falls back to the next non-empty one.
fn select_repository_url(
    cfg: &GiteaDialect,
    ssh_url: &str,
    clone_url: &str,
    html_url: &str,
) -> String {
    let order = match cfg.repository_url {
        RepositoryUrl::Clone => [clone_url, ssh_url, html_url],
        RepositoryUrl::Ssh => [ssh_url, clone_url, html_url],
        RepositoryUrl::Html => [html_url, clone_url, ssh_url],
    };
    order
        .into_iter()
        .find(|u| !u.is_empty())
        .unwrap_or("")
        .to_string()
}

/// A ref id that means "does not exist" (sha1 or sha256 repositories).
fn is_zero_sha(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b == b'0')
}

/// Parses an RFC 3339 timestamp (`2024-06-03T14:11:58+02:00`,
/// `...Z`, optional fraction) into Unix seconds.
///
/// Hand-written rather than a date crate: forges send exactly this one
/// format, the parser is ~40 lines with range checks, and it is tested below
/// against values computed independently (`date -d`).
fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let digits = |from: usize, to: usize| s.get(from..to).and_then(ascii_number);
    let sep = |i: usize, allowed: &[u8]| b.get(i).is_some_and(|c| allowed.contains(c));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (digits(0, 4)?, digits(5, 7)?, digits(8, 10)?);
    let (hour, minute, second) = (digits(11, 13)?, digits(14, 16)?, digits(17, 19)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }

    let mut rest = s.get(19..)?;
    if let Some(frac) = rest.strip_prefix('.') {
        // Sub-second precision is dropped: changes are stored in seconds.
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        rest = frac.get(n..)?;
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.as_bytes().get(3) != Some(&b':') {
                return None;
            }
            let oh = rest.get(1..3).and_then(ascii_number)?;
            let om = rest.get(4..6).and_then(ascii_number)?;
            if oh > 23 || om > 59 {
                return None;
            }
            sign * (oh * 3600 + om * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

/// A run of ASCII digits (no sign, unlike `str::parse`).
fn ascii_number(t: &str) -> Option<i64> {
    if !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit()) {
        t.parse().ok()
    } else {
        None
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`; years counted from March so leap days come last).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Fixture loading shared by the dialect tests.
    use super::HookRequest;
    use hmac::{Hmac, KeyInit, Mac};
    use sha2::Sha256;

    pub(crate) const FIXTURE_SECRET: &str = "fixture-secret";

    pub(crate) fn fixture_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("test-fixtures/gitea")
    }

    /// The payload file names (every `*.json` except the two non-payloads).
    pub(crate) fn payload_names() -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(fixture_dir())
            .expect("fixture dir")
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|n| {
                n.ends_with(".json") && n != "headers.json" && n != "status_api_schema.json"
            })
            .collect();
        names.sort();
        names
    }

    /// Body bytes exactly as stored, and the headers Gitea sends with them
    /// (names lower-cased, as the HTTP layer delivers them).
    pub(crate) fn fixture(name: &str) -> (Vec<(String, String)>, Vec<u8>) {
        let body = std::fs::read(fixture_dir().join(name)).expect("fixture body");
        let all: serde_json::Value = serde_json::from_slice(
            &std::fs::read(fixture_dir().join("headers.json")).expect("headers.json"),
        )
        .expect("headers.json is JSON");
        let headers = all["files"][name]
            .as_object()
            .unwrap_or_else(|| panic!("no headers for {name}"))
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str().expect("str").to_string()))
            .collect();
        (headers, body)
    }

    pub(crate) fn request<'a>(headers: &[(String, String)], body: &'a [u8]) -> HookRequest<'a> {
        HookRequest {
            headers: headers.to_vec(),
            query: vec![],
            body,
        }
    }

    pub(crate) fn sign(secret: &str, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    /// Replaces (or adds) a header.
    pub(crate) fn set_header(headers: &mut Vec<(String, String)>, name: &str, value: &str) {
        headers.retain(|(k, _)| k != name);
        headers.push((name.to_string(), value.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_accepts_fixture_signature_with_and_without_prefix() {
        let (_, body) = testutil::fixture("push_branch_two_commits.json");
        let sig = "8aa3d63ff8fd9f67c0a6928e4f74a6a6252340df086f0c9c2adf11885ab03e41";
        assert!(verify_hmac_hex(
            Digest::Sha256,
            "fixture-secret",
            &body,
            sig
        ));
        assert!(verify_hmac_hex(
            Digest::Sha256,
            "fixture-secret",
            &body,
            &format!("sha256={sig}")
        ));
        assert!(verify_hmac_hex(
            Digest::Sha256,
            "fixture-secret",
            &body,
            &sig.to_uppercase()
        ));
        assert!(!verify_hmac_hex(Digest::Sha256, "other-secret", &body, sig));
        assert!(!verify_hmac_hex(
            Digest::Sha256,
            "fixture-secret",
            b"{}",
            sig
        ));
        assert!(!verify_hmac_hex(
            Digest::Sha256,
            "fixture-secret",
            &body,
            &sig[..62]
        ));
        assert!(!verify_hmac_hex(
            Digest::Sha256,
            "fixture-secret",
            &body,
            "zz"
        ));
        assert!(!verify_hmac_hex(
            Digest::Sha256,
            "fixture-secret",
            &body,
            ""
        ));
    }

    #[test]
    fn header_lookup_is_case_insensitive() {
        let req = HookRequest {
            headers: vec![("x-gitea-event".into(), "push".into())],
            query: vec![("codebase".into(), "cb".into())],
            body: b"",
        };
        assert_eq!(req.header("X-Gitea-Event"), Some("push"));
        assert_eq!(req.header("x-other"), None);
        assert_eq!(req.query_param("codebase"), Some("cb"));
        assert_eq!(select_codebase(&req, Some("cfg")), "cb");
        let req = HookRequest::default();
        assert_eq!(select_codebase(&req, Some("cfg")), "cfg");
        assert_eq!(select_codebase(&req, None), "");
    }

    #[test]
    fn content_types() {
        let with = |ct: &str| HookRequest {
            headers: vec![("content-type".into(), ct.into())],
            ..Default::default()
        };
        let json = BodyKind::Json;
        let form = BodyKind::Form;
        assert_eq!(body_kind(&with("application/json"), form), Ok(json));
        assert_eq!(
            body_kind(&with("Application/JSON; charset=utf-8"), form),
            Ok(json)
        );
        assert_eq!(
            body_kind(&with("application/x-www-form-urlencoded"), json),
            Ok(form)
        );
        assert_eq!(body_kind(&HookRequest::default(), form), Ok(form));
        assert!(matches!(
            body_kind(&with("text/plain"), json),
            Err(HookError::BadRequest(_))
        ));
    }

    #[test]
    fn rfc3339() {
        // Expected values from `date -u -d ... +%s`.
        assert_eq!(parse_rfc3339("2024-06-03T14:11:58+02:00"), Some(1717416718));
        assert_eq!(parse_rfc3339("2024-06-04T08:25:40Z"), Some(1717489540));
        assert_eq!(
            parse_rfc3339("2024-06-04t08:25:40.123456z"),
            Some(1717489540)
        );
        assert_eq!(parse_rfc3339("2024-06-04 04:25:40-04:00"), Some(1717489540));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), Some(951782400));
        assert_eq!(parse_rfc3339("0001-01-01T00:00:00Z"), Some(-62135596800));
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), Some(-1));
        for bad in [
            "",
            "2024-06-04",
            "2024-06-04T08:25:40",
            "2024-13-04T08:25:40Z",
            "2023-02-29T08:25:40Z",
            "2024-06-04T24:00:00Z",
            "2024-06-04T08:25:40+0200",
            "2024-06-04T08:25:40+2a:00",
            "2024-06-04T08:25:40.Z",
            "2024-06-04T08:25:40Zjunk",
            "2024-06-0éT08:25:40Z",
            "+024-06-04T08:25:40Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn zero_sha() {
        assert!(is_zero_sha("0000000000000000000000000000000000000000"));
        assert!(!is_zero_sha(""));
        assert!(!is_zero_sha("000a"));
    }

    #[test]
    fn repository_selection() {
        let mut cfg = GiteaDialect::default();
        assert_eq!(select_repository_url(&cfg, "ssh", "https", "web"), "ssh");
        assert_eq!(select_repository_url(&cfg, "", "https", "web"), "https");
        cfg.repository_url = RepositoryUrl::Clone;
        assert_eq!(select_repository_url(&cfg, "ssh", "https", "web"), "https");
        cfg.repository_url = RepositoryUrl::Html;
        assert_eq!(select_repository_url(&cfg, "ssh", "https", "web"), "web");
        assert_eq!(select_repository_url(&cfg, "ssh", "https", ""), "https");
        cfg.repository_url = RepositoryUrl::Ssh;
        assert_eq!(select_repository_url(&cfg, "ssh", "https", "web"), "ssh");
    }
}
