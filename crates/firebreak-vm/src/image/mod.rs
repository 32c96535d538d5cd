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
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::tools::{self, Tool};

mod hold;
mod initramfs;
mod mirror;
mod rootfs;
mod sudo;

pub use hold::{ImageChoice, ImageHold};

pub use rootfs::extract_vmlinux;

use initramfs::{resolve_modules, write_initramfs, INITRAMFS_MODULES, INIT_SCRIPT};
use mirror::host_mirror;
pub(crate) use rootfs::du_bytes;
use rootfs::{find_kernel, install_agent, tidy_rootfs, tree_bytes};
pub use sudo::{keep_cache_the_sudo_users, SudoUser};

/// Bumped whenever the build steps change what ends up in an image.
pub const BUILDER_VERSION: u32 = 2;

/// The file in the images folder naming the image runs boot by default (see
/// [`ImageStore::latest`]).
const DEFAULT_MARK: &str = ".default";

/// The lock file (in the cache folder) builds share and a prune of base trees and kernels
/// takes alone ([`ImageStore::prune`]).
const PARTS_LOCK: &str = ".parts-lock";

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
    /// The protocol version its agent speaks (`firebreak-agent --version`); `None` in images
    /// built before it was recorded. An image whose agent speaks another version than this
    /// firebreak cannot run jobs ([`Manifest::usable`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_protocol: Option<u32>,
    /// Modules the initramfs loads, in order.
    pub modules: Vec<String>,
    /// Size of `rootfs.ext4` (apparent) in bytes.
    pub rootfs_bytes: u64,
    /// How long the build took.
    pub build_seconds: f64,
}

impl Manifest {
    /// Whether this firebreak can run jobs in the image: its agent speaks this firebreak's
    /// protocol (or did not record which: images built before that was recorded, which fail
    /// at their first boot if it differs).
    pub fn usable(&self) -> bool {
        self.agent_protocol
            .is_none_or(|p| p == firebreak_agent::PROTOCOL_VERSION)
    }

    /// The packages it has beyond the standard recipe's ([`DEFAULT_PACKAGES`]), sorted: a
    /// larger flavour's (`build-essential`); empty for the standard one.
    pub fn extra_packages(&self) -> Vec<String> {
        let mut extra: Vec<String> = self
            .packages
            .iter()
            .filter(|p| !DEFAULT_PACKAGES.contains(&p.as_str()) && !p.starts_with("linux-image-"))
            .cloned()
            .collect();
        extra.sort();
        extra.dedup();
        extra
    }

    /// `standard`, or its extra packages (`+build-essential`).
    pub fn flavour(&self) -> String {
        let extra = self.extra_packages();
        if extra.is_empty() {
            "standard".into()
        } else {
            extra
                .iter()
                .map(|p| format!("+{p}"))
                .collect::<Vec<_>>()
                .join(" ")
        }
    }
}

