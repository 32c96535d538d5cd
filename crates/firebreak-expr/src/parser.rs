//! Parser: tokens → AST, with GitHub's precedence, depth limit and error messages.

use crate::lexer::{lex, Tk, Token};
use crate::value::eq_ignore_case;

/// Deepest expression tree GitHub accepts (every operator, index, call and operand is a level;
/// parentheses are not).
pub const MAX_DEPTH: usize = 50;

/// Bound on the parser's own nesting (parentheses, arguments, indexes, `!`, operator chains).
/// A tree within [`MAX_DEPTH`] rarely needs more than 50; the bound keeps hostile input (say
/// 10,000 `(`) from exhausting the stack, even in debug builds on 2 MiB threads.
const MAX_NESTING: usize = 64;

/// Why an expression could not be parsed. `Display` gives GitHub's exact message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A token that cannot appear here (or, when `lexical`, that is not a token at all).
    #[error("Unexpected symbol: '{token}'. Located at position {position} within expression: {expression}")]
    UnexpectedSymbol {
        /// The token as GitHub shows it (strings by their value).
        token: String,
        /// 1-based position in UTF-16 code units.
        position: usize,
        /// The whole expression.
        expression: String,
        /// Raised by the tokenizer rather than the parser.
        lexical: bool,
    },
    /// The expression stops after `token`.
    #[error("Unexpected end of expression: '{token}'. Located at position {position} within expression: {expression}")]
    UnexpectedEnd {
        /// The last token before the end.
        token: String,
        /// 1-based position of that token.
        position: usize,
        /// The whole expression.
        expression: String,
    },
    /// A context name that is not available here.
    #[error("Unrecognized named-value: '{name}'. Located at position {position} within expression: {expression}")]
    UnrecognizedNamedValue {
        /// The name as written.
        name: String,
        /// 1-based position of the name.
        position: usize,
        /// The whole expression.
        expression: String,
    },
    /// A function name that is neither built in nor allowed here.
    #[error("Unrecognized function: '{name}'. Located at position {position} within expression: {expression}")]
    UnrecognizedFunction {
        /// The name as written.
        name: String,
        /// 1-based position of the name.
        position: usize,
        /// The whole expression.
        expression: String,
    },
    /// Fewer arguments than the function takes. Like GitHub's runner, the message names the
    /// call's `(` token: `Too few parameters supplied: '('. Located at position 9 ...`.
    #[error("Too few parameters supplied: '('. Located at position {position} within expression: {expression}")]
    TooFewParameters {
        /// The function name as written.
        name: String,
        /// 1-based position of the call's `(`.
        position: usize,
        /// The whole expression.
        expression: String,
    },
    /// More arguments than the function takes (the message names the call's `(` like GitHub).
    #[error("Too many parameters supplied: '('. Located at position {position} within expression: {expression}")]
    TooManyParameters {
        /// The function name as written.
        name: String,
        /// 1-based position of the call's `(`.
        position: usize,
        /// The whole expression.
        expression: String,
    },
    /// `case` needs an odd number of arguments.
    #[error("Even number of parameters supplied, requires an odd number of parameters: '{name}'. Located at position {position} within expression: {expression}")]
    EvenParameters {
        /// The function name as written.
        name: String,
        /// 1-based position of the name.
        position: usize,
        /// The whole expression.
        expression: String,
    },
    /// Nesting deeper than [`MAX_DEPTH`] (GitHub gives no position for this one).
    #[error("Exceeded max expression depth {max}")]
    ExceededMaxDepth {
        /// The limit (50).
        max: usize,
    },
    /// Longer than [`crate::MAX_EXPRESSION_LENGTH`] UTF-16 code units.
    #[error("Exceeded max expression length {max}")]
    ExceededMaxLength {
        /// The limit (21,000).
        max: usize,
    },
}

