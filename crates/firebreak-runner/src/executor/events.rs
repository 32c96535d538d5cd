//! The typed event stream the executor emits while it runs a workflow.
//!
//! The executor never prints: it sends [`Event`]s on an unbounded channel ([`EventSender`]),
//! and reporters (the CLI's human and JSON-lines reporters, log-file writers, tests) consume
//! them — the same runner/reporter split as cargo-nextest. Every text field that could carry a
//! secret (output lines, step names, messages, annotations) is masked before it is sent.
//!
//! Jobs are identified by [`JobKey`]: the workflow file, the job id and the display name of
//! the matrix leg (`build (1, a)`); the name is unique within a workflow.

use serde::Serialize;
use tokio::sync::mpsc;

use crate::commands::Annotation;

/// Identifies one job (matrix leg) of a run.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct JobKey {
    /// Path of the workflow file (relative to the repository).
    pub workflow: String,
    /// The key under `jobs:`.
    pub id: String,
    /// Display name: the job's name, or `name (matrix values)` for a matrix leg.
    pub name: String,
}

/// How a step or job ended (GitHub's vocabulary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Conclusion {
    /// Succeeded.
    Success,
    /// Failed.
    Failure,
    /// Cancelled (Ctrl-C, fail-fast, timeout of the run).
    Cancelled,
    /// Not run: its `if:` was false.
    Skipped,
}

impl Conclusion {
    /// `success`, `failure`, `cancelled`, `skipped`.
    pub fn as_str(self) -> &'static str {
        match self {
            Conclusion::Success => "success",
            Conclusion::Failure => "failure",
            Conclusion::Cancelled => "cancelled",
            Conclusion::Skipped => "skipped",
        }
    }
}

/// Which kind of line an [`Event::Output`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LineKind {
    /// The process's standard output.
    Stdout,
    /// The process's standard error.
    Stderr,
    /// `::group::` title.
    Group,
    /// `::endgroup::`.
    EndGroup,
    /// `::debug::` (only with step debug logging).
    Debug,
    /// A message of the runner itself (informational).
    Info,
    /// A warning of the runner.
    Warning,
    /// An error of the runner about the step or job (`##[error]`).
    Error,
}

/// One thing that happened during a run. Serialised (JSON lines) with an `event` tag.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A workflow starts.
    WorkflowStarted {
        /// Path of the workflow file.
        path: String,
        /// `name:` or the path.
        name: String,
        /// The event name.
        event_name: String,
        /// Sandbox backend of jobs whose `runs-on` no `-P` mapping names.
        sandbox: String,
        /// `runs-on` labels mapped to other backends (`-P LABEL=BACKEND`), lower case.
        #[serde(skip_serializing_if = "indexmap::IndexMap::is_empty")]
        mapped: indexmap::IndexMap<String, String>,
    },
    /// A job (leg) got its sandbox and begins its steps.
    JobStarted {
        /// Which job.
        job: JobKey,
    },
    /// A job ended (or never ran: skipped, cancelled, or could not start).
    JobFinished {
        /// Which job.
        job: JobKey,
        /// Its result.
        result: Conclusion,
        /// True when it failed but `continue-on-error` let the run go on.
        continue_on_error: bool,
        /// Wall time in milliseconds.
        duration_ms: u64,
        /// Job outputs (masked).
        outputs: indexmap::IndexMap<String, String>,
    },
    /// A step starts.
    StepStarted {
        /// Which job.
        job: JobKey,
        /// Step number within the job (pre and post steps included), from 1.
        index: usize,
        /// Nesting depth (0 for job steps, 1+ inside composite actions).
        depth: usize,
        /// Display name (masked).
        name: String,
    },
    /// A step ended.
    StepFinished {
        /// Which job.
        job: JobKey,
        /// As in [`Event::StepStarted`].
        index: usize,
        /// Nesting depth.
        depth: usize,
        /// Display name (masked).
        name: String,
        /// `steps.<id>.outcome`.
        outcome: Conclusion,
        /// `steps.<id>.conclusion` (success when continue-on-error hid a failure).
        conclusion: Conclusion,
        /// Wall time in milliseconds.
        duration_ms: u64,
    },
    /// A line of a step's log (already masked).
    Output {
        /// Which job.
        job: JobKey,
        /// The step it belongs to ([`Event::StepStarted`]'s `index`); `None` for the job.
        step: Option<usize>,
        /// What kind of line.
        kind: LineKind,
        /// The text.
        line: String,
    },
    /// An annotation (`::error`, `::warning`, `::notice`), masked.
    Annotation {
        /// Which job.
        job: JobKey,
        /// The step it belongs to.
        step: Option<usize>,
        /// The annotation.
        annotation: Annotation,
    },
    /// A workflow ended.
    WorkflowFinished {
        /// Path of the workflow file.
        path: String,
        /// Overall result.
        result: Conclusion,
        /// Wall time in milliseconds.
        duration_ms: u64,
    },
}

/// Where the executor sends its events. Sending never blocks; a dropped receiver only
/// discards them.
#[derive(Debug, Clone)]
pub struct EventSender {
    tx: mpsc::UnboundedSender<Event>,
}

impl EventSender {
    /// A sender and the receiver the reporter reads.
    pub fn channel() -> (EventSender, mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (EventSender { tx }, rx)
    }

    /// Sends one event.
    pub fn send(&self, ev: Event) {
        let _ = self.tx.send(ev);
    }
}
