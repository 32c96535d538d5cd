//! Values of the expression language and GitHub's coercion rules.

use std::cmp::Ordering;

use indexmap::IndexMap;

/// A value produced or consumed by an expression.
///
/// This is the JSON data model with doubles for numbers. Object keys keep their original
/// spelling and order, but property lookups ([`Value::get`]) are case-insensitive like GitHub's.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    /// `null`.
    #[default]
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// Every number is a double, as in GitHub's implementation.
    Number(f64),
    /// A string.
    String(String),
    /// An array (also the result of the `.*` / `[*]` object filters).
    Array(Vec<Value>),
    /// An object (a context, a mapping from `fromJSON`, ...).
    Object(IndexMap<String, Value>),
}

impl Value {
    /// GitHub's truthiness: `null`, `false`, `0`, `-0`, `NaN` and `''` are falsy; everything
    /// else (including empty arrays and objects) is truthy.
    pub fn is_truthy(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Number(n) => !(*n == 0.0 || n.is_nan()),
            Value::String(s) => !s.is_empty(),
            Value::Array(_) | Value::Object(_) => true,
        }
    }

    /// GitHub's conversion to string, used by `format`, `join` and template interpolation:
    /// `null` → `""`, booleans → `true`/`false`, numbers as .NET's `G15` format
    /// (`1`, `0.5`, `1E+21`, `Infinity`, `NaN`; `-0` → `0`), arrays → `Array`, objects → `Object`.
    pub fn to_coerced_string(&self) -> String {
        match self {
            Value::Null => String::new(),
            Value::Bool(true) => "true".to_string(),
            Value::Bool(false) => "false".to_string(),
            Value::Number(n) => format_number(*n),
            Value::String(s) => s.clone(),
            Value::Array(_) => "Array".to_string(),
            Value::Object(_) => "Object".to_string(),
        }
    }

    /// GitHub's conversion to number (used by comparisons): `null` → 0, booleans → 0/1, strings
    /// parsed like the runner does (trimmed; `''` → 0; decimal, `0x..`, `0o..`, `Infinity`;
    /// otherwise `NaN`), arrays and objects → `NaN`.
    pub fn to_number(&self) -> f64 {
        match self {
            Value::Null => 0.0,
            Value::Bool(b) => f64::from(u8::from(*b)),
            Value::Number(n) => *n,
            Value::String(s) => parse_number(s),
            Value::Array(_) | Value::Object(_) => f64::NAN,
        }
    }

    /// Converts a JSON value. Of object keys that differ only by case, the first's spelling and
    /// place and the last's value are kept, as in the runner.
    pub fn from_json(v: &serde_json::Value) -> Value {
        match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => Value::Number(n.as_f64().unwrap_or(f64::NAN)),
            serde_json::Value::String(s) => Value::String(s.clone()),
            serde_json::Value::Array(a) => Value::Array(a.iter().map(Value::from_json).collect()),
            serde_json::Value::Object(o) => {
                let mut map = IndexMap::with_capacity(o.len());
                for (k, v) in o {
                    // As the runner's case-insensitive dictionary: a later key that differs
                    // only by case replaces the value and keeps the first key's spelling.
                    match index_ignoring_case(&map, k) {
                        Some(i) => {
                            if let Some((_, slot)) = map.get_index_mut(i) {
                                *slot = Value::from_json(v);
                            }
                        }
                        None => {
                            map.insert(k.clone(), Value::from_json(v));
                        }
                    }
                }
                Value::Object(map)
            }
        }
    }

    /// Converts to JSON. Integral numbers become JSON integers; `NaN` and infinities (which
    /// JSON cannot represent) become `null`.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Number(n) => number_to_json(*n),
            Value::String(s) => serde_json::Value::String(s.clone()),
            Value::Array(a) => serde_json::Value::Array(a.iter().map(Value::to_json).collect()),
            Value::Object(o) => {
                serde_json::Value::Object(o.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
        }
    }

    /// [`Value::to_json`], moving strings and keys instead of copying them.
    pub fn into_json(self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(b),
            Value::Number(n) => number_to_json(n),
            Value::String(s) => serde_json::Value::String(s),
            Value::Array(a) => {
                serde_json::Value::Array(a.into_iter().map(Value::into_json).collect())
            }
            Value::Object(o) => {
                serde_json::Value::Object(o.into_iter().map(|(k, v)| (k, v.into_json())).collect())
            }
        }
    }

    /// Object property lookup, case-insensitive like GitHub (an exact match wins, then the
    /// first key equal ignoring case). `None` for non-objects and missing keys.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(map) => lookup(map, key),
            _ => None,
        }
    }

    /// The string, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The boolean, if this is a boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The number, if this is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// The elements, if this is an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The properties, if this is an object.
    pub fn as_object(&self) -> Option<&IndexMap<String, Value>> {
        match self {
            Value::Object(o) => Some(o),
            _ => None,
        }
    }

    /// True for `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The kind name GitHub uses in messages: `Null`, `Boolean`, `Number`, `String`, `Array`
    /// or `Object`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Value::Null => "Null",
            Value::Bool(_) => "Boolean",
            Value::Number(_) => "Number",
            Value::String(_) => "String",
            Value::Array(_) => "Array",
            Value::Object(_) => "Object",
        }
    }

    /// `toJSON(value)`: GitHub's pretty JSON (2-space indent, `"key": value`, numbers as in
    /// [`Value::to_coerced_string`]).
    pub fn to_pretty_json(&self) -> String {
        let mut out = String::new();
        write_pretty(self, 0, &mut out);
        out
    }
}

