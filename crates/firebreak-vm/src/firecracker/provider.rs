//! The Firecracker backend behind the runner's `Sandbox` seam.
//!
//! [`FirecrackerProvider::create`] boots one VM per job (or restores one
//! from a warm-start snapshot) and wraps it in a [`FirecrackerSandbox`]: the
//! same agent-backed operations as the QEMU backend's `VmSandbox` — the job
//! tree under [`GUEST_ROOT`], paths confined to it, output split into lines
//! the way the local backends do — with a Firecracker VM behind it.
//! (`VmSandbox` holds a `QemuVm`; sharing it needs a small VM-handle trait in
//! `sandbox.rs`, so this type carries its own copy of that logic for now.)

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use firebreak_agent::{AgentClient, ExecSpec};
use firebreak_runner::sandbox::{
    BoxFuture, ExecRequest, ExitStatus, JobLayout, JobSpec, OutputEvent, Probe, Sandbox,
    SandboxError, SandboxProvider,
};
use tokio::sync::{mpsc, Mutex};

use super::vm::{find_firecracker, BootFiles, FirecrackerConfig, FirecrackerVm, Snapshot};
use crate::agent_ops::{self, agent_err, guest_str, sanitize};
use crate::image::{Image, ImageStore};

/// Root of the job tree inside the guest (as in the QEMU backend).
pub const GUEST_ROOT: &str = "/home/runner";

const BACKEND: &str = "firecracker";

fn unavailable(reason: impl Into<String>) -> SandboxError {
    SandboxError::Unavailable {
        backend: BACKEND,
        reason: reason.into(),
    }
}

/// Creates Firecracker sandboxes.
#[derive(Debug, Clone)]
pub struct FirecrackerProvider {
    store: ImageStore,
    image: Option<String>,
    config: FirecrackerConfig,
    snapshot: Option<PathBuf>,
}

impl FirecrackerProvider {
    /// Uses the newest image in `store` (or the one whose hash starts with
    /// `image`) and `config` as the base VM settings; per-job limits come
    /// from the [`JobSpec`].
    pub fn new(store: ImageStore, image: Option<String>, config: FirecrackerConfig) -> Self {
        FirecrackerProvider {
            store,
            image,
            config,
            snapshot: None,
        }
    }

    /// Warm starts: every job restores this snapshot directory (written by
    /// [`FirecrackerVm::snapshot`]) instead of booting.
    pub fn with_snapshot(mut self, dir: impl Into<PathBuf>) -> Self {
        self.snapshot = Some(dir.into());
        self
    }

    fn image(&self) -> Result<Image, String> {
        match &self.image {
            Some(h) => match self.store.get(h) {
                Ok(Some(i)) => Ok(i),
                Ok(None) => Err(format!(
                    "no image {h} in {}",
                    self.store.images_dir().display()
                )),
                Err(e) => Err(e.to_string()),
            },
            None => self.store.latest().map_err(|e| e.to_string()),
        }
    }
}

impl SandboxProvider for FirecrackerProvider {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn probe(&self) -> BoxFuture<'_, Probe> {
        Box::pin(async move {
            let mut notes = Vec::new();
            let mut available = true;
            if self
                .config
                .binary
                .clone()
                .or_else(find_firecracker)
                .is_none()
            {
                available = false;
                notes.push(format!(
                    "firecracker binary not found (set {} or put it on PATH)",
                    super::vm::FIRECRACKER_BIN_ENV
                ));
            }
            if let Err(e) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
            {
                available = false;
                notes.push(format!("/dev/kvm: {e}"));
            } else if crate::qemu::kvm_is_pvm() {
                available = false;
                notes.push("KVM is PVM-only here: Firecracker needs hardware KVM".into());
            }
            match &self.snapshot {
                Some(dir) => {
                    if let Err(e) = Snapshot::open(dir) {
                        available = false;
                        notes.push(e.to_string());
                    }
                }
                None => {
                    if let Err(e) = self.image() {
                        available = false;
                        notes.push(e);
                    }
                }
            }
            Probe {
                backend: BACKEND,
                available,
                notes,
            }
        })
    }

    fn create(&self, spec: JobSpec) -> BoxFuture<'_, Result<Box<dyn Sandbox>, SandboxError>> {
        Box::pin(async move {
            let ws = sanitize(&spec.workspace_name)?;
            sanitize(&spec.job_id)?;
            let mut cfg = self.config.clone();
            let mut notes = Vec::new();
            if let Some(bytes) = spec.limits.memory_bytes {
                cfg.memory_mib = (bytes >> 20).max(128);
            }
            if let Some(m) = spec.limits.cpu_millis {
                cfg.vcpus = m.div_ceil(1000).clamp(1, 32);
            }
            if spec.limits.max_pids.is_some() {
                notes.push("max_pids is not enforced in the firecracker sandbox yet".to_string());
            }
            if spec.network && cfg.network.is_none() {
                notes.push(
                    "network requested but no TAP device is configured: the guest has none"
                        .to_string(),
                );
            }
            let vm = match &self.snapshot {
                Some(dir) => {
                    let snap = Snapshot::open(dir).map_err(|e| unavailable(e.to_string()))?;
                    if spec.limits.memory_bytes.is_some() || spec.limits.cpu_millis.is_some() {
                        notes.push(
                            "restored from a snapshot: vCPUs and memory are the snapshot's"
                                .to_string(),
                        );
                    }
                    FirecrackerVm::restore(&snap, &cfg).await
                }
                None => {
                    let image = self.image().map_err(unavailable)?;
                    FirecrackerVm::boot(&BootFiles::from(&image), &cfg).await
                }
            }
            .map_err(|e| unavailable(e.to_string()))?;
            let stats = vm.boot_stats();
            notes.push(format!(
                "firecracker VM {} ({} vCPU, {} MiB, guest kernel {}) {} in {:.0} ms",
                vm.id(),
                cfg.vcpus,
                cfg.memory_mib,
                vm.agent_info().kernel_release,
                if stats.restored { "restored" } else { "booted" },
                stats.total.as_secs_f64() * 1e3
            ));
            let sb = FirecrackerSandbox::new(vm, Path::new(GUEST_ROOT), &ws, notes);
            sb.make_layout().await?;
            Ok(Box::new(sb) as Box<dyn Sandbox>)
        })
    }
}


