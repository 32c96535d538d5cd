//! Guest images: build, cache, list, prune.
//!
//! An image is a directory `<cache>/images/<hash>/` holding
//!
//! * `bzImage` — the kernel (QEMU `-kernel`): Debian's cloud kernel package by default, or the
//!   minimal kernel built from Debian's kernel source ([`KernelKind`], [`crate::kernel`]),
//! * `vmlinux` — the same kernel uncompressed (Firecracker wants an ELF),
//! * `initramfs.cpio.gz` — busybox plus the virtio modules (none for the
//!   minimal kernel, which has them built in); it loads them,
//!   mounts `/dev/vda` and `switch_root`s to `/sbin/firebreak-agent`,
//! * `rootfs.ext4` — Debian (`debootstrap --variant=minbase`) with the job
//!   tools and the agent,
//! * `manifest.json` — what went in ([`Manifest`]).
//!
//! `<hash>` is the SHA-256 of the recipe ([`ImageSpec`] plus the agent
//! binary's own hash and this builder's version), so changing any input gives
//! a new directory and an unchanged recipe is never rebuilt. Builds happen in
//! `<cache>/images/.tmp-<hash>-<pid>` and are renamed into place when complete.
//!
//! The slow part, debootstrap, is cached separately: `<cache>/bases/<key>/`
//! (key = suite, mirror, packages) holds the Debian tree and its kernel, so a
//! new agent only costs the initramfs and `mkfs.ext4`. Downloaded `.deb`s are
//! kept in `<cache>/debs`. [`ImageStore::prune`] removes old images and the
//! base trees no remaining image uses.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::tools::{self, Tool};

/// Bumped whenever the build steps change what ends up in an image.
pub const BUILDER_VERSION: u32 = 2;

/// Packages installed on top of `minbase`.
pub const DEFAULT_PACKAGES: &[&str] = &[
    "bash",
    "coreutils",
    "git",
    "curl",
    "ca-certificates",
    "python3",
    // `python` as GitHub's images have it: the `shell: python` of a step runs `python {0}`.
    "python-is-python3",
    "nodejs",
    "tar",
    "gzip",
    "xz-utils",
    "zstd",
    "jq",
    "procps",
    "iproute2",
    "linux-image-cloud-amd64",
];

/// Kernel modules the initramfs loads (with their dependencies), by group.
/// `core` always (disk, agent port, entropy; the MMIO transport); `pci`
/// when the guest has a PCI bus (QEMU `q35`; not `microvm`, not
/// Firecracker); `net` when the kernel command line has `firebreak.net=…`;
/// `vsock` when it has `firebreak.vsock=…` (Firecracker). Each module costs a
/// signature check, slow under TCG, so only what a boot needs is loaded.
/// Built-in modules are skipped.
pub const INITRAMFS_MODULES: &[(&str, &[&str])] = &[
    (
        "core",
        &["virtio_mmio", "virtio_blk", "virtio_console", "virtio_rng"],
    ),
    ("pci", &["virtio_pci"]),
    ("net", &["virtio_net"]),
    ("vsock", &["vmw_vsock_virtio_transport"]),
];

