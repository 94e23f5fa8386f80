//! The page assets: the stylesheet, the script and the icon, compiled into
//! the binary from `assets/` and served by `www` under `/assets/`.
//!
//! Owns: their text as sent. The sources keep their comments and
//! indentation for readers; what is sent is compacted once, on first use
//! (comments, indentation and blank lines dropped), because every page
//! carries them and a page must stay under 20 KB of HTML, CSS and script
//! (issue 17 point 8, `tests/web_look.rs`). No build toolchain, no
//! dependency: the compaction is line-based for the script and a small
//! tokenizer for the stylesheet, both safe for what these files contain
//! (the unit tests below say what that is). No threads, no channels.
//!
//! `minibot.css` is one source but two stylesheets: what follows its
//! `==== Build and log pages only` comment (steps, log text, ANSI
//! colours, the log tools) is served as `/assets/log.css`, which only the
//! build and log pages link, so the other pages do not carry it.

use std::sync::LazyLock;

const CSS_SOURCE: &str = include_str!("assets/minibot.css");
const JS_SOURCE: &str = include_str!("assets/minibot.js");

/// Where `minibot.css` turns to the build and log pages' rules.
const LOG_MARK: &str = "/* ==== Build and log pages only";

/// The two parts of the stylesheet's source: every page's, and the build
/// and log pages' (empty if the mark were gone: a unit test keeps it).
fn css_parts() -> (&'static str, &'static str) {
    match CSS_SOURCE.find(LOG_MARK) {
        Some(i) => CSS_SOURCE.split_at(i),
        None => (CSS_SOURCE, ""),
    }
}

/// The stylesheet every page links, as sent.
pub(crate) static CSS: LazyLock<String> = LazyLock::new(|| compact_css(css_parts().0));
/// The build and log pages' stylesheet, as sent.
pub(crate) static LOG_CSS: LazyLock<String> = LazyLock::new(|| compact_css(css_parts().1));
/// The script as sent.
pub(crate) static JS: LazyLock<String> = LazyLock::new(|| compact_js(JS_SOURCE));
/// The icon, as it is (one line already).
pub(crate) const FAVICON: &str = include_str!("assets/favicon.svg");

/// The script without comments and without the white space that means
/// nothing. A small tokenizer: strings and regular expression literals
/// are copied as they are (a `/` starts a regex where an operand is
/// expected: after an operator or an opening bracket, or at the start);
/// between two tokens a space stays only where both sides are word
/// characters (or `+ +`, `- -`), and a line break stays where automatic
/// semicolon insertion might need it: not after `{ ; , (` or an operator,
/// nor before a closing bracket, `;`, `,` or `.`.
fn compact_js(src: &str) -> String {
    let word = |c: char| c.is_alphanumeric() || c == '_' || c == '$';
    let mut out = String::with_capacity(src.len());
    let mut chars = src.chars().peekable();
    // Pending white space: none, a space, or a line break.
    let mut gap: Option<char> = None;
    while let Some(c) = chars.next() {
        if c.is_whitespace() {
            if c == '\n' || gap.is_none() {
                gap = Some(if c == '\n' { '\n' } else { ' ' });
            }
            continue;
        }
        if c == '/' && chars.peek() == Some(&'/') {
            for c in chars.by_ref() {
                if c == '\n' {
                    break;
                }
            }
            gap = Some('\n');
            continue;
        }
        if c == '/' && chars.peek() == Some(&'*') {
            skip_block_comment(&mut chars);
            gap.get_or_insert(' ');
            continue;
        }
        let prev = out.chars().next_back();
        if let Some(g) = gap.take() {
            let keep = match (prev, g) {
                (None, _) => false,
                (Some(p), _) if word(p) && word(c) => true,
                (Some(p), _) if (p == '+' || p == '-') && p == c => true,
                // `a++` and `a--` may end a statement.
                (Some(_), '\n') if out.ends_with("++") || out.ends_with("--") => true,
                (Some(p), '\n') => !"{;,(=:&|?+-*/<>!%[".contains(p) && !"}]);,.".contains(c),
                _ => false,
            };
            if keep {
                out.push(g);
            }
        }
        let operand_expected = match out.trim_end().chars().next_back() {
            None => true,
            Some(p) => "(,=:[!&|?{};+-*%<>~^".contains(p) || out.ends_with("return"),
        };
        match c {
            '\'' | '"' | '`' => copy_quoted(&mut out, &mut chars, c, None),
            '/' if operand_expected => copy_quoted(&mut out, &mut chars, '/', Some(('[', ']'))),
            c => out.push(c),
        }
    }
    out.push('\n');
    out
}

