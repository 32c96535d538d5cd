//! One `run:` step end to end (shell, environment files, workflow commands,
//! masking, contexts) over the host and the namespace sandboxes.

mod common;

use std::path::Path;

use common::{TestResult, PATH};
use firebreak_runner::commands::AnnotationLevel;
use firebreak_runner::context::{github_context, job_env, runner_context, RunFacts, RunnerFacts};
use firebreak_runner::file_commands::{JobSummary, PathPrepends};
use firebreak_runner::mask::Masker;
use firebreak_runner::sandbox::{
    ExitStatus, HostProvider, JobSpec, NamespaceConfig, NamespaceProvider, Sandbox,
    SandboxProvider, Stream,
};
use firebreak_runner::step::{run_script_step, ScriptStep, StepLog, StepOutcome};
use indexmap::IndexMap;
use serde_json::json;

async fn backends(dir: &Path) -> Vec<Box<dyn Sandbox>> {
    let mut out = Vec::new();
    if let Ok(sb) = HostProvider::new(dir.join("host"))
        .create(JobSpec::new("step", "hello"))
        .await
    {
        out.push(sb);
    }
    let ns = NamespaceProvider::new(NamespaceConfig::new(dir.join("ns")));
    if ns.probe().await.available {
        if let Ok(sb) = ns.create(JobSpec::new("step", "hello")).await {
            out.push(sb);
        }
    } else {
        eprintln!("namespace backend unavailable; host only");
    }
    assert!(!out.is_empty(), "no sandbox could be created");
    eprintln!(
        "backends: {:?}",
        out.iter().map(|s| s.backend()).collect::<Vec<_>>()
    );
    out
}

fn base_env(sb: &dyn Sandbox) -> IndexMap<String, String> {
    let l = sb.layout();
    let facts = RunFacts::new(
        "push",
        json!({"ref": "refs/heads/main", "after": "abc123", "sender": {"login": "mona", "id": 1}}),
        "octo/hello",
        "build",
        l.workspace.to_string_lossy(),
        l.temp.join("event.json").to_string_lossy(),
    );
    let gh = github_context(&facts);
    let runner = runner_context(&RunnerFacts::from_layout("fb-test", l));
    let mut env: IndexMap<String, String> = IndexMap::new();
    env.insert("PATH".into(), PATH.into());
    env.insert("HOME".into(), l.home.to_string_lossy().into_owned());
    env.extend(job_env(&gh, &runner));
    env
}

async fn step(
    sb: &dyn Sandbox,
    masker: &Masker,
    script: &str,
    shell: Option<&str>,
    env: &IndexMap<String, String>,
) -> Result<(StepOutcome, Vec<StepLog>), Box<dyn std::error::Error>> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(256);
    let collect = async {
        let mut v = Vec::new();
        while let Some(r) = rx.recv().await {
            v.push(r);
        }
        v
    };
    let s = ScriptStep {
        script: script.to_string(),
        shell: shell.map(String::from),
        env: env.clone(),
        ..Default::default()
    };
    let (res, logs) = tokio::join!(run_script_step(sb, s, masker, tx), collect);
    Ok((res?, logs))
}

