//! `run:` steps: which shell runs the script, with which arguments, from which
//! file, in which directory — GitHub's rules.
//!
//! * `shell:` absent (and no `defaults.run.shell`): `bash -e {0}` when `bash`
//!   is on the `PATH`, else `sh -e {0}`.
//! * Built-ins: `bash` → `bash --noprofile --norc -e -o pipefail {0}` (the
//!   documented `-eo pipefail`, spelled as the runner spells it), `sh` →
//!   `sh -e {0}`, `python` → `python {0}`, `pwsh`/`powershell` →
//!   `pwsh -command ". '{0}'"`, `cmd` → `cmd /D /E:ON /V:OFF /S /C "CALL "{0}""`.
//! * Anything else is `COMMAND [ARGS…]` split at the first space; the arguments
//!   must contain `{0}` (a bare built-in name gets its built-in arguments, so
//!   `shell: bash -x {0}` keeps `-x` only).
//! * The script goes to `RUNNER_TEMP/<uuid><ext>` with `.sh` (bash, sh),
//!   `.py` (python), `.ps1` (pwsh, powershell), `.cmd` (cmd) or no extension.
//!   PowerShell scripts get `$ErrorActionPreference = 'stop'` prepended and a
//!   `$LASTEXITCODE` check appended; cmd scripts `@echo off`.
//! * `{0}` is replaced by the script path (`"` escaped as `\"`) and the
//!   argument string is split like .NET does on Unix (whitespace separates,
//!   double quotes group, `\"` is a literal quote).
//! * `working-directory` is joined to the workspace (an absolute one replaces
//!   it); absent means the workspace.

use std::path::{Path, PathBuf};

/// A shell that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShellError {
    /// `shell:` had no `{0}` and is not a built-in.
    #[error("Invalid shell option. Shell must be a valid built-in (bash, sh, cmd, powershell, pwsh) or a format string containing '{{0}}'")]
    InvalidShell,
    /// `shell:` was empty or only spaces.
    #[error("Failed to parse COMMAND [..ARGS] from {0:?}")]
    Unparsable(String),
    /// The program is not on the `PATH`.
    #[error("{0}: command not found")]
    NotFound(String),
}

/// Built-in argument templates, by shell name (case-insensitive on GitHub).
fn builtin_args(shell: &str) -> Option<&'static str> {
    Some(match shell.to_ascii_lowercase().as_str() {
        "cmd" => "/D /E:ON /V:OFF /S /C \"CALL \"{0}\"\"",
        "pwsh" | "powershell" => "-command \". '{0}'\"",
        "bash" => "--noprofile --norc -e -o pipefail {0}",
        "sh" => "-e {0}",
        "python" => "{0}",
        _ => return None,
    })
}

/// Script file extension for a shell command name.
pub fn script_extension(shell: &str) -> &'static str {
    match shell.to_ascii_lowercase().as_str() {
        "cmd" => ".cmd",
        "pwsh" | "powershell" => ".ps1",
        "bash" | "sh" => ".sh",
        "python" => ".py",
        _ => "",
    }
}

/// A resolved `shell:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellCommand {
    /// The program as written (`bash`, `python`, `/opt/x/perl`), or the
    /// default shell actually found (`bash` or `sh`).
    pub program: String,
    /// The argument template containing `{0}`.
    pub args_template: String,
}

impl ShellCommand {
    /// Resolves `shell` (None or empty for the default). `exists` says whether
    /// a program name is on the job's `PATH` (see [`which`]); it is only asked
    /// for the default shell.
    pub fn resolve(shell: Option<&str>, exists: impl Fn(&str) -> bool) -> Result<Self, ShellError> {
        let shell = shell.map(str::trim).filter(|s| !s.is_empty());
        let Some(shell) = shell else {
            let program = if exists("bash") { "bash" } else { "sh" };
            return Ok(ShellCommand {
                program: program.into(),
                args_template: "-e {0}".into(),
            });
        };
        let (program, args) = match shell.split_once(' ') {
            Some((p, a)) => (p, a.trim_start()),
            None => (shell, ""),
        };
        if program.is_empty() {
            return Err(ShellError::Unparsable(shell.to_string()));
        }
        let template = if args.is_empty() {
            builtin_args(program).unwrap_or("").to_string()
        } else {
            args.to_string()
        };
        if !template.contains("{0}") {
            return Err(ShellError::InvalidShell);
        }
        Ok(ShellCommand {
            program: program.to_string(),
            args_template: template,
        })
    }

