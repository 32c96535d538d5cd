//! Running one `run:` step in a sandbox, end to end, with GitHub's semantics.
//!
//! [`run_script_step`] is the glue the executor calls for a script step whose
//! `run`, `shell`, `working-directory` and `env` have already been evaluated:
//!
//! 1. resolves the shell (the default probes for `bash` *inside* the sandbox);
//! 2. creates fresh environment files ([`StepFiles`]) and writes the script to
//!    `RUNNER_TEMP/<uuid><ext>`;
//! 3. runs it in the workspace (or `working-directory`), with the caller's
//!    environment plus the environment-file variables;
//! 4. feeds every stdout *and* stderr line through one [`CommandProcessor`]
//!    (the runner parses commands on both streams), registers `::add-mask::`
//!    values before anything of that line is shown, and sends masked
//!    [`StepLog`] records to the caller;
//! 5. reads the environment files back, and reports everything the step
//!    changed in a [`StepOutcome`]; the caller applies it to job state
//!    (`env` to later steps' environments, `path` through
//!    [`PathPrepends`](crate::file_commands::PathPrepends), `outputs` to
//!    `steps.<id>.outputs`, `summary` to the [`JobSummary`](crate::file_commands::JobSummary)).
//!
//! Values set through commands come first and are overridden by the files
//! (the runner processes files after the process ends).

use std::path::PathBuf;
use std::time::Duration;

use indexmap::IndexMap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::commands::{Annotation, CommandProcessor, CommandSettings, Effect};
use crate::file_commands::StepFiles;
use crate::mask::Masker;
use crate::sandbox::{
    cancelled, ExecRequest, ExitStatus, OutputEvent, Sandbox, SandboxError, Stream,
};
use crate::shell::{resolve_working_directory, ShellCommand, ShellError};

/// A script step ready to run (expressions already evaluated). `Debug`
/// omits the script and environment values.
#[derive(Clone, Default)]
pub struct ScriptStep {
    /// The script (`run:`).
    pub script: String,
    /// `shell:` (step or `defaults.run.shell`); `None` for the default.
    pub shell: Option<String>,
    /// `working-directory:`; relative to the workspace.
    pub working_directory: Option<String>,
    /// The full environment of the step: runner-provided variables
    /// ([`crate::context::job_env`]), workflow/job/step `env:`, earlier
    /// `GITHUB_ENV` values and `PATH` with prepends, already merged.
    pub env: IndexMap<String, String>,
    /// `timeout-minutes` (see [`step_timeout`]).
    pub timeout: Option<Duration>,
    /// The step's display name, for its messages (`The action 'NAME' has timed out…`).
    pub display_name: String,
    /// Job cancellation.
    pub cancel: Option<CancellationToken>,
    /// The run's kill (a second Ctrl-C): the step's process tree is killed at once, even
    /// while it is being asked to stop with SIGINT/SIGTERM.
    pub kill: Option<CancellationToken>,
    /// Step debug logging (`ACTIONS_STEP_DEBUG` as a secret or variable):
    /// show `::debug::` and echo commands. Also on when `env` has
    /// `ACTIONS_STEP_DEBUG=true`.
    pub debug: bool,
    /// Whether `bash` is on the sandbox's `PATH`, when the caller already knows (it decides
    /// the default shell); `None` probes inside the sandbox.
    pub bash_available: Option<bool>,
    /// The step's file-command files, when the caller chose them before evaluating the step
    /// (their paths are `github.env`, `github.output`… in its expressions); `None`: new ones.
    pub files: Option<StepFiles>,
}

impl std::fmt::Debug for ScriptStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptStep")
            .field("script_len", &self.script.len())
            .field("shell", &self.shell)
            .field("working_directory", &self.working_directory)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("timeout", &self.timeout)
            .field("debug", &self.debug)
            .finish()
    }
}

