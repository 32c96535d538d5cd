//! One Firecracker microVM: spawn, configure, start, connect, snapshot,
//! restore, tear down. See the [module docs](super) for the layout and the
//! jailer settings.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use firebreak_agent::{AgentClient, AgentInfo, ClientError};
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use super::api::{
    ApiError, BootSource, Drive, EntropyDevice, FirecrackerApi, IoEngine, MachineConfig,
    MemoryBackend, MemoryBackendType, NetworkInterface, PartialDrive, SnapshotCreateParams,
    SnapshotLoadParams, SnapshotType, Vsock, VsockOverride,
};
use super::netns::{NetnsError, VmNetns};
use crate::image::Image;
use crate::tools;
use crate::transport::{connect_agent, FirecrackerVsock, TransportError};

/// Environment variable naming the Firecracker binary (tests and
/// [`find_firecracker`] use it before `PATH`).
pub const FIRECRACKER_BIN_ENV: &str = "FIREBREAK_FIRECRACKER_BIN";

/// Environment variable naming the `jailer` binary (`firebreak run --jailer`).
pub const JAILER_BIN_ENV: &str = "FIREBREAK_JAILER_BIN";

/// Environment variable naming the jailed Firecracker's user (`firebreak run --jailer-user`).
pub const JAILER_USER_ENV: &str = "FIREBREAK_JAILER_USER";

/// Id of the root drive.
pub const ROOT_DRIVE_ID: &str = "rootfs";

/// The first guest context id (0–2 are reserved).
pub const DEFAULT_GUEST_CID: u32 = 3;

/// `$FIREBREAK_FIRECRACKER_BIN` when set and non-empty, else `firecracker` on
/// `PATH` (or an sbin directory).
pub fn find_firecracker() -> Option<PathBuf> {
    match std::env::var_os(FIRECRACKER_BIN_ENV) {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => tools::find("firecracker"),
    }
}

/// Why `binary` cannot be run as Firecracker (missing, not a file, not executable), if so;
/// says where the path came from when it is `$FIREBREAK_FIRECRACKER_BIN`'s.
pub fn firecracker_binary_problem(binary: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let from_env = std::env::var_os(FIRECRACKER_BIN_ENV).is_some_and(|v| binary == Path::new(&v));
    let what = if from_env {
        format!("${FIRECRACKER_BIN_ENV} names {}", binary.display())
    } else {
        format!("firecracker binary {}", binary.display())
    };
    match std::fs::metadata(binary) {
        Err(e) => Some(format!("{what}: {e}")),
        Ok(m) if !m.is_file() => Some(format!("{what}, which is not a file")),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => {
            Some(format!("{what}, which is not executable"))
        }
        Ok(_) => None,
    }
}

/// Errors of the Firecracker backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FirecrackerError {
    /// No Firecracker binary.
    #[error("firecracker binary not found: set {FIRECRACKER_BIN_ENV} or put it on PATH")]
    NotFound,
    /// A host file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A jailed VM's own network namespace could not be made.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// A helper command failed.
    #[error("{command} failed: {output}")]
    Command {
        /// Command line.
        command: String,
        /// Its stderr.
        output: String,
    },
    /// The API refused a request or could not be reached.
    #[error("firecracker API: {0}")]
    Api(#[from] ApiError),
    /// The VM did not come up; what Firecracker and the guest said.
    #[error("firecracker VM {id} failed: {reason}\n--- firecracker's standard error (tail) ---\n{log}\n--- firecracker's log and the guest console (tail) ---\n{console}")]
    Boot {
        /// The VM id.
        id: String,
        /// What failed.
        reason: String,
        /// End of Firecracker's stderr.
        log: String,
        /// End of the guest console.
        console: String,
    },
    /// Talking to the agent failed.
    #[error("agent: {0}")]
    Agent(#[from] ClientError),
    /// A snapshot directory is unusable.
    #[error("snapshot {dir}: {reason}")]
    Snapshot {
        /// The directory.
        dir: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Makes `link` a symlink to `target`, replacing whatever link was there in
/// one step (a reader never finds it missing).
pub(super) fn point_symlink(link: &Path, target: &Path) -> Result<(), FirecrackerError> {
    if let Some(parent) = link.parent() {
        std::fs::create_dir_all(parent).map_err(io_err("create", parent))?;
    }
    let mut tmp = link.as_os_str().to_owned();
    tmp.push(format!(
        ".new-{}-{}",
        firebreak_runner::leftovers::tag(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).map_err(io_err("symlink", &tmp))?;
    std::fs::rename(&tmp, link).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_err("rename", link)(e)
    })
}

pub(super) fn io_err(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> FirecrackerError {
    let path = path.into();
    move |source| FirecrackerError::Io { op, path, source }
}

/// A jailer user that cannot be used ([`JailerConfig::for_user`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JailerUserError {
    /// Neither `UID:GID` nor a user name.
    #[error("jailer user {0:?}: expected UID:GID (numbers) or a user name")]
    Invalid(String),
    /// No such user on this host.
    #[error(
        "jailer user {0:?}: no such user here (create one, e.g. `useradd --system firebreak-vm`)"
    )]
    Unknown(String),
    /// Uid or gid 0.
    #[error("jailer user: root defeats the jailer; give Firecracker an unprivileged user of its own (e.g. `useradd --system firebreak-vm`)")]
    Root,
}

/// The cgroup CPU period a jailed VM's `cpu.max` is given in (100 ms).
const CPU_PERIOD_US: u64 = 100_000;

/// Memory a jailed VM's cgroup allows beyond its guest memory: Firecracker's own
/// (its binary, API server and device emulation use ~5–30 MiB; buffers the rest),
/// plus [`vmm_overhead_mib`]'s share that grows with the guest (page tables and KVM's
/// MMU pages, charged to the cgroup, take ~2 MiB per GiB each without huge pages).
pub const VMM_OVERHEAD_MIB: u64 = 64;

/// The memory a jailed VM of `memory_mib` needs beyond its guest memory:
/// [`VMM_OVERHEAD_MIB`] plus 1/16 of the guest's.
pub fn vmm_overhead_mib(memory_mib: u64) -> u64 {
    VMM_OVERHEAD_MIB + memory_mib / 16
}

/// Threads of a jailed Firecracker besides its vCPU threads (main, API, and
/// room for the ones a snapshot load or a device may add).
const VMM_THREADS: u32 = 16;

/// Running Firecracker through its jailer (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailerConfig {
    /// The `jailer` binary (same version as Firecracker).
    pub binary: PathBuf,
    /// Unprivileged uid Firecracker runs as.
    pub uid: u32,
    /// Unprivileged gid.
    pub gid: u32,
    /// Where jails are built (`<base>/firecracker/<id>/root`).
    pub chroot_base: PathBuf,
    /// cgroup version (2 on current hosts).
    pub cgroup_version: u8,
    /// Parent cgroup of the per-VM cgroups (relative to the hierarchy).
    pub parent_cgroup: Option<String>,
    /// `file=value` cgroup settings (`cpu.max=200000 100000`, `memory.max=…`).
    pub cgroups: Vec<String>,
    /// Network namespace to join (`/var/run/netns/<name>`), for every VM.
    pub netns: Option<PathBuf>,
    /// Without `netns`, put each VM that has no network in an empty network
    /// namespace of its own ([`super::netns::VmNetns`]). On by default.
    pub own_netns: bool,
}

impl JailerConfig {
    /// The jail layout for `binary` with `uid:gid`: chroot base
    /// `/srv/jailer`, cgroup v2 under `firebreak`, an empty network namespace
    /// per VM without network.
    pub fn new(binary: impl Into<PathBuf>, uid: u32, gid: u32) -> Self {
        JailerConfig {
            binary: binary.into(),
            uid,
            gid,
            chroot_base: PathBuf::from("/srv/jailer"),
            cgroup_version: 2,
            parent_cgroup: Some("firebreak".into()),
            cgroups: Vec::new(),
            netns: None,
            own_netns: true,
        }
    }

