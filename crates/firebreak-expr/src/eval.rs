//! Evaluator: AST + [`Context`] → [`Value`].
//!
//! Internally values are reference-counted so that, as in GitHub, arrays and objects compare
//! equal only to themselves (`a == a` is true, two distinct `{}` are not equal).

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::rc::Rc;

use indexmap::IndexMap;

use crate::parser::{CmpOp, Expr, Node};
use crate::value::{
    cmp_ignore_case, contains_ignore_case, ends_with_ignore_case, eq_ignore_case, format_number,
    index_ignoring_case, json_escape, lookup, newline_indent, parse_number,
    starts_with_ignore_case, utf16_len, Value,
};

/// Memory GitHub lets one evaluation use (1 MiB, counted the way the runner counts it).
pub const MAX_MEMORY: usize = 1_048_576;
const MIN_OBJECT_SIZE: usize = 24;
const STRING_BASE_OVERHEAD: usize = 26;

/// Why an expression could not be evaluated. `Display` gives GitHub's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// `format` with an unbalanced or malformed placeholder.
    #[error("The following format string is invalid: {0}")]
    InvalidFormatString(String),
    /// `format` referencing `{N}` beyond its arguments.
    #[error("The following format string references more arguments than were supplied: {0}")]
    FormatArgumentIndex(String),
    /// `format` with `{0:spec}`.
    #[error("The format specifiers '{specifiers}' are not valid for objects of type '{kind}'")]
    InvalidFormatSpecifiers {
        /// The text after the colon.
        specifiers: String,
        /// Kind of the argument (`String`, `Number`, ...).
        kind: String,
    },
    /// `fromJSON` on text that is not JSON.
    #[error("{0}")]
    FromJson(String),
    /// `case` with a predicate that is not a boolean.
    #[error("case predicate must evaluate to a boolean value")]
    CasePredicate,
    /// The evaluation needed more than [`MAX_MEMORY`].
    #[error("The maximum allowed memory size was exceeded while evaluating the following expression: {0}")]
    MemoryExceeded(String),
    /// A function the [`Context`] does not implement.
    #[error("Unrecognized function: '{0}'")]
    UnknownFunction(String),
    /// An error reported by a host function (message shown as is).
    #[error("{0}")]
    Host(String),
}

/// What an expression can read: contexts (named values) and host functions.
pub trait Context {
    /// The value of a context such as `github` or `matrix`. `name` is always ASCII
    /// lower-case (contexts are case-insensitive); return `None` when it is not available,
    /// which evaluates as `null`. Called at most once per context per evaluation.
    fn named_value(&self, name: &str) -> Option<Value>;

    /// Calls a host function (`hashfiles`, `success`, `always`, `failure`, `cancelled`, or any
    /// other the caller allowed). `name` is ASCII lower-case; `args` are already evaluated.
    /// Return `None` when the function does not exist here (an [`EvalError::UnknownFunction`]).
    fn call(&self, name: &str, args: &[Value]) -> Option<Result<Value, EvalError>> {
        let _ = (name, args);
        None
    }

    /// Whether the properties of context `name` are looked up by exact key
    /// (GitHub's runner keeps `env` case-sensitive on Linux); by default,
    /// ignoring case as every other context.
    fn case_sensitive(&self, name: &str) -> bool {
        let _ = name;
        false
    }
}

/// A map of context name → value is a [`Context`] (lookups are case-insensitive; no host
/// functions).
impl Context for IndexMap<String, Value> {
    fn named_value(&self, name: &str) -> Option<Value> {
        lookup(self, name).cloned()
    }
}

/// A map of context name → value is a [`Context`] (lookups are case-insensitive; no host
/// functions).
impl<S: std::hash::BuildHasher> Context for HashMap<String, Value, S> {
    fn named_value(&self, name: &str) -> Option<Value> {
        self.get(name)
            .or_else(|| {
                self.iter()
                    .find(|(k, _)| eq_ignore_case(k, name))
                    .map(|(_, v)| v)
            })
            .cloned()
    }
}

