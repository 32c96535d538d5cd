//! Facts about a local repository, read with `git`, and the event payload they imply.
//!
//! `firebreak plan` and `firebreak run` need an event payload when the user gives none
//! (`--event-file`): this module synthesises one from the repository's HEAD, shaped like the
//! webhook GitHub would send for that event, so `github.ref`, `github.sha` and
//! `github.event.*` read sensibly.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

/// What `git` says about a repository; every field is best effort (empty when unknown).
#[derive(Debug, Clone, Default)]
pub struct GitState {
    pub sha: String,
    /// `refs/heads/<branch>`; for a detached HEAD the ref of a tag, else of a branch (local,
    /// then remote-tracking), at HEAD's commit; empty when none is.
    pub git_ref: String,
    pub branch: String,
    /// HEAD is no branch (a CI checkout of a commit, a rebase…).
    pub detached: bool,
    /// `git_ref` is the one the command line named ([`set_ref`]), not HEAD's.
    pub ref_named: bool,
    /// HEAD's parent (`0000…` for a root commit).
    pub before: String,
    /// `owner/name` from the `origin` remote.
    pub repository: Option<String>,
    /// The webhook's `head_commit` object (null without commits).
    pub head_commit: Value,
    pub pusher: Value,
    /// Files changed by the HEAD commit (for `paths` filters); `None` when unknown.
    pub changed_files: Option<Vec<String>>,
    /// The repository's default branch: `origin/HEAD`'s, else `init.defaultBranch` or
    /// `main` or `master` when that branch exists, else the current branch.
    pub default_branch: String,
    /// Where HEAD's branch leaves the default branch (`git merge-base`): a pull request's
    /// base commit. Empty when unknown.
    pub merge_base: String,
    /// Files changed between the merge base and HEAD: a pull request's diff.
    pub pr_changed_files: Option<Vec<String>>,
    /// A tag at HEAD's commit (`refs/tags/<name>`; an annotated one first), whatever branch
    /// HEAD is on: what a synthesised release is of.
    pub head_tag: Option<String>,
}

/// See [`GitState::default_branch`].
fn default_branch(repo: &Path, current: &str) -> String {
    if let Some(b) = git(
        repo,
        &["symbolic-ref", "-q", "--short", "refs/remotes/origin/HEAD"],
    )
    .and_then(|r| r.strip_prefix("origin/").map(str::to_string))
    .filter(|b| !b.is_empty())
    {
        return b;
    }
    let configured = git(repo, &["config", "init.defaultBranch"]);
    for candidate in configured
        .iter()
        .map(String::as_str)
        .chain(["main", "master"])
    {
        let r = format!("refs/heads/{candidate}");
        if git(repo, &["show-ref", "--verify", "-q", &r]).is_some() {
            return candidate.to_string();
        }
    }
    if current.is_empty() {
        "main".to_string()
    } else {
        current.to_string()
    }
}

