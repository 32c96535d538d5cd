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

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::sandbox::{ExecRequest, ExitStatus, OutputEvent, Sandbox, Stream};

/// The most output a sandbox's file listing or checksums may take on the host (1 million
/// paths of 200 bytes and more).
const LISTING_LIMIT: usize = 256 << 20;

/// What the walk needs to know of a file tree.
trait Tree {
    /// Whether `path` is a directory (following a symbolic link when
    /// `follow`); `None` when it does not exist.
    fn is_dir(&self, path: &Path, follow: bool) -> Option<bool>;
    /// The names in directory `dir`, in any order.
    fn children(&self, dir: &Path) -> Vec<OsString>;
    /// Whether `path` is a regular file, through symbolic links.
    fn is_file(&self, path: &Path) -> bool;
    /// Its real path, where cycles must be caught here (`None`: the listing
    /// already left them out).
    fn real_path(&self, path: &Path) -> Option<PathBuf>;
}

/// The host's file system.
struct HostTree;

impl Tree for HostTree {
    fn is_dir(&self, path: &Path, follow: bool) -> Option<bool> {
        let m = if follow {
            std::fs::metadata(path)
        } else {
            std::fs::symlink_metadata(path)
        };
        m.ok().map(|m| m.is_dir())
    }

    fn children(&self, dir: &Path) -> Vec<OsString> {
        std::fs::read_dir(dir)
            .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default()
    }

    fn is_file(&self, path: &Path) -> bool {
        std::fs::metadata(path).is_ok_and(|m| m.is_file())
    }

    fn real_path(&self, path: &Path) -> Option<PathBuf> {
        std::fs::canonicalize(path).ok()
    }
}

/// The optional `--follow-symbolic-links` first argument, and the patterns.
fn options(args: &[String]) -> Result<(bool, &[String]), String> {
    match args.first() {
        Some(a) if a.starts_with("--") => {
            if !a.eq_ignore_ascii_case("--follow-symbolic-links") {
                return Err(format!(
                    "Invalid glob option {a}, available option: '--follow-symbolic-links'"
                ));
            }
            Ok((true, &args[1..]))
        }
        _ => Ok((false, args)),
    }
}

/// The files `patterns` choose, in hashFiles' order, as paths relative to
/// the workspace `root`.
fn select(tree: &dyn Tree, root: &Path, follow: bool, patterns: &[Pattern]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for search in search_roots(patterns) {
        let mut files = Vec::new();
        walk(tree, &search, follow, &mut files);
        for file in files {
            let Ok(rel) = file.strip_prefix(root) else {
                continue; // outside the workspace: GitHub skips it too
            };
            if rel.as_os_str().is_empty() || !included(patterns, &rel.to_string_lossy()) {
                continue;
            }
            // Through a link to a file; a link to a directory is no file.
            if tree.is_file(&file) {
                out.push(rel.to_path_buf());
            }
        }
    }
    out
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Computes `hashFiles(args…)` over the workspace `root` on the host.
pub(crate) fn hash_files(root: &Path, args: &[String]) -> Result<String, String> {
    let (follow, args) = options(args)?;
    let patterns = parse_patterns(root, &args.join("\n"));
    let files = select(&HostTree, root, follow, &patterns);
    if files.is_empty() {
        return Ok(String::new());
    }
    let mut outer = Sha256::new();
    for rel in files {
        let file = root.join(&rel);
        let bytes =
            std::fs::read(&file).map_err(|e| format!("hashFiles: {}: {e}", file.display()))?;
        outer.update(Sha256::digest(&bytes));
    }
    Ok(hex(&outer.finalize()))
}

/// `hashFiles` over a workspace the host cannot read (inside a microVM):
/// one `find` lists the tree, the walk and matching run here, and one
/// `sha256sum` in the sandbox hashes the chosen files.
#[derive(Clone)]
pub struct GuestFiles {
    /// The job's sandbox.
    pub sandbox: Arc<dyn Sandbox>,
    /// The workspace, as the sandbox sees it.
    pub workspace: PathBuf,
    /// The job's cancellation (its timeout, Ctrl-C) also stops the commands.
    pub cancel: Option<tokio_util::sync::CancellationToken>,
}

impl std::fmt::Debug for GuestFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestFiles")
            .field("backend", &self.sandbox.backend())
            .field("workspace", &self.workspace)
            .finish()
    }
}

