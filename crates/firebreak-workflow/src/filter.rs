//! GitHub's filter patterns for `branches`, `tags` and `paths`, and the rules that decide
//! whether a `push` or `pull_request` event passes a trigger's filters.
//!
//! # Pattern syntax
//!
//! GitHub's dialect ("Filter pattern cheat sheet" in the workflow-syntax docs) is not the glob
//! syntax of `globset`, `glob` or gitignore: `?` and `+` are *quantifiers* on the preceding
//! character, as in a regular expression, not wildcards. So the matcher here is hand-written:
//!
//! | syntax | meaning |
//! |---|---|
//! | `*` | zero or more characters, never `/` |
//! | `**` | zero or more of any character, `/` included |
//! | `**/` | zero or more whole leading directories (`docs/**/*.md` matches `docs/README.md`) |
//! | `?` | zero or one of the preceding character (or `[...]` class) |
//! | `+` | one or more of the preceding character (or `[...]` class) |
//! | `[...]` | one character listed or in a range; only `a-z`, `A-Z` and `0-9` are allowed |
//! | `!` | first character only: the pattern *excludes* what it matches |
//! | `\` | the next character is literal (`\*`, `\!`, `\\`, …) |
//!
//! Everything else is literal and case-sensitive. A `?` or `+` at the very start of a pattern
//! (after a leading `!`) has nothing to quantify and is literal. A quantifier after a wildcard
//! is redundant (`*?`, `**?`) and accepted; the forms a regular-expression engine rejects as a
//! nested quantifier (`*+`, `a++`, `a?+`, `a+??`) are errors, as is any other malformed
//! pattern: [`validate_pattern`] reports them and [`glob_match`] treats them as matching nothing.
//! Matching is linear in `pattern × text` (no exponential backtracking).
//!
//! # Lists of patterns
//!
//! A list is read in order and the **last pattern that matches decides**: a positive match
//! includes, a `!` match excludes again, a later positive match re-includes
//! (`['*.md', '!README.md', 'README*']` includes `README.md`). Nothing matching means
//! "not included". Consequently a list made only of `!` patterns includes nothing — GitHub
//! requires at least one positive pattern next to negated ones and points to the `-ignore`
//! variant for exclusion-only filters. The `*-ignore` lists are read the same way, with
//! "included" meaning "ignored".
//!
//! # Event rules ([`push_matches`], [`pull_request_matches`])
//!
//! * `branches` must include the branch; `branches-ignore` must not ignore it (likewise tags).
//! * A `push` filter that names only branch filters does not run for tag pushes, and one that
//!   names only tag filters does not run for branch pushes. With neither, both run.
//! * Path filters are not evaluated for tag pushes.
//! * `paths`: at least one changed file must be included. `paths-ignore`: at least one changed
//!   file must not be ignored. When both are given both must hold. With no changed files at
//!   all, a defined path filter is not satisfied.
//! * Only the first [`MAX_DIFF_FILES`] (300) changed files are considered: "Diffs are limited
//!   to 300 files" ("Git diff comparisons" in GitHub's workflow syntax docs), and a match
//!   further down the list does not count.
//! * Changed files unknown (`None`: more than 1,000 commits pushed, or the diff timed out) →
//!   path filters pass, as GitHub always runs the workflow then.
//! * `pull_request` filters `branches`/`branches-ignore` against the **base** branch; tag
//!   filters do not apply to pull requests.
//!
//! ```
//! use firebreak_workflow::filter::{glob_match, push_matches, RefFilter};
//!
//! assert!(glob_match("v[12].[0-9]+.[0-9]+", "v1.10.1"));
//! assert!(glob_match("docs/**/*.md", "docs/README.md"));
//! assert!(!glob_match("*", "feature/x"));
//!
//! let on_push = RefFilter {
//!     branches: Some(vec!["main".into(), "releases/**".into(), "!releases/**-alpha".into()]),
//!     paths: Some(vec!["src/**".into()]),
//!     ..RefFilter::default()
//! };
//! let changed = vec!["src/lib.rs".to_string()];
//! assert!(push_matches(&on_push, "refs/heads/releases/2.0", Some(&changed)));
//! assert!(!push_matches(&on_push, "refs/heads/releases/2.0-alpha", Some(&changed)));
//! assert!(!push_matches(&on_push, "refs/tags/v2.0", None)); // only branch filters: no tags
//! ```

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// GitHub evaluates path filters against at most this many changed files.
pub const MAX_DIFF_FILES: usize = 300;

/// The ref and path filters of one `push` or `pull_request` trigger. `None` = key absent;
/// `Some(vec![])` = key present with no patterns (includes/ignores nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct RefFilter {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branches: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branches_ignore: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags_ignore: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paths_ignore: Option<Vec<String>>,
}

/// A malformed filter pattern.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("Invalid filter pattern '{pattern}': {kind} (at character {position})")]
pub struct FilterError {
    /// The whole pattern as written (including a leading `!`).
    pub pattern: String,
    /// 0-based index, in characters, of the offending character.
    pub position: usize,
    pub kind: FilterErrorKind,
}

