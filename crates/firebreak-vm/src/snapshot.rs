//! "Booted, agent ready, idle" snapshots, and clones restored from them.
//!
//! A snapshot is taken once per image and VM shape (everything that goes
//! on QEMU's command line: vCPUs, memory, network, machine, CPU model,
//! accelerator) and cached next to the image:
//!
//! ```text
//! <image dir>/snapshots/<vcpus>c-<MiB>m-<net|nonet>-<key>/
//!     ram.img      the guest's RAM (a file as large as the guest's memory, sparse)
//!     state.bin    QEMU migration stream of the device state (~0.5 MB)
//!     disk.qcow2   the guest's root overlay at that instant (read-only)
//!     meta.json    SnapshotMeta
//! ```
//!
//! `<key>` hashes the QEMU arguments (with a placeholder run directory),
//! the QEMU binary (path, size, mtime) and the image's files (size, mtime):
//! a rebuilt image or an upgraded QEMU gives a new key, and
//! [`prune_stale`] removes snapshots of files that changed.
//!
//! **How it is taken** ([`build`]): cold-boot a VM whose RAM is a shared
//! mapping of `ram.img`, [`prepare_guest`] (job cgroup with pids and memory
//! limits around the agent's per-command cgroups, `sync`), [`warm_up`] (runs
//! `echo`, `bash` and `sh` once, so that clones find them in the page cache
//! and start a job's first command without block I/O), then, with the
//! agent still connected and idle (so a clone's agent is simply waiting for
//! its next request), live-migrate to `exec:cat > state.bin` over QMP with the `x-ignore-shared`
//! capability (RAM stays in the file; only device state is streamed;
//! without `stop`, so clones start running), `quit`, keep the root overlay
//! as `disk.qcow2`.
//!
//! **Why RAM is a file**: a clone maps `ram.img` privately (copy-on-write)
//! instead of reading a ~80 MB stream into fresh memory: pages come from
//! the host's page cache when the guest touches them, shared by every
//! clone, and only the pages a clone writes cost it memory (Firecracker
//! restores snapshots the same way).
//!
//! **Why the disk is kept**: the guest's page cache and ext4 state in
//! the snapshot describe the disk as it was (mounting alone writes the
//! superblock and journal). Each clone therefore gets a fresh
//! qcow2 overlay whose backing file is `disk.qcow2` (which itself is backed
//! by the image's raw `rootfs.ext4`), so every clone sees exactly the disk
//! its memory expects and writes only to its own overlay.
//!
//! **Restoring** is [`QemuVm::restore`]: QEMU started with `-incoming
//! defer`, the agent socket connected before the state loads, the
//! capability set and the stream loaded over QMP, then clock set and
//! entropy added. The VM then serves one
//! job and is destroyed. Everything up to the guest's resume needs nothing
//! from the job, so a provider keeps one such QEMU process started, loaded
//! and paused for its next restore (`standby`, [`VmConfig::standby`]).
//!
//! [`VmConfig::standby`]: crate::VmConfig::standby

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use firebreak_agent::{AgentClient, ExecSpec};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::image::Image;
use crate::qemu::{qemu_args, resolve_kvm, sh_quote, QemuVm, VmConfig, VmError};
use crate::qmp::Qmp;
use crate::tools;

/// Bumped when the snapshot layout or guest preparation changes (13: the guest runs
/// [`warm_up`] before it is saved; 12: snapshots wait for the guest's final clocksource;
/// older ones may hand clones `tsc-early`; format 11 meant to and did not).
pub const SNAPSHOT_FORMAT: u32 = 13;

