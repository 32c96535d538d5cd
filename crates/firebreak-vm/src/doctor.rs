//! `firebreak doctor`: which microVM sandboxes work on this host, and why not.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::firecracker::{JAILER_BIN_ENV, JAILER_USER_ENV};
use crate::image::ImageStore;
use crate::qemu::{kvm_is_pvm, probe_kvm_uncached};
use crate::tools::{self, Tool};

/// One fact about the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// Whether it is fine.
    pub ok: bool,
    /// What was found.
    pub detail: String,
}

/// Whether a sandbox backend works here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackendStatus {
    /// `qemu`, `qemu (KVM)`, `firecracker`, `image build`.
    pub name: String,
    /// It works.
    pub works: bool,
    /// Why not, or how it is limited.
    pub notes: Vec<String>,
}

/// Everything [`doctor`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DoctorReport {
    /// Individual checks.
    pub checks: Vec<Check>,
    /// Per-backend verdicts.
    pub backends: Vec<BackendStatus>,
}

/// Options for [`doctor`].
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    /// Image cache to inspect.
    pub store: ImageStore,
    /// Boot a kernel under KVM to see whether it really works (takes up to
    /// `kvm_probe_timeout` when it does not).
    pub probe_kvm: bool,
    /// How long the KVM probe waits for the guest kernel.
    pub kvm_probe_timeout: Duration,
    /// The image runs are told to boot (`$FIREBREAK_IMAGE`: a hash or a prefix of one);
    /// `None`: the default one.
    pub wanted_image: Option<String>,
}

impl Default for DoctorOptions {
    fn default() -> Self {
        DoctorOptions {
            store: ImageStore::open_default(),
            probe_kvm: true,
            kvm_probe_timeout: Duration::from_secs(8),
            wanted_image: None,
        }
    }
}

fn tool_check(t: &Tool) -> Check {
    match tools::find(t.name) {
        Some(p) => Check {
            name: t.name.into(),
            ok: true,
            detail: p.display().to_string(),
        },
        None => Check {
            name: t.name.into(),
            ok: false,
            detail: format!("missing: apt-get install {}", t.package),
        },
    }
}

/// QEMU's version, judged against what firebreak is tested with (bookworm's 7.2): under
/// QEMU 10.0's software emulation Debian's cloud kernel failed most cold boots here.
fn qemu_version_check() -> Option<Check> {
    let qemu = tools::find(tools::QEMU.name)?;
    let out = std::process::Command::new(&qemu)
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = qemu_version(&text)?;
    let major = version.split('.').next()?.parse::<u32>().ok()?;
    Some(Check {
        name: "QEMU version".into(),
        ok: major < 10,
        detail: if major < 10 {
            format!("{version} (firebreak is tested with Debian bookworm's 7.2)")
        } else {
            format!(
                "{version}: under QEMU 10's software emulation (TCG) Debian's kernel failed most cold \
                 boots here; firebreak is tested with bookworm's 7.2 (apt-get install \
                 qemu-system-x86/bookworm); KVM hosts are not affected"
            )
        },
    })
}

/// Where microVMs' run directories (their copy-on-write disks among them) go, `dir`, and
/// whether it keeps what jobs write in memory: on a tmpfs a job's disk writes would take host
/// RAM outside the memory budget.
fn run_dir_check(dir: &Path) -> Check {
    let tmpfs = nix::sys::statfs::statfs(dir)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
    Check {
        name: "VM run directories".into(),
        ok: !tmpfs,
        detail: if tmpfs {
            format!(
                "{} is a tmpfs: what jobs write to their VM's disk would take host memory; point TMPDIR at a folder on disk",
                dir.display()
            )
        } else {
            format!(
                "{} (job disk overlays go here; TMPDIR moves them)",
                dir.display()
            )
        },
    }
}

/// `7.2.22` from `QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)`.
fn qemu_version(text: &str) -> Option<&str> {
    let rest = text.split("QEMU emulator version ").nth(1)?;
    rest.split_whitespace().next()
}

fn cpu_has_virt() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|c| {
            c.lines().any(|l| {
                l.starts_with("flags") && l.split_whitespace().any(|f| f == "vmx" || f == "svm")
            })
        })
        .unwrap_or(false)
}

