//! `firebreak plan`: which workflows an event triggers and the jobs they would run, in order,
//! with their matrix values. Nothing is executed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use firebreak_expr::Value;
use firebreak_workflow::plan::{Event, JobPlan, MatrixPlan, Plan, WorkflowPlan};

use crate::discover::{read_workflows, repo_root};
use crate::gitinfo::{default_actor, git_state, local_repository, synthesize_payload};
use crate::jobif::{self, Verdict};
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
    /// The ref the synthesised event is for: `refs/heads/NAME`, `refs/tags/NAME`, or a branch
    /// name. Default: HEAD's branch; at a detached HEAD, a tag or branch pointing at it.
    #[arg(long = "ref", value_name = "REF", conflicts_with = "event_file")]
    git_ref: Option<String>,
    /// Files the event changed, for `paths` filters (repeatable). Default: with `--event-file`,
    /// the payload's push (`before..after` when the repository has both, else its commits'
    /// file lists) or pull request (`base.sha...head.sha`); otherwise the files changed by
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
    // An invalid workflow does not stop the others: GitHub runs the valid ones and fails
    // only the runs of the invalid one.
    let mut parsed = Vec::new();
    let mut invalid = Vec::new();
    for f in &files {
        let p = f.parse(&root, &f.display).parsed;
        for d in &p.diagnostics {
            eprintln!("{}", crate::discover::diagnostic_line(&f.display, d, false));
        }
        match p.workflow {
            Some(w) if p.diagnostics.is_empty() => parsed.push((f.display.clone(), Arc::new(w))),
            _ => invalid.push(Invalid {
                path: f.display.clone(),
                errors: p.diagnostics,
            }),
        }
    }

    let mut gs = git_state(&root);
    if let Some(r) = &args.git_ref {
        crate::gitinfo::set_ref(&root, &mut gs, r);
    }
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
    let changed_files = crate::gitinfo::event_changed_files(
        &root,
        &gs,
        &args.event,
        args.event_file.is_some().then_some(&payload),
        &args.changed_files,
    );
    let event = Event {
        name: args.event.clone(),
        payload,
        changed_files,
    };
    let mut plan = firebreak_workflow::plan::plan(&parsed, &event);
    crate::events::note_unchecked_types(&plan, &event);
    plan.skip_ci = plan.skip_ci.or_else(|| {
        crate::gitinfo::pull_request_skip_instruction(&root, &event.name, &event.payload)
    });
    let repository = event
        .payload
        .pointer("/repository/full_name")
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .or(gs.repository.clone())
        .unwrap_or_else(|| local_repository(&root));
    let given = crate::inputs::given(&event.payload, &indexmap::IndexMap::new());
    let (git_ref, sha) = crate::gitinfo::run_ref_and_sha(&root, &gs, &event.name, &event.payload);
    let verdicts = settle(&mut plan, &event, &repository, &given, (&git_ref, &sha));

    match args.format {
        Format::Json => {
            let doc = json_doc(&plan, &verdicts, &invalid)?;
            crate::outln!("{}", serde_json::to_string_pretty(&doc)?)?
        }
        Format::Text => print_text(&plan, &verdicts)?,
    }
    if !invalid.is_empty() {
        eprintln!(
            "{}: {} (errors above): GitHub would fail its runs and run the others",
            style::error_label(),
            match invalid.as_slice() {
                [one] => format!("{} is invalid", style::printable(&one.path)),
                many => format!("{} workflow files are invalid", many.len()),
            }
        );
    }
    // A workflow that triggers but cannot be planned (a matrix over 256 legs, a `needs`
    // cycle through a called workflow…) would fail its run: the plan is invalid too.
    Ok(
        if !invalid.is_empty() || plan.workflows.iter().any(|w| !w.errors.is_empty()) {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        },
    )
}

