//! The QEMU backend behind the runner's `Sandbox` seam.
//!
//! [`QemuProvider::create`] gives each job its own VM from a cached image;
//! the job tree lives in the guest at [`GUEST_ROOT`] (so `GITHUB_WORKSPACE`
//! is `/home/runner/work/<repo>/<repo>` as on GitHub's hosted runners). Every
//! operation goes through the guest agent; `destroy` powers the VM off (or
//! kills it) and with it everything the job started. A VM serves exactly
//! one job.
//!
//! Where the VM comes from ([`VmConfig::start`], default
//! [`Start::Snapshot`]): a ready VM from the warm pool if one is ready
//! ([`QemuProvider::with_pool`]), else a clone restored from the snapshot
//! for this image and VM shape (taken on first use, see
//! [`crate::snapshot`]), else a cold boot. Every VM counts against the
//! provider's [`MemoryBudget`].
//!
//! Limits inside the guest: the VM's memory (`-m`), of which the job's
//! processes together get what the guest has available once booted, less
//! [`snapshot::AGENT_RESERVE_MIB`] (the job
//! cgroup's `memory.max`: its OOM killer kills the job's biggest process,
//! never the agent, and so does the agent's guard when the job stays stalled
//! on memory, see `firebreak_agent::thrash`); a pids limit for all the job's processes together
//! (`max_pids`, default [`default_pids_max`]) on the same cgroup, which
//! holds the agent's per-command cgroups ([`snapshot::JOB_CGROUP`]), whose
//! lowest CPU weight keeps the agent answering however busy the job is. A
//! cancelled command (the job's timeout, Ctrl-C) that has not stopped
//! [`crate::agent_ops::CANCEL_GRACE`] later gets its whole VM killed, and so
//! does a VM whose agent stops answering pings (`unresponsive_after`);
//! [`VmConfig::job_timeout`] bounds a VM's life outright where the caller
//! knows it.

use std::sync::Arc;
use std::time::Duration;

use firebreak_runner::sandbox::{
    BoxFuture, JobLayout, JobSpec, Probe, Sandbox, SandboxError, SandboxProvider,
};

pub use crate::agent_ops::VmOrigin;
use crate::agent_ops::{capped_disk, disk_space_note, sanitize, AgentSandbox, GuestVm};
use crate::image::{Image, ImageChoice, ImageStore};
use crate::pool::{vm_cost_mib, MemoryBudget, PoolConfig, WarmPool};
use crate::qemu::{probe_kvm, QemuVm, Start, VmConfig, VmError};
use crate::snapshot::{self, Snapshot};
use crate::standby::Standby;
use crate::tools;

/// Root of the job tree inside the guest.
pub const GUEST_ROOT: &str = "/home/runner";

/// How long `create` waits for memory budget held by running jobs.
pub(crate) const BUDGET_WAIT: Duration = Duration::from_secs(120);

/// The guest pids limit per command when the job sets none: 4 per MiB of
/// guest memory, at least 256 (2048 MiB → 8192).
pub fn default_pids_max(memory_mib: u64) -> u32 {
    u32::try_from(memory_mib.saturating_mul(4).max(256)).unwrap_or(u32::MAX)
}

/// Creates QEMU sandboxes.
#[derive(Debug, Clone)]
pub struct QemuProvider {
    images: ImageChoice,
    config: VmConfig,
    budget: Arc<MemoryBudget>,
    pool: Option<WarmPool>,
    /// The QEMU process waiting for the next restore (see
    /// [`VmConfig::standby`]).
    standby: Arc<Standby>,
    /// Fault injection for tests (see [`Self::pause_restored_vms`]).
    pause_restored: bool,
}

impl QemuProvider {
    /// Uses the newest image in `store` (or the one whose hash starts with
    /// `image`) and `config` as the base VM settings; per-job network and
    /// limits come from the [`JobSpec`]. No warm pool; memory budget
    /// [`MemoryBudget::host_default_mib`].
    pub fn new(store: ImageStore, image: Option<String>, config: VmConfig) -> Self {
        QemuProvider {
            images: ImageChoice::new(store, image),
            config,
            budget: MemoryBudget::new(MemoryBudget::host_default_mib()),
            pool: None,
            standby: Arc::default(),
            pause_restored: false,
        }
    }

