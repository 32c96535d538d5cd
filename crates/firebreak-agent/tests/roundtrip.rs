//! The agent and the host client talking over in-process byte streams.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use firebreak_agent::protocol::{ErrorKind, Request};
use firebreak_agent::server::send_raw;
use firebreak_agent::{
    serve, AgentClient, AgentConfig, ClientError, ExecEvent, ExecSpec, ExitStatus, FileKind,
    OutStream, SessionEnd,
};
use tokio::net::UnixStream;

type Served = tokio::task::JoinHandle<Result<SessionEnd, firebreak_agent::server::AgentError>>;

async fn pair() -> (AgentClient, Served) {
    pair_with(AgentConfig::default()).await
}

async fn pair_with(cfg: AgentConfig) -> (AgentClient, Served) {
    let (a, b) = UnixStream::pair().expect("socketpair");
    let (ar, aw) = a.into_split();
    let server = tokio::spawn(serve(ar, aw, Arc::new(cfg)));
    let (br, bw) = b.into_split();
    let client = AgentClient::new(br, bw);
    client.hello().await.expect("hello");
    (client, server)
}

/// Runs `spec` to the end: (stdout, stderr, status).
async fn run(c: &AgentClient, spec: ExecSpec) -> (Vec<u8>, Vec<u8>, ExitStatus) {
    c.exec(spec)
        .await
        .expect("exec")
        .collect()
        .await
        .expect("collect")
}

fn sh(script: &str) -> ExecSpec {
    ExecSpec::new(["sh", "-c", script]).env("PATH", "/usr/bin:/bin")
}

/// The first hello is lost on the way (as over a virtio port the agent is
/// closing); the resent one is answered, and a late answer to the first
/// does no harm.
#[tokio::test]
async fn a_lost_hello_is_sent_again() {
    let (a, b) = UnixStream::pair().expect("socketpair");
    let (mut ar, aw) = a.into_split();
    let agent = tokio::spawn(async move {
        // Swallow the first frame, then serve normally.
        let _: firebreak_agent::protocol::Frame<Request> =
            firebreak_agent::protocol::read_frame(&mut ar)
                .await
                .expect("first hello");
        serve(ar, aw, Arc::new(AgentConfig::default())).await
    });
    let (br, bw) = b.into_split();
    let c = AgentClient::new(br, bw);
    let t = Instant::now();
    let info = tokio::time::timeout(
        Duration::from_secs(5),
        c.hello_resending(Duration::from_millis(200)),
    )
    .await
    .expect("the resent hello is answered")
    .expect("hello");
    assert_eq!(info.protocol, firebreak_agent::PROTOCOL_VERSION);
    assert!(
        t.elapsed() >= Duration::from_millis(200),
        "answered before any resend"
    );
    // The session works after the handshake.
    let (out, _, st) = run(&c, sh("echo ok")).await;
    assert_eq!(
        (out.as_slice(), st),
        (&b"ok\n"[..], ExitStatus::Exited { code: 0 })
    );
    drop(c);
    let _ = agent.await;
}

/// A peer that goes away ends the resending wait with "disconnected".
#[tokio::test]
async fn resent_hellos_stop_when_the_peer_is_gone() {
    let (a, b) = UnixStream::pair().expect("socketpair");
    let (br, bw) = b.into_split();
    let c = AgentClient::new(br, bw);
    let closer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(a);
    });
    let err = tokio::time::timeout(
        Duration::from_secs(5),
        c.hello_resending(Duration::from_millis(100)),
    )
    .await
    .expect("returns once the peer is gone")
    .expect_err("no agent");
    assert!(matches!(err, ClientError::Disconnected), "{err:?}");
    closer.await.expect("closer");
}

#[tokio::test]
async fn hello_reports_versions() {
    let (a, b) = UnixStream::pair().expect("socketpair");
    let (ar, aw) = a.into_split();
    tokio::spawn(serve(ar, aw, Arc::new(AgentConfig::default())));
    let (br, bw) = b.into_split();
    let c = AgentClient::new(br, bw);
    // Before hello everything but ping is refused.
    let err = c.read_file("/etc/hostname").await.expect_err("refused");
    assert!(
        matches!(
            err,
            ClientError::Agent {
                kind: ErrorKind::Invalid,
                ..
            }
        ),
        "{err}"
    );
    let info = c.hello().await.expect("hello");
    assert_eq!(info.protocol, firebreak_agent::PROTOCOL_VERSION);
    assert!(!info.kernel_release.is_empty());
    assert!(!info.init);
    c.ping().await.expect("ping");
}

