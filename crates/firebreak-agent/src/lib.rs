//! firebreak's guest agent and its wire protocol.
//!
//! This crate owns everything that crosses the host↔guest boundary of a
//! microVM sandbox:
//!
//! * [`protocol`] — versioned, length-prefixed frames (JSON header + raw
//!   body) and the request/response vocabulary: hello, exec with streamed
//!   stdout/stderr and exit status, signal/cancel, read/write/stat/remove
//!   files, tar streams in and out, set clock, add entropy, prepare the
//!   job cgroup ([`jobcgroup`]), shutdown.
//! * [`server`] — the agent side ([`server::serve`]), identical over any byte
//!   stream: a virtio-serial port under QEMU, vsock under Firecracker, a
//!   socket pair in tests.
//! * [`client`] — the host side ([`client::AgentClient`]).
//! * [`vsock`] — the agent's vsock listener (Firecracker).
//! * [`jobcgroup`], [`thrash`], [`forkguard`], [`netif`], [`entropy`] — guest
//!   setup done with the agent's own system calls: the job cgroup, the guards
//!   that end a job thrashing under its memory limit or fork-bombing against
//!   its process limit (what they did reaches the running commands' logs
//!   through [`guard`]), the loopback interface, the kernel's random generator.
//!
//! The `firebreak-agent` binary is the guest's init: mounted as
//! `/sbin/firebreak-agent` in the rootfs, started by the initramfs with
//! `switch_root` (or by the minimal kernel directly), it mounts the API
//! filesystems, reaps orphans, and serves the virtio-serial port
//! `org.firebreak.agent` (a new session whenever the host end goes away and
//! comes back, e.g. around a snapshot, on the port it keeps open: closing it
//! would discard requests already sent) — or, when the kernel command line
//! has `firebreak.vsock=<port>` (Firecracker), vsock port `<port>`
//! ([`vsock`]). Build it static:
//!
//! ```text
//! RUSTFLAGS="-C target-feature=+crt-static" \
//!   cargo build --release -p firebreak-agent --target x86_64-unknown-linux-gnu
//! ```
//!
//! What it does not own: booting VMs, images and transports (`firebreak-vm`).

pub mod cgroup;
pub mod client;
pub mod entropy;
pub mod forkguard;
pub mod guard;
pub mod jobcgroup;
pub mod netif;
pub mod port;
pub mod protocol;
pub mod server;
pub mod thrash;
pub mod vsock;

pub use client::{AgentClient, AgentInfo, ClientError, ExecEvent, ExecHandle, Stat};
pub use protocol::{ExecSpec, ExitStatus, FileKind, OutStream, PROTOCOL_VERSION};
pub use server::{serve, AgentConfig, SessionEnd};
