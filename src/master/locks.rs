//! Locks at run time (Buildbot's `MasterLock` and `WorkerLock`, issue 20
//! point 4): what a builder's or a step's `locks` ask for on a worker
//! ([`wants`]), which holder keeps a lock from being taken ([`blocker`]),
//! and how a wait is said ("lock deploy, held by deploy #3").
//!
//! Who holds what is the database's `build_locks` table (`db::locks`). The
//! botmaster takes a builder's locks in the transaction that claims the
//! request, all of them or none, so a request that waits for a lock holds
//! no worker and nothing else; a worker connection takes a step's locks in
//! the transaction that starts the step (`build::RunningBuild::advance`),
//! all or none, after the previous step's are given back. Both check and
//! take inside one transaction of the one writer, so two takers never both
//! see a lock free. No threads or channels of its own.

use crate::config::{Config, LockAccess, LockKind, LockUse};
use crate::db::{self, LockHolder, LockWant};
use crate::model::BuildId;
use anyhow::Result;

/// The locks `uses` ask for when the build runs on `worker`, with the
/// lock definitions of `cfg` (a use always names a declared lock: the
/// lowering checked it).
pub(crate) fn wants(cfg: &Config, uses: &[LockUse], worker: &str) -> Vec<LockWant> {
    uses.iter()
        .filter_map(|u| {
            let lock = cfg.lock(&u.name)?;
            Some(LockWant {
                name: lock.name.clone(),
                worker: match lock.kind {
                    LockKind::Master => String::new(),
                    LockKind::Worker => worker.to_string(),
                },
                exclusive: match u.access {
                    LockAccess::Exclusive => true,
                    LockAccess::Counting => false,
                },
                max_count: lock.max_count,
            })
        })
        .collect()
}

/// The holder that keeps `want` from being taken now, None when it is
/// free for it. Holders of build `me` (the taker) do not count. An
/// exclusive taker needs no other holder; a counting one no exclusive
/// holder and fewer than `max_count` counting ones. A worker lock is
/// counted per worker (a row of a master lock of that name, left by a
/// build that started before a reconfig changed its kind, counts
/// everywhere).
pub(crate) fn blocker<'a>(
    holders: &'a [LockHolder],
    want: &LockWant,
    me: Option<BuildId>,
) -> Option<&'a LockHolder> {
    let same: Vec<&LockHolder> = holders
        .iter()
        .filter(|h| {
            h.name == want.name
                && Some(h.buildid) != me
                && (want.worker.is_empty() || h.worker.is_empty() || h.worker == want.worker)
        })
        .collect();
    if want.exclusive {
        return same.first().copied();
    }
    if let Some(x) = same.iter().find(|h| h.exclusive) {
        return Some(x);
    }
    match same.first() {
        Some(h) if same.len() >= want.max_count as usize => Some(h),
        _ => None,
    }
}

/// The first of `wants` that cannot be taken now, with its blocker.
pub(crate) fn first_blocker<'a, 'w>(
    holders: &'a [LockHolder],
    wants: &'w [LockWant],
    me: Option<BuildId>,
) -> Option<(&'w LockWant, &'a LockHolder)> {
    wants
        .iter()
        .find_map(|w| blocker(holders, w, me).map(|h| (w, h)))
}

/// None when build `me` (None: a build not created yet) can take every
/// lock of `wants` now, else what keeps the first it cannot take, as
/// [`waiting_text`] says it. In the writer's transaction, right before
/// `db::take_locks`, this is the decision; on a reader, a hint.
pub(crate) fn check(
    conn: &db::Conn,
    wants: &[LockWant],
    me: Option<BuildId>,
) -> Result<Option<String>> {
    if wants.is_empty() {
        return Ok(None);
    }
    let holders = db::lock_holders(conn)?;
    Ok(first_blocker(&holders, wants, me).map(|(w, h)| waiting_text(w, h)))
}

/// "lock deploy, held by deploy #3" (for a worker lock "lock deploy on
/// worker w1, held by ..."): what a build or a request waits for.
pub(crate) fn waiting_text(want: &LockWant, holder: &LockHolder) -> String {
    format!(
        "lock {}{}, held by {} #{}",
        want.name,
        on_worker(want),
        holder.builder,
        holder.number
    )
}

