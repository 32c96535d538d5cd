//! Read-time checks of `${{ }}` expressions: syntax, which named contexts and which functions
//! a key may use (GitHub's context availability), and whether a condition calls a status
//! function. Evaluation belongs to `firebreak-expr`; this module only validates, so the
//! workflow reader can report GitHub's messages at the right positions.

/// Contexts and functions a key may use, in the schema's notation: named values (`github`)
/// and functions with parameter bounds (`success(0,MAX)`, `hashFiles(1,255)`).
#[derive(Clone, Debug, Default)]
pub(crate) struct Allowed {
    pub named: Vec<String>,
    pub functions: Vec<(String, usize, usize)>,
}

impl Allowed {
    pub(crate) fn from_context(ctx: &[&str]) -> Self {
        let mut a = Allowed::default();
        for item in ctx {
            if let Some(open) = item.find('(') {
                let name = &item[..open];
                let args = item[open + 1..].trim_end_matches(')');
                let (min, max) = args.split_once(',').unwrap_or((args, args));
                let min = min.parse().unwrap_or(0);
                let max = if max == "MAX" {
                    usize::MAX
                } else {
                    max.parse().unwrap_or(usize::MAX)
                };
                a.functions.push((name.to_ascii_lowercase(), min, max));
            } else {
                a.named.push(item.to_ascii_lowercase());
            }
        }
        a
    }
}

const MAX_DEPTH: usize = 50;
pub(crate) const MAX_LENGTH: usize = 21_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum T {
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Dot,
    Bang,
    BangEq,
    EqEq,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
    Star,
    Str,
    Num,
    True,
    False,
    Null,
    Ident,
    Eof,
}

#[derive(Clone, Copy, Debug)]
struct Tok {
    t: T,
    /// 0-based char offsets of the lexeme (`start..end`)
    start: usize,
    end: usize,
}

/// A unit of expression text the lexer and parser walk: a byte of an ASCII expression (then
/// byte offsets are the character positions GitHub's messages count), or a `char` of any
/// other. Most expressions are ASCII and are checked without decoding them first.
trait Unit: Copy {
    fn ch(self) -> char;
}

impl Unit for u8 {
    /// Only for ASCII text (checked by [`check_full`]).
    fn ch(self) -> char {
        char::from(self)
    }
}

impl Unit for char {
    fn ch(self) -> char {
        self
    }
}

fn is_boundary(c: char) -> bool {
    /// ASCII boundaries: the punctuation below and ASCII whitespace (what `char::is_whitespace`
    /// says for ASCII: space, `\t`, `\n`, `\x0B`, `\x0C`, `\r`).
    static ASCII: [bool; 128] = {
        let mut t = [false; 128];
        let chars = b"([)],.!><=&| \t\n\x0B\x0C\r";
        let mut i = 0;
        while i < chars.len() {
            t[chars[i] as usize] = true;
            i += 1;
        }
        t
    };
    match ASCII.get(c as usize) {
        Some(&b) => b,
        None => c.is_whitespace(),
    }
}

fn legal_identifier<U: Unit>(s: &[U]) -> bool {
    let mut chars = s.iter().map(|u| u.ch());
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// `cs` spells exactly `s`.
fn chars_eq<U: Unit>(cs: &[U], s: &str) -> bool {
    cs.len() == s.len() && cs.iter().map(|u| u.ch()).eq(s.chars())
}

/// JavaScript `Number(string)` for the lexemes the lexer produces.
fn js_number(s: &str) -> Option<f64> {
    let t = s.trim();
    if t.is_empty() {
        return Some(0.0);
    }
    for (prefix, radix) in [
        ("0x", 16),
        ("0X", 16),
        ("0o", 8),
        ("0O", 8),
        ("0b", 2),
        ("0B", 2),
    ] {
        if let Some(rest) = t.strip_prefix(prefix) {
            if rest.is_empty() {
                return None;
            }
            let mut v = 0f64;
            for c in rest.chars() {
                v = v * radix as f64 + c.to_digit(radix)? as f64;
            }
            return Some(v);
        }
    }
    let body = t.strip_prefix(['+', '-']).unwrap_or(t);
    if body == "Infinity" {
        return Some(if t.starts_with('-') {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        });
    }
    if !body
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
    {
        return None;
    }
    if !body.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        return None;
    }
    t.parse::<f64>().ok()
}

