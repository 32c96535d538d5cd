//! `firebreak-agent`: the guest side of firebreak's microVM sandboxes.
//!
//! Modes:
//! * PID 1 (started by the initramfs, or by the kernel itself on the
//!   minimal kernel): set up the guest, fork the serving
//!   agent as a child, reap orphans, restart the agent if it dies.
//! * `--serve [--device PATH | --vsock PORT]`: serve the virtio-serial port
//!   (found by its name `org.firebreak.agent`) or PATH, one session after
//!   another on the same open port; or vsock PORT (any CID), one session per
//!   connection.
//!   Without either option, `firebreak.vsock=PORT` on the kernel command
//!   line (Firecracker) selects vsock.
//! * `--stdio`: serve one session on stdin/stdout (tests, debugging).
//! * `--version`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use firebreak_agent::protocol::VIRTIO_PORT_NAME;
use firebreak_agent::server::{serve, AgentConfig, SessionEnd};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn log(msg: &str) {
    eprintln!("firebreak-agent: {msg}");
}

/// Seconds since the guest kernel started (its log's clock), for the
/// milestones of a boot in the console log.
fn since_boot() -> String {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| format!("{}.{:06} s after boot", t.tv_sec(), t.tv_nsec() / 1000))
        .unwrap_or_default()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some("--version") => {
            println!(
                "firebreak-agent {} protocol {}",
                env!("CARGO_PKG_VERSION"),
                firebreak_agent::PROTOCOL_VERSION
            );
            0
        }
        Some("--stdio") => run_stdio(),
        Some("--serve") => match (args.get(1).map(String::as_str), args.get(2)) {
            (Some("--device"), Some(p)) => run_serve(Some(PathBuf::from(p)), None),
            (Some("--vsock"), Some(p)) => match p.parse::<u32>() {
                Ok(port) => run_serve(None, Some(port)),
                Err(_) => {
                    log(&format!("--vsock wants a port number, not {p:?}"));
                    2
                }
            },
            _ => serve_default(),
        },
        None if std::process::id() == 1 => run_init(),
        _ => {
            log("usage: firebreak-agent [--serve [--device PATH | --vsock PORT] | --stdio | --version]");
            2
        }
    };
    std::process::exit(code);
}

/// `--serve` without options: vsock if the kernel command line names a
/// port, else the virtio-serial port.
fn serve_default() -> i32 {
    run_serve(
        None,
        std::fs::read_to_string("/proc/cmdline")
            .ok()
            .and_then(|c| firebreak_agent::vsock::port_from_cmdline(&c)),
    )
}

/// Starts the serving agent as a child of PID 1: a `fork` of this process
/// that goes on as `--serve` would (no second `exec` of the binary, which
/// costs tens of milliseconds early in a TCG boot).
#[allow(unsafe_code)]
fn fork_agent() -> Option<u32> {
    // SAFETY: PID 1 never starts a thread (no runtime, no thread spawns; its
    // `Command`s are waited for inline), so the child of this `fork` is a
    // whole copy and may do anything, including start a runtime.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            // The OOM killer must never pick the agent: a job that runs the guest out of
            // memory loses its own processes (which reset this before they exec), not the
            // host's connection.
            if let Err(e) = std::fs::write("/proc/self/oom_score_adj", "-1000") {
                log(&format!(
                    "cannot protect the agent from the OOM killer: {e}"
                ));
            }
            std::process::exit(serve_default())
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => u32::try_from(child.as_raw()).ok(),
        Err(e) => {
            log(&format!("cannot start agent: {e}"));
            None
        }
    }
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // File operations run on blocking threads, which tokio ends after
        // 10 s idle by default; a VM waiting in the warm pool would then
        // create them again for its job's first requests (a thread start
        // costs milliseconds under TCG). Keep them.
        .thread_keep_alive(std::time::Duration::from_secs(24 * 3600))
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            log(&format!("cannot start runtime: {e}"));
            None
        }
    }
}

