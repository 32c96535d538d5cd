//! The `github` and `runner` contexts and the `GITHUB_*` / `RUNNER_*`
//! environment variables derived from them, as GitHub's runner sets them.
//!
//! [`RunFacts`] gathers what is known about a run (event, repository, commit,
//! run numbers, …); [`github_context`] turns it into the `github` context
//! object; [`github_env`] exports the runner's allow-listed keys as
//! `GITHUB_<KEY>` variables (strings and booleans only — never `token` or
//! `event`). [`with_step`] adds the per-step keys (`action` and the
//! environment-file paths) before a step runs. [`RunnerFacts`] does the same
//! for the `runner` context and `RUNNER_*` variables, and [`job_env`] adds
//! `CI=true` and `GITHUB_ACTIONS=true`.
//!
//! Variables (all strings):
//!
//! | variable | meaning |
//! |---|---|
//! | `CI`, `GITHUB_ACTIONS` | always `true` |
//! | `GITHUB_ACTION` | the step's context name: its `id`, or the generated `__run`, `__run_2`, `__owner_repo`… |
//! | `GITHUB_ACTION_PATH`, `GITHUB_ACTION_REPOSITORY`, `GITHUB_ACTION_REF` | for steps running an action (set by the executor) |
//! | `GITHUB_ACTOR`, `GITHUB_ACTOR_ID` | who triggered the run (login, numeric id) |
//! | `GITHUB_TRIGGERING_ACTOR` | who started this attempt (re-runs), defaults to the actor |
//! | `GITHUB_API_URL`, `GITHUB_GRAPHQL_URL`, `GITHUB_SERVER_URL` | `https://api.github.com`, `https://api.github.com/graphql`, `https://github.com` (or derived from a GHES server URL) |
//! | `GITHUB_BASE_REF`, `GITHUB_HEAD_REF` | target / source branch of a pull request; empty otherwise |
//! | `GITHUB_ENV`, `GITHUB_OUTPUT`, `GITHUB_STATE`, `GITHUB_PATH`, `GITHUB_STEP_SUMMARY` | the step's environment files |
//! | `GITHUB_EVENT_NAME` | the event (`push`, `pull_request`, …) |
//! | `GITHUB_EVENT_PATH` | path (inside the sandbox) of the event payload JSON |
//! | `GITHUB_JOB` | the job's id (key in `jobs:`) |
//! | `GITHUB_REF` | full ref (`refs/heads/main`, `refs/tags/v1`, `refs/pull/7/merge`); empty when unknown |
//! | `GITHUB_REF_NAME` | short ref (`main`, `v1`, `7/merge`) |
//! | `GITHUB_REF_PROTECTED` | `true`/`false` |
//! | `GITHUB_REF_TYPE` | `branch` or `tag` |
//! | `GITHUB_REPOSITORY`, `GITHUB_REPOSITORY_ID` | `owner/name`, numeric id |
//! | `GITHUB_REPOSITORY_OWNER`, `GITHUB_REPOSITORY_OWNER_ID` | `owner`, numeric id |
//! | `GITHUB_RETENTION_DAYS` | artifact/log retention (90) |
//! | `GITHUB_RUN_ID`, `GITHUB_RUN_NUMBER`, `GITHUB_RUN_ATTEMPT` | run identity |
//! | `GITHUB_SHA` | the commit (for pull requests the merge commit) |
//! | `GITHUB_WORKFLOW`, `GITHUB_WORKFLOW_REF`, `GITHUB_WORKFLOW_SHA` | workflow name (or path), `owner/repo/.github/workflows/f.yml@ref`, its commit |
//! | `GITHUB_WORKSPACE` | the workspace (inside the sandbox) |
//! | `RUNNER_NAME`, `RUNNER_OS`, `RUNNER_ARCH` | runner name, `Linux`, `X64`/`ARM64`/`X86`/`ARM` |
//! | `RUNNER_TEMP`, `RUNNER_TOOL_CACHE`, `RUNNER_WORKSPACE` | job temp (emptied per job), tool cache, workspace parent |
//! | `RUNNER_ENVIRONMENT` | `self-hosted` |
//! | `RUNNER_DEBUG` | `1` only when debug logging is on |