/// A kernel to probe KVM with: the default image's ([`ImageStore::latest`]), else the host's.
fn probe_kernel(store: &ImageStore) -> Option<PathBuf> {
    if let Ok(img) = store.latest() {
        return Some(img.kernel());
    }
    let mut k: Vec<PathBuf> = std::fs::read_dir("/boot")
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .collect();
    k.sort();
    k.pop()
}

/// Inspects the host. Takes up to `kvm_probe_timeout` (a probe boot) when
/// KVM is present but broken.
pub async fn doctor(opts: &DoctorOptions) -> DoctorReport {
    let mut checks = Vec::new();
    let qemu_ok = tools::QEMU_TOOLS
        .iter()
        .all(|t| tools::find(t.name).is_some());
    for t in tools::QEMU_TOOLS.iter().chain(tools::IMAGE_TOOLS) {
        checks.push(tool_check(t));
    }
    if let Some(bb) = tools::find(tools::BUSYBOX.name) {
        if crate::image::is_static_elf(&bb) != Some(true) {
            checks.push(Check {
                name: "busybox static".into(),
                ok: false,
                detail: "busybox is dynamically linked: apt-get install busybox-static".into(),
            });
        }
    }
    if let Some(c) = qemu_version_check() {
        checks.push(c);
    }
    let root = nix::unistd::Uid::effective().is_root();
    checks.push(Check {
        name: "root".into(),
        ok: root,
        detail: if root {
            "running as root".into()
        } else {
            "image builds need root (debootstrap)".into()
        },
    });

    checks.push(run_dir_check(&std::env::temp_dir()));

    // KVM.
    let kvm_dev = Path::new("/dev/kvm");
    let kvm_open = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(kvm_dev);
    let pvm = kvm_is_pvm();
    let virt = cpu_has_virt();
    checks.push(Check {
        name: "/dev/kvm".into(),
        ok: kvm_open.is_ok(),
        detail: match &kvm_open {
            Ok(_) => "present and writable".into(),
            Err(e) => e.to_string(),
        },
    });
    checks.push(Check {
        name: "CPU virtualisation (vmx/svm)".into(),
        ok: virt,
        detail: if virt {
            "exposed".into()
        } else {
            "not exposed to this host".into()
        },
    });
    if pvm {
        checks.push(Check {
            name: "KVM flavour".into(),
            ok: false,
            detail:
                "kvm_pvm is loaded: KVM is PVM-only, ordinary guest kernels do not run under it"
                    .into(),
        });
    }
    let kvm_works = if kvm_open.is_err() || !qemu_ok {
        None
    } else if !opts.probe_kvm {
        checks.push(Check {
            name: "KVM probe boot".into(),
            ok: true,
            detail: "skipped".into(),
        });
        None
    } else {
        match probe_kernel(&opts.store) {
            Some(k) => {
                let p = probe_kvm_uncached(k.clone(), opts.kvm_probe_timeout).await;
                checks.push(Check {
                    name: "KVM probe boot".into(),
                    ok: p.usable,
                    detail: format!("{} (kernel {})", p.detail, k.display()),
                });
                Some(p.usable)
            }
            None => {
                checks.push(Check {
                    name: "KVM probe boot".into(),
                    ok: false,
                    detail: "no kernel to probe with (build an image first)".into(),
                });
                None
            }
        }
    };
    let vhost_vsock = Path::new("/dev/vhost-vsock").exists();
    checks.push(Check {
        name: "/dev/vhost-vsock".into(),
        ok: true,
        detail: if vhost_vsock {
            "present (unused: QEMU talks to the agent over virtio-serial)".into()
        } else {
            "absent: fine, QEMU talks to the agent over virtio-serial".into()
        },
    });

    // Images.
    let images = opts.store.list().unwrap_or_default();
    // The image a run boots, or why there is none to boot.
    let chosen = opts
        .store
        .choose(opts.wanted_image.as_deref())
        .map_err(|e| e.to_string());
    checks.push(Check {
        name: "guest image".into(),
        ok: chosen.is_ok(),
        detail: match &chosen {
            Ok(i) => format!(
                "{} image{}; runs boot {} (kernel {}, {}){}",
                images.len(),
                if images.len() == 1 { "" } else { "s" },
                i.manifest.hash,
                i.manifest.kernel_release,
                i.manifest.flavour(),
                if opts.wanted_image.is_some() {
                    ", chosen by $FIREBREAK_IMAGE"
                } else {
                    ""
                }
            ),
            Err(e) => e.clone(),
        },
    });

    // The minimal kernel (`image build --kernel minimal`) compiles Debian's kernel source.
    checks.push(Check {
        name: "minimal kernel build".into(),
        ok: true,
        detail: match crate::kernel::check_prerequisites() {
            Ok(_) => format!(
                "{} and its build tools present: `firebreak image build --kernel minimal` can compile it",
                crate::kernel::SOURCE_PACKAGE
            ),
            Err(e) => format!("optional, unavailable: {e}"),
        },
    });

    // Verdicts.
    let mut backends = Vec::new();
    let image_tools_ok = tools::IMAGE_TOOLS
        .iter()
        .all(|t| tools::find(t.name).is_some());
    let mut notes = Vec::new();
    if !image_tools_ok {
        notes.push("missing tools (see checks)".into());
    }
    if !root {
        notes.push(
            "needs root: `sudo firebreak image build` builds into your own cache and gives you the image"
                .into(),
        );
    }
    // The agent `image build` would install when not told which (`--agent`).
    let agent = crate::image::locate_agent();
    match &agent {
        Ok(p) => notes.push(format!("guest agent: {}", p.display())),
        Err(e) => notes.push(e.to_string()),
    }
    backends.push(BackendStatus {
        name: "image build".into(),
        works: image_tools_ok && root && agent.is_ok(),
        notes,
    });

    let mut qnotes = Vec::new();
    if !qemu_ok {
        qnotes.push("QEMU is not installed: apt-get install qemu-system-x86 qemu-utils".into());
    }
    if let Err(e) = &chosen {
        qnotes.push(e.clone());
    }
    // What the KVM facts mean for guests, and whether they are known to run under TCG.
    let (accel, tcg) = match kvm_works {
        Some(true) => ("guests run under KVM", false),
        _ if pvm => (
            "KVM is PVM-only: guests will run under TCG (boots take seconds)",
            true,
        ),
        Some(false) => (
            "KVM does not run guests here: guests will run under TCG (boots take seconds)",
            true,
        ),
        None if kvm_open.is_err() => (
            "no usable /dev/kvm: guests will run under TCG (boots take seconds)",
            true,
        ),
        None => (
            "KVM not probed: guests use KVM only if the first boot's probe succeeds",
            false,
        ),
    };
    qnotes.push(accel.into());
    if tcg {
        // What a job sees differently under emulation (see `qemu/args.rs`).
        qnotes.push(
            "under TCG guests run without address-space randomisation (new processes would otherwise be translated anew)"
                .into(),
        );
    }
    qnotes.push(match crate::qemu::UserNet::on_this_host() {
        crate::qemu::UserNet::Passt(bin) => format!(
            "jobs that opt into the network reach out through passt ({}), without the host's loopback",
            bin.display()
        ),
        crate::qemu::UserNet::Slirp => format!(
            "jobs that opt into the network use QEMU's slirp, which lets them reach services on the host's loopback through 10.0.2.2: {}",
            crate::qemu::UserNet::slirp_remedy()
        ),
    });
    if let Some(v) = crate::qemu::UserNet::unknown_setting() {
        qnotes.push(format!(
            "FIREBREAK_QEMU_NET={v} is ignored: it takes `passt` or `slirp`"
        ));
    }
    backends.push(BackendStatus {
        name: "qemu".into(),
        works: qemu_ok && chosen.is_ok(),
        notes: qnotes,
    });

    let mut fnotes = Vec::new();
    let fc = crate::firecracker::find_firecracker();
    let fc_usable = match &fc {
        None => {
            fnotes.push("firecracker binary not installed".into());
            false
        }
        Some(bin) => match crate::firecracker::firecracker_binary_problem(bin) {
            Some(why) => {
                fnotes.push(why);
                false
            }
            None => true,
        },
    };
    match kvm_works {
        Some(true) => {}
        // PVM-only KVM is known without the probe boot: Firecracker cannot use it.
        _ if pvm => fnotes.push("needs hardware KVM; this host's KVM is PVM-only".into()),
        Some(false) => fnotes.push("needs a working KVM".into()),
        None => fnotes.push(
            "needs a working KVM, which was not probed (--no-kvm-probe): whether it works here is unknown"
                .into(),
        ),
    }
    if let Err(e) = &chosen {
        fnotes.push(e.clone());
    }
    fnotes.push(
        "used by `firebreak run --sandbox firecracker`; binary from $FIREBREAK_FIRECRACKER_BIN or PATH; not boot-tested by doctor"
            .into(),
    );
    fnotes.push(match std::env::var_os(JAILER_BIN_ENV) {
        Some(j) if Path::new(&j).is_file() => format!(
            "jailer: {} (${JAILER_BIN_ENV}); each VM chrooted, in its own cgroup, as ${JAILER_USER_ENV}",
            Path::new(&j).display()
        ),
        Some(j) => format!(
            "jailer: ${JAILER_BIN_ENV} names {}, which is not a file",
            Path::new(&j).display()
        ),
        None => format!(
            "jailer: not configured (`--jailer` or ${JAILER_BIN_ENV}); Firecracker would run unjailed, as this user"
        ),
    });
    fnotes.push(match crate::firecracker::host_jailer_cgroup_version() {
        Some(2) => "jailer: per-VM limits through cgroup v2".into(),
        Some(v) => format!("jailer: per-VM limits through cgroup v{v} (the cpu, memory and pids controllers are v{v} hierarchies here)"),
        None => "jailer: neither cgroup v2 nor v1 offers the cpu, memory and pids controllers here: the jailer could not apply per-VM limits".into(),
    });
    fnotes.push(jailer_netns_note());
    backends.push(BackendStatus {
        name: "firecracker".into(),
        // What it needs is here; a boot would prove more, which doctor does not try.
        works: fc_usable && kvm_works == Some(true) && chosen.is_ok(),
        notes: fnotes,
    });

    DoctorReport { checks, backends }
}

