//! Source positions and diagnostics.

use std::fmt;

use serde::Serialize;

/// A 1-based line/column position in a workflow file (columns count characters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl Pos {
    pub const fn new(line: u32, col: u32) -> Self {
        Pos { line, col }
    }
}

/// GitHub truncates error messages (with their location prefix) to this many characters.
pub const MAX_MESSAGE_LENGTH: usize = 500;

/// One error found while reading a workflow, located at the start of the offending token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub file: String,
    /// 1-based line; 0 when the error has no position (e.g. an empty file).
    pub line: u32,
    /// 1-based column; 0 when the error has no position.
    pub col: u32,
    pub message: String,
    /// For an error in a called workflow: the `uses:` in the file being read that calls it
    /// (through others, when calls nest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub called_from: Option<CallSite>,
}

/// Where a workflow calls another (`jobs.<id>.uses`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CallSite {
    pub file: String,
    pub line: u32,
    pub col: u32,
}

impl Diagnostic {
    pub fn new(file: &str, pos: Option<Pos>, message: impl Into<String>) -> Self {
        let (line, col) = pos.map_or((0, 0), |p| (p.line, p.col));
        Diagnostic {
            file: file.to_string(),
            line,
            col,
            message: message.into(),
            called_from: None,
        }
    }

    /// The message as GitHub prints it: `file (Line: L, Col: C): message` (an error in a
    /// called workflow prefixed `In caller (Line: L, Col: C): Error from called workflow `),
    /// cut to GitHub's maximum of 500 characters (then ending in `[...]`).
    pub fn github_message(&self) -> String {
        let mut full = if self.file.is_empty() {
            self.message.clone()
        } else if self.line == 0 {
            format!("{}: {}", self.file, self.message)
        } else {
            format!(
                "{} (Line: {}, Col: {}): {}",
                self.file, self.line, self.col, self.message
            )
        };
        if let Some(c) = &self.called_from {
            full = format!(
                "In {} (Line: {}, Col: {}): Error from called workflow {full}",
                c.file, c.line, c.col
            );
        }
        if full.chars().count() > MAX_MESSAGE_LENGTH {
            let mut cut: String = full.chars().take(MAX_MESSAGE_LENGTH).collect();
            cut.push_str("[...]");
            return cut;
        }
        full
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.file.is_empty() {
            return f.write_str(&self.message);
        }
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.col, self.message
        )
    }
}

impl std::error::Error for Diagnostic {}

/// Collects diagnostics in the order they are found.
#[derive(Debug, Default)]
pub(crate) struct Diags {
    pub(crate) list: Vec<Diagnostic>,
    /// What GitHub's parser accepts but GitHub.com refuses or ignores later.
    pub(crate) warnings: Vec<Diagnostic>,
}

impl Diags {
    pub(crate) fn error(&mut self, file: &str, pos: Option<Pos>, message: impl Into<String>) {
        self.list.push(Diagnostic::new(file, pos, message));
    }
    pub(crate) fn warn(&mut self, file: &str, pos: Option<Pos>, message: impl Into<String>) {
        self.warnings.push(Diagnostic::new(file, pos, message));
    }
    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }
}
