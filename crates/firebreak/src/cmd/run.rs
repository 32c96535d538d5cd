//! `firebreak run`: run a repository's workflows locally with GitHub's runtime semantics.
//!
//! * Workflows: `-W FILE|DIR`, default `<repo>/.github/workflows`. Every file is validated
//!   first; errors are printed as `path:line:col: message`, the invalid files (and triggered
//!   workflows that cannot be planned) are left out, the others run, as on GitHub, and the
//!   exit status is 2.
//! * The event (default `push`) and its payload: `--event-file`, or one synthesised from the
//!   repository's git state (sha, ref, repository, `head_commit`, `pusher`, `sender`, …).
//!   The repository is read from the `origin` remote; without one it is `local/<folder>`.
//!   The actor is the payload's sender, else git's `user.name`, else `$USER`
//!   (`--repository`, `--actor` override them). `env.ACT` and `env.FIREBREAK` are `true` in
//!   every job, so workflows written to skip steps under act skip them here too.
//! * The repository's working tree — tracked files and untracked files that are not ignored,
//!   plus `.git`, so uncommitted changes are tested — is staged (hard links where possible)
//!   into `<repo>/.firebreak/stage/<key>/` when a job first checks out, and reused by later
//!   runs while the working tree is unchanged: the key hashes the file list and each file's
//!   size, mtime, inode and mode, including every file under `.git`. The two most recently
//!   used staged trees are kept. (Repository not writable: staged per run in a temporary
//!   folder.) As on GitHub a job's workspace starts empty; the built-in `actions/checkout`
//!   mounts the staged tree there as a copy-on-write overlay when the machine allows it
//!   (root, overlayfs), so the job writes only to its own upper layer, and copies it in
//!   otherwise (or when `FIREBREAK_NO_OVERLAY=1` is set).
//!   Job sandboxes live under `$XDG_CACHE_HOME/firebreak/jobs/` and are removed at the end.
//! * Logs: one file per job (`<job>.log`) and `events.jsonl` in the run directory,
//!   `--run-dir`, else `<repo>/.firebreak/runs/<n>/`, else (repository not writable)
//!   `$XDG_STATE_HOME/firebreak/runs/<n>/` (`~/.local/state/…`).
//! * Jobs calling local reusable workflows (`uses: ./.github/workflows/x.yml`) run the called
//!   workflow's jobs, shown as `caller / called`; remote reusable workflows are reported as
//!   unsupported on their job.
//! * Remote actions: `--action-cache DIR` (default `$XDG_CACHE_HOME/firebreak/actions`),
//!   laid out as `DIR/owner/repo/ref/`; missing ones are fetched with git unless `--offline`.
//!
//! Exit status: 0 when every job succeeded, 1 when a job failed or was cancelled,
//! 2 on usage or workflow errors.

mod list;
mod report;
mod stage;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use firebreak_expr::Value;
use firebreak_runner::executor::events::{Conclusion, Event, EventSender};
use firebreak_runner::executor::{run_workflow, RunConfig, WorkflowOutcome};
use firebreak_runner::sandbox::{
    HostProvider, NamespaceConfig, NamespaceProvider, SandboxProvider,
};
use firebreak_workflow::plan::{self, MatrixPlan};
use indexmap::IndexMap;
use tokio_util::sync::CancellationToken;

use crate::discover::read_workflows;
use crate::gitinfo::{default_actor, git_state, local_repository, synthesize_payload};
use crate::style;
use report::Reporter;

/// Sandbox backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SandboxKind {
    /// No isolation: processes run as you, in a per-job directory.
    Host,
    /// Linux namespaces via bubblewrap (read-only system, private /tmp, own PID namespace).
    Namespace,
    /// A QEMU microVM per job, with its own kernel (needs `firebreak image build` first;
    /// KVM where it works, TCG otherwise; restored from a snapshot after the first job).
    Qemu,
    /// A Firecracker microVM per job (needs hardware KVM, a guest image and the firecracker
    /// binary on PATH or in $FIREBREAK_FIRECRACKER_BIN).
    Firecracker,
}

/// How each job's microVM starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum VmStart {
    /// Restore a clone of a snapshot of a VM booted once for the job's VM size (the first
    /// job of a size takes it; ~0.2 s under TCG instead of a boot's ~1–2 s).
    Snapshot,
    /// Boot every job's kernel: no job's VM resumes a saved VM (for hosts whose policy
    /// wants each job's kernel booted afresh, or to rule snapshots out when debugging).
    Cold,
}

