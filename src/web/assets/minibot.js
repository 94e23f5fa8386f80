// minibot's page script, served from the binary as /assets/minibot.js.
// Pages work without it; with it: times in the browser's zone, running
// clocks, build logs that tail live (Server-Sent Events, never a reload),
// earlier parts of long logs on demand, and a queued request's page that
// opens its build once it starts.
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

  function localize(root) {
    root.querySelectorAll('time[datetime]').forEach((el) => {
      const d = new Date(el.getAttribute('datetime'));
      if (isNaN(d.getTime())) return;
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

  // Replaces the element with id `id` by `html` (one element).
  function replace(id, html) {
    const old = document.getElementById(id);
    if (!old) return null;
    const t = document.createElement('template');
    t.innerHTML = html.trim();
    const el = t.content.firstElementChild;
    if (!el) return null;
    old.replaceWith(el);
    localize(el);
    return el;
  }

  function atBottom(pre) {
    return pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
  }

  // The build page: follow the build until it is complete.
  function live(build) {
    const buildid = build.dataset.buildid;
    let es = null;
    const offsets = () => Array.from(build.querySelectorAll('pre.log'))
      .map((p) => p.dataset.logid + ':' + p.dataset.end).join(',');

    function connect() {
      es = new EventSource('/builds/' + buildid + '/live?logs=' + offsets());
      es.addEventListener('build', (e) => {
        replace('build-head', JSON.parse(e.data).html);
      });
      es.addEventListener('step', (e) => {
        const d = JSON.parse(e.data);
        if (document.getElementById('step-' + d.stepid)) {
          replace('step-head-' + d.stepid, d.head);
        } else {
          const none = document.getElementById('nosteps');
          if (none) none.remove();
          document.getElementById('steps').insertAdjacentHTML('beforeend', d.html);
          localize(document.getElementById('step-' + d.stepid));
        }
      });
      es.addEventListener('log', (e) => {
        const d = JSON.parse(e.data);
        const pre = document.getElementById('logpre-' + d.logid);
        // Only text that joins what is shown: a duplicate after a
        // reconnect is dropped.
        if (!pre || Number(pre.dataset.end) !== d.start) return;
        const follow = atBottom(pre);
        pre.insertAdjacentHTML('beforeend', d.html);
        pre.dataset.end = d.end;
        if (follow) pre.scrollTop = pre.scrollHeight;
      });
      es.addEventListener('end', () => {
        es.close();
        delete build.dataset.live;
      });
      es.onerror = () => {
        // The master restarted or the network blinked: reconnect with
        // what is shown, so nothing is sent twice.
        es.close();
        setTimeout(connect, 3000);
      };
    }
    connect();
  }

  // "load earlier output": the chunk before what a log shows.
  document.addEventListener('click', (e) => {
    const b = e.target.closest('button.earlier');
    if (!b) return;
    const pre = document.getElementById('logpre-' + b.dataset.logid);
    if (!pre) return;
    b.disabled = true;
    fetch('/logs/' + b.dataset.logid + '/chunk?end=' + pre.dataset.start)
      .then((r) => (r.ok ? r.json() : Promise.reject(new Error(r.status))))
      .then((d) => {
        const h = pre.scrollHeight;
        pre.insertAdjacentHTML('afterbegin', d.html);
        pre.scrollTop += pre.scrollHeight - h;
        if (d.start >= Number(pre.dataset.start) || d.start === 0) {
          b.remove();
        } else {
          b.textContent = 'load earlier output (' + Math.ceil(d.start / 1024) + ' KiB more)';
          b.disabled = false;
        }
        pre.dataset.start = d.start;
      })
      .catch(() => {
        b.textContent = 'could not load earlier output; try the raw log';
      });
  });

  // A queued request: open its build when it starts; stop waiting if it
  // is cancelled meanwhile.
  function waitForBuild(el) {
    const base = '/api/v2/buildrequests/' + el.dataset.brid;
    const json = (url) => fetch(url)
      .then((r) => (r.ok ? r.json() : Promise.reject(new Error(r.status))));
    const poll = () => {
      Promise.all([json(base + '/builds?field=buildid&order=-buildid&limit=1'), json(base)])
        .then(([b, r]) => {
          if (b.builds.length) {
            location.assign('/builds/' + b.builds[0].buildid);
          } else if (r.buildrequests.length && r.buildrequests[0].complete) {
            el.textContent = 'This request was cancelled before it started.';
          } else {
            setTimeout(poll, 1000);
          }
        })
        .catch(() => setTimeout(poll, 5000));
    };
    setTimeout(poll, 500);
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

  localize(document);
  tick();
  setInterval(tick, 1000);
  const build = document.getElementById('build');
  if (build && build.dataset.live) live(build);
  if (document.getElementById('live')) liveOverview();
  const wait = document.getElementById('waitreq');
  if (wait) waitForBuild(wait);
})();
