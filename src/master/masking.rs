//! Masking of secrets in step output (issue 20 point 1): every occurrence
//! of a secret's value, and of its common encodings, becomes
//! `<secret:NAME>` before the text is written to the log file.
//!
//! Owns: [`Masker`], one per running build, fed by `master::build` with
//! each `Log` frame's text (per stream: stdout, stderr, the worker's header
//! lines) and with the reasons a worker gives. No threads or channels.
//!
//! **Where masking happens: on the master, before the log is written.**
//! The log file is the only place step output goes (the build page, the
//! log page, the raw download, the API and the live SSE streams all read
//! it; the database holds only totals), so masking in front of
//! `LogWriter::append` covers every reader. The worker is not asked to
//! mask: it would need the values in a second place of `RunStep`, an older
//! worker would ignore the field and send the secret in clear, and the
//! master must not trust a worker to keep its own logs clean. The worker
//! does see the value (it runs the command that needs it); what the master
//! keeps from being *stored* it cannot keep from the machine the step runs
//! on. The cost is that the secret crosses the worker connection in output
//! frames when a step prints it, as it crossed it in the `RunStep`.
//!
//! **Encodings.** For each value: the value itself; base64 (standard and
//! URL-safe alphabets) at each of the three alignments a value can have
//! inside a longer base64 text (the characters that encode its bytes only,
//! so `base64` of the value alone, with padding, is masked too, leaving at
//! most its last two characters); hex (lower and upper case);
//! URL-encoding (`%XX` in upper and lower case, with `+` for a space as
//! forms do, and keeping `/` as Python's `quote` does); JSON string escapes
//! (as serde_json writes them, and with non-ASCII as `\uXXXX` as Python's
//! `json.dumps` does). Encodings equal to the value are not added twice.
//!
//! **Chunk boundaries.** A value can arrive split over two frames (the
//! worker sends what a read returned). Each stream keeps back the longest
//! tail of what it was fed that is the beginning of some pattern (found by
//! KMP over the last `len - 1` bytes for each pattern, so linear in the
//! patterns' length): a match that may go on in the next chunk is never
//! written half. That tail is at most the longest pattern minus one byte,
//! and usually empty. It is written at the step's end ([`Masker::flush`]).
//! Matches are taken leftmost-longest, so a secret that contains another
//! is masked whole.

use base64ct::{Base64Unpadded, Base64UrlUnpadded, Encoding};

/// One text to find and the name it is replaced by.
struct Pattern {
    text: String,
    /// Index into `Masker::names`.
    name: usize,
    /// KMP failure function of `text`'s bytes.
    fail: Vec<usize>,
}

/// The secrets of one build and the held-back tail of each stream.
#[derive(Default)]
pub(crate) struct Masker {
    names: Vec<String>,
    patterns: Vec<Pattern>,
    /// The held-back tails of "o", "e", "h".
    pending: [String; 3],
}

fn stream_index(stream: &str) -> usize {
    match stream {
        "e" => 1,
        "h" => 2,
        _ => 0,
    }
}

/// `value` inside a base64 text at byte offset `k` (0, 1, 2) of a 3-byte
/// group: the characters that encode only the value's bits.
fn base64_aligned(value: &[u8], k: usize, url: bool) -> String {
    let mut padded = vec![0u8; k];
    padded.extend_from_slice(value);
    let enc = if url {
        Base64UrlUnpadded::encode_string(&padded)
    } else {
        Base64Unpadded::encode_string(&padded)
    };
    let start = (8 * k).div_ceil(6);
    let end = (8 * (k + value.len())) / 6;
    enc.get(start..end).unwrap_or("").to_string()
}

