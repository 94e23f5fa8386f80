//! Build logs as the web pages show them: line-aligned byte ranges of a
//! log file, and their HTML with ANSI colours.
//!
//! Owns: reading parts of a log file (its tail, an earlier chunk, what was
//! appended since an offset) without ever loading the whole file, and
//! rendering stream-log lines (`o`/`e`/`h` prefix, see `logs.rs`) to HTML.
//! Pure functions; no threads. Used by `pages` (the build page) and `sse`
//! (live tails).
//!
//! Every offset handed to a browser is a line start, so chunks fetched
//! later (earlier parts, appended text) join without cutting a line. ANSI
//! state is reset at each line: chunks render independently and a stray
//! escape cannot colour the rest of the log.

use crate::db;
use crate::model::LogId;
use crate::web::html::{html, html_push, Html};
use crate::web::pages::Ctx;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

/// How much of a log the build page shows at first, and how much each
/// "load earlier" adds.
pub(crate) const CHUNK: u64 = 64 * 1024;

/// Most bytes one live update carries; a burst is sent in several.
pub(crate) const MAX_DELTA: u64 = 256 * 1024;

/// Lines of a log file: `text` holds the bytes from `start` to `end`.
/// `partial_first`: `start` is inside a line longer than a chunk, so the
/// first line has no stream character.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Range {
    pub start: u64,
    pub end: u64,
    pub text: Vec<u8>,
    pub partial_first: bool,
}

/// The whole lines within the `CHUNK` bytes before `end` (a line start, or
/// the file's length). A missing file is an empty range.
pub(crate) fn chunk_before(path: &Path, end: u64) -> io::Result<Range> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Range::default()),
        Err(e) => return Err(e),
    };
    let end = end.min(f.metadata()?.len());
    let from = end.saturating_sub(CHUNK);
    // One byte more in front, to see whether `from` starts a line.
    let read_from = from.saturating_sub(1);
    f.seek(SeekFrom::Start(read_from))?;
    let mut buf = Vec::with_capacity((end - read_from) as usize);
    f.take(end - read_from).read_to_end(&mut buf)?;
    // Only whole lines: drop a last line still being written.
    let keep = buf.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    if keep == 0 {
        // No whole line in reach (a giant line still being written).
        return Ok(Range {
            start: end,
            end,
            ..Range::default()
        });
    }
    buf.truncate(keep);
    let end = read_from + keep as u64;
    if from == 0 {
        return Ok(Range {
            start: 0,
            end,
            text: buf,
            partial_first: false,
        });
    }
    // Skip to the first line that starts at or after `from`.
    match buf[..buf.len().saturating_sub(1)]
        .iter()
        .position(|&b| b == b'\n')
    {
        Some(p) => {
            let text = buf.split_off(p + 1);
            Ok(Range {
                start: read_from + p as u64 + 1,
                end,
                text,
                partial_first: false,
            })
        }
        // One line longer than the chunk: show its end.
        None => Ok(Range {
            start: from,
            end,
            text: buf.split_off(1.min(buf.len())),
            partial_first: true,
        }),
    }
}

/// The whole lines appended after `offset` (a line start), at most about
/// `MAX_DELTA` bytes (a longer single line comes whole).
pub(crate) fn read_from(path: &Path, offset: u64) -> io::Result<Range> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Range {
                start: offset,
                end: offset,
                ..Range::default()
            })
        }
        Err(e) => return Err(e),
    };
    f.seek(SeekFrom::Start(offset))?;
    let mut r = BufReader::with_capacity(64 * 1024, f);
    let mut text = Vec::new();
    while (text.len() as u64) < MAX_DELTA {
        let before = text.len();
        let n = r.read_until(b'\n', &mut text)?;
        if n == 0 {
            break;
        }
        if text.last() != Some(&b'\n') {
            // Still being written: leave it for the next read.
            text.truncate(before);
            break;
        }
    }
    Ok(Range {
        start: offset,
        end: offset + text.len() as u64,
        text,
        partial_first: false,
    })
}

/// The HTML of stream-log lines: stderr in `<span class="le">`, headers in
/// `<span class="lh">`, ANSI SGR colours as `<span class="...">`, every
/// other byte escaped (the log's text goes into `Html` only as text; the
/// spans are ours). For the inside of a `<pre>`. Every span closes before
/// its line's `\n`, so the markup may be cut at any `\n` (the build page's
/// script keeps only the newest lines of a live log that way).
pub(crate) fn render(r: &Range) -> Html {
    let text = String::from_utf8_lossy(&r.text);
    let mut out = Html::new();
    for (i, line) in text.split_inclusive('\n').enumerate() {
        line_html(line, i == 0 && r.partial_first, &mut out);
        out.push(&html!("\n"));
    }
    out
}

/// One stream-log line (with or without its `\n`, which is not rendered).
fn line_html(line: &str, partial: bool, out: &mut Html) {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let (stream, body) = if partial {
        ('o', line)
    } else {
        match line.chars().next() {
            Some(c @ ('o' | 'e' | 'h')) => (c, &line[1..]),
            _ => ('o', line),
        }
    };
    // A progress bar redraws its line with '\r': show the last state.
    let body = body.trim_end_matches('\r');
    let body = body.rsplit('\r').next().unwrap_or(body);
    let class = match stream {
        'e' => Some("le"),
        'h' => Some("lh"),
        _ => None,
    };
    if let Some(c) = class {
        out.push(&html!("<span class=\"{}\">", c));
    }
    ansi_line(body, out);
    if class.is_some() {
        out.push(&html!("</span>"));
    }
}

/// A colour the pages can show without inline styles (the CSP forbids
/// them), so as classes: one of the 16 base colours (`f0`..`f15`,
/// `b0`..`b15`), or any other colour with its channels quantised to 4 bits
/// (`fx fr7 fg0 fbf`: the `fx` rule reads the channels' custom properties,
/// 3 × 16 rules a side instead of one per colour). 256-colour indexes
/// 16..=255 and truecolour land on the nearest of those 4,096 colours
/// (at most 8 off in 255 a channel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Colour {
    Base(u8),
    /// Channels 0..=15 (x 17 = 0..=255).
    Rgb(u8, u8, u8),
}

impl Colour {
    /// Entry `n` of the xterm 256-colour palette.
    fn indexed(n: u32) -> Option<Colour> {
        const CUBE: [u32; 6] = [0, 95, 135, 175, 215, 255];
        match n {
            0..=15 => Some(Colour::Base(n as u8)),
            16..=231 => {
                let i = (n - 16) as usize;
                Colour::rgb(CUBE[i / 36], CUBE[i / 6 % 6], CUBE[i % 6])
            }
            232..=255 => {
                let v = 8 + 10 * (n - 232);
                Colour::rgb(v, v, v)
            }
            _ => None,
        }
    }

    /// A truecolour; None if a channel is over 255.
    fn rgb(r: u32, g: u32, b: u32) -> Option<Colour> {
        let q = |v: u32| (v <= 255).then(|| ((v * 15 + 127) / 255) as u8);
        Some(Colour::Rgb(q(r)?, q(g)?, q(b)?))
    }

    /// Appends this colour's classes for side `s` (`'f'` or `'b'`), char
    /// by char (a hostile log may ask for a span per byte).
    fn push_classes(self, s: char, out: &mut String) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let digit = |d: u8| char::from(HEX[usize::from(d & 15)]);
        out.push(' ');
        out.push(s);
        match self {
            Colour::Base(n) => {
                if n >= 10 {
                    out.push('1');
                }
                out.push(char::from(b'0' + n % 10));
            }
            Colour::Rgb(r, g, b) => {
                out.push('x');
                for (c, v) in [('r', r), ('g', g), ('b', b)] {
                    out.push(' ');
                    out.push(s);
                    out.push(c);
                    out.push(digit(v));
                }
            }
        }
    }
}

/// SGR state of the line being rendered.
#[derive(Default, Clone, PartialEq)]
struct Sgr {
    fg: Option<Colour>,
    bg: Option<Colour>,
    bold: bool,
    dim: bool,
    italic: bool,
    underline: bool,
    reverse: bool,
    strike: bool,
}