const INIT_SCRIPT: &str = r#"#!/bin/busybox sh
# firebreak initramfs: load virtio modules, mount the root disk, hand over to the agent.
# Applets are called by name and files are read with shell builtins: Debian's static
# busybox then runs an applet inside the shell or in a fork of it, where `/bin/busybox
# applet` or `$(cat f)` would each fork and exec, about 40 ms apiece under TCG.
export PATH=/bin
mkdir -p /proc /sys /dev /newroot
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
load() {
  while read -r m; do
    insmod /lib/modules/$m || echo "firebreak-init: insmod $m failed"
  done < /modules.$1
}
load core
# The PCI transport only where there is a PCI bus (q35; not microvm or Firecracker).
for d in /sys/bus/pci/devices/*; do [ -e "$d" ] && load pci; break; done
read -r CMDLINE < /proc/cmdline
CMDLINE=" $CMDLINE "
case "$CMDLINE" in *" firebreak.net="*) load net;; esac
case "$CMDLINE" in *" firebreak.vsock="*) load vsock;; esac
i=0
while [ ! -b /dev/vda ]; do
  i=$((i+1))
  if [ $i -gt 1000 ]; then echo "firebreak-init: no /dev/vda"; poweroff -f; fi
  usleep 10000
done
mount -t ext4 -o rw,noatime /dev/vda /newroot || { echo "firebreak-init: cannot mount /dev/vda"; poweroff -f; }
mount --move /dev /newroot/dev
umount /proc /sys
exec switch_root /newroot /sbin/firebreak-agent
echo "firebreak-init: switch_root failed"
poweroff -f
"#;

/// The busybox applets [`INIT_SCRIPT`] calls, linked in `/bin` so that their
/// names work even with a busybox whose shell does not prefer its applets.
const INIT_APPLETS: &[&str] = &[
    "mkdir",
    "mount",
    "umount",
    "insmod",
    "usleep",
    "switch_root",
    "poweroff",
];

/// Where an image's kernel comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KernelKind {
    /// Debian's `linux-image-cloud-amd64` package: every driver available (as modules the
    /// initramfs loads or a job can `modprobe`); ~3.3 s from QEMU's start to the agent under TCG.
    #[default]
    Package,
    /// Built from Debian's `linux-source-6.1` package with `kernel/firebreak.config`: what a
    /// job's VM needs built in, nothing else, no ACPI, no initramfs; ~1.3 s to the agent under
    /// TCG. The first
    /// build compiles a kernel (minutes; cached).
    Minimal,
}

impl KernelKind {
    /// Whether the kernel reads ACPI tables. Without ACPI a `microvm` guest finds its virtio
    /// devices on the kernel command line, which QEMU writes only when the machine's ACPI is off.
    pub fn has_acpi(self) -> bool {
        self == KernelKind::Package
    }

    /// Whether QEMU boots the kernel with the initramfs. Debian's kernel needs it to load the
    /// virtio and ext4 modules; the minimal kernel has them built in and mounts the root disk
    /// itself, with the agent as `init` (the image still carries the initramfs, which
    /// Firecracker boots).
    pub fn needs_initramfs(self) -> bool {
        self == KernelKind::Package
    }
}

/// What to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    /// Debian suite (`bookworm`).
    pub suite: String,
    /// Debian mirror; `None` reads it from `/etc/apt/sources.list(.d)`.
    pub mirror: Option<String>,
    /// Packages on top of minbase (must include a kernel, e.g.
    /// `linux-image-cloud-amd64`).
    pub packages: Vec<String>,
    /// The static `firebreak-agent` binary installed as `/sbin/firebreak-agent`.
    pub agent_binary: PathBuf,
    /// Free space left in the root filesystem for jobs, in MiB (the file is
    /// sparse; each VM writes to its own copy-on-write overlay).
    pub free_space_mib: u64,
    /// Where the kernel comes from.
    pub kernel: KernelKind,
}

impl ImageSpec {
    /// The default recipe (bookworm, [`DEFAULT_PACKAGES`], 4 GiB free) around
    /// an agent binary.
    pub fn new(agent_binary: impl Into<PathBuf>) -> Self {
        ImageSpec {
            suite: "bookworm".into(),
            mirror: None,
            packages: DEFAULT_PACKAGES.iter().map(|s| s.to_string()).collect(),
            agent_binary: agent_binary.into(),
            free_space_mib: 4096,
            kernel: KernelKind::Package,
        }
    }

    /// The same recipe with its kernel from `kind`; the minimal kernel drops the kernel
    /// packages (`linux-image-*`) from the root filesystem, which then has no use for them.
    pub fn with_kernel(mut self, kind: KernelKind) -> Self {
        self.kernel = kind;
        if kind == KernelKind::Minimal {
            self.packages.retain(|p| !p.starts_with("linux-image-"));
        }
        self
    }
}

/// What went into a built image (`manifest.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The image hash (directory name).
    pub hash: String,
    /// [`BUILDER_VERSION`] that built it.
    pub builder_version: u32,
    /// Seconds since the epoch when the build finished.
    pub created_unix: u64,
    /// Debian suite.
    pub suite: String,
    /// Mirror used.
    pub mirror: String,
    /// Extra packages.
    pub packages: Vec<String>,
    /// Key of the debootstrapped base tree (`<cache>/bases/<base>`).
    pub base: String,
    /// Guest kernel release (`uname -r`).
    pub kernel_release: String,
    /// Where the kernel came from (images built before this field have Debian's package).
    #[serde(default)]
    pub kernel: KernelKind,
    /// The cache key of the built kernel (`<cache>/kernels/<key>`), for a minimal kernel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_build: Option<String>,
    /// SHA-256 of the agent binary.
    pub agent_sha256: String,
    /// Modules the initramfs loads, in order.
    pub modules: Vec<String>,
    /// Size of `rootfs.ext4` (apparent) in bytes.
    pub rootfs_bytes: u64,
    /// How long the build took.
    pub build_seconds: f64,
}

/// A built image in the cache.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// Its directory.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
}

impl Image {
    /// The compressed kernel (`-kernel` for QEMU).
    pub fn kernel(&self) -> PathBuf {
        self.dir.join("bzImage")
    }
    /// The uncompressed ELF kernel (Firecracker).
    pub fn vmlinux(&self) -> PathBuf {
        self.dir.join("vmlinux")
    }
    /// The initramfs.
    pub fn initramfs(&self) -> PathBuf {
        self.dir.join("initramfs.cpio.gz")
    }
    /// The raw ext4 root filesystem (read-only base of every VM's overlay).
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs.ext4")
    }
    /// Bytes on disk used by the image, the VM snapshots taken of it included.
    pub fn disk_usage(&self) -> u64 {
        du_bytes(&self.dir)
    }
}

/// Progress of [`ImageStore::build`].
#[derive(Debug, Clone, PartialEq)]
pub enum BuildEvent {
    /// A new step began.
    Step {
        /// 1-based.
        index: u32,
        /// Number of steps.
        total: u32,
        /// What it does.
        what: String,
    },
    /// A line of detail (e.g. a package being fetched).
    Detail(String),
    /// The image is ready (built now or found in the cache).
    Done {
        /// Its hash.
        hash: String,
        /// Found in the cache, nothing built.
        cached: bool,
    },
}

/// Errors of image building and the cache.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// A host program is missing.
    #[error("{tool} not found on this host: install it with `apt-get install {package}`")]
    MissingTool {
        /// Program name.
        tool: &'static str,
        /// Debian package providing it.
        package: &'static str,
    },
    /// Building needs root (debootstrap, device nodes).
    #[error("building an image needs root ({0})")]
    NeedsRoot(&'static str),
    /// The agent binary is missing or not statically linked.
    #[error("agent binary {path}: {reason}. Build it with: RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --release -p firebreak-agent --target x86_64-unknown-linux-gnu")]
    BadAgent {
        /// Path given.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A build command failed.
    #[error("{command} failed ({status}): {output}")]
    CommandFailed {
        /// The command line.
        command: String,
        /// Exit status.
        status: String,
        /// The end of its output.
        output: String,
    },
    /// The rootfs has no kernel.
    #[error("no kernel in {0} (is a linux-image package in the package list?)")]
    NoKernel(PathBuf),
    /// A needed kernel module is missing.
    #[error("kernel module {0} not found in modules.dep")]
    MissingModule(String),
    /// The compressed kernel could not be unpacked into an ELF.
    #[error("cannot extract vmlinux from {0}: no known compressed payload")]
    NoVmlinux(PathBuf),
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// No image in the cache.
    #[error("no image in {0}: run `firebreak image build`")]
    NoImage(PathBuf),
    /// The kernel configuration lost an option of `kernel/firebreak.config`.
    #[error("kernel configuration {config} does not have {option} although kernel/firebreak.config asks for it (a dependency missing from the fragment, or an option this kernel version renamed)")]
    KernelConfig {
        /// The fragment's line.
        option: String,
        /// The final `.config`.
        config: PathBuf,
    },
}

pub(crate) fn io_err(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> ImageError {
    let path = path.into();
    move |source| ImageError::Io { op, path, source }
}

pub(crate) fn tool(t: &Tool) -> Result<PathBuf, ImageError> {
    tools::find(t.name).ok_or(ImageError::MissingTool {
        tool: t.name,
        package: t.package,
    })
}

/// Where firebreak caches things: `$FIREBREAK_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/firebreak`, else `~/.cache/firebreak`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("FIREBREAK_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("firebreak");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".cache").join("firebreak")
}

/// The Debian mirror named in this host's apt sources (first `debian` URI
/// serving `suite`), else `http://deb.debian.org/debian`.
pub fn host_mirror(suite: &str) -> String {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(rd) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        if let Some(m) = mirror_from_sources(&text, suite) {
            return m;
        }
    }
    "http://deb.debian.org/debian".into()
}

/// Parses one-line (`deb URI suite …`) and deb822 (`URIs:`/`Suites:`) apt
/// sources; returns the first URI for `suite` that looks like a Debian
/// archive (not the security archive).
pub fn mirror_from_sources(text: &str, suite: &str) -> Option<String> {
    let usable = |uri: &str| uri.contains("debian") && !uri.contains("security");
    // One-line format.
    for line in text.lines() {
        let mut words = line.split_whitespace().peekable();
        if words.next() != Some("deb") {
            continue;
        }
        if words.peek().is_some_and(|w| w.starts_with('[')) {
            for w in words.by_ref() {
                if w.ends_with(']') {
                    break;
                }
            }
        }
        if let (Some(uri), Some(s)) = (words.next(), words.next()) {
            if s == suite && usable(uri) {
                return Some(uri.trim_end_matches('/').to_string());
            }
        }
    }
    // deb822 stanzas.
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        let (Some(uris), Some(suites)) = (field("URIs"), field("Suites")) else {
            continue;
        };
        if field("Types").is_some_and(|t| !t.split_whitespace().any(|t| t == "deb")) {
            continue;
        }
        if suites.split_whitespace().any(|s| s == suite) {
            if let Some(uri) = uris.split_whitespace().find(|u| usable(u)) {
                return Some(uri.trim_end_matches('/').to_string());
            }
        }
    }
    None
}

/// Hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> Result<String, ImageError> {
    let mut f = std::fs::File::open(path).map_err(io_err("open", path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(io_err("read", path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// True when `path` is an ELF executable with no program interpreter
/// (statically linked). `None` when it is not an ELF64 file.
pub fn is_static_elf(path: &Path) -> Option<bool> {
    let data = std::fs::read(path).ok()?;
    let u16_at = |o: usize| Some(u16::from_le_bytes(data.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(data.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(data.get(o..o + 8)?.try_into().ok()?));
    if data.get(0..4)? != b"\x7fELF" || *data.get(4)? != 2 {
        return None;
    }
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    for i in 0..phnum {
        if u32_at(phoff.checked_add(i.checked_mul(phentsize)?)?)? == 3 {
            return Some(false); // PT_INTERP
        }
    }
    Some(true)
}

/// Finds a statically linked `firebreak-agent` to put in an image:
/// `$FIREBREAK_AGENT`, else next to the running executable, else
/// `target/x86_64-unknown-linux-gnu/release/` below the current directory.
/// The error says how to build one.
pub fn locate_agent() -> Result<PathBuf, ImageError> {
    let mut candidates = Vec::new();
    if let Some(p) = std::env::var_os("FIREBREAK_AGENT").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        check_agent(&p)?;
        return Ok(p);
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        candidates.push(dir.join("firebreak-agent"));
    }
    candidates.push(PathBuf::from(
        "target/x86_64-unknown-linux-gnu/release/firebreak-agent",
    ));
    let mut last = None;
    for c in candidates {
        match check_agent(&c) {
            Ok(()) => return Ok(absolute(&c)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or(ImageError::BadAgent {
        path: PathBuf::from("firebreak-agent"),
        reason: "not found".into(),
    }))
}

/// The cache of built images.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
}

/// What [`ImageStore::prune`] removed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PruneReport {
    /// Removed directories.
    pub removed: Vec<PathBuf>,
    /// Bytes freed.
    pub freed_bytes: u64,
}

impl ImageStore {
    /// A store under `cache_dir` (images go to `cache_dir/images`).
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        ImageStore {
            root: cache_dir.into(),
        }
    }

    /// The store at [`default_cache_dir`].
    pub fn open_default() -> Self {
        Self::new(default_cache_dir())
    }

    /// `<cache>/images`.
    pub fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    /// The hash an [`ImageSpec`] builds to (reads the agent binary).
    pub fn hash_of(&self, spec: &ImageSpec) -> Result<String, ImageError> {
        let agent = sha256_file(&spec.agent_binary)?;
        let mirror = spec
            .mirror
            .clone()
            .unwrap_or_else(|| host_mirror(&spec.suite));
        let kernel = kernel_build_key(spec)?;
        Ok(recipe_hash(spec, &mirror, &agent, kernel.as_deref()))
    }

    /// Every complete image, newest first.
    pub fn list(&self) -> Result<Vec<Image>, ImageError> {
        let dir = self.images_dir();
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(ImageError::Io {
                    op: "list",
                    path: dir,
                    source: e,
                })
            }
        };
        let mut out: Vec<Image> = rd
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter_map(|e| load_image(&e.path()))
            .collect();
        out.sort_by_key(|i| std::cmp::Reverse(i.manifest.created_unix));
        Ok(out)
    }

    /// The image with this hash (or unique hash prefix).
    pub fn get(&self, hash: &str) -> Result<Option<Image>, ImageError> {
        let all = self.list()?;
        let mut hits = all
            .into_iter()
            .filter(|i| i.manifest.hash.starts_with(hash));
        match (hits.next(), hits.next()) {
            (Some(i), None) => Ok(Some(i)),
            _ => Ok(None),
        }
    }

    /// The newest image.
    pub fn latest(&self) -> Result<Image, ImageError> {
        self.list()?
            .into_iter()
            .next()
            .ok_or_else(|| ImageError::NoImage(self.images_dir()))
    }

    /// Removes all but the `keep` newest images, plus leftovers of builds
    /// whose process is gone.
    pub fn prune(&self, keep: usize) -> Result<PruneReport, ImageError> {
        let mut report = PruneReport::default();
        for img in self.list()?.into_iter().skip(keep) {
            report.freed_bytes += img.disk_usage();
            std::fs::remove_dir_all(&img.dir).map_err(io_err("remove", &img.dir))?;
            report.removed.push(img.dir);
        }
        // Base trees no remaining image uses.
        let remaining = self.list()?;
        let used_bases: BTreeSet<String> =
            remaining.iter().map(|i| i.manifest.base.clone()).collect();
        let used_kernels: BTreeSet<String> = remaining
            .iter()
            .filter_map(|i| i.manifest.kernel_build.clone())
            .collect();
        for (dir, used) in [
            (self.bases_dir(), &used_bases),
            (self.kernels_dir(), &used_kernels),
        ] {
            let Ok(rd) = std::fs::read_dir(dir) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !name.starts_with('.') && !used.contains(&name) {
                    report.freed_bytes += du_bytes(&e.path());
                    std::fs::remove_dir_all(e.path()).map_err(io_err("remove", e.path()))?;
                    report.removed.push(e.path());
                }
            }
        }
        for e in [self.images_dir(), self.bases_dir(), self.kernels_dir()]
            .iter()
            .filter_map(|d| std::fs::read_dir(d).ok())
            .flatten()
            .flatten()
        {
            {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(rest) = name.strip_prefix(".tmp-") else {
                    continue;
                };
                if firebreak_runner::leftovers::abandoned(&e.path(), rest) {
                    let _ = std::fs::remove_dir_all(e.path());
                    report.removed.push(e.path());
                }
            }
        }
        Ok(report)
    }

    /// Builds the image for `spec`, or returns it from the cache. Blocking and
    /// slow (minutes: debootstrap); call it from a blocking thread. `progress`
    /// hears about each step.
    pub fn build(
        &self,
        spec: &ImageSpec,
        progress: &mut dyn FnMut(BuildEvent),
    ) -> Result<Image, ImageError> {
        let t0 = Instant::now();
        check_agent(&spec.agent_binary)?;
        let agent_sha = sha256_file(&spec.agent_binary)?;
        let mirror = spec
            .mirror
            .clone()
            .unwrap_or_else(|| host_mirror(&spec.suite));
        if spec.kernel == KernelKind::Minimal {
            // Checked up front so a missing compiler does not waste a debootstrap.
            crate::kernel::check_prerequisites()?;
        }
        let kernel_key = kernel_build_key(spec)?;
        let hash = recipe_hash(spec, &mirror, &agent_sha, kernel_key.as_deref());
        let final_dir = self.images_dir().join(&hash);
        if let Some(img) = load_image(&final_dir) {
            progress(BuildEvent::Done { hash, cached: true });
            return Ok(img);
        }
        let debootstrap = tool(&tools::DEBOOTSTRAP)?;
        let mkfs = tool(&tools::MKFS_EXT4)?;
        let busybox = tool(&tools::BUSYBOX)?;
        if is_static_elf(&busybox) != Some(true) {
            return Err(ImageError::MissingTool {
                tool: "busybox (static)",
                package: "busybox-static",
            });
        }
        // Checked up front so a missing decompressor does not waste a debootstrap.
        tool(&tools::LZ4)?;
        if !nix::unistd::Uid::effective().is_root() {
            return Err(ImageError::NeedsRoot("debootstrap"));
        }

        let staging = self.images_dir().join(format!(
            ".tmp-{}-{hash}",
            firebreak_runner::leftovers::tag()
        ));
        let claim = firebreak_runner::leftovers::Claim::create_dir(&staging)
            .map_err(io_err("create", &staging))?;
        let result = self.build_in(
            spec,
            &mirror,
            &hash,
            kernel_key,
            &agent_sha,
            &staging,
            &debootstrap,
            &mkfs,
            &busybox,
            t0,
            progress,
        );
        match result {
            Ok(mut manifest) => {
                manifest.build_seconds = t0.elapsed().as_secs_f64();
                write_manifest(&staging, &manifest)?;
                // A finished image needs no owner: the lock file goes before the rename.
                claim.disown();
                match std::fs::rename(&staging, &final_dir) {
                    Ok(()) => {}
                    // Someone else finished the same recipe first: use theirs.
                    Err(_) if load_image(&final_dir).is_some() => {
                        let _ = std::fs::remove_dir_all(&staging);
                    }
                    Err(e) => {
                        return Err(ImageError::Io {
                            op: "rename",
                            path: final_dir,
                            source: e,
                        })
                    }
                }
                progress(BuildEvent::Done {
                    hash: hash.clone(),
                    cached: false,
                });
                load_image(&final_dir).ok_or(ImageError::NoImage(final_dir))
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                Err(e)
            }
        }
    }

    /// `<cache>/bases`: debootstrapped root trees, shared by images that
    /// differ only in the agent.
    pub fn bases_dir(&self) -> PathBuf {
        self.root.join("bases")
    }

    /// `<cache>/kernels`: minimal kernels built from source ([`crate::kernel`]).
    pub fn kernels_dir(&self) -> PathBuf {
        self.root.join("kernels")
    }

    /// Returns the debootstrapped tree for (suite, mirror, packages),
    /// running debootstrap if it is not cached.
    fn ensure_base(
        &self,
        spec: &ImageSpec,
        mirror: &str,
        debootstrap: &Path,
        progress: &mut dyn FnMut(BuildEvent),
    ) -> Result<(PathBuf, String), ImageError> {
        let key = base_hash(spec, mirror);
        let dir = self.bases_dir().join(&key);
        if dir.join("release").is_file() {
            progress(BuildEvent::Detail(format!("using cached base tree {key}")));
            return Ok((dir, key));
        }
        let staging = self
            .bases_dir()
            .join(format!(".tmp-{}-{key}", firebreak_runner::leftovers::tag()));
        let claim = firebreak_runner::leftovers::Claim::create_dir(&staging)
            .map_err(io_err("create", &staging))?;
        let res = (|| {
            let debs = self.root.join("debs");
            std::fs::create_dir_all(&debs).map_err(io_err("create", &debs))?;
            let rootfs = staging.join("rootfs");
            let mut cmd = Command::new(debootstrap);
            cmd.arg("--variant=minbase")
                .arg(format!("--include={}", spec.packages.join(",")))
                .arg(format!("--cache-dir={}", absolute(&debs).display()))
                .arg(&spec.suite)
                .arg(&rootfs)
                .arg(mirror);
            run_streaming(cmd, progress)?;
            // The tree's kernel, when it has one (a minimal-kernel recipe has none: its kernel
            // is built from source and the `release` marker stays empty).
            let release = match spec.kernel {
                KernelKind::Package => {
                    let (vmlinuz, release) = find_kernel(&rootfs)?;
                    let kernel = staging.join("vmlinuz");
                    std::fs::copy(&vmlinuz, &kernel).map_err(io_err("copy", &vmlinuz))?;
                    release
                }
                KernelKind::Minimal => String::new(),
            };
            tidy_rootfs(&rootfs)?;
            std::fs::write(staging.join("release"), &release).map_err(io_err("write", &staging))?;
            Ok(())
        })();
        if let Err(e) = res {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
        claim.disown();
        if std::fs::rename(&staging, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&staging);
            if !dir.join("release").is_file() {
                return Err(ImageError::NoImage(dir));
            }
        }
        Ok((dir, key))
    }

    #[allow(clippy::too_many_arguments)]
    fn build_in(
        &self,
        spec: &ImageSpec,
        mirror: &str,
        hash: &str,
        kernel_key: Option<String>,
        agent_sha: &str,
        staging: &Path,
        debootstrap: &Path,
        mkfs: &Path,
        busybox: &Path,
        t0: Instant,
        progress: &mut dyn FnMut(BuildEvent),
    ) -> Result<Manifest, ImageError> {
        const TOTAL: u32 = 4;
        progress(BuildEvent::Step {
            index: 1,
            total: TOTAL,
            what: format!(
                "debootstrap {} from {mirror} (cached per package list)",
                spec.suite
            ),
        });
        let (base, base_key) = self.ensure_base(spec, mirror, debootstrap, progress)?;
        let rootfs = base.join("rootfs");
        let release_path = base.join("release");
        let release =
            std::fs::read_to_string(&release_path).map_err(io_err("read", &release_path))?;
        let mut release = release.trim().to_string();

        let bzimage = staging.join("bzImage");
        match spec.kernel {
            KernelKind::Package => {
                progress(BuildEvent::Step {
                    index: 2,
                    total: TOTAL,
                    what: format!("kernel {release}: bzImage and vmlinux"),
                });
                std::fs::copy(base.join("vmlinuz"), &bzimage).map_err(io_err("copy", &bzimage))?;
                extract_vmlinux(&bzimage, &staging.join("vmlinux"))?;
            }
            KernelKind::Minimal => {
                progress(BuildEvent::Step {
                    index: 2,
                    total: TOTAL,
                    what: format!(
                        "minimal kernel from {} (compiled once, then cached)",
                        crate::kernel::SOURCE_PACKAGE
                    ),
                });
                // The key this image's hash was computed with: the kernel it records is the
                // one it boots, even if the source package changes meanwhile.
                let key = kernel_key
                    .as_deref()
                    .ok_or_else(|| ImageError::NoKernel(self.kernels_dir()))?;
                let built = crate::kernel::ensure(&self.kernels_dir(), key, progress)?;
                std::fs::copy(built.bzimage(), &bzimage).map_err(io_err("copy", &bzimage))?;
                let vmlinux = staging.join("vmlinux");
                std::fs::copy(built.vmlinux(), &vmlinux).map_err(io_err("copy", &vmlinux))?;
                release = built.release;
            }
        }

        progress(BuildEvent::Step {
            index: 3,
            total: TOTAL,
            what: "initramfs with the virtio modules".into(),
        });
        let moddir = rootfs.join("lib/modules").join(&release);
        let mut groups: Vec<(String, Vec<(String, String)>)> = Vec::new();
        let core = INITRAMFS_MODULES.first().map(|(_, m)| *m).unwrap_or(&[]);
        for (group, wanted) in INITRAMFS_MODULES {
            // The minimal kernel has every driver built in: each group's list stays empty.
            if spec.kernel == KernelKind::Minimal {
                groups.push((group.to_string(), Vec::new()));
                continue;
            }
            let mut all: Vec<&str> = core.to_vec();
            all.extend_from_slice(wanted);
            let mut mods = resolve_modules(&moddir, &all)?;
            if *group != "core" {
                let base = resolve_modules(&moddir, core)?;
                mods.retain(|m| !base.contains(m));
            }
            groups.push((group.to_string(), mods));
        }
        write_initramfs(
            &staging.join("initramfs.cpio.gz"),
            busybox,
            &moddir,
            &groups,
        )?;
        let modules: Vec<(String, String)> = groups.into_iter().flat_map(|(_, m)| m).collect();

        progress(BuildEvent::Step {
            index: 4,
            total: TOTAL,
            what: "rootfs.ext4 with the agent".into(),
        });
        let image = staging.join("rootfs.ext4");
        let used = tree_bytes(&rootfs);
        let size_mib = (used + used / 5) / (1 << 20) + 64 + spec.free_space_mib;
        // The agent goes into the shared tree only for the time of mkfs.
        let agent_dest = install_agent(&rootfs, &spec.agent_binary)?;
        let mut cmd = Command::new(mkfs);
        cmd.args([
            "-q",
            "-F",
            "-L",
            "fbroot",
            "-O",
            "^has_journal",
            "-m",
            "0",
            "-i",
            "8192",
            "-d",
        ])
        .arg(&rootfs)
        .arg(&image)
        .arg(format!("{size_mib}M"));
        let res = run_streaming(cmd, progress);
        for p in &agent_dest {
            let _ = std::fs::remove_file(p);
        }
        res?;
        let rootfs_bytes = std::fs::metadata(&image).map(|m| m.len()).unwrap_or(0);

        Ok(Manifest {
            hash: hash.to_string(),
            builder_version: BUILDER_VERSION,
            created_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            suite: spec.suite.clone(),
            mirror: mirror.to_string(),
            packages: spec.packages.clone(),
            base: base_key,
            kernel_release: release,
            kernel: spec.kernel,
            kernel_build: kernel_key,
            agent_sha256: agent_sha.to_string(),
            modules: modules.iter().map(|(n, _)| n.clone()).collect(),
            rootfs_bytes,
            build_seconds: t0.elapsed().as_secs_f64(),
        })
    }
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

fn base_hash(spec: &ImageSpec, mirror: &str) -> String {
    let mut pkgs: Vec<&String> = spec.packages.iter().collect();
    pkgs.sort();
    let recipe = serde_json::json!({ "builder": BUILDER_VERSION, "suite": spec.suite, "mirror": mirror, "packages": pkgs });
    let mut h = Sha256::new();
    h.update(recipe.to_string().as_bytes());
    hex(&h.finalize())[..20].to_string()
}

/// The cache key of the kernel an image of `spec` boots, when it is built rather than taken
/// from a package.
fn kernel_build_key(spec: &ImageSpec) -> Result<Option<String>, ImageError> {
    match spec.kernel {
        KernelKind::Package => Ok(None),
        KernelKind::Minimal => {
            crate::kernel::kernel_key(Path::new(crate::kernel::SOURCE_TARBALL)).map(Some)
        }
    }
}

fn recipe_hash(spec: &ImageSpec, mirror: &str, agent_sha: &str, kernel: Option<&str>) -> String {
    let mut pkgs: Vec<&String> = spec.packages.iter().collect();
    pkgs.sort();
    let recipe = serde_json::json!({
        "builder": BUILDER_VERSION,
        "suite": spec.suite,
        "mirror": mirror,
        "packages": pkgs,
        "agent": agent_sha,
        "free_mib": spec.free_space_mib,
        "init": INIT_SCRIPT,
        // The initramfs's zero padding (see `initramfs_padding`).
        "initramfs_length": "4 KiB + 1",
        "modules": INITRAMFS_MODULES.iter().map(|(g, m)| format!("{g}={}", m.join(","))).collect::<Vec<_>>(),
    });
    let mut recipe = recipe;
    if let Some(key) = kernel {
        // Only for built kernels: images of Debian's kernel keep the hashes they had.
        recipe["kernel"] = serde_json::Value::String(key.to_string());
    }
    let mut h = Sha256::new();
    h.update(recipe.to_string().as_bytes());
    hex(&h.finalize())[..20].to_string()
}

fn check_agent(path: &Path) -> Result<(), ImageError> {
    let bad = |reason: &str| ImageError::BadAgent {
        path: path.to_path_buf(),
        reason: reason.into(),
    };
    if !path.is_file() {
        return Err(bad("not found"));
    }
    match is_static_elf(path) {
        Some(true) => Ok(()),
        Some(false) => Err(bad(
            "dynamically linked (the guest has no matching libc at init time)",
        )),
        None => Err(bad("not an x86-64 ELF executable")),
    }
}

fn load_image(dir: &Path) -> Option<Image> {
    let text = std::fs::read_to_string(dir.join("manifest.json")).ok()?;
    let manifest: Manifest = serde_json::from_str(&text).ok()?;
    let img = Image {
        dir: dir.to_path_buf(),
        manifest,
    };
    [img.kernel(), img.initramfs(), img.rootfs()]
        .iter()
        .all(|p| p.is_file())
        .then_some(img)
}

fn write_manifest(dir: &Path, m: &Manifest) -> Result<(), ImageError> {
    let path = dir.join("manifest.json");
    let text = serde_json::to_string_pretty(m).map_err(|e| ImageError::Io {
        op: "encode",
        path: path.clone(),
        source: std::io::Error::other(e),
    })?;
    std::fs::write(&path, text).map_err(io_err("write", &path))
}

/// Runs `cmd`, reporting its output lines as details; fails with the tail of
/// the output.
pub(crate) fn run_streaming(
    mut cmd: Command,
    progress: &mut dyn FnMut(BuildEvent),
) -> Result<(), ImageError> {
    let command = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_err("run", command.clone()))?;
    // stderr is read in a thread; stdout here.
    let stderr = child.stderr.take();
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut e) = stderr {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    let mut tail: Vec<String> = Vec::new();
    if let Some(out) = child.stdout.take() {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            progress(BuildEvent::Detail(line.clone()));
            tail.push(line);
            if tail.len() > 20 {
                tail.remove(0);
            }
        }
    }
    let status = child.wait().map_err(io_err("wait for", command.clone()))?;
    let err_text = err_thread.join().unwrap_or_default();
    if status.success() {
        return Ok(());
    }
    let mut output = tail.join("\n");
    let err_tail: Vec<&str> = err_text.lines().rev().take(20).collect();
    for l in err_tail.into_iter().rev() {
        output.push('\n');
        output.push_str(l);
    }
    Err(ImageError::CommandFailed {
        command,
        status: status.to_string(),
        output,
    })
}

fn find_kernel(rootfs: &Path) -> Result<(PathBuf, String), ImageError> {
    let boot = rootfs.join("boot");
    let rd = std::fs::read_dir(&boot).map_err(|_| ImageError::NoKernel(boot.clone()))?;
    let mut kernels: Vec<(String, PathBuf)> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let rel = name.strip_prefix("vmlinuz-")?.to_string();
            Some((rel, e.path()))
        })
        .collect();
    kernels.sort();
    let (rel, path) = kernels.pop().ok_or(ImageError::NoKernel(boot))?;
    Ok((path, rel))
}

/// Finds the compressed payload in a bzImage and decompresses it to an ELF
/// `vmlinux` (what the kernel's `extract-vmlinux` script does).
pub fn extract_vmlinux(bzimage: &Path, out: &Path) -> Result<(), ImageError> {
    let data = std::fs::read(bzimage).map_err(io_err("read", bzimage))?;
    let formats: [(&[u8], &Tool, &[&str]); 4] = [
        (&[0x02, 0x21, 0x4c, 0x18], &tools::LZ4, &["-dc"]),
        (&[0x28, 0xb5, 0x2f, 0xfd], &tools::ZSTD, &["-dcq"]),
        (&[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00], &tools::XZ, &["-dcq"]),
        (&[0x1f, 0x8b, 0x08], &tools::GZIP, &["-dcq"]),
    ];
    for (magic, t, args) in formats {
        let Some(off) = data.windows(magic.len()).position(|w| w == magic) else {
            continue;
        };
        let Some(prog) = tools::find(t.name) else {
            continue;
        };
        let mut child = match Command::new(prog)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(_) => continue,
        };
        let payload = data[off..].to_vec();
        let stdin = child.stdin.take();
        let feeder = std::thread::spawn(move || {
            if let Some(mut s) = stdin {
                let _ = s.write_all(&payload);
            }
        });
        let mut elf = Vec::new();
        if let Some(mut o) = child.stdout.take() {
            let _ = o.read_to_end(&mut elf);
        }
        let _ = child.wait();
        let _ = feeder.join();
        // Trailing bytes after the payload make the tools complain; what
        // matters is whether an ELF came out.
        if elf.len() > 1 << 20 && elf.starts_with(b"\x7fELF") {
            return std::fs::write(out, &elf).map_err(io_err("write", out));
        }
    }
    if tools::find(tools::LZ4.name).is_none() {
        return Err(ImageError::MissingTool {
            tool: tools::LZ4.name,
            package: tools::LZ4.package,
        });
    }
    Err(ImageError::NoVmlinux(bzimage.to_path_buf()))
}

fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// Reads `modules.dep` in `moddir` and returns `(name, relative path)` of
/// `wanted` and their dependencies, dependencies first. Wanted modules not in
/// `modules.dep` must be built in (`modules.builtin`), else it is an error.
pub fn resolve_modules(
    moddir: &Path,
    wanted: &[&str],
) -> Result<Vec<(String, String)>, ImageError> {
    let dep_path = moddir.join("modules.dep");
    let text = std::fs::read_to_string(&dep_path).map_err(io_err("read", &dep_path))?;
    let builtin = std::fs::read_to_string(moddir.join("modules.builtin")).unwrap_or_default();
    let builtin: BTreeSet<String> = builtin.lines().map(module_name).collect();
    let mut deps: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for line in text.lines() {
        let Some((m, rest)) = line.split_once(':') else {
            continue;
        };
        let d = rest.split_whitespace().map(module_name).collect();
        deps.insert(module_name(m), (m.trim().to_string(), d));
    }
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    fn visit(
        name: &str,
        deps: &BTreeMap<String, (String, Vec<String>)>,
        seen: &mut BTreeSet<String>,
        order: &mut Vec<(String, String)>,
    ) {
        if !seen.insert(name.to_string()) {
            return;
        }
        if let Some((path, ds)) = deps.get(name) {
            for d in ds {
                visit(d, deps, seen, order);
            }
            order.push((name.to_string(), path.clone()));
        }
    }
    for w in wanted {
        let w = w.replace('-', "_");
        if !deps.contains_key(&w) && !builtin.contains(&w) {
            return Err(ImageError::MissingModule(w));
        }
        visit(&w, &deps, &mut seen, &mut order);
    }
    Ok(order)
}

/// A minimal `newc` cpio writer.
struct Cpio<W: Write> {
    w: W,
    ino: u32,
    off: usize,
}

impl<W: Write> Cpio<W> {
    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        data: &[u8],
        rdev: (u32, u32),
    ) -> std::io::Result<()> {
        self.ino += 1;
        let namesize = name.len() + 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            namesize,
            0
        );
        self.put(header.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        self.put(data)?;
        self.pad()
    }
    fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.off += b.len();
        self.w.write_all(b)
    }
    fn pad(&mut self) -> std::io::Result<()> {
        let n = (4 - self.off % 4) % 4;
        self.put(&[0u8; 3][..n])
    }
}

fn module_bytes(path: &Path) -> Result<Vec<u8>, ImageError> {
    let name = path.to_string_lossy();
    let decompress = |t: &Tool| -> Result<Vec<u8>, ImageError> {
        let prog = tool(t)?;
        let out = Command::new(prog)
            .arg("-dc")
            .arg(path)
            .output()
            .map_err(io_err("decompress", path))?;
        if !out.status.success() {
            return Err(ImageError::CommandFailed {
                command: format!("{} -dc {}", t.name, path.display()),
                status: out.status.to_string(),
                output: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(out.stdout)
    };
    if name.ends_with(".xz") {
        decompress(&tools::XZ)
    } else if name.ends_with(".zst") {
        decompress(&tools::ZSTD)
    } else if name.ends_with(".gz") {
        decompress(&tools::GZIP)
    } else {
        std::fs::read(path).map_err(io_err("read", path))
    }
}

/// Writes the gzip-compressed initramfs: `/init`, static busybox, the
/// modules (flat, uncompressed) and one `/modules.<group>` load-order list
/// per group.
pub fn write_initramfs(
    out: &Path,
    busybox: &Path,
    moddir: &Path,
    groups: &[(String, Vec<(String, String)>)],
) -> Result<(), ImageError> {
    let file = std::fs::File::create(out).map_err(io_err("create", out))?;
    let gz = flate2::write::GzEncoder::new(
        std::io::BufWriter::new(file),
        flate2::Compression::default(),
    );
    let mut c = Cpio {
        w: gz,
        ino: 0,
        off: 0,
    };
    let bb = std::fs::read(busybox).map_err(io_err("read", busybox))?;
    let res: std::io::Result<()> = (|| {
        for d in ["bin", "dev", "lib", "lib/modules", "proc", "sys", "newroot"] {
            c.entry(d, 0o040755, b"", (0, 0))?;
        }
        c.entry("dev/console", 0o020600, b"", (5, 1))?;
        c.entry("dev/null", 0o020666, b"", (1, 3))?;
        c.entry("bin/busybox", 0o100755, &bb, (0, 0))?;
        c.entry("bin/sh", 0o120777, b"busybox", (0, 0))?;
        for applet in INIT_APPLETS {
            c.entry(&format!("bin/{applet}"), 0o120777, b"busybox", (0, 0))?;
        }
        c.entry("init", 0o100755, INIT_SCRIPT.as_bytes(), (0, 0))?;
        Ok(())
    })();
    res.map_err(io_err("write", out))?;
    let mut written = BTreeSet::new();
    for (group, modules) in groups {
        let mut list = String::new();
        for (name, rel) in modules {
            let file = format!("{name}.ko");
            if written.insert(file.clone()) {
                let data = module_bytes(&moddir.join(rel))?;
                c.entry(&format!("lib/modules/{file}"), 0o100644, &data, (0, 0))
                    .map_err(io_err("write", out))?;
            }
            list.push_str(&file);
            list.push('\n');
        }
        c.entry(
            &format!("modules.{group}"),
            0o100644,
            list.as_bytes(),
            (0, 0),
        )
        .map_err(io_err("write", out))?;
    }
    c.entry("TRAILER!!!", 0, b"", (0, 0))
        .map_err(io_err("write", out))?;
    let gz = c.w;
    let w = gz.finish().map_err(io_err("compress", out))?;
    let mut file = w
        .into_inner()
        .map_err(|e| io_err("write", out)(e.into_error()))?;
    let len = file.metadata().map_err(io_err("stat", out))?.len();
    file.write_all(&vec![0; initramfs_padding(len)])
        .map_err(io_err("write", out))
}

/// Zero bytes to append to an initramfs of `len` bytes so that its length is one more than a
/// multiple of 4 KiB.
///
/// QEMU loads the initramfs of a PVH-booted kernel (`-kernel vmlinux` on `microvm`) at the
/// top of the guest's low memory, rounded down to a page, and the firmware puts the ACPI
/// tables in the last kilobyte or so of that same memory: only the rounding keeps them apart.
/// With QEMU 10 an initramfs whose length left 991 bytes above it overwrote the DSDT of a
/// guest with four virtio devices (a network device on top of disk, serial and entropy), and
/// the kernel hung parsing it. This length leaves 4,095 bytes, the most the rounding can.
/// The kernel skips zero bytes after the compressed archive.
fn initramfs_padding(len: u64) -> usize {
    const PAGE: u64 = 4096;
    ((PAGE + 1 - len % PAGE) % PAGE) as usize
}

/// Copies the agent to `/usr/sbin` (and `/sbin` without merged /usr);
/// returns where it went.
fn install_agent(rootfs: &Path, agent: &Path) -> Result<Vec<PathBuf>, ImageError> {
    use std::os::unix::fs::PermissionsExt;
    let mut dests = vec![rootfs.join("usr/sbin/firebreak-agent")];
    let legacy = rootfs.join("sbin");
    if legacy.is_dir() && !legacy.is_symlink() {
        dests.push(legacy.join("firebreak-agent"));
    }
    for dest in &dests {
        std::fs::copy(agent, dest).map_err(io_err("copy agent to", dest))?;
        std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o755))
            .map_err(io_err("chmod", dest))?;
    }
    Ok(dests)
}

/// Guest configuration and shrinking, done once per base tree.
fn tidy_rootfs(rootfs: &Path) -> Result<(), ImageError> {
    let files: [(&str, &str); 3] = [
        ("etc/hostname", "firebreak\n"),
        (
            "etc/hosts",
            "127.0.0.1 localhost\n127.0.1.1 firebreak\n::1 localhost\n",
        ),
        ("etc/resolv.conf", "nameserver 10.0.2.3\n"),
    ];
    for (p, text) in files {
        let path = rootfs.join(p);
        let _ = std::fs::remove_file(&path);
        std::fs::write(&path, text).map_err(io_err("write", &path))?;
    }
    let home = rootfs.join("home/runner");
    std::fs::create_dir_all(&home).map_err(io_err("create", &home))?;
    // The kernel lives outside the rootfs; package caches are not needed.
    for dir in ["boot", "var/cache/apt/archives", "var/lib/apt/lists"] {
        if let Ok(rd) = std::fs::read_dir(rootfs.join(dir)) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_file() || p.is_symlink() {
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
    }
    Ok(())
}

/// Bytes used by a tree, counted in 4 KiB blocks per file.
/// What the tree under `root` needs in an ext4 file system: each entry's length rounded up
/// to 4 KiB blocks, plus an inode (for sizing the root filesystem).
fn tree_bytes(root: &Path) -> u64 {
    walk_sum(root, |m| m.len().div_ceil(4096) * 4096 + 256)
}

/// Bytes on disk under `root` (allocated blocks, as `du` counts them: a sparse snapshot RAM
/// file counts what it holds, not its length).
fn du_bytes(root: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    walk_sum(root, |m| m.blocks() * 512)
}

/// The sum of `size` over every entry below `root`, symbolic links not followed.
fn walk_sum(root: &Path, size: impl Fn(&std::fs::Metadata) -> u64) -> u64 {
    let mut total = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            total += size(&m);
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_initramfs_leaves_the_most_room_for_acpi_tables_above_it() {
        for len in [0u64, 1, 2, 4095, 4096, 4097, 1_256_481] {
            assert_eq!((len + initramfs_padding(len) as u64) % 4096, 1, "{len}");
            assert!(initramfs_padding(len) < 4096);
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let busybox = dir.path().join("busybox");
        std::fs::write(&busybox, b"not really busybox").expect("write");
        let out = dir.path().join("initramfs.cpio.gz");
        write_initramfs(&out, &busybox, dir.path(), &[]).expect("initramfs");
        let bytes = std::fs::read(&out).expect("read");
        assert_eq!(bytes.len() % 4096, 1);
        // The archive still reads whole: the padding follows the compressed stream.
        let mut cpio = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut cpio)
            .expect("gunzip");
        let text = String::from_utf8_lossy(&cpio);
        assert!(text.contains("not really busybox"));
        assert!(text.trim_end_matches('\0').ends_with("TRAILER!!!"));
    }

    #[test]
    fn mirror_is_read_from_deb822_and_one_line_sources() {
        let deb822 = "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n\
                      Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n";
        assert_eq!(
            mirror_from_sources(deb822, "bookworm").as_deref(),
            Some("http://deb.debian.org/debian")
        );
        let one =
            "# c\ndeb [arch=amd64 signed-by=/x] http://ftp.fr.debian.org/debian/ bookworm main\n";
        assert_eq!(
            mirror_from_sources(one, "bookworm").as_deref(),
            Some("http://ftp.fr.debian.org/debian")
        );
        assert_eq!(
            mirror_from_sources(
                "deb https://packages.cloud.google.com/apt cloud-sdk main",
                "bookworm"
            ),
            None
        );
    }

    #[test]
    fn modules_resolve_dependencies_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("modules.dep"),
            "kernel/drivers/virtio/virtio_ring.ko:\nkernel/drivers/virtio/virtio.ko:\n\
             kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko\n\
             kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n",
        )
        .expect("write");
        std::fs::write(
            dir.path().join("modules.builtin"),
            "kernel/fs/ext4/ext4.ko\n",
        )
        .expect("write");
        let got =
            resolve_modules(dir.path(), &["virtio_blk", "virtio-mmio", "ext4"]).expect("resolve");
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["virtio_ring", "virtio", "virtio_blk", "virtio_mmio"]
        );
        assert!(matches!(
            resolve_modules(dir.path(), &["nope"]),
            Err(ImageError::MissingModule(_))
        ));
    }

    #[test]
    fn cpio_entries_are_aligned() {
        let mut c = Cpio {
            w: Vec::new(),
            ino: 0,
            off: 0,
        };
        c.entry("init", 0o100755, b"abcde", (0, 0)).expect("entry");
        c.entry("TRAILER!!!", 0, b"", (0, 0)).expect("entry");
        assert_eq!(c.w.len() % 4, 0);
        assert!(c.w.starts_with(b"070701"));
        // header 110 + "init\0" = 115 → pad to 116; data 5 → pad to 124.
        assert_eq!(&c.w[124..130], b"070701");
    }

    #[test]
    fn static_elf_detection() {
        if let Some(tool) = tools::find("busybox") {
            assert!(is_static_elf(&tool).is_some());
        }
        assert_eq!(is_static_elf(Path::new("/etc/hostname")), None);
        if Path::new("/bin/sh").exists() {
            assert_eq!(is_static_elf(Path::new("/bin/sh")), Some(false));
        }
    }

    #[test]
    fn recipe_hash_changes_with_inputs() {
        let a = ImageSpec::new("/x");
        let mut b = a.clone();
        b.packages.push("make".into());
        assert_ne!(
            recipe_hash(&a, "m", "h", None),
            recipe_hash(&b, "m", "h", None)
        );
        assert_ne!(
            recipe_hash(&a, "m", "h", None),
            recipe_hash(&a, "m", "h2", None)
        );
        assert_eq!(
            recipe_hash(&a, "m", "h", None),
            recipe_hash(&a.clone(), "m", "h", None)
        );
    }

    #[test]
    fn a_minimal_kernel_recipe_drops_the_kernel_package_and_hashes_apart() {
        let a = ImageSpec::new("/x");
        assert!(a.packages.iter().any(|p| p == "linux-image-cloud-amd64"));
        let m = a.clone().with_kernel(KernelKind::Minimal);
        assert!(!m.packages.iter().any(|p| p.starts_with("linux-image-")));
        assert_ne!(base_hash(&a, "m"), base_hash(&m, "m"));
        assert_ne!(
            recipe_hash(&m, "m", "h", Some("k1")),
            recipe_hash(&m, "m", "h", Some("k2"))
        );
        assert!(KernelKind::Package.has_acpi() && !KernelKind::Minimal.has_acpi());
        // Manifests written before the field existed read as Debian's package.
        let old = r#"{"hash":"h","builder_version":2,"created_unix":0,"suite":"bookworm","mirror":"m","packages":[],"base":"b","kernel_release":"6.1.0-50-cloud-amd64","agent_sha256":"a","modules":[],"rootfs_bytes":0,"build_seconds":0.0}"#;
        let m: Manifest = serde_json::from_str(old).expect("old manifest");
        assert_eq!(m.kernel, KernelKind::Package);
        assert_eq!(m.kernel_build, None);
    }

    #[test]
    fn missing_agent_names_the_build_command() {
        let store = ImageStore::new(tempfile::tempdir().expect("tempdir").path());
        let err = store
            .build(&ImageSpec::new("/no/agent"), &mut |_| {})
            .expect_err("no agent");
        assert!(err.to_string().contains("crt-static"), "{err}");
        assert!(store.list().expect("list").is_empty());
    }
}
