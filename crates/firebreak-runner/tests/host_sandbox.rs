//! Real processes through the host sandbox.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{host_pids_with, run, sh, wait_gone, TestResult};
use firebreak_runner::sandbox::{
    ExitStatus, HostProvider, JobSpec, Sandbox, SandboxError, SandboxProvider, Stream, TRACKING_ENV,
};
use tokio_util::sync::CancellationToken;

async fn sandbox(dir: &Path, job: &str) -> Result<Box<dyn Sandbox>, SandboxError> {
    HostProvider::new(dir)
        .create(JobSpec::new(job, "hello"))
        .await
}

#[tokio::test]
async fn probe_reports_available() {
    let t = tempfile::tempdir().ok();
    let dir = t
        .as_ref()
        .map(|t| t.path().to_path_buf())
        .unwrap_or_default();
    let p = HostProvider::new(dir).probe().await;
    assert!(p.available, "{p:?}");
    assert_eq!(p.backend, "host");
}

#[tokio::test]
async fn streams_both_streams_in_order_and_returns_exit_code() -> TestResult {
    let t = tempfile::tempdir()?;
    let sb = sandbox(t.path(), "j1").await?;
    let (st, out) = run(
        sb.as_ref(),
        sh("for i in $(seq 1 500); do echo out$i; echo err$i >&2; done; printf 'no newline'; exit 3"),
    )
    .await?;
    assert_eq!(st, ExitStatus::Exited(3));
    let so = out.stdout();
    assert_eq!(so.len(), 501);
    assert_eq!(so[0], "out1");
    assert_eq!(so[499], "out500");
    assert_eq!(so[500], "no newline");
    let se = out.stderr();
    assert_eq!(se.len(), 500);
    assert!(se
        .iter()
        .enumerate()
        .all(|(i, l)| *l == format!("err{}", i + 1)));
    sb.destroy().await?;
    Ok(())
}

#[tokio::test]
async fn crlf_and_invalid_utf8_are_handled() -> TestResult {
    let t = tempfile::tempdir()?;
    let sb = sandbox(t.path(), "j-crlf").await?;
    let (st, out) = run(sb.as_ref(), sh("printf 'a\\r\\nb\\377c\\n'")).await?;
    assert!(st.success());
    assert_eq!(out.stdout(), ["a", "b\u{fffd}c"]);
    sb.destroy().await?;
    Ok(())
}

#[tokio::test]
async fn environment_is_exactly_what_was_given_and_cwd_defaults_to_workspace() -> TestResult {
    let t = tempfile::tempdir()?;
    let sb = sandbox(t.path(), "j2").await?;
    let (st, out) = run(sb.as_ref(), sh("env | sort; pwd").env("FOO", "bar baz")).await?;
    assert!(st.success());
    let lines = out.stdout();
    let names: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.split_once('=').map(|x| x.0))
        .collect();
    // sh itself adds PWD (and maybe SHLVL/_); nothing from the runner leaks in.
    for n in &names {
        assert!(
            ["FOO", "PATH", "PWD", "SHLVL", "_", "OLDPWD", TRACKING_ENV].contains(n),
            "unexpected variable {n}"
        );
    }
    assert!(lines.contains(&"FOO=bar baz"));
    assert_eq!(
        lines.last().copied(),
        Some(sb.layout().workspace.to_str().unwrap_or("?"))
    );
    sb.destroy().await?;
    Ok(())
}

#[tokio::test]
async fn timeout_kills_the_whole_tree_including_escaped_sessions() -> TestResult {
    let t = tempfile::tempdir()?;
    let sb = sandbox(t.path(), "j3").await?;
    let started = Instant::now();
    let (st, out) = run(
        sb.as_ref(),
        sh("echo started; sleep 31415 & setsid sleep 31416 & sleep 31417")
            .timeout(Duration::from_millis(700)),
    )
    .await?;
    assert_eq!(st, ExitStatus::TimedOut);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(out.stdout(), ["started"]);
    for m in ["sleep 31415", "sleep 31416", "sleep 31417"] {
        assert!(
            wait_gone(m, Duration::from_secs(2)).await.is_empty(),
            "{m} survived"
        );
    }
    sb.destroy().await?;
    Ok(())
}

#[tokio::test]
async fn cancellation_kills_and_reports_cancelled() -> TestResult {
    let t = tempfile::tempdir()?;
    let sb = sandbox(t.path(), "j4").await?;
    let token = CancellationToken::new();
    let c = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.cancel();
    });
    let (st, _) = run(sb.as_ref(), sh("sleep 27182 & sleep 27183").cancel(token)).await?;
    assert_eq!(st, ExitStatus::Cancelled);
    assert!(wait_gone("sleep 2718", Duration::from_secs(2))
        .await
        .is_empty());
    sb.destroy().await?;
    Ok(())
}

