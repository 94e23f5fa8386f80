//! Locks in `master.cfg` (Buildbot's `MasterLock` and `WorkerLock`, issue
//! 20 point 4): the `[[locks]]` declarations and the `locks = [...]` lists
//! a builder (held for the whole build) or a step (held for that step)
//! takes, from the serde layer (`LockCfg`, `LockUseCfg`) to the typed
//! model (`Lock`, `LockUse`), with their checks: names declared once and
//! path-safe, references resolved, `max_count` in range, no lock taken
//! twice by one build, and no pair of builders that could wait for each
//! other forever (see [`check_deadlocks`]).
//!
//! No threads, no channels, no I/O. What holding a lock means at run time
//! (which holders block a taker) is `master::locks`; who holds what is in
//! the database (`db::locks`).

use super::lower::{check_name, check_unique, one_of, required};
use super::model::Builder;
use super::problems::Problems;
use serde::Deserialize;

/// Most holders a counting lock may have: far beyond any real use, small
/// enough that a count is never a problem anywhere.
const MAX_LOCK_COUNT: u32 = 10_000;

/// Longest lock name: it is shown in pages and in a build's state.
const MAX_LOCK_NAME: usize = 64;

/// A `[[locks]]` table as written.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub(crate) struct LockCfg {
    pub name: Option<String>,
    /// "master" (default): one lock for the whole master; "worker": one
    /// on each worker.
    pub kind: Option<String>,
    /// Holders with `access = "counting"` at once (default 1).
    pub max_count: Option<u32>,
}

/// One element of a builder's or a step's `locks` as written.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub(crate) struct LockUseCfg {
    pub name: Option<String>,
    /// "exclusive" (default) | "counting"
    pub access: Option<String>,
}

/// A declared lock.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Lock {
    pub name: String,
    pub kind: LockKind,
    /// Holders with counting access at once (per worker for a worker lock).
    pub max_count: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockKind {
    /// One lock for the whole master (Buildbot's `MasterLock`).
    Master,
    /// One lock on each worker, counted per worker (`WorkerLock`).
    Worker,
}

/// A lock a builder or a step takes, and how.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LockUse {
    pub name: String,
    pub access: LockAccess,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockAccess {
    /// Alone: no other holder of any access.
    Exclusive,
    /// Beside other counting holders, up to the lock's `max_count`.
    Counting,
}

/// Lowers `[[locks]]`; names used twice are reported.
pub(super) fn lower_locks(locks: Vec<LockCfg>, p: &mut Problems) -> Vec<Lock> {
    let mut out = Vec::with_capacity(locks.len());
    for (i, l) in locks.into_iter().enumerate() {
        let at = format!("locks[{i}]");
        let name = required(l.name, &at, "name", p);
        if let Some(name) = &name {
            check_lock_name(&format!("{at}.name"), name, p);
        }
        let kind = one_of(
            p,
            &format!("{at}.kind"),
            l.kind.as_deref(),
            &[("master", LockKind::Master), ("worker", LockKind::Worker)],
        );
        let max_count = l.max_count.unwrap_or(1);
        if !(1..=MAX_LOCK_COUNT).contains(&max_count) {
            p.add(
                &format!("{at}.max_count"),
                format_args!("{max_count} is not between 1 and {MAX_LOCK_COUNT}"),
            );
        }
        if let Some(name) = name {
            out.push(Lock {
                name,
                kind,
                max_count,
            });
        }
    }
    check_unique(
        "lock name",
        out.iter()
            .enumerate()
            .map(|(i, l)| (format!("locks[{i}].name"), l.name.as_str())),
        p,
    );
    out
}

fn check_lock_name(at: &str, name: &str, p: &mut Problems) {
    check_name(at, "lock", name, p);
    if name.len() > MAX_LOCK_NAME {
        p.add(
            at,
            format_args!("is longer than {MAX_LOCK_NAME} characters"),
        );
    }
}