/// Percent-encoding of every byte but `A-Z a-z 0-9 - _ . ~` and `keep`.
fn url_encoded(value: &str, upper: bool, plus_for_space: bool, keep: &[u8]) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for &b in value.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || keep.contains(&b) {
            out.push(b as char);
        } else if b == b' ' && plus_for_space {
            out.push('+');
        } else if upper {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

/// JSON string escapes of `value` without the quotes; with `ascii`, every
/// non-ASCII character as `\uXXXX` (UTF-16), as Python's `json.dumps`.
fn json_escaped(value: &str, ascii: bool) -> String {
    let quoted = serde_json::to_string(value).unwrap_or_default();
    let inner = quoted
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or("");
    if !ascii {
        return inner.to_string();
    }
    let mut out = String::with_capacity(inner.len());
    for c in inner.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

/// The texts masked for `value`: the value and its encodings, each once.
pub(crate) fn encodings(value: &str) -> Vec<String> {
    let bytes = value.as_bytes();
    let mut all = vec![value.to_string()];
    for url in [false, true] {
        for k in 0..3 {
            all.push(base64_aligned(bytes, k, url));
        }
    }
    all.push(hex::encode(bytes));
    all.push(hex::encode_upper(bytes));
    for upper in [true, false] {
        for plus in [false, true] {
            all.push(url_encoded(value, upper, plus, b""));
        }
    }
    all.push(url_encoded(value, true, false, b"/"));
    all.push(json_escaped(value, false));
    all.push(json_escaped(value, true));
    let mut out: Vec<String> = Vec::with_capacity(all.len());
    for e in all {
        if !e.is_empty() && !out.contains(&e) {
            out.push(e);
        }
    }
    out
}

fn failure(p: &[u8]) -> Vec<usize> {
    let mut fail = vec![0; p.len()];
    let mut q = 0;
    for i in 1..p.len() {
        while q > 0 && p[i] != p[q] {
            q = fail[q - 1];
        }
        if p[i] == p[q] {
            q += 1;
        }
        fail[i] = q;
    }
    fail
}

impl Pattern {
    /// The length of the longest proper prefix of this pattern that `buf`
    /// ends with.
    fn tail_overlap(&self, buf: &[u8]) -> usize {
        let p = self.text.as_bytes();
        let from = buf.len().saturating_sub(p.len() - 1);
        let mut q = 0;
        for &c in &buf[from..] {
            while q > 0 && p[q] != c {
                q = self.fail[q - 1];
            }
            if p[q] == c {
                q += 1;
            }
            // At most p.len() - 1 bytes are read: q never reaches p.len().
        }
        q
    }
}

impl Masker {
    /// Masks `value` as `<secret:NAME>` from now on in this build. A value
    /// already known is not added again.
    pub(crate) fn add(&mut self, name: &str, value: &str) {
        if self
            .patterns
            .iter()
            .any(|p| p.text == value && self.names[p.name] == name)
        {
            return;
        }
        let idx = self.names.len();
        self.names.push(name.to_string());
        for text in encodings(value) {
            let fail = failure(text.as_bytes());
            self.patterns.push(Pattern {
                text,
                name: idx,
                fail,
            });
        }
    }

    /// Masks a chunk of `stream` and returns what can be written now; the
    /// tail that may be the start of a secret is kept for the next chunk.
    pub(crate) fn feed(&mut self, stream: &str, data: &str) -> String {
        if self.patterns.is_empty() {
            return data.to_string();
        }
        let i = stream_index(stream);
        let mut buf = std::mem::take(&mut self.pending[i]);
        buf.push_str(data);
        let (out, keep) = self.mask(&buf, false);
        self.pending[i] = buf[keep..].to_string();
        out
    }

    /// The held-back tail of `stream`, masked: at the step's end.
    pub(crate) fn flush(&mut self, stream: &str) -> String {
        let buf = std::mem::take(&mut self.pending[stream_index(stream)]);
        self.mask(&buf, true).0
    }

    /// `text` masked whole (a reason, a property value).
    pub(crate) fn mask_all(&self, text: &str) -> String {
        self.mask(text, true).0
    }

    /// Masks `buf`: returns the text to emit and how many bytes of `buf` it
    /// covers (all of them when `at_end`).
    fn mask(&self, buf: &str, at_end: bool) -> (String, usize) {
        if self.patterns.is_empty() {
            return (buf.to_string(), buf.len());
        }
        let bytes = buf.as_bytes();
        // Nothing at or after `hold` is decided yet: `buf[hold..]` may be
        // the start of a pattern that goes on in the next chunk, and no
        // position before it can be (it is the smallest such position).
        let hold = if at_end {
            buf.len()
        } else {
            let longest = self
                .patterns
                .iter()
                .map(|p| p.tail_overlap(bytes))
                .max()
                .unwrap_or(0);
            buf.len() - longest
        };
        // The next occurrence of each pattern at or after `pos`.
        // (None after a search: no occurrence at or after any later `pos`
        // either.)
        let mut next: Vec<Option<usize>> = vec![None; self.patterns.len()];
        let mut searched = vec![false; self.patterns.len()];
        let mut out = String::with_capacity(buf.len());
        let mut pos = 0;
        loop {
            let mut best: Option<(usize, usize, usize)> = None; // (start, len, name)
            for (k, p) in self.patterns.iter().enumerate() {
                if !searched[k] || next[k].is_some_and(|s| s < pos) {
                    next[k] =
                        memchr::memmem::find(&bytes[pos..], p.text.as_bytes()).map(|s| s + pos);
                    searched[k] = true;
                }
                if let Some(s) = next[k] {
                    let better = match best {
                        None => true,
                        Some((bs, bl, _)) => s < bs || (s == bs && p.text.len() > bl),
                    };
                    if better {
                        best = Some((s, p.text.len(), p.name));
                    }
                }
            }
            match best {
                Some((start, len, name)) if start < hold => {
                    out.push_str(&buf[pos..start]);
                    out.push_str("<secret:");
                    out.push_str(&self.names[name]);
                    out.push('>');
                    pos = start + len;
                }
                _ => break,
            }
        }
        let keep = pos.max(hold);
        out.push_str(&buf[pos..keep]);
        (out, keep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &str = "s3cr3t/Tok+en=value&x y";

    fn masker() -> Masker {
        let mut m = Masker::default();
        m.add("tok", S);
        m
    }

    #[test]
    fn every_encoding_is_masked() {
        let m = masker();
        for e in encodings(S) {
            let text = format!("before {e} after\n");
            let masked = m.mask_all(&text);
            assert_eq!(masked, "before <secret:tok> after\n", "{e}");
        }
        // base64 of the value alone, with padding, at each offset in a longer text.
        for prefix in ["", "a", "ab", "abc"] {
            let full = Base64Unpadded::encode_string(format!("{prefix}{S}!").as_bytes());
            let masked = m.mask_all(&full);
            assert!(masked.contains("<secret:tok>"), "{prefix:?}: {masked}");
        }
    }

    #[test]
    fn a_value_split_over_chunks_is_masked() {
        let text = format!("one {S} two {S}{S} three\n");
        // Every way of cutting the text in two, and byte by byte.
        for cut in 0..=text.len() {
            let mut m = masker();
            let mut out = m.feed("o", &text[..cut]);
            out += &m.feed("o", &text[cut..]);
            out += &m.flush("o");
            assert_eq!(
                out, "one <secret:tok> two <secret:tok><secret:tok> three\n",
                "cut at {cut}"
            );
        }
        let mut m = masker();
        let mut out = String::new();
        for c in text.chars() {
            out += &m.feed("e", &c.to_string());
        }
        out += &m.flush("e");
        assert!(!out.contains("s3cr3t"), "{out}");
    }

    #[test]
    fn streams_are_apart_and_the_tail_is_small() {
        let mut m = masker();
        assert_eq!(m.feed("o", "plain text\n"), "plain text\n");
        // "s3c" may start the secret: kept back, and only that.
        assert_eq!(m.feed("o", "log s3c"), "log ");
        assert_eq!(m.feed("e", "r3t"), "r3t");
        assert_eq!(m.feed("o", "ret"), "s3cret");
        assert_eq!(m.flush("o"), "");
    }

    /// Not a benchmark (a debug build, a shared machine): a bound that a
    /// quadratic masker would miss by far, and the figure, printed.
    #[test]
    fn masking_stays_linear_with_the_longest_secrets() {
        let mut m = masker();
        let long = "k".repeat(crate::config::MAX_SECRET_LEN);
        m.add("long", &long);
        // Output made of the secrets' beginnings, the worst case for the
        // held-back tail, and whole secrets now and then.
        let line = format!("s3cr3t/Tok {} {S}\n", "k".repeat(1000));
        let chunk = line.repeat(32 * 1024 / line.len());
        let t = std::time::Instant::now();
        let mut bytes = 0;
        for i in 0..64 {
            let out = m.feed(if i % 2 == 0 { "o" } else { "e" }, &chunk);
            assert!(!out.contains(S));
            bytes += chunk.len();
        }
        let took = t.elapsed();
        eprintln!(
            "masked {:.1} MiB with 2 secrets ({} patterns, the longest {} bytes) in {took:?}",
            bytes as f64 / (1024.0 * 1024.0),
            m.patterns.len(),
            m.patterns.iter().map(|p| p.text.len()).max().unwrap_or(0)
        );
        assert!(took < std::time::Duration::from_secs(30), "{took:?}");
    }

    #[test]
    fn the_longest_secret_wins_and_no_secret_passes_through() {
        let mut m = Masker::default();
        assert_eq!(m.feed("o", "abc"), "abc");
        m.add("short", "abcd");
        m.add("long", "abcdefgh");
        assert_eq!(
            m.mask_all("x abcdefgh abcd y"),
            "x <secret:long> <secret:short> y"
        );
    }
}
