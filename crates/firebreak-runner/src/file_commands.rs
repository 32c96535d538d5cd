//! Environment files: `GITHUB_ENV`, `GITHUB_OUTPUT`, `GITHUB_STATE`,
//! `GITHUB_PATH` and `GITHUB_STEP_SUMMARY`, as GitHub's runner handles them.
//!
//! Before each step the runner creates a fresh, empty file for each, named
//! `<prefix><suffix>` in the file-command directory (prefixes `set_env_`,
//! `set_output_`, `save_state_`, `add_path_`, `step_summary_`), and points the
//! variables at them ([`StepFiles`]). After the step it reads them back:
//!
//! * ENV / OUTPUT / STATE ([`parse_key_values`]): lines split on `\n` (a
//!   trailing `\r` is kept, as on Linux). Empty lines are skipped. `NAME=VALUE`
//!   when `=` comes before any `<<`; `NAME<<DELIM` when `<<` comes first: the
//!   value is every following line up to a line equal to `DELIM`, joined with
//!   the newlines between them. Errors: empty name (`=value`, `<<EOF`), empty
//!   delimiter, no matching delimiter, delimiter line that is the file's last
//!   line without a newline *after more content*, and lines with neither `=`
//!   nor `<<`. (A value can never contain its delimiter line: the first such
//!   line ends it — that is the "delimiter must not appear in the value" rule.)
//! * `NODE_OPTIONS` cannot be set through `GITHUB_ENV` ([`ENV_BLOCKLIST`]).
//! * PATH ([`parse_path_file`]): one directory per non-empty line;
//!   [`PathPrepends`] keeps them so that later additions come first in `PATH`,
//!   a re-added directory moves to the front.
//! * STEP_SUMMARY: the whole file (up to [`SUMMARY_SIZE_LIMIT`]) is masked
//!   line by line and appended to the [`JobSummary`].

use std::path::PathBuf;

use indexmap::IndexMap;

use crate::mask::Masker;
use crate::sandbox::{Sandbox, SandboxError};

/// Largest step summary accepted (1 MiB), as GitHub.
pub const SUMMARY_SIZE_LIMIT: usize = 1024 * 1024;

/// Names `GITHUB_ENV` may not set.
pub const ENV_BLOCKLIST: &[&str] = &["NODE_OPTIONS"];

/// An invalid environment file, with GitHub's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FileCommandError {
    /// `=value`: the name is empty.
    #[error("Invalid format '{line}'. Name must not be empty")]
    EmptyName {
        /// The offending line.
        line: String,
    },
    /// `NAME<<` or `<<DELIM`.
    #[error("Invalid format '{line}'. Name must not be empty and delimiter must not be empty")]
    EmptyHeredoc {
        /// The offending line.
        line: String,
    },
    /// The heredoc never ends.
    #[error("Invalid value. Matching delimiter not found '{delimiter}'")]
    MissingDelimiter {
        /// The expected delimiter.
        delimiter: String,
    },
    /// A heredoc value line is the last line and has no newline.
    #[error("Invalid value. EOF marker missing new line.")]
    MissingNewline,
    /// Neither `=` nor `<<`.
    #[error("Invalid format '{line}'")]
    InvalidFormat {
        /// The offending line.
        line: String,
    },
}

/// Reads the next line: returns (line, had_newline) and advances `pos`.
fn next_line<'t>(text: &'t str, pos: &mut usize) -> Option<(&'t str, bool)> {
    if *pos >= text.len() {
        return None;
    }
    let rest = &text[*pos..];
    match rest.find('\n') {
        Some(i) => {
            *pos += i + 1;
            Some((&rest[..i], true))
        }
        None => {
            *pos = text.len();
            Some((rest, false))
        }
    }
}

/// Parses a GITHUB_ENV / GITHUB_OUTPUT / GITHUB_STATE file. Later duplicates
/// win (the map keeps first-seen order).
pub fn parse_key_values(text: &str) -> Result<IndexMap<String, String>, FileCommandError> {
    // Collecting into an IndexMap keeps a key's first position and its last value.
    Ok(parse_key_value_pairs(text)?.into_iter().collect())
}