/// GitHub's message for an expression error at character `start` of `input`. The position
/// GitHub gives is 1-based in UTF-16 code units (both its parsers count so): a character
/// outside the Basic Multilingual Plane before the error counts twice.
fn err<U: Unit>(kind: &str, lexeme: &[U], start: usize, input: &str) -> String {
    let lexeme: String = lexeme.iter().map(|u| u.ch()).collect();
    let position = if input.is_ascii() {
        start
    } else {
        input.chars().take(start).map(char::len_utf16).sum()
    } + 1;
    format!("{kind}: '{lexeme}'. Located at position {position} within expression: {input}")
}

fn lex<U: Unit>(input: &str, chars: &[U], toks: &mut Vec<Tok>) -> Result<(), String> {
    if chars.len() > MAX_LENGTH {
        return Err(format!("Exceeded max expression length {MAX_LENGTH}"));
    }
    toks.clear();
    let mut i = 0;
    while i < chars.len() {
        let start = i;
        let c = chars[i].ch();
        i += 1;
        let prev = toks.last().map(|t| t.t);
        let simple = |t: T, toks: &mut Vec<Tok>, end: usize| {
            toks.push(Tok { t, start, end });
        };
        match c {
            '(' => simple(T::LParen, toks, i),
            ')' => simple(T::RParen, toks, i),
            '[' => simple(T::LBracket, toks, i),
            ']' => simple(T::RBracket, toks, i),
            ',' => simple(T::Comma, toks, i),
            '*' => simple(T::Star, toks, i),
            ' ' | '\r' | '\t' | '\n' => {}
            '!' => {
                if at(chars, i) == Some('=') {
                    i += 1;
                    simple(T::BangEq, toks, i)
                } else {
                    simple(T::Bang, toks, i)
                }
            }
            '<' | '>' => {
                let eq = at(chars, i) == Some('=');
                if eq {
                    i += 1;
                }
                let t = match (c, eq) {
                    ('<', false) => T::Lt,
                    ('<', true) => T::Le,
                    ('>', false) => T::Gt,
                    _ => T::Ge,
                };
                simple(t, toks, i)
            }
            '=' | '&' | '|' if at(chars, i) == Some(c) => {
                i += 1;
                let t = match c {
                    '=' => T::EqEq,
                    '&' => T::And,
                    _ => T::Or,
                };
                simple(t, toks, i)
            }
            '\'' => {
                loop {
                    if i >= chars.len() {
                        return Err(err("Unexpected symbol", &chars[start..], start, input));
                    }
                    if chars[i].ch() == '\'' {
                        if at(chars, i + 1) == Some('\'') {
                            i += 2;
                            continue;
                        }
                        i += 1;
                        break;
                    }
                    i += 1;
                }
                simple(T::Str, toks, i)
            }
            _ => {
                let number = c.is_ascii_digit()
                    || c == '-'
                    || c == '+'
                    || (c == '.'
                        && !matches!(
                            prev,
                            Some(T::Ident) | Some(T::RBracket) | Some(T::RParen) | Some(T::Star)
                        ));
                if c == '.' && !number {
                    simple(T::Dot, toks, i);
                    continue;
                }
                if number {
                    while i < chars.len() && (!is_boundary(chars[i].ch()) || chars[i].ch() == '.') {
                        i += 1;
                    }
                    let lexeme: String = chars[start..i].iter().map(|u| u.ch()).collect();
                    if js_number(&lexeme).is_none_or(f64::is_nan) {
                        return Err(err("Unexpected symbol", &chars[start..i], start, input));
                    }
                    toks.push(Tok {
                        t: T::Num,
                        start,
                        end: i,
                    });
                } else {
                    while i < chars.len() && !is_boundary(chars[i].ch()) {
                        i += 1;
                    }
                    let lexeme = &chars[start..i];
                    let mut t = T::Ident;
                    if prev != Some(T::Dot) {
                        t = if chars_eq(lexeme, "true") {
                            T::True
                        } else if chars_eq(lexeme, "false") {
                            T::False
                        } else if chars_eq(lexeme, "null") {
                            T::Null
                        } else if chars_eq(lexeme, "NaN") || chars_eq(lexeme, "Infinity") {
                            T::Num
                        } else {
                            T::Ident
                        };
                    }
                    if !legal_identifier(lexeme) {
                        return Err(err("Unexpected symbol", lexeme, start, input));
                    }
                    toks.push(Tok { t, start, end: i });
                }
            }
        }
    }
    toks.push(Tok {
        t: T::Eof,
        start: chars.len(),
        end: chars.len(),
    });
    Ok(())
}

