//! The job dependency graph (`jobs.<id>.needs`): GitHub's validation errors, execution layers
//! and downstream sets.
//!
//! # Validation, exactly as GitHub's parser
//!
//! * If no job is free of `needs`, the only error is
//!   `The workflow must contain at least one job with no dependencies.` (GitHub reports it at the
//!   `jobs` mapping, i.e. the first job key; here `job: 0`).
//! * Otherwise GitHub simulates the run: jobs without needs are ready; whenever a job becomes
//!   ready, the matching entries are removed from the needs of every waiting job, and a job whose
//!   needs become empty is ready in turn. Every waiting job that never becomes ready then gets
//!   one error per **remaining** need, jobs in declaration order and needs in the order written:
//!   `Job 'a' depends on unknown job 'x'.` if no job has that id, else
//!   `Job 'a' depends on job 'b' which creates a cycle in the dependency graph.` — also when `b`
//!   is merely blocked by an unknown job or a cycle upstream, as GitHub words it.
//! * Job ids compare case-insensitively (GitHub's server compares with `OrdinalIgnoreCase`; job
//!   ids are ASCII). Messages quote the job id as declared and the need as written.
//! * GitHub runs this check only when the rest of the workflow had no errors; callers that want
//!   identical output should do the same.
//!
//! # Layers
//!
//! [`Graph::layers`] groups the jobs that can run: layer 0 holds the jobs without needs, layer
//! `k` the jobs whose deepest need is in layer `k - 1`; each layer is in declaration order. Jobs
//! that can never run (involved in or behind a cycle or an unknown need) are in no layer.
//! [`downstream`] lists the jobs that transitively need a job (for fail-fast and skip
//! propagation).
//!
//! ```
//! use firebreak_workflow::graph::{analyze, downstream};
//!
//! let jobs = vec![
//!     ("build".to_string(), vec![]),
//!     ("test".to_string(), vec!["Build".to_string()]),
//!     ("deploy".to_string(), vec!["test".to_string(), "lint".to_string()]),
//! ];
//! let g = analyze(&jobs);
//! assert_eq!(g.errors[0].to_string(), "Job 'deploy' depends on unknown job 'lint'.");
//! assert_eq!(g.layers, vec![vec![0], vec![1]]); // deploy can never run
//! assert_eq!(downstream(&g, 0), vec![1, 2]);
//! ```

use std::collections::VecDeque;

use thiserror::Error;

/// The analysed dependency graph.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Graph {
    /// Runnable jobs by depth, as indexes into the input, each layer in declaration order.
    pub layers: Vec<Vec<usize>>,
    /// GitHub's validation errors, in GitHub's order.
    pub errors: Vec<GraphError>,
    /// For each job, the jobs it needs (resolved, duplicates and unknown ids removed, in the
    /// order written).
    pub needs: Vec<Vec<usize>>,
}

/// One dependency error.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{}", self.message())]
pub struct GraphError {
    /// The job the error is about (index into the input).
    pub job: usize,
    /// Index into that job's `needs` list (not a job index) of the offending entry, so a caller
    /// can point at its span; `None` for [`GraphErrorKind::NoStartNode`].
    pub need: Option<usize>,
    pub kind: GraphErrorKind,
    /// The job's id as declared.
    pub job_id: String,
    /// The need as written; `None` for [`GraphErrorKind::NoStartNode`].
    pub need_id: Option<String>,
}

/// The kind of a [`GraphError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GraphErrorKind {
    UnknownJob,
    Cycle,
    NoStartNode,
}

impl GraphError {
    /// GitHub's message for this error (also its `Display`).
    pub fn message(&self) -> String {
        let need = self.need_id.as_deref().unwrap_or_default();
        match self.kind {
            GraphErrorKind::UnknownJob => {
                format!("Job '{}' depends on unknown job '{need}'.", self.job_id)
            }
            GraphErrorKind::Cycle => format!(
                "Job '{}' depends on job '{need}' which creates a cycle in the dependency graph.",
                self.job_id
            ),
            GraphErrorKind::NoStartNode => {
                "The workflow must contain at least one job with no dependencies.".to_owned()
            }
        }
    }
}

