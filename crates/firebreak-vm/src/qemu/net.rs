//! Outbound networking for guests that opt in: `passt` when the host has it, else QEMU's
//! built-in user-mode network (slirp).
//!
//! Both give the guest the addresses the agent configures (10.0.2.15/24, gateway 10.0.2.2,
//! DNS at 10.0.2.3, forwarded to the host's resolver) and reach out through ordinary sockets
//! of an unprivileged host process, so neither needs root, a TAP device or a bridge. They
//! differ where isolation is concerned: slirp hands every guest connection to 10.0.2.2 to the
//! host's loopback, so a job could reach services that listen only on the host's 127.0.0.1
//! (a database, a metrics endpoint, the runner's own); QEMU 7.2 has no option to stop it.
//! passt runs with `--no-map-gw`, which keeps the host's loopback out of the guest's reach.
//! `FIREBREAK_QEMU_NET=slirp` chooses slirp anyway.
//!
//! passt serves one VM: it listens on a Unix socket in the VM's run directory, QEMU
//! connects to it (`-netdev stream`), and it exits when QEMU goes (`--one-off`). Run as
//! root, it is started as `nobody` (passt refuses root and, left to drop privileges itself,
//! fails silently in containers that forbid dropping capabilities).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use super::{io_err, VmError};
use crate::tools;

/// The host program for [`UserNet::Passt`].
pub const PASST: tools::Tool = tools::Tool {
    name: "passt",
    package: "passt",
};

/// Which user-mode network a VM with networking gets on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserNet {
    /// `passt` (this binary), without the gateway mapped to the host's loopback.
    Passt(PathBuf),
    /// QEMU's slirp: the guest can reach the host's loopback through 10.0.2.2.
    Slirp,
}

impl UserNet {
    /// passt when it is installed and `FIREBREAK_QEMU_NET` is not `slirp`. Decided once per
    /// process, so that a VM's command line, its passt and its job's notes agree.
    pub fn on_this_host() -> UserNet {
        static CHOICE: std::sync::OnceLock<UserNet> = std::sync::OnceLock::new();
        CHOICE
            .get_or_init(|| {
                if slirp_asked() {
                    return UserNet::Slirp;
                }
                tools::find(PASST.name).map_or(UserNet::Slirp, UserNet::Passt)
            })
            .clone()
    }

    /// What would keep a slirp network from reaching the host's loopback here: passt, or not
    /// asking for slirp.
    pub fn slirp_remedy() -> &'static str {
        if slirp_asked() {
            "FIREBREAK_QEMU_NET=slirp chose it; unset it to use passt"
        } else {
            "apt-get install passt to keep it out of reach"
        }
    }

    /// A `FIREBREAK_QEMU_NET` that is neither `passt` nor `slirp` (and so changes nothing).
    pub fn unknown_setting() -> Option<String> {
        std::env::var("FIREBREAK_QEMU_NET").ok().filter(|v| {
            !v.is_empty() && !v.eq_ignore_ascii_case("slirp") && !v.eq_ignore_ascii_case("passt")
        })
    }

    /// QEMU's `-netdev` value for a VM whose run directory is `dir`.
    pub(crate) fn netdev(&self, dir: &Path) -> String {
        match self {
            UserNet::Passt(_) => format!(
                "stream,id=net0,server=off,addr.type=unix,addr.path={}",
                socket(dir).to_string_lossy()
            ),
            UserNet::Slirp => "user,id=net0".into(),
        }
    }
}

/// Whether `FIREBREAK_QEMU_NET` asks for slirp.
fn slirp_asked() -> bool {
    std::env::var("FIREBREAK_QEMU_NET").is_ok_and(|v| v.eq_ignore_ascii_case("slirp"))
}

/// Where passt listens for the VM whose run directory is `dir`.
fn socket(dir: &Path) -> PathBuf {
    dir.join("net").join("passt.sock")
}

/// A passt process serving one VM; killed when dropped.
#[derive(Debug)]
pub(crate) struct Passt {
    /// Held for `kill_on_drop`.
    _child: Child,
}

/// What to do when passt will not start here.
const FALLBACK: &str = "FIREBREAK_QEMU_NET=slirp uses QEMU's own network instead, which lets \
     the job reach the host's loopback";

