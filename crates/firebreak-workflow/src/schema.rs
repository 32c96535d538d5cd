//! The workflow language as data: which keys each mapping accepts, which value types each key
//! takes, and which expression contexts/functions are available where.
//!
//! The facts (key names, event activity types, context availability) follow GitHub's published
//! workflow schema; the representation is firebreak's own. The template reader
//! (`reader.rs`) interprets these definitions the way GitHub's reader interprets its schema,
//! which is what makes error messages and their order match GitHub's.

use std::collections::HashMap;
use std::sync::OnceLock;

#[derive(Debug)]
pub(crate) struct Prop {
    pub name: &'static str,
    pub ty: &'static str,
    pub required: bool,
}

const fn p(name: &'static str, ty: &'static str) -> Prop {
    Prop {
        name,
        ty,
        required: false,
    }
}
const fn req(name: &'static str, ty: &'static str) -> Prop {
    Prop {
        name,
        ty,
        required: true,
    }
}

#[derive(Debug)]
pub(crate) enum Kind {
    Null,
    Bool,
    Number,
    Str {
        constant: Option<&'static str>,
        non_empty: bool,
    },
    Seq(&'static str),
    Map {
        props: &'static [Prop],
        loose: Option<(&'static str, &'static str)>,
    },
    OneOf(&'static [&'static str]),
    /// A one-of over string constants.
    Allowed(&'static [&'static str]),
}

#[derive(Debug)]
pub(crate) struct Def {
    pub name: &'static str,
    pub ctx: &'static [&'static str],
    pub kind: Kind,
}

/// A scalar definition produced when expanding one-ofs.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ScalarDef {
    Null,
    Bool,
    Number,
    Str {
        constant: Option<&'static str>,
        non_empty: bool,
    },
}