/// The QEMU machine a job's microVM is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum VmMachine {
    /// QEMU's `microvm`: no firmware tables or PCI, virtio-mmio devices; the fastest boot.
    Microvm,
    /// A PC (`q35`) with PCI, ACPI and SeaBIOS: slower to boot, for guests or hosts where
    /// `microvm` misbehaves.
    Q35,
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// The event to simulate.
    #[arg(default_value = "push")]
    event: String,
    /// The repository (default: the current directory).
    #[arg(short = 'C', long = "repo", default_value = ".")]
    repo: PathBuf,
    /// A workflow file or folder (default: REPO/.github/workflows).
    #[arg(short = 'W', long = "workflows")]
    workflows: Option<PathBuf>,
    /// Run only this job (and the jobs it needs); repeatable.
    #[arg(short = 'j', long = "job")]
    job: Vec<String>,
    /// The event payload (JSON); default: synthesised from the repository's git state.
    #[arg(long)]
    event_file: Option<PathBuf>,
    /// The ref the synthesised event is for: `refs/heads/NAME`, `refs/tags/NAME`, or a branch
    /// name. Default: HEAD's branch; at a detached HEAD, a tag or branch pointing at it.
    #[arg(long = "ref", value_name = "REF", conflicts_with = "event_file")]
    git_ref: Option<String>,
    /// A secret, NAME=VALUE, or NAME to take the value from the environment; repeatable.
    #[arg(short = 's', long = "secret")]
    secret: Vec<String>,
    /// A file of secrets, one NAME=VALUE per line (`#` comments, optional quotes).
    #[arg(long)]
    secret_file: Option<PathBuf>,
    /// A configuration variable (`vars` context), NAME=VALUE; repeatable.
    #[arg(long = "var")]
    var: Vec<String>,
    /// A workflow input (`inputs` context), NAME=VALUE; repeatable.
    #[arg(long = "input")]
    input: Vec<String>,
    /// Run only matrix legs with this value, KEY:VALUE; repeatable.
    #[arg(long = "matrix")]
    matrix: Vec<String>,
    /// Files the event changed, for `paths`/`paths-ignore` filters (repeatable). Default, as
    /// for `firebreak plan`: what an `--event-file`'s push or pull request changed, else the
    /// files HEAD's commit changed (a pull request's: every file since its branch left the
    /// default branch); uncommitted edits are not among them.
    #[arg(long = "changed-file", value_name = "PATH")]
    changed_files: Vec<String>,
    /// Sandbox backend (default: namespace when bubblewrap works here, else host).
    #[arg(long, value_enum)]
    sandbox: Option<SandboxKind>,
    /// Print a JSON-lines event stream instead of human output.
    #[arg(long)]
    json: bool,
    /// List the workflows and jobs the event would run, then exit.
    #[arg(long)]
    list: bool,
    /// Show what would run (jobs, matrix legs, steps) without running anything.
    #[arg(long)]
    dry_run: bool,
    /// Run at most N jobs (matrix legs) at once (default: number of CPUs).
    #[arg(long = "jobs", value_name = "N")]
    jobs: Option<usize>,
    /// Map a runs-on label to a backend, LABEL=host|namespace|qemu|firecracker (act's `-self-hosted` means host).
    #[arg(short = 'P', long = "platform", value_name = "LABEL=ENV")]
    platform: Vec<String>,
    /// Folder of remote actions, laid out as DIR/owner/repo/ref/.
    #[arg(long, value_name = "DIR")]
    action_cache: Option<PathBuf>,
    /// Never fetch actions; use only the action cache.
    #[arg(long)]
    offline: bool,
    /// Give jobs network access. Without it, namespace sandboxes get their own network
    /// namespace with only loopback and microVMs no network device (host sandboxes always
    /// share the host's network); a workflow opts in with `FIREBREAK_NETWORK: true` in its
    /// `env`, a job with the same in its own `env` or with the `network` runs-on label, a
    /// repository with `network: true` in its `.github/firebreak.yml`.
    #[arg(long)]
    network: bool,
    /// Keep N restored microVMs ready per VM size while the run lasts, refilled in the
    /// background, so that jobs after the first start in a VM that is already up (qemu and
    /// firecracker sandboxes; default 0: each job's VM is restored from the snapshot when it
    /// starts; at most 256, and the memory budget bounds it too).
    #[arg(
        long = "warm-pool",
        value_name = "N",
        default_value_t = 0,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=256)
    )]
    warm_pool: usize,
    /// How each job's microVM starts: `snapshot` restores a clone of a snapshot of a VM
    /// booted once per VM size, `cold` boots every job's kernel (qemu and firecracker
    /// sandboxes).
    #[arg(
        long = "vm-start",
        value_enum,
        value_name = "snapshot|cold",
        default_value = "snapshot",
        env = "FIREBREAK_VM_START"
    )]
    vm_start: VmStart,
    /// The QEMU machine of each job's microVM (qemu sandbox; its snapshots are the
    /// machine's own).
    #[arg(
        long = "vm-machine",
        value_enum,
        value_name = "microvm|q35",
        default_value = "microvm",
        env = "FIREBREAK_QEMU_MACHINE"
    )]
    vm_machine: VmMachine,
    /// vCPUs of a job's microVM when its `runs-on` labels give no size (`2cpu`, `4-cores`…)
    /// [default: the repository's `.github/firebreak.yml` `vm.cpus`, else 2].
    #[arg(
        long = "vm-cpus",
        value_name = "N",
        env = "FIREBREAK_VM_CPUS",
        value_parser = clap::value_parser!(u32).range(1..=256)
    )]
    vm_cpus: Option<u32>,
    /// Guest memory (MiB) of a job's microVM when its `runs-on` labels give no size (`4gb`…)
    /// [default: the repository's `.github/firebreak.yml` `vm.memory`, else 2048].
    #[arg(
        long = "vm-memory",
        value_name = "MIB",
        env = "FIREBREAK_VM_MEMORY",
        value_parser = clap::value_parser!(u64).range(128..=1_048_576)
    )]
    vm_memory: Option<u64>,
    /// Root filesystem (GiB) of a job's microVM when its `runs-on` labels give no disk size
    /// (`20gb-disk`…) [default: the repository's `.github/firebreak.yml` `vm.disk`, else the
    /// image's, ~4.7 GiB].
    #[arg(
        long = "vm-disk",
        value_name = "GIB",
        env = "FIREBREAK_VM_DISK",
        value_parser = clap::value_parser!(u64).range(1..=1024)
    )]
    vm_disk: Option<u64>,
    /// Memory (MiB) all microVMs on this host may use at once, this run's (pooled ones
    /// included) and every other firebreak run's together: each VM counts its guest memory
    /// plus its VMM's own (64 MiB for QEMU; 64 MiB and 1/16 of the guest's for Firecracker);
    /// a job waits up to 120 s for room (default: half of the host's memory; at least 192,
    /// the smallest VM with its QEMU).
    #[arg(
        long = "vm-memory-budget",
        value_name = "MIB",
        value_parser = clap::value_parser!(u64).range(192..)
    )]
    vm_memory_budget: Option<u64>,
    /// Seconds a job's microVM may leave the host's liveness pings unanswered before it
    /// counts as hung: the VM is killed and the job fails at once instead of at its
    /// timeout (0: never; a busy guest still answers within milliseconds).
    #[arg(long = "vm-hang-timeout", value_name = "SECS", default_value_t = 120)]
    vm_hang_timeout: u64,
    /// The guest image microVM jobs boot: a hash or unique hash prefix from `firebreak image
    /// list` (default: the newest image).
    #[arg(long = "image", value_name = "HASH", env = "FIREBREAK_IMAGE")]
    image: Option<String>,
    /// Start Firecracker through this `jailer` binary (firecracker sandbox; the jailer of
    /// the same Firecracker release; needs root): each VM runs chrooted under
    /// --jailer-chroot, as --jailer-user, in a cgroup of its own whose cpu.max, memory.max
    /// and pids.max follow the job's VM size.
    #[arg(
        long,
        value_name = "PATH",
        env = "FIREBREAK_JAILER_BIN",
        requires = "jailer_user"
    )]
    jailer: Option<PathBuf>,
    /// The unprivileged user the jailed Firecracker runs as: UID:GID or a user name (not
    /// root; a system user of its own, e.g. `useradd --system firebreak-vm`).
    #[arg(
        long = "jailer-user",
        value_name = "USER",
        env = "FIREBREAK_JAILER_USER"
    )]
    jailer_user: Option<String>,
    /// Where the jailer builds each VM's chroot (default: /srv/jailer); on the same file
    /// system as the image cache, so that kernel and snapshot files are hard-linked, not
    /// copied.
    #[arg(
        long = "jailer-chroot",
        value_name = "DIR",
        env = "FIREBREAK_JAILER_CHROOT"
    )]
    jailer_chroot: Option<PathBuf>,
    /// The network namespace jailed VMs run in: `own` (the default: an empty one of its
    /// own for each VM without network; a VM with a network device stays in the host's),
    /// `host` (the host's, for every VM), or the path of one the host set up
    /// (`/run/netns/NAME`), joined by every VM.
    #[arg(
        long = "jailer-netns",
        value_name = "own|host|PATH",
        env = "FIREBREAK_JAILER_NETNS"
    )]
    jailer_netns: Option<String>,
    /// Where logs go (default: REPO/.firebreak/runs/<n>/).
    #[arg(long, value_name = "DIR")]
    run_dir: Option<PathBuf>,
    /// `github.actor` (default: the payload's sender, else git's user.name, else $USER).
    #[arg(long)]
    actor: Option<String>,
    /// `github.repository` as owner/name (default: from the origin remote).
    #[arg(long)]
    repository: Option<String>,
    /// The GitHub server (`github.server_url`; remote actions are fetched from
    /// URL/owner/repo), e.g. a GitHub Enterprise Server.
    #[arg(long, value_name = "URL", default_value = "https://github.com")]
    server_url: String,
}

