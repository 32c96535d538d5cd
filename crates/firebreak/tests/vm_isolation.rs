//! `firebreak run --sandbox qemu` end to end, in real VMs (software-emulated under TCG where KVM
//! is not usable): a workflow whose jobs prove the isolation a user is promised. Each job runs
//! in its own guest kernel, sees none of the host's files, has no network unless it asks with
//! the `network` runs-on label, gets a larger root filesystem with a disk label, and a memory
//! bomb or a fork bomb fails only the job that set it off. Also: the warm pool, cold starts
//! without snapshots (`--vm-start cold`), a job whose VM stops answering fails at once
//! (`--vm-hang-timeout`), and Ctrl-C leaves `always()` steps a VM to run in.
//!
//! Needs QEMU and a guest image (`firebreak image build`). Without `FIREBREAK_VM_TESTS=1` the
//! test prints SKIPPED and passes; with it (as `scripts/test` sets) a missing image fails it.

use std::process::Command;

#[path = "../../firebreak-vm/tests/common/procs.rs"]
mod procs;

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
          # Open files as GitHub's hosted runners allow.
          echo "open files $(ulimit -n)"
      # Nothing of the host's environment: the guest's own PATH, no host toolchains.
      - run: |
          test "$PATH" = /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin || { echo "PATH=$PATH"; exit 1; }
          test -z "${RUSTUP_HOME:-}${CARGO_HOME:-}"
      - shell: python
        run: import sys; print("python", sys.version_info[0])
      # A 70 KB environment value (a large `GITHUB_ENV` or `toJSON(github)`) reaches the
      # next command whole, as on the host.
      - run: python3 -c "print('BIG=' + 'x' * 70000)" >> "$GITHUB_ENV"
      - run: echo "big env ${#BIG}"
  files:
    runs-on: [ubuntu-latest, 1cpu, 512mb]
    steps:
      - uses: actions/checkout@v4
      - run: |
          test -f README.txt
          test ! -e "@HOST_SECRET@"
          test ! -e "@HOST_REPO@"
          echo "host files invisible"
      - run: echo "hashed ${{ hashFiles('**/*.txt') }}"
  network:
    runs-on: [ubuntu-latest, 1cpu, 512mb]
    steps:
      - run: |
          ip -o link show
          if ip -o link show | grep -v ': lo:'; then echo "a network interface exists"; exit 1; fi
          if timeout 10 bash -c 'exec 3<>/dev/tcp/1.1.1.1/80'; then echo "1.1.1.1 reachable"; exit 1; fi
          if curl -sS --max-time 10 -o /dev/null http://deb.debian.org/; then echo "deb.debian.org reachable"; exit 1; fi
          echo "network unreachable"
  online:
    runs-on: [ubuntu-latest, 1cpu, 512mb, network]
    steps:
      - run: |
          ip -o -4 addr show
          ip -o -4 addr show | grep -q ' 10.0.2.15/24 '
          ip route | grep -q '^default via 10.0.2.2'
          echo "network opted in"
          # A service only on the host's loopback (@LOOPBACK_EXPECTED@ through this host's
          # user-mode network).
          if timeout 5 bash -c 'exec 3<>/dev/tcp/10.0.2.2/@HOST_PORT@' 2>/dev/null; then
            echo "host loopback: reached"
          else
            echo "host loopback: refused"
          fi
  roomy:
    runs-on: [ubuntu-latest, 1cpu, 512mb, 8gb-disk]
    steps:
      - run: |
          size=$(df -B1 --output=size / | tail -1)
          test "$size" -gt $((7 << 30))
          echo "root filesystem of $size bytes"
  bomb:
    runs-on: [ubuntu-latest, 1cpu, 512mb]
    steps:
      - run: |
          python3 -c '
          a = []
          while True:
              a.append(b"x" * (16 << 20))
          '
  forkbomb:
    runs-on: [ubuntu-latest, 1cpu, 512mb]
    steps:
      # The step outlasts the bomb's growth to a limit (under TCG a bomb of bash functions
      # grows by ~60 processes a second), so the guard ends it, not the step's own end.
      - run: |
          bomb() { bomb | bomb & }; bomb
          sleep 150
      - if: always()
        run: echo "fork bomb over, $(ls /proc | grep -c '^[0-9]') processes"
  # The classic bomb returns at once and forks on in the background: the step running when
  # the guard acts fails, naming the step that left the bomb, and the job fails.
  leftbomb:
    runs-on: [ubuntu-latest, 1cpu, 512mb]
    steps:
      - run: |
          :(){ :|:& };:
      - run: sleep 150
      - if: always()
        run: echo "left bomb over"
  # A file command's file swapped for a FIFO, or for a link to one, fails that step
  # instead of waiting for a writer forever, and the job goes on in its VM.
  fifo:
    runs-on: [ubuntu-latest, 1cpu, 512mb]
    steps:
      - run: rm -f "$GITHUB_OUTPUT"; mkfifo "$GITHUB_OUTPUT"
        continue-on-error: true
      - run: mkfifo /tmp/never; rm -f "$GITHUB_ENV"; ln -s /tmp/never "$GITHUB_ENV"
        continue-on-error: true
      - run: echo "fifo job went on"
  survivor:
    needs: bomb
    if: always()
    runs-on: [ubuntu-latest, 1cpu, 512mb]
    steps:
      - run: echo "after the bomb, $(uname -r)"