/// What is wrong with a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FilterErrorKind {
    #[error("unexpected empty brackets '[]'")]
    EmptyBrackets,
    #[error("missing closing bracket ']' after '['")]
    UnclosedBracket,
    #[error("brackets can only contain a-z, A-Z and 0-9")]
    InvalidClassCharacter,
    #[error("invalid range; ranges can only include a-z, A-Z and 0-9")]
    InvalidRange,
    #[error("missing symbol after '\\'")]
    TrailingBackslash,
    #[error("nested quantifier")]
    NestedQuantifier,
}

/// The keys of an event's configuration whose values are lists of filter patterns.
pub const PATTERN_KEYS: &[&str] = &[
    "branches",
    "branches-ignore",
    "tags",
    "tags-ignore",
    "paths",
    "paths-ignore",
    "workflows",
];

/// Checks that `pattern` is a well-formed filter pattern.
pub fn validate_pattern(pattern: &str) -> Result<(), FilterError> {
    Pattern::compile(pattern).map(|_| ())
}

/// Whether `text` matches `pattern` as a whole. A leading `!` is ignored here (it only has a
/// meaning inside a list, see [`list_includes`]); a malformed pattern matches nothing.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    match Pattern::compile(pattern) {
        Ok(p) => p.matches(text),
        Err(_) => false,
    }
}

/// Evaluates an ordered pattern list against `text`: the last matching pattern decides
/// (positive → included, `!` → excluded); no match → not included. Malformed patterns
/// never match.
pub fn list_includes<S: AsRef<str>>(patterns: &[S], text: &str) -> bool {
    let compiled: Vec<Option<Pattern>> = patterns
        .iter()
        .map(|p| Pattern::compile(p.as_ref()).ok())
        .collect();
    compiled_list_includes(&compiled, text)
}

fn compiled_list_includes(patterns: &[Option<Pattern>], text: &str) -> bool {
    let chars: Vec<char> = text.chars().collect();
    let mut included = false;
    for p in patterns.iter().flatten() {
        if p.matches_chars(&chars) {
            included = !p.negated;
        }
    }
    included
}

fn compile_list(patterns: &[String]) -> Vec<Option<Pattern>> {
    patterns.iter().map(|p| Pattern::compile(p).ok()).collect()
}

/// Whether a `push` of `git_ref` with the given changed files passes `filter`.
///
/// `git_ref` is `refs/heads/<branch>` or `refs/tags/<tag>`; a name without a `refs/` prefix is
/// taken as a branch name. Any other `refs/…` ref is neither a branch nor a tag: it passes only
/// when no branch or tag filter is defined (its paths are still checked).
pub fn push_matches(filter: &RefFilter, git_ref: &str, changed_files: Option<&[String]>) -> bool {
    push_matches_in(Filters::of(filter), git_ref, changed_files)
}

/// The lists of a [`RefFilter`], borrowed (from a `RefFilter` or straight from a parsed
/// workflow's event configuration, without copying them).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Filters<'a> {
    pub branches: Option<&'a [String]>,
    pub branches_ignore: Option<&'a [String]>,
    pub tags: Option<&'a [String]>,
    pub tags_ignore: Option<&'a [String]>,
    pub paths: Option<&'a [String]>,
    pub paths_ignore: Option<&'a [String]>,
}

impl<'a> Filters<'a> {
    fn of(f: &'a RefFilter) -> Self {
        Filters {
            branches: f.branches.as_deref(),
            branches_ignore: f.branches_ignore.as_deref(),
            tags: f.tags.as_deref(),
            tags_ignore: f.tags_ignore.as_deref(),
            paths: f.paths.as_deref(),
            paths_ignore: f.paths_ignore.as_deref(),
        }
    }
}

/// [`push_matches`] over borrowed lists.
pub(crate) fn push_matches_in(
    filter: Filters<'_>,
    git_ref: &str,
    changed_files: Option<&[String]>,
) -> bool {
    let has_branch_filter = filter.branches.is_some() || filter.branches_ignore.is_some();
    let has_tag_filter = filter.tags.is_some() || filter.tags_ignore.is_some();
    if let Some(tag) = git_ref.strip_prefix("refs/tags/") {
        if has_branch_filter && !has_tag_filter {
            return false;
        }
        // Path filters are not evaluated for tag pushes.
        return name_passes(filter.tags, filter.tags_ignore, tag);
    }
    let branch = match git_ref.strip_prefix("refs/heads/") {
        Some(b) => Some(b),
        None if !git_ref.starts_with("refs/") => Some(git_ref),
        None => None,
    };
    match branch {
        Some(branch) => {
            if has_tag_filter && !has_branch_filter {
                return false;
            }
            if !name_passes(filter.branches, filter.branches_ignore, branch) {
                return false;
            }
        }
        None => {
            if has_branch_filter || has_tag_filter {
                return false;
            }
        }
    }
    paths_pass(filter, changed_files)
}

