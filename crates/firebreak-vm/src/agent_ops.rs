//! The sandbox of every VM backend, over the guest agent: [`AgentSandbox`] holds the VM and
//! its agent connection, confines file operations to the job's tree and splits `exec` output
//! into lines. QEMU's [`crate::sandbox::VmSandbox`] and Firecracker's
//! [`crate::firecracker::FirecrackerSandbox`] are this type over their VM handle
//! ([`GuestVm`]), so the two cannot drift apart.

use std::path::{Component, Path};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use firebreak_agent::protocol::FrameError;
use firebreak_agent::{AgentClient, ClientError, ExecEvent, ExecSpec, OutStream};
use firebreak_runner::sandbox::{
    cancelled, BoxFuture, ExecRequest, ExitStatus, JobLayout, OutputEvent, Sandbox, SandboxError,
    Stream, MAX_LINE_BYTES,
};
use tokio::sync::{mpsc, Mutex};

use crate::VmError;

/// What an [`AgentSandbox`] needs of the VM behind it.
pub trait GuestVm: Send + 'static {
    /// The backend's name ([`Sandbox::backend`]).
    const BACKEND: &'static str;
    /// Stops the VM at once. A job's VM is thrown away with its disk overlay, so nothing in
    /// it needs a clean power-off, and waiting for one cost seconds where the guest cannot
    /// power its machine off (a kernel without ACPI on `microvm` only halts).
    fn discard(&mut self) -> BoxFuture<'_, ()>;
    /// Grows the VM's root drive to `bytes` and lets the guest see the new capacity (a
    /// virtio config interrupt); the filesystem on it is the caller's
    /// ([`AgentSandbox::grow_root_fs`]).
    fn grow_root_drive(&mut self, bytes: u64) -> BoxFuture<'_, Result<(), String>>;
}

pub(crate) fn gib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 30)
}

/// A job's disk size from its `runs-on` label, at most `max` (noted when capped).
pub(crate) fn capped_disk(bytes: u64, max: u64, notes: &mut Vec<String>) -> u64 {
    if bytes > max {
        notes.push(format!(
            "disk size {:.0} GiB capped to {:.0} GiB, the most a job's disk may grow to",
            gib(bytes),
            gib(max)
        ));
    }
    bytes.min(max)
}

/// A note when a job's disk may grow past what the host has free where the VM's disk
/// lives: the disk file is sparse (or an overlay), so nothing fails until the job writes
/// that much. `dir`: where it lives; `base`: the image's root filesystem, which the VM's
/// disk need not hold again.
pub(crate) fn disk_space_note(dir: &Path, base: u64, disk_bytes: u64) -> Option<String> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    let free = st.blocks_available().saturating_mul(st.fragment_size());
    (disk_bytes.saturating_sub(base) > free).then(|| {
        format!(
            "the job's disk may grow to {:.0} GiB, but the host has only {:.1} GiB free where it lives ({}): the job fails if it writes more",
            gib(disk_bytes),
            gib(free),
            dir.display()
        )
    })
}

/// How a job's VM was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmOrigin {
    /// Taken ready from the warm pool.
    Pool,
    /// Restored from the snapshot.
    Restored,
    /// Booted.
    Cold,
}

/// One job's VM, reached through its agent.
pub struct AgentSandbox<V: GuestVm> {
    pub(crate) layout: JobLayout,
    pub(crate) notes: Vec<String>,
    pub(crate) client: Arc<AgentClient>,
    vm: Arc<Mutex<Option<V>>>,
    destroyed: Arc<AtomicBool>,
    origin: VmOrigin,
    /// Why the VM was killed: found hung ([`AgentSandbox::watch_liveness`]), or a cancelled
    /// command it did not stop ([`CANCEL_GRACE`]).
    killed_why: Arc<OnceLock<String>>,
    liveness: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl<V: GuestVm> Drop for AgentSandbox<V> {
    fn drop(&mut self) {
        self.stop_watching();
    }
}

impl<V: GuestVm> AgentSandbox<V> {
    /// Takes the VM out without a graceful shutdown (for a VM whose agent
    /// stopped answering); the sandbox counts as destroyed afterwards.
    pub(crate) async fn take_vm(&self) -> Option<V> {
        self.destroyed.store(true, Ordering::SeqCst);
        self.vm.lock().await.take()
    }

