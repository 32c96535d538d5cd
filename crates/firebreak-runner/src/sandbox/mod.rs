//! The sandbox interface: one isolated environment per job.
//!
//! Every backend (host, namespace now; QEMU microVM and Firecracker later,
//! driven through a guest agent) implements two object-safe traits:
//!
//! * [`SandboxProvider`] — knows how to [`probe`](SandboxProvider::probe)
//!   whether the backend works on this machine and how to
//!   [`create`](SandboxProvider::create) a [`Sandbox`] for one job.
//! * [`Sandbox`] — one live job environment: copy a workspace in, run
//!   processes while streaming their output, read and write files, copy files
//!   out, destroy.
//!
//! ## Paths
//! All paths passed to a [`Sandbox`] method (except the *host* side of
//! [`copy_in`](Sandbox::copy_in) / [`copy_out`](Sandbox::copy_out)) are
//! **guest paths**: absolute paths as the job sees them. The caller never
//! assumes the job shares the host filesystem; it learns where things are from
//! [`Sandbox::layout`]. The host and namespace backends happen to use the same
//! absolute paths on both sides (so paths in logs match); a VM backend will not.
//! File operations are confined to the job's directory tree
//! ([`JobLayout::root`]); anything else is [`SandboxError::PathOutsideSandbox`].
//!
//! ## Process contract
//! [`Sandbox::exec`] runs `argv` with exactly the given environment (nothing is
//! inherited from the runner), in `cwd`. Each line of stdout and stderr is sent
//! as an [`OutputEvent`] as soon as it is read; lines of one stream keep their
//! order. A trailing `\r` is stripped; invalid UTF-8 is replaced. Lines longer
//! than [`MAX_LINE_BYTES`] are split. The future resolves once the process has
//! exited and both streams reached end of file (or, if a background process
//! keeps a stream open, after [`ExecRequest::drain_grace`]). On timeout or
//! cancellation the whole process tree is killed (SIGKILL) — with
//! [`ExecRequest::interrupt_first`], only after the main process had SIGINT and
//! [`INTERRUPT_GRACE`], then SIGTERM and [`TERMINATE_GRACE`], to stop by itself, as
//! GitHub's runner stops a step — and the result is
//! [`ExitStatus::TimedOut`] / [`ExitStatus::Cancelled`]; it is not an error. A
//! closed output channel does not stop the process: output is then discarded.
//!
//! [`Sandbox::destroy`] kills whatever the job left running and removes the
//! job's directories; it is idempotent.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

mod fsutil;
pub mod host;
mod local;
pub mod namespace;
mod process;

pub use local::TRACKING_ENV;

pub use host::HostProvider;
pub use namespace::{NamespaceConfig, NamespaceProvider};

/// A boxed, sendable future; keeps the traits object-safe without `async_trait`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Longest line delivered in one [`OutputEvent`]; longer lines are split.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// What a job asks of its sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSpec {
    /// Identifies the job; becomes a directory name (sanitised: anything but
    /// `[A-Za-z0-9._-]` turns into `_`). Must be unique among live sandboxes.
    pub job_id: String,
    /// Repository name (the part after `owner/`); the workspace is
    /// `<root>/work/<name>/<name>` as on GitHub's runner (`_work/<repo>/<repo>`).
    pub workspace_name: String,
    /// Allow network access. Host sandboxes always have it; the namespace
    /// sandbox gets its own empty network namespace unless this is true.
    pub network: bool,
    /// Resource limits; each is best effort and reported when not applied.
    pub limits: ResourceLimits,
}

impl JobSpec {
    /// A spec with no network and no limits.
    pub fn new(job_id: impl Into<String>, workspace_name: impl Into<String>) -> Self {
        JobSpec {
            job_id: job_id.into(),
            workspace_name: workspace_name.into(),
            network: false,
            limits: ResourceLimits::default(),
        }
    }
}

