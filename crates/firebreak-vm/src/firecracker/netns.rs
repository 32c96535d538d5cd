//! An empty network namespace for each jailed Firecracker VM without a
//! network, so that a Firecracker process a guest took over finds no
//! interface and no route to anything (its guest has no network device
//! either way).
//!
//! Made natively (a short-lived thread `unshare`s its network namespace and
//! bind-mounts it on `/run/netns/<name>`, where `ip netns` looks too) rather
//! than with `ip netns add`: no process to start on a VM's start-up path.
//! The jailer joins it with `--netns`; dropping the [`VmNetns`] unmounts and
//! removes the file, and the namespace goes with its last process.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

/// Where the namespaces are mounted (as `ip netns` keeps them).
pub const NETNS_DIR: &str = "/run/netns";

/// Names of the namespaces firebreak makes: `fbvm-<pid>-<seq>`.
const PREFIX: &str = "fbvm-";

/// Why a VM's network namespace could not be made.
#[derive(Debug, thiserror::Error)]
#[error("network namespace {}: {op}: {source} (making one needs root, as the jailer does; `--jailer-netns host` keeps jailed VMs in the host's namespace)", path.display())]
pub struct NetnsError {
    /// The namespace's file.
    pub path: PathBuf,
    /// What failed.
    pub op: &'static str,
    /// The system's error.
    #[source]
    pub source: std::io::Error,
}

/// A network namespace mounted at `<dir>/<name>`, removed on drop.
#[derive(Debug)]
pub struct VmNetns {
    path: PathBuf,
}

impl VmNetns {
    /// Makes an empty network namespace for VM `seq` of this process in
    /// [`NETNS_DIR`], first removing those of processes that are gone.
    pub fn for_vm(seq: u64) -> Result<VmNetns, NetnsError> {
        let dir = Path::new(NETNS_DIR);
        remove_dead(dir);
        let name = format!("{PREFIX}{}-{seq}", std::process::id());
        // Left by an earlier process with this pid (a container's PID 1 after a
        // restart, with `/run` kept): no VM of this process has this name yet.
        remove(&dir.join(&name));
        VmNetns::create(dir, &name)
    }

    /// Makes an empty network namespace mounted at `dir/name`.
    pub fn create(dir: &Path, name: &str) -> Result<VmNetns, NetnsError> {
        let path = dir.join(name);
        let err = |op| {
            let path = path.clone();
            move |source| NetnsError { path, op, source }
        };
        std::fs::create_dir_all(dir).map_err(err("create its directory"))?;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(err("create"))?;
        let target = path.clone();
        // Namespaces belong to threads: a thread of its own takes the new one
        // and ends, leaving the rest of the process where it was.
        let made = std::thread::Builder::new()
            .name("firebreak-netns".into())
            .spawn(move || -> Result<(), (&'static str, std::io::Error)> {
                unshare(CloneFlags::CLONE_NEWNET).map_err(|e| ("unshare", e.into()))?;
                mount(
                    Some("/proc/thread-self/ns/net"),
                    &target,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|e| ("bind-mount", e.into()))
            })
            .map_err(|e| ("start a thread for", e))
            .and_then(|t| {
                t.join().unwrap_or_else(|_| {
                    Err(("unshare", std::io::Error::other("the thread panicked")))
                })
            });
        if let Err((op, source)) = made {
            let _ = std::fs::remove_file(&path);
            return Err(NetnsError { path, op, source });
        }
        Ok(VmNetns { path })
    }

    /// The file the jailer's `--netns` joins.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for VmNetns {
    fn drop(&mut self) {
        remove(&self.path);
    }
}

fn remove(path: &Path) {
    let _ = umount2(path, MntFlags::MNT_DETACH);
    let _ = std::fs::remove_file(path);
}

/// Removes the namespaces firebreak made in `dir` for processes that are gone
/// (their VMs died with them). A process id in use again keeps its dead
/// predecessor's namespaces until it too is gone; runners that share `/run`
/// must share a pid namespace, or one removes the other's.
pub(crate) fn remove_dead(dir: &Path) {
    firebreak_runner::leftovers::remove_dead(dir, PREFIX, remove);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net_ns_of(path: &Path) -> Option<std::fs::Metadata> {
        std::fs::metadata(path).ok()
    }

    /// Needs root (skips otherwise): a namespace is made, differs from this
    /// process's, is gone after drop; a dead process's leftover is removed and
    /// a live one's kept.
    #[test]
    fn namespaces_are_made_empty_and_removed() {
        use std::os::unix::fs::MetadataExt;
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: making network namespaces needs root");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let ns = match VmNetns::create(dir.path(), "fbvm-test") {
            Ok(ns) => ns,
            Err(e) => {
                eprintln!("SKIPPED: no network namespaces here: {e}");
                return;
            }
        };
        let ours = net_ns_of(Path::new("/proc/self/ns/net")).expect("own netns");
        let made = net_ns_of(ns.path()).expect("mounted namespace");
        assert_ne!(made.ino(), ours.ino(), "the VM's namespace is the host's");
        // Still this process's own namespace afterwards.
        let after = net_ns_of(Path::new("/proc/self/ns/net")).expect("own netns");
        assert_eq!(after.ino(), ours.ino());
        let path = ns.path().to_path_buf();
        drop(ns);
        assert!(!path.exists(), "{} left behind", path.display());

        // Leftovers: a process id that is gone, and this live one.
        let dead = VmNetns::create(dir.path(), "fbvm-4294967-0").expect("namespace");
        let live_name = format!("fbvm-{}-99", std::process::id());
        let live = VmNetns::create(dir.path(), &live_name).expect("namespace");
        let dead_path = dead.path().to_path_buf();
        std::mem::forget(dead);
        remove_dead(dir.path());
        assert!(!dead_path.exists(), "a dead process's namespace was kept");
        assert!(
            live.path().exists(),
            "a live process's namespace was removed"
        );
        // A name already taken is an error that says which file.
        let err = VmNetns::create(dir.path(), &live_name).expect_err("taken");
        assert!(err.to_string().contains(&live_name), "{err}");
    }
}
