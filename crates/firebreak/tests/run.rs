//! End-to-end tests of `firebreak run`: each builds a small git repository with a workflow,
//! runs the binary on it and checks the exit status, the output and the logs.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::git;

struct Repo {
    dir: tempfile::TempDir,
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn has(&self, s: &str) -> bool {
        self.stdout.contains(s)
    }
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn repo(files: &[(&str, &str)]) -> Repo {
    let dir = tempfile::Builder::new()
        .prefix("fb-run-")
        .tempdir_in(std::env::temp_dir())
        .expect("tempdir");
    for (p, text) in files {
        let path = dir.path().join(p);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, text).expect("write");
    }
    git(dir.path(), &["init", "-q", "-b", "main"]);
    git(dir.path(), &["add", "-A"]);
    git(dir.path(), &["commit", "-q", "-m", "init"]);
    Repo { dir }
}

impl Repo {
    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn run(&self, args: &[&str]) -> Out {
        let out = Command::new(env!("CARGO_BIN_EXE_firebreak"))
            .arg("run")
            .args(args)
            .arg("-C")
            .arg(self.path())
            .arg("--offline")
            .arg("--action-cache")
            .arg(self.path().join(".cache-actions"))
            .env("NO_COLOR", "1")
            .output()
            .expect("run firebreak");
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn host(&self, extra: &[&str]) -> Out {
        let mut a = vec!["push", "--sandbox", "host"];
        a.extend_from_slice(extra);
        self.run(&a)
    }

    fn logs(&self) -> String {
        let mut all = String::new();
        let runs = self.path().join(".firebreak/runs");
        for e in std::fs::read_dir(runs).expect("runs").flatten() {
            for f in std::fs::read_dir(e.path()).expect("run").flatten() {
                all.push_str(&std::fs::read_to_string(f.path()).unwrap_or_default());
            }
        }
        all
    }
}

const WF: &str = ".github/workflows/ci.yml";

#[test]
fn env_precedence_and_github_variables() {
    let r = repo(&[(
        WF,
        r#"on: push
env: { A: wf, B: wf, C: wf }
jobs:
  j:
    runs-on: ubuntu-latest
    env: { B: job, C: job }
    steps:
      - run: |
          echo "B=genv" >> "$GITHUB_ENV"
          echo "C=genv" >> "$GITHUB_ENV"
      - env: { C: step }
        run: |
          echo "values $A $B $C ${{ env.B }} ${{ env.C }}"
          echo "gh $GITHUB_JOB $GITHUB_EVENT_NAME $GITHUB_REF $RUNNER_OS ${{ github.ref_name }} ${{ runner.os }} $CI"
          test "$GITHUB_SHA" = "${{ github.sha }}" && test -f "$GITHUB_EVENT_PATH" && echo sha-ok
      - id: named
        run: |
          echo "action ${{ github.action }} $GITHUB_ACTION"
          test "${{ github.env }}" = "$GITHUB_ENV" && test "${{ github.output }}" = "$GITHUB_OUTPUT" \
            && test "${{ github.path }}" = "$GITHUB_PATH" && test "${{ github.state }}" = "$GITHUB_STATE" \
            && test "${{ github.step_summary }}" = "$GITHUB_STEP_SUMMARY" && test -n "$GITHUB_ENV" && echo files-ok
      - run: echo "action ${{ github.action }} $GITHUB_ACTION"
"#,
    )]);
    let o = r.host(&[]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.has("| values wf genv step genv step"), "{o:?}");
    assert!(
        o.has("| gh j push refs/heads/main Linux main Linux true"),
        "{o:?}"
    );
    assert!(o.has("| sha-ok"), "{o:?}");
    assert!(o.has("| action named named"), "{o:?}");
    // The step's file-command paths, in expressions as in its environment.
    assert!(o.has("| files-ok"), "{o:?}");
    assert!(o.has("| action __run_3 __run_3"), "{o:?}");
}

/// On Linux GitHub's runner keeps the `env` context case-sensitive (other contexts are not).
#[test]
fn the_env_context_is_case_sensitive() {
    let r = repo(&[(
        WF,
        r#"on: push
env:
  Mixed: m
jobs:
  j:
    runs-on: ubuntu-latest
    steps:
      - run: echo "[${{ env.Mixed }}] [${{ env.mixed }}] [${{ env['MIXED'] }}] [${{ github.EVENT_NAME }}]"
"#,
    )]);
    let o = r.host(&[]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.has("| [m] [] [] [push]"), "{o:?}");
}

#[test]
fn file_commands_with_heredocs_and_path() {
    let r = repo(&[(
        WF,
        r#"on: push
jobs:
  j:
    runs-on: ubuntu-latest
    steps:
      - id: w
        run: |
          { echo 'MULTI<<EOF'; echo 'line one'; echo 'line two'; echo 'EOF'; } >> "$GITHUB_ENV"
          { echo 'out<<XYZ'; echo 'o1'; echo 'o2'; echo 'XYZ'; } >> "$GITHUB_OUTPUT"
          echo "single=v=1" >> "$GITHUB_OUTPUT"
          mkdir -p "$RUNNER_TEMP/bin" && printf '#!/bin/sh\necho from-added-path\n' > "$RUNNER_TEMP/bin/mytool" && chmod +x "$RUNNER_TEMP/bin/mytool"
          echo "$RUNNER_TEMP/bin" >> "$GITHUB_PATH"
      - run: |
          printf '%s|' "$MULTI"; echo
          echo 'outs ${{ steps.w.outputs.single }} ${{ toJSON(steps.w.outputs.out) }}' 
          mytool
          echo "::set-output name=legacy::yes"
        id: x
      - run: echo "legacy ${{ steps.x.outputs.legacy }}"
      - run: echo "*summary* of $GITHUB_JOB" >> "$GITHUB_STEP_SUMMARY"
      - run: head -c 1048577 /dev/zero | tr '\0' x >> "$GITHUB_STEP_SUMMARY"
      - name: lenient
        continue-on-error: true
        run: printf 'GOOD=1\nbadline\nLATER=2\n' >> "$GITHUB_ENV"
      - run: echo "good=[$GOOD] later=[$LATER]"
"#,
    )]);
    let o = r.host(&[]);
    assert_eq!(o.code, 0, "{o:?}");
    // Over 1 MiB: an error, not a failed step, and not in the job summary.
    assert!(o.has("$GITHUB_STEP_SUMMARY upload aborted, supports content up to a size of 1024k, got 1024k"), "{o:?}");
    // The lines before a malformed one still count.
    assert!(o.has("Invalid format 'badline'"), "{o:?}");
    assert!(o.has("| good=[1] later=[]"), "{o:?}");
    assert!(o.has("| line one\n[j]   | line two|"), "{o:?}");
    assert!(o.has("| outs v=1 \"o1\\no2\""), "{o:?}");
    assert!(o.has("| from-added-path"), "{o:?}");
    assert!(o.has("| legacy yes"), "{o:?}");
    let summary = std::fs::read_to_string(r.path().join(".firebreak/runs/1/j.summary.md"))
        .unwrap_or_default();
    assert_eq!(summary.trim(), "*summary* of j");
}

#[test]
fn outputs_and_results_through_needs() {
    let r = repo(&[(
        WF,
        r#"on: push
jobs:
  a:
    runs-on: ubuntu-latest
    outputs:
      x: ${{ steps.s.outputs.x }}
    steps:
      - id: s
        run: echo "x=from-a" >> "$GITHUB_OUTPUT"
  bad:
    runs-on: ubuntu-latest
    steps:
      - run: exit 3
  b:
    needs: [a, bad]
    if: always()
    runs-on: ubuntu-latest
    steps:
      - run: echo "got ${{ needs.a.outputs.x }} ${{ needs.a.result }} ${{ needs.bad.result }}"
  c:
    needs: bad
    runs-on: ubuntu-latest
    steps:
      - run: echo never
  d:
    needs: bad
    if: failure()
    runs-on: ubuntu-latest
    steps:
      - run: echo "d runs on failure"
"#,
    )]);
    let o = r.host(&[]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.has("| got from-a success failure"), "{o:?}");
    assert!(!o.has("| never"), "{o:?}");
    assert!(o.has("| d runs on failure"), "{o:?}");
    assert!(
        o.stdout.contains("- c") && o.stdout.contains("skipped"),
        "{o:?}"
    );
}

#[test]
fn outcome_conclusion_and_continue_on_error() {
    let r = repo(&[(
        WF,
        r#"on: push
jobs:
  j:
    runs-on: ubuntu-latest
    steps:
      - id: f
        continue-on-error: true
        run: exit 1
      - run: echo "f ${{ steps.f.outcome }} ${{ steps.f.conclusion }} ${{ job.status }}"
      - if: failure()
        run: echo "must not run"
  k:
    runs-on: ubuntu-latest
    continue-on-error: true
    steps:
      - run: exit 1
"#,
    )]);
    let o = r.host(&[]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.has("| f failure success success"), "{o:?}");
    assert!(!o.has("| must not run"), "{o:?}");
    assert!(o.has("failure (continue-on-error)"), "{o:?}");
}

#[test]
fn status_functions_after_a_failure() {
    let r = repo(&[(
        WF,
        r#"on: push
jobs:
  j:
    runs-on: ubuntu-latest
    steps:
      - run: exit 1
      - run: echo "after-default"
      - if: failure()
        run: echo "after-failure"
      - if: always()
        run: echo "after-always ${{ job.status }}"
      - if: cancelled()
        run: echo "after-cancelled"
      - if: success() || failure()
        run: echo "after-either"
"#,
    )]);
    let o = r.host(&[]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(!o.has("| after-default"), "{o:?}");
    assert!(o.has("| after-failure"), "{o:?}");
    assert!(o.has("| after-always failure"), "{o:?}");
    assert!(!o.has("| after-cancelled"), "{o:?}");
    assert!(o.has("| after-either"), "{o:?}");
    assert!(o.has("Process completed with exit code 1."), "{o:?}");
}

#[test]
fn step_and_job_timeouts() {
    let r = repo(&[(
        WF,
        r#"on: push
jobs:
  step:
    runs-on: ubuntu-latest
    steps:
      # GitHub's runner cuts a step's timeout to whole minutes: under one, none.
      - timeout-minutes: 0.02
        run: sleep 2; echo "not cut short"
      - if: always()
        run: echo "cleanup ran"
  job:
    runs-on: ubuntu-latest
    timeout-minutes: 0.03
    steps:
      - run: sleep 30
      - if: always()
        run: echo "job cleanup ran, job.status=${{ job.status }}"
"#,
    )]);
    let t0 = Instant::now();
    let o = r.host(&[]);
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t0.elapsed()
    );
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.has("| not cut short"), "{o:?}");
    assert!(!o.has("has timed out"), "{o:?}");
    assert!(o.has("| cleanup ran"), "{o:?}");
    assert!(
        o.has("exceeded the maximum execution time of 0.03 minutes"),
        "{o:?}"
    );
    // A job past its timeout-minutes is cancelled, as on GitHub, not failed.
    assert!(o.has("| job cleanup ran, job.status=cancelled"), "{o:?}");
    assert!(o.has("⊘ job cancelled"), "{o:?}");
}

#[test]
fn matrix_names_fail_fast_and_dynamic_matrix() {
    let r = repo(&[(
        WF,
        r#"on: push
jobs:
  prep:
    runs-on: ubuntu-latest
    outputs:
      m: ${{ steps.s.outputs.m }}
    steps:
      - id: s
        run: echo 'm={"n":[1,2],"l":["a"]}' >> "$GITHUB_OUTPUT"
  build:
    needs: prep
    runs-on: ubuntu-latest
    strategy:
      matrix: ${{ fromJSON(needs.prep.outputs.m) }}
    steps:
      - run: echo "leg ${{ matrix.n }}${{ matrix.l }} of ${{ strategy.job-total }}"
  ff:
    runs-on: ubuntu-latest
    strategy:
      matrix:
        k: [fast, slow]
    steps:
      - run: |
          if [ "${{ matrix.k }}" = fast ]; then exit 1; fi
          sleep 30
"#,
    )]);
    let t0 = Instant::now();
    let o = r.host(&[]);
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "fail-fast did not cancel: {:?}",
        t0.elapsed()
    );
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.has("[build (1, a)]   | leg 1a of 2"), "{o:?}");
    assert!(o.has("[build (2, a)]   | leg 2a of 2"), "{o:?}");
    assert!(o.has("ff (slow)") && o.has("cancelled"), "{o:?}");
}

