//! `firebreak check`: validate workflow files, print every error as `path:line:col: message`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;

use crate::discover::read_workflows;
use crate::{style, Format};

#[derive(Serialize)]
struct FileReport {
    path: String,
    valid: bool,
    errors: Vec<ErrorReport>,
}

#[derive(Serialize)]
struct ErrorReport {
    line: u32,
    col: u32,
    message: String,
}

pub fn run(paths: &[PathBuf], format: Format) -> Result<ExitCode> {
    let inputs = if paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        paths.to_vec()
    };
    let files = read_workflows(&inputs)?;
    let mut reports = Vec::with_capacity(files.len());
    for file in &files {
        let parsed = firebreak_workflow::parse_workflow(&file.display, &file.source);
        let errors: Vec<ErrorReport> = parsed
            .diagnostics
            .iter()
            .map(|d| ErrorReport {
                line: d.line,
                col: d.col,
                message: d.message.clone(),
            })
            .collect();
        reports.push(FileReport {
            path: file.display.clone(),
            valid: errors.is_empty(),
            errors,
        });
    }
    let invalid = reports.iter().filter(|r| !r.valid).count();
    match format {
        Format::Json => {
            let doc = serde_json::json!({ "valid": invalid == 0, "files": reports });
            crate::outln!("{}", serde_json::to_string_pretty(&doc)?)?;
        }
        Format::Text => {
            for r in &reports {
                for e in &r.errors {
                    crate::outln!("{}:{}:{}: {}", r.path, e.line, e.col, e.message)?;
                }
            }
            let summary = format!(
                "{} workflow file{} checked, {} invalid",
                reports.len(),
                if reports.len() == 1 { "" } else { "s" },
                invalid
            );
            let summary = if invalid == 0 {
                style::green(&summary)
            } else {
                style::red(&summary)
            };
            eprintln!("{summary}");
        }
    }
    Ok(if invalid == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
