//! The template reader: validates a YAML tree against the schema (`schema.rs`) and produces
//! [`Token`]s, splitting `${{ }}` templates into expression tokens. Its rules and messages
//! follow GitHub's reader: unknown keys, wrong types, duplicate keys, required properties,
//! ambiguous one-ofs, and where expressions (and which contexts) are allowed.

use crate::diag::{Diags, Pos};
use crate::exprs::{self, Allowed};
use crate::schema::{loose_of, props_of, schema, Def, ScalarDef, Schema};
use crate::token::{ExprToken, Token, TokenKind};
use crate::yaml::{YKind, YNode};

const BACKGROUND_PROPS: &[&str] = &["background", "wait", "wait-all", "cancel"];
const BACKGROUND_ONLY_PROPS: &[&str] = &["wait", "wait-all", "cancel"];

#[derive(Clone, Debug, Default)]
pub(crate) struct ReaderOptions {
    pub allow_background_steps: bool,
}

/// A definition plus the contexts accumulated from its ancestors.
#[derive(Clone)]
struct DefInfo {
    def: &'static Def,
    ctx: Vec<&'static str>,
}

impl DefInfo {
    fn root(sc: &Schema, name: &str) -> Self {
        let def = sc.get(name);
        DefInfo { def, ctx: def.ctx.to_vec() }
    }
    fn child(&self, sc: &Schema, name: &str) -> Self {
        self.child_def(sc.get(name))
    }
    fn child_def(&self, def: &'static Def) -> Self {
        if def.ctx.is_empty() {
            return DefInfo { def, ctx: self.ctx.clone() };
        }
        let mut ctx = self.ctx.clone();
        for c in def.ctx {
            if !ctx.iter().any(|x| x.eq_ignore_ascii_case(c)) {
                ctx.push(c);
            }
        }
        DefInfo { def, ctx }
    }
}

pub(crate) struct Reader<'a> {
    sc: &'static Schema,
    file: &'a str,
    diags: &'a mut Diags,
    opts: ReaderOptions,
}

/// Reads `root` as definition `type_name`, appending errors to `diags`.
pub(crate) fn read(file: &str, root: &YNode, type_name: &str, opts: ReaderOptions, diags: &mut Diags) -> Token {
    let sc = schema();
    let mut r = Reader { sc, file, diags, opts };
    let def = DefInfo::root(sc, type_name);
    r.read_value(root, &def)
}

fn key_string(node: &YNode) -> String {
    match &node.kind {
        YKind::Null => String::new(),
        YKind::Bool(b) => b.to_string(),
        YKind::Number(n) => crate::token::format_number(*n),
        YKind::Str { value, .. } => value.clone(),
        YKind::Seq(_) | YKind::Map(_) => String::new(),
    }
}