/// A context with no named values and no host functions.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmptyContext;

impl Context for EmptyContext {
    fn named_value(&self, _name: &str) -> Option<Value> {
        None
    }
}

/// Evaluates a parsed expression. An empty expression evaluates to `null`.
pub fn evaluate(expr: &Expr, ctx: &dyn Context) -> Result<Value, EvalError> {
    let Some(root) = &expr.root else {
        return Ok(Value::Null);
    };
    let mut ev = Evaluator {
        ctx,
        named: HashMap::new(),
        mem: Memory {
            depths: Vec::new(),
            max_active: None,
            total: 0,
        },
        src: &expr.src,
    };
    let v = ev.eval(root, 0)?;
    Ok(v.to_value())
}

#[derive(Clone, Debug)]
enum Val {
    Null,
    Bool(bool),
    Num(f64),
    Str(Rc<str>),
    Arr(Rc<Vec<Val>>),
    /// Result of a `*` filter: further indexing applies to each element.
    Filtered(Rc<Vec<Val>>),
    /// An object; `true`: its keys compare exactly (a case-sensitive context
    /// such as `env` on Linux), else ignoring case.
    Obj(Rc<IndexMap<String, Val>>, bool),
}

impl Val {
    fn from_value(v: &Value) -> Val {
        match v {
            Value::Null => Val::Null,
            Value::Bool(b) => Val::Bool(*b),
            Value::Number(n) => Val::Num(*n),
            Value::String(s) => Val::Str(Rc::from(s.as_str())),
            Value::Array(a) => Val::Arr(Rc::new(a.iter().map(Val::from_value).collect())),
            Value::Object(o) => Val::Obj(
                Rc::new(
                    o.iter()
                        .map(|(k, v)| (k.clone(), Val::from_value(v)))
                        .collect(),
                ),
                false,
            ),
        }
    }

    fn from_json(v: &serde_json::Value) -> Val {
        match v {
            serde_json::Value::Null => Val::Null,
            serde_json::Value::Bool(b) => Val::Bool(*b),
            serde_json::Value::Number(n) => Val::Num(n.as_f64().unwrap_or(f64::NAN)),
            serde_json::Value::String(s) => Val::Str(Rc::from(s.as_str())),
            serde_json::Value::Array(a) => {
                Val::Arr(Rc::new(a.iter().map(Val::from_json).collect()))
            }
            serde_json::Value::Object(o) => {
                let mut map = IndexMap::with_capacity(o.len());
                for (k, v) in o {
                    // As the runner's case-insensitive dictionary: a later key that differs
                    // only by case replaces the value and keeps the first key's spelling.
                    match index_ignoring_case(&map, k) {
                        Some(i) => {
                            if let Some((_, slot)) = map.get_index_mut(i) {
                                *slot = Val::from_json(v);
                            }
                        }
                        None => {
                            map.insert(k.clone(), Val::from_json(v));
                        }
                    }
                }
                Val::Obj(Rc::new(map), false)
            }
        }
    }

    fn to_value(&self) -> Value {
        match self {
            Val::Null => Value::Null,
            Val::Bool(b) => Value::Bool(*b),
            Val::Num(n) => Value::Number(*n),
            Val::Str(s) => Value::String(s.to_string()),
            Val::Arr(a) | Val::Filtered(a) => Value::Array(a.iter().map(Val::to_value).collect()),
            Val::Obj(o, _) => {
                Value::Object(o.iter().map(|(k, v)| (k.clone(), v.to_value())).collect())
            }
        }
    }

    fn str(s: String) -> Val {
        Val::Str(Rc::from(s))
    }

    fn is_primitive(&self) -> bool {
        matches!(self, Val::Null | Val::Bool(_) | Val::Num(_) | Val::Str(_))
    }

