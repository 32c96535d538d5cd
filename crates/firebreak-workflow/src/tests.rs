use super::*;

fn errors(src: &str) -> Vec<String> {
    errors_with(src, &ParseOptions::default())
}

/// Each diagnostic as `path:line:col: message`.
fn errors_with(src: &str, opts: &ParseOptions) -> Vec<String> {
    parse_workflow_with("w.yml", src, opts)
        .diagnostics
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// Each diagnostic as GitHub words it.
fn github_messages(src: &str, opts: &ParseOptions) -> Vec<String> {
    parse_workflow_with("w.yml", src, opts)
        .diagnostics
        .iter()
        .map(|d| d.github_message())
        .collect()
}

fn ok(src: &str) -> Workflow {
    let p = parse_workflow("w.yml", src);
    match p.into_result() {
        Ok(w) => w,
        Err(e) => panic!("unexpected errors: {e:?}"),
    }
}

const BASIC: &str =
    "on: push\njobs:\n  build:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo hi\n";

#[test]
fn basic_workflow() {
    let w = ok(BASIC);
    assert!(w.triggered_by("push"));
    let job = &w.jobs[0];
    assert_eq!(job.id, "build");
    assert_eq!(job.if_condition, "success()");
    assert_eq!(job.steps()[0].id, "__run");
    assert!(job.steps()[0].generated_id);
}

#[test]
fn diagnostic_display_is_file_line_col() {
    let p = parse_workflow(
        "w.yml",
        "on: push\njobs:\n  build:\n    steps:\n      - run: x\n",
    );
    assert_eq!(
        p.diagnostics[0].to_string(),
        "w.yml:4:5: Required property is missing: runs-on"
    );
    assert_eq!(
        p.diagnostics[0].github_message(),
        "w.yml (Line: 4, Col: 5): Required property is missing: runs-on"
    );
    assert!(p.workflow.is_none());
}

#[test]
fn on_is_a_string_key_and_yes_is_a_string() {
    let w = ok("on: [push, pull_request]\nname: yes\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: y\n");
    assert_eq!(w.on.keys().collect::<Vec<_>>(), ["push", "pull_request"]);
    assert_eq!(w.name.as_deref(), Some("yes"));
}

#[test]
fn reports_all_errors_in_document_order() {
    let e = errors(
        "on: push\nfoo: 1\njobs:\n  a:\n    runs-on: x\n    runs-on: y\n    steps:\n      - runn: z\n",
    );
    assert_eq!(
        e,
        [
            "w.yml:2:1: Unexpected value 'foo'",
            "w.yml:6:5: 'runs-on' is already defined",
            "w.yml:8:9: Unexpected value 'runn'",
            "w.yml:8:9: There's not enough info to determine what you meant. Add one of these properties: parallel, run, shell, uses, with, working-directory",
        ]
    );
}

#[test]
fn wrong_types() {
    assert_eq!(
        errors("name: [a]\non: push\njobs:\n  a:\n    runs-on: x\n    steps: []\n"),
        ["w.yml:1:7: A sequence was not expected"]
    );
    assert_eq!(
        errors("on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      x: 1\n"),
        ["w.yml:6:7: A mapping was not expected"]
    );
    assert_eq!(
        errors("on: push\npermissions:\n  contents: invalid\njobs:\n  a:\n    runs-on: x\n"),
        ["w.yml:3:13: Unexpected value 'invalid'"]
    );
}

#[test]
fn expressions_only_where_allowed() {
    assert_eq!(
        errors("name: ${{ github.ref }}\non: push\njobs:\n  a:\n    runs-on: x\n"),
        ["w.yml:1:7: Unrecognized named-value: 'github'. Located at position 1 within expression: github.ref"]
    );
    assert_eq!(
        errors("name: a ${{ 'b' }}\non: push\njobs:\n  a:\n    runs-on: x\n"),
        ["w.yml:1:7: A template expression is not allowed in this context"]
    );
    // job if may not use env or secrets
    let e = errors("on: push\njobs:\n  a:\n    if: env.x == 'y'\n    runs-on: x\n");
    assert_eq!(e, ["w.yml:4:9: Unrecognized named-value: 'env'. Located at position 1 within expression: env.x == 'y'"]);
    // step if may use env and hashFiles
    ok("on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - if: env.x && hashFiles('a')\n        run: y\n");
}

#[test]
fn invalid_expression_syntax() {
    assert_eq!(
        errors("on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: echo ${{ }}\n"),
        ["w.yml:6:14: An expression was expected"]
    );
    let e = errors(
        "on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: echo ${{ github.x\n",
    );
    assert!(e[0].contains("The expression is not closed"), "{e:?}");
}

#[test]
fn if_conditions_get_success_prefix() {
    let w = ok(concat!(
        "on: push\njobs:\n  a:\n    if: github.ref == 'x'\n    runs-on: x\n    steps:\n",
        "      - if: ${{ always() }}\n        run: a\n",
        "      - if: 123\n        run: b\n",
        "      - if: ''\n        run: c\n",
    ));
    let job = &w.jobs[0];
    assert_eq!(job.if_condition, "success() && (github.ref == 'x')");
    let ifs: Vec<_> = job
        .steps()
        .iter()
        .map(|s| s.if_condition.clone().unwrap_or_default())
        .collect();
    assert_eq!(ifs, ["always()", "success() && (123)", "success()"]);
}

#[test]
fn mixed_templates_become_format_calls() {
    let w = ok("on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: echo '${{ github.sha }}' {x}\n");
    let StepKind::Run { run, .. } = &w.jobs[0].steps()[0].kind else {
        panic!()
    };
    let TokenKind::Expr(e) = &run.kind else {
        panic!("{run:?}")
    };
    assert_eq!(e.expr, "format('echo ''{0}'' {{x}}', github.sha)");
    // an escaped literal collapses to a plain string
    let w =
        ok("on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: ${{ '${{ x }}' }}\n");
    let StepKind::Run { run, .. } = &w.jobs[0].steps()[0].kind else {
        panic!()
    };
    assert_eq!(run.as_str(), Some("${{ x }}"));
}

#[test]
fn default_step_ids() {
    let e = errors(concat!(
        "on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n",
        "      - id: __x\n        run: c\n      - id: s\n        run: c\n      - id: s\n        run: d\n",
    ));
    assert_eq!(
        e,
        [
            "w.yml:6:13: The identifier '__x' is invalid. IDs starting with '__' are reserved.",
            "w.yml:10:13: The identifier 's' may not be used more than once within the same scope.",
        ]
    );
    let w = ok(concat!(
        "on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n",
        "      - uses: actions/checkout@v4\n      - uses: actions/checkout@v4\n",
        "      - uses: docker://alpine:3\n      - uses: ./local\n      - run: a\n      - run: b\n",
    ));
    let ids: Vec<_> = w.jobs[0].steps().iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "__actions_checkout",
            "__actions_checkout_2",
            "__alpine_3",
            "__self",
            "__run",
            "__run_2"
        ]
    );
}

