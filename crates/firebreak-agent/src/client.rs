//! The host side: [`AgentClient`] talks to one agent over any byte stream.
//!
//! Requests run concurrently: a background task reads frames and hands each
//! to the waiter of its request id. Dropping the client closes the stream.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::protocol::{
    encode_frame, read_frame, ErrorKind, ExecSpec, ExitStatus, FileKind, Frame, FrameError,
    OutStream, Request, Response, CHUNK_LEN, PROTOCOL_VERSION,
};

/// The most [`AgentClient::read_file`] takes from the guest: far more than a file command,
/// an action's manifest or a kernel file the host reads, far less than would strain the host
/// (the guest is not trusted: it could offer `/dev/zero`).
pub const READ_FILE_LIMIT: u64 = 64 << 20;

/// `s` without control characters, at most 200 of them: a guest's text bound for a log.
fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(200).collect()
}

/// Errors of host-side calls.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection to the agent is gone.
    #[error("agent connection closed")]
    Disconnected,
    /// The agent reported an error.
    #[error("agent error ({kind:?}): {message}")]
    Agent {
        /// Category.
        kind: ErrorKind,
        /// Detail.
        message: String,
    },
    /// The agent answered something unexpected.
    #[error("unexpected reply from agent: {0}")]
    Protocol(String),
    /// A host-side file operation failed.
    #[error("{op} {path}: {source}")]
    HostIo {
        /// What was being done.
        op: &'static str,
        /// Host path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Encoding a frame failed.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The call did not finish in time.
    #[error("agent did not answer within {0:?}")]
    Timeout(Duration),
    /// A guest file larger than the host takes: the guest is not trusted with the host's
    /// memory.
    #[error("{path} in the guest is larger than {} MiB: not read", .limit >> 20)]
    TooLarge {
        /// Guest path.
        path: String,
        /// The most the host takes, bytes.
        limit: u64,
    },
}

impl ClientError {
    fn from_response(resp: Response) -> Self {
        match resp {
            Response::Error { kind, message } => ClientError::Agent { kind, message },
            other => ClientError::Protocol(format!("{other:?}")),
        }
    }

    /// True for an agent `NotFound` error.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            ClientError::Agent {
                kind: ErrorKind::NotFound,
                ..
            }
        )
    }
}

/// What the agent said in the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentInfo {
    /// Protocol version.
    pub protocol: u32,
    /// Agent crate version.
    pub agent_version: String,
    /// Guest kernel release.
    pub kernel_release: String,
    /// The agent owns the guest.
    pub init: bool,
}

/// Metadata of a guest path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// What it is.
    pub kind: FileKind,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
}

/// Something a running process did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    /// Output bytes, in the order the agent read them.
    Output(OutStream, Vec<u8>),
    /// It ended; no more events follow.
    Exited(ExitStatus),
}

type Reply = (Response, Vec<u8>);
type Waiters = Arc<Mutex<HashMap<u64, mpsc::Sender<Reply>>>>;

fn lock(w: &Waiters) -> std::sync::MutexGuard<'_, HashMap<u64, mpsc::Sender<Reply>>> {
    w.lock().unwrap_or_else(|p| p.into_inner())
}

/// A connection to one guest agent.
pub struct AgentClient {
    out: mpsc::Sender<Vec<u8>>,
    waiters: Waiters,
    /// Set once the connection is gone (closed by us or by the peer); no
    /// call may wait on it after that.
    closed: Arc<AtomicBool>,
    next_id: AtomicU64,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
    /// The reader is waiting for a caller to take a reply (its queue is full): what the
    /// agent sends meanwhile stays unread, pings' answers included.
    delivering: Arc<AtomicBool>,
}

impl Drop for AgentClient {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

/// A process started with [`AgentClient::exec`].
pub struct ExecHandle {
    id: u64,
    pid: u32,
    rx: mpsc::Receiver<Reply>,
    out: mpsc::Sender<Vec<u8>>,
    done: bool,
}

impl ExecHandle {
    /// The guest pid (also its process group).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The request id (for [`AgentClient::cancel`] / [`AgentClient::signal`]).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The next event; `Exited` is the last. Errors when the connection drops.
    pub async fn next(&mut self) -> Result<ExecEvent, ClientError> {
        if self.done {
            return Err(ClientError::Protocol("exec already finished".into()));
        }
        match self.rx.recv().await {
            Some((Response::Output { stream }, body)) => Ok(ExecEvent::Output(stream, body)),
            Some((Response::Exited { status }, _)) => {
                self.done = true;
                Ok(ExecEvent::Exited(status))
            }
            Some((other, _)) => Err(ClientError::from_response(other)),
            None => Err(ClientError::Disconnected),
        }
    }

