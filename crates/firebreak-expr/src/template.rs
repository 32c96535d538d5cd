//! Templates: strings with embedded `${{ expr }}`.

use crate::eval::{evaluate, Context, EvalError};
use crate::parser::{parse, parse_allowed, Allowed, Expr, ParseError};
use crate::value::Value;

/// Why a template string could not be split into literal and expression segments.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A `${{` without a matching `}}`.
    #[error("The expression is not closed. An unescaped ${{{{ sequence was found, but the closing }}}} sequence was not found.")]
    NotClosed {
        /// Byte offset of the `${{` in the template.
        offset: usize,
    },
    /// `${{ }}` with nothing inside.
    #[error("An expression was expected")]
    ExpressionExpected {
        /// Byte offset of the `${{` in the template.
        offset: usize,
    },
    /// The text between `${{` and `}}` is not a valid expression.
    #[error("{error}")]
    Parse {
        /// The parse error (positions are relative to the trimmed expression text).
        error: ParseError,
        /// Byte offset of the `${{` in the template.
        offset: usize,
    },
}

/// One piece of a [`Template`].
#[derive(Debug, Clone)]
pub enum Segment {
    /// Text copied as is.
    Literal(String),
    /// An embedded expression.
    Expr {
        /// The parsed expression.
        expr: Expr,
        /// The expression text between `${{` and `}}`, trimmed.
        source: String,
        /// Byte offset of `${{` in the template string.
        offset: usize,
    },
}

/// A string value split into literal text and `${{ }}` expressions.
#[derive(Debug, Clone, Default)]
pub struct Template {
    /// The segments in order; consecutive literals are merged, empty literals are omitted.
    pub segments: Vec<Segment>,
}

/// Splits `s` into literal and expression segments, accepting any named value and function.
pub fn parse_template(s: &str) -> Result<Template, TemplateError> {
    parse_template_with(s, None)
}

/// Like [`parse_template`], but every expression must only use what `allowed` permits.
pub fn parse_template_allowed(s: &str, allowed: &Allowed) -> Result<Template, TemplateError> {
    parse_template_with(s, Some(allowed))
}

fn parse_template_with(s: &str, allowed: Option<&Allowed>) -> Result<Template, TemplateError> {
    let mut segments = Vec::new();
    let mut literal = String::new();
    let mut rest_start = 0;
    while let Some(rel) = s.get(rest_start..).and_then(|r| r.find("${{")) {
        let open = rest_start + rel;
        literal.push_str(&s[rest_start..open]);
        // Find the closing `}}`, skipping over single-quoted strings.
        let bytes = s.as_bytes();
        let mut in_string = false;
        let mut close = None;
        let mut i = open + 3;
        while i < bytes.len() {
            let c = bytes[i];
            if c == b'\'' {
                in_string = !in_string;
            } else if !in_string && c == b'}' && bytes[i - 1] == b'}' && i > open + 3 {
                close = Some(i - 1);
                break;
            }
            i += 1;
        }
        let Some(close) = close else {
            return Err(TemplateError::NotClosed { offset: open });
        };
        let source = s[open + 3..close].trim();
        if source.is_empty() {
            return Err(TemplateError::ExpressionExpected { offset: open });
        }
        let expr = match allowed {
            Some(a) => parse_allowed(source, a),
            None => parse(source),
        }
        .map_err(|error| TemplateError::Parse {
            error,
            offset: open,
        })?;
        if !literal.is_empty() {
            segments.push(Segment::Literal(std::mem::take(&mut literal)));
        }
        segments.push(Segment::Expr {
            expr,
            source: source.to_string(),
            offset: open,
        });
        rest_start = close + 2;
    }
    literal.push_str(s.get(rest_start..).unwrap_or_default());
    if !literal.is_empty() {
        segments.push(Segment::Literal(literal));
    }
    Ok(Template { segments })
}

