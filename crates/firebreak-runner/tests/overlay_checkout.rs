//! `Sandbox::mount_in`: the copy-on-write checkout of the local backends.
//!
//! Mounting overlayfs needs root (or a kernel and setup that allow it). Where the mount
//! fails the tests print why and pass, unless `FIREBREAK_REQUIRE_OVERLAY=1` is set.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::{run, sh, TestResult};
use firebreak_runner::sandbox::{
    HostProvider, JobSpec, MountOutcome, NamespaceConfig, NamespaceProvider, Sandbox,
    SandboxProvider,
};

/// A "user repository" and a staged tree hard-linking its files, as `firebreak run` makes.
fn staged(t: &Path) -> Result<(PathBuf, PathBuf), Box<dyn std::error::Error>> {
    let repo = t.join("repo");
    let stage = t.join("stage");
    for d in [&repo, &stage] {
        std::fs::create_dir_all(d.join("sub"))?;
        std::fs::create_dir_all(d.join(".git"))?;
    }
    std::fs::write(repo.join("a.txt"), "original a\n")?;
    std::fs::write(repo.join("sub/b.txt"), "original b\n")?;
    std::fs::write(repo.join(".git/HEAD"), "ref: refs/heads/main\n")?;
    for f in ["a.txt", "sub/b.txt", ".git/HEAD"] {
        std::fs::hard_link(repo.join(f), stage.join(f))?;
    }
    Ok((repo, stage))
}

/// (relative path, content, inode) of every file below `dir`.
fn snapshot(dir: &Path) -> Vec<(String, String, u64)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                let rel = p
                    .strip_prefix(dir)
                    .map(|r| r.display().to_string())
                    .unwrap_or_default();
                let ino = std::fs::metadata(&p).map(|m| m.ino()).unwrap_or(0);
                out.push((rel, std::fs::read_to_string(&p).unwrap_or_default(), ino));
            }
        }
    }
    out.sort();
    out
}

fn mounted_below(dir: &Path) -> bool {
    let d = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| m.starts_with(&d))
}

/// `true` when the overlay was mounted; `false` (test skipped) when this machine cannot.
fn mounted(outcome: MountOutcome) -> bool {
    match outcome {
        MountOutcome::Mounted => true,
        other => {
            if std::env::var("FIREBREAK_REQUIRE_OVERLAY").as_deref() == Ok("1") {
                panic!("overlay checkout required but not available: {other:?}");
            }
            eprintln!("skipping: overlay checkout unavailable: {other:?}");
            false
        }
    }
}

const MUTATE: &str = r#"set -e
cat a.txt sub/b.txt
echo changed >> a.txt
chmod 600 a.txt
rm sub/b.txt
echo created > c.txt
mkdir -p newdir && echo n > newdir/n.txt
echo garbage > .git/HEAD
perl -e 'rename("sub", "sub2") or die "rename: $!\n"'
ls -A | sort | tr '\n' ' '
echo
cat a.txt"#;

/// Mutates the checked-out workspace of `sb` and checks that neither the repository nor
/// the staged tree changed, that `other` (a second job on the same stage) still sees the
/// original files, and that destroy unmounts everything.
async fn mutate_and_check(
    sb: &dyn Sandbox,
    other: &dyn Sandbox,
    repo: &Path,
    stage: &Path,
) -> TestResult {
    let before_repo = snapshot(repo);
    let before_stage = snapshot(stage);
    let ws = sb.layout().workspace.clone();
    let (st, out) = run(sb, sh(MUTATE).cwd(&ws)).await?;
    assert!(st.success(), "{st:?} {:?}", out.events);
    let text = out.stdout_text();
    assert!(text.contains("original a\noriginal b"), "{text}");
    assert!(text.contains(".git a.txt c.txt newdir sub2"), "{text}");
    assert!(text.contains("original a\nchanged"), "{text}");

    // The other job's workspace is independent.
    let ows = other.layout().workspace.clone();
    let (st, out) = run(
        other,
        sh("cat a.txt sub/b.txt .git/HEAD; ls -A | sort | tr '\\n' ' '").cwd(&ows),
    )
    .await?;
    assert!(st.success(), "{st:?}");
    assert_eq!(
        out.stdout_text(),
        "original a\noriginal b\nref: refs/heads/main\n.git a.txt sub "
    );

    assert_eq!(snapshot(repo), before_repo, "the repository changed");
    assert_eq!(snapshot(stage), before_stage, "the staged tree changed");
    let md = std::fs::metadata(repo.join("a.txt"))?;
    assert_eq!(md.mode() & 0o777, 0o644);

    let root = sb.layout().root.clone();
    sb.destroy().await?;
    other.destroy().await?;
    assert!(
        !mounted_below(&root),
        "a mount was left below {}",
        root.display()
    );
    assert!(!root.exists(), "job tree left behind");
    assert_eq!(
        snapshot(stage),
        before_stage,
        "destroy touched the staged tree"
    );
    assert_eq!(
        snapshot(repo),
        before_repo,
        "destroy touched the repository"
    );
    Ok(())
}

