//! A real Firecracker. The tests run only when `FIREBREAK_FIRECRACKER_BIN`
//! names a Firecracker binary, `/dev/kvm` opens, and a guest image is cached
//! (the newest in the default store, or `$FIREBREAK_TEST_IMAGE` as a hash
//! prefix); those that boot a guest also need hardware KVM (not PVM-only).
//! Otherwise each prints a `SKIPPED: …` line saying why and passes (nextest shows it at the
//! end of the run: `.config/nextest.toml`), or, with `FIREBREAK_REQUIRE_FIRECRACKER=1` (a host
//! that must test Firecracker), fails. Nothing here builds or downloads Firecracker.

use std::path::PathBuf;
use std::time::Duration;

use firebreak_agent::ExecSpec;
use firebreak_vm::firecracker::{BootFiles, FirecrackerConfig, FirecrackerVm, FIRECRACKER_BIN_ENV};
use firebreak_vm::image::{Image, ImageStore};

/// Says why a test did not run: loudly, and as a failure where Firecracker is required.
fn skipped(what: &str, why: &str) {
    if std::env::var("FIREBREAK_REQUIRE_FIRECRACKER").is_ok_and(|v| v == "1") {
        panic!("FIREBREAK_REQUIRE_FIRECRACKER=1 but the {what} cannot run: {why}");
    }
    eprintln!("SKIPPED: {what} not run: {why}");
}

/// The binary and image to boot guests with, or why the test is skipped.
fn setup() -> Result<(PathBuf, Image), String> {
    setup_for(Guest::Runs)
}

/// Whether a test needs the guest to run (hardware KVM) or only Firecracker's API (any KVM
/// that `/dev/kvm` gives, PVM-only included).
#[derive(PartialEq)]
enum Guest {
    Runs,
    ApiOnly,
}