    /// Fault injection, for tests: every VM restored from a snapshot is
    /// paused (QMP `stop`) right after its agent's hello, like a clone whose
    /// agent stops answering. `create` must then still give the job a
    /// working (cold-booted) VM.
    #[doc(hidden)]
    pub fn pause_restored_vms(mut self) -> Self {
        self.pause_restored = true;
        self
    }

    /// Keeps `pool.size` restored VMs ready per VM shape used (see
    /// [`WarmPool`]); sets the memory budget when `pool.memory_budget_mib`
    /// is given. Call [`prewarm`](Self::prewarm) to fill before the first
    /// job.
    pub fn with_pool(mut self, pool: PoolConfig) -> Self {
        if let Some(mib) = pool.memory_budget_mib {
            self.budget = MemoryBudget::new(mib);
        }
        self.pool = (pool.size > 0).then(|| WarmPool::new(pool.size, self.budget.clone()));
        self
    }

    /// The memory budget shared by all VMs of this provider.
    pub fn budget(&self) -> &Arc<MemoryBudget> {
        &self.budget
    }

    /// The warm pool, if any.
    pub fn pool(&self) -> Option<&WarmPool> {
        self.pool.as_ref()
    }

    /// What `create` says about a job's VM size when it differs from what the job asked.
    fn size_notes(&self, spec: &JobSpec) -> Vec<String> {
        let mut notes: Vec<String> = spec
            .limits
            .memory_bytes
            .filter(|b| (b >> 20) < MIN_MEMORY_MIB)
            .map(|b| {
                format!(
                    "{} MiB of memory asked for; a VM gets at least {MIN_MEMORY_MIB} MiB",
                    b >> 20
                )
            })
            .into_iter()
            .collect();
        let asked = self.asked_vcpus(spec);
        let cores = host_cpus();
        if asked > cores {
            notes.push(format!(
                "{asked} vCPUs asked for; this host has {cores} CPU(s), so the VM gets {cores}"
            ));
        }
        notes
    }

    /// The vCPUs a job asks for: its `runs-on` size, else the configured count.
    fn asked_vcpus(&self, spec: &JobSpec) -> u32 {
        spec.limits
            .cpu_millis
            .map_or(self.config.vcpus, |m| m.div_ceil(1000))
            .max(1)
    }

    /// The VM configuration a job with `spec` gets. Never more vCPUs than the host has
    /// CPUs: more would only slow the guest (and, emulated, its boot) down.
    pub fn config_for(&self, spec: &JobSpec) -> VmConfig {
        let mut cfg = self.config.clone();
        cfg.network = spec.network;
        if let Some(bytes) = spec.limits.memory_bytes {
            cfg.memory_mib = (bytes >> 20).max(MIN_MEMORY_MIB);
        }
        cfg.vcpus = self.asked_vcpus(spec).min(host_cpus());
        cfg
    }

    /// Makes sure the snapshot for jobs like `spec` exists (taking it if
    /// needed: a cold boot plus a few seconds) and, with a pool, starts
    /// filling the pool for them; without one, starts the QEMU process
    /// the first restore will use ([`VmConfig::standby`]). Returns the
    /// snapshot.
    pub async fn prewarm(&self, spec: &JobSpec) -> Result<Snapshot, SandboxError> {
        let image = self.image().map_err(unavailable)?;
        let cfg = self.config_for(spec);
        if cfg.start == Start::Cold {
            return Err(unavailable(
                "this provider boots every VM (Start::Cold): there is no snapshot to prepare",
            ));
        }
        let _building = self.snapshot_lease(&image, &cfg).await?;
        let (snap, _) = snapshot::ensure(&image, &cfg)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        drop(_building);
        if let Some(p) = &self.pool {
            p.keep_warm(&(image.clone(), cfg.clone()), &snap);
        } else {
            self.standby.replenish(&image, &cfg, &snap);
        }
        Ok(snap)
    }

    /// Stops the pool (kills its ready VMs) and the QEMU process waiting
    /// for the next restore.
    pub async fn shutdown(&self) {
        self.standby.shutdown();
        if let Some(p) = &self.pool {
            p.shutdown().await;
        }
    }

    /// Whether a QEMU process is waiting for the next restore (see
    /// [`VmConfig::standby`]).
    pub fn standby_ready(&self) -> bool {
        self.standby.ready()
    }