impl Reader<'_> {
    fn error(&mut self, pos: Pos, msg: impl Into<String>) {
        self.diags.error(self.file, Some(pos), msg);
    }

    fn read_value(&mut self, node: &YNode, def: &DefInfo) -> Token {
        match &node.kind {
            YKind::Seq(items) => {
                let Some(item_ty) = self.sc.seq_def(def.def) else {
                    self.error(node.pos, "A sequence was not expected");
                    return Token::new(node.pos, TokenKind::Seq(Vec::new()));
                };
                let item_def = def.child(self.sc, item_ty);
                let out = items.iter().map(|i| self.read_value(i, &item_def)).collect();
                Token::new(node.pos, TokenKind::Seq(out))
            }
            YKind::Map(pairs) => {
                let defs = self.sc.map_defs(def.def);
                if defs.is_empty() {
                    self.error(node.pos, "A mapping was not expected");
                    return Token::new(node.pos, TokenKind::Map(Vec::new()));
                }
                let first = defs[0];
                let loose = loose_of(first);
                if defs.len() > 1 || !props_of(first).is_empty() || loose.is_none() {
                    self.read_known_mapping(node, pairs, def, defs)
                } else {
                    let (k, v) = loose.unwrap_or(("string", "any"));
                    self.read_loose_mapping(node, pairs, def, k, v)
                }
            }
            _ => {
                let scalar = self.parse_scalar(node, def);
                self.validate(scalar, def)
            }
        }
    }

    fn literal(node: &YNode) -> Token {
        let kind = match &node.kind {
            YKind::Null => TokenKind::Null,
            YKind::Bool(b) => TokenKind::Bool(*b),
            YKind::Number(n) => TokenKind::Number(*n),
            YKind::Str { value, .. } => TokenKind::String(value.clone()),
            YKind::Seq(_) | YKind::Map(_) => TokenKind::Null,
        };
        Token::new(node.pos, kind)
    }

    fn read_known_mapping(
        &mut self,
        node: &YNode,
        pairs: &[(YNode, YNode)],
        def: &DefInfo,
        mut defs: Vec<&'static Def>,
    ) -> Token {
        let loose = loose_of(defs[0]);
        let mut seen_upper: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut has_expression_key = false;
        let mut out: Vec<(Token, Token)> = Vec::new();
        for (k, v) in pairs {
            let key = self.parse_key(k, def);
            if key.is_expression() {
                has_expression_key = true;
                if !def.ctx.is_empty() {
                    let any = def.child(self.sc, "any");
                    let value = self.read_value(v, &any);
                    out.push((key, value));
                } else {
                    self.error(key.pos, "A template expression is not allowed in this context");
                }
                continue;
            }
            let name = key.literal_display();
            if !name.is_empty() && !seen_upper.insert(name.to_uppercase()) {
                self.error(key.pos, format!("'{name}' is already defined"));
                continue;
            }
            let key = Token::new(key.pos, TokenKind::String(name.clone()));
            // well-known property (filters the candidate definitions)
            let mut found: Option<&'static str> = None;
            let mut missing_in_some = false;
            for d in &defs {
                match props_of(d).iter().find(|p| p.name == name) {
                    Some(p) => found = Some(p.ty),
                    None => missing_in_some = true,
                }
            }
            if let Some(ty) = found {
                if missing_in_some {
                    defs.retain(|d| props_of(d).iter().any(|p| p.name == name));
                }
                if !self.opts.allow_background_steps && BACKGROUND_PROPS.contains(&name.as_str()) {
                    self.error(key.pos, format!("Unexpected value '{name}'"));
                    continue;
                }
                let value_def = def.child(self.sc, ty);
                let value = self.read_value(v, &value_def);
                out.push((key, value));
                continue;
            }
            if let Some((kt, vt)) = loose {
                let kdef = def.child(self.sc, kt);
                let key = self.validate(key, &kdef);
                let vdef = def.child(self.sc, vt);
                let value = self.read_value(v, &vdef);
                out.push((key, value));
                continue;
            }
            self.error(key.pos, format!("Unexpected value '{name}'"));
        }
        if defs.len() > 1 {
            let mut counts: Vec<(&str, usize)> = Vec::new();
            for d in &defs {
                for p in props_of(d) {
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
                node.pos,
                format!(
                    "There's not enough info to determine what you meant. Add one of these properties: {}",
                    names.join(", ")
                ),
            );
        } else if defs.len() == 1 && !has_expression_key {
            for p in props_of(defs[0]) {
                if p.required && !seen_upper.contains(&p.name.to_uppercase()) {
                    self.error(node.pos, format!("Required property is missing: {}", p.name));
                }
            }
        }
        Token::new(node.pos, TokenKind::Map(out))
    }

    fn read_loose_mapping(
        &mut self,
        node: &YNode,
        pairs: &[(YNode, YNode)],
        def: &DefInfo,
        key_ty: &str,
        value_ty: &str,
    ) -> Token {
        let kdef = def.child(self.sc, key_ty);
        let vdef = def.child(self.sc, value_ty);
        let mut seen_upper: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut out: Vec<(Token, Token)> = Vec::new();
        for (k, v) in pairs {
            let key = self.parse_key(k, def);
            if key.is_expression() {
                if !def.ctx.is_empty() {
                    let value = self.read_value(v, &vdef);
                    out.push((key, value));
                } else {
                    self.error(key.pos, "A template expression is not allowed in this context");
                }
                continue;
            }
            let name = key.literal_display();
            if !name.is_empty() && !seen_upper.insert(name.to_uppercase()) {
                self.error(key.pos, format!("'{name}' is already defined"));
                continue;
            }
            let key = Token::new(key.pos, TokenKind::String(name));
            let key = self.validate(key, &kdef);
            let value = self.read_value(v, &vdef);
            out.push((key, value));
        }
        Token::new(node.pos, TokenKind::Map(out))
    }

    fn parse_key(&mut self, k: &YNode, def: &DefInfo) -> Token {
        match &k.kind {
            YKind::Str { .. } => self.parse_scalar(k, def),
            _ => Token::new(k.pos, TokenKind::String(key_string(k))),
        }
    }

    /// GitHub's `validate`: matches a literal against the scalar definitions, converting
    /// non-strings to strings when only a string definition fits.
    fn validate(&mut self, tok: Token, def: &DefInfo) -> Token {
        match &tok.kind {
            TokenKind::Null | TokenKind::Bool(_) | TokenKind::Number(_) | TokenKind::String(_) => {
                let mut scalars = Vec::new();
                self.sc.scalar_defs(def.def, &mut scalars);
                if scalars.iter().any(|s| is_match(s, &tok)) {
                    return tok;
                }
                if !matches!(tok.kind, TokenKind::String(_)) {
                    let as_string = Token::new(tok.pos, TokenKind::String(tok.literal_display()));
                    if scalars.iter().any(|s| is_match(s, &as_string)) {
                        return as_string;
                    }
                }
                self.error(tok.pos, format!("Unexpected value '{}'", tok.literal_display()));
                tok
            }
            TokenKind::Expr(_) => {
                if def.ctx.is_empty() {
                    self.error(tok.pos, "A template expression is not allowed in this context");
                }
                tok
            }
            _ => {
                self.error(tok.pos, format!("Unexpected value '{}'", tok.literal_display()));
                tok
            }
        }
    }

    /// Splits a string scalar into literal and `${{ }}` segments (GitHub's `parseScalar`).
    fn parse_scalar(&mut self, node: &YNode, def: &DefInfo) -> Token {
        let raw = match &node.kind {
            YKind::Str { value, .. } if !value.is_empty() => value,
            _ => return Self::literal(node),
        };
        let chars: Vec<char> = raw.chars().collect();
        let Some(mut start_expr) = find(&chars, 0) else {
            return Self::literal(node);
        };
        let allowed = Allowed::from_context(&def.ctx);
        let mut encountered_error = false;
        enum Seg {
            Lit(String),
            Expr(String),
        }
        let mut segments: Vec<Seg> = Vec::new();
        let mut i = 0usize;
        let n = chars.len();
        let mut next_expr: Option<usize> = Some(start_expr);
        while i < n {
            if Some(i) == next_expr {
                start_expr = i;
                let mut end_expr: Option<usize> = None;
                let mut in_string = false;
                i += 3;
                while i < n {
                    if chars[i] == '\'' {
                        in_string = !in_string;
                    } else if !in_string && chars[i] == '}' && chars[i - 1] == '}' {
                        end_expr = Some(i);
                        i += 1;
                        break;
                    }
                    i += 1;
                }
                let Some(end) = end_expr.filter(|e| *e >= start_expr) else {
                    self.error(
                        node.pos,
                        "The expression is not closed. An unescaped ${{ sequence was found, but the closing }} sequence was not found.",
                    );
                    return Self::literal(node);
                };
                let inner_len = (end + 1).saturating_sub(start_expr + 5);
                let raw_expr: String = chars[start_expr + 3..start_expr + 3 + inner_len].iter().collect();
                match self.parse_expression(&raw_expr, &allowed) {
                    Err(msg) => {
                        self.error(node.pos, msg);
                        encountered_error = true;
                    }
                    Ok(ParsedExpr::Insert) => {
                        if start_expr != 0 || i < n {
                            self.error(
                                node.pos,
                                "The directive 'insert' is not allowed in this context. Directives are not supported for expressions that are embedded within a string. Directives are only supported when the entire value is an expression.",
                            );
                            return Self::literal(node);
                        }
                        return Token::new(node.pos, TokenKind::Insert);
                    }
                    Ok(ParsedExpr::Basic(e)) => segments.push(Seg::Expr(e)),
                }
                next_expr = find(&chars, i);
            } else if next_expr.is_some_and(|s| i < s) {
                let s = next_expr.unwrap_or(n);
                let text: String = chars[i..s].iter().collect();
                push_lit(&mut segments, text);
                i = s;
            } else {
                let text: String = chars[i..].iter().collect();
                push_lit(&mut segments, text);
                break;
            }
        }
        fn push_lit(segments: &mut Vec<Seg>, text: String) {
            if let Some(Seg::Lit(last)) = segments.last_mut() {
                last.push_str(&text);
            } else {
                segments.push(Seg::Lit(text));
            }
        }
        if encountered_error {
            return Self::literal(node);
        }
        if segments.len() == 1 {
            if let Seg::Expr(e) = &segments[0] {
                if let Some(s) = expression_string(e) {
                    return Token::new(node.pos, TokenKind::String(s));
                }
                return Token::new(node.pos, TokenKind::Expr(ExprToken { expr: e.clone(), source: None }));
            }
        }
        let mut format = String::new();
        let mut args = String::new();
        let mut idx = 0;
        for seg in &segments {
            match seg {
                Seg::Lit(t) => {
                    format.push_str(&t.replace('\'', "''").replace('{', "{{").replace('}', "}}"));
                }
                Seg::Expr(e) => {
                    format.push_str(&format!("{{{idx}}}"));
                    idx += 1;
                    args.push_str(", ");
                    args.push_str(e);
                }
            }
        }
        let expr = format!("format('{format}'{args})");
        if expr.chars().count() > exprs::MAX_LENGTH {
            self.error(node.pos, format!("Exceeded max expression length {}", exprs::MAX_LENGTH));
            return Self::literal(node);
        }
        Token::new(node.pos, TokenKind::Expr(ExprToken { expr, source: Some(raw.clone()) }))
    }

    fn parse_expression(&mut self, value: &str, allowed: &Allowed) -> Result<ParsedExpr, String> {
        let trimmed = value.trim();
        if trimmed.is_empty() {
            return Err("An expression was expected".to_string());
        }
        if let Some(r) = match_insert(trimmed) {
            return r.map(|()| ParsedExpr::Insert);
        }
        exprs::check(trimmed, allowed)?;
        Ok(ParsedExpr::Basic(trimmed.to_string()))
    }
}