    fn is_truthy(&self) -> bool {
        match self {
            Val::Null => false,
            Val::Bool(b) => *b,
            Val::Num(n) => !(*n == 0.0 || n.is_nan()),
            Val::Str(s) => !s.is_empty(),
            _ => true,
        }
    }

    fn kind_name(&self) -> &'static str {
        match self {
            Val::Null => "Null",
            Val::Bool(_) => "Boolean",
            Val::Num(_) => "Number",
            Val::Str(_) => "String",
            Val::Arr(_) | Val::Filtered(_) => "Array",
            Val::Obj(..) => "Object",
        }
    }

    fn to_string_coerced(&self) -> String {
        match self {
            Val::Null => String::new(),
            Val::Bool(b) => b.to_string(),
            Val::Num(n) => format_number(*n),
            Val::Str(s) => s.to_string(),
            Val::Arr(_) | Val::Filtered(_) => "Array".to_string(),
            Val::Obj(..) => "Object".to_string(),
        }
    }

    fn to_number(&self) -> f64 {
        match self {
            Val::Null => 0.0,
            Val::Bool(b) => f64::from(u8::from(*b)),
            Val::Num(n) => *n,
            Val::Str(s) => parse_number(s),
            _ => f64::NAN,
        }
    }

    fn items(&self) -> Option<&Rc<Vec<Val>>> {
        match self {
            Val::Arr(a) | Val::Filtered(a) => Some(a),
            _ => None,
        }
    }
}

/// Kinds after GitHub's loose coercion (for comparisons).
enum Coerced<'a> {
    Null,
    Num(f64, f64),
    Str(&'a str, &'a str),
    Bool(bool, bool),
    Same(&'a Val, &'a Val),
    Mismatch,
}

fn coerce<'a>(l: &'a Val, r: &'a Val) -> Coerced<'a> {
    match (l, r) {
        (Val::Null, Val::Null) => Coerced::Null,
        (Val::Num(a), Val::Num(b)) => Coerced::Num(*a, *b),
        (Val::Str(a), Val::Str(b)) => Coerced::Str(a, b),
        (Val::Bool(a), Val::Bool(b)) => Coerced::Bool(*a, *b),
        (Val::Num(a), Val::Str(_)) => Coerced::Num(*a, r.to_number()),
        (Val::Str(_), Val::Num(b)) => Coerced::Num(l.to_number(), *b),
        (Val::Arr(_) | Val::Filtered(_), Val::Arr(_) | Val::Filtered(_))
        | (Val::Obj(..), Val::Obj(..)) => Coerced::Same(l, r),
        (Val::Null | Val::Bool(_), _) => {
            // Boolean|Null, Any → number, then coerce again.
            let ln = l.to_number();
            match r {
                Val::Null | Val::Bool(_) | Val::Num(_) | Val::Str(_) => {
                    Coerced::Num(ln, r.to_number())
                }
                _ => Coerced::Mismatch,
            }
        }
        (_, Val::Null | Val::Bool(_)) => match l {
            Val::Num(_) | Val::Str(_) => Coerced::Num(l.to_number(), r.to_number()),
            _ => Coerced::Mismatch,
        },
        _ => Coerced::Mismatch,
    }
}

fn same_ref(l: &Val, r: &Val) -> bool {
    match (l, r) {
        (Val::Arr(a) | Val::Filtered(a), Val::Arr(b) | Val::Filtered(b)) => Rc::ptr_eq(a, b),
        (Val::Obj(a, _), Val::Obj(b, _)) => Rc::ptr_eq(a, b),
        _ => false,
    }
}

fn abstract_eq(l: &Val, r: &Val) -> bool {
    match coerce(l, r) {
        Coerced::Null => true,
        Coerced::Num(a, b) => !a.is_nan() && !b.is_nan() && a == b,
        Coerced::Str(a, b) => eq_ignore_case(a, b),
        Coerced::Bool(a, b) => a == b,
        Coerced::Same(a, b) => same_ref(a, b),
        Coerced::Mismatch => false,
    }
}