/// A tree read from `find ROOT… -printf '%y %Y %p\0'`, one entry per line with
/// `\`, newlines and carriage returns in names escaped as `\\`, `\n` and `\r`.
struct Listing {
    root: PathBuf,
    /// Relative path → (its own type, its type through links).
    kinds: HashMap<PathBuf, (char, char)>,
    children: HashMap<PathBuf, Vec<OsString>>,
}

impl Listing {
    fn parse(root: &Path, lines: &[String]) -> Listing {
        let mut kinds = HashMap::new();
        let mut children: HashMap<PathBuf, Vec<OsString>> = HashMap::new();
        for line in lines {
            let mut chars = line.chars();
            let (Some(own), Some(' '), Some(through), Some(' ')) =
                (chars.next(), chars.next(), chars.next(), chars.next())
            else {
                continue;
            };
            // `%p`: the start point (`./src`, `.`) and what is below it.
            let p = unescape(chars.as_str());
            let p = p.as_str();
            let p = if p == "." {
                ""
            } else {
                p.strip_prefix("./").unwrap_or(p)
            };
            let rel = PathBuf::from(p);
            if rel.as_os_str().is_empty() {
                continue;
            }
            let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();
            if let Some(name) = rel.file_name() {
                children
                    .entry(parent)
                    .or_default()
                    .push(name.to_os_string());
            }
            kinds.insert(rel, (own, through));
        }
        kinds.insert(PathBuf::new(), ('d', 'd'));
        Listing {
            root: root.to_path_buf(),
            kinds,
            children,
        }
    }

    fn kind(&self, path: &Path) -> Option<(char, char)> {
        self.kinds.get(path.strip_prefix(&self.root).ok()?).copied()
    }
}

/// Undoes the listing's escapes: `\\` is `\`, `\n` a newline, `\r` a carriage return.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

impl Tree for Listing {
    fn is_dir(&self, path: &Path, follow: bool) -> Option<bool> {
        self.kind(path)
            .map(|(own, through)| if follow { through } else { own } == 'd')
    }

    fn children(&self, dir: &Path) -> Vec<OsString> {
        dir.strip_prefix(&self.root)
            .ok()
            .and_then(|rel| self.children.get(rel).cloned())
            .unwrap_or_default()
    }

    fn is_file(&self, path: &Path) -> bool {
        self.kind(path).is_some_and(|(_, through)| through == 'f')
    }

    fn real_path(&self, _: &Path) -> Option<PathBuf> {
        None
    }
}