    /// The name that decides extension and content fix-ups (`bash`, `pwsh`…):
    /// the program's file name.
    pub fn kind(&self) -> &str {
        self.program.rsplit('/').next().unwrap_or(&self.program)
    }

    /// Extension of the script file.
    pub fn extension(&self) -> &'static str {
        script_extension(self.kind())
    }

    /// A fresh script path in `temp_dir` (`<uuid><ext>`).
    pub fn script_path(&self, temp_dir: &Path) -> PathBuf {
        temp_dir.join(format!("{}{}", uuid::Uuid::new_v4(), self.extension()))
    }

    /// The script contents as written to disk.
    pub fn script_contents(&self, script: &str) -> String {
        fix_up_contents(self.kind(), script)
    }

    /// The full argv running `script_path`.
    pub fn argv(&self, script_path: &Path) -> Vec<String> {
        let escaped = script_path.to_string_lossy().replace('"', "\\\"");
        let args = self.args_template.replace("{0}", &escaped);
        let mut argv = vec![self.program.clone()];
        argv.extend(split_arguments(&args));
        argv
    }

    /// What the runner prints as `shell: …` in the step header.
    pub fn display(&self) -> String {
        format!("{} {}", self.program, self.args_template)
    }
}

/// Adds what GitHub adds to PowerShell and cmd scripts.
pub fn fix_up_contents(kind: &str, contents: &str) -> String {
    match kind.to_ascii_lowercase().as_str() {
        "cmd" => format!("@echo off\n{contents}"),
        "pwsh" | "powershell" => format!(
            "$ErrorActionPreference = 'stop'\n{contents}\nif ((Test-Path -LiteralPath variable:\\LASTEXITCODE)) {{ exit $LASTEXITCODE }}"
        ),
        _ => contents.to_string(),
    }
}

/// Splits an argument string the way .NET's `Process` does on Unix.
pub fn split_arguments(s: &str) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_arg = false;
    let mut in_quotes = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if !in_quotes && c.is_whitespace() {
            if in_arg {
                out.push(std::mem::take(&mut cur));
                in_arg = false;
            }
            i += 1;
            continue;
        }
        in_arg = true;
        if c == '\\' {
            let mut n = 0;
            while i < chars.len() && chars[i] == '\\' {
                n += 1;
                i += 1;
            }
            if i < chars.len() && chars[i] == '"' {
                cur.extend(std::iter::repeat_n('\\', n / 2));
                if n % 2 == 1 {
                    cur.push('"');
                    i += 1;
                }
            } else {
                cur.extend(std::iter::repeat_n('\\', n));
            }
            continue;
        }
        if c == '"' {
            if in_quotes && chars.get(i + 1) == Some(&'"') {
                cur.push('"');
                i += 2;
                continue;
            }
            in_quotes = !in_quotes;
            i += 1;
            continue;
        }
        cur.push(c);
        i += 1;
    }
    if in_arg {
        out.push(cur);
    }
    out
}

