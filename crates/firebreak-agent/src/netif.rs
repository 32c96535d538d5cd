//! Bringing a network interface up without `ip`: under TCG, starting `ip`
//! (a dynamically linked program, early in boot when nothing is translated
//! yet) costs more than a whole `ioctl` round of the agent's own.

use std::os::fd::AsRawFd;

use nix::libc;

#[allow(unsafe_code)]
mod sys {
    use nix::libc;
    nix::ioctl_read_bad!(get_flags, libc::SIOCGIFFLAGS, libc::ifreq);
    nix::ioctl_write_ptr_bad!(set_flags, libc::SIOCSIFFLAGS, libc::ifreq);

    /// Reads `ifr`'s interface flags into it.
    pub fn read_flags(fd: std::os::fd::RawFd, ifr: &mut libc::ifreq) -> nix::Result<()> {
        // SAFETY: SIOCGIFFLAGS reads the name from and writes the flags into the `ifreq` it is
        // given, which is a valid, exclusively borrowed struct for the whole call.
        unsafe { get_flags(fd, ifr) }.map(|_| ())
    }

    /// Sets the interface flags in `ifr`.
    pub fn write_flags(fd: std::os::fd::RawFd, ifr: &libc::ifreq) -> nix::Result<()> {
        // SAFETY: SIOCSIFFLAGS only reads the `ifreq` it is given, valid for the whole call.
        unsafe { set_flags(fd, ifr) }.map(|_| ())
    }

    /// An all-zero `ifreq`.
    pub fn zeroed_ifreq() -> libc::ifreq {
        // SAFETY: `ifreq` is plain old data (a name array and a union of integers and
        // addresses); all zeros is a valid value of it.
        unsafe { std::mem::zeroed() }
    }
}

/// Sets `IFF_UP` on interface `name` (e.g. `lo`).
pub fn set_up(name: &str) -> std::io::Result<()> {
    let bytes = name.as_bytes();
    let mut ifr = sys::zeroed_ifreq();
    if bytes.is_empty() || bytes.len() >= ifr.ifr_name.len() || bytes.contains(&0) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?}"),
        ));
    }
    for (d, s) in ifr.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // Any socket will do for interface ioctls; one bound to the wildcard
    // address works before any interface is up.
    let sock = std::net::UdpSocket::bind("0.0.0.0:0")?;
    sys::read_flags(sock.as_raw_fd(), &mut ifr)?;
    ifr.ifr_ifru.ifru_flags = read_union_flags(&ifr) | libc::IFF_UP as libc::c_short;
    sys::write_flags(sock.as_raw_fd(), &ifr)?;
    Ok(())
}

#[allow(unsafe_code)]
fn read_union_flags(ifr: &libc::ifreq) -> libc::c_short {
    // SAFETY: after SIOCGIFFLAGS the union holds `ifru_flags`; every bit
    // pattern is a valid `c_short`.
    unsafe { ifr.ifr_ifru.ifru_flags }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_names() {
        for name in ["", "a-name-longer-than-ifnamsiz", "a\0b"] {
            let e = set_up(name).expect_err(name);
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{name:?}");
        }
    }

    #[test]
    fn an_unknown_interface_is_an_error() {
        assert!(set_up("fb-no-such0").is_err());
    }

    /// Setting `lo` up again is harmless where we may (root in a test VM or
    /// container); otherwise the kernel refuses with EPERM.
    #[test]
    fn loopback_is_up_afterwards_or_refused() {
        match set_up("lo") {
            Ok(()) => {
                let flags = std::fs::read_to_string("/sys/class/net/lo/flags").expect("flags");
                let v =
                    u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).expect("hex");
                assert_ne!(v & libc::IFF_UP as u32, 0, "{flags}");
            }
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}"),
        }
    }
}
