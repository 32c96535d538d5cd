//! Behaviour tests for each language feature, through the public API only.

use std::cell::RefCell;

use firebreak_expr::{
    evaluate, parse, parse_allowed, parse_template, Allowed, Context, EmptyContext, EvalError,
    Value,
};
use indexmap::IndexMap;

fn ctx() -> IndexMap<String, Value> {
    let mut m = IndexMap::new();
    m.insert(
        "github".to_string(),
        Value::from_json(&serde_json::json!({
            "event_name": "push",
            "ref": "refs/heads/main",
            "event": {"commits": [{"id": "a", "author": {"name": "x"}}, {"id": "b", "author": {"name": "y"}}]}
        })),
    );
    m.insert(
        "matrix".to_string(),
        Value::from_json(&serde_json::json!({"os": ["linux", "mac"], "n": 3, "obj": {}})),
    );
    m
}

fn eval(src: &str) -> Value {
    let e = parse(src).unwrap_or_else(|e| panic!("{src}: {e}"));
    evaluate(&e, &ctx()).unwrap_or_else(|e| panic!("{src}: {e}"))
}

fn eval_err(src: &str) -> String {
    let e = parse(src).unwrap_or_else(|e| panic!("{src}: {e}"));
    match evaluate(&e, &ctx()) {
        Ok(v) => panic!("{src}: evaluated to {v:?}"),
        Err(e) => e.to_string(),
    }
}

fn s(x: &str) -> Value {
    Value::String(x.to_string())
}

#[test]
fn literals() {
    assert_eq!(eval("null"), Value::Null);
    assert_eq!(eval("true"), Value::Bool(true));
    assert_eq!(eval("0xFF"), Value::Number(255.0));
    assert_eq!(eval("1.5e3"), Value::Number(1500.0));
    assert_eq!(eval("-2"), Value::Number(-2.0));
    assert_eq!(eval("0o17"), Value::Number(15.0));
    assert_eq!(eval("'it''s'"), s("it's"));
    assert_eq!(eval("'a''''b'"), s("a''b"));
    assert!(matches!(eval("NaN"), Value::Number(n) if n.is_nan()));
    assert_eq!(eval("-Infinity"), Value::Number(f64::NEG_INFINITY));
    assert_eq!(eval(""), Value::Null);
}

#[test]
fn property_and_index_access() {
    assert_eq!(eval("GitHub.Event_Name"), s("push"));
    assert_eq!(eval("github['event_name']"), s("push"));
    assert_eq!(eval("matrix.os[1]"), s("mac"));
    assert_eq!(eval("matrix.os['1']"), s("mac"));
    assert_eq!(eval("matrix.os[1.9]"), s("mac"));
    assert_eq!(eval("matrix.os[5]"), Value::Null);
    assert_eq!(eval("matrix.os[-1]"), Value::Null);
    assert_eq!(eval("matrix.missing.deeper"), Value::Null);
    assert_eq!(
        eval("github.event.commits.*.id"),
        Value::Array(vec![s("a"), s("b")])
    );
    assert_eq!(
        eval("github.event.commits[*].author.name"),
        Value::Array(vec![s("x"), s("y")])
    );
    assert_eq!(eval("matrix.n.*"), Value::Array(vec![]));
    assert_eq!(eval("(matrix).n"), Value::Number(3.0));
    assert!(parse("'abc'[0]").is_err());
}

#[test]
fn operators_and_coercion() {
    assert_eq!(eval("'ABC' == 'abc'"), Value::Bool(true));
    assert_eq!(eval("'1' == 1"), Value::Bool(true));
    assert_eq!(eval("null == 0"), Value::Bool(true));
    assert_eq!(eval("true == 1"), Value::Bool(true));
    assert_eq!(eval("'' == 0"), Value::Bool(true));
    assert_eq!(eval("'abc' == NaN"), Value::Bool(false));
    assert_eq!(eval("'b' > 'A'"), Value::Bool(true));
    assert_eq!(eval("2 >= 2"), Value::Bool(true));
    assert_eq!(eval("1 < '2'"), Value::Bool(true));
    assert_eq!(eval("true > false"), Value::Bool(true));
    assert_eq!(eval("matrix.obj == matrix.obj"), Value::Bool(true));
    assert_eq!(eval("fromJSON('{}') == fromJSON('{}')"), Value::Bool(false));
    assert_eq!(eval("matrix.obj != 'Object'"), Value::Bool(true));
    assert_eq!(eval("!0"), Value::Bool(true));
    assert_eq!(eval("!matrix.obj"), Value::Bool(false));
}