const fn d(name: &'static str, kind: Kind) -> Def {
    Def {
        name,
        ctx: &[],
        kind,
    }
}
const fn dc(name: &'static str, ctx: &'static [&'static str], kind: Kind) -> Def {
    Def { name, ctx, kind }
}
const fn s() -> Kind {
    Kind::Str {
        constant: None,
        non_empty: false,
    }
}
const fn nes() -> Kind {
    Kind::Str {
        constant: None,
        non_empty: true,
    }
}
const fn cst(c: &'static str) -> Kind {
    Kind::Str {
        constant: Some(c),
        non_empty: false,
    }
}
/// A non-empty string or a sequence of them (event filters, `runs-on` labels, a step's `wait`).
const fn one_or_many() -> Kind {
    Kind::OneOf(&["non-empty-string", "sequence-of-non-empty-string"])
}
const fn map(props: &'static [Prop]) -> Kind {
    Kind::Map { props, loose: None }
}
const fn loose(k: &'static str, v: &'static str) -> Kind {
    Kind::Map {
        props: &[],
        loose: Some((k, v)),
    }
}

// Context lists.
const GIV: &[&str] = &["github", "inputs", "vars"];
const GIVS: &[&str] = &["github", "inputs", "vars", "secrets"];
const GIVJ: &[&str] = &["github", "inputs", "vars", "jobs"];
const NEEDS: &[&str] = &["github", "inputs", "vars", "needs"];
/// Contexts and functions of a job's `if` (also what [`crate::convert`] checks it against).
pub(crate) const JOB_IF: &[&str] = &[
    "github",
    "inputs",
    "vars",
    "needs",
    "always(0,0)",
    "failure(0,MAX)",
    "cancelled(0,0)",
    "success(0,MAX)",
];
const STRATEGY: &[&str] = &["github", "inputs", "vars", "needs", "strategy", "matrix"];
const STRATEGY_SECRETS: &[&str] = &[
    "github", "inputs", "vars", "needs", "strategy", "matrix", "secrets",
];
const NEEDS_SECRETS_STRATEGY: &[&str] = &[
    "github", "inputs", "vars", "needs", "secrets", "strategy", "matrix",
];
const DEFAULTS_RUN: &[&str] = &[
    "github", "inputs", "vars", "strategy", "matrix", "needs", "env",
];
const CREDENTIALS: &[&str] = &["github", "inputs", "vars", "secrets", "env"];
const RUNNER: &[&str] = &[
    "github", "inputs", "vars", "needs", "strategy", "matrix", "secrets", "steps", "job", "runner",
    "env",
];
const RUNNER_NO_SECRETS: &[&str] = &[
    "github", "inputs", "vars", "needs", "strategy", "matrix", "steps", "job", "runner", "env",
];
const STEPS: &[&str] = &[
    "github",
    "inputs",
    "vars",
    "needs",
    "strategy",
    "matrix",
    "secrets",
    "steps",
    "job",
    "runner",
    "env",
    "hashFiles(1,255)",
];
/// Contexts and functions of a step's `if`.
pub(crate) const STEP_IF: &[&str] = &[
    "github",
    "inputs",
    "vars",
    "needs",
    "strategy",
    "matrix",
    "steps",
    "job",
    "runner",
    "env",
    "always(0,0)",
    "failure(0,0)",
    "cancelled(0,0)",
    "success(0,0)",
    "hashFiles(1,255)",
];

const PR_TYPES: &[&str] = &[
    "assigned",
    "unassigned",
    "labeled",
    "unlabeled",
    "opened",
    "edited",
    "closed",
    "reopened",
    "synchronize",
    "converted_to_draft",
    "locked",
    "unlocked",
    "enqueued",
    "dequeued",
    "milestoned",
    "demilestoned",
    "ready_for_review",
    "review_requested",
    "review_request_removed",
    "auto_merge_enabled",
    "auto_merge_disabled",
    "stacked",
];
const CED: &[&str] = &["created", "edited", "deleted"];

/// Events: name, and for each the shape of its configuration.
pub(crate) enum EventShape {
    /// Only `null` (e.g. `create:`).
    NullOnly,
    /// `null` or a mapping with `types` (activity types) and extra filter keys.
    Types {
        types: Option<&'static [&'static str]>,
        extra: &'static [Prop],
    },
    /// Special definitions handled by name.
    Special(&'static str),
}

const BRANCHES: &[Prop] = &[
    p("branches", "event-branches"),
    p("branches-ignore", "event-branches-ignore"),
];
const PR_FILTERS: &[Prop] = &[
    p("branches", "event-branches"),
    p("branches-ignore", "event-branches-ignore"),
    p("paths", "event-paths"),
    p("paths-ignore", "event-paths-ignore"),
];

pub(crate) const EVENTS: &[(&str, EventShape)] = &[
    (
        "branch_protection_rule",
        EventShape::Types {
            types: Some(CED),
            extra: &[],
        },
    ),
    (
        "check_run",
        EventShape::Types {
            types: Some(&["completed", "created", "rerequested", "requested_action"]),
            extra: &[],
        },
    ),
    (
        "check_suite",
        EventShape::Types {
            types: Some(&["completed"]),
            extra: &[],
        },
    ),
    ("create", EventShape::NullOnly),
    ("delete", EventShape::NullOnly),
    ("deployment", EventShape::NullOnly),
    ("deployment_status", EventShape::NullOnly),
    (
        "discussion",
        EventShape::Types {
            types: Some(&[
                "created",
                "edited",
                "deleted",
                "transferred",
                "pinned",
                "unpinned",
                "labeled",
                "unlabeled",
                "locked",
                "unlocked",
                "category_changed",
                "answered",
                "unanswered",
            ]),
            extra: &[],
        },
    ),
    (
        "discussion_comment",
        EventShape::Types {
            types: Some(CED),
            extra: &[],
        },
    ),
    ("fork", EventShape::NullOnly),
    ("gollum", EventShape::NullOnly),
    (
        "image_version",
        EventShape::Types {
            types: Some(&["created", "ready", "deleted"]),
            extra: &[p("names", "event-names"), p("versions", "event-versions")],
        },
    ),
    (
        "issue_comment",
        EventShape::Types {
            types: Some(CED),
            extra: &[],
        },
    ),
    (
        "issues",
        EventShape::Types {
            types: Some(&[
                "opened",
                "edited",
                "deleted",
                "transferred",
                "pinned",
                "unpinned",
                "closed",
                "reopened",
                "assigned",
                "unassigned",
                "labeled",
                "unlabeled",
                "locked",
                "unlocked",
                "milestoned",
                "demilestoned",
                "field_added",
                "field_removed",
                "typed",
                "untyped",
            ]),
            extra: &[],
        },
    ),
    (
        "label",
        EventShape::Types {
            types: Some(CED),
            extra: &[],
        },
    ),
    (
        "merge_group",
        EventShape::Types {
            types: Some(&["checks_requested"]),
            extra: BRANCHES,
        },
    ),
    (
        "milestone",
        EventShape::Types {
            types: Some(&["created", "closed", "opened", "edited", "deleted"]),
            extra: &[],
        },
    ),
    ("page_build", EventShape::NullOnly),
    (
        "project",
        EventShape::Types {
            types: Some(&["created", "closed", "reopened", "edited", "deleted"]),
            extra: &[],
        },
    ),
    (
        "project_card",
        EventShape::Types {
            types: Some(&["created", "moved", "converted", "edited", "deleted"]),
            extra: &[],
        },
    ),
    (
        "project_column",
        EventShape::Types {
            types: Some(&["created", "updated", "moved", "deleted"]),
            extra: &[],
        },
    ),
    ("public", EventShape::NullOnly),
    (
        "pull_request",
        EventShape::Types {
            types: Some(PR_TYPES),
            extra: PR_FILTERS,
        },
    ),
    (
        "pull_request_comment",
        EventShape::Types {
            types: Some(CED),
            extra: &[],
        },
    ),
    (
        "pull_request_review",
        EventShape::Types {
            types: Some(&["submitted", "edited", "dismissed"]),
            extra: &[],
        },
    ),
    (
        "pull_request_review_comment",
        EventShape::Types {
            types: Some(CED),
            extra: &[],
        },
    ),
    (
        "pull_request_target",
        EventShape::Types {
            types: Some(PR_TYPES),
            extra: PR_FILTERS,
        },
    ),
    (
        "push",
        EventShape::Types {
            types: None,
            extra: &[
                p("branches", "event-branches"),
                p("branches-ignore", "event-branches-ignore"),
                p("tags", "event-tags"),
                p("tags-ignore", "event-tags-ignore"),
                p("paths", "event-paths"),
                p("paths-ignore", "event-paths-ignore"),
            ],
        },
    ),
    (
        "registry_package",
        EventShape::Types {
            types: Some(&["published", "updated"]),
            extra: &[],
        },
    ),
    (
        "release",
        EventShape::Types {
            types: Some(&[
                "published",
                "unpublished",
                "created",
                "edited",
                "deleted",
                "prereleased",
                "released",
            ]),
            extra: &[],
        },
    ),
    (
        "repository_dispatch",
        EventShape::Special("repository-dispatch"),
    ),
    ("schedule", EventShape::Special("schedule")),
    ("status", EventShape::NullOnly),
    (
        "watch",
        EventShape::Types {
            types: Some(&["started"]),
            extra: &[],
        },
    ),
    ("workflow_call", EventShape::Special("workflow-call")),
    (
        "workflow_dispatch",
        EventShape::Special("workflow-dispatch"),
    ),
    (
        "workflow_run",
        EventShape::Types {
            types: Some(&["requested", "completed", "in_progress"]),
            extra: &[
                p("workflows", "workflow-run-workflows"),
                p("branches", "event-branches"),
                p("branches-ignore", "event-branches-ignore"),
            ],
        },
    ),
];

/// Every event name GitHub knows.
pub fn event_names() -> impl Iterator<Item = &'static str> {
    EVENTS.iter().map(|(n, _)| *n)
}

