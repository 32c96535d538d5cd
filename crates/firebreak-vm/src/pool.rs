//! Warm pools of restored VMs, and the memory budget every VM counts against.
//!
//! * [`MemoryBudget`] — a host-memory ceiling for all VMs a provider starts.
//!   A VM costs its guest memory (`-m`) plus [`QEMU_OVERHEAD_MIB`] for the
//!   emulator (the worst case: a guest may touch all its memory); a VM that
//!   would exceed the budget is never started ([`MemoryBudget::try_acquire`]
//!   fails). The [`Lease`] lives inside the [`QemuVm`] and is returned when
//!   the VM is dropped.
//! * [`WarmPool`] — per snapshot (image + VM shape) up to `size` VMs
//!   restored from the snapshot and ready (agent connected, clock and
//!   entropy fresh). [`WarmPool::take`] hands one out (its clock is set again)
//!   and wakes the background filler, which restores replacements one at a
//!   time while the budget allows. Idle guests sit in the kernel's idle loop:
//!   well under 1% of a host core each under TCG (measured by
//!   `bench/sandbox`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex as StdMutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use crate::image::Image;
use crate::qemu::{QemuVm, VmConfig, VmError};
use crate::snapshot::Snapshot;

/// Host memory charged per VM on top of its guest memory (QEMU itself,
/// TCG translation cache, page tables).
pub const QEMU_OVERHEAD_MIB: u64 = 64;

/// What one VM of `cfg` costs against the budget, MiB.
pub fn vm_cost_mib(cfg: &VmConfig) -> u64 {
    cfg.memory_mib.max(128) + QEMU_OVERHEAD_MIB
}

/// The guard, also after a panic elsewhere poisoned the lock (the data stays usable).
pub(crate) fn lock<T>(m: &StdMutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// A ceiling on the memory of all VMs started through it.
#[derive(Debug)]
pub struct MemoryBudget {
    limit_mib: u64,
    used_mib: StdMutex<u64>,
    freed: Notify,
    evictors: Evictors,
}

/// Ways to free memory held by idle VMs (warm pools) charged to a budget.
#[derive(Default)]
struct Evictors(StdMutex<Vec<Box<dyn Fn() -> bool + Send + Sync>>>);

impl std::fmt::Debug for Evictors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} evictor(s)", lock(&self.0).len())
    }
}

impl MemoryBudget {
    /// A budget of `limit_mib`.
    pub fn new(limit_mib: u64) -> Arc<Self> {
        Arc::new(MemoryBudget {
            limit_mib,
            used_mib: StdMutex::new(0),
            freed: Notify::new(),
            evictors: Evictors::default(),
        })
    }

    /// Drops one idle VM charged to this budget (from any warm pool that
    /// shares it) to make room; false if there was none.
    pub fn evict_one(&self) -> bool {
        lock(&self.evictors.0).iter().any(|evict| evict())
    }

    /// Registers a way to free idle VMs' memory ([`Self::evict_one`]).
    pub(crate) fn add_evictor(&self, evict: Box<dyn Fn() -> bool + Send + Sync>) {
        lock(&self.evictors.0).push(evict);
    }

    /// The default budget: half of the host's memory (`MemTotal`), or
    /// 4 GiB when that cannot be read.
    pub fn host_default_mib() -> u64 {
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
            .map(|kb| kb / 1024 / 2)
            .unwrap_or(4096)
    }

    /// The ceiling, MiB.
    pub fn limit_mib(&self) -> u64 {
        self.limit_mib
    }

    /// Charged now, MiB.
    pub fn used_mib(&self) -> u64 {
        *lock(&self.used_mib)
    }

    /// Charges `mib` if it fits.
    pub fn try_acquire(self: &Arc<Self>, mib: u64) -> Result<Lease, VmError> {
        let mut used = lock(&self.used_mib);
        if *used + mib > self.limit_mib {
            return Err(VmError::OverBudget {
                needed_mib: mib,
                used_mib: *used,
                limit_mib: self.limit_mib,
            });
        }
        *used += mib;
        Ok(Lease {
            budget: self.clone(),
            mib,
        })
    }