#[tokio::test]
async fn exec_streams_output_in_order_with_exit_code() {
    let (c, _s) = pair().await;
    let mut h = c
        .exec(sh("echo one; echo two >&2; sleep 0.1; echo three; exit 3"))
        .await
        .expect("exec");
    assert!(h.pid() > 0);
    let mut events = Vec::new();
    loop {
        match h.next().await.expect("event") {
            ExecEvent::Output(s, b) => events.push((s, String::from_utf8_lossy(&b).into_owned())),
            ExecEvent::Exited(st) => {
                assert_eq!(st, ExitStatus::Exited { code: 3 });
                break;
            }
        }
    }
    let out: String = events
        .iter()
        .filter(|(s, _)| *s == OutStream::Stdout)
        .map(|(_, t)| t.as_str())
        .collect();
    let err: String = events
        .iter()
        .filter(|(s, _)| *s == OutStream::Stderr)
        .map(|(_, t)| t.as_str())
        .collect();
    assert_eq!(out, "one\nthree\n");
    assert_eq!(err, "two\n");
    // "three" came after the sleep, so it is the last output event.
    assert_eq!(events.last().map(|(_, t)| t.as_str()), Some("three\n"));
}

#[tokio::test]
async fn exec_gets_exactly_the_given_environment_and_cwd() {
    let (c, _s) = pair().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spec = sh("env | sort; pwd").env("FOO", "bar baz");
    spec.cwd = Some(dir.path().to_string_lossy().into_owned());
    let (out, _, st) = c
        .exec(spec)
        .await
        .expect("exec")
        .collect()
        .await
        .expect("collect");
    assert!(st == ExitStatus::Exited { code: 0 });
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("FOO=bar baz\n"), "{text}");
    assert!(
        text.contains(&format!("{}\n", dir.path().display())),
        "{text}"
    );
    assert!(!text.contains("HOME="), "inherited env leaked: {text}");
}

/// A command's environment is as large as the kernel lets `execve` take (GitHub's
/// `toJSON(github)` in an `env:`, a big `GITHUB_ENV` value): it is sent whole, and one
/// beyond what the kernel takes is the kernel's "argument list too long", not a
/// protocol error that would break every later request.
#[tokio::test]
async fn a_large_environment_reaches_the_command_and_a_too_large_one_is_a_spawn_error() {
    let (c, _s) = pair().await;
    // Three values of 100,000 bytes: 300 KB, above protocol 3's 64 KiB headers.
    let big = "x".repeat(100_000);
    let spec = sh("echo ${#A} ${#B} ${#C}")
        .env("A", &big)
        .env("B", &big)
        .env("C", &big);
    let (out, err, st) = run(&c, spec).await;
    assert_eq!(
        String::from_utf8_lossy(&out),
        "100000 100000 100000\n",
        "{}",
        String::from_utf8_lossy(&err)
    );
    assert!(st == ExitStatus::Exited { code: 0 });
    // A single string above Linux's 128 KiB per string: execve refuses it.
    let spec = sh("true").env("HUGE", "y".repeat(200_000));
    let err = c.exec(spec).await.err().expect("E2BIG");
    assert!(
        matches!(&err, ClientError::Agent { kind: ErrorKind::Spawn, message } if message.contains("too long")),
        "{err}"
    );
    // The session goes on.
    let (out, _, _) = run(&c, sh("echo still here")).await;
    assert_eq!(out, b"still here\n");
}

