//! Architecture invariants from ARCHITECTURE.md, checked on the manifests so that a change
//! that breaks one fails CI instead of slipping in.

use std::path::Path;

fn dependencies(krate: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(krate)
        .join("Cargo.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut in_deps = false;
    let mut deps = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if in_deps {
            if let Some(name) = line
                .split(['=', '.', ' '])
                .next()
                .filter(|n| !n.is_empty() && !n.starts_with('#'))
            {
                deps.push(name.to_string());
            }
        }
    }
    deps
}

const IO_CRATES: &[&str] = &[
    "tokio",
    "sqlx",
    "reqwest",
    "hyper",
    "axum",
    "octocrab",
    "async-std",
];

#[test]
fn workflow_language_crates_stay_pure() {
    for krate in ["firebreak-workflow", "firebreak-expr"] {
        let deps = dependencies(krate);
        assert!(
            !deps.is_empty() || krate == "firebreak-expr",
            "{krate}: no dependencies parsed"
        );
        for bad in IO_CRATES {
            assert!(
                !deps.iter().any(|d| d == bad),
                "{krate} must stay pure (no I/O, no async runtime) but depends on {bad}"
            );
        }
    }
}

#[test]
fn expression_language_knows_nothing_of_workflows() {
    let deps = dependencies("firebreak-expr");
    assert!(
        !deps.iter().any(|d| d.starts_with("firebreak")),
        "firebreak-expr depends on {deps:?}"
    );
}

#[test]
fn only_the_binary_uses_anyhow() {
    for krate in ["firebreak-expr", "firebreak-workflow", "firebreak-runner"] {
        let deps = dependencies(krate);
        assert!(
            !deps.iter().any(|d| d == "anyhow"),
            "{krate} is a library: typed errors, not anyhow"
        );
    }
}
