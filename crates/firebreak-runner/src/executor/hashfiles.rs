//! `hashFiles(…)` as GitHub's runner computes it: its `hashFiles` script over
//! `@actions/glob`, reimplemented here because the expression is evaluated
//! synchronously on the host (a Node.js process per call would cost more
//! than the hashing).
//!
//! * An optional first argument `--follow-symbolic-links` (any case); any
//!   other first argument starting with `--` is an error. Without it,
//!   symbolic links to directories are not walked (a link to a file is still
//!   hashed, through the link).
//! * The other arguments are joined with newlines; each line, trimmed, is a
//!   pattern (empty lines and `#` comments skipped; a leading `!` negates).
//!   Relative patterns are relative to the workspace. Every pattern also
//!   matches everything below what it matches (`implicitDescendants`).
//! * Patterns match as `minimatch` does there: per `/`-separated segment,
//!   `**` for any number of segments, `*` and `?` within one, `[…]`
//!   classes; dot-files match like any others. The last pattern that
//!   matches a file decides whether it is in.
//! * Files are visited search root by search root (the literal part of each
//!   positive pattern, in pattern order, nested roots folded into their
//!   ancestor), depth first with each directory's entries in byte order,
//!   `.git` included; only regular files inside the workspace are hashed.
//! * The result is the hex SHA-256 of the concatenated SHA-256 digests of
//!   the files, or `''` when no file matched.

use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

/// Computes `hashFiles(args…)` over the workspace `root`.
pub(crate) fn hash_files(root: &Path, args: &[String]) -> Result<String, String> {
    let (follow, args) = match args.first() {
        Some(a) if a.starts_with("--") => {
            if !a.eq_ignore_ascii_case("--follow-symbolic-links") {
                return Err(format!(
                    "Invalid glob option {a}, available option: '--follow-symbolic-links'"
                ));
            }
            (true, &args[1..])
        }
        _ => (false, args),
    };
    let patterns = parse_patterns(root, &args.join("\n"));
    let mut outer = Sha256::new();
    let mut any = false;
    for search in search_roots(&patterns) {
        let mut files = Vec::new();
        walk(&search, follow, &mut files);
        for file in files {
            let Ok(rel) = file.strip_prefix(root) else {
                continue; // outside the workspace: GitHub skips it too
            };
            if rel.as_os_str().is_empty() {
                continue;
            }
            let rel = rel.to_string_lossy();
            if !included(&patterns, &rel) {
                continue;
            }
            // Through a link to a file; a link to a directory is no file.
            match std::fs::metadata(&file) {
                Ok(m) if m.is_file() => {}
                _ => continue,
            }
            let bytes =
                std::fs::read(&file).map_err(|e| format!("hashFiles: {}: {e}", file.display()))?;
            outer.update(Sha256::digest(&bytes));
            any = true;
        }
    }
    Ok(if any {
        outer
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    } else {
        String::new()
    })
}

/// One pattern: negated or not, its segments relative to the workspace
/// (`None` when it points outside it), and its search root.
struct Pattern {
    negate: bool,
    segments: Option<Vec<String>>,
    search: PathBuf,
}

fn parse_patterns(root: &Path, text: &str) -> Vec<Pattern> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut p = line.trim();
        if p.is_empty() || p.starts_with('#') {
            continue;
        }
        let mut negate = false;
        while let Some(rest) = p.strip_prefix('!') {
            negate = !negate;
            p = rest;
        }
        let abs = normalize(&root.join(p));
        let segments = abs.strip_prefix(root).ok().map(|rel| {
            rel.components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        });
        // The literal directories before the first segment with a glob character.
        let mut search = PathBuf::from("/");
        for c in abs.components().skip(1) {
            let s = c.as_os_str().to_string_lossy();
            if s.contains(['*', '?', '[']) {
                break;
            }
            search.push(c.as_os_str());
        }
        let descendants = segments
            .as_ref()
            .is_some_and(|s| s.last().map(String::as_str) != Some("**"));
        if descendants {
            let mut deeper = segments.clone().unwrap_or_default();
            deeper.push("**".into());
            out.push(Pattern {
                negate,
                segments: segments.clone(),
                search: search.clone(),
            });
            out.push(Pattern {
                negate,
                segments: Some(deeper),
                search,
            });
        } else {
            out.push(Pattern {
                negate,
                segments,
                search,
            });
        }
    }
    out
}

