//! The warm pool for Firecracker VMs: [`crate::pool::Pool`] over
//! [`FirecrackerVm`]. Per snapshot (image and VM shape), up to `size` clones
//! restored ahead of the jobs, refilled in the background one at a time
//! while the memory budget allows.
//!
//! Each pooled VM is a clone of its own (restored with fresh entropy; the
//! job gets its own machine id and its timeout when it takes one) that
//! serves exactly one job and is destroyed after it, like any other.

use std::time::Duration;

use firebreak_runner::sandbox::BoxFuture;

use super::provider::vm_cost_mib;
use super::vm::{FirecrackerConfig, FirecrackerVm, Snapshot};
use crate::pool::{Lease, Pool, Spare};

/// Restored Firecracker VMs ready for jobs, per snapshot.
pub type FirecrackerPool = Pool<FirecrackerVm>;

impl Spare for FirecrackerVm {
    type Recipe = FirecrackerConfig;
    type Snap = Snapshot;

    fn key(snap: &Snapshot) -> String {
        snap.dir.to_string_lossy().into_owned()
    }

    fn cost_mib(_: &FirecrackerConfig, snap: &Snapshot) -> u64 {
        vm_cost_mib(snap.meta.memory_mib)
    }

    /// No job deadline until a job takes it.
    fn spare_recipe(cfg: &FirecrackerConfig) -> FirecrackerConfig {
        FirecrackerConfig {
            job_timeout: None,
            ..cfg.clone()
        }
    }

    fn restore(cfg: FirecrackerConfig, snap: Snapshot) -> BoxFuture<'static, Option<Self>> {
        Box::pin(async move { FirecrackerVm::restore(&snap, &cfg).await.ok() })
    }

    fn is_running(&mut self) -> bool {
        FirecrackerVm::is_running(self)
    }

    /// Proves the agent answers; the clock kept ticking while the VM waited,
    /// but is set anyway (cheap) when the agent owns its machine.
    fn refresh(&mut self) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            let client = self.client();
            let limit = Duration::from_secs(2);
            if self.agent_owns_machine() {
                let now = std::time::SystemTime::now();
                matches!(
                    tokio::time::timeout(limit, client.set_clock(now)).await,
                    Ok(Ok(()))
                )
            } else {
                matches!(tokio::time::timeout(limit, client.ping()).await, Ok(Ok(())))
            }
        })
    }

    fn kill(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(FirecrackerVm::kill(self))
    }

    fn set_lease(&mut self, lease: Lease) {
        FirecrackerVm::set_lease(self, lease)
    }

    fn pid(&self) -> Option<u32> {
        FirecrackerVm::pid(self)
    }
}