"#;

/// A git repository in a temp dir with `files`; returns (temp dir, repo path).
fn repo(files: &[(&str, &str)]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("fb-vm-iso-")
        .tempdir()
        .expect("tempdir");
    let repo = dir.path().join("repo");
    for (p, text) in files {
        let path = repo.join(p);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, text).expect("write");
    }
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "-A"],
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "commit",
            "-q",
            "-m",
            "init",
        ],
    ] {
        let st = Command::new("git")
            .args(args)
            .current_dir(&repo)
            .status()
            .expect("git");
        assert!(st.success(), "git {args:?}");
    }
    (dir, repo)
}

/// What `firebreak run --sandbox qemu --json` did.
struct Run {
    pid: u32,
    code: Option<i32>,
    events: Vec<serde_json::Value>,
    /// `[job] line` for every output line.
    log: Vec<String>,
    ctx: String,
}

impl Run {
    fn result(&self, id: &str) -> String {
        self.events
            .iter()
            .find(|e| e["event"] == "run_finished")
            .and_then(|f| f["workflows"][0]["jobs"].as_array())
            .and_then(|jobs| jobs.iter().find(|j| j["id"] == id))
            .and_then(|j| j["result"].as_str())
            .unwrap_or("missing")
            .to_string()
    }

    fn has(&self, s: &str) -> bool {
        self.log.iter().any(|l| l.contains(s))
    }
}

fn run_qemu(repo: &std::path::Path, extra: &[&str]) -> Run {
    let child = Command::new(env!("CARGO_BIN_EXE_firebreak"))
        .args(["run", "--sandbox", "qemu", "--json", "--offline", "-C"])
        .arg(repo)
        .args(extra)
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run firebreak");
    let pid = child.id();
    let out = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let log: Vec<String> = events
        .iter()
        .filter(|e| e["event"] == "output")
        .map(|e| {
            format!(
                "[{}] {}",
                e["job"]["id"].as_str().unwrap_or("?"),
                e["line"].as_str().unwrap_or("")
            )
        })
        .collect();
    let ctx = format!(
        "exit {:?}\n{}\n--- stderr\n{stderr}",
        out.status.code(),
        log.join("\n")
    );
    eprintln!("{ctx}");
    Run {
        pid,
        code: out.status.code(),
        events,
        log,
        ctx,
    }
}

