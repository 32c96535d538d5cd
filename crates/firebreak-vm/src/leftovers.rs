//! What processes that died leave behind: run directories and half-written
//! files named after the process id of their maker, removed once that
//! process is gone (their VMs died with it: see `setpriv --pdeathsig`).

use std::path::Path;

/// Whether process `pid` is alive.
pub(crate) fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Whether the process whose id starts `rest` (`<pid>-…`) is alive; `false` when `rest`
/// starts with no process id.
pub(crate) fn owner_alive(rest: &str) -> bool {
    owner_pid(rest).is_some_and(process_alive)
}

fn owner_pid(rest: &str) -> Option<u32> {
    rest.split('-').next().and_then(|p| p.parse().ok())
}

/// Removes, with `remove`, the entries `<prefix><pid>-…` of directory `parent` whose
/// process is gone (entries without a process id are left alone).
pub(crate) fn remove_dead(parent: &Path, prefix: &str, remove: impl Fn(&Path)) {
    let Ok(rd) = std::fs::read_dir(parent) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let dead = name
            .strip_prefix(prefix)
            .and_then(owner_pid)
            .is_some_and(|pid| !process_alive(pid));
        if dead {
            remove(&e.path());
        }
    }
}

/// Removes the `<prefix><pid>-<n>` directories in `parent` whose process is gone.
pub(crate) fn remove_dead_run_dirs(parent: &Path, prefix: &str) {
    remove_dead(parent, prefix, |p| {
        let _ = std::fs::remove_dir_all(p);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_directories_of_dead_processes_go() {
        let d = tempfile::tempdir().expect("tempdir");
        let mine = d.path().join(format!("fbvm-{}-0", std::process::id()));
        let dead = d.path().join("fbvm-999999999-0");
        let other = d.path().join("fcvm-999999999-0");
        for p in [&mine, &dead, &other] {
            std::fs::create_dir(p).expect("mkdir");
        }
        remove_dead_run_dirs(d.path(), "fbvm-");
        assert!(mine.exists() && other.exists());
        assert!(!dead.exists());
    }
}
