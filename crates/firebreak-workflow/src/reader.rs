//! The template reader: validates a YAML tree against the schema (`schema.rs`) and produces
//! [`Token`]s, splitting `${{ }}` templates into expression tokens. Its rules and messages
//! follow GitHub's reader: unknown keys, wrong types, duplicate keys, required properties,
//! ambiguous one-ofs, and where expressions (and which contexts) are allowed.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use crate::diag::{Diags, Pos};
use crate::exprs::{self, Allowed};
use crate::schema::{name_tag, schema, Node, ScalarDef, Schema};
use crate::token::{ExprToken, Token, TokenKind};
use crate::yaml::{YKind, YNode};

const BACKGROUND_PROPS: &[&str] = &["background", "wait", "wait-all", "cancel"];
const BACKGROUND_ONLY_PROPS: &[&str] = &["wait", "wait-all", "cancel"];

#[derive(Clone, Debug, Default)]
pub(crate) struct ReaderOptions {
    pub allow_background_steps: bool,
}

/// The contexts accumulated from a definition's ancestors, with the [`Allowed`] lists built
/// from them. Interned: the schema gives rise to a handful of distinct lists, each built once
/// per process.
pub(crate) struct Ctx {
    pub list: Vec<&'static str>,
    pub allowed: Allowed,
}

/// (parent context address or 0 for a root, added list address, added list length) → context.
type CtxTable = Vec<(usize, usize, usize, &'static Ctx)>;
static CTXS: Mutex<CtxTable> = Mutex::new(Vec::new());

/// The context of a child definition adding `add` to `parent` (GitHub's accumulation: adds
/// the names the parent does not have, compared case-insensitively), or the root context
/// `add` itself when there is no parent.
fn intern_ctx(parent: Option<&'static Ctx>, add: &'static [&'static str]) -> &'static Ctx {
    let key = (
        parent.map_or(0, |p| p as *const Ctx as usize),
        add.as_ptr() as usize,
        add.len(),
    );
    // A reader asks for the same few contexts over and over (~50 times per workflow): a
    // small per-thread cache answers most of them without the lock and the table scan.
    let slot = ((key.0 >> 4) ^ (key.1 >> 3) ^ key.2) % RECENT_SLOTS;
    let hit = RECENT.with(|r| {
        r.borrow()
            .get(slot)
            .and_then(|&(k, ctx)| ctx.filter(|_| k == key))
    });
    if let Some(ctx) = hit {
        return ctx;
    }
    let ctx = intern_ctx_locked(key, parent, add);
    RECENT.with(|r| {
        if let Some(e) = r.borrow_mut().get_mut(slot) {
            *e = (key, Some(ctx));
        }
    });
    ctx
}

const RECENT_SLOTS: usize = 32;

type RecentSlot = ((usize, usize, usize), Option<&'static Ctx>);

thread_local! {
    /// Recently interned contexts, direct-mapped by key.
    static RECENT: std::cell::RefCell<[RecentSlot; RECENT_SLOTS]> =
        const { std::cell::RefCell::new([((0, 0, 0), None); RECENT_SLOTS]) };
}

/// [`intern_ctx`] through the process-wide table.
fn intern_ctx_locked(
    key: (usize, usize, usize),
    parent: Option<&'static Ctx>,
    add: &'static [&'static str],
) -> &'static Ctx {
    let mut table = CTXS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(e) = table.iter().find(|e| (e.0, e.1, e.2) == key) {
        return e.3;
    }
    let list = match parent {
        None => add.to_vec(),
        Some(p) => {
            let mut ctx = p.list.clone();
            for c in add {
                if !ctx.iter().any(|x| x.eq_ignore_ascii_case(c)) {
                    ctx.push(c);
                }
            }
            ctx
        }
    };
    let allowed = Allowed::from_context(&list);
    let ctx: &'static Ctx = Box::leak(Box::new(Ctx { list, allowed }));
    table.push((key.0, key.1, key.2, ctx));
    ctx
}

/// The [`Allowed`] lists of a context list (built once per process).
pub(crate) fn allowed_for(ctx: &'static [&'static str]) -> &'static Allowed {
    &intern_ctx(None, ctx).allowed
}

/// A definition plus the contexts accumulated from its ancestors.
#[derive(Clone, Copy)]
struct DefInfo {
    node: &'static Node,
    ctx: &'static Ctx,
}