/// Lowers the `locks` list at `at` (a builder's or a step's): each names a
/// declared lock (`declared`), once.
pub(super) fn lower_uses(
    at: &str,
    uses: Vec<LockUseCfg>,
    declared: &[&str],
    p: &mut Problems,
) -> Vec<LockUse> {
    let mut out: Vec<LockUse> = Vec::with_capacity(uses.len());
    for (k, u) in uses.into_iter().enumerate() {
        let here = format!("{at}.locks[{k}]");
        let access = one_of(
            p,
            &format!("{here}.access"),
            u.access.as_deref(),
            &[
                ("exclusive", LockAccess::Exclusive),
                ("counting", LockAccess::Counting),
            ],
        );
        let Some(name) = required(u.name, &here, "name", p) else {
            continue;
        };
        if !declared.contains(&name.as_str()) {
            p.add(
                &format!("{here}.name"),
                format_args!("no lock named {name:?} (declare it in a [[locks]] table)"),
            );
        } else if out.iter().any(|o| o.name == name) {
            p.add(
                &format!("{here}.name"),
                format_args!("lock {name:?} is listed twice"),
            );
        } else {
            out.push(LockUse { name, access });
        }
    }
    out
}

/// A step may not list a lock its builder takes for the whole build: the
/// build holds it already, and taking it again with another access would
/// wait for itself.
pub(super) fn check_step_uses(at: &str, builder: &[LockUse], step: &[LockUse], p: &mut Problems) {
    for (k, u) in step.iter().enumerate() {
        if builder.iter().any(|b| b.name == u.name) {
            p.add(
                &format!("{at}.locks[{k}].name"),
                format_args!(
                    "the builder takes lock {:?} for the whole build already; \
                     list it in one place",
                    u.name
                ),
            );
        }
    }
}

/// One way a build waits while it holds: builder `builder` holds `held`
/// for the whole build and waits for `wanted` before step `step`.
struct WaitEdge<'a> {
    builder: usize,
    held: &'a str,
    wanted: &'a str,
    step: &'a str,
}

/// Reports builders that could deadlock. A build waits while holding
/// locks only before a step with locks, holding its builder's locks (a
/// builder's locks are taken all at once or not at all, and a step's
/// locks are given back before the next step takes its own). So two
/// builds can wait for each other forever only along a cycle of "holds X
/// for the build, waits for Y before a step" over the builders (builder a
/// holds X and waits for Y, builder b holds Y and waits for X): such a
/// config is refused, naming the cycle.
pub(super) fn check_deadlocks(builders: &[Builder], p: &mut Problems) {
    let mut edges: Vec<WaitEdge> = vec![];
    for (i, b) in builders.iter().enumerate() {
        for held in &b.locks {
            for s in &b.steps {
                for wanted in &s.locks {
                    edges.push(WaitEdge {
                        builder: i,
                        held: &held.name,
                        wanted: &wanted.name,
                        step: &s.name,
                    });
                }
            }
        }
    }
    let mut reported: Vec<Vec<usize>> = vec![];
    for start in 0..edges.len() {
        let Some(cycle) = cycle_from(&edges, start) else {
            continue;
        };
        // One report per cycle, whichever edge found it.
        let mut key = cycle.clone();
        key.sort_unstable();
        if reported.contains(&key) {
            continue;
        }
        reported.push(key);
        let chain: Vec<String> = cycle
            .iter()
            .map(|e| {
                let e = &edges[*e];
                format!(
                    "builder {:?} holds lock {:?} for the whole build and waits for lock {:?} before step {:?}",
                    builders[e.builder].name, e.held, e.wanted, e.step
                )
            })
            .collect();
        p.add(
            &format!("builders[{}].locks", edges[start].builder),
            format_args!(
                "builds could wait for each other forever: {}; take these locks for the whole build in each builder, or only in steps",
                chain.join(", while ")
            ),
        );
    }
}

