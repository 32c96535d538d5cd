//! Root through `sudo` on behalf of a user: `sudo firebreak image build` (debootstrap needs
//! root) and `sudo firebreak run` (the Firecracker jailer does) use the invoking user's cache,
//! and give back what they make there, so that the user's own runs keep working. Root works
//! in a tree the user controls here, so every change goes through folder handles and never
//! through a symbolic link.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::default_cache_dir;

/// The user who ran `sudo` to make this process root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SudoUser {
    /// `$SUDO_UID`.
    pub uid: u32,
    /// `$SUDO_GID`.
    pub gid: u32,
    /// Their home directory.
    pub home: PathBuf,
}

impl SudoUser {
    /// Who ran `sudo`, if this process is root through it and they are not root themselves.
    pub fn of_this_process() -> Option<SudoUser> {
        let var = |k: &str| std::env::var(k).ok();
        SudoUser::from_parts(
            nix::unistd::Uid::effective().is_root(),
            var("SUDO_UID").as_deref(),
            var("SUDO_GID").as_deref(),
            |uid| {
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map(|u| u.dir)
            },
        )
    }

    fn from_parts(
        root: bool,
        uid: Option<&str>,
        gid: Option<&str>,
        home_of: impl FnOnce(u32) -> Option<PathBuf>,
    ) -> Option<SudoUser> {
        let uid: u32 = uid?.parse().ok()?;
        let gid: u32 = gid?.parse().ok()?;
        if !root || uid == 0 {
            return None;
        }
        let home = home_of(uid).filter(|h| h.is_absolute())?;
        Some(SudoUser { uid, gid, home })
    }

    /// Gives `path` (and, with `recursive`, all it holds) to this user, if it lies inside
    /// their home. Root does this in a tree the user controls, so nothing is reached through
    /// a path: every folder is opened below the home's handle with `O_NOFOLLOW`, entries are
    /// changed through their folder's handle, and a symbolic link is never followed (only
    /// its own owner changes). Best effort: what cannot be reached is left as it is.
    pub(super) fn give(&self, path: &Path, recursive: bool) {
        if let Some((dir, name)) = self.open_parent(path) {
            self.give_at(&dir, name, recursive);
        }
    }

    /// Gives every folder from `from` up to (not including) the home that belongs to root.
    pub(super) fn give_folders_up_to_home(&self, from: &Path) {
        let mut up = Some(from);
        while let Some(d) = up.filter(|d| *d != self.home && d.starts_with(&self.home)) {
            if self.root_owns(d) {
                self.give(d, false);
            }
            up = d.parent();
        }
    }

    /// Whether `path` (inside the home; not followed if a link) belongs to root.
    fn root_owns(&self, path: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        self.open_parent(path).is_some_and(|(dir, name)| {
            std::fs::symlink_metadata(at(&dir, name)).is_ok_and(|m| m.uid() == 0)
        })
    }

    /// The folder holding `path` (inside the home), opened safely, and `path`'s name in it.
    fn open_parent<'p>(&self, path: &'p Path) -> Option<(File, &'p OsStr)> {
        let rel = path.strip_prefix(&self.home).ok()?;
        let dir = self.open_below(rel.parent()?)?;
        Some((dir, rel.file_name()?))
    }

    /// The folder `rel` below the home, opened one component at a time without following
    /// a link.
    fn open_below(&self, rel: &Path) -> Option<File> {
        let mut dir = open_dir(&self.home, false)?;
        for c in rel.components() {
            let std::path::Component::Normal(name) = c else {
                return None;
            };
            dir = open_dir(&at(&dir, name), true)?;
        }
        Some(dir)
    }

    fn give_at(&self, dir: &File, name: &OsStr, recursive: bool) {
        let (uid, gid) = (Some(self.uid), Some(self.gid));
        match open_dir(&at(dir, name), true) {
            // A folder: changed through the handle opened, then what it holds.
            Some(sub) => {
                let _ = std::os::unix::fs::fchown(&sub, uid, gid);
                if recursive {
                    for entry in entries(&sub) {
                        self.give_at(&sub, &entry, true);
                    }
                }
            }
            // A file or a link (the link itself).
            None => {
                let _ = std::os::unix::fs::lchown(at(dir, name), uid, gid);
            }
        }
    }
}