fn abstract_gt(l: &Val, r: &Val) -> bool {
    match coerce(l, r) {
        Coerced::Num(a, b) => !a.is_nan() && !b.is_nan() && a > b,
        Coerced::Str(a, b) => cmp_ignore_case(a, b).is_gt(),
        Coerced::Bool(a, b) => a && !b,
        _ => false,
    }
}

fn abstract_lt(l: &Val, r: &Val) -> bool {
    match coerce(l, r) {
        Coerced::Num(a, b) => !a.is_nan() && !b.is_nan() && a < b,
        Coerced::Str(a, b) => cmp_ignore_case(a, b).is_lt(),
        Coerced::Bool(a, b) => !a && b,
        _ => false,
    }
}

/// Tracks memory per tree level like the runner: results of finished siblings stay counted,
/// results below a finished primitive are released.
struct Memory {
    depths: Vec<usize>,
    max_active: Option<usize>,
    total: usize,
}

impl Memory {
    fn add(&mut self, depth: usize, bytes: usize, trim: bool) -> bool {
        if trim {
            while let Some(active) = self.max_active {
                if active <= depth {
                    break;
                }
                if let Some(slot) = self.depths.get_mut(active) {
                    self.total = self.total.saturating_sub(*slot);
                    *slot = 0;
                }
                self.max_active = active.checked_sub(1);
            }
        }
        if self.max_active.is_none_or(|a| depth > a) {
            if self.depths.len() <= depth {
                self.depths.resize(depth + 1, 0);
            }
            self.max_active = Some(depth);
        }
        if let Some(slot) = self.depths.get_mut(depth) {
            *slot = slot.saturating_add(bytes);
        }
        self.total = self.total.saturating_add(bytes);
        self.total <= MAX_MEMORY
    }
}

fn string_bytes(s: &str) -> usize {
    STRING_BASE_OVERHEAD + 2 * utf16_len(s)
}

/// Per-function memory counter (each appended piece counts as a string).
struct Counter<'s> {
    bytes: usize,
    src: &'s str,
}

impl Counter<'_> {
    fn add(&mut self, piece: &str) -> Result<(), EvalError> {
        self.add_bytes(string_bytes(piece))
    }

    fn add_bytes(&mut self, n: usize) -> Result<(), EvalError> {
        self.bytes = self.bytes.saturating_add(n);
        if self.bytes > MAX_MEMORY {
            return Err(EvalError::MemoryExceeded(self.src.to_string()));
        }
        Ok(())
    }
}

struct Evaluator<'a> {
    ctx: &'a dyn Context,
    named: HashMap<String, Val>,
    mem: Memory,
    src: &'a str,
}

enum IndexKey {
    Star,
    Key {
        int: Option<usize>,
        string: Option<String>,
    },
}

impl IndexKey {
    fn from(v: &Val) -> IndexKey {
        let n = v.to_number();
        let int = if n.is_nan() || n < 0.0 {
            None
        } else {
            let f = n.floor();
            if f > f64::from(i32::MAX) {
                None
            } else {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                Some(f as usize)
            }
        };
        let string = v.is_primitive().then(|| v.to_string_coerced());
        IndexKey::Key { int, string }
    }
}

impl<'a> Evaluator<'a> {
    fn eval(&mut self, node: &Node, level: usize) -> Result<Val, EvalError> {
        let v = self.eval_core(node, level)?;
        let (bytes, trim) = match &v {
            Val::Str(s) => (string_bytes(s), true),
            Val::Filtered(items) => (MIN_OBJECT_SIZE + 8 * items.len(), false),
            v => (MIN_OBJECT_SIZE, v.is_primitive()),
        };
        if !self.mem.add(level, bytes, trim) {
            return Err(EvalError::MemoryExceeded(self.src.to_string()));
        }
        Ok(v)
    }