/// The colour of an extended colour parameter (`38`/`48`) from the
/// parameters after it: `5;n` or `2;r;g;b`. Consumes what it reads.
fn extended_colour(it: &mut impl Iterator<Item = u32>) -> Option<Colour> {
    match it.next()? {
        5 => Colour::indexed(it.next()?),
        2 => {
            let (r, g, b) = (it.next()?, it.next()?, it.next()?);
            Colour::rgb(r, g, b)
        }
        _ => None,
    }
}

/// A parameter as a number: empty is 0, anything unreadable a value no
/// code matches.
fn param(p: &str) -> u32 {
    if p.is_empty() {
        0
    } else {
        p.parse::<u32>().unwrap_or(u32::MAX)
    }
}

impl Sgr {
    /// Applies the parameters of one `ESC [ ... m`. Each parameter is read
    /// once: the work is linear in their length, whatever they say.
    fn apply(&mut self, params: &str) {
        // A private marker (`ESC [ > 4 ; 2 m`, xterm's key modes) makes it
        // something other than SGR.
        if params.starts_with(['<', '=', '>', '?']) {
            return;
        }
        let mut it = params.split(';');
        while let Some(field) = it.next() {
            // ITU T.416 form: `38:5:n`, `38:2:r:g:b` or `38:2:id:r:g:b`
            // within one parameter.
            let mut sub = field.split(':');
            let p = param(sub.next().unwrap_or(""));
            match p {
                0 => *self = Sgr::default(),
                1 => self.bold = true,
                2 => self.dim = true,
                3 => self.italic = true,
                4 => self.underline = true,
                7 => self.reverse = true,
                9 => self.strike = true,
                22 => (self.bold, self.dim) = (false, false),
                23 => self.italic = false,
                24 => self.underline = false,
                27 => self.reverse = false,
                29 => self.strike = false,
                30..=37 => self.fg = Some(Colour::Base((p - 30) as u8)),
                90..=97 => self.fg = Some(Colour::Base((p - 90 + 8) as u8)),
                39 => self.fg = None,
                40..=47 => self.bg = Some(Colour::Base((p - 40) as u8)),
                100..=107 => self.bg = Some(Colour::Base((p - 100 + 8) as u8)),
                49 => self.bg = None,
                38 | 48 => {
                    let colour = if field.contains(':') {
                        let mut rest: Vec<u32> = sub.take(5).map(param).collect();
                        // `2:id:r:g:b`: drop the colour space id.
                        if rest.len() == 5 && rest[0] == 2 {
                            rest.remove(1);
                        }
                        extended_colour(&mut rest.into_iter())
                    } else {
                        extended_colour(&mut it.by_ref().map(param))
                    };
                    // An unreadable colour leaves the side as it was
                    // (what xterm does).
                    if let Some(c) = colour {
                        *if p == 38 { &mut self.fg } else { &mut self.bg } = Some(c);
                    }
                }
                _ => {}
            }
        }
    }

    /// The classes of this state, space-separated ("" for plain text).
    /// Reverse swaps the sides; a default side becomes `rf` (text in the
    /// log's background colour) or `rb` (background in its text colour).
    fn classes(&self) -> String {
        let mut c = String::new();
        let (fg, bg) = match self.reverse {
            true => (self.bg, self.fg),
            false => (self.fg, self.bg),
        };
        match (fg, self.reverse) {
            (Some(f), _) => f.push_classes('f', &mut c),
            (None, true) => c.push_str(" rf"),
            (None, false) => {}
        }
        match (bg, self.reverse) {
            (Some(b), _) => b.push_classes('b', &mut c),
            (None, true) => c.push_str(" rb"),
            (None, false) => {}
        }
        for (on, name) in [
            (self.bold, " ab"),
            (self.dim, " ad"),
            (self.italic, " ai"),
            (self.underline, " au"),
            (self.strike, " as"),
        ] {
            if on {
                c.push_str(name);
            }
        }
        if !c.is_empty() {
            c.remove(0);
        }
        c
    }
}

/// A line's open span: opened only before the text it colours, so
/// escapes with no text between them cost nothing in the output.
#[derive(Default)]
struct Painter {
    /// The state of the span open now; the default state is no span.
    shown: Sgr,
}

impl Painter {
    fn text(&mut self, t: &str, sgr: &Sgr, out: &mut Html) {
        if t.is_empty() {
            return;
        }
        if *sgr != self.shown {
            self.close(out);
            let classes = sgr.classes();
            if !classes.is_empty() {
                // Our class names; escaped all the same.
                html_push!(out, "<span class=\"{}\">", classes);
            }
            self.shown = sgr.clone();
        }
        out.push(t);
    }

    fn close(&mut self, out: &mut Html) {
        if self.shown != Sgr::default() {
            html_push!(out, "</span>");
            self.shown = Sgr::default();
        }
    }
}

/// Renders one line's text with its ANSI escapes into `out`.
///
/// Bounded by construction: each byte is looked at a fixed number of
/// times (an SGR's parameters once each, whatever they say), and a span
/// (at most 66 bytes of markup with its end) is opened only before at
/// least one byte of text and after an escape of at least 4 bytes that
/// changed the state, so the HTML is at most ~13 times the line (plain
/// escaping alone is up to 6: `"` is `&quot;`);
/// `hostile_escapes_stay_linear` measures it.
fn ansi_line(s: &str, out: &mut Html) {
    let mut sgr = Sgr::default();
    let mut paint = Painter::default();
    let mut rest = s;
    while let Some(i) = rest.find('\x1b') {
        paint.text(&rest[..i], &sgr, out);
        let after = &rest[i + 1..];
        let next = match after.as_bytes().first() {
            Some(b'[') => {
                let csi = &after[1..];
                // CSI: parameter and intermediate bytes, then one final
                // byte in @..~; unfinished, it ends the line.
                csi.find(|c: char| ('@'..='~').contains(&c)).map(|end| {
                    if csi.as_bytes()[end] == b'm' {
                        sgr.apply(&csi[..end]);
                    }
                    &csi[end + 1..]
                })
            }
            // OSC (titles, hyperlinks), DCS, SOS, PM, APC: a string up to
            // BEL or ST (`ESC \`); the text of a hyperlink stays, its
            // target goes. Unterminated, it ends the line.
            Some(b']' | b'P' | b'X' | b'^' | b'_') => {
                let body = &after[1..];
                body.find(['\x07', '\x1b'])
                    .map(|j| match body.as_bytes()[j] {
                        0x07 => &body[j + 1..],
                        _ => body[j + 1..].strip_prefix('\\').unwrap_or(&body[j..]),
                    })
            }
            // Any other escape (ESC, intermediates ' '..'/', a final
            // byte), e.g. a charset switch: drop it.
            _ => {
                let t = after.trim_start_matches(|c: char| (' '..='/').contains(&c));
                let mut chars = t.chars();
                chars.next();
                Some(chars.as_str())
            }
        };
        match next {
            Some(n) => rest = n,
            None => {
                rest = "";
                break;
            }
        }
    }
    paint.text(rest, &sgr, out);
    paint.close(out);
}

// ---------------------------------------------------------------------------
// Log tools (issue 17 point 3): line numbers, regions, search, download.
//
// Line numbers count the file's `\n`s: line 1 starts at byte 0. A log
// file only grows while its build runs (one writer, appends) and is made
// new for each log, so an index of line starts keyed by the file's
// (device, inode) stays true and is extended from where it stopped.

