//! The half of a VM sandbox that only talks to the guest agent: file operations confined to
//! the job's tree and `exec` with output split into lines, shared by every VM backend (QEMU's
//! [`crate::sandbox::VmSandbox`] and Firecracker's sandbox) so they cannot drift apart.

use std::path::{Component, Path};

use firebreak_agent::{AgentClient, ClientError, ExecEvent, ExecSpec, OutStream};
use firebreak_runner::sandbox::{
    ExecRequest, ExitStatus, JobLayout, OutputEvent, SandboxError, Stream, MAX_LINE_BYTES,
};
use tokio::sync::mpsc;

pub(crate) fn agent_err(op: &'static str, path: &Path, e: ClientError) -> SandboxError {
    SandboxError::Io {
        op,
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    }
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

pub(crate) async fn copy_in(
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

pub(crate) async fn copy_out(
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

pub(crate) async fn read_file(
    client: &AgentClient,
    layout: &JobLayout,
    path: &Path,
) -> Result<Option<Vec<u8>>, SandboxError> {
    let p = confine(&layout.root, path)?;
    client
        .read_file(&p)
        .await
        .map_err(|e| agent_err("read", path, e))
}

pub(crate) async fn write_file(
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

pub(crate) async fn remove(
    client: &AgentClient,
    layout: &JobLayout,
    path: &Path,
) -> Result<(), SandboxError> {
    let p = confine(&layout.root, path)?;
    client
        .remove(&p)
        .await
        .map_err(|e| agent_err("remove", path, e))
}

pub(crate) async fn exec(
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
    };
    let mut h = client.exec(spec).await.map_err(|e| match e {
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
                let _ = client.cancel(h.id()).await;
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

    #[test]
    fn guest_paths_are_confined_to_the_job_root() {
        let root = Path::new("/home/runner");
        assert!(confine(root, Path::new("/home/runner/work/x")).is_ok());
        assert!(confine(root, Path::new("/home/runner/../etc")).is_err());
        assert!(confine(root, Path::new("/etc/passwd")).is_err());
    }
}
