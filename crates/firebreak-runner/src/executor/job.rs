//! One job (matrix leg) from sandbox creation to teardown.
//!
//! 1. Refuse what firebreak does not run (`container:`, `services:`) with a clear message
//!    (reusable-workflow jobs never get here: see [`super::reusable`]); pick the sandbox
//!    backend from `runs-on` (`-P label=backend`; unknown labels such as `macos-latest` run
//!    in the default Linux environment with a warning).
//! 2. Create the sandbox (its `GITHUB_WORKSPACE` starts empty, as on GitHub: the built-in
//!    `actions/checkout` copies the repository as staged by the caller into it, or into
//!    `with.path`), write the event payload, evaluate the job's `env`,
//!    `defaults.run`, `timeout-minutes` and `continue-on-error`.
//! 3. Run `pre` steps of remote JavaScript actions (in step order, `pre-if` default
//!    `always()`; as on GitHub, local actions get no `pre` — a warning says so — and remote
//!    actions reached only through a composite action run their `pre` right before their
//!    main entry point), then the steps in order; then the `post`
//!    steps registered by JavaScript actions, in reverse order, whatever happened before
//!    (their `post-if`, default `always()`, decides).
//! 4. Evaluate the job's `outputs` (an output that would reveal a secret is dropped with a
//!    warning, as GitHub does), destroy the sandbox.
//!
//! Each step: its `if:` is evaluated with the status functions over the current status
//! (composite actions track their own), then its `env` (over the job env: workflow < job <
//! `GITHUB_ENV` < enclosing composite `uses` steps < step), then `name`, `run`/`with`,
//! `working-directory`, `timeout-minutes`, `continue-on-error` — each at the last moment.
//! `steps.<id>` records `outputs`, `outcome` and `conclusion` (a failure hidden by
//! `continue-on-error` has conclusion `success`).
//!
//! Cancellation (Ctrl-C, fail-fast, job timeout) kills the running step; later steps see
//! `cancelled()` true and only those whose condition still holds (`always()`,
//! `cancelled()`) run, then the post steps. A second cancellation (the run's kill token)
//! kills those too.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use firebreak_expr::Value;
use firebreak_workflow::action::{parse_action, Action, Runs};
use firebreak_workflow::{Job, JobKind, RunDefaults, Step, StepKind};
use indexmap::IndexMap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::actions::{ensure_cached, sh_quote, ActionRef};
use super::events::{Conclusion, Event, JobKey, LineKind};
use super::expr::{
    eval_flag, eval_minutes, eval_string, eval_string_map, eval_token, string_map_value, Contexts,
    Status,
};
use super::WorkflowShared;
use crate::context::{github_context, runner_context, runner_env, RunnerFacts};
use crate::file_commands::{JobSummary, PathPrepends, StepFiles};
use crate::mask::Masker;
use crate::sandbox::{JobLayout, JobSpec, MountOutcome, Sandbox, Stream};
use crate::step::{run_script_step, ScriptStep, StepLog, StepOutcome};

/// What the scheduler hands a leg.
pub(crate) struct LegSpec {
    pub job: Arc<Job>,
    pub key: JobKey,
    pub matrix: Value,
    pub strategy: Value,
    pub needs: Value,
    /// Cancelled by Ctrl-C or fail-fast.
    pub cancel: CancellationToken,
    /// Unique among the run's sandboxes.
    pub sandbox_id: String,
    /// A reusable-workflow call's concurrency group, which the called jobs must not wait for.
    pub held_group: Option<String>,
}

/// What a leg produced.
#[derive(Debug, Clone)]
pub(crate) struct LegResult {
    pub result: Conclusion,
    pub outputs: IndexMap<String, String>,
    pub continue_on_error: bool,
    /// Legs of a called reusable workflow (name, result, continue-on-error, duration).
    pub nested: Vec<(String, Conclusion, bool, u64)>,
}

/// Labels that need no warning: they describe the Linux machine firebreak runs jobs on.
const LINUX_LABELS: &[&str] = &[
    "ubuntu-latest",
    "ubuntu-24.04",
    "ubuntu-22.04",
    "self-hosted",
    "linux",
    "x64",
    "arm64",
    NETWORK_LABEL,
];

/// The `runs-on` label by which a job asks for network access (as `--network` gives every job).
pub const NETWORK_LABEL: &str = "network";

/// The `env` variable by which a whole workflow (in its top-level `env`) or a job asks for
/// network access: `FIREBREAK_NETWORK: true`. GitHub passes it on as an ordinary variable, so
/// the workflow stays valid there.
pub const NETWORK_ENV: &str = "FIREBREAK_NETWORK";

/// What [`NETWORK_ENV`] in `env` (a workflow's or job's `env:` mapping) says: `Some(true)` for
/// `true`, `1` or `yes`, `Some(false)` for any other value, `None` when `env` does not set it.
/// An `env` that does not evaluate is reported where the job's environment is built, and
/// sets nothing here.
fn env_asks_for_network(
    env: Option<&firebreak_workflow::Token>,
    ctx: &dyn firebreak_expr::Context,
) -> Option<Result<bool, String>> {
    let v = eval_string_map(env, ctx).ok()?.get(NETWORK_ENV).cloned()?;
    Some(network_setting(&v))
}

/// `FIREBREAK_NETWORK`'s value: `true`/`1`/`yes` opt in, `false`/`0`/`no`/empty out (any
/// case); anything else is refused (and the job stays offline).
fn network_setting(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" | "" => Ok(false),
        _ => Err(format!(
            "{NETWORK_ENV}: '{v}' is neither true nor false; the job runs without network"
        )),
    }
}

#[derive(Clone)]
struct ActionInfo {
    /// Guest path of the action folder.
    path: String,
    repository: String,
    git_ref: String,
}

/// Adds `github.action_path`, `action_repository` and `action_ref` for steps running inside
/// an action.
fn insert_action_fields(o: &mut serde_json::Map<String, serde_json::Value>, a: &ActionInfo) {
    for (key, value) in [
        ("action_path", &a.path),
        ("action_repository", &a.repository),
        ("action_ref", &a.git_ref),
    ] {
        o.insert(key.into(), serde_json::Value::String(value.clone()));
    }
}

/// Steps context, inputs and env overlay of the job or of a composite action.
struct Scope {
    steps: IndexMap<String, Value>,
    inputs: Value,
    env: IndexMap<String, String>,
    action: Option<ActionInfo>,
    status: Status,
    depth: usize,
    composite: bool,
    /// Prefix that keeps action-state keys of nested steps unique.
    prefix: String,
}

struct PostStep {
    name: String,
    script: String,
    condition: String,
    env: IndexMap<String, String>,
    state_key: String,
    depth: usize,
    action: ActionInfo,
    step_id: String,
}

struct Exec {
    failed: bool,
    outputs: IndexMap<String, String>,
}

impl Exec {
    fn fail() -> Self {
        Exec {
            failed: true,
            outputs: IndexMap::new(),
        }
    }
}

pub(crate) async fn run_leg(sh: Arc<WorkflowShared>, spec: LegSpec) -> LegResult {
    let started = Instant::now();
    let events = sh.events.clone();
    let key = spec.key.clone();
    events.send(Event::JobStarted { job: key.clone() });
    let out = match prepare(&sh, &spec).await {
        Ok(mut leg) => {
            let r = leg.run().await;
            let _ = leg.sb.destroy().await;
            r
        }
        Err(msg) => {
            // Cancelled before it could start (fail-fast, Ctrl-C): cancelled, not failed.
            let cancelled = spec.cancel.is_cancelled();
            events.send(Event::Output {
                job: key.clone(),
                step: None,
                kind: if cancelled {
                    LineKind::Info
                } else {
                    LineKind::Error
                },
                line: msg,
            });
            LegResult {
                result: if cancelled {
                    Conclusion::Cancelled
                } else {
                    Conclusion::Failure
                },
                outputs: IndexMap::new(),
                continue_on_error: false,
                nested: Vec::new(),
            }
        }
    };
    events.send(Event::JobFinished {
        job: key,
        result: out.result,
        continue_on_error: out.continue_on_error,
        duration_ms: started.elapsed().as_millis() as u64,
        outputs: out.outputs.clone(),
    });
    out
}