/// One record of the step's log, already masked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepLog {
    /// A line the process printed.
    Line {
        /// Where it came from.
        stream: Stream,
        /// The masked text.
        text: String,
    },
    /// `::group::title`.
    Group(String),
    /// `::endgroup::`.
    EndGroup,
    /// `::debug::` (only when `ACTIONS_STEP_DEBUG`).
    Debug(String),
    /// An annotation from the process (also kept in [`StepOutcome::annotations`]).
    Annotation(Annotation),
    /// An error of the runner about this step (`##[error]…`).
    Error(String),
}

/// What a step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepOutcome {
    /// How the process ended.
    pub status: ExitStatus,
    /// True when the step failed: non-zero exit, timeout, cancellation, a
    /// failed workflow command, or an invalid environment file.
    pub failed: bool,
    /// `steps.<id>.outputs`.
    pub outputs: IndexMap<String, String>,
    /// Environment for later steps (`GITHUB_ENV`, `::set-env`).
    pub env: IndexMap<String, String>,
    /// Directories to prepend to `PATH` for later steps, in order added.
    pub path: Vec<String>,
    /// State for the action's post step (`GITHUB_STATE`, `::save-state`).
    pub state: IndexMap<String, String>,
    /// Annotations (masked).
    pub annotations: Vec<Annotation>,
    /// Raw `GITHUB_STEP_SUMMARY` contents (mask when appending).
    pub summary: Vec<u8>,
    /// `::add-matcher::` files requested (problem matchers are not applied here).
    pub matchers: Vec<String>,
}

/// Why a step could not be run at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StepError {
    /// `shell:` is invalid.
    #[error(transparent)]
    Shell(#[from] ShellError),
    /// The sandbox failed.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The step's `working-directory` does not exist (GitHub's wording).
    #[error("An error occurred trying to start process '{program}' with working directory '{dir}'. No such file or directory")]
    WorkingDirectory {
        /// The shell.
        program: String,
        /// The directory, as the job sees it.
        dir: PathBuf,
    },
}

/// How long a cancelled step's file commands are still read for.
const FILES_AFTER_CANCEL: Duration = Duration::from_secs(10);

/// A step's `timeout-minutes` as GitHub's runner applies it: cut to whole
/// minutes (`1.9` is one minute), and none unless that is above zero (`0.5`
/// sets no timeout).
pub fn step_timeout(minutes: f64) -> Option<Duration> {
    let whole = minutes.trunc();
    (whole.is_finite() && whole >= 1.0).then(|| Duration::from_secs(whole as u64 * 60))
}

