//! Wire protocol between the host and the guest agent.
//!
//! ## Framing
//! Every message is one frame:
//!
//! ```text
//! magic "FB" | version u8 | reserved u8 | header_len u32 BE | body_len u32 BE | header | body
//! ```
//!
//! The header is a JSON object (a [`Request`] from the host or a [`Response`]
//! from the agent, plus the request `id`); the body is raw bytes (file
//! contents, tar data, process output, stdin) so binary data is never
//! re-encoded. Headers are at most [`MAX_HEADER_LEN`] bytes, bodies at most
//! [`MAX_BODY_LEN`]; senders split data into chunks of [`CHUNK_LEN`].
//!
//! ## Conversation
//! Each request carries an `id` chosen by the host; every response to it
//! carries the same id, and exactly one *terminal* response
//! ([`Response::is_terminal`]) ends it. Requests are served concurrently, so
//! the output of a running process interleaves with other replies.
//! Uploads (write file, tar in) are a start request followed by
//! [`Request::Data`] frames with the same id, the last with `eof: true`.
//! Downloads (read file, tar out) are answered by [`Response::Data`] frames, the
//! last with `eof: true`.
//!
//! The host starts with [`Request::Hello`]; an agent refuses other requests
//! until the protocol versions match.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Version of the request/response vocabulary; bumped on incompatible change
/// (4: headers up to [`MAX_HEADER_LEN`] of 8 MiB, where 3 refused more than 64 KiB).
pub const PROTOCOL_VERSION: u32 = 4;
/// Version byte of the frame layout.
pub const FRAME_VERSION: u8 = 1;
/// Frame magic.
pub const MAGIC: [u8; 2] = *b"FB";
/// Longest JSON header accepted. An `Exec` header carries the command's
/// argv and environment, which Linux lets reach a quarter of the stack limit
/// (2 MiB with the usual 8 MiB; a single string 128 KiB): this bound is above
/// that, so a command the guest kernel would start is never refused here
/// for its size, and a step with a large `env` runs in a VM as on the host.
pub const MAX_HEADER_LEN: usize = 8 * 1024 * 1024;
/// Longest body accepted.
pub const MAX_BODY_LEN: usize = 1024 * 1024;
/// Size data is split into when streamed.
pub const CHUNK_LEN: usize = 128 * 1024;
/// Name of the virtio-serial port the agent listens on.
pub const VIRTIO_PORT_NAME: &str = "org.firebreak.agent";
/// vsock port the agent listens on (Firecracker).
pub const VSOCK_PORT: u32 = 1024;

/// A process to run in the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecSpec {
    /// Program and arguments; `argv[0]` is searched on `PATH` from `env`.
    pub argv: Vec<String>,
    /// The complete environment (nothing inherited from the agent).
    pub env: BTreeMap<String, String>,
    /// Working directory; `None` keeps the agent's (`/`).
    pub cwd: Option<String>,
    /// Kill the process tree after this many milliseconds.
    pub timeout_ms: Option<u64>,
    /// The host will send stdin as [`Request::Stdin`] frames; otherwise stdin
    /// is `/dev/null`.
    pub stdin: bool,
    /// After the main process exits, how long to keep reading output held
    /// open by background processes.
    pub drain_grace_ms: u64,
    /// On timeout or cancellation, SIGINT to the process, 7.5 s later SIGTERM, 2.5 s later
    /// its tree is killed (as GitHub's runner stops a step); otherwise it is killed at once.
    /// Absent (an older host): false.
    #[serde(default)]
    pub interrupt_first: bool,
    /// What the host calls the command (a step's name), for the agent's own notes about it
    /// (a fork bomb it left running); absent: its argv.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

