//! Conformance harness for firebreak (a workspace member, never shipped in the binary).
//!
//! Runs firebreak against corpora written by others (see `../shared/conformance/README.md`):
//!
//! ```text
//! cargo run --release -p firebreak-conformance -- expressions DIR
//! cargo run --release -p firebreak-conformance -- parser DIR
//! ```
//!
//! Each suite prints one line per failing case and ends with the line `N passed, M failed`.
//! The exit code is 0 when the suite ran (whatever it counted) and 2 when it could not run;
//! thresholds are enforced by the workspace tests (`tests/thresholds.rs`), which read the
//! recorded minimum pass counts from `conformance-baseline.toml`.

mod expressions;
mod parser;

use std::path::PathBuf;
use std::process::ExitCode;

/// Result of running one suite: failures are already printed.
pub struct Tally {
    pub passed: usize,
    pub failed: usize,
}

fn usage() -> ExitCode {
    eprintln!("usage: firebreak-conformance <expressions|parser> DIR");
    eprintln!("  DIR is a corpus directory such as ../shared/conformance/expressions");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (suite, dir) = match args.as_slice() {
        [suite, dir] => (suite.as_str(), PathBuf::from(dir)),
        _ => return usage(),
    };
    let result = match suite {
        "expressions" => expressions::run(&dir),
        "parser" => parser::run(&dir),
        _ => return usage(),
    };
    match result {
        Ok(t) => {
            println!("{} passed, {} failed", t.passed, t.failed);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
