//! Terminal styling that honours `NO_COLOR` and non-terminal output: text for stdout is
//! coloured only when stdout is a terminal, text for stderr (`err_*`) only when stderr is.

use std::io::IsTerminal;

fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

/// Whether stdout may carry ANSI colours: a terminal, and `NO_COLOR` unset or empty.
pub fn color_enabled() -> bool {
    !no_color() && std::io::stdout().is_terminal()
}

/// Whether stderr may carry ANSI colours.
pub fn err_color_enabled() -> bool {
    !no_color() && std::io::stderr().is_terminal()
}

fn paint_if(on: bool, code: &str, text: &str) -> String {
    if on {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

/// `text` in the SGR colour `code` (`"1"` bold, `"36"` cyan…), for stdout.
pub fn paint(code: &str, text: &str) -> String {
    paint_if(color_enabled(), code, text)
}

pub fn red(text: &str) -> String {
    paint("31", text)
}
pub fn green(text: &str) -> String {
    paint("32", text)
}
pub fn bold(text: &str) -> String {
    paint("1", text)
}
pub fn dim(text: &str) -> String {
    paint("2", text)
}
/// Yellow (warnings), for stdout.
pub fn yellow(text: &str) -> String {
    paint("33", text)
}

/// Red, for stderr.
pub fn err_red(text: &str) -> String {
    paint_if(err_color_enabled(), "31", text)
}
/// Green, for stderr.
pub fn err_green(text: &str) -> String {
    paint_if(err_color_enabled(), "32", text)
}
/// Dim, for stderr.
pub fn err_dim(text: &str) -> String {
    paint_if(err_color_enabled(), "2", text)
}

/// Yellow, for stderr.
pub fn err_yellow(text: &str) -> String {
    paint_if(err_color_enabled(), "33", text)
}

/// `error`, for stderr (where every error message goes).
pub fn error_label() -> String {
    err_red("error")
}

/// `text` with control characters written as escapes (`\n`, `\t`, `\x1b`…): for names
/// and values from a workflow file printed in a table, which a newline would break and an
/// escape sequence could use to rewrite the terminal.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // `is_control` is Unicode's Cc: C0, DEL and C1, all below U+0100.
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A line of a job's output made safe to print on a terminal: colour and style sequences
/// (SGR, `ESC [ … m`) stay, as GitHub's log viewer shows them; every other control character
/// but a tab is written as an escape (`\x1b`…), so that a job cannot move the cursor, clear
/// or retitle the terminal, write the clipboard (OSC 52) or draw over the run's own lines.
pub fn terminal_safe(line: &str) -> std::borrow::Cow<'_, str> {
    if !line.chars().any(|c| c.is_control() && c != '\t') {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len() + 8);
    let mut rest = line;
    while let Some(c) = rest.chars().next() {
        if let Some(len) = sgr_len(rest) {
            out.push_str(&rest[..len]);
            rest = &rest[len..];
            continue;
        }
        match c {
            '\t' => out.push('\t'),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
        rest = &rest[c.len_utf8()..];
    }
    std::borrow::Cow::Owned(out)
}

/// The length of the SGR sequence (`ESC [ 1;31 m`) `s` starts with, if it starts with one.
fn sgr_len(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    if b.first() != Some(&0x1b) || b.get(1) != Some(&b'[') {
        return None;
    }
    let params = b[2..]
        .iter()
        .take_while(|c| c.is_ascii_digit() || **c == b';' || **c == b':')
        .count();
    (b.get(2 + params) == Some(&b'm')).then_some(3 + params)
}

/// A workflow error or warning as one line: `path:line:col: message` (`path: message` for
/// one GitHub gives no position, such as an empty file), control characters escaped.
pub fn diagnostic_line(path: &str, line: u32, col: u32, message: &str, warning: bool) -> String {
    let label = if warning { "warning: " } else { "" };
    let text = if line == 0 {
        format!("{path}: {label}{message}")
    } else {
        format!("{path}:{line}:{col}: {label}{message}")
    };
    printable(&text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::{diagnostic_line, printable, terminal_safe};

    #[test]
    fn job_output_keeps_its_colours_but_cannot_drive_the_terminal() {
        assert_eq!(terminal_safe("plain\ttext"), "plain\ttext");
        assert_eq!(
            terminal_safe("\x1b[1;31mred\x1b[0m ok"),
            "\x1b[1;31mred\x1b[0m ok",
            "colours stay"
        );
        // Clipboard (OSC 52), clear screen, cursor up and erase line, a bell.
        assert_eq!(
            terminal_safe("x\x1b]52;c;SGVsbG8=\x07y\x1b[2J\x1b[1A\x1b[2Kforged"),
            "x\\x1b]52;c;SGVsbG8=\\x07y\\x1b[2J\\x1b[1A\\x1b[2Kforged"
        );
        assert_eq!(
            terminal_safe("\x1b[31"),
            "\\x1b[31",
            "an unfinished sequence"
        );
        assert_eq!(terminal_safe("é\u{9b}2J"), "é\\x9b2J", "C1's CSI too");
    }

    #[test]
    fn a_diagnostic_without_a_position_names_only_its_file() {
        assert_eq!(
            diagnostic_line("a.yml", 3, 7, "bad", false),
            "a.yml:3:7: bad"
        );
        assert_eq!(
            diagnostic_line("a.yml", 3, 7, "odd", true),
            "a.yml:3:7: warning: odd"
        );
        assert_eq!(
            diagnostic_line("e.yml", 0, 0, "empty", false),
            "e.yml: empty"
        );
    }

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(
            printable("build (ubuntu, 3.12) ✓"),
            "build (ubuntu, 3.12) ✓"
        );
        assert_eq!(
            printable("a\nb\tc\u{1b}[2Jd\u{85}"),
            "a\\nb\\tc\\x1b[2Jd\\x85"
        );
    }
}
