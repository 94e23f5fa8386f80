//! Chained builds in the config (issue 20 point 3): the references of
//! `trigger` steps and `dependent` schedulers, and cycles among them.
//!
//! Part of the lowering (validation *is* the lowering): called by
//! [`super::lower`] once the schedulers and builders are lowered, it only
//! adds problems. No threads, no channels, no I/O.
//!
//! A chain is a graph of schedulers: S → T when a builder that S starts
//! has a `trigger` step naming T, or T is a `dependent` scheduler whose
//! `upstream` is S. A cycle (A triggers B, B triggers A; a dependent of
//! itself) would build forever, so it is refused here, at checkconfig,
//! rather than bounded at run time.

use super::model::{Builder, Config, Scheduler, SchedulerKind, StepKind};
use super::problems::{item, Problems};
use std::collections::BTreeMap;

/// Longest property name `set_properties` / `copy_properties` take.
const MAX_PROPERTY_NAME: usize = 100;

/// Where each lowered item came from: its index in the file's list.
fn index_of(names: &[Option<String>], name: &str) -> usize {
    names
        .iter()
        .position(|n| n.as_deref() == Some(name))
        .unwrap_or(0)
}

/// Checks the chain references and refuses cycles. `scheduler_names` and
/// `builder_names` are the names as listed in the file (for key paths).
pub(super) fn check(
    schedulers: &[Scheduler],
    builders: &[Builder],
    scheduler_names: &[Option<String>],
    builder_names: &[Option<String>],
    p: &mut Problems,
) {
    let kind_of = |name: &str| schedulers.iter().find(|s| s.name == name).map(|s| &s.kind);
    // Names that were written but did not lower have their own problem.
    let written = |name: &str| scheduler_names.iter().any(|n| n.as_deref() == Some(name));
    for b in builders {
        let bi = index_of(builder_names, &b.name);
        for (j, step) in b.steps.iter().enumerate() {
            let StepKind::Trigger(t) = &step.kind else {
                continue;
            };
            let at = format!("builders[{bi}].steps[{j}]");
            for (k, name) in t.schedulers.iter().enumerate() {
                match kind_of(name) {
                    Some(SchedulerKind::Triggerable) => {}
                    Some(other) => p.add(
                        &format!("{at}.schedulers[{k}]"),
                        format_args!(
                            "scheduler {name:?} is a {} scheduler; a trigger step starts only \
                             triggerable schedulers (type = \"triggerable\")",
                            other.type_name()
                        ),
                    ),
                    None if written(name) => {}
                    None => p.add(
                        &format!("{at}.schedulers[{k}]"),
                        format_args!("no scheduler named {name:?}"),
                    ),
                }
            }
            let names = t
                .set_properties
                .keys()
                .map(|k| ("set_properties", k))
                .chain(t.copy_properties.iter().map(|k| ("copy_properties", k)));
            for (key, name) in names {
                if name.is_empty()
                    || name.len() > MAX_PROPERTY_NAME
                    || name.chars().any(|c| c.is_control())
                {
                    p.add(
                        &format!("{at}.{key}"),
                        format_args!(
                            "{name:?} is not a property name (1-{MAX_PROPERTY_NAME} characters, \
                             no control characters)"
                        ),
                    );
                }
            }
        }
    }
    for s in schedulers {
        let Some(up) = s.kind.upstream() else {
            continue;
        };
        let at = format!(
            "schedulers[{}].upstream",
            index_of(scheduler_names, &s.name)
        );
        if kind_of(up).is_none() && !written(up) {
            p.add(&at, format_args!("no scheduler named {up:?}"));
        }
    }
    if let Some(cycle) = find_cycle(schedulers, builders) {
        let at = format!("schedulers[{}]", index_of(scheduler_names, &cycle[0]));
        p.add(
            &at,
            format_args!(
                "chained builds form a cycle, which would build forever: {}",
                cycle.join(" → ")
            ),
        );
    }
}