impl DefInfo {
    fn root(sc: &'static Schema, name: &str) -> Self {
        let node = sc.node(name);
        DefInfo {
            node,
            ctx: intern_ctx(None, node.def.ctx),
        }
    }
    fn child(&self, sc: &'static Schema, id: usize) -> Self {
        let node = sc.node_at(id);
        if node.def.ctx.is_empty() {
            return DefInfo {
                node,
                ctx: self.ctx,
            };
        }
        DefInfo {
            node,
            ctx: intern_ctx(Some(self.ctx), node.def.ctx),
        }
    }
}

/// A piece of a template: literal text or an expression (byte range of the template).
pub(crate) struct Seg {
    expr: bool,
    start: usize,
    end: usize,
}

pub(crate) struct Reader<'a> {
    scratch: exprs::Scratch,
    /// Buffer for the segments of a template.
    segments: Vec<Seg>,
    sc: &'static Schema,
    file: &'a str,
    diags: &'a mut Diags,
    opts: ReaderOptions,
}

/// Reads `root` as definition `type_name`, appending errors to `diags`.
pub(crate) fn read(
    file: &str,
    root: YNode,
    type_name: &str,
    opts: ReaderOptions,
    diags: &mut Diags,
) -> Token {
    let sc = schema();
    let mut r = Reader {
        scratch: exprs::Scratch::default(),
        segments: Vec::new(),
        sc,
        file,
        diags,
        opts,
    };
    let def = DefInfo::root(sc, type_name);
    r.read_value(root, def)
}

fn key_string(node: &YNode) -> String {
    match &node.kind {
        YKind::Null => String::new(),
        YKind::Bool(b) => b.to_string(),
        YKind::Number(n) => crate::token::format_number(*n),
        YKind::Str { value, .. } => value.to_string(),
        YKind::Seq(_) | YKind::Map(_) => String::new(),
    }
}

/// `a.to_uppercase() == b.to_uppercase()` without allocating.
fn upper_eq(a: &str, b: &str) -> bool {
    // Equal but for ASCII case: equal after upper-casing too.
    if a.eq_ignore_ascii_case(b) {
        return true;
    }
    if a.is_ascii() && b.is_ascii() {
        return false;
    }
    a.chars()
        .flat_map(char::to_uppercase)
        .eq(b.chars().flat_map(char::to_uppercase))
}

/// The keys of a mapping seen so far, compared after upper-casing (GitHub's rule). Keys that
/// made it into the output are referred to by their index there (no copy of the name); a
/// list for the usual handful of keys, a set of upper-cased keys for large mappings.
#[derive(Default)]
struct Seen {
    /// The first keys, without allocating.
    inline: [Option<SeenKey>; SEEN_INLINE],
    /// A cheap summary of each inline key (see [`key_tag`]).
    tags: [u64; SEEN_INLINE],
    len: usize,
    more: Vec<SeenKey>,
    /// Names that are not in the output (rejected keys), referred to by [`SeenKey::Own`]: the
    /// keys themselves are plain indexes, so a `Seen` has nothing to drop in the usual case.
    own: Vec<String>,
    upper: Option<HashSet<String>>,
}

/// The bit that records, among a mapping's keys, one exactly equal to the property
/// `prop_index[i]` (entries past the 64th have none: their keys are recorded by name).
fn prop_bit(i: usize) -> Option<u64> {
    (i < 64).then(|| 1u64 << i)
}

/// Length and first byte (ASCII-lower-cased) of an ASCII name, or `u64::MAX` for other names.
/// ASCII names equal after upper-casing have equal tags.
fn key_tag(name: &str) -> u64 {
    if !name.is_ascii() {
        return u64::MAX;
    }
    let first = name.as_bytes().first().map_or(0, u8::to_ascii_lowercase);
    ((name.len() as u64) << 8) | u64::from(first)
}

/// Whether names with these tags may be equal after upper-casing.
fn tags_may_match(a: u64, b: u64) -> bool {
    a == b || a == u64::MAX || b == u64::MAX
}

#[derive(Clone, Copy)]
enum SeenKey {
    /// The key of `out[i]`.
    Out(usize),
    /// `Seen::own[i]`.
    Own(usize),
}

const SEEN_INLINE: usize = 12;
const SEEN_LIST_MAX: usize = 32;

type Pairs = [(Token, Token)];

impl Seen {
    /// Nothing recorded yet.
    fn is_empty(&self) -> bool {
        self.len == 0 && self.upper.is_none()
    }