impl ParseError {
    /// True for errors raised while tokenizing (GitHub's "lexing" errors) rather than parsing.
    pub fn is_lexical(&self) -> bool {
        matches!(
            self,
            ParseError::UnexpectedSymbol { lexical: true, .. }
                | ParseError::ExceededMaxLength { .. }
        )
    }
}

/// Which named values (contexts) and extra functions an expression may use, for
/// [`parse_allowed`]. Names are case-insensitive. Built-in functions (`contains`, `startsWith`,
/// `endsWith`, `format`, `join`, `toJSON`, `fromJSON`, `case`) are always allowed; list host
/// functions such as `hashFiles`, `success`, `always`, `failure`, `cancelled` in `functions`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Allowed<'a> {
    /// Context names, e.g. `["github", "env", "matrix"]`.
    pub named_values: &'a [&'a str],
    /// Host function names beyond the built-ins, e.g. `["hashFiles", "success"]`.
    pub functions: &'a [&'a str],
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// AST node.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    /// A context, by lower-cased name.
    Named(String),
    /// `obj[index]` / `obj.name`; `None` is the `*` filter.
    Index(Box<Node>, Option<Box<Node>>),
    Not(Box<Node>),
    Cmp(CmpOp, Box<Node>, Box<Node>),
    And(Vec<Node>),
    Or(Vec<Node>),
    /// A function call, by lower-cased name.
    Call(String, Vec<Node>),
}

/// A parsed expression: its AST plus the source text it came from.
#[derive(Debug, Clone)]
pub struct Expr {
    pub(crate) src: String,
    /// `None` for an empty expression (which evaluates to `null`).
    pub(crate) root: Option<Node>,
}

const STATUS_FUNCTIONS: [&str; 4] = ["success", "always", "failure", "cancelled"];

impl Expr {
    /// The source text this expression was parsed from.
    pub fn source(&self) -> &str {
        &self.src
    }

    /// True when the expression calls `success()`, `always()`, `failure()` or `cancelled()`
    /// anywhere (GitHub then does not add its implicit `success() &&`).
    pub fn uses_status_function(&self) -> bool {
        fn walk(n: &Node) -> bool {
            match n {
                Node::Call(name, args) => {
                    STATUS_FUNCTIONS.contains(&name.as_str()) || args.iter().any(walk)
                }
                Node::Index(a, b) => walk(a) || b.as_deref().is_some_and(walk),
                Node::Not(a) => walk(a),
                Node::Cmp(_, a, b) => walk(a) || walk(b),
                Node::And(v) | Node::Or(v) => v.iter().any(walk),
                _ => false,
            }
        }
        self.root.as_ref().is_some_and(walk)
    }

    /// True when the expression is a `format()` call whose format string holds text besides
    /// `{N}` placeholders: what a condition such as `if: push == ${{ github.event_name }}`
    /// becomes, a non-empty string that is always truthy (GitHub's language service reports
    /// it).
    pub fn is_format_with_literal_text(&self) -> bool {
        fn check(n: &Node) -> bool {
            match n {
                Node::Call(name, args) if name == "format" => match args.first() {
                    Some(Node::String(s)) => {
                        let mut in_token = false;
                        s.trim().chars().any(|c| match (in_token, c) {
                            (false, '{') => {
                                in_token = true;
                                false
                            }
                            (true, '}') => {
                                in_token = false;
                                false
                            }
                            (true, '0'..='9') => false,
                            _ => true,
                        })
                    }
                    _ => false,
                },
                _ => false,
            }
        }
        self.root.as_ref().is_some_and(check)
    }