fn lines(logs: &[StepLog]) -> Vec<String> {
    logs.iter()
        .filter_map(|l| match l {
            StepLog::Line {
                stream: Stream::Stdout,
                text,
            } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_step_sets_env_outputs_path_state_summary_and_masks() -> TestResult {
    let t = tempfile::tempdir()?;
    for sb in backends(t.path()).await {
        let sb = sb.as_ref();
        let masker = Masker::new();
        masker.add("s3cr3t-value");
        let env = base_env(sb);
        let script = r###"
echo "shell opts: $-"
echo "token is s3cr3t-value"
echo "::add-mask::dyn-mask-123"
echo "dynamic dyn-mask-123 hidden"
echo "KEY=value=more" >> "$GITHUB_ENV"
{ echo 'MULTI<<EOF'; echo 'line 1'; echo 'line 2'; echo 'EOF'; } >> "$GITHUB_ENV"
echo "out1=hello" >> "$GITHUB_OUTPUT"
echo "::set-output name=legacy::old%0Aline"
echo "/opt/mytool/bin" >> "$GITHUB_PATH"
echo "st=1" >> "$GITHUB_STATE"
echo "## Summary with s3cr3t-value" >> "$GITHUB_STEP_SUMMARY"
echo "::group::Build"
echo "::warning file=$GITHUB_WORKSPACE/src/main.rs,line=3,col=1::careful"
echo "::endgroup::"
echo "::error::to stderr" >&2
echo "ws=$GITHUB_WORKSPACE action_env=$GITHUB_ACTIONS ci=$CI sha=$GITHUB_SHA pwd=$(pwd)"
"###;
        let (o, logs) = step(sb, &masker, script, None, &env).await?;
        assert_eq!(o.status, ExitStatus::Exited(0), "{} {logs:?}", sb.backend());
        assert!(!o.failed);
        let out = lines(&logs);
        assert!(
            out.iter()
                .any(|l| l.starts_with("shell opts:") && l.contains('e')),
            "{out:?}"
        );
        assert!(out.contains(&"token is ***".to_string()), "{out:?}");
        assert!(out.contains(&"dynamic *** hidden".to_string()), "{out:?}");
        assert!(!out
            .iter()
            .any(|l| l.contains("add-mask") || l.contains("set-output")));
        let ws = sb.layout().workspace.to_string_lossy().into_owned();
        assert!(
            out.contains(&format!(
                "ws={ws} action_env=true ci=true sha=abc123 pwd={ws}"
            )),
            "{out:?}"
        );
        assert_eq!(o.env.get("KEY").map(String::as_str), Some("value=more"));
        assert_eq!(
            o.env.get("MULTI").map(String::as_str),
            Some("line 1\nline 2")
        );
        assert_eq!(o.outputs.get("out1").map(String::as_str), Some("hello"));
        assert_eq!(
            o.outputs.get("legacy").map(String::as_str),
            Some("old\nline")
        );
        assert_eq!(o.path, ["/opt/mytool/bin"]);
        assert_eq!(o.state.get("st").map(String::as_str), Some("1"));
        let mut summary = JobSummary::new();
        summary.append_step(&o.summary, &masker)?;
        assert_eq!(summary.as_str(), "## Summary with ***\n");
        assert!(logs.contains(&StepLog::Group("Build".into())));
        assert!(logs.contains(&StepLog::EndGroup));
        let warn = o
            .annotations
            .iter()
            .find(|a| a.level == AnnotationLevel::Warning);
        assert_eq!(warn.and_then(|a| a.file.as_deref()), Some("src/main.rs"));
        assert!(o
            .annotations
            .iter()
            .any(|a| a.level == AnnotationLevel::Error && a.message == "to stderr"));
        // The step's files and script are cleaned up.
        let leftovers = std::fs::read_dir(&sb.layout().file_commands)?.count();
        assert_eq!(leftovers, 0);
        sb.destroy().await?;
    }
    Ok(())
}

#[tokio::test]
async fn env_and_path_flow_into_the_next_step() -> TestResult {
    let t = tempfile::tempdir()?;
    for sb in backends(t.path()).await {
        let sb = sb.as_ref();
        let masker = Masker::new();
        let mut env = base_env(sb);
        let bin = sb.layout().workspace.join("bin");
        let first = format!(
            "mkdir -p {b}; printf '#!/bin/sh\\necho called ls\\n' > {b}/ls; chmod +x {b}/ls; echo {b} >> $GITHUB_PATH; echo 'test<<World' >> $GITHUB_ENV; echo 'x=Thats really Weird' >> $GITHUB_ENV; echo World >> $GITHUB_ENV",
            b = bin.display()
        );
        let (o, logs) = step(sb, &masker, &first, Some("bash"), &env).await?;
        assert!(!o.failed, "{logs:?}");
        assert_eq!(
            o.env.get("test").map(String::as_str),
            Some("x=Thats really Weird")
        );
        assert!(!o.env.contains_key("x"));
        let mut prepends = PathPrepends::new();
        for p in &o.path {
            prepends.add(p.clone());
        }
        env.extend(o.env);
        env.insert("PATH".into(), prepends.apply(PATH));
        let (o, logs) = step(sb, &masker, "ls; echo \"test=$test\"", None, &env).await?;
        assert!(!o.failed, "{logs:?}");
        assert_eq!(lines(&logs), ["called ls", "test=x=Thats really Weird"]);
        sb.destroy().await?;
    }
    Ok(())
}

#[tokio::test]
async fn failures_are_reported_like_github() -> TestResult {
    let t = tempfile::tempdir()?;
    for sb in backends(t.path()).await {
        let sb = sb.as_ref();
        let masker = Masker::new();
        let env = base_env(sb);
        // bash -e stops at the first failing command; pipefail with `shell: bash`.
        let (o, logs) = step(
            sb,
            &masker,
            "false | true\necho after-pipe\nexit 0",
            Some("bash"),
            &env,
        )
        .await?;
        assert!(o.failed);
        assert_eq!(o.status, ExitStatus::Exited(1));
        assert!(lines(&logs).is_empty(), "{logs:?}");
        assert!(logs.contains(&StepLog::Error(
            "Process completed with exit code 1.".into()
        )));
        // Default shell has no pipefail.
        let (o, logs) = step(sb, &masker, "false | true\necho after-pipe", None, &env).await?;
        assert!(!o.failed, "{logs:?}");
        // Disabled command fails the step even though the script succeeded.
        let (o, logs) = step(sb, &masker, "echo '::set-env name=foo::bar'", None, &env).await?;
        assert!(o.failed);
        assert_eq!(o.status, ExitStatus::Exited(0));
        assert!(logs.iter().any(
            |l| matches!(l, StepLog::Error(m) if m.contains("`set-env` command is disabled"))
        ));
        // Invalid GITHUB_OUTPUT fails the step.
        let (o, logs) = step(
            sb,
            &masker,
            "echo 'K<<EOF' >> $GITHUB_OUTPUT; echo v >> $GITHUB_OUTPUT",
            None,
            &env,
        )
        .await?;
        assert!(o.failed);
        assert!(logs.iter().any(|l| matches!(l, StepLog::Error(m) if m == "Invalid value. Matching delimiter not found 'EOF'")));
        // Python shell and custom template.
        let (o, logs) = step(
            sb,
            &masker,
            "import sys\nprint('py', sys.argv[0].endswith('.py'))",
            Some("python3 {0}"),
            &env,
        )
        .await?;
        assert!(!o.failed, "{logs:?}");
        assert_eq!(lines(&logs), ["py False"]);
        let (o, logs) = step(sb, &masker, "echo $0", Some("sh -e {0}"), &env).await?;
        assert!(!o.failed);
        assert!(lines(&logs).first().is_some_and(|l| l.ends_with(".sh")));
        sb.destroy().await?;
    }
    Ok(())
}

#[tokio::test]
async fn timeout_debug_and_working_directory() -> TestResult {
    let t = tempfile::tempdir()?;
    for sb in backends(t.path()).await {
        let sb = sb.as_ref();
        let masker = Masker::new();
        let env = base_env(sb);
        std::fs::create_dir_all(sb.layout().workspace.join("sub/dir"))?;
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let s = ScriptStep {
            script: "echo '::debug::dbg message'; pwd; sleep 30".into(),
            working_directory: Some("sub/dir".into()),
            env: env.clone(),
            timeout: Some(std::time::Duration::from_millis(600)),
            display_name: "Wait".into(),
            debug: true,
            ..Default::default()
        };
        let collect = async {
            let mut v = Vec::new();
            while let Some(r) = rx.recv().await {
                v.push(r);
            }
            v
        };
        let (o, logs) = tokio::join!(run_script_step(sb, s, &masker, tx), collect);
        let o = o?;
        assert_eq!(o.status, ExitStatus::TimedOut);
        assert!(o.failed);
        assert!(
            logs.contains(&StepLog::Debug("dbg message".into())),
            "{logs:?}"
        );
        let ws = sb.layout().workspace.join("sub/dir");
        assert_eq!(lines(&logs), [ws.to_string_lossy().into_owned()]);
        assert!(logs
            .iter()
            .any(|l| matches!(l, StepLog::Error(m) if m == "The action 'Wait' has timed out after 0.01 minutes.")));
        // Without debug, ::debug:: is swallowed.
        let (o, logs) = step(sb, &masker, "echo '::debug::hidden'", None, &env).await?;
        assert!(!o.failed);
        assert!(logs.is_empty(), "{logs:?}");
        sb.destroy().await?;
    }
    Ok(())
}
