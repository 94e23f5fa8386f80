//! The problem collector: every problem names the file, the line and the
//! key path; unknown keys get a "did you mean"; [`ConfigError`] is the list
//! handed back to the caller.
//!
//! Paths are kept 0-based inside (`builders[1].steps[0].comand`, serde's
//! and TOML's indexes) and shown 1-based, as a person counts the
//! `[[builders]]` tables of the file, with the item's `name` when it has
//! one: `master.cfg:23: builders #2 (name = "linux").steps #1.comand`
//! ([`locate`]).

use super::raw;
use crate::daemon::edit_distance;
use serde::de::DeserializeOwned;
use std::fmt;

/// Everything wrong with a config file, one problem per entry, each naming
/// the file and the key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problems.join("\n"))
    }
}

impl std::error::Error for ConfigError {}

// ---------------------------------------------------------------------------
// Problems and key paths

pub(super) struct Problems<'a> {
    pub(super) source: &'a str,
    pub(super) list: Vec<String>,
    /// The config's text, to give each problem its line ("" when there is
    /// none, as for the file-mode checks).
    pub(super) text: &'a str,
    /// Key paths that had a type error: the lowering then sees them as
    /// absent, and what it would say about them ("required key is
    /// missing") would only echo the type error.
    pub(super) typed_paths: Vec<String>,
}