/// The character at `i`, if any.
fn at<U: Unit>(chars: &[U], i: usize) -> Option<char> {
    chars.get(i).map(|u| u.ch())
}

/// Buffers [`check_in`] reuses from one expression to the next.
#[derive(Default)]
pub(crate) struct Scratch {
    chars: Vec<char>,
    toks: Vec<Tok>,
}

struct P<'a, U> {
    toks: &'a [Tok],
    chars: &'a [U],
    i: usize,
    depth: usize,
    input: &'a str,
    allowed: &'a Allowed,
    status_call: bool,
    /// The greatest `depth` reached.
    max_depth: usize,
}

#[derive(PartialEq)]
enum Node {
    Grouping,
    Call,
    Context,
    Other,
}

impl<U: Unit> P<'_, U> {
    fn peek(&self) -> Tok {
        self.toks[self.i.min(self.toks.len() - 1)]
    }
    /// The kind of the next token (the lexer always ends the list with `Eof`).
    fn kind(&self) -> T {
        self.toks.get(self.i).map_or(T::Eof, |t| t.t)
    }
    fn at_end(&self) -> bool {
        self.kind() == T::Eof
    }
    fn check(&self, t: T) -> bool {
        let k = self.kind();
        k != T::Eof && k == t
    }
    /// Consumes the next token when its kind is one of `ts`.
    fn eat_any(&mut self, ts: &[T]) -> bool {
        let k = self.kind();
        if k != T::Eof && ts.contains(&k) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn eat(&mut self, t: T) -> bool {
        if self.check(t) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn prev(&self) -> Tok {
        self.toks[self.i.saturating_sub(1)]
    }
    fn error_at(&self, kind: &str, tok: Tok) -> String {
        err(kind, &self.chars[tok.start..tok.end], tok.start, self.input)
    }
    fn unexpected(&self) -> String {
        if self.at_end() {
            return self.error_at("Unexpected end of expression", self.prev());
        }
        self.error_at("Unexpected symbol", self.peek())
    }
    fn incr(&mut self) -> Result<(), String> {
        self.depth += 1;
        self.max_depth = self.max_depth.max(self.depth);
        if self.depth > MAX_DEPTH {
            return Err(format!("Exceeded max expression depth {MAX_DEPTH}"));
        }
        Ok(())
    }

    fn expression(&mut self) -> Result<Node, String> {
        self.incr()?;
        let r = self.logical(true);
        self.depth -= 1;
        r
    }

    fn logical(&mut self, or: bool) -> Result<Node, String> {
        let op = if or { T::Or } else { T::And };
        let mut n = if or {
            self.logical(false)?
        } else {
            self.equality()?
        };
        if self.check(op) {
            self.incr()?;
            while self.eat(op) {
                if or {
                    self.logical(false)?;
                } else {
                    self.equality()?;
                }
            }
            self.depth -= 1;
            n = Node::Other;
        }
        Ok(n)
    }

    fn equality(&mut self) -> Result<Node, String> {
        let mut n = self.comparison()?;
        while self.eat_any(&[T::BangEq, T::EqEq]) {
            self.comparison()?;
            n = Node::Other;
        }
        Ok(n)
    }

    fn comparison(&mut self) -> Result<Node, String> {
        let mut n = self.unary()?;
        while self.eat_any(&[T::Gt, T::Ge, T::Lt, T::Le]) {
            self.unary()?;
            n = Node::Other;
        }
        Ok(n)
    }

    fn unary(&mut self) -> Result<Node, String> {
        if self.eat(T::Bang) {
            self.incr()?;
            self.unary()?;
            self.depth -= 1;
            return Ok(Node::Other);
        }
        self.index()
    }

    fn index(&mut self) -> Result<Node, String> {
        let n = self.call()?;
        let mut increased = 0;
        let mut out = n;
        if matches!(out, Node::Grouping | Node::Call | Node::Context) {
            loop {
                if self.eat(T::LBracket) {
                    if !self.eat(T::Star) {
                        self.expression()?;
                    }
                    if !self.eat(T::RBracket) {
                        return Err(self.unexpected());
                    }
                    self.incr()?;
                    increased += 1;
                    out = Node::Context;
                } else if self.eat(T::Dot) {
                    self.incr()?;
                    increased += 1;
                    if !(self.eat(T::Ident) || self.eat(T::Star)) {
                        return Err(self.unexpected());
                    }
                    out = Node::Context;
                } else {
                    break;
                }
            }
        }
        self.depth -= increased;
        Ok(out)
    }

    fn call(&mut self) -> Result<Node, String> {
        if !self.check(T::Ident) {
            return self.primary();
        }
        let ident = self.peek();
        self.i += 1;
        // Identifiers are ASCII (checked by the lexer): lower-case them without allocating.
        let name = &self.chars[ident.start..ident.end];
        let mut buf = [0u8; 64];
        let long: String;
        let lower: &str = if name.len() <= buf.len() {
            for (b, c) in buf.iter_mut().zip(name) {
                *b = (c.ch() as u8).to_ascii_lowercase();
            }
            std::str::from_utf8(&buf[..name.len()]).unwrap_or("")
        } else {
            long = name
                .iter()
                .map(|u| u.ch())
                .collect::<String>()
                .to_ascii_lowercase();
            &long
        };
        // Arity errors name the call's `(`, as the runner's parser does (and our engine).
        let lparen = self.peek();
        if !self.eat(T::LParen) {
            if !self.allowed.named.iter().any(|n| n == lower) {
                return Err(self.error_at("Unrecognized named-value", ident));
            }
            return Ok(Node::Context);
        }
        let mut args = 0usize;
        while !self.eat(T::RParen) {
            if self.at_end() {
                return Err(self.error_at("Unexpected end of expression", self.prev()));
            }
            self.expression()?;
            args += 1;
            if !self.check(T::RParen) {
                if !self.eat(T::Comma) {
                    return Err(self.unexpected());
                }
                // No trailing comma: `f(1,)` is an error, as in GitHub's runner (and ours).
                if self.check(T::RParen) {
                    return Err(self.unexpected());
                }
            }
        }
        // The built-in functions' counts are the expression engine's, so that `check` and
        // `run` agree.
        let bounds = firebreak_expr::builtin_arity(lower).or_else(|| {
            self.allowed
                .functions
                .iter()
                .find(|(n, _, _)| *n == lower)
                .map(|(_, a, b)| (*a, *b))
        });
        match bounds {
            None => return Err(self.error_at("Unrecognized function", ident)),
            Some((min, _)) if args < min => {
                return Err(self.error_at("Too few parameters supplied", lparen))
            }
            Some((_, max)) if args > max => {
                return Err(self.error_at("Too many parameters supplied", lparen))
            }
            _ => {}
        }
        if lower == "case" && args.is_multiple_of(2) {
            return Err(self.error_at(
                "Even number of parameters supplied, requires an odd number of parameters",
                lparen,
            ));
        }
        if matches!(lower, "success" | "failure" | "cancelled" | "always") {
            self.status_call = true;
        }
        Ok(Node::Call)
    }

    fn primary(&mut self) -> Result<Node, String> {
        if self.eat_any(&[T::False, T::True, T::Null, T::Num, T::Str]) {
            return Ok(Node::Other);
        }
        if self.eat(T::LParen) {
            self.expression()?;
            if self.at_end() {
                return Err(self.error_at("Unexpected end of expression", self.prev()));
            }
            if !self.eat(T::RParen) {
                return Err(self.unexpected());
            }
            return Ok(Node::Grouping);
        }
        if self.at_end() {
            return Err(self.error_at("Unexpected end of expression", self.prev()));
        }
        Err(self.unexpected())
    }
}

/// An expression that checked fine, parsed again for what only its tree tells (warnings about
/// `format()` calls), when it may call `format()`: a cheap test spares the others the parse.
pub(crate) fn parse_if_format(expr: &str) -> Option<firebreak_expr::Expr> {
    let mentions = expr
        .as_bytes()
        .windows(7)
        .any(|w| w.eq_ignore_ascii_case(b"format("));
    mentions.then(|| firebreak_expr::parse(expr).ok()).flatten()
}

/// Warnings about an expression that checked fine: the errors GitHub's runner will give its
/// `format()` calls ([`firebreak_expr::Expr::format_string_problems`]).
pub(crate) fn format_warnings(expr: &str) -> Vec<String> {
    parse_if_format(expr)
        .map(|e| e.format_string_problems())
        .unwrap_or_default()
}

/// What a successful check found out about an expression.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Checked {
    /// The expression calls `success()`, `failure()`, `cancelled()` or `always()`.
    pub status_function: bool,
    /// How deep the parse went (the limit is [`MAX_DEPTH`]).
    pub depth: usize,
    /// Length in characters.
    pub chars: usize,
}

