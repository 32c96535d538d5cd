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
}

impl Contexts {
    /// Empty contexts, success status.
    pub fn new() -> Self {
        Contexts {
            values: IndexMap::new(),
            status: Status::Success,
            cancelled: false,
            workspace: None,
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
                match &self.workspace {
                    Some(ws) => match hash_files(ws, &patterns) {
                        Ok(h) => Value::String(h),
                        Err(e) => return Some(Err(EvalError::Host(e))),
                    },
                    None => {
                        return Some(Err(EvalError::Host(
                            "hashFiles is not supported by this sandbox backend yet".into(),
                        )))
                    }
                }
            }
            _ => return None,
        }))
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

// ---- hashFiles --------------------------------------------------------------------------

fn hash_files(root: &std::path::Path, patterns: &[String]) -> Result<String, String> {
    let mut files = Vec::new();
    walk(root, root, &mut files);
    files.sort();
    let (inc, exc): (Vec<&String>, Vec<&String>) =
        patterns.iter().partition(|p| !p.starts_with('!'));
    let strip = |p: &str| -> String {
        let p = p.trim();
        let ws = root.to_string_lossy();
        p.strip_prefix(ws.as_ref())
            .map(|x| x.trim_start_matches('/').to_string())
            .unwrap_or_else(|| p.to_string())
    };
    let inc: Vec<String> = inc.iter().map(|p| strip(p)).collect();
    let exc: Vec<String> = exc.iter().map(|p| strip(&p[1..])).collect();
    let mut outer = Vec::new();
    let mut any = false;
    for rel in files {
        if inc
            .iter()
            .any(|p| firebreak_workflow::filter::glob_match(p, &rel))
            && !exc
                .iter()
                .any(|p| firebreak_workflow::filter::glob_match(p, &rel))
        {
            let bytes =
                std::fs::read(root.join(&rel)).map_err(|e| format!("hashFiles: {rel}: {e}"))?;
            outer.extend_from_slice(&sha256(&bytes));
            any = true;
        }
    }
    if !any {
        return Ok(String::new());
    }
    Ok(sha256(&outer).iter().map(|b| format!("{b:02x}")).collect())
}

fn walk(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            if e.file_name() == ".git" {
                continue;
            }
            walk(root, &p, out);
        } else if ft.is_file() {
            if let Ok(rel) = p.strip_prefix(root) {
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
}

/// SHA-256 (FIPS 180-4).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut msg = data.to_vec();
    let bit_len = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_be_bytes());
    for chunk in msg.chunks(64) {
        let mut w = [0u32; 64];
        for (i, wi) in w.iter_mut().enumerate().take(16) {
            *wi = u32::from_be_bytes([
                chunk[i * 4],
                chunk[i * 4 + 1],
                chunk[i * 4 + 2],
                chunk[i * 4 + 3],
            ]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 32];
    for (i, x) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&x.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_known_vectors() {
        let hex = |b: [u8; 32]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(
            hex(sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

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