use indexmap::IndexMap;
use serde_json::{Map, Value};

use crate::file_commands::{FileCommand, StepFiles};
use crate::sandbox::JobLayout;

/// What is known about a run, from which the `github` context is built.
#[derive(Debug, Clone, PartialEq)]
pub struct RunFacts {
    /// `push`, `pull_request`, `workflow_dispatch`, …
    pub event_name: String,
    /// The webhook payload.
    pub event: Value,
    /// `owner/name`.
    pub repository: String,
    /// The commit; `None` derives it from the payload (push `after`, pull
    /// request `merge_commit_sha`/head sha).
    pub sha: Option<String>,
    /// The full ref; `None` derives it from the payload.
    pub git_ref: Option<String>,
    /// Login of who triggered the run; `None` uses `sender.login`.
    pub actor: Option<String>,
    /// Numeric id of the actor; `None` uses `sender.id`.
    pub actor_id: Option<String>,
    /// Who started this attempt; defaults to the actor.
    pub triggering_actor: Option<String>,
    /// `github.run_id`.
    pub run_id: u64,
    /// `github.run_number`.
    pub run_number: u64,
    /// `github.run_attempt`.
    pub run_attempt: u32,
    /// `https://github.com` or a GHES URL.
    pub server_url: String,
    /// Workflow `name:` (or its path when unnamed).
    pub workflow: String,
    /// Path of the workflow file in the repository (`.github/workflows/ci.yml`).
    pub workflow_path: Option<String>,
    /// Commit of the workflow file; defaults to the sha.
    pub workflow_sha: Option<String>,
    /// The job id.
    pub job: String,
    /// `GITHUB_WORKSPACE` (guest path).
    pub workspace: String,
    /// Where the payload is written inside the sandbox.
    pub event_path: String,
    /// `github.token` (not exported to the environment).
    pub token: Option<String>,
    /// `github.ref_protected`.
    pub ref_protected: bool,
    /// `github.retention_days`.
    pub retention_days: u32,
}

impl RunFacts {
    /// Facts with defaults: run 1, attempt 1, `https://github.com`, 90 days.
    pub fn new(
        event_name: impl Into<String>,
        event: Value,
        repository: impl Into<String>,
        job: impl Into<String>,
        workspace: impl Into<String>,
        event_path: impl Into<String>,
    ) -> Self {
        RunFacts {
            event_name: event_name.into(),
            event,
            repository: repository.into(),
            sha: None,
            git_ref: None,
            actor: None,
            actor_id: None,
            triggering_actor: None,
            run_id: 1,
            run_number: 1,
            run_attempt: 1,
            server_url: "https://github.com".into(),
            workflow: String::new(),
            workflow_path: None,
            workflow_sha: None,
            job: job.into(),
            workspace: workspace.into(),
            event_path: event_path.into(),
            token: None,
            ref_protected: false,
            retention_days: 90,
        }
    }
}

