//! Staging the repository for `actions/checkout`: the working tree (tracked and
//! untracked-but-not-ignored files, plus `.git`) hard-linked into a tree that is cached under
//! `REPO/.firebreak/stage/<key>/` and reused while no file changes, so that each job's
//! workspace can be a copy-on-write overlay of it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

/// The working tree's file list (tracked + untracked-not-ignored), NUL-separated, as git
/// prints it; `None` when git cannot list it (not a repository, no git).
fn ls_files(repo: &Path) -> Option<Vec<u8>> {
    Command::new("git")
        .arg("-C")
        .arg(repo)
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| o.stdout)
}

/// The entries of a `git ls-files -z` listing that are staged (everything outside
/// `.firebreak/`).
fn listed_entries(list: &[u8]) -> impl Iterator<Item = String> + '_ {
    list.split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|rel| String::from_utf8_lossy(rel).into_owned())
        .filter(|rel| !rel.starts_with(".firebreak/"))
}

/// Bumped whenever what a staged tree contains changes; part of every stage key.
const STAGE_FORMAT: &str = "firebreak-stage-1";
/// Staged trees kept in `<repo>/.firebreak/stage/` (the most recently used ones).
const STAGES_KEPT: usize = 2;

/// Stage-cache files held open (shared `flock`) for the whole run, so that a concurrent
/// run pruning old stages never deletes one this run mounts or copies from.
static STAGES_IN_USE: std::sync::Mutex<Vec<std::fs::File>> = std::sync::Mutex::new(Vec::new());

/// A 128-bit key from two differently seeded SipHashers (not cryptographic: it only has
/// to change when the working tree does).
struct KeyHasher(std::hash::DefaultHasher, std::hash::DefaultHasher);

impl KeyHasher {
    fn new() -> Self {
        use std::hash::Hasher;
        let mut b = std::hash::DefaultHasher::new();
        b.write(b"second half");
        KeyHasher(std::hash::DefaultHasher::new(), b)
    }
    fn bytes(&mut self, b: &[u8]) {
        use std::hash::Hasher;
        self.0.write(b);
        self.0.write_u8(0xff);
        self.1.write(b);
        self.1.write_u8(0xff);
    }
    fn num(&mut self, n: u64) {
        self.bytes(&n.to_le_bytes());
    }
    fn hex(&self) -> String {
        use std::hash::Hasher;
        format!("{:016x}{:016x}", self.0.finish(), self.1.finish())
    }
}

/// Feeds what identifies `path`'s current content: (size, mtime in ns, inode, mode) — not
/// its ctime or link count, which staging itself changes by hard-linking — and, for a
/// folder (`.git`, a nested repository listed as one entry), every entry below it.
fn key_path(h: &mut KeyHasher, path: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(md) = std::fs::symlink_metadata(path) else {
        h.bytes(b"missing");
        return;
    };
    h.num(md.mode().into());
    if md.is_dir() {
        let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(path)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        names.sort();
        for n in names {
            h.bytes(n.as_encoded_bytes());
            key_path(h, &path.join(&n));
        }
        h.bytes(b"end of folder");
        return;
    }
    h.num(md.size());
    h.num(md.mtime() as u64);
    h.num(md.mtime_nsec() as u64);
    h.num(md.ino());
    if md.file_type().is_symlink() {
        if let Ok(t) = std::fs::read_link(path) {
            h.bytes(t.as_os_str().as_encoded_bytes());
        }
    }
}

/// The stage-cache key of the working tree described by `list` (plus `.git`).
fn stage_key(repo: &Path, list: &[u8]) -> String {
    let mut h = KeyHasher::new();
    h.bytes(STAGE_FORMAT.as_bytes());
    h.bytes(repo.as_os_str().as_encoded_bytes());
    for rel in listed_entries(list) {
        h.bytes(rel.as_bytes());
        key_path(&mut h, &repo.join(&rel));
    }
    h.bytes(b".git");
    key_path(&mut h, &repo.join(".git"));
    h.hex()
}

/// The folder `actions/checkout` checks out from: the working tree staged in
/// `<repo>/.firebreak/stage/<key>/`, reused as is when nothing in the working tree or in
/// `.git` changed since it was staged (the key hashes the file list and every file's size,
/// mtime, inode and mode), else staged there now. When the repository is not writable (or
/// git cannot list it), the tree is staged into `per_run` instead, which the caller removes.
pub(super) fn staged_source(repo: &Path, per_run: &Path) -> Result<PathBuf> {
    let Some(list) = ls_files(repo) else {
        stage_source(repo, None, per_run)?;
        return Ok(per_run.to_path_buf());
    };
    let key = stage_key(repo, &list);
    let base = repo.join(".firebreak/stage");
    if std::fs::create_dir_all(&base).is_err() {
        stage_source(repo, Some(&list), per_run)?;
        return Ok(per_run.to_path_buf());
    }
    let _ = std::fs::write(repo.join(".firebreak/.gitignore"), "*\n");
    let dir = base.join(&key);
    if !dir.is_dir() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let tmp = base.join(format!(".{key}.tmp-{}-{nanos}", std::process::id()));
        if let Err(e) = stage_source(repo, Some(&list), &tmp) {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        if std::fs::rename(&tmp, &dir).is_err() {
            if !dir.is_dir() {
                let _ = std::fs::remove_dir_all(&tmp);
                anyhow::bail!("cannot move the staged tree to {}", dir.display());
            }
            // A concurrent run staged the same tree first: use theirs.
            remove_in_background(vec![tmp]);
        }
    }
    mark_stage_used(&base, &key);
    prune_stages(&base, &key);
    Ok(dir)
}

