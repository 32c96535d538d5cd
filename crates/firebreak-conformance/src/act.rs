//! The `act` suite: nektos/act's runner test cases, run through `firebreak run`.
//!
//! Reads `DIR/host-cases.tsv` (columns: dir, workflow, event, expected error, needs). Rows with
//! a non-empty `needs` column require something this machine lacks (a container image, pwsh,
//! an action from github.com): they are reported by what they need and never counted as
//! passed. Every other row runs as act's own suite runs it: from a git-committed copy of
//! `DIR/testdata` (the repository root for `uses: ./…`), with the JS actions' dependencies
//! installed by `npm install` in that copy, as
//! `firebreak run EVENT -C COPY -W COPY/WORKFLOW [--event-file COPY/DIR/event.json]`, with
//! repository and actor `nektos/act` as act's own suite has them.
//! A row whose expected error is empty passes when the run exits 0; a row with an expected
//! error passes when the run exits 1 (a job failed) — exit 2 (the workflow could not be run)
//! is a failure either way.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::Tally;

/// One row of `host-cases.tsv`.
#[derive(Debug, Clone)]
pub struct Case {
    pub dir: String,
    pub workflow: String,
    pub event: String,
    pub expected_error: String,
    pub needs: String,
}

/// Options for [`run_with`].
#[derive(Debug, Clone)]
pub struct ActOptions {
    /// The `firebreak` binary to run.
    pub binary: PathBuf,
    /// `--sandbox` to pass (`None`: firebreak's default).
    pub sandbox: Option<String>,
    /// Print each case's output, not only failures.
    pub verbose: bool,
}

/// Parses `host-cases.tsv`.
pub fn read_cases(dir: &Path) -> Result<Vec<Case>> {
    let path = dir.join("host-cases.tsv");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut cases = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.len() < 4 {
            bail!(
                "{}:{}: expected at least 4 tab-separated columns",
                path.display(),
                n + 1
            );
        }
        cases.push(Case {
            dir: cols[0].to_string(),
            workflow: cols[1].to_string(),
            event: cols[2].to_string(),
            expected_error: cols[3].trim().to_string(),
            needs: cols
                .get(4)
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
        });
    }
    Ok(cases)
}

/// Copies `testdata` into a fresh temporary repository: git-committed, npm dependencies of
/// the JS actions installed. Returns the copy's root.
fn prepare_copy(dir: &Path, scratch: &Path) -> Result<PathBuf> {
    let src = dir.join("testdata");
    let dest = scratch.join("testdata");
    copy_tree(&src, &dest).with_context(|| format!("copying {}", src.display()))?;
    let git = |args: &[&str]| -> Result<()> {
        let status = Command::new("git")
            .args(args)
            .current_dir(&dest)
            .env("GIT_AUTHOR_NAME", "firebreak")
            .env("GIT_AUTHOR_EMAIL", "conformance@firebreak.invalid")
            .env("GIT_COMMITTER_NAME", "firebreak")
            .env("GIT_COMMITTER_EMAIL", "conformance@firebreak.invalid")
            .stdout(std::process::Stdio::null())
            .status()
            .context("running git (install it with apt-get install git)")?;
        if !status.success() {
            bail!("git {} failed", args.join(" "));
        }
        Ok(())
    };
    git(&["init", "-q", "-b", "master"])?;
    git(&["add", "-A"])?;
    git(&["commit", "-q", "-m", "act testdata"])?;
    let actions = dest.join("actions");
    if let Ok(entries) = std::fs::read_dir(&actions) {
        for entry in entries.flatten() {
            let p = entry.path();
            if p.join("package.json").is_file() && !p.join("node_modules").exists() {
                let status = Command::new("npm")
                    .args([
                        "install",
                        "--no-audit",
                        "--no-fund",
                        "--silent",
                        "--omit=dev",
                    ])
                    .current_dir(&p)
                    .status()
                    .context("running npm install (install Node.js and npm)")?;
                if !status.success() {
                    bail!("npm install failed in {}", p.display());
                }
            }
        }
    }
    Ok(dest)
}