    /// The same jail with the cgroup version this host can give the per-VM limits
    /// ([`host_jailer_cgroup_version`]): v1 where the `cpu`, `memory` and `pids`
    /// controllers are mounted as cgroup v1 hierarchies and not under cgroup2, as on hosts
    /// with the hybrid layout. Unchanged when neither offers them (the jailer will say so).
    pub fn with_host_cgroups(mut self) -> Self {
        if let Some(v) = host_jailer_cgroup_version() {
            self.cgroup_version = v;
        }
        self
    }

    /// The jail layout of [`JailerConfig::new`] for the user `user` names: `UID:GID`, or a
    /// user name (its uid and primary group). Root is refused: the jailer exists to drop
    /// it, so Firecracker must run as an unprivileged user of its own.
    pub fn for_user(binary: impl Into<PathBuf>, user: &str) -> Result<Self, JailerUserError> {
        let bad = || JailerUserError::Invalid(user.to_string());
        let (uid, gid) = match user.split_once(':') {
            Some((u, g)) => (
                u.trim().parse::<u32>().map_err(|_| bad())?,
                g.trim().parse::<u32>().map_err(|_| bad())?,
            ),
            None if user.trim().parse::<u32>().is_ok() => return Err(bad()),
            None => {
                let u = nix::unistd::User::from_name(user.trim())
                    .ok()
                    .flatten()
                    .ok_or_else(|| JailerUserError::Unknown(user.to_string()))?;
                (u.uid.as_raw(), u.gid.as_raw())
            }
        };
        if uid == 0 || gid == 0 {
            return Err(JailerUserError::Root);
        }
        Ok(JailerConfig::new(binary, uid, gid))
    }

    /// This jail's settings for one VM of `vcpus` vCPUs and `memory_mib` MiB of guest
    /// memory: the configured `cgroups`, plus — unless they set them — `cpu.max` (the
    /// vCPUs' worth of CPU time per 100 ms period), `memory.max` (guest memory and
    /// [`VMM_OVERHEAD_MIB`] for Firecracker itself) and `pids.max` (its threads), so that a
    /// busy or ballooning VM cannot take more of the host than its job asked for.
    ///
    /// Under cgroup v1 the same limits are `cpu.cfs_quota_us` and `cpu.cfs_period_us`,
    /// `memory.limit_in_bytes` and `pids.max`.
    pub fn for_vm(&self, vcpus: u32, memory_mib: u64) -> JailerConfig {
        let mut j = self.clone();
        let has = |key: &str| {
            j.cgroups
                .iter()
                .any(|c| c.split_once('=').is_some_and(|(k, _)| k.trim() == key))
        };
        let quota = u64::from(vcpus.max(1)) * CPU_PERIOD_US;
        let memory = (memory_mib + vmm_overhead_mib(memory_mib)) << 20;
        let mut add = Vec::new();
        if j.cgroup_version == 1 {
            if !has("cpu.cfs_quota_us") && !has("cpu.cfs_period_us") {
                add.push(format!("cpu.cfs_period_us={CPU_PERIOD_US}"));
                add.push(format!("cpu.cfs_quota_us={quota}"));
            }
            if !has("memory.limit_in_bytes") {
                add.push(format!("memory.limit_in_bytes={memory}"));
            }
        } else {
            if !has("cpu.max") {
                add.push(format!("cpu.max={quota} {CPU_PERIOD_US}"));
            }
            if !has("memory.max") {
                add.push(format!("memory.max={memory}"));
            }
        }
        if !has("pids.max") {
            add.push(format!("pids.max={}", VMM_THREADS + vcpus));
        }
        j.cgroups.extend(add);
        j
    }

    /// The jail's root for VM `id` of Firecracker binary `firecracker`.
    pub fn chroot_dir(&self, firecracker: &Path, id: &str) -> PathBuf {
        let exec_name = firecracker
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_else(|| "firecracker".into());
        self.chroot_base.join(exec_name).join(id).join("root")
    }

    /// The cgroups the jailer makes for VM `id` of Firecracker binary `firecracker`, given
    /// `mounts` (the text of `/proc/mounts`): `<parent>/<id>` under the cgroup2 mount, or
    /// under each cgroup v1 hierarchy of a controller the limits use; the parent is
    /// [`Self::parent_cgroup`], else (as the jailer does) the binary's file name.
    pub fn cgroup_dirs(&self, mounts: &str, firecracker: &Path, id: &str) -> Vec<PathBuf> {
        let exec_name = firecracker
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "firecracker".into());
        let parent = self.parent_cgroup.as_deref().unwrap_or(&exec_name);
        let mut dirs: Vec<PathBuf> = Vec::new();
        for (dir, kind, opts) in mount_entries(mounts) {
            let ours = match (self.cgroup_version, kind) {
                (2, "cgroup2") => dirs.is_empty(),
                (1, "cgroup") => opts.split(',').any(|o| JAILER_CONTROLLERS.contains(&o)),
                _ => false,
            };
            if ours {
                dirs.push(Path::new(dir).join(parent).join(id));
            }
        }
        dirs
    }

    /// The jailer command line (program excluded) that starts `firecracker`
    /// as VM `id` with its API socket at `/api.sock` inside the jail.
    pub fn argv(&self, firecracker: &Path, id: &str) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![
            "--id".into(),
            id.into(),
            "--exec-file".into(),
            firecracker.into(),
            "--uid".into(),
            self.uid.to_string().into(),
            "--gid".into(),
            self.gid.to_string().into(),
            "--chroot-base-dir".into(),
            self.chroot_base.clone().into(),
            "--cgroup-version".into(),
            self.cgroup_version.to_string().into(),
        ];
        if let Some(p) = &self.parent_cgroup {
            a.push("--parent-cgroup".into());
            a.push(p.into());
        }
        for c in &self.cgroups {
            a.push("--cgroup".into());
            a.push(c.into());
        }
        if let Some(n) = &self.netns {
            a.push("--netns".into());
            a.push(n.clone().into());
        }
        a.push("--".into());
        a.push("--api-sock".into());
        a.push("/api.sock".into());
        a
    }
}

/// Kills every process of the cgroup `dir` (a VM a dead runner left) and removes it:
/// `cgroup.kill` under cgroup v2, `SIGKILL` to each process of `cgroup.procs` under v1, then
/// `rmdir` once they are gone (waiting up to a second).
fn end_cgroup(dir: &Path) {
    if std::fs::write(dir.join("cgroup.kill"), b"1").is_err() {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    remove_cgroups(&[dir.to_path_buf()], 20, Duration::from_millis(50));
}

/// Removes the cgroups `dirs` (each goes only once empty), trying `tries` times `every`
/// apart; true once none is left.
fn remove_cgroups(dirs: &[PathBuf], tries: u32, every: Duration) -> bool {
    for i in 0..tries {
        if i > 0 {
            std::thread::sleep(every);
        }
        if dirs
            .iter()
            .all(|cg| std::fs::remove_dir(cg).is_ok() || !cg.exists())
        {
            return true;
        }
    }
    false
}

/// How VM ids (`--id`), hence jails and cgroups, start: `fb-<pid>-<nonce>-<n>`
/// ([`firebreak_runner::leftovers::tag`]), so that those of runners that died can be told.
const JAIL_PREFIX: &str = "fb-";

/// The cgroup controllers the jailer's per-VM limits use.
const JAILER_CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

/// Which cgroup version gives the jailer the `cpu`, `memory` and `pids` controllers, given
/// `mounts` (the text of `/proc/mounts`) and `read` (reads a cgroup2 mount's
/// `cgroup.controllers`): 2 when a cgroup2 mount offers all three, else 1 when cgroup v1
/// hierarchies hold all three, else `None`.
pub fn jailer_cgroup_version(mounts: &str, read: impl Fn(&Path) -> Option<String>) -> Option<u8> {
    let mut v2: Vec<String> = Vec::new();
    let mut v1: Vec<&str> = Vec::new();
    for (dir, kind, opts) in mount_entries(mounts) {
        match kind {
            "cgroup2" => {
                if let Some(c) = read(&Path::new(dir).join("cgroup.controllers")) {
                    v2.extend(c.split_whitespace().map(str::to_string));
                }
            }
            "cgroup" => v1.extend(opts.split(',')),
            _ => {}
        }
    }
    if JAILER_CONTROLLERS.iter().all(|c| v2.iter().any(|o| o == c)) {
        Some(2)
    } else if JAILER_CONTROLLERS.iter().all(|c| v1.contains(c)) {
        Some(1)
    } else {
        None
    }
}

/// The mount point, file system type and options of each line of `mounts` (the text of
/// `/proc/mounts`).
fn mount_entries(mounts: &str) -> impl Iterator<Item = (&str, &str, &str)> {
    mounts.lines().filter_map(|line| {
        let mut f = line.split_whitespace();
        let (_, dir, kind, opts) = (f.next()?, f.next()?, f.next()?, f.next()?);
        Some((dir, kind, opts))
    })
}

/// [`jailer_cgroup_version`] of this host.
pub fn host_jailer_cgroup_version() -> Option<u8> {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    jailer_cgroup_version(&mounts, |p| std::fs::read_to_string(p).ok())
}

/// A TAP device for the guest's `eth0` (opt-in; the host sets up the TAP
/// device, addressing and NAT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapNetwork {
    /// Host TAP device name.
    pub host_dev_name: String,
    /// Guest MAC (`06:00:AC:10:00:02`); `None`: Firecracker picks one.
    pub guest_mac: Option<String>,
}

