// The overview pages' part of /assets/minibot.js (after core.js, whose
// `localize` and `tick` it uses; build.rs bundles them).

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

if (document.getElementById('live')) liveOverview();
