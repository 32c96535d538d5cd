//! The event a command simulates: its name and its payload file, checked before anything is
//! planned or run.

use std::path::Path;

/// `Ok` when `name` is an event a workflow can trigger on; else a message that says what to
/// type instead (the closest event name, or where the list is).
pub fn check_event_name(name: &str) -> Result<(), String> {
    if name == "workflow_call" {
        return Err(
            "'workflow_call' is no event GitHub sends: a workflow with `on: workflow_call` \
             runs when a job of another workflow calls it (`uses: ./.github/workflows/<file>`); \
             run the event that starts the calling workflow"
                .into(),
        );
    }
    if firebreak_workflow::event_names().any(|e| e == name) {
        return Ok(());
    }
    let closest = firebreak_workflow::event_names()
        .map(|e| (strsim::damerau_levenshtein(name, e), e))
        .min();
    Err(match closest {
        Some((d, e)) if d <= 2 || e.eq_ignore_ascii_case(name) => {
            format!("no event named '{name}'; did you mean '{e}'?")
        }
        _ => format!(
            "no event named '{name}'; events are GitHub's webhook names, e.g. push, pull_request, workflow_dispatch, schedule"
        ),
    })
}

/// Reads an event payload file: it must hold a JSON object, as every webhook payload is.
pub fn read_event_file(path: &Path) -> Result<serde_json::Value, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    // Editors on Windows (PowerShell 5's `Out-File`) start UTF-8 with a byte-order mark.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v @ serde_json::Value::Object(_)) => Ok(v),
        Ok(other) => Err(format!(
            "{}: an event payload is a JSON object (as GitHub's webhook payloads are), not {}",
            path.display(),
            match other {
                serde_json::Value::Null => "null",
                serde_json::Value::Bool(_) => "a boolean",
                serde_json::Value::Number(_) => "a number",
                serde_json::Value::String(_) => "a string",
                serde_json::Value::Array(_) => "an array",
                serde_json::Value::Object(_) => "an object",
            }
        )),
        Err(e) => Err(format!("{}: not JSON: {e}", path.display())),
    }
}

/// `github.event.schedule` of a scheduled run of `wf`: its first `cron` (GitHub sends the one
/// that fired), unless the payload already has one.
pub fn fill_schedule(event: &mut serde_json::Value, wf: &firebreak_workflow::Workflow) {
    let Some(cron) = wf
        .on
        .get("schedule")
        .and_then(|c| c.schedule.first())
        .map(|s| s.cron.clone())
    else {
        return;
    };
    if let Some(o) = event.as_object_mut() {
        o.entry("schedule")
            .or_insert(serde_json::Value::String(cron));
    }
}

/// Prints [`unchecked_types`]'s notes on stderr, as `plan` and `run` do.
pub fn note_unchecked_types(
    plan: &firebreak_workflow::plan::Plan,
    event: &firebreak_workflow::plan::Event,
) {
    for note in unchecked_types(plan, event) {
        eprintln!(
            "{}",
            crate::style::err_dim(&format!("note: {}", crate::style::printable(&note)))
        );
    }
}

/// Notes for the workflows of `plan` whose `types` filter an event without an `action` (one
/// synthesised for `issues`, `release`…) left unchecked: such a workflow is planned as
/// triggered whatever types it lists.
fn unchecked_types(
    plan: &firebreak_workflow::plan::Plan,
    event: &firebreak_workflow::plan::Event,
) -> Vec<String> {
    if event.payload.get("action").is_some() {
        return Vec::new();
    }
    plan.workflows
        .iter()
        .filter_map(|wf| {
            let types = wf.workflow.on.get(&event.name)?.types.as_ref()?;
            Some(format!(
                "{}: its `types` ({}) were not checked: the `{}` event has no `action`; give one with --event-file (e.g. {{\"action\": \"{}\"}})",
                wf.path,
                types.join(", "),
                event.name,
                types.first().map_or("created", String::as_str)
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_are_checked_with_a_suggestion() {
        assert!(check_event_name("push").is_ok());
        assert!(check_event_name("workflow_dispatch").is_ok());
        let e = check_event_name("psuh").err().unwrap_or_default();
        assert!(e.contains("did you mean 'push'?"), "{e}");
        let e = check_event_name("pull-request").err().unwrap_or_default();
        assert!(e.contains("did you mean 'pull_request'?"), "{e}");
        let e = check_event_name("workflow_call").err().unwrap_or_default();
        assert!(
            e.contains("runs when a job of another workflow calls it"),
            "{e}"
        );
        let e = check_event_name("Push").err().unwrap_or_default();
        assert!(e.contains("did you mean 'push'?"), "{e}");
        let e = check_event_name("deploy-the-thing")
            .err()
            .unwrap_or_default();
        assert!(e.contains("e.g. push"), "{e}");
    }

    #[test]
    fn an_event_payload_must_be_an_object() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("e.json");
        for (text, ok) in [
            ("{\"ref\": \"refs/heads/main\"}", true),
            ("[]", false),
            ("42", false),
            ("null", false),
            ("\"x\"", false),
            ("{", false),
        ] {
            std::fs::write(&f, text).expect("write");
            assert_eq!(read_event_file(&f).is_ok(), ok, "{text}");
        }
        std::fs::write(&f, "[1]").expect("write");
        let e = read_event_file(&f).err().unwrap_or_default();
        assert!(e.contains("a JSON object") && e.contains("an array"), "{e}");
        assert!(read_event_file(&dir.path().join("missing.json")).is_err());
    }
}
