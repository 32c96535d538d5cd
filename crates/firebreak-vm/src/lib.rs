//! microVM sandboxes for firebreak.
//!
//! This crate owns everything between the runner's `Sandbox` seam and a
//! running guest:
//!
//! * [`image`] — building guest images (kernel, vmlinux, initramfs, ext4
//!   rootfs with the agent) into a content-addressed cache; list; prune (which
//!   spares images a run holds: [`image::ImageChoice`]).
//! * [`kernel`] — the minimal guest kernel: Debian's kernel source compiled
//!   with `kernel/firebreak.config` (`image build --kernel minimal`).
//! * [`qemu`] — booting an image under QEMU (KVM when a probe boot proves it
//!   works, else TCG) on a copy-on-write overlay, with vCPU/memory limits,
//!   optional user networking, boot timeout and retry, a job-timeout
//!   watchdog, and a cold-boot benchmark.
//! * [`transport`] — byte streams to the guest agent (virtio-serial socket for
//!   QEMU, Firecracker's vsock socket) behind one trait.
//! * [`sandbox`] — the QEMU backend as a `firebreak_runner::sandbox`
//!   provider ([`QemuProvider`]).
//! * [`mod@doctor`] — which sandboxes work on this host, and why not.
//! * [`tools`] — host programs used, with the Debian package for each.
//!
//! The guest side (agent binary, wire protocol, host client) lives in
//! `firebreak-agent`.
//!
//! ## Entry points for the CLI
//!
//! ```text
//! firebreak image build   ImageStore::open_default().build(&ImageSpec::new(image::locate_agent()?), &mut |ev| …)
//!                         (blocking, minutes the first time: run it in spawn_blocking;
//!                          --kernel minimal: ImageSpec::new(..).with_kernel(KernelKind::Minimal))
//! firebreak image list    ImageStore::open_default().list()          -> Vec<Image> (newest first)
//! firebreak image prune   ImageStore::open_default().prune(opts)     -> PruneReport
//! firebreak doctor        doctor(&DoctorOptions::default()).await    -> DoctorReport (Display + Serialize)
//! --sandbox qemu          QemuProvider::new(ImageStore::open_default(), None, VmConfig::default())
//!                         (VmConfig::start defaults to Start::Snapshot: first job takes the
//!                          snapshot, later jobs restore clones; Start::Cold boots every time)
//! runner daemon           QemuProvider::new(..).with_pool(PoolConfig { size: 2, memory_budget_mib: None })
//!                         then provider.prewarm(&JobSpec::new("warm", "warm")).await before
//!                         taking jobs, provider.shutdown().await at exit
//! bench/sandbox           cargo run --release -p firebreak-vm --example sandbox_bench
//! ```
//!
//! The agent must be a static binary:
//! `RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -p firebreak-agent --target x86_64-unknown-linux-gnu`.
//!
//! ## Snapshots and the warm pool
//! * [`snapshot`] — a "booted, agent ready, idle" snapshot per image and VM
//!   shape, cached next to the image; [`QemuVm::restore`] starts a clone on
//!   a fresh overlay, sets its clock, adds entropy.
//! * [`pool`] — [`Pool`] of restored, ready VMs refilled in the background,
//!   for QEMU ([`WarmPool`]) and Firecracker; [`MemoryBudget`] that no VM
//!   start may exceed, shared by both, and through [`host_ledger`] by every
//!   run on the host that counts host-wide ([`MemoryBudget::count_host_wide`]).
//! * `standby` — one QEMU process per provider started and waiting for
//!   the next restore's state ([`VmConfig::standby`]).
//! * [`qmp`] — the small QMP client used to take snapshots.
//!
//! Under TCG a guest `exec` through the agent costs ~60–100 ms (a `fork`
//! alone is ~18 ms, an `exec` of a dynamic binary ~40 ms), and the first
//! ones after a restore cost ~2.5× that (TCG translates the guest's code
//! anew in every QEMU process): pooled VMs run a warm-up
//! ([`snapshot::warm_up`]) before they are handed out. `bench/sandbox`
//! measures it all; `examples/restore_probe.rs` breaks a restore down
//! (`FIREBREAK_TRACE_RESTORE=1` prints restore and `create` phases).

mod agent_ops;
pub mod doctor;
pub mod firecracker;
pub mod host_ledger;
pub mod image;
pub mod kernel;
mod log_tail;
pub mod pool;
pub mod qemu;
pub mod qmp;
pub mod sandbox;
pub mod snapshot;
mod standby;
pub mod tools;
pub mod transport;

pub use agent_ops::{AgentSandbox, GuestVm};
pub use doctor::{doctor, DoctorOptions, DoctorReport};
pub use image::{BuildEvent, Image, ImageError, ImageSpec, ImageStore, KernelKind};
pub use pool::{MemoryBudget, Pool, PoolConfig, Spare, WarmPool};
pub use qemu::{Accel, Machine, QemuVm, Start, UserNet, VmConfig, VmError};
pub use sandbox::{QemuProvider, VmOrigin, VmSandbox};
pub use snapshot::Snapshot;
