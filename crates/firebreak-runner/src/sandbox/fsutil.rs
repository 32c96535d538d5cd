//! Filesystem helpers shared by the local backends. Everything here is
//! blocking; callers run it on `spawn_blocking`.
//!
//! The job can write anything into its own tree, including symlinks pointing
//! at host files. Every guest path the runner touches on the job's behalf is
//! therefore checked *after* resolving symlinks in its parent directories, and
//! the last component is never followed.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{SandboxError, READ_FILE_LIMIT};

/// Canonical form of `path`'s parent must lie inside canonical `root`.
/// Missing parents are created (each one checked) when `create_parents`.
pub(crate) fn check_inside(
    root: &Path,
    path: &Path,
    create_parents: bool,
) -> Result<(), SandboxError> {
    let outside = || SandboxError::PathOutsideSandbox(path.to_path_buf());
    let root_c = fs::canonicalize(root).map_err(|e| SandboxError::io("resolve", root, e))?;
    let parent = path.parent().ok_or_else(outside)?;
    if create_parents {
        // Walk down creating one level at a time, re-checking each level so a
        // symlink planted in the middle cannot redirect the creation.
        let mut cur = PathBuf::new();
        for comp in parent.components() {
            cur.push(comp);
            if !cur.starts_with(root) {
                continue;
            }
            match fs::symlink_metadata(&cur) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&cur)
                        .map_err(|e| SandboxError::io("create directory", &cur, e))?;
                }
                Err(e) => return Err(SandboxError::io("inspect", &cur, e)),
            }
            let c = fs::canonicalize(&cur).map_err(|e| SandboxError::io("resolve", &cur, e))?;
            if !c.starts_with(&root_c) {
                return Err(outside());
            }
        }
        Ok(())
    } else {
        match fs::canonicalize(parent) {
            Ok(c) if c.starts_with(&root_c) => Ok(()),
            Ok(_) => Err(outside()),
            // A missing parent means a missing file: let the caller report that.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(SandboxError::io("resolve", parent, e)),
        }
    }
}

/// Reads a regular file without following a symlink in the last component.
pub(crate) fn read_nofollow(path: &Path) -> Result<Option<Vec<u8>>, SandboxError> {
    // Non-blocking: a FIFO a job left in a file's place must not make the open wait for a
    // writer (it is refused below; regular files ignore the flag).
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path);
    let f = match f {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            return Err(SandboxError::PathOutsideSandbox(path.to_path_buf()))
        }
        Err(e) => return Err(SandboxError::io("open", path, e)),
    };
    let refuse = |why: String| SandboxError::io("read", path, io::Error::other(why));
    if !f
        .metadata()
        .map_err(|e| SandboxError::io("stat", path, e))?
        .is_file()
    {
        return Err(refuse("not a regular file".to_string()));
    }
    let mut buf = Vec::new();
    f.take(READ_FILE_LIMIT + 1)
        .read_to_end(&mut buf)
        .map_err(|e| SandboxError::io("read", path, e))?;
    if buf.len() as u64 > READ_FILE_LIMIT {
        return Err(refuse(format!(
            "larger than {} MiB: not read",
            READ_FILE_LIMIT >> 20
        )));
    }
    Ok(Some(buf))
}

/// Creates/truncates a file without following a symlink in the last component.
pub(crate) fn write_nofollow(path: &Path, contents: &[u8], mode: u32) -> Result<(), SandboxError> {
    // An existing symlink is replaced rather than written through.
    if let Ok(md) = fs::symlink_metadata(path) {
        if md.file_type().is_symlink() {
            fs::remove_file(path).map_err(|e| SandboxError::io("remove", path, e))?;
        }
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| SandboxError::io("create", path, e))?;
    f.write_all(contents)
        .map_err(|e| SandboxError::io("write", path, e))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| SandboxError::io("chmod", path, e))?;
    Ok(())
}

/// Removes a file, symlink or directory tree; missing is fine.
pub(crate) fn remove_any(path: &Path) -> Result<(), SandboxError> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(SandboxError::io("inspect", path, e)),
        Ok(md) if md.is_dir() => {
            fs::remove_dir_all(path).map_err(|e| SandboxError::io("remove", path, e))
        }
        Ok(_) => fs::remove_file(path).map_err(|e| SandboxError::io("remove", path, e)),
    }
}

