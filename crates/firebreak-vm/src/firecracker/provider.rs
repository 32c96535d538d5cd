//! The Firecracker backend behind the runner's `Sandbox` seam.
//!
//! [`FirecrackerProvider::create`] boots one VM per job (or restores one
//! from a warm-start snapshot) and wraps it in a [`FirecrackerSandbox`]: the
//! same agent-backed operations as the QEMU backend's `VmSandbox` — the job
//! tree under [`GUEST_ROOT`], paths confined to it, output split into lines
//! the way the local backends do — with a Firecracker VM behind it.
//! (`VmSandbox` holds a `QemuVm`; sharing it needs a small VM-handle trait in
//! `sandbox.rs`, so this type carries its own copy of that logic for now.)

use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use firebreak_agent::{AgentClient, ClientError, ExecEvent, ExecSpec, OutStream};
use firebreak_runner::sandbox::{
    BoxFuture, ExecRequest, ExitStatus, JobLayout, JobSpec, OutputEvent, Probe, Sandbox,
    SandboxError, SandboxProvider, Stream, MAX_LINE_BYTES,
};
use tokio::sync::{mpsc, Mutex};

use super::vm::{find_firecracker, BootFiles, FirecrackerConfig, FirecrackerVm, Snapshot};
use crate::image::{Image, ImageStore};

/// Root of the job tree inside the guest (as in the QEMU backend).
pub const GUEST_ROOT: &str = "/home/runner";

const BACKEND: &str = "firecracker";

fn unavailable(reason: impl Into<String>) -> SandboxError {
    SandboxError::Unavailable {
        backend: BACKEND,
        reason: reason.into(),
    }
}

/// Creates Firecracker sandboxes.
#[derive(Debug, Clone)]
pub struct FirecrackerProvider {
    store: ImageStore,
    image: Option<String>,
    config: FirecrackerConfig,
    snapshot: Option<PathBuf>,
}

impl FirecrackerProvider {
    /// Uses the newest image in `store` (or the one whose hash starts with
    /// `image`) and `config` as the base VM settings; per-job limits come
    /// from the [`JobSpec`].
    pub fn new(store: ImageStore, image: Option<String>, config: FirecrackerConfig) -> Self {
        FirecrackerProvider {
            store,
            image,
            config,
            snapshot: None,
        }
    }

    /// Warm starts: every job restores this snapshot directory (written by
    /// [`FirecrackerVm::snapshot`]) instead of booting.
    pub fn with_snapshot(mut self, dir: impl Into<PathBuf>) -> Self {
        self.snapshot = Some(dir.into());
        self
    }

    fn image(&self) -> Result<Image, String> {
        match &self.image {
            Some(h) => match self.store.get(h) {
                Ok(Some(i)) => Ok(i),
                Ok(None) => Err(format!(
                    "no image {h} in {}",
                    self.store.images_dir().display()
                )),
                Err(e) => Err(e.to_string()),
            },
            None => self.store.latest().map_err(|e| e.to_string()),
        }
    }
}