    /// Gives the job a root filesystem of `bytes` (a `runs-on` disk label): grows the VM's
    /// root drive ([`GuestVm::grow_root_drive`]), waits for the guest to see it, then grows
    /// the mounted ext4 online (`resize2fs`). The image's filesystem cannot shrink: a
    /// smaller size is noted as not applied.
    pub(crate) async fn grow_root_fs(&mut self, bytes: u64) -> Result<(), SandboxError> {
        let t0 = std::time::Instant::now();
        const SECTORS: &str = "/sys/block/vda/size";
        let unavailable = |reason: String| SandboxError::Unavailable {
            backend: V::BACKEND,
            reason,
        };
        let sectors = self
            .client
            .read_file(SECTORS)
            .await
            .map_err(|e| agent_err("read", Path::new(SECTORS), e))?
            .and_then(|b| String::from_utf8_lossy(&b).trim().parse::<u64>().ok())
            .ok_or_else(|| unavailable("cannot read the size of the guest's root disk".into()))?;
        let current = sectors * 512;
        let want = bytes.div_ceil(1 << 20) << 20;
        if want <= current {
            if want < current {
                self.notes.push(format!(
                    "disk size {:.1} GiB not applied: the image's root filesystem is {:.1} GiB and cannot shrink",
                    gib(want),
                    gib(current)
                ));
            }
            return Ok(());
        }
        match self.vm.lock().await.as_mut() {
            Some(vm) => vm
                .grow_root_drive(want)
                .await
                .map_err(|e| unavailable(format!("cannot grow the root disk: {e}")))?,
            None => return Err(SandboxError::Destroyed),
        }
        // The guest learns the new capacity from a config interrupt: wait for it, then
        // grow the mounted filesystem.
        let script = format!(
            "i=0; while [ \"$(cat {SECTORS})\" != {} ]; do i=$((i+1)); [ $i -gt 500 ] && {{ echo 'the guest did not see the larger disk' >&2; exit 1; }}; sleep 0.01; done; exec resize2fs /dev/vda",
            want / 512
        );
        let spec =
            ExecSpec::new(["/bin/sh", "-c", &script]).env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        let run = async { self.client.exec(spec).await?.collect().await };
        let (_, err, status) = run
            .await
            .map_err(|e| unavailable(format!("resize2fs: {e}")))?;
        if !matches!(status, firebreak_agent::ExitStatus::Exited { code: 0 }) {
            return Err(unavailable(format!(
                "cannot grow the root filesystem to {:.1} GiB ({status:?}): {}",
                gib(want),
                String::from_utf8_lossy(&err).trim()
            )));
        }
        self.notes.push(format!(
            "root filesystem grown from {:.1} to {:.1} GiB in {:.2}s",
            gib(current),
            gib(want),
            t0.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    /// `client` is `vm`'s agent connection.
    pub(crate) fn new(
        client: Arc<AgentClient>,
        vm: V,
        layout: JobLayout,
        notes: Vec<String>,
        origin: VmOrigin,
    ) -> Self {
        AgentSandbox {
            layout,
            notes,
            client,
            vm: Arc::new(Mutex::new(Some(vm))),
            destroyed: Arc::new(AtomicBool::new(false)),
            origin,
            killed_why: Arc::new(OnceLock::new()),
            liveness: std::sync::Mutex::new(None),
        }
    }

    /// Watches the agent while the job runs: a ping every quarter of
    /// `limit`; one left unanswered for `limit` means the guest hangs (a
    /// wedged kernel, a stopped agent), and the VM is killed. Requests in
    /// flight then fail at once, saying so, instead of waiting for the job's
    /// timeout. A VM that died shows itself without this (its connection
    /// closes).
    pub(crate) fn watch_liveness(&self, limit: Duration) {
        let client = self.client.clone();
        let killer = self.killer();
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(limit / 4).await;
                if killer.destroyed.load(Ordering::SeqCst) {
                    return;
                }
                match tokio::time::timeout(limit, client.ping()).await {
                    Ok(Ok(())) => {}
                    // The connection is gone: requests report that themselves.
                    Ok(Err(_)) => return,
                    // Unread because this side holds the guest's output back (its reporter
                    // is behind, a paused pager): not the guest's doing.
                    Err(_) if client.is_delivering() => {}
                    Err(_) => {
                        killer
                            .kill(format!(
                                "the VM stopped answering (its agent left a ping unanswered for {:.0}s) and was killed; \
                                 the job may have wedged the guest: run it again, or with --sandbox namespace to see where it hangs \
                                 (a guest that is only slow on this host gets longer with --vm-hang-timeout SECS)",
                                limit.as_secs_f64()
                            ))
                            .await;
                        return;
                    }
                }
            }
        });
        if let Some(old) = lock(&self.liveness).replace(task) {
            old.abort();
        }
    }

