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

use crate::web::html::{html, Html};
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
/// spans are ours). For the inside of a `<pre>`.
pub(crate) fn render(r: &Range) -> Html {
    let text = String::from_utf8_lossy(&r.text);
    let mut out = Html::new();
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let line = line.strip_suffix('\n').unwrap_or(line);
        let (stream, body) = if i == 0 && r.partial_first {
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
        ansi_line(body, &mut out);
        if class.is_some() {
            out.push(&html!("</span>"));
        }
        out.push(&html!("\n"));
    }
    out
}

/// SGR state of the line being rendered.
#[derive(Default, Clone, PartialEq)]
struct Sgr {
    fg: Option<u8>,
    bg: Option<u8>,
    bold: bool,
    dim: bool,
    italic: bool,
    underline: bool,
}

impl Sgr {
    /// Applies the parameters of one `ESC [ ... m`.
    fn apply(&mut self, params: &str) {
        let mut it = params.split(';').map(|p| {
            if p.is_empty() {
                0
            } else {
                p.parse::<u32>().unwrap_or(u32::MAX)
            }
        });
        while let Some(p) = it.next() {
            match p {
                0 => *self = Sgr::default(),
                1 => self.bold = true,
                2 => self.dim = true,
                3 => self.italic = true,
                4 => self.underline = true,
                22 => (self.bold, self.dim) = (false, false),
                23 => self.italic = false,
                24 => self.underline = false,
                30..=37 => self.fg = Some((p - 30) as u8),
                90..=97 => self.fg = Some((p - 90 + 8) as u8),
                39 => self.fg = None,
                40..=47 => self.bg = Some((p - 40) as u8),
                100..=107 => self.bg = Some((p - 100 + 8) as u8),
                49 => self.bg = None,
                // 256 colours: the 16 standard ones get their class, the
                // others are dropped (no inline styles: the pages' CSP
                // forbids them). Truecolour is dropped too.
                38 | 48 => {
                    let colour = match it.next() {
                        Some(5) => it.next().filter(|n| *n < 16).map(|n| n as u8),
                        Some(2) => {
                            it.next();
                            it.next();
                            it.next();
                            None
                        }
                        _ => None,
                    };
                    if p == 38 {
                        self.fg = colour;
                    } else {
                        self.bg = colour;
                    }
                }
                _ => {}
            }
        }
    }

    fn classes(&self) -> String {
        let mut c = Vec::new();
        if let Some(f) = self.fg {
            c.push(format!("f{f}"));
        }
        if let Some(b) = self.bg {
            c.push(format!("b{b}"));
        }
        for (on, name) in [
            (self.bold, "ab"),
            (self.dim, "ad"),
            (self.italic, "ai"),
            (self.underline, "au"),
        ] {
            if on {
                c.push(name.to_string());
            }
        }
        c.join(" ")
    }
}

/// Renders one line's text with its ANSI escapes into `out`.
fn ansi_line(s: &str, out: &mut Html) {
    let mut sgr = Sgr::default();
    let mut open = false;
    let mut rest = s;
    while let Some(i) = rest.find('\x1b') {
        out.push(&rest[..i]);
        let after = &rest[i + 1..];
        let Some(csi) = after.strip_prefix('[') else {
            // Any other escape (ESC, intermediates ' '..'/', a final
            // byte), e.g. a charset switch: drop it.
            let t = after.trim_start_matches(|c: char| (' '..='/').contains(&c));
            let mut chars = t.chars();
            chars.next();
            rest = chars.as_str();
            continue;
        };
        // CSI: parameter bytes, then one final byte in @..~.
        let end = csi.find(|c: char| ('@'..='~').contains(&c));
        let Some(end) = end else {
            rest = "";
            break;
        };
        if csi.as_bytes()[end] == b'm' {
            let before = sgr.clone();
            sgr.apply(&csi[..end]);
            if sgr != before {
                if open {
                    out.push(&html!("</span>"));
                    open = false;
                }
                let classes = sgr.classes();
                if !classes.is_empty() {
                    // Our class names; escaped all the same.
                    out.push(&html!("<span class=\"{}\">", classes));
                    open = true;
                }
            }
        }
        rest = &csi[end + 1..];
    }
    out.push(rest);
    if open {
        out.push(&html!("</span>"));
    }
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
        // Bright, background, 256 (standard part), truecolour dropped,
        // other CSI (erase line) and lone escapes dropped.
        assert_eq!(
            render(&range("o\x1b[91;44mx\x1b[38;5;3my\x1b[38;2;1;2;3mz\x1b[K\x1b(Bw\n")),
            "<span class=\"f9 b4\">x</span><span class=\"f3 b4\">y</span><span class=\"b4\">zw</span>\n"
        );
        // An escape cannot smuggle markup, and an unfinished one is dropped.
        assert_eq!(
            render(&range("o\x1b[<script>m</script>\no\x1b[31\n")),
            "cript&gt;m&lt;/script&gt;\n\n"
        );
        // Progress bars: the last state of the line.
        assert_eq!(render(&range("o 10%\r 50%\r100%\r\n")), "100%\n");
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
}