fn git(repo: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        // File names as they are (not "\303\251t\303\251.md"), for paths filters.
        .args(["-c", "core.quotePath=false"])
        .args(args)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// HEAD's commit's files (renames as their old and new paths), in git's order; `None`
/// without a commit. A merge commit's are those against its first parent, what pushing it
/// onto that parent changes (plain `diff-tree` prints nothing for a merge).
fn head_commit_files(repo: &Path) -> Option<Vec<String>> {
    let out = git(
        repo,
        &[
            "diff-tree",
            "--no-commit-id",
            "--name-only",
            "--no-renames",
            "--diff-merges=first-parent",
            "-r",
            "--root",
            "HEAD",
        ],
    )?;
    Some(out.lines().map(str::to_string).collect())
}

/// `owner/name` from a remote URL such as `git@github.com:o/n.git` or `https://host/o/n`.
pub fn repository_from_url(url: &str) -> Option<String> {
    let u = url.trim().trim_end_matches('/').trim_end_matches(".git");
    let path = if let Some(rest) = u.split_once("://").map(|x| x.1) {
        rest.split_once('/')?.1
    } else {
        u.split_once(':')?.1
    };
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match parts.as_slice() {
        [.., owner, name] => Some(format!("{owner}/{name}")),
        _ => None,
    }
}

/// The tag a synthesised release is of: the ref named or HEAD's when it is a tag, else (HEAD
/// on a branch no `--ref` named) a tag at HEAD's commit.
fn release_tag(gs: &GitState) -> Option<&str> {
    if let Some(tag) = gs.git_ref.strip_prefix("refs/tags/") {
        return Some(tag);
    }
    if gs.ref_named {
        return None;
    }
    gs.head_tag.as_deref()?.strip_prefix("refs/tags/")
}

/// A tag at HEAD's commit (`refs/tags/<name>`): annotated tags before lightweight ones (a
/// release before a moving `latest`), as `git describe` prefers them.
fn tag_at_head(repo: &Path) -> Option<String> {
    let tags: Vec<String> = git(
        repo,
        &[
            "for-each-ref",
            "--points-at",
            "HEAD",
            "--format=%(objecttype) %(refname)",
            "refs/tags",
        ],
    )
    .map(|out| out.lines().map(str::to_string).collect())
    .unwrap_or_default();
    let annotated = tags.iter().find_map(|t| t.strip_prefix("tag "));
    let any = tags.iter().find_map(|t| t.split_once(' ').map(|(_, r)| r));
    annotated.or(any).map(str::to_string)
}

/// The ref an event at a detached HEAD most likely names: a tag at HEAD's commit, else a local
/// branch there (`default_branch` first), else a remote-tracking one (`origin/x` →
/// `refs/heads/x`). `None` when no ref points at the commit.
fn ref_at_detached_head(repo: &Path, default_branch: &str) -> Option<String> {
    let at = |prefix: &str, format: &str| -> Vec<String> {
        git(
            repo,
            &["for-each-ref", "--points-at", "HEAD", format, prefix],
        )
        .map(|out| out.lines().map(str::to_string).collect())
        .unwrap_or_default()
    };
    if let Some(tag) = tag_at_head(repo) {
        return Some(tag);
    }
    let default = format!("refs/heads/{default_branch}");
    let local = at("refs/heads", "--format=%(refname)");
    if local.contains(&default) {
        return Some(default);
    }
    if let Some(b) = local.into_iter().next() {
        return Some(b);
    }
    // Branches of a configured remote only (`refs/remotes/pull/7/merge`, which
    // actions/checkout makes for a pull request, is no branch), the default one first.
    let remotes: Vec<String> = git(repo, &["remote"])
        .map(|o| o.lines().map(str::to_string).collect())
        .unwrap_or_default();
    let branches: Vec<String> = at("refs/remotes", "--format=%(refname)")
        .into_iter()
        .filter_map(|r| {
            let (remote, branch) = r.strip_prefix("refs/remotes/")?.split_once('/')?;
            (remotes.iter().any(|x| x == remote) && branch != "HEAD")
                .then(|| format!("refs/heads/{branch}"))
        })
        .collect();
    branches
        .iter()
        .find(|b| **b == default)
        .or(branches.first())
        .cloned()
}

/// Makes `gs` describe an event on `r` (`--ref`): a full ref as it is; a bare name as a
/// branch, unless `repo` has a tag of that name and no such branch.
pub fn set_ref(repo: &Path, gs: &mut GitState, r: &str) {
    let exists = |full: &str| git(repo, &["show-ref", "--verify", "--quiet", full]).is_some();
    gs.git_ref = if r.starts_with("refs/") {
        r.to_string()
    } else if !exists(&format!("refs/heads/{r}")) && exists(&format!("refs/tags/{r}")) {
        format!("refs/tags/{r}")
    } else {
        format!("refs/heads/{r}")
    };
    gs.branch = gs
        .git_ref
        .strip_prefix("refs/heads/")
        .unwrap_or_default()
        .to_string();
    gs.ref_named = true;
}

/// The ref a run gives `github.ref` where the payload alone does not say it right: the ref
/// `--ref` named ([`GitState::ref_named`]; for every event but a pull request's, whose
/// `--ref` named its head branch), else a deployment's tag ([`deployed_tag`]). `None`: the
/// payload's, as GitHub's table of events gives it. `plan` and `run` both ask here, so a
/// plan's job conditions see the run's ref.
pub fn ref_override(repo: &Path, gs: &GitState, event: &str, payload: &Value) -> Option<String> {
    if gs.ref_named && !event.starts_with("pull_request") {
        return Some(gs.git_ref.clone());
    }
    deployed_tag(repo, event, payload)
}

/// The `github.ref` and `github.sha` a run of `event` with `payload` gets: what GitHub's
/// table of events gives ([`firebreak_runner::context::default_ref_and_sha`]), with what
/// only the repository knows filled in — a ref named on the command line, a deployed tag,
/// and for events whose payload carries no commit (`workflow_dispatch`, `issues`,
/// `schedule`…) HEAD's sha, the commit whose files the run uses (GitHub gives the last
/// commit of the ref it runs on).
pub fn run_ref_and_sha(
    repo: &Path,
    gs: &GitState,
    event: &str,
    payload: &Value,
) -> (String, String) {
    let (mut git_ref, mut sha) = firebreak_runner::context::default_ref_and_sha(event, payload);
    if let Some(r) = ref_override(repo, gs, event, payload) {
        git_ref = r;
    }
    if sha.is_empty() {
        sha = gs.sha.clone();
    }
    // What the payload leaves unsaid: the events that name a ref of their own run on
    // HEAD's; the others (`issues`, `delete`, `workflow_run`…) on the default branch, as
    // GitHub runs them. (A deployment of a commit has no ref on GitHub: left empty.)
    if git_ref.is_empty() {
        git_ref = match event {
            "deployment" | "deployment_status" => String::new(),
            "push"
            | "workflow_dispatch"
            | "create"
            | "release"
            | "pull_request"
            | "pull_request_review"
            | "pull_request_review_comment"
            | "merge_group" => gs.git_ref.clone(),
            _ if !gs.default_branch.is_empty() => format!("refs/heads/{}", gs.default_branch),
            _ => gs.git_ref.clone(),
        };
    }
    (git_ref, sha)
}

/// Reads what it can; a folder that is not a git repository gives empty fields.
pub fn git_state(repo: &Path) -> GitState {
    let sha = git(repo, &["rev-parse", "HEAD"]).unwrap_or_default();
    let symbolic = git(repo, &["symbolic-ref", "-q", "HEAD"]);
    let branch = symbolic
        .as_deref()
        .and_then(|r| r.strip_prefix("refs/heads/"))
        .unwrap_or("")
        .to_string();
    // Of HEAD's own branch: a detached HEAD's is not derived from the ref found for it.
    let default_branch = default_branch(repo, &branch);
    let detached = symbolic.is_none() && !sha.is_empty();
    let git_ref = symbolic
        .or_else(|| {
            detached
                .then(|| ref_at_detached_head(repo, &default_branch))
                .flatten()
        })
        .unwrap_or_default();
    let branch = match git_ref.strip_prefix("refs/heads/") {
        Some(b) if branch.is_empty() => b.to_string(),
        _ => branch,
    };
    let before = git(repo, &["rev-parse", "HEAD~1"]).unwrap_or_else(|| "0".repeat(40));
    let repository =
        git(repo, &["remote", "get-url", "origin"]).and_then(|u| repository_from_url(&u));
    let fmt = git(
        repo,
        &[
            "log",
            "-1",
            "--format=%an%x00%ae%x00%cn%x00%ce%x00%aI%x00%B",
        ],
    )
    .unwrap_or_default();
    let f: Vec<&str> = fmt.splitn(6, '\0').collect();
    let g = |i: usize| f.get(i).copied().unwrap_or("").to_string();
    let changed_files = head_commit_files(repo);
    let head_commit = if sha.is_empty() {
        Value::Null
    } else {
        json!({
            "id": sha, "tree_id": git(repo, &["rev-parse", "HEAD^{tree}"]).unwrap_or_default(),
            // New to the repository, as every commit of a synthesised push is.
            "distinct": true,
            "message": g(5).trim_end(), "timestamp": g(4),
            "author": {"name": g(0), "email": g(1), "username": g(0)},
            "committer": {"name": g(2), "email": g(3), "username": g(2)},
            // No `added`, `removed` or `modified`: "the webhook payload available to GitHub
            // Actions does not include" them (GitHub's push event docs). The paths filters
            // read the changed files from git instead.
        })
    };
    let uname = git(repo, &["config", "user.name"]).unwrap_or_else(|| g(0));
    let uemail = git(repo, &["config", "user.email"]).unwrap_or_else(|| g(1));
    let merge_base = git(repo, &["merge-base", &default_branch, "HEAD"]).unwrap_or_default();
    // On the default branch itself the merge base is HEAD and the diff empty: a pull
    // request's paths are then taken as HEAD's commit's, like a push's.
    let pr_changed_files = (!merge_base.is_empty() && merge_base != sha)
        .then(|| {
            git(
                repo,
                &[
                    "diff",
                    "--name-only",
                    "--no-renames",
                    &merge_base,
                    "HEAD",
                    "--",
                ],
            )
        })
        .flatten()
        .map(|s| s.lines().map(str::to_string).collect());
    let head_tag = (!sha.is_empty()).then(|| tag_at_head(repo)).flatten();
    GitState {
        sha,
        git_ref,
        branch,
        detached,
        ref_named: false,
        before,
        repository,
        head_commit,
        pusher: json!({"name": uname, "email": uemail}),
        changed_files,
        default_branch,
        merge_base,
        pr_changed_files,
        head_tag,
    }
}

/// The files `event` changed, for `paths` filters: those `given` on the command line
/// (`--changed-file`), else a pull request's whole diff against its base, else HEAD's
/// commit's.
pub fn changed_files_for(gs: &GitState, event: &str, given: &[String]) -> Option<Vec<String>> {
    if !given.is_empty() {
        return Some(given.to_vec());
    }
    match event {
        "pull_request" | "pull_request_target" => gs
            .pr_changed_files
            .clone()
            .or_else(|| gs.changed_files.clone()),
        _ => gs.changed_files.clone(),
    }
}

/// The files `event` changed, for `paths` filters: those `given` on the command line
/// (`--changed-file`), else what an event file's payload says ([`changed_files_in_payload`]:
/// a webhook replayed from GitHub is judged by its own commits), else [`changed_files_for`]'s
/// (also for a payload synthesised from HEAD, which they describe).
pub fn event_changed_files(
    repo: &Path,
    gs: &GitState,
    event: &str,
    event_file: Option<&Value>,
    given: &[String],
) -> Option<Vec<String>> {
    if !given.is_empty() {
        return Some(given.to_vec());
    }
    event_file
        .and_then(|payload| changed_files_in_payload(repo, event, payload))
        .or_else(|| changed_files_for(gs, event, &[]))
}

/// The files a payload says its event changed, as GitHub computes them for `paths` filters:
/// a push's diff from `before` to `after` when the repository has both commits; for a new
/// branch (an all-zero `before`), or a `before` this clone lacks, the diff from the parent
/// of the deepest commit pushed (the first of `commits`) to `after`; else the union of its
/// `commits`' `added`, `removed` and `modified` (what non-Actions webhooks carry); a pull
/// request's diff from where its head left its base (`base.sha...head.sha`). `None` when the
/// payload does not tell.
pub fn changed_files_in_payload(repo: &Path, event: &str, payload: &Value) -> Option<Vec<String>> {
    let sha = |pointer: &str| {
        payload
            .pointer(pointer)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && !s.bytes().all(|b| b == b'0'))
            .map(str::to_string)
    };
    let diff = |range: String| {
        git(repo, &["diff", "--name-only", "--no-renames", &range, "--"])
            .map(|out| out.lines().map(str::to_string).collect::<Vec<_>>())
    };
    match event {
        "push" => {
            let after = sha("/after");
            if let (Some(before), Some(after)) = (sha("/before"), &after) {
                if let Some(files) = diff(format!("{before}..{after}")) {
                    return Some(files);
                }
            }
            let commits = payload.get("commits")?.as_array()?;
            // A new branch (or a `before` this clone lacks): GitHub diffs from the parent of
            // the deepest commit pushed, the first of `commits`, to the head.
            let deepest = commits
                .first()
                .and_then(|c| c.get("id"))
                .and_then(Value::as_str)
                .filter(|id| !id.is_empty() && !id.starts_with('-'));
            let head = after.or_else(|| {
                commits
                    .last()
                    .and_then(|c| c.get("id"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            });
            if let (Some(deepest), Some(head)) = (deepest, head.filter(|h| !h.starts_with('-'))) {
                let parent = format!("{deepest}^");
                if git(
                    repo,
                    &[
                        "rev-parse",
                        "--verify",
                        "--quiet",
                        &format!("{head}^{{commit}}"),
                    ],
                )
                .is_some()
                {
                    match git(repo, &["rev-parse", "--verify", "--quiet", &parent]) {
                        Some(_) => {
                            if let Some(files) = diff(format!("{parent}..{head}")) {
                                return Some(files);
                            }
                        }
                        // The deepest commit is a root: everything up to the head is new.
                        None if git(repo, &["cat-file", "-e", deepest]).is_some() => {
                            return git(repo, &["ls-tree", "-r", "--name-only", &head])
                                .map(|out| out.lines().map(str::to_string).collect());
                        }
                        None => {}
                    }
                }
            }
            let keys = ["added", "removed", "modified"];
            let listed = commits
                .iter()
                .any(|c| keys.iter().any(|k| c.get(k).is_some()));
            if !listed {
                // Commits this clone lacks, without their files (an Actions payload).
                return None;
            }
            let mut files: Vec<String> = Vec::new();
            for c in commits {
                for key in keys {
                    for f in c.get(key).and_then(Value::as_array).into_iter().flatten() {
                        if let Some(f) = f.as_str() {
                            if !files.iter().any(|x| x == f) {
                                files.push(f.to_string());
                            }
                        }
                    }
                }
            }
            Some(files)
        }
        "pull_request" | "pull_request_target" => {
            let (base, head) = (
                sha("/pull_request/base/sha")?,
                sha("/pull_request/head/sha")?,
            );
            diff(format!("{base}...{head}"))
        }
        _ => None,
    }
}

/// The skip instruction in a pull request's head commit's message, read from the repository
/// (its payload carries the head's sha, not its message): GitHub starts no `pull_request` run
/// for it ([`firebreak_workflow::plan::skip_instruction`]). `None` for other events, which
/// carry their head commit's message, or when the repository lacks the commit.
pub fn pull_request_skip_instruction(
    repo: &Path,
    event: &str,
    payload: &Value,
) -> Option<&'static str> {
    if event != "pull_request" {
        return None;
    }
    let head = payload
        .pointer("/pull_request/head/sha")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && !s.starts_with('-'))?;
    let message = git(repo, &["log", "-1", "--format=%B", head, "--"])?;
    firebreak_workflow::plan::skip_instruction(event, &message)
}

