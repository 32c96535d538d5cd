//! Byte streams from the host to a guest agent.
//!
//! The agent protocol is the same everywhere; only how the host opens the
//! stream differs:
//!
//! * [`VirtioSerialSocket`] — QEMU: a `virtserialport` backed by a Unix-socket
//!   chardev (`server=on,wait=off`); the host connects to the socket.
//! * [`FirecrackerVsock`] — Firecracker: its vsock device is a Unix socket on
//!   the host; the host writes `CONNECT <port>\n` and reads `OK <n>\n` before
//!   the stream belongs to the agent.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, Instant};

use firebreak_agent::{AgentClient, AgentInfo, ClientError};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
/// The read half of a transport.
pub type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
/// The write half of a transport.
pub type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// Errors opening a transport.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Connecting failed.
    #[error("connect to {what}: {source}")]
    Connect {
        /// The transport.
        what: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The Firecracker vsock muxer refused the port.
    #[error("vsock handshake with {what} failed: {reply:?}")]
    Handshake {
        /// The transport.
        what: String,
        /// What it answered.
        reply: String,
    },
    /// The agent did not answer the hello in time.
    #[error("agent on {what} did not answer within {waited:?}")]
    Timeout {
        /// The transport.
        what: String,
        /// How long we waited.
        waited: Duration,
    },
    /// The agent answered with an error.
    #[error("agent handshake on {what}: {source}")]
    Agent {
        /// The transport.
        what: String,
        /// Cause.
        #[source]
        source: ClientError,
    },
}

/// A way to open a byte stream to the agent.
pub trait AgentTransport: Send + Sync + std::fmt::Debug {
    /// Opens a fresh stream.
    fn connect(&self) -> BoxFuture<'_, Result<(BoxRead, BoxWrite), TransportError>>;
    /// For messages.
    fn describe(&self) -> String;
}

/// QEMU virtio-serial port behind a Unix-socket chardev.
#[derive(Debug, Clone)]
pub struct VirtioSerialSocket {
    /// The chardev's socket path.
    pub path: PathBuf,
}

impl AgentTransport for VirtioSerialSocket {
    fn connect(&self) -> BoxFuture<'_, Result<(BoxRead, BoxWrite), TransportError>> {
        Box::pin(async move {
            let s = UnixStream::connect(&self.path).await.map_err(|source| {
                TransportError::Connect {
                    what: self.describe(),
                    source,
                }
            })?;
            let (r, w) = s.into_split();
            Ok((Box::new(r) as BoxRead, Box::new(w) as BoxWrite))
        })
    }

    fn describe(&self) -> String {
        format!("virtio-serial socket {}", self.path.display())
    }
}

/// Firecracker's host-side vsock Unix socket.
#[derive(Debug, Clone)]
pub struct FirecrackerVsock {
    /// `uds_path` of the Firecracker vsock device.
    pub uds_path: PathBuf,
    /// Guest port the agent listens on.
    pub port: u32,
}

impl AgentTransport for FirecrackerVsock {
    fn connect(&self) -> BoxFuture<'_, Result<(BoxRead, BoxWrite), TransportError>> {
        Box::pin(async move {
            let what = self.describe();
            let s = UnixStream::connect(&self.uds_path)
                .await
                .map_err(|source| TransportError::Connect {
                    what: what.clone(),
                    source,
                })?;
            let (r, mut w) = s.into_split();
            w.write_all(format!("CONNECT {}\n", self.port).as_bytes())
                .await
                .map_err(|source| TransportError::Connect {
                    what: what.clone(),
                    source,
                })?;
            // Read the reply byte by byte so no agent data is swallowed.
            let mut r = BufReader::with_capacity(1, r);
            let mut line = String::new();
            r.read_line(&mut line)
                .await
                .map_err(|source| TransportError::Connect {
                    what: what.clone(),
                    source,
                })?;
            if !line.starts_with("OK ") {
                return Err(TransportError::Handshake { what, reply: line });
            }
            Ok((Box::new(r) as BoxRead, Box::new(w) as BoxWrite))
        })
    }

    fn describe(&self) -> String {
        format!(
            "firecracker vsock {} port {}",
            self.uds_path.display(),
            self.port
        )
    }
}

