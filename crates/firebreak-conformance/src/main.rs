//! `firebreak-conformance <suite> DIR`: run one conformance suite over a corpus directory.
//!
//! ```text
//! cargo run --release -p firebreak-conformance -- expressions ../shared/conformance/expressions
//! cargo run --release -p firebreak-conformance -- parser ../shared/conformance/workflow-parser
//! cargo run --release -p firebreak-conformance -- act ../shared/conformance/act [--sandbox S]
//! ```
//!
//! Prints one line per failing case and ends with `N passed, M failed`. Exit code 0 when the
//! suite ran (whatever it counted), 2 when it could not run.

use std::path::PathBuf;
use std::process::ExitCode;

use firebreak_conformance::{act, expressions, parser};

fn usage() -> ExitCode {
    eprintln!("usage: firebreak-conformance <expressions|parser|act> DIR [--sandbox S]");
    eprintln!("  DIR is a corpus directory such as ../shared/conformance/expressions");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (suite, dir, sandbox) = match args.as_slice() {
        [suite, dir] => (suite.as_str(), PathBuf::from(dir), None),
        [suite, dir, flag, s] if flag == "--sandbox" => {
            (suite.as_str(), PathBuf::from(dir), Some(s.clone()))
        }
        _ => return usage(),
    };
    let result = match suite {
        "expressions" => expressions::run(&dir),
        "parser" => parser::run(&dir),
        "act" => act::run(&dir, sandbox),
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
