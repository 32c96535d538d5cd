//! Planning: which workflows an event triggers, and for each the jobs to run in dependency
//! order with their matrix legs, conditions and everything else an executor needs.
//!
//! Triggering follows GitHub: the event must be listed under `on:`; `push` and
//! `pull_request`/`pull_request_target` honour their branch/tag/path filters (via
//! [`crate::filter`]); events with `types:` honour the payload's `action` (with GitHub's
//! default activity types for pull requests); `workflow_run` honours `workflows:` and branch
//! filters; `schedule` honours the payload's `schedule` cron when given. Jobs are ordered by
//! [`crate::graph`]; matrices are expanded by [`crate::matrix`] when they are literal, and
//! marked deferred when they contain `${{ }}` expressions (the executor evaluates them once the
//! contexts they read, such as `needs`, exist).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use firebreak_expr::{EmptyContext, Value};
use indexmap::IndexMap;
use serde::Serialize;

use crate::filter::{self, Filters};
use crate::graph;
use crate::matrix;
use crate::model::{EventConfig, Job, JobKind, Workflow};
use crate::token::{Token, TokenKind};

/// The event that may trigger workflows.
#[derive(Clone, Debug, Default)]
pub struct Event {
    /// Event name as in `on:` (`push`, `pull_request`, `workflow_dispatch`, …).
    pub name: String,
    /// The webhook payload (`github.event`).
    pub payload: serde_json::Value,
    /// Files changed by the event, for `paths` filters; `None` when unknown (path filters then
    /// pass).
    pub changed_files: Option<Vec<String>>,
}

/// What to run for one event.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Plan {
    pub event: String,
    /// Triggered workflows, in the order given.
    pub workflows: Vec<WorkflowPlan>,
    /// Workflows that listen to the event but whose filters excluded it, with the reason.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub filtered_out: Vec<FilteredOut>,
    /// The skip instruction (`[skip ci]`…, or a `skip-checks: true` trailer) in the head
    /// commit's message of a `push` or `pull_request`: GitHub starts none of these runs. The
    /// workflows are still planned, so that a local run can be asked for them. A pull
    /// request's payload does not carry its head commit's message: the caller that can read
    /// the repository fills it in ([`skip_instruction`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_ci: Option<&'static str>,
}

/// The instructions in a commit message that stop GitHub from starting `push` and
/// `pull_request` runs ("Skipping workflow runs" in GitHub's documentation).
pub const SKIP_CI_MARKERS: [&str; 5] = [
    "[skip ci]",
    "[ci skip]",
    "[no ci]",
    "[skip actions]",
    "[actions skip]",
];

/// The skip instruction in `message`, the head commit's message of event `event`, if GitHub
/// would start no run for it: one of [`SKIP_CI_MARKERS`] anywhere, or `skip-checks: true`
/// (or `skip-checks:true`) as the last trailer of a trailer block that two empty lines set
/// apart. Only `push` and `pull_request` are skipped so (not `pull_request_target`).
pub fn skip_instruction(event: &str, message: &str) -> Option<&'static str> {
    if !matches!(event, "push" | "pull_request") {
        return None;
    }
    if let Some(m) = SKIP_CI_MARKERS.into_iter().find(|m| message.contains(m)) {
        return Some(m);
    }
    let body = message.trim_end();
    let last = body.lines().last()?.trim_end();
    if !matches!(last, "skip-checks: true" | "skip-checks:true") {
        return None;
    }
    // The trailer block: the last lines up to the first empty one, which must be the second
    // of two empty lines.
    let lines: Vec<&str> = body.lines().collect();
    let start = lines.iter().rposition(|l| l.trim().is_empty())?;
    let two_empty = start >= 1 && lines.get(start - 1).is_some_and(|l| l.trim().is_empty());
    two_empty.then_some("skip-checks: true")
}

/// The skip instruction in the head commit's message of `event`'s payload, if GitHub would
/// skip it.
fn skip_ci(event: &Event) -> Option<&'static str> {
    let message = event
        .payload
        .pointer("/head_commit/message")
        .and_then(|m| m.as_str())?;
    skip_instruction(&event.name, message)
}

#[derive(Clone, Debug, Serialize)]
pub struct FilteredOut {
    pub path: String,
    pub reason: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct WorkflowPlan {
    pub path: String,
    /// `name:` or the path.
    pub name: String,
    /// Jobs in topological order (layer by layer, declaration order within a layer).
    pub jobs: Vec<JobPlan>,
    /// Job ids per layer: every job of a layer only needs jobs of earlier layers.
    pub layers: Vec<Vec<String>>,
    /// Problems found while planning (dependency errors, bad literal matrices).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// The workflow itself (env, defaults, permissions, concurrency, …), shared with the
    /// caller's copy rather than cloned.
    pub workflow: Arc<Workflow>,
}

#[derive(Clone, Debug, Serialize)]
pub struct JobPlan {
    pub id: String,
    /// Display name token (may be an expression using `matrix`).
    pub name: Token,
    /// The name GitHub shows for the job: its literal `name:`, or one that is an expression
    /// evaluated when planning ([`resolve_names`]) for a job without a matrix; `None` when it
    /// has no name (the id is shown) or the name is known only at run time.
    #[serde(rename = "display-name", skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Layer index in [`WorkflowPlan::layers`].
    pub layer: usize,
    pub needs: Vec<String>,
    /// Final `if:` condition (e.g. `success()` or `success() && (…)`).
    #[serde(rename = "if")]
    pub if_condition: String,
    pub matrix: MatrixPlan,
    /// `strategy.fail-fast` (default `true`), evaluated when it is an expression the plan
    /// can decide ([`strategy_settings`]).
    #[serde(rename = "fail-fast")]
    pub fail_fast: bool,
    /// `strategy.max-parallel`, likewise.
    #[serde(rename = "max-parallel", skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<u64>,
    /// When `fail-fast` or `max-parallel` (or the whole `strategy`) is an expression reading
    /// contexts only the run knows: those contexts; the two fields above are then the
    /// defaults, not what the run will use.
    #[serde(
        rename = "strategy-decided-at-run-time",
        skip_serializing_if = "Option::is_none"
    )]
    pub strategy_deferred: Option<Vec<String>>,
    /// For a reusable-workflow job whose workflow was supplied to the parser: the called
    /// workflow's own plan (its jobs run as part of this job).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub called: Option<Box<WorkflowPlan>>,
    /// The job as parsed (steps, runs-on, env, container, services, outputs, …), shared with
    /// [`WorkflowPlan::workflow`]'s `jobs` rather than cloned.
    pub job: Arc<Job>,
}