    /// The errors GitHub's runner will give, when it evaluates them, the `format()` calls
    /// whose format string is a literal: a malformed placeholder ("The following format
    /// string is invalid") or one past the arguments given ("… references more arguments
    /// than were supplied"). Each call is evaluated with empty strings for its arguments.
    pub fn format_string_problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.visit(&mut |n| {
            let Node::Call(name, args) = n else { return };
            let (true, Some(Node::String(fmt))) = (name == "format", args.first()) else {
                return;
            };
            let probe = Node::Call(
                "format".into(),
                std::iter::once(Node::String(fmt.clone()))
                    .chain((1..args.len()).map(|_| Node::String(String::new())))
                    .collect(),
            );
            let expr = Expr {
                src: String::new(),
                root: Some(probe),
            };
            if let Err(
                e @ (crate::EvalError::InvalidFormatString(_)
                | crate::EvalError::FormatArgumentIndex(_)),
            ) = crate::evaluate(&expr, &crate::EmptyContext)
            {
                out.push(e.to_string());
            }
        });
        out
    }

    /// Calls `f` on every node of the tree, parents before their children, left to right.
    fn visit(&self, f: &mut impl FnMut(&Node)) {
        fn walk(n: &Node, f: &mut impl FnMut(&Node)) {
            f(n);
            match n {
                Node::Call(_, args) | Node::And(args) | Node::Or(args) => {
                    args.iter().for_each(|a| walk(a, f));
                }
                Node::Index(a, b) => {
                    walk(a, f);
                    if let Some(b) = b {
                        walk(b, f);
                    }
                }
                Node::Not(a) => walk(a, f),
                Node::Cmp(_, a, b) => {
                    walk(a, f);
                    walk(b, f);
                }
                _ => {}
            }
        }
        if let Some(r) = &self.root {
            walk(r, f);
        }
    }

    /// True for an empty (or all-whitespace) expression.
    pub fn is_empty(&self) -> bool {
        self.root.is_none()
    }

    /// Lower-cased names of the contexts the expression reads (each once, in order of first use).
    pub fn named_values(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        self.visit(&mut |n| {
            if let Node::Named(name) = n {
                if !out.contains(name) {
                    out.push(name.clone());
                }
            }
        });
        out
    }
}

/// Parses an expression, accepting any named value and any function name (built-in functions
/// and the known host functions still have their argument counts checked).
pub fn parse(src: &str) -> Result<Expr, ParseError> {
    parse_with(src, None)
}

/// Parses an expression, rejecting named values and functions not in `allowed` with GitHub's
/// `Unrecognized named-value` / `Unrecognized function` errors.
pub fn parse_allowed(src: &str, allowed: &Allowed) -> Result<Expr, ParseError> {
    parse_with(src, Some(allowed))
}

fn parse_with(src: &str, allowed: Option<&Allowed>) -> Result<Expr, ParseError> {
    let tokens = lex(src)?;
    let mut p = Parser {
        tokens,
        i: 0,
        depth: 0,
        src,
        allowed,
    };
    let root = if p.at_end() {
        None
    } else {
        let n = p.expression()?;
        if let Some(t) = p.peek() {
            return Err(p.unexpected(t));
        }
        if !depth_ok(&n, 1) {
            return Err(ParseError::ExceededMaxDepth { max: MAX_DEPTH });
        }
        Some(n)
    };
    Ok(Expr {
        src: src.to_string(),
        root,
    })
}

/// GitHub's depth rule: the tree, counting every node (leaves included), is at most
/// [`MAX_DEPTH`] deep.
fn depth_ok(n: &Node, depth: usize) -> bool {
    if depth > MAX_DEPTH {
        return false;
    }
    let next = depth + 1;
    match n {
        Node::Index(a, Some(b)) | Node::Cmp(_, a, b) => depth_ok(a, next) && depth_ok(b, next),
        // The `*` of a filter is a leaf of its own.
        Node::Index(a, None) => next <= MAX_DEPTH && depth_ok(a, next),
        Node::Not(a) => depth_ok(a, next),
        Node::And(v) | Node::Or(v) | Node::Call(_, v) => v.iter().all(|a| depth_ok(a, next)),
        _ => true,
    }
}

/// `(a || b) || c` is one `||` with three operands, as in GitHub's tree.
fn push_flat_or(args: &mut Vec<Node>, n: Node) {
    match n {
        Node::Or(inner) => args.extend(inner),
        n => args.push(n),
    }
}