/// Whether jailed VMs can get a network namespace each (`--jailer-netns own`): one is
/// made in a directory of this process under the temporary directory, and removed.
fn jailer_netns_note() -> String {
    if !nix::unistd::geteuid().is_root() {
        return "jailer: a network namespace per VM needs root, as the jailer does".into();
    }
    let dir = std::env::temp_dir().join(format!("firebreak-doctor-netns-{}", std::process::id()));
    let made = crate::firecracker::netns::VmNetns::create(&dir, "fbvm-doctor")
        .map(drop)
        .map_err(|e| e.to_string());
    let _ = std::fs::remove_dir(&dir);
    match made {
        Ok(()) => "jailer: each VM without network gets an empty network namespace of its own".into(),
        Err(e) => format!(
            "jailer: cannot make a network namespace per VM here ({e}); `--jailer-netns host` keeps VMs in the host's"
        ),
    }
}

impl fmt::Display for DoctorReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Sandboxes:")?;
        for b in &self.backends {
            writeln!(
                f,
                "  {:<12} {}",
                b.name,
                if b.works { "works" } else { "unavailable" }
            )?;
            for n in &b.notes {
                writeln!(f, "  {:<12}   - {n}", "")?;
            }
        }
        writeln!(f, "Checks:")?;
        for c in &self.checks {
            writeln!(
                f,
                "  [{}] {}: {}",
                if c.ok { "ok" } else { "!!" },
                c.name,
                c.detail
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tmpfs_for_vm_run_directories_is_flagged() {
        // Debian mounts a tmpfs on /dev/shm; the root file system is on disk.
        let shm = run_dir_check(Path::new("/dev/shm"));
        assert!(!shm.ok && shm.detail.contains("is a tmpfs"), "{shm:?}");
        let here = run_dir_check(Path::new("/"));
        assert!(here.ok, "{here:?}");
    }

    #[test]
    fn reads_qemus_version_line() {
        assert_eq!(
            qemu_version(
                "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright"
            ),
            Some("7.2.22")
        );
        assert_eq!(
            qemu_version("QEMU emulator version 10.0.2\n"),
            Some("10.0.2")
        );
        assert_eq!(qemu_version("something else"), None);
    }
}
