//! Server-rendered HTML pages (SPEC §3 "Web pages"); for now the home page.
//!
//! Owns: the HTML of `/` — builders with their last build, running builds,
//! the queue, recent builds — and the small helpers every page will share
//! (escaping, layout, result badges, times). Pure functions over a read-only
//! connection: no threads, no channels; the HTTP layer calls them from its
//! own threads, each with its own connection from `store::open_reader`.
//!
//! Everything that comes from the database (names, state strings, commit
//! text) goes through [`escape_html`]; URLs built from names are also
//! percent-encoded. Pages are built as strings: they are small, and a
//! template engine would be one more dependency for a dozen tags.

use crate::model;
use anyhow::Result;
use rusqlite::Connection;
use std::fmt::Write;

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Percent-encodes one URL path segment (a builder name in a link).
pub fn encode_path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Background colour of a result, as Buildbot's web UI.
pub fn result_colour(results: i64) -> &'static str {
    match results {
        model::SUCCESS => "#8d4",
        model::WARNINGS => "#fa3",
        model::FAILURE => "#e88",
        model::SKIPPED => "#ade",
        model::EXCEPTION => "#c6c",
        model::RETRY | model::CANCELLED => "#ecc",
        _ => "#ccc",
    }
}

/// A coloured badge for a build: its result, or "running" while it has
/// none and is not complete.
fn badge(results: Option<i64>, complete: bool) -> String {
    let (name, colour) = match results {
        Some(r) => (model::result_name(r), result_colour(r)),
        None if !complete => ("running", "#fd3"),
        None => ("unknown", "#ccc"),
    };
    format!("<span class=\"res\" style=\"background:{colour}\">{name}</span>")
}

/// `YYYY-MM-DD HH:MM` in UTC, in a `<time>` element.
fn time_html(ts: i64) -> String {
    let days = ts.div_euclid(86_400);
    let secs = ts.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "<time datetime=\"{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z\">{y:04}-{m:02}-{d:02} {:02}:{:02}</time>",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        secs / 3600,
        secs / 60 % 60,
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard
/// Hinnant's algorithm); saves a date crate for one function.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `1h 02m`, `3m 05s`, `42s`.
fn duration(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, s / 60 % 60),
    }
}

fn build_link(builder: &str, number: i64) -> String {
    format!(
        "<a href=\"/builders/{}/builds/{number}\">#{number}</a>",
        escape_html(&encode_path_segment(builder))
    )
}

fn builder_link(builder: &str) -> String {
    format!(
        "<a href=\"/builders/{}\">{}</a>",
        escape_html(&encode_path_segment(builder)),
        escape_html(builder)
    )
}

const STYLE: &str = "\
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:60rem;padding:0 .75rem;color:#222}\
header{display:flex;flex-wrap:wrap;align-items:baseline;gap:1rem;border-bottom:1px solid #ddd}\
header h1{font-size:1.4rem;margin:.6rem 0}nav a{margin-right:.8rem}\
h2{font-size:1.1rem;margin:1.4rem 0 .4rem}\
.scroll{overflow-x:auto}table{border-collapse:collapse;width:100%}\
th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #eee;white-space:nowrap}\
th{font-weight:600;background:#f6f6f6}a{color:#06c;text-decoration:none}a:hover{text-decoration:underline}\
.res{display:inline-block;padding:0 .4rem;border-radius:.3rem;font-size:.9em}\
.muted{color:#777}";

/// The page frame every page shares: `body` is already HTML.
pub fn layout(title: &str, page: &str, body: &str) -> String {
    let title = escape_html(title);
    let page = escape_html(page);
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{page} - {title}</title><style>{STYLE}</style></head>\n<body>\
         <header><h1><a href=\"/\">{title}</a></h1><nav><a href=\"/\">Home</a>\
         <a href=\"/workers\">Workers</a><a href=\"/changes\">Changes</a></nav></header>\n\
         <main>{body}</main></body></html>\n"
    )
}

