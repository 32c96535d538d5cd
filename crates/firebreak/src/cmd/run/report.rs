//! Reporters for `firebreak run`: they consume the executor's event stream.
//!
//! * Human (default): each line prefixed by its job in a colour of its own
//!   (`[build (1, a)] | line`), step starts (`▶`) and ends (`✓`/`✗`/`-` with durations),
//!   annotations, and a summary table of jobs at the end. Colours follow `NO_COLOR` and
//!   whether stdout is a terminal.
//! * JSON lines (`--json`): every event as one JSON object on stdout (`{"event": …}`), then a
//!   final `run_finished` record with the per-job results.
//!
//! On a terminal the human reporter also keeps a live status line at the bottom (jobs done,
//! failed, and which jobs are running which step), redrawn in place on stderr; it is shown
//! only when both stdout and stderr are terminals, never with `--json`.
//!
//! When stdout goes away (`firebreak run | head`), printing stops and the run goes on: its
//! logs, and its exit status, are those of the jobs.
//!
//! Both also keep logs in the run directory: `<job>.log` per job (plain text, masked as
//! everything the executor emits) and `events.jsonl` with the whole stream.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;

use indexmap::IndexMap;
use indicatif::{ProgressBar, ProgressStyle};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use firebreak_runner::executor::events::{Conclusion, Event, EventReceiver, JobKey, LineKind};
use firebreak_runner::executor::job::sanitize;
use firebreak_runner::executor::WorkflowOutcome;

use crate::style::{self, paint, yellow};

const JOB_COLOURS: &[&str] = &["36", "35", "34", "32", "33", "96", "95", "94"];

fn secs(ms: u64) -> String {
    if ms >= 60_000 {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000)
    } else {
        format!("{:.2}s", ms as f64 / 1000.0)
    }
}

/// Consumes events; see the module docs.
pub struct Reporter {
    json: bool,
    run_dir: PathBuf,
    colours: HashMap<String, &'static str>,
    logs: HashMap<String, Option<BufWriter<File>>>,
    events: Option<BufWriter<File>>,
    annotations: usize,
    /// Workflow path → name, from `workflow_started`.
    workflows: HashMap<String, String>,
    /// The live status line (terminal only).
    progress: Option<Progress>,
    /// Stdout could not be written (its reader went away): print nothing more.
    stdout_gone: bool,
}

/// What the status line shows: finished and failed job counts, running jobs with their step.
struct Progress {
    bar: ProgressBar,
    running: IndexMap<String, String>,
    done: usize,
    failed: usize,
}

impl Progress {
    fn new() -> Progress {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed:>4} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        Progress {
            bar,
            running: IndexMap::new(),
            done: 0,
            failed: 0,
        }
    }

    fn redraw(&self) {
        let running: Vec<String> = self
            .running
            .iter()
            .map(|(job, step)| {
                if step.is_empty() {
                    job.clone()
                } else {
                    format!("{job}: {step}")
                }
            })
            .collect();
        let failed = if self.failed > 0 {
            format!(", {} failed", self.failed)
        } else {
            String::new()
        };
        self.bar.set_message(format!(
            "{} job(s) done{failed} · running {}",
            self.done,
            if running.is_empty() {
                "-".to_string()
            } else {
                running.join(" | ")
            }
        ));
    }
}

impl Reporter {
    pub fn new(json: bool, run_dir: PathBuf) -> Self {
        let events = File::create(run_dir.join("events.jsonl"))
            .ok()
            .map(BufWriter::new);
        // The status line is drawn on stderr and job lines go to stdout: both must be the
        // terminal, or the lines would go where the status line hides them.
        let progress =
            (!json && std::io::stdout().is_terminal() && std::io::stderr().is_terminal())
                .then(Progress::new);
        Reporter {
            progress,
            json,
            run_dir,
            colours: HashMap::new(),
            logs: HashMap::new(),
            events,
            annotations: 0,
            workflows: HashMap::new(),
            stdout_gone: false,
        }
    }