#[tokio::test]
async fn host_overlay_checkout_is_private_to_the_job() -> TestResult {
    let t = tempfile::tempdir()?;
    let (repo, stage) = staged(t.path())?;
    let p = HostProvider::new(t.path().join("run"));
    let a = p.create(JobSpec::new("a", "hello")).await?;
    let b = p.create(JobSpec::new("b", "hello")).await?;
    let ws = a.layout().workspace.clone();
    if !mounted(a.mount_in(&stage, &ws).await?) {
        return Ok(());
    }
    let bws = b.layout().workspace.clone();
    assert_eq!(b.mount_in(&stage, &bws).await?, MountOutcome::Mounted);
    mutate_and_check(a.as_ref(), b.as_ref(), &repo, &stage).await
}

#[tokio::test]
async fn namespace_overlay_checkout_is_visible_inside_and_private() -> TestResult {
    let t = tempfile::tempdir()?;
    let (repo, stage) = staged(t.path())?;
    let p = NamespaceProvider::new(NamespaceConfig::new(t.path().join("run")));
    let probe = p.probe().await;
    if !probe.available {
        eprintln!("skipping: namespace backend unavailable: {:?}", probe.notes);
        return Ok(());
    }
    let a = p.create(JobSpec::new("a", "hello")).await?;
    let b = p.create(JobSpec::new("b", "hello")).await?;
    let ws = a.layout().workspace.clone();
    if !mounted(a.mount_in(&stage, &ws).await?) {
        return Ok(());
    }
    let bws = b.layout().workspace.clone();
    assert_eq!(b.mount_in(&stage, &bws).await?, MountOutcome::Mounted);
    mutate_and_check(a.as_ref(), b.as_ref(), &repo, &stage).await
}

#[tokio::test]
async fn nested_checkouts_and_non_empty_destinations() -> TestResult {
    let t = tempfile::tempdir()?;
    let (_repo, stage) = staged(t.path())?;
    let p = HostProvider::new(t.path().join("run"));
    let sb = p.create(JobSpec::new("n", "hello")).await?;
    let ws = sb.layout().workspace.clone();
    if !mounted(sb.mount_in(&stage, &ws).await?) {
        return Ok(());
    }
    // A second checkout below the first one (`with: path:`).
    let second = ws.join("second");
    assert_eq!(sb.mount_in(&stage, &second).await?, MountOutcome::Mounted);
    let (st, out) = run(
        sb.as_ref(),
        sh("cat second/sub/b.txt && echo x > second/new"),
    )
    .await?;
    assert!(st.success(), "{:?}", out.events);
    assert_eq!(out.stdout_text(), "original b");
    // A folder with files in it is refused (the caller copies instead).
    let busy = sb.layout().temp.join("busy");
    sb.write_file(&busy.join("f"), b"x".to_vec(), None).await?;
    assert!(matches!(
        sb.mount_in(&stage, &busy).await?,
        MountOutcome::Failed(_)
    ));
    // Paths outside the job tree are refused.
    assert!(sb.mount_in(&stage, Path::new("/etc")).await.is_err());
    let root = sb.layout().root.clone();
    sb.destroy().await?;
    assert!(!mounted_below(&root));
    assert!(!root.exists());
    assert!(!stage.join("new").exists() && !stage.join("second").exists());
    Ok(())
}

#[tokio::test]
async fn dropping_a_sandbox_without_destroy_unmounts() -> TestResult {
    let t = tempfile::tempdir()?;
    let (_repo, stage) = staged(t.path())?;
    let p = HostProvider::new(t.path().join("run"));
    let sb = p.create(JobSpec::new("d", "hello")).await?;
    let ws = sb.layout().workspace.clone();
    if !mounted(sb.mount_in(&stage, &ws).await?) {
        return Ok(());
    }
    let root = sb.layout().root.clone();
    assert!(mounted_below(&root));
    drop(sb);
    assert!(!mounted_below(&root));
    Ok(())
}