/// A table with a header row, scrolling sideways on a narrow screen;
/// `rows` are already HTML cells. An empty table shows `empty` instead.
fn table(headers: &[&str], rows: &[Vec<String>], empty: &str) -> String {
    if rows.is_empty() {
        return format!("<p class=\"muted\">{}</p>", escape_html(empty));
    }
    let mut out = String::from("<div class=\"scroll\"><table><thead><tr>");
    for h in headers {
        let _ = write!(out, "<th>{}</th>", escape_html(h));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{cell}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div>");
    out
}

/// The home page (`/`).
pub fn home(conn: &Connection, title: &str) -> Result<String> {
    home_at(conn, title, model::now())
}

/// The home page as it looks at `now` (running builds' elapsed time).
fn home_at(conn: &Connection, title: &str, now: i64) -> Result<String> {
    let mut body = String::new();
    body.push_str(&builders_section(conn)?);
    body.push_str(&running_section(conn, now)?);
    body.push_str(&queue_section(conn)?);
    body.push_str(&recent_section(conn)?);
    Ok(layout(title, "Home", &body))
}

fn builders_section(conn: &Connection) -> Result<String> {
    let mut stmt = conn.prepare_cached(
        "SELECT bl.name, b.number, b.results, b.complete_at IS NOT NULL,
                coalesce(b.complete_at, b.started_at)
         FROM builders bl
         LEFT JOIN builds b ON b.buildid = (SELECT buildid FROM builds
              WHERE builderid = bl.builderid ORDER BY number DESC LIMIT 1)
         WHERE bl.configured = 1 ORDER BY bl.name",
    )?;
    let rows = stmt
        .query_map([], |r| {
            let name: String = r.get(0)?;
            let number: Option<i64> = r.get(1)?;
            let cells = match number {
                Some(n) => vec![
                    builder_link(&name),
                    build_link(&name, n),
                    badge(r.get(2)?, r.get(3)?),
                    r.get::<_, Option<i64>>(4)?
                        .map(time_html)
                        .unwrap_or_default(),
                ],
                None => vec![
                    builder_link(&name),
                    String::new(),
                    "<span class=\"muted\">no builds</span>".into(),
                    String::new(),
                ],
            };
            Ok(cells)
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(format!(
        "<section><h2>Builders</h2>{}</section>",
        table(
            &["Builder", "Last build", "Result", "When"],
            &rows,
            "No builders configured."
        )
    ))
}

fn running_section(conn: &Connection, now: i64) -> Result<String> {
    let mut stmt = conn.prepare_cached(
        "SELECT bl.name, b.number, b.state_string, b.started_at
         FROM builds b JOIN builders bl ON bl.builderid = b.builderid
         WHERE b.complete_at IS NULL ORDER BY b.started_at, b.buildid",
    )?;
    let rows = stmt
        .query_map([], |r| {
            let name: String = r.get(0)?;
            let started: i64 = r.get(3)?;
            Ok(vec![
                builder_link(&name),
                build_link(&name, r.get(1)?),
                escape_html(&r.get::<_, String>(2)?),
                time_html(started),
                duration(now - started),
            ])
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(format!(
        "<section><h2>Running builds ({})</h2>{}</section>",
        rows.len(),
        table(
            &["Builder", "Build", "State", "Started", "Elapsed"],
            &rows,
            "Nothing running."
        )
    ))
}

fn queue_section(conn: &Connection) -> Result<String> {
    let pending: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM buildrequests WHERE complete = 0 AND claimed_at IS NULL",
        )?
        .query_row([], |r| r.get(0))?;
    let what = if pending == 1 { "request" } else { "requests" };
    Ok(format!(
        "<section><h2>Queue</h2><p>{pending} pending build {what}.</p></section>"
    ))
}

fn recent_section(conn: &Connection) -> Result<String> {
    let mut stmt = conn.prepare_cached(
        "SELECT bl.name, b.number, b.results, b.started_at, b.complete_at
         FROM builds b JOIN builders bl ON bl.builderid = b.builderid
         ORDER BY b.buildid DESC LIMIT 20",
    )?;
    let rows = stmt
        .query_map([], |r| {
            let name: String = r.get(0)?;
            let started: i64 = r.get(3)?;
            let complete: Option<i64> = r.get(4)?;
            Ok(vec![
                builder_link(&name),
                build_link(&name, r.get(1)?),
                badge(r.get(2)?, complete.is_some()),
                time_html(started),
                complete.map(|c| duration(c - started)).unwrap_or_default(),
            ])
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(format!(
        "<section><h2>Recent builds</h2>{}</section>",
        table(
            &["Builder", "Build", "Result", "Started", "Duration"],
            &rows,
            "No builds yet."
        )
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store;

    #[test]
    fn escapes() {
        assert_eq!(
            escape_html("<script>alert('x & \"y\"')</script>"),
            "&lt;script&gt;alert(&#39;x &amp; &quot;y&quot;&#39;)&lt;/script&gt;"
        );
        assert_eq!(escape_html("plain é"), "plain é");
        assert_eq!(encode_path_segment("a b/c<"), "a%20b%2Fc%3C");
    }

    #[test]
    fn times() {
        assert_eq!(
            time_html(0),
            "<time datetime=\"1970-01-01T00:00:00Z\">1970-01-01 00:00</time>"
        );
        assert!(time_html(1_709_210_096).contains("2024-02-29T12:34:56Z"));
        assert_eq!(duration(42), "42s");
        assert_eq!(duration(185), "3m 05s");
        assert_eq!(duration(3720), "1h 02m");
        assert_eq!(duration(-5), "0s");
    }

    fn db() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        store::create(&path).unwrap();
        let conn = Connection::open(&path).unwrap();
        (dir, conn)
    }

    #[test]
    fn empty_home_page() {
        let (_dir, conn) = db();
        let html = home(&conn, "My CI").unwrap();
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("<title>Home - My CI</title>"));
        assert!(html.contains("No builders configured."));
        assert!(html.contains("0 pending build requests."));
    }

    #[test]
    fn home_page_content_is_escaped() {
        let (_dir, conn) = db();
        conn.execute_batch(
            r#"
            INSERT INTO builders (builderid, name) VALUES (1, '<script>alert(1)</script>');
            INSERT INTO builders (builderid, name) VALUES (2, 'linux');
            INSERT INTO builders (builderid, name) VALUES (3, 'idle');
            INSERT INTO builders (builderid, name, configured) VALUES (4, 'gone', 0);
            INSERT INTO buildsets (buildsetid, reason, submitted_at) VALUES (1, 'r', 0);
            INSERT INTO buildrequests (buildrequestid, buildsetid, builderid, submitted_at,
                claimed_at, complete) VALUES (1, 1, 1, 0, 1, 1), (2, 1, 2, 0, NULL, 0),
                (3, 1, 2, 0, NULL, 0), (4, 1, 4, 0, 5, 0);
            INSERT INTO builds (buildid, number, builderid, buildrequestid, started_at,
                complete_at, results, state_string)
              VALUES (1, 7, 1, 1, 1000, 1185, 2, 'failed'),
                     (2, 1, 2, 4, 2000, 2042, 0, 'ok'),
                     (3, 2, 2, 4, 3000, NULL, NULL, 'compiling "x" & <y>');
            "#,
        )
        .unwrap();
        let html = home_at(&conn, "CI & <co>", 3065).unwrap();
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("<title>Home - CI &amp; &lt;co&gt;</title>"));
        assert!(html.contains("compiling &quot;x&quot; &amp; &lt;y&gt;"));
        assert!(html.contains(
            "<a href=\"/builders/%3Cscript%3Ealert%281%29%3C%2Fscript%3E/builds/7\">#7</a>"
        ));
        assert!(html.contains("<a href=\"/builders/linux/builds/2\">#2</a>"));
        // Results with their names and colours; running shows elapsed time.
        assert!(html.contains("background:#e88\">failure</span>"));
        assert!(html.contains("background:#8d4\">success</span>"));
        assert!(html.contains(">running</span>"));
        assert!(html.contains("<h2>Running builds (1)</h2>"));
        assert!(html.contains("<td>1m 05s</td>"));
        // Durations of finished builds in the recent list.
        assert!(html.contains("<td>3m 05s</td>") && html.contains("<td>42s</td>"));
        assert!(html.contains("2 pending build requests."));
        assert!(html.contains("no builds"));
        assert!(!html.contains(">gone<"));
    }
}