/// Connects to the agent and completes the hello within `timeout`,
/// reconnecting while the socket is not there yet, and when the connection is closed
/// before the agent answers. A VMM that exits closes it too: callers that watch the
/// VMM's process (the boots do) then report its exit, which says more than "connection
/// closed" (seen when QEMU 10's guests died early in boot: three attempts failed within
/// a second with nothing but that).
pub async fn connect_agent(
    t: &dyn AgentTransport,
    timeout: Duration,
) -> Result<(AgentClient, AgentInfo), TransportError> {
    let start = Instant::now();
    loop {
        let (r, w) = connect_stream(t, timeout.saturating_sub(start.elapsed())).await?;
        match handshake(t, r, w, timeout.saturating_sub(start.elapsed())).await {
            Err(TransportError::Agent {
                source: ClientError::Disconnected,
                ..
            }) if start.elapsed() + Duration::from_millis(20) < timeout => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

/// Connects `t`'s byte stream, retrying every 20 ms until `timeout` (the
/// socket appears once the VMM is up). No protocol is spoken yet.
pub async fn connect_stream(
    t: &dyn AgentTransport,
    timeout: Duration,
) -> Result<(BoxRead, BoxWrite), TransportError> {
    let start = Instant::now();
    loop {
        match t.connect().await {
            Ok(rw) => return Ok(rw),
            Err(e) => {
                if start.elapsed() >= timeout {
                    return Err(e);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// How long a hello goes unanswered before it is sent again (see
/// [`AgentClient::hello_resending`]). A restored guest answers in ~0.15 s,
/// a cold-booted one as soon as its agent runs.
pub const HELLO_RESEND: Duration = Duration::from_secs(1);

/// Starts a client on a connected stream and waits up to `timeout` for the
/// agent's answer to `hello` (resent every [`HELLO_RESEND`]).
pub async fn handshake(
    t: &dyn AgentTransport,
    r: BoxRead,
    w: BoxWrite,
    timeout: Duration,
) -> Result<(AgentClient, AgentInfo), TransportError> {
    let what = t.describe();
    let client = AgentClient::new(r, w);
    match tokio::time::timeout(timeout, client.hello_resending(HELLO_RESEND)).await {
        Ok(Ok(info)) => Ok((client, info)),
        Ok(Err(source)) => Err(TransportError::Agent { what, source }),
        Err(_) => Err(TransportError::Timeout {
            what,
            waited: timeout,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::io::AsyncReadExt;
    use tokio::net::UnixListener;

    #[tokio::test]
    async fn virtio_socket_transport_reaches_an_agent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        tokio::spawn(async move {
            if let Ok((s, _)) = listener.accept().await {
                let (r, w) = s.into_split();
                let _ = firebreak_agent::serve(r, w, Arc::new(Default::default())).await;
            }
        });
        let t = VirtioSerialSocket { path };
        let (client, info) = connect_agent(&t, Duration::from_secs(5))
            .await
            .expect("connect");
        assert_eq!(info.protocol, firebreak_agent::PROTOCOL_VERSION);
        client.ping().await.expect("ping");
    }

    #[tokio::test]
    async fn firecracker_vsock_handshake_then_agent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("v.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        tokio::spawn(async move {
            if let Ok((mut s, _)) = listener.accept().await {
                // Play Firecracker's muxer: read "CONNECT 1024\n", answer OK.
                let mut line = Vec::new();
                let mut b = [0u8; 1];
                while s.read_exact(&mut b).await.is_ok() && b[0] != b'\n' {
                    line.push(b[0]);
                }
                assert_eq!(line, b"CONNECT 1024");
                let _ = s.write_all(b"OK 1073741824\n").await;
                let (r, w) = s.into_split();
                let _ = firebreak_agent::serve(r, w, Arc::new(Default::default())).await;
            }
        });
        let t = FirecrackerVsock {
            uds_path: path,
            port: 1024,
        };
        let (client, _) = connect_agent(&t, Duration::from_secs(5))
            .await
            .expect("connect");
        client.ping().await.expect("ping");
    }

    #[tokio::test]
    async fn missing_socket_times_out() {
        let t = VirtioSerialSocket {
            path: "/nonexistent/agent.sock".into(),
        };
        let err = connect_agent(&t, Duration::from_millis(100))
            .await
            .err()
            .expect("error");
        assert!(matches!(err, TransportError::Connect { .. }), "{err}");
    }
}
