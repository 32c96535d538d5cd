//! Finding and reading workflow files (explicit files, a `.github/workflows` folder, or a
//! repository root), and parsing them with the local reusable workflows they call, so that
//! `check`, `plan` and `run` judge a workflow alike.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use indexmap::IndexMap;

/// A workflow file read from disk, with the name used in messages.
pub struct WorkflowFile {
    /// The path as the user should see it in `path:line:col` messages.
    pub display: String,
    pub path: PathBuf,
    /// The file's text, or why it has none (it is not UTF-8): an error in the file, reported
    /// as the parser's are, not a file that could not be read.
    source: Result<String, firebreak_workflow::Diagnostic>,
}

impl WorkflowFile {
    /// The file parsed as [`parse_with_local_calls`] does, shown as `shown` in messages; a
    /// file that is not UTF-8 is an invalid workflow whose one error names the first bad byte.
    pub fn parse(&self, repo: &Path, shown: &str) -> ParsedFile {
        match &self.source {
            Ok(text) => parse_with_local_calls(repo, shown, text),
            Err(d) => ParsedFile {
                parsed: firebreak_workflow::Parsed {
                    workflow: None,
                    diagnostics: vec![firebreak_workflow::Diagnostic {
                        file: shown.to_string(),
                        ..d.clone()
                    }],
                    warnings: Vec::new(),
                },
                called: IndexMap::new(),
            },
        }
    }
}

/// What reading the command line's paths gave: the files read, and each path (or file) that
/// could not be, with why.
pub struct Read {
    pub files: Vec<WorkflowFile>,
    pub unreadable: Vec<(String, anyhow::Error)>,
}

impl Read {
    /// The files, or the first read error (for commands that need every file).
    pub fn all(self) -> Result<Vec<WorkflowFile>> {
        match self.unreadable.into_iter().next() {
            Some((_, e)) => Err(e),
            None => Ok(self.files),
        }
    }
}

fn is_workflow_file(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("yml" | "yaml"))
}

/// The workflow files one command-line path stands for, sorted by path.
///
/// A file is taken as it is. A folder holding `.github/workflows` (a repository), or a
/// `.github` folder holding `workflows`, means those workflows; any other folder means the
/// `*.yml`/`*.yaml` files directly inside it.
fn workflow_paths(input: &Path) -> Result<Vec<PathBuf>> {
    let meta =
        std::fs::metadata(input).with_context(|| format!("cannot read {}", input.display()))?;
    if meta.is_file() {
        return Ok(vec![input.to_path_buf()]);
    }
    // A repository, or its `.github` folder: the workflows folder inside.
    let nested = input.join(".github/workflows");
    let inside_github = input.join("workflows");
    let dir = if nested.is_dir() {
        nested
    } else if input.file_name().is_some_and(|n| n == ".github") && inside_github.is_dir() {
        inside_github
    } else {
        input.to_path_buf()
    };
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        // Every `*.yml`/`*.yaml` entry but folders: one that cannot be read (a dangling link,
        // a FIFO) is reported as such, not passed over.
        .filter(|p| is_workflow_file(p) && !p.is_dir())
        .collect();
    if found.is_empty() {
        return Err(anyhow!(
            "no workflow files (*.yml, *.yaml) in {}; pass a repository, its .github/workflows folder or a file",
            dir.display()
        ));
    }
    found.sort();
    Ok(found)
}

fn display(path: &Path) -> String {
    path.strip_prefix("./")
        .unwrap_or(path)
        .display()
        .to_string()
}

fn read_file(path: PathBuf) -> Result<WorkflowFile> {
    // Not opened unless it is a regular file: reading a FIFO would wait for a writer.
    let display = display(&path);
    let meta = std::fs::metadata(&path).with_context(|| format!("cannot read {display}"))?;
    if !meta.is_file() {
        return Err(anyhow!("cannot read {display}: not a regular file"));
    }
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {display}"))?;
    let source = firebreak_workflow::decode_source(&display, &bytes).map(str::to_string);
    Ok(WorkflowFile {
        display,
        path,
        source,
    })
}