impl ExecSpec {
    /// A spec for `argv` with an empty environment.
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ExecSpec {
            argv: argv.into_iter().map(Into::into).collect(),
            env: BTreeMap::new(),
            cwd: None,
            timeout_ms: None,
            stdin: false,
            drain_grace_ms: 200,
            interrupt_first: false,
            label: None,
        }
    }

    /// Sets one environment variable.
    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.insert(k.into(), v.into());
        self
    }
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// How a guest process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExitStatus {
    /// Exited with this code.
    Exited {
        /// Exit code.
        code: i32,
    },
    /// Killed by a signal not sent by the agent's timeout/cancel.
    Signaled {
        /// Signal number.
        signal: i32,
    },
    /// Ran past its timeout; the tree was killed.
    TimedOut,
    /// Cancelled by [`Request::Cancel`]; the tree was killed.
    Cancelled,
}

/// What a guest path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link (not followed).
    Symlink,
    /// Anything else.
    Other,
}

/// Error categories reported by the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The path does not exist.
    NotFound,
    /// The request is malformed or not allowed now.
    Invalid,
    /// The process could not be started.
    Spawn,
    /// An I/O error.
    Io,
    /// Protocol version mismatch.
    Version,
    /// The referenced request id is unknown or finished.
    UnknownId,
}

/// A message from the host to the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Version handshake; answered by [`Response::Hello`].
    Hello {
        /// The host's [`PROTOCOL_VERSION`].
        protocol: u32,
    },
    /// Liveness check; answered by [`Response::Ok`].
    Ping,
    /// Start a process; answered by `Started`, `Output`*, `Exited`.
    Exec(ExecSpec),
    /// Stdin bytes (body) for the exec with id `exec`; `eof` closes stdin.
    Stdin {
        /// Id of the exec request.
        exec: u64,
        /// Close stdin after this chunk.
        eof: bool,
    },
    /// Send a signal to the process group of exec `exec`.
    Signal {
        /// Id of the exec request.
        exec: u64,
        /// Signal number.
        signal: i32,
    },
    /// Kill the process tree of exec `exec`; it ends with `Cancelled`.
    Cancel {
        /// Id of the exec request.
        exec: u64,
    },
    /// Create/truncate a file (and parents); contents follow as `Data`.
    WriteFile {
        /// Guest path.
        path: String,
        /// Permission bits (default 0o644).
        mode: Option<u32>,
    },
    /// Read a whole file; answered by `Data` frames or `NotFound`.
    ReadFile {
        /// Guest path.
        path: String,
    },
    /// Describe a path without following symlinks; answered by `Stat`.
    Stat {
        /// Guest path.
        path: String,
    },
    /// Remove a file or directory tree; missing is fine.
    Remove {
        /// Guest path.
        path: String,
    },
    /// Create directories (and their parents); existing ones are fine.
    /// Answered by `Ok`, or the first error. One round trip for a job's
    /// whole directory layout.
    MakeDirs {
        /// Guest paths.
        paths: Vec<String>,
    },
    /// Unpack a tar stream (sent as `Data`) into directory `dest`.
    TarIn {
        /// Guest directory, created if missing.
        dest: String,
    },
    /// Stream directory `path` as a tar archive (entries relative to it).
    TarOut {
        /// Guest directory.
        path: String,
    },
    /// Set the guest's wall clock (after a snapshot restore).
    SetClock {
        /// Seconds since the Unix epoch.
        secs: i64,
        /// Nanoseconds.
        nanos: u32,
    },
    /// Mix the body's bytes into the guest's entropy pool and, in a guest, reseed the
    /// kernel CRNG from it at once.
    AddEntropy,
    /// In a guest: create the job cgroup `name` with the pids and memory
    /// controllers, its `memory.max` the guest's available memory less
    /// `reserve_mib`, mounted over `/sys/fs/cgroup`; then flush the disks
    /// (see [`crate::jobcgroup`]). Answered by `Prepared`.
    PrepareJobCgroup {
        /// Directory name of the job cgroup.
        name: String,
        /// MiB of available memory kept outside the job's limit.
        reserve_mib: u64,
    },
    /// Upload chunk (body) for a `WriteFile`/`TarIn` with the same id.
    Data {
        /// Last chunk.
        eof: bool,
    },
    /// Power the guest off (or end the agent when not running as init).
    Shutdown,
}