#[test]
fn job_ids_and_needs() {
    let e =
        errors("on: push\njobs:\n  1a:\n    runs-on: x\n  b:\n    needs: [c]\n    runs-on: x\n");
    assert_eq!(
        e,
        [
            "w.yml:3:3: The identifier '1a' is invalid. IDs may only contain alphanumeric characters, '_', and '-'. IDs must start with a letter or '_' and and must be less than 100 characters.",
            "w.yml:6:13: Job 'b' depends on unknown job 'c'.",
        ]
    );
    let e = errors(
        "on: push\njobs:\n  a:\n    needs: b\n    runs-on: x\n  b:\n    needs: a\n    runs-on: x\n",
    );
    assert_eq!(
        e,
        ["w.yml:3:3: The workflow must contain at least one job with no dependencies."]
    );
    let e = errors("on: push\njobs:\n  s:\n    runs-on: x\n  a:\n    needs: [s, b]\n    runs-on: x\n  b:\n    needs: a\n    runs-on: x\n");
    assert_eq!(
        e,
        [
            "w.yml:6:16: Job 'a' depends on job 'b' which creates a cycle in the dependency graph.",
            "w.yml:9:12: Job 'b' depends on job 'a' which creates a cycle in the dependency graph.",
        ]
    );
    let w = ok("on: push\njobs:\n  a:\n    runs-on: x\n  b:\n    needs: a\n    runs-on: x\n");
    assert_eq!(w.jobs[1].needs, ["a"]);
}

#[test]
fn runs_on_and_required_properties() {
    assert_eq!(
        errors("on: push\njobs:\n  a:\n    steps:\n      - run: x\n"),
        ["w.yml:4:5: Required property is missing: runs-on"]
    );
    assert_eq!(
        errors("on: push\n"),
        ["w.yml:1:1: Required property is missing: jobs"]
    );
    assert_eq!(
        errors("on: push\njobs:\n  a:\n    runs-on:\n      group: foo/bar\n"),
        ["w.yml:5:14: Invalid runs-on group name 'foo/bar'. Please use 'organization/' or 'enterprise/' prefix to target a single runner group."]
    );
}

#[test]
fn containers_and_matrix() {
    assert_eq!(
        errors("on: push\njobs:\n  a:\n    runs-on: x\n    container:\n      options: y\n"),
        ["w.yml:6:7: Container image cannot be empty"]
    );
    // `docker://` and nothing else, or a service without an image: errors in GitHub's C#
    // parser; a job's `container: ''` means no container there.
    let job = |rest: &str| {
        format!("on: push\njobs:\n  a:\n    runs-on: x\n{rest}    steps:\n      - run: echo\n")
    };
    assert_eq!(
        errors(&job("    container: docker://\n")),
        ["w.yml:5:16: Container image cannot be empty"]
    );
    assert_eq!(
        errors(&job("    container:\n      image: docker://\n")),
        ["w.yml:6:7: Container image cannot be empty"]
    );
    assert_eq!(
        errors(&job(
            "    services:\n      db: docker://\n      web:\n        image: docker://\n"
        )),
        [
            "w.yml:6:11: Container image cannot be empty",
            "w.yml:8:9: Container image cannot be empty"
        ]
    );
    assert!(errors(&job("    container: ''\n")).is_empty());
    // (An empty `image:` is the schema's error: it wants a non-empty string.)
    assert_eq!(
        errors(&job("    container:\n      image: ''\n")),
        ["w.yml:6:14: Unexpected value ''"]
    );
    assert!(errors(&job("    container: docker://alpine\n")).is_empty());
    assert_eq!(
        errors(
            "on: push\njobs:\n  a:\n    runs-on: x\n    strategy:\n      matrix:\n        os: []\n"
        ),
        ["w.yml:7:13: Matrix vector 'os' does not contain any values"]
    );
    assert_eq!(
        errors("on: push\njobs:\n  a:\n    runs-on: x\n    strategy:\n      bad: 1\n"),
        ["w.yml:6:7: Unexpected value 'bad'"]
    );
}

