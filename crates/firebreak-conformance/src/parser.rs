//! The `parser` suite: GitHub's workflow-parser reader tests (`DIR/reader/*.yml`).
//!
//! Each test file holds YAML documents separated by `---` lines: options, the workflow,
//! optional reusable-workflow name/content pairs (only for files named `*reusable*`), and the
//! expected result (JSON: the parsed template or `{"errors": [{"Message": …}]}`).
//! A case passes when firebreak accepts/rejects like GitHub and, for rejected workflows, our
//! first error is on the same line as GitHub's first error. Tests listed in
//! `DIR/skipped-tests.txt` are not run.

use std::collections::HashSet;
use std::path::Path;

use anyhow::Context as _;
use firebreak_workflow::{parse_workflow_with, ParseOptions, PermissionsPolicy};

struct Case {
    options: String,
    workflow: String,
    reusable: Vec<(String, String)>,
    expected: String,
}

/// Splits like GitHub's harness: on `---` lines that follow a newline.
fn split_docs(text: &str) -> Vec<String> {
    let text = text.replace("\r\n", "\n");
    text.split("\n---\n").map(str::to_string).collect()
}

fn parse_case(name: &str, text: &str) -> anyhow::Result<Case> {
    let docs = split_docs(text);
    anyhow::ensure!(
        docs.len() >= 3,
        "{name}: expected at least 3 documents, found {}",
        docs.len()
    );
    let mut reusable = Vec::new();
    if name.contains("reusable") {
        let mut i = 2;
        while i + 1 < docs.len() - 1 {
            reusable.push((docs[i].trim().to_string(), docs[i + 1].clone()));
            i += 2;
        }
    }
    Ok(Case {
        options: docs[0].clone(),
        workflow: docs[1].clone(),
        reusable,
        expected: docs[docs.len() - 1].trim().to_string(),
    })
}

/// A top-level numeric option such as `max-depth: 5` from the options document.
fn option_number(options: &str, key: &str) -> Option<usize> {
    options.lines().find_map(|l| {
        l.strip_prefix(key)?
            .strip_prefix(':')?
            .split('#')
            .next()?
            .trim()
            .parse()
            .ok()
    })
}

/// `(line)` of a GitHub message `file (Line: L, Col: C): text`.
fn message_line(msg: &str) -> Option<u32> {
    let start = msg.find("(Line: ")? + 7;
    let rest = &msg[start..];
    let end = rest.find(',')?;
    rest[..end].trim().parse().ok()
}