/// Checks an expression's syntax and the contexts/functions it uses. The error is GitHub's
/// message (e.g. `Unrecognized named-value: 'env'. Located at position 1 within expression: env.x`).
#[cfg(test)]
pub(crate) fn check(expr: &str, allowed: &Allowed) -> Result<Checked, String> {
    check_in(expr, allowed, &mut Scratch::default())
}

/// [`check`] with reusable buffers.
pub(crate) fn check_in(
    expr: &str,
    allowed: &Allowed,
    scratch: &mut Scratch,
) -> Result<Checked, String> {
    if let Some(checked) = check_path(expr, allowed) {
        return Ok(checked);
    }
    check_full(expr, allowed, scratch)
}

/// [`check_in`] without the shortcut for property paths: lexes and parses `expr`.
fn check_full(expr: &str, allowed: &Allowed, scratch: &mut Scratch) -> Result<Checked, String> {
    let Scratch { chars, toks } = scratch;
    if expr.is_ascii() {
        return check_units(expr, expr.as_bytes(), allowed, toks);
    }
    chars.clear();
    chars.extend(expr.chars());
    check_units(expr, chars, allowed, toks)
}

/// [`check_full`] over `expr`'s bytes (ASCII) or its decoded chars.
fn check_units<U: Unit>(
    expr: &str,
    chars: &[U],
    allowed: &Allowed,
    toks: &mut Vec<Tok>,
) -> Result<Checked, String> {
    lex(expr, chars, toks)?;
    let mut p = P {
        toks,
        chars,
        i: 0,
        depth: 0,
        input: expr,
        allowed,
        status_call: false,
        max_depth: 0,
    };
    if p.at_end() {
        return Ok(Checked {
            chars: p.chars.len(),
            ..Checked::default()
        });
    }
    p.expression()?;
    if !p.at_end() {
        return Err(p.unexpected());
    }
    Ok(Checked {
        status_function: p.status_call,
        depth: p.max_depth,
        chars: p.chars.len(),
    })
}

