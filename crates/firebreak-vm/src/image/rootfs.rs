//! The root filesystem tree of an image: the kernel found in it, the agent put in it, the
//! guest's own files written, and its size counted for `mkfs.ext4`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{io_err, ImageError};
use crate::tools::{self, Tool};

pub(super) fn find_kernel(rootfs: &Path) -> Result<(PathBuf, String), ImageError> {
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

/// Copies the agent to `/usr/sbin` (and `/sbin` without merged /usr);
/// returns where it went.
pub(super) fn install_agent(rootfs: &Path, agent: &Path) -> Result<Vec<PathBuf>, ImageError> {
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
pub(super) fn tidy_rootfs(rootfs: &Path) -> Result<(), ImageError> {
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

/// What the tree under `root` needs in an ext4 file system: each entry's length rounded up
/// to 4 KiB blocks, plus an inode (for sizing the root filesystem).
pub(super) fn tree_bytes(root: &Path) -> u64 {
    walk_sum(root, |m| m.len().div_ceil(4096) * 4096 + 256)
}

/// Bytes on disk under `root` (allocated blocks, as `du` counts them: a sparse snapshot RAM
/// file counts what it holds, not its length).
pub(crate) fn du_bytes(root: &Path) -> u64 {
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
