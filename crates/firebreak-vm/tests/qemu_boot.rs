//! Boots real VMs. Opt-in with `FIREBREAK_VM_TESTS=1`; skipped (with a message saying why)
//! otherwise or when QEMU or a guest image is missing. Image choice: the image built from the current static
//! agent (`target/x86_64-unknown-linux-gnu/release/firebreak-agent` or
//! `$FIREBREAK_AGENT`) if cached, else the newest cached image; with
//! `FIREBREAK_TEST_BUILD_IMAGE=1` a missing image is built first (minutes).
//! VM tests run one at a time: boots are CPU-heavy under TCG.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use firebreak_runner::sandbox::{
    ExecRequest, ExitStatus, JobSpec, OutputEvent, SandboxError, SandboxProvider, Stream,
};
use firebreak_vm::image::ImageStore;
use firebreak_vm::{QemuProvider, QemuVm, VmConfig};

mod common;
use common::{exec_collect, SERIAL};

fn sh(script: &str) -> ExecRequest {
    ExecRequest::new(["/bin/sh", "-c", script])
        .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_boots_runs_the_guest_kernel_and_has_no_network() {
    let img = image_or_skip!();
    let _g = SERIAL.lock().await;
    let t0 = Instant::now();
    let mut vm = QemuVm::boot(&img, &VmConfig::default())
        .await
        .expect("boot");
    let stats = vm.boot_stats();
    eprintln!("boot: {:?} wall, {stats:?}", t0.elapsed());
    let info = vm.agent_info().clone();
    assert!(info.init, "agent should run as the guest's init child");
    let client = vm.client();
    let (out, _, st) = exec_collect(
        &client,
        firebreak_agent::ExecSpec::new(["uname", "-r"]).env("PATH", "/usr/bin:/bin"),
    )
    .await;
    assert_eq!(st, firebreak_agent::ExitStatus::Exited { code: 0 });
    let guest = String::from_utf8_lossy(&out).trim().to_string();
    let host = nix::sys::utsname::uname()
        .expect("uname")
        .release()
        .to_string_lossy()
        .into_owned();
    eprintln!("guest kernel {guest}, host kernel {host}");
    assert_eq!(guest, info.kernel_release);
    assert_ne!(guest, host, "the command ran on the host?");
    // No network by default: only the loopback interface.
    let (out, _, _) = exec_collect(
        &client,
        firebreak_agent::ExecSpec::new(["cat", "/proc/net/dev"]).env("PATH", "/usr/bin:/bin"),
    )
    .await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("lo:") && !text.contains("eth0"), "{text}");
    // Tools the image promises.
    let (out, err, st) = exec_collect(&client, firebreak_agent::ExecSpec::new([
                "/bin/bash",
                "-c",
                "git --version && python3 --version && node --version && jq --version && zstd --version >/dev/null && curl --version | head -1",
            ])
            .env("PATH", "/usr/bin:/bin"),).await;
    assert_eq!(
        st,
        firebreak_agent::ExitStatus::Exited { code: 0 },
        "{}",
        String::from_utf8_lossy(&err)
    );
    eprintln!("{}", String::from_utf8_lossy(&out));
    // Under TCG the guest runs without address randomisation and without the
    // fast-string CPU features, both slow under emulation (see `qemu/args.rs`).
    if !stats.kvm {
        let (out, _, _) = client
            .exec(
                firebreak_agent::ExecSpec::new([
                    "/bin/sh",
                    "-c",
                    "cat /proc/sys/kernel/randomize_va_space; grep -cw erms /proc/cpuinfo",
                ])
                .env("PATH", "/usr/bin:/bin"),
            )
            .await
            .expect("exec")
            .collect()
            .await
            .expect("collect");
        assert_eq!(String::from_utf8_lossy(&out), "0\n0\n");
    }
    // Each exec runs in its own cgroup (so a timeout can kill daemons too).
    let (out, _, _) = exec_collect(
        &client,
        firebreak_agent::ExecSpec::new(["cat", "/proc/self/cgroup"]).env("PATH", "/usr/bin:/bin"),
    )
    .await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("/fb-exec-"), "{text}");
    // A machine id of this boot (the image's file is empty), on tmpfs: the host's rewrite
    // after a restore then costs no ext4 journalling.
    let (out, _, _) = exec_collect(
        &client,
        firebreak_agent::ExecSpec::new([
            "/bin/sh",
            "-c",
            "cat /etc/machine-id; stat -f -c %T /etc/machine-id",
        ])
        .env("PATH", "/usr/bin:/bin"),
    )
    .await;
    let text = String::from_utf8_lossy(&out);
    let mut lines = text.lines();
    let id = lines.next().unwrap_or_default();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "machine id {id:?}"
    );
    assert_eq!(lines.next(), Some("tmpfs"), "{text}");
    // After a snapshot restore the host sets the clock and adds entropy.
    let when = std::time::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
    client.set_clock(when).await.expect("set clock");
    client.add_entropy(&[7u8; 64]).await.expect("entropy");
    let (out, _, _) = exec_collect(
        &client,
        firebreak_agent::ExecSpec::new(["date", "+%s"]).env("PATH", "/usr/bin:/bin"),
    )
    .await;
    let secs: u64 = String::from_utf8_lossy(&out).trim().parse().expect("date");
    assert!(
        (2_000_000_000..2_000_000_060).contains(&secs),
        "guest clock {secs}"
    );
    vm.shutdown(Duration::from_secs(5)).await;
    assert!(!vm.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_sandbox_copies_a_workspace_in_and_out_and_streams_output() {
    let img = image_or_skip!();
    let _g = SERIAL.lock().await;
    let provider = QemuProvider::new(
        ImageStore::open_default(),
        Some(img.manifest.hash.clone()),
        VmConfig::default(),
    );
    let probe = provider.probe().await;
    assert!(probe.available, "{probe:?}");
    let mut spec = JobSpec::new("job-1", "hello");
    spec.limits.memory_bytes = Some(1024 << 20);
    let sb = provider.create(spec).await.expect("create");
    eprintln!("notes: {:?}", sb.notes());
    let layout = sb.layout().clone();
    assert_eq!(
        layout.workspace,
        PathBuf::from("/home/runner/work/hello/hello")
    );

    let src = tempfile::tempdir().expect("tempdir");
    std::fs::write(src.path().join("input.txt"), "from the host\n").expect("write");
    std::fs::create_dir(src.path().join("sub")).expect("mkdir");
    std::fs::write(
        src.path().join("sub/run.sh"),
        "#!/bin/sh\necho \"script ran in $(pwd)\"\necho oops >&2\nexit 7\n",
    )
    .expect("write");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        src.path().join("sub/run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    // Big enough to need many virtio-serial buffers in both directions.
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(src.path().join("big.bin"), &big).expect("write");
    sb.copy_in(src.path(), &layout.workspace)
        .await
        .expect("copy in");

    let (tx, mut rx) = tokio::sync::mpsc::channel::<OutputEvent>(64);
    let st = sb
        .exec(
            sh("cat input.txt; ./sub/run.sh; s=$?; echo made > result.txt; exit $s"),
            tx,
        )
        .await
        .expect("exec");
    assert_eq!(st, ExitStatus::Exited(7));
    let mut lines = Vec::new();
    while let Some(ev) = rx.recv().await {
        lines.push(ev);
    }
    let out: Vec<&str> = lines
        .iter()
        .filter(|e| e.stream == Stream::Stdout)
        .map(|e| e.line.as_str())
        .collect();
    assert_eq!(
        out,
        [
            "from the host",
            "script ran in /home/runner/work/hello/hello"
        ]
    );
    assert!(lines
        .iter()
        .any(|e| e.stream == Stream::Stderr && e.line == "oops"));

    // Files and copy out.
    let f = layout.temp.join("x/y.txt");
    sb.write_file(&f, b"written".to_vec(), Some(0o600))
        .await
        .expect("write");
    assert_eq!(
        sb.read_file(&f).await.expect("read").as_deref(),
        Some(&b"written"[..])
    );
    assert_eq!(
        sb.read_file(&layout.temp.join("nope")).await.expect("read"),
        None
    );
    assert!(matches!(
        sb.read_file(std::path::Path::new("/etc/passwd")).await,
        Err(SandboxError::PathOutsideSandbox(_))
    ));
    let back = tempfile::tempdir().expect("tempdir");
    sb.copy_out(&layout.workspace, back.path())
        .await
        .expect("copy out");
    assert!(
        std::fs::read(back.path().join("big.bin")).expect("big") == big,
        "big.bin differs after the round trip"
    );
    assert_eq!(
        std::fs::read_to_string(back.path().join("result.txt")).expect("result"),
        "made\n"
    );
    assert_eq!(
        std::fs::metadata(back.path().join("sub/run.sh"))
            .expect("meta")
            .permissions()
            .mode()
            & 0o777,
        0o755
    );

    // Step timeout kills the tree, the sandbox stays usable.
    let (tx, _rx) = tokio::sync::mpsc::channel(8);
    let t0 = Instant::now();
    let st = sb
        .exec(
            sh("sleep 60 & sleep 60").timeout(Duration::from_secs(1)),
            tx,
        )
        .await
        .expect("exec");
    assert_eq!(st, ExitStatus::TimedOut);
    assert!(t0.elapsed() < Duration::from_secs(15));
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let st = sb
        .exec(sh("pgrep -c sleep || true"), tx)
        .await
        .expect("exec");
    assert_eq!(st, ExitStatus::Exited(0));
    assert_eq!(
        rx.recv().await.map(|e| e.line),
        Some("0".to_string()),
        "sleeps survived the timeout"
    );

    // Memory limit from the job spec reaches -m.
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    sb.exec(
        sh("awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo"),
        tx,
    )
    .await
    .expect("exec");
    let mib: u64 = rx
        .recv()
        .await
        .and_then(|e| e.line.parse().ok())
        .expect("MemTotal");
    assert!((800..=1024).contains(&mib), "guest sees {mib} MiB");

    sb.destroy().await.expect("destroy");
    sb.destroy().await.expect("destroy is idempotent");
    let (tx, _rx) = tokio::sync::mpsc::channel(8);
    assert!(matches!(
        sb.exec(sh("true"), tx).await,
        Err(SandboxError::Destroyed)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_timeout_kills_the_vm() {
    let img = image_or_skip!();
    let _g = SERIAL.lock().await;
    let cfg = VmConfig {
        job_timeout: Some(Duration::from_secs(2)),
        memory_mib: 512,
        vcpus: 1,
        ..VmConfig::default()
    };
    let mut vm = QemuVm::boot(&img, &cfg).await.expect("boot");
    let client = vm.client();
    let t0 = Instant::now();
    let res = client
        .exec(firebreak_agent::ExecSpec::new(["sleep", "600"]).env("PATH", "/usr/bin:/bin"))
        .await
        .expect("exec")
        .collect()
        .await;
    assert!(
        res.is_err(),
        "exec should fail when the VM is killed: {res:?}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t0.elapsed()
    );
    assert!(vm.wait_exit(Duration::from_secs(5)).await);
    assert!(!vm.is_running());
    vm.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_cold_boot_to_first_output() {
    let img = image_or_skip!();
    let _g = SERIAL.lock().await;
    let b = firebreak_vm::qemu::bench_cold_boot(&img, &VmConfig::default())
        .await
        .expect("bench");
    eprintln!("cold boot: {b:?}");
    assert!(b.to_first_output_ms >= b.to_agent_ms);
    assert!(b.attempts >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_survives_a_host_reconnect_and_network_is_opt_in() {
    let img = image_or_skip!();
    let _g = SERIAL.lock().await;
    let cfg = VmConfig {
        network: true,
        ..VmConfig::default()
    };
    let mut vm = QemuVm::boot(&img, &cfg).await.expect("boot");
    let run = |c: std::sync::Arc<firebreak_agent::AgentClient>, script: &'static str| async move {
        c.exec(
            firebreak_agent::ExecSpec::new(["/bin/sh", "-c", script])
                .env("PATH", "/usr/sbin:/usr/bin:/bin"),
        )
        .await
        .expect("exec")
        .collect()
        .await
        .expect("collect")
    };
    let (out, _, _) = run(vm.client(), "ip -o -4 addr show eth0; ip route").await;
    let text = String::from_utf8_lossy(&out).into_owned();
    eprintln!("{text}");
    assert!(
        text.contains("10.0.2.15/24") && text.contains("default via 10.0.2.2"),
        "{text}"
    );
    // Whether the guest reaches a mirror depends on the host's network; report only.
    let (out, _, st) = run(vm.client(), "curl -sS -o /dev/null -w '%{http_code}' --max-time 20 http://deb.debian.org/debian/dists/bookworm/Release").await;
    eprintln!(
        "guest → deb.debian.org ({:?}): {st:?} HTTP {}",
        firebreak_vm::UserNet::on_this_host(),
        String::from_utf8_lossy(&out)
    );
    // A service listening only on the host's loopback. slirp hands the guest's connections
    // to 10.0.2.2 to it; passt (`--no-map-gw`) must not.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let script: &'static str = Box::leak(
        format!(
            "if timeout 5 bash -c 'exec 3<>/dev/tcp/10.0.2.2/{port}' 2>/dev/null; then echo reached; else echo refused; fi"
        )
        .into_boxed_str(),
    );
    let (out, _, _) = run(vm.client(), script).await;
    let verdict = String::from_utf8_lossy(&out).trim().to_string();
    match firebreak_vm::UserNet::on_this_host() {
        firebreak_vm::UserNet::Passt(_) => assert_eq!(
            verdict, "refused",
            "through passt the guest must not reach the host's loopback"
        ),
        firebreak_vm::UserNet::Slirp => {
            eprintln!("slirp: host loopback from the guest: {verdict}")
        }
    }
    drop(listener);

    // Snapshot-style reconnect: the host end goes away and comes back.
    let old = vm.client();
    vm.reconnect(Duration::from_secs(20))
        .await
        .expect("reconnect");
    assert!(old.ping().await.is_err(), "old connection should be closed");
    let (out, _, st) = run(vm.client(), "echo again").await;
    assert_eq!(
        (out.as_slice(), st),
        (
            &b"again\n"[..],
            firebreak_agent::ExitStatus::Exited { code: 0 }
        )
    );
    vm.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_boot_that_never_reaches_the_agent_is_retried_then_reported() {
    let img = image_or_skip!();
    let _g = SERIAL.lock().await;
    let cfg = VmConfig {
        // No guest reaches its agent this soon: QEMU alone takes ~30 ms to start, and the
        // minimal kernel boots in ~1 s under TCG (a few hundred ms even under KVM).
        boot_timeout: Some(Duration::from_millis(100)),
        boot_attempts: 2,
        ..VmConfig::default()
    };
    let t0 = Instant::now();
    let err = QemuVm::boot(&img, &cfg)
        .await
        .err()
        .expect("cannot boot in 100 ms");
    let text = err.to_string();
    eprintln!("{text}");
    assert!(text.contains("after 2 attempt(s)"), "{text}");
    assert!(t0.elapsed() < Duration::from_secs(20));
}