/// The most vCPUs Firecracker gives a VM (its `MAX_SUPPORTED_VCPUS`).
pub const MAX_VCPUS: u32 = 32;

/// How to run one Firecracker VM.
#[derive(Debug, Clone)]
pub struct FirecrackerConfig {
    /// The Firecracker binary; `None`: [`find_firecracker`].
    pub binary: Option<PathBuf>,
    /// Run through the jailer.
    pub jailer: Option<JailerConfig>,
    /// vCPUs (1..=32).
    pub vcpus: u32,
    /// Guest memory, MiB.
    pub memory_mib: u64,
    /// Opt-in network.
    pub network: Option<TapNetwork>,
    /// From spawn to the agent's hello before the boot counts as failed.
    pub boot_timeout: Duration,
    /// Kill the VM this long after it booted (the job's timeout).
    pub job_timeout: Option<Duration>,
    /// Where run directories go (without the jailer); `None`: temp dir.
    pub run_parent: Option<PathBuf>,
    /// Extra kernel command-line words.
    pub extra_cmdline: Vec<String>,
    /// Guest vsock context id.
    pub guest_cid: u32,
    /// vsock port the agent listens on.
    pub agent_port: u32,
    /// Attach a virtio-rng device (fresh host entropy, also after restore).
    pub entropy_device: bool,
    /// Track dirty pages (for diff snapshots).
    pub track_dirty_pages: bool,
    /// Per-request API timeout.
    pub api_timeout: Duration,
    /// As [`VmConfig::unresponsive_after`](crate::VmConfig::unresponsive_after):
    /// how long a job's VM may leave liveness pings unanswered before it is
    /// killed as hung.
    pub unresponsive_after: Option<Duration>,
    /// Without the jailer: attach the root drive through this symlink to the
    /// VM's disk copy, so that a snapshot of the VM records this path (which
    /// outlives the VM) instead of the VM's run directory. Clones reopen the
    /// recorded path while their snapshot loads.
    pub drive_alias: Option<PathBuf>,
    /// The most a job's root filesystem may grow to (a `runs-on` disk label above it is
    /// capped), as [`VmConfig::max_disk_bytes`](crate::VmConfig::max_disk_bytes).
    pub max_disk_bytes: u64,
    /// The root filesystem of a job whose `runs-on` labels give no disk size, as
    /// [`VmConfig::default_disk_bytes`](crate::VmConfig::default_disk_bytes).
    pub default_disk_bytes: Option<u64>,
}

impl Default for FirecrackerConfig {
    fn default() -> Self {
        FirecrackerConfig {
            binary: None,
            jailer: None,
            vcpus: 2,
            memory_mib: 2048,
            network: None,
            boot_timeout: Duration::from_secs(10),
            job_timeout: None,
            run_parent: None,
            extra_cmdline: Vec::new(),
            guest_cid: DEFAULT_GUEST_CID,
            agent_port: firebreak_agent::protocol::VSOCK_PORT,
            entropy_device: true,
            track_dirty_pages: false,
            api_timeout: Duration::from_secs(10),
            unresponsive_after: Some(Duration::from_secs(120)),
            drive_alias: None,
            max_disk_bytes: 64 << 30,
            default_disk_bytes: None,
        }
    }
}

/// The guest files a VM boots from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootFiles {
    /// Uncompressed ELF kernel.
    pub vmlinux: PathBuf,
    /// Initramfs (mounts `/dev/vda`, starts the agent).
    pub initramfs: PathBuf,
    /// Root filesystem; never written (each VM gets a copy-on-write copy).
    pub rootfs: PathBuf,
}

impl From<&Image> for BootFiles {
    fn from(i: &Image) -> Self {
        BootFiles {
            vmlinux: i.vmlinux(),
            initramfs: i.initramfs(),
            rootfs: i.rootfs(),
        }
    }
}

/// The kernel command line for `cfg`.
pub fn boot_args(cfg: &FirecrackerConfig) -> String {
    let mut words: Vec<String> = [
        "console=ttyS0",
        "reboot=k",
        "panic=-1",
        "pci=off",
        "quiet",
        "rw",
        "mitigations=off",
        "cryptomgr.notests",
        "audit=0",
        "i8042.noaux",
        "i8042.nomux",
        "i8042.dumbkbd",
        "8250.nr_uarts=1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    words.push(format!(
        "{}={}",
        firebreak_agent::vsock::CMDLINE_FLAG,
        cfg.agent_port
    ));
    if cfg.network.is_some() {
        words.push("firebreak.net=tap".into());
    }
    words.extend(cfg.extra_cmdline.iter().cloned());
    words.join(" ")
}

/// Every request that configures a VM before `InstanceStart`, with paths as
/// Firecracker sees them.
#[derive(Debug, Clone, PartialEq)]
pub struct BootPlan {
    /// `PUT /machine-config`.
    pub machine: MachineConfig,
    /// `PUT /boot-source`.
    pub boot_source: BootSource,
    /// `PUT /drives/{id}`, in order (the root drive first).
    pub drives: Vec<Drive>,
    /// `PUT /vsock`.
    pub vsock: Vsock,
    /// `PUT /network-interfaces/{id}`.
    pub network: Vec<NetworkInterface>,
    /// `PUT /entropy`.
    pub entropy: Option<EntropyDevice>,
}

impl BootPlan {
    /// The plan for `cfg` with the VMM-side paths of kernel, initramfs, root
    /// drive and vsock socket.
    pub fn new(
        cfg: &FirecrackerConfig,
        kernel: PathBuf,
        initramfs: PathBuf,
        rootfs: PathBuf,
        vsock_uds: PathBuf,
    ) -> Self {
        BootPlan {
            machine: MachineConfig {
                vcpu_count: cfg.vcpus.clamp(1, MAX_VCPUS),
                mem_size_mib: cfg.memory_mib.max(128),
                smt: None,
                track_dirty_pages: cfg.track_dirty_pages.then_some(true),
                huge_pages: None,
            },
            boot_source: BootSource {
                kernel_image_path: kernel,
                initrd_path: Some(initramfs),
                boot_args: Some(boot_args(cfg)),
            },
            drives: vec![Drive {
                drive_id: ROOT_DRIVE_ID.into(),
                path_on_host: rootfs,
                is_root_device: true,
                is_read_only: false,
                cache_type: None,
                io_engine: Some(IoEngine::Sync),
                partuuid: None,
            }],
            vsock: Vsock {
                guest_cid: cfg.guest_cid.max(DEFAULT_GUEST_CID),
                uds_path: vsock_uds,
            },
            network: cfg
                .network
                .iter()
                .map(|n| NetworkInterface {
                    iface_id: "eth0".into(),
                    host_dev_name: n.host_dev_name.clone(),
                    guest_mac: n.guest_mac.clone(),
                })
                .collect(),
            entropy: cfg.entropy_device.then(EntropyDevice::default),
        }
    }

