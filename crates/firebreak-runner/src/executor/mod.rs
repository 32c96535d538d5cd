//! The executor: runs a planned workflow's jobs with GitHub's runtime semantics.
//!
//! [`run_workflow`] takes a [`WorkflowPlan`] (from `firebreak_workflow::plan`) and a
//! [`RunConfig`], and emits [`events::Event`]s while it runs; it returns a
//! [`WorkflowOutcome`]. It never prints: reporters consume the event stream.
//!
//! ## Scheduling
//! * A job starts once every job it `needs` has finished; jobs run concurrently up to
//!   [`RunConfig::slots`] legs at a time (a semaphore shared by all legs).
//! * Before a job starts, its `if:` is evaluated with `github`, `needs`, `vars`, `inputs` and
//!   the status functions over **all** its ancestors (`success()`: every ancestor succeeded;
//!   `failure()`: one failed; `cancelled()`: the run was cancelled). A false condition skips
//!   the job (`needs.<id>.result == 'skipped'`).
//! * Its matrix is then expanded: literal matrices as planned, matrices with expressions
//!   (`fromJSON(needs.x.outputs.y)`) evaluated now that the needs are known. `max-parallel`
//!   bounds its concurrent legs; with `fail-fast` (the default) the first failing leg cancels
//!   the others (running ones are killed, queued ones end cancelled).
//! * Job results aggregate the legs (any failure → failure; else cancelled; all skipped →
//!   skipped); outputs merge the legs' outputs in leg order. A failed job with
//!   `continue-on-error: true` counts as success for `needs` and the run's exit status.
//! * [`RunConfig::cancel`] (Ctrl-C) cancels running steps; steps and post steps whose
//!   conditions still hold run afterwards; [`RunConfig::kill`] (a second Ctrl-C) kills them.
//!
//! Each leg runs in [`job`]; a job that calls a local reusable workflow runs it as a nested
//! workflow ([`reusable`]); expressions are evaluated by [`expr`]; actions are found by
//! [`actions`].

pub mod actions;
mod concurrency;
pub mod events;
pub mod expr;
pub mod hashfiles;
pub mod job;
pub mod reusable;
pub mod sizes;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use firebreak_expr::Value;
use firebreak_workflow::plan::{MatrixPlan, WorkflowPlan};
use firebreak_workflow::{matrix, Workflow};
use indexmap::IndexMap;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::sandbox::SandboxProvider;
pub use concurrency::Groups;
use events::{Conclusion, Event, EventSender, JobKey};
use expr::{eval_string, eval_token, Contexts, Status};
use job::{run_leg, LegResult, LegSpec};

/// Numbers sandboxes uniquely within the process (several workflows run at once).
static SANDBOX_SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