/// One job's Firecracker VM.
pub struct FirecrackerSandbox {
    layout: JobLayout,
    notes: Vec<String>,
    client: Arc<AgentClient>,
    vm: Mutex<Option<FirecrackerVm>>,
    destroyed: AtomicBool,
}




impl FirecrackerSandbox {
    fn new(vm: FirecrackerVm, root: &Path, ws: &str, notes: Vec<String>) -> Self {
        FirecrackerSandbox {
            layout: JobLayout::new(root, ws),
            notes,
            client: vm.client(),
            vm: Mutex::new(Some(vm)),
            destroyed: AtomicBool::new(false),
        }
    }

    /// Wraps an already running VM with its job tree under `root` in the
    /// guest (normally [`GUEST_ROOT`]); creates the tree.
    pub async fn from_vm(
        vm: FirecrackerVm,
        root: &Path,
        workspace_name: &str,
    ) -> Result<Self, SandboxError> {
        let sb = Self::new(vm, root, &sanitize(workspace_name)?, Vec::new());
        sb.make_layout().await?;
        Ok(sb)
    }

    async fn make_layout(&self) -> Result<(), SandboxError> {
        let mut argv = vec!["/bin/mkdir".to_string(), "-p".to_string()];
        argv.extend(self.layout.dirs().iter().map(|d| guest_str(d)));
        argv.push(guest_str(&self.layout.home));
        let (_, err, st) = self
            .client
            .exec(ExecSpec::new(argv))
            .await
            .map_err(|e| agent_err("create", &self.layout.root, e))?
            .collect()
            .await
            .map_err(|e| agent_err("create", &self.layout.root, e))?;
        if st != (firebreak_agent::ExitStatus::Exited { code: 0 }) {
            return Err(SandboxError::Io {
                op: "create",
                path: self.layout.root.clone(),
                source: std::io::Error::other(String::from_utf8_lossy(&err).into_owned()),
            });
        }
        Ok(())
    }

    fn live(&self) -> Result<(), SandboxError> {
        if self.destroyed.load(Ordering::SeqCst) {
            Err(SandboxError::Destroyed)
        } else {
            Ok(())
        }
    }

    /// The VM (console, snapshots, stats).
    pub fn vm(&self) -> &Mutex<Option<FirecrackerVm>> {
        &self.vm
    }
}



impl Sandbox for FirecrackerSandbox {
    fn backend(&self) -> &'static str {
        BACKEND
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
            self.live()?;
            agent_ops::copy_in(&self.client, &self.layout, host_src, dest).await
        })
    }

    fn copy_out<'a>(
        &'a self,
        src: &'a Path,
        host_dest: &'a Path,
    ) -> BoxFuture<'a, Result<(), SandboxError>> {
        Box::pin(async move {
            self.live()?;
            agent_ops::copy_out(&self.client, &self.layout, src, host_dest).await
        })
    }

    fn read_file<'a>(
        &'a self,
        path: &'a Path,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, SandboxError>> {
        Box::pin(async move {
            self.live()?;
            agent_ops::read_file(&self.client, &self.layout, path).await
        })
    }

    fn write_file<'a>(
        &'a self,
        path: &'a Path,
        contents: Vec<u8>,
        mode: Option<u32>,
    ) -> BoxFuture<'a, Result<(), SandboxError>> {
        Box::pin(async move {
            self.live()?;
            agent_ops::write_file(&self.client, &self.layout, path, contents, mode).await
        })
    }

    fn remove<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, Result<(), SandboxError>> {
        Box::pin(async move {
            self.live()?;
            agent_ops::remove(&self.client, &self.layout, path).await
        })
    }

    fn exec<'a>(
        &'a self,
        req: ExecRequest,
        output: mpsc::Sender<OutputEvent>,
    ) -> BoxFuture<'a, Result<ExitStatus, SandboxError>> {
        Box::pin(async move {
            self.live()?;
            agent_ops::exec(&self.client, &self.layout, req, output).await
        })
    }

    fn destroy(&self) -> BoxFuture<'_, Result<(), SandboxError>> {
        Box::pin(async move {
            self.destroyed.store(true, Ordering::SeqCst);
            if let Some(mut vm) = self.vm.lock().await.take() {
                vm.shutdown(Duration::from_secs(3)).await;
            }
            Ok(())
        })
    }
}

