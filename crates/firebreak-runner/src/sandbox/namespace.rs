//! The `namespace` backend: each process runs under bubblewrap (`bwrap`).
//!
//! What a job gets:
//! * its own mount, PID, IPC and UTS namespaces (hostname `firebreak` by
//!   default), a cgroup namespace where the kernel allows it, and its own
//!   network namespace (loopback only) unless [`JobSpec::network`] is set;
//! * read-only binds of `/usr`, `/etc`, `/bin`, `/sbin`, `/lib*` (symlinks are
//!   recreated as symlinks, as on merged-/usr systems) and of any
//!   [`NamespaceConfig::ro_binds`]; a fresh `/proc`, a minimal `/dev`, and
//!   private tmpfs on `/var/tmp` and `/run`, and on `/tmp` the job's own `<root>/tmp`, so
//!   files a step leaves in `/tmp` are there for later steps of the job (as on a runner);
//! * its job tree ([`JobLayout::root`]) bound read-write at the *same path* as
//!   on the host, so the workspace path in logs and in `GITHUB_WORKSPACE`
//!   matches the host backend's;
//! * no capabilities (`--cap-drop ALL`), a new session (no terminal injection),
//!   and `--die-with-parent`: when the supervising `bwrap` dies, the job's PID 1
//!   dies and the kernel kills every process of the namespace.
//!
//! Consequence of the private PID namespace: background processes started by a
//! step end when the step's main process ends (on GitHub they would live until
//! the job ends).
//!
//! Resource limits: with systemd as init, each process runs in a transient
//! scope (`systemd-run --scope -p MemoryMax= -p CPUQuota= -p TasksMax=`);
//! otherwise a cgroup is created directly in a writable cgroupfs (v2 unified or
//! v1 `memory`/`pids`/`cpu` hierarchies) and the launcher joins it before
//! exec'ing `bwrap`. If neither works the limits are skipped and the reason is
//! logged and reported in [`Sandbox::notes`].

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

use super::local::{Launcher, LocalSandbox};
use super::{
    sanitize_component, BoxFuture, ExecRequest, JobLayout, JobSpec, Probe, ResourceLimits, Sandbox,
    SandboxError, SandboxProvider,
};

/// How to set up namespace sandboxes.
#[derive(Debug, Clone)]
pub struct NamespaceConfig {
    /// Jobs get directories below this (absolute) directory.
    pub run_dir: PathBuf,
    /// The `bwrap` binary; a bare name is looked up on the runner's `PATH`.
    pub bwrap: PathBuf,
    /// Extra host directories bound read-only at the same path (tool caches,
    /// language installs outside `/usr`).
    pub ro_binds: Vec<PathBuf>,
    /// The hostname inside the sandbox.
    pub hostname: String,
    /// Try to apply [`ResourceLimits`] through cgroups.
    pub cgroups: bool,
    /// Root of the cgroup filesystem.
    pub cgroup_root: PathBuf,
}

impl NamespaceConfig {
    /// Defaults: `bwrap` from `PATH`, hostname `firebreak`, cgroups on.
    pub fn new(run_dir: impl Into<PathBuf>) -> Self {
        NamespaceConfig {
            run_dir: run_dir.into(),
            bwrap: PathBuf::from("bwrap"),
            ro_binds: Vec::new(),
            hostname: "firebreak".into(),
            cgroups: true,
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
        }
    }
}

/// Creates namespace sandboxes.
#[derive(Debug, Clone)]
pub struct NamespaceProvider {
    config: NamespaceConfig,
}

impl NamespaceProvider {
    /// A provider with this configuration.
    pub fn new(config: NamespaceConfig) -> Self {
        NamespaceProvider { config }
    }

    fn bwrap_path(&self) -> Option<PathBuf> {
        find_program(&self.config.bwrap)
    }
}