/// Resource limits for a whole job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceLimits {
    /// Memory limit in bytes.
    pub memory_bytes: Option<u64>,
    /// CPU limit in thousandths of a CPU (1500 = 1.5 CPUs).
    pub cpu_millis: Option<u32>,
    /// Maximum number of tasks (processes and threads).
    pub max_pids: Option<u32>,
    /// Size of the job's root filesystem in bytes (microVMs only: the
    /// image's filesystem is grown to it; other sandboxes share the host's).
    pub disk_bytes: Option<u64>,
}

impl ResourceLimits {
    /// True when no limit is set.
    pub fn is_empty(&self) -> bool {
        !self.has_process_limits() && self.disk_bytes.is_none()
    }

    /// True when a memory, CPU or task limit is set (what a cgroup enforces).
    pub fn has_process_limits(&self) -> bool {
        self.memory_bytes.is_some() || self.cpu_millis.is_some() || self.max_pids.is_some()
    }
}

/// Where things live inside a sandbox (guest paths).
///
/// Mirrors GitHub's runner: `RUNNER_WORKSPACE` = `work/<repo>`,
/// `GITHUB_WORKSPACE` = `work/<repo>/<repo>`, `RUNNER_TEMP` = `temp`, file
/// command files in `temp/_runner_file_commands`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobLayout {
    /// The job's directory tree; every other path is below it.
    pub root: PathBuf,
    /// `GITHUB_WORKSPACE`.
    pub workspace: PathBuf,
    /// `RUNNER_WORKSPACE` (the workspace's parent).
    pub runner_workspace: PathBuf,
    /// `RUNNER_TEMP`; scripts are written here. Emptied per job.
    pub temp: PathBuf,
    /// Where GITHUB_ENV/OUTPUT/STATE/PATH/STEP_SUMMARY files are created.
    pub file_commands: PathBuf,
    /// `RUNNER_TOOL_CACHE`.
    pub tool_cache: PathBuf,
    /// `HOME` for the job.
    pub home: PathBuf,
}

impl JobLayout {
    /// The layout rooted at `root` for a repository called `workspace_name`.
    pub fn new(root: impl Into<PathBuf>, workspace_name: &str) -> Self {
        let root = root.into();
        let runner_workspace = root.join("work").join(workspace_name);
        let temp = root.join("temp");
        JobLayout {
            workspace: runner_workspace.join(workspace_name),
            runner_workspace,
            file_commands: temp.join("_runner_file_commands"),
            temp,
            tool_cache: root.join("tool_cache"),
            home: root.join("home"),
            root,
        }
    }

    /// Every directory of the layout, parents first.
    pub fn dirs(&self) -> [&Path; 6] {
        [
            &self.root,
            &self.runner_workspace,
            &self.workspace,
            &self.temp,
            &self.file_commands,
            &self.tool_cache,
        ]
    }
}

/// One process to run inside a sandbox. Its `Debug` output shows environment
/// variable names only (values may be secrets).
#[derive(Clone)]
pub struct ExecRequest {
    /// Program and arguments; `argv[0]` is looked up on the `PATH` in `env`
    /// when it has no `/`.
    pub argv: Vec<String>,
    /// The complete environment of the process (nothing is inherited).
    pub env: BTreeMap<String, String>,
    /// Working directory (guest path). `None` means the workspace.
    pub cwd: Option<PathBuf>,
    /// Kill the process tree after this long.
    pub timeout: Option<Duration>,
    /// Kill the process tree when this is cancelled.
    pub cancel: Option<CancellationToken>,
    /// Bytes written to the process's stdin, which is then closed. `None`
    /// gives it `/dev/null`.
    pub stdin: Option<Vec<u8>>,
    /// After the main process exits, how long to keep reading output that
    /// background processes may still write before returning. Zero may also
    /// lose the process's own last lines, still unread in the pipe: only for
    /// commands whose output does not matter.
    pub drain_grace: Duration,
    /// On timeout or cancellation, first ask the main process to stop: SIGINT, then
    /// [`INTERRUPT_GRACE`] later SIGTERM, then [`TERMINATE_GRACE`] later the tree is killed
    /// (GitHub's runner does this to a step's process, so that its `trap`s run).
    pub interrupt_first: bool,
    /// Kill the process tree at once when this is cancelled, also while
    /// [`Self::interrupt_first`] is waiting for the process to stop (a second Ctrl-C).
    pub kill: Option<CancellationToken>,
    /// What the job calls this process (a step's name), for a sandbox's own notes about it
    /// (a microVM's agent names the step whose leftover processes it had to end).
    pub label: Option<String>,
}

