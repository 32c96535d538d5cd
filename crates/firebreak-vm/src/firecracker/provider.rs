//! The Firecracker backend behind the runner's `Sandbox` seam.
//!
//! [`FirecrackerProvider::create`] gives each job a VM of its own — a clone
//! of the cached snapshot for the job's VM shape ([`SnapshotCache`]; the
//! first job of a shape boots, is prepared for jobs, and leaves that
//! snapshot behind), else a cold boot — charged to a memory budget, and
//! wraps it in a [`FirecrackerSandbox`]: the agent-backed sandbox the QEMU
//! backend uses too ([`AgentSandbox`] over a [`FirecrackerVm`]), with the job
//! tree under [`GUEST_ROOT`].

use std::path::{Path, PathBuf};

use firebreak_runner::sandbox::{
    BoxFuture, JobLayout, JobSpec, Probe, Sandbox, SandboxError, SandboxProvider,
};

use super::pool::FirecrackerPool;
use super::vm::{
    find_firecracker, vmm_overhead_mib, BootFiles, FirecrackerConfig, FirecrackerError,
    FirecrackerVm, Snapshot, MAX_VCPUS,
};
use super::warm::SnapshotCache;
use crate::agent_ops::{capped_disk, disk_space_note, sanitize, AgentSandbox, GuestVm, VmOrigin};
use crate::image::{Image, ImageChoice, ImageStore};
use crate::pool::{Lease, MemoryBudget};
use crate::sandbox::{default_pids_max, BUDGET_WAIT};
use crate::VmError;
use std::sync::Arc;
use std::time::Duration;

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
    images: ImageChoice,
    config: FirecrackerConfig,
    snapshot: Option<PathBuf>,
    warm_starts: bool,
    budget: Arc<MemoryBudget>,
    pool: Option<FirecrackerPool>,
}

impl FirecrackerProvider {
    /// Uses the newest image in `store` (or the one whose hash starts with
    /// `image`) and `config` as the base VM settings; per-job limits come
    /// from the [`JobSpec`].
    pub fn new(store: ImageStore, image: Option<String>, config: FirecrackerConfig) -> Self {
        FirecrackerProvider {
            images: ImageChoice::new(store, image),
            config,
            snapshot: None,
            warm_starts: true,
            budget: MemoryBudget::new(MemoryBudget::host_default_mib()),
            pool: None,
        }
    }

    /// Keeps `size` clones of each snapshot in use restored ahead of the
    /// jobs ([`FirecrackerPool`]), charged to this provider's memory budget
    /// (set the budget first). 0: none.
    pub fn with_pool(mut self, size: usize) -> Self {
        self.pool = (size > 0).then(|| FirecrackerPool::new(size, self.budget.clone()));
        self
    }

    /// The warm pool, if any.
    pub fn pool(&self) -> Option<&FirecrackerPool> {
        self.pool.as_ref()
    }

    /// Stops the warm pool's refills and kills its idle VMs.
    pub async fn shutdown(&self) {
        if let Some(p) = &self.pool {
            p.shutdown().await;
        }
    }

    /// Caps the memory of all VMs this provider runs at once at `mib` (guest
    /// memory plus Firecracker's own, [`vm_cost_mib`]); a job whose VM does
    /// not fit waits for running ones to end. Default: half of the host's
    /// memory.
    pub fn with_memory_budget(mut self, mib: u64) -> Self {
        self.budget = MemoryBudget::new(mib);
        self.rebind_pool()
    }

    /// A pool made before the budget was chosen charges the new one.
    fn rebind_pool(mut self) -> Self {
        if let Some(p) = self.pool.take() {
            self.pool = Some(FirecrackerPool::new(p.size(), self.budget.clone()));
        }
        self
    }

    /// Charges its VMs to `budget`, shared with other providers (the QEMU
    /// one's, so that one budget covers every microVM of a run).
    pub fn with_budget(mut self, budget: Arc<MemoryBudget>) -> Self {
        self.budget = budget;
        self.rebind_pool()
    }

    /// The memory budget its VMs count against.
    pub fn budget(&self) -> &Arc<MemoryBudget> {
        &self.budget
    }

    /// Boots every job's VM instead of restoring clones of the cached
    /// snapshot for its shape ([`SnapshotCache`]).
    pub fn without_snapshots(mut self) -> Self {
        self.warm_starts = false;
        self
    }

