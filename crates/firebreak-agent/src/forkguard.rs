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
//! [`SUSTAINED`] seconds in a row, the bomb is ended ([`end_bomb`]): the
//! processes of the command it came from when that command still runs,
//! every process of the job when it came from one that has ended
//! (`cgroup.kill`; the agent lives outside the job cgroup). The kernel log
//! says so, and so does the log of each command concerned
//! ([`crate::guard`]). The step that was running fails; later steps
//! (`if: always()`) run in a guest that works.

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

/// Ends a fork bomb reported by [`start`]: kills the bomb's processes and says so.
fn kill_job(root: &Path) {
    let limit = std::fs::read_to_string(root.join("pids.max")).unwrap_or_default();
    end_bomb(
        root,
        &format!(
            "kept forking against the job's limits (processes: {}) for {SUSTAINED} s",
            limit.trim()
        ),
    );
}

/// Ends a fork bomb among the job's processes (the job cgroup `root`), which `why` describes
/// ("kept forking against …"), and says so in the kernel log and the logs of the commands it
/// concerns ([`crate::guard`]). The bomb is the command cgroup with the most processes:
/// while that command runs, it alone is killed (its step fails; whatever earlier steps left
/// running, such as a database, lives on); when it has ended (the classic `:(){ :|:& };:`
/// returns at once and leaves the bomb behind), every process of the job is killed, so that
/// the step running now fails, saying which earlier command left the bomb, and the job
/// fails with it. Returns false if nothing could be killed.
pub(crate) fn end_bomb(root: &Path, why: &str) -> bool {
    let (target, msg, only) = bomb_plan(root, why);
    if std::fs::write(target.join("cgroup.kill"), b"1").is_err() {
        return false;
    }
    // The guard may trip again while the bomb dies: killed again, but said once.
    if crate::guard::bomb_ended(&target) {
        return true;
    }
    let _ = std::fs::write("/dev/kmsg", format!("firebreak: {msg}\n"));
    eprintln!("firebreak-agent: {msg}");
    crate::guard::record(msg, only);
    true
}

/// What [`end_bomb`] does: the cgroup to kill, what it says, and whose log that is for
/// (`None`: the commands running).
fn bomb_plan(root: &Path, why: &str) -> (PathBuf, String, Option<PathBuf>) {
    let culprit = busiest(root).and_then(|dir| Some((crate::guard::command(&dir)?, dir)));
    match culprit {
        Some(((_, None), dir)) => (
            dir.clone(),
            format!(
                "this command's processes {why} (a fork bomb?): they were killed; \
                 the job's other processes were not"
            ),
            Some(dir),
        ),
        Some(((label, Some(ago)), _)) => (
            root.to_path_buf(),
            format!(
                "processes that an earlier command of this job left running ({label}, which \
                 ended {:.1} s ago) {why} (a fork bomb?): every process of the job was killed",
                ago.as_secs_f64()
            ),
            None,
        ),
        None => (
            root.to_path_buf(),
            format!(
                "the job's processes {why} (a fork bomb?): every process of the job was killed"
            ),
            None,
        ),
    }
}

/// The cgroup directly below `root` holding the most processes (its own and its
/// descendants', from their `cgroup.procs`: the command cgroups have no `pids` controller of
/// their own), if any holds one.
fn busiest(root: &Path) -> Option<PathBuf> {
    let tasks = |dir: &Path| crate::thrash::pids_under(dir).len();
    std::fs::read_dir(root)
        .ok()?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .map(|d| (tasks(&d), d))
        .filter(|(n, _)| *n > 0)
        .max_by_key(|(n, _)| *n)
        .map(|(_, d)| d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job cgroup in a temp dir with command cgroups holding `tasks` processes each (in
    /// their `cgroup.procs`).
    fn job(tasks: &[(&str, u32)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        for (name, n) in tasks {
            let cg = d.path().join(name);
            std::fs::create_dir(&cg).expect("cgroup");
            let pids: String = (1..=*n).map(|p| format!("{p}\n")).collect();
            std::fs::write(cg.join("cgroup.procs"), pids).expect("cgroup.procs");
        }
        d
    }

    #[test]
    fn a_running_bomb_loses_only_its_own_processes() {
        let d = job(&[("fb-exec-1", 3), ("fb-exec-2", 2048)]);
        let (db, bomb) = (d.path().join("fb-exec-1"), d.path().join("fb-exec-2"));
        crate::guard::command_started(&db, "step 'Start the database'");
        crate::guard::command_ended(&db, false);
        crate::guard::command_started(&bomb, "step 'Run bomb'");
        let (target, msg, only) = bomb_plan(d.path(), "kept forking");
        assert_eq!(target, bomb);
        assert_eq!(only.as_deref(), Some(bomb.as_path()), "for its log alone");
        assert!(
            msg.starts_with("this command's processes kept forking (a fork bomb?)"),
            "{msg}"
        );
    }

    #[test]
    fn a_bomb_an_ended_command_left_behind_ends_the_job_and_is_named() {
        // The classic `:(){ :|:& };:` returns at once; its processes fork on in its cgroup
        // while the next step runs.
        let d = job(&[("fb-exec-1", 1900), ("fb-exec-2", 1)]);
        let (bomb, next) = (d.path().join("fb-exec-1"), d.path().join("fb-exec-2"));
        crate::guard::command_started(&bomb, "step 'Run :(){ :|:& };:'");
        crate::guard::command_ended(&bomb, false);
        crate::guard::command_started(&next, "step 'Run make test'");
        let (target, msg, only) = bomb_plan(d.path(), "kept forking");
        assert_eq!(target, d.path(), "every process of the job");
        assert_eq!(only, None, "for the running command's log");
        assert!(
            msg.starts_with(
                "processes that an earlier command of this job left running (step 'Run :(){ :|:& };:', which ended "
            ) && msg.ends_with("kept forking (a fork bomb?): every process of the job was killed"),
            "{msg}"
        );
    }

    #[test]
    fn processes_of_no_known_command_end_the_job() {
        let d = job(&[("elsewhere", 700), ("empty", 0)]);
        let (target, msg, _) = bomb_plan(d.path(), "kept forking");
        assert_eq!(target, d.path());
        assert!(msg.starts_with("the job's processes kept forking"), "{msg}");
        let none = job(&[]);
        assert_eq!(bomb_plan(none.path(), "x").0, none.path());
    }

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
