//! The `%(...)s` syntax of step commands and env values: `%(prop:NAME)s`,
//! `%(prop:NAME:-DEFAULT)s` and `%(secret:NAME)s`.
//!
//! Owns: finding the references in a text ([`expand`], [`secret_refs`]).
//! What a reference becomes (a value, an environment variable reference,
//! `<secret:NAME>`) is the caller's: `master::build` when a step is sent,
//! `lower` and `secret_dir` when the config is checked. One parser for both,
//! so the config checks exactly the references the build will replace.
//! Here, in `config`, because the kinds of reference are config syntax (no
//! code outside `config` matches a kind string). No I/O, threads or channels.

/// One `%(...)s` reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ref<'a> {
    /// `%(prop:NAME)s` or `%(prop:NAME:-DEFAULT)s`.
    Prop {
        name: &'a str,
        default: Option<&'a str>,
    },
    /// `%(secret:NAME)s`: a file of the `[secrets]` directory.
    Secret(&'a str),
}

/// Replaces each reference in `s` by what `sub` makes of it. Anything else
/// (other `%` uses such as `date +%Y`, an unterminated `%(prop:`) is left
/// as it is.
pub(crate) fn expand(s: &str, mut sub: impl FnMut(Ref<'_>) -> String) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("%(") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let (kind, body) = if let Some(b) = after.strip_prefix("prop:") {
            (true, b)
        } else if let Some(b) = after.strip_prefix("secret:") {
            (false, b)
        } else {
            out.push_str("%(");
            rest = after;
            continue;
        };
        let Some(j) = body.find(")s") else {
            out.push_str(&rest[i..]);
            rest = "";
            break;
        };
        let inner = &body[..j];
        let r = if kind {
            match inner.split_once(":-") {
                Some((name, d)) => Ref::Prop {
                    name,
                    default: Some(d),
                },
                None => Ref::Prop {
                    name: inner,
                    default: None,
                },
            }
        } else {
            Ref::Secret(inner)
        };
        out.push_str(&sub(r));
        rest = &body[j + 2..];
    }
    out.push_str(rest);
    out
}

/// The names of the secrets `s` refers to, in order, repeats included.
pub(crate) fn secret_refs(s: &str) -> Vec<String> {
    let mut names = Vec::new();
    expand(s, |r| {
        if let Ref::Secret(name) = r {
            names.push(name.to_string());
        }
        String::new()
    });
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(s: &str) -> String {
        expand(s, |r| match r {
            Ref::Prop { name, default } => format!("<p {name} {default:?}>"),
            Ref::Secret(name) => format!("<s {name}>"),
        })
    }

    #[test]
    fn references_are_found_and_the_rest_kept() {
        assert_eq!(
            show("a %(prop:x)s b %(secret:tok)s c %(prop:y:-d)s"),
            "a <p x None> b <s tok> c <p y Some(\"d\")>"
        );
        assert_eq!(show("date +%Y %(other:x)s"), "date +%Y %(other:x)s");
        assert_eq!(show("x %(secret:unterminated"), "x %(secret:unterminated");
        assert_eq!(show("%(%(secret:a)s"), "%(<s a>");
        assert_eq!(
            secret_refs("%(secret:a)s %(prop:b)s %(secret:../c)s"),
            vec!["a", "../c"]
        );
    }
}