/// Every combination excluded: GitHub still runs the job once, with a `null` matrix; a job
/// without a strategy sees `null` too.
#[test]
fn a_fully_excluded_matrix_runs_the_job_once_with_a_null_matrix() {
    let r = repo(&[(
        WF,
        r#"on: push
jobs:
  m:
    runs-on: ubuntu-latest
    strategy:
      matrix:
        os: [x]
        exclude:
          - os: x
    steps:
      - run: echo "m=${{ toJSON(matrix) }} total=${{ strategy.job-total }}"
  plain:
    runs-on: ubuntu-latest
    steps:
      - run: echo "plain=${{ toJSON(matrix) }}"
"#,
    )]);
    let o = r.host(&[]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.contains("m=null total=1"), "{}", o.stdout);
    assert!(o.stdout.contains("plain=null"), "{}", o.stdout);
}

#[test]
fn max_parallel_runs_legs_one_at_a_time() {
    let r = repo(&[(
        WF,
        r#"on: push
jobs:
  m:
    runs-on: ubuntu-latest
    strategy:
      max-parallel: 1
      matrix:
        i: [1, 2, 3]
    steps:
      - run: |
          echo "start ${{ matrix.i }}" >> "$LOGFILE"
          sleep 0.3
          echo "end ${{ matrix.i }}" >> "$LOGFILE"
        env:
          LOGFILE: ${{ vars.LOGFILE }}
"#,
    )]);
    let log = r.path().join("order.txt");
    let arg = format!("LOGFILE={}", log.display());
    let o = r.host(&["--var", &arg]);
    assert_eq!(o.code, 0, "{o:?}");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    // One at a time, and in matrix order, as GitHub queues them.
    assert_eq!(
        lines,
        ["start 1", "end 1", "start 2", "end 2", "start 3", "end 3"],
        "{text}"
    );
}

#[test]
fn with_max_parallel_1_the_first_leg_fails_before_later_legs_start() {
    let r = repo(&[(
        WF,
        "on: push
jobs:
  deploy:
    runs-on: x
    strategy:
      max-parallel: 1
      matrix:
        env: [staging, production]
    steps:
      - run: echo deploying ${{ matrix.env }}; test ${{ matrix.env }} != staging
",
    )]);
    let o = r.host(&[]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.has("deploying staging"), "{o:?}");
    // fail-fast (the default) cancelled production before it started.
    assert!(!o.has("deploying production"), "{o:?}");
    assert!(o.has("deploy (production)  cancelled"), "{o:?}");
    // Not even started: the failing leg's slot goes to it only after the cancellation.
    assert!(
        !o.stdout
            .lines()
            .any(|l| l.contains("deploy (production)") && l.contains("job started")),
        "{o:?}"
    );
}

#[test]
fn legs_with_the_same_name_keep_their_own_logs() {
    let r = repo(&[(
        WF,
        "on: push\njobs:\n  add:\n    name: add ${{ matrix.os }}\n    runs-on: x\n    strategy:\n      matrix:\n        os: [l]\n        v: [1, 2]\n    steps:\n      - run: echo leg-${{ matrix.v }}\n",
    )]);
    let o = r.host(&[]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.has("[add l] ") && o.has("[add l #2] "), "{o:?}");
    let runs = r.path().join(".firebreak/runs");
    let run = std::fs::read_dir(&runs)
        .expect("runs")
        .flatten()
        .next()
        .expect("a run")
        .path();
    let first = std::fs::read_to_string(run.join("add_l.log")).unwrap_or_default();
    let second = std::fs::read_to_string(run.join("add_l__2.log"))
        .or_else(|_| std::fs::read_to_string(run.join("add_l_2.log")))
        .unwrap_or_default();
    assert!(
        first.contains("leg-1") && !first.contains("leg-2"),
        "{first}"
    );
    assert!(
        second.contains("leg-2") && !second.contains("leg-1"),
        "{second}"
    );
}

#[test]
fn secrets_are_masked_everywhere() {
    let r = repo(&[(
        WF,
        r#"on: push
jobs:
  j:
    runs-on: ubuntu-latest
    steps:
      - name: uses ${{ secrets.TOKEN }}
        run: |
          echo "token=${{ secrets.TOKEN }}"
          echo "env=$TOKEN"
          printf '%s\n' "$MULTI"
          echo "::add-mask::dynamic-value-42"
          echo "later dynamic-value-42"
        env:
          TOKEN: ${{ secrets.TOKEN }}
          MULTI: ${{ secrets.MULTI }}
"#,
    )]);
    let secret_file = r.path().join("secrets.env");
    std::fs::write(
        &secret_file,
        "MULTI=\"first-line-secret\\nsecond-line-secret\"\n",
    )
    .expect("write");
    let sf = secret_file.display().to_string();
    let o = r.host(&["-s", "TOKEN=s3cr3t-value", "--secret-file", &sf]);
    assert_eq!(o.code, 0, "{o:?}");
    for s in [
        "s3cr3t-value",
        "first-line-secret",
        "second-line-secret",
        "dynamic-value-42",
    ] {
        assert!(!o.stdout.contains(s), "{s} leaked: {o:?}");
        assert!(!r.logs().contains(s), "{s} leaked into logs");
    }
    assert!(o.has("| token=***"), "{o:?}");
    assert!(o.has("| later ***"), "{o:?}");
    assert!(o.has("uses ***"), "{o:?}");
}

#[test]
fn composite_actions_nested_with_inputs_outputs_and_env() {
    let r = repo(&[
        (
            WF,
            r#"on: push
jobs:
  j:
    runs-on: ubuntu-latest
    env: { JOBV: job }
    steps:
      - uses: actions/checkout@v4
      - id: outer
        uses: ./.github/actions/outer
        with:
          who: mona
        env:
          OUTER_ENV: from-uses
      - run: echo "result ${{ steps.outer.outputs.greeting }} $SET_BY_COMPOSITE"
      - run: echo "scoped '${{ steps.inner.outputs.text }}' '${{ steps.s.outcome }}'"
"#,
        ),
        (
            ".github/actions/outer/action.yml",
            r#"name: outer
inputs:
  who: { required: true }
  punct: { default: "!" }
outputs:
  greeting:
    value: ${{ steps.inner.outputs.text }}${{ inputs.punct }}
runs:
  using: composite
  steps:
    - run: echo "outer sees ${{ inputs.who }} $OUTER_ENV $JOBV ${{ github.action_path != '' }}"
      shell: bash
    - id: inner
      uses: ./.github/actions/inner
      with:
        name: ${{ inputs.who }}
    - run: echo "SET_BY_COMPOSITE=yes" >> "$GITHUB_ENV"
      shell: bash
"#,
        ),
        (
            ".github/actions/inner/action.yml",
            r#"name: inner
inputs:
  name: {}
outputs:
  text:
    value: ${{ steps.s.outputs.t }}
runs:
  using: composite
  steps:
    - id: s
      run: echo "t=hello ${{ inputs.name }}" >> "$GITHUB_OUTPUT"
      shell: sh
    - run: echo "inner action=$GITHUB_ACTION ${{ github.action }} ${{ github.action_status }}"
      shell: sh
    - if: failure()
      run: echo "inner failure branch"
      shell: sh
"#,
        ),
    ]);
    let o = r.host(&[]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.has("| outer sees mona from-uses job true"), "{o:?}");
    assert!(o.has("| result hello mona! yes"), "{o:?}");
    assert!(o.has("| scoped '' ''"), "{o:?}");
    assert!(!o.has("| inner failure branch"), "{o:?}");
    // Nested steps see the calling step's context name, and the composite's status.
    assert!(o.has("| inner action=outer outer success"), "{o:?}");
}