fn setup_for(guest: Guest) -> Result<(PathBuf, Image), String> {
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
    if guest == Guest::Runs && firebreak_vm::qemu::kvm_is_pvm() {
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
            skipped("real Firecracker test", &why);
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
            skipped("real Firecracker provider test", &why);
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
    // A disk label: the clone's root filesystem grown online.
    let mut spec = JobSpec::new("third", "repo");
    spec.limits.disk_bytes = Some(8 << 30);
    let third = provider
        .create(spec)
        .await
        .unwrap_or_else(|e| panic!("third job: {e}"));
    let notes = third.notes().join("\n");
    assert!(notes.contains("root filesystem grown from"), "{notes}");
    third.destroy().await.expect("destroy");
}

/// Every request the backend makes, sent to a real Firecracker: each must be accepted as
/// sent (the fake Firecracker of `firecracker_api.rs` checks what we send, this checks that
/// Firecracker agrees). Needs no running guest, so it also runs where KVM is PVM-only: the
/// VM is configured, started, paused, snapshotted and loaded into a second Firecracker,
/// whatever its guest manages meanwhile.
#[tokio::test]
async fn real_firecracker_accepts_every_request_the_backend_sends() {
    use firebreak_vm::firecracker::api::{
        MemoryBackend, MemoryBackendType, PartialDrive, SnapshotCreateParams, SnapshotLoadParams,
        VsockOverride,
    };
    use firebreak_vm::firecracker::{BootPlan, FirecrackerApi};
    let (bin, img) = match setup_for(Guest::ApiOnly) {
        Ok(s) => s,
        Err(why) => {
            skipped("real Firecracker API test", &why);
            return;
        }
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let spawn = |name: &str| {
        let log = std::fs::File::create(d.join(format!("{name}.log"))).expect("log");
        tokio::process::Command::new(&bin)
            .arg("--api-sock")
            .arg(d.join(format!("{name}.sock")))
            .arg("--id")
            .arg(name)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn firecracker")
    };
    let log_of =
        |name: &str| std::fs::read_to_string(d.join(format!("{name}.log"))).unwrap_or_default();
    let rootfs = d.join("rootfs.ext4");
    std::fs::File::create(&rootfs)
        .and_then(|f| f.set_len(64 << 20))
        .expect("rootfs");
    let cfg = FirecrackerConfig {
        vcpus: 1,
        memory_mib: 128,
        ..Default::default()
    };

    let _first = spawn("first");
    let api = FirecrackerApi::new(d.join("first.sock"));
    api.wait_ready(Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("API: {e}\n{}", log_of("first")));
    BootPlan::new(
        &cfg,
        img.vmlinux(),
        img.initramfs(),
        rootfs.clone(),
        d.join("first-v.sock"),
    )
    .apply(&api)
    .await
    .unwrap_or_else(|e| panic!("boot requests: {e}\n{}", log_of("first")));
    assert_eq!(
        api.describe_instance().await.expect("GET /").state,
        "Running"
    );
    api.pause().await.expect("pause");
    assert_eq!(
        api.describe_instance().await.expect("GET /").state,
        "Paused"
    );
    let (state, mem) = (d.join("state.bin"), d.join("mem.bin"));
    api.create_snapshot(&SnapshotCreateParams {
        snapshot_path: state.clone(),
        mem_file_path: mem.clone(),
        snapshot_type: None,
    })
    .await
    .unwrap_or_else(|e| panic!("snapshot: {e}\n{}", log_of("first")));
    assert_eq!(
        std::fs::metadata(&mem).expect("memory file").len(),
        128 << 20
    );
    assert!(std::fs::metadata(&state).expect("state file").len() > 0);

    let _second = spawn("second");
    let clone = FirecrackerApi::new(d.join("second.sock"));
    clone
        .wait_ready(Duration::from_secs(10))
        .await
        .expect("API");
    clone
        .load_snapshot(&SnapshotLoadParams {
            snapshot_path: state,
            mem_backend: MemoryBackend {
                backend_type: MemoryBackendType::File,
                backend_path: mem,
            },
            track_dirty_pages: None,
            resume_vm: Some(false),
            vsock_override: Some(VsockOverride {
                uds_path: d.join("second-v.sock"),
            }),
            network_overrides: Vec::new(),
            clock_realtime: None,
        })
        .await
        .unwrap_or_else(|e| panic!("snapshot load: {e}\n{}", log_of("second")));
    let copy = d.join("rootfs-copy.ext4");
    std::fs::copy(&rootfs, &copy).expect("copy disk");
    clone
        .patch_drive(&PartialDrive {
            drive_id: "rootfs".into(),
            path_on_host: Some(copy.clone()),
        })
        .await
        .unwrap_or_else(|e| panic!("drive swap: {e}\n{}", log_of("second")));
    clone.resume().await.expect("resume");
    assert_eq!(
        clone.describe_instance().await.expect("GET /").state,
        "Running"
    );
    // A `runs-on` disk label on a running VM: its file grown, the same path reopened.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&copy)
        .and_then(|f| f.set_len(128 << 20))
        .expect("grow the disk");
    clone
        .patch_drive(&PartialDrive {
            drive_id: "rootfs".into(),
            path_on_host: Some(copy),
        })
        .await
        .unwrap_or_else(|e| panic!("drive regrow: {e}\n{}", log_of("second")));
    assert!(
        d.join("second-v.sock").exists(),
        "the clone's vsock socket is its own"
    );
}

/// The cgroup directory of `controller` (v1) or the unified hierarchy (v2) on this host.
fn cgroup_root(version: u8, controller: &str) -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let ok = match version {
            1 => f.get(2) == Some(&"cgroup") && f.get(3)?.split(',').any(|o| o == controller),
            _ => f.get(2) == Some(&"cgroup2"),
        };
        ok.then(|| PathBuf::from(f[1]))
    })
}

/// What the jailer tests need: Firecracker (statically linked: the jail holds no
/// libraries), an image, the jailer, root, and the cgroup version that offers the per-VM
/// limits' controllers; or why they skip. `config` runs VMs as `nobody`, jailed under
/// `base`, their cgroups under `parent`.
struct Jail {
    fc: PathBuf,
    img: Image,
    version: u8,
    base: tempfile::TempDir,
    config: firebreak_vm::firecracker::JailerConfig,
    parent: String,
}