/// Settles in each triggered workflow of `plan` what the event already decides, with the
/// values the run will see: the `inputs` context (declared inputs with their defaults and
/// types, over them the `given` ones) and `github` (whose `event.inputs` a dispatch fills
/// in as GitHub's payload does). Matrices built from them are expanded, each job's `if:` is
/// decided where it can be (the verdicts returned, one map per workflow), and a dispatch
/// GitHub would refuse (an undeclared input, a required one missing, a choice outside its
/// options…) becomes the workflow's error.
pub fn settle(
    plan: &mut Plan,
    event: &Event,
    repository: &str,
    given: &indexmap::IndexMap<String, String>,
    (git_ref, sha): (&str, &str),
) -> Vec<HashMap<String, Verdict>> {
    let dispatch = event.name == "workflow_dispatch";
    // GitHub dispatches one workflow at a time: inputs meant for one of several are not
    // "unexpected" in the others.
    let single = plan.workflows.len() == 1;
    plan.workflows
        .iter_mut()
        .map(|wf| {
            let inputs = crate::inputs::workflow_inputs(&wf.workflow, &event.name, given);
            let mut payload = event.payload.clone();
            if event.name == "schedule" {
                crate::events::fill_schedule(&mut payload, &wf.workflow);
            }
            if dispatch {
                crate::inputs::dispatch_event_inputs(&mut payload, &inputs);
                let refused = crate::inputs::dispatch_input_errors(&wf.workflow, given, single);
                if !refused.is_empty() {
                    wf.errors.push(format!(
                        "GitHub would refuse this dispatch: {}",
                        refused.join("; ")
                    ));
                }
            }
            let mut facts = firebreak_runner::context::RunFacts::new(
                &event.name,
                payload,
                repository,
                "",
                "",
                "",
            );
            facts.workflow = wf.name.clone();
            facts.git_ref = Some(git_ref.to_string());
            facts.sha = Some(sha.to_string());
            facts.workflow_path = Some(wf.path.clone());
            let github = Value::from_json(&firebreak_runner::context::github_context(&facts));
            // Matrices built from the event (`fromJSON(inputs.oses)`) are known now too.
            let known = jobif::event_context(&github, &inputs);
            firebreak_workflow::plan::resolve_deferred(wf, &jobif::KNOWN_CONTEXTS, &known);
            // Names such as `Build ${{ matrix.os }}`, as the run will show them.
            firebreak_workflow::plan::resolve_names(wf, &jobif::KNOWN_CONTEXTS, &known);
            settle_called(wf, &github, &inputs);
            jobif::decide(wf, &github, &inputs)
        })
        .collect()
}

/// Settles the workflows that `wf`'s jobs call as far as each caller's `with:` allows: when
/// it (and the defaults of the inputs it leaves out) reads only what the event settles
/// (`github`, the caller's own `inputs`), the called workflow's inputs are known now, and with
/// them its matrices and job names built from them, as the run will expand them.
fn settle_called(wf: &mut WorkflowPlan, github: &Value, inputs: &Value) {
    let settled = |t: &firebreak_workflow::Token| {
        firebreak_workflow::plan::contexts_of(t)
            .iter()
            .all(|c| jobif::KNOWN_CONTEXTS.contains(&c.as_str()))
    };
    let caller = jobif::event_context(github, inputs);
    for jp in &mut wf.jobs {
        let (Some(called), firebreak_workflow::JobKind::Reusable(r)) =
            (jp.called.as_deref_mut(), &jp.job.kind)
        else {
            continue;
        };
        let with = match &r.with {
            None => indexmap::IndexMap::new(),
            Some(t) if settled(t) => match t.evaluate_merged(&caller) {
                Ok(Value::Object(m)) => m,
                Ok(Value::Null) => indexmap::IndexMap::new(),
                // The run fails the job, saying why.
                _ => continue,
            },
            Some(_) => continue,
        };
        let declared = called
            .workflow
            .on
            .get("workflow_call")
            .map(|c| c.inputs.clone())
            .unwrap_or_default();
        let defaults_settled = declared.iter().all(|(k, d)| {
            with.keys().any(|w| w.eq_ignore_ascii_case(k)) || d.default.as_ref().is_none_or(settled)
        });
        if !defaults_settled {
            continue;
        }
        let Ok(called_inputs) =
            firebreak_runner::executor::reusable::called_inputs(&declared, &with, &|t| {
                t.evaluate_merged(&caller).map_err(|e| e.to_string())
            })
        else {
            continue;
        };
        let called_inputs = Value::Object(called_inputs);
        let known = jobif::event_context(github, &called_inputs);
        firebreak_workflow::plan::resolve_deferred(called, &jobif::KNOWN_CONTEXTS, &known);
        firebreak_workflow::plan::resolve_names(called, &jobif::KNOWN_CONTEXTS, &known);
        settle_called(called, github, &called_inputs);
    }
}

/// The plan as `--format json` prints it: the plan, each job's `"if_result"`, and the
/// workflow files left out for their errors under `"invalid"`.
pub fn json_doc(
    plan: &Plan,
    verdicts: &[HashMap<String, Verdict>],
    invalid: &[Invalid],
) -> Result<serde_json::Value> {
    let mut doc = serde_json::to_value(plan)?;
    add_verdicts(&mut doc, verdicts);
    if let Some(obj) = doc.as_object_mut() {
        obj.insert("invalid".into(), serde_json::to_value(invalid)?);
    }
    Ok(doc)
}

/// A workflow file left out of the plan for its errors.
#[derive(serde::Serialize)]
pub struct Invalid {
    pub path: String,
    pub errors: Vec<firebreak_workflow::Diagnostic>,
}

