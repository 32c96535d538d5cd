//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::time::Duration;

use firebreak_runner::sandbox::{
    ExecRequest, ExitStatus, OutputEvent, Sandbox, SandboxError, Stream,
};

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Output of one exec, split by stream.
#[derive(Debug, Default)]
pub struct Captured {
    pub events: Vec<OutputEvent>,
}

impl Captured {
    pub fn stdout(&self) -> Vec<&str> {
        self.events
            .iter()
            .filter(|e| e.stream == Stream::Stdout)
            .map(|e| e.line.as_str())
            .collect()
    }
    pub fn stderr(&self) -> Vec<&str> {
        self.events
            .iter()
            .filter(|e| e.stream == Stream::Stderr)
            .map(|e| e.line.as_str())
            .collect()
    }
    pub fn stdout_text(&self) -> String {
        self.stdout().join("\n")
    }
}

/// A PATH usable on the host and inside the namespace sandbox.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `sh -c script` with PATH set.
pub fn sh(script: &str) -> ExecRequest {
    ExecRequest::new(["/bin/sh", "-c", script]).env("PATH", PATH)
}

/// `bash -c script` with PATH set.
pub fn bash(script: &str) -> ExecRequest {
    ExecRequest::new(["/bin/bash", "-c", script]).env("PATH", PATH)
}

/// Runs a request and collects its output.
pub async fn run(
    sb: &dyn Sandbox,
    req: ExecRequest,
) -> Result<(ExitStatus, Captured), SandboxError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let collect = async {
        let mut c = Captured::default();
        while let Some(ev) = rx.recv().await {
            c.events.push(ev);
        }
        c
    };
    let (status, captured) = tokio::join!(sb.exec(req, tx), collect);
    Ok((status?, captured))
}

/// PIDs on the host whose command line contains `marker`.
pub fn host_pids_with(marker: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let me = std::process::id();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if pid == me {
                continue;
            }
            if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                if cmd.contains(marker) {
                    // Zombies already dead are fine; only count live ones.
                    let state =
                        std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                    let live = state
                        .rsplit(')')
                        .next()
                        .map(|r| !r.trim_start().starts_with('Z'))
                        .unwrap_or(false);
                    if live {
                        out.push(pid);
                    }
                }
            }
        }
    }
    out
}

/// Waits up to `d` for no live process to carry `marker`.
pub async fn wait_gone(marker: &str, d: Duration) -> Vec<u32> {
    let deadline = std::time::Instant::now() + d;
    loop {
        let left = host_pids_with(marker);
        if left.is_empty() || std::time::Instant::now() > deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