/// `a/./b/../c` → `a/c`, without touching the file system.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// The search roots of the positive patterns inside the workspace, in
/// pattern order, without those inside another.
fn search_roots(patterns: &[Pattern]) -> Vec<PathBuf> {
    // A pattern outside the workspace matches nothing that is hashed: its
    // root is not walked (GitHub walks it and skips every file).
    let candidates: Vec<&PathBuf> = patterns
        .iter()
        .filter(|p| !p.negate && p.segments.is_some())
        .map(|p| &p.search)
        .collect();
    let mut out: Vec<PathBuf> = Vec::new();
    for c in &candidates {
        let nested = candidates
            .iter()
            .any(|other| other != c && c.starts_with(other));
        if !nested && !out.contains(c) {
            out.push((*c).clone());
        }
    }
    out
}

/// Depth first from `path`, each directory's entries in byte order.
fn walk(path: &Path, follow: bool, out: &mut Vec<PathBuf>) {
    let meta = if follow {
        std::fs::metadata(path)
    } else {
        std::fs::symlink_metadata(path)
    };
    let Ok(meta) = meta else { return };
    if !meta.is_dir() {
        out.push(path.to_path_buf());
        return;
    }
    let Ok(rd) = std::fs::read_dir(path) else {
        return;
    };
    let mut names: Vec<std::ffi::OsString> = rd.flatten().map(|e| e.file_name()).collect();
    names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
    for name in names {
        walk(&path.join(name), follow, out);
    }
}

fn included(patterns: &[Pattern], rel: &str) -> bool {
    let path: Vec<&str> = rel.split('/').collect();
    let mut result = false;
    for p in patterns {
        if let Some(segs) = &p.segments {
            if match_segments(segs, &path) {
                result = !p.negate;
            }
        }
    }
    result
}

fn match_segments(pat: &[String], path: &[&str]) -> bool {
    match pat.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=path.len()).any(|skip| match_segments(rest, &path[skip..]))
        }
        Some((first, rest)) => match path.split_first() {
            Some((seg, more)) => {
                match_segment(first.as_bytes(), seg.as_bytes()) && match_segments(rest, more)
            }
            None => false,
        },
    }
}

/// One segment: `*` any run, `?` any one byte, `[…]` a class (`!` or `^`
/// negates, `a-z` ranges), `\` escapes; anything else literally.
fn match_segment(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| match_segment(rest, &s[i..])),
        Some((b'?', rest)) => !s.is_empty() && match_segment(rest, &s[1..]),
        Some((b'[', rest)) => match class(rest, s.first().copied()) {
            Some((true, after)) => match_segment(after, &s[1..]),
            Some((false, _)) => false,
            // No closing `]`: a literal `[`.
            None => s.first() == Some(&b'[') && match_segment(rest, &s[1..]),
        },
        Some((b'\\', rest)) if !rest.is_empty() => {
            s.first() == Some(&rest[0]) && match_segment(&rest[1..], &s[1..])
        }
        Some((c, rest)) => s.first() == Some(c) && match_segment(rest, &s[1..]),
    }
}