/// Runs `step` in `sandbox`. Log records go to `log` (a closed receiver only
/// discards them). See the module docs.
pub async fn run_script_step(
    sandbox: &dyn Sandbox,
    step: ScriptStep,
    masker: &Masker,
    log: mpsc::Sender<StepLog>,
) -> Result<StepOutcome, StepError> {
    let layout = sandbox.layout().clone();
    let path_var = step.env.get("PATH").cloned().unwrap_or_default();

    let shell = match step
        .shell
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        Some(s) => ShellCommand::resolve(Some(s), |_| true)?,
        None => {
            let has_bash = match step.bash_available {
                Some(b) => b,
                None => probe_program(sandbox, "bash", &path_var).await?,
            };
            ShellCommand::resolve(None, |_| has_bash)?
        }
    };

    let files = step
        .files
        .clone()
        .unwrap_or_else(|| StepFiles::random(&layout.file_commands));
    files.prepare(sandbox).await?;
    let script_path = shell.script_path(&layout.temp);
    sandbox
        .write_file(
            &script_path,
            shell.script_contents(&step.script).into_bytes(),
            None,
        )
        .await?;

    let mut req = ExecRequest::new(shell.argv(&script_path));
    req.env = step
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in files.env_vars() {
        req.env.insert(k.to_string(), v);
    }
    req.cwd = Some(resolve_working_directory(
        &layout.workspace,
        step.working_directory.as_deref(),
    ));
    req.timeout = step.timeout;
    req.cancel = step.cancel.clone();
    // Stopped as GitHub's runner stops a step: SIGINT, SIGTERM, then killed; at once on the
    // run's kill.
    req.interrupt_first = true;
    req.kill = step.kill.clone();
    req.label = Some(format!("step '{}'", step.display_name));

    let mut settings =
        CommandSettings::from_env(step.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    settings.step_debug |= step.debug;
    if settings.workspace.is_none() {
        settings.workspace = Some(layout.workspace.to_string_lossy().into_owned());
    }
    let mut processor = CommandProcessor::new(settings);
    let mut outcome = StepOutcome {
        status: ExitStatus::Exited(0),
        failed: false,
        outputs: IndexMap::new(),
        env: IndexMap::new(),
        path: Vec::new(),
        state: IndexMap::new(),
        annotations: Vec::new(),
        summary: Vec::new(),
        matchers: Vec::new(),
    };

    let (tx, mut rx) = mpsc::channel::<OutputEvent>(1024);
    let exec = sandbox.exec(req, tx);
    let consume = async {
        while let Some(ev) = rx.recv().await {
            for effect in processor.process_line(&ev.line) {
                apply_effect(effect, ev.stream, masker, &mut outcome, &log).await;
            }
        }
    };
    let (status, ()) = tokio::join!(exec, consume);
    let status = match status {
        // The default shell was found on the PATH (probed): what is missing is the
        // directory. (A named shell was not probed; its spawn error stands.)
        Err(SandboxError::Spawn { program, source })
            if source.kind() == std::io::ErrorKind::NotFound
                && step.working_directory.is_some()
                && step.shell.as_deref().is_none_or(|s| s.trim().is_empty()) =>
        {
            let _ = sandbox.remove(&script_path).await;
            return Err(StepError::WorkingDirectory {
                program,
                dir: resolve_working_directory(
                    &layout.workspace,
                    step.working_directory.as_deref(),
                ),
            });
        }
        other => other?,
    };
    outcome.status = status;

    // Reading the file commands back is part of the step: the job's timeout or cancellation
    // stops it too (a file swapped for something that never ends must not hold the job). A
    // step already cancelled (it timed out) still has its files read, for a while.
    let already = step.cancel.as_ref().is_some_and(|c| c.is_cancelled())
        || step.kill.as_ref().is_some_and(|k| k.is_cancelled());
    let stopped = async {
        let stop = async {
            if already {
                tokio::time::sleep(FILES_AFTER_CANCEL).await
            } else {
                cancelled(step.cancel.as_ref()).await
            }
        };
        tokio::select! {
            _ = stop => {}
            _ = cancelled(step.kill.as_ref()) => {}
        }
    };
    let files_result = tokio::select! {
        biased;
        r = files.collect(sandbox) => r?,
        _ = stopped => {
            send(&log, StepLog::Error("The operation was canceled.".into())).await;
            outcome.failed = true;
            return Ok(outcome);
        }
    };
    sandbox.remove(&script_path).await?;
    outcome.outputs.extend(files_result.outputs);
    outcome.env.extend(files_result.env);
    outcome.state.extend(files_result.state);
    outcome.path.extend(files_result.path);
    outcome.summary = files_result.summary;
    for e in files_result.errors {
        send(&log, StepLog::Error(masker.mask(&e).into_owned())).await;
    }
    if files_result.failed {
        outcome.failed = true;
    }

    match status {
        ExitStatus::Exited(0) => {}
        ExitStatus::TimedOut => {
            outcome.failed = true;
            // Whole minutes ([`step_timeout`]); `0.01` for the sub-minute ones tests use.
            let mins = step.timeout.map(|d| d.as_secs_f64() / 60.0).unwrap_or(0.0);
            let mins = format!("{:.6}", mins)
                .trim_end_matches('0')
                .trim_end_matches('.')
                .to_string();
            send(
                &log,
                StepLog::Error(format!(
                    "The action '{}' has timed out after {mins} minutes.",
                    step.display_name
                )),
            )
            .await;
        }
        ExitStatus::Cancelled => {
            outcome.failed = true;
            send(&log, StepLog::Error("The operation was canceled.".into())).await;
        }
        other => {
            outcome.failed = true;
            let code = other.code().unwrap_or(-1);
            send(
                &log,
                StepLog::Error(format!("Process completed with exit code {code}.")),
            )
            .await;
        }
    }
    Ok(outcome)
}