/// Looks `program` up on a `PATH` string (host-side; for a VM sandbox ask the
/// guest instead, e.g. `sh -c 'command -v bash'`).
pub fn which(program: &str, path: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if program.contains('/') {
        let p = PathBuf::from(program);
        return p.is_file().then_some(p);
    }
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(program))
        .find(|c| {
            std::fs::metadata(c)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// `working-directory` against the workspace: `None` → workspace, relative →
/// joined, absolute → as is.
pub fn resolve_working_directory(workspace: &Path, working_directory: Option<&str>) -> PathBuf {
    match working_directory.filter(|w| !w.is_empty()) {
        None => workspace.to_path_buf(),
        Some(w) => workspace.join(w),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(s: Option<&str>, has_bash: bool) -> ShellCommand {
        match ShellCommand::resolve(s, |p| has_bash && p == "bash") {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn default_shell_prefers_bash() {
        let script = Path::new("/t/x.sh");
        assert_eq!(resolve(None, true).argv(script), ["bash", "-e", "/t/x.sh"]);
        assert_eq!(
            resolve(Some("  "), false).argv(script),
            ["sh", "-e", "/t/x.sh"]
        );
        assert_eq!(resolve(None, true).extension(), ".sh");
    }

    #[test]
    fn builtins() {
        let s = Path::new("/t/s");
        assert_eq!(
            resolve(Some("bash"), true).argv(s),
            [
                "bash",
                "--noprofile",
                "--norc",
                "-e",
                "-o",
                "pipefail",
                "/t/s"
            ]
        );
        assert_eq!(resolve(Some("sh"), true).argv(s), ["sh", "-e", "/t/s"]);
        assert_eq!(resolve(Some("python"), true).argv(s), ["python", "/t/s"]);
        assert_eq!(
            resolve(Some("pwsh"), true).argv(s),
            ["pwsh", "-command", ". '/t/s'"]
        );
        assert_eq!(resolve(Some("powershell"), true).extension(), ".ps1");
        assert_eq!(
            resolve(Some("cmd"), true).argv(s),
            ["cmd", "/D", "/E:ON", "/V:OFF", "/S", "/C", "CALL /t/s"]
        );
        assert_eq!(resolve(Some("python"), true).extension(), ".py");
        assert_eq!(resolve(Some("cmd"), true).extension(), ".cmd");
    }

    #[test]
    fn custom_templates() {
        let s = Path::new("/t/s");
        assert_eq!(
            resolve(Some("bash -x {0}"), true).argv(s),
            ["bash", "-x", "/t/s"]
        );
        assert_eq!(
            resolve(Some("perl -w {0}"), true).argv(s),
            ["perl", "-w", "/t/s"]
        );
        assert_eq!(resolve(Some("perl {0}"), true).extension(), "");
        assert_eq!(
            resolve(Some("/usr/bin/bash --noprofile {0}"), true).extension(),
            ".sh"
        );
        assert_eq!(
            resolve(Some("node -e \"require('{0}')\""), true).argv(s),
            ["node", "-e", "require('/t/s')"]
        );
        assert_eq!(
            ShellCommand::resolve(Some("perl"), |_| true),
            Err(ShellError::InvalidShell)
        );
        assert_eq!(
            ShellCommand::resolve(Some("perl -w"), |_| true),
            Err(ShellError::InvalidShell)
        );
    }

    #[test]
    fn quote_in_script_path_is_escaped() {
        let c = resolve(Some("sh"), false);
        assert_eq!(
            c.argv(Path::new("/t/a\"b c.sh")),
            ["sh", "-e", "/t/a\"b", "c.sh"]
        );
        let q = resolve(Some("sh -e \"{0}\""), false);
        assert_eq!(
            q.argv(Path::new("/t/a\"b c.sh")),
            ["sh", "-e", "/t/a\"b c.sh"]
        );
    }

    #[test]
    fn argument_splitting_rules() {
        assert_eq!(
            split_arguments(r#"a  "b c" d\"e \\"f g" h\\i"#),
            ["a", "b c", "d\"e", "\\f g", "h\\\\i"]
        );
        assert_eq!(split_arguments(r#""a""b""#), ["a\"b"]);
        assert_eq!(split_arguments("   "), Vec::<String>::new());
        assert_eq!(split_arguments(r#""""#), [""]);
    }

    #[test]
    fn contents_fix_ups() {
        assert_eq!(fix_up_contents("bash", "echo"), "echo");
        assert!(fix_up_contents("pwsh", "Write-Host")
            .starts_with("$ErrorActionPreference = 'stop'\nWrite-Host\n"));
        assert_eq!(fix_up_contents("cmd", "dir"), "@echo off\ndir");
    }

    #[test]
    fn working_directory() {
        let ws = Path::new("/w/r/r");
        assert_eq!(resolve_working_directory(ws, None), PathBuf::from("/w/r/r"));
        assert_eq!(
            resolve_working_directory(ws, Some("sub/dir")),
            PathBuf::from("/w/r/r/sub/dir")
        );
        assert_eq!(
            resolve_working_directory(ws, Some("/abs")),
            PathBuf::from("/abs")
        );
        assert_eq!(
            resolve_working_directory(ws, Some("")),
            PathBuf::from("/w/r/r")
        );
    }

    #[test]
    fn which_finds_sh() {
        assert!(which("sh", "/nonexistent:/usr/bin:/bin").is_some());
        assert!(which("definitely-not-a-program-xyz", "/usr/bin:/bin").is_none());
    }

    #[test]
    fn script_path_in_temp() {
        let p = resolve(Some("python"), true).script_path(Path::new("/t"));
        assert!(p.starts_with("/t"));
        assert_eq!(p.extension().and_then(|e| e.to_str()), Some("py"));
    }
}