/// Resolves a program name against the runner's own `PATH`.
pub(crate) fn find_program(p: &Path) -> Option<PathBuf> {
    if p.components().count() > 1 {
        return p.is_file().then(|| p.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(p))
        .find(|c| c.is_file())
}

/// The bwrap arguments (before `--` and the command) for one process.
pub(crate) fn bwrap_args(
    config: &NamespaceConfig,
    root: &Path,
    cwd: &Path,
    network: bool,
) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| s.to_string()));
    push(&[
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
    ]);
    if !network {
        push(&["--unshare-net"]);
    }
    push(&["--die-with-parent", "--new-session", "--cap-drop", "ALL"]);
    push(&["--hostname", &config.hostname]);
    push(&["--ro-bind", "/usr", "/usr"]);
    for top in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
        match std::fs::symlink_metadata(top) {
            Ok(md) if md.file_type().is_symlink() => {
                if let Ok(target) = std::fs::read_link(top) {
                    let t = target.to_string_lossy().into_owned();
                    push(&["--symlink", &t, top]);
                }
            }
            Ok(md) if md.is_dir() => push(&["--ro-bind", top, top]),
            _ => {}
        }
    }
    push(&["--ro-bind", "/etc", "/etc"]);
    for extra in &config.ro_binds {
        let e = extra.to_string_lossy().into_owned();
        push(&["--ro-bind-try", &e, &e]);
    }
    push(&["--proc", "/proc", "--dev", "/dev"]);
    push(&["--tmpfs", "/tmp", "--tmpfs", "/var/tmp", "--tmpfs", "/run"]);
    // `/tmp` lasts for the whole job (as on a runner machine): the job's own `<root>/tmp`,
    // bound over the tmpfs. Keep job trees outside `/tmp` (else bwrap has to create the
    // root's mount point inside that folder).
    let jt = root.join("tmp").to_string_lossy().into_owned();
    push(&["--bind-try", &jt, "/tmp"]);
    // After the tmpfs mounts, so a job tree under /tmp stays visible.
    let r = root.to_string_lossy().into_owned();
    push(&["--bind", &r, &r]);
    let c = cwd.to_string_lossy().into_owned();
    push(&["--chdir", &c]);
    a
}

/// How limits are applied to the job's processes.
#[derive(Debug, Clone)]
enum LimitMode {
    None,
    /// `systemd-run --scope` with these `-p` properties.
    Systemd {
        systemd_run: PathBuf,
        props: Vec<String>,
    },
    /// Join these `cgroup.procs` files before exec; remove these dirs on destroy.
    Cgroupfs {
        procs: Vec<PathBuf>,
        dirs: Vec<PathBuf>,
    },
}

pub(crate) struct NamespaceLauncher {
    config: NamespaceConfig,
    bwrap: PathBuf,
    root: PathBuf,
    network: bool,
    limits: LimitMode,
}

const JOIN_CGROUP_SCRIPT: &str =
    r#"while [ "$1" != "--" ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@""#;

impl Launcher for NamespaceLauncher {
    fn command(&self, req: &ExecRequest, cwd: &Path) -> Result<Command, SandboxError> {
        if req.argv.is_empty() {
            return Err(SandboxError::InvalidRequest("argv is empty".into()));
        }
        if !cwd.starts_with(&self.root) {
            // Anything else may not exist inside; bwrap would fail obscurely.
            tracing::debug!(cwd = %cwd.display(), "working directory outside the job tree");
        }
        let mut argv: Vec<String> = Vec::new();
        match &self.limits {
            LimitMode::None => {}
            LimitMode::Systemd { systemd_run, props } => {
                argv.push(systemd_run.to_string_lossy().into_owned());
                argv.extend(["--scope", "--quiet", "--collect"].map(String::from));
                for p in props {
                    argv.push("-p".into());
                    argv.push(p.clone());
                }
                argv.push("--".into());
            }
            LimitMode::Cgroupfs { procs, .. } => {
                argv.extend(
                    ["/bin/sh", "-c", JOIN_CGROUP_SCRIPT, "firebreak-cgroup-join"]
                        .map(String::from),
                );
                argv.extend(procs.iter().map(|p| p.to_string_lossy().into_owned()));
                argv.push("--".into());
            }
        }
        argv.push(self.bwrap.to_string_lossy().into_owned());
        argv.extend(bwrap_args(&self.config, &self.root, cwd, self.network));
        argv.push("--".into());
        argv.extend(req.argv.iter().cloned());

        let mut cmd = Command::new(&argv[0]);
        // bwrap passes its own environment to the job: give it exactly the job's.
        cmd.args(&argv[1..])
            .env_clear()
            .envs(&req.env)
            .current_dir("/");
        Ok(cmd)
    }

    fn cleanup(&self) {
        if let LimitMode::Cgroupfs { dirs, .. } = &self.limits {
            for d in dirs {
                if let Err(e) = std::fs::remove_dir(d) {
                    tracing::debug!(dir = %d.display(), "cannot remove cgroup: {e}");
                }
            }
        }
    }
}