    fn killer(&self) -> Killer<V> {
        Killer {
            vm: self.vm.clone(),
            destroyed: self.destroyed.clone(),
            killed_why: self.killed_why.clone(),
        }
    }

    fn stop_watching(&self) {
        if let Some(t) = lock(&self.liveness).take() {
            t.abort();
        }
    }

    /// `e`, or why the VM was killed when it was.
    fn explain(&self, e: SandboxError) -> SandboxError {
        match self.killed_why.get() {
            Some(reason) => SandboxError::Unavailable {
                backend: V::BACKEND,
                reason: reason.clone(),
            },
            None => e,
        }
    }

    /// How this sandbox's VM was obtained.
    pub fn origin(&self) -> VmOrigin {
        self.origin
    }

    /// The VM, for callers that need more than the trait (console, stats,
    /// snapshots).
    pub fn vm(&self) -> &Mutex<Option<V>> {
        &self.vm
    }

    /// Creates `dirs` in the guest in one agent round trip, without
    /// starting a process (under TCG every guest `exec` costs tens of
    /// milliseconds).
    pub(crate) async fn make_dirs(&self, dirs: &[&Path]) -> Result<(), SandboxError> {
        let dirs: Vec<String> = dirs.iter().map(|d| guest_str(d)).collect();
        let refs: Vec<&str> = dirs.iter().map(String::as_str).collect();
        self.client
            .make_dirs(&refs)
            .await
            .map_err(|e| agent_err("create", &self.layout.root, e))
    }

    /// Limits the job's processes and threads together to `n` (the job
    /// cgroup's `pids.max`, see [`crate::snapshot::JOB_CGROUP`]).
    pub(crate) async fn set_pids_max(&self, n: u32) -> Result<(), SandboxError> {
        use crate::snapshot::JOB_PIDS_MAX;
        self.client
            .write_file(JOB_PIDS_MAX, format!("{n}\n").as_bytes(), None)
            .await
            .map_err(|e| agent_err("limit pids in", Path::new(JOB_PIDS_MAX), e))
    }

    fn live(&self) -> Result<(), SandboxError> {
        if self.destroyed.load(Ordering::SeqCst) {
            Err(self.explain(SandboxError::Destroyed))
        } else {
            Ok(())
        }
    }
}

/// What kills a job's VM from a task of its own, saying why.
struct Killer<V: GuestVm> {
    vm: Arc<Mutex<Option<V>>>,
    destroyed: Arc<AtomicBool>,
    killed_why: Arc<OnceLock<String>>,
}

impl<V: GuestVm> Killer<V> {
    /// Kills the VM; requests in flight and later ones fail with `reason`.
    async fn kill(&self, reason: String) {
        let _ = self.killed_why.set(reason);
        self.destroyed.store(true, Ordering::SeqCst);
        // Dropping the VM kills it; the agent connection closes.
        drop(self.vm.lock().await.take());
    }
}

/// How long a cancelled command may take to stop (the agent kills its process tree at once,
/// or after GitHub's SIGINT and SIGTERM graces when asked to) before its VM is killed instead: a guest that cannot do it in this time is wedged, and
/// the job's timeout or Ctrl-C must not wait on it.
pub(crate) const CANCEL_GRACE: Duration = Duration::from_secs(15);

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<V: GuestVm> Sandbox for AgentSandbox<V> {
    fn backend(&self) -> &'static str {
        V::BACKEND
    }

