//! `bench/sandbox`: job accepted → first byte of output, per sandbox kind.
//!
//! ```text
//! cargo run --release -p firebreak-vm --example sandbox_bench -- [--runs N] [--no-cold] [--no-capacity] [--capacity-max N] [--budget MIB] [--vcpus N] [--kernel package|minimal] [--image HASH] [--no-standby] [--no-pool]
//! ```
//!
//! For each kind it calls `SandboxProvider::create` (the clock starts
//! there: "job accepted"), runs `echo hi` and stops the clock at the first
//! output line; then destroys the sandbox. Kinds: `host` and `namespace`
//! (references), QEMU `cold` (boot every time), `restore` (clone of the
//! cached snapshot; the snapshot is taken before timing starts; each run
//! waits until the provider's standby QEMU process is up, as a job that
//! is not the first would find it: `--no-standby` turns that off), `pool`
//! (warm pool of 1; each run waits until the pool has refilled, so this
//! measures a take). VMs: 256 MiB, 1 vCPU (`--vcpus N` for more), on the
//! newest image (`--kernel minimal`: the newest image with the minimal
//! kernel, `--kernel package` with Debian's; `--image HASH` a given image, for comparing
//! two agents or kernels).
//!
//! Then capacity: a warm pool as large as the memory budget allows
//! (`--budget MIB`; by default half the host's RAM, 320 MiB charged per
//! 256 MiB VM), how many VMs it holds, their host RSS, the host memory they
//! took and their CPU use while idle; then every pooled VM gets a job at
//! once (a command that prints a line and keeps its guest busy for 5 s):
//! how many ran together, how long the last waited for its first byte, and
//! how long the host took to spawn `/bin/true` meanwhile. The idle CPU is
//! measured over 10 s starting `SANDBOX_BENCH_SETTLE_SECS` (default 3) after
//! the pool filled.

use std::time::{Duration, Instant};

const USAGE: &str =
    "usage: sandbox_bench [--runs N] [--no-cold] [--no-capacity] [--capacity-max N] \
[--budget MIB] [--vcpus N] [--kernel package|minimal] [--image HASH] [--no-standby] [--no-pool] [--cpu LIST] \
[--cmdline ARG]\n\
Times job accepted -> first byte of `echo hi` for host, namespace and QEMU cold boot, snapshot \
restore and warm pool (median, p90), then fills a warm pool as large as the memory budget \
allows (--budget MIB; default half the host's RAM), reports their RSS and idle CPU, then gives \
every one of them a job at once and reports how many ran together and how the host responded.";

use firebreak_runner::sandbox::{
    ExecRequest, HostProvider, JobSpec, NamespaceConfig, NamespaceProvider, OutputEvent,
    SandboxProvider,
};
use firebreak_vm::image::ImageStore;
use firebreak_vm::pool::{vm_cost_mib, MemoryBudget};
use firebreak_vm::{KernelKind, PoolConfig, QemuProvider, Start, VmConfig};