    fn keys(&self) -> impl Iterator<Item = &SeenKey> {
        self.inline[..self.len.min(SEEN_INLINE)]
            .iter()
            .flatten()
            .chain(self.more.iter())
    }

    fn name<'o>(&'o self, key: SeenKey, out: &'o Pairs) -> &'o str {
        match key {
            SeenKey::Out(i) => out.get(i).and_then(|(k, _)| k.as_str()).unwrap_or(""),
            SeenKey::Own(i) => self.own.get(i).map_or("", String::as_str),
        }
    }

    /// Records a name that is not in the output.
    fn add_own(&mut self, name: String, out: &Pairs) {
        self.own.push(name);
        self.add(SeenKey::Own(self.own.len() - 1), out);
    }

    /// An equal name (after upper-casing) was seen.
    fn contains(&self, name: &str, out: &Pairs) -> bool {
        if let Some(set) = &self.upper {
            return set.contains(&name.to_uppercase());
        }
        let tag = key_tag(name);
        let inline = self.len.min(SEEN_INLINE);
        for (k, &t) in self.inline[..inline].iter().zip(&self.tags[..inline]) {
            if let Some(k) = *k {
                if tags_may_match(t, tag) && upper_eq(self.name(k, out), name) {
                    return true;
                }
            }
        }
        self.more.iter().any(|&k| upper_eq(self.name(k, out), name))
    }

    /// Records a name that [`Seen::contains`] does not have.
    fn add(&mut self, key: SeenKey, out: &Pairs) {
        if self.upper.is_some() {
            let upper = self.name(key, out).to_uppercase();
            if let Some(set) = &mut self.upper {
                set.insert(upper);
            }
            return;
        }
        if self.len < SEEN_INLINE {
            self.tags[self.len] = key_tag(self.name(key, out));
            self.inline[self.len] = Some(key);
        } else {
            self.more.push(key);
        }
        self.len += 1;
        if self.len > SEEN_LIST_MAX {
            let set = self
                .keys()
                .map(|&k| self.name(k, out).to_uppercase())
                .collect();
            self.upper = Some(set);
        }
    }
}

/// The name of a literal key as an owned string: taken from the YAML node when it is the
/// node's own text (no copy when the node owns it).
fn key_name(k: &mut YNode<'_>, owned: Option<String>) -> Cow<'static, str> {
    match owned {
        Some(s) => Cow::Owned(s),
        None => match &mut k.kind {
            YKind::Str { value, .. } => Cow::Owned(std::mem::take(value).into_owned()),
            _ => Cow::Borrowed(""),
        },
    }
}

/// A YAML string as a token's string (copied when the YAML node borrows it from the source).
fn owned_text(value: Cow<'_, str>) -> Cow<'static, str> {
    Cow::Owned(value.into_owned())
}

/// The name when it is not borrowed from the key node (ending the borrow).
fn owned_name(name: Cow<'_, str>) -> Option<String> {
    match name {
        Cow::Owned(s) => Some(s),
        Cow::Borrowed(_) => None,
    }
}

/// A mapping key: an expression, or the literal name.
enum Key<'a> {
    Expr(Token),
    Name(Cow<'a, str>),
}

/// Takes a node out of its parent, leaving a null behind.
fn take<'s>(node: &mut YNode<'s>) -> YNode<'s> {
    std::mem::replace(
        node,
        YNode {
            pos: node.pos,
            kind: YKind::Null,
        },
    )
}