fn s(v: &Value, path: &[&str]) -> Option<String> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    match cur {
        Value::String(x) => Some(x.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn is_pull_request_event(name: &str) -> bool {
    matches!(
        name,
        "pull_request"
            | "pull_request_target"
            | "pull_request_review"
            | "pull_request_review_comment"
    )
}

/// The ref and sha GitHub gives a run of `event_name` ("Events that trigger workflows",
/// the `GITHUB_REF` and `GITHUB_SHA` of each event), as far as the payload tells: `(ref,
/// sha)`, each possibly empty (the caller fills them from the repository). Events the table
/// gives "the default branch" and "its last commit" (issues, `workflow_run`, `delete`,
/// `pull_request_target` on GitHub.com, a `push` that deleted its branch…) get the payload's
/// `repository.default_branch` and no sha: a payload does not carry that commit.
pub fn default_ref_and_sha(event_name: &str, event: &Value) -> (String, String) {
    let default_branch =
        || s(event, &["repository", "default_branch"]).map(|b| format!("refs/heads/{b}"));
    let branch_or_tag = |r: String| {
        if r.starts_with("refs/") {
            r
        } else {
            format!("refs/heads/{r}")
        }
    };
    let (ref_, sha) = match event_name {
        "pull_request" | "pull_request_review" | "pull_request_review_comment" => {
            let merged = event_name == "pull_request"
                && s(event, &["action"]).as_deref() == Some("closed")
                && event.pointer("/pull_request/merged") == Some(&Value::Bool(true));
            let ref_ = if merged {
                // Merged: the branch it was merged into.
                s(event, &["pull_request", "base", "ref"]).map(branch_or_tag)
            } else {
                s(event, &["pull_request", "number"])
                    .or_else(|| s(event, &["number"]))
                    .map(|n| format!("refs/pull/{n}/merge"))
            };
            let sha = s(event, &["pull_request", "merge_commit_sha"])
                .or_else(|| s(event, &["pull_request", "head", "sha"]));
            (ref_, sha)
        }
        // GitHub.com runs it on the default branch (GHES before 3.20: the base branch); the
        // base's sha is that branch's last commit when the base is the default branch.
        "pull_request_target" => {
            let base = s(event, &["pull_request", "base", "ref"]);
            let default = s(event, &["repository", "default_branch"]);
            let sha = match (&base, &default) {
                (Some(b), Some(d)) if b == d => s(event, &["pull_request", "base", "sha"]),
                (Some(_), None) => s(event, &["pull_request", "base", "sha"]),
                _ => None,
            };
            (default.or(base).map(|b| format!("refs/heads/{b}")), sha)
        }
        "push" if event.get("deleted") == Some(&Value::Bool(true)) => (default_branch(), None),
        "push" => (s(event, &["ref"]), s(event, &["after"])),
        "release" => (
            s(event, &["release", "tag_name"]).map(|t| format!("refs/tags/{t}")),
            None,
        ),
        "create" => {
            let ref_ = match (s(event, &["ref"]), s(event, &["ref_type"])) {
                (Some(r), Some(t)) if t == "tag" && !r.starts_with("refs/") => {
                    Some(format!("refs/tags/{r}"))
                }
                (r, _) => r.map(branch_or_tag),
            };
            (ref_, None)
        }
        "merge_group" => (
            s(event, &["merge_group", "head_ref"]),
            s(event, &["merge_group", "head_sha"]),
        ),
        // The branch or tag deployed; none (empty, not the default branch) when the
        // deployment names a commit. A bare name is taken for a branch: the payload does not
        // say, and only the repository knows a tag (`firebreak run` asks it).
        "deployment" | "deployment_status" => {
            let sha = s(event, &["deployment", "sha"]);
            let ref_ = match s(event, &["deployment", "ref"]) {
                Some(r) if Some(&r) == sha.as_ref() => Some(String::new()),
                r => r.map(branch_or_tag),
            };
            (ref_, sha)
        }
        "workflow_dispatch" => (s(event, &["ref"]), None),
        _ => (None, None),
    };
    let ref_ = ref_.or_else(default_branch).unwrap_or_default();
    (ref_, sha.unwrap_or_default())
}

/// `refs/heads/main` → `main`, `refs/tags/v1` → `v1`, `refs/pull/7/merge` →
/// `7/merge`; anything else unchanged.
pub fn ref_name(full: &str) -> &str {
    full.strip_prefix("refs/heads/")
        .or_else(|| full.strip_prefix("refs/tags/"))
        .or_else(|| full.strip_prefix("refs/pull/"))
        .unwrap_or(full)
}

/// `tag` for `refs/tags/…`, `branch` for any other non-empty ref.
pub fn ref_type(full: &str) -> &'static str {
    if full.starts_with("refs/tags/") {
        "tag"
    } else if full.is_empty() {
        ""
    } else {
        "branch"
    }
}

/// API and GraphQL URLs for a server URL (github.com or GHES).
pub fn api_urls(server_url: &str) -> (String, String) {
    let base = server_url.trim_end_matches('/');
    if base == "https://github.com" || base == "http://github.com" {
        (
            "https://api.github.com".into(),
            "https://api.github.com/graphql".into(),
        )
    } else {
        (format!("{base}/api/v3"), format!("{base}/api/graphql"))
    }
}

/// Builds the `github` context object.
pub fn github_context(f: &RunFacts) -> Value {
    let (default_ref, default_sha) = default_ref_and_sha(&f.event_name, &f.event);
    let git_ref = f.git_ref.clone().unwrap_or(default_ref);
    let sha = f.sha.clone().unwrap_or(default_sha);
    let actor = f
        .actor
        .clone()
        .or_else(|| s(&f.event, &["sender", "login"]))
        .unwrap_or_default();
    let actor_id = f
        .actor_id
        .clone()
        .or_else(|| s(&f.event, &["sender", "id"]))
        .unwrap_or_default();
    let owner = f
        .repository
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let pr = is_pull_request_event(&f.event_name);
    let head_ref = if pr {
        s(&f.event, &["pull_request", "head", "ref"]).unwrap_or_default()
    } else {
        String::new()
    };
    let base_ref = if pr {
        s(&f.event, &["pull_request", "base", "ref"]).unwrap_or_default()
    } else {
        String::new()
    };
    let (api_url, graphql_url) = api_urls(&f.server_url);
    let host = f
        .server_url
        .trim_end_matches('/')
        .split("://")
        .nth(1)
        .unwrap_or("github.com")
        .to_string();
    let workflow_ref = match &f.workflow_path {
        Some(p) => format!("{}/{}@{}", f.repository, p, git_ref),
        None => String::new(),
    };
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_string(), v);
    };
    put("action", Value::String(String::new()));
    put("action_path", Value::String(String::new()));
    put("action_ref", Value::String(String::new()));
    put("action_repository", Value::String(String::new()));
    put("action_status", Value::String(String::new()));
    put("actor", Value::from(actor.to_string()));
    put("actor_id", Value::from(actor_id.to_string()));
    put("api_url", Value::from(api_url.to_string()));
    put("base_ref", Value::from(base_ref.to_string()));
    put("env", Value::String(String::new()));
    put("event", f.event.clone());
    put("event_name", Value::from(f.event_name.clone()));
    put("event_path", Value::from(f.event_path.clone()));
    put("graphql_url", Value::from(graphql_url.to_string()));
    put("head_ref", Value::from(head_ref.to_string()));
    put("job", Value::from(f.job.clone()));
    put("output", Value::String(String::new()));
    put("path", Value::String(String::new()));
    put("ref", Value::from(git_ref.to_string()));
    put("ref_name", Value::from(ref_name(&git_ref).to_string()));
    put("ref_protected", Value::Bool(f.ref_protected));
    put("ref_type", Value::from(ref_type(&git_ref).to_string()));
    put("repository", Value::from(f.repository.clone()));
    put(
        "repository_id",
        Value::from(
            s(&f.event, &["repository", "id"])
                .unwrap_or_default()
                .to_string(),
        ),
    );
    put("repository_owner", Value::from(owner.to_string()));
    put(
        "repository_owner_id",
        Value::from(
            s(&f.event, &["repository", "owner", "id"])
                .unwrap_or_default()
                .to_string(),
        ),
    );
    put(
        "repositoryUrl",
        Value::from(format!("git://{host}/{}.git", f.repository)),
    );
    put("retention_days", Value::from(f.retention_days.to_string()));
    put("run_attempt", Value::from(f.run_attempt.to_string()));
    put("run_id", Value::from(f.run_id.to_string()));
    put("run_number", Value::from(f.run_number.to_string()));
    put("secret_source", Value::String("Actions".into()));
    put(
        "server_url",
        Value::from(f.server_url.trim_end_matches('/').to_string()),
    );
    put("sha", Value::from(sha.to_string()));
    put("state", Value::String(String::new()));
    put("step_summary", Value::String(String::new()));
    put(
        "token",
        Value::from(f.token.clone().unwrap_or_default().to_string()),
    );
    put(
        "triggering_actor",
        Value::from(
            f.triggering_actor
                .clone()
                .unwrap_or_else(|| actor.clone())
                .to_string(),
        ),
    );
    put("workflow", Value::from(f.workflow.clone()));
    put("workflow_ref", Value::from(workflow_ref.to_string()));
    put(
        "workflow_sha",
        Value::from(
            f.workflow_sha
                .clone()
                .unwrap_or_else(|| sha.clone())
                .to_string(),
        ),
    );
    put("workspace", Value::from(f.workspace.clone()));
    Value::Object(m)
}