    /// Charges one VM of `cfg` to the budget, evicting idle pooled VMs (of any
    /// backend sharing the budget) and then waiting for running jobs when it
    /// does not fit.
    async fn lease_for(&self, cfg: &VmConfig) -> Result<crate::pool::Lease, SandboxError> {
        self.budget
            .acquire(vm_cost_mib(cfg), BUDGET_WAIT)
            .await
            .map_err(|e| unavailable(e.to_string()))
    }

    /// The budget's charge for the VM that takes `cfg`'s snapshot, when it is yet to be
    /// taken (none when it exists): a VM larger than the whole budget fails here, before
    /// anything boots.
    async fn snapshot_lease(
        &self,
        image: &Image,
        cfg: &VmConfig,
    ) -> Result<Option<crate::pool::Lease>, SandboxError> {
        match snapshot::existing(image, cfg).await {
            Ok(Some(_)) => Ok(None),
            _ => self.lease_for(cfg).await.map(Some),
        }
    }

    /// A VM for one job, how it was obtained (notes for the job log), and how long of that
    /// was waiting for another job's snapshot.
    async fn start_vm(
        &self,
        image: &Image,
        cfg: &VmConfig,
        notes: &mut Vec<String>,
    ) -> Result<(QemuVm, VmOrigin, Duration), SandboxError> {
        if cfg.start == Start::Snapshot {
            // Taking the snapshot boots a VM of this size: charge it to the budget like any
            // other (a VM larger than the whole budget fails here, before anything boots),
            // and let the VM restored from it keep the charge.
            let mut build_lease = self.snapshot_lease(image, cfg).await?;
            let t0 = std::time::Instant::now();
            match snapshot::ensure(image, cfg).await {
                Ok((snap, built)) => {
                    // Another job of this size was taking it: the time this job's start
                    // spent waiting is that, not the restore's.
                    let waited = if built { Duration::ZERO } else { t0.elapsed() };
                    if waited > Duration::from_millis(200) {
                        notes.push(format!(
                            "waited {:.1}s for the VM snapshot another job was taking",
                            waited.as_secs_f64()
                        ));
                    }
                    if built {
                        // On disk: the guest's RAM file (sparse: what the guest used) and
                        // disk, besides the small device-state stream.
                        notes.push(format!(
                            "took the VM snapshot {} ({:.1}s, {} MiB on disk)",
                            snap.meta.key,
                            snap.meta.build_seconds,
                            crate::image::du_bytes(&snap.dir) >> 20
                        ));
                    }
                    if let Some(pool) = &self.pool {
                        if let Some(mut vm) = pool.take(&snap).await {
                            if let Some(t) = cfg.job_timeout {
                                vm.arm_job_timeout(t);
                            }
                            return Ok((vm, VmOrigin::Pool, waited));
                        }
                    }
                    let lease = match build_lease.take() {
                        Some(l) => l,
                        None => self.lease_for(cfg).await?,
                    };
                    // Clock and entropy are refreshed by `create`, together
                    // with the job's first requests.
                    let res = match self.standby.take(&snap, cfg) {
                        Some(spare) => spare.load(cfg).await,
                        None => QemuVm::restore_unrefreshed(image, cfg, &snap).await,
                    };
                    if let Some(pool) = &self.pool {
                        pool.keep_warm(&(image.clone(), cfg.clone()), &snap);
                    }
                    match res {
                        Ok(mut vm) => {
                            vm.set_lease(lease);
                            return Ok((vm, VmOrigin::Restored, waited));
                        }
                        Err(e) => {
                            snapshot::discard(&snap);
                            notes.push(format!(
                                "snapshot restore failed (the snapshot is discarded and taken again next time), booting: {e}"
                            ));
                        }
                    }
                }
                // An agent that speaks another protocol fails any boot the same way.
                Err(e @ VmError::AgentVersion { .. }) => return Err(unavailable(e.to_string())),
                Err(e) => notes.push(format!("no VM snapshot ({e}); booting")),
            }
            if let Some(lease) = build_lease {
                let (vm, origin) = self.boot_cold(image, cfg, lease).await?;
                return Ok((vm, origin, Duration::ZERO));
            }
        }
        let lease = self.lease_for(cfg).await?;
        let (vm, origin) = self.boot_cold(image, cfg, lease).await?;
        Ok((vm, origin, Duration::ZERO))
    }