    /// Sends the plan — machine config, boot source, drives, vsock, network
    /// interfaces, entropy — then `InstanceStart`.
    pub async fn apply(&self, api: &FirecrackerApi) -> Result<(), ApiError> {
        api.put_machine_config(&self.machine).await?;
        api.put_boot_source(&self.boot_source).await?;
        for d in &self.drives {
            api.put_drive(d).await?;
        }
        api.put_vsock(&self.vsock).await?;
        for n in &self.network {
            api.put_network_interface(n).await?;
        }
        if let Some(e) = &self.entropy {
            api.put_entropy(e).await?;
        }
        api.start().await
    }
}

/// Makes `dst` a copy-on-write copy of `src`: a reflink where the file
/// system can, else a sparse copy (holes stay holes).
pub async fn cow_copy(src: &Path, dst: &Path) -> Result<(), FirecrackerError> {
    let out = Command::new("cp")
        .args(["--reflink=auto", "--sparse=always", "--"])
        .arg(src)
        .arg(dst)
        .output()
        .await
        .map_err(io_err("run cp for", dst))?;
    if !out.status.success() {
        return Err(FirecrackerError::Command {
            command: format!("cp --reflink=auto {} {}", src.display(), dst.display()),
            output: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(())
}

/// Where a VM's files are, on the host and as Firecracker sees them.
#[derive(Debug, Clone)]
struct RunLayout {
    /// Host directory holding sockets, disk copy and logs (the jail root
    /// under the jailer).
    dir: PathBuf,
    /// What to delete at teardown.
    remove: PathBuf,
    /// Under the jailer Firecracker sees `dir` as `/`.
    jailed: bool,
    /// The VM's own network namespace (jailed, without network), removed
    /// when the last copy of the layout goes.
    netns: Option<Arc<VmNetns>>,
    /// The claim on an unjailed run directory (see [`firebreak_runner::leftovers`]), held until the
    /// last copy of the layout goes, after teardown removed the directory.
    _claim: Option<Arc<firebreak_runner::leftovers::Claim>>,
    /// The cgroups the jailer made for the VM, which nothing else removes.
    cgroups: Vec<PathBuf>,
}

impl RunLayout {
    /// Removes what the VM left on the host: its run directory (or jail) and, once its
    /// Firecracker has exited, its jail's cgroups (a cgroup goes only when empty: while the
    /// process lingers after a kill, a thread retries for a few seconds).
    fn teardown(&self) {
        let _ = std::fs::remove_dir_all(&self.remove);
        if remove_cgroups(&self.cgroups, 1, Duration::ZERO) {
            return;
        }
        let busy = self.cgroups.clone();
        let _ = std::thread::Builder::new()
            .name("fc-cgroup-rm".into())
            .spawn(move || remove_cgroups(&busy, 50, Duration::from_millis(100)));
    }

    fn host(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    fn vmm(&self, name: &str) -> PathBuf {
        if self.jailed {
            Path::new("/").join(name)
        } else {
            self.dir.join(name)
        }
    }
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// Timings of a boot or restore.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FirecrackerBootStats {
    /// Spawn → agent hello answered.
    pub total: Duration,
    /// Spawn → API socket answering.
    pub api_ready: Duration,
    /// Whether the VM was restored from a snapshot.
    pub restored: bool,
}

/// What [`FirecrackerVm::snapshot`] writes next to the state and memory
/// files (`snapshot.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// The drive path recorded in the VM state (as Firecracker saw it).
    pub recorded_drive_path: PathBuf,
    /// Whether the VM ran under the jailer (paths are jail-relative).
    pub jailed: bool,
    /// Guest vsock CID.
    pub guest_cid: u32,
    /// Agent vsock port.
    pub agent_port: u32,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// Seconds since the epoch at creation.
    pub created_unix: u64,
}

/// A snapshot on disk: `vmstate`, `memory`, `rootfs.ext4` (the disk as it
/// was while paused) and `snapshot.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Its directory.
    pub dir: PathBuf,
    /// Its metadata.
    pub meta: SnapshotMeta,
}

impl Snapshot {
    /// File names inside a snapshot directory.
    pub const VMSTATE: &'static str = "vmstate";
    /// Guest memory.
    pub const MEMORY: &'static str = "memory";
    /// Disk.
    pub const DISK: &'static str = "rootfs.ext4";
    /// Metadata.
    pub const META: &'static str = "snapshot.json";

    /// Opens a snapshot directory written by [`FirecrackerVm::snapshot`].
    pub fn open(dir: impl Into<PathBuf>) -> Result<Snapshot, FirecrackerError> {
        let dir = dir.into();
        let bad = |reason: String| FirecrackerError::Snapshot {
            dir: dir.clone(),
            reason,
        };
        for f in [Self::VMSTATE, Self::MEMORY, Self::DISK] {
            if !dir.join(f).is_file() {
                return Err(bad(format!("{f} missing")));
            }
        }
        let text = std::fs::read(dir.join(Self::META)).map_err(|e| bad(e.to_string()))?;
        let meta = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
        Ok(Snapshot { dir, meta })
    }
}

/// A running Firecracker VM with a connected agent. Dropping it kills
/// Firecracker and removes its run directory.
pub struct FirecrackerVm {
    id: String,
    child: Option<Child>,
    layout: RunLayout,
    api: FirecrackerApi,
    transport: FirecrackerVsock,
    client: Arc<AgentClient>,
    info: AgentInfo,
    stats: FirecrackerBootStats,
    watchdog: Option<JoinHandle<()>>,
    cfg: FirecrackerConfig,
    /// The root drive's path as Firecracker was given it (what a snapshot records).
    drive_path: PathBuf,
    /// Its share of the provider's memory budget, returned when it is dropped.
    lease: Option<crate::pool::Lease>,
}

impl std::fmt::Debug for FirecrackerVm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FirecrackerVm")
            .field("id", &self.id)
            .field("run_dir", &self.layout.dir)
            .finish_non_exhaustive()
    }
}

/// A spawned Firecracker whose API answers, not yet configured.
struct Spawned {
    id: String,
    child: Child,
    layout: RunLayout,
    api: FirecrackerApi,
    t0: Instant,
    api_ready: Duration,
}

impl Spawned {
    fn fail(&mut self, reason: String) -> FirecrackerError {
        let _ = self.child.start_kill();
        FirecrackerError::Boot {
            id: self.id.clone(),
            reason,
            log: crate::log_tail::file_tail(&self.layout.host("firecracker.log"), 15),
            console: crate::log_tail::file_tail(&self.layout.host("console.log"), 40),
        }
    }

    /// Runs the host-side preparation `fut` unless Firecracker exits first;
    /// its own errors (a full disk, a copy that failed) are returned as they
    /// are, so that callers can tell them from a VM that did not come up.
    async fn prepare<T>(
        &mut self,
        what: &str,
        fut: impl std::future::Future<Output = Result<T, FirecrackerError>>,
    ) -> Result<T, FirecrackerError> {
        let r = tokio::select! {
            r = fut => r,
            st = self.child.wait() => Err(self.fail(format!("firecracker exited during {what} ({})",
                st.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string())))),
        };
        if r.is_err() {
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
            self.layout.teardown();
        }
        r
    }

    /// Runs `fut` unless Firecracker exits first.
    async fn guard<T, E: std::fmt::Display>(
        &mut self,
        what: &str,
        fut: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, FirecrackerError> {
        let r = tokio::select! {
            r = fut => r.map_err(|e| format!("{what}: {e}")),
            st = self.child.wait() => Err(format!("firecracker exited during {what} ({})",
                st.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()))),
        };
        match r {
            Ok(v) => Ok(v),
            Err(reason) => {
                let err = self.fail(reason);
                let _ = self.child.wait().await;
                self.layout.teardown();
                Err(err)
            }
        }
    }
}

