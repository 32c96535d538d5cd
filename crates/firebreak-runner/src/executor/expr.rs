//! Expression evaluation for the executor: the contexts a job or step can read, the status
//! functions, `hashFiles`, and token evaluation with GitHub's sequence merging.
//!
//! * [`Contexts`] holds the named values (`github`, `env`, `vars`, `secrets`, `job`, `runner`,
//!   `strategy`, `matrix`, `needs`, `inputs`, `steps`) and the [`Status`] the status functions
//!   read. `success()` is true when the status is success and the run was not cancelled;
//!   `failure()` when it is failure; `cancelled()` when the run (or job) was cancelled;
//!   `always()` always.
//! * `hashFiles(patterns…)` hashes the workspace files matching the patterns (`!` excludes),
//!   in path order, as the runner does (SHA-256 of each file, then SHA-256 of those digests);
//!   empty when nothing matches; symlinks and `.git` are skipped. It reads the workspace
//!   through the host path, which only the host and namespace sandboxes share with the job —
//!   the one place the executor looks past the `Sandbox` trait ([`Contexts::workspace`] is
//!   `None` for other backends, and `hashFiles` then fails with a clear message).
//! * [`eval_token`] evaluates a workflow [`Token`]: like [`Token::evaluate`], plus GitHub's
//!   undocumented rule that an expression item of a sequence evaluating to an array is merged
//!   into the sequence (`[a, ${{ fromJSON('[b, c]') }}]` is `[a, b, c]`).

use std::path::PathBuf;

use firebreak_expr::{Context, EvalError, Value};
use firebreak_workflow::token::TokenEvalError;
use firebreak_workflow::Token;
use indexmap::IndexMap;

/// What the status functions report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Nothing failed so far.
    Success,
    /// Something failed.
    Failure,
    /// Neither: e.g. a needed job was skipped (`success()` and `failure()` are both false).
    Neither,
}

/// The contexts and status an expression is evaluated with.
#[derive(Debug, Clone)]
pub struct Contexts {
    /// Named values (lower-case names).
    pub values: IndexMap<String, Value>,
    /// For `success()` / `failure()`.
    pub status: Status,
    /// For `cancelled()`.
    pub cancelled: bool,
    /// Host path of the workspace, for `hashFiles`.
    pub workspace: Option<PathBuf>,
    /// Or, where the host cannot read the workspace (a microVM), the sandbox
    /// that can.
    pub guest_files: Option<super::hashfiles::GuestFiles>,
}

impl Contexts {
    /// Empty contexts, success status.
    pub fn new() -> Self {
        Contexts {
            values: IndexMap::new(),
            status: Status::Success,
            cancelled: false,
            workspace: None,
            guest_files: None,
        }
    }

    /// Sets a context.
    pub fn set(&mut self, name: &str, v: Value) {
        self.values.insert(name.to_string(), v);
    }

    /// Evaluates a condition (`if:`) to a boolean.
    pub fn condition(&self, cond: &str) -> Result<bool, String> {
        let expr = firebreak_expr::parse(cond).map_err(|e| e.to_string())?;
        firebreak_expr::evaluate(&expr, self)
            .map(|v| v.is_truthy())
            .map_err(|e| e.to_string())
    }

    /// Evaluates a string that may contain `${{ }}` (action defaults, output values).
    pub fn template(&self, s: &str) -> Result<String, String> {
        if !s.contains("${{") {
            return Ok(s.to_string());
        }
        let t = firebreak_expr::parse_template(s).map_err(|e| e.to_string())?;
        t.evaluate(self)
            .map(|v| v.to_coerced_string())
            .map_err(|e| e.to_string())
    }
}

impl Default for Contexts {
    fn default() -> Self {
        Self::new()
    }
}

impl Context for Contexts {
    fn named_value(&self, name: &str) -> Option<Value> {
        self.values.get(name).cloned()
    }

    fn call(&self, name: &str, args: &[Value]) -> Option<Result<Value, EvalError>> {
        Some(Ok(match name {
            "success" => Value::Bool(self.status == Status::Success && !self.cancelled),
            "failure" => Value::Bool(self.status == Status::Failure && !self.cancelled),
            "cancelled" => Value::Bool(self.cancelled),
            "always" => Value::Bool(true),
            "hashfiles" => {
                let patterns: Vec<String> = args.iter().map(Value::to_coerced_string).collect();
                let hashed = match (&self.workspace, &self.guest_files) {
                    (Some(ws), _) => super::hashfiles::hash_files(ws, &patterns),
                    (None, Some(guest)) => guest.hash(&patterns),
                    (None, None) => Err("hashFiles has no workspace to read here".into()),
                };
                match hashed {
                    Ok(h) => Value::String(h),
                    Err(e) => return Some(Err(EvalError::Host(e))),
                }
            }
            _ => return None,
        }))
    }

    /// `env` is case-sensitive, as GitHub's runner keeps it on Linux.
    fn case_sensitive(&self, name: &str) -> bool {
        name == "env"
    }
}

/// Evaluates a token; see the module docs for the sequence rule
/// ([`Token::evaluate_merged`]).
pub fn eval_token(t: &Token, ctx: &dyn Context) -> Result<Value, TokenEvalError> {
    t.evaluate_merged(ctx)
}

/// Evaluates a token to a string (`null` is empty).
pub fn eval_string(t: &Token, ctx: &dyn Context) -> Result<String, TokenEvalError> {
    Ok(match eval_token(t, ctx)? {
        Value::Null => String::new(),
        v => v.to_coerced_string(),
    })
}

/// Evaluates an optional boolean setting (`continue-on-error`): true only
/// when present and truthy; an expression that fails counts as false.
pub fn eval_flag(t: Option<&Token>, ctx: &dyn Context) -> bool {
    t.is_some_and(|t| eval_token(t, ctx).is_ok_and(|v| v.is_truthy()))
}

/// Evaluates an optional number of minutes (`timeout-minutes`,
/// `cancel-timeout-minutes`): `None` when absent, not a number, or not
/// positive (the caller's default applies).
pub fn eval_minutes(t: Option<&Token>, ctx: &dyn Context) -> Option<f64> {
    t.and_then(|t| eval_token(t, ctx).ok())
        .map(|v| v.to_number())
        .filter(|n| n.is_finite() && *n > 0.0)
}

/// Evaluates a mapping token (`env:`, `with:`, `outputs:`) to string values.
pub fn eval_string_map(
    t: Option<&Token>,
    ctx: &dyn Context,
) -> Result<IndexMap<String, String>, String> {
    let Some(t) = t else {
        return Ok(IndexMap::new());
    };
    match eval_token(t, ctx).map_err(|e| e.to_string())? {
        Value::Object(m) => Ok(m
            .into_iter()
            .map(|(k, v)| {
                let s = match v {
                    Value::Null => String::new(),
                    v => v.to_coerced_string(),
                };
                (k, s)
            })
            .collect()),
        Value::Null => Ok(IndexMap::new()),
        other => Err(format!("expected a mapping, got {}", other.kind_name())),
    }
}

/// Converts a map of strings to an expression object.
pub fn string_map_value(m: &IndexMap<String, String>) -> Value {
    Value::Object(
        m.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_functions() {
        let mut c = Contexts::new();
        assert_eq!(c.condition("success()"), Ok(true));
        c.status = Status::Failure;
        assert_eq!(c.condition("success() || failure()"), Ok(true));
        assert_eq!(c.condition("success()"), Ok(false));
        c.cancelled = true;
        assert_eq!(c.condition("cancelled() && always()"), Ok(true));
        assert_eq!(c.condition("failure()"), Ok(false));
    }
}