/// The full ref of a `deployment`/`deployment_status` event's `deployment.ref` when it names
/// a tag of the repository: `refs/tags/<name>`. The payload names a branch, a tag or a sha
/// without saying which; GitHub's `GITHUB_REF` is the tag's full ref for a tag, and
/// [`firebreak_runner::context::default_ref_and_sha`], which sees only the payload, takes a
/// bare name for a branch. Git's order decides a name that is both (the tag).
pub fn deployed_tag(repo: &Path, event: &str, payload: &Value) -> Option<String> {
    if !matches!(event, "deployment" | "deployment_status") {
        return None;
    }
    let name = payload
        .pointer("/deployment/ref")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty() && !r.starts_with("refs/") && !r.starts_with('-'))?;
    let full = format!("refs/tags/{name}");
    git(repo, &["show-ref", "--verify", "--quiet", &full]).map(|_| full)
}

/// `local/<folder name>`: the repository name when there is no `origin` remote.
pub fn local_repository(repo: &Path) -> String {
    let folder = std::fs::canonicalize(repo)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "repo".to_string());
    format!("local/{folder}")
}

/// The actor when nothing names one: git's `user.name`, else `$USER`, else `firebreak`.
pub fn default_actor(repo: &Path) -> String {
    git(repo, &["config", "user.name"])
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("USER").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "firebreak".to_string())
}