async fn spawn(cfg: &FirecrackerConfig) -> Result<Spawned, FirecrackerError> {
    let binary = cfg
        .binary
        .clone()
        .or_else(find_firecracker)
        .ok_or(FirecrackerError::NotFound)?;
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let id = format!("{JAIL_PREFIX}{}-{seq}", firebreak_runner::leftovers::tag());
    let layout = match &cfg.jailer {
        Some(j) => {
            let dir = j.chroot_dir(&binary, &id);
            let remove = dir.parent().map(Path::to_path_buf).unwrap_or(dir.clone());
            let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
            let cgroups = j.cgroup_dirs(&mounts, &binary, &id);
            // What jailed VMs of runners that died left: jails (with their disk copies) and
            // cgroups, named with the dead runner's pid like this one.
            if let Some(jails) = remove.parent() {
                firebreak_runner::leftovers::remove_dead(
                    jails,
                    JAIL_PREFIX,
                    firebreak_runner::leftovers::remove_tree,
                );
            }
            // Their VMs first: the jailer's change of user cancels the parent-death signal
            // the runner gave it, so a jailed VM outlives a runner that was killed. Its cgroup
            // (named like its jail) holds it.
            for parent in cgroups.iter().filter_map(|c| c.parent()) {
                firebreak_runner::leftovers::remove_dead(parent, JAIL_PREFIX, end_cgroup);
            }
            let netns = if j.own_netns && j.netns.is_none() && cfg.network.is_none() {
                Some(Arc::new(VmNetns::for_vm(seq)?))
            } else {
                None
            };
            RunLayout {
                dir,
                remove,
                jailed: true,
                netns,
                _claim: None,
                cgroups,
            }
        }
        None => {
            let parent = cfg.run_parent.clone().unwrap_or_else(std::env::temp_dir);
            let (dir, claim) = firebreak_runner::leftovers::new_run_dir(
                &parent,
                "fcvm-",
                seq,
                firebreak_runner::leftovers::remove_tree,
            )
            .map_err(io_err("create a run directory in", &parent))?;
            RunLayout {
                remove: dir.clone(),
                dir,
                jailed: false,
                netns: None,
                _claim: Some(Arc::new(claim)),
                cgroups: Vec::new(),
            }
        }
    };
    std::fs::create_dir_all(&layout.dir).map_err(io_err("create", &layout.dir))?;
    let console =
        std::fs::File::create(layout.host("console.log")).map_err(io_err("create", &layout.dir))?;
    let log = std::fs::File::create(layout.host("firecracker.log"))
        .map_err(io_err("create", &layout.dir))?;
    let (program, args): (PathBuf, Vec<OsString>) = match &cfg.jailer {
        Some(j) => {
            let mut jv = j.for_vm(cfg.vcpus, cfg.memory_mib);
            if let Some(ns) = &layout.netns {
                jv.netns = Some(ns.path().to_path_buf());
            }
            (j.binary.clone(), jv.argv(&binary, &id))
        }
        None => (
            binary.clone(),
            vec![
                "--api-sock".into(),
                layout.vmm("api.sock").into(),
                "--id".into(),
                id.clone().into(),
            ],
        ),
    };
    // `setpriv --pdeathsig KILL` (util-linux): the kernel kills Firecracker
    // if this process dies without running destructors.
    let mut cmd = match tools::find("setpriv") {
        Some(setpriv) => {
            let mut c = Command::new(setpriv);
            c.args(["--pdeathsig", "KILL", "--"]).arg(&program);
            c
        }
        None => Command::new(&program),
    };
    let t0 = Instant::now();
    cmd.args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(console))
        .stderr(Stdio::from(log))
        // A process group of its own: Ctrl-C in the terminal is the runner's to handle
        // (cancel the steps, run `always()` ones), not a signal that kills the VM under them.
        .process_group(0)
        .kill_on_drop(true);
    // The pdeathsig is tied to the thread that starts Firecracker: see
    // `firebreak_runner::spawn`.
    let child = firebreak_runner::spawn::spawn_from_stable_thread(cmd).map_err(|e| {
        layout.teardown();
        io_err("start", &program)(e)
    })?;
    let api = FirecrackerApi::new(layout.host("api.sock")).with_timeout(cfg.api_timeout);
    let mut s = Spawned {
        id,
        child,
        layout,
        api: api.clone(),
        t0,
        api_ready: Duration::ZERO,
    };
    let limit = cfg.boot_timeout;
    s.guard("waiting for the API socket", api.wait_ready(limit))
        .await?;
    s.api_ready = s.t0.elapsed();
    Ok(s)
}

/// Stages a read-only file (kernel, initramfs, snapshot state and memory)
/// into the jail; without a jail, returns the path unchanged. A hard link
/// when the file is world-readable: it stays owned by whoever built the image,
/// so the jailed user can read it but never change what other VMs boot. Else
/// (another file system, or a file others cannot read) a copy of its own,
/// handed to the jail's user.
fn stage(
    layout: &RunLayout,
    jailer: Option<&JailerConfig>,
    src: &Path,
    name: &str,
) -> Result<PathBuf, FirecrackerError> {
    use std::os::unix::fs::PermissionsExt;
    let Some(j) = jailer else {
        return Ok(src.to_path_buf());
    };
    let dst = layout.host(name);
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(src).map_err(io_err("stat", src))?;
    let mode = meta.permissions().mode();
    // Linked only when the jail's user can read it but by no means write it: not its
    // owner (a snapshot the jailed Firecracker wrote is), not group- or other-writable.
    let shareable = mode & 0o004 != 0 && mode & 0o022 == 0 && meta.uid() != j.uid;
    if !(shareable && std::fs::hard_link(src, &dst).is_ok()) {
        std::fs::copy(src, &dst).map_err(io_err("copy into jail", &dst))?;
        std::os::unix::fs::chown(&dst, Some(j.uid), Some(j.gid)).map_err(io_err("chown", &dst))?;
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o400))
            .map_err(io_err("chmod", &dst))?;
    }
    Ok(layout.vmm(name))
}

impl FirecrackerVm {
    /// Boots `files` under Firecracker and completes the agent handshake.
    pub async fn boot(
        files: &BootFiles,
        cfg: &FirecrackerConfig,
    ) -> Result<FirecrackerVm, FirecrackerError> {
        let mut s = spawn(cfg).await?;
        let jailer = cfg.jailer.as_ref();
        let layout = s.layout.clone();
        let prepared = async {
            let disk = layout.host(Snapshot::DISK);
            cow_copy(&files.rootfs, &disk).await?;
            if let Some(j) = jailer {
                std::os::unix::fs::chown(&disk, Some(j.uid), Some(j.gid))
                    .map_err(io_err("chown", &disk))?;
            }
            let kernel = stage(&layout, jailer, &files.vmlinux, "vmlinux")?;
            let initrd = stage(&layout, jailer, &files.initramfs, "initramfs.cpio.gz")?;
            let drive = match (&cfg.drive_alias, jailer) {
                (Some(alias), None) => {
                    point_symlink(alias, &disk)?;
                    alias.clone()
                }
                _ => layout.vmm(Snapshot::DISK),
            };
            Ok::<_, FirecrackerError>(BootPlan::new(
                cfg,
                kernel,
                initrd,
                drive,
                layout.vmm("v.sock"),
            ))
        };
        let plan = s.guard("preparing files", prepared).await?;
        let api = s.api.clone();
        s.guard("configuring the VM", plan.apply(&api)).await?;
        let drive = plan.drives[0].path_on_host.clone();
        Self::connect(s, cfg, false, drive).await
    }

    async fn connect(
        mut s: Spawned,
        cfg: &FirecrackerConfig,
        restored: bool,
        drive_path: PathBuf,
    ) -> Result<FirecrackerVm, FirecrackerError> {
        let transport = FirecrackerVsock {
            uds_path: s.layout.host("v.sock"),
            port: cfg.agent_port,
        };
        let left = cfg.boot_timeout.saturating_sub(s.t0.elapsed());
        let (client, info) = s
            .guard(
                "connecting to the agent",
                connect_agent(&transport, left.max(Duration::from_secs(1))),
            )
            .await?;
        let stats = FirecrackerBootStats {
            total: s.t0.elapsed(),
            api_ready: s.api_ready,
            restored,
        };
        let watchdog = match (cfg.job_timeout, s.child.id()) {
            (Some(limit), Some(pid)) => Some(crate::qemu::watchdog(limit, pid)),
            _ => None,
        };
        Ok(FirecrackerVm {
            id: s.id,
            child: Some(s.child),
            layout: s.layout,
            api: s.api,
            transport,
            client: Arc::new(client),
            info,
            stats,
            watchdog,
            cfg: cfg.clone(),
            drive_path,
            lease: None,
        })
    }

