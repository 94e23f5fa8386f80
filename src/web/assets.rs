//! The page assets: the stylesheets, the scripts and the icon, compiled into
//! the binary and served by `www` under `/assets/`.
//!
//! Owns: their text as sent. The sources in `assets/` keep their comments
//! and indentation for readers; `build.rs` minifies them with the
//! `minifier` crate into `OUT_DIR` at build time, because every page
//! carries them and a page must stay under 20 KB of HTML, CSS and script
//! (`tests/web_look.rs`). No threads, no channels, no work at run time.
//!
//! `minibot.css` is one source but two stylesheets: what follows its
//! `==== Build and log pages only` comment (steps, log text, the log
//! tools) is served as `/assets/log.css`, which only the build and log
//! pages link, so the other pages do not carry it. The script is three
//! files for the same reason: `minibot.js` on every page (times, clocks,
//! live overview pages), after it `log.js` on the build and log pages
//! only (live builds and logs, the log tools; it reaches `minibot.js`'s
//! `localize` through `window.minibot`) and `request.js` on a request's
//! page (open the build once it starts).

/// The stylesheet every page links, as sent.
pub(crate) static CSS: &str = include_str!(concat!(env!("OUT_DIR"), "/minibot.css"));
/// The build and log pages' stylesheet, as sent.
pub(crate) static LOG_CSS: &str = include_str!(concat!(env!("OUT_DIR"), "/log.css"));
/// The script every page loads, as sent.
pub(crate) static JS: &str = include_str!(concat!(env!("OUT_DIR"), "/minibot.js"));
/// The build and log pages' script, as sent.
pub(crate) static LOG_JS: &str = include_str!(concat!(env!("OUT_DIR"), "/log.js"));
/// A request page's script, as sent.
pub(crate) static REQUEST_JS: &str = include_str!(concat!(env!("OUT_DIR"), "/request.js"));
/// The icon, as it is (one line already).
pub(crate) const FAVICON: &str = include_str!("assets/favicon.svg");

#[cfg(test)]
mod tests {
    use super::*;

    const CSS_SOURCE: &str = include_str!("assets/minibot.css");
    const JS_SOURCE: &str = include_str!("assets/minibot.js");
    const LOG_JS_SOURCE: &str = include_str!("assets/log.js");
    const ANSI_SOURCE: &str = include_str!("assets/ansi.css");

    #[test]
    fn the_assets_shrink_and_the_log_rules_are_apart() {
        assert!(LOG_CSS.contains("pre.log{"), "{LOG_CSS}");
        assert!(!CSS.contains("pre.log"), "{CSS}");
        assert!(
            LOG_CSS.contains(".fx{") && LOG_CSS.contains(".f1{"),
            "{LOG_CSS}"
        );
        assert!(CSS.len() + LOG_CSS.len() < (CSS_SOURCE.len() + ANSI_SOURCE.len()) * 9 / 10);
        assert!(JS.len() < JS_SOURCE.len() * 8 / 10, "{}", JS.len());
        assert!(
            LOG_JS.len() < LOG_JS_SOURCE.len() * 8 / 10,
            "{}",
            LOG_JS.len()
        );
        // Every rule survived: as many blocks as in the source.
        let blocks = CSS.matches('{').count() + LOG_CSS.matches('{').count();
        let source = CSS_SOURCE.matches('{').count() + ANSI_SOURCE.matches('{').count();
        assert_eq!(blocks, source);
        // No comment is sent.
        for text in [CSS, LOG_CSS, JS, LOG_JS, REQUEST_JS] {
            assert!(!text.contains("/*"), "{text}");
        }
        // What the pages call is still there.
        for name in ["closeStreamsOnLeave", "EventSource", "data-since"] {
            assert!(JS.contains(name), "{name}");
        }
        // The log part is apart, and reaches the common part's helper.
        assert!(!JS.contains("logFlush") && LOG_JS.contains("logFlush"));
        assert!(JS.contains("window.minibot") && LOG_JS.contains("window.minibot"));
        assert!(REQUEST_JS.contains("waitreq") && !JS.contains("waitreq"));
    }
}
