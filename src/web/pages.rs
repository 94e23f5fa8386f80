//! Server-rendered HTML pages (SPEC §3 "Web pages").
//!
//! Owns: the HTML of every page — home, builder (with the force form),
//! build (steps, logs, stop and rebuild), workers, changes, the request
//! queue, login — and of the fragments live updates replace (`build_head`,
//! `step_head`, `step_html`), plus the status badge SVG. Pure functions over
//! the view structs `db` returns (`db::BuildRow`, `db::StepRow`, ...), read
//! on a `db::Conn`: no threads, no channels, no SQL; `www` calls them from
//! its HTTP threads (a reader lent by `Store::reader`), `sse` from
//! live-tail threads (each with `Store::own_reader`).
//!
//! Every page and fragment is [`Html`], built with `html!` (see `html.rs`):
//! everything that comes from the database or a request (names, state
//! strings, commit text, log text) is escaped because it is a `&str` or
//! `String` argument, not because someone remembered to; URLs built from
//! names are also percent-encoded. Pages carry no inline script or
//! style (the CSP forbids both): the stylesheet and the script are
//! `web/assets/*`, served from the binary (`assets.rs`). Forms that write carry the
//! session's CSRF token and are shown only to a logged-in user.

use crate::config::{Config, ParamKind};
use crate::db;
use crate::master::locks;
use crate::model::{BuildId, BuildResult, BuilderId, LogId, RequestId};
use crate::web::html::{html, html_push, Html};
use crate::web::logview;
use anyhow::{Context, Result};
use std::fmt::Write;
use std::path::Path;

/// Percent-encodes one URL path segment (a builder name in a link).
pub(crate) fn encode_path_segment(s: &str) -> String {
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

/// Background colour of a result, as Buildbot's web UI (badges; the pages
/// use the `r<N>` classes of the stylesheet, which match).
pub(crate) fn result_colour(results: BuildResult) -> &'static str {
    match results {
        BuildResult::Success => "#8d4",
        BuildResult::Warnings => "#fa3",
        BuildResult::Failure => "#e88",
        BuildResult::Skipped => "#ade",
        BuildResult::Exception => "#c6c",
        BuildResult::Retry | BuildResult::Cancelled => "#ecc",
    }
}

/// A coloured badge for a build or step: its result, or "running" while it
/// has none and is not complete.
fn badge(results: Option<BuildResult>, complete: bool) -> Html {
    let (class, word) = result_class(results, complete);
    html!("<span class=\"{}\">{}</span>", class, word)
}

/// A build's `#number` and result as one badge that links the build (by
/// its short address, `build_id_url`): where a list shows both, a cell
/// and a link fewer a row (issue 17 point 8, 20 KB a page).
fn build_badge(
    buildid: BuildId,
    number: i64,
    results: Option<BuildResult>,
    complete: bool,
) -> Html {
    let (class, word) = result_class(results, complete);
    // The short address inline (as `build_id_url` makes it): no string of
    // its own, a home page has some twenty badges.
    html!(
        "<a class=\"{}\" href=\"/builds/{}\">#{} {}</a>",
        class,
        buildid,
        number,
        word
    )
}

/// A badge's classes (`res`, and the result's `r<N>` (Buildbot's code) or
/// `running`, which the stylesheet colours and gives a glyph) and its word.
fn result_class(results: Option<BuildResult>, complete: bool) -> (&'static str, &'static str) {
    let class = match results {
        Some(BuildResult::Success) => "res r0",
        Some(BuildResult::Warnings) => "res r1",
        Some(BuildResult::Failure) => "res r2",
        Some(BuildResult::Skipped) => "res r3",
        Some(BuildResult::Exception) => "res r4",
        Some(BuildResult::Retry) => "res r5",
        Some(BuildResult::Cancelled) => "res r6",
        None if !complete => "res running",
        None => "res",
    };
    let word = match results {
        Some(r) => r.name(),
        None if !complete => "running",
        None => "unknown",
    };
    (class, word)
}

/// `YYYY-MM-DD HH:MM:SSZ` (UTC) in a `<time>` element; the page's script
/// shows it in the browser's time zone (to the minute, the second in its
/// title). The text is a valid date-time string itself, so no `datetime`
/// attribute repeats it: a home page has some thirty times, 30 bytes
/// each saved (issue 17 point 8, 20 KB a page). The digits are put in
/// place by hand: two `format!`s of six padded numbers each were 15 % of
/// the home page's instructions (callgrind, 25 times a page).
fn time_html(ts: i64) -> Html {
    let days = ts.div_euclid(86_400);
    let secs = ts.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    if !(0..=9999).contains(&y) {
        // Not a time this master wrote; shown as it is.
        return html!("<time>{}</time>", ts);
    }
    let mut iso = *b"0000-00-00T00:00:00Z";
    for (at, width, n) in [
        (0, 4, y),
        (5, 2, m),
        (8, 2, d),
        (11, 2, secs / 3600),
        (14, 2, secs / 60 % 60),
        (17, 2, secs % 60),
    ] {
        let mut n = n;
        for i in (at..at + width).rev() {
            // 0..=9: an ASCII digit.
            iso[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    }
    // A space for the `T`, as HTML allows: what a reader without the
    // script sees.
    iso[10] = b' ';
    // ASCII digits and separators only, so UTF-8.
    let shown = std::str::from_utf8(&iso).unwrap_or_default();
    html!("<time>{}</time>", shown)
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

/// `1h 02m`, `3m 05s`, `42s` (text, not markup).
fn duration(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, s / 60 % 60),
    }
}

/// How long something took, or a clock the script keeps running while it
/// is not finished.
fn took(started: Option<i64>, complete: Option<i64>, now: i64) -> Html {
    match (started, complete) {
        (Some(s), Some(c)) => Html::text(&duration(c - s)),
        (Some(s), None) => html!("<span data-since=\"{}\">{}</span>", s, duration(now - s)),
        _ => Html::new(),
    }
}

fn build_url(builder: &str, number: i64) -> String {
    format!("/builders/{}/builds/{number}", encode_path_segment(builder))
}

fn build_link(builder: &str, number: i64) -> Html {
    html!("<a href=\"{}\">#{}</a>", build_url(builder, number), number)
}

/// A build's short address, `/builds/<id>`, which redirects to its page
/// (`build_url`): for the strips, charts and long build lists of the
/// overview pages, where the builder's name in every link was a fifth of
/// a busy home page (issue 17 point 8: 20 KB a page).
fn build_id_url(buildid: BuildId) -> String {
    format!("/builds/{buildid}")
}

/// `#<number>` linked by the build's short address (`build_id_url`).
fn build_id_link(buildid: BuildId, number: i64) -> Html {
    html!("<a href=\"{}\">#{}</a>", build_id_url(buildid), number)
}

fn builder_link(builder: &str) -> Html {
    html!(
        "<a href=\"/builders/{}\">{}</a>",
        encode_path_segment(builder),
        builder
    )
}

/// Changes shown per page on the changes page.
pub(crate) const PAGE_SIZE: i64 = 30;

/// Builds shown per page on a builder's page: 20, as many as its history
/// strip holds; at 30 (a row and a bar of the duration chart, some 330
/// bytes a build) a busy builder's page passed 20 KB (issue 17 point 8).
pub(crate) const BUILDS_PAGE: i64 = 20;

/// What every page needs: the read connection, the loaded config, who is
/// looking, and the time.
pub(crate) struct Ctx<'a> {
    pub conn: &'a db::Conn,
    pub cfg: &'a Config,
    /// The logged-in user, if any.
    pub user: Option<&'a str>,
    /// The session's CSRF token when its user may write. Forms that write
    /// are shown only with one (a session login); without, the page offers
    /// to log in, or says that the user may not.
    pub csrf: Option<&'a str>,
    /// The session's CSRF token whatever the user may do: the "Log out"
    /// button (a Gitea login without a role has this, not `csrf`).
    pub session: Option<&'a str>,
    pub master_dir: &'a Path,
    pub now: i64,
}

impl Ctx<'_> {
    /// The page frame every page shares. `path` is where the login link
    /// comes back to, and marks its nav link as the current page. A skip
    /// link comes first (keyboard users pass the nav with one key). Build
    /// and log pages (by their path) also link the log stylesheet, and
    /// each kind of page its own script (`assets.rs`).
    pub(crate) fn layout(&self, page: &str, path: &str, body: Html) -> Html {
        self.layout_with(page, path, body, false)
    }

    /// [`Ctx::layout`], linking the log colours (`/assets/ansi.css`) too
    /// when `palette` (or on a log page): 2 KB a build page whose logs have
    /// no colour does not carry.
    pub(crate) fn layout_with(&self, page: &str, path: &str, body: Html, palette: bool) -> Html {
        let title = &self.cfg.title;
        let who = match (self.user, self.session) {
            (Some(u), Some(token)) => html!(
                "<span>{}</span>{}",
                u,
                self.form_with(Some(token), "/logout", "Log out", Html::new())
            ),
            (Some(u), None) => html!("<span>{}</span>", u),
            (None, _) => html!("<a href=\"/login?next={}\">Log in</a>", url_encode(path)),
        };
        // One script a page, of its kind (`assets.rs`); the log
        // stylesheet too on build and log pages.
        let log_page = path.starts_with("/logs/");
        let build_page = path.starts_with("/builders/") && path.contains("/builds/");
        let (log_css, script) = if log_page || build_page {
            (
                html!(
                    "<link rel=\"stylesheet\" href=\"/assets/log.css\">{}",
                    if palette || log_page {
                        html!("<link rel=\"stylesheet\" href=\"/assets/ansi.css\">")
                    } else {
                        Html::new()
                    }
                ),
                if log_page { "logpage.js" } else { "log.js" },
            )
        } else if path.starts_with("/buildrequests/") {
            (Html::new(), "request.js")
        } else {
            (Html::new(), "minibot.js")
        };
        // `www` cuts a live page's fragment at this `<main id="main">`.
        html!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{} - {}</title>\
             <link rel=\"icon\" href=\"/assets/favicon.svg\" type=\"image/svg+xml\">\
             <link rel=\"stylesheet\" href=\"/assets/minibot.css\">{}\
             <script src=\"/assets/{}\" defer></script></head>\n\
             <body data-now=\"{}\"><a class=\"skip\" href=\"#main\">Skip to content</a>\
             <header><h1><a href=\"/\">{}</a></h1><nav>{}</nav>\
             <div class=\"who\">{}</div></header>\n<main id=\"main\">{}</main></body></html>\n",
            page,
            title,
            log_css,
            script,
            self.now,
            title,
            nav(path),
            who,
            body
        )
    }

    /// A one-button form that POSTs to `action` with the CSRF token and the
    /// hidden fields in `extra`; empty without a session.
    fn post_form(&self, action: &str, label: &str, extra: Html) -> Html {
        self.form_with(self.csrf, action, label, extra)
    }

    /// [`Ctx::post_form`] with the token `csrf`.
    fn form_with(&self, csrf: Option<&str>, action: &str, label: &str, extra: Html) -> Html {
        let Some(csrf) = csrf else {
            return Html::new();
        };
        let class = if matches!(label, "Stop" | "Cancel") {
            html!(" class=\"danger\"")
        } else {
            Html::new()
        };
        html!(
            "<form class=\"inline\" method=\"post\" action=\"{}\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">{}\
             <button type=\"submit\"{}>{}</button></form>",
            action,
            csrf,
            extra,
            class,
            label
        )
    }

    /// "Log in to ..." for a visitor who may not write.
    fn login_hint(&self, what: &str, path: &str) -> Html {
        if self.session.is_some() {
            // A Gitea login that `[www.auth] admins` does not name.
            return html!("<p class=\"muted\">Your account may not {} here.</p>", what);
        }
        if self.user.is_some() && self.csrf.is_none() {
            return html!(
                "<p class=\"muted\">To {}, log in with the form (Basic auth is for scripts).</p>",
                what
            );
        }
        html!(
            "<p class=\"muted\"><a href=\"/login?next={}\">Log in</a> to {}.</p>",
            url_encode(path),
            what
        )
    }
}

