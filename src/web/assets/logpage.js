// The log page's part of /assets/logpage.js (after core.js; build.rs
// bundles them): #L<n> links to lines outside the region shown, and the
// end of a log opened at its bottom.

// The log page: #L<n> outside the lines shown opens the region around
// it; the end of the log opens at its bottom.
function logPage(view) {
  const m = /^#L(\d+)$/.exec(location.hash);
  if (m && !document.getElementById('L' + m[1])) {
    location.replace('/logs/' + view.dataset.logid + '?line=' + m[1] + '#L' + m[1]);
    return;
  }
  const text = document.getElementById('logtext');
  if (!m && text && text.dataset.tail) scrollTo(0, document.body.scrollHeight);
  addEventListener('hashchange', () => {
    const h = /^#L(\d+)$/.exec(location.hash);
    if (h && !document.getElementById('L' + h[1])) {
      location.replace('/logs/' + view.dataset.logid + '?line=' + h[1] + '#L' + h[1]);
    }
  });
}

const logview = document.getElementById('logview');
if (logview) logPage(logview);