/// Like [`parse_key_values`] but keeps every pair in file order.
pub fn parse_key_value_pairs(text: &str) -> Result<Vec<(String, String)>, FileCommandError> {
    match parse_pairs_until_error(text) {
        (pairs, None) => Ok(pairs),
        (_, Some(e)) => Err(e),
    }
}

/// The pairs before the first malformed line, and that line's error. The
/// runner applies a file command's pairs one at a time as it reads them, so
/// the lines before a bad one still take effect (the step fails).
pub fn parse_pairs_until_error(text: &str) -> (Vec<(String, String)>, Option<FileCommandError>) {
    let mut pairs = Vec::new();
    let mut pos = 0;
    while let Some((line, _)) = next_line(text, &mut pos) {
        if line.is_empty() {
            continue;
        }
        let eq = line.find('=');
        let hd = line.find("<<");
        match (eq, hd) {
            (Some(e), h) if h.is_none_or(|h| e < h) => {
                let (k, v) = (&line[..e], &line[e + 1..]);
                if k.is_empty() {
                    return (
                        pairs,
                        Some(FileCommandError::EmptyName {
                            line: line.to_string(),
                        }),
                    );
                }
                pairs.push((k.to_string(), v.to_string()));
            }
            (_, Some(h)) => {
                let (k, delim) = (&line[..h], &line[h + 2..]);
                if k.is_empty() || delim.is_empty() {
                    return (
                        pairs,
                        Some(FileCommandError::EmptyHeredoc {
                            line: line.to_string(),
                        }),
                    );
                }
                let start = pos;
                let mut end = pos;
                loop {
                    let before = pos;
                    match next_line(text, &mut pos) {
                        None => {
                            let e = FileCommandError::MissingDelimiter {
                                delimiter: delim.to_string(),
                            };
                            return (pairs, Some(e));
                        }
                        Some((l, _)) if l == delim => break,
                        Some((_, false)) => return (pairs, Some(FileCommandError::MissingNewline)),
                        Some((l, true)) => end = before + l.len(),
                    }
                }
                let value = if end > start { &text[start..end] } else { "" };
                pairs.push((k.to_string(), value.to_string()));
            }
            _ => {
                let e = FileCommandError::InvalidFormat {
                    line: line.to_string(),
                };
                return (pairs, Some(e));
            }
        }
    }
    (pairs, None)
}

/// Parses a GITHUB_PATH file: one directory per non-empty line.
pub fn parse_path_file(text: &str) -> Vec<String> {
    text.split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// Directories added to `PATH` during a job, in the runner's order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathPrepends {
    dirs: Vec<String>,
}

impl PathPrepends {
    /// Nothing added yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a directory; one added before moves to the front.
    pub fn add(&mut self, dir: impl Into<String>) {
        let d = dir.into();
        self.dirs.retain(|x| *x != d);
        self.dirs.push(d);
    }

    /// The directories, most recently added first.
    pub fn ordered(&self) -> impl Iterator<Item = &str> {
        self.dirs.iter().rev().map(String::as_str)
    }

    /// True when nothing was added.
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }

    /// `PATH` for a step: the added directories, newest first, then `base`.
    pub fn apply(&self, base: &str) -> String {
        let mut parts: Vec<&str> = self.ordered().collect();
        if !base.is_empty() {
            parts.push(base);
        }
        parts.join(":")
    }
}

/// The job summary built from every step's `GITHUB_STEP_SUMMARY`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobSummary {
    text: String,
}

/// Why a step summary was not attached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SummaryError {
    /// Larger than [`SUMMARY_SIZE_LIMIT`].
    #[error("$GITHUB_STEP_SUMMARY upload aborted, supports content up to a size of {limit_kib}k, got {got_kib}k. For more information see: https://docs.github.com/actions/using-workflows/workflow-commands-for-github-actions#adding-a-markdown-summary")]
    TooLarge {
        /// The limit in KiB.
        limit_kib: usize,
        /// The file's size in KiB.
        got_kib: usize,
    },
}

