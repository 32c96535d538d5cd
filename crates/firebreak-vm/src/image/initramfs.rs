//! The initramfs of an image built on Debian's kernel: static busybox, the virtio modules a
//! boot needs and an `/init` that loads them, mounts the root disk and hands over to the
//! agent. The minimal kernel has those drivers built in and boots without one.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::process::Command;

use super::{io_err, tool, ImageError};
use crate::tools::{self, Tool};

/// Kernel modules the initramfs loads (with their dependencies), by group.
/// `core` always (disk, agent port, entropy; the MMIO transport); `pci`
/// when the guest has a PCI bus (QEMU `q35`; not `microvm`, not
/// Firecracker); `net` when the kernel command line has `firebreak.net=…`;
/// `vsock` when it has `firebreak.vsock=…` (Firecracker). Each module costs a
/// signature check, slow under TCG, so only what a boot needs is loaded.
/// Built-in modules are skipped.
pub(super) const INITRAMFS_MODULES: &[(&str, &[&str])] = &[
    (
        "core",
        &["virtio_mmio", "virtio_blk", "virtio_console", "virtio_rng"],
    ),
    ("pci", &["virtio_pci"]),
    ("net", &["virtio_net"]),
    ("vsock", &["vmw_vsock_virtio_transport"]),
];

pub(super) const INIT_SCRIPT: &str = r#"#!/bin/busybox sh
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

fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// Reads `modules.dep` in `moddir` and returns `(name, relative path)` of
/// `wanted` and their dependencies, dependencies first. Wanted modules not in
/// `modules.dep` must be built in (`modules.builtin`), else it is an error.
pub(super) fn resolve_modules(
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

/// A writer whose `flush` does nothing: the cpio crate flushes after each entry, which on
/// a gzip stream would end a compression block every time.
struct NoFlush<W: Write>(W);

impl<W: Write> Write for NoFlush<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The `newc` archive (the format the kernel unpacks) being written, with the next inode
/// number to give.
struct Archive<W: Write> {
    w: W,
    ino: u32,
}

impl<W: Write> Archive<W> {
    fn add(&mut self, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)) -> std::io::Result<()> {
        let len = u32::try_from(data.len())
            .map_err(|_| std::io::Error::other(format!("{name}: too large for a cpio entry")))?;
        self.ino += 1;
        let mut e = cpio::NewcBuilder::new(name)
            .ino(self.ino)
            .mode(mode)
            .nlink(1)
            .rdev_major(rdev.0)
            .rdev_minor(rdev.1)
            .write(&mut self.w, len);
        e.write_all(data)?;
        e.finish().map(drop)
    }

    fn finish(mut self) -> std::io::Result<W> {
        cpio::newc::trailer(&mut self.w)?;
        Ok(self.w)
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
pub(super) fn write_initramfs(
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
    let mut c = Archive {
        w: NoFlush(gz),
        ino: 0,
    };
    let bb = std::fs::read(busybox).map_err(io_err("read", busybox))?;
    let res: std::io::Result<()> = (|| {
        for d in ["bin", "dev", "lib", "lib/modules", "proc", "sys", "newroot"] {
            c.add(d, 0o040755, b"", (0, 0))?;
        }
        c.add("dev/console", 0o020600, b"", (5, 1))?;
        c.add("dev/null", 0o020666, b"", (1, 3))?;
        c.add("bin/busybox", 0o100755, &bb, (0, 0))?;
        c.add("bin/sh", 0o120777, b"busybox", (0, 0))?;
        for applet in INIT_APPLETS {
            c.add(&format!("bin/{applet}"), 0o120777, b"busybox", (0, 0))?;
        }
        c.add("init", 0o100755, INIT_SCRIPT.as_bytes(), (0, 0))?;
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
                c.add(&format!("lib/modules/{file}"), 0o100644, &data, (0, 0))
                    .map_err(io_err("write", out))?;
            }
            list.push_str(&file);
            list.push('\n');
        }
        c.add(
            &format!("modules.{group}"),
            0o100644,
            list.as_bytes(),
            (0, 0),
        )
        .map_err(io_err("write", out))?;
    }
    let gz = c.finish().map_err(io_err("write", out))?.0;
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

#[cfg(test)]
mod tests {
    use std::io::Read;

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
    fn the_initramfs_holds_init_busybox_devices_and_module_lists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let busybox = dir.path().join("busybox");
        std::fs::write(&busybox, b"bb").expect("write");
        std::fs::create_dir(dir.path().join("m")).expect("mkdir");
        std::fs::write(dir.path().join("m/a.ko"), b"module a").expect("write");
        let out = dir.path().join("initramfs.cpio.gz");
        let groups = vec![
            (
                "core".to_string(),
                vec![("a".to_string(), "m/a.ko".to_string())],
            ),
            (
                "net".to_string(),
                vec![("a".to_string(), "m/a.ko".to_string())],
            ),
        ];
        write_initramfs(&out, &busybox, dir.path(), &groups).expect("initramfs");
        let bytes = std::fs::read(&out).expect("read");
        let mut archive = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut archive)
            .expect("gunzip");
        // Read back every entry as the kernel would: name, mode, device, contents.
        let mut entries = Vec::new();
        let mut rest = &archive[..];
        loop {
            let mut r = cpio::NewcReader::new(rest).expect("a newc entry");
            if r.entry().is_trailer() {
                break;
            }
            let e = r.entry();
            let meta = (
                e.name().to_string(),
                e.mode(),
                (e.rdev_major(), e.rdev_minor()),
                e.ino(),
            );
            let mut data = Vec::new();
            r.read_to_end(&mut data).expect("entry data");
            entries.push((meta, data));
            rest = r.finish().expect("next entry");
        }
        let get = |name: &str| {
            entries
                .iter()
                .find(|((n, ..), _)| n == name)
                .unwrap_or_else(|| panic!("{name} in the initramfs"))
        };
        assert_eq!(get("init").1, INIT_SCRIPT.as_bytes());
        assert_eq!(get("init").0 .1, 0o100755);
        assert_eq!(get("bin/busybox").1, b"bb");
        assert_eq!(get("dev/console").0 .2, (5, 1));
        assert_eq!(get("bin/mount").1, b"busybox", "applets link to busybox");
        // A module in two groups is stored once and listed in both.
        assert_eq!(get("lib/modules/a.ko").1, b"module a");
        assert_eq!(
            entries
                .iter()
                .filter(|((n, ..), _)| n.ends_with("a.ko"))
                .count(),
            1
        );
        assert_eq!(get("modules.core").1, b"a.ko\n");
        assert_eq!(get("modules.net").1, b"a.ko\n");
        let mut inodes: Vec<u32> = entries.iter().map(|((.., ino), _)| *ino).collect();
        inodes.sort_unstable();
        inodes.dedup();
        assert_eq!(inodes.len(), entries.len(), "every entry has its own inode");
    }
}
