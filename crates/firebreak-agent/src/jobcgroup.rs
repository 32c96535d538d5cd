//! The guest's job cgroup: one cgroup v2 directory that holds every process
//! of the job (all the agent's per-command cgroups live inside it), with the
//! `pids`, `memory` and `cpu` controllers, mounted over `/sys/fs/cgroup` so that
//! the job sees it as the root. The agent itself stays outside, so the
//! job's OOM killer and pids limit never reach it, and the job's CPU weight is
//! the lowest there is: a job that keeps every vCPU busy (a fork bomb spinning
//! at its pids limit) runs as fast as ever while the agent idles, but the agent
//! gets the CPU the moment it has work, so it still answers the host (pings,
//! cancellation, the next step).
//!
//! Done here rather than by a shell script the host runs: under TCG every
//! process a script starts costs 50–100 ms, and the script started eight.

use std::path::{Path, PathBuf};

/// The job cgroup's `cpu.weight`: cgroup v2's lowest (the agent, outside it, has the
/// default 100).
pub const JOB_CPU_WEIGHT: u32 = 1;

/// What [`prepare`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prepared {
    /// The job cgroup has the `pids` controller (a pids limit can be set).
    pub pids: bool,
    /// The job cgroup's `memory.max` in bytes, if the memory controller is
    /// there and a limit was set.
    pub memory_max: Option<u64>,
}

/// Creates the job cgroup `name` under `root` (a cgroup2 mount), enables the
/// `pids`, `memory` and `cpu` controllers for it, sets its `memory.max` to the
/// guest's available memory (`MemAvailable` of `meminfo`) less `reserve_mib`
/// and its `cpu.weight` to [`JOB_CPU_WEIGHT`], and bind-mounts it over `root`.
/// Each step that fails leaves the next to do what it can; the result says what
/// holds. Then flushes the disks.
pub fn prepare(root: &Path, meminfo: &Path, name: &str, reserve_mib: u64) -> Prepared {
    if let Some(job) = configure(root, meminfo, name, reserve_mib) {
        let _ = nix::mount::mount(
            Some(&job),
            root,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        );
    }
    nix::unistd::sync();
    // Read back through the root: after the bind mount it is the job cgroup.
    Prepared {
        pids: root.join("pids.max").is_file(),
        memory_max: std::fs::read_to_string(root.join("memory.max"))
            .ok()
            .and_then(|v| v.trim().parse().ok()),
    }
}

/// The steps of [`prepare`] before the mount: controllers, directory, limit.
/// Returns the job cgroup's directory if it exists.
fn configure(root: &Path, meminfo: &Path, name: &str, reserve_mib: u64) -> Option<PathBuf> {
    // One at a time: a controller missing must not stop the others.
    for c in ["+pids", "+memory", "+cpu"] {
        let _ = std::fs::write(root.join("cgroup.subtree_control"), c);
    }
    let job = root.join(name);
    std::fs::create_dir_all(&job).ok()?;
    let _ = std::fs::write(job.join("cpu.weight"), JOB_CPU_WEIGHT.to_string());
    if let Some(limit) = std::fs::read_to_string(meminfo)
        .ok()
        .and_then(|m| available_kib(&m))
        .map(|kib| kib.saturating_sub(reserve_mib * 1024) * 1024)
    {
        let _ = std::fs::write(job.join("memory.max"), limit.to_string());
    }
    Some(job)
}

/// How many of the job's processes the kernel's OOM killer has killed so far (`oom_kill` in
/// the job cgroup `root`'s `memory.events`, which counts its whole subtree); `None` without
/// the memory controller.
pub fn oom_kills(root: &Path) -> Option<u64> {
    let events = std::fs::read_to_string(root.join("memory.events")).ok()?;
    events
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
}

/// What the agent says when the OOM killer killed `n` of the job's processes while a
/// command ran, with the job's memory limit (`memory.max` under `root`).
pub fn oom_note(root: &Path, n: u64) -> String {
    let limit = std::fs::read_to_string(root.join("memory.max"))
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|b| {
            format!(
                " (the job's processes may use {} MiB of this VM's memory)",
                b >> 20
            )
        })
        .unwrap_or_default();
    format!(
        "out of memory: the kernel killed {n} of the job's processes while this command ran{limit}; \
         a larger VM (a runs-on label such as `4gb`) has more"
    )
}

/// `MemAvailable` in KiB from the text of `/proc/meminfo`.
fn available_kib(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        l.strip_prefix("MemAvailable:")?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn oom_kills_are_read_from_memory_events() {
        let d = tempfile::tempdir().expect("tempdir");
        assert_eq!(super::oom_kills(d.path()), None);
        std::fs::write(
            d.path().join("memory.events"),
            "low 0\nhigh 0\nmax 12\noom 2\noom_kill 3\noom_group_kill 0\n",
        )
        .expect("write");
        std::fs::write(d.path().join("memory.max"), "209715200\n").expect("write");
        assert_eq!(super::oom_kills(d.path()), Some(3));
        let note = super::oom_note(d.path(), 1);
        assert!(
            note.starts_with("out of memory: the kernel killed 1 of the job's processes"),
            "{note}"
        );
        assert!(note.contains("may use 200 MiB"), "{note}");
    }

    use super::*;

    #[test]
    fn reads_available_memory() {
        let m = "MemTotal:         223760 kB\nMemFree:          180000 kB\nMemAvailable:     196608 kB\n";
        assert_eq!(available_kib(m), Some(196_608));
        assert_eq!(available_kib("MemTotal: 1 kB\n"), None);
        assert_eq!(available_kib("MemAvailable: lots\n"), None);
    }

    /// On a plain directory the files written are just files.
    #[test]
    fn writes_the_limit_from_available_memory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let meminfo = dir.path().join("meminfo");
        std::fs::write(&meminfo, "MemAvailable:     196608 kB\n").expect("meminfo");
        let root = dir.path().join("cg");
        std::fs::create_dir(&root).expect("root");
        let job = configure(&root, &meminfo, "job", 24).expect("job dir");
        assert_eq!(job, root.join("job"));
        let written = std::fs::read_to_string(job.join("memory.max")).expect("memory.max");
        assert_eq!(written, ((196_608 - 24 * 1024) * 1024).to_string());
        // Controllers are enabled one by one (a plain file keeps the last).
        assert_eq!(
            std::fs::read_to_string(root.join("cgroup.subtree_control")).expect("control"),
            "+cpu"
        );
        assert_eq!(
            std::fs::read_to_string(job.join("cpu.weight")).expect("cpu.weight"),
            "1"
        );
        // Unreadable meminfo: the directory, no limit.
        let job = configure(&root, &dir.path().join("none"), "job2", 24).expect("job dir");
        assert!(!job.join("memory.max").exists());
    }
}
