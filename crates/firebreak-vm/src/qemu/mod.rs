//! The QEMU backend: boot an image, connect its agent.
//!
//! Every VM boots the image's kernel and initramfs with its root disk as a
//! fresh qcow2 overlay over the image's raw `rootfs.ext4` (`qemu-img create -f
//! qcow2 -b base -F raw`), so the image is never written and a VM starts in
//! milliseconds of disk work. The agent is reached through a virtio-serial
//! port on a Unix-socket chardev ([`VirtioSerialSocket`]). No network unless
//! asked (then user-mode networking through passt or QEMU's slirp, see
//! [`UserNet`]; addresses set by the agent from `firebreak.net=user` on the
//! kernel command line).
//!
//! Acceleration: KVM only when a probe boot proves it works ([`probe_kvm`]),
//! else TCG. The machine is `microvm` by default: no firmware tables, no PCI
//! bus to enumerate. Under TCG a `microvm` guest has no timer to calibrate
//! its TSC against (the PIT calibration fails under emulation) and hung in
//! most boots until the command line started telling the kernel the host's
//! TSC rate (`tsc_early_khz`; a TCG guest's TSC is the host's): 12 of 15
//! boots hung before, none of 44 since. Under TCG the command line also
//! says `tsc=reliable`: otherwise the kernel's clocksource watchdog,
//! comparing the TSC with late-arriving jiffies, falls back to jiffies,
//! and an idle guest can no longer go tickless. `q35` stays available
//! (`firebreak run --vm-machine q35`).
//! Every boot has a timeout and is retried on a fresh overlay.

mod args;
mod kvm;
mod net;

pub use net::UserNet;

pub(crate) use args::{qemu_args, qemu_args_with_drive, RamBacking};
pub use kvm::{kvm_is_pvm, probe_kvm, probe_kvm_uncached, KvmProbe};

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use firebreak_agent::{AgentClient, AgentInfo, ClientError};
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::image::Image;
use crate::log_tail::tail;
use crate::qmp::Qmp;
use crate::tools;
use crate::transport::{connect_agent, connect_stream, handshake, VirtioSerialSocket};
use firebreak_runner::leftovers::{Claim, DirGuard};

/// Which accelerator to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// KVM if [`probe_kvm`] says it works, else TCG.
    #[default]
    Auto,
    /// KVM, fail if it does not work.
    Kvm,
    /// Software emulation.
    Tcg,
}

/// QEMU machine type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Machine {
    /// PC with PCI (virtio-*-pci devices), ACPI and SeaBIOS.
    Q35,
    /// Minimal machine with virtio-mmio devices and qboot: boots ~10%
    /// faster than `q35` under TCG here (median of 8 alternating cold
    /// boots, 4.0 s against 4.4 s).
    #[default]
    Microvm,
}

/// How to run one VM.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Guest memory (`-m`), MiB.
    pub memory_mib: u64,
    /// Give the guest user-mode networking (NAT, outbound only): passt where the host has
    /// it, else QEMU's slirp (see [`UserNet`]).
    pub network: bool,
    /// Accelerator choice.
    pub accel: Accel,
    /// Machine type.
    pub machine: Machine,
    /// Time from QEMU start to agent handshake before a boot counts as hung;
    /// `None`: 15 s with KVM, 30 s with TCG (a normal TCG boot takes 5–10 s
    /// on a loaded 2-core host; a hung boot never recovers).
    pub boot_timeout: Option<Duration>,
    /// Boot attempts before giving up.
    pub boot_attempts: u32,
    /// Kill the VM this long after it booted (the job's timeout).
    pub job_timeout: Option<Duration>,
    /// Where sockets, overlay and logs go (a fresh directory inside it).
    /// `None`: the system temp dir.
    pub run_parent: Option<PathBuf>,
    /// Extra kernel command line words.
    pub extra_cmdline: Vec<String>,
    /// `-cpu` model; `None`: `host` under KVM, `max,-erms,-fsrm` under TCG
    /// (`qemu64` boots ~10% faster under TCG but lacks x86-64-v2
    /// instructions; the fast-string features are slow under TCG).
    pub cpu_model: Option<String>,
    /// How [`QemuProvider`](crate::QemuProvider) starts a job's VM.
    /// [`QemuVm::boot`] always boots cold; [`QemuVm::restore`] always
    /// restores.
    pub start: Start,
    /// Keep guest RAM in this file, mapped shared, so that it holds the
    /// guest's memory when QEMU stops (how [`crate::snapshot`] takes a
    /// snapshot); `None`: anonymous memory.
    pub ram_file: Option<PathBuf>,
    /// Start QEMU at this CPU niceness (`nice -n`); `None`: the caller's.
    /// The warm pool restores its spare VMs at 10 so that a refill never
    /// slows a running job, and brings a VM back to normal when a job takes
    /// it ([`QemuVm::raise_priority`]).
    pub nice: Option<i32>,
    /// How long a restored or pooled VM's agent may take to answer a job's
    /// first requests (job tree, pids limit, clock and entropy) before the
    /// VM is replaced (see [`QemuProvider`](crate::QemuProvider)). They
    /// take well under a second even under TCG on a busy host.
    pub first_requests_timeout: Duration,
    /// How long a job's VM may leave the host's liveness pings unanswered
    /// before it counts as hung and is killed, failing the job at once
    /// rather than at its timeout (pinged every quarter of this; `None`:
    /// never). Default 120 s: an agent answers within milliseconds even
    /// under TCG on a loaded host.
    pub unresponsive_after: Option<Duration>,
    /// The largest root filesystem a job may ask for with a disk label
    /// (larger requests are capped, with a note): clones write to an
    /// overlay in the run directory, so this bounds the host disk a job can
    /// fill.
    pub max_disk_bytes: u64,
    /// The root filesystem of a job whose `runs-on` labels give no disk size (`--vm-disk`);
    /// `None`: the image's (its free space, ~4 GiB).
    pub default_disk_bytes: Option<u64>,
    /// With [`Start::Snapshot`], keep one QEMU process started, with the
    /// snapshot's device state loaded and the guest paused, so that the
    /// next job's restore skips starting QEMU, initialising its machine and
    /// loading (~0.15 s of a restore under TCG here) and only resumes it.
    /// It holds ~30 MiB and no CPU while it waits;
    /// [`QemuProvider::shutdown`](crate::QemuProvider::shutdown) stops it.
    pub standby: bool,
}

