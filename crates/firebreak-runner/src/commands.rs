//! Workflow commands written to stdout (`::name key=value,…::data`), parsed
//! and applied as GitHub's runner does.
//!
//! Feed every output line of a step to [`CommandProcessor::process_line`]; it
//! returns the [`Effect`]s in order. A line that is not a (recognised) command
//! comes back as [`Effect::Output`]; a command line is consumed and replaced by
//! what it does. Mask the displayed text *after* applying
//! [`Effect::AddMask`]s, so a value masked on this line is already hidden.
//!
//! Rules reproduced from the runner:
//! * A command is `::cmd::data` or `::cmd k=v,k2=v2::data` after leading
//!   whitespace; the legacy form `##[cmd k=v;k2=v2]data` is also accepted.
//!   Command names are case-insensitive, unknown names are plain output.
//! * Property values are unescaped `%0D`→CR, `%0A`→LF, `%3A`→`:`, `%2C`→`,`,
//!   `%25`→`%`; data `%0D`, `%0A`, `%25` (the legacy form also `%3B`, `%5D`),
//!   in that order. Property names are case-insensitive; pairs without `=` or
//!   with an empty side are dropped.
//! * `set-env` and `add-path` are disabled unless
//!   `ACTIONS_ALLOW_UNSECURE_COMMANDS` is `true` (case-insensitive); otherwise
//!   they fail the step with GitHub's message.
//! * `stop-commands::TOKEN` ignores every command until a line `::TOKEN::`;
//!   the token must not be empty, `pause-logging` or a command name (unless
//!   `ACTIONS_ALLOW_UNSECURE_STOPCOMMAND_TOKENS`); tokens longer than 6
//!   characters are masked.
//! * `debug` is shown only with `ACTIONS_STEP_DEBUG`; `echo::on|off` echoes
//!   commands; `error`/`warning`/`notice` become [`Annotation`]s whose `file`
//!   is made relative to the workspace.
//! * A failing command (missing `name`, disabled command, …) yields
//!   [`Effect::CommandFailed`]: the step fails, as `CommandResult = Failed`.

use indexmap::IndexMap;
use serde::Serialize;

/// Kind of annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AnnotationLevel {
    /// `::error`.
    Error,
    /// `::warning`.
    Warning,
    /// `::notice`.
    Notice,
}

impl AnnotationLevel {
    /// The name used in logs (`##[error]…`).
    pub fn as_str(&self) -> &'static str {
        match self {
            AnnotationLevel::Error => "error",
            AnnotationLevel::Warning => "warning",
            AnnotationLevel::Notice => "notice",
        }
    }
}

/// An `::error`/`::warning`/`::notice` annotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Annotation {
    /// Severity.
    pub level: AnnotationLevel,
    /// The message (data part).
    pub message: String,
    /// `title=`.
    pub title: Option<String>,
    /// `file=` (relative to the workspace when it was inside it).
    pub file: Option<String>,
    /// `line=`.
    pub line: Option<u32>,
    /// `endLine=`.
    pub end_line: Option<u32>,
    /// `col=`.
    pub col: Option<u32>,
    /// `endColumn=`.
    pub end_column: Option<u32>,
}

impl Annotation {
    /// A plain annotation with no location.
    pub fn new(level: AnnotationLevel, message: impl Into<String>) -> Self {
        Annotation {
            level,
            message: message.into(),
            title: None,
            file: None,
            line: None,
            end_line: None,
            col: None,
            end_column: None,
        }
    }

    /// The log line GitHub prints for it: `##[error]message`.
    pub fn log_line(&self) -> String {
        format!("##[{}]{}", self.level.as_str(), self.message)
    }
}

