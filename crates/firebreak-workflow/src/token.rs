//! Template tokens: workflow values that may hold expressions, kept as a small tree so the
//! executor can evaluate them later without re-reading YAML.

use std::borrow::Cow;

use serde::{Serialize, Serializer};

use firebreak_expr::{Context, Value};

use crate::diag::Pos;

/// Why a token could not be evaluated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TokenEvalError {
    /// The stored expression does not parse (only possible for hand-built tokens).
    #[error("{0}")]
    Parse(String),
    /// Evaluation failed (GitHub's message).
    #[error(transparent)]
    Eval(#[from] firebreak_expr::EvalError),
    /// `${{ insert }}` whose value is not a mapping.
    #[error("The value of an insert directive must be a mapping, got {0}")]
    InsertNotMapping(&'static str),
}

/// A value read from the workflow file, with the position of its first character.
#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    pub pos: Pos,
    pub kind: TokenKind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TokenKind {
    Null,
    Bool(bool),
    Number(f64),
    /// A string. Names the schema knows (mapping keys such as `runs-on` or `steps`) borrow the
    /// schema's static text instead of allocating a copy per file.
    String(Cow<'static, str>),
    /// A `${{ }}` value. `expr` is the expression GitHub evaluates: the single expression of
    /// `${{ x }}`, or `format('literal {0} …', x, …)` when literals and expressions mix.
    Expr(Box<ExprToken>),
    /// The `${{ insert }}` directive (only meaningful as a mapping key).
    Insert,
    Seq(Vec<Token>),
    Map(Vec<(Token, Token)>),
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExprToken {
    /// The expression text (already combined with `format()` for mixed strings).
    pub expr: String,
    /// The original scalar text when it differs from `${{ expr }}` (for display).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// Formats a number as GitHub's workflow reader turns a number literal into a string where a
/// string is wanted (`env: {V: 1.10}` gives `1.1`): .NET's `G15`, as the runner's
/// `NumberToken.ToString()` (GitHub's TypeScript parser writes JavaScript's `String(n)`
/// instead, which differs from 16 significant digits on: `1234567890123456` is
/// `1.23456789012346E+15` here and on GitHub.com).
pub use firebreak_expr::format_number;

impl Token {
    pub fn new(pos: Pos, kind: TokenKind) -> Self {
        Token { pos, kind }
    }

    /// True for `${{ }}` values (and the insert directive).
    pub fn is_expression(&self) -> bool {
        matches!(self.kind, TokenKind::Expr(_) | TokenKind::Insert)
    }

    /// True when this value or anything inside it is an expression.
    pub fn contains_expression(&self) -> bool {
        match &self.kind {
            TokenKind::Expr(_) | TokenKind::Insert => true,
            TokenKind::Seq(items) => items.iter().any(Token::contains_expression),
            TokenKind::Map(items) => items
                .iter()
                .any(|(k, v)| k.contains_expression() || v.contains_expression()),
            _ => false,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            TokenKind::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self.kind {
            TokenKind::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_number(&self) -> Option<f64> {
        match self.kind {
            TokenKind::Number(n) => Some(n),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Token]> {
        match &self.kind {
            TokenKind::Seq(items) => Some(items),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Token, Token)]> {
        match &self.kind {
            TokenKind::Map(items) => Some(items),
            _ => None,
        }
    }

    /// Looks up a mapping key (exact match).
    pub fn get(&self, key: &str) -> Option<&Token> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// The literal as GitHub displays it in messages (`null` is empty).
    pub fn literal_display(&self) -> String {
        match &self.kind {
            TokenKind::Null => String::new(),
            TokenKind::Bool(b) => b.to_string(),
            TokenKind::Number(n) => format_number(*n),
            TokenKind::String(s) => s.to_string(),
            TokenKind::Expr(e) => format!("${{{{ {} }}}}", e.expr),
            TokenKind::Insert => "${{ insert }}".to_string(),
            TokenKind::Seq(_) => "Array".to_string(),
            TokenKind::Map(_) => "Object".to_string(),
        }
    }

    /// Evaluates the value: literals as they are, expressions with `ctx`, sequences and
    /// mappings recursively (an `${{ insert }}` key merges its mapping value into the parent).
    pub fn evaluate(&self, ctx: &dyn Context) -> Result<Value, TokenEvalError> {
        self.eval(ctx, false)
    }

    /// [`Token::evaluate`], plus the runner's rule that an expression item of a sequence
    /// evaluating to an array is merged into the sequence (`[a, ${{ fromJSON('[b, c]') }}]`
    /// is `[a, b, c]`; undocumented, relied on by matrices): how a run evaluates workflow
    /// values, and how the planner expands a matrix that reads no context.
    pub fn evaluate_merged(&self, ctx: &dyn Context) -> Result<Value, TokenEvalError> {
        self.eval(ctx, true)
    }

    fn eval(&self, ctx: &dyn Context, merge: bool) -> Result<Value, TokenEvalError> {
        Ok(match &self.kind {
            TokenKind::Null => Value::Null,
            TokenKind::Bool(b) => Value::Bool(*b),
            TokenKind::Number(n) => Value::Number(*n),
            TokenKind::String(s) => Value::String(s.to_string()),
            TokenKind::Expr(e) => {
                let expr = firebreak_expr::parse(&e.expr)
                    .map_err(|err| TokenEvalError::Parse(err.to_string()))?;
                firebreak_expr::evaluate(&expr, ctx)?
            }
            TokenKind::Insert => Value::Null,
            TokenKind::Seq(items) => {
                let mut out = Vec::with_capacity(items.len());
                for i in items {
                    match (&i.kind, i.eval(ctx, merge)?) {
                        (TokenKind::Expr(_), Value::Array(xs)) if merge => out.extend(xs),
                        (_, v) => out.push(v),
                    }
                }
                Value::Array(out)
            }
            TokenKind::Map(pairs) => {
                let mut out = indexmap::IndexMap::new();
                for (k, v) in pairs {
                    let value = v.eval(ctx, merge)?;
                    if matches!(k.kind, TokenKind::Insert) {
                        match value {
                            Value::Object(m) => out.extend(m),
                            other => {
                                return Err(TokenEvalError::InsertNotMapping(other.kind_name()))
                            }
                        }
                        continue;
                    }
                    let key = k.eval(ctx, merge)?.to_coerced_string();
                    out.insert(key, value);
                }
                Value::Object(out)
            }
        })
    }

    /// Evaluates and converts the result to a string the way GitHub does for string fields
    /// (`null` becomes the empty string).
    pub fn evaluate_string(&self, ctx: &dyn Context) -> Result<String, TokenEvalError> {
        Ok(match self.evaluate(ctx)? {
            Value::Null => String::new(),
            v => v.to_coerced_string(),
        })
    }

    /// The literal value when the token holds no expression.
    pub fn literal_value(&self) -> Option<Value> {
        if self.contains_expression() {
            return None;
        }
        Some(literal(self))
    }

    /// Converts a literal (no expressions) to a JSON value.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.kind {
            TokenKind::Null => J::Null,
            TokenKind::Bool(b) => J::Bool(*b),
            TokenKind::Number(n) => number_json(*n),
            TokenKind::String(s) => J::String(s.to_string()),
            TokenKind::Expr(e) => J::String(format!("${{{{ {} }}}}", e.expr)),
            TokenKind::Insert => J::String("${{ insert }}".to_string()),
            TokenKind::Seq(items) => J::Array(items.iter().map(Token::to_json).collect()),
            TokenKind::Map(items) => {
                let mut m = serde_json::Map::new();
                for (k, v) in items {
                    m.insert(k.literal_display(), v.to_json());
                }
                J::Object(m)
            }
        }
    }
}

/// [`Token::evaluate`] of a token without expressions (checked by the caller), without the
/// evaluation machinery: no context, no `Result`, string keys copied once.
fn literal(t: &Token) -> Value {
    match &t.kind {
        TokenKind::Null | TokenKind::Expr(_) | TokenKind::Insert => Value::Null,
        TokenKind::Bool(b) => Value::Bool(*b),
        TokenKind::Number(n) => Value::Number(*n),
        TokenKind::String(s) => Value::String(s.to_string()),
        TokenKind::Seq(items) => Value::Array(items.iter().map(literal).collect()),
        TokenKind::Map(pairs) => {
            let mut out = indexmap::IndexMap::with_capacity(pairs.len());
            for (k, v) in pairs {
                let key = match &k.kind {
                    TokenKind::String(s) => s.to_string(),
                    _ => literal(k).to_coerced_string(),
                };
                out.insert(key, literal(v));
            }
            Value::Object(out)
        }
    }
}

pub(crate) fn number_json(n: f64) -> serde_json::Value {
    if n.fract() == 0.0 && n.abs() < 9.007_199_254_740_992e15 {
        serde_json::Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map_or(serde_json::Value::Null, serde_json::Value::Number)
    }
}

/// Serialized as `{"type": "null|bool|number|string|expr|seq|map", ...}` for the plan output.
impl Serialize for Token {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = serializer.serialize_map(None)?;
        match &self.kind {
            TokenKind::Expr(e) => {
                m.serialize_entry("expr", &e.expr)?;
            }
            TokenKind::Insert => {
                m.serialize_entry("insert", &true)?;
            }
            TokenKind::Seq(items) => {
                m.serialize_entry("seq", items)?;
            }
            TokenKind::Map(items) => {
                let pairs: Vec<MapEntry<'_>> = items
                    .iter()
                    .map(|(k, v)| MapEntry { key: k, value: v })
                    .collect();
                m.serialize_entry("map", &pairs)?;
            }
            _ => {
                m.serialize_entry("value", &self.to_json())?;
            }
        }
        m.end()
    }
}

#[derive(Serialize)]
struct MapEntry<'a> {
    key: &'a Token,
    value: &'a Token,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_as_the_runner_writes_them() {
        assert_eq!(format_number(1.0), "1");
        assert_eq!(format_number(-755.0), "-755");
        assert_eq!(format_number(1.1), "1.1");
        assert_eq!(format_number(123456789012345.0), "123456789012345");
        assert_eq!(format_number(1234567890123456.0), "1.23456789012346E+15");
        assert_eq!(format_number(1e21), "1E+21");
        assert_eq!(format_number(0.00001), "1E-05");
        assert_eq!(format_number(f64::INFINITY), "Infinity");
        assert_eq!(format_number(0.1), "0.1");
    }

    #[test]
    fn literal_value_is_the_evaluated_value() {
        let t = |kind| Token::new(Pos::new(1, 1), kind);
        let s = |x: &'static str| t(TokenKind::String(x.into()));
        let tree = t(TokenKind::Map(vec![
            (
                s("os"),
                t(TokenKind::Seq(vec![
                    s("a"),
                    t(TokenKind::Number(1.5)),
                    t(TokenKind::Null),
                ])),
            ),
            (t(TokenKind::Number(2.0)), t(TokenKind::Bool(true))),
            (t(TokenKind::Bool(false)), s("x")),
            (t(TokenKind::Null), t(TokenKind::Number(1e21))),
            (
                s("os"),
                s("duplicate key: the last value, the first position"),
            ),
            (
                s("include"),
                t(TokenKind::Seq(vec![t(TokenKind::Map(vec![(
                    s("k"),
                    s("v"),
                )]))])),
            ),
        ]));
        assert_eq!(
            tree.literal_value(),
            tree.evaluate(&firebreak_expr::EmptyContext).ok()
        );
    }

    #[test]
    fn evaluate_tokens() {
        use indexmap::IndexMap;
        let mut ctx: IndexMap<String, Value> = IndexMap::new();
        ctx.insert(
            "github".into(),
            Value::from_json(&serde_json::json!({"sha": "abc"})),
        );
        let t = Token::new(
            Pos::new(1, 1),
            TokenKind::Map(vec![
                (
                    Token::new(Pos::new(1, 1), TokenKind::String("a".into())),
                    Token::new(
                        Pos::new(1, 1),
                        TokenKind::Expr(Box::new(ExprToken {
                            expr: "format('x{0}', github.sha)".into(),
                            source: None,
                        })),
                    ),
                ),
                (
                    Token::new(Pos::new(1, 1), TokenKind::Insert),
                    Token::new(
                        Pos::new(1, 1),
                        TokenKind::Expr(Box::new(ExprToken {
                            expr: "fromJSON('{\"b\":1}')".into(),
                            source: None,
                        })),
                    ),
                ),
            ]),
        );
        let v = t.evaluate(&ctx).unwrap_or_default();
        assert_eq!(v.get("a"), Some(&Value::String("xabc".into())));
        assert_eq!(v.get("b"), Some(&Value::Number(1.0)));
    }
}
