//! # firebreak-runner: sandboxes and the step runtime
//!
//! This crate owns the pieces that *execute* a GitHub Actions job once a plan
//! says what to run, and the [`executor`] that walks a plan and ties them together.
//!
//! * [`sandbox`] — the [`Sandbox`](sandbox::Sandbox) /
//!   [`SandboxProvider`](sandbox::SandboxProvider) interface every backend
//!   implements, and two backends: [`host`](sandbox::host) (no isolation, a
//!   per-job directory tree) and [`namespace`](sandbox::namespace)
//!   (bubblewrap: mount/PID/IPC/UTS/network namespaces, read-only system,
//!   cgroup limits where possible). QEMU and Firecracker backends will
//!   implement the same traits over a guest agent.
//! * [`shell`] — GitHub's `shell:` rules: program, arguments, script file and
//!   extension, `working-directory`.
//! * [`file_commands`] — `GITHUB_ENV`, `GITHUB_OUTPUT`, `GITHUB_STATE`,
//!   `GITHUB_PATH`, `GITHUB_STEP_SUMMARY`.
//! * [`commands`] — `::workflow-commands::` on stdout.
//! * [`mask`] — secret masking of every output line and log.
//! * [`context`] — the `github` / `runner` contexts and `GITHUB_*` /
//!   `RUNNER_*` variables.
//! * [`step`] — one `run:` step end to end: the pieces above over a sandbox.
//! * [`executor`] — runs a planned workflow: the job scheduler (`needs`, matrices,
//!   fail-fast, max-parallel, `--jobs`), each job in its own sandbox ([`executor::job`]),
//!   expression contexts and status functions ([`executor::expr`]), composite/JavaScript
//!   actions and the action cache ([`executor::actions`]), and the typed event stream
//!   reporters consume ([`executor::events`]).
//!
//! ## The sandbox contract
//! A [`SandboxProvider`](sandbox::SandboxProvider) creates one
//! [`Sandbox`](sandbox::Sandbox) per job from a [`JobSpec`](sandbox::JobSpec).
//! The sandbox exposes its [`JobLayout`](sandbox::JobLayout) (workspace, temp,
//! file-command directory… as *guest* paths — never assume they exist on the
//! host), copies directories in and out, reads and writes files confined to the
//! job's tree, and runs processes: exactly the given argv/env/cwd, stdout and
//! stderr streamed line by line as [`OutputEvent`](sandbox::OutputEvent)s, the
//! whole process tree killed on timeout or cancellation. Both traits are
//! object-safe (methods return [`BoxFuture`](sandbox::BoxFuture)), so the
//! executor holds `Box<dyn SandboxProvider>` / `Box<dyn Sandbox>`. See
//! [`sandbox`] for the details each backend guarantees.
//!
//! ## Running one `run:` step (what the executor does)
//! ```no_run
//! use firebreak_runner::{commands, file_commands, mask, sandbox, shell};
//! use sandbox::{ExecRequest, HostProvider, JobSpec, SandboxProvider};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let provider = HostProvider::new("/var/lib/firebreak/run");
//! let sb = provider.create(JobSpec::new("build", "hello")).await?;
//! let layout = sb.layout().clone();
//! let masker = mask::Masker::new();
//!
//! // Per step: fresh environment files, a script file, the shell's argv.
//! let files = file_commands::StepFiles::random(&layout.file_commands);
//! files.prepare(sb.as_ref()).await?;
//! let sh = shell::ShellCommand::resolve(Some("bash"), |_| true)?;
//! let script = sh.script_path(&layout.temp);
//! sb.write_file(&script, sh.script_contents("echo hi >> $GITHUB_OUTPUT").into_bytes(), None).await?;
//! let mut req = ExecRequest::new(sh.argv(&script)).cwd(&layout.workspace)
//!     .env("PATH", "/usr/bin:/bin");
//! for (k, v) in files.env_vars() { req.env.insert(k.into(), v); }
//!
//! let (tx, mut rx) = tokio::sync::mpsc::channel(256);
//! let run = sb.exec(req, tx);
//! let mut proc = commands::CommandProcessor::new(commands::CommandSettings::default());
//! let consume = async {
//!     while let Some(ev) = rx.recv().await {
//!         for effect in proc.process_line(&ev.line) {
//!             match effect {
//!                 commands::Effect::AddMask(v) => masker.add(&v),
//!                 commands::Effect::Output(l) => println!("{}", masker.mask(&l)),
//!                 _ => { /* outputs, annotations, groups … */ }
//!             }
//!         }
//!     }
//! };
//! let (status, ()) = tokio::join!(run, consume);
//! let results = files.collect(sb.as_ref()).await?;
//! println!("exit {:?}, outputs {:?}", status?, results.outputs);
//! sb.destroy().await?;
//! # Ok(()) }
//! ```

pub mod commands;
pub mod context;
pub mod executor;
pub mod file_commands;
pub mod leftovers;
pub mod mask;
pub mod sandbox;
pub mod shell;
pub mod spawn;
pub mod step;