/// [`copy_tree`], with a fast path: a directory copied to a destination that does not exist
/// yet or is an empty directory (nothing the job could have planted symlinks in) is copied by
/// `cp -a` (one process, kernel-side copies), falling back to [`copy_tree`] when that fails.
pub(crate) fn copy_tree_fast(src: &Path, dst: &Path) -> Result<(), SandboxError> {
    let src_is_dir = fs::symlink_metadata(src)
        .map(|m| m.is_dir())
        .unwrap_or(false);
    let dst_fresh = match fs::symlink_metadata(dst) {
        Err(_) => true,
        Ok(m) if m.is_dir() => fs::read_dir(dst)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false),
        Ok(_) => false,
    };
    if src_is_dir && dst_fresh {
        let ok = std::process::Command::new("cp")
            .arg("-a")
            .arg("--no-target-directory")
            .arg("--")
            .arg(src)
            .arg(dst)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            return Ok(());
        }
    }
    copy_tree(src, dst)
}

/// True when `FIREBREAK_NO_OVERLAY` asks for copies instead of overlay mounts.
pub(crate) fn overlay_disabled() -> bool {
    std::env::var_os(super::NO_OVERLAY_ENV)
        .is_some_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// A path the `mount -o lowerdir=…` option syntax can carry unescaped.
fn option_safe(p: &Path) -> bool {
    let s = p.as_os_str().as_encoded_bytes();
    p.is_absolute()
        && !s
            .iter()
            .any(|b| matches!(b, b',' | b':' | b'\\' | b'"' | b'\'') || b.is_ascii_whitespace())
}

fn run_quiet(cmd: &mut std::process::Command) -> Result<(), String> {
    let out = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        let msg = String::from_utf8_lossy(&out.stderr);
        let msg = msg.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        Err(format!("{} ({})", msg.trim(), out.status))
    }
}

