//! What the agent's guards ([`crate::thrash`], [`crate::forkguard`]) did, for the logs of
//! the commands that were running: a command they killed (or whose process they killed)
//! ends with a line on its stderr saying why, where a bare "killed by signal 9" would
//! leave the user guessing. Also which command each exec cgroup belongs to, so that a guard
//! can name the command whose processes it ended, running or long finished.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// How many actions are remembered (older ones are dropped).
const KEPT: usize = 16;

/// Longest label kept for a command (longer ones are cut, with `…`).
const LABEL_CHARS: usize = 120;

/// One guard action: when, what it says, and whose log it is for (`None`: every command
/// running then).
struct Action {
    at: Instant,
    msg: String,
    only: Option<PathBuf>,
}

static ACTIONS: Mutex<Vec<Action>> = Mutex::new(Vec::new());

/// The commands whose cgroups exist, in the order they started.
static COMMANDS: Mutex<Vec<Command>> = Mutex::new(Vec::new());

/// A command the agent started in its own cgroup.
struct Command {
    cgroup: PathBuf,
    label: String,
    /// When its main process exited; its cgroup may still hold processes it left running.
    ended: Option<Instant>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Remembers that a guard acted, with what it says: for the log of the command whose
/// cgroup is `only`, or of every command running then.
pub fn record(msg: String, only: Option<PathBuf>) {
    let mut a = locked(&ACTIONS);
    if a.len() >= KEPT {
        a.remove(0);
    }
    a.push(Action {
        at: Instant::now(),
        msg,
        only,
    });
}

/// What the guards said since `t` (a command's start) for the command in `cgroup`, oldest
/// first.
pub fn since(t: Instant, cgroup: Option<&Path>) -> Vec<String> {
    locked(&ACTIONS)
        .iter()
        .filter(|a| a.at >= t)
        .filter(|a| a.only.is_none() || a.only.as_deref() == cgroup)
        .map(|a| a.msg.clone())
        .collect()
}

/// Notes that the command `label` (the host's name for it, or its argv) runs in `cgroup`.
pub fn command_started(cgroup: &Path, label: &str) {
    let label = match label.char_indices().nth(LABEL_CHARS) {
        Some((cut, _)) => format!("{}…", &label[..cut]),
        None => label.to_string(),
    };
    locked(&COMMANDS).push(Command {
        cgroup: cgroup.to_path_buf(),
        label,
        ended: None,
    });
}

/// Notes that the main process of the command in `cgroup` exited (the first call counts);
/// `removed` when its cgroup went with it (nothing was left running), so it is forgotten.
pub fn command_ended(cgroup: &Path, removed: bool) {
    let mut cmds = locked(&COMMANDS);
    if removed {
        cmds.retain(|c| c.cgroup != cgroup);
    } else if let Some(c) = cmds.iter_mut().find(|c| c.cgroup == cgroup) {
        c.ended.get_or_insert_with(Instant::now);
    }
}

/// The command whose cgroup is `cgroup`: its label, and how long ago it ended (`None`
/// while it runs).
pub fn command(cgroup: &Path) -> Option<(String, Option<Duration>)> {
    locked(&COMMANDS)
        .iter()
        .find(|c| c.cgroup == cgroup)
        .map(|c| (c.label.clone(), c.ended.map(|t| t.elapsed())))
}

/// The cgroup a guard last ended a fork bomb in ([`bomb_ended`]), and when.
static BOMB_ENDED: Mutex<Option<(PathBuf, Instant)>> = Mutex::new(None);

/// How long a bomb ended in a cgroup counts as the same bomb when the guard trips on that
/// cgroup again: thousands of processes take seconds to die under emulation.
const SAME_BOMB: Duration = Duration::from_secs(30);

/// Notes that a guard just ended a fork bomb by killing the cgroup `target`; true when it
/// ended one there less than [`SAME_BOMB`] ago (the same bomb, still dying: said once).
pub fn bomb_ended(target: &Path) -> bool {
    let mut last = locked(&BOMB_ENDED);
    let again = last
        .as_ref()
        .is_some_and(|(t, at)| t == target && at.elapsed() < SAME_BOMB);
    *last = Some((target.to_path_buf(), Instant::now()));
    again
}

/// Whether a guard ended a fork bomb less than `within` ago: the stall it caused then
/// lingers in the memory pressure counters, and is no reason to kill what survived it.
pub fn bomb_ended_within(within: Duration) -> bool {
    locked(&BOMB_ENDED)
        .as_ref()
        .is_some_and(|(_, t)| t.elapsed() < within)
}

/// Counts bad seconds in a row; trips at `needed` and starts over.
#[derive(Debug, Default)]
pub(crate) struct Streak(u32);

impl Streak {
    /// Adds a second (`bad` or not); true when it makes `needed` bad ones in a row.
    pub(crate) fn add(&mut self, bad: bool, needed: u32) -> bool {
        self.0 = if bad { self.0 + 1 } else { 0 };
        if self.0 >= needed {
            self.0 = 0;
            return true;
        }
        false
    }
}

/// Starts a guard (once: `started` remembers it): a thread named `name` that reads the job
/// cgroup's `file` under `root` every second and hands its text to `check`. Nothing starts
/// when the file is not there (the controller is missing).
pub(crate) fn watch(
    started: &'static OnceLock<()>,
    name: &str,
    root: PathBuf,
    file: &'static str,
    mut check: impl FnMut(&Path, &str) + Send + 'static,
) {
    if started.set(()).is_err() || !root.join(file).is_file() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_secs(1));
            if let Ok(text) = std::fs::read_to_string(root.join(file)) {
                check(&root, &text);
            }
        });
    if let Err(e) = spawned {
        eprintln!("firebreak-agent: no {name}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_hears_only_of_what_happened_while_it_ran_and_was_meant_for_it() {
        record("before".into(), None);
        let start = Instant::now();
        record("during".into(), None);
        record("for it".into(), Some(PathBuf::from("/cg/fb-exec-a")));
        record("for another".into(), Some(PathBuf::from("/cg/fb-exec-b")));
        let heard = since(start, Some(Path::new("/cg/fb-exec-a")));
        assert_eq!(heard, ["during", "for it"], "{heard:?}");
        assert_eq!(since(start, None), ["during"]);
    }

    #[test]
    fn commands_are_known_by_cgroup_until_their_cgroup_goes() {
        let (a, b) = (Path::new("/cg/t-1"), Path::new("/cg/t-2"));
        command_started(a, "Run make");
        command_started(b, &"x".repeat(300));
        assert_eq!(command(a).map(|c| c.1.is_none()), Some(true), "running");
        command_ended(a, false);
        let (label, ended) = command(a).expect("still known: its cgroup holds processes");
        assert_eq!(label, "Run make");
        assert!(ended.is_some());
        let (long, _) = command(b).expect("b");
        assert_eq!(
            long.chars().count(),
            LABEL_CHARS + 1,
            "cut with an ellipsis"
        );
        command_ended(b, true);
        assert!(command(b).is_none());
    }
}