/// How a job's VM is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Start {
    /// Boot the kernel every time (seconds under TCG).
    Cold,
    /// Restore a clone of a cached "booted, agent ready, idle" snapshot
    /// (built on first use; see [`crate::snapshot`]), from the warm pool when
    /// one is ready; fall back to a cold boot when that fails.
    #[default]
    Snapshot,
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            vcpus: 2,
            memory_mib: 2048,
            network: false,
            accel: Accel::Auto,
            machine: Machine::Microvm,
            boot_timeout: None,
            boot_attempts: 3,
            job_timeout: None,
            run_parent: None,
            extra_cmdline: Vec::new(),
            cpu_model: None,
            start: Start::default(),
            ram_file: None,
            nice: None,
            first_requests_timeout: Duration::from_secs(15),
            unresponsive_after: Some(Duration::from_secs(120)),
            max_disk_bytes: 64 << 30,
            default_disk_bytes: None,
            standby: true,
        }
    }
}

/// Errors of the QEMU backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VmError {
    /// A host program is missing.
    #[error("{tool} not found on this host: install it with `apt-get install {package}`")]
    MissingTool {
        /// Program.
        tool: &'static str,
        /// Debian package.
        package: &'static str,
    },
    /// KVM was required but does not work.
    #[error("KVM unusable: {0}")]
    KvmUnusable(String),
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
    /// A helper command failed.
    #[error("{command} failed: {output}")]
    Command {
        /// Command line.
        command: String,
        /// Its stderr.
        output: String,
    },
    /// Every boot attempt failed.
    #[error("VM did not boot after {attempts} attempt(s): {reason}\n--- guest console (tail) ---\n{console}")]
    BootFailed {
        /// Attempts made.
        attempts: u32,
        /// Last failure.
        reason: String,
        /// End of the guest console of the last attempt.
        console: String,
    },
    /// Talking to the agent failed.
    #[error("agent: {0}")]
    Agent(#[from] ClientError),
    /// A QMP command failed.
    #[error("QMP {command}: {message}")]
    Qmp {
        /// The command.
        command: String,
        /// What QEMU said (or why there was no answer).
        message: String,
    },
    /// The image's agent speaks another protocol version than this build.
    #[error("{detail}: the guest image was built for another firebreak version; rebuild it with `firebreak image build`")]
    AgentVersion {
        /// What the agent said.
        detail: String,
    },
    /// Taking a snapshot failed.
    #[error("snapshot: {0}")]
    Snapshot(String),
    /// Restoring a snapshot failed.
    #[error("restore failed: {reason}\n--- guest console (tail) ---\n{console}")]
    RestoreFailed {
        /// Why.
        reason: String,
        /// End of the guest console.
        console: String,
    },
    /// Starting this VM would exceed the memory budget.
    #[error(
        "memory budget exhausted: {needed_mib} MiB needed, {used_mib} of {limit_mib} MiB in use{}",
        if *elsewhere_mib > 0 { format!(" ({elsewhere_mib} MiB of it by other firebreak processes on this host)") } else { String::new() }
    )]
    OverBudget {
        /// What the VM needs.
        needed_mib: u64,
        /// In use by VMs now, this process's and others'.
        used_mib: u64,
        /// Of `used_mib`, what other firebreak processes on this host use.
        elsewhere_mib: u64,
        /// The budget.
        limit_mib: u64,
    },
    /// A VM larger than the whole memory budget: it can never start.
    #[error("a VM needing {needed_mib} MiB (guest memory and the VMM's own) does not fit the memory budget of {limit_mib} MiB: raise --vm-memory-budget or ask for a smaller VM")]
    TooLarge {
        /// What the VM needs.
        needed_mib: u64,
        /// The budget.
        limit_mib: u64,
    },
}

