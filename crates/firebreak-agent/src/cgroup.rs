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

/// Arranges for `cmd`'s process to give up the agent's protection from the OOM killer
/// (`oom_score_adj` back to 0) before it execs: the agent runs at -1000 so that when a job
/// runs the whole guest out of memory the kernel kills the job's processes, never the agent
/// (the host's only way in). Failing to reset it (outside a guest the agent was never
/// protected) is no error.
#[allow(unsafe_code)]
pub fn reset_oom_score_before_exec(cmd: &mut tokio::process::Command) {
    let reset = || -> std::io::Result<()> {
        if let Ok(fd) = open(
            c"/proc/self/oom_score_adj",
            OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            // SAFETY: `open` just returned this descriptor and nothing else owns it.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let _ = nix::unistd::write(&fd, b"0");
        }
        Ok(())
    };
    // SAFETY: as in `enter_before_exec`: only the `open`, `write` and `close` system calls,
    // on a path known at compile time, without allocating or taking locks.
    unsafe {
        cmd.pre_exec(reset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process protected from the OOM killer (as the agent is in a guest) starts commands
    /// that are not. Each test runs in a process of its own, so lowering ours is harmless;
    /// it needs root (CAP_SYS_RESOURCE), else the test has nothing to show.
    #[tokio::test]
    async fn commands_do_not_inherit_the_agents_oom_protection() {
        if std::fs::write("/proc/self/oom_score_adj", "-1000").is_err() {
            eprintln!("SKIPPED: lowering oom_score_adj needs root");
            return;
        }
        let mut cmd = tokio::process::Command::new("cat");
        cmd.arg("/proc/self/oom_score_adj");
        let inherited = cmd.output().await.expect("cat");
        assert_eq!(String::from_utf8_lossy(&inherited.stdout).trim(), "-1000");
        reset_oom_score_before_exec(&mut cmd);
        let reset = cmd.output().await.expect("cat");
        assert_eq!(String::from_utf8_lossy(&reset.stdout).trim(), "0");
    }
}
