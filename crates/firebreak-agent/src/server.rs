//! The agent side: serve requests arriving on one byte stream.
//!
//! [`serve`] runs one session until the peer closes the stream or asks for
//! shutdown. It is the same over a virtio-serial port, a vsock connection, a
//! pipe or an in-process socket pair (tests).
//!
//! File requests (`MakeDirs`, `Stat`, `WriteFile`, `ReadFile`, removing a file,
//! `AddEntropy`) call `std::fs` on the serving task rather than `tokio::fs`:
//! each is a page-cache operation of microseconds, while `tokio::fs` hands
//! every step to a blocking thread and back. In a guest restored from a
//! snapshot under TCG those hops are code translated anew on the job's
//! critical path (about 4,000 guest instructions of the first job's requests).
//! Only work that can take long goes to the blocking pool: removing a tree, tar
//! streams, and reading or writing a FIFO or a device, which can block for as
//! long as its other end likes (a job may make its `$GITHUB_OUTPUT` one).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;

use crate::protocol::{
    encode_frame, read_frame, write_frame, ErrorKind, ExecSpec, ExitStatus, FileKind, Frame,
    FrameError, OutStream, Request, Response, CHUNK_LEN, PROTOCOL_VERSION,
};

/// How the agent behaves.
#[derive(Debug, Clone, Default)]
pub struct AgentConfig {
    /// The agent owns this machine (it runs inside a guest): `SetClock` and
    /// `Shutdown` act on the system. When false they are refused / only end
    /// the session, so the agent can be tested on a host.
    pub guest: bool,
    /// A cgroup v2 directory under which each exec gets its own cgroup, so
    /// a timeout kills even daemonised descendants (`cgroup.kill`). `None`
    /// uses the process group only.
    pub cgroup_root: Option<PathBuf>,
    /// Set once any session has been greeted with a matching protocol; shared by the
    /// sessions of one agent (clones of this config). Over a virtio-serial port the agent
    /// serves one session after another on the same device, and a reconnecting host's hello
    /// can be read and answered by the session that is just ending (the guest learns of the
    /// old host leaving only afterwards): the next session then counts as greeted instead of
    /// refusing the host's first request with "hello first".
    pub greeted: Arc<std::sync::atomic::AtomicBool>,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// The peer closed the stream.
    Closed,
    /// The peer asked for shutdown.
    Shutdown,
}

/// Errors that end a session abnormally.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Reading or writing frames failed.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

type Chunk = (Vec<u8>, bool);
type Out = mpsc::Sender<Vec<u8>>;

struct ExecCtl {
    pid: u32,
    stdin: Option<mpsc::Sender<Chunk>>,
    cancel: Arc<Cancels>,
    cgroup: Option<PathBuf>,
}

enum Route {
    Upload(mpsc::Sender<Chunk>),
    Exec(ExecCtl),
    /// A file being read out: set to stop sending (the host took all it wants).
    Download(Arc<std::sync::atomic::AtomicBool>),
}

type Routes = Arc<Mutex<HashMap<u64, Route>>>;

static CGROUP_SEQ: AtomicU64 = AtomicU64::new(0);

async fn send(out: &Out, id: u64, msg: Response, body: &[u8]) {
    match encode_frame(id, &msg, body) {
        Ok(bytes) => {
            let _ = out.send(bytes).await;
        }
        Err(e) => {
            if let Ok(bytes) = encode_frame(id, &Response::error(ErrorKind::Io, e.to_string()), b"")
            {
                let _ = out.send(bytes).await;
            }
        }
    }
}

fn lock(routes: &Routes) -> std::sync::MutexGuard<'_, HashMap<u64, Route>> {
    routes.lock().unwrap_or_else(|p| p.into_inner())
}

