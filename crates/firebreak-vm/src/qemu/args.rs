//! QEMU's command line for a firebreak VM: machine, CPU, memory (optionally a file), kernel,
//! initramfs and command line, root disk, the agent's virtio-serial port, QMP.

use std::ffi::OsString;
use std::path::Path;

use crate::image::Image;

use super::{Machine, VmConfig};

/// Where a VM's RAM lives when it is not anonymous memory.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RamBacking<'a> {
    /// Anonymous memory.
    Anonymous,
    /// This file, mapped shared: guest writes land in it.
    Shared(&'a Path),
    /// A private copy-on-write mapping of this file: the guest starts from
    /// its contents, its writes stay in this process.
    Private(&'a Path),
}

/// The host's TSC rate in kHz, measured once per process against the
/// monotonic clock over 20 ms (about 100 ppm; the guest's clock is set by
/// the agent at every job start, so a small rate error only drifts within a
/// job). `None` off x86-64.
fn host_tsc_khz() -> Option<u64> {
    static KHZ: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *KHZ.get_or_init(measure_tsc_khz)
}

#[cfg(target_arch = "x86_64")]
fn measure_tsc_khz() -> Option<u64> {
    use std::time::{Duration, Instant};
    // SAFETY: `rdtsc` reads a counter; it has no preconditions on x86-64.
    #[allow(unsafe_code)]
    let tsc = || unsafe { std::arch::x86_64::_rdtsc() };
    let (t0, c0) = (Instant::now(), tsc());
    std::thread::sleep(Duration::from_millis(20));
    let (c1, t1) = (tsc(), Instant::now());
    let nanos = t1.duration_since(t0).as_nanos();
    let khz = u128::from(c1.wrapping_sub(c0)) * 1_000_000 / nanos.max(1);
    // Anything outside 100 MHz..20 GHz is not a TSC worth trusting.
    u64::try_from(khz)
        .ok()
        .filter(|k| (100_000..20_000_000).contains(k))
}

#[cfg(not(target_arch = "x86_64"))]
fn measure_tsc_khz() -> Option<u64> {
    None
}

/// The CPU a TCG guest sees: everything QEMU emulates except the "fast
/// string" features. With ERMS/FSRM advertised, the guest kernel and libc
/// copy and clear memory with `rep movsb`/`rep stosb`, which TCG runs one
/// byte per loop iteration: reading 200 MB from `/dev/zero` took 0.9–1.0 s
/// with them and 0.2–0.3 s without.
const TCG_CPU: &str = "max,-erms,-fsrm";

/// QEMU's arguments for a VM of `cfg` on `image` with its files in `dir`.
/// With `cold_boot` the kernel command line also gets what only a booting
/// kernel reads (the TSC rate below); without it the arguments describe the
/// VM's shape: what a snapshot is keyed by and a restore must repeat.
pub(crate) fn qemu_args(
    image: &Image,
    cfg: &VmConfig,
    kvm: bool,
    dir: &Path,
    cold_boot: bool,
) -> Vec<OsString> {
    // An I/O error on the host (its disk full under the job's overlay) is the guest's error,
    // as on real hardware: QEMU's default would pause the VM, which then looks hung.
    let drive = format!(
        "file={},if=none,id=root,format=qcow2,cache=unsafe,discard=unmap,werror=report,rerror=report",
        dir.join("overlay.qcow2").to_string_lossy()
    );
    let ram = match &cfg.ram_file {
        Some(f) => RamBacking::Shared(f),
        None => RamBacking::Anonymous,
    };
    qemu_args_with_drive(image, cfg, kvm, dir, &drive, ram, cold_boot)
}

/// [`qemu_args`] with `drive` as the root `-drive` (id `root`) and guest RAM
/// in `ram`.
pub(crate) fn qemu_args_with_drive(
    image: &Image,
    cfg: &VmConfig,
    kvm: bool,
    dir: &Path,
    drive: &str,
    ram: RamBacking<'_>,
    cold_boot: bool,
) -> Vec<OsString> {
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
        // A kernel without ACPI (the minimal one) finds microvm's virtio devices on its
        // command line, which QEMU writes there only when the machine's ACPI is off.
        Machine::Microvm if !image.manifest.kernel.has_acpi() => {
            "microvm,isa-serial=on,rtc=on,acpi=off".to_string()
        }
        Machine::Microvm => "microvm,isa-serial=on,rtc=on".to_string(),
    };
    let ram_object = match ram {
        RamBacking::Anonymous => None,
        RamBacking::Shared(f) => Some((f, "on")),
        RamBacking::Private(f) => Some((f, "off")),
    };
    push("-machine");
    push(&format!(
        "{machine},accel={}{}",
        if kvm { "kvm" } else { "tcg" },
        if ram_object.is_some() {
            ",memory-backend=fbram"
        } else {
            ""
        }
    ));
    if let Some((file, share)) = ram_object {
        push("-object");
        push(&format!(
            "memory-backend-file,id=fbram,size={}M,mem-path={},share={share}",
            cfg.memory_mib.max(128),
            file.to_string_lossy().replace(',', ",,")
        ));
    }
    push("-cpu");
    push(
        cfg.cpu_model
            .as_deref()
            .unwrap_or(if kvm { "host" } else { TCG_CPU }),
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
    if !kvm {
        // TCG looks up translated code by virtual address: with address
        // space randomisation every new process maps its libraries
        // somewhere else and has all of them translated anew. Fixed
        // addresses took a dynamically linked `/bin/true` from ~60 to
        // ~10 ms and `bash -c 'echo hi'` from ~100 to ~25 ms (loops of
        // 20 in a restored guest). A KVM guest keeps its randomisation.
        cmdline.push("norandmaps");
        // A TCG guest's TSC is the host's, read by every vCPU alike: in
        // sync and at a constant rate. Without this the kernel's
        // clocksource watchdog compares it with jiffies, whose timer
        // interrupts arrive late whenever emulation is busy, declares the
        // TSC unstable ("skew is too large") in most boots, and falls back
        // to the jiffies clocksource: no tickless idle (an idle VM then
        // took 5 % of a host core for its 250 Hz tick, 188 % for a pool of
        // 37) and a guest clock that loses time under load.
        cmdline.push("tsc=reliable");
    }
    if cfg.network {
        cmdline.push("firebreak.net=user");
    }
    let initramfs = image.manifest.kernel.needs_initramfs();
    if !initramfs {
        // Drivers and ext4 built in: the kernel mounts the root disk itself and
        // starts the agent, skipping the initramfs's unpacking, shell and mounts.
        cmdline.extend([
            "root=/dev/vda",
            "rootfstype=ext4",
            "init=/sbin/firebreak-agent",
        ]);
    }
    let mut cmdline = cmdline.join(" ");
    if cold_boot && cfg.machine == Machine::Microvm && !kvm {
        // A TCG guest's TSC runs at the host's rate, and microvm has no
        // HPET or PM timer to calibrate it against: the PIT calibration
        // fails under emulation and the boot then hangs in most attempts.
        // Telling the kernel the rate skips the calibration. A restored
        // guest has long been calibrated, so neither a restore nor a
        // snapshot's key measures it (the value varies a little from
        // process to process).
        if let Some(khz) = host_tsc_khz() {
            cmdline.push_str(&format!(" tsc_early_khz={khz}"));
        }
    }
    for w in &cfg.extra_cmdline {
        cmdline.push(' ');
        cmdline.push_str(w);
    }
    let p = |name: &str| dir.join(name).to_string_lossy().into_owned();
    // The ELF vmlinux boots through its PVH entry point: no real-mode
    // setup and no decompression, ~0.3 s less under TCG than the bzImage.
    let vmlinux = image.vmlinux();
    push("-kernel");
    a.push(
        if vmlinux.is_file() {
            vmlinux
        } else {
            image.kernel()
        }
        .into(),
    );
    if initramfs {
        a.push("-initrd".into());
        a.push(image.initramfs().into());
    }
    let mut push = |s: &str| a.push(s.into());
    push("-append");
    push(&cmdline);
    push("-chardev");
    push(&format!("file,id=con,path={}", p("console.log")));
    push("-serial");
    push("chardev:con");
    push("-drive");
    push(drive);
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
        push(&super::UserNet::on_this_host().netdev(dir));
        push("-device");
        push(&format!("{net},netdev=net0"));
    }
    push("-qmp");
    push(&format!("unix:{},server=on,wait=off", p("qmp.sock")));
    a
}
