//! Jobs that call a reusable workflow (`jobs.<id>.uses: ./.github/workflows/x.yml`).
//!
//! The parser loads the called workflow when the caller supplies its source (the CLI does for
//! local `./…` references); then such a job (each matrix leg of it) runs the called workflow's
//! jobs as a nested workflow run:
//!
//! * `inputs` are the job's `with:` over the defaults of `on.workflow_call.inputs`, typed
//!   (`boolean`, `number`, `string`); `secrets` are the job's `secrets:` mapping, or all of the
//!   caller's with `secrets: inherit`; the `github` context is the caller's.
//! * The called jobs are shown as `caller / called` and share the run's `--jobs` slots; the
//!   caller's cancellation (Ctrl-C, fail-fast) reaches them.
//! * The job's outputs are `on.workflow_call.outputs.<name>.value`, evaluated over the `jobs`
//!   context (`jobs.<id>.result`, `jobs.<id>.outputs`); its result is the called workflow's.
//!
//! A remote reusable workflow (`owner/repo/.github/workflows/x.yml@ref`) is not loaded: the
//! job fails with a message saying so.

use std::sync::Arc;
use std::time::Instant;

use firebreak_expr::Value;
use firebreak_workflow::plan;
use firebreak_workflow::{InputType, JobKind};
use indexmap::IndexMap;

use super::events::{Conclusion, Event, LineKind};
use super::expr::{eval_token, string_map_value, Contexts};
use super::job::{LegResult, LegSpec};
use super::{run_workflow, BoxFut, RunConfig, WorkflowShared};

fn fail(sh: &WorkflowShared, spec: &LegSpec, msg: String, t0: Instant) -> LegResult {
    sh.events.send(Event::Output {
        job: spec.key.clone(),
        step: None,
        kind: LineKind::Error,
        line: msg,
    });
    finish(sh, spec, Conclusion::Failure, IndexMap::new(), t0);
    LegResult {
        result: Conclusion::Failure,
        outputs: IndexMap::new(),
        continue_on_error: false,
        nested: Vec::new(),
    }
}

fn finish(
    sh: &WorkflowShared,
    spec: &LegSpec,
    result: Conclusion,
    outputs: IndexMap<String, String>,
    t0: Instant,
) {
    sh.events.send(Event::JobFinished {
        job: spec.key.clone(),
        result,
        continue_on_error: false,
        duration_ms: t0.elapsed().as_millis() as u64,
        outputs,
    });
}

