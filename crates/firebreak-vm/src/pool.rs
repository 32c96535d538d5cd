//! Warm pools of restored VMs, and the memory budget every VM counts against.
//!
//! * [`MemoryBudget`] — a host-memory ceiling for all VMs the providers of a
//!   run start (QEMU and Firecracker share one). A QEMU VM costs its guest
//!   memory (`-m`) plus [`QEMU_OVERHEAD_MIB`] for the emulator (the worst
//!   case: a guest may touch all its memory); a VM that would exceed the
//!   budget is never started ([`MemoryBudget::try_acquire`] fails). The
//!   [`Lease`] lives inside the VM and is returned when the VM is dropped;
//!   idle pooled VMs can be evicted to make room ([`MemoryBudget::evict_one`]).
//! * [`Pool`] — per snapshot (image + VM shape) up to `size` VMs restored
//!   from the snapshot and ready (agent connected, clock and entropy fresh),
//!   for any backend that is a [`Spare`] ([`WarmPool`] for QEMU,
//!   [`FirecrackerPool`](crate::firecracker::FirecrackerPool)). [`Pool::take`]
//!   hands one out (its clock is set again) and wakes the background filler,
//!   which restores replacements one at a time while the budget allows. Idle
//!   guests sit in the kernel's idle loop: well under 1% of a host core each
//!   under TCG (measured by `bench/sandbox`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex as StdMutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use crate::host_ledger::HostLedger;
use crate::image::Image;
use crate::qemu::{QemuVm, VmConfig, VmError};
use crate::snapshot::Snapshot;
use firebreak_runner::sandbox::BoxFuture;

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
    closed: std::sync::atomic::AtomicBool,
    /// Set by [`Self::count_host_wide`]: what other processes charge counts too.
    ledger: std::sync::OnceLock<HostLedger>,
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
            closed: std::sync::atomic::AtomicBool::new(false),
            ledger: std::sync::OnceLock::new(),
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

    /// Makes the budget hold for every firebreak process on this host that counts in the
    /// ledger in `dir` ([`crate::host_ledger::default_dir`]): what their VMs use is charged
    /// against this budget too, and what this process's use is charged against theirs. Once
    /// per budget; a second call changes nothing.
    pub fn count_host_wide(&self, dir: &std::path::Path) -> std::io::Result<()> {
        if self.ledger.get().is_some() {
            return Ok(());
        }
        let used = lock(&self.used_mib);
        let _ = self.ledger.set(HostLedger::open(dir, *used)?);
        Ok(())
    }

    /// Charges `mib` if it fits (never once the budget is closed).
    pub fn try_acquire(self: &Arc<Self>, mib: u64) -> Result<Lease, VmError> {
        let mut used = lock(&self.used_mib);
        let over = |used: u64, elsewhere: u64| VmError::OverBudget {
            needed_mib: mib,
            used_mib: used + elsewhere,
            elsewhere_mib: elsewhere,
            limit_mib: self.limit_mib,
        };
        if self.is_closed() {
            return Err(over(*used, 0));
        }
        let fits = |elsewhere: u64| elsewhere + *used + mib <= self.limit_mib;
        // What other processes charge; recorded with this charge when it fits. Without a
        // ledger, or with one that cannot be read, this process's own use still counts.
        let elsewhere = self
            .ledger
            .get()
            .and_then(|ledger| {
                ledger
                    .transact(|elsewhere| (fits(elsewhere).then_some(*used + mib), elsewhere))
                    .ok()
            })
            .unwrap_or(0);
        if !fits(elsewhere) {
            return Err(over(*used, elsewhere));
        }
        *used += mib;
        Ok(Lease {
            budget: self.clone(),
            mib,
        })
    }

    /// Waits up to `wait` for `mib` to fit, dropping idle pooled VMs
    /// ([`Self::evict_one`]) whenever that makes room: also ones a pool
    /// restored while this waited. More than the whole budget fails at once.
    pub async fn acquire(self: &Arc<Self>, mib: u64, wait: Duration) -> Result<Lease, VmError> {
        if mib > self.limit_mib {
            return Err(VmError::TooLarge {
                needed_mib: mib,
                limit_mib: self.limit_mib,
            });
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.freed.notified();
            match self.try_acquire(mib) {
                Ok(l) => return Ok(l),
                Err(_) if !self.is_closed() && self.evict_one() => continue,
                Err(e) => {
                    let now = tokio::time::Instant::now();
                    if now >= deadline || self.is_closed() {
                        return Err(e);
                    }
                    // Woken when memory is returned; at least once a second, to
                    // evict a spare a pool restored meanwhile.
                    let slice = (now + Duration::from_secs(1)).min(deadline);
                    let _ = tokio::time::timeout_at(slice, notified).await;
                }
            }
        }
    }

    /// Stops charging anything (the run is ending): pools stop refilling, so
    /// that memory one backend returns is not taken by another's refill.
    pub fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        self.freed.notify_waiters();
    }

    fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::SeqCst)
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
            if let Some(ledger) = self.budget.ledger.get() {
                let _ = ledger.transact(|_| (Some(*used), ()));
            }
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

