//! Robustness: `parse`, `parse_template` and `evaluate` never panic, whatever the input.
//!
//! Property tests generate arbitrary strings and "token soup" built from the language's own
//! pieces; `data/nasty-inputs.json` is a hand-written regression corpus of hostile inputs
//! (deep nesting, length limits, unclosed templates, malformed format strings, huge JSON, ...)
//! replayed on every run. Proptest keeps any failing seed in `fuzz.proptest-regressions`.

use firebreak_expr::{evaluate, parse, parse_template, Context, EvalError, Value};
use proptest::prelude::*;

struct Ctx(Value);

impl Context for Ctx {
    fn named_value(&self, name: &str) -> Option<Value> {
        match name {
            "a" | "github" => Some(self.0.clone()),
            "s" => Some(Value::String("Hello {0} ${{ x }}".into())),
            _ => None,
        }
    }
    fn call(&self, name: &str, args: &[Value]) -> Option<Result<Value, EvalError>> {
        match name {
            "success" | "always" => Some(Ok(Value::Bool(true))),
            "hashfiles" => Some(Ok(Value::String(format!("{}", args.len())))),
            "boom" => Some(Err(EvalError::Host("boom".into()))),
            _ => None,
        }
    }
}

fn ctx() -> Ctx {
    Ctx(Value::from_json(&serde_json::json!({
        "b": {"c": [1, "two", null, true, {"d": 3.5}], "B": "dup"},
        "commits": [{"author": {"name": "x"}}, {"author": {"name": "y"}}],
        "empty": {}, "list": [], "num": -0.0, "str": "0x10"
    })))
}

/// Runs everything on one input; the only requirement is "no panic".
fn exercise(src: &str) {
    let c = ctx();
    if let Ok(e) = parse(src) {
        let _ = e.uses_status_function();
        let _ = e.named_values();
        if let Ok(v) = evaluate(&e, &c) {
            let _ = v.to_coerced_string();
            let _ = v.to_json();
            let _ = v.to_pretty_json();
            let _ = v.is_truthy();
        }
    }
    if let Ok(t) = parse_template(src) {
        let _ = t.is_literal();
        let _ = t.single_expr();
        let _ = t.evaluate(&c);
    }
    let wrapped = format!("pre ${{{{ {src} }}}} post");
    if let Ok(t) = parse_template(&wrapped) {
        let _ = t.evaluate(&c);
    }
}

const PIECES: &[&str] = &[
    "(",
    ")",
    "[",
    "]",
    ",",
    ".",
    "*",
    "!",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "&&",
    "||",
    " ",
    "'",
    "''",
    "'x'",
    "'{0}'",
    "'{{'",
    "'}}'",
    "'{0:x}'",
    "'{1}'",
    "1",
    "-1",
    "0.5",
    "0xF",
    "1e3",
    "NaN",
    "Infinity",
    "-Infinity",
    "null",
    "true",
    "false",
    "a",
    "github",
    "b",
    "c",
    "d",
    "s",
    "commits",
    "author",
    "name",
    "num",
    "str",
    "empty",
    "list",
    "contains(",
    "startsWith(",
    "endsWith(",
    "format(",
    "join(",
    "toJSON(",
    "fromJSON(",
    "case(",
    "hashFiles(",
    "success(",
    "always(",
    "boom(",
    "nope(",
    "'[1,2]'",
    "'{\"a\":1}'",
    "${{",
    "}}",
    "😊",
    "\n",
];

