//! Warm starts for `--sandbox firecracker`: one snapshot per image and VM
//! shape, taken from the first job's freshly booted VM and restored for
//! every later job.
//!
//! ```text
//! <image dir>/firecracker-snapshots/<vcpus>c-<MiB>m-<plain|jailed>-<shape>-<files>/
//!     vmstate  memory  rootfs.ext4  snapshot.json      (FirecrackerVm::snapshot)
//!     files.json                                       (what it was taken from)
//! <image dir>/firecracker-snapshots/.drives/<name>-<pid>-<n>  (without the jailer)
//! ```
//!
//! `<shape>` hashes the settings a snapshot fixes (vCPUs, memory, extra
//! command-line words, vsock CID and port, the entropy device, the jail's
//! user and chroot base); `<files>` hashes the identity (path, size, mtime)
//! of the Firecracker binary, the jailer, and the image's kernel, initramfs
//! and root filesystem, which `files.json` lists. A rebuilt image or an
//! upgraded Firecracker gives a new name, and [`SnapshotCache::prune_stale`]
//! removes the snapshots whose files changed or are gone (a snapshot of
//! another Firecracker binary that still exists stays: another run may use
//! it). A VM with a network device is never snapshotted: its TAP device
//! belongs to that VM alone.
//!
//! The snapshot is taken once the booted guest is prepared for jobs
//! ([`crate::snapshot::prepare_guest`]: the job cgroup and its controllers,
//! the job-independent directories), while its agent is idle; the VM is then
//! resumed and serves the job that booted it. It is written to
//! `.tmp-<pid>-<n>` and renamed into place, so a reader never sees half a
//! snapshot; leftovers of a process that died are pruned. A take that fails
//! is not tried again for that name by this process.
//!
//! Without the jailer Firecracker records the root drive's host path in the
//! snapshot and reopens it while a clone loads. The snapshotted VM therefore
//! gets its drive through an alias of its own in `.drives/`, a symlink that
//! first points at its own disk and, once its snapshot is in place, at the
//! snapshot's disk: every clone of that snapshot finds it (and a restore puts
//! it back if it leads elsewhere). An alias is pruned once what it leads to
//! is gone; one take's alias is never another's, also across processes.
//!
//! Kept apart from QEMU's `snapshots/` (whose pruning removes what it did
//! not write).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::vm::{
    find_firecracker, io_err, point_symlink, BootFiles, FirecrackerConfig, FirecrackerVm, Snapshot,
};
use super::FirecrackerError;
use crate::image::Image;
use crate::pool::lock;
use crate::snapshot::{file_identity, hex};

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Snapshot directories this process failed to take (not tried again).
static FAILED: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

/// `files.json`: the files a snapshot was taken from, and their identity then.
const FILES: &str = "files.json";

/// Where drive aliases live.
const DRIVES: &str = ".drives";

