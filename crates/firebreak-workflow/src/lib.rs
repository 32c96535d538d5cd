//! firebreak-workflow: the GitHub Actions workflow language front end.
//!
//! This crate owns everything between a workflow file's text and an executable plan:
//!
//! * `yaml` — YAML 1.2 (core schema) parsing with positions, anchors/aliases and tags (a
//!   hand-written scanner for workflow-shaped YAML, `saphyr-parser` for everything else);
//! * `schema` + `reader` — validation against the workflow language with GitHub's messages,
//!   including where `${{ }}` expressions are allowed and which contexts they may use;
//! * `convert` + [`model`] — the typed [`Workflow`] (events, jobs, steps, default step ids,
//!   `if` conditions) and GitHub's post-read checks (ids, `needs`, containers, reusable
//!   workflow inputs/secrets);
//! * [`refusals`] — what GitHub's parser accepts but GitHub.com refuses when it creates a run
//!   (jobs without steps, unresolvable reusable-workflow references): warnings here, errors of
//!   the triggered workflow in a plan;
//! * [`plan`] — which workflows an event triggers and the jobs/matrix legs to run
//!   (using [`filter`], [`graph`] and [`matrix`]).
//!
//! It is a pure library: no file system or network access. Everything is reported through
//! [`Diagnostic`]s (all errors, in GitHub's order), never by panicking.

pub mod action;
pub mod filter;
pub mod graph;
pub mod matrix;

mod convert;
mod cron;
pub mod diag;
mod exprs;
pub mod model;
pub mod plan;
mod reader;
pub mod refusals;
mod reusable;
mod schema;
pub mod token;
mod yaml;

use indexmap::IndexMap;

pub use convert::{DISPATCH_INPUTS_LIMIT, MAX_DISPATCH_INPUTS};
pub use diag::{CallSite, Diagnostic, Pos};
pub use model::*;
pub use token::{ExprToken, Token, TokenKind};

/// Result of [`parse_workflow`]: the workflow when it is valid, and every error found.
#[derive(Clone, Debug)]
pub struct Parsed {
    pub workflow: Option<Workflow>,
    pub diagnostics: Vec<Diagnostic>,
    /// What GitHub's workflow parser accepts (so it is no error here) but GitHub.com
    /// refuses when the workflow runs, e.g. `branches` and `branches-ignore` on one event.
    pub warnings: Vec<Diagnostic>,
}

impl Parsed {
    pub fn is_ok(&self) -> bool {
        self.diagnostics.is_empty() && self.workflow.is_some()
    }
}

/// Options for [`parse_workflow_with`].
#[derive(Clone, Debug)]
pub struct ParseOptions {
    /// Maximum nesting depth of mappings/sequences (GitHub: 50; the root counts as 1).
    pub max_depth: usize,
    /// Maximum file size in characters (GitHub: 1 MiB).
    pub max_file_size: usize,
    /// GitHub's experimental `allowBackgroundSteps` feature (`background`, `wait`, `wait-all`,
    /// `cancel`, `parallel` steps).
    pub allow_background_steps: bool,
    /// Sources of called reusable workflows keyed by their `uses:` reference
    /// (`owner/repo/.github/workflows/x.yml@ref` or `./.github/workflows/x.yml`). When `Some`,
    /// every reusable-workflow job must find its workflow here and its `with`/`secrets` are
    /// checked against the called workflow's `on.workflow_call`.
    pub reusable_workflows: Option<IndexMap<String, String>>,
    /// What a reusable-workflow job whose workflow is not in `reusable_workflows` gets.
    pub unresolved_reusable: UnresolvedReusable,
    /// How deep reusable workflows may call each other (the caller is depth 0).
    pub max_nested_reusable_depth: usize,
    /// Maximum number of jobs, counting the jobs of called workflows (`None`: no limit).
    pub max_job_limit: Option<usize>,
    /// The repository's default `GITHUB_TOKEN` permissions, granted to jobs that set none.
    pub permissions_policy: PermissionsPolicy,
}