/// What a warm pool needs of a VM backend: how to restore a spare from a
/// snapshot, what it costs, and how to hand it to a job. [`QemuVm`] and
/// [`FirecrackerVm`](crate::firecracker::FirecrackerVm) are spares.
pub trait Spare: Send + Sized + 'static {
    /// Everything a restore needs besides the snapshot.
    type Recipe: Clone + Send + Sync + 'static;
    /// The backend's snapshot.
    type Snap: Clone + PartialEq + Send + Sync + 'static;
    /// Identifies the snapshot (its pool slot).
    fn key(snap: &Self::Snap) -> String;
    /// What one spare costs against the budget, MiB.
    fn cost_mib(recipe: &Self::Recipe, snap: &Self::Snap) -> u64;
    /// How spares are started (no job deadline yet; QEMU: at low priority).
    fn spare_recipe(recipe: &Self::Recipe) -> Self::Recipe;
    /// Restores a spare, ready for a job.
    fn restore(recipe: Self::Recipe, snap: Self::Snap) -> BoxFuture<'static, Option<Self>>;
    /// Still alive.
    fn is_running(&mut self) -> bool;
    /// Readies a spare a job takes (clock, priority); false if it does not answer.
    fn refresh(&mut self) -> BoxFuture<'_, bool>;
    /// Stops it at once.
    fn kill(&mut self) -> BoxFuture<'_, ()>;
    /// Ties its budget lease to it.
    fn set_lease(&mut self, lease: Lease);
    /// Its VMM's process id.
    fn pid(&self) -> Option<u32>;
}

impl Spare for QemuVm {
    type Recipe = (Image, VmConfig);
    type Snap = Snapshot;

    fn key(snap: &Snapshot) -> String {
        snap.meta.key.clone()
    }

    fn cost_mib((_, cfg): &Self::Recipe, _: &Snapshot) -> u64 {
        vm_cost_mib(cfg)
    }

    /// No job timeout yet, and (when it can be raised again on take) a low
    /// CPU priority, so that a refill restoring in the background never
    /// slows the jobs that are running.
    fn spare_recipe((image, cfg): &Self::Recipe) -> Self::Recipe {
        let mut c = cfg.clone();
        c.job_timeout = None;
        if nix::unistd::geteuid().is_root() {
            c.nice = Some(10);
        }
        (image.clone(), c)
    }

    fn restore((image, cfg): Self::Recipe, snap: Snapshot) -> BoxFuture<'static, Option<Self>> {
        Box::pin(async move {
            let vm = QemuVm::restore(&image, &cfg, &snap).await.ok()?;
            crate::snapshot::warm_up(&vm.client()).await.ok()?;
            Some(vm)
        })
    }

    fn is_running(&mut self) -> bool {
        QemuVm::is_running(self)
    }

    /// Proves the agent answers, and the clock kept ticking while pooled,
    /// but sets it anyway (cheap); meanwhile the VM gets its normal CPU
    /// priority back.
    fn refresh(&mut self) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            let client = self.client();
            let (fresh, ()) = tokio::join!(
                tokio::time::timeout(
                    Duration::from_secs(2),
                    client.set_clock(std::time::SystemTime::now()),
                ),
                self.raise_priority()
            );
            matches!(fresh, Ok(Ok(())))
        })
    }

    fn kill(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(QemuVm::kill(self))
    }

    fn set_lease(&mut self, lease: Lease) {
        QemuVm::set_lease(self, lease)
    }

    fn pid(&self) -> Option<u32> {
        QemuVm::pid(self)
    }
}

