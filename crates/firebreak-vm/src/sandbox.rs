//! The QEMU backend behind the runner's `Sandbox` seam.
//!
//! [`QemuProvider::create`] boots one VM per job from a cached image; the job
//! tree lives in the guest at [`GUEST_ROOT`] (so `GITHUB_WORKSPACE` is
//! `/home/runner/work/<repo>/<repo>` as on GitHub's hosted runners). Every
//! operation goes through the guest agent; `destroy` powers the VM off (or
//! kills it) and with it everything the job started.

use std::path::{Component, Path};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use firebreak_agent::{AgentClient, ClientError, ExecEvent, ExecSpec, OutStream};
use firebreak_runner::sandbox::{
    BoxFuture, ExecRequest, ExitStatus, JobLayout, JobSpec, OutputEvent, Probe, Sandbox,
    SandboxError, SandboxProvider, Stream, MAX_LINE_BYTES,
};
use tokio::sync::{mpsc, Mutex};

use crate::image::{Image, ImageStore};
use crate::qemu::{probe_kvm, QemuVm, VmConfig};
use crate::tools;

/// Root of the job tree inside the guest.
pub const GUEST_ROOT: &str = "/home/runner";

/// Creates QEMU sandboxes.
#[derive(Debug, Clone)]
pub struct QemuProvider {
    store: ImageStore,
    image: Option<String>,
    config: VmConfig,
}

impl QemuProvider {
    /// Uses the newest image in `store` (or the one whose hash starts with
    /// `image`) and `config` as the base VM settings; per-job network and
    /// limits come from the [`JobSpec`].
    pub fn new(store: ImageStore, image: Option<String>, config: VmConfig) -> Self {
        QemuProvider {
            store,
            image,
            config,
        }
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

fn unavailable(reason: impl Into<String>) -> SandboxError {
    SandboxError::Unavailable {
        backend: "qemu",
        reason: reason.into(),
    }
}

impl SandboxProvider for QemuProvider {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn probe(&self) -> BoxFuture<'_, Probe> {
        Box::pin(async move {
            let mut notes = Vec::new();
            let mut available = true;
            for t in tools::QEMU_TOOLS {
                if tools::find(t.name).is_none() {
                    available = false;
                    notes.push(format!(
                        "{} missing (apt-get install {})",
                        t.name, t.package
                    ));
                }
            }
            match self.image() {
                Ok(img) => {
                    if available {
                        let p = probe_kvm(&img.kernel()).await;
                        if !p.usable {
                            notes.push(format!(
                                "KVM not usable ({}): guests run under TCG, boots take seconds",
                                p.detail
                            ));
                        }
                    }
                }
                Err(e) => {
                    available = false;
                    notes.push(e);
                }
            }
            Probe {
                backend: "qemu",
                available,
                notes,
            }
        })
    }

    fn create(&self, spec: JobSpec) -> BoxFuture<'_, Result<Box<dyn Sandbox>, SandboxError>> {
        Box::pin(async move {
            let ws = sanitize(&spec.workspace_name)?;
            sanitize(&spec.job_id)?;
            let image = self.image().map_err(unavailable)?;
            let mut cfg = self.config.clone();
            cfg.network = spec.network;
            let mut notes = Vec::new();
            if let Some(bytes) = spec.limits.memory_bytes {
                cfg.memory_mib = (bytes >> 20).max(128);
            }
            if let Some(m) = spec.limits.cpu_millis {
                cfg.vcpus = m.div_ceil(1000).max(1);
            }
            if spec.limits.max_pids.is_some() {
                notes.push("max_pids is not enforced in the qemu sandbox yet".to_string());
            }
            let vm = QemuVm::boot(&image, &cfg)
                .await
                .map_err(|e| unavailable(e.to_string()))?;
            let stats = vm.boot_stats();
            notes.push(format!(
                "qemu VM ({}, {} vCPU, {} MiB, guest kernel {}) booted in {:.1}s ({} attempt(s))",
                if stats.kvm { "KVM" } else { "TCG" },
                cfg.vcpus,
                cfg.memory_mib,
                vm.agent_info().kernel_release,
                stats.total.as_secs_f64(),
                stats.attempts
            ));
            let layout = JobLayout::new(GUEST_ROOT, &ws);
            let client = vm.client();
            let sb = VmSandbox {
                layout,
                notes,
                client,
                vm: Mutex::new(Some(vm)),
                destroyed: AtomicBool::new(false),
            };
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

/// One job's VM.
pub struct VmSandbox {
    layout: JobLayout,
    notes: Vec<String>,
    client: Arc<AgentClient>,
    vm: Mutex<Option<QemuVm>>,
    destroyed: AtomicBool,
}

fn agent_err(op: &'static str, path: &Path, e: ClientError) -> SandboxError {
    SandboxError::Io {
        op,
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// Checks that a guest path is absolute, has no `..` and lies under `root`.
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

impl VmSandbox {
    /// Wraps an already booted VM (tests, custom boots).
    pub async fn from_vm(vm: QemuVm, workspace_name: &str) -> Result<Self, SandboxError> {
        let layout = JobLayout::new(GUEST_ROOT, &sanitize(workspace_name)?);
        let sb = VmSandbox {
            layout,
            notes: Vec::new(),
            client: vm.client(),
            vm: Mutex::new(Some(vm)),
            destroyed: AtomicBool::new(false),
        };
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

    /// The VM, for callers that need more than the trait (console, stats).
    pub fn vm(&self) -> &Mutex<Option<QemuVm>> {
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

impl Sandbox for VmSandbox {
    fn backend(&self) -> &'static str {
        "qemu"
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
                match ev {
                    ExecEvent::Output(..) => {}
                    ExecEvent::Exited(st) => {
                        return Ok(match st {
                            firebreak_agent::ExitStatus::Exited { code } => {
                                ExitStatus::Exited(code)
                            }
                            firebreak_agent::ExitStatus::Signaled { signal } => {
                                ExitStatus::Signaled(signal)
                            }
                            firebreak_agent::ExitStatus::TimedOut => ExitStatus::TimedOut,
                            firebreak_agent::ExitStatus::Cancelled => ExitStatus::Cancelled,
                        });
                    }
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
        let mut got = Vec::new();
        let long = vec![b'x'; MAX_LINE_BYTES + 10];
        s.push(&long, |l| got.push(l.len()));
        s.finish(|l| got.push(l.len()));
        assert_eq!(got, [MAX_LINE_BYTES, 10]);
    }

    #[test]
    fn guest_paths_are_confined_to_the_job_root() {
        let root = Path::new(GUEST_ROOT);
        assert!(confine(root, Path::new("/home/runner/work/x")).is_ok());
        assert!(confine(root, Path::new("/home/runner/../etc")).is_err());
        assert!(confine(root, Path::new("/etc/passwd")).is_err());
        assert!(confine(root, Path::new("/home/runnerx")).is_err());
        assert!(confine(root, Path::new("home/runner/x")).is_err());
    }
}
