//! The QEMU backend: boot an image, connect its agent.
//!
//! Every VM boots the image's kernel and initramfs with its root disk as a
//! fresh qcow2 overlay over the image's raw `rootfs.ext4` (`qemu-img create -f
//! qcow2 -b base -F raw`), so the image is never written and a VM starts in
//! milliseconds of disk work. The agent is reached through a virtio-serial
//! port on a Unix-socket chardev ([`VirtioSerialSocket`]). No network unless
//! asked (then `-netdev user`, addresses set by the agent from
//! `firebreak.net=user` on the kernel command line).
//!
//! Acceleration: KVM only when a probe boot proves it works ([`probe_kvm`]),
//! else TCG. The machine is `q35` by default (`microvm` hangs at clock
//! calibration under TCG in many boots: 4 of 9 here, none of ~30 `q35`
//! boots); every boot has a timeout and is retried on a fresh overlay.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use firebreak_agent::{AgentClient, AgentInfo, ClientError};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::image::Image;
use crate::tools;
use crate::transport::{connect_agent, VirtioSerialSocket};

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
    /// PC with PCI (virtio-*-pci devices). Reliable under TCG.
    #[default]
    Q35,
    /// Minimal machine with virtio-mmio devices. Under TCG it hangs at
    /// clock calibration in a large share of boots (here: 4 of 9), each
    /// costing a boot timeout; use it with KVM only.
    Microvm,
}

/// How to run one VM.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Guest memory (`-m`), MiB.
    pub memory_mib: u64,
    /// Give the guest user-mode networking (NAT, outbound only).
    pub network: bool,
    /// Accelerator choice.
    pub accel: Accel,
    /// Machine type.
    pub machine: Machine,
    /// Time from QEMU start to agent handshake before a boot counts as hung;
    /// `None`: 15 s with KVM, 30 s with TCG (a normal TCG boot takes 5–10 s
    /// on a loaded 2-core host; a `microvm` hang never recovers).
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
    /// `-cpu` model; `None`: `host` under KVM, `max` under TCG (`qemu64`
    /// boots ~10% faster under TCG but lacks x86-64-v2 instructions).
    pub cpu_model: Option<String>,
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            vcpus: 2,
            memory_mib: 2048,
            network: false,
            accel: Accel::Auto,
            machine: Machine::Q35,
            boot_timeout: None,
            boot_attempts: 3,
            job_timeout: None,
            run_parent: None,
            extra_cmdline: Vec::new(),
            cpu_model: None,
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
}

/// A running VM with a connected agent. Dropping it kills QEMU and removes
/// its run directory.
pub struct QemuVm {
    child: Option<Child>,
    run_dir: PathBuf,
    client: Arc<AgentClient>,
    info: AgentInfo,
    stats: BootStats,
    watchdog: Option<JoinHandle<()>>,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// Result of [`probe_kvm`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvmProbe {
    /// A guest kernel ran under KVM.
    pub usable: bool,
    /// Why not, or what was seen.
    pub detail: String,
}

/// Whether this host's KVM module is PVM (a paravirtual KVM that only runs
/// PVM-enabled guest kernels).
pub fn kvm_is_pvm() -> bool {
    Path::new("/sys/module/kvm_pvm").exists()
}

static KVM_PROBE: tokio::sync::OnceCell<KvmProbe> = tokio::sync::OnceCell::const_new();

/// Decides whether KVM really runs a guest here: boots `kernel` under KVM
/// with no root disk and waits for the kernel's banner on the serial console
/// (a working KVM prints it well under a second). The answer is cached for
/// the process.
pub async fn probe_kvm(kernel: &Path) -> KvmProbe {
    KVM_PROBE
        .get_or_init(|| probe_kvm_uncached(kernel.to_path_buf(), Duration::from_secs(8)))
        .await
        .clone()
}