fn write_pretty(v: &Value, level: usize, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&format_number(*n)),
        Value::String(s) => out.push_str(&json_escape(s)),
        Value::Array(a) if a.is_empty() => out.push_str("[]"),
        Value::Object(o) if o.is_empty() => out.push_str("{}"),
        Value::Array(a) => {
            out.push('[');
            for (i, item) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline_indent(out, level + 1);
                write_pretty(item, level + 1, out);
            }
            newline_indent(out, level);
            out.push(']');
        }
        Value::Object(o) => {
            out.push('{');
            for (i, (k, item)) in o.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline_indent(out, level + 1);
                out.push_str(&json_escape(k));
                out.push_str(": ");
                write_pretty(item, level + 1, out);
            }
            newline_indent(out, level);
            out.push('}');
        }
    }
}

pub(crate) fn newline_indent(out: &mut String, level: usize) {
    out.push('\n');
    for _ in 0..level {
        out.push_str("  ");
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}
impl From<f64> for Value {
    fn from(n: f64) -> Self {
        Value::Number(n)
    }
}
impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_string())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}
impl From<Vec<Value>> for Value {
    fn from(a: Vec<Value>) -> Self {
        Value::Array(a)
    }
}
impl From<IndexMap<String, Value>> for Value {
    fn from(o: IndexMap<String, Value>) -> Self {
        Value::Object(o)
    }
}
impl From<&serde_json::Value> for Value {
    fn from(v: &serde_json::Value) -> Self {
        Value::from_json(v)
    }
}

pub(crate) fn number_to_json(n: f64) -> serde_json::Value {
    if n.is_finite() && n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 {
        // Exact: |n| < 2^53 and integral.
        #[allow(clippy::cast_possible_truncation)]
        let i = n as i64;
        return serde_json::Value::Number(i.into());
    }
    serde_json::Number::from_f64(n).map_or(serde_json::Value::Null, serde_json::Value::Number)
}

/// The index of `key` in a map ignoring case: the exact key first, then the first key equal
/// ignoring case.
pub(crate) fn index_ignoring_case<V>(map: &IndexMap<String, V>, key: &str) -> Option<usize> {
    map.get_index_of(key)
        .or_else(|| map.keys().position(|k| eq_ignore_case(k, key)))
}

/// Case-insensitive lookup in a map: exact key first, then the first key equal ignoring case.
pub(crate) fn lookup<'a, V>(map: &'a IndexMap<String, V>, key: &str) -> Option<&'a V> {
    if let Some(v) = map.get(key) {
        return Some(v);
    }
    map.iter()
        .find(|(k, _)| eq_ignore_case(k, key))
        .map(|(_, v)| v)
}

// ---------------------------------------------------------------------------------------------
// Numbers

