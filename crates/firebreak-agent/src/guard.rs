//! What the agent's guards ([`crate::thrash`], [`crate::forkguard`]) did, for the logs of
//! the commands that were running: a command they killed (or whose process they killed)
//! ends with a line on its stderr saying why, where a bare "killed by signal 9" would
//! leave the user guessing.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How many actions are remembered (older ones are dropped).
const KEPT: usize = 16;

static ACTIONS: Mutex<Vec<(Instant, String)>> = Mutex::new(Vec::new());

/// Remembers that a guard acted, with what it says.
pub fn record(msg: String) {
    let mut a = ACTIONS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if a.len() >= KEPT {
        a.remove(0);
    }
    a.push((Instant::now(), msg));
}

/// What the guards said since `t` (a command's start), oldest first.
pub fn since(t: Instant) -> Vec<String> {
    let a = ACTIONS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    a.iter()
        .filter(|(at, _)| *at >= t)
        .map(|(_, m)| m.clone())
        .collect()
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
    fn a_command_hears_only_of_what_happened_while_it_ran() {
        record("before".into());
        let start = Instant::now();
        record("during".into());
        let heard = since(start);
        assert!(heard.contains(&"during".to_string()), "{heard:?}");
        assert!(!heard.contains(&"before".to_string()), "{heard:?}");
    }
}