pub(crate) type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Everything a run needs besides the workflow.
#[derive(Clone)]
#[allow(clippy::type_complexity)]
pub struct RunConfig {
    /// The event name (`push`, …).
    pub event_name: String,
    /// The payload (`github.event`).
    pub event: serde_json::Value,
    /// `owner/name`.
    pub repository: String,
    /// `github.sha`.
    pub sha: String,
    /// `github.ref`.
    pub git_ref: String,
    /// `github.actor`.
    pub actor: String,
    /// `github.run_id` / `run_number`.
    pub run_id: u64,
    /// `github.run_number`.
    pub run_number: u64,
    /// `https://github.com` (also where actions are fetched from).
    pub server_url: String,
    /// Prepares the host folder that `actions/checkout` copies into a workspace (the
    /// repository at the event's commit); called at most once, when a job first checks out.
    pub stage_source: Arc<dyn Fn() -> Result<PathBuf, String> + Send + Sync>,
    /// The result of [`RunConfig::stage_source`], once called.
    pub staged: Arc<tokio::sync::OnceCell<Result<PathBuf, String>>>,
    /// `secrets` context (masked in all output).
    pub secrets: IndexMap<String, String>,
    /// `vars` context.
    pub vars: IndexMap<String, String>,
    /// `inputs` context.
    pub inputs: Value,
    /// Sandbox backends by name (`host`, `namespace`).
    pub providers: IndexMap<String, Arc<dyn SandboxProvider>>,
    /// Backend for jobs whose labels are not mapped.
    pub default_backend: String,
    /// `runs-on` label (lower-case) → backend name.
    pub label_map: IndexMap<String, String>,
    /// Concurrent legs across the whole run (`--jobs`): one permit per running leg.
    pub slots: Arc<Semaphore>,
    /// Action cache folder (`DIR/owner/repo/ref`).
    pub action_cache: PathBuf,
    /// Never fetch actions.
    pub offline: bool,
    /// Network access inside sandboxes, for every job.
    pub network: bool,
    /// Whether a job whose workflow and own `env` say nothing of `FIREBREAK_NETWORK` gets
    /// network access (a repository's `network: true` setting); they can still say `false`.
    pub network_by_default: bool,
    /// Run only these jobs (ids, case-insensitive) and what they need.
    pub only_jobs: Vec<String>,
    /// Run only legs whose matrix has these values (`--matrix k:v`).
    pub matrix_filter: Vec<(String, String)>,
    /// Ctrl-C.
    pub cancel: CancellationToken,
    /// Second Ctrl-C: kill even `always()` steps.
    pub kill: CancellationToken,
    /// `PATH` given to processes (before `GITHUB_PATH` prepends).
    pub base_path: String,
    /// Variables every process gets before the workflow's own `env` (toolchain locations
    /// such as `RUSTUP_HOME`).
    pub extra_env: IndexMap<String, String>,
    /// Where job summaries are written (`<job>.summary.md`).
    pub log_dir: Option<PathBuf>,
    /// Prefix of every job's display name (`caller / ` inside a called reusable workflow).
    pub job_prefix: String,
    /// Called reusable workflows by their `uses:` value, for jobs the parser did not attach
    /// them to (when some call of the workflow could not be loaded).
    pub reusable: Arc<IndexMap<String, Arc<Workflow>>>,
    /// Inside a called reusable workflow: the calling workflow's name and path, which
    /// `github.workflow` and `github.workflow_ref` keep (GitHub associates the `github`
    /// context with the caller); `None`: the workflow's own.
    pub github_workflow: Option<(String, String)>,
    /// The run's job-level `concurrency` groups, shared by its workflows and the workflows
    /// they call.
    pub concurrency: Arc<Groups>,
    /// Inside a called reusable workflow: the concurrency groups its calling jobs hold.
    pub concurrency_held: Vec<String>,
}

impl RunConfig {
    /// The staged repository folder (staged on first use).
    pub async fn source(&self) -> Result<PathBuf, String> {
        let f = self.stage_source.clone();
        self.staged
            .get_or_init(|| async move {
                tokio::task::spawn_blocking(move || f())
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()))
            })
            .await
            .clone()
    }
}

/// Errors that stop a workflow before any job runs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecutorError {
    /// The plan has errors (dependency cycles, invalid literal matrices).
    #[error("{0}")]
    Plan(String),
    /// `--job` named no job of the workflow.
    #[error("no job '{0}' in this workflow")]
    UnknownJob(String),
}

/// The result of one job (all legs).
#[derive(Debug, Clone)]
pub struct JobOutcome {
    /// Job id.
    pub id: String,
    /// Legs (name, result, continue-on-error, duration).
    pub legs: Vec<(String, Conclusion, bool, u64)>,
    /// Aggregate result.
    pub result: Conclusion,
    /// Job outputs (merged over the legs).
    pub outputs: IndexMap<String, String>,
}

/// The result of a workflow.
#[derive(Debug, Clone)]
pub struct WorkflowOutcome {
    /// Overall result: failure when any job failed (continue-on-error aside).
    pub result: Conclusion,
    /// Per job, in plan order.
    pub jobs: Vec<JobOutcome>,
}

pub(crate) struct WorkflowShared {
    pub cfg: Arc<RunConfig>,
    pub workflow: Arc<Workflow>,
    pub workflow_name: String,
    pub workflow_path: String,
    pub events: EventSender,
    pub fetch_lock: tokio::sync::Mutex<()>,
}

impl WorkflowShared {
    /// The workflow name and path the `github` context shows: the calling workflow's inside
    /// a called one ([`RunConfig::github_workflow`]), else this workflow's.
    pub fn github_workflow(&self) -> (String, String) {
        self.cfg
            .github_workflow
            .clone()
            .unwrap_or_else(|| (self.workflow_name.clone(), self.workflow_path.clone()))
    }
}

#[derive(Clone)]
struct Done {
    result: Conclusion,
    outputs: IndexMap<String, String>,
}

