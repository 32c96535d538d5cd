//! Expanding `strategy.matrix` into job legs, with GitHub's exact semantics.
//!
//! The input is the matrix mapping after expression evaluation (so `fromJSON(...)` matrices
//! work the same): every key other than `include` and `exclude` is a **vector** whose value
//! must be a non-empty sequence.
//!
//! 1. **Cross product** of the vectors in key order, the first key varying slowest
//!    (`os: [a, b], node: [1, 2]` → `a1 a2 b1 b2`).
//! 2. **`exclude`**: a combination is dropped when it matches any exclude entry. Every
//!    top-level key of an exclude entry must name a vector.
//! 3. **`include`** (processed after `exclude`, so it can add back an excluded combination):
//!    the keys of an entry that name a vector are its *filter*, the rest are *extra* values.
//!    The extras of every entry whose filter matches a remaining combination are merged into
//!    it, in entry order — later entries overwrite extras added by earlier ones, never an
//!    original vector value. An entry that matches no combination becomes a combination of its
//!    own (filter keys first, then extras), appended after the cross product; such added
//!    combinations are never themselves matched by other entries. An entry with no vector keys
//!    matches every combination; with no vectors at all (`matrix: {include: [...]}`) every
//!    entry is its own combination.
//!
//! **Matching** (exclude and include alike) follows GitHub's implementation: each scalar leaf
//! of the entry, reached through nested mappings (by key) and sequences (by index), is compared
//! with the value at the same path in the combination using the expression language's `==`.
//! So matching is partial at every depth, keys are case-insensitive, strings compare
//! case-insensitively, and mixed types compare as numbers ([`Value::to_number`]: `'10'`
//! matches `10`, `null` matches `0`). An empty nested mapping or sequence in an entry matches
//! anything.
//!
//! **Names**: GitHub names a leg `job (v1, v2, …)` from the scalar values of the leg in
//! depth-first order (nested mappings and sequences flattened, keys left out, `null` and empty
//! strings skipped, booleans and numbers as [`Value::to_coerced_string`] gives them:
//! `true`, `18`, `1.5`, `1E+21`), truncated to 100 UTF-16 units with `...`. For a cross-product leg only its vector values are used — extras merged
//! in by `include` are not part of the name — while a combination added by `include` is named
//! from all its values. [`expand_legs`] returns that exact name basis; [`leg_name`] names an
//! arbitrary leg from all its values.
//!
//! **Errors** carry GitHub's messages. When several problems exist GitHub reports them all;
//! here the first is returned, in GitHub's order: per key in order (type, empty vector), then
//! "at least one vector", then `include` entries, then `exclude` entries, then the 256-leg
//! limit.
//!
//! An expansion whose every combination is excluded (with nothing included) yields an empty
//! list. GitHub's converter then has no strategy configurations, the same state as a job
//! without a matrix, so the job presumably runs once with an empty `matrix` context (act does
//! exactly that); the caller decides. For each leg GitHub also sets the `strategy` context:
//! `fail-fast`, `job-index` (position in this list), `job-total` (its length) and
//! `max-parallel` (the configured value if > 0, else `job-total`).
//!
//! ```
//! use firebreak_expr::Value;
//! use firebreak_workflow::matrix::{expand_legs, leg_name};
//! use indexmap::IndexMap;
//!
//! let s = |x: &str| Value::String(x.into());
//! let mut matrix = IndexMap::new();
//! matrix.insert("os".to_string(), Value::Array(vec![s("ubuntu"), s("windows")]));
//! matrix.insert("node".to_string(), Value::Array(vec![Value::Number(18.0), Value::Number(20.0)]));
//! let mut extra = IndexMap::new();
//! extra.insert("os".to_string(), s("windows"));
//! extra.insert("experimental".to_string(), Value::Bool(true));
//! matrix.insert("include".to_string(), Value::Array(vec![Value::Object(extra)]));
//!
//! let legs = expand_legs(&matrix).expect("valid matrix");
//! let names: Vec<String> = legs.iter().map(|l| l.name("build")).collect();
//! assert_eq!(names, ["build (ubuntu, 18)", "build (ubuntu, 20)", "build (windows, 18)", "build (windows, 20)"]);
//! assert_eq!(legs[2].matrix.get("experimental"), Some(&Value::Bool(true)));
//! assert_eq!(leg_name("build", &legs[2].matrix), "build (windows, 18, true)");
//! ```

use firebreak_expr::Value;
use indexmap::IndexMap;
use thiserror::Error;

/// GitHub's limit on the legs of one matrix.
pub const MAX_LEGS: usize = 256;

/// Cross products larger than this are refused before any work (GitHub's int32 product
/// would overflow long before; this keeps a hostile matrix with huge excludes from spinning).
pub const MAX_CROSS_PRODUCT: u64 = 1 << 20;