/// Median, p90, min (ms) and successful runs.
type Summary = (f64, f64, f64, usize);
/// Name, summary, target.
type Row = (String, Option<Summary>, &'static str);

struct Opts {
    runs: usize,
    cold: bool,
    capacity: bool,
    capacity_max: Option<usize>,
    /// Memory budget for the capacity run (MiB; `None`: half the host's RAM).
    budget: Option<u64>,
    vcpus: u32,
    kernel: Option<KernelKind>,
    image: Option<String>,
    standby: bool,
    /// Measure the warm pool (`--no-pool`: restores only).
    pool: bool,
    /// QEMU `-cpu` model (`None`: the backend's default).
    cpu: Option<String>,
    /// Extra guest kernel command-line words.
    cmdline: Vec<String>,
}

fn parse() -> Opts {
    let mut o = Opts {
        runs: 10,
        cold: true,
        capacity: true,
        capacity_max: None,
        budget: None,
        vcpus: 1,
        kernel: None,
        image: None,
        standby: true,
        pool: true,
        cpu: None,
        cmdline: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => o.runs = args.next().and_then(|v| v.parse().ok()).unwrap_or(10),
            "--no-cold" => o.cold = false,
            "--no-capacity" => o.capacity = false,
            "--no-standby" => o.standby = false,
            "--no-pool" => o.pool = false,
            "--cpu" => o.cpu = args.next(),
            "--cmdline" => o.cmdline.extend(args.next()),
            "--image" => o.image = args.next(),
            "--capacity-max" => o.capacity_max = args.next().and_then(|v| v.parse().ok()),
            "--budget" => match args.next().and_then(|v| v.parse().ok()) {
                Some(mib) => o.budget = Some(mib),
                None => {
                    eprintln!("--budget takes a number of MiB\n{USAGE}");
                    std::process::exit(2);
                }
            },
            "--vcpus" => o.vcpus = args.next().and_then(|v| v.parse().ok()).unwrap_or(1),
            "--kernel" => {
                o.kernel = match args.next().as_deref() {
                    Some("package") => Some(KernelKind::Package),
                    Some("minimal") => Some(KernelKind::Minimal),
                    other => {
                        eprintln!("--kernel takes package or minimal, not {other:?}");
                        std::process::exit(2);
                    }
                }
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => {
                eprintln!("unknown argument {other}\n{USAGE}");
                std::process::exit(2);
            }
        }
    }
    o
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One run: create → first output line of `echo hi` → destroy. Returns the time to that
/// line, the time `create` took and the sandbox's notes.
async fn once(
    p: &dyn SandboxProvider,
    id: &str,
) -> Result<(Duration, Duration, Vec<String>), String> {
    let t0 = Instant::now();
    let sb = p
        .create(JobSpec::new(id, "bench"))
        .await
        .map_err(|e| e.to_string())?;
    let created = t0.elapsed();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<OutputEvent>(16);
    let req = ExecRequest::new(["echo", "hi"]).env("PATH", "/usr/local/bin:/usr/bin:/bin");
    let exec = sb.exec(req, tx);
    tokio::pin!(exec);
    let mut first = None;
    let mut done = false;
    while first.is_none() {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(_) => first = Some(t0.elapsed()),
                None => break,
            },
            r = &mut exec, if !done => { done = true; r.map_err(|e| e.to_string())?; }
        }
    }
    if !done {
        let _ = exec.await;
    }
    let notes = sb.notes();
    let _ = sb.destroy().await;
    first
        .map(|f| (f, created, notes))
        .ok_or_else(|| "no output".to_string())
}

fn stats(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let pick = |q: f64| {
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        v.get(i).copied().unwrap_or(f64::NAN)
    };
    (pick(0.5), pick(0.9), v.first().copied().unwrap_or(f64::NAN))
}

type Hook<'a> = dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>> + 'a;

async fn series<'a>(
    name: &str,
    p: &dyn SandboxProvider,
    runs: usize,
    before_each: Option<&'a Hook<'a>>,
) -> Option<(f64, f64, f64, usize)> {
    let mut v = Vec::new();
    for i in 0..runs {
        if let Some(f) = before_each {
            f().await;
        }
        match once(p, &format!("{name}-{i}")).await {
            Ok((d, created, notes)) => {
                eprintln!(
                    "  {name} #{i}: {:.1} ms (create {:.1} ms)  {}",
                    ms(d),
                    ms(created),
                    notes.last().cloned().unwrap_or_default()
                );
                v.push(ms(d));
            }
            Err(e) => eprintln!("  {name} #{i}: FAILED: {e}"),
        }
    }
    if v.is_empty() {
        return None;
    }
    let n = v.len();
    let (med, p90, min) = stats(&mut v);
    Some((med, p90, min, n))
}

fn proc_cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn proc_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