impl GuestFiles {
    /// Computes `hashFiles(args…)`; blocks the calling thread (expressions
    /// are evaluated synchronously) on the sandbox's two commands.
    pub fn hash(&self, args: &[String]) -> Result<String, String> {
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| "hashFiles: no runtime to reach the sandbox with".to_string())?;
        if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            return Err("hashFiles in this sandbox needs a multi-threaded runtime".into());
        }
        tokio::task::block_in_place(|| handle.block_on(self.hash_async(args)))
    }

    async fn hash_async(&self, args: &[String]) -> Result<String, String> {
        let (follow, rest) = options(args)?;
        let patterns = parse_patterns(&self.workspace, &rest.join("\n"));
        // Only the search roots are listed (not all of `target/` for `Cargo.lock`).
        let roots: Vec<String> = search_roots(&patterns)
            .iter()
            .filter_map(|r| r.strip_prefix(&self.workspace).ok())
            .map(|r| format!("./{}", r.display()))
            .collect();
        if roots.is_empty() {
            return Ok(String::new());
        }
        let find = if follow { "find -L" } else { "find" };
        // A root that does not exist, or a loop `-L` leaves out (as GitHub skips
        // it), is no error; anything else find cannot read is. Output comes back
        // in lines (a line's final `\r` dropped), so each entry ends in NUL and
        // `\`, newlines and carriage returns in names are escaped
        // (`Listing::parse` undoes it); find's own status is kept, and a failing
        // `sed` or `tr` is an error rather than an empty listing.
        let listed = self
            .run(
                &format!(
                    "t=$(mktemp) || exit 2; {find} \"$@\" -printf '%y %Y %p\\0' > \"$t\"; s=$?; \
                     sed -z 's/\\\\/\\\\\\\\/g; s/\\n/\\\\n/g; s/\\r/\\\\r/g' \"$t\" > \"$t.o\" && \
                     tr '\\0' '\\n' < \"$t.o\" || s=2; rm -f \"$t\" \"$t.o\"; exit $s"
                ),
                &roots,
                None,
                |err| {
                    err.iter().all(|l| {
                        l.contains("No such file or directory")
                            || l.contains("File system loop detected")
                    })
                },
            )
            .await?;
        let tree = Listing::parse(&self.workspace, &listed);
        let files = select(&tree, &self.workspace, follow, &patterns);
        if files.is_empty() {
            return Ok(String::new());
        }
        let mut list = Vec::new();
        for f in &files {
            list.extend_from_slice(f.as_os_str().as_encoded_bytes());
            list.push(0);
        }
        let sums = self
            .run("xargs -0 sha256sum --", &[], Some(list), |_| false)
            .await?;
        let mut outer = Sha256::new();
        let mut n = 0;
        for line in &sums {
            // `\` starts the line of a name sha256sum had to escape.
            let digest = line.trim_start_matches('\\').get(..64).unwrap_or_default();
            let bytes: Option<Vec<u8>> = (0..32)
                .map(|i| u8::from_str_radix(digest.get(i * 2..i * 2 + 2)?, 16).ok())
                .collect();
            let Some(bytes) = bytes else {
                return Err(format!("hashFiles: unexpected sha256sum output: {line}"));
            };
            outer.update(&bytes);
            n += 1;
        }
        if n != files.len() {
            return Err(format!(
                "hashFiles: {n} checksums for {} files in the sandbox",
                files.len()
            ));
        }
        Ok(hex(&outer.finalize()))
    }

    /// Runs `script` with `sh` in the workspace (`args` as `$@`); its stdout
    /// lines. A non-zero exit is an error unless it is 1 and `tolerable` says
    /// so of the stderr lines.
    async fn run(
        &self,
        script: &str,
        args: &[String],
        stdin: Option<Vec<u8>>,
        tolerable: impl Fn(&[String]) -> bool,
    ) -> Result<Vec<String>, String> {
        let mut argv = vec!["sh".to_string(), "-c".into(), script.into(), "sh".into()];
        argv.extend(args.iter().cloned());
        let mut req = ExecRequest::new(argv);
        req.timeout = Some(std::time::Duration::from_secs(300));
        req.cancel = self.cancel.clone();
        req.env.insert(
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
        req.env.insert("LC_ALL".into(), "C".into());
        req.cwd = Some(self.workspace.clone());
        req.stdin = stdin;
        // The default drain grace, not none: every line is needed, and with none the
        // lines still in the pipe when the command exits were dropped (CI once got 4
        // checksums of 6). Nothing here runs in the background, so no wait comes of it.
        let (tx, mut rx) = mpsc::channel::<OutputEvent>(1024);
        // What the sandbox (a guest, whose files the job controls) sends is held here: past
        // LISTING_LIMIT bytes the rest is drained unread and the call fails.
        let collect = async {
            let mut out = Vec::new();
            let mut err = Vec::new();
            let mut held = 0usize;
            while let Some(ev) = rx.recv().await {
                held = held.saturating_add(ev.line.len() + 1);
                if held > LISTING_LIMIT {
                    continue;
                }
                match ev.stream {
                    Stream::Stdout => out.push(ev.line),
                    Stream::Stderr => err.push(ev.line),
                }
            }
            (out, err, held > LISTING_LIMIT)
        };
        let (status, (out, err, too_long)) = tokio::join!(self.sandbox.exec(req, tx), collect);
        if too_long {
            return Err(format!(
                "hashFiles: the sandbox's file list is over {} MiB; match fewer files",
                LISTING_LIMIT >> 20
            ));
        }
        match status.map_err(|e| format!("hashFiles: {e}"))? {
            ExitStatus::Exited(0) => Ok(out),
            ExitStatus::Exited(1) if tolerable(&err) => Ok(out),
            other => Err(format!(
                "hashFiles: {script}: {other:?}: {}",
                err.join("; ")
            )),
        }
    }
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
            p = rest.trim();
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
        // Everything below what the pattern matches, too (`implicitDescendants`).
        let deeper = segments
            .as_ref()
            .filter(|s| s.last().map(String::as_str) != Some("**"))
            .map(|s| {
                let mut d = s.clone();
                d.push("**".into());
                d
            });
        out.push(Pattern {
            negate,
            segments,
            search: search.clone(),
        });
        if let Some(deeper) = deeper {
            out.push(Pattern {
                negate,
                segments: Some(deeper),
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
/// Following links, a directory already on the way down (a link back up)
/// is skipped, as GitHub skips it.
fn walk(tree: &dyn Tree, path: &Path, follow: bool, out: &mut Vec<PathBuf>) {
    walk_below(tree, path, follow, out, &mut Vec::new());
}

fn walk_below(
    tree: &dyn Tree,
    path: &Path,
    follow: bool,
    out: &mut Vec<PathBuf>,
    chain: &mut Vec<PathBuf>,
) {
    match tree.is_dir(path, follow) {
        None => {}
        Some(false) => out.push(path.to_path_buf()),
        Some(true) => {
            let real = if follow { tree.real_path(path) } else { None };
            if let Some(r) = &real {
                if chain.contains(r) {
                    return;
                }
                chain.push(r.clone());
            }
            let mut names = tree.children(path);
            names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
            for name in names {
                walk_below(tree, &path.join(name), follow, out, chain);
            }
            if real.is_some() {
                chain.pop();
            }
        }
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

    /// The sandbox path (listing + `sha256sum` through the sandbox) agrees
    /// with the host path on the same tree; here the sandbox is the host's.
    #[tokio::test(flavor = "multi_thread")]
    async fn through_a_sandbox_as_on_the_host() {
        use crate::sandbox::{HostProvider, JobSpec, SandboxProvider};
        let dir = tempfile::tempdir().expect("tempdir");
        let sb = HostProvider::new(dir.path().join("jobs"))
            .create(JobSpec::new("hash", "repo"))
            .await
            .expect("sandbox");
        let ws = sb.layout().workspace.clone();
        for f in [
            "a/z.txt",
            "a-b.txt",
            "a.txt",
            "b/c.txt",
            "B.txt",
            "sp ace/n.rs",
            ".git/HEAD",
            "new\nline/x.txt",
            "back\\slash.txt",
            "trailing\\",
            "cr\r",
            "c\rr.txt",
        ] {
            let p = ws.join(f);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, f).expect("write");
        }
        std::os::unix::fs::symlink(ws.join("b"), ws.join("lnk")).expect("link");
        std::os::unix::fs::symlink(ws.join("a.txt"), ws.join("l.txt")).expect("link");
        std::os::unix::fs::symlink(ws.join("b"), ws.join("b/loop")).expect("link");
        let guest = GuestFiles {
            sandbox: Arc::from(sb),
            workspace: ws.clone(),
            cancel: None,
        };
        for args in [
            vec!["**/*.txt"],
            vec!["a"],
            vec!["**", "!**/*.rs"],
            vec!["--follow-symbolic-links", "**/*.txt"],
            vec!["sp ace/*"],
            vec!["none/**"],
            vec!["--follow-symbolic-links", "b/**", "missing/*"],
            vec!["a/**", "b/*.txt"],
            vec!["new*/**", "back*", "trailing*", "cr*", "c*.txt"],
        ] {
            let args: Vec<String> = args.into_iter().map(String::from).collect();
            let on_host = hash_files(&ws, &args).expect("host");
            let through = tokio::task::spawn_blocking({
                let guest = guest.clone();
                let args = args.clone();
                move || {
                    let rt = tokio::runtime::Handle::current();
                    rt.block_on(guest.hash_async(&args))
                }
            })
            .await
            .expect("join")
            .expect("through the sandbox");
            assert_eq!(through, on_host, "{args:?}");
        }
        // The synchronous entry point, as expressions call it.
        let args = vec!["**/*.txt".to_string()];
        assert_eq!(guest.hash(&args), hash_files(&ws, &args));
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
        // A link back up is walked once, not until the path is too long.
        std::os::unix::fs::symlink(t.path().join("real"), t.path().join("real/up")).expect("link");
        assert_eq!(
            hash(t.path(), &["--follow-symbolic-links", "**/*.txt"]),
            expected(&["g.txt", "g.txt", "real/f.txt", "real/f.txt"])
        );
    }
}
