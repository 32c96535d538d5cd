//! Boots a real Firecracker VM. Runs only when `FIREBREAK_FIRECRACKER_BIN`
//! names a Firecracker binary, `/dev/kvm` is hardware KVM (not PVM-only), and
//! a guest image is cached (the newest in the default store, or
//! `$FIREBREAK_TEST_IMAGE` as a hash prefix); otherwise it prints a
//! `SKIPPED: …` line saying why and passes. Nothing here downloads
//! Firecracker.

use std::path::PathBuf;
use std::time::Duration;

use firebreak_agent::ExecSpec;
use firebreak_vm::firecracker::{BootFiles, FirecrackerConfig, FirecrackerVm, FIRECRACKER_BIN_ENV};
use firebreak_vm::image::{Image, ImageStore};

/// The binary and image to test with, or why the test is skipped.
fn setup() -> Result<(PathBuf, Image), String> {
    let bin = match std::env::var_os(FIRECRACKER_BIN_ENV) {
        Some(b) if !b.is_empty() => PathBuf::from(b),
        _ => return Err(format!("{FIRECRACKER_BIN_ENV} is not set")),
    };
    if !bin.is_file() {
        return Err(format!(
            "{FIRECRACKER_BIN_ENV}={} is not a file",
            bin.display()
        ));
    }
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return Err(format!("KVM does not work here: /dev/kvm: {e}"));
    }
    if firebreak_vm::qemu::kvm_is_pvm() {
        return Err("KVM does not work for Firecracker here: this host's KVM is PVM-only".into());
    }
    let store = ImageStore::open_default();
    let img = match std::env::var("FIREBREAK_TEST_IMAGE") {
        Ok(h) => store
            .get(&h)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no image {h}")),
        Err(_) => store.latest().map_err(|e| format!("no guest image: {e}")),
    }?;
    if !img.vmlinux().is_file() {
        return Err(format!("image {} has no vmlinux", img.dir.display()));
    }
    Ok((bin, img))
}

async fn run(vm: &FirecrackerVm, argv: &[&str]) -> String {
    let (out, err, st) = vm
        .client()
        .exec(ExecSpec::new(argv.iter().copied()))
        .await
        .expect("exec")
        .collect()
        .await
        .expect("collect");
    assert_eq!(
        st,
        firebreak_agent::ExitStatus::Exited { code: 0 },
        "{argv:?}: {}",
        String::from_utf8_lossy(&err)
    );
    String::from_utf8_lossy(&out).trim().to_string()
}

#[tokio::test]
async fn real_firecracker_boots_snapshots_and_restores() {
    let (bin, img) = match setup() {
        Ok(s) => s,
        Err(why) => {
            eprintln!("SKIPPED: real Firecracker test not run: {why}");
            return;
        }
    };
    let snap_parent = tempfile::tempdir().expect("tempdir");
    let cfg = FirecrackerConfig {
        binary: Some(bin),
        vcpus: 1,
        memory_mib: 512,
        boot_timeout: Duration::from_secs(20),
        ..Default::default()
    };
    let mut vm = FirecrackerVm::boot(&BootFiles::from(&img), &cfg)
        .await
        .unwrap_or_else(|e| panic!("boot: {e}"));
    eprintln!(
        "firecracker VM {} booted in {:?} (API after {:?})",
        vm.id(),
        vm.boot_stats().total,
        vm.boot_stats().api_ready
    );
    assert_eq!(
        vm.api().describe_instance().await.expect("GET /").state,
        "Running"
    );
    assert!(!run(&vm, &["/bin/uname", "-r"]).await.is_empty());
    run(&vm, &["/bin/sh", "-c", "echo kept > /root/marker"]).await;

    let snap = vm
        .snapshot(&snap_parent.path().join("snap"), true)
        .await
        .unwrap_or_else(|e| panic!("snapshot: {e}"));
    let original_uuid = run(&vm, &["/bin/cat", "/proc/sys/kernel/random/uuid"]).await;

    let mut clone = FirecrackerVm::restore(&snap, &cfg)
        .await
        .unwrap_or_else(|e| panic!("restore: {e}"));
    assert!(clone.boot_stats().restored);
    assert_eq!(run(&clone, &["/bin/cat", "/root/marker"]).await, "kept");
    let clone_uuid = run(&clone, &["/bin/cat", "/proc/sys/kernel/random/uuid"]).await;
    assert_ne!(original_uuid, clone_uuid);

    clone.shutdown(Duration::from_secs(2)).await;
    vm.shutdown(Duration::from_secs(2)).await;
    assert!(!vm.run_dir().exists());
}

/// `--sandbox firecracker` as the runner uses it: the first job's VM boots
/// and leaves a snapshot for its shape; the next job's VM is a clone of it.
#[tokio::test]
async fn real_firecracker_provider_snapshots_the_first_job_and_restores_the_next() {
    use firebreak_runner::sandbox::{JobSpec, SandboxProvider};
    use firebreak_vm::firecracker::{FirecrackerProvider, SnapshotCache};
    let (bin, img) = match setup() {
        Ok(s) => s,
        Err(why) => {
            eprintln!("SKIPPED: real Firecracker provider test not run: {why}");
            return;
        }
    };
    let cfg = FirecrackerConfig {
        binary: Some(bin),
        vcpus: 1,
        memory_mib: 384,
        boot_timeout: Duration::from_secs(20),
        ..Default::default()
    };
    let cache = SnapshotCache::for_image(&img);
    let _ = std::fs::remove_dir_all(cache.dir().join(cache.name(&BootFiles::from(&img), &cfg)));
    let provider = FirecrackerProvider::new(
        ImageStore::open_default(),
        Some(img.manifest.hash.clone()),
        cfg,
    );
    let first = provider
        .create(JobSpec::new("first", "repo"))
        .await
        .unwrap_or_else(|e| panic!("first job: {e}"));
    let notes = first.notes().join("\n");
    assert!(notes.contains("took the VM snapshot"), "{notes}");
    first.destroy().await.expect("destroy");
    let second = provider
        .create(JobSpec::new("second", "repo"))
        .await
        .unwrap_or_else(|e| panic!("second job: {e}"));
    let notes = second.notes().join("\n");
    assert!(notes.contains("restored from its snapshot"), "{notes}");
    assert!(second.layout().workspace.starts_with("/home/runner"));
    second.destroy().await.expect("destroy");
}