/// Whether a `pull_request` (or `pull_request_target`) into `base_branch` with the given changed
/// files passes `filter`. `base_branch` may be given with or without `refs/heads/`.
/// Tag filters are ignored (they do not apply to pull requests).
pub fn pull_request_matches(
    filter: &RefFilter,
    base_branch: &str,
    changed_files: Option<&[String]>,
) -> bool {
    pull_request_matches_in(Filters::of(filter), base_branch, changed_files)
}

/// [`pull_request_matches`] over borrowed lists.
pub(crate) fn pull_request_matches_in(
    filter: Filters<'_>,
    base_branch: &str,
    changed_files: Option<&[String]>,
) -> bool {
    let branch = base_branch
        .strip_prefix("refs/heads/")
        .unwrap_or(base_branch);
    name_passes(filter.branches, filter.branches_ignore, branch)
        && paths_pass(filter, changed_files)
}

fn name_passes(include: Option<&[String]>, ignore: Option<&[String]>, name: &str) -> bool {
    if let Some(include) = include {
        if !compiled_list_includes(&compile_list(include), name) {
            return false;
        }
    }
    if let Some(ignore) = ignore {
        if compiled_list_includes(&compile_list(ignore), name) {
            return false;
        }
    }
    true
}

fn paths_pass(filter: Filters<'_>, changed_files: Option<&[String]>) -> bool {
    let Some(files) = changed_files else {
        return true;
    };
    let files = &files[..files.len().min(MAX_DIFF_FILES)];
    if let Some(paths) = filter.paths {
        let compiled = compile_list(paths);
        if !files.iter().any(|f| compiled_list_includes(&compiled, f)) {
            return false;
        }
    }
    if let Some(ignore) = filter.paths_ignore {
        let compiled = compile_list(ignore);
        if files.iter().all(|f| compiled_list_includes(&compiled, f)) {
            return false;
        }
    }
    true
}

// ---------------------------------------------------------------------------------------------
// Compilation and matching

#[derive(Debug, Clone)]
enum Atom {
    Char(char),
    /// Inclusive ranges; a single character is a range of one.
    Class(Vec<(char, char)>),
    /// `*`: any character but `/`.
    NotSlash,
    /// `**`: any character.
    Any,
    /// `**/`: empty, or at least one character followed by `/` (i.e. `(.+/)?`).
    DirPrefix,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rep {
    One,
    Optional,
    ZeroOrMore,
}

#[derive(Debug, Clone)]
struct Token {
    atom: Atom,
    rep: Rep,
}

/// What the last emitted element was, for deciding what a `?` or `+` means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Last {
    /// Nothing yet: a quantifier here is literal.
    Start,
    /// A single-character atom that can take a quantifier.
    Atom,
    /// A wildcard; `?` after it is redundant, `+` is a nested quantifier.
    Wild,
    /// A quantified atom; one more `?` is a (meaningless) laziness marker.
    Quantified,
    /// A quantified atom already followed by `?`.
    Lazy,
}

#[derive(Debug, Clone)]
struct Pattern {
    negated: bool,
    tokens: Vec<Token>,
}

impl Atom {
    fn accepts(&self, c: char) -> bool {
        match self {
            Atom::Char(x) => *x == c,
            Atom::Class(ranges) => ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi),
            Atom::NotSlash => c != '/',
            Atom::Any => true,
            Atom::DirPrefix => false,
        }
    }
}

fn range_ok(lo: char, hi: char) -> bool {
    let same_group = (lo.is_ascii_digit() && hi.is_ascii_digit())
        || (lo.is_ascii_lowercase() && hi.is_ascii_lowercase())
        || (lo.is_ascii_uppercase() && hi.is_ascii_uppercase())
        // `A-z` is accepted (as a regular expression would: it spans `[\]^_` and backtick too).
        || (lo.is_ascii_uppercase() && hi.is_ascii_lowercase());
    same_group && lo <= hi
}