/// GitHub's runner stops a step with SIGINT, then SIGTERM 7.5 s later, then kills it 2.5 s
/// after that: a step's `trap`s run.
#[tokio::test]
async fn a_step_asked_to_stop_gets_sigint_then_sigterm_then_is_killed() -> TestResult {
    let t = tempfile::tempdir()?;
    let sb = sandbox(t.path(), "j-int").await?;
    let stop_after = |ms: u64| {
        let token = CancellationToken::new();
        let c = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            c.cancel();
        });
        token
    };
    // A shell that traps SIGINT cleans up and exits at once.
    let mut req =
        common::bash("trap 'echo cleaned up on INT; exit 3' INT; echo ready; sleep 27301 & wait")
            .cancel(stop_after(500));
    req.interrupt_first = true;
    let t0 = Instant::now();
    let (st, out) = run(sb.as_ref(), req).await?;
    assert_eq!(st, ExitStatus::Cancelled);
    assert_eq!(out.stdout(), ["ready", "cleaned up on INT"]);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    // One that ignores SIGINT hears SIGTERM 7.5 s later.
    let mut req = common::bash(
        "trap '' INT; trap 'echo cleaned up on TERM; exit 4' TERM; sleep 27302 & wait",
    )
    .timeout(Duration::from_millis(300));
    req.interrupt_first = true;
    let t0 = Instant::now();
    let (st, out) = run(sb.as_ref(), req).await?;
    assert_eq!(st, ExitStatus::TimedOut);
    assert_eq!(out.stdout(), ["cleaned up on TERM"]);
    assert!(
        t0.elapsed() >= Duration::from_millis(7500),
        "{:?}",
        t0.elapsed()
    );
    // One that ignores both is killed 2.5 s after that, with what it started.
    let mut req = common::bash("trap '' INT TERM; sleep 27303 & wait").cancel(stop_after(100));
    req.interrupt_first = true;
    let t0 = Instant::now();
    let (st, _) = run(sb.as_ref(), req).await?;
    assert_eq!(st, ExitStatus::Cancelled);
    assert!(
        t0.elapsed() >= Duration::from_millis(10_000),
        "{:?}",
        t0.elapsed()
    );
    for m in ["sleep 27301", "sleep 27302", "sleep 27303"] {
        assert!(
            wait_gone(m, Duration::from_secs(2)).await.is_empty(),
            "{m} survived"
        );
    }
    sb.destroy().await?;
    Ok(())
}

#[tokio::test]
async fn background_process_holding_stdout_does_not_block_and_destroy_kills_it() -> TestResult {
    let t = tempfile::tempdir()?;
    let sb = sandbox(t.path(), "j5").await?;
    let started = Instant::now();
    let (st, out) = run(sb.as_ref(), sh("sleep 16180 & echo done")).await?;
    assert!(st.success());
    assert_eq!(out.stdout(), ["done"]);
    assert!(started.elapsed() < Duration::from_secs(5));
    // Like GitHub, a background process outlives its step …
    assert!(!host_pids_with("sleep 16180").is_empty());
    // … but not the job.
    sb.destroy().await?;
    assert!(wait_gone("sleep 16180", Duration::from_secs(2))
        .await
        .is_empty());
    assert!(!sb.layout().root.exists());
    Ok(())
}

#[tokio::test]
async fn stdin_and_spawn_errors() -> TestResult {
    let t = tempfile::tempdir()?;
    let sb = sandbox(t.path(), "j6").await?;
    let mut req = sh("cat");
    req.stdin = Some(b"from stdin\n".to_vec());
    let (st, out) = run(sb.as_ref(), req).await?;
    assert!(st.success());
    assert_eq!(out.stdout(), ["from stdin"]);
    let err = run(sb.as_ref(), sh("true").cwd("relative")).await;
    assert!(matches!(err, Err(SandboxError::InvalidRequest(_))));
    let mut bad = sh("true");
    bad.argv = vec!["/definitely/not/here".into()];
    assert!(matches!(
        run(sb.as_ref(), bad).await,
        Err(SandboxError::Spawn { .. })
    ));
    let (st, _) = run(sb.as_ref(), sh("kill -TERM $$")).await?;
    assert_eq!(st, ExitStatus::Signaled(15));
    sb.destroy().await?;
    Ok(())
}