/// `(a && b) && c` is one `&&` with three operands, as in GitHub's tree.
fn push_flat_and(args: &mut Vec<Node>, n: Node) {
    match n {
        Node::And(inner) => args.extend(inner),
        n => args.push(n),
    }
}

/// Argument counts of the built-in functions (lower-cased name → (min, max)).
pub fn builtin_arity(name: &str) -> Option<(usize, usize)> {
    Some(match name {
        "contains" | "startswith" | "endswith" => (2, 2),
        "format" => (1, 255),
        "join" => (1, 2),
        "tojson" | "fromjson" => (1, 1),
        // GitHub's runner registers it with at most `Byte.MaxValue` arguments, as `format`.
        "case" => (3, 255),
        _ => return None,
    })
}

/// Argument counts of the host functions GitHub defines.
///
/// Status functions take no arguments in step conditions but any number of job ids in job
/// conditions (`success('build', 'lint')`); where each form is allowed is the workflow
/// parser's call, so the expression parser accepts both.
fn host_arity(name: &str) -> Option<(usize, usize)> {
    Some(match name {
        "hashfiles" => (1, 255),
        "success" | "failure" => (0, usize::MAX),
        "always" | "cancelled" => (0, 0),
        _ => return None,
    })
}

struct Parser<'a> {
    tokens: Vec<Token>,
    i: usize,
    /// Current nesting, bounded by [`MAX_NESTING`].
    depth: usize,
    src: &'a str,
    allowed: Option<&'a Allowed<'a>>,
}