impl<'a> Problems<'a> {
    pub(super) fn new(source: &'a str, text: &'a str) -> Problems<'a> {
        Problems {
            source,
            list: Vec::new(),
            text,
            typed_paths: Vec::new(),
        }
    }

    pub(super) fn add(&mut self, path: &str, msg: impl fmt::Display) {
        let under = |t: &String| {
            path == t
                || path
                    .strip_prefix(t.as_str())
                    .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
        };
        if self.typed_paths.iter().any(under) {
            return;
        }
        // `file:line: path: problem`, as compilers say it, so an editor
        // or a terminal can jump to the line.
        let (line, shown) = locate(self.text, path);
        let at = match line {
            Some(n) => format!("{}:{n}", self.source),
            None => self.source.to_string(),
        };
        let problem = if path.is_empty() {
            format!("{at}: {msg}")
        } else {
            format!("{at}: {shown}: {msg}")
        };
        // A part deserialized again after a type error reports its unknown
        // keys again.
        if !self.list.contains(&problem) {
            self.list.push(problem);
        }
    }

    /// A type error at `path`: reported with [`type_message`]'s words, and
    /// remembered so the lowering's echo of it is not.
    pub(super) fn add_type_error(&mut self, path: &str, serde_msg: &str) {
        self.add(path, type_message(path, serde_msg));
        self.typed_paths.push(path.to_string());
    }

    /// Where `path` is, for a message that points at a second place (the
    /// first of two duplicates): `line 5: workers #1 (name = "w1").name`.
    pub(super) fn place(&self, path: &str) -> String {
        match locate(self.text, path) {
            (Some(n), shown) => format!("line {n}: {shown}"),
            (None, shown) => shown,
        }
    }

    pub(super) fn into_error(self) -> ConfigError {
        ConfigError {
            problems: self.list,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Seg {
    Key(String),
    Index(usize),
}

pub(super) fn key(k: &str) -> Seg {
    Seg::Key(k.to_string())
}

/// `builders[0].steps[1].command`: the path inside, 0-based (shown
/// 1-based by [`locate`]).
pub(super) fn fmt_path(segs: &[Seg]) -> String {
    let mut out = String::new();
    for seg in segs {
        match seg {
            Seg::Key(k) if out.is_empty() => out.push_str(k),
            Seg::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

pub(super) fn ignored_segs(path: &serde_ignored::Path, out: &mut Vec<Seg>) {
    use serde_ignored::Path as P;
    match path {
        P::Root => {}
        P::Seq { parent, index } => {
            ignored_segs(parent, out);
            out.push(Seg::Index(*index));
        }
        P::Map { parent, key } => {
            ignored_segs(parent, out);
            out.push(Seg::Key(key.clone()));
        }
        // Option and newtype wrappers are not visible in the file.
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            ignored_segs(parent, out)
        }
    }
}

pub(super) fn tracked_segs(path: &serde_path_to_error::Path) -> Vec<Seg> {
    use serde_path_to_error::Segment as S;
    path.iter()
        .filter_map(|seg| match seg {
            S::Seq { index } => Some(Seg::Index(*index)),
            S::Map { key } | S::Enum { variant: key } => Some(Seg::Key(key.clone())),
            S::Unknown => None,
        })
        .collect()
}

/// "unknown key", with the likely intended key when there is one: typos are
/// the usual reason for an unknown key.
pub(super) fn unknown_key_message(segs: &[Seg]) -> String {
    let Some((Seg::Key(bad), parent)) = segs.split_last() else {
        return "unknown key".to_string();
    };
    let shape: String = parent
        .iter()
        .map(|s| match s {
            Seg::Key(k) => format!(".{k}"),
            Seg::Index(_) => "[]".to_string(),
        })
        .collect();
    let known: &[&str] = match shape.as_str() {
        "" => fields_of::<raw::Config>(),
        ".www" => fields_of::<raw::Www>(),
        ".www.change_hook_dialects" => fields_of::<raw::Dialects>(),
        ".www.change_hook_dialects.gitea" | ".www.change_hook_dialects.github" => {
            fields_of::<raw::GiteaDialect>()
        }
        ".www.change_hook_dialects.base" => fields_of::<raw::BaseDialect>(),
        ".protocols" => fields_of::<raw::Protocols>(),
        ".protocols.worker" => fields_of::<raw::WorkerProtocol>(),
        ".workers[]" => fields_of::<raw::WorkerCfg>(),
        ".schedulers[]" => fields_of::<raw::SchedulerCfg>(),
        ".schedulers[].properties[]" => fields_of::<raw::ForceParam>(),
        ".reporters[]" => fields_of::<raw::ReporterCfg>(),
        ".change_source[]" => fields_of::<raw::ChangeSourceCfg>(),
        ".builders[]" => fields_of::<raw::BuilderCfg>(),
        ".builders[].steps[]" => fields_of::<raw::StepCfg>(),
        ".locks[]" => fields_of::<super::locks::LockCfg>(),
        ".builders[].locks[]" | ".builders[].steps[].locks[]" => {
            fields_of::<super::locks::LockUseCfg>()
        }
        ".janitor" => fields_of::<raw::JanitorCfg>(),
        ".logging" => fields_of::<raw::LoggingCfg>(),
        _ => &[],
    };
    let best = known
        .iter()
        .map(|k| (edit_distance(&bad.to_lowercase(), k), *k))
        .min();
    match best {
        Some((d, k)) if d == 1 || (d == 2 && bad.len() >= 6) => {
            format!("unknown key (did you mean `{k}`?)")
        }
        _ if !known.is_empty() && known.len() <= 6 => {
            format!("unknown key (known here: {})", known.join(", "))
        }
        _ => "unknown key".to_string(),
    }
}

/// The field names serde knows for `T`, read off its derived `Deserialize`
/// so that they cannot drift from the types.
fn fields_of<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Introspect<'a>(&'a mut &'static [&'static str]);

    impl<'de> serde::Deserializer<'de> for Introspect<'_> {
        type Error = serde::de::value::Error;

        fn deserialize_any<V: serde::de::Visitor<'de>>(
            self,
            _: V,
        ) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(serde::de::Error::custom("fields read"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    // Always an error: the introspector never produces a value.
    let _ = T::deserialize(Introspect(&mut fields));
    fields
}

// ---------------------------------------------------------------------------
// Small helpers

/// The io error's text without " (os error N)", which means nothing to users.
pub(super) fn io_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

pub(super) fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// 1-based line and column (in characters) of byte offset `at`.
pub(super) fn line_col(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

/// serde's type error in words a user knows: "invalid value: integer
/// `99999`, expected u16" at a port becomes "99999 is not a port number
/// (1–65535, or 0 for any free port)", Rust's type names become what they
/// mean. Messages it does not know are kept as they are.
pub(super) fn type_message(path: &str, msg: &str) -> String {
    let (got, expected) = match msg.split_once(", expected ") {
        Some((g, e)) => (g, e),
        None => return msg.to_string(),
    };
    let is_port = path == "port" || path.ends_with(".port") || path.ends_with("_port");
    let words = match expected.trim() {
        _ if is_port && matches!(expected.trim(), "u16" | "u32" | "u64") => {
            "a port number (1–65535, or 0 for any free port)"
        }
        "u8" => "a whole number from 0 to 255",
        "u16" => "a whole number from 0 to 65535",
        "u32" => "a whole number from 0 to 4294967295",
        "u64" | "usize" => "a whole number, 0 or more",
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        "a boolean" => "true or false",
        "a sequence" => "a list, e.g. [\"a\", \"b\"]",
        "a map" | "struct" => "a table",
        "a string" => "a string in quotes",
        e if e.starts_with("struct ") => "a table",
        other => other,
    };
    // "invalid value: integer `99999`" / "invalid type: string \"two\"".
    let value = got
        .strip_prefix("invalid value: ")
        .or_else(|| got.strip_prefix("invalid type: "))
        .unwrap_or(got);
    let value = value
        .strip_prefix("integer ")
        .or_else(|| value.strip_prefix("floating point "))
        .map(|v| v.trim_matches('`').to_string())
        .or_else(|| {
            value
                .strip_prefix("string ")
                .map(|v| format!("the string {v}"))
        })
        .unwrap_or_else(|| value.to_string());
    format!("expected {words}, found {value}")
}

/// The 1-based line of the key at `path` (`builders[0].steps[1].comand`)
/// in `text`, or of the nearest part of it that is there (a missing
/// required key: its table), and the path as a person reads it:
/// `builders #2 (name = "linux").steps #1.comand`, list items counted
/// from 1 as in the file, with the `name` they have there.
pub(super) fn locate(text: &str, path: &str) -> (Option<usize>, String) {
    let segs = split_path(path);
    let root = if text.is_empty() || path.is_empty() {
        None
    } else {
        toml::de::DeTable::parse(text).ok()
    };
    let (span, shown) = match &root {
        Some(root) => walk(root.get_ref(), &segs),
        None => (None, show(&segs, |_| None)),
    };
    let line = span.map(|s| line_col(text, s.start).0);
    if !segs.iter().any(|s| matches!(s, Seg::Index(_))) {
        // Nothing to count: kept as written, also a place that is no key
        // path ("line 2, column 5").
        return (line, path.to_string());
    }
    (line, shown)
}

/// Follows `segs` into a parsed config as far as they are there: the
/// span of the deepest part found, and the path shown with the names of
/// the list items found on the way.
fn walk(root: &toml::de::DeTable<'_>, segs: &[Seg]) -> (Option<std::ops::Range<usize>>, String) {
    use toml::de::{DeTable, DeValue};
    let mut span: Option<std::ops::Range<usize>> = None;
    let mut table: Option<&DeTable<'_>> = Some(root);
    let mut value: Option<&DeValue<'_>> = None;
    // The `name` of each list item on the way, by segment number.
    let mut names: Vec<Option<String>> = Vec::new();
    for seg in segs {
        let mut name = None;
        match seg {
            Seg::Key(k) => {
                let t = match (table, value) {
                    (Some(t), _) => t,
                    (None, Some(DeValue::Table(t))) => t,
                    _ => break,
                };
                let Some((key, v)) = t.iter().find(|(key, _)| key.get_ref().as_ref() == k) else {
                    break;
                };
                span = Some(key.span());
                value = Some(v.get_ref());
            }
            Seg::Index(i) => {
                let Some(DeValue::Array(items)) = value else {
                    break;
                };
                let Some(item) = items.get(*i) else {
                    break;
                };
                span = Some(item.span());
                value = Some(item.get_ref());
                if let DeValue::Table(t) = item.get_ref() {
                    name = t
                        .iter()
                        .find(|(key, _)| key.get_ref().as_ref() == "name")
                        .and_then(|(_, v)| match v.get_ref() {
                            DeValue::String(s) if !s.is_empty() => Some(s.to_string()),
                            _ => None,
                        });
                }
            }
        }
        table = None;
        names.push(name);
    }
    let shown = show(segs, |n| names.get(n).cloned().flatten());
    (span, shown)
}

/// `segs` as a person reads them: list items counted from 1, with their
/// `name` (`name_at(segment number)`) when they have one.
fn show(segs: &[Seg], name_at: impl Fn(usize) -> Option<String>) -> String {
    let mut out = String::new();
    for (n, seg) in segs.iter().enumerate() {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&position(*i, name_at(n).as_deref())),
        }
    }
    out
}

/// ` #3 (name = "test")`: the 0-based index `i` counted from 1, and the
/// item's name.
fn position(i: usize, name: Option<&str>) -> String {
    match name {
        Some(name) => format!(" #{} (name = {name:?})", i + 1),
        None => format!(" #{}", i + 1),
    }
}

/// The `i`-th (0-based) item of the list `section`, as problems and
/// warnings show it: `builders #1 (name = "runtests")`.
pub(super) fn item(section: &str, i: usize, name: &str) -> String {
    format!("{section}{}", position(i, Some(name)))
}

/// The 1-based line in `text` of the key a warning names, for
/// `checkconfig` to print warnings as it prints problems
/// (`master.cfg:LINE: ...`). A warning starts with the key path as
/// [`locate`] shows it, up to `: ` or ` = `
/// (`builders #1 (name = "runtests").steps #1.repourl: ...`); None when it
/// starts with no key path or names a key (or table) that is not in the
/// file (a default).
pub fn warning_line(text: &str, warning: &str) -> Option<usize> {
    let path = raw_path(warning)?;
    let (line, _) = locate(text, &path);
    line
}

/// The key path a person reads at the start of `shown`, back in the form
/// [`locate`] takes: `builders #2 (name = "a.b").steps #1.repourl: ...`
/// becomes `builders[1].steps[0].repourl`. Names are skipped as the
/// quoted (Rust-escaped) strings they are shown as, so dots, spaces and
/// quotes in them do not end the path.
fn raw_path(shown: &str) -> Option<String> {
    let mut out = String::new();
    let mut rest = shown;
    loop {
        let key_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if key_len == 0 {
            return None;
        }
        out.push_str(&rest[..key_len]);
        rest = &rest[key_len..];
        // List items: ` #N`, then ` (name = "...")` when they have a name.
        while let Some(r) = rest.strip_prefix(" #") {
            let digits = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
            let n: usize = r[..digits].parse().ok()?;
            out.push_str(&format!("[{}]", n.checked_sub(1)?));
            rest = &r[digits..];
            if let Some(r) = rest.strip_prefix(" (name = \"") {
                rest = after_quoted(r)?.strip_prefix(')')?;
            }
        }
        match rest.strip_prefix('.') {
            Some(r) => {
                out.push('.');
                rest = r;
            }
            None if rest.starts_with(": ") || rest.starts_with(" = ") || rest.is_empty() => {
                return Some(out);
            }
            None => return None,
        }
    }
}

/// What follows the closing quote of a string shown with `{:?}`, given
/// the text after its opening quote.
fn after_quoted(s: &str) -> Option<&str> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(&s[i + 1..]),
            _ => {}
        }
    }
    None
}

