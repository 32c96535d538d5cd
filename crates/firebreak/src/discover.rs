//! Finding workflow files: explicit files, a `.github/workflows` folder, or a repository root.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// A workflow file read from disk, with the name used in messages.
pub struct WorkflowFile {
    /// The path as the user should see it in `path:line:col` messages.
    pub display: String,
    pub path: PathBuf,
    pub source: String,
}

fn is_workflow_file(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("yml" | "yaml"))
}

/// Expands the command-line paths into workflow files, sorted by path within each folder.
///
/// A file is taken as it is. A folder holding `.github/workflows` means that folder's
/// workflows; any other folder means the `*.yml`/`*.yaml` files directly inside it.
pub fn workflow_paths(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for input in inputs {
        let meta =
            std::fs::metadata(input).with_context(|| format!("cannot read {}", input.display()))?;
        if meta.is_file() {
            out.push(input.clone());
            continue;
        }
        let nested = input.join(".github/workflows");
        let dir = if nested.is_dir() {
            nested
        } else {
            input.clone()
        };
        let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("cannot list {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && is_workflow_file(p))
            .collect();
        if found.is_empty() {
            bail!(
                "no workflow files (*.yml, *.yaml) in {}; pass a repository, its .github/workflows folder or a file",
                dir.display()
            );
        }
        found.sort();
        out.extend(found);
    }
    Ok(out)
}

/// Reads each workflow file; the display name is the path as given (relative stays relative).
pub fn read_workflows(inputs: &[PathBuf]) -> Result<Vec<WorkflowFile>> {
    workflow_paths(inputs)?
        .into_iter()
        .map(|path| {
            let bytes =
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let source = String::from_utf8(bytes)
                .with_context(|| format!("{} is not valid UTF-8", path.display()))?;
            let display = path
                .strip_prefix("./")
                .unwrap_or(&path)
                .display()
                .to_string();
            Ok(WorkflowFile {
                display,
                path,
                source,
            })
        })
        .collect()
}