/// The `-j` names that are jobs of `w` (a run over several workflows selects in each the
/// jobs it has).
fn jobs_of(w: &plan::WorkflowPlan, names: &[String]) -> Vec<String> {
    names
        .iter()
        .filter(|j| w.jobs.iter().any(|x| x.id.eq_ignore_ascii_case(j)))
        .cloned()
        .collect()
}

/// The jailer settings `--jailer`, `--jailer-user`, `--jailer-chroot` and `--jailer-netns`
/// ask for.
fn jailer_config(
    args: &RunArgs,
) -> std::result::Result<Option<firebreak_vm::firecracker::JailerConfig>, String> {
    let Some(binary) = &args.jailer else {
        return Ok(None);
    };
    let user = args
        .jailer_user
        .as_deref()
        .ok_or("--jailer needs --jailer-user (UID:GID or a user name)")?;
    let mut j = firebreak_vm::firecracker::JailerConfig::for_user(binary, user)
        .map_err(|e| e.to_string())?
        .with_host_cgroups();
    if let Some(dir) = &args.jailer_chroot {
        j.chroot_base = dir.clone();
    }
    match args.jailer_netns.as_deref().map(str::trim) {
        None | Some("own") => {}
        Some("host") => j.own_netns = false,
        Some(path) if path.starts_with('/') => j.netns = Some(PathBuf::from(path)),
        Some(other) => {
            return Err(format!(
                "--jailer-netns {other:?}: expected own, host or the absolute path of a network namespace (/run/netns/NAME)"
            ))
        }
    }
    Ok(Some(j))
}

/// A workflow's error (stdout: the run stops) or warning (stderr, beside the run's
/// output), as `path:line:col: …` or a `workflow_error` / `workflow_warning` JSON record.
fn print_diagnostic(
    json: bool,
    shown: &str,
    d: &firebreak_workflow::Diagnostic,
    warning: bool,
) -> Result<()> {
    if json {
        let event = if warning {
            "workflow_warning"
        } else {
            "workflow_error"
        };
        let path = crate::discover::diagnostic_file(shown, d);
        crate::outln!(
            "{}",
            serde_json::json!({"event": event, "path": path, "line": d.line, "col": d.col, "message": d.message})
        )?;
    } else if warning {
        eprintln!("{}", crate::discover::diagnostic_line(shown, d, true));
    } else {
        crate::outln!("{}", crate::discover::diagnostic_line(shown, d, false))?;
    }
    Ok(())
}

/// Every workflow the run would start has errors (printed above): exit 2, nothing run.
fn nothing_run() -> ExitCode {
    eprintln!(
        "{}",
        style::err_red("the workflows have errors; nothing was run")
    );
    ExitCode::from(2)
}

fn usage(msg: impl std::fmt::Display) -> Result<ExitCode> {
    eprintln!("{}: {msg}", style::error_label());
    Ok(ExitCode::from(2))
}

fn split_kv(s: &str, sep: char) -> Option<(String, String)> {
    let (k, v) = s.split_once(sep)?;
    let k = k.trim();
    if k.is_empty() {
        return None;
    }
    Some((k.to_string(), v.to_string()))
}

fn read_secret_file(p: &Path) -> Result<IndexMap<String, String>> {
    let text =
        std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
    let mut out = IndexMap::new();
    for (n, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let l = l.strip_prefix("export ").unwrap_or(l);
        let Some((k, v)) = split_kv(l, '=') else {
            bail!("{}:{}: expected NAME=VALUE", p.display(), n + 1);
        };
        let v = v.trim();
        let v = if v.len() >= 2
            && ((v.starts_with('"') && v.ends_with('"'))
                || (v.starts_with('\'') && v.ends_with('\'')))
        {
            let inner = &v[1..v.len() - 1];
            if v.starts_with('"') {
                inner.replace("\\n", "\n").replace("\\\"", "\"")
            } else {
                inner.to_string()
            }
        } else {
            v.to_string()
        };
        out.insert(k, v);
    }
    Ok(out)
}

fn next_run_dir(base: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(base)?;
    let mut n = 0u64;
    for e in std::fs::read_dir(base)?.flatten() {
        if let Some(x) = e.file_name().to_str().and_then(|s| s.parse::<u64>().ok()) {
            n = n.max(x);
        }
    }
    loop {
        n += 1;
        let d = base.join(n.to_string());
        match std::fs::create_dir(&d) {
            Ok(()) => return Ok(d),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

fn state_home() -> PathBuf {
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir)
        .join("firebreak")
}

/// Where runs keep job scratch space and actions: the cache images live in too
/// (`$FIREBREAK_CACHE_DIR`, else `$XDG_CACHE_HOME/firebreak`, else `~/.cache/firebreak`).
fn cache_home() -> PathBuf {
    firebreak_vm::image::default_cache_dir()
}

pub fn run(args: RunArgs) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run_async(args))
}