    fn layout(&self) -> &JobLayout {
        &self.layout
    }

    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }

    fn copy_in<'a>(
        &'a self,
        host_src: &'a Path,
        dest: &'a Path,
    ) -> BoxFuture<'a, Result<(), SandboxError>> {
        Box::pin(async move {
            self.live()?;
            copy_in(&self.client, &self.layout, host_src, dest)
                .await
                .map_err(|e| self.explain(e))
        })
    }

    fn copy_out<'a>(
        &'a self,
        src: &'a Path,
        host_dest: &'a Path,
    ) -> BoxFuture<'a, Result<(), SandboxError>> {
        Box::pin(async move {
            self.live()?;
            copy_out(&self.client, &self.layout, src, host_dest)
                .await
                .map_err(|e| self.explain(e))
        })
    }

    fn read_file<'a>(
        &'a self,
        path: &'a Path,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, SandboxError>> {
        Box::pin(async move {
            self.live()?;
            read_file(&self.client, &self.layout, path)
                .await
                .map_err(|e| self.explain(e))
        })
    }

    fn write_file<'a>(
        &'a self,
        path: &'a Path,
        contents: Vec<u8>,
        mode: Option<u32>,
    ) -> BoxFuture<'a, Result<(), SandboxError>> {
        Box::pin(async move {
            self.live()?;
            write_file(&self.client, &self.layout, path, contents, mode)
                .await
                .map_err(|e| self.explain(e))
        })
    }

    fn remove<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, Result<(), SandboxError>> {
        Box::pin(async move {
            self.live()?;
            remove(&self.client, &self.layout, path)
                .await
                .map_err(|e| self.explain(e))
        })
    }

    fn exec<'a>(
        &'a self,
        req: ExecRequest,
        output: mpsc::Sender<OutputEvent>,
    ) -> BoxFuture<'a, Result<ExitStatus, SandboxError>> {
        Box::pin(async move {
            self.live()?;
            let cancel = req.cancel.clone();
            // A command asked to stop gently has GitHub's SIGINT and SIGTERM graces first.
            let grace = if req.interrupt_first {
                CANCEL_GRACE
                    + firebreak_runner::sandbox::INTERRUPT_GRACE
                    + firebreak_runner::sandbox::TERMINATE_GRACE
            } else {
                CANCEL_GRACE
            };
            let run = exec(&self.client, &self.layout, req, output);
            tokio::pin!(run);
            let stuck = async {
                cancelled(cancel.as_ref()).await;
                tokio::time::sleep(grace).await;
            };
            tokio::select! {
                r = &mut run => r.map_err(|e| self.explain(e)),
                () = stuck => {
                    self.killer()
                        .kill(format!(
                            "the command was cancelled (a timeout or Ctrl-C) and had not stopped {:.0}s later: \
                             the guest may be wedged (a fork bomb, a kernel stuck on I/O), so its VM was killed",
                            grace.as_secs_f64()
                        ))
                        .await;
                    Err(self.explain(SandboxError::Destroyed))
                }
            }
        })
    }

    fn destroy(&self) -> BoxFuture<'_, Result<(), SandboxError>> {
        Box::pin(async move {
            self.destroyed.store(true, Ordering::SeqCst);
            self.stop_watching();
            if let Some(mut vm) = self.vm.lock().await.take() {
                vm.discard().await;
            }
            Ok(())
        })
    }
}

