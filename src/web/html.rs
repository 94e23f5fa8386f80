//! HTML that escapes by construction.
//!
//! Owns: the [`Html`] type, a string of markup, and the [`html!`] macro
//! that builds it. An `Html` can only be made by escaping text
//! ([`Html::text`]), from a `&'static str` (markup written in the source,
//! [`Html::lit`]), or by `html!`, whose template is a literal and whose
//! arguments are escaped unless they are already `Html`. Every page,
//! fragment and log rendering returns `Html`, and `www` sends only `Html`
//! as a page: text from outside (commit messages, authors, branch names,
//! log text, worker info) can reach a page only through an escape, so a
//! forgotten escape is a type error instead of an XSS hole.
//!
//! Why a newtype and not a template crate: the pages are a few dozen tags
//! built by plain functions; a newtype keeps their shape (and the tests
//! that look for exact markup), adds no dependency or proc-macro compile
//! time, and the rule it enforces fits in this file.
//!
//! One escaping serves element content and quoted attribute values (all
//! of `& < > " '`): the pages never write an unquoted attribute. URLs built
//! from names are percent-encoded by their builder
//! (`pages::encode_path_segment`) and then escaped here like any text.

/// Markup that is safe to send: made only by escaping, from literals, or
/// from other `Html`. The field is private: there is no way to wrap an
/// arbitrary `String`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Html(String);

impl Html {
    /// Empty markup, to `push` onto.
    pub(crate) fn new() -> Html {
        Html(String::new())
    }

    /// Text, escaped.
    pub(crate) fn text(s: &str) -> Html {
        let mut out = Html(String::with_capacity(s.len()));
        escape_into(s, &mut out.0);
        out
    }

    /// Markup written in the source. `'static` keeps text read at run time
    /// out (short of leaking a `String` on purpose). Pages build markup
    /// with `html!`; this is for the unit tests.
    #[cfg(test)]
    pub(crate) fn lit(s: &'static str) -> Html {
        Html(s.to_string())
    }

    /// Appends `r`: text is escaped, `Html` appended as it is.
    pub(crate) fn push<R: Render + ?Sized>(&mut self, r: &R) {
        // Writing to a String never fails.
        let _ = r.render_to(&mut self.0);
    }

    /// The items with the markup `sep` between them.
    pub(crate) fn join(items: impl IntoIterator<Item = Html>, sep: &'static str) -> Html {
        let mut out = Html::new();
        for (i, h) in items.into_iter().enumerate() {
            if i > 0 {
                out.0.push_str(sep);
            }
            out.0.push_str(&h.0);
        }
        out
    }

    /// The markup between the first `open` and the last `close` (both
    /// literal tags, e.g. `<main>` and `</main>`), for a page's fragment.
    /// Still safe markup: text in an `Html` is escaped, so a `<` in it
    /// starts a tag written in the source; cut at two such tags that
    /// enclose each other, the piece is whole elements.
    pub(crate) fn inner(&self, open: &'static str, close: &'static str) -> Option<Html> {
        let start = self.0.find(open)? + open.len();
        let end = self.0.rfind(close)?;
        (start <= end).then(|| Html(self.0[start..end].to_string()))
    }

    pub(crate) fn into_string(self) -> String {
        self.0
    }

    /// The text a reader sees, for places that take no markup (the JSON
    /// API says in words what a page says with links): tags dropped and
    /// the escapes undone. Sound because text in an `Html` is escaped,
    /// so every `<` starts a tag written in the source.
    pub(crate) fn plain_text(&self) -> String {
        let mut out = String::with_capacity(self.0.len());
        let mut rest = self.0.as_str();
        while let Some(i) = rest.find('<') {
            out.push_str(&rest[..i]);
            rest = rest[i..].split_once('>').map_or("", |(_, after)| after);
        }
        out.push_str(rest);
        // `&amp;` last: `&amp;lt;` is the text `&lt;`.
        [
            ("&lt;", "<"),
            ("&gt;", ">"),
            ("&quot;", "\""),
            ("&#39;", "'"),
            ("&nbsp;", "\u{a0}"),
            ("&amp;", "&"),
        ]
        .iter()
        .fold(out, |t, (entity, c)| t.replace(entity, c))
    }

