//! The `firebreak` binary: the command line over the workflow engine and the runner.
//!
//! Only this crate knows about the terminal, exit codes and `anyhow`; the libraries it calls
//! return typed errors and diagnostics.

mod cmd;
mod discover;
mod events;
mod gitinfo;
mod inputs;
mod jobif;
mod repo_config;
mod style;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// mimalloc instead of the system allocator: parsing and planning a workflow make hundreds of
/// small allocations, which glibc's malloc served at about a fifth of the parser's instructions
/// (docs/benchmarks.md, "Parse, validate and plan a workflow").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Run GitHub Actions workflows locally and in hardware-isolated microVMs.
#[derive(Parser)]
#[command(name = "firebreak", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Output format shared by the commands that print results.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// For people: aligned text, coloured on a terminal unless NO_COLOR is set.
    Text,
    /// For scripts: one JSON document on stdout.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Validate workflow files exactly as GitHub does.
    ///
    /// Exit status: 0 when every file is valid, 1 when any is invalid, 2 when a file cannot be
    /// read. Errors are printed one per line as `path:line:col: message`.
    Check {
        /// Workflow files, `.github/workflows` folders or repositories (default: `.`).
        paths: Vec<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Show the jobs an event would run, in order, with their matrix values.
    Plan(cmd::plan::PlanArgs),
    /// Run a repository's workflows locally, as GitHub would for an event.
    ///
    /// Exit status: 0 when every job succeeded, 1 when any job failed, 2 on usage or
    /// workflow errors (reported as by `firebreak check`; an invalid workflow is left out and
    /// the others still run, as on GitHub).
    Run(Box<cmd::run::RunArgs>),
    /// Build, list and prune guest images for the microVM sandboxes.
    #[command(subcommand)]
    Image(cmd::image::ImageCommand),
    /// Show which sandboxes work on this host, and why not.
    Doctor(cmd::doctor::DoctorArgs),
}

/// `println!` that returns the write's error instead of panicking: `firebreak plan | head`
/// closes stdout early, and the command then stops without a message (see [`main`]).
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

/// Whether `err` is stdout closed by its reader (a pipe into `head`), which is not a failure.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { paths, format } => cmd::check::run(&paths, format),
        Command::Plan(args) => cmd::plan::run(&args),
        Command::Run(args) => {
            // Under sudo the cache is the invoking user's: it stays theirs.
            firebreak_vm::image::keep_cache_the_sudo_users();
            let r = cmd::run::run(*args);
            firebreak_vm::image::keep_cache_the_sudo_users();
            r
        }
        Command::Image(c) => cmd::image::run(&c),
        Command::Doctor(args) => cmd::doctor::run(&args),
    };
    match result {
        Ok(code) => code,
        // What a shell reports for a tool killed by SIGPIPE: quiet, and never mistaken for
        // success (`firebreak check | head` under `set -o pipefail` must not pass).
        Err(err) if is_broken_pipe(&err) => ExitCode::from(141),
        Err(err) => {
            eprintln!("{}: {err:#}", style::error_label());
            ExitCode::from(2)
        }
    }
}