    /// Waits up to `wait` for `mib` to fit.
    pub async fn acquire(self: &Arc<Self>, mib: u64, wait: Duration) -> Result<Lease, VmError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.freed.notified();
            match self.try_acquire(mib) {
                Ok(l) => return Ok(l),
                Err(e) => {
                    if tokio::time::timeout_at(deadline, notified).await.is_err() {
                        return Err(e);
                    }
                }
            }
        }
    }
}

/// Memory charged to a [`MemoryBudget`]; returned on drop.
#[derive(Debug)]
pub struct Lease {
    budget: Arc<MemoryBudget>,
    mib: u64,
}

impl Lease {
    /// MiB charged.
    pub fn mib(&self) -> u64 {
        self.mib
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        {
            let mut used = lock(&self.budget.used_mib);
            *used = used.saturating_sub(self.mib);
        }
        self.budget.freed.notify_waiters();
    }
}

/// Pool settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// Ready VMs kept per snapshot (image + VM shape) once it was used.
    pub size: usize,
    /// Budget for all VMs of the provider, MiB; `None`:
    /// [`MemoryBudget::host_default_mib`].
    pub memory_budget_mib: Option<u64>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            size: 2,
            memory_budget_mib: None,
        }
    }
}

struct Slot {
    image: Image,
    cfg: VmConfig,
    snapshot: Snapshot,
    ready: VecDeque<QemuVm>,
    filling: bool,
    failures: u32,
}

struct Inner {
    size: usize,
    budget: Arc<MemoryBudget>,
    slots: StdMutex<HashMap<String, Slot>>,
    closed: std::sync::atomic::AtomicBool,
    /// Refill tasks, awaited by `shutdown` so no VM being restored outlives it.
    fills: StdMutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// Ready-to-use restored VMs, per snapshot. Cheap to clone (shared).
#[derive(Clone)]
pub struct WarmPool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for WarmPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmPool")
            .field("size", &self.inner.size)
            .field("ready", &self.ready_total())
            .finish()
    }
}

/// Consecutive restore failures after which a slot stops refilling.
const MAX_FAILURES: u32 = 3;

impl WarmPool {
    /// A pool keeping `size` VMs per snapshot, charging `budget`.
    pub fn new(size: usize, budget: Arc<MemoryBudget>) -> Self {
        let inner = Arc::new(Inner {
            size,
            budget: budget.clone(),
            slots: StdMutex::new(HashMap::new()),
            closed: std::sync::atomic::AtomicBool::new(false),
            fills: StdMutex::new(Vec::new()),
        });
        // Other VMs charged to the same budget (another backend's) may make
        // room by dropping this pool's idle ones.
        let weak = Arc::downgrade(&inner);
        budget.add_evictor(Box::new(move || {
            weak.upgrade()
                .is_some_and(|inner| WarmPool { inner }.evict_one())
        }));
        WarmPool { inner }
    }

    /// VMs kept per snapshot.
    pub fn size(&self) -> usize {
        self.inner.size
    }

    /// Ready VMs for `snapshot`.
    pub fn ready(&self, snapshot: &Snapshot) -> usize {
        lock(&self.inner.slots)
            .get(&snapshot.meta.key)
            .map_or(0, |s| s.ready.len())
    }

    /// Ready VMs in all slots.
    pub fn ready_total(&self) -> usize {
        lock(&self.inner.slots)
            .values()
            .map(|s| s.ready.len())
            .sum()
    }

    /// Process ids of the ready VMs (for measuring them).
    pub fn ready_pids(&self) -> Vec<u32> {
        lock(&self.inner.slots)
            .values()
            .flat_map(|s| s.ready.iter().filter_map(QemuVm::pid))
            .collect()
    }