impl JobSummary {
    /// An empty summary.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one step's summary file, masked line by line. Empty files add
    /// nothing. Returns whether anything was appended.
    pub fn append_step(&mut self, contents: &[u8], masker: &Masker) -> Result<bool, SummaryError> {
        if contents.is_empty() {
            return Ok(false);
        }
        if contents.len() > SUMMARY_SIZE_LIMIT {
            return Err(SummaryError::TooLarge {
                limit_kib: SUMMARY_SIZE_LIMIT / 1024,
                got_kib: contents.len() / 1024,
            });
        }
        let text = String::from_utf8_lossy(contents);
        for line in text.lines() {
            self.text.push_str(&masker.mask(line));
            self.text.push('\n');
        }
        Ok(true)
    }

    /// The summary so far (Markdown).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True when no step wrote a summary.
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }
}

/// One of the per-step files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileCommand {
    /// `GITHUB_ENV`.
    Env,
    /// `GITHUB_OUTPUT`.
    Output,
    /// `GITHUB_STATE`.
    State,
    /// `GITHUB_PATH`.
    Path,
    /// `GITHUB_STEP_SUMMARY`.
    StepSummary,
}

impl FileCommand {
    /// All of them.
    pub const ALL: [FileCommand; 5] = [
        FileCommand::Env,
        FileCommand::Output,
        FileCommand::State,
        FileCommand::Path,
        FileCommand::StepSummary,
    ];

    /// The environment variable pointing at the file.
    pub fn env_var(self) -> &'static str {
        match self {
            FileCommand::Env => "GITHUB_ENV",
            FileCommand::Output => "GITHUB_OUTPUT",
            FileCommand::State => "GITHUB_STATE",
            FileCommand::Path => "GITHUB_PATH",
            FileCommand::StepSummary => "GITHUB_STEP_SUMMARY",
        }
    }

    /// The file name prefix GitHub uses.
    pub fn prefix(self) -> &'static str {
        match self {
            FileCommand::Env => "set_env_",
            FileCommand::Output => "set_output_",
            FileCommand::State => "save_state_",
            FileCommand::Path => "add_path_",
            FileCommand::StepSummary => "step_summary_",
        }
    }
}

/// The files of one step, in a sandbox's file-command directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepFiles {
    dir: PathBuf,
    suffix: String,
}

/// What a step wrote to its files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepFileResults {
    /// From `GITHUB_ENV`, minus blocked names.
    pub env: IndexMap<String, String>,
    /// From `GITHUB_OUTPUT`.
    pub outputs: IndexMap<String, String>,
    /// From `GITHUB_STATE`.
    pub state: IndexMap<String, String>,
    /// From `GITHUB_PATH`, in file order.
    pub path: Vec<String>,
    /// Raw `GITHUB_STEP_SUMMARY` contents (unmasked; see [`JobSummary`]).
    pub summary: Vec<u8>,
    /// Problems to report as error annotations; any makes the step fail,
    /// except blocked names which GitHub only reports.
    pub errors: Vec<String>,
    /// Whether the step must fail because a file was invalid.
    pub failed: bool,
}

impl StepFiles {
    /// Files in `dir` (a guest path, usually [`crate::sandbox::JobLayout::file_commands`])
    /// named with `suffix` (a fresh UUID per step on GitHub).
    pub fn new(dir: impl Into<PathBuf>, suffix: impl Into<String>) -> Self {
        StepFiles {
            dir: dir.into(),
            suffix: suffix.into(),
        }
    }

    /// Files with a random suffix.
    pub fn random(dir: impl Into<PathBuf>) -> Self {
        Self::new(dir, uuid::Uuid::new_v4().to_string())
    }

    /// Guest path of one file.
    pub fn path(&self, which: FileCommand) -> PathBuf {
        self.dir.join(format!("{}{}", which.prefix(), self.suffix))
    }

    /// `GITHUB_ENV=…` etc. for the step's environment.
    pub fn env_vars(&self) -> Vec<(&'static str, String)> {
        FileCommand::ALL
            .iter()
            .map(|f| (f.env_var(), self.path(*f).to_string_lossy().into_owned()))
            .collect()
    }

    /// Creates every file empty (replacing leftovers).
    pub async fn prepare(&self, sandbox: &dyn Sandbox) -> Result<(), SandboxError> {
        for f in FileCommand::ALL {
            sandbox
                .write_file(&self.path(f), Vec::new(), Some(0o666))
                .await?;
        }
        Ok(())
    }

