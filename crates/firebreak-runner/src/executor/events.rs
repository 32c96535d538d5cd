//! The typed event stream the executor emits while it runs a workflow.
//!
//! The executor never prints: it sends [`Event`]s on a channel ([`EventSender`]),
//! and reporters (the CLI's human and JSON-lines reporters, log-file writers, tests) consume
//! them — the same runner/reporter split as cargo-nextest. Every text field that could carry a
//! secret (output lines, step names, messages, annotations) is masked before it is sent.
//!
//! Jobs are identified by [`JobKey`]: the workflow file, the job id and the display name of
//! the matrix leg (`build (1, a)`); the name is unique within a workflow.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::{mpsc, Notify};

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

/// Where the executor sends its events. Sending never blocks (events keep their order
/// whoever sends them); a dropped receiver only discards them. The hot path — a step's
/// output — also waits for room ([`EventSender::wait_for_room`]) while the reporter is
/// [`BACKLOG_HIGH`] events behind, so that a job printing faster than its output can be
/// written holds its own process back (through the step's pipes, or the guest agent's)
/// instead of filling the runner's memory.
#[derive(Debug, Clone)]
pub struct EventSender {
    tx: mpsc::UnboundedSender<Event>,
    backlog: Arc<Backlog>,
}

/// Events sent and not yet received.
#[derive(Debug, Default)]
struct Backlog {
    count: AtomicUsize,
    drained: Notify,
}

/// Above this many events waiting for the reporter, output waits.
pub const BACKLOG_HIGH: usize = 8192;
/// ... until the reporter is back below this many.
const BACKLOG_LOW: usize = BACKLOG_HIGH / 2;

/// What the reporter reads: the events in the order they were sent.
#[derive(Debug)]
pub struct EventReceiver {
    rx: mpsc::UnboundedReceiver<Event>,
    backlog: Arc<Backlog>,
}

impl EventReceiver {
    /// The next event; `None` once every sender is gone and all were read.
    pub async fn recv(&mut self) -> Option<Event> {
        let ev = self.rx.recv().await;
        self.took(ev.is_some());
        ev
    }

    /// No event is waiting (the reporter has caught up: a moment to flush what it wrote).
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Result<Event, mpsc::error::TryRecvError> {
        let ev = self.rx.try_recv();
        self.took(ev.is_ok());
        ev
    }

    fn took(&self, one: bool) {
        if !one {
            return;
        }
        let before = self
            .backlog
            .count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(1))
            })
            .unwrap_or(0);
        if before.saturating_sub(1) <= BACKLOG_LOW {
            self.backlog.drained.notify_waiters();
        }
    }
}

impl Drop for EventReceiver {
    fn drop(&mut self) {
        // Nobody reads any more: nothing to wait for.
        self.backlog.count.store(0, Ordering::Release);
        self.backlog.drained.notify_waiters();
    }
}

impl EventSender {
    /// A sender and the receiver the reporter reads.
    pub fn channel() -> (EventSender, EventReceiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        let backlog = Arc::new(Backlog::default());
        (
            EventSender {
                tx,
                backlog: backlog.clone(),
            },
            EventReceiver { rx, backlog },
        )
    }

    /// Sends one event.
    pub fn send(&self, ev: Event) {
        // Counted before it can be received, so the count never goes below zero.
        self.backlog.count.fetch_add(1, Ordering::AcqRel);
        if self.tx.send(ev).is_err() {
            self.backlog.count.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Waits while the reporter is more than [`BACKLOG_HIGH`] events behind (until it is
    /// back to half that), or returns at once.
    pub async fn wait_for_room(&self) {
        loop {
            let drained = self.backlog.drained.notified();
            tokio::pin!(drained);
            // Registered before the check, so a drain in between is not missed.
            drained.as_mut().enable();
            if self.backlog.count.load(Ordering::Acquire) <= BACKLOG_HIGH || self.tx.is_closed() {
                return;
            }
            drained.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n: usize) -> Event {
        Event::Output {
            job: JobKey {
                workflow: "w.yml".into(),
                id: "a".into(),
                name: "a".into(),
            },
            step: None,
            kind: LineKind::Stdout,
            line: n.to_string(),
        }
    }

    /// Output waits while the reporter is far behind, and goes on once it has caught up
    /// to half of that; nothing is lost or reordered meanwhile.
    #[tokio::test]
    async fn output_waits_for_a_reporter_that_is_behind() {
        let (tx, mut rx) = EventSender::channel();
        for n in 0..=BACKLOG_HIGH {
            tx.send(line(n));
        }
        let waiter = {
            let tx = tx.clone();
            tokio::spawn(async move { tx.wait_for_room().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "output did not wait");
        for n in 0..=BACKLOG_HIGH - BACKLOG_LOW {
            match rx.recv().await {
                Some(Event::Output { line, .. }) => assert_eq!(line, n.to_string()),
                other => panic!("{other:?}"),
            }
        }
        waiter
            .await
            .expect("the wait ends once the reporter caught up");
        // A reporter that is gone holds nothing back.
        drop(rx);
        for n in 0..=BACKLOG_HIGH {
            tx.send(line(n));
        }
        tx.wait_for_room().await;
    }
}
