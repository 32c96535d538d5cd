//! The spare QEMU process a provider keeps waiting for its next restore
//! (see [`VmConfig::standby`]).
//!
//! A restore is QEMU's start and machine setup (~0.1 s under TCG here),
//! then loading the snapshot's device state and the guest resuming. The
//! first part needs nothing from the job, so after each job's VM is ready
//! the provider starts the next one's QEMU and loads the snapshot's
//! device state into it, paused ([`Standby::replenish`]); the next
//! restore takes it ([`Standby::take`]) and only resumes it. At most one
//! spare exists; it maps the snapshot's RAM file but touches almost none
//! of it while paused, so it is not charged to the memory budget until a
//! job takes it (the job's lease covers it from then on).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use crate::image::Image;
use crate::pool::lock;
use crate::qemu::{Incoming, Start, VmConfig};
use crate::snapshot::Snapshot;

/// How long after a job's VM is ready its successor's QEMU is started.
const REPLENISH_DELAY: Duration = Duration::from_secs(1);

/// One spare QEMU process (or none).
#[derive(Default)]
pub(crate) struct Standby {
    slot: StdMutex<Slot>,
    /// A spare is being started.
    starting: AtomicBool,
}

#[derive(Default)]
struct Slot {
    spare: Option<Incoming>,
    /// After [`Standby::shutdown`]: no more spares.
    closed: bool,
}

impl std::fmt::Debug for Standby {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let slot = lock(&self.slot);
        f.debug_struct("Standby")
            .field("spare", &slot.spare.is_some())
            .field("closed", &slot.closed)
            .finish()
    }
}

impl Standby {
    /// The spare, if it restores `snap` for `cfg` and its QEMU is alive.
    pub(crate) fn take(&self, snap: &Snapshot, cfg: &VmConfig) -> Option<Incoming> {
        let mut slot = lock(&self.slot);
        if !slot.spare.as_ref().is_some_and(|s| s.serves(snap, cfg)) {
            return None;
        }
        let mut spare = slot.spare.take()?;
        // A dead one is dropped here (its run directory with it).
        spare.alive().then_some(spare)
    }

    /// Starts a spare for `snap` in the background unless `cfg` does not
    /// want one ([`VmConfig::standby`], restores only) or one is alive or
    /// starting; it replaces a spare for another snapshot or shape.
    pub(crate) fn replenish(self: &Arc<Self>, image: &Image, cfg: &VmConfig, snap: &Snapshot) {
        // Only snapshots whose RAM is a file load ahead without holding the
        // guest's memory.
        if !cfg.standby || cfg.start != Start::Snapshot || snap.ram_file().is_none() {
            return;
        }
        {
            let mut slot = lock(&self.slot);
            if slot.closed {
                return;
            }
            if let Some(s) = slot.spare.as_mut() {
                if s.serves(snap, cfg) && s.alive() {
                    return;
                }
            }
        }
        if self.starting.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = Arc::clone(self);
        let (image, cfg, snap) = (image.clone(), cfg.clone(), snap.clone());
        tokio::spawn(async move {
            // Not while the job that asked for it takes its first steps:
            // starting QEMU costs ~0.1 s of a core, which on a small host
            // would come out of that job's start.
            tokio::time::sleep(REPLENISH_DELAY).await;
            let spare = match Incoming::spawn(&image, &cfg, &snap, true).await {
                Ok(mut spare) => spare.preload(&cfg).await.ok().map(|()| spare),
                Err(_) => None,
            };
            let old = {
                let mut slot = lock(&me.slot);
                if slot.closed {
                    spare
                } else {
                    std::mem::replace(&mut slot.spare, spare)
                }
            };
            // Killed outside the lock.
            drop(old);
            me.starting.store(false, Ordering::Release);
        });
    }

    /// Whether a spare is waiting.
    pub(crate) fn ready(&self) -> bool {
        lock(&self.slot).spare.is_some()
    }

    /// Kills the spare; no more are started.
    pub(crate) fn shutdown(&self) {
        let spare = {
            let mut slot = lock(&self.slot);
            slot.closed = true;
            slot.spare.take()
        };
        drop(spare);
    }
}