/// Formats a number like .NET's `G15` with the invariant culture (what the runner does), except
/// that negative zero prints as `0`.
pub fn format_number(n: f64) -> String {
    if n.is_nan() {
        return "NaN".to_string();
    }
    if n.is_infinite() {
        return if n > 0.0 { "Infinity" } else { "-Infinity" }.to_string();
    }
    if n == 0.0 {
        return "0".to_string();
    }
    // 15 significant digits, correctly rounded.
    let sci = format!("{:.14e}", n);
    let (mantissa, exp) = match sci.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (sci.as_str(), 0),
    };
    let negative = mantissa.starts_with('-');
    let mut digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    while digits.len() > 1 && digits.ends_with('0') {
        digits.pop();
    }
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    if !(-4..15).contains(&exp) {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('E');
        out.push(if exp < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", exp.unsigned_abs()));
    } else if exp >= 0 {
        let int_len = usize::try_from(exp).unwrap_or(0) + 1;
        if digits.len() <= int_len {
            out.push_str(&digits);
            for _ in digits.len()..int_len {
                out.push('0');
            }
        } else {
            out.push_str(&digits[..int_len]);
            out.push('.');
            out.push_str(&digits[int_len..]);
        }
    } else {
        out.push_str("0.");
        for _ in 0..(exp.unsigned_abs() - 1) {
            out.push('0');
        }
        out.push_str(&digits);
    }
    out
}

/// Converts a string to a number the way the runner does: trim; empty → 0; a decimal number
/// with optional sign, decimal point and exponent; `Infinity` / `-Infinity`; `0x` hex and `0o`
/// octal (32-bit); everything else is `NaN`.
pub(crate) fn parse_number(s: &str) -> f64 {
    let t = s.trim();
    if t.is_empty() {
        return 0.0;
    }
    if let Some(v) = parse_decimal(t) {
        return v;
    }
    if let Some(hex) = t.strip_prefix("0x") {
        if !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()) {
            let significant = hex.trim_start_matches('0');
            if significant.len() <= 8 {
                let v = u32::from_str_radix(
                    if significant.is_empty() {
                        "0"
                    } else {
                        significant
                    },
                    16,
                )
                .unwrap_or(0);
                // .NET parses hex into Int32 (two's complement).
                #[allow(clippy::cast_possible_wrap)]
                return f64::from(v as i32);
            }
        }
        return f64::NAN;
    }
    if let Some(oct) = t.strip_prefix("0o") {
        if !oct.is_empty() && oct.chars().all(|c| ('0'..='7').contains(&c)) {
            if let Ok(v) = u64::from_str_radix(oct, 8) {
                if let Ok(v) = u32::try_from(v) {
                    #[allow(clippy::cast_possible_wrap)]
                    return f64::from(v as i32);
                }
            }
        }
        return f64::NAN;
    }
    f64::NAN
}

/// `[+-]? (digits [. digits?] | . digits) ([eE] [+-]? digits)?`, or a signed `Infinity` / `NaN`.
fn parse_decimal(t: &str) -> Option<f64> {
    let b = t.as_bytes();
    let mut i = 0;
    let negative = b.first() == Some(&b'-');
    if matches!(b.first(), Some(b'+' | b'-')) {
        i = 1;
    }
    let rest = &t[i..];
    if rest.eq_ignore_ascii_case("infinity") || rest == "∞" {
        return Some(if negative {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        });
    }
    if rest.eq_ignore_ascii_case("nan") {
        return Some(f64::NAN);
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let mut digits = i - int_start;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        digits += i - frac_start;
    }
    if digits == 0 {
        return None;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let exp_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == exp_start {
            return None;
        }
    }
    if i != b.len() {
        return None;
    }
    t.parse::<f64>().ok()
}

// ---------------------------------------------------------------------------------------------
// Strings

/// .NET `OrdinalIgnoreCase` folds each UTF-16 unit with the simple upper-case mapping (and
/// leaves the dotless `ı` alone).
pub(crate) fn upper(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_uppercase();
    }
    if c == 'ı' {
        return c;
    }
    let mut it = c.to_uppercase();
    match (it.next(), it.next()) {
        (Some(u), None) => u,
        _ => c,
    }
}

fn upper_units(s: &str) -> impl Iterator<Item = u16> + '_ {
    s.chars().flat_map(|c| {
        let mut buf = [0u16; 2];
        let n = upper(c).encode_utf16(&mut buf).len();
        let v: Vec<u16> = buf[..n].to_vec();
        v.into_iter()
    })
}

pub(crate) fn eq_ignore_case(a: &str, b: &str) -> bool {
    if a.len() == b.len() && a.eq_ignore_ascii_case(b) {
        return true;
    }
    if a.is_ascii() && b.is_ascii() {
        return false;
    }
    a.chars().map(upper).eq(b.chars().map(upper))
}

pub(crate) fn cmp_ignore_case(a: &str, b: &str) -> Ordering {
    upper_units(a).cmp(upper_units(b))
}

fn upper_chars(s: &str) -> Vec<char> {
    s.chars().map(upper).collect()
}