/// `name` in the folder open as `dir`, as a path the kernel resolves from that handle
/// (`/proc/self/fd/N/name`), not from the folder's path, which the user could swap for a
/// link meanwhile.
fn at(dir: &File, name: &OsStr) -> PathBuf {
    Path::new(&format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name)
}

/// Opens the folder at `path`; with `nofollow`, not if its last component is a link.
fn open_dir(path: &Path, nofollow: bool) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut flags = nix::libc::O_DIRECTORY | nix::libc::O_CLOEXEC;
    if nofollow {
        flags |= nix::libc::O_NOFOLLOW;
    }
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .ok()
}

/// The names in the folder open as `dir` (read through its handle, not its path).
fn entries(dir: &File) -> Vec<OsString> {
    std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name())
        .collect()
}

/// Under `sudo`, keeps the invoking user's default cache theirs: the folders a root run
/// makes there (`~/.cache`, the cache, `jobs`, `images`, each image's snapshots) are handed
/// to them, so that their own runs can still create job folders and take and discard
/// snapshots. Called before and after a command that writes the cache; a no-op unless this
/// is root through sudo with the default cache. Best effort: a folder that cannot be handed
/// over is left as it is.
pub fn keep_cache_the_sudo_users() {
    let Some(user) = SudoUser::of_this_process() else {
        return;
    };
    let root = default_cache_dir();
    if !root.starts_with(&user.home) || root == user.home {
        return;
    }
    let names = |dir: &Path| -> Vec<OsString> {
        let Ok(rel) = dir.strip_prefix(&user.home) else {
            return Vec::new();
        };
        user.open_below(rel)
            .map(|fd| entries(&fd))
            .unwrap_or_default()
    };
    user.give_folders_up_to_home(&root);
    // (path, with what it holds)
    let mut todo: Vec<(PathBuf, bool)> = Vec::new();
    // The cache's own entries (`jobs`, `images`, the KVM probe's record…) but the build
    // caches only a root build uses; what a run left in `jobs`; each image's snapshots.
    for name in names(&root) {
        if !["bases", "debs", "kernels"].iter().any(|b| name == *b) {
            todo.push((root.join(name), false));
        }
    }
    for name in names(&root.join("jobs")) {
        todo.push((root.join("jobs").join(name), true));
    }
    for image in names(&root.join("images")) {
        for sub in ["snapshots", "firecracker-snapshots"] {
            let d = root.join("images").join(&image).join(sub);
            for snap in names(&d) {
                todo.push((d.join(snap), true));
            }
            todo.push((d, false));
        }
    }
    for (path, whole) in todo {
        if user.root_owns(&path) {
            user.give(&path, whole);
        }
    }
}

#[cfg(test)]
mod tests {
    /// Root through `sudo` by a user with a home: that user; anything else: nobody.
    #[test]
    fn the_sudo_user_is_known_only_when_root_through_sudo() {
        use super::SudoUser;
        let home = |_| Some(std::path::PathBuf::from("/home/dev"));
        assert_eq!(
            SudoUser::from_parts(true, Some("1000"), Some("1001"), home),
            Some(SudoUser {
                uid: 1000,
                gid: 1001,
                home: "/home/dev".into()
            })
        );
        assert_eq!(
            SudoUser::from_parts(false, Some("1000"), Some("1000"), home),
            None
        );
        assert_eq!(SudoUser::from_parts(true, Some("0"), Some("0"), home), None);
        assert_eq!(SudoUser::from_parts(true, None, None, home), None);
        assert_eq!(
            SudoUser::from_parts(true, Some("x"), Some("1000"), home),
            None
        );
        assert_eq!(
            SudoUser::from_parts(true, Some("1000"), Some("1000"), |_| None),
            None
        );
    }
}