    /// Prints one line on stdout, above the status line when there is one. Once stdout
    /// cannot be written, nothing more is printed (the logs still get everything).
    fn say(&mut self, line: &str) {
        if self.stdout_gone {
            return;
        }
        let write = || writeln!(std::io::stdout().lock(), "{line}");
        let written = match &self.progress {
            Some(pr) => pr.bar.suspend(write),
            None => write(),
        };
        if written.is_err() {
            self.stdout_gone = true;
            if let Some(pr) = self.progress.take() {
                pr.bar.finish_and_clear();
            }
        }
    }

    fn prefix(&mut self, job: &str) -> String {
        let n = self.colours.len();
        let c = *self
            .colours
            .entry(job.to_string())
            .or_insert(JOB_COLOURS[n % JOB_COLOURS.len()]);
        paint(c, &format!("[{job}]"))
    }

    fn log(&mut self, job: &str, line: &str) {
        let dir = self.run_dir.clone();
        // a log that cannot be created is skipped: logging never stops the run
        let w = self.logs.entry(job.to_string()).or_insert_with(|| {
            File::create(dir.join(format!("{}.log", sanitize(job))))
                .ok()
                .map(BufWriter::new)
        });
        if let Some(w) = w {
            let _ = writeln!(w, "{line}");
        }
    }

    fn flush(&mut self) {
        for w in self.logs.values_mut().flatten() {
            let _ = w.flush();
        }
        if let Some(w) = self.events.as_mut() {
            let _ = w.flush();
        }
    }

    pub async fn consume(mut self, mut rx: EventReceiver) -> Self {
        while let Some(ev) = rx.recv().await {
            if let Some(w) = self.events.as_mut() {
                if let Ok(s) = serde_json::to_string(&ev) {
                    let _ = writeln!(w, "{s}");
                }
            }
            if self.json {
                if let Ok(s) = serde_json::to_string(&ev) {
                    self.say(&s);
                }
            }
            self.handle(&ev);
            // Written in batches, flushed whenever the run's events are all written: the
            // files stay current without a write per line.
            if rx.is_empty() {
                self.flush();
            }
        }
        self.flush();
        self
    }

    fn out(&mut self, job: &str, text: &str) {
        if !self.json {
            let p = self.prefix(job);
            self.say(&format!("{p} {text}"));
        }
    }

    /// Keeps the status line in step with the event stream.
    fn track(&mut self, ev: &Event, label: &str) {
        let Some(pr) = self.progress.as_mut() else {
            return;
        };
        match ev {
            Event::JobStarted { .. } => {
                pr.running.insert(label.to_string(), String::new());
            }
            Event::StepStarted { depth: 0, name, .. } => {
                pr.running.insert(label.to_string(), name.clone());
            }
            Event::JobFinished { result, .. } => {
                pr.running.shift_remove(label);
                pr.done += 1;
                if *result == Conclusion::Failure {
                    pr.failed += 1;
                }
            }
            _ => return,
        }
        pr.redraw();
    }

    /// How a job is shown: its name, prefixed by its workflow's when several run.
    fn label(&self, job: &JobKey) -> String {
        if self.workflows.len() > 1 {
            let wf = self
                .workflows
                .get(&job.workflow)
                .cloned()
                .unwrap_or_else(|| job.workflow.clone());
            let wf = wf
                .strip_prefix(".github/workflows/")
                .unwrap_or(&wf)
                .to_string();
            format!("{wf} / {}", job.name)
        } else {
            job.name.clone()
        }
    }