#[tokio::test]
async fn missing_program_and_cwd_are_spawn_errors() {
    let (c, _s) = pair().await;
    let err = c
        .exec(ExecSpec::new(["no-such-program-xyz"]))
        .await
        .err()
        .expect("error");
    assert!(
        matches!(
            err,
            ClientError::Agent {
                kind: ErrorKind::Spawn,
                ..
            }
        ),
        "{err}"
    );
    let mut spec = sh("true");
    spec.cwd = Some("/no/such/dir".into());
    let err = c.exec(spec).await.err().expect("error");
    assert!(
        matches!(
            err,
            ClientError::Agent {
                kind: ErrorKind::Spawn,
                ..
            }
        ),
        "{err}"
    );
    let err = c
        .exec(ExecSpec::new(Vec::<String>::new()))
        .await
        .err()
        .expect("error");
    assert!(
        matches!(
            err,
            ClientError::Agent {
                kind: ErrorKind::Invalid,
                ..
            }
        ),
        "{err}"
    );
}

fn is_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // A zombie waiting for its (re)parent is dead too.
        Ok(s) => s
            .rsplit(')')
            .next()
            .map(|r| r.trim_start().starts_with('Z'))
            .unwrap_or(false),
    }
}

/// The pid written in `pidfile`, and whether that process is gone within 2 s.
async fn pid_in_file_dies(pidfile: &std::path::Path) -> (i32, bool) {
    let pid: i32 = std::fs::read_to_string(pidfile)
        .expect("pidfile")
        .trim()
        .parse()
        .expect("pid");
    for _ in 0..100 {
        if is_gone(pid) {
            return (pid, true);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (pid, false)
}

#[tokio::test]
async fn timeout_kills_the_whole_process_tree() {
    let (c, _s) = pair().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let pidfile = dir.path().join("bg.pid");
    let mut spec = sh(&format!(
        "sleep 30 & echo $! > {}; echo started; sleep 30",
        pidfile.display()
    ));
    spec.timeout_ms = Some(500);
    let t0 = Instant::now();
    let (out, _, st) = c
        .exec(spec)
        .await
        .expect("exec")
        .collect()
        .await
        .expect("collect");
    assert_eq!(st, ExitStatus::TimedOut);
    assert_eq!(String::from_utf8_lossy(&out), "started\n");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t0.elapsed()
    );
    let (bg, gone) = pid_in_file_dies(&pidfile).await;
    assert!(gone, "background child {bg} survived the timeout");
}

#[tokio::test]
async fn cancel_and_signal_running_processes() {
    let (c, _s) = pair().await;
    let h = c.exec(sh("sleep 30")).await.expect("exec");
    c.cancel(h.id()).await.expect("cancel");
    let (_, _, st) = h.collect().await.expect("collect");
    assert_eq!(st, ExitStatus::Cancelled);

    let h = c
        .exec(ExecSpec::new(["sleep", "30"]).env("PATH", "/usr/bin:/bin"))
        .await
        .expect("exec");
    c.signal(h.id(), 15).await.expect("signal");
    let (_, _, st) = h.collect().await.expect("collect");
    assert_eq!(st, ExitStatus::Signaled { signal: 15 });
    let err = c.cancel(9999).await.expect_err("unknown");
    assert!(matches!(
        err,
        ClientError::Agent {
            kind: ErrorKind::UnknownId,
            ..
        }
    ));
}

#[tokio::test]
async fn stdin_is_forwarded() {
    let (c, _s) = pair().await;
    let mut spec = ExecSpec::new(["cat"]).env("PATH", "/usr/bin:/bin");
    spec.stdin = true;
    let h = c.exec(spec).await.expect("exec");
    let big: Vec<u8> = (0..400_000u32).map(|i| (i % 251) as u8).collect();
    h.write_stdin(&big, true).await.expect("stdin");
    let (out, _, st) = h.collect().await.expect("collect");
    assert_eq!(st, ExitStatus::Exited { code: 0 });
    assert_eq!(out, big);
}

#[tokio::test]
async fn files_write_read_stat_remove() {
    let (c, _s) = pair().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("a/b/c.sh");
    let ps = p.to_string_lossy().into_owned();
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    c.write_file(&ps, &data, Some(0o750)).await.expect("write");
    assert_eq!(std::fs::read(&p).expect("read back"), data);
    assert_eq!(
        std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777,
        0o750
    );
    assert_eq!(c.read_file(&ps).await.expect("read"), Some(data.clone()));
    c.write_file(&ps, b"", None).await.expect("truncate");
    assert_eq!(c.read_file(&ps).await.expect("read"), Some(Vec::new()));
    let st = c.stat(&ps).await.expect("stat").expect("exists");
    assert_eq!((st.kind, st.size, st.mode), (FileKind::File, 0, 0o644));
    assert_eq!(c.read_file("/no/such/file").await.expect("read"), None);
    assert_eq!(c.stat("/no/such/file").await.expect("stat"), None);
    let top = dir.path().join("a").to_string_lossy().into_owned();
    assert_eq!(
        c.stat(&top).await.expect("stat").map(|s| s.kind),
        Some(FileKind::Dir)
    );
    c.remove(&top).await.expect("remove");
    c.remove(&top).await.expect("remove missing is fine");
    assert!(!dir.path().join("a").exists());
    // Writing under a regular file fails with an error, not a hang.
    let f = dir.path().join("f");
    std::fs::write(&f, b"x").expect("write");
    let err = c
        .write_file(&format!("{}/sub", f.display()), b"y", None)
        .await
        .expect_err("not a dir");
    assert!(matches!(err, ClientError::Agent { .. }), "{err}");
}

/// Reading or writing a FIFO waits for its other end, however long that takes (a job can
/// make its `$GITHUB_OUTPUT` one): the agent must go on serving meanwhile. The agent here has
/// a runtime of its own with two workers, as in a guest, so that one stuck on such a file
/// would show as unanswered pings rather than as a stalled test.
#[tokio::test]
async fn fifos_being_read_or_written_do_not_stall_the_agent() {
    let (a, b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("agent runtime");
        rt.block_on(async move {
            a.set_nonblocking(true).expect("nonblocking");
            let a = UnixStream::from_std(a).expect("stream");
            let (ar, aw) = a.into_split();
            let _ = serve(ar, aw, Arc::new(AgentConfig::default())).await;
        });
    });
    b.set_nonblocking(true).expect("nonblocking");
    let (br, bw) = UnixStream::from_std(b).expect("stream").into_split();
    let c = Arc::new(AgentClient::new(br, bw));
    c.hello().await.expect("hello");

    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = |name: &str| {
        let p = dir.path().join(name);
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
        p
    };
    let readers: Vec<_> = (0..3).map(|i| fifo(&format!("r{i}"))).collect();
    let written = fifo("w");
    let mut reads = Vec::new();
    for p in &readers {
        let (c, p) = (c.clone(), p.to_string_lossy().into_owned());
        reads.push(tokio::spawn(async move { c.read_file(&p).await }));
    }
    let write = {
        let (c, p) = (c.clone(), written.to_string_lossy().into_owned());
        tokio::spawn(async move { c.write_file(&p, b"to the reader", None).await })
    };
    // Four requests now wait on FIFOs with nobody at the other end.
    tokio::time::sleep(Duration::from_millis(300)).await;
    tokio::time::timeout(Duration::from_secs(5), c.ping())
        .await
        .expect("the agent answers while FIFOs are pending")
        .expect("ping");
    let (out, _, st) =
        tokio::time::timeout(Duration::from_secs(10), run(&c, sh("echo still here")))
            .await
            .expect("an exec runs while FIFOs are pending");
    assert_eq!(
        (out.as_slice(), st),
        (&b"still here\n"[..], ExitStatus::Exited { code: 0 })
    );

    // The other ends arrive: every request completes with the data.
    let ends = readers.clone();
    let w = written.clone();
    let got = tokio::task::spawn_blocking(move || {
        for (i, p) in ends.iter().enumerate() {
            std::fs::write(p, format!("fifo {i}")).expect("write fifo");
        }
        std::fs::read(&w).expect("read fifo")
    })
    .await
    .expect("join");
    assert_eq!(got, b"to the reader");
    for (i, r) in reads.into_iter().enumerate() {
        let data = tokio::time::timeout(Duration::from_secs(5), r)
            .await
            .expect("read ends")
            .expect("join")
            .expect("read");
        assert_eq!(data, Some(format!("fifo {i}").into_bytes()));
    }
    tokio::time::timeout(Duration::from_secs(5), write)
        .await
        .expect("write ends")
        .expect("join")
        .expect("write");
}