    /// The bytes of a response body.
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.0.into_bytes()
    }

    /// What `html!` expands to: `template` (a literal, checked by
    /// [`__check`] at compile time) with each `{}` replaced by the next
    /// argument, rendered. `{{` and `}}` are literal braces.
    /// What `html!` expands to: `format_args!` parses the template at
    /// compile time; each argument is an [`__Arg`], which renders as its
    /// type says (escaped text, raw `Html`, digits).
    /// What `html_push!` expands to: appends without an `Html` of its own.
    #[doc(hidden)]
    pub(crate) fn __push_args(&mut self, args: std::fmt::Arguments<'_>) {
        // Writing to a String never fails.
        let _ = std::fmt::Write::write_fmt(&mut self.0, args);
    }

    #[doc(hidden)]
    pub(crate) fn __from_args(args: std::fmt::Arguments<'_>) -> Html {
        Html(std::fmt::format(args))
    }
}

/// Read access for tests and callers that search or measure a page.
/// There is deliberately no `From<String>` and no `DerefMut`.
impl std::ops::Deref for Html {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Html {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Html {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl FromIterator<Html> for Html {
    fn from_iter<I: IntoIterator<Item = Html>>(iter: I) -> Html {
        Html::join(iter, "")
    }
}

mod sealed {
    /// Only this module decides what may be rendered, and how.
    pub(crate) trait Sealed {}
}

/// What may go into `html!` and [`Html::push`]: text (escaped), numbers
/// (as they are: digits and signs need no escaping) and `Html` (as it is).
/// Sealed: an impl elsewhere could append raw text.
pub(crate) trait Render: sealed::Sealed {
    /// Writes itself, escaped as its type says. Writing to a `String`
    /// never fails.
    fn render_to(&self, out: &mut dyn std::fmt::Write) -> std::fmt::Result;
}

impl sealed::Sealed for str {}
impl Render for str {
    fn render_to(&self, out: &mut dyn std::fmt::Write) -> std::fmt::Result {
        escape_to(self, out)
    }
}

impl sealed::Sealed for String {}
impl Render for String {
    fn render_to(&self, out: &mut dyn std::fmt::Write) -> std::fmt::Result {
        escape_to(self, out)
    }
}

impl sealed::Sealed for Html {}
impl Render for Html {
    fn render_to(&self, out: &mut dyn std::fmt::Write) -> std::fmt::Result {
        out.write_str(&self.0)
    }
}

impl<T: Render + ?Sized> sealed::Sealed for &T {}
impl<T: Render + ?Sized> Render for &T {
    fn render_to(&self, out: &mut dyn std::fmt::Write) -> std::fmt::Result {
        (**self).render_to(out)
    }
}

macro_rules! render_numbers {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl Render for $t {
            fn render_to(&self, out: &mut dyn std::fmt::Write) -> std::fmt::Result {
                write!(out, "{self}")
            }
        }
    )*};
}
render_numbers!(i32, i64, u32, u64, usize);
// The database ids render as their numbers.
render_numbers!(
    crate::model::BuildId,
    crate::model::RequestId,
    crate::model::BuildsetId,
    crate::model::ChangeId,
    crate::model::StepId,
    crate::model::LogId,
    crate::model::BuilderId,
    crate::model::WorkerId
);

/// Escapes text for element content and quoted attribute values. Private:
/// the only way to use it is to make an `Html`.
fn escape_into(s: &str, out: &mut String) {
    // Writing to a String never fails.
    let _ = escape_to(s, out);
}

/// [`escape_into`] for any writer: the runs between special characters
/// are written as they are (all five are ASCII, so byte offsets are char
/// boundaries), not one char at a time.
fn escape_to(s: &str, out: &mut dyn std::fmt::Write) -> std::fmt::Result {
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let entity = match b {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'"' => "&quot;",
            b'\'' => "&#39;",
            _ => continue,
        };
        out.write_str(&s[start..i])?;
        out.write_str(entity)?;
        start = i + 1;
    }
    out.write_str(&s[start..])
}

/// The compile-time check of an `html!` template: only `{}` placeholders
/// (a named one, `{name}`, would capture a variable unescaped in
/// `format!`; here it is refused), `{{`/`}}` for braces, and as many
/// placeholders as arguments.
#[doc(hidden)]
pub(crate) const fn __check(template: &str, args: usize) {
    let b = template.as_bytes();
    let mut i = 0;
    let mut n = 0;
    while i < b.len() {
        let next = if i + 1 < b.len() { b[i + 1] } else { 0 };
        if b[i] == b'{' {
            if next == b'}' {
                n += 1;
            } else if next != b'{' {
                panic!("html!: only empty placeholders (no names, no format specs)");
            }
            i += 2;
        } else if b[i] == b'}' {
            if next != b'}' {
                panic!("html!: a lone closing brace (write two for a literal one)");
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    if n != args {
        panic!("html!: the template's placeholders and the arguments differ in number");
    }
}

/// `html!("<a href=\"/x/{}\">{}</a>", url, name)`: the template is markup
/// (a literal), each `{}` takes the next argument, escaped unless it is
/// `Html`. Only `{}` placeholders: no names, no format specs (checked at
/// compile time).
/// One argument of `html!`: displayed as its [`Render`] says.
#[doc(hidden)]
pub(crate) struct __Arg<'a>(pub(crate) &'a dyn Render);

impl std::fmt::Display for __Arg<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.render_to(f)
    }
}

