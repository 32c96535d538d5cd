//! microVM sandboxes for firebreak.
//!
//! This crate owns everything between the runner's `Sandbox` seam and a
//! running guest:
//!
//! * [`image`] — building guest images (kernel, vmlinux, initramfs, ext4
//!   rootfs with the agent) into a content-addressed cache; list; prune.
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
//!                         (blocking, minutes the first time: run it in spawn_blocking)
//! firebreak image list    ImageStore::open_default().list()          -> Vec<Image> (newest first)
//! firebreak image prune   ImageStore::open_default().prune(keep)     -> PruneReport
//! firebreak doctor        doctor(&DoctorOptions::default()).await    -> DoctorReport (Display + Serialize)
//! --sandbox qemu          QemuProvider::new(ImageStore::open_default(), None, VmConfig::default())
//! ```
//!
//! The agent must be a static binary:
//! `RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -p firebreak-agent --target x86_64-unknown-linux-gnu`.
//!
//! ## Snapshots (not done yet; what is in place)
//! Each VM has a QMP socket ([`QemuVm::qmp_socket`]) for `migrate` /
//! `-incoming`; the agent reopens its port when the host end goes away
//! ([`QemuVm::reconnect`]); the protocol has *set clock* and *add entropy*.

pub mod doctor;
pub mod image;
pub mod qemu;
pub mod sandbox;
pub mod tools;
pub mod transport;

pub use doctor::{doctor, DoctorOptions, DoctorReport};
pub use image::{BuildEvent, Image, ImageError, ImageSpec, ImageStore};
pub use qemu::{Accel, Machine, QemuVm, VmConfig, VmError};
pub use sandbox::{QemuProvider, VmSandbox};