/// What GitHub's matrix builder refuses while it reads the file (the matrix holds no
/// expression), at the positions it names.
#[test]
fn literal_matrices_are_checked_when_read() {
    let job = |matrix: &str| {
        format!("on: push\njobs:\n  a:\n    runs-on: x\n    strategy:\n      matrix:\n{matrix}")
    };
    assert_eq!(
        errors(&job(
            "        include: [{service: s1, build: false}]\n        exclude: [{build: false}]\n"
        )),
        ["w.yml:8:20: Matrix exclude key 'build' does not match any key within the matrix"]
    );
    assert_eq!(
        errors(&job("        os: [x]\n        exclude:\n          - {}\n")),
        ["w.yml:9:13: Matrix exclude filter must not be empty"]
    );
    assert_eq!(
        errors(&job("        os: [x]\n        include:\n          - {}\n")),
        ["w.yml:9:13: Matrix include mapping does not contain any values"]
    );
    assert_eq!(
        errors(&job("        exclude:\n          - os: x\n")),
        [
            "w.yml:7:9: Matrix must define at least one vector",
            "w.yml:8:13: Matrix exclude key 'os' does not match any key within the matrix",
        ]
    );
    // Includes are read before excludes, whatever the order in the file.
    assert_eq!(
        errors(&job(
            "        os: [a]\n        exclude:\n          - foo: a\n        include:\n          - {}\n"
        )),
        [
            "w.yml:11:13: Matrix include mapping does not contain any values",
            "w.yml:9:13: Matrix exclude key 'foo' does not match any key within the matrix",
        ]
    );
    // Keys compare ignoring case; an empty vector is no key to exclude by.
    assert!(errors(&job(
        "        OS: [x, y]\n        exclude:\n          - os: x\n"
    ))
    .is_empty());
    assert_eq!(
        errors(&job(
            "        os: []\n        exclude:\n          - os: x\n"
        )),
        [
            "w.yml:7:13: Matrix vector 'os' does not contain any values",
            "w.yml:9:13: Matrix exclude key 'os' does not match any key within the matrix",
        ]
    );
    // With an expression anywhere in the strategy GitHub builds the matrix later, when the
    // job runs; a vector or include from an expression counts as one.
    assert!(errors(&job(
        "        os: [x]\n        exclude:\n          - build: ${{ github.sha }}\n"
    ))
    .is_empty());
    assert!(errors(&job("        include: ${{ fromJSON('[]') }}\n")).is_empty());
    assert!(errors(&format!(
        "{}      fail-fast: ${{{{ true }}}}\n",
        job("        os: [x]\n        exclude:\n          - build: 1\n")
    ))
    .is_empty());
}

#[test]
fn long_concurrency_groups_are_refused() {
    let long = "g".repeat(401);
    assert_eq!(
        errors(&format!(
            "on: push\nconcurrency: {long}\njobs:\n  a:\n    runs-on: x\n"
        )),
        ["w.yml:2:14: Concurrency group name must be less than 400 characters"]
    );
    assert_eq!(
        errors(&format!(
            "on: push\njobs:\n  a:\n    runs-on: x\n    concurrency:\n      group: {long}\n"
        )),
        ["w.yml:6:7: Concurrency group name must be less than 400 characters"]
    );
    assert!(errors(&format!(
        "on: push\nconcurrency: {}\njobs:\n  a:\n    runs-on: x\n",
        "g".repeat(400)
    ))
    .is_empty());
}

/// GitHub matches `needs` to job ids ignoring case; the model names the job as declared.
#[test]
fn needs_match_job_ids_ignoring_case() {
    let w = ok(
        "on: push\njobs:\n  build:\n    runs-on: x\n  test:\n    needs: BUILD\n    runs-on: x\n",
    );
    assert_eq!(w.jobs[1].needs, ["build"]);
    assert_eq!(
        errors("on: push\njobs:\n  a:\n    needs: B\n    runs-on: x\n  b:\n    needs: A\n    runs-on: x\n"),
        ["w.yml:3:3: The workflow must contain at least one job with no dependencies."]
    );
    assert_eq!(
        errors("on: push\njobs:\n  s:\n    runs-on: x\n  a:\n    needs: [s, B]\n    runs-on: x\n  b:\n    needs: A\n    runs-on: x\n"),
        [
            "w.yml:6:16: Job 'a' depends on job 'B' which creates a cycle in the dependency graph.",
            "w.yml:9:12: Job 'b' depends on job 'A' which creates a cycle in the dependency graph.",
        ]
    );
}

#[test]
fn step_uses_format() {
    assert_eq!(
        errors("on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - uses: badrepo@v1\n"),
        ["w.yml:6:15: Expected format {org}/{repo}[/path]@ref. Actual 'badrepo@v1'"]
    );
    // Empty path segments do not count, as in GitHub's C# parser.
    for fine in ["owner//repo@v1", "/owner/repo@v1", "owner/repo/sub/dir@v1"] {
        let src =
            format!("on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - uses: {fine}\n");
        assert!(errors(&src).is_empty(), "{fine}");
    }
    for bad in ["owner//@v1", "//repo@v1", "owner/repo@", "owner/repo"] {
        let src =
            format!("on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - uses: {bad}\n");
        assert_eq!(errors(&src).len(), 1, "{bad}");
    }
}

