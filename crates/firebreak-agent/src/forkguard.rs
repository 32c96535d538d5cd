//! Ending a job that fork-bombs.
//!
//! The job cgroup's limits stop a fork bomb from taking the guest, but not
//! from spinning: its processes retry `fork` for as long as they live, every
//! vCPU stays busy, and every later step of the job crawls, sharing the CPU
//! with them, until the job's timeout (six hours by default). A bomb meets
//! one of two limits first: `pids.max` (then `pids.events` counts the forks it
//! refused) or, in a small guest, `memory.max` (then the OOM killer picks off
//! one process after another, or reclaim keeps it just under the limit, both
//! counted in `memory.events`, while the rest fork again). This
//! guard reads both every second: when forks were refused, or a job of more
//! than [`SWARM`] processes ran into its memory limit, in each of
//! [`SUSTAINED`] seconds in a row, every process of the job is killed
//! (`cgroup.kill` of the job cgroup; the agent lives outside it), the kernel
//! log says so, and so does the log of each command that was running
//! ([`crate::guard`]). The step that was running fails; later steps
//! (`if: always()`) start afresh.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Consecutive bad seconds before the job's processes are killed.
pub const SUSTAINED: u32 = 3;

/// More processes than this in a job that runs out of memory make it a swarm, which killing
/// its processes one at a time does not end.
pub const SWARM: u64 = 512;

/// The counter `key` of a cgroup `*.events` file (`max 12`, `oom_kill 3`).
pub fn counter(events: &str, key: &str) -> Option<u64> {
    events.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        if k == key {
            v.trim().parse().ok()
        } else {
            None
        }
    })
}

/// One second's reading of the job cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    /// Forks refused at `pids.max` so far (`pids.events`' `max`).
    pub refused_forks: u64,
    /// The job's processes any OOM killer killed so far, its cgroup's or, when the job ran
    /// the whole guest out of memory, the kernel's (`memory.events`' `oom_kill`).
    pub oom_kills: u64,
    /// Times the job ran into `memory.max` so far (`memory.events`' `max`): each time its
    /// processes had to reclaim memory before they could go on.
    pub at_memory_max: u64,
    /// Processes (tasks) now (`pids.current`).
    pub tasks: u64,
}

/// Counts consecutive seconds that look like a fork bomb.
#[derive(Debug, Default)]
pub struct Detector {
    last: Option<Sample>,
    streak: crate::guard::Streak,
}

impl Detector {
    /// Feeds a reading taken once a second; true when [`SUSTAINED`] seconds in a row had
    /// refused forks, or OOM kills among more than [`SWARM`] processes (the streak then starts
    /// over).
    pub fn observe(&mut self, now: Sample) -> bool {
        let bad = self.last.replace(now).is_some_and(|was| {
            let starved = now.oom_kills > was.oom_kills || now.at_memory_max > was.at_memory_max;
            now.refused_forks > was.refused_forks || (starved && now.tasks > SWARM)
        });
        self.streak.add(bad, SUSTAINED)
    }
}

/// Reads the job cgroup at `root`; `pids_events` is the text of its `pids.events`.
fn sample(root: &Path, pids_events: &str) -> Sample {
    let read = |f: &str| std::fs::read_to_string(root.join(f)).unwrap_or_default();
    let memory = read("memory.events");
    Sample {
        refused_forks: counter(pids_events, "max").unwrap_or(0),
        oom_kills: counter(&memory, "oom_kill").unwrap_or(0),
        at_memory_max: counter(&memory, "max").unwrap_or(0),
        tasks: read("pids.current").trim().parse().unwrap_or(0),
    }
}

/// Starts the guard on the job cgroup mounted at `root` (once per agent;
/// later calls do nothing).
pub fn start(root: PathBuf) {
    static STARTED: OnceLock<()> = OnceLock::new();
    let mut d = Detector::default();
    crate::guard::watch(
        &STARTED,
        "fork-guard",
        root,
        "pids.events",
        move |root, events| {
            if d.observe(sample(root, events)) {
                kill_job(root);
            }
        },
    );
}

/// Kills every process of the job cgroup at `root`, and says so.
fn kill_job(root: &Path) {
    let limit = std::fs::read_to_string(root.join("pids.max")).unwrap_or_default();
    if std::fs::write(root.join("cgroup.kill"), b"1").is_err() {
        return;
    }
    let msg = format!(
        "the job kept forking against its limits (processes: {}) for {SUSTAINED} s (a fork bomb?): \
         every process of the job was killed",
        limit.trim()
    );
    let _ = std::fs::write("/dev/kmsg", format!("firebreak: {msg}\n"));
    eprintln!("firebreak-agent: {msg}");
    crate::guard::record(msg);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_event_counters() {
        assert_eq!(counter("max 0\n", "max"), Some(0));
        assert_eq!(counter("max 1234\n", "max"), Some(1234));
        let mem = "low 0\nhigh 0\nmax 96\noom 7\noom_kill 7\noom_group_kill 0\n";
        assert_eq!(counter(mem, "oom_kill"), Some(7));
        assert_eq!(counter(mem, "oom"), Some(7));
        assert_eq!(counter("max lots\n", "max"), None);
        assert_eq!(counter("", "max"), None);
    }

    #[test]
    fn refused_forks_second_after_second_trip_the_guard() {
        let mut d = Detector::default();
        let at = |refused_forks| Sample {
            refused_forks,
            tasks: 8192,
            ..Sample::default()
        };
        assert!(!d.observe(at(0)), "the first read is a baseline");
        // A build that hits the limit once, then calms down.
        assert!(!d.observe(at(40)));
        assert!(!d.observe(at(40)));
        // A bomb: refusals every second.
        let mut n = 40;
        for i in 0..SUSTAINED {
            n += 5000;
            assert_eq!(d.observe(at(n)), i + 1 == SUSTAINED, "second {i}");
        }
        // The streak starts over after a kill.
        n += 5000;
        assert!(!d.observe(at(n)));
    }

    #[test]
    fn running_out_of_memory_counts_only_in_a_swarm() {
        let mut d = Detector::default();
        let at = |oom_kills, tasks| Sample {
            oom_kills,
            at_memory_max: oom_kills * 100,
            tasks,
            ..Sample::default()
        };
        // A memory bomb: one process, killed again and again.
        assert!(!d.observe(at(0, 3)));
        for k in 1..=SUSTAINED as u64 + 2 {
            assert!(
                !d.observe(at(k, 3)),
                "a lone memory hog is the OOM killer's"
            );
        }
        // A fork bomb in a small guest: the OOM killer picks at a swarm.
        let mut k = 10;
        for i in 0..SUSTAINED {
            k += 30;
            assert_eq!(d.observe(at(k, 1900)), i + 1 == SUSTAINED, "second {i}");
        }
    }
}