#[tokio::test]
async fn files_in_and_out_are_confined_to_the_job() -> TestResult {
    let t = tempfile::tempdir()?;
    let src = t.path().join("src");
    std::fs::create_dir_all(src.join("sub"))?;
    std::fs::write(src.join("sub/a.txt"), "A")?;
    let sb = sandbox(&t.path().join("run"), "j7").await?;
    let l = sb.layout().clone();
    for d in [
        &l.workspace,
        &l.temp,
        &l.file_commands,
        &l.tool_cache,
        &l.home,
    ] {
        assert!(d.is_dir(), "{}", d.display());
    }
    sb.copy_in(&src, &l.workspace).await?;
    let (st, out) = run(sb.as_ref(), sh("cat sub/a.txt; echo B > made.txt")).await?;
    assert!(st.success());
    assert_eq!(out.stdout(), ["A"]);
    assert_eq!(
        sb.read_file(&l.workspace.join("made.txt")).await?,
        Some(b"B\n".to_vec())
    );
    assert_eq!(sb.read_file(&l.workspace.join("missing")).await?, None);
    sb.write_file(&l.temp.join("deep/x.sh"), b"echo x".to_vec(), Some(0o755))
        .await?;
    let (st, out) = run(
        sb.as_ref(),
        sh(&format!("{}", l.temp.join("deep/x.sh").display())),
    )
    .await?;
    assert!(st.success(), "{out:?}");
    let dest = t.path().join("out/ws");
    sb.copy_out(&l.workspace, &dest).await?;
    assert_eq!(std::fs::read_to_string(dest.join("made.txt"))?, "B\n");

    // Outside the tree, directly or through a symlink the job planted.
    assert!(matches!(
        sb.read_file(Path::new("/etc/hostname")).await,
        Err(SandboxError::PathOutsideSandbox(_))
    ));
    assert!(matches!(
        sb.write_file(&l.workspace.join("../../../../x"), vec![], None)
            .await,
        Err(SandboxError::PathOutsideSandbox(_))
    ));
    let secret = t.path().join("secret");
    std::fs::write(&secret, "host secret")?;
    let (st, _) = run(
        sb.as_ref(),
        sh(&format!(
            "ln -s {} leak; ln -s {} dirlink",
            secret.display(),
            t.path().display()
        )),
    )
    .await?;
    assert!(st.success());
    assert!(sb.read_file(&l.workspace.join("leak")).await.is_err());
    assert!(matches!(
        sb.read_file(&l.workspace.join("dirlink/secret")).await,
        Err(SandboxError::PathOutsideSandbox(_))
    ));
    assert!(matches!(
        sb.write_file(&l.workspace.join("dirlink/new"), vec![1], None)
            .await,
        Err(SandboxError::PathOutsideSandbox(_))
    ));
    assert!(!t.path().join("new").exists());
    // A FIFO in a file's place is refused at once (no writer to wait for), and a file larger
    // than the runner reads is refused rather than read into its memory.
    let (st, _) = run(sb.as_ref(), sh("mkfifo fifo && truncate -s 65M huge")).await?;
    assert!(st.success());
    let fifo = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        sb.read_file(&l.workspace.join("fifo")),
    )
    .await
    .expect("no wait for a writer");
    assert!(
        fifo.as_ref()
            .is_err_and(|e| e.to_string().contains("not a regular file")),
        "{fifo:?}"
    );
    let huge = sb.read_file(&l.workspace.join("huge")).await;
    assert!(
        huge.as_ref()
            .is_err_and(|e| e.to_string().contains("larger than 64 MiB")),
        "{huge:?}"
    );

    sb.remove(&l.workspace.join("made.txt")).await?;
    assert_eq!(sb.read_file(&l.workspace.join("made.txt")).await?, None);
    sb.destroy().await?;
    sb.destroy().await?; // idempotent
    assert!(matches!(
        run(sb.as_ref(), sh("true")).await,
        Err(SandboxError::Destroyed)
    ));
    Ok(())
}

#[tokio::test]
async fn a_dropped_receiver_does_not_stop_the_process() -> TestResult {
    let t = tempfile::tempdir()?;
    let sb = sandbox(t.path(), "j8").await?;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    drop(rx);
    let st = sb.exec(sh("seq 1 10000; exit 4"), tx).await?;
    assert_eq!(st, ExitStatus::Exited(4));
    assert_eq!(out_stream_name(Stream::Stdout), "stdout");
    sb.destroy().await?;
    Ok(())
}

fn out_stream_name(s: Stream) -> &'static str {
    match s {
        Stream::Stdout => "stdout",
        Stream::Stderr => "stderr",
    }
}
