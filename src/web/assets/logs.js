// The build pages' part of /assets/log.js (after core.js, whose
// `localize` it uses; build.rs bundles them). With it: build pages that
// follow their build live (Server-Sent Events, never a reload), logs that
// open at their end and follow, and earlier parts of long logs on demand.

// Replaces the element with id `id` by `html` (one element).
function replace(id, html) {
  return swap(document.getElementById(id), html);
}

// Replaces `old` by `html` (one element).
function swap(old, html) {
  if (!old) return null;
  const t = document.createElement('template');
  t.innerHTML = html.trim();
  const el = t.content.firstElementChild;
  if (!el) return null;
  old.replaceWith(el);
  localize(el);
  return el;
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
      const step = document.getElementById('step-' + d.stepid);
      if (step) {
        swap(step.firstElementChild, d.head);
      } else {
        const none = document.getElementById('nosteps');
        if (none) none.remove();
        document.getElementById('steps').insertAdjacentHTML('beforeend', d.html);
        localize(document.getElementById('step-' + d.stepid));
      }
    });
    es.addEventListener('log', (e) => logAppend(JSON.parse(e.data)));
    es.addEventListener('end', () => {
      es.close();
      delete build.dataset.live;
      // Lists its never-run steps.
      if (document.querySelector('#build-head[data-skipped]')) location.reload();
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
  const pre = logPre(b.dataset.logid);
  if (!pre) return;
  b.disabled = true;
  fetch('/logs/' + b.dataset.logid + '/chunk?end=' + startOf(pre))
    .then((r) => (r.ok ? r.json() : Promise.reject(new Error(r.status))))
    .then((d) => {
      palette(d.html);
      const h = pre.scrollHeight;
      pre.prepend(logChunk(d.html, d.start, logLines(d.html)));
      pre.scrollTop += pre.scrollHeight - h;
      if (d.start >= startOf(pre) || d.start === 0) {
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

// ---- Log view (issue 17 points 2 and 3) -------------------------------
// A log opens at its end and follows new output while its box is
// scrolled to the bottom (scrolling up stops following, scrolling back
// down resumes). Live text is put in the page at most once a frame, and
// a log keeps at most LOG_MAX lines in the page: older ones are dropped
// (the log page, /logs/<id>, has them all, with search and numbers).
// Updates are batched: at most one every LOG_EVERY ms, in a frame.
const LOG_MAX = 1000;
const LOG_EVERY = 150;
const logState = new Map();

function atBottom(pre) {
  return pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
}

function logLines(html) {
  let n = 0;
  for (let i = html.indexOf('\n'); i >= 0; i = html.indexOf('\n', i + 1)) n++;
  return n;
}

// A piece of log text as one element; `start` is its first byte in the
// file ('' when unknown: lines were cut from its front).
function logChunk(html, start, lines) {
  const t = document.createElement('template');
  t.innerHTML = '<span class="chunk">' + html + '</span>';
  const el = t.content.firstChild;
  el.dataset.s = start;
  el.dataset.n = lines;
  return el;
}

function logStateOf(pre) {
  let st = logState.get(pre);
  if (st) return st;
  // What the server rendered becomes the first chunk.
  const html = pre.innerHTML;
  pre.textContent = '';
  pre.append(logChunk(html, startOf(pre), logLines(html)));
  st = { follow: true, pending: [], lines: logLines(html) };
  logState.set(pre, st);
  pre.addEventListener('scroll', () => { st.follow = atBottom(pre); }, { passive: true });
  return st;
}

// Where the text a log view shows starts (`data-start`, left out at 0).
function startOf(pre) {
  return Number(pre.dataset.start || 0);
}

// The view of log `logid` (a build page has one a log).
function logPre(logid) {
  return document.querySelector('pre.log[data-logid="' + Number(logid) + '"]');
}

// The log colours are a stylesheet of their own (2 KB), linked by the
// server only when a log it showed had escapes: fetched once text with
// colours (a span of a class other than the streams') comes.
function palette(html) {
  if (!/<span class="(?!l[he]")/.test(html)) return;
  if (document.querySelector('link[href="/assets/ansi.css"]')) return;
  const l = document.createElement('link');
  l.rel = 'stylesheet';
  l.href = '/assets/ansi.css';
  document.head.append(l);
}

function logAppend(d) {
  const pre = logPre(d.logid);
  // Only text that joins what is shown: a duplicate after a reconnect
  // is dropped.
  if (!pre || Number(pre.dataset.end) !== d.start) return;
  pre.dataset.end = d.end;
  palette(d.html);
  const st = logStateOf(pre);
  st.pending.push(d);
  // Text that would be dropped at once is not kept.
  let n = 0;
  for (let i = st.pending.length - 1; i >= 0; i--) {
    n += st.pending[i].n || (st.pending[i].n = logLines(st.pending[i].html));
    if (n > LOG_MAX && i > 0) { st.pending.splice(0, i); st.cut = true; break; }
  }
  if (!st.frame) {
    const wait = Math.max(0, (st.last || 0) + LOG_EVERY - performance.now());
    st.frame = setTimeout(() => requestAnimationFrame(() => logFlush(pre, st)), wait);
  }
}

function logFlush(pre, st) {
  st.frame = 0;
  st.last = performance.now();
  const items = st.pending;
  st.pending = [];
  if (!items.length) return;
  let html = items.map((d) => d.html).join('');
  let lines = items.reduce((a, d) => a + d.n, 0);
  let start = st.cut ? '' : items[0].start;
  if (lines > LOG_MAX) {
    // Keep the newest LOG_MAX lines (spans close before each newline).
    let i = -1;
    for (let k = lines - LOG_MAX; k > 0; k--) i = html.indexOf('\n', i + 1);
    html = html.slice(i + 1);
    lines = LOG_MAX;
    start = '';
  }
  st.cut = false;
  pre.append(logChunk(html, start, lines));
  st.lines += lines;
  let removed = false;
  const full = st.follow ? 0 : pre.scrollHeight;
  while (st.lines > LOG_MAX && pre.firstElementChild && pre.firstElementChild !== pre.lastElementChild) {
    st.lines -= Number(pre.firstElementChild.dataset.n);
    pre.firstElementChild.remove();
    removed = true;
  }
  if (removed) logDropped(pre);
  if (st.follow) {
    pre.scrollTop = pre.scrollHeight;
  } else if (removed) {
    // Keep what the reader looks at in place.
    pre.scrollTop -= full - pre.scrollHeight;
  }
}

// Lines were dropped from the top: "load earlier" loads from the new
// first line, or, where that is unknown, leads to the log page.
function logDropped(pre) {
  const first = pre.firstElementChild;
  const logid = pre.dataset.logid;
  let b = document.querySelector('button.earlier[data-logid="' + logid + '"]');
  if (first && first.dataset.s !== '') {
    pre.dataset.start = first.dataset.s;
    if (!b) {
      b = document.createElement('button');
      b.type = 'button';
      b.className = 'earlier';
      b.dataset.logid = logid;
      pre.before(b);
    }
    b.textContent = 'load earlier output';
    return;
  }
  if (b) b.remove();
  if (!document.getElementById('logall-' + logid)) {
    const a = document.createElement('a');
    a.id = 'logall-' + logid;
    a.className = 'logall';
    a.href = '/logs/' + logid;
    a.textContent = 'earlier lines: open the whole log (search, line numbers)';
    pre.before(a);
  }
}

// The build page: open logs start at their end; the last one is brought
// into view unless the address names a place.
function logsOpenAtEnd() {
  const open = document.querySelectorAll('details[open] pre.log');
  open.forEach((pre) => { logStateOf(pre); pre.scrollTop = pre.scrollHeight; });
  if (open.length && !location.hash) {
    const last = open[open.length - 1];
    if (last.getBoundingClientRect().bottom > innerHeight) last.scrollIntoView({ block: 'end' });
  }
}

const build = document.getElementById('build');
if (build) logsOpenAtEnd();
if (build && build.dataset.live) live(build);