/// Reads the workflow files the command-line paths stand for. A path or file that cannot be
/// read is listed in [`Read::unreadable`] and the others are still read; the display name is
/// the path as given (relative stays relative).
pub fn read_workflows(inputs: &[PathBuf]) -> Read {
    let mut out = Read {
        files: Vec::new(),
        unreadable: Vec::new(),
    };
    // A file named twice (`check a.yml ./a.yml`, or a file and its folder) is read once.
    let mut seen = std::collections::HashSet::new();
    for input in inputs {
        match workflow_paths(input) {
            Ok(paths) => {
                for path in paths {
                    let key = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
                    if !seen.insert(key) {
                        continue;
                    }
                    let shown = display(&path);
                    match read_file(path) {
                        Ok(f) => out.files.push(f),
                        Err(e) => out.unreadable.push((shown, e)),
                    }
                }
            }
            Err(e) => out.unreadable.push((display(input), e)),
        }
    }
    out
}

/// The repository a workflow path belongs to: the folder above `.github/workflows` for a
/// workflow file or folder, else the folder itself (a file's own folder).
pub fn repo_root(path: &Path) -> PathBuf {
    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    for anc in abs.ancestors() {
        if anc.ends_with(".github/workflows") {
            if let Some(root) = anc.parent().and_then(|p| p.parent()) {
                return root.to_path_buf();
            }
        }
    }
    if abs.is_file() {
        abs.parent().map(|p| p.to_path_buf()).unwrap_or(abs)
    } else {
        abs
    }
}

/// A workflow parsed as GitHub parses it, with the local reusable workflows it calls.
pub struct ParsedFile {
    pub parsed: firebreak_workflow::Parsed,
    /// Each local workflow it calls (`./.github/workflows/x.yml`), directly or through
    /// another, parsed, by its `uses:` string.
    pub called: IndexMap<String, Arc<firebreak_workflow::Workflow>>,
}

/// The file a diagnostic of the workflow shown as `shown` is in: `shown` itself, or, for an
/// error inside a local workflow it calls, that workflow's path in the repository
/// (`.github/workflows/x.yml`).
pub fn diagnostic_file<'a>(shown: &'a str, d: &'a firebreak_workflow::Diagnostic) -> &'a str {
    if d.file.is_empty() || d.file == shown {
        shown
    } else {
        d.file.strip_prefix("./").unwrap_or(&d.file)
    }
}

/// A diagnostic of the workflow shown as `shown` as one line, naming the file it is in (see
/// [`diagnostic_file`] and [`crate::style::diagnostic_line`]); one in a workflow it calls is
/// located at the call, naming where in the called file it is.
pub fn diagnostic_line(shown: &str, d: &firebreak_workflow::Diagnostic, warning: bool) -> String {
    let (file, line, col, message) = located(shown, d);
    crate::style::diagnostic_line(file, line, col, &message, warning)
}

/// Where to report `d` (a diagnostic of the workflow shown as `shown`) and what to say: an
/// error in a called workflow at the `uses:` that calls it, with its own place in the message.
pub fn located<'a>(
    shown: &'a str,
    d: &'a firebreak_workflow::Diagnostic,
) -> (&'a str, u32, u32, std::borrow::Cow<'a, str>) {
    match &d.called_from {
        Some(c) => {
            let caller = if c.file.is_empty() || c.file == shown {
                shown
            } else {
                c.file.strip_prefix("./").unwrap_or(&c.file)
            };
            let place = match d.line {
                0 => diagnostic_file(shown, d).to_string(),
                _ => format!("{}:{}:{}", diagnostic_file(shown, d), d.line, d.col),
            };
            let message = format!("in the called workflow {place}: {}", d.message);
            (caller, c.line, c.col, message.into())
        }
        None => (
            diagnostic_file(shown, d),
            d.line,
            d.col,
            d.message.as_str().into(),
        ),
    }
}

