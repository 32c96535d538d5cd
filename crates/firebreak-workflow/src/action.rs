//! Action manifests (`action.yml` / `action.yaml`): what an action takes, gives and runs.
//!
//! [`parse_action`] reads a manifest into an [`Action`]:
//!
//! * `inputs.<id>` with `description`, `required`, `default` (kept as the raw string: a default
//!   may hold `${{ }}` expressions such as `${{ github.token }}`, evaluated by the executor with
//!   the step's contexts) and `deprecationMessage`;
//! * `outputs.<id>` with `value` (composite actions: an expression over the action's `steps`);
//! * `runs`: [`Runs::Composite`] with its steps converted by the workflow reader (so they get
//!   the same model, default ids and final `if:` conditions as workflow steps), [`Runs::Node`]
//!   for `using: node12|node16|node20|node24` (`main`, `pre`, `pre-if`, `post`, `post-if`),
//!   [`Runs::Docker`] (recognised so the executor can say clearly that it does not run them),
//!   and [`Runs::Unknown`] for anything else.
//!
//! Composite steps are validated by handing them to the workflow reader inside a synthetic
//! one-job workflow; errors are reported as [`ActionError::Invalid`] with the reader's messages
//! (positions refer to the synthetic document, so only messages are kept).

use indexmap::IndexMap;

use crate::model::{Step, StepKind};
use crate::yaml::{self, YKind, YNode};

/// One `inputs.<id>` entry.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ActionInput {
    pub description: Option<String>,
    pub required: bool,
    /// The default as written (may contain `${{ }}`); `None` when absent.
    pub default: Option<String>,
    pub deprecation_message: Option<String>,
}

/// One `outputs.<id>` entry.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ActionOutput {
    pub description: Option<String>,
    /// `value:` as written (composite actions); `None` for JavaScript/Docker actions, whose
    /// outputs come from the process.
    pub value: Option<String>,
}

/// How the action runs.
#[derive(Clone, Debug)]
pub enum Runs {
    /// `using: composite`.
    Composite { steps: Vec<Step> },
    /// `using: node12` … `node24`.
    Node {
        using: String,
        main: String,
        pre: Option<String>,
        /// `pre-if` (default `always()`), as written.
        pre_if: Option<String>,
        post: Option<String>,
        /// `post-if` (default `always()`), as written.
        post_if: Option<String>,
    },
    /// `using: docker`.
    Docker { image: String },
    /// Any other `using:` value.
    Unknown { using: String },
}

/// A parsed action manifest.
#[derive(Clone, Debug)]
pub struct Action {
    pub name: Option<String>,
    pub description: Option<String>,
    pub inputs: IndexMap<String, ActionInput>,
    pub outputs: IndexMap<String, ActionOutput>,
    pub runs: Runs,
}

/// Why a manifest cannot be used.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ActionError {
    /// Not YAML.
    #[error("{file}: {message}")]
    Yaml { file: String, message: String },
    /// A required part is missing or has the wrong shape.
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
}

fn invalid(file: &str, message: impl Into<String>) -> ActionError {
    ActionError::Invalid {
        file: file.to_string(),
        message: message.into(),
    }
}

fn key(n: &YNode) -> String {
    n.scalar_string().unwrap_or_default()
}

fn get<'a, 's>(n: &'a YNode<'s>, k: &str) -> Option<&'a YNode<'s>> {
    match &n.kind {
        YKind::Map(pairs) => pairs.iter().find(|(kk, _)| key(kk) == k).map(|(_, v)| v),
        _ => None,
    }
}

fn get_str(n: &YNode, k: &str) -> Option<String> {
    get(n, k).and_then(YNode::scalar_string)
}

