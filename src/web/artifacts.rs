//! Artifact downloads (issue 20): `GET /artifacts/<artifactid>/download`,
//! the file an `upload` step stored, as an attachment, whole or one byte
//! range (`Range: bytes=a-b`, `a-`, `-n`; RFC 9110 §14).
//!
//! No threads or channels: `www` calls [`download`] on the request's
//! thread with its read connection; the file is streamed from disk a piece
//! at a time by `http_server` (`Response::sized`), never read whole. The
//! build page's list is `pages::artifacts_section`; the API's the
//! `artifacts` resource of `db::api`.

use crate::db;
use crate::model::ArtifactId;
use crate::web::http_server::{error, Response};
use anyhow::{Context, Result};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Where an artifact is downloaded (the page's links, the API's `url`).
pub(crate) fn download_url(id: ArtifactId) -> String {
    format!("/artifacts/{id}/download")
}

/// A `Range` header's one range over a file of `size` bytes: Some(Ok(start,
/// end inclusive)), Some(Err(())) when it cannot be satisfied (416), None
/// when the header is absent, not a bytes range, or asks for several
/// ranges (then the whole file is sent, as RFC 9110 allows).
fn parse_range(header: Option<&str>, size: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = header?.trim().strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let range = match (a.is_empty(), b.is_empty()) {
        // bytes=-n: the last n bytes.
        (true, false) => {
            let n = num(b)?;
            if n == 0 || size == 0 {
                return Some(Err(()));
            }
            (size.saturating_sub(n), size - 1)
        }
        (false, true) => (num(a)?, size.saturating_sub(1)),
        (false, false) => {
            let (s, e) = (num(a)?, num(b)?);
            if e < s {
                return None;
            }
            (s, e.min(size.saturating_sub(1)))
        }
        (true, true) => return None,
    };
    if range.0 >= size {
        return Some(Err(()));
    }
    Some(Ok(range))
}

/// `filename` parameters for `Content-Disposition`: the artifact's last
/// path component, an ASCII form (quotes and anything not printable ASCII
/// as `_`) and the exact one percent-encoded (RFC 6266 `filename*`).
fn disposition(name: &str) -> String {
    let base = name.rsplit('/').next().unwrap_or(name);
    let ascii: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let exact: String = url::form_urlencoded::byte_serialize(base.as_bytes())
        .collect::<String>()
        .replace('+', "%20");
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{exact}")
}

/// `GET`/`HEAD /artifacts/<id>/download`.
pub(crate) fn download(
    conn: &db::Conn,
    master_dir: &Path,
    id: ArtifactId,
    range: Option<&str>,
) -> Result<Response> {
    let Some(a) = db::artifact(conn, id)? else {
        return Ok(error(404, "no such artifact"));
    };
    let path = db::artifact_path(master_dir, a.buildid, &a.name);
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(error(410, "the artifact's file is gone from the master"))
        }
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    let size = file.metadata()?.len();
    let common = |r: Response| {
        r.with_header("Content-Disposition", disposition(&a.name))
            .with_header("Accept-Ranges", "bytes")
            .with_header("ETag", format!("\"{}\"", a.sha256))
            .with_header("Cache-Control", "no-store")
    };
    Ok(match parse_range(range, size) {
        None => common(Response::sized(
            200,
            "application/octet-stream",
            Box::new(file),
            size,
        )),
        Some(Err(())) => common(error(416, "range not satisfiable"))
            .with_header("Content-Range", format!("bytes */{size}")),
        Some(Ok((start, end))) => {
            file.seek(SeekFrom::Start(start))?;
            let len = end - start + 1;
            common(Response::sized(
                206,
                "application/octet-stream",
                Box::new(file.take(len)),
                len,
            ))
            .with_header("Content-Range", format!("bytes {start}-{end}/{size}"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let r = |h: &str| parse_range(Some(h), 100);
        assert_eq!(r("bytes=0-9"), Some(Ok((0, 9))));
        assert_eq!(r("bytes=90-"), Some(Ok((90, 99))));
        assert_eq!(r("bytes=-10"), Some(Ok((90, 99))));
        assert_eq!(r("bytes=-1000"), Some(Ok((0, 99))));
        assert_eq!(r("bytes=50-1000"), Some(Ok((50, 99))));
        assert_eq!(r("bytes=100-"), Some(Err(())));
        assert_eq!(r("bytes=-0"), Some(Err(())));
        assert_eq!(r("bytes=0-1,5-6"), None);
        assert_eq!(r("bytes=9-1"), None);
        assert_eq!(r("bytes=x-1"), None);
        assert_eq!(r("bytes=+1-2"), None);
        assert_eq!(r("items=0-1"), None);
        assert_eq!(parse_range(None, 100), None);
        assert_eq!(parse_range(Some("bytes=0-"), 0), Some(Err(())));
    }

    #[test]
    fn disposition_is_a_safe_header() {
        assert_eq!(
            disposition("dist/app 1.tar.gz"),
            "attachment; filename=\"app 1.tar.gz\"; filename*=UTF-8''app%201.tar.gz"
        );
        let d = disposition("a\"b\\ü.txt");
        assert!(d.starts_with("attachment; filename=\"a_b__.txt\""), "{d}");
        assert!(crate::web::http_server::valid_header_value(&d));
    }
}