fn soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(PIECES), 0..40).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_strings_never_panic(src in ".{0,200}") {
        exercise(&src);
    }

    #[test]
    fn token_soup_never_panics(src in soup()) {
        exercise(&src);
    }

    #[test]
    fn format_strings_never_panic(fmt in "[{}0-9:a ]{0,20}", n in 0usize..4) {
        let args: String = (0..n).map(|i| format!(", {i}")).collect();
        exercise(&format!("format('{fmt}'{args})"));
    }

    #[test]
    fn numbers_round_trip_through_strings(x in any::<f64>()) {
        // String coercion of a number, parsed back by comparison, equals the number (15 digits).
        let e = parse("format('{0}', a) == a").expect("parses");
        struct N(f64);
        impl Context for N {
            fn named_value(&self, _: &str) -> Option<Value> { Some(Value::Number(self.0)) }
        }
        let v = evaluate(&e, &N(x)).expect("evaluates");
        if x.is_finite() && (x == 0.0 || (x.abs() > 1e-300 && x.abs() < 1e300)) {
            let s = Value::Number(x).to_coerced_string();
            let back: f64 = s.parse().unwrap_or(f64::NAN);
            prop_assert!((back - x).abs() <= x.abs() * 1e-14, "{x} -> {s}");
        }
        let _ = v;
    }
}

#[test]
fn nasty_inputs_never_panic() {
    let text = include_str!("data/nasty-inputs.json");
    let inputs: Vec<String> = serde_json::from_str(text).expect("valid corpus");
    assert!(inputs.len() > 50);
    for src in &inputs {
        exercise(src);
    }
}

#[test]
fn huge_inputs_never_panic() {
    let big_list: Vec<String> = (0..2000)
        .map(|_| format!("\"{}\"", "x".repeat(100)))
        .collect();
    let inputs = [
        "a".repeat(21_000),
        "a".repeat(21_001),
        format!("'{}'", "x".repeat(20_998)),
        format!("'{}'", "x".repeat(30_000)),
        format!("1{}", " && 1".repeat(3000)),
        format!(
            "format('{}', format('{}', 'xxxxxxxxxxxxxxxxxxxx'))",
            "{0}".repeat(255),
            "{0}".repeat(255)
        ),
        format!(
            "join(fromJSON('[{}]'), '{}')",
            big_list.join(","),
            "y".repeat(1000)
        ),
        format!("toJSON(fromJSON('{}{}'))", "[".repeat(120), "]".repeat(120)),
        format!("fromJSON('{}{}')", "[".repeat(5000), "]".repeat(5000)),
        format!("{}x{}", "${{ 1 }}".repeat(2000), "${{".repeat(100)),
    ];
    for src in &inputs {
        exercise(src);
    }
}

#[test]
fn limits_are_errors_not_crashes() {
    // Redundant parentheses do not deepen the tree, but the parser's nesting is bounded.
    let parens = format!("{}1{}", "(".repeat(60), ")".repeat(60));
    assert!(parse(&parens).is_ok());
    let deep = format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000));
    assert!(parse(&deep).is_err());
    let nots = format!("{}1", "!".repeat(20_000));
    assert!(parse(&nots).is_err());
    let chain = format!("1{}", "==1".repeat(60));
    assert!(parse(&chain).is_err());
    let e = parse(&format!(
        "format('{}', format('{}', 'xxxxxxxxxxxxxxxxxxxx'))",
        "{0}".repeat(255),
        "{0}".repeat(255)
    ))
    .expect("parses");
    let err = evaluate(&e, &ctx())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.starts_with("The maximum allowed memory size was exceeded"),
        "{err}"
    );
}

#[test]
fn deepest_valid_trees_evaluate() {
    let c = ctx();
    let inputs = [
        format!("{}1{}", "toJSON(".repeat(49), ")".repeat(49)),
        format!("{}1{}", "fromJSON(toJSON(".repeat(24), "))".repeat(24)),
        format!("{}1", "!".repeat(49)),
        format!("a{}", ".b".repeat(48)),
        format!("a{}", "[*]".repeat(48)),
        format!("{}'x'{}", "format('{0}', ".repeat(49), ")".repeat(49)),
        format!(
            "{}'x'{}",
            "format('{0}', 'a' || ".repeat(24),
            ")".repeat(24)
        ),
        format!("{}1{}", "case(true, ".repeat(49), ", 0)".repeat(49)),
        format!("{}1{}", "contains(a, ".repeat(49), ")".repeat(49)),
        format!("{}0{}", "a[".repeat(48), "]".repeat(48)),
    ];
    for src in &inputs {
        let e = parse(src).unwrap_or_else(|e| panic!("{src}: {e}"));
        let _ = evaluate(&e, &c);
    }
}