static STATIC_DEFS: &[Def] = &[
    // built-ins
    d("null", Kind::Null),
    d("boolean", Kind::Bool),
    d("number", Kind::Number),
    d("string", s()),
    d("sequence", Kind::Seq("any")),
    d("mapping", loose("string", "any")),
    d(
        "any",
        Kind::OneOf(&["null", "boolean", "number", "string", "sequence", "mapping"]),
    ),
    d("non-empty-string", nes()),
    d(
        "sequence-of-non-empty-string",
        Kind::Seq("non-empty-string"),
    ),
    d("sequence-of-string", Kind::Seq("string")),
    // root
    d(
        "workflow-root-strict",
        map(&[
            req("on", "on-strict"),
            p("name", "workflow-name"),
            p("description", "workflow-description"),
            p("run-name", "run-name"),
            p("defaults", "workflow-defaults"),
            p("env", "workflow-env"),
            p("permissions", "permissions"),
            p("concurrency", "workflow-concurrency"),
            req("jobs", "jobs"),
        ]),
    ),
    d("workflow-name", s()),
    d("workflow-description", s()),
    dc("run-name", GIV, s()),
    d(
        "on-strict",
        Kind::OneOf(&[
            "on-string-strict",
            "on-sequence-strict",
            "on-mapping-strict",
        ]),
    ),
    d("on-sequence-strict", Kind::Seq("on-string-strict")),
    // on-string-strict and on-mapping-strict are built from EVENTS
    d("schedule", Kind::Seq("cron-mapping")),
    d(
        "cron-mapping",
        map(&[
            req("cron", "non-empty-string"),
            p("timezone", "non-empty-string"),
        ]),
    ),
    d("workflow-run-workflows", one_or_many()),
    d("event-branches", one_or_many()),
    d("event-branches-ignore", one_or_many()),
    d("event-names", one_or_many()),
    d("event-tags", one_or_many()),
    d("event-tags-ignore", one_or_many()),
    d("event-paths", one_or_many()),
    d("event-paths-ignore", one_or_many()),
    d("event-versions", one_or_many()),
    d(
        "repository-dispatch",
        Kind::OneOf(&["null", "repository-dispatch-mapping"]),
    ),
    d(
        "repository-dispatch-mapping",
        map(&[p("types", "sequence-of-non-empty-string")]),
    ),
    d(
        "workflow-call",
        Kind::OneOf(&["null", "workflow-call-mapping"]),
    ),
    d(
        "workflow-call-mapping",
        map(&[
            p("inputs", "workflow-call-inputs"),
            p("secrets", "workflow-call-secrets"),
            p("outputs", "workflow-call-outputs"),
        ]),
    ),
    d(
        "workflow-call-inputs",
        loose("non-empty-string", "workflow-call-input-definition"),
    ),
    d(
        "workflow-call-input-definition",
        map(&[
            p("description", "string"),
            req("type", "workflow-call-input-type"),
            p("required", "boolean"),
            p("default", "workflow-call-input-default"),
        ]),
    ),
    d(
        "workflow-call-input-type",
        Kind::OneOf(&[
            "input-type-string",
            "input-type-boolean",
            "input-type-number",
        ]),
    ),
    d("input-type-string", cst("string")),
    d("input-type-boolean", cst("boolean")),
    d("input-type-number", cst("number")),
    d("input-type-choice", cst("choice")),
    d("input-type-environment", cst("environment")),
    dc(
        "workflow-call-input-default",
        GIV,
        Kind::OneOf(&["string", "boolean", "number"]),
    ),
    d(
        "workflow-call-secrets",
        loose("non-empty-string", "workflow-call-secret-definition"),
    ),
    d(
        "workflow-call-secret-definition",
        Kind::OneOf(&["null", "workflow-call-secret-mapping-definition"]),
    ),
    d(
        "workflow-call-secret-mapping-definition",
        map(&[p("description", "string"), p("required", "boolean")]),
    ),
    d(
        "workflow-call-outputs",
        loose("non-empty-string", "workflow-call-output-definition"),
    ),
    d(
        "workflow-call-output-definition",
        map(&[
            p("description", "string"),
            req("value", "workflow-output-context"),
        ]),
    ),
    dc("workflow-output-context", GIVJ, s()),
    d(
        "workflow-dispatch",
        Kind::OneOf(&["null", "workflow-dispatch-mapping"]),
    ),
    d(
        "workflow-dispatch-mapping",
        map(&[p("inputs", "workflow-dispatch-inputs")]),
    ),
    d(
        "workflow-dispatch-inputs",
        loose("non-empty-string", "workflow-dispatch-input"),
    ),
    d(
        "workflow-dispatch-input",
        map(&[
            p("description", "string"),
            p("type", "workflow-dispatch-input-type"),
            p("required", "boolean"),
            p("default", "workflow-dispatch-input-default"),
            p("options", "sequence-of-string"),
        ]),
    ),
    d(
        "workflow-dispatch-input-type",
        Kind::OneOf(&[
            "input-type-string",
            "input-type-boolean",
            "input-type-number",
            "input-type-environment",
            "input-type-choice",
        ]),
    ),
    d(
        "workflow-dispatch-input-default",
        Kind::OneOf(&["string", "boolean", "number"]),
    ),
    // permissions
    d(
        "permissions",
        Kind::OneOf(&[
            "permissions-mapping",
            "permission-level-shorthand-read-all",
            "permission-level-shorthand-write-all",
        ]),
    ),
    d(
        "permissions-mapping",
        map(&[
            p("actions", "permission-level-any"),
            p("artifact-metadata", "permission-level-any"),
            p("attestations", "permission-level-any"),
            p("checks", "permission-level-any"),
            p("code-quality", "permission-level-any"),
            p("contents", "permission-level-any"),
            p("copilot-requests", "permission-level-write-or-no-access"),
            p("deployments", "permission-level-any"),
            p("discussions", "permission-level-any"),
            p("drives", "permission-level-any"),
            p("id-token", "permission-level-write-or-no-access"),
            p("issues", "permission-level-any"),
            p("models", "permission-level-read-or-no-access"),
            p("packages", "permission-level-any"),
            p("pages", "permission-level-any"),
            p("pull-requests", "permission-level-any"),
            p("repository-projects", "permission-level-any"),
            p("security-events", "permission-level-any"),
            p("statuses", "permission-level-any"),
            p("vulnerability-alerts", "permission-level-read-or-no-access"),
        ]),
    ),
    d(
        "permission-level-any",
        Kind::OneOf(&[
            "permission-level-read",
            "permission-level-write",
            "permission-level-no-access",
        ]),
    ),
    d(
        "permission-level-read-or-no-access",
        Kind::OneOf(&["permission-level-read", "permission-level-no-access"]),
    ),
    d(
        "permission-level-write-or-no-access",
        Kind::OneOf(&["permission-level-write", "permission-level-no-access"]),
    ),
    d("permission-level-read", cst("read")),
    d("permission-level-write", cst("write")),
    d("permission-level-no-access", cst("none")),
    d("permission-level-shorthand-read-all", cst("read-all")),
    d("permission-level-shorthand-write-all", cst("write-all")),
    // defaults / env
    d(
        "workflow-defaults",
        map(&[p("run", "workflow-defaults-run")]),
    ),
    d(
        "workflow-defaults-run",
        map(&[
            p("shell", "non-empty-string"),
            p("working-directory", "non-empty-string"),
        ]),
    ),
    dc("workflow-env", GIVS, loose("non-empty-string", "string")),
    // jobs
    d("jobs", loose("job-id", "job")),
    d("job-id", nes()),
    d("job", Kind::OneOf(&["job-factory", "workflow-job"])),
    d(
        "job-factory",
        map(&[
            p("needs", "needs"),
            p("if", "job-if"),
            p("strategy", "strategy"),
            p("name", "string-strategy-context"),
            req("runs-on", "runs-on"),
            p("timeout-minutes", "number-strategy-context"),
            p("cancel-timeout-minutes", "number-strategy-context"),
            p("continue-on-error", "boolean-strategy-context"),
            p("container", "container"),
            p("services", "services"),
            p("env", "job-env"),
            p("environment", "job-environment"),
            p("permissions", "permissions"),
            p("concurrency", "job-concurrency"),
            p("outputs", "job-outputs"),
            p("defaults", "job-defaults"),
            p("steps", "steps"),
            p("snapshot", "snapshot"),
        ]),
    ),
    d(
        "workflow-job",
        map(&[
            p("name", "string-strategy-context"),
            req("uses", "non-empty-string"),
            p("with", "workflow-job-with"),
            p("secrets", "workflow-job-secrets"),
            p("needs", "needs"),
            p("if", "job-if"),
            p("permissions", "permissions"),
            p("concurrency", "job-concurrency"),
            p("strategy", "strategy"),
        ]),
    ),
    d(
        "workflow-job-with",
        loose("non-empty-string", "scalar-needs-context"),
    ),
    d(
        "workflow-job-secrets",
        Kind::OneOf(&[
            "workflow-job-secrets-mapping",
            "workflow-job-secrets-inherit",
        ]),
    ),
    d(
        "workflow-job-secrets-mapping",
        loose("non-empty-string", "scalar-needs-context-with-secrets"),
    ),
    d("workflow-job-secrets-inherit", cst("inherit")),
    d(
        "needs",
        Kind::OneOf(&["sequence-of-non-empty-string", "non-empty-string"]),
    ),
    dc("job-if", JOB_IF, s()),
    dc(
        "strategy",
        NEEDS,
        map(&[
            p("fail-fast", "boolean"),
            p("max-parallel", "number"),
            p("matrix", "matrix"),
        ]),
    ),
    d(
        "matrix",
        Kind::Map {
            props: &[p("include", "matrix-filter"), p("exclude", "matrix-filter")],
            loose: Some(("non-empty-string", "sequence")),
        },
    ),
    d("matrix-filter", Kind::Seq("matrix-filter-item")),
    d("matrix-filter-item", loose("non-empty-string", "any")),
    d(
        "snapshot",
        Kind::OneOf(&["non-empty-string", "snapshot-mapping"]),
    ),
    d(
        "snapshot-mapping",
        map(&[
            req("image-name", "non-empty-string"),
            p("if", "snapshot-if"),
            p("version", "non-empty-string"),
        ]),
    ),
    dc("snapshot-if", STRATEGY, s()),
    dc(
        "runs-on",
        STRATEGY,
        Kind::OneOf(&[
            "non-empty-string",
            "sequence-of-non-empty-string",
            "runs-on-mapping",
        ]),
    ),
    d(
        "runs-on-mapping",
        map(&[
            p("group", "non-empty-string"),
            p("labels", "runs-on-labels"),
        ]),
    ),
    d("runs-on-labels", one_or_many()),
    dc(
        "job-env",
        STRATEGY_SECRETS,
        loose("non-empty-string", "string"),
    ),
    dc(
        "workflow-concurrency",
        GIV,
        Kind::OneOf(&["string", "concurrency-mapping"]),
    ),
    dc(
        "job-concurrency",
        STRATEGY,
        Kind::OneOf(&["non-empty-string", "concurrency-mapping"]),
    ),
    d(
        "concurrency-mapping",
        map(&[
            req("group", "non-empty-string"),
            p("cancel-in-progress", "boolean"),
            p("queue", "concurrency-queue"),
        ]),
    ),
    d("concurrency-queue", Kind::Allowed(&["single", "max"])),
    dc(
        "job-environment",
        STRATEGY,
        Kind::OneOf(&["string", "job-environment-mapping"]),
    ),
    d(
        "job-environment-mapping",
        map(&[
            req("name", "job-environment-name"),
            p("url", "string-runner-context-no-secrets"),
            p("deployment", "boolean"),
        ]),
    ),
    dc("job-environment-name", STRATEGY, s()),
    d("job-defaults", map(&[p("run", "job-defaults-run")])),
    dc(
        "job-defaults-run",
        DEFAULTS_RUN,
        map(&[
            p("shell", "non-empty-string"),
            p("working-directory", "non-empty-string"),
        ]),
    ),
    d(
        "job-outputs",
        loose("non-empty-string", "string-runner-context"),
    ),
    // steps
    d("steps", Kind::Seq("steps-item")),
    d(
        "steps-item",
        Kind::OneOf(&[
            "run-step",
            "regular-step",
            "wait-step",
            "wait-all-step",
            "cancel-step",
            "parallel-step",
        ]),
    ),
    d(
        "run-step",
        map(&[
            p("name", "step-name"),
            p("id", "non-empty-string"),
            p("if", "step-if"),
            p("timeout-minutes", "step-timeout-minutes"),
            req("run", "string-steps-context"),
            p("continue-on-error", "step-continue-on-error"),
            p("env", "step-env"),
            p("working-directory", "string-steps-context"),
            p("shell", "non-empty-string"),
            p("background", "boolean"),
        ]),
    ),
    d(
        "regular-step",
        map(&[
            p("name", "step-name"),
            p("id", "non-empty-string"),
            p("if", "step-if"),
            p("continue-on-error", "step-continue-on-error"),
            p("timeout-minutes", "step-timeout-minutes"),
            req("uses", "non-empty-string"),
            p("with", "step-with"),
            p("env", "step-env"),
            p("background", "boolean"),
        ]),
    ),
    d(
        "wait-step",
        map(&[
            p("name", "step-name"),
            p("id", "non-empty-string"),
            p("continue-on-error", "step-continue-on-error"),
            req("wait", "step-wait-target"),
        ]),
    ),
    d(
        "wait-all-step",
        map(&[
            p("name", "step-name"),
            p("id", "non-empty-string"),
            p("continue-on-error", "step-continue-on-error"),
            req("wait-all", "step-wait-all-value"),
        ]),
    ),
    d(
        "cancel-step",
        map(&[
            p("name", "step-name"),
            p("id", "non-empty-string"),
            p("continue-on-error", "step-continue-on-error"),
            req("cancel", "non-empty-string"),
        ]),
    ),
    d("parallel-step", map(&[req("parallel", "parallel-steps")])),
    d("parallel-steps", Kind::Seq("steps-item")),
    d("step-wait-target", one_or_many()),
    d("step-wait-all-value", Kind::OneOf(&["null", "boolean"])),
    dc("step-continue-on-error", STEPS, Kind::Bool),
    dc("step-if", STEP_IF, s()),
    dc("step-env", STEPS, loose("non-empty-string", "string")),
    dc("step-name", STEPS, s()),
    dc("step-timeout-minutes", STEPS, Kind::Number),
    dc("step-with", STEPS, loose("non-empty-string", "string")),
    // containers
    dc(
        "container",
        STRATEGY,
        Kind::OneOf(&["string", "container-mapping"]),
    ),
    d(
        "container-mapping",
        map(&[
            p("image", "non-empty-string"),
            p("options", "string"),
            p("env", "container-env"),
            p("ports", "sequence-of-non-empty-string"),
            p("volumes", "sequence-of-non-empty-string"),
            p("credentials", "container-registry-credentials"),
        ]),
    ),
    dc(
        "services",
        STRATEGY,
        loose("non-empty-string", "services-container"),
    ),
    dc(
        "services-container",
        STRATEGY,
        Kind::OneOf(&["non-empty-string", "service-container-mapping"]),
    ),
    d(
        "service-container-mapping",
        map(&[
            p("image", "non-empty-string"),
            p("options", "string"),
            p("env", "container-env"),
            p("ports", "sequence-of-non-empty-string"),
            p("volumes", "sequence-of-non-empty-string"),
            p("credentials", "container-registry-credentials"),
            p("entrypoint", "string"),
            p("command", "string"),
        ]),
    ),
    dc(
        "container-registry-credentials",
        CREDENTIALS,
        map(&[
            p("username", "non-empty-string"),
            p("password", "non-empty-string"),
        ]),
    ),
    d(
        "container-env",
        loose("non-empty-string", "string-runner-context"),
    ),
    // typed scalars with contexts
    dc(
        "scalar-needs-context",
        STRATEGY,
        Kind::OneOf(&["string", "boolean", "number"]),
    ),
    dc(
        "scalar-needs-context-with-secrets",
        NEEDS_SECRETS_STRATEGY,
        Kind::OneOf(&["string", "boolean", "number"]),
    ),
    dc("boolean-strategy-context", STRATEGY, Kind::Bool),
    dc("number-strategy-context", STRATEGY, Kind::Number),
    dc("string-strategy-context", STRATEGY, s()),
    dc("string-runner-context", RUNNER, s()),
    dc("string-runner-context-no-secrets", RUNNER_NO_SECRETS, s()),
    dc("string-steps-context", STEPS, s()),
];