impl Pattern {
    fn compile(pattern: &str) -> Result<Pattern, FilterError> {
        let cs: Vec<char> = pattern.chars().collect();
        let err = |position: usize, kind: FilterErrorKind| FilterError {
            pattern: pattern.to_owned(),
            position,
            kind,
        };
        let negated = cs.first() == Some(&'!');
        let mut i = usize::from(negated);
        let mut tokens: Vec<Token> = Vec::new();
        let mut last = Last::Start;
        let push = |tokens: &mut Vec<Token>, atom: Atom| {
            tokens.push(Token {
                atom,
                rep: Rep::One,
            })
        };
        while i < cs.len() {
            let c = cs[i];
            match c {
                '*' => {
                    if cs.get(i + 1) == Some(&'*') {
                        if cs.get(i + 2) == Some(&'/') {
                            push(&mut tokens, Atom::DirPrefix);
                            i += 3;
                        } else {
                            tokens.push(Token {
                                atom: Atom::Any,
                                rep: Rep::ZeroOrMore,
                            });
                            i += 2;
                        }
                    } else {
                        tokens.push(Token {
                            atom: Atom::NotSlash,
                            rep: Rep::ZeroOrMore,
                        });
                        i += 1;
                    }
                    last = Last::Wild;
                }
                '?' | '+' => {
                    match last {
                        Last::Start => {
                            push(&mut tokens, Atom::Char(c));
                            last = Last::Atom;
                        }
                        Last::Atom => {
                            // The last token is the single-character atom being quantified.
                            if let Some(tok) = tokens.last_mut() {
                                if c == '?' {
                                    tok.rep = Rep::Optional;
                                } else {
                                    // x+ == x x*
                                    let atom = tok.atom.clone();
                                    tokens.push(Token {
                                        atom,
                                        rep: Rep::ZeroOrMore,
                                    });
                                }
                            }
                            last = Last::Quantified;
                        }
                        Last::Wild if c == '?' => {}
                        Last::Quantified if c == '?' => last = Last::Lazy,
                        Last::Wild | Last::Quantified | Last::Lazy => {
                            return Err(err(i, FilterErrorKind::NestedQuantifier));
                        }
                    }
                    i += 1;
                }
                '[' => {
                    let open = i;
                    let mut j = i + 1;
                    if cs.get(j) == Some(&']') {
                        return Err(err(j, FilterErrorKind::EmptyBrackets));
                    }
                    let mut ranges = Vec::new();
                    loop {
                        let Some(&x) = cs.get(j) else {
                            return Err(err(open, FilterErrorKind::UnclosedBracket));
                        };
                        if x == ']' {
                            break;
                        }
                        if x == '-' {
                            return Err(err(j, FilterErrorKind::InvalidRange));
                        }
                        if !x.is_ascii_alphanumeric() {
                            return Err(err(j, FilterErrorKind::InvalidClassCharacter));
                        }
                        match (cs.get(j + 1), cs.get(j + 2)) {
                            (Some('-'), Some(&hi)) if hi != ']' => {
                                if !range_ok(x, hi) {
                                    return Err(err(j + 1, FilterErrorKind::InvalidRange));
                                }
                                ranges.push((x, hi));
                                j += 3;
                            }
                            _ => {
                                ranges.push((x, x));
                                j += 1;
                            }
                        }
                    }
                    push(&mut tokens, Atom::Class(ranges));
                    last = Last::Atom;
                    i = j + 1;
                }
                '\\' => {
                    let Some(&next) = cs.get(i + 1) else {
                        return Err(err(i, FilterErrorKind::TrailingBackslash));
                    };
                    push(&mut tokens, Atom::Char(next));
                    last = Last::Atom;
                    i += 2;
                }
                _ => {
                    push(&mut tokens, Atom::Char(c));
                    last = Last::Atom;
                    i += 1;
                }
            }
        }
        Ok(Pattern { negated, tokens })
    }

    fn matches(&self, text: &str) -> bool {
        let chars: Vec<char> = text.chars().collect();
        self.matches_chars(&chars)
    }