fn run_stdio() -> i32 {
    let Some(rt) = runtime() else { return 1 };
    let cfg = Arc::new(AgentConfig::default());
    match rt.block_on(serve(tokio::io::stdin(), tokio::io::stdout(), cfg)) {
        Ok(_) => 0,
        Err(e) => {
            log(&e.to_string());
            1
        }
    }
}

/// Finds `/dev/vportNpM` whose name is ours.
fn find_port() -> Option<PathBuf> {
    let entries = std::fs::read_dir("/sys/class/virtio-ports").ok()?;
    for e in entries.flatten() {
        let name = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
        if name.trim() == VIRTIO_PORT_NAME {
            return Some(Path::new("/dev").join(e.file_name()));
        }
    }
    None
}

fn run_serve(device: Option<PathBuf>, vsock_port: Option<u32>) -> i32 {
    let Some(rt) = runtime() else { return 1 };
    let guest = std::os::unix::process::parent_id() == 1;
    let cgroup_root = Path::new("/sys/fs/cgroup/cgroup.procs")
        .exists()
        .then(|| PathBuf::from("/sys/fs/cgroup"))
        .filter(|_| guest);
    let cfg = Arc::new(AgentConfig {
        guest,
        cgroup_root,
        ..AgentConfig::default()
    });
    if let Some(port) = vsock_port {
        return run_vsock(&rt, port, cfg);
    }
    let mut waited = Duration::ZERO;
    let mut announced = false;
    // The port stays open from one session to the next, each session serving a `dup` of it:
    // closing a virtio port makes the driver discard what the host has already sent, and a
    // new host's first requests can arrive before the old host's disconnect is noticed (the
    // driver handles data at once and control messages later), so a close-and-reopen lost
    // them and the host waited for ever.
    let mut kept: Option<(std::path::PathBuf, std::fs::File)> = None;
    loop {
        let dev = match device.clone().or_else(find_port) {
            Some(d) => d,
            None => {
                if waited >= Duration::from_secs(10) && waited < Duration::from_millis(10_050) {
                    log(&format!("still no virtio port named {VIRTIO_PORT_NAME}"));
                }
                std::thread::sleep(Duration::from_millis(50));
                waited += Duration::from_millis(50);
                continue;
            }
        };
        // Non-blocking epoll-driven I/O; a blocking file on a thread pool
        // if the device cannot be polled.
        if kept.as_ref().is_none_or(|(p, _)| *p != dev) {
            kept = firebreak_agent::port::open_file(&dev)
                .ok()
                .map(|f| (dev.clone(), f));
        }
        let session = match kept.as_ref().map(|(_, f)| f.try_clone()) {
            Some(Ok(f)) => rt.block_on(async { firebreak_agent::port::from_file(f) }),
            Some(Err(e)) => Err(e),
            None => Err(std::io::Error::other(
                "the port cannot be opened non-blocking",
            )),
        };
        let end = match session {
            Ok((r, w)) => {
                if !announced {
                    log(&format!("serving on {} ({})", dev.display(), since_boot()));
                    announced = true;
                }
                rt.block_on(serve(r, w, cfg.clone()))
            }
            Err(e) => {
                // Blocking I/O on a port that cannot be polled: the port is opened per
                // session as before (it admits one open at a time).
                kept = None;
                let opened = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&dev);
                let pair = opened.and_then(|f| f.try_clone().map(|w| (f, w)));
                let (rf, wf) = match pair {
                    Ok(p) => p,
                    Err(e2) => {
                        if !announced {
                            log(&format!("cannot open {}: {e}; {e2}", dev.display()));
                        }
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                };
                if !announced {
                    log(&format!("serving on {} (blocking I/O: {e})", dev.display()));
                    announced = true;
                }
                let r = tokio::fs::File::from_std(rf);
                let w = tokio::fs::File::from_std(wf);
                rt.block_on(serve(r, w, cfg.clone()))
            }
        };
        match end {
            Ok(SessionEnd::Shutdown) => {
                if cfg.guest {
                    nix::unistd::sync();
                    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
                }
                return 0;
            }
            // The host end is not connected (EOF) or sent garbage: a new session.
            Ok(SessionEnd::Closed) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                log(&format!("session ended: {e}"));
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Serves vsock `port` until a session asks for shutdown; retries the bind
/// while the vsock driver is not there yet.
fn run_vsock(rt: &tokio::runtime::Runtime, port: u32, cfg: Arc<AgentConfig>) -> i32 {
    let mut waited = Duration::ZERO;
    loop {
        let res = rt.block_on(firebreak_agent::vsock::serve_vsock(
            port,
            cfg.clone(),
            |end| {
                if let Err(e) = end {
                    log(&format!("vsock session ended: {e}"));
                }
            },
        ));
        match res {
            Ok(_) => {
                if cfg.guest {
                    nix::unistd::sync();
                    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
                }
                return 0;
            }
            Err(e) => {
                if waited == Duration::ZERO || waited == Duration::from_secs(10) {
                    log(&format!("cannot listen on vsock port {port}: {e}"));
                }
                std::thread::sleep(Duration::from_millis(50));
                waited += Duration::from_millis(50);
            }
        }
    }
}

/// Mounts `src` on `target`, logging a failure (an existing mount is fine);
/// true when it is mounted.
fn mount(src: &str, target: &str, fstype: &str, data: Option<&str>) -> bool {
    try_mount(src, target, fstype, data)
        .map_err(|e| log(&format!("mount {fstype} on {target}: {e}")))
        .is_ok()
}

fn try_mount(
    src: &str,
    target: &str,
    fstype: &str,
    data: Option<&str>,
) -> Result<(), nix::errno::Errno> {
    use nix::mount::MsFlags;
    let _ = std::fs::create_dir_all(target);
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let flags = if fstype == "devtmpfs" || fstype == "devpts" {
        MsFlags::MS_NOSUID
    } else {
        flags
    };
    match nix::mount::mount(Some(src), target, Some(fstype), flags, data) {
        Err(e) if e != nix::errno::Errno::EBUSY => Err(e),
        _ => Ok(()),
    }
}

fn cmdline_flag(name: &str) -> Option<String> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").ok()?;
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('=').map(str::to_string))
}

fn run_quiet(argv: &[&str]) {
    let Some((prog, rest)) = argv.split_first() else {
        return;
    };
    match std::process::Command::new(prog)
        .args(rest)
        .env("PATH", DEFAULT_PATH)
        .status()
    {
        Ok(st) if st.success() => {}
        Ok(st) => log(&format!("{argv:?}: {st}")),
        Err(e) => log(&format!("{argv:?}: {e}")),
    }
}

/// The guest's open-file limit (soft and hard), as on GitHub's hosted runners.
const OPEN_FILES: u64 = 65_536;

fn setup_guest() {
    mount("proc", "/proc", "proc", None);
    mount("sysfs", "/sys", "sysfs", None);
    mount("devtmpfs", "/dev", "devtmpfs", None);
    mount(
        "devpts",
        "/dev/pts",
        "devpts",
        Some("gid=5,mode=620,ptmxmode=666"),
    );
    mount("tmpfs", "/dev/shm", "tmpfs", Some("mode=1777"));
    mount("tmpfs", "/run", "tmpfs", Some("mode=755"));
    mount("tmpfs", "/tmp", "tmpfs", Some("mode=1777"));
    // Every command is moved into a cgroup of its own: `favordynmods` (Linux
    // 6.0+) makes that move cheap (no RCU grace period per migration, which
    // costs tens of milliseconds under TCG) at a small cost to fork and exit.
    if try_mount("cgroup2", "/sys/fs/cgroup", "cgroup2", Some("favordynmods")).is_err() {
        mount("cgroup2", "/sys/fs/cgroup", "cgroup2", None);
    }
    let _ = std::os::unix::fs::symlink("/proc/self/fd", "/dev/fd");
    let _ = std::os::unix::fs::symlink("/proc/self/fd/0", "/dev/stdin");
    let _ = std::os::unix::fs::symlink("/proc/self/fd/1", "/dev/stdout");
    let _ = std::os::unix::fs::symlink("/proc/self/fd/2", "/dev/stderr");
    let _ = nix::unistd::sethostname("firebreak");
    // Open files per process as GitHub's hosted runners allow (`ulimit -n` 65536; the
    // kernel's default is 1024, which large test suites run into). Every process of the
    // guest inherits it from here.
    if let Err(e) = nix::sys::resource::setrlimit(
        nix::sys::resource::Resource::RLIMIT_NOFILE,
        OPEN_FILES,
        OPEN_FILES,
    ) {
        log(&format!("cannot raise the open-file limit: {e}"));
    }
    machine_id_on_tmpfs();
    if let Err(e) = firebreak_agent::netif::set_up("lo") {
        log(&format!("cannot bring lo up: {e}"));
    }
    // QEMU user networking: fixed addresses (a network job's boot only).
    if cmdline_flag("firebreak.net").as_deref() == Some("user") {
        run_quiet(&["ip", "link", "set", "eth0", "up"]);
        run_quiet(&["ip", "addr", "add", "10.0.2.15/24", "dev", "eth0"]);
        run_quiet(&["ip", "route", "add", "default", "via", "10.0.2.2"]);
        let _ = std::fs::write("/etc/resolv.conf", "nameserver 10.0.2.3\n");
    }
}

/// Gives this boot its own machine id (the image's would be shared by every VM booted from
/// it) in a file on `/run`'s tmpfs, bind-mounted over `/etc/machine-id`. The host writes a
/// fresh id after every snapshot restore; on tmpfs that write skips ext4's journal and block
/// allocation, whose first run after a restore costs ~40 ms of TCG translation.
fn machine_id_on_tmpfs() {
    const RUN: &str = "/run/machine-id";
    const ETC: &str = "/etc/machine-id";
    let mut id = [0u8; 16];
    // Early in boot `/dev/urandom` may not be fully seeded: good enough for an identifier.
    if let Err(e) = std::fs::File::open("/dev/urandom").and_then(|mut f| {
        use std::io::Read;
        f.read_exact(&mut id)
    }) {
        log(&format!("machine id: cannot read /dev/urandom: {e}"));
        return;
    }
    let mut text: String = id.iter().map(|b| format!("{b:02x}")).collect();
    text.push('\n');
    if let Err(e) = std::fs::write(RUN, text) {
        log(&format!("machine id: cannot write {RUN}: {e}"));
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(RUN, std::fs::Permissions::from_mode(0o444));
    // The mount point must exist (an image without one gets an empty file).
    if std::fs::symlink_metadata(ETC).is_err() {
        let _ = std::fs::write(ETC, "");
    }
    use nix::mount::MsFlags;
    if let Err(e) = nix::mount::mount(Some(RUN), ETC, None::<&str>, MsFlags::MS_BIND, None::<&str>)
    {
        log(&format!("machine id: cannot bind {RUN} over {ETC}: {e}"));
    }
}

fn run_init() -> i32 {
    use nix::sys::wait::{waitpid, WaitStatus};
    std::env::set_var("PATH", DEFAULT_PATH);
    log(&format!("init started ({})", since_boot()));
    setup_guest();
    log(&format!("guest set up ({})", since_boot()));
    let mut agent = fork_agent();
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, code)) if Some(pid.as_raw() as u32) == agent => {
                if code == 0 {
                    // A clean exit means shutdown was requested.
                    nix::unistd::sync();
                    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
                }
                log(&format!("agent exited with {code}; restarting"));
                std::thread::sleep(Duration::from_millis(200));
                agent = fork_agent();
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) if Some(pid.as_raw() as u32) == agent => {
                log(&format!("agent killed by {sig}; restarting"));
                std::thread::sleep(Duration::from_millis(200));
                agent = fork_agent();
            }
            Ok(_) => {}
            Err(_) => {
                std::thread::sleep(Duration::from_millis(200));
                if agent.is_none() {
                    agent = fork_agent();
                }
            }
        }
    }
}