    /// Pauses the VM, writes a full snapshot (state, memory, a copy of the
    /// disk) to `dir` (created), and resumes the VM if `resume`.
    pub async fn snapshot(
        &mut self,
        dir: &Path,
        resume: bool,
    ) -> Result<Snapshot, FirecrackerError> {
        std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        // Flush the guest's page cache so the disk copy matches memory.
        if let Ok(h) = self
            .client
            .exec(firebreak_agent::ExecSpec::new(["/bin/sync"]))
            .await
        {
            let _ = tokio::time::timeout(Duration::from_secs(10), h.collect()).await;
        }
        self.api.pause().await?;
        let result = async {
            // Without a jail Firecracker writes straight into `dir`; a jailed
            // one can only write inside its jail, and the files are moved out.
            let written = |f: &str| {
                if self.layout.jailed {
                    (self.layout.host(f), self.layout.vmm(f))
                } else {
                    (dir.join(f), dir.join(f))
                }
            };
            for f in [Snapshot::VMSTATE, Snapshot::MEMORY] {
                let _ = std::fs::remove_file(written(f).0);
            }
            // Writing the memory file takes as long as the disk needs for the
            // guest's memory (50 MiB/s allowed), not an API call's time.
            let limit = self
                .cfg
                .api_timeout
                .max(Duration::from_secs(60 + self.cfg.memory_mib / 50));
            self.api
                .clone()
                .with_timeout(limit)
                .create_snapshot(&SnapshotCreateParams {
                    snapshot_path: written(Snapshot::VMSTATE).1,
                    mem_file_path: written(Snapshot::MEMORY).1,
                    snapshot_type: Some(SnapshotType::Full),
                })
                .await?;
            if self.layout.jailed {
                for f in [Snapshot::VMSTATE, Snapshot::MEMORY] {
                    let (from, to) = (self.layout.host(f), dir.join(f));
                    if std::fs::rename(&from, &to).is_err() {
                        std::fs::copy(&from, &to).map_err(io_err("copy", &to))?;
                        let _ = std::fs::remove_file(&from);
                    }
                    // Handed back to us, read-only for everyone: clones
                    // hard-link them into their jails instead of copying
                    // (a jail's user can read them but never change them).
                    use std::os::unix::fs::PermissionsExt;
                    std::os::unix::fs::chown(
                        &to,
                        Some(nix::unistd::geteuid().as_raw()),
                        Some(nix::unistd::getegid().as_raw()),
                    )
                    .map_err(io_err("chown", &to))?;
                    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o444))
                        .map_err(io_err("chmod", &to))?;
                }
            }
            cow_copy(&self.layout.host(Snapshot::DISK), &dir.join(Snapshot::DISK)).await?;
            let meta = SnapshotMeta {
                recorded_drive_path: self.drive_path.clone(),
                jailed: self.layout.jailed,
                guest_cid: self.cfg.guest_cid.max(DEFAULT_GUEST_CID),
                agent_port: self.cfg.agent_port,
                vcpus: self.cfg.vcpus,
                memory_mib: self.cfg.memory_mib,
                created_unix: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
            };
            let json =
                serde_json::to_vec_pretty(&meta).map_err(|e| FirecrackerError::Snapshot {
                    dir: dir.to_path_buf(),
                    reason: e.to_string(),
                })?;
            std::fs::write(dir.join(Snapshot::META), json)
                .map_err(io_err("write", dir.join(Snapshot::META)))?;
            Ok::<_, FirecrackerError>(Snapshot {
                dir: dir.to_path_buf(),
                meta,
            })
        }
        .await;
        if resume {
            let resumed = async {
                self.api.resume().await?;
                // Firecracker closes every vsock connection open at snapshot
                // time (a transport reset; the guest's listener stays): talk
                // to the agent over a new one.
                self.reconnect(self.cfg.boot_timeout).await
            }
            .await;
            let snap = result?;
            resumed?;
            return Ok(snap);
        }
        result
    }

    /// Starts a new VM from `snapshot` (a warm start): its own copy of the
    /// snapshot's disk, a fresh vsock socket, then — before anything in the
    /// guest runs on — a fresh clock and fresh entropy through the agent.
    /// `cfg` supplies the binary, jailer, timeouts and run directory; the
    /// machine shape comes from the snapshot.
    pub async fn restore(
        snapshot: &Snapshot,
        cfg: &FirecrackerConfig,
    ) -> Result<FirecrackerVm, FirecrackerError> {
        let mut cfg = cfg.clone();
        cfg.guest_cid = snapshot.meta.guest_cid;
        cfg.agent_port = snapshot.meta.agent_port;
        cfg.vcpus = snapshot.meta.vcpus;
        cfg.memory_mib = snapshot.meta.memory_mib;
        if snapshot.meta.jailed != cfg.jailer.is_some() {
            return Err(FirecrackerError::Snapshot {
                dir: snapshot.dir.clone(),
                reason: "a snapshot taken with(out) the jailer must be restored the same way"
                    .into(),
            });
        }
        let mut s = spawn(&cfg).await?;
        let jailer = cfg.jailer.clone();
        let layout = s.layout.clone();
        let prepared = async {
            let disk = layout.host(Snapshot::DISK);
            cow_copy(&snapshot.dir.join(Snapshot::DISK), &disk).await?;
            if let Some(j) = &jailer {
                std::os::unix::fs::chown(&disk, Some(j.uid), Some(j.gid))
                    .map_err(io_err("chown", &disk))?;
            } else {
                // Firecracker reopens the drive at its recorded path during
                // the load; the VM stays paused until the drive is pointed at
                // this VM's copy, so the snapshot's own copy stands in: where
                // nothing is, or where a symlink (the snapshot cache's alias,
                // see `FirecrackerConfig::drive_alias`) leads elsewhere. A
                // real file there (the disk of the VM that took it, still
                // running) is left alone.
                let recorded = &snapshot.meta.recorded_drive_path;
                let own = snapshot.dir.join(Snapshot::DISK);
                let stand_in = match std::fs::symlink_metadata(recorded) {
                    Err(_) => true,
                    Ok(m) => {
                        m.file_type().is_symlink()
                            && std::fs::read_link(recorded).ok().as_deref() != Some(own.as_path())
                    }
                };
                if stand_in {
                    point_symlink(recorded, &own)?;
                }
            }
            let state = stage(
                &layout,
                jailer.as_ref(),
                &snapshot.dir.join(Snapshot::VMSTATE),
                Snapshot::VMSTATE,
            )?;
            let mem = stage(
                &layout,
                jailer.as_ref(),
                &snapshot.dir.join(Snapshot::MEMORY),
                Snapshot::MEMORY,
            )?;
            Ok::<_, FirecrackerError>(SnapshotLoadParams {
                snapshot_path: state,
                mem_backend: MemoryBackend {
                    backend_type: MemoryBackendType::File,
                    backend_path: mem,
                },
                track_dirty_pages: cfg.track_dirty_pages.then_some(true),
                resume_vm: Some(false),
                // Under the jailer the recorded `/v.sock` is this jail's.
                vsock_override: (!layout.jailed).then(|| VsockOverride {
                    uds_path: layout.vmm("v.sock"),
                }),
                network_overrides: Vec::new(),
                clock_realtime: None,
            })
        };
        let load = s.prepare("preparing the restore", prepared).await?;
        let api = s.api.clone();
        let fixup = async {
            api.load_snapshot(&load).await?;
            if !layout.jailed {
                api.patch_drive(&PartialDrive {
                    drive_id: ROOT_DRIVE_ID.into(),
                    path_on_host: Some(layout.vmm(Snapshot::DISK)),
                })
                .await?;
            }
            api.resume().await
        };
        s.guard("loading the snapshot", fixup).await?;
        let drive = if layout.jailed {
            snapshot.meta.recorded_drive_path.clone()
        } else {
            layout.vmm(Snapshot::DISK)
        };
        let vm = Self::connect(s, &cfg, true, drive).await?;
        // Clones share the snapshot's clock and RNG state: set the clock and
        // mix fresh host entropy in before any job code runs. (An agent that
        // does not own its machine, as in tests on a host, has no guest clock
        // to set.)
        if vm.info.init {
            vm.client.set_clock(SystemTime::now()).await?;
        }
        let mut seed = [0u8; 64];
        crate::agent_ops::host_random(&mut seed)
            .map_err(io_err("read", crate::agent_ops::HOST_RANDOM))?;
        vm.client.add_entropy(&seed).await?;
        Ok(vm)
    }

    /// Kills the VM `limit` from now (the job's timeout), replacing any
    /// deadline set before (a pooled VM gets its job's when it is taken).
    pub fn arm_job_timeout(&mut self, limit: Duration) {
        if let Some(w) = self.watchdog.take() {
            w.abort();
        }
        if let Some(pid) = self.child.as_ref().and_then(|c| c.id()) {
            self.watchdog = Some(crate::qemu::watchdog(limit, pid));
        }
    }

    /// Firecracker's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// Whether the agent owns its machine (a real guest; not so for the
    /// host agent tests put behind a fake Firecracker).
    pub(crate) fn agent_owns_machine(&self) -> bool {
        self.info.init
    }

    /// Charges this VM to a memory budget until it is dropped.
    pub fn set_lease(&mut self, lease: crate::pool::Lease) {
        self.lease = Some(lease);
    }

    /// Grows the root drive's file (this VM's copy-on-write copy) to `bytes`, sparsely, and
    /// has Firecracker reopen it (`PATCH /drives/rootfs`), which updates the virtio-blk
    /// capacity and tells the guest with a config interrupt. Never shrinks the file. The
    /// drive is reopened at the VM's own copy, not at [`FirecrackerVm::drive_path`]: a VM that
    /// took the snapshot was attached through the cache's alias, which then leads to the
    /// snapshot's disk.
    pub async fn grow_root_drive(&self, bytes: u64) -> Result<(), FirecrackerError> {
        let disk = self.layout.host(Snapshot::DISK);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&disk)
            .map_err(io_err("open", &disk))?;
        let len = f.metadata().map_err(io_err("stat", &disk))?.len();
        if bytes > len {
            f.set_len(bytes).map_err(io_err("grow", &disk))?;
        }
        self.api
            .patch_drive(&PartialDrive {
                drive_id: ROOT_DRIVE_ID.into(),
                path_on_host: Some(self.layout.vmm(Snapshot::DISK)),
            })
            .await?;
        Ok(())
    }

    /// The root drive's path as Firecracker was given it (what a snapshot of
    /// this VM records).
    pub fn drive_path(&self) -> &Path {
        &self.drive_path
    }

    /// vCPUs (a clone has its snapshot's).
    pub fn vcpus(&self) -> u32 {
        self.cfg.vcpus
    }

    /// Guest memory, MiB (a clone has its snapshot's).
    pub fn memory_mib(&self) -> u64 {
        self.cfg.memory_mib
    }

    /// The VM id (`--id`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The API client.
    pub fn api(&self) -> &FirecrackerApi {
        &self.api
    }

    /// The agent client (shared).
    pub fn client(&self) -> Arc<AgentClient> {
        self.client.clone()
    }

    /// What the agent said at the handshake.
    pub fn agent_info(&self) -> &AgentInfo {
        &self.info
    }

    /// How the boot went.
    pub fn boot_stats(&self) -> FirecrackerBootStats {
        self.stats
    }

    /// The run directory on the host (the jail root under the jailer).
    pub fn run_dir(&self) -> &Path {
        &self.layout.dir
    }

    /// The end of the guest console (and Firecracker's log) so far: its last 200 lines.
    pub fn console(&self) -> String {
        crate::log_tail::file_tail(&self.layout.host("console.log"), 200)
    }

    /// Drops the agent connection and opens a new one over vsock.
    pub async fn reconnect(&mut self, timeout: Duration) -> Result<(), FirecrackerError> {
        self.client.close();
        let (client, info) =
            connect_agent(&self.transport, timeout)
                .await
                .map_err(|e: TransportError| FirecrackerError::Boot {
                    id: self.id.clone(),
                    reason: format!("reconnect: {e}"),
                    log: String::new(),
                    console: crate::log_tail::file_tail(&self.layout.host("console.log"), 25),
                })?;
        self.client = Arc::new(client);
        self.info = info;
        Ok(())
    }

    /// True while Firecracker runs.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Asks the guest to power off (agent, then Ctrl+Alt+Del), waits up to
    /// `grace`, then kills Firecracker and removes the run directory.
    /// Idempotent.
    pub async fn shutdown(&mut self, grace: Duration) {
        if self.is_running() {
            let _ = tokio::time::timeout(grace, self.client.shutdown()).await;
            let _ = tokio::time::timeout(grace, self.api.send_ctrl_alt_del()).await;
            if let Some(c) = &mut self.child {
                let _ = tokio::time::timeout(grace, c.wait()).await;
            }
        }
        self.kill().await;
    }

    /// Kills Firecracker and removes the run directory. Idempotent.
    pub async fn kill(&mut self) {
        if let Some(w) = self.watchdog.take() {
            w.abort();
        }
        self.client.close();
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
        self.layout.teardown();
        self.layout.netns = None;
    }
}

