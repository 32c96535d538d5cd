//! Parse, validate and plan a realistic workflow (3 jobs, a 2×3 matrix with include/exclude,
//! ~20 steps, expressions throughout): the whole work `firebreak plan` does per file.
//!
//! `cargo bench -p firebreak-workflow --bench plan`; figures go to docs/benchmarks.md.

use criterion::{criterion_group, criterion_main, Criterion};
use firebreak_workflow::plan::{plan, Event};
use std::hint::black_box;
use std::sync::Arc;

/// The `firebreak` binary's allocator, so that the figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const WORKFLOW: &str = include_str!("realistic.yml");

fn event() -> Event {
    Event {
        name: "push".into(),
        payload: serde_json::json!({
            "ref": "refs/heads/main",
            "after": "0123456789abcdef0123456789abcdef01234567",
            "repository": { "full_name": "firebreak/firebreak", "name": "firebreak" }
        }),
        changed_files: Some(vec!["src/main.rs".into(), "Cargo.toml".into()]),
    }
}

fn bench(c: &mut Criterion) {
    let ev = event();
    // Fail loudly if the fixture stops being valid: a benchmark of an error path is no benchmark.
    let parsed = firebreak_workflow::parse_workflow(".github/workflows/ci.yml", WORKFLOW);
    assert!(
        parsed.diagnostics.is_empty(),
        "fixture is invalid: {:?}",
        parsed.diagnostics
    );

    c.bench_function("parse", |b| {
        b.iter(|| {
            firebreak_workflow::parse_workflow(".github/workflows/ci.yml", black_box(WORKFLOW))
        })
    });
    c.bench_function("parse_validate_plan", |b| {
        b.iter(|| {
            let parsed =
                firebreak_workflow::parse_workflow(".github/workflows/ci.yml", black_box(WORKFLOW));
            let wf = parsed.workflow.expect("valid fixture");
            plan(&[(".github/workflows/ci.yml", Arc::new(wf))], &ev)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