/// Keys of the `github` context exported as `GITHUB_<KEY>` (the runner's allow list).
pub const GITHUB_ENV_ALLOWLIST: &[&str] = &[
    "action",
    "action_path",
    "action_ref",
    "action_repository",
    "actor",
    "actor_id",
    "api_url",
    "base_ref",
    "env",
    "event_name",
    "event_path",
    "graphql_url",
    "head_ref",
    "job",
    "output",
    "path",
    "ref",
    "ref_name",
    "ref_protected",
    "ref_type",
    "repository",
    "repository_id",
    "repository_owner",
    "repository_owner_id",
    "retention_days",
    "run_attempt",
    "run_id",
    "run_number",
    "server_url",
    "sha",
    "state",
    "step_summary",
    "triggering_actor",
    "workflow",
    "workflow_ref",
    "workflow_sha",
    "workspace",
];

/// `GITHUB_*` variables from a `github` context (strings and booleans of the
/// allow list; booleans as `true`/`false`).
pub fn github_env(ctx: &Value) -> IndexMap<String, String> {
    let mut out = IndexMap::new();
    let Some(obj) = ctx.as_object() else {
        return out;
    };
    for (k, v) in obj {
        if !GITHUB_ENV_ALLOWLIST.contains(&k.as_str()) {
            continue;
        }
        let val = match v {
            Value::String(x) => x.clone(),
            Value::Bool(b) => b.to_string(),
            _ => continue,
        };
        out.insert(format!("GITHUB_{}", k.to_ascii_uppercase()), val);
    }
    out
}