    /// Writes stdin (the exec must have been started with `spec.stdin`).
    pub async fn write_stdin(&self, data: &[u8], eof: bool) -> Result<(), ClientError> {
        let mut chunks: Vec<&[u8]> = data.chunks(CHUNK_LEN).collect();
        if chunks.is_empty() {
            chunks.push(b"");
        }
        let last = chunks.len() - 1;
        for (i, c) in chunks.into_iter().enumerate() {
            let req = Request::Stdin {
                exec: self.id,
                eof: eof && i == last,
            };
            let bytes = encode_frame(0, &req, c)?;
            self.out
                .send(bytes)
                .await
                .map_err(|_| ClientError::Disconnected)?;
        }
        Ok(())
    }

    /// Collects all output until exit: (stdout, stderr, status).
    pub async fn collect(mut self) -> Result<(Vec<u8>, Vec<u8>, ExitStatus), ClientError> {
        let (mut o, mut e) = (Vec::new(), Vec::new());
        loop {
            match self.next().await? {
                ExecEvent::Output(OutStream::Stdout, b) => o.extend_from_slice(&b),
                ExecEvent::Output(OutStream::Stderr, b) => e.extend_from_slice(&b),
                ExecEvent::Exited(st) => return Ok((o, e, st)),
            }
        }
    }
}

impl AgentClient {
    /// Starts a client on a byte stream. Call [`hello`](Self::hello) first.
    pub fn new<R, W>(mut reader: R, mut writer: W) -> Self
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (out, mut out_rx) = mpsc::channel::<Vec<u8>>(64);
        let writer = tokio::spawn(async move {
            while let Some(bytes) = out_rx.recv().await {
                if writer.write_all(&bytes).await.is_err() || writer.flush().await.is_err() {
                    break;
                }
            }
            let _ = writer.shutdown().await;
        });
        let waiters: Waiters = Arc::new(Mutex::new(HashMap::new()));
        let closed = Arc::new(AtomicBool::new(false));
        let w = waiters.clone();
        let gone = Disconnect {
            waiters: waiters.clone(),
            closed: closed.clone(),
        };
        let delivering = Arc::new(AtomicBool::new(false));
        let busy = delivering.clone();
        let reader = tokio::spawn(async move {
            // Wakes every waiter with "disconnected" however this task ends,
            // aborted included.
            let _gone = gone;
            loop {
                let frame: Result<Frame<Response>, _> = read_frame(&mut reader).await;
                let Ok(Frame { id, msg, body }) = frame else {
                    break;
                };
                let terminal = msg.is_terminal();
                let tx = if terminal {
                    lock(&w).remove(&id)
                } else {
                    lock(&w).get(&id).cloned()
                };
                if let Some(tx) = tx {
                    match tx.try_send((msg, body)) {
                        Err(mpsc::error::TrySendError::Full(reply)) => {
                            busy.store(true, Ordering::SeqCst);
                            let _ = tx.send(reply).await;
                            busy.store(false, Ordering::SeqCst);
                        }
                        Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
                    }
                }
            }
        });
        AgentClient {
            out,
            waiters,
            closed,
            next_id: AtomicU64::new(1),
            reader,
            writer,
            delivering,
        }
    }

    /// True while the client holds back reading the agent because a caller has not taken
    /// its replies yet (a job's output waiting for its reporter): an unanswered ping then
    /// says nothing about the guest.
    pub fn is_delivering(&self) -> bool {
        self.delivering.load(Ordering::SeqCst)
    }

    async fn start(
        &self,
        req: &Request,
        body: &[u8],
        depth: usize,
    ) -> Result<(u64, mpsc::Receiver<Reply>), ClientError> {
        let (tx, rx) = mpsc::channel(depth);
        let id = self.start_to(req, body, tx).await?;
        Ok((id, rx))
    }