#[test]
fn events_and_filters() {
    let w = ok(concat!(
        "on:\n  push:\n    branches: main\n    paths-ignore: ['docs/**']\n  pull_request:\n    types: [opened]\n",
        "  schedule:\n    - cron: '0 0 * * *'\n  workflow_dispatch:\n    inputs:\n      x:\n        type: choice\n        options: [a]\n",
        "jobs:\n  a:\n    runs-on: x\n",
    ));
    assert_eq!(
        w.on["push"].branches.as_deref(),
        Some(&["main".to_string()][..])
    );
    assert_eq!(
        w.on["push"].paths_ignore.as_deref(),
        Some(&["docs/**".to_string()][..])
    );
    assert_eq!(
        w.on["pull_request"].types.as_deref(),
        Some(&["opened".to_string()][..])
    );
    assert_eq!(w.on["schedule"].schedule[0].cron, "0 0 * * *");
    assert_eq!(
        w.on["workflow_dispatch"].inputs["x"].input_type,
        InputType::Choice
    );
    assert_eq!(
        errors("on:\n  push:\n    inputs: {}\njobs:\n  a:\n    runs-on: x\n"),
        ["w.yml:3:5: Unexpected value 'inputs'"]
    );
    assert_eq!(
        errors("on:\n  schedule:\n    - cron: '* * *'\njobs:\n  a:\n    runs-on: x\n"),
        ["w.yml:3:13: Invalid cron expression. Expected format: '* * * * *' (minute hour day month weekday)"]
    );
    assert_eq!(
        errors("on: pushh\njobs:\n  a:\n    runs-on: x\n"),
        ["w.yml:1:5: Unexpected value 'pushh'"]
    );
}

#[test]
fn reusable_workflow_checks() {
    let called = "on:\n  workflow_call:\n    inputs:\n      foo:\n        type: string\n        required: true\n    secrets:\n      s:\n        required: true\njobs:\n  j:\n    runs-on: x\n";
    let opts = ParseOptions {
        reusable_workflows: Some(
            [(
                "o/r/.github/workflows/w.yml@v1".to_string(),
                called.to_string(),
            )]
            .into(),
        ),
        ..Default::default()
    };
    let src = "on: push\njobs:\n  call:\n    uses: o/r/.github/workflows/w.yml@v1\n    with:\n      bar: 1\n";
    let p = parse_workflow_with("w.yml", src, &opts);
    let e: Vec<_> = p.diagnostics.iter().map(ToString::to_string).collect();
    assert_eq!(
        e,
        [
            "w.yml:4:11: Input foo is required, but not provided while calling.",
            "w.yml:6:12: Invalid input, bar is not defined in the referenced workflow.",
            "w.yml:4:11: Secret s is required, but not provided while calling.",
        ]
    );
    let src = "on: push\njobs:\n  call:\n    uses: o/r/.github/workflows/w.yml@v1\n    with:\n      foo: 1\n    secrets: inherit\n";
    let w = parse_workflow_with("w.yml", src, &opts)
        .into_result()
        .unwrap_or_else(|e| panic!("{e}"));
    let JobKind::Reusable(rj) = &w.jobs[0].kind else {
        panic!()
    };
    assert!(rj.inherit_secrets);
    assert_eq!(rj.called.as_ref().map(|c| c.jobs.len()), Some(1));
    // without supplied workflows, reusable jobs are accepted as written
    assert!(parse_workflow("w.yml", src).is_ok());
}

/// A called workflow's input defaults are checked as GitHub checks values passed in: a
/// literal fits a string input (it is coerced), a number or boolean input needs one. Read
/// for its own events (not called), a number input's default is not checked.
#[test]
fn called_workflow_input_defaults() {
    let called = "on:\n  workflow_call:\n    inputs:\n      s:\n        type: string\n        default: 12\n      n:\n        type: number\n        default: abc\n      b:\n        type: boolean\n        default: 'yes'\n      ok:\n        type: number\n        default: 3\njobs:\n  j:\n    runs-on: x\n";
    assert_eq!(errors(called), ["w.yml:12:18: Unexpected value 'yes'"]);
    let opts = ParseOptions {
        reusable_workflows: Some(
            [(
                "o/r/.github/workflows/c.yml@v1".to_string(),
                called.to_string(),
            )]
            .into(),
        ),
        ..Default::default()
    };
    let caller = "on: push\njobs:\n  call:\n    uses: o/r/.github/workflows/c.yml@v1\n";
    assert_eq!(
        errors_with(caller, &opts),
        [
            "o/r/.github/workflows/c.yml@v1:9:18: Unexpected value 'abc'",
            "o/r/.github/workflows/c.yml@v1:12:18: Unexpected value 'yes'",
        ]
    );
    // workflow_dispatch keeps its own rule: the default has the input's type.
    let dispatch = "on:\n  workflow_dispatch:\n    inputs:\n      s:\n        type: string\n        default: 12\njobs:\n  j:\n    runs-on: x\n";
    assert_eq!(
        errors(dispatch),
        ["w.yml:6:18: Unexpected type 'NumberToken' encountered while reading 'input default'. The type 'StringToken' was expected."]
    );
}