impl Drop for FirecrackerVm {
    fn drop(&mut self) {
        if let Some(w) = self.watchdog.take() {
            w.abort();
        }
        if let Some(c) = self.child.as_mut() {
            let _ = c.start_kill();
        }
        self.layout.teardown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_firecracker_path_that_cannot_run_says_why() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().expect("tempdir");
        let missing = d.path().join("firecracker");
        let why = firecracker_binary_problem(&missing).expect("missing");
        assert!(why.contains("No such file"), "{why}");
        assert!(firecracker_binary_problem(d.path())
            .expect("a folder")
            .ends_with("which is not a file"));
        std::fs::write(&missing, "#!/bin/sh\n").expect("write");
        assert!(firecracker_binary_problem(&missing)
            .expect("not executable")
            .ends_with("which is not executable"));
        std::fs::set_permissions(&missing, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_eq!(firecracker_binary_problem(&missing), None);
    }

    #[test]
    fn boot_args_select_vsock_and_keep_extras_last() {
        let cfg = FirecrackerConfig {
            extra_cmdline: vec!["loglevel=7".into()],
            ..Default::default()
        };
        let a = boot_args(&cfg);
        assert!(a.starts_with("console=ttyS0 reboot=k"), "{a}");
        assert!(a.contains(" firebreak.vsock=1024 "), "{a}");
        assert!(a.ends_with(" loglevel=7"), "{a}");
        assert!(!a.contains("firebreak.net"), "{a}");
    }

    #[test]
    fn jailer_argv_and_chroot() {
        let mut j = JailerConfig::new("/usr/bin/jailer", 123, 100);
        j.cgroups.push("cpu.max=200000 100000".into());
        j.netns = Some("/var/run/netns/fb".into());
        let fc = Path::new("/usr/bin/firecracker");
        assert_eq!(
            j.chroot_dir(fc, "fb-1-0"),
            Path::new("/srv/jailer/firecracker/fb-1-0/root")
        );
        let argv: Vec<String> = j
            .argv(fc, "fb-1-0")
            .into_iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            argv,
            [
                "--id",
                "fb-1-0",
                "--exec-file",
                "/usr/bin/firecracker",
                "--uid",
                "123",
                "--gid",
                "100",
                "--chroot-base-dir",
                "/srv/jailer",
                "--cgroup-version",
                "2",
                "--parent-cgroup",
                "firebreak",
                "--cgroup",
                "cpu.max=200000 100000",
                "--netns",
                "/var/run/netns/fb",
                "--",
                "--api-sock",
                "/api.sock"
            ]
        );
    }

