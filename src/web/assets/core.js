// The core of minibot's page scripts, in every bundle (build.rs puts it
// first, then the part of the page's kind, in one `(function () { ... })`
// under 'use strict'; so this file is not a script by itself). Pages work
// without script; with it: times in the browser's zone, running clocks,
// and live streams closed when a page is left.
//
// The bundles, one a page (pages.rs, Ctx::layout): /assets/minibot.js =
// this + overview.js (overview pages, and pages of no other kind),
// /assets/log.js = this + logs.js (build pages), /assets/logpage.js = this
// + logpage.js (log pages), /assets/request.js = this + request.js (a
// request's page). One bundle a page, so a page
// carries only what it runs (every page stays under 20 KB,
// tests/web_look.rs).

// Server time minus browser time, so clocks agree with the server.
const skew = Number(document.body.dataset.now || 0) - Date.now() / 1000;
const now = () => Date.now() / 1000 + skew;
const pad = (n) => (n < 10 ? '0' : '') + n;

function duration(s) {
  s = Math.max(0, Math.floor(s));
  if (s < 60) return s + 's';
  if (s < 3600) return Math.floor(s / 60) + 'm ' + pad(s % 60) + 's';
  return Math.floor(s / 3600) + 'h ' + pad(Math.floor(s / 60) % 60) + 'm';
}

// A <time> holds `YYYY-MM-DD HH:MM:SSZ` (UTC, pages.rs time_html); once
// shown in the browser's zone it keeps that in `datetime`.
function localize(root) {
  root.querySelectorAll('time:not([datetime])').forEach((el) => {
    const t = el.textContent.replace(' ', 'T');
    const d = new Date(t);
    if (t.length !== 20 || isNaN(d.getTime())) return;
    el.dateTime = t;
    el.textContent = d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) +
      ' ' + pad(d.getHours()) + ':' + pad(d.getMinutes());
    el.title = d.toString();
  });
}

function tick() {
  document.querySelectorAll('[data-since]').forEach((el) => {
    el.textContent = duration(now() - Number(el.dataset.since));
  });
}

// A page kept in the back/forward cache keeps its live streams open,
// and a browser opens at most six connections to a host: after a few
// live pages the next one waited for a minute (tests/web_look.rs). So
// a page closes its streams when left, and one shown again from that
// cache reloads (its streams are gone, its content stale).
function closeStreamsOnLeave() {
  const open = new Set();
  const Source = window.EventSource;
  window.EventSource = function (url) {
    const es = new Source(url);
    open.add(es);
    return es;
  };
  addEventListener('pagehide', () => open.forEach((es) => es.close()));
  addEventListener('pageshow', (e) => { if (e.persisted) location.reload(); });
}

closeStreamsOnLeave();
localize(document);
tick();
setInterval(tick, 1000);
