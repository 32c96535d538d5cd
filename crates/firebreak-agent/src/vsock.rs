//! Serving the agent on vsock (Firecracker).
//!
//! Under Firecracker the host reaches the guest through a virtio-vsock
//! device: the host connects to the device's Unix socket and asks for a guest
//! port (`CONNECT <port>\n`), and the guest sees an ordinary `AF_VSOCK`
//! connection on that port. [`serve_vsock`] listens on
//! `VMADDR_CID_ANY:<port>` and runs one [`serve`](crate::serve()) session per
//! connection, concurrently: after a snapshot restore the old connection is
//! reset by the device and the host simply connects again.
//!
//! The socket calls are done by the `tokio-vsock` crate, so this module needs
//! no `unsafe`.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_vsock::{VsockAddr, VsockListener, VMADDR_CID_ANY};

use crate::server::{serve, AgentConfig, SessionEnd};

/// Kernel command-line word that selects vsock and its port
/// (`firebreak.vsock=1024`); the initramfs loads the vsock modules when it
/// is present.
pub const CMDLINE_FLAG: &str = "firebreak.vsock";

/// Parses the vsock port from a kernel command line (`firebreak.vsock=N`).
pub fn port_from_cmdline(cmdline: &str) -> Option<u32> {
    cmdline.split_whitespace().find_map(|w| {
        w.strip_prefix(CMDLINE_FLAG)?
            .strip_prefix('=')?
            .parse::<u32>()
            .ok()
    })
}

/// Listens on vsock `port` (any CID) and serves every connection until one
/// session asks for shutdown, which is returned as [`SessionEnd::Shutdown`].
/// `on_session` is told about each session's end (for logging).
pub async fn serve_vsock(
    port: u32,
    cfg: Arc<AgentConfig>,
    on_session: impl Fn(Result<SessionEnd, String>) + Send + Sync + 'static,
) -> std::io::Result<SessionEnd> {
    let listener = VsockListener::bind(VsockAddr::new(VMADDR_CID_ANY, port))?;
    let on_session = Arc::new(on_session);
    let (tx, mut rx) = mpsc::channel::<()>(1);
    loop {
        let (stream, _peer) = tokio::select! {
            r = listener.accept() => r?,
            _ = rx.recv() => return Ok(SessionEnd::Shutdown),
        };
        let (r, w) = stream.into_split();
        let cfg = cfg.clone();
        let tx = tx.clone();
        let on_session = on_session.clone();
        tokio::spawn(async move {
            let end = serve(r, w, cfg).await;
            let shutdown = matches!(end, Ok(SessionEnd::Shutdown));
            on_session(end.map_err(|e| e.to_string()));
            if shutdown {
                let _ = tx.send(()).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_is_read_from_the_kernel_command_line() {
        assert_eq!(
            port_from_cmdline("console=ttyS0 firebreak.vsock=1024 quiet"),
            Some(1024)
        );
        assert_eq!(port_from_cmdline("firebreak.vsockx=1 quiet"), None);
        assert_eq!(port_from_cmdline("firebreak.vsock=abc"), None);
        assert_eq!(port_from_cmdline("console=ttyS0"), None);
    }
}
