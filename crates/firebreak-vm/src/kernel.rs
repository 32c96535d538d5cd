//! The minimal guest kernel: Debian's `linux-source-6.1` package built with firebreak's Kconfig
//! fragment (`kernel/firebreak.config`) over `make tinyconfig`.
//!
//! Debian's cloud kernel spends about 2.6 s of a 3.7 s cold boot initialising itself under TCG
//! (drivers, ACPI, tracing, module signature checks). The minimal kernel builds in everything a
//! job's VM needs and nothing else, mounts the root disk itself and starts the agent as `init`
//! (no initramfs) in about a second under TCG. It is opt-in
//! (`firebreak image build --kernel minimal`) because it takes a few minutes of compiling and
//! leaves out what a job might `modprobe` from Debian's kernel.
//!
//! Built kernels are cached in `<cache>/kernels/<key>/` (`bzImage`, `vmlinux`, `release`); the
//! key covers the fragment, this builder's version and the source tarball's identity, so an
//! upgraded `linux-source-6.1` or an edited fragment builds a new kernel and an unchanged one is
//! never rebuilt. Builds happen in `<cache>/kernels/.tmp-<key>-<pid>` and are renamed into place
//! when complete.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::image::{hex, io_err, run_streaming, tool, BuildEvent, ImageError};
use crate::tools::{self, Tool};

/// The Debian package with the kernel source.
pub const SOURCE_PACKAGE: &str = "linux-source-6.1";
/// Where that package puts the source.
pub const SOURCE_TARBALL: &str = "/usr/src/linux-source-6.1.tar.xz";
/// The Kconfig fragment merged over `tinyconfig`.
pub const CONFIG_FRAGMENT: &str = include_str!("../kernel/firebreak.config");
/// Bumped whenever the build steps change what comes out.
const KERNEL_BUILDER_VERSION: u32 = 1;

/// Programs the kernel build runs, with their packages.
const BUILD_TOOLS: &[Tool] = &[
    Tool {
        name: "make",
        package: "make",
    },
    Tool {
        name: "gcc",
        package: "gcc",
    },
    Tool {
        name: "flex",
        package: "flex",
    },
    Tool {
        name: "bison",
        package: "bison",
    },
    Tool {
        name: "bc",
        package: "bc",
    },
    Tool {
        name: "perl",
        package: "perl",
    },
    Tool {
        name: "tar",
        package: "tar",
    },
    tools::XZ,
];

/// A built kernel in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltKernel {
    /// Its directory.
    pub dir: PathBuf,
    /// Its release (`uname -r`), e.g. `6.1.192-firebreak`.
    pub release: String,
}

impl BuiltKernel {
    /// The compressed kernel.
    pub fn bzimage(&self) -> PathBuf {
        self.dir.join("bzImage")
    }
    /// The ELF kernel (QEMU's PVH boot, Firecracker).
    pub fn vmlinux(&self) -> PathBuf {
        self.dir.join("vmlinux")
    }
}

/// Checks that everything the build needs is on this host, naming the package to install.
pub fn check_prerequisites() -> Result<PathBuf, ImageError> {
    let tarball = PathBuf::from(SOURCE_TARBALL);
    if !tarball.is_file() {
        return Err(ImageError::MissingTool {
            tool: SOURCE_TARBALL,
            package: SOURCE_PACKAGE,
        });
    }
    for t in BUILD_TOOLS {
        tool(t)?;
    }
    // objtool, built with the kernel, links against libelf.
    if !Path::new("/usr/include/libelf.h").is_file() {
        return Err(ImageError::MissingTool {
            tool: "libelf.h",
            package: "libelf-dev",
        });
    }
    Ok(tarball)
}

/// The cache key of the kernel built from `tarball`: the fragment, the builder version, and
/// the tarball's size and modification time (the package replaces the file on every upgrade;
/// hashing 140 MB on every `image build` would cost more than it protects against).
pub fn kernel_key(tarball: &Path) -> Result<String, ImageError> {
    let meta = std::fs::metadata(tarball).map_err(io_err("read", tarball))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let recipe = serde_json::json!({
        "builder": KERNEL_BUILDER_VERSION,
        "tarball": tarball.to_string_lossy(),
        "size": meta.len(),
        "mtime": mtime,
        "fragment": CONFIG_FRAGMENT,
    });
    let mut h = Sha256::new();
    h.update(recipe.to_string().as_bytes());
    Ok(hex(&h.finalize())[..20].to_string())
}