fn jail(parent: &str) -> Result<Jail, String> {
    use firebreak_vm::firecracker::{JailerConfig, JAILER_BIN_ENV};
    let (fc, img) = setup_for(Guest::ApiOnly)?;
    let jailer = match std::env::var_os(JAILER_BIN_ENV) {
        Some(j) if PathBuf::from(&j).is_file() => PathBuf::from(j),
        _ => return Err(format!("{JAILER_BIN_ENV} does not name a jailer binary")),
    };
    if !nix::unistd::geteuid().is_root() {
        return Err("the jailer needs root".into());
    }
    let elf = std::fs::read(&fc).unwrap_or_default();
    if elf.windows(8).any(|w| w == b"/lib64/l") {
        return Err(format!(
            "{} is dynamically linked; the jail holds no libraries",
            fc.display()
        ));
    }
    let version = firebreak_vm::firecracker::host_jailer_cgroup_version()
        .ok_or("no cgroup version here offers cpu, memory and pids")?;
    let base = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut config = JailerConfig::new(&jailer, 65534, 65534).with_host_cgroups();
    assert_eq!(config.cgroup_version, version);
    config.chroot_base = base.path().to_path_buf();
    let parent = format!("{parent}-{}", std::process::id());
    config.parent_cgroup = Some(parent.clone());
    Ok(Jail {
        fc,
        img,
        version,
        base,
        config,
        parent,
    })
}

/// Removes the cgroups the jailer leaves behind under `parent` (one per VM), and `parent`.
fn remove_jailer_cgroups(version: u8, parent: &str) {
    for c in ["cpu", "memory", "pids"] {
        if let Some(d) = cgroup_root(version, c).map(|r| r.join(parent)) {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
            let _ = std::fs::remove_dir(&d);
        }
    }
}

/// The jailer as the backend runs it: its command line (chroot, user, cgroup version and
/// per-VM limits, API socket), the files a VM needs placed in the jail, and the boot
/// requests. Needs `FIREBREAK_JAILER_BIN`, root, and a statically linked Firecracker (the
/// jail holds no libraries); like the API test above, no guest has to run.
#[tokio::test]
async fn real_jailer_jails_firecracker_as_the_backend_asks() {
    use firebreak_vm::firecracker::{vmm_overhead_mib, BootPlan, FirecrackerApi};
    let Jail {
        fc,
        img,
        version,
        base,
        config: j,
        parent,
    } = match jail("firebreak-test") {
        Ok(s) => s,
        Err(why) => return skipped("real jailer test", &why),
    };
    let id = format!("fbjail-{}", std::process::id());
    let vm = j.for_vm(1, 128);
    let root = vm.chroot_dir(&fc, &id);
    let (out_log, err_log) = (
        base.path().join("jailer.out"),
        base.path().join("jailer.err"),
    );
    let mut child = tokio::process::Command::new(&j.binary)
        .args(vm.argv(&fc, &id))
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out_log).expect("log"))
        .stderr(std::fs::File::create(&err_log).expect("log"))
        .kill_on_drop(true)
        .spawn()
        .expect("spawn jailer");
    let log = || {
        [&out_log, &err_log]
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .join("\n")
    };
    let api = FirecrackerApi::new(root.join("api.sock"));
    let ready = api.wait_ready(Duration::from_secs(10)).await;
    let outcome = async {
        ready.map_err(|e| format!("API in the jail: {e}"))?;
        // What the backend places in a jail: the kernel and initramfs readable by the jail's
        // user, the VM's own disk owned by it.
        use std::os::unix::fs::PermissionsExt;
        for (src, name) in [
            (img.vmlinux(), "vmlinux"),
            (img.initramfs(), "initramfs.cpio.gz"),
        ] {
            std::fs::copy(&src, root.join(name)).map_err(|e| format!("{name}: {e}"))?;
            std::fs::set_permissions(root.join(name), std::fs::Permissions::from_mode(0o444))
                .map_err(|e| format!("{name}: {e}"))?;
        }
        let disk = root.join("rootfs.ext4");
        std::fs::File::create(&disk)
            .and_then(|f| f.set_len(64 << 20))
            .map_err(|e| format!("disk: {e}"))?;
        std::os::unix::fs::chown(&disk, Some(65534), Some(65534)).map_err(|e| e.to_string())?;
        let cfg = FirecrackerConfig {
            vcpus: 1,
            memory_mib: 128,
            ..Default::default()
        };
        BootPlan::new(
            &cfg,
            "/vmlinux".into(),
            "/initramfs.cpio.gz".into(),
            "/rootfs.ext4".into(),
            "/v.sock".into(),
        )
        .apply(&api)
        .await
        .map_err(|e| format!("boot requests: {e}"))?;
        let state = api
            .describe_instance()
            .await
            .map_err(|e| e.to_string())?
            .state;
        Ok::<_, String>(state)
    }
    .await;
    // The per-VM memory limit, where this cgroup version keeps it.
    let file = if version == 1 {
        "memory.limit_in_bytes"
    } else {
        "memory.max"
    };
    let cg = cgroup_root(version, "memory").map(|r| r.join(&parent));
    let limit = cg
        .as_ref()
        .and_then(|d| std::fs::read_to_string(d.join(&id).join(file)).ok());
    let _ = child.kill().await;
    let _ = child.wait().await;
    // The jailer leaves its cgroups behind: remove the VM's and the test's parent.
    remove_jailer_cgroups(version, &parent);
    let state = outcome.unwrap_or_else(|e| panic!("{e}\n{}", log()));
    assert_eq!(state, "Running");
    assert_eq!(
        limit.map(|l| l.trim().to_string()),
        Some(((128 + vmm_overhead_mib(128)) << 20).to_string()),
        "the VM's memory limit in {cg:?}"
    );
}