    /// Keeps `size` VMs of `snapshot` ready from now on (fills in the
    /// background). `cfg` is the configuration the snapshot was taken with.
    pub fn keep_warm(&self, image: &Image, cfg: &VmConfig, snapshot: &Snapshot) {
        if self.inner.size == 0 {
            return;
        }
        {
            let mut slots = lock(&self.inner.slots);
            let slot = slots
                .entry(snapshot.meta.key.clone())
                .or_insert_with(|| Slot {
                    image: image.clone(),
                    cfg: pool_cfg(cfg),
                    snapshot: snapshot.clone(),
                    ready: VecDeque::new(),
                    filling: false,
                    failures: 0,
                });
            if slot.snapshot.meta != snapshot.meta {
                // The snapshot was taken again (the old one was discarded):
                // serve clones of the new one, and refill again.
                slot.snapshot = snapshot.clone();
                slot.ready.clear();
                slot.failures = 0;
            }
            if slot.filling {
                return;
            }
            slot.filling = true;
        }
        let pool = self.clone();
        let key = snapshot.meta.key.clone();
        let task = tokio::spawn(async move { pool.fill(key).await });
        let mut fills = lock(&self.inner.fills);
        fills.retain(|t| !t.is_finished());
        fills.push(task);
    }

    /// Takes a ready VM of `snapshot` (its clock set again; the job timeout
    /// not armed yet), and starts refilling. `None` if none is ready.
    pub async fn take(&self, snapshot: &Snapshot) -> Option<QemuVm> {
        loop {
            let vm = {
                let mut slots = lock(&self.inner.slots);
                slots.get_mut(&snapshot.meta.key)?.ready.pop_front()
            };
            let (image, cfg, snap) = {
                let slots = lock(&self.inner.slots);
                let s = slots.get(&snapshot.meta.key)?;
                (s.image.clone(), s.cfg.clone(), s.snapshot.clone())
            };
            self.keep_warm(&image, &cfg, &snap);
            let mut vm = vm?;
            if !vm.is_running() {
                continue;
            }
            // Proves the agent answers, and the clock kept ticking while
            // pooled, but set it anyway (cheap); meanwhile the VM gets its
            // normal CPU priority back.
            let client = vm.client();
            let (fresh, ()) = tokio::join!(
                tokio::time::timeout(
                    Duration::from_secs(2),
                    client.set_clock(std::time::SystemTime::now()),
                ),
                vm.raise_priority()
            );
            if matches!(fresh, Ok(Ok(()))) {
                return Some(vm);
            }
            vm.kill().await;
        }
    }

    /// Drops the ready VMs cloned from `snapshot` (discarded as bad) and
    /// stops refilling from it until [`keep_warm`](Self::keep_warm) names
    /// the snapshot that replaces it.
    pub fn forget(&self, snapshot: &Snapshot) {
        let mut slots = lock(&self.inner.slots);
        if let Some(slot) = slots.get_mut(&snapshot.meta.key) {
            if slot.snapshot.meta == snapshot.meta {
                slot.ready.clear();
                slot.failures = MAX_FAILURES;
            }
        }
    }

    /// Drops one ready VM (any slot) to free its memory; false if none.
    pub fn evict_one(&self) -> bool {
        let mut slots = lock(&self.inner.slots);
        for s in slots.values_mut() {
            if s.ready.pop_back().is_some() {
                return true;
            }
        }
        false
    }

    /// Stops refilling and kills every ready VM.
    pub async fn shutdown(&self) {
        self.inner
            .closed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let vms: Vec<QemuVm> = {
            let mut slots = lock(&self.inner.slots);
            slots.values_mut().flat_map(|s| s.ready.drain(..)).collect()
        };
        for mut vm in vms {
            vm.kill().await;
        }
        // A refill in the middle of a restore finishes it, sees `closed` and
        // kills that VM.
        let fills: Vec<_> = lock(&self.inner.fills).drain(..).collect();
        for t in fills {
            let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
        }
    }

