//! The Firecracker backend: one Firecracker microVM per job.
//!
//! * [`api`] — a typed client of Firecracker's REST API on its Unix socket
//!   ([`FirecrackerApi`]): machine config, boot source, drives, vsock,
//!   network interfaces, entropy, actions, pause/resume, snapshot
//!   create/load, instance info. Refusals become [`ApiError::Fault`] with
//!   Firecracker's `fault_message`.
//! * [`vm`] — [`FirecrackerVm`]: spawn, configure ([`BootPlan`]), start,
//!   connect the agent over vsock, snapshot, restore, tear down.
//! * [`provider`] — [`FirecrackerProvider`], the runner's `SandboxProvider`
//!   for `--sandbox firecracker`, and its [`FirecrackerSandbox`].
//! * [`warm`] — [`SnapshotCache`]: one snapshot per image and VM shape,
//!   taken from the first job's VM, cloned for every later job.
//! * [`pool`] — [`FirecrackerPool`]: clones restored ahead of the jobs
//!   (`--warm-pool N`), under the memory budget.
//!
//! Nothing here downloads or builds Firecracker. The binary is
//! [`FirecrackerConfig::binary`], else `$FIREBREAK_FIRECRACKER_BIN`, else
//! `firecracker` on `PATH` ([`find_firecracker`]). It needs hardware KVM
//! (a PVM-only KVM does not run its guests).
//!
//! ## A boot
//!
//! 1. A run directory `<tmp>/fcvm-<pid>-<n>/` (or the jail root, below).
//! 2. `rootfs.ext4` there is a copy-on-write copy of the image's
//!    `rootfs.ext4` (`cp --reflink=auto --sparse=always`: a reflink on
//!    btrfs/XFS, a sparse copy elsewhere); the image is never written.
//! 3. `firecracker --api-sock <dir>/api.sock --id fb-<pid>-<n>` (under
//!    `setpriv --pdeathsig KILL` when available, so no VM outlives the
//!    runner — but under the jailer, whose change of user cancels that
//!    signal, a VM of a runner that was killed lives on until the next
//!    jailed VM's start kills it through its cgroup); its standard output — the guest's serial console and, no
//!    logger being configured, Firecracker's own log — goes to `console.log`,
//!    its standard error (what it says as it exits on an error) to
//!    `firecracker.log`.
//! 4. Once `GET /` answers: `PUT /machine-config` (vCPUs, memory),
//!    `/boot-source` (`vmlinux`, `initramfs.cpio.gz`, [`boot_args`]),
//!    `/drives/rootfs` (the copy, root device → `/dev/vda`), `/vsock`
//!    (CID 3, `uds_path` = `<dir>/v.sock`), `/network-interfaces/eth0` (only
//!    with a [`TapNetwork`]), `/entropy` (virtio-rng), then `PUT /actions`
//!    `InstanceStart`.
//! 5. The command line carries `firebreak.vsock=1024`: the initramfs loads
//!    the vsock modules and the agent listens on vsock port 1024. The host
//!    connects through `v.sock` (`CONNECT 1024\n` → `OK …`,
//!    [`FirecrackerVsock`](crate::transport::FirecrackerVsock)) and completes
//!    the agent hello.
//! 6. Teardown: a job's VM is killed with its disk copy and run directory
//!    (nothing in it needs a clean power-off); [`FirecrackerVm::shutdown`]
//!    (agent shutdown, `SendCtrlAltDel`, then kill) remains for callers that
//!    want one.
//!
//! ## Snapshots (warm starts)
//!
//! [`FirecrackerVm::snapshot`] syncs the guest, pauses it (`PATCH /vm`),
//! writes a full snapshot (`PUT /snapshot/create`: `vmstate`, `memory`),
//! copies the paused disk next to them, writes `snapshot.json`, and resumes
//! if asked. [`FirecrackerVm::restore`] starts a fresh Firecracker, gives it
//! its own copy-on-write copy of the snapshot's disk, `PUT /snapshot/load`
//! with a file memory backend, `resume_vm: false` and a `vsock_override`
//! for its own `v.sock`, points the root drive at its copy
//! (`PATCH /drives/rootfs`), resumes, reconnects the agent (the vsock device
//! resets connections on restore) and — before any job code runs — sets the
//! guest clock and mixes fresh host entropy into the guest's pool, following
//! Firecracker's guidance that clones must not share RNG state (the
//! virtio-rng device keeps feeding entropy afterwards). Without the jailer,
//! the drive path recorded in the snapshot is reopened during the load; when
//! it is gone, a symlink to the snapshot's disk stands in (the VM is paused
//! until the drive is re-pointed). `vsock_override` needs a recent
//! Firecracker; under the jailer every recorded path is jail-relative
//! (`/rootfs.ext4`, `/v.sock`) and no override is needed.
//!
//! `--sandbox firecracker` uses this through [`SnapshotCache`]: the first
//! job of a VM shape boots, is prepared for jobs (job cgroup, directories),
//! and is snapshotted with `resume` before its job runs; every later job of
//! that shape is a clone (falling back to a boot, and discarding the
//! snapshot, when a clone fails). Firecracker closes vsock connections open
//! at snapshot time, so the snapshotted VM reconnects to its agent.
//!
//! ## The jailer (opt-in: [`JailerConfig`])
//!
//! For production hosts Firecracker should run through its `jailer`
//! (started as root; it drops privileges before exec'ing Firecracker):
//!
//! * **uid/gid**: a dedicated unprivileged user and group per host (e.g.
//!   `firebreak-vm`), not shared with anything else; root is refused
//!   ([`JailerConfig::for_user`]). The jailer chowns the jail root, `/dev/kvm`
//!   and `/dev/net/tun` inside the jail to them, and we chown the VM's own
//!   disk copy. Kernel, initramfs and snapshot files are hard-linked in and
//!   keep their owner (readable, never writable, by the jail's user); a file
//!   others cannot read is copied in instead, read-only.
//! * **chroot base**: `/srv/jailer` (the default); a VM's jail root is
//!   `/srv/jailer/firecracker/<id>/root`, which is also its run directory
//!   here, removed (with its parent) at teardown. Put it on the same file
//!   system as the image cache so hard links and reflinks work.
//! * **cgroups**: v2 (`--cgroup-version 2`) under `--parent-cgroup
//!   firebreak`, one cgroup per VM named by its id, with `cpu.max` (vCPUs ×
//!   period), `memory.max` (guest memory plus [`vmm_overhead_mib`]) and
//!   `pids.max` (its threads) from the VM's shape, unless the configured
//!   `cgroups` set them ([`JailerConfig::for_vm`]). On a host whose `cpu`,
//!   `memory` and `pids` controllers are cgroup v1 hierarchies, v1 with the
//!   same limits under their v1 names ([`JailerConfig::with_host_cgroups`]).
//! * **netns**: [`JailerConfig::netns`] when set (a namespace the host
//!   setup made, e.g. one holding only that VM's TAP device and its NAT).
//!   Otherwise a VM without network joins an empty namespace of its own
//!   ([`netns::VmNetns`], `/run/netns/fbvm-<pid>-<n>`, removed with the VM;
//!   [`JailerConfig::own_netns`]): its guest has no network device either
//!   way, and a Firecracker process the guest took over finds no interface
//!   and no route. A VM with a TAP device stays in the host's namespace,
//!   where its device is.
//! * Not `--daemonize` or `--new-pid-ns`: the jailer then exec's into
//!   Firecracker in place, so the child we hold *is* Firecracker and killing
//!   it tears the VM down.
//!
//! ## Guest side
//! The image is the same as QEMU's (`vmlinux` instead of `bzImage`). The
//! agent serves vsock when the command line has `firebreak.vsock=<port>`
//! (`firebreak_agent::vsock`).

pub mod api;
pub mod netns;
pub mod pool;
pub mod provider;
pub mod vm;
pub mod warm;

pub use api::{ApiError, FirecrackerApi};
pub use pool::FirecrackerPool;
pub use provider::{FirecrackerProvider, FirecrackerSandbox};
pub use vm::{
    boot_args, find_firecracker, firecracker_binary_problem, host_jailer_cgroup_version,
    jailer_cgroup_version, vmm_overhead_mib, BootFiles, BootPlan, FirecrackerConfig,
    FirecrackerError, FirecrackerVm, JailerConfig, JailerUserError, Snapshot, SnapshotMeta,
    TapNetwork, FIRECRACKER_BIN_ENV, JAILER_BIN_ENV, JAILER_USER_ENV, VMM_OVERHEAD_MIB,
};
pub use warm::SnapshotCache;