struct Slot<V: Spare> {
    recipe: V::Recipe,
    snapshot: V::Snap,
    ready: VecDeque<V>,
    filling: bool,
    failures: u32,
}

struct Inner<V: Spare> {
    size: usize,
    budget: Arc<MemoryBudget>,
    slots: StdMutex<HashMap<String, Slot<V>>>,
    closed: std::sync::atomic::AtomicBool,
    /// Refill tasks, awaited by `shutdown` so no VM being restored outlives it.
    fills: StdMutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// Ready-to-use restored VMs, per snapshot. Cheap to clone (shared).
pub struct Pool<V: Spare> {
    inner: Arc<Inner<V>>,
}

/// The QEMU backend's warm pool.
pub type WarmPool = Pool<QemuVm>;

impl<V: Spare> Clone for Pool<V> {
    fn clone(&self) -> Self {
        Pool {
            inner: self.inner.clone(),
        }
    }
}

impl<V: Spare> std::fmt::Debug for Pool<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("size", &self.inner.size)
            .field("ready", &self.ready_total())
            .finish()
    }
}

/// Consecutive restore failures after which a slot stops refilling.
const MAX_FAILURES: u32 = 3;

impl<V: Spare> Pool<V> {
    /// A pool keeping `size` VMs per snapshot, charging `budget`. Anything
    /// else charged to the budget may evict its idle VMs
    /// ([`MemoryBudget::evict_one`]).
    pub fn new(size: usize, budget: Arc<MemoryBudget>) -> Self {
        let inner = Arc::new(Inner {
            size,
            budget: budget.clone(),
            slots: StdMutex::new(HashMap::new()),
            closed: std::sync::atomic::AtomicBool::new(false),
            fills: StdMutex::new(Vec::new()),
        });
        let weak = Arc::downgrade(&inner);
        budget.add_evictor(Box::new(move || {
            weak.upgrade()
                .is_some_and(|inner| Pool { inner }.evict_one())
        }));
        Pool { inner }
    }

    /// VMs kept per snapshot.
    pub fn size(&self) -> usize {
        self.inner.size
    }

    /// Ready VMs for `snapshot`.
    pub fn ready(&self, snapshot: &V::Snap) -> usize {
        lock(&self.inner.slots)
            .get(&V::key(snapshot))
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
            .flat_map(|s| s.ready.iter().filter_map(V::pid))
            .collect()
    }