/// Parses `source` (shown as `shown` in messages) with the local reusable workflows it calls
/// (`uses: ./.github/workflows/x.yml`, directly or through another), read from `repo`, and
/// checks each such call (inputs, secrets, outputs, permissions) as GitHub does. A local
/// workflow the repository lacks is an error at its `uses:` when `repo` has a
/// `.github/workflows` folder (else the call could not be looked up, and is left unchecked,
/// as a remote one — `owner/repo/…@ref` — always is).
pub fn parse_with_local_calls(repo: &Path, shown: &str, source: &str) -> ParsedFile {
    let mut parsed = firebreak_workflow::parse_workflow(shown, source);
    let mut called = IndexMap::new();
    if let Some(w) = &parsed.workflow {
        if !w
            .jobs
            .iter()
            .any(|j| matches!(j.kind, firebreak_workflow::JobKind::Reusable(_)))
        {
            return ParsedFile { parsed, called };
        }
        let mut sources = IndexMap::new();
        reusable_sources(repo, w, &mut sources, &mut called, 0);
        let opts = firebreak_workflow::ParseOptions {
            reusable_workflows: Some(sources),
            unresolved_reusable: if repo.join(".github/workflows").is_dir() {
                firebreak_workflow::UnresolvedReusable::ErrorIfLocal
            } else {
                firebreak_workflow::UnresolvedReusable::Skip
            },
            ..Default::default()
        };
        let skipped = matches!(
            opts.unresolved_reusable,
            firebreak_workflow::UnresolvedReusable::Skip
        );
        parsed = firebreak_workflow::parse_workflow_with(shown, source, &opts);
        if skipped {
            note_unchecked_local_calls(shown, &mut parsed);
        }
    }
    ParsedFile { parsed, called }
}

/// A warning at each local call (`uses: ./.github/workflows/x.yml`) that could not be
/// checked because the file was read outside a repository's `.github/workflows`, so that
/// silence does not pass for a checked call.
fn note_unchecked_local_calls(shown: &str, parsed: &mut firebreak_workflow::Parsed) {
    let Some(w) = &parsed.workflow else {
        return;
    };
    for job in &w.jobs {
        let firebreak_workflow::JobKind::Reusable(r) = &job.kind else {
            continue;
        };
        if firebreak_workflow::local_uses_path(&r.uses).is_some() && r.called.is_none() {
            parsed.warnings.push(firebreak_workflow::Diagnostic::new(
                shown,
                Some(r.uses_pos),
                format!(
                    "the call to {} was not checked: no .github/workflows folder holds this file (check the repository instead)",
                    r.uses
                ),
            ));
        }
    }
}

/// Collects the sources of the local workflows `wf` calls that `repo` holds, recursively up
/// to GitHub's nesting limit, and in `called` each one that parses.
fn reusable_sources(
    repo: &Path,
    wf: &firebreak_workflow::Workflow,
    acc: &mut IndexMap<String, String>,
    called: &mut IndexMap<String, Arc<firebreak_workflow::Workflow>>,
    depth: usize,
) {
    for job in &wf.jobs {
        let firebreak_workflow::JobKind::Reusable(r) = &job.kind else {
            continue;
        };
        if acc.contains_key(&r.uses) {
            continue;
        }
        let Some(rel) = firebreak_workflow::local_uses_path(&r.uses) else {
            continue;
        };
        let Ok(src) = std::fs::read_to_string(repo.join(rel)) else {
            continue;
        };
        let parsed = firebreak_workflow::parse_workflow(&r.uses, &src).workflow;
        acc.insert(r.uses.clone(), src);
        if let Some(c) = parsed {
            let c = Arc::new(c);
            called.insert(r.uses.clone(), c.clone());
            if depth < firebreak_workflow::DEFAULT_MAX_NESTED_REUSABLE_DEPTH {
                reusable_sources(repo, &c, acc, called, depth + 1);
            }
        }
    }
}