fn find_job<J: AsRef<str>, L>(jobs: &[(J, L)], id: &str) -> Option<usize> {
    jobs.iter()
        .position(|(name, _)| name.as_ref().eq_ignore_ascii_case(id))
}

/// Analyses `jobs`: `(id, needs)` in declaration order.
pub fn analyze(jobs: &[(String, Vec<String>)]) -> Graph {
    analyze_in(jobs)
}

/// [`analyze`] over borrowed ids and needs (`&[(&str, &[String])]`), for the planner.
pub(crate) fn analyze_in<J: AsRef<str>, N: AsRef<str>, L: AsRef<[N]>>(jobs: &[(J, L)]) -> Graph {
    let needs: Vec<Vec<usize>> = jobs
        .iter()
        .map(|(_, job_needs)| {
            let mut resolved: Vec<usize> = Vec::new();
            for n in job_needs.as_ref() {
                if let Some(i) = find_job(jobs, n.as_ref()) {
                    if !resolved.contains(&i) {
                        resolved.push(i);
                    }
                }
            }
            resolved
        })
        .collect();
    let mut graph = Graph {
        layers: Vec::new(),
        errors: Vec::new(),
        needs,
    };
    if jobs.is_empty() {
        return graph;
    }

    // GitHub's simulation: remaining needs per job, by position in its list.
    let mut remaining: Vec<Vec<(usize, &str)>> = jobs
        .iter()
        .map(|(_, n)| n.as_ref().iter().map(AsRef::as_ref).enumerate().collect())
        .collect();
    let mut ready: VecDeque<usize> = (0..jobs.len())
        .filter(|&j| remaining[j].is_empty())
        .collect();
    if ready.is_empty() {
        graph.errors.push(GraphError {
            job: 0,
            need: None,
            kind: GraphErrorKind::NoStartNode,
            job_id: jobs[0].0.as_ref().to_owned(),
            need_id: None,
        });
        return graph;
    }
    let mut became_ready = vec![false; jobs.len()];
    for &j in &ready {
        became_ready[j] = true;
    }
    while let Some(current) = ready.pop_front() {
        let name = jobs[current].0.as_ref();
        for (j, rem) in remaining.iter_mut().enumerate() {
            if became_ready[j] || rem.is_empty() {
                continue;
            }
            rem.retain(|(_, need)| !need.eq_ignore_ascii_case(name));
            if rem.is_empty() {
                became_ready[j] = true;
                ready.push_back(j);
            }
        }
    }
    for (j, rem) in remaining.iter().enumerate() {
        if became_ready[j] {
            continue;
        }
        for &(pos, need) in rem {
            let kind = if find_job(jobs, need).is_some() {
                GraphErrorKind::Cycle
            } else {
                GraphErrorKind::UnknownJob
            };
            graph.errors.push(GraphError {
                job: j,
                need: Some(pos),
                kind,
                job_id: jobs[j].0.as_ref().to_owned(),
                need_id: Some(need.to_owned()),
            });
        }
    }

    // Layers: longest-path depth over the runnable jobs.
    let mut depth: Vec<Option<usize>> = vec![None; jobs.len()];
    let mut changed = true;
    while changed {
        changed = false;
        for j in 0..jobs.len() {
            if depth[j].is_some() || !became_ready[j] {
                continue;
            }
            let mut d = 0;
            let mut all_known = true;
            for &n in &graph.needs[j] {
                match depth[n] {
                    Some(nd) => d = d.max(nd + 1),
                    None => all_known = false,
                }
            }
            if all_known {
                depth[j] = Some(d);
                changed = true;
            }
        }
    }
    for (j, d) in depth.iter().enumerate() {
        if let Some(d) = *d {
            if graph.layers.len() <= d {
                graph.layers.resize(d + 1, Vec::new());
            }
            graph.layers[d].push(j);
        }
    }
    graph
}