    /// Boots a VM for one job, charged to `lease`.
    async fn boot_cold(
        &self,
        image: &Image,
        cfg: &VmConfig,
        lease: crate::pool::Lease,
    ) -> Result<(QemuVm, VmOrigin), SandboxError> {
        let mut vm = QemuVm::boot(image, cfg)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        vm.set_lease(lease);
        snapshot::prepare_guest(&vm.client())
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        Ok((vm, VmOrigin::Cold))
    }

    fn image(&self) -> Result<Image, String> {
        self.images.image()
    }
}

/// The CPUs this process may run on.
fn host_cpus() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX))
}

/// The least guest memory a VM gets, whatever a job's label asks (Debian's kernel and the
/// agent need about this much to run a job's tools).
pub const MIN_MEMORY_MIB: u64 = 128;

fn unavailable(reason: impl Into<String>) -> SandboxError {
    SandboxError::Unavailable {
        backend: "qemu",
        reason: reason.into(),
    }
}

/// Bytes as GiB, for notes.
/// Kills a sandbox's VM without asking its agent (which stopped answering).
async fn kill_vm(sb: &VmSandbox) {
    if let Some(mut vm) = sb.take_vm().await {
        vm.kill().await;
    }
}

/// The job-log note saying how the VM was obtained.
fn describe_start(vm: &QemuVm, cfg: &VmConfig, origin: VmOrigin, took: Duration) -> String {
    let stats = vm.boot_stats();
    let how = match origin {
        VmOrigin::Pool => "taken from the warm pool".to_string(),
        VmOrigin::Restored if stats.standby => {
            "restored from its snapshot into a QEMU started ahead".to_string()
        }
        VmOrigin::Restored => "restored from its snapshot".to_string(),
        VmOrigin::Cold => format!("booted ({} attempt(s))", stats.attempts),
    };
    // Whether the job may reach the network, and how to change it: a job that cannot
    // resolve a host name should not have to guess why.
    let net = if cfg.network {
        "with network"
    } else {
        "no network: opt in with FIREBREAK_NETWORK: true in the workflow's or job's env, the \
         `network` runs-on label or `network: true` in .github/firebreak.yml"
    };
    format!(
        "qemu VM ({}{}, {} vCPU, {} MiB, guest kernel {}; {net}) {how} in {:.2}s",
        if stats.kvm { "KVM" } else { "TCG" },
        match cfg.machine {
            crate::Machine::Microvm => "",
            crate::Machine::Q35 => ", q35",
        },
        cfg.vcpus,
        cfg.memory_mib,
        vm.agent_info().kernel_release,
        took.as_secs_f64(),
    )
}

