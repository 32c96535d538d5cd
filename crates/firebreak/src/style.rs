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
