//! The memory every firebreak process on this host has charged to its VMs, so that one
//! budget ([`crate::pool::MemoryBudget`]) holds for all of them together: two runs at once
//! do not each take half of the host's memory.
//!
//! Each process keeps its total in `<dir>/<tag>-<n>.mib` (one per budget) and holds an exclusive `flock` on that
//! file while it lives; the kernel drops the lock when the process dies, however it dies, so
//! a file whose lock can be taken belongs to nobody and is removed. Sums and updates happen
//! under an exclusive lock on `<dir>/.lock`, so two processes never both fit into the last
//! free memory.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// This process's entry in the host's ledger.
#[derive(Debug)]
pub(crate) struct HostLedger {
    dir: PathBuf,
    own_name: String,
    own: File,
}

/// The ledger's directory when none is given: one per host, in its temporary directory.
pub fn default_dir() -> PathBuf {
    std::env::temp_dir().join("firebreak-memory")
}

impl HostLedger {
    /// Joins the ledger in `dir` (created if missing, writable by every user as `/tmp` is)
    /// with `charged` MiB.
    pub(crate) fn open(dir: &Path, charged: u64) -> std::io::Result<HostLedger> {
        use std::os::unix::fs::MetadataExt;
        use std::os::unix::fs::PermissionsExt;
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
        }
        // Every user's runs share it; each removes only its own entries (sticky). Its owner
        // also mends one made before with the umask's mode, which kept other users out.
        if let Ok(m) = std::fs::symlink_metadata(dir) {
            if m.is_dir()
                && m.uid() == nix::unistd::geteuid().as_raw()
                && m.mode() & 0o7777 != 0o1777
            {
                let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o1777));
            }
        }
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let own_name = format!("{}-{seq}.mib", firebreak_runner::leftovers::tag());
        // Made and locked under the ledger's lock: nobody sums the ledger in between and
        // takes the new, not yet locked entry for a dead one.
        let _ledger = lock_ledger(dir)?;
        let own = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .mode(0o644)
            .open(dir.join(&own_name))?;
        own.try_lock().map_err(std::io::Error::from)?;
        let ledger = HostLedger {
            dir: dir.to_path_buf(),
            own_name,
            own,
        };
        ledger.record(charged)?;
        Ok(ledger)
    }

    /// Under the ledger's lock: `decide` gets what the other live processes have charged,
    /// MiB, and returns this process's new total to record (`None`: record nothing).
    pub(crate) fn transact<R>(
        &self,
        decide: impl FnOnce(u64) -> (Option<u64>, R),
    ) -> std::io::Result<R> {
        let _ledger = lock_ledger(&self.dir)?;
        let others = self.others()?;
        let (total, out) = decide(others);
        if let Some(total) = total {
            self.record(total)?;
        }
        Ok(out)
    }

    fn record(&self, total: u64) -> std::io::Result<()> {
        let mut own = &self.own;
        own.set_len(0)?;
        std::os::unix::fs::FileExt::write_all_at(own, format!("{total}\n").as_bytes(), 0)?;
        own.flush()
    }

    /// What the other live processes have charged, MiB; entries of dead ones are removed.
    /// Anything in the directory that is not a regular file is ignored (it is shared).
    fn others(&self) -> std::io::Result<u64> {
        let mut sum = 0u64;
        for e in std::fs::read_dir(&self.dir)?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".mib") || name == self.own_name {
                continue;
            }
            let Ok(mut f) = OpenOptions::new()
                .read(true)
                .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
                .open(e.path())
            else {
                continue;
            };
            if !f.metadata().is_ok_and(|m| m.is_file()) {
                continue;
            }
            match f.try_lock_shared() {
                // Nobody holds it: its process is gone.
                Ok(()) => {
                    let _ = std::fs::remove_file(e.path());
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    let mut text = String::new();
                    if (&mut f).take(64).read_to_string(&mut text).is_ok() {
                        sum += text.trim().parse::<u64>().unwrap_or(0);
                    }
                }
                Err(std::fs::TryLockError::Error(_)) => {}
            }
        }
        Ok(sum)
    }
}

/// The ledger's lock, held until dropped. Opened without following a symbolic link (the
/// directory is shared), read-only when it exists: a lock needs no more.
fn lock_ledger(dir: &Path) -> std::io::Result<File> {
    let path = dir.join(".lock");
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
                .mode(0o644)
                .open(&path)?;
            use std::os::unix::fs::PermissionsExt;
            let _ = f.set_permissions(std::fs::Permissions::from_mode(0o644));
            f
        }
        Err(e) => return Err(e),
    };
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    file.lock()?;
    Ok(file)
}

impl Drop for HostLedger {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.dir.join(&self.own_name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_entry_counts_and_a_dead_one_goes() {
        let d = tempfile::tempdir().expect("tempdir");
        let me = HostLedger::open(d.path(), 0).expect("open");
        // Another live process: its file is locked (here by another open file).
        let other = File::create(d.path().join("99-x.mib")).expect("create");
        other.try_lock().expect("lock");
        std::fs::write(d.path().join("99-x.mib"), "300\n").expect("write");
        // A dead one: nobody holds its lock.
        std::fs::write(d.path().join("98-y.mib"), "5000\n").expect("write");
        let seen = me.transact(|others| (Some(64), others)).expect("transact");
        assert_eq!(seen, 300);
        assert!(!d.path().join("98-y.mib").exists());
        let own = d.path().join(&me.own_name);
        assert_eq!(std::fs::read_to_string(&own).expect("read"), "64\n");
        drop(me);
        assert!(!own.exists(), "a process's entry goes with it");
    }

    #[test]
    fn the_ledger_is_open_to_every_user_however_it_was_made() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().expect("tempdir");
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o7777;
        let fresh = d.path().join("new");
        drop(HostLedger::open(&fresh, 0).expect("open"));
        assert_eq!(mode(&fresh), 0o1777);
        // One an older firebreak left with the umask's mode.
        let old = d.path().join("old");
        std::fs::create_dir(&old).expect("mkdir");
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        drop(HostLedger::open(&old, 0).expect("open"));
        assert_eq!(mode(&old), 0o1777);
    }
}