async fn send(log: &mpsc::Sender<StepLog>, rec: StepLog) {
    let _ = log.send(rec).await;
}

async fn apply_effect(
    effect: Effect,
    stream: Stream,
    masker: &Masker,
    outcome: &mut StepOutcome,
    log: &mpsc::Sender<StepLog>,
) {
    match effect {
        Effect::Output(l) => {
            send(
                log,
                StepLog::Line {
                    stream,
                    text: masker.mask(&l).into_owned(),
                },
            )
            .await
        }
        Effect::AddMask(v) => masker.add(&v),
        Effect::Debug(d) => send(log, StepLog::Debug(masker.mask(&d).into_owned())).await,
        Effect::Group(t) => send(log, StepLog::Group(masker.mask(&t).into_owned())).await,
        Effect::EndGroup => send(log, StepLog::EndGroup).await,
        Effect::Annotation(mut a) => {
            a.message = masker.mask(&a.message).into_owned();
            a.title = a.title.map(|t| masker.mask(&t).into_owned());
            outcome.annotations.push(a.clone());
            send(log, StepLog::Annotation(a)).await;
        }
        Effect::SetOutput { name, value } => {
            outcome.outputs.insert(name, value);
        }
        Effect::SetEnv { name, value } => {
            outcome.env.insert(name, value);
        }
        Effect::AddPath(p) => outcome.path.push(p),
        Effect::SaveState { name, value } => {
            outcome.state.insert(name, value);
        }
        Effect::AddMatcher(f) => outcome.matchers.push(f),
        Effect::RemoveMatcher { .. } => {}
        Effect::CommandFailed(m) => {
            outcome.failed = true;
            send(log, StepLog::Error(masker.mask(&m).into_owned())).await;
        }
    }
}

/// Whether `program` is on `path` inside the sandbox (asks the sandbox, so it
/// works for VM backends too).
pub async fn probe_program(
    sandbox: &dyn Sandbox,
    program: &str,
    path: &str,
) -> Result<bool, SandboxError> {
    let mut req = ExecRequest::new([
        "/bin/sh",
        "-c",
        "command -v \"$1\" >/dev/null",
        "sh",
        program,
    ]);
    req.env.insert("PATH".into(), path.to_string());
    req.cwd = Some(sandbox.layout().temp.clone());
    req.timeout = Some(Duration::from_secs(30));
    req.drain_grace = Duration::ZERO;
    let (tx, mut rx) = mpsc::channel(8);
    let drain = async { while rx.recv().await.is_some() {} };
    let (st, ()) = tokio::join!(sandbox.exec(req, tx), drain);
    Ok(st?.success())
}

#[cfg(test)]
mod timeout_tests {
    use super::*;

    #[test]
    fn step_timeouts_are_whole_minutes_above_zero() {
        assert_eq!(step_timeout(0.05), None);
        assert_eq!(step_timeout(0.99), None);
        assert_eq!(step_timeout(1.0), Some(Duration::from_secs(60)));
        assert_eq!(step_timeout(1.9), Some(Duration::from_secs(60)));
        assert_eq!(step_timeout(30.0), Some(Duration::from_secs(1800)));
        assert_eq!(step_timeout(-3.0), None);
        assert_eq!(step_timeout(f64::INFINITY), None);
    }
}