/// Why a matrix cannot be expanded. `Display` gives GitHub's message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum MatrixError {
    #[error("Matrix vector '{0}' does not contain any values")]
    EmptyVector(String),
    #[error("Matrix must define at least one vector")]
    NoVectors,
    /// A value of the wrong shape, e.g. a vector that is not a sequence.
    #[error("Unexpected type '{found}' encountered while reading '{context}'. The type '{expected}' was expected.")]
    UnexpectedType {
        context: &'static str,
        found: &'static str,
        expected: &'static str,
    },
    #[error("Matrix include mapping does not contain any values")]
    EmptyInclude,
    #[error("Matrix exclude filter must not be empty")]
    EmptyExclude,
    #[error("Matrix exclude key '{0}' does not match any key within the matrix")]
    UnknownExcludeKey(String),
    /// More than [`MAX_LEGS`] legs. GitHub appends ` for job '<id>'`; the caller knows the id.
    #[error("Strategy expansion exceeded {MAX_LEGS} results")]
    TooManyLegs,
    /// firebreak's own guard (see [`MAX_CROSS_PRODUCT`]).
    #[error("Matrix cross product of {0} combinations is too large to expand")]
    CrossProductTooLarge(u128),
}

/// One expanded leg.
#[derive(Debug, Clone)]
pub struct Leg {
    /// The `matrix` context of the leg.
    pub matrix: IndexMap<String, Value>,
    /// How many leading entries of `matrix` GitHub uses to name the leg (the vector values of
    /// a cross-product leg; everything for a leg added by `include`).
    pub name_len: usize,
}

impl Leg {
    /// GitHub's display name for this leg of job `job_name`.
    pub fn name(&self, job_name: &str) -> String {
        build_name(job_name, self.matrix.values().take(self.name_len))
    }
}

/// Expands `matrix` into the `matrix` context of each leg, in GitHub's order.
pub fn expand(
    matrix: &IndexMap<String, Value>,
) -> Result<Vec<IndexMap<String, Value>>, MatrixError> {
    Ok(expand_legs(matrix)?.into_iter().map(|l| l.matrix).collect())
}

/// GitHub's display name for a leg, from all of its values: `build (ubuntu, 18)`.
/// With no name-worthy values it is just `job_name`. See [`Leg::name`] for the exact name of a
/// leg produced by [`expand_legs`].
pub fn leg_name(job_name: &str, leg: &IndexMap<String, Value>) -> String {
    build_name(job_name, leg.values())
}

/// Like [`expand`], also telling which values name each leg.
pub fn expand_legs(matrix: &IndexMap<String, Value>) -> Result<Vec<Leg>, MatrixError> {
    let mut vectors: Vec<(&str, &[Value])> = Vec::new();
    let mut include: Option<&[Value]> = None;
    let mut exclude: Option<&[Value]> = None;
    let mut has_vector = false;
    let mut has_include = false;
    for (key, value) in matrix {
        match key.as_str() {
            "include" => {
                let seq = as_sequence(value, "matrix includes")?;
                has_include = !seq.is_empty();
                include = Some(seq);
            }
            "exclude" => exclude = Some(as_sequence(value, "matrix excludes")?),
            _ => {
                has_vector = true;
                let seq = as_sequence(value, "matrix vector value")?;
                if seq.is_empty() {
                    return Err(MatrixError::EmptyVector(key.clone()));
                }
                vectors.push((key.as_str(), seq));
            }
        }
    }
    if !has_vector && !has_include {
        return Err(MatrixError::NoVectors);
    }
    let is_vector = |k: &str| vectors.iter().any(|(name, _)| eq_ignore_case(name, k));

    // Include entries: split into filter (vector keys) and extras.
    struct IncludeEntry<'a> {
        filter: Vec<(&'a String, &'a Value)>,
        leaves: Vec<(Vec<PathStep<'a>>, &'a Value)>,
        extra: Vec<(&'a String, &'a Value)>,
        matched: bool,
    }
    let mut includes = Vec::new();
    for item in include.unwrap_or(&[]) {
        let map = as_mapping(item, "matrix includes item")?;
        if map.is_empty() {
            return Err(MatrixError::EmptyInclude);
        }
        let (filter, extra): (Vec<_>, Vec<_>) = map.iter().partition(|(k, _)| is_vector(k));
        let mut leaves = Vec::new();
        for (k, v) in &filter {
            collect_leaves(vec![PathStep::Key(k)], v, &mut leaves);
        }
        includes.push(IncludeEntry {
            filter,
            leaves,
            extra,
            matched: false,
        });
    }

    let mut excludes = Vec::new();
    for item in exclude.unwrap_or(&[]) {
        let map = as_mapping(item, "matrix excludes item")?;
        if map.is_empty() {
            return Err(MatrixError::EmptyExclude);
        }
        let mut leaves = Vec::new();
        for (k, v) in map {
            if !is_vector(k) {
                return Err(MatrixError::UnknownExcludeKey(k.clone()));
            }
            collect_leaves(vec![PathStep::Key(k)], v, &mut leaves);
        }
        excludes.push(leaves);
    }

    let product = if vectors.is_empty() {
        0u64
    } else {
        // The whole product, for the message (u128: 26 keys of 9 values overflow u64).
        let size = vectors
            .iter()
            .fold(1u128, |acc, (_, v)| acc.saturating_mul(v.len() as u128));
        match u64::try_from(size) {
            Ok(n) if n <= MAX_CROSS_PRODUCT => n,
            _ => return Err(MatrixError::CrossProductTooLarge(size)),
        }
    };

    let mut legs: Vec<Leg> = Vec::new();
    let mut combo_index = vec![0usize; vectors.len()];
    for n in 0..product {
        if n > 0 {
            // Odometer increment, last vector fastest.
            for (slot, (_, values)) in combo_index.iter_mut().zip(&vectors).rev() {
                *slot += 1;
                if *slot < values.len() {
                    break;
                }
                *slot = 0;
            }
        }
        let mut combo: IndexMap<String, Value> = IndexMap::with_capacity(vectors.len());
        for (&i, (name, values)) in combo_index.iter().zip(&vectors) {
            if let Some(v) = values.get(i) {
                combo.insert((*name).to_owned(), v.clone());
            }
        }
        if excludes.iter().any(|leaves| leaves_match(leaves, &combo)) {
            continue;
        }
        let name_len = combo.len();
        let mut extras: Vec<(String, Value)> = Vec::new();
        for entry in includes.iter_mut() {
            if leaves_match(&entry.leaves, &combo) {
                entry.matched = true;
                for (k, v) in &entry.extra {
                    match extras.iter_mut().find(|(name, _)| eq_ignore_case(name, k)) {
                        Some(slot) => slot.1 = (*v).clone(),
                        None => extras.push(((*k).clone(), (*v).clone())),
                    }
                }
            }
        }
        combo.extend(extras);
        legs.push(Leg {
            matrix: combo,
            name_len,
        });
        if legs.len() > MAX_LEGS {
            return Err(MatrixError::TooManyLegs);
        }
    }
    for entry in includes.iter().filter(|e| !e.matched) {
        let matrix: IndexMap<String, Value> = entry
            .filter
            .iter()
            .chain(entry.extra.iter())
            .map(|(k, v)| ((*k).clone(), (*v).clone()))
            .collect();
        let name_len = matrix.len();
        legs.push(Leg { matrix, name_len });
        if legs.len() > MAX_LEGS {
            return Err(MatrixError::TooManyLegs);
        }
    }
    Ok(legs)
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "NullToken",
        Value::Bool(_) => "BooleanToken",
        Value::Number(_) => "NumberToken",
        Value::String(_) => "StringToken",
        Value::Array(_) => "SequenceToken",
        Value::Object(_) => "MappingToken",
    }
}