/// `builders[0].steps[1].comand` → its segments.
fn split_path(path: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let mut rest = part;
        if let Some(i) = rest.find('[') {
            if i > 0 {
                out.push(Seg::Key(rest[..i].to_string()));
            }
            rest = &rest[i..];
            while let Some(r) = rest.strip_prefix('[') {
                let Some(end) = r.find(']') else { break };
                if let Ok(n) = r[..end].parse() {
                    out.push(Seg::Index(n));
                }
                rest = &r[end + 1..];
            }
        } else if !rest.is_empty() {
            out.push(Seg::Key(rest.to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{raw_path, warning_line};

    #[test]
    fn a_warning_s_key_path_is_read_back_and_found_on_its_line() {
        for (shown, raw) in [
            ("buildbot_url: \"x\" has port", Some("buildbot_url")),
            (
                "www.change_hook_dialects.base.allow_unsigned = true: anyone",
                Some("www.change_hook_dialects.base.allow_unsigned"),
            ),
            (
                "builders #2 (name = \"a.b \\\"c\\\")\").steps #1.repourl: \"u\" is",
                Some("builders[1].steps[0].repourl"),
            ),
            ("workers #3: no builder", Some("workers[2]")),
            ("workers #0: nothing", None),
            ("no scheduler starts anything", None),
            ("", None),
        ] {
            assert_eq!(raw_path(shown).as_deref(), raw, "{shown}");
        }
        let text = "buildbot_url = \"http://localhost:1/\"\n\n[[builders]]\nname = \"a.b\"\n\
                    [[builders.steps]]\ntype = \"git\"\nrepourl = \"u\"\n";
        assert_eq!(warning_line(text, "buildbot_url: has port"), Some(1));
        assert_eq!(
            warning_line(
                text,
                "builders #1 (name = \"a.b\").steps #1.repourl: is the example"
            ),
            Some(7)
        );
        // A key the file does not have (a default) has no line of its own.
        assert_eq!(warning_line(text, "title: is long"), None);
    }
}