#[derive(Debug, Serialize, Deserialize)]
struct TakenFrom {
    path: PathBuf,
    identity: String,
}

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
        // The guest preparation's version too: a snapshot made by older preparation is not
        // found, and a new one is taken.
        shape.update(format!(
            "format={}\0vcpus={}\0mem={}\0cid={}\0port={}\0rng={}\0",
            crate::snapshot::SNAPSHOT_FORMAT,
            cfg.vcpus,
            cfg.memory_mib,
            cfg.guest_cid,
            cfg.agent_port,
            cfg.entropy_device
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

    /// A new symlink path through which a VM booted to take the snapshot
    /// `name` attaches its root drive (see the module docs; unused under the
    /// jailer). Unique to this take.
    pub fn new_drive_alias(&self, name: &str) -> PathBuf {
        self.dir.join(DRIVES).join(format!(
            "{name}-{}-{}",
            std::process::id(),
            TMP_SEQ.fetch_add(1, Ordering::Relaxed)
        ))
    }

    /// Whether this process may still take the snapshot `name` (it has not
    /// failed to before).
    pub fn may_take(&self, name: &str) -> bool {
        !lock(&FAILED)
            .as_ref()
            .is_some_and(|f| f.contains(&self.dir.join(name)))
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
        let name = self.name(files, cfg);
        let done = self.dir.join(&name);
        let result = self.place(vm, files, cfg, &name).await;
        if result.is_err() {
            lock(&FAILED).get_or_insert_with(HashSet::new).insert(done);
        }
        result
    }

    async fn place(
        &self,
        vm: &mut FirecrackerVm,
        files: &BootFiles,
        cfg: &FirecrackerConfig,
        name: &str,
    ) -> Result<Snapshot, FirecrackerError> {
        crate::snapshot::settle_clocksource(&vm.client())
            .await
            .map_err(|e| FirecrackerError::Snapshot {
                dir: self.dir.clone(),
                reason: format!("reading the guest's clocksource: {e}"),
            })?;
        std::fs::create_dir_all(&self.dir).map_err(io_err("create", &self.dir))?;
        let tmp = self.tmp_dir();
        let claim =
            firebreak_runner::leftovers::Claim::create_dir(&tmp).map_err(io_err("create", &tmp))?;
        // Gone however this ends: renamed into place, failed, or cancelled mid-snapshot.
        let cleanup = firebreak_runner::leftovers::DirGuard::new(&tmp);
        let done = self.dir.join(name);
        let taken = vm.snapshot(&tmp, true).await.and_then(|_| {
            let list: Vec<TakenFrom> = taken_from(files, cfg)
                .into_iter()
                .map(|path| TakenFrom {
                    identity: file_identity(&path),
                    path,
                })
                .collect();
            let json =
                serde_json::to_vec_pretty(&list).map_err(|e| FirecrackerError::Snapshot {
                    dir: tmp.clone(),
                    reason: e.to_string(),
                })?;
            std::fs::write(tmp.join(FILES), json).map_err(io_err("write", tmp.join(FILES)))
        });
        // A finished snapshot needs no owner: the lock file goes before the rename.
        let placed = taken.map(|()| claim.disown());
        let placed = placed.and_then(|()| match std::fs::rename(&tmp, &done) {
            Ok(()) => Ok(()),
            // Someone else's complete snapshot is already there.
            Err(_) if Snapshot::open(&done).is_ok() => Ok(()),
            Err(e) => Err(io_err("rename", &done)(e)),
        });
        drop(cleanup);
        placed?;
        let snap = Snapshot::open(&done)?;
        // The alias the VM was booted through now leads clones to the
        // snapshot's own disk (if this take is the one in place: another
        // process's may have won).
        let ours = vm.drive_path();
        if !snap.meta.jailed
            && snap.meta.recorded_drive_path == ours
            && ours.starts_with(self.dir.join(DRIVES))
        {
            point_symlink(ours, &done.join(Snapshot::DISK))?;
        }
        Ok(snap)
    }

    fn tmp_dir(&self) -> PathBuf {
        self.dir.join(format!(
            ".tmp-{}-{}",
            firebreak_runner::leftovers::tag(),
            TMP_SEQ.fetch_add(1, Ordering::Relaxed)
        ))
    }

    /// Removes `snap` (a clone of it failed; the next job takes a new one),
    /// unless its directory now holds another snapshot (taken again since).
    pub fn discard(&self, snap: &Snapshot) {
        if snap.dir.parent() != Some(self.dir.as_path()) {
            return;
        }
        match Snapshot::open(&snap.dir) {
            Ok(now) if now.meta == snap.meta => {}
            _ => return,
        }
        // Out of the way in one step, then removed at leisure.
        let aside = self.tmp_dir();
        if std::fs::rename(&snap.dir, &aside).is_ok() {
            let _ = std::fs::remove_dir_all(&aside);
        }
    }

    /// Removes snapshots taken from files that have changed or are gone
    /// since (per their `files.json`), the drive aliases of snapshots that
    /// no longer exist, and leftovers of takes whose process is gone.
    /// Returns what was removed.
    pub fn prune_stale(&self) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return removed;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let stale = if let Some(rest) = name.strip_prefix(".tmp-") {
                firebreak_runner::leftovers::abandoned(&e.path(), rest)
            } else if name.starts_with('.') {
                false
            } else {
                !taken_from_files_unchanged(&e.path())
            };
            if stale && std::fs::remove_dir_all(e.path()).is_ok() {
                removed.push(e.path());
            }
        }
        // Aliases that lead nowhere (their snapshot, or the disk of the VM
        // that was taking it, is gone), and half-made ones of dead processes.
        let Ok(rd) = std::fs::read_dir(self.dir.join(DRIVES)) else {
            return removed;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let stale = match name.split_once(".new-") {
                Some((_, rest)) => firebreak_runner::leftovers::abandoned(&e.path(), rest),
                None => !e.path().exists(),
            };
            if stale && std::fs::remove_file(e.path()).is_ok() {
                removed.push(e.path());
            }
        }
        removed
    }
}

/// Whether every file the snapshot in `dir` was taken from is as it was.
fn taken_from_files_unchanged(dir: &Path) -> bool {
    let Ok(text) = std::fs::read(dir.join(FILES)) else {
        return false;
    };
    let Ok(list) = serde_json::from_slice::<Vec<TakenFrom>>(&text) else {
        return false;
    };
    list.iter().all(|f| file_identity(&f.path) == f.identity)
}

/// The files a snapshot of `files` booted with `cfg` depends on.
fn taken_from(files: &BootFiles, cfg: &FirecrackerConfig) -> Vec<PathBuf> {
    let mut paths = vec![
        files.vmlinux.clone(),
        files.initramfs.clone(),
        files.rootfs.clone(),
    ];
    if let Some(v) = cfg.binary.clone().or_else(find_firecracker) {
        paths.push(v);
    }
    if let Some(j) = &cfg.jailer {
        paths.push(j.binary.clone());
    }
    paths
}

/// The part of a snapshot's name that changes with the files it was booted
/// from and the VMM that wrote it.
fn files_key(files: &BootFiles, cfg: &FirecrackerConfig) -> String {
    let mut h = Sha256::new();
    for p in taken_from(files, cfg) {
        h.update(file_identity(&p).as_bytes());
        h.update(b"\0");
    }
    hex(&h.finalize())[..12].to_string()
}
