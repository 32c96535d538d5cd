//! The `host` backend: no isolation at all. Each job gets its own directory
//! tree (workspace, temp, file-command dir, tool cache, home) under the run
//! directory, and processes run directly on this machine as the runner's user.
//! Only for trusted workflows and for development.

use std::path::{Path, PathBuf};

use tokio::process::Command;

use super::local::{Launcher, LocalSandbox};
use super::{
    sanitize_component, BoxFuture, ExecRequest, JobLayout, JobSpec, Probe, Sandbox, SandboxError,
    SandboxProvider,
};

/// Creates host sandboxes below `run_dir/<job_id>/`.
#[derive(Debug, Clone)]
pub struct HostProvider {
    run_dir: PathBuf,
}

impl HostProvider {
    /// Jobs get directories below `run_dir` (created when needed). Use an
    /// absolute path: it appears in the job's environment.
    pub fn new(run_dir: impl Into<PathBuf>) -> Self {
        HostProvider {
            run_dir: run_dir.into(),
        }
    }

    /// The run directory.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }
}

pub(crate) struct HostLauncher;

impl Launcher for HostLauncher {
    fn command(&self, req: &ExecRequest, cwd: &Path) -> Result<Command, SandboxError> {
        let (program, args) = req
            .argv
            .split_first()
            .ok_or_else(|| SandboxError::InvalidRequest("argv is empty".into()))?;
        let mut cmd = Command::new(program);
        cmd.args(args).env_clear().envs(&req.env).current_dir(cwd);
        Ok(cmd)
    }
}

impl SandboxProvider for HostProvider {
    fn name(&self) -> &'static str {
        "host"
    }

    fn probe(&self) -> BoxFuture<'_, Probe> {
        Box::pin(async move {
            let mut notes =
                vec!["no isolation: jobs run as the runner's user on this machine".to_string()];
            let available = match std::fs::create_dir_all(&self.run_dir) {
                Ok(()) => true,
                Err(e) => {
                    notes.push(format!(
                        "cannot create run directory {}: {e}",
                        self.run_dir.display()
                    ));
                    false
                }
            };
            if !self.run_dir.is_absolute() {
                notes.push(
                    "run directory is relative; paths in the job environment will be too".into(),
                );
            }
            Probe {
                backend: "host",
                available,
                notes,
            }
        })
    }

    fn create(&self, spec: JobSpec) -> BoxFuture<'_, Result<Box<dyn Sandbox>, SandboxError>> {
        Box::pin(async move {
            let job = sanitize_component("job id", &spec.job_id)?;
            let ws = sanitize_component("workspace name", &spec.workspace_name)?;
            let layout = JobLayout::new(self.run_dir.join(job), &ws);
            let mut notes = Vec::new();
            if !spec.network {
                notes.push("host sandbox cannot restrict network access".to_string());
            }
            if !spec.limits.is_empty() {
                notes.push("host sandbox does not apply resource limits".to_string());
            }
            for n in &notes {
                tracing::info!(job = %spec.job_id, "{n}");
            }
            let sb = LocalSandbox::create("host", layout, notes, HostLauncher).await?;
            Ok(Box::new(sb) as Box<dyn Sandbox>)
        })
    }
}
