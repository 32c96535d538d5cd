//! Host programs the VM layer runs, and the Debian packages providing them.

use std::path::PathBuf;

/// A host program and the Debian package that provides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tool {
    /// Program name.
    pub name: &'static str,
    /// Debian package.
    pub package: &'static str,
}

/// `debootstrap`.
pub const DEBOOTSTRAP: Tool = Tool {
    name: "debootstrap",
    package: "debootstrap",
};
/// `mkfs.ext4`.
pub const MKFS_EXT4: Tool = Tool {
    name: "mkfs.ext4",
    package: "e2fsprogs",
};
/// `busybox` (must be the static build).
pub const BUSYBOX: Tool = Tool {
    name: "busybox",
    package: "busybox-static",
};
/// `lz4` (Debian kernels are LZ4-compressed).
pub const LZ4: Tool = Tool {
    name: "lz4",
    package: "lz4",
};
/// `zstd`.
pub const ZSTD: Tool = Tool {
    name: "zstd",
    package: "zstd",
};
/// `xz`.
pub const XZ: Tool = Tool {
    name: "xz",
    package: "xz-utils",
};
/// `gzip`.
pub const GZIP: Tool = Tool {
    name: "gzip",
    package: "gzip",
};
/// `qemu-system-x86_64`.
pub const QEMU: Tool = Tool {
    name: "qemu-system-x86_64",
    package: "qemu-system-x86",
};
/// `qemu-img`.
pub const QEMU_IMG: Tool = Tool {
    name: "qemu-img",
    package: "qemu-utils",
};

/// Tools needed to build an image.
pub const IMAGE_TOOLS: &[Tool] = &[DEBOOTSTRAP, MKFS_EXT4, BUSYBOX, LZ4];
/// Tools needed to run the QEMU backend.
pub const QEMU_TOOLS: &[Tool] = &[QEMU, QEMU_IMG];

/// Finds a program on `PATH`, then in the sbin directories (often missing
/// from a user's PATH).
pub fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(extra)
        .map(|d| d.join(name))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}
