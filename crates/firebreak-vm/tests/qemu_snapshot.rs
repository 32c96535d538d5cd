//! Snapshot restore, the warm pool, the memory budget and in-guest limits,
//! on real VMs, opt-in with `FIREBREAK_VM_TESTS=1`. Each test prints `SKIPPED: …` and passes when QEMU or a
//! guest image is missing (image choice as in `qemu_boot.rs`). VM tests run
//! one at a time. All use 256 MiB, 1 vCPU VMs, which share one snapshot
//! (taken by whichever test runs first: a cold boot plus a few seconds).

use std::time::{Duration, Instant};

use firebreak_runner::sandbox::{
    ExecRequest, ExitStatus, JobSpec, OutputEvent, Sandbox, SandboxProvider,
};
use firebreak_vm::image::{Image, ImageStore};
use firebreak_vm::{snapshot, PoolConfig, QemuProvider, QemuVm, VmConfig};

mod common;
use common::SERIAL;

fn small() -> VmConfig {
    VmConfig {
        memory_mib: 256,
        vcpus: 1,
        ..VmConfig::default()
    }
}

const PATH: &str = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin";

fn sh(script: &str) -> ExecRequest {
    ExecRequest::new(["/bin/sh", "-c", script]).env("PATH", PATH)
}

async fn guest_sh(vm: &QemuVm, script: &str) -> (String, String, firebreak_agent::ExitStatus) {
    let spec = firebreak_agent::ExecSpec::new(["/bin/sh", "-c", script]).env("PATH", PATH);
    let (out, err, st) = common::exec_collect(&vm.client(), spec).await;
    (
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
        st,
    )
}

/// Runs `req`, returns its status and stdout+stderr lines.
async fn run(sb: &dyn Sandbox, req: ExecRequest) -> (ExitStatus, Vec<String>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<OutputEvent>(1024);
    let collect = tokio::spawn(async move {
        let mut v = Vec::new();
        while let Some(ev) = rx.recv().await {
            v.push(ev.line);
        }
        v
    });
    let st = sb.exec(req, tx).await.expect("exec");
    (st, collect.await.unwrap_or_default())
}