#[test]
fn a_workflow_in_microvms_proves_isolation() {
    if !vm_ready() {
        return;
    }
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .expect("host boot id")
        .trim()
        .to_string();
    let (dir, repo) = repo(&[("README.txt", "checked out\n")]);
    // A file only the host has, beside (not inside) the repository.
    let secret = dir.path().join("host-only-secret");
    std::fs::write(&secret, "host secret").expect("secret");
    // Listens only on the host's loopback: passt must keep a job away from it; QEMU's slirp
    // (hosts without passt) hands the guest's 10.0.2.2 to it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let passt = matches!(
        firebreak_vm::UserNet::on_this_host(),
        firebreak_vm::UserNet::Passt(_)
    );
    let loopback = if passt { "refused" } else { "reached" };
    let wf = WORKFLOW
        .replace("@HOST_PORT@", &port.to_string())
        .replace("@LOOPBACK_EXPECTED@", loopback)
        .replace("@HOST_BOOT_ID@", &boot_id)
        .replace("@HOST_SECRET@", &secret.to_string_lossy())
        .replace("@HOST_REPO@", &repo.to_string_lossy());
    std::fs::create_dir_all(repo.join(".github/workflows")).expect("mkdir");
    std::fs::write(repo.join(".github/workflows/iso.yml"), wf).expect("workflow");

    let r = run_qemu(&repo, &[]);
    let ctx = &r.ctx;
    for id in [
        "kernel", "files", "network", "online", "roomy", "survivor", "fifo",
    ] {
        assert_eq!(r.result(id), "success", "job {id}\n{ctx}");
    }
    assert_eq!(r.result("bomb"), "failure", "the memory bomb's job\n{ctx}");
    // Its log says why (the kernel's OOM killer or the agent's thrash guard acted).
    assert!(
        r.log.iter().any(|l| l.starts_with("[bomb]")
            && l.contains("firebreak-agent: ")
            && l.contains("memory")),
        "{ctx}"
    );
    // The fork bomb fails its job (a guard kills its processes, saying so in the step's
    // log) and leaves the job's later steps a guest that works.
    assert_eq!(
        r.result("forkbomb"),
        "failure",
        "the fork bomb's job\n{ctx}"
    );
    assert!(
        r.log.iter().any(|l| l.starts_with("[forkbomb]")
            && l.contains("this command's processes")
            && l.contains("(a fork bomb?): they were killed")),
        "{ctx}"
    );
    assert!(r.has("[forkbomb] fork bomb over, "), "{ctx}");
    // One left running by a step that succeeded fails the job too, and the log names it.
    assert_eq!(r.result("leftbomb"), "failure", "{ctx}");
    assert!(
        r.log.iter().any(|l| l.starts_with("[leftbomb]")
            && l.contains("left running (step 'Run :(){ :|:& };:', which ended ")
            && l.contains("(a fork bomb?): every process of the job was killed")),
        "{ctx}"
    );
    assert!(r.has("[leftbomb] left bomb over"), "{ctx}");
    assert_eq!(r.code, Some(1), "a failed job fails the run\n{ctx}");
    assert!(r.has("[kernel] big env 70000"), "{ctx}");
    assert!(r.has("[kernel] open files 65536"), "{ctx}");
    let refused = r
        .log
        .iter()
        .filter(|l| l.starts_with("[fifo]") && l.contains("not a regular file"))
        .count();
    assert_eq!(refused, 2, "{ctx}");
    assert!(r.has("[fifo] fifo job went on"), "{ctx}");
    assert!(
        r.has("host files invisible") && r.has("network unreachable"),
        "{ctx}"
    );
    assert!(r.has("network opted in"), "{ctx}");
    // Each job's log says whether its VM has a network, and how to opt in.
    let vm_note = |job: &str| {
        r.log
            .iter()
            .find(|l| l.starts_with(&format!("[{job}] qemu VM")))
            .cloned()
            .unwrap_or_else(|| panic!("no VM note for {job}\n{ctx}"))
    };
    assert!(
        vm_note("network").contains("no network: opt in with FIREBREAK_NETWORK: true"),
        "{ctx}"
    );
    assert!(vm_note("online").contains("; with network)"), "{ctx}");
    assert!(
        r.has(&format!("host loopback: {loopback}")),
        "a network job and the host's loopback (passt: {passt})\n{ctx}"
    );
    // Without passt the job's log says what its network lets it reach.
    assert_eq!(
        r.has("network through QEMU's slirp: this job can reach services on the host's loopback"),
        !passt,
        "{ctx}"
    );
    drop(listener);
    assert!(
        r.has("[kernel] python 3"),
        "`shell: python` in the guest\n{ctx}"
    );
    // hashFiles inside the guest: the digest of README.txt's digest, as GitHub computes it.
    use sha2::{Digest, Sha256};
    let inner = Sha256::digest(b"checked out\n");
    let outer: String = Sha256::digest(inner)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(r.has(&format!("hashed {outer}")), "{ctx}");
    assert!(r.has("after the bomb, "), "{ctx}");
    assert!(
        r.has("[roomy] root filesystem grown from"),
        "the job log says so\n{ctx}"
    );
}