/// What a call to a reusable workflow whose source was not supplied gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UnresolvedReusable {
    /// An error at its `uses:` (the source of every called workflow was expected).
    #[default]
    Error,
    /// An error for a local one (`./.github/workflows/x.yml`, which the repository should
    /// hold); a remote one (`owner/repo/…@ref`) is left unchecked and unloaded.
    ErrorIfLocal,
    /// Left unchecked and unloaded (the caller could not look for it).
    Skip,
}

/// The repository setting for the default `GITHUB_TOKEN` permissions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PermissionsPolicy {
    /// Read access to contents and packages only (GitHub's default for new repositories).
    #[default]
    LimitedRead,
    /// Read and write access to every scope.
    Write,
}

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions {
            max_depth: yaml::DEFAULT_MAX_DEPTH,
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            allow_background_steps: false,
            reusable_workflows: None,
            unresolved_reusable: UnresolvedReusable::Error,
            max_nested_reusable_depth: DEFAULT_MAX_NESTED_REUSABLE_DEPTH,
            max_job_limit: None,
            permissions_policy: PermissionsPolicy::LimitedRead,
        }
    }
}

/// How many levels of reusable workflows may be nested by default: GitHub connects "a
/// maximum of ten levels of workflows", the caller and nine of reusable ones below it (the
/// runner's loader counts the first called workflow as depth 1).
pub const DEFAULT_MAX_NESTED_REUSABLE_DEPTH: usize = 9;

/// GitHub's default maximum workflow file size, in characters.
pub const DEFAULT_MAX_FILE_SIZE: usize = 1024 * 1024;

/// Typed errors for callers that want a `Result` instead of [`Parsed`].
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    /// The workflow is invalid; holds every diagnostic (first one shown).
    #[error("{}", .0.first().map(ToString::to_string).unwrap_or_else(|| "invalid workflow".to_string()))]
    Invalid(Vec<Diagnostic>),
}

impl Parsed {
    /// Converts into a `Result`, failing with every diagnostic when there is any.
    pub fn into_result(self) -> Result<Workflow, WorkflowError> {
        match (self.workflow, self.diagnostics.is_empty()) {
            (Some(w), true) => Ok(w),
            (_, _) => Err(WorkflowError::Invalid(self.diagnostics)),
        }
    }
}

/// A workflow file's bytes as text. Workflow files are UTF-8 (a byte-order mark is
/// allowed); anything else is a [`Diagnostic`] at the line and column of the first byte
/// that is not, so an editor can jump to it.
pub fn decode_source<'a>(file: &str, bytes: &'a [u8]) -> Result<&'a str, Diagnostic> {
    std::str::from_utf8(bytes).map_err(|e| {
        let valid = bytes.get(..e.valid_up_to()).unwrap_or_default();
        // The prefix is valid UTF-8 by definition; columns count UTF-16 units, as the
        // parser's do.
        let text = std::str::from_utf8(valid).unwrap_or_default();
        let line = text.matches('\n').count() + 1;
        let col = text
            .rsplit('\n')
            .next()
            .map_or(0, |l| l.encode_utf16().count())
            + 1;
        let byte = bytes.get(e.valid_up_to()).copied().unwrap_or_default();
        Diagnostic::new(
            file,
            Some(Pos {
                line: u32::try_from(line).unwrap_or(u32::MAX),
                col: u32::try_from(col).unwrap_or(u32::MAX),
            }),
            format!(
                "the file is not valid UTF-8 (byte 0x{byte:02x} here); save the workflow as UTF-8 text"
            ),
        )
    })
}

/// A small YAML document that is not a workflow (firebreak's own settings files) as JSON,
/// read by the same YAML 1.2 front end as workflows: `Null` for an empty document, a
/// [`Diagnostic`] at the syntax error otherwise. Mapping keys become strings.
pub fn yaml_to_json(file: &str, src: &str) -> Result<serde_json::Value, Diagnostic> {
    match yaml::load_with_depth(src, yaml::DEFAULT_MAX_DEPTH) {
        Ok(Some(root)) => Ok(root.to_json()),
        Ok(None) => Ok(serde_json::Value::Null),
        Err(e) => Err(Diagnostic::new(file, e.pos, e.message)),
    }
}

