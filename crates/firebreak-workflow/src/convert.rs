//! Converts a schema-validated token tree into the typed [`Workflow`] model, applying the
//! checks GitHub makes after reading: job and step ids, `needs` (unknown jobs, cycles, no start
//! job), `if` conditions, container images, runner groups, cron syntax, workflow inputs, and
//! the inputs/secrets of called reusable workflows.

use std::sync::Arc;

use indexmap::IndexMap;

use crate::diag::{Diags, Pos};
use crate::model::*;
use crate::reader::if_condition;
use crate::schema::{JOB_IF, STEP_IF};
use crate::token::{Token, TokenKind};

/// GitHub.com's error for `on: workflow_run` without `workflows:`, which its parser accepts.
pub(crate) const WORKFLOW_RUN_WITHOUT_WORKFLOWS: &str = "`on.workflow_run` does not reference any workflows. See https://docs.github.com/actions/using-workflows/events-that-trigger-workflows#workflow-run for more information.";

pub(crate) struct Converter<'a> {
    pub file: String,
    pub diags: &'a mut Diags,
    /// An error that aborts the conversion of the current job (GitHub reports it at the
    /// `jobs` mapping and drops the job).
    pub job_failure: Option<String>,
    /// Buffers reused by the expression checks of `if` conditions.
    scratch: crate::exprs::Scratch,
    /// The workflow is read because another one calls it: GitHub then type-checks its
    /// `workflow_call` input defaults as it does the caller's `with:` values.
    pub called: bool,
}

impl<'a> Converter<'a> {
    pub(crate) fn new(file: &str, diags: &'a mut Diags) -> Self {
        Converter {
            file: file.to_string(),
            diags,
            job_failure: None,
            scratch: Default::default(),
            called: false,
        }
    }
}

const ID_MAX: usize = 100;

/// A fast hasher (FxHash's mixing) for the small sets of ids read from one file.
#[derive(Default, Clone, Copy)]
pub(crate) struct FastHasher(u64);

impl FastHasher {
    fn add(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl std::hash::Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in chunks.by_ref() {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            self.add(u64::from_le_bytes(b));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(b));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) type FastState = std::hash::BuildHasherDefault<FastHasher>;

/// GitHub's id builder: validates explicit ids and generates unique default ids.
#[derive(Default)]
pub(crate) struct IdBuilder {
    name: String,
    /// Scratch buffer for lower-cased candidates.
    lower: String,
    /// Lower-cased ids already taken (GitHub compares ids case-insensitively).
    distinct: std::collections::HashSet<String, FastState>,
}

impl IdBuilder {
    #[cfg(test)]
    fn append_segment(&mut self, value: &str) {
        self.append_parts(&[value]);
    }

    /// [`IdBuilder::append_segment`] of the concatenation of `parts`.
    fn append_parts(&mut self, parts: &[&str]) {
        let Some(first) = parts.iter().find_map(|p| p.chars().next()) else {
            return;
        };
        if self.name.is_empty() {
            if first.is_ascii_digit() || first == '-' {
                self.name.push('_');
            }
        } else {
            self.name.push('_');
        }
        // Runs of kept bytes are copied whole; every other character becomes one `_`.
        let kept = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
        for part in parts {
            let mut rest = *part;
            while !rest.is_empty() {
                let n = rest.bytes().position(|b| !kept(b)).unwrap_or(rest.len());
                self.name.push_str(&rest[..n]);
                let Some(c) = rest[n..].chars().next() else {
                    break;
                };
                self.name.push('_');
                rest = &rest[n + c.len_utf8()..];
            }
        }
    }

    /// The next unique id from the appended segments; GitHub gives up after 999 attempts.
    fn build(&mut self) -> Result<String, String> {
        if self.name.is_empty() {
            self.name.push_str("job");
        }
        let original = self.name.as_str();
        let count = if original.is_ascii() {
            original.len()
        } else {
            original.chars().count()
        };
        // Candidates are checked in a reused buffer; only the winner is allocated.
        let mut suffix_buf = [0u8; 8];
        let mut result = Err("Unable to create a unique name".to_string());
        for attempt in 1..1000usize {
            // `_{attempt}` (empty for the first attempt)
            let suffix = if attempt == 1 {
                ""
            } else {
                decimal_suffix(attempt, &mut suffix_buf)
            };
            let keep = count.min(ID_MAX - suffix.len());
            let end = if keep == count {
                original.len()
            } else {
                original
                    .char_indices()
                    .nth(keep)
                    .map_or(original.len(), |(i, _)| i)
            };
            self.lower.clear();
            self.lower.push_str(&original[..end]);
            self.lower.push_str(suffix);
            self.lower.make_ascii_lowercase();
            if !self.distinct.contains(self.lower.as_str()) {
                self.distinct.insert(self.lower.clone());
                let mut candidate = String::with_capacity(end + suffix.len());
                candidate.push_str(&original[..end]);
                candidate.push_str(suffix);
                result = Ok(candidate);
                break;
            }
        }
        self.name.clear();
        result
    }

    /// GitHub's checks of an explicit id, without recording it.
    pub(crate) fn check_known_id(value: &str) -> Result<(), String> {
        if !valid_id(value) || value.chars().count() >= ID_MAX {
            return Err(format!(
                "The identifier '{value}' is invalid. IDs may only contain alphanumeric characters, '_', and '-'. IDs must start with a letter or '_' and and must be less than {ID_MAX} characters."
            ));
        }
        if value.starts_with("__") {
            return Err(format!(
                "The identifier '{value}' is invalid. IDs starting with '__' are reserved."
            ));
        }
        Ok(())
    }

    pub(crate) fn try_add_known_id(&mut self, value: &str) -> Result<(), String> {
        Self::check_known_id(value)?;
        if !self.distinct.insert(value.to_ascii_lowercase()) {
            return Err(format!(
                "The identifier '{value}' may not be used more than once within the same scope."
            ));
        }
        Ok(())
    }
}

/// `_{n}` written into `buf` (n < 10^7).
fn decimal_suffix(mut n: usize, buf: &mut [u8; 8]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 || i == 1 {
            break;
        }
    }
    i -= 1;
    buf[i] = b'_';
    std::str::from_utf8(&buf[i..]).unwrap_or("")
}