/// How long a process asked to stop with SIGINT ([`ExecRequest::interrupt_first`]) has
/// before SIGTERM: 7.5 s, as GitHub's runner gives a step.
pub const INTERRUPT_GRACE: Duration = Duration::from_millis(7500);

/// How long a process sent SIGTERM after [`INTERRUPT_GRACE`] has before its tree is
/// killed: 2.5 s, as GitHub's runner gives a step.
pub const TERMINATE_GRACE: Duration = Duration::from_millis(2500);

impl std::fmt::Debug for ExecRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecRequest")
            .field("argv", &self.argv)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("cwd", &self.cwd)
            .field("timeout", &self.timeout)
            .field("cancel", &self.cancel.is_some())
            .field("stdin", &self.stdin.as_ref().map(Vec::len))
            .field("drain_grace", &self.drain_grace)
            .field("interrupt_first", &self.interrupt_first)
            .field("kill", &self.kill.is_some())
            .field("label", &self.label)
            .finish()
    }
}

impl ExecRequest {
    /// A request for `argv` with an empty environment and default settings.
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ExecRequest {
            argv: argv.into_iter().map(Into::into).collect(),
            env: BTreeMap::new(),
            cwd: None,
            timeout: None,
            cancel: None,
            stdin: None,
            drain_grace: Duration::from_millis(500),
            interrupt_first: false,
            kill: None,
            label: None,
        }
    }

    /// Sets one environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Sets the working directory.
    pub fn cwd(mut self, cwd: impl Into<PathBuf>) -> Self {
        self.cwd = Some(cwd.into());
        self
    }

    /// Sets the timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the cancellation token.
    pub fn cancel(mut self, token: CancellationToken) -> Self {
        self.cancel = Some(token);
        self
    }
}

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One line of output from a running process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputEvent {
    /// The stream it was read from.
    pub stream: Stream,
    /// The line without its line terminator.
    pub line: String,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Exited(i32),
    /// A signal killed it (not sent by us).
    Signaled(i32),
    /// It ran past [`ExecRequest::timeout`]; its process tree was killed.
    TimedOut,
    /// [`ExecRequest::cancel`] fired; its process tree was killed.
    Cancelled,
}

impl ExitStatus {
    /// True only for `Exited(0)`.
    pub fn success(&self) -> bool {
        matches!(self, ExitStatus::Exited(0))
    }

    /// The exit code GitHub would report: the code, or 128+signal, or `None`
    /// when we killed it.
    pub fn code(&self) -> Option<i32> {
        match self {
            ExitStatus::Exited(c) => Some(*c),
            ExitStatus::Signaled(s) => Some(128 + s),
            ExitStatus::TimedOut | ExitStatus::Cancelled => None,
        }
    }
}

/// Whether a backend can run here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The backend's name (`host`, `namespace`, …).
    pub backend: &'static str,
    /// It can create sandboxes here.
    pub available: bool,
    /// Why it cannot, or notes about reduced function (e.g. no cgroups).
    pub notes: Vec<String>,
}

/// The most [`Sandbox::read_file`] reads (64 MiB; the agent client's limit is the same).
pub const READ_FILE_LIMIT: u64 = 64 << 20;

/// Errors of the sandbox layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// The backend cannot work on this machine.
    #[error("{backend} sandbox unavailable: {reason}")]
    Unavailable {
        /// Backend name.
        backend: &'static str,
        /// Why.
        reason: String,
    },
    /// A job id or workspace name that cannot be used.
    #[error("invalid job spec: {0}")]
    InvalidSpec(String),
    /// A request that cannot be run (empty argv, relative cwd, …).
    #[error("invalid exec request: {0}")]
    InvalidRequest(String),
    /// A guest path outside the job's directory tree, or not absolute.
    #[error("path {0} is outside the sandbox")]
    PathOutsideSandbox(PathBuf),
    /// The process could not be started.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// `argv[0]`.
        program: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The sandbox was destroyed already.
    #[error("sandbox already destroyed")]
    Destroyed,
}

