//! Developer probe: where the time of a snapshot restore goes
//! (`cargo run --release -p firebreak-vm --example restore_probe -- [--cold] [--nocg] [--membomb] [--pool SECS] [--stress N] [--grow GIB]`;
//! `FBVM_NET=1` gives `--stress` jobs the network;
//! `FIREBREAK_TRACE_RESTORE=1` adds the restore's own breakdown; `FBVM_CMDLINE` adds kernel
//! command line words; `FBVM_FIRST_SH` runs a script as a restored guest's first command,
//! `FBVM_FIRST_ARGV` a program (words split on spaces), timed like the `echo`s after it;
//! with `--boot N`, `FBVM_CLOCK_RATE=1` checks the guest clock against the host's).
//!
//! Prints, per restored VM, the time to first output / exit of repeated
//! `exec`s. `--cold` adds a cold-booted VM for comparison; `--nocg` repeats
//! the `exec`s with the agent's per-command cgroups turned off (a read-only
//! tmpfs over `/sys/fs/cgroup`: the agent then spawns without its re-exec
//! helper); `--membomb` runs a memory bomb and prints the guest console.

use std::time::Instant;

use firebreak_vm::image::ImageStore;
use firebreak_vm::{snapshot, QemuVm, VmConfig};

/// Milliseconds to the first output byte and to the exit of `argv`.
async fn exec(vm: &QemuVm, argv: &[&str]) -> (f64, f64) {
    let t = Instant::now();
    let spec = firebreak_agent::ExecSpec::new(argv.iter().copied()).env("PATH", "/usr/bin:/bin");
    let mut h = match vm.client().exec(spec).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("exec: {e}");
            return (0.0, 0.0);
        }
    };
    let mut first = None;
    while let Ok(firebreak_agent::ExecEvent::Output(..)) = h.next().await {
        first.get_or_insert(t.elapsed().as_secs_f64() * 1e3);
    }
    (first.unwrap_or(f64::NAN), t.elapsed().as_secs_f64() * 1e3)
}

async fn report(what: &str, vm: &QemuVm) {
    let mut v = Vec::new();
    // `FBVM_FIRST_SH`: a script run as the restored guest's very first
    // command (its output, e.g. in-guest timestamps, is printed).
    if let Ok(script) = std::env::var("FBVM_FIRST_SH") {
        let mono = || {
            nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
                .map(|t| t.tv_sec() as f64 + t.tv_nsec() as f64 * 1e-9)
                .unwrap_or(0.0)
        };
        eprintln!("first script starts at monotonic {:.6}", mono());
        let t = Instant::now();
        let spec = firebreak_agent::ExecSpec::new(["/bin/sh", "-c", script.as_str()])
            .env("PATH", "/usr/bin:/bin");
        if let Ok(h) = vm.client().exec(spec).await {
            if let Ok((o, e, _)) = h.collect().await {
                eprintln!("first script ends at monotonic {:.6}", mono());
                eprintln!(
                    "first script, {:.0} ms:\n{}{}",
                    t.elapsed().as_secs_f64() * 1e3,
                    String::from_utf8_lossy(&o),
                    String::from_utf8_lossy(&e)
                );
            }
        }
    }
    if let Ok(first) = std::env::var("FBVM_FIRST_ARGV") {
        let argv: Vec<&str> = first.split_whitespace().collect();
        let (f, e) = exec(vm, &argv).await;
        v.push(format!("[{first}] {f:.0}/{e:.0}"));
    }
    for _ in 0..4 {
        let (f, e) = exec(vm, &["/bin/echo", "hi"]).await;
        v.push(format!("{f:.0}/{e:.0}"));
    }
    for _ in 0..2 {
        let (f, e) = exec(vm, &["/bin/sh", "-c", "echo hi"]).await;
        v.push(format!("sh {f:.0}/{e:.0}"));
    }
    let t = Instant::now();
    let _ = vm.client().ping().await;
    eprintln!(
        "{what}: ping {:.1} ms; first/exit ms: {}",
        t.elapsed().as_secs_f64() * 1e3,
        v.join(" ")
    );
}