/// Records that `key` was used now (the `<key>.used` file's mtime) and holds a shared lock
/// on that file until the process ends.
fn mark_stage_used(base: &Path, key: &str) {
    let used = base.join(format!("{key}.used"));
    if let Ok(f) = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&used)
    {
        let _ = f.set_modified(std::time::SystemTime::now());
        let _ = f.lock_shared();
        if let Ok(mut held) = STAGES_IN_USE.lock() {
            held.push(f);
        }
    }
}

/// Keeps the [`STAGES_KEPT`] most recently used staged trees (and any another run is using);
/// older ones are renamed away at once and deleted by a background thread, off the hot path.
fn prune_stages(base: &Path, current: &str) {
    let Ok(rd) = std::fs::read_dir(base) else {
        return;
    };
    let mut stages: Vec<(std::time::SystemTime, String)> = Vec::new();
    let mut doomed: Vec<PathBuf> = Vec::new();
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(".trash-") {
            doomed.push(e.path());
        } else if name.starts_with('.') && name.contains(".tmp-") {
            // an interrupted staging (or one under way in another run: leave recent ones)
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .map(|t| t < hour_ago)
                .unwrap_or(false);
            if old {
                doomed.push(e.path());
            }
        } else if name.len() == 32
            && name.bytes().all(|b| b.is_ascii_hexdigit())
            && e.file_type().map(|t| t.is_dir()).unwrap_or(false)
        {
            let used = std::fs::metadata(base.join(format!("{name}.used")))
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            stages.push((used, name));
        } else if let Some(k) = name.strip_suffix(".used") {
            if !base.join(k).is_dir() {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    stages.sort_by_key(|s| std::cmp::Reverse(s.0));
    let mut kept = usize::from(stages.iter().any(|s| s.1 == current));
    for (_, key) in stages {
        if key == current {
            continue;
        }
        if kept < STAGES_KEPT {
            kept += 1;
            continue;
        }
        let used = base.join(format!("{key}.used"));
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&used);
        let Ok(lock) = lock else { continue };
        if lock.try_lock().is_err() {
            continue; // another run is using it
        }
        let trash = base.join(format!(".trash-{key}-{}", std::process::id()));
        if std::fs::rename(base.join(&key), &trash).is_ok() {
            let _ = std::fs::remove_file(&used);
            doomed.push(trash);
        }
    }
    remove_in_background(doomed);
}

/// Deletes folders on a background thread (what is left when the process exits first is
/// deleted by a later run's pruning).
fn remove_in_background(dirs: Vec<PathBuf>) {
    if dirs.is_empty() {
        return;
    }
    let _ = std::thread::Builder::new()
        .name("firebreak-prune".into())
        .spawn(move || {
            for d in dirs {
                let _ = std::fs::remove_dir_all(&d);
            }
        });
}

/// Copies the working tree (tracked + untracked-not-ignored files, `.git`) to `dest`: the
/// files in `list` (a `git ls-files -z` listing), or everything but `.firebreak` without one.
fn stage_source(repo: &Path, list: Option<&[u8]>, dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest)?;
    match list {
        Some(list) => {
            // `dest` is fresh: create each folder once, never remove anything first.
            let mut made: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
            made.insert(dest.to_path_buf());
            for rel in listed_entries(list) {
                let to = dest.join(&rel);
                if let Some(parent) = to.parent() {
                    if !made.contains(parent) {
                        std::fs::create_dir_all(parent)?;
                        made.extend(parent.ancestors().map(Path::to_path_buf));
                    }
                }
                copy_entry(&repo.join(&rel), &to)?;
            }
            let dotgit = repo.join(".git");
            if dotgit.is_dir() {
                copy_tree(&dotgit, &dest.join(".git"), &|_| true)?;
            } else if dotgit.is_file() {
                copy_entry(&dotgit, &dest.join(".git"))?;
            }
        }
        None => copy_tree(repo, dest, &|p: &Path| {
            p.file_name().is_none_or(|n| n != ".firebreak")
        })?,
    }
    Ok(())
}

/// Copies one file, symlink or folder to `dst` (whose parent exists and which does not).
fn copy_entry(src: &Path, dst: &Path) -> Result<()> {
    let Ok(md) = std::fs::symlink_metadata(src) else {
        return Ok(());
    }; // deleted but still in the index
    if md.file_type().is_symlink() {
        let target = std::fs::read_link(src)?;
        std::os::unix::fs::symlink(target, dst)?;
    } else if md.is_file() {
        // The staged tree is only ever read (each job gets its own copy), so a hard link is
        // enough where the file system allows one.
        if std::fs::hard_link(src, dst).is_err() {
            std::fs::copy(src, dst).with_context(|| format!("copying {}", src.display()))?;
        }
    } else if md.is_dir() {
        // a submodule or nested repository listed as a directory
        copy_tree(src, dst, &|_| true)?;
    }
    Ok(())
}

fn copy_tree(src: &Path, dst: &Path, keep: &dyn Fn(&Path) -> bool) -> Result<()> {
    std::fs::create_dir_all(dst)?;
    for e in std::fs::read_dir(src)? {
        let e = e?;
        let p = e.path();
        if !keep(&p) {
            continue;
        }
        let to = dst.join(e.file_name());
        let ft = e.file_type()?;
        if ft.is_dir() {
            copy_tree(&p, &to, keep)?;
        } else {
            copy_entry(&p, &to)?;
        }
    }
    Ok(())
}
