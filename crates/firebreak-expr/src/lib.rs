//! The GitHub Actions expression language (`${{ }}`) for firebreak.
//!
//! This crate owns everything about expressions and nothing else:
//!
//! * [`parse`] / [`parse_allowed`]: the full grammar — literals (`null`, `true`, `false`,
//!   numbers such as `1`, `-2.5`, `0xFF`, `0o17`, `1.5e3`, `Infinity`, `NaN`; strings in single
//!   quotes with `''` as the escape), named values (contexts), `.name`, `[expr]`, the object
//!   filters `.*` / `[*]`, function calls, `!`, `==` `!=` `<` `<=` `>` `>=`, `&&`, `||` and
//!   parentheses, with GitHub's precedence, limits (length 21,000, depth 50) and exact error
//!   messages ([`ParseError`]).
//! * [`evaluate`]: GitHub's semantics — loose, case-insensitive comparison with type coercion,
//!   `&&` / `||` returning an operand with short-circuit, reference equality for arrays and
//!   objects, the built-in functions `contains`, `startsWith`, `endsWith`, `format`, `join`,
//!   `toJSON`, `fromJSON` and `case`, and host functions (`hashFiles`, `success`, `always`,
//!   `failure`, `cancelled`, ...) supplied by the caller's [`Context`]. Function names are
//!   case-insensitive; argument counts are checked at parse time.
//! * [`parse_template`]: strings with embedded `${{ }}` as used by every workflow string value.
//!
//! ```
//! use firebreak_expr::{evaluate, parse_allowed, parse_template, Allowed, Value};
//! use indexmap::IndexMap;
//!
//! let mut contexts: IndexMap<String, Value> = IndexMap::new();
//! contexts.insert(
//!     "github".into(),
//!     Value::from_json(&serde_json::json!({"ref": "refs/heads/main", "event_name": "push"})),
//! );
//!
//! let allowed = Allowed { named_values: &["github"], functions: &["success"] };
//! let expr = parse_allowed("github.event_name == 'PUSH' && startsWith(github.ref, 'refs/heads/')", &allowed)?;
//! assert_eq!(evaluate(&expr, &contexts)?, Value::Bool(true));
//!
//! let err = parse_allowed("secrets.token", &allowed).unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "Unrecognized named-value: 'secrets'. Located at position 1 within expression: secrets.token"
//! );
//!
//! let template = parse_template("ref=${{ github.ref }}")?;
//! assert_eq!(template.evaluate(&contexts)?, Value::String("ref=refs/heads/main".into()));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

mod eval;
mod lexer;
mod parser;
mod template;
mod value;

pub use eval::{evaluate, Context, EmptyContext, EvalError, MAX_MEMORY};
pub use lexer::MAX_EXPRESSION_LENGTH;
pub use parser::{builtin_arity, parse, parse_allowed, Allowed, Expr, ParseError, MAX_DEPTH};
pub use template::{parse_template, parse_template_allowed, Segment, Template, TemplateError};
pub use value::{format_number, Value};

/// Names of the built-in functions (as GitHub spells them).
pub const BUILTIN_FUNCTIONS: [&str; 8] = [
    "contains",
    "startsWith",
    "endsWith",
    "format",
    "join",
    "toJSON",
    "fromJSON",
    "case",
];

/// The status functions a job or step `if:` may call; see [`Expr::uses_status_function`].
pub const STATUS_FUNCTIONS: [&str; 4] = ["success", "always", "failure", "cancelled"];
