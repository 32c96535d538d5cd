//! Developer tool for the VM layer: `cargo run -p firebreak-vm --example fbvm -- <cmd>`.
//!
//! * `build AGENT` — build (or find) the image for the static agent binary.
//! * `list` / `prune N`.

use firebreak_vm::image::{BuildEvent, ImageSpec, ImageStore};

fn rt() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            std::process::exit(1);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let store = ImageStore::open_default();
    let code = match args.first().map(String::as_str) {
        Some("build") => {
            let Some(agent) = args.get(1) else {
                eprintln!("usage: fbvm build AGENT");
                std::process::exit(2);
            };
            let t0 = std::time::Instant::now();
            let res = store.build(&ImageSpec::new(agent), &mut |ev| match ev {
                BuildEvent::Step { index, total, what } => {
                    eprintln!("[{index}/{total}] {what} ({:.0?})", t0.elapsed())
                }
                BuildEvent::Detail(d) => {
                    if d.starts_with("I: Retrieving") || d.starts_with("I: Configuring") {
                        eprintln!("    {d}")
                    }
                }
                BuildEvent::Done { hash, cached } => eprintln!("done: {hash} cached={cached}"),
            });
            match res {
                Ok(img) => {
                    println!("{}", img.dir.display());
                    0
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    1
                }
            }
        }
        Some("list") => match store.list() {
            Ok(list) => {
                for i in list {
                    println!(
                        "{} kernel {} {} MiB",
                        i.manifest.hash,
                        i.manifest.kernel_release,
                        i.disk_usage() >> 20
                    );
                }
                0
            }
            Err(e) => {
                eprintln!("error: {e}");
                1
            }
        },
        Some("prune") => {
            let keep = args.get(1).and_then(|k| k.parse().ok()).unwrap_or(1);
            let opts = firebreak_vm::image::PruneOptions {
                keep,
                ..Default::default()
            };
            match store.prune(opts) {
                Ok(r) => {
                    println!(
                        "removed {} image(s) and {} other folder(s) ({} MiB)",
                        r.images.len(),
                        r.other.len(),
                        r.freed_bytes >> 20
                    );
                    0
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    1
                }
            }
        }
        Some("doctor") => {
            let rt = rt();
            let report = rt.block_on(firebreak_vm::doctor(&firebreak_vm::DoctorOptions::default()));
            print!("{report}");
            0
        }
        Some("boot") => {
            let rt = rt();
            rt.block_on(async {
                let img = match store.latest() {
                    Ok(i) => i,
                    Err(e) => {
                        eprintln!("error: {e}");
                        return 1;
                    }
                };
                let mut cfg = firebreak_vm::VmConfig::default();
                if std::env::var("FBVM_MACHINE").as_deref() == Ok("microvm") {
                    cfg.machine = firebreak_vm::Machine::Microvm;
                }
                if let Ok(cpu) = std::env::var("FBVM_CPU") {
                    cfg.cpu_model = Some(cpu);
                }
                if let Some(n) = std::env::var("FBVM_VCPUS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                {
                    cfg.vcpus = n;
                }
                if let Some(n) = std::env::var("FBVM_MEMORY_MIB")
                    .ok()
                    .and_then(|v| v.parse().ok())
                {
                    cfg.memory_mib = n;
                }
                if let Ok(extra) = std::env::var("FBVM_CMDLINE") {
                    cfg.extra_cmdline = extra.split_whitespace().map(str::to_string).collect();
                }
                let t0 = std::time::Instant::now();
                let mut vm = match firebreak_vm::QemuVm::boot(&img, &cfg).await {
                    Ok(vm) => vm,
                    Err(e) => {
                        eprintln!("error: {e}");
                        return 1;
                    }
                };
                println!(
                    "booted in {:?}: {:?} {:?}",
                    t0.elapsed(),
                    vm.boot_stats(),
                    vm.agent_info()
                );
                let argv: Vec<String> = if args.len() > 1 {
                    args[1..].to_vec()
                } else {
                    vec!["uname".into(), "-a".into()]
                };
                let spec = firebreak_agent::ExecSpec::new(argv)
                    .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin");
                match vm.client().exec(spec).await {
                    Ok(h) => match h.collect().await {
                        Ok((o, e, st)) => {
                            print!("{}", String::from_utf8_lossy(&o));
                            eprint!("{}", String::from_utf8_lossy(&e));
                            println!("status: {st:?}");
                        }
                        Err(e) => eprintln!("error: {e}"),
                    },
                    Err(e) => eprintln!("error: {e}"),
                }
                println!("--- console ---\n{}", vm.console());
                vm.shutdown(std::time::Duration::from_secs(3)).await;
                0
            })
        }
        Some("copybench") => {
            let mb: usize = args.get(1).and_then(|k| k.parse().ok()).unwrap_or(50);
            let rt = rt();
            rt.block_on(async {
                let Ok(img) = store.latest() else { return 1 };
                let mut vm = match firebreak_vm::QemuVm::boot(&img, &firebreak_vm::VmConfig::default()).await {
                    Ok(vm) => vm,
                    Err(e) => {
                        eprintln!("error: {e}");
                        return 1;
                    }
                };
                let c = vm.client();
                let dir = std::env::temp_dir().join(format!("fbvm-copybench-{}", std::process::id()));
                let _ = std::fs::create_dir_all(&dir);
                let data: Vec<u8> = (0..mb << 20).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
                let _ = std::fs::write(dir.join("blob"), &data);
                let t = std::time::Instant::now();
                let r = c.tar_in(&dir, "/home/runner/in").await;
                let up = t.elapsed();
                let back = dir.join("back");
                let t = std::time::Instant::now();
                let r2 = c.tar_out("/home/runner/in", &back).await;
                let down = t.elapsed();
                let same = std::fs::read(back.join("blob")).map(|b| b == data).unwrap_or(false);
                let t = std::time::Instant::now();
                let spec = firebreak_agent::ExecSpec::new(["/bin/sh", "-c", &format!("head -c {mb}M /dev/zero")]);
                let out = match c.exec(spec).await {
                    Ok(h) => h.collect().await.map(|(o, _, _)| o.len()).unwrap_or(0),
                    Err(_) => 0,
                };
                let stream = t.elapsed();
                println!(
                    "{mb} MiB: tar in {up:?} ({:.1} MiB/s) {r:?}; tar out {down:?} ({:.1} MiB/s) {r2:?} identical={same}; stdout {} bytes in {stream:?} ({:.1} MiB/s)",
                    mb as f64 / up.as_secs_f64(),
                    mb as f64 / down.as_secs_f64(),
                    out,
                    mb as f64 / stream.as_secs_f64()
                );
                let _ = std::fs::remove_dir_all(&dir);
                vm.shutdown(std::time::Duration::from_secs(3)).await;
                0
            })
        }
        Some("bench") => {
            let n: usize = args.get(1).and_then(|k| k.parse().ok()).unwrap_or(3);
            let rt = rt();
            rt.block_on(async {
                let Ok(img) = store.latest() else { return 1 };
                for _ in 0..n {
                    match firebreak_vm::qemu::bench_cold_boot(
                        &img,
                        &firebreak_vm::VmConfig::default(),
                    )
                    .await
                    {
                        Ok(b) => println!("{}", serde_json::to_string(&b).unwrap_or_default()),
                        Err(e) => eprintln!("error: {e}"),
                    }
                }
                0
            })
        }
        _ => {
            eprintln!(
                "usage: fbvm build AGENT | list | prune N | doctor | boot [ARGV...] | bench N"
            );
            2
        }
    };
    std::process::exit(code);
}