fn io_err(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> VmError {
    let path = path.into();
    move |source| VmError::Io { op, path, source }
}

fn need(t: &tools::Tool) -> Result<PathBuf, VmError> {
    tools::find(t.name).ok_or(VmError::MissingTool {
        tool: t.name,
        package: t.package,
    })
}

/// Timings of a boot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BootStats {
    /// Attempts it took.
    pub attempts: u32,
    /// From the first QEMU spawn to the agent's hello reply.
    pub total: Duration,
    /// From the successful attempt's QEMU spawn to the hello reply.
    pub last_attempt: Duration,
    /// Whether KVM was used.
    pub kvm: bool,
    /// Restored from a snapshot (not booted).
    pub restored: bool,
    /// Restored into a QEMU process started and loaded ahead, while no job
    /// waited (see [`VmConfig::standby`]): `total` then counts from its
    /// resume.
    pub standby: bool,
}

/// A running VM with a connected agent. Dropping it kills QEMU and removes
/// its run directory.
pub struct QemuVm {
    child: Option<Child>,
    run_dir: PathBuf,
    /// Held until the run directory is removed (see [`firebreak_runner::leftovers`]).
    _claim: Option<Claim>,
    client: Arc<AgentClient>,
    info: AgentInfo,
    stats: BootStats,
    watchdog: Option<JoinHandle<()>>,
    lease: Option<crate::pool::Lease>,
    /// Started with a niceness (see [`VmConfig::nice`]).
    niced: bool,
    /// The snapshot a restored VM was cloned from.
    snapshot: Option<crate::snapshot::Snapshot>,
    /// passt, for a VM with networking on a host that has it (see [`UserNet`]).
    _net: Option<net::Passt>,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// Why a VM failed when its QEMU exited early: the exit status and the end of its log.
fn qemu_exited(st: std::io::Result<std::process::ExitStatus>, run_dir: &Path) -> String {
    format!(
        "QEMU exited ({}): {}",
        st.map(|s| s.to_string()).unwrap_or_default(),
        tail(
            &std::fs::read_to_string(run_dir.join("qemu.log")).unwrap_or_default(),
            10
        )
    )
}

/// The end of a failed VM's guest console, for its error.
fn console_tail(run_dir: &Path) -> String {
    tail(
        &std::fs::read_to_string(run_dir.join("console.log")).unwrap_or_default(),
        25,
    )
}

/// How long a restore waits for QEMU and the agent (a restored guest answers in well under
/// a second; a cold boot has its own default).
fn restore_timeout(cfg: &VmConfig) -> Duration {
    cfg.boot_timeout.unwrap_or(Duration::from_secs(20))
}

/// Creates the copy-on-write overlay `overlay` over the raw `base`.
pub async fn create_overlay(base: &Path, overlay: &Path) -> Result<(), VmError> {
    create_overlay_on(base, "raw", overlay).await
}

/// Creates the copy-on-write overlay `overlay` over `base` of format
/// `base_format` (`raw`, `qcow2`).
pub async fn create_overlay_on(
    base: &Path,
    base_format: &str,
    overlay: &Path,
) -> Result<(), VmError> {
    let qemu_img = need(&tools::QEMU_IMG)?;
    let base = std::fs::canonicalize(base).map_err(io_err("resolve", base))?;
    let out = Command::new(qemu_img)
        .args(["create", "-q", "-f", "qcow2", "-F", base_format, "-b"])
        .arg(&base)
        .arg(overlay)
        .output()
        .await
        .map_err(io_err("run qemu-img for", overlay))?;
    if !out.status.success() {
        return Err(VmError::Command {
            command: format!("qemu-img create -b {}", base.display()),
            output: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(())
}

/// Decides KVM vs TCG for `cfg` (probing KVM once per process).
pub async fn resolve_kvm(image: &Image, cfg: &VmConfig) -> Result<bool, VmError> {
    match cfg.accel {
        Accel::Tcg => Ok(false),
        Accel::Kvm => {
            let p = probe_kvm(&image.kernel()).await;
            if !p.usable {
                return Err(VmError::KvmUnusable(p.detail));
            }
            Ok(true)
        }
        Accel::Auto => Ok(probe_kvm(&image.kernel()).await.usable),
    }
}

/// A new run directory (sockets, logs, the overlay), claimed by this process and removed
/// when the VM is dropped; abandoned ones beside it go first.
fn new_run_dir(cfg: &VmConfig) -> Result<(PathBuf, Claim), VmError> {
    let parent = cfg.run_parent.clone().unwrap_or_else(std::env::temp_dir);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    firebreak_runner::leftovers::new_run_dir(&parent, "fbvm-", n, |dir| {
        net::stop_abandoned(dir);
        firebreak_runner::leftovers::remove_tree(dir);
    })
    .map_err(io_err("create a run directory in", &parent))
}

fn spawn_qemu(
    qemu: &Path,
    args: Vec<OsString>,
    run_dir: &Path,
    nice: Option<i32>,
) -> Result<Child, VmError> {
    spawn_qemu_in(qemu, args, run_dir, &[], nice)
}

fn spawn_qemu_in(
    qemu: &Path,
    args: Vec<OsString>,
    run_dir: &Path,
    env: &[(&str, &Path)],
    nice: Option<i32>,
) -> Result<Child, VmError> {
    let qemu_log =
        std::fs::File::create(run_dir.join("qemu.log")).map_err(io_err("create", run_dir))?;
    // `setpriv --pdeathsig KILL` (util-linux) makes the kernel kill QEMU if
    // we die without running destructors (SIGKILL, a second Ctrl-C), so no VM
    // outlives its runner. setpriv execs QEMU: the child's pid is QEMU's.
    // `nice -n N` (coreutils) execs the rest at that niceness, inherited by
    // every QEMU thread.
    let mut argv: Vec<OsString> = Vec::new();
    if let (Some(n), Some(nice_bin)) = (nice, tools::find("nice")) {
        argv.extend([nice_bin.into(), "-n".into(), n.to_string().into()]);
    }
    if let Some(setpriv) = tools::find("setpriv") {
        argv.extend([
            setpriv.into(),
            "--pdeathsig".into(),
            "KILL".into(),
            "--".into(),
        ]);
    }
    argv.push(qemu.into());
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(qemu_log))
        // A process group of its own: Ctrl-C in the terminal is the runner's to handle
        // (cancel the steps, run `always()` ones), not a signal that kills the VM under them.
        .process_group(0)
        .kill_on_drop(true);
    // The pdeathsig is tied to the thread that starts QEMU: see `firebreak_runner::spawn`.
    firebreak_runner::spawn::spawn_from_stable_thread(cmd).map_err(io_err("start", qemu))
}

/// Waits until QEMU's socket chardev `id` has a client (`query-chardev`
/// then names the peer instead of saying `disconnected:`).
async fn wait_chardev_connected(qmp: &mut Qmp, id: &str, timeout: Duration) -> Result<(), VmError> {
    let start = Instant::now();
    loop {
        let list = qmp.execute("query-chardev", None).await?;
        let filename = list
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["label"] == id)
            .and_then(|c| c["filename"].as_str())
            .unwrap_or("disconnected:")
            .to_string();
        if std::env::var_os("FIREBREAK_TRACE_RESTORE").is_some() {
            eprintln!("chardev {id}: {filename} at {:?}", start.elapsed());
        }
        if !filename.starts_with("disconnected") {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(VmError::Snapshot(format!(
                "QEMU did not accept the agent connection within {timeout:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Sets the guest clock to the host's and mixes 64 fresh random bytes into
/// the guest's entropy pool (needed after every restore).
pub(crate) async fn refresh_guest(client: &AgentClient) -> Result<(), VmError> {
    let mut seed = [0u8; 64];
    crate::agent_ops::host_random(&mut seed)
        .map_err(io_err("read", crate::agent_ops::HOST_RANDOM))?;
    let (clock, entropy, id) = tokio::join!(
        client.set_clock(std::time::SystemTime::now()),
        client.add_entropy(&seed),
        crate::agent_ops::set_machine_id(client)
    );
    clock?;
    entropy?;
    id
}

/// Kills process `pid` after `limit` (a VM's job timeout).
pub(crate) fn watchdog(limit: Duration, pid: u32) -> JoinHandle<()> {
    tokio::spawn(async move {
        tokio::time::sleep(limit).await;
        if let Ok(pid) = i32::try_from(pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    })
}

/// Quotes `s` for `sh` (QMP `exec:` migration URIs).
pub(crate) fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl QemuVm {
    /// Boots `image` and completes the agent handshake.
    pub async fn boot(image: &Image, cfg: &VmConfig) -> Result<QemuVm, VmError> {
        let qemu = need(&tools::QEMU)?;
        need(&tools::QEMU_IMG)?;
        let kvm = resolve_kvm(image, cfg).await?;
        let timeout = cfg.boot_timeout.unwrap_or(if kvm {
            Duration::from_secs(15)
        } else {
            Duration::from_secs(30)
        });
        let (run_dir, claim) = new_run_dir(cfg)?;
        let guard = DirGuard::new(&run_dir);
        let t0 = Instant::now();
        let mut last = (String::new(), String::new());
        let attempts = cfg.boot_attempts.max(1);
        for attempt in 1..=attempts {
            for f in ["overlay.qcow2", "agent.sock", "qmp.sock", "console.log"] {
                let _ = std::fs::remove_file(run_dir.join(f));
            }
            create_overlay(&image.rootfs(), &run_dir.join("overlay.qcow2")).await?;
            let ta = Instant::now();
            let passt = match cfg.network {
                true => net::start(&UserNet::on_this_host(), &run_dir).await?,
                false => None,
            };
            let mut child = spawn_qemu(
                &qemu,
                qemu_args(image, cfg, kvm, &run_dir, true),
                &run_dir,
                cfg.nice,
            )?;
            let transport = VirtioSerialSocket {
                path: run_dir.join("agent.sock"),
            };
            let outcome = tokio::select! {
                r = connect_agent(&transport, timeout) => match r {
                    // Another boot would meet the same agent: stop here.
                    Err(crate::transport::TransportError::Agent {
                        source: ClientError::Agent { kind: firebreak_agent::protocol::ErrorKind::Version, message },
                        ..
                    }) => {
                        let _ = child.start_kill();
                        let _ = child.wait().await;
                        return Err(VmError::AgentVersion { detail: message });
                    }
                    r => r.map_err(|e| e.to_string()),
                },
                st = child.wait() => Err(qemu_exited(st, &run_dir)),
            };
            match outcome {
                Ok((client, info)) => {
                    guard.disarm();
                    let stats = BootStats {
                        attempts: attempt,
                        total: t0.elapsed(),
                        last_attempt: ta.elapsed(),
                        kvm,
                        restored: false,
                        standby: false,
                    };
                    let mut vm = QemuVm {
                        child: Some(child),
                        run_dir,
                        _claim: Some(claim),
                        client: Arc::new(client),
                        info,
                        stats,
                        watchdog: None,
                        lease: None,
                        niced: cfg.nice.is_some(),
                        snapshot: None,
                        _net: passt,
                    };
                    if let Some(limit) = cfg.job_timeout {
                        vm.arm_job_timeout(limit);
                    }
                    return Ok(vm);
                }
                Err(reason) => {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                    last = (
                        format!("attempt {attempt}: {reason}"),
                        console_tail(&run_dir),
                    );
                }
            }
        }
        drop(guard);
        Err(VmError::BootFailed {
            attempts,
            reason: last.0,
            console: last.1,
        })
    }

    /// Starts a clone of `snap` (see [`crate::snapshot`]): a fresh
    /// copy-on-write overlay over the snapshot's disk (QEMU's temporary
    /// `snapshot=on` overlay, in the run directory), QEMU with `-incoming`
    /// from the snapshot's state file, the agent connected before the state
    /// loads; then the guest clock is set to now and fresh entropy is mixed
    /// in. `cfg` must be the configuration the snapshot was taken with
    /// (sockets and disk paths may differ; [`crate::snapshot::find`] checks).
    pub async fn restore(
        image: &Image,
        cfg: &VmConfig,
        snap: &crate::snapshot::Snapshot,
    ) -> Result<QemuVm, VmError> {
        let vm = Self::restore_unrefreshed(image, cfg, snap).await?;
        vm.refresh_clock_and_entropy().await?;
        Ok(vm)
    }

    /// [`restore`](Self::restore) without setting the clock and adding
    /// entropy: the caller must call [`refresh_guest`] before the guest runs
    /// anything that depends on them (the sandbox does it together with the
    /// job's first requests, saving a round trip).
    pub(crate) async fn restore_unrefreshed(
        image: &Image,
        cfg: &VmConfig,
        snap: &crate::snapshot::Snapshot,
    ) -> Result<QemuVm, VmError> {
        let t0 = Instant::now();
        let mut vm = Incoming::spawn(image, cfg, snap, false)
            .await?
            .load(cfg)
            .await?;
        vm.stats.total = t0.elapsed();
        vm.stats.last_attempt = vm.stats.total;
        Ok(vm)
    }

    /// Sets the guest clock to the host's and mixes 64 fresh random bytes
    /// into the guest's entropy pool (needed after every restore).
    pub async fn refresh_clock_and_entropy(&self) -> Result<(), VmError> {
        refresh_guest(&self.client).await
    }

    /// Brings a VM started with [`VmConfig::nice`] back to normal CPU
    /// priority (every QEMU thread; needs the privilege to lower niceness,
    /// which the warm pool only uses when it has it).
    pub async fn raise_priority(&mut self) {
        if !self.niced {
            return;
        }
        let Some(pid) = self.pid() else { return };
        let tids: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let Some(renice) = tools::find("renice") else {
            return;
        };
        let ok = Command::new(renice)
            .args(["-n", "0", "-p"])
            .args(&tids)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success());
        if ok {
            self.niced = false;
        }
    }

    /// Kills QEMU `limit` from now (the job's timeout), replacing any
    /// earlier deadline.
    pub fn arm_job_timeout(&mut self, limit: Duration) {
        if let Some(w) = self.watchdog.take() {
            w.abort();
        }
        if let Some(pid) = self.child.as_ref().and_then(|c| c.id()) {
            self.watchdog = Some(watchdog(limit, pid));
        }
    }

    /// Ties a memory-budget lease to this VM (released when it is dropped).
    pub(crate) fn set_lease(&mut self, lease: crate::pool::Lease) {
        self.lease = Some(lease);
    }

    /// QEMU's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// Drops the agent connection and opens a new one (the agent reopens its
    /// port when the host end goes away, e.g. around a snapshot). Clones of
    /// the old [`client`](Self::client) stop working.
    pub async fn reconnect(&mut self, timeout: Duration) -> Result<(), VmError> {
        self.client.close();
        let transport = VirtioSerialSocket {
            path: self.run_dir.join("agent.sock"),
        };
        let (client, info) =
            connect_agent(&transport, timeout)
                .await
                .map_err(|e| VmError::BootFailed {
                    attempts: 1,
                    reason: format!("reconnect: {e}"),
                    console: tail(&self.console(), 25),
                })?;
        self.client = Arc::new(client);
        self.info = info;
        Ok(())
    }

    /// The QMP socket (for `migrate`/snapshots, `quit`).
    pub fn qmp_socket(&self) -> PathBuf {
        self.run_dir.join("qmp.sock")
    }

    /// The agent client (shared; requests may run concurrently).
    pub fn client(&self) -> Arc<AgentClient> {
        self.client.clone()
    }

    /// What the agent said at the handshake (guest kernel release, …).
    pub fn agent_info(&self) -> &AgentInfo {
        &self.info
    }

    /// How the boot went.
    pub fn boot_stats(&self) -> BootStats {
        self.stats
    }

    /// The snapshot this VM was restored from (`None` when it was booted).
    pub fn snapshot(&self) -> Option<&crate::snapshot::Snapshot> {
        self.snapshot.as_ref()
    }

    /// The VM's run directory (console.log, qemu.log, sockets, overlay).
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The guest console so far.
    pub fn console(&self) -> String {
        std::fs::read_to_string(self.run_dir.join("console.log")).unwrap_or_default()
    }

    /// True while QEMU runs.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Waits for QEMU to exit on its own (e.g. after the job timeout).
    pub async fn wait_exit(&mut self, limit: Duration) -> bool {
        match &mut self.child {
            Some(c) => tokio::time::timeout(limit, c.wait()).await.is_ok(),
            None => true,
        }
    }

    /// Asks the guest to power off, waits up to `grace`, then kills QEMU.
    /// Removes the run directory. Idempotent.
    pub async fn shutdown(&mut self, grace: Duration) {
        if self.is_running() {
            let _ = tokio::time::timeout(grace, self.client.shutdown()).await;
            let _ = self.wait_exit(grace).await;
        }
        self.kill().await;
    }

    /// Kills QEMU and removes the run directory. Idempotent.
    pub async fn kill(&mut self) {
        if let Some(w) = self.watchdog.take() {
            w.abort();
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

/// A QEMU process started for a clone of a snapshot and waiting for its
/// state (`-incoming defer`): agent socket and QMP connected, migration
/// capability set. [`Incoming::load`] turns it into a running [`QemuVm`].
/// Starting QEMU and initialising its machine is most of a restore's
/// first ~0.1 s, so the provider keeps one ready, state loaded and paused
/// ([`Incoming::preload`]), for the next job (see [`VmConfig::standby`]).
/// Dropping it kills the process and removes its run directory.
pub(crate) struct Incoming {
    child: Option<Child>,
    run_dir: PathBuf,
    claim: Option<Claim>,
    transport: VirtioSerialSocket,
    stream: Option<(crate::transport::BoxRead, crate::transport::BoxWrite)>,
    /// Set for snapshots whose RAM is a file (the stream is loaded over
    /// QMP); older ones read theirs from the command line.
    qmp: Option<Qmp>,
    state_uri: String,
    kvm: bool,
    snap: crate::snapshot::Snapshot,
    nice: Option<i32>,
    spawned: Instant,
    /// The state is loaded and the VM paused ([`Incoming::preload`]): a
    /// provider's standby.
    loaded: bool,
    /// passt, for a VM with networking (see [`UserNet`]).
    net: Option<net::Passt>,
}

impl Incoming {
    /// Starts QEMU for a clone of `snap` and waits until it is ready to
    /// load the state. `paused`: the VM stays paused once loaded (`-S`;
    /// for [`Incoming::preload`]).
    pub(crate) async fn spawn(
        image: &Image,
        cfg: &VmConfig,
        snap: &crate::snapshot::Snapshot,
        paused: bool,
    ) -> Result<Incoming, VmError> {
        let qemu = need(&tools::QEMU)?;
        need(&tools::QEMU_IMG)?;
        let kvm = snap.meta.kvm;
        let timeout = restore_timeout(cfg);
        let (run_dir, claim) = new_run_dir(cfg)?;
        let guard = DirGuard::new(&run_dir);
        // The clone's copy-on-write layer over the snapshot's disk: QEMU's
        // own temporary overlay (`snapshot=on`), created in-process (no
        // `qemu-img` run) in the run directory (TMPDIR), so it goes with it.
        let drive = format!(
            "file={},if=none,id=root,format=qcow2,cache=unsafe,discard=unmap,werror=report,rerror=report,snapshot=on",
            snap.disk().to_string_lossy()
        );
        // Guest RAM: a private copy-on-write mapping of the snapshot's RAM
        // file (pages come from the host's page cache as the guest touches
        // them, shared by all clones); the migration stream then holds only
        // device state. Older snapshots carry RAM in the stream.
        let ram_file = snap.ram_file();
        let ram = match &ram_file {
            Some(f) => RamBacking::Private(f),
            None => RamBacking::Anonymous,
        };
        let mut args = qemu_args_with_drive(image, cfg, kvm, &run_dir, &drive, ram, false);
        let state_uri = format!("exec:cat {}", sh_quote(&snap.state().to_string_lossy()));
        if paused {
            args.push("-S".into());
        }
        args.push("-incoming".into());
        if ram_file.is_some() {
            // The x-ignore-shared capability must be set before the stream
            // is read, which only QMP can do on QEMU 7.2.
            args.push("defer".into());
        } else {
            args.push(state_uri.clone().into());
        }
        let spawned = Instant::now();
        let passt = match cfg.network {
            true => net::start(&UserNet::on_this_host(), &run_dir).await?,
            false => None,
        };
        let child = spawn_qemu_in(&qemu, args, &run_dir, &[("TMPDIR", &run_dir)], cfg.nice)?;
        guard.disarm();
        let mut me = Incoming {
            child: Some(child),
            transport: VirtioSerialSocket {
                path: run_dir.join("agent.sock"),
            },
            run_dir,
            claim: Some(claim),
            stream: None,
            qmp: None,
            state_uri,
            kvm,
            snap: snap.clone(),
            nice: cfg.nice,
            spawned,
            loaded: false,
            net: passt,
        };
        let deferred = ram_file.is_some();
        let qmp_sock = me.run_dir.join("qmp.sock");
        let transport = me.transport.clone();
        // The agent socket is connected before the state loads (the guest's
        // port then sees a host end from its first instruction).
        let ready = async {
            let stream = connect_stream(&transport, timeout)
                .await
                .map_err(|e| e.to_string())?;
            if !deferred {
                return Ok((stream, None));
            }
            let mut qmp = Qmp::connect(&qmp_sock, timeout)
                .await
                .map_err(|e| e.to_string())?;
            qmp.execute(
                "migrate-set-capabilities",
                Some(serde_json::json!({ "capabilities": [
                    { "capability": "x-ignore-shared", "state": true }
                ] })),
            )
            .await
            .map_err(|e| e.to_string())?;
            // QEMU accepts our connection in its main loop, which also
            // runs between chunks of the incoming stream: an accept in
            // the middle of loading would queue a "host connected"
            // message on a half-loaded virtio-serial device. Load only
            // once QEMU shows the agent socket connected.
            wait_chardev_connected(&mut qmp, "agent", timeout)
                .await
                .map_err(|e| e.to_string())?;
            Ok((stream, Some(qmp)))
        };
        match me.race_exit(ready).await {
            Ok((stream, qmp)) => {
                me.stream = Some(stream);
                me.qmp = qmp;
                Ok(me)
            }
            Err(reason) => Err(me.fail(reason).await),
        }
    }

    /// Whether QEMU is still waiting (a spare may have died meanwhile).
    pub(crate) fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Whether it restores `snap` as a VM started with `cfg` would be.
    pub(crate) fn serves(&self, snap: &crate::snapshot::Snapshot, cfg: &VmConfig) -> bool {
        self.snap == *snap && self.nice == cfg.nice
    }

    /// Loads the snapshot's state ahead of a job, leaving the VM paused
    /// (spawned with `paused`; RAM-file snapshots only): a paused guest
    /// runs nothing and its clock stands still, and [`Incoming::load`]
    /// then only resumes it. Loading touches device state, not the
    /// guest's RAM.
    pub(crate) async fn preload(&mut self, cfg: &VmConfig) -> Result<(), VmError> {
        let timeout = restore_timeout(cfg);
        let uri = self.state_uri.clone();
        let Some(mut qmp) = self.qmp.take() else {
            return Err(VmError::Snapshot(
                "only snapshots with a RAM file load ahead".into(),
            ));
        };
        let work = async {
            qmp.execute("migrate-incoming", Some(serde_json::json!({ "uri": uri })))
                .await
                .map_err(|e| e.to_string())?;
            let start = Instant::now();
            loop {
                let st = qmp
                    .execute("query-status", None)
                    .await
                    .map_err(|e| e.to_string())?;
                match st["status"].as_str() {
                    Some("paused") => return Ok(()),
                    Some("inmigrate") if start.elapsed() < timeout => {
                        tokio::time::sleep(Duration::from_millis(5)).await
                    }
                    other => return Err(format!("after loading, QEMU is {other:?}")),
                }
            }
        };
        let res = self.race_exit(work).await;
        self.qmp = Some(qmp);
        match res {
            Ok(()) => {
                self.loaded = true;
                Ok(())
            }
            Err(reason) => Err(VmError::RestoreFailed {
                reason,
                console: String::new(),
            }),
        }
    }

    /// Loads the snapshot's state (or resumes one [`preload`](Self::preload)ed)
    /// and waits for the agent's hello.
    pub(crate) async fn load(mut self, cfg: &VmConfig) -> Result<QemuVm, VmError> {
        let t0 = Instant::now();
        let timeout = restore_timeout(cfg);
        let Some((r, w)) = self.stream.take() else {
            return Err(self.fail("the agent socket is not connected".into()).await);
        };
        let mut qmp = self.qmp.take();
        let uri = self.state_uri.clone();
        let transport = self.transport.clone();
        let loaded = self.loaded;
        let start = async {
            if let Some(qmp) = qmp.as_mut() {
                let (command, arguments) = if loaded {
                    ("cont", None)
                } else {
                    ("migrate-incoming", Some(serde_json::json!({ "uri": uri })))
                };
                qmp.execute(command, arguments)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            handshake(&transport, r, w, timeout)
                .await
                .map_err(|e| e.to_string())
        };
        let (client, info) = match self.race_exit(start).await {
            Ok(ok) => ok,
            Err(reason) => return Err(self.fail(reason).await),
        };
        let t_hello = t0.elapsed();
        let mut vm = QemuVm {
            child: self.child.take(),
            run_dir: std::mem::take(&mut self.run_dir),
            _claim: self.claim.take(),
            client: Arc::new(client),
            info,
            stats: BootStats {
                attempts: 1,
                total: t0.elapsed(),
                last_attempt: t0.elapsed(),
                kvm: self.kvm,
                restored: true,
                standby: self.loaded,
            },
            watchdog: None,
            lease: None,
            niced: self.nice.is_some(),
            snapshot: Some(self.snap.clone()),
            _net: self.net.take(),
        };
        // The guest's clock stopped at snapshot time and every clone starts
        // with the same entropy pool: the caller refreshes both.
        if std::env::var_os("FIREBREAK_TRACE_RESTORE").is_some() {
            eprintln!(
                "restore: QEMU spawned {:?} before the load, hello at +{t_hello:?}",
                t0.duration_since(self.spawned),
            );
        }
        if let Some(limit) = cfg.job_timeout {
            vm.arm_job_timeout(limit);
        }
        Ok(vm)
    }

    /// Runs `work` unless QEMU exits first (then: why, from its log).
    async fn race_exit<T>(
        &mut self,
        work: impl std::future::Future<Output = Result<T, String>>,
    ) -> Result<T, String> {
        let Some(child) = self.child.as_mut() else {
            return Err("QEMU is gone".into());
        };
        tokio::select! {
            r = work => r,
            st = child.wait() => Err(qemu_exited(st, &self.run_dir)),
        }
    }

    /// Kills QEMU and describes the failure with the guest console's tail.
    async fn fail(mut self, reason: String) -> VmError {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
        VmError::RestoreFailed {
            reason,
            console: console_tail(&self.run_dir),
        }
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.start_kill();
        }
        if !self.run_dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.run_dir);
        }
    }
}

impl Drop for QemuVm {
    fn drop(&mut self) {
        if let Some(w) = self.watchdog.take() {
            w.abort();
        }
        if let Some(c) = self.child.as_mut() {
            let _ = c.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

/// Cold-boot timing for `bench/sandbox`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ColdBoot {
    /// QEMU spawn (first attempt) → agent hello answered.
    pub to_agent_ms: f64,
    /// QEMU spawn → first byte of output from `echo` run in the guest.
    pub to_first_output_ms: f64,
    /// Boot attempts needed.
    pub attempts: u32,
    /// KVM or TCG.
    pub kvm: bool,
}

/// Boots `image`, runs `echo ready` and measures cold boot → first output
/// byte; then shuts the VM down.
pub async fn bench_cold_boot(image: &Image, cfg: &VmConfig) -> Result<ColdBoot, VmError> {
    let t0 = Instant::now();
    let mut vm = QemuVm::boot(image, cfg).await?;
    let to_agent = t0.elapsed();
    let client = vm.client();
    let spec = firebreak_agent::ExecSpec::new(["/bin/echo", "ready"]);
    let mut h = client.exec(spec).await?;
    let first = loop {
        match h.next().await? {
            firebreak_agent::ExecEvent::Output(_, b) if !b.is_empty() => break t0.elapsed(),
            firebreak_agent::ExecEvent::Output(..) => {}
            firebreak_agent::ExecEvent::Exited(_) => break t0.elapsed(),
        }
    };
    let stats = vm.boot_stats();
    vm.shutdown(Duration::from_secs(2)).await;
    Ok(ColdBoot {
        to_agent_ms: to_agent.as_secs_f64() * 1e3,
        to_first_output_ms: first.as_secs_f64() * 1e3,
        attempts: stats.attempts,
        kvm: stats.kvm,
    })
}