fn valid_id(value: &str) -> bool {
    let mut chars = value.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn str_list(t: &Token) -> Vec<String> {
    match &t.kind {
        TokenKind::String(s) => vec![s.to_string()],
        TokenKind::Seq(items) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// The string of a string token, moved out of it.
fn into_string(t: Token) -> Option<String> {
    match t.kind {
        TokenKind::String(s) => Some(s.into_owned()),
        _ => None,
    }
}

/// [`str_list`], moving the strings out of the token.
fn into_str_list(t: Token) -> Vec<String> {
    match t.kind {
        TokenKind::String(s) => vec![s.into_owned()],
        TokenKind::Seq(items) => items.into_iter().filter_map(into_string).collect(),
        _ => Vec::new(),
    }
}

fn opt_string(t: &Token) -> Option<String> {
    t.as_str().map(str::to_string)
}

impl Converter<'_> {
    fn error(&mut self, pos: Pos, msg: impl Into<String>) {
        self.diags.error(&self.file, Some(pos), msg);
    }

    pub(crate) fn workflow(&mut self, root: Token) -> Workflow {
        let mut wf = Workflow {
            name: None,
            run_name: None,
            description: None,
            on: IndexMap::new(),
            permissions: None,
            env: None,
            defaults: None,
            concurrency: None,
            jobs: Vec::new(),
        };
        let TokenKind::Map(pairs) = root.kind else {
            return wf;
        };
        for (k, v) in pairs {
            match k.as_str().unwrap_or("") {
                "name" => wf.name = into_string(v),
                "run-name" => wf.run_name = Some(v),
                "description" => wf.description = into_string(v),
                "on" => wf.on = self.on(v),
                "permissions" => wf.permissions = permissions(v),
                "env" => wf.env = Some(v),
                "defaults" => wf.defaults = v.get("run").map(run_defaults),
                "concurrency" => {
                    self.check_concurrency(&v);
                    wf.concurrency = Some(v)
                }
                "jobs" => wf.jobs = self.jobs(v),
                _ => {}
            }
        }
        wf
    }

    fn on(&mut self, t: Token) -> IndexMap<String, EventConfig> {
        let mut out = IndexMap::new();
        // Where `workflow_run` is named, for the warning below.
        let mut workflow_run = None;
        let mut seen = |name: &str, pos: Pos| {
            if name == "workflow_run" {
                workflow_run = Some(pos);
            }
        };
        match t.kind {
            TokenKind::String(s) => {
                seen(&s, t.pos);
                out.insert(s.into_owned(), EventConfig::default());
            }
            TokenKind::Seq(items) => {
                for item in items {
                    let pos = item.pos;
                    if let Some(s) = into_string(item) {
                        seen(&s, pos);
                        out.insert(s, EventConfig::default());
                    }
                }
            }
            TokenKind::Map(pairs) => {
                out.reserve(pairs.len());
                for (k, v) in pairs {
                    let pos = k.pos;
                    let name = into_string(k).unwrap_or_default();
                    seen(&name, pos);
                    let mut cfg = EventConfig::default();
                    if matches!(v.kind, TokenKind::Null) {
                        out.insert(name, cfg);
                        continue;
                    }
                    if name == "schedule" {
                        cfg.schedule = self.schedule(&v);
                        out.insert(name, cfg);
                        continue;
                    }
                    let TokenKind::Map(props) = v.kind else {
                        out.insert(name, cfg);
                        continue;
                    };
                    self.warn_both_filters(&name, &props);
                    self.warn_bad_patterns(&name, &props);
                    for (pk, pv) in props {
                        match pk.as_str().unwrap_or("") {
                            "types" => cfg.types = Some(into_str_list(pv)),
                            "branches" => cfg.branches = Some(into_str_list(pv)),
                            "branches-ignore" => cfg.branches_ignore = Some(into_str_list(pv)),
                            "tags" => cfg.tags = Some(into_str_list(pv)),
                            "tags-ignore" => cfg.tags_ignore = Some(into_str_list(pv)),
                            "paths" => cfg.paths = Some(into_str_list(pv)),
                            "paths-ignore" => cfg.paths_ignore = Some(into_str_list(pv)),
                            "workflows" => cfg.workflows = Some(into_str_list(pv)),
                            "names" => cfg.names = Some(into_str_list(pv)),
                            "versions" => cfg.versions = Some(into_str_list(pv)),
                            "inputs" => cfg.inputs = self.inputs(&pv, name == "workflow_call"),
                            "outputs" => cfg.outputs = outputs(&pv),
                            "secrets" => cfg.secrets = secrets(&pv),
                            _ => {}
                        }
                    }
                    out.insert(name, cfg);
                }
            }
            _ => {}
        }
        // GitHub's parser takes it; GitHub.com fails every run the workflow would have.
        if let Some(pos) = workflow_run {
            if out
                .get("workflow_run")
                .is_some_and(|c| c.workflows.is_none())
            {
                self.diags.warn(
                    &self.file,
                    Some(pos),
                    format!(
                        "GitHub.com fails this workflow's runs: {WORKFLOW_RUN_WITHOUT_WORKFLOWS}"
                    ),
                );
            }
        }
        out
    }

    /// GitHub's parser takes `branches` with `branches-ignore` (and the same for tags and
    /// paths) on one event, so that is no error here; GitHub's documentation says they cannot
    /// be combined and GitHub.com refuses such a workflow when an event comes. A warning, at
    /// the `-ignore` key.
    fn warn_both_filters(&mut self, event: &str, props: &[(Token, Token)]) {
        for (with, ignore) in [
            ("branches", "branches-ignore"),
            ("tags", "tags-ignore"),
            ("paths", "paths-ignore"),
        ] {
            let key = |k: &str| props.iter().find(|(pk, _)| pk.as_str() == Some(k));
            if let (Some(_), Some((k, _))) = (key(with), key(ignore)) {
                self.diags.warn(
                    &self.file,
                    Some(k.pos),
                    format!(
                        "`{with}` and `{ignore}` both filter `{event}`, which GitHub does not \
                         allow for one event; list the exclusions in `{with}` as `!` patterns"
                    ),
                );
            }
        }
    }

    /// GitHub's parser takes any string as a filter pattern; GitHub.com fails the run when
    /// an event comes and a pattern does not compile (an unclosed `[`, `C++`…). A warning, at
    /// the pattern.
    fn warn_bad_patterns(&mut self, event: &str, props: &[(Token, Token)]) {
        for (k, v) in props {
            if !k
                .as_str()
                .is_some_and(|k| crate::filter::PATTERN_KEYS.contains(&k))
            {
                continue;
            }
            let items = match &v.kind {
                TokenKind::Seq(items) => items.as_slice(),
                TokenKind::String(_) => std::slice::from_ref(v),
                _ => &[],
            };
            for item in items {
                if let Some(Err(e)) = item.as_str().map(crate::filter::validate_pattern) {
                    self.diags.warn(
                        &self.file,
                        Some(item.pos),
                        format!(
                            "{e}: GitHub fails this workflow's run when a `{event}` event comes"
                        ),
                    );
                }
            }
        }
    }

    fn schedule(&mut self, t: &Token) -> Vec<Schedule> {
        let mut out = Vec::new();
        for item in t.as_seq().unwrap_or(&[]) {
            let mut cron: Option<String> = None;
            let mut timezone = None;
            for (k, v) in item.as_map().unwrap_or(&[]) {
                match k.as_str().unwrap_or("") {
                    "cron" => {
                        let c = v.as_str().unwrap_or("").to_string();
                        if !crate::cron::is_valid_cron(&c) {
                            self.error(
                                v.pos,
                                "Invalid cron expression. Expected format: '* * * * *' (minute hour day month weekday)",
                            );
                        }
                        cron = Some(c);
                    }
                    "timezone" => timezone = opt_string(v),
                    _ => {}
                }
            }
            if let Some(cron) = cron.filter(|c| !c.is_empty()) {
                out.push(Schedule { cron, timezone });
            }
        }
        out
    }

    fn inputs(&mut self, t: &Token, workflow_call: bool) -> IndexMap<String, InputDef> {
        let mut out = IndexMap::new();
        let pairs = t.as_map().unwrap_or(&[]);
        // GitHub's parser takes any number; GitHub.com refuses a dispatch of a workflow that
        // declares more (a warning here, the dispatch's error in a plan).
        if let Some((k, _)) = pairs.get(MAX_DISPATCH_INPUTS).filter(|_| !workflow_call) {
            self.diags
                .warn(&self.file, Some(k.pos), DISPATCH_INPUTS_LIMIT);
        }
        for (k, v) in pairs {
            let name = k.literal_display();
            let mut def = InputDef::default();
            for (pk, pv) in v.as_map().unwrap_or(&[]) {
                match pk.as_str().unwrap_or("") {
                    "description" => def.description = opt_string(pv),
                    "required" => def.required = pv.as_bool().unwrap_or(false),
                    "default" => def.default = Some(pv.clone()),
                    "type" => {
                        def.input_type = match pv.as_str().unwrap_or("") {
                            "boolean" => InputType::Boolean,
                            "number" => InputType::Number,
                            "choice" => InputType::Choice,
                            "environment" => InputType::Environment,
                            _ => InputType::String,
                        }
                    }
                    "options" => def.options = Some(str_list(pv)),
                    _ => {}
                }
            }
            if let Some(d) = &def.default {
                if workflow_call {
                    // GitHub checks a called workflow's defaults as it checks the caller's
                    // values: a literal is coerced to a string input's type, a number or
                    // boolean input takes only a number or boolean. A number's default is
                    // checked only then: reading the file for its own events (a push), neither
                    // of GitHub's parsers looks at it.
                    let fits = d.contains_expression()
                        || match (&d.kind, def.input_type) {
                            (TokenKind::Seq(_) | TokenKind::Map(_), _) => false,
                            (_, InputType::Number) if !self.called => true,
                            (_, InputType::Number) => matches!(d.kind, TokenKind::Number(_)),
                            (_, InputType::Boolean) => matches!(d.kind, TokenKind::Bool(_)),
                            _ => true,
                        };
                    if !fits {
                        let msg = match d.kind {
                            TokenKind::Seq(_) => "A sequence was not expected".to_string(),
                            TokenKind::Map(_) => "A mapping was not expected".to_string(),
                            _ => format!("Unexpected value '{}'", d.literal_display()),
                        };
                        self.error(d.pos, msg);
                    }
                } else {
                    let ok = match def.input_type {
                        InputType::Boolean => matches!(d.kind, TokenKind::Bool(_)),
                        InputType::String | InputType::Choice | InputType::Environment => {
                            matches!(d.kind, TokenKind::String(_))
                        }
                        InputType::Number => true,
                    };
                    if !ok {
                        let expected = if def.input_type == InputType::Boolean {
                            "BooleanToken"
                        } else {
                            "StringToken"
                        };
                        self.error(
                            d.pos,
                            format!(
                                "Unexpected type '{}' encountered while reading 'input default'. The type '{expected}' was expected.",
                                type_name(d)
                            ),
                        );
                    }
                }
            }
            if def.input_type == InputType::Choice {
                if def.options.as_ref().is_none_or(Vec::is_empty) {
                    self.error(v.pos, "Missing 'options' for choice input");
                }
            } else if def.options.is_some() {
                self.error(
                    v.pos,
                    "Input type is not 'choice', but 'options' is defined",
                );
            }
            out.insert(name, def);
        }
        out
    }

    fn jobs(&mut self, t: Token) -> Vec<Arc<Job>> {
        let jobs_pos = t.pos;
        let TokenKind::Map(pairs) = t.kind else {
            self.error(jobs_pos, "Invalid format for jobs");
            return Vec::new();
        };
        let mut built: Vec<Job> = Vec::new();
        let mut need_tokens: Vec<Vec<Token>> = Vec::new();
        for (k, v) in pairs {
            let Some(id) = k.as_str() else { continue };
            let (job, needs) = self.job(id, k.pos, v);
            if let Some(e) = self.job_failure.take() {
                self.error(jobs_pos, e);
                continue;
            }
            built.push(job);
            need_tokens.push(needs);
        }
        // GitHub matches `needs` to job ids ignoring case (job ids are ASCII); the model
        // names the job as its key is written.
        for i in 0..built.len() {
            for n in 0..built[i].needs.len() {
                let need = &built[i].needs[n];
                if built.iter().any(|j| j.id == *need) {
                    continue;
                }
                if let Some(id) = built
                    .iter()
                    .find(|j| j.id.eq_ignore_ascii_case(need))
                    .map(|j| j.id.clone())
                {
                    built[i].needs[n] = id;
                }
            }
        }
        let jobs: Vec<Arc<Job>> = built.into_iter().map(Arc::new).collect();
        self.validate_needs(jobs_pos, &jobs, &need_tokens);
        jobs
    }

    /// GitHub's needs check: a start job must exist; then every job whose needs can't all be
    /// satisfied reports each remaining need as a cycle (known job) or unknown job. Same
    /// result and order as GitHub's quadratic loop, computed with Kahn's algorithm.
    fn validate_needs(&mut self, jobs_pos: Pos, jobs: &[Arc<Job>], needs: &[Vec<Token>]) {
        use std::collections::{HashMap, HashSet, VecDeque};
        let mut queue: VecDeque<usize> = needs
            .iter()
            .enumerate()
            .filter(|(_, n)| n.is_empty())
            .map(|(i, _)| i)
            .collect();
        if queue.is_empty() {
            self.error(
                jobs_pos,
                "The workflow must contain at least one job with no dependencies.",
            );
            return;
        }
        // Names compare ignoring (ASCII) case, as GitHub's do: keys are lower-cased (ids
        // mostly are already, so they are borrowed).
        fn key(s: &str) -> std::borrow::Cow<'_, str> {
            if s.bytes().any(|b| b.is_ascii_uppercase()) {
                s.to_ascii_lowercase().into()
            } else {
                s.into()
            }
        }
        // need name -> jobs waiting on it (one entry per occurrence)
        let mut waiting: HashMap<std::borrow::Cow<'_, str>, Vec<usize>, FastState> =
            HashMap::default();
        let mut remaining: Vec<usize> = needs.iter().map(Vec::len).collect();
        for (i, n) in needs.iter().enumerate() {
            for need in n {
                waiting
                    .entry(key(need.as_str().unwrap_or("")))
                    .or_default()
                    .push(i);
            }
        }
        let mut satisfied: HashSet<std::borrow::Cow<'_, str>, FastState> = HashSet::default();
        while let Some(cur) = queue.pop_front() {
            let name = key(jobs[cur].id.as_str());
            for &j in waiting.get(&name).map(Vec::as_slice).unwrap_or(&[]) {
                remaining[j] -= 1;
                if remaining[j] == 0 {
                    queue.push_back(j);
                }
            }
            satisfied.insert(name);
        }
        let ids: HashSet<std::borrow::Cow<'_, str>, FastState> =
            jobs.iter().map(|j| key(j.id.as_str())).collect();
        for (i, n) in needs.iter().enumerate() {
            if n.is_empty() || remaining[i] == 0 {
                continue;
            }
            for need in n {
                let name = need.as_str().unwrap_or("");
                if satisfied.contains(&key(name)) {
                    continue;
                }
                let msg = if ids.contains(&key(name)) {
                    format!(
                        "Job '{}' depends on job '{name}' which creates a cycle in the dependency graph.",
                        jobs[i].id
                    )
                } else {
                    format!("Job '{}' depends on unknown job '{name}'.", jobs[i].id)
                };
                self.error(need.pos, msg);
            }
        }
    }

    fn if_cond(&mut self, t: &Token, ctx: &'static [&'static str]) -> Option<String> {
        let condition: std::borrow::Cow<'_, str> = match &t.kind {
            TokenKind::Expr(e) => e.expr.as_str().into(),
            TokenKind::String(s) => s.trim().into(),
            _ => t.literal_display().into(),
        };
        match if_condition(
            &condition,
            crate::reader::allowed_for(ctx),
            &mut self.scratch,
        ) {
            Ok(c) => {
                // A `${{ }}` condition's format() calls were looked at when it was read.
                let read = matches!(t.kind, TokenKind::Expr(_));
                self.warn_literal_text(t.pos, &condition, !read);
                Some(c)
            }
            Err(e) => {
                self.error(t.pos, e);
                None
            }
        }
    }

    /// A condition with text outside `${{ }}` (`if: push == ${{ github.event_name }}`) is a
    /// string, always truthy: valid to GitHub's parser, an error in its language service; a
    /// warning here. So are `format()` calls the runner will refuse.
    fn warn_literal_text(&mut self, pos: Pos, condition: &str, format_calls: bool) {
        let Some(parsed) = crate::exprs::parse_if_format(condition) else {
            return;
        };
        if format_calls {
            for w in parsed.format_string_problems() {
                self.diags.warn(&self.file, Some(pos), w);
            }
        }
        if parsed.is_format_with_literal_text() {
            self.diags.warn(
                &self.file,
                Some(pos),
                "Conditional expression contains literal text outside replacement tokens. This will cause the expression to always evaluate to truthy. Did you mean to put the entire expression inside ${{ }}?",
            );
        }
    }

    fn job(&mut self, id: &str, pos: Pos, t: Token) -> (Job, Vec<Token>) {
        if let Err(e) = IdBuilder::check_known_id(id) {
            self.error(pos, e);
        }
        let mut job = Job {
            id: id.to_string(),
            pos,
            name: Token::new(pos, TokenKind::String(id.to_string().into())),
            needs: Vec::new(),
            if_condition: "success()".to_string(),
            strategy: None,
            concurrency: None,
            permissions: None,
            kind: JobKind::Steps(Box::default()),
        };
        let mut steps_job = StepsJob::default();
        let mut uses: Option<String> = None;
        let mut uses_pos = pos;
        let mut with = None;
        let mut secrets = None;
        let mut inherit = false;
        let mut need_tokens = Vec::new();
        let pairs = match t.kind {
            TokenKind::Map(pairs) => pairs,
            _ => Vec::new(),
        };
        for (k, v) in pairs {
            match k.as_str().unwrap_or("") {
                "concurrency" => {
                    self.check_concurrency(&v);
                    job.concurrency = Some(v)
                }
                "container" => {
                    self.container(&v, false);
                    steps_job.container = Some(v);
                }
                "env" => steps_job.env = Some(v),
                "environment" => steps_job.environment = Some(v),
                "if" => {
                    if let Some(c) = self.if_cond(&v, JOB_IF) {
                        job.if_condition = c;
                    }
                }
                "name" if !matches!(&v.kind, TokenKind::String(s) if s.is_empty()) => job.name = v,
                "needs" => {
                    need_tokens = match v.kind {
                        TokenKind::String(_) => vec![v],
                        TokenKind::Seq(items) => {
                            items.into_iter().filter(|i| i.as_str().is_some()).collect()
                        }
                        _ => Vec::new(),
                    };
                }
                "outputs" => steps_job.outputs = Some(v),
                "runs-on" => {
                    self.runs_on(&v);
                    steps_job.runs_on = Some(v);
                }
                "services" => {
                    for (_, svc) in v.as_map().unwrap_or(&[]) {
                        self.container(svc, true);
                    }
                    steps_job.services = Some(v);
                }
                "snapshot" => {
                    self.snapshot(&v);
                    steps_job.snapshot = Some(v);
                }
                "steps" => steps_job.steps = self.steps(v),
                "strategy" => {
                    self.check_matrix(&v);
                    job.strategy = Some(strategy(v));
                }
                "uses" => {
                    uses_pos = v.pos;
                    uses = into_string(v);
                }
                "with" => with = Some(v),
                "secrets" => {
                    if v.as_str() == Some("inherit") {
                        inherit = true;
                    } else {
                        secrets = Some(v);
                    }
                }
                "permissions" => job.permissions = permissions(v),
                "timeout-minutes" => steps_job.timeout_minutes = Some(v),
                "cancel-timeout-minutes" => steps_job.cancel_timeout_minutes = Some(v),
                "continue-on-error" => steps_job.continue_on_error = Some(v),
                "defaults" => steps_job.defaults = v.get("run").map(run_defaults),
                _ => {}
            }
        }
        job.needs = need_tokens
            .iter()
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect();
        job.kind = match uses {
            Some(uses) => JobKind::Reusable(Box::new(ReusableJob {
                uses,
                uses_pos,
                with,
                secrets,
                inherit_secrets: inherit,
                called: None,
            })),
            None => JobKind::Steps(Box::new(steps_job)),
        };
        (job, need_tokens)
    }

    /// GitHub's checks of a job's `container` or a `services` entry (`service`): an image
    /// that is empty once `docker://` is taken off is an error when it had that prefix or
    /// belongs to a service (a job's `container: ''` means none, in GitHub's C# parser); a
    /// mapping without `image` is one too (its TypeScript parser). Left to the run when
    /// anything in it is an expression.
    fn container(&mut self, t: &Token, service: bool) {
        if t.contains_expression() {
            return;
        }
        let image = match &t.kind {
            TokenKind::String(s) => Some(s.as_ref()),
            TokenKind::Map(pairs) => {
                match pairs.iter().find(|(k, _)| k.as_str() == Some("image")) {
                    Some((_, v)) => v.as_str(),
                    None => {
                        self.error(t.pos, "Container image cannot be empty");
                        return;
                    }
                }
            }
            _ => None,
        };
        let Some(image) = image else { return };
        let trimmed = image.strip_prefix("docker://");
        if trimmed.unwrap_or(image).is_empty() && (trimmed.is_some() || service) {
            self.error(t.pos, "Container image cannot be empty");
        }
    }

    /// The matrix checks GitHub makes while reading the file: empty vectors, a matrix
    /// without any vector or include, and — when nothing in the strategy is an expression —
    /// the include and exclude entries its matrix builder refuses (an empty include mapping,
    /// an empty exclude filter, an exclude key that names no non-empty vector).
    fn check_matrix(&mut self, strategy: &Token) {
        let Some(matrix) = strategy.get("matrix") else {
            return;
        };
        let Some(pairs) = matrix.as_map() else {
            return;
        };
        let (mut has_vector, mut has_include) = (false, false);
        let mut vectors: Vec<&str> = Vec::new();
        for (k, v) in pairs {
            let Some(name) = k.as_str() else {
                // An expression key counts as a vector.
                has_vector |= k.is_expression();
                continue;
            };
            match name {
                "include" => {
                    has_include =
                        v.contains_expression() || v.as_seq().is_some_and(|s| !s.is_empty())
                }
                "exclude" => {}
                _ => {
                    has_vector = true;
                    if v.contains_expression() {
                        continue;
                    }
                    match v.as_seq() {
                        Some([]) => self.error(
                            v.pos,
                            format!("Matrix vector '{name}' does not contain any values"),
                        ),
                        Some(_) => vectors.push(name),
                        None => {}
                    }
                }
            }
        }
        if !has_vector && !has_include {
            self.error(matrix.pos, "Matrix must define at least one vector");
        }
        if strategy.contains_expression() {
            return;
        }
        // GitHub's matrix builder reads every include before any exclude, whatever their
        // order in the file: so are its errors reported.
        let lists = ["include", "exclude"].into_iter().flat_map(|which| {
            pairs
                .iter()
                .filter(move |(k, _)| k.as_str() == Some(which))
                .filter_map(move |(_, v)| Some((which, v.as_seq()?)))
        });
        for (which, items) in lists {
            for item in items {
                let Some(entry) = item.as_map() else { continue };
                match (which, entry.is_empty()) {
                    ("include", true) => self.error(
                        item.pos,
                        "Matrix include mapping does not contain any values",
                    ),
                    ("exclude", true) => {
                        self.error(item.pos, "Matrix exclude filter must not be empty")
                    }
                    ("exclude", false) => {
                        for (key, _) in entry {
                            let Some(key_name) = key.as_str() else {
                                continue;
                            };
                            if !vectors
                                .iter()
                                .any(|n| crate::matrix::eq_ignore_case(n, key_name))
                            {
                                self.error(
                                    key.pos,
                                    format!("Matrix exclude key '{key_name}' does not match any key within the matrix"),
                                );
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// GitHub refuses a literal concurrency group longer than 400 characters when it reads
    /// the file (one from an expression is checked when it is evaluated).
    fn check_concurrency(&mut self, t: &Token) {
        let group = match &t.kind {
            TokenKind::String(s) => Some(s.as_ref()),
            TokenKind::Map(_) => t.get("group").and_then(Token::as_str),
            _ => None,
        };
        if group.is_some_and(|g| g.chars().count() > 400) {
            self.error(
                t.pos,
                "Concurrency group name must be less than 400 characters",
            );
        }
        // GitHub's parser takes this pair; its service refuses it (a job fails here).
        if t.get("queue").and_then(Token::as_str) == Some("max")
            && t.get("cancel-in-progress").and_then(Token::as_bool) == Some(true)
        {
            self.diags.warn(
                &self.file,
                Some(t.pos),
                "'queue: max' cannot be combined with 'cancel-in-progress: true'",
            );
        }
    }

    fn runs_on(&mut self, t: &Token) {
        let Some(pairs) = t.as_map() else { return };
        for (k, v) in pairs {
            if k.as_str() != Some("group") || v.is_expression() {
                continue;
            }
            let Some(group) = v.as_str() else { continue };
            let names: Vec<&str> = group.split('/').collect();
            match names.len() {
                1 => {}
                2 => {
                    if !["org", "organization", "ent", "enterprise"].contains(&names[0]) {
                        self.error(
                            v.pos,
                            format!("Invalid runs-on group name '{group}'. Please use 'organization/' or 'enterprise/' prefix to target a single runner group."),
                        );
                    } else if names[1].is_empty() {
                        self.error(v.pos, format!("Invalid runs-on group name '{group}'."));
                    }
                }
                _ => self.error(
                    v.pos,
                    format!("Invalid runs-on group name '{group}'. Please use 'organization/' or 'enterprise/' prefix to target a single runner group."),
                ),
            }
        }
    }

    /// What the runner checks in a `snapshot:` mapping beyond its schema: the condition
    /// (a step's contexts and status functions) and the `{major}.*` version, in the order
    /// written; a bad version ends the check, as it ends the runner's.
    fn snapshot(&mut self, t: &Token) {
        let Some(pairs) = t.as_map() else { return };
        for (k, v) in pairs {
            match k.as_str() {
                Some("if") => {
                    self.if_cond(v, STEP_IF);
                }
                Some("version") if !v.is_expression() => {
                    let Some(version) = v.as_str() else { continue };
                    if !snapshot_version_is_valid(version) {
                        self.error(
                            t.pos,
                            format!("Expected format '{{major-version}}.*' Actual '{version}'"),
                        );
                        return;
                    }
                }
                _ => {}
            }
        }
    }

    fn steps(&mut self, t: Token) -> Vec<Step> {
        let TokenKind::Seq(items) = t.kind else {
            self.error(t.pos, "Invalid format for steps");
            return Vec::new();
        };
        let mut ids = IdBuilder::default();
        ids.distinct.reserve(items.len());
        let mut known: Vec<String> = Vec::new();
        let mut out: Vec<Step> = Vec::with_capacity(items.len());
        for item in items {
            if let Some(step) = self.step(item, &mut ids, &mut known) {
                out.push(step);
            }
        }
        for step in &mut out {
            if !step.id.is_empty() {
                continue;
            }
            let base = match &step.kind {
                StepKind::Uses { uses, .. } => action_step_id_parts(uses),
                StepKind::Wait { .. } => ["wait", "", ""],
                StepKind::WaitAll => ["wait-all", "", ""],
                StepKind::Cancel { .. } => ["cancel", "", ""],
                StepKind::Parallel { .. } => ["parallel", "", ""],
                StepKind::Run { .. } => ["", "", ""],
            };
            if base.iter().all(|p| p.is_empty()) {
                ids.append_parts(&["__", "run"]);
            } else {
                ids.append_parts(&["__", base[0], base[1], base[2]]);
            }
            match ids.build() {
                Ok(id) => step.id = id,
                Err(e) => {
                    self.job_failure.get_or_insert(e);
                    break;
                }
            }
            step.generated_id = true;
        }
        out
    }

    fn step(&mut self, t: Token, ids: &mut IdBuilder, known: &mut Vec<String>) -> Option<Step> {
        let step_pos = t.pos;
        let TokenKind::Map(pairs) = t.kind else {
            return None;
        };
        let mut id: Option<(String, Pos)> = None;
        let mut name = None;
        let mut run = None;
        let mut uses = None;
        let mut with = None;
        let mut env = None;
        let mut shell = None;
        let mut wd = None;
        let mut coe = None;
        let mut timeout = None;
        let mut background = false;
        let mut wait: Option<Vec<String>> = None;
        let mut wait_all = false;
        let mut cancel: Option<String> = None;
        let mut parallel: Option<Token> = None;
        let mut if_condition: Option<String> = None;
        for (k, v) in pairs {
            match k.as_str().unwrap_or("") {
                "id" => {
                    let pos = v.pos;
                    let value = into_string(v).unwrap_or_default();
                    if !value.is_empty() {
                        match ids.try_add_known_id(&value) {
                            Err(e) => self.error(pos, e),
                            Ok(()) => known.push(value.clone()),
                        }
                    }
                    id = Some((value, pos));
                }
                "name" => name = Some(v),
                "run" => run = Some(v),
                "uses" => {
                    let pos = v.pos;
                    uses = into_string(v);
                    if let Some(u) = &uses {
                        if !valid_step_uses(u) {
                            self.error(
                                pos,
                                format!(
                                    "Expected format {{org}}/{{repo}}[/path]@ref. Actual '{u}'"
                                ),
                            );
                        }
                    }
                }
                "with" => with = Some(v),
                "env" => env = Some(v),
                "shell" => shell = into_string(v),
                "working-directory" => wd = Some(v),
                "timeout-minutes" => timeout = Some(v),
                "background" => background = v.as_bool().unwrap_or(false),
                "wait" => {
                    let targets: Vec<&Token> = match &v.kind {
                        TokenKind::Seq(items) => items.iter().collect(),
                        _ => vec![&v],
                    };
                    for target in &targets {
                        self.target_step(target, known, id.as_ref().map(|i| i.0.as_str()));
                    }
                    wait = Some(
                        targets
                            .iter()
                            .filter_map(|t| t.as_str().map(str::to_string))
                            .collect(),
                    );
                }
                "wait-all" => {
                    if v.as_bool() == Some(false) {
                        self.error(v.pos, "The value of 'wait-all' must be true or omitted");
                    }
                    wait_all = true;
                }
                "cancel" => {
                    self.target_step(&v, known, id.as_ref().map(|i| i.0.as_str()));
                    cancel = into_string(v);
                }
                "parallel" => parallel = Some(v),
                "if" => if_condition = self.if_cond(&v, STEP_IF),
                "continue-on-error" => coe = Some(v),
                _ => {}
            }
        }
        let id = id.map(|i| i.0).unwrap_or_default();
        let mut step = Step {
            id,
            pos: step_pos,
            generated_id: false,
            name,
            if_condition: Some(if_condition.unwrap_or_else(|| "success()".to_string())),
            env,
            continue_on_error: coe,
            timeout_minutes: timeout,
            background,
            kind: StepKind::WaitAll,
        };
        if let Some(run) = run {
            step.kind = StepKind::Run {
                run,
                shell,
                working_directory: wd,
            };
        } else if let Some(uses) = uses {
            step.kind = StepKind::Uses { uses, with };
        } else if let Some(wait) = wait {
            step.if_condition = None;
            step.name = step
                .name
                .or_else(|| Some(Token::new(step_pos, TokenKind::String("Wait".into()))));
            step.kind = StepKind::Wait { wait };
        } else if wait_all {
            step.if_condition = None;
            step.name = step.name.or_else(|| {
                Some(Token::new(
                    step_pos,
                    TokenKind::String("Wait for all".into()),
                ))
            });
            step.kind = StepKind::WaitAll;
        } else if let Some(cancel) = cancel {
            step.if_condition = None;
            step.name = step
                .name
                .or_else(|| Some(Token::new(step_pos, TokenKind::String("Cancel".into()))));
            step.kind = StepKind::Cancel { cancel };
        } else if let Some(p) = parallel {
            let inner = self.steps(p);
            for s in &inner {
                if s.background {
                    self.error(step_pos, "'background' is not allowed inside a parallel block. Steps in a parallel block are automatically run as background steps.");
                }
                match s.kind {
                    StepKind::Wait { .. } => {
                        self.error(step_pos, "'wait' is not allowed inside a parallel block.")
                    }
                    StepKind::WaitAll => self.error(
                        step_pos,
                        "'wait-all' is not allowed inside a parallel block.",
                    ),
                    StepKind::Cancel { .. } => {
                        self.error(step_pos, "'cancel' is not allowed inside a parallel block.")
                    }
                    StepKind::Parallel { .. } => {
                        self.error(step_pos, "Nested 'parallel' blocks are not allowed.")
                    }
                    _ => {}
                }
            }
            step.if_condition = None;
            step.name = step.name.or_else(|| {
                Some(Token::new(
                    step_pos,
                    TokenKind::String("Parallel group".into()),
                ))
            });
            step.kind = StepKind::Parallel { parallel: inner };
        } else {
            self.error(step_pos, "Expected one of uses or run to be defined");
            return None;
        }
        Some(step)
    }

    fn target_step(&mut self, target: &Token, known: &[String], own: Option<&str>) {
        let Some(value) = target.as_str() else { return };
        if value.starts_with("__") {
            self.error(
                target.pos,
                format!(
                    "The identifier '{value}' is invalid. IDs starting with '__' are reserved."
                ),
            );
        } else if own.is_some_and(|o| o.eq_ignore_ascii_case(value)) {
            self.error(
                target.pos,
                format!("Step '{}' cannot reference itself", own.unwrap_or_default()),
            );
        } else if !known.iter().any(|k| k == value) {
            self.error(
                target.pos,
                format!("Step references unknown step ID '{value}'"),
            );
        }
    }

    /// Checks a reusable-workflow job against the called workflow's `on.workflow_call`;
    /// false when the workflow cannot be called at all (it has no `workflow_call`).
    pub(crate) fn check_called(&mut self, job: &ReusableJob, called_root: &Token) -> bool {
        let uses_pos = job.uses_pos;
        let Some(on) = called_root.get("on") else {
            self.error(
                uses_pos,
                "workflow_call key is not defined in the referenced workflow.",
            );
            return false;
        };
        let call: Option<Option<&Token>> = match &on.kind {
            TokenKind::String(s) if s == "workflow_call" => Some(None),
            TokenKind::Seq(items) if items.iter().any(|i| i.as_str() == Some("workflow_call")) => {
                Some(None)
            }
            TokenKind::Map(pairs) => pairs
                .iter()
                .find(|(k, _)| k.as_str() == Some("workflow_call"))
                .map(|(_, v)| {
                    if matches!(v.kind, TokenKind::Map(_)) {
                        Some(v)
                    } else {
                        None
                    }
                }),
            _ => None,
        };
        let Some(call) = call else {
            self.error(
                uses_pos,
                "workflow_call key is not defined in the referenced workflow.",
            );
            return false;
        };
        let input_defs = call.and_then(|c| c.get("inputs"));
        let secret_defs = call.and_then(|c| c.get("secrets"));
        // inputs
        let with_pairs = job.with.as_ref().and_then(|w| w.as_map());
        if let Some(defs) = input_defs.and_then(Token::as_map) {
            for (k, v) in defs {
                let name = k.literal_display();
                if v.get("type").is_none() {
                    continue;
                }
                let set = with_pairs.is_some_and(|w| {
                    w.iter()
                        .any(|(wk, _)| wk.literal_display().eq_ignore_ascii_case(&name))
                });
                if v.get("required").and_then(Token::as_bool) == Some(true) && !set {
                    self.error(
                        uses_pos,
                        format!("Input {name} is required, but not provided while calling."),
                    );
                }
            }
        }
        if let Some(with) = with_pairs {
            for (k, v) in with {
                let name = k.literal_display();
                let def = input_defs.and_then(Token::as_map).and_then(|d| {
                    d.iter()
                        .find(|(dk, _)| dk.literal_display().eq_ignore_ascii_case(&name))
                });
                let Some((_, def)) = def else {
                    self.error(
                        v.pos,
                        format!("Invalid input, {name} is not defined in the referenced workflow."),
                    );
                    continue;
                };
                if v.is_expression() {
                    continue;
                }
                let fits = match def.get("type").and_then(Token::as_str) {
                    Some("boolean") => matches!(v.kind, TokenKind::Bool(_)),
                    Some("number") => matches!(v.kind, TokenKind::Number(_)),
                    _ => true,
                };
                if !fits {
                    self.error(v.pos, format!("Unexpected value '{}'", v.literal_display()));
                }
            }
        }
        // secrets
        if job.inherit_secrets {
            return true;
        }
        let secret_pairs = job.secrets.as_ref().and_then(|s| s.as_map());
        if let Some(defs) = secret_defs.and_then(Token::as_map) {
            for (k, v) in defs {
                if matches!(v.kind, TokenKind::Null) {
                    continue;
                }
                let name = k.literal_display();
                if v.get("required").and_then(Token::as_bool) == Some(true) {
                    let set = secret_pairs.is_some_and(|s| {
                        s.iter()
                            .any(|(sk, _)| sk.literal_display().eq_ignore_ascii_case(&name))
                    });
                    if !set {
                        self.error(
                            uses_pos,
                            format!("Secret {name} is required, but not provided while calling."),
                        );
                    }
                }
            }
        }
        if let Some(values) = secret_pairs {
            for (k, v) in values {
                let name = k.literal_display();
                let defined = secret_defs.and_then(Token::as_map).is_some_and(|d| {
                    d.iter()
                        .any(|(dk, _)| dk.literal_display().eq_ignore_ascii_case(&name))
                });
                if !defined {
                    self.error(
                        v.pos,
                        format!(
                            "Invalid secret, {name} is not defined in the referenced workflow."
                        ),
                    );
                }
            }
        }
        true
    }
}

/// The name of the class GitHub's parser reads `t` as, which its messages use.
fn type_name(t: &Token) -> &'static str {
    match t.kind {
        TokenKind::Null => "NullToken",
        TokenKind::Bool(_) => "BooleanToken",
        TokenKind::Number(_) => "NumberToken",
        TokenKind::String(_) => "StringToken",
        TokenKind::Expr(_) => "BasicExpressionToken",
        TokenKind::Insert => "InsertExpressionToken",
        TokenKind::Seq(_) => "SequenceToken",
        TokenKind::Map(_) => "MappingToken",
    }
}

/// GitHub's default id for an action step: `owner/repo` for `owner/repo@ref`, the image for
/// `docker://image`, `self` for local actions, empty otherwise.
#[cfg(test)]
fn action_step_id(uses: &str) -> String {
    action_step_id_parts(uses).concat()
}

/// GitHub's default id base for a `uses:` step, in parts to concatenate (`owner`, `/`, `repo`).
fn action_step_id_parts(uses: &str) -> [&str; 3] {
    if let Some(image) = uses.strip_prefix("docker://") {
        return [image, "", ""];
    }
    if uses.starts_with("./") || uses.starts_with(".\\") || uses.starts_with("$/") {
        return ["self", "", ""];
    }
    let mut segments = uses.split('@');
    let (Some(path), Some(at), None) = (segments.next(), segments.next(), segments.next()) else {
        return ["", "", ""];
    };
    let mut path = path.split(['/', '\\']).filter(|s| !s.is_empty());
    if let (Some(owner), Some(repo), false) = (path.next(), path.next(), at.is_empty()) {
        return [owner, "/", repo];
    }
    ["", "", ""]
}

/// How many inputs GitHub.com lets a `workflow_dispatch` event declare.
pub const MAX_DISPATCH_INPUTS: usize = 25;

/// GitHub.com's refusal of a `workflow_dispatch` with more than [`MAX_DISPATCH_INPUTS`].
pub const DISPATCH_INPUTS_LIMIT: &str =
    "you may only define up to 25 `inputs` for a `workflow_dispatch` event";

/// A step's `uses:` must be `docker://…`, a local path (`./…`), or `{org}/{repo}[/path]@ref`.
fn valid_step_uses(uses: &str) -> bool {
    if uses.starts_with("docker://")
        || uses.starts_with("./")
        || uses.starts_with(".\\")
        || uses.starts_with("$/")
    {
        return true;
    }
    let mut segments = uses.split('@');
    let (Some(path), Some(at), None) = (segments.next(), segments.next(), segments.next()) else {
        return false;
    };
    if at.is_empty() {
        return false;
    }
    // Empty segments are dropped, as GitHub's C# parser does (`owner//repo@v1` is valid).
    path.split(['/', '\\'])
        .filter(|s| !s.is_empty())
        .nth(1)
        .is_some()
}

fn outputs(t: &Token) -> IndexMap<String, OutputDef> {
    let mut out = IndexMap::new();
    for (k, v) in t.as_map().unwrap_or(&[]) {
        let value = v
            .get("value")
            .cloned()
            .unwrap_or_else(|| Token::new(v.pos, TokenKind::Null));
        out.insert(
            k.literal_display(),
            OutputDef {
                description: v.get("description").and_then(opt_string),
                value,
            },
        );
    }
    out
}

fn secrets(t: &Token) -> IndexMap<String, SecretDef> {
    let mut out = IndexMap::new();
    for (k, v) in t.as_map().unwrap_or(&[]) {
        out.insert(
            k.literal_display(),
            SecretDef {
                description: v.get("description").and_then(opt_string),
                required: v.get("required").and_then(Token::as_bool).unwrap_or(false),
            },
        );
    }
    out
}

fn permissions(t: Token) -> Option<Permissions> {
    match t.kind {
        TokenKind::String(s) if s == "read-all" => Some(Permissions::ReadAll),
        TokenKind::String(s) if s == "write-all" => Some(Permissions::WriteAll),
        TokenKind::Map(pairs) => Some(Permissions::Scopes(
            pairs
                .into_iter()
                .filter_map(|(k, v)| Some((into_string(k)?, into_string(v)?)))
                .collect(),
        )),
        _ => None,
    }
}

fn run_defaults(t: &Token) -> RunDefaults {
    RunDefaults {
        shell: t.get("shell").and_then(opt_string),
        working_directory: t.get("working-directory").and_then(opt_string),
    }
}

fn strategy(t: Token) -> Strategy {
    Strategy {
        matrix: t.get("matrix").cloned(),
        fail_fast: t.get("fail-fast").cloned(),
        max_parallel: t.get("max-parallel").cloned(),
        token: t,
    }
}

/// A snapshot's `version`: a major version as the runner reads one (digits only, within a
/// 32-bit signed integer), then `.*`.
fn snapshot_version_is_valid(version: &str) -> bool {
    let Some((major, rest)) = version.split_once('.') else {
        return false;
    };
    rest == "*"
        && !major.is_empty()
        && major.bytes().all(|b| b.is_ascii_digit())
        && major.parse::<i32>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids() {
        let mut b = IdBuilder::default();
        b.append_segment("__actions/checkout");
        assert_eq!(b.build().as_deref(), Ok("__actions_checkout"));
        b.append_segment("__actions/checkout");
        assert_eq!(b.build().as_deref(), Ok("__actions_checkout_2"));
        b.append_segment("__run");
        assert_eq!(b.build().as_deref(), Ok("__run"));
        for _ in 1..999 {
            b.append_segment("__run");
            assert!(b.build().is_ok());
        }
        b.append_segment("__run");
        assert!(b.build().is_err());
        // Every character outside [A-Za-z0-9_-] becomes one `_`, multi-byte ones included;
        // a leading digit or dash gets a `_` before it; parts join without a separator.
        let mut b = IdBuilder::default();
        b.append_parts(&["9 é/ü", "x..y"]);
        assert_eq!(b.build().as_deref(), Ok("_9____x__y"));
        b.append_parts(&["-a"]);
        b.append_parts(&["b日本"]);
        assert_eq!(b.build().as_deref(), Ok("_-a_b__"));
        assert_eq!(action_step_id("docker://alpine:latest"), "alpine:latest");
        assert_eq!(
            action_step_id("org with space/repo with space@v2"),
            "org with space/repo with space"
        );
        assert_eq!(action_step_id("./local"), "self");
        assert_eq!(action_step_id("actions/checkout"), "");
    }

    #[test]
    fn known_ids() {
        let mut b = IdBuilder::default();
        assert!(b.try_add_known_id("a-b_c").is_ok());
        assert!(b.try_add_known_id("a-b_c").is_err());
        assert!(b
            .try_add_known_id("__x")
            .expect_err("an error")
            .contains("reserved"));
        assert!(b
            .try_add_known_id("0x")
            .expect_err("an error")
            .contains("invalid"));
        assert!(b.try_add_known_id(&"a".repeat(100)).is_err());
    }
}