/// The `github` context for one step: `action` set to the step's context name
/// and the environment-file keys pointing at `files`.
pub fn with_step(ctx: &Value, action: &str, files: &StepFiles) -> Value {
    let mut c = ctx.clone();
    if let Some(obj) = c.as_object_mut() {
        obj.insert("action".into(), Value::String(action.into()));
        for (key, f) in [
            ("env", FileCommand::Env),
            ("output", FileCommand::Output),
            ("state", FileCommand::State),
            ("path", FileCommand::Path),
            ("step_summary", FileCommand::StepSummary),
        ] {
            obj.insert(
                key.into(),
                Value::String(files.path(f).to_string_lossy().into_owned()),
            );
        }
    }
    c
}

/// What is known about the runner, for the `runner` context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerFacts {
    /// `runner.name`.
    pub name: String,
    /// `Linux`, `macOS`, `Windows`.
    pub os: String,
    /// `X64`, `ARM64`, `X86`, `ARM`.
    pub arch: String,
    /// `runner.temp` (guest path).
    pub temp: String,
    /// `runner.tool_cache` (guest path).
    pub tool_cache: String,
    /// `runner.workspace` (guest path).
    pub workspace: String,
    /// `self-hosted` (or `github-hosted`).
    pub environment: String,
    /// Debug logging on (`runner.debug` = `1`).
    pub debug: bool,
}

impl RunnerFacts {
    /// Facts for a sandbox layout, with this machine's OS and architecture.
    pub fn from_layout(name: impl Into<String>, layout: &JobLayout) -> Self {
        RunnerFacts {
            name: name.into(),
            os: runner_os().into(),
            arch: runner_arch().into(),
            temp: layout.temp.to_string_lossy().into_owned(),
            tool_cache: layout.tool_cache.to_string_lossy().into_owned(),
            workspace: layout.runner_workspace.to_string_lossy().into_owned(),
            environment: "self-hosted".into(),
            debug: false,
        }
    }
}

/// `RUNNER_OS` for this build.
pub fn runner_os() -> &'static str {
    match std::env::consts::OS {
        "macos" => "macOS",
        "windows" => "Windows",
        _ => "Linux",
    }
}

/// `RUNNER_ARCH` for this build.
pub fn runner_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "ARM64",
        "x86" => "X86",
        "arm" => "ARM",
        _ => "X64",
    }
}