#[test]
fn later_jobs_take_a_vm_from_the_warm_pool_and_no_vm_outlives_the_run() {
    if !vm_ready() {
        return;
    }
    // The first job runs long enough for the pool to restore its spare VM even on a busy
    // 2-core machine (3 s was not always enough under a parallel build).
    let wf = "on: push\njobs:\n  first:\n    runs-on: [ubuntu-latest, 1cpu, 512mb]\n    steps:\n      - run: sleep 8; echo first\n  second:\n    needs: first\n    runs-on: [ubuntu-latest, 1cpu, 512mb]\n    steps:\n      - run: echo second\n";
    let (_dir, repo) = repo(&[(".github/workflows/pool.yml", wf)]);
    let r = run_qemu(&repo, &["--warm-pool", "1", "--vm-memory-budget", "2048"]);
    let ctx = &r.ctx;
    assert_eq!(r.code, Some(0), "{ctx}");
    assert!(
        r.has("[second] qemu VM") && r.has("taken from the warm pool"),
        "{ctx}"
    );
    // The pool's spare VM was stopped with the run.
    let marker = format!("fbvm-{}-", r.pid);
    let left: Vec<String> = procs::with_cmdline(&marker)
        .into_iter()
        .map(|(_, cmdline)| cmdline)
        .collect();
    assert!(left.is_empty(), "VMs outlived the run: {left:?}");
    let dirs: Vec<String> = std::fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&marker))
        .collect();
    assert!(dirs.is_empty(), "VM run directories left behind: {dirs:?}");
}

#[test]
fn with_vm_start_cold_every_job_boots_and_no_snapshot_is_taken() {
    if !vm_ready() {
        return;
    }
    // A VM size no other test uses (1 vCPU, 288 MiB), so that its snapshot is this test's
    // alone: in the default mode the first job would take it and the second restore it.
    // The image is the one `firebreak run` picks: $FIREBREAK_IMAGE, else the newest.
    let store = firebreak_vm::image::ImageStore::open_default();
    let image = match std::env::var("FIREBREAK_IMAGE") {
        Ok(h) if !h.is_empty() => store.get(&h).expect("image").expect("FIREBREAK_IMAGE"),
        _ => store.latest().expect("image"),
    };
    let snapshots = firebreak_vm::snapshot::snapshots_dir(&image);
    let this_size = || -> Vec<String> {
        std::fs::read_dir(&snapshots)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("1c-288m-"))
            .collect()
    };
    for n in this_size() {
        let _ = std::fs::remove_dir_all(snapshots.join(n));
    }
    // The second job has no size labels: the repository's settings file (memory) and
    // --vm-cpus (which wins over the file's cpus) size it the same.
    let wf = "on: push\njobs:\n  first:\n    runs-on: [ubuntu-latest, 1cpu, 288mb]\n    steps:\n      - run: echo first ran\n  second:\n    needs: first\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo \"second ran with $(nproc) vCPU\"\n";
    let (_dir, repo) = repo(&[
        (".github/workflows/cold.yml", wf),
        (".github/firebreak.yml", "vm:\n  cpus: 3\n  memory: 288\n"),
    ]);
    let r = run_qemu(&repo, &["--vm-start", "cold", "--vm-cpus", "1"]);
    let ctx = &r.ctx;
    assert_eq!(r.code, Some(0), "{ctx}");
    assert!(
        r.has("[first] first ran") && r.has("[second] second ran with 1 vCPU"),
        "{ctx}"
    );
    for job in ["first", "second"] {
        let vm_line = r
            .log
            .iter()
            .find(|l| l.starts_with(&format!("[{job}] qemu VM")))
            .unwrap_or_else(|| panic!("no VM note for {job}\n{ctx}"));
        assert!(
            vm_line.contains("booted") && !vm_line.contains("snapshot"),
            "{vm_line}\n{ctx}"
        );
        assert!(vm_line.contains("1 vCPU, 288 MiB"), "{vm_line}\n{ctx}");
    }
    assert!(!r.has("took the VM snapshot"), "{ctx}");
    assert!(
        this_size().is_empty(),
        "a snapshot was taken: {:?}",
        this_size()
    );
}