/// How the job fans out.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum MatrixPlan {
    /// No matrix: one run with an empty `matrix` context.
    None,
    /// Literal matrix expanded at plan time: the `matrix` context of every leg, with its name.
    Legs { legs: Vec<MatrixLeg> },
    /// The matrix contains expressions; the executor evaluates `strategy` (contexts listed)
    /// and expands it with [`crate::matrix::expand`].
    Deferred { contexts: Vec<String> },
    /// The matrix (or the strategy) cannot be used: a literal one that does not expand, the
    /// workflow's error; one an expression got wrong, the job's, which the run fails with
    /// this message (as GitHub reports it).
    Invalid { error: String },
}

#[derive(Clone, Debug, Serialize)]
pub struct MatrixLeg {
    /// GitHub's display name of the leg, e.g. `build (ubuntu, 18)`.
    pub name: String,
    /// The leg's `matrix` context.
    pub matrix: serde_json::Value,
    /// How many leading entries of `matrix` its name shows (GitHub names a cross-product leg
    /// by its vector values only; what `include` adds to it is in `matrix` alone).
    #[serde(skip)]
    pub named: usize,
}

impl MatrixLeg {
    /// The leg's name, followed by the values it does not show (`build (a, 1)  + color:
    /// pink`): how a plan lists it.
    pub fn label(&self) -> String {
        match self.unnamed_values() {
            extra if extra.is_empty() => self.name.clone(),
            extra => format!("{}  + {}", self.name, extra.join(", ")),
        }
    }

    /// The `matrix` values the leg's name does not show, as `key: value` (what `include`
    /// added to a combination).
    pub fn unnamed_values(&self) -> Vec<String> {
        self.matrix
            .as_object()
            .map(|m| {
                m.iter()
                    .skip(self.named)
                    .map(|(k, v)| match v {
                        serde_json::Value::String(s) => format!("{k}: {s}"),
                        other => format!("{k}: {other}"),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Plans `event` against `workflows` (`(path, workflow)` pairs, already parsed).
///
/// The plan shares the workflows and their jobs ([`WorkflowPlan::workflow`],
/// [`JobPlan::job`]) instead of copying them; wrap a parsed workflow with `Arc::new` once.
pub fn plan<P: AsRef<std::path::Path>>(workflows: &[(P, Arc<Workflow>)], event: &Event) -> Plan {
    let mut out = Plan {
        event: event.name.clone(),
        workflows: Vec::new(),
        filtered_out: Vec::new(),
        skip_ci: skip_ci(event),
    };
    for (path, wf) in workflows {
        let path = path.as_ref().display().to_string();
        let path = path.as_str();
        let Some(config) = wf.on.get(&event.name) else {
            continue;
        };
        // What GitHub's parser accepts (`check` warns) and GitHub.com refuses: the run fails.
        // Filters that contradict each other fail it whatever the event's ref and paths.
        let conflict = conflicting_filters(&event.name, config)
            .or_else(|| malformed_pattern(config))
            .or_else(|| {
                (event.name == "workflow_run" && config.workflows.is_none())
                    .then(|| crate::convert::WORKFLOW_RUN_WITHOUT_WORKFLOWS.to_string())
            });
        if conflict.is_none() {
            if let Err(reason) = triggers(&event.name, config, event) {
                out.filtered_out.push(FilteredOut {
                    path: path.to_string(),
                    reason,
                });
                continue;
            }
        }
        let refused = crate::refusals::refusals(wf)
            .into_iter()
            .map(|r| format!("line {}: {}", r.pos.line, r.message));
        let mut wp = plan_workflow(path, wf);
        wp.errors.splice(0..0, conflict.into_iter().chain(refused));
        out.workflows.push(wp);
    }
    out
}

/// The ref and path filters of an event configuration, borrowed.
fn ref_filter(c: &EventConfig) -> Filters<'_> {
    Filters {
        branches: c.branches.as_deref(),
        branches_ignore: c.branches_ignore.as_deref(),
        tags: c.tags.as_deref(),
        tags_ignore: c.tags_ignore.as_deref(),
        paths: c.paths.as_deref(),
        paths_ignore: c.paths_ignore.as_deref(),
    }
}

/// An event configuration's ref filters alone.
fn without_paths(c: &EventConfig) -> Filters<'_> {
    Filters {
        paths: None,
        paths_ignore: None,
        ..ref_filter(c)
    }
}

/// Why an event whose ref passes did not pass `paths`/`paths-ignore`, naming the files.
fn paths_refusal(event: &str, files: Option<&[String]>) -> String {
    match files.unwrap_or_default() {
        [] => format!("no changed files to pass the {event} paths filters"),
        files => {
            let shown: Vec<&str> = files.iter().take(5).map(String::as_str).collect();
            let more = files.len().saturating_sub(shown.len());
            format!(
                "no changed file passes the {event} paths filters (changed: {}{})",
                shown.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            )
        }
    }
}

fn payload_str<'a>(payload: &'a serde_json::Value, pointer: &str) -> Option<&'a str> {
    payload.pointer(pointer).and_then(|v| v.as_str())
}

/// Default activity types GitHub uses when `types:` is omitted.
fn default_types(event: &str) -> Option<&'static [&'static str]> {
    match event {
        "pull_request" | "pull_request_target" => Some(&["opened", "synchronize", "reopened"]),
        _ => None,
    }
}

/// The error GitHub.com gives a run of event `name` whose configuration sets a filter and its
/// `-ignore` form together, which its parser accepts but its trigger refuses.
fn conflicting_filters(name: &str, c: &EventConfig) -> Option<String> {
    let branches = (
        "branches",
        c.branches.is_some() && c.branches_ignore.is_some(),
    );
    let tags = ("tags", c.tags.is_some() && c.tags_ignore.is_some());
    let paths = ("paths", c.paths.is_some() && c.paths_ignore.is_some());
    let pairs: &[(&str, bool)] = match name {
        "push" => &[branches, tags, paths],
        "pull_request" | "pull_request_target" => &[branches, paths],
        "workflow_run" => &[branches],
        _ => &[],
    };
    let (key, _) = pairs.iter().find(|(_, both)| *both)?;
    Some(format!(
        "`{key}` and `{key}-ignore` both filter `{name}`: GitHub fails this workflow's run \
         (you may only define one of them for an event; list the exclusions in `{key}` as `!` patterns)"
    ))
}

/// The error GitHub.com gives a run whose event configuration has a filter pattern that does
/// not compile (its parser accepts any string; `check` warns).
fn malformed_pattern(c: &EventConfig) -> Option<String> {
    let lists = [
        &c.branches,
        &c.branches_ignore,
        &c.tags,
        &c.tags_ignore,
        &c.paths,
        &c.paths_ignore,
        &c.workflows,
    ];
    lists
        .into_iter()
        .flatten()
        .flatten()
        .find_map(|p| filter::validate_pattern(p).err())
        .map(|e| {
            format!(
                "{e}: GitHub fails this workflow's run; fix or escape the pattern (`\\[`, `\\+`)"
            )
        })
}

/// The only activity type of events that GitHub triggers for one alone, whatever `types:`
/// says ("Events that trigger workflows").
fn only_supported_type(event: &str) -> Option<&'static str> {
    match event {
        "check_suite" => Some("completed"),
        "merge_group" => Some("checks_requested"),
        "watch" => Some("started"),
        _ => None,
    }
}