/// Returns the minimal kernel with cache key `key` ([`kernel_key`]) from `kernels_dir`,
/// building it first if needed (minutes: a kernel compile). Blocking.
pub fn ensure(
    kernels_dir: &Path,
    key: &str,
    progress: &mut dyn FnMut(BuildEvent),
) -> Result<BuiltKernel, ImageError> {
    let tarball = check_prerequisites()?;
    let dir = kernels_dir.join(key);
    if let Some(k) = load(&dir) {
        progress(BuildEvent::Detail(format!(
            "using cached kernel {} ({key})",
            k.release
        )));
        return Ok(k);
    }
    let staging = kernels_dir.join(format!(".tmp-{}-{key}", firebreak_runner::leftovers::tag()));
    let claim = firebreak_runner::leftovers::Claim::create_dir(&staging)
        .map_err(io_err("create", &staging))?;
    let res = build_in(&tarball, &staging, progress);
    if let Err(e) = res {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    // A finished kernel needs no owner: the lock file goes before the rename.
    claim.disown();
    if std::fs::rename(&staging, &dir).is_err() {
        // Someone else finished the same kernel first: use theirs.
        let _ = std::fs::remove_dir_all(&staging);
    }
    load(&dir).ok_or(ImageError::NoKernel(dir))
}

fn load(dir: &Path) -> Option<BuiltKernel> {
    let release = std::fs::read_to_string(dir.join("release")).ok()?;
    let k = BuiltKernel {
        dir: dir.to_path_buf(),
        release: release.trim().to_string(),
    };
    (k.bzimage().is_file() && k.vmlinux().is_file()).then_some(k)
}

/// Unpacks, configures and compiles the kernel in `staging`, leaving `bzImage`, `vmlinux` and
/// `release` there and removing the source tree.
fn build_in(
    tarball: &Path,
    staging: &Path,
    progress: &mut dyn FnMut(BuildEvent),
) -> Result<(), ImageError> {
    progress(BuildEvent::Detail(format!(
        "unpacking {}",
        tarball.display()
    )));
    let mut tar = Command::new("tar");
    tar.arg("-xf").arg(tarball).arg("-C").arg(staging);
    run_streaming(tar, progress)?;
    let src = staging.join(
        tarball
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".tar.xz"))
            .unwrap_or("linux-source-6.1"),
    );
    let make = |args: &[&str]| {
        let mut cmd = Command::new("make");
        cmd.arg("-C").arg(&src).args(args);
        cmd
    };
    run_streaming(make(&["-s", "tinyconfig"]), progress)?;
    let fragment = staging.join("firebreak.config");
    std::fs::write(&fragment, CONFIG_FRAGMENT).map_err(io_err("write", &fragment))?;
    let mut merge = Command::new("sh");
    merge
        .current_dir(&src)
        .arg("scripts/kconfig/merge_config.sh")
        .args(["-m", ".config"])
        .arg(&fragment);
    run_streaming(merge, progress)?;
    run_streaming(make(&["-s", "olddefconfig"]), progress)?;
    let config_path = src.join(".config");
    let config = std::fs::read_to_string(&config_path).map_err(io_err("read", &config_path))?;
    check_config(&config, CONFIG_FRAGMENT).map_err(|option| ImageError::KernelConfig {
        option,
        config: config_path.clone(),
    })?;
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    progress(BuildEvent::Detail(format!(
        "compiling the kernel with {jobs} job(s)"
    )));
    run_streaming(
        make(&[&format!("-j{jobs}"), "bzImage", "vmlinux"]),
        progress,
    )?;
    let out = make(&["-s", "kernelrelease"])
        .output()
        .map_err(io_err("run", "make kernelrelease"))?;
    let release = String::from_utf8_lossy(&out.stdout).trim().to_string();
    for (from, to) in [
        (src.join("arch/x86/boot/bzImage"), "bzImage"),
        (src.join("vmlinux"), "vmlinux"),
    ] {
        let dest = staging.join(to);
        std::fs::rename(&from, &dest).map_err(io_err("move", &from))?;
    }
    let rel = staging.join("release");
    std::fs::write(&rel, &release).map_err(io_err("write", &rel))?;
    std::fs::remove_dir_all(&src).map_err(io_err("remove", &src))
}

/// Checks every `CONFIG_X=…` line of `fragment` against the final `config`: `=n` holds when
/// the option is unset or absent, anything else must appear exactly. Returns the first option
/// that Kconfig did not keep (a dependency missing from the fragment, or a renamed option).
pub fn check_config(config: &str, fragment: &str) -> Result<(), String> {
    for line in fragment.lines().map(str::trim) {
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        if !name.starts_with("CONFIG_") {
            continue;
        }
        let ok = if value == "n" {
            !config.lines().any(|l| {
                l.starts_with(name)
                    && l[name.len()..].starts_with('=')
                    && &l[name.len() + 1..] != "n"
            })
        } else {
            config.lines().any(|l| l == line)
        };
        if !ok {
            return Err(line.to_string());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_option_is_named() {
        let config = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"x\"\n";
        assert_eq!(
            check_config(config, "CONFIG_A=y\nCONFIG_B=n\nCONFIG_D=n\n"),
            Ok(())
        );
        assert_eq!(
            check_config(config, "# comment\nCONFIG_A=y\nCONFIG_B=y\n"),
            Err("CONFIG_B=y".to_string())
        );
        assert_eq!(
            check_config(config, "CONFIG_C=\"y\""),
            Err("CONFIG_C=\"y\"".to_string())
        );
        assert_eq!(
            check_config(config, "CONFIG_A=n"),
            Err("CONFIG_A=n".to_string())
        );
        // A prefix of another option's name is not that option.
        assert_eq!(check_config("CONFIG_AB=y\n", "CONFIG_A=n"), Ok(()));
    }

    #[test]
    fn the_fragment_asks_for_what_the_guest_needs() {
        // What the initramfs, the agent and the QEMU arguments rely on, built in.
        for needed in [
            "CONFIG_MODULES=n",
            "CONFIG_ACPI=n",
            "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y",
            "CONFIG_VIRTIO_BLK=y",
            "CONFIG_VIRTIO_CONSOLE=y",
            "CONFIG_VIRTIO_VSOCKETS=y",
            "CONFIG_PVH=y",
            "CONFIG_EXT4_FS=y",
            "CONFIG_MEMCG=y",
            "CONFIG_CGROUP_PIDS=y",
            "CONFIG_DEVTMPFS=y",
        ] {
            assert!(
                CONFIG_FRAGMENT.lines().any(|l| l == needed),
                "{needed} missing from kernel/firebreak.config"
            );
        }
    }
}