/// Runs one leg of a reusable-workflow job.
pub(crate) fn run_reusable(sh: Arc<WorkflowShared>, spec: LegSpec) -> BoxFut<'static, LegResult> {
    Box::pin(async move {
        let t0 = Instant::now();
        sh.events.send(Event::JobStarted {
            job: spec.key.clone(),
        });
        let JobKind::Reusable(r) = &spec.job.kind else {
            return fail(&sh, &spec, "not a reusable-workflow job".into(), t0);
        };
        let cfg = &sh.cfg;
        let called = r.called.as_ref().or_else(|| {
            cfg.reusable
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(&r.uses))
                .map(|(_, w)| w)
        });
        let Some(called) = called else {
            return fail(
                &sh,
                &spec,
                format!(
                    "Job '{}' calls the reusable workflow '{}': firebreak runs local reusable workflows (uses: ./.github/workflows/…) only.",
                    spec.job.id, r.uses
                ),
                t0,
            );
        };
        // contexts of the calling job
        let mut facts = crate::context::RunFacts::new(
            cfg.event_name.clone(),
            cfg.event.clone(),
            cfg.repository.clone(),
            spec.job.id.clone(),
            "",
            "",
        );
        facts.sha = Some(cfg.sha.clone());
        facts.git_ref = Some(cfg.git_ref.clone());
        facts.actor = Some(cfg.actor.clone());
        facts.run_id = cfg.run_id;
        facts.run_number = cfg.run_number;
        facts.workflow = sh.workflow_name.clone();
        facts.workflow_path = Some(sh.workflow_path.clone());
        let mut ctx = Contexts::new();
        ctx.set(
            "github",
            Value::from_json(&crate::context::github_context(&facts)),
        );
        ctx.set("needs", spec.needs.clone());
        ctx.set("vars", string_map_value(&cfg.vars));
        ctx.set("secrets", string_map_value(&cfg.secrets));
        ctx.set("inputs", cfg.inputs.clone());
        ctx.set("matrix", spec.matrix.clone());
        ctx.set("strategy", spec.strategy.clone());
        let with = match r.with.as_ref().map(|t| eval_token(t, &ctx)) {
            None => IndexMap::new(),
            Some(Ok(Value::Object(m))) => m,
            Some(Ok(Value::Null)) => IndexMap::new(),
            Some(Ok(v)) => {
                return fail(
                    &sh,
                    &spec,
                    format!("with: expected a mapping, got {}", v.kind_name()),
                    t0,
                )
            }
            Some(Err(e)) => return fail(&sh, &spec, format!("with: {e}"), t0),
        };
        let call = called.on.get("workflow_call").cloned().unwrap_or_default();
        let inputs = match called_inputs(&call.inputs, &with, &|t| {
            eval_token(t, &ctx).map_err(|e| e.to_string())
        }) {
            Ok(i) => i,
            Err(e) => return fail(&sh, &spec, e, t0),
        };
        let secrets: IndexMap<String, String> = if r.inherit_secrets {
            cfg.secrets.clone()
        } else {
            let mut m = IndexMap::new();
            if let Some(t) = &r.secrets {
                match eval_token(t, &ctx) {
                    Ok(Value::Object(o)) => {
                        for (k, v) in o {
                            m.insert(k, v.to_coerced_string());
                        }
                    }
                    Ok(_) => {}
                    Err(e) => return fail(&sh, &spec, format!("secrets: {e}"), t0),
                }
            }
            if let Some(tok) = cfg.secrets.get("GITHUB_TOKEN") {
                m.entry("GITHUB_TOKEN".to_string())
                    .or_insert_with(|| tok.clone());
            }
            m
        };
        let path = firebreak_workflow::local_uses_path(&r.uses)
            .unwrap_or(&r.uses)
            .to_string();
        let ev = plan::Event {
            name: "workflow_call".into(),
            payload: cfg.event.clone(),
            changed_files: None,
        };
        let p = plan::plan(&[(path.clone(), Arc::clone(called))], &ev);
        let Some(wp) = p.workflows.into_iter().next() else {
            return fail(
                &sh,
                &spec,
                format!(
                    "'{}' is not callable: it has no `on: workflow_call`",
                    r.uses
                ),
                t0,
            );
        };
        let ncfg = RunConfig {
            inputs: Value::Object(inputs.clone()),
            secrets,
            only_jobs: Vec::new(),
            matrix_filter: Vec::new(),
            cancel: spec.cancel.child_token(),
            job_prefix: format!("{} / ", spec.key.name),
            github_workflow: Some(sh.github_workflow()),
            concurrency_held: cfg
                .concurrency_held
                .iter()
                .cloned()
                .chain(spec.held_group.clone())
                .collect(),
            ..(**cfg).clone()
        };
        let outcome = match run_workflow(&wp, &path, Arc::new(ncfg), sh.events.clone()).await {
            Ok(o) => o,
            Err(e) => return fail(&sh, &spec, format!("{}: {e}", r.uses), t0),
        };
        // outputs over the `jobs` context
        let mut jobs = IndexMap::new();
        for j in &outcome.jobs {
            let mut m = IndexMap::new();
            m.insert(
                "result".to_string(),
                Value::String(j.result.as_str().into()),
            );
            m.insert("outputs".to_string(), string_map_value(&j.outputs));
            jobs.insert(j.id.clone(), Value::Object(m));
        }
        let mut octx = Contexts::new();
        octx.set(
            "github",
            ctx.values.get("github").cloned().unwrap_or_default(),
        );
        octx.set("vars", string_map_value(&cfg.vars));
        octx.set("inputs", Value::Object(inputs));
        octx.set("jobs", Value::Object(jobs));
        let mut outputs = IndexMap::new();
        for (k, o) in &call.outputs {
            match eval_token(&o.value, &octx) {
                Ok(v) => {
                    outputs.insert(
                        k.clone(),
                        if v.is_null() {
                            String::new()
                        } else {
                            v.to_coerced_string()
                        },
                    );
                }
                Err(e) => sh.events.send(Event::Output {
                    job: spec.key.clone(),
                    step: None,
                    kind: LineKind::Warning,
                    line: format!("output '{k}': {e}"),
                }),
            }
        }
        let result = outcome.result;
        finish(&sh, &spec, result, outputs.clone(), t0);
        LegResult {
            result,
            outputs,
            continue_on_error: false,
            nested: outcome
                .jobs
                .iter()
                .flat_map(|j| j.legs.iter().cloned())
                .collect(),
        }
    })
}

/// A called workflow's `inputs` context: each input `on.workflow_call.inputs` declares, from
/// the caller's `with:` (keys compared ignoring case) or else its default (an expression
/// evaluated by `default`), typed as GitHub does: a boolean or number input takes only a
/// boolean or a number (`'false'` is an error there too), a string input any scalar, made a
/// string; a missing one is `false`, `0` or `''`. The error names the input.
pub fn called_inputs(
    declared: &IndexMap<String, firebreak_workflow::InputDef>,
    with: &IndexMap<String, Value>,
    default: &dyn Fn(&firebreak_workflow::Token) -> Result<Value, String>,
) -> Result<IndexMap<String, Value>, String> {
    let mut inputs: IndexMap<String, Value> = IndexMap::new();
    for (k, def) in declared {
        let given = with
            .iter()
            .find(|(w, _)| w.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone());
        let raw = match (given, &def.default) {
            (Some(v), _) => Some(v),
            (None, Some(t)) => Some(default(t).map_err(|e| format!("input '{k}': {e}"))?),
            (None, None) => None,
        };
        let v = match (def.input_type, raw) {
            (InputType::Boolean, Some(Value::Bool(b))) => Ok(Value::Bool(b)),
            (InputType::Boolean, None) => Ok(Value::Bool(false)),
            (InputType::Number, Some(Value::Number(n))) => Ok(Value::Number(n)),
            (InputType::Number, None) => Ok(Value::Number(0.0)),
            (_, Some(Value::Object(_))) => Err("A mapping was not expected".to_string()),
            (_, Some(Value::Array(_))) => Err("A sequence was not expected".to_string()),
            (InputType::Boolean | InputType::Number, Some(v)) => {
                Err(format!("Unexpected value '{}'", v.to_coerced_string()))
            }
            (_, Some(v)) => Ok(Value::String(v.to_coerced_string())),
            (_, None) => Ok(Value::String(String::new())),
        };
        inputs.insert(k.clone(), v.map_err(|e| format!("input '{k}': {e}"))?);
    }
    Ok(inputs)
}
