//! Finding actions: `uses:` references, the local action cache, and fetching.
//!
//! * `./path` — a local action inside the workspace (read through the sandbox, so a step may
//!   create it at run time). GitHub's message when it is missing is kept.
//! * `owner/repo[/path]@ref` — a remote action. It is looked up in the action cache,
//!   `CACHE/owner/repo/ref/` (the repository's tree at that ref; the action is in `path` below
//!   it), and when missing fetched with `git init` + `git fetch --depth 1 <url> <ref>` +
//!   `git checkout FETCH_HEAD` into that folder (unless offline; `.git` is then removed). The folder is then copied
//!   into the job's sandbox at `<job root>/_actions/owner/repo/ref`, as GitHub's runner keeps
//!   actions under `_work/_actions`. To use an action without network, put its tree at
//!   `CACHE/owner/repo/ref/` yourself (`git clone --depth 1 -b REF URL CACHE/owner/repo/REF`).
//! * `actions/checkout@*` is built in (never fetched); `docker://…` is recognised so that the
//!   executor reports clearly that Docker actions are not supported.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// A parsed `uses:` value of a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionRef {
    /// `./path` (relative to the workspace).
    Local(String),
    /// `$/path`: a folder of the workflow's own repository at the run's commit, taken from
    /// the repository as GitHub downloads it, without a checkout (the path, without `$/`).
    SelfRepo(String),
    /// `owner/repo[/path]@ref`.
    Remote {
        /// Owner.
        owner: String,
        /// Repository name.
        repo: String,
        /// Sub-folder (may be empty).
        path: String,
        /// Git ref (branch, tag, sha).
        git_ref: String,
    },
    /// `docker://image`.
    Docker(String),
}

impl ActionRef {
    /// Parses a step's `uses:`.
    pub fn parse(uses: &str) -> Result<ActionRef, String> {
        let u = uses.trim();
        if let Some(img) = u.strip_prefix("docker://") {
            return Ok(ActionRef::Docker(img.to_string()));
        }
        if u.starts_with("./") || u == "." || u.starts_with(".\\") {
            return Ok(ActionRef::Local(u.to_string()));
        }
        if let Some(rest) = u.strip_prefix("$/") {
            return Ok(ActionRef::SelfRepo(rest.to_string()));
        }
        let (name, git_ref) = u.split_once('@').ok_or_else(|| {
            format!(
                "'{u}' is not a valid action reference (expected owner/repo[/path]@ref or ./path)"
            )
        })?;
        let mut parts = name.split('/').filter(|s| !s.is_empty());
        let owner = parts.next().unwrap_or_default().to_string();
        let repo = parts.next().unwrap_or_default().to_string();
        let path: Vec<&str> = parts.collect();
        if owner.is_empty()
            || repo.is_empty()
            || git_ref.is_empty()
            || [&owner, &repo].iter().any(|s| s.contains(".."))
            || path.contains(&"..")
            || git_ref.contains("..")
            || git_ref.contains('/') && git_ref.starts_with('/')
        {
            return Err(format!(
                "'{u}' is not a valid action reference (expected owner/repo[/path]@ref)"
            ));
        }
        Ok(ActionRef::Remote {
            owner,
            repo,
            path: path.join("/"),
            git_ref: git_ref.to_string(),
        })
    }

    /// True for `actions/checkout@…`.
    pub fn is_checkout(&self) -> bool {
        matches!(self, ActionRef::Remote { owner, repo, path, .. } if owner.eq_ignore_ascii_case("actions") && repo.eq_ignore_ascii_case("checkout") && path.is_empty())
    }
}

/// Where a remote action lives in the cache: `cache/owner/repo/ref`.
pub fn cache_dir(cache: &Path, owner: &str, repo: &str, git_ref: &str) -> PathBuf {
    cache
        .join(owner)
        .join(repo)
        .join(git_ref.replace('/', "%2F"))
}

/// Makes sure `owner/repo@ref` is in the cache, fetching it when allowed. Returns its folder.
pub async fn ensure_cached(
    cache: &Path,
    owner: &str,
    repo: &str,
    git_ref: &str,
    offline: bool,
    server_url: &str,
) -> Result<PathBuf, String> {
    let dir = cache_dir(cache, owner, repo, git_ref);
    if dir.is_dir() {
        return Ok(dir);
    }
    if offline {
        return Err(format!(
            "action {owner}/{repo}@{git_ref} is not in the action cache ({}) and fetching is off",
            dir.display()
        ));
    }
    let parent = dir.parent().ok_or_else(|| "bad cache path".to_string())?;
    std::fs::create_dir_all(parent)
        .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    let tmp = parent.join(format!(
        ".fetch-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4()
    ));
    let url = format!("{}/{owner}/{repo}", server_url.trim_end_matches('/'));
    let run = |args: Vec<String>| {
        let tmp = tmp.clone();
        async move {
            let mut cmd = tokio::process::Command::new("git");
            cmd.args(&args)
                .current_dir(&tmp)
                .env("GIT_TERMINAL_PROMPT", "0")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true);
            let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
                .await
                .map_err(|_| "timed out".to_string())?
                .map_err(|e| format!("cannot run git: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
            }
        }
    };
    std::fs::create_dir_all(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    let result = async {
        run(vec!["init".into(), "-q".into()]).await?;
        run(vec![
            "fetch".into(),
            "-q".into(),
            "--depth".into(),
            "1".into(),
            url.clone(),
            git_ref.to_string(),
        ])
        .await?;
        run(vec!["checkout".into(), "-q".into(), "FETCH_HEAD".into()]).await?;
        Ok::<(), String>(())
    }
    .await;
    match result {
        Ok(()) => {
            // Only the tree is kept (as GitHub's runner downloads an archive).
            let _ = std::fs::remove_dir_all(tmp.join(".git"));
            if std::fs::rename(&tmp, &dir).is_err() && !dir.is_dir() {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(format!(
                    "cannot move the fetched action into {}",
                    dir.display()
                ));
            }
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(dir)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(format!(
                "unable to resolve action `{owner}/{repo}@{git_ref}`: not in the action cache ({}) and fetching {url} failed: {e}",
                dir.display()
            ))
        }
    }
}

/// Quotes a string for `sh`.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_refs() {
        assert_eq!(
            ActionRef::parse("./a/b"),
            Ok(ActionRef::Local("./a/b".into()))
        );
        assert_eq!(
            ActionRef::parse("o/r/sub/dir@v1"),
            Ok(ActionRef::Remote {
                owner: "o".into(),
                repo: "r".into(),
                path: "sub/dir".into(),
                git_ref: "v1".into()
            })
        );
        assert!(ActionRef::parse("actions/checkout@v4")
            .map(|r| r.is_checkout())
            .unwrap_or(false));
        assert!(ActionRef::parse("nope").is_err());
        assert!(ActionRef::parse("o/../x@v1").is_err());
        assert_eq!(
            ActionRef::parse("docker://alpine"),
            Ok(ActionRef::Docker("alpine".into()))
        );
        assert_eq!(sh_quote("a'b"), "'a'\\''b'");
    }
}