/// What `meta.json` records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// [`SNAPSHOT_FORMAT`].
    pub format: u32,
    /// The key (see the module docs).
    pub key: String,
    /// Identity of the image's files when the snapshot was taken.
    pub image_identity: String,
    /// Image hash.
    pub image_hash: String,
    /// vCPUs.
    pub vcpus: u32,
    /// Guest memory, MiB.
    pub memory_mib: u64,
    /// User networking.
    pub network: bool,
    /// Taken under KVM.
    pub kvm: bool,
    /// The job cgroup has the pids controller.
    pub pids_controller: bool,
    /// The job cgroup's `memory.max`, bytes.
    pub job_memory_max: Option<u64>,
    /// Seconds since the epoch.
    pub created_unix: u64,
    /// Size of `state.bin`.
    pub state_bytes: u64,
    /// Cold boot + preparation + migration, seconds.
    pub build_seconds: f64,
    /// Guest RAM is in `ram.img` (the stream holds device state only).
    #[serde(default)]
    pub ram_file: bool,
}

/// A usable snapshot on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Its directory.
    pub dir: PathBuf,
    /// Its metadata.
    pub meta: SnapshotMeta,
}

impl Snapshot {
    /// The migration stream.
    pub fn state(&self) -> PathBuf {
        self.dir.join("state.bin")
    }
    /// The guest root disk at snapshot time (backing file of every clone's
    /// overlay).
    pub fn disk(&self) -> PathBuf {
        self.dir.join("disk.qcow2")
    }
    /// The guest's RAM at snapshot time, when it is kept in a file (clones
    /// map it copy-on-write).
    pub fn ram_file(&self) -> Option<PathBuf> {
        self.meta.ram_file.then(|| self.dir.join("ram.img"))
    }
}

/// Where an image's snapshots live.
pub fn snapshots_dir(image: &Image) -> PathBuf {
    image.dir.join("snapshots")
}

/// `path:size:mtime` of `p` (`path:missing` when it cannot be read): changes when the
/// file is rewritten.
pub(crate) fn file_identity(p: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(p) {
        Ok(m) => format!(
            "{}:{}:{}.{}",
            p.display(),
            m.len(),
            m.mtime(),
            m.mtime_nsec()
        ),
        Err(_) => format!("{}:missing", p.display()),
    }
}