    fn counter(&self) -> Counter<'a> {
        Counter {
            bytes: 0,
            src: self.src,
        }
    }

    fn eval_core(&mut self, node: &Node, level: usize) -> Result<Val, EvalError> {
        Ok(match node {
            Node::Null => Val::Null,
            Node::Bool(b) => Val::Bool(*b),
            Node::Number(n) => Val::Num(*n),
            Node::String(s) => Val::Str(Rc::from(s.as_str())),
            Node::Named(name) => {
                if let Some(v) = self.named.get(name) {
                    v.clone()
                } else {
                    let mut v = self
                        .ctx
                        .named_value(name)
                        .map_or(Val::Null, |v| Val::from_value(&v));
                    if let Val::Obj(_, exact) = &mut v {
                        *exact = self.ctx.case_sensitive(name);
                    }
                    self.named.insert(name.clone(), v.clone());
                    v
                }
            }
            Node::Not(inner) => Val::Bool(!self.eval(inner, level + 1)?.is_truthy()),
            Node::Cmp(op, l, r) => {
                let l = self.eval(l, level + 1)?;
                let r = self.eval(r, level + 1)?;
                Val::Bool(match op {
                    CmpOp::Eq => abstract_eq(&l, &r),
                    CmpOp::Ne => !abstract_eq(&l, &r),
                    CmpOp::Gt => abstract_gt(&l, &r),
                    CmpOp::Ge => abstract_eq(&l, &r) || abstract_gt(&l, &r),
                    CmpOp::Lt => abstract_lt(&l, &r),
                    CmpOp::Le => abstract_eq(&l, &r) || abstract_lt(&l, &r),
                })
            }
            Node::And(args) => {
                let mut last = Val::Null;
                for a in args {
                    last = self.eval(a, level + 1)?;
                    if !last.is_truthy() {
                        break;
                    }
                }
                last
            }
            Node::Or(args) => {
                let mut last = Val::Null;
                for a in args {
                    last = self.eval(a, level + 1)?;
                    if last.is_truthy() {
                        break;
                    }
                }
                last
            }
            Node::Index(obj, index) => {
                let obj = self.eval(obj, level + 1)?;
                let key = match index {
                    None => IndexKey::Star,
                    Some(i) => IndexKey::from(&self.eval(i, level + 1)?),
                };
                index_value(&obj, &key)
            }
            Node::Call(name, args) => self.call(name, args, level)?,
        })
    }

    fn call(&mut self, name: &str, args: &[Node], level: usize) -> Result<Val, EvalError> {
        let lv = level + 1;
        let arg = |i: usize| args.get(i);
        match name {
            "contains" => {
                let (Some(a), Some(b)) = (arg(0), arg(1)) else {
                    return Ok(Val::Bool(false));
                };
                let left = self.eval(a, lv)?;
                if left.is_primitive() {
                    let ls = left.to_string_coerced();
                    let right = self.eval(b, lv)?;
                    if right.is_primitive() {
                        return Ok(Val::Bool(contains_ignore_case(
                            &ls,
                            &right.to_string_coerced(),
                        )));
                    }
                } else if let Some(items) = left.items() {
                    if !items.is_empty() {
                        let right = self.eval(b, lv)?;
                        return Ok(Val::Bool(
                            items.iter().any(|item| abstract_eq(&right, item)),
                        ));
                    }
                }
                Ok(Val::Bool(false))
            }
            "startswith" | "endswith" => {
                let (Some(a), Some(b)) = (arg(0), arg(1)) else {
                    return Ok(Val::Bool(false));
                };
                let left = self.eval(a, lv)?;
                if left.is_primitive() {
                    let ls = left.to_string_coerced();
                    let right = self.eval(b, lv)?;
                    if right.is_primitive() {
                        let rs = right.to_string_coerced();
                        return Ok(Val::Bool(if name == "startswith" {
                            starts_with_ignore_case(&ls, &rs)
                        } else {
                            ends_with_ignore_case(&ls, &rs)
                        }));
                    }
                }
                Ok(Val::Bool(false))
            }
            "format" => self.format(args, lv),
            "join" => {
                let Some(a) = arg(0) else {
                    return Ok(Val::str(String::new()));
                };
                let items = self.eval(a, lv)?;
                if let Some(list) = items.items().filter(|l| !l.is_empty()).cloned() {
                    let mut counter = self.counter();
                    let mut out = String::new();
                    let first = list.first().map(Val::to_string_coerced).unwrap_or_default();
                    counter.add(&first)?;
                    out.push_str(&first);
                    if list.len() > 1 {
                        let mut sep = ",".to_string();
                        if let Some(s) = arg(1) {
                            let s = self.eval(s, lv)?;
                            if s.is_primitive() {
                                sep = s.to_string_coerced();
                            }
                        }
                        for item in list.iter().skip(1) {
                            counter.add(&sep)?;
                            out.push_str(&sep);
                            let s = item.to_string_coerced();
                            counter.add(&s)?;
                            out.push_str(&s);
                        }
                    }
                    Ok(Val::str(out))
                } else if items.is_primitive() {
                    Ok(Val::str(items.to_string_coerced()))
                } else {
                    Ok(Val::str(String::new()))
                }
            }
            "tojson" => {
                let Some(a) = arg(0) else {
                    return Ok(Val::Null);
                };
                let v = self.eval(a, lv)?;
                let mut out = String::new();
                let mut counter = self.counter();
                to_json(&v, 0, &mut out, &mut counter)?;
                Ok(Val::str(out))
            }
            "fromjson" => {
                let Some(a) = arg(0) else {
                    return Ok(Val::Null);
                };
                let text = self.eval(a, lv)?.to_string_coerced();
                from_json(&text)
            }
            "case" => {
                let mut i = 0;
                while i + 1 < args.len() {
                    let pred = self.eval(&args[i], lv)?;
                    match pred {
                        Val::Bool(true) => return self.eval(&args[i + 1], lv),
                        Val::Bool(false) => {}
                        _ => return Err(EvalError::CasePredicate),
                    }
                    i += 2;
                }
                match args.last() {
                    Some(d) => self.eval(d, lv),
                    None => Ok(Val::Null),
                }
            }
            _ => {
                let mut values = Vec::with_capacity(args.len());
                for a in args {
                    values.push(self.eval(a, lv)?.to_value());
                }
                match self.ctx.call(name, &values) {
                    Some(r) => r.map(|v| Val::from_value(&v)),
                    None => Err(EvalError::UnknownFunction(name.to_string())),
                }
            }
        }
    }

    fn format(&mut self, args: &[Node], lv: usize) -> Result<Val, EvalError> {
        enum Seg {
            Lit(String),
            Arg(usize, String),
        }
        let Some(first) = args.first() else {
            return Ok(Val::str(String::new()));
        };
        let fmt = self.eval(first, lv)?.to_string_coerced();
        let chars: Vec<char> = fmt.chars().collect();
        let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
        let find = |c: char, from: usize| {
            chars
                .iter()
                .skip(from)
                .position(|&x| x == c)
                .map(|p| p + from)
        };
        let text = |a: usize, b: usize| -> String {
            chars
                .get(a..b)
                .map(|s| s.iter().collect())
                .unwrap_or_default()
        };
        let mut segs = Vec::new();
        let mut counter = self.counter();
        let mut push_lit = |s: String, segs: &mut Vec<Seg>| -> Result<(), EvalError> {
            if !s.is_empty() {
                counter.add(&s)?;
                segs.push(Seg::Lit(s));
            }
            Ok(())
        };
        let invalid = || EvalError::InvalidFormatString(fmt.clone());
        let mut index = 0;
        while index < chars.len() {
            let lbrace = find('{', index);
            let rbrace = find('}', index);
            match (lbrace, rbrace) {
                (Some(l), r) if r.is_none_or(|r| r > l) => {
                    if at(l + 1) == '{' {
                        push_lit(text(index, l + 1), &mut segs)?;
                        index = l + 2;
                        continue;
                    }
                    // {N} or {N:spec}
                    let mut j = l + 1;
                    while at(j).is_ascii_digit() {
                        j += 1;
                    }
                    if j == l + 1 || r.is_none_or(|r| r <= l + 1) {
                        return Err(invalid());
                    }
                    let arg_index: usize = match text(l + 1, j).parse::<u8>() {
                        Ok(n) => usize::from(n),
                        Err(_) => return Err(invalid()),
                    };
                    let (spec, close) = if at(j) == '}' {
                        (String::new(), j)
                    } else if at(j) == ':' {
                        let mut spec = String::new();
                        let mut k = j + 1;
                        loop {
                            if k >= chars.len() {
                                return Err(invalid());
                            }
                            let c = chars[k];
                            if c != '}' {
                                spec.push(c);
                                k += 1;
                            } else if at(k + 1) == '}' {
                                spec.push('}');
                                k += 2;
                            } else {
                                break;
                            }
                        }
                        (spec, k)
                    } else {
                        return Err(invalid());
                    };
                    if arg_index + 2 > args.len() {
                        return Err(EvalError::FormatArgumentIndex(fmt.clone()));
                    }
                    push_lit(text(index, l), &mut segs)?;
                    segs.push(Seg::Arg(arg_index, spec));
                    index = close + 1;
                }
                (_, Some(r)) => {
                    if at(r + 1) == '}' {
                        push_lit(text(index, r + 1), &mut segs)?;
                        index = r + 2;
                    } else {
                        return Err(invalid());
                    }
                }
                _ => {
                    push_lit(text(index, chars.len()), &mut segs)?;
                    break;
                }
            }
        }
        let mut bytes = counter.bytes;
        // Arguments are evaluated lazily, once each, in order of first use.
        let mut cache: HashMap<usize, (String, &'static str)> = HashMap::new();
        let mut out = String::new();
        for seg in segs {
            match seg {
                Seg::Lit(s) => out.push_str(&s),
                Seg::Arg(i, spec) => {
                    let (s, kind) = match cache.entry(i) {
                        Entry::Occupied(o) => o.into_mut(),
                        Entry::Vacant(slot) => {
                            let node = args
                                .get(i + 1)
                                .ok_or_else(|| EvalError::FormatArgumentIndex(fmt.clone()))?;
                            let v = self.eval(node, lv)?;
                            slot.insert((v.to_string_coerced(), v.kind_name()))
                        }
                    };
                    if !spec.is_empty() {
                        return Err(EvalError::InvalidFormatSpecifiers {
                            specifiers: spec,
                            kind: (*kind).to_string(),
                        });
                    }
                    if !s.is_empty() {
                        let mut c = Counter {
                            bytes,
                            src: self.src,
                        };
                        c.add(s)?;
                        bytes = c.bytes;
                    }
                    out.push_str(s);
                }
            }
        }
        Ok(Val::str(out))
    }
}