/// A payload shaped like GitHub's webhook for `event` at the repository's HEAD.
pub fn synthesize_payload(gs: &GitState, event: &str, repository: &str, actor: &str) -> Value {
    let (owner, name) = repository
        .split_once('/')
        .unwrap_or((repository, repository));
    let default_branch = if gs.default_branch.is_empty() {
        "main"
    } else {
        gs.default_branch.as_str()
    };
    let repo_obj = json!({
        "name": name, "full_name": repository, "owner": {"login": owner, "name": owner},
        "default_branch": default_branch, "fork": false,
        "html_url": format!("https://github.com/{repository}"),
    });
    match event {
        "push" => json!({
            "ref": gs.git_ref, "before": gs.before, "after": gs.sha,
            "created": false, "deleted": false, "forced": false,
            "head_commit": gs.head_commit,
            "commits": if gs.head_commit.is_null() { json!([]) } else { json!([gs.head_commit.clone()]) },
            "pusher": gs.pusher, "repository": repo_obj, "sender": {"login": actor},
        }),
        // A dispatch names the ref it was dispatched on: HEAD's (or `--ref`'s), the ref of
        // the commit whose workflows run, so that `github.ref` and `github.sha` agree.
        "workflow_dispatch" if !gs.git_ref.is_empty() => json!({
            "ref": gs.git_ref, "inputs": {},
            "repository": repo_obj, "sender": {"login": actor},
        }),
        // The branch (or tag) HEAD is on, as if it had just been created.
        "create" if !gs.git_ref.is_empty() => {
            let short = firebreak_runner::context::ref_name(&gs.git_ref);
            let kind = firebreak_runner::context::ref_type(&gs.git_ref);
            json!({
                "ref": short, "ref_type": kind, "master_branch": default_branch,
                "pusher_type": "user", "repository": repo_obj, "sender": {"login": actor},
            })
        }
        // A release of the tag HEAD is at, when it is at one (the ref named, else a tag at
        // HEAD's commit whatever branch HEAD is on).
        "release" if release_tag(gs).is_some() => {
            let tag = release_tag(gs).unwrap_or_default();
            json!({
                "action": "published",
                "release": {
                    "tag_name": tag, "name": tag, "draft": false, "prerelease": false,
                    "target_commitish": gs.sha,
                },
                "repository": repo_obj, "sender": {"login": actor},
            })
        }
        // A pull request the actor opened from a branch of this repository (not a fork)
        // into the default branch, from where HEAD's branch left it: what the common
        // conditions read (`head.repo.full_name == github.repository`, `user.login`,
        // `draft`, `labels`) has the values such a pull request has.
        "pull_request" | "pull_request_target" => {
            let title = gs
                .head_commit
                .get("message")
                .and_then(Value::as_str)
                .and_then(|m| m.lines().next())
                .unwrap_or_default();
            let side = |git_ref: &str, sha: &str| {
                json!({
                    "ref": git_ref, "sha": sha, "label": format!("{owner}:{git_ref}"),
                    "repo": repo_obj, "user": {"login": owner},
                })
            };
            let base_sha = if gs.merge_base.is_empty() {
                &gs.before
            } else {
                &gs.merge_base
            };
            json!({
                "action": "opened", "number": 1,
                "pull_request": {
                    "number": 1, "state": "open", "draft": false, "merged": false,
                    "locked": false, "title": title, "body": null,
                    "user": {"login": actor}, "labels": [], "assignees": [],
                    "requested_reviewers": [],
                    "html_url": format!("https://github.com/{repository}/pull/1"),
                    "head": side(&gs.branch, &gs.sha),
                    "base": side(default_branch, base_sha),
                    "merge_commit_sha": gs.sha,
                },
                "repository": repo_obj, "sender": {"login": actor},
            })
        }
        _ => json!({"repository": repo_obj, "sender": {"login": actor}}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs git in `dir` as a fixed author and committer; fails the test on error.
    fn git_in(dir: &Path, args: &[&str]) {
        let ok = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .output()
            .expect("git")
            .status
            .success();
        assert!(ok, "git {args:?}");
    }

    /// What a payload leaves out comes from the repository: HEAD's sha, and the default
    /// branch for events GitHub runs there, HEAD's ref for those that name their own.
    #[test]
    fn ref_and_sha_a_payload_leaves_out_come_from_the_repository() {
        let gs = GitState {
            sha: "abc".into(),
            git_ref: "refs/heads/feature".into(),
            branch: "feature".into(),
            default_branch: "main".into(),
            ..GitState::default()
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let minimal = json!({"ref": "v3", "ref_type": "tag"});
        let at = |event: &str| run_ref_and_sha(dir.path(), &gs, event, &minimal);
        assert_eq!(at("issues"), ("refs/heads/main".into(), "abc".into()));
        assert_eq!(at("delete"), ("refs/heads/main".into(), "abc".into()));
        assert_eq!(at("workflow_dispatch"), ("v3".into(), "abc".into()));
        assert_eq!(at("schedule"), ("refs/heads/main".into(), "abc".into()));
        let no_ref = json!({});
        assert_eq!(
            run_ref_and_sha(dir.path(), &gs, "push", &no_ref),
            ("refs/heads/feature".into(), "abc".into())
        );
    }

    #[test]
    fn repository_names_from_remote_urls() {
        assert_eq!(
            repository_from_url("git@github.com:nektos/act.git").as_deref(),
            Some("nektos/act")
        );
        assert_eq!(
            repository_from_url("https://github.com/o/n/").as_deref(),
            Some("o/n")
        );
        assert_eq!(repository_from_url("n"), None);
    }

    #[test]
    fn push_payload_carries_ref_and_sha() {
        let gs = GitState {
            sha: "abc".into(),
            git_ref: "refs/heads/dev".into(),
            branch: "dev".into(),
            ..GitState::default()
        };
        let p = synthesize_payload(&gs, "push", "o/n", "me");
        assert_eq!(p["ref"], "refs/heads/dev");
        assert_eq!(p["after"], "abc");
        assert_eq!(p["repository"]["full_name"], "o/n");
        assert_eq!(p["sender"]["login"], "me");
        let pr = synthesize_payload(&gs, "pull_request", "o/n", "me");
        assert_eq!(pr["pull_request"]["head"]["sha"], "abc");
        // Not from a fork, opened by the actor: what fork guards and author checks read.
        assert_eq!(pr["pull_request"]["head"]["repo"]["full_name"], "o/n");
        assert_eq!(pr["pull_request"]["head"]["repo"]["fork"], false);
        assert_eq!(pr["pull_request"]["base"]["repo"]["full_name"], "o/n");
        assert_eq!(pr["pull_request"]["user"]["login"], "me");
        assert_eq!(pr["pull_request"]["draft"], false);
        assert_eq!(pr["pull_request"]["labels"], json!([]));
    }

    #[test]
    fn a_detached_head_takes_the_ref_that_points_at_it() {
        let d = tempfile::tempdir().expect("tempdir");
        let run = |args: &[&str]| git_in(d.path(), args);
        run(&["init", "-q", "-b", "main"]);
        run(&["commit", "-q", "--allow-empty", "-m", "a"]);
        run(&["branch", "topic"]);
        run(&["checkout", "-q", "--detach"]);
        // Two branches at HEAD: the default one.
        let gs = git_state(d.path());
        assert!(gs.detached);
        assert_eq!(
            (gs.git_ref.as_str(), gs.branch.as_str()),
            ("refs/heads/main", "main")
        );
        // A tag at HEAD wins, an annotated one over a lightweight one.
        run(&["tag", "latest"]);
        run(&["tag", "-a", "v1", "-m", "release"]);
        assert_eq!(git_state(d.path()).git_ref, "refs/tags/v1");
        // On a branch, a synthesised release is of the tag at HEAD's commit all the same,
        // unless `--ref` named a branch.
        run(&["checkout", "-q", "main"]);
        let mut gs = git_state(d.path());
        assert_eq!(gs.git_ref, "refs/heads/main");
        let release = synthesize_payload(&gs, "release", "o/r", "me");
        assert_eq!(release["release"]["tag_name"], "v1", "{release}");
        set_ref(d.path(), &mut gs, "main");
        assert!(synthesize_payload(&gs, "release", "o/r", "me")["release"].is_null());
        run(&["checkout", "-q", "--detach"]);
        // A commit no local ref points at, but a remote-tracking branch does.
        run(&["commit", "-q", "--allow-empty", "-m", "b"]);
        run(&["update-ref", "refs/remotes/pull/7/merge", "HEAD"]);
        assert_eq!(
            git_state(d.path()).git_ref,
            "",
            "a pull request's merge ref is no branch"
        );
        run(&["remote", "add", "origin", "https://example.com/o/r.git"]);
        run(&["update-ref", "refs/remotes/origin/feature", "HEAD"]);
        assert_eq!(git_state(d.path()).git_ref, "refs/heads/feature");
        run(&["update-ref", "refs/remotes/origin/main", "HEAD"]);
        assert_eq!(
            git_state(d.path()).git_ref,
            "refs/heads/main",
            "the default branch first"
        );
        // None: empty, and `--ref` names one.
        run(&["commit", "-q", "--allow-empty", "-m", "c"]);
        let mut gs = git_state(d.path());
        assert_eq!(gs.git_ref, "");
        set_ref(d.path(), &mut gs, "release/1");
        assert_eq!(
            (gs.git_ref.as_str(), gs.branch.as_str()),
            ("refs/heads/release/1", "release/1")
        );
        set_ref(d.path(), &mut gs, "refs/tags/v2");
        assert_eq!(
            (gs.git_ref.as_str(), gs.branch.as_str()),
            ("refs/tags/v2", "")
        );
        // A bare name that is only a tag is the tag.
        set_ref(d.path(), &mut gs, "v1");
        assert_eq!(
            (gs.git_ref.as_str(), gs.branch.as_str()),
            ("refs/tags/v1", "")
        );
        // On a branch, not detached.
        run(&["checkout", "-q", "topic"]);
        assert!(!git_state(d.path()).detached);
    }

    #[test]
    fn the_default_branch_is_the_repositorys_not_the_current_one() {
        let d = tempfile::tempdir().expect("tempdir");
        let run = |args: &[&str]| git_in(d.path(), args);
        run(&["init", "-q", "-b", "main"]);
        std::fs::write(d.path().join("a.txt"), "a").expect("write");
        run(&["add", "-A"]);
        run(&["commit", "-qm", "a"]);
        run(&["checkout", "-q", "-b", "feature"]);
        std::fs::create_dir(d.path().join("src")).expect("mkdir");
        std::fs::write(d.path().join("src/b.rs"), "b").expect("write");
        run(&["add", "-A"]);
        run(&["commit", "-qm", "b"]);
        std::fs::write(d.path().join("c.md"), "c").expect("write");
        run(&["add", "-A"]);
        run(&["commit", "-qm", "c"]);
        let gs = git_state(d.path());
        assert_eq!(gs.branch, "feature");
        assert_eq!(gs.default_branch, "main");
        let push = synthesize_payload(&gs, "push", "o/n", "me");
        assert_eq!(push["repository"]["default_branch"], "main");
        let pr = synthesize_payload(&gs, "pull_request", "o/n", "me");
        assert_eq!(pr["pull_request"]["base"]["ref"], "main");
        assert_eq!(pr["pull_request"]["head"]["ref"], "feature");
        // A pull request's paths are its whole diff; a push's, its HEAD commit's.
        assert_eq!(
            changed_files_for(&gs, "pull_request", &[]),
            Some(vec!["c.md".to_string(), "src/b.rs".to_string()])
        );
        assert_eq!(
            changed_files_for(&gs, "push", &[]),
            Some(vec!["c.md".to_string()])
        );
        // The head commit does not list its files, as Actions' payloads do not; the changed
        // files come from git.
        std::fs::write(d.path().join("c.md"), "c2").expect("write");
        std::fs::remove_file(d.path().join("src/b.rs")).expect("rm");
        std::fs::write(d.path().join("d.txt"), "d").expect("write");
        run(&["add", "-A"]);
        run(&["commit", "-qm", "d"]);
        let gs = git_state(d.path());
        for key in ["added", "removed", "modified"] {
            assert!(gs.head_commit.get(key).is_none(), "{key}");
        }
        let mut changed = changed_files_for(&gs, "push", &[]).expect("changed files");
        changed.sort();
        assert_eq!(changed, ["c.md", "d.txt", "src/b.rs"]);
        // A deployment of a tag runs on the tag's ref; of a branch or a sha, not.
        run(&["tag", "v1.0"]);
        let deploy = |r: &str| serde_json::json!({"deployment": {"ref": r, "sha": "x"}});
        assert_eq!(
            deployed_tag(d.path(), "deployment", &deploy("v1.0")).as_deref(),
            Some("refs/tags/v1.0")
        );
        assert_eq!(
            deployed_tag(d.path(), "deployment_status", &deploy("v1.0")).as_deref(),
            Some("refs/tags/v1.0")
        );
        assert_eq!(deployed_tag(d.path(), "deployment", &deploy("main")), None);
        assert_eq!(deployed_tag(d.path(), "deployment", &deploy("v2")), None);
        assert_eq!(deployed_tag(d.path(), "push", &deploy("v1.0")), None);
        // On the default branch, a pull request's paths are HEAD's commit's, not nothing.
        run(&["checkout", "-q", "main"]);
        let gs = git_state(d.path());
        assert_eq!(
            changed_files_for(&gs, "pull_request", &[]),
            Some(vec!["a.txt".to_string()])
        );
        // Files named on the command line win.
        assert_eq!(
            changed_files_for(&gs, "pull_request", &["x".to_string()]),
            Some(vec!["x".to_string()])
        );
    }

    #[test]
    fn merges_and_renames_count_the_files_they_change() {
        let d = tempfile::tempdir().expect("tempdir");
        let run = |args: &[&str]| git_in(d.path(), args);
        let write = |p: &str| {
            let path = d.path().join(p);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, p).expect("write");
        };
        run(&["init", "-q", "-b", "main"]);
        write("src/a.rs");
        run(&["add", "-A"]);
        run(&["commit", "-qm", "a"]);
        run(&["checkout", "-q", "-b", "feature"]);
        write("docs/b.md");
        run(&["add", "-A"]);
        run(&["commit", "-qm", "b"]);
        run(&["checkout", "-q", "main"]);
        write("src/c.rs");
        run(&["add", "-A"]);
        run(&["commit", "-qm", "c"]);
        run(&["checkout", "-q", "feature"]);
        run(&["merge", "-q", "main", "-m", "merge main"]);
        // Pushing the merge onto `feature` brings main's file.
        let gs = git_state(d.path());
        assert_eq!(
            changed_files_for(&gs, "push", &[]),
            Some(vec!["src/c.rs".to_string()])
        );
        // A rename is its old path's deletion and its new path's addition, in a pull
        // request's diff as in a push's.
        run(&["mv", "src/a.rs", "docs/a.rs"]);
        run(&["commit", "-qm", "move"]);
        let gs = git_state(d.path());
        let both = Some(vec!["docs/a.rs".to_string(), "src/a.rs".to_string()]);
        assert_eq!(changed_files_for(&gs, "push", &[]), both);
        assert_eq!(
            changed_files_for(&gs, "pull_request", &[]),
            Some(vec![
                "docs/a.rs".to_string(),
                "docs/b.md".to_string(),
                "src/a.rs".to_string()
            ])
        );
    }
}