/// Runs the jobs of `plan`. `workflow_path` is the path relative to the repository
/// (`.github/workflows/ci.yml`).
pub async fn run_workflow(
    plan: &WorkflowPlan,
    workflow_path: &str,
    cfg: Arc<RunConfig>,
    events: EventSender,
) -> Result<WorkflowOutcome, ExecutorError> {
    if !plan.errors.is_empty() {
        return Err(ExecutorError::Plan(plan.errors.join("\n")));
    }
    let started = Instant::now();
    let lc = |s: &str| s.to_ascii_lowercase();
    let selected = selected_jobs(plan, &cfg.only_jobs).map_err(ExecutorError::UnknownJob)?;
    // ancestors for status functions
    let ancestors = firebreak_workflow::plan::ancestors(plan);
    let shared = Arc::new(WorkflowShared {
        cfg: cfg.clone(),
        workflow: Arc::clone(&plan.workflow),
        workflow_name: plan.name.clone(),
        workflow_path: workflow_path.to_string(),
        events: events.clone(),
        fetch_lock: tokio::sync::Mutex::new(()),
    });
    let global = cfg.slots.clone();
    let mut done: HashMap<String, Done> = HashMap::new();
    let mut outcomes: IndexMap<String, JobOutcome> = IndexMap::new();
    let mut pending: Vec<usize> = (0..plan.jobs.len())
        .filter(|&i| selected.contains(&lc(&plan.jobs[i].id)))
        .collect();
    let mut running: tokio::task::JoinSet<(String, Done, JobOutcome)> = tokio::task::JoinSet::new();
    loop {
        // start every ready job
        let mut i = 0;
        while i < pending.len() {
            let jp = &plan.jobs[pending[i]];
            let ready = jp
                .needs
                .iter()
                .all(|n| done.contains_key(&lc(n)) || !selected.contains(&lc(n)));
            if !ready {
                i += 1;
                continue;
            }
            pending.remove(i);
            let id = lc(&jp.id);
            // needs context (direct needs)
            let mut needs = IndexMap::new();
            for n in &jp.needs {
                let d = done.get(&lc(n)).cloned().unwrap_or(Done {
                    result: Conclusion::Skipped,
                    outputs: IndexMap::new(),
                });
                let mut m = IndexMap::new();
                m.insert(
                    "result".to_string(),
                    Value::String(d.result.as_str().into()),
                );
                m.insert("outputs".to_string(), expr::string_map_value(&d.outputs));
                needs.insert(n.clone(), Value::Object(m));
            }
            let needs = Value::Object(needs);
            let anc = ancestors.get(&id).cloned().unwrap_or_default();
            let results: Vec<Conclusion> = anc
                .iter()
                .filter_map(|a| done.get(a).map(|d| d.result))
                .collect();
            let mut ctx = Contexts::new();
            let gh = crate::context::github_context(&job_facts(&shared, &jp.id, "", ""));
            ctx.set("github", Value::from_json(&gh));
            ctx.set("needs", needs.clone());
            ctx.set("vars", expr::string_map_value(&cfg.vars));
            ctx.set("inputs", cfg.inputs.clone());
            ctx.cancelled = cfg.cancel.is_cancelled();
            ctx.status = if results
                .iter()
                .any(|r| matches!(r, Conclusion::Failure | Conclusion::Cancelled))
            {
                Status::Failure
            } else if results.iter().all(|r| *r == Conclusion::Success) {
                Status::Success
            } else {
                Status::Neither
            };
            let run_it = ctx.condition(&jp.if_condition);
            let name_token = jp.job.name.clone();
            let display = name_token
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| jp.id.clone());
            let key = job_key(&cfg, workflow_path, &jp.id, &display);
            let run_it = match run_it {
                Ok(b) => b,
                Err(e) => {
                    let line = format!("Error when evaluating 'if' for job '{}'. {e}", jp.id);
                    fail_now(&events, key, line, &mut done, &mut outcomes, &id);
                    continue;
                }
            };
            if !run_it {
                let r = if cfg.cancel.is_cancelled() {
                    Conclusion::Cancelled
                } else {
                    Conclusion::Skipped
                };
                finish_now(&events, key, r, &mut done, &mut outcomes, &id);
                continue;
            }
            // matrix
            let base_ctx = ctx.clone();
            let legs = match expand(jp, &base_ctx, &display) {
                Ok(l) => l,
                Err(e) => {
                    fail_now(&events, key, e, &mut done, &mut outcomes, &id);
                    continue;
                }
            };
            let legs: Vec<NamedLeg> = legs
                .into_iter()
                .filter(|(m, _)| leg_matches(m, &cfg.matrix_filter))
                .collect();
            let legs = if legs.is_empty()
                && !matches!(jp.matrix, MatrixPlan::None)
                && !cfg.matrix_filter.is_empty()
            {
                finish_now(
                    &events,
                    key,
                    Conclusion::Skipped,
                    &mut done,
                    &mut outcomes,
                    &id,
                );
                continue;
            } else if legs.is_empty() {
                vec![(IndexMap::new(), display.clone())]
            } else {
                legs
            };
            let (fail_fast, max_parallel) =
                match firebreak_workflow::plan::strategy_settings(&jp.job, &base_ctx) {
                    Ok(s) => s,
                    Err(e) => {
                        fail_now(&events, key, e, &mut done, &mut outcomes, &id);
                        continue;
                    }
                };
            let total = legs.len();
            // Without matrix combinations GitHub's one configuration has `max-parallel` 1.
            let max_parallel = if legs.iter().all(|(m, _)| m.is_empty()) {
                1
            } else {
                max_parallel
                    .filter(|n| n.is_finite() && *n >= 1.0)
                    .map_or(total, |n| n as usize)
            };
            let job = Arc::clone(&jp.job);
            // A job that starts after the run was cancelled (its `if:` holds anyway:
            // `always()`, `cancelled()`) runs until the second Ctrl-C, not until the first,
            // which has already happened; fail-fast still cancels its other legs.
            let ff_token = if cfg.cancel.is_cancelled() {
                cfg.kill.child_token()
            } else {
                cfg.cancel.child_token()
            };
            let per_job = Arc::new(Semaphore::new(max_parallel.max(1)));
            let mut specs = Vec::new();
            let has_matrix = !matches!(jp.matrix, MatrixPlan::None) || total > 1;
            // Legs whose names come out the same get `#2`, `#3`… appended.
            let mut alike = firebreak_workflow::plan::LegNames::default();
            // Each leg's `concurrency:` group, evaluated with its matrix and strategy.
            let mut groups: Vec<Result<Option<JobConcurrency>, String>> = Vec::new();
            for (idx, (m, leg_name)) in legs.iter().enumerate() {
                // A job without a matrix (or whose every combination was excluded) has a
                // `null` matrix context, as on GitHub.
                let mval = if m.is_empty() {
                    Value::Null
                } else {
                    Value::Object(m.clone())
                };
                let strategy =
                    firebreak_workflow::plan::leg_strategy(fail_fast, idx, total, max_parallel);
                let mut mctx = base_ctx.clone();
                mctx.set("matrix", mval.clone());
                // A job's name may read its leg's `strategy` (`leg ${{ strategy.job-index }}`).
                mctx.set("strategy", strategy.clone());
                let name = if name_token.contains_expression() {
                    // A name that evaluates to nothing falls back to the job's id, as an
                    // empty literal name does.
                    eval_string(&name_token, &mctx)
                        .ok()
                        .filter(|n| !n.trim().is_empty())
                        .unwrap_or_else(|| display.clone())
                } else if has_matrix && !m.is_empty() {
                    leg_name.clone()
                } else {
                    display.clone()
                };
                let name = alike.unique(name);
                groups.push(match &job.concurrency {
                    Some(t) => job_concurrency(t, &mctx),
                    None => Ok(None),
                });
                let seq = SANDBOX_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                specs.push(LegSpec {
                    job: job.clone(),
                    key: job_key(&cfg, workflow_path, &jp.id, &name),
                    matrix: if m.is_empty() && !has_matrix {
                        Value::Null
                    } else {
                        mval
                    },
                    strategy,
                    needs: needs.clone(),
                    // Its own, so that a concurrency group can cancel this leg alone.
                    cancel: ff_token.child_token(),
                    held_group: None,
                    sandbox_id: format!("{}-{}", seq, job::sanitize(&jp.id)),
                });
            }
            let sh = shared.clone();
            let global = global.clone();
            let job_id = jp.id.clone();
            let calls_workflow = matches!(jp.job.kind, firebreak_workflow::JobKind::Reusable(_));
            running.spawn(async move {
                let mut set = tokio::task::JoinSet::new();
                for (i, (mut spec, group)) in specs.into_iter().zip(groups).enumerate() {
                    let sh = sh.clone();
                    let ff = ff_token.clone();
                    let group = match group {
                        Ok(g) => g,
                        Err(e) => {
                            let r = failed_leg(&sh, spec.key.clone(), e);
                            if fail_fast {
                                ff.cancel();
                            }
                            set.spawn(async move { (i, spec.key.name, r, 0) });
                            continue;
                        }
                    };
                    // A leg in a concurrency group takes its `max-parallel` slot in matrix
                    // order, as any leg; then, queued as GitHub queues it, asks for its turn in
                    // the group (without waiting, so that a later leg can replace it) and
                    // waits for that turn, then for a run slot.
                    if let Some(conc) = group {
                        let job_slot = tokio::select! {
                            biased;
                            _ = ff.cancelled() => None,
                            p = per_job.clone().acquire_owned() => p.ok(),
                        };
                        let Some(job_slot) = job_slot else {
                            let r = cancelled_leg(&sh, spec.key.clone());
                            set.spawn(async move { (i, spec.key.name, r, 0) });
                            continue;
                        };
                        let ticket = enter_group(&sh, &spec, &conc);
                        if calls_workflow {
                            spec.held_group = Some(conc.group.clone());
                        }
                        let global = global.clone();
                        set.spawn(async move {
                            let name = spec.key.name.clone();
                            let key = spec.key.clone();
                            let cancel = spec.cancel.clone();
                            let ready = async {
                                let slot = ticket.wait().await.ok()?;
                                let run_slot = if calls_workflow {
                                    None
                                } else {
                                    Some(global.acquire_owned().await.ok()?)
                                };
                                Some((slot, run_slot))
                            };
                            let ready = tokio::select! {
                                biased;
                                _ = cancel.cancelled() => None,
                                r = ready => r,
                            };
                            let Some(held) = ready else {
                                return (i, name, cancelled_leg(&sh, key), 0);
                            };
                            let t0 = Instant::now();
                            let r = if calls_workflow {
                                reusable::run_reusable(sh.clone(), spec).await
                            } else {
                                run_leg(sh.clone(), spec).await
                            };
                            if r.result == Conclusion::Failure && fail_fast {
                                ff.cancel();
                            }
                            drop((held, job_slot));
                            (i, name, r, t0.elapsed().as_millis() as u64)
                        });
                        continue;
                    }
                    if calls_workflow {
                        // The called workflow's jobs take the run's slots themselves; the
                        // calling job's `max-parallel` still holds its legs back, in matrix
                        // order, and fail-fast cancels those still waiting.
                        let permit = tokio::select! {
                            biased;
                            _ = ff.cancelled() => None,
                            p = per_job.clone().acquire_owned() => p.ok(),
                        };
                        set.spawn(async move {
                            let name = spec.key.name.clone();
                            let key = spec.key.clone();
                            let t0 = Instant::now();
                            let (r, held) = match permit {
                                Some(p) => {
                                    (reusable::run_reusable(sh.clone(), spec).await, Some(p))
                                }
                                None => (cancelled_leg(&sh, key), None),
                            };
                            // Cancel the others before the slot goes to the next leg.
                            if r.result == Conclusion::Failure && fail_fast {
                                ff.cancel();
                            }
                            drop(held);
                            (i, name, r, t0.elapsed().as_millis() as u64)
                        });
                        continue;
                    }
                    // Legs take their slots here, one after another in matrix order (GitHub
                    // queues them by `strategy.job-index`): with `max-parallel: 1` the first
                    // leg runs first, and a failing one cancels the rest under fail-fast.
                    let permits = async {
                        let a = per_job.clone().acquire_owned().await;
                        let b = global.clone().acquire_owned().await;
                        (a, b)
                    };
                    let permits = tokio::select! {
                        biased;
                        _ = ff.cancelled() => None,
                        p = permits => Some(p),
                    };
                    set.spawn(async move {
                        let name = spec.key.name.clone();
                        let key = spec.key.clone();
                        let t0 = Instant::now();
                        let (r, held) = match permits {
                            Some(p) => (run_leg(sh.clone(), spec).await, Some(p)),
                            None => (cancelled_leg(&sh, key), None),
                        };
                        // Fail-fast cancels the legs still waiting before this one's slot
                        // is free: GitHub starts none of them.
                        if r.result == Conclusion::Failure && fail_fast {
                            ff.cancel();
                        }
                        drop(held);
                        (i, name, r, t0.elapsed().as_millis() as u64)
                    });
                }
                // In the order the legs finish.
                let mut results: Vec<(usize, String, LegResult, u64)> = Vec::new();
                while let Some(r) = set.join_next().await {
                    if let Ok(x) = r {
                        results.push(x);
                    }
                }
                // A matrix job's output is the last finished leg's that set it; of a
                // reusable workflow's, the last *successful* one's (GitHub's docs on
                // outputs from a reusable workflow).
                let mut outputs = IndexMap::new();
                for (_, _, r, _) in &results {
                    if calls_workflow && r.result != Conclusion::Success {
                        continue;
                    }
                    for (k, v) in &r.outputs {
                        if !v.is_empty() || !outputs.contains_key(k) {
                            outputs.insert(k.clone(), v.clone());
                        }
                    }
                }
                results.sort_by_key(|r| r.0);
                let rs: Vec<Conclusion> = results.iter().map(|r| r.2.result).collect();
                let result = if rs.contains(&Conclusion::Failure) {
                    Conclusion::Failure
                } else if rs.contains(&Conclusion::Cancelled) {
                    Conclusion::Cancelled
                } else if !rs.is_empty() && rs.iter().all(|r| *r == Conclusion::Skipped) {
                    Conclusion::Skipped
                } else {
                    Conclusion::Success
                };
                let outcome = JobOutcome {
                    outputs: outputs.clone(),
                    id: job_id.clone(),
                    legs: results
                        .iter()
                        .flat_map(|(_, n, r, d)| {
                            std::iter::once((n.clone(), r.result, r.continue_on_error, *d))
                                .chain(r.nested.iter().cloned())
                        })
                        .collect(),
                    result,
                };
                (
                    job_id.to_ascii_lowercase(),
                    Done { result, outputs },
                    outcome,
                )
            });
        }
        match running.join_next().await {
            Some(Ok((id, d, o))) => {
                done.insert(id.clone(), d);
                outcomes.insert(id, o);
            }
            Some(Err(e)) => {
                // a panicking job task: nothing more to learn about it
                let _ = e;
            }
            None => {
                if pending.is_empty() {
                    break;
                }
                // jobs that can never start (unknown needs outside the selection)
                for i in pending.drain(..) {
                    let jp = &plan.jobs[i];
                    let id = lc(&jp.id);
                    finish_now(
                        &events,
                        job_key(&cfg, workflow_path, &jp.id, &jp.id),
                        Conclusion::Skipped,
                        &mut done,
                        &mut outcomes,
                        &id,
                    );
                }
                break;
            }
        }
    }
    let jobs: Vec<JobOutcome> = plan
        .jobs
        .iter()
        .filter_map(|j| outcomes.get(&lc(&j.id)).cloned())
        .collect();
    let result = if jobs.iter().any(|j| j.result == Conclusion::Failure) {
        Conclusion::Failure
    } else if cfg.cancel.is_cancelled() || jobs.iter().any(|j| j.result == Conclusion::Cancelled) {
        Conclusion::Cancelled
    } else {
        Conclusion::Success
    };
    events.send(Event::WorkflowFinished {
        path: workflow_path.to_string(),
        result,
        duration_ms: started.elapsed().as_millis() as u64,
    });
    Ok(WorkflowOutcome { result, jobs })
}