async fn run() -> i32 {
    let o = parse();
    let store = ImageStore::open_default();
    let image = match (&o.image, o.kernel) {
        (Some(hash), _) => store
            .get(hash)
            .and_then(|i| i.ok_or_else(|| firebreak_vm::ImageError::NoImage(store.images_dir()))),
        (None, None) => store.latest(),
        (None, Some(kind)) => store.list().and_then(|all| {
            all.into_iter()
                .find(|i| i.manifest.kernel == kind)
                .ok_or_else(|| firebreak_vm::ImageError::NoImage(store.images_dir()))
        }),
    };
    let image = match image {
        Ok(i) => i,
        Err(e) => {
            eprintln!("SKIPPED: no guest image ({e}); only host/namespace measured");
            return bench_local(&o).await;
        }
    };
    let cfg = VmConfig {
        memory_mib: 256,
        vcpus: o.vcpus,
        cpu_model: o.cpu.clone(),
        extra_cmdline: o.cmdline.clone(),
        ..VmConfig::default()
    };
    eprintln!(
        "image {} (kernel {}) ; VMs 256 MiB, {} vCPU",
        image.manifest.hash, image.manifest.kernel_release, o.vcpus
    );
    let hash = Some(image.manifest.hash.clone());
    let mut rows: Vec<Row> = Vec::new();
    let tmp = std::env::temp_dir().join(format!("fb-bench-{}", std::process::id()));
    let host = HostProvider::new(tmp.join("host"));
    rows.push((
        "host".into(),
        series("host", &host, o.runs, None).await,
        "—",
    ));
    let ns = NamespaceProvider::new(NamespaceConfig::new(tmp.join("ns")));
    let probe = ns.probe().await;
    if probe.available {
        rows.push((
            "namespace".into(),
            series("namespace", &ns, o.runs, None).await,
            "—",
        ));
    } else {
        eprintln!("namespace unavailable: {:?}", probe.notes);
    }
    if o.cold {
        let cold = QemuProvider::new(
            store.clone(),
            hash.clone(),
            VmConfig {
                start: Start::Cold,
                ..cfg.clone()
            },
        );
        rows.push((
            "qemu cold boot".into(),
            series("cold", &cold, o.runs, None).await,
            "≤ 2500",
        ));
    }
    let restore = QemuProvider::new(
        store.clone(),
        hash.clone(),
        VmConfig {
            standby: o.standby,
            ..cfg.clone()
        },
    );
    let t = Instant::now();
    match restore.prewarm(&JobSpec::new("warm", "bench")).await {
        Ok(s) => eprintln!(
            "snapshot {} ready in {:.1}s ({} MB state)",
            s.meta.key,
            t.elapsed().as_secs_f64(),
            s.meta.state_bytes / 1_000_000
        ),
        Err(e) => eprintln!("snapshot: {e}"),
    }
    // As for the pool below: jobs come one at a time, and between two the
    // provider has started the next restore's QEMU (unless --no-standby).
    let standby_ready = || -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + '_>> {
        Box::pin(async {
            let t = Instant::now();
            while o.standby && !restore.standby_ready() && t.elapsed() < Duration::from_secs(30) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        })
    };
    rows.push((
        if o.standby {
            "qemu snapshot restore".into()
        } else {
            "qemu snapshot restore (no standby QEMU)".into()
        },
        series("restore", &restore, o.runs, Some(&standby_ready)).await,
        "≤ 250",
    ));
    restore.shutdown().await;
    if o.pool {
        let pooled =
            QemuProvider::new(store.clone(), hash.clone(), cfg.clone()).with_pool(PoolConfig {
                size: 1,
                memory_budget_mib: None,
            });
        let spec = JobSpec::new("warm", "bench");
        let snap = pooled.prewarm(&spec).await.ok();
        let wait_ready = || -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + '_>> {
            Box::pin(async {
                let (Some(pool), Some(snap)) = (pooled.pool(), snap.as_ref()) else {
                    return;
                };
                let t = Instant::now();
                while pool.ready(snap) < 1 && t.elapsed() < Duration::from_secs(30) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                // Let the refill's restore finish settling (CPU).
                tokio::time::sleep(Duration::from_millis(300)).await;
            })
        };
        rows.push((
            "qemu warm pool".into(),
            series("pool", &pooled, o.runs, Some(&wait_ready)).await,
            "≤ 50",
        ));
        pooled.shutdown().await;
    }

    println!(
        "\n## job accepted → first byte of `echo hi` ({} runs each)\n",
        o.runs
    );
    println!("| sandbox | median ms | p90 ms | min ms | ok runs | target ms |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, r, target) in &rows {
        match r {
            Some((med, p90, min, n)) => {
                println!("| {name} | {med:.1} | {p90:.1} | {min:.1} | {n} | {target} |")
            }
            None => println!("| {name} | failed | | | 0 | {target} |"),
        }
    }

    if o.capacity {
        capacity(&store, hash, &cfg, o.capacity_max, o.budget).await;
    }
    let _ = std::fs::remove_dir_all(&tmp);
    0
}

