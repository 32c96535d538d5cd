//! The Firecracker backend against a fake Firecracker: an HTTP server on a
//! Unix socket (hyper) that records every request, answers like Firecracker,
//! and — for whole boots — plays the vsock muxer in front of an in-process
//! agent. A shell script stands in for the `firecracker` binary.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use firebreak_runner::sandbox::{ExecRequest, ExitStatus, Sandbox};
use firebreak_vm::firecracker::api::{
    ActionType, BootSource, CacheType, Drive, EntropyDevice, HugePages, IoEngine, MachineConfig,
    MemoryBackend, MemoryBackendType, NetworkInterface, PartialDrive, SnapshotCreateParams,
    SnapshotLoadParams, SnapshotType, Vsock, VsockOverride,
};
use firebreak_vm::firecracker::{
    ApiError, BootFiles, BootPlan, FirecrackerApi, FirecrackerConfig, FirecrackerError,
    FirecrackerSandbox, FirecrackerVm, SnapshotCache, TapNetwork,
};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

/// One request the fake saw.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    method: String,
    path: String,
    body: Value,
}

fn seen(method: &str, path: &str, body: Value) -> Seen {
    Seen {
        method: method.into(),
        path: path.into(),
        body,
    }
}

type Responder = Arc<dyn Fn(&Seen) -> (u16, String) + Send + Sync>;
type Log = Arc<Mutex<Vec<Seen>>>;

fn log_of(log: &Log) -> Vec<Seen> {
    log.lock().map(|l| l.clone()).unwrap_or_default()
}

