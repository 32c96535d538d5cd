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
                let max = if max == "MAX" { usize::MAX } else { max.parse().unwrap_or(usize::MAX) };
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

#[derive(Clone, Debug)]
struct Tok {
    t: T,
    lexeme: String,
    /// 0-based char offset
    start: usize,
}

fn is_boundary(c: char) -> bool {
    matches!(c, '(' | '[' | ')' | ']' | ',' | '.' | '!' | '>' | '<' | '=' | '&' | '|') || c.is_whitespace()
}

fn legal_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// JavaScript `Number(string)` for the lexemes the lexer produces.
fn js_number(s: &str) -> Option<f64> {
    let t = s.trim();
    if t.is_empty() {
        return Some(0.0);
    }
    for (prefix, radix) in [("0x", 16), ("0X", 16), ("0o", 8), ("0O", 8), ("0b", 2), ("0B", 2)] {
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
        return Some(if t.starts_with('-') { f64::NEG_INFINITY } else { f64::INFINITY });
    }
    if !body.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-')) {
        return None;
    }
    if !body.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        return None;
    }
    t.parse::<f64>().ok()
}

fn err(kind: &str, lexeme: &str, start: usize, input: &str) -> String {
    format!("{kind}: '{lexeme}'. Located at position {} within expression: {input}", start + 1)
}

fn lex(input: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = input.chars().collect();
    if chars.len() > MAX_LENGTH {
        return Err(format!("Exceeded max expression length {MAX_LENGTH}"));
    }
    let mut toks: Vec<Tok> = Vec::new();
    let mut i = 0;
    let text = |a: usize, b: usize| -> String { chars[a..b].iter().collect() };
    while i < chars.len() {
        let start = i;
        let c = chars[i];
        i += 1;
        let prev = toks.last().map(|t| t.t);
        let simple = |t: T, toks: &mut Vec<Tok>, end: usize| {
            toks.push(Tok { t, lexeme: text(start, end), start });
        };
        match c {
            '(' => simple(T::LParen, &mut toks, i),
            ')' => simple(T::RParen, &mut toks, i),
            '[' => simple(T::LBracket, &mut toks, i),
            ']' => simple(T::RBracket, &mut toks, i),
            ',' => simple(T::Comma, &mut toks, i),
            '*' => simple(T::Star, &mut toks, i),
            ' ' | '\r' | '\t' | '\n' => {}
            '!' => {
                if chars.get(i) == Some(&'=') {
                    i += 1;
                    simple(T::BangEq, &mut toks, i)
                } else {
                    simple(T::Bang, &mut toks, i)
                }
            }
            '<' | '>' => {
                let eq = chars.get(i) == Some(&'=');
                if eq {
                    i += 1;
                }
                let t = match (c, eq) {
                    ('<', false) => T::Lt,
                    ('<', true) => T::Le,
                    ('>', false) => T::Gt,
                    _ => T::Ge,
                };
                simple(t, &mut toks, i)
            }
            '=' | '&' | '|' if chars.get(i) == Some(&c) => {
                i += 1;
                let t = match c {
                    '=' => T::EqEq,
                    '&' => T::And,
                    _ => T::Or,
                };
                simple(t, &mut toks, i)
            }
            '\'' => {
                loop {
                    if i >= chars.len() {
                        return Err(err("Unexpected symbol", &text(start, chars.len()), start, input));
                    }
                    if chars[i] == '\'' {
                        if chars.get(i + 1) == Some(&'\'') {
                            i += 2;
                            continue;
                        }
                        i += 1;
                        break;
                    }
                    i += 1;
                }
                simple(T::Str, &mut toks, i)
            }
            _ => {
                let number = c.is_ascii_digit()
                    || c == '-'
                    || c == '+'
                    || (c == '.'
                        && !matches!(prev, Some(T::Ident) | Some(T::RBracket) | Some(T::RParen) | Some(T::Star)));
                if c == '.' && !number {
                    simple(T::Dot, &mut toks, i);
                    continue;
                }
                if number {
                    while i < chars.len() && (!is_boundary(chars[i]) || chars[i] == '.') {
                        i += 1;
                    }
                    let lexeme = text(start, i);
                    if js_number(&lexeme).is_none_or(f64::is_nan) {
                        return Err(err("Unexpected symbol", &lexeme, start, input));
                    }
                    toks.push(Tok { t: T::Num, lexeme, start });
                } else {
                    while i < chars.len() && !is_boundary(chars[i]) {
                        i += 1;
                    }
                    let lexeme = text(start, i);
                    let mut t = T::Ident;
                    if prev != Some(T::Dot) {
                        t = match lexeme.as_str() {
                            "true" => T::True,
                            "false" => T::False,
                            "null" => T::Null,
                            "NaN" | "Infinity" => T::Num,
                            _ => T::Ident,
                        };
                    }
                    if !legal_identifier(&lexeme) {
                        return Err(err("Unexpected symbol", &lexeme, start, input));
                    }
                    toks.push(Tok { t, lexeme, start });
                }
            }
        }
    }
    toks.push(Tok { t: T::Eof, lexeme: String::new(), start: chars.len() });
    Ok(toks)
}

struct P<'a> {
    toks: Vec<Tok>,
    i: usize,
    depth: usize,
    input: &'a str,
    allowed: &'a Allowed,
    status_call: bool,
}