/// A property of an object: by exact key in a case-sensitive one, else as
/// GitHub looks up (exact first, then ignoring case).
fn get<'m>(o: &'m IndexMap<String, Val>, key: &str, exact: bool) -> Option<&'m Val> {
    if exact {
        o.get(key)
    } else {
        lookup(o, key)
    }
}

fn index_value(obj: &Val, key: &IndexKey) -> Val {
    match obj {
        Val::Filtered(items) => {
            let mut out = Vec::new();
            for item in items.iter() {
                match (item, key) {
                    (Val::Obj(o, _), IndexKey::Star) => out.extend(o.values().cloned()),
                    (
                        Val::Obj(o, exact),
                        IndexKey::Key {
                            string: Some(s), ..
                        },
                    ) => {
                        if let Some(v) = get(o, s, *exact) {
                            out.push(v.clone());
                        }
                    }
                    (Val::Arr(a) | Val::Filtered(a), IndexKey::Star) => {
                        out.extend(a.iter().cloned())
                    }
                    (Val::Arr(a) | Val::Filtered(a), IndexKey::Key { int: Some(i), .. }) => {
                        if let Some(v) = a.get(*i) {
                            out.push(v.clone());
                        }
                    }
                    _ => {}
                }
            }
            Val::Filtered(Rc::new(out))
        }
        Val::Obj(o, exact) => match key {
            IndexKey::Star => Val::Filtered(Rc::new(o.values().cloned().collect())),
            IndexKey::Key {
                string: Some(s), ..
            } => get(o, s, *exact).cloned().unwrap_or(Val::Null),
            IndexKey::Key { .. } => Val::Null,
        },
        Val::Arr(a) => match key {
            IndexKey::Star => Val::Filtered(a.clone()),
            IndexKey::Key { int: Some(i), .. } => a.get(*i).cloned().unwrap_or(Val::Null),
            IndexKey::Key { .. } => Val::Null,
        },
        _ => match key {
            IndexKey::Star => Val::Filtered(Rc::new(Vec::new())),
            IndexKey::Key { .. } => Val::Null,
        },
    }
}