/// The host's clock, seconds since the epoch (what `date +%s` prints in a guest).
fn host_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn provider(img: &Image, cfg: VmConfig) -> QemuProvider {
    QemuProvider::new(
        ImageStore::open_default(),
        Some(img.manifest.hash.clone()),
        cfg,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_clones_have_their_own_working_disk_a_fresh_clock_and_entropy() {
    let img = image_or_skip!();
    let _g = SERIAL.lock().await;
    let cfg = small();
    let t0 = Instant::now();
    let (snap, built) = snapshot::ensure(&img, &cfg).await.expect("snapshot");
    eprintln!(
        "snapshot {} (built now: {built}, {:?}): {:?}",
        snap.dir.display(),
        t0.elapsed(),
        snap.meta
    );
    assert!(snap.meta.pids_controller, "pids controller not enabled");
    // Cached: a second ensure finds it.
    let (again, built2) = snapshot::ensure(&img, &cfg).await.expect("snapshot");
    assert!(!built2);
    assert_eq!(again.dir, snap.dir);

    let mut vms = Vec::new();
    let mut randoms = Vec::new();
    for name in ["a", "b"] {
        let t = Instant::now();
        let vm = QemuVm::restore(&img, &cfg, &snap).await.expect("restore");
        let took = t.elapsed();
        eprintln!("restore {name}: {took:?} ({:?})", vm.boot_stats());
        assert!(vm.boot_stats().restored);
        // Nothing of the other clone's writes is visible.
        let script = format!(
            "test ! -e /root/probe-a || {{ echo leaked; exit 1; }}; \
             echo data-{name} > /root/probe-{name} && \
             dd if=/dev/urandom of=/root/big bs=1M count=16 2>/dev/null && \
             s1=$(md5sum < /root/big) && sync && echo 3 > /proc/sys/vm/drop_caches && \
             s2=$(md5sum < /root/big) && test \"$s1\" = \"$s2\" && \
             md5sum /usr/bin/* > /dev/null && cat /root/probe-{name} && date +%s && \
             head -c 16 /dev/urandom | od -An -tx1"
        );
        let (out, err, st) = guest_sh(&vm, &script).await;
        assert_eq!(
            st,
            firebreak_agent::ExitStatus::Exited { code: 0 },
            "{out}{err}"
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines.first().copied(),
            Some(format!("data-{name}").as_str())
        );
        let guest_now: i64 = lines
            .get(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0);
        let host_now = host_now();
        assert!(
            (guest_now - host_now).abs() <= 5,
            "guest clock {guest_now} vs host {host_now}"
        );
        randoms.push(lines.get(2).map(|s| s.to_string()).unwrap_or_default());
        vms.push(vm);
    }
    assert_ne!(randoms[0], randoms[1], "clones share their entropy");
    for mut vm in vms {
        vm.kill().await;
    }
}

/// Reads completed on the guest's root disk (`/sys/block/vda/stat`, read by the
/// agent itself, which starts no process and touches no file on the disk).
async fn disk_reads(vm: &QemuVm) -> u64 {
    let stat = vm
        .client()
        .read_file("/sys/block/vda/stat")
        .await
        .expect("read_file")
        .expect("/sys/block/vda/stat exists");
    String::from_utf8_lossy(&stat)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a read count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_clone_starts_a_jobs_shells_without_reading_its_disk() {
    let img = image_or_skip!();
    let _g = SERIAL.lock().await;
    let cfg = small();
    let (snap, _) = snapshot::ensure(&img, &cfg).await.expect("snapshot");
    let mut vm = QemuVm::restore(&img, &cfg, &snap).await.expect("restore");
    let shells: [&[&str]; 3] = [
        &[
            "/bin/bash",
            "--noprofile",
            "--norc",
            "-eo",
            "pipefail",
            "-c",
            "echo hi",
        ],
        &["/bin/sh", "-e", "-c", "echo hi"],
        &["/bin/echo", "hi"],
    ];
    let start_shells = || async {
        for argv in shells {
            let spec = firebreak_agent::ExecSpec::new(argv.iter().copied()).env("PATH", PATH);
            let (out, err, st) = common::exec_collect(&vm.client(), spec).await;
            assert_eq!(
                (st, String::from_utf8_lossy(&out).into_owned()),
                (
                    firebreak_agent::ExitStatus::Exited { code: 0 },
                    "hi\n".to_string()
                ),
                "{argv:?}: {}",
                String::from_utf8_lossy(&err)
            );
        }
    };
    let before = disk_reads(&vm).await;
    start_shells().await;
    let inherited = disk_reads(&vm).await - before;
    // The snapshot left these programs and their libraries in the page cache
    // every clone inherits: under TCG each read from the disk is slow block
    // I/O on the restore's critical path. A few reads are the kernel's own
    // (one CI run saw 3 while the host was loaded), not the shells'.
    const KERNELS_OWN: u64 = 4;
    assert!(
        inherited <= KERNELS_OWN,
        "a restored clone read its disk {inherited} times to start bash, sh and echo"
    );
    // Control: without that page cache the same starts read the disk many more times,
    // so the bound above does tell an inherited cache from none.
    let spec = firebreak_agent::ExecSpec::new([
        "/bin/sh",
        "-c",
        "sync; echo 3 > /proc/sys/vm/drop_caches",
    ])
    .env("PATH", PATH);
    let (_, err, st) = common::exec_collect(&vm.client(), spec).await;
    assert_eq!(
        st,
        firebreak_agent::ExitStatus::Exited { code: 0 },
        "{}",
        String::from_utf8_lossy(&err)
    );
    let before = disk_reads(&vm).await;
    start_shells().await;
    let cold = disk_reads(&vm).await - before;
    eprintln!(
        "disk reads to start the shells: {inherited} in the clone, {cold} with no page cache"
    );
    assert!(
        cold > 3 * KERNELS_OWN,
        "with the page cache dropped the shells read the disk only {cold} times"
    );
    vm.kill().await;
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// The niceness of each QEMU this test process started (all its threads
/// must agree; a mix is reported as -100).
fn qemu_niceness() -> Vec<i32> {
    let marker = format!("fbvm-{}-", std::process::id());
    let mut out = Vec::new();
    for (dir, _) in common::procs::with_cmdline(&marker) {
        let nices: Vec<i32> = std::fs::read_dir(dir.join("task"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
            .filter_map(|st| {
                let rest = &st[st.rfind(')')? + 2..];
                rest.split_whitespace().nth(16)?.parse().ok()
            })
            .collect();
        match nices.first() {
            Some(&n) if nices.iter().all(|&x| x == n) => out.push(n),
            Some(_) => out.push(-100),
            None => {}
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_larger_than_the_budget_fails_before_anything_boots() {
    let img = image_or_skip!();
    let _g = SERIAL.lock().await;
    // 1 GiB of guest memory (1,088 MiB charged) against a budget of 700 MiB: no snapshot of
    // that size may be taken (it would boot such a VM) and no VM started.
    let big = VmConfig {
        memory_mib: 1024,
        ..small()
    };
    let p = provider(&img, big.clone()).with_pool(PoolConfig {
        size: 0,
        memory_budget_mib: Some(700),
    });
    let before = snapshot::existing(&img, &big)
        .await
        .expect("snapshot lookup");
    let t = Instant::now();
    let err = match p.create(JobSpec::new("too-big", "hello")).await {
        Ok(_) => panic!("a VM over the whole budget was created"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("does not fit the memory budget of 700 MiB"),
        "{err}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "failed after {:?}",
        t.elapsed()
    );
    if before.is_none() {
        assert!(
            snapshot::existing(&img, &big)
                .await
                .expect("lookup")
                .is_none(),
            "no snapshot taken for a VM that cannot run"
        );
    }
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_takes_from_the_pool_and_the_pool_keeps_to_its_budget() {
    let img = image_or_skip!();
    let _g = SERIAL.lock().await;
    // Budget for two 256 MiB VMs (320 MiB each with QEMU's overhead).
    let p = provider(&img, small()).with_pool(PoolConfig {
        size: 4,
        memory_budget_mib: Some(700),
    });
    let spec = JobSpec::new("pool-1", "hello");
    let snap = p.prewarm(&spec).await.expect("prewarm");
    let pool = p.pool().expect("pool").clone();
    let t = Instant::now();
    while pool.ready(&snap) < 2 && t.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    eprintln!("pool filled to {} in {:?}", pool.ready(&snap), t.elapsed());
    assert_eq!(pool.ready(&snap), 2, "budget allows exactly two");
    assert!(p.budget().used_mib() <= 700);

    let t = Instant::now();
    let sb = p.create(spec.clone()).await.expect("create");
    let (st, lines) = run(sb.as_ref(), sh("echo hi")).await;
    eprintln!(
        "pool job: first command done {:?}; notes {:?}",
        t.elapsed(),
        sb.notes()
    );
    assert_eq!((st, lines), (ExitStatus::Exited(0), vec!["hi".to_string()]));
    assert!(
        sb.notes().iter().any(|n| n.contains("warm pool")),
        "{:?}",
        sb.notes()
    );
    // The workspace is usable and private to this VM.
    let ws = sb.layout().workspace.clone();
    sb.write_file(&ws.join("x.txt"), b"1".to_vec(), None)
        .await
        .expect("write");
    assert_eq!(
        sb.read_file(&ws.join("x.txt")).await.expect("read"),
        Some(b"1".to_vec())
    );
    // Spare VMs run at low CPU priority; the one a job took is back to normal.
    if nix_is_root() {
        let mut nices = qemu_niceness();
        nices.sort();
        assert_eq!(nices, vec![0, 10], "niceness of our QEMUs (job's, spare)");
    }
    sb.destroy().await.expect("destroy");
    // Destroyed VMs return their memory: the pool refills to two.
    let t = Instant::now();
    while pool.ready(&snap) < 2 && t.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(pool.ready(&snap), 2);
    p.shutdown().await;
    assert_eq!(pool.ready_total(), 0);
    let t = Instant::now();
    while p.budget().used_mib() > 0 && t.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(p.budget().used_mib(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_bomb_fails_the_job_only() {
    let img = image_or_skip!();
    let _g = SERIAL.lock().await;
    let p = provider(&img, small());
    let sb = p
        .create(JobSpec::new("membomb", "hello"))
        .await
        .expect("create");
    eprintln!("notes: {:?}", sb.notes());
    let t = Instant::now();
    // `tail` keeps the whole newline-free input in memory.
    let (st, lines) = run(
        sb.as_ref(),
        sh("head -c 2000M /dev/zero | tail > /dev/null; echo status $?")
            // Before the OOM killer acts, the guest reclaims and re-reads the
            // job's program files for a while: 13-57 s seen here, longer on
            // a loaded host.
            .timeout(Duration::from_secs(300)),
    )
    .await;
    eprintln!("memory bomb: {st:?} {lines:?} after {:?}", t.elapsed());
    assert_eq!(st, ExitStatus::Exited(0));
    // stdout's `status` and the shell's `Killed` on stderr come through two
    // pipes, in either order.
    assert!(lines.iter().any(|l| l == "status 137"), "{lines:?}");
    // And the command's log says why, whichever of the two acted.
    assert!(
        lines.iter().any(
            |l| l.starts_with("firebreak-agent: out of memory: the kernel killed")
                || (l.starts_with("firebreak-agent: ") && l.contains("memory"))
        ),
        "no line saying why: {lines:?}"
    );
    // The guest's OOM killer did it, and the agent is still there.
    // The job cgroup's OOM killer or the agent's thrash guard, never the
    // guest-wide OOM killer.
    let (st, lines) = run(
        sb.as_ref(),
        sh(&format!(
            "dmesg | grep -c -e 'Memory cgroup out of memory: Killed process' -e '{}'; \
             dmesg | tail -3; echo alive",
            firebreak_agent::thrash::KMSG_PREFIX
        )),
    )
    .await;
    eprintln!("guest kernel log: {lines:?}");
    assert_eq!(st, ExitStatus::Exited(0), "{lines:?}");
    assert!(
        lines
            .first()
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n >= 1),
        "no kill by the job cgroup's OOM killer or the thrash guard in the guest's kernel log: {lines:?}"
    );
    assert_eq!(lines.last().map(String::as_str), Some("alive"));
    sb.destroy().await.expect("destroy");
}

/// A step's command is stopped as GitHub's runner stops it (SIGINT first), in a guest too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_asked_to_stop_hears_sigint_in_the_guest() {
    let img = image_or_skip!();
    let _g = SERIAL.lock().await;
    let p = provider(&img, small());
    let sb = p
        .create(JobSpec::new("interrupt", "hello"))
        .await
        .expect("create");
    let mut req = ExecRequest::new([
        "/bin/bash",
        "-c",
        "trap 'echo cleaned up on INT; exit 3' INT; echo ready; sleep 31419 & wait",
    ])
    .env("PATH", PATH)
    .timeout(Duration::from_secs(2));
    req.interrupt_first = true;
    let t = Instant::now();
    let (st, lines) = run(sb.as_ref(), req).await;
    eprintln!("{st:?} {lines:?} after {:?}", t.elapsed());
    assert_eq!(st, ExitStatus::TimedOut);
    assert_eq!(lines, ["ready", "cleaned up on INT"]);
    assert!(t.elapsed() < Duration::from_secs(7), "{:?}", t.elapsed());
    let (_, lines) = run(sb.as_ref(), sh("pgrep -c -f 'sleep 3141[9]' || true")).await;
    assert_eq!(lines, ["0"], "the command's tree is gone");
    sb.destroy().await.expect("destroy");
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_bomb_fails_the_job_only() {
    let img = image_or_skip!();
    let _g = SERIAL.lock().await;
    let p = provider(&img, small());
    let mut spec = JobSpec::new("forkbomb", "hello");
    spec.limits.max_pids = Some(64);
    let sb = p.create(spec).await.expect("create");
    let t = Instant::now();
    let bomb = run(
        sb.as_ref(),
        sh("f() { f & f; }; f").timeout(Duration::from_secs(15)),
    );
    // One process, no fork: the job's pids are all taken by the bomb.
    let probe = async {
        tokio::time::sleep(Duration::from_secs(4)).await;
        run(
            sb.as_ref(),
            ExecRequest::new([
                "/bin/cat",
                "/sys/fs/cgroup/pids.max",
                "/sys/fs/cgroup/pids.current",
                "/sys/fs/cgroup/pids.events",
            ]),
        )
        .await
    };
    let ((st, _), (pst, plines)) = tokio::join!(bomb, probe);
    eprintln!(
        "fork bomb: {st:?} after {:?}; cgroups: {plines:?}",
        t.elapsed()
    );
    assert!(!st.success(), "{st:?}");
    assert_eq!(pst, ExitStatus::Exited(0));
    // The job cgroup: limit 64, at most 64 (+1: the probe migrated in),
    // and forks were refused.
    assert_eq!(plines.first().map(String::as_str), Some("64"), "{plines:?}");
    let current: u64 = plines
        .get(1)
        .and_then(|l| l.parse().ok())
        .unwrap_or(u64::MAX);
    assert!(current <= 65, "{plines:?}");
    let refused: u64 = plines
        .get(2)
        .and_then(|l| l.strip_prefix("max "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(refused > 0, "{plines:?}");
    let (st, lines) = run(sb.as_ref(), sh("echo alive")).await;
    assert_eq!(
        (st, lines),
        (ExitStatus::Exited(0), vec!["alive".to_string()])
    );
    assert!(t.elapsed() < Duration::from_secs(60));
    sb.destroy().await.expect("destroy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_timeout_kills_a_pooled_vm_counted_from_take() {
    let img = image_or_skip!();
    let _g = SERIAL.lock().await;
    let cfg = VmConfig {
        job_timeout: Some(Duration::from_secs(4)),
        ..small()
    };
    let p = provider(&img, cfg).with_pool(PoolConfig {
        size: 1,
        memory_budget_mib: None,
    });
    let spec = JobSpec::new("timeout", "hello");
    let snap = p.prewarm(&spec).await.expect("prewarm");
    let pool = p.pool().expect("pool").clone();
    let t = Instant::now();
    while pool.ready(&snap) < 1 && t.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Pooled longer than the job timeout: must not count.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let t = Instant::now();
    let sb = p.create(spec).await.expect("create");
    assert!(
        sb.notes().iter().any(|n| n.contains("warm pool")),
        "{:?}",
        sb.notes()
    );
    let (tx, _rx) = tokio::sync::mpsc::channel::<OutputEvent>(16);
    let res = sb.exec(sh("sleep 600"), tx).await;
    let took = t.elapsed();
    eprintln!("job timeout: {res:?} after {took:?}");
    assert!(res.is_err(), "the VM should be gone: {res:?}");
    assert!(took >= Duration::from_millis(3500), "{took:?}");
    assert!(took < Duration::from_secs(15), "{took:?}");
    sb.destroy().await.expect("destroy");
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_whose_agent_stops_answering_mid_job_is_killed_and_says_why() {
    let img = image_or_skip!();
    let _g = SERIAL.lock().await;
    let cfg = VmConfig {
        unresponsive_after: Some(Duration::from_secs(4)),
        ..small()
    };
    let p = provider(&img, cfg);
    let sb = p
        .create(JobSpec::new("hung", "hello"))
        .await
        .expect("create");
    // A busy but healthy job is left alone: the agent answers its pings.
    let (tx, _rx) = tokio::sync::mpsc::channel::<OutputEvent>(64);
    let st = sb
        .exec(
            sh("i=0; while [ $i -lt 8 ]; do sleep 1; i=$((i+1)); done"),
            tx,
        )
        .await
        .expect("a job that outlives the liveness limit");
    assert_eq!(st, ExitStatus::Exited(0));
    // The command stops the agent that started it: no more answers.
    let t = Instant::now();
    let (tx, _rx) = tokio::sync::mpsc::channel::<OutputEvent>(64);
    let res = sb.exec(sh("kill -STOP $PPID; sleep 600"), tx).await;
    let took = t.elapsed();
    eprintln!("hung agent: {res:?} after {took:?}");
    let err = res.expect_err("the hung VM should be killed");
    assert!(
        err.to_string().contains("stopped answering"),
        "the error should say why: {err}"
    );
    assert!(took < Duration::from_secs(30), "{took:?}");
    // Later requests say the same.
    let err = sb
        .read_file(&sb.layout().workspace.join("x"))
        .await
        .expect_err("the VM is gone");
    assert!(err.to_string().contains("stopped answering"), "{err}");
    sb.destroy().await.expect("destroy");
}

/// Creates a job's sandbox, checks the job log says `how` it started, runs
/// `date`, 16 random bytes and `extra` (one line each), checks the guest clock
/// against the host's and destroys the sandbox. Returns the output lines and
/// the notes.
async fn restored_job(
    p: &QemuProvider,
    id: &str,
    how: &str,
    extra: &str,
) -> (Vec<String>, Vec<String>) {
    let sb = p.create(JobSpec::new(id, "hello")).await.expect("create");
    let notes = sb.notes();
    assert!(notes.iter().any(|n| n.contains(how)), "{notes:?}");
    let (st, lines) = run(
        sb.as_ref(),
        sh(&format!(
            "date +%s; head -c 16 /dev/urandom | od -An -tx1; {extra}"
        )),
    )
    .await;
    assert_eq!(st, ExitStatus::Exited(0), "{lines:?}");
    let guest: i64 = lines
        .first()
        .and_then(|l| l.trim().parse().ok())
        .expect("date");
    let host = host_now();
    assert!(
        (guest - host).abs() <= 2,
        "guest clock {guest} vs host {host}"
    );
    sb.destroy().await.expect("destroy");
    (lines, notes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandboxes_restored_by_the_provider_get_the_hosts_clock_a_real_clocksource_and_their_own_entropy(
) {
    let img = image_or_skip!();
    let _g = SERIAL.lock().await;
    let p = provider(&img, small());
    let spec = JobSpec::new("clock", "hello");
    p.prewarm(&spec).await.expect("snapshot");
    // Without a refresh the guest clock would lag by at least this much.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut randoms = Vec::new();
    let mut ids = Vec::new();
    for i in 0..2 {
        let (lines, notes) = restored_job(
            &p,
            &format!("clock-{i}"),
            "restored from its snapshot",
            "cat /etc/machine-id; \
             cat /sys/devices/system/clocksource/clocksource0/current_clocksource",
        )
        .await;
        // The guest keeps time with a real clocksource, never jiffies (no tickless idle, so
        // an idle VM burns host CPU on its timer tick, and a clock that lags under load);
        // under TCG that is the TSC, which QEMU gives every vCPU from the host's.
        let clocksource = lines.get(3).map(|l| l.trim()).unwrap_or_default();
        assert!(
            !clocksource.contains("jiffies"),
            "clocksource {clocksource}"
        );
        if notes.iter().any(|n| n.contains("TCG")) {
            assert_eq!(clocksource, "tsc", "{notes:?}");
        }
        randoms.push(lines.get(1).cloned().unwrap_or_default());
        let id = lines.get(2).cloned().unwrap_or_default();
        assert!(
            id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "machine id {id:?}"
        );
        ids.push(id);
    }
    assert_ne!(randoms[0], randoms[1], "clones must not share entropy");
    assert_ne!(ids[0], ids[1], "clones must not share a machine id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_vm_that_stops_answering_is_replaced_by_a_cold_boot() {
    let img = image_or_skip!();
    let _g = SERIAL.lock().await;
    // A shape of its own: this test discards the snapshot it restores from.
    let cfg = VmConfig {
        memory_mib: 320,
        first_requests_timeout: Duration::from_secs(3),
        ..small()
    };
    let p = provider(&img, cfg.clone()).pause_restored_vms();
    let snap = p
        .prewarm(&JobSpec::new("stall", "hello"))
        .await
        .expect("snapshot");
    let t = Instant::now();
    let sb = p
        .create(JobSpec::new("stall", "hello"))
        .await
        .expect("create");
    let took = t.elapsed();
    let notes = sb.notes().join("\n");
    assert!(notes.contains("restored from its snapshot"), "{notes}");
    // Two clones are tried, then the snapshot is dropped and a VM booted.
    assert!(
        notes.contains("unusable (no answer to its first requests within 3s); trying another"),
        "{notes}"
    );
    assert!(notes.contains("unusable too (no answer"), "{notes}");
    assert!(notes.contains("booted (1 attempt(s))"), "{notes}");
    let (st, lines) = run(sb.as_ref(), sh("echo still-works")).await;
    assert_eq!(st, ExitStatus::Exited(0), "{lines:?}");
    assert_eq!(lines, ["still-works"]);
    sb.destroy().await.expect("destroy");
    assert!(!snap.dir.exists(), "the suspect snapshot must be discarded");
    eprintln!("stalled clone replaced by a cold boot in {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_size_label_or_default_grows_the_jobs_root_filesystem_up_to_the_hosts_maximum() {
    let img = image_or_skip!();
    let _g = SERIAL.lock().await;
    // This host allows at most 7 GiB; the job asks for 8 (its label wins over the run's
    // default, `--vm-disk 1`).
    let p = provider(
        &img,
        VmConfig {
            max_disk_bytes: 7 << 30,
            default_disk_bytes: Some(1 << 30),
            ..small()
        },
    );
    let mut spec = JobSpec::new("disk", "hello");
    spec.limits.disk_bytes = Some(8 << 30);
    let sb = p.create(spec).await.expect("create");
    let notes = sb.notes().join("\n");
    assert!(
        notes.contains("disk size 8 GiB capped to 7 GiB, the most a job's disk may grow to"),
        "{notes}"
    );
    assert!(notes.contains("root filesystem grown from"), "{notes}");
    let (st, lines) = run(
        sb.as_ref(),
        sh("df -B1 --output=size / | tail -1; head -c 100000000 /dev/zero > /big && echo wrote"),
    )
    .await;
    assert_eq!(st, ExitStatus::Exited(0), "{lines:?}");
    let size: u64 = lines
        .first()
        .and_then(|l| l.trim().parse().ok())
        .expect("df size");
    // ext4 keeps some blocks for its own metadata.
    assert!(
        size > 6 << 30 && size <= 7 << 30,
        "root filesystem is {size} bytes"
    );
    assert_eq!(lines.get(1).map(String::as_str), Some("wrote"));
    sb.destroy().await.expect("destroy");

    // A job without a disk label gets the run's default; the image's filesystem cannot
    // shrink to it, which is reported.
    let sb = p
        .create(JobSpec::new("disk-small", "hello"))
        .await
        .expect("create");
    let notes = sb.notes().join("\n");
    assert!(notes.contains("disk size 1.0 GiB not applied"), "{notes}");
    sb.destroy().await.expect("destroy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_qemu_serves_the_next_restore_and_dies_with_the_provider() {
    let img = image_or_skip!();
    let _g = SERIAL.lock().await;
    let runs = tempfile::tempdir().expect("tempdir");
    let cfg = VmConfig {
        run_parent: Some(runs.path().to_path_buf()),
        ..small()
    };
    let p = provider(&img, cfg);
    p.prewarm(&JobSpec::new("standby", "hello"))
        .await
        .expect("snapshot");
    let wait_standby = || async {
        let t = Instant::now();
        while !p.standby_ready() && t.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(p.standby_ready(), "no standby QEMU after 60 s");
    };
    // Two jobs in a row: each finds a QEMU waiting (the first one started by
    // prewarm, the second after the first job's VM was ready), and works like
    // any restored VM: fresh clock, its own entropy.
    let mut randoms = Vec::new();
    for i in 0..2 {
        wait_standby().await;
        let (lines, _) = restored_job(
            &p,
            &format!("standby-{i}"),
            "restored from its snapshot into a QEMU started ahead",
            ":",
        )
        .await;
        randoms.push(lines.get(1).cloned().unwrap_or_default());
    }
    assert_ne!(randoms[0], randoms[1], "clones must not share entropy");
    // The spare for a third job is killed with the provider, run directory and all.
    wait_standby().await;
    p.shutdown().await;
    assert!(!p.standby_ready());
    let marker = runs.path().to_string_lossy().into_owned();
    let t = Instant::now();
    loop {
        let qemus: Vec<String> = common::procs::with_cmdline(&marker)
            .into_iter()
            .map(|(_, cmdline)| cmdline)
            .collect();
        let dirs = std::fs::read_dir(runs.path()).map_or(0, |d| d.count());
        if qemus.is_empty() && dirs == 0 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "after shutdown: processes {qemus:?}, {dirs} run directories"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
