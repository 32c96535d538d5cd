//! The part the host and namespace backends share: a job directory tree on
//! this machine, file operations confined to it, and local process
//! supervision. Only how a process is launched differs.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::process::Command;
use tokio::sync::mpsc;

use super::process::{self, Supervise};
use super::{
    confine, fsutil, BoxFuture, ExecRequest, ExitStatus, JobLayout, MountOutcome, OutputEvent,
    Sandbox, SandboxError,
};

/// Environment variable carrying the per-job tracking id; [`Sandbox::destroy`]
/// kills every process that still has it (like GitHub's `RUNNER_TRACKING_ID`).
pub const TRACKING_ENV: &str = "FIREBREAK_TRACKING_ID";

/// Builds the command that runs a request (after validation).
pub(crate) trait Launcher: Send + Sync + 'static {
    fn command(&self, req: &ExecRequest, cwd: &Path) -> Result<Command, SandboxError>;
    /// Called once during destroy, after processes are killed.
    fn cleanup(&self) {}
}

pub(crate) struct LocalSandbox<L: Launcher> {
    backend: &'static str,
    layout: JobLayout,
    tracking_id: String,
    notes: Vec<String>,
    destroyed: AtomicBool,
    launcher: Arc<L>,
    /// Overlay mount points made by `mount_in`, in mount order.
    mounts: Arc<Mutex<Vec<PathBuf>>>,
    overlay_seq: AtomicUsize,
}

/// Where a job's overlay layers live: `<root>/.overlay/<n>/{upper,work}` (in the job's own
/// tree, so they go with it; tiny unless the job writes a lot).
fn overlay_dir(root: &Path, n: usize) -> PathBuf {
    root.join(".overlay").join(n.to_string())
}

/// Unmounts `mounts` (last first), then anything else still mounted below `root`. True
/// when nothing is left mounted there.
fn unmount_job(root: &Path, mounts: &Mutex<Vec<PathBuf>>) -> bool {
    let list: Vec<PathBuf> = match mounts.lock() {
        Ok(mut m) => std::mem::take(&mut *m),
        Err(p) => std::mem::take(&mut *p.into_inner()),
    };
    if list.is_empty() {
        return true;
    }
    for m in list.iter().rev() {
        if let Err(e) = fsutil::unmount(m) {
            tracing::warn!(mount = %m.display(), "cannot unmount the checkout overlay: {e}");
        }
    }
    // Mount points are recorded (and listed by the kernel) resolved.
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    fsutil::unmount_all_under(&root).is_empty()
}

impl<L: Launcher> Drop for LocalSandbox<L> {
    fn drop(&mut self) {
        // destroy() was skipped (a panic, an early return): never leave a mount behind.
        if !self.destroyed.load(Ordering::SeqCst) {
            unmount_job(&self.layout.root, &self.mounts);
        }
    }
}

impl<L: Launcher> LocalSandbox<L> {
    /// Creates the (empty) job tree. An existing tree of the same job is
    /// removed first.
    pub(crate) async fn create(
        backend: &'static str,
        layout: JobLayout,
        notes: Vec<String>,
        launcher: L,
    ) -> Result<Self, SandboxError> {
        let l = layout.clone();
        blocking(move || {
            // Never delete through a mount a crashed earlier run may have left there.
            if l.root.exists() {
                let root = std::fs::canonicalize(&l.root).unwrap_or_else(|_| l.root.clone());
                fsutil::unmount_all_under(&root);
            }
            fsutil::remove_any(&l.root)?;
            for d in l.dirs() {
                std::fs::create_dir_all(d)
                    .map_err(|e| SandboxError::io("create directory", d, e))?;
            }
            std::fs::create_dir_all(&l.home)
                .map_err(|e| SandboxError::io("create directory", &l.home, e))?;
            // the job's private /tmp (namespace backend)
            let tmp = l.root.join("tmp");
            std::fs::create_dir_all(&tmp)
                .map_err(|e| SandboxError::io("create directory", &tmp, e))?;
            {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777));
            }
            Ok(())
        })
        .await?;
        Ok(LocalSandbox {
            backend,
            layout,
            tracking_id: uuid::Uuid::new_v4().to_string(),
            notes,
            destroyed: AtomicBool::new(false),
            launcher: Arc::new(launcher),
            mounts: Arc::new(Mutex::new(Vec::new())),
            overlay_seq: AtomicUsize::new(0),
        })
    }

    fn live(&self) -> Result<(), SandboxError> {
        if self.destroyed.load(Ordering::SeqCst) {
            Err(SandboxError::Destroyed)
        } else {
            Ok(())
        }
    }

    fn guest(&self, p: &Path) -> Result<PathBuf, SandboxError> {
        self.live()?;
        confine(&self.layout.root, p)
    }
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SandboxError> + Send + 'static,
) -> Result<T, SandboxError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(SandboxError::io(
            "run blocking task",
            PathBuf::new(),
            std::io::Error::other(e.to_string()),
        )),
    }
}