/// What is allowed but may hang: a waiting trigger step whose triggered
/// builders can only run on workers that the waiting build may hold, each
/// one build at a time (`Config::warnings`).
pub(super) fn warnings(cfg: &Config) -> Vec<String> {
    let mut out = vec![];
    for (i, b) in cfg.builders.iter().enumerate() {
        for (j, step) in b.steps.iter().enumerate() {
            let StepKind::Trigger(t) = &step.kind else {
                continue;
            };
            if !t.wait {
                continue;
            }
            let triggered = t
                .schedulers
                .iter()
                .filter_map(|n| cfg.scheduler(n))
                .flat_map(|s| s.builders.iter())
                .filter_map(|n| cfg.builder(n));
            for c in triggered {
                let trapped = !c.workers.is_empty()
                    && c.workers.iter().all(|w| {
                        b.workers.contains(w) && cfg.worker(w).is_some_and(|w| w.max_builds == 1)
                    });
                if trapped {
                    out.push(format!(
                        "{}.steps #{}: builder {:?} runs only on workers of {:?} that take one \
                         build at a time ({}); while this step waits its build holds one of \
                         them, and the triggered build may wait for it forever; give {:?} \
                         other workers or raise max_builds",
                        item("builders", i, &b.name),
                        j + 1,
                        c.name,
                        b.name,
                        c.workers.join(", "),
                        c.name
                    ));
                }
            }
        }
    }
    out
}

/// The schedulers each scheduler's builds start (module header).
fn edges(schedulers: &[Scheduler], builders: &[Builder]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for s in schedulers {
        let mut next: Vec<String> = vec![];
        for b in builders.iter().filter(|b| s.builders.contains(&b.name)) {
            for step in &b.steps {
                if let StepKind::Trigger(t) = &step.kind {
                    next.extend(t.schedulers.iter().cloned());
                }
            }
        }
        next.extend(
            schedulers
                .iter()
                .filter(|d| d.kind.upstream() == Some(s.name.as_str()))
                .map(|d| d.name.clone()),
        );
        next.sort();
        next.dedup();
        out.insert(s.name.clone(), next);
    }
    out
}