/// `--pool SECS`: a warm pool of one, idle for SECS, then a job's sandbox
/// from it running `echo hi` three times (first byte, ms each).
async fn pool_probe(img: &firebreak_vm::Image, cfg: &VmConfig, idle: u64) {
    use firebreak_runner::sandbox::{ExecRequest, JobSpec, SandboxProvider};
    let p = firebreak_vm::QemuProvider::new(
        ImageStore::open_default(),
        Some(img.manifest.hash.clone()),
        cfg.clone(),
    )
    .with_pool(firebreak_vm::PoolConfig {
        size: 1,
        memory_budget_mib: None,
    });
    let spec = JobSpec::new("probe", "probe");
    let Ok(snap) = p.prewarm(&spec).await else {
        eprintln!("no snapshot");
        return;
    };
    let Some(pool) = p.pool() else { return };
    while pool.ready(&snap) < 1 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tokio::time::sleep(std::time::Duration::from_secs(idle)).await;
    let t = Instant::now();
    let Ok(sb) = p.create(spec).await else {
        eprintln!("create failed");
        return;
    };
    let mut v = vec![format!("create {:.0}", t.elapsed().as_secs_f64() * 1e3)];
    for _ in 0..3 {
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let t = Instant::now();
        let req = ExecRequest::new(["echo", "hi"]).env("PATH", "/usr/local/bin:/usr/bin:/bin");
        let run = sb.exec(req, tx);
        tokio::pin!(run);
        let mut first = None;
        loop {
            tokio::select! {
                ev = rx.recv(), if first.is_none() => if ev.is_some() { first = Some(t.elapsed()) },
                _ = &mut run => break,
            }
        }
        v.push(format!(
            "{:.0}",
            first.unwrap_or_default().as_secs_f64() * 1e3
        ));
    }
    eprintln!("pool, idle {idle} s: {}", v.join(" / "));
    let _ = sb.destroy().await;
    p.shutdown().await;
}

/// `--stress N`: N sandboxes created one after another through
/// `QemuProvider::create` (restored from the snapshot, no pool), each running
/// `echo hi`; prints how many got stuck (90 s) and where.
async fn stress_probe(img: &firebreak_vm::Image, cfg: &VmConfig, n: u32, network: bool) {
    use firebreak_runner::sandbox::{ExecRequest, JobSpec, SandboxProvider};
    use std::time::Duration;
    let p = firebreak_vm::QemuProvider::new(
        ImageStore::open_default(),
        Some(img.manifest.hash.clone()),
        cfg.clone(),
    );
    let (mut ok, mut stuck) = (0, 0);
    for i in 0..n {
        let mut spec = JobSpec::new(format!("stress{i}"), "stress");
        spec.network = network;
        let t = Instant::now();
        let sb = match tokio::time::timeout(Duration::from_secs(90), p.create(spec)).await {
            Ok(Ok(sb)) => sb,
            Ok(Err(e)) => {
                eprintln!("{i}: create failed: {e}");
                stuck += 1;
                continue;
            }
            Err(_) => {
                eprintln!("{i}: create stuck");
                stuck += 1;
                continue;
            }
        };
        let created = t.elapsed();
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let req = ExecRequest::new(["echo", "hi"]).env("PATH", "/usr/local/bin:/usr/bin:/bin");
        let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
        match tokio::time::timeout(Duration::from_secs(30), sb.exec(req, tx)).await {
            Ok(Ok(_)) => ok += 1,
            Ok(Err(e)) => {
                eprintln!("{i}: exec failed: {e}");
                stuck += 1;
            }
            Err(_) => {
                eprintln!("{i}: exec stuck");
                stuck += 1;
            }
        }
        drain.abort();
        let notes = sb.notes().join("; ");
        eprintln!(
            "{i}: create {:.0} ms, total {:.0} ms ({notes})",
            created.as_secs_f64() * 1e3,
            t.elapsed().as_secs_f64() * 1e3
        );
        let _ = sb.destroy().await;
    }
    eprintln!("stress: {ok} ok, {stuck} stuck or failed");
}

/// `--grow GIB`: a job's sandbox asking for a GIB root filesystem (a
/// `runs-on` disk label); prints the sandbox's notes (how long growing took)
/// and `df` in the guest.
async fn grow_probe(img: &firebreak_vm::Image, cfg: &VmConfig, gib: u64) {
    use firebreak_runner::sandbox::{ExecRequest, JobSpec, SandboxProvider};
    let p = firebreak_vm::QemuProvider::new(
        ImageStore::open_default(),
        Some(img.manifest.hash.clone()),
        cfg.clone(),
    );
    let mut spec = JobSpec::new("grow", "grow");
    spec.limits.disk_bytes = Some(gib << 30);
    let sb = match p.create(spec).await {
        Ok(sb) => sb,
        Err(e) => {
            eprintln!("create: {e}");
            return;
        }
    };
    eprintln!("{}", sb.notes().join("\n"));
    let (tx, mut rx) = tokio::sync::mpsc::channel::<firebreak_runner::sandbox::OutputEvent>(16);
    let print = tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            eprintln!("{}", ev.line);
        }
    });
    let _ = sb
        .exec(
            ExecRequest::new(["df", "-h", "/"]).env("PATH", "/usr/bin:/bin"),
            tx,
        )
        .await;
    let _ = print.await;
    let _ = sb.destroy().await;
}