/// A message from the agent to the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Response {
    /// Reply to `Hello`.
    Hello {
        /// The agent's [`PROTOCOL_VERSION`].
        protocol: u32,
        /// The agent's crate version.
        agent_version: String,
        /// `uname -r` of the guest.
        kernel_release: String,
        /// The agent runs as PID 1's child in a guest it owns.
        init: bool,
    },
    /// The exec started.
    Started {
        /// Guest pid (also the process group id).
        pid: u32,
    },
    /// Output bytes (body) of a running exec.
    Output {
        /// Which stream.
        stream: OutStream,
    },
    /// The exec ended (terminal).
    Exited {
        /// How.
        status: ExitStatus,
    },
    /// Download chunk (body); `eof` is terminal.
    Data {
        /// Last chunk.
        eof: bool,
    },
    /// Reply to `Stat` (terminal).
    Stat {
        /// `None` when the path does not exist.
        kind: Option<FileKind>,
        /// Size in bytes.
        size: u64,
        /// Permission bits.
        mode: u32,
    },
    /// Reply to `PrepareJobCgroup` (terminal).
    Prepared {
        /// The job cgroup has the pids controller.
        pids: bool,
        /// Its `memory.max` in bytes, if set.
        memory_max: Option<u64>,
    },
    /// Success without data (terminal).
    Ok,
    /// Failure (terminal).
    Error {
        /// Category.
        kind: ErrorKind,
        /// Human-readable detail.
        message: String,
    },
}

impl Response {
    /// True when no more responses follow for this id.
    pub fn is_terminal(&self) -> bool {
        match self {
            Response::Started { .. } | Response::Output { .. } => false,
            Response::Data { eof } => *eof,
            _ => true,
        }
    }

    /// An error response.
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Self {
        Response::Error {
            kind,
            message: message.into(),
        }
    }
}

/// A header plus the id of the request it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// Request id (chosen by the host).
    pub id: u64,
    /// The message.
    #[serde(flatten)]
    pub msg: T,
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<T> {
    /// Request id.
    pub id: u64,
    /// The message.
    pub msg: T,
    /// Raw body bytes (may be empty).
    pub body: Vec<u8>,
}

/// Errors reading or writing frames.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The byte stream failed.
    #[error("transport I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the stream between frames.
    #[error("peer closed the connection")]
    Closed,
    /// Not a frame (bad magic).
    #[error("bad frame magic {0:02x?}")]
    BadMagic([u8; 2]),
    /// A frame layout version we do not speak.
    #[error("unsupported frame version {0}")]
    BadVersion(u8),
    /// Header or body over the limit.
    #[error("frame too large: header {header} bytes, body {body} bytes")]
    TooLarge {
        /// Header length.
        header: usize,
        /// Body length.
        body: usize,
    },
    /// The header is not valid JSON for this message type.
    #[error("bad frame header: {0}")]
    BadHeader(#[from] serde_json::Error),
}

/// Encodes one frame into bytes.
pub fn encode_frame<T: Serialize>(id: u64, msg: &T, body: &[u8]) -> Result<Vec<u8>, FrameError> {
    let header = serde_json::to_vec(&Envelope { id, msg })?;
    if header.len() > MAX_HEADER_LEN || body.len() > MAX_BODY_LEN {
        return Err(FrameError::TooLarge {
            header: header.len(),
            body: body.len(),
        });
    }
    let mut out = Vec::with_capacity(12 + header.len() + body.len());
    out.extend_from_slice(&MAGIC);
    out.push(FRAME_VERSION);
    out.push(0);
    // Both lengths are bounded above, so the casts cannot truncate.
    out.extend_from_slice(&(header.len() as u32).to_be_bytes());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(body);
    Ok(out)
}