#[test]
fn logical_operators_return_operands() {
    assert_eq!(eval("'a' && 'b'"), s("b"));
    assert_eq!(eval("'' && 'b'"), s(""));
    assert_eq!(eval("0 || 'x'"), s("x"));
    assert_eq!(eval("null || 0"), Value::Number(0.0));
    // Short-circuit: the erroring right side is never evaluated.
    assert_eq!(eval("false && fromJSON('not json')"), Value::Bool(false));
    assert_eq!(eval("true || fromJSON('not json')"), Value::Bool(true));
}

#[test]
fn precedence() {
    assert_eq!(eval("true || false && false"), Value::Bool(true));
    assert_eq!(eval("(true || false) && false"), Value::Bool(false));
    assert_eq!(eval("!true == false"), Value::Bool(true));
    assert_eq!(eval("1 < 2 == true"), Value::Bool(true));
}

#[test]
fn functions() {
    assert_eq!(eval("contains('Hello', 'ELL')"), Value::Bool(true));
    assert_eq!(eval("contains(matrix.os, 'MAC')"), Value::Bool(true));
    assert_eq!(eval("contains(matrix.obj, 'x')"), Value::Bool(false));
    assert_eq!(eval("startsWith(github.ref, 'REFS/')"), Value::Bool(true));
    assert_eq!(eval("endsWith(github.ref, '/MAIN')"), Value::Bool(true));
    assert_eq!(eval("StartsWith(1, matrix.obj)"), Value::Bool(false));
    assert_eq!(eval("format('{0}-{1}-{0}', 'a', 2)"), s("a-2-a"));
    assert_eq!(eval("format('{{0}} {0}', 'x')"), s("{0} x"));
    assert_eq!(eval("join(matrix.os)"), s("linux,mac"));
    assert_eq!(eval("join(matrix.os, ' | ')"), s("linux | mac"));
    assert_eq!(eval("join('abc')"), s("abc"));
    assert_eq!(eval("join(matrix.obj)"), s(""));
    assert_eq!(
        eval("toJSON(matrix.os)"),
        s("[\n  \"linux\",\n  \"mac\"\n]")
    );
    assert_eq!(eval("toJson(1.5)"), s("1.5"));
    assert_eq!(
        eval("fromJSON('{\"A\": [1, true]}').a[1]"),
        Value::Bool(true)
    );
    // Keys that differ only by case: the first's spelling and place, the last's value, as the
    // runner's case-insensitive dictionary keeps them.
    assert_eq!(
        eval("toJSON(fromJSON('{\"a\": 1, \"b\": 0, \"A\": 2}'))"),
        s("{\n  \"a\": 2,\n  \"b\": 0\n}")
    );
    assert_eq!(
        Value::from_json(&serde_json::json!({"Key": 1, "KEY": 2})),
        Value::Object(IndexMap::from([("Key".to_string(), Value::Number(2.0))]))
    );
    assert_eq!(eval("case(false, 1, true, 2, 3)"), Value::Number(2.0));
    assert_eq!(eval("case(false, 1, 3)"), Value::Number(3.0));
}

#[test]
fn function_errors() {
    assert_eq!(
        eval_err("format('{0')"),
        "The following format string is invalid: {0"
    );
    assert_eq!(
        eval_err("format('{1}', 'a')"),
        "The following format string references more arguments than were supplied: {1}"
    );
    assert_eq!(
        eval_err("format('{0:x}', 'a')"),
        "The format specifiers 'x' are not valid for objects of type 'String'"
    );
    assert_eq!(
        eval_err("case(1, 2, 3)"),
        "case predicate must evaluate to a boolean value"
    );
    assert!(eval_err("fromJSON('')").contains("Error reading JToken"));
    assert!(eval_err("fromJSON('{')").starts_with("Error parsing fromJson"));
    assert!(eval_err("myFn()").starts_with("Unrecognized function: 'myfn'"));
}