/// Serves one session on `reader`/`writer` until the peer closes it or asks
/// for shutdown. Processes still running when it ends are killed.
pub async fn serve<R, W>(
    reader: R,
    mut writer: W,
    cfg: Arc<AgentConfig>,
) -> Result<SessionEnd, AgentError>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
{
    // Ports hand out a few KiB per read: batch them.
    let mut reader = tokio::io::BufReader::with_capacity(256 * 1024, reader);
    let (out, mut out_rx) = mpsc::channel::<Vec<u8>>(64);
    let writer_task = tokio::spawn(async move {
        while let Some(bytes) = out_rx.recv().await {
            if writer.write_all(&bytes).await.is_err() || writer.flush().await.is_err() {
                break;
            }
        }
    });
    let routes: Routes = Arc::new(Mutex::new(HashMap::new()));
    let mut tasks = JoinSet::new();
    let mut greeted = cfg.greeted.load(std::sync::atomic::Ordering::SeqCst);

    let end = loop {
        let frame: Frame<Request> = match read_frame(&mut reader).await {
            Ok(f) => f,
            Err(FrameError::Closed) => break Ok(SessionEnd::Closed),
            Err(FrameError::BadHeader(e)) => {
                // A well-framed but unknown request: answer, keep going. The
                // id is unknown here, so report on id 0.
                send(
                    &out,
                    0,
                    Response::error(ErrorKind::Invalid, format!("bad request: {e}")),
                    b"",
                )
                .await;
                continue;
            }
            Err(e) => break Err(AgentError::from(e)),
        };
        let Frame { id, msg, body } = frame;
        match msg {
            Request::Hello { protocol } => {
                if protocol != PROTOCOL_VERSION {
                    // A host of another version is not served, whatever came before.
                    greeted = false;
                    let m = format!("agent speaks protocol {PROTOCOL_VERSION}, host {protocol}");
                    send(&out, id, Response::error(ErrorKind::Version, m), b"").await;
                } else {
                    greeted = true;
                    cfg.greeted.store(true, std::sync::atomic::Ordering::SeqCst);
                    let kernel_release = nix::sys::utsname::uname()
                        .map(|u| u.release().to_string_lossy().into_owned())
                        .unwrap_or_default();
                    let hello = Response::Hello {
                        protocol: PROTOCOL_VERSION,
                        agent_version: env!("CARGO_PKG_VERSION").to_string(),
                        kernel_release,
                        init: cfg.guest,
                    };
                    send(&out, id, hello, b"").await;
                }
            }
            Request::Ping => send(&out, id, Response::Ok, b"").await,
            _ if !greeted => {
                send(
                    &out,
                    id,
                    Response::error(ErrorKind::Invalid, "hello first"),
                    b"",
                )
                .await;
            }
            Request::Data { eof } => {
                let tx = match lock(&routes).get(&id) {
                    Some(Route::Upload(tx)) => Some(tx.clone()),
                    _ => None,
                };
                match tx {
                    Some(tx) => {
                        let _ = tx.send((body, eof)).await;
                        if eof {
                            lock(&routes).remove(&id);
                        }
                    }
                    None => {
                        send(
                            &out,
                            id,
                            Response::error(ErrorKind::UnknownId, "no upload with this id"),
                            b"",
                        )
                        .await
                    }
                }
            }
            Request::Stdin { exec, eof } => {
                let tx = match lock(&routes).get_mut(&exec) {
                    Some(Route::Exec(ctl)) => {
                        let tx = ctl.stdin.clone();
                        if eof {
                            ctl.stdin = None;
                        }
                        tx
                    }
                    _ => None,
                };
                if let Some(tx) = tx {
                    let _ = tx.send((body, eof)).await;
                }
            }
            Request::Signal { exec, signal } => {
                let pid = match lock(&routes).get(&exec) {
                    Some(Route::Exec(ctl)) => Some(ctl.pid),
                    _ => None,
                };
                let resp = match (pid, Signal::try_from(signal)) {
                    (None, _) => {
                        Response::error(ErrorKind::UnknownId, "no running exec with this id")
                    }
                    (_, Err(_)) => {
                        Response::error(ErrorKind::Invalid, format!("bad signal {signal}"))
                    }
                    (Some(pid), Ok(sig)) => match killpg(Pid::from_raw(pid as i32), sig) {
                        Ok(()) => Response::Ok,
                        Err(e) => Response::error(ErrorKind::Io, e.to_string()),
                    },
                };
                send(&out, id, resp, b"").await;
            }
            Request::Cancel { exec } => {
                let found = match lock(&routes).get(&exec) {
                    Some(Route::Exec(ctl)) => {
                        ctl.cancel.cancel();
                        true
                    }
                    Some(Route::Download(stop)) => {
                        stop.store(true, Ordering::SeqCst);
                        true
                    }
                    _ => false,
                };
                let resp = if found {
                    Response::Ok
                } else {
                    Response::error(ErrorKind::UnknownId, "no running exec with this id")
                };
                send(&out, id, resp, b"").await;
            }
            Request::Exec(spec) => match start_exec(id, spec, &cfg, &routes) {
                Ok(run) => {
                    let (out, routes) = (out.clone(), routes.clone());
                    tasks.spawn(supervise(id, run, out, routes));
                }
                Err(resp) => send(&out, id, resp, b"").await,
            },
            Request::WriteFile { path, mode } => {
                let (tx, rx) = mpsc::channel(16);
                lock(&routes).insert(id, Route::Upload(tx));
                let out = out.clone();
                tasks.spawn(async move {
                    let resp = match write_file(&path, mode, rx).await {
                        Ok(()) => Response::Ok,
                        Err(e) => io_response(&path, &e),
                    };
                    send(&out, id, resp, b"").await;
                });
            }
            Request::TarIn { dest } => {
                let (tx, rx) = mpsc::channel(16);
                lock(&routes).insert(id, Route::Upload(tx));
                let out = out.clone();
                tasks.spawn(async move {
                    let d = dest.clone();
                    let res = tokio::task::spawn_blocking(move || tar_in(&d, rx)).await;
                    let resp = match res {
                        Ok(Ok(())) => Response::Ok,
                        Ok(Err(e)) => io_response(&dest, &e),
                        Err(e) => Response::error(ErrorKind::Io, e.to_string()),
                    };
                    send(&out, id, resp, b"").await;
                });
            }
            Request::ReadFile { path } => {
                let out = out.clone();
                let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
                lock(&routes).insert(id, Route::Download(stop.clone()));
                let routes = routes.clone();
                tasks.spawn(async move {
                    if let Err(e) = read_file(id, &path, &out, &stop).await {
                        send(&out, id, io_response(&path, &e), b"").await;
                    }
                    lock(&routes).remove(&id);
                });
            }
            Request::TarOut { path } => {
                let out = out.clone();
                tasks.spawn(async move {
                    let (p, o) = (path.clone(), out.clone());
                    let res = tokio::task::spawn_blocking(move || tar_out(id, &p, o)).await;
                    match res {
                        Ok(Ok(())) => send(&out, id, Response::Data { eof: true }, b"").await,
                        Ok(Err(e)) => send(&out, id, io_response(&path, &e), b"").await,
                        Err(e) => {
                            send(&out, id, Response::error(ErrorKind::Io, e.to_string()), b"").await
                        }
                    }
                });
            }
            Request::Stat { path } => {
                let resp = match std::fs::symlink_metadata(&path) {
                    Ok(m) => {
                        let ft = m.file_type();
                        let kind = if ft.is_file() {
                            FileKind::File
                        } else if ft.is_dir() {
                            FileKind::Dir
                        } else if ft.is_symlink() {
                            FileKind::Symlink
                        } else {
                            FileKind::Other
                        };
                        Response::Stat {
                            kind: Some(kind),
                            size: m.len(),
                            mode: m.mode() & 0o7777,
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Response::Stat {
                        kind: None,
                        size: 0,
                        mode: 0,
                    },
                    Err(e) => io_response(&path, &e),
                };
                send(&out, id, resp, b"").await;
            }
            Request::Remove { path } => {
                let resp = match remove(&path).await {
                    Ok(()) => Response::Ok,
                    Err(e) => io_response(&path, &e),
                };
                send(&out, id, resp, b"").await;
            }
            Request::MakeDirs { paths } => {
                let mut resp = Response::Ok;
                for path in &paths {
                    if let Err(e) = std::fs::create_dir_all(path) {
                        resp = io_response(path, &e);
                        break;
                    }
                }
                send(&out, id, resp, b"").await;
            }
            Request::SetClock { secs, nanos } => {
                let resp = if !cfg.guest {
                    Response::error(
                        ErrorKind::Invalid,
                        "refusing to set the clock outside a guest",
                    )
                } else {
                    let ts = nix::sys::time::TimeSpec::new(secs, i64::from(nanos));
                    match nix::time::clock_settime(nix::time::ClockId::CLOCK_REALTIME, ts) {
                        Ok(()) => Response::Ok,
                        Err(e) => Response::error(ErrorKind::Io, e.to_string()),
                    }
                };
                send(&out, id, resp, b"").await;
            }
            Request::AddEntropy => {
                // In a guest the CRNG is also reseeded at once (see
                // `entropy`); elsewhere the bytes are only mixed in.
                let resp = match crate::entropy::add(&body, cfg.guest) {
                    Ok(()) => Response::Ok,
                    Err(e) => Response::error(ErrorKind::Io, e.to_string()),
                };
                send(&out, id, resp, b"").await;
            }
            Request::PrepareJobCgroup { name, reserve_mib } => {
                let resp = if !cfg.guest {
                    Response::error(
                        ErrorKind::Invalid,
                        "refusing to set up a job cgroup outside a guest",
                    )
                } else if name.is_empty() || name.contains('/') || name.starts_with('.') {
                    Response::error(ErrorKind::Invalid, format!("bad cgroup name {name:?}"))
                } else {
                    let root = Path::new("/sys/fs/cgroup");
                    let res = tokio::task::spawn_blocking(move || {
                        crate::jobcgroup::prepare(
                            root,
                            Path::new("/proc/meminfo"),
                            &name,
                            reserve_mib,
                        )
                    })
                    .await;
                    match res {
                        Ok(p) => {
                            // A memory limit read back through the root means
                            // the job cgroup is mounted there (the real root
                            // cgroup has none): only then may the guard watch
                            // it, since it kills among the processes below.
                            if p.memory_max.is_some() {
                                crate::thrash::start(root.to_path_buf());
                                if p.pids {
                                    crate::forkguard::start(root.to_path_buf());
                                }
                            }
                            Response::Prepared {
                                pids: p.pids,
                                memory_max: p.memory_max,
                            }
                        }
                        Err(e) => Response::error(ErrorKind::Io, e.to_string()),
                    }
                };
                send(&out, id, resp, b"").await;
            }
            Request::Shutdown => {
                send(&out, id, Response::Ok, b"").await;
                break Ok(SessionEnd::Shutdown);
            }
        }
    };

    // Kill what is still running, then stop every task of this session.
    for route in lock(&routes).values() {
        if let Route::Exec(ctl) = route {
            kill_tree(ctl.pid, ctl.cgroup.as_deref());
        }
    }
    tasks.shutdown().await;
    drop(out);
    let mut writer_task = writer_task;
    // Let queued replies (e.g. the shutdown Ok) reach the peer, unless the
    // peer is gone: a virtio port blocks writes while no host end is
    // connected, and a writer left behind would keep the port open (so it
    // cannot be reopened), hand this session's replies to the next host,
    // and, when it finally closed the port, discard the requests the next
    // host had already sent.
    let wait = match end {
        Ok(SessionEnd::Closed) => Duration::ZERO,
        _ => Duration::from_secs(2),
    };
    if tokio::time::timeout(wait, &mut writer_task).await.is_err() {
        writer_task.abort();
        let _ = writer_task.await;
    }
    end
}

fn io_response(path: &str, e: &std::io::Error) -> Response {
    let kind = if e.kind() == std::io::ErrorKind::NotFound {
        ErrorKind::NotFound
    } else {
        ErrorKind::Io
    };
    Response::error(kind, format!("{path}: {e}"))
}

struct Running {
    child: tokio::process::Child,
    pid: u32,
    cancel: Arc<Cancels>,
    stdin_rx: Option<mpsc::Receiver<Chunk>>,
    timeout: Option<Duration>,
    drain_grace: Duration,
    cgroup: Option<PathBuf>,
    /// The job cgroup and its OOM kill count when the command started.
    oom_before: Option<(PathBuf, u64)>,
    /// SIGINT, then SIGTERM, before the tree is killed ([`ExecSpec::interrupt_first`]).
    interrupt_first: bool,
}

/// Finds `prog` the way `execvp` would, with the PATH of the job's env.
fn resolve_program(prog: &str, spec: &ExecSpec) -> Option<PathBuf> {
    if prog.contains('/') {
        let p = Path::new(prog);
        let p = match (&spec.cwd, p.is_absolute()) {
            (Some(cwd), false) => Path::new(cwd).join(p),
            _ => p.to_path_buf(),
        };
        return p.is_file().then_some(p);
    }
    let path = spec
        .env
        .get("PATH")
        .map(String::as_str)
        .unwrap_or("/usr/local/bin:/usr/bin:/bin");
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(prog))
        .find(|p| {
            std::fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

fn start_exec(
    id: u64,
    spec: ExecSpec,
    cfg: &AgentConfig,
    routes: &Routes,
) -> Result<Running, Response> {
    let Some(prog) = spec.argv.first() else {
        return Err(Response::error(ErrorKind::Invalid, "empty argv"));
    };
    if let Some(cwd) = &spec.cwd {
        if !Path::new(cwd).is_dir() {
            return Err(Response::error(
                ErrorKind::Spawn,
                format!("working directory {cwd} does not exist"),
            ));
        }
    }
    let Some(resolved) = resolve_program(prog, &spec) else {
        return Err(Response::error(
            ErrorKind::Spawn,
            format!("{prog}: command not found"),
        ));
    };
    let cgroup = cfg.cgroup_root.as_ref().and_then(|root| {
        let seq = CGROUP_SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = root.join(format!("fb-exec-{}-{id}-{seq}", std::process::id()));
        std::fs::create_dir(&dir).ok().map(|()| dir)
    });
    let mut cmd = Command::new(&resolved);
    cmd.args(&spec.argv[1..]);
    crate::cgroup::reset_oom_score_before_exec(&mut cmd);
    if let Some(cg) = &cgroup {
        crate::cgroup::enter_before_exec(&mut cmd, cg).map_err(|e| {
            Response::error(ErrorKind::Spawn, format!("cgroup {}: {e}", cg.display()))
        })?;
    }
    let label = spec.label.clone().unwrap_or_else(|| spec.argv.join(" "));
    cmd.env_clear()
        .envs(&spec.env)
        .process_group(0)
        .stdin(if spec.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(cwd) = &spec.cwd {
        cmd.current_dir(cwd);
    }
    let child = cmd
        .spawn()
        .map_err(|e| Response::error(ErrorKind::Spawn, format!("cannot start {prog}: {e}")))?;
    let pid = child.id().unwrap_or(0);
    if let Some(cg) = &cgroup {
        crate::guard::command_started(cg, &label);
    }
    let cancel = Arc::new(Cancels::default());
    let (stdin_tx, stdin_rx) = if spec.stdin {
        let (tx, rx) = mpsc::channel(16);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    lock(routes).insert(
        id,
        Route::Exec(ExecCtl {
            pid,
            stdin: stdin_tx,
            cancel: cancel.clone(),
            cgroup: cgroup.clone(),
        }),
    );
    Ok(Running {
        child,
        pid,
        cancel,
        stdin_rx,
        timeout: spec.timeout_ms.map(Duration::from_millis),
        drain_grace: Duration::from_millis(spec.drain_grace_ms),
        cgroup,
        interrupt_first: spec.interrupt_first,
        oom_before: cfg
            .cgroup_root
            .as_ref()
            .and_then(|r| Some((r.clone(), crate::jobcgroup::oom_kills(r)?))),
    })
}

/// The host's cancellations of one command: the first stops it (at once, or with SIGINT and
/// SIGTERM first), a second ends those graces.
#[derive(Default)]
struct Cancels {
    notify: Notify,
    count: std::sync::atomic::AtomicU32,
}

impl Cancels {
    fn cancel(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Returns once the command has been cancelled `n` times or more.
    async fn at_least(&self, n: u32) {
        loop {
            let notified = self.notify.notified();
            if self.count.load(Ordering::SeqCst) >= n {
                return;
            }
            notified.await;
        }
    }
}

/// How GitHub's runner stops a step, which the host asks for with
/// [`ExecSpec::interrupt_first`]: SIGINT to the command's process, 7.5 s to exit, then SIGTERM
/// and 2.5 s. Returns when it has exited, the time is up or the host cancels again (its
/// tree is killed next).
async fn ask_to_stop(run: &mut Running) {
    let Ok(pid) = i32::try_from(run.pid) else {
        return;
    };
    for (signal, grace) in [
        (Signal::SIGINT, INTERRUPT_GRACE),
        (Signal::SIGTERM, TERMINATE_GRACE),
    ] {
        if nix::sys::signal::kill(Pid::from_raw(pid), signal).is_err() {
            return;
        }
        tokio::select! {
            r = tokio::time::timeout(grace, run.child.wait()) => {
                if r.is_ok() {
                    return;
                }
            }
            // A second cancellation (the host's second Ctrl-C): no more waiting.
            () = run.cancel.at_least(2) => return,
        }
    }
}

/// How long a command asked to stop with SIGINT has before SIGTERM.
pub const INTERRUPT_GRACE: Duration = Duration::from_millis(7500);
/// How long it then has before its tree is killed.
pub const TERMINATE_GRACE: Duration = Duration::from_millis(2500);

fn kill_tree(pid: u32, cgroup: Option<&Path>) {
    if let Some(cg) = cgroup {
        let _ = std::fs::write(cg.join("cgroup.kill"), b"1");
    }
    if pid > 1 {
        let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
}

async fn pump<R: AsyncRead + Unpin>(mut r: R, stream: OutStream, id: u64, out: Out) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Coalesce what is already in the pipe (programs often write 4-8 KiB
        // at a time) without waiting: fewer, larger frames.
        let mut eof = false;
        while n < buf.len() {
            match tokio::time::timeout(Duration::ZERO, r.read(&mut buf[n..])).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    eof = true;
                    break;
                }
                Ok(Ok(m)) => n += m,
                Err(_) => break,
            }
        }
        send(&out, id, Response::Output { stream }, &buf[..n]).await;
        if eof {
            break;
        }
    }
}

async fn supervise(id: u64, mut run: Running, out: Out, routes: Routes) {
    let started = std::time::Instant::now();
    send(&out, id, Response::Started { pid: run.pid }, b"").await;
    let mut pumps = JoinSet::new();
    if let Some(o) = run.child.stdout.take() {
        pumps.spawn(pump(o, OutStream::Stdout, id, out.clone()));
    }
    if let Some(e) = run.child.stderr.take() {
        pumps.spawn(pump(e, OutStream::Stderr, id, out.clone()));
    }
    let stdin_task = match (run.child.stdin.take(), run.stdin_rx.take()) {
        (Some(mut w), Some(mut rx)) => Some(tokio::spawn(async move {
            while let Some((data, eof)) = rx.recv().await {
                if w.write_all(&data).await.is_err() || eof {
                    break;
                }
            }
            let _ = w.shutdown().await;
        })),
        _ => None,
    };

    let timeout = async {
        match run.timeout {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    let stop = tokio::select! {
        res = run.child.wait() => Err(res),
        _ = timeout => Ok("timeout"),
        () = run.cancel.at_least(1) => Ok("cancel"),
    };
    let killed = match stop {
        Err(res) => {
            // Ended now, whatever it left running: a bomb it left is named as a finished
            // command's from this moment, not after its output is drained.
            if let Some(cg) = &run.cgroup {
                crate::guard::command_ended(cg, false);
            }
            res
        }
        Ok(why) => {
            if run.interrupt_first {
                ask_to_stop(&mut run).await;
            }
            kill_tree(run.pid, run.cgroup.as_deref());
            Err(std::io::Error::other(why))
        }
    };
    let status = match killed {
        Ok(st) => match (st.code(), st.signal()) {
            (Some(code), _) => ExitStatus::Exited { code },
            (None, Some(signal)) => ExitStatus::Signaled { signal },
            (None, None) => ExitStatus::Exited { code: -1 },
        },
        Err(e) => {
            let _ = run.child.wait().await;
            if e.to_string() == "timeout" {
                ExitStatus::TimedOut
            } else {
                ExitStatus::Cancelled
            }
        }
    };
    let grace = if matches!(status, ExitStatus::TimedOut | ExitStatus::Cancelled) {
        Duration::from_millis(200)
    } else {
        run.drain_grace
    };
    let drained =
        tokio::time::timeout(grace, async { while pumps.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        pumps.shutdown().await;
    }
    if let Some(t) = stdin_task {
        t.abort();
    }
    lock(&routes).remove(&id);
    if let Some(cg) = &run.cgroup {
        // Fails while background processes live on in it; they are killed
        // with the VM (or by the fork guard, which then names this command).
        let removed = std::fs::remove_dir(cg).is_ok();
        crate::guard::command_ended(cg, removed);
    }
    // A process the kernel's OOM killer took shows only as "Killed" in a shell's output.
    let oom = run.oom_before.as_ref().and_then(|(root, before)| {
        let now = crate::jobcgroup::oom_kills(root)?;
        (now > *before).then(|| crate::jobcgroup::oom_note(root, now - before))
    });
    for note in oom
        .into_iter()
        .chain(crate::guard::since(started, run.cgroup.as_deref()))
    {
        let line = format!("firebreak-agent: {note}\n");
        send(
            &out,
            id,
            Response::Output {
                stream: OutStream::Stderr,
            },
            line.as_bytes(),
        )
        .await;
    }
    send(&out, id, Response::Exited { status }, b"").await;
}

/// Whether `meta` is something other than a regular file or a directory (a FIFO, a device,
/// a socket): opening it, reading it or writing it may block for as long as its other end
/// likes, so such files are served through tokio's blocking pool, never on the task.
fn is_special(meta: &std::fs::Metadata) -> bool {
    !meta.is_file() && !meta.is_dir()
}

/// Opens the regular file `path` on the task, `O_NONBLOCK` so that a path swapped for a FIFO
/// after the caller's check cannot make the open wait; the opened file is checked again and
/// anything but a regular file is refused. (Regular files ignore `O_NONBLOCK`, except the few
/// kernel files that stream, such as `/proc/kmsg`, which then answer "would block" at once.)
fn open_regular(path: &str, opts: &mut std::fs::OpenOptions) -> std::io::Result<std::fs::File> {
    let f = opts.custom_flags(nix::libc::O_NONBLOCK).open(path)?;
    if f.metadata()?.is_file() {
        Ok(f)
    } else {
        Err(std::io::Error::other(
            "not a regular file (it changed while being opened)",
        ))
    }
}

/// Where an upload goes.
enum Sink {
    File(std::fs::File),
    Special(tokio::fs::File),
}

impl Sink {
    async fn create(path: &str) -> std::io::Result<Sink> {
        if std::fs::metadata(path).is_ok_and(|m| is_special(&m)) {
            return Ok(Sink::Special(tokio::fs::File::create(path).await?));
        }
        if let Some(parent) = Path::new(path).parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        Ok(Sink::File(open_regular(path, &mut opts)?))
    }

    async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::File(f) => f.write_all(data),
            Sink::Special(f) => f.write_all(data).await,
        }
    }

    async fn finish(self) -> std::io::Result<()> {
        match self {
            Sink::File(_) => Ok(()),
            Sink::Special(mut f) => f.flush().await,
        }
    }
}

async fn write_file(
    path: &str,
    mode: Option<u32>,
    mut rx: mpsc::Receiver<Chunk>,
) -> std::io::Result<()> {
    let mut result = Sink::create(path).await;
    // Keep consuming until eof even after an error, so the upload ends cleanly.
    while let Some((data, eof)) = rx.recv().await {
        if let Ok(f) = &mut result {
            if let Err(e) = f.write_all(&data).await {
                result = Err(e);
            }
        }
        if eof {
            break;
        }
    }
    result?.finish().await?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode.unwrap_or(0o644)))
}

/// Where a download comes from: the counterpart of [`Sink`].
enum Source {
    File(std::fs::File),
    Special(tokio::fs::File),
}

impl Source {
    async fn open(path: &str) -> std::io::Result<Source> {
        let meta = std::fs::metadata(path)?;
        if meta.is_dir() {
            return Err(std::io::Error::other("is a directory"));
        }
        if is_special(&meta) {
            return Ok(Source::Special(tokio::fs::File::open(path).await?));
        }
        Ok(Source::File(open_regular(
            path,
            std::fs::OpenOptions::new().read(true),
        )?))
    }

    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Source::File(f) => f.read(buf),
            Source::Special(f) => f.read(buf).await,
        }
    }
}

/// Sends the file's contents until its end, or until the host cancels the read (`Cancel`
/// with this request's id: it has all it will take, as from an endless `/dev/zero`).
async fn read_file(
    id: u64,
    path: &str,
    out: &Out,
    stop: &std::sync::atomic::AtomicBool,
) -> std::io::Result<()> {
    let mut f = Source::open(path).await?;
    let mut buf = vec![0u8; CHUNK_LEN];
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let n = f.read(&mut buf).await?;
        if n == 0 {
            send(out, id, Response::Data { eof: true }, b"").await;
            return Ok(());
        }
        send(out, id, Response::Data { eof: false }, &buf[..n]).await;
    }
}

async fn remove(path: &str) -> std::io::Result<()> {
    let res = match std::fs::symlink_metadata(path) {
        // A tree can be large: removed on a blocking thread.
        Ok(m) if m.is_dir() => {
            let p = PathBuf::from(path);
            tokio::task::spawn_blocking(move || std::fs::remove_dir_all(p))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)))
        }
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    };
    match res {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// A blocking reader over upload chunks.
struct ChunkReader {
    rx: mpsc::Receiver<Chunk>,
    buf: Vec<u8>,
    pos: usize,
    eof: bool,
}

impl Read for ChunkReader {
    fn read(&mut self, dst: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.buf.len() {
            if self.eof {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some((data, eof)) => {
                    self.buf = data;
                    self.pos = 0;
                    self.eof = eof;
                }
                None => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "upload cut short",
                    ))
                }
            }
        }
        let n = dst.len().min(self.buf.len() - self.pos);
        dst[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn tar_in(dest: &str, rx: mpsc::Receiver<Chunk>) -> std::io::Result<()> {
    let mut reader = ChunkReader {
        rx,
        buf: Vec::new(),
        pos: 0,
        eof: false,
    };
    let res = std::fs::create_dir_all(dest).and_then(|()| {
        let mut ar = tar::Archive::new(&mut reader);
        ar.set_preserve_permissions(true);
        ar.set_preserve_mtime(true);
        ar.set_overwrite(true);
        ar.unpack(dest)
    });
    // Drain what is left (tar padding, or everything after an error).
    let mut sink = [0u8; 8192];
    while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
    res
}

/// A blocking writer that sends `Data` frames.
struct ChunkWriter {
    id: u64,
    out: Out,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send_buf(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let bytes = encode_frame(self.id, &Response::Data { eof: false }, &self.buf)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        self.buf.clear();
        self.out
            .blocking_send(bytes)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "session closed"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(CHUNK_LEN - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK_LEN {
            self.send_buf()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send_buf()
    }
}

fn tar_out(id: u64, path: &str, out: Out) -> std::io::Result<()> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_dir() {
        return Err(std::io::Error::other("not a directory"));
    }
    let mut b = tar::Builder::new(ChunkWriter {
        id,
        out,
        buf: Vec::new(),
    });
    b.follow_symlinks(false);
    b.append_dir_all(".", path)?;
    let mut w = b.into_inner()?;
    w.flush()
}

/// Sends one request frame (used by tests that speak the raw protocol).
pub async fn send_raw<W: AsyncWrite + Unpin>(
    w: &mut W,
    id: u64,
    req: &Request,
    body: &[u8],
) -> Result<(), FrameError> {
    write_frame(w, id, req, body).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A FIFO met where a regular file was expected (a path swapped after the check) is
    /// refused at once, for reading and for writing, instead of waiting for its other end.
    #[test]
    fn open_regular_refuses_a_fifo_without_waiting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        let p = fifo.to_string_lossy().into_owned();
        let read = open_regular(&p, std::fs::OpenOptions::new().read(true));
        assert!(read.is_err(), "read open of a FIFO: {read:?}");
        let write = open_regular(&p, std::fs::OpenOptions::new().write(true));
        assert!(write.is_err(), "write open of a FIFO: {write:?}");
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").expect("write");
        let ok = open_regular(
            &file.to_string_lossy(),
            std::fs::OpenOptions::new().read(true),
        );
        assert!(ok.is_ok(), "{ok:?}");
    }
}
