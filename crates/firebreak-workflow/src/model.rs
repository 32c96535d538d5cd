//! The typed workflow model produced by [`crate::parse_workflow`].
//!
//! Values that may hold `${{ }}` expressions are kept as [`Token`]s (evaluable later by the
//! executor); values GitHub requires to be literal are plain Rust types.

use std::sync::Arc;

use indexmap::IndexMap;
use serde::Serialize;

use crate::diag::Pos;
use crate::token::Token;

#[derive(Clone, Debug, Serialize)]
pub struct Workflow {
    /// `name:` (a literal string).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `run-name:` (may use `github`, `inputs`, `vars`).
    #[serde(rename = "run-name", skip_serializing_if = "Option::is_none")]
    pub run_name: Option<Token>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `on:` with every event normalized to a configuration.
    pub on: IndexMap<String, EventConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Permissions>,
    /// Workflow-level `env:` (a mapping token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<Token>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub defaults: Option<RunDefaults>,
    /// `concurrency:` as written (string or mapping token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Token>,
    /// Jobs in declaration order, shared (not copied) by [`crate::plan::JobPlan::job`] and the
    /// executor.
    pub jobs: Vec<Arc<Job>>,
}

impl Workflow {
    pub fn job(&self, id: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.id == id).map(|j| &**j)
    }

    /// True when `on:` lists `event`.
    pub fn triggered_by(&self, event: &str) -> bool {
        self.on.contains_key(event)
    }
}

/// Configuration of one event under `on:`. Fields not valid for the event stay `None`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct EventConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub types: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branches: Option<Vec<String>>,
    #[serde(rename = "branches-ignore", skip_serializing_if = "Option::is_none")]
    pub branches_ignore: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(rename = "tags-ignore", skip_serializing_if = "Option::is_none")]
    pub tags_ignore: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
    #[serde(rename = "paths-ignore", skip_serializing_if = "Option::is_none")]
    pub paths_ignore: Option<Vec<String>>,
    /// `workflow_run.workflows`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflows: Option<Vec<String>>,
    /// `image_version.names`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub names: Option<Vec<String>>,
    /// `image_version.versions`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub versions: Option<Vec<String>>,
    /// `schedule:` entries.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub schedule: Vec<Schedule>,
    /// `workflow_dispatch` / `workflow_call` inputs.
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    pub inputs: IndexMap<String, InputDef>,
    /// `workflow_call` outputs.
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    pub outputs: IndexMap<String, OutputDef>,
    /// `workflow_call` secrets.
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    pub secrets: IndexMap<String, SecretDef>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Schedule {
    pub cron: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    #[default]
    String,
    Boolean,
    Number,
    Choice,
    Environment,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct InputDef {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(rename = "type")]
    pub input_type: InputType,
    pub required: bool,
    /// Literal default or an expression token (`workflow_call` defaults may use `github`, `inputs`, `vars`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<Token>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<String>>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OutputDef {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub value: Token,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SecretDef {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub required: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Permissions {
    ReadAll,
    WriteAll,
    /// scope → `read` | `write` | `none`
    Scopes(IndexMap<String, String>),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RunDefaults {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
    #[serde(rename = "working-directory", skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Job {
    pub id: String,
    /// Position of the job's key.
    pub pos: Pos,
    /// Display name: `name:` or the id.
    pub name: Token,
    pub needs: Vec<String>,
    /// The final condition, e.g. `success()` or `success() && (github.ref == 'x')`.
    #[serde(rename = "if")]
    pub if_condition: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Token>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Permissions>,
    #[serde(flatten)]
    pub kind: JobKind,
}

impl Job {
    pub fn steps(&self) -> &[Step] {
        match &self.kind {
            JobKind::Steps(j) => &j.steps,
            JobKind::Reusable(_) => &[],
        }
    }
}

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum JobKind {
    /// A job that runs steps on a runner.
    Steps(Box<StepsJob>),
    /// A job that calls a reusable workflow (`uses:`).
    Reusable(Box<ReusableJob>),
}

#[derive(Clone, Debug, Serialize)]
pub struct Strategy {
    /// `matrix:` as written (mapping token or a `${{ }}` expression).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matrix: Option<Token>,
    /// `fail-fast` (default `true`).
    #[serde(rename = "fail-fast", skip_serializing_if = "Option::is_none")]
    pub fail_fast: Option<Token>,
    #[serde(rename = "max-parallel", skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<Token>,
    /// The whole `strategy:` token (it may itself be an expression; serialized only then).
    #[serde(skip_serializing_if = "is_not_expression")]
    pub token: Token,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct StepsJob {
    /// `runs-on:` (string, list, `{group, labels}` or expression).
    #[serde(rename = "runs-on", skip_serializing_if = "Option::is_none")]
    pub runs_on: Option<Token>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<Token>,
    /// `environment:` (string or `{name, url, deployment}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<Token>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Token>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub defaults: Option<RunDefaults>,
    #[serde(rename = "timeout-minutes", skip_serializing_if = "Option::is_none")]
    pub timeout_minutes: Option<Token>,
    #[serde(
        rename = "cancel-timeout-minutes",
        skip_serializing_if = "Option::is_none"
    )]
    pub cancel_timeout_minutes: Option<Token>,
    #[serde(rename = "continue-on-error", skip_serializing_if = "Option::is_none")]
    pub continue_on_error: Option<Token>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<Token>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub services: Option<Token>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<Token>,
    pub steps: Vec<Step>,
}