impl SandboxProvider for QemuProvider {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn probe(&self) -> BoxFuture<'_, Probe> {
        Box::pin(async move {
            let mut notes = Vec::new();
            let mut available = true;
            for t in tools::QEMU_TOOLS {
                if tools::find(t.name).is_none() {
                    available = false;
                    notes.push(format!(
                        "{} missing (apt-get install {})",
                        t.name, t.package
                    ));
                }
            }
            match self.image() {
                Ok(img) => {
                    if available {
                        let p = probe_kvm(&img.kernel()).await;
                        if !p.usable {
                            notes.push(format!(
                                "KVM not usable ({}): guests run under TCG, boots take seconds",
                                p.detail
                            ));
                        }
                    }
                }
                Err(e) => {
                    available = false;
                    notes.push(e);
                }
            }
            Probe {
                backend: "qemu",
                available,
                notes,
            }
        })
    }

    fn create(&self, spec: JobSpec) -> BoxFuture<'_, Result<Box<dyn Sandbox>, SandboxError>> {
        Box::pin(async move {
            let ws = sanitize(&spec.workspace_name)?;
            sanitize(&spec.job_id)?;
            let image = self.image().map_err(unavailable)?;
            let mut cfg = self.config_for(&spec);
            let pids_max = spec
                .limits
                .max_pids
                .unwrap_or_else(|| default_pids_max(cfg.memory_mib));
            let mut notes = self.size_notes(&spec);
            let mut failed_clones = 0;
            // Growing the root filesystem is part of getting the VM ready.
            let disk = spec
                .limits
                .disk_bytes
                .or(cfg.default_disk_bytes)
                .map(|b| capped_disk(b, cfg.max_disk_bytes, &mut notes));
            // resize2fs's time grows with the size (under TCG, ~1.5 s to 20 GiB).
            let grow_allowance = Duration::from_secs(disk.map_or(0, |b| 10 + (b >> 30)));
            loop {
                let t0 = std::time::Instant::now();
                let started = self.start_vm(&image, &cfg, &mut notes).await;
                let (vm, origin, waited) = match started {
                    Ok(v) => v,
                    // Keep what happened to the clones tried before in the error.
                    Err(e) if failed_clones > 0 => {
                        return Err(unavailable(format!("{e} (before: {})", notes.join("; "))))
                    }
                    Err(e) => return Err(e),
                };
                let snap = vm.snapshot().cloned();
                if self.pause_restored && origin != VmOrigin::Cold {
                    if let Ok(mut qmp) =
                        crate::qmp::Qmp::connect(&vm.qmp_socket(), Duration::from_secs(5)).await
                    {
                        let _ = qmp.execute("stop", None).await;
                    }
                }
                let how = describe_start(&vm, &cfg, origin, t0.elapsed().saturating_sub(waited));
                notes.push(how);
                let base = std::fs::metadata(image.rootfs()).map_or(0, |m| m.len());
                if let Some(note) = disk.and_then(|b| disk_space_note(vm.run_dir(), base, b)) {
                    notes.push(note);
                }
                if cfg.network
                    && crate::qemu::UserNet::on_this_host() == crate::qemu::UserNet::Slirp
                {
                    notes.push(format!(
                        "network through QEMU's slirp: this job can reach services on the host's loopback at 10.0.2.2 ({})",
                        crate::qemu::UserNet::slirp_remedy()
                    ));
                }
                let layout = JobLayout::new(GUEST_ROOT, &ws);
                let mut sb = VmSandbox::new(vm.client(), vm, layout, notes, origin);
                // A cold-booted VM is the last resort: give it longer.
                let limit = if origin == VmOrigin::Cold {
                    cfg.first_requests_timeout * 4
                } else {
                    cfg.first_requests_timeout
                } + grow_allowance;
                let prepare = async {
                    sb.ready_for_job(pids_max, origin).await?;
                    if let Some(bytes) = disk {
                        sb.grow_root_fs(bytes).await?;
                    }
                    Ok::<(), SandboxError>(())
                };
                match tokio::time::timeout(limit, prepare).await {
                    Ok(Ok(())) => {
                        if let Some(limit) = cfg.unresponsive_after {
                            sb.watch_liveness(limit);
                        }
                        // The next restore's QEMU, started once this job is
                        // past its first steps; not beside a warm pool, which
                        // is refilling with whole VMs (the next jobs' already).
                        if let (Some(snap), VmOrigin::Restored, None) = (&snap, origin, &self.pool)
                        {
                            self.standby.replenish(&image, &cfg, snap);
                        }
                        return Ok(Box::new(sb) as Box<dyn Sandbox>);
                    }
                    // A request the guest answered with an error is no sign
                    // of a bad clone: the job fails with it.
                    Ok(Err(e)) => {
                        kill_vm(&sb).await;
                        return Err(e);
                    }
                    Err(_) if origin == VmOrigin::Cold => {
                        kill_vm(&sb).await;
                        return Err(unavailable(format!(
                            "the booted VM's agent did not answer its first requests within {:.0}s (before: {})",
                            limit.as_secs_f64(),
                            sb.notes.join("; ")
                        )));
                    }
                    Err(_) => {
                        // A restored clone (or pooled VM) whose agent answered
                        // its hello but not the job's first requests: never
                        // hang the job on it. Seen with snapshots taken while
                        // the agent was reconnecting (SNAPSHOT_FORMAT < 7),
                        // other clones of the same snapshot being fine: try
                        // one more clone; if that one fails too, the snapshot
                        // is suspect: discard it (taken again next time) and
                        // boot this job's VM cold.
                        let why = format!(
                            "no answer to its first requests within {:.0}s",
                            limit.as_secs_f64()
                        );
                        kill_vm(&sb).await;
                        notes = std::mem::take(&mut sb.notes);
                        failed_clones += 1;
                        if failed_clones < 2 {
                            notes.push(format!("that VM was unusable ({why}); trying another"));
                        } else {
                            if let Some(snap) = &snap {
                                snapshot::discard(snap);
                                if let Some(pool) = &self.pool {
                                    pool.forget(snap);
                                }
                            }
                            notes.push(format!(
                                "that VM was unusable too ({why}; its snapshot is discarded and taken again next time), booting one"
                            ));
                            cfg.start = Start::Cold;
                        }
                    }
                }
            }
        })
    }
}

