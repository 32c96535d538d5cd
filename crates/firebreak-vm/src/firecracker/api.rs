//! A typed client of Firecracker's REST API.
//!
//! Firecracker serves HTTP/1.1 with JSON bodies on a Unix socket (its
//! `--api-sock`). Each call here opens a connection (hyper's HTTP/1 client
//! over a tokio `UnixStream`), sends one request and reads the answer:
//! `204 No Content` for configuration and actions, `200` with a JSON body for
//! `GET /`. Any other status is turned into [`ApiError::Fault`] carrying the
//! `fault_message` of Firecracker's error body.
//!
//! Request bodies are the serde structs below; optional fields left `None`
//! are omitted, so Firecracker applies its own defaults (and an older
//! Firecracker is not sent fields it does not know).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::UnixStream;

/// Errors talking to the Firecracker API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The API socket could not be reached.
    #[error("connect to Firecracker API socket {socket}: {source}")]
    Connect {
        /// The socket.
        socket: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed (connection reset, malformed answer, …).
    #[error("{method} {path}: HTTP error: {source}")]
    Http {
        /// Request method.
        method: Method,
        /// Request path.
        path: String,
        /// Cause.
        #[source]
        source: hyper::Error,
    },
    /// A request could not be built (bad path characters).
    #[error("{method} {path}: invalid request: {message}")]
    Request {
        /// Request method.
        method: Method,
        /// Request path.
        path: String,
        /// What was wrong.
        message: String,
    },
    /// Firecracker refused the request: its status and `fault_message`.
    #[error("{method} {path}: Firecracker answered {status}: {fault_message}")]
    Fault {
        /// Request method.
        method: Method,
        /// Request path.
        path: String,
        /// HTTP status (400 for bad input, 500 for internal errors).
        status: StatusCode,
        /// Firecracker's `fault_message` (or the raw body when it is not
        /// Firecracker's error shape).
        fault_message: String,
    },
    /// A request or response body was not the JSON expected.
    #[error("{method} {path}: JSON: {source}")]
    Json {
        /// Request method.
        method: Method,
        /// Request path.
        path: String,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// No answer within the client's timeout.
    #[error("{method} {path}: no answer within {waited:?}")]
    Timeout {
        /// Request method.
        method: Method,
        /// Request path.
        path: String,
        /// The timeout.
        waited: Duration,
    },
}

impl ApiError {
    /// Firecracker's `fault_message`, when the error is a refusal.
    pub fn fault_message(&self) -> Option<&str> {
        match self {
            ApiError::Fault { fault_message, .. } => Some(fault_message),
            _ => None,
        }
    }
}

/// Firecracker's error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultBody {
    /// What went wrong.
    pub fault_message: String,
}

/// Huge pages backing guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HugePages {
    /// Regular 4K pages.
    None,
    /// Transparent huge pages.
    Transparent,
    /// Explicit 2 MiB hugetlbfs pages.
    #[serde(rename = "2M")]
    Huge2M,
}

/// `PUT /machine-config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineConfig {
    /// vCPUs: 1..=32 (with SMT: 1 or even).
    pub vcpu_count: u32,
    /// Guest memory, MiB.
    pub mem_size_mib: u64,
    /// Simultaneous multithreading (x86 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smt: Option<bool>,
    /// Dirty page tracking (needed for diff snapshots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_dirty_pages: Option<bool>,
    /// Huge pages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huge_pages: Option<HugePages>,
}

/// `PUT /boot-source`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootSource {
    /// The uncompressed ELF kernel (`vmlinux`), as Firecracker sees the path.
    pub kernel_image_path: PathBuf,
    /// The initrd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<PathBuf>,
    /// Kernel command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_args: Option<String>,
}

/// Block device caching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheType {
    /// Flushes are ignored (Firecracker's default).
    Unsafe,
    /// Flushes reach the host file.
    Writeback,
}