/// The site's sections, as the nav lists them.
const NAV: [(&str, &str); 5] = [
    ("/", "Home"),
    ("/workers", "Workers"),
    ("/changes", "Changes"),
    ("/console", "Console"),
    ("/buildrequests", "Queue"),
];

/// The nav links; the one for `path` carries `aria-current="page"`
/// (screen readers say so; the stylesheet marks it).
fn nav(path: &str) -> Html {
    let mut out = Html::new();
    for (href, label) in NAV {
        if href == path {
            html_push!(
                out,
                "<a href=\"{}\" aria-current=\"page\">{}</a>",
                href,
                label
            );
        } else {
            html_push!(out, "<a href=\"{}\">{}</a>", href, label);
        }
    }
    out
}

/// Percent-encodes a query-string value.
fn url_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A table cell: its markup, and whether its text may wrap (commit
/// messages, reasons).
struct Cell {
    html: Html,
    wrap: bool,
}

impl From<Html> for Cell {
    fn from(html: Html) -> Cell {
        Cell { html, wrap: false }
    }
}

/// A cell whose text may wrap.
fn wrap(html: Html) -> Cell {
    Cell { html, wrap: true }
}

/// A cell of text (escaped).
fn text(s: &str) -> Cell {
    Html::text(s).into()
}

/// Columns whose cells say what they are, so a phone's card shows them
/// without their name: a result badge (a glyph and a word), a build's
/// `#number`, a history strip, the time a build or request began; and
/// columns without a heading (buttons). (A name costs some 15 bytes a
/// cell, and a home page has ninety cells: issue 17 point 8.)
const SELF_EVIDENT: [&str; 9] = [
    "",
    "Result",
    "Build",
    "Last build",
    "History",
    "Builds",
    "Started",
    "When",
    "Submitted",
];

/// A table with a header row. An empty table shows `empty` instead.
///
/// On a phone (the stylesheet's narrow `@media`) every table becomes a
/// list of cards: the first column is the key (a build, a builder, a
/// change) and heads its card in full; the other cells follow, wrapped,
/// each with its column's name from `data-l` (none for the
/// `SELF_EVIDENT` columns; empty cells are left out). So no
/// column is cut off or scrolled out of sight. Wider screens scroll a
/// table sideways when it does not fit.
fn table(headers: &[&str], rows: &[Vec<Cell>], empty: &str) -> Html {
    if rows.is_empty() {
        return html!("<p class=\"muted\">{}</p>", empty);
    }
    let mut out = html!("<div class=\"scroll\"><table><thead><tr>");
    for h in headers {
        html_push!(out, "<th>{}</th>", h);
    }
    html_push!(out, "</tr></thead><tbody>");
    for row in rows {
        html_push!(out, "<tr>");
        for (i, cell) in row.iter().enumerate() {
            let label = headers.get(i).copied().unwrap_or("");
            let class = if cell.wrap {
                html!(" class=\"wrap\"")
            } else {
                Html::new()
            };
            if i == 0 || SELF_EVIDENT.contains(&label) || cell.html.is_empty() {
                html_push!(out, "<td{}>{}</td>", class, cell.html);
            } else {
                html_push!(out, "<td{} data-l=\"{}\">{}</td>", class, label, cell.html);
            }
        }
        html_push!(out, "</tr>");
    }
    html_push!(out, "</tbody></table></div>");
    out
}

/// Older/newer links for a paged list.
fn pager(path: &str, page: i64, total: i64, size: i64) -> Html {
    let pages = (total + size - 1) / size;
    if pages <= 1 {
        return Html::new();
    }
    let mut out = html!("<p class=\"pager\">");
    if page > 1 {
        out.push(&html!(
            "<a href=\"{}?page={}\">&larr; newer</a> ",
            path,
            page - 1
        ));
    }
    html_push!(out, "page {} of {}", page, pages);
    if page < pages {
        out.push(&html!(
            " <a href=\"{}?page={}\">older &rarr;</a>",
            path,
            page + 1
        ));
    }
    html_push!(out, "</p>");
    out
}

/// First line of a commit message, and the rest in a `<details>`.
fn message_html(msg: &str) -> Html {
    let msg = msg.trim();
    match msg.split_once('\n') {
        Some((first, rest)) if !rest.trim().is_empty() => html!(
            "<details><summary>{}</summary><div class=\"msg\">{}</div></details>",
            first,
            rest.trim()
        ),
        _ => Html::text(msg),
    }
}

/// Escaped text, or a muted dash when there is none.
fn or_dash(s: &str) -> Html {
    if s.is_empty() {
        html!("<span class=\"muted\">—</span>")
    } else {
        Html::text(s)
    }
}

fn short_rev(rev: Option<&str>) -> Html {
    match rev {
        Some(r) => html!(
            "<code title=\"{}\">{}</code>",
            r,
            r.chars().take(10).collect::<String>()
        ),
        None => Html::new(),
    }
}

// ---------------------------------------------------------------------------
// Live overview pages

/// The part of an overview page that live updates replace: `body` in a
/// `<div id="live">` carrying the data's version (`db::live_version`,
/// read *before* the data, so a change in between makes the page look
/// stale, never fresh). The script opens `/live?v=<version>` and, on each
/// `changed`, fetches the page again with `?fragment=1` (this same markup,
/// without the frame) and swaps it in. Without the script the page is
/// simply what it was when loaded.
fn live(version: u64, body: Html) -> Html {
    html!("<div id=\"live\" data-v=\"{}\">{}</div>", version, body)
}

// ---------------------------------------------------------------------------
// History: strips, the duration chart, the console

/// Builds in a builder's history strip.
const HISTORY: i64 = 20;

/// One build as a small linked square coloured by its result, with the
/// result's glyph drawn by the stylesheet (`.strip a` and
/// `.r<N>::before`), so it is told apart without colour too. Its title
/// names it, number and result (a link's name for screen readers; no
/// `aria-label` repeating it, and not the builder, which its row or
/// column names: every byte counts, a home page has twenty squares a
/// builder).
fn push_square(out: &mut Html, b: &db::HistoryBuild) {
    // The badge's result class without its `res` (`r<N>`, `running`, or
    // none for a finished build without a result), formatted straight into
    // the page: a home page has 20 squares per builder.
    let (class, word) = result_class(b.results, b.complete_at.is_some());
    match class.strip_prefix("res ") {
        Some(class) => html_push!(
            out,
            "<a class=\"{}\" href=\"/builds/{}\" title=\"#{} {}\"></a>",
            class,
            b.buildid,
            b.number,
            word
        ),
        None => html_push!(
            out,
            "<a href=\"/builds/{}\" title=\"#{} {}\"></a>",
            b.buildid,
            b.number,
            word
        ),
    }
}

/// A builder's last results, oldest to newest.
fn strip(builds: &[&db::HistoryBuild]) -> Html {
    let mut out = html!("<span class=\"strip\">");
    for b in builds.iter().rev() {
        push_square(&mut out, b);
    }
    html_push!(out, "</span>");
    out
}

/// The durations of a builder's builds (newest first in `builds`) as an
/// inline SVG bar chart, oldest left: bar height is the duration, colour
/// the result, each bar links to its build. Running builds are left out.
/// A bar of a build that did not succeed is also hatched, so it stands
/// out without colour.
fn duration_chart(builds: &[db::BuildListRow]) -> Html {
    let done: Vec<(&db::BuildListRow, i64)> = builds
        .iter()
        .rev()
        .filter_map(|b| Some((b, b.complete_at? - b.started_at)))
        .collect();
    if done.len() < 2 {
        return Html::new();
    }
    let max = done.iter().map(|(_, d)| *d).max().unwrap_or(1).max(1);
    // At least 20 slots: two builds are two bars, not two halves.
    let (w, h, bar) = (600, 80, 600 / done.len().max(20) as i64);
    let mut bars = Html::new();
    for (i, (b, d)) in done.iter().enumerate() {
        let bh = (d * (h - 2) / max).max(1);
        let colour = b.results.map_or("#ccc", result_colour);
        let (x, y, bw) = (i as i64 * bar + 1, h - bh, (bar - 2).max(1));
        let hatch = if matches!(b.results, Some(BuildResult::Success | BuildResult::Skipped)) {
            Html::new()
        } else {
            // A path, not a rect: one `rect` per bar, as readers count them.
            html!(
                "<path d=\"M{} {}h{}v{}h-{}z\" fill=\"url(#hatch)\"/>",
                x,
                y,
                bw,
                bh,
                bw
            )
        };
        bars.push(&html!(
            "<a href=\"{}\"><rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\">\
             <title>#{}: {}</title></rect>{}</a>",
            build_id_url(b.buildid),
            x,
            y,
            bw,
            bh,
            colour,
            b.number,
            duration(*d),
            hatch
        ));
    }
    html!(
        "<figure class=\"chart\"><svg id=\"durations\" viewBox=\"0 0 {} {}\" \
         preserveAspectRatio=\"none\" role=\"img\" aria-label=\"build durations\">\
         <defs><pattern id=\"hatch\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" \
         patternTransform=\"rotate(45)\"><path d=\"M1 0V6\" stroke=\"#0007\" stroke-width=\"2\"/></pattern></defs>{}</svg>\
         <figcaption class=\"muted\">Durations of the builds below, oldest left; longest {}.</figcaption></figure>",
        w,
        h,
        bars,
        duration(max)
    )
}

/// Changes on the console: the newest this many.
const CONSOLE_CHANGES: i64 = 20;

/// `/console`: the newest changes (rows) × the builders (columns), each
/// cell the builds that change started there (Buildbot's console view).
pub(crate) fn console(c: &Ctx) -> Result<Html> {
    let v = db::live_version(c.conn)?;
    let builders: Vec<String> = db::builder_summaries(c.conn)?
        .into_iter()
        .map(|b| b.name)
        .collect();
    let changes = db::changes_page(c.conn, CONSOLE_CHANGES, 0)?;
    let builds = match (changes.last(), changes.first()) {
        (Some(lo), Some(hi)) => db::change_builds(c.conn, lo.changeid, hi.changeid)?,
        _ => Vec::new(),
    };
    let mut head = vec!["Change", "Author"];
    head.extend(builders.iter().map(String::as_str));
    let rows: Vec<Vec<Cell>> = changes
        .iter()
        .map(|ch| {
            let mut row: Vec<Cell> = vec![
                html!(
                    "<span title=\"{}\">{}</span> {}",
                    ch.comments.lines().next().unwrap_or(""),
                    ch.changeid,
                    short_rev(ch.revision.as_deref())
                )
                .into(),
                text(&ch.author),
            ];
            for name in &builders {
                let mine: Vec<&db::HistoryBuild> = builds
                    .iter()
                    .filter(|(id, b)| *id == ch.changeid && b.builder == *name)
                    .map(|(_, b)| b)
                    .collect();
                // Empty when the change built nothing there: a phone's
                // card then leaves the builder out.
                let cell = if mine.is_empty() {
                    Html::new()
                } else {
                    // Oldest left, as the home page's strips.
                    strip(&mine)
                };
                row.push(cell.into());
            }
            row
        })
        .collect();
    let body = html!("<h2>Console</h2>{}", table(&head, &rows, "No changes yet."));
    Ok(c.layout("Console", "/console", live(v, body)))
}

// ---------------------------------------------------------------------------
// Home

/// The home page (`/`): builders and their last build, running builds,
/// the queue, recent builds.
pub(crate) fn home(c: &Ctx) -> Result<Html> {
    let v = db::live_version(c.conn)?;
    let body = html!(
        "{}{}{}{}",
        builders_section(c.conn)?,
        running_section(c.conn, c.now)?,
        queue_section(c, None, 10)?,
        recent_section(c.conn)?
    );
    Ok(c.layout("Home", "/", live(v, body)))
}

fn builders_section(conn: &db::Conn) -> Result<Html> {
    let history = db::builder_history(conn, HISTORY)?;
    let rows: Vec<Vec<Cell>> = db::builder_summaries(conn)?
        .into_iter()
        .map(|b| {
            let mine: Vec<&db::HistoryBuild> =
                history.iter().filter(|h| h.builder == b.name).collect();
            match b.last {
                Some(last) => vec![
                    builder_link(&b.name).into(),
                    build_badge(last.buildid, last.number, last.results, last.complete).into(),
                    last.when.map(time_html).unwrap_or_default().into(),
                    strip(&mine).into(),
                ],
                None => vec![
                    builder_link(&b.name).into(),
                    html!("<span class=\"muted\">no builds</span>").into(),
                    Html::new().into(),
                    Html::new().into(),
                ],
            }
        })
        .collect();
    Ok(html!(
        "<section><h2>Builders</h2>{}</section>",
        table(
            &["Builder", "Last build", "When", "History"],
            &rows,
            "No builders configured."
        )
    ))
}

fn running_section(conn: &db::Conn, now: i64) -> Result<Html> {
    let rows: Vec<Vec<Cell>> = db::running_builds(conn)?
        .into_iter()
        .map(|b| {
            vec![
                builder_link(&b.builder).into(),
                build_id_link(b.buildid, b.number).into(),
                text(&b.state_string),
                text(&b.worker.unwrap_or_default()),
                time_html(b.started_at).into(),
                took(Some(b.started_at), None, now).into(),
            ]
        })
        .collect();
    Ok(html!(
        "<section><h2>Running builds ({})</h2>{}</section>",
        rows.len(),
        table(
            &["Builder", "Build", "State", "Worker", "Started", "Elapsed"],
            &rows,
            "Nothing running."
        )
    ))
}

/// Queued requests (neither claimed nor complete), oldest first; all
/// builders, or one. Shows at most `limit` with the total count.
fn queue_section(c: &Ctx, builderid: Option<BuilderId>, limit: i64) -> Result<Html> {
    let pending = db::queued_count(c.conn, builderid)?;
    let what = if pending == 1 { "request" } else { "requests" };
    let mut out = html!(
        "<section><h2>Queue</h2><p>{} pending build {}.</p>",
        pending,
        what
    );
    if pending > 0 {
        out.push(&requests_table(c, builderid, limit)?);
        if pending > limit {
            out.push(&html!(
                "<p><a href=\"/buildrequests\">The whole queue</a></p>"
            ));
        }
    }
    html_push!(out, "</section>");
    Ok(out)
}

fn requests_table(c: &Ctx, builderid: Option<BuilderId>, limit: i64) -> Result<Html> {
    let queue = db::queued_requests(c.conn, builderid, limit)?;
    let waits = Waits::read(c.conn, c.cfg, &queue)?;
    let rows: Vec<Vec<Cell>> = queue
        .iter()
        .map(|r| {
            let mut row = request_cells(r);
            row.extend([
                wrap(waits.why(c.cfg, r)),
                time_html(r.submitted_at).into(),
                html!("{}", r.priority).into(),
                c.post_form(
                    &format!("/buildrequests/{}/cancel", r.buildrequestid),
                    "Cancel",
                    Html::new(),
                )
                .into(),
            ]);
            row
        })
        .collect();
    Ok(table(
        &[
            "Request",
            "Builder",
            "Asked by",
            "What",
            "Waiting for",
            "Submitted",
            "Priority",
            "",
        ],
        &rows,
        "Nothing queued.",
    ))
}

/// The cells every table of requests starts with: the request, its
/// builder, who asked and what for.
fn request_cells(r: &db::RequestRow) -> Vec<Cell> {
    let id = r.buildrequestid;
    vec![
        html!("<a href=\"/buildrequests/{}\">{}</a>", id, id).into(),
        builder_link(&r.builder).into(),
        wrap(origin_html(&r.origin)),
        wrap(what_html(r)),
    ]
}

/// Who or what asked for a request, from what its buildset records.
fn origin_html(o: &db::Origin) -> Html {
    let scheduler = |s: &Option<String>| match s {
        Some(s) => html!(" <span class=\"muted\">(scheduler {})</span>", s),
        None => Html::new(),
    };
    match o {
        db::Origin::Forced { user } => html!("forced by <strong>{}</strong>", user),
        db::Origin::Rebuild {
            user,
            build: Some((builder, number)),
            ..
        } => html!(
            "rebuild of {} {} by <strong>{}</strong>",
            builder,
            build_link(builder, *number),
            user
        ),
        db::Origin::Rebuild {
            user,
            of,
            build: None,
        } => html!(
            "rebuild of build {} (since pruned) by <strong>{}</strong>",
            *of,
            user
        ),
        db::Origin::Changes {
            scheduler: s,
            author,
            count,
        } => {
            let more = match *count {
                ..=1 => Html::new(),
                n => html!(" and {} more", n - 1),
            };
            html!("change by {}{}{}", author, more, scheduler(s))
        }
        db::Origin::Scheduler { scheduler: Some(s) } => html!("scheduler <strong>{}</strong>", s),
        db::Origin::Scheduler { scheduler: None } => html!("<span class=\"muted\">—</span>"),
    }
}

/// What a request builds: branch and revision, and what the force form
/// set (its reason and each parameter), so two forces of one builder
/// with other parameters look different.
fn what_html(r: &db::RequestRow) -> Html {
    let mut parts: Vec<Html> = vec![];
    if let Some(b) = &r.branch {
        parts.push(html!("branch <code>{}</code>", b));
    }
    if r.revision.is_some() {
        parts.push(html!("at {}", short_rev(r.revision.as_deref())));
    }
    for (k, v) in &r.forced {
        let v = crate::model::value_text(v);
        if k == "reason" {
            parts.insert(0, html!("<q>{}</q>", v));
        } else {
            parts.push(html!("<code class=\"param\">{}={}</code>", k, v));
        }
    }
    if parts.is_empty() {
        return or_dash(&r.reason);
    }
    Html::join(parts, " ")
}

/// What the queue's "why it waits" reads once per page: each builder's
/// queue places, every worker's load and the locks held.
struct Waits {
    places: std::collections::HashMap<RequestId, db::QueuePlace>,
    loads: std::collections::BTreeMap<String, db::WorkerLoad>,
    holders: Vec<db::LockHolder>,
}

impl Waits {
    /// Requests past this place of their builder's queue are not placed.
    const DEPTH: i64 = 500;

    fn read(conn: &db::Conn, cfg: &Config, queue: &[db::RequestRow]) -> Result<Waits> {
        let mut builders: Vec<&str> = queue.iter().map(|r| r.builder.as_str()).collect();
        builders.sort_unstable();
        builders.dedup();
        let mut places = std::collections::HashMap::new();
        for b in builders {
            places.extend(db::queue_places(conn, b, Self::DEPTH)?);
        }
        let locked = cfg.builders.iter().any(|b| !b.locks.is_empty());
        Ok(Waits {
            places,
            loads: db::worker_loads(conn)?,
            holders: match locked {
                true => db::lock_holders(conn)?,
                false => vec![],
            },
        })
    }

    /// Why queued request `r` has not started, from the queue and the
    /// workers as the botmaster sees them: its workers' connection, pause,
    /// `max_builds` and running builds (one build per builder per worker),
    /// its builder's locks on each worker otherwise free, and the requests
    /// before it.
    fn why(&self, cfg: &Config, r: &db::RequestRow) -> Html {
        let Some(builder) = cfg.builder(&r.builder) else {
            return html!("its builder is no longer in the config");
        };
        let place = self.places.get(&r.buildrequestid);
        if let Some(older) = place.and_then(|p| p.held_by) {
            return html!(
                "request <a href=\"/buildrequests/{}\">{}</a> to start first (same source, other parameters)",
                older,
                older
            );
        }
        if let Some(newer) = place.and_then(|p| p.same_as_newer) {
            if builder.collapse_requests {
                return html!(
                    "the newer request <a href=\"/buildrequests/{}\">{}</a>, whose build will cover it (collapsing)",
                    newer,
                    newer
                );
            }
        }
        if builder.workers.is_empty() {
            return html!("a worker: none is configured for this builder");
        }
        let none = db::WorkerLoad::default();
        let mut free = false;
        let mut busy: Vec<Html> = vec![];
        // What holds the builder's locks on the workers otherwise free.
        let mut locked: Vec<Html> = vec![];
        for w in &builder.workers {
            let load = self.loads.get(w).unwrap_or(&none);
            let max = cfg.worker(w).map_or(1, |w| w.max_builds as usize);
            let same = load.running.iter().find(|(b, _)| *b == r.builder);
            if !load.connected {
                busy.push(html!("{} is not connected", w));
            } else if load.paused {
                busy.push(html!("{} is paused", w));
            } else if let Some((b, n)) = same {
                busy.push(html!("{} is running {} {}", w, b, build_link(b, *n)));
            } else if load.running.len() >= max {
                let builds = load
                    .running
                    .iter()
                    .map(|(b, n)| html!("{} {}", b, build_link(b, *n)));
                busy.push(html!("{} is busy with {}", w, Html::join(builds, ", ")));
            } else if let Some((want, h)) =
                locks::first_blocker(&self.holders, &locks::wants(cfg, &builder.locks, w), None)
            {
                let why = html!(
                    "lock {}{}, held by {} {}",
                    want.name,
                    locks::on_worker(want),
                    h.builder,
                    build_link(&h.builder, h.number)
                );
                if !locked.contains(&why) {
                    locked.push(why);
                }
            } else {
                free = true;
            }
        }
        match (free, place.map_or(0, |p| p.ahead)) {
            (true, 0) => html!("nothing: a worker is free, it starts now"),
            (true, 1) => html!("1 older request of this builder to start first"),
            (true, n) => html!("{} older requests of this builder to start first", n),
            (false, _) if !locked.is_empty() => Html::join(locked, "; "),
            (false, _) => html!("a free worker: {}", Html::join(busy, "; ")),
        }
    }
}

/// Why each of the requests `ids` that is still queued (neither claimed
/// nor complete) waits, in the words the queue pages use, as plain text
/// (the JSON API's `waiting_reason`). Requests not queued are left out.
pub(crate) fn waiting_reasons(
    conn: &db::Conn,
    cfg: &Config,
    ids: &[RequestId],
) -> Result<Vec<(RequestId, String)>> {
    let mut queued = vec![];
    for id in ids {
        match db::request_info(conn, *id)? {
            Some(r) if !r.complete && r.claimed_at.is_none() => queued.push(r),
            _ => {}
        }
    }
    let waits = Waits::read(conn, cfg, &queued)?;
    Ok(queued
        .iter()
        .map(|r| (r.buildrequestid, waits.why(cfg, r).plain_text()))
        .collect())
}

fn recent_section(conn: &db::Conn) -> Result<Html> {
    let rows: Vec<Vec<Cell>> = db::recent_builds(conn, 20)?
        .into_iter()
        .map(|b| {
            vec![
                builder_link(&b.builder).into(),
                build_badge(b.buildid, b.number, b.results, b.complete_at.is_some()).into(),
                time_html(b.started_at).into(),
                text(
                    &b.complete_at
                        .map(|c| duration(c - b.started_at))
                        .unwrap_or_default(),
                ),
            ]
        })
        .collect();
    Ok(html!(
        "<section><h2>Recent builds</h2>{}</section>",
        table(
            &["Builder", "Build", "Started", "Duration"],
            &rows,
            "No builds yet."
        )
    ))
}

// ---------------------------------------------------------------------------
// Builder

/// `/builders/<name>`: the builder, its force form(s), its queue and its
/// builds, newest first, `BUILDS_PAGE` a page. None: no such builder.
pub(crate) fn builder(c: &Ctx, name: &str, page: i64) -> Result<Option<Html>> {
    let Some(db::BuilderInfo {
        builderid,
        description,
        tags,
    }) = db::builder_info(c.conn, name)?
    else {
        return Ok(None);
    };
    let v = db::live_version(c.conn)?;
    let path = format!("/builders/{}", encode_path_segment(name));
    let mut body = html!("<h2>Builder {}</h2>", name);
    if let Some(d) = description.filter(|d| !d.is_empty()) {
        html_push!(body, "<p>{}</p>", d);
    }
    if !tags.is_empty() {
        html_push!(body, "<p class=\"muted\">tags: {}</p>", tags.join(", "));
    }
    if let Some(b) = c.cfg.builder(name) {
        body.push(&html!(
            "<p class=\"muted\">workers: {}</p>",
            b.workers.join(", ")
        ));
    }
    // The force form stays out of the live part: a refresh must not wipe
    // what someone is typing.
    body.push(&force_forms(c, name, &path));
    let mut updated = queue_section(c, Some(builderid), 50)?;

    let total = db::build_count(c.conn, builderid)?;
    let page = page.max(1);
    let builds = db::builder_builds(c.conn, builderid, BUILDS_PAGE, (page - 1) * BUILDS_PAGE)?;
    updated.push(&duration_chart(&builds));
    let rows: Vec<Vec<Cell>> = builds
        .into_iter()
        .map(|b| {
            vec![
                build_badge(b.buildid, b.number, b.results, b.complete_at.is_some()).into(),
                time_html(b.started_at).into(),
                took(Some(b.started_at), b.complete_at, c.now).into(),
                text(&b.branch.unwrap_or_default()),
                short_rev(b.revision.as_deref()).into(),
                text(&b.worker.unwrap_or_default()),
                wrap(Html::text(&b.state_string)),
            ]
        })
        .collect();
    updated.push(&html!(
        "<section><h2>Builds ({})</h2>{}{}</section>",
        total,
        table(
            &["Build", "Started", "Duration", "Branch", "Revision", "Worker", "State"],
            &rows,
            "No builds yet.",
        ),
        pager(&path, page, total, BUILDS_PAGE)
    ));
    body.push(&live(v, updated));
    Ok(Some(c.layout(name, &path, body)))
}

/// One input of a force form, from the scheduler's typed parameter.
fn force_field(sched: &str, p: &crate::config::ForceParam) -> Html {
    let name = p.name.as_str();
    let id = format!("{name}-{sched}");
    let label = &p.label;
    let value = crate::model::value_text(&p.default);
    let required = if p.required {
        html!(" required")
    } else {
        Html::new()
    };
    let label_tag = html!("<label for=\"{}\">{}</label>", id, label);
    match &p.kind {
        ParamKind::Text { .. } => html!(
            "{}<textarea id=\"{}\" name=\"{}\"{}>{}</textarea>",
            label_tag,
            id,
            name,
            required,
            value
        ),
        ParamKind::Int => html!(
            "{}<input type=\"number\" step=\"1\" id=\"{}\" name=\"{}\" value=\"{}\"{}>",
            label_tag,
            id,
            name,
            value,
            required
        ),
        ParamKind::Bool => html!(
            "<label><input type=\"checkbox\" name=\"{}\" value=\"true\"{}> {}</label>",
            name,
            if value == "true" {
                html!(" checked")
            } else {
                Html::new()
            },
            label
        ),
        ParamKind::Choice { choices } => {
            let options: Html = choices
                .iter()
                .map(|c| {
                    let sel = if *c == value {
                        html!(" selected")
                    } else {
                        Html::new()
                    };
                    html!("<option{}>{}</option>", sel, c)
                })
                .collect();
            html!(
                "{}<select id=\"{}\" name=\"{}\">{}</select>",
                label_tag,
                id,
                name,
                options
            )
        }
        // Shown, not editable: the scheduler decides the value.
        ParamKind::Fixed => html!("<p class=\"muted\">{}: {}</p>", label, value),
        ParamKind::String { .. } => html!(
            "{}<input type=\"text\" id=\"{}\" name=\"{}\" value=\"{}\"{}>",
            label_tag,
            id,
            name,
            value,
            required
        ),
    }
}

/// One form per force scheduler that may build `builder`.
fn force_forms(c: &Ctx, builder: &str, path: &str) -> Html {
    let scheds: Vec<_> = c
        .cfg
        .schedulers
        .iter()
        .filter(|s| s.builders.iter().any(|b| b == builder))
        .filter_map(|s| Some((s, s.kind.force()?)))
        .collect();
    if scheds.is_empty() {
        return Html::new();
    }
    let mut out = html!("<section><h2>Force a build</h2>");
    let Some(csrf) = c.csrf else {
        out.push(&c.login_hint("force a build", path));
        html_push!(out, "</section>");
        return out;
    };
    for (s, force) in scheds {
        out.push(&html!(
            "<form class=\"force\" method=\"post\" action=\"{}/force\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <input type=\"hidden\" name=\"scheduler\" value=\"{}\">",
            path,
            csrf,
            s.name
        ));
        for p in force.force_parameters() {
            out.push(&force_field(&s.name, &p));
        }
        out.push(&html!(
            "<p><button type=\"submit\">{}</button> \
             <span class=\"muted\">scheduler {}</span></p></form>",
            force.button_name,
            s.name
        ));
    }
    html_push!(out, "</section>");
    out
}

// ---------------------------------------------------------------------------
// Build

pub(crate) use crate::db::{build_by_id, BuildRow};

/// The canonical page of a build.
pub(crate) fn build_page_url(b: &BuildRow) -> String {
    format!(
        "/builders/{}/builds/{}",
        encode_path_segment(&b.builder),
        b.number
    )
}

/// " · holds lock deploy (exclusive), ..." for a running build that holds
/// locks (they change only when its state does, so the live updates of
/// the head follow them).
fn held_locks(c: &Ctx, buildid: BuildId) -> Html {
    let holders = db::lock_holders(c.conn).unwrap_or_else(|e| {
        log::warn!("build {buildid}: reading the locks held: {e:#}");
        vec![]
    });
    let held: Vec<Html> = holders
        .iter()
        .filter(|h| h.buildid == buildid)
        .map(|h| {
            html!(
                "<span class=\"lock\">lock {} ({}{})</span>",
                h.name,
                if h.exclusive { "exclusive" } else { "counting" },
                if h.step.is_some() { ", this step" } else { "" }
            )
        })
        .collect();
    match held.is_empty() {
        true => Html::new(),
        false => html!(" · holds {}", Html::join(held, ", ")),
    }
}

/// The head of the build page (replaced whole by live updates).
pub(crate) fn build_head(c: &Ctx, b: &BuildRow) -> Html {
    // A finished build with steps it never ran says so: its live page
    // reloads to list them (the step list is not part of the head).
    let unrun = b.complete_at.is_some()
        && db::has_unrun_steps(c.conn, b.buildid).unwrap_or_else(|e| {
            log::warn!("build {}: reading its planned steps: {e:#}", b.buildid);
            false
        });
    let mut out = html!(
        "<section id=\"build-head\"{}><h2>{} {} {}</h2><p>{}</p><p>",
        if unrun {
            html!(" data-skipped=\"1\"")
        } else {
            Html::new()
        },
        builder_link(&b.builder),
        build_link(&b.builder, b.number),
        badge(b.results, b.complete_at.is_some()),
        b.state_string,
    );
    out.push(&html!(
        "started {} · {} {}",
        time_html(b.started_at),
        if b.complete_at.is_some() {
            "took"
        } else {
            "running for"
        },
        took(Some(b.started_at), b.complete_at, c.now)
    ));
    if let Some(w) = &b.worker {
        html_push!(out, " · worker {}", w);
    }
    if b.complete_at.is_none() {
        out.push(&held_locks(c, b.buildid));
    }
    html_push!(out, "</p><p>");
    let base = format!("/builds/{}", b.buildid);
    if b.complete_at.is_none() {
        // Stopping asks first: the button opens `stop_page`, which takes
        // the reason (a plain GET form, so it works without the script).
        if c.csrf.is_some() {
            html_push!(
                out,
                "<form class=\"inline\" method=\"get\" action=\"{}/stop\">\
                 <button type=\"submit\" class=\"danger\">Stop…</button></form>",
                base
            );
        }
    } else {
        out.push(&c.post_form(&format!("{base}/rebuild"), "Rebuild", Html::new()));
    }
    html_push!(out, "</p></section>");
    out
}

/// `/builds/<id>/stop`: asks to confirm a stop and for its optional
/// reason (at most `rpc::MAX_STOP_REASON` characters, one line), then
/// POSTs to the same path.
pub(crate) fn stop_page(c: &Ctx, b: &BuildRow) -> Html {
    let url = build_page_url(b);
    let title = format!("Stop {} #{}", b.builder, b.number);
    let path = format!("/builds/{}/stop", b.buildid);
    let body = match (b.complete_at, c.csrf) {
        (Some(_), _) => html!(
            "<h2>{} {} has finished</h2><p>There is nothing to stop.</p>",
            builder_link(&b.builder),
            build_link(&b.builder, b.number)
        ),
        (None, None) => html!(
            "<h2>Stop {} {}?</h2>{}",
            builder_link(&b.builder),
            build_link(&b.builder, b.number),
            c.login_hint("stop a build", &path)
        ),
        (None, Some(csrf)) => html!(
            "<h2>Stop {} {}?</h2><p>The running step is interrupted and its processes \
             killed; the steps after it do not run, and the build ends cancelled.</p>\
             <form method=\"post\" action=\"{}\" id=\"stop-form\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <label for=\"stop-reason\">Reason (optional, shown on the build)</label>\
             <input type=\"text\" id=\"stop-reason\" name=\"reason\" maxlength=\"{}\" autofocus>\
             <p><button type=\"submit\" class=\"danger\">Stop the build</button> \
             <a href=\"{}\">Keep it running</a></p></form>",
            builder_link(&b.builder),
            build_link(&b.builder, b.number),
            path,
            csrf,
            crate::web::rpc::MAX_STOP_REASON,
            url
        ),
    };
    c.layout(&title, &path, body)
}

pub(crate) use crate::db::{steps_of, StepRow};

/// A step's head line (replaced whole by live updates: the first child
/// of `#step-<id>`). Light, as a build has many steps (20 KB a page): no
/// id of its own, and its state only when it says more than its name.
pub(crate) fn step_head(c: &Ctx, s: &StepRow) -> Html {
    let state = if s.state_string == s.name {
        Html::new()
    } else {
        html!("<span>{}</span>", s.state_string)
    };
    let mut out = html!(
        "<div class=\"step-head\"><span>{}</span>\
         <strong>{}</strong>{}{}<small>{}</small>",
        s.number + 1,
        s.name,
        badge(s.results, s.complete_at.is_some()),
        state,
        took(s.started_at, s.complete_at, c.now),
    );
    for u in &s.urls {
        let (Some(name), Some(url)) = (u["name"].as_str(), u["url"].as_str()) else {
            continue;
        };
        // Only web links; a javascript: URL from a build must not run here
        // (escaping keeps it inside the attribute, not out of `href`).
        if url.starts_with("http://") || url.starts_with("https://") {
            out.push(&html!(
                "<a href=\"{}\" rel=\"noopener noreferrer\">{}</a>",
                url,
                name
            ));
        }
    }
    html_push!(out, "</div>");
    out
}

/// A whole step: head and logs; `ranges` holds the text shown of each log
/// (by logid; a log missing there gets an empty, live-fillable view).
pub(crate) fn step_html(
    c: &Ctx,
    s: &StepRow,
    open: bool,
    ranges: &[(LogId, logview::Range)],
) -> Html {
    let mut out = html!(
        "<div class=\"step\" id=\"step-{}\">{}",
        s.stepid,
        step_head(c, s)
    );
    for (logid, name, _) in &s.logs {
        let empty = logview::Range::default();
        let r = ranges
            .iter()
            .find(|(id, _)| id == logid)
            .map_or(&empty, |(_, r)| r);
        let earlier = if r.start > 0 {
            html!(
                "<button type=\"button\" class=\"earlier\" data-logid=\"{}\">load earlier output ({} KiB more)</button>",
                *logid,
                r.start.div_ceil(1024)
            )
        } else {
            Html::new()
        };
        out.push(&html!(
            "<details{}><summary>{} · <a href=\"/logs/{}\">view</a></summary>\
             {}<pre class=\"log\" data-logid=\"{}\"{} data-end=\"{}\">{}</pre></details>",
            if open { html!(" open") } else { Html::new() },
            name,
            *logid,
            earlier,
            *logid,
            // Where the text shown starts; left out at 0 (most logs).
            if r.start > 0 {
                html!(" data-start=\"{}\"", r.start)
            } else {
                Html::new()
            },
            r.end,
            logview::render(r),
        ));
    }
    html_push!(out, "</div>");
    out
}

/// Whether a step's logs start unfolded: the running step, any that did
/// not succeed, and the build's last step.
pub(crate) fn step_open(s: &StepRow, last: bool) -> bool {
    last || s.complete_at.is_none()
        || !matches!(
            s.results,
            Some(BuildResult::Success) | Some(BuildResult::Skipped)
        )
}

/// `/builders/<name>/builds/<number>`. None: no such build.
pub(crate) fn build(c: &Ctx, builder: &str, number: i64) -> Result<Option<Html>> {
    let b = db::build_by_number(c.conn, builder, number)?;
    let Some(b) = b else {
        return Ok(None);
    };
    let live = if b.complete_at.is_none() {
        html!(" data-live=\"1\"")
    } else {
        Html::new()
    };
    let mut body = html!(
        "<div id=\"build\" data-buildid=\"{}\"{}>{}",
        b.buildid,
        live,
        build_head(c, &b)
    );
    body.push(&chain_section(c, b.buildid)?);
    html_push!(body, "<section id=\"steps\"><h3>Steps</h3>");
    let steps = steps_of(c.conn, b.buildid)?;
    if steps.is_empty() {
        body.push(&html!(
            "<p class=\"muted\" id=\"nosteps\">No steps yet.</p>"
        ));
    }
    // Steps never run, each in its place: (number, markup), in order.
    let mut skipped = match b.complete_at {
        Some(_) => {
            let planned = db::planned_steps(c.conn, b.buildid)?.unwrap_or_default();
            skipped_steps(&b, &planned, &steps)
        }
        None => vec![],
    }
    .into_iter()
    .peekable();
    // Whether a log shown has an escape (colours, maybe): the page links
    // the palette then.
    let mut palette = false;
    for (i, s) in steps.iter().enumerate() {
        while let Some((_, html)) = skipped.next_if(|(n, _)| *n < s.number) {
            body.push(&html);
        }
        let ranges = s
            .logs
            .iter()
            .map(|(logid, _, _)| {
                let path = db::log_path(c.master_dir, b.buildid, *logid);
                let r = logview::chunk_before(&path, u64::MAX)
                    .with_context(|| format!("reading log {}", path.display()))?;
                Ok((*logid, r))
            })
            .collect::<Result<Vec<_>>>()?;
        palette |= ranges.iter().any(|(_, r)| r.text.contains(&0x1b));
        body.push(&step_html(
            c,
            s,
            step_open(s, i + 1 == steps.len()),
            &ranges,
        ));
    }
    for (_, html) in skipped {
        body.push(&html);
    }
    html_push!(body, "</section>");
    body.push(&artifacts_section(c.conn, b.buildid)?);
    body.push(&buildset_section(c, b.buildrequestid)?);
    body.push(&properties_section(c.conn, b.buildid)?);
    html_push!(body, "</div>");
    let title = format!("{} #{}", b.builder, b.number);
    Ok(Some(c.layout_with(
        &title,
        &build_page_url(&b),
        body,
        palette,
    )))
}

/// The chain of a build (`master::chain`): the build whose trigger step
/// started it, and the builds its trigger steps started, each linked.
/// Nothing for a build outside any chain.
fn chain_section(c: &Ctx, buildid: BuildId) -> Result<Html> {
    let parent = db::triggered_by(c.conn, buildid)?;
    let triggers = db::build_triggers(c.conn, buildid)?;
    if parent.is_none() && triggers.is_empty() {
        return Ok(Html::new());
    }
    let mut out = html!("<section id=\"chain\">");
    if let Some((_, builder, number)) = &parent {
        html_push!(
            out,
            "<p id=\"triggered-by\">triggered by {} {}</p>",
            builder_link(builder),
            build_link(builder, *number)
        );
    }
    if !triggers.is_empty() {
        html_push!(out, "<h3>Triggered builds</h3><ul id=\"triggered\">");
        let bsids: Vec<_> = triggers.iter().map(|(_, b)| *b).collect();
        for t in db::triggered(c.conn, &bsids)? {
            let build = match t.build {
                Some((_, n)) => build_link(&t.builder, n),
                None => html!("<span class=\"muted\">queued</span>"),
            };
            html_push!(
                out,
                "<li>{} {} {}</li>",
                builder_link(&t.builder),
                build,
                match (t.results, t.build) {
                    (None, None) => Html::new(),
                    (r, _) => badge(r, r.is_some()),
                }
            );
        }
        html_push!(out, "</ul>");
    }
    html_push!(out, "</section>");
    Ok(out)
}

/// The steps a finished build was to run (`planned`, as its builder's
/// config had them when it started) but never started: listed as skipped,
/// with why, as (step number, markup) in order.
fn skipped_steps(b: &BuildRow, planned: &[String], ran: &[StepRow]) -> Vec<(i64, Html)> {
    let why = match b.results {
        Some(BuildResult::Cancelled) => "not run: the build was stopped",
        Some(BuildResult::Retry) => "not run: the build ended early and was retried",
        _ => "not run: an earlier step halted the build",
    };
    let mut out = vec![];
    for (number, name) in planned.iter().enumerate() {
        if ran.iter().any(|s| s.number == number as i64) {
            continue;
        }
        let html = html!(
            "<div class=\"step skipped\" id=\"skipped-{}\"><div class=\"step-head\">\
             <span>{}</span><strong>{}</strong>\
             <span class=\"res r{}\">skipped</span><small>{}</small></div></div>",
            number,
            number + 1,
            name,
            BuildResult::Skipped.code(),
            why
        );
        out.push((number as i64, html));
    }
    out
}

/// What was built: the buildset's reason and source stamp, and its changes.
fn buildset_section(c: &Ctx, brid: RequestId) -> Result<Html> {
    let Some(db::BuildsetInfo {
        buildsetid: bsid,
        reason,
        branch,
        revision,
        repository,
        submitted_at: submitted,
    }) = db::request_buildset(c.conn, brid)?
    else {
        return Ok(Html::new());
    };
    let mut out = html!(
        "<section><h3>Source</h3><dl class=\"kv\"><dt>Reason</dt><dd>{}</dd>\
         <dt>Branch</dt><dd>{}</dd><dt>Revision</dt><dd>{}</dd>\
         <dt>Repository</dt><dd>{}</dd><dt>Submitted</dt><dd>{}</dd>\
         <dt>Request</dt><dd><a href=\"/buildrequests/{}\">{}</a></dd></dl>",
        or_dash(&reason),
        or_dash(&branch.unwrap_or_default()),
        or_dash(&revision.unwrap_or_default()),
        or_dash(&repository),
        time_html(submitted),
        brid,
        brid,
    );
    let rows: Vec<Vec<Cell>> = db::buildset_changes(c.conn, bsid, 50)?
        .into_iter()
        .map(|ch| {
            vec![
                html!("{}", ch.changeid).into(),
                text(&ch.author),
                wrap(message_html(&ch.comments)),
                short_rev(ch.revision.as_deref()).into(),
                time_html(ch.when_timestamp).into(),
            ]
        })
        .collect();
    if !rows.is_empty() {
        html_push!(out, "<h3>Changes</h3>");
        out.push(&table(
            &["Change", "Author", "Message", "Revision", "When"],
            &rows,
            "",
        ));
    }
    html_push!(out, "</section>");
    Ok(out)
}

/// The build's properties: name, value and (small) where it came from, a
/// list of pairs rather than a table: a build has fifteen or more, and a
/// table row's markup and phone labels weigh twice this (issue 17 point 8).
fn properties_section(conn: &db::Conn, buildid: BuildId) -> Result<Html> {
    let props = db::build_properties(conn, buildid)?;
    if props.is_empty() {
        return Ok(html!(
            "<section><h3>Properties</h3><p class=\"muted\">No properties.</p></section>"
        ));
    }
    let mut out = html!("<section><h3>Properties</h3><dl class=\"kv\" id=\"props\">");
    for (k, (v, src)) in &props {
        let v = crate::model::value_text(v);
        html_push!(
            out,
            "<dt>{}</dt><dd>{} <small>{}</small></dd>",
            k,
            or_dash(&v),
            src
        );
    }
    html_push!(out, "</dl></section>");
    Ok(out)
}

/// What the build's `upload` steps stored: name (the download link), size
/// and sha256. Nothing when there is none (most builds upload nothing).
fn artifacts_section(conn: &db::Conn, buildid: BuildId) -> Result<Html> {
    let list = db::build_artifacts(conn, buildid)?;
    if list.is_empty() {
        return Ok(Html::new());
    }
    let rows: Vec<Vec<Cell>> = list
        .iter()
        .map(|a| {
            vec![
                html!(
                    "<a href=\"{}\" download>{}</a>",
                    crate::web::artifacts::download_url(a.artifactid),
                    a.name
                )
                .into(),
                text(&format!("{} bytes", a.size)),
                wrap(html!("<code>{}</code>", a.sha256)),
            ]
        })
        .collect();
    Ok(html!(
        "<section id=\"artifacts\"><h3>Artifacts</h3>{}</section>",
        table(&["Name", "Size", "SHA-256"], &rows, "")
    ))
}

/// The JSON `/logs/<logid>/chunk?end=N` answers: the lines before `end`
/// (a line start), for the build page's "load earlier output".
pub(crate) fn log_chunk(
    conn: &db::Conn,
    master_dir: &Path,
    logid: LogId,
    end: u64,
) -> Result<Option<serde_json::Value>> {
    let buildid = db::log_build(conn, logid)?;
    let Some(buildid) = buildid else {
        return Ok(None);
    };
    let r = logview::chunk_before(&db::log_path(master_dir, buildid, logid), end)?;
    Ok(Some(serde_json::json!({
        "logid": logid, "start": r.start, "end": r.end,
        "html": logview::render(&r).into_string()
    })))
}

// ---------------------------------------------------------------------------
// Workers, changes, requests

/// `/workers`: every worker the master knows, connected or not.
pub(crate) fn workers(c: &Ctx) -> Result<Html> {
    let v = db::live_version(c.conn)?;
    let rows: Vec<Vec<Cell>> = db::worker_list(c.conn)?
        .into_iter()
        .map(|w| {
            let name = w.name;
            let (connected, paused, configured) = (w.connected, w.paused, w.configured);
            let last = w.last_connection;
            let info = w.info;
            let text = |k: &str| match info.get(k) {
                Some(serde_json::Value::String(s)) => s.trim().to_string(),
                Some(v) => v.to_string(),
                None => String::new(),
            };
            let mut state = if connected {
                html!("<span class=\"res r0\">connected</span>")
            } else {
                html!("<span class=\"res\">not connected</span>")
            };
            if paused {
                html_push!(state, " <span class=\"res r1\">paused</span>");
            }
            if !configured {
                html_push!(state, " <span class=\"muted\">(not in master.cfg)</span>");
            }
            let builds = Html::join(
                w.running
                    .iter()
                    .map(|(b, n)| html!("{} {}", builder_link(b), build_link(b, *n))),
                "<br>",
            );
            let action = if paused { "unpause" } else { "pause" };
            let label = if paused { "Unpause" } else { "Pause" };
            state.push(&html!(
                " {}",
                c.post_form(
                    &format!("/workers/{}/{action}", encode_path_segment(&name)),
                    label,
                    Html::new(),
                )
            ));
            vec![
                Html::text(&name).into(),
                state.into(),
                builds.into(),
                wrap(html!("<div class=\"msg\">{}</div>", text("admin"))),
                wrap(html!("<div class=\"msg\">{}</div>", text("host"))),
                last.map(time_html).unwrap_or_default().into(),
            ]
        })
        .collect();
    let mut body = live(
        v,
        table(
            &[
                "Worker",
                "State",
                "Running",
                "Admin",
                "Host",
                "Last connected",
            ],
            &rows,
            "No workers yet.",
        ),
    );
    body = html!("<h2>Workers</h2>{}", body);
    if c.csrf.is_none() {
        body.push(&c.login_hint("pause a worker", "/workers"));
    } else {
        body.push(&html!(
            "<p class=\"muted\">A paused worker finishes its running builds and gets no new ones.</p>"
        ));
    }
    Ok(c.layout("Workers", "/workers", body))
}

/// `/changes`: the newest changes first, paged.
pub(crate) fn changes(c: &Ctx, page: i64) -> Result<Html> {
    let v = db::live_version(c.conn)?;
    let total = db::change_count(c.conn)?;
    let page = page.max(1);
    let changes = db::changes_page(c.conn, PAGE_SIZE, (page - 1) * PAGE_SIZE)?;
    let builds = match (changes.last(), changes.first()) {
        (Some(lo), Some(hi)) => db::change_builds(c.conn, lo.changeid, hi.changeid)?,
        _ => Vec::new(),
    };
    let rows: Vec<Vec<Cell>> = changes
        .into_iter()
        .map(|ch| {
            let started = Html::join(
                builds
                    .iter()
                    .filter(|(id, _)| *id == ch.changeid)
                    .map(|(_, b)| {
                        html!(
                            "{}&nbsp;{}",
                            badge(b.results, b.complete_at.is_some()),
                            html!(
                                "<a href=\"{}\">{} #{}</a>",
                                build_url(&b.builder, b.number),
                                b.builder,
                                b.number
                            )
                        )
                    }),
                "<br>",
            );
            vec![
                html!("{}", ch.changeid).into(),
                time_html(ch.when_timestamp).into(),
                text(&ch.author),
                wrap(message_html(&ch.comments)),
                text(&ch.branch.unwrap_or_default()),
                short_rev(ch.revision.as_deref()).into(),
                text(&ch.repository),
                started.into(),
            ]
        })
        .collect();
    let body = html!(
        "<h2>Changes ({})</h2>{}{}",
        total,
        table(
            &[
                "Change",
                "When",
                "Author",
                "Message",
                "Branch",
                "Revision",
                "Repository",
                "Builds"
            ],
            &rows,
            "No changes yet."
        ),
        pager("/changes", page, total, PAGE_SIZE)
    );
    Ok(c.layout("Changes", "/changes", live(v, body)))
}

/// Requests shown under "recently started or finished" on `/buildrequests`.
const RECENT_REQUESTS: i64 = 10;

/// `/buildrequests`: the queue, and the requests that left it last.
pub(crate) fn buildrequests(c: &Ctx) -> Result<Html> {
    let v = db::live_version(c.conn)?;
    let body = html!(
        "<h2>Build request queue</h2>{}{}",
        live(
            v,
            html!(
                "{}{}",
                queue_section(c, None, 500)?,
                recent_requests_section(c)?
            )
        ),
        if c.csrf.is_none() {
            c.login_hint("cancel a request", "/buildrequests")
        } else {
            Html::new()
        }
    );
    Ok(c.layout("Queue", "/buildrequests", body))
}

/// The newest requests no longer queued: their result and the build that
/// ran them or, for a SKIPPED one, covered them.
fn recent_requests_section(c: &Ctx) -> Result<Html> {
    let rows: Vec<Vec<Cell>> = db::recent_requests(c.conn, RECENT_REQUESTS)?
        .iter()
        .map(|r| {
            let mut row = request_cells(r);
            row.extend([
                badge(r.results, r.complete).into(),
                wrap(request_build_html(r)),
            ]);
            row
        })
        .collect();
    Ok(html!(
        "<section><h2>Recently started or finished</h2>{}</section>",
        table(
            &["Request", "Builder", "Asked by", "What", "Result", "Build"],
            &rows,
            "No request has started yet."
        )
    ))
}

/// The build that ran a request, or covered it when it was collapsed.
fn request_build_html(r: &db::RequestRow) -> Html {
    match (&r.covered_by, &r.build) {
        (Some((_, Some((builder, number)))), _) => html!(
            "<span class=\"covered\">covered by build {} {}</span>",
            builder_link(builder),
            build_link(builder, *number)
        ),
        (Some((buildid, None)), _) => html!(
            "<span class=\"covered\">covered by build {} (since pruned)</span>",
            *buildid
        ),
        (None, Some((builder, number))) => build_link(builder, *number),
        (None, None) => Html::new(),
    }
}

pub(crate) use crate::db::request_build;

/// `/buildrequests/<id>` while it has no build to show: queued (the
/// script waits for its build), skipped (collapsed) or cancelled. None: no
/// such request.
pub(crate) fn buildrequest(c: &Ctx, brid: RequestId) -> Result<Option<Html>> {
    let Some(r) = db::request_info(c.conn, brid)? else {
        return Ok(None);
    };
    let path = format!("/buildrequests/{brid}");
    let mut body = html!(
        "<h2>Build request {}</h2><dl class=\"kv\"><dt>Builder</dt><dd>{}</dd>\
         <dt>Asked by</dt><dd id=\"origin\">{}</dd><dt>What</dt><dd id=\"what\">{}</dd>\
         <dt>Reason</dt><dd>{}</dd><dt>Submitted</dt><dd>{}</dd></dl>",
        brid,
        builder_link(&r.builder),
        origin_html(&r.origin),
        what_html(&r),
        or_dash(&r.reason),
        time_html(r.submitted_at)
    );
    if r.complete {
        html_push!(body, "<p>Complete: {}</p>", badge(r.results, true));
        if r.covered_by.is_some() {
            html_push!(
                body,
                "<p id=\"covered\">Collapsed into a newer request: {}.</p>",
                request_build_html(&r)
            );
        }
    } else if r.claimed_at.is_none() {
        let waits = Waits::read(c.conn, c.cfg, std::slice::from_ref(&r))?;
        body.push(&html!(
            "<p id=\"waitreq\" data-brid=\"{}\">Queued, waiting for {}. \
             This page opens the build when it starts.</p><p>{}</p>",
            brid,
            waits.why(c.cfg, &r),
            c.post_form(&format!("{path}/cancel"), "Cancel", Html::new())
        ));
    } else {
        // Claimed between the route's look for its build and this read
        // (they are two reads): its build has started. Linked, and the
        // script opens it as for a queued request; without this the page
        // said neither, and a forced build's page never moved on.
        html_push!(
            body,
            "<p id=\"waitreq\" data-brid=\"{}\">Started: {}. \
             This page opens the build.</p>",
            brid,
            request_build_html(&r)
        );
    }
    Ok(Some(c.layout(&format!("Request {brid}"), &path, body)))
}

// ---------------------------------------------------------------------------
// Login, messages, badges

/// The login page; `error` is shown above the form. `login_csrf` is the
/// value of the double-submit cookie the caller sets with the page.
/// The login page: the password form, and "Log in with Gitea" when
/// `[www.auth]` is set (`gitea`).
pub(crate) fn login(
    c: &Ctx,
    next: &str,
    error: Option<&str>,
    login_csrf: &str,
    gitea: bool,
) -> Html {
    let mut body = html!("<h2>Log in</h2>");
    if let Some(e) = error {
        html_push!(body, "<p class=\"flash\">{}</p>", e);
    }
    if let Some(u) = c.user {
        html_push!(body, "<p>You are logged in as {}.</p>", u);
    }
    if gitea {
        // A link, not a form: the CSP's `form-action 'self'` would stop a
        // form at its redirect to Gitea.
        html_push!(
            body,
            "<p><a class=\"button\" id=\"gitea-login\" href=\"/login/gitea?next={}\">Log in with Gitea</a></p>\
             <p class=\"muted\">Or with a local account:</p>",
            url_encode(next)
        );
    }
    body.push(&html!(
        "<form method=\"post\" action=\"/login\" class=\"login\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <input type=\"hidden\" name=\"next\" value=\"{}\">\
         <label for=\"username\">User name</label>\
         <input type=\"text\" id=\"username\" name=\"username\" autocomplete=\"username\" autofocus required>\
         <label for=\"password\">Password</label>\
         <input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"current-password\" required>\
         <p><button type=\"submit\">Log in</button></p></form>\
         <p class=\"muted\">Users are added on the master's host with <code>minibot user add DIR NAME</code>.</p>",
        login_csrf,
        next
    ));
    c.layout("Log in", "/login", body)
}

/// A page that says one thing (errors of form posts).
pub(crate) fn message(c: &Ctx, heading: &str, text: &str, back: &str) -> Html {
    let body = html!(
        "<h2>{}</h2><p class=\"flash\">{}</p><p><a href=\"{}\">Back</a></p>",
        heading,
        text,
        back
    );
    c.layout(heading, back, body)
}

/// `/badges/<builder>.svg`: the result of the builder's last finished
/// build, as buildbot-badges draws it. None: no such builder.
pub(crate) fn badge_svg(conn: &db::Conn, builder: &str) -> Result<Option<Html>> {
    let Some(results) = db::builder_last_result(conn, builder)? else {
        return Ok(None);
    };
    let (text, colour) = match results {
        Some(r) => (r.name(), result_colour(r)),
        None => ("unknown", "#ccc"),
    };
    Ok(Some(svg_badge("build", text, colour)))
}

/// A flat two-part badge; widths from a rough 7 px per character. SVG is
/// XML: the same escaping holds.
pub(crate) fn svg_badge(left: &str, right: &str, colour: &str) -> Html {
    let lw = 10 + 7 * left.chars().count();
    let rw = 10 + 7 * right.chars().count();
    let w = lw + rw;
    html!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"20\" role=\"img\" aria-label=\"{}: {}\">\
         <title>{}: {}</title>\
         <rect width=\"{}\" height=\"20\" fill=\"#555\"/><rect x=\"{}\" width=\"{}\" height=\"20\" fill=\"{}\"/>\
         <g font-family=\"Verdana,DejaVu Sans,sans-serif\" font-size=\"11\">\
         <text x=\"{}\" y=\"14\" fill=\"#fff\" text-anchor=\"middle\">{}</text>\
         <text x=\"{}\" y=\"14\" fill=\"#222\" text-anchor=\"middle\">{}</text></g></svg>\n",
        w,
        left,
        right,
        left,
        right,
        lw,
        lw,
        rw,
        colour,
        lw / 2,
        left,
        lw + rw / 2,
        right
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db;

    #[test]
    fn encodes_path_segments() {
        // Escaping itself is tested in `html.rs`.
        assert_eq!(encode_path_segment("a b/c<"), "a%20b%2Fc%3C");
    }

    #[test]
    fn times() {
        assert_eq!(time_html(0), "<time>1970-01-01 00:00:00Z</time>");
        assert_eq!(
            time_html(1_709_210_096),
            "<time>2024-02-29 12:34:56Z</time>"
        );
        assert!(time_html(253_402_300_799).contains(">9999-12-31 23:59:59Z<"));
        assert_eq!(time_html(-62_167_219_201), "<time>-62167219201</time>");
        assert_eq!(duration(42), "42s");
        assert_eq!(duration(185), "3m 05s");
        assert_eq!(duration(3720), "1h 02m");
        assert_eq!(duration(-5), "0s");
        assert_eq!(took(Some(10), Some(52), 0), "42s");
        assert_eq!(
            took(Some(10), None, 75),
            "<span data-since=\"10\">1m 05s</span>"
        );
    }

    struct Fixture {
        dir: tempfile::TempDir,
        conn: db::Tx,
        cfg: Config,
    }

    impl Fixture {
        fn ctx<'a>(&'a self, user: Option<&'a str>, csrf: Option<&'a str>, now: i64) -> Ctx<'a> {
            Ctx {
                conn: &self.conn,
                cfg: &self.cfg,
                user,
                csrf,
                session: csrf,
                master_dir: self.dir.path(),
                now,
            }
        }
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        db::create(&path).unwrap();
        let conn = db::open_admin(&path).unwrap();
        let mut cfg = crate::config::parse(crate::config::SAMPLE, "sample").unwrap();
        cfg.title = "CI & <co>".into();
        cfg.schedulers[1]
            .builders
            .push("<script>alert(1)</script>".into());
        conn.sql().execute_batch(
            r#"
            INSERT INTO builders (builderid, name) VALUES (1, '<script>alert(1)</script>');
            INSERT INTO builders (builderid, name) VALUES (2, 'runtests');
            INSERT INTO builders (builderid, name) VALUES (3, 'idle');
            INSERT INTO builders (builderid, name, configured) VALUES (4, 'gone', 0);
            INSERT INTO workers (workerid, name, info, connected, paused, last_connection)
              VALUES (1, 'w<1>', '{"admin":"Ann <ann@x>","host":"box & co"}', 1, 0, 1000),
                     (2, 'w2', '{}', 0, 1, NULL);
            INSERT INTO changes (changeid, author, comments, branch, revision, repository,
                project, when_timestamp)
              VALUES (1, 'Eve <e@x>', '<script>alert("c")</script> fix
second line <b>', 'master', 'abcdef0123456789', 'r', 'p', 900);
            INSERT INTO buildsets (buildsetid, reason, submitted_at, branch, revision)
              VALUES (1, 'push <x>', 0, 'master', 'abcdef0123456789');
            INSERT INTO buildset_changes VALUES (1, 1);
            INSERT INTO buildrequests (buildrequestid, buildsetid, builderid, submitted_at,
                claimed_at, complete) VALUES (1, 1, 1, 0, 1, 1), (2, 1, 2, 0, NULL, 0),
                (3, 1, 2, 0, NULL, 0), (4, 1, 4, 0, 5, 0);
            INSERT INTO builds (buildid, number, builderid, buildrequestid, workerid, started_at,
                complete_at, results, state_string, properties)
              VALUES (1, 7, 1, 1, 1, 1000, 1185, 2, 'failed', '{"owner":["<i>x</i>","Force"]}'),
                     (2, 1, 2, 4, 1, 2000, 2042, 0, 'ok', '{}'),
                     (3, 2, 2, 4, 1, 3000, NULL, NULL, 'compiling "x" & <y>', '{}');
            INSERT INTO steps (stepid, buildid, number, name, started_at, complete_at, results,
                state_string, urls)
              VALUES (1, 3, 0, 'git', 3000, 3010, 0, 'git', '[{"name":"ok","url":"https://x/"},{"name":"bad","url":"javascript:alert(1)"}]'),
                     (2, 3, 1, 'test <t>', 3010, NULL, NULL, 'test running', '[]');
            INSERT INTO logs (logid, stepid, name, slug) VALUES (1, 1, 'stdio', 'stdio'),
                (2, 2, 'stdio', 'stdio');
            INSERT INTO buildrequests (buildrequestid, buildsetid, builderid, submitted_at,
                claimed_at, complete, results, complete_at, collapsed_into)
              VALUES (5, 1, 2, 0, 1, 1, 3, 1, 2);
            "#,
        )
        .unwrap();
        let log = db::log_path(dir.path(), BuildId(3), LogId(2));
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        std::fs::write(&log, "ohello <b>\ne\x1b[31merr\x1b[0m\n").unwrap();
        Fixture { dir, conn, cfg }
    }

    fn assert_no_raw_script(html: &str) {
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(!html.contains("<b>"), "{html}");
        assert!(
            !html.contains("style="),
            "inline styles break the CSP: {html}"
        );
    }

    #[test]
    fn empty_home_page() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        db::create(&path).unwrap();
        let conn = db::open_admin(&path).unwrap();
        let mut cfg = crate::config::parse(crate::config::SAMPLE, "sample").unwrap();
        cfg.title = "My CI".into();
        let c = Ctx {
            conn: &conn,
            cfg: &cfg,
            user: None,
            csrf: None,
            session: None,
            master_dir: dir.path(),
            now: 0,
        };
        let html = home(&c).unwrap();
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("<title>Home - My CI</title>"));
        assert!(html.contains("No builders configured."));
        assert!(html.contains("0 pending build requests."));
        assert!(html.contains("<a href=\"/login?next=%2F\">Log in</a>"));
    }

    #[test]
    fn history_squares_carry_result_running_or_no_class() {
        let b = |buildid, results, complete_at| db::HistoryBuild {
            buildid: BuildId(buildid),
            builder: "b".into(),
            number: buildid * 10,
            results,
            started_at: 0,
            complete_at,
        };
        let (done, running, unknown) = (
            b(1, Some(BuildResult::Failure), Some(5)),
            b(2, None, None),
            b(3, None, Some(5)),
        );
        assert_eq!(
            strip(&[&unknown, &running, &done]).to_string(),
            "<span class=\"strip\">\
             <a class=\"r2\" href=\"/builds/1\" title=\"#10 failure\"></a>\
             <a class=\"running\" href=\"/builds/2\" title=\"#20 running\"></a>\
             <a href=\"/builds/3\" title=\"#30 unknown\"></a></span>"
        );
    }

    #[test]
    fn result_classes_are_the_results_codes() {
        for code in 0..=6 {
            let r = BuildResult::from_code(code).unwrap();
            assert_eq!(
                result_class(Some(r), true),
                (&*format!("res r{code}"), r.name())
            );
        }
        assert_eq!(result_class(None, false), ("res running", "running"));
        assert_eq!(result_class(None, true), ("res", "unknown"));
    }

    #[test]
    fn home_page_content_is_escaped() {
        let f = fixture();
        let html = home(&f.ctx(None, None, 3065)).unwrap();
        assert_no_raw_script(&html);
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("<title>Home - CI &amp; &lt;co&gt;</title>"));
        assert!(html.contains("compiling &quot;x&quot; &amp; &lt;y&gt;"));
        assert!(html.contains(
            "<a href=\"/builders/%3Cscript%3Ealert%281%29%3C%2Fscript%3E\">&lt;script&gt;"
        ));
        // Builds by their short address (which redirects to their page),
        // with their result in one badge where a list shows both.
        assert!(html.contains("<a class=\"res r2\" href=\"/builds/1\">#7 failure</a>"));
        assert!(html.contains("<a class=\"res running\" href=\"/builds/3\">#2 running</a>"));
        assert!(html.contains("<a href=\"/builds/3\">#2</a>"));
        assert!(html.contains("<a class=\"res r0\" href=\"/builds/2\">#1 success</a>"));
        assert!(html.contains("<h2>Running builds (1)</h2>"));
        assert!(html.contains("<span data-since=\"3000\">1m 05s</span>"));
        // Durations of finished builds in the recent list, labelled for
        // the phone's cards.
        assert!(html.contains("<td data-l=\"Duration\">3m 05s</td>"));
        assert!(html.contains("<td data-l=\"Duration\">42s</td>"));
        // The skip link first, the nav marking this page.
        assert!(html.contains("<body data-now=\"3065\"><a class=\"skip\" href=\"#main\">"));
        assert!(html.contains("<a href=\"/\" aria-current=\"page\">Home</a><a href=\"/workers\">"));
        // The queue, with no cancel buttons for a visitor.
        assert!(html.contains("2 pending build requests."));
        assert!(html.contains("<a href=\"/buildrequests/2\">2</a>"));
        assert!(!html.contains("/cancel"));
        assert!(html.contains("no builds"));
        assert!(!html.contains(">gone<"));
        // A user with a session gets cancel buttons with the CSRF token.
        let html = home(&f.ctx(Some("ann"), Some("tok<en"), 3065)).unwrap();
        assert!(html.contains(
            "<form class=\"inline\" method=\"post\" action=\"/buildrequests/2/cancel\">\
             <input type=\"hidden\" name=\"csrf\" value=\"tok&lt;en\">"
        ));
        assert!(html.contains("action=\"/logout\""));
    }

    #[test]
    fn builder_page_force_form_and_builds() {
        let f = fixture();
        let anon = builder(&f.ctx(None, None, 3065), "runtests", 1)
            .unwrap()
            .unwrap();
        assert!(anon.contains("Log in</a> to force a build."));
        assert!(!anon.contains("<form class=\"force\""));
        assert!(anon.contains("<h2>Builds (2)</h2>"));
        let html = builder(&f.ctx(Some("ann"), Some("t1"), 3065), "runtests", 1)
            .unwrap()
            .unwrap();
        assert!(html.contains(
            "<form class=\"force\" method=\"post\" action=\"/builders/runtests/force\">"
        ));
        assert!(html.contains("name=\"scheduler\" value=\"force\""));
        assert!(html.contains("value=\"t1\""));
        let odd = builder(
            &f.ctx(Some("ann"), Some("t1"), 0),
            "<script>alert(1)</script>",
            1,
        )
        .unwrap()
        .unwrap();
        assert_no_raw_script(&odd);
        assert!(odd.contains("action=\"/builders/%3Cscript%3Ealert%281%29%3C%2Fscript%3E/force\""));
        assert!(builder(&f.ctx(None, None, 0), "nope", 1).unwrap().is_none());
        // Paging: page 2 of 2 builds is empty but still a page.
        assert!(builder(&f.ctx(None, None, 0), "runtests", 2)
            .unwrap()
            .unwrap()
            .contains("No builds yet."));
    }

    #[test]
    fn build_page_steps_logs_and_buttons() {
        let f = fixture();
        let html = build(&f.ctx(Some("ann"), Some("t1"), 3065), "runtests", 2)
            .unwrap()
            .unwrap();
        assert_no_raw_script(&html);
        assert!(html.contains("<div id=\"build\" data-buildid=\"3\" data-live=\"1\">"));
        assert!(html.contains("action=\"/builds/3/stop\""));
        assert!(!html.contains("/rebuild"));
        // The running step is open with its log, ANSI colours rendered.
        assert!(html.contains("<strong>test &lt;t&gt;</strong>"));
        assert!(html.contains(
            "<details open><summary>stdio · <a href=\"/logs/2\">view</a></summary>\
             <pre class=\"log\" data-logid=\"2\" data-end=\"25\">hello &lt;b&gt;\n\
             <span class=\"le\"><span class=\"f1\">err</span></span>\n</pre>"
        ));
        // Its log has colours: the page links the palette.
        assert!(html.contains("<link rel=\"stylesheet\" href=\"/assets/ansi.css\">"));
        // Only web links from step URLs.
        assert!(html.contains("<a href=\"https://x/\" rel=\"noopener noreferrer\">ok</a>"));
        assert!(!html.contains("javascript:"));
        // The buildset and its change, escaped.
        assert!(html.contains("push &lt;x&gt;"));
        assert!(html.contains("&lt;script&gt;alert(&quot;c&quot;)&lt;/script&gt; fix"));
        let done = build(
            &f.ctx(Some("ann"), Some("t1"), 3065),
            "<script>alert(1)</script>",
            7,
        )
        .unwrap()
        .unwrap();
        assert_no_raw_script(&done);
        assert!(done.contains("action=\"/builds/1/rebuild\""));
        assert!(!done.contains("data-live"));
        assert!(done.contains("&lt;i&gt;x&lt;/i&gt;"));
        assert!(build(&f.ctx(None, None, 0), "runtests", 9)
            .unwrap()
            .is_none());
        // Visitors see no buttons.
        let anon = build(&f.ctx(None, None, 0), "runtests", 2)
            .unwrap()
            .unwrap();
        assert!(!anon.contains("<form"));
    }

    #[test]
    fn other_pages_escape() {
        let f = fixture();
        let c = f.ctx(Some("ann"), Some("t1"), 3065);
        let w = workers(&c).unwrap();
        assert_no_raw_script(&w);
        assert!(
            w.contains("w&lt;1&gt;")
                && w.contains("Ann &lt;ann@x&gt;")
                && w.contains("box &amp; co")
        );
        assert!(w.contains("action=\"/workers/w%3C1%3E/pause\""));
        assert!(w.contains("action=\"/workers/w2/unpause\""));
        assert!(w.contains("<a href=\"/builders/runtests/builds/2\">#2</a>"));
        let ch = changes(&c, 1).unwrap();
        assert_no_raw_script(&ch);
        assert!(
            ch.contains("<summary>&lt;script&gt;alert(&quot;c&quot;)&lt;/script&gt; fix</summary>")
        );
        assert!(ch.contains("second line &lt;b&gt;"));
        let q = buildrequests(&c).unwrap();
        assert!(q.contains("2 pending build requests."));
        let r = buildrequest(&c, RequestId(2)).unwrap().unwrap();
        assert!(r.contains("id=\"waitreq\" data-brid=\"2\""));
        // Claimed after the route looked for its build: the build is
        // linked and the script still opens it.
        let r = buildrequest(&c, RequestId(4)).unwrap().unwrap();
        assert!(
            r.contains("<p id=\"waitreq\" data-brid=\"4\">Started: <a href="),
            "{r:?}"
        );
        assert!(buildrequest(&c, RequestId(99)).unwrap().is_none());
        assert!(request_build(&f.conn, RequestId(2)).unwrap().is_none());
        assert_eq!(
            request_build(&f.conn, RequestId(4))
                .unwrap()
                .unwrap()
                .buildid,
            BuildId(3)
        );
        let l = login(
            &f.ctx(None, None, 0),
            "/x\"y",
            Some("Wrong <pw>"),
            "tok",
            false,
        );
        assert!(l.contains("Wrong &lt;pw&gt;") && l.contains("value=\"/x&quot;y\""));
        assert!(l.contains("name=\"csrf\" value=\"tok\""));
        assert!(!l.contains("Log in with Gitea"));
        // A Gitea login without a role: "Log out", but no write forms.
        let viewer = Ctx {
            session: Some("tok"),
            ..f.ctx(Some("gitea:bob"), None, 0)
        };
        let page = builder(&viewer, "runtests", 1).unwrap().unwrap();
        assert!(page.contains("Your account may not force a build here."));
        assert!(page.contains("action=\"/logout\"") && !page.contains("class=\"force\""));
        let admin = f.ctx(Some("gitea:isabell"), Some("tok"), 0);
        let page = builder(&admin, "runtests", 1).unwrap().unwrap();
        assert!(page.contains("class=\"force\""));
        let l = login(&f.ctx(None, None, 0), "/a b", None, "tok", true);
        assert!(l.contains("href=\"/login/gitea?next=%2Fa+b\"") && l.contains("Log in with Gitea"));
    }

    #[test]
    fn badges() {
        let f = fixture();
        let svg = badge_svg(&f.conn, "<script>alert(1)</script>")
            .unwrap()
            .unwrap();
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.contains(">failure</text>") && svg.contains("#e88"));
        assert!(badge_svg(&f.conn, "runtests")
            .unwrap()
            .unwrap()
            .contains(">success</text>"));
        assert!(badge_svg(&f.conn, "idle")
            .unwrap()
            .unwrap()
            .contains(">unknown</text>"));
        assert!(badge_svg(&f.conn, "nope").unwrap().is_none());
        assert!(svg_badge("a<b", "c", "#fff").contains("a&lt;b"));
    }

    #[test]
    fn a_big_log_opens_at_its_tail() {
        let f = fixture();
        let mut text = String::new();
        let mut i = 0;
        while text.len() < 3 << 20 {
            text.push_str(&format!("oline {i}\n"));
            i += 1;
        }
        std::fs::write(db::log_path(f.dir.path(), BuildId(3), LogId(2)), &text).unwrap();
        let html = build(&f.ctx(None, None, 0), "runtests", 2)
            .unwrap()
            .unwrap();
        assert!(html.len() < 100_000, "{} bytes", html.len());
        assert!(html.contains(&format!("line {}\n</pre>", i - 1)));
        assert!(!html.contains("line 0\n"));
        assert!(html.contains(
            "<button type=\"button\" class=\"earlier\" data-logid=\"2\">load earlier output ("
        ));
    }

    #[test]
    fn log_chunks() {
        let f = fixture();
        let v = log_chunk(&f.conn, f.dir.path(), LogId(2), 11)
            .unwrap()
            .unwrap();
        assert_eq!(v["start"], 0);
        assert_eq!(v["end"], 11);
        assert_eq!(v["html"], "hello &lt;b&gt;\n");
        assert!(log_chunk(&f.conn, f.dir.path(), LogId(99), 0)
            .unwrap()
            .is_none());
    }
}
