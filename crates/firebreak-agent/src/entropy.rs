//! Fresh randomness for a guest restored from a snapshot.
//!
//! Every clone of a snapshot starts with the same kernel CRNG state. Writing the host's seed to
//! `/dev/urandom` mixes it into the input pool, but Linux only reseeds the CRNG from that pool
//! on its own schedule (every few seconds of guest uptime early after boot, every minute later),
//! and a clone's clock resumes at the snapshot's instant: until then two clones read the same
//! bytes from `/dev/urandom`. `RNDRESEEDCRNG` makes the kernel reseed at once. (Firecracker's
//! documentation gives the same advice for clones without VMGENID.)

use std::io::Write;
use std::os::fd::AsRawFd;

#[allow(unsafe_code)]
mod sys {
    // RNDRESEEDCRNG = _IO('R', 0x07), <linux/random.h>.
    nix::ioctl_none!(rnd_reseed_crng, b'R', 0x07);

    /// Reseeds the kernel's CRNG from its input pool (needs CAP_SYS_ADMIN).
    pub fn reseed(fd: std::os::fd::RawFd) -> nix::Result<()> {
        // SAFETY: RNDRESEEDCRNG takes no argument and touches no user memory; `fd` is an open
        // descriptor of a random device for the whole call.
        unsafe { rnd_reseed_crng(fd) }.map(|_| ())
    }
}

/// Mixes `seed` into the kernel's entropy pool and, with `reseed`, makes the CRNG reseed from it
/// now, so that what `/dev/urandom` returns next depends on `seed`.
pub fn add(seed: &[u8], reseed: bool) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/urandom")?;
    f.write_all(seed)?;
    if reseed {
        sys::reseed(f.as_raw_fd()).map_err(|e| {
            std::io::Error::other(format!("reseeding the kernel's random generator: {e}"))
        })?;
    }
    Ok(())
}