/// The `inputs` of a composite as GitHub's runner builds them: the caller's inputs in its
/// order and spelling, then the defaults of the others in declaration order.
#[test]
fn composite_inputs_are_the_callers_then_the_defaults() {
    let r = repo(&[
        (
            WF,
            r#"on: push
jobs:
  j:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: ./.github/actions/c
        with:
          B: given
"#,
        ),
        (
            ".github/actions/c/action.yml",
            r#"name: c
inputs:
  a: { default: "1" }
  b: {}
  c: { default: "3" }
runs:
  using: composite
  steps:
    - run: echo '${{ toJSON(inputs) }}' | tr -d ' \n'; echo
      shell: bash
"#,
        ),
    ]);
    let o = r.host(&[]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.has(r#"| {"B":"given","a":"1","c":"3"}"#), "{o:?}");
}

const JS_MAIN: &str = r#"
const fs = require('fs');
const name = process.argv[1].split('/').pop();
console.log(`${name} input=${process.env.INPUT_WHO} state=${process.env.STATE_phase || ''}`);
console.log(`${name} hyphenated=${process.env['INPUT_WHO-ELSE']}`);
fs.appendFileSync(process.env.GITHUB_STATE, `phase=${name}\n`);
fs.appendFileSync(process.env.GITHUB_OUTPUT, `ran=${name}\n`);
fs.appendFileSync(process.env.GITHUB_STATE, `multi<<EOS\n${name} l1\n${name} l2\nEOS\n`);
console.log(`multi=${(process.env.STATE_multi || '').replace(/\n/g, '|')}`);
"#;

#[test]
fn local_javascript_actions_main_and_post() {
    let manifest = |n: &str| {
        format!(
            "name: {n}\ninputs:\n  who:\n    default: world\n  who-else:\n    default: nobody\nruns:\n  using: node20\n  pre: pre.js\n  main: main.js\n  post: post.js\n  post-if: always()\n"
        )
    };
    let m1 = manifest("one");
    let m2 = manifest("two");
    let r = repo(&[
        (
            WF,
            r#"on: push
jobs:
  j:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - id: one
        uses: ./actions/one
        with:
          who: mona
          who-else: lisa
      - uses: ./actions/two
      - run: echo "out ${{ steps.one.outputs.ran }}"
      - run: exit 1
"#,
        ),
        ("actions/one/action.yml", &m1),
        ("actions/one/pre.js", JS_MAIN),
        ("actions/one/main.js", JS_MAIN),
        ("actions/one/post.js", JS_MAIN),
        ("actions/two/action.yml", &m2),
        ("actions/two/pre.js", JS_MAIN),
        ("actions/two/main.js", JS_MAIN),
        ("actions/two/post.js", JS_MAIN),
    ]);
    let o = r.host(&[]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(
        o.has("`pre` execution is not supported for local action from './actions/one'"),
        "{o:?}"
    );
    assert!(!o.has("| pre.js"), "{o:?}");
    assert!(o.has("| main.js input=mona state=\n"), "{o:?}");
    assert!(o.has("| main.js input=world"), "{o:?}");
    // Input names keep their hyphens (`INPUT_WHO-ELSE`), as `@actions/core` reads them.
    assert!(o.has("| main.js hyphenated=lisa"), "{o:?}");
    assert!(o.has("| main.js hyphenated=nobody"), "{o:?}");
    assert!(o.has("| out main.js"), "{o:?}");
    // post steps after the failure, in reverse order, with the state of main
    let two = o.stdout.find("▶ Post Run ./actions/two").expect("post two");
    let one = o.stdout.find("▶ Post Run ./actions/one").expect("post one");
    assert!(two < one, "{o:?}");
    assert!(o.has("| post.js input=mona state=main.js"), "{o:?}");
    assert!(o.has("| multi=main.js l1|main.js l2"), "{o:?}");
}

#[test]
fn remote_action_from_the_cache_runs_pre_at_job_start() {
    let r = repo(&[(
        WF,
        r#"on: push
jobs:
  j:
    runs-on: ubuntu-latest
    steps:
      - run: echo "first step"
      - uses: octo/tool/sub@v1
        with:
          who: cache
"#,
    )]);
    let dir = r.path().join(".cache-actions/octo/tool/v1/sub");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(
        dir.join("action.yml"),
        "name: t\ninputs:\n  who: {}\nruns:\n  using: node20\n  pre: pre.js\n  main: main.js\n",
    )
    .expect("w");
    std::fs::write(dir.join("pre.js"), JS_MAIN).expect("w");
    std::fs::write(dir.join("main.js"), JS_MAIN).expect("w");
    let o = r.host(&[]);
    assert_eq!(o.code, 0, "{o:?}");
    let pre = o.stdout.find("| pre.js input=cache").expect("pre ran");
    let first = o.stdout.find("| first step").expect("first step");
    assert!(pre < first, "{o:?}");
    assert!(o.has("| main.js input=cache state=pre.js"), "{o:?}");
}

#[test]
fn missing_actions_fail_the_step_with_a_message() {
    let r = repo(&[(
        WF,
        r#"on: push
jobs:
  local:
    runs-on: ubuntu-latest
    steps:
      - uses: ./no/such/action
      - if: always()
        run: echo "still here"
  remote:
    runs-on: ubuntu-latest
    steps:
      - uses: nobody/nothing@v0
  docker:
    runs-on: ubuntu-latest
    steps:
      - uses: docker://alpine:3
"#,
    )]);
    let o = r.host(&[]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(
        o.has("Can't find 'action.yml', 'action.yaml' or 'Dockerfile' under"),
        "{o:?}"
    );
    assert!(o.has("| still here"), "{o:?}");
    assert!(
        o.has("nobody/nothing@v0 is not in the action cache"),
        "{o:?}"
    );
    assert!(o.has("Docker container actions are not supported"), "{o:?}");
}

#[test]
fn containers_and_services_are_refused_clearly() {
    let r = repo(&[(
        WF,
        r#"on: push
jobs:
  c:
    runs-on: ubuntu-latest
    container: node:20
    steps:
      - run: echo hi
  ok:
    runs-on: macos-latest
    steps:
      - run: echo "ran on linux"
"#,
    )]);
    let o = r.host(&[]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(
        o.has("uses `container:`: firebreak runs jobs without Docker"),
        "{o:?}"
    );
    assert!(
        o.has("runs-on 'macos-latest': firebreak runs this job in the default Linux environment"),
        "{o:?}"
    );
    assert!(o.has("| ran on linux"), "{o:?}");
    // mapping the label silences the warning
    let o = r.host(&["-P", "macos-latest=host", "-j", "ok"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(!o.has("default Linux environment"), "{o:?}");
    // The workflow's header names the mapping; backends are named in any case.
    let o = r.host(&["-P", "macos-latest=Namespace", "-j", "ok"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        o.has("host sandbox; runs-on macos-latest: namespace)"),
        "{o:?}"
    );
    // A misspelt sandbox is refused (the job would otherwise get other isolation than
    // asked); an act container image is not supported, and only a warning.
    let o = r.host(&["-P", "macos-latest=qmeu", "-j", "ok"]);
    assert_eq!(o.code, 2, "{o:?}");
    assert!(
        o.stderr.contains("-P macos-latest=qmeu: unknown sandbox 'qmeu'; expected host, namespace, qemu or firecracker"),
        "{o:?}"
    );
    assert!(!o.has("ran on linux"), "{o:?}");
    let o = r.host(&["-P", "macos-latest=node:16-buster-slim", "-j", "ok"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stderr.contains("images are not supported"), "{o:?}");
}

#[test]
fn an_image_that_is_not_there_is_named_before_any_job_runs() {
    let r = repo(&[(
        WF,
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ran\n",
    )]);
    let o = r.run(&["push", "--sandbox", "qemu", "--image", "no-such-image"]);
    assert_eq!(o.code, 2, "{o:?}");
    assert!(
        o.stderr
            .contains("has a hash starting with no-such-image (asked for with --image")
            && o.stderr
                .contains("`firebreak image list` shows the images there"),
        "{o:?}"
    );
    assert!(!o.has("ran"), "{o:?}");
}

#[test]
fn checkout_fills_the_workspace() {
    let r = repo(&[
        (
            WF,
            r#"on: push
jobs:
  j:
    runs-on: ubuntu-latest
    defaults:
      run:
        working-directory: sub
    steps:
      - run: echo "before $(ls "$GITHUB_WORKSPACE" | wc -l)"
        working-directory: .
      - uses: actions/checkout@v4
      - run: cat data.txt
      - uses: actions/checkout@v4
        with:
          path: second
      - run: test -f "$GITHUB_WORKSPACE/second/sub/data.txt" && test -d "$GITHUB_WORKSPACE/.git" && echo "hash ${{ hashFiles('sub/*.txt') != '' }}"
"#,
        ),
        ("sub/data.txt", "checked-out-content\n"),
    ]);
    std::fs::write(r.path().join("untracked.txt"), "x").expect("w");
    let o = r.host(&[]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.has("| before 0"), "{o:?}");
    assert!(o.has("| checked-out-content"), "{o:?}");
    assert!(o.has("| hash true"), "{o:?}");
}

#[test]
fn checkout_of_another_ref_from_the_repositorys_history() {
    let r = repo(&[
        (
            WF,
            r#"on: push
jobs:
  j:
    runs-on: ubuntu-latest
    steps:
      - id: co
        uses: actions/checkout@v4
        with:
          ref: other
          path: o
      - run: echo "content $(cat o/file.txt) on $(git -C o rev-parse --abbrev-ref HEAD) commit ${{ steps.co.outputs.commit }}"
      - run: echo "untracked in o $(ls o/untracked.txt 2>/dev/null || echo none)"
      - uses: actions/checkout@v4
        with:
          ref: HEAD
          path: h
      - run: echo "same commit keeps $(cat h/file.txt)"
      - uses: actions/checkout@v4
        with:
          ref: no-such-branch
          path: p
"#,
        ),
        ("file.txt", "main-content"),
    ]);
    let git = |args: &[&str]| git(r.path(), args);
    git(&["checkout", "-q", "-b", "other"]);
    std::fs::write(r.path().join("file.txt"), "other-content").expect("write");
    git(&["commit", "-qam", "other"]);
    let other = git(&["rev-parse", "HEAD"]);
    git(&["checkout", "-q", "main"]);
    // An edit not committed: a `ref:` naming the commit the copy is at keeps it.
    std::fs::write(r.path().join("file.txt"), "edited").expect("write");
    // An untracked file is the working tree's, not the other ref's.
    std::fs::write(r.path().join("untracked.txt"), "mine").expect("write");
    let o = r.host(&[]);
    assert!(o.has("| same commit keeps edited"), "{o:?}");
    assert!(o.has("| untracked in o none"), "{o:?}");
    assert!(
        o.has(&format!("| content other-content on other commit {other}")),
        "{o:?}"
    );
    // A ref the history does not have fails the step and says why.
    assert_eq!(o.code, 1, "{o:?}");
    assert!(
        o.has("'no-such-branch' is not a branch, tag or commit"),
        "{o:?}"
    );
}

/// Every file below `dir` (skipping `.firebreak`) with its content.
fn tree(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_name() == ".firebreak" {
                continue;
            }
            if p.is_dir() {
                todo.push(p);
            } else {
                let rel = p.strip_prefix(dir).expect("prefix").display().to_string();
                out.push((rel, std::fs::read_to_string(&p).unwrap_or_default()));
            }
        }
    }
    out.sort();
    out
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(|e| e == "0"))
        .unwrap_or(false)
}

/// The staged trees cached in `.firebreak/stage/`, by name.
fn stages(r: &Repo) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(r.path().join(".firebreak/stage"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    v.sort();
    v
}

const MUTATING_JOBS: &str = r#"on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - run: |
          set -e
          echo changed >> data.txt
          rm keep.txt
          echo new > created.txt
          echo junk > .git/HEAD
          mkdir -p sub && echo s > sub/s.txt
          cat data.txt
  b:
    needs: a
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - run: |
          set -e
          test ! -e created.txt && test -f keep.txt && grep -q refs/heads .git/HEAD
          echo "b sees $(cat data.txt)"
"#;

#[test]
fn checked_out_workspaces_are_private_and_leave_repo_and_stage_untouched() {
    let r = repo(&[
        (WF, MUTATING_JOBS),
        ("data.txt", "original\n"),
        ("keep.txt", "keep\n"),
    ]);
    for sandbox in ["host", "namespace"] {
        let before = tree(r.path());
        let o = r.run(&["push", "--sandbox", sandbox]);
        if sandbox == "namespace" && o.code == 2 {
            eprintln!("skipping namespace: {o:?}");
            continue;
        }
        assert_eq!(o.code, 0, "{sandbox}: {o:?}");
        assert!(o.has("| original\n") || o.has("| original"), "{o:?}");
        assert!(o.has("| changed"), "{o:?}");
        assert!(o.has("| b sees original"), "{o:?}");
        if running_as_root() && std::env::var_os("FIREBREAK_NO_OVERLAY").is_none() {
            assert!(o.has("Mounted (copy-on-write)"), "{o:?}");
        }
        assert_eq!(tree(r.path()), before, "{sandbox}: the repository changed");
        let st = stages(&r);
        assert_eq!(st.len(), 1, "{st:?}");
        let staged = tree(&r.path().join(".firebreak/stage").join(&st[0]));
        assert_eq!(staged, before, "{sandbox}: the staged tree differs");
        // No overlay of this repository's stage is left mounted (other tests' may be live).
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let lower = r.path().join(".firebreak/stage").display().to_string();
        assert!(!mounts.contains(&lower), "{mounts}");
    }
}

#[test]
fn stage_cache_is_reused_until_the_working_tree_changes() {
    use std::os::unix::fs::MetadataExt;
    let wf = "on: push\njobs:\n  j:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/checkout@v4\n      - run: echo \"sees $(cat data.txt)\"\n";
    let r = repo(&[(WF, wf), ("data.txt", "one\n")]);
    let o = r.host(&[]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.has("| sees one"), "{o:?}");
    let first = stages(&r);
    assert_eq!(first.len(), 1, "{first:?}");
    let dir = r.path().join(".firebreak/stage").join(&first[0]);
    let ino = std::fs::metadata(dir.join("data.txt"))
        .expect("staged")
        .ino();

    // Unchanged: the same staged tree, not rebuilt.
    let o = r.host(&[]);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(stages(&r), first);
    assert_eq!(
        std::fs::metadata(dir.join("data.txt"))
            .expect("staged")
            .ino(),
        ino
    );
    assert!(r
        .path()
        .join(".firebreak/tmp")
        .read_dir()
        .map(|mut d| d.next().is_none())
        .unwrap_or(true));

    // A changed file (new inode, as editors write) and an untracked file: a new stage.
    std::fs::remove_file(r.path().join("data.txt")).expect("rm");
    std::fs::write(r.path().join("data.txt"), "two\n").expect("w");
    std::fs::write(r.path().join("extra.txt"), "x").expect("w");
    let o = r.host(&[]);
    assert!(o.has("| sees two"), "{o:?}");
    let second = stages(&r);
    assert_eq!(second.len(), 2, "{second:?}");
    // The file changed in place (same inode, new size and mtime).
    std::fs::write(r.path().join("data.txt"), "three!\n").expect("w");
    let o = r.host(&[]);
    assert!(o.has("| sees three!"), "{o:?}");
    // At most two staged trees are kept.
    let third = stages(&r);
    assert_eq!(third.len(), 2, "{third:?}");
    assert!(!third.contains(&first[0]), "{third:?}");
}

#[test]
fn no_overlay_env_falls_back_to_copying() {
    let r = repo(&[
        (WF, MUTATING_JOBS),
        ("data.txt", "original\n"),
        ("keep.txt", "keep\n"),
    ]);
    let before = tree(r.path());
    let out = Command::new(env!("CARGO_BIN_EXE_firebreak"))
        .args(["run", "push", "--sandbox", "host", "--offline", "-C"])
        .arg(r.path())
        .env("NO_COLOR", "1")
        .env("FIREBREAK_NO_OVERLAY", "1")
        .output()
        .expect("run firebreak");
    let o = Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.has("no overlay (FIREBREAK_NO_OVERLAY is set)"), "{o:?}");
    assert!(o.has("Copied"), "{o:?}");
    assert!(o.has("| b sees original"), "{o:?}");
    assert_eq!(tree(r.path()), before);
}

#[test]
fn workflow_errors_exit_2_with_positions() {
    let r = repo(&[(
        WF,
        "on: push\njobs:\n  j:\n    runs-on: x\n    steps:\n      - run: echo ${{ nope( }}\n",
    )]);
    let o = r.host(&[]);
    assert_eq!(o.code, 2, "{o:?}");
    assert!(o.stdout.contains(".github/workflows/ci.yml:6:"), "{o:?}");
}

#[test]
fn an_invalid_workflow_fails_alone_and_the_others_run() {
    // As on GitHub: the invalid file's run fails, the other workflows run. Files here: one
    // with a bad expression, one that is not UTF-8, one whose push filters contradict each
    // other (GitHub's parser accepts it, GitHub.com fails its run), and a good one.
    let r = repo(&[
        (
            ".github/workflows/bad.yml",
            "on: push\njobs:\n  j:\n    runs-on: x\n    steps:\n      - run: echo ${{ nope( }}\n",
        ),
        (
            ".github/workflows/conflict.yml",
            "on:\n  push:\n    branches: [main]\n    branches-ignore: [x]\njobs:\n  j:\n    runs-on: x\n    steps:\n      - run: echo conflict-ran\n",
        ),
        (
            ".github/workflows/good.yml",
            "on: push\njobs:\n  j:\n    runs-on: x\n    steps:\n      - run: echo good-ran\n",
        ),
        // GitHub.com refuses a job with no steps (its parser accepts it): the whole run fails.
        (
            ".github/workflows/nosteps.yml",
            "on: push\njobs:\n  empty:\n    runs-on: x\n  k:\n    runs-on: x\n    steps:\n      - run: echo nosteps-ran\n",
        ),
    ]);
    std::fs::write(
        r.dir.path().join(".github/workflows/latin1.yml"),
        b"on: push\njobs:\n  j:\n    runs-on: x\n    steps:\n      - run: echo caf\xe9\n",
    )
    .expect("write latin1.yml");
    let o = r.host(&[]);
    assert_eq!(o.code, 2, "{o:?}");
    assert!(o.has("good-ran"), "{o:?}");
    assert!(!o.has("conflict-ran"), "{o:?}");
    assert!(o.stdout.contains(".github/workflows/bad.yml:6:"), "{o:?}");
    assert!(
        o.stdout.contains(
            ".github/workflows/latin1.yml:6:22: the file is not valid UTF-8 (byte 0xe9 here)"
        ),
        "{o:?}"
    );
    assert!(
        o.stderr.contains("not run, the errors above:")
            && o.stderr.contains(".github/workflows/bad.yml")
            && o.stderr.contains(".github/workflows/latin1.yml")
            && o.stderr.contains(".github/workflows/conflict.yml")
            && o.stderr.contains(".github/workflows/nosteps.yml"),
        "{o:?}"
    );
    assert!(!o.has("nosteps-ran"), "{o:?}");
    assert!(
        o.stdout.contains(".github/workflows/nosteps.yml: line 3: No steps defined in `steps` and no workflow called in `uses` for the following jobs: empty"),
        "{o:?}"
    );
    // Only invalid workflows left: nothing runs.
    std::fs::remove_file(r.dir.path().join(".github/workflows/good.yml")).expect("rm good.yml");
    let o = r.host(&[]);
    assert_eq!(o.code, 2, "{o:?}");
    assert!(o.stderr.contains("nothing was run"), "{o:?}");
    assert!(!o.has("conflict-ran"), "{o:?}");
    // Listing shows what would run and still says the run would not be clean.
    let o = r.run(&["--list"]);
    assert_eq!(o.code, 2, "{o:?}");
}

#[test]
fn json_stream_list_and_dry_run() {
    let r = repo(&[(WF, "on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: echo hi\n  b:\n    name: Second job\n    needs: a\n    runs-on: x\n    steps:\n      - name: second\n        run: echo there\n")]);
    let o = r.host(&["--json"]);
    assert_eq!(o.code, 0, "{o:?}");
    let events: Vec<serde_json::Value> = o
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    for k in [
        "workflow_started",
        "job_started",
        "step_started",
        "output",
        "step_finished",
        "job_finished",
        "run_finished",
    ] {
        assert!(kinds.contains(&k), "{k} missing: {kinds:?}");
    }
    assert!(events
        .iter()
        .any(|e| e["event"] == "output" && e["line"] == "there" && e["job"]["id"] == "b"));
    let l = r.host(&["--list"]);
    assert_eq!(l.code, 0);
    assert!(
        l.stdout.contains("[0] a\n") && l.stdout.contains("[1] b \"Second job\""),
        "{l:?}"
    );
    let d = r.host(&["--dry-run"]);
    assert!(d.stdout.contains("· second"), "{d:?}");
}

#[test]
fn default_sandbox_runs_a_job() {
    let r = repo(&[(WF, "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo hi > /tmp/f\n      - run: cat /tmp/f\n")]);
    let o = r.run(&["push"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.has("| hi"), "{o:?}");
}

#[test]
fn ctrl_c_cancels_then_runs_always_steps() {
    let r = repo(&[(
        WF,
        r#"on: push
jobs:
  j:
    runs-on: ubuntu-latest
    steps:
      - run: trap 'echo trapped INT; exit 130' INT; echo started; sleep 30 & wait; echo not-here
      - run: echo "default step"
      - if: always()
        run: echo "always step"
      - if: cancelled()
        run: echo "cancelled step ${{ job.status }}"
  k:
    needs: j
    runs-on: ubuntu-latest
    steps:
      - run: echo "k ran"
  cleanup:
    needs: j
    if: always()
    runs-on: ubuntu-latest
    steps:
      - run: echo "cleanup ran"
"#,
    )]);
    let t0 = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_firebreak"))
        .args(["run", "push", "--sandbox", "host", "-C"])
        .arg(r.path())
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    // wait until the first step runs (its output line, not "job j started"), then interrupt
    let logs = r.path().join(".firebreak/runs/1/j.log");
    while !std::fs::read_to_string(&logs)
        .unwrap_or_default()
        .lines()
        .any(|l| l.trim_end().ends_with("started") && !l.starts_with("job "))
    {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the step never started"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
    let out = child.wait_with_output().expect("wait");
    let o = Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(t0.elapsed() < Duration::from_secs(25), "{o:?}");
    assert_eq!(o.code, 1, "{o:?}");
    assert!(
        !o.has("| not-here") && !o.has("| default step") && !o.has("| k ran"),
        "{o:?}"
    );
    // The step's process heard SIGINT first, as under GitHub's runner: its trap ran.
    assert!(o.has("| trapped INT"), "{o:?}");
    // A job whose `if:` holds after the cancellation (`always()`) still runs.
    assert!(o.has("| cleanup ran"), "{o:?}");
    assert!(o.has("| always step"), "{o:?}");
    assert!(o.has("| cancelled step cancelled"), "{o:?}");
}

#[test]
fn workflow_dispatch_inputs_with_defaults() {
    let r = repo(&[(
        WF,
        r#"on:
  workflow_dispatch:
    inputs:
      name: { default: octo }
      loud: { type: boolean, default: false }
      level: { type: string }
jobs:
  j:
    runs-on: ubuntu-latest
    steps:
      - run: echo "inputs ${{ inputs.name }} ${{ inputs.loud }} ${{ inputs.level }} ${{ github.event.inputs.level }} ${{ inputs.loud == false }}"
      - run: echo 'event inputs ${{ toJSON(github.event.inputs) }}' | tr -d ' \n'; echo
"#,
    )]);
    let o = r.run(&[
        "workflow_dispatch",
        "--sandbox",
        "host",
        "--input",
        "level=3",
    ]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.has("| inputs octo false 3 3 true"), "{o:?}");
    // github.event.inputs holds every input, defaults included, as the payload's strings.
    assert!(
        o.has(r#"| eventinputs{"name":"octo","loud":"false","level":"3"}"#),
        "{o:?}"
    );
}

#[test]
fn shells_and_run_defaults() {
    let r = repo(&[
        (
            WF,
            r#"on: push
defaults:
  run:
    shell: sh {0}
jobs:
  wf:
    runs-on: ubuntu-latest
    steps:
      - run: |
          false
          echo "no -e with the custom shell"
      - shell: bash
        run: echo "bash ${BASH_VERSION:+yes}"
      - shell: python3 {0}
        run: print("python", 1 + 1)
  job:
    runs-on: ubuntu-latest
    defaults:
      run:
        shell: bash
        working-directory: dir
    steps:
      - uses: actions/checkout@v4
      - run: echo "in $(basename "$PWD") ${BASH_VERSION:+bash}"
      - run: echo "in $(basename "$PWD")"
        working-directory: dir/sub
"#,
        ),
        ("dir/sub/keep", ""),
    ]);
    let o = r.host(&[]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.has("| no -e with the custom shell"), "{o:?}");
    assert!(o.has("| bash yes"), "{o:?}");
    assert!(o.has("| python 2"), "{o:?}");
    assert!(o.has("| in dir bash"), "{o:?}");
    assert!(o.has("| in sub"), "{o:?}");
}

#[test]
fn remote_actions_are_fetched_into_the_cache() {
    // a "server" of bare repositories reachable as file://SERVER/owner/repo
    let server = tempfile::tempdir().expect("tempdir");
    let src = repo(&[
        ("action.yml", "name: hi\ninputs:\n  who: {}\nruns:\n  using: composite\n  steps:\n    - run: echo \"fetched action says hi to ${{ inputs.who }}\"\n      shell: sh\n"),
    ]);
    let bare = server.path().join("octo/hello");
    std::fs::create_dir_all(&bare).expect("mkdir");
    let st = Command::new("git")
        .args(["clone", "-q", "--bare"])
        .arg(src.path())
        .arg(&bare)
        .status()
        .expect("git");
    assert!(st.success());
    let st = Command::new("git")
        .arg("-C")
        .arg(&bare)
        .args(["tag", "v1", "main"])
        .status()
        .expect("git");
    assert!(st.success());
    let r = repo(&[(WF, "on: push\njobs:\n  j:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: octo/hello@v1\n        with:\n          who: mona\n")]);
    let cache = r.path().join(".cache-actions");
    let url = format!("file://{}", server.path().display());
    let out = Command::new(env!("CARGO_BIN_EXE_firebreak"))
        .args([
            "run",
            "--sandbox",
            "host",
            "--server-url",
            &url,
            "--action-cache",
        ])
        .arg(&cache)
        .arg("-C")
        .arg(r.path())
        .env("NO_COLOR", "1")
        .output()
        .expect("run");
    let o = Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.has("| fetched action says hi to mona"), "{o:?}");
    assert!(cache.join("octo/hello/v1/action.yml").is_file());
    // now offline, from the cache
    let o = r.run(&["push", "--sandbox", "host"]);
    assert_eq!(o.code, 0, "{o:?}");
}

const CALLED_LEG: &str = r#"on:
  workflow_call:
    inputs:
      v: { type: string }
      s: { type: number, default: 0 }
      fail: { type: boolean, default: false }
    outputs:
      o: { value: "${{ jobs.w.outputs.o }}" }
jobs:
  w:
    runs-on: ubuntu-latest
    outputs: { o: "${{ steps.x.outputs.o }}" }
    steps:
      - id: x
        run: |
          echo "ran ${{ inputs.v }}"
          sleep ${{ inputs.s }}
          echo "o=${{ inputs.v }}" >> "$GITHUB_OUTPUT"
          if ${{ inputs.fail }}; then exit 1; fi
"#;

/// Legs of a matrix that calls a reusable workflow: the output is the last successful leg's
/// that set it (not matrix order), and `max-parallel` with fail-fast holds later legs back.
#[test]
fn matrix_calls_of_a_reusable_workflow() {
    let r = repo(&[
        (
            WF,
            r#"on: push
jobs:
  order:
    strategy:
      matrix:
        include: [{ v: slow, s: 2 }, { v: fast, s: 0 }]
    uses: ./.github/workflows/leg.yml
    with: { v: "${{ matrix.v }}", s: "${{ matrix.s }}" }
  failing:
    strategy:
      fail-fast: false
      matrix:
        include: [{ v: good, s: 0, f: false }, { v: bad, s: 2, f: true }]
    uses: ./.github/workflows/leg.yml
    with: { v: "${{ matrix.v }}", s: "${{ matrix.s }}", fail: "${{ matrix.f }}" }
  one-at-a-time:
    strategy:
      max-parallel: 1
      matrix:
        include: [{ v: first, f: true }, { v: second, f: false }]
    uses: ./.github/workflows/leg.yml
    with: { v: "${{ matrix.v }}", fail: "${{ matrix.f }}" }
  after:
    needs: [order, failing, one-at-a-time]
    if: always()
    runs-on: ubuntu-latest
    steps:
      - run: echo "order=${{ needs.order.outputs.o }} failing=${{ needs.failing.outputs.o }}"
"#,
        ),
        (".github/workflows/leg.yml", CALLED_LEG),
    ]);
    let o = r.host(&["--jobs", "8"]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.has("| order=slow failing=good"), "{o:?}");
    assert!(o.has("| ran first"), "{o:?}");
    assert!(
        !o.has("| ran second"),
        "fail-fast cancelled the waiting leg: {o:?}"
    );
}

/// A reusable workflow's boolean or number input takes only a boolean or a number, also from
/// an expression: `'true'` (a string) fails the call, as on GitHub.
#[test]
fn reusable_inputs_are_type_checked_when_evaluated() {
    let r = repo(&[
        (
            WF,
            r#"on: push
jobs:
  call:
    uses: ./.github/workflows/leg.yml
    with:
      v: x
      fail: "${{ github.event_name == 'push' && 'false' || 'true' }}"
"#,
        ),
        (".github/workflows/leg.yml", CALLED_LEG),
    ]);
    let o = r.host(&[]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.has("input 'fail': Unexpected value 'false'"), "{o:?}");
    assert!(!o.has("| ran x"), "{o:?}");
}

#[test]
fn local_reusable_workflows() {
    let r = repo(&[
        (
            WF,
            r#"on: push
jobs:
  call:
    uses: ./.github/workflows/reuse.yml
    with:
      who: mona
      loud: true
    secrets: inherit
  after:
    needs: call
    runs-on: ubuntu-latest
    steps:
      - run: echo "after got ${{ needs.call.outputs.greeting }} ${{ needs.call.result }}"
"#,
        ),
        (
            ".github/workflows/reuse.yml",
            r#"on:
  workflow_call:
    inputs:
      who: { type: string, required: true }
      loud: { type: boolean, default: false }
      count: { type: number, default: 3 }
    outputs:
      greeting:
        value: ${{ jobs.inner.outputs.g }}
jobs:
  inner:
    runs-on: ubuntu-latest
    outputs:
      g: ${{ steps.s.outputs.g }}
    steps:
      - id: s
        run: |
          echo "inner ${{ inputs.who }} ${{ inputs.loud }} ${{ inputs.count }} ${{ secrets.TOKEN }}"
          echo "g=hello ${{ inputs.who }}" >> "$GITHUB_OUTPUT"
          echo "inner runs for ${{ github.workflow }} ($GITHUB_WORKFLOW)"
"#,
        ),
    ]);
    let o = r.host(&["-s", "TOKEN=reusable-secret"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.has("[call / inner]   | inner mona true 3 ***"), "{o:?}");
    assert!(o.has("| after got hello mona success"), "{o:?}");
    assert!(!o.stdout.contains("reusable-secret"), "{o:?}");
    // The github context belongs to the caller, in a called workflow too.
    assert!(
        o.has("| inner runs for .github/workflows/ci.yml (.github/workflows/ci.yml)"),
        "{o:?}"
    );
}

#[test]
fn reusable_workflow_with_matrix_and_an_unavailable_remote_one() {
    let r = repo(&[
        (
            WF,
            "on: push\njobs:\n  call:\n    strategy:\n      matrix:\n        who: [a, b]\n    uses: ./.github/workflows/reuse.yml\n    with:\n      who: ${{ matrix.who }}\n  remote:\n    uses: octo/repo/.github/workflows/x.yml@v1\n",
        ),
        (
            ".github/workflows/reuse.yml",
            "on:\n  workflow_call:\n    inputs:\n      who: { type: string }\njobs:\n  inner:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo \"inner ${{ inputs.who }}\"\n",
        ),
    ]);
    let o = r.host(&[]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.has("[call (a) / inner]   | inner a"), "{o:?}");
    assert!(o.has("[call (b) / inner]   | inner b"), "{o:?}");
    assert!(
        o.has("firebreak runs local reusable workflows (uses: ./.github/workflows/…) only."),
        "{o:?}"
    );
}

/// A workflow opts every job into network access with `FIREBREAK_NETWORK: true` in its
/// top-level `env`, a job with its own `env`; the rest stay on loopback only.
/// The `netdevs=N` (interfaces other than loopback) a job's step printed.
fn netdevs(stdout: &str, job: &str) -> Option<String> {
    stdout
        .lines()
        .find(|l| l.starts_with(&format!("[{job}]")) && l.contains("| netdevs="))
        .and_then(|l| l.rsplit("netdevs=").next())
        .map(|n| n.trim().to_string())
}

/// Whether a run failed only because the namespace sandbox is unavailable here (said so).
fn namespace_unavailable(o: &Out) -> bool {
    let skip = o.code == 2 && o.stderr.contains("namespace");
    if skip {
        eprintln!("SKIPPED: the namespace sandbox is unavailable here: {o:?}");
    }
    skip
}

#[test]
fn a_workflow_or_job_env_opts_into_the_network() {
    // Interfaces other than loopback, from the job's own view of the network.
    let probe = r#"echo "netdevs=$(awk 'NR > 2 && $1 != "lo:" { n++ } END { print n + 0 }' /proc/net/dev)""#;
    // A job's own `env` overrides the workflow's: `optout` stays on loopback.
    let whole = format!(
        "on: push\nenv:\n  FIREBREAK_NETWORK: true\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: |\n          {probe}\n  optout:\n    runs-on: ubuntu-latest\n    needs: a\n    env:\n      FIREBREAK_NETWORK: false\n    steps:\n      - run: |\n          {probe}\n"
    );
    let per_job = format!(
        "on: push\njobs:\n  asks:\n    runs-on: ubuntu-latest\n    env:\n      FIREBREAK_NETWORK: 'yes'\n    steps:\n      - run: |\n          {probe}\n  plain:\n    runs-on: ubuntu-latest\n    needs: asks\n    env:\n      FIREBREAK_NETWORK: false\n    steps:\n      - run: |\n          {probe}\n"
    );
    let r = repo(&[
        (".github/workflows/whole.yml", whole.as_str()),
        (".github/workflows/per-job.yml", per_job.as_str()),
    ]);
    let wf = |name: &str| {
        r.path()
            .join(".github/workflows")
            .join(name)
            .display()
            .to_string()
    };
    let o = r.run(&["push", "--sandbox", "namespace", "-W", &wf("whole.yml")]);
    if namespace_unavailable(&o) {
        return;
    }
    assert_eq!(o.code, 0, "{o:?}");
    let netdevs = |job: &str| netdevs(&o.stdout, job);
    assert_ne!(
        netdevs("a"),
        Some("0".into()),
        "the workflow asked for the network: {o:?}"
    );
    assert!(netdevs("a").is_some(), "{o:?}");
    assert_eq!(
        netdevs("optout"),
        Some("0".into()),
        "the job opted out: {o:?}"
    );
    let o = r.run(&["push", "--sandbox", "namespace", "-W", &wf("per-job.yml")]);
    assert_eq!(o.code, 0, "{o:?}");
    let lines: Vec<&str> = o
        .stdout
        .lines()
        .filter(|l| l.contains("| netdevs="))
        .collect();
    let asks = lines
        .iter()
        .find(|l| l.contains("asks"))
        .copied()
        .unwrap_or_default();
    let plain = lines
        .iter()
        .find(|l| l.contains("plain"))
        .copied()
        .unwrap_or_default();
    assert!(
        asks.contains("| netdevs=") && !asks.contains("netdevs=0"),
        "{o:?}"
    );
    assert!(plain.contains("| netdevs=0"), "{o:?}");
    // A value that is neither true nor false is named, and the job stays offline.
    let unclear = format!(
        "on: push\njobs:\n  unsure:\n    runs-on: ubuntu-latest\n    env:\n      FIREBREAK_NETWORK: maybe\n    steps:\n      - run: |\n          {probe}\n"
    );
    std::fs::write(r.path().join(".github/workflows/unclear.yml"), unclear).expect("write");
    let o = r.run(&["push", "--sandbox", "namespace", "-W", &wf("unclear.yml")]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        o.has("FIREBREAK_NETWORK: 'maybe' is neither true nor false; the job runs without network"),
        "{o:?}"
    );
    assert_eq!(
        self::netdevs(&o.stdout, "unsure"),
        Some("0".into()),
        "{o:?}"
    );
}

#[test]
fn a_repository_opts_its_jobs_into_the_network_in_its_settings_file() {
    let probe = r#"echo "netdevs=$(awk 'NR > 2 && $1 != "lo:" { n++ } END { print n + 0 }' /proc/net/dev)""#;
    let wf = format!(
        "on: push\njobs:\n  quiet:\n    runs-on: ubuntu-latest\n    steps:\n      - run: |\n          {probe}\n  optout:\n    runs-on: ubuntu-latest\n    needs: quiet\n    env:\n      FIREBREAK_NETWORK: false\n    steps:\n      - run: |\n          {probe}\n"
    );
    let r = repo(&[
        (WF, wf.as_str()),
        (".github/firebreak.yml", "network: true\n"),
    ]);
    let o = r.run(&["push", "--sandbox", "namespace"]);
    if namespace_unavailable(&o) {
        return;
    }
    assert_eq!(o.code, 0, "{o:?}");
    let netdevs = |job: &str| netdevs(&o.stdout, job);
    assert!(
        netdevs("quiet").is_some_and(|n| n != "0"),
        "the repository opted in: {o:?}"
    );
    assert_eq!(
        netdevs("optout"),
        Some("0".into()),
        "the job opted out: {o:?}"
    );
    // A mistake in the file stops the run before anything runs, naming the setting.
    std::fs::write(r.path().join(".github/firebreak.yml"), "netwrk: true\n").expect("write");
    let o = r.run(&["push", "--sandbox", "namespace"]);
    assert_eq!(o.code, 2, "{o:?}");
    assert!(
        o.stderr
            .contains(".github/firebreak.yml: unknown setting `netwrk`"),
        "{o:?}"
    );
    assert!(!o.has("netdevs="), "{o:?}");
}

/// A size label out of range is named in the job log as ignored, not taken for an unknown
/// machine label.
#[test]
fn sizes_out_of_range_are_named_in_the_job_log() {
    let r = repo(&[(
        WF,
        "on: push\njobs:\n  a:\n    runs-on: [ubuntu-latest, 0cpu, 2048gb]\n    steps:\n      - run: echo hi\n",
    )]);
    let o = r.host(&[]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        o.has("runs-on '0cpu': 0 CPUs (whole CPUs, 1 to 256 allowed): out of range, ignored"),
        "{o:?}"
    );
    assert!(o.has("runs-on '2048gb': 2048gb of memory"), "{o:?}");
    assert!(!o.has("default Linux environment"), "{o:?}");
}

#[test]
fn jailer_settings_are_checked_before_any_job_runs() {
    let r = repo(&[(
        WF,
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ran-a-step\n",
    )]);
    let jailed_as = |user: &str| {
        r.run(&[
            "--sandbox",
            "firecracker",
            "--jailer",
            "/usr/bin/true",
            "--jailer-user",
            user,
        ])
    };
    // The jailer exists to drop root: running Firecracker as root through it is refused.
    let o = jailed_as("0:0");
    assert_eq!(o.code, 2, "{o:?}");
    assert!(o.stderr.contains("root defeats the jailer"), "{o:?}");
    assert!(!o.has("ran-a-step"), "{o:?}");
    let o = jailed_as("no-such-user-firebreak");
    assert_eq!(o.code, 2, "{o:?}");
    assert!(o.stderr.contains("no such user here"), "{o:?}");
    // --jailer without a user is a usage error that names the missing option.
    let o = r.run(&["--sandbox", "firecracker", "--jailer", "/usr/bin/true"]);
    assert_eq!(o.code, 2, "{o:?}");
    assert!(o.stderr.contains("--jailer-user"), "{o:?}");
    // A network namespace setting that is neither own, host nor a path says what it takes.
    let o = r.run(&[
        "--sandbox",
        "firecracker",
        "--jailer",
        "/usr/bin/true",
        "--jailer-user",
        "65534:65534",
        "--jailer-netns",
        "mine",
    ]);
    assert_eq!(o.code, 2, "{o:?}");
    assert!(
        o.stderr.contains("expected own, host or the absolute path"),
        "{o:?}"
    );
    assert!(!o.has("ran-a-step"), "{o:?}");
}

#[test]
fn vm_options_that_contradict_or_cannot_hold_a_vm_are_refused() {
    let r = repo(&[(
        WF,
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ran-a-step\n",
    )]);
    // A pool holds VMs restored from snapshots; cold starts take none: the pair is a
    // contradiction, refused before any job runs, for either microVM backend.
    for sandbox in ["qemu", "firecracker"] {
        let o = r.run(&[
            "--sandbox",
            sandbox,
            "--vm-start",
            "cold",
            "--warm-pool",
            "1",
        ]);
        assert_eq!(o.code, 2, "{o:?}");
        assert!(o.stderr.contains("--vm-start cold boots every VM"), "{o:?}");
        assert!(!o.has("ran-a-step"), "{o:?}");
    }
    // Without a microVM sandbox neither option means anything, and nothing is refused.
    let o = r.run(&[
        "--sandbox",
        "host",
        "--vm-start",
        "cold",
        "--warm-pool",
        "1",
    ]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.has("ran-a-step"), "{o:?}");
    // A budget no VM fits in, and a pool beyond any host, are usage errors.
    for (opt, value, range) in [
        ("--vm-memory-budget", "1", "192.."),
        ("--warm-pool", "100000", "0..=256"),
    ] {
        let o = r.run(&["--sandbox", "qemu", opt, value]);
        assert_eq!(o.code, 2, "{o:?}");
        assert!(o.stderr.contains(opt) && o.stderr.contains(range), "{o:?}");
        assert!(!o.has("ran-a-step"), "{o:?}");
    }
    // An unknown start mode lists the ones there are.
    let o = r.run(&["--sandbox", "qemu", "--vm-start", "warm"]);
    assert_eq!(o.code, 2, "{o:?}");
    assert!(
        o.stderr.contains("snapshot") && o.stderr.contains("cold"),
        "{o:?}"
    );
}

#[test]
fn list_and_dry_run_show_the_selection_a_run_would_make() {
    let r = repo(&[(
        WF,
        "on: push\njobs:\n  a:\n    runs-on: x\n    strategy:\n      matrix:\n        x: [1, 2]\n        y: [p, q]\n    steps:\n      - run: echo\n  b:\n    needs: a\n    runs-on: x\n    steps:\n      - run: echo\n  c:\n    runs-on: x\n    steps:\n      - run: echo\n",
    )]);
    let o = r.run(&["--list", "-j", "nope"]);
    assert_eq!(o.code, 2, "{o:?}");
    assert!(o.stderr.contains("no job nope"), "{o:?}");
    // -j b: b and the job it needs, not c.
    let o = r.run(&["--list", "-j", "b"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.has("[0] a") && o.has("[1] b"), "{o:?}");
    assert!(!o.has("] c"), "{o:?}");
    let o = r.run(&["--dry-run", "-j", "a", "--matrix", "x:1"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.has("a (1, p)") && o.has("a (1, q)"), "{o:?}");
    assert!(!o.has("a (2, p)"), "{o:?}");
    // --json: the plan as JSON, nothing else on stdout.
    let o = r.run(&["--list", "--json", "-j", "c"]);
    assert_eq!(o.code, 0, "{o:?}");
    let v: serde_json::Value = serde_json::from_str(&o.stdout).expect("one JSON document");
    assert_eq!(v["workflows"][0]["jobs"].as_array().map(Vec::len), Some(1));
    // The `if:`s the event decides, as `firebreak plan` shows them.
    let r = repo(&[(
        WF,
        "on: push\njobs:\n  a:\n    if: github.event_name == 'pull_request'\n    runs-on: x\n    steps:\n      - run: echo\n  b:\n    needs: a\n    runs-on: x\n    steps:\n      - run: echo\n  c:\n    runs-on: x\n    steps:\n      - run: echo\n",
    )]);
    let o = r.run(&["--list"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        o.has("[0] a  → skipped (if: success() && (github.event_name == 'pull_request'))")
            && o.has("[1] b  needs: a  → skipped (if: success())"),
        "{o:?}"
    );
    assert!(o.stdout.lines().any(|l| l == "  [0] c"), "{o:?}");
}

#[test]
fn json_output_stays_json_when_the_workflow_is_invalid() {
    let r = repo(&[(
        WF,
        "on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: echo\n        bogus: 1\n",
    )]);
    let o = r.run(&["--json", "--sandbox", "host"]);
    assert_eq!(o.code, 2, "{o:?}");
    let lines: Vec<serde_json::Value> = o
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    assert_eq!(lines[0]["event"], "workflow_error", "{o:?}");
    assert_eq!(lines[0]["line"], 7);
    assert_eq!(lines[0]["message"], "Unexpected value 'bogus'");
}

#[test]
fn workflow_warnings_are_reported_and_the_run_goes_on() {
    // GitHub's parser accepts `tags` beside `tags-ignore`; GitHub.com fails the run of the
    // event they filter (here `pull_request`), not the runs of other events.
    let r = repo(&[(
        WF,
        "on:\n  pull_request:\n    branches: [v1]\n    branches-ignore: [v0]\n  push:\n    branches: [main, master]\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ran-a-step\n",
    )]);
    let o = r.run(&["--sandbox", "host"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.has("ran-a-step"), "{o:?}");
    assert!(
        o.stderr
            .contains(":4:5: warning: `branches` and `branches-ignore` both filter `pull_request`"),
        "{o:?}"
    );
    let o = r.run(&["pull_request", "--sandbox", "host"]);
    assert_eq!(o.code, 2, "{o:?}");
    assert!(!o.has("ran-a-step"), "{o:?}");
    assert!(
        o.has("`branches` and `branches-ignore` both filter `pull_request`: GitHub fails this workflow's run"),
        "{o:?}"
    );
    let o = r.run(&["--json", "--sandbox", "host"]);
    assert_eq!(o.code, 0, "{o:?}");
    let warning = o
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "workflow_warning")
        .unwrap_or_else(|| panic!("no workflow_warning record: {o:?}"));
    assert_eq!(
        (warning["line"].as_u64(), warning["col"].as_u64()),
        (Some(4), Some(5))
    );
}

#[test]
fn closing_stdout_early_stops_the_listing_quietly() {
    // ~30 workflows × 256 legs: far more than a pipe holds.
    let legs = (0..128)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let files: Vec<(String, String)> = (0..30)
        .map(|i| {
            (
                format!(".github/workflows/w{i}.yml"),
                format!("on: push\njobs:\n  a:\n    runs-on: x\n    strategy:\n      matrix:\n        x: [{legs}]\n        y: [1, 2]\n    steps:\n      - run: echo\n"),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    let r = repo(&refs);
    let mut child = Command::new(env!("CARGO_BIN_EXE_firebreak"))
        .args(["run", "--list", "-C"])
        .arg(r.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    // Read one line, then hang up, as `| head -1` does.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut first = [0u8; 16];
    std::io::Read::read_exact(&mut stdout, &mut first).expect("read");
    drop(stdout);
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn job_lines_reach_a_terminal_when_stderr_is_redirected() {
    let r = repo(&[(
        WF,
        "on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: echo from-the-step\n",
    )]);
    let cmd = format!(
        "{} run push --sandbox host -C {} 2>/dev/null",
        env!("CARGO_BIN_EXE_firebreak"),
        r.path().display()
    );
    let Ok(out) = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
    else {
        eprintln!("SKIPPED: `script` (bsdutils) is not installed");
        return;
    };
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("job started"), "{shown}");
    assert!(shown.contains("from-the-step"), "{shown}");
}

#[test]
fn dispatch_inputs_are_checked_as_github_checks_them() {
    let r = repo(&[(
        WF,
        "on:\n  workflow_dispatch:\n    inputs:\n      env:\n        type: choice\n        options: [dev, prod]\n        required: true\n      must:\n        required: true\n      flag:\n        type: boolean\n        default: false\n      num:\n        type: number\njobs:\n  j:\n    runs-on: x\n    steps:\n      - run: echo ran ${{ inputs.env }}\n",
    )]);
    let o = r.run(&[
        "workflow_dispatch",
        "--sandbox",
        "host",
        "--input",
        "env=staging",
        "--input",
        "bogus=1",
        "--input",
        "flag=yes",
        "--input",
        "num=abc",
    ]);
    assert_eq!(o.code, 2, "{o:?}");
    for e in [
        "Unexpected inputs provided: [\"bogus\"]",
        "Required input 'must' not provided",
        "Provided value 'staging' for input 'env' not in the list of allowed values (dev, prod)",
        "Provided value 'yes' for input 'flag' is not a boolean",
        "Provided value 'abc' for input 'num' is not a number",
    ] {
        assert!(o.has(e), "{e}: {o:?}");
    }
    assert!(!o.has("ran"), "{o:?}");
    assert!(o.stderr.contains("nothing was run"), "{o:?}");
    let o = r.run(&[
        "workflow_dispatch",
        "--sandbox",
        "host",
        "--input",
        "env=prod",
        "--input",
        "must=x",
    ]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.has("| ran prod"), "{o:?}");
}

#[test]
fn a_refused_dispatch_leaves_out_that_workflow_only() {
    let r = repo(&[
        (
            ".github/workflows/a.yml",
            "on:\n  workflow_dispatch:\n    inputs:\n      must:\n        required: true\njobs:\n  j:\n    runs-on: x\n    steps:\n      - run: echo ran-a\n",
        ),
        (
            ".github/workflows/b.yml",
            "on: workflow_dispatch\njobs:\n  j:\n    runs-on: x\n    steps:\n      - run: echo ran-b\n",
        ),
    ]);
    let o = r.run(&["workflow_dispatch", "--sandbox", "host"]);
    assert_eq!(o.code, 2, "{o:?}");
    assert!(
        o.has(".github/workflows/a.yml: GitHub would refuse this dispatch: Required input 'must' not provided"),
        "{o:?}"
    );
    assert!(o.has("| ran-b"), "{o:?}");
    assert!(!o.has("ran-a"), "{o:?}");
    assert!(o.stderr.contains("not run, the errors above:"), "{o:?}");
    // More inputs than GitHub.com lets a dispatch declare: refused however it is given.
    let many: String = (0..26)
        .map(|i| format!("      i{i}:\n        default: x\n"))
        .collect();
    std::fs::write(
        r.dir.path().join(".github/workflows/a.yml"),
        format!("on:\n  workflow_dispatch:\n    inputs:\n{many}jobs:\n  j:\n    runs-on: x\n    steps:\n      - run: echo ran-a\n"),
    )
    .expect("write");
    let o = r.run(&["workflow_dispatch", "--sandbox", "host"]);
    assert_eq!(o.code, 2, "{o:?}");
    assert!(
        o.has("a.yml: GitHub would refuse this dispatch: you may only define up to 25 `inputs` for a `workflow_dispatch` event"),
        "{o:?}"
    );
    assert!(!o.has("ran-a"), "{o:?}");
}

#[test]
fn a_dispatch_event_files_inputs_are_the_runs_and_input_overrides_them() {
    let r = repo(&[(
        WF,
        "on:\n  workflow_dispatch:\n    inputs:\n      name:\n        default: world\n      flag:\n        type: boolean\n        default: true\njobs:\n  j:\n    runs-on: x\n    steps:\n      - run: echo \"inputs=${{ inputs.name }} event=${{ github.event.inputs.name }} flag=${{ inputs.flag }}\"\n",
    )]);
    let ev = r.dir.path().join("ev.json");
    let ev = ev.to_str().expect("utf-8 path");
    let bad = r.dir.path().join("bad.json");
    let bad = bad.to_str().expect("utf-8 path");
    std::fs::write(ev, r#"{"inputs":{"name":"payload","flag":"false"}}"#).expect("write ev.json");
    let o = r.run(&["workflow_dispatch", "--sandbox", "host", "--event-file", ev]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.has("| inputs=payload event=payload flag=false"), "{o:?}");
    let o = r.run(&[
        "workflow_dispatch",
        "--sandbox",
        "host",
        "--event-file",
        ev,
        "--input",
        "NAME=cli",
    ]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.has("| inputs=cli event=cli flag=false"), "{o:?}");
    // An event file's inputs are checked as --input's are.
    std::fs::write(bad, r#"{"inputs":{"flag":"maybe"}}"#).expect("write bad.json");
    let o = r.run(&[
        "workflow_dispatch",
        "--sandbox",
        "host",
        "--event-file",
        bad,
    ]);
    assert_eq!(o.code, 2, "{o:?}");
    assert!(
        o.has("Provided value 'maybe' for input 'flag' is not a boolean"),
        "{o:?}"
    );
    // `--list --json` prints the plan as `firebreak plan --format json` does.
    let o = r.run(&["workflow_dispatch", "--list", "--json", "--event-file", ev]);
    assert_eq!(o.code, 0, "{o:?}");
    let v: serde_json::Value = serde_json::from_str(&o.stdout).expect("one JSON document");
    assert_eq!(v["workflows"][0]["jobs"][0]["if_result"], "runs", "{o:?}");
    assert!(v["invalid"].is_array(), "{o:?}");
}

#[test]
fn inputs_for_one_of_several_dispatched_workflows_are_not_unexpected_in_the_others() {
    let r = repo(&[
        (
            WF,
            "on:\n  workflow_dispatch:\n    inputs:\n      env:\n        required: true\njobs:\n  deploy:\n    runs-on: x\n    steps:\n      - run: echo deploy ${{ inputs.env }}\n",
        ),
        (
            ".github/workflows/lint.yml",
            "on: [push, workflow_dispatch]\njobs:\n  lint:\n    runs-on: x\n    steps:\n      - run: echo lint ran\n",
        ),
    ]);
    let o = r.run(&[
        "workflow_dispatch",
        "--sandbox",
        "host",
        "--input",
        "env=staging",
    ]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.has("| deploy staging") && o.has("| lint ran"), "{o:?}");
}

#[test]
fn a_scheduled_run_knows_its_cron_and_runs_on_the_default_branch() {
    let r = repo(&[(
        WF,
        "on:\n  schedule:\n    - cron: '30 5 * * 1'\n    - cron: '0 0 * * *'\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: echo \"[${{ github.event.schedule }}] ${{ github.ref }}\"\n      - if: github.event.schedule == '30 5 * * 1'\n        run: echo weekly\n",
    )]);
    git(r.path(), &["checkout", "-q", "-b", "feature"]);
    let o = r.run(&["schedule", "--sandbox", "host"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.has("| [30 5 * * 1] refs/heads/main"), "{o:?}");
    assert!(o.has("| weekly"), "{o:?}");
}

#[test]
fn steps_context_working_directory_and_empty_outputs_as_on_github() {
    let r = repo(&[(
        WF,
        r#"on: push
jobs:
  a:
    runs-on: ubuntu-latest
    outputs:
      empty: ${{ steps.s.outputs.nothing }}
      full: ${{ steps.s.outputs.v }}
    steps:
      - run: echo unnamed
      - id: s
        run: echo "v=1" >> "$GITHUB_OUTPUT"
      - run: echo "steps ${{ join(toJSON(steps), '') }}" | tr -d ' \n'; echo
  b:
    needs: a
    runs-on: ubuntu-latest
    steps:
      - run: echo "needs ${{ toJSON(needs.a.outputs) }}" | tr -d ' \n'; echo
      - working-directory: does/not/exist
        run: echo never
"#,
    )]);
    let o = r.host(&[]);
    assert_eq!(o.code, 1, "{o:?}");
    // Steps without an id are not in the `steps` context.
    // (The shell ate the JSON's quotes.)
    assert!(
        o.has("| steps{s:{outputs:{v:1},outcome:success,conclusion:success}}"),
        "{o:?}"
    );
    assert!(!o.has("__run"), "{o:?}");
    // Empty job outputs are dropped.
    assert!(o.has("| needs{full:1}"), "{o:?}");
    // A missing working directory is named, not blamed on the shell.
    assert!(
        o.has("An error occurred trying to start process 'bash' with working directory"),
        "{o:?}"
    );
    assert!(o.has("does/not/exist'. No such file or directory"), "{o:?}");
}

#[test]
fn javascript_actions_run_on_the_runners_node_not_one_a_step_put_first() {
    let r = repo(&[
        (
            WF,
            r#"on: push
jobs:
  j:
    runs-on: ubuntu-latest
    steps:
      - run: |
          mkdir -p "$RUNNER_TEMP/fake"
          printf '#!/bin/sh\necho project-node\nexit 1\n' > "$RUNNER_TEMP/fake/node"
          chmod +x "$RUNNER_TEMP/fake/node"
          echo "$RUNNER_TEMP/fake" >> "$GITHUB_PATH"
      - uses: actions/checkout@v4
      - uses: ./act
        with:
          old: x
      - run: node --version 2>&1 | head -1
"#,
        ),
        (
            "act/action.yml",
            "name: a\ninputs:\n  old:\n    deprecationMessage: use new instead\nruns:\n  using: node20\n  main: main.js\n",
        ),
        ("act/main.js", "console.log('the action ran on ' + process.version);\n"),
    ]);
    let o = r.host(&[]);
    assert!(o.has("| the action ran on v"), "{o:?}");
    assert!(
        o.has("Input 'old' has been deprecated with message: use new instead"),
        "{o:?}"
    );
    // The job's own steps still see the node they put first.
    assert!(o.has("| project-node"), "{o:?}");
}

#[test]
fn paths_filters_see_non_ascii_file_names_as_they_are() {
    let r = repo(&[
        (
            WF,
            "on:\n  push:\n    paths-ignore: ['**.md']\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: echo built\n",
        ),
        ("src/main.rs", "fn main() {}\n"),
    ]);
    // git quotes such names by default ("\303\251t\303\251.md"), which no pattern matches.
    std::fs::write(r.path().join("été.md"), "docs\n").expect("write");
    git(r.path(), &["add", "-A"]);
    git(r.path(), &["commit", "-qm", "docs"]);
    let o = r.host(&[]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(!o.has("built"), "{o:?}");
    assert!(o.stderr.contains("(changed: été.md)"), "{o:?}");
}

#[test]
fn paths_filters_decide_whether_a_push_runs_as_plan_says() {
    let r = repo(&[
        (
            WF,
            "on:\n  push:\n    paths-ignore: ['**.md']\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: echo built\n",
        ),
        ("src/main.rs", "fn main() {}\n"),
    ]);
    // A docs-only commit: GitHub starts nothing, and neither does the run.
    std::fs::write(r.path().join("README.md"), "docs\n").expect("write");
    git(r.path(), &["add", "-A"]);
    git(r.path(), &["commit", "-qm", "docs"]);
    let o = r.host(&[]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(!o.has("built"), "{o:?}");
    assert!(
        o.stderr
            .contains("no changed file passes the push paths filters (changed: README.md)"),
        "{o:?}"
    );
    // Naming other changed files runs it.
    let o = r.host(&["--changed-file", "src/main.rs"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.has("| built"), "{o:?}");
    // An event file is judged by its own push: `before..after` when the repository has
    // both commits, else its commits' file lists.
    let head = git(r.path(), &["rev-parse", "HEAD"]);
    let first = git(r.path(), &["rev-parse", "HEAD~1"]);
    let ev = r.path().join("ev.json");
    let ev_path = ev.to_str().expect("utf-8 path");
    std::fs::write(
        &ev,
        format!(r#"{{"ref":"refs/heads/main","before":"{first}","after":"{head}"}}"#),
    )
    .expect("write");
    let o = r.host(&["--event-file", ev_path]);
    assert!(!o.has("built"), "the docs commit alone: {o:?}");
    std::fs::write(
        &ev,
        r#"{"ref":"refs/heads/main","before":"0000000000000000000000000000000000000000","after":"1111111111111111111111111111111111111111","commits":[{"added":[],"removed":[],"modified":["src/main.rs"]}]}"#,
    )
    .expect("write");
    let o = r.host(&["--event-file", ev_path]);
    assert!(
        o.has("| built"),
        "the payload's commits name src/main.rs: {o:?}"
    );
    // A new branch, as an Actions payload carries it (commit ids, no file lists): the diff
    // from the parent of the deepest commit pushed to `after`.
    let new_branch = |commits: &[&str]| {
        let ids: Vec<String> = commits
            .iter()
            .map(|c| format!(r#"{{"id":"{c}"}}"#))
            .collect();
        format!(
            r#"{{"ref":"refs/heads/feat","before":"0000000000000000000000000000000000000000","after":"{head}","created":true,"commits":[{}]}}"#,
            ids.join(",")
        )
    };
    std::fs::write(&ev, new_branch(&[&head])).expect("write");
    let o = r.host(&["--event-file", ev_path]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(!o.has("built"), "only the docs commit is new: {o:?}");
    assert!(o.stderr.contains("(changed: README.md)"), "{o:?}");
    // From the root commit on, every file is new.
    std::fs::write(&ev, new_branch(&[&first, &head])).expect("write");
    let o = r.host(&["--event-file", ev_path]);
    assert!(o.has("| built"), "src/main.rs is among the new: {o:?}");
}

/// A run killed outright (SIGKILL) leaves its scratch folder behind; the next run removes
/// it, but not the folder of a run still going (its lock is held).
#[test]
fn a_killed_runs_scratch_folder_goes_with_the_next_run_and_a_live_ones_stays() {
    let r = repo(&[(
        ".github/workflows/ci.yml",
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ok\n",
    )]);
    let tmp = r.path().join(".firebreak/tmp");
    let dead = tmp.join("run-999999999-0000abcd-0");
    let live = tmp.join("run-999999998-0000abcd-0");
    for d in [&dead, &live] {
        std::fs::create_dir_all(d.join("source")).expect("mkdir");
        std::fs::write(d.join(".owner"), "999999999\n").expect("owner");
    }
    // `--close`: the lock stays with flock(1) itself while it waits for `sleep`.
    let mut holder = Command::new("flock")
        .arg("--close")
        .arg(live.join(".owner"))
        .args(["sleep", "60"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("flock(1)");
    // flock(1) takes the lock soon after it starts; wait for it.
    let t = std::time::Instant::now();
    loop {
        let probe = std::fs::File::open(live.join(".owner")).expect("open");
        match probe.try_lock() {
            Ok(()) => {
                drop(probe);
                assert!(
                    t.elapsed() < std::time::Duration::from_secs(10),
                    "flock never took the lock"
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(_) => break,
        }
    }
    let o = r.host(&[]);
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(o.code, 0, "{o:?}");
    assert!(!dead.exists(), "the killed run's folder is still there");
    assert!(live.exists(), "a live run's folder was removed");
    // This run's own folder went when it ended.
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .expect("tmp")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("run-999999998-0000abcd-0")]
    );
}

#[test]
fn a_job_name_that_evaluates_to_nothing_falls_back_to_the_job_id() {
    let r = repo(&[(
        WF,
        "on: push\njobs:\n  named:\n    name: ${{ github.event.nothing }}\n    runs-on: x\n    steps:\n      - run: echo step-of-named\n",
    )]);
    let o = r.host(&[]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.has("[named]   | step-of-named"), "{o:?}");
}

/// A job's name may read its leg's `strategy`, as GitHub evaluates names with it.
#[test]
fn a_job_name_reads_its_legs_strategy() {
    let r = repo(&[(
        WF,
        "on: push\njobs:\n  legs:\n    name: leg ${{ strategy.job-index }} of ${{ strategy.job-total }}\n    runs-on: x\n    strategy:\n      matrix: {v: [1, 2]}\n    steps:\n      - run: echo v=${{ matrix.v }}\n",
    )]);
    let o = r.host(&[]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        o.has("[leg 0 of 2]   | v=1") && o.has("[leg 1 of 2]   | v=2"),
        "{o:?}"
    );
}

#[test]
fn a_deployment_runs_on_the_ref_it_deploys() {
    let r = repo(&[(
        WF,
        "on: deployment\njobs:\n  d:\n    runs-on: x\n    steps:\n      - run: echo \"ref=[$GITHUB_REF] type=[${{ github.ref_type }}] env=${{ github.event.deployment.environment }}\"\n",
    )]);
    git(r.path(), &["tag", "v1.0"]);
    let head = git(r.path(), &["rev-parse", "HEAD"]);
    let ev = r.path().join("ev.json");
    let ev_path = ev.to_str().expect("utf-8 path");
    let deploy = |ref_: &str| {
        std::fs::write(
            &ev,
            format!(
                r#"{{"deployment":{{"ref":"{ref_}","sha":"{head}","environment":"prod"}},"repository":{{"default_branch":"main"}}}}"#
            ),
        )
        .expect("write");
        r.run(&["deployment", "--sandbox", "host", "--event-file", ev_path])
    };
    // A tag: its full ref, not refs/heads/<tag>.
    let o = deploy("v1.0");
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.has("ref=[refs/tags/v1.0] type=[tag] env=prod"), "{o:?}");
    // A branch.
    let o = deploy("main");
    assert!(o.has("ref=[refs/heads/main] type=[branch]"), "{o:?}");
    // A commit: no ref at all.
    let o = deploy(&head);
    assert!(o.has("ref=[] type=[]"), "{o:?}");
}

#[test]
fn number_literals_reach_steps_as_the_runner_writes_them() {
    // GitHub turns a number where a string is wanted into .NET's G15 text: `1.10` is `1.1`,
    // 16 significant digits and more go to exponent form.
    let r = repo(&[(
        WF,
        "on: push\nenv:\n  A: 1.10\n  B: 1234567890123456\n  C: 0x10\n  D: 123456789012345\n  E: 1e3\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: echo \"[$A] [$B] [$C] [$D] [$E]\"\n",
    )]);
    let o = r.host(&[]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        o.has("[1.1] [1.23456789012346E+15] [16] [123456789012345] [1000]"),
        "{o:?}"
    );
}

#[test]
fn self_repository_references_run_like_local_ones() {
    // `$/path` names the workflow's own repository: a called workflow as `./` does, and an
    // action taken from the repository at the run's commit, without a checkout (as GitHub
    // downloads it).
    let r = repo(&[
        (
            WF,
            "on: push\njobs:\n  call:\n    uses: $/.github/workflows/reuse.yml\n    with:\n      who: mona\n  act:\n    runs-on: x\n    steps:\n      - uses: $/.github/actions/hi\n        with:\n          who: lisa\n",
        ),
        (
            ".github/workflows/reuse.yml",
            "on:\n  workflow_call:\n    inputs:\n      who: { type: string }\njobs:\n  inner:\n    runs-on: x\n    steps:\n      - run: echo \"called for ${{ inputs.who }}\"\n",
        ),
        (
            ".github/actions/hi/action.yml",
            "name: hi\ninputs:\n  who: {}\nruns:\n  using: composite\n  steps:\n    - run: echo \"action for ${{ inputs.who }}\"\n      shell: bash\n",
        ),
    ]);
    let o = r.host(&[]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.has("| called for mona"), "{o:?}");
    assert!(o.has("| action for lisa"), "{o:?}");
}

#[test]
fn strategy_settings_are_evaluated_and_type_checked_as_on_github() {
    // A strategy that is one expression keeps its fail-fast and max-parallel; a value of
    // the wrong type from an expression fails the job; without combinations max-parallel is 1.
    let r = repo(&[(
        WF,
        r#"on: push
jobs:
  whole:
    strategy: ${{ fromJSON('{"fail-fast":false,"max-parallel":1,"matrix":{"os":["a","b"]}}') }}
    runs-on: x
    steps:
      - run: echo "whole ${{ matrix.os }} ff=${{ strategy.fail-fast }} mp=${{ strategy.max-parallel }}"
      - if: matrix.os == 'a'
        run: exit 1
  typed:
    strategy:
      fail-fast: ${{ github.event_name }}
      matrix:
        os: [a]
    runs-on: x
    steps:
      - run: echo typed ran
  single:
    strategy:
      max-parallel: 3
    runs-on: x
    steps:
      - run: echo "single mp=${{ strategy.max-parallel }} total=${{ strategy.job-total }}"
"#,
    )]);
    let o = r.host(&[]);
    assert_eq!(o.code, 1, "{o:?}");
    // fail-fast false: leg b runs although leg a failed.
    assert!(o.has("whole a ff=false mp=1"), "{o:?}");
    assert!(o.has("whole b ff=false mp=1"), "{o:?}");
    assert!(
        o.has("Error when evaluating 'strategy' for job 'typed'. Unexpected value 'push'"),
        "{o:?}"
    );
    assert!(!o.has("typed ran"), "{o:?}");
    assert!(o.has("single mp=1 total=1"), "{o:?}");
}

#[test]
fn concurrency_groups_hold_one_running_and_one_waiting_job() {
    // GitHub's rules within a run: one job of a group runs, one waits; a newer waiting job
    // replaces the older, which is cancelled; with cancel-in-progress the running one is
    // cancelled instead. Groups are evaluated per leg.
    let r = repo(&[(
        WF,
        r#"on: push
jobs:
  deploy:
    strategy:
      matrix:
        n: [1, 2, 3]
    concurrency: deploy-${{ github.ref }}
    runs-on: x
    steps:
      - run: echo "start ${{ matrix.n }}"; sleep 0.3; echo "end ${{ matrix.n }}"
  newest:
    strategy:
      matrix:
        n: [1, 2]
    concurrency:
      group: newest
      cancel-in-progress: true
    runs-on: x
    steps:
      - run: echo "newest ${{ matrix.n }}"
  apart:
    strategy:
      matrix:
        n: [1, 2]
    concurrency: apart-${{ matrix.n }}
    runs-on: x
    steps:
      - run: echo "apart ${{ matrix.n }}"
"#,
    )]);
    let o = r.host(&[]);
    let waiting =
        "Canceling since a higher priority waiting request for 'deploy-refs/heads/main' exists";
    assert!(o.has(waiting), "{o:?}");
    assert!(o.has("start 1") && o.has("start 3"), "{o:?}");
    assert!(!o.has("start 2"), "the replaced leg never starts: {o:?}");
    let (end1, start3) = (
        o.stdout.find("end 1").expect("end 1"),
        o.stdout.find("start 3").expect("start 3"),
    );
    assert!(end1 < start3, "the third waits for the first: {o:?}");
    assert!(
        o.has("Canceling since a higher priority waiting request for 'newest' exists"),
        "{o:?}"
    );
    assert!(o.has("newest 2"), "{o:?}");
    assert!(!o.has("newest 1"), "{o:?}");
    assert!(o.has("apart 1") && o.has("apart 2"), "{o:?}");
}

#[test]
fn a_concurrency_queue_runs_every_job_in_turn() {
    // `queue: max`: jobs wait in line instead of replacing each other; group names ignore
    // case; `queue: max` with `cancel-in-progress: true` is refused.
    let r = repo(&[(
        WF,
        r#"on: push
jobs:
  line:
    strategy:
      matrix:
        n: [1, 2, 3]
    concurrency:
      group: ${{ matrix.n == 2 && 'PROD' || 'prod' }}
      queue: max
    runs-on: x
    steps:
      - run: echo "start ${{ matrix.n }}"; sleep 0.2; echo "end ${{ matrix.n }}"
  bad:
    concurrency:
      group: b-${{ github.sha }}
      queue: max
      cancel-in-progress: ${{ github.event_name == 'push' }}
    runs-on: x
    steps:
      - run: echo bad ran
"#,
    )]);
    let o = r.host(&[]);
    for n in 1..=3 {
        assert!(o.has(&format!("end {n}")), "{o:?}");
    }
    let pos = |s: &str| o.stdout.find(s).unwrap_or(usize::MAX);
    assert!(
        pos("end 1") < pos("start 2") && pos("end 2") < pos("start 3"),
        "{o:?}"
    );
    assert!(
        o.has("'queue: max' cannot be combined with 'cancel-in-progress: true'"),
        "{o:?}"
    );
    assert!(!o.has("bad ran"), "{o:?}");
}

#[test]
fn concurrency_keeps_matrix_order_and_refuses_a_callers_own_group() {
    // With max-parallel 1, legs in groups of their own still start in matrix order; a called
    // job in its caller's group would wait forever: it is cancelled as a deadlock.
    let r = repo(&[
        (
            WF,
            r#"on: push
jobs:
  ordered:
    strategy:
      max-parallel: 1
      matrix:
        n: [1, 2, 3, 4]
    concurrency: own-${{ matrix.n }}
    runs-on: x
    steps:
      - run: echo "leg ${{ matrix.n }}"
  call:
    concurrency: Deploy
    uses: ./.github/workflows/called.yml
"#,
        ),
        (
            ".github/workflows/called.yml",
            "on: workflow_call\njobs:\n  inner:\n    concurrency: deploy\n    runs-on: x\n    steps:\n      - run: echo inner ran\n",
        ),
    ]);
    let o = r.host(&[]);
    let pos = |s: &str| o.stdout.find(s).unwrap_or(usize::MAX);
    assert!(
        pos("leg 1") < pos("leg 2") && pos("leg 2") < pos("leg 3") && pos("leg 3") < pos("leg 4"),
        "{o:?}"
    );
    assert!(
        o.has("Canceling since a deadlock for concurrency group 'deploy' was detected"),
        "{o:?}"
    );
    assert!(!o.has("inner ran"), "{o:?}");
}

/// A matrix or strategy setting an expression gets wrong fails its job alone, as GitHub
/// evaluates a job's strategy when the job starts: the other jobs run.
#[test]
fn a_strategy_an_expression_gets_wrong_fails_only_its_job() {
    let r = repo(&[(
        WF,
        "on: push\njobs:\n  ok:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ok-ran\n  bad:\n    runs-on: ubuntu-latest\n    strategy:\n      matrix:\n        os: ${{ fromJSON('[]') }}\n    steps:\n      - run: echo bad-ran\n  worse:\n    runs-on: ubuntu-latest\n    strategy:\n      max-parallel: ${{ github.event_name }}\n    steps:\n      - run: echo worse-ran\n",
    )]);
    let p = r.run(&["--list"]);
    assert_eq!(p.code, 0, "{p:?}");
    assert!(
        p.has("→ fails: Error when evaluating 'strategy' for job 'bad'. Matrix vector 'os' does not contain any values")
            && p.has("→ fails: Error when evaluating 'strategy' for job 'worse'. Unexpected value 'push'"),
        "{p:?}"
    );
    let o = r.host(&[]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(
        o.has("ok-ran") && !o.has("bad-ran") && !o.has("worse-ran"),
        "{o:?}"
    );
    assert!(
        o.has("Error when evaluating 'strategy' for job 'bad'. Matrix vector 'os' does not contain any values"),
        "{o:?}"
    );
}

/// A JavaScript action for a newer Node.js than the job's runs on the job's, with a warning
/// saying so.
#[test]
fn an_action_for_a_newer_node_runs_with_a_warning() {
    let r = repo(&[
        (
            WF,
            "on: push\njobs:\n  j:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/checkout@v4\n      - uses: ./act\n",
        ),
        (
            "act/action.yml",
            "name: a\nruns:\n  using: node24\n  main: index.js\n",
        ),
        ("act/index.js", "console.log('ran on ' + process.version)\n"),
    ]);
    let o = r.host(&[]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.has("ran on v"), "{o:?}");
    let major: u32 = Command::new("node")
        .arg("-p")
        .arg("process.versions.node.split('.')[0]")
        .output()
        .ok()
        .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
        .unwrap_or(0);
    let warned =
        o.has("warning: This action declares `using: node24`; the job runs it on Node.js v");
    assert_eq!(warned, major < 24, "node {major}: {o:?}");
}