    fn handle(&mut self, ev: &Event) {
        let label = match ev {
            Event::JobStarted { job }
            | Event::StepStarted { job, .. }
            | Event::StepFinished { job, .. }
            | Event::Output { job, .. }
            | Event::Annotation { job, .. }
            | Event::JobFinished { job, .. } => self.label(job),
            _ => String::new(),
        };
        let job_name = label.as_str();
        self.track(ev, job_name);
        match ev {
            Event::WorkflowStarted {
                path,
                name,
                event_name,
                sandbox,
                mapped,
            } => {
                self.workflows.insert(path.clone(), name.clone());
                if !self.json {
                    // `-P` mappings: "namespace sandbox; runs-on isolated: qemu".
                    let mapped: String = mapped
                        .iter()
                        .filter(|(_, b)| *b != sandbox)
                        .map(|(l, b)| format!("; runs-on {l}: {b}"))
                        .collect();
                    let line = format!(
                        "{} {} {}",
                        style::bold("▶ workflow"),
                        style::bold(name),
                        style::dim(&format!(
                            "({path}, event {event_name}, {sandbox} sandbox{mapped})"
                        ))
                    );
                    self.say(&line);
                }
            }
            Event::JobStarted { .. } => {
                self.log(job_name, &format!("job {job_name} started"));
                self.out(job_name, &style::bold("🚀 job started"));
            }
            Event::StepStarted { depth, name, .. } => {
                let indent = "  ".repeat(*depth);
                self.log(job_name, &format!("{indent}▶ {name}"));
                self.out(job_name, &format!("{indent}{} {}", paint("1", "▶"), name));
            }
            Event::StepFinished {
                depth,
                name,
                outcome,
                conclusion,
                duration_ms,
                ..
            } => {
                let indent = "  ".repeat(*depth);
                let (mark, text) = match (outcome, conclusion) {
                    (Conclusion::Success, _) => (style::green("✓"), String::new()),
                    (Conclusion::Failure, Conclusion::Success) => {
                        (yellow("✗"), " (failed; continue-on-error)".to_string())
                    }
                    (Conclusion::Failure, _) => (style::red("✗"), String::new()),
                    (Conclusion::Cancelled, _) => (yellow("⊘"), " (cancelled)".to_string()),
                    (Conclusion::Skipped, _) => (style::dim("-"), " (skipped)".to_string()),
                };
                let plain_mark = match outcome {
                    Conclusion::Success => "ok",
                    Conclusion::Failure => "FAILED",
                    Conclusion::Cancelled => "cancelled",
                    Conclusion::Skipped => "skipped",
                };
                self.log(
                    job_name,
                    &format!(
                        "{indent}{plain_mark}: {name}{text} [{}]",
                        secs(*duration_ms)
                    ),
                );
                let dur = if *outcome == Conclusion::Skipped {
                    String::new()
                } else {
                    style::dim(&format!(" [{}]", secs(*duration_ms)))
                };
                let line = format!("{indent}{mark} {name}{text}{dur}");
                self.out(job_name, &line);
            }
            Event::Output { kind, line, .. } => {
                // The log file keeps the line as it came; the terminal gets it defused.
                let safe = style::terminal_safe(line);
                let (logline, shown) = match kind {
                    LineKind::Stdout | LineKind::Stderr => {
                        (format!("| {line}"), format!("  | {safe}"))
                    }
                    LineKind::Group => (format!("▸ {line}"), format!("  ▸ {}", style::bold(&safe))),
                    LineKind::EndGroup => return,
                    LineKind::Debug => (
                        format!("[debug] {line}"),
                        format!("  {}", style::dim(&format!("[debug] {safe}"))),
                    ),
                    LineKind::Info => {
                        (format!("[info] {line}"), format!("  {}", style::dim(&safe)))
                    }
                    LineKind::Warning => (
                        format!("[warning] {line}"),
                        format!("  {} {safe}", yellow("warning:")),
                    ),
                    LineKind::Error => (
                        format!("[error] {line}"),
                        format!("  {} {safe}", style::red("error:")),
                    ),
                };
                self.log(job_name, &logline);
                self.out(job_name, &shown);
            }
            Event::Annotation { annotation, .. } => {
                self.annotations += 1;
                let level = format!("{:?}", annotation.level).to_ascii_lowercase();
                let loc = match (&annotation.file, annotation.line) {
                    (Some(f), Some(l)) => format!(" {f}:{l}"),
                    (Some(f), None) => format!(" {f}"),
                    _ => String::new(),
                };
                let text = format!("{level}{loc}: {}", annotation.message);
                self.log(job_name, &format!("[{text}]"));
                let safe = style::terminal_safe(&text);
                let shown = match level.as_str() {
                    "error" => style::red(&safe),
                    "warning" => yellow(&safe),
                    _ => safe.into_owned(),
                };
                self.out(job_name, &format!("  {shown}"));
            }
            Event::JobFinished {
                result,
                continue_on_error,
                duration_ms,
                ..
            } => {
                let text = match (result, continue_on_error) {
                    (Conclusion::Success, true) => yellow("job failed (continue-on-error)"),
                    (Conclusion::Success, false) => style::green("✓ job succeeded"),
                    (Conclusion::Failure, _) => style::red("✗ job failed"),
                    (Conclusion::Cancelled, _) => yellow("⊘ job cancelled"),
                    (Conclusion::Skipped, _) => style::dim("- job skipped"),
                };
                self.log(
                    job_name,
                    &format!(
                        "job {job_name}: {} [{}]",
                        result.as_str(),
                        secs(*duration_ms)
                    ),
                );
                self.out(
                    job_name,
                    &format!(
                        "{text} {}",
                        style::dim(&format!("[{}]", secs(*duration_ms)))
                    ),
                );
            }
            Event::WorkflowFinished { .. } => {}
        }
    }

