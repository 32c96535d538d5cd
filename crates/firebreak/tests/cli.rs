//! `firebreak check` and `firebreak plan` as a user or a script sees them: exit codes, the
//! `path:line:col: message` lines, and the shape of their `--format json` output.

use std::path::Path;
use std::process::Command;

mod common;

const CI: &str = r#"name: CI
on:
  push:
    branches: [main]
  pull_request:
    paths: ['src/**']
jobs:
  build:
    strategy:
      matrix:
        os: [a, b]
        v: [1, 2]
        exclude:
          - os: b
            v: 2
    runs-on: ubuntu-latest
    steps:
      - run: echo ${{ matrix.os }}
  test:
    needs: build
    runs-on: ubuntu-latest
    steps:
      - run: echo test
"#;

const BAD: &str = "on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo hi\n        bogus: 1\n";

fn firebreak(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_firebreak"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("run firebreak");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn repo() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(d.path().join(".github/workflows")).expect("mkdir");
    std::fs::write(d.path().join(".github/workflows/ci.yml"), CI).expect("write");
    std::fs::write(d.path().join("bad.yml"), BAD).expect("write");
    std::fs::write(d.path().join("push.json"), r#"{"ref":"refs/heads/main"}"#).expect("write");
    std::fs::write(
        d.path().join("pr.json"),
        r#"{"pull_request":{"base":{"ref":"main"}}}"#,
    )
    .expect("write");
    d
}

#[test]
fn check_exits_by_validity_and_names_file_line_and_column() {
    let d = repo();
    let (code, out, _) = firebreak(d.path(), &["check", ".github/workflows/ci.yml"]);
    assert_eq!(code, 0, "{out}");
    let (code, out, err) = firebreak(d.path(), &["check", ".github/workflows/ci.yml", "bad.yml"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.lines()
            .any(|l| l == "bad.yml:7:9: Unexpected value 'bogus'"),
        "{out}"
    );
    let (code, _, _) = firebreak(d.path(), &["check", "missing.yml"]);
    assert_eq!(code, 2);
    // In a folder, a workflow file that cannot be read (a dangling link, a FIFO) is reported,
    // not passed over; the others are still checked.
    let odd = d.path().join("odd");
    std::fs::create_dir(&odd).expect("mkdir");
    std::fs::copy(
        d.path().join(".github/workflows/ci.yml"),
        odd.join("ok.yml"),
    )
    .expect("copy");
    std::os::unix::fs::symlink(odd.join("gone.yml"), odd.join("dangling.yml")).expect("link");
    let fifo = std::process::Command::new("mkfifo")
        .arg(odd.join("pipe.yaml"))
        .status()
        .is_ok_and(|s| s.success());
    let (code, out, err) = firebreak(d.path(), &["check", "odd"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("dangling.yml"), "{out}{err}");
    assert!(
        !fifo || err.contains("pipe.yaml: not a regular file"),
        "{out}{err}"
    );
    // The repository, its `.github` folder and its workflows folder are the same files.
    for path in [".", ".github", ".github/workflows"] {
        let (code, out, err) = firebreak(d.path(), &["check", path]);
        assert_eq!(code, 0, "{path}: {out}{err}");
        assert!(
            err.contains("1 workflow file checked, 0 invalid"),
            "{path}: {out}{err}"
        );
    }
}

#[test]
fn check_json_lists_every_file_with_its_errors() {
    let d = repo();
    let (code, out, _) = firebreak(d.path(), &["check", "bad.yml", "--format", "json"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["valid"], false);
    assert_eq!(v["files"][0]["path"], "bad.yml");
    assert_eq!(
        v["files"][0]["errors"][0],
        serde_json::json!({"line": 7, "col": 9, "message": "Unexpected value 'bogus'"})
    );
}

#[test]
fn check_warns_of_filters_github_refuses_together_without_failing() {
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        d.path().join("both.yml"),
        "on:\n  push:\n    tags: [v1]\n    tags-ignore: [v0]\n    branches: [main]\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: echo\n",
    )
    .expect("write");
    let (code, out, err) = firebreak(d.path(), &["check", "both.yml"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out.trim(),
        "both.yml:4:5: warning: `tags` and `tags-ignore` both filter `push`, which GitHub does \
         not allow for one event; list the exclusions in `tags` as `!` patterns"
    );
    assert!(err.contains("0 invalid, 1 warning"), "{err}");
    let (code, out, _) = firebreak(d.path(), &["check", "both.yml", "--format", "json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["valid"], true);
    assert_eq!(v["files"][0]["warnings"][0]["line"], 4);
    // `run` says it too, as a record of its JSON stream.
    std::fs::create_dir_all(d.path().join(".github/workflows")).expect("mkdir");
    std::fs::rename(
        d.path().join("both.yml"),
        d.path().join(".github/workflows/both.yml"),
    )
    .expect("move");
    let (_, out, err) = firebreak(d.path(), &["run", "--sandbox", "host", "--json"]);
    let warning = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "workflow_warning");
    assert_eq!(
        warning.map(|v| (v["path"].clone(), v["line"].clone())),
        Some((
            serde_json::json!(".github/workflows/both.yml"),
            serde_json::json!(4)
        )),
        "{out}{err}"
    );
}

#[test]
fn plan_orders_jobs_by_stage_with_their_matrix_legs() {
    let d = repo();
    let (code, out, err) = firebreak(d.path(), &["plan", ".", "--event-file", "push.json"]);
    assert_eq!(code, 0, "{out}{err}");
    for leg in ["build (a, 1)", "build (a, 2)", "build (b, 1)"] {
        assert!(out.contains(leg), "{out}");
    }
    assert!(!out.contains("build (b, 2)"), "excluded leg shown: {out}");
    let test_line = out
        .lines()
        .find(|l| l.contains(" test "))
        .unwrap_or_default();
    assert!(
        test_line.trim_start().starts_with('2'),
        "test runs in stage 2: {out}"
    );

    let (code, out, _) = firebreak(
        d.path(),
        &["plan", ".", "--event-file", "push.json", "--format", "json"],
    );
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["event"], "push");
    let jobs = &v["workflows"][0]["jobs"];
    assert_eq!(jobs[0]["id"], "build");
    assert_eq!(jobs[0]["layer"], 0);
    let legs: Vec<&serde_json::Value> = jobs[0]["matrix"]["legs"]
        .as_array()
        .map(|a| a.iter().map(|l| &l["matrix"]).collect())
        .unwrap_or_default();
    assert_eq!(
        legs,
        vec![
            &serde_json::json!({"os": "a", "v": 1}),
            &serde_json::json!({"os": "a", "v": 2}),
            &serde_json::json!({"os": "b", "v": 1}),
        ]
    );
    assert_eq!(jobs[1]["id"], "test");
    assert_eq!(jobs[1]["layer"], 1);
    assert_eq!(jobs[1]["needs"], serde_json::json!(["build"]));
    assert_eq!(
        v["workflows"][0]["layers"],
        serde_json::json!([["build"], ["test"]])
    );
}

#[test]
fn plan_says_which_workflows_an_event_filters_out_and_why() {
    let d = repo();
    let pr = |changed: &str| {
        let (code, out, err) = firebreak(
            d.path(),
            &[
                "plan",
                ".",
                "--event",
                "pull_request",
                "--event-file",
                "pr.json",
                "--changed-file",
                changed,
                "--format",
                "json",
            ],
        );
        assert_eq!(code, 0, "{out}{err}");
        serde_json::from_str::<serde_json::Value>(&out).expect("json")
    };
    // `paths: ['src/**']`: a change outside src/ runs nothing, and says why.
    let v = pr("README.md");
    assert_eq!(v["workflows"], serde_json::json!([]));
    assert_eq!(v["filtered_out"][0]["path"], ".github/workflows/ci.yml");
    assert!(v["filtered_out"][0]["reason"]
        .as_str()
        .is_some_and(|r| !r.is_empty()));
    let v = pr("src/deep/main.rs");
    assert_eq!(v["workflows"][0]["path"], ".github/workflows/ci.yml");
}

#[test]
fn output_into_a_closed_pipe_stops_quietly_without_passing_for_success() {
    let dir = repo();
    for args in [
        &["plan"][..],
        &["check", "bad.yml"][..],
        &["plan", "--format", "json"][..],
    ] {
        // A pipe whose reader is gone, as after `firebreak plan | head -1`.
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_firebreak"))
            .args(args)
            .current_dir(dir.path())
            .env("NO_COLOR", "1")
            .stdout(writer)
            .output()
            .expect("run firebreak");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(141), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
}

/// A repository whose `caller.yml` calls a local reusable workflow the wrong way.
fn repo_with_bad_call() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    let wf = d.path().join(".github/workflows");
    std::fs::create_dir_all(&wf).expect("mkdir");
    std::fs::write(
        wf.join("called.yml"),
        "on:\n  workflow_call:\n    inputs:\n      who:\n        required: true\n        type: string\njobs:\n  hi:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ inputs.who }}\n",
    )
    .expect("write");
    std::fs::write(
        wf.join("caller.yml"),
        "on: push\njobs:\n  call:\n    uses: ./.github/workflows/called.yml\n    with:\n      nope: 1\n",
    )
    .expect("write");
    d
}

#[test]
fn check_and_plan_judge_local_reusable_calls_as_run_does() {
    let d = repo_with_bad_call();
    let (code, out, err) = firebreak(d.path(), &["check", "."]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(".github/workflows/caller.yml:4:11: Input who is required"),
        "{out}"
    );
    assert!(
        out.contains("caller.yml:6:13: Invalid input, nope is not defined"),
        "{out}"
    );
    // One file named on its own still finds its repository's called workflow.
    let (code, out, _) = firebreak(d.path(), &["check", ".github/workflows/caller.yml"]);
    assert_eq!(code, 1, "{out}");
    let (code, _, err) = firebreak(d.path(), &["plan", "."]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("Input who is required"), "{err}");
}

#[test]
fn check_reports_every_readable_file_when_one_is_unreadable() {
    let d = repo();
    // Not UTF-8: an invalid workflow, its error at the first bad byte (line 2, after `# caf`).
    std::fs::write(d.path().join("latin1.yml"), b"on: push\n# caf\xe9\n").expect("write");
    let (code, out, err) = firebreak(d.path(), &["check", "bad.yml", "latin1.yml", "nope.yml"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        out.contains("bad.yml:7:9: Unexpected value 'bogus'"),
        "{out}"
    );
    assert!(
        out.contains("latin1.yml:2:6: the file is not valid UTF-8 (byte 0xe9 here)"),
        "{out}"
    );
    assert!(err.contains("cannot read nope.yml"), "{err}");
    assert!(
        err.contains("2 workflow files checked, 2 invalid, 1 unreadable"),
        "{err}"
    );
    let (code, out, _) = firebreak(
        d.path(),
        &["check", "bad.yml", "latin1.yml", "--format", "json"],
    );
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["valid"], false);
    assert_eq!(v["files"][0]["path"], "bad.yml");
    assert_eq!(v["files"][1]["path"], "latin1.yml");
    assert_eq!(v["files"][1]["errors"][0]["line"], 2);
    assert_eq!(v["files"][1]["errors"][0]["col"], 6);
    assert_eq!(v["unreadable"].as_array().map(Vec::len), Some(0));
}

#[test]
fn plan_fails_when_a_triggered_workflow_cannot_be_planned() {
    let d = tempfile::tempdir().expect("tempdir");
    // 200 × 2 legs: over GitHub's 256.
    std::fs::write(
        d.path().join("big.yml"),
        format!(
            "on: push\njobs:\n  a:\n    runs-on: x\n    strategy:\n      matrix:\n        x: [{}]\n        y: [1, 2]\n    steps:\n      - run: echo\n",
            (0..200).map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
        ),
    )
    .expect("write");
    let (code, out, err) = firebreak(d.path(), &["plan", "big.yml"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("exceeded 256"), "{out}");
}

#[test]
fn plan_expands_a_matrix_that_reads_no_context() {
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        d.path().join("w.yml"),
        "on: push\njobs:\n  j:\n    runs-on: x\n    strategy:\n      matrix: ${{ fromJSON('{\"x\":[1,2]}') }}\n    steps:\n      - run: echo\n",
    )
    .expect("write");
    let (code, out, err) = firebreak(d.path(), &["plan", "w.yml"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("j (1)") && out.contains("j (2)"), "{out}");
    assert!(!out.contains("run time"), "{out}");
}

#[test]
fn a_mistyped_event_or_a_payload_that_is_not_an_object_is_a_usage_error() {
    let d = repo();
    let (code, _, err) = firebreak(d.path(), &["plan", ".", "--event", "psuh"]);
    assert_eq!(code, 2);
    assert!(err.contains("did you mean 'push'?"), "{err}");
    std::fs::write(d.path().join("list.json"), "[]").expect("write");
    let (code, _, err) = firebreak(d.path(), &["plan", ".", "--event-file", "list.json"]);
    assert_eq!(code, 2);
    assert!(err.contains("a JSON object"), "{err}");
}

/// Runs `command` under `script`, so that the programs in it see a terminal on stdout
/// and stderr unless the command redirects them; `None` when `script` is missing.
fn on_a_terminal(dir: &Path, command: &str) -> Option<String> {
    let out = Command::new("script")
        .args(["-qec", command, "/dev/null"])
        .current_dir(dir)
        .env_remove("NO_COLOR")
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn colour_follows_the_stream_it_is_written_to() {
    let d = repo();
    let bin = env!("CARGO_BIN_EXE_firebreak");
    // stdout a terminal, stderr a file: the summary in the file is plain.
    let Some(_) = on_a_terminal(d.path(), &format!("{bin} check bad.yml 2>err.txt")) else {
        eprintln!("SKIPPED: `script` (bsdutils) is not installed");
        return;
    };
    let err = std::fs::read_to_string(d.path().join("err.txt")).expect("err.txt");
    assert!(err.contains("1 invalid"), "{err}");
    assert!(!err.contains('\x1b'), "{err:?}");
    // stderr a terminal, stdout a file: the summary on the terminal is red, the file plain.
    let shown =
        on_a_terminal(d.path(), &format!("{bin} check bad.yml >out.txt")).unwrap_or_default();
    assert!(
        shown.contains("\x1b[31m1 workflow file checked, 1 invalid"),
        "{shown:?}"
    );
    let out = std::fs::read_to_string(d.path().join("out.txt")).expect("out.txt");
    assert!(
        out.contains("bad.yml:7:9") && !out.contains('\x1b'),
        "{out:?}"
    );
}

#[test]
fn plan_notes_a_skip_instruction_in_the_head_commit() {
    let d = repo();
    let git = |args: &[&str]| {
        common::git(d.path(), args);
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "-A"]);
    git(&["commit", "-qm", "docs only [skip ci]"]);
    let (code, out, err) = firebreak(d.path(), &["plan", "."]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("says [skip ci]: GitHub would start none of these runs"),
        "{out}"
    );
    let (_, out, _) = firebreak(d.path(), &["plan", ".", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["skip_ci"], "[skip ci]");
    // A pull request's head commit (read from the repository: its payload has no message)
    // skips `pull_request` runs, not `pull_request_target` ones.
    let skip = |event: &str| {
        let (code, out, err) = firebreak(
            d.path(),
            &["plan", ".", "--event", event, "--format", "json"],
        );
        assert_eq!(code, 0, "{out}{err}");
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        v["skip_ci"].clone()
    };
    assert_eq!(skip("pull_request"), "[skip ci]");
    assert_eq!(skip("pull_request_target"), serde_json::Value::Null);
    // The `skip-checks: true` trailer, set apart by two empty lines (kept by
    // --cleanup=verbatim), skips as the markers do.
    git(&[
        "commit",
        "-q",
        "--allow-empty",
        "--cleanup=verbatim",
        "-m",
        "fix typo\n\n\nskip-checks: true",
    ]);
    assert_eq!(skip("push"), "skip-checks: true");
    assert_eq!(skip("pull_request"), "skip-checks: true");
}

/// A repository whose `.github/workflows/w.yml` is `workflow`, committed on `main`, with
/// HEAD on a new branch `feature`.
fn on_a_feature_branch(workflow: &str) -> tempfile::TempDir {
    let d = folder_with(&[(".github/workflows/w.yml", workflow)]);
    for args in [
        ["init", "-q", "-b", "main"].as_slice(),
        &["add", "-A"],
        &["commit", "-qm", "first"],
        &["checkout", "-qb", "feature"],
    ] {
        common::git(d.path(), args);
    }
    d
}

/// What the plan settles as the run will see it: a pull request from this repository by
/// the actor (the fork guard and author checks hold), HEAD's sha for events whose payload
/// has none, strategy expressions and the `strategy` context in names, literal names, and a
/// condition that cannot be evaluated (the job fails; the job after it is skipped).
#[test]
fn plan_settles_names_strategies_and_conditions_as_the_run_will() {
    let d = on_a_feature_branch(
        "on: [pull_request, workflow_dispatch]\njobs:\n  same-repo:\n    name: Same repository\n    if: github.event.pull_request.head.repo.full_name == github.repository && github.event.pull_request.user.login == github.actor\n    runs-on: x\n    steps: [{run: a}]\n  sha:\n    if: github.sha != ''\n    runs-on: x\n    steps: [{run: a}]\n  legs:\n    name: leg ${{ strategy.job-index }} of ${{ strategy.job-total }}\n    runs-on: x\n    strategy:\n      fail-fast: ${{ github.event_name != 'workflow_dispatch' }}\n      max-parallel: ${{ fromJSON('2') }}\n      matrix: {v: [1, 2]}\n    steps: [{run: a}]\n  later:\n    runs-on: x\n    strategy:\n      fail-fast: ${{ vars.FF == 'y' }}\n    steps: [{run: a}]\n  broken:\n    if: fromJSON('{')\n    runs-on: x\n    steps: [{run: a}]\n  after:\n    needs: broken\n    runs-on: x\n    steps: [{run: a}]\n",
    );
    let plan = |event: &str| {
        let (code, out, err) = firebreak(d.path(), &["plan", ".", "-e", event, "--format", "json"]);
        assert_eq!(code, 0, "{out}{err}");
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        let jobs = v["workflows"][0]["jobs"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let job = move |id: &str| {
            jobs.iter()
                .find(|j| j["id"] == id)
                .cloned()
                .unwrap_or_else(|| panic!("no job {id}"))
        };
        job
    };
    let pr = plan("pull_request");
    assert_eq!(pr("same-repo")["if_result"], "runs");
    assert_eq!(pr("same-repo")["display-name"], "Same repository");
    let legs = &pr("legs")["matrix"]["legs"];
    assert_eq!(legs[0]["name"], "leg 0 of 2");
    assert_eq!(legs[1]["name"], "leg 1 of 2");
    assert_eq!(pr("legs")["fail-fast"], true);
    assert_eq!(pr("legs")["max-parallel"], 2);
    assert_eq!(
        pr("later")["strategy-decided-at-run-time"],
        serde_json::json!(["vars"])
    );
    assert_eq!(pr("broken")["if_result"], "fails");
    assert!(
        pr("broken")["if_error"]
            .as_str()
            .is_some_and(|e| e.starts_with("Error when evaluating 'if' for job 'broken'.")),
        "{}",
        pr("broken")
    );
    assert_eq!(pr("after")["if_result"], "skipped");
    let dispatch = plan("workflow_dispatch");
    assert_eq!(dispatch("sha")["if_result"], "runs");
    assert_eq!(dispatch("same-repo")["if_result"], "skipped");
    assert_eq!(dispatch("legs")["fail-fast"], false);
    // The table shows the names and why a job fails.
    let (_, out, _) = firebreak(d.path(), &["plan", ".", "-e", "pull_request"]);
    assert!(
        out.contains("Same repository") && out.contains("leg 1 of 2"),
        "{out}"
    );
    assert!(
        out.contains("→ fails: Error when evaluating 'if' for job 'broken'."),
        "{out}"
    );
}

/// More of what the plan must tell as GitHub would: a dispatch from a feature branch runs on
/// it (ref and sha agree), a job after a skipped one is skipped even when its condition reads
/// `needs`, a number input's default is not checked for the file's own events, an event file
/// may start with a byte-order mark, and the table lines up wide characters.
#[test]
fn plan_tells_dispatch_refs_skipped_needs_and_lines_up_wide_names() {
    let d = on_a_feature_branch(
        "on:\n  workflow_dispatch:\n  push:\n  workflow_call:\n    inputs:\n      retries: {type: number, default: three}\njobs:\n  a:\n    name: 构建 🚀\n    if: github.ref == 'refs/heads/feature'\n    runs-on: x\n    steps: [{run: a}]\n  deploy:\n    if: github.ref == 'refs/heads/production'\n    runs-on: x\n    steps: [{run: a}]\n  notify:\n    needs: deploy\n    if: needs.deploy.result == 'skipped'\n    runs-on: x\n    steps: [{run: a}]\n",
    );
    let (code, out, err) = firebreak(d.path(), &["check", "."]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = firebreak(d.path(), &["plan", ".", "-e", "workflow_dispatch"]);
    assert_eq!(code, 0, "{out}{err}");
    let rows: Vec<&str> = out.lines().skip(1).collect();
    // The `needs` column starts at the same terminal column on every row.
    let needs_col = |row: &str| {
        let at = row
            .find(" -  ")
            .or_else(|| row.find(" deploy  "))
            .expect("needs cell");
        unicode_width::UnicodeWidthStr::width(&row[..at])
    };
    assert!(rows[0].contains("needs"), "{out}");
    let header =
        unicode_width::UnicodeWidthStr::width(&rows[0][..rows[0].find("needs").unwrap_or(0)]) - 1;
    for row in &rows[1..] {
        assert_eq!(needs_col(row), header, "{out}");
    }
    assert!(
        rows[1].contains("构建 🚀") && !rows[1].contains("skipped"),
        "{out}"
    );
    assert!(
        rows[3].contains("→ skipped"),
        "notify follows a skipped job\n{out}"
    );
    // An event file saved with a byte-order mark.
    std::fs::write(
        d.path().join("ev.json"),
        "\u{feff}{\"ref\": \"refs/heads/feature\"}",
    )
    .expect("write");
    let (code, out, err) = firebreak(
        d.path(),
        &[
            "plan",
            ".",
            "-e",
            "workflow_dispatch",
            "--event-file",
            "ev.json",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
}

/// A strategy that does not evaluate fails its job when the run comes to it, as on
/// GitHub; the plan does not turn it into the whole workflow's error.
#[test]
fn a_strategy_that_does_not_evaluate_is_left_to_its_job() {
    let d = folder_with(&[(
        "w.yml",
        "on: push\njobs:\n  m:\n    runs-on: x\n    strategy:\n      max-parallel: ${{ fromJSON('\"two\"') }}\n      matrix: {v: [1]}\n    steps: [{run: a}]\n  ok:\n    runs-on: x\n    steps: [{run: a}]\n",
    )]);
    let (code, out, err) = firebreak(d.path(), &["plan", "w.yml"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("error"), "{out}");
}

/// `doctor --format json` names every backend with whether it works and why; the host
/// backend always works, and the Firecracker notes say whether jailed VMs can get a network
/// namespace each (as root doctor makes one to find out, and leaves nothing behind).
#[test]
fn doctor_reports_every_backend_as_json() {
    let d = tempfile::tempdir().expect("tempdir");
    let (code, out, err) = firebreak(d.path(), &["doctor", "--no-kvm-probe", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let backends = v["backends"].as_array().expect("backends");
    let backend = |name: &str| {
        backends
            .iter()
            .find(|b| b["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {out}"))
    };
    assert_eq!(backend("host")["works"], true);
    for name in ["namespace", "qemu", "firecracker"] {
        assert!(backend(name)["works"].is_boolean(), "{out}");
    }
    let notes: Vec<&str> = backend("firecracker")["notes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n.as_str())
        .collect();
    let netns = notes
        .iter()
        .find(|n| n.contains("network namespace"))
        .unwrap_or_else(|| panic!("no network namespace note in {notes:?}"));
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    if root {
        assert!(
            netns.contains("gets an empty network namespace of its own")
                || netns.contains("cannot make a network namespace"),
            "{netns}"
        );
    } else {
        assert!(netns.contains("needs root"), "{netns}");
    }
    let left: Vec<String> = std::fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("firebreak-doctor-netns-"))
        .collect();
    assert!(left.is_empty(), "doctor left {left:?}");
}

/// A temporary folder holding `files` (path → contents), folders made as needed.
fn folder_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    for (path, text) in files {
        let p = d.path().join(path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(p, text).expect("write");
    }
    d
}

#[test]
fn plan_runs_the_valid_workflows_when_another_is_invalid() {
    let d = repo();
    std::fs::write(d.path().join(".github/workflows/broken.yml"), BAD).expect("write");
    let (code, out, err) = firebreak(d.path(), &["plan", ".", "--event-file", "push.json"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("build (a, 1)") && out.contains("test"),
        "{out}"
    );
    assert!(
        err.contains(".github/workflows/broken.yml:7:9: Unexpected value 'bogus'"),
        "{err}"
    );
    assert!(
        err.contains(".github/workflows/broken.yml is invalid"),
        "{err}"
    );
    let (code, out, _) = firebreak(
        d.path(),
        &["plan", ".", "--event-file", "push.json", "--format", "json"],
    );
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).expect("one JSON document");
    assert_eq!(v["workflows"][0]["path"], ".github/workflows/ci.yml");
    assert_eq!(v["invalid"][0]["path"], ".github/workflows/broken.yml");
    assert_eq!(v["invalid"][0]["errors"][0]["line"], 7);
}

#[test]
fn plan_lists_a_called_workflows_jobs_and_check_finds_missing_local_ones() {
    // A remote call cannot be looked up: it does not stop the local one being checked.
    let caller = "on: push\njobs:\n  call:\n    uses: ./.github/workflows/called.yml\n    with: {who: me}\n  remote:\n    uses: octo/repo/.github/workflows/x.yml@v1\n";
    let d = folder_with(&[
        (
            ".github/workflows/called.yml",
            "on:\n  workflow_call:\n    inputs:\n      who: {required: true, type: string}\njobs:\n  hi:\n    strategy: {matrix: {n: [1, 2]}}\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ inputs.who }}\n",
        ),
        (".github/workflows/caller.yml", caller),
    ]);
    let wf = d.path().join(".github/workflows");
    let (code, out, err) = firebreak(d.path(), &["plan", ".github/workflows/caller.yml"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("call / hi (1)") && out.contains("call / hi (2)"),
        "{out}"
    );
    std::fs::write(
        wf.join("caller.yml"),
        format!("{caller}    needs: call\n  gone:\n    uses: ./.github/workflows/gone.yml\n  bad:\n    uses: ./.github/workflows/called.yml\n"),
    )
    .expect("write");
    let (code, out, err) = firebreak(d.path(), &["check", "."]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(
            "caller.yml:10:11: Unable to find reusable workflow './.github/workflows/gone.yml'"
        ),
        "{out}"
    );
    assert!(
        out.contains("caller.yml:12:11: Input who is required"),
        "{out}"
    );
}

#[test]
fn plan_expands_a_called_workflows_matrix_from_the_callers_settled_inputs() {
    let called = "on:\n  workflow_call:\n    inputs:\n      oses: {type: string}\n      arch: {type: string, default: '${{ github.event_name }}-x'}\njobs:\n  build:\n    name: build ${{ inputs.arch }} ${{ matrix.os }}\n    strategy:\n      matrix:\n        os: ${{ fromJSON(inputs.oses) }}\n    runs-on: x\n    steps:\n      - run: echo\n";
    // Literal inputs, inputs from the event, and one read from a job's outputs (known only
    // when the run gets there).
    let caller = "on: push\njobs:\n  lit:\n    uses: ./.github/workflows/called.yml\n    with: {oses: '[\"q\", \"r\"]'}\n  ev:\n    uses: ./.github/workflows/called.yml\n    with:\n      oses: ${{ format('[\"{0}\"]', github.event_name) }}\n  late:\n    needs: lit\n    uses: ./.github/workflows/called.yml\n    with:\n      oses: ${{ needs.lit.outputs.oses }}\n";
    let d = folder_with(&[
        (".github/workflows/called.yml", called),
        (".github/workflows/caller.yml", caller),
    ]);
    let (code, out, err) = firebreak(d.path(), &["plan", ".github/workflows/caller.yml"]);
    assert_eq!(code, 0, "{out}{err}");
    for leg in [
        "lit / build push-x q",
        "lit / build push-x r",
        "ev / build push-x push",
    ] {
        assert!(out.contains(leg), "{leg}\n{out}");
    }
    assert!(
        out.contains("late / build (matrix decided at run time from inputs)"),
        "{out}"
    );
}

#[test]
fn an_error_in_a_called_workflow_is_reported_at_the_call_and_each_file_once() {
    let d = folder_with(&[
        (
            ".github/workflows/called.yml",
            "on: workflow_call\njobs:\n  a:\n    runs-on: x\n    bogus: 1\n    steps: [{run: x}]\n",
        ),
        (
            ".github/workflows/caller.yml",
            "on: push\njobs:\n  call:\n    uses: ./.github/workflows/called.yml\n  pinned:\n    uses: ./.github/workflows/called.yml@main\n",
        ),
    ]);
    // The same file named three ways is checked once.
    let (code, out, err) = firebreak(
        d.path(),
        &[
            "check",
            ".github/workflows/caller.yml",
            "./.github/workflows/caller.yml",
            ".github/workflows",
        ],
    );
    assert_eq!(code, 1, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            ".github/workflows/caller.yml:4:11: in the called workflow .github/workflows/called.yml:5:5: Unexpected value 'bogus'",
            ".github/workflows/caller.yml:6:11: invalid value workflow reference: cannot specify version when calling local workflows",
            ".github/workflows/called.yml:5:5: Unexpected value 'bogus'",
        ],
        "{out}{err}"
    );
    assert!(err.contains("2 workflow files checked, 2 invalid"), "{err}");
    let (_, json, _) = firebreak(
        d.path(),
        &["check", ".github/workflows/caller.yml", "--format", "json"],
    );
    let doc: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(
        doc["files"][0]["errors"][0]["called_from"],
        serde_json::json!({"file": ".github/workflows/caller.yml", "line": 4, "col": 11})
    );
}

#[test]
fn a_warning_in_a_called_workflow_is_reported_at_the_call() {
    let d = folder_with(&[
        (
            ".github/workflows/called.yml",
            "on: workflow_call\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: echo ${{ format('{1}', 'a') }}\n",
        ),
        (
            ".github/workflows/caller.yml",
            "on: push\njobs:\n  call:\n    uses: ./.github/workflows/called.yml\n",
        ),
    ]);
    let (code, out, err) = firebreak(d.path(), &["check", ".github/workflows/caller.yml"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out.trim_end(),
        ".github/workflows/caller.yml:4:11: warning: in the called workflow \
         .github/workflows/called.yml:6:14: The following format string references more \
         arguments than were supplied: {1}",
        "{err}"
    );
    let (_, json, _) = firebreak(
        d.path(),
        &["check", ".github/workflows/caller.yml", "--format", "json"],
    );
    let doc: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(
        doc["files"][0]["warnings"][0]["called_from"],
        serde_json::json!({"file": ".github/workflows/caller.yml", "line": 4, "col": 11})
    );
}

#[test]
fn plan_says_when_an_events_types_were_not_checked() {
    let d = folder_with(&[(
        "w.yml",
        "on:\n  issues:\n    types: [closed]\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: echo\n",
    ), ("closed.json", r#"{"action": "closed"}"#), ("opened.json", r#"{"action": "opened"}"#)]);
    let (code, out, err) = firebreak(d.path(), &["plan", "w.yml", "--event", "issues"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("note: w.yml: its `types` (closed) were not checked: the `issues` event has no `action`"),
        "{err}"
    );
    let (_, out, err) = firebreak(
        d.path(),
        &[
            "plan",
            "w.yml",
            "--event",
            "issues",
            "--event-file",
            "opened.json",
        ],
    );
    assert!(!err.contains("not checked"), "{err}");
    assert!(out.contains("activity type 'opened'"), "{out}");
}

#[test]
fn plan_fails_a_workflow_that_filters_an_event_both_ways() {
    let d = folder_with(&[
        (
            "both.yml",
            "on:\n  push:\n    branches: [main]\n    branches-ignore: [dev]\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: echo\n",
        ),
        ("push.json", r#"{"ref":"refs/heads/main"}"#),
    ]);
    let (code, out, err) = firebreak(d.path(), &["plan", "both.yml", "--event-file", "push.json"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("`branches` and `branches-ignore` both filter `push`: GitHub fails"),
        "{out}"
    );
}

#[test]
fn a_malformed_filter_pattern_is_a_warning_and_fails_the_run_it_would_start() {
    let d = folder_with(&[
        (
            "bad.yml",
            "on:\n  push:\n    branches: [main, 'rel[1']\n  workflow_run:\n    workflows: C++\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: echo\n",
        ),
        ("push.json", r#"{"ref":"refs/heads/main"}"#),
    ]);
    // GitHub's parser takes the file: valid, with a warning at each pattern.
    let (code, out, err) = firebreak(d.path(), &["check", "bad.yml"]);
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "bad.yml:3:22: warning: Invalid filter pattern 'rel[1': missing closing bracket ']' after '[' (at character 3): GitHub fails this workflow's run when a `push` event comes",
            "bad.yml:5:16: warning: Invalid filter pattern 'C++': nested quantifier (at character 2): GitHub fails this workflow's run when a `workflow_run` event comes",
        ],
        "{out}"
    );
    // An event that reaches it: the run fails, whatever the ref.
    let (code, out, err) = firebreak(d.path(), &["plan", "bad.yml", "--event-file", "push.json"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("Invalid filter pattern 'rel[1': missing closing bracket"),
        "{out}"
    );
}

#[test]
fn a_scheduled_plan_sees_the_cron_a_run_would() {
    let d = folder_with(&[(
        "s.yml",
        "on:\n  schedule:\n    - cron: '0 3 * * 1'\n    - cron: '0 0 * * *'\njobs:\n  mon:\n    if: github.event.schedule == '0 3 * * 1'\n    runs-on: x\n    steps:\n      - run: echo\n  daily:\n    if: github.event.schedule == '0 0 * * *'\n    runs-on: x\n    steps:\n      - run: echo\n",
    )]);
    let (code, out, err) = firebreak(
        d.path(),
        &["plan", "s.yml", "--event", "schedule", "--format", "json"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let jobs = &v["workflows"][0]["jobs"];
    assert_eq!(jobs[0]["id"], "mon");
    assert_eq!(jobs[0]["if_result"], "runs", "{out}");
    assert_eq!(jobs[1]["if_result"], "skipped", "{out}");
    // `workflow_call` is not an event anything sends.
    let (code, _, err) = firebreak(d.path(), &["plan", "s.yml", "--event", "workflow_call"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("runs when a job of another workflow calls it"),
        "{err}"
    );
}

#[test]
fn plan_and_run_take_the_ref_from_the_command_line() {
    let d = folder_with(&[(
        ".github/workflows/r.yml",
        "on:\n  push:\n    branches: ['release/**']\n  workflow_dispatch:\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: echo \"ref=${{ github.ref }}\"\n  rel:\n    if: github.ref == 'refs/heads/release/2.0'\n    runs-on: x\n    steps:\n      - run: echo rel\n",
    )]);
    let git = |args: &[&str]| {
        common::git(d.path(), args);
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "-A"]);
    git(&["commit", "-qm", "a"]);
    // On main the branch filter excludes the push; `--ref` names a release branch.
    let (code, out, _) = firebreak(d.path(), &["plan", "--format", "json"]);
    assert_eq!(code, 0);
    assert!(out.contains("does not pass the push filters"), "{out}");
    let (code, out, err) = firebreak(d.path(), &["plan", "--ref", "release/2.0"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("r.yml"), "{out}");
    let (code, out, err) = firebreak(
        d.path(),
        &[
            "run",
            "--sandbox",
            "host",
            "--offline",
            "--ref",
            "release/2.0",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ref=refs/heads/release/2.0"), "{out}");
    let (code, out, err) = firebreak(
        d.path(),
        &[
            "run",
            "workflow_dispatch",
            "--sandbox",
            "host",
            "--offline",
            "--ref",
            "refs/tags/v3",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ref=refs/tags/v3"), "{out}");
    // `plan` decides job conditions on the ref the run would have.
    let verdict = |args: &[&str]| {
        let (_, out, _) = firebreak(d.path(), args);
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        v["workflows"][0]["jobs"][1]["if_result"].clone()
    };
    assert_eq!(
        verdict(&["plan", "--event", "workflow_dispatch", "--format", "json"]),
        "skipped"
    );
    assert_eq!(
        verdict(&[
            "plan",
            "--event",
            "workflow_dispatch",
            "--ref",
            "release/2.0",
            "--format",
            "json"
        ]),
        "runs"
    );
    // A detached HEAD with no ref at it: said, and how to name one.
    git(&["commit", "-q", "--allow-empty", "-m", "b"]);
    git(&["checkout", "-q", "--detach"]);
    git(&["commit", "-q", "--allow-empty", "-m", "c"]);
    let (_, _, err) = firebreak(d.path(), &["run", "--sandbox", "host", "--offline"]);
    assert!(
        err.contains("HEAD is detached and no branch or tag points at its commit"),
        "{err}"
    );
    assert!(
        !err.contains("paths filters see"),
        "no paths filter to blame: {err}"
    );
}

#[test]
fn plan_escapes_control_characters_in_names() {
    let d = folder_with(&[(
        "ctl.yml",
        "name: \"evil\\e[2J\"\non: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: echo\n",
    )]);
    let (code, out, err) = firebreak(d.path(), &["plan", "ctl.yml"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains('\x1b'), "{out:?}");
    assert!(out.contains("evil\\x1b[2J"), "{out}");
}

#[test]
fn an_error_inside_a_called_workflow_names_that_file_and_positionless_ones_no_line() {
    let d = folder_with(&[
        (
            ".github/workflows/caller.yml",
            "on: push\njobs:\n  c:\n    uses: ./.github/workflows/called.yml\n",
        ),
        (
            ".github/workflows/called.yml",
            "on:\n  workflow_call:\njobs:\n  hi:\n    runs-on: x\n    steps:\n      - run: echo\n        bogus: 1\n",
        ),
        ("empty.yml", ""),
    ]);
    let (code, out, _) = firebreak(d.path(), &["check", ".github/workflows/caller.yml"]);
    assert_eq!(code, 1);
    assert_eq!(
        out.trim(),
        ".github/workflows/caller.yml:4:11: in the called workflow .github/workflows/called.yml:8:9: Unexpected value 'bogus'"
    );
    let (_, out, _) = firebreak(
        d.path(),
        &["check", ".github/workflows/caller.yml", "--format", "json"],
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["files"][0]["path"], ".github/workflows/caller.yml");
    assert_eq!(
        v["files"][0]["errors"][0]["file"],
        ".github/workflows/called.yml"
    );
    // An empty file has no position to name.
    let (code, out, _) = firebreak(d.path(), &["check", "empty.yml"]);
    assert_eq!(code, 1);
    assert!(out.starts_with("empty.yml: "), "{out}");
}

#[test]
fn plan_marks_the_jobs_github_would_skip_for_the_event() {
    let d = folder_with(&[
        (
            "w.yml",
            "on: [push, pull_request]\njobs:\n  pr-only:\n    if: github.event_name == 'pull_request'\n    runs-on: x\n    steps:\n      - run: echo\n  after:\n    needs: pr-only\n    runs-on: x\n    steps:\n      - run: echo\n  cleanup:\n    needs: pr-only\n    if: always()\n    runs-on: x\n    steps:\n      - run: echo\n  gated:\n    if: vars.DEPLOY == 'yes'\n    runs-on: x\n    steps:\n      - run: echo\n",
        ),
        ("push.json", r#"{"ref":"refs/heads/main"}"#),
    ]);
    let (code, out, err) = firebreak(d.path(), &["plan", "w.yml", "--event-file", "push.json"]);
    assert_eq!(code, 0, "{out}{err}");
    let line = |job: &str| {
        out.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(job))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line("pr-only").ends_with("→ skipped"), "{out}");
    assert!(line("after").ends_with("→ skipped"), "{out}");
    assert!(!line("cleanup").contains("skipped"), "{out}");
    assert!(!line("gated").contains("skipped"), "{out}");
    let (_, out, _) = firebreak(
        d.path(),
        &[
            "plan",
            "w.yml",
            "--event-file",
            "push.json",
            "--format",
            "json",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let results: Vec<(String, String)> = v["workflows"][0]["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| {
            (
                j["id"].as_str().unwrap_or("").into(),
                j["if_result"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    let want = |id: &str, r: &str| results.contains(&(id.to_string(), r.to_string()));
    assert!(
        want("pr-only", "skipped") && want("after", "skipped"),
        "{results:?}"
    );
    assert!(
        want("cleanup", "runs") && want("gated", "undecided"),
        "{results:?}"
    );
    // On a pull request the first job runs.
    std::fs::write(
        d.path().join("pr.json"),
        r#"{"pull_request":{"base":{"ref":"main"}},"action":"opened"}"#,
    )
    .expect("write");
    let (_, out, _) = firebreak(
        d.path(),
        &[
            "plan",
            "w.yml",
            "--event",
            "pull_request",
            "--event-file",
            "pr.json",
        ],
    );
    assert!(!out.contains("skipped"), "{out}");
}

#[test]
fn plan_expands_a_matrix_built_from_the_events_inputs() {
    let d = folder_with(&[
        (
            "w.yml",
            "on:\n  workflow_dispatch:\n    inputs:\n      oses: {type: string, default: '[\"a\"]'}\njobs:\n  build:\n    strategy:\n      matrix:\n        os: ${{ fromJSON(inputs.oses) }}\n    runs-on: x\n    steps:\n      - run: echo\n  later:\n    strategy:\n      matrix:\n        v: ${{ fromJSON(vars.VERSIONS) }}\n    runs-on: x\n    steps:\n      - run: echo\n",
        ),
        ("wd.json", r#"{"inputs":{"oses":"[\"linux\",\"mac\"]"}}"#),
    ]);
    let (code, out, err) = firebreak(
        d.path(),
        &[
            "plan",
            "w.yml",
            "--event",
            "workflow_dispatch",
            "--event-file",
            "wd.json",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("build (linux)") && out.contains("build (mac)"),
        "{out}"
    );
    assert!(
        out.contains("later (matrix decided at run time from vars)"),
        "{out}"
    );
}

const DISPATCH: &str = r#"on:
  workflow_dispatch:
    inputs:
      oses:
        default: '["a","b"]'
      flag:
        type: boolean
        default: true
jobs:
  x:
    if: inputs.flag
    runs-on: ubuntu-latest
    strategy:
      matrix:
        os: ${{ fromJSON(inputs.oses) }}
    steps:
      - run: echo ${{ matrix.os }}
  y:
    if: ${{ !inputs.flag }}
    runs-on: ubuntu-latest
    steps:
      - run: echo y
"#;

#[test]
fn a_dispatch_plan_sees_the_inputs_the_run_will_see() {
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::write(d.path().join("d.yml"), DISPATCH).expect("write");
    let verdicts = |out: &str| -> Vec<(String, String)> {
        let v: serde_json::Value = serde_json::from_str(out).expect("json");
        v["workflows"][0]["jobs"]
            .as_array()
            .expect("jobs")
            .iter()
            .map(|j| {
                (
                    j["id"].as_str().unwrap_or_default().to_string(),
                    j["if_result"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    };
    let plan_dispatch = |extra: &[&str]| {
        let mut args = vec!["plan", "d.yml", "--event", "workflow_dispatch"];
        args.extend_from_slice(extra);
        firebreak(d.path(), &args)
    };
    // No payload inputs: the declared defaults, typed (`flag` is the boolean true).
    let (code, out, err) = plan_dispatch(&["--format", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let legs: Vec<&str> = v["workflows"][0]["jobs"][0]["matrix"]["legs"]
        .as_array()
        .expect("the matrix from the default is expanded")
        .iter()
        .filter_map(|l| l["name"].as_str())
        .collect();
    assert_eq!(legs, ["x (a)", "x (b)"]);
    assert_eq!(
        verdicts(&out),
        [("x".into(), "runs".into()), ("y".into(), "skipped".into())]
    );
    // The payload's inputs are strings, as GitHub sends them: "false" is the boolean false.
    std::fs::write(d.path().join("ev.json"), r#"{"inputs":{"flag":"false"}}"#).expect("write");
    let (code, out, err) = plan_dispatch(&["--event-file", "ev.json", "--format", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        verdicts(&out),
        [("x".into(), "skipped".into()), ("y".into(), "runs".into())]
    );
    // What GitHub would refuse is the workflow's error.
    std::fs::write(
        d.path().join("bad.json"),
        r#"{"inputs":{"flag":"maybe","zzz":"1"}}"#,
    )
    .expect("write");
    let (code, out, err) = plan_dispatch(&["--event-file", "bad.json"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("GitHub would refuse this dispatch: Unexpected inputs provided: [\"zzz\"]; Provided value 'maybe' for input 'flag' is not a boolean"),
        "{out}"
    );
}

#[test]
fn plan_names_jobs_and_legs_as_the_run_does_when_their_name_is_an_expression() {
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        d.path().join("w.yml"),
        "on: push\njobs:\n  a:\n    name: Build ${{ matrix.os }}\n    strategy:\n      matrix:\n        os: [u, w]\n        v: [1, 2]\n    runs-on: x\n    steps:\n      - run: echo\n  c:\n    name: ${{ github.ref_name }} test\n    runs-on: x\n    steps:\n      - run: echo\n  d:\n    name: ${{ needs.c.outputs.x }}\n    needs: c\n    runs-on: x\n    steps:\n      - run: echo\n",
    )
    .expect("write");
    std::fs::write(d.path().join("push.json"), r#"{"ref":"refs/heads/main"}"#).expect("write");
    let (code, out, err) = firebreak(d.path(), &["plan", "w.yml", "--event-file", "push.json"]);
    assert_eq!(code, 0, "{out}{err}");
    let names: Vec<&str> = out
        .lines()
        .skip(2)
        .map(|l| {
            let cells: Vec<&str> = l.split("  ").filter(|c| !c.trim().is_empty()).collect();
            // A leg's first line starts with its stage; continuation lines do not.
            match cells.first().map(|c| c.trim().parse::<u32>().is_ok()) {
                Some(true) => cells.get(1).map_or("", |c| c.trim()),
                _ => cells.first().map_or("", |c| c.trim()),
            }
        })
        .collect();
    // Legs named alike get `#2`, as in the run; a name reading `needs` is left to the run.
    assert_eq!(
        names,
        [
            "Build u",
            "Build u #2",
            "Build w",
            "Build w #2",
            "main test",
            "d"
        ],
        "{out}"
    );
}

#[test]
fn plan_shows_what_include_adds_beside_each_legs_name() {
    // GitHub's documented example of `include` expanding a matrix.
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        d.path().join("w.yml"),
        "on: push\njobs:\n  example_matrix:\n    strategy:\n      matrix:\n        fruit: [apple, pear]\n        animal: [cat, dog]\n        include:\n          - color: green\n          - color: pink\n            animal: cat\n          - fruit: apple\n            shape: circle\n          - fruit: banana\n          - fruit: banana\n            animal: cat\n    runs-on: x\n    steps:\n      - run: echo\n",
    )
    .expect("write");
    let (code, out, err) = firebreak(d.path(), &["plan", "w.yml"]);
    assert_eq!(code, 0, "{out}{err}");
    for leg in [
        "example_matrix (apple, cat)  + color: pink, shape: circle",
        "example_matrix (apple, dog)  + color: green, shape: circle",
        "example_matrix (pear, cat)  + color: pink",
        "example_matrix (pear, dog)  + color: green",
        "example_matrix (banana)",
        "example_matrix (banana, cat)",
    ] {
        assert!(out.contains(leg), "{leg}\n{out}");
    }
}

#[test]
fn a_local_call_that_cannot_be_looked_up_is_said_to_be_unchecked() {
    // A file outside any repository's .github/workflows: the called workflow cannot be found,
    // so the call is not checked, and check says so instead of passing it silently.
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        d.path().join("caller.yml"),
        "on: push\njobs:\n  call:\n    uses: ./.github/workflows/called.yml\n",
    )
    .expect("write");
    let (code, out, err) = firebreak(d.path(), &["check", "caller.yml"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        format!("{out}{err}").contains(
            "caller.yml:4:11: warning: the call to ./.github/workflows/called.yml was not checked"
        ),
        "{out}{err}"
    );
}