impl SandboxError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SandboxError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// One live, isolated environment for one job. See the module docs for the
/// contract every implementation keeps.
pub trait Sandbox: Send + Sync {
    /// The backend's name.
    fn backend(&self) -> &'static str;

    /// Where things live inside this sandbox (guest paths).
    fn layout(&self) -> &JobLayout;

    /// Notes about how this sandbox differs from what was asked (limits not
    /// applied, …), for the job log.
    fn notes(&self) -> Vec<String>;

    /// Copies the host directory `host_src` (recursively, keeping modes and
    /// symlinks) to the guest directory `dest`, creating it; existing files
    /// are overwritten.
    fn copy_in<'a>(
        &'a self,
        host_src: &'a Path,
        dest: &'a Path,
    ) -> BoxFuture<'a, Result<(), SandboxError>>;

    /// Makes the host directory `host_src` appear at the guest directory `dest` as the job's
    /// own writable copy *without copying it*, where the backend can (the local backends
    /// mount an overlay: `host_src` is the read-only lower layer, writes go to an upper
    /// layer inside the job's tree and never reach `host_src`). `dest` must not exist or be
    /// an empty directory. [`MountOutcome::Mounted`] means done; anything else means the
    /// caller copies with [`copy_in`](Sandbox::copy_in). The mount is undone by
    /// [`destroy`](Sandbox::destroy). The default: not supported.
    ///
    /// Setting `FIREBREAK_NO_OVERLAY=1` in the runner's environment turns this off for the
    /// local backends (every checkout copies).
    fn mount_in<'a>(
        &'a self,
        host_src: &'a Path,
        dest: &'a Path,
    ) -> BoxFuture<'a, Result<MountOutcome, SandboxError>> {
        let _ = (host_src, dest);
        Box::pin(async { Ok(MountOutcome::Unsupported) })
    }

    /// Copies the guest file or directory `src` to `host_dest` on the host.
    fn copy_out<'a>(
        &'a self,
        src: &'a Path,
        host_dest: &'a Path,
    ) -> BoxFuture<'a, Result<(), SandboxError>>;

    /// Reads a whole guest file of at most [`READ_FILE_LIMIT`] bytes; a missing file is
    /// `Ok(None)`, a longer one (or, in local sandboxes, one that is not a regular file) an
    /// error: a job must not be able to exhaust the runner's memory through a file command.
    fn read_file<'a>(
        &'a self,
        path: &'a Path,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, SandboxError>>;

    /// Creates or truncates a guest file (and its parent directories) with
    /// `contents`; `mode` sets Unix permission bits (default 0o644).
    fn write_file<'a>(
        &'a self,
        path: &'a Path,
        contents: Vec<u8>,
        mode: Option<u32>,
    ) -> BoxFuture<'a, Result<(), SandboxError>>;

    /// Removes a guest file or directory tree; missing is fine.
    fn remove<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, Result<(), SandboxError>>;

    /// Runs a process, streaming its output line by line to `output`.
    fn exec<'a>(
        &'a self,
        req: ExecRequest,
        output: mpsc::Sender<OutputEvent>,
    ) -> BoxFuture<'a, Result<ExitStatus, SandboxError>>;

    /// Kills everything left running and deletes the job's directories.
    /// Idempotent; other methods fail with [`SandboxError::Destroyed`] after it.
    fn destroy(&self) -> BoxFuture<'_, Result<(), SandboxError>>;
}

/// What [`Sandbox::mount_in`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountOutcome {
    /// The directory is mounted (copy-on-write) at the destination.
    Mounted,
    /// The backend has no such capability; copy instead.
    Unsupported,
    /// The backend tried and could not (not root, no overlayfs, unsuitable file systems,
    /// destination not empty, turned off, …): copy instead. The reason, for a one-line note.
    Failed(String),
}