impl Parser<'_> {
    fn at_end(&self) -> bool {
        self.i >= self.tokens.len()
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.i)
    }

    fn check(&self, k: Tk) -> bool {
        self.peek().is_some_and(|t| t.kind == k)
    }

    fn eat(&mut self, k: Tk) -> bool {
        if self.check(k) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn eat_any(&mut self, kinds: &[Tk]) -> Option<Tk> {
        let k = self.peek()?.kind;
        if kinds.contains(&k) {
            self.i += 1;
            Some(k)
        } else {
            None
        }
    }

    fn previous(&self) -> Option<&Token> {
        self.i.checked_sub(1).and_then(|j| self.tokens.get(j))
    }

    fn unexpected(&self, t: &Token) -> ParseError {
        ParseError::UnexpectedSymbol {
            token: t.display().to_string(),
            position: t.pos,
            expression: self.src.to_string(),
            lexical: false,
        }
    }

    fn unexpected_end(&self) -> ParseError {
        let (token, position) = self
            .previous()
            .map_or((String::new(), 1), |t| (t.display().to_string(), t.pos));
        ParseError::UnexpectedEnd {
            token,
            position,
            expression: self.src.to_string(),
        }
    }

    /// Error for the current token, or "unexpected end" when there is none.
    fn unexpected_here(&self) -> ParseError {
        match self.peek() {
            Some(t) => self.unexpected(t),
            None => self.unexpected_end(),
        }
    }

    fn consume(&mut self, k: Tk) -> Result<(), ParseError> {
        if self.eat(k) {
            Ok(())
        } else {
            Err(self.unexpected_here())
        }
    }

    fn incr_depth(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(ParseError::ExceededMaxDepth { max: MAX_DEPTH });
        }
        Ok(())
    }

    fn expression(&mut self) -> Result<Node, ParseError> {
        self.incr_depth()?;
        let r = self.logical_or()?;
        self.depth -= 1;
        Ok(r)
    }

    fn logical_or(&mut self) -> Result<Node, ParseError> {
        let first = self.logical_and()?;
        if !self.check(Tk::Or) {
            return Ok(first);
        }
        let mut args = Vec::new();
        push_flat_or(&mut args, first);
        while self.eat(Tk::Or) {
            let next = self.logical_and()?;
            push_flat_or(&mut args, next);
        }
        Ok(Node::Or(args))
    }

    fn logical_and(&mut self) -> Result<Node, ParseError> {
        let first = self.equality()?;
        if !self.check(Tk::And) {
            return Ok(first);
        }
        let mut args = Vec::new();
        push_flat_and(&mut args, first);
        while self.eat(Tk::And) {
            let next = self.equality()?;
            push_flat_and(&mut args, next);
        }
        Ok(Node::And(args))
    }

    fn equality(&mut self) -> Result<Node, ParseError> {
        let mut expr = self.comparison()?;
        let mut added = 0;
        while let Some(k) = self.eat_any(&[Tk::Ne, Tk::EqEq]) {
            // Chains build left-deep trees: count each link towards the nesting bound so no
            // input builds a tree deep enough to trouble the depth check or `Drop`.
            self.incr_depth()?;
            added += 1;
            let right = self.comparison()?;
            let op = if k == Tk::Ne { CmpOp::Ne } else { CmpOp::Eq };
            expr = Node::Cmp(op, Box::new(expr), Box::new(right));
        }
        self.depth -= added;
        Ok(expr)
    }

    fn comparison(&mut self) -> Result<Node, ParseError> {
        let mut expr = self.unary()?;
        let mut added = 0;
        while let Some(k) = self.eat_any(&[Tk::Gt, Tk::Ge, Tk::Lt, Tk::Le]) {
            self.incr_depth()?;
            added += 1;
            let right = self.unary()?;
            let op = match k {
                Tk::Gt => CmpOp::Gt,
                Tk::Ge => CmpOp::Ge,
                Tk::Lt => CmpOp::Lt,
                _ => CmpOp::Le,
            };
            expr = Node::Cmp(op, Box::new(expr), Box::new(right));
        }
        self.depth -= added;
        Ok(expr)
    }

    fn unary(&mut self) -> Result<Node, ParseError> {
        if self.eat(Tk::Bang) {
            self.incr_depth()?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Node::Not(Box::new(inner)));
        }
        self.index()
    }

    fn index(&mut self) -> Result<Node, ParseError> {
        let (mut expr, postfix) = self.call()?;
        if !postfix {
            return Ok(expr);
        }
        let mut added = 0;
        loop {
            if self.eat(Tk::LBracket) {
                let index = if self.eat(Tk::Star) {
                    None
                } else {
                    Some(Box::new(self.expression()?))
                };
                self.consume(Tk::RBracket)?;
                self.incr_depth()?;
                added += 1;
                expr = Node::Index(Box::new(expr), index);
            } else if self.eat(Tk::Dot) {
                self.incr_depth()?;
                added += 1;
                if self.check(Tk::Ident) {
                    let name = self.peek().map(|t| t.lexeme.clone()).unwrap_or_default();
                    self.i += 1;
                    expr = Node::Index(Box::new(expr), Some(Box::new(Node::String(name))));
                } else if self.eat(Tk::Star) {
                    expr = Node::Index(Box::new(expr), None);
                } else {
                    return Err(self.unexpected_here());
                }
            } else {
                break;
            }
        }
        self.depth -= added;
        Ok(expr)
    }

    /// Returns the node and whether postfix `[..]` / `.name` may follow it.
    fn call(&mut self) -> Result<(Node, bool), ParseError> {
        if !self.check(Tk::Ident) {
            return self.primary();
        }
        self.i += 1;
        if self.check(Tk::LParen) {
            self.function_call()
        } else {
            self.named_value()
        }
    }

    /// The identifier just consumed.
    fn ident(&self) -> Token {
        self.previous().cloned().unwrap_or(Token {
            kind: Tk::Ident,
            lexeme: String::new(),
            num: 0.0,
            text: String::new(),
            pos: 1,
        })
    }

    fn named_value(&mut self) -> Result<(Node, bool), ParseError> {
        let ident = self.ident();
        let lower = ident.lexeme.to_ascii_lowercase();
        if let Some(allowed) = self.allowed {
            if !allowed
                .named_values
                .iter()
                .any(|n| eq_ignore_case(n, &ident.lexeme))
            {
                return Err(ParseError::UnrecognizedNamedValue {
                    name: ident.lexeme,
                    position: ident.pos,
                    expression: self.src.to_string(),
                });
            }
        }
        Ok((Node::Named(lower), true))
    }

    fn function_call(&mut self) -> Result<(Node, bool), ParseError> {
        let ident = self.ident();
        let lower = ident.lexeme.to_ascii_lowercase();
        self.i += 1; // `(`
        let paren_pos = self.previous().map_or(ident.pos, |t| t.pos);
        // Like GitHub, an unknown function is reported before its arguments are looked at.
        let arity = self.function_arity(&ident, &lower)?;
        let mut args = Vec::new();
        while !self.eat(Tk::RParen) {
            args.push(self.expression()?);
            if !self.check(Tk::RParen) {
                self.consume(Tk::Comma)?;
                // No trailing comma: `f(1,)` is an error, as in GitHub's runner.
                if self.check(Tk::RParen) {
                    return Err(self.unexpected_here());
                }
            }
        }
        self.check_arity(&ident, &lower, paren_pos, arity, args.len())?;
        Ok((Node::Call(lower, args), true))
    }

    /// Checks that the function exists here; returns its argument counts when known.
    fn function_arity(
        &self,
        ident: &Token,
        lower: &str,
    ) -> Result<Option<(usize, usize)>, ParseError> {
        Ok(match builtin_arity(lower) {
            Some(a) => Some(a),
            None => {
                let listed = match self.allowed {
                    None => true,
                    Some(allowed) => allowed.functions.iter().any(|f| eq_ignore_case(f, lower)),
                };
                if !listed {
                    return Err(ParseError::UnrecognizedFunction {
                        name: ident.lexeme.clone(),
                        position: ident.pos,
                        expression: self.src.to_string(),
                    });
                }
                host_arity(lower)
            }
        })
    }

    fn check_arity(
        &self,
        ident: &Token,
        lower: &str,
        paren_pos: usize,
        arity: Option<(usize, usize)>,
        argc: usize,
    ) -> Result<(), ParseError> {
        let name = ident.lexeme.clone();
        let position = paren_pos;
        let expression = self.src.to_string();
        if let Some((min, max)) = arity {
            if argc < min {
                return Err(ParseError::TooFewParameters {
                    name,
                    position,
                    expression,
                });
            }
            if argc > max {
                return Err(ParseError::TooManyParameters {
                    name,
                    position,
                    expression,
                });
            }
        }
        if lower == "case" && argc.is_multiple_of(2) {
            return Err(ParseError::EvenParameters {
                name,
                position: ident.pos,
                expression,
            });
        }
        Ok(())
    }

    fn primary(&mut self) -> Result<(Node, bool), ParseError> {
        let Some(t) = self.peek() else {
            return Err(self.unexpected_end());
        };
        let node = match t.kind {
            Tk::False => Node::Bool(false),
            Tk::True => Node::Bool(true),
            Tk::Null => Node::Null,
            Tk::Number => Node::Number(t.num),
            Tk::Str => Node::String(t.text.clone()),
            Tk::LParen => {
                self.i += 1;
                let inner = self.expression()?;
                if self.at_end() {
                    return Err(self.unexpected_end());
                }
                self.consume(Tk::RParen)?;
                return Ok((inner, true));
            }
            _ => return Err(self.unexpected(t)),
        };
        self.i += 1;
        Ok((node, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(src: &str) -> String {
        match parse_allowed(
            src,
            &Allowed {
                named_values: &["github"],
                functions: &[],
            },
        ) {
            Ok(e) => panic!("parsed: {e:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn messages() {
        assert_eq!(
            err("1 < )"),
            "Unexpected symbol: ')'. Located at position 5 within expression: 1 < )"
        );
        assert_eq!(
            err("1 <"),
            "Unexpected end of expression: '<'. Located at position 3 within expression: 1 <"
        );
        assert_eq!(
            err("secrets.foo"),
            "Unrecognized named-value: 'secrets'. Located at position 1 within expression: secrets.foo"
        );
        assert_eq!(
            err("withJson()"),
            "Unrecognized function: 'withJson'. Located at position 1 within expression: withJson()"
        );
        assert_eq!(
            err("join()"),
            "Too few parameters supplied: '('. Located at position 5 within expression: join()"
        );
        assert_eq!(
            err("contains(github == 'boto3')"),
            "Too few parameters supplied: '('. Located at position 9 within expression: contains(github == 'boto3')"
        );
        assert_eq!(
            err("1 'a'"),
            "Unexpected symbol: ''a''. Located at position 3 within expression: 1 'a'"
        );
        assert_eq!(
            err("format('{0}', 1,)"),
            "Unexpected symbol: ')'. Located at position 17 within expression: format('{0}', 1,)"
        );
        assert_eq!(
            err("nope(secrets)"),
            "Unrecognized function: 'nope'. Located at position 1 within expression: nope(secrets)"
        );
        assert_eq!(
            err(&format!("{}1{}", "(".repeat(300), ")".repeat(300))),
            "Exceeded max expression depth 50"
        );
        assert_eq!(
            err("'foo"),
            "Unexpected symbol: ''foo'. Located at position 1 within expression: 'foo"
        );
        assert!(err(&"!".repeat(70)).starts_with("Exceeded max expression depth 50"));
        // Depth counts tree nodes, not parentheses: 49 nested `!` plus the operand is fine.
        assert!(parse(&format!("{}1", "!".repeat(49))).is_ok());
        assert!(parse(&format!("{}1", "!".repeat(50))).is_err());
        assert!(parse(&format!("{}1{}", "(".repeat(60), ")".repeat(60))).is_ok());
        assert!(parse(&format!("a{}", ".b".repeat(49))).is_ok());
        assert!(parse(&format!("a{}", ".b".repeat(50))).is_err());
        assert!(parse(&format!("1{}", "==1".repeat(49))).is_ok());
        assert!(parse(&format!("1{}", "==1".repeat(50))).is_err());
        assert!(err(&"1==".repeat(60).add_one()).starts_with("Exceeded max expression depth 50"));
        assert_eq!(
            err(&"a".repeat(21_001)),
            "Exceeded max expression length 21000"
        );
    }

    trait AddOne {
        fn add_one(self) -> String;
    }
    impl AddOne for String {
        fn add_one(mut self) -> String {
            self.push('1');
            self
        }
    }

    #[test]
    fn positions_count_utf16_units() {
        assert_eq!(
            err("'😊' 1"),
            "Unexpected symbol: '1'. Located at position 6 within expression: '😊' 1"
        );
    }

    #[test]
    fn any_names_with_parse() {
        let e = parse("secrets.x && hashFiles('a') || myHostFn(1, 2, 3)").expect("parses");
        assert_eq!(e.named_values(), vec!["secrets".to_string()]);
        assert!(!e.uses_status_function());
        assert!(parse("always() || x")
            .expect("parses")
            .uses_status_function());
        assert!(parse("SUCCESS()").expect("parses").uses_status_function());
        assert!(
            parse("success('build', 'lint')").is_ok(),
            "job conditions name jobs"
        );
        assert!(parse("always(1)").is_err());
        assert!(parse("hashFiles()").is_err());
        assert!(parse("").expect("parses").is_empty());
        assert!(parse("   ").expect("parses").is_empty());
    }

    #[test]
    fn lexical_flag() {
        assert!(parse("1 @ 2").err().is_some_and(|e| e.is_lexical()));
        assert!(parse("1 2").err().is_some_and(|e| !e.is_lexical()));
    }
}
