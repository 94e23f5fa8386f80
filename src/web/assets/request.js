// A request page's part of /assets/request.js (after core.js; build.rs
// bundles them): it opens the request's build once it starts, and reloads
// if the request is cancelled or collapsed meanwhile (the page then says
// which).

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
          // Cancelled or collapsed: the page says which.
          location.reload();
        } else {
          setTimeout(poll, 1000);
        }
      })
      .catch(() => setTimeout(poll, 5000));
  };
  setTimeout(poll, 500);
}

const wait = document.getElementById('waitreq');
if (wait) waitForBuild(wait);