pub(crate) struct Schema {
    defs: HashMap<&'static str, &'static Def>,
    /// Every definition with its references resolved (what the reader walks).
    nodes: Vec<Node>,
    index: HashMap<&'static str, usize>,
    any: usize,
}

/// A definition with its references resolved once, so that reading a document does no
/// lookups by name: the facts `seq_def`, `map_defs`, `scalar_defs`, `props_of` and
/// `loose_of` give, precomputed.
pub(crate) struct Node {
    pub def: &'static Def,
    /// Item definition of the sequence among this definition and its direct one-of members.
    pub seq: Option<usize>,
    /// The mapping definitions among this definition and its direct one-of members.
    pub maps: Vec<usize>,
    /// One-ofs expanded into scalar definitions.
    pub scalars: Vec<ScalarDef>,
    /// Properties of a mapping definition, with their types resolved.
    pub props: Vec<NodeProp>,
    /// Loose key/value types of a mapping definition.
    pub loose: Option<(usize, usize)>,
    /// Every property of the mapping definitions in `maps`, once per name (filled in after
    /// all nodes exist).
    pub prop_index: Vec<PropEntry>,
}

/// A property name of a node's mapping definitions: which of them (bit `i` for `maps[i]`)
/// have it, with which type.
pub(crate) struct PropEntry {
    tag: u64,
    pub name: &'static str,
    /// Bit `i`: `maps[i]` has the property.
    pub mask: u64,
    /// The property's type in `maps[i]` (unused where the bit is clear).
    pub tys: Vec<usize>,
}