/// One line start in `STRIDE` is kept: a 50 MB log of 100-byte lines
/// holds ~120 marks; a file of only `\n`s at most `len / STRIDE`.
const STRIDE: u64 = 4096;
/// Line indexes kept in memory (the least recently used go first).
const CACHED_INDEXES: usize = 32;
/// What one read of a scan takes from the file.
const SCAN_BLOCK: usize = 1 << 20;
/// Longest part of one line a region shows; the rest is cut (and said so):
/// a single 10 MB line must not make a 10 MB page.
pub(crate) const LINE_CAP: usize = 4096;
/// Lines a region shows.
pub(crate) const REGION_LINES: u64 = 500;
/// Lines shown above the line a region is opened at.
pub(crate) const REGION_BEFORE: u64 = 100;
/// Matches a search lists (it counts on past them).
pub(crate) const MAX_HITS: usize = 200;
/// Time one search may take before it stops and says where it got to.
pub(crate) const SEARCH_BUDGET: std::time::Duration = std::time::Duration::from_millis(400);
/// Longest search text or pattern.
pub(crate) const MAX_QUERY: usize = 256;
/// Compiled size limit of a regex (the crate's own default is 10 MB).
const REGEX_SIZE_LIMIT: usize = 256 * 1024;
/// Cache of a regex's lazy DFA (the crate's default: 2 MB each way). Log
/// patterns need a few hundred states; a pattern that needs more makes
/// the engine fall back to its NFA simulation, slower but still linear
/// and still cut by `SEARCH_BUDGET`.
const REGEX_DFA_LIMIT: usize = 512 * 1024;

#[derive(Debug, Clone)]
struct LineIndex {
    file: (u64, u64),
    /// Bytes indexed: just after the last `\n` seen.
    len: u64,
    /// Complete lines in `..len`.
    lines: u64,
    /// `marks[k]`: where line `k * STRIDE` (0-based) starts.
    marks: Vec<u64>,
}

static INDEXES: std::sync::Mutex<Vec<(std::path::PathBuf, LineIndex)>> =
    std::sync::Mutex::new(Vec::new());

/// What a line index tells of a log file now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lines {
    /// Complete lines.
    pub count: u64,
    marks: Vec<u64>,
}

/// The line index of the file at `path` (complete lines only), built once
/// and extended as the file grows. None: no such file.
fn index(path: &Path) -> io::Result<Option<Lines>> {
    use std::os::unix::fs::MetadataExt;
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = f.metadata()?;
    let id = (meta.dev(), meta.ino());
    // Taken out while it is extended, so the lock is never held for a scan.
    let cached = {
        let mut all = INDEXES.lock().unwrap_or_else(|e| e.into_inner());
        all.iter()
            .position(|(p, _)| p == path)
            .map(|i| all.remove(i).1)
    };
    let mut idx = match cached {
        Some(i) if i.file == id && i.len <= meta.len() => i,
        _ => LineIndex {
            file: id,
            len: 0,
            lines: 0,
            marks: vec![0],
        },
    };
    if idx.len < meta.len() {
        f.seek(SeekFrom::Start(idx.len))?;
        let mut buf = vec![0u8; SCAN_BLOCK];
        let mut base = idx.len;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            for p in memchr::memchr_iter(b'\n', &buf[..n]) {
                idx.lines += 1;
                idx.len = base + p as u64 + 1;
                if idx.lines % STRIDE == 0 {
                    idx.marks.push(idx.len);
                }
            }
            base += n as u64;
        }
    }
    let out = Lines {
        count: idx.lines,
        marks: idx.marks.clone(),
    };
    let mut all = INDEXES.lock().unwrap_or_else(|e| e.into_inner());
    if all.len() >= CACHED_INDEXES {
        all.remove(0);
    }
    all.push((path.to_path_buf(), idx));
    Ok(Some(out))
}

/// Where line `n` (1-based) starts, if the file has it (complete).
fn line_start(f: &mut File, lines: &Lines, n: u64) -> io::Result<Option<u64>> {
    if n == 0 || n > lines.count {
        return Ok(None);
    }
    let n0 = n - 1;
    let Some(&mark) = lines.marks.get((n0 / STRIDE) as usize) else {
        return Ok(None);
    };
    let mut skip = n0 % STRIDE;
    if skip == 0 {
        return Ok(Some(mark));
    }
    f.seek(SeekFrom::Start(mark))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut base = mark;
    loop {
        let got = f.read(&mut buf)?;
        if got == 0 {
            return Ok(None);
        }
        for p in memchr::memchr_iter(b'\n', &buf[..got]) {
            skip -= 1;
            if skip == 0 {
                return Ok(Some(base + p as u64 + 1));
            }
        }
        base += got as u64;
    }
}

/// Reads one line from `r` into `out` (the `\n` not kept), at most `cap`
/// bytes of it; the rest is consumed. Returns (bytes the line had,
/// whether it ended with `\n`).
fn read_line_capped(
    r: &mut impl BufRead,
    cap: usize,
    out: &mut Vec<u8>,
) -> io::Result<(u64, bool)> {
    let mut total = 0u64;
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok((total, false));
        }
        let (take, done) = match memchr::memchr(b'\n', buf) {
            Some(p) => (p, true),
            None => (buf.len(), false),
        };
        let room = cap.saturating_sub(total as usize).min(take);
        out.extend_from_slice(&buf[..room]);
        total += take as u64;
        r.consume(take + usize::from(done));
        if done {
            return Ok((total, true));
        }
    }
}

/// Lines `first..` of a log, for a page: at most `REGION_LINES`, each
/// cut at `LINE_CAP` bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Region {
    /// Line number of the first line (1-based).
    pub first: u64,
    /// Each line without its `\n`, prefix kept.
    pub lines: Vec<Vec<u8>>,
    /// Complete lines in the log.
    pub total: u64,
}

/// The region of up to `REGION_LINES` lines from line `first`, clamped
/// to the log (`first` past the end: the last lines).
pub(crate) fn region(path: &Path, first: u64) -> io::Result<Region> {
    let Some(lines) = index(path)? else {
        return Ok(Region::default());
    };
    let first = first
        .min(lines.count.saturating_sub(REGION_LINES - 1))
        .max(1);
    let mut f = File::open(path)?;
    let Some(start) = line_start(&mut f, &lines, first)? else {
        return Ok(Region {
            first: 1,
            lines: vec![],
            total: lines.count,
        });
    };
    f.seek(SeekFrom::Start(start))?;
    let mut r = BufReader::with_capacity(64 * 1024, f);
    let mut out = Vec::new();
    let mut n = first;
    while n <= lines.count && (out.len() as u64) < REGION_LINES {
        let mut line = Vec::new();
        let (len, complete) = read_line_capped(&mut r, LINE_CAP, &mut line)?;
        if !complete {
            break;
        }
        if len as usize > LINE_CAP {
            let note = format!(
                " … [{} more bytes of this line: see raw]",
                len as usize - LINE_CAP
            );
            line.extend_from_slice(note.as_bytes());
        }
        out.push(line);
        n += 1;
    }
    Ok(Region {
        first,
        lines: out,
        total: lines.count,
    })
}

/// The HTML of a region's lines, each with its number as a link to
/// itself (`id="L<n>"`); lines in `marked` get class `hit`.
pub(crate) fn render_region(r: &Region, marked: &dyn Fn(u64, &[u8]) -> bool) -> Html {
    let mut out = Html::new();
    for (i, line) in r.lines.iter().enumerate() {
        let n = r.first + i as u64;
        let class = if marked(n, line) { "ln hit" } else { "ln" };
        out.push(&html!(
            "<a id=\"L{}\" href=\"#L{}\" class=\"{}\">{}</a>",
            n,
            n,
            class,
            n
        ));
        line_html(&String::from_utf8_lossy(line), false, &mut out);
        out.push(&html!("\n"));
    }
    out
}

/// What a search looks for: text as it is, or a regex (the `regex`
/// crate's bytes engine, with `^`/`$` at line ends). Matched against each
/// line without its stream character.
///
/// Not regex-lite, which the config's filters use: it has no DFA, and got
/// through only a third of a 50 MB log in the time of an answer; the lazy
/// DFA reads all of it in ~100 ms (docs/performance.md, "Web UI timings").
/// The crate is built without its Unicode tables, so a pattern that needs
/// one (`\w`, `\d`, `\s`, `\b`, `(?i)`) is compiled again with ASCII
/// classes and case folding, as regex-lite has them. Log files are UTF-8
/// (the worker decodes output with U+FFFD), so `.` is a character.
pub(crate) enum Pattern {
    Plain(Vec<u8>),
    Regex(regex::bytes::Regex),
}