enum ParsedExpr {
    Basic(String),
    Insert,
}

fn find(chars: &[char], from: usize) -> Option<usize> {
    (from..chars.len().saturating_sub(2)).find(|&i| chars[i] == '$' && chars[i + 1] == '{' && chars[i + 2] == '{')
}

fn is_match(def: &ScalarDef, tok: &Token) -> bool {
    match (def, &tok.kind) {
        (ScalarDef::Null, TokenKind::Null) => true,
        (ScalarDef::Bool, TokenKind::Bool(_)) => true,
        (ScalarDef::Number, TokenKind::Number(_)) => true,
        (ScalarDef::Str { constant, non_empty }, TokenKind::String(s)) => match constant {
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
    let params = rest.split_whitespace().count();
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
pub(crate) fn if_condition(condition: &str, ctx: &[&str]) -> Result<String, String> {
    let allowed = Allowed::from_context(ctx);
    let condition = condition.trim();
    if condition.is_empty() {
        return Ok("success()".to_string());
    }
    let final_condition = match exprs::check(condition, &allowed) {
        Ok(c) if c.status_function => condition.to_string(),
        Ok(_) => format!("success() && ({condition})"),
        Err(_) => condition.to_string(),
    };
    exprs::check(&final_condition, &allowed)?;
    Ok(final_condition)
}
