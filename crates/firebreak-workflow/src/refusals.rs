//! What GitHub's workflow parser accepts but GitHub.com refuses when it creates a run
//! ("Invalid workflow file"): jobs that neither run steps nor call a workflow, and
//! reusable-workflow references of a shape GitHub cannot resolve.
//!
//! `check` reports these as warnings (the file is valid to GitHub's parser, whose verdict
//! `check` reproduces); a plan gives every triggered workflow that has one an error, so
//! `run` fails that workflow alone, as GitHub.com does. The messages are GitHub.com's.

use crate::diag::Pos;
use crate::model::{JobKind, Workflow};

/// One thing GitHub.com refuses, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub pos: Pos,
    pub message: String,
}

/// Everything in `wf` GitHub.com would refuse, in file order.
pub fn refusals(wf: &Workflow) -> Vec<Refusal> {
    let mut out = Vec::new();
    let empty: Vec<&std::sync::Arc<crate::model::Job>> = wf
        .jobs
        .iter()
        .filter(|j| matches!(&j.kind, JobKind::Steps(s) if s.steps.is_empty()))
        .collect();
    if let Some(first) = empty.first() {
        out.push(Refusal {
            pos: first.pos,
            message: format!(
                "No steps defined in `steps` and no workflow called in `uses` for the following jobs: {}",
                empty.iter().map(|j| j.id.as_str()).collect::<Vec<_>>().join(", ")
            ),
        });
    }
    for job in &wf.jobs {
        if let JobKind::Reusable(r) = &job.kind {
            if let Some(problem) = reference_problem(&r.uses) {
                out.push(Refusal {
                    pos: r.uses_pos,
                    message: format!("invalid value workflow reference: {problem}"),
                });
            }
        }
    }
    out.sort_by_key(|r| r.pos);
    out
}

/// Where called workflows live: `.github/workflows`, or `.github/workflows-lab` (accepted by
/// GitHub's language service beside it).
const ROOTS: [&str; 2] = [".github/workflows/", ".github/workflows-lab/"];

/// Why GitHub cannot resolve a job's `uses:` (`owner/repo/.github/workflows/file@ref`,
/// `./.github/workflows/file` or `$/.github/workflows/file`), if it cannot. An expression is
/// left to the run.
pub(crate) fn reference_problem(uses: &str) -> Option<&'static str> {
    if uses.contains("${{") {
        return None;
    }
    if let Some(local) = crate::model::local_uses_path(uses) {
        let self_repo = uses.starts_with("$/");
        return match ROOTS.iter().find_map(|r| local.strip_prefix(r)) {
            None if self_repo => {
                Some("self repository workflows must be rooted in '.github/workflows'")
            }
            None => Some("references to workflows must be rooted in '.github/workflows'"),
            Some(_) if uses.contains('@') && self_repo => {
                Some("cannot specify version when calling self repository workflows")
            }
            Some(_) if uses.contains('@') => {
                Some("cannot specify version when calling local workflows")
            }
            Some(file) => top_level(file),
        };
    }
    let Some((at, root)) = ROOTS
        .iter()
        .filter_map(|r| uses.find(r).map(|at| (at, r.len())))
        .min()
    else {
        return Some("references to workflows must be rooted in '.github/workflows'");
    };
    let prefix = uses.get(..at).unwrap_or_default();
    let owner_repo: Vec<&str> = prefix.trim_end_matches('/').split('/').collect();
    if !prefix.ends_with('/') || owner_repo.len() != 2 || owner_repo.iter().any(|s| s.is_empty()) {
        return Some("references to workflows must be prefixed with format 'owner/repository/'");
    }
    let rest = uses.get(at + root..).unwrap_or_default();
    match rest.split_once('@') {
        Some((file, version)) if !version.is_empty() => top_level(file),
        _ => Some("no version specified"),
    }
}

/// A workflow file must sit directly in `.github/workflows`.
fn top_level(file: &str) -> Option<&'static str> {
    file.contains('/')
        .then_some("workflows must be defined at the top level of the .github/workflows/ directory")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_github_resolves_and_ones_it_refuses() {
        for ok in [
            "octo/repo/.github/workflows/ci.yml@v1",
            "octo/repo/.github/workflows/ci.yml@0123abcd",
            "./.github/workflows/ci.yml",
            "$/.github/workflows/ci.yml",
            "./.github/workflows-lab/ci.yml",
            "octo/repo/.github/workflows-lab/ci.yml@v1",
            "octo/${{ inputs.repo }}/x@v1",
        ] {
            assert_eq!(reference_problem(ok), None, "{ok}");
        }
        for (bad, why) in [
            ("octo/repo/.github/workflows/ci.yml", "no version specified"),
            (
                "octo/repo/.github/workflows/ci.yml@",
                "no version specified",
            ),
            (
                "octo/repo/ci.yml@main",
                "must be rooted in '.github/workflows'",
            ),
            (
                "octo/wayback@v1.3.19",
                "must be rooted in '.github/workflows'",
            ),
            ("./ci/build.yml", "must be rooted in '.github/workflows'"),
            ("$/ci/build.yml", "self repository workflows must be rooted"),
            (
                "$/.github/workflows/ci.yml@v1",
                "cannot specify version when calling self repository workflows",
            ),
            ("./ci/build.yml@v1", "must be rooted in '.github/workflows'"),
            (
                "./.github/workflows/ci.yml@v1",
                "cannot specify version when calling local workflows",
            ),
            (
                "my-org/.github/workflows/A.yaml",
                "prefixed with format 'owner/repository/'",
            ),
            (
                "a/b/c/.github/workflows/x.yml@v1",
                "prefixed with format 'owner/repository/'",
            ),
            (
                "octo/repo/.github/workflows/sub/x.yml@v1",
                "top level of the .github/workflows/",
            ),
            (
                "./.github/workflows/sub/x.yml",
                "top level of the .github/workflows/",
            ),
        ] {
            let got = reference_problem(bad).unwrap_or_default();
            assert!(got.contains(why), "{bad}: {got}");
        }
    }
}
