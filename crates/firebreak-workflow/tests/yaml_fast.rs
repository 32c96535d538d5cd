//! The fast YAML scanner against the full (`saphyr-parser`) path: on every YAML file of the
//! regression corpus and of the shared conformance corpora, and on random workflow-shaped
//! text, the scanner either gives up or builds exactly the same tree (values, kinds, styles,
//! positions).
//!
//! The shared corpora are read in place from `$FIREBREAK_SHARED` (default `../shared` beside
//! the repository); a missing corpus fails the test.

use std::path::{Path, PathBuf};

use firebreak_workflow::testing::yaml_fast_path;
use proptest::prelude::*;

fn shared_dir() -> PathBuf {
    match std::env::var_os("FIREBREAK_SHARED") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    }
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        let path = e.path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "yml" || x == "yaml") {
            out.push(path);
        }
    }
}

/// Checks every file under `dir` (and, for multi-document files, each document); returns how
/// many sources the scanner handled and how many there were.
fn check_dir(dir: &Path) -> (usize, usize) {
    let mut files = Vec::new();
    yaml_files(dir, &mut files);
    files.sort();
    assert!(
        !files.is_empty(),
        "no YAML files under {} (set FIREBREAK_SHARED)",
        dir.display()
    );
    let (mut handled, mut total) = (0, 0);
    let mut failures = Vec::new();
    for f in &files {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        let mut sources = vec![text.clone()];
        if text.contains("\n---\n") {
            sources.extend(text.split("\n---\n").map(str::to_string));
        }
        for src in &sources {
            total += 1;
            match yaml_fast_path(src) {
                Ok(true) => handled += 1,
                Ok(false) => {}
                Err(e) => failures.push(format!("{}:\n{src}\n{e}", f.display())),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches; first:\n{}",
        failures.len(),
        failures[0]
    );
    eprintln!(
        "{}: fast scanner handled {handled} of {total} sources",
        dir.display()
    );
    (handled, total)
}

#[test]
fn regression_corpus() {
    check_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus"));
}

#[test]
fn workflow_parser_corpus() {
    let (handled, _) = check_dir(&shared_dir().join("conformance/workflow-parser"));
    assert!(handled > 0);
}

#[test]
fn act_corpus() {
    let (handled, _) = check_dir(&shared_dir().join("conformance/act"));
    assert!(handled > 0);
}

#[test]
fn benchmark_fixture_takes_the_fast_path() {
    let src = include_str!("../benches/realistic.yml");
    assert_eq!(yaml_fast_path(src), Ok(true));
}

/// The generator mostly produces what the scanner handles (else the comparison above would
/// rarely compare anything).
#[test]
fn generated_yaml_mostly_takes_the_fast_path() {
    let mut handled = 0;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..500 {
        let choices: Vec<u8> = (0..400)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        let src = generated(&choices);
        match yaml_fast_path(&src) {
            Ok(true) => handled += 1,
            Ok(false) => {}
            Err(e) => panic!("{src:?}\n{e}"),
        }
    }
    eprintln!("generated: fast scanner handled {handled} of 500");
    assert!(
        handled > 100,
        "only {handled} of 500 generated sources took the fast path"
    );
}

#[test]
fn hand_picked() {
    let cases = [
        "a: b\n",
        "a:\n  b: c\n  d:\n  e: |\n    x\n    y\n\n  f: >-\n    p\n    q\n\n    r\n",
        "a:\n- x\n- y\nb: 1\n",
        "- a: 1\n  b: [x, 'y', \"z\"]\n- - p\n  - q\n",
        "k: {a: 1, b: [2, 3]}\n",
        "a: plain\n  continued\n\n  more\nb: x # comment\n",
        "---\n# c\na: 'it''s'\nb: \"t\\tu\\u00e9\"\n",
        "é: ü\nx: [é, ü]\n",
        "a: |+\n  x\n\n\nb: |-\n  y\n\n",
        "on:\n  push:\n    branches:\n      - main\n",
        "a: 0x1f\nb: 1e3\nc: ~\nd: null\ne: True\nf: .inf\n",
        "a :  b  \n",
        "a:\n  - b\n  -  c\n",
        "a: b\n...\n",
        "a: &x b\nc: *x\n",
        "a:\n-\n- b\n",
        "a: 'x\n  y'\n",
        "a: \"x\\\n  y\"\n",
        "a: [x,\n  y]\n",
        // invalid YAML: the scanner must give up
        "a: b\n c: d\n",
        "a:\n  b\n  c: d\n",
        "- a\nb: c\n",
        "a: 'x' y\n",
        "[a]: b\n",
        "a: b: c\n",
        "a:\n\tb: c\n",
        "a: |\n    x\n  y\n",
        "a: \"\\q\"\n",
        "a:\n  - b\n c: d\n",
        // edges of the subset
        "a: b\r\nc: d\r\n",
        "a: |\r\n  x\r\n\r\n  y\r\nb: >-\r\n  p\r\n  q\r\n",
        "a:\r\n  - b # c\r\n  -   \r\n    c\r\n# d\r\ne: 'f'\r\n",
        "a: x\r\n  y\r\n",
        "options:\n  --cpus 3\n  --add-host x\n  ?y :z\n",
        "a: x\n  - y\n",
        "a: x\n  -\n",
        "a: [b, c]\r\n",
        "a: b\rc: d\n",
        "a: |\r\n  x\r",
        "\u{feff}a: b\n",
        "a: |\n  x",
        "a: |-\n  x",
        "a: |+\n  x",
        "a: >\n  x\n  y",
        "a:\n  b: |\n    x\n\n    y",
        "- run: |\n    x\n    y  ",
        "a: |+\n  x\n\n",
        "a: >\n  x\n    y\n  z\n",
        "a: >\n\n  x\n",
        "a: |\n  # not a comment\n  x\n# a comment\nb: c\n",
        "a:   # c\n  b: c\n",
        "a:\n  - - x\n    - y\n  - z\n",
        "- - - x\n",
        "- |\n  x\n- >-\n  y\n",
        "a: x #c\n",
        "a: x#c\n",
        "\"a b\": 'c d'\n",
        "a: { }\nb: [ ]\n",
        "a: [[x, y], {p: q}]\n",
        "é: x\nü:\n  ö: [ä]\n",
        "a: 1\nA: 2\n",
        "k: -x\nl: ?y\nm: :z\n",
        "a:\n\n\n  b: c\n",
        "a: x\n\n  y\n",
        "key: value\n...\n",
        "%YAML 1.2\n---\na: b\n",
        "---\na: b\n---\nc: d\n",
    ];
    for src in cases {
        match yaml_fast_path(src) {
            Err(e) => panic!("{src:?}\n{e}"),
            Ok(fast) => eprintln!("{fast:5} {src:?}"),
        }
    }
}

const PIECES: &[&str] = &[
    "a", "b", "on", "1", "0x1", "-1", "true", "~", ":", ": ", "- ", "-", " ", "  ", "\n", "\n  ",
    "\n    ", "\n- ", "'", "''", "\"", "\\", "\\n", "[", "]", "{", "}", ", ", ",", "#", " #", "|",
    ">", "|-", ">+", "&a", "*a", "!!str", "?", "%", "@", "`", "\t", "é", "---", "...", "${{ x }}",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, .. ProptestConfig::default() })]

    #[test]
    fn random_yaml_agrees(parts in proptest::collection::vec(0..PIECES.len(), 0..40)) {
        let src: String = parts.iter().map(|&i| PIECES[i]).collect();
        if let Err(e) = yaml_fast_path(&src) {
            panic!("{src:?}\n{e}");
        }
    }

    #[test]
    fn generated_yaml_agrees(choices in proptest::collection::vec(any::<u8>(), 0..400)) {
        let src = generated(&choices);
        if let Err(e) = yaml_fast_path(&src) {
            panic!("{src:?}\n{e}");
        }
    }

    #[test]
    fn mutated_fixture_agrees(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 0..3u8, 0..PIECES.len()), 1..6),
    ) {
        let mut s = include_str!("../benches/realistic.yml").to_string();
        for (at, op, piece) in edits {
            let mut i = at.index(s.len() + 1);
            while !s.is_char_boundary(i) {
                i -= 1;
            }
            match op {
                0 => s.insert_str(i, PIECES[piece]),
                1 => { if i < s.len() { s.remove(i); } }
                _ => s.truncate(i),
            }
        }
        if let Err(e) = yaml_fast_path(&s) {
            panic!("{s:?}\n{e}");
        }
    }
}

