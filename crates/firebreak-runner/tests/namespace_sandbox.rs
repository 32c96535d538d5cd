//! Real processes through the namespace (bubblewrap) sandbox.
//!
//! These tests need `bwrap` (Debian package `bubblewrap`) and a kernel that
//! lets it create namespaces. When the probe says the backend is unavailable
//! they print why and pass, unless `FIREBREAK_REQUIRE_NAMESPACE=1` is set, in
//! which case they fail.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{bash, host_pids_with, run, sh, wait_gone, TestResult};
use firebreak_runner::sandbox::{
    ExitStatus, JobSpec, NamespaceConfig, NamespaceProvider, ResourceLimits, Sandbox,
    SandboxProvider,
};

async fn provider(run_dir: &Path) -> Option<NamespaceProvider> {
    let p = NamespaceProvider::new(NamespaceConfig::new(run_dir));
    let probe = p.probe().await;
    if probe.available {
        return Some(p);
    }
    if std::env::var("FIREBREAK_REQUIRE_NAMESPACE").as_deref() == Ok("1") {
        panic!(
            "namespace backend required but unavailable: {:?}",
            probe.notes
        );
    }
    eprintln!("skipping: namespace backend unavailable: {:?}", probe.notes);
    None
}

async fn sandbox(
    run_dir: &Path,
    spec: JobSpec,
) -> Result<Option<Box<dyn Sandbox>>, Box<dyn std::error::Error>> {
    let Some(p) = provider(run_dir).await else {
        return Ok(None);
    };
    Ok(Some(p.create(spec).await?))
}

#[tokio::test]
async fn job_is_isolated_from_the_host() -> TestResult {
    let t = tempfile::tempdir()?;
    let run_dir = t.path().join("run");
    // A host file next to the job tree, and another job's tree.
    let secret = t.path().join("host-secret.txt");
    std::fs::write(&secret, "do not read")?;
    let other_job = run_dir.join("other-job");
    std::fs::create_dir_all(&other_job)?;
    std::fs::write(other_job.join("x"), "other")?;

    let Some(sb) = sandbox(&run_dir, JobSpec::new("iso", "hello")).await? else {
        return Ok(());
    };
    let ws = sb.layout().workspace.clone();
    let script = format!(
        r#"
        echo "pwd=$(pwd)"
        echo "secret=$(cat {secret} 2>/dev/null || echo unreadable)"
        echo "other=$(cat {other} 2>/dev/null || echo unreadable)"
        if touch /usr/fb-should-not-exist 2>/dev/null; then echo usr=writable; else echo usr=readonly; fi
        if touch /etc/fb-should-not-exist 2>/dev/null; then echo etc=writable; else echo etc=readonly; fi
        echo "pid1=$(cat /proc/1/comm)"
        echo "mypid=$$"
        echo "hostpid=$(test -e /proc/{host_pid} && echo visible || echo hidden)"
        echo "nprocs=$(ls -d /proc/[0-9]* | wc -l)"
        echo "hostname=$(cat /proc/sys/kernel/hostname)"
        echo "root=$(test -e /root && echo visible || echo hidden)"
        echo "netdevs=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\n' ',')"
        echo written > "$GITHUB_WORKSPACE/inside.txt"
        echo tmp > /tmp/private && echo "tmp=ok"
        "#,
        secret = secret.display(),
        other = other_job.join("x").display(),
        host_pid = std::process::id(),
    );
    let (st, out) = run(
        sb.as_ref(),
        bash(&script).env("GITHUB_WORKSPACE", ws.to_string_lossy()),
    )
    .await?;
    assert!(st.success(), "{out:?}");
    let text = out.stdout_text();
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or("<missing>")
            .to_string()
    };
    assert_eq!(
        get("pwd"),
        ws.to_string_lossy(),
        "workspace is at the host path"
    );
    assert_eq!(get("secret"), "unreadable");
    assert_eq!(get("other"), "unreadable");
    assert_eq!(get("usr"), "readonly");
    assert_eq!(get("etc"), "readonly");
    assert!(!Path::new("/usr/fb-should-not-exist").exists());
    assert_eq!(get("pid1"), "bwrap", "own PID namespace with its own PID 1");
    assert!(
        get("mypid").parse::<u32>().map(|p| p < 10).unwrap_or(false),
        "{}",
        get("mypid")
    );
    assert_eq!(get("hostpid"), "hidden");
    assert!(
        get("nprocs")
            .trim()
            .parse::<u32>()
            .map(|n| n < 10)
            .unwrap_or(false),
        "{}",
        get("nprocs")
    );
    assert_eq!(get("hostname"), "firebreak");
    assert_eq!(get("root"), "hidden");
    assert_eq!(get("netdevs"), "lo,", "only loopback without network");
    assert_eq!(get("tmp"), "ok");
    // The workspace is shared read-write with the runner.
    assert_eq!(
        sb.read_file(&ws.join("inside.txt")).await?,
        Some(b"written\n".to_vec())
    );
    sb.destroy().await?;
    Ok(())
}