/// The key of job `id` of `workflow_path`, shown as `name` (after the run's job prefix).
fn job_key(cfg: &RunConfig, workflow_path: &str, id: &str, name: &str) -> JobKey {
    JobKey {
        workflow: workflow_path.to_string(),
        id: id.to_string(),
        name: format!("{}{name}", cfg.job_prefix),
    }
}

/// [`finish_now`] with a failure, after `line` as the job's error.
fn fail_now(
    events: &EventSender,
    key: JobKey,
    line: String,
    done: &mut HashMap<String, Done>,
    outcomes: &mut IndexMap<String, JobOutcome>,
    id: &str,
) {
    events.send(Event::Output {
        job: key.clone(),
        step: None,
        kind: events::LineKind::Error,
        line,
    });
    finish_now(events, key, Conclusion::Failure, done, outcomes, id);
}

fn finish_now(
    events: &EventSender,
    key: JobKey,
    result: Conclusion,
    done: &mut HashMap<String, Done>,
    outcomes: &mut IndexMap<String, JobOutcome>,
    id: &str,
) {
    events.send(Event::JobFinished {
        job: key.clone(),
        result,
        continue_on_error: false,
        duration_ms: 0,
        outputs: IndexMap::new(),
    });
    done.insert(
        id.to_string(),
        Done {
            result,
            outputs: IndexMap::new(),
        },
    );
    outcomes.insert(
        id.to_string(),
        JobOutcome {
            outputs: IndexMap::new(),
            id: key.id.clone(),
            legs: vec![(key.name, result, false, 0)],
            result,
        },
    );
}