#[tokio::test]
async fn tar_in_and_out_keep_modes_and_symlinks() {
    let (c, _s) = pair().await;
    let src = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(src.path().join("sub/deep")).expect("mkdir");
    std::fs::write(src.path().join("run.sh"), b"#!/bin/sh\necho hi\n").expect("write");
    std::fs::set_permissions(
        src.path().join("run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(src.path().join("sub/deep/big.bin"), &big).expect("write");
    std::os::unix::fs::symlink("sub/deep/big.bin", src.path().join("link")).expect("symlink");

    let guest = tempfile::tempdir().expect("tempdir");
    let gdest = guest.path().join("ws");
    let gs = gdest.to_string_lossy().into_owned();
    c.tar_in(src.path(), &gs).await.expect("tar in");
    assert_eq!(
        std::fs::read(gdest.join("sub/deep/big.bin")).expect("big"),
        big
    );
    assert_eq!(
        std::fs::metadata(gdest.join("run.sh"))
            .expect("m")
            .permissions()
            .mode()
            & 0o777,
        0o755
    );
    assert_eq!(
        std::fs::read_link(gdest.join("link"))
            .expect("link")
            .to_string_lossy(),
        "sub/deep/big.bin"
    );

    // The guest changes something; copy the tree back out.
    let (_, _, st) = c
        .exec(sh(&format!("cd {gs} && ./run.sh > out.txt")))
        .await
        .expect("exec")
        .collect()
        .await
        .expect("collect");
    assert_eq!(st, ExitStatus::Exited { code: 0 });
    let back = tempfile::tempdir().expect("tempdir");
    c.tar_out(&gs, back.path()).await.expect("tar out");
    assert_eq!(
        std::fs::read(back.path().join("out.txt")).expect("out"),
        b"hi\n"
    );
    assert_eq!(
        std::fs::read(back.path().join("sub/deep/big.bin")).expect("big"),
        big
    );
    assert!(std::fs::symlink_metadata(back.path().join("link"))
        .expect("link")
        .file_type()
        .is_symlink());

    // copy_out of a single file and of a directory.
    let one = back.path().join("single/out-copy.txt");
    c.copy_out(&format!("{gs}/out.txt"), &one)
        .await
        .expect("copy file");
    assert_eq!(std::fs::read(&one).expect("copy"), b"hi\n");
    let err = c
        .tar_out("/no/such/dir", back.path())
        .await
        .expect_err("missing");
    assert!(err.is_not_found(), "{err}");
}

#[tokio::test]
async fn set_clock_is_refused_outside_a_guest_but_entropy_works() {
    let (c, _s) = pair().await;
    let err = c
        .set_clock(std::time::SystemTime::now())
        .await
        .expect_err("refused");
    assert!(matches!(
        err,
        ClientError::Agent {
            kind: ErrorKind::Invalid,
            ..
        }
    ));
    c.add_entropy(&[1, 2, 3, 4]).await.expect("entropy");
}

#[tokio::test]
async fn session_ends_on_disconnect_and_shutdown_and_survives_garbage_headers() {
    let (c, s) = pair().await;
    drop(c);
    assert_eq!(s.await.expect("join").expect("serve"), SessionEnd::Closed);

    let (c, s) = pair().await;
    c.shutdown().await.expect("shutdown");
    assert_eq!(s.await.expect("join").expect("serve"), SessionEnd::Shutdown);

    // A well-framed but unknown request is answered; the session goes on.
    let (a, b) = UnixStream::pair().expect("socketpair");
    let (ar, aw) = a.into_split();
    let server = tokio::spawn(serve(ar, aw, Arc::new(AgentConfig::default())));
    let (mut br, mut bw) = b.into_split();
    let bad = br#"{"id":5,"op":"frobnicate"}"#;
    let mut frame = b"FB\x01\x00".to_vec();
    frame.extend_from_slice(&(bad.len() as u32).to_be_bytes());
    frame.extend_from_slice(&0u32.to_be_bytes());
    frame.extend_from_slice(bad);
    tokio::io::AsyncWriteExt::write_all(&mut bw, &frame)
        .await
        .expect("write");
    let reply: firebreak_agent::protocol::Frame<firebreak_agent::protocol::Response> =
        firebreak_agent::protocol::read_frame(&mut br)
            .await
            .expect("reply");
    assert!(matches!(
        reply.msg,
        firebreak_agent::protocol::Response::Error {
            kind: ErrorKind::Invalid,
            ..
        }
    ));
    send_raw(&mut bw, 6, &Request::Ping, b"")
        .await
        .expect("ping");
    let reply: firebreak_agent::protocol::Frame<firebreak_agent::protocol::Response> =
        firebreak_agent::protocol::read_frame(&mut br)
            .await
            .expect("reply");
    assert_eq!(reply.id, 6);
    // Bad magic ends the session with an error.
    tokio::io::AsyncWriteExt::write_all(&mut bw, b"XXXXXXXXXXXX")
        .await
        .expect("write");
    assert!(server.await.expect("join").is_err());
}

#[tokio::test]
async fn the_binary_serves_over_stdio() {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_firebreak-agent"))
        .arg("--stdio")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn agent");
    let (Some(w), Some(r)) = (child.stdin.take(), child.stdout.take()) else {
        panic!("no pipes");
    };
    let c = AgentClient::new(r, w);
    c.hello().await.expect("hello");
    let (out, _, st) = c
        .exec(sh("echo via-pipe"))
        .await
        .expect("exec")
        .collect()
        .await
        .expect("collect");
    assert_eq!(
        (out.as_slice(), st),
        (&b"via-pipe\n"[..], ExitStatus::Exited { code: 0 })
    );
    c.shutdown().await.expect("shutdown");
    let st = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("exits")
        .expect("wait");
    assert!(st.success());
}

/// A writable cgroup v2 directory for the test, or why not.
fn test_cgroup_root() -> Result<std::path::PathBuf, String> {
    for base in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
        let base = std::path::Path::new(base);
        // cgroup v2 (a v1 controller hierarchy has no cgroup.controllers).
        if !base.join("cgroup.controllers").exists() {
            continue;
        }
        let dir = base.join(format!("fb-agent-test-{}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
        }
        if !dir.join("cgroup.kill").exists() {
            let _ = std::fs::remove_dir(&dir);
            return Err("this kernel's cgroup v2 has no cgroup.kill".into());
        }
        return Ok(dir);
    }
    Err("no cgroup v2 hierarchy with cgroup.kill".into())
}

#[tokio::test]
async fn each_exec_is_born_in_its_own_cgroup_and_a_timeout_kills_escaped_daemons() {
    let root = match test_cgroup_root() {
        Ok(r) => r,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    let (c, _s) = pair_with(AgentConfig {
        cgroup_root: Some(root.clone()),
        ..AgentConfig::default()
    })
    .await;

    // The command itself (not only its later children) is in a fresh cgroup.
    let (out, _, st) = run(&c, sh("cat /proc/self/cgroup")).await;
    assert_eq!(st, ExitStatus::Exited { code: 0 });
    let text = String::from_utf8_lossy(&out);
    let unified = text
        .lines()
        .find(|l| l.starts_with("0::"))
        .unwrap_or_default();
    let leaf = root
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    assert!(
        unified.contains(&format!("{leaf}/fb-exec-")),
        "not in a per-exec cgroup: {text}"
    );

    // A daemon that left the process group (setsid) still dies with the job.
    let dir = tempfile::tempdir().expect("tempdir");
    let pidfile = dir.path().join("daemon.pid");
    let mut spec = sh(&format!(
        "setsid sh -c 'echo $$ > {}; exec sleep 30' & sleep 30",
        pidfile.display()
    ));
    spec.timeout_ms = Some(700);
    let (_, _, st) = run(&c, spec).await;
    assert_eq!(st, ExitStatus::TimedOut);
    let (daemon, gone) = pid_in_file_dies(&pidfile).await;
    assert!(gone, "setsid daemon {daemon} survived the timeout");
    drop(c);
    // Per-exec cgroups are removed once empty; then the test's own.
    for _ in 0..100 {
        for e in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with("fb-exec-") {
                let _ = std::fs::remove_dir(e.path());
            }
        }
        if std::fs::remove_dir(&root).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_after_close_fail_instead_of_waiting_forever() {
    for _ in 0..200 {
        let (c, _s) = pair().await;
        c.close();
        let r = tokio::time::timeout(Duration::from_secs(5), c.ping()).await;
        assert!(
            matches!(r, Ok(Err(ClientError::Disconnected))),
            "ping after close: {r:?}"
        );
    }
}

/// Random and mutated frames never panic the decoder: each is a frame, an error, or the end of
/// the stream. (The agent reads whatever the host sends; a bug on either side must not take
/// the guest's init down.)
#[tokio::test]
async fn random_and_mutated_frames_are_errors_not_panics() {
    use firebreak_agent::protocol::{encode_frame, read_frame, Frame, Response};
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let valid = encode_frame(
        3,
        &Request::WriteFile {
            path: "/home/runner/a".into(),
            mode: Some(0o644),
        },
        b"body",
    )
    .expect("encode");
    let (mut frames, mut errors) = (0, 0);
    for round in 0..4000 {
        let mut bytes = match round % 3 {
            // The valid frame with a few bytes flipped (header lengths and JSON included).
            0 => {
                let mut b = valid.clone();
                for _ in 0..=(next() % 4) {
                    let i = (next() as usize) % b.len();
                    b[i] = next() as u8;
                }
                b
            }
            // The valid frame cut short.
            1 => valid[..(next() as usize) % valid.len()].to_vec(),
            // A right prefix, random lengths and bytes after it.
            _ => {
                let mut b = b"FB\x01\x00".to_vec();
                b.extend_from_slice(&((next() % 64) as u32).to_be_bytes());
                b.extend_from_slice(&((next() % 64) as u32).to_be_bytes());
                b.extend((0..next() % 160).map(|_| next() as u8));
                b
            }
        };
        if round % 7 == 0 {
            bytes.truncate(bytes.len() / 2);
        }
        let mut r: &[u8] = &bytes;
        match read_frame::<_, Request>(&mut r).await {
            Ok(_) => frames += 1,
            Err(_) => errors += 1,
        }
        let mut r: &[u8] = &bytes;
        let _: Result<Frame<Response>, _> = read_frame(&mut r).await;
    }
    // Both outcomes happened: the inputs reached the JSON decoder, not only the length checks.
    assert!(frames > 0 && errors > 0, "{frames} frames, {errors} errors");
}

/// One request on a fresh session of `cfg`, without a hello first; its reply.
async fn first_request_without_hello(
    cfg: Arc<AgentConfig>,
    hello: bool,
) -> firebreak_agent::protocol::Response {
    use firebreak_agent::protocol::{read_frame, Frame, Response, PROTOCOL_VERSION};
    let (a, b) = UnixStream::pair().expect("socketpair");
    let (ar, aw) = a.into_split();
    let server = tokio::spawn(serve(ar, aw, cfg));
    let (mut br, mut bw) = b.into_split();
    if hello {
        send_raw(
            &mut bw,
            1,
            &Request::Hello {
                protocol: PROTOCOL_VERSION,
            },
            b"",
        )
        .await
        .expect("hello");
        let _: Frame<Response> = read_frame(&mut br).await.expect("hello reply");
    }
    send_raw(&mut bw, 2, &Request::Cancel { exec: 99 }, b"")
        .await
        .expect("cancel");
    let reply: Frame<Response> = read_frame(&mut br).await.expect("reply");
    drop((br, bw));
    let _ = server.await;
    reply.msg
}

#[tokio::test]
async fn a_session_after_a_greeted_one_on_the_same_agent_counts_as_greeted() {
    use firebreak_agent::protocol::Response;
    let hello_first =
        |r: &Response| matches!(r, Response::Error { message, .. } if message == "hello first");
    // A fresh agent refuses a request before the hello.
    let fresh = Arc::new(AgentConfig::default());
    let r = first_request_without_hello(fresh.clone(), false).await;
    assert!(hello_first(&r), "{r:?}");
    // Once a session of this agent was greeted, the next one (a virtio-serial port
    // reopened after the host left, whose new hello the old session answered) is too.
    let _ = first_request_without_hello(fresh.clone(), true).await;
    let r = first_request_without_hello(fresh.clone(), false).await;
    assert!(!hello_first(&r), "{r:?}");
    // A host of another protocol version is refused even so.
    use firebreak_agent::protocol::{read_frame, Frame};
    let (a, b) = UnixStream::pair().expect("socketpair");
    let (ar, aw) = a.into_split();
    let server = tokio::spawn(serve(ar, aw, fresh));
    let (mut br, mut bw) = b.into_split();
    send_raw(&mut bw, 1, &Request::Hello { protocol: 999 }, b"")
        .await
        .expect("hello");
    let v: Frame<Response> = read_frame(&mut br).await.expect("reply");
    assert!(
        matches!(
            v.msg,
            Response::Error {
                kind: ErrorKind::Version,
                ..
            }
        ),
        "{:?}",
        v.msg
    );
    send_raw(&mut bw, 2, &Request::Cancel { exec: 99 }, b"")
        .await
        .expect("cancel");
    let r: Frame<Response> = read_frame(&mut br).await.expect("reply");
    assert!(hello_first(&r.msg), "{:?}", r.msg);
    drop((br, bw));
    let _ = server.await;
}

/// A guest file that never ends (`/dev/zero` behind a file command's path) costs the host
/// at most the limit: the read fails, and the agent stops sending when told to.
#[tokio::test]
async fn an_endless_file_is_read_up_to_the_limit_and_the_agent_stops_sending() {
    let (c, _s) = pair().await;
    let err = c
        .read_file_limited("/dev/zero", 1 << 20)
        .await
        .expect_err("endless");
    assert!(
        matches!(err, ClientError::TooLarge { limit, .. } if limit == 1 << 20),
        "{err}"
    );
    assert!(err.to_string().contains("larger than 1 MiB"), "{err}");
    c.ping().await.expect("the session goes on");

    // On the wire: once `Cancel` names the read, its frames stop.
    use firebreak_agent::protocol::{read_frame, Frame, Response};
    let (a, b) = UnixStream::pair().expect("socketpair");
    let (ar, aw) = a.into_split();
    let _server = tokio::spawn(serve(ar, aw, Arc::new(AgentConfig::default())));
    let (mut br, mut bw) = b.into_split();
    let hello = Request::Hello {
        protocol: firebreak_agent::PROTOCOL_VERSION,
    };
    send_raw(&mut bw, 9, &hello, b"").await.expect("hello");
    let greeted: Frame<Response> = read_frame(&mut br).await.expect("hello reply");
    assert!(
        matches!(greeted.msg, Response::Hello { .. }),
        "{:?}",
        greeted.msg
    );
    let read = Request::ReadFile {
        path: "/dev/zero".into(),
    };
    send_raw(&mut bw, 1, &read, b"").await.expect("read");
    let first: Frame<Response> = read_frame(&mut br).await.expect("data");
    assert_eq!(first.id, 1);
    send_raw(&mut bw, 2, &Request::Cancel { exec: 1 }, b"")
        .await
        .expect("cancel");
    let mut after_ok = None;
    let mut n = 0u32;
    loop {
        let f: Frame<Response> = tokio::time::timeout(Duration::from_secs(10), read_frame(&mut br))
            .await
            .expect("frames flow until the ping's answer")
            .expect("frame");
        match (f.id, after_ok) {
            (2, _) => {
                assert!(matches!(f.msg, Response::Ok), "{:?}", f.msg);
                after_ok = Some(0u32);
                send_raw(&mut bw, 3, &Request::Ping, b"")
                    .await
                    .expect("ping");
            }
            (1, Some(k)) => after_ok = Some(k + 1),
            (1, None) => n += 1,
            (3, Some(k)) => {
                // What was already on its way when the cancel landed, no more.
                assert!(k <= 2, "{k} frames of the read came after its cancel");
                break;
            }
            other => panic!("unexpected frame {other:?}: {:?}", f.msg),
        }
        assert!(n < 100_000, "the read was never cancelled");
    }
}