fn as_sequence<'a>(v: &'a Value, context: &'static str) -> Result<&'a [Value], MatrixError> {
    match v {
        Value::Array(a) => Ok(a),
        other => Err(MatrixError::UnexpectedType {
            context,
            found: type_name(other),
            expected: "SequenceToken",
        }),
    }
}

fn as_mapping<'a>(
    v: &'a Value,
    context: &'static str,
) -> Result<&'a IndexMap<String, Value>, MatrixError> {
    match v {
        Value::Object(m) => Ok(m),
        other => Err(MatrixError::UnexpectedType {
            context,
            found: type_name(other),
            expected: "MappingToken",
        }),
    }
}

#[derive(Debug, Clone, Copy)]
enum PathStep<'a> {
    Key(&'a str),
    Index(usize),
}

/// Every scalar leaf of a filter value with its path (`matrix[k][0][k2] == leaf`).
fn collect_leaves<'a>(
    path: Vec<PathStep<'a>>,
    v: &'a Value,
    out: &mut Vec<(Vec<PathStep<'a>>, &'a Value)>,
) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let mut p = path.clone();
                p.push(PathStep::Key(k));
                collect_leaves(p, child, out);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                let mut p = path.clone();
                p.push(PathStep::Index(i));
                collect_leaves(p, child, out);
            }
        }
        scalar => out.push((path, scalar)),
    }
}

fn leaves_match(leaves: &[(Vec<PathStep<'_>>, &Value)], combo: &IndexMap<String, Value>) -> bool {
    leaves.iter().all(|(path, leaf)| {
        let found = lookup(combo, path).unwrap_or(&Value::Null);
        match leaf {
            // GitHub writes a filter's number into an expression as text (G15) and compares
            // the number read back: beyond 15 significant digits it no longer equals the
            // vector's own value.
            Value::Number(n) => {
                let written = firebreak_expr::format_number(*n)
                    .parse()
                    .unwrap_or(f64::NAN);
                loose_eq(found, &Value::Number(written))
            }
            _ => loose_eq(found, leaf),
        }
    })
}

fn lookup<'v>(combo: &'v IndexMap<String, Value>, path: &[PathStep<'_>]) -> Option<&'v Value> {
    let (first, rest) = path.split_first()?;
    let PathStep::Key(k) = first else {
        return None;
    };
    let mut cur = get_ignore_case(combo, k)?;
    for step in rest {
        cur = match (step, cur) {
            (PathStep::Key(k), Value::Object(m)) => get_ignore_case(m, k)?,
            (PathStep::Index(i), Value::Array(a)) => a.get(*i)?,
            // The expression's index converts, as GitHub's does: a key that is a whole
            // number indexes an array, an index names an object's key.
            (PathStep::Key(k), Value::Array(a)) => {
                let n = Value::String((*k).into()).to_number();
                if !(n.is_finite() && n >= 0.0 && n.fract() == 0.0) {
                    return None;
                }
                a.get(n as usize)?
            }
            (PathStep::Index(i), Value::Object(m)) => get_ignore_case(m, &i.to_string())?,
            _ => return None,
        };
    }
    Some(cur)
}

fn get_ignore_case<'v>(map: &'v IndexMap<String, Value>, key: &str) -> Option<&'v Value> {
    map.get(key).or_else(|| {
        map.iter()
            .find(|(k, _)| eq_ignore_case(k, key))
            .map(|(_, v)| v)
    })
}

/// Ordinal case-insensitive comparison (per-character simple uppercase), as .NET's
/// `OrdinalIgnoreCase`.
pub(crate) fn eq_ignore_case(a: &str, b: &str) -> bool {
    if a.len() == b.len() && a.eq_ignore_ascii_case(b) {
        return true;
    }
    let mut x = a.chars().map(simple_upper);
    let mut y = b.chars().map(simple_upper);
    loop {
        match (x.next(), y.next()) {
            (None, None) => return true,
            (Some(p), Some(q)) if p == q => {}
            _ => return false,
        }
    }
}

fn simple_upper(c: char) -> char {
    let mut up = c.to_uppercase();
    match (up.next(), up.next()) {
        (Some(u), None) => u,
        _ => c,
    }
}

/// The expression language's `==` on a matrix value and a scalar filter leaf.
fn loose_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Number(x), Value::Number(y)) => x == y,
        (Value::String(x), Value::String(y)) => eq_ignore_case(x, y),
        // Objects and arrays are equal only to the same instance; a filter leaf never is one.
        (Value::Array(_), Value::Array(_)) | (Value::Object(_), Value::Object(_)) => false,
        _ => {
            let (x, y) = (a.to_number(), b.to_number());
            x == y
        }
    }
}