impl<L: Launcher> Sandbox for LocalSandbox<L> {
    fn backend(&self) -> &'static str {
        self.backend
    }

    fn layout(&self) -> &JobLayout {
        &self.layout
    }

    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }

    fn copy_in<'a>(
        &'a self,
        host_src: &'a Path,
        dest: &'a Path,
    ) -> BoxFuture<'a, Result<(), SandboxError>> {
        Box::pin(async move {
            let dest = self.guest(dest)?;
            let root = self.layout.root.clone();
            let src = host_src.to_path_buf();
            blocking(move || {
                fsutil::check_inside(&root, &dest.join("x"), true)?;
                fsutil::copy_tree_fast(&src, &dest)
            })
            .await
        })
    }

    fn mount_in<'a>(
        &'a self,
        host_src: &'a Path,
        dest: &'a Path,
    ) -> BoxFuture<'a, Result<MountOutcome, SandboxError>> {
        Box::pin(async move {
            let dest = self.guest(dest)?;
            if fsutil::overlay_disabled() {
                return Ok(MountOutcome::Failed(format!(
                    "{} is set",
                    super::NO_OVERLAY_ENV
                )));
            }
            let root = self.layout.root.clone();
            let src = host_src.to_path_buf();
            let layers = overlay_dir(&root, self.overlay_seq.fetch_add(1, Ordering::SeqCst));
            let mounts = self.mounts.clone();
            blocking(move || {
                fsutil::check_inside(&root, &dest.join("x"), true)?;
                let md = std::fs::symlink_metadata(&dest)
                    .map_err(|e| SandboxError::io("inspect", &dest, e))?;
                let empty = md.is_dir()
                    && std::fs::read_dir(&dest)
                        .map(|mut d| d.next().is_none())
                        .unwrap_or(false);
                if !empty {
                    return Ok(MountOutcome::Failed(format!(
                        "{} is not an empty folder",
                        dest.display()
                    )));
                }
                let src_c = std::fs::canonicalize(&src)
                    .map_err(|e| SandboxError::io("resolve", &src, e))?;
                let dest_c = std::fs::canonicalize(&dest)
                    .map_err(|e| SandboxError::io("resolve", &dest, e))?;
                let (upper, work) = (layers.join("upper"), layers.join("work"));
                for d in [&upper, &work] {
                    std::fs::create_dir_all(d)
                        .map_err(|e| SandboxError::io("create directory", d, e))?;
                }
                match fsutil::mount_overlay(&src_c, &upper, &work, &dest_c) {
                    Ok(()) => {
                        match mounts.lock() {
                            Ok(mut m) => m.push(dest_c),
                            Err(p) => p.into_inner().push(dest_c),
                        }
                        Ok(MountOutcome::Mounted)
                    }
                    Err(e) => {
                        let _ = fsutil::remove_any(&layers);
                        Ok(MountOutcome::Failed(e))
                    }
                }
            })
            .await
        })
    }

    fn copy_out<'a>(
        &'a self,
        src: &'a Path,
        host_dest: &'a Path,
    ) -> BoxFuture<'a, Result<(), SandboxError>> {
        Box::pin(async move {
            let src = self.guest(src)?;
            let root = self.layout.root.clone();
            let dst = host_dest.to_path_buf();
            blocking(move || {
                fsutil::check_inside(&root, &src, false)?;
                if let Some(parent) = dst.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| SandboxError::io("create directory", parent, e))?;
                }
                fsutil::copy_tree(&src, &dst)
            })
            .await
        })
    }

    fn read_file<'a>(
        &'a self,
        path: &'a Path,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, SandboxError>> {
        Box::pin(async move {
            let p = self.guest(path)?;
            let root = self.layout.root.clone();
            blocking(move || {
                fsutil::check_inside(&root, &p, false)?;
                fsutil::read_nofollow(&p)
            })
            .await
        })
    }

    fn write_file<'a>(
        &'a self,
        path: &'a Path,
        contents: Vec<u8>,
        mode: Option<u32>,
    ) -> BoxFuture<'a, Result<(), SandboxError>> {
        Box::pin(async move {
            let p = self.guest(path)?;
            let root = self.layout.root.clone();
            blocking(move || {
                fsutil::check_inside(&root, &p, true)?;
                fsutil::write_nofollow(&p, &contents, mode.unwrap_or(0o644))
            })
            .await
        })
    }

    fn remove<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, Result<(), SandboxError>> {
        Box::pin(async move {
            let p = self.guest(path)?;
            if p == self.layout.root {
                return Err(SandboxError::PathOutsideSandbox(p));
            }
            let root = self.layout.root.clone();
            blocking(move || {
                fsutil::check_inside(&root, &p, false)?;
                fsutil::remove_any(&p)
            })
            .await
        })
    }

    fn exec<'a>(
        &'a self,
        mut req: ExecRequest,
        output: mpsc::Sender<OutputEvent>,
    ) -> BoxFuture<'a, Result<ExitStatus, SandboxError>> {
        Box::pin(async move {
            self.live()?;
            let Some(program) = req.argv.first().cloned() else {
                return Err(SandboxError::InvalidRequest("argv is empty".into()));
            };
            let cwd = req
                .cwd
                .clone()
                .unwrap_or_else(|| self.layout.workspace.clone());
            if !cwd.is_absolute() {
                return Err(SandboxError::InvalidRequest(format!(
                    "working directory {} is not absolute",
                    cwd.display()
                )));
            }
            req.env
                .insert(TRACKING_ENV.to_string(), self.tracking_id.clone());
            let cmd = self.launcher.command(&req, &cwd)?;
            tracing::debug!(backend = self.backend, ?req.argv, cwd = %cwd.display(), "exec");
            process::run(
                cmd,
                &program,
                Supervise {
                    timeout: req.timeout,
                    cancel: req.cancel.clone(),
                    stdin: req.stdin.take(),
                    drain_grace: req.drain_grace,
                    interrupt_first: req.interrupt_first,
                    kill: req.kill.clone(),
                },
                output,
            )
            .await
        })
    }

    fn destroy(&self) -> BoxFuture<'_, Result<(), SandboxError>> {
        Box::pin(async move {
            if self.destroyed.swap(true, Ordering::SeqCst) {
                return Ok(());
            }
            let id = self.tracking_id.clone();
            let root = self.layout.root.clone();
            let launcher = self.launcher.clone();
            let mounts = self.mounts.clone();
            blocking(move || {
                // Twice: a process may fork between listing and killing.
                for _ in 0..2 {
                    let n = process::kill_tracked(TRACKING_ENV, &id);
                    if n > 0 {
                        tracing::debug!(killed = n, "killed processes left by the job");
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                }
                launcher.cleanup();
                if !unmount_job(&root, &mounts) {
                    // Deleting through a live overlay would only add whiteouts to its upper
                    // layer (its lower is never touched), but it is pointless: leave it.
                    tracing::warn!(root = %root.display(), "a mount is left below the job tree; not removing it");
                    return Ok(());
                }
                fsutil::remove_any(&root)
            })
            .await
        })
    }
}