    /// The final table (human) or `run_finished` record (JSON).
    pub fn summary(&mut self, outcomes: &[(String, WorkflowOutcome)], run_dir: &Path) {
        if let Some(pr) = self.progress.take() {
            pr.bar.finish_and_clear();
        }
        if self.json {
            let wfs: Vec<serde_json::Value> = outcomes
                .iter()
                .map(|(name, o)| {
                    serde_json::json!({
                        "workflow": name,
                        "result": o.result.as_str(),
                        "jobs": o.jobs.iter().flat_map(|j| j.legs.iter().map(move |(n, r, coe, d)| serde_json::json!({"id": j.id, "name": n, "result": r.as_str(), "continue_on_error": coe, "duration_ms": d}))).collect::<Vec<_>>(),
                    })
                })
                .collect();
            self.say(
                &serde_json::json!({"event": "run_finished", "workflows": wfs, "run_dir": run_dir.display().to_string()})
                    .to_string(),
            );
            return;
        }
        self.say("");
        for (name, o) in outcomes {
            self.say(&style::bold(&format!("Summary: {name}")));
            let width = o
                .jobs
                .iter()
                .flat_map(|j| j.legs.iter().map(|l| l.0.chars().count()))
                .max()
                .unwrap_or(4)
                .max(4);
            for j in &o.jobs {
                for (n, r, coe, d) in &j.legs {
                    let (mark, word) = match (r, coe) {
                        (Conclusion::Success, true) => {
                            (yellow("!"), yellow("failure (continue-on-error)"))
                        }
                        (Conclusion::Success, false) => {
                            (style::green("✓"), style::green("success"))
                        }
                        (Conclusion::Failure, _) => (style::red("✗"), style::red("failure")),
                        (Conclusion::Cancelled, _) => (yellow("⊘"), yellow("cancelled")),
                        (Conclusion::Skipped, _) => (style::dim("-"), style::dim("skipped")),
                    };
                    let pad = " ".repeat(width - n.chars().count());
                    let dur = if *r == Conclusion::Skipped {
                        String::new()
                    } else {
                        secs(*d)
                    };
                    self.say(&format!("  {mark} {n}{pad}  {word}  {}", style::dim(&dur)));
                }
            }
            let legs = o.jobs.iter().map(|j| j.legs.len()).sum::<usize>();
            let failed = o
                .jobs
                .iter()
                .flat_map(|j| j.legs.iter())
                .filter(|(_, r, _, _)| *r == Conclusion::Failure)
                .count();
            let line = format!("{legs} job run(s), {failed} failed: {}", o.result.as_str());
            self.say(&format!(
                "  {}",
                if o.result == Conclusion::Success {
                    style::green(&line)
                } else {
                    style::red(&line)
                }
            ));
        }
        if self.annotations > 0 {
            self.say(&format!("  {} annotation(s)", self.annotations));
        }
        self.say(&style::dim(&format!("logs: {}", run_dir.display())));
    }
}