async fn run_async(args: RunArgs) -> Result<ExitCode> {
    if let Err(msg) = crate::events::check_event_name(&args.event) {
        return usage(msg);
    }
    let repo = match std::fs::canonicalize(&args.repo) {
        Ok(p) if p.is_dir() => p,
        _ => return usage(format!("{} is not a directory", args.repo.display())),
    };
    // The repository's own settings (`.github/firebreak.yml`), below the command line's.
    let repo_cfg = match crate::repo_config::load(&repo) {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    let vm_cpus = args.vm_cpus.or(repo_cfg.vm_cpus).unwrap_or(2);
    let vm_memory = args.vm_memory.or(repo_cfg.vm_memory_mib).unwrap_or(2048);
    let vm_disk = args.vm_disk.or(repo_cfg.vm_disk_gib).map(|g| g << 30);
    // ---- workflows
    let wf_input = args
        .workflows
        .clone()
        .unwrap_or_else(|| repo.join(".github/workflows"));
    let files = match read_workflows(std::slice::from_ref(&wf_input)).all() {
        Ok(f) => f,
        Err(e) => return usage(format!("{e:#}")),
    };
    let mut parsed = Vec::new();
    let mut reusable: IndexMap<String, Arc<firebreak_workflow::Workflow>> = IndexMap::new();
    // Workflow files with errors: reported, left out, and the run's exit status is 2; the
    // others run, as GitHub runs them and fails only the invalid one's runs.
    let mut invalid: Vec<String> = Vec::new();
    let cwd = std::env::current_dir()
        .ok()
        .and_then(|d| std::fs::canonicalize(d).ok());
    for f in &files {
        // messages name the file relative to the current folder when it is below it
        let shown = cwd
            .as_ref()
            .and_then(|c| {
                std::fs::canonicalize(&f.path)
                    .ok()
                    .and_then(|a| a.strip_prefix(c).ok().map(|r| r.display().to_string()))
            })
            .unwrap_or_else(|| f.display.clone());
        // Local reusable workflows (`uses: ./.github/workflows/x.yml`) are loaded and handed to
        // the parser, which checks the call and attaches the called workflow to the job.
        let pf = f.parse(&repo, &shown);
        reusable.extend(pf.called);
        let p = pf.parsed;
        for d in &p.diagnostics {
            print_diagnostic(args.json, &shown, d, false)?;
        }
        for w in &p.warnings {
            print_diagnostic(args.json, &shown, w, true)?;
        }
        if !p.diagnostics.is_empty() {
            invalid.push(shown);
        } else if let Some(w) = p.workflow {
            let rel = std::fs::canonicalize(&f.path)
                .ok()
                .and_then(|abs| {
                    abs.strip_prefix(&repo)
                        .ok()
                        .map(|r| r.display().to_string())
                })
                .unwrap_or_else(|| f.display.clone());
            parsed.push((rel, Arc::new(w)));
        }
    }
    if parsed.is_empty() && !invalid.is_empty() {
        return Ok(nothing_run());
    }
    // ---- event
    let mut gs = git_state(&repo);
    if let Some(r) = &args.git_ref {
        crate::gitinfo::set_ref(&repo, &mut gs, r);
    } else if gs.detached
        && gs.git_ref.is_empty()
        && args.event == "push"
        && args.event_file.is_none()
        && !args.json
        && !args.list
        && !args.dry_run
    {
        eprintln!(
            "{}: HEAD is detached and no branch or tag points at its commit: github.ref is empty (name one with --ref, e.g. --ref main)",
            style::err_dim("note")
        );
    }
    let repository = match args.repository.clone().or(gs.repository.clone()) {
        Some(r) => r,
        None => {
            let fallback = local_repository(&repo);
            if !args.json && !args.list && !args.dry_run {
                eprintln!(
                    "{}: no remote 'origin': github.repository is {fallback} (set it with --repository owner/name)",
                    style::err_dim("note")
                );
            }
            fallback
        }
    };
    let default_actor = default_actor(&repo);
    let mut payload = match &args.event_file {
        Some(p) => match crate::events::read_event_file(p) {
            Ok(v) => v,
            Err(msg) => return usage(msg),
        },
        None => {
            let actor = args.actor.clone().unwrap_or_else(|| default_actor.clone());
            synthesize_payload(&gs, &args.event, &repository, &actor)
        }
    };
    // inputs: the event file's, then --input over them
    let mut cli_inputs = IndexMap::new();
    for i in &args.input {
        let Some((k, v)) = split_kv(i, '=') else {
            return usage(format!("--input {i}: expected NAME=VALUE"));
        };
        cli_inputs.insert(k, v);
    }
    let inputs_map = crate::inputs::given(&payload, &cli_inputs);
    if !inputs_map.is_empty() {
        if let Some(o) = payload.as_object_mut() {
            o.insert(
                "inputs".into(),
                serde_json::to_value(&inputs_map).unwrap_or_default(),
            );
        }
    }
    let (git_ref, sha) = crate::gitinfo::run_ref_and_sha(&repo, &gs, &args.event, &payload);
    let actor = args
        .actor
        .clone()
        .or_else(|| {
            payload
                .pointer("/sender/login")
                .and_then(|v| v.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| default_actor.clone());
    // ---- plan
    let event = plan::Event {
        name: args.event.clone(),
        payload: payload.clone(),
        changed_files: crate::gitinfo::event_changed_files(
            &repo,
            &gs,
            &args.event,
            args.event_file.is_some().then_some(&payload),
            &args.changed_files,
        ),
    };
    let mut the_plan = plan::plan(&parsed, &event);
    crate::events::note_unchecked_types(&the_plan, &event);
    the_plan.skip_ci = the_plan.skip_ci.or_else(|| {
        crate::gitinfo::pull_request_skip_instruction(&repo, &event.name, &event.payload)
    });
    let mut matrix_filter = Vec::new();
    for m in &args.matrix {
        let Some((k, v)) = split_kv(m, ':') else {
            return usage(format!("--matrix {m}: expected KEY:VALUE"));
        };
        matrix_filter.push((k, v));
    }
    if the_plan.workflows.is_empty() && !args.list && !args.dry_run {
        eprintln!("no workflow runs on '{}'", args.event);
        for f in &the_plan.filtered_out {
            eprintln!("  {}: {}", f.path, f.reason);
        }
        if args.changed_files.is_empty()
            && the_plan
                .filtered_out
                .iter()
                .any(|f| f.reason.contains("paths filters"))
        {
            eprintln!(
                "  (paths filters see the files HEAD's commit changed; name others with --changed-file)"
            );
        }
        return Ok(if invalid.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(2)
        });
    }
    if !args.job.is_empty() && !the_plan.workflows.is_empty() {
        the_plan.workflows.retain(|w| {
            w.jobs
                .iter()
                .any(|j| args.job.iter().any(|x| x.eq_ignore_ascii_case(&j.id)))
        });
        if the_plan.workflows.is_empty() {
            return usage(format!(
                "no job {} in the workflows that run on '{}'",
                args.job.join(", "),
                args.event
            ));
        }
    }
    if let Some(marker) = the_plan.skip_ci {
        eprintln!(
            "{}: the head commit's message says {marker}: GitHub would start none of these runs; running them as asked",
            style::err_dim("note")
        );
    }
    if args.list || args.dry_run {
        // As `firebreak plan` settles it (matrices from the event expanded, `if:` decided),
        // then what this run would do: the same job and leg selection, nothing executed.
        let verdicts = crate::cmd::plan::settle(
            &mut the_plan,
            &event,
            &repository,
            &inputs_map,
            (&git_ref, &sha),
        );
        for w in &mut the_plan.workflows {
            let only = jobs_of(w, &args.job);
            list::select_jobs(w, &only);
            list::select_legs(w, &matrix_filter);
        }
        let code = list::print(&the_plan, args.dry_run, args.json, &verdicts)?;
        return Ok(if invalid.is_empty() || code != ExitCode::SUCCESS {
            code
        } else {
            ExitCode::from(2)
        });
    }
    if args.event == "workflow_dispatch" {
        // Inputs given for one of several dispatched workflows are not "unexpected" for the
        // others: that check needs a single workflow (GitHub dispatches one at a time).
        let single = the_plan.workflows.len() == 1;
        // A refused dispatch is that workflow's error, reported and left out like the ones
        // below (and as `firebreak plan` shows it), not a usage error for the whole run.
        for w in &mut the_plan.workflows {
            let errors = crate::inputs::dispatch_input_errors(&w.workflow, &inputs_map, single);
            if !errors.is_empty() {
                w.errors.push(format!(
                    "GitHub would refuse this dispatch: {}",
                    errors.join("; ")
                ));
            }
        }
    }
    // A triggered workflow that cannot be planned (filters that contradict each other, a
    // matrix over 256 legs…) fails alone, as its run does on GitHub.
    for w in &the_plan.workflows {
        for e in &w.errors {
            if args.json {
                crate::outln!(
                    "{}",
                    serde_json::json!({"event": "workflow_error", "path": w.path, "message": e})
                )?;
            } else {
                crate::outln!("{}: {e}", w.path)?;
            }
        }
        if !w.errors.is_empty() {
            invalid.push(w.path.clone());
        }
    }
    the_plan.workflows.retain(|w| w.errors.is_empty());
    if the_plan.workflows.is_empty() {
        return Ok(nothing_run());
    }
    // ---- secrets, vars
    let mut secrets = IndexMap::new();
    if let Some(f) = &args.secret_file {
        match read_secret_file(f) {
            Ok(m) => secrets.extend(m),
            Err(e) => return usage(format!("{e:#}")),
        }
    }
    for s in &args.secret {
        match split_kv(s, '=') {
            Some((k, v)) => {
                secrets.insert(k, v);
            }
            None => match std::env::var(s.trim()) {
                Ok(v) => {
                    secrets.insert(s.trim().to_string(), v);
                }
                Err(_) => {
                    return usage(format!(
                        "--secret {s}: expected NAME=VALUE, or NAME of an environment variable"
                    ))
                }
            },
        }
    }
    let mut vars = IndexMap::new();
    for v in &args.var {
        let Some((k, val)) = split_kv(v, '=') else {
            return usage(format!("--var {v}: expected NAME=VALUE"));
        };
        vars.insert(k, val);
    }
    // ---- scratch, sandboxes
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    // Each is claimed for the run (see `firebreak_runner::leftovers`): what a run killed
    // outright (SIGKILL) left behind goes when the next run starts.
    // Staged next to the repository when possible (same file system: hard links), else in /tmp.
    let (scratch, scratch_claim) = match scratch_dir(&repo.join(".firebreak/tmp")) {
        Ok(d) => {
            let _ = std::fs::write(repo.join(".firebreak/.gitignore"), "*\n");
            d
        }
        Err(_) => scratch_dir(&std::env::temp_dir())
            .with_context(|| format!("creating a folder in {}", std::env::temp_dir().display()))?,
    };
    let source = scratch.join("source");
    // Job trees live outside /tmp: the namespace sandbox mounts the job's own /tmp there.
    let (jobs_dir, jobs_claim) = scratch_dir(&cache_home().join("jobs")).with_context(|| {
        format!(
            "creating a folder in {}",
            cache_home().join("jobs").display()
        )
    })?;
    let cleanup = (
        Cleanup(scratch.clone(), scratch_claim),
        Cleanup(jobs_dir.clone(), jobs_claim),
    );
    let mut providers: IndexMap<String, Arc<dyn SandboxProvider>> = IndexMap::new();
    providers.insert(
        "host".into(),
        Arc::new(HostProvider::new(jobs_dir.join("host"))),
    );
    let base_path = std::env::var("PATH")
        .unwrap_or_else(|_| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    let (tool_binds, extra_env) = toolchains(&base_path);
    let mut ns_config = NamespaceConfig::new(jobs_dir.join("namespace"));
    ns_config.ro_binds = tool_binds;
    let ns = NamespaceProvider::new(ns_config);
    let probe = ns.probe().await;
    if probe.available {
        providers.insert("namespace".into(), Arc::new(ns));
    }
    // MicroVM providers are made only when a run asks for them (by --sandbox or -P). The
    // QEMU one is kept to stop its warm pool's VMs when the run ends.
    let mut qemu_pool: Option<Arc<firebreak_vm::QemuProvider>> = None;
    let mut fc_provider: Option<Arc<firebreak_vm::firecracker::FirecrackerProvider>> = None;
    let hang_timeout =
        (args.vm_hang_timeout > 0).then(|| std::time::Duration::from_secs(args.vm_hang_timeout));
    for (kind, name) in [
        (SandboxKind::Qemu, "qemu"),
        (SandboxKind::Firecracker, "firecracker"),
    ] {
        let wanted = args.sandbox == Some(kind)
            || args.platform.iter().any(|p| {
                p.split_once('=')
                    .is_some_and(|(_, e)| e.trim().eq_ignore_ascii_case(name))
            });
        if !wanted {
            continue;
        }
        if args.vm_start == VmStart::Cold && args.warm_pool > 0 {
            return usage(
                "--warm-pool keeps VMs restored from snapshots ready, and --vm-start cold boots every VM: use one of them",
            );
        }
        let store = firebreak_vm::ImageStore::open_default();
        let vm: Arc<dyn SandboxProvider> = match kind {
            SandboxKind::Firecracker => {
                let jailer = match jailer_config(&args) {
                    Ok(j) => j,
                    Err(e) => return usage(e),
                };
                let fc = firebreak_vm::firecracker::FirecrackerProvider::new(
                    store,
                    args.image.clone(),
                    firebreak_vm::firecracker::FirecrackerConfig {
                        unresponsive_after: hang_timeout,
                        jailer,
                        vcpus: vm_cpus,
                        memory_mib: vm_memory,
                        default_disk_bytes: vm_disk,
                        ..Default::default()
                    },
                );
                // One budget for every microVM of the run: the QEMU provider's
                // when there is one (it is made first).
                let fc = match (&qemu_pool, args.vm_memory_budget) {
                    (Some(q), _) => fc.with_budget(q.budget().clone()),
                    (None, Some(mib)) => fc.with_memory_budget(mib),
                    (None, None) => fc,
                };
                let fc = match args.vm_start {
                    VmStart::Snapshot => fc,
                    VmStart::Cold => fc.without_snapshots(),
                };
                let fc = Arc::new(fc.with_pool(args.warm_pool));
                fc_provider = Some(fc.clone());
                fc
            }
            _ => {
                let q = Arc::new(
                    firebreak_vm::QemuProvider::new(
                        store,
                        args.image.clone(),
                        firebreak_vm::VmConfig {
                            unresponsive_after: hang_timeout,
                            vcpus: vm_cpus,
                            memory_mib: vm_memory,
                            default_disk_bytes: vm_disk,
                            // A run of one job would start a standby QEMU for
                            // nothing (and take its CPU from that job).
                            standby: job_runs(&the_plan.workflows) > 1,
                            start: match args.vm_start {
                                VmStart::Snapshot => firebreak_vm::Start::Snapshot,
                                VmStart::Cold => firebreak_vm::Start::Cold,
                            },
                            machine: match args.vm_machine {
                                VmMachine::Microvm => firebreak_vm::Machine::Microvm,
                                VmMachine::Q35 => firebreak_vm::Machine::Q35,
                            },
                            ..Default::default()
                        },
                    )
                    .with_pool(firebreak_vm::PoolConfig {
                        size: args.warm_pool,
                        memory_budget_mib: args.vm_memory_budget,
                    }),
                );
                qemu_pool = Some(q.clone());
                q
            }
        };
        let vprobe = vm.probe().await;
        if !vprobe.available {
            let notes = vprobe.notes.join("; ");
            // Point at `image build` only when the image is what is missing.
            let next = if notes.contains("no image") && !notes.contains("firebreak image") {
                "see `firebreak doctor`; build an image with `firebreak image build`"
            } else {
                "see `firebreak doctor`"
            };
            return usage(format!(
                "the {name} sandbox is unavailable here: {notes} ({next})"
            ));
        }
        if let (SandboxKind::Qemu, Some(v)) = (kind, firebreak_vm::qemu::UserNet::unknown_setting())
        {
            eprintln!(
                "{}: FIREBREAK_QEMU_NET={v} is ignored: it takes `passt` or `slirp`",
                style::err_yellow("warning")
            );
        }
        providers.insert(name.into(), vm);
    }
    // The budget holds for every firebreak run on this host together, not each alone.
    let budgets = qemu_pool
        .iter()
        .map(|q| q.budget())
        .chain(fc_provider.iter().map(|f| f.budget()));
    for budget in budgets {
        let ledger = firebreak_vm::host_ledger::default_dir();
        if let Err(e) = budget.count_host_wide(&ledger) {
            eprintln!(
                "{}: cannot share the VM memory budget with other runs through {} ({e}): this run counts only its own VMs",
                style::err_yellow("warning"),
                ledger.display()
            );
        }
    }
    if qemu_pool.is_none()
        && fc_provider.is_some()
        && args.vm_machine != VmMachine::Microvm
        && std::env::var_os("FIREBREAK_QEMU_MACHINE").is_none()
    {
        eprintln!(
            "{}: --vm-machine chooses QEMU's machine; Firecracker has one of its own: ignored",
            style::err_yellow("warning"),
        );
    }
    if qemu_pool.is_none() && fc_provider.is_none() {
        // Options that only shape microVMs, given to a run that makes none.
        // Values from the environment (FIREBREAK_VM_CPUS…) may be set for every run: only
        // what the command line gave is named.
        let from_env = |var: &str| std::env::var_os(var).is_some();
        let ignored: Vec<&str> = [
            (args.warm_pool > 0, "--warm-pool"),
            (
                args.vm_start == VmStart::Cold && !from_env("FIREBREAK_VM_START"),
                "--vm-start",
            ),
            (
                args.vm_cpus.is_some() && !from_env("FIREBREAK_VM_CPUS"),
                "--vm-cpus",
            ),
            (
                args.vm_memory.is_some() && !from_env("FIREBREAK_VM_MEMORY"),
                "--vm-memory",
            ),
            (
                args.vm_disk.is_some() && !from_env("FIREBREAK_VM_DISK"),
                "--vm-disk",
            ),
            (args.vm_memory_budget.is_some(), "--vm-memory-budget"),
            (
                args.vm_machine != VmMachine::Microvm && !from_env("FIREBREAK_QEMU_MACHINE"),
                "--vm-machine",
            ),
            (
                args.jailer.is_some() && !from_env("FIREBREAK_JAILER_BIN"),
                "--jailer",
            ),
        ]
        .into_iter()
        .filter_map(|(given, name)| given.then_some(name))
        .collect();
        if !ignored.is_empty() {
            eprintln!(
                "{}: {} only apply to microVM sandboxes (--sandbox qemu|firecracker, or -P LABEL=qemu); ignored",
                style::err_yellow("warning"),
                ignored.join(", ")
            );
        }
    }
    let default_backend = match args.sandbox {
        Some(SandboxKind::Qemu) => "qemu".to_string(),
        Some(SandboxKind::Firecracker) => "firecracker".to_string(),
        Some(SandboxKind::Host) => "host".to_string(),
        Some(SandboxKind::Namespace) => {
            if !probe.available {
                return usage(format!(
                    "the namespace sandbox is unavailable here: {}",
                    probe.notes.join("; ")
                ));
            }
            "namespace".to_string()
        }
        None if probe.available => "namespace".to_string(),
        None => {
            eprintln!(
                "{}: the namespace sandbox is unavailable ({}); running jobs on the host without isolation",
                style::err_yellow("warning"),
                probe.notes.join("; ")
            );
            "host".to_string()
        }
    };
    let mut label_map = IndexMap::new();
    for p in &args.platform {
        let Some((label, env)) = split_kv(p, '=') else {
            return usage(format!(
                "-P {p}: expected LABEL=host|namespace|qemu|firecracker"
            ));
        };
        let backend = match env.trim().to_ascii_lowercase().as_str() {
            "host" | "-self-hosted" | "self-hosted" => "host",
            "namespace" => "namespace",
            "qemu" => "qemu",
            "firecracker" => "firecracker",
            // A bare word is a sandbox misspelt, not one of act's container images
            // (`node:16-buster-slim`, `catthehacker/ubuntu:act-latest`): running the job in
            // another sandbox than the one asked for would be the wrong isolation.
            other if !other.contains([':', '/', '.', '@']) => {
                return usage(format!(
                    "-P {p}: unknown sandbox '{}'; expected host, namespace, qemu or firecracker",
                    env.trim()
                ));
            }
            _ => {
                let other = env.trim();
                eprintln!("{}: -P {label}={other}: images are not supported; the job runs in the {default_backend} sandbox", style::err_yellow("warning"));
                default_backend.as_str()
            }
        };
        if !providers.contains_key(backend) {
            return usage(format!("-P {p}: the {backend} sandbox is unavailable here"));
        }
        label_map.insert(label.to_ascii_lowercase(), backend.to_string());
    }
    // ---- run dir
    let run_dir = match &args.run_dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d.clone()
        }
        None => match next_run_dir(&repo.join(".firebreak/runs")) {
            Ok(d) => {
                // keep run logs out of `git status` (and so out of staged workspaces)
                let _ = std::fs::write(repo.join(".firebreak/.gitignore"), "*\n");
                d
            }
            Err(_) => {
                next_run_dir(&state_home().join("runs")).context("creating a run directory")?
            }
        },
    };
    let run_number = run_dir
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let cancel = CancellationToken::new();
    let kill = CancellationToken::new();
    {
        // Registered now (not when a task first polls), so an early Ctrl-C is never lost.
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt()).context("installing the Ctrl-C handler")?;
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let (c, k) = (cancel.clone(), kill.clone());
        tokio::spawn(async move {
            let first = tokio::select! { x = int.recv() => x, x = term.recv() => x };
            if first.is_some() {
                eprintln!("\ncancelling: running steps are stopped, then always() and post steps run (Ctrl-C again to kill them)");
                c.cancel();
                let second = tokio::select! { x = int.recv() => x, x = term.recv() => x };
                if second.is_some() {
                    k.cancel();
                }
            }
        });
    }
    let cfg = Arc::new(RunConfig {
        event_name: args.event.clone(),
        event: payload,
        repository: repository.clone(),
        sha,
        git_ref,
        actor,
        run_id: nanos as u64 % 1_000_000_000,
        run_number,
        server_url: args.server_url.trim_end_matches('/').to_string(),
        stage_source: {
            let (repo, source) = (repo.clone(), source.clone());
            Arc::new(move || {
                stage::staged_source(&repo, &source)
                    .map_err(|e| format!("staging the repository: {e:#}"))
            })
        },
        staged: Arc::new(tokio::sync::OnceCell::new()),
        secrets,
        vars,
        inputs: Value::from_json(&serde_json::to_value(&inputs_map).unwrap_or_default()),
        providers,
        default_backend: default_backend.clone(),
        label_map: label_map.clone(),
        slots: Arc::new(tokio::sync::Semaphore::new(
            args.jobs
                .unwrap_or_else(|| {
                    std::thread::available_parallelism()
                        .map(|n| n.get())
                        .unwrap_or(2)
                })
                .max(1),
        )),
        action_cache: args
            .action_cache
            .clone()
            .unwrap_or_else(|| cache_home().join("actions")),
        offline: args.offline,
        network: args.network,
        network_by_default: repo_cfg.network.unwrap_or(false),
        only_jobs: args.job.clone(),
        matrix_filter,
        cancel: cancel.clone(),
        kill,
        base_path,
        extra_env,
        log_dir: Some(run_dir.clone()),
        job_prefix: String::new(),
        reusable: Arc::new(reusable),
        github_workflow: None,
        concurrency: Default::default(),
        concurrency_held: Vec::new(),
    });
    let (tx, rx) = EventSender::channel();
    let reporter = Reporter::new(args.json, run_dir.clone());
    let rep_task = tokio::spawn(reporter.consume(rx));
    // Workflows run concurrently, sharing the --jobs slots.
    let mut set = tokio::task::JoinSet::new();
    for w in &the_plan.workflows {
        tx.send(Event::WorkflowStarted {
            path: w.path.clone(),
            name: w.name.clone(),
            event_name: args.event.clone(),
            sandbox: default_backend.clone(),
            mapped: label_map.clone(),
        });
    }
    for (i, w) in the_plan.workflows.iter().enumerate() {
        let only = jobs_of(w, &args.job);
        let inputs = crate::inputs::workflow_inputs(&w.workflow, &args.event, &inputs_map);
        let mut event = cfg.event.clone();
        if args.event == "workflow_dispatch" {
            crate::inputs::dispatch_event_inputs(&mut event, &inputs);
        }
        if args.event == "schedule" {
            crate::events::fill_schedule(&mut event, &w.workflow);
        }
        let wcfg = Arc::new(RunConfig {
            inputs,
            event,
            only_jobs: only,
            ..(*cfg).clone()
        });
        let (w, tx) = (w.clone(), tx.clone());
        set.spawn(async move {
            (
                i,
                w.name.clone(),
                w.path.clone(),
                run_workflow(&w, &w.path, wcfg, tx).await,
            )
        });
    }
    let mut outcomes: Vec<(usize, String, WorkflowOutcome)> = Vec::new();
    let mut exit = 0u8;
    while let Some(r) = set.join_next().await {
        match r {
            Ok((i, name, _, Ok(o))) => {
                if o.result != Conclusion::Success {
                    exit = exit.max(1);
                }
                outcomes.push((i, name, o));
            }
            Ok((_, _, path, Err(e))) => {
                eprintln!("{}: {path}: {e}", style::error_label());
                exit = 2;
            }
            Err(e) => {
                eprintln!("{}: a workflow task failed: {e}", style::error_label());
                exit = 2;
            }
        }
    }
    outcomes.sort_by_key(|o| o.0);
    let outcomes: Vec<(String, WorkflowOutcome)> =
        outcomes.into_iter().map(|(_, n, o)| (n, o)).collect();
    drop(tx);
    // No refill may start on memory the other backend returns while stopping.
    if let Some(q) = &qemu_pool {
        q.budget().close();
    }
    if let Some(f) = &fc_provider {
        f.budget().close();
    }
    if let Some(q) = &qemu_pool {
        q.shutdown().await;
    }
    if let Some(f) = &fc_provider {
        f.shutdown().await;
    }
    let mut reporter = rep_task.await.context("the reporter stopped")?;
    reporter.summary(&outcomes, &run_dir);
    drop(cleanup);
    if !invalid.is_empty() {
        if !args.json {
            eprintln!(
                "{}",
                style::err_red(&format!(
                    "not run, the errors above: {}",
                    invalid.join(", ")
                ))
            );
        }
        exit = 2;
    }
    Ok(ExitCode::from(exit))
}

