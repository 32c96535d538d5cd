//! Starting a command inside its own cgroup v2, so that a timeout or cancel can kill everything
//! it left behind (`cgroup.kill`), daemons included.
//!
//! The child moves itself between `fork` and `exec`: it writes `0` ("the writing process") to
//! the cgroup's `cgroup.procs`. Every process the command ever starts is therefore born inside
//! the cgroup; moving the pid from the parent after `spawn` would race with the command's first
//! `fork`. This replaces an earlier design that re-executed the agent binary as a helper to do
//! the same: under TCG that second `exec` cost ~50 ms per command.

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;

/// Arranges for `cmd`'s process to enter `cgroup` (a cgroup v2 directory) before it execs.
/// If it cannot, the spawn fails with that error.
#[allow(unsafe_code)]
pub fn enter_before_exec(cmd: &mut tokio::process::Command, cgroup: &Path) -> std::io::Result<()> {
    // Everything that allocates happens here, in the parent.
    let procs = CString::new(cgroup.join("cgroup.procs").as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("cgroup path contains a NUL byte"))?;
    let enter = move || -> std::io::Result<()> {
        let fd = open(
            procs.as_c_str(),
            OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(std::io::Error::from)?;
        // SAFETY: `open` just returned this descriptor and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        nix::unistd::write(&fd, b"0").map_err(std::io::Error::from)?;
        Ok(())
    };
    // SAFETY: the closure runs in the forked child of a multi-threaded process, where only
    // async-signal-safe calls are allowed: it makes the `open`, `write` and `close` system
    // calls on a path built beforehand, and neither allocates nor takes locks.
    unsafe {
        cmd.pre_exec(enter);
    }
    Ok(())
}