pub(crate) fn agent_err(op: &'static str, path: &Path, e: ClientError) -> SandboxError {
    SandboxError::Io {
        op,
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// Where [`host_random`] reads.
pub(crate) const HOST_RANDOM: &str = "/dev/urandom";

/// Fills `buf` from the host's randomness (fresh entropy and identities for
/// guests, which must never share their snapshot's).
pub(crate) fn host_random(buf: &mut [u8]) -> std::io::Result<()> {
    std::fs::File::open(HOST_RANDOM).and_then(|mut f| std::io::Read::read_exact(&mut f, buf))
}

/// Gives the guest an `/etc/machine-id` of its own (32 random hex digits, as
/// systemd writes it; D-Bus and some test suites expect one): a clone must
/// not keep its snapshot's.
pub(crate) async fn set_machine_id(client: &AgentClient) -> Result<(), VmError> {
    let mut id = [0u8; 16];
    host_random(&mut id).map_err(|source| VmError::Io {
        op: "read",
        path: HOST_RANDOM.into(),
        source,
    })?;
    let mut text: String = id.iter().map(|b| format!("{b:02x}")).collect();
    text.push('\n');
    client
        .write_file("/etc/machine-id", text.as_bytes(), Some(0o444))
        .await?;
    Ok(())
}

/// Checks that a guest path is absolute, has no `..` and lies under `root`.
pub(crate) fn confine(root: &Path, p: &Path) -> Result<String, SandboxError> {
    if !p.is_absolute()
        || p.components().any(|c| matches!(c, Component::ParentDir))
        || !p.starts_with(root)
    {
        return Err(SandboxError::PathOutsideSandbox(p.to_path_buf()));
    }
    Ok(guest_str(p))
}

pub(crate) fn guest_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// A job or workspace name as a single safe path component.
pub(crate) fn sanitize(s: &str) -> Result<String, SandboxError> {
    if s.is_empty() {
        return Err(SandboxError::InvalidSpec("empty name".into()));
    }
    let c: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if c == "." || c == ".." {
        return Err(SandboxError::InvalidSpec(format!(
            "{s:?} is not a usable name"
        )));
    }
    Ok(c)
}

async fn copy_in(
    client: &AgentClient,
    layout: &JobLayout,
    host_src: &Path,
    dest: &Path,
) -> Result<(), SandboxError> {
    let d = confine(&layout.root, dest)?;
    if !host_src.is_dir() {
        return Err(SandboxError::Io {
            op: "copy",
            path: host_src.to_path_buf(),
            source: std::io::Error::other("not a directory"),
        });
    }
    client
        .tar_in(host_src, &d)
        .await
        .map_err(|e| agent_err("copy into", dest, e))
}

async fn copy_out(
    client: &AgentClient,
    layout: &JobLayout,
    src: &Path,
    host_dest: &Path,
) -> Result<(), SandboxError> {
    let s = confine(&layout.root, src)?;
    client
        .copy_out(&s, host_dest)
        .await
        .map_err(|e| agent_err("copy out of", src, e))
}

async fn read_file(
    client: &AgentClient,
    layout: &JobLayout,
    path: &Path,
) -> Result<Option<Vec<u8>>, SandboxError> {
    let p = confine(&layout.root, path)?;
    // A FIFO or device where a file command's file was (`mkfifo "$GITHUB_OUTPUT"`), or a
    // link that could lead to one, would keep the read waiting for a writer: refused, as the
    // local sandboxes refuse them (they open with O_NOFOLLOW).
    match client.stat(&p).await {
        Ok(None) => return Ok(None),
        Ok(Some(st)) if st.kind != firebreak_agent::FileKind::File => {
            return Err(SandboxError::Io {
                op: "read",
                path: path.to_path_buf(),
                source: std::io::Error::other("not a regular file"),
            })
        }
        Ok(Some(_)) => {}
        Err(e) => return Err(agent_err("stat", path, e)),
    }
    client
        .read_file(&p)
        .await
        .map_err(|e| agent_err("read", path, e))
}

async fn write_file(
    client: &AgentClient,
    layout: &JobLayout,
    path: &Path,
    contents: Vec<u8>,
    mode: Option<u32>,
) -> Result<(), SandboxError> {
    let p = confine(&layout.root, path)?;
    client
        .write_file(&p, &contents, mode)
        .await
        .map_err(|e| agent_err("write", path, e))
}

async fn remove(client: &AgentClient, layout: &JobLayout, path: &Path) -> Result<(), SandboxError> {
    let p = confine(&layout.root, path)?;
    client
        .remove(&p)
        .await
        .map_err(|e| agent_err("remove", path, e))
}

async fn exec(
    client: &AgentClient,
    layout: &JobLayout,
    req: ExecRequest,
    output: mpsc::Sender<OutputEvent>,
) -> Result<ExitStatus, SandboxError> {
    let Some(program) = req.argv.first().cloned() else {
        return Err(SandboxError::InvalidRequest("argv is empty".into()));
    };
    let cwd = match &req.cwd {
        Some(c) if !c.is_absolute() => {
            return Err(SandboxError::InvalidRequest(format!(
                "cwd {} is not absolute",
                c.display()
            )))
        }
        Some(c) => c.clone(),
        None => layout.workspace.clone(),
    };
    let spec = ExecSpec {
        argv: req.argv.clone(),
        env: req.env.clone(),
        cwd: Some(guest_str(&cwd)),
        timeout_ms: req
            .timeout
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        stdin: req.stdin.is_some(),
        drain_grace_ms: u64::try_from(req.drain_grace.as_millis()).unwrap_or(u64::MAX),
        interrupt_first: req.interrupt_first,
        label: req.label.clone(),
    };
    let mut h = client.exec(spec).await.map_err(|e| match e {
        ClientError::Agent { message, .. } => SandboxError::Spawn {
            program: program.clone(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, message),
        },
        // What `execve` says of an argv and environment it cannot take.
        ClientError::Frame(FrameError::TooLarge { header, .. }) => SandboxError::Spawn {
            program: program.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::ArgumentListTooLong,
                format!(
                    "its arguments and environment ({} KiB) are too long",
                    header >> 10
                ),
            ),
        },
        other => agent_err("exec", &cwd, other),
    })?;
    if let Some(data) = &req.stdin {
        h.write_stdin(data, true)
            .await
            .map_err(|e| agent_err("stdin", &cwd, e))?;
    }
    let mut splitters = [
        (Stream::Stdout, LineSplitter::default()),
        (Stream::Stderr, LineSplitter::default()),
    ];
    let cancel = req.cancel.clone();
    let kill = req.kill.clone();
    let mut cancel_sent = false;
    let mut kill_sent = false;
    loop {
        let ev = tokio::select! {
            ev = h.next() => ev,
            _ = cancelled(cancel.as_ref()), if !cancel_sent => {
                cancel_sent = true;
                let _ = client.cancel(h.id()).await;
                continue;
            }
            // The run's kill: a cancel, or a second one, which cuts the agent's
            // SIGINT/SIGTERM graces short.
            _ = cancelled(kill.as_ref()), if !kill_sent => {
                kill_sent = true;
                if cancel_sent {
                    let _ = client.cancel(h.id()).await;
                } else {
                    // Cancel twice: the first starts the graces, the second ends them.
                    cancel_sent = true;
                    let _ = client.cancel(h.id()).await;
                    let _ = client.cancel(h.id()).await;
                }
                continue;
            }
        };
        let ev = ev.map_err(|e| agent_err("exec", &cwd, e))?;
        let mut lines = Vec::new();
        match &ev {
            ExecEvent::Output(s, data) => {
                let i = usize::from(*s == OutStream::Stderr);
                let (stream, sp) = &mut splitters[i];
                sp.push(data, |l| lines.push((*stream, l)));
            }
            ExecEvent::Exited(_) => {
                for (stream, sp) in &mut splitters {
                    sp.finish(|l| lines.push((*stream, l)));
                }
            }
        }
        for (stream, line) in lines {
            // A closed channel means nobody listens: discard, keep running.
            let _ = output.send(OutputEvent { stream, line }).await;
        }
        match ev {
            ExecEvent::Output(..) => {}
            ExecEvent::Exited(st) => {
                return Ok(match st {
                    firebreak_agent::ExitStatus::Exited { code } => ExitStatus::Exited(code),
                    firebreak_agent::ExitStatus::Signaled { signal } => {
                        ExitStatus::Signaled(signal)
                    }
                    firebreak_agent::ExitStatus::TimedOut => ExitStatus::TimedOut,
                    firebreak_agent::ExitStatus::Cancelled => ExitStatus::Cancelled,
                });
            }
        }
    }
}

/// Splits a byte stream into lines the way the runner's local backends do.
#[derive(Default)]
struct LineSplitter {
    buf: Vec<u8>,
}

impl LineSplitter {
    fn push(&mut self, data: &[u8], mut emit: impl FnMut(String)) {
        self.buf.extend_from_slice(data);
        while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
            let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
            line.pop();
            emit(finish_line(line));
        }
        while self.buf.len() > MAX_LINE_BYTES {
            let rest = self.buf.split_off(MAX_LINE_BYTES);
            let line = std::mem::replace(&mut self.buf, rest);
            emit(String::from_utf8_lossy(&line).into_owned());
        }
    }

    fn finish(&mut self, mut emit: impl FnMut(String)) {
        if !self.buf.is_empty() {
            emit(finish_line(std::mem::take(&mut self.buf)));
        }
    }
}