/// Tools installed outside the system folders stay usable in jobs: every `PATH` folder outside
/// `/usr`, `/bin`, `/sbin`, `/lib*` and `/etc` is bound read-only into namespace sandboxes,
/// and rustup's toolchains are found through `RUSTUP_HOME` (jobs get a `HOME` of their own).
fn toolchains(path: &str) -> (Vec<PathBuf>, IndexMap<String, String>) {
    let system = [
        "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc",
    ];
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let mut binds: Vec<PathBuf> = Vec::new();
    for d in std::env::split_paths(path) {
        // never a folder that holds the home folder (or is it): that would expose it all
        let too_wide = d.parent().is_none() || home.as_ref().is_some_and(|h| h.starts_with(&d));
        if d.is_absolute()
            && d.is_dir()
            && !too_wide
            && !system.iter().any(|s| d.starts_with(s))
            && !binds.contains(&d)
        {
            binds.push(d);
        }
    }
    let mut env = IndexMap::new();
    let rustup = std::env::var_os("RUSTUP_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".rustup")))
        .filter(|p| p.is_dir());
    if let Some(r) = rustup {
        env.insert("RUSTUP_HOME".to_string(), r.display().to_string());
        binds.push(r);
    }
    (binds, env)
}

/// A folder of this run's own in `parent` (`run-<tag>-<n>`), claimed until the run ends; the
/// abandoned ones of runs that were killed are removed first (unmounting what they left
/// mounted; never deleting through a mount).
fn scratch_dir(parent: &Path) -> std::io::Result<(PathBuf, firebreak_runner::leftovers::Claim)> {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    firebreak_runner::leftovers::new_run_dir(parent, "run-", n, |p| {
        if firebreak_runner::sandbox::unmount_all_under(p).is_empty() {
            let _ = std::fs::remove_dir_all(p);
        }
    })
}

/// Removes a run's folder when the run ends, then gives up its claim.
struct Cleanup(
    PathBuf,
    #[allow(dead_code)] firebreak_runner::leftovers::Claim,
);

impl Drop for Cleanup {
    fn drop(&mut self) {
        // Sandboxes unmount their checkout overlays when destroyed; this is the safety net
        // (never delete through a mount).
        if !self.0.exists() {
            return;
        }
        if firebreak_runner::sandbox::unmount_all_under(&self.0).is_empty() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// How many job runs (matrix legs, called workflows' jobs) the workflows plan, counting a
/// matrix evaluated at run time as two: enough to tell one from several.
fn job_runs(workflows: &[plan::WorkflowPlan]) -> usize {
    workflows
        .iter()
        .flat_map(|w| &w.jobs)
        .map(|j| match (&j.called, &j.matrix) {
            (Some(called), _) => job_runs(std::slice::from_ref(called)).max(1),
            (None, MatrixPlan::Legs { legs }) => legs.len(),
            (None, MatrixPlan::Deferred { .. }) => 2,
            (None, MatrixPlan::None | MatrixPlan::Invalid { .. }) => 1,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn runs(yaml: &str) -> usize {
        let parsed = firebreak_workflow::parse_workflow("w.yml", yaml);
        let wf = parsed.workflow.expect("valid workflow");
        let event = plan::Event {
            name: "push".into(),
            payload: serde_json::json!({ "ref": "refs/heads/main" }),
            changed_files: None,
        };
        let p = plan::plan(&[("w.yml", Arc::new(wf))], &event);
        job_runs(&p.workflows)
    }

    #[test]
    fn job_runs_counts_legs_and_tells_one_from_several() {
        let one = "on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: echo\n";
        assert_eq!(runs(one), 1);
        let legs = "on: push\njobs:\n  a:\n    runs-on: x\n    strategy:\n      matrix:\n        n: [1, 2, 3]\n    steps:\n      - run: echo\n  b:\n    runs-on: x\n    steps:\n      - run: echo\n";
        assert_eq!(runs(legs), 4);
        let deferred = "on: push\njobs:\n  a:\n    runs-on: x\n    strategy:\n      matrix:\n        n: ${{ fromJSON(vars.N) }}\n    steps:\n      - run: echo\n";
        assert!(
            runs(deferred) > 1,
            "a matrix known only at run time may have several legs"
        );
        // An expression that reads no context is expanded when planning: one leg is one.
        let constant = deferred.replace("vars.N", "'[1]'");
        assert_eq!(runs(&constant), 1);
    }
}