    /// Sends `req` with its replies going to `tx`; returns its id.
    async fn start_to(
        &self,
        req: &Request,
        body: &[u8],
        tx: mpsc::Sender<Reply>,
    ) -> Result<u64, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.waiters).insert(id, tx);
        // Checked after registering: a disconnect either saw the waiter (and
        // dropped it) or happened before, and then the flag is already set.
        if self.closed.load(Ordering::SeqCst) {
            lock(&self.waiters).remove(&id);
            return Err(ClientError::Disconnected);
        }
        let bytes = encode_frame(id, req, body)?;
        if self.out.send(bytes).await.is_err() || self.reader.is_finished() {
            lock(&self.waiters).remove(&id);
            return Err(ClientError::Disconnected);
        }
        Ok(id)
    }

    async fn send_data(&self, id: u64, data: &[u8], eof: bool) -> Result<(), ClientError> {
        let bytes = encode_frame(id, &Request::Data { eof }, data)?;
        self.out
            .send(bytes)
            .await
            .map_err(|_| ClientError::Disconnected)
    }

    async fn call(&self, req: &Request, body: &[u8]) -> Result<Reply, ClientError> {
        let (_, mut rx) = self.start(req, body, 4).await?;
        rx.recv().await.ok_or(ClientError::Disconnected)
    }

    async fn call_ok(&self, req: &Request, body: &[u8]) -> Result<(), ClientError> {
        match self.call(req, body).await? {
            (Response::Ok, _) => Ok(()),
            (other, _) => Err(ClientError::from_response(other)),
        }
    }

    /// Version handshake.
    pub async fn hello(&self) -> Result<AgentInfo, ClientError> {
        let hello = Request::Hello {
            protocol: PROTOCOL_VERSION,
        };
        Self::agent_info(self.call(&hello, b"").await?)
    }

    /// [`hello`](Self::hello), sent again every `every` until one is
    /// answered. Over a virtio-serial port a request can be lost: when the
    /// host reconnects just as the agent saw the previous host leave, the
    /// hello lands in the port the agent is closing, and the guest's driver
    /// discards unread data on close. The agent answers every hello, so the
    /// first answer wins; the others are dropped when they come.
    pub async fn hello_resending(&self, every: Duration) -> Result<AgentInfo, ClientError> {
        let hello = Request::Hello {
            protocol: PROTOCOL_VERSION,
        };
        let (tx, mut rx) = mpsc::channel(4);
        // Only the waiters hold the sender: a disconnect drops them all and
        // ends `recv` with `None`.
        let weak = tx.downgrade();
        let mut ids = vec![self.start_to(&hello, b"", tx).await?];
        let reply = loop {
            match tokio::time::timeout(every, rx.recv()).await {
                Ok(reply) => break reply,
                Err(_) => match weak.upgrade() {
                    Some(tx) => ids.push(self.start_to(&hello, b"", tx).await?),
                    None => break None,
                },
            }
        };
        let mut waiters = lock(&self.waiters);
        for id in ids {
            waiters.remove(&id);
        }
        drop(waiters);
        Self::agent_info(reply.ok_or(ClientError::Disconnected)?)
    }

    fn agent_info(reply: Reply) -> Result<AgentInfo, ClientError> {
        match reply {
            (
                Response::Hello {
                    protocol,
                    agent_version,
                    kernel_release,
                    init,
                },
                _,
            ) if protocol == PROTOCOL_VERSION => Ok(AgentInfo {
                protocol,
                // Shown in job logs: the guest's words, without control characters.
                agent_version: printable(&agent_version),
                kernel_release: printable(&kernel_release),
                init,
            }),
            (Response::Hello { protocol, .. }, _) => Err(ClientError::Agent {
                kind: ErrorKind::Version,
                message: format!(
                    "the agent speaks protocol {protocol}, this host {PROTOCOL_VERSION}: build an image with this firebreak's agent (`firebreak image build`)"
                ),
            }),
            (other, _) => Err(ClientError::from_response(other)),
        }
    }

    /// Liveness check.
    pub async fn ping(&self) -> Result<(), ClientError> {
        self.call_ok(&Request::Ping, b"").await
    }

    /// Starts a process. Its output and exit arrive through the handle.
    pub async fn exec(&self, spec: ExecSpec) -> Result<ExecHandle, ClientError> {
        let (id, mut rx) = self.start(&Request::Exec(spec), b"", 256).await?;
        match rx.recv().await {
            Some((Response::Started { pid }, _)) => Ok(ExecHandle {
                id,
                pid,
                rx,
                out: self.out.clone(),
                done: false,
            }),
            Some((other, _)) => Err(ClientError::from_response(other)),
            None => Err(ClientError::Disconnected),
        }
    }

    /// Kills the process tree of a running exec; it ends with `Cancelled`.
    pub async fn cancel(&self, exec_id: u64) -> Result<(), ClientError> {
        self.call_ok(&Request::Cancel { exec: exec_id }, b"").await
    }

    /// Sends a signal to the process group of a running exec.
    pub async fn signal(&self, exec_id: u64, signal: i32) -> Result<(), ClientError> {
        self.call_ok(
            &Request::Signal {
                exec: exec_id,
                signal,
            },
            b"",
        )
        .await
    }

    async fn upload(
        &self,
        req: &Request,
        mut next: impl FnMut() -> Option<Vec<u8>>,
    ) -> Result<(), ClientError> {
        let (id, mut rx) = self.start(req, b"", 4).await?;
        let mut pending = next();
        loop {
            let chunk = pending.take().unwrap_or_default();
            pending = next();
            let eof = pending.is_none();
            self.send_data(id, &chunk, eof).await?;
            if eof {
                break;
            }
            // The agent may fail early; stop sending then.
            if let Ok((resp, _)) = rx.try_recv() {
                return match resp {
                    Response::Ok => Ok(()),
                    other => Err(ClientError::from_response(other)),
                };
            }
        }
        match rx.recv().await {
            Some((Response::Ok, _)) => Ok(()),
            Some((other, _)) => Err(ClientError::from_response(other)),
            None => Err(ClientError::Disconnected),
        }
    }

    /// Creates or truncates a guest file (and its parents).
    pub async fn write_file(
        &self,
        path: &str,
        contents: &[u8],
        mode: Option<u32>,
    ) -> Result<(), ClientError> {
        let mut chunks = contents.chunks(CHUNK_LEN).map(<[u8]>::to_vec);
        let req = Request::WriteFile {
            path: path.to_string(),
            mode,
        };
        self.upload(&req, move || chunks.next()).await
    }

    async fn download(
        &self,
        req: &Request,
        mut sink: impl FnMut(Vec<u8>) -> Result<(), ClientError>,
    ) -> Result<(), ClientError> {
        let (id, mut rx) = self.start(req, b"", 64).await?;
        loop {
            match rx.recv().await {
                Some((Response::Data { eof }, body)) => {
                    if !body.is_empty() {
                        if let Err(e) = sink(body) {
                            // The sink wants no more: no final frame will be awaited, and
                            // the agent is told to stop sending (one older than
                            // cancellable downloads says "unknown id").
                            drop(rx);
                            lock(&self.waiters).remove(&id);
                            let _ = self.cancel(id).await;
                            return Err(e);
                        }
                    }
                    if eof {
                        return Ok(());
                    }
                }
                Some((other, _)) => return Err(ClientError::from_response(other)),
                None => return Err(ClientError::Disconnected),
            }
        }
    }

    /// Reads a whole guest file of at most [`READ_FILE_LIMIT`] bytes; a missing file is
    /// `Ok(None)`.
    pub async fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, ClientError> {
        self.read_file_limited(path, READ_FILE_LIMIT).await
    }

    /// Reads a whole guest file of at most `limit` bytes; a missing file is `Ok(None)`. A
    /// longer one (a multi-gigabyte file, `/dev/zero`, a FIFO that never ends) is
    /// [`ClientError::TooLarge`]: the read stops there and the agent is told to stop sending.
    pub async fn read_file_limited(
        &self,
        path: &str,
        limit: u64,
    ) -> Result<Option<Vec<u8>>, ClientError> {
        let req = Request::ReadFile {
            path: path.to_string(),
        };
        let mut data = Vec::new();
        let res = self
            .download(&req, |body| {
                if (data.len() + body.len()) as u64 > limit {
                    return Err(ClientError::TooLarge {
                        path: path.to_string(),
                        limit,
                    });
                }
                data.extend_from_slice(&body);
                Ok(())
            })
            .await;
        match res {
            Ok(()) => Ok(Some(data)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Describes a guest path (`None` when missing).
    pub async fn stat(&self, path: &str) -> Result<Option<Stat>, ClientError> {
        match self
            .call(
                &Request::Stat {
                    path: path.to_string(),
                },
                b"",
            )
            .await?
        {
            (Response::Stat { kind, size, mode }, _) => {
                Ok(kind.map(|kind| Stat { kind, size, mode }))
            }
            (other, _) => Err(ClientError::from_response(other)),
        }
    }

    /// Removes a guest file or tree; missing is fine.
    pub async fn remove(&self, path: &str) -> Result<(), ClientError> {
        self.call_ok(
            &Request::Remove {
                path: path.to_string(),
            },
            b"",
        )
        .await
    }

    /// Creates `paths` (and parents) in one round trip; existing ones are fine.
    pub async fn make_dirs(&self, paths: &[&str]) -> Result<(), ClientError> {
        self.call_ok(
            &Request::MakeDirs {
                paths: paths.iter().map(|p| p.to_string()).collect(),
            },
            b"",
        )
        .await
    }

    /// Sets up the guest's job cgroup `name` (see [`crate::jobcgroup`]);
    /// returns whether it has the pids controller and its `memory.max`.
    pub async fn prepare_job_cgroup(
        &self,
        name: &str,
        reserve_mib: u64,
    ) -> Result<crate::jobcgroup::Prepared, ClientError> {
        let req = Request::PrepareJobCgroup {
            name: name.to_string(),
            reserve_mib,
        };
        match self.call(&req, b"").await? {
            (Response::Prepared { pids, memory_max }, _) => {
                Ok(crate::jobcgroup::Prepared { pids, memory_max })
            }
            (other, _) => Err(ClientError::from_response(other)),
        }
    }

    /// Packs the host directory `host_dir` (modes and symlinks kept) and
    /// unpacks it into the guest directory `guest_dest`.
    pub async fn tar_in(&self, host_dir: &Path, guest_dest: &str) -> Result<(), ClientError> {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(8);
        let dir = host_dir.to_path_buf();
        let packer = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut b = tar::Builder::new(BlockingChunks {
                tx,
                buf: Vec::new(),
            });
            b.follow_symlinks(false);
            b.append_dir_all(".", &dir)?;
            let mut w = b.into_inner()?;
            std::io::Write::flush(&mut w)
        });
        let req = Request::TarIn {
            dest: guest_dest.to_string(),
        };
        let (id, mut replies) = self.start(&req, b"", 4).await?;
        let mut agent_err = None;
        while let Some(chunk) = rx.recv().await {
            self.send_data(id, &chunk, false).await?;
            if let Ok((resp, _)) = replies.try_recv() {
                agent_err = Some(resp);
                break;
            }
        }
        drop(rx);
        let packed = packer
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        if let Some(resp) = agent_err {
            return Err(ClientError::from_response(resp));
        }
        self.send_data(id, b"", true).await?;
        let reply = replies.recv().await.ok_or(ClientError::Disconnected)?;
        packed.map_err(|source| ClientError::HostIo {
            op: "pack",
            path: host_dir.to_path_buf(),
            source,
        })?;
        match reply {
            (Response::Ok, _) => Ok(()),
            (other, _) => Err(ClientError::from_response(other)),
        }
    }

    /// Packs the guest directory `guest_src` and unpacks it into the host
    /// directory `host_dest` (created if missing).
    pub async fn tar_out(&self, guest_src: &str, host_dest: &Path) -> Result<(), ClientError> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(8);
        let dest = host_dest.to_path_buf();
        let unpacker = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::create_dir_all(&dest)?;
            let mut reader = BlockingReader {
                rx,
                buf: Vec::new(),
                pos: 0,
            };
            let mut ar = tar::Archive::new(&mut reader);
            // Permission bits without setuid, setgid and sticky: the guest is not trusted to
            // leave set-id programs on the host.
            ar.set_preserve_permissions(false);
            ar.set_preserve_mtime(true);
            ar.set_overwrite(true);
            let res = ar.unpack(&dest);
            let mut sink = [0u8; 8192];
            while matches!(std::io::Read::read(&mut reader, &mut sink), Ok(n) if n > 0) {}
            res
        });
        let res = self
            .download(
                &Request::TarOut {
                    path: guest_src.to_string(),
                },
                |b| {
                    tx.send(b)
                        .map_err(|_| ClientError::Protocol("unpacker stopped".into()))
                },
            )
            .await;
        drop(tx);
        let unpacked = unpacker
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        res?;
        unpacked.map_err(|source| ClientError::HostIo {
            op: "unpack into",
            path: host_dest.to_path_buf(),
            source,
        })
    }

    /// Copies a guest file or directory to `host_dest` (a file becomes that
    /// file, a directory that directory).
    pub async fn copy_out(&self, guest_src: &str, host_dest: &Path) -> Result<(), ClientError> {
        let Some(st) = self.stat(guest_src).await? else {
            return Err(ClientError::Agent {
                kind: ErrorKind::NotFound,
                message: format!("{guest_src} does not exist"),
            });
        };
        if st.kind == FileKind::Dir {
            return self.tar_out(guest_src, host_dest).await;
        }
        let data = self
            .read_file(guest_src)
            .await?
            .ok_or_else(|| ClientError::Agent {
                kind: ErrorKind::NotFound,
                message: format!("{guest_src} vanished"),
            })?;
        let host_err = |op, source| ClientError::HostIo {
            op,
            path: host_dest.to_path_buf(),
            source,
        };
        if let Some(parent) = host_dest.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| host_err("create", e))?;
        }
        tokio::fs::write(host_dest, &data)
            .await
            .map_err(|e| host_err("write", e))?;
        use std::os::unix::fs::PermissionsExt;
        // Without setuid, setgid and sticky bits, as `tar_out` unpacks.
        tokio::fs::set_permissions(host_dest, std::fs::Permissions::from_mode(st.mode & 0o777))
            .await
            .map_err(|e| host_err("chmod", e))
    }

    /// Sets the guest wall clock.
    pub async fn set_clock(&self, now: SystemTime) -> Result<(), ClientError> {
        let d = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        self.call_ok(
            &Request::SetClock {
                secs,
                nanos: d.subsec_nanos(),
            },
            b"",
        )
        .await
    }

    /// Mixes `seed` into the guest entropy pool and, in a guest, reseeds the kernel CRNG from
    /// it at once (see [`crate::entropy`]).
    pub async fn add_entropy(&self, seed: &[u8]) -> Result<(), ClientError> {
        self.call_ok(&Request::AddEntropy, seed).await
    }

    /// Asks the agent to power the guest off.
    pub async fn shutdown(&self) -> Result<(), ClientError> {
        self.call_ok(&Request::Shutdown, b"").await
    }

    /// Closes the connection (pending calls fail with `Disconnected`). The
    /// agent ends its session, kills what it was running, and waits for the
    /// next connection.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.writer.abort();
        self.reader.abort();
        lock(&self.waiters).clear();
    }

    /// True while the connection is up.
    pub fn is_connected(&self) -> bool {
        !self.closed.load(Ordering::SeqCst)
            && !self.reader.is_finished()
            && !self.writer.is_finished()
    }
}

/// Marks a connection gone and fails its pending calls when dropped.
struct Disconnect {
    waiters: Waiters,
    closed: Arc<AtomicBool>,
}

impl Drop for Disconnect {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::SeqCst);
        lock(&self.waiters).clear();
    }
}

/// Blocking writer sending chunks to an async channel (host tar packing).
struct BlockingChunks {
    tx: mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
}

impl std::io::Write for BlockingChunks {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(CHUNK_LEN - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK_LEN {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::take(&mut self.buf);
        self.tx
            .blocking_send(chunk)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "upload stopped"))
    }
}

/// Blocking reader over chunks from an async producer (host tar unpacking).
struct BlockingReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl std::io::Read for BlockingReader {
    fn read(&mut self, dst: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.buf.len() {
            match self.rx.recv() {
                Ok(b) => {
                    self.buf = b;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = dst.len().min(self.buf.len() - self.pos);
        dst[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