/// [`probe_kvm`] without the cache.
pub async fn probe_kvm_uncached(kernel: PathBuf, timeout: Duration) -> KvmProbe {
    let no = |detail: String| KvmProbe {
        usable: false,
        detail,
    };
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return no(format!("/dev/kvm: {e}"));
    }
    let Some(qemu) = tools::find(tools::QEMU.name) else {
        return no("qemu-system-x86_64 not installed".into());
    };
    let mut cmd = Command::new(qemu);
    cmd.args([
        "-accel",
        "kvm",
        "-M",
        "q35",
        "-cpu",
        "host",
        "-m",
        "128",
        "-nodefaults",
        "-no-user-config",
    ])
    .args([
        "-display",
        "none",
        "-no-reboot",
        "-serial",
        "stdio",
        "-kernel",
    ])
    .arg(&kernel)
    .args(["-append", "console=ttyS0 panic=-1"])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return no(format!("cannot start qemu: {e}")),
    };
    let Some(mut out) = child.stdout.take() else {
        return no("no stdout".into());
    };
    let mut seen = Vec::new();
    let watch = async {
        let mut buf = [0u8; 4096];
        loop {
            match out.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => {
                    seen.extend_from_slice(&buf[..n]);
                    if seen.windows(13).any(|w| w == b"Linux version") {
                        return true;
                    }
                }
            }
        }
    };
    let res = tokio::time::timeout(timeout, watch).await;
    let _ = child.start_kill();
    let stderr = match child.stderr.take() {
        Some(mut e) => {
            let mut s = String::new();
            let _ = tokio::time::timeout(Duration::from_secs(1), e.read_to_string(&mut s)).await;
            s
        }
        None => String::new(),
    };
    let _ = child.wait().await;
    let pvm = if kvm_is_pvm() {
        " (KVM is PVM-only: kvm_pvm is loaded)"
    } else {
        ""
    };
    match res {
        Ok(true) => KvmProbe {
            usable: true,
            detail: "a guest kernel booted under KVM".into(),
        },
        Ok(false) => no(format!(
            "QEMU with KVM exited before the guest kernel ran{pvm}: {}",
            stderr.trim()
        )),
        Err(_) => no(format!(
            "no guest kernel output under KVM within {timeout:?}{pvm}"
        )),
    }
}

