//! Runs the `plan` benchmark's work a fixed number of times, for profilers (callgrind counts
//! instructions exactly, whatever the machine's load):
//!
//! ```text
//! cargo build --release -p firebreak-workflow --example parse_profile
//! valgrind --tool=callgrind target/release/examples/parse_profile plan 100
//! ```
//!
//! The first argument is `parse` (YAML → validated model) or `plan` (parse + plan); the second
//! how many times. Instructions per iteration: the difference between two counts, divided by
//! the difference of iterations (removes start-up costs).

use firebreak_workflow::plan::{plan, Event};
use std::hint::black_box;
use std::sync::Arc;

/// The `firebreak` binary's allocator, so that the figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const WORKFLOW: &str = include_str!("../benches/realistic.yml");

fn main() {
    let mut args = std::env::args().skip(1);
    let what = args.next().unwrap_or_else(|| "plan".to_string());
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(100);
    let ev = Event {
        name: "push".into(),
        payload: serde_json::json!({
            "ref": "refs/heads/main",
            "after": "0123456789abcdef0123456789abcdef01234567",
            "repository": { "full_name": "firebreak/firebreak", "name": "firebreak" }
        }),
        changed_files: Some(vec!["src/main.rs".into(), "Cargo.toml".into()]),
    };
    for _ in 0..n {
        let parsed =
            firebreak_workflow::parse_workflow(".github/workflows/ci.yml", black_box(WORKFLOW));
        if what == "plan" {
            let Some(wf) = parsed.workflow else {
                eprintln!("fixture is invalid: {:?}", parsed.diagnostics);
                std::process::exit(1);
            };
            black_box(plan(&[(".github/workflows/ci.yml", Arc::new(wf))], &ev));
        } else {
            black_box(parsed);
        }
    }
}