pub(crate) fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    let h = upper_chars(haystack);
    let n = upper_chars(needle);
    if n.is_empty() {
        return true;
    }
    if n.len() > h.len() {
        return false;
    }
    h.windows(n.len()).any(|w| w == n.as_slice())
}

pub(crate) fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    let h = upper_chars(s);
    let p = upper_chars(prefix);
    h.starts_with(&p)
}

pub(crate) fn ends_with_ignore_case(s: &str, suffix: &str) -> bool {
    let h = upper_chars(s);
    let p = upper_chars(suffix);
    h.ends_with(&p)
}

/// JSON string literal as Newtonsoft writes it by default: escapes `"`, `\`, control
/// characters and U+0085 / U+2028 / U+2029; everything else verbatim.
pub(crate) fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || c == '\u{85}' || c == '\u{2028}' || c == '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Number of UTF-16 code units (what .NET's `String.Length` counts).
pub(crate) fn utf16_len(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g15_formatting() {
        let cases: &[(f64, &str)] = &[
            (1.0, "1"),
            (0.5, "0.5"),
            (-0.5, "-0.5"),
            (-0.0, "0"),
            (123456.789, "123456.789"),
            (0.845_512_408_225_570_1, "0.84551240822557"),
            (1.2e2, "120"),
            (1.2e-2, "0.012"),
            (1e15, "1E+15"),
            (123_456_789_012_345.0, "123456789012345"),
            (1e-5, "1E-05"),
            (0.0001, "0.0001"),
            (1.5e300, "1.5E+300"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
            (f64::NAN, "NaN"),
            (123_456_789_012_345_678.0, "1.23456789012346E+17"),
        ];
        for (n, s) in cases {
            assert_eq!(format_number(*n), *s, "{n}");
        }
    }

    #[test]
    fn string_to_number() {
        assert_eq!(parse_number(""), 0.0);
        assert_eq!(parse_number("  "), 0.0);
        assert_eq!(parse_number(" 123456.789 "), 123456.789);
        assert_eq!(parse_number(" +1 "), 1.0);
        assert_eq!(parse_number("-.5"), -0.5);
        assert_eq!(parse_number("5."), 5.0);
        assert_eq!(parse_number("1e3"), 1000.0);
        assert_eq!(parse_number("0xff"), 255.0);
        assert_eq!(parse_number("0xFFFFFFFF"), -1.0);
        assert!(parse_number("0x123456789").is_nan());
        assert_eq!(parse_number("0o10"), 8.0);
        assert_eq!(parse_number("-Infinity"), f64::NEG_INFINITY);
        assert!(parse_number("abc").is_nan());
        assert!(parse_number("1e").is_nan());
        assert!(parse_number("-0xff").is_nan());
        assert!(parse_number("inf").is_nan());
        assert!(parse_number(".").is_nan());
    }

    #[test]
    fn case_insensitive_helpers() {
        assert!(eq_ignore_case("abc", "ABC"));
        assert!(eq_ignore_case("ÄÖ", "äö"));
        assert!(!eq_ignore_case("ı", "I"));
        assert_eq!(cmp_ignore_case("abc", "ABD"), Ordering::Less);
        assert!(contains_ignore_case("Hello World", "o w"));
        assert!(contains_ignore_case("x", ""));
        assert!(starts_with_ignore_case("Hello", "hE"));
        assert!(ends_with_ignore_case("Hello", "LO"));
    }

    #[test]
    fn value_helpers() {
        let v = Value::from_json(&serde_json::json!({"Foo": {"bar": [1, 2.5, null]}}));
        assert_eq!(
            v.get("foo").and_then(|f| f.get("BAR")),
            Some(&Value::Array(vec![
                Value::Number(1.0),
                Value::Number(2.5),
                Value::Null
            ]))
        );
        assert_eq!(
            v.to_json(),
            serde_json::json!({"Foo": {"bar": [1, 2.5, null]}})
        );
        assert!(!Value::String(String::new()).is_truthy());
        assert!(Value::Array(vec![]).is_truthy());
        assert!(!Value::Number(f64::NAN).is_truthy());
        assert_eq!(Value::Object(IndexMap::new()).to_coerced_string(), "Object");
        assert_eq!(Value::Null.to_coerced_string(), "");
        assert_eq!(
            Value::from_json(&serde_json::json!({"a": [1, "x"], "b": {}})).to_pretty_json(),
            "{\n  \"a\": [\n    1,\n    \"x\"\n  ],\n  \"b\": {}\n}"
        );
    }
}
