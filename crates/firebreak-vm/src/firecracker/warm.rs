//! Warm starts for `--sandbox firecracker`: one snapshot per image and VM
//! shape, taken from the first job's freshly booted VM and restored for
//! every later job.
//!
//! ```text
//! <image dir>/firecracker-snapshots/<vcpus>c-<MiB>m-<plain|jailed>-<shape>-<files>/
//!     vmstate  memory  rootfs.ext4  snapshot.json      (FirecrackerVm::snapshot)
//! ```
//!
//! `<shape>` hashes the settings a snapshot fixes (vCPUs, memory, extra
//! command-line words, vsock CID and port, the entropy device, the jail's
//! user and chroot base); `<files>` hashes the identity (path, size, mtime)
//! of the Firecracker binary, the jailer, and the image's kernel, initramfs
//! and root filesystem. A rebuilt image or an upgraded Firecracker gives a
//! new name, and [`SnapshotCache::prune_stale`] removes the snapshots of
//! files that changed. A VM with a network device is never snapshotted: its
//! TAP device belongs to that VM alone.
//!
//! The snapshot is taken once the booted guest is prepared for jobs (job
//! cgroup, directories; [`crate::snapshot::prepare_guest`]), while its agent
//! is idle; the VM is then resumed and serves the job that booted it. It is
//! written to `.tmp-<pid>-<n>` and renamed into place, so a reader never
//! sees half a snapshot; leftovers of a process that died are pruned.
//! Kept apart from QEMU's `snapshots/` (whose pruning removes what it did
//! not write).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use super::vm::{find_firecracker, io_err, BootFiles, FirecrackerConfig, FirecrackerVm, Snapshot};
use super::FirecrackerError;
use crate::image::Image;
use crate::snapshot::{file_identity, hex};

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// The snapshots of one image's Firecracker VMs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotCache {
    dir: PathBuf,
}

impl SnapshotCache {
    /// The cache in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SnapshotCache { dir: dir.into() }
    }

    /// The cache next to `image`: `<image dir>/firecracker-snapshots`.
    pub fn for_image(image: &Image) -> Self {
        Self::new(image.dir.join("firecracker-snapshots"))
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory name of the snapshot of `files` booted with `cfg`.
    pub fn name(&self, files: &BootFiles, cfg: &FirecrackerConfig) -> String {
        let mut shape = Sha256::new();
        shape.update(format!(
            "vcpus={}\0mem={}\0cid={}\0port={}\0rng={}\0",
            cfg.vcpus, cfg.memory_mib, cfg.guest_cid, cfg.agent_port, cfg.entropy_device
        ));
        for w in &cfg.extra_cmdline {
            shape.update(w.as_bytes());
            shape.update(b"\0");
        }
        if let Some(j) = &cfg.jailer {
            shape.update(format!(
                "jail={}:{}:{}\0",
                j.uid,
                j.gid,
                j.chroot_base.display()
            ));
        }
        format!(
            "{}c-{}m-{}-{}-{}",
            cfg.vcpus,
            cfg.memory_mib,
            if cfg.jailer.is_some() {
                "jailed"
            } else {
                "plain"
            },
            &hex(&shape.finalize())[..12],
            files_key(files, cfg)
        )
    }

    /// The snapshot for `cfg`, when one was taken and is complete.
    pub fn find(&self, files: &BootFiles, cfg: &FirecrackerConfig) -> Option<Snapshot> {
        if cfg.network.is_some() {
            return None;
        }
        Snapshot::open(self.dir.join(self.name(files, cfg))).ok()
    }

    /// Snapshots `vm` (booted from `files` with `cfg`, prepared for jobs and
    /// idle) into the cache and resumes it with a fresh agent connection.
    /// When another process stored the same snapshot meanwhile, that one is
    /// kept and returned.
    pub async fn take(
        &self,
        vm: &mut FirecrackerVm,
        files: &BootFiles,
        cfg: &FirecrackerConfig,
    ) -> Result<Snapshot, FirecrackerError> {
        if cfg.network.is_some() {
            return Err(FirecrackerError::Snapshot {
                dir: self.dir.clone(),
                reason: "a VM with a network device is not snapshotted".into(),
            });
        }
        std::fs::create_dir_all(&self.dir).map_err(io_err("create", &self.dir))?;
        let tmp = self.dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            TMP_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let taken = vm.snapshot(&tmp, true).await;
        let done = self.dir.join(self.name(files, cfg));
        let placed = taken.and_then(|_| match std::fs::rename(&tmp, &done) {
            Ok(()) => Ok(()),
            // Someone else's complete snapshot is already there.
            Err(_) if Snapshot::open(&done).is_ok() => Ok(()),
            Err(e) => Err(io_err("rename", &done)(e)),
        });
        let _ = std::fs::remove_dir_all(&tmp);
        placed?;
        Snapshot::open(&done)
    }

    /// Removes `snap` (a clone of it failed; the next job takes a new one).
    pub fn discard(&self, snap: &Snapshot) {
        if snap.dir.parent() == Some(self.dir.as_path()) {
            let _ = std::fs::remove_dir_all(&snap.dir);
        }
    }

    /// Removes snapshots of other versions of the files `cfg` boots (their
    /// name's `<files>` part differs) and leftovers of takes whose process
    /// is gone. Returns what was removed.
    pub fn prune_stale(&self, files: &BootFiles, cfg: &FirecrackerConfig) -> Vec<PathBuf> {
        let current = files_key(files, cfg);
        let mut removed = Vec::new();
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return removed;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let stale = match name.strip_prefix(".tmp-") {
                Some(rest) => {
                    let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
                    !pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists())
                }
                None => name.rsplit('-').next() != Some(current.as_str()),
            };
            if stale && std::fs::remove_dir_all(e.path()).is_ok() {
                removed.push(e.path());
            }
        }
        removed
    }
}

/// The part of a snapshot's name that changes with the files it was booted
/// from and the VMM that wrote it.
fn files_key(files: &BootFiles, cfg: &FirecrackerConfig) -> String {
    let mut h = Sha256::new();
    let vmm = cfg.binary.clone().or_else(find_firecracker);
    let mut paths: Vec<&Path> = vec![&files.vmlinux, &files.initramfs, &files.rootfs];
    if let Some(v) = &vmm {
        paths.push(v);
    }
    if let Some(j) = &cfg.jailer {
        paths.push(&j.binary);
    }
    for p in paths {
        h.update(file_identity(p).as_bytes());
        h.update(b"\0");
    }
    hex(&h.finalize())[..12].to_string()
}
