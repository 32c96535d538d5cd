//! A run's inputs: the `inputs` context and `github.event.inputs` of an event, from the
//! workflow's declared inputs with their defaults, the event file's `inputs` and `--input`,
//! and what GitHub refuses in a `workflow_dispatch`. `plan` and `run` share them, so a plan
//! decides `if:` and expression matrices with the values the run will see.

use firebreak_expr::Value;
use indexmap::IndexMap;

/// The inputs an event was given, as strings (GitHub's payload carries strings; a JSON
/// boolean or number there counts as its text): the event file's `inputs`, then `cli`
/// (`--input NAME=VALUE`) over them, names compared ignoring case.
pub fn given(
    payload: &serde_json::Value,
    cli: &IndexMap<String, String>,
) -> IndexMap<String, String> {
    let mut out: IndexMap<String, String> = IndexMap::new();
    if let Some(m) = payload.get("inputs").and_then(|v| v.as_object()) {
        for (k, v) in m {
            let text = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => String::new(),
                other => other.to_string(),
            };
            out.insert(k.clone(), text);
        }
    }
    for (k, v) in cli {
        out.retain(|o, _| !o.eq_ignore_ascii_case(k));
        out.insert(k.clone(), v.clone());
    }
    out
}

/// What GitHub refuses in a `workflow_dispatch` (its API answers 422): inputs the workflow
/// does not declare, required inputs without a value or default, a `choice` outside its
/// options, a `boolean` that is neither `true` nor `false`.
pub fn dispatch_input_errors(
    wf: &firebreak_workflow::Workflow,
    given: &IndexMap<String, String>,
    check_unexpected: bool,
) -> Vec<String> {
    use firebreak_workflow::InputType;
    let Some(defs) = wf.on.get("workflow_dispatch").map(|c| &c.inputs) else {
        return Vec::new();
    };
    let find = |k: &str| given.iter().find(|(g, _)| g.eq_ignore_ascii_case(k));
    let mut errors = Vec::new();
    if defs.len() > firebreak_workflow::MAX_DISPATCH_INPUTS {
        errors.push(firebreak_workflow::DISPATCH_INPUTS_LIMIT.to_string());
    }
    let unexpected: Vec<String> = given
        .keys()
        .filter(|g| !defs.keys().any(|k| k.eq_ignore_ascii_case(g)))
        .map(|g| format!("{g:?}"))
        .collect();
    if check_unexpected && !unexpected.is_empty() {
        errors.push(format!(
            "Unexpected inputs provided: [{}]",
            unexpected.join(", ")
        ));
    }
    for (k, d) in defs {
        let default = d
            .default
            .as_ref()
            .and_then(|t| t.literal_value())
            .map(|v| v.to_coerced_string())
            .filter(|v| !v.is_empty());
        match find(k).map(|(_, v)| v.as_str()) {
            None | Some("") if d.required && default.is_none() => {
                errors.push(format!("Required input '{k}' not provided"));
            }
            Some(v) if d.input_type == InputType::Choice => {
                let options = d.options.as_deref().unwrap_or_default();
                if !options.iter().any(|o| o == v) {
                    errors.push(format!(
                        "Provided value '{v}' for input '{k}' not in the list of allowed values ({})",
                        options.join(", ")
                    ));
                }
            }
            Some(v)
                if d.input_type == InputType::Boolean
                    && !v.eq_ignore_ascii_case("true")
                    && !v.eq_ignore_ascii_case("false") =>
            {
                errors.push(format!(
                    "Provided value '{v}' for input '{k}' is not a boolean (true or false)"
                ));
            }
            Some(v)
                if d.input_type == InputType::Number
                    && !v.trim().parse::<f64>().is_ok_and(f64::is_finite) =>
            {
                errors.push(format!(
                    "Provided value '{v}' for input '{k}' is not a number"
                ));
            }
            _ => {}
        }
    }
    errors
}

/// `github.event.inputs` of a `workflow_dispatch`: every declared input with its value or
/// default, as the strings GitHub's payload carries (`true`, not a boolean); the `inputs`
/// context keeps the types.
pub fn dispatch_event_inputs(event: &mut serde_json::Value, inputs: &Value) {
    let (Some(o), Value::Object(m)) = (event.as_object_mut(), inputs) else {
        return;
    };
    let strings: serde_json::Map<String, serde_json::Value> = m
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.to_coerced_string())))
        .collect();
    o.insert("inputs".into(), serde_json::Value::Object(strings));
}

/// The `inputs` context: the workflow's declared inputs for this event with their defaults
/// (booleans and numbers typed), overridden by the given ones ([`given`]).
pub fn workflow_inputs(
    wf: &firebreak_workflow::Workflow,
    event: &str,
    given: &IndexMap<String, String>,
) -> Value {
    use firebreak_workflow::InputType;
    let mut out: IndexMap<String, Value> = IndexMap::new();
    let defs = wf
        .on
        .get(event)
        .map(|c| c.inputs.clone())
        .unwrap_or_default();
    for (k, d) in &defs {
        let raw = given
            .iter()
            .find(|(g, _)| g.eq_ignore_ascii_case(k))
            .map(|(_, v)| Value::String(v.clone()))
            .or_else(|| d.default.as_ref().and_then(|t| t.literal_value()));
        let v = match (d.input_type, raw) {
            (InputType::Boolean, Some(v)) => Value::Bool(
                matches!(&v, Value::Bool(true))
                    || v.to_coerced_string().eq_ignore_ascii_case("true"),
            ),
            (InputType::Boolean, None) => Value::Bool(false),
            (InputType::Number, Some(v)) => Value::Number(v.to_number()),
            (_, Some(v)) => Value::String(v.to_coerced_string()),
            (_, None) => Value::String(String::new()),
        };
        out.insert(k.clone(), v);
    }
    for (k, v) in given {
        if !out.keys().any(|o| o.eq_ignore_ascii_case(k)) {
            out.insert(k.clone(), Value::String(v.clone()));
        }
    }
    Value::Object(out)
}