/// What one output line does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Show this line in the log (mask it first).
    Output(String),
    /// A debug message (only produced when step debug is on).
    Debug(String),
    /// Start a collapsible group with this title.
    Group(String),
    /// End the current group.
    EndGroup,
    /// An annotation; also shown in the log as [`Annotation::log_line`].
    Annotation(Annotation),
    /// `::set-output` (legacy step output).
    SetOutput {
        /// Output name.
        name: String,
        /// Value.
        value: String,
    },
    /// `::set-env` (only when unsecure commands are allowed).
    SetEnv {
        /// Variable name.
        name: String,
        /// Value.
        value: String,
    },
    /// `::add-path` (only when unsecure commands are allowed).
    AddPath(String),
    /// `::add-mask`: register with the masker before displaying anything.
    AddMask(String),
    /// `::save-state`: state for the action's post step.
    SaveState {
        /// State name.
        name: String,
        /// Value.
        value: String,
    },
    /// `::add-matcher` (problem matchers are not implemented by this module).
    AddMatcher(String),
    /// `::remove-matcher`.
    RemoveMatcher {
        /// `owner=`.
        owner: Option<String>,
        /// Data (file).
        file: Option<String>,
    },
    /// The command failed: log the message as an error and fail the step.
    CommandFailed(String),
}

/// Names the runner recognises (`internal-set-repo-path` is plugin-only).
const COMMANDS: &[&str] = &[
    "set-env",
    "set-output",
    "save-state",
    "add-mask",
    "add-path",
    "add-matcher",
    "remove-matcher",
    "debug",
    "warning",
    "error",
    "notice",
    "group",
    "endgroup",
    "echo",
    "stop-commands",
];

/// Commands whose line is never echoed (their data may be sensitive or they
/// print themselves).
const OMIT_ECHO: &[&str] = &["add-mask", "debug", "warning", "error", "notice"];

/// GitHub's message for disabled `set-env`/`add-path`.
pub fn unsupported_command_message(cmd: &str) -> String {
    format!(
        "The `{cmd}` command is disabled. Please upgrade to using Environment Files or opt into unsecure command execution by setting the `ACTIONS_ALLOW_UNSECURE_COMMANDS` environment variable to `true`. For more information see: https://github.blog/changelog/2020-10-01-github-actions-deprecating-set-env-and-add-path-commands/"
    )
}

/// GitHub's message for a rejected stop-commands token.
pub const UNSUPPORTED_STOP_TOKEN: &str = "You cannot use a endToken that is an empty string, the string 'pause-logging', or another workflow command. For more information see: https://docs.github.com/actions/learn-github-actions/workflow-commands-for-github-actions#example-stopping-and-starting-workflow-commands or opt into insecure command execution by setting the `ACTIONS_ALLOW_UNSECURE_STOPCOMMAND_TOKENS` environment variable to `true`.";

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedCommand {
    /// Command name, lowercased.
    pub command: String,
    /// Properties; keys lowercased (GitHub compares them case-insensitively).
    pub properties: IndexMap<String, String>,
    /// Unescaped data.
    pub data: String,
}

impl ParsedCommand {
    fn prop(&self, key: &str) -> Option<&str> {
        self.properties
            .get(&key.to_ascii_lowercase())
            .map(String::as_str)
    }
}

fn unescape(s: &str, pairs: &[(&str, &str)]) -> String {
    let mut out = s.to_string();
    for (esc, raw) in pairs {
        out = out.replace(esc, raw);
    }
    out
}

const DATA_ESCAPES: &[(&str, &str)] = &[("%0D", "\r"), ("%0A", "\n"), ("%25", "%")];
const PROPERTY_ESCAPES: &[(&str, &str)] = &[
    ("%0D", "\r"),
    ("%0A", "\n"),
    ("%3A", ":"),
    ("%2C", ","),
    ("%25", "%"),
];
const LEGACY_ESCAPES: &[(&str, &str)] = &[
    ("%3B", ";"),
    ("%0D", "\r"),
    ("%0A", "\n"),
    ("%5D", "]"),
    ("%25", "%"),
];

/// Escapes command data as the toolkit does (inverse of the runner's unescape).
pub fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escapes a property value as the toolkit does.
pub fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

fn is_registered(name: &str, extra: Option<&str>) -> bool {
    COMMANDS.iter().any(|c| c.eq_ignore_ascii_case(name))
        || extra.is_some_and(|t| t.eq_ignore_ascii_case(name))
}