/// Renders random workflow-shaped YAML from a stream of choices: nested block mappings and
/// sequences with varying indentation, compact forms, every scalar style, flow collections,
/// comments and blank lines. Most of it is in the fast scanner's subset, so this exercises
/// the comparison where it matters (the scanner accepting).
struct Gen<'a> {
    choices: &'a [u8],
    at: usize,
    out: String,
}

const WORDS: &[&str] = &[
    "a",
    "on",
    "run",
    "1",
    "-1",
    "0x1f",
    "0o7",
    "1.5",
    "1e3",
    ".inf",
    "true",
    "False",
    "null",
    "~",
    "a b",
    "x:y",
    "a#b",
    "é ü",
    "${{ x }}",
    "echo \"hi\"",
    "it's",
    "-a",
    "?b",
    ":c",
    "a,b",
    "[x]",
    "0755",
    "12_345",
    "+1",
    ".5",
    "a  b",
    "{x}",
    "\\n",
    "# no",
    "a: b",
    "- a",
];

impl Gen<'_> {
    fn pick(&mut self, n: usize) -> usize {
        let c = self.choices.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        c as usize % n
    }

    fn word(&mut self) -> &'static str {
        WORDS[self.pick(WORDS.len())]
    }

    fn pad(&mut self, n: usize) {
        for _ in 0..n {
            self.out.push(' ');
        }
    }

    fn line_end(&mut self) {
        match self.pick(8) {
            0 => self.out.push_str(" # note"),
            1 => self.out.push_str("  "),
            _ => {}
        }
        self.out.push('\n');
        if self.pick(10) == 0 {
            self.out.push('\n');
        }
        if self.pick(12) == 0 {
            let n = self.pick(6);
            self.pad(n);
            self.out.push_str("# comment\n");
        }
    }

    /// A scalar (or flow collection) on the current line, or a block scalar whose content
    /// goes below at `indent`.
    fn scalar(&mut self, indent: usize) {
        match self.pick(9) {
            0..=2 => {
                let w = self.word();
                self.out.push_str(w);
            }
            3 => {
                let w = self.word().replace('\'', "''");
                self.out.push('\'');
                self.out.push_str(&w);
                self.out.push('\'');
            }
            4 => {
                let w = self.word().replace('\\', "\\\\").replace('"', "\\\"");
                self.out.push('"');
                self.out.push_str(&w);
                if self.pick(3) == 0 {
                    self.out.push_str("\\t\\u00e9");
                }
                self.out.push('"');
            }
            5 | 6 => {
                let header = if self.pick(2) == 0 { '|' } else { '>' };
                self.out.push(header);
                match self.pick(3) {
                    0 => self.out.push('-'),
                    1 => self.out.push('+'),
                    _ => {}
                }
                self.out.push('\n');
                let extra = 1 + self.pick(3);
                let lines = 1 + self.pick(4);
                for _ in 0..lines {
                    match self.pick(6) {
                        0 => self.out.push('\n'),
                        1 => {
                            self.pad(indent + extra + 2);
                            let w = self.word();
                            self.out.push_str(w);
                            self.out.push('\n');
                        }
                        _ => {
                            self.pad(indent + extra);
                            let w = self.word();
                            self.out.push_str(w);
                            self.out.push('\n');
                        }
                    }
                }
                return;
            }
            7 => {
                self.out.push('[');
                let n = self.pick(4);
                for i in 0..n {
                    if i > 0 {
                        self.out.push_str(", ");
                    }
                    let w = self.word();
                    self.out.push_str(w);
                }
                self.out.push(']');
            }
            _ => {
                self.out.push('{');
                let n = self.pick(3);
                for i in 0..n {
                    if i > 0 {
                        self.out.push_str(", ");
                    }
                    let k = self.word();
                    self.out.push_str(k);
                    self.out.push_str(": ");
                    let w = self.word();
                    self.out.push_str(w);
                }
                self.out.push('}');
            }
        }
        self.line_end();
    }

    /// A value after `key:` or `- ` (the line is started), for a collection at `indent`.
    fn value(&mut self, indent: usize, depth: usize) {
        if depth > 4 {
            self.out.push(' ');
            self.scalar(indent);
            return;
        }
        match self.pick(6) {
            0 => {
                // nested mapping below
                self.line_end();
                let step = 1 + self.pick(4);
                self.map(indent + step, depth + 1, true);
            }
            1 => {
                // sequence below (at the same indentation half of the time)
                self.line_end();
                let step = self.pick(3);
                self.seq(indent + step, depth + 1);
            }
            2 => {
                // plain scalar continued on the next line
                let w = self.word();
                self.out.push(' ');
                self.out.push_str(w);
                self.out.push('\n');
                let more = 1 + self.pick(3);
                self.pad(indent + more);
                let w = self.word();
                self.out.push_str(w);
                self.out.push('\n');
            }
            3 if self.pick(4) == 0 => self.line_end(), // empty
            _ => {
                self.out.push(' ');
                self.scalar(indent);
            }
        }
    }

    fn key(&mut self) {
        match self.pick(6) {
            0 => self.out.push_str("'k y'"),
            1 => self.out.push_str("\"q\""),
            _ => {
                let w = self.word();
                self.out.push_str(w);
            }
        }
        self.out.push(':');
    }

    /// A block mapping at `indent`; `fresh`: its first key starts a line.
    fn map(&mut self, indent: usize, depth: usize, fresh: bool) {
        let n = 1 + self.pick(4);
        for i in 0..n {
            if fresh || i > 0 {
                self.pad(indent);
            }
            self.key();
            self.value(indent, depth);
        }
    }

    fn seq(&mut self, indent: usize, depth: usize) {
        let n = 1 + self.pick(3);
        for _ in 0..n {
            self.pad(indent);
            self.out.push('-');
            match self.pick(5) {
                0 | 1 => {
                    let gap = 1 + self.pick(2);
                    self.pad(gap);
                    self.map(indent + 1 + gap, depth + 1, false);
                }
                2 if depth < 4 => {
                    self.out.push(' ');
                    self.out.push('-');
                    self.value(indent + 2, depth + 1);
                }
                _ => self.value(indent, depth),
            }
        }
    }
}

fn generated(choices: &[u8]) -> String {
    let mut g = Gen {
        choices,
        at: 0,
        out: String::new(),
    };
    if g.pick(5) == 0 {
        g.out.push_str("---\n");
    }
    g.map(0, 1, true);
    if g.pick(3) == 0 {
        // no line break at the end of the file
        while g.out.ends_with('\n') {
            g.out.pop();
        }
    }
    if g.pick(4) == 0 {
        // Windows line breaks
        return g.out.replace('\n', "\r\n");
    }
    g.out
}