/// Decides how to apply `limits`, creating cgroups when needed. `Err` carries
/// the reason limits are skipped.
fn setup_limits(
    config: &NamespaceConfig,
    job: &str,
    limits: &ResourceLimits,
) -> Result<LimitMode, String> {
    if !limits.has_process_limits() {
        return Ok(LimitMode::None);
    }
    if !config.cgroups {
        return Err("cgroups disabled in the configuration".into());
    }
    if Path::new("/run/systemd/system").is_dir() {
        if let Some(systemd_run) = find_program(Path::new("systemd-run")) {
            let mut props = Vec::new();
            if let Some(m) = limits.memory_bytes {
                props.push(format!("MemoryMax={m}"));
            }
            if let Some(c) = limits.cpu_millis {
                props.push(format!("CPUQuota={}%", (u64::from(c) / 10).max(1)));
            }
            if let Some(p) = limits.max_pids {
                props.push(format!("TasksMax={p}"));
            }
            return Ok(LimitMode::Systemd { systemd_run, props });
        }
    }
    let name = format!("firebreak-{job}");
    let root = &config.cgroup_root;
    let write = |p: PathBuf, v: String| {
        std::fs::write(&p, v).map_err(|e| format!("cannot write {}: {e}", p.display()))
    };
    if root.join("cgroup.controllers").is_file() {
        // cgroup v2
        let dir = root.join(&name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let res = (|| {
            if let Some(m) = limits.memory_bytes {
                write(dir.join("memory.max"), m.to_string())?;
            }
            if let Some(c) = limits.cpu_millis {
                write(
                    dir.join("cpu.max"),
                    format!("{} 100000", u64::from(c) * 100),
                )?;
            }
            if let Some(p) = limits.max_pids {
                write(dir.join("pids.max"), p.to_string())?;
            }
            Ok(())
        })();
        if let Err(e) = res {
            let _ = std::fs::remove_dir(&dir);
            return Err(e);
        }
        return Ok(LimitMode::Cgroupfs {
            procs: vec![dir.join("cgroup.procs")],
            dirs: vec![dir],
        });
    }
    // cgroup v1: one directory per controller hierarchy.
    let mut wanted: Vec<(&str, Vec<(&str, String)>)> = Vec::new();
    if let Some(m) = limits.memory_bytes {
        wanted.push(("memory", vec![("memory.limit_in_bytes", m.to_string())]));
    }
    if let Some(c) = limits.cpu_millis {
        wanted.push((
            "cpu",
            vec![
                ("cpu.cfs_period_us", "100000".into()),
                ("cpu.cfs_quota_us", (u64::from(c) * 100).to_string()),
            ],
        ));
    }
    if let Some(p) = limits.max_pids {
        wanted.push(("pids", vec![("pids.max", p.to_string())]));
    }
    let mut dirs = Vec::new();
    let mut procs = Vec::new();
    for (controller, files) in wanted {
        let dir = root.join(controller).join(&name);
        let res = std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))
            .and_then(|()| {
                files
                    .into_iter()
                    .try_for_each(|(f, v)| write(dir.join(f), v))
            });
        if let Err(e) = res {
            let _ = std::fs::remove_dir(&dir);
            for d in &dirs {
                let _ = std::fs::remove_dir(d);
            }
            return Err(e);
        }
        procs.push(dir.join("cgroup.procs"));
        dirs.push(dir);
    }
    Ok(LimitMode::Cgroupfs { procs, dirs })
}

