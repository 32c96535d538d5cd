//! Ending a job that thrashes under its memory limit.
//!
//! When a job's processes fill the job cgroup's `memory.max`, the kernel
//! first reclaims the cgroup's page cache, including the program files those
//! processes run from, which they read back at once. As long as reclaim
//! frees something the cgroup's OOM killer waits, and a memory bomb can keep
//! a small guest busy re-reading files for a minute or more (21-87 s seen
//! under TCG) instead of failing. This guard watches the job cgroup's
//! pressure-stall information, as systemd-oomd does: when the job has spent
//! more than half of every second for [`SUSTAINED`] seconds with all its
//! tasks stalled on memory, the process with the largest resident set in the
//! cgroup is killed (`SIGKILL`, as the OOM killer would), and the kernel log
//! and the running commands' logs say so ([`crate::guard`]). A job of more than
//! [`crate::forkguard::SWARM`] processes — a fork bomb that met the memory limit before the pids
//! limit, which is the usual case — is ended as the fork guard ends one
//! ([`crate::forkguard::end_bomb`]).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Share of wall time with every task of the job stalled on memory above
/// which a second counts as thrashing.
pub const THRESHOLD: f64 = 0.5;

/// Consecutive thrashing seconds before the biggest process is killed.
pub const SUSTAINED: u32 = 5;

/// The line the guard writes to the kernel log when it kills.
pub const KMSG_PREFIX: &str = "firebreak: memory thrash in the job";

/// The `full … total=` counter (microseconds) of a `memory.pressure` file.
pub fn full_total_us(pressure: &str) -> Option<u64> {
    let line = pressure.lines().find(|l| l.starts_with("full "))?;
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("total="))?
        .parse()
        .ok()
}

/// Counts consecutive thrashing intervals.
#[derive(Debug, Default)]
pub struct Detector {
    last: Option<u64>,
    streak: crate::guard::Streak,
}

impl Detector {
    /// Feeds the stall counter read after `elapsed` since the previous
    /// read; true when the job has thrashed for [`SUSTAINED`] intervals in
    /// a row (the streak then starts over).
    pub fn observe(&mut self, total_us: u64, elapsed: Duration) -> bool {
        let prev = self.last.replace(total_us);
        let Some(prev) = prev else { return false };
        let stalled = total_us.saturating_sub(prev) as f64 / 1e6;
        let wall = elapsed.as_secs_f64();
        self.streak
            .add(wall > 0.0 && stalled / wall > THRESHOLD, SUSTAINED)
    }
}

/// Starts the guard on the job cgroup mounted at `root` (once per agent;
/// later calls do nothing).
pub fn start(root: PathBuf) {
    static STARTED: OnceLock<()> = OnceLock::new();
    let mut d = Detector::default();
    let mut at = Instant::now();
    crate::guard::watch(
        &STARTED,
        "thrash-guard",
        root,
        "memory.pressure",
        move |root, p| {
            let Some(total) = full_total_us(p) else {
                return;
            };
            let now = Instant::now();
            if d.observe(total, now.duration_since(at)) {
                kill_biggest(root);
            }
            at = now;
        },
    );
}

/// Kills the process with the largest resident set among those in `root`
/// and its descendant cgroups, and says so in the kernel log; a job of more
/// than [`crate::forkguard::SWARM`] processes (a fork bomb that ran into the memory limit before
/// the pids limit) is ended as a fork bomb instead ([`crate::forkguard::end_bomb`]).
fn kill_biggest(root: &Path) {
    // The stall a fork bomb the fork guard just ended caused is no reason to kill a survivor.
    if crate::guard::bomb_ended_within(Duration::from_secs(u64::from(SUSTAINED) + 1)) {
        return;
    }
    let page = 4096u64;
    let pids = pids_under(root);
    if pids.len() as u64 > crate::forkguard::SWARM
        && crate::forkguard::end_bomb(
            root,
            &format!(
                "stayed stalled on memory for {SUSTAINED} s ({} processes in the job)",
                pids.len()
            ),
        )
    {
        return;
    }
    let biggest = pids
        .into_iter()
        .filter_map(|pid| {
            let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
            let rss: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
            Some((rss * page, pid))
        })
        .max();
    let Some((rss, pid)) = biggest else { return };
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let Ok(raw) = i32::try_from(pid) else { return };
    if nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), nix::sys::signal::SIGKILL).is_ok() {
        let msg = format!(
            "{KMSG_PREFIX}: killed process {pid} ({}), {} MiB resident; the job stayed stalled on memory for {SUSTAINED} s\n",
            comm.trim(),
            rss >> 20
        );
        let _ = std::fs::write("/dev/kmsg", &msg);
        eprint!("firebreak-agent: {msg}");
        crate::guard::record(
            format!(
                "the job stayed stalled on memory for {SUSTAINED} s: its biggest process, {pid} ({}, {} MiB), was killed",
                comm.trim(),
                rss >> 20
            ),
            None,
        );
    }
}

/// Every pid in the `cgroup.procs` of `dir` and the cgroups below it.
pub(crate) fn pids_under(dir: &Path) -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                pids.extend(pids_under(&e.path()));
            }
        }
    }
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_full_stall_counter() {
        let p = "some avg10=12.00 avg60=3.00 avg300=1.00 total=900000\nfull avg10=10.00 avg60=2.50 avg300=0.80 total=750000\n";
        assert_eq!(full_total_us(p), Some(750_000));
        assert_eq!(full_total_us("some avg10=0.00 total=5\n"), None);
    }

    #[test]
    fn only_a_sustained_stall_trips_the_guard() {
        let s = Duration::from_secs(1);
        let mut d = Detector::default();
        let mut total = 0;
        assert!(!d.observe(total, s), "the first read is a baseline");
        // Four stalled seconds, one calm one, then five stalled ones.
        for _ in 0..4 {
            total += 900_000;
            assert!(!d.observe(total, s));
        }
        total += 100_000;
        assert!(!d.observe(total, s));
        for i in 0..SUSTAINED {
            total += 800_000;
            assert_eq!(d.observe(total, s), i + 1 == SUSTAINED, "second {i}");
        }
        // The streak starts over after a kill.
        total += 800_000;
        assert!(!d.observe(total, s));
    }

    #[test]
    fn finds_pids_in_nested_cgroups() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("cgroup.procs"), "").expect("root procs");
        let a = dir.path().join("fb-exec-1");
        std::fs::create_dir_all(a.join("inner")).expect("dirs");
        std::fs::write(a.join("cgroup.procs"), "10\n11\n").expect("a procs");
        std::fs::write(a.join("inner/cgroup.procs"), "12\n").expect("inner procs");
        let mut pids = pids_under(dir.path());
        pids.sort();
        assert_eq!(pids, [10, 11, 12]);
    }
}