/// The jobs of `plan` a run starts (ids, lower-case): those `only` names
/// (case-insensitive) and every job they need, transitively; every job when `only` is
/// empty. `Err`: a name that is no job of `plan`.
pub fn selected_jobs(plan: &WorkflowPlan, only: &[String]) -> Result<HashSet<String>, String> {
    let lc = |s: &str| s.to_ascii_lowercase();
    if only.is_empty() {
        return Ok(plan.jobs.iter().map(|j| lc(&j.id)).collect());
    }
    let mut stack: Vec<String> = Vec::new();
    for j in only {
        if !plan.jobs.iter().any(|x| x.id.eq_ignore_ascii_case(j)) {
            return Err(j.clone());
        }
        stack.push(lc(j));
    }
    let mut selected = HashSet::new();
    while let Some(j) = stack.pop() {
        if selected.insert(j.clone()) {
            if let Some(x) = plan.jobs.iter().find(|x| x.id.eq_ignore_ascii_case(&j)) {
                stack.extend(x.needs.iter().map(|n| lc(n)));
            }
        }
    }
    Ok(selected)
}

/// Whether a leg's `matrix` passes `--matrix KEY:VALUE` filters: each key the leg has must
/// hold the value (compared as a string, as expressions coerce it); a key it lacks passes.
pub fn leg_matches(matrix: &IndexMap<String, Value>, filter: &[(String, String)]) -> bool {
    filter.iter().all(|(k, v)| match matrix.get(k) {
        Some(x) => x.to_coerced_string() == *v,
        None => true,
    })
}

