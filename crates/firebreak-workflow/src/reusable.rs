//! Loading called reusable workflows (when their sources are supplied) and GitHub's checks
//! across the call: `with`/`secrets` against `on.workflow_call`, nesting depth, the total job
//! limit, and that a called workflow or job never requests more `permissions` than the
//! calling job may grant.

use std::sync::Arc;

use indexmap::IndexMap;

use crate::convert::Converter;
use crate::diag::{Diags, Pos};
use crate::model::{JobKind, Permissions, Workflow};
use crate::{read_root, reader, ParseOptions, PermissionsPolicy, UnresolvedReusable};

/// Scopes in the order GitHub lists them; `read-all` / `write-all` expand to these.
const SCOPES: &[&str] = &[
    "actions",
    "checks",
    "contents",
    "deployments",
    "discussions",
    "issues",
    "packages",
    "pages",
    "pull-requests",
    "repository-projects",
    "statuses",
    "security-events",
    "id-token",
];

/// Effective permissions: scope → 0 none, 1 read, 2 write.
#[derive(Clone, Debug, Default)]
pub(crate) struct PermSet(IndexMap<String, u8>);

fn level(s: &str) -> u8 {
    match s {
        "write" => 2,
        "read" => 1,
        _ => 0,
    }
}

fn level_name(l: u8) -> &'static str {
    match l {
        2 => "write",
        1 => "read",
        _ => "none",
    }
}

impl PermSet {
    fn all(l: u8) -> Self {
        PermSet(SCOPES.iter().map(|s| (s.to_string(), l)).collect())
    }

    pub(crate) fn from_permissions(p: &Permissions) -> Self {
        match p {
            Permissions::ReadAll => Self::all(1),
            Permissions::WriteAll => Self::all(2),
            Permissions::Scopes(m) => {
                PermSet(m.iter().map(|(k, v)| (k.clone(), level(v))).collect())
            }
        }
    }

    pub(crate) fn policy(p: PermissionsPolicy) -> Self {
        match p {
            PermissionsPolicy::Write => Self::all(2),
            PermissionsPolicy::LimitedRead => PermSet(
                [("contents".to_string(), 1), ("packages".to_string(), 1)]
                    .into_iter()
                    .collect(),
            ),
        }
    }

    fn get(&self, scope: &str) -> u8 {
        self.0.get(scope).copied().unwrap_or(0)
    }

    /// `(requested, allowed)` lists of the scopes where `self` asks for more than `allowed`.
    fn excess(&self, allowed: &PermSet) -> Option<(String, String)> {
        let mut scopes: Vec<&str> = SCOPES
            .iter()
            .copied()
            .filter(|s| self.0.contains_key(*s))
            .collect();
        scopes.extend(
            self.0
                .keys()
                .map(String::as_str)
                .filter(|k| !SCOPES.contains(k)),
        );
        let over: Vec<&str> = scopes
            .into_iter()
            .filter(|s| self.get(s) > allowed.get(s))
            .collect();
        if over.is_empty() {
            return None;
        }
        let req = over
            .iter()
            .map(|s| format!("{s}: {}", level_name(self.get(s))))
            .collect::<Vec<_>>()
            .join(", ");
        let allow = over
            .iter()
            .map(|s| format!("{s}: {}", level_name(allowed.get(s))))
            .collect::<Vec<_>>()
            .join(", ");
        Some((req, allow))
    }
}

pub(crate) struct Loader<'a> {
    pub opts: &'a ParseOptions,
    pub reader_opts: reader::ReaderOptions,
    pub diags: &'a mut Diags,
    pub called: &'a IndexMap<String, String>,
    pub jobs: usize,
    depth_reported: bool,
    files: usize,
    files_reported: bool,
}

/// GitHub loads at most 50 reusable workflow files for one run (51 files with the caller).
pub const MAX_REUSABLE_FILES: usize = 50;

fn lookup<'a>(called: &'a IndexMap<String, String>, uses: &str) -> Option<&'a str> {
    if let Some(s) = called.get(uses) {
        return Some(s);
    }
    called
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(uses))
        .map(|(_, v)| v.as_str())
}

impl<'a> Loader<'a> {
    pub(crate) fn new(
        opts: &'a ParseOptions,
        reader_opts: reader::ReaderOptions,
        diags: &'a mut Diags,
        called: &'a IndexMap<String, String>,
    ) -> Self {
        Loader {
            opts,
            reader_opts,
            diags,
            called,
            jobs: 0,
            depth_reported: false,
            files: 0,
            files_reported: false,
        }
    }