impl SandboxProvider for NamespaceProvider {
    fn name(&self) -> &'static str {
        "namespace"
    }

    fn probe(&self) -> BoxFuture<'_, Probe> {
        Box::pin(async move {
            let mut notes = Vec::new();
            let Some(bwrap) = self.bwrap_path() else {
                notes.push(format!(
                    "{} not found (install the `bubblewrap` package)",
                    self.config.bwrap.display()
                ));
                return Probe {
                    backend: "namespace",
                    available: false,
                    notes,
                };
            };
            let tmp = std::env::temp_dir();
            let mut args = bwrap_args(&self.config, &tmp, Path::new("/"), false);
            args.extend(["--", "/bin/sh", "-c", "exit 0"].map(String::from));
            let out = Command::new(&bwrap)
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .env_clear()
                .env("PATH", "/usr/bin:/bin")
                .output()
                .await;
            let available = match out {
                Ok(o) if o.status.success() => true,
                Ok(o) => {
                    notes.push(format!(
                        "bwrap cannot create namespaces here: {}",
                        String::from_utf8_lossy(&o.stderr).trim()
                    ));
                    false
                }
                Err(e) => {
                    notes.push(format!("cannot run {}: {e}", bwrap.display()));
                    false
                }
            };
            if let Err(e) = std::fs::create_dir_all(&self.config.run_dir) {
                notes.push(format!(
                    "cannot create run directory {}: {e}",
                    self.config.run_dir.display()
                ));
                return Probe {
                    backend: "namespace",
                    available: false,
                    notes,
                };
            }
            let test_limits = ResourceLimits {
                max_pids: Some(1024),
                ..Default::default()
            };
            let job = format!("probe-{}", std::process::id());
            match setup_limits(&self.config, &job, &test_limits) {
                Ok(mode) => {
                    let how = match &mode {
                        LimitMode::Systemd { .. } => "systemd-run --scope",
                        _ => "cgroupfs",
                    };
                    notes.push(format!("resource limits applied through {how}"));
                    if let LimitMode::Cgroupfs { dirs, .. } = mode {
                        for d in dirs {
                            let _ = std::fs::remove_dir(d);
                        }
                    }
                }
                Err(e) => notes.push(format!("resource limits unavailable: {e}")),
            }
            Probe {
                backend: "namespace",
                available,
                notes,
            }
        })
    }

    fn create(&self, spec: JobSpec) -> BoxFuture<'_, Result<Box<dyn Sandbox>, SandboxError>> {
        Box::pin(async move {
            let bwrap = self.bwrap_path().ok_or_else(|| SandboxError::Unavailable {
                backend: "namespace",
                reason: format!(
                    "{} not found (install the `bubblewrap` package)",
                    self.config.bwrap.display()
                ),
            })?;
            if !self.config.run_dir.is_absolute() {
                return Err(SandboxError::InvalidSpec(
                    "namespace run directory must be absolute".into(),
                ));
            }
            let job = sanitize_component("job id", &spec.job_id)?;
            let ws = sanitize_component("workspace name", &spec.workspace_name)?;
            let layout = JobLayout::new(self.config.run_dir.join(&job), &ws);
            let mut notes = Vec::new();
            let limits = match setup_limits(&self.config, &job, &spec.limits) {
                Ok(m) => m,
                Err(reason) => {
                    let n = format!("resource limits not applied: {reason}");
                    tracing::warn!(job = %spec.job_id, "{n}");
                    notes.push(n);
                    LimitMode::None
                }
            };
            if spec.limits.disk_bytes.is_some() {
                notes.push(
                    "disk size not applied: the namespace sandbox shares the host's file systems"
                        .to_string(),
                );
            }
            if spec.network {
                notes.push("network access allowed".into());
            }
            let launcher = NamespaceLauncher {
                config: self.config.clone(),
                bwrap,
                root: layout.root.clone(),
                network: spec.network,
                limits,
            };
            let sb = LocalSandbox::create("namespace", layout, notes, launcher).await?;
            Ok(Box::new(sb) as Box<dyn Sandbox>)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_isolate_by_default() {
        let c = NamespaceConfig::new("/r");
        let a = bwrap_args(&c, Path::new("/r/j"), Path::new("/r/j/work/x/x"), false);
        for flag in [
            "--unshare-pid",
            "--unshare-net",
            "--die-with-parent",
            "--new-session",
        ] {
            assert!(a.iter().any(|x| x == flag), "{flag} missing");
        }
        let bind = a.windows(3).any(|w| w == ["--bind", "/r/j", "/r/j"]);
        assert!(bind);
        // The job tree is bound after the private /tmp.
        let tmp = a.iter().position(|x| x == "/tmp");
        let root = a.iter().position(|x| x == "/r/j");
        assert!(tmp < root);
        let with_net = bwrap_args(&c, Path::new("/r/j"), Path::new("/r/j"), true);
        assert!(!with_net.iter().any(|x| x == "--unshare-net"));
    }

    #[test]
    fn no_limits_means_no_cgroup() {
        let c = NamespaceConfig::new("/r");
        assert!(matches!(
            setup_limits(&c, "j", &ResourceLimits::default()),
            Ok(LimitMode::None)
        ));
        let off = NamespaceConfig {
            cgroups: false,
            ..c
        };
        let l = ResourceLimits {
            memory_bytes: Some(1 << 30),
            ..Default::default()
        };
        assert!(setup_limits(&off, "j", &l).is_err());
    }

    #[test]
    fn cgroup_v2_files_are_written() -> Result<(), Box<dyn std::error::Error>> {
        let t = tempfile::tempdir()?;
        std::fs::write(t.path().join("cgroup.controllers"), "memory pids cpu")?;
        let c = NamespaceConfig {
            cgroup_root: t.path().to_path_buf(),
            ..NamespaceConfig::new("/r")
        };
        let l = ResourceLimits {
            memory_bytes: Some(1000),
            cpu_millis: Some(1500),
            max_pids: Some(64),
            disk_bytes: None,
        };
        if Path::new("/run/systemd/system").is_dir() {
            return Ok(()); // systemd path taken instead
        }
        let m = setup_limits(&c, "j1", &l).map_err(std::io::Error::other)?;
        let dir = t.path().join("firebreak-j1");
        assert_eq!(std::fs::read_to_string(dir.join("memory.max"))?, "1000");
        assert_eq!(
            std::fs::read_to_string(dir.join("cpu.max"))?,
            "150000 100000"
        );
        assert_eq!(std::fs::read_to_string(dir.join("pids.max"))?, "64");
        assert!(matches!(m, LimitMode::Cgroupfs { .. }));
        Ok(())
    }
}