/// Block device I/O engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IoEngine {
    /// Blocking I/O (default).
    Sync,
    /// io_uring (host kernel > 5.10.51).
    Async,
}

/// `PUT /drives/{drive_id}` (a virtio-block drive).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drive {
    /// The drive's id (also the path segment).
    pub drive_id: String,
    /// Backing file, as Firecracker sees the path.
    pub path_on_host: PathBuf,
    /// Whether this is the root device (`/dev/vda` when it is the first).
    pub is_root_device: bool,
    /// Read-only drive.
    pub is_read_only: bool,
    /// Caching.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_type: Option<CacheType>,
    /// I/O engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_engine: Option<IoEngine>,
    /// Root partition UUID (root devices only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partuuid: Option<String>,
}

/// `PATCH /drives/{drive_id}`: after boot (or snapshot load), point a drive
/// at another backing file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialDrive {
    /// The drive's id.
    pub drive_id: String,
    /// The new backing file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_on_host: Option<PathBuf>,
}

/// `PUT /vsock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vsock {
    /// The guest's context id (>= 3).
    pub guest_cid: u32,
    /// Host Unix socket Firecracker creates for host-initiated connections
    /// (`CONNECT <port>\n`); guest-initiated ones go to `<uds_path>_<port>`.
    pub uds_path: PathBuf,
}

/// `PUT /network-interfaces/{iface_id}` (a TAP-backed virtio-net device).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInterface {
    /// The interface's id (also the path segment).
    pub iface_id: String,
    /// The host TAP device.
    pub host_dev_name: String,
    /// Guest MAC address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_mac: Option<String>,
}

/// `PUT /entropy` (virtio-rng): fresh host randomness for the guest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntropyDevice {}

/// `PUT /actions` action types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionType {
    /// Boot the configured microVM.
    InstanceStart,
    /// Press Ctrl+Alt+Del on the guest's i8042 keyboard (x86).
    SendCtrlAltDel,
    /// Flush metrics.
    FlushMetrics,
}

/// `PUT /actions` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceActionInfo {
    /// The action.
    pub action_type: ActionType,
}

/// `PATCH /vm` states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmState {
    /// Stop the vCPUs.
    Paused,
    /// Run them again.
    Resumed,
}

/// `PATCH /vm` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vm {
    /// The wanted state.
    pub state: VmState,
}

/// Snapshot kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotType {
    /// All guest memory.
    Full,
    /// Only pages dirtied since the last snapshot (needs dirty tracking).
    Diff,
}

/// `PUT /snapshot/create` (the VM must be paused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotCreateParams {
    /// The microVM state file to write.
    pub snapshot_path: PathBuf,
    /// The guest memory file to write.
    pub mem_file_path: PathBuf,
    /// Full (default) or diff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_type: Option<SnapshotType>,
}

/// How snapshot memory is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemoryBackendType {
    /// `backend_path` is the memory file (mapped privately).
    File,
    /// `backend_path` is a Unix socket of a userfaultfd page server.
    Uffd,
}

/// Where snapshot memory comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryBackend {
    /// Kind.
    pub backend_type: MemoryBackendType,
    /// File or socket.
    pub backend_path: PathBuf,
}

/// Replaces the vsock device's Unix socket on restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VsockOverride {
    /// The new `uds_path`.
    pub uds_path: PathBuf,
}

/// Replaces a network interface's TAP device on restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkOverride {
    /// Interface id.
    pub iface_id: String,
    /// New TAP device.
    pub host_dev_name: String,
}

/// `PUT /snapshot/load` (only on a fresh Firecracker process, before any
/// other configuration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotLoadParams {
    /// The microVM state file.
    pub snapshot_path: PathBuf,
    /// Guest memory source.
    pub mem_backend: MemoryBackend,
    /// Dirty page tracking after load (for later diff snapshots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_dirty_pages: Option<bool>,
    /// Resume the VM right after loading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_vm: Option<bool>,
    /// New vsock Unix socket (newer Firecrackers; else the recorded path is
    /// reused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock_override: Option<VsockOverride>,
    /// New TAP devices.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_overrides: Vec<NetworkOverride>,
    /// x86: advance kvmclock by the wall time since the snapshot (newer
    /// Firecrackers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_realtime: Option<bool>,
}