impl SandboxProvider for FirecrackerProvider {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn probe(&self) -> BoxFuture<'_, Probe> {
        Box::pin(async move {
            let mut notes = Vec::new();
            let mut available = true;
            if self
                .config
                .binary
                .clone()
                .or_else(find_firecracker)
                .is_none()
            {
                available = false;
                notes.push(format!(
                    "firecracker binary not found (set {} or put it on PATH)",
                    super::vm::FIRECRACKER_BIN_ENV
                ));
            }
            if let Err(e) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
            {
                available = false;
                notes.push(format!("/dev/kvm: {e}"));
            } else if crate::qemu::kvm_is_pvm() {
                available = false;
                notes.push("KVM is PVM-only here: Firecracker needs hardware KVM".into());
            }
            match &self.snapshot {
                Some(dir) => {
                    if let Err(e) = Snapshot::open(dir) {
                        available = false;
                        notes.push(e.to_string());
                    }
                }
                None => {
                    if let Err(e) = self.image() {
                        available = false;
                        notes.push(e);
                    }
                }
            }
            Probe {
                backend: BACKEND,
                available,
                notes,
            }
        })
    }

    fn create(&self, spec: JobSpec) -> BoxFuture<'_, Result<Box<dyn Sandbox>, SandboxError>> {
        Box::pin(async move {
            let ws = sanitize(&spec.workspace_name)?;
            sanitize(&spec.job_id)?;
            let mut cfg = self.config.clone();
            let mut notes = Vec::new();
            if let Some(bytes) = spec.limits.memory_bytes {
                cfg.memory_mib = (bytes >> 20).max(128);
            }
            if let Some(m) = spec.limits.cpu_millis {
                cfg.vcpus = m.div_ceil(1000).clamp(1, 32);
            }
            if spec.limits.max_pids.is_some() {
                notes.push("max_pids is not enforced in the firecracker sandbox yet".to_string());
            }
            if spec.network && cfg.network.is_none() {
                notes.push(
                    "network requested but no TAP device is configured: the guest has none"
                        .to_string(),
                );
            }
            let vm = match &self.snapshot {
                Some(dir) => {
                    let snap = Snapshot::open(dir).map_err(|e| unavailable(e.to_string()))?;
                    if spec.limits.memory_bytes.is_some() || spec.limits.cpu_millis.is_some() {
                        notes.push(
                            "restored from a snapshot: vCPUs and memory are the snapshot's"
                                .to_string(),
                        );
                    }
                    FirecrackerVm::restore(&snap, &cfg).await
                }
                None => {
                    let image = self.image().map_err(unavailable)?;
                    FirecrackerVm::boot(&BootFiles::from(&image), &cfg).await
                }
            }
            .map_err(|e| unavailable(e.to_string()))?;
            let stats = vm.boot_stats();
            notes.push(format!(
                "firecracker VM {} ({} vCPU, {} MiB, guest kernel {}) {} in {:.0} ms",
                vm.id(),
                cfg.vcpus,
                cfg.memory_mib,
                vm.agent_info().kernel_release,
                if stats.restored { "restored" } else { "booted" },
                stats.total.as_secs_f64() * 1e3
            ));
            let sb = FirecrackerSandbox::new(vm, Path::new(GUEST_ROOT), &ws, notes);
            sb.make_layout().await?;
            Ok(Box::new(sb) as Box<dyn Sandbox>)
        })
    }
}