/// Parses and validates a workflow file. `file` names the file in diagnostics.
pub fn parse_workflow(file: &str, src: &str) -> Parsed {
    parse_workflow_with(file, src, &ParseOptions::default())
}

/// [`parse_workflow`] with options (experimental features, called reusable workflows).
pub fn parse_workflow_with(file: &str, src: &str, opts: &ParseOptions) -> Parsed {
    let mut diags = diag::Diags::default();
    let reader_opts = reader::ReaderOptions {
        allow_background_steps: opts.allow_background_steps,
    };
    let Some(root) = read_root(file, src, opts, &reader_opts, &mut diags) else {
        return Parsed {
            workflow: None,
            diagnostics: diags.list,
            warnings: diags.warnings,
        };
    };
    if diags.len() > 0 {
        return Parsed {
            workflow: None,
            diagnostics: diags.list,
            warnings: diags.warnings,
        };
    }
    let mut conv = convert::Converter::new(file, &mut diags);
    let mut workflow = conv.workflow(root);
    drop(conv);

    let mut jobs = workflow.jobs.len();
    if let Some(called) = &opts.reusable_workflows {
        let mut loader = reusable::Loader::new(opts, reader_opts.clone(), &mut diags, called);
        let inherited = reusable::PermSet::policy(opts.permissions_policy);
        loader.load(file, &mut workflow, &inherited, 0);
        jobs = loader.jobs;
    }
    if let Some(limit) = opts.max_job_limit {
        if jobs > limit {
            diags.error(
                "",
                None,
                format!("The workflow may not contain more than {limit} jobs"),
            );
        }
    }

    if diags.len() > 0 {
        return Parsed {
            workflow: None,
            diagnostics: diags.list,
            warnings: diags.warnings,
        };
    }
    // Valid to GitHub's parser, refused by GitHub.com when a run is created.
    for r in refusals::refusals(&workflow) {
        diags.warn(
            file,
            Some(r.pos),
            format!("GitHub.com fails this workflow's runs: {}", r.message),
        );
    }
    Parsed {
        workflow: Some(workflow),
        diagnostics: Vec::new(),
        warnings: diags.warnings,
    }
}

/// YAML + schema validation. `None` when the YAML itself is invalid or empty.
pub(crate) fn read_root(
    file: &str,
    src: &str,
    opts: &ParseOptions,
    reader_opts: &reader::ReaderOptions,
    diags: &mut diag::Diags,
) -> Option<Token> {
    // A source no longer in bytes than the limit is no longer in characters either.
    if src.len() > opts.max_file_size && src.chars().count() > opts.max_file_size {
        diags.error(
            file,
            None,
            format!(
                "The maximum file size of {} characters has been exceeded",
                opts.max_file_size
            ),
        );
        return None;
    }
    match yaml::load_with_depth(src, opts.max_depth) {
        Err(e) => {
            diags.error(file, e.pos, e.message);
            None
        }
        Ok(None) => {
            diags.error(
                file,
                None,
                "Expected a scalar value, a sequence, or a mapping",
            );
            None
        }
        Ok(Some(root)) => Some(reader::read(
            file,
            root,
            "workflow-root-strict",
            reader_opts.clone(),
            diags,
        )),
    }
}

/// Hooks for this crate's own tests and fuzzers; not a stable API.
#[doc(hidden)]
pub mod testing {
    /// Whether the fast YAML scanner handled `src` (`Ok(true)`) or gave up (`Ok(false)`);
    /// `Err` with both trees when its result differs from the full YAML parser's.
    pub fn yaml_fast_path(src: &str) -> Result<bool, String> {
        crate::yaml::check_fast_path(src, crate::yaml::DEFAULT_MAX_DEPTH)
    }
}

/// Every event name GitHub accepts under `on:`.
pub fn event_names() -> impl Iterator<Item = &'static str> {
    schema::event_names()
}

#[cfg(test)]
mod tests;