fn tail(text: &str, lines: usize) -> String {
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Creates the copy-on-write overlay `overlay` over the raw `base`.
pub async fn create_overlay(base: &Path, overlay: &Path) -> Result<(), VmError> {
    let qemu_img = need(&tools::QEMU_IMG)?;
    let base = std::fs::canonicalize(base).map_err(io_err("resolve", base))?;
    let out = Command::new(qemu_img)
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
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

fn qemu_args(image: &Image, cfg: &VmConfig, kvm: bool, dir: &Path) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |s: &str| a.push(s.into());
    let (blk, ser, rng, net) = match cfg.machine {
        Machine::Q35 => (
            "virtio-blk-pci",
            "virtio-serial-pci",
            "virtio-rng-pci",
            "virtio-net-pci",
        ),
        Machine::Microvm => (
            "virtio-blk-device",
            "virtio-serial-device",
            "virtio-rng-device",
            "virtio-net-device",
        ),
    };
    let machine = match cfg.machine {
        Machine::Q35 => "q35".to_string(),
        Machine::Microvm => "microvm,isa-serial=on,rtc=on".to_string(),
    };
    push("-machine");
    push(&format!(
        "{machine},accel={}",
        if kvm { "kvm" } else { "tcg" }
    ));
    push("-cpu");
    push(
        cfg.cpu_model
            .as_deref()
            .unwrap_or(if kvm { "host" } else { "max" }),
    );
    push("-smp");
    push(&cfg.vcpus.max(1).to_string());
    push("-m");
    push(&format!("{}M", cfg.memory_mib.max(128)));
    for s in [
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ] {
        push(s);
    }
    // Quiet console, no self-tests or legacy devices: every instruction
    // counts under TCG. The guest is single-tenant and disposable, so
    // speculative-execution mitigations buy nothing.
    let mut cmdline = vec![
        "console=ttyS0",
        "quiet",
        "panic=-1",
        "rw",
        "mitigations=off",
        "cryptomgr.notests",
        "audit=0",
        "i8042.noaux",
        "i8042.nokbd",
        "i8042.nopnp",
        "8250.nr_uarts=1",
    ];
    if cfg.network {
        cmdline.push("firebreak.net=user");
    }
    let mut cmdline = cmdline.join(" ");
    for w in &cfg.extra_cmdline {
        cmdline.push(' ');
        cmdline.push_str(w);
    }
    let p = |name: &str| dir.join(name).to_string_lossy().into_owned();
    push("-kernel");
    a.push(image.kernel().into());
    a.push("-initrd".into());
    a.push(image.initramfs().into());
    let mut push = |s: &str| a.push(s.into());
    push("-append");
    push(&cmdline);
    push("-chardev");
    push(&format!("file,id=con,path={}", p("console.log")));
    push("-serial");
    push("chardev:con");
    push("-drive");
    push(&format!(
        "file={},if=none,id=root,format=qcow2,cache=unsafe,discard=unmap",
        p("overlay.qcow2")
    ));
    push("-device");
    push(&format!("{blk},drive=root"));
    push("-device");
    push(&format!("{ser},id=vser"));
    push("-chardev");
    push(&format!(
        "socket,id=agent,path={},server=on,wait=off",
        p("agent.sock")
    ));
    push("-device");
    push(&format!(
        "virtserialport,bus=vser.0,chardev=agent,name={}",
        firebreak_agent::protocol::VIRTIO_PORT_NAME
    ));
    push("-device");
    push(rng);
    if cfg.network {
        push("-netdev");
        push("user,id=net0");
        push("-device");
        push(&format!("{net},netdev=net0"));
    }
    push("-qmp");
    push(&format!("unix:{},server=on,wait=off", p("qmp.sock")));
    a
}

/// Removes `fbvm-<pid>-<n>` run directories left by processes that died
/// without cleaning up (their QEMU died with them: see `setpriv` below).
fn remove_stale_run_dirs(parent: &Path) {
    let Ok(rd) = std::fs::read_dir(parent) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("fbvm-") else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

impl QemuVm {
    /// Boots `image` and completes the agent handshake.
    pub async fn boot(image: &Image, cfg: &VmConfig) -> Result<QemuVm, VmError> {
        let qemu = need(&tools::QEMU)?;
        need(&tools::QEMU_IMG)?;
        let kvm = match cfg.accel {
            Accel::Tcg => false,
            Accel::Kvm => {
                let p = probe_kvm(&image.kernel()).await;
                if !p.usable {
                    return Err(VmError::KvmUnusable(p.detail));
                }
                true
            }
            Accel::Auto => probe_kvm(&image.kernel()).await.usable,
        };
        let timeout = cfg.boot_timeout.unwrap_or(if kvm {
            Duration::from_secs(15)
        } else {
            Duration::from_secs(30)
        });
        let parent = cfg.run_parent.clone().unwrap_or_else(std::env::temp_dir);
        remove_stale_run_dirs(&parent);
        let run_dir = parent.join(format!(
            "fbvm-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&run_dir).map_err(io_err("create", &run_dir))?;
        let t0 = Instant::now();
        let mut last = (String::new(), String::new());
        let attempts = cfg.boot_attempts.max(1);
        for attempt in 1..=attempts {
            for f in ["overlay.qcow2", "agent.sock", "qmp.sock", "console.log"] {
                let _ = std::fs::remove_file(run_dir.join(f));
            }
            create_overlay(&image.rootfs(), &run_dir.join("overlay.qcow2")).await?;
            let qemu_log = std::fs::File::create(run_dir.join("qemu.log"))
                .map_err(io_err("create", &run_dir))?;
            let ta = Instant::now();
            // `setpriv --pdeathsig KILL` (util-linux) makes the kernel kill
            // QEMU if we die without running destructors (SIGKILL, Ctrl-C),
            // so no VM outlives its runner.
            let mut cmd = match tools::find("setpriv") {
                Some(setpriv) => {
                    let mut c = Command::new(setpriv);
                    c.args(["--pdeathsig", "KILL", "--"]).arg(&qemu);
                    c
                }
                None => Command::new(&qemu),
            };
            let mut child = cmd
                .args(qemu_args(image, cfg, kvm, &run_dir))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(qemu_log))
                .kill_on_drop(true)
                .spawn()
                .map_err(io_err("start", &qemu))?;
            let transport = VirtioSerialSocket {
                path: run_dir.join("agent.sock"),
            };
            let outcome = tokio::select! {
                r = connect_agent(&transport, timeout) => r.map_err(|e| e.to_string()),
                st = child.wait() => Err(format!("QEMU exited ({}): {}",
                    st.map(|s| s.to_string()).unwrap_or_default(),
                    tail(&std::fs::read_to_string(run_dir.join("qemu.log")).unwrap_or_default(), 10))),
            };
            match outcome {
                Ok((client, info)) => {
                    let stats = BootStats {
                        attempts: attempt,
                        total: t0.elapsed(),
                        last_attempt: ta.elapsed(),
                        kvm,
                    };
                    let watchdog = match (cfg.job_timeout, child.id()) {
                        (Some(limit), Some(pid)) => Some(tokio::spawn(async move {
                            tokio::time::sleep(limit).await;
                            let _ = nix::sys::signal::kill(
                                nix::unistd::Pid::from_raw(pid as i32),
                                nix::sys::signal::Signal::SIGKILL,
                            );
                        })),
                        _ => None,
                    };
                    return Ok(QemuVm {
                        child: Some(child),
                        run_dir,
                        client: Arc::new(client),
                        info,
                        stats,
                        watchdog,
                    });
                }
                Err(reason) => {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                    let console =
                        std::fs::read_to_string(run_dir.join("console.log")).unwrap_or_default();
                    last = (format!("attempt {attempt}: {reason}"), tail(&console, 25));
                }
            }
        }
        let _ = std::fs::remove_dir_all(&run_dir);
        Err(VmError::BootFailed {
            attempts,
            reason: last.0,
            console: last.1,
        })
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