/// Identity of the image's files (changes when any of them is rewritten).
pub fn image_identity(image: &Image) -> String {
    [
        image.kernel(),
        image.initramfs(),
        image.rootfs(),
        image.dir.join("manifest.json"),
    ]
    .iter()
    .map(|p| file_identity(p))
    .collect::<Vec<_>>()
    .join("|")
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The directory name of the snapshot for `cfg` on `image` (accelerator
/// already resolved to `kvm`).
pub fn snapshot_name(image: &Image, cfg: &VmConfig, kvm: bool) -> String {
    let args = qemu_args(image, cfg, kvm, Path::new("/run/firebreak-snapshot"), false);
    let mut h = Sha256::new();
    h.update(format!("format={SNAPSHOT_FORMAT}\0kvm={kvm}\0").as_bytes());
    for a in &args {
        h.update(a.as_encoded_bytes());
        h.update(b"\0");
    }
    let qemu = tools::find(tools::QEMU.name)
        .map(|p| file_identity(&p))
        .unwrap_or_default();
    h.update(qemu.as_bytes());
    h.update(b"\0");
    h.update(image_identity(image).as_bytes());
    let key = hex(&h.finalize());
    format!(
        "{}c-{}m-{}-{}",
        cfg.vcpus.max(1),
        cfg.memory_mib.max(128),
        if cfg.network { "net" } else { "nonet" },
        &key[..20]
    )
}

/// The `meta.json` of the snapshot directory `dir`, if it reads and parses.
fn read_meta(dir: &Path) -> Option<SnapshotMeta> {
    let text = std::fs::read_to_string(dir.join("meta.json")).ok()?;
    serde_json::from_str(&text).ok()
}

fn load(dir: &Path, name: &str) -> Option<Snapshot> {
    let meta = read_meta(dir)?;
    let snap = Snapshot {
        dir: dir.to_path_buf(),
        meta,
    };
    let ok = snap.meta.format == SNAPSHOT_FORMAT
        && snap.meta.key == name
        && snap.state().is_file()
        && snap.disk().is_file()
        && snap.ram_file().is_none_or(|f| f.is_file());
    ok.then_some(snap)
}

/// Removes a snapshot whose clones failed to start, so that the next
/// [`ensure`] takes a new one instead of every job waiting for a restore
/// that will not answer. Clones already running keep their open files.
/// Only this very snapshot: if another job has taken a new one under the
/// same name since, that one stays.
pub fn discard(snap: &Snapshot) {
    if read_meta(&snap.dir).as_ref() == Some(&snap.meta) {
        let _ = std::fs::remove_dir_all(&snap.dir);
    }
}

/// The cached snapshot for `cfg`, if there is a valid one.
pub fn find(image: &Image, cfg: &VmConfig, kvm: bool) -> Option<Snapshot> {
    let name = snapshot_name(image, cfg, kvm);
    load(&snapshots_dir(image).join(&name), &name)
}

/// Removes snapshots taken of other versions of the image's files, and
/// leftovers of builds whose process is gone. Returns what was removed.
pub fn prune_stale(image: &Image) -> Vec<PathBuf> {
    let ident = image_identity(image);
    let mut removed = Vec::new();
    let Ok(rd) = std::fs::read_dir(snapshots_dir(image)) else {
        return removed;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let stale = if let Some(rest) = name.strip_prefix(".tmp-") {
            firebreak_runner::leftovers::abandoned(&e.path(), rest)
        } else {
            match read_meta(&e.path()) {
                Some(m) => m.image_identity != ident || m.format != SNAPSHOT_FORMAT,
                None => true,
            }
        };
        if stale && std::fs::remove_dir_all(e.path()).is_ok() {
            removed.push(e.path());
        }
    }
    removed
}

static BUILD_LOCKS: StdMutex<Option<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>> =
    StdMutex::new(None);

/// One lock per snapshot directory in this process, held while it is taken.
pub(crate) fn build_lock(dir: &Path) -> Arc<tokio::sync::Mutex<()>> {
    let mut g = match BUILD_LOCKS.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    g.get_or_insert_with(HashMap::new)
        .entry(dir.to_path_buf())
        .or_default()
        .clone()
}

/// The snapshot for `cfg` if it has been taken already (nothing is built).
pub async fn existing(image: &Image, cfg: &VmConfig) -> Result<Option<Snapshot>, VmError> {
    let kvm = resolve_kvm(image, cfg).await?;
    Ok(find(image, cfg, kvm))
}

/// The snapshot for `cfg`, taken now if there is none (one build at a time
/// per snapshot in this process; concurrent processes race harmlessly: the
/// first complete one wins). Returns whether it was built by this call.
pub async fn ensure(image: &Image, cfg: &VmConfig) -> Result<(Snapshot, bool), VmError> {
    let kvm = resolve_kvm(image, cfg).await?;
    if let Some(s) = find(image, cfg, kvm) {
        return Ok((s, false));
    }
    let name = snapshot_name(image, cfg, kvm);
    let lock = build_lock(&snapshots_dir(image).join(&name));
    let _g = lock.lock().await;
    if let Some(s) = find(image, cfg, kvm) {
        return Ok((s, false));
    }
    let s = build(image, cfg, kvm).await?;
    prune_stale(image);
    Ok((s, true))
}

/// What [`prepare_guest`] managed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestPrep {
    /// The job cgroup is in place with the `pids` controller.
    pub pids_controller: bool,
    /// The job cgroup's `memory.max`, bytes (`None`: not set).
    pub job_memory_max: Option<u64>,
}

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The cgroup (under the guest's real cgroup root) that holds every
/// command of the job. Bind-mounted over `/sys/fs/cgroup`, so the agent's
/// per-command cgroups (`/sys/fs/cgroup/fb-exec-*`) are created inside it
/// and its `pids.max` — seen by the job as `/sys/fs/cgroup/pids.max` —
/// limits the job's processes together; the agent itself stays outside.
pub const JOB_CGROUP: &str = "firebreak-job";

/// Where the job's pids limit is written (inside the guest).
pub const JOB_PIDS_MAX: &str = "/sys/fs/cgroup/pids.max";

/// Guest memory (MiB) kept outside the job cgroup's `memory.max` on top of
/// what the kernel and the agent already use when the guest is prepared:
/// room for the kernel's own allocations and the agent's pages under memory
/// pressure, so that the job cgroup's OOM killer acts before the guest-wide
/// one. With 24 MiB a memory bomb in a 256 MiB `microvm` guest thrashed for
/// over 120 s in 2 of 4 runs; with 48 MiB it was killed after 21-57 s.
pub const AGENT_RESERVE_MIB: u64 = 48;

/// Readies a freshly booted guest for jobs: creates the job cgroup with
/// the `pids` and `memory` controllers and mounts it over `/sys/fs/cgroup`
/// (see [`JOB_CGROUP`]); its `memory.max` is the guest's available memory
/// (`MemAvailable`: what the kernel, the agent and the devices leave, page
/// cache counted as free) less [`AGENT_RESERVE_MIB`], so a memory bomb meets
/// the cgroup's OOM killer, which only chooses among the job's processes
/// (never the agent, never a guest-wide OOM). A fixed share of `MemTotal`
/// is not enough: what the kernel keeps differs by machine type (11 MiB
/// more under `microvm` than `q35` at 256 MiB), and a cgroup limit above
/// what is really free lets the guest thrash its page cache for a minute
/// before the global OOM killer acts. Also creates the job-independent part of the job
/// tree and flushes the disk.
pub async fn prepare_guest(client: &AgentClient) -> Result<GuestPrep, VmError> {
    let root = crate::sandbox::GUEST_ROOT;
    let dirs = [
        format!("{root}/temp/_runner_file_commands"),
        format!("{root}/tool_cache"),
        format!("{root}/home"),
    ];
    client
        .make_dirs(&dirs.iter().map(String::as_str).collect::<Vec<_>>())
        .await?;
    crate::agent_ops::set_machine_id(client).await?;
    // Natively in the agent (it also flushes the disk): the shell script
    // this replaced started eight processes, 0.65-0.77 s after a cold boot
    // under TCG.
    let p = client
        .prepare_job_cgroup(JOB_CGROUP, AGENT_RESERVE_MIB)
        .await?;
    Ok(GuestPrep {
        pids_controller: p.pids,
        job_memory_max: p.memory_max,
    })
}

/// Runs what every job starts with once (the agent's file writes and
/// removes, the pids limit, a few `exec`s of `echo`, `bash` and `sh`).
///
/// Two uses. A pool VM runs it after its restore, so that under TCG that code
/// is already translated when the job comes (a restored VM's first `exec`
/// otherwise costs ~2.5× a later one). A snapshot runs it before its state is
/// saved, so that those programs and their libraries are in the guest's page
/// cache: a restored clone then starts a job's first shell without reading its
/// disk (skipping that block I/O took ~55 ms off a restore of Debian's kernel
/// under TCG, alternating A/B runs on one host).
pub async fn warm_up(client: &AgentClient) -> Result<(), VmError> {
    let dir = format!("{}/temp/.firebreak-warm", crate::sandbox::GUEST_ROOT);
    client.make_dirs(&[dir.as_str()]).await?;
    client.remove(&dir).await?;
    client.write_file(JOB_PIDS_MAX, b"max\n", None).await?;
    client.set_clock(SystemTime::now()).await?;
    for argv in [
        &["/bin/echo", "warm"][..],
        &["/bin/bash", "-c", "echo warm"][..],
        &["/bin/sh", "-c", "echo warm"][..],
        &["echo", "warm"][..],
    ] {
        client
            .exec(ExecSpec::new(argv.iter().copied()).env("PATH", PATH))
            .await?
            .collect()
            .await?;
    }
    Ok(())
}

/// Waits, at most 10 s, until the guest kernel keeps time on its final clocksource.
///
/// A snapshot taken while the kernel is still on `tsc-early` (before it refines its TSC
/// calibration, ~1 s after its clock starts; longer on a busy host) hands that interim
/// clocksource to every clone. A minimal-kernel guest reaches its agent sooner than that
/// on a fast host, so the wait comes right before the guest's state is saved.
pub async fn settle_clocksource(client: &AgentClient) -> Result<(), VmError> {
    const CLOCKSOURCE: &str = "/sys/devices/system/clocksource/clocksource0/current_clocksource";
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        match client.read_file(CLOCKSOURCE).await? {
            Some(cs) if String::from_utf8_lossy(&cs).trim() == "tsc-early" => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ => break,
        }
    }
    Ok(())
}

static BUILD_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Snapshot builds tried before giving up (see [`build`]).
const BUILD_ATTEMPTS: u32 = 3;

/// Takes the snapshot for `cfg` (see the module docs) and proves it: a
/// clone must restore and answer before the snapshot is installed. A
/// snapshot caught at an unlucky instant (seen once in a few dozen builds
/// with 2 vCPUs: clones never answered) is thrown away and taken again.
/// Prefer [`ensure`].
pub async fn build(image: &Image, cfg: &VmConfig, kvm: bool) -> Result<Snapshot, VmError> {
    let mut last = None;
    for _ in 0..BUILD_ATTEMPTS {
        match build_once(image, cfg, kvm).await {
            Ok(s) => return Ok(s),
            // Another try would meet the same agent.
            Err(e @ VmError::AgentVersion { .. }) => return Err(e),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| VmError::Snapshot("no build attempt".into())))
}

/// Restores a clone of the snapshot in `dir` and checks that its agent
/// serves a job's first kinds of request (directories, a file, a command).
async fn verify(
    image: &Image,
    cfg: &VmConfig,
    dir: &Path,
    meta: &SnapshotMeta,
) -> Result<(), VmError> {
    let snap = Snapshot {
        dir: dir.to_path_buf(),
        meta: meta.clone(),
    };
    let mut vcfg = cfg.clone();
    vcfg.job_timeout = None;
    vcfg.boot_timeout = Some(Duration::from_secs(10));
    let mut vm = QemuVm::restore(image, &vcfg, &snap).await.map_err(|e| {
        VmError::Snapshot(format!("a clone of the new snapshot did not start: {e}"))
    })?;
    // What a job does first: make directories, write a file, run a command.
    let client = vm.client();
    let check = async {
        client.make_dirs(&["/tmp/firebreak-verify"]).await?;
        client
            .write_file("/tmp/firebreak-verify/f", b"ok\n", None)
            .await?;
        client
            .exec(ExecSpec::new(["/bin/cat", "/tmp/firebreak-verify/f"]))
            .await?
            .collect()
            .await
    };
    let outcome = tokio::time::timeout(Duration::from_secs(10), check).await;
    vm.kill().await;
    match outcome {
        Ok(Ok((out, _, firebreak_agent::ExitStatus::Exited { code: 0 }))) if out == b"ok\n" => {
            Ok(())
        }
        Ok(Ok((out, err, st))) => Err(VmError::Snapshot(format!(
            "a clone of the new snapshot misbehaved: cat gave {st:?}, {:?} {:?}",
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&err)
        ))),
        Ok(Err(e)) => Err(VmError::Snapshot(format!(
            "a clone of the new snapshot failed a request: {e}"
        ))),
        Err(_) => Err(VmError::Snapshot(
            "a clone of the new snapshot did not answer within 10 s".into(),
        )),
    }
}