macro_rules! html {
    ($template:literal $(, $arg:expr)* $(,)?) => {{
        const _: () = $crate::web::html::__check(
            $template,
            <[&str]>::len(&[$(stringify!($arg)),*]),
        );
        $crate::web::html::Html::__from_args(format_args!(
            $template
            $(, $crate::web::html::__Arg(&$arg))*
        ))
    }};
}
pub(crate) use html;

/// `html_push!(out, "<td>{}</td>", x)`: `out.push(&html!(...))` without
/// the intermediate `Html` (one allocation less per fragment: tables
/// append thousands).
macro_rules! html_push {
    ($out:expr, $template:literal $(, $arg:expr)* $(,)?) => {{
        const _: () = $crate::web::html::__check(
            $template,
            <[&str]>::len(&[$(stringify!($arg)),*]),
        );
        $out.__push_args(format_args!(
            $template
            $(, $crate::web::html::__Arg(&$arg))*
        ))
    }};
}
pub(crate) use html_push;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inner_cuts_between_literal_tags_only() {
        let page = html!("<body><main>{}</main></body>", "</main><main>");
        assert_eq!(
            page.inner("<main>", "</main>").unwrap(),
            "&lt;/main&gt;&lt;main&gt;"
        );
        assert!(page.inner("<nav>", "</nav>").is_none());
    }

    #[test]
    fn plain_text_drops_tags_and_undoes_escapes() {
        let h = html!(
            "a <a href=\"/x?a=1&amp;b\">{}</a> &amp; {}",
            "<b>\"q\" 'r' &lt;",
            "done"
        );
        assert_eq!(h.plain_text(), "a <b>\"q\" 'r' &lt; & done");
        assert_eq!(Html::new().plain_text(), "");
    }

    #[test]
    fn html_push_escapes_as_html_does() {
        let mut out = html!("<p>");
        html_push!(
            out,
            "<b title=\"{}\">{}</b>{}",
            "a\"b",
            "<i>",
            html!("<br>")
        );
        html_push!(out, "{{}}{}", 42);
        assert_eq!(out, "<p><b title=\"a&quot;b\">&lt;i&gt;</b><br>{}42");
    }

    #[test]
    fn text_escapes_every_special_character() {
        assert_eq!(
            Html::text("<script>alert('x & \"y\"')</script>"),
            "&lt;script&gt;alert(&#39;x &amp; &quot;y&quot;&#39;)&lt;/script&gt;"
        );
        assert_eq!(Html::text("plain é"), "plain é");
        let mut h = Html::lit("<p>");
        h.push("a<b");
        h.push(&Html::lit("</p>"));
        assert_eq!(h, "<p>a&lt;b</p>");
    }

    #[test]
    fn macro_escapes_text_but_not_html() {
        let name = String::from("<b>&'\"");
        let inner = html!("<i>{}</i>", "x>y");
        assert_eq!(
            html!("<p>{}{}{}</p>", name, inner, 42),
            "<p>&lt;b&gt;&amp;&#39;&quot;<i>x&gt;y</i>42</p>"
        );
        // An Html argument is appended as it is, never escaped twice.
        let once = Html::text("a&b");
        assert_eq!(html!("{}", once), "a&amp;b");
        assert_eq!(html!("{}", &once), "a&amp;b");
        assert_eq!(html!("{{x}} {}", 1), "{x} 1");
        assert_eq!(html!("<br>"), "<br>");
    }

    #[test]
    fn attributes_are_escaped() {
        let url = "https://x/?a=1&b=\"><script>";
        let v = "it's";
        assert_eq!(
            html!("<a href=\"{}\" title='{}'>x</a>", url, v),
            "<a href=\"https://x/?a=1&amp;b=&quot;&gt;&lt;script&gt;\" title='it&#39;s'>x</a>"
        );
    }

    #[test]
    fn join_and_collect() {
        let items = ["<a>", "b"].iter().map(|s| Html::text(s));
        assert_eq!(Html::join(items, "<br>"), "&lt;a&gt;<br>b");
        let all: Html = (1..=3).map(|i: i64| html!("<li>{}</li>", i)).collect();
        assert_eq!(all, "<li>1</li><li>2</li><li>3</li>");
    }
}