/// Writes one frame and flushes.
pub async fn write_frame<W, T>(w: &mut W, id: u64, msg: &T, body: &[u8]) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let bytes = encode_frame(id, msg, body)?;
    w.write_all(&bytes).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one frame. End of stream before the first byte is
/// [`FrameError::Closed`]; in the middle of a frame it is an I/O error.
pub async fn read_frame<R, T>(r: &mut R) -> Result<Frame<T>, FrameError>
where
    R: AsyncRead + Unpin,
    T: for<'de> Deserialize<'de>,
{
    let mut fixed = [0u8; 12];
    let n = r.read(&mut fixed).await?;
    if n == 0 {
        return Err(FrameError::Closed);
    }
    r.read_exact(&mut fixed[n..]).await?;
    let magic = [fixed[0], fixed[1]];
    if magic != MAGIC {
        return Err(FrameError::BadMagic(magic));
    }
    if fixed[2] != FRAME_VERSION {
        return Err(FrameError::BadVersion(fixed[2]));
    }
    let header_len = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]) as usize;
    let body_len = u32::from_be_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]) as usize;
    if header_len > MAX_HEADER_LEN || body_len > MAX_BODY_LEN {
        return Err(FrameError::TooLarge {
            header: header_len,
            body: body_len,
        });
    }
    let mut header = vec![0u8; header_len];
    r.read_exact(&mut header).await?;
    let mut body = vec![0u8; body_len];
    r.read_exact(&mut body).await?;
    let env: Envelope<T> = serde_json::from_slice(&header)?;
    Ok(Frame {
        id: env.id,
        msg: env.msg,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frame_roundtrip() {
        let bytes = encode_frame(
            7,
            &Request::WriteFile {
                path: "/a".into(),
                mode: Some(0o755),
            },
            b"xyz",
        )
        .expect("encode");
        let mut r = &bytes[..];
        let f: Frame<Request> = read_frame(&mut r).await.expect("decode");
        assert_eq!(f.id, 7);
        assert_eq!(
            f.msg,
            Request::WriteFile {
                path: "/a".into(),
                mode: Some(0o755)
            }
        );
        assert_eq!(f.body, b"xyz");
    }

    #[tokio::test]
    async fn bad_input_is_an_error_not_a_panic() {
        let mut r: &[u8] = b"XX\x01\x00\x00\x00\x00\x01\x00\x00\x00\x00{";
        assert!(matches!(
            read_frame::<_, Request>(&mut r).await,
            Err(FrameError::BadMagic(_))
        ));
        let mut r: &[u8] = b"FB\x01\x00\xff\xff\xff\xff\x00\x00\x00\x00";
        assert!(matches!(
            read_frame::<_, Request>(&mut r).await,
            Err(FrameError::TooLarge { .. })
        ));
        let mut r: &[u8] = b"FB\x01\x00\x00\x00\x00\x02\x00\x00\x00\x00{}";
        assert!(matches!(
            read_frame::<_, Request>(&mut r).await,
            Err(FrameError::BadHeader(_))
        ));
        let mut r: &[u8] = b"";
        assert!(matches!(
            read_frame::<_, Request>(&mut r).await,
            Err(FrameError::Closed)
        ));
        let mut r: &[u8] = b"FB\x01";
        assert!(matches!(
            read_frame::<_, Request>(&mut r).await,
            Err(FrameError::Io(_))
        ));
    }

    #[test]
    fn wire_format_is_stable() {
        let bytes = encode_frame(1, &Request::Hello { protocol: 1 }, b"").expect("encode");
        let header = std::str::from_utf8(&bytes[12..]).expect("utf8");
        assert_eq!(header, r#"{"id":1,"op":"hello","protocol":1}"#);
        let e = serde_json::to_string(&Envelope {
            id: 2,
            msg: Request::Exec(ExecSpec::new(["true"])),
        })
        .expect("json");
        assert!(
            e.starts_with(r#"{"id":2,"op":"exec","argv":["true"]"#),
            "{e}"
        );
    }
}