impl Pattern {
    /// Err: a message for the user.
    pub(crate) fn new(q: &str, regex: bool) -> Result<Pattern, String> {
        if q.is_empty() {
            return Err("nothing to search for".into());
        }
        if q.len() > MAX_QUERY {
            return Err(format!("a search is at most {MAX_QUERY} bytes"));
        }
        if !regex {
            if q.contains('\n') {
                return Err("a search is one line".into());
            }
            return Ok(Pattern::Plain(q.as_bytes().to_vec()));
        }
        let build = |unicode: bool| {
            regex::bytes::RegexBuilder::new(q)
                .multi_line(true)
                .unicode(unicode)
                .size_limit(REGEX_SIZE_LIMIT)
                .dfa_size_limit(REGEX_DFA_LIMIT)
                .nest_limit(64)
                .build()
        };
        // Unicode first (`.` is a character, not a byte); ASCII when the
        // pattern needs a table this build leaves out.
        build(true)
            .or_else(|e| build(false).map_err(|_| e))
            .map(Pattern::Regex)
            .map_err(|e| format!("not a regex: {e}"))
    }

    /// Whether one line (prefix kept) matches: for marking lines shown.
    pub(crate) fn is_match(&self, line: &[u8]) -> bool {
        let body = line.get(1..).unwrap_or_default();
        match self {
            Pattern::Plain(p) => memchr::memmem::find(body, p).is_some(),
            Pattern::Regex(re) => re.is_match(body),
        }
    }
}

/// A matching line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hit {
    pub line: u64,
    /// The line (prefix kept), cut at 300 bytes.
    pub text: Vec<u8>,
}

/// Which matches a search keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keep {
    /// The first `MAX_HITS`, counting on to the end.
    List,
    /// The first one; it stops there.
    First,
    /// The last one before `until`.
    Last,
}

/// What a search found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Found {
    pub hits: Vec<Hit>,
    /// Matching lines seen (all of them, not only those kept).
    pub count: u64,
    /// Where it stopped when out of time: the first line not searched.
    pub stopped_at: Option<u64>,
    /// Complete lines in the log.
    pub total: u64,
}

/// Searches lines `from..until` (1-based, `until` excluded, None: to the
/// end) of the log at `path` for `pat`, reading it a block at a time and
/// stopping after `budget`. A line matches once, however often its text
/// does.
pub(crate) fn search(
    path: &Path,
    pat: &Pattern,
    from: u64,
    until: Option<u64>,
    keep: Keep,
    budget: std::time::Duration,
) -> io::Result<Found> {
    let t0 = std::time::Instant::now();
    let Some(lines) = index(path)? else {
        return Ok(Found::default());
    };
    let mut found = Found {
        total: lines.count,
        ..Found::default()
    };
    let from = from.max(1);
    let until = until.unwrap_or(u64::MAX).min(lines.count + 1);
    if from >= until {
        return Ok(found);
    }
    let mut f = File::open(path)?;
    let Some(start) = line_start(&mut f, &lines, from)? else {
        return Ok(found);
    };
    f.seek(SeekFrom::Start(start))?;
    // `buf` holds whole lines from line `line_no`; a line longer than a
    // block is searched in pieces (a match across the cut is missed).
    let mut buf: Vec<u8> = Vec::with_capacity(SCAN_BLOCK * 2);
    let mut carry: Vec<u8> = Vec::new();
    let mut line_no = from;
    let mut starts_line = true;
    let mut last_hit = 0u64;
    let mut stripped = Vec::new();
    let mut block = vec![0u8; SCAN_BLOCK];
    loop {
        if line_no >= until {
            break;
        }
        if t0.elapsed() >= budget {
            found.stopped_at = Some(line_no);
            break;
        }
        let n = f.read(&mut block)?;
        buf.clear();
        buf.append(&mut carry);
        buf.extend_from_slice(&block[..n]);
        let cut = match memchr::memrchr(b'\n', &buf) {
            Some(p) => p + 1,
            // Only complete lines are searched; a giant line in pieces.
            None if buf.len() >= SCAN_BLOCK && n > 0 => buf.len(),
            None => 0,
        };
        carry.extend_from_slice(&buf[cut..]);
        buf.truncate(cut);
        if buf.is_empty() {
            break;
        }
        let chunk_starts_line = starts_line;
        starts_line = buf.last() == Some(&b'\n');
        // Hits in this chunk: (byte offset in the chunk).
        let mut each_hit =
            |pos: usize, found: &mut Found, line_no: &mut u64, counted: &mut usize| -> bool {
                *line_no += memchr::memchr_iter(b'\n', &buf[*counted..pos]).count() as u64;
                *counted = pos;
                if *line_no >= until {
                    return false;
                }
                if *line_no != last_hit {
                    last_hit = *line_no;
                    found.count += 1;
                    // Past the list only counted: no copy of the line.
                    if keep == Keep::List && found.hits.len() >= MAX_HITS {
                        return true;
                    }
                    let ls = memchr::memrchr(b'\n', &buf[..pos]).map_or(0, |p| p + 1);
                    let le = memchr::memchr(b'\n', &buf[pos..]).map_or(buf.len(), |p| pos + p);
                    let hit = Hit {
                        line: *line_no,
                        text: buf[ls..le.min(ls + 300)].to_vec(),
                    };
                    match keep {
                        Keep::List => found.hits.push(hit),
                        Keep::First => {
                            found.hits.push(hit);
                            return false;
                        }
                        Keep::Last => found.hits = vec![hit],
                    }
                }
                true
            };
        let base_line = line_no;
        let mut counted = 0usize;
        let mut go_on = true;
        match pat {
            Pattern::Plain(p) => {
                let finder = memchr::memmem::Finder::new(p);
                let mut at = 0;
                while let Some(rel) = finder.find(&buf[at..]) {
                    let pos = at + rel;
                    let at_prefix = if pos == 0 {
                        chunk_starts_line
                    } else {
                        buf[pos - 1] == b'\n'
                    };
                    if at_prefix {
                        at = pos + 1;
                        continue;
                    }
                    if !each_hit(pos, &mut found, &mut line_no, &mut counted) {
                        go_on = false;
                        break;
                    }
                    // On to the next line.
                    at = memchr::memchr(b'\n', &buf[pos..]).map_or(buf.len(), |q| pos + q + 1);
                    if at >= buf.len() {
                        break;
                    }
                }
            }
            Pattern::Regex(re) => {
                // The lines without their stream characters, and where
                // each stripped byte was. A copy, but a cheap one: 7–11 ms
                // of a ~110 ms regex search of 50 MB (docs/performance.md).
                stripped.clear();
                let mut map: Vec<(usize, usize)> = Vec::new();
                let mut s = 0;
                let mut first = true;
                while s < buf.len() {
                    let e = memchr::memchr(b'\n', &buf[s..]).map_or(buf.len(), |q| s + q + 1);
                    // An empty line may have no stream character.
                    let body_from = if (first && !chunk_starts_line) || buf[s] == b'\n' {
                        s
                    } else {
                        s + 1
                    };
                    map.push((stripped.len(), body_from));
                    stripped.extend_from_slice(&buf[body_from..e]);
                    first = false;
                    s = e;
                }
                // Bytes as they are: no UTF-8 check or lossy copy, and an
                // invalid byte keeps the offsets of what follows.
                let text = &stripped[..];
                let mut at = 0;
                while at < text.len() {
                    let Some(m) = re.find_at(text, at) else {
                        break;
                    };
                    let sp = m.start();
                    // An empty match after the last `\n` is no line.
                    if sp >= text.len() {
                        break;
                    }
                    // Back to the chunk: the line holding the match.
                    let i = map.partition_point(|&(st, _)| st <= sp).saturating_sub(1);
                    let (st, orig) = map[i];
                    let pos = (orig + (sp - st)).min(buf.len().saturating_sub(1));
                    if !each_hit(pos, &mut found, &mut line_no, &mut counted) {
                        go_on = false;
                        break;
                    }
                    at = match memchr::memchr(b'\n', &text[sp..]) {
                        Some(q) => sp + q + 1,
                        None => break,
                    };
                }
            }
        }
        if !go_on {
            break;
        }
        line_no = base_line + memchr::memchr_iter(b'\n', &buf).count() as u64;
        if n == 0 {
            break;
        }
    }
    // The blocks (a few MB) are freed into the heap, where glibc keeps
    // them resident: past its adaptive mmap threshold they no longer come
    // from mmap. Once a search has read a block, hand them back (well under
    // a millisecond; without it, 20 searches of a 50 MB log left the
    // master's RssAnon at 2.3 or 5.9 MB, as it happened).
    drop((buf, carry, block, stripped));
    crate::daemon::release_free_heap();
    Ok(found)
}