impl Reader<'_> {
    fn error(&mut self, pos: Pos, msg: impl Into<String>) {
        self.diags.error(self.file, Some(pos), msg);
    }

    fn read_value(&mut self, node: YNode, def: DefInfo) -> Token {
        let pos = node.pos;
        match node.kind {
            YKind::Seq(items) => {
                let Some(item_ty) = def.node.seq else {
                    self.error(pos, "A sequence was not expected");
                    return Token::new(pos, TokenKind::Seq(Vec::new()));
                };
                let item_def = def.child(self.sc, item_ty);
                let mut out = Vec::with_capacity(items.len());
                for i in items {
                    out.push(self.read_value(i, item_def));
                }
                Token::new(pos, TokenKind::Seq(out))
            }
            YKind::Map(mut pairs) => {
                let defs: &'static [usize] = &def.node.maps;
                let Some(&first) = defs.first() else {
                    self.error(pos, "A mapping was not expected");
                    return Token::new(pos, TokenKind::Map(Vec::new()));
                };
                let first = self.sc.node_at(first);
                match first.loose {
                    Some((k, v)) if defs.len() == 1 && first.props.is_empty() => {
                        self.read_loose_mapping(pos, &mut pairs, def, k, v)
                    }
                    _ => self.read_known_mapping(pos, &mut pairs, def, defs),
                }
            }
            kind => {
                let scalar = self.parse_scalar(pos, kind, def);
                self.validate(scalar, def)
            }
        }
    }

    fn literal(pos: Pos, kind: YKind) -> Token {
        let kind = match kind {
            YKind::Null => TokenKind::Null,
            YKind::Bool(b) => TokenKind::Bool(b),
            YKind::Number(n) => TokenKind::Number(n),
            YKind::Str { value, .. } => TokenKind::String(owned_text(value)),
            YKind::Seq(_) | YKind::Map(_) => TokenKind::Null,
        };
        Token::new(pos, kind)
    }

    fn read_known_mapping(
        &mut self,
        pos: Pos,
        pairs: &mut [(YNode, YNode)],
        def: DefInfo,
        def_ids: &'static [usize],
    ) -> Token {
        let sc = self.sc;
        let loose = sc.node_at(def_ids[0]).loose;
        // The candidate definitions still alive, as a bit set over `def_ids` (schema one-ofs
        // have a handful of members; checked by a unit test).
        let mut alive: u64 = if def_ids.len() >= 64 {
            u64::MAX
        } else {
            (1u64 << def_ids.len()) - 1
        };
        let candidates = |alive: u64| {
            def_ids
                .iter()
                .enumerate()
                .filter(move |(i, _)| alive & (1u64 << i) != 0)
                .map(|(_, &d)| sc.node_at(d))
        };
        // Keys that are exactly a known property are recorded as bit `i` for
        // `prop_index[i]` (a duplicate of one is the same entry); any other key is
        // recorded in `seen` and compared, upper-cased, with both.
        let mut seen = Seen::default();
        let mut props_seen: u64 = 0;
        let prop_seen_like = |props_seen: u64, name: &str| {
            let mut bits = props_seen;
            while bits != 0 {
                let i = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if def
                    .node
                    .prop_index
                    .get(i)
                    .is_some_and(|e| upper_eq(e.name, name))
                {
                    return true;
                }
            }
            false
        };
        let mut has_expression_key = false;
        let mut out: Vec<(Token, Token)> = Vec::with_capacity(pairs.len());
        for (k, v) in pairs.iter_mut() {
            let v = take(v);
            let key_pos = k.pos;
            let name = match self.parse_key(k, def) {
                Key::Expr(key) => {
                    has_expression_key = true;
                    if !def.ctx.list.is_empty() {
                        let any = def.child(sc, sc.any());
                        let value = self.read_value(v, any);
                        out.push((key, value));
                    } else {
                        self.error(
                            key.pos,
                            "A template expression is not allowed in this context",
                        );
                    }
                    continue;
                }
                Key::Name(name) => name,
            };
            let indexed = def.node.prop_at(&name, name_tag(&name));
            let bit = indexed.and_then(|(i, _)| prop_bit(i));
            let duplicate = !name.is_empty()
                && match bit {
                    Some(b) => {
                        props_seen & b != 0 || (!seen.is_empty() && seen.contains(&name, &out))
                    }
                    None => seen.contains(&name, &out) || prop_seen_like(props_seen, &name),
                };
            if duplicate {
                self.error(key_pos, format!("'{name}' is already defined"));
                continue;
            }
            let record = !name.is_empty();
            // well-known property (filters the candidate definitions): its type in the last
            // candidate still alive that has it
            let entry = indexed.map(|(_, e)| e);
            let having = entry.map_or(0, |e| e.mask & alive);
            let found = entry
                .filter(|_| having != 0)
                .map(|e| e.tys[63 - having.leading_zeros() as usize]);
            if let Some(ty) = found {
                alive &= entry.map_or(0, |e| e.mask);
                if !self.opts.allow_background_steps && BACKGROUND_PROPS.contains(&&*name) {
                    self.error(key_pos, format!("Unexpected value '{name}'"));
                    if record {
                        seen.add_own(name.into_owned(), &out);
                    }
                    continue;
                }
                // The schema's own name (equal to the key): no copy of the text.
                let key = Token::new(
                    key_pos,
                    TokenKind::String(Cow::Borrowed(entry.map_or("", |e| e.name))),
                );
                let value_def = def.child(sc, ty);
                let value = self.read_value(v, value_def);
                out.push((key, value));
                if record {
                    match bit {
                        Some(b) => props_seen |= b,
                        None => seen.add(SeenKey::Out(out.len() - 1), &out),
                    }
                }
                continue;
            }
            if let Some((kt, vt)) = loose {
                let kdef = def.child(sc, kt);
                let key = self.validate(
                    Token::new(key_pos, TokenKind::String(key_name(k, owned_name(name)))),
                    kdef,
                );
                let vdef = def.child(sc, vt);
                let value = self.read_value(v, vdef);
                out.push((key, value));
                if record {
                    seen.add(SeenKey::Out(out.len() - 1), &out);
                }
                continue;
            }
            self.error(key_pos, format!("Unexpected value '{name}'"));
            if record {
                seen.add_own(name.into_owned(), &out);
            }
        }
        let alive_count = alive.count_ones();
        if alive_count > 1 {
            let mut counts: Vec<(&str, usize)> = Vec::new();
            for d in candidates(alive) {
                for p in &d.props {
                    match counts.iter_mut().find(|(n, _)| *n == p.name) {
                        Some(c) => c.1 += 1,
                        None => counts.push((p.name, 1)),
                    }
                }
            }
            let mut names: Vec<&str> = counts
                .into_iter()
                .filter(|(_, c)| *c == 1)
                .map(|(n, _)| n)
                .filter(|n| self.opts.allow_background_steps || !BACKGROUND_ONLY_PROPS.contains(n))
                .collect();
            names.sort_unstable();
            self.error(
                pos,
                format!(
                    "There's not enough info to determine what you meant. Add one of these properties: {}",
                    names.join(", ")
                ),
            );
        } else if alive_count == 1 && !has_expression_key {
            for p in candidates(alive).flat_map(|d| d.props.iter()) {
                if !p.required {
                    continue;
                }
                let exact = def
                    .node
                    .prop_at(p.name, name_tag(p.name))
                    .and_then(|(i, _)| prop_bit(i))
                    .is_some_and(|b| props_seen & b != 0);
                if !exact && !seen.contains(p.name, &out) {
                    self.error(pos, format!("Required property is missing: {}", p.name));
                }
            }
        }
        Token::new(pos, TokenKind::Map(out))
    }

    fn read_loose_mapping(
        &mut self,
        pos: Pos,
        pairs: &mut [(YNode, YNode)],
        def: DefInfo,
        key_ty: usize,
        value_ty: usize,
    ) -> Token {
        let kdef = def.child(self.sc, key_ty);
        let vdef = def.child(self.sc, value_ty);
        let mut seen = Seen::default();
        let mut out: Vec<(Token, Token)> = Vec::with_capacity(pairs.len());
        for (k, v) in pairs.iter_mut() {
            let v = take(v);
            let key_pos = k.pos;
            let name = match self.parse_key(k, def) {
                Key::Expr(key) => {
                    if !def.ctx.list.is_empty() {
                        let value = self.read_value(v, vdef);
                        out.push((key, value));
                    } else {
                        self.error(
                            key.pos,
                            "A template expression is not allowed in this context",
                        );
                    }
                    continue;
                }
                Key::Name(name) => name,
            };
            if !name.is_empty() && seen.contains(&name, &out) {
                self.error(key_pos, format!("'{name}' is already defined"));
                continue;
            }
            let record = !name.is_empty();
            let key = Token::new(key_pos, TokenKind::String(key_name(k, owned_name(name))));
            let key = self.validate(key, kdef);
            let value = self.read_value(v, vdef);
            out.push((key, value));
            if record {
                seen.add(SeenKey::Out(out.len() - 1), &out);
            }
        }
        Token::new(pos, TokenKind::Map(out))
    }

    fn parse_key<'k>(&mut self, k: &'k YNode, def: DefInfo) -> Key<'k> {
        match &k.kind {
            YKind::Str { value, .. } => match self.parse_template(k.pos, value, def) {
                None => Key::Name(Cow::Borrowed(value)),
                Some(tok) => match tok.kind {
                    TokenKind::String(s) => Key::Name(Cow::Owned(s.into_owned())),
                    _ => Key::Expr(tok),
                },
            },
            _ => Key::Name(Cow::Owned(key_string(k))),
        }
    }

    /// GitHub's `validate`: matches a literal against the scalar definitions, converting
    /// non-strings to strings when only a string definition fits.
    fn validate(&mut self, tok: Token, def: DefInfo) -> Token {
        match &tok.kind {
            TokenKind::Null | TokenKind::Bool(_) | TokenKind::Number(_) | TokenKind::String(_) => {
                let scalars = &def.node.scalars;
                if scalars.iter().any(|s| is_match(s, &tok)) {
                    return tok;
                }
                if !matches!(tok.kind, TokenKind::String(_)) {
                    let as_string =
                        Token::new(tok.pos, TokenKind::String(tok.literal_display().into()));
                    if scalars.iter().any(|s| is_match(s, &as_string)) {
                        return as_string;
                    }
                }
                self.error(
                    tok.pos,
                    format!("Unexpected value '{}'", tok.literal_display()),
                );
                tok
            }
            TokenKind::Expr(_) => {
                if def.ctx.list.is_empty() {
                    self.error(
                        tok.pos,
                        "A template expression is not allowed in this context",
                    );
                }
                tok
            }
            _ => {
                self.error(
                    tok.pos,
                    format!("Unexpected value '{}'", tok.literal_display()),
                );
                tok
            }
        }
    }

    /// A scalar as a token: strings are split into literal and `${{ }}` segments.
    fn parse_scalar(&mut self, pos: Pos, kind: YKind, def: DefInfo) -> Token {
        match kind {
            YKind::Str { value, .. } => match find(value.as_bytes(), 0) {
                None => Token::new(pos, TokenKind::String(owned_text(value))),
                Some(first) => {
                    let shape = self.template_shape(pos, &value, def, first);
                    // The token reuses the scalar's buffer when it has one.
                    match value {
                        Cow::Owned(s) => shape.build(pos, Src::Owned(s)),
                        Cow::Borrowed(s) => shape.build(pos, Src::Borrowed(s)),
                    }
                }
            },
            kind => Self::literal(pos, kind),
        }
    }

    /// Splits a string scalar into literal and `${{ }}` segments (GitHub's `parseScalar`).
    /// `None` when the string holds no `${{` (it is a literal as it is).
    fn parse_template(&mut self, pos: Pos, raw: &str, def: DefInfo) -> Option<Token> {
        let first = find(raw.as_bytes(), 0)?;
        Some(
            self.template_shape(pos, raw, def, first)
                .build(pos, Src::Borrowed(raw)),
        )
    }

    /// What [`Self::parse_template`] makes of `raw`, which has a `${{` at `first`.
    fn template_shape(&mut self, pos: Pos, raw: &str, def: DefInfo, first: usize) -> Shape {
        // The segment list is a buffer reused from one template to the next.
        let mut segments = std::mem::take(&mut self.segments);
        segments.clear();
        let shape = self.split_template(pos, raw, def, first, &mut segments);
        self.segments = segments;
        shape
    }

    /// [`Self::parse_template`] of a string with a `${{` at `start_expr`.
    fn split_template(
        &mut self,
        pos: Pos,
        raw: &str,
        def: DefInfo,
        mut start_expr: usize,
        segments: &mut Vec<Seg>,
    ) -> Shape {
        // All markers (`${{`, `}}`, `'`) are ASCII, so scanning bytes finds exactly the
        // positions scanning characters would, and every index below is a char boundary.
        let bytes = raw.as_bytes();
        let literal = || Shape::Literal;
        let allowed = &def.ctx.allowed;
        let mut i = 0usize;
        let n = bytes.len();
        let mut next_expr: Option<usize> = Some(start_expr);
        while i < n {
            if Some(i) == next_expr {
                start_expr = i;
                let mut end_expr: Option<usize> = None;
                let mut in_string = false;
                i += 3;
                while i < n {
                    if bytes[i] == b'\'' {
                        in_string = !in_string;
                    } else if !in_string && bytes[i] == b'}' && bytes[i - 1] == b'}' {
                        end_expr = Some(i);
                        i += 1;
                        break;
                    }
                    i += 1;
                }
                let Some(end) = end_expr.filter(|e| *e >= start_expr) else {
                    self.error(
                        pos,
                        "The expression is not closed. An unescaped ${{ sequence was found, but the closing }} sequence was not found.",
                    );
                    return literal();
                };
                let inner_len = (end + 1).saturating_sub(start_expr + 5);
                let raw_expr = &raw[start_expr + 3..start_expr + 3 + inner_len];
                match self.parse_expression(raw_expr, allowed) {
                    // The first bad expression of a string is its error: GitHub's reader
                    // stops there (its errors all carry the string's position).
                    Err(msg) => {
                        self.error(pos, msg);
                        return literal();
                    }
                    Ok(ParsedExpr::Insert) => {
                        if start_expr != 0 || i < n {
                            self.error(
                                pos,
                                "The directive 'insert' is not allowed in this context. Directives are not supported for expressions that are embedded within a string. Directives are only supported when the entire value is an expression.",
                            );
                            return literal();
                        }
                        return Shape::Insert;
                    }
                    Ok(ParsedExpr::Basic(e)) => {
                        for w in exprs::format_warnings(e) {
                            self.diags.warn(self.file, Some(pos), w);
                        }
                        // `e` is `raw_expr` trimmed
                        let at = start_expr + 3 + (raw_expr.len() - raw_expr.trim_start().len());
                        segments.push(Seg {
                            expr: true,
                            start: at,
                            end: at + e.len(),
                        });
                    }
                }
                next_expr = find(bytes, i);
            } else if let Some(s) = next_expr.filter(|s| i < *s) {
                segments.push(Seg {
                    expr: false,
                    start: i,
                    end: s,
                });
                i = s;
            } else {
                segments.push(Seg {
                    expr: false,
                    start: i,
                    end: n,
                });
                break;
            }
        }
        if let [seg] = segments.as_slice() {
            if seg.expr {
                let e = &raw[seg.start..seg.end];
                if let Some(s) = expression_string(e) {
                    return Shape::Str(s);
                }
                return Shape::Single {
                    start: seg.start,
                    end: seg.end,
                };
            }
        }
        // `format('literal {0}…', expr0, …)`: at most the raw text, the call around it and a
        // second copy of the expressions (escaped quotes and braces may need more).
        let mut expr = String::with_capacity(2 * raw.len() + 16);
        expr.push_str("format('");
        let mut idx = 0usize;
        for seg in segments.iter() {
            if seg.expr {
                // `{idx}`, without the formatting machinery
                expr.push('{');
                push_decimal(&mut expr, idx);
                expr.push('}');
                idx += 1;
                continue;
            }
            // Escape `'`, `{` and `}` by doubling them (all ASCII: byte offsets are char
            // boundaries).
            let mut rest = &raw[seg.start..seg.end];
            while let Some(p) = rest.bytes().position(|b| matches!(b, b'\'' | b'{' | b'}')) {
                expr.push_str(&rest[..=p]);
                expr.push_str(&rest[p..=p]);
                rest = &rest[p + 1..];
            }
            expr.push_str(rest);
        }
        expr.push('\'');
        for seg in segments.iter().filter(|s| s.expr) {
            expr.push_str(", ");
            expr.push_str(&raw[seg.start..seg.end]);
        }
        expr.push(')');
        if expr.len() > exprs::MAX_LENGTH && expr.chars().count() > exprs::MAX_LENGTH {
            self.error(
                pos,
                format!("Exceeded max expression length {}", exprs::MAX_LENGTH),
            );
            return literal();
        }
        Shape::Format(expr)
    }

    fn parse_expression<'e>(
        &mut self,
        value: &'e str,
        allowed: &Allowed,
    ) -> Result<ParsedExpr<'e>, String> {
        let trimmed = value.trim();
        if trimmed.is_empty() {
            return Err("An expression was expected".to_string());
        }
        if let Some(r) = match_insert(trimmed) {
            return r.map(|()| ParsedExpr::Insert);
        }
        exprs::check_in(trimmed, allowed, &mut self.scratch)?;
        Ok(ParsedExpr::Basic(trimmed))
    }
}