/// The length and first bytes of a name packed into a word: different tags, different names.
pub(crate) fn name_tag(name: &str) -> u64 {
    let mut b = [0u8; 8];
    let n = name.len().min(7);
    b[..n].copy_from_slice(&name.as_bytes()[..n]);
    b[7] = name.len().min(255) as u8;
    u64::from_le_bytes(b)
}

impl Node {
    /// The entry of `prop_index` for `name` with its index there (`tag` is
    /// [`name_tag`]`(name)`).
    pub(crate) fn prop_at(&self, name: &str, tag: u64) -> Option<(usize, &PropEntry)> {
        self.prop_index
            .iter()
            .enumerate()
            .find(|(_, e)| e.tag == tag && e.name == name)
    }
}

pub(crate) struct NodeProp {
    pub name: &'static str,
    pub ty: usize,
    pub required: bool,
}

fn leak<T>(v: T) -> &'static T {
    Box::leak(Box::new(v))
}

fn build() -> Schema {
    let mut defs: HashMap<&'static str, &'static Def> = HashMap::new();
    for def in STATIC_DEFS {
        defs.insert(def.name, def);
    }
    // Events: on-string-strict (one-of string constants), on-mapping-strict, per-event defs.
    let mut string_names: Vec<&'static str> = Vec::new();
    let mut mapping_props: Vec<Prop> = Vec::new();
    for (name, shape) in EVENTS {
        let string_def: &'static str = Box::leak(format!("{name}-string").into_boxed_str());
        defs.insert(string_def, leak(d(string_def, cst(name))));
        string_names.push(string_def);
        let ty: &'static str = match shape {
            EventShape::Special(ty) => ty,
            EventShape::NullOnly => "null",
            EventShape::Types { types, extra } => {
                let ev_def: &'static str = Box::leak(format!("{name}-event").into_boxed_str());
                let map_def: &'static str =
                    Box::leak(format!("{name}-event-mapping").into_boxed_str());
                let mut props: Vec<Prop> = Vec::new();
                if let Some(types) = types {
                    let act: &'static str = Box::leak(format!("{name}-activity").into_boxed_str());
                    let act_type: &'static str =
                        Box::leak(format!("{name}-activity-type").into_boxed_str());
                    let act_types: &'static str =
                        Box::leak(format!("{name}-activity-types").into_boxed_str());
                    defs.insert(act_type, leak(d(act_type, Kind::Allowed(types))));
                    defs.insert(act_types, leak(d(act_types, Kind::Seq(act_type))));
                    let one: &'static [&'static str] =
                        Box::leak(vec![act_type, act_types].into_boxed_slice());
                    defs.insert(act, leak(d(act, Kind::OneOf(one))));
                    props.push(p("types", act));
                }
                for e in extra.iter() {
                    props.push(Prop {
                        name: e.name,
                        ty: e.ty,
                        required: e.required,
                    });
                }
                let props: &'static [Prop] = Box::leak(props.into_boxed_slice());
                defs.insert(map_def, leak(d(map_def, map(props))));
                let one: &'static [&'static str] =
                    Box::leak(vec!["null", map_def].into_boxed_slice());
                defs.insert(ev_def, leak(d(ev_def, Kind::OneOf(one))));
                ev_def
            }
        };
        mapping_props.push(p(name, ty));
    }
    let names: &'static [&'static str] = Box::leak(string_names.into_boxed_slice());
    defs.insert(
        "on-string-strict",
        leak(d("on-string-strict", Kind::OneOf(names))),
    );
    let props: &'static [Prop] = Box::leak(mapping_props.into_boxed_slice());
    defs.insert(
        "on-mapping-strict",
        leak(d("on-mapping-strict", map(props))),
    );
    let mut sc = Schema {
        defs,
        nodes: Vec::new(),
        index: HashMap::new(),
        any: 0,
    };
    let mut names: Vec<&'static str> = sc.defs.keys().copied().collect();
    names.sort_unstable();
    for (i, name) in names.iter().enumerate() {
        sc.index.insert(name, i);
    }
    let id = |sc: &Schema, name: &str| -> usize {
        sc.index.get(sc.get(name).name).copied().unwrap_or(0)
    };
    let mut nodes = Vec::with_capacity(names.len());
    for name in &names {
        let def = sc.get(name);
        let mut scalars = Vec::new();
        sc.scalar_defs(def, &mut scalars);
        nodes.push(Node {
            def,
            seq: sc.seq_def(def).map(|n| id(&sc, n)),
            maps: sc.map_defs(def).iter().map(|m| id(&sc, m.name)).collect(),
            scalars,
            props: props_of(def)
                .iter()
                .map(|p| NodeProp {
                    name: p.name,
                    ty: id(&sc, p.ty),
                    required: p.required,
                })
                .collect(),
            loose: loose_of(def).map(|(k, v)| (id(&sc, k), id(&sc, v))),
            prop_index: Vec::new(),
        });
    }
    for n in 0..nodes.len() {
        let mut index: Vec<PropEntry> = Vec::new();
        let maps = nodes[n].maps.clone();
        for (i, &m) in maps.iter().enumerate() {
            for p in &nodes[m].props {
                let at = match index.iter().position(|e| e.name == p.name) {
                    Some(at) => at,
                    None => {
                        index.push(PropEntry {
                            tag: name_tag(p.name),
                            name: p.name,
                            mask: 0,
                            tys: vec![0; maps.len()],
                        });
                        index.len() - 1
                    }
                };
                let e = &mut index[at];
                if i < 64 {
                    e.mask |= 1 << i;
                }
                e.tys[i] = p.ty;
            }
        }
        nodes[n].prop_index = index;
    }
    sc.any = id(&sc, "any");
    sc.nodes = nodes;
    sc
}

