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

use firebreak_runner::sandbox::{
    BoxFuture, JobLayout, JobSpec, Probe, Sandbox, SandboxError, SandboxProvider,
};

use super::vm::{find_firecracker, BootFiles, FirecrackerConfig, FirecrackerVm, Snapshot};
use crate::agent_ops::{sanitize, AgentSandbox, GuestVm, VmOrigin};
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
            if let Some(j) = &self.config.jailer {
                if !j.binary.is_file() {
                    available = false;
                    notes.push(format!(
                        "jailer binary {} not found (use the jailer of the same Firecracker release)",
                        j.binary.display()
                    ));
                }
                if !nix::unistd::Uid::effective().is_root() {
                    available = false;
                    notes.push(
                        "the jailer must be started as root (it drops to its user before Firecracker runs)"
                            .into(),
                    );
                }
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
            if spec.limits.disk_bytes.is_some() {
                notes.push("disk size is not applied in the firecracker sandbox yet".to_string());
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
            let sb = FirecrackerSandbox::for_job(vm, Path::new(GUEST_ROOT), &ws, notes);
            sb.make_layout().await?;
            crate::agent_ops::set_machine_id(&sb.client)
                .await
                .map_err(|e| SandboxError::Unavailable {
                    backend: BACKEND,
                    reason: e.to_string(),
                })?;
            if let Some(limit) = cfg.unresponsive_after {
                sb.watch_liveness(limit);
            }
            Ok(Box::new(sb) as Box<dyn Sandbox>)
        })
    }
}

/// One job's Firecracker VM: the agent-backed sandbox over a [`FirecrackerVm`].
pub type FirecrackerSandbox = AgentSandbox<FirecrackerVm>;

impl GuestVm for FirecrackerVm {
    const BACKEND: &'static str = BACKEND;

    fn discard(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(FirecrackerVm::kill(self))
    }
}

impl AgentSandbox<FirecrackerVm> {
    fn for_job(vm: FirecrackerVm, root: &Path, ws: &str, notes: Vec<String>) -> Self {
        let origin = if vm.boot_stats().restored {
            VmOrigin::Restored
        } else {
            VmOrigin::Cold
        };
        Self::new(vm.client(), vm, JobLayout::new(root, ws), notes, origin)
    }

    /// Wraps an already running VM with its job tree under `root` in the
    /// guest (normally [`GUEST_ROOT`]); creates the tree.
    pub async fn from_vm(
        vm: FirecrackerVm,
        root: &Path,
        workspace_name: &str,
    ) -> Result<Self, SandboxError> {
        let sb = Self::for_job(vm, root, &sanitize(workspace_name)?, Vec::new());
        sb.make_layout().await?;
        Ok(sb)
    }

    async fn make_layout(&self) -> Result<(), SandboxError> {
        let l = &self.layout;
        let mut dirs: Vec<&Path> = l.dirs().to_vec();
        dirs.push(&l.home);
        self.make_dirs(&dirs).await
    }
}
