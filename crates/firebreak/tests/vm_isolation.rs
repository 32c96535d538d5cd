//! `firebreak run --sandbox qemu` end to end, in real VMs (software-emulated under TCG where KVM
//! is not usable): a workflow whose jobs prove the isolation a user is promised. Each job runs
//! in its own guest kernel, sees none of the host's files, has no network unless asked for,
//! and a memory bomb fails only the job that set it off.
//!
//! Needs QEMU and a guest image (`firebreak image build`). Without `FIREBREAK_VM_TESTS=1` the
//! test prints SKIPPED and passes; with it (as `scripts/test` sets) a missing image fails it.

use std::process::Command;

fn required() -> bool {
    std::env::var_os("FIREBREAK_VM_TESTS").is_some_and(|v| v == "1")
}

/// Skips (or, when VM tests are required, fails) unless an image and QEMU are here.
fn vm_ready() -> bool {
    let why = if !required() {
        "VM tests are opt-in: set FIREBREAK_VM_TESTS=1".to_string()
    } else if let Some(t) = firebreak_vm::tools::QEMU_TOOLS
        .iter()
        .find(|t| firebreak_vm::tools::find(t.name).is_none())
    {
        format!("{} missing (apt-get install {})", t.name, t.package)
    } else {
        match firebreak_vm::image::ImageStore::open_default().latest() {
            Ok(_) => return true,
            Err(e) => format!("{e} (build one with `firebreak image build`)"),
        }
    };
    if required() {
        panic!("FIREBREAK_VM_TESTS=1 but no VM can be booted: {why}");
    }
    eprintln!("SKIPPED: {why}");
    false
}

const WORKFLOW: &str = r#"on: push
jobs:
  kernel:
    runs-on: [ubuntu-latest, 1cpu, 512mb]
    steps:
      - run: |
          echo "guest kernel $(uname -r) boot $(cat /proc/sys/kernel/random/boot_id)"
          test "$(cat /proc/sys/kernel/random/boot_id)" != "@HOST_BOOT_ID@"
          test "$(nproc)" = 1
          echo "memory $(sed -n 's/^MemTotal: *//p' /proc/meminfo)"
  files:
    runs-on: [ubuntu-latest, 1cpu, 512mb]
    steps:
      - uses: actions/checkout@v4
      - run: |
          test -f README.txt
          test ! -e "@HOST_SECRET@"
          test ! -e "@HOST_REPO@"
          echo "host files invisible"
  network:
    runs-on: [ubuntu-latest, 1cpu, 512mb]
    steps:
      - run: |
          ip -o link show
          if ip -o link show | grep -v ': lo:'; then echo "a network interface exists"; exit 1; fi
          if timeout 10 bash -c 'exec 3<>/dev/tcp/1.1.1.1/80'; then echo "1.1.1.1 reachable"; exit 1; fi
          if curl -sS --max-time 10 -o /dev/null http://deb.debian.org/; then echo "deb.debian.org reachable"; exit 1; fi
          echo "network unreachable"
  bomb:
    runs-on: [ubuntu-latest, 1cpu, 512mb]
    steps:
      - run: |
          python3 -c '
          a = []
          while True:
              a.append(b"x" * (16 << 20))
          '
  survivor:
    needs: bomb
    if: always()
    runs-on: [ubuntu-latest, 1cpu, 512mb]
    steps:
      - run: echo "after the bomb, $(uname -r)"
"#;

#[test]
fn a_workflow_in_microvms_proves_isolation() {
    if !vm_ready() {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("fb-vm-iso-")
        .tempdir()
        .expect("tempdir");
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(repo.join(".github/workflows")).expect("mkdir");
    // A file only the host has, beside (not inside) the repository.
    let secret = dir.path().join("host-only-secret");
    std::fs::write(&secret, "host secret").expect("secret");
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .expect("host boot id")
        .trim()
        .to_string();
    let wf = WORKFLOW
        .replace("@HOST_BOOT_ID@", &boot_id)
        .replace("@HOST_SECRET@", &secret.to_string_lossy())
        .replace("@HOST_REPO@", &repo.to_string_lossy());
    std::fs::write(repo.join(".github/workflows/iso.yml"), wf).expect("workflow");
    std::fs::write(repo.join("README.txt"), "checked out\n").expect("readme");
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "-A"],
        &["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "init"],
    ] {
        let st = Command::new("git")
            .args(args)
            .current_dir(&repo)
            .status()
            .expect("git");
        assert!(st.success(), "git {args:?}");
    }

    let out = Command::new(env!("CARGO_BIN_EXE_firebreak"))
        .args(["run", "--sandbox", "qemu", "--json", "--offline", "-C"])
        .arg(&repo)
        .env("NO_COLOR", "1")
        .output()
        .expect("run firebreak");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let log: Vec<String> = events
        .iter()
        .filter(|e| e["event"] == "output")
        .map(|e| format!("[{}] {}", e["job"]["id"].as_str().unwrap_or("?"), e["line"].as_str().unwrap_or("")))
        .collect();
    let ctx = format!("exit {:?}\n{}\n--- stderr\n{stderr}", out.status.code(), log.join("\n"));
    eprintln!("{ctx}");
    let finished = events
        .iter()
        .find(|e| e["event"] == "run_finished")
        .unwrap_or_else(|| panic!("no run_finished event\n{ctx}"));
    let result = |id: &str| -> String {
        finished["workflows"][0]["jobs"]
            .as_array()
            .and_then(|jobs| jobs.iter().find(|j| j["id"] == id))
            .and_then(|j| j["result"].as_str())
            .unwrap_or("missing")
            .to_string()
    };
    for id in ["kernel", "files", "network", "survivor"] {
        assert_eq!(result(id), "success", "job {id}\n{ctx}");
    }
    assert_eq!(result("bomb"), "failure", "the memory bomb's job\n{ctx}");
    assert_eq!(out.status.code(), Some(1), "a failed job fails the run\n{ctx}");
    // Every job ran in a VM with its own kernel, sized by its labels.
    let has = |s: &str| log.iter().any(|l| l.contains(s));
    assert!(has("host files invisible") && has("network unreachable"), "{ctx}");
    assert!(has("after the bomb, "), "{ctx}");
}