/// The `runner` context object.
pub fn runner_context(r: &RunnerFacts) -> Value {
    let mut m = Map::new();
    for (k, v) in [
        ("name", &r.name),
        ("os", &r.os),
        ("arch", &r.arch),
        ("temp", &r.temp),
        ("tool_cache", &r.tool_cache),
        ("workspace", &r.workspace),
        ("environment", &r.environment),
    ] {
        m.insert(k.into(), Value::String(v.clone()));
    }
    if r.debug {
        m.insert("debug".into(), Value::String("1".into()));
    }
    Value::Object(m)
}

/// `RUNNER_*` variables from a `runner` context (string values).
pub fn runner_env(ctx: &Value) -> IndexMap<String, String> {
    let mut out = IndexMap::new();
    if let Some(obj) = ctx.as_object() {
        for (k, v) in obj {
            if let Value::String(x) = v {
                out.insert(format!("RUNNER_{}", k.to_ascii_uppercase()), x.clone());
            }
        }
    }
    out
}

/// Every runner-provided variable for a step: `CI`, `GITHUB_ACTIONS`,
/// `GITHUB_*` (from the step's `github` context) and `RUNNER_*`.
///
/// Precedence, as in the runner's script handler: start from workflow, job
/// and step `env:` plus `GITHUB_ENV` values, then insert these on top — the
/// context-derived `GITHUB_*`/`RUNNER_*` variables win over user `env:`.
/// `CI` and `GITHUB_ACTIONS` may be overridden by the user (apply them first).
pub fn job_env(step_github: &Value, runner: &Value) -> IndexMap<String, String> {
    let mut env = IndexMap::new();
    env.insert("CI".to_string(), "true".to_string());
    env.insert("GITHUB_ACTIONS".to_string(), "true".to_string());
    env.extend(github_env(step_github));
    env.extend(runner_env(runner));
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn push_event() -> Value {
        json!({
            "ref": "refs/heads/main",
            "before": "0000000000000000000000000000000000000000",
            "after": "abc123",
            "repository": {"id": 42, "name": "hello", "full_name": "octo/hello", "owner": {"login": "octo", "id": 7}, "default_branch": "main"},
            "sender": {"login": "mona", "id": 99}
        })
    }

    #[test]
    fn push_context_and_env() {
        let mut f = RunFacts::new(
            "push",
            push_event(),
            "octo/hello",
            "build",
            "/w/hello/hello",
            "/t/event.json",
        );
        f.run_id = 1234;
        f.run_number = 5;
        f.workflow = "CI".into();
        f.workflow_path = Some(".github/workflows/ci.yml".into());
        f.token = Some("ghs_secret".into());
        let ctx = github_context(&f);
        assert_eq!(ctx["sha"], "abc123");
        assert_eq!(ctx["ref"], "refs/heads/main");
        assert_eq!(ctx["ref_name"], "main");
        assert_eq!(ctx["ref_type"], "branch");
        assert_eq!(ctx["actor"], "mona");
        assert_eq!(ctx["actor_id"], "99");
        assert_eq!(ctx["repository_owner"], "octo");
        assert_eq!(ctx["repository_id"], "42");
        assert_eq!(ctx["repository_owner_id"], "7");
        assert_eq!(
            ctx["workflow_ref"],
            "octo/hello/.github/workflows/ci.yml@refs/heads/main"
        );
        assert_eq!(ctx["event"]["after"], "abc123");
        let env = github_env(&ctx);
        assert_eq!(env.get("GITHUB_SHA").map(String::as_str), Some("abc123"));
        assert_eq!(env.get("GITHUB_RUN_ID").map(String::as_str), Some("1234"));
        assert_eq!(env.get("GITHUB_RUN_NUMBER").map(String::as_str), Some("5"));
        assert_eq!(
            env.get("GITHUB_REF_PROTECTED").map(String::as_str),
            Some("false")
        );
        assert_eq!(
            env.get("GITHUB_API_URL").map(String::as_str),
            Some("https://api.github.com")
        );
        assert_eq!(
            env.get("GITHUB_SERVER_URL").map(String::as_str),
            Some("https://github.com")
        );
        assert_eq!(
            env.get("GITHUB_WORKSPACE").map(String::as_str),
            Some("/w/hello/hello")
        );
        assert_eq!(
            env.get("GITHUB_EVENT_PATH").map(String::as_str),
            Some("/t/event.json")
        );
        assert_eq!(env.get("GITHUB_HEAD_REF").map(String::as_str), Some(""));
        assert!(!env.contains_key("GITHUB_TOKEN"));
        assert!(!env.contains_key("GITHUB_EVENT"));
    }

    #[test]
    fn pull_request_defaults() {
        let ev = json!({
            "number": 7,
            "pull_request": {"number": 7, "merge_commit_sha": "m3rge", "head": {"ref": "feature", "sha": "h34d"}, "base": {"ref": "main", "sha": "b4se"}},
            "sender": {"login": "mona", "id": 1}
        });
        let ctx = github_context(&RunFacts::new(
            "pull_request",
            ev.clone(),
            "o/r",
            "j",
            "/w",
            "/e",
        ));
        assert_eq!(ctx["ref"], "refs/pull/7/merge");
        assert_eq!(ctx["ref_name"], "7/merge");
        assert_eq!(ctx["sha"], "m3rge");
        assert_eq!(ctx["head_ref"], "feature");
        assert_eq!(ctx["base_ref"], "main");
        let t = github_context(&RunFacts::new(
            "pull_request_target",
            ev,
            "o/r",
            "j",
            "/w",
            "/e",
        ));
        assert_eq!(t["ref"], "refs/heads/main");
        assert_eq!(t["sha"], "b4se");
    }

    #[test]
    fn each_event_gets_the_ref_and_sha_githubs_table_gives_it() {
        let repo = json!({"default_branch": "main"});
        let rs = |event: &str, payload: Value| {
            let mut payload = payload;
            payload["repository"] = repo.clone();
            default_ref_and_sha(event, &payload)
        };
        let pair = |r: &str, s: &str| (r.to_string(), s.to_string());
        let pr = json!({"number": 7, "merge_commit_sha": "m3rge", "merged": true,
            "head": {"ref": "feat", "sha": "h34d"}, "base": {"ref": "rel", "sha": "b4se"}});
        // A merged pull request: the branch it was merged into; closed unmerged: the merge ref.
        assert_eq!(
            rs(
                "pull_request",
                json!({"action": "closed", "pull_request": pr})
            ),
            pair("refs/heads/rel", "m3rge")
        );
        let mut unmerged = pr.clone();
        unmerged["merged"] = json!(false);
        assert_eq!(
            rs(
                "pull_request",
                json!({"action": "closed", "pull_request": unmerged})
            )
            .0,
            "refs/pull/7/merge"
        );
        // pull_request_target into another branch than the default: the default branch, whose
        // last commit the payload does not carry.
        assert_eq!(
            rs("pull_request_target", json!({"pull_request": pr})),
            pair("refs/heads/main", "")
        );
        // Default branch, no sha: workflow_run, delete, a push that deleted its branch.
        assert_eq!(
            rs(
                "workflow_run",
                json!({"workflow_run": {"head_branch": "feat", "head_sha": "w"}})
            ),
            pair("refs/heads/main", "")
        );
        assert_eq!(
            rs("delete", json!({"ref": "feat", "ref_type": "branch"})),
            pair("refs/heads/main", "")
        );
        assert_eq!(
            rs(
                "push",
                json!({"ref": "refs/heads/feat", "deleted": true, "after": "0000"})
            ),
            pair("refs/heads/main", "")
        );
        assert_eq!(
            rs(
                "issues",
                json!({"action": "opened", "head_commit": {"id": "x"}})
            ),
            pair("refs/heads/main", "")
        );
        assert_eq!(
            rs("create", json!({"ref": "feat", "ref_type": "branch"})).0,
            "refs/heads/feat"
        );
        assert_eq!(
            rs(
                "merge_group",
                json!({"merge_group": {"head_ref": "refs/heads/gh-readonly-queue/main/pr-7-abc", "head_sha": "q"}})
            ),
            pair("refs/heads/gh-readonly-queue/main/pr-7-abc", "q")
        );
        assert_eq!(
            rs(
                "deployment",
                json!({"deployment": {"ref": "v1", "sha": "d"}})
            ),
            pair("refs/heads/v1", "d")
        );
        assert_eq!(
            rs(
                "deployment_status",
                json!({"deployment": {"ref": "d", "sha": "d"}})
            ),
            pair("", "d"),
            "a deployment of a commit has no ref"
        );
    }

    #[test]
    fn tags_releases_and_fallbacks() {
        assert_eq!(
            default_ref_and_sha("push", &json!({"ref": "refs/tags/v1", "after": "x"})),
            ("refs/tags/v1".into(), "x".into())
        );
        assert_eq!(
            default_ref_and_sha("release", &json!({"release": {"tag_name": "v2"}})).0,
            "refs/tags/v2"
        );
        assert_eq!(
            default_ref_and_sha("create", &json!({"ref": "v3", "ref_type": "tag"})).0,
            "refs/tags/v3"
        );
        assert_eq!(
            default_ref_and_sha(
                "workflow_dispatch",
                &json!({"repository": {"default_branch": "trunk"}})
            )
            .0,
            "refs/heads/trunk"
        );
        assert_eq!(
            default_ref_and_sha("workflow_dispatch", &json!({})),
            (String::new(), String::new())
        );
        assert_eq!(ref_type("refs/tags/v1"), "tag");
        assert_eq!(ref_type(""), "");
        let mut f = RunFacts::new("push", json!({}), "o/r", "j", "/w", "/e");
        f.git_ref = Some("refs/tags/v9".into());
        f.sha = Some("s".into());
        f.actor = Some("me".into());
        let c = github_context(&f);
        assert_eq!(
            (
                c["ref_type"].as_str(),
                c["sha"].as_str(),
                c["triggering_actor"].as_str()
            ),
            (Some("tag"), Some("s"), Some("me"))
        );
    }

    #[test]
    fn ghes_urls() {
        assert_eq!(
            api_urls("https://ghe.example.com/"),
            (
                "https://ghe.example.com/api/v3".into(),
                "https://ghe.example.com/api/graphql".into()
            )
        );
    }

    #[test]
    fn step_and_runner_env() {
        let f = RunFacts::new("push", push_event(), "octo/hello", "build", "/w", "/e");
        let files = StepFiles::new("/j/temp/_runner_file_commands", "u1");
        let ctx = with_step(&github_context(&f), "__run_2", &files);
        let layout = JobLayout::new("/j", "hello");
        let mut rf = RunnerFacts::from_layout("fb-1", &layout);
        let env = job_env(&ctx, &runner_context(&rf));
        assert_eq!(env.get("CI").map(String::as_str), Some("true"));
        assert_eq!(env.get("GITHUB_ACTIONS").map(String::as_str), Some("true"));
        assert_eq!(
            env.get("GITHUB_ACTION").map(String::as_str),
            Some("__run_2")
        );
        assert_eq!(
            env.get("GITHUB_ENV").map(String::as_str),
            Some("/j/temp/_runner_file_commands/set_env_u1")
        );
        assert_eq!(
            env.get("GITHUB_STEP_SUMMARY").map(String::as_str),
            Some("/j/temp/_runner_file_commands/step_summary_u1")
        );
        assert_eq!(env.get("RUNNER_TEMP").map(String::as_str), Some("/j/temp"));
        assert_eq!(
            env.get("RUNNER_WORKSPACE").map(String::as_str),
            Some("/j/work/hello")
        );
        assert_eq!(env.get("RUNNER_OS").map(String::as_str), Some("Linux"));
        assert_eq!(
            env.get("RUNNER_ENVIRONMENT").map(String::as_str),
            Some("self-hosted")
        );
        assert!(!env.contains_key("RUNNER_DEBUG"));
        rf.debug = true;
        assert_eq!(
            runner_env(&runner_context(&rf))
                .get("RUNNER_DEBUG")
                .map(String::as_str),
            Some("1")
        );
    }
}
