//! `gitea_pr_poller` change sources: a Gitea whose webhooks cannot reach
//! the master, asked for its open pull requests instead (issue 19 point 9).
//!
//! Owns: one poll of one source ([`poll`]), run by the `poller` thread
//! (`master::poller`) in turn with the `git_poller` sources, and that
//! source's rows of `poller_state`: `pull/<number>` → the head sha last
//! seen, and [`LISTED`] once the first poll has recorded what was open.
//! Speaks no channel itself; the poller thread nudges the scheduler.
//!
//! A poll is `GET /api/v1/repos/{owner}/{repo}/pulls?state=open`, most
//! recently updated first, page by page ([`PAGE`] a page, at most
//! `max_pull_requests` in all, each page at most [`MAX_PAGE_BYTES`], each
//! request at most 30 s: `reporters::gitea::Target`). A pull request not
//! seen before is the change of a `pull_request` delivery with action
//! `opened`, one whose head moved that of `synchronized`: the same
//! function as the webhook's (`dialects::gitea::listed_pull_request`),
//! with the gitea dialect's options, so `pull_request_checkout = "merge"`,
//! the properties and the skip patterns are the hook's. The changes and
//! the new state are written in ONE transaction, so a restart (or a crash
//! at any point) neither misses nor repeats a change; as with the git
//! poller the first poll only records. A pull request no longer listed
//! (closed or merged) is forgotten, so if it is reopened it is built
//! again, as the `reopened` delivery would be; while more pull requests are
//! open than `max_pull_requests`, the ones not listed are kept, since they
//! may still be open.
//!
//! Trust: the list comes from the configured repository through Gitea's
//! API with the operator's token, and a pull request whose base repository
//! is another is dropped, so its changes carry a delivery id like a signed
//! hook's and the `gitea_status` reporter posts on the PR head.

use crate::config::{GiteaDialect, GiteaPrPoller};
use crate::db::{self, Store};
use crate::master::reporters::gitea::Target;
use crate::model::NewChange;
use crate::web::change_hook::unique_delivery;
use crate::web::dialects::{self, HookOutcome, ListedPull};
use anyhow::{bail, Context, Result};
use std::path::Path;

/// Pull requests asked for per page: Gitea's default `MAX_RESPONSE_ITEMS`,
/// the most it gives whatever `limit` says.
pub(crate) const PAGE: usize = 50;

/// The most bytes of one page read: a pull request renders as ~7 KB (two
/// repositories and users), so 50 fit many times over; a bigger answer is
/// not Gitea's and is refused rather than read into memory.
pub(crate) const MAX_PAGE_BYTES: u64 = 4 * 1024 * 1024;

/// The `poller_state` row that says the first poll is done (a name no
/// pull request's `pull/<number>` can take): without it a repository with
/// no open pull request at the first poll would take the next poll for
/// the first again and build nothing.
pub(crate) const LISTED: &str = "(listed)";

/// The state key of pull request `number`.
fn key(number: i64) -> String {
    format!("pull/{number}")
}