/// The result [`check_in`] gives for the most common expression shape, a property path of an
/// allowed context (`matrix.os`, `needs.build.outputs.version`), without lexing and parsing
/// it; `None` for anything else (other shapes, errors, limits), which takes the full check.
///
/// The shape: ASCII identifiers (`[A-Za-z_][A-Za-z0-9_-]*`) separated by single dots, with no
/// spaces, where the first is an allowed named value (compared ASCII-case-insensitively, like
/// the parser) and not a keyword the lexer reads as a literal. The full check parses exactly
/// that as a named value followed by one property access per dot, each one level deeper.
fn check_path(expr: &str, allowed: &Allowed) -> Option<Checked> {
    let b = expr.as_bytes();
    let ident_start = |c: u8| c.is_ascii_alphabetic() || c == b'_';
    let ident_rest = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'-';
    // the first identifier
    if !ident_start(*b.first()?) {
        return None;
    }
    let first_end = b.iter().position(|&c| !ident_rest(c)).unwrap_or(b.len());
    let first = &expr[..first_end];
    if matches!(first, "true" | "false" | "null" | "NaN" | "Infinity") {
        return None;
    }
    if !allowed.named.iter().any(|n| n.eq_ignore_ascii_case(first)) {
        return None;
    }
    // `.ident` segments
    let mut dots = 0usize;
    let mut i = first_end;
    while i < b.len() {
        if b[i] != b'.' || !ident_start(*b.get(i + 1)?) {
            return None;
        }
        i += 2;
        while i < b.len() && ident_rest(b[i]) {
            i += 1;
        }
        dots += 1;
    }
    let depth = 1 + dots;
    if depth > MAX_DEPTH || b.len() > MAX_LENGTH {
        return None;
    }
    Some(Checked {
        status_function: false,
        depth,
        chars: b.len(),
    })
}