/// What the `github` context of job `job` is made from; `workspace` and `event_path` are
/// the job's (empty when deciding whether the job runs at all).
pub(crate) fn job_facts(
    sh: &WorkflowShared,
    job: &str,
    workspace: &str,
    event_path: &str,
) -> crate::context::RunFacts {
    let cfg = &sh.cfg;
    let mut f = crate::context::RunFacts::new(
        cfg.event_name.clone(),
        cfg.event.clone(),
        cfg.repository.clone(),
        job,
        workspace,
        event_path,
    );
    f.sha = Some(cfg.sha.clone());
    f.git_ref = Some(cfg.git_ref.clone());
    f.actor = Some(cfg.actor.clone());
    f.run_id = cfg.run_id;
    f.run_number = cfg.run_number;
    let (name, path) = sh.github_workflow();
    f.workflow = name;
    f.workflow_path = Some(path);
    f.token = cfg.secrets.get("GITHUB_TOKEN").cloned();
    f
}

/// A leg's `matrix` context and display name.
type NamedLeg = (IndexMap<String, Value>, String);

/// Puts a leg in its concurrency group ([`Groups::request`]): told, if a later job replaces
/// or cancels it, with GitHub's message. A group that a calling job of this leg holds (the
/// caller of a reusable workflow and the called job in one group) would wait forever: the
/// leg is cancelled at once instead, as GitHub cancels such a deadlock.
fn enter_group(sh: &WorkflowShared, spec: &LegSpec, conc: &JobConcurrency) -> concurrency::Ticket {
    let (events, key) = (sh.events.clone(), spec.key.clone());
    let say = move |line: String| {
        move || {
            events.send(Event::Output {
                job: key,
                step: None,
                kind: events::LineKind::Error,
                line,
            })
        }
    };
    let held_by_caller = sh
        .cfg
        .concurrency_held
        .iter()
        .any(|g| concurrency::same_group(g, &conc.group));
    if held_by_caller {
        say(format!(
            "Canceling since a deadlock for concurrency group '{}' was detected between a calling job and this one",
            conc.group
        ))();
        return concurrency::Ticket::refused(spec.cancel.clone());
    }
    sh.cfg.concurrency.request(
        &conc.group,
        conc.cancel_in_progress,
        conc.queue_max,
        spec.cancel.clone(),
        Box::new(say(concurrency::superseded_message(&conc.group))),
    )
}