/// What [`ImageStore::parts_lock`] got.
#[derive(Debug)]
enum PartsLock {
    /// The lock, held while this lives.
    Held(#[allow(dead_code)] std::fs::File),
    /// An image build holds it (asked for without waiting).
    Busy,
    /// The lock file cannot be opened (a cache this user cannot write): nothing to lock.
    Unavailable,
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
    #[error("building an image needs root ({0}): run it with sudo (`sudo firebreak image build …`), which builds into your own cache and gives you the image")]
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
    /// A hash prefix that more than one image's hash starts with.
    #[error("image {prefix} is ambiguous: {} images start with it ({}); give more of the hash", .hashes.len(), .hashes.join(", "))]
    Ambiguous {
        /// The prefix given.
        prefix: String,
        /// The hashes it matches.
        hashes: Vec<String>,
    },
    /// No image matches the hash (prefix) asked for.
    #[error("no image in {dir} has a hash starting with {wanted} (asked for with --image or $FIREBREAK_IMAGE): `firebreak image list` shows the images there")]
    NotFound {
        /// The hash prefix asked for.
        wanted: String,
        /// The images' folder.
        dir: PathBuf,
    },
    /// The image's agent speaks another protocol than this firebreak.
    #[error("image {hash} has an agent that speaks protocol {protocol}, this firebreak speaks {}: build a new image with `firebreak image build` (and `firebreak image prune` removes the old ones)", firebreak_agent::PROTOCOL_VERSION)]
    Outdated {
        /// Its hash.
        hash: String,
        /// The protocol its agent speaks.
        protocol: u32,
    },
    /// The image was removed (by `firebreak image prune`) as a run was about to use it.
    #[error("image {0} was removed by a prune: build one with `firebreak image build`")]
    Removed(PathBuf),
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
/// `$XDG_CACHE_HOME/firebreak`, else `~/.cache/firebreak` — the home of the
/// user who ran `sudo` when this is root through sudo, so that
/// `sudo firebreak image build` builds the image that user's runs find.
pub fn default_cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("FIREBREAK_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("firebreak");
    }
    if let Some(user) = SudoUser::of_this_process() {
        return user.home.join(".cache").join("firebreak");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".cache").join("firebreak")
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
    // Every place looked at, with why it would not do: one found but dynamically linked
    // is worth knowing about.
    let mut tried = Vec::new();
    for c in candidates {
        match check_agent(&c) {
            Ok(()) => return Ok(absolute(&c)),
            Err(ImageError::BadAgent { path, reason }) => {
                tried.push(format!("{}: {reason}", path.display()))
            }
            Err(e) => return Err(e),
        }
    }
    Err(ImageError::BadAgent {
        path: PathBuf::from("firebreak-agent"),
        reason: format!("none usable ({})", tried.join("; ")),
    })
}

/// The cache of built images.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
}

/// What [`ImageStore::prune`] removed (or, in a dry run, would remove).
#[derive(Debug, Clone, Default)]
pub struct PruneReport {
    /// Images removed, newest first, with the bytes each took on disk.
    pub images: Vec<(Image, u64)>,
    /// Snapshot directories removed from the images kept.
    pub snapshots: Vec<PathBuf>,
    /// Images kept beyond `keep`: held by a running `firebreak run` (their snapshots too),
    /// or the one [`PruneOptions::selected`] names.
    pub kept: Vec<(Image, KeptWhy)>,
    /// Other directories removed: base trees and kernels no image kept uses, leftovers of
    /// builds whose process is gone.
    pub other: Vec<PathBuf>,
    /// Bytes freed.
    pub freed_bytes: u64,
    /// Base trees and kernels were left alone: an image build was running.
    pub parts_kept_for_build: bool,
}

/// Why [`ImageStore::prune`] kept an image it would otherwise have removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeptWhy {
    /// A run holds it ([`Image::hold`]).
    InUse,
    /// [`PruneOptions::selected`] names it (`$FIREBREAK_IMAGE`), or it is the default one
    /// `firebreak image build` last built or found.
    Selected,
}