/// `--vm-machine q35`: the job's VM is a PC (the guest sees a PCI bus, which our `microvm`
/// has none of), and the job log says so.
#[test]
fn with_vm_machine_q35_the_job_runs_in_a_pc() {
    if !vm_ready() {
        return;
    }
    let wf = "on: push\njobs:\n  pc:\n    runs-on: [ubuntu-latest, 1cpu, 512mb]\n    steps:\n      - run: echo \"pci devices $(ls /sys/bus/pci/devices | wc -l)\"\n";
    let (_dir, repo) = repo(&[(".github/workflows/pc.yml", wf)]);
    let r = run_qemu(&repo, &["--vm-machine", "q35", "--vm-start", "cold"]);
    let ctx = &r.ctx;
    assert_eq!(r.code, Some(0), "{ctx}");
    let pci = r
        .log
        .iter()
        .find_map(|l| l.strip_prefix("[pc] pci devices "))
        .and_then(|n| n.trim().parse::<u32>().ok());
    assert!(pci.is_some_and(|n| n > 0), "{ctx}");
    assert!(
        r.log
            .iter()
            .any(|l| l.starts_with("[pc] qemu VM (") && l.contains(", q35,")),
        "{ctx}"
    );
}

#[test]
fn a_job_whose_vm_stops_answering_fails_at_once_with_vm_hang_timeout() {
    if !vm_ready() {
        return;
    }
    // The step stops the guest agent that runs it: the VM no longer answers the host, and
    // without the liveness limit the job would wait out its 30-minute timeout.
    let wf = "on: push\njobs:\n  hung:\n    runs-on: [ubuntu-latest, 1cpu, 512mb]\n    timeout-minutes: 30\n    steps:\n      - run: kill -STOP $PPID; sleep 3600\n";
    let (_dir, repo) = repo(&[(".github/workflows/hang.yml", wf)]);
    let t = std::time::Instant::now();
    let r = run_qemu(&repo, &["--vm-hang-timeout", "4"]);
    let took = t.elapsed();
    let ctx = &r.ctx;
    assert_eq!(r.result("hung"), "failure", "{ctx}");
    assert_eq!(r.code, Some(1), "{ctx}");
    assert!(
        r.events
            .iter()
            .any(|e| e.to_string().contains("stopped answering")),
        "the run should say why the job failed\n{ctx}"
    );
    // Far from the job's 30-minute timeout (the first run of a VM shape also builds its
    // snapshot).
    assert!(
        took < std::time::Duration::from_secs(600),
        "{took:?}\n{ctx}"
    );
}

/// Ctrl-C in a terminal reaches every process of the foreground group: the run cancels its
/// steps and runs the `always()` ones in the same VM, which the signal must not have killed.
#[test]
fn ctrl_c_cancels_the_steps_and_always_steps_still_run_in_the_vm() {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    if !vm_ready() {
        return;
    }
    let wf = "on: push\njobs:\n  ctrlc:\n    runs-on: [ubuntu-latest, 1cpu, 512mb]\n    steps:\n      - run: echo sleeping; sleep 300\n      - if: always()\n        run: echo \"cleanup ran in $(uname -r)\"\n";
    let (_dir, repo) = repo(&[(".github/workflows/ctrlc.yml", wf)]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_firebreak"))
        .args(["run", "--sandbox", "qemu", "--json", "--offline", "-C"])
        .arg(&repo)
        .env("NO_COLOR", "1")
        // A foreground job of its own, as a shell would start it.
        .process_group(0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("run firebreak");
    let pid = child.id();
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = Vec::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.expect("read");
        let sleeping = line.contains("\"line\":\"sleeping\"");
        lines.push(line);
        if sleeping {
            // The terminal's Ctrl-C: SIGINT to the whole process group.
            let st = Command::new("kill")
                .args(["-INT", "--", &format!("-{pid}")])
                .status()
                .expect("kill");
            assert!(st.success());
        }
    }
    let status = child.wait().expect("wait");
    let events: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let ctx = lines.join("\n");
    assert_eq!(status.code(), Some(1), "{ctx}");
    assert!(
        events.iter().any(|e| e["event"] == "output"
            && e["line"]
                .as_str()
                .is_some_and(|l| l.starts_with("cleanup ran in "))),
        "the always() step did not run in the VM\n{ctx}"
    );
    let result = events
        .iter()
        .find(|e| e["event"] == "run_finished")
        .map(|f| f["workflows"][0]["jobs"][0]["result"].clone());
    assert_eq!(result, Some(serde_json::json!("cancelled")), "{ctx}");
    let left = procs::with_cmdline(&format!("fbvm-{pid}-"));
    assert!(left.is_empty(), "VMs outlived the run: {left:?}");
}