/// Parses `::cmd props::data` (after leading whitespace) if `cmd` is
/// registered (a known command or `extra`, the active stop token).
pub fn parse_v2(line: &str, extra: Option<&str>) -> Option<ParsedCommand> {
    let msg = line.trim_start();
    let rest = msg.strip_prefix("::")?;
    let end = rest.find("::")?;
    let info = &rest[..end];
    let (name, props) = match info.find(' ') {
        Some(i) => (&info[..i], Some(&info[i + 1..])),
        None => (info, None),
    };
    if !is_registered(name, extra) {
        return None;
    }
    Some(ParsedCommand {
        command: name.to_ascii_lowercase(),
        properties: parse_properties(props.map(str::trim), ',', PROPERTY_ESCAPES),
        data: unescape(&rest[end + 2..], DATA_ESCAPES),
    })
}

/// `k=v` pairs separated by `sep`: keys lower-cased, values unescaped, pairs with an empty key
/// or value dropped (as the runner does).
fn parse_properties(
    props: Option<&str>,
    sep: char,
    escapes: &[(&str, &str)],
) -> IndexMap<String, String> {
    let mut properties = IndexMap::new();
    for p in props
        .into_iter()
        .flat_map(|s| s.split(sep))
        .filter(|p| !p.is_empty())
    {
        if let Some((k, v)) = p.split_once('=') {
            if !k.is_empty() && !v.is_empty() {
                properties.insert(k.to_ascii_lowercase(), unescape(v, escapes));
            }
        }
    }
    properties
}

/// Parses the legacy `##[cmd k=v;k2=v2]data` form, found anywhere in the line.
pub fn parse_legacy(line: &str, extra: Option<&str>) -> Option<ParsedCommand> {
    let start = line.find("##[")?;
    let after = &line[start + 3..];
    let rb = after.find(']')?;
    let info = &after[..rb];
    let (name, props) = match info.find(' ') {
        Some(i) => (&info[..i], Some(&info[i + 1..])),
        None => (info, None),
    };
    if !is_registered(name, extra) {
        return None;
    }
    Some(ParsedCommand {
        command: name.to_ascii_lowercase(),
        properties: parse_properties(props, ';', LEGACY_ESCAPES),
        data: unescape(&after[rb + 1..], LEGACY_ESCAPES),
    })
}

/// Per-step settings read from the step's environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandSettings {
    /// `ACTIONS_ALLOW_UNSECURE_COMMANDS` is `true`.
    pub allow_unsecure_commands: bool,
    /// `ACTIONS_ALLOW_UNSECURE_STOPCOMMAND_TOKENS` is true.
    pub allow_unsecure_stop_tokens: bool,
    /// `ACTIONS_STEP_DEBUG` is true: show `::debug::` and echo commands.
    pub step_debug: bool,
    /// `GITHUB_WORKSPACE` (guest path), to make annotation files relative.
    pub workspace: Option<String>,
}

impl CommandSettings {
    /// Reads the flags from an environment (`true` compared case-insensitively,
    /// like the runner's `bool.TryParse`).
    pub fn from_env<'a>(env: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut s = CommandSettings::default();
        for (k, v) in env {
            let t = v.trim().eq_ignore_ascii_case("true");
            match k {
                "ACTIONS_ALLOW_UNSECURE_COMMANDS" => s.allow_unsecure_commands = t,
                "ACTIONS_ALLOW_UNSECURE_STOPCOMMAND_TOKENS" => {
                    s.allow_unsecure_stop_tokens = t || v.trim() == "1"
                }
                "ACTIONS_STEP_DEBUG" => s.step_debug = t,
                "GITHUB_WORKSPACE" => s.workspace = Some(v.to_string()),
                _ => {}
            }
        }
        s
    }
}

/// Stateful processor for one step's output (stop-commands and echo state).
#[derive(Debug, Clone)]
pub struct CommandProcessor {
    settings: CommandSettings,
    stop_token: Option<String>,
    echo: bool,
}

impl CommandProcessor {
    /// A processor for one step. Echo starts on only with step debug.
    pub fn new(settings: CommandSettings) -> Self {
        let echo = settings.step_debug;
        CommandProcessor {
            settings,
            stop_token: None,
            echo,
        }
    }

    /// Whether commands are being echoed (`::echo::on`).
    pub fn echo(&self) -> bool {
        self.echo
    }

    /// The active stop-commands token, if any.
    pub fn stop_token(&self) -> Option<&str> {
        self.stop_token.as_deref()
    }