    /// Every job restores this snapshot directory (written by
    /// [`FirecrackerVm::snapshot`]) instead of booting or using the cache.
    pub fn with_snapshot(mut self, dir: impl Into<PathBuf>) -> Self {
        self.snapshot = Some(dir.into());
        self
    }

    fn image(&self) -> Result<Image, String> {
        self.images.image()
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
            match self.config.binary.clone().or_else(find_firecracker) {
                None => {
                    available = false;
                    notes.push(format!(
                        "firecracker binary not found (set {} or put it on PATH)",
                        super::vm::FIRECRACKER_BIN_ENV
                    ));
                }
                Some(bin) => {
                    if let Some(why) = super::vm::firecracker_binary_problem(&bin) {
                        available = false;
                        notes.push(why);
                    } else if self.config.jailer.is_some()
                        && crate::image::is_static_elf(&bin) == Some(false)
                    {
                        // The jail holds the binary and no libraries: a dynamic one cannot
                        // start there (Firecracker's jailer docs ask for a static build).
                        available = false;
                        notes.push(format!(
                            "{} is dynamically linked: the jailer runs Firecracker in a chroot without libraries, so it needs a static build (Firecracker's release binaries are; from source: `tools/devtool build --release`, or cargo with the musl target)",
                            bin.display()
                        ));
                    }
                }
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
                notes.push(
                    "KVM is PVM-only here: Firecracker needs hardware KVM (`--sandbox qemu` runs guests here under TCG)"
                        .into(),
                );
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
                cfg.vcpus = m.div_ceil(1000);
            }
            if cfg.vcpus > MAX_VCPUS {
                notes.push(format!(
                    "{} vCPUs asked for; a Firecracker VM has at most {MAX_VCPUS}",
                    cfg.vcpus
                ));
            }
            cfg.vcpus = cfg.vcpus.clamp(1, MAX_VCPUS);
            let disk = spec
                .limits
                .disk_bytes
                .or(cfg.default_disk_bytes)
                .map(|b| capped_disk(b, cfg.max_disk_bytes, &mut notes));
            if spec.network && cfg.network.is_none() {
                notes.push(
                    "network requested but no TAP device is configured: the guest has none"
                        .to_string(),
                );
            }
            let explicit = match &self.snapshot {
                Some(dir) => Some(Snapshot::open(dir).map_err(|e| unavailable(e.to_string()))?),
                None => None,
            };
            let memory_mib = explicit
                .as_ref()
                .map_or(cfg.memory_mib, |s| s.meta.memory_mib);
            let t0 = std::time::Instant::now();
            let (vm, origin) = match explicit {
                Some(snap) => {
                    if spec.limits.memory_bytes.is_some() || spec.limits.cpu_millis.is_some() {
                        notes.push(
                            "restored from a snapshot: vCPUs and memory are the snapshot's"
                                .to_string(),
                        );
                    }
                    let lease = charge(&self.budget, vm_cost_mib(memory_mib), BUDGET_WAIT).await?;
                    let mut vm = FirecrackerVm::restore(&snap, &cfg)
                        .await
                        .map_err(|e| unavailable(e.to_string()))?;
                    vm.set_lease(lease);
                    (vm, VmOrigin::Restored)
                }
                None => {
                    let image = self.image().map_err(unavailable)?;
                    self.start_vm(&image, &cfg, &mut notes).await?
                }
            };
            let pids_max = spec
                .limits
                .max_pids
                .unwrap_or_else(|| default_pids_max(vm.memory_mib()));
            notes.push(format!(
                "firecracker VM {} ({} vCPU, {} MiB, guest kernel {}) {} in {:.0} ms",
                vm.id(),
                vm.vcpus(),
                vm.memory_mib(),
                vm.agent_info().kernel_release,
                match origin {
                    VmOrigin::Restored => "restored from its snapshot",
                    VmOrigin::Pool => "taken from the warm pool, restored from its snapshot",
                    VmOrigin::Cold => "booted",
                },
                t0.elapsed().as_secs_f64() * 1e3
            ));
            if let Some(note) = disk.and_then(|b| {
                let base = std::fs::metadata(self.image().ok()?.rootfs()).ok()?.len();
                disk_space_note(vm.run_dir(), base, b)
            }) {
                notes.push(note);
            }
            let mut sb = FirecrackerSandbox::for_job(vm, Path::new(GUEST_ROOT), &ws, notes);
            sb.ready_for_job(pids_max, origin).await?;
            if let Some(bytes) = disk {
                if let Err(e) = sb.grow_root_fs(bytes).await {
                    let _ = sb.destroy().await;
                    return Err(e);
                }
            }
            if let Some(limit) = cfg.unresponsive_after {
                sb.watch_liveness(limit);
            }
            Ok(Box::new(sb) as Box<dyn Sandbox>)
        })
    }
}

