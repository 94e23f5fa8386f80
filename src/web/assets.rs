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
//! pages link, so the other pages do not carry it. The log colours
//! (`ansi.css`, 2 KB of the 20) are `/assets/ansi.css`: linked by a log
//! page, and by a build page only when a log it shows has an escape in it
//! (`pages::build`); `logs.js` fetches it when live text brings colours.
//! The script is one
//! bundle a page for the same reason, made by `build.rs` from `core.js`
//! (times, clocks, closing live streams) and the part of the page's
//! kind: `minibot.js` with `overview.js` (live overview pages, and pages
//! of no other kind), `log.js` with `logs.js` (build pages: live builds
//! and logs), `logpage.js` with `logpage.js` (log pages: `#L<n>` links),
//! `request.js` with `request.js` (a request's page: open the build once
//! it starts). `pages::Ctx::layout` links the one a page needs.

/// The stylesheet every page links, as sent.
pub(crate) static CSS: &str = include_str!(concat!(env!("OUT_DIR"), "/minibot.css"));
/// The build and log pages' stylesheet, as sent.
pub(crate) static LOG_CSS: &str = include_str!(concat!(env!("OUT_DIR"), "/log.css"));
/// The log colours (SGR classes), as sent.
pub(crate) static ANSI_CSS: &str = include_str!(concat!(env!("OUT_DIR"), "/ansi.css"));
/// The overview pages' script (and that of pages of no other kind), as sent.
pub(crate) static JS: &str = include_str!(concat!(env!("OUT_DIR"), "/minibot.js"));
/// The build pages' script, as sent.
pub(crate) static LOG_JS: &str = include_str!(concat!(env!("OUT_DIR"), "/log.js"));
/// The log pages' script, as sent.
pub(crate) static LOG_PAGE_JS: &str = include_str!(concat!(env!("OUT_DIR"), "/logpage.js"));
/// A request page's script, as sent.
pub(crate) static REQUEST_JS: &str = include_str!(concat!(env!("OUT_DIR"), "/request.js"));
/// The icon, as it is (one line already).
pub(crate) const FAVICON: &str = include_str!("assets/favicon.svg");

#[cfg(test)]
mod tests {
    use super::*;

    const CSS_SOURCE: &str = include_str!("assets/minibot.css");
    const CORE_SOURCE: &str = include_str!("assets/core.js");
    const JS_SOURCE: &str = include_str!("assets/overview.js");
    const LOG_JS_SOURCE: &str = include_str!("assets/logs.js");
    const ANSI_SOURCE: &str = include_str!("assets/ansi.css");

    #[test]
    fn the_assets_shrink_and_the_log_rules_are_apart() {
        assert!(LOG_CSS.contains("pre.log{"), "{LOG_CSS}");
        assert!(!CSS.contains("pre.log"), "{CSS}");
        assert!(
            ANSI_CSS.contains(".fx{") && ANSI_CSS.contains(".f1{"),
            "{ANSI_CSS}"
        );
        assert!(!LOG_CSS.contains(".fx{"), "{LOG_CSS}");
        assert!(
            CSS.len() + LOG_CSS.len() + ANSI_CSS.len()
                < (CSS_SOURCE.len() + ANSI_SOURCE.len()) * 9 / 10
        );
        for (bundle, part) in [(JS, JS_SOURCE), (LOG_JS, LOG_JS_SOURCE)] {
            let source = CORE_SOURCE.len() + part.len();
            assert!(bundle.len() < source * 8 / 10, "{}", bundle.len());
        }
        // Every rule survived: as many blocks as in the source.
        let blocks =
            CSS.matches('{').count() + LOG_CSS.matches('{').count() + ANSI_CSS.matches('{').count();
        let source = CSS_SOURCE.matches('{').count() + ANSI_SOURCE.matches('{').count();
        assert_eq!(blocks, source);
        // No comment is sent.
        for text in [CSS, LOG_CSS, ANSI_CSS, JS, LOG_JS, LOG_PAGE_JS, REQUEST_JS] {
            assert!(!text.contains("/*"), "{text}");
        }
        // Each bundle: the core, then its part, and no other part.
        for js in [JS, LOG_JS, LOG_PAGE_JS, REQUEST_JS] {
            assert!(js.starts_with("'use strict';(function(){"), "{js}");
            assert!(js.ends_with("})();"), "{js}");
            for name in ["closeStreamsOnLeave", "EventSource", "data-since"] {
                assert!(js.contains(name), "{name}");
            }
        }
        let has =
            |js: &str| ["liveOverview", "logFlush", "logPage", "waitreq"].map(|f| js.contains(f));
        assert_eq!(has(JS), [true, false, false, false]);
        assert_eq!(has(LOG_JS), [false, true, false, false]);
        assert_eq!(has(LOG_PAGE_JS), [false, false, true, false]);
        assert_eq!(has(REQUEST_JS), [false, false, false, true]);
    }
}