    fn debug(&self, out: &mut Vec<Effect>, msg: impl Into<String>) {
        if self.settings.step_debug {
            out.push(Effect::Debug(msg.into()));
        }
    }

    /// Interprets one line of stdout. See the module docs.
    pub fn process_line(&mut self, line: &str) -> Vec<Effect> {
        let mut out = Vec::new();
        let token = self.stop_token.clone();
        let parsed =
            parse_v2(line, token.as_deref()).or_else(|| parse_legacy(line, token.as_deref()));
        let Some(cmd) = parsed else {
            out.push(Effect::Output(line.to_string()));
            return out;
        };

        if let Some(tok) = &token {
            if cmd.command.eq_ignore_ascii_case(tok) {
                out.push(Effect::Output(line.to_string()));
                self.debug(&mut out, "Resume processing commands");
                self.stop_token = None;
            } else {
                // While stopped, a would-be command is ordinary output.
                out.push(Effect::Output(line.to_string()));
            }
            return out;
        }

        if cmd.command == "stop-commands" {
            let t = cmd.data.clone();
            let invalid =
                t.is_empty() || t.eq_ignore_ascii_case("pause-logging") || is_registered(&t, None);
            if invalid && !self.settings.allow_unsecure_stop_tokens {
                out.push(Effect::CommandFailed(format!(
                    "Unable to process command '{line}' successfully. {UNSUPPORTED_STOP_TOKEN}"
                )));
                return out;
            }
            if t.chars().count() > 6 {
                out.push(Effect::AddMask(t.clone()));
            }
            out.push(Effect::Output(line.to_string()));
            self.debug(&mut out, "Paused processing commands until the token you called ::stopCommands:: with is received");
            self.stop_token = Some(t);
            return out;
        }

        let omit_echo = OMIT_ECHO.contains(&cmd.command.as_str());
        if self.echo && !omit_echo {
            out.push(Effect::Output(line.to_string()));
        }
        let shown = if omit_echo {
            cmd.command.clone()
        } else {
            line.to_string()
        };
        if let Err(msg) = self.apply(&cmd, &mut out) {
            out.push(Effect::CommandFailed(format!(
                "Unable to process command '{shown}' successfully. {msg}"
            )));
        }
        out
    }