#[derive(PartialEq)]
enum Node {
    Grouping,
    Call,
    Context,
    Other,
}

impl P<'_> {
    fn peek(&self) -> &Tok {
        &self.toks[self.i.min(self.toks.len() - 1)]
    }
    fn at_end(&self) -> bool {
        self.peek().t == T::Eof
    }
    fn check(&self, t: T) -> bool {
        !self.at_end() && self.peek().t == t
    }
    fn eat(&mut self, t: T) -> bool {
        if self.check(t) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn prev(&self) -> &Tok {
        &self.toks[self.i.saturating_sub(1)]
    }
    fn error_at(&self, kind: &str, tok: &Tok) -> String {
        err(kind, &tok.lexeme, tok.start, self.input)
    }
    fn unexpected(&self) -> String {
        if self.at_end() {
            return self.error_at("Unexpected end of expression", self.prev());
        }
        self.error_at("Unexpected symbol", self.peek())
    }
    fn incr(&mut self) -> Result<(), String> {
        self.depth += 1;
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
        let mut n = if or { self.logical(false)? } else { self.equality()? };
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
        while self.eat(T::BangEq) || self.eat(T::EqEq) {
            self.comparison()?;
            n = Node::Other;
        }
        Ok(n)
    }

    fn comparison(&mut self) -> Result<Node, String> {
        let mut n = self.unary()?;
        while self.eat(T::Gt) || self.eat(T::Ge) || self.eat(T::Lt) || self.eat(T::Le) {
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
        let ident = self.peek().clone();
        self.i += 1;
        let lower = ident.lexeme.to_ascii_lowercase();
        if !self.eat(T::LParen) {
            if !self.allowed.named.contains(&lower) {
                return Err(self.error_at("Unrecognized named-value", &ident));
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
            if !self.check(T::RParen) && !self.eat(T::Comma) {
                return Err(self.unexpected());
            }
        }
        let builtin: Option<(usize, usize)> = match lower.as_str() {
            "contains" | "startswith" | "endswith" => Some((2, 2)),
            "format" => Some((1, usize::MAX)),
            "join" => Some((1, 2)),
            "tojson" | "fromjson" => Some((1, 1)),
            "case" => Some((3, usize::MAX)),
            _ => None,
        };
        let bounds = builtin.or_else(|| {
            self.allowed.functions.iter().find(|(n, _, _)| *n == lower).map(|(_, a, b)| (*a, *b))
        });
        match bounds {
            None => return Err(self.error_at("Unrecognized function", &ident)),
            Some((min, _)) if args < min => return Err(self.error_at("Too few parameters supplied", &ident)),
            Some((_, max)) if args > max => return Err(self.error_at("Too many parameters supplied", &ident)),
            _ => {}
        }
        if matches!(lower.as_str(), "success" | "failure" | "cancelled" | "always") {
            self.status_call = true;
        }
        Ok(Node::Call)
    }

    fn primary(&mut self) -> Result<Node, String> {
        if self.eat(T::False) || self.eat(T::True) || self.eat(T::Null) || self.eat(T::Num) || self.eat(T::Str) {
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

/// What a successful check found out about an expression.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Checked {
    /// The expression calls `success()`, `failure()`, `cancelled()` or `always()`.
    pub status_function: bool,
}

/// Checks an expression's syntax and the contexts/functions it uses. The error is GitHub's
/// message (e.g. `Unrecognized named-value: 'env'. Located at position 1 within expression: env.x`).
pub(crate) fn check(expr: &str, allowed: &Allowed) -> Result<Checked, String> {
    let toks = lex(expr)?;
    let mut p = P { toks, i: 0, depth: 0, input: expr, allowed, status_call: false };
    if p.at_end() {
        return Ok(Checked::default());
    }
    p.expression()?;
    if !p.at_end() {
        return Err(p.unexpected());
    }
    Ok(Checked { status_function: p.status_call })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(ctx: &[&str]) -> Allowed {
        Allowed::from_context(ctx)
    }

    #[test]
    fn syntax() {
        let a = allowed(&["github", "steps", "success(0,0)"]);
        assert!(check("github.event_name == 'push'", &a).is_ok());
        assert!(check("steps.a.outputs['x'] && success()", &a).expect("a value").status_function);
        assert!(!check("true || 'success()'", &a).expect("a value").status_function);
        assert!(check("format('{0}', github.sha)", &a).is_ok());
        let e = check("(steps.a != 'Skipped) && success()", &a).expect_err("an error");
        assert!(e.starts_with("Unexpected symbol: ''Skipped) && success()'. Located at position 13"), "{e}");
        assert!(check("env.x", &a).expect_err("an error").starts_with("Unrecognized named-value: 'env'"));
        assert!(check("success(1)", &a).expect_err("an error").starts_with("Too many parameters supplied"));
        assert!(check("foo()", &a).expect_err("an error").starts_with("Unrecognized function"));
        assert!(check("1 +", &a).is_err());
        assert!(check("-1 < 2.5", &a).is_ok());
        assert!(check("github.a[*].b", &a).is_ok());
        assert!(check("github.", &a).is_err());
        assert!(check("(", &a).is_err());
    }
}