/// What [`ImageStore::prune`] removes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneOptions {
    /// The hash of an image to keep whatever its age: the one `run` boots
    /// (`$FIREBREAK_IMAGE`'s).
    pub selected: Option<String>,
    /// How many of the newest images of each kernel kind to keep.
    pub keep: usize,
    /// Also remove the snapshots of the images kept (each is taken again when a VM of its
    /// size is next needed): one accumulates for every VM size and network setting used.
    pub snapshots: bool,
    /// Only report what would be removed.
    pub dry_run: bool,
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

    /// The image with this hash (or unique hash prefix); an error when several match.
    pub fn get(&self, hash: &str) -> Result<Option<Image>, ImageError> {
        let mut hits: Vec<Image> = self
            .list()?
            .into_iter()
            .filter(|i| i.manifest.hash.starts_with(hash))
            .collect();
        match hits.len() {
            0 => Ok(None),
            1 => Ok(hits.pop()),
            _ => Err(ImageError::Ambiguous {
                prefix: hash.to_string(),
                hashes: hits.into_iter().map(|i| i.manifest.hash).collect(),
            }),
        }
    }

    /// The image runs boot unless told otherwise: the one `firebreak image build` last built
    /// or found in the cache (a standard build after a larger flavour's switches back), else
    /// the newest; never one whose agent speaks another protocol ([`Manifest::usable`]).
    pub fn latest(&self) -> Result<Image, ImageError> {
        self.choose(None)
    }

    /// The image `wanted` (a hash or a unique prefix of one) names, else the default one
    /// ([`Self::latest`]). Fails with what to do next: no image at all, none with that hash,
    /// or only images this firebreak cannot run.
    pub fn choose(&self, wanted: Option<&str>) -> Result<Image, ImageError> {
        let outdated = |img: &Image| ImageError::Outdated {
            hash: img.manifest.hash.clone(),
            protocol: img.manifest.agent_protocol.unwrap_or_default(),
        };
        if let Some(h) = wanted {
            let img = self.get(h)?.ok_or_else(|| ImageError::NotFound {
                wanted: h.to_string(),
                dir: self.images_dir(),
            })?;
            return if img.manifest.usable() {
                Ok(img)
            } else {
                Err(outdated(&img))
            };
        }
        let images = self.list()?;
        let marked = self.default_mark();
        let usable = || images.iter().filter(|i| i.manifest.usable());
        match usable()
            .find(|i| Some(&i.manifest.hash) == marked.as_ref())
            .or_else(|| usable().next())
        {
            Some(img) => Ok(img.clone()),
            None => Err(match images.first() {
                Some(img) => outdated(img),
                None => ImageError::NoImage(self.images_dir()),
            }),
        }
    }

    /// The hash `firebreak image build` last built or found (`images/.default`), if any.
    fn default_mark(&self) -> Option<String> {
        std::fs::read_to_string(self.images_dir().join(DEFAULT_MARK))
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
    }

    /// Makes `hash` the image runs boot by default (best effort: a cache this user cannot
    /// write keeps its default).
    fn mark_default(&self, hash: &str) {
        let dir = self.images_dir();
        let tmp = dir.join(format!(
            ".tmp-{}-default",
            firebreak_runner::leftovers::tag()
        ));
        use std::os::unix::fs::PermissionsExt;
        // Readable by all, whatever the umask: under sudo the invoking user's runs read it.
        let written = std::fs::write(&tmp, format!("{hash}\n")).is_ok()
            && std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).is_ok();
        if !written || std::fs::rename(&tmp, dir.join(DEFAULT_MARK)).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }

    /// A lock on the cache's base trees and kernels: shared by every image build while it
    /// runs (it reads its base tree and kernel long after making them), exclusive for a prune
    /// removing those no image uses (which then does not wait: [`PartsLock::Busy`]).
    fn parts_lock(&self, exclusive: bool) -> Result<PartsLock, ImageError> {
        let path = self.root.join(PARTS_LOCK);
        let Ok(Some(file)) = hold::open_lock_file(&path) else {
            return Ok(PartsLock::Unavailable);
        };
        if !exclusive {
            file.lock_shared().map_err(io_err("lock", &path))?;
            return Ok(PartsLock::Held(file));
        }
        Ok(if hold::try_exclusive(&file, &path)? {
            PartsLock::Held(file)
        } else {
            PartsLock::Busy
        })
    }

    /// Removes all but the `keep` newest images of each kernel kind and flavour (so that
    /// keeping one keeps the newest standard image on Debian's kernel, the newest on the
    /// minimal one, and the newest of each larger flavour), images whose agent this firebreak
    /// cannot talk to ([`Manifest::usable`]), the base trees and kernels no remaining image
    /// uses (not while an image build runs), leftovers of builds whose process is gone, and
    /// with `snapshots` the snapshots of the images kept. Never an image a run holds, the one
    /// [`PruneOptions::selected`] names or the default one ([`Self::latest`]). A dry run
    /// removes nothing.
    pub fn prune(&self, opts: PruneOptions) -> Result<PruneReport, ImageError> {
        let mut report = PruneReport::default();
        let remove = |dir: &Path| -> Result<(), ImageError> {
            if opts.dry_run {
                return Ok(());
            }
            std::fs::remove_dir_all(dir).map_err(io_err("remove", dir))
        };
        // Before the images are listed: a build that finishes after the listing still holds
        // its shared lock until its image is in place, so the parts it used are never
        // counted as unused.
        let parts = self.parts_lock(true)?;
        let mut kept_per_kind: BTreeMap<(String, Vec<String>), usize> = BTreeMap::new();
        let mut remaining = Vec::new();
        let marked = self.default_mark();
        for img in self.list()? {
            // Per kernel kind and flavour; images this firebreak cannot run count for none.
            let kept = kept_per_kind
                .entry((
                    format!("{:?}", img.manifest.kernel),
                    img.manifest.extra_packages(),
                ))
                .or_default();
            if *kept < opts.keep && img.manifest.usable() {
                *kept += 1;
                remaining.push(img);
                continue;
            }
            // The image runs boot is kept; an outdated one no run can boot is not.
            if img.manifest.usable()
                && [opts.selected.as_ref(), marked.as_ref()].contains(&Some(&img.manifest.hash))
            {
                report.kept.push((img.clone(), KeptWhy::Selected));
                remaining.push(img);
                continue;
            }
            // Held while it goes, so that no run starts on it meanwhile.
            let hold::Unused::Yes(_lock) = img.lock_unused(!opts.dry_run)? else {
                report.kept.push((img.clone(), KeptWhy::InUse));
                remaining.push(img);
                continue;
            };
            let bytes = img.disk_usage();
            report.freed_bytes += bytes;
            if !opts.dry_run {
                // Out of sight first: a run that looks for the image from now on finds it
                // gone (instead of locking a lock file the removal has yet to reach).
                let aside = self.images_dir().join(format!(
                    ".tmp-{}-prune-{}",
                    firebreak_runner::leftovers::tag(),
                    img.manifest.hash
                ));
                std::fs::rename(&img.dir, &aside).map_err(io_err("move aside", &img.dir))?;
                remove(&aside)?;
            }
            report.images.push((img, bytes));
        }
        if opts.snapshots {
            // Completed snapshots only: `.tmp-…` builds (maybe another run's, going on) and
            // Firecracker's `.drives` are left to the sweeps of abandoned leftovers. Not
            // those of an image a run holds: its pool restores from them.
            let mut unused = Vec::new();
            for img in &remaining {
                match img.lock_unused(!opts.dry_run)? {
                    hold::Unused::Yes(lock) => unused.push((img, lock)),
                    hold::Unused::InUse => {
                        if !report.kept.iter().any(|(k, _)| k.dir == img.dir) {
                            report.kept.push((img.clone(), KeptWhy::InUse));
                        }
                    }
                }
            }
            for dir in unused
                .iter()
                .flat_map(|(i, _)| [i.dir.join("snapshots"), i.dir.join("firecracker-snapshots")])
            {
                let Ok(rd) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for e in rd.flatten().filter(|e| {
                    e.path().is_dir() && !e.file_name().to_string_lossy().starts_with('.')
                }) {
                    report.freed_bytes += du_bytes(&e.path());
                    remove(&e.path())?;
                    report.snapshots.push(e.path());
                }
            }
        }
        // Base trees and kernels no remaining image uses, unless a build (which may be about
        // to use one no image uses yet) is running.
        report.parts_kept_for_build = matches!(parts, PartsLock::Busy);
        let used_bases: BTreeSet<String> =
            remaining.iter().map(|i| i.manifest.base.clone()).collect();
        let used_kernels: BTreeSet<String> = remaining
            .iter()
            .filter_map(|i| i.manifest.kernel_build.clone())
            .collect();
        let parts_dirs = if report.parts_kept_for_build {
            Vec::new()
        } else {
            vec![
                (self.bases_dir(), &used_bases),
                (self.kernels_dir(), &used_kernels),
            ]
        };
        for (dir, used) in parts_dirs {
            let Ok(rd) = std::fs::read_dir(dir) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !name.starts_with('.') && !used.contains(&name) {
                    report.freed_bytes += du_bytes(&e.path());
                    remove(&e.path())?;
                    report.other.push(e.path());
                }
            }
        }
        for e in [self.images_dir(), self.bases_dir(), self.kernels_dir()]
            .iter()
            .filter_map(|d| std::fs::read_dir(d).ok())
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(".tmp-") else {
                continue;
            };
            if firebreak_runner::leftovers::abandoned(&e.path(), rest) {
                report.freed_bytes += du_bytes(&e.path());
                if !opts.dry_run {
                    let _ = std::fs::remove_dir_all(e.path());
                }
                report.other.push(e.path());
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
        if let Some(p) = agent_protocol(&spec.agent_binary) {
            if p != firebreak_agent::PROTOCOL_VERSION {
                return Err(ImageError::BadAgent {
                    path: spec.agent_binary.clone(),
                    reason: format!(
                        "it speaks protocol {p}, this firebreak {} (an agent built from another \
                         version of firebreak)",
                        firebreak_agent::PROTOCOL_VERSION
                    ),
                });
            }
        }
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
            self.mark_default(&hash);
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
        // Keeps a prune from removing the base tree or kernel this build makes or finds
        // before it has read them (it holds no image yet that uses them).
        let _parts = self.parts_lock(false)?;
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
                // The runs' lock file, made now so that users who cannot write the cache
                // can still hold the image (a shared lock needs only a read-only open).
                let in_use = staging.join(hold::IN_USE);
                std::fs::write(&in_use, b"").map_err(io_err("create", &in_use))?;
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
                self.give_to_sudo_user(Some(&final_dir));
                self.mark_default(&hash);
                progress(BuildEvent::Done {
                    hash: hash.clone(),
                    cached: false,
                });
                load_image(&final_dir).ok_or(ImageError::NoImage(final_dir))
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                // The folders this build made in the user's home stay theirs, built or not.
                self.give_to_sudo_user(None);
                Err(e)
            }
        }
    }

    /// Under `sudo`, gives a new image to the user who ran it (their runs write snapshots
    /// in it), and the folders above it inside their home that this build made root's
    /// (`images`, the cache, `~/.cache`): their runs make job folders there. The base
    /// trees, packages and kernels stay root's: only a build, as root, uses them.
    fn give_to_sudo_user(&self, image_dir: Option<&Path>) {
        let Some(user) = SudoUser::of_this_process() else {
            return;
        };
        if let Some(image) = image_dir {
            user.give(image, true);
        }
        user.give_folders_up_to_home(&self.images_dir());
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
            agent_protocol: Some(firebreak_agent::PROTOCOL_VERSION),
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

/// The protocol version the agent binary at `path` speaks (`firebreak-agent --version`
/// prints `firebreak-agent 0.1.0 protocol 4`); `None` if it does not say.
fn agent_protocol(path: &Path) -> Option<u32> {
    let out = Command::new(path).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "protocol")
        .nth(1)?
        .parse()
        .ok()
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

#[cfg(test)]
mod tests {

    use super::*;

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

    /// Writes an image with manifest `m` (its files hold one byte each) into `store`.
    fn fake_image(store: &ImageStore, m: serde_json::Value) -> PathBuf {
        let img = Image {
            dir: store.images_dir().join(m["hash"].as_str().expect("a hash")),
            manifest: serde_json::from_value(m.clone()).expect("a manifest"),
        };
        std::fs::create_dir_all(&img.dir).expect("mkdir");
        std::fs::write(img.dir.join("manifest.json"), m.to_string()).expect("manifest");
        for f in [img.kernel(), img.initramfs(), img.rootfs()] {
            std::fs::write(f, b"x").expect("write");
        }
        img.dir
    }

    #[test]
    fn flavours_outdated_agents_and_the_default_image() {
        let d = tempfile::tempdir().expect("tempdir");
        let store = ImageStore::new(d.path());
        assert!(matches!(store.latest(), Err(ImageError::NoImage(_))));
        let current = firebreak_agent::PROTOCOL_VERSION;
        // (hash, created, extra packages, agent protocol)
        let images: [(&str, u64, &[&str], Option<u32>); 4] = [
            ("stale", 40, &[], Some(current - 1)),
            ("large", 30, &["build-essential"], Some(current)),
            ("std", 20, &[], Some(current)),
            ("older", 10, &[], None),
        ];
        for (hash, created, extra, protocol) in images {
            let mut packages: Vec<&str> = DEFAULT_PACKAGES.to_vec();
            packages.extend(extra);
            fake_image(
                &store,
                serde_json::json!({"hash": hash, "builder_version": 2, "created_unix": created,
                    "suite": "bookworm", "mirror": "m", "packages": packages, "base": hash,
                    "kernel_release": "r", "agent_sha256": "a", "agent_protocol": protocol,
                    "modules": [], "rootfs_bytes": 0, "build_seconds": 0.0}),
            );
        }
        let hash = |r: Result<Image, ImageError>| r.map(|i| i.manifest.hash);
        let get = |h: &str| store.get(h).expect("get").expect("image").manifest;
        assert_eq!(get("large").flavour(), "+build-essential");
        assert_eq!(get("std").flavour(), "standard");
        assert!(!get("stale").usable() && get("older").usable());
        // The newest image a run can use, not the newest one.
        assert_eq!(hash(store.latest()).expect("default"), "large");
        // `image build` of the standard recipe switches back to it.
        store.mark_default("std");
        assert_eq!(hash(store.latest()).expect("default"), "std");
        // Asked for by hash: found, unknown, or outdated — each saying what to do.
        assert_eq!(hash(store.choose(Some("lar"))).expect("by prefix"), "large");
        let missing = store.choose(Some("zzzz")).expect_err("no such image");
        assert!(
            missing.to_string().contains("`firebreak image list`"),
            "{missing}"
        );
        let stale = store.choose(Some("stale")).expect_err("an outdated agent");
        assert!(
            stale
                .to_string()
                .contains(&format!("protocol {}", current - 1))
                && stale.to_string().contains("firebreak image build"),
            "{stale}"
        );
        // Prune keeps the newest of each flavour, drops the outdated one, and never the
        // default; base trees stay while a build holds them.
        for h in ["stale", "large", "std", "older"] {
            std::fs::create_dir_all(d.path().join("bases").join(h)).expect("base");
        }
        std::fs::create_dir_all(d.path().join("bases/being-built")).expect("base");
        let building = store.parts_lock(false).expect("a build's lock");
        // An outdated default goes all the same: no run can boot it.
        store.mark_default("stale");
        let opts = PruneOptions {
            keep: 1,
            snapshots: false,
            dry_run: false,
            selected: Some("older".into()),
        };
        let r = store.prune(opts.clone()).expect("prune");
        let gone: Vec<&str> = r
            .images
            .iter()
            .map(|(i, _)| i.manifest.hash.as_str())
            .collect();
        assert_eq!(gone, ["stale"]);
        assert_eq!(
            r.kept
                .iter()
                .map(|(i, w)| (i.manifest.hash.as_str(), *w))
                .collect::<Vec<_>>(),
            [("older", KeptWhy::Selected)]
        );
        assert!(r.parts_kept_for_build && r.other.is_empty());
        assert!(d.path().join("bases/being-built").exists());
        drop(building);
        let r = store.prune(opts).expect("prune");
        assert!(!r.parts_kept_for_build);
        assert!(!d.path().join("bases/being-built").exists());
        assert!(!d.path().join("bases/stale").exists() && d.path().join("bases/std").exists());
    }

    #[test]
    fn prune_keeps_the_newest_of_each_kernel_kind_and_lists_what_goes() {
        let d = tempfile::tempdir().expect("tempdir");
        let store = ImageStore::new(d.path());
        // (hash, kernel, created, base, kernel build)
        let images = [
            ("new-min", "minimal", 40, "b-min", Some("k1")),
            ("new-pkg", "package", 30, "b-pkg", None),
            ("old-min", "minimal", 20, "b-min", Some("k0")),
            ("old-pkg", "package", 10, "b-old", None),
        ];
        for (hash, kernel, created, base, kb) in images {
            let m = serde_json::json!({"hash": hash, "builder_version": 2, "created_unix": created,
                "suite": "bookworm", "mirror": "m", "packages": [], "base": base,
                "kernel_release": "r", "kernel": kernel, "kernel_build": kb,
                "agent_sha256": "a", "modules": [], "rootfs_bytes": 0, "build_seconds": 0.0});
            let dir = fake_image(&store, m);
            std::fs::create_dir_all(dir.join("snapshots/1c-256m-nonet-x")).expect("mkdir");
            std::fs::create_dir_all(dir.join("snapshots/.tmp-1-2-building")).expect("mkdir");
            std::fs::create_dir_all(dir.join("firecracker-snapshots/2c-512m-plain-x"))
                .expect("mkdir");
        }
        for dir in [
            "bases/b-min",
            "bases/b-pkg",
            "bases/b-old",
            "kernels/k0",
            "kernels/k1",
        ] {
            std::fs::create_dir_all(d.path().join(dir)).expect("mkdir");
        }
        let names = |r: &PruneReport| {
            let mut v: Vec<String> = r
                .images
                .iter()
                .map(|(i, _)| i.manifest.hash.clone())
                .collect();
            v.extend(
                r.other
                    .iter()
                    .map(|p| p.strip_prefix(d.path()).unwrap_or(p).display().to_string()),
            );
            v
        };
        let opts = PruneOptions {
            keep: 1,
            snapshots: false,
            dry_run: true,
            selected: None,
        };
        let dry = store.prune(opts.clone()).expect("dry run");
        assert_eq!(
            names(&dry),
            ["old-min", "old-pkg", "bases/b-old", "kernels/k0"]
        );
        assert_eq!(
            store.list().expect("list").len(),
            4,
            "a dry run removes nothing"
        );
        // An image a run holds stays, snapshots and all; so does the one selected.
        let get = |h: &str| store.get(h).expect("get").expect("image");
        let held = get("old-min").hold().expect("hold");
        let kept = store
            .prune(PruneOptions {
                selected: Some("old-pkg".into()),
                ..opts.clone()
            })
            .expect("dry run");
        assert!(names(&kept).is_empty(), "{:?}", names(&kept));
        let why: Vec<(&str, KeptWhy)> = kept
            .kept
            .iter()
            .map(|(i, w)| (i.manifest.hash.as_str(), *w))
            .collect();
        assert_eq!(
            why,
            [("old-min", KeptWhy::InUse), ("old-pkg", KeptWhy::Selected)]
        );
        let with_snapshots = store
            .prune(PruneOptions {
                snapshots: true,
                ..opts.clone()
            })
            .expect("dry run");
        assert!(with_snapshots
            .snapshots
            .iter()
            .all(|p| !p.starts_with(d.path().join("images/old-min"))));
        drop(held);
        // A prefix two images share names neither.
        let ambiguous = store.get("old-").expect_err("two images start with old-");
        assert!(
            ambiguous.to_string().contains("old-min, old-pkg"),
            "{ambiguous}"
        );
        let doomed = get("old-pkg");
        let done = store
            .prune(PruneOptions {
                dry_run: false,
                snapshots: true,
                ..opts
            })
            .expect("prune");
        assert_eq!(names(&done), names(&dry));
        assert!(matches!(doomed.hold(), Err(ImageError::Removed(_))));
        let left: Vec<String> = store
            .list()
            .expect("list")
            .iter()
            .map(|i| i.manifest.hash.clone())
            .collect();
        assert_eq!(left, ["new-min", "new-pkg"]);
        assert_eq!(
            done.snapshots.len(),
            4,
            "the kept images' QEMU and Firecracker snapshots"
        );
        assert!(
            d.path()
                .join("images/new-min/snapshots/.tmp-1-2-building")
                .exists(),
            "a snapshot being built is left alone"
        );
        assert!(!d.path().join("bases/b-old").exists() && d.path().join("bases/b-min").exists());
        assert!(!d.path().join("kernels/k0").exists() && d.path().join("kernels/k1").exists());
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