#[test]
fn background_steps_need_the_feature() {
    let src = "on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - id: s\n        run: x\n        background: true\n      - wait: s\n";
    assert!(!parse_workflow("w.yml", src).is_ok());
    let opts = ParseOptions {
        allow_background_steps: true,
        ..Default::default()
    };
    let w = parse_workflow_with("w.yml", src, &opts)
        .into_result()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(w.jobs[0].steps()[0].background);
    assert!(matches!(&w.jobs[0].steps()[1].kind, StepKind::Wait { wait } if wait == &["s"]));
}

#[test]
fn yaml_errors_and_anchors() {
    let e = errors("on: push\njobs: [\n");
    assert_eq!(e.len(), 1);
    let w = ok("on: push\njobs:\n  a: &j\n    runs-on: x\n    steps:\n      - run: y\n  b: *j\n");
    assert_eq!(w.jobs.len(), 2);
    assert_eq!(
        errors("on: push\njobs:\n  a:\n    runs-on: !!timestamp 2020-01-01\n"),
        ["w.yml:0:0: Unexpected tag 'tag:yaml.org,2002:timestamp'"]
    );
    assert!(!errors("").is_empty());
}

#[test]
fn tokens_serialize() {
    let w = ok("on: push\nenv:\n  A: ${{ github.sha }}\njobs:\n  a:\n    runs-on: x\n");
    let v = serde_json::to_value(&w).unwrap_or_default();
    assert_eq!(v["env"]["map"][0]["value"]["expr"], "github.sha");
    assert_eq!(v["jobs"][0]["type"], "steps");
}

#[test]
fn reusable_permissions_depth_and_job_limit() {
    let called = "on: workflow_call\njobs:\n  d:\n    name: Deploy\n    permissions:\n      actions: write\n    runs-on: x\n";
    let mut opts = ParseOptions {
        reusable_workflows: Some(
            [(
                "a/b/.github/workflows/c.yml@v1".to_string(),
                called.to_string(),
            )]
            .into(),
        ),
        ..Default::default()
    };
    let src = "on: push\njobs:\n  call:\n    permissions:\n      actions: read\n    uses: a/b/.github/workflows/c.yml@v1\n";
    let e = errors_with(src, &opts);
    assert_eq!(
        e,
        ["w.yml:3:3: Error calling workflow 'a/b/.github/workflows/c.yml@v1'. The nested job 'Deploy' is requesting 'actions: write', but is only allowed 'actions: read'."]
    );
    // the default policy (contents/packages read) does not grant actions: write either
    let src = "on: push\njobs:\n  call:\n    uses: a/b/.github/workflows/c.yml@v1\n";
    assert!(!parse_workflow_with("w.yml", src, &opts).is_ok());
    opts.permissions_policy = PermissionsPolicy::Write;
    assert!(parse_workflow_with("w.yml", src, &opts).is_ok());
    opts.max_job_limit = Some(1);
    let e = errors_with(src, &opts);
    assert_eq!(e, ["The workflow may not contain more than 1 jobs"]);
    opts.max_job_limit = None;
    opts.max_nested_reusable_depth = 0;
    let e = errors_with(src, &opts);
    assert_eq!(e, ["Nested reusable workflow depth exceeded 0."]);
}

/// Ten levels of workflows connect: the caller and nine reusable ones; a tenth is refused.
#[test]
fn reusable_workflows_nest_nine_deep_below_their_caller() {
    let chain = |levels: usize| {
        let called: indexmap::IndexMap<String, String> = (1..=levels)
            .map(|i| {
                let body = if i < levels {
                    format!("on: workflow_call\njobs:\n  c:\n    uses: o/r/.github/workflows/w{}.yml@v1\n", i + 1)
                } else {
                    "on: workflow_call\njobs:\n  leaf:\n    runs-on: x\n    steps: [{run: a}]\n".to_string()
                };
                (format!("o/r/.github/workflows/w{i}.yml@v1"), body)
            })
            .collect();
        let opts = ParseOptions {
            reusable_workflows: Some(called),
            ..Default::default()
        };
        errors_with(
            "on: push\njobs:\n  c:\n    uses: o/r/.github/workflows/w1.yml@v1\n",
            &opts,
        )
    };
    assert_eq!(chain(9), Vec::<String>::new());
    assert_eq!(chain(10), ["Nested reusable workflow depth exceeded 9."]);
}

#[test]
fn size_and_depth_limits() {
    let opts = ParseOptions {
        max_file_size: 10,
        ..Default::default()
    };
    let e = github_messages(BASIC, &opts);
    assert_eq!(
        e,
        ["w.yml: The maximum file size of 10 characters has been exceeded"]
    );
    let opts = ParseOptions {
        max_depth: 3,
        ..Default::default()
    };
    let e = github_messages(BASIC, &opts);
    assert_eq!(e, ["w.yml: Maximum object depth exceeded"]);
    assert!(parse_workflow_with(
        "w.yml",
        BASIC,
        &ParseOptions {
            max_depth: 5,
            ..Default::default()
        }
    )
    .is_ok());
}

#[test]
fn duplicate_keys_are_found_whatever_their_case_and_order() {
    let src = "on: push\njobs:\n  a:\n    RUNS-ON: x\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo\n  b:\n    runs-on: ubuntu-latest\n    Runs-On: y\n    steps:\n      - run: echo\n    steps:\n      - run: echo\n  c:\n    steps:\n      - run: echo\n    STEPS: x\n";
    assert_eq!(
        errors_with(src, &ParseOptions::default()),
        [
            "w.yml:4:5: Unexpected value 'RUNS-ON'",
            "w.yml:5:5: 'runs-on' is already defined",
            "w.yml:10:5: 'Runs-On' is already defined",
            "w.yml:13:5: 'steps' is already defined",
            "w.yml:18:5: 'STEPS' is already defined",
            "w.yml:16:5: Required property is missing: runs-on",
        ]
    );
}

