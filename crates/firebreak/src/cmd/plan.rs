//! `firebreak plan`: which workflows an event triggers and the jobs they would run, in order,
//! with their matrix values. Nothing is executed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use firebreak_workflow::plan::{Event, MatrixPlan, Plan};

use crate::discover::{parse_with_local_calls, read_workflows, repo_root};
use crate::gitinfo::{default_actor, git_state, local_repository, synthesize_payload};
use crate::{style, Format};

#[derive(clap::Args)]
pub struct PlanArgs {
    /// A repository, its `.github/workflows` folder or one workflow file (default: `.`).
    path: Option<PathBuf>,
    /// The event to plan for (`push`, `pull_request`, `workflow_dispatch`, …).
    #[arg(long, short = 'e', default_value = "push")]
    event: String,
    /// The event's webhook payload (JSON). Default: one synthesised from the repository's HEAD.
    #[arg(long)]
    event_file: Option<PathBuf>,
    /// Files the event changed, for `paths` filters (repeatable). Default: the files changed by
    /// HEAD's commit when the repository is a git checkout, else unknown (path filters pass).
    #[arg(long = "changed-file", value_name = "PATH")]
    changed_files: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

pub fn run(args: &PlanArgs) -> Result<ExitCode> {
    let path = args.path.clone().unwrap_or_else(|| PathBuf::from("."));
    if let Err(msg) = crate::events::check_event_name(&args.event) {
        eprintln!("{}: {msg}", style::error_label());
        return Ok(ExitCode::from(2));
    }
    let files = read_workflows(std::slice::from_ref(&path)).all()?;
    let root = repo_root(&path);
    let mut parsed = Vec::new();
    let mut invalid = false;
    for f in &files {
        let p = parse_with_local_calls(&root, &f.display, &f.source).parsed;
        for d in &p.diagnostics {
            eprintln!("{d}");
        }
        match p.workflow {
            Some(w) if p.diagnostics.is_empty() => parsed.push((f.display.clone(), Arc::new(w))),
            _ => invalid = true,
        }
    }
    if invalid {
        eprintln!(
            "{}: fix the workflow errors above, then plan again",
            style::error_label()
        );
        return Ok(ExitCode::from(1));
    }

    let gs = git_state(&root);
    let payload = match &args.event_file {
        Some(f) => match crate::events::read_event_file(f) {
            Ok(v) => v,
            Err(msg) => {
                eprintln!("{}: {msg}", style::error_label());
                return Ok(ExitCode::from(2));
            }
        },
        None => {
            let repository = gs
                .repository
                .clone()
                .unwrap_or_else(|| local_repository(&root));
            synthesize_payload(&gs, &args.event, &repository, &default_actor(&root))
        }
    };
    let changed_files = crate::gitinfo::changed_files_for(&gs, &args.event, &args.changed_files);
    let event = Event {
        name: args.event.clone(),
        payload,
        changed_files,
    };
    let plan = firebreak_workflow::plan::plan(&parsed, &event);

    match args.format {
        Format::Json => crate::outln!("{}", serde_json::to_string_pretty(&plan)?)?,
        Format::Text => print_text(&plan)?,
    }
    // A workflow that triggers but cannot be planned (a matrix over 256 legs, a `needs`
    // cycle through a called workflow…) would fail its run: the plan is invalid too.
    Ok(if plan.workflows.iter().any(|w| !w.errors.is_empty()) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_text(plan: &Plan) -> std::io::Result<()> {
    if let Some(marker) = plan.skip_ci {
        crate::outln!(
            "{}",
            style::dim(&format!(
                "note: the head commit's message says {marker}: GitHub would start none of these runs"
            ))
        )?;
    }
    if plan.workflows.is_empty() {
        crate::outln!("No workflow runs on `{}`.", plan.event)?;
    }
    for wf in &plan.workflows {
        crate::outln!(
            "{} {}",
            style::bold(&wf.name),
            style::dim(&format!("({})", wf.path))
        )?;
        let rows: Vec<[String; 4]> = wf
            .jobs
            .iter()
            .flat_map(|job| {
                let needs = if job.needs.is_empty() {
                    "-".to_string()
                } else {
                    job.needs.join(", ")
                };
                let legs: Vec<String> = match &job.matrix {
                    MatrixPlan::None => vec![job.id.clone()],
                    MatrixPlan::Legs { legs } => legs.iter().map(|l| l.name.clone()).collect(),
                    MatrixPlan::Deferred { contexts } => {
                        vec![format!(
                            "{} (matrix decided at run time from {})",
                            job.id,
                            if contexts.is_empty() {
                                "its expression".to_string()
                            } else {
                                contexts.join(", ")
                            }
                        )]
                    }
                    MatrixPlan::Invalid { error } => {
                        vec![format!("{} (invalid matrix: {error})", job.id)]
                    }
                };
                let layer = (job.layer + 1).to_string();
                let cond = job.if_condition.clone();
                legs.into_iter().enumerate().map(move |(i, leg)| {
                    if i == 0 {
                        [layer.clone(), leg, needs.clone(), cond.clone()]
                    } else {
                        [String::new(), leg, String::new(), String::new()]
                    }
                })
            })
            .collect();
        let header = ["stage", "job", "needs", "if"];
        let widths: Vec<usize> = (0..4)
            .map(|c| {
                rows.iter()
                    .map(|r| r[c].chars().count())
                    .chain([header[c].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: [&str; 4]| {
            let mut s = String::from("  ");
            for (c, cell) in cells.iter().enumerate() {
                if c == 3 {
                    s.push_str(cell);
                } else {
                    s.push_str(&format!("{cell:<w$}  ", w = widths[c]));
                }
            }
            s
        };
        crate::outln!("{}", style::dim(&line(header)))?;
        for r in &rows {
            crate::outln!("{}", line([&r[0], &r[1], &r[2], &r[3]]))?;
        }
        for e in &wf.errors {
            crate::outln!("  {}: {e}", style::red("error"))?;
        }
    }
    for f in &plan.filtered_out {
        crate::outln!(
            "{} {}",
            style::dim(&format!("skipped {}:", f.path)),
            f.reason
        )?;
    }
    Ok(())
}
