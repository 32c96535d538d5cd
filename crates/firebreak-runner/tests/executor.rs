//! The executor as a library: plan a workflow, run it on the host backend, read the typed
//! event stream.

use std::sync::Arc;

use firebreak_expr::Value;
use firebreak_runner::executor::events::{Conclusion, Event, EventSender, LineKind};
use firebreak_runner::executor::{run_workflow, RunConfig};
use firebreak_runner::sandbox::{HostProvider, SandboxProvider};
use firebreak_workflow::plan;
use indexmap::IndexMap;
use tokio_util::sync::CancellationToken;

fn config(dir: &std::path::Path) -> RunConfig {
    let mut providers: IndexMap<String, Arc<dyn SandboxProvider>> = IndexMap::new();
    providers.insert("host".into(), Arc::new(HostProvider::new(dir.join("jobs"))));
    let src = dir.join("src");
    std::fs::create_dir_all(&src).expect("src");
    std::fs::write(src.join("README"), "hello from the repository\n").expect("write");
    let mut secrets = IndexMap::new();
    secrets.insert("PASSWORD".to_string(), "hunter2-secret".to_string());
    RunConfig {
        event_name: "push".into(),
        event: serde_json::json!({"ref": "refs/heads/main", "after": "abc"}),
        repository: "octo/demo".into(),
        sha: "abc".into(),
        git_ref: "refs/heads/main".into(),
        actor: "mona".into(),
        run_id: 7,
        run_number: 3,
        server_url: "https://github.com".into(),
        stage_source: Arc::new(move || Ok(src.clone())),
        staged: Arc::new(tokio::sync::OnceCell::new()),
        secrets,
        vars: IndexMap::new(),
        inputs: Value::Object(IndexMap::new()),
        providers,
        default_backend: "host".into(),
        label_map: IndexMap::new(),
        slots: Arc::new(tokio::sync::Semaphore::new(2)),
        action_cache: dir.join("cache"),
        offline: true,
        network: true,
        network_by_default: false,
        only_jobs: Vec::new(),
        matrix_filter: Vec::new(),
        cancel: CancellationToken::new(),
        kill: CancellationToken::new(),
        base_path: std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
        extra_env: IndexMap::new(),
        log_dir: None,
        job_prefix: String::new(),
        reusable: Arc::new(IndexMap::new()),
        github_workflow: None,
        concurrency: Default::default(),
        concurrency_held: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_describe_the_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = r#"on: push
jobs:
  build:
    runs-on: ubuntu-latest
    strategy:
      matrix:
        n: [1, 2]
    outputs:
      v: ${{ steps.s.outputs.v }}
    steps:
      - uses: actions/checkout@v4
      - id: s
        run: |
          cat README
          echo "v=leg${{ matrix.n }}" >> "$GITHUB_OUTPUT"
          echo "the password is ${{ secrets.PASSWORD }}"
          echo "::warning::careful"
  after:
    needs: build
    runs-on: ubuntu-latest
    steps:
      - run: echo "got ${{ needs.build.outputs.v }}"
      - run: exit 4
      - if: always()
        run: echo done
"#;
    let wf = firebreak_workflow::parse_workflow("ci.yml", src)
        .into_result()
        .expect("valid workflow");
    let ev = plan::Event {
        name: "push".into(),
        payload: serde_json::json!({"ref": "refs/heads/main"}),
        changed_files: None,
    };
    let p = plan::plan(&[("ci.yml", Arc::new(wf))], &ev);
    let (tx, mut rx) = EventSender::channel();
    // Read while the run goes, as a reporter does: output waits for a reader that is far
    // behind.
    let reader = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(e) = rx.recv().await {
            events.push(e);
        }
        events
    });
    let outcome = run_workflow(
        &p.workflows[0],
        ".github/workflows/ci.yml",
        Arc::new(config(dir.path())),
        tx,
    )
    .await
    .expect("runs");
    let events = reader.await.expect("events");
    assert_eq!(outcome.result, Conclusion::Failure);
    let results: Vec<(String, Conclusion)> = outcome
        .jobs
        .iter()
        .flat_map(|j| j.legs.iter().map(|l| (l.0.clone(), l.1)))
        .collect();
    assert_eq!(
        results,
        [
            ("build (1)".to_string(), Conclusion::Success),
            ("build (2)".to_string(), Conclusion::Success),
            ("after".to_string(), Conclusion::Failure)
        ]
    );
    let lines: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            Event::Output {
                job,
                kind: LineKind::Stdout,
                line,
                step,
            } => Some(format!("{}#{}: {line}", job.name, step.unwrap_or(0))),
            _ => None,
        })
        .collect();
    assert!(
        lines.contains(&"build (1)#2: hello from the repository".to_string()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"build (2)#2: the password is ***".to_string()),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("after#1: got leg")),
        "{lines:?}"
    );
    assert!(lines.contains(&"after#3: done".to_string()), "{lines:?}");
    assert!(events.iter().any(
        |e| matches!(e, Event::Annotation { annotation, .. } if annotation.message == "careful")
    ));
    let finished: Vec<(usize, Conclusion, Conclusion)> = events
        .iter()
        .filter_map(|e| match e {
            Event::StepFinished {
                job,
                index,
                outcome,
                conclusion,
                ..
            } if job.id == "after" => Some((*index, *outcome, *conclusion)),
            _ => None,
        })
        .collect();
    assert_eq!(
        finished,
        [
            (1, Conclusion::Success, Conclusion::Success),
            (2, Conclusion::Failure, Conclusion::Failure),
            (3, Conclusion::Success, Conclusion::Success)
        ]
    );
    let text = format!("{events:?}");
    assert!(
        !text.contains("hunter2-secret"),
        "a secret reached the event stream"
    );
}