#[tokio::test]
async fn no_network_by_default_network_when_allowed() -> TestResult {
    let t = tempfile::tempdir()?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let probe = format!("exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected");

    let Some(sb) = sandbox(t.path(), JobSpec::new("nonet", "hello")).await? else {
        return Ok(());
    };
    let (st, out) = run(sb.as_ref(), bash(&probe)).await?;
    assert!(!st.success(), "{out:?}");
    assert!(out.stdout().is_empty());
    sb.destroy().await?;

    let mut spec = JobSpec::new("net", "hello");
    spec.network = true;
    let Some(sb) = sandbox(t.path(), spec).await? else {
        return Ok(());
    };
    let (st, out) = run(sb.as_ref(), bash(&probe)).await?;
    assert!(st.success(), "{out:?}");
    assert_eq!(out.stdout(), ["connected"]);
    sb.destroy().await?;
    drop(listener);
    Ok(())
}

#[tokio::test]
async fn timeout_kills_the_process_tree() -> TestResult {
    let t = tempfile::tempdir()?;
    let Some(sb) = sandbox(t.path(), JobSpec::new("timeout", "hello")).await? else {
        return Ok(());
    };
    let started = Instant::now();
    let (st, out) = run(
        sb.as_ref(),
        sh("echo started; sleep 44441 & setsid sleep 44442 & sleep 44443")
            .timeout(Duration::from_millis(800)),
    )
    .await?;
    assert_eq!(st, ExitStatus::TimedOut);
    assert_eq!(out.stdout(), ["started"]);
    assert!(started.elapsed() < Duration::from_secs(5));
    for m in ["sleep 44441", "sleep 44442", "sleep 44443"] {
        assert!(
            wait_gone(m, Duration::from_secs(2)).await.is_empty(),
            "{m} survived"
        );
    }
    sb.destroy().await?;
    Ok(())
}

/// Inside the namespace sandbox the signal goes to the command, not to bwrap.
#[tokio::test]
async fn a_step_asked_to_stop_hears_sigint_inside_the_sandbox() -> TestResult {
    let t = tempfile::tempdir()?;
    let Some(sb) = sandbox(t.path(), JobSpec::new("int", "hello")).await? else {
        return Ok(());
    };
    let mut req =
        common::bash("trap 'echo cleaned up on INT; exit 3' INT; echo ready; sleep 27304 & wait")
            .timeout(Duration::from_millis(800));
    req.interrupt_first = true;
    let t0 = Instant::now();
    let (st, out) = run(sb.as_ref(), req).await?;
    assert_eq!(st, ExitStatus::TimedOut);
    assert_eq!(out.stdout(), ["ready", "cleaned up on INT"]);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert!(wait_gone("sleep 27304", Duration::from_secs(2))
        .await
        .is_empty());
    sb.destroy().await?;
    Ok(())
}

#[tokio::test]
async fn background_processes_end_with_the_step() -> TestResult {
    let t = tempfile::tempdir()?;
    let Some(sb) = sandbox(t.path(), JobSpec::new("bg", "hello")).await? else {
        return Ok(());
    };
    let (st, out) = run(sb.as_ref(), sh("sleep 55551 >/dev/null 2>&1 & echo bye")).await?;
    assert!(st.success());
    assert_eq!(out.stdout(), ["bye"]);
    assert!(wait_gone("sleep 55551", Duration::from_secs(2))
        .await
        .is_empty());
    assert!(host_pids_with("sleep 55551").is_empty());
    sb.destroy().await?;
    Ok(())
}

#[tokio::test]
async fn copy_in_and_exit_codes() -> TestResult {
    let t = tempfile::tempdir()?;
    let src = t.path().join("src");
    std::fs::create_dir_all(&src)?;
    std::fs::write(src.join("build.sh"), "echo building; exit 7\n")?;
    let Some(sb) = sandbox(&t.path().join("run"), JobSpec::new("copy", "hello")).await? else {
        return Ok(());
    };
    sb.copy_in(&src, &sb.layout().workspace).await?;
    let (st, out) = run(sb.as_ref(), sh("sh build.sh")).await?;
    assert_eq!(st, ExitStatus::Exited(7));
    assert_eq!(out.stdout(), ["building"]);
    let (st, _) = run(sb.as_ref(), sh("kill -KILL $$")).await?;
    assert!(
        matches!(st, ExitStatus::Signaled(9) | ExitStatus::Exited(137)),
        "{st:?}"
    );
    sb.destroy().await?;
    assert!(!sb.layout().root.exists());
    Ok(())
}

#[tokio::test]
async fn pid_limit_applies_or_is_reported() -> TestResult {
    let t = tempfile::tempdir()?;
    let mut spec = JobSpec::new("limits", "hello");
    spec.limits = ResourceLimits {
        max_pids: Some(12),
        memory_bytes: Some(512 << 20),
        cpu_millis: Some(1000),
        disk_bytes: None,
    };
    let Some(sb) = sandbox(t.path(), spec).await? else {
        return Ok(());
    };
    let notes = sb.notes();
    if notes.iter().any(|n| n.contains("not applied")) {
        eprintln!("limits skipped here: {notes:?}");
        sb.destroy().await?;
        return Ok(());
    }
    let (st, out) = run(
        sb.as_ref(),
        sh("for i in $(seq 1 40); do sleep 2 & done 2>&1; echo after")
            .timeout(Duration::from_secs(20)),
    )
    .await?;
    let all = format!("{:?}", out.events);
    assert!(!st.success() || all.contains("fork"), "{st:?} {all}");
    sb.destroy().await?;
    Ok(())
}