async fn capacity(
    store: &ImageStore,
    hash: Option<String>,
    cfg: &VmConfig,
    max: Option<usize>,
    budget: Option<u64>,
) {
    let default_budget = budget.is_none();
    let budget = budget.unwrap_or_else(MemoryBudget::host_default_mib);
    let avail_before = mem_available_mib();
    let fit = (budget / vm_cost_mib(cfg)) as usize;
    let size = max.map_or(fit, |m| m.min(fit));
    eprintln!("capacity: budget {budget} MiB → {fit} VMs of 256 MiB; filling a pool of {size}");
    let p = QemuProvider::new(store.clone(), hash, cfg.clone()).with_pool(PoolConfig {
        size,
        memory_budget_mib: Some(budget),
    });
    let spec = JobSpec::new("cap", "bench");
    let Ok(snap) = p.prewarm(&spec).await else {
        eprintln!("capacity: no snapshot");
        return;
    };
    let Some(pool) = p.pool().cloned() else {
        return;
    };
    let t = Instant::now();
    let mut last = (0, Instant::now());
    while pool.ready(&snap) < size && t.elapsed() < Duration::from_secs(600) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let n = pool.ready(&snap);
        if n != last.0 {
            last = (n, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(30) {
            break;
        }
    }
    let fill = t.elapsed();
    // Idle: let the last restores settle, then measure.
    let avail_filled = mem_available_mib();
    let settle = std::env::var("SANDBOX_BENCH_SETTLE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    tokio::time::sleep(Duration::from_secs(settle)).await;
    let pids = pool.ready_pids();
    let ticks0: u64 = pids.iter().filter_map(|p| proc_cpu_ticks(*p)).sum();
    let window = Duration::from_secs(10);
    tokio::time::sleep(window).await;
    let ticks1: u64 = pids.iter().filter_map(|p| proc_cpu_ticks(*p)).sum();
    let rss: Vec<u64> = pids.iter().filter_map(|p| proc_rss_kib(*p)).collect();
    let n = pids.len().max(1) as f64;
    // Clock ticks are 1/100 s on Linux.
    let cpu_pct_total =
        (ticks1.saturating_sub(ticks0)) as f64 / 100.0 / window.as_secs_f64() * 100.0;
    let rss_mib_avg = rss.iter().sum::<u64>() as f64 / 1024.0 / rss.len().max(1) as f64;
    let rss_mib_max = rss.iter().max().copied().unwrap_or(0) as f64 / 1024.0;
    println!(
        "\n## capacity (256 MiB, {} vCPU VMs; idle in the warm pool)\n",
        cfg.vcpus
    );
    println!("| measure | value |");
    println!("|---|---:|");
    println!(
        "| memory budget ({}) | {budget} MiB |",
        if default_budget {
            "half of host RAM"
        } else {
            "--budget"
        }
    );
    println!(
        "| charged per VM (guest + QEMU overhead) | {} MiB |",
        vm_cost_mib(cfg)
    );
    println!("| VMs the budget admits | {fit} |");
    println!(
        "| VMs started (pool filled) | {} in {:.1} s |",
        pids.len(),
        fill.as_secs_f64()
    );
    println!("| budget in use | {} MiB |", p.budget().used_mib());
    println!("| host RSS per idle VM, mean / max | {rss_mib_avg:.0} / {rss_mib_max:.0} MiB |");
    println!(
        "| host CPU, all idle VMs together / per VM | {cpu_pct_total:.1}% / {:.2}% of a core |",
        cpu_pct_total / n
    );
    if let (Some(a), Some(b)) = (avail_before, avail_filled) {
        println!(
            "| host MemAvailable before / with the pool full | {a} / {b} MiB ({:.0} MiB per VM) |",
            a.saturating_sub(b) as f64 / n
        );
    }
    all_at_once(&p, pids.len()).await;
    p.shutdown().await;
}

/// `MemAvailable` from `/proc/meminfo`, MiB.
fn mem_available_mib() -> Option<u64> {
    let t = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = t
        .lines()
        .find(|l| l.starts_with("MemAvailable:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024)
}

/// Gives `n` jobs to the pool at once, each running a command that prints
/// a line and then stays busy for a few seconds, and reports how many of
/// them ran together, how long the last one waited for its first byte, and
/// how long a host `/bin/true` took to spawn and exit meanwhile.
async fn all_at_once(p: &QemuProvider, n: usize) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    if n == 0 {
        return;
    }
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut jobs = tokio::task::JoinSet::new();
    for i in 0..n {
        let (p, running, peak, done) = (p.clone(), running.clone(), peak.clone(), done.clone());
        jobs.spawn(async move {
            let result = async {
                let sb = p
                    .create(JobSpec::new(format!("all-{i}"), "bench"))
                    .await
                    .map_err(|e| e.to_string())?;
                let (tx, mut rx) = tokio::sync::mpsc::channel::<OutputEvent>(16);
                // Busy, not asleep: every guest computes while the others do.
                let req = ExecRequest::new([
                    "sh",
                    "-c",
                    "echo up; end=$(($(date +%s) + 5)); while [ $(date +%s) -lt $end ]; do :; done",
                ])
                .env("PATH", "/usr/local/bin:/usr/bin:/bin");
                let exec = sb.exec(req, tx);
                tokio::pin!(exec);
                let mut first = None;
                let mut status = None;
                loop {
                    tokio::select! {
                        ev = rx.recv(), if first.is_none() => match ev {
                            Some(_) => {
                                first = Some(t0.elapsed());
                                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                                peak.fetch_max(now, Ordering::SeqCst);
                            }
                            None => break,
                        },
                        r = &mut exec => { status = Some(r); break; }
                    }
                }
                let status = match status {
                    Some(s) => s,
                    None => exec.await,
                };
                if first.is_some() {
                    running.fetch_sub(1, Ordering::SeqCst);
                }
                let _ = sb.destroy().await;
                status.map_err(|e| e.to_string())?;
                first.ok_or_else(|| "no output".to_string())
            }
            .await;
            done.fetch_add(1, Ordering::SeqCst);
            result
        });
    }
    // The host while they run: spawn `/bin/true` every 200 ms.
    let mut host = Vec::new();
    let mut min_avail = mem_available_mib();
    while done.load(Ordering::SeqCst) < n && t0.elapsed() < Duration::from_secs(600) {
        let t = Instant::now();
        if std::process::Command::new("/bin/true").status().is_ok() {
            host.push(ms(t.elapsed()));
        }
        min_avail = match (min_avail, mem_available_mib()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut firsts = Vec::new();
    let mut failed = Vec::new();
    while let Some(r) = jobs.join_next().await {
        match r {
            Ok(Ok(first)) => firsts.push(ms(first)),
            Ok(Err(e)) => failed.push(e),
            Err(e) => failed.push(e.to_string()),
        }
    }
    let (med, p90, _) = stats(&mut firsts);
    let last = firsts.last().copied().unwrap_or(f64::NAN);
    let (host_med, _, _) = stats(&mut host);
    let host_max = host.last().copied().unwrap_or(f64::NAN);
    println!("\n## all at once: one job per pooled VM, each busy for 5 s\n");
    println!("| measure | value |");
    println!("|---|---:|");
    println!(
        "| jobs that printed their first line / failed | {} / {} |",
        firsts.len(),
        failed.len()
    );
    println!(
        "| jobs running at the same moment, at most | {} |",
        peak.load(Ordering::SeqCst)
    );
    println!(
        "| all given → first byte, median / p90 / last | {med:.0} / {p90:.0} / {last:.0} ms |"
    );
    println!("| host `/bin/true` meanwhile, median / max | {host_med:.1} / {host_max:.1} ms |");
    if let Some(a) = min_avail {
        println!("| host MemAvailable, lowest | {a} MiB |");
    }
    println!("| all done in | {:.1} s |", t0.elapsed().as_secs_f64());
    for e in failed.iter().take(5) {
        eprintln!("  all-at-once job failed: {e}");
    }
}

async fn bench_local(o: &Opts) -> i32 {
    let tmp = std::env::temp_dir().join(format!("fb-bench-{}", std::process::id()));
    let host = HostProvider::new(tmp.join("host"));
    let r = series("host", &host, o.runs, None).await;
    println!("host: {r:?}");
    let _ = std::fs::remove_dir_all(&tmp);
    0
}

fn main() {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = rt.block_on(run());
    std::process::exit(code);
}