/// One cycle, as the names along it with the first repeated at the end.
fn find_cycle(schedulers: &[Scheduler], builders: &[Builder]) -> Option<Vec<String>> {
    let graph = edges(schedulers, builders);
    // 0 = not seen, 1 = on the current path, 2 = done.
    let mut state: BTreeMap<&str, u8> = BTreeMap::new();
    let mut path: Vec<&str> = vec![];
    fn visit<'a>(
        n: &'a str,
        graph: &'a BTreeMap<String, Vec<String>>,
        state: &mut BTreeMap<&'a str, u8>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match state.get(n).copied().unwrap_or(0) {
            1 => {
                let from = path.iter().position(|x| *x == n).unwrap_or(0);
                let mut cycle: Vec<String> = path[from..].iter().map(|x| x.to_string()).collect();
                cycle.push(n.to_string());
                return Some(cycle);
            }
            2 => return None,
            _ => {}
        }
        state.insert(n, 1);
        path.push(n);
        for m in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, graph, state, path) {
                return Some(c);
            }
        }
        path.pop();
        state.insert(n, 2);
        None
    }
    for n in graph.keys() {
        if let Some(c) = visit(n, &graph, &mut state, &mut path) {
            return Some(c);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use crate::config::{parse, test_config, SchedulerKind, StepKind, TEST_BASE};

    /// Builders `a` and `b`, each a trigger step of `a_triggers` /
    /// `b_triggers`, with schedulers `ta` (a) and `tb` (b) triggerable.
    fn two(a_triggers: &str, b_triggers: &str, extra: &str) -> String {
        format!(
            "[[schedulers]]\nname = \"ta\"\ntype = \"triggerable\"\nbuilders = [\"a\"]\n\
             [[schedulers]]\nname = \"tb\"\ntype = \"triggerable\"\nbuilders = [\"b\"]\n\
             [[builders]]\nname = \"a\"\nworkers = [\"w\"]\n[[builders.steps]]\ntype = \"trigger\"\n\
             schedulers = [{a_triggers}]\n\
             [[builders]]\nname = \"b\"\nworkers = [\"w\"]\n[[builders.steps]]\ntype = \"trigger\"\n\
             schedulers = [{b_triggers}]\nwait = true\n{extra}"
        )
    }

    fn problems(extra: &str) -> String {
        match parse(&format!("{TEST_BASE}{extra}"), "test.cfg") {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn trigger_steps_and_chained_schedulers_lower() {
        // a triggers tb (b, without waiting); b triggers tc (c) and waits.
        let cfg = test_config(&format!(
            "{}[[schedulers]]\nname = \"tc\"\ntype = \"triggerable\"\nbuilders = [\"c\"]\n\
             [[builders]]\nname = \"c\"\nworkers = [\"w\"]\n[[builders.steps]]\n\
             type = \"shell\"\ncommand = \"true\"\n",
            two(
                "\"tb\"",
                "\"tc\"",
                "set_properties = { note = \"%(prop:x)s\" }\ncopy_properties = [\"version\"]\n",
            )
        ));
        let b = cfg.builder("b").unwrap();
        let StepKind::Trigger(t) = &b.steps[0].kind else {
            panic!("not a trigger step")
        };
        assert_eq!(t.schedulers, ["tc"]);
        assert!(t.wait);
        assert_eq!(t.set_properties["note"], "%(prop:x)s");
        assert_eq!(t.copy_properties, ["version"]);
        assert_eq!(b.steps[0].name, "trigger");
        let a = cfg.builder("a").unwrap();
        let StepKind::Trigger(t) = &a.steps[0].kind else {
            panic!("not a trigger step")
        };
        assert!(!t.wait, "wait defaults to false (Buildbot's waitForFinish)");
        let dep = test_config(&format!(
            "{}[[schedulers]]\nname = \"up\"\ntype = \"force\"\nbuilders = [\"b\"]\n\
             [[schedulers]]\nname = \"d\"\ntype = \"dependent\"\nupstream = \"up\"\nbuilders = [\"b\"]\n",
            crate::config::TEST_BUILDER
        ));
        assert_eq!(
            dep.scheduler("d").unwrap().kind,
            SchedulerKind::Dependent {
                upstream: "up".into()
            }
        );
    }

    #[test]
    fn a_waiting_trigger_on_its_own_only_worker_is_warned_about() {
        let cfg = |wait: bool| {
            test_config(&format!(
                "[[schedulers]]\nname = \"t\"\ntype = \"triggerable\"\nbuilders = [\"b\"]\n\
                 {}[[builders]]\nname = \"a\"\nworkers = [\"w\"]\n[[builders.steps]]\n\
                 type = \"trigger\"\nschedulers = [\"t\"]\nwait = {wait}\n",
                crate::config::TEST_BUILDER
            ))
            .warnings()
        };
        let w = cfg(true);
        assert!(
            w.iter().any(|w| w.starts_with(
                "builders #2 (name = \"a\").steps #1: builder \"b\" runs only on workers of \"a\""
            )),
            "{w:?}"
        );
        assert!(!cfg(false)
            .iter()
            .any(|w| w.contains("runs only on workers")));
    }

    #[test]
    fn cycles_are_refused() {
        // a triggers tb (b), b triggers ta (a): a → b → a.
        let e = problems(&two("\"tb\"", "\"ta\"", ""));
        assert!(e.contains("chained builds form a cycle"), "{e}");
        assert!(e.contains("ta → tb → ta"), "{e}");
        // A builder triggering its own scheduler.
        let e = problems(&two("\"ta\"", "\"ta\"", ""));
        assert!(e.contains("ta → ta"), "{e}");
        // A dependent of itself, and two dependents of each other.
        let dep = |d1: &str, d2: &str| {
            format!(
                "{}[[schedulers]]\nname = \"d1\"\ntype = \"dependent\"\nupstream = \"{d1}\"\n\
                 builders = [\"b\"]\n[[schedulers]]\nname = \"d2\"\ntype = \"dependent\"\n\
                 upstream = \"{d2}\"\nbuilders = [\"b\"]\n",
                crate::config::TEST_BUILDER
            )
        };
        assert!(problems(&dep("d1", "d1")).contains("d1 → d1"));
        assert!(problems(&dep("d2", "d1")).contains("d1 → d2 → d1"));
        // a triggers tb (b); d depends on tb and starts a: tb → d → tb.
        let e = problems(&format!(
            "{}[[schedulers]]\nname = \"tb\"\ntype = \"triggerable\"\nbuilders = [\"b\"]\n\
             [[schedulers]]\nname = \"d\"\ntype = \"dependent\"\nupstream = \"tb\"\n\
             builders = [\"a\"]\n[[builders]]\nname = \"a\"\nworkers = [\"w\"]\n\
             [[builders.steps]]\ntype = \"trigger\"\nschedulers = [\"tb\"]\n",
            crate::config::TEST_BUILDER
        ));
        assert!(e.contains("d → tb → d") || e.contains("tb → d → tb"), "{e}");
    }

    #[test]
    fn wrong_references_are_named() {
        let e = problems(&two("\"nope\"", "\"ta\"", ""));
        assert!(
            e.contains("steps #1.schedulers #1: no scheduler named \"nope\""),
            "{e}"
        );
        let e = problems(&format!(
            "{}[[schedulers]]\nname = \"f\"\ntype = \"force\"\nbuilders = [\"b\"]\n\
             [[builders]]\nname = \"c\"\nworkers = [\"w\"]\n[[builders.steps]]\ntype = \"trigger\"\n\
             schedulers = [\"f\"]\n\
             [[builders]]\nname = \"d\"\nworkers = [\"w\"]\n[[builders.steps]]\ntype = \"trigger\"\n\
             schedulers = [\"f\"]\ncommand = \"true\"\n",
            crate::config::TEST_BUILDER
        ));
        assert!(
            e.contains("is a force scheduler; a trigger step starts only triggerable"),
            "{e}"
        );
        assert!(e.contains("command: not a key of trigger steps"), "{e}");
        let e = problems(&format!(
            "{}[[schedulers]]\nname = \"d\"\ntype = \"dependent\"\nbuilders = [\"b\"]\n\
             [[schedulers]]\nname = \"e\"\ntype = \"dependent\"\nupstream = \"gone\"\nbuilders = [\"b\"]\n",
            crate::config::TEST_BUILDER
        ));
        assert!(
            e.contains("upstream: required for a dependent scheduler"),
            "{e}"
        );
        assert!(e.contains("upstream: no scheduler named \"gone\""), "{e}");
        let e = problems(&format!(
            "{}[[schedulers]]\nname = \"t\"\ntype = \"triggerable\"\nbuilders = [\"b\"]\n\
             [[builders]]\nname = \"c\"\nworkers = [\"w\"]\n[[builders.steps]]\ntype = \"trigger\"\n\
             schedulers = [\"t\"]\ncopy_properties = [\"a\\u0007b\", \"\"]\n",
            crate::config::TEST_BUILDER
        ));
        assert!(
            e.contains("copy_properties: \"a\\u{7}b\" is not a property name"),
            "{e}"
        );
        assert!(
            e.contains("copy_properties: \"\" is not a property name"),
            "{e}"
        );
        let e = problems(&format!(
            "{}[[builders]]\nname = \"c\"\nworkers = [\"w\"]\n[[builders.steps]]\ntype = \"trigger\"\n",
            crate::config::TEST_BUILDER
        ));
        assert!(e.contains("schedulers: required for a trigger step"), "{e}");
    }

    /// The sample's commented chain keys, uncommented, parse.
    #[test]
    fn the_samples_chain_keys_parse() {
        let block = |from: &str, to: &str| -> String {
            let sample = crate::config::SAMPLE;
            let start = sample.find(from).expect("the block's first line");
            let end = start + sample[start..].find(to).expect("the block's end");
            sample[start..end]
                .lines()
                .filter_map(|l| l.strip_prefix("# "))
                .filter(|l| l.starts_with('[') || l.contains(" = "))
                .map(|l| format!("{l}\n"))
                .collect()
        };
        let schedulers = block(
            "# [[schedulers]]\n# name = \"deploy\"",
            "# Chains that loop",
        );
        let step = block("# [[builders.steps]]\n# type = \"trigger\"", "\n\n");
        assert!(schedulers.contains("type = \"dependent\""), "{schedulers}");
        assert!(step.contains("copy_properties"), "{step}");
        let cfg = test_config(&format!(
            "[[schedulers]]\nname = \"all\"\ntype = \"force\"\nbuilders = [\"runtests\"]\n\
             {schedulers}[[builders]]\nname = \"deploy\"\nworkers = [\"w\"]\n\
             [[builders.steps]]\ntype = \"shell\"\ncommand = \"true\"\n\
             [[builders]]\nname = \"package\"\nworkers = [\"w\"]\n\
             [[builders.steps]]\ntype = \"shell\"\ncommand = \"true\"\n\
             [[builders]]\nname = \"runtests\"\nworkers = [\"w\"]\n{step}"
        ));
        let StepKind::Trigger(t) = &cfg.builder("runtests").unwrap().steps[0].kind else {
            panic!("not a trigger step")
        };
        assert!(t.wait && t.set_properties.len() == 2 && t.copy_properties == ["version"]);
    }
}
