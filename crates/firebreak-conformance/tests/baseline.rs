//! Fails when a conformance pass count drops below the number recorded in `baseline.txt`.
//!
//! `baseline.txt` holds lines `suite = N`. Raise a number when the suite improves; never
//! lower it. The corpora are read from `../shared` (or `$FIREBREAK_SHARED`); a missing corpus
//! fails the test rather than skipping it, so CI can never pass without running the suite.

use std::path::Path;

use firebreak_conformance::{expressions, parser, shared_dir, Tally};

fn baseline(suite: &str) -> usize {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("baseline.txt");
    let text = std::fs::read_to_string(&path).expect("baseline.txt is readable");
    text.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == suite)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("baseline.txt has no line `{suite} = N`"))
}

fn check(suite: &str, tally: anyhow::Result<Tally>) {
    let tally = tally.unwrap_or_else(|e| panic!("{suite} suite could not run: {e:#}"));
    let min = baseline(suite);
    println!("{suite}: {} passed, {} failed (baseline {min})", tally.passed, tally.failed);
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