    /// Loads the workflows called by `wf` (defined in `file`), recursively. `inherited` is
    /// what a job of `wf` without its own or workflow-level `permissions` may grant.
    pub(crate) fn load(
        &mut self,
        file: &str,
        wf: &mut Workflow,
        inherited: &PermSet,
        depth: usize,
    ) {
        let wf_perms = wf.permissions.clone();
        for job in &mut wf.jobs {
            // Only this loader holds the job yet: no copy is made.
            let job = Arc::make_mut(job);
            self.jobs += 1;
            let job_pos = job.pos;
            let allowed = match (&job.permissions, &wf_perms) {
                (Some(p), _) | (None, Some(p)) => PermSet::from_permissions(p),
                (None, None) => inherited.clone(),
            };
            let JobKind::Reusable(rj) = &mut job.kind else {
                continue;
            };
            if depth + 1 > self.opts.max_nested_reusable_depth {
                if !self.depth_reported {
                    self.depth_reported = true;
                    self.diags.error(
                        "",
                        None,
                        format!(
                            "Nested reusable workflow depth exceeded {}.",
                            self.opts.max_nested_reusable_depth
                        ),
                    );
                }
                continue;
            }
            let Some(src) = lookup(self.called, &rj.uses) else {
                let local = crate::model::local_uses_path(&rj.uses).is_some();
                match (self.opts.unresolved_reusable, local) {
                    (UnresolvedReusable::Skip, _) | (UnresolvedReusable::ErrorIfLocal, false) => {}
                    // A reference GitHub.com cannot resolve (`./…@v1`, outside
                    // `.github/workflows`) says why, as GitHub.com does, not that it is missing.
                    (_, true) => self.diags.error(
                        file,
                        Some(rj.uses_pos),
                        match crate::refusals::reference_problem(&rj.uses) {
                            Some(why) => format!("invalid value workflow reference: {why}"),
                            None => format!(
                                "Unable to find reusable workflow '{}': the repository has no such file",
                                rj.uses
                            ),
                        },
                    ),
                    (UnresolvedReusable::Error, false) => self.diags.error(
                        file,
                        Some(rj.uses_pos),
                        "Unable to find reusable workflow",
                    ),
                }
                continue;
            };
            self.files += 1;
            if self.files > MAX_REUSABLE_FILES {
                if !self.files_reported {
                    self.files_reported = true;
                    self.diags.error(
                        file,
                        Some(rj.uses_pos),
                        // The runner's words; its count includes the calling file.
                        format!(
                            "The maximum file count of {} has been exceeded",
                            MAX_REUSABLE_FILES + 1
                        ),
                    );
                }
                continue;
            }
            let first_new = (self.diags.list.len(), self.diags.warnings.len());
            let Some(called_root) =
                read_root(&rj.uses, src, self.opts, &self.reader_opts, self.diags)
            else {
                self.mark_called_from(first_new, file, rj.uses_pos);
                continue;
            };
            let mut conv = Converter::new(file, self.diags);
            // A workflow that cannot be called is not followed: its own jobs and the
            // workflows they call are none of this call's business (GitHub's loader stops
            // there too).
            if !conv.check_called(rj, &called_root) {
                self.mark_called_from(first_new, file, rj.uses_pos);
                continue;
            }
            conv.file = rj.uses.clone();
            conv.called = true;
            let mut called_wf = conv.workflow(called_root);
            self.check_permissions(file, job_pos, &rj.uses, &called_wf, &allowed);
            // Nor are the workflows an invalid called workflow calls, as GitHub's loader
            // stops at the first file with errors.
            if self.diags.list.len() == first_new.0 {
                let called_ref = rj.uses.clone();
                self.load(&called_ref, &mut called_wf, &allowed, depth + 1);
            }
            self.mark_called_from(first_new, file, rj.uses_pos);
            rj.called = Some(Arc::new(called_wf));
        }
    }

    /// Marks the errors and warnings found since `first_new` (the lengths of both lists)
    /// in other files than `file` as coming from the workflow `file` calls at `uses`; an
    /// outer call marks them again, so they end up naming the call in the file being read.
    fn mark_called_from(&mut self, first_new: (usize, usize), file: &str, uses: Pos) {
        let errors = self.diags.list.iter_mut().skip(first_new.0);
        let warnings = self.diags.warnings.iter_mut().skip(first_new.1);
        for d in errors.chain(warnings) {
            // Errors of no file (a depth limit) are the whole tree's, not a called file's.
            if d.file != file && !d.file.is_empty() {
                d.called_from = Some(crate::diag::CallSite {
                    file: file.to_string(),
                    line: uses.line,
                    col: uses.col,
                });
            }
        }
    }

    fn check_permissions(
        &mut self,
        file: &str,
        pos: Pos,
        uses: &str,
        called: &Workflow,
        allowed: &PermSet,
    ) {
        if let Some(p) = &called.permissions {
            if let Some((req, allow)) = PermSet::from_permissions(p).excess(allowed) {
                self.diags.error(
                    file,
                    Some(pos),
                    format!(
                        "Error calling workflow '{uses}'. The workflow '{uses}' is requesting '{req}', but is only allowed '{allow}'."
                    ),
                );
            }
        }
        for job in &called.jobs {
            let Some(p) = &job.permissions else { continue };
            if let Some((req, allow)) = PermSet::from_permissions(p).excess(allowed) {
                let name = job.name.literal_display();
                self.diags.error(
                    file,
                    Some(pos),
                    format!(
                        "Error calling workflow '{uses}'. The nested job '{name}' is requesting '{req}', but is only allowed '{allow}'."
                    ),
                );
            }
        }
    }
}