    /// Reads and parses every file, then removes them.
    pub async fn collect(&self, sandbox: &dyn Sandbox) -> Result<StepFileResults, SandboxError> {
        let mut r = StepFileResults::default();
        let read = |f: FileCommand| {
            let p = self.path(f);
            async move { sandbox.read_file(&p).await }
        };
        let key_values = |f: FileCommand, text: Option<Vec<u8>>, r: &mut StepFileResults| {
            let text = String::from_utf8_lossy(&text.unwrap_or_default()).into_owned();
            let (pairs, error) = parse_pairs_until_error(&text);
            if let Some(e) = error {
                r.errors.push(format!(
                    "Unable to process file command '{}' successfully.",
                    context_name(f)
                ));
                r.errors.push(e.to_string());
                r.failed = true;
            }
            // Later duplicates win; the map keeps first-seen order (as `parse_key_values`).
            pairs.into_iter().collect::<IndexMap<_, _>>()
        };
        let env = key_values(FileCommand::Env, read(FileCommand::Env).await?, &mut r);
        for (k, v) in env {
            if let Some(b) = ENV_BLOCKLIST.iter().find(|b| b.eq_ignore_ascii_case(&k)) {
                r.errors.push(format!(
                    "Can't store {b} output parameter using '$GITHUB_ENV' command."
                ));
                continue;
            }
            r.env.insert(k, v);
        }
        r.outputs = key_values(
            FileCommand::Output,
            read(FileCommand::Output).await?,
            &mut r,
        );
        r.state = key_values(FileCommand::State, read(FileCommand::State).await?, &mut r);
        if let Some(p) = read(FileCommand::Path).await? {
            r.path = parse_path_file(&String::from_utf8_lossy(&p));
        }
        r.summary = read(FileCommand::StepSummary).await?.unwrap_or_default();
        for f in FileCommand::ALL {
            sandbox.remove(&self.path(f)).await?;
        }
        Ok(r)
    }
}