    async fn fill(&self, key: String) {
        loop {
            let closed = self.inner.closed.load(std::sync::atomic::Ordering::SeqCst);
            let job = {
                let mut slots = lock(&self.inner.slots);
                let Some(slot) = slots.get_mut(&key) else {
                    return;
                };
                if closed || slot.ready.len() >= self.inner.size || slot.failures >= MAX_FAILURES {
                    slot.filling = false;
                    return;
                }
                match self.inner.budget.try_acquire(vm_cost_mib(&slot.cfg)) {
                    Ok(lease) => Some((
                        lease,
                        slot.image.clone(),
                        slot.cfg.clone(),
                        slot.snapshot.clone(),
                    )),
                    // Never start a VM over budget: wait for memory to be
                    // returned (a job's VM destroyed), then try again.
                    Err(_) => None,
                }
            };
            let Some((lease, image, cfg, snap)) = job else {
                let freed = self.inner.budget.freed.notified();
                let _ = tokio::time::timeout(Duration::from_secs(1), freed).await;
                continue;
            };
            let res = match QemuVm::restore(&image, &cfg, &snap).await {
                Ok(vm) => match crate::snapshot::warm_up(&vm.client()).await {
                    Ok(()) => Ok(vm),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            if self.inner.closed.load(std::sync::atomic::Ordering::SeqCst) {
                if let Ok(mut vm) = res {
                    vm.kill().await;
                }
                if let Some(slot) = lock(&self.inner.slots).get_mut(&key) {
                    slot.filling = false;
                }
                return;
            }
            let mut slots = lock(&self.inner.slots);
            let Some(slot) = slots.get_mut(&key) else {
                return;
            };
            match res {
                Ok(mut vm) => {
                    vm.set_lease(lease);
                    slot.failures = 0;
                    slot.ready.push_back(vm);
                }
                Err(_) => slot.failures += 1,
            }
        }
    }
}

/// Pool VMs wait with no job deadline (it is armed when taken).
/// How spare VMs are started: no job timeout yet, and (when we may raise
/// it again on take) at a low CPU priority, so a refill restoring in the
/// background never slows the jobs that are running.
fn pool_cfg(cfg: &VmConfig) -> VmConfig {
    let mut c = cfg.clone();
    c.job_timeout = None;
    if nix::unistd::geteuid().is_root() {
        c.nice = Some(10);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_refuses_what_does_not_fit_and_leases_return() {
        let b = MemoryBudget::new(1000);
        let cfg = VmConfig {
            memory_mib: 256,
            ..VmConfig::default()
        };
        let cost = vm_cost_mib(&cfg);
        assert_eq!(cost, 320);
        let l1 = b.try_acquire(cost).expect("1");
        let l2 = b.try_acquire(cost).expect("2");
        let _l3 = b.try_acquire(cost).expect("3");
        assert_eq!(b.used_mib(), 960);
        let err = b.try_acquire(cost).expect_err("over budget");
        assert!(
            matches!(err, VmError::OverBudget { used_mib: 960, .. }),
            "{err}"
        );
        drop(l1);
        assert_eq!(b.used_mib(), 640);
        assert_eq!(l2.mib(), 320);
        assert!(b.try_acquire(cost).is_ok());
        assert!(MemoryBudget::host_default_mib() > 0);
    }

    #[tokio::test]
    async fn acquire_waits_for_a_release() {
        let b = MemoryBudget::new(100);
        let l = b.try_acquire(100).expect("first");
        let b2 = b.clone();
        let t = tokio::spawn(async move { b2.acquire(60, Duration::from_secs(5)).await.is_ok() });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(l);
        assert!(t.await.expect("join"));
        let err = b.acquire(200, Duration::from_millis(30)).await;
        assert!(err.is_err());
    }
}
