//! What `plan` can tell of a job's `if:` before anything runs: with the event known, a job
//! whose condition reads only `github` and `inputs` (and status functions) is decided — it
//! runs, or GitHub skips it — and so, through `needs`, are the jobs after a skipped one.
//! Anything that turns on `vars`, `needs`, or a status that depends on how the jobs it needs
//! end, stays undecided — unless the condition is settled before it reads them (after a
//! skipped need, the implicit `success() && …` is false whatever `needs` holds).

use std::collections::HashMap;

use firebreak_expr::{Context, EvalError, Value};
use firebreak_workflow::plan::WorkflowPlan;

/// What the plan says of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Its `if:` holds whatever the jobs it needs do (or they all succeed, for the default
    /// `success()`): it runs when they do.
    Runs,
    /// GitHub skips it: its `if:` is false for this event.
    Skipped,
    /// Its `if:` depends on what only the run knows (`vars`, `needs` outputs, whether the
    /// jobs it needs fail).
    Undecided,
    /// Its `if:` cannot be evaluated whatever the run does (`fromJSON('{')`): GitHub fails
    /// the job, with this message, and the jobs after it see a failed need.
    Fails(String),
}

impl Verdict {
    /// The word `--format json` uses.
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Runs => "runs",
            Verdict::Skipped => "skipped",
            Verdict::Undecided => "undecided",
            Verdict::Fails(_) => "fails",
        }
    }
}

/// The status functions as they would answer for a job: every job it needs succeeded
/// (`Ok`), one failed (`Failed`), or one was skipped (`Skipped`).
#[derive(Debug, Clone, Copy)]
enum Needs {
    Ok,
    Failed,
    Skipped,
}

/// The contexts the event settles before a run: what [`event_context`] answers.
pub const KNOWN_CONTEXTS: [&str; 2] = ["github", "inputs"];

/// The event's contexts ([`KNOWN_CONTEXTS`]) for an expression evaluated when planning, such
/// as a matrix built from `inputs`.
pub fn event_context<'a>(github: &'a Value, inputs: &'a Value) -> impl Context + 'a {
    PlanContext {
        github,
        inputs,
        needs: Needs::Ok,
    }
}

/// The contexts a job-level `if:` may read that the plan knows, and the status functions.
struct PlanContext<'a> {
    github: &'a Value,
    inputs: &'a Value,
    needs: Needs,
}

impl Context for PlanContext<'_> {
    fn named_value(&self, name: &str) -> Option<Value> {
        if name.eq_ignore_ascii_case("github") {
            Some(self.github.clone())
        } else if name.eq_ignore_ascii_case("inputs") {
            Some(self.inputs.clone())
        } else {
            None
        }
    }

    fn call(&self, name: &str, _args: &[Value]) -> Option<Result<Value, EvalError>> {
        let v = match (name.to_ascii_lowercase().as_str(), self.needs) {
            ("success", Needs::Ok) | ("always", _) | ("failure", Needs::Failed) => true,
            ("success" | "failure" | "cancelled", _) => false,
            _ => return None,
        };
        Some(Ok(Value::Bool(v)))
    }
}

/// [`PlanContext`] for a condition that also reads what only the run knows (`needs`,
/// `vars`): those read as null and are noted, so that a result they did not reach (`success()
/// && needs.a.result == 'x'` after a skipped need) is still the plan's to tell.
struct PartlyKnown<'a> {
    known: PlanContext<'a>,
    read_unknown: std::cell::Cell<bool>,
}

impl Context for PartlyKnown<'_> {
    fn named_value(&self, name: &str) -> Option<Value> {
        self.known.named_value(name).or_else(|| {
            self.read_unknown.set(true);
            Some(Value::Null)
        })
    }

    fn call(&self, name: &str, args: &[Value]) -> Option<Result<Value, EvalError>> {
        self.known.call(name, args)
    }
}

/// Decides each job of `plan` (its own jobs, not those of called workflows) for an event
/// whose `github` context is `github` and whose `inputs` are `inputs`.
pub fn decide(plan: &WorkflowPlan, github: &Value, inputs: &Value) -> HashMap<String, Verdict> {
    let mut out: HashMap<String, Verdict> = HashMap::new();
    // The status functions answer for every job before this one in the chain of `needs`
    // (as the run's do, and GitHub's), not only the ones it names.
    let ancestors = firebreak_workflow::plan::ancestors(plan);
    // Jobs come in stage order: every job a job needs is decided before it.
    for job in &plan.jobs {
        let before: Vec<String> = ancestors
            .get(&job.id.to_ascii_lowercase())
            .map(|a| a.iter().cloned().collect())
            .unwrap_or_default();
        let verdict = decide_one(&job.if_condition, &before, &out, github, inputs);
        let verdict = match verdict {
            // GitHub's words for it.
            Verdict::Fails(e) => Verdict::Fails(format!(
                "Error when evaluating 'if' for job '{}'. {e}",
                job.id
            )),
            v => v,
        };
        out.insert(job.id.to_ascii_lowercase(), verdict);
    }
    out
}