fn context_name(f: FileCommand) -> &'static str {
    match f {
        FileCommand::Env => "env",
        FileCommand::Output => "output",
        FileCommand::State => "state",
        FileCommand::Path => "path",
        FileCommand::StepSummary => "step_summary",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(text: &str) -> Vec<(String, String)> {
        match parse_key_value_pairs(text) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        }
    }

    fn p(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn simple_pairs() {
        assert_eq!(
            kv("KEY=value\n\nK2=a=b\nEMPTY=\n"),
            vec![p("KEY", "value"), p("K2", "a=b"), p("EMPTY", "")]
        );
        assert_eq!(kv("NOEOL=x"), vec![p("NOEOL", "x")]);
    }

    #[test]
    fn heredoc_values() {
        assert_eq!(kv("KEY2<<EOF\nvalue2\nEOF\n"), vec![p("KEY2", "value2")]);
        assert_eq!(
            kv("M<<EOF\nl1\n\nl3\nEOF\nN=1\n"),
            vec![p("M", "l1\n\nl3"), p("N", "1")]
        );
        assert_eq!(kv("E<<EOF\nEOF\n"), vec![p("E", "")]);
        // delimiter as the very last line without newline is fine
        assert_eq!(kv("X<<D\nv\nD"), vec![p("X", "v")]);
        assert_eq!(
            kv("KEY3<<ghadelimiter_b8273c6d-d535-419a-a010-b0aaac240e36\nvalue3\nghadelimiter_b8273c6d-d535-419a-a010-b0aaac240e36\n"),
            vec![p("KEY3", "value3")]
        );
        // Lines split on LF only (as the runner on Linux): CR stays in values,
        // and a CRLF delimiter line does not match.
        assert_eq!(kv("K=v\r\n"), vec![p("K", "v\r")]);
        assert_eq!(kv("C<<EOF\r\nv\r\nEOF\r\n"), vec![p("C", "v\r")]);
        assert!(matches!(
            parse_key_value_pairs("C<<EOF\nv\r\nEOF\r\n"),
            Err(FileCommandError::MissingDelimiter { .. })
        ));
    }

    #[test]
    fn heredoc_equals_inside_value_is_not_a_new_key() {
        // act's "environment-files-parser-bug" case.
        assert_eq!(
            kv("test<<World\nx=Thats really Weird\nWorld\n"),
            vec![p("test", "x=Thats really Weird")]
        );
    }

    #[test]
    fn heredoc_vs_equals_precedence() {
        assert_eq!(kv("A=b<<c\n"), vec![p("A", "b<<c")]);
        assert_eq!(kv("A<<E=\nv\nE=\n"), vec![p("A", "v")]);
    }

    #[test]
    fn errors_match_github() {
        let err = |t: &str| parse_key_value_pairs(t).err().map(|e| e.to_string());
        assert_eq!(
            err("=value\n"),
            Some("Invalid format '=value'. Name must not be empty".into())
        );
        assert_eq!(
            err("<<EOF\nx\nEOF\n"),
            Some(
                "Invalid format '<<EOF'. Name must not be empty and delimiter must not be empty"
                    .into()
            )
        );
        assert_eq!(
            err("K<<\nx\n"),
            Some(
                "Invalid format 'K<<'. Name must not be empty and delimiter must not be empty"
                    .into()
            )
        );
        assert_eq!(
            err("K<<EOF\nvalue\n"),
            Some("Invalid value. Matching delimiter not found 'EOF'".into())
        );
        assert_eq!(
            err("K<<EOF\nvalue"),
            Some("Invalid value. EOF marker missing new line.".into())
        );
        assert_eq!(err("justtext\n"), Some("Invalid format 'justtext'".into()));
        // What came before the bad line still counts; nothing after it.
        let (pairs, e) = parse_pairs_until_error("GOOD=1\nbadline\nLATER=2\n");
        assert_eq!(pairs, [p("GOOD", "1")]);
        assert_eq!(
            e.map(|e| e.to_string()),
            Some("Invalid format 'badline'".into())
        );
    }

    #[test]
    fn later_duplicates_win() -> Result<(), FileCommandError> {
        let m = parse_key_values("A=1\nB=2\nA=3\n")?;
        assert_eq!(m.get("A").map(String::as_str), Some("3"));
        assert_eq!(m.keys().collect::<Vec<_>>(), ["A", "B"]);
        Ok(())
    }

    #[test]
    fn path_file_and_prepends() {
        assert_eq!(parse_path_file("/a\n\n/b\r\n/c"), vec!["/a", "/b", "/c"]);
        let mut pp = PathPrepends::new();
        pp.add("/home/someFolder");
        pp.add("/home/someOtherFolder");
        assert_eq!(
            pp.apply("/usr/bin:/bin"),
            "/home/someOtherFolder:/home/someFolder:/usr/bin:/bin"
        );
        pp.add("/home/someFolder");
        assert_eq!(pp.apply(""), "/home/someFolder:/home/someOtherFolder");
    }

    #[test]
    fn summary_is_masked_and_limited() {
        let m = Masker::new();
        m.add("sekrit");
        let mut s = JobSummary::new();
        assert_eq!(s.append_step(b"", &m), Ok(false));
        assert_eq!(s.append_step(b"# Title\npw: sekrit\n", &m), Ok(true));
        assert_eq!(s.append_step(b"more", &m), Ok(true));
        assert_eq!(s.as_str(), "# Title\npw: ***\nmore\n");
        let big = vec![b'x'; SUMMARY_SIZE_LIMIT + 1];
        assert!(matches!(
            s.append_step(&big, &m),
            Err(SummaryError::TooLarge {
                limit_kib: 1024,
                ..
            })
        ));
    }

    #[test]
    fn step_file_names() {
        let f = StepFiles::new("/j/temp/_runner_file_commands", "abc");
        assert_eq!(
            f.path(FileCommand::Env),
            PathBuf::from("/j/temp/_runner_file_commands/set_env_abc")
        );
        let vars = f.env_vars();
        assert_eq!(vars.len(), 5);
        assert!(vars
            .iter()
            .any(|(k, v)| *k == "GITHUB_STEP_SUMMARY" && v.ends_with("step_summary_abc")));
    }
}