#[test]
fn a_file_that_is_not_utf8_is_named_at_its_first_bad_byte() {
    let bytes = b"on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo \xc3\xa9t\xff\n";
    let d = decode_source("w.yml", bytes).expect_err("not UTF-8");
    // Line 6; `      - run: echo ét` is 20 characters, so the bad byte is column 21.
    assert_eq!(
        d.to_string(),
        "w.yml:6:21: the file is not valid UTF-8 (byte 0xff here); save the workflow as UTF-8 text"
    );
    let first = decode_source("w.yml", b"\xfeon: push\n").expect_err("not UTF-8");
    assert_eq!((first.line, first.col), (1, 1));
    assert_eq!(
        decode_source("w.yml", "\u{feff}on: push\n".as_bytes()),
        Ok("\u{feff}on: push\n")
    );
}

#[test]
fn what_github_com_refuses_is_a_warning_and_fails_the_planned_run() {
    let src = "on: push\njobs:\n  a:\n    runs-on: x\n  b:\n    runs-on: x\n    steps: []\n  c:\n    uses: org/repo/.github/workflows/x.yml\n  d:\n    uses: ./ci/x.yml\n  e:\n    runs-on: x\n    steps:\n      - run: echo ok\n";
    let parsed = parse_workflow("w.yml", src);
    assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
    let warnings: Vec<String> = parsed.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [
            "w.yml:3:3: GitHub.com fails this workflow's runs: No steps defined in `steps` and no workflow called in `uses` for the following jobs: a, b",
            "w.yml:9:11: GitHub.com fails this workflow's runs: invalid value workflow reference: no version specified",
            "w.yml:11:11: GitHub.com fails this workflow's runs: invalid value workflow reference: references to workflows must be rooted in '.github/workflows'",
        ]
    );
    let wf = std::sync::Arc::new(parsed.workflow.expect("valid to the parser"));
    let event = plan::Event {
        name: "push".into(),
        payload: serde_json::json!({"ref": "refs/heads/main"}),
        changed_files: None,
    };
    let p = plan::plan(&[("w.yml", wf)], &event);
    assert_eq!(
        p.workflows[0].errors,
        [
            "line 3: No steps defined in `steps` and no workflow called in `uses` for the following jobs: a, b",
            "line 9: invalid value workflow reference: no version specified",
            "line 11: invalid value workflow reference: references to workflows must be rooted in '.github/workflows'",
        ]
    );
}

#[test]
fn more_than_25_dispatch_inputs_is_a_warning_at_the_26th() {
    let inputs = |n: usize| {
        (0..n)
            .map(|i| format!("      i{i}:\n        type: string\n        default: x\n"))
            .collect::<String>()
    };
    let src = |event: &str, n: usize| {
        format!(
            "on:\n  {event}:\n    inputs:\n{}jobs:\n  a:\n    runs-on: x\n    steps:\n      - run: echo\n",
            inputs(n)
        )
    };
    let warnings = |src: &str| -> Vec<String> {
        let parsed = parse_workflow("w.yml", src);
        assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
        parsed.warnings.iter().map(ToString::to_string).collect()
    };
    assert!(warnings(&src("workflow_dispatch", 25)).is_empty());
    // The 26th input is on line 4 + 3 × 25.
    assert_eq!(
        warnings(&src("workflow_dispatch", 26)),
        ["w.yml:79:7: you may only define up to 25 `inputs` for a `workflow_dispatch` event"]
    );
    assert!(
        warnings(&src("workflow_call", 30)).is_empty(),
        "no such limit for workflow_call"
    );
}

/// A condition with literal text around `${{ }}` is always truthy: a warning, the file valid.
#[test]
fn conditions_with_literal_text_are_warned_of() {
    let warnings = |src: &str| -> Vec<String> {
        let p = crate::parse_workflow("w.yml", src);
        assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
        p.warnings.iter().map(|d| d.to_string()).collect()
    };
    let wf = |job_if: &str, step_if: &str| {
        format!("on: push\njobs:\n  a:\n    if: {job_if}\n    runs-on: x\n    steps:\n      - if: {step_if}\n        run: echo\n")
    };
    let msg = "Conditional expression contains literal text outside replacement tokens";
    let w = warnings(&wf(
        "push == ${{ github.event_name }}",
        "success == ${{ job.status }}",
    ));
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w[0].starts_with("w.yml:4:9: ") && w[0].contains(msg),
        "{w:?}"
    );
    assert!(
        w[1].starts_with("w.yml:7:13: ") && w[1].contains(msg),
        "{w:?}"
    );
    assert_eq!(
        warnings(&wf(
            "${{ format('event is {0}', github.event_name) }}",
            "${{ format('{{{0}', 'x') }}"
        ))
        .len(),
        2
    );
    for fine in [
        "${{ format('{0}', github.event_name) }}",
        "${{ format('{0}{1}', github.event_name, 'x') }}",
        "github.event_name == 'push'",
        "${{ github.event_name == 'push' }}",
        "${{ github.event_name == 'push' && format('x{0}', github.sha) }}",
    ] {
        assert!(warnings(&wf(fine, "always()")).is_empty(), "{fine}");
    }
}

