//! The problem collector: every problem names the file and the key path
//! (`builders[0].steps[1].comand`); unknown keys get a "did you mean";
//! [`ConfigError`] is the list handed back to the caller.

use super::raw;
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
}

impl Problems<'_> {
    pub(super) fn add(&mut self, path: &str, msg: impl fmt::Display) {
        self.list.push(if path.is_empty() {
            format!("{}: {}", self.source, msg)
        } else {
            format!("{}: {}: {}", self.source, path, msg)
        });
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

/// `builders[0].steps[1].command`, as the user would point at it.
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

/// Edits (insert, delete, substitute, swap two neighbours) from `a` to `b`:
/// swapped letters are the commonest typo, so they count as one.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
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