/// Whether `c` is in the class that starts at `p` (after `[`), and the
/// pattern after its `]`; `None` when the class never closes.
fn class(p: &[u8], c: Option<u8>) -> Option<(bool, &[u8])> {
    let (negate, mut i) = match p.first() {
        Some(b'!' | b'^') => (true, 1),
        _ => (false, 0),
    };
    let mut hit = false;
    let mut first = true;
    while i < p.len() {
        if p[i] == b']' && !first {
            let ok = c.is_some() && hit != negate;
            return Some((ok, &p[i + 1..]));
        }
        first = false;
        let lo = p[i];
        if i + 2 < p.len() && p[i + 1] == b'-' && p[i + 2] != b']' {
            if c.is_some_and(|c| lo <= c && c <= p[i + 2]) {
                hit = true;
            }
            i += 3;
        } else {
            if c == Some(lo) {
                hit = true;
            }
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[&str]) -> tempfile::TempDir {
        let t = tempfile::tempdir().expect("tempdir");
        for f in files {
            let p = t.path().join(f);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, f.as_bytes()).expect("write");
        }
        t
    }

    fn expected(files: &[&str]) -> String {
        let mut outer = Sha256::new();
        for f in files {
            outer.update(Sha256::digest(f.as_bytes()));
        }
        outer
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn hash(root: &Path, args: &[&str]) -> String {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        hash_files(root, &args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The case a review checked against the runner's own script: files in
    /// depth-first order with each directory sorted (`a/z.txt` before
    /// `a-b.txt`), and a directory pattern hashing what is below it.
    #[test]
    fn order_and_directories_as_on_github() {
        let t = tree(&["a/z.txt", "a-b.txt", "a.txt", "b/c.txt", "B.txt"]);
        assert_eq!(
            hash(t.path(), &["**/*.txt"]),
            expected(&["B.txt", "a/z.txt", "a-b.txt", "a.txt", "b/c.txt"])
        );
        assert_eq!(hash(t.path(), &["a"]), expected(&["a/z.txt"]));
        assert_eq!(hash(t.path(), &["a/"]), expected(&["a/z.txt"]));
        assert_eq!(hash(t.path(), &["nothing/*"]), "");
    }

    #[test]
    fn negation_search_roots_and_options() {
        let t = tree(&["src/a.rs", "src/gen/b.rs", "docs/x.md", ".hidden/y.rs"]);
        // The last matching pattern decides.
        assert_eq!(
            hash(t.path(), &["**/*.rs", "!src/gen/**", "src/gen/b.rs"]),
            expected(&[".hidden/y.rs", "src/a.rs", "src/gen/b.rs"])
        );
        assert_eq!(
            hash(t.path(), &["**/*.rs\n!**/gen/**\n# a comment\n"]),
            expected(&[".hidden/y.rs", "src/a.rs"])
        );
        // Search roots in pattern order.
        assert_eq!(
            hash(t.path(), &["src/**", "docs/**"]),
            expected(&["src/a.rs", "src/gen/b.rs", "docs/x.md"])
        );
        // Absolute patterns under the workspace; nothing outside it.
        let abs = format!("{}/docs/*.md", t.path().display());
        assert_eq!(hash(t.path(), &[&abs]), expected(&["docs/x.md"]));
        assert_eq!(hash(t.path(), &["../**"]), "");
        // Classes and single characters.
        assert_eq!(hash(t.path(), &["src/[a-c].r?"]), expected(&["src/a.rs"]));
        assert_eq!(
            hash(t.path(), &["--FOLLOW-symbolic-links", "docs/*"]),
            expected(&["docs/x.md"])
        );
        let err = hash_files(t.path(), &["--nope".into(), "*".into()]).expect_err("bad option");
        assert!(err.contains("--follow-symbolic-links"), "{err}");
    }

    #[test]
    fn symbolic_links() {
        let t = tree(&["real/f.txt", "g.txt"]);
        std::os::unix::fs::symlink(t.path().join("real"), t.path().join("linkdir")).expect("link");
        std::os::unix::fs::symlink(t.path().join("g.txt"), t.path().join("h.txt")).expect("link");
        // A link to a file is hashed through the link; a linked directory is
        // walked only when asked.
        assert_eq!(
            hash(t.path(), &["**/*.txt"]),
            expected(&["g.txt", "g.txt", "real/f.txt"])
        );
        assert_eq!(
            hash(t.path(), &["--follow-symbolic-links", "**/*.txt"]),
            expected(&["g.txt", "g.txt", "real/f.txt", "real/f.txt"])
        );
    }
}