impl FirecrackerProvider {
    /// A VM for one job: a clone of the cached snapshot for its shape, else
    /// a cold boot, prepared for jobs, whose snapshot it then takes for the
    /// jobs after it (unless another job is taking it right now: that job's
    /// snapshot will do, and this one does not wait for it).
    async fn start_vm(
        &self,
        image: &Image,
        cfg: &FirecrackerConfig,
        notes: &mut Vec<String>,
    ) -> Result<(FirecrackerVm, VmOrigin), SandboxError> {
        let files = BootFiles::from(image);
        let cache = SnapshotCache::for_image(image);
        let warm = self.warm_starts && cfg.network.is_none();
        let name = cache.name(&files, cfg);
        let cost = vm_cost_mib(cfg.memory_mib);
        if warm {
            if let Some(snap) = cache.find(&files, cfg) {
                if let Some(pool) = &self.pool {
                    if let Some(mut vm) = pool.take(&snap).await {
                        if let Some(limit) = cfg.job_timeout {
                            vm.arm_job_timeout(limit);
                        }
                        return Ok((vm, VmOrigin::Pool));
                    }
                }
                let lease = charge(&self.budget, cost, BUDGET_WAIT).await?;
                let restored = FirecrackerVm::restore(&snap, cfg).await;
                if let Some(pool) = &self.pool {
                    pool.keep_warm(cfg, &snap);
                }
                match restored {
                    Ok(mut vm) => {
                        vm.set_lease(lease);
                        return Ok((vm, VmOrigin::Restored));
                    }
                    // This host's trouble (disk full, a file it could not
                    // copy or stage), not the snapshot's: keep it.
                    Err(
                        e @ (FirecrackerError::Io { .. }
                        | FirecrackerError::Command { .. }
                        | FirecrackerError::NotFound),
                    ) => {
                        notes.push(format!("snapshot restore failed, booting: {e}"));
                    }
                    Err(e) => {
                        cache.discard(&snap);
                        if let Some(pool) = &self.pool {
                            pool.forget(&snap);
                        }
                        notes.push(format!(
                            "snapshot restore failed (the snapshot is discarded and taken again next time), booting: {e}"
                        ));
                    }
                }
            }
        }
        let take = warm && cache.may_take(&name);
        let files_ref = &files;
        let budget = &self.budget;
        let boot = |cfg: FirecrackerConfig| async move {
            let lease = charge(budget, cost, BUDGET_WAIT).await?;
            let mut vm = FirecrackerVm::boot(files_ref, &cfg)
                .await
                .map_err(|e| unavailable(e.to_string()))?;
            vm.set_lease(lease);
            crate::snapshot::prepare_guest(&vm.client())
                .await
                .map_err(|e| unavailable(e.to_string()))?;
            Ok::<_, SandboxError>(vm)
        };
        if !take {
            return Ok((boot(cfg.clone()).await?, VmOrigin::Cold));
        }
        let lock = crate::snapshot::build_lock(&cache.dir().join(&name));
        let taking = lock.try_lock().ok();
        // Another job of this process is taking it, or it was taken meanwhile.
        if taking.is_none() || cache.find(&files, cfg).is_some() {
            return Ok((boot(cfg.clone()).await?, VmOrigin::Cold));
        }
        let mut boot_cfg = cfg.clone();
        if cfg.jailer.is_none() {
            boot_cfg.drive_alias = Some(cache.new_drive_alias(&name));
        }
        let mut vm = boot(boot_cfg).await?;
        let t0 = std::time::Instant::now();
        match cache.take(&mut vm, &files, cfg).await {
            Ok(snap) => {
                notes.push(format!(
                    "took the VM snapshot {} ({:.1}s)",
                    snap.dir
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    t0.elapsed().as_secs_f64()
                ));
                cache.prune_stale();
                if let Some(pool) = &self.pool {
                    pool.keep_warm(cfg, &snap);
                }
                Ok((vm, VmOrigin::Cold))
            }
            Err(e) => {
                // A VM paused and resumed around a failed snapshot is not
                // trusted with the job. Not tried again by this process.
                notes.push(format!(
                    "no VM snapshot ({e}); booting another VM, and later jobs boot too"
                ));
                vm.kill().await;
                drop(vm);
                Ok((boot(cfg.clone()).await?, VmOrigin::Cold))
            }
        }
    }
}