/// The repository path a local `uses:` names: after `./` (the workflow's repository at the
/// running commit) or `$/` (GitHub's newer spelling of the same, "the self repository");
/// `None` for a remote reference (`owner/repo/...@ref`) or `docker://`.
pub fn local_uses_path(uses: &str) -> Option<&str> {
    uses.strip_prefix("./").or_else(|| uses.strip_prefix("$/"))
}

#[derive(Clone, Debug, Serialize)]
pub struct ReusableJob {
    /// `uses:` — `owner/repo/path@ref` or `./path`.
    pub uses: String,
    /// Position of the `uses:` value.
    #[serde(skip)]
    pub uses_pos: Pos,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub with: Option<Token>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secrets: Option<Token>,
    #[serde(rename = "secrets-inherit")]
    pub inherit_secrets: bool,
    /// The called workflow, when its source was supplied to the parser (shared by the plan of
    /// this job).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub called: Option<Arc<Workflow>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Step {
    /// Explicit `id:` or GitHub's generated id (`__run`, `__actions_checkout`, …).
    pub id: String,
    /// Position of the step's mapping (its first key).
    #[serde(skip)]
    pub pos: Pos,
    /// True when `id` was generated.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub generated_id: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<Token>,
    /// Final condition (`None` for wait/cancel steps, which have no `if`).
    #[serde(rename = "if", skip_serializing_if = "Option::is_none")]
    pub if_condition: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<Token>,
    #[serde(rename = "continue-on-error", skip_serializing_if = "Option::is_none")]
    pub continue_on_error: Option<Token>,
    #[serde(rename = "timeout-minutes", skip_serializing_if = "Option::is_none")]
    pub timeout_minutes: Option<Token>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub background: bool,
    #[serde(flatten)]
    pub kind: StepKind,
}

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum StepKind {
    Run {
        run: Token,
        #[serde(skip_serializing_if = "Option::is_none")]
        shell: Option<String>,
        #[serde(rename = "working-directory", skip_serializing_if = "Option::is_none")]
        working_directory: Option<Token>,
    },
    Uses {
        uses: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        with: Option<Token>,
    },
    Wait {
        wait: Vec<String>,
    },
    WaitAll,
    Cancel {
        cancel: String,
    },
    Parallel {
        parallel: Vec<Step>,
    },
}

fn is_not_expression(t: &Token) -> bool {
    !t.is_expression()
}