/// Adds each job's `"if_result"` (`runs`, `skipped`, `undecided`) to the plan's JSON.
fn add_verdicts(doc: &mut serde_json::Value, verdicts: &[HashMap<String, Verdict>]) {
    let Some(wfs) = doc.get_mut("workflows").and_then(|w| w.as_array_mut()) else {
        return;
    };
    for (wf, v) in wfs.iter_mut().zip(verdicts) {
        let Some(jobs) = wf.get_mut("jobs").and_then(|j| j.as_array_mut()) else {
            continue;
        };
        for job in jobs {
            let id = job["id"].as_str().unwrap_or_default().to_ascii_lowercase();
            let verdict = v.get(&id).cloned().unwrap_or(Verdict::Undecided);
            if let Some(o) = job.as_object_mut() {
                o.insert("if_result".into(), verdict.as_str().into());
                if let Verdict::Fails(e) = verdict {
                    o.insert("if_error".into(), e.into());
                }
            }
        }
    }
}

fn print_text(plan: &Plan, verdicts: &[HashMap<String, Verdict>]) -> std::io::Result<()> {
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
    for (wi, wf) in plan.workflows.iter().enumerate() {
        crate::outln!(
            "{} {}",
            style::bold(&style::printable(&wf.name)),
            style::dim(&format!("({})", style::printable(&wf.path)))
        )?;
        let mut rows = Vec::new();
        job_rows(&wf.jobs, "", verdicts.get(wi), &mut rows);
        let header = ["stage", "job", "needs", "if"];
        // Columns as a terminal shows them: a CJK character or an emoji takes two, a
        // combining accent none.
        let width = unicode_width::UnicodeWidthStr::width;
        let widths: Vec<usize> = (0..4)
            .map(|c| {
                rows.iter()
                    .map(|r| width(r[c].as_str()))
                    .chain([header[c].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: [&str; 4]| {
            let mut s = String::from("  ");
            for (c, cell) in cells.iter().enumerate() {
                s.push_str(cell);
                if c < 3 {
                    s.push_str(&" ".repeat(widths[c].saturating_sub(width(cell)) + 2));
                }
            }
            s
        };
        crate::outln!("{}", style::dim(&line(header)))?;
        for r in &rows {
            crate::outln!("{}", line([&r[0], &r[1], &r[2], &r[3]]))?;
        }
        for e in &wf.errors {
            crate::outln!("  {}: {}", style::red("error"), style::printable(e))?;
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

/// The table rows of `jobs` (stage, job, needs, if), one per matrix leg; the jobs of a called
/// workflow follow each leg of the job that calls it, as `caller / called` the way GitHub
/// names them, with the stage left to the caller's row.
fn job_rows(
    jobs: &[JobPlan],
    prefix: &str,
    top: Option<&HashMap<String, Verdict>>,
    rows: &mut Vec<[String; 4]>,
) {
    for job in jobs {
        let top_verdict = top.map(|v| {
            v.get(&job.id.to_ascii_lowercase())
                .cloned()
                .unwrap_or(Verdict::Undecided)
        });
        let cond = match &top_verdict {
            Some(Verdict::Skipped) => format!("{}  → skipped", job.if_condition),
            Some(Verdict::Fails(e)) => format!("{}  → fails: {e}", job.if_condition),
            _ => job.if_condition.clone(),
        };
        let needs = if job.needs.is_empty() {
            "-".to_string()
        } else {
            job.needs.join(", ")
        };
        let shown = job.display_name.as_deref().unwrap_or(&job.id);
        let legs: Vec<String> = match &job.matrix {
            MatrixPlan::None => vec![shown.to_string()],
            // What `include` added to a combination is not in its name: shown beside it.
            MatrixPlan::Legs { legs } => legs.iter().map(|l| l.label()).collect(),
            MatrixPlan::Deferred { contexts } => {
                vec![format!(
                    "{shown} (matrix decided at run time from {})",
                    if contexts.is_empty() {
                        "its expression".to_string()
                    } else {
                        contexts.join(", ")
                    }
                )]
            }
            MatrixPlan::Invalid { error } => {
                // The run fails the job with it (GitHub evaluates a job's strategy as the job
                // starts).
                vec![format!("{shown}  → fails: {error}")]
            }
        };
        let layer = if top.is_some() {
            (job.layer + 1).to_string()
        } else {
            String::new()
        };
        for (i, leg) in legs.iter().enumerate() {
            let name = format!("{prefix}{leg}");
            rows.push(if i == 0 {
                [
                    layer.clone(),
                    style::printable(&name).into_owned(),
                    style::printable(&needs).into_owned(),
                    style::printable(&cond).into_owned(),
                ]
            } else {
                [
                    String::new(),
                    style::printable(&name).into_owned(),
                    String::new(),
                    String::new(),
                ]
            });
            let runs = !matches!(top_verdict, Some(Verdict::Skipped | Verdict::Fails(_)));
            if let (Some(called), true) = (&job.called, runs) {
                job_rows(&called.jobs, &format!("{name} / "), None, rows);
            }
        }
    }
}