/// What one Firecracker VM with `memory_mib` of guest memory costs against
/// a [`MemoryBudget`]: that memory and Firecracker's own
/// ([`vmm_overhead_mib`]; a guest may touch all of its memory).
pub fn vm_cost_mib(memory_mib: u64) -> u64 {
    memory_mib + vmm_overhead_mib(memory_mib)
}

/// Charges `mib` to `budget`, waiting up to `wait` for room; a VM larger
/// than the whole budget fails at once.
async fn charge(
    budget: &Arc<MemoryBudget>,
    mib: u64,
    wait: Duration,
) -> Result<Lease, SandboxError> {
    budget.acquire(mib, wait).await.map_err(|e| match e {
        VmError::TooLarge { .. } => unavailable(e.to_string()),
        e => unavailable(format!(
            "{e} (VMs of running jobs hold the rest; waited {:.0}s)",
            wait.as_secs_f64()
        )),
    })
}

/// One job's Firecracker VM: the agent-backed sandbox over a [`FirecrackerVm`].
pub type FirecrackerSandbox = AgentSandbox<FirecrackerVm>;

impl GuestVm for FirecrackerVm {
    const BACKEND: &'static str = BACKEND;

    fn discard(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(FirecrackerVm::kill(self))
    }

    fn grow_root_drive(&mut self, bytes: u64) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            FirecrackerVm::grow_root_drive(self, bytes)
                .await
                .map_err(|e| e.to_string())
        })
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

    /// The job's first requests, in one round trip: its directories, its
    /// pids limit, and for a clone (which has the snapshot's) a machine id
    /// of its own. Clock and entropy were refreshed by the restore.
    async fn ready_for_job(&mut self, pids_max: u32, origin: VmOrigin) -> Result<(), SandboxError> {
        let machine_id = async {
            if origin != VmOrigin::Cold {
                crate::agent_ops::set_machine_id(&self.client)
                    .await
                    .map_err(|e| unavailable(e.to_string()))
            } else {
                Ok(())
            }
        };
        let (layout, limit, id) =
            tokio::join!(self.make_layout(), self.set_pids_max(pids_max), machine_id);
        layout?;
        id?;
        if let Err(e) = limit {
            self.notes.push(format!("max_pids not applied: {e}"));
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn vms_are_charged_to_the_memory_budget() {
        assert_eq!(vm_cost_mib(2048), 2048 + 64 + 128);
        let budget = MemoryBudget::new(1000);
        let err = charge(&budget, 1200, Duration::ZERO)
            .await
            .expect_err("larger than the budget");
        assert!(err.to_string().contains("--vm-memory-budget"), "{err}");
        let first = charge(&budget, 600, Duration::ZERO).await.expect("fits");
        let wait = Duration::from_millis(30);
        assert!(charge(&budget, 600, wait).await.is_err(), "no room left");
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { charge(&budget, 600, Duration::from_secs(10)).await }
        });
        tokio::time::sleep(wait).await;
        drop(first);
        let second = waiting
            .await
            .expect("join")
            .expect("room after the first VM ended");
        assert_eq!(second.mib(), 600);
        drop(second);

        // Idle VMs of a pool that shares the budget make room at once.
        let idle = std::sync::Arc::new(std::sync::Mutex::new(vec![
            charge(&budget, 500, Duration::ZERO).await.expect("idle 1"),
            charge(&budget, 500, Duration::ZERO).await.expect("idle 2"),
        ]));
        let pool = idle.clone();
        budget.add_evictor(Box::new(move || crate::pool::lock(&pool).pop().is_some()));
        let third = charge(&budget, 600, Duration::ZERO)
            .await
            .expect("an idle VM was evicted");
        assert!(
            crate::pool::lock(&idle).is_empty(),
            "both went: 500 + 600 > 1000"
        );
        assert_eq!(budget.used_mib(), 600);
        drop(third);
    }
}