/// `GET /` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// `Firecracker`.
    pub app_name: String,
    /// The `--id` it was started with.
    pub id: String,
    /// `Not started`, `Running` or `Paused`.
    pub state: String,
    /// Firecracker's version.
    pub vmm_version: String,
}

/// Firecracker's REST API on one Unix socket.
#[derive(Debug, Clone)]
pub struct FirecrackerApi {
    socket: PathBuf,
    timeout: Duration,
}

/// Percent-encodes what is not safe in one path segment (ids are normally
/// plain `[A-Za-z0-9_-]`, this only keeps odd ones from changing the path).
fn segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl FirecrackerApi {
    /// A client of the API socket `socket`; each request must be answered
    /// within 10 s.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        FirecrackerApi {
            socket: socket.into(),
            timeout: Duration::from_secs(10),
        }
    }

    /// Changes the per-request timeout (snapshots of large guests take
    /// longer).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The API socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends one request; returns the status and body of a 2xx answer.
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ApiError> {
        let fut = self.request_inner(method.clone(), path, body);
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(ApiError::Timeout {
                method,
                path: path.to_string(),
                waited: self.timeout,
            }),
        }
    }

    async fn request_inner(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ApiError> {
        let http = |source| ApiError::Http {
            method: method.clone(),
            path: path.to_string(),
            source,
        };
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ApiError::Connect {
                    socket: self.socket.clone(),
                    source,
                })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http)?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(hyper::header::HOST, "localhost")
            .header(hyper::header::ACCEPT, "application/json");
        if body.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ApiError::Request {
                method: method.clone(),
                path: path.to_string(),
                message: e.to_string(),
            })?;
        let res = sender.send_request(req).await.map_err(http)?;
        let status = res.status();
        let bytes = res.into_body().collect().await.map_err(http)?.to_bytes();
        driver.abort();
        if status.is_success() {
            return Ok((status, bytes));
        }
        let fault_message = match serde_json::from_slice::<FaultBody>(&bytes) {
            Ok(f) => f.fault_message,
            Err(_) => String::from_utf8_lossy(&bytes).trim().to_string(),
        };
        Err(ApiError::Fault {
            method,
            path: path.to_string(),
            status,
            fault_message,
        })
    }

    async fn send<T: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: &T,
    ) -> Result<(), ApiError> {
        let json = serde_json::to_vec(body).map_err(|source| ApiError::Json {
            method: method.clone(),
            path: path.to_string(),
            source,
        })?;
        self.request(method, path, Some(json)).await.map(|_| ())
    }

    /// `GET /`: instance id, state and Firecracker's version.
    pub async fn describe_instance(&self) -> Result<InstanceInfo, ApiError> {
        let (_, body) = self.request(Method::GET, "/", None).await?;
        serde_json::from_slice(&body).map_err(|source| ApiError::Json {
            method: Method::GET,
            path: "/".into(),
            source,
        })
    }

    /// `PUT /machine-config`.
    pub async fn put_machine_config(&self, cfg: &MachineConfig) -> Result<(), ApiError> {
        self.send(Method::PUT, "/machine-config", cfg).await
    }

    /// `PUT /boot-source`.
    pub async fn put_boot_source(&self, src: &BootSource) -> Result<(), ApiError> {
        self.send(Method::PUT, "/boot-source", src).await
    }

    /// `PUT /drives/{drive_id}`.
    pub async fn put_drive(&self, drive: &Drive) -> Result<(), ApiError> {
        let path = format!("/drives/{}", segment(&drive.drive_id));
        self.send(Method::PUT, &path, drive).await
    }

    /// `PATCH /drives/{drive_id}`.
    pub async fn patch_drive(&self, drive: &PartialDrive) -> Result<(), ApiError> {
        let path = format!("/drives/{}", segment(&drive.drive_id));
        self.send(Method::PATCH, &path, drive).await
    }

    /// `PUT /vsock`.
    pub async fn put_vsock(&self, vsock: &Vsock) -> Result<(), ApiError> {
        self.send(Method::PUT, "/vsock", vsock).await
    }

    /// `PUT /network-interfaces/{iface_id}`.
    pub async fn put_network_interface(&self, iface: &NetworkInterface) -> Result<(), ApiError> {
        let path = format!("/network-interfaces/{}", segment(&iface.iface_id));
        self.send(Method::PUT, &path, iface).await
    }

    /// `PUT /entropy`.
    pub async fn put_entropy(&self, dev: &EntropyDevice) -> Result<(), ApiError> {
        self.send(Method::PUT, "/entropy", dev).await
    }

    /// `PUT /actions`.
    pub async fn action(&self, action_type: ActionType) -> Result<(), ApiError> {
        self.send(Method::PUT, "/actions", &InstanceActionInfo { action_type })
            .await
    }

    /// `PUT /actions` `InstanceStart`: boots the configured VM.
    pub async fn start(&self) -> Result<(), ApiError> {
        self.action(ActionType::InstanceStart).await
    }

    /// `PUT /actions` `SendCtrlAltDel`.
    pub async fn send_ctrl_alt_del(&self) -> Result<(), ApiError> {
        self.action(ActionType::SendCtrlAltDel).await
    }

    /// `PATCH /vm`.
    pub async fn set_vm_state(&self, state: VmState) -> Result<(), ApiError> {
        self.send(Method::PATCH, "/vm", &Vm { state }).await
    }

    /// `PATCH /vm` `Paused`.
    pub async fn pause(&self) -> Result<(), ApiError> {
        self.set_vm_state(VmState::Paused).await
    }

    /// `PATCH /vm` `Resumed`.
    pub async fn resume(&self) -> Result<(), ApiError> {
        self.set_vm_state(VmState::Resumed).await
    }

    /// `PUT /snapshot/create`.
    pub async fn create_snapshot(&self, p: &SnapshotCreateParams) -> Result<(), ApiError> {
        self.send(Method::PUT, "/snapshot/create", p).await
    }

    /// `PUT /snapshot/load`.
    pub async fn load_snapshot(&self, p: &SnapshotLoadParams) -> Result<(), ApiError> {
        self.send(Method::PUT, "/snapshot/load", p).await
    }

    /// Waits until the API answers `GET /` (Firecracker creates the socket
    /// shortly after it starts).
    pub async fn wait_ready(&self, limit: Duration) -> Result<InstanceInfo, ApiError> {
        let start = std::time::Instant::now();
        loop {
            match self.describe_instance().await {
                Ok(i) => return Ok(i),
                Err(e @ ApiError::Connect { .. }) => {
                    if start.elapsed() >= limit {
                        return Err(e);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_fields_are_omitted() {
        let m = MachineConfig {
            vcpu_count: 2,
            mem_size_mib: 512,
            smt: None,
            track_dirty_pages: Some(true),
            huge_pages: None,
        };
        assert_eq!(
            serde_json::to_value(&m).ok(),
            Some(
                serde_json::json!({"vcpu_count": 2, "mem_size_mib": 512, "track_dirty_pages": true})
            )
        );
        assert_eq!(
            serde_json::to_value(HugePages::Huge2M).ok(),
            Some(serde_json::json!("2M"))
        );
    }

    #[test]
    fn odd_ids_stay_in_their_segment() {
        assert_eq!(segment("rootfs"), "rootfs");
        assert_eq!(segment("a/../b c"), "a%2F..%2Fb%20c");
    }
}
