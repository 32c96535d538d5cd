//! `parse_workflow` must never panic: property tests over arbitrary and mutated YAML, plus a
//! committed regression corpus (`tests/corpus/*.yml`) replayed on every run.
//!
//! Each corpus file may start with `# expect: ok` or `# expect: error`; without it the file
//! only has to parse without panicking. Add a file here for every input that once crashed.

use firebreak_workflow::{decode_source, parse_workflow, parse_workflow_with, ParseOptions};
use proptest::prelude::*;

const SEEDS: &[&str] = &[
    "on: push\njobs:\n  build:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/checkout@v4\n      - run: echo ${{ github.sha }}\n",
    "on:\n  pull_request:\n    branches: [main]\n  workflow_dispatch:\n    inputs:\n      x: {type: choice, options: [a]}\njobs:\n  a:\n    runs-on: [self-hosted, linux]\n    strategy:\n      matrix:\n        os: [a, b]\n        include: [{os: c}]\n    steps:\n      - if: ${{ matrix.os == 'a' }}\n        run: |\n          echo ${{ matrix.os }}\n  b:\n    needs: a\n    uses: o/r/.github/workflows/w.yml@v1\n    secrets: inherit\n",
    "name: x\nenv: &e\n  A: 1\njobs:\n  j:\n    env: *e\n    runs-on: x\n    container:\n      image: node\n      credentials: {username: u, password: ${{ secrets.p }}}\n    services:\n      db: postgres\n    steps:\n      - id: s\n        run: a\n        background: true\n      - wait: [s]\non: [push]\n",
];

fn check(src: &str) {
    // The fast YAML scanner (inside `parse_workflow`) either gives up or agrees with the full
    // YAML parser.
    if let Err(e) = firebreak_workflow::testing::yaml_fast_path(src) {
        panic!("{src:?}\n{e}");
    }
    let _ = parse_workflow("w.yml", src);
    let opts = ParseOptions {
        allow_background_steps: true,
        reusable_workflows: Some(
            [
                (
                    "o/r/.github/workflows/w.yml@v1".to_string(),
                    src.to_string(),
                ),
                ("./.github/workflows/self.yml".to_string(), src.to_string()),
            ]
            .into(),
        ),
        max_job_limit: Some(100),
        ..ParseOptions::default()
    };
    let _ = parse_workflow_with("w.yml", src, &opts);
}

const PIECES: &[&str] = &[
    ":", "-", " ", "\n", "  ", "${{", "}}", "'", "\"", "[", "]", "{", "}", ",", "&a", "*a",
    "!!int", "!!str", "|", ">", "#", "on", "jobs", "steps", "run", "uses", "if", "needs", "matrix",
    "\t", "%", "@", "?", "~", "null", "é", "\u{feff}",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(src in ".{0,300}") {
        check(&src);
    }

    #[test]
    fn arbitrary_bytes_are_text_or_an_error_at_the_first_bad_byte(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        match decode_source("w.yml", &bytes) {
            Ok(text) => check(text),
            Err(d) => {
                let bad = std::str::from_utf8(&bytes).expect_err("decode_source refused it").valid_up_to();
                let before = String::from_utf8_lossy(&bytes[..bad]);
                prop_assert_eq!(d.line as usize, before.matches('\n').count() + 1);
                let line_start = before.rfind('\n').map_or(0, |i| i + 1);
                prop_assert_eq!(d.col as usize, before[line_start..].encode_utf16().count() + 1);
            }
        }
    }

    #[test]
    fn mutated_workflows_never_panic(
        seed in 0..SEEDS.len(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 0..3u8, 0..PIECES.len()), 1..8),
    ) {
        let mut s: Vec<char> = SEEDS[seed].chars().collect();
        for (at, op, piece) in edits {
            let i = at.index(s.len() + 1);
            match op {
                0 => { s.splice(i..i, PIECES[piece].chars()); }
                1 => { if i < s.len() { s.remove(i); } }
                _ => { if i < s.len() { s.truncate(i); } }
            }
        }
        let src: String = s.into_iter().collect();
        check(&src);
    }
}

#[test]
fn regression_corpus() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(Result::ok).collect())
        .unwrap_or_default();
    entries.sort_by_key(|e| e.file_name());
    assert!(!entries.is_empty(), "no corpus files in {}", dir.display());
    for e in entries {
        let path = e.path();
        let src = std::fs::read_to_string(&path).unwrap_or_default();
        let parsed = parse_workflow("w.yml", &src);
        check(&src);
        let first = src.lines().next().unwrap_or_default();
        if first.starts_with("# expect: ok") {
            assert!(
                parsed.is_ok(),
                "{}: {:?}",
                path.display(),
                parsed.diagnostics
            );
        } else if first.starts_with("# expect: error") {
            assert!(!parsed.is_ok(), "{}: accepted", path.display());
        }
    }
}

/// proptest's find: a bad byte after a character outside the Basic Multilingual Plane is at
/// column 3 (that character is two UTF-16 units, as GitHub counts columns).
#[test]
fn a_bad_byte_after_a_wide_character_is_at_its_utf16_column() {
    let d = decode_source("w.yml", &[0xf0, 0x90, 0x80, 0x80, 0x80]).expect_err("not UTF-8");
    assert_eq!((d.line, d.col), (1, 3));
}