fn copy_tree(src: &Path, dest: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dest)?;
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let ty = entry.file_type()?;
        let to = dest.join(entry.file_name());
        if ty.is_dir() {
            copy_tree(&entry.path(), &to)?;
        } else if ty.is_symlink() {
            let target = std::fs::read_link(entry.path())?;
            std::os::unix::fs::symlink(target, &to)?;
        } else {
            std::fs::copy(entry.path(), &to)?;
            // The corpus is read-only; the copy must be writable (git, npm, actions).
            let mut perm = std::fs::metadata(&to)?.permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perm.set_readonly(false);
            std::fs::set_permissions(&to, perm)?;
        }
    }
    Ok(())
}

/// The `firebreak` binary beside this harness (same target folder), built on demand when the
/// harness runs under `cargo run`.
pub fn default_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("FIREBREAK_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("locating the harness binary")?;
    let dir = exe.parent().context("harness binary has no folder")?;
    let candidate = dir.join("firebreak");
    let release = dir.ends_with("release");
    if let Some(cargo) = std::env::var_os("CARGO") {
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-q", "-p", "firebreak"]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().context("building the firebreak binary")?;
        if !status.success() {
            bail!("cargo build -p firebreak failed");
        }
    }
    if candidate.is_file() {
        return Ok(candidate);
    }
    bail!(
        "no firebreak binary at {}; build it with `cargo build --release -p firebreak` or set FIREBREAK_BIN",
        candidate.display()
    )
}

/// Runs the suite with the default binary (`firebreak-conformance act DIR [--sandbox S]`).
pub fn run(dir: &Path, sandbox: Option<String>) -> Result<Tally> {
    let binary = default_binary()?;
    run_with(
        dir,
        &ActOptions {
            binary,
            sandbox,
            verbose: false,
        },
    )
}

/// Runs every row of `DIR/host-cases.tsv`; prints one line per failing or unrunnable case.
pub fn run_with(dir: &Path, opts: &ActOptions) -> Result<Tally> {
    let cases = read_cases(dir)?;
    let scratch = tempdir()?;
    let root = prepare_copy(dir, &scratch)?;
    let mut tally = Tally::default();
    let mut unrunnable = 0;
    for case in &cases {
        if !case.needs.is_empty() {
            unrunnable += 1;
            println!("not run: {} — needs {}", case.dir, case.needs);
            continue;
        }
        let started = Instant::now();
        let mut cmd = Command::new(&opts.binary);
        cmd.arg("run")
            .arg(&case.event)
            .arg("-C")
            .arg(&root)
            .arg("-W")
            .arg(root.join(&case.workflow))
            // act's own suite runs as repository and actor nektos/act; some cases check them.
            .args(["--repository", "nektos/act", "--actor", "nektos/act"])
            .env("NO_COLOR", "1");
        let event_file = root.join(&case.dir).join("event.json");
        if event_file.is_file() {
            cmd.arg("--event-file").arg(&event_file);
        }
        if let Some(s) = &opts.sandbox {
            cmd.arg("--sandbox").arg(s);
        }
        let out = cmd
            .output()
            .with_context(|| format!("running {}", opts.binary.display()))?;
        let code = out.status.code();
        let expect_fail = !case.expected_error.is_empty();
        let ok = match code {
            Some(0) => !expect_fail,
            Some(1) => expect_fail,
            _ => false,
        };
        let took = started.elapsed();
        if ok {
            tally.passed += 1;
            if opts.verbose {
                println!("ok: {} ({:.2}s)", case.dir, took.as_secs_f64());
            }
        } else {
            tally.failed += 1;
            let want = if expect_fail {
                format!("a failed job ({})", case.expected_error)
            } else {
                "success".into()
            };
            println!(
                "FAIL: {} — wanted {want}, got exit {:?} after {:.2}s",
                case.dir,
                code,
                took.as_secs_f64()
            );
            let tail = |b: &[u8]| {
                let s = String::from_utf8_lossy(b);
                let lines: Vec<&str> = s.lines().collect();
                lines[lines.len().saturating_sub(15)..].join("\n    ")
            };
            println!("    stdout: {}", tail(&out.stdout));
            println!("    stderr: {}", tail(&out.stderr));
        }
    }
    println!("{unrunnable} cases not run (they need what this machine lacks; listed above)");
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(tally)
}

fn tempdir() -> Result<PathBuf> {
    let base = std::env::temp_dir();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_nanos();
    let dir = base.join(format!("firebreak-act-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