pub fn run(dir: &Path) -> anyhow::Result<crate::Tally> {
    let reader = dir.join("reader");
    let skipped: HashSet<String> = std::fs::read_to_string(dir.join("skipped-tests.txt"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    let mut names: Vec<String> = std::fs::read_dir(&reader)
        .with_context(|| format!("reading {}", reader.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yml") || n.ends_with(".yaml"))
        .collect();
    names.sort();
    let mut tally = crate::Tally {
        passed: 0,
        failed: 0,
    };
    let (mut error_cases, mut error_line_ok, mut all_errors_exact) = (0usize, 0usize, 0usize);
    let (mut model_cases, mut model_ok) = (0usize, 0usize);
    for name in &names {
        if skipped.contains(name) && std::env::var_os("FIREBREAK_INCLUDE_SKIPPED").is_none() {
            continue;
        }
        let text = std::fs::read_to_string(reader.join(name))?;
        let case = parse_case(name, &text)?;
        let expected: serde_json::Value = serde_json::from_str(&case.expected)
            .with_context(|| format!("{name}: expected JSON"))?;
        let expected_errors: Vec<String> = expected
            .get("errors")
            .and_then(|e| e.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.get("Message")?.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let defaults = ParseOptions::default();
        let opts = ParseOptions {
            allow_background_steps: case.options.contains("allowBackgroundSteps: true"),
            reusable_workflows: Some(case.reusable.iter().cloned().collect()),
            unresolved_reusable: defaults.unresolved_reusable,
            max_depth: option_number(&case.options, "max-depth").unwrap_or(defaults.max_depth),
            max_file_size: option_number(&case.options, "max-file-size")
                .unwrap_or(defaults.max_file_size),
            max_nested_reusable_depth: option_number(
                &case.options,
                "max-nested-reusable-workflows-depth",
            )
            .unwrap_or(defaults.max_nested_reusable_depth),
            max_job_limit: option_number(&case.options, "max-job-limit"),
            permissions_policy: if case.options.contains("permissions-policy: Write") {
                PermissionsPolicy::Write
            } else {
                PermissionsPolicy::LimitedRead
            },
        };
        let file = format!(".github/workflows/{name}");
        let result = std::panic::catch_unwind(|| parse_workflow_with(&file, &case.workflow, &opts));
        let parsed = match result {
            Ok(p) => p,
            Err(_) => {
                println!("FAIL {name}: panicked");
                tally.failed += 1;
                continue;
            }
        };
        let ours: Vec<String> = parsed
            .diagnostics
            .iter()
            .map(|d| d.github_message())
            .collect();
        let outcome: Result<(), String> = if expected_errors.is_empty() {
            if ours.is_empty() {
                Ok(())
            } else {
                Err(format!("rejected a valid workflow: {}", ours.join(" | ")))
            }
        } else if ours.is_empty() {
            Err(format!(
                "accepted an invalid workflow; GitHub: {}",
                expected_errors[0]
            ))
        } else {
            error_cases += 1;
            let want = message_line(&expected_errors[0]);
            let got = parsed.diagnostics.first().map(|d| d.line);
            if ours == expected_errors {
                all_errors_exact += 1;
            } else if std::env::var_os("FIREBREAK_VERBOSE").is_some() {
                println!("note {name}: messages differ\n  GitHub: {expected_errors:?}\n  ours:   {ours:?}");
            }
            if want.is_none() || want == got {
                error_line_ok += 1;
                Ok(())
            } else {
                Err(format!(
                    "first error on another line; GitHub: {} ; ours: {}",
                    expected_errors[0], ours[0]
                ))
            }
        };
        if let (Some(wf), Some(jobs)) = (
            &parsed.workflow,
            expected.get("jobs").and_then(|j| j.as_array()),
        ) {
            model_cases += 1;
            match compare_jobs(wf, jobs) {
                Ok(()) => model_ok += 1,
                Err(e) => {
                    if std::env::var_os("FIREBREAK_VERBOSE").is_some() {
                        println!("note {name}: model differs: {e}");
                    }
                }
            }
        }
        match outcome {
            Ok(()) => tally.passed += 1,
            Err(reason) => {
                println!("FAIL {name}: {reason}");
                tally.failed += 1;
            }
        }
    }
    println!(
        "first-error line matches on {error_line_ok} of {error_cases} rejected workflows; all messages identical on {all_errors_exact}"
    );
    println!("job/step ids and if-conditions match GitHub's parsed template on {model_ok} of {model_cases} accepted workflows");
    Ok(tally)
}

/// Compares job ids/names/ifs and step ids/ifs with GitHub's parsed template (informational).
fn compare_jobs(
    wf: &firebreak_workflow::Workflow,
    expected: &[serde_json::Value],
) -> Result<(), String> {
    use firebreak_workflow::TokenKind;
    if wf.jobs.len() != expected.len() {
        return Err(format!(
            "{} jobs, GitHub has {}",
            wf.jobs.len(),
            expected.len()
        ));
    }
    for (job, want) in wf.jobs.iter().zip(expected) {
        let want_id = want.get("id").and_then(|v| v.as_str()).unwrap_or("");
        if job.id != want_id {
            return Err(format!("job id {} vs {want_id}", job.id));
        }
        let want_if = want
            .pointer("/if/expr")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        if job.if_condition != want_if {
            return Err(format!(
                "job {} if `{}` vs `{want_if}`",
                job.id, job.if_condition
            ));
        }
        if let Some(name) = want.get("name").and_then(|v| v.as_str()) {
            if let TokenKind::String(ours) = &job.name.kind {
                if ours != name {
                    return Err(format!("job {} name `{ours}` vs `{name}`", job.id));
                }
            }
        }
        let want_steps = want
            .get("steps")
            .and_then(|v| v.as_array())
            .cloned()
            .unwrap_or_default();
        let steps = job.steps();
        if steps.len() != want_steps.len() {
            return Err(format!(
                "job {}: {} steps vs {}",
                job.id,
                steps.len(),
                want_steps.len()
            ));
        }
        for (step, ws) in steps.iter().zip(&want_steps) {
            let wid = ws.get("id").and_then(|v| v.as_str()).unwrap_or("");
            if step.id != wid {
                return Err(format!("step id {} vs {wid}", step.id));
            }
            let wif = ws.pointer("/if/expr").and_then(|v| v.as_str());
            if step.if_condition.as_deref() != wif {
                return Err(format!(
                    "step {} if {:?} vs {wif:?}",
                    step.id, step.if_condition
                ));
            }
        }
    }
    Ok(())
}