/// One job's QEMU VM: the agent-backed sandbox over a [`QemuVm`].
pub type VmSandbox = AgentSandbox<QemuVm>;

impl GuestVm for QemuVm {
    const BACKEND: &'static str = "qemu";

    fn discard(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(QemuVm::kill(self))
    }

    /// QMP `block_resize`: the clone's overlay only stores what the guest writes.
    fn grow_root_drive(&mut self, bytes: u64) -> BoxFuture<'_, Result<(), String>> {
        let socket = self.qmp_socket();
        Box::pin(async move {
            let mut qmp = crate::qmp::Qmp::connect(&socket, Duration::from_secs(5))
                .await
                .map_err(|e| e.to_string())?;
            qmp.execute(
                "block_resize",
                Some(serde_json::json!({ "device": "root", "size": bytes })),
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
        })
    }
}

impl AgentSandbox<QemuVm> {
    /// Wraps an already booted VM (tests, custom boots).
    pub async fn from_vm(vm: QemuVm, workspace_name: &str) -> Result<Self, SandboxError> {
        let layout = JobLayout::new(GUEST_ROOT, &sanitize(workspace_name)?);
        let sb = Self::new(vm.client(), vm, layout, Vec::new(), VmOrigin::Cold);
        sb.make_layout().await?;
        Ok(sb)
    }

    /// Creates the job tree in one agent round trip ([`AgentSandbox::make_dirs`]).
    /// With `prepared`, only the workspace is made: the rest was made by
    /// [`snapshot::prepare_guest`].
    async fn make_layout_with(&self, prepared: bool) -> Result<(), SandboxError> {
        let l = &self.layout;
        if prepared {
            self.make_dirs(&[&l.workspace]).await
        } else {
            self.make_dirs(&[&l.workspace, &l.file_commands, &l.tool_cache, &l.home])
                .await
        }
    }

    /// The job's first requests, in one round trip: its workspace, its
    /// pids limit and, for a freshly restored guest (which still has the
    /// snapshot's clock and entropy), a clock and entropy refresh. No job
    /// command runs before this returns.
    async fn ready_for_job(&mut self, pids_max: u32, origin: VmOrigin) -> Result<(), SandboxError> {
        let t0 = std::time::Instant::now();
        let refresh = async {
            if origin == VmOrigin::Restored {
                crate::qemu::refresh_guest(&self.client).await
            } else {
                Ok(())
            }
        };
        let (layout, limit, refreshed) = tokio::join!(
            self.make_layout_with(true),
            self.set_pids_max(pids_max),
            refresh
        );
        if std::env::var_os("FIREBREAK_TRACE_RESTORE").is_some() {
            eprintln!("create: layout+limit+refresh {:?}", t0.elapsed());
        }
        refreshed.map_err(|e| unavailable(e.to_string()))?;
        layout?;
        if let Err(e) = limit {
            self.notes.push(format!("max_pids not applied: {e}"));
        }
        Ok(())
    }

    async fn make_layout(&self) -> Result<(), SandboxError> {
        self.make_layout_with(false).await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_disk_larger_than_the_hosts_free_space_is_noted() {
        let d = tempfile::tempdir().expect("tempdir");
        assert_eq!(super::disk_space_note(d.path(), 0, 1 << 20), None);
        let note = super::disk_space_note(d.path(), 0, u64::MAX / 2).expect("a note");
        assert!(note.contains("but the host has only"), "{note}");
    }

    #[test]
    fn a_vm_never_gets_more_vcpus_than_the_host_has_cpus_and_the_job_hears_why() {
        let d = tempfile::tempdir().expect("tempdir");
        let q = super::QemuProvider::new(
            crate::ImageStore::new(d.path()),
            None,
            crate::VmConfig::default(),
        );
        let cores = super::host_cpus();
        let mut spec = firebreak_runner::sandbox::JobSpec::new("j", "w");
        spec.limits.cpu_millis = Some(1000);
        assert_eq!(q.config_for(&spec).vcpus, 1);
        assert!(q.size_notes(&spec).is_empty());
        spec.limits.cpu_millis = Some((cores + 1) * 1000);
        assert_eq!(q.config_for(&spec).vcpus, cores);
        let notes = q.size_notes(&spec);
        assert_eq!(
            notes,
            [format!(
                "{} vCPUs asked for; this host has {cores} CPU(s), so the VM gets {cores}",
                cores + 1
            )]
        );
    }
}
