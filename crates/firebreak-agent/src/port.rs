//! Non-blocking async I/O on a character device (the virtio-serial port).
//!
//! `tokio::fs::File` hands every read and write to a blocking thread; on a
//! port that returns a few KiB per read that costs a thread hop per chunk,
//! which is slow under TCG. Here the device is opened `O_NONBLOCK` and
//! driven by epoll through [`AsyncFd`]; one open file serves both halves.
//!
//! Not `tokio::net::unix::pipe`: it treats a short read as "drained" and
//! waits for the next edge, but a virtio port returns one queued buffer per
//! read even when more are waiting, so that stalls. Readiness here is only
//! cleared on `EAGAIN`.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The read half of a port.
#[derive(Debug)]
pub struct PortReader(Arc<AsyncFd<File>>);

/// The write half of a port.
#[derive(Debug)]
pub struct PortWriter(Arc<AsyncFd<File>>);

/// Opens `path` read-write, non-blocking, and splits it. Must be called
/// inside a tokio runtime.
pub fn open(path: &Path) -> std::io::Result<(PortReader, PortWriter)> {
    from_file(open_file(path)?)
}

/// Opens `path` read-write and non-blocking, for [`from_file`] (on a `dup` of it, so that the
/// port can stay open between sessions).
pub fn open_file(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
}

/// Wraps an already non-blocking descriptor (a device, pipe or socket).
pub fn from_file(file: File) -> std::io::Result<(PortReader, PortWriter)> {
    // `AsyncFd::new` is deprecated because a type could hand out a different
    // descriptor over time; its replacement is an `unsafe fn`, which this
    // workspace denies. `File` owns its descriptor and always returns the
    // same one, so the deprecated constructor is sound here.
    #[allow(deprecated)]
    let fd = Arc::new(AsyncFd::new(file)?);
    Ok((PortReader(fd.clone()), PortWriter(fd)))
}

impl AsyncRead for PortReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|inner| inner.get_ref().read(unfilled)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for PortWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            match guard.try_io(|inner| inner.get_ref().write(data)) {
                Ok(res) => return Poll::Ready(res),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::OwnedFd;

    #[tokio::test]
    async fn serves_the_protocol_over_a_nonblocking_fd() {
        let (a, b) = std::os::unix::net::UnixStream::pair().expect("pair");
        a.set_nonblocking(true).expect("nonblocking");
        let (r, w) = from_file(File::from(OwnedFd::from(a))).expect("wrap");
        let server = tokio::spawn(crate::serve(r, w, Arc::new(crate::AgentConfig::default())));
        b.set_nonblocking(true).expect("nonblocking");
        let b = tokio::net::UnixStream::from_std(b).expect("tokio");
        let (br, bw) = b.into_split();
        let c = crate::AgentClient::new(br, bw);
        c.hello().await.expect("hello");
        let big = vec![42u8; 3 << 20];
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f").to_string_lossy().into_owned();
        c.write_file(&p, &big, None).await.expect("write");
        assert_eq!(c.read_file(&p).await.expect("read"), Some(big));
        drop(c);
        assert_eq!(
            server.await.expect("join").expect("serve"),
            crate::SessionEnd::Closed
        );
    }
}