fn to_json(
    v: &Val,
    level: usize,
    out: &mut String,
    counter: &mut Counter,
) -> Result<(), EvalError> {
    let start = out.len();
    match v {
        Val::Null => out.push_str("null"),
        Val::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Val::Num(n) => out.push_str(&format_number(*n)),
        Val::Str(s) => out.push_str(&json_escape(s)),
        Val::Arr(a) | Val::Filtered(a) if a.is_empty() => out.push_str("[]"),
        Val::Obj(o, _) if o.is_empty() => out.push_str("{}"),
        Val::Arr(a) | Val::Filtered(a) => {
            counter.add("[")?;
            out.push('[');
            for (i, item) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline_indent(out, level + 1);
                to_json(item, level + 1, out, counter)?;
            }
            newline_indent(out, level);
            out.push(']');
            counter.add_bytes(STRING_BASE_OVERHEAD + 2 * (level * 2 + 2))?;
            return Ok(());
        }
        Val::Obj(o, _) => {
            counter.add("{")?;
            out.push('{');
            for (i, (k, item)) in o.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline_indent(out, level + 1);
                let key = json_escape(k);
                counter.add_bytes(STRING_BASE_OVERHEAD + 2 * (utf16_len(&key) + level * 2 + 4))?;
                out.push_str(&key);
                out.push_str(": ");
                to_json(item, level + 1, out, counter)?;
            }
            newline_indent(out, level);
            out.push('}');
            counter.add_bytes(STRING_BASE_OVERHEAD + 2 * (level * 2 + 2))?;
            return Ok(());
        }
    }
    let piece_units = out.get(start..).map_or(0, utf16_len);
    counter.add_bytes(STRING_BASE_OVERHEAD + 2 * (piece_units + level * 2 + 2))
}

fn from_json(text: &str) -> Result<Val, EvalError> {
    if text.trim().is_empty() {
        return Err(EvalError::FromJson(
            "Error reading JToken from JsonReader. Path '', line 0, position 0.".to_string(),
        ));
    }
    // Like the runner, read one JSON value and ignore whatever follows it.
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<serde_json::Value>();
    match stream.next() {
        Some(Ok(v)) => Ok(Val::from_json(&v)),
        Some(Err(e)) => Err(EvalError::FromJson(format!("Error parsing fromJson: {e}"))),
        None => Err(EvalError::FromJson(
            "Error reading JToken from JsonReader. Path '', line 0, position 0.".to_string(),
        )),
    }
}