/// Serves HTTP/1.1 on `sock`, recording requests and answering with
/// `respond`.
fn serve_fake(sock: &Path, respond: Responder) -> Log {
    let listener = UnixListener::bind(sock).expect("bind fake API socket");
    let log: Log = Arc::default();
    let log2 = log.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let log = log2.clone();
            let respond = respond.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let log = log.clone();
                    let respond = respond.clone();
                    async move {
                        let method = req.method().to_string();
                        let path = req.uri().path().to_string();
                        let bytes = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let body = if bytes.is_empty() {
                            Value::Null
                        } else {
                            serde_json::from_slice(&bytes).unwrap_or(Value::String(
                                String::from_utf8_lossy(&bytes).into_owned(),
                            ))
                        };
                        let s = Seen { method, path, body };
                        if let Ok(mut l) = log.lock() {
                            l.push(s.clone());
                        }
                        let (status, text) = respond(&s);
                        let mut res = Response::new(Full::new(Bytes::from(text)));
                        *res.status_mut() = StatusCode::from_u16(status).expect("status");
                        Ok::<_, std::convert::Infallible>(res)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    log
}

fn ok_204() -> Responder {
    Arc::new(|s: &Seen| {
        if s.method == "GET" && s.path == "/" {
            (
                200,
                json!({"app_name": "Firecracker", "id": "fb-test", "state": "Not started", "vmm_version": "1.99.0"})
                    .to_string(),
            )
        } else {
            (204, String::new())
        }
    })
}

#[tokio::test]
async fn every_call_sends_the_exact_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("api.sock");
    let log = serve_fake(&sock, ok_204());
    let api = FirecrackerApi::new(&sock);

    let info = api.describe_instance().await.expect("GET /");
    assert_eq!(info.id, "fb-test");
    assert_eq!(info.state, "Not started");
    assert_eq!(info.vmm_version, "1.99.0");

    api.put_machine_config(&MachineConfig {
        vcpu_count: 2,
        mem_size_mib: 1024,
        smt: Some(false),
        track_dirty_pages: None,
        huge_pages: Some(HugePages::None),
    })
    .await
    .expect("machine-config");
    api.put_boot_source(&BootSource {
        kernel_image_path: "/img/vmlinux".into(),
        initrd_path: Some("/img/initramfs.cpio.gz".into()),
        boot_args: Some("console=ttyS0 firebreak.vsock=1024".into()),
    })
    .await
    .expect("boot-source");
    api.put_drive(&Drive {
        drive_id: "rootfs".into(),
        path_on_host: "/run/vm/rootfs.ext4".into(),
        is_root_device: true,
        is_read_only: false,
        cache_type: Some(CacheType::Writeback),
        io_engine: Some(IoEngine::Async),
        partuuid: None,
    })
    .await
    .expect("drive");
    api.patch_drive(&PartialDrive {
        drive_id: "rootfs".into(),
        path_on_host: Some("/run/vm2/rootfs.ext4".into()),
    })
    .await
    .expect("patch drive");
    api.put_vsock(&Vsock {
        guest_cid: 3,
        uds_path: "/run/vm/v.sock".into(),
    })
    .await
    .expect("vsock");
    api.put_network_interface(&NetworkInterface {
        iface_id: "eth0".into(),
        host_dev_name: "tap0".into(),
        guest_mac: Some("06:00:AC:10:00:02".into()),
    })
    .await
    .expect("net");
    api.put_entropy(&EntropyDevice::default())
        .await
        .expect("entropy");
    api.start().await.expect("start");
    api.send_ctrl_alt_del().await.expect("ctrl-alt-del");
    api.pause().await.expect("pause");
    api.resume().await.expect("resume");
    api.create_snapshot(&SnapshotCreateParams {
        snapshot_path: "/snap/vmstate".into(),
        mem_file_path: "/snap/memory".into(),
        snapshot_type: Some(SnapshotType::Full),
    })
    .await
    .expect("snapshot create");
    api.load_snapshot(&SnapshotLoadParams {
        snapshot_path: "/snap/vmstate".into(),
        mem_backend: MemoryBackend {
            backend_type: MemoryBackendType::File,
            backend_path: "/snap/memory".into(),
        },
        track_dirty_pages: None,
        resume_vm: Some(false),
        vsock_override: Some(VsockOverride {
            uds_path: "/run/vm2/v.sock".into(),
        }),
        network_overrides: Vec::new(),
        clock_realtime: None,
    })
    .await
    .expect("snapshot load");
    api.action(ActionType::FlushMetrics).await.expect("flush");

    let want = vec![
        seen("GET", "/", Value::Null),
        seen(
            "PUT",
            "/machine-config",
            json!({"vcpu_count": 2, "mem_size_mib": 1024, "smt": false, "huge_pages": "None"}),
        ),
        seen(
            "PUT",
            "/boot-source",
            json!({"kernel_image_path": "/img/vmlinux", "initrd_path": "/img/initramfs.cpio.gz",
                   "boot_args": "console=ttyS0 firebreak.vsock=1024"}),
        ),
        seen(
            "PUT",
            "/drives/rootfs",
            json!({"drive_id": "rootfs", "path_on_host": "/run/vm/rootfs.ext4", "is_root_device": true,
                   "is_read_only": false, "cache_type": "Writeback", "io_engine": "Async"}),
        ),
        seen(
            "PATCH",
            "/drives/rootfs",
            json!({"drive_id": "rootfs", "path_on_host": "/run/vm2/rootfs.ext4"}),
        ),
        seen(
            "PUT",
            "/vsock",
            json!({"guest_cid": 3, "uds_path": "/run/vm/v.sock"}),
        ),
        seen(
            "PUT",
            "/network-interfaces/eth0",
            json!({"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "06:00:AC:10:00:02"}),
        ),
        seen("PUT", "/entropy", json!({})),
        seen("PUT", "/actions", json!({"action_type": "InstanceStart"})),
        seen("PUT", "/actions", json!({"action_type": "SendCtrlAltDel"})),
        seen("PATCH", "/vm", json!({"state": "Paused"})),
        seen("PATCH", "/vm", json!({"state": "Resumed"})),
        seen(
            "PUT",
            "/snapshot/create",
            json!({"snapshot_path": "/snap/vmstate", "mem_file_path": "/snap/memory", "snapshot_type": "Full"}),
        ),
        seen(
            "PUT",
            "/snapshot/load",
            json!({"snapshot_path": "/snap/vmstate",
                   "mem_backend": {"backend_type": "File", "backend_path": "/snap/memory"},
                   "resume_vm": false, "vsock_override": {"uds_path": "/run/vm2/v.sock"}}),
        ),
        seen("PUT", "/actions", json!({"action_type": "FlushMetrics"})),
    ];
    assert_eq!(log_of(&log), want);
}

#[tokio::test]
async fn fault_bodies_become_typed_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("api.sock");
    serve_fake(
        &sock,
        Arc::new(|s: &Seen| match s.path.as_str() {
            "/machine-config" => (
                400,
                json!({"fault_message": "The vCPU number is invalid!"}).to_string(),
            ),
            "/vm" => (500, "internal trouble\n".to_string()),
            "/" => (200, "{not json".to_string()),
            _ => (204, String::new()),
        }),
    );
    let api = FirecrackerApi::new(&sock);
    let err = api
        .put_machine_config(&MachineConfig {
            vcpu_count: 64,
            mem_size_mib: 128,
            smt: None,
            track_dirty_pages: None,
            huge_pages: None,
        })
        .await
        .expect_err("refused");
    match &err {
        ApiError::Fault {
            method,
            path,
            status,
            fault_message,
        } => {
            assert_eq!(method, hyper::Method::PUT);
            assert_eq!(path, "/machine-config");
            assert_eq!(*status, StatusCode::BAD_REQUEST);
            assert_eq!(fault_message, "The vCPU number is invalid!");
        }
        other => panic!("wrong error: {other:?}"),
    }
    assert_eq!(err.fault_message(), Some("The vCPU number is invalid!"));
    assert!(
        err.to_string().contains("The vCPU number is invalid!"),
        "{err}"
    );

    let err = api.pause().await.expect_err("500");
    assert!(
        matches!(&err, ApiError::Fault { status, fault_message, .. }
            if *status == StatusCode::INTERNAL_SERVER_ERROR && fault_message == "internal trouble"),
        "{err:?}"
    );
    let err = api.describe_instance().await.expect_err("bad json");
    assert!(matches!(err, ApiError::Json { .. }), "{err:?}");
}

#[tokio::test]
async fn missing_socket_is_a_connect_error() {
    let api = FirecrackerApi::new("/nonexistent/firecracker.sock");
    let err = api.start().await.expect_err("error");
    assert!(matches!(err, ApiError::Connect { .. }), "{err:?}");
    let err = api
        .wait_ready(Duration::from_millis(50))
        .await
        .expect_err("error");
    assert!(matches!(err, ApiError::Connect { .. }), "{err:?}");
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("api.sock");
    let listener = UnixListener::bind(&sock).expect("bind");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s); // accept, never answer
        }
    });
    let api = FirecrackerApi::new(&sock).with_timeout(Duration::from_millis(200));
    let err = api.start().await.expect_err("timeout");
    assert!(matches!(err, ApiError::Timeout { .. }), "{err:?}");
}

