//! The expressions suite: GitHub's shared expression-language tests
//! (`../shared/conformance/expressions/*.json`, from actions/languageservices).
//!
//! Each case is parsed with the case's context names as the only allowed named values, then
//! evaluated against those contexts. Error cases pass when firebreak fails in the same stage
//! (lexing, parsing or evaluation) with a message that contains the expected text, as
//! GitHub's own runner of these tests checks. Results pass when the kind matches and the value
//! is JSON-equal (numbers compared as doubles, so `-0` equals `0`).
//! Cases marked `skip: ["typescript"]` are GitHub-runner behaviour and are run too.

use std::path::Path;

use anyhow::Context as _;
use firebreak_expr::{evaluate, parse_allowed, Allowed, Context, Value};

/// Runs every case in `dir/*.json`; prints one line per failing case.
pub fn run(dir: &Path) -> anyhow::Result<crate::Tally> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    if files.is_empty() {
        anyhow::bail!("no *.json cases in {}", dir.display());
    }
    let mut tally = crate::Tally {
        passed: 0,
        failed: 0,
    };
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let groups: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", file.display()))?;
        let stem = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        for (group, cases) in &groups {
            let Some(cases) = cases.as_array() else {
                continue;
            };
            for (i, case) in cases.iter().enumerate() {
                match check(case) {
                    Ok(()) => tally.passed += 1,
                    Err(why) => {
                        tally.failed += 1;
                        let expr = case
                            .get("expr")
                            .and_then(|e| e.as_str())
                            .unwrap_or_default();
                        println!("FAIL {stem}/{group}#{i} {expr:?}: {why}");
                    }
                }
            }
        }
    }
    Ok(tally)
}

fn check(case: &serde_json::Value) -> Result<(), String> {
    let expr = case
        .get("expr")
        .and_then(|e| e.as_str())
        .ok_or("case without expr")?;
    let mut contexts = Contexts(Vec::new());
    if let Some(serde_json::Value::Object(map)) = case.get("contexts") {
        for (k, v) in map {
            contexts.0.push((k.clone(), Value::from_json(v)));
        }
    }
    let names: Vec<&str> = contexts.0.iter().map(|(k, _)| k.as_str()).collect();
    let allowed = Allowed {
        named_values: &names,
        functions: &[],
    };
    let expected_err = case.get("err");
    let err_kind = expected_err
        .and_then(|e| e.get("kind"))
        .and_then(|k| k.as_str());
    let err_text = expected_err
        .and_then(|e| e.get("value"))
        .and_then(|k| k.as_str())
        .unwrap_or_default();

    let parsed = parse_allowed(expr, &allowed);
    let parsed = match (parsed, err_kind) {
        (Err(e), Some(kind @ ("lexing" | "parsing"))) => {
            let got = if e.is_lexical() { "lexing" } else { "parsing" };
            let msg = e.to_string();
            if got != kind {
                return Err(format!("expected a {kind} error, got a {got} error: {msg}"));
            }
            if !msg.contains(err_text) {
                return Err(format!(
                    "expected error containing {err_text:?}, got {msg:?}"
                ));
            }
            return Ok(());
        }
        (Err(e), _) => return Err(format!("unexpected parse error: {e}")),
        (Ok(_), Some(kind @ ("lexing" | "parsing"))) => {
            return Err(format!(
                "expected a {kind} error ({err_text:?}), but it parsed"
            ));
        }
        (Ok(p), _) => p,
    };

    let result = evaluate(&parsed, &contexts);
    match (result, err_kind) {
        (Err(e), Some("evaluation")) => {
            let msg = e.to_string();
            if msg.contains(err_text) {
                Ok(())
            } else {
                Err(format!(
                    "expected error containing {err_text:?}, got {msg:?}"
                ))
            }
        }
        (Err(e), _) => Err(format!("unexpected evaluation error: {e}")),
        (Ok(v), Some(kind)) => Err(format!(
            "expected a {kind} error ({err_text:?}), got {}",
            show(&v)
        )),
        (Ok(v), None) => {
            let expected = case.get("result").ok_or("case without result or err")?;
            let kind = expected
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or_default();
            let value = expected.get("value").unwrap_or(&serde_json::Value::Null);
            if v.kind_name() != kind {
                return Err(format!(
                    "expected {kind} {value}, got {} {}",
                    v.kind_name(),
                    show(&v)
                ));
            }
            if !same(&v, value) {
                return Err(format!("expected {value}, got {}", show(&v)));
            }
            Ok(())
        }
    }
}

/// The case's contexts, looked up case-insensitively.
struct Contexts(Vec<(String, Value)>);

impl Context for Contexts {
    fn named_value(&self, name: &str) -> Option<Value> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::Number(n) if !n.is_finite() => v.to_coerced_string(),
        _ => v.to_json().to_string(),
    }
}

fn same(v: &Value, j: &serde_json::Value) -> bool {
    match (v, j) {
        (Value::Null, serde_json::Value::Null) => true,
        (Value::Bool(a), serde_json::Value::Bool(b)) => a == b,
        (Value::Number(a), serde_json::Value::Number(b)) => b.as_f64().is_some_and(|b| *a == b),
        (Value::String(a), serde_json::Value::String(b)) => a == b,
        (Value::Array(a), serde_json::Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y))
        }
        (Value::Object(a), serde_json::Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .zip(b)
                    .all(|((ka, va), (kb, vb))| ka == kb && same(va, vb))
        }
        _ => false,
    }
}