fn decide_one(
    condition: &str,
    needs: &[String],
    decided: &HashMap<String, Verdict>,
    github: &Value,
    inputs: &Value,
) -> Verdict {
    let Ok(expr) = firebreak_expr::parse(condition) else {
        return Verdict::Undecided;
    };
    let verdicts: Vec<Verdict> = needs
        .iter()
        .map(|n| {
            decided
                .get(&n.to_ascii_lowercase())
                .cloned()
                .unwrap_or(Verdict::Undecided)
        })
        .collect();
    let failed = verdicts.iter().any(|v| matches!(v, Verdict::Fails(_)));
    /// One way the jobs it needs may end, evaluated.
    enum Case {
        Known(bool),
        /// The result turned on what only the run knows.
        Unknown,
        Error(String),
    }
    let eval = |needs: Needs| {
        let ctx = PartlyKnown {
            known: PlanContext {
                github,
                inputs,
                needs,
            },
            read_unknown: std::cell::Cell::new(false),
        };
        let r = firebreak_expr::evaluate(&expr, &ctx);
        match r {
            _ if ctx.read_unknown.get() => Case::Unknown,
            Ok(v) => Case::Known(v.is_truthy()),
            Err(e) => Case::Error(e.to_string()),
        }
    };
    let cases: Vec<Needs> = if failed {
        vec![Needs::Failed]
    } else if verdicts.contains(&Verdict::Skipped) {
        vec![Needs::Skipped]
    } else if needs.is_empty() {
        vec![Needs::Ok]
    } else {
        // How the jobs it needs end is the run's to know: decided only when it does not
        // matter (a `failure()` would also see a cancelled run, which the plan leaves out).
        vec![Needs::Ok, Needs::Failed]
    };
    let results: Vec<Case> = cases.into_iter().map(eval).collect();
    // An error whatever the jobs it needs do: the job fails when it comes to run.
    if let Some(Case::Error(e)) = results.first() {
        if results.iter().all(|c| matches!(c, Case::Error(_))) {
            return Verdict::Fails(e.clone());
        }
    }
    let known: Option<Vec<bool>> = results
        .iter()
        .map(|c| match c {
            Case::Known(b) => Some(*b),
            _ => None,
        })
        .collect();
    match known.as_deref() {
        Some(rs) if rs.iter().all(|r| *r) => Verdict::Runs,
        Some(rs) if rs.iter().all(|r| !r) => Verdict::Skipped,
        // The default `success()`: it runs when the jobs it needs succeed, if they run.
        Some([true, false]) if !verdicts.contains(&Verdict::Undecided) => Verdict::Runs,
        _ => Verdict::Undecided,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn github(event: &str) -> Value {
        Value::from_json(&serde_json::json!({"event_name": event, "ref": "refs/heads/main"}))
    }

    fn one(cond: &str, needs: &[&str], decided: &[(&str, Verdict)], event: &str) -> Verdict {
        let needs: Vec<String> = needs.iter().map(|s| s.to_string()).collect();
        let decided: HashMap<String, Verdict> = decided
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        decide_one(cond, &needs, &decided, &github(event), &Value::Null)
    }

    #[test]
    fn a_job_without_needs_is_decided_by_the_event() {
        let cond = "success() && (github.event_name == 'pull_request')";
        assert_eq!(one(cond, &[], &[], "push"), Verdict::Skipped);
        assert_eq!(one(cond, &[], &[], "pull_request"), Verdict::Runs);
        assert_eq!(
            one("success() && (false)", &[], &[], "push"),
            Verdict::Skipped
        );
        assert_eq!(one("success()", &[], &[], "push"), Verdict::Runs);
    }

    #[test]
    fn what_the_plan_cannot_know_stays_undecided() {
        assert_eq!(
            one("success() && (vars.DEPLOY == 'yes')", &[], &[], "push"),
            Verdict::Undecided
        );
        assert_eq!(
            one(
                "success() && (needs.a.outputs.go == 'true')",
                &["a"],
                &[("a", Verdict::Runs)],
                "push"
            ),
            Verdict::Undecided
        );
        // Whether `a` fails is the run's to know.
        assert_eq!(
            one("failure()", &["a"], &[("a", Verdict::Runs)], "push"),
            Verdict::Undecided
        );
    }

    #[test]
    fn a_condition_that_cannot_be_evaluated_fails_the_job_and_its_dependents_see_it() {
        let Verdict::Fails(e) = one("fromJSON('{')", &[], &[], "push") else {
            panic!("not a failure");
        };
        assert!(e.contains("fromJson"), "{e}");
        let failed = [("a", Verdict::Fails("x".into()))];
        assert_eq!(one("success()", &["a"], &failed, "push"), Verdict::Skipped);
        assert_eq!(one("failure()", &["a"], &failed, "push"), Verdict::Runs);
        // An error only in one of the cases the run decides between is the run's to show.
        assert_eq!(
            one(
                "failure() || fromJSON('{')",
                &["a"],
                &[("a", Verdict::Runs)],
                "push"
            ),
            Verdict::Undecided
        );
    }

    /// What only the run knows does not matter where the condition never reaches it: after
    /// a skipped need the implicit `success()` is false before `needs` is read.
    /// A failure two jobs back is seen as the run sees it: through every job before.
    #[test]
    fn status_functions_see_every_job_before_not_only_the_needed_ones() {
        let plan = |src: &str| {
            let wf = firebreak_workflow::parse_workflow("w.yml", src)
                .into_result()
                .expect("valid");
            let ev = firebreak_workflow::plan::Event {
                name: "push".into(),
                payload: serde_json::json!({}),
                changed_files: None,
            };
            let p = firebreak_workflow::plan::plan(&[("w.yml", std::sync::Arc::new(wf))], &ev);
            decide(&p.workflows[0], &github("push"), &Value::Null)
        };
        let job = |id: &str, extra: &str| {
            format!("  {id}:\n{extra}    runs-on: x\n    steps: [{{run: a}}]\n")
        };
        let v = plan(&format!(
            "on: push\njobs:\n{}{}{}",
            job("a", "    if: fromJSON('{')\n"),
            job("b", "    needs: a\n    if: always()\n"),
            job("c", "    needs: b\n"),
        ));
        assert_eq!(v["b"], Verdict::Runs);
        assert_eq!(v["c"], Verdict::Skipped);
        let v = plan(&format!(
            "on: push\njobs:\n{}{}{}",
            job("a", "    if: fromJSON('{')\n"),
            job("b", "    needs: a\n"),
            job("c", "    needs: b\n    if: failure()\n"),
        ));
        assert_eq!(v["b"], Verdict::Skipped);
        assert_eq!(v["c"], Verdict::Runs);
    }

    #[test]
    fn a_condition_is_decided_when_what_it_cannot_know_is_never_read() {
        let skipped = [("a", Verdict::Skipped)];
        let cond = "success() && (needs.a.result == 'skipped')";
        assert_eq!(one(cond, &["a"], &skipped, "push"), Verdict::Skipped);
        // Read: undecided.
        let cond = "always() && (needs.a.result == 'skipped')";
        assert_eq!(one(cond, &["a"], &skipped, "push"), Verdict::Undecided);
        assert_eq!(
            one(
                "vars.X == 'y' || github.event_name == 'push'",
                &[],
                &[],
                "push"
            ),
            Verdict::Undecided
        );
        assert_eq!(
            one(
                "github.event_name == 'push' || vars.X == 'y'",
                &[],
                &[],
                "push"
            ),
            Verdict::Runs
        );
    }

    #[test]
    fn a_skipped_need_skips_the_job_unless_it_asks_for_always() {
        let skipped = [("a", Verdict::Skipped)];
        assert_eq!(one("success()", &["a"], &skipped, "push"), Verdict::Skipped);
        assert_eq!(one("always()", &["a"], &skipped, "push"), Verdict::Runs);
        assert_eq!(one("failure()", &["a"], &skipped, "push"), Verdict::Skipped);
        // After a job that runs, `success()` holds if it succeeds: the job runs when it does.
        assert_eq!(
            one("success()", &["a"], &[("a", Verdict::Runs)], "push"),
            Verdict::Runs
        );
        assert_eq!(
            one("success()", &["a"], &[("a", Verdict::Undecided)], "push"),
            Verdict::Undecided
        );
        // False whatever `a` does.
        assert_eq!(
            one(
                "success() && (github.event_name == 'x')",
                &["a"],
                &[("a", Verdict::Runs)],
                "push"
            ),
            Verdict::Skipped
        );
    }
}