/// Environment variable that turns the overlay checkout of the local backends off.
pub const NO_OVERLAY_ENV: &str = "FIREBREAK_NO_OVERLAY";

/// Creates sandboxes of one backend.
pub trait SandboxProvider: Send + Sync {
    /// The backend's name.
    fn name(&self) -> &'static str;

    /// Whether this backend works here, and why not.
    fn probe(&self) -> BoxFuture<'_, Probe>;

    /// Creates a sandbox for one job: its directory tree exists and is empty.
    fn create(&self, spec: JobSpec) -> BoxFuture<'_, Result<Box<dyn Sandbox>, SandboxError>>;
}

/// Unmounts whatever is still mounted at or below `dir` (lazily when busy): a safety net
/// for callers about to delete a folder of job trees. Returns what could not be unmounted.
pub fn unmount_all_under(dir: &Path) -> Vec<PathBuf> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    fsutil::unmount_all_under(&dir)
}

/// Checks a job id / workspace name and returns its directory-safe form.
pub(crate) fn sanitize_component(what: &str, s: &str) -> Result<String, SandboxError> {
    if s.is_empty() {
        return Err(SandboxError::InvalidSpec(format!("{what} is empty")));
    }
    let cleaned: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned == "." || cleaned == ".." {
        return Err(SandboxError::InvalidSpec(format!(
            "{what} {s:?} is not a usable name"
        )));
    }
    Ok(cleaned)
}

/// Checks that `path` is absolute, has no `..`, and lies under `root`.
pub(crate) fn confine(root: &Path, path: &Path) -> Result<PathBuf, SandboxError> {
    use std::path::Component;
    if !path.is_absolute()
        || path.components().any(|c| matches!(c, Component::ParentDir))
        || !path.starts_with(root)
    {
        return Err(SandboxError::PathOutsideSandbox(path.to_path_buf()));
    }
    Ok(path.to_path_buf())
}

/// Until `token` is cancelled; never without one (an optional cancel or kill in a
/// `select!`).
pub async fn cancelled(token: Option<&CancellationToken>) {
    match token {
        Some(t) => t.cancelled().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_github_runner_shape() {
        let l = JobLayout::new("/run/fb/job1", "hello");
        assert_eq!(l.workspace, PathBuf::from("/run/fb/job1/work/hello/hello"));
        assert_eq!(l.runner_workspace, PathBuf::from("/run/fb/job1/work/hello"));
        assert_eq!(
            l.file_commands,
            PathBuf::from("/run/fb/job1/temp/_runner_file_commands")
        );
        assert!(l.dirs().iter().all(|d| d.starts_with(&l.root)));
    }

    #[test]
    fn sanitize_replaces_odd_characters() {
        assert_eq!(
            sanitize_component("job", "build (ubuntu, 1)").ok(),
            Some("build__ubuntu__1_".into())
        );
        assert!(sanitize_component("job", "").is_err());
        assert!(sanitize_component("job", "..").is_err());
    }

    #[test]
    fn confine_rejects_escapes() {
        let root = Path::new("/r/job");
        assert!(confine(root, Path::new("/r/job/temp/x")).is_ok());
        assert!(confine(root, Path::new("/r/job/../etc/passwd")).is_err());
        assert!(confine(root, Path::new("/etc/passwd")).is_err());
        assert!(confine(root, Path::new("temp/x")).is_err());
        assert!(confine(root, Path::new("/r/jobx/a")).is_err());
    }

    #[test]
    fn exec_request_debug_hides_env_values() {
        let r = ExecRequest::new(["true"]).env("TOKEN", "ghp_supersecret");
        let d = format!("{r:?}");
        assert!(d.contains("TOKEN"));
        assert!(!d.contains("ghp_supersecret"));
    }

    #[test]
    fn exit_status_codes() {
        assert!(ExitStatus::Exited(0).success());
        assert_eq!(ExitStatus::Signaled(9).code(), Some(137));
        assert_eq!(ExitStatus::TimedOut.code(), None);
    }
}