/// The jobs that transitively need `job`, in declaration order (never `job` itself).
pub fn downstream(graph: &Graph, job: usize) -> Vec<usize> {
    let n = graph.needs.len();
    let mut hit = vec![false; n];
    let mut queue = VecDeque::from([job]);
    while let Some(cur) = queue.pop_front() {
        for (j, needs) in graph.needs.iter().enumerate() {
            if !hit[j] && needs.contains(&cur) {
                hit[j] = true;
                queue.push_back(j);
            }
        }
    }
    (0..n).filter(|&j| hit[j] && j != job).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jobs(spec: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
        spec.iter()
            .map(|(id, needs)| {
                (
                    (*id).to_owned(),
                    needs.iter().map(|n| (*n).to_owned()).collect(),
                )
            })
            .collect()
    }

    fn messages(g: &Graph) -> Vec<String> {
        g.errors.iter().map(ToString::to_string).collect()
    }

    /// workflow-parser/reader/errors-job-needs-cycle.yml
    #[test]
    fn github_cycle_fixture() {
        let g = analyze(&jobs(&[
            ("one", &[]),
            ("two", &["one", "three"]),
            ("three", &["two"]),
        ]));
        assert_eq!(
            messages(&g),
            vec![
                "Job 'two' depends on job 'three' which creates a cycle in the dependency graph.",
                "Job 'three' depends on job 'two' which creates a cycle in the dependency graph.",
            ]
        );
        assert_eq!((g.errors[0].job, g.errors[0].need), (1, Some(1)));
        assert_eq!((g.errors[1].job, g.errors[1].need), (2, Some(0)));
        assert_eq!(g.layers, vec![vec![0]]);
    }

    /// workflow-parser/reader/errors-job-needs-no-start-node.yml
    #[test]
    fn github_no_start_node_fixture() {
        let g = analyze(&jobs(&[("one", &["two"]), ("two", &["one"])]));
        assert_eq!(
            messages(&g),
            vec!["The workflow must contain at least one job with no dependencies."]
        );
        assert_eq!(
            (g.errors[0].job, g.errors[0].need, g.errors[0].kind),
            (0, None, GraphErrorKind::NoStartNode)
        );
        assert!(g.layers.is_empty());
        // Only that error, even with unknown needs around.
        let g = analyze(&jobs(&[("one", &["nope"])]));
        assert_eq!(g.errors.len(), 1);
    }

    /// workflow-parser/reader/errors-job-needs-unknown-job.yml
    #[test]
    fn github_unknown_job_fixture() {
        let g = analyze(&jobs(&[
            ("one", &["two"]),
            ("three", &["four", "five"]),
            ("six", &[]),
        ]));
        assert_eq!(
            messages(&g),
            vec![
                "Job 'one' depends on unknown job 'two'.",
                "Job 'three' depends on unknown job 'four'.",
                "Job 'three' depends on unknown job 'five'.",
            ]
        );
        assert_eq!(g.errors[2].need, Some(1));
        assert_eq!(g.layers, vec![vec![2]]);
    }

    /// languageservices' converter test: unknown and cycle on one job.
    #[test]
    fn github_mixed_unknown_and_cycle() {
        let g = analyze(&jobs(&[
            ("job1", &["unknown-job", "job3"]),
            ("job2", &[]),
            ("job3", &["job1"]),
        ]));
        assert_eq!(
            messages(&g),
            vec![
                "Job 'job1' depends on unknown job 'unknown-job'.",
                "Job 'job1' depends on job 'job3' which creates a cycle in the dependency graph.",
                "Job 'job3' depends on job 'job1' which creates a cycle in the dependency graph.",
            ]
        );
    }

    #[test]
    fn blocked_downstream_is_reported_as_cycle_like_github() {
        let g = analyze(&jobs(&[("a", &[]), ("b", &["x"]), ("c", &["b", "a"])]));
        assert_eq!(
            messages(&g),
            vec![
                "Job 'b' depends on unknown job 'x'.",
                "Job 'c' depends on job 'b' which creates a cycle in the dependency graph.",
            ]
        );
        assert_eq!(g.errors[1].need, Some(0));
    }

    #[test]
    fn self_need_and_duplicates() {
        let g = analyze(&jobs(&[("a", &[]), ("b", &["b"])]));
        assert_eq!(
            messages(&g),
            vec!["Job 'b' depends on job 'b' which creates a cycle in the dependency graph."]
        );
        let g = analyze(&jobs(&[("a", &[]), ("b", &["a", "a"])]));
        assert!(g.errors.is_empty());
        assert_eq!(g.layers, vec![vec![0], vec![1]]);
        assert_eq!(g.needs[1], vec![0]);
    }

    #[test]
    fn ids_are_case_insensitive() {
        let g = analyze(&jobs(&[
            ("Build", &[]),
            ("test", &["build"]),
            ("deploy", &["TEST", "Missing"]),
        ]));
        assert_eq!(
            messages(&g),
            vec!["Job 'deploy' depends on unknown job 'Missing'."]
        );
        assert_eq!(g.needs, vec![vec![], vec![0], vec![1]]);
        assert_eq!(g.layers, vec![vec![0], vec![1]]);
    }

    #[test]
    fn layers_are_longest_path_and_stable() {
        // d needs a and c; c needs b; b needs a; e is independent, declared last.
        let g = analyze(&jobs(&[
            ("d", &["a", "c"]),
            ("a", &[]),
            ("c", &["b"]),
            ("b", &["a"]),
            ("e", &[]),
            ("f", &["a"]),
        ]));
        assert!(g.errors.is_empty());
        assert_eq!(g.layers, vec![vec![1, 4], vec![3, 5], vec![2], vec![0]]);
    }

    #[test]
    fn downstream_is_transitive() {
        let g = analyze(&jobs(&[
            ("a", &[]),
            ("b", &["a"]),
            ("c", &["b"]),
            ("d", &[]),
            ("e", &["d", "c"]),
        ]));
        assert_eq!(downstream(&g, 0), vec![1, 2, 4]);
        assert_eq!(downstream(&g, 3), vec![4]);
        assert_eq!(downstream(&g, 4), Vec::<usize>::new());
        // Cycles terminate and never list the job itself.
        let g = analyze(&jobs(&[("a", &[]), ("b", &["a", "c"]), ("c", &["b"])]));
        assert_eq!(downstream(&g, 1), vec![2]);
        assert_eq!(downstream(&g, 0), vec![1, 2]);
        // Out of range is empty.
        assert_eq!(downstream(&g, 99), Vec::<usize>::new());
    }

    #[test]
    fn empty_input() {
        let g = analyze(&[]);
        assert!(g.errors.is_empty() && g.layers.is_empty());
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn never_panics_and_layers_respect_needs(
                spec in prop::collection::vec(prop::collection::vec(0usize..8, 0..4), 0..8),
                unknown in prop::collection::vec(any::<bool>(), 8),
            ) {
                let n = spec.len();
                let jobs: Vec<(String, Vec<String>)> = spec.iter().enumerate().map(|(i, needs)| {
                    let needs = needs.iter().map(|&k| if k < n && !unknown[k] { format!("J{k}") } else { format!("x{k}") }).collect();
                    (format!("j{i}"), needs)
                }).collect();
                let g = analyze(&jobs);
                let mut depth = vec![None; n];
                for (d, layer) in g.layers.iter().enumerate() {
                    for &j in layer { depth[j] = Some(d); }
                }
                for (j, d) in depth.iter().enumerate() {
                    if let Some(d) = d {
                        for &k in &g.needs[j] {
                            prop_assert!(depth[k].is_some_and(|kd| kd < *d));
                        }
                    }
                }
                // Errors exist exactly when some job cannot run.
                let runnable: usize = g.layers.iter().map(Vec::len).sum();
                prop_assert_eq!(runnable < n, !g.errors.is_empty());
                for j in 0..n { let _ = downstream(&g, j); }
            }
        }
    }
}