/// `format()` calls the runner will refuse when it evaluates them: warnings, once each.
#[test]
fn format_strings_the_runner_refuses_are_warned_of() {
    let src = "on: push\njobs:\n  a:\n    if: ${{ format('{1}', github.sha) == 'x' }}\n    runs-on: x\n    env:\n      A: ${{ format('{0} {1}', 'a') }}\n      B: ${{ format('{0', 'a') }}\n      C: ${{ format('{0}{{}}', 'a') }}\n    steps:\n      - if: format('{{0}} {2}', 1, 2) == 'x'\n        run: echo ${{ format('x {0}}', 1) }}\n";
    let p = crate::parse_workflow("w.yml", src);
    assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
    let mut w: Vec<String> = p.warnings.iter().map(|d| d.to_string()).collect();
    w.sort();
    assert_eq!(
        w,
        [
            "w.yml:11:13: The following format string references more arguments than were supplied: {{0}} {2}",
            "w.yml:12:14: The following format string is invalid: x {0}}",
            "w.yml:4:9: The following format string references more arguments than were supplied: {1}",
            "w.yml:7:10: The following format string references more arguments than were supplied: {0} {1}",
            "w.yml:8:10: The following format string is invalid: {0",
        ]
    );
}

/// `insert` takes no parameters; a quoted or parenthesised one counts once, as GitHub counts.
#[test]
fn insert_directive_parameters_are_counted_as_github_counts_them() {
    let wf = |v: &str| {
        format!("on: push\njobs:\n  a:\n    runs-on: x\n    env:\n      ${{{{ {v} }}}}: x\n    steps:\n      - run: echo\n")
    };
    let count = |v: &str| {
        errors(&wf(v)).iter().find_map(|e| {
            e.split("Actual parameter count: ")
                .nth(1)
                .map(str::to_string)
        })
    };
    assert_eq!(count("insert 'a b'").as_deref(), Some("1"));
    assert_eq!(count("insert f(a, b)").as_deref(), Some("1"));
    assert_eq!(count("insert a  b").as_deref(), Some("2"));
    assert_eq!(count("insert"), None);
}

/// `queue: max` with `cancel-in-progress: true`: GitHub's parser takes it, its service does
/// not; a warning.
#[test]
fn a_concurrency_queue_that_cancels_is_warned_of() {
    let p = crate::parse_workflow(
        "w.yml",
        "on: push\nconcurrency:\n  group: g\n  queue: max\n  cancel-in-progress: true\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: echo\n",
    );
    assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
    let w: Vec<String> = p.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        w,
        ["w.yml:3:3: 'queue: max' cannot be combined with 'cancel-in-progress: true'"]
    );
}

#[test]
fn columns_count_utf16_units_as_github_does() {
    // The emoji is two UTF-16 units: `bogus` starts at unit 27, not character 26.
    let flow = "on: push\njobs: {a: {runs-on: \"\u{1F600}\", bogus: 1, steps: [{run: x}]}}\n";
    assert_eq!(errors(flow), ["w.yml:2:27: Unexpected value 'bogus'"]);
    // The same through the complete YAML parser (an anchor sends it there).
    let block = "on: push\njobs:\n  a: &j {runs-on: \"\u{1F600}\", bogus: 1, steps: [{run: x}]}\n";
    assert_eq!(errors(block), ["w.yml:3:25: Unexpected value 'bogus'"]);
    // Lines broken by a lone carriage return, as YAML breaks them.
    let cr = "on: push\rjobs: {a: {runs-on: \"\u{1F600}\", bogus: 1, steps: [{run: x}]}}\n";
    assert_eq!(errors(cr), ["w.yml:2:27: Unexpected value 'bogus'"]);
    // Characters of the Basic Multilingual Plane are one unit, as before.
    let bmp = "on: push\njobs: {a: {runs-on: \"é\", bogus: 1, steps: [{run: x}]}}\n";
    assert_eq!(errors(bmp), ["w.yml:2:26: Unexpected value 'bogus'"]);
}

