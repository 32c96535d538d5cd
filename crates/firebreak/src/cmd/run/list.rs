//! `firebreak run --list` / `--dry-run`: what the run would do, with the same job and matrix
//! selection (`-j`, `--matrix`) a real run applies, and nothing executed.

use std::collections::HashMap;
use std::process::ExitCode;

use anyhow::Result;
use firebreak_runner::executor::{leg_matches, selected_jobs};
use firebreak_workflow::plan::{MatrixPlan, Plan, WorkflowPlan};

use crate::style;

/// Keeps the jobs a run would start for `only` (the `-j` names this workflow has) and the
/// jobs they need, with the executor's own selection.
pub fn select_jobs(w: &mut WorkflowPlan, only: &[String]) {
    let Ok(keep) = selected_jobs(w, only) else {
        return;
    };
    let kept = |id: &str| keep.contains(&id.to_ascii_lowercase());
    w.jobs.retain(|j| kept(&j.id));
    for layer in &mut w.layers {
        layer.retain(|id| kept(id));
    }
    w.layers.retain(|l| !l.is_empty());
}

/// Keeps the matrix legs a run would start for `filter` (`--matrix KEY:VALUE`), with the
/// executor's own test.
pub fn select_legs(w: &mut WorkflowPlan, filter: &[(String, String)]) {
    if filter.is_empty() {
        return;
    }
    for j in &mut w.jobs {
        if let MatrixPlan::Legs { legs } = &mut j.matrix {
            legs.retain(|l| match firebreak_expr::Value::from_json(&l.matrix) {
                firebreak_expr::Value::Object(m) => leg_matches(&m, filter),
                _ => true,
            });
        }
    }
}

/// Prints the (already selected and settled) plan: as text, or as `firebreak plan --format
/// json` does, with the `if:` verdicts of [`crate::cmd::plan::settle`]. Exit 2 when a
/// workflow could not be planned, as a run would.
pub fn print(
    p: &Plan,
    dry: bool,
    json: bool,
    verdicts: &[HashMap<String, crate::jobif::Verdict>],
) -> Result<ExitCode> {
    let code = if p.workflows.iter().any(|w| !w.errors.is_empty()) {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    };
    if json {
        let doc = crate::cmd::plan::json_doc(p, verdicts, &[])?;
        crate::outln!("{}", serde_json::to_string(&doc)?)?;
        return Ok(code);
    }
    if p.workflows.is_empty() {
        crate::outln!("no workflow runs on '{}'", p.event)?;
    }
    for (wi, w) in p.workflows.iter().enumerate() {
        crate::outln!("{} ({})", style::bold(&w.name), w.path)?;
        for e in &w.errors {
            crate::outln!("  {}: {e}", style::red("error"))?;
        }
        for (i, layer) in w.layers.iter().enumerate() {
            for id in layer {
                let Some(j) = w.jobs.iter().find(|j| &j.id == id) else {
                    continue;
                };
                let needs = if j.needs.is_empty() {
                    String::new()
                } else {
                    format!("  needs: {}", j.needs.join(", "))
                };
                // The id is what `-j` takes; the name is what the run shows.
                let name = match j.display_name.as_deref() {
                    Some(n) if n != j.id => format!(" \"{}\"", style::printable(n)),
                    _ => String::new(),
                };
                // The `if:` decided from the event, as `firebreak plan` decides it.
                let decided = match verdicts
                    .get(wi)
                    .and_then(|v| v.get(&j.id.to_ascii_lowercase()))
                {
                    Some(crate::jobif::Verdict::Skipped) => {
                        format!("  → skipped (if: {})", j.if_condition)
                    }
                    Some(crate::jobif::Verdict::Fails(e)) => format!("  → fails: {e}"),
                    _ => String::new(),
                };
                crate::outln!(
                    "  [{i}] {}{name}{}{}",
                    j.id,
                    style::dim(&needs),
                    style::dim(&style::printable(&decided))
                )?;
                match &j.matrix {
                    MatrixPlan::Legs { legs } if legs.is_empty() => {
                        crate::outln!("        - no matrix leg matches --matrix: skipped")?
                    }
                    MatrixPlan::Legs { legs } => {
                        for l in legs {
                            crate::outln!("        - {}", l.label())?;
                        }
                    }
                    MatrixPlan::Deferred { contexts } => crate::outln!(
                        "        - matrix evaluated at run time (reads {})",
                        contexts.join(", ")
                    )?,
                    MatrixPlan::Invalid { error } => crate::outln!("        → fails: {error}")?,
                    MatrixPlan::None => {}
                }
                if dry {
                    if j.if_condition != "success()" {
                        crate::outln!("        if: {}", j.if_condition)?;
                    }
                    for s in j.job.steps() {
                        let name =
                            s.name
                                .as_ref()
                                .map(|n| n.literal_display())
                                .unwrap_or_else(|| {
                                    firebreak_runner::executor::job::default_step_name(s)
                                });
                        crate::outln!("        · {name}")?;
                    }
                }
            }
        }
    }
    Ok(code)
}