/// The log's text without stream characters, gzip-compressed as it is
/// read (memory: two buffers, whatever the size of the log).
pub(crate) fn gzip_reader(path: &Path) -> io::Result<Box<dyn Read + Send>> {
    let f = File::open(path)?;
    let plain = crate::web::api::StripPrefix::new(BufReader::with_capacity(64 * 1024, f));
    Ok(Box::new(flate2::read::GzEncoder::new(
        plain,
        flate2::Compression::fast(),
    )))
}

// ---------------------------------------------------------------------------
// The log page: `/logs/<logid>` (server-rendered, works without script).

/// The log page's query: `q` and `re` search, `line` opens the region
/// around a line, `after`/`before` jump to the next/previous match of `q`
/// from a line, `from` goes on with a search cut short.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LogParams {
    pub q: String,
    pub regex: bool,
    pub line: Option<u64>,
    pub after: Option<u64>,
    pub before: Option<u64>,
    pub from: Option<u64>,
}

/// What the log page answers.
pub(crate) enum LogAnswer {
    Page(Html),
    /// A jump to a match: the region around it.
    Redirect(String),
    NotFound,
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The query string part of a search (`q=..&re=1`), empty without one.
fn search_query(p: &LogParams) -> String {
    if p.q.is_empty() {
        return String::new();
    }
    format!("q={}{}&", enc(&p.q), if p.regex { "&re=1" } else { "" })
}

/// `/logs/<logid>`: a region of the log with line numbers (the end by
/// default), a search form, and for a search its matches or the region
/// around one with links to the previous and next.
pub(crate) fn log_page(c: &Ctx, logid: LogId, p: &LogParams) -> anyhow::Result<LogAnswer> {
    let Some(info) = db::log_page_info(c.conn, logid)? else {
        return Ok(LogAnswer::NotFound);
    };
    let path = db::log_path(c.master_dir, info.buildid, logid);
    let base = format!("/logs/{logid}");
    let sq = search_query(p);
    let pattern = if p.q.is_empty() {
        None
    } else {
        Some(Pattern::new(&p.q, p.regex))
    };
    // Jumps: the next or previous match from a line.
    let mut line = p.line;
    let mut note = Html::new();
    if let Some(Ok(pat)) = &pattern {
        let jump = match (p.after, p.before) {
            (Some(a), _) => Some((
                search(&path, pat, a + 1, None, Keep::First, SEARCH_BUDGET)?,
                a,
            )),
            (None, Some(b)) => Some((
                search(&path, pat, 1, Some(b), Keep::Last, SEARCH_BUDGET)?,
                b,
            )),
            (None, None) => None,
        };
        if let Some((found, from)) = jump {
            match (found.hits.first(), found.stopped_at) {
                // "previous" cut short has only a match before the cut.
                (Some(h), stopped) if p.after.is_some() || stopped.is_none() => {
                    return Ok(LogAnswer::Redirect(format!(
                        "{base}?{sq}line={}#L{}",
                        h.line, h.line
                    )));
                }
                (_, Some(at)) => {
                    note = html!(
                        "<strong>searched up to line {} in the time allowed</strong> · ",
                        at.saturating_sub(1)
                    );
                    if p.after.is_some() {
                        note.push(&html!(
                            "<a href=\"{}?{}after={}\">search on</a> · ",
                            base,
                            sq,
                            at.saturating_sub(1)
                        ));
                    }
                }
                _ => note = html!("<strong>no further match</strong> · "),
            }
            line = Some(from);
        }
    }
    let builder_url = format!(
        "/builders/{}/builds/{}",
        crate::web::pages::encode_path_segment(&info.builder),
        info.number
    );
    let mut body = html!(
        "<div id=\"logview\" data-logid=\"{}\"><p><a href=\"{}\">{} #{}</a> · step <strong>{}</strong> · \
         log <strong>{}</strong>{} · <a href=\"/api/v2/logs/{}/raw\">raw</a> · \
         <a href=\"/logs/{}/download\">download (gzip)</a></p>",
        logid,
        builder_url,
        info.builder,
        info.number,
        info.step,
        info.name,
        if info.complete { Html::new() } else { html!(" (still being written)") },
        logid,
        logid
    );
    body.push(&html!(
        "<form class=\"logsearch\" method=\"get\" action=\"{}\" role=\"search\">\
         <input type=\"search\" name=\"q\" value=\"{}\" placeholder=\"search this log\" aria-label=\"search this log\">\
         <label><input type=\"checkbox\" name=\"re\" value=\"1\"{}> regex</label>\
         <button type=\"submit\">Search</button></form>",
        base,
        p.q,
        if p.regex { html!(" checked") } else { Html::new() }
    ));
    if let Some(Err(msg)) = &pattern {
        body.push(&html!("<p class=\"flash\">{}</p>", msg));
    }
    let pat = match &pattern {
        Some(Ok(pat)) => Some(pat),
        _ => None,
    };
    if let (Some(pat), None) = (pat, line) {
        // The matches, listed.
        let from = p.from.unwrap_or(1);
        let t0 = std::time::Instant::now();
        let found = search(&path, pat, from, None, Keep::List, SEARCH_BUDGET)?;
        let ms = t0.elapsed().as_millis() as u64;
        let more = match found.stopped_at {
            Some(l) => html!(
                " (searched lines {}–{} of {} in {} ms; <a href=\"{}?{}from={}\">search on</a>)",
                from,
                l - 1,
                found.total,
                ms,
                base,
                sq,
                l
            ),
            None if from > 1 => html!(" from line {} on ({} ms)", from, ms),
            None => html!(" ({} lines, {} ms)", found.total, ms),
        };
        body.push(&html!(
            "<p class=\"hits-count\"><strong id=\"hitcount\">{}</strong> matching line{}{}</p>",
            found.count,
            if found.count == 1 { "" } else { "s" },
            more
        ));
        if found.count as usize > found.hits.len() {
            body.push(&html!(
                "<p class=\"muted\">The first {} are listed.</p>",
                found.hits.len()
            ));
        }
        body.push(&html!("<ol class=\"hits\">"));
        for h in &found.hits {
            let mut text = Html::new();
            line_html(&String::from_utf8_lossy(&h.text), false, &mut text);
            body.push(&html!(
                "<li><a href=\"{}?{}line={}#L{}\">line {}</a> <code class=\"hit\">{}</code></li>",
                base,
                sq,
                h.line,
                h.line,
                h.line,
                text
            ));
        }
        body.push(&html!("</ol></div>"));
        let title = format!(
            "{} #{} {} {}",
            info.builder, info.number, info.step, info.name
        );
        return Ok(LogAnswer::Page(c.layout(&title, &base, body)));
    }
    // A region: around `line`, or the end.
    let first = match line {
        Some(l) => l.saturating_sub(REGION_BEFORE).max(1),
        None => u64::MAX,
    };
    let r = region(&path, first)?;
    let last = r.first + r.lines.len() as u64;
    let mut nav = Html::new();
    if let (Some(_), Some(l)) = (pat, line) {
        nav.push(&html!(
            "<a href=\"{}?{}before={}\" rel=\"prev\">previous match</a> · \
             <a href=\"{}?{}after={}\" rel=\"next\">next match</a> · <a href=\"{}?{}\">all matches</a> · ",
            base,
            sq,
            l,
            base,
            sq,
            l,
            base,
            sq.trim_end_matches('&')
        ));
        nav.push(&note);
    }
    if r.first > 1 {
        nav.push(&html!(
            "<a href=\"{}?{}line=1#L1\">start</a> · <a href=\"{}?{}line={}#L{}\">earlier</a> · ",
            base,
            sq,
            base,
            sq,
            (r.first.saturating_sub(REGION_LINES - REGION_BEFORE)).max(1),
            r.first - 1
        ));
    }
    if r.lines.is_empty() {
        nav.push(&html!("no lines yet"));
    } else {
        nav.push(&html!("lines {}–{} of {}", r.first, last - 1, r.total));
    }
    if last <= r.total {
        nav.push(&html!(
            " · <a href=\"{}?{}line={}#L{}\">later</a> · <a href=\"{}\">end</a>",
            base,
            sq,
            last + REGION_BEFORE,
            last,
            base
        ));
    }
    let target = line;
    let mark = |n: u64, line: &[u8]| Some(n) == target || pat.is_some_and(|pt| pt.is_match(line));
    body.push(&html!(
        "<p class=\"lognav\">{}</p><pre class=\"log numbered\" id=\"logtext\" data-first=\"{}\" data-total=\"{}\"{}>{}</pre>\
         <p class=\"lognav\">{}</p></div>",
        nav,
        r.first,
        r.total,
        if line.is_none() { html!(" data-tail=\"1\"") } else { Html::new() },
        render_region(&r, &mark),
        nav
    ));
    let title = format!(
        "{} #{} {} {}",
        info.builder, info.number, info.step, info.name
    );
    Ok(LogAnswer::Page(c.layout(&title, &base, body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(text: &str) -> Range {
        Range {
            start: 0,
            end: text.len() as u64,
            text: text.as_bytes().to_vec(),
            partial_first: false,
        }
    }

    #[test]
    fn renders_streams_ansi_and_escapes() {
        let html = render(&range(
            "ohello <b>&\neoops\nhcmd: x\n\no\x1b[31mred\x1b[0m plain \x1b[1;32mbold green\n",
        ));
        assert_eq!(
            html,
            "hello &lt;b&gt;&amp;\n<span class=\"le\">oops</span>\n<span class=\"lh\">cmd: x</span>\n\n\
             <span class=\"f1\">red</span> plain <span class=\"f2 ab\">bold green</span>\n"
        );
        // Bright, background, 256 (standard part), other CSI (erase
        // line) and lone escapes dropped.
        assert_eq!(
            render(&range("o\x1b[91;44mx\x1b[38;5;3my\x1b[K\x1b(Bw\n")),
            "<span class=\"f9 b4\">x</span><span class=\"f3 b4\">yw</span>\n"
        );
        // An escape cannot smuggle markup, and an unfinished one is dropped.
        assert_eq!(
            render(&range("o\x1b[<script>m</script>\no\x1b[31\n")),
            "cript&gt;m&lt;/script&gt;\n\n"
        );
        // Progress bars: the last state of the line.
        assert_eq!(render(&range("o 10%\r 50%\r100%\r\n")), "100%\n");
    }

    /// The classes of the text `x` after `sgr` (`ESC [ sgr m`).
    fn classes_after(sgr: &str) -> String {
        let h = render(&range(&format!("o\x1b[{sgr}mx\n"))).into_string();
        match h.strip_prefix("<span class=\"") {
            Some(rest) => rest.split('"').next().unwrap_or("").to_string(),
            None => String::new(),
        }
    }

    #[test]
    fn renders_256_colours_truecolour_reverse_and_strike() {
        for (sgr, want) in [
            // 256 colours: the 16 base ones keep their classes; the cube and
            // the greys become 4-bit channels.
            ("38;5;9", "f9"),
            ("38;5;196", "fx frf fg0 fb0"),
            ("48;5;21", "bx br0 bg0 bbf"),
            // Cube entry 16 + 36*1 + 6*2 + 3 = 67: (95, 135, 175).
            ("38;5;67", "fx fr6 fg8 fba"),
            ("38;5;232", "fx fr0 fg0 fb0"),
            ("38;5;244", "fx fr8 fg8 fb8"),
            ("38;5;255", "fx fre fge fbe"),
            // Truecolour, both forms (ITU T.416 colons, with or without the
            // colour space id).
            ("38;2;255;128;0", "fx frf fg8 fb0"),
            ("38:2:255:128:0", "fx frf fg8 fb0"),
            ("48:2::0:0:255", "bx br0 bg0 bbf"),
            ("1;38;2;10;20;30;48;5;1", "fx fr1 fg1 fb2 b1 ab"),
            // Reverse swaps the sides; a default side gets the log's colours.
            ("7", "rf rb"),
            ("31;7", "rf b1"),
            ("31;42;7", "f2 b1"),
            ("7;27", ""),
            // Strike, with and without underline.
            ("9", "as"),
            ("4;9", "au as"),
            ("9;29", ""),
            // Out of range or unfinished: the side stays as it was.
            ("31;38;5;256", "f1"),
            ("31;38;5;99999", "f1"),
            ("31;38;2;300;0;0", "f1"),
            ("31;38;2;1", "f1"),
            ("31;38;5", "f1"),
            // Not SGR: a private marker (xterm's key modes).
            (">4;2", ""),
        ] {
            assert_eq!(classes_after(sgr), want, "{sgr}");
        }
        // A span opens only before text, and reopens only on a change.
        assert_eq!(
            render(&range(
                "o\x1b[31m\x1b[32m\x1b[1m\x1b[0m\x1b[9ma\x1b[9mb\x1b[0m\x1b[1m\x1b[0mc\n"
            )),
            "<span class=\"as\">ab</span>c\n"
        );
    }

    #[test]
    fn osc_and_other_strings_are_dropped_with_their_text() {
        // A title (BEL), a hyperlink (ST): the link's text stays.
        assert_eq!(
            render(&range(
                "o\x1b]0;title\x07a \x1b]8;;https://x.invalid/\x1b\\link\x1b]8;;\x1b\\ b\n"
            )),
            "a link b\n"
        );
        // DCS; an unterminated OSC ends the line.
        assert_eq!(
            render(&range("oa\x1bPq#0;2\x1b\\b\x1b]2;never ends\no<next>\n")),
            "ab\n&lt;next&gt;\n"
        );
    }

    #[test]
    fn every_class_the_renderer_gives_is_in_the_stylesheet() {
        let mut sgrs: Vec<String> = (0..256)
            .flat_map(|n| [format!("38;5;{n}"), format!("48;5;{n}")])
            .collect();
        for v in (0..=255).step_by(5) {
            sgrs.push(format!("38;2;{v};{v};{v}"));
            sgrs.push(format!("48;2;{v};{v};{v}"));
        }
        for s in ["30", "97", "40", "107", "1", "2", "3", "4", "7", "9", "4;9"] {
            sgrs.push(s.to_string());
        }
        for s in sgrs {
            for class in classes_after(&s).split(' ') {
                assert!(
                    crate::web::assets::ANSI_CSS.contains(&format!(".{class}{{"))
                        || crate::web::assets::ANSI_CSS.contains(&format!(".{class}.")),
                    "{s}: no rule for class {class}"
                );
            }
        }
        assert!(crate::web::assets::ANSI_CSS.contains(".au.as{"));
    }

    #[test]
    fn hostile_escapes_stay_linear() {
        // Each input is one line of 128 KiB, then of 512 KiB: the markup
        // stays within a fixed multiple of the input, and the time taken
        // grows with the input, not with its square (x16).
        // What, and how to make about n bytes of it.
        type Case = (&'static str, fn(usize) -> String);
        let cases: [Case; 11] = [
            ("a huge parameter list", |n| {
                format!("o\x1b[{}1mx", "1;".repeat(n / 2))
            }),
            ("out-of-range colours", |n| {
                format!("o\x1b[{}1mx", "38;5;99999;".repeat(n / 11))
            }),
            ("huge numbers", |n| format!("o\x1b[{}mx", "9".repeat(n))),
            ("truecolour lists", |n| {
                format!("o\x1b[{}mx", "38;2;1;2;3;48;2;4;5;6;".repeat(n / 22))
            }),
            ("an unterminated CSI", |n| {
                format!("o\x1b[{}", "1;".repeat(n / 2))
            }),
            ("an unterminated OSC", |n| {
                format!("o\x1b]{}", "x".repeat(n))
            }),
            ("many unterminated CSIs", |n| "\x1b[".repeat(n / 2)),
            ("escapes without text", |n| "\x1b[31m\x1b[0m".repeat(n / 9)),
            ("toggles around each byte", |n| {
                "\x1b[9mx\x1b[29my".repeat(n / 12)
            }),
            ("every attribute toggled", |n| {
                let toggles = "\x1b[7mx\x1b[27my".repeat(n / 11);
                format!("o\x1b[1;2;3;4;9;38;2;9;9;9;48;2;9;9;9m{toggles}")
            }),
            ("escaped text", |n| "<&\"".repeat(n / 3)),
        ];
        let time = |input: &str| {
            (0..2)
                .map(|_| {
                    let t = std::time::Instant::now();
                    let out = render(&range(input)).into_string();
                    (t.elapsed(), out.len())
                })
                .min()
                .unwrap_or_default()
        };
        for (what, make) in cases {
            let (small, big) = (make(128 << 10), make(512 << 10));
            let (t_small, _) = time(&small);
            let (t_big, out) = time(&big);
            let ratio = out as f64 / big.len() as f64;
            eprintln!(
                "{what}: {} bytes -> {out} bytes (x{ratio:.2}) in {t_big:?}; 128 KiB in {t_small:?}",
                big.len()
            );
            assert!(out <= 13 * big.len() + 64, "{what}: x{ratio:.2}");
            assert!(
                t_big < t_small * 8 + std::time::Duration::from_millis(50),
                "{what}: {t_small:?} for 128 KiB, {t_big:?} for 512 KiB"
            );
        }
    }

    #[test]
    fn chunks_are_line_aligned() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.log");
        assert_eq!(chunk_before(&p, 100).unwrap(), Range::default());
        assert_eq!(read_from(&p, 0).unwrap().end, 0);
        // About 50 MB: the tail is read without the rest.
        let mut text = Vec::new();
        let mut i = 0;
        while text.len() < 50 << 20 {
            text.extend_from_slice(format!("oline {i}\n").as_bytes());
            i += 1;
        }
        std::fs::write(&p, &text).unwrap();
        let len = text.len() as u64;
        let tail = chunk_before(&p, len).unwrap();
        assert_eq!(tail.end, len);
        assert!(tail.start > len - CHUNK && tail.start <= len - CHUNK + 20);
        assert_eq!(text[tail.start as usize - 1], b'\n');
        assert_eq!(&text[tail.start as usize..], &tail.text[..]);
        let html = render(&tail);
        assert!(html.ends_with(&format!("line {}\n", i - 1)));
        // Earlier chunks join exactly, down to the start of the file.
        let mut end = tail.start;
        let mut n = 0;
        while end > 0 && n < 3 {
            let c = chunk_before(&p, end).unwrap();
            assert_eq!(c.end, end);
            assert_eq!(&text[c.start as usize..c.end as usize], &c.text[..]);
            end = c.start;
            n += 1;
        }
        // A short file: all of it.
        std::fs::write(&p, b"oa\nob\noc").unwrap();
        let c = chunk_before(&p, 100).unwrap();
        assert_eq!(
            (c.start, c.end, c.text.as_slice()),
            (0, 6, &b"oa\nob\n"[..])
        );
        // Appended text, whole lines only, from an offset.
        let d = read_from(&p, 3).unwrap();
        assert_eq!((d.start, d.end, d.text.as_slice()), (3, 6, &b"ob\n"[..]));
        // One line longer than a chunk: its end is shown, marked partial.
        let long = format!("o{}\n", "x".repeat(CHUNK as usize * 2));
        std::fs::write(&p, &long).unwrap();
        let c = chunk_before(&p, long.len() as u64).unwrap();
        assert!(c.partial_first && c.text.len() as u64 <= CHUNK && c.start > 0);
        assert!(render(&c).starts_with("xxx"));
        // Bursts come in pieces of about MAX_DELTA.
        std::fs::write(&p, &text[..(3 * MAX_DELTA) as usize]).unwrap();
        let d = read_from(&p, 0).unwrap();
        assert!(d.end >= MAX_DELTA && d.end < MAX_DELTA + 20);
    }

    fn hits(f: &Found) -> Vec<u64> {
        f.hits.iter().map(|h| h.line).collect()
    }

    /// A search lists at most `MAX_HITS` matches, each cut at 300 bytes,
    /// and counts the rest (docs/security.md).
    #[test]
    fn search_lists_at_most_max_hits_and_counts_on() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("many.log");
        let line = format!("oneedle {}\n", "z".repeat(LINE_CAP));
        std::fs::write(&p, line.repeat(MAX_HITS + 100)).unwrap();
        let f = search(
            &p,
            &Pattern::new("needle", false).unwrap(),
            1,
            None,
            Keep::List,
            SEARCH_BUDGET,
        )
        .unwrap();
        assert_eq!((f.hits.len(), f.count), (MAX_HITS, MAX_HITS as u64 + 100));
        assert!(f.hits.iter().all(|h| h.text.len() <= 300));
    }

    /// Issue 17 point 3: line numbers, regions and search read the file a
    /// block at a time, skip the stream characters, and stop in time.
    #[test]
    fn regions_and_search_by_line_number() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.log");
        std::fs::write(&p, "oalpha\neerror: one\n\nhoerror two\noerror\nobeta").unwrap();
        let lines = index(&p).unwrap().unwrap();
        assert_eq!(lines.count, 5, "the unfinished last line is not counted");
        let r = region(&p, 2).unwrap();
        assert_eq!((r.first, r.total, r.lines.len()), (1, 5, 5));
        assert_eq!(r.lines[1], b"eerror: one");
        let html = render_region(&r, &|n, _| n == 2);
        assert!(
            html.starts_with("<a id=\"L1\" href=\"#L1\" class=\"ln\">1</a>alpha\n"),
            "{}",
            &*html
        );
        assert!(html.contains("<a id=\"L2\" href=\"#L2\" class=\"ln hit\">2</a><span class=\"le\">error: one</span>\n"));
        let all = std::time::Duration::from_secs(10);
        let plain = Pattern::new("error", false).unwrap();
        let f = search(&p, &plain, 1, None, Keep::List, all).unwrap();
        // "oerror two" on line 4 starts with the stream character 'h'.
        assert_eq!((hits(&f), f.count, f.stopped_at), (vec![2, 4, 5], 3, None));
        assert_eq!(f.hits[1].text, b"hoerror two");
        // The stream character is never part of the text searched.
        let f = search(
            &p,
            &Pattern::new("oerror", false).unwrap(),
            1,
            None,
            Keep::List,
            all,
        )
        .unwrap();
        assert_eq!(hits(&f), vec![4]);
        let re = Pattern::new("^error", true).unwrap();
        assert_eq!(
            hits(&search(&p, &re, 1, None, Keep::List, all).unwrap()),
            vec![2, 5]
        );
        let re = Pattern::new("^$", true).unwrap();
        assert_eq!(
            hits(&search(&p, &re, 1, None, Keep::List, all).unwrap()),
            vec![3]
        );
        assert_eq!(
            hits(&search(&p, &plain, 3, None, Keep::First, all).unwrap()),
            vec![4]
        );
        assert_eq!(
            hits(&search(&p, &plain, 1, Some(5), Keep::Last, all).unwrap()),
            vec![4]
        );
        assert!(Pattern::new("(x", true).is_err());
        assert!(Pattern::new(&"a".repeat(MAX_QUERY + 1), false).is_err());
        assert!(Pattern::new("", false).is_err());
        // A regex too big to compile is refused, not built.
        assert!(Pattern::new("(a{1,999}){1,999}", true).is_err());
        // So is one nested deeper than 64.
        let deep = |n: usize| format!("{}a{}", "(".repeat(n), ")".repeat(n));
        assert!(Pattern::new(&deep(40), true).is_ok());
        assert!(Pattern::new(&deep(65), true).is_err());
        // Classes and case folding that need Unicode tables (not built)
        // are ASCII, as in regex-lite.
        let ascii = Pattern::new(r"(?i)\bfail\s+\d+ \w+$", true).unwrap();
        assert!(ascii.is_match(b"oFAIL  12 tests"));
        assert!(!ascii.is_match(b"oxfail 12 tests"));
        // The file grows: the index goes on from where it was.
        std::fs::write(
            &p,
            "oalpha\neerror: one\n\nhoerror two\noerror\nobeta\nogamma error\n",
        )
        .unwrap();
        assert_eq!(index(&p).unwrap().unwrap().count, 7);
        assert_eq!(
            hits(&search(&p, &plain, 6, None, Keep::List, all).unwrap()),
            vec![7]
        );
        // A line longer than the cap is cut, and says so.
        let long = format!("o{}\nonext\n", "z".repeat(LINE_CAP * 3));
        std::fs::write(&p, &long).unwrap();
        let r = region(&p, 1).unwrap();
        assert_eq!(r.lines.len(), 2);
        assert!(r.lines[0].len() < LINE_CAP + 100);
        assert!(String::from_utf8_lossy(&r.lines[0]).contains("more bytes of this line"));
        assert_eq!(r.lines[1], b"onext");
        // No file: nothing.
        assert_eq!(
            search(&dir.path().join("none"), &plain, 1, None, Keep::List, all).unwrap(),
            Found::default()
        );
    }

    /// A log of ~50 MB like the page's test: 100-byte lines, and `special`
    /// lines (stream character included) at their 0-based numbers.
    fn big_log(dir: &Path, special: &[(u64, &[u8])]) -> std::path::PathBuf {
        let p = dir.join("big.log");
        let mut text = Vec::with_capacity(52 << 20);
        let mut i = 0u64;
        while text.len() < 50 << 20 {
            match special.iter().find(|(n, _)| *n == i) {
                Some((_, line)) => text.extend_from_slice(line),
                None => {
                    text.extend_from_slice(format!("oline {i:08} {}\n", "y".repeat(80)).as_bytes())
                }
            }
            i += 1;
        }
        std::fs::write(&p, &text).unwrap();
        p
    }

    /// A 50 MB log: a line in the middle is found and opened, each in
    /// well under the page's 500 ms (printed; release builds are faster).
    #[test]
    fn a_50mb_log_is_searched_and_opened_in_the_middle() {
        let dir = tempfile::tempdir().unwrap();
        let p = big_log(dir.path(), &[(250_000, b"oHERE is the needle\n")]);
        let t = std::time::Instant::now();
        let f = search(
            &p,
            &Pattern::new("the needle", false).unwrap(),
            1,
            None,
            Keep::List,
            SEARCH_BUDGET,
        )
        .unwrap();
        let plain_ms = t.elapsed().as_millis();
        assert_eq!((hits(&f), f.stopped_at), (vec![250_001], None));
        let t = std::time::Instant::now();
        let r = region(&p, 250_001 - REGION_BEFORE).unwrap();
        let region_ms = t.elapsed().as_millis();
        assert_eq!(r.lines[REGION_BEFORE as usize], b"oHERE is the needle");
        eprintln!("50 MB: plain search {plain_ms} ms, region {region_ms} ms");
        assert!(plain_ms < 500, "{plain_ms} ms");
    }

    /// Issue 17 point 3: a regex search reads a whole 50 MB log within
    /// one answer's budget, with its full count, for the kinds of pattern
    /// a reader types: literal-ish, anchored, a class, case-insensitive
    /// (ASCII: no Unicode tables in this build), `\d`/`\w`.
    #[test]
    fn a_regex_search_of_a_50mb_log_is_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = big_log(
            dir.path(),
            &[
                (100_000, b"oerror: the link step failed\n"),
                (250_000, b"eFAIL tests::middle\n"),
                (250_001, b"o12 tests failed, 3 passed\n"),
                (400_000, b"ethread 'main' PANICKED at src/x.rs\n"),
                // Not "^FAIL": the 'o' is the stream character, and the
                // line itself starts with a space.
                (400_001, b"o FAIL\n"),
            ],
        );
        // The count must be whole; the time is printed and held to the
        // loose bound of the page tests (a shared, loaded test machine;
        // `web_logs` asserts the 500 ms against the release build).
        let all = std::time::Duration::from_secs(10);
        for (q, want) in [
            ("error: .*failed", vec![100_001]),
            ("^FAIL", vec![250_001]),
            ("[0-9]+ tests? failed", vec![250_002]),
            ("(?i)panicked", vec![400_001]),
            ("^\\d+ \\w+ failed", vec![250_002]),
            ("needle$", vec![]),
        ] {
            let t = std::time::Instant::now();
            let f = search(
                &p,
                &Pattern::new(q, true).unwrap(),
                1,
                None,
                Keep::List,
                all,
            )
            .unwrap();
            let ms = t.elapsed().as_millis();
            eprintln!("50 MB, regex {q:?}: {ms} ms, {} found", f.count);
            assert!(ms < 1500, "{q}: {ms} ms (bound: 500 ms)");
            assert_eq!(
                (hits(&f), f.count as usize, f.stopped_at, f.total > 546_000),
                (want.clone(), want.len(), None, true),
                "{q}: {ms} ms"
            );
        }
        // Lines are matched as bytes, with no lossy copy: invalid UTF-8
        // (which the worker never writes: it decodes output with U+FFFD)
        // does not move the matches after it to another line.
        let q = dir.path().join("bytes.log");
        std::fs::write(&q, b"o\xff\xfe\xfd\xfc\xfb junk\nox\noerror: it failed\n").unwrap();
        let f = search(
            &q,
            &Pattern::new("error: .*failed$", true).unwrap(),
            1,
            None,
            Keep::List,
            SEARCH_BUDGET,
        )
        .unwrap();
        assert_eq!((hits(&f), f.count), (vec![3], 1));
        assert_eq!(f.hits[0].text, b"oerror: it failed");
        // `.` is a character, not a byte (Unicode mode without tables).
        assert!(Pattern::new("^d.j.$", true)
            .unwrap()
            .is_match("odéjà".as_bytes()));
    }

    /// A pattern made to defeat the regex engine's lazy DFA (each `x` or
    /// `y` of the last 16 doubles its states) on a 20 MB log of random
    /// `x`/`y` lines: the search is cut by its budget, never run past it
    /// by more than one block's scan.
    #[test]
    fn a_hostile_regex_stays_within_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("xy.log");
        let mut text = Vec::with_capacity(21 << 20);
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        while text.len() < 20 << 20 {
            text.push(b'o');
            for _ in 0..99 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                text.push(if seed & 1 == 0 { b'x' } else { b'y' });
            }
            text.push(b'\n');
        }
        std::fs::write(&p, &text).unwrap();
        let re = Pattern::new("x[xy]{16}$", true).unwrap();
        let t = std::time::Instant::now();
        let f = search(&p, &re, 1, None, Keep::List, SEARCH_BUDGET).unwrap();
        let ms = t.elapsed().as_millis();
        eprintln!(
            "20 MB, hostile regex: {ms} ms, {} found, stopped at {:?}",
            f.count, f.stopped_at
        );
        assert!(ms < 1500, "{ms} ms");
        // Whole or cut, what it saw is counted: about every other line
        // matches.
        let seen = f.stopped_at.map_or(f.total, |l| l - 1);
        assert!(seen > 0 && f.count > seen / 3, "{} of {seen}", f.count);
    }
}