/// A leg that failed before it started (its `concurrency:` could not be evaluated): `line`
/// said, then as [`cancelled_leg`], failed.
fn failed_leg(sh: &WorkflowShared, key: JobKey, line: String) -> LegResult {
    sh.events.send(Event::Output {
        job: key.clone(),
        step: None,
        kind: events::LineKind::Error,
        line,
    });
    unstarted_leg(sh, key, Conclusion::Failure)
}

/// A leg's `concurrency:`.
struct JobConcurrency {
    group: String,
    cancel_in_progress: bool,
    /// `queue: max`: wait in line rather than replace the waiting job.
    queue_max: bool,
}

/// A job's `concurrency:` for one leg (none when its group comes out empty). A string is the
/// group; a mapping has `group`, `cancel-in-progress` and `queue` (`single` or `max`, which
/// GitHub does not let go with `cancel-in-progress: true`).
fn job_concurrency(
    t: &firebreak_workflow::Token,
    ctx: &Contexts,
) -> Result<Option<JobConcurrency>, String> {
    const PREFIX: &str = "Error when evaluating 'concurrency':";
    let v = eval_token(t, ctx).map_err(|e| format!("{PREFIX} {e}"))?;
    let field = |k: &str| match &v {
        Value::Object(m) => m.get(k).cloned().unwrap_or(Value::Null),
        _ => Value::Null,
    };
    let group = match &v {
        Value::Object(_) => field("group"),
        other => other.clone(),
    };
    let unexpected = |x: &Value| format!("{PREFIX} Unexpected value '{}'", x.to_coerced_string());
    let group = match group {
        Value::Null => String::new(),
        g => g.to_coerced_string(),
    };
    let cancel_in_progress = match field("cancel-in-progress") {
        Value::Null => false,
        Value::Bool(b) => b,
        other => return Err(unexpected(&other)),
    };
    let queue_max = match field("queue") {
        Value::Null => false,
        Value::String(q) if q == "single" => false,
        Value::String(q) if q == "max" => true,
        other => return Err(unexpected(&other)),
    };
    if queue_max && cancel_in_progress {
        return Err(format!(
            "{PREFIX} 'queue: max' cannot be combined with 'cancel-in-progress: true'"
        ));
    }
    Ok((!group.trim().is_empty()).then_some(JobConcurrency {
        group,
        cancel_in_progress,
        queue_max,
    }))
}