/// Why GitHub starts no workflow at all for this occurrence of the event, whatever the
/// workflow's configuration says ("Events that trigger workflows"), if it does not.
fn never_triggers(name: &str, payload: &serde_json::Value) -> Option<String> {
    let action = payload_str(payload, "/action");
    if let (Some(only), Some(action)) = (only_supported_type(name), action) {
        if action != only {
            return Some(format!(
                "GitHub triggers workflows only for the '{only}' activity of {name}, not '{action}'"
            ));
        }
    }
    let is_true = |pointer: &str| payload.pointer(pointer) == Some(&serde_json::Value::Bool(true));
    match name {
        "release"
            if is_true("/release/draft")
                && matches!(action, Some("created" | "edited" | "deleted")) =>
        {
            Some(format!(
                "GitHub triggers no workflow for the '{}' activity of a draft release",
                action.unwrap_or_default()
            ))
        }
        "deployment_status"
            if payload_str(payload, "/deployment_status/state") == Some("inactive") =>
        {
            Some("GitHub triggers no workflow for an inactive deployment status".into())
        }
        "pull_request"
            if payload.pointer("/pull_request/mergeable") == Some(&serde_json::Value::Bool(false)) =>
        {
            Some("the pull request has a merge conflict: GitHub runs no pull_request workflow until it is resolved".into())
        }
        "check_run" | "check_suite" => {
            let app = if name == "check_run" {
                "/check_run/check_suite/app/slug"
            } else {
                "/check_suite/app/slug"
            };
            (payload_str(payload, app) == Some("github-actions")).then(|| {
                format!("the check suite comes from GitHub Actions: GitHub triggers no {name} workflow for it (no recursion)")
            })
        }
        _ => None,
    }
}