fn plan_cfg() -> FirecrackerConfig {
    FirecrackerConfig {
        vcpus: 3,
        memory_mib: 768,
        network: Some(TapNetwork {
            host_dev_name: "fbtap0".into(),
            guest_mac: None,
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn boot_plan_requests_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("api.sock");
    let log = serve_fake(&sock, ok_204());
    let cfg = plan_cfg();
    let plan = BootPlan::new(
        &cfg,
        "/img/vmlinux".into(),
        "/img/initramfs.cpio.gz".into(),
        "/run/vm/rootfs.ext4".into(),
        "/run/vm/v.sock".into(),
    );
    plan.apply(&FirecrackerApi::new(&sock))
        .await
        .expect("apply");
    let got = log_of(&log);
    let order: Vec<(String, String)> = got
        .iter()
        .map(|s| (s.method.clone(), s.path.clone()))
        .collect();
    let want: Vec<(String, String)> = [
        ("PUT", "/machine-config"),
        ("PUT", "/boot-source"),
        ("PUT", "/drives/rootfs"),
        ("PUT", "/vsock"),
        ("PUT", "/network-interfaces/eth0"),
        ("PUT", "/entropy"),
        ("PUT", "/actions"),
    ]
    .iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    assert_eq!(order, want);
    assert_eq!(got[0].body, json!({"vcpu_count": 3, "mem_size_mib": 768}));
    let args = got[1].body["boot_args"].as_str().expect("boot_args");
    assert!(args.contains("firebreak.vsock=1024"), "{args}");
    assert!(args.contains("firebreak.net=tap"), "{args}");
    assert_eq!(
        got[2].body,
        json!({"drive_id": "rootfs", "path_on_host": "/run/vm/rootfs.ext4",
               "is_root_device": true, "is_read_only": false, "io_engine": "Sync"})
    );
    assert_eq!(
        got[3].body,
        json!({"guest_cid": 3, "uds_path": "/run/vm/v.sock"})
    );
    assert_eq!(
        got[4].body,
        json!({"iface_id": "eth0", "host_dev_name": "fbtap0"})
    );
    assert_eq!(got[6].body, json!({"action_type": "InstanceStart"}));
}

#[tokio::test]
async fn boot_plan_stops_at_the_first_refusal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("api.sock");
    let log = serve_fake(
        &sock,
        Arc::new(|s: &Seen| {
            if s.path.starts_with("/drives/") {
                (
                    400,
                    json!({"fault_message": "Unable to open the drive"}).to_string(),
                )
            } else {
                (204, String::new())
            }
        }),
    );
    let cfg = FirecrackerConfig::default();
    let plan = BootPlan::new(
        &cfg,
        "/k".into(),
        "/i".into(),
        "/missing.ext4".into(),
        "/v.sock".into(),
    );
    let err = plan
        .apply(&FirecrackerApi::new(&sock))
        .await
        .expect_err("refused");
    assert_eq!(err.fault_message(), Some("Unable to open the drive"));
    let paths: Vec<String> = log_of(&log).into_iter().map(|s| s.path).collect();
    assert_eq!(paths, ["/machine-config", "/boot-source", "/drives/rootfs"]);
}

// ---------------------------------------------------------------------------
// Whole VMs against a fake `firecracker` binary.

/// Plays Firecracker's vsock muxer on `uds`: answers `CONNECT <port>` with
/// `OK` and serves an in-process agent on the stream.
fn serve_muxer(uds: PathBuf) {
    let Ok(listener) = UnixListener::bind(&uds) else {
        return;
    };
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut line = Vec::new();
                let mut b = [0u8; 1];
                while s.read_exact(&mut b).await.is_ok() && b[0] != b'\n' {
                    line.push(b[0]);
                }
                if line != b"CONNECT 1024" {
                    let _ = s.write_all(b"FAILURE\n").await;
                    return;
                }
                let _ = s.write_all(b"OK 1073741824\n").await;
                let (r, w) = s.into_split();
                let _ = firebreak_agent::serve(r, w, Arc::new(Default::default())).await;
            });
        }
    });
}