#[test]
fn arity_is_checked_at_parse_time() {
    for (src, msg) in [
        (
            "contains('a')",
            "Too few parameters supplied: '('. Located at position 9",
        ),
        (
            "toJSON(1, 2)",
            "Too many parameters supplied: '('. Located at position 7",
        ),
        ("case(true, 1)", "Too few parameters supplied: '('"),
        (
            "case(true, 1, false, 2)",
            "Even number of parameters supplied",
        ),
        ("always(1)", "Too many parameters supplied: '('"),
    ] {
        let e = parse(src).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.starts_with(msg), "{src}: {e}");
    }
}

#[test]
fn allowed_names() {
    let allowed = Allowed {
        named_values: &["github"],
        functions: &["hashFiles"],
    };
    assert!(parse_allowed("GITHUB.ref && hashfiles('x')", &allowed).is_ok());
    assert_eq!(
        parse_allowed("success()", &allowed)
            .err()
            .map(|e| e.to_string())
            .as_deref(),
        Some(
            "Unrecognized function: 'success'. Located at position 1 within expression: success()"
        )
    );
    assert_eq!(
        parse_allowed("1 && env.X", &allowed)
            .err()
            .map(|e| e.to_string())
            .as_deref(),
        Some(
            "Unrecognized named-value: 'env'. Located at position 6 within expression: 1 && env.X"
        )
    );
}

struct Host {
    calls: RefCell<Vec<(String, Vec<Value>)>>,
}

impl Context for Host {
    fn named_value(&self, name: &str) -> Option<Value> {
        (name == "job").then(|| Value::from_json(&serde_json::json!({"status": "failure"})))
    }
    fn call(&self, name: &str, args: &[Value]) -> Option<Result<Value, EvalError>> {
        self.calls
            .borrow_mut()
            .push((name.to_string(), args.to_vec()));
        match name {
            "success" => Some(Ok(Value::Bool(false))),
            "failure" => Some(Ok(Value::Bool(true))),
            "hashfiles" => Some(Err(EvalError::Host("hashFiles failed".into()))),
            _ => None,
        }
    }
}

#[test]
fn host_functions() {
    let host = Host {
        calls: RefCell::new(Vec::new()),
    };
    let e = parse("Success() || FAILURE() && Job.status == 'FAILURE'").expect("parses");
    assert!(e.uses_status_function());
    assert_eq!(evaluate(&e, &host), Ok(Value::Bool(true)));
    let calls = host.calls.borrow().clone();
    assert_eq!(
        calls.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(),
        ["success", "failure"]
    );
    let e = parse("hashFiles('**/Cargo.lock', 'x')").expect("parses");
    assert!(!e.uses_status_function());
    assert_eq!(
        evaluate(&e, &host),
        Err(EvalError::Host("hashFiles failed".into()))
    );
    assert_eq!(host.calls.borrow().last().map(|c| c.1.len()), Some(2));
}

#[test]
fn memory_limit() {
    let mut src = "'0123456789012345678901234567890123456789'".to_string();
    for _ in 0..5 {
        src = format!("format('{{0}}{{0}}{{0}}{{0}}{{0}}{{0}}{{0}}{{0}}', {src})");
    }
    let e = parse(&src).expect("parses");
    let err = evaluate(&e, &EmptyContext)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.starts_with("The maximum allowed memory size was exceeded"),
        "{err}"
    );
}

#[test]
fn coerced_strings_in_templates() {
    let t = parse_template(
        "n=${{ matrix.n }} os=${{ matrix.os }} none=${{ matrix.nope }} f=${{ 0.1 + 0 }}",
    );
    // `+` is not an operator: the template fails to parse.
    assert!(t.is_err());
    let t = parse_template("n=${{ matrix.n }} os=${{ matrix.os }} none=${{ matrix.nope }}")
        .expect("parses");
    assert_eq!(t.evaluate(&ctx()), Ok(s("n=3 os=Array none=")));
    let t = parse_template("${{ matrix.os }}").expect("parses");
    assert_eq!(
        t.evaluate(&ctx()),
        Ok(Value::Array(vec![s("linux"), s("mac")]))
    );
}
