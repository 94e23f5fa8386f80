// minibot's page script, served from the binary as /assets/minibot.js on
// every page. Pages work without it; with it: times in the browser's zone,
// running clocks, overview pages that update live (Server-Sent Events).
// The build and log pages' part (live logs, log tools) is /assets/log.js,
// a queued request's (open its build when it starts) /assets/request.js,
// each loaded only by those pages, after this one.
'use strict';

(function () {
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

  // ---- Live overview pages (home, builder, workers, queue, changes) ----
  // One stream a page (/live): `hello` names the master process, `changed`
  // says the data differs from the page's; the page then fetches its own
  // URL with ?fragment=1 (the server's renderer) and swaps #live. After a
  // reconnect to another master (a restart) the page reloads whole.
  function liveOverview() {
    let master = null;
    let es = null;
    let busy = false;
    let again = false;
    let retry = 1000;
    const badge = document.createElement('p');
    badge.id = 'livestate';
    badge.className = 'livestate';
    badge.setAttribute('role', 'status');
    badge.hidden = true;
    badge.textContent = 'reconnecting…';
    document.querySelector('main').prepend(badge);
    const el = () => document.getElementById('live');

    function refresh() {
      if (busy) { again = true; return; }
      busy = true;
      const u = new URL(location.href);
      u.searchParams.set('fragment', '1');
      fetch(u, { cache: 'no-store' })
        .then((r) => (r.ok ? r.text() : Promise.reject(new Error(r.status))))
        .then((html) => {
          const t = document.createElement('template');
          t.innerHTML = html;
          const fresh = t.content.getElementById('live');
          const old = el();
          if (fresh && old) { old.replaceWith(fresh); localize(fresh); tick(); }
        })
        .catch(() => { again = true; })
        .finally(() => {
          busy = false;
          if (again) { again = false; setTimeout(refresh, 300); }
        });
    }

    function connect() {
      const cur = el();
      es = new EventSource('/live?v=' + encodeURIComponent(cur ? cur.dataset.v : ''));
      es.addEventListener('hello', (e) => {
        const m = JSON.parse(e.data).master;
        if (master !== null && m !== master) { location.reload(); return; }
        master = m;
        retry = 1000;
        badge.hidden = true;
        document.body.dataset.live = 'open';
      });
      es.addEventListener('changed', refresh);
      es.onerror = () => {
        es.close();
        badge.hidden = false;
        document.body.dataset.live = 'reconnecting';
        setTimeout(connect, retry);
        retry = Math.min(retry * 2, 10000);
      };
    }
    connect();
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

  // For /assets/log.js, which the build and log pages load after this.
  window.minibot = { localize: localize };

  closeStreamsOnLeave();
  localize(document);
  tick();
  setInterval(tick, 1000);
  if (document.getElementById('live')) liveOverview();
})();