    fn apply(&mut self, cmd: &ParsedCommand, out: &mut Vec<Effect>) -> Result<(), String> {
        let required_name = |c: &ParsedCommand| -> Result<String, String> {
            match c.prop("name") {
                Some(n) if !n.is_empty() => Ok(n.to_string()),
                _ => Err(format!(
                    "Required field 'name' is missing in ##[{}] command.",
                    c.command
                )),
            }
        };
        match cmd.command.as_str() {
            "set-env" => {
                if !self.settings.allow_unsecure_commands {
                    return Err(unsupported_command_message("set-env"));
                }
                let name = required_name(cmd)?;
                if name.eq_ignore_ascii_case("NODE_OPTIONS") {
                    out.push(Effect::Annotation(Annotation::new(
                        AnnotationLevel::Error,
                        "Can't update NODE_OPTIONS environment variable using ::set-env:: command.",
                    )));
                    return Ok(());
                }
                out.push(Effect::SetEnv { name, value: cmd.data.clone() });
            }
            "add-path" => {
                if !self.settings.allow_unsecure_commands {
                    return Err(unsupported_command_message("add-path"));
                }
                out.push(Effect::AddPath(cmd.data.clone()));
            }
            "set-output" => {
                let name = required_name(cmd)?;
                out.push(Effect::SetOutput { name, value: cmd.data.clone() });
            }
            "save-state" => {
                let name = required_name(cmd)?;
                out.push(Effect::SaveState { name, value: cmd.data.clone() });
            }
            "add-mask" => {
                if cmd.data.trim().is_empty() {
                    out.push(Effect::Annotation(Annotation::new(
                        AnnotationLevel::Warning,
                        "Can't add secret mask for empty string in ##[add-mask] command.",
                    )));
                } else {
                    out.push(Effect::AddMask(cmd.data.clone()));
                    if self.echo {
                        out.push(Effect::Output("::add-mask::***".into()));
                    }
                }
            }
            "debug" => self.debug(out, cmd.data.clone()),
            "error" | "warning" | "notice" => {
                let level = match cmd.command.as_str() {
                    "error" => AnnotationLevel::Error,
                    "warning" => AnnotationLevel::Warning,
                    _ => AnnotationLevel::Notice,
                };
                out.push(Effect::Annotation(self.annotation(level, cmd)));
            }
            "group" => out.push(Effect::Group(cmd.data.clone())),
            "endgroup" => out.push(Effect::EndGroup),
            "echo" => match cmd.data.trim().to_ascii_uppercase().as_str() {
                "ON" => self.echo = true,
                "OFF" => self.echo = false,
                _ => {
                    return Err(format!(
                        "Invalid echo command value. Possible values can be: 'on', 'off'. Current value is: '{}'.",
                        cmd.data
                    ))
                }
            },
            "add-matcher" => {
                if cmd.data.is_empty() {
                    out.push(Effect::Annotation(Annotation::new(
                        AnnotationLevel::Warning,
                        "File path must be specified.",
                    )));
                } else {
                    out.push(Effect::AddMatcher(cmd.data.clone()));
                }
            }
            "remove-matcher" => {
                let owner = cmd.prop("owner").map(String::from);
                let file = (!cmd.data.is_empty()).then(|| cmd.data.clone());
                match (&owner, &file) {
                    (Some(_), Some(_)) => out.push(Effect::Annotation(Annotation::new(
                        AnnotationLevel::Warning,
                        "Either specify an owner name or a file path in ##[remove-matcher] command. Both values cannot be set.",
                    ))),
                    (None, None) => out.push(Effect::Annotation(Annotation::new(
                        AnnotationLevel::Warning,
                        "Either an owner name or a file path must be specified in ##[remove-matcher] command.",
                    ))),
                    _ => out.push(Effect::RemoveMatcher { owner, file }),
                }
            }
            other => {
                out.push(Effect::Annotation(Annotation::new(
                    AnnotationLevel::Warning,
                    format!("Can't find command extension for ##[{other}.command]."),
                )));
            }
        }
        Ok(())
    }

    /// Builds an annotation, validating lines and columns as the runner does.
    fn annotation(&self, level: AnnotationLevel, cmd: &ParsedCommand) -> Annotation {
        let num = |k: &str| cmd.prop(k).and_then(|v| v.trim().parse::<u32>().ok());
        let mut line = num("line");
        let mut end_line = num("endline");
        let mut col = num("col");
        let mut end_col = num("endcolumn");
        if end_line.is_some() && line.is_none() {
            line = end_line;
        }
        if end_col.is_some() && col.is_none() {
            col = end_col;
        }
        let has_col = col.is_some() || end_col.is_some();
        if line.is_none() && has_col {
            col = None;
            end_col = None;
        }
        if end_line.is_some() && line != end_line && has_col {
            col = None;
            end_col = None;
        }
        if let (Some(l), Some(e)) = (line, end_line) {
            if e < l {
                line = None;
                end_line = None;
            }
        }
        if let (Some(c), Some(e)) = (col, end_col) {
            if e < c {
                col = None;
                end_col = None;
            }
        }
        let file = cmd
            .prop("file")
            .filter(|f| !f.is_empty())
            .map(|f| self.relative_file(f));
        Annotation {
            level,
            message: cmd.data.clone(),
            title: cmd.prop("title").map(String::from),
            file,
            line,
            end_line,
            col,
            end_column: end_col,
        }
    }