fn finish_line(mut line: Vec<u8>) -> String {
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8_lossy(&line).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_splitter_matches_the_local_contract() {
        let mut s = LineSplitter::default();
        let mut got = Vec::new();
        s.push(b"a\r\nb", |l| got.push(l));
        s.push(b"c\n\xffd", |l| got.push(l));
        s.finish(|l| got.push(l));
        assert_eq!(got, ["a", "bc", "\u{fffd}d"]);
    }

    /// A VM whose only trace is whether it is still there.
    struct FakeVm(Arc<AtomicBool>);

    impl GuestVm for FakeVm {
        const BACKEND: &'static str = "fake";
        fn discard(&mut self) -> BoxFuture<'_, ()> {
            Box::pin(async {})
        }
        fn grow_root_drive(&mut self, _bytes: u64) -> BoxFuture<'_, Result<(), String>> {
            Box::pin(async { Err("a fake VM has no drive".into()) })
        }
    }

    impl Drop for FakeVm {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    /// An agent that starts every command and then neither ends it nor heeds a cancel, as a
    /// wedged guest would; it still answers pings.
    async fn wedged_agent(stream: tokio::io::DuplexStream) {
        use firebreak_agent::protocol::{read_frame, write_frame, Request, Response};
        let (mut r, mut w) = tokio::io::split(stream);
        while let Ok(f) = read_frame::<_, Request>(&mut r).await {
            let reply = match f.msg {
                Request::Exec(_) => Response::Started { pid: 42 },
                Request::Ping => Response::Ok,
                _ => continue,
            };
            if write_frame(&mut w, f.id, &reply, b"").await.is_err() {
                return;
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_command_that_does_not_stop_gets_its_vm_killed() {
        let (host, guest) = tokio::io::duplex(1 << 16);
        tokio::spawn(wedged_agent(guest));
        let (r, w) = tokio::io::split(host);
        let gone = Arc::new(AtomicBool::new(false));
        let sb = AgentSandbox::new(
            Arc::new(AgentClient::new(r, w)),
            FakeVm(gone.clone()),
            JobLayout::new("/home/runner", "repo"),
            Vec::new(),
            VmOrigin::Pool,
        );
        let token = tokio_util::sync::CancellationToken::new();
        let mut req = ExecRequest::new(["sleep", "1000"]);
        req.cancel = Some(token.clone());
        let (tx, _rx) = mpsc::channel(16);
        let run = sb.exec(req, tx);
        tokio::pin!(run);
        // Running, and not cancelled: nothing happens however long it runs.
        assert!(tokio::time::timeout(CANCEL_GRACE * 4, &mut run)
            .await
            .is_err());
        assert!(!gone.load(Ordering::SeqCst));
        token.cancel();
        let err = tokio::time::timeout(CANCEL_GRACE * 2, run)
            .await
            .expect("still waiting on the wedged guest")
            .expect_err("the command cannot have ended");
        assert!(gone.load(Ordering::SeqCst), "the VM is still there");
        assert!(err.to_string().contains("its VM was killed"), "{err}");
        // Later requests say why too.
        let (tx, _rx) = mpsc::channel(16);
        let later = sb.exec(ExecRequest::new(["true"]), tx).await;
        assert!(later.is_err_and(|e| e.to_string().contains("was cancelled")));
    }

    #[test]
    fn guest_paths_are_confined_to_the_job_root() {
        let root = Path::new("/home/runner");
        assert!(confine(root, Path::new("/home/runner/work/x")).is_ok());
        assert!(confine(root, Path::new("/home/runner/../etc")).is_err());
        assert!(confine(root, Path::new("/etc/passwd")).is_err());
    }
}