/// The text a template token is built from: the scalar's own string (moved into the token) or
/// borrowed text (copied).
enum Src<'a> {
    Owned(String),
    Borrowed(&'a str),
}

impl Src<'_> {
    fn into_string(self) -> String {
        match self {
            Src::Owned(s) => s,
            Src::Borrowed(s) => s.to_string(),
        }
    }
}

/// What a string with `${{` turns out to be.
enum Shape {
    /// A literal after all (an error was reported): the text as it is.
    Literal,
    /// The `${{ insert }}` directive.
    Insert,
    /// `${{ 'a string literal' }}`: its value.
    Str(String),
    /// One expression and nothing else: the expression is `text[start..end]`.
    Single { start: usize, end: usize },
    /// Literals and expressions mixed: this `format(…)` expression, the text as its source.
    Format(String),
}

impl Shape {
    fn build(self, pos: Pos, src: Src<'_>) -> Token {
        let kind = match self {
            Shape::Literal => TokenKind::String(src.into_string().into()),
            Shape::Insert => TokenKind::Insert,
            Shape::Str(s) => TokenKind::String(s.into()),
            Shape::Single { start, end } => {
                let expr = match src {
                    Src::Owned(mut s) => {
                        s.truncate(end);
                        s.drain(..start);
                        s
                    }
                    Src::Borrowed(s) => s[start..end].to_string(),
                };
                TokenKind::Expr(Box::new(ExprToken { expr, source: None }))
            }
            Shape::Format(expr) => TokenKind::Expr(Box::new(ExprToken {
                expr,
                source: Some(src.into_string()),
            })),
        };
        Token::new(pos, kind)
    }
}