/// Whether `success() && (<expr>)` passes [`check_in`] given that `<expr>` passed it with
/// `checked`: the wrapper nests `<expr>` two levels deeper, adds 15 characters and calls
/// `success()`; everything else parses the same way.
pub(crate) fn wrapped_in_success_passes(checked: &Checked, allowed: &Allowed) -> bool {
    checked.depth + 2 <= MAX_DEPTH
        && checked.chars + 15 <= MAX_LENGTH
        && allowed
            .functions
            .iter()
            .any(|(n, min, _)| n == "success" && *min == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(ctx: &[&str]) -> Allowed {
        Allowed::from_context(ctx)
    }

    #[test]
    fn success_wrapper_shortcut_agrees() {
        let a = allowed(&["github", "matrix", "success(0,0)"]);
        let deep = |n: usize| format!("{}github.x{}", "(".repeat(n), ")".repeat(n));
        let long = format!("'{}' == github.x", "a".repeat(MAX_LENGTH - 20));
        let cases = [
            "github.x == 'a'",
            "matrix.a && github.b",
            ".5 < 1",
            "!github.x",
            &deep(45),
            &deep(48),
            &long,
        ];
        for e in cases {
            let Ok(c) = check(e, &a) else { continue };
            let full = check(&format!("success() && ({e})"), &a).is_ok();
            assert!(!wrapped_in_success_passes(&c, &a) || full, "{e}");
            if e.len() < 200 && c.depth < 45 {
                assert!(wrapped_in_success_passes(&c, &a), "{e}");
            }
        }
        let deep_ok = (0..60)
            .map(deep)
            .rfind(|e| check(e, &a).is_ok())
            .unwrap_or_default();
        let c = check(&deep_ok, &a).expect("a value");
        assert!(!wrapped_in_success_passes(&c, &a));
        assert!(check(&format!("success() && ({deep_ok})"), &a).is_err());
        let no_success = allowed(&["github"]);
        let c = check("github.x", &no_success).expect("a value");
        assert!(!wrapped_in_success_passes(&c, &no_success));
    }

    #[test]
    fn property_path_shortcut_agrees_with_the_parser() {
        let a = allowed(&["github", "matrix", "needs", "Steps", "success(0,0)"]);
        let deep = |n: usize| format!("github{}", ".a".repeat(n));
        let cases = [
            "github",
            "GitHub.sha",
            "matrix.os",
            "needs.lint.outputs.version",
            "steps.a-b.c_d",
            "github.event.true",
            "github.x.null",
            "_x",
            "env.x",
            "true",
            "null",
            "NaN",
            "Infinity",
            "github.",
            "github..a",
            "github.0",
            "github.a-",
            "github .a",
            "github.a b",
            "github.*",
            "github['a']",
            "github.a*",
            "github-x.y",
            "-github",
            "github.aé",
            "github\tx",
            &deep(48),
            &deep(49),
            &deep(50),
            &deep(60),
        ];
        for e in cases {
            let full = check_full(e, &a, &mut Scratch::default());
            match check_path(e, &a) {
                Some(c) => assert_eq!(Ok(c), full, "{e}"),
                None => {
                    // Declined: only for what is not a plain property path of an allowed
                    // context, or past the depth limit.
                    let path = e.split('.').all(|s| {
                        s.chars()
                            .next()
                            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                            && s.chars()
                                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                    });
                    let known = a.named.iter().any(|n| {
                        e.split('.')
                            .next()
                            .is_some_and(|f| f.eq_ignore_ascii_case(n))
                    });
                    let keyword = matches!(e, "true" | "false" | "null" | "NaN" | "Infinity");
                    assert!(
                        !path || !known || keyword || e.split('.').count() >= 50,
                        "{e}"
                    );
                }
            }
        }
    }

    #[test]
    fn boundaries_match_the_definition() {
        for c in (0..0x3100u32).filter_map(char::from_u32) {
            let expected = matches!(
                c,
                '(' | '[' | ')' | ']' | ',' | '.' | '!' | '>' | '<' | '=' | '&' | '|'
            ) || c.is_whitespace();
            assert_eq!(is_boundary(c), expected, "{c:?}");
        }
    }

    #[test]
    fn syntax() {
        let a = allowed(&["github", "steps", "success(0,0)"]);
        assert!(check("github.event_name == 'push'", &a).is_ok());
        assert!(
            check("steps.a.outputs['x'] && success()", &a)
                .expect("a value")
                .status_function
        );
        assert!(
            !check("true || 'success()'", &a)
                .expect("a value")
                .status_function
        );
        assert!(check("format('{0}', github.sha)", &a).is_ok());
        let e = check("(steps.a != 'Skipped) && success()", &a).expect_err("an error");
        assert!(
            e.starts_with("Unexpected symbol: ''Skipped) && success()'. Located at position 13"),
            "{e}"
        );
        assert!(check("env.x", &a)
            .expect_err("an error")
            .starts_with("Unrecognized named-value: 'env'"));
        assert!(check("success(1)", &a)
            .expect_err("an error")
            .starts_with("Too many parameters supplied"));
        assert!(check("foo()", &a)
            .expect_err("an error")
            .starts_with("Unrecognized function"));
        assert!(check("1 +", &a).is_err());
        assert!(check("-1 < 2.5", &a).is_ok());
        assert!(check("github.a[*].b", &a).is_ok());
        assert!(check("github.", &a).is_err());
        assert!(check("(", &a).is_err());
    }

    /// ASCII expressions are checked over their bytes, others over their chars: lexemes and
    /// lengths are characters either way, positions UTF-16 code units (as GitHub's).
    #[test]
    fn non_ascii_expressions_count_characters() {
        let a = allowed(&["github"]);
        let e = check("'é' == 'ü' && nope.x", &a).expect_err("an error");
        assert!(
            e.starts_with("Unrecognized named-value: 'nope'. Located at position 15 within"),
            "{e}"
        );
        let e = check("'é' == 'ü' && nöpe", &a).expect_err("an error");
        assert!(
            e.starts_with("Unexpected symbol: 'nöpe'. Located at position 15 within"),
            "{e}"
        );
        let e = check("'ascii' == 'x' && nope.x", &a).expect_err("an error");
        assert!(e.contains("Located at position 19 within"), "{e}");
        // Positions are GitHub's: UTF-16 code units, so an emoji counts twice.
        let e = check("'😀' == nope.x", &a).expect_err("an error");
        assert!(e.contains("Located at position 9 within"), "{e}");
        assert_eq!(check("'é' == github.x", &a).expect("ok").chars, 15);
        assert_eq!(check("'e' == github.x", &a).expect("ok").chars, 15);
    }
}