/// A fake Firecracker "installation": a script that records its arguments
/// and pid and sleeps, and a watcher that serves a fake API on the socket
/// each started instance was given.
struct FakeFirecracker {
    dir: tempfile::TempDir,
    binary: PathBuf,
    /// One request log per started instance, in start order.
    logs: Arc<Mutex<Vec<Log>>>,
}

fn arg_after(args: &[String], flag: &str) -> Option<String> {
    let i = args.iter().position(|a| a == flag)?;
    args.get(i + 1).cloned()
}

impl FakeFirecracker {
    fn start() -> FakeFirecracker {
        let dir = tempfile::tempdir().expect("tempdir");
        let spawns = dir.path().join("spawns");
        std::fs::create_dir(&spawns).expect("mkdir");
        let binary = dir.path().join("firecracker");
        let script = format!(
            "#!/bin/sh\nd='{}'\nprintf '%s\\n' \"$@\" > \"$d/.args.$$\"\nmv \"$d/.args.$$\" \"$d/$$\"\nexec sleep 30\n",
            spawns.display()
        );
        std::fs::write(&binary, script).expect("write script");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let logs: Arc<Mutex<Vec<Log>>> = Arc::default();
        let logs2 = logs.clone();
        tokio::spawn(async move {
            let mut started = HashSet::new();
            loop {
                let mut entries: Vec<_> = std::fs::read_dir(&spawns)
                    .map(|rd| rd.flatten().map(|e| e.path()).collect())
                    .unwrap_or_default();
                entries.sort();
                for p in entries {
                    let name = p
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    if name.starts_with('.') || !started.insert(name.clone()) {
                        continue;
                    }
                    let pid: i32 = name.parse().expect("pid");
                    let args: Vec<String> = std::fs::read_to_string(&p)
                        .unwrap_or_default()
                        .lines()
                        .map(str::to_string)
                        .collect();
                    let sock = PathBuf::from(arg_after(&args, "--api-sock").expect("--api-sock"));
                    let id = arg_after(&args, "--id").expect("--id");
                    let log = serve_fake(&sock, fake_vmm(pid, id));
                    if let Ok(mut l) = logs2.lock() {
                        l.push(log);
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        FakeFirecracker { dir, binary, logs }
    }

    fn log(&self, i: usize) -> Vec<Seen> {
        let log = self.logs.lock().ok().and_then(|l| l.get(i).cloned());
        log.map(|l| log_of(&l)).unwrap_or_default()
    }

    fn config(&self) -> FirecrackerConfig {
        FirecrackerConfig {
            binary: Some(self.binary.clone()),
            run_parent: Some(self.dir.path().to_path_buf()),
            boot_timeout: Duration::from_secs(10),
            ..Default::default()
        }
    }
}

/// Firecracker's behaviour, as far as the backend relies on it.
fn fake_vmm(pid: i32, id: String) -> Responder {
    let vsock: Arc<Mutex<Option<PathBuf>>> = Arc::default();
    Arc::new(move |s: &Seen| {
        let uds = |v: &Value| v.as_str().map(PathBuf::from);
        match (s.method.as_str(), s.path.as_str()) {
            ("GET", "/") => {
                return (
                    200,
                    json!({"app_name": "Firecracker", "id": id, "state": "Not started", "vmm_version": "fake"})
                        .to_string(),
                )
            }
            ("PUT", "/vsock") => {
                if let Ok(mut v) = vsock.lock() {
                    *v = uds(&s.body["uds_path"]);
                }
            }
            ("PUT", "/snapshot/load") => {
                if let Ok(mut v) = vsock.lock() {
                    *v = uds(&s.body["vsock_override"]["uds_path"]);
                }
            }
            ("PUT", "/snapshot/create") => {
                for k in ["snapshot_path", "mem_file_path"] {
                    if let Some(p) = uds(&s.body[k]) {
                        let _ = std::fs::write(p, k);
                    }
                }
            }
            ("PUT", "/actions") if s.body["action_type"] == "SendCtrlAltDel" => {
                // reboot=k: the guest resets and Firecracker exits.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            _ => {}
        }
        let running = (s.path == "/actions" && s.body["action_type"] == "InstanceStart")
            || (s.path == "/vm" && s.body["state"] == "Resumed");
        if running {
            if let Some(p) = vsock.lock().ok().and_then(|mut v| v.take()) {
                serve_muxer(p);
            }
        }
        (204, String::new())
    })
}

fn fake_image(dir: &Path) -> BootFiles {
    let files = BootFiles {
        vmlinux: dir.join("vmlinux"),
        initramfs: dir.join("initramfs.cpio.gz"),
        rootfs: dir.join("rootfs.ext4"),
    };
    std::fs::write(&files.vmlinux, b"ELF").expect("write");
    std::fs::write(&files.initramfs, b"cpio").expect("write");
    std::fs::write(&files.rootfs, b"ext4 base").expect("write");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&files.rootfs)
        .expect("open");
    f.set_len(64 << 20).expect("sparse rootfs");
    files
}

/// A VM booted by `fake` from a fake image (kept in the returned folder).
async fn boot_fake(fake: &FakeFirecracker) -> (tempfile::TempDir, BootFiles, FirecrackerVm) {
    let img = tempfile::tempdir().expect("tempdir");
    let files = fake_image(img.path());
    let vm = FirecrackerVm::boot(&files, &fake.config())
        .await
        .expect("boot");
    (img, files, vm)
}

#[tokio::test]
async fn boots_runs_a_job_and_tears_down() {
    let fake = FakeFirecracker::start();
    let (_img, files, vm) = boot_fake(&fake).await;
    let run_dir = vm.run_dir().to_path_buf();
    let disk = std::fs::read(run_dir.join("rootfs.ext4")).expect("disk copy");
    assert!(disk.starts_with(b"ext4 base"));
    assert_eq!(disk.len(), 64 << 20);
    use std::os::unix::fs::MetadataExt;
    let blocks = std::fs::metadata(run_dir.join("rootfs.ext4"))
        .expect("stat")
        .blocks();
    assert!(blocks < 1024, "the copy stays sparse ({blocks} blocks)");
    assert!(!vm.boot_stats().restored);

    let log = fake.log(0);
    let calls: Vec<String> = log
        .iter()
        .map(|s| format!("{} {}", s.method, s.path))
        .collect();
    assert_eq!(
        calls,
        [
            "GET /",
            "PUT /machine-config",
            "PUT /boot-source",
            "PUT /drives/rootfs",
            "PUT /vsock",
            "PUT /entropy",
            "PUT /actions"
        ]
    );
    assert_eq!(
        log[2].body["kernel_image_path"],
        json!(files.vmlinux.to_string_lossy())
    );
    assert_eq!(
        log[2].body["initrd_path"],
        json!(files.initramfs.to_string_lossy())
    );
    assert_eq!(
        log[3].body["path_on_host"],
        json!(run_dir.join("rootfs.ext4").to_string_lossy())
    );
    assert_eq!(
        log[4].body,
        json!({"guest_cid": 3, "uds_path": run_dir.join("v.sock").to_string_lossy()})
    );

    // The runner's Sandbox over the (fake) guest's agent; the job tree goes
    // to a temporary directory because this "guest" is the host.
    let root = tempfile::tempdir().expect("tempdir");
    let sb = FirecrackerSandbox::from_vm(vm, root.path(), "repo")
        .await
        .expect("sandbox");
    assert_eq!(sb.backend(), "firecracker");
    assert!(sb.layout().workspace.is_dir());
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let st = sb
        .exec(
            ExecRequest::new(["/bin/sh", "-c", "echo hello; echo oops >&2"]),
            tx,
        )
        .await
        .expect("exec");
    assert_eq!(st, ExitStatus::Exited(0));
    let mut lines = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        lines.push(ev.line);
    }
    lines.sort();
    assert_eq!(lines, ["hello", "oops"]);
    let f = sb.layout().workspace.join("f.txt");
    sb.write_file(&f, b"data".to_vec(), None)
        .await
        .expect("write");
    assert_eq!(
        sb.read_file(&f).await.expect("read"),
        Some(b"data".to_vec())
    );
    assert!(sb.read_file(Path::new("/etc/passwd")).await.is_err());

    sb.destroy().await.expect("destroy");
    assert!(!run_dir.exists(), "run dir removed");
    // A finished job's VM is killed with its disk, not asked to power off first.
    let last = fake.log(0).last().cloned().expect("requests");
    assert_eq!(
        last,
        seen("PUT", "/actions", json!({"action_type": "InstanceStart"}))
    );
    assert!(matches!(
        sb.read_file(&f).await,
        Err(firebreak_runner::sandbox::SandboxError::Destroyed)
    ));
}

/// A `runs-on` disk label: the VM's disk copy grows (sparsely) and Firecracker is told to
/// reopen it, which hands the guest its new capacity. (The guest's `resize2fs` needs a real
/// guest: `firecracker_real.rs`.)
#[tokio::test]
async fn growing_the_root_drive_grows_the_copy_and_reopens_it() {
    let fake = FakeFirecracker::start();
    let (_img, files, vm) = boot_fake(&fake).await;
    let disk = vm.run_dir().join("rootfs.ext4");
    vm.grow_root_drive(256 << 20).await.expect("grow");
    let meta = std::fs::metadata(&disk).expect("stat");
    assert_eq!(meta.len(), 256 << 20);
    use std::os::unix::fs::MetadataExt;
    assert!(
        meta.blocks() < 1024,
        "still sparse ({} blocks)",
        meta.blocks()
    );
    assert_eq!(
        fake.log(0).last().cloned(),
        Some(seen(
            "PATCH",
            "/drives/rootfs",
            json!({"drive_id": "rootfs", "path_on_host": disk.to_string_lossy()})
        ))
    );
    // Never smaller: the base image stays whole.
    vm.grow_root_drive(1 << 20).await.expect("no shrink");
    assert_eq!(std::fs::metadata(&disk).expect("stat").len(), 256 << 20);
    // The base image is untouched.
    assert_eq!(
        std::fs::metadata(&files.rootfs).expect("stat").len(),
        64 << 20
    );
}

#[tokio::test]
async fn snapshot_then_restore_sends_the_clone_sequence() {
    let fake = FakeFirecracker::start();
    let img = tempfile::tempdir().expect("tempdir");
    let files = fake_image(img.path());
    let mut vm = FirecrackerVm::boot(&files, &fake.config())
        .await
        .expect("boot");
    let snap_dir = fake.dir.path().join("snap");
    let snap = vm.snapshot(&snap_dir, true).await.expect("snapshot");
    let log = fake.log(0);
    let tail: Vec<Seen> = log[log.len() - 3..].to_vec();
    assert_eq!(
        tail,
        [
            seen("PATCH", "/vm", json!({"state": "Paused"})),
            // Without a jail, written straight into the snapshot directory.
            seen(
                "PUT",
                "/snapshot/create",
                json!({"snapshot_path": snap_dir.join("vmstate").to_string_lossy(),
                       "mem_file_path": snap_dir.join("memory").to_string_lossy(),
                       "snapshot_type": "Full"})
            ),
            seen("PATCH", "/vm", json!({"state": "Resumed"})),
        ]
    );
    for f in ["vmstate", "memory", "rootfs.ext4", "snapshot.json"] {
        assert!(snap_dir.join(f).is_file(), "{f} in snapshot");
    }
    let reopened = firebreak_vm::firecracker::Snapshot::open(&snap_dir).expect("open");
    assert_eq!(reopened, snap);
    assert_eq!(
        snap.meta.recorded_drive_path,
        vm.run_dir().join("rootfs.ext4")
    );

    // Firecracker resets vsock connections at snapshot time: the VM talks
    // to its agent over a new one afterwards.
    assert_eq!(echo(&vm, "still here").await, "still here");

    // The clone: load, re-point the drive, resume, agent (the in-process
    // agent owns no guest, so no clock is set), entropy.
    let mut clone = FirecrackerVm::restore(&snap, &fake.config())
        .await
        .expect("restore");
    assert!(clone.boot_stats().restored);
    assert_eq!(echo(&clone, "clone").await, "clone");
    let log = fake.log(1);
    let calls: Vec<String> = log
        .iter()
        .map(|s| format!("{} {}", s.method, s.path))
        .collect();
    assert_eq!(
        calls,
        [
            "GET /",
            "PUT /snapshot/load",
            "PATCH /drives/rootfs",
            "PATCH /vm"
        ]
    );
    let load = &log[1].body;
    assert_eq!(
        load["snapshot_path"],
        json!(snap_dir.join("vmstate").to_string_lossy())
    );
    assert_eq!(
        load["mem_backend"],
        json!({"backend_type": "File", "backend_path": snap_dir.join("memory").to_string_lossy()})
    );
    assert_eq!(load["resume_vm"], json!(false));
    let new_uds = load["vsock_override"]["uds_path"]
        .as_str()
        .expect("vsock_override")
        .to_string();
    assert_ne!(
        new_uds,
        vm.run_dir().join("v.sock").to_string_lossy(),
        "the clone has its own vsock socket"
    );
    let new_dir = Path::new(&new_uds).parent().expect("parent");
    assert_eq!(
        log[2].body,
        json!({"drive_id": "rootfs", "path_on_host": new_dir.join("rootfs.ext4").to_string_lossy()})
    );
    assert_eq!(log[3].body, json!({"state": "Resumed"}));
    clone.kill().await;
    assert!(!new_dir.exists(), "the clone's run directory is removed");
    vm.kill().await;
}

/// Runs `echo WORD` through `vm`'s agent and returns what it printed.
async fn echo(vm: &FirecrackerVm, word: &str) -> String {
    let h = vm
        .client()
        .exec(firebreak_agent::ExecSpec::new(["/bin/echo", word]))
        .await
        .expect("exec");
    let (out, _, st) = tokio::time::timeout(Duration::from_secs(10), h.collect())
        .await
        .expect("in time")
        .expect("collect");
    assert_eq!(st, firebreak_agent::ExitStatus::Exited { code: 0 });
    String::from_utf8_lossy(&out).trim().to_string()
}

#[tokio::test]
async fn the_snapshot_cache_keys_by_shape_and_files() {
    let fake = FakeFirecracker::start();
    let img = tempfile::tempdir().expect("tempdir");
    let files = fake_image(img.path());
    let cache = SnapshotCache::new(fake.dir.path().join("cache"));
    let cfg = fake.config();
    assert_eq!(cache.find(&files, &cfg), None, "nothing taken yet");

    // Booted as the provider boots a VM that will be snapshotted: its drive
    // through the snapshot's lasting alias.
    let name = cache.name(&files, &cfg);
    assert!(name.starts_with("2c-2048m-plain-"), "{name}");
    let alias = cache.new_drive_alias(&name);
    assert_eq!(alias.parent(), Some(cache.dir().join(".drives").as_path()));
    assert_ne!(alias, cache.new_drive_alias(&name), "one alias per take");
    let boot_cfg = FirecrackerConfig {
        drive_alias: Some(alias.clone()),
        ..cfg.clone()
    };
    let mut vm = FirecrackerVm::boot(&files, &boot_cfg).await.expect("boot");
    assert_eq!(
        fake.log(0)[3].body["path_on_host"],
        json!(alias.to_string_lossy())
    );
    assert_eq!(
        std::fs::read_link(&alias).expect("alias"),
        vm.run_dir().join("rootfs.ext4")
    );
    let snap = cache.take(&mut vm, &files, &cfg).await.expect("take");
    assert_eq!(snap.dir, cache.dir().join(&name));
    assert_eq!(snap.meta.recorded_drive_path, alias);
    assert_eq!(
        std::fs::read_link(&alias).expect("alias"),
        snap.dir.join("rootfs.ext4"),
        "clones reopen the snapshot's own disk while they load"
    );
    let mut entries: Vec<String> = std::fs::read_dir(cache.dir())
        .expect("read cache")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(
        entries,
        [".drives".to_string(), name.clone()],
        "no temporary directory left"
    );
    assert!(snap.dir.join("files.json").is_file());
    assert_eq!(
        echo(&vm, "served").await,
        "served",
        "the VM goes on to serve its job"
    );
    assert_eq!(cache.find(&files, &cfg), Some(snap.clone()));
    assert!(
        cache.prune_stale().is_empty(),
        "nothing it was taken from changed"
    );

    // A clone of it, after the VM that took it is gone; also when the alias
    // was made to lead elsewhere (it is put back).
    vm.kill().await;
    let mut clone = FirecrackerVm::restore(&snap, &cfg).await.expect("restore");
    assert_eq!(echo(&clone, "clone").await, "clone");
    clone.kill().await;
    std::os::unix::fs::symlink("/nonexistent", cache.dir().join("x")).expect("symlink");
    std::fs::rename(cache.dir().join("x"), &alias).expect("mislead the alias");
    let mut clone = FirecrackerVm::restore(&snap, &cfg).await.expect("restore");
    assert_eq!(
        std::fs::read_link(&alias).expect("alias"),
        snap.dir.join("rootfs.ext4")
    );
    clone.kill().await;

    // Another shape, or a VM with a network device: not this snapshot.
    let small = FirecrackerConfig {
        vcpus: 1,
        memory_mib: 512,
        ..cfg.clone()
    };
    assert_eq!(cache.find(&files, &small), None);
    assert!(cache.name(&files, &small).starts_with("1c-512m-plain-"));
    let tap = FirecrackerConfig {
        network: Some(TapNetwork {
            host_dev_name: "tap0".into(),
            guest_mac: None,
        }),
        ..cfg.clone()
    };
    assert_eq!(cache.find(&files, &tap), None);

    // A clone that failed discards its snapshot, but not one taken again
    // since under the same name.
    let mut older = snap.clone();
    older.meta.recorded_drive_path = cache.new_drive_alias(&name);
    cache.discard(&older);
    assert!(snap.dir.is_dir(), "a retaken snapshot is not discarded");
    cache.discard(&snap);
    assert!(!snap.dir.exists());
    let alias2 = cache.new_drive_alias(&name);
    let boot_cfg2 = FirecrackerConfig {
        drive_alias: Some(alias2.clone()),
        ..cfg.clone()
    };
    let mut vm = FirecrackerVm::boot(&files, &boot_cfg2).await.expect("boot");
    let snap = cache.take(&mut vm, &files, &cfg).await.expect("take again");
    vm.kill().await;

    // A rebuilt kernel: the old snapshot is not found, and pruning removes
    // it and its alias, and the alias of the snapshot discarded before;
    // leftovers of a dead process (a lock file nobody holds) go too; one just made, its
    // lock file not yet there, stays.
    let dead = cache.dir().join(".tmp-999999999-0000abcd-0");
    let ours = cache.dir().join(format!(".tmp-{}-77", std::process::id()));
    std::fs::create_dir(&dead).expect("mkdir");
    std::fs::write(dead.join(".owner"), "999999999\n").expect("owner");
    std::fs::create_dir(&ours).expect("mkdir");
    std::fs::write(&files.vmlinux, b"ELF, rebuilt").expect("rewrite kernel");
    assert_eq!(cache.find(&files, &cfg), None);
    let mut removed = cache.prune_stale();
    removed.sort();
    let mut want = vec![alias, alias2, dead, snap.dir.clone()];
    want.sort();
    assert_eq!(removed, want);
    assert!(ours.is_dir());
}

#[tokio::test]
async fn a_snapshot_that_cannot_be_stored_is_not_taken_again() {
    let fake = FakeFirecracker::start();
    let img = tempfile::tempdir().expect("tempdir");
    let files = fake_image(img.path());
    // The cache's directory cannot be made: a file is in the way.
    let blocked = fake.dir.path().join("blocked");
    std::fs::write(&blocked, b"").expect("write");
    let cache = SnapshotCache::new(&blocked);
    let cfg = fake.config();
    let name = cache.name(&files, &cfg);
    assert!(cache.may_take(&name));
    let mut vm = FirecrackerVm::boot(&files, &cfg).await.expect("boot");
    assert!(cache.take(&mut vm, &files, &cfg).await.is_err());
    assert!(!cache.may_take(&name), "one failure per process is enough");
    // A VM with a network device is refused without counting as a failure.
    let tap = FirecrackerConfig {
        network: Some(TapNetwork {
            host_dev_name: "tap0".into(),
            guest_mac: None,
        }),
        ..cfg.clone()
    };
    let other = SnapshotCache::new(fake.dir.path().join("other"));
    assert!(other.take(&mut vm, &files, &tap).await.is_err());
    assert!(other.may_take(&other.name(&files, &tap)));
    vm.kill().await;
}

#[tokio::test]
async fn a_vmm_that_dies_at_start_is_reported_with_its_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let binary = dir.path().join("firecracker");
    std::fs::write(
        &binary,
        "#!/bin/sh\necho 'Error: KVM: Could not open /dev/kvm' >&2\nexit 1\n",
    )
    .expect("write");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let files = fake_image(dir.path());
    let cfg = FirecrackerConfig {
        binary: Some(binary),
        run_parent: Some(dir.path().to_path_buf()),
        ..Default::default()
    };
    let err = FirecrackerVm::boot(&files, &cfg).await.expect_err("fails");
    let text = err.to_string();
    assert!(matches!(err, FirecrackerError::Boot { .. }), "{text}");
    assert!(text.contains("exited"), "{text}");
    assert!(text.contains("Could not open /dev/kvm"), "{text}");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read_dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("fcvm-"))
        .collect();
    assert!(left.is_empty(), "run dir removed: {left:?}");
}

#[tokio::test]
async fn the_warm_pool_keeps_clones_ready_within_the_budget() {
    use firebreak_vm::firecracker::provider::vm_cost_mib;
    use firebreak_vm::firecracker::FirecrackerPool;
    use firebreak_vm::MemoryBudget;
    let fake = FakeFirecracker::start();
    let img = tempfile::tempdir().expect("tempdir");
    let files = fake_image(img.path());
    let cfg = fake.config();
    let mut vm = FirecrackerVm::boot(&files, &cfg).await.expect("boot");
    let snap = vm
        .snapshot(&fake.dir.path().join("snap"), true)
        .await
        .expect("snapshot");
    vm.kill().await;

    // Room for two VMs; the pool wants three.
    let cost = vm_cost_mib(snap.meta.memory_mib);
    let budget = MemoryBudget::new(2 * cost + 100);
    let pool = FirecrackerPool::new(3, budget.clone());
    let ready = |n: usize| {
        let pool = pool.clone();
        let snap = snap.clone();
        async move {
            for _ in 0..200 {
                if pool.ready(&snap) == n {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            false
        }
    };
    pool.keep_warm(&cfg, &snap);
    assert!(ready(2).await, "filled up to the budget");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(pool.ready(&snap), 2, "never over the budget");
    assert_eq!(budget.used_mib(), 2 * cost);

    // A job takes one: it answers, keeps its memory, and the pool waits for room.
    let taken = pool.take(&snap).await.expect("a ready VM");
    assert!(taken.boot_stats().restored);
    assert_eq!(echo(&taken, "pooled").await, "pooled");
    assert_eq!(pool.ready(&snap), 1);
    assert_eq!(budget.used_mib(), 2 * cost);
    drop(taken);
    assert!(ready(2).await, "refilled once the job's VM was gone");

    // Anything else charged to the budget may evict idle VMs.
    assert!(budget.evict_one());
    assert_eq!(pool.ready(&snap), 1);
    pool.shutdown().await;
    assert_eq!(pool.ready_total(), 0);
    assert_eq!(budget.used_mib(), 0, "every lease returned");
    pool.keep_warm(&cfg, &snap);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(pool.ready_total(), 0, "no refills after shutdown");
}
