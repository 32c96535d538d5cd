//! nektos/act's host test cases, run through this build's `firebreak run`, must hold the pass
//! count recorded in `crates/firebreak-conformance/baseline.txt` (`act = N`).
//!
//! The corpus is read from `../shared` (or `$FIREBREAK_SHARED`); a missing corpus fails the
//! test rather than skipping it.

use std::path::{Path, PathBuf};

use firebreak_conformance::act::{run_with, ActOptions};
use firebreak_conformance::shared_dir;

fn baseline(suite: &str) -> usize {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../firebreak-conformance/baseline.txt");
    let text = std::fs::read_to_string(&path).expect("baseline.txt is readable");
    text.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == suite)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("baseline.txt has no line `{suite} = N`"))
}

fn check(sandbox: &str) {
    let dir = shared_dir().join("conformance/act");
    let opts = ActOptions {
        binary: PathBuf::from(env!("CARGO_BIN_EXE_firebreak")),
        sandbox: Some(sandbox.to_string()),
        verbose: false,
    };
    let tally = run_with(&dir, &opts).unwrap_or_else(|e| panic!("act suite could not run: {e:#}"));
    let min = baseline("act");
    println!("act --sandbox {sandbox}: {} passed, {} failed (baseline {min})", tally.passed, tally.failed);
    assert!(tally.passed >= min, "act --sandbox {sandbox}: {} passed, below the baseline of {min}", tally.passed);
}

#[test]
fn act_host_cases_pass_on_the_host_sandbox() {
    check("host");
}

#[test]
fn act_host_cases_pass_in_the_namespace_sandbox() {
    check("namespace");
}
