//! Fails when a conformance pass count drops below the number recorded in `baseline.txt`.
//!
//! `baseline.txt` holds lines `suite = N`. Raise a number when the suite improves; never
//! lower it. The corpora are read from `../shared` (or `$FIREBREAK_SHARED`); a missing corpus
//! fails the test rather than skipping it, so CI can never pass without running the suite.

use firebreak_conformance::{baseline, expressions, parser, shared_dir, Tally};

fn check(suite: &str, tally: anyhow::Result<Tally>) {
    let tally = tally.unwrap_or_else(|e| panic!("{suite} suite could not run: {e:#}"));
    let min = baseline(suite).unwrap_or_else(|e| panic!("{e}"));
    println!(
        "{suite}: {} passed, {} failed (baseline {min})",
        tally.passed, tally.failed
    );
    assert!(
        tally.passed >= min,
        "{suite}: {} passed, below the recorded baseline of {min}",
        tally.passed
    );
}

#[test]
fn expressions_conformance_holds_baseline() {
    let dir = shared_dir().join("conformance/expressions");
    check("expressions", expressions::run(&dir));
}

#[test]
fn parser_conformance_holds_baseline() {
    let dir = shared_dir().join("conformance/workflow-parser");
    check("parser", parser::run(&dir));
}