fn truthy(n: Option<&YNode>) -> bool {
    match n.map(|n| &n.kind) {
        Some(YKind::Bool(b)) => *b,
        Some(YKind::Str { value, .. }) => value.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

/// Parses an action manifest. `file` names it in messages.
pub fn parse_action(file: &str, src: &str) -> Result<Action, ActionError> {
    let root = yaml::load_with_depth(src, yaml::DEFAULT_MAX_DEPTH)
        .map_err(|e| ActionError::Yaml {
            file: file.to_string(),
            message: e.message,
        })?
        .ok_or_else(|| invalid(file, "the action manifest is empty"))?;
    if !matches!(root.kind, YKind::Map(_)) {
        return Err(invalid(file, "the action manifest must be a mapping"));
    }
    let mut inputs = IndexMap::new();
    if let Some(YNode {
        kind: YKind::Map(pairs),
        ..
    }) = get(&root, "inputs")
    {
        for (k, v) in pairs {
            inputs.insert(
                key(k),
                ActionInput {
                    description: get_str(v, "description"),
                    required: truthy(get(v, "required")),
                    default: get_str(v, "default"),
                    deprecation_message: get_str(v, "deprecationMessage"),
                },
            );
        }
    }
    let mut outputs = IndexMap::new();
    if let Some(YNode {
        kind: YKind::Map(pairs),
        ..
    }) = get(&root, "outputs")
    {
        for (k, v) in pairs {
            outputs.insert(
                key(k),
                ActionOutput {
                    description: get_str(v, "description"),
                    value: get_str(v, "value"),
                },
            );
        }
    }
    let runs = get(&root, "runs")
        .ok_or_else(|| invalid(file, "the action manifest has no 'runs' section"))?;
    let using = get_str(runs, "using").ok_or_else(|| invalid(file, "'runs.using' is missing"))?;
    let lower = using.to_ascii_lowercase();
    let runs = if lower == "composite" {
        let steps = get(runs, "steps")
            .ok_or_else(|| invalid(file, "a composite action needs 'runs.steps'"))?;
        Runs::Composite {
            steps: composite_steps(file, steps)?,
        }
    } else if lower.starts_with("node") {
        // The Node.js versions GitHub's runner ships; any other `nodeNN` fails to load.
        if !matches!(lower.as_str(), "node12" | "node16" | "node20" | "node24") {
            return Err(invalid(
                file,
                format!("'using: {using}' is not supported, use 'docker', 'node12', 'node16', 'node20' or 'node24' instead."),
            ));
        }
        let main = get_str(runs, "main")
            .ok_or_else(|| invalid(file, "a JavaScript action needs 'runs.main'"))?;
        Runs::Node {
            using,
            main,
            pre: get_str(runs, "pre"),
            pre_if: get_str(runs, "pre-if"),
            post: get_str(runs, "post"),
            post_if: get_str(runs, "post-if"),
        }
    } else if lower == "docker" {
        Runs::Docker {
            image: get_str(runs, "image").unwrap_or_default(),
        }
    } else {
        Runs::Unknown { using }
    };
    Ok(Action {
        name: get_str(&root, "name"),
        description: get_str(&root, "description"),
        inputs,
        outputs,
        runs,
    })
}

/// Converts composite steps through the workflow reader (one synthetic job).
fn composite_steps(file: &str, steps: &YNode) -> Result<Vec<Step>, ActionError> {
    if !matches!(steps.kind, YKind::Seq(_)) {
        return Err(invalid(file, "'runs.steps' must be a sequence"));
    }
    let doc = serde_json::json!({
        "on": "push",
        "jobs": { "composite": { "runs-on": "composite", "steps": steps.to_json() } }
    });
    let parsed = crate::parse_workflow(file, &doc.to_string());
    if !parsed.diagnostics.is_empty() {
        let msgs: Vec<String> = parsed
            .diagnostics
            .iter()
            .map(|d| d.message.clone())
            .collect();
        return Err(invalid(file, msgs.join("; ")));
    }
    let wf = parsed
        .workflow
        .ok_or_else(|| invalid(file, "invalid composite steps"))?;
    let job = wf
        .jobs
        .into_iter()
        .next()
        .ok_or_else(|| invalid(file, "invalid composite steps"))?;
    let steps = job.steps().to_vec();
    for s in &steps {
        if let StepKind::Run { shell: None, .. } = &s.kind {
            return Err(invalid(
                file,
                format!(
                    "step '{}': 'shell' is required for run steps of composite actions",
                    s.id
                ),
            ));
        }
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_manifest() {
        let src = "name: x\ninputs:\n  who:\n    required: true\n    default: '${{ github.actor }}'\noutputs:\n  o:\n    value: ${{ steps.a.outputs.o }}\nruns:\n  using: composite\n  steps:\n  - id: a\n    run: echo hi\n    shell: bash\n  - uses: ./other\n    if: inputs.who == 'me'\n";
        let a = parse_action("action.yml", src).expect("valid");
        assert_eq!(
            a.inputs["who"].default.as_deref(),
            Some("${{ github.actor }}")
        );
        assert!(a.inputs["who"].required);
        assert_eq!(
            a.outputs["o"].value.as_deref(),
            Some("${{ steps.a.outputs.o }}")
        );
        let Runs::Composite { steps } = &a.runs else {
            panic!("not composite")
        };
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0].id, "a");
        assert_eq!(
            steps[1].if_condition.as_deref(),
            Some("success() && (inputs.who == 'me')")
        );
    }

    #[test]
    fn node_and_docker_manifests() {
        let a = parse_action("a.yml", "runs:\n  using: node20\n  main: dist/index.js\n  post: dist/post.js\n  post-if: success()\n")
            .expect("valid");
        assert!(
            matches!(&a.runs, Runs::Node { main, post: Some(p), post_if: Some(pi), .. } if main == "dist/index.js" && p == "dist/post.js" && pi == "success()")
        );
        let d =
            parse_action("a.yml", "runs:\n  using: docker\n  image: Dockerfile\n").expect("valid");
        assert!(matches!(d.runs, Runs::Docker { .. }));
        assert!(parse_action("a.yml", "name: x\n").is_err());
        assert!(parse_action(
            "a.yml",
            "runs:\n  using: composite\n  steps:\n  - run: echo\n"
        )
        .is_err());
        // Only the Node.js versions GitHub's runner ships.
        for v in ["node12", "node16", "node20", "node24", "Node20"] {
            let src = format!("runs:\n  using: {v}\n  main: i.js\n");
            assert!(parse_action("a.yml", &src).is_ok(), "{v}");
        }
        let e = parse_action("a.yml", "runs:\n  using: node18\n  main: i.js\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("'using: node18' is not supported, use 'docker', 'node12', 'node16', 'node20' or 'node24' instead."),
            "{e}"
        );
    }

    proptest::proptest! {
        // Any text, and any mutation of a valid manifest, gives a result or an error, never a panic.
        #[test]
        fn never_panics(src in "\\PC{0,200}") {
            let _ = parse_action("a.yml", &src);
        }

        #[test]
        fn mutated_manifests_never_panic(cut in 0usize..400, junk in "[ :\\-\\[\\]{}$#'\"\n a-z]{0,12}") {
            let base = "name: x\ninputs:\n  who:\n    default: '${{ github.actor }}'\noutputs:\n  o:\n    value: ${{ steps.a.outputs.o }}\nruns:\n  using: composite\n  steps:\n  - id: a\n    run: echo hi\n    shell: bash\n";
            let cut = cut.min(base.len());
            let cut = (0..=cut).rev().find(|i| base.is_char_boundary(*i)).unwrap_or(0);
            let src = format!("{}{}{}", &base[..cut], junk, &base[cut..]);
            let _ = parse_action("a.yml", &src);
        }
    }
}