/// A cycle of edges from `edges[start]` back to it (edge `e` leads to `f`
/// when `f`'s builder holds what `e`'s waits for), as edge indexes in
/// order, `start` first; None when there is none.
fn cycle_from(edges: &[WaitEdge], start: usize) -> Option<Vec<usize>> {
    // Depth-first over paths without repeated edges; configs have a
    // handful of locks, so no cleverness is needed.
    fn walk(edges: &[WaitEdge], start: usize, path: &mut Vec<usize>) -> bool {
        let last = &edges[*path.last().unwrap_or(&start)];
        for (f, next) in edges.iter().enumerate() {
            if next.held != last.wanted || next.builder == last.builder {
                continue;
            }
            if f == start {
                return true;
            }
            if path.contains(&f) || path.len() > edges.len() {
                continue;
            }
            path.push(f);
            if walk(edges, start, path) {
                return true;
            }
            path.pop();
        }
        false
    }
    let mut path = vec![start];
    walk(edges, start, &mut path).then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, test_config, TEST_BASE};

    /// Builders `a` and `b` on worker `w`, each with `a_extra` / `b_extra`
    /// after its name and a shell step with `step_extra`.
    fn two(locks: &str, a_extra: &str, b_extra: &str, step_extra: &str) -> String {
        format!(
            "{locks}\n[[builders]]\nname = \"a\"\nworkers = [\"w\"]\n{a_extra}\n\
             [[builders.steps]]\ntype = \"shell\"\nname = \"sa\"\ncommand = \"true\"\n{step_extra}\n\
             [[builders]]\nname = \"b\"\nworkers = [\"w\"]\n{b_extra}\n\
             [[builders.steps]]\ntype = \"shell\"\nname = \"sb\"\ncommand = \"true\"\n"
        )
    }

    fn problems(extra: &str) -> Vec<String> {
        match parse(&format!("{TEST_BASE}{extra}"), "m.cfg") {
            Ok(_) => vec![],
            Err(e) => e.problems,
        }
    }

    fn assert_problem(extra: &str, needle: &str) {
        let found = problems(extra);
        assert!(
            found.iter().any(|p| p.contains(needle)),
            "{needle:?} not in {found:#?}"
        );
    }

    #[test]
    fn locks_lower_with_their_defaults() {
        let cfg = test_config(&two(
            "[[locks]]\nname = \"deploy\"\n[[locks]]\nname = \"cpu\"\nkind = \"worker\"\nmax_count = 3\n",
            "locks = [{ name = \"deploy\" }]",
            "",
            "locks = [{ name = \"cpu\", access = \"counting\" }]",
        ));
        assert_eq!(
            cfg.locks,
            [
                Lock {
                    name: "deploy".into(),
                    kind: LockKind::Master,
                    max_count: 1
                },
                Lock {
                    name: "cpu".into(),
                    kind: LockKind::Worker,
                    max_count: 3
                }
            ]
        );
        assert_eq!(
            cfg.builders[0].locks,
            [LockUse {
                name: "deploy".into(),
                access: LockAccess::Exclusive
            }]
        );
        assert_eq!(
            cfg.builders[0].steps[0].locks,
            [LockUse {
                name: "cpu".into(),
                access: LockAccess::Counting
            }]
        );
        assert!(cfg.builders[1].locks.is_empty() && cfg.builders[1].steps[0].locks.is_empty());
    }

    #[test]
    fn every_lock_problem_is_named() {
        let decl = "[[locks]]\nname = \"deploy\"\n";
        assert_problem(
            &two(decl, "locks = [{ name = \"deplyo\" }]", "", ""),
            "builders #1 (name = \"a\").locks #1 (name = \"deplyo\").name: no lock named \"deplyo\"",
        );
        assert_problem(
            &two(
                decl,
                "locks = [{ name = \"deploy\" }, { name = \"deploy\", access = \"counting\" }]",
                "",
                "",
            ),
            "lock \"deploy\" is listed twice",
        );
        assert_problem(
            &two(
                decl,
                "locks = [{ name = \"deploy\", access = \"shared\" }]",
                "",
                "",
            ),
            ".access: \"shared\" is not one of \"exclusive\", \"counting\"",
        );
        assert_problem(
            &two(decl, "locks = [{ nmae = \"deploy\" }]", "", ""),
            "locks #1.nmae: unknown key (did you mean `name`?)",
        );
        assert_problem(
            &two(decl, "locks = [{ name = \"deploy\" }]", "", "locks = [{ name = \"deploy\" }]"),
            "steps #1 (name = \"sa\").locks #1 (name = \"deploy\").name: the builder takes lock \"deploy\" for the whole build already",
        );
        assert_problem(
            &two(&format!("{decl}{decl}"), "", "", ""),
            "locks #2 (name = \"deploy\").name: duplicate lock name \"deploy\"",
        );
        assert_problem(
            &two(
                "[[locks]]\nname = \"x\"\nkind = \"global\"\nmax_count = 0\n",
                "",
                "",
                "",
            ),
            "locks #1 (name = \"x\").kind: \"global\" is not one of \"master\", \"worker\"",
        );
        assert_problem(
            &two("[[locks]]\nname = \"x\"\nmax_count = 0\n", "", "", ""),
            "locks #1 (name = \"x\").max_count: 0 is not between 1 and 10000",
        );
        assert_problem(
            &two("[[locks]]\nkind = \"master\"\n", "", "", ""),
            "locks #1.name: required key is missing",
        );
        // Names are shown on pages and in states: the path-safe alphabet, bounded.
        let alphabet = "use only letters, digits, '.', '_' and '-'";
        for (bad, says) in [
            ("\"../x\"", alphabet),
            ("\"a b\"", alphabet),
            ("\"x\\u0007\"", alphabet),
            ("\"\"", "the lock name is empty"),
        ] {
            assert_problem(
                &two(&format!("[[locks]]\nname = {bad}\n"), "", "", ""),
                says,
            );
        }
        let long = "l".repeat(65);
        assert_problem(
            &two(&format!("[[locks]]\nname = \"{long}\"\n"), "", "", ""),
            "is longer than 64 characters",
        );
        assert!(problems(&two(
            &format!("[[locks]]\nname = \"{}\"\n", &long[1..]),
            "",
            "",
            ""
        ))
        .is_empty());
    }

    #[test]
    fn builders_that_could_wait_for_each_other_are_refused() {
        let decl = "[[locks]]\nname = \"x\"\n[[locks]]\nname = \"y\"\n";
        // a holds x and waits for y before sa; b holds y and waits for x.
        let text = format!(
            "{decl}[[builders]]\nname = \"a\"\nworkers = [\"w\"]\nlocks = [{{ name = \"x\" }}]\n\
             [[builders.steps]]\ntype = \"shell\"\nname = \"sa\"\ncommand = \"true\"\nlocks = [{{ name = \"y\" }}]\n\
             [[builders]]\nname = \"b\"\nworkers = [\"w\"]\nlocks = [{{ name = \"y\" }}]\n\
             [[builders.steps]]\ntype = \"shell\"\nname = \"sb\"\ncommand = \"true\"\nlocks = [{{ name = \"x\" }}]\n"
        );
        let found = problems(&text);
        assert_eq!(found.len(), 1, "one report per cycle: {found:#?}");
        assert!(
            found[0].contains(
                "builders #1 (name = \"a\").locks: builds could wait for each other forever: \
                 builder \"a\" holds lock \"x\" for the whole build and waits for lock \"y\" before step \"sa\", \
                 while builder \"b\" holds lock \"y\" for the whole build and waits for lock \"x\" before step \"sb\""
            ),
            "{found:#?}"
        );
        // A longer cycle: a holds x and waits for y, b holds y and waits
        // for z, c holds z and waits for x.
        let builder = |name: &str, held: &str, wanted: &str| {
            format!(
                "[[builders]]\nname = \"{name}\"\nworkers = [\"w\"]\nlocks = [{{ name = \"{held}\" }}]\n\
                 [[builders.steps]]\ntype = \"shell\"\ncommand = \"true\"\nlocks = [{{ name = \"{wanted}\" }}]\n"
            )
        };
        let three = format!(
            "{decl}[[locks]]\nname = \"z\"\n{}{}{}",
            builder("a", "x", "y"),
            builder("b", "y", "z"),
            builder("c", "z", "x")
        );
        let found = problems(&three);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].contains("\"a\" holds lock \"x\"")
                && found[0].contains("\"b\" holds lock \"y\"")
                && found[0].contains(
                    "\"c\" holds lock \"z\" for the whole build and waits for lock \"x\""
                ),
            "{found:#?}"
        );
        // Without the cycle (b takes x in a step but nothing for the whole
        // build) nothing can wait forever.
        let fine = text.replace(
            "name = \"b\"\nworkers = [\"w\"]\nlocks = [{ name = \"y\" }]\n",
            "name = \"b\"\nworkers = [\"w\"]\n",
        );
        assert!(problems(&fine).is_empty(), "{:#?}", problems(&fine));
    }
}