#[test]
fn snapshot_mappings_are_checked_as_the_runner_does() {
    let job = |snapshot: &str| {
        format!("on: push\njobs:\n  a:\n    runs-on: x\n    steps: [{{run: x}}]\n    snapshot: {snapshot}\n")
    };
    assert_eq!(
        errors(&job("{image-name: a, version: 2.*, if: github.ref}")),
        Vec::<String>::new()
    );
    assert_eq!(
        errors(&job("{image-name: a, version: abc}")),
        ["w.yml:6:15: Expected format '{major-version}.*' Actual 'abc'"]
    );
    assert_eq!(
        errors(&job("{image-name: a, version: -1.*}")),
        ["w.yml:6:15: Expected format '{major-version}.*' Actual '-1.*'"]
    );
    let e = errors(&job("{image-name: a, if: \"secrets.x && always(1)\"}"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("w.yml:6:35: Unrecognized named-value: 'secrets'"),
        "{e:?}"
    );
    let e = errors(&job("{image-name: a, if: \"always(1)\"}"));
    assert!(
        e[0].starts_with("w.yml:6:35: Too many parameters supplied: '('"),
        "{e:?}"
    );
}

#[test]
fn a_workflow_run_trigger_without_workflows_is_warned_of() {
    let warnings = |on: &str| -> Vec<String> {
        let p = parse_workflow(
            "w.yml",
            &format!("{on}\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: echo\n"),
        );
        assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
        p.warnings.iter().map(ToString::to_string).collect()
    };
    let msg = "GitHub.com fails this workflow's runs: `on.workflow_run` does not reference any workflows.";
    for (on, at) in [
        ("on: workflow_run", "w.yml:1:5"),
        ("on: [push, workflow_run]", "w.yml:1:12"),
        ("on:\n  workflow_run:\n    types: [completed]", "w.yml:2:3"),
    ] {
        let w = warnings(on);
        assert!(
            w.len() == 1 && w[0].starts_with(&format!("{at}: {msg}")),
            "{on}: {w:?}"
        );
    }
    assert!(warnings("on:\n  workflow_run:\n    workflows: [CI]").is_empty());
}

/// Positions and messages of a few YAML shapes, as GitHub's parsers report them.
#[test]
fn yaml_shapes_are_reported_where_github_reports_them() {
    // A block sequence at its key's indentation is at its `-`, through either YAML front end
    // (an anchor sends a document to the full parser).
    for anchor in ["", "x: &a 1\n"] {
        let src = format!(
            "on: push\n{anchor}jobs:\n  a:\n    runs-on: x\n    env:\n    -   FOO=bar\n    steps:\n    - run: echo\n"
        );
        let line = if anchor.is_empty() { 6 } else { 7 };
        let errs = errors(&src);
        assert!(
            errs.contains(&format!("w.yml:{line}:5: A sequence was not expected")),
            "{errs:?}"
        );
    }
    // ... also after a comment on the `-`'s line.
    assert!(
        errors("on: push\njobs:\n  a:\n    runs-on: x\n    env:\n    - # a note\n\n      A=b\n    steps:\n    - run: echo\n")
            .contains(&"w.yml:6:5: A sequence was not expected".to_string())
    );
    // An empty value inside a flow mapping is at the `,` or `}` that ends it, on its line or
    // a later one.
    assert_eq!(
        errors("on: push\njobs:\n  a: {runs-on:   , steps: [{run: a}]}\n"),
        ["w.yml:3:18: Unexpected value ''"]
    );
    assert_eq!(
        errors("on: push\njobs:\n  a: {runs-on: # none\n\n     , steps: [{run: a}]}\n"),
        ["w.yml:5:6: Unexpected value ''"]
    );
    // A tag on a sequence or mapping is not checked, as by GitHub's readers.
    assert_eq!(
        errors("on: push\nenv: !!str {A: 1}\njobs:\n  a:\n    runs-on: x\n    steps: !!map [{run: a}]\n"),
        Vec::<String>::new()
    );
    // Type errors name the token classes GitHub's messages name.
    let dispatch = "on:\n  workflow_dispatch:\n    inputs:\n      dry:\n        type: boolean\n        default: \"true\"\njobs:\n  a:\n    runs-on: x\n    steps: [{run: a}]\n";
    assert_eq!(
        errors(dispatch),
        ["w.yml:6:18: Unexpected type 'StringToken' encountered while reading 'input default'. The type 'BooleanToken' was expected."]
    );
}

/// A called workflow that cannot be called, or that has errors of its own, is not followed
/// further: the errors of what it calls in turn are not this call's (GitHub's loader stops
/// there), and a workflow calling itself through it does not repeat them.
#[test]
fn an_uncallable_or_invalid_called_workflow_is_not_followed() {
    let called = |files: &[(&str, &str)]| ParseOptions {
        reusable_workflows: Some(
            files
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    };
    let leaf =
        "on: workflow_call\njobs:\n  x:\n    bogus: 1\n    runs-on: x\n    steps: [{run: a}]\n";
    let opts = called(&[
        (
            "o/r/.github/workflows/nc.yml@v1",
            "on: push\njobs:\n  l:\n    uses: o/r/.github/workflows/leaf.yml@v1\n",
        ),
        ("o/r/.github/workflows/leaf.yml@v1", leaf),
    ]);
    let src = "on: push\njobs:\n  n:\n    uses: o/r/.github/workflows/nc.yml@v1\n";
    assert_eq!(
        errors_with(src, &opts),
        ["w.yml:4:11: workflow_call key is not defined in the referenced workflow."]
    );
    // Callable but invalid: its own error, not those of what it calls.
    let opts = called(&[
        (
            "o/r/.github/workflows/mid.yml@v1",
            "on: workflow_call\njobs:\n  l:\n    uses: o/r/.github/workflows/leaf.yml@v1\n  m:\n    runs-on: x\n    stepz: []\n",
        ),
        ("o/r/.github/workflows/leaf.yml@v1", leaf),
    ]);
    let src = "on: push\njobs:\n  n:\n    uses: o/r/.github/workflows/mid.yml@v1\n";
    let e = errors_with(src, &opts);
    assert!(
        !e.is_empty() && e.iter().all(|l| !l.contains("bogus")),
        "{e:?}"
    );
}

/// A string with several bad expressions has one error, its first's, at the string: GitHub's
/// reader stops at the first.
#[test]
fn a_strings_first_bad_expression_is_its_error() {
    let e = errors("on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: echo ${{ foo( }} ${{ bar( }}\n");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("w.yml:6:14: ") && e[0].contains("foo"),
        "{e:?}"
    );
}
