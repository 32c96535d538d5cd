//! Conformance harness for firebreak (a workspace member, never shipped in the binary).
//!
//! Runs firebreak against corpora written by others (see `../shared/conformance/README.md`).
//! Each suite is a function `run(dir) -> Tally` that prints one line per failing case; the
//! `firebreak-conformance` binary prints the closing `N passed, M failed` line, and the test
//! `tests/baseline.rs` fails when a pass count drops below the number recorded in
//! `baseline.txt` beside this crate's manifest.

pub mod act;
pub mod expressions;
pub mod parser;

use std::path::PathBuf;

/// Result of running one suite: failures are already printed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tally {
    pub passed: usize,
    pub failed: usize,
}

/// Where the shared corpora live: `$FIREBREAK_SHARED`, else `../shared` beside the repository.
pub fn shared_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FIREBREAK_SHARED") {
        return PathBuf::from(dir);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
}

/// The minimum pass count recorded for `suite` in `baseline.txt` (lines `suite = N`).
///
/// Raise a number when a suite improves; never lower it.
pub fn baseline(suite: &str) -> Result<usize, String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("baseline.txt");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == suite)
        .and_then(|(_, v)| v.trim().parse().ok())
        .ok_or_else(|| format!("{} has no line `{suite} = N`", path.display()))
}