impl Template {
    /// True when the template contains no expression (its value is its text).
    pub fn is_literal(&self) -> bool {
        self.segments
            .iter()
            .all(|s| matches!(s, Segment::Literal(_)))
    }

    /// The expression when the whole template is exactly one `${{ expr }}` (no surrounding
    /// text), whose value then keeps its type.
    pub fn single_expr(&self) -> Option<&Expr> {
        match self.segments.as_slice() {
            [Segment::Expr { expr, .. }] => Some(expr),
            _ => None,
        }
    }

    /// The expressions of the template, in order.
    pub fn exprs(&self) -> impl Iterator<Item = &Expr> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Expr { expr, .. } => Some(expr),
            Segment::Literal(_) => None,
        })
    }

    /// True when any expression calls a status function (see [`Expr::uses_status_function`]).
    pub fn uses_status_function(&self) -> bool {
        self.exprs().any(Expr::uses_status_function)
    }

    /// Evaluates the template: a single `${{ expr }}` yields the expression's typed value;
    /// anything else yields a string of the literals and the string-coerced values
    /// (`null` → `''`, arrays → `Array`, objects → `Object`).
    pub fn evaluate(&self, ctx: &dyn Context) -> Result<Value, EvalError> {
        if let Some(e) = self.single_expr() {
            return evaluate(e, ctx);
        }
        let mut out = String::new();
        for seg in &self.segments {
            match seg {
                Segment::Literal(s) => out.push_str(s),
                Segment::Expr { expr, .. } => {
                    out.push_str(&evaluate(expr, ctx)?.to_coerced_string())
                }
            }
        }
        Ok(Value::String(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EmptyContext;

    #[test]
    fn splitting() {
        let t = parse_template("a ${{ 1 }} b ${{ 'x}}' }}").expect("parses");
        assert_eq!(t.segments.len(), 4);
        assert!(
            matches!(&t.segments[3], Segment::Expr { source, offset: 13, .. } if source == "'x}}'")
        );
        assert_eq!(
            t.evaluate(&EmptyContext),
            Ok(Value::String("a 1 b x}}".into()))
        );
        assert!(parse_template("plain").expect("parses").is_literal());
        assert!(parse_template("").expect("parses").segments.is_empty());
    }

    #[test]
    fn typed_single_expression() {
        let t = parse_template("${{ 1 == 1 }}").expect("parses");
        assert!(t.single_expr().is_some());
        assert_eq!(t.evaluate(&EmptyContext), Ok(Value::Bool(true)));
        let t = parse_template(" ${{ 1 == 1 }}").expect("parses");
        assert!(t.single_expr().is_none());
        assert_eq!(t.evaluate(&EmptyContext), Ok(Value::String(" true".into())));
        let t = parse_template("${{ fromJSON('[1]') }}-${{ null }}-${{ fromJSON('{}') }}")
            .expect("parses");
        assert_eq!(
            t.evaluate(&EmptyContext),
            Ok(Value::String("Array--Object".into()))
        );
    }

    #[test]
    fn errors() {
        assert_eq!(
            parse_template("x ${{ 1").err().map(|e| e.to_string()).as_deref(),
            Some("The expression is not closed. An unescaped ${{ sequence was found, but the closing }} sequence was not found.")
        );
        assert_eq!(
            parse_template("x ${{ }}")
                .err()
                .map(|e| e.to_string())
                .as_deref(),
            Some("An expression was expected")
        );
        assert_eq!(
            parse_template("${{}}").err(),
            Some(TemplateError::ExpressionExpected { offset: 0 })
        );
        let allowed = Allowed {
            named_values: &["github"],
            functions: &[],
        };
        assert_eq!(
            parse_template_allowed("${{ secrets.foo }}", &allowed).err().map(|e| e.to_string()).as_deref(),
            Some("Unrecognized named-value: 'secrets'. Located at position 1 within expression: secrets.foo")
        );
    }
}