fn sanitize(s: &str) -> Result<String, SandboxError> {
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

/// One job's Firecracker VM.
pub struct FirecrackerSandbox {
    layout: JobLayout,
    notes: Vec<String>,
    client: Arc<AgentClient>,
    vm: Mutex<Option<FirecrackerVm>>,
    destroyed: AtomicBool,
}

fn agent_err(op: &'static str, path: &Path, e: ClientError) -> SandboxError {
    SandboxError::Io {
        op,
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    }
}

fn confine(root: &Path, p: &Path) -> Result<String, SandboxError> {
    if !p.is_absolute()
        || p.components().any(|c| matches!(c, Component::ParentDir))
        || !p.starts_with(root)
    {
        return Err(SandboxError::PathOutsideSandbox(p.to_path_buf()));
    }
    Ok(guest_str(p))
}

fn guest_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

impl FirecrackerSandbox {
    fn new(vm: FirecrackerVm, root: &Path, ws: &str, notes: Vec<String>) -> Self {
        FirecrackerSandbox {
            layout: JobLayout::new(root, ws),
            notes,
            client: vm.client(),
            vm: Mutex::new(Some(vm)),
            destroyed: AtomicBool::new(false),
        }
    }

    /// Wraps an already running VM with its job tree under `root` in the
    /// guest (normally [`GUEST_ROOT`]); creates the tree.
    pub async fn from_vm(
        vm: FirecrackerVm,
        root: &Path,
        workspace_name: &str,
    ) -> Result<Self, SandboxError> {
        let sb = Self::new(vm, root, &sanitize(workspace_name)?, Vec::new());
        sb.make_layout().await?;
        Ok(sb)
    }

    async fn make_layout(&self) -> Result<(), SandboxError> {
        let mut argv = vec!["/bin/mkdir".to_string(), "-p".to_string()];
        argv.extend(self.layout.dirs().iter().map(|d| guest_str(d)));
        argv.push(guest_str(&self.layout.home));
        let (_, err, st) = self
            .client
            .exec(ExecSpec::new(argv))
            .await
            .map_err(|e| agent_err("create", &self.layout.root, e))?
            .collect()
            .await
            .map_err(|e| agent_err("create", &self.layout.root, e))?;
        if st != (firebreak_agent::ExitStatus::Exited { code: 0 }) {
            return Err(SandboxError::Io {
                op: "create",
                path: self.layout.root.clone(),
                source: std::io::Error::other(String::from_utf8_lossy(&err).into_owned()),
            });
        }
        Ok(())
    }

    fn live(&self) -> Result<(), SandboxError> {
        if self.destroyed.load(Ordering::SeqCst) {
            Err(SandboxError::Destroyed)
        } else {
            Ok(())
        }
    }

    fn confine(&self, p: &Path) -> Result<String, SandboxError> {
        confine(&self.layout.root, p)
    }

    /// The VM (console, snapshots, stats).
    pub fn vm(&self) -> &Mutex<Option<FirecrackerVm>> {
        &self.vm
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

fn exit_status(st: firebreak_agent::ExitStatus) -> ExitStatus {
    match st {
        firebreak_agent::ExitStatus::Exited { code } => ExitStatus::Exited(code),
        firebreak_agent::ExitStatus::Signaled { signal } => ExitStatus::Signaled(signal),
        firebreak_agent::ExitStatus::TimedOut => ExitStatus::TimedOut,
        firebreak_agent::ExitStatus::Cancelled => ExitStatus::Cancelled,
    }
}

impl Sandbox for FirecrackerSandbox {
    fn backend(&self) -> &'static str {
        BACKEND
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
            let d = self.confine(dest)?;
            if !host_src.is_dir() {
                return Err(SandboxError::Io {
                    op: "copy",
                    path: host_src.to_path_buf(),
                    source: std::io::Error::other("not a directory"),
                });
            }
            self.client
                .tar_in(host_src, &d)
                .await
                .map_err(|e| agent_err("copy into", dest, e))
        })
    }

    fn copy_out<'a>(
        &'a self,
        src: &'a Path,
        host_dest: &'a Path,
    ) -> BoxFuture<'a, Result<(), SandboxError>> {
        Box::pin(async move {
            self.live()?;
            let s = self.confine(src)?;
            self.client
                .copy_out(&s, host_dest)
                .await
                .map_err(|e| agent_err("copy out of", src, e))
        })
    }

    fn read_file<'a>(
        &'a self,
        path: &'a Path,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, SandboxError>> {
        Box::pin(async move {
            self.live()?;
            let p = self.confine(path)?;
            self.client
                .read_file(&p)
                .await
                .map_err(|e| agent_err("read", path, e))
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
            let p = self.confine(path)?;
            self.client
                .write_file(&p, &contents, mode)
                .await
                .map_err(|e| agent_err("write", path, e))
        })
    }

    fn remove<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, Result<(), SandboxError>> {
        Box::pin(async move {
            self.live()?;
            let p = self.confine(path)?;
            self.client
                .remove(&p)
                .await
                .map_err(|e| agent_err("remove", path, e))
        })
    }

    fn exec<'a>(
        &'a self,
        req: ExecRequest,
        output: mpsc::Sender<OutputEvent>,
    ) -> BoxFuture<'a, Result<ExitStatus, SandboxError>> {
        Box::pin(async move {
            self.live()?;
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
                None => self.layout.workspace.clone(),
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
            };
            let mut h = self.client.exec(spec).await.map_err(|e| match e {
                ClientError::Agent { message, .. } => SandboxError::Spawn {
                    program: program.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, message),
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
            let mut cancel_sent = false;
            loop {
                let ev = tokio::select! {
                    ev = h.next() => ev,
                    _ = async { match &cancel { Some(t) => t.cancelled().await, None => std::future::pending().await } }, if !cancel_sent => {
                        cancel_sent = true;
                        let _ = self.client.cancel(h.id()).await;
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
                if let ExecEvent::Exited(st) = ev {
                    return Ok(exit_status(st));
                }
            }
        })
    }

    fn destroy(&self) -> BoxFuture<'_, Result<(), SandboxError>> {
        Box::pin(async move {
            self.destroyed.store(true, Ordering::SeqCst);
            if let Some(mut vm) = self.vm.lock().await.take() {
                vm.shutdown(Duration::from_secs(3)).await;
            }
            Ok(())
        })
    }
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

    #[test]
    fn guest_paths_are_confined_to_the_job_root() {
        let root = Path::new(GUEST_ROOT);
        assert!(confine(root, Path::new("/home/runner/work/x")).is_ok());
        assert!(confine(root, Path::new("/home/runner/../etc")).is_err());
        assert!(confine(root, Path::new("/etc/passwd")).is_err());
    }
}