/// Skips a `/* ... */` comment whose `/` was just read.
fn skip_block_comment(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    chars.next();
    let mut prev = ' ';
    for c in chars.by_ref() {
        if prev == '*' && c == '/' {
            break;
        }
        prev = c;
    }
}

/// Copies a literal that `open` began, up to its unescaped closing `open`
/// (outside a `class` bracket pair, for a regex), then a regex's flags.
fn copy_quoted(
    out: &mut String,
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    open: char,
    class: Option<(char, char)>,
) {
    out.push(open);
    let mut in_class = false;
    while let Some(c) = chars.next() {
        out.push(c);
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            c if class.is_some_and(|(o, _)| o == c) => in_class = true,
            c if class.is_some_and(|(_, e)| e == c) => in_class = false,
            c if c == open && !in_class => break,
            _ => {}
        }
    }
    if class.is_some() {
        while let Some(&f) = chars.peek().filter(|f| f.is_ascii_alphabetic()) {
            out.push(f);
            chars.next();
        }
    }
}

/// The stylesheet without comments and without the white space that
/// means nothing: runs of it become one space, and none is kept next to
/// `{ } ; , >` or after `:`. Quoted strings (`content: "✓ "`) are kept
/// as they are. A space *before* `:` is kept (`a :hover` differs from
/// `a:hover`), and the last `;` of a block goes.
fn compact_css(src: &str) -> String {
    const TIGHT: &[char] = &['{', '}', ';', ',', '>'];
    let mut out = String::with_capacity(src.len());
    let mut chars = src.chars().peekable();
    let mut space = false;
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'*') => {
                skip_block_comment(&mut chars);
                space = true;
            }
            c if c.is_whitespace() => space = true,
            '"' | '\'' => {
                flush_space(&mut out, &mut space, c, TIGHT);
                out.push(c);
                for q in chars.by_ref() {
                    out.push(q);
                    if q == c {
                        break;
                    }
                }
            }
            c => {
                if c == '}' && out.ends_with(';') {
                    out.pop();
                }
                flush_space(&mut out, &mut space, c, TIGHT);
                out.push(c);
            }
        }
    }
    out.push('\n');
    out
}

/// Writes a pending space before `next` unless either side makes it
/// meaningless.
fn flush_space(out: &mut String, space: &mut bool, next: char, tight: &[char]) {
    if std::mem::take(space) {
        let after_tight = out.ends_with(tight) || out.ends_with(':') || out.is_empty();
        if !after_tight && !tight.contains(&next) {
            out.push(' ');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn css_is_compacted_but_means_the_same() {
        let src = "/* head */\nbody{margin: 0 auto;\n  color:#222;}\n\
                   .res.r0::before { content: \"✓ \" }\n\
                   @media (max-width:40rem) and (min-width: 1px) {\n  td , th > a { padding: .2rem .3rem; }\n}\n\
                   a :hover{x:y}\n";
        assert_eq!(
            compact_css(src),
            "body{margin:0 auto;color:#222}.res.r0::before{content:\"✓ \"}\
             @media (max-width:40rem) and (min-width:1px){td,th>a{padding:.2rem .3rem}}\
             a :hover{x:y}\n"
        );
    }

    #[test]
    fn js_loses_comments_and_spaces_but_not_strings_regexes_or_lines_asi_needs() {
        let src = "// head\n'use strict';\n\n(function () {\n  /* why */ const u = 'http:// x' + \"a // b\"; // gone\n\
                   let m = /^#L(\\d+)[/ ]$/g.exec(h), d = a / 2 / b;\n  return /x/.test(s) ? a++ : b - -c;\n\
                   let i = 0\n  i++\n  f(a,\n    b)\n  [1].map((x) => x)\n  .sort()\n})();\n";
        assert_eq!(
            compact_js(src),
            "'use strict';(function(){const u='http:// x'+\"a // b\";\
             let m=/^#L(\\d+)[/ ]$/g.exec(h),d=a/2/b;return/x/.test(s)?a++:b- -c;\
             let i=0\ni++\nf(a,b)\n[1].map((x)=>x).sort()})();\n"
        );
    }

    #[test]
    fn the_assets_shrink_and_the_log_rules_are_apart() {
        let (all, log) = css_parts();
        assert!(
            log.starts_with(LOG_MARK) && log.contains("pre.log{"),
            "{log}"
        );
        assert!(!all.contains("pre.log") && !all.contains(".f1{"));
        assert!(CSS.len() + LOG_CSS.len() < CSS_SOURCE.len() * 9 / 10);
        assert!(JS.len() < JS_SOURCE.len() * 7 / 10, "{}", JS.len());
        // Every rule survived: as many blocks as in the source.
        let blocks = CSS.matches('{').count() + LOG_CSS.matches('{').count();
        assert_eq!(blocks, CSS_SOURCE.matches('{').count());
    }
}