/// Mounts overlayfs at `dest` with `lower` read-only below the writable `upper` (`work` is
/// overlayfs's scratch folder, on the same file system as `upper`). Copy-up never writes
/// to a lower inode, so `lower` stays untouched whatever is written at `dest`.
pub(crate) fn mount_overlay(
    lower: &Path,
    upper: &Path,
    work: &Path,
    dest: &Path,
) -> Result<(), String> {
    for p in [lower, upper, work, dest] {
        if !option_safe(p) {
            return Err(format!(
                "{} cannot be passed to mount (',', ':', quotes or spaces)",
                p.display()
            ));
        }
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    let mount = |opts: &str| {
        run_quiet(
            std::process::Command::new("mount")
                .args(["-t", "overlay", "overlay", "-o", opts, "--"])
                .arg(dest),
        )
    };
    // `redirect_dir=on` lets the job rename folders that come from the lower layer (else
    // rename(2) fails with EXDEV, and `git mv dir` with it); kernels without it get the
    // plain mount.
    mount(&format!("{opts},redirect_dir=on"))
        .or_else(|_| mount(&opts))
        .map_err(|e| format!("mount -t overlay: {e}"))
}

/// Unmounts `dest`; when busy, detaches it lazily (`umount -l`).
pub(crate) fn unmount(dest: &Path) -> Result<(), String> {
    if run_quiet(std::process::Command::new("umount").arg("--").arg(dest)).is_ok() {
        return Ok(());
    }
    run_quiet(
        std::process::Command::new("umount")
            .args(["-l", "--"])
            .arg(dest),
    )
}

/// Mount points at or below `dir` in this process's mount namespace, deepest first.
pub(crate) fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mountinfo(m)))
        .filter(|m| m.starts_with(dir))
        .collect();
    // Later mounts (and deeper ones) first.
    found.reverse();
    found.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    found.dedup();
    found
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = u32::from(b[i + 1] - b'0') * 64
                + u32::from(b[i + 2] - b'0') * 8
                + u32::from(b[i + 3] - b'0');
            out.push(u8::try_from(v).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmounts everything mounted at or below `dir` (lazily when busy). Returns the mount
/// points that could not be unmounted.
pub(crate) fn unmount_all_under(dir: &Path) -> Vec<PathBuf> {
    let mut left = Vec::new();
    for m in mounts_under(dir) {
        if let Err(e) = unmount(&m) {
            tracing::warn!(mount = %m.display(), "cannot unmount: {e}");
            left.push(m);
        }
    }
    left
}

/// Copies `src` (file, symlink or directory tree) to `dst`, keeping modes and
/// copying symlinks as symlinks.
pub(crate) fn copy_tree(src: &Path, dst: &Path) -> Result<(), SandboxError> {
    let md = fs::symlink_metadata(src).map_err(|e| SandboxError::io("inspect", src, e))?;
    let ft = md.file_type();
    if ft.is_symlink() {
        let target = fs::read_link(src).map_err(|e| SandboxError::io("read link", src, e))?;
        remove_any(dst)?;
        std::os::unix::fs::symlink(&target, dst)
            .map_err(|e| SandboxError::io("symlink", dst, e))?;
    } else if ft.is_dir() {
        match fs::symlink_metadata(dst) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                remove_any(dst)?;
                fs::create_dir(dst).map_err(|e| SandboxError::io("create directory", dst, e))?;
            }
            Err(_) => {
                fs::create_dir_all(dst).map_err(|e| SandboxError::io("create directory", dst, e))?
            }
        }
        for entry in fs::read_dir(src).map_err(|e| SandboxError::io("list", src, e))? {
            let entry = entry.map_err(|e| SandboxError::io("list", src, e))?;
            copy_tree(&entry.path(), &dst.join(entry.file_name()))?;
        }
        fs::set_permissions(dst, fs::Permissions::from_mode(md.permissions().mode()))
            .map_err(|e| SandboxError::io("chmod", dst, e))?;
    } else if ft.is_file() {
        if let Ok(m) = fs::symlink_metadata(dst) {
            if !m.is_file() {
                remove_any(dst)?;
            }
        }
        fs::copy(src, dst).map_err(|e| SandboxError::io("copy", src, e))?;
    }
    // Sockets, fifos and devices are skipped.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_tree_keeps_symlinks_and_modes() -> Result<(), Box<dyn std::error::Error>> {
        let t = tempfile::tempdir()?;
        let src = t.path().join("src");
        fs::create_dir_all(src.join("sub"))?;
        fs::write(src.join("sub/run.sh"), "echo hi")?;
        fs::set_permissions(src.join("sub/run.sh"), fs::Permissions::from_mode(0o755))?;
        std::os::unix::fs::symlink("sub/run.sh", src.join("link"))?;
        let dst = t.path().join("dst");
        copy_tree(&src, &dst)?;
        assert_eq!(fs::read_to_string(dst.join("sub/run.sh"))?, "echo hi");
        assert_eq!(
            fs::metadata(dst.join("sub/run.sh"))?.permissions().mode() & 0o777,
            0o755
        );
        assert_eq!(
            fs::read_link(dst.join("link"))?,
            PathBuf::from("sub/run.sh")
        );
        Ok(())
    }

    #[test]
    fn symlinked_parent_escaping_root_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        let t = tempfile::tempdir()?;
        let root = t.path().join("root");
        let outside = t.path().join("outside");
        fs::create_dir_all(&root)?;
        fs::create_dir_all(&outside)?;
        std::os::unix::fs::symlink(&outside, root.join("evil"))?;
        assert!(matches!(
            check_inside(&root, &root.join("evil/x"), true),
            Err(SandboxError::PathOutsideSandbox(_))
        ));
        assert!(check_inside(&root, &root.join("ok/deeper/x"), true).is_ok());
        assert!(root.join("ok/deeper").is_dir());
        Ok(())
    }

    #[test]
    fn read_refuses_final_symlink() -> Result<(), Box<dyn std::error::Error>> {
        let t = tempfile::tempdir()?;
        fs::write(t.path().join("secret"), "s")?;
        std::os::unix::fs::symlink(t.path().join("secret"), t.path().join("out"))?;
        assert!(read_nofollow(&t.path().join("out")).is_err());
        assert_eq!(read_nofollow(&t.path().join("missing"))?, None);
        write_nofollow(&t.path().join("out"), b"new", 0o644)?;
        assert_eq!(fs::read_to_string(t.path().join("secret"))?, "s");
        assert_eq!(fs::read_to_string(t.path().join("out"))?, "new");
        Ok(())
    }
}