/// A head sha as git writes it (sha1 or sha256, lowercase hex): it goes
/// into the change and so to the worker's `git`.
fn is_sha(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Text from Gitea for the log: at most 200 characters, none of them
/// control characters (no forged log lines).
fn shown(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(200).collect()
}

/// One poll of `cs`; returns how many changes it stored. `dialect` is the
/// gitea dialect's settings (or the defaults) the changes are made with.
pub(crate) fn poll(
    store: &Store,
    master_dir: &Path,
    cs: &GiteaPrPoller,
    dialect: &GiteaDialect,
) -> Result<usize> {
    let gitea = Target::connect(
        &cs.base_url,
        &cs.token,
        cs.verify_tls,
        master_dir,
        "gitea_pr_poller",
    )?;
    let (pulls, complete) = list_open(&gitea, cs)?;
    let name = cs.name.clone();
    let seen = db::poller_state(&*store.reader()?, &name)?;
    let first_poll = !seen.contains_key(LISTED);
    let mut moved: Vec<(String, String)> = vec![];
    let mut changes: Vec<(NewChange, String)> = vec![];
    let mut listed: Vec<String> = vec![];
    for pr in pulls {
        let (n, sha) = (pr.number(), pr.head_sha().to_string());
        let k = key(n);
        listed.push(k.clone());
        let action = match seen.get(&k) {
            Some(last) if *last == sha => continue,
            Some(_) => "synchronized",
            None => "opened",
        };
        moved.push((k, sha.clone()));
        if first_poll {
            continue;
        }
        // Recorded whatever comes of it, as Gitea does not deliver a hook
        // twice: a pull request the dialect refuses is not retried every poll.
        match dialects::gitea::listed_pull_request(dialect, pr, action) {
            Ok(HookOutcome::Changes { changes: made, .. }) => {
                for c in made {
                    changes.push((c, unique_delivery(&format!("gitea_pr_poller-pr{n}"))));
                }
            }
            Ok(HookOutcome::Ignored(why)) => log::info!("gitea_pr_poller {name}: {why}"),
            Err(e) => log::warn!("gitea_pr_poller {name}: pull request #{n} ({sha}): {e}"),
        }
    }
    // Only a complete list says what is closed.
    let gone: Vec<String> = if complete {
        seen.keys()
            .filter(|k| k.starts_with("pull/") && !listed.contains(k))
            .cloned()
            .collect()
    } else {
        vec![]
    };
    if first_poll {
        log::info!(
            "gitea_pr_poller {name}: first poll, recording {} open pull request(s) without building",
            moved.len()
        );
    }
    if moved.is_empty() && gone.is_empty() && !first_poll {
        return Ok(0);
    }
    let n = changes.len();
    store.write(move |tx| {
        for (change, delivery) in &changes {
            db::insert_changes(tx, std::slice::from_ref(change), Some(delivery))?;
        }
        for (k, sha) in &moved {
            db::set_poller_state(tx, &name, k, sha)?;
        }
        for k in &gone {
            db::delete_poller_state(tx, &name, k)?;
        }
        if first_poll {
            db::set_poller_state(tx, &name, LISTED, "1")?;
        }
        Ok(())
    })?;
    Ok(n)
}

/// The open pull requests of `cs`'s repository, most recently updated
/// first, at most `max_pull_requests`; and whether that is all of them.
/// Entries that are not the configured repository's, or whose number or
/// head is not what Gitea sends, are left out with a warning.
fn list_open(gitea: &Target, cs: &GiteaPrPoller) -> Result<(Vec<ListedPull>, bool)> {
    let url = gitea.repo_api_url(&cs.owner, &cs.repo, &["pulls"]);
    let auth = format!("token {}", gitea.token);
    let full_name = format!("{}/{}", cs.owner, cs.repo);
    let mut out: Vec<ListedPull> = vec![];
    let mut numbers: Vec<i64> = vec![];
    // Enough pages for the cap, and a few for entries left out: a server
    // that keeps sending full pages of them does not keep the poll going.
    let pages = cs.max_pull_requests.div_ceil(PAGE) + 2;
    for page in 1..=pages {
        let mut u = url.clone();
        u.query_pairs_mut()
            .append_pair("state", "open")
            .append_pair("sort", "recentupdate")
            .append_pair("page", &page.to_string())
            .append_pair("limit", &PAGE.to_string());
        let what = format!("listing the open pull requests of {full_name} (page {page})");
        let mut resp = gitea
            .agent
            .get(u.as_str())
            .header("Authorization", &auth)
            .header("Accept", "application/json")
            .call()
            .with_context(|| format!("{what}: cannot reach Gitea at {}", cs.base_url))?;
        let code = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_PAGE_BYTES)
            .read_to_string()
            .with_context(|| format!("{what}: reading Gitea's answer (HTTP {code})"))?;
        if code != 200 {
            let hint = match code {
                401 => " (the token is wrong or expired)",
                403 | 404 => " (no such repository, or the token cannot read it)",
                _ => "",
            };
            bail!("{what}: HTTP {code}{hint}: {}", shown(&text));
        }
        let pulls = dialects::listed_pulls(&text, "Gitea's pull request list")
            .map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
        let got = pulls.len();
        for pr in pulls {
            let n = pr.number();
            let base = pr.base_full_name().unwrap_or("");
            if n <= 0 || !is_sha(pr.head_sha()) || !is_sha(pr.base_sha()) {
                log::warn!(
                    "gitea_pr_poller {}: pull request #{n} left out: its head {:?} or base {:?} is not a commit id",
                    cs.name,
                    shown(pr.head_sha()),
                    shown(pr.base_sha())
                );
            } else if !base.eq_ignore_ascii_case(&full_name) {
                log::warn!(
                    "gitea_pr_poller {}: pull request #{n} left out: its base repository {:?} is not {full_name}",
                    cs.name,
                    shown(base)
                );
            } else if !numbers.contains(&n) {
                // A pull request updated between two pages may come twice.
                numbers.push(n);
                out.push(pr);
            }
            if out.len() >= cs.max_pull_requests {
                return Ok((out, false));
            }
        }
        if got < PAGE {
            return Ok((out, true));
        }
    }
    log::warn!(
        "gitea_pr_poller {}: stopped after {pages} pages with {} usable pull requests",
        cs.name,
        out.len()
    );
    Ok((out, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shas_and_keys() {
        assert!(is_sha(&"a".repeat(40)));
        assert!(is_sha(&"0123456789abcdef".repeat(4)));
        for bad in [
            "",
            "abc",
            &"A".repeat(40),
            &"g".repeat(40),
            &format!("{}\n", "a".repeat(39)),
            &"a".repeat(41),
        ] {
            assert!(!is_sha(bad), "{bad:?}");
        }
        assert_eq!(key(3), "pull/3");
        assert!(!LISTED.starts_with("pull/"));
    }
}
