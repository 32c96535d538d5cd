//! Facts about a local repository, read with `git`, and the event payload they imply.
//!
//! `firebreak plan` and `firebreak run` need an event payload when the user gives none
//! (`--event-file`): this module synthesises one from the repository's HEAD, shaped like the
//! webhook GitHub would send for that event, so `github.ref`, `github.sha` and
//! `github.event.*` read sensibly.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

/// What `git` says about a repository; every field is best effort.
#[derive(Debug, Clone, Default)]
pub struct RepoFacts {
    pub sha: Option<String>,
    pub branch: Option<String>,
    /// `owner/name` from the `origin` remote, else `local/<folder name>`.
    pub repository: String,
    pub author_name: Option<String>,
    pub author_email: Option<String>,
    pub message: Option<String>,
    /// Files changed by the HEAD commit (for `paths` filters); `None` when unknown.
    pub changed_files: Option<Vec<String>>,
}

fn git(repo: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(repo).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8_lossy(&out.stdout).trim_end().to_string();
    (!s.is_empty()).then_some(s)
}

/// `owner/name` from a remote URL such as `git@github.com:o/n.git` or `https://host/o/n`.
fn repository_from_url(url: &str) -> Option<String> {
    let trimmed = url.trim_end_matches('/').trim_end_matches(".git");
    let tail = trimmed.rsplit_once(':').map_or(trimmed, |(_, t)| t);
    let mut parts = tail.rsplit('/');
    let name = parts.next()?;
    let owner = parts.next()?;
    (!owner.is_empty() && !name.is_empty()).then(|| format!("{owner}/{name}"))
}

impl RepoFacts {
    /// Reads what it can; a folder that is not a git repository gives defaults.
    pub fn read(repo: &Path) -> RepoFacts {
        let folder = std::fs::canonicalize(repo)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "repo".to_string());
        let repository = git(repo, &["remote", "get-url", "origin"])
            .and_then(|u| repository_from_url(&u))
            .unwrap_or_else(|| format!("local/{folder}"));
        let changed_files = git(repo, &["diff-tree", "--no-commit-id", "--name-only", "-r", "--root", "HEAD"])
            .map(|s| s.lines().map(str::to_string).collect());
        RepoFacts {
            sha: git(repo, &["rev-parse", "HEAD"]),
            branch: git(repo, &["symbolic-ref", "--short", "-q", "HEAD"]),
            repository,
            author_name: git(repo, &["log", "-1", "--format=%an"]),
            author_email: git(repo, &["log", "-1", "--format=%ae"]),
            message: git(repo, &["log", "-1", "--format=%B"]),
            changed_files,
        }
    }

    fn git_ref(&self) -> String {
        format!("refs/heads/{}", self.branch.as_deref().unwrap_or("main"))
    }

    /// A payload shaped like GitHub's webhook for `event` at this repository's HEAD.
    pub fn synthesize_payload(&self, event: &str) -> Value {
        let sha = self.sha.clone().unwrap_or_else(|| "0".repeat(40));
        let branch = self.branch.clone().unwrap_or_else(|| "main".to_string());
        let (owner, name) = self.repository.split_once('/').unwrap_or(("local", &self.repository));
        let repository = json!({
            "name": name,
            "full_name": self.repository,
            "owner": { "login": owner, "name": owner },
            "default_branch": branch,
        });
        let author = json!({
            "name": self.author_name.clone().unwrap_or_default(),
            "email": self.author_email.clone().unwrap_or_default(),
        });
        match event {
            "push" => json!({
                "ref": self.git_ref(),
                "before": "0".repeat(40),
                "after": sha,
                "repository": repository,
                "pusher": author,
                "sender": { "login": owner },
                "head_commit": {
                    "id": sha,
                    "message": self.message.clone().unwrap_or_default(),
                    "author": author,
                },
            }),
            "pull_request" | "pull_request_target" => json!({
                "action": "opened",
                "number": 1,
                "repository": repository,
                "sender": { "login": owner },
                "pull_request": {
                    "number": 1,
                    "head": { "ref": branch, "sha": sha },
                    "base": { "ref": branch, "sha": sha },
                },
            }),
            _ => json!({ "repository": repository, "sender": { "login": owner } }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names_from_remote_urls() {
        assert_eq!(repository_from_url("git@github.com:nektos/act.git").as_deref(), Some("nektos/act"));
        assert_eq!(repository_from_url("https://github.com/o/n/").as_deref(), Some("o/n"));
        assert_eq!(repository_from_url("n"), None);
    }

    #[test]
    fn push_payload_carries_ref_and_sha() {
        let facts = RepoFacts {
            sha: Some("abc".into()),
            branch: Some("dev".into()),
            repository: "o/n".into(),
            ..RepoFacts::default()
        };
        let p = facts.synthesize_payload("push");
        assert_eq!(p["ref"], "refs/heads/dev");
        assert_eq!(p["after"], "abc");
        assert_eq!(p["repository"]["full_name"], "o/n");
    }
}