/// " on worker w1" for a worker lock, "" for a master lock.
pub(crate) fn on_worker(want: &LockWant) -> String {
    match want.worker.as_str() {
        "" => String::new(),
        w => format!(" on worker {w}"),
    }
}

/// The holder a planned claim will be (the botmaster plans several claims
/// in one round before any is written).
pub(crate) fn planned_holder(want: &LockWant, builder: &str) -> LockHolder {
    LockHolder {
        buildid: BuildId(0),
        builder: builder.to_string(),
        number: 0,
        name: want.name.clone(),
        worker: want.worker.clone(),
        exclusive: want.exclusive,
        step: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(id: i64, name: &str, worker: &str, exclusive: bool) -> LockHolder {
        LockHolder {
            buildid: BuildId(id),
            builder: "deploy".into(),
            number: id,
            name: name.into(),
            worker: worker.into(),
            exclusive,
            step: None,
        }
    }

    fn want(name: &str, worker: &str, exclusive: bool, max_count: u32) -> LockWant {
        LockWant {
            name: name.into(),
            worker: worker.into(),
            exclusive,
            max_count,
        }
    }

    #[test]
    fn exclusive_and_counting_access() {
        let none: Vec<LockHolder> = vec![];
        assert_eq!(blocker(&none, &want("d", "", true, 1), None), None);
        let one_counting = vec![holder(1, "d", "", false)];
        // Another counting holder fits under max_count 2, not under 1.
        assert_eq!(blocker(&one_counting, &want("d", "", false, 2), None), None);
        assert_eq!(
            blocker(&one_counting, &want("d", "", false, 1), None),
            Some(&one_counting[0])
        );
        // An exclusive taker waits for any holder.
        assert_eq!(
            blocker(&one_counting, &want("d", "", true, 2), None),
            Some(&one_counting[0])
        );
        let two = vec![holder(1, "d", "", false), holder(2, "d", "", false)];
        assert!(blocker(&two, &want("d", "", false, 2), None).is_some());
        assert_eq!(blocker(&two, &want("d", "", false, 3), None), None);
        // A counting taker waits for an exclusive holder whatever the count.
        let x = vec![holder(1, "d", "", true)];
        assert!(blocker(&x, &want("d", "", false, 100), None).is_some());
        // Other locks and the taker's own holds do not count.
        assert_eq!(blocker(&x, &want("e", "", true, 1), None), None);
        assert_eq!(blocker(&x, &want("d", "", true, 1), Some(BuildId(1))), None);
    }

    #[test]
    fn worker_locks_count_per_worker() {
        let on_w1 = vec![holder(1, "cpu", "w1", true)];
        assert!(blocker(&on_w1, &want("cpu", "w1", true, 1), None).is_some());
        assert_eq!(blocker(&on_w1, &want("cpu", "w2", true, 1), None), None);
        // A master-lock row of that name (the kind changed by a reconfig
        // while it was held) counts on every worker, and a worker-lock row
        // counts against the master lock.
        let master = vec![holder(1, "cpu", "", true)];
        assert!(blocker(&master, &want("cpu", "w2", true, 1), None).is_some());
        assert!(blocker(&on_w1, &want("cpu", "", true, 1), None).is_some());
    }

    #[test]
    fn the_wait_is_said_with_the_holder() {
        let h = holder(7, "deploy", "", true);
        assert_eq!(
            waiting_text(&want("deploy", "", true, 1), &h),
            "lock deploy, held by deploy #7"
        );
        assert_eq!(
            waiting_text(&want("deploy", "w1", true, 1), &h),
            "lock deploy on worker w1, held by deploy #7"
        );
        let wants = [want("a", "", true, 1), want("deploy", "", true, 1)];
        let holders = [h.clone()];
        let (w, by) = first_blocker(&holders, &wants, None).unwrap();
        assert_eq!((w.name.as_str(), by), ("deploy", &h));
    }
}
