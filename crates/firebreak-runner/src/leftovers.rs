//! What processes that died leave behind — run directories, half-built images, kernels and
//! snapshots — and how a later process tells them from what a live one is still using.
//!
//! Each such entry is named with this process's [`tag`] (`<pid>-<nonce>`), so two runners
//! never pick the same name, even in different pid namespaces where both may be pid 1 (two
//! containers sharing the cache volume). A directory is [claimed](Claim) as it is made: its
//! maker holds an exclusive `flock` on `<dir>/.owner` for as long as it uses the directory,
//! and the kernel drops the lock when the process dies, however it dies (its VMs die with
//! it: see `setpriv --pdeathsig` in `firebreak-vm`). A lock is seen from every pid namespace, so an entry is
//! [abandoned] only when nobody holds its lock. An entry without the file (a symbolic link,
//! one made by an older firebreak, or one made a moment ago) goes only when it is an hour old
//! and the process its name starts with is gone.

use std::fs::File;
use std::hash::{BuildHasher, RandomState};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

/// The lock file inside a claimed directory.
const OWNER: &str = ".owner";

/// How old an entry without a lock file must be before it may go.
const UNCLAIMED_GRACE: Duration = Duration::from_secs(3600);

/// This process's tag for the names of what it makes: its process id, then a random nonce
/// drawn once per process.
pub fn tag() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        let nonce = RandomState::new().hash_one(std::process::id()) as u32;
        format!("{}-{nonce:08x}", std::process::id())
    })
}

/// Whether process `pid` is alive (in this pid namespace).
fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The process id a name's `rest` (`<pid>-…`, what follows its prefix) starts with.
fn owner_pid(rest: &str) -> Option<u32> {
    rest.split('-').next().and_then(|p| p.parse().ok())
}

/// A directory in use: an exclusive lock on its `.owner` file, held until drop.
#[derive(Debug)]
pub struct Claim {
    file: File,
    path: PathBuf,
}

impl Claim {
    /// Creates directory `dir` (and its parents) and claims it.
    pub fn create_dir(dir: &Path) -> std::io::Result<Claim> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(OWNER);
        let mut file = File::create(&path)?;
        file.try_lock().map_err(std::io::Error::from)?;
        // For people looking at the directory; the lock is what counts.
        writeln!(file, "{}", std::process::id())?;
        Ok(Claim { file, path })
    }

    /// Removes the lock file, then gives the lock up: for a directory about to be renamed
    /// into place as a finished image or snapshot, which needs no owner.
    pub fn disown(self) {
        let _ = std::fs::remove_file(&self.path);
        drop(self.file);
    }
}

/// Removes a directory when dropped unless [disarmed](Self::disarm): work that fails, or is
/// cancelled at an `.await` (its future dropped, as Ctrl-C does), leaves nothing behind.
#[derive(Debug)]
pub struct DirGuard<'a>(Option<&'a Path>);

impl<'a> DirGuard<'a> {
    pub fn new(dir: &'a Path) -> Self {
        DirGuard(Some(dir))
    }