pub(crate) fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(build)
}

impl Schema {
    /// The resolved definition named `name` (`any` when there is none, like [`Schema::get`]).
    pub(crate) fn node(&self, name: &str) -> &Node {
        self.node_at(
            self.index
                .get(self.get(name).name)
                .copied()
                .unwrap_or(self.any),
        )
    }

    pub(crate) fn node_at(&self, id: usize) -> &Node {
        &self.nodes[id.min(self.nodes.len().saturating_sub(1))]
    }

    /// The resolved `any` definition.
    pub(crate) fn any(&self) -> usize {
        self.any
    }

    pub(crate) fn get(&self, name: &str) -> &'static Def {
        match self.defs.get(name) {
            Some(d) => d,
            // Every name used in the tables exists (checked by a unit test); fall back to `any`.
            None => self.defs.get("any").copied().unwrap_or(&STATIC_DEFS[6]),
        }
    }

    /// Expands one-ofs into scalar definitions (GitHub's `getScalarDefinitions`).
    pub(crate) fn scalar_defs(&self, def: &'static Def, out: &mut Vec<ScalarDef>) {
        match &def.kind {
            Kind::Null => out.push(ScalarDef::Null),
            Kind::Bool => out.push(ScalarDef::Bool),
            Kind::Number => out.push(ScalarDef::Number),
            Kind::Str {
                constant,
                non_empty,
            } => out.push(ScalarDef::Str {
                constant: *constant,
                non_empty: *non_empty,
            }),
            Kind::OneOf(names) => {
                for n in names.iter() {
                    self.scalar_defs(self.get(n), out);
                }
            }
            Kind::Allowed(values) => {
                for v in values.iter() {
                    out.push(ScalarDef::Str {
                        constant: Some(v),
                        non_empty: false,
                    });
                }
            }
            Kind::Seq(_) | Kind::Map { .. } => {}
        }
    }

    /// The sequence definition among `def` and its direct one-of members.
    pub(crate) fn seq_def(&self, def: &'static Def) -> Option<&'static str> {
        match &def.kind {
            Kind::Seq(item) => Some(item),
            Kind::OneOf(names) => names.iter().find_map(|n| match &self.get(n).kind {
                Kind::Seq(item) => Some(*item),
                _ => None,
            }),
            _ => None,
        }
    }

    /// The mapping definitions among `def` and its direct one-of members.
    pub(crate) fn map_defs(&self, def: &'static Def) -> Vec<&'static Def> {
        match &def.kind {
            Kind::Map { .. } => vec![def],
            Kind::OneOf(names) => names
                .iter()
                .map(|n| self.get(n))
                .filter(|d| matches!(d.kind, Kind::Map { .. }))
                .collect(),
            _ => Vec::new(),
        }
    }
}

pub(crate) fn props_of(def: &Def) -> &'static [Prop] {
    match def.kind {
        Kind::Map { props, .. } => props,
        _ => &[],
    }
}

pub(crate) fn loose_of(def: &Def) -> Option<(&'static str, &'static str)> {
    match def.kind {
        Kind::Map { loose, .. } => loose,
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_referenced_definitions_exist() {
        let sc = schema();
        let mut missing = Vec::new();
        for def in sc.defs.values() {
            let mut refs: Vec<&str> = Vec::new();
            match &def.kind {
                Kind::Seq(i) => refs.push(i),
                Kind::Map { props, loose } => {
                    refs.extend(props.iter().map(|p| p.ty));
                    if let Some((k, v)) = loose {
                        refs.push(k);
                        refs.push(v);
                    }
                }
                Kind::OneOf(n) => refs.extend(n.iter().copied()),
                _ => {}
            }
            for r in refs {
                if !sc.defs.contains_key(r) {
                    missing.push(format!("{} -> {}", def.name, r));
                }
            }
        }
        assert!(missing.is_empty(), "{missing:?}");
    }

    #[test]
    fn one_ofs_fit_the_readers_bit_set() {
        assert!(schema().nodes.iter().all(|n| n.maps.len() < 64));
    }
}