enum ParsedExpr<'e> {
    Basic(&'e str),
    Insert,
}

/// Appends `n` in decimal.
fn push_decimal(out: &mut String, n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[i..] {
        out.push(char::from(d));
    }
}

fn find(bytes: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(p) = bytes.get(i..)?.iter().position(|&b| b == b'$') {
        let at = i + p;
        if bytes.get(at + 1..at + 3) == Some(b"{{".as_slice()) {
            return Some(at);
        }
        i = at + 1;
    }
    None
}
fn is_match(def: &ScalarDef, tok: &Token) -> bool {
    match (def, &tok.kind) {
        (ScalarDef::Null, TokenKind::Null) => true,
        (ScalarDef::Bool, TokenKind::Bool(_)) => true,
        (ScalarDef::Number, TokenKind::Number(_)) => true,
        (
            ScalarDef::Str {
                constant,
                non_empty,
            },
            TokenKind::String(s),
        ) => match constant {
            Some(c) => c == s,
            None => !*non_empty || !s.is_empty(),
        },
        _ => false,
    }
}

/// `Some(Ok)` when `trimmed` is the `insert` directive, `Some(Err)` when it is the directive
/// with parameters, `None` when it is not a directive.
fn match_insert(trimmed: &str) -> Option<Result<(), String>> {
    let rest = trimmed.strip_prefix("insert")?;
    if !(rest.is_empty() || rest.starts_with(char::is_whitespace)) {
        return None;
    }
    // Parameters are split at white space outside quotes and parentheses (GitHub's C#
    // reader): `insert 'a b'` has one.
    let (mut params, mut in_param, mut in_string, mut parens) = (0, false, false, 0i32);
    for c in rest.chars() {
        if c.is_whitespace() && !in_string && parens == 0 {
            in_param = false;
            continue;
        }
        if !in_param {
            params += 1;
            in_param = true;
        }
        match c {
            '\'' => in_string = !in_string,
            '(' if !in_string => parens += 1,
            ')' if !in_string => parens -= 1,
            _ => {}
        }
    }
    if params != 0 {
        return Some(Err(format!(
            "Exactly 0 parameter(s) were expected following the directive 'insert'. Actual parameter count: {params}"
        )));
    }
    Some(Ok(()))
}