    fn relative_file(&self, file: &str) -> String {
        if let Some(ws) = &self.settings.workspace {
            let ws = ws.trim_end_matches('/');
            if let Some(rest) = file.strip_prefix(ws) {
                if let Some(rel) = rest.strip_prefix('/') {
                    if !rel.is_empty() {
                        return rel.to_string();
                    }
                }
            }
        }
        file.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc_with(env: &[(&str, &str)]) -> CommandProcessor {
        CommandProcessor::new(CommandSettings::from_env(env.iter().copied()))
    }

    #[test]
    fn plain_lines_are_output() {
        let mut p = proc_with(&[]);
        assert_eq!(
            p.process_line("hello"),
            vec![Effect::Output("hello".into())]
        );
        assert_eq!(
            p.process_line("::unknown::x"),
            vec![Effect::Output("::unknown::x".into())]
        );
        assert_eq!(
            p.process_line("::set-output name=x"),
            vec![Effect::Output("::set-output name=x".into())]
        );
    }

    #[test]
    fn set_output_legacy_with_escapes() {
        let mut p = proc_with(&[]);
        assert_eq!(
            p.process_line("  ::set-output name=zoo::a%0Ab%25c%3A"),
            vec![Effect::SetOutput {
                name: "zoo".into(),
                value: "a\nb%c%3A".into()
            }]
        );
        // Property values unescape : and ,
        assert_eq!(
            p.process_line("::SET-OUTPUT NAME=a%3Ab%2Cc::v"),
            vec![Effect::SetOutput {
                name: "a:b,c".into(),
                value: "v".into()
            }]
        );
        assert!(
            matches!(&p.process_line("::set-output::v")[..], [Effect::CommandFailed(m)] if m.contains("Required field 'name' is missing"))
        );
    }

    #[test]
    fn set_env_and_add_path_need_opt_in() {
        let mut p = proc_with(&[]);
        let e = p.process_line("::set-env name=foo::bar");
        assert!(
            matches!(&e[..], [Effect::CommandFailed(m)] if m.contains("The `set-env` command is disabled"))
        );
        let e = p.process_line("::add-path::/zip");
        assert!(
            matches!(&e[..], [Effect::CommandFailed(m)] if m.contains("The `add-path` command is disabled"))
        );
        let mut p = proc_with(&[("ACTIONS_ALLOW_UNSECURE_COMMANDS", "True")]);
        assert_eq!(
            p.process_line("::set-env name=foo::bar"),
            vec![Effect::SetEnv {
                name: "foo".into(),
                value: "bar".into()
            }]
        );
        assert_eq!(
            p.process_line("::add-path::/zip"),
            vec![Effect::AddPath("/zip".into())]
        );
        assert!(
            matches!(&p.process_line("::set-env name=NODE_OPTIONS::x")[..], [Effect::Annotation(a)] if a.level == AnnotationLevel::Error)
        );
    }

    #[test]
    fn stop_commands_round_trip() {
        let mut p = proc_with(&[("ACTIONS_ALLOW_UNSECURE_COMMANDS", "true")]);
        let e = p.process_line("::stop-commands::my-end-token");
        assert_eq!(
            e,
            vec![
                Effect::AddMask("my-end-token".into()),
                Effect::Output("::stop-commands::my-end-token".into())
            ]
        );
        assert_eq!(
            p.process_line("::set-env name=foo::baz"),
            vec![Effect::Output("::set-env name=foo::baz".into())]
        );
        assert_eq!(
            p.process_line("::my-end-token::"),
            vec![Effect::Output("::my-end-token::".into())]
        );
        assert_eq!(p.stop_token(), None);
        assert_eq!(
            p.process_line("::set-env name=foo::baz"),
            vec![Effect::SetEnv {
                name: "foo".into(),
                value: "baz".into()
            }]
        );
    }

    #[test]
    fn short_stop_token_not_masked_and_bad_tokens_rejected() {
        let mut p = proc_with(&[]);
        assert_eq!(
            p.process_line("::stop-commands::abc"),
            vec![Effect::Output("::stop-commands::abc".into())]
        );
        let mut p = proc_with(&[]);
        for bad in [
            "::stop-commands::",
            "::stop-commands::pause-logging",
            "::stop-commands::set-output",
        ] {
            assert!(
                matches!(&p.process_line(bad)[..], [Effect::CommandFailed(m)] if m.contains("endToken")),
                "{bad}"
            );
        }
        let mut p = proc_with(&[("ACTIONS_ALLOW_UNSECURE_STOPCOMMAND_TOKENS", "true")]);
        assert_eq!(
            p.process_line("::stop-commands::debug"),
            vec![Effect::Output("::stop-commands::debug".into())]
        );
        assert_eq!(p.stop_token(), Some("debug"));
    }

    #[test]
    fn annotations_with_properties() {
        let mut p = proc_with(&[("GITHUB_WORKSPACE", "/w/repo/repo")]);
        let e = p.process_line("::error file=/w/repo/repo/src/app.js,line=100,endLine=101,col=30,title=Bad%2C really::Hello error!");
        let [Effect::Annotation(a)] = &e[..] else {
            panic!("{e:?}")
        };
        assert_eq!(a.level, AnnotationLevel::Error);
        assert_eq!(a.file.as_deref(), Some("src/app.js"));
        assert_eq!(a.title.as_deref(), Some("Bad, really"));
        assert_eq!((a.line, a.end_line), (Some(100), Some(101)));
        // col dropped because line != endLine
        assert_eq!(a.col, None);
        assert_eq!(a.message, "Hello error!");
        assert_eq!(a.log_line(), "##[error]Hello error!");
        let e = p.process_line("::warning endLine=5,col=3,endColumn=1::w");
        let [Effect::Annotation(a)] = &e[..] else {
            panic!("{e:?}")
        };
        assert_eq!(
            (a.line, a.end_line, a.col, a.end_column),
            (Some(5), Some(5), None, None)
        );
        let e = p.process_line("::notice file=other/x.rs::n");
        let [Effect::Annotation(a)] = &e[..] else {
            panic!("{e:?}")
        };
        assert_eq!(a.file.as_deref(), Some("other/x.rs"));
    }

    #[test]
    fn debug_only_with_step_debug() {
        let mut p = proc_with(&[]);
        assert_eq!(p.process_line("::debug::hidden"), vec![]);
        let mut p = proc_with(&[("ACTIONS_STEP_DEBUG", "true")]);
        assert_eq!(
            p.process_line("::debug::shown%0Atoo"),
            vec![Effect::Debug("shown\ntoo".into())]
        );
    }

    #[test]
    fn groups_mask_state_and_echo() {
        let mut p = proc_with(&[]);
        assert_eq!(
            p.process_line("::group::My title"),
            vec![Effect::Group("My title".into())]
        );
        assert_eq!(p.process_line("::endgroup::"), vec![Effect::EndGroup]);
        assert_eq!(
            p.process_line("::add-mask::s3cr3t"),
            vec![Effect::AddMask("s3cr3t".into())]
        );
        assert!(
            matches!(&p.process_line("::add-mask::  ")[..], [Effect::Annotation(a)] if a.level == AnnotationLevel::Warning)
        );
        assert_eq!(
            p.process_line("::save-state name=k::v"),
            vec![Effect::SaveState {
                name: "k".into(),
                value: "v".into()
            }]
        );
        assert_eq!(p.process_line("::echo::on"), vec![]);
        assert!(p.echo());
        assert_eq!(
            p.process_line("::set-output name=a::b"),
            vec![
                Effect::Output("::set-output name=a::b".into()),
                Effect::SetOutput {
                    name: "a".into(),
                    value: "b".into()
                }
            ]
        );
        assert_eq!(
            p.process_line("::add-mask::xyz"),
            vec![
                Effect::AddMask("xyz".into()),
                Effect::Output("::add-mask::***".into())
            ]
        );
        assert_eq!(
            p.process_line("::echo::OFF"),
            vec![Effect::Output("::echo::OFF".into())]
        );
        assert!(!p.echo());
        assert!(
            matches!(&p.process_line("::echo::maybe")[..], [Effect::CommandFailed(m)] if m.contains("Invalid echo command value"))
        );
    }

    #[test]
    fn legacy_form_parses() {
        let mut p = proc_with(&[]);
        assert_eq!(
            p.process_line("prefix ##[set-output name=a%3Bb]x%5Dy"),
            vec![Effect::SetOutput {
                name: "a;b".into(),
                value: "x]y".into()
            }]
        );
    }

    #[test]
    fn escaping_round_trips() {
        let v = "a%b\r\nc:d,e";
        let line = format!(
            "::set-output name={}::{}",
            escape_property("n:1,2"),
            escape_data(v)
        );
        let mut p = proc_with(&[]);
        assert_eq!(
            p.process_line(&line),
            vec![Effect::SetOutput {
                name: "n:1,2".into(),
                value: v.into()
            }]
        );
    }
}
