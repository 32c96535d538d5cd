//! nektos/act's host test cases, run through this build's `firebreak run`, must hold the pass
//! count recorded in `crates/firebreak-conformance/baseline.txt` (`act = N`).
//!
//! The corpus is read from `../shared` (or `$FIREBREAK_SHARED`); a missing corpus fails the
//! test rather than skipping it.

use std::path::PathBuf;

use firebreak_conformance::act::{run_with, ActOptions};
use firebreak_conformance::{baseline, shared_dir};

fn check(sandbox: &str) {
    let dir = shared_dir().join("conformance/act");
    let opts = ActOptions {
        binary: PathBuf::from(env!("CARGO_BIN_EXE_firebreak")),
        sandbox: Some(sandbox.to_string()),
        verbose: false,
    };
    let tally = run_with(&dir, &opts).unwrap_or_else(|e| panic!("act suite could not run: {e:#}"));
    let min = baseline("act").unwrap_or_else(|e| panic!("{e}"));
    println!(
        "act --sandbox {sandbox}: {} passed, {} failed (baseline {min})",
        tally.passed, tally.failed
    );
    assert!(
        tally.passed >= min,
        "act --sandbox {sandbox}: {} passed, below the baseline of {min}",
        tally.passed
    );
}

#[test]
fn act_host_cases_pass_on_the_host_sandbox() {
    check("host");
}

#[test]
fn act_host_cases_pass_in_the_namespace_sandbox() {
    check("namespace");
}

/// The same cases, each job in its own QEMU microVM (TCG where KVM is not usable). Runs when
/// VM tests are on (`FIREBREAK_VM_TESTS=1`, as `scripts/test` sets after building the image).
#[test]
fn act_host_cases_pass_in_qemu_microvms() {
    if std::env::var_os("FIREBREAK_VM_TESTS").is_none_or(|v| v != "1") {
        eprintln!("SKIPPED: VM tests are opt-in: set FIREBREAK_VM_TESTS=1");
        return;
    }
    check("qemu");
}