async fn build_once(image: &Image, cfg: &VmConfig, kvm: bool) -> Result<Snapshot, VmError> {
    let t0 = Instant::now();
    let name = snapshot_name(image, cfg, kvm);
    let parent = snapshots_dir(image);
    let tmp = parent.join(format!(
        ".tmp-{}-{}-{name}",
        firebreak_runner::leftovers::tag(),
        BUILD_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let io = |op: &'static str, p: &Path| {
        let path = p.to_path_buf();
        move |source| VmError::Io { op, path, source }
    };
    let claim = firebreak_runner::leftovers::Claim::create_dir(&tmp).map_err(io("create", &tmp))?;
    // Failed or cancelled (the future dropped while a VM boots or saves): nothing is left.
    let guard = firebreak_runner::leftovers::DirGuard::new(&tmp);
    let meta = build_in(image, cfg, kvm, &name, &tmp, t0).await?;
    verify(image, cfg, &tmp, &meta).await?;
    let dir = parent.join(&name);
    // A finished snapshot needs no owner: the lock file goes before the rename.
    claim.disown();
    if std::fs::rename(&tmp, &dir).is_err() {
        // Someone else finished first (or a broken leftover is in the way).
        drop(guard);
        if let Some(s) = load(&dir, &name) {
            return Ok(s);
        }
        let _ = std::fs::remove_dir_all(&dir);
        return Err(VmError::Snapshot(format!(
            "cannot install the snapshot at {}",
            dir.display()
        )));
    }
    guard.disarm();
    Ok(Snapshot { dir, meta })
}

async fn build_in(
    image: &Image,
    cfg: &VmConfig,
    kvm: bool,
    name: &str,
    tmp: &Path,
    t0: Instant,
) -> Result<SnapshotMeta, VmError> {
    let mut bcfg = cfg.clone();
    bcfg.job_timeout = None;
    // The VM runs in the usual run directory: socket paths must stay under
    // 108 bytes, which the snapshot directory's would not.
    bcfg.accel = if kvm {
        crate::qemu::Accel::Kvm
    } else {
        crate::qemu::Accel::Tcg
    };
    // Guest RAM in a shared file mapping: when QEMU stops, the file is the
    // guest's memory, and clones map it copy-on-write instead of reading it
    // from the migration stream.
    bcfg.ram_file = Some(tmp.join("ram.img"));
    let mut vm = QemuVm::boot(image, &bcfg).await?;
    let res = snapshot_vm(&mut vm, tmp).await;
    vm.kill().await;
    let (prep, state_bytes) = res?;
    let meta = SnapshotMeta {
        format: SNAPSHOT_FORMAT,
        key: name.to_string(),
        image_identity: image_identity(image),
        image_hash: image.manifest.hash.clone(),
        vcpus: cfg.vcpus.max(1),
        memory_mib: cfg.memory_mib.max(128),
        network: cfg.network,
        kvm,
        pids_controller: prep.pids_controller,
        job_memory_max: prep.job_memory_max,
        created_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        state_bytes,
        build_seconds: t0.elapsed().as_secs_f64(),
        ram_file: true,
    };
    let text = serde_json::to_string_pretty(&meta)
        .map_err(|e| VmError::Snapshot(format!("meta.json: {e}")))?;
    let meta_path = tmp.join("meta.json");
    std::fs::write(&meta_path, text).map_err(|source| VmError::Io {
        op: "write",
        path: meta_path,
        source,
    })?;
    Ok(meta)
}

/// Prepares the guest, migrates it to `dir/state.bin`, stops QEMU and moves
/// its overlay to `dir/disk.qcow2`.
async fn snapshot_vm(vm: &mut QemuVm, dir: &Path) -> Result<(GuestPrep, u64), VmError> {
    let prep = prepare_guest(&vm.client()).await?;
    // Leaves the programs a job starts with in the page cache that every
    // clone inherits.
    warm_up(&vm.client()).await?;
    settle_clocksource(&vm.client()).await?;
    // The agent stays connected and idle, waiting for its next request: a
    // clone's host end is connected before its state loads, so the guest
    // never sees the port close and reopen (a snapshot caught while the
    // agent was reopening its port gave clones that sometimes stopped
    // answering after their hello).
    let mut qmp = Qmp::connect(&vm.qmp_socket(), Duration::from_secs(5)).await?;
    // Unthrottled: the stream goes to a local file.
    let _ = qmp
        .execute(
            "migrate-set-parameters",
            Some(json!({ "max-bandwidth": 1u64 << 40 })),
        )
        .await;
    // RAM stays in the shared RAM file: only device state is streamed.
    qmp.execute(
        "migrate-set-capabilities",
        Some(json!({ "capabilities": [
            { "capability": "x-ignore-shared", "state": true }
        ] })),
    )
    .await?;
    let state = dir.join("state.bin");
    let uri: OsString = format!("exec:cat > {}", sh_quote(&state.to_string_lossy())).into();
    qmp.execute("migrate", Some(json!({ "uri": uri.to_string_lossy() })))
        .await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let st = qmp.execute("query-migrate", None).await?;
        match st.get("status").and_then(|s| s.as_str()).unwrap_or("") {
            "completed" => break,
            "failed" | "cancelled" => {
                return Err(VmError::Snapshot(format!("migration {st}")));
            }
            _ => {}
        }
        if Instant::now() > deadline {
            let _ = qmp.execute("migrate_cancel", None).await;
            return Err(VmError::Snapshot(
                "migration did not finish in 120 s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = qmp.execute("quit", None).await;
    if !vm.wait_exit(Duration::from_secs(10)).await {
        return Err(VmError::Snapshot(
            "QEMU did not quit after migration".into(),
        ));
    }
    let disk = dir.join("disk.qcow2");
    let overlay = vm.run_dir().join("overlay.qcow2");
    if std::fs::rename(&overlay, &disk).is_err() {
        // Another file system: copy.
        std::fs::copy(&overlay, &disk).map_err(|source| VmError::Io {
            op: "copy",
            path: overlay.clone(),
            source,
        })?;
    }
    use std::os::unix::fs::PermissionsExt;
    for f in [&disk, &state] {
        let _ = std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o444));
    }
    let state_bytes = std::fs::metadata(&state)
        .map_err(|source| VmError::Io {
            op: "stat",
            path: state.clone(),
            source,
        })?
        .len();
    if state_bytes == 0 {
        return Err(VmError::Snapshot("empty migration stream".into()));
    }
    Ok((prep, state_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Manifest;

    fn fake_image(dir: &Path) -> Image {
        for f in [
            "bzImage",
            "initramfs.cpio.gz",
            "rootfs.ext4",
            "manifest.json",
        ] {
            std::fs::write(dir.join(f), f).expect("write");
        }
        Image {
            dir: dir.to_path_buf(),
            manifest: Manifest {
                hash: "abc".into(),
                builder_version: 1,
                created_unix: 0,
                suite: "bookworm".into(),
                mirror: String::new(),
                packages: Vec::new(),
                base: String::new(),
                kernel_release: String::new(),
                kernel: crate::image::KernelKind::Package,
                kernel_build: None,
                agent_sha256: String::new(),
                agent_protocol: None,
                modules: Vec::new(),
                rootfs_bytes: 0,
                build_seconds: 0.0,
            },
        }
    }

    #[test]
    fn name_depends_on_shape_and_image_files() {
        let d = tempfile::tempdir().expect("tempdir");
        let img = fake_image(d.path());
        let cfg = VmConfig {
            memory_mib: 256,
            ..VmConfig::default()
        };
        let a = snapshot_name(&img, &cfg, false);
        assert!(a.starts_with("2c-256m-nonet-"), "{a}");
        assert_eq!(a, snapshot_name(&img, &cfg, false));
        // Timeouts and the run directory do not matter.
        let mut c2 = cfg.clone();
        c2.job_timeout = Some(Duration::from_secs(3));
        c2.run_parent = Some("/elsewhere".into());
        assert_eq!(a, snapshot_name(&img, &c2, false));
        let mut c3 = cfg.clone();
        c3.network = true;
        assert_ne!(a, snapshot_name(&img, &c3, false));
        assert_ne!(a, snapshot_name(&img, &cfg, true));
        std::fs::write(d.path().join("rootfs.ext4"), "changed!").expect("write");
        assert_ne!(a, snapshot_name(&img, &cfg, false));
    }

    #[test]
    fn the_minimal_kernel_boots_without_acpi_or_initramfs() {
        let d = tempfile::tempdir().expect("tempdir");
        let mut img = fake_image(d.path());
        let cfg = VmConfig {
            machine: crate::Machine::Microvm,
            ..VmConfig::default()
        };
        let machine = |img: &Image| {
            let args = qemu_args(img, &cfg, false, Path::new("/run/x"), true);
            let i = args.iter().position(|a| a == "-machine").expect("-machine");
            args[i + 1].to_string_lossy().into_owned()
        };
        let package = snapshot_name(&img, &cfg, false);
        assert!(!machine(&img).contains("acpi=off"), "{}", machine(&img));
        img.manifest.kernel = crate::image::KernelKind::Minimal;
        assert!(machine(&img).contains("acpi=off"), "{}", machine(&img));
        // ...and mounts its root disk itself, with the agent as init: no initramfs.
        let args = qemu_args(&img, &cfg, false, Path::new("/run/x"), true);
        assert!(!args.iter().any(|a| a == "-initrd"), "{args:?}");
        let append = args.iter().position(|a| a == "-append").expect("-append");
        let cmdline = args[append + 1].to_string_lossy();
        assert!(
            cmdline.contains("root=/dev/vda") && cmdline.contains("init=/sbin/firebreak-agent"),
            "{cmdline}"
        );
        // A snapshot of one cannot be restored as the other.
        assert_ne!(package, snapshot_name(&img, &cfg, false));
    }

    #[test]
    fn find_checks_meta_and_files_and_prune_drops_stale() {
        let d = tempfile::tempdir().expect("tempdir");
        let img = fake_image(d.path());
        let cfg = VmConfig::default();
        let name = snapshot_name(&img, &cfg, false);
        let dir = snapshots_dir(&img).join(&name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let meta = SnapshotMeta {
            format: SNAPSHOT_FORMAT,
            key: name.clone(),
            image_identity: image_identity(&img),
            image_hash: "abc".into(),
            vcpus: 2,
            memory_mib: 2048,
            network: false,
            kvm: false,
            pids_controller: true,
            job_memory_max: Some(1),
            created_unix: 0,
            state_bytes: 1,
            build_seconds: 0.0,
            ram_file: true,
        };
        std::fs::write(
            dir.join("meta.json"),
            serde_json::to_string(&meta).expect("json"),
        )
        .expect("write");
        assert!(find(&img, &cfg, false).is_none(), "no state/disk yet");
        std::fs::write(dir.join("state.bin"), "s").expect("write");
        std::fs::write(dir.join("disk.qcow2"), "d").expect("write");
        assert!(find(&img, &cfg, false).is_none(), "no RAM file yet");
        std::fs::write(dir.join("ram.img"), "r").expect("write");
        assert_eq!(find(&img, &cfg, false).map(|s| s.meta), Some(meta));
        // A build whose maker died (its lock is free) goes; one under way stays.
        let junk = snapshots_dir(&img).join(".tmp-999999999-0000abcd-0-x");
        drop(firebreak_runner::leftovers::Claim::create_dir(&junk).expect("claim"));
        let building =
            snapshots_dir(&img).join(format!(".tmp-{}-0-x", firebreak_runner::leftovers::tag()));
        let _claim = firebreak_runner::leftovers::Claim::create_dir(&building).expect("claim");
        assert_eq!(prune_stale(&img), vec![junk]);
        assert!(dir.exists());
        // Rewriting the kernel invalidates it.
        std::fs::write(d.path().join("bzImage"), "new kernel").expect("write");
        assert!(find(&img, &cfg, false).is_none());
        assert_eq!(prune_stale(&img), vec![dir]);
    }
}
