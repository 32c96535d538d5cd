//! `firebreak check`: validate workflow files, print every error as `path:line:col: message`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;

use crate::discover::{diagnostic_file, read_workflows, repo_root};
use crate::{style, Format};

#[derive(Serialize)]
struct FileReport {
    path: String,
    valid: bool,
    errors: Vec<ErrorReport>,
    /// What GitHub's parser accepts but GitHub.com refuses at run time; not counted as invalid.
    warnings: Vec<ErrorReport>,
}

#[derive(Serialize)]
struct ErrorReport {
    /// Set when the error is in a local workflow the file calls (its repository path).
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<String>,
    line: u32,
    col: u32,
    message: String,
    /// With `file`: the `uses:` in this file that calls it.
    #[serde(skip_serializing_if = "Option::is_none")]
    called_from: Option<firebreak_workflow::CallSite>,
    /// The line as text output shows it.
    #[serde(skip)]
    text: String,
}

#[derive(Serialize)]
struct Unreadable {
    path: String,
    error: String,
}

pub fn run(paths: &[PathBuf], format: Format) -> Result<ExitCode> {
    let inputs = if paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        paths.to_vec()
    };
    // A file that cannot be read is reported with the others' errors, not instead of them.
    let read = read_workflows(&inputs);
    let mut reports = Vec::with_capacity(read.files.len());
    for file in &read.files {
        let root = repo_root(&file.path);
        let parsed = file.parse(&root, &file.display).parsed;
        let report = |list: &[firebreak_workflow::Diagnostic], warning: bool| -> Vec<ErrorReport> {
            list.iter()
                .map(|d| ErrorReport {
                    file: Some(diagnostic_file(&file.display, d))
                        .filter(|f| *f != file.display)
                        .map(str::to_string),
                    line: d.line,
                    col: d.col,
                    message: d.message.clone(),
                    called_from: d.called_from.clone(),
                    text: crate::discover::diagnostic_line(&file.display, d, warning),
                })
                .collect()
        };
        let errors = report(&parsed.diagnostics, false);
        reports.push(FileReport {
            path: file.display.clone(),
            valid: errors.is_empty(),
            errors,
            warnings: report(&parsed.warnings, true),
        });
    }
    let unreadable: Vec<Unreadable> = read
        .unreadable
        .iter()
        .map(|(path, e)| Unreadable {
            path: path.clone(),
            error: format!("{e:#}"),
        })
        .collect();
    let invalid = reports.iter().filter(|r| !r.valid).count();
    match format {
        Format::Json => {
            let doc = serde_json::json!({
                "valid": invalid == 0 && unreadable.is_empty(),
                "files": reports,
                "unreadable": unreadable,
            });
            crate::outln!("{}", serde_json::to_string_pretty(&doc)?)?;
        }
        Format::Text => {
            for r in &reports {
                for e in r.errors.iter().chain(&r.warnings) {
                    crate::outln!("{}", e.text)?;
                }
            }
            for u in &unreadable {
                eprintln!("{}: {}", style::error_label(), u.error);
            }
            let mut summary = format!(
                "{} workflow file{} checked, {} invalid",
                reports.len(),
                if reports.len() == 1 { "" } else { "s" },
                invalid
            );
            if !unreadable.is_empty() {
                summary.push_str(&format!(", {} unreadable", unreadable.len()));
            }
            let warnings: usize = reports.iter().map(|r| r.warnings.len()).sum();
            if warnings > 0 {
                summary.push_str(&format!(
                    ", {warnings} warning{}",
                    if warnings == 1 { "" } else { "s" }
                ));
            }
            let summary = if invalid == 0 && unreadable.is_empty() {
                style::err_green(&summary)
            } else {
                style::err_red(&summary)
            };
            eprintln!("{summary}");
        }
    }
    Ok(if !unreadable.is_empty() {
        ExitCode::from(2)
    } else if invalid == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