/// If the expression is a single string literal (`'…'`), its value.
fn expression_string(e: &str) -> Option<String> {
    let mut out = String::new();
    let mut in_string = false;
    for (i, c) in e.chars().enumerate() {
        if c == '\'' {
            in_string = !in_string;
            if in_string && i != 0 {
                out.push(c);
            }
        } else if !in_string {
            return None;
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// Checks an `if:` condition (already unwrapped from `${{ }}` or taken as a bare string) and
/// returns the final condition, wrapped as `success() && (…)` when it uses no status function.
pub(crate) fn if_condition(
    condition: &str,
    allowed: &Allowed,
    scratch: &mut exprs::Scratch,
) -> Result<String, String> {
    let condition = condition.trim();
    if condition.is_empty() {
        return Ok("success()".to_string());
    }
    // The final condition is checked too. When it is the condition itself, that second check
    // would repeat the first one (same text, same allowed lists), so its result is reused.
    match exprs::check_in(condition, allowed, scratch) {
        Ok(c) if c.status_function => Ok(condition.to_string()),
        Ok(c) => {
            let mut final_condition = String::with_capacity(condition.len() + 15);
            final_condition.push_str("success() && (");
            final_condition.push_str(condition);
            final_condition.push(')');
            if !exprs::wrapped_in_success_passes(&c, allowed) {
                exprs::check_in(&final_condition, allowed, scratch)?;
            }
            Ok(final_condition)
        }
        Err(e) => Err(e),
    }
}