fn build_name<'a>(job_name: &str, values: impl Iterator<Item = &'a Value>) -> String {
    // `job_name (a, b, …)`, written straight into one string.
    let mut name = String::with_capacity(job_name.len() + 32);
    name.push_str(job_name);
    let mut any = false;
    for v in values {
        push_segments(v, &mut name, &mut any);
    }
    if any {
        name.push(')');
    }
    truncate_utf16(name, 100)
}

/// Appends the non-empty display segments of `v` (` (` before the first, `, ` between).
fn push_segments(v: &Value, out: &mut String, any: &mut bool) {
    let mut push = |s: &str, out: &mut String| {
        out.push_str(if *any { ", " } else { " (" });
        *any = true;
        out.push_str(s);
    };
    match v {
        Value::Null => {}
        Value::Bool(_) | Value::Number(_) => push(&v.to_coerced_string(), out),
        Value::String(s) => {
            if !s.is_empty() {
                push(s, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| push_segments(x, out, any)),
        Value::Object(m) => m.values().for_each(|x| push_segments(x, out, any)),
    }
}

/// Cuts `s` to at most `max` UTF-16 units, ending in `...` when cut (as GitHub's C#).
fn truncate_utf16(s: String, max: usize) -> String {
    // A string of at most `max` bytes has at most `max` UTF-16 units.
    if s.len() <= max || s.encode_utf16().count() <= max {
        return s;
    }
    let keep = max.saturating_sub(3);
    let mut units = 0;
    let mut out = String::new();
    for c in s.chars() {
        units += c.len_utf16();
        if units > keep {
            break;
        }
        out.push(c);
    }
    out.push_str("...");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(s: &str) -> Value {
        Value::String(s.to_owned())
    }
    fn num(n: f64) -> Value {
        Value::Number(n)
    }
    fn arr(v: Vec<Value>) -> Value {
        Value::Array(v)
    }
    fn obj(pairs: Vec<(&str, Value)>) -> Value {
        Value::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }
    fn strs(v: &[&str]) -> Value {
        arr(v.iter().map(|s| st(s)).collect())
    }
    fn m(pairs: Vec<(&str, Value)>) -> IndexMap<String, Value> {
        pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    /// Compact rendering for assertions: `{k: v, …}` with strings bare.
    fn render(v: &Value) -> String {
        match v {
            Value::Null => "null".into(),
            Value::Bool(b) => b.to_string(),
            Value::Number(_) => v.to_coerced_string(),
            Value::String(s) => s.clone(),
            Value::Array(a) => format!("[{}]", a.iter().map(render).collect::<Vec<_>>().join(", ")),
            Value::Object(o) => render_map(o),
        }
    }
    fn render_map(o: &IndexMap<String, Value>) -> String {
        let parts: Vec<String> = o
            .iter()
            .map(|(k, v)| format!("{k}: {}", render(v)))
            .collect();
        format!("{{{}}}", parts.join(", "))
    }
    fn expand_rendered(matrix: &IndexMap<String, Value>) -> Vec<String> {
        match expand(matrix) {
            Ok(legs) => legs.iter().map(render_map).collect(),
            Err(e) => vec![format!("error: {e}")],
        }
    }

    #[test]
    fn cross_product_first_key_slowest() {
        let matrix = m(vec![
            ("os", strs(&["ubuntu", "windows"])),
            ("version", arr(vec![num(10.0), num(12.0), num(14.0)])),
        ]);
        assert_eq!(
            expand_rendered(&matrix),
            vec![
                "{os: ubuntu, version: 10}",
                "{os: ubuntu, version: 12}",
                "{os: ubuntu, version: 14}",
                "{os: windows, version: 10}",
                "{os: windows, version: 12}",
                "{os: windows, version: 14}",
            ]
        );
    }

    /// The docs' "Expanding or adding matrix configurations" example.
    #[test]
    fn docs_include_example() {
        let matrix = m(vec![
            ("fruit", strs(&["apple", "pear"])),
            ("animal", strs(&["cat", "dog"])),
            (
                "include",
                arr(vec![
                    obj(vec![("color", st("green"))]),
                    obj(vec![("color", st("pink")), ("animal", st("cat"))]),
                    obj(vec![("fruit", st("apple")), ("shape", st("circle"))]),
                    obj(vec![("fruit", st("banana"))]),
                    obj(vec![("fruit", st("banana")), ("animal", st("cat"))]),
                ]),
            ),
        ]);
        assert_eq!(
            expand_rendered(&matrix),
            vec![
                "{fruit: apple, animal: cat, color: pink, shape: circle}",
                "{fruit: apple, animal: dog, color: green, shape: circle}",
                "{fruit: pear, animal: cat, color: pink}",
                "{fruit: pear, animal: dog, color: green}",
                "{fruit: banana}",
                "{fruit: banana, animal: cat}",
            ]
        );
    }

    /// The docs' "Example: Expanding configurations".
    #[test]
    fn docs_expanding_configurations() {
        let matrix = m(vec![
            ("os", strs(&["windows-latest", "ubuntu-latest"])),
            ("node", arr(vec![num(14.0), num(16.0)])),
            (
                "include",
                arr(vec![obj(vec![
                    ("os", st("windows-latest")),
                    ("node", num(16.0)),
                    ("npm", num(6.0)),
                ])]),
            ),
        ]);
        assert_eq!(
            expand_rendered(&matrix),
            vec![
                "{os: windows-latest, node: 14}",
                "{os: windows-latest, node: 16, npm: 6}",
                "{os: ubuntu-latest, node: 14}",
                "{os: ubuntu-latest, node: 16}",
            ]
        );
    }

    /// The docs' "Example: Adding configurations" (include-only entry that matches nothing).
    #[test]
    fn docs_adding_configurations() {
        let matrix = m(vec![
            ("os", strs(&["windows-latest", "ubuntu-latest"])),
            ("version", arr(vec![num(12.0), num(14.0), num(16.0)])),
            (
                "include",
                arr(vec![obj(vec![
                    ("os", st("windows-latest")),
                    ("version", num(17.0)),
                ])]),
            ),
        ]);
        let legs = expand_rendered(&matrix);
        assert_eq!(legs.len(), 7);
        assert_eq!(legs[6], "{os: windows-latest, version: 17}");
    }

    /// The docs' include-only matrix.
    #[test]
    fn docs_include_only() {
        let matrix = m(vec![(
            "include",
            arr(vec![
                obj(vec![
                    ("site", st("production")),
                    ("datacenter", st("site-a")),
                ]),
                obj(vec![("site", st("staging")), ("datacenter", st("site-b"))]),
            ]),
        )]);
        assert_eq!(
            expand_rendered(&matrix),
            vec![
                "{site: production, datacenter: site-a}",
                "{site: staging, datacenter: site-b}"
            ]
        );
        let legs = expand_legs(&matrix).unwrap_or_default();
        assert_eq!(legs[0].name("deploy"), "deploy (production, site-a)");
    }

    /// The docs' "Excluding matrix configurations" example: partial matches.
    #[test]
    fn docs_exclude_example() {
        let matrix = m(vec![
            ("os", strs(&["macos-latest", "windows-latest"])),
            ("version", arr(vec![num(12.0), num(14.0), num(16.0)])),
            ("environment", strs(&["staging", "production"])),
            (
                "exclude",
                arr(vec![
                    obj(vec![
                        ("os", st("macos-latest")),
                        ("version", num(12.0)),
                        ("environment", st("production")),
                    ]),
                    obj(vec![("os", st("windows-latest")), ("version", num(16.0))]),
                ]),
            ),
        ]);
        let legs = expand_rendered(&matrix);
        assert_eq!(legs.len(), 12 - 1 - 2);
        assert!(
            !legs.contains(&"{os: macos-latest, version: 12, environment: production}".to_owned())
        );
        assert!(legs
            .iter()
            .all(|l| !l.starts_with("{os: windows-latest, version: 16")));
    }

    /// act's testdata/matrix-include-exclude (also matrix-with-user-inclusions).
    #[test]
    fn act_matrix_include_exclude() {
        let matrix = m(vec![
            ("os", strs(&["ubuntu-18.04", "macos-latest"])),
            ("node", arr(vec![num(4.0), num(6.0), num(8.0), num(10.0)])),
            (
                "exclude",
                arr(vec![obj(vec![
                    ("os", st("macos-latest")),
                    ("node", num(4.0)),
                ])]),
            ),
            (
                "include",
                arr(vec![obj(vec![
                    ("os", st("ubuntu-16.04")),
                    ("node", num(10.0)),
                ])]),
            ),
        ]);
        let legs = expand_legs(&matrix).unwrap_or_default();
        let names: Vec<String> = legs.iter().map(|l| l.name("build")).collect();
        assert_eq!(
            names,
            vec![
                "build (ubuntu-18.04, 4)",
                "build (ubuntu-18.04, 6)",
                "build (ubuntu-18.04, 8)",
                "build (ubuntu-18.04, 10)",
                "build (macos-latest, 6)",
                "build (macos-latest, 8)",
                "build (macos-latest, 10)",
                "build (ubuntu-16.04, 10)",
            ]
        );
        // act's testdata/matrix: plain vector.
        let test = m(vec![("node", strs(&["8.x", "10.x", "12.x", "13.x"]))]);
        assert_eq!(expand(&test).map(|v| v.len()), Ok(4));
    }

    /// act's testdata/evalmatrix: include-only, and include merging into a 1×1×1 product.
    #[test]
    fn act_evalmatrix() {
        let only = m(vec![("include", arr(vec![obj(vec![("def", st("val"))])]))]);
        assert_eq!(expand_rendered(&only), vec!["{def: val}"]);
        let props = m(vec![
            ("x", arr(vec![num(0.0)])),
            ("y", arr(vec![num(0.0)])),
            ("z", arr(vec![num(0.0)])),
            (
                "include",
                arr(vec![obj(vec![("def", st("val")), ("z", num(0.0))])]),
            ),
        ]);
        assert_eq!(
            expand_rendered(&props),
            vec!["{x: 0, y: 0, z: 0, def: val}"]
        );
        let from_json = m(vec![("A", strs(&["A", "B"]))]);
        assert_eq!(expand_rendered(&from_json), vec!["{A: A}", "{A: B}"]);
    }

    /// act's testdata/evalmatrix-merge-array and -merge-map: object-valued vector entries.
    #[test]
    fn act_evalmatrix_objects() {
        let matrix = m(vec![(
            "a",
            arr(vec![
                obj(vec![("env", obj(vec![("key1", st("val1"))]))]),
                obj(vec![("env", obj(vec![("key2", st("val2"))]))]),
                obj(vec![("env", obj(vec![("key3", st("val3"))]))]),
            ]),
        )]);
        let legs = expand_legs(&matrix).unwrap_or_default();
        assert_eq!(legs.len(), 3);
        assert_eq!(render_map(&legs[1].matrix), "{a: {env: {key2: val2}}}");
        assert_eq!(legs[1].name("a"), "a (val2)");
    }

    #[test]
    fn include_can_add_back_excluded() {
        let matrix = m(vec![
            ("os", strs(&["a", "b"])),
            ("exclude", arr(vec![obj(vec![("os", st("b"))])])),
            (
                "include",
                arr(vec![obj(vec![
                    ("os", st("b")),
                    ("extra", Value::Bool(true)),
                ])]),
            ),
        ]);
        assert_eq!(
            expand_rendered(&matrix),
            vec!["{os: a}", "{os: b, extra: true}"]
        );
    }

    #[test]
    fn include_never_overwrites_vector_values_but_overwrites_extras() {
        let matrix = m(vec![
            ("os", strs(&["a", "b"])),
            (
                "include",
                arr(vec![
                    obj(vec![("x", num(1.0))]),
                    obj(vec![("os", st("a")), ("x", num(2.0))]),
                    obj(vec![("os", st("c")), ("x", num(3.0))]),
                ]),
            ),
        ]);
        assert_eq!(
            expand_rendered(&matrix),
            vec!["{os: a, x: 2}", "{os: b, x: 1}", "{os: c, x: 3}"]
        );
    }

    #[test]
    fn unmatched_include_puts_filter_keys_first() {
        let matrix = m(vec![
            ("animal", strs(&["cat"])),
            (
                "include",
                arr(vec![obj(vec![
                    ("color", st("pink")),
                    ("animal", st("dog")),
                ])]),
            ),
        ]);
        let legs = expand_legs(&matrix).unwrap_or_default();
        assert_eq!(render_map(&legs[1].matrix), "{animal: dog, color: pink}");
        assert_eq!(legs[1].name("j"), "j (dog, pink)");
    }

    #[test]
    fn matching_is_loose_deep_and_case_insensitive() {
        let matrix = m(vec![
            ("os", strs(&["Ubuntu", "windows"])),
            ("node", arr(vec![num(10.0), num(12.0)])),
            (
                "cfg",
                arr(vec![
                    obj(vec![("name", st("a")), ("flags", strs(&["x", "y"]))]),
                    obj(vec![("name", st("b")), ("flags", strs(&["z"]))]),
                ]),
            ),
            (
                "exclude",
                arr(vec![
                    // case-insensitive strings, number vs string
                    obj(vec![("OS", st("ubuntu")), ("node", st("10"))]),
                    // nested partial match into a sequence by index
                    obj(vec![
                        ("cfg", obj(vec![("flags", strs(&["z"]))])),
                        ("os", st("windows")),
                    ]),
                ]),
            ),
        ]);
        let legs = expand_rendered(&matrix);
        assert_eq!(
            legs,
            vec![
                "{os: Ubuntu, node: 12, cfg: {name: a, flags: [x, y]}}",
                "{os: Ubuntu, node: 12, cfg: {name: b, flags: [z]}}",
                "{os: windows, node: 10, cfg: {name: a, flags: [x, y]}}",
                "{os: windows, node: 12, cfg: {name: a, flags: [x, y]}}",
            ]
        );
        // An empty nested filter matches anything; a scalar never equals an object.
        let matrix = m(vec![
            ("cfg", arr(vec![obj(vec![("a", num(1.0))]), num(0.0)])),
            ("exclude", arr(vec![obj(vec![("cfg", obj(vec![]))])])),
        ]);
        assert_eq!(expand_rendered(&matrix), Vec::<String>::new());
        let matrix = m(vec![
            ("cfg", arr(vec![obj(vec![("a", num(1.0))]), num(0.0)])),
            ("exclude", arr(vec![obj(vec![("cfg", Value::Null)])])),
        ]);
        // null == 0 is true in expressions, null == {..} is not.
        assert_eq!(expand_rendered(&matrix), vec!["{cfg: {a: 1}}"]);
    }

    #[test]
    fn errors_with_github_messages() {
        let err = |matrix: IndexMap<String, Value>| expand(&matrix).err().map(|e| e.to_string());
        assert_eq!(
            err(m(vec![
                ("os", arr(vec![])),
                ("version", arr(vec![num(10.0), num(12.0)]))
            ]))
            .as_deref(),
            Some("Matrix vector 'os' does not contain any values")
        );
        assert_eq!(
            err(m(vec![])).as_deref(),
            Some("Matrix must define at least one vector")
        );
        assert_eq!(
            err(m(vec![("include", arr(vec![]))])).as_deref(),
            Some("Matrix must define at least one vector")
        );
        assert_eq!(
            err(m(vec![("exclude", arr(vec![obj(vec![("a", num(1.0))])]))])).as_deref(),
            Some("Matrix must define at least one vector")
        );
        assert_eq!(
            err(m(vec![("os", st("ubuntu"))])).as_deref(),
            Some("Unexpected type 'StringToken' encountered while reading 'matrix vector value'. The type 'SequenceToken' was expected.")
        );
        assert_eq!(
            err(m(vec![
                ("os", strs(&["a"])),
                (
                    "exclude",
                    arr(vec![obj(vec![("build", Value::Bool(false))])])
                )
            ]))
            .as_deref(),
            Some("Matrix exclude key 'build' does not match any key within the matrix")
        );
        assert_eq!(
            err(m(vec![
                ("os", strs(&["a"])),
                ("exclude", arr(vec![obj(vec![])]))
            ]))
            .as_deref(),
            Some("Matrix exclude filter must not be empty")
        );
        assert_eq!(
            err(m(vec![
                ("os", strs(&["a"])),
                ("include", arr(vec![obj(vec![])]))
            ]))
            .as_deref(),
            Some("Matrix include mapping does not contain any values")
        );
        assert_eq!(
            err(m(vec![("os", strs(&["a"])), ("include", arr(vec![st("x")]))])).as_deref(),
            Some("Unexpected type 'StringToken' encountered while reading 'matrix includes item'. The type 'MappingToken' was expected.")
        );
        assert_eq!(
            err(m(vec![("os", strs(&["a"])), ("include", obj(vec![]))])).as_deref(),
            Some("Unexpected type 'MappingToken' encountered while reading 'matrix includes'. The type 'SequenceToken' was expected.")
        );
    }

    #[test]
    fn leg_limit() {
        let sixteen: Vec<Value> = (0..16).map(|i| num(f64::from(i))).collect();
        let ok = m(vec![
            ("a", arr(sixteen.clone())),
            ("b", arr(sixteen.clone())),
        ]);
        assert_eq!(expand(&ok).map(|v| v.len()), Ok(256));
        let over = m(vec![
            ("a", arr(sixteen.clone())),
            ("b", arr(sixteen.clone())),
            ("include", arr(vec![obj(vec![("a", num(99.0))])])),
        ]);
        assert_eq!(expand(&over), Err(MatrixError::TooManyLegs));
        assert_eq!(
            MatrixError::TooManyLegs.to_string(),
            "Strategy expansion exceeded 256 results"
        );
        // A bigger product brought under the limit by exclude is fine (the limit is on results).
        let excluded = m(vec![
            ("a", arr(sixteen.clone())),
            ("b", arr(sixteen.clone())),
            ("c", arr(vec![num(1.0), num(2.0)])),
            ("exclude", arr(vec![obj(vec![("c", num(2.0))])])),
        ]);
        assert_eq!(expand(&excluded).map(|v| v.len()), Ok(256));
        let huge = m(vec![
            ("a", arr(sixteen.clone())),
            ("b", arr(sixteen.clone())),
            ("c", arr(sixteen.clone())),
            ("d", arr(sixteen.clone())),
            ("e", arr(sixteen)),
            ("f", arr(vec![num(1.0), num(2.0)])),
            ("g", arr(vec![num(1.0), num(2.0), num(3.0)])),
        ]);
        // The message counts every combination, not where counting passed the guard:
        // 16^5 × 2 × 3.
        assert_eq!(
            expand(&huge),
            Err(MatrixError::CrossProductTooLarge(6_291_456))
        );
    }

    #[test]
    fn fully_excluded_is_empty() {
        let matrix = m(vec![
            ("os", strs(&["a"])),
            ("exclude", arr(vec![obj(vec![("os", st("a"))])])),
        ]);
        assert_eq!(expand(&matrix).map(|v| v.len()), Ok(0));
    }

    #[test]
    fn names() {
        let leg = m(vec![("os", st("ubuntu")), ("node", num(18.0))]);
        assert_eq!(leg_name("build", &leg), "build (ubuntu, 18)");
        let leg = m(vec![
            (
                "cfg",
                obj(vec![
                    ("os", st("linux")),
                    (
                        "flags",
                        arr(vec![Value::Bool(true), Value::Null, st(""), num(1.5)]),
                    ),
                ]),
            ),
            ("empty", st("")),
            ("n", Value::Null),
        ]);
        assert_eq!(leg_name("t", &leg), "t (linux, true, 1.5)");
        let leg = m(vec![
            ("big", num(1e21)),
            ("neg", num(-0.25)),
            ("f", Value::Bool(false)),
        ]);
        assert_eq!(leg_name("t", &leg), "t (1E+21, -0.25, false)");
        assert_eq!(leg_name("t", &m(vec![("n", Value::Null)])), "t");
        assert_eq!(leg_name("t", &IndexMap::new()), "t");
        let long = m(vec![("x", st(&"é".repeat(120)))]);
        let name = leg_name("job", &long);
        assert_eq!(name.encode_utf16().count(), 100);
        assert!(name.ends_with("..."));
        assert!(name.starts_with("job (éé"));
        // Extras from include are not part of a cross-product leg's name.
        let matrix = m(vec![
            ("os", strs(&["a"])),
            (
                "include",
                arr(vec![obj(vec![("experimental", Value::Bool(true))])]),
            ),
        ]);
        let legs = expand_legs(&matrix).unwrap_or_default();
        assert_eq!(legs[0].name("test"), "test (a)");
        assert_eq!(leg_name("test", &legs[0].matrix), "test (a, true)");
    }

    /// Filter numbers go through GitHub's expression text (G15): past 15 significant digits
    /// they no longer equal the vector's value, so neither exclude nor include matches.
    #[test]
    fn filter_numbers_are_compared_as_github_writes_them() {
        let big = 1_234_567_890_123_456_789.0;
        let matrix = m(vec![
            ("id", arr(vec![num(big), num(2.0)])),
            (
                "include",
                arr(vec![obj(vec![("id", num(big)), ("label", st("big"))])]),
            ),
            ("exclude", arr(vec![obj(vec![("id", num(big))])])),
        ]);
        assert_eq!(
            expand_rendered(&matrix),
            [
                "{id: 1.23456789012346E+18}",
                "{id: 2}",
                "{id: 1.23456789012346E+18, label: big}"
            ]
        );
        // 15 digits or fewer: the same number.
        let matrix = m(vec![
            ("id", arr(vec![num(123_456_789_012_345.0), num(2.0)])),
            (
                "exclude",
                arr(vec![obj(vec![("id", num(123_456_789_012_345.0))])]),
            ),
        ]);
        assert_eq!(expand_rendered(&matrix), ["{id: 2}"]);
    }

    /// A filter's path indexes as an expression does: a whole-number key into an array, an
    /// index into an object's key.
    #[test]
    fn filter_paths_cross_arrays_and_objects() {
        let matrix = m(vec![
            ("cfg", arr(vec![strs(&["x", "y"]), strs(&["z"])])),
            (
                "exclude",
                arr(vec![obj(vec![("cfg", obj(vec![("0", st("x"))]))])]),
            ),
        ]);
        assert_eq!(expand_rendered(&matrix), ["{cfg: [z]}"]);
        let matrix = m(vec![
            (
                "cfg",
                arr(vec![obj(vec![("0", st("x"))]), obj(vec![("0", st("z"))])]),
            ),
            ("exclude", arr(vec![obj(vec![("cfg", strs(&["x"]))])])),
        ]);
        assert_eq!(expand_rendered(&matrix), ["{cfg: {0: z}}"]);
    }

    #[test]
    fn equality_like_expressions() {
        assert!(loose_eq(&st(""), &num(0.0)));
        assert!(loose_eq(&st(" 0xff "), &num(255.0)));
        assert!(loose_eq(&st(" 123456.789 "), &num(123456.789)));
        assert!(!loose_eq(&st("abc"), &num(0.0)));
        assert!(loose_eq(&Value::Null, &num(0.0)));
        assert!(loose_eq(&Value::Bool(true), &num(1.0)));
        assert!(loose_eq(&st("ABC"), &st("abc")));
        assert!(!loose_eq(&num(f64::NAN), &num(f64::NAN)));
        assert!(loose_eq(&Value::Bool(false), &st("")));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                prop_oneof![any::<f64>(), (-3i32..3).prop_map(f64::from)].prop_map(Value::Number),
                "[a-cA-C0 ]{0,3}".prop_map(Value::String),
            ];
            leaf.prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    prop::collection::vec(("[a-cA-C]{1,2}|include|exclude", inner), 0..4)
                        .prop_map(|kv| Value::Object(kv.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #[test]
            fn expand_never_panics(entries in prop::collection::vec(("[a-cA-C]{1,2}|include|exclude", value()), 0..5)) {
                let matrix: IndexMap<String, Value> = entries.into_iter().collect();
                if let Ok(legs) = expand_legs(&matrix) {
                    prop_assert!(legs.len() <= MAX_LEGS);
                    for leg in &legs {
                        prop_assert!(leg.name_len <= leg.matrix.len());
                        let _ = leg.name("job");
                        let _ = leg_name("job", &leg.matrix);
                    }
                }
            }
        }
    }
}