/// How long passt may take to listen (it starts in a few milliseconds).
const LISTEN_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts what `net` needs for a VM whose run directory is `dir`: passt, listening by the
/// time this returns; nothing for slirp (QEMU does it itself).
pub(crate) async fn start(net: &UserNet, dir: &Path) -> Result<Option<Passt>, VmError> {
    let UserNet::Passt(bin) = net else {
        return Ok(None);
    };
    let sock = socket(dir);
    let sock_dir = dir.join("net");
    let _ = std::fs::remove_file(&sock);
    std::fs::create_dir_all(&sock_dir).map_err(io_err("create", &sock_dir))?;
    let log_path = dir.join("passt.log");
    let log = std::fs::File::create(&log_path).map_err(io_err("create", &log_path))?;
    let mut argv: Vec<std::ffi::OsString> = Vec::new();
    if let Some(setpriv) = tools::find("setpriv") {
        argv.push(setpriv.into());
        if nix::unistd::geteuid().is_root() {
            let (uid, gid) = nobody();
            // The socket's folder must be nobody's; QEMU, as root, connects regardless.
            nix::unistd::chown(
                &sock_dir,
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
            )
            .map_err(|e| VmError::Io {
                op: "chown",
                path: sock_dir.clone(),
                source: e.into(),
            })?;
            argv.extend([
                format!("--reuid={uid}").into(),
                format!("--regid={gid}").into(),
                "--clear-groups".into(),
            ]);
        }
        // Gone with the runner until passt enters a user namespace of its own, which clears
        // the parent-death signal; after that `--one-off` ends it with QEMU, and the sweep of
        // abandoned run directories ([`stop_abandoned`]) covers a runner gone before QEMU.
        argv.extend(["--pdeathsig".into(), "KILL".into(), "--".into()]);
    } else if nix::unistd::geteuid().is_root() {
        return Err(VmError::MissingTool {
            tool: "setpriv",
            package: "util-linux",
        });
    }
    argv.push(bin.into());
    argv.extend(
        [
            "--foreground",
            "--one-off",
            "--quiet",
            "--no-map-gw",
            "--address",
            "10.0.2.15",
            "--netmask",
            "24",
            "--gateway",
            "10.0.2.2",
            "--dns-forward",
            "10.0.2.3",
            "--socket",
        ]
        .map(std::ffi::OsString::from),
    );
    argv.push(sock.clone().into());
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .process_group(0)
        .kill_on_drop(true);
    let mut child = firebreak_runner::spawn::spawn_from_stable_thread(cmd)
        .map_err(io_err("start", bin.clone()))?;
    // passt outlives a runner killed outright only until QEMU goes (`--one-off`), unless
    // the runner died before QEMU connected: the next runner's sweep of abandoned run
    // directories stops it then ([`stop_abandoned`]).
    if let Some(pid) = child.id() {
        let _ = std::fs::write(dir.join(PID_FILE), pid.to_string());
    }
    let t0 = Instant::now();
    loop {
        // Not probed by connecting: passt serves exactly one client (`--one-off`).
        if listening(&sock) {
            return Ok(Some(Passt { _child: child }));
        }
        if let Ok(Some(st)) = child.try_wait() {
            return Err(VmError::Command {
                command: "passt".into(),
                output: format!(
                    "exited ({st}) before listening: {} ({FALLBACK})",
                    std::fs::read_to_string(&log_path)
                        .unwrap_or_default()
                        .lines()
                        .filter(|l| !l.contains("syslog"))
                        .collect::<Vec<_>>()
                        .join(" / ")
                ),
            });
        }
        if t0.elapsed() > LISTEN_TIMEOUT {
            let _ = child.start_kill();
            return Err(VmError::Command {
                command: "passt".into(),
                output: format!(
                    "not listening on {} after {LISTEN_TIMEOUT:?} ({FALLBACK})",
                    sock.display()
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The file in a VM's run directory that names its passt process.
const PID_FILE: &str = "passt.pid";

/// Stops the passt process of an abandoned run directory, if it still runs. The pid is
/// trusted only while it still names a passt process.
pub(crate) fn stop_abandoned(dir: &Path) {
    let Some(pid) = std::fs::read_to_string(dir.join(PID_FILE))
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok())
    else {
        return;
    };
    let is_passt = std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
        c.split(|b| *b == 0)
            .next()
            .and_then(|argv0| {
                Path::new(std::str::from_utf8(argv0).ok()?)
                    .file_name()?
                    .to_str()
            })
            .is_some_and(|name| name.starts_with(PASST.name))
    });
    if is_passt {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Whether a Unix socket bound to `path` is listening (`/proc/net/unix`: the
/// `__SO_ACCEPTCON` flag, 0x10000).
fn listening(path: &Path) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else {
        return path.exists();
    };
    let path = path.to_string_lossy();
    let suffix = format!(" {path}");
    table.lines().skip(1).any(|l| {
        // The path is the last field and may hold spaces.
        l.ends_with(&suffix)
            && l.split_whitespace()
                .nth(3)
                .and_then(|flags| u32::from_str_radix(flags, 16).ok())
                .is_some_and(|flags| flags & 0x10000 != 0)
    })
}

/// `nobody`'s uid and gid (65534 where the user database lacks it).
fn nobody() -> (u32, u32) {
    match nix::unistd::User::from_name("nobody") {
        Ok(Some(u)) => (u.uid.as_raw(), u.gid.as_raw()),
        _ => (65534, 65534),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_backend_has_its_netdev() {
        let dir = Path::new("/run/x");
        assert_eq!(UserNet::Slirp.netdev(dir), "user,id=net0");
        assert_eq!(
            UserNet::Passt("/usr/bin/passt".into()).netdev(dir),
            "stream,id=net0,server=off,addr.type=unix,addr.path=/run/x/net/passt.sock"
        );
    }

    #[test]
    fn a_listening_socket_is_told_from_a_bound_path_and_a_plain_file() {
        let d = tempfile::tempdir().expect("tempdir");
        let with_space = d.path().join("a dir");
        std::fs::create_dir(&with_space).expect("mkdir");
        let sock = with_space.join("s.sock");
        assert!(!listening(&sock));
        let _l = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
        assert!(listening(&sock));
        let plain = d.path().join("plain");
        std::fs::write(&plain, "").expect("write");
        assert!(!listening(&plain));
    }

    #[test]
    fn an_abandoned_pid_file_stops_only_a_passt_process() {
        let d = tempfile::tempdir().expect("tempdir");
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        std::fs::write(d.path().join(PID_FILE), other.id().to_string()).expect("write");
        stop_abandoned(d.path());
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            matches!(other.try_wait(), Ok(None)),
            "a process that is not passt must be left alone"
        );
        let _ = other.kill();
        let _ = other.wait();
    }

    #[tokio::test]
    async fn passt_listens_for_one_vm_and_is_stopped_with_its_handle_or_the_sweep() {
        let net = UserNet::on_this_host();
        let UserNet::Passt(_) = &net else {
            eprintln!("SKIPPED: passt is not installed here (apt-get install passt)");
            return;
        };
        let d = tempfile::tempdir().expect("tempdir");
        let passt = start(&net, d.path()).await.expect("passt starts");
        assert!(listening(&socket(d.path())));
        let pid: i32 = std::fs::read_to_string(d.path().join(PID_FILE))
            .expect("pid file")
            .trim()
            .parse()
            .expect("pid");
        let alive = |pid: i32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                !s.rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z'))
            })
        };
        assert!(alive(pid));
        // As after a runner that died before its QEMU connected: the sweep stops it.
        std::mem::forget(passt);
        stop_abandoned(d.path());
        let t0 = Instant::now();
        while alive(pid) && t0.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!alive(pid), "the sweep stops an abandoned passt");
        // Dropping the handle stops it too.
        let d2 = tempfile::tempdir().expect("tempdir");
        let passt = start(&net, d2.path()).await.expect("passt starts");
        let pid2: i32 = std::fs::read_to_string(d2.path().join(PID_FILE))
            .expect("pid file")
            .trim()
            .parse()
            .expect("pid");
        drop(passt);
        let t0 = Instant::now();
        while alive(pid2) && t0.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!alive(pid2), "dropping the handle stops passt");
    }
}