/// `--boot N`: N cold boots one after another; per boot the time to agent
/// ready and the guest kernel's clock at a few milestones of its console.
async fn boot_probe(img: &firebreak_vm::Image, cfg: &VmConfig, n: u32) {
    let mut cfg = cfg.clone();
    if std::env::var_os("FBVM_QUIET").is_none() {
        cfg.extra_cmdline.push("loglevel=7".into());
    }
    cfg.boot_attempts = 1;
    cfg.boot_timeout = Some(std::time::Duration::from_secs(30));
    for i in 0..n {
        let t = Instant::now();
        match QemuVm::boot(img, &cfg).await {
            Ok(vm) => {
                let total = t.elapsed().as_secs_f64();
                let t_up = t.elapsed().as_secs_f64();
                let up = vm.client().read_file("/proc/uptime").await.ok().flatten();
                let up: f64 = up
                    .and_then(|u| {
                        String::from_utf8_lossy(&u)
                            .split_whitespace()
                            .next()?
                            .parse()
                            .ok()
                    })
                    .unwrap_or(f64::NAN);
                eprintln!("  guest uptime {up:.3} s at {t_up:.3} s after the boot began: the guest kernel started {:.3} s after", t_up - up);
                if std::env::var_os("FBVM_CLOCK_RATE").is_some() {
                    let read_up = || async {
                        let u = vm
                            .client()
                            .read_file("/proc/uptime")
                            .await
                            .ok()
                            .flatten()
                            .unwrap_or_default();
                        String::from_utf8_lossy(&u)
                            .split_whitespace()
                            .next()
                            .and_then(|v| v.parse::<f64>().ok())
                            .unwrap_or(f64::NAN)
                    };
                    let (h0, g0) = (Instant::now(), read_up().await);
                    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
                    let g1 = read_up().await;
                    eprintln!(
                        "  guest clock ran {:.3} s in {:.3} s of host time",
                        g1 - g0,
                        h0.elapsed().as_secs_f64()
                    );
                }
                let c = vm.console();
                let at = |pat: &str| {
                    c.lines()
                        .find(|l| l.contains(pat))
                        .and_then(|l| l.get(1..13))
                        .map(|s| s.trim().to_string())
                        .unwrap_or_else(|| "-".into())
                };
                eprintln!(
                    "boot {i}: {total:.2} s; kernel clock: alternatives done {}, PCI/ACPI done {}, /init {}, ext4 {}, last {}",
                    at("Freeing SMP alternatives"),
                    at("PCI: CLS"),
                    at("Run /init"),
                    at("EXT4-fs"),
                    c.lines().rfind(|l| l.starts_with('[')).and_then(|l| l.get(1..13)).unwrap_or("-").trim()
                );
                if std::env::var_os("FBVM_CONSOLE").is_some() {
                    eprintln!("{c}");
                }
                let t = Instant::now();
                let prep = snapshot::prepare_guest(&vm.client()).await;
                let p = t.elapsed().as_secs_f64() * 1e3;
                let (f, e) = exec(&vm, &["/bin/echo", "hi"]).await;
                eprintln!(
                    "  then prepare_guest {p:.0} ms ({:?}), first echo {f:.0}/{e:.0} ms",
                    prep.map(|p| p.job_memory_max)
                );
            }
            Err(e) => eprintln!("boot {i}: {e} after {:.2} s", t.elapsed().as_secs_f64()),
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let store = ImageStore::open_default();
    let img = match std::env::var("FBVM_IMAGE") {
        Ok(h) => store.get(&h).ok().flatten().ok_or(()),
        Err(_) => store.latest().map_err(|_| ()),
    };
    let Ok(img) = img else {
        eprintln!("no image");
        return;
    };
    let env_num = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let cfg = VmConfig {
        memory_mib: env_num("FBVM_MEMORY_MIB", 256),
        vcpus: u32::try_from(env_num("FBVM_VCPUS", 1)).unwrap_or(1),
        // Kernel command line experiments, e.g. FBVM_CMDLINE=init_on_alloc=0.
        extra_cmdline: std::env::var("FBVM_CMDLINE")
            .map(|v| v.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default(),
        cpu_model: std::env::var("FBVM_CPU").ok(),
        machine: if std::env::var("FBVM_MACHINE").as_deref() == Ok("microvm") {
            firebreak_vm::Machine::Microvm
        } else {
            firebreak_vm::Machine::Q35
        },
        ..VmConfig::default()
    };
    let t = Instant::now();
    let kvm = firebreak_vm::qemu::probe_kvm(&img.kernel()).await;
    eprintln!("KVM probe: {kvm:?} in {:?}", t.elapsed());
    if let Some(n) = std::env::args().skip_while(|a| a != "--stress").nth(1) {
        let net = std::env::var_os("FBVM_NET").is_some();
        stress_probe(&img, &cfg, n.parse().unwrap_or(20), net).await;
        return;
    }
    if let Some(n) = std::env::args().skip_while(|a| a != "--boot").nth(1) {
        boot_probe(&img, &cfg, n.parse().unwrap_or(5)).await;
        return;
    }
    let Ok((snap, _)) = snapshot::ensure(&img, &cfg).await else {
        eprintln!("no snapshot");
        return;
    };
    if let Some(idle) = std::env::args().skip_while(|a| a != "--pool").nth(1) {
        pool_probe(&img, &cfg, idle.parse().unwrap_or(15)).await;
        return;
    }
    if let Some(gb) = std::env::args().skip_while(|a| a != "--grow").nth(1) {
        grow_probe(&img, &cfg, gb.parse().unwrap_or(10)).await;
        return;
    }
    for _ in 0..2 {
        let t = Instant::now();
        let vm = match QemuVm::restore(&img, &cfg, &snap).await {
            Ok(v) => v,
            Err(e) => {
                eprintln!("{e}");
                return;
            }
        };
        let r = t.elapsed().as_secs_f64() * 1e3;
        report(&format!("restored in {r:.0} ms"), &vm).await;
        if let Ok(script) = std::env::var("FBVM_GUEST_SH") {
            let spec = firebreak_agent::ExecSpec::new(["/bin/bash", "-c", script.as_str()])
                .env("PATH", "/usr/sbin:/usr/bin:/bin");
            if let Ok(h) = vm.client().exec(spec).await {
                if let Ok((o, e, st)) = h.collect().await {
                    eprintln!(
                        "{}{}{st:?}",
                        String::from_utf8_lossy(&o),
                        String::from_utf8_lossy(&e)
                    );
                }
            }
        }
        if std::env::args().any(|a| a == "--nocg") {
            let _ = exec(
                &vm,
                &[
                    "/bin/mount",
                    "-t",
                    "tmpfs",
                    "-o",
                    "ro",
                    "none",
                    "/sys/fs/cgroup",
                ],
            )
            .await;
            report("  without per-command cgroups", &vm).await;
        }
    }
    if std::env::args().any(|a| a == "--membomb") {
        if let Ok(mut vm) = QemuVm::restore(&img, &cfg, &snap).await {
            let spec = firebreak_agent::ExecSpec::new([
                "/bin/sh",
                "-c",
                "cat /proc/$PPID/oom_score_adj; cat /proc/self/cgroup; free -m; head -c 2000M /dev/zero | tail > /dev/null; echo status $?",
            ])
            .env("PATH", "/usr/bin:/bin");
            let r = match vm.client().exec(spec).await {
                Ok(h) => h.collect().await.map(|(o, e, st)| {
                    format!(
                        "{}{} {st:?}",
                        String::from_utf8_lossy(&o),
                        String::from_utf8_lossy(&e)
                    )
                }),
                Err(e) => Err(e),
            };
            eprintln!("membomb: {r:?}; running: {}", vm.is_running());
            let c = vm.console();
            let lines: Vec<&str> = c.lines().collect();
            eprintln!("{}", lines[lines.len().saturating_sub(40)..].join("\n"));
            eprintln!(
                "{}",
                std::fs::read_to_string(vm.run_dir().join("qemu.log")).unwrap_or_default()
            );
        }
        return;
    }
    if std::env::args().any(|a| a == "--cold") {
        match QemuVm::boot(&img, &cfg).await {
            Ok(vm) => {
                eprintln!("cold boot: {:?}", vm.boot_stats());
                if std::env::var_os("FBVM_CONSOLE").is_some() {
                    eprintln!("{}", vm.console());
                }
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                report("cold-booted", &vm).await;
            }
            Err(e) => eprintln!("{e}"),
        }
    }
}
