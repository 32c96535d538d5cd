//! Which image a run boots, and keeping it on disk while the run uses it.
//!
//! A run picks its image once ([`ImageChoice`]) and holds it ([`ImageHold`]): a shared
//! `flock` on `<image>/.in-use`, which the kernel drops when the process ends, however it
//! ends. [`super::ImageStore::prune`] removes an image only under an exclusive lock on the
//! same file, so it skips an image some run holds, and a run that asks for an image while a
//! prune removes it waits for the prune and then reports the image gone.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::{Image, ImageError, ImageStore};

/// The lock file inside an image's directory.
pub(super) const IN_USE: &str = ".in-use";

/// A shared lock on an image: while one exists, `prune` leaves the image and its snapshots
/// alone. Without one (`None`: the image is in a cache this user cannot write, and has no
/// lock file yet) the image is used all the same.
#[derive(Debug)]
pub struct ImageHold {
    _file: Option<File>,
}

/// The image's lock file, opened ([`open_lock_file`]); a missing image directory is
/// [`ImageError::Removed`].
fn open_lock(image: &Image) -> Result<Option<File>, ImageError> {
    let path = image.dir.join(IN_USE);
    open_lock_file(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ImageError::Removed(image.dir.clone()),
        _ => ImageError::Io {
            op: "open",
            path: path.clone(),
            source: e,
        },
    })
}

/// A lock file, opened: read-only when it exists (a lock needs no more, so lock files root
/// made serve other users), else created. `None` when it is missing and cannot be made (a
/// cache this user cannot write).
pub(super) fn open_lock_file(path: &Path) -> std::io::Result<Option<File>> {
    match File::open(path) {
        Ok(f) => return Ok(Some(f)),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    match OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
    {
        Ok(f) => Ok(Some(f)),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Takes `file`'s exclusive lock without waiting: false when someone holds it.
pub(super) fn try_exclusive(file: &File, path: &Path) -> Result<bool, ImageError> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(std::fs::TryLockError::WouldBlock) => Ok(false),
        Err(std::fs::TryLockError::Error(e)) => Err(ImageError::Io {
            op: "lock",
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

/// What [`Image::lock_unused`] found.
pub(super) enum Unused {
    /// No run holds the image: the lock (if there is a lock file) is kept while it lasts.
    Yes(Option<File>),
    /// A run holds it.
    InUse,
}

impl Image {
    /// Holds the image for as long as the returned value lives. Waits while a prune is
    /// removing it, then fails with [`ImageError::Removed`].
    pub fn hold(&self) -> Result<ImageHold, ImageError> {
        let file = open_lock(self)?;
        if let Some(f) = &file {
            f.lock_shared().map_err(|e| ImageError::Io {
                op: "lock",
                path: self.dir.join(IN_USE),
                source: e,
            })?;
        }
        if !self.dir.join("manifest.json").is_file() {
            return Err(ImageError::Removed(self.dir.clone()));
        }
        Ok(ImageHold { _file: file })
    }

    /// An exclusive lock on the image when no run holds it, for a prune to keep while it
    /// removes the image or its snapshots. A dry run (`create` false) makes no lock file:
    /// where there is none, no run holds the image.
    pub(super) fn lock_unused(&self, create: bool) -> Result<Unused, ImageError> {
        let file = if create {
            open_lock(self)?
        } else {
            File::open(self.dir.join(IN_USE)).ok()
        };
        let Some(file) = file else {
            return Ok(Unused::Yes(None));
        };
        if try_exclusive(&file, &self.dir.join(IN_USE))? {
            Ok(Unused::Yes(Some(file)))
        } else {
            Ok(Unused::InUse)
        }
    }
}

/// The image a sandbox provider boots: the one whose hash starts with the prefix it was
/// given, else the default one ([`ImageStore::latest`]). Resolved at first use and then held for the provider's lifetime,
/// so that every job of a run boots the same image (an image built meanwhile is for the next
/// run) and no prune removes it under the run.
#[derive(Debug, Clone)]
pub struct ImageChoice {
    store: ImageStore,
    wanted: Option<String>,
    chosen: Arc<Mutex<Option<Held>>>,
}

/// An image picked, and the lock that keeps it.
#[derive(Debug)]
struct Held {
    image: Image,
    _hold: ImageHold,
}

impl ImageChoice {
    pub fn new(store: ImageStore, wanted: Option<String>) -> Self {
        ImageChoice {
            store,
            wanted,
            chosen: Arc::default(),
        }
    }

    /// The image, resolved and held on the first call. An error (no image yet) is not
    /// remembered: a later call looks again.
    pub fn image(&self) -> Result<Image, String> {
        let mut chosen = self
            .chosen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(held) = chosen.as_ref() {
            return Ok(held.image.clone());
        }
        let image = self
            .store
            .choose(self.wanted.as_deref())
            .map_err(|e| e.to_string())?;
        let hold = image.hold().map_err(|e| e.to_string())?;
        *chosen = Some(Held {
            image: image.clone(),
            _hold: hold,
        });
        Ok(image)
    }
}
