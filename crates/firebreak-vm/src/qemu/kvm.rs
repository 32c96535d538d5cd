//! Whether KVM really runs a guest on this host: a probe boot, cached per host boot, QEMU
//! binary and kernel.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::process::Command;

use crate::tools;

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
/// the process, and on disk (`<cache>/kvm-probe.json`) for this host boot,
/// QEMU binary and kernel file, so a one-job `firebreak run` does not pay
/// the probe (~0.1 s here, up to 8 s on a host where KVM hangs) each time.
pub async fn probe_kvm(kernel: &Path) -> KvmProbe {
    KVM_PROBE
        .get_or_init(|| async {
            let file = crate::image::default_cache_dir().join("kvm-probe.json");
            let key = kvm_probe_key(kernel);
            if let Some(p) = read_probe_cache(&file, &key) {
                return p;
            }
            let p = probe_kvm_uncached(kernel.to_path_buf(), Duration::from_secs(8)).await;
            write_probe_cache(&file, &key, &p);
            p
        })
        .await
        .clone()
}

#[derive(Serialize, Deserialize)]
struct ProbeCache {
    key: String,
    probe: KvmProbe,
}

/// What the probe's answer depends on: this boot of the host (modules, KVM
/// flavour), the QEMU binary, the guest kernel file.
fn kvm_probe_key(kernel: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let ident = |p: &Path| match std::fs::metadata(p) {
        Ok(m) => format!("{}:{}:{}", p.display(), m.len(), m.mtime()),
        Err(_) => format!("{}:missing", p.display()),
    };
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let qemu = tools::find(tools::QEMU.name)
        .map(|p| ident(&p))
        .unwrap_or_default();
    format!("{}|{qemu}|{}", boot.trim(), ident(kernel))
}

fn read_probe_cache(file: &Path, key: &str) -> Option<KvmProbe> {
    let text = std::fs::read_to_string(file).ok()?;
    let c: ProbeCache = serde_json::from_str(&text).ok()?;
    (c.key == key).then_some(c.probe)
}

fn write_probe_cache(file: &Path, key: &str, probe: &KvmProbe) {
    let c = ProbeCache {
        key: key.to_string(),
        probe: probe.clone(),
    };
    if let Ok(text) = serde_json::to_string_pretty(&c) {
        let tmp = file.with_extension(format!("tmp-{}", std::process::id()));
        if std::fs::write(&tmp, text).is_ok() && std::fs::rename(&tmp, file).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_probe_cache_round_trips_and_checks_its_key() {
        let d = tempfile::tempdir().expect("tempdir");
        let file = d.path().join("kvm-probe.json");
        let kernel = d.path().join("bzImage");
        std::fs::write(&kernel, "k").expect("write");
        let key = kvm_probe_key(&kernel);
        assert!(read_probe_cache(&file, &key).is_none());
        let p = KvmProbe {
            usable: false,
            detail: "no".into(),
        };
        write_probe_cache(&file, &key, &p);
        assert_eq!(read_probe_cache(&file, &key), Some(p));
        std::fs::write(&kernel, "another kernel").expect("write");
        assert!(read_probe_cache(&file, &kvm_probe_key(&kernel)).is_none());
    }
}
