//! A minimal QMP (QEMU Machine Protocol) client over a VM's Unix socket.
//!
//! Enough for snapshots: the greeting, `qmp_capabilities`, then one command
//! at a time ([`Qmp::execute`]); asynchronous events are skipped.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use crate::qemu::VmError;

/// A connected QMP session in command mode.
pub struct Qmp {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

fn qmp_err(command: &str, message: impl Into<String>) -> VmError {
    VmError::Qmp {
        command: command.to_string(),
        message: message.into(),
    }
}

impl Qmp {
    /// Connects to `socket` (retrying while it does not exist yet, up to
    /// `timeout`), reads the greeting and enters command mode.
    pub async fn connect(socket: &Path, timeout: Duration) -> Result<Qmp, VmError> {
        let start = Instant::now();
        let stream = loop {
            match UnixStream::connect(socket).await {
                Ok(s) => break s,
                Err(e) if start.elapsed() >= timeout => {
                    return Err(qmp_err("connect", format!("{}: {e}", socket.display())))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        let (r, w) = stream.into_split();
        let mut qmp = Qmp {
            reader: BufReader::new(r),
            writer: w,
        };
        let greeting = tokio::time::timeout(timeout, qmp.read_value("greeting"))
            .await
            .map_err(|_| qmp_err("greeting", "no greeting"))??;
        if greeting.get("QMP").is_none() {
            return Err(qmp_err("greeting", greeting.to_string()));
        }
        qmp.execute("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    async fn read_value(&mut self, command: &str) -> Result<Value, VmError> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .await
            .map_err(|e| qmp_err(command, e.to_string()))?;
        if n == 0 {
            return Err(qmp_err(command, "QEMU closed the QMP socket"));
        }
        serde_json::from_str(line.trim()).map_err(|e| qmp_err(command, format!("{e}: {line}")))
    }

    /// Runs `command` with `arguments` and returns its `return` value.
    pub async fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, VmError> {
        let mut msg = json!({ "execute": command });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let mut line = msg.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .await
            .map_err(|e| qmp_err(command, e.to_string()))?;
        loop {
            let v = self.read_value(command).await?;
            if v.get("event").is_some() {
                continue;
            }
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                let desc = e
                    .get("desc")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| e.to_string());
                return Err(qmp_err(command, desc));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    #[tokio::test]
    async fn speaks_qmp_and_skips_events() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        tokio::spawn(async move {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            let (r, mut w) = s.into_split();
            let mut r = BufReader::new(r);
            let _ = w
                .write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n")
                .await;
            let mut line = String::new();
            while r.read_line(&mut line).await.unwrap_or(0) > 0 {
                let reply: &[u8] = if line.contains("qmp_capabilities") {
                    b"{\"return\": {}}\r\n"
                } else if line.contains("query-status") {
                    b"{\"event\": \"RESUME\"}\r\n{\"return\": {\"status\": \"running\"}}\r\n"
                } else {
                    b"{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"nope\"}}\r\n"
                };
                let _ = w.write_all(reply).await;
                line.clear();
            }
        });
        let mut q = Qmp::connect(&path, Duration::from_secs(5))
            .await
            .expect("connect");
        let st = q.execute("query-status", None).await.expect("status");
        assert_eq!(st["status"], "running");
        let err = q.execute("bogus", None).await.expect_err("error");
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