/// A leg fail-fast cancelled before it started: reported as finished, cancelled.
fn cancelled_leg(sh: &WorkflowShared, key: JobKey) -> LegResult {
    unstarted_leg(sh, key, Conclusion::Cancelled)
}

/// A leg that ends before it starts, with `result`.
fn unstarted_leg(sh: &WorkflowShared, key: JobKey, result: Conclusion) -> LegResult {
    sh.events.send(Event::JobFinished {
        job: key,
        result,
        continue_on_error: false,
        duration_ms: 0,
        outputs: IndexMap::new(),
    });
    LegResult {
        result,
        outputs: IndexMap::new(),
        continue_on_error: false,
        nested: Vec::new(),
    }
}

/// The legs of a job: literal (planned) or evaluated now.
fn expand(
    jp: &firebreak_workflow::plan::JobPlan,
    ctx: &Contexts,
    display: &str,
) -> Result<Vec<NamedLeg>, String> {
    match &jp.matrix {
        MatrixPlan::None => Ok(Vec::new()),
        MatrixPlan::Legs { legs } => Ok(legs
            .iter()
            .map(|l| match Value::from_json(&l.matrix) {
                Value::Object(m) => (m, l.name.clone()),
                _ => (IndexMap::new(), l.name.clone()),
            })
            .collect()),
        // Worded by the planner as GitHub words it ("Error when evaluating 'strategy' …").
        MatrixPlan::Invalid { error } => Err(error.clone()),
        MatrixPlan::Deferred { .. } => {
            let s = jp
                .job
                .strategy
                .as_ref()
                .ok_or_else(|| "strategy is missing".to_string())?;
            let failed =
                |e: &dyn std::fmt::Display| firebreak_workflow::plan::strategy_error(&jp.job, e);
            let m = match &s.matrix {
                Some(t) => eval_token(t, ctx).map_err(|e| failed(&e))?,
                None => {
                    let v = eval_token(&s.token, ctx).map_err(|e| failed(&e))?;
                    v.get("matrix").cloned().unwrap_or(Value::Null)
                }
            };
            let Value::Object(map) = m else {
                return Err(failed(&format!(
                    "the matrix must evaluate to a mapping, got {}",
                    m.kind_name()
                )));
            };
            let legs = matrix::expand_legs(&map).map_err(|e| failed(&e))?;
            Ok(legs
                .into_iter()
                .map(|l| (l.name(display), l.matrix))
                .map(|(n, m)| (m, n))
                .collect())
        }
    }
}