fn base_contexts(sh: &WorkflowShared, spec: &LegSpec, github: &serde_json::Value) -> Contexts {
    let mut c = Contexts::new();
    c.set("github", Value::from_json(github));
    c.set("vars", string_map_value(&sh.cfg.vars));
    c.set("secrets", string_map_value(&sh.cfg.secrets));
    c.set("inputs", sh.cfg.inputs.clone());
    c.set("matrix", spec.matrix.clone());
    c.set("strategy", spec.strategy.clone());
    c.set("needs", spec.needs.clone());
    c
}

async fn prepare(sh: &Arc<WorkflowShared>, spec: &LegSpec) -> Result<LegRunner, String> {
    let cfg = &sh.cfg;
    let job = &spec.job;
    let steps_job = match &job.kind {
        JobKind::Steps(s) => s.clone(),
        JobKind::Reusable(r) => {
            return Err(format!(
                "Job '{}' calls the reusable workflow '{}': reusable workflows are not supported by firebreak run yet.",
                job.id, r.uses
            ))
        }
    };
    if steps_job.container.is_some() {
        return Err(format!(
            "Job '{}' uses `container:`: firebreak runs jobs without Docker, so container jobs are not supported. Remove `container:` to run the steps on the runner itself.",
            job.id
        ));
    }
    if steps_job.services.is_some() {
        return Err(format!(
            "Job '{}' uses `services:`: firebreak runs jobs without Docker, so service containers are not supported.",
            job.id
        ));
    }
    // runs-on → backend
    let pre_github = github_context(&super::job_facts(sh, &job.id, "", ""));
    let ctx = base_contexts(sh, spec, &pre_github);
    let mut labels: Vec<String> = Vec::new();
    if let Some(t) = &steps_job.runs_on {
        match eval_token(t, &ctx).map_err(|e| format!("runs-on: {e}"))? {
            Value::Array(xs) => labels.extend(xs.iter().map(Value::to_coerced_string)),
            Value::Object(m) => {
                if let Some(Value::Array(xs)) = m.get("labels") {
                    labels.extend(xs.iter().map(Value::to_coerced_string));
                } else if let Some(v) = m.get("labels") {
                    labels.push(v.to_coerced_string());
                }
            }
            v => labels.push(v.to_coerced_string()),
        }
    }
    let mut backend = cfg.default_backend.clone();
    let mut warnings = Vec::new();
    let mapped = labels
        .iter()
        .find_map(|l| cfg.label_map.get(&l.to_ascii_lowercase()).cloned());
    if let Some(b) = mapped {
        backend = b;
    } else {
        let odd: Vec<&String> = labels
            .iter()
            .filter(|l| !LINUX_LABELS.contains(&l.to_ascii_lowercase().as_str()))
            .filter(|l| {
                let one = std::slice::from_ref(*l);
                super::sizes::limits_from_labels(one).is_empty()
                    && super::sizes::refused_sizes(one).is_empty()
            })
            .collect();
        if !odd.is_empty() {
            warnings.push(format!(
                "runs-on {}: firebreak runs this job in the default Linux environment ({} sandbox); map labels with -P LABEL=host|namespace|qemu|firecracker",
                odd.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(", "),
                backend
            ));
        }
    }
    for refused in super::sizes::refused_sizes(&labels) {
        warnings.push(format!("runs-on {refused}: out of range, ignored"));
    }
    if steps_job.environment.is_some() {
        warnings.push("`environment:` is not applied locally (no protection rules, no environment secrets or variables); pass them with -s / --var".to_string());
    }
    let provider = cfg.providers.get(&backend).cloned().ok_or_else(|| {
        format!("no sandbox backend '{backend}' (from -P); use host or namespace")
    })?;
    let workspace_name = cfg
        .repository
        .rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or("repo")
        .to_string();
    let mut jspec = JobSpec::new(spec.sandbox_id.clone(), workspace_name);
    // A job's own `env` overrides the workflow's, as for any variable: a job can opt out of a
    // workflow-wide `FIREBREAK_NETWORK: true` with `false`.
    let env_network = match env_asks_for_network(steps_job.env.as_ref(), &ctx)
        .or_else(|| env_asks_for_network(sh.workflow.env.as_ref(), &ctx))
    {
        Some(Ok(b)) => b,
        Some(Err(why)) => {
            warnings.push(why);
            false
        }
        None => cfg.network_by_default,
    };
    jspec.network =
        cfg.network || labels.iter().any(|l| l.eq_ignore_ascii_case(NETWORK_LABEL)) || env_network;
    jspec.limits = super::sizes::limits_from_labels(&labels);
    // A run cancelled while the sandbox is being made (a VM booting, a snapshot being
    // taken) does not wait for it: dropping `create` kills what it started.
    let sb = tokio::select! {
        sb = provider.create(jspec) => {
            sb.map_err(|e| format!("cannot create the {backend} sandbox: {e}"))?
        }
        () = spec.cancel.cancelled() => {
            return Err(format!("cancelled while its {backend} sandbox was being made"));
        }
    };
    let layout = sb.layout().clone();
    let event_path = layout.temp.join("_github_workflow").join("event.json");
    let payload = serde_json::to_vec_pretty(&cfg.event).unwrap_or_default();
    if let Err(e) = sb.write_file(&event_path, payload, None).await {
        let _ = sb.destroy().await;
        return Err(format!("cannot write the event payload: {e}"));
    }
    let github = github_context(&super::job_facts(
        sh,
        &job.id,
        &layout.workspace.to_string_lossy(),
        &event_path.to_string_lossy(),
    ));
    let runner = runner_context(&RunnerFacts::from_layout("firebreak", &layout));
    let masker = Masker::new();
    for v in cfg.secrets.values() {
        masker.add(v);
    }
    let leg = LegRunner {
        sh: sh.clone(),
        key: spec.key.clone(),
        matrix: spec.matrix.clone(),
        strategy: spec.strategy.clone(),
        needs: spec.needs.clone(),
        job: job.clone(),
        sb: Arc::from(sb),
        layout,
        masker,
        github,
        runner,
        global_env: IndexMap::new(),
        path: PathPrepends::new(),
        defaults: RunDefaults::default(),
        job_token: spec.cancel.child_token(),
        post: Vec::new(),
        index: 0,
        summary: JobSummary::new(),
        states: IndexMap::new(),
        copied: HashSet::new(),
        pre_done: HashSet::new(),
        bash_probe: IndexMap::new(),
        current: None,
        step_action: None,
        step_files: None,
        grace: None,
        step_cancel: None,
        step_name: String::new(),
        cancel_timeout_min: 5.0,
        status: Status::Success,
    };
    for w in warnings {
        leg.say(LineKind::Warning, &w);
    }
    for n in leg.sb.notes() {
        if n != "network access allowed" {
            leg.say(LineKind::Info, &n);
        }
    }
    Ok(leg)
}

pub(crate) struct LegRunner {
    sh: Arc<WorkflowShared>,
    key: JobKey,
    matrix: Value,
    strategy: Value,
    needs: Value,
    job: Arc<Job>,
    sb: Arc<dyn Sandbox>,
    layout: JobLayout,
    masker: Masker,
    github: serde_json::Value,
    runner: serde_json::Value,
    /// Workflow env < job env < GITHUB_ENV.
    global_env: IndexMap<String, String>,
    path: PathPrepends,
    defaults: RunDefaults,
    job_token: CancellationToken,
    post: Vec<PostStep>,
    index: usize,
    summary: JobSummary,
    states: IndexMap<String, IndexMap<String, String>>,
    copied: HashSet<PathBuf>,
    pre_done: HashSet<String>,
    bash_probe: IndexMap<String, bool>,
    /// The step whose output is being reported.
    current: Option<usize>,
    /// The running step's context name (`github.action`, `GITHUB_ACTION`).
    step_action: Option<String>,
    /// The running step's file-command files (`github.env`, `GITHUB_ENV`…).
    step_files: Option<StepFiles>,
    /// Kills steps that run after the job was cancelled (see `step_token`).
    grace: Option<CancellationToken>,
    /// What kills the step being started, chosen when its condition was
    /// evaluated (see `step_token`): a normal step whose condition passed
    /// just before a Ctrl-C is stopped by it, not run as an `always()` step.
    step_cancel: Option<CancellationToken>,
    /// The running step's display name (masked), for its messages.
    step_name: String,
    /// `cancel-timeout-minutes`.
    cancel_timeout_min: f64,
    /// The job's status (top-level steps).
    status: Status,
}

