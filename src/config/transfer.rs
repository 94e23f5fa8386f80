//! Lowering of the `upload` and `download` steps (artifacts, issue 20):
//! their keys out of the raw step into [`StepKind::Upload`] and
//! [`StepKind::Download`], every path checked to stay where it belongs.
//! Called from `lower::lower_step`; no state of its own.

use super::model::{BuildRef, DownloadFrom, StepKind};
use super::problems::Problems;
use super::raw;
use crate::protocol::{check_artifact_name, stays_inside};

/// `type = "upload"`: `source` (required), `dest` (optional name).
pub(super) fn lower_upload(at: &str, s: &mut raw::StepCfg, p: &mut Problems) -> StepKind {
    let source = s.source.take().unwrap_or_default();
    if source.is_empty() {
        p.add(&format!("{at}.source"), "required for an upload step");
    } else if !stays_inside(&source) {
        p.add(
            &format!("{at}.source"),
            "must be a path inside the build directory (relative, without '..')",
        );
    }
    let dest = s.dest.take().unwrap_or_default();
    if !dest.is_empty() {
        if let Err(e) = check_artifact_name(dest.trim_end_matches('/')) {
            p.add(&format!("{at}.dest"), e);
        }
    }
    StepKind::Upload { source, dest }
}

/// `type = "download"`: `dest` (required) and one of `artifact` (with
/// `build`) or `file`.
pub(super) fn lower_download(at: &str, s: &mut raw::StepCfg, p: &mut Problems) -> StepKind {
    let dest = s.dest.take().unwrap_or_default();
    if dest.is_empty() {
        p.add(&format!("{at}.dest"), "required for a download step");
    } else if !stays_inside(&dest) {
        p.add(
            &format!("{at}.dest"),
            "must be a path inside the build directory (relative, without '..')",
        );
    }
    let build = match s.build.take() {
        None => BuildRef::This,
        Some(toml::Value::Integer(n)) if n > 0 => BuildRef::Number(n),
        Some(toml::Value::String(t)) if t == "last_successful" => BuildRef::LastSuccessful,
        Some(toml::Value::String(t)) if t == "triggering" => BuildRef::Triggering,
        Some(_) => {
            p.add(
                &format!("{at}.build"),
                "must be a build number, \"last_successful\" or \"triggering\"",
            );
            BuildRef::This
        }
    };
    let from = match (s.artifact.take(), s.file.take()) {
        (Some(name), None) => {
            if let Err(e) = check_artifact_name(&name) {
                p.add(&format!("{at}.artifact"), e);
            }
            DownloadFrom::Artifact { name, build }
        }
        (None, Some(file)) => {
            if !stays_inside(&file) {
                p.add(
                    &format!("{at}.file"),
                    "must be a path inside the master's files/ directory (relative, without '..')",
                );
            }
            if build != BuildRef::This {
                p.add(&format!("{at}.build"), "only with `artifact`");
            }
            DownloadFrom::File(file)
        }
        (Some(_), Some(_)) => {
            p.add(&format!("{at}.file"), "give `artifact` or `file`, not both");
            DownloadFrom::File(String::new())
        }
        (None, None) => {
            p.add(
                at,
                "a download step needs `artifact` (an artifact's name) or `file` (under files/)",
            );
            DownloadFrom::File(String::new())
        }
    };
    StepKind::Download { from, dest }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, TEST_BASE};

    const BUILDER: &str = "[[builders]]\nname = \"b\"\nworkers = [\"w\"]\n";

    /// A download step of `artifact = "a.tgz"` with `build = <build>`:
    /// its lowered source, or the problems.
    fn download_build(build: &str) -> Result<DownloadFrom, String> {
        let cfg = format!(
            "{TEST_BASE}{BUILDER}[[builders.steps]]\ntype = \"download\"\n\
             artifact = \"a.tgz\"\nbuild = {build}\ndest = \"a.tgz\"\n"
        );
        let cfg = parse(&cfg, "t.cfg").map_err(|e| e.to_string())?;
        match &cfg.builders[0].steps[0].kind {
            StepKind::Download { from, .. } => Ok(from.clone()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_download_names_its_build_by_number_last_success_or_trigger() {
        let art = |build| DownloadFrom::Artifact {
            name: "a.tgz".into(),
            build,
        };
        assert_eq!(download_build("3"), Ok(art(BuildRef::Number(3))));
        assert_eq!(
            download_build("\"last_successful\""),
            Ok(art(BuildRef::LastSuccessful))
        );
        assert_eq!(
            download_build("\"triggering\""),
            Ok(art(BuildRef::Triggering))
        );
        for bad in ["0", "\"triggered\"", "\"parent\"", "true"] {
            let e = download_build(bad).unwrap_err();
            assert!(
                e.contains(
                    "steps #1.build: must be a build number, \"last_successful\" or \"triggering\""
                ),
                "{bad}: {e}"
            );
        }
    }
}