/// `Ok` when the event passes the workflow's configuration for it, else why not.
fn triggers(name: &str, config: &EventConfig, event: &Event) -> Result<(), String> {
    let files = event.changed_files.as_deref();
    if let Some(why) = never_triggers(name, &event.payload) {
        return Err(why);
    }
    // activity types
    let action = payload_str(&event.payload, "/action");
    let types: Option<Vec<&str>> = config
        .types
        .as_ref()
        .map(|t| t.iter().map(String::as_str).collect())
        .or_else(|| default_types(name).map(<[&str]>::to_vec));
    if let (Some(types), Some(action)) = (&types, action) {
        if !types.contains(&action) {
            return Err(format!("activity type '{action}' is not one of {types:?}"));
        }
    }
    match name {
        "push" => {
            let git_ref = payload_str(&event.payload, "/ref").unwrap_or("");
            if !filter::push_matches_in(ref_filter(config), git_ref, files) {
                return Err(
                    if filter::push_matches_in(without_paths(config), git_ref, None) {
                        paths_refusal(name, files)
                    } else {
                        format!("ref '{git_ref}' does not pass the push filters")
                    },
                );
            }
        }
        "pull_request" | "pull_request_target" => {
            let base = payload_str(&event.payload, "/pull_request/base/ref").unwrap_or("");
            if !filter::pull_request_matches_in(ref_filter(config), base, files) {
                return Err(
                    if filter::pull_request_matches_in(without_paths(config), base, None) {
                        paths_refusal(name, files)
                    } else {
                        format!("base branch '{base}' does not pass the {name} filters")
                    },
                );
            }
        }
        "merge_group" => {
            let base = payload_str(&event.payload, "/merge_group/base_ref").unwrap_or("");
            if !filter::pull_request_matches_in(ref_filter(config), base, None) {
                return Err(format!(
                    "base ref '{base}' does not pass the merge_group filters"
                ));
            }
        }
        "workflow_run" => {
            if let Some(workflows) = &config.workflows {
                let run_name = payload_str(&event.payload, "/workflow_run/name").unwrap_or("");
                if !workflows.iter().any(|w| filter::glob_match(w, run_name)) {
                    return Err(format!("workflow '{run_name}' is not in {workflows:?}"));
                }
            }
            let branch = payload_str(&event.payload, "/workflow_run/head_branch").unwrap_or("");
            let f = Filters {
                paths: None,
                paths_ignore: None,
                tags: None,
                tags_ignore: None,
                ..ref_filter(config)
            };
            if !filter::pull_request_matches_in(f, branch, None) {
                return Err(format!(
                    "branch '{branch}' does not pass the workflow_run filters"
                ));
            }
        }
        "schedule" => {
            // `on: [schedule]` names the event with nothing to schedule.
            if config.schedule.is_empty() {
                return Err("it lists no `cron` for `schedule`: GitHub never starts it".into());
            }
            if let Some(cron) = payload_str(&event.payload, "/schedule") {
                if !config.schedule.iter().any(|s| s.cron == cron) {
                    return Err(format!("schedule '{cron}' is not listed"));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

fn plan_workflow(path: &str, wf: &Arc<Workflow>) -> WorkflowPlan {
    let input: Vec<(&str, &[String])> = wf
        .jobs
        .iter()
        .map(|j| (j.id.as_str(), j.needs.as_slice()))
        .collect();
    let g = graph::analyze_in(&input);
    let mut errors: Vec<String> = g.errors.iter().map(ToString::to_string).collect();
    let mut jobs = Vec::new();
    let mut layers = Vec::new();
    for (layer_idx, layer) in g.layers.iter().enumerate() {
        let mut ids = Vec::new();
        for &i in layer {
            let Some(job) = wf.jobs.get(i) else { continue };
            ids.push(job.id.clone());
            let mut jp = plan_job(job, layer_idx);
            // A literal matrix that cannot expand is the workflow's error; one an expression
            // makes fails its job alone when it runs, as GitHub evaluates a job's strategy.
            if let (MatrixPlan::Invalid { error }, false) = (&jp.matrix, has_expression(job)) {
                errors.push(format!("Job '{}': {error}", job.id));
            }
            // `fail-fast: ${{ fromJSON('false') }}` reads nothing the run adds: decided now.
            if jp.strategy_deferred.as_ref().is_some_and(Vec::is_empty) {
                settle_strategy(&mut jp, &EmptyContext);
            }
            jobs.push(jp);
        }
        layers.push(ids);
    }
    WorkflowPlan {
        path: path.to_string(),
        name: wf.name.clone().unwrap_or_else(|| path.to_string()),
        jobs,
        layers,
        errors,
        workflow: Arc::clone(wf),
    }
}

/// A job's `fail-fast` (default `true`) and `max-parallel` as GitHub reads them: a whole
/// `strategy: ${{ }}` evaluated first and the two read from its value, else each evaluated
/// on its own. An error is the job's, worded as GitHub's.
pub fn strategy_settings(
    job: &Job,
    ctx: &dyn firebreak_expr::Context,
) -> Result<(bool, Option<f64>), String> {
    let Some(s) = job.strategy.as_ref() else {
        return Ok((true, None));
    };
    let eval = |t: &Token| t.evaluate_merged(ctx).map_err(|e| strategy_error(job, e));
    let unexpected = |v: &Value| {
        strategy_error(
            job,
            format_args!("Unexpected value '{}'", v.to_coerced_string()),
        )
    };
    let (fail_fast, max_parallel) = if s.token.is_expression() {
        let v = eval(&s.token)?;
        if !matches!(v, Value::Object(_) | Value::Null) {
            return Err(unexpected(&v));
        }
        (v.get("fail-fast").cloned(), v.get("max-parallel").cloned())
    } else {
        (
            s.fail_fast.as_ref().map(eval).transpose()?,
            s.max_parallel.as_ref().map(eval).transpose()?,
        )
    };
    let fail_fast = match fail_fast {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => b,
        Some(other) => return Err(unexpected(&other)),
    };
    let max_parallel = match max_parallel {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(n),
        Some(other) => return Err(unexpected(&other)),
    };
    Ok((fail_fast, max_parallel))
}

/// The contexts `job`'s `fail-fast` and `max-parallel` read (none when literal); `None`
/// when neither is an expression.
fn strategy_contexts(job: &Job) -> Option<Vec<String>> {
    let s = job.strategy.as_ref()?;
    let tokens: Vec<&Token> = if s.token.is_expression() {
        vec![&s.token]
    } else {
        [&s.fail_fast, &s.max_parallel]
            .into_iter()
            .flatten()
            .filter(|t| t.contains_expression())
            .collect()
    };
    if tokens.is_empty() {
        return None;
    }
    let mut contexts = Vec::new();
    for t in tokens {
        for c in contexts_of(t) {
            if !contexts.contains(&c) {
                contexts.push(c);
            }
        }
    }
    Some(contexts)
}

/// Sets `jp`'s `fail-fast` and `max-parallel` from [`strategy_settings`] over `ctx`, which
/// knows every context they read. One that does not evaluate fails that job alone when it
/// runs (as GitHub does), not the workflow: the plan says so as an invalid matrix, which the
/// run fails the job with.
fn settle_strategy(jp: &mut JobPlan, ctx: &dyn firebreak_expr::Context) {
    jp.strategy_deferred = None;
    match strategy_settings(&jp.job, ctx) {
        Ok((fail_fast, max_parallel)) => {
            jp.fail_fast = fail_fast;
            jp.max_parallel = max_parallel.filter(|n| *n >= 1.0).map(|n| n as u64);
        }
        Err(error) => jp.matrix = MatrixPlan::Invalid { error },
    }
}

/// Whether `job`'s strategy holds an expression (a whole `strategy: ${{ }}`, or one in it).
fn has_expression(job: &Job) -> bool {
    job.strategy.as_ref().is_some_and(|s| {
        s.token.is_expression() || s.matrix.as_ref().is_some_and(Token::contains_expression)
    }) || strategy_contexts(job).is_some()
}

/// An error of `job`'s strategy as GitHub's evaluator words it ("Error when evaluating
/// 'strategy' for job 'x'. …"), for the planner and the run alike.
pub fn strategy_error(job: &Job, error: impl std::fmt::Display) -> String {
    format!(
        "Error when evaluating 'strategy' for job '{}'. {error}",
        job.id
    )
}

fn plan_job(job: &Arc<Job>, layer: usize) -> JobPlan {
    let strategy = job.strategy.as_ref();
    let fail_fast = strategy
        .and_then(|s| s.fail_fast.as_ref())
        .and_then(Token::as_bool)
        .unwrap_or(true);
    let max_parallel = strategy
        .and_then(|s| s.max_parallel.as_ref())
        .and_then(Token::as_number)
        .filter(|n| *n >= 1.0)
        .map(|n| n as u64);
    let matrix = match strategy {
        None => MatrixPlan::None,
        Some(s) => match (&s.matrix, s.token.is_expression()) {
            (None, false) => MatrixPlan::None,
            (Some(m), _) if !m.contains_expression() => {
                expand_value(m.literal_value().unwrap_or(Value::Null), job)
            }
            // `${{ }}` in the matrix, or a whole `strategy: ${{ }}`: when it reads no context
            // (`fromJSON('…')`), its value is the same at run time, so the legs are known now.
            (m, _) => {
                let contexts = contexts_of(m.as_ref().unwrap_or(&s.token));
                if !contexts.is_empty() {
                    MatrixPlan::Deferred { contexts }
                } else {
                    evaluate_matrix(job, &EmptyContext)
                }
            }
        },
    };
    JobPlan {
        id: job.id.clone(),
        name: job.name.clone(),
        display_name: job
            .name
            .as_str()
            .filter(|n| !n.trim().is_empty())
            .map(str::to_string),
        layer,
        needs: job.needs.clone(),
        if_condition: job.if_condition.clone(),
        matrix,
        fail_fast,
        max_parallel,
        strategy_deferred: strategy_contexts(job),
        called: match &job.kind {
            JobKind::Reusable(rj) => rj
                .called
                .as_ref()
                .map(|w| Box::new(plan_workflow(&rj.uses, w))),
            JobKind::Steps(_) => None,
        },
        job: Arc::clone(job),
    }
}

/// The matrix of `job` (whose strategy holds expressions) evaluated over `ctx`, expanded.
fn evaluate_matrix(job: &Job, ctx: &dyn firebreak_expr::Context) -> MatrixPlan {
    let Some(s) = job.strategy.as_ref() else {
        return MatrixPlan::None;
    };
    let m = s.matrix.as_ref();
    let plan = match m.unwrap_or(&s.token).evaluate_merged(ctx) {
        Ok(v) if m.is_some() => expand_value(v, job),
        Ok(v) => expand_value(v.get("matrix").cloned().unwrap_or(Value::Null), job),
        Err(e) => MatrixPlan::Invalid {
            error: e.to_string(),
        },
    };
    match plan {
        MatrixPlan::Invalid { error } => MatrixPlan::Invalid {
            error: strategy_error(job, error),
        },
        plan => plan,
    }
}

/// Expands the matrices of `plan` left to run time whose expressions read only contexts
/// `ctx` knows (`known`: lower-case names such as `github` and `inputs`), as the run will
/// expand them: with the event known, `fromJSON(inputs.oses)` is decided when planning.
pub fn resolve_deferred(
    plan: &mut WorkflowPlan,
    known: &[&str],
    ctx: &dyn firebreak_expr::Context,
) {
    let all_known = |contexts: &[String]| contexts.iter().all(|c| known.contains(&c.as_str()));
    for jp in &mut plan.jobs {
        if jp.strategy_deferred.as_deref().is_some_and(all_known) {
            settle_strategy(jp, ctx);
        }
        let MatrixPlan::Deferred { contexts } = &jp.matrix else {
            continue;
        };
        if !all_known(contexts) {
            continue;
        }
        // One that cannot expand fails its job alone when it runs.
        jp.matrix = evaluate_matrix(&jp.job, ctx);
    }
}

/// Tells apart a job's legs whose names come out the same (`name: build ${{ matrix.os }}`
/// over more keys than `os`): the second and later get `#2`, `#3`… appended, so that they
/// do not share a log or a console prefix. The plan and the run name legs through it.
#[derive(Debug, Default)]
pub struct LegNames {
    seen: HashMap<String, usize>,
}

impl LegNames {
    /// `name`, or `name #N` for its N-th use.
    pub fn unique(&mut self, name: String) -> String {
        let n = self.seen.entry(name.clone()).or_insert(0);
        *n += 1;
        if *n > 1 {
            format!("{name} #{n}")
        } else {
            name
        }
    }
}

/// Names jobs and legs whose `name:` is an expression reading only contexts `ctx` knows
/// (`known`, lower-case) besides `matrix`, as the run will name them: each leg's name
/// evaluated with its own matrix (legs whose names come out the same get `#2`, `#3`…), and
/// a job without a matrix gets [`JobPlan::display_name`].
pub fn resolve_names(plan: &mut WorkflowPlan, known: &[&str], ctx: &dyn firebreak_expr::Context) {
    struct WithLeg<'a> {
        inner: &'a dyn firebreak_expr::Context,
        matrix: Value,
        strategy: Value,
    }
    impl firebreak_expr::Context for WithLeg<'_> {
        fn named_value(&self, name: &str) -> Option<Value> {
            if name.eq_ignore_ascii_case("matrix") {
                Some(self.matrix.clone())
            } else if name.eq_ignore_ascii_case("strategy") {
                Some(self.strategy.clone())
            } else {
                self.inner.named_value(name)
            }
        }
    }
    for jp in &mut plan.jobs {
        let decidable = |c: &String| {
            c == "matrix"
                || (c == "strategy" && jp.strategy_deferred.is_none())
                || known.contains(&c.as_str())
        };
        if !jp.name.contains_expression() || !contexts_of(&jp.name).iter().all(decidable) {
            continue;
        }
        let name_with = |matrix: Value, index: usize, total: usize| {
            let leg = WithLeg {
                inner: ctx,
                matrix,
                strategy: strategy_context(jp, index, total),
            };
            jp.name
                .evaluate_string(&leg)
                .ok()
                // An empty name falls back to the default one, as the run's does.
                .filter(|n| !n.trim().is_empty())
        };
        match &jp.matrix {
            MatrixPlan::Legs { legs } => {
                let total = legs.len();
                let names: Vec<Option<String>> = legs
                    .iter()
                    .enumerate()
                    .map(|(i, l)| name_with(Value::from_json(&l.matrix), i, total))
                    .collect();
                let mut alike = LegNames::default();
                if let MatrixPlan::Legs { legs } = &mut jp.matrix {
                    for (leg, name) in legs.iter_mut().zip(names) {
                        if let Some(name) = name {
                            leg.name = alike.unique(name);
                        }
                    }
                }
            }
            MatrixPlan::None => jp.display_name = name_with(Value::Null, 0, 1),
            _ => {}
        }
    }
}

/// The `strategy` context of leg `index` of `total` of `jp`, as the run gives it: a job
/// without matrix combinations has one leg and `max-parallel` 1.
fn strategy_context(jp: &JobPlan, index: usize, total: usize) -> Value {
    let combinations = matches!(&jp.matrix, MatrixPlan::Legs { legs } if !legs.is_empty());
    let max_parallel = match jp.max_parallel {
        _ if !combinations => 1,
        Some(n) => n as usize,
        None => total,
    };
    leg_strategy(jp.fail_fast, index, total, max_parallel)
}

/// A leg's `strategy` context: its `fail-fast`, its index among the job's `total` legs and
/// the job's `max-parallel`, in GitHub's order.
pub fn leg_strategy(fail_fast: bool, index: usize, total: usize, max_parallel: usize) -> Value {
    let mut m = indexmap::IndexMap::new();
    m.insert("fail-fast".to_string(), Value::Bool(fail_fast));
    m.insert("job-index".to_string(), Value::Number(index as f64));
    m.insert("job-total".to_string(), Value::Number(total as f64));
    m.insert(
        "max-parallel".to_string(),
        Value::Number(max_parallel as f64),
    );
    Value::Object(m)
}

/// Every job before each job of `plan` in its chain of `needs` (ids lower-case), which the
/// status functions of its `if:` answer for: `success()` when every one of them succeeded.
pub fn ancestors(plan: &WorkflowPlan) -> HashMap<String, HashSet<String>> {
    let lc = |s: &str| s.to_ascii_lowercase();
    let by_id: HashMap<String, &JobPlan> = plan.jobs.iter().map(|j| (lc(&j.id), j)).collect();
    plan.jobs
        .iter()
        .map(|j| {
            let mut set = HashSet::new();
            let mut stack: Vec<String> = j.needs.iter().map(|n| lc(n)).collect();
            while let Some(n) = stack.pop() {
                if set.insert(n.clone()) {
                    if let Some(before) = by_id.get(&n) {
                        stack.extend(before.needs.iter().map(|x| lc(x)));
                    }
                }
            }
            (lc(&j.id), set)
        })
        .collect()
}

/// Contexts read by the expressions inside `t` (lower-case, first use first).
pub fn contexts_of(t: &Token) -> Vec<String> {
    fn walk(t: &Token, out: &mut Vec<String>) {
        match &t.kind {
            TokenKind::Expr(e) => {
                if let Ok(expr) = firebreak_expr::parse(&e.expr) {
                    for n in expr.named_values() {
                        if !out.contains(&n) {
                            out.push(n);
                        }
                    }
                }
            }
            TokenKind::Seq(items) => items.iter().for_each(|i| walk(i, out)),
            TokenKind::Map(pairs) => pairs.iter().for_each(|(k, v)| {
                walk(k, out);
                walk(v, out);
            }),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(t, &mut out);
    out
}

/// The legs of a matrix whose value is known when planning (a literal, or an expression
/// that reads no context).
fn expand_value(m: Value, job: &Job) -> MatrixPlan {
    let Value::Object(map) = m else {
        return MatrixPlan::Invalid {
            error: "A mapping was expected for the matrix".to_string(),
        };
    };
    let map: IndexMap<String, Value> = map;
    match matrix::expand_legs(&map) {
        // Every combination excluded: GitHub runs the job once, with a `null` matrix.
        Ok(legs) if legs.is_empty() => MatrixPlan::Legs {
            legs: vec![MatrixLeg {
                name: job.name.as_str().unwrap_or(&job.id).to_string(),
                matrix: serde_json::Value::Null,
                named: 0,
            }],
        },
        Ok(legs) => {
            let job_name = job.name.as_str().unwrap_or(&job.id);
            MatrixPlan::Legs {
                legs: legs
                    .into_iter()
                    .map(|l| MatrixLeg {
                        name: l.name(job_name),
                        named: l.name_len,
                        // `Value::Object(map).to_json()`, moving the leg's keys and values.
                        matrix: Value::Object(l.matrix).into_json(),
                    })
                    .collect(),
            }
        }
        Err(e) => {
            let mut error = e.to_string();
            if matches!(e, matrix::MatrixError::TooManyLegs) {
                error.push_str(&format!(" for job '{}'", job.id));
            }
            MatrixPlan::Invalid { error }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_workflow;

    fn wf(src: &str) -> Arc<Workflow> {
        match parse_workflow("w.yml", src).into_result() {
            Ok(w) => Arc::new(w),
            Err(e) => panic!("{e}"),
        }
    }

    fn push(r: &str, files: Option<&[&str]>) -> Event {
        Event {
            name: "push".into(),
            payload: serde_json::json!({ "ref": r }),
            changed_files: files.map(|f| f.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn a_matrix_with_every_leg_excluded_runs_the_job_once() {
        let w = wf("on: push\njobs:\n  a:\n    runs-on: x\n    strategy:\n      matrix:\n        os: [x]\n        exclude:\n          - os: x\n");
        let p = plan(&[("w.yml", w)], &push("refs/heads/main", None));
        let MatrixPlan::Legs { legs } = &p.workflows[0].jobs[0].matrix else {
            panic!("{:?}", p.workflows[0].jobs[0].matrix)
        };
        assert_eq!(legs.len(), 1);
        assert_eq!(legs[0].name, "a");
        assert_eq!(legs[0].matrix, serde_json::Value::Null);
    }

    #[test]
    fn push_filters_select_workflows() {
        let a = wf("on:\n  push:\n    branches: [main]\njobs:\n  a:\n    runs-on: x\n");
        let b = wf("on:\n  push:\n    paths: ['src/**']\njobs:\n  b:\n    runs-on: x\n");
        let c = wf("on: pull_request\njobs:\n  c:\n    runs-on: x\n");
        let wfs = vec![("a.yml", a), ("b.yml", b), ("c.yml", c)];
        let p = plan(&wfs, &push("refs/heads/main", Some(&["docs/x.md"])));
        assert_eq!(
            p.workflows
                .iter()
                .map(|w| w.path.as_str())
                .collect::<Vec<_>>(),
            ["a.yml"]
        );
        assert_eq!(p.filtered_out.len(), 1);
        let p = plan(&wfs, &push("refs/heads/dev", Some(&["src/lib.rs"])));
        assert_eq!(
            p.workflows
                .iter()
                .map(|w| w.path.as_str())
                .collect::<Vec<_>>(),
            ["b.yml"]
        );
    }

    #[test]
    fn a_schedule_without_crons_is_never_started() {
        let ev = Event {
            name: "schedule".into(),
            payload: serde_json::json!({}),
            changed_files: None,
        };
        let none = wf("on: [schedule]\njobs:\n  c:\n    runs-on: x\n    steps: [{run: x}]\n");
        let p = plan(&[("a.yml", none)], &ev);
        assert!(p.workflows.is_empty());
        assert!(
            p.filtered_out[0].reason.contains("lists no `cron`"),
            "{:?}",
            p.filtered_out
        );
        let one = wf("on:\n  schedule:\n    - cron: '0 1 * * *'\njobs:\n  c:\n    runs-on: x\n    steps: [{run: x}]\n");
        assert_eq!(plan(&[("b.yml", one)], &ev).workflows.len(), 1);
    }

    #[test]
    fn a_workflow_run_trigger_without_workflows_fails_its_runs() {
        let ev = Event {
            name: "workflow_run".into(),
            payload: serde_json::json!({"action": "completed", "workflow_run": {"name": "CI", "head_branch": "main"}}),
            changed_files: None,
        };
        let without =
            wf("on:\n  workflow_run:\n    types: [completed]\njobs:\n  c:\n    runs-on: x\n");
        let p = plan(&[("a.yml", without)], &ev);
        assert!(
            p.workflows[0].errors[0].contains("does not reference any workflows"),
            "{:?}",
            p.workflows[0].errors
        );
        let with = wf("on:\n  workflow_run:\n    workflows: [CI]\njobs:\n  c:\n    runs-on: x\n    steps: [{run: x}]\n");
        let p = plan(&[("b.yml", with)], &ev);
        assert!(
            p.workflows[0].errors.is_empty(),
            "{:?}",
            p.workflows[0].errors
        );
    }

    #[test]
    fn pull_request_types_default() {
        let w = wf("on: pull_request\njobs:\n  c:\n    runs-on: x\n");
        let wfs = vec![("c.yml", w)];
        let ev = |action: &str| Event {
            name: "pull_request".into(),
            payload: serde_json::json!({"action": action, "pull_request": {"base": {"ref": "main"}}}),
            changed_files: None,
        };
        assert_eq!(plan(&wfs, &ev("opened")).workflows.len(), 1);
        assert_eq!(plan(&wfs, &ev("labeled")).workflows.len(), 0);
    }

    #[test]
    fn events_github_starts_no_workflow_for() {
        let w = wf("on: [release, deployment_status, pull_request, pull_request_target, check_run, check_suite, merge_group, watch]\njobs:\n  c:\n    runs-on: x\n");
        let wfs = vec![("c.yml", w)];
        let outcome = |name: &str, payload: serde_json::Value| {
            let p = plan(
                &wfs,
                &Event {
                    name: name.into(),
                    payload,
                    changed_files: None,
                },
            );
            match (p.workflows.len(), p.filtered_out.first()) {
                (1, _) => Ok(()),
                (_, Some(f)) => Err(f.reason.clone()),
                _ => Err(String::new()),
            }
        };
        let pr = |mergeable: serde_json::Value| serde_json::json!({"action": "opened", "pull_request": {"base": {"ref": "main"}, "mergeable": mergeable}});
        // Draft releases: not for created/edited/deleted; published ones run.
        let draft =
            |action: &str| serde_json::json!({"action": action, "release": {"draft": true}});
        assert!(outcome("release", draft("created")).is_err_and(|e| e.contains("draft release")));
        assert!(outcome("release", draft("published")).is_ok());
        assert!(outcome(
            "deployment_status",
            serde_json::json!({"deployment_status": {"state": "inactive"}})
        )
        .is_err());
        assert!(outcome(
            "deployment_status",
            serde_json::json!({"deployment_status": {"state": "success"}})
        )
        .is_ok());
        // A merge conflict stops pull_request, not pull_request_target; unknown (null) runs.
        assert!(outcome("pull_request", pr(serde_json::json!(false)))
            .is_err_and(|e| e.contains("merge conflict")));
        assert!(outcome("pull_request", pr(serde_json::Value::Null)).is_ok());
        assert!(outcome("pull_request_target", pr(serde_json::json!(false))).is_ok());
        // No recursion through GitHub Actions' own check suites.
        let suite = |slug: &str| serde_json::json!({"action": "completed", "check_suite": {"app": {"slug": slug}}});
        assert!(outcome("check_suite", suite("github-actions")).is_err());
        assert!(outcome("check_suite", suite("ci-app")).is_ok());
        assert!(outcome("check_run", serde_json::json!({"action": "completed", "check_run": {"check_suite": {"app": {"slug": "github-actions"}}}})).is_err());
        // One supported activity type, whatever `types:` says.
        assert!(
            outcome("check_suite", serde_json::json!({"action": "requested"}))
                .is_err_and(|e| e.contains("'completed'"))
        );
        assert!(outcome("merge_group", serde_json::json!({"action": "destroyed"})).is_err());
        assert!(outcome("merge_group", serde_json::json!({"action": "checks_requested", "merge_group": {"base_ref": "refs/heads/main"}})).is_ok());
        assert!(outcome("watch", serde_json::json!({"action": "started"})).is_ok());
    }

    #[test]
    fn jobs_in_topological_order_with_matrix() {
        let w = wf(concat!(
            "on: push\njobs:\n",
            "  deploy:\n    needs: [build]\n    runs-on: x\n",
            "  build:\n    runs-on: x\n    strategy:\n      matrix:\n        os: [a, b]\n        include:\n          - os: c\n",
            "  dyn:\n    needs: build\n    runs-on: x\n    strategy:\n      matrix:\n        v: ${{ fromJSON(needs.build.outputs.v) }}\n",
        ));
        let p = plan(&[("w.yml", w)], &push("refs/heads/main", None));
        let wp = &p.workflows[0];
        assert_eq!(
            wp.layers,
            vec![
                vec!["build".to_string()],
                vec!["deploy".to_string(), "dyn".to_string()]
            ]
        );
        let build = &wp.jobs[0];
        let MatrixPlan::Legs { legs } = &build.matrix else {
            panic!("{:?}", build.matrix)
        };
        assert_eq!(
            legs.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(),
            ["build (a)", "build (b)", "build (c)"]
        );
        assert!(
            matches!(&wp.jobs[2].matrix, MatrixPlan::Deferred { contexts } if contexts == &["needs"])
        );
        assert!(matches!(wp.jobs[1].matrix, MatrixPlan::None));
        assert_eq!(wp.jobs[1].if_condition, "success()");
        let json = serde_json::to_value(&p).unwrap_or_default();
        assert_eq!(json["workflows"][0]["jobs"][0]["matrix"]["kind"], "legs");
    }

    #[test]
    fn a_matrix_expression_that_reads_no_context_is_expanded_when_planning() {
        let w = wf(concat!(
            "on: push\njobs:\n",
            "  a:\n    runs-on: x\n    strategy:\n      matrix: ${{ fromJSON('{\"x\":[1,2]}') }}\n",
            "  b:\n    runs-on: x\n    strategy: ${{ fromJSON('{\"matrix\":{\"os\":[\"l\",\"m\"]}}') }}\n",
            "  c:\n    runs-on: x\n    strategy:\n      matrix:\n        v: ${{ fromJSON('[3]') }}\n        w: [4]\n",
            "  d:\n    runs-on: x\n    strategy:\n      matrix: ${{ fromJSON('[1]') }}\n",
            "  e:\n    runs-on: x\n    strategy:\n      matrix: ${{ fromJSON('{') }}\n",
        ));
        let p = plan(&[("w.yml", w)], &push("refs/heads/main", None));
        let names = |i: usize| match &p.workflows[0].jobs[i].matrix {
            MatrixPlan::Legs { legs } => legs.iter().map(|l| l.name.clone()).collect::<Vec<_>>(),
            other => panic!("job {i}: {other:?}"),
        };
        assert_eq!(names(0), ["a (1)", "a (2)"]);
        assert_eq!(names(1), ["b (l)", "b (m)"]);
        assert_eq!(names(2), ["c (3, 4)"]);
        // Known now, and wrong now: the error the run would hit, not "decided at run time";
        // the job's alone (the run fails it), not the workflow's.
        for (i, id) in [(3, "d"), (4, "e")] {
            match &p.workflows[0].jobs[i].matrix {
                MatrixPlan::Invalid { error } => assert!(
                    error.starts_with(&format!(
                        "Error when evaluating 'strategy' for job '{id}'. "
                    )),
                    "{error}"
                ),
                other => panic!("job {i}: {other:?}"),
            }
        }
        // (Its only error: these jobs have no steps.)
        assert!(
            !p.workflows[0].errors.iter().any(|e| e.contains("strategy")),
            "{:?}",
            p.workflows[0].errors
        );
    }

    /// A strategy setting whose expression reads only what the event tells is decided with
    /// the event: a wrong value fails the job, as the run would, instead of being left for
    /// "run time".
    #[test]
    fn a_strategy_setting_the_event_decides_wrongly_fails_its_job() {
        let w = wf(concat!(
            "on: push\njobs:\n",
            "  c:\n    runs-on: x\n    strategy:\n      max-parallel: ${{ github.event_name }}\n      matrix:\n        v: [1]\n",
            "  d:\n    runs-on: x\n    strategy:\n      max-parallel: ${{ github.event_name == 'push' && 2 || 1 }}\n      matrix:\n        v: [1]\n",
        ));
        let mut p = plan(&[("w.yml", w)], &push("refs/heads/main", None));
        let mut ctx: IndexMap<String, Value> = IndexMap::new();
        ctx.insert(
            "github".into(),
            Value::from_json(&serde_json::json!({"event_name": "push"})),
        );
        resolve_deferred(&mut p.workflows[0], &["github"], &ctx);
        let jobs = &p.workflows[0].jobs;
        match &jobs[0].matrix {
            MatrixPlan::Invalid { error } => assert_eq!(
                error,
                "Error when evaluating 'strategy' for job 'c'. Unexpected value 'push'"
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(jobs[0].strategy_deferred, None);
        assert_eq!(
            (jobs[1].max_parallel, &jobs[1].strategy_deferred),
            (Some(2), &None)
        );
        assert!(!p.workflows[0].errors.iter().any(|e| e.contains("strategy")));
    }

    #[test]
    fn a_skip_instruction_in_the_head_commit_is_noted() {
        let w = wf("on: [push, workflow_dispatch]\njobs:\n  a:\n    runs-on: x\n");
        let with_message = |name: &str, m: &str| Event {
            name: name.into(),
            payload: serde_json::json!({"ref": "refs/heads/main", "head_commit": {"message": m}}),
            changed_files: None,
        };
        let p = plan(
            &[("w.yml", Arc::clone(&w))],
            &with_message("push", "docs: typo [skip ci]"),
        );
        assert_eq!(p.skip_ci, Some("[skip ci]"));
        assert_eq!(p.workflows.len(), 1, "still planned");
        let p = plan(
            &[("w.yml", Arc::clone(&w))],
            &with_message("push", "fix\n\n[actions skip]"),
        );
        assert_eq!(p.skip_ci, Some("[actions skip]"));
        let p = plan(
            &[("w.yml", Arc::clone(&w))],
            &with_message("push", "skip ci, not bracketed"),
        );
        assert_eq!(p.skip_ci, None);
        // Other events are not skipped by it.
        let p = plan(
            &[("w.yml", w)],
            &with_message("workflow_dispatch", "[skip ci]"),
        );
        assert_eq!(p.skip_ci, None);
    }

    #[test]
    fn skip_instructions_are_the_markers_and_a_set_apart_skip_checks_trailer() {
        assert_eq!(
            skip_instruction("pull_request", "x [no ci]"),
            Some("[no ci]")
        );
        // pull_request_target runs are not skipped by a commit message.
        assert_eq!(skip_instruction("pull_request_target", "x [skip ci]"), None);
        for m in [
            "fix typo\n\n\nskip-checks: true",
            "fix typo\n\n\nskip-checks:true\n",
            "fix\n\nbody\n\n\nSigned-off-by: a <a@b>\nskip-checks: true",
        ] {
            assert_eq!(
                skip_instruction("push", m),
                Some("skip-checks: true"),
                "{m:?}"
            );
        }
        for m in [
            // One empty line (what git leaves without --cleanup=verbatim).
            "fix typo\n\nskip-checks: true",
            // Not the last trailer.
            "fix typo\n\n\nskip-checks: true\nSigned-off-by: a <a@b>",
            "skip-checks: true",
            "fix\n\n\nskip-checks: false",
        ] {
            assert_eq!(skip_instruction("push", m), None, "{m:?}");
        }
    }

    #[test]
    fn plan_shares_the_workflow_and_its_jobs() {
        let w = wf("on: push\njobs:\n  b:\n    needs: a\n    runs-on: x\n  a:\n    runs-on: y\n");
        let p = plan(&[("w.yml", Arc::clone(&w))], &push("refs/heads/main", None));
        let wp = &p.workflows[0];
        assert!(Arc::ptr_eq(&wp.workflow, &w));
        // topological order: `a` (declared second) first
        assert!(Arc::ptr_eq(&wp.jobs[0].job, &w.jobs[1]));
        assert!(Arc::ptr_eq(&wp.jobs[1].job, &w.jobs[0]));
        // shared values serialize as the values themselves
        let json = serde_json::to_value(&p).unwrap_or_default();
        assert_eq!(json["workflows"][0]["jobs"][0]["job"]["id"], "a");
        assert_eq!(json["workflows"][0]["workflow"]["jobs"][0]["id"], "b");
        assert_eq!(
            json["workflows"][0]["workflow"],
            serde_json::to_value(&*w).unwrap_or_default()
        );
    }
}