    /// Dynamic programming over (token, position), one row at a time from the last token:
    /// `next[i]` = tokens after the current one match `text[i..]`.
    fn matches_chars(&self, text: &[char]) -> bool {
        let n = text.len();
        let mut next = vec![false; n + 1];
        next[n] = true;
        let mut cur = vec![false; n + 1];
        for tok in self.tokens.iter().rev() {
            match (&tok.atom, tok.rep) {
                (Atom::DirPrefix, _) => {
                    // (.+/)? : skip it, or consume text[i..j] with j >= i + 2 and text[j-1] == '/'.
                    let mut reachable = false;
                    for i in (0..=n).rev() {
                        if i + 2 <= n && text[i + 1] == '/' && next[i + 2] {
                            reachable = true;
                        }
                        cur[i] = next[i] || reachable;
                    }
                }
                (atom, Rep::One) => {
                    for i in (0..=n).rev() {
                        cur[i] = i < n && atom.accepts(text[i]) && next[i + 1];
                    }
                }
                (atom, Rep::Optional) => {
                    for i in (0..=n).rev() {
                        cur[i] = next[i] || (i < n && atom.accepts(text[i]) && next[i + 1]);
                    }
                }
                (atom, Rep::ZeroOrMore) => {
                    for i in (0..=n).rev() {
                        cur[i] = next[i] || (i < n && atom.accepts(text[i]) && cur[i + 1]);
                    }
                }
            }
            std::mem::swap(&mut cur, &mut next);
        }
        next[0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    fn yes(pattern: &str, texts: &[&str]) {
        for t in texts {
            assert!(glob_match(pattern, t), "{pattern:?} should match {t:?}");
        }
    }

    fn no(pattern: &str, texts: &[&str]) {
        for t in texts {
            assert!(
                !glob_match(pattern, t),
                "{pattern:?} should not match {t:?}"
            );
        }
    }

    // --- the cheat sheet: branches and tags -----------------------------------------------

    #[test]
    fn cheat_sheet_branches_and_tags() {
        yes("feature/*", &["feature/my-branch", "feature/your-branch"]);
        no(
            "feature/*",
            &["feature/beta-a/my-branch", "feature", "features/x"],
        );
        yes(
            "feature/**",
            &[
                "feature/beta-a/my-branch",
                "feature/your-branch",
                "feature/mona/the/octocat",
            ],
        );
        yes("main", &["main"]);
        yes("releases/mona-the-octocat", &["releases/mona-the-octocat"]);
        yes("*", &["main", "releases"]);
        no("*", &["all/the/branches", "every/tag"]);
        yes("**", &["all/the/branches", "every/tag", "main", ""]);
        yes("*feature", &["mona-feature", "feature", "ver-10-feature"]);
        no("*feature", &["feature-x", "a/feature"]);
        yes("v2*", &["v2", "v2.0", "v2.9"]);
        no("v2*", &["v3", "v2/x"]);
        yes("v[12].[0-9]+.[0-9]+", &["v1.10.1", "v2.0.0", "v1.0.0"]);
        no(
            "v[12].[0-9]+.[0-9]+",
            &["v3.0.0", "v1..1", "v1.a.1", "v1.0."],
        );
    }

    // --- the cheat sheet: paths ----------------------------------------------------------------

    #[test]
    fn cheat_sheet_paths() {
        yes("*", &["README.md", "server.rb"]);
        no("*", &["path/with/slash"]);
        yes("*.jsx?", &["page.js", "page.jsx"]);
        no("*.jsx?", &["page.jsxx", "page.j"]);
        yes("**", &["all/the/files.md"]);
        yes("*.js", &["app.js", "index.js"]);
        no("*.js", &["js/index.js"]);
        yes("**.js", &["index.js", "js/index.js", "src/js/app.js"]);
        yes("docs/*", &["docs/README.md", "docs/file.txt"]);
        no("docs/*", &["docs/mona/octocat.txt"]);
        yes("docs/**", &["docs/README.md", "docs/mona/octocat.txt"]);
        yes(
            "docs/**/*.md",
            &[
                "docs/README.md",
                "docs/mona/hello-world.md",
                "docs/a/markdown/file.md",
            ],
        );
        no("docs/**/*.md", &["docs/a/file.txt", "README.md"]);
        yes(
            "**/docs/**",
            &[
                "docs/hello.md",
                "dir/docs/my-file.txt",
                "space/docs/plan/space.doc",
            ],
        );
        no("**/docs/**", &["mydocs/x", "docs"]);
        yes("**/README.md", &["README.md", "js/README.md"]);
        no("**/README.md", &["xREADME.md", "/README.md"]);
        yes("**/*src/**", &["a/src/app.js", "my-src/code/js/app.js"]);
        yes("**/*-post.md", &["my-post.md", "path/their-post.md"]);
        yes(
            "**/migrate-*.sql",
            &[
                "migrate-10909.sql",
                "db/migrate-v1.0.sql",
                "db/sept/migrate-v1.sql",
            ],
        );
        no(".yml", &["fyml"]);
    }

    #[test]
    fn cheat_sheet_negation_lists() {
        let p = s(&["*.md", "!README.md"]);
        assert!(list_includes(&p, "hello.md"));
        assert!(!list_includes(&p, "README.md"));
        assert!(!list_includes(&p, "docs/hello.md"));
        let p = s(&["*.md", "!README.md", "README*"]);
        assert!(list_includes(&p, "hello.md"));
        assert!(list_includes(&p, "README.md"));
        assert!(list_includes(&p, "README.doc"));
        // A `!` before any positive match has nothing to undo.
        let p = s(&["!README.md", "*.md"]);
        assert!(list_includes(&p, "README.md"));
        // Only negative patterns: nothing is ever included.
        let p = s(&["!docs/**"]);
        assert!(!list_includes(&p, "src/main.rs"));
        assert!(!list_includes(&p, "docs/x"));
        assert!(!list_includes::<String>(&[], "x"));
    }

    #[test]
    fn escapes_and_literals() {
        yes("\\!file", &["!file"]);
        yes("escape\\\\backslash", &["escape\\backslash"]);
        yes("a\\*b", &["a*b"]);
        no("a\\*b", &["axb", "ab"]);
        yes("\\[x]", &["[x]"]);
        yes("a\\?", &["a?"]);
        no("a\\?", &["a"]);
        yes("a\\.?b", &["ab", "a.b"]);
        // `!` is only special first; glob_match ignores a leading one.
        yes("a!b", &["a!b"]);
        yes("!main", &["main"]);
        // A quantifier with nothing before it is literal.
        yes("?x", &["?x"]);
        yes("+x", &["+x"]);
        yes("!+x", &["+x"]);
        // Unicode literals are compared per character.
        yes("ré?sumé", &["résumé", "rsumé"]);
        // Case-sensitive.
        no("Main", &["main"]);
        // Empty pattern matches only the empty string.
        yes("", &[""]);
        no("", &["a"]);
    }

    #[test]
    fn quantifiers() {
        yes("ab+c", &["abc", "abbbc"]);
        no("ab+c", &["ac"]);
        yes("ab?c", &["ac", "abc"]);
        no("ab?c", &["abbc"]);
        yes("[0-9]+", &["0", "123"]);
        no("[0-9]+", &["", "1a"]);
        yes("[ab]?c", &["c", "ac", "bc"]);
        // Redundant quantifiers after wildcards and lazy markers.
        yes("a*?", &["a", "abc"]);
        yes("a**?", &["a/b"]);
        yes("a+?", &["a", "aa"]);
        yes("a??", &["", "a"]);
        yes("**/?x", &["x", "d/x"]);
    }

    #[test]
    fn classes() {
        yes("[CB]at", &["Cat", "Bat"]);
        no("[CB]at", &["cat", "at"]);
        yes("[a-cX-Z5-7]", &["a", "c", "Y", "6"]);
        no("[a-cX-Z5-7]", &["d", "W", "8", "-"]);
        yes("[A-z]", &["_", "m"]);
    }

    #[test]
    fn globstar_slash_details() {
        // `**/` is (.+/)? — zero or more leading directories.
        yes("a/**/b", &["a/b", "a/x/b", "a/x/y/b"]);
        no("a/**/b", &["ab", "a/xb"]);
        yes("a**/b", &["ab", "ax/b", "a/x/b"]);
        yes("**/", &["", "x/", "x/y/"]);
        no("**/", &["/", "x"]);
        yes("***", &["a/b"]);
    }

    #[test]
    fn validation_errors() {
        let kind = |p: &str| validate_pattern(p).map_err(|e| (e.kind, e.position));
        assert_eq!(kind("a[]"), Err((FilterErrorKind::EmptyBrackets, 2)));
        assert_eq!(kind("a[bc"), Err((FilterErrorKind::UnclosedBracket, 1)));
        assert_eq!(
            kind("[a.]"),
            Err((FilterErrorKind::InvalidClassCharacter, 2))
        );
        assert_eq!(kind("[-a]"), Err((FilterErrorKind::InvalidRange, 1)));
        assert_eq!(kind("[a-]"), Err((FilterErrorKind::InvalidRange, 2)));
        assert_eq!(kind("[z-a]"), Err((FilterErrorKind::InvalidRange, 2)));
        assert_eq!(kind("[a-9]"), Err((FilterErrorKind::InvalidRange, 2)));
        assert_eq!(kind("abc\\"), Err((FilterErrorKind::TrailingBackslash, 3)));
        assert_eq!(kind("*+"), Err((FilterErrorKind::NestedQuantifier, 1)));
        assert_eq!(kind("a++"), Err((FilterErrorKind::NestedQuantifier, 2)));
        assert_eq!(kind("a?+"), Err((FilterErrorKind::NestedQuantifier, 2)));
        assert_eq!(kind("a+??"), Err((FilterErrorKind::NestedQuantifier, 3)));
        assert_eq!(kind("!a[]"), Err((FilterErrorKind::EmptyBrackets, 3)));
        for ok in [
            "*",
            "**",
            "v[12].[0-9]+.[0-9]+",
            "!docs/**",
            "\\[",
            "",
            "!",
            "a!b",
            "?",
        ] {
            assert_eq!(validate_pattern(ok), Ok(()), "{ok:?}");
        }
        let e = validate_pattern("feat[").err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref().unwrap_or_default(),
            "Invalid filter pattern 'feat[': missing closing bracket ']' after '[' (at character 4)"
        );
        // Malformed patterns match nothing.
        assert!(!glob_match("a[", "a["));
        assert!(!list_includes(&s(&["[", "!x"]), "["));
    }

    // --- events ----------------------------------------------------------------------------

    fn files(v: &[&str]) -> Vec<String> {
        s(v)
    }

    #[test]
    fn push_without_filters_runs_for_everything() {
        let f = RefFilter::default();
        assert!(push_matches(&f, "refs/heads/main", None));
        assert!(push_matches(&f, "refs/tags/v1", None));
        assert!(push_matches(&f, "refs/heads/x", Some(&files(&["a"]))));
        assert!(push_matches(&f, "refs/heads/x", Some(&[])));
    }

    #[test]
    fn push_branch_only_filters_ignore_tags_and_vice_versa() {
        let branches = RefFilter {
            branches: Some(s(&["main", "releases/**"])),
            ..Default::default()
        };
        assert!(push_matches(&branches, "refs/heads/main", None));
        assert!(push_matches(&branches, "refs/heads/releases/v1/x", None));
        assert!(!push_matches(&branches, "refs/heads/dev", None));
        assert!(!push_matches(&branches, "refs/tags/main", None));
        let ignore = RefFilter {
            branches_ignore: Some(s(&["dev/**"])),
            ..Default::default()
        };
        assert!(push_matches(&ignore, "refs/heads/main", None));
        assert!(!push_matches(&ignore, "refs/heads/dev/x", None));
        assert!(!push_matches(&ignore, "refs/tags/v1", None));
        let tags = RefFilter {
            tags: Some(s(&["v*"])),
            ..Default::default()
        };
        assert!(push_matches(&tags, "refs/tags/v1.0", None));
        assert!(!push_matches(&tags, "refs/tags/x1.0", None));
        assert!(!push_matches(&tags, "refs/heads/v1.0", None));
        let tags_ignore = RefFilter {
            tags_ignore: Some(s(&["*-rc*"])),
            ..Default::default()
        };
        assert!(push_matches(&tags_ignore, "refs/tags/v1", None));
        assert!(!push_matches(&tags_ignore, "refs/tags/v1-rc1", None));
        assert!(!push_matches(&tags_ignore, "refs/heads/main", None));
        // Both kinds defined: each applies to its own kind of ref.
        let both = RefFilter {
            branches: Some(s(&["main"])),
            tags: Some(s(&["v*"])),
            ..Default::default()
        };
        assert!(push_matches(&both, "refs/heads/main", None));
        assert!(!push_matches(&both, "refs/heads/dev", None));
        assert!(push_matches(&both, "refs/tags/v2", None));
        assert!(!push_matches(&both, "refs/tags/x", None));
    }

    #[test]
    fn push_branch_negation() {
        // The docs' example: releases/** but not releases/**-alpha.
        let f = RefFilter {
            branches: Some(s(&["releases/**", "!releases/**-alpha"])),
            ..Default::default()
        };
        assert!(push_matches(&f, "refs/heads/releases/10", None));
        assert!(push_matches(&f, "refs/heads/releases/beta/mona", None));
        assert!(!push_matches(&f, "refs/heads/releases/10-alpha", None));
        assert!(!push_matches(&f, "refs/heads/releases/beta/3-alpha", None));
        assert!(!push_matches(&f, "refs/heads/main", None));
    }

    #[test]
    fn push_paths() {
        let f = RefFilter {
            paths: Some(s(&["**.js"])),
            ..Default::default()
        };
        assert!(push_matches(
            &f,
            "refs/heads/main",
            Some(&files(&["README.md", "src/app.js"]))
        ));
        assert!(!push_matches(
            &f,
            "refs/heads/main",
            Some(&files(&["README.md"]))
        ));
        assert!(!push_matches(&f, "refs/heads/main", Some(&[])));
        // Unknown diff → runs.
        assert!(push_matches(&f, "refs/heads/main", None));
        // Not evaluated for tags.
        assert!(push_matches(
            &f,
            "refs/tags/v1",
            Some(&files(&["README.md"]))
        ));

        let ignore = RefFilter {
            paths_ignore: Some(s(&["docs/**"])),
            ..Default::default()
        };
        assert!(!push_matches(
            &ignore,
            "refs/heads/main",
            Some(&files(&["docs/a.md", "docs/b/c.md"]))
        ));
        assert!(push_matches(
            &ignore,
            "refs/heads/main",
            Some(&files(&["docs/a.md", "src/x.rs"]))
        ));
        assert!(!push_matches(&ignore, "refs/heads/main", Some(&[])));

        // Only the first 300 files count.
        let mut many: Vec<String> = (0..MAX_DIFF_FILES)
            .map(|i| format!("docs/{i}.md"))
            .collect();
        many.push("src/late.rs".to_owned());
        assert!(!push_matches(&f, "refs/heads/main", Some(&many)));
        assert!(!push_matches(&ignore, "refs/heads/main", Some(&many)));
        many.insert(0, "src/early.js".to_owned());
        assert!(push_matches(&f, "refs/heads/main", Some(&many)));
        assert!(push_matches(&ignore, "refs/heads/main", Some(&many)));

        // paths with negation: the docs' sub/** + !sub/**/*.md style.
        let neg = RefFilter {
            paths: Some(s(&["sub/project/**", "!sub/**/README.md"])),
            ..Default::default()
        };
        assert!(push_matches(
            &neg,
            "refs/heads/x",
            Some(&files(&["sub/project/a.rs"]))
        ));
        assert!(!push_matches(
            &neg,
            "refs/heads/x",
            Some(&files(&["sub/project/README.md"]))
        ));
        assert!(push_matches(
            &neg,
            "refs/heads/x",
            Some(&files(&["sub/project/README.md", "sub/project/b"]))
        ));
        // Only negative patterns in `paths`: never runs.
        let only_neg = RefFilter {
            paths: Some(s(&["!docs/**"])),
            ..Default::default()
        };
        assert!(!push_matches(
            &only_neg,
            "refs/heads/x",
            Some(&files(&["src/a.rs"]))
        ));

        // Branch and paths must both hold.
        let both = RefFilter {
            branches: Some(s(&["main"])),
            paths: Some(s(&["src/**"])),
            ..Default::default()
        };
        assert!(push_matches(
            &both,
            "refs/heads/main",
            Some(&files(&["src/a"]))
        ));
        assert!(!push_matches(
            &both,
            "refs/heads/main",
            Some(&files(&["doc/a"]))
        ));
        assert!(!push_matches(
            &both,
            "refs/heads/dev",
            Some(&files(&["src/a"]))
        ));
        // paths + paths-ignore together: both must hold.
        let pi = RefFilter {
            paths: Some(s(&["src/**"])),
            paths_ignore: Some(s(&["**.md"])),
            ..Default::default()
        };
        assert!(push_matches(
            &pi,
            "refs/heads/x",
            Some(&files(&["src/a.rs"]))
        ));
        assert!(!push_matches(
            &pi,
            "refs/heads/x",
            Some(&files(&["src/a.md"]))
        ));
    }

    #[test]
    fn push_odd_refs() {
        let f = RefFilter {
            branches: Some(s(&["main"])),
            ..Default::default()
        };
        assert!(push_matches(&f, "main", None));
        assert!(!push_matches(&f, "refs/notes/main", None));
        assert!(push_matches(&RefFilter::default(), "refs/notes/main", None));
    }

    #[test]
    fn empty_lists_are_defined() {
        let f = RefFilter {
            branches: Some(vec![]),
            ..Default::default()
        };
        assert!(!push_matches(&f, "refs/heads/main", None));
        assert!(!push_matches(&f, "refs/tags/v1", None));
        let f = RefFilter {
            branches_ignore: Some(vec![]),
            ..Default::default()
        };
        assert!(push_matches(&f, "refs/heads/main", None));
    }

    #[test]
    fn pull_request_filters() {
        let f = RefFilter {
            branches: Some(s(&["main", "releases/**"])),
            ..Default::default()
        };
        assert!(pull_request_matches(&f, "main", None));
        assert!(pull_request_matches(&f, "refs/heads/releases/1", None));
        assert!(!pull_request_matches(&f, "dev", None));
        let f = RefFilter {
            branches_ignore: Some(s(&["mona/octocat", "releases/**-alpha"])),
            tags: Some(s(&["never"])),
            ..Default::default()
        };
        assert!(pull_request_matches(&f, "main", None));
        assert!(!pull_request_matches(&f, "mona/octocat", None));
        assert!(!pull_request_matches(&f, "releases/1-alpha", None));
        let f = RefFilter {
            paths: Some(s(&["**.js"])),
            ..Default::default()
        };
        assert!(pull_request_matches(&f, "main", Some(&files(&["a.js"]))));
        assert!(!pull_request_matches(&f, "main", Some(&files(&["a.ts"]))));
        assert!(pull_request_matches(&f, "main", None));
    }

    #[test]
    fn ref_filter_serde_uses_workflow_keys() {
        let f = RefFilter {
            branches_ignore: Some(s(&["x"])),
            ..Default::default()
        };
        let json = serde_json::to_string(&f).unwrap_or_default();
        assert_eq!(json, r#"{"branches-ignore":["x"]}"#);
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        /// Reference matcher: plain backtracking over the same tokens.
        fn naive(toks: &[Token], text: &[char]) -> bool {
            let Some((t, rest)) = toks.split_first() else {
                return text.is_empty();
            };
            let step = |a: &Atom| text.first().is_some_and(|&c| a.accepts(c));
            match (&t.atom, t.rep) {
                (Atom::DirPrefix, _) => {
                    naive(rest, text)
                        || (2..=text.len()).any(|j| text[j - 1] == '/' && naive(rest, &text[j..]))
                }
                (a, Rep::One) => step(a) && naive(rest, &text[1..]),
                (a, Rep::Optional) => naive(rest, text) || (step(a) && naive(rest, &text[1..])),
                (a, Rep::ZeroOrMore) => naive(rest, text) || (step(a) && naive(toks, &text[1..])),
            }
        }

        proptest! {
            #[test]
            fn never_panics(pattern in "[-a-c/*?+!\\[\\]\\\\.0-9é]{0,24}", text in "[a-c/.!0-9é+?*]{0,24}") {
                let _ = validate_pattern(&pattern);
                let _ = glob_match(&pattern, &text);
                let _ = list_includes(&[pattern.clone(), format!("!{pattern}")], &text);
            }

            #[test]
            fn any_string_never_panics(pattern in any::<String>(), text in any::<String>()) {
                let _ = validate_pattern(&pattern);
                let _ = glob_match(&pattern, &text);
            }

            #[test]
            fn dp_agrees_with_backtracking(pattern in "[ab/*?+\\[\\]]{0,10}", text in "[ab/]{0,10}") {
                if let Ok(p) = Pattern::compile(&pattern) {
                    let chars: Vec<char> = text.chars().collect();
                    prop_assert_eq!(p.matches_chars(&chars), naive(&p.tokens, &chars));
                }
            }

            #[test]
            fn plain_text_matches_only_itself(p in "[a-z/.-]{0,8}", t in "[a-z/.-]{0,8}") {
                prop_assert_eq!(glob_match(&p, &t), p == t);
            }

            #[test]
            fn escaped_literal_matches_itself(text in "[ -~]{0,16}") {
                let mut pattern = String::new();
                for c in text.chars() {
                    pattern.push('\\');
                    pattern.push(c);
                }
                prop_assert!(glob_match(&pattern, &text));
            }
        }
    }
}