/// The network namespace of process `pid` (`net:[inode]`).
fn net_ns(pid: &str) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|l| l.to_string_lossy().into_owned())
}

/// The namespaces `/run/netns` holds for VMs of this process.
fn our_vm_netns() -> Vec<PathBuf> {
    let prefix = format!("fbvm-{}-", std::process::id());
    std::fs::read_dir(firebreak_vm::firecracker::netns::NETNS_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

/// The backend's own jailed start ([`FirecrackerVm::boot`] with a jailer): a VM without
/// network runs in an empty network namespace of its own, which goes with the VM. Needs
/// what the test above needs; where no guest can run (PVM-only KVM) the boot fails
/// after its timeout, and the namespace is checked while it waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_jailer_runs_a_vm_without_network_in_a_network_namespace_of_its_own() {
    use std::os::unix::fs::MetadataExt;
    let Jail {
        fc,
        img,
        version,
        base: _base,
        config: j,
        parent,
    } = match jail("firebreak-netns-test") {
        Ok(s) => s,
        Err(why) => return skipped("real jailer test", &why),
    };
    let cfg = FirecrackerConfig {
        binary: Some(fc),
        jailer: Some(j),
        vcpus: 1,
        memory_mib: 128,
        boot_timeout: Duration::from_secs(4),
        ..Default::default()
    };
    let files = BootFiles::from(&img);
    let boot = tokio::spawn(async move { FirecrackerVm::boot(&files, &cfg).await });
    // Firecracker runs as the VM id `fb-<this pid>-<n>` names it.
    let marker = format!("fb-{}-", std::process::id());
    let ours = net_ns("self").expect("this process's network namespace");
    let mut seen = None;
    let until = std::time::Instant::now() + Duration::from_secs(4);
    while seen.is_none() && std::time::Instant::now() < until && !boot.is_finished() {
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let pid = e.file_name().to_string_lossy().into_owned();
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            // Firecracker itself, once the jailer has exec'd it (before that, the
            // jailer has not joined the namespace yet).
            let exe = std::fs::read_link(e.path().join("exe")).unwrap_or_default();
            if exe.to_string_lossy().ends_with("firecracker") && cmdline.contains(&marker) {
                let files: Vec<u64> = our_vm_netns()
                    .iter()
                    .filter_map(|p| std::fs::metadata(p).ok().map(|m| m.ino()))
                    .collect();
                if let Some(ns) = net_ns(&pid) {
                    seen = Some((ns, files));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let booted = boot.await.expect("join");
    if let Ok(mut vm) = booted {
        vm.kill().await;
    }
    remove_jailer_cgroups(version, &parent);
    let (ns, files) = seen.expect("a jailed Firecracker process of this test");
    assert_ne!(ns, ours, "the VM runs in the host's network namespace");
    assert!(
        files.iter().any(|ino| ns == format!("net:[{ino}]")),
        "{ns} is not the namespace mounted in /run/netns ({files:?})"
    );
    assert_eq!(
        our_vm_netns(),
        Vec::<PathBuf>::new(),
        "namespaces left behind"
    );
}