impl LegRunner {
    fn say(&self, kind: LineKind, text: &str) {
        for l in text.lines() {
            self.sh.events.send(Event::Output {
                job: self.key.clone(),
                step: self.current,
                kind,
                line: self.masker.mask(l).into_owned(),
            });
        }
    }

    fn cancelled(&self) -> bool {
        self.job_token.is_cancelled()
    }

    /// The running step's context name (`GITHUB_ACTION`): inside a composite
    /// action, the calling step's.
    fn context_name(&self, step: &Step) -> String {
        self.step_action.clone().unwrap_or_else(|| step.id.clone())
    }

    /// `job.status` / `github.action_status` for `status`: `cancelled` once the
    /// job is cancelled, else `failure` or `success`.
    fn status_word(&self, status: Status) -> &'static str {
        if self.cancelled() {
            "cancelled"
        } else if status == Status::Failure {
            "failure"
        } else {
            "success"
        }
    }

    fn contexts(&self, scope: &Scope, env: &IndexMap<String, String>) -> Contexts {
        let mut c = Contexts::new();
        let mut gh = match (&self.step_action, &self.step_files) {
            (Some(id), Some(files)) => crate::context::with_step(&self.github, id, files),
            _ => self.github.clone(),
        };
        if let (Some(a), Some(o)) = (&scope.action, gh.as_object_mut()) {
            insert_action_fields(o, a);
        }
        // Inside a composite action, the composite's result so far.
        if let (true, Some(o)) = (scope.composite, gh.as_object_mut()) {
            let status = self.status_word(scope.status);
            o.insert(
                "action_status".into(),
                serde_json::Value::String(status.into()),
            );
        }
        c.set("github", Value::from_json(&gh));
        c.set("env", string_map_value(env));
        c.set("vars", string_map_value(&self.sh.cfg.vars));
        c.set("secrets", string_map_value(&self.sh.cfg.secrets));
        // A job past its `timeout-minutes` is cancelled, as GitHub's runner cancels it.
        let job_status = self.status_word(self.status);
        let mut job = IndexMap::new();
        job.insert("status".to_string(), Value::String(job_status.into()));
        job.insert("container".to_string(), Value::Object(IndexMap::new()));
        job.insert("services".to_string(), Value::Object(IndexMap::new()));
        c.set("job", Value::Object(job));
        c.set("runner", Value::from_json(&self.runner));
        c.set("strategy", self.strategy.clone());
        c.set("matrix", self.matrix.clone());
        c.set("needs", self.needs.clone());
        c.set("inputs", scope.inputs.clone());
        c.set("steps", Value::Object(scope.steps.clone()));
        c.status = scope.status;
        c.cancelled = self.cancelled();
        // hashFiles reads the workspace through the host path where the job shares it
        // (the local backends), else through the sandbox.
        if self.shares_host_programs() {
            c.workspace = Some(self.layout.workspace.clone());
        } else {
            c.guest_files = Some(super::hashfiles::GuestFiles {
                sandbox: self.sb.clone(),
                workspace: self.layout.workspace.clone(),
                cancel: Some(self.job_token.clone()),
            });
        }
        c
    }

    async fn run(&mut self) -> LegResult {
        let job = self.job.clone();
        let JobKind::Steps(sj) = &job.kind else {
            return LegResult {
                result: Conclusion::Failure,
                outputs: IndexMap::new(),
                continue_on_error: false,
                nested: Vec::new(),
            };
        };
        let wf = self.sh.workflow.clone();
        let top = Scope {
            steps: IndexMap::new(),
            inputs: self.sh.cfg.inputs.clone(),
            env: IndexMap::new(),
            action: None,
            status: Status::Success,
            depth: 0,
            composite: false,
            prefix: String::new(),
        };
        // env: compatibility markers < workflow < job
        let mut env = IndexMap::new();
        env.insert("ACT".to_string(), "true".to_string());
        env.insert("FIREBREAK".to_string(), "true".to_string());
        let mut setup_error = None;
        let ctx = self.contexts(&top, &IndexMap::new());
        match eval_string_map(wf.env.as_ref(), &ctx) {
            Ok(m) => env.extend(m),
            Err(e) => setup_error = Some(format!("workflow env: {e}")),
        }
        let ctx = self.contexts(&top, &env);
        match eval_string_map(sj.env.as_ref(), &ctx) {
            Ok(m) => env.extend(m),
            Err(e) => setup_error = Some(format!("job env: {e}")),
        }
        self.global_env = env;
        let mut d = wf.defaults.clone().unwrap_or_default();
        if let Some(jd) = &sj.defaults {
            if jd.shell.is_some() {
                d.shell = jd.shell.clone();
            }
            if jd.working_directory.is_some() {
                d.working_directory = jd.working_directory.clone();
            }
        }
        self.defaults = d;
        let ctx = self.contexts(&top, &self.global_env);
        let continue_on_error = eval_flag(sj.continue_on_error.as_ref(), &ctx);
        let timeout_min = eval_minutes(sj.timeout_minutes.as_ref(), &ctx).unwrap_or(360.0);
        self.cancel_timeout_min =
            eval_minutes(sj.cancel_timeout_minutes.as_ref(), &ctx).unwrap_or(5.0);
        let timer = {
            let tok = self.job_token.clone();
            let key = self.key.clone();
            let events = self.sh.events.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs_f64(timeout_min * 60.0)) => {
                        events.send(Event::Output { job: key, step: None, kind: LineKind::Error, line: format!("The job has exceeded the maximum execution time of {timeout_min} minutes.") });
                        tok.cancel();
                    }
                    _ = tok.cancelled() => {}
                }
            })
        };
        let mut scope = top;
        if let Some(e) = setup_error {
            self.say(LineKind::Error, &e);
            self.status = Status::Failure;
            scope.status = Status::Failure;
        } else {
            // pre steps of remote JavaScript actions
            for step in &sj.steps {
                self.run_job_start_pre(step, &scope).await;
            }
            self.current = None;
            for step in &sj.steps {
                self.run_step(step, &mut scope).await;
                self.status = scope.status;
            }
        }
        // post steps, reverse order
        while let Some(p) = self.post.pop() {
            self.run_post(p, &scope).await;
        }
        self.current = None;
        timer.abort();
        // outputs
        let ctx = self.contexts(&scope, &self.global_env);
        let mut outputs = IndexMap::new();
        match eval_string_map(sj.outputs.as_ref(), &ctx) {
            Ok(m) => {
                for (k, v) in m {
                    // GitHub's runner drops empty outputs ("since it's empty").
                    if v.is_empty() {
                        continue;
                    }
                    if self.masker.mask(&v) != v {
                        self.say(
                            LineKind::Warning,
                            &format!("Skip output '{k}' since it may contain secret."),
                        );
                        continue;
                    }
                    outputs.insert(k, v);
                }
            }
            Err(e) => {
                self.say(LineKind::Error, &format!("job outputs: {e}"));
                self.status = Status::Failure;
            }
        }
        if !self.summary.is_empty() {
            let p = self
                .sh
                .cfg
                .log_dir
                .as_ref()
                .map(|d| d.join(format!("{}.summary.md", sanitize(&self.key.name))));
            if let Some(p) = p {
                let _ = std::fs::write(&p, self.summary.as_str());
            }
        }
        // A failure before the cancellation (or timeout) stays a failure, as GitHub merges
        // the results; otherwise a job stopped by either is cancelled.
        let mut result = if self.status == Status::Failure {
            Conclusion::Failure
        } else if self.cancelled() {
            Conclusion::Cancelled
        } else {
            Conclusion::Success
        };
        let mut coe = false;
        if result == Conclusion::Failure && continue_on_error {
            coe = true;
            result = Conclusion::Success;
        }
        LegResult {
            result,
            outputs,
            continue_on_error: coe,
            nested: Vec::new(),
        }
    }

    fn next_index(&mut self) -> usize {
        self.index += 1;
        self.current = Some(self.index);
        self.index
    }

    fn step_started(&self, index: usize, depth: usize, name: &str) {
        self.sh.events.send(Event::StepStarted {
            job: self.key.clone(),
            index,
            depth,
            name: self.masker.mask(name).into_owned(),
        });
    }

    fn step_finished(
        &self,
        index: usize,
        depth: usize,
        name: &str,
        outcome: Conclusion,
        conclusion: Conclusion,
        t: Instant,
    ) {
        self.sh.events.send(Event::StepFinished {
            job: self.key.clone(),
            index,
            depth,
            name: self.masker.mask(name).into_owned(),
            outcome,
            conclusion,
            duration_ms: t.elapsed().as_millis() as u64,
        });
    }

    /// Environment of a process: `CI`, `GITHUB_ACTIONS`, `HOME`, `PATH`, the user env, then
    /// `GITHUB_*` / `RUNNER_*`, with `GITHUB_PATH` prepends.
    fn process_env(
        &self,
        scope: &Scope,
        env: &IndexMap<String, String>,
        step_id: &str,
    ) -> IndexMap<String, String> {
        let mut e = IndexMap::new();
        e.insert("CI".to_string(), "true".to_string());
        e.insert("GITHUB_ACTIONS".to_string(), "true".to_string());
        e.insert(
            "HOME".to_string(),
            self.layout.home.to_string_lossy().into_owned(),
        );
        e.insert("PATH".to_string(), self.base_path().to_string());
        if self.shares_host_programs() {
            e.insert(
                "LANG".to_string(),
                std::env::var("LANG").unwrap_or_else(|_| "C.UTF-8".into()),
            );
            e.extend(
                self.sh
                    .cfg
                    .extra_env
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
        } else {
            e.insert("LANG".to_string(), "C.UTF-8".to_string());
        }
        e.extend(env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let mut gh = self.github.clone();
        if let Some(o) = gh.as_object_mut() {
            o.insert(
                "action".into(),
                serde_json::Value::String(step_id.to_string()),
            );
            if let Some(a) = &scope.action {
                insert_action_fields(o, a);
            }
        }
        e.extend(crate::context::github_env(&gh));
        e.extend(runner_env(&self.runner));
        let base = e.get("PATH").cloned().unwrap_or_default();
        e.insert("PATH".to_string(), self.path.apply(&base));
        e
    }

    /// Runs one process step (script or action entry point) and applies its effects.
    async fn exec_script(&mut self, script: ScriptStep) -> StepOutcome {
        let (tx, mut rx) = mpsc::channel::<StepLog>(1024);
        let events = self.sh.events.clone();
        let key = self.key.clone();
        let step = self.current;
        let forward = async move {
            while let Some(rec) = rx.recv().await {
                let ev = match rec {
                    StepLog::Line { stream, text } => Event::Output {
                        job: key.clone(),
                        step,
                        kind: if stream == Stream::Stdout {
                            LineKind::Stdout
                        } else {
                            LineKind::Stderr
                        },
                        line: text,
                    },
                    StepLog::Group(t) => Event::Output {
                        job: key.clone(),
                        step,
                        kind: LineKind::Group,
                        line: t,
                    },
                    StepLog::EndGroup => Event::Output {
                        job: key.clone(),
                        step,
                        kind: LineKind::EndGroup,
                        line: String::new(),
                    },
                    StepLog::Debug(t) => Event::Output {
                        job: key.clone(),
                        step,
                        kind: LineKind::Debug,
                        line: t,
                    },
                    StepLog::Annotation(a) => Event::Annotation {
                        job: key.clone(),
                        step,
                        annotation: a,
                    },
                    StepLog::Error(t) => Event::Output {
                        job: key.clone(),
                        step,
                        kind: LineKind::Error,
                        line: t,
                    },
                };
                events.send(ev);
                // A step that prints faster than its output is written waits for it.
                events.wait_for_room().await;
            }
        };
        let run = run_script_step(self.sb.as_ref(), script, &self.masker, tx);
        let (res, ()) = tokio::join!(run, forward);
        match res {
            Ok(o) => {
                for (k, v) in &o.env {
                    self.global_env.insert(k.clone(), v.clone());
                }
                for p in &o.path {
                    self.path.add(p.clone());
                }
                if !o.summary.is_empty() {
                    // Too large: GitHub reports it as an error; the step does not fail.
                    if let Err(e) = self.summary.append_step(&o.summary, &self.masker) {
                        self.say(LineKind::Error, &e.to_string());
                    }
                }
                o
            }
            Err(e) => {
                self.say(LineKind::Error, &e.to_string());
                StepOutcome {
                    status: crate::sandbox::ExitStatus::Exited(1),
                    failed: true,
                    outputs: IndexMap::new(),
                    env: IndexMap::new(),
                    path: Vec::new(),
                    state: IndexMap::new(),
                    annotations: Vec::new(),
                    summary: Vec::new(),
                    matchers: Vec::new(),
                }
            }
        }
    }

    /// Whether `bash` is on this `PATH` inside the sandbox (probed once per distinct `PATH`).
    async fn bash_available(&mut self, env: &IndexMap<String, String>) -> bool {
        let path = env.get("PATH").cloned().unwrap_or_default();
        if let Some(b) = self.bash_probe.get(&path) {
            return *b;
        }
        let b = crate::step::probe_program(self.sb.as_ref(), "bash", &path)
            .await
            .unwrap_or(false);
        self.bash_probe.insert(path, b);
        b
    }

    /// Whether the job runs on the host's own system (`host`, `namespace`), where the runner's
    /// `PATH`, toolchains (`RUSTUP_HOME`) and `LANG` apply and the workspace is a host folder;
    /// not in a microVM, whose guest image is a system of its own.
    fn shares_host_programs(&self) -> bool {
        matches!(self.sb.backend(), "host" | "namespace")
    }

    /// The `PATH` processes start with (before `GITHUB_PATH` prepends): the runner's where the
    /// job shares the host's programs, else the guest's standard one.
    fn base_path(&self) -> &str {
        if self.shares_host_programs() {
            &self.sh.cfg.base_path
        } else {
            GUEST_PATH
        }
    }

    /// What kills the next step: the job's cancellation while the job runs; once it is
    /// cancelled (steps that still run: `always()`, post steps), a second Ctrl-C or the end of
    /// `cancel-timeout-minutes` (default 5) after the cancellation.
    fn step_token(&mut self) -> CancellationToken {
        if !self.cancelled() {
            return self.job_token.clone();
        }
        if let Some(g) = &self.grace {
            return g.clone();
        }
        let g = self.sh.cfg.kill.child_token();
        let minutes = self.cancel_timeout_min;
        let t = g.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs_f64(minutes * 60.0)) => t.cancel(),
                _ = t.cancelled() => {}
            }
        });
        self.grace = Some(g.clone());
        g
    }

    fn run_step<'a>(&'a mut self, step: &'a Step, scope: &'a mut Scope) -> super::BoxFut<'a, ()> {
        Box::pin(async move {
            let outer = self.current;
            // Steps inside a composite action keep the calling step's context name
            // (`github.action`, `GITHUB_ACTION`), as on GitHub.
            let outer_action = if scope.composite && self.step_action.is_some() {
                self.step_action.clone()
            } else {
                self.step_action.replace(step.id.clone())
            };
            let outer_files = self
                .step_files
                .replace(StepFiles::random(&self.layout.file_commands));
            self.run_step_inner(step, scope).await;
            self.current = outer;
            self.step_action = outer_action;
            self.step_files = outer_files;
        })
    }

    fn run_step_inner<'a>(
        &'a mut self,
        step: &'a Step,
        scope: &'a mut Scope,
    ) -> super::BoxFut<'a, ()> {
        Box::pin(async move {
            let t0 = Instant::now();
            let index = self.next_index();
            let depth = scope.depth;
            let mut env = self.global_env.clone();
            env.extend(scope.env.iter().map(|(k, v)| (k.clone(), v.clone())));
            let ctx = self.contexts(scope, &env);
            let default_name = default_step_name(step);
            let cond = step
                .if_condition
                .clone()
                .unwrap_or_else(|| "success()".into());
            let should_run = match ctx.condition(&cond) {
                Ok(b) => b,
                Err(e) => {
                    self.step_started(index, depth, &default_name);
                    self.say(
                        LineKind::Error,
                        &format!("The step condition '{cond}' could not be evaluated: {e}"),
                    );
                    self.record(step, scope, Conclusion::Failure, false, IndexMap::new());
                    self.step_finished(
                        index,
                        depth,
                        &default_name,
                        Conclusion::Failure,
                        Conclusion::Failure,
                        t0,
                    );
                    return;
                }
            };
            if !should_run {
                let name = step
                    .name
                    .as_ref()
                    .and_then(|n| eval_string(n, &ctx).ok())
                    .unwrap_or(default_name);
                self.record(step, scope, Conclusion::Skipped, false, IndexMap::new());
                self.step_finished(
                    index,
                    depth,
                    &name,
                    Conclusion::Skipped,
                    Conclusion::Skipped,
                    t0,
                );
                return;
            }
            self.step_cancel = Some(self.step_token());
            let mut setup_err = None;
            match eval_string_map(step.env.as_ref(), &ctx) {
                Ok(m) => env.extend(m),
                Err(e) => setup_err = Some(format!("step env: {e}")),
            }
            let ctx = self.contexts(scope, &env);
            let name = match step.name.as_ref().map(|n| eval_string(n, &ctx)) {
                Some(Ok(n)) if !n.trim().is_empty() => n,
                _ => default_name,
            };
            let coe = eval_flag(step.continue_on_error.as_ref(), &ctx);
            let timeout = eval_minutes(step.timeout_minutes.as_ref(), &ctx)
                .and_then(crate::step::step_timeout);
            self.step_name = self.masker.mask(&name).into_owned();
            self.step_started(index, depth, &name);
            let exec = if let Some(e) = setup_err {
                self.say(LineKind::Error, &e);
                Exec::fail()
            } else if step.background {
                self.say(
                    LineKind::Error,
                    "background steps are not supported by firebreak run yet",
                );
                Exec::fail()
            } else {
                match &step.kind {
                    StepKind::Run {
                        run,
                        shell,
                        working_directory,
                    } => {
                        self.exec_run(
                            step,
                            scope,
                            &ctx,
                            &env,
                            run,
                            shell.as_deref(),
                            working_directory.as_ref(),
                            timeout,
                        )
                        .await
                    }
                    StepKind::Uses { uses, with } => {
                        self.exec_uses(step, scope, &ctx, &env, uses, with.as_ref(), &name, timeout)
                            .await
                    }
                    _ => {
                        self.say(
                            LineKind::Error,
                            "wait/cancel/parallel steps are not supported by firebreak run yet",
                        );
                        Exec::fail()
                    }
                }
            };
            // Not left for an exec this step did not make (post steps choose their own).
            self.step_cancel = None;
            let outcome = if exec.failed {
                if self.cancelled() && scope.status == Status::Success {
                    Conclusion::Cancelled
                } else {
                    Conclusion::Failure
                }
            } else {
                Conclusion::Success
            };
            let conclusion = if outcome == Conclusion::Failure && coe {
                Conclusion::Success
            } else {
                outcome
            };
            if outcome == Conclusion::Failure && coe {
                self.say(
                    LineKind::Info,
                    "continue-on-error: the step failed; the job goes on",
                );
            }
            self.record(step, scope, outcome, coe, exec.outputs);
            self.step_finished(index, depth, &name, outcome, conclusion, t0);
        })
    }

    fn record(
        &mut self,
        step: &Step,
        scope: &mut Scope,
        outcome: Conclusion,
        coe: bool,
        outputs: IndexMap<String, String>,
    ) {
        let conclusion = if outcome == Conclusion::Failure && coe {
            Conclusion::Success
        } else {
            outcome
        };
        if conclusion == Conclusion::Failure {
            scope.status = Status::Failure;
        }
        let mut m = IndexMap::new();
        m.insert("outputs".to_string(), string_map_value(&outputs));
        m.insert(
            "outcome".to_string(),
            Value::String(outcome.as_str().into()),
        );
        m.insert(
            "conclusion".to_string(),
            Value::String(conclusion.as_str().into()),
        );
        // Steps without an `id` (generated `__run`, `__actions_checkout`…) are not in the
        // `steps` context, as in GitHub's runner.
        if !step.id.starts_with("__") {
            scope.steps.insert(step.id.clone(), Value::Object(m));
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn exec_run(
        &mut self,
        step: &Step,
        scope: &Scope,
        ctx: &Contexts,
        env: &IndexMap<String, String>,
        run: &firebreak_workflow::Token,
        shell: Option<&str>,
        wd: Option<&firebreak_workflow::Token>,
        timeout: Option<Duration>,
    ) -> Exec {
        let script = match eval_string(run, ctx) {
            Ok(s) => s,
            Err(e) => {
                self.say(LineKind::Error, &format!("run: {e}"));
                return Exec::fail();
            }
        };
        let shell = shell.map(str::to_string).or_else(|| {
            if scope.composite {
                None
            } else {
                self.defaults.shell.clone()
            }
        });
        let working_directory = match wd {
            Some(t) => match eval_string(t, ctx) {
                Ok(s) => Some(s),
                Err(e) => {
                    self.say(LineKind::Error, &format!("working-directory: {e}"));
                    return Exec::fail();
                }
            },
            None if !scope.composite => self.defaults.working_directory.clone(),
            None => None,
        };
        let penv = self.process_env(scope, env, &self.context_name(step));
        let debug = self
            .sh
            .cfg
            .secrets
            .get("ACTIONS_STEP_DEBUG")
            .or_else(|| self.sh.cfg.vars.get("ACTIONS_STEP_DEBUG"))
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let bash_available = if shell.is_none() {
            Some(self.bash_available(&penv).await)
        } else {
            None
        };
        let cancel = Some(self.step_cancel.take().unwrap_or_else(|| self.step_token()));
        let s = ScriptStep {
            script,
            shell,
            working_directory,
            env: penv,
            timeout,
            cancel,
            kill: Some(self.sh.cfg.kill.clone()),
            debug,
            bash_available,
            files: self.step_files.clone(),
            display_name: self.step_name.clone(),
        };
        let o = self.exec_script(s).await;
        Exec {
            failed: o.failed,
            outputs: o.outputs,
        }
    }

    /// Loads the manifest of a resolved action folder (guest path).
    async fn read_manifest(&self, dir: &Path, shown: &str) -> Result<Action, String> {
        for f in ["action.yml", "action.yaml"] {
            let p = dir.join(f);
            match self.sb.read_file(&p).await {
                Ok(Some(bytes)) => {
                    let src = String::from_utf8_lossy(&bytes);
                    return parse_action(&format!("{shown}/{f}"), &src).map_err(|e| e.to_string());
                }
                Ok(None) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        if let Ok(Some(_)) = self.sb.read_file(&dir.join("Dockerfile")).await {
            return Err(format!("'{shown}' is a Docker action (Dockerfile): firebreak runs jobs without Docker, so Docker actions are not supported."));
        }
        Err(format!(
            "Can't find 'action.yml', 'action.yaml' or 'Dockerfile' under '{}'. Did you forget to run actions/checkout before running your local action?",
            dir.display()
        ))
    }

    /// Resolves a `uses:` to its folder inside the sandbox and manifest.
    async fn resolve(&mut self, r: &ActionRef) -> Result<(ActionInfo, Action), String> {
        match r {
            ActionRef::Local(p) => {
                let rel = p.strip_prefix("./").or_else(|| p.strip_prefix(".\\")).unwrap_or(if p == "." { "" } else { p });
                let dir = self.layout.workspace.join(rel.trim_start_matches('/'));
                let dir = normalize(&dir);
                if !dir.starts_with(&self.layout.workspace) {
                    return Err(format!("local action '{p}' is outside the workspace"));
                }
                let m = self.read_manifest(&dir, p).await?;
                Ok((ActionInfo { path: dir.to_string_lossy().into_owned(), repository: String::new(), git_ref: String::new() }, m))
            }
            ActionRef::SelfRepo(rel) => {
                let shown = format!("$/{rel}");
                let source = self.sh.cfg.source().await?;
                let host_dir = normalize(&source.join(rel.trim_start_matches('/')));
                if !host_dir.starts_with(&source) {
                    return Err(format!("action '{shown}' is outside the repository"));
                }
                let guest_root = self.layout.root.join("_actions").join("_self");
                let dir = normalize(&guest_root.join(rel.trim_start_matches('/')));
                if !dir.starts_with(&guest_root) {
                    return Err(format!("action '{shown}' is outside the repository"));
                }
                if !self.copied.contains(&dir) {
                    if !host_dir.is_dir() {
                        return Err(format!("Can't find '{rel}' in the repository for action '{shown}'"));
                    }
                    self.sb
                        .copy_in(&host_dir, &dir)
                        .await
                        .map_err(|e| format!("cannot copy action {shown} into the sandbox: {e}"))?;
                    self.copied.insert(dir.clone());
                }
                let m = self.read_manifest(&dir, &shown).await?;
                let (repository, git_ref) = (self.sh.cfg.repository.clone(), self.sh.cfg.sha.clone());
                Ok((ActionInfo { path: dir.to_string_lossy().into_owned(), repository, git_ref }, m))
            }
            ActionRef::Remote { owner, repo, path, git_ref } => {
                let host_dir = {
                    let _guard = self.sh.fetch_lock.lock().await;
                    ensure_cached(&self.sh.cfg.action_cache, owner, repo, git_ref, self.sh.cfg.offline, &self.sh.cfg.server_url).await?
                };
                let guest_root = self.layout.root.join("_actions").join(owner).join(repo).join(git_ref.replace('/', "%2F"));
                if !self.copied.contains(&guest_root) {
                    self.sb
                        .copy_in(&host_dir, &guest_root)
                        .await
                        .map_err(|e| format!("cannot copy action {owner}/{repo}@{git_ref} into the sandbox: {e}"))?;
                    self.copied.insert(guest_root.clone());
                }
                let dir = if path.is_empty() { guest_root } else { guest_root.join(path) };
                let shown = if path.is_empty() { format!("{owner}/{repo}@{git_ref}") } else { format!("{owner}/{repo}/{path}@{git_ref}") };
                let m = self.read_manifest(&dir, &shown).await?;
                Ok((ActionInfo { path: dir.to_string_lossy().into_owned(), repository: format!("{owner}/{repo}"), git_ref: git_ref.clone() }, m))
            }
            ActionRef::Docker(img) => Err(format!(
                "'docker://{img}': firebreak runs jobs without Docker, so Docker container actions are not supported."
            )),
        }
    }

    /// The action's inputs: `with:` values, else the manifest's defaults. Warns, as GitHub's
    /// runner does, about inputs given that the manifest deprecates or does not declare
    /// (`warn: false` for a second evaluation of the same step, e.g. its `pre`'s). A
    /// `required` input without a value is left to the action (`core.getInput` fails it).
    fn action_inputs(
        &self,
        m: &Action,
        with: &IndexMap<String, String>,
        ctx: &Contexts,
        warn: bool,
    ) -> IndexMap<String, String> {
        // As GitHub's runner builds them: every input the caller gave, in its order and
        // spelling, then the defaults of the others in the order they are declared.
        let mut out: IndexMap<String, String> = with.clone();
        for (k, def) in &m.inputs {
            let given = with.keys().any(|wk| wk.eq_ignore_ascii_case(k));
            let deprecated = def.deprecation_message.as_deref().filter(|d| !d.is_empty());
            if let (true, true, Some(msg)) = (warn, given, deprecated) {
                self.say(
                    LineKind::Warning,
                    &format!("Input '{k}' has been deprecated with message: {msg}"),
                );
            }
            if given {
                continue;
            }
            let v = match &def.default {
                Some(d) => ctx.template(d).unwrap_or_else(|e| {
                    self.say(
                        LineKind::Warning,
                        &format!("input '{k}': default could not be evaluated: {e}"),
                    );
                    String::new()
                }),
                None => String::new(),
            };
            out.insert(k.clone(), v);
        }
        let unexpected: Vec<&String> = with
            .keys()
            .filter(|k| !m.inputs.keys().any(|i| i.eq_ignore_ascii_case(k)))
            .collect();
        if warn && !unexpected.is_empty() {
            self.say(
                LineKind::Warning,
                &format!(
                    "Unexpected input(s) {}, valid inputs are [{}]",
                    unexpected
                        .iter()
                        .map(|s| format!("'{s}'"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    m.inputs
                        .keys()
                        .map(|s| format!("'{s}'"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            for k in unexpected {
                out.insert(k.clone(), with[k].clone());
            }
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    async fn exec_uses(
        &mut self,
        step: &Step,
        scope: &Scope,
        ctx: &Contexts,
        env: &IndexMap<String, String>,
        uses: &str,
        with: Option<&firebreak_workflow::Token>,
        name: &str,
        timeout: Option<Duration>,
    ) -> Exec {
        let with = match eval_string_map(with, ctx) {
            Ok(w) => w,
            Err(e) => {
                self.say(LineKind::Error, &format!("with: {e}"));
                return Exec::fail();
            }
        };
        let r = match ActionRef::parse(uses) {
            Ok(r) => r,
            Err(e) => {
                self.say(LineKind::Error, &e);
                return Exec::fail();
            }
        };
        if r.is_checkout() {
            let penv = self.process_env(scope, env, &self.context_name(step));
            return self.checkout(&with, penv).await;
        }
        let (info, manifest) = match self.resolve(&r).await {
            Ok(x) => x,
            Err(e) => {
                self.say(LineKind::Error, &e);
                return Exec::fail();
            }
        };
        let inner_scope_for_inputs = Scope {
            steps: scope.steps.clone(),
            inputs: scope.inputs.clone(),
            env: IndexMap::new(),
            action: Some(info.clone()),
            status: scope.status,
            depth: scope.depth,
            composite: scope.composite,
            prefix: scope.prefix.clone(),
        };
        let ictx = self.contexts(&inner_scope_for_inputs, env);
        let inputs = self.action_inputs(&manifest, &with, &ictx, true);
        match &manifest.runs {
            Runs::Composite { steps } => {
                let mut overlay = scope.env.clone();
                if let Some(t) = &step.env {
                    if let Ok(m) = eval_string_map(Some(t), ctx) {
                        overlay.extend(m);
                    }
                }
                let mut inner = Scope {
                    steps: IndexMap::new(),
                    inputs: string_map_value(&inputs),
                    env: overlay,
                    action: Some(info.clone()),
                    status: Status::Success,
                    depth: scope.depth + 1,
                    composite: true,
                    prefix: format!("{}{}/", scope.prefix, step.id),
                };
                let steps = steps.clone();
                for s in &steps {
                    self.run_step(s, &mut inner).await;
                }
                let mut env2 = self.global_env.clone();
                env2.extend(inner.env.iter().map(|(k, v)| (k.clone(), v.clone())));
                let octx = self.contexts(&inner, &env2);
                let mut outputs = IndexMap::new();
                for (k, o) in &manifest.outputs {
                    if let Some(v) = &o.value {
                        match octx.template(v) {
                            Ok(s) => {
                                outputs.insert(k.clone(), s);
                            }
                            Err(e) => self.say(LineKind::Warning, &format!("output '{k}': {e}")),
                        }
                    }
                }
                Exec {
                    failed: inner.status == Status::Failure,
                    outputs,
                }
            }
            Runs::Node {
                using,
                main,
                pre,
                pre_if,
                post,
                post_if,
            } => {
                let state_key = format!("{}{}", scope.prefix, step.id);
                let action_env = self.node_env(scope, env, &step.id, &info, &inputs);
                if let (Some(_), ActionRef::Local(path)) = (pre, &r) {
                    // As GitHub: local actions are not there when the job sets up.
                    self.say(
                        LineKind::Warning,
                        &format!("`pre` execution is not supported for local action from '{path}'"),
                    );
                } else if let Some(pre) = pre {
                    if !self.pre_done.contains(&state_key) {
                        self.pre_done.insert(state_key.clone());
                        let cond = pre_if.clone().unwrap_or_else(|| "always()".into());
                        if ictx.condition(&cond).unwrap_or(false) {
                            let script = node_script(
                                self.base_path(),
                                &info.path,
                                pre,
                                using,
                                &self.layout.temp,
                            );
                            let o = self
                                .run_node_entry(script, action_env.clone(), &state_key, timeout)
                                .await;
                            if o.failed {
                                self.say(LineKind::Error, "the action's pre step failed");
                                return Exec {
                                    failed: true,
                                    outputs: o.outputs,
                                };
                            }
                        }
                    }
                }
                let o = self
                    .run_node_entry(
                        node_script(self.base_path(), &info.path, main, using, &self.layout.temp),
                        action_env.clone(),
                        &state_key,
                        timeout,
                    )
                    .await;
                if let Some(post) = post {
                    self.post.push(PostStep {
                        name: format!("Post {name}"),
                        script: node_script(
                            self.base_path(),
                            &info.path,
                            post,
                            using,
                            &self.layout.temp,
                        ),
                        condition: post_if.clone().unwrap_or_else(|| "always()".into()),
                        env: action_env,
                        state_key,
                        depth: scope.depth,
                        action: info.clone(),
                        step_id: step.id.clone(),
                    });
                }
                Exec {
                    failed: o.failed,
                    outputs: o.outputs,
                }
            }
            Runs::Docker { image } => {
                self.say(LineKind::Error, &format!("'{uses}' is a Docker action (image '{image}'): firebreak runs jobs without Docker, so Docker actions are not supported."));
                Exec::fail()
            }
            Runs::Unknown { using } => {
                self.say(
                    LineKind::Error,
                    &format!("'{uses}': unsupported action type `using: {using}`"),
                );
                Exec::fail()
            }
        }
    }

    fn node_env(
        &self,
        scope: &Scope,
        env: &IndexMap<String, String>,
        step_id: &str,
        info: &ActionInfo,
        inputs: &IndexMap<String, String>,
    ) -> IndexMap<String, String> {
        let s = Scope {
            steps: IndexMap::new(),
            inputs: Value::Null,
            env: IndexMap::new(),
            action: Some(info.clone()),
            status: scope.status,
            depth: scope.depth,
            composite: scope.composite,
            prefix: String::new(),
        };
        let mut e = self.process_env(&s, env, step_id);
        for (k, v) in inputs {
            e.insert(
                format!("INPUT_{}", k.replace(' ', "_").to_ascii_uppercase()),
                v.clone(),
            );
        }
        e
    }

    async fn run_node_entry(
        &mut self,
        script: String,
        mut env: IndexMap<String, String>,
        state_key: &str,
        timeout: Option<Duration>,
    ) -> StepOutcome {
        if let Some(st) = self.states.get(state_key) {
            for (k, v) in st {
                env.insert(format!("STATE_{k}"), v.clone());
            }
        }
        let cancel = Some(self.step_cancel.take().unwrap_or_else(|| self.step_token()));
        // No `shell:`: bash where the sandbox has it. dash (`sh`) drops variables whose
        // names are not shell identifiers before `exec node`, and input names keep their
        // hyphens (`INPUT_NODE-VERSION`), as `@actions/core` reads them.
        let s = ScriptStep {
            script,
            shell: None,
            working_directory: None,
            env,
            timeout,
            cancel,
            kill: Some(self.sh.cfg.kill.clone()),
            debug: false,
            bash_available: None,
            files: self.step_files.clone(),
            display_name: self.step_name.clone(),
        };
        let o = self.exec_script(s).await;
        if o.status == crate::sandbox::ExitStatus::Exited(127) {
            self.say(LineKind::Error, "JavaScript actions need `node` on the PATH inside the sandbox (exit code 127: command not found)");
        }
        if !o.state.is_empty() {
            self.states
                .entry(state_key.to_string())
                .or_default()
                .extend(o.state.clone());
        }
        o
    }

    /// `pre` of a remote JavaScript action, at job start.
    async fn run_job_start_pre(&mut self, step: &Step, scope: &Scope) {
        let StepKind::Uses { uses, with } = &step.kind else {
            return;
        };
        let Ok(r) = ActionRef::parse(uses) else {
            return;
        };
        if !matches!(r, ActionRef::Remote { .. } | ActionRef::SelfRepo(_)) || r.is_checkout() {
            return;
        }
        let Ok((info, manifest)) = self.resolve(&r).await else {
            return;
        };
        let Runs::Node {
            using,
            pre: Some(pre),
            pre_if,
            ..
        } = &manifest.runs
        else {
            return;
        };
        let t0 = Instant::now();
        let state_key = format!("{}{}", scope.prefix, step.id);
        self.pre_done.insert(state_key.clone());
        let env = self.global_env.clone();
        let s = Scope {
            steps: IndexMap::new(),
            inputs: scope.inputs.clone(),
            env: IndexMap::new(),
            action: Some(info.clone()),
            status: self.status,
            depth: 0,
            composite: false,
            prefix: String::new(),
        };
        let ctx = self.contexts(&s, &env);
        let cond = pre_if.clone().unwrap_or_else(|| "always()".into());
        if !ctx.condition(&cond).unwrap_or(false) {
            return;
        }
        let name = format!(
            "Pre {}",
            step.name
                .as_ref()
                .and_then(|n| eval_string(n, &ctx).ok())
                .unwrap_or_else(|| default_step_name(step))
        );
        let index = self.next_index();
        self.step_started(index, 0, &name);
        let with = eval_string_map(with.as_ref(), &ctx).unwrap_or_default();
        let inputs = self.action_inputs(&manifest, &with, &ctx, false);
        let aenv = self.node_env(&s, &env, &step.id, &info, &inputs);
        let o = self
            .run_node_entry(
                node_script(self.base_path(), &info.path, pre, using, &self.layout.temp),
                aenv,
                &state_key,
                None,
            )
            .await;
        let c = if o.failed {
            Conclusion::Failure
        } else {
            Conclusion::Success
        };
        if o.failed {
            self.status = Status::Failure;
        }
        self.step_finished(index, 0, &name, c, c, t0);
    }

    async fn run_post(&mut self, p: PostStep, scope: &Scope) {
        let t0 = Instant::now();
        let s = Scope {
            steps: scope.steps.clone(),
            inputs: scope.inputs.clone(),
            env: IndexMap::new(),
            action: Some(p.action.clone()),
            status: self.status,
            depth: p.depth,
            composite: false,
            prefix: String::new(),
        };
        let ctx = self.contexts(&s, &self.global_env);
        match ctx.condition(&p.condition) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                self.say(LineKind::Error, &format!("post-if '{}': {e}", p.condition));
                return;
            }
        }
        let index = self.next_index();
        self.step_started(index, p.depth, &p.name);
        let _ = &p.step_id;
        let o = self
            .run_node_entry(p.script, p.env, &p.state_key, None)
            .await;
        let c = if o.failed {
            Conclusion::Failure
        } else {
            Conclusion::Success
        };
        if o.failed {
            self.status = Status::Failure;
        }
        self.step_finished(index, p.depth, &p.name, c, c, t0);
    }

    /// The built-in `actions/checkout`: copies the staged repository into the workspace.
    async fn checkout(
        &mut self,
        with: &IndexMap<String, String>,
        env: IndexMap<String, String>,
    ) -> Exec {
        let cfg = self.sh.cfg.clone();
        if let Some(repo) = with
            .get("repository")
            .filter(|r| !r.is_empty() && !r.eq_ignore_ascii_case(&cfg.repository))
        {
            self.say(
                LineKind::Error,
                &format!("actions/checkout of another repository ('{repo}') is not supported by firebreak's built-in checkout; only {} is available.", cfg.repository),
            );
            return Exec::fail();
        }
        let path = with.get("path").map(String::as_str).unwrap_or("").trim();
        let dest = normalize(&self.layout.workspace.join(path));
        if !dest.starts_with(&self.layout.workspace) {
            self.say(
                LineKind::Error,
                &format!("checkout path '{path}' is outside the workspace"),
            );
            return Exec::fail();
        }
        let source = match cfg.source().await {
            Ok(p) => p,
            Err(e) => {
                self.say(LineKind::Error, &format!("checkout: {e}"));
                return Exec::fail();
            }
        };
        // Copy-on-write where the sandbox can (an overlay: O(1) in files), else a copy.
        let mounted = match self.sb.mount_in(&source, &dest).await {
            Ok(MountOutcome::Mounted) => true,
            Ok(MountOutcome::Unsupported) => false,
            Ok(MountOutcome::Failed(why)) => {
                self.say(
                    LineKind::Info,
                    &format!("checkout: no overlay ({why}); copying the repository instead"),
                );
                false
            }
            Err(e) => {
                self.say(
                    LineKind::Info,
                    &format!("checkout: no overlay ({e}); copying the repository instead"),
                );
                false
            }
        };
        if !mounted {
            if let Err(e) = self.sb.copy_in(&source, &dest).await {
                self.say(
                    LineKind::Error,
                    &format!(
                        "checkout: cannot copy the repository into {}: {e}",
                        dest.display()
                    ),
                );
                return Exec::fail();
            }
        }
        self.say(
            LineKind::Info,
            &format!(
                "{} {} {} into the workspace{} (firebreak's built-in actions/checkout)",
                if mounted {
                    "Mounted (copy-on-write)"
                } else {
                    "Copied"
                },
                cfg.repository,
                if cfg.sha.is_empty() {
                    "(working tree, no commit)".to_string()
                } else {
                    format!("at {}", short(&cfg.sha))
                },
                if path.is_empty() {
                    String::new()
                } else {
                    format!(" at '{path}'")
                }
            ),
        );
        let mut outputs = IndexMap::new();
        outputs.insert("ref".to_string(), cfg.git_ref.clone());
        outputs.insert("commit".to_string(), cfg.sha.clone());
        // `ref:` another branch, tag or commit: checked out in the job's copy, from the
        // repository's own history (nothing is fetched).
        let wanted = with.get("ref").map(|r| r.trim()).unwrap_or("");
        let current = [
            cfg.git_ref.as_str(),
            cfg.git_ref.strip_prefix("refs/heads/").unwrap_or(""),
            cfg.git_ref.strip_prefix("refs/tags/").unwrap_or(""),
            cfg.sha.as_str(),
        ];
        if !wanted.is_empty() && !current.contains(&wanted) {
            // Not in a copy of a `git worktree` (its `.git` is a file pointing into the
            // user's repository, whose HEAD and index the checkout would move); no checkout
            // when the ref is the commit the copy is at (its uncommitted edits stay).
            let script = format!(
                r#"cd {dest}
if [ ! -d .git ]; then
  echo "checkout: 'ref: {raw}' needs a repository of its own; this one is a git worktree, whose checkout would move the original's HEAD" >&2
  exit 1
fi
target=$(git rev-parse --verify -q {rc}) || {{
  echo "checkout: '{raw}' is not a branch, tag or commit of this repository's history (the built-in checkout fetches nothing)" >&2
  exit 1
}}
if [ "$target" != "$(git rev-parse HEAD)" ]; then
  git -c advice.detachedHead=false checkout --force --quiet {r} -- || exit 1
  # The working tree's other files (untracked, ignored) are not the other ref's: a fresh
  # checkout of it, as GitHub's, has none (`clean: false` keeps them, as there).
  if [ {clean} = true ]; then git clean -ffdxq || exit 1; fi
  echo "Checked out {raw} at $(git rev-parse --short=12 HEAD)"
fi
echo "ref={raw}" >> "$GITHUB_OUTPUT"
echo "commit=$target" >> "$GITHUB_OUTPUT"
"#,
                dest = sh_quote(&dest.to_string_lossy()),
                r = sh_quote(wanted),
                rc = sh_quote(&format!("{wanted}^{{commit}}")),
                raw = wanted.replace(['"', '\\', '$', '`', '\n', '\''], ""),
                // actions/checkout's `clean` input (default true).
                clean = if with
                    .get("clean")
                    .is_some_and(|c| c.trim().eq_ignore_ascii_case("false"))
                {
                    "false"
                } else {
                    "true"
                },
            );
            let cancel = Some(self.step_cancel.take().unwrap_or_else(|| self.step_token()));
            let o = self
                .exec_script(ScriptStep {
                    script,
                    shell: None,
                    working_directory: None,
                    env,
                    timeout: None,
                    cancel,
                    kill: Some(self.sh.cfg.kill.clone()),
                    debug: false,
                    bash_available: None,
                    files: self.step_files.clone(),
                    display_name: self.step_name.clone(),
                })
                .await;
            if o.failed {
                return Exec::fail();
            }
            outputs.extend(o.outputs);
        }
        Exec {
            failed: false,
            outputs,
        }
    }
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

/// Runs a JavaScript action's entry with the runner's Node.js, as GitHub runs it with its
/// own (`externals/nodeNN`): `node` found on the job's base `PATH`, not one a step put first
/// through `GITHUB_PATH` (a project's `setup-node` must not change what runs the actions),
/// else whatever `node` the job's `PATH` has.
fn node_script(base_path: &str, dir: &str, entry: &str, using: &str, temp: &Path) -> String {
    let p = Path::new(dir).join(entry);
    let node = format!(
        "node=$(PATH={} command -v node) || node=node\n",
        sh_quote(base_path)
    );
    // An action for a newer Node.js than the job's runs on the job's all the same (there is
    // no other), with a warning saying so: a preload in the same process, no second node.
    let Some(wanted) = using
        .strip_prefix("node")
        .and_then(|v| v.parse::<u32>().ok())
    else {
        return format!("{node}exec \"$node\" {}\n", sh_quote(&p.to_string_lossy()));
    };
    let check = temp.join(format!(".firebreak-node{wanted}.js"));
    let js = format!(
        "if (+process.versions.node.split(\".\")[0] < {wanted}) console.log(\"::warning::This action declares `using: {using}`; the job runs it on Node.js \" + process.version + \", the node on the job's PATH (install Node.js {wanted} or later there)\");"
    );
    format!(
        "{node}printf '%s\\n' {} > {}\nexec \"$node\" -r {} {}\n",
        sh_quote(&js),
        sh_quote(&check.to_string_lossy()),
        sh_quote(&check.to_string_lossy()),
        sh_quote(&p.to_string_lossy())
    )
}

/// The `PATH` of a job in a guest system of its own (a microVM): Debian's, as its login
/// shells set it for root.
const GUEST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// GitHub's default display name of a step.
pub fn default_step_name(step: &Step) -> String {
    match &step.kind {
        StepKind::Run { run, .. } => {
            let text = match &run.kind {
                firebreak_workflow::TokenKind::String(s) => s.to_string(),
                firebreak_workflow::TokenKind::Expr(e) => e
                    .source
                    .clone()
                    .unwrap_or_else(|| format!("${{{{ {} }}}}", e.expr)),
                _ => run.literal_display(),
            };
            let first = text
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("");
            format!("Run {first}")
        }
        StepKind::Uses { uses, .. } => format!("Run {uses}"),
        _ => step.id.clone(),
    }
}

/// Removes `.` and resolves `..` lexically.
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// A file-name-safe form of a job name.
pub fn sanitize(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    out.trim_start_matches('.').to_string()
}