    /// The directory is kept: something else owns (or has moved) it now.
    pub fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for DirGuard<'_> {
    fn drop(&mut self) {
        if let Some(dir) = self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Whether `path`, an entry named `<prefix><rest>` with `rest` starting with its maker's
/// tag, is abandoned: its `.owner` lock is free, or it has none, is an hour old and its
/// maker's process id is not alive here.
pub fn abandoned(path: &Path, rest: &str) -> bool {
    match File::open(path.join(OWNER)) {
        // Held for the check only; whoever removes the entry next takes it with it.
        // Busy (`WouldBlock`) or not lockable at all: left alone.
        Ok(f) => f.try_lock().is_ok(),
        Err(_) => {
            let old = std::fs::symlink_metadata(path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= UNCLAIMED_GRACE);
            old && !owner_pid(rest).is_some_and(process_alive)
        }
    }
}

/// Removes, with `remove`, the entries `<prefix><rest>` of directory `parent` for which
/// `gone(path, rest)` holds.
fn remove_where(
    parent: &Path,
    prefix: &str,
    gone: impl Fn(&Path, &str) -> bool,
    remove: impl Fn(&Path),
) {
    let Ok(rd) = std::fs::read_dir(parent) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(rest) = name.strip_prefix(prefix) {
            if gone(&e.path(), rest) {
                remove(&e.path());
            }
        }
    }
}

/// Removes, with `remove`, the entries `<prefix><tag>…` of directory `parent` that are
/// [abandoned].
pub fn remove_abandoned(parent: &Path, prefix: &str, remove: impl Fn(&Path)) {
    remove_where(parent, prefix, abandoned, remove);
}

/// Removes a directory tree, for [`new_run_dir`] where nothing can be mounted inside.
pub fn remove_tree(path: &Path) {
    let _ = std::fs::remove_dir_all(path);
}

/// Removes the `<prefix><pid>-…` entries of `parent` whose process is gone, for what cannot
/// hold a lock file (network namespaces' mount points). A process id in use again keeps its
/// dead predecessor's entries until it too is gone, and runners sharing `parent` must share
/// a pid namespace.
pub fn remove_dead(parent: &Path, prefix: &str, remove: impl Fn(&Path)) {
    let dead = |_: &Path, rest: &str| owner_pid(rest).is_some_and(|pid| !process_alive(pid));
    remove_where(parent, prefix, dead, remove);
}

/// Makes the run directory `<parent>/<prefix><tag>-<n>` and claims it, first removing with
/// `remove` the abandoned ones beside it ([`remove_tree`], or what first unmounts what a
/// dead run left mounted). The caller removes it, then drops the claim.
pub fn new_run_dir(
    parent: &Path,
    prefix: &str,
    n: u64,
    remove: impl Fn(&Path),
) -> std::io::Result<(PathBuf, Claim)> {
    remove_abandoned(parent, prefix, remove);
    let path = parent.join(format!("{prefix}{}-{n}", tag()));
    let claim = Claim::create_dir(&path)?;
    Ok((path, claim))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tag_starts_with_the_pid_and_stays_the_same() {
        let t = tag();
        assert_eq!(owner_pid(t), Some(std::process::id()));
        assert_eq!(t, tag());
        assert_eq!(t.len(), std::process::id().to_string().len() + 9);
    }

    #[test]
    fn a_claimed_directory_is_in_use_until_its_claim_is_dropped() {
        let d = tempfile::tempdir().expect("tempdir");
        // Named as a dead process would name it: the lock, not the pid, decides.
        let dir = d.path().join("fbvm-999999999-0000abcd-0");
        let claim = Claim::create_dir(&dir).expect("claim");
        assert!(!abandoned(&dir, "999999999-0000abcd-0"));
        remove_abandoned(d.path(), "fbvm-", remove_tree);
        assert!(dir.exists(), "a live claim's directory was removed");
        drop(claim);
        assert!(abandoned(&dir, "999999999-0000abcd-0"));
        remove_abandoned(d.path(), "fbvm-", remove_tree);
        assert!(!dir.exists());
    }

    #[test]
    fn a_claim_held_by_another_process_keeps_its_directory() {
        // `flock` is held by an open file description: `flock(1)` in a child process, as a
        // runner in another pid namespace would hold it.
        let d = tempfile::tempdir().expect("tempdir");
        let dir = d.path().join(".tmp-1-00000001-x");
        std::fs::create_dir(&dir).expect("mkdir");
        let owner = dir.join(OWNER);
        std::fs::write(&owner, "1\n").expect("owner");
        // `--close`: the lock stays with flock itself, not with the `sleep` it runs.
        let mut child = std::process::Command::new("flock")
            .arg("--close")
            .arg(&owner)
            .args(["sleep", "30"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("flock(1) from util-linux");
        // Until the child holds the lock, the directory looks abandoned.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while abandoned(&dir, "1-00000001-x") {
            assert!(
                std::time::Instant::now() < deadline,
                "flock never took the lock"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        remove_abandoned(d.path(), ".tmp-", remove_tree);
        assert!(dir.exists());
        let _ = child.kill();
        let _ = child.wait();
        // The lock goes with the last copy of flock's descriptor: a `sleep` forked at the
        // moment of the kill holds one until it closes it (`--close`), so allow a moment.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !abandoned(&dir, "1-00000001-x") {
            assert!(
                std::time::Instant::now() < deadline,
                "the lock outlived its holder"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn an_unclaimed_entry_goes_only_when_old_and_its_process_is_gone() {
        let d = tempfile::tempdir().expect("tempdir");
        let fresh = d.path().join("fbvm-999999999-0000abcd-0");
        let old_dead = d.path().join("fbvm-999999998-0000abcd-0");
        let old_mine = d.path().join(format!("fbvm-{}-0", tag()));
        for p in [&fresh, &old_dead, &old_mine] {
            std::fs::create_dir(p).expect("mkdir");
        }
        let hour_ago = std::time::SystemTime::now() - UNCLAIMED_GRACE - Duration::from_secs(5);
        for p in [&old_dead, &old_mine] {
            File::open(p)
                .and_then(|f| f.set_modified(hour_ago))
                .expect("set mtime");
        }
        remove_abandoned(d.path(), "fbvm-", remove_tree);
        assert!(fresh.exists(), "a directory being made was removed");
        assert!(old_mine.exists(), "a live process's directory was removed");
        assert!(!old_dead.exists());
    }

    #[test]
    fn a_new_run_dir_clears_abandoned_ones_and_not_live_ones() {
        let d = tempfile::tempdir().expect("tempdir");
        let (path, claim) = new_run_dir(d.path(), "fbvm-", 7, remove_tree).expect("run dir");
        assert!(path.ends_with(format!("fbvm-{}-7", tag())));
        let (_, _again) = new_run_dir(d.path(), "fbvm-", 8, remove_tree).expect("second");
        assert!(path.exists(), "a sibling's creation removed a live run dir");
        drop(claim);
        let (_, _third) = new_run_dir(d.path(), "fbvm-", 9, remove_tree).expect("third");
        assert!(!path.exists(), "an abandoned run dir was kept");
    }

    #[test]
    fn netns_style_entries_go_with_their_process() {
        let d = tempfile::tempdir().expect("tempdir");
        let mine = d.path().join(format!("fbns-{}-0", std::process::id()));
        let dead = d.path().join("fbns-999999999-0");
        for p in [&mine, &dead] {
            std::fs::write(p, "").expect("touch");
        }
        remove_dead(d.path(), "fbns-", |p| {
            let _ = std::fs::remove_file(p);
        });
        assert!(mine.exists() && !dead.exists());
    }
}