    #[test]
    fn jailer_user_is_unprivileged_and_well_formed() {
        let j = JailerConfig::for_user("/usr/bin/jailer", "123:100").expect("valid");
        assert_eq!((j.uid, j.gid), (123, 100));
        assert_eq!(j.chroot_base, Path::new("/srv/jailer"));
        assert_eq!(
            JailerConfig::for_user("/j", "0:0").err(),
            Some(JailerUserError::Root)
        );
        assert_eq!(
            JailerConfig::for_user("/j", "5:0").err(),
            Some(JailerUserError::Root)
        );
        assert_eq!(
            JailerConfig::for_user("/j", "root").err(),
            Some(JailerUserError::Root)
        );
        for bad in ["123", "a:b", "1:", ":1", ""] {
            assert!(
                matches!(
                    JailerConfig::for_user("/j", bad),
                    Err(JailerUserError::Invalid(_) | JailerUserError::Unknown(_))
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            JailerConfig::for_user("/j", "no-such-user-firebreak"),
            Err(JailerUserError::Unknown(_))
        ));
        // A user name gives its uid and primary group (`nobody` exists on Debian).
        if let Ok(Some(u)) = nix::unistd::User::from_name("nobody") {
            let j = JailerConfig::for_user("/j", "nobody").expect("nobody");
            assert_eq!((j.uid, j.gid), (u.uid.as_raw(), u.gid.as_raw()));
        }
    }

    #[test]
    fn staging_never_hands_a_shared_file_to_the_jail_user() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("SKIPPED: staging into a jail chowns files, which needs root");
            return;
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let jail = tmp.path().join("root");
        std::fs::create_dir(&jail).expect("mkdir");
        let layout = RunLayout {
            dir: jail.clone(),
            remove: jail.clone(),
            jailed: true,
            netns: None,
            _claim: None,
            cgroups: Vec::new(),
        };
        let j = JailerConfig::new("/j", 4321, 4322);
        let shared = tmp.path().join("vmlinux");
        std::fs::write(&shared, b"kernel").expect("write");
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let private = tmp.path().join("memory");
        std::fs::write(&private, b"guest memory").expect("write");
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).expect("chmod");

        // World-readable: linked in, still owned by root, so the jail user cannot change it.
        let p = stage(&layout, Some(&j), &shared, "vmlinux").expect("stage");
        assert_eq!(p, Path::new("/vmlinux"));
        let (src, dst) = (
            std::fs::metadata(&shared).expect("stat"),
            std::fs::metadata(jail.join("vmlinux")).expect("stat"),
        );
        assert_eq!(src.ino(), dst.ino(), "a hard link");
        assert_eq!(src.uid(), 0);
        // Not readable by others: a private, read-only copy for the jail user; the
        // original keeps its owner.
        stage(&layout, Some(&j), &private, "memory").expect("stage");
        let (src, dst) = (
            std::fs::metadata(&private).expect("stat"),
            std::fs::metadata(jail.join("memory")).expect("stat"),
        );
        assert_ne!(src.ino(), dst.ino(), "a copy");
        assert_eq!((dst.uid(), dst.gid()), (4321, 4322));
        assert_eq!(dst.mode() & 0o777, 0o400);
        assert_eq!(src.uid(), 0);
        assert_eq!(
            std::fs::read(jail.join("memory")).expect("read"),
            b"guest memory"
        );
        // Readable by all but owned by the jail's user (a snapshot its Firecracker wrote):
        // copied, never linked.
        let theirs = tmp.path().join("vmstate");
        std::fs::write(&theirs, b"state").expect("write");
        std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        std::os::unix::fs::chown(&theirs, Some(4321), Some(4322)).expect("chown");
        stage(&layout, Some(&j), &theirs, "vmstate").expect("stage");
        let (src, dst) = (
            std::fs::metadata(&theirs).expect("stat"),
            std::fs::metadata(jail.join("vmstate")).expect("stat"),
        );
        assert_ne!(src.ino(), dst.ino(), "a copy");
        assert_eq!(dst.mode() & 0o777, 0o400);
        // Without a jail nothing is staged.
        assert_eq!(
            stage(&layout, None, &shared, "vmlinux").expect("stage"),
            shared
        );
    }

    #[test]
    fn jailed_vm_gets_its_shape_as_cgroup_limits() {
        let cg = |j: &JailerConfig| j.cgroups.clone();
        let j = JailerConfig::new("/usr/bin/jailer", 123, 100);
        assert_eq!(
            cg(&j.for_vm(2, 2048)),
            [
                "cpu.max=200000 100000",
                "memory.max=2348810240",
                "pids.max=18"
            ]
        );
        // What the operator set stays as it is; only the missing ones are added.
        let mut j = j;
        j.cgroups.push("memory.max = 1073741824".into());
        j.cgroups.push("cpu.weight=50".into());
        assert_eq!(
            cg(&j.for_vm(1, 256)),
            [
                "memory.max = 1073741824",
                "cpu.weight=50",
                "cpu.max=100000 100000",
                "pids.max=17"
            ]
        );
        // vCPUs of 0 (a misconfiguration) still leaves the VM one CPU's worth.
        assert!(cg(&JailerConfig::new("/j", 1, 1).for_vm(0, 128))
            .contains(&"cpu.max=100000 100000".to_string()));
        // cgroup v1 names the same limits differently.
        let mut v1 = JailerConfig::new("/usr/bin/jailer", 123, 100);
        v1.cgroup_version = 1;
        assert_eq!(
            cg(&v1.for_vm(2, 2048)),
            [
                "cpu.cfs_period_us=100000",
                "cpu.cfs_quota_us=200000",
                "memory.limit_in_bytes=2348810240",
                "pids.max=18"
            ]
        );
    }

    #[test]
    fn the_jailer_gets_the_cgroup_version_that_holds_its_controllers() {
        let hybrid = "cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0\n\
                      cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0\n\
                      cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n";
        let empty = |_: &Path| Some("\n".to_string());
        assert_eq!(jailer_cgroup_version(hybrid, empty), Some(1));
        let unified = "cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n";
        let full = |p: &Path| {
            (p == Path::new("/sys/fs/cgroup/cgroup.controllers"))
                .then(|| "cpuset cpu io memory hugetlb pids rdma misc\n".to_string())
        };
        assert_eq!(jailer_cgroup_version(unified, full), Some(2));
        let some = |_: &Path| Some("cpu io\n".to_string());
        assert_eq!(jailer_cgroup_version(unified, some), None);
        assert_eq!(jailer_cgroup_version("", full), None);
    }

    #[test]
    fn a_jails_cgroups_are_found_to_be_removed() {
        let j = JailerConfig::new("/j", 1000, 1000);
        let unified = "sysfs /sys sysfs rw 0 0\ncgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n";
        assert_eq!(
            j.cgroup_dirs(unified, Path::new("/usr/bin/firecracker"), "fb-1-2-3"),
            [PathBuf::from("/sys/fs/cgroup/firebreak/fb-1-2-3")]
        );
        let hybrid = "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,cpu,cpuacct 0 0\n\
                      cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n\
                      cgroup /sys/fs/cgroup/pids cgroup rw,pids 0 0\n\
                      cgroup /sys/fs/cgroup/devices cgroup rw,devices 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
        let mut v1 = j.clone();
        v1.cgroup_version = 1;
        assert_eq!(
            v1.cgroup_dirs(hybrid, Path::new("/fc"), "fb-9"),
            ["cpu,cpuacct", "memory", "pids"]
                .map(|c| PathBuf::from(format!("/sys/fs/cgroup/{c}/firebreak/fb-9")))
        );
        assert!(j.cgroup_dirs("", Path::new("/fc"), "fb-9").is_empty());
        // Without a parent, the jailer's default: the binary's name.
        let mut no_parent = j.clone();
        no_parent.parent_cgroup = None;
        assert_eq!(
            no_parent.cgroup_dirs(unified, Path::new("/opt/fc-v1.9"), "fb-1"),
            [PathBuf::from("/sys/fs/cgroup/fc-v1.9/fb-1")]
        );
    }

    /// Teardown removes the jail and its (empty) cgroups.
    #[test]
    fn teardown_removes_the_jail_and_its_cgroups() {
        let d = tempfile::tempdir().expect("tempdir");
        let jail = d.path().join("jails/firecracker/fb-1-2-3");
        let cg = d.path().join("cg/firebreak/fb-1-2-3");
        std::fs::create_dir_all(jail.join("root")).expect("jail");
        std::fs::create_dir_all(&cg).expect("cgroup");
        let layout = RunLayout {
            dir: jail.join("root"),
            remove: jail.clone(),
            jailed: true,
            netns: None,
            _claim: None,
            cgroups: vec![cg.clone()],
        };
        layout.teardown();
        assert!(!jail.exists() && !cg.exists());
    }
}