    /// Keeps `size` VMs of `snapshot` ready from now on (fills in the
    /// background). `recipe` is what the snapshot's VMs are restored with.
    pub fn keep_warm(&self, recipe: &V::Recipe, snapshot: &V::Snap) {
        if self.inner.size == 0 || self.inner.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let key = V::key(snapshot);
        {
            let mut slots = lock(&self.inner.slots);
            let slot = slots.entry(key.clone()).or_insert_with(|| Slot {
                recipe: V::spare_recipe(recipe),
                snapshot: snapshot.clone(),
                ready: VecDeque::new(),
                filling: false,
                failures: 0,
            });
            if slot.snapshot != *snapshot {
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
        let task = tokio::spawn(async move { pool.fill(key).await });
        let mut fills = lock(&self.inner.fills);
        fills.retain(|t| !t.is_finished());
        fills.push(task);
    }

    /// Takes a ready VM of `snapshot` (readied for its job, see
    /// [`Spare::refresh`]; the job timeout not armed yet), and starts
    /// refilling. `None` if none is ready.
    pub async fn take(&self, snapshot: &V::Snap) -> Option<V> {
        let key = V::key(snapshot);
        loop {
            let (vm, recipe, snap) = {
                let mut slots = lock(&self.inner.slots);
                let s = slots.get_mut(&key)?;
                if s.snapshot != *snapshot {
                    return None;
                }
                (s.ready.pop_front(), s.recipe.clone(), s.snapshot.clone())
            };
            self.keep_warm(&recipe, &snap);
            let mut vm = vm?;
            if !vm.is_running() {
                continue;
            }
            if vm.refresh().await {
                return Some(vm);
            }
            vm.kill().await;
        }
    }

    /// Drops the ready VMs cloned from `snapshot` (discarded as bad) and
    /// stops refilling from it until [`keep_warm`](Self::keep_warm) names
    /// the snapshot that replaces it.
    pub fn forget(&self, snapshot: &V::Snap) {
        let mut slots = lock(&self.inner.slots);
        if let Some(slot) = slots.get_mut(&V::key(snapshot)) {
            if slot.snapshot == *snapshot {
                slot.ready.clear();
                slot.failures = MAX_FAILURES;
            }
        }
    }

    /// Drops one ready VM (any slot) to free its memory; false if none.
    pub fn evict_one(&self) -> bool {
        let mut slots = lock(&self.inner.slots);
        slots.values_mut().any(|s| s.ready.pop_back().is_some())
    }

    /// Stops refilling and kills every ready VM.
    pub async fn shutdown(&self) {
        self.inner
            .closed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let vms: Vec<V> = {
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
                match self
                    .inner
                    .budget
                    .try_acquire(V::cost_mib(&slot.recipe, &slot.snapshot))
                {
                    Ok(lease) => Some((lease, slot.recipe.clone(), slot.snapshot.clone())),
                    // Never start a VM over budget: wait for memory to be
                    // returned (a job's VM destroyed), then try again.
                    Err(_) => None,
                }
            };
            let Some((lease, recipe, snap)) = job else {
                let freed = self.inner.budget.freed.notified();
                let _ = tokio::time::timeout(Duration::from_secs(1), freed).await;
                continue;
            };
            let res = V::restore(recipe, snap.clone()).await;
            if self.inner.closed.load(std::sync::atomic::Ordering::SeqCst) {
                if let Some(mut vm) = res {
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
                // A clone of a snapshot replaced meanwhile is not kept.
                Some(_) if slot.snapshot != snap => {}
                Some(mut vm) => {
                    vm.set_lease(lease);
                    slot.failures = 0;
                    slot.ready.push_back(vm);
                }
                None => slot.failures += 1,
            }
        }
    }
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

    #[test]
    fn budgets_counted_host_wide_share_one_ceiling() {
        let d = tempfile::tempdir().expect("tempdir");
        // Two runs at once, each with the whole budget of 1000 MiB.
        let a = MemoryBudget::new(1000);
        let b = MemoryBudget::new(1000);
        let held_before = a.try_acquire(300).expect("charged before joining");
        a.count_host_wide(d.path()).expect("a joins");
        b.count_host_wide(d.path()).expect("b joins");
        let la = a.try_acquire(300).expect("a: 600 of 1000");
        let err = b.try_acquire(500).expect_err("600 + 500 > 1000");
        assert!(
            matches!(
                err,
                VmError::OverBudget {
                    used_mib: 600,
                    elsewhere_mib: 600,
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string().contains("by other firebreak processes"),
            "{err}"
        );
        let lb = b.try_acquire(400).expect("600 + 400 fits");
        drop((la, held_before));
        assert!(a.try_acquire(601).is_err(), "b's 400 still count");
        let _la = a.try_acquire(600).expect("a's memory was returned");
        drop(lb);
        // A budget that left (its process ended) no longer counts.
        drop(b);
        assert!(a.try_acquire(400).is_ok());
    }

    #[tokio::test]
    async fn a_waiting_charge_evicts_a_spare_restored_meanwhile_and_close_stops_charging() {
        let b = MemoryBudget::new(100);
        let idle: Arc<StdMutex<Vec<Lease>>> = Arc::default();
        let pool = idle.clone();
        b.add_evictor(Box::new(move || lock(&pool).pop().is_some()));
        let job = b.try_acquire(100).expect("a job's VM");
        let b2 = b.clone();
        let waiter =
            tokio::spawn(async move { b2.acquire(100, Duration::from_secs(10)).await.is_ok() });
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The job ends, and a pool's refill takes the memory before the waiter runs.
        drop(job);
        lock(&idle).push(b.try_acquire(100).expect("a spare"));
        assert!(
            waiter.await.expect("join"),
            "the spare was evicted for the waiting job"
        );
        assert!(lock(&idle).is_empty());

        b.close();
        assert!(b.try_acquire(1).is_err(), "nothing is charged once closed");
        let t0 = std::time::Instant::now();
        assert!(b.acquire(1, Duration::from_secs(10)).await.is_err());
        assert!(t0.elapsed() < Duration::from_secs(5), "no waiting either");
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
