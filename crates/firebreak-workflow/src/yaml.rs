//! YAML 1.2 front end: turns source text into a tree of [`YNode`]s with positions.
//!
//! Workflow-shaped files go through [`fast`], a hand-written scanner for the subset of YAML
//! workflows use; it gives up on anything else, which then takes the complete path below.
//!
//! The complete path is built on `saphyr-parser`'s event stream. Plain scalars are resolved
//! with the YAML 1.2 core schema as GitHub's parser does (`on` stays a string, `0755` is
//! decimal 755, `12_345` is a string, `yes`/`no` are strings). Anchors and aliases are
//! resolved by copying the anchored node. Core-schema tags (`!!str`, `!!int`, `!!float`, `!!bool`, `!!null`, `!!seq`, `!!map`)
//! are honoured; other `tag:yaml.org,2002:` tags are rejected like GitHub does.

use std::borrow::Cow;
use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span, Tag};

use crate::diag::Pos;

mod fast;

/// GitHub's default maximum nesting depth of collections (the root collection is depth 1).
pub const DEFAULT_MAX_DEPTH: usize = 50;
/// Maximum number of nodes (after alias expansion) accepted before reporting an error.
pub const MAX_NODES: usize = 1_000_000;

/// Scalar presentation style (kept for diagnostics and for GitHub's block-scalar rules).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Plain,
    SingleQuoted,
    DoubleQuoted,
    Literal,
    Folded,
}

impl From<ScalarStyle> for Style {
    fn from(s: ScalarStyle) -> Self {
        match s {
            ScalarStyle::Plain => Style::Plain,
            ScalarStyle::SingleQuoted => Style::SingleQuoted,
            ScalarStyle::DoubleQuoted => Style::DoubleQuoted,
            ScalarStyle::Literal => Style::Literal,
            ScalarStyle::Folded => Style::Folded,
        }
    }
}

impl Style {
    fn name(self) -> &'static str {
        match self {
            Style::Plain => "Plain",
            Style::SingleQuoted => "SingleQuoted",
            Style::DoubleQuoted => "DoubleQuoted",
            Style::Literal => "Literal",
            Style::Folded => "Folded",
        }
    }
}

/// A YAML node with the position of its first character.
#[derive(Clone, Debug, PartialEq)]
pub struct YNode<'s> {
    pub pos: Pos,
    pub kind: YKind<'s>,
}

impl YNode<'_> {
    /// A scalar's text (numbers as the expression engine prints them); `None` for null and
    /// collections.
    pub fn scalar_string(&self) -> Option<String> {
        match &self.kind {
            YKind::Str { value, .. } => Some(value.to_string()),
            YKind::Bool(b) => Some(b.to_string()),
            YKind::Number(x) => Some(crate::token::format_number(*x)),
            _ => None,
        }
    }

    /// The node as JSON: whole numbers as integers, mapping keys as their scalar text.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.kind {
            YKind::Null => J::Null,
            YKind::Bool(b) => J::Bool(*b),
            YKind::Number(x) => crate::token::number_json(*x),
            YKind::Str { value, .. } => J::String(value.to_string()),
            YKind::Seq(items) => J::Array(items.iter().map(YNode::to_json).collect()),
            YKind::Map(pairs) => J::Object(
                pairs
                    .iter()
                    .map(|(k, v)| (k.scalar_string().unwrap_or_default(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum YKind<'s> {
    Null,
    Bool(bool),
    Number(f64),
    /// A string: borrowed from the source when it is the source's text as it is (most plain
    /// and quoted scalars), owned when it had to be built (escapes, folding, block scalars,
    /// the full parser's strings).
    Str {
        value: Cow<'s, str>,
        style: Style,
    },
    Seq(Vec<YNode<'s>>),
    Map(Vec<(YNode<'s>, YNode<'s>)>),
}

/// A YAML-level error (syntax, tags, limits).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct YamlError {
    pub pos: Option<Pos>,
    pub message: String,
}

impl YamlError {
    fn at(pos: Option<Pos>, message: impl Into<String>) -> Self {
        YamlError {
            pos,
            message: message.into(),
        }
    }
}

/// An open collection. Its items so far are the tail of the loader's shared item stack
/// from `start` on (one exactly-sized allocation per collection instead of regrowing).
enum Frame {
    Seq {
        node: YNode<'static>,
        anchor: usize,
        start: usize,
    },
    Map {
        node: YNode<'static>,
        anchor: usize,
        start: usize,
        key: Option<YNode<'static>>,
    },
}

/// The source, indexed by character (saphyr's markers count characters). An ASCII source
/// (the usual case) is indexed by byte without copying it.
enum Chars<'s> {
    Ascii(&'s [u8]),
    Wide(Vec<char>),
}

impl Chars<'_> {
    fn get(&self, idx: usize) -> Option<char> {
        match self {
            Chars::Ascii(b) => b.get(idx).map(|&c| c as char),
            Chars::Wide(c) => c.get(idx).copied(),
        }
    }
}

struct Loader<'s> {
    max_depth: usize,
    chars: Chars<'s>,
    anchors: HashMap<usize, YNode<'static>>,
    nodes: usize,
    seq_items: Vec<YNode<'static>>,
    map_items: Vec<(YNode<'static>, YNode<'static>)>,
}

/// Parses the first YAML document of `src`. Returns `Ok(None)` for an empty document.
#[cfg(test)]
pub fn load(src: &str) -> Result<Option<YNode<'_>>, YamlError> {
    load_with_depth(src, DEFAULT_MAX_DEPTH)
}

/// [`load`] with a maximum collection nesting depth.
///
/// Workflow-shaped YAML goes through the [`fast`] scanner; anything it does not handle (and
/// every error) through the complete `saphyr-parser` path, [`load_full`].
pub fn load_with_depth(src: &str, max_depth: usize) -> Result<Option<YNode<'_>>, YamlError> {
    if let Some(root) = fast::load(src, max_depth) {
        return Ok(Some(root));
    }
    load_full(src, max_depth)
}

/// The complete YAML path (`saphyr-parser` events), whatever the input.
pub fn load_full(src: &str, max_depth: usize) -> Result<Option<YNode<'static>>, YamlError> {
    let chars = if src.is_ascii() {
        Chars::Ascii(src.as_bytes())
    } else {
        Chars::Wide(src.chars().collect())
    };
    let mut loader = Loader {
        max_depth,
        chars,
        anchors: HashMap::new(),
        nodes: 0,
        seq_items: Vec::new(),
        map_items: Vec::new(),
    };
    let loaded = loader.run(src);
    match Utf16Columns::of(src) {
        None => loaded,
        Some(cols) => match loaded {
            Ok(mut root) => {
                if let Some(root) = &mut root {
                    cols.fix_tree(root);
                }
                Ok(root)
            }
            Err(mut e) => {
                if let Some(pos) = &mut e.pos {
                    cols.fix(pos);
                }
                Err(e)
            }
        },
    }
}

/// Columns in UTF-16 units, as GitHub's parsers count them (YamlDotNet's cursor, JavaScript
/// string offsets), where saphyr's markers count characters: the two differ only after a
/// character outside the Basic Multilingual Plane (an emoji), which is two units.
struct Utf16Columns<'s> {
    lines: Vec<&'s str>,
}

impl<'s> Utf16Columns<'s> {
    /// `None` when every column already agrees.
    fn of(src: &'s str) -> Option<Self> {
        src.chars()
            .any(|c| c.len_utf16() == 2)
            .then(|| Utf16Columns {
                // Lines as YAML breaks them: at `\n`, `\r\n` and a lone `\r`.
                lines: src
                    .split('\n')
                    .flat_map(|l| {
                        let l = l.strip_suffix('\r').unwrap_or(l);
                        l.split('\r')
                    })
                    .collect(),
            })
    }

    fn fix(&self, pos: &mut Pos) {
        let Some(line) = (pos.line as usize)
            .checked_sub(1)
            .and_then(|i| self.lines.get(i))
        else {
            return;
        };
        let before = pos.col.saturating_sub(1) as usize;
        let wide = line
            .chars()
            .take(before)
            .filter(|c| c.len_utf16() == 2)
            .count();
        pos.col += wide as u32;
    }

    fn fix_tree(&self, node: &mut YNode<'_>) {
        self.fix(&mut node.pos);
        match &mut node.kind {
            YKind::Seq(items) => items.iter_mut().for_each(|n| self.fix_tree(n)),
            YKind::Map(pairs) => pairs.iter_mut().for_each(|(k, v)| {
                self.fix_tree(k);
                self.fix_tree(v);
            }),
            _ => {}
        }
    }
}

/// Differential check of the [`fast`] scanner against [`load_full`] on `src`: `Ok(true)` when
/// the scanner handled it and built exactly the full parser's tree, `Ok(false)` when it gave
/// up, `Err` (both trees) when they differ or the full parser rejects what the scanner took.
pub fn check_fast_path(src: &str, max_depth: usize) -> Result<bool, String> {
    let Some(fast) = fast::load(src, max_depth) else {
        return Ok(false);
    };
    match load_full(src, max_depth) {
        Ok(Some(full)) => {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            flatten(&fast, "", &mut a);
            flatten(&full, "", &mut b);
            match a.iter().zip(&b).find(|(x, y)| x != y) {
                None if a.len() == b.len() => Ok(true),
                None => Err(format!(
                    "fast scanner: {} nodes, full parser: {}",
                    a.len(),
                    b.len()
                )),
                Some((x, y)) => Err(format!("fast scanner: {x}\nfull parser: {y}")),
            }
        }
        full => Err(format!("fast scanner: a tree\nfull parser: {full:?}")),
    }
}

/// One line per node: its path, position and (for scalars) kind.
fn flatten(n: &YNode<'_>, path: &str, out: &mut Vec<String>) {
    let at = format!("{path} @{}:{}", n.pos.line, n.pos.col);
    match &n.kind {
        YKind::Seq(items) => {
            out.push(format!("{at} seq"));
            for (i, item) in items.iter().enumerate() {
                flatten(item, &format!("{path}/{i}"), out);
            }
        }
        YKind::Map(pairs) => {
            out.push(format!("{at} map"));
            for (i, (k, v)) in pairs.iter().enumerate() {
                flatten(k, &format!("{path}/k{i}"), out);
                flatten(v, &format!("{path}/v{i}"), out);
            }
        }
        // Debug output shows NaN equal to NaN, which `==` would not.
        kind => out.push(format!("{at} {kind:?}")),
    }
}

fn marker_pos(m: saphyr_parser::Marker) -> Pos {
    Pos::new(m.line() as u32, m.col() as u32 + 1)
}

impl Loader<'_> {
    fn run(&mut self, src: &str) -> Result<Option<YNode<'static>>, YamlError> {
        let mut parser = Parser::new_from_str(src);
        let mut stack: Vec<Frame> = Vec::new();
        let mut root: Option<YNode<'static>> = None;
        let mut docs = 0usize;
        while let Some(ev) = parser.next_event() {
            let (ev, span) =
                ev.map_err(|e| YamlError::at(Some(marker_pos(*e.marker())), e.info().to_string()))?;
            match ev {
                Event::StreamStart | Event::Nothing | Event::DocumentEnd => {}
                Event::StreamEnd => break,
                Event::DocumentStart(_) => {
                    docs += 1;
                    if docs > 1 {
                        return Err(YamlError::at(
                            Some(marker_pos(span.start)),
                            "Source contains more than one document",
                        ));
                    }
                }
                Event::Alias(id) => {
                    let node = match self.anchors.get(&id) {
                        Some(n) => n.clone(),
                        None => {
                            return Err(YamlError::at(
                                Some(marker_pos(span.start)),
                                "Unknown alias",
                            ));
                        }
                    };
                    self.count(count_nodes(&node), span)?;
                    self.push_value(&mut stack, &mut root, node);
                }
                Event::Scalar(value, style, anchor, tag) => {
                    self.count(1, span)?;
                    let node = self.scalar(value, style.into(), tag.as_deref(), span)?;
                    if anchor > 0 {
                        self.anchors.insert(anchor, node.clone());
                    }
                    self.push_value(&mut stack, &mut root, node);
                }
                Event::SequenceStart(anchor, _tag) => {
                    let mut node = self.open_collection(span, stack.len())?;
                    if matches!(stack.last(), Some(Frame::Map { key: Some(_), .. })) {
                        node.pos = self.block_seq_pos(span, node.pos);
                    }
                    stack.push(Frame::Seq {
                        node,
                        anchor,
                        start: self.seq_items.len(),
                    });
                }
                Event::MappingStart(anchor, _tag) => {
                    let node = self.open_collection(span, stack.len())?;
                    stack.push(Frame::Map {
                        node,
                        anchor,
                        start: self.map_items.len(),
                        key: None,
                    });
                }
                Event::SequenceEnd | Event::MappingEnd => {
                    let (node, anchor) = match stack.pop() {
                        Some(Frame::Seq {
                            mut node,
                            anchor,
                            start,
                        }) => {
                            node.kind = YKind::Seq(self.seq_items.drain(start..).collect());
                            (node, anchor)
                        }
                        Some(Frame::Map {
                            mut node,
                            anchor,
                            start,
                            ..
                        }) => {
                            node.kind = YKind::Map(self.map_items.drain(start..).collect());
                            (node, anchor)
                        }
                        None => {
                            return Err(YamlError::at(
                                Some(marker_pos(span.start)),
                                "Unbalanced collection end",
                            ))
                        }
                    };
                    if anchor > 0 {
                        self.anchors.insert(anchor, node.clone());
                    }
                    self.push_value(&mut stack, &mut root, node);
                }
            }
        }
        Ok(root)
    }

    fn count(&mut self, n: usize, span: Span) -> Result<(), YamlError> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            return Err(YamlError::at(
                Some(marker_pos(span.start)),
                "Maximum object size exceeded",
            ));
        }
        Ok(())
    }

    fn push_value(
        &mut self,
        stack: &mut [Frame],
        root: &mut Option<YNode<'static>>,
        node: YNode<'static>,
    ) {
        match stack.last_mut() {
            None => {
                if root.is_none() {
                    *root = Some(node);
                }
            }
            Some(Frame::Seq { .. }) => self.seq_items.push(node),
            Some(Frame::Map { key, .. }) => match key.take() {
                None => *key = Some(node),
                Some(k) => self.map_items.push((k, node)),
            },
        }
    }

    fn char_at(&self, idx: usize) -> Option<char> {
        self.chars.get(idx)
    }

    /// Position of a node: skips a leading anchor (`&a`) or tag (`!!x`) property so that the
    /// position names the node's content like GitHub's parser does.
    fn node_pos(&self, span: Span) -> Pos {
        let mut idx = span.start.index();
        let mut pos = marker_pos(span.start);
        loop {
            match self.char_at(idx) {
                Some('&') | Some('!') => {
                    // skip the property token
                    let mut j = idx;
                    if self.char_at(j) == Some('!') && self.char_at(j + 1) == Some('<') {
                        while let Some(c) = self.char_at(j) {
                            j += 1;
                            if c == '>' {
                                break;
                            }
                        }
                    } else {
                        while let Some(c) = self.char_at(j) {
                            if c == ' ' || c == '\t' || c == '\n' || c == '\r' {
                                break;
                            }
                            j += 1;
                        }
                    }
                    // skip blanks on the same line only
                    while matches!(self.char_at(j), Some(' ') | Some('\t')) {
                        j += 1;
                    }
                    if matches!(self.char_at(j), Some('\n') | Some('\r') | Some('#') | None) {
                        return pos;
                    }
                    pos.col += (j - idx) as u32;
                    idx = j;
                }
                _ => return pos,
            }
        }
    }

    /// The placeholder node of a sequence or mapping that starts at
    /// `span` inside `depth` open collections, after the node count and depth checks. Its tag
    /// is not checked: GitHub's readers check the tags of scalars only (`!!str {A: 1}` reads
    /// as the mapping).
    fn open_collection(&mut self, span: Span, depth: usize) -> Result<YNode<'static>, YamlError> {
        self.count(1, span)?;
        if depth >= self.max_depth {
            return Err(YamlError::at(None, "Maximum object depth exceeded"));
        }
        Ok(YNode {
            pos: self.node_pos(span),
            kind: YKind::Null,
        })
    }

    /// Where a sequence that is a mapping's value and starts at `span` (at `pos` by the
    /// parser's events) is: the events put a block sequence written at its key's indentation
    /// (`env:` then `- A=b` below it) at its first entry's content (the entry's own `-` or
    /// `[` when that entry is a sequence too); GitHub's parsers put every block sequence at
    /// its first `-`, the one before that content. (A sequence that is not written so has no
    /// `-` before it on its line: a key's `:` or nothing.)
    fn block_seq_pos(&self, span: Span, pos: Pos) -> Pos {
        let idx = span.start.index();
        let mark = marker_pos(span.start);
        let mut start = idx;
        while start > 0 && !matches!(self.char_at(start - 1), Some('\n' | '\r')) {
            start -= 1;
        }
        // What precedes the content on its line, less a comment (saphyr puts the content of
        // `- # note` at the end of that line).
        let before: String = (start..idx).filter_map(|i| self.char_at(i)).collect();
        let code = match before
            .char_indices()
            .find(|&(i, c)| c == '#' && (i == 0 || before[..i].ends_with([' ', '\t'])))
        {
            Some((i, _)) => &before[..i],
            None => &before,
        };
        let code = code.trim_end_matches([' ', '\t']);
        if !code.is_empty() {
            // `- x`: the `-` just before the content, on its line.
            return if code.ends_with('-') {
                Pos::new(mark.line, code.chars().count() as u32)
            } else {
                pos
            };
        }
        // The content starts its line: the `-` may be alone on an earlier line, or before a
        // comment (`- # note`), with only blank or comment lines between.
        let mut line = mark.line;
        let mut end = start;
        while end > 0 && line > 1 {
            let newline = end - 1;
            let mut from = newline;
            while from > 0 && self.char_at(from - 1) != Some('\n') {
                from -= 1;
            }
            line -= 1;
            let text: String = (from..newline).filter_map(|i| self.char_at(i)).collect();
            let text = text.trim_end_matches('\r');
            let content = text.trim_start_matches([' ', '\t']);
            if content.is_empty() || content.starts_with('#') {
                end = from;
                continue;
            }
            if let Some(rest) = content.strip_prefix('-') {
                let after = rest.trim_start_matches([' ', '\t']);
                if rest.is_empty() || (after.len() < rest.len() && after.starts_with('#')) {
                    return Pos::new(line, (text.len() - content.len()) as u32 + 1);
                }
            }
            break;
        }
        pos
    }

    /// Where an empty value after the `:` at `colon` (itself at `pos`) is: at the `,` or
    /// closing bracket that ends it in a flow collection, past blanks, line breaks and
    /// comments; else just after the `:`.
    fn empty_value_pos(&self, colon: usize, pos: Pos) -> Pos {
        // `col` is the column of the character at `j`.
        let (mut j, mut line, mut col) = (colon + 1, pos.line, pos.col + 1);
        loop {
            match self.char_at(j) {
                Some(' ' | '\t') => col += 1,
                Some('\r') => {}
                Some('\n') => {
                    line += 1;
                    col = 1;
                }
                Some('#') => {
                    while !matches!(self.char_at(j + 1), Some('\n') | None) {
                        j += 1;
                    }
                }
                Some(',' | '}' | ']') => return Pos::new(line, col),
                _ => return Pos::new(pos.line, pos.col + 1),
            }
            j += 1;
        }
    }

    fn scalar(
        &self,
        value: std::borrow::Cow<'_, str>,
        style: Style,
        tag: Option<&Tag>,
        span: Span,
    ) -> Result<YNode<'static>, YamlError> {
        let mut pos = self.node_pos(span);
        let tag_pos = marker_pos(span.start);
        if matches!(style, Style::Literal | Style::Folded) {
            // GitHub positions block scalars at their `|` / `>` header.
            if let Some(p) = self.block_header_pos(span) {
                pos = p;
            }
        } else if style == Style::Plain && value.is_empty() {
            // An empty value is positioned just after the `:` that precedes it, or, inside a
            // flow collection, at the `,` or closing bracket that ends it (the next token).
            let idx = span.start.index();
            if self.char_at(idx) == Some(':') {
                pos = self.empty_value_pos(idx, pos);
            }
        }
        let kind = match tag.and_then(core_tag_name) {
            Some(name) => {
                let value: &str = &value;
                if style != Style::Plain && name != "str" {
                    return Err(YamlError::at(
                        None,
                        format!(
                            "The scalar style '{}' on line {} and column {} is not valid with the tag 'tag:yaml.org,2002:{}'",
                            style.name(),
                            tag_pos.line,
                            tag_pos.col,
                            name
                        ),
                    ));
                }
                match name {
                    "str" => YKind::Str {
                        value: Cow::Owned(value.to_string()),
                        style,
                    },
                    "null" => match value {
                        "" | "~" | "null" | "Null" | "NULL" => YKind::Null,
                        _ => return Err(invalid_tagged(value, name, tag_pos)),
                    },
                    "bool" => match parse_bool(value) {
                        Some(b) => YKind::Bool(b),
                        None => return Err(invalid_tagged(value, name, tag_pos)),
                    },
                    "int" => match parse_int(value) {
                        Some(n) => YKind::Number(n),
                        None => return Err(invalid_tagged(value, name, tag_pos)),
                    },
                    "float" => match parse_int(value).or_else(|| parse_float(value)) {
                        Some(n) => YKind::Number(n),
                        None => return Err(invalid_tagged(value, name, tag_pos)),
                    },
                    other => {
                        return Err(YamlError::at(
                            None,
                            format!("Unexpected tag 'tag:yaml.org,2002:{other}'"),
                        ))
                    }
                }
            }
            None => {
                if let Some(name) = tag.and_then(local_tag_name) {
                    // GitHub's runner knows only the core schema's tags.
                    return Err(YamlError::at(
                        None,
                        if style == Style::Plain {
                            format!("Unexpected tag '{name}'")
                        } else {
                            format!(
                                "The scalar style '{}' on line {} and column {} is not valid with the tag '{name}'",
                                style.name(),
                                tag_pos.line,
                                tag_pos.col
                            )
                        },
                    ));
                }
                if style == Style::Plain && tag.is_none() {
                    resolve_plain_owned(value.into_owned())
                } else {
                    YKind::Str {
                        value: Cow::Owned(value.into_owned()),
                        style,
                    }
                }
            }
        };
        Ok(YNode { pos, kind })
    }

    /// Finds the `|` or `>` header of a block scalar whose content starts at `span`.
    fn block_header_pos(&self, span: Span) -> Option<Pos> {
        let mut idx = span.start.index();
        // walk backwards over content whitespace, newlines and header comments
        let mut line = span.start.line() as u32;
        while idx > 0 {
            idx -= 1;
            let c = self.char_at(idx)?;
            if c == '\n' {
                line = line.saturating_sub(1);
                // examine the line that ends here
                let line_end = idx;
                let mut line_start = idx;
                while line_start > 0 && self.char_at(line_start - 1) != Some('\n') {
                    line_start -= 1;
                }
                let text: String = (line_start..line_end)
                    .filter_map(|i| self.char_at(i))
                    .collect();
                if let Some(col) = find_block_header(&text) {
                    return Some(Pos::new(line, col as u32 + 1));
                }
                if !text.trim().is_empty() && !text.trim_start().starts_with('#') {
                    // a content line of the scalar itself (leading blank lines are rare)
                    continue;
                }
            }
        }
        None
    }
}

/// Column (0-based, in chars) of a block scalar header at the end of `line`, if any.
fn find_block_header(line: &str) -> Option<usize> {
    let chars: Vec<char> = line.chars().collect();
    // strip a trailing comment
    let mut end = chars.len();
    for i in 0..chars.len() {
        if chars[i] == '#' && (i == 0 || chars[i - 1] == ' ' || chars[i - 1] == '\t') {
            end = i;
            break;
        }
    }
    let mut e = end;
    while e > 0 && (chars[e - 1] == ' ' || chars[e - 1] == '\t' || chars[e - 1] == '\r') {
        e -= 1;
    }
    let mut s = e;
    while s > 0 && (chars[s - 1] == '+' || chars[s - 1] == '-' || chars[s - 1].is_ascii_digit()) {
        s -= 1;
    }
    if s > 0 && (chars[s - 1] == '|' || chars[s - 1] == '>') {
        let at = s - 1;
        if at == 0
            || chars[at - 1] == ' '
            || chars[at - 1] == '\t'
            || chars[at - 1] == '-'
            || chars[at - 1] == ':'
        {
            return Some(at);
        }
    }
    None
}

fn invalid_tagged(value: &str, name: &str, at: Pos) -> YamlError {
    YamlError::at(
        None,
        format!(
            "The value '{value}' on line {} and column {} is invalid for the type 'tag:yaml.org,2002:{name}'",
            at.line, at.col
        ),
    )
}

fn core_tag_name(tag: &Tag) -> Option<&str> {
    const CORE: &str = "tag:yaml.org,2002:";
    if tag.handle == CORE {
        return Some(tag.suffix.as_str());
    }
    if tag.handle == "!!" {
        return Some(tag.suffix.as_str());
    }
    if tag.handle.is_empty() || tag.handle == "!" {
        if let Some(rest) = tag.suffix.strip_prefix(CORE) {
            return Some(rest);
        }
    }
    None
}

/// A tag outside the core schema (`!custom`, `!<tag:example.com,2026:x>`), as written;
/// `None` for the non-specific `!`, which only makes a scalar a string.
fn local_tag_name(tag: &Tag) -> Option<String> {
    let name = format!("{}{}", tag.handle, tag.suffix);
    (core_tag_name(tag).is_none() && name != "!").then_some(name)
}

fn count_nodes(n: &YNode<'_>) -> usize {
    match &n.kind {
        YKind::Seq(items) => 1 + items.iter().map(count_nodes).sum::<usize>(),
        YKind::Map(items) => {
            1 + items
                .iter()
                .map(|(k, v)| count_nodes(k) + count_nodes(v))
                .sum::<usize>()
        }
        _ => 1,
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

fn parse_int(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    if b.is_empty() {
        return None;
    }
    if let Some(h) = s.strip_prefix("0x") {
        if !h.is_empty() && h.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Some(h.bytes().fold(0f64, |a, c| {
                a * 16.0 + (c as char).to_digit(16).unwrap_or(0) as f64
            }));
        }
        return None;
    }
    if let Some(o) = s.strip_prefix("0o") {
        if !o.is_empty() && o.bytes().all(|c| (b'0'..=b'7').contains(&c)) {
            return Some(o.bytes().fold(0f64, |a, c| a * 8.0 + (c - b'0') as f64));
        }
        return None;
    }
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit()) {
        let v: f64 = digits.parse().ok()?;
        return Some(if s.starts_with('-') { -v } else { v });
    }
    None
}

fn parse_float(s: &str) -> Option<f64> {
    match s {
        ".nan" | ".NaN" | ".NAN" => return Some(f64::NAN),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Some(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Some(f64::NEG_INFINITY),
        _ => {}
    }
    let body = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (mantissa, exp) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let ok_mantissa = match mantissa.find('.') {
        Some(i) => {
            let (a, b) = (&mantissa[..i], &mantissa[i + 1..]);
            a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
                && !(a.is_empty() && b.is_empty())
        }
        None => !mantissa.is_empty() && mantissa.bytes().all(|c| c.is_ascii_digit()),
    };
    if !ok_mantissa {
        return None;
    }
    if let Some(e) = exp {
        let d = e.strip_prefix(['-', '+']).unwrap_or(e);
        if d.is_empty() || !d.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
    }
    s.parse::<f64>().ok()
}

/// Resolves an untagged plain scalar with the YAML 1.2 core schema.
#[cfg(test)]
pub fn resolve_plain(s: &str) -> YKind<'static> {
    resolve_plain_owned(s.to_string())
}

/// [`resolve_plain`] taking the scalar's text by value (kept as the string when it is one).
pub fn resolve_plain_owned(s: String) -> YKind<'static> {
    resolve_plain_cow(Cow::Owned(s))
}

/// [`resolve_plain`] keeping the text as it is (borrowed or owned) when it is a string.
pub fn resolve_plain_cow(s: Cow<'_, str>) -> YKind<'_> {
    // Every null, bool and number of the core schema is empty or starts with one of these;
    // words starting with a letter are null or bool only when short (`false`, `NULL`…).
    let special_start = |c: char| {
        c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | '~' | 'n' | 'N' | 't' | 'T' | 'f' | 'F')
    };
    if !s.is_empty() && !s.starts_with(special_start)
        || s.len() > 5 && s.starts_with(|c: char| c.is_ascii_alphabetic())
    {
        return YKind::Str {
            value: s,
            style: Style::Plain,
        };
    }
    // A word starting with a letter is a null or a bool or a string, never a number.
    let special = if s.starts_with(|c: char| c.is_ascii_alphabetic()) {
        if is_null_word(&s) {
            Some(YKind::Null)
        } else {
            parse_bool(&s).map(YKind::Bool)
        }
    } else {
        resolve_special(&s)
    };
    match special {
        Some(kind) => kind,
        None => YKind::Str {
            value: s,
            style: Style::Plain,
        },
    }
}

/// The core schema's null words (besides `~` and the empty scalar).
fn is_null_word(s: &str) -> bool {
    matches!(s, "null" | "Null" | "NULL")
}

/// The null, bool or number a plain scalar stands for, if any.
fn resolve_special(s: &str) -> Option<YKind<'static>> {
    if s.is_empty() || s == "~" || is_null_word(s) {
        return Some(YKind::Null);
    }
    if let Some(b) = parse_bool(s) {
        return Some(YKind::Bool(b));
    }
    if let Some(n) = parse_int(s) {
        return Some(YKind::Number(n));
    }
    if let Some(n) = parse_float(s) {
        return Some(YKind::Number(n));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(s: &str) -> YKind<'static> {
        resolve_plain(s)
    }

    #[test]
    fn tags_outside_the_core_schema_are_refused() {
        let err = |src: &str| load(src).map(|_| ()).err().map(|e| e.message);
        assert_eq!(
            err("a: !custom x\n").as_deref(),
            Some("Unexpected tag '!custom'")
        );
        assert_eq!(
            err("a: !custom 'x'\n").as_deref(),
            Some("The scalar style 'SingleQuoted' on line 1 and column 4 is not valid with the tag '!custom'")
        );
        assert_eq!(
            err("a: !<tag:example.com,2026:x> x\n").as_deref(),
            Some("Unexpected tag 'tag:example.com,2026:x'")
        );
        // The non-specific `!` and the core tags are fine.
        assert_eq!(err("a: ! 1\nb: !!str 2\n"), None);
    }

    #[test]
    fn core_schema() {
        assert_eq!(
            kind("on"),
            YKind::Str {
                value: "on".into(),
                style: Style::Plain
            }
        );
        assert_eq!(
            kind("yes"),
            YKind::Str {
                value: "yes".into(),
                style: Style::Plain
            }
        );
        assert_eq!(kind("True"), YKind::Bool(true));
        assert_eq!(kind("0755"), YKind::Number(755.0));
        assert_eq!(kind("0xff"), YKind::Number(255.0));
        assert_eq!(kind("0o10"), YKind::Number(8.0));
        assert_eq!(kind("+1"), YKind::Number(1.0));
        assert_eq!(kind("1.5e3"), YKind::Number(1500.0));
        assert_eq!(kind(".5"), YKind::Number(0.5));
        assert_eq!(
            kind("12_345"),
            YKind::Str {
                value: "12_345".into(),
                style: Style::Plain
            }
        );
        assert_eq!(
            kind("inf"),
            YKind::Str {
                value: "inf".into(),
                style: Style::Plain
            }
        );
        assert_eq!(kind("~"), YKind::Null);
        assert!(matches!(kind(".nan"), YKind::Number(n) if n.is_nan()));
        assert_eq!(
            kind("."),
            YKind::Str {
                value: ".".into(),
                style: Style::Plain
            }
        );
    }

    #[test]
    fn positions() {
        let src = "a:\n  b:\n  c: |\n    x\n  d: &x [1]\n  e: *x\n";
        let root = load(src).expect("a value").expect("a value");
        let YKind::Map(items) = &root.kind else {
            panic!()
        };
        let YKind::Map(inner) = &items[0].1.kind else {
            panic!()
        };
        assert_eq!(inner[0].1.pos, Pos::new(2, 5)); // empty value after ':'
        assert_eq!(inner[1].1.pos, Pos::new(3, 6)); // block header
        assert_eq!(inner[2].1.pos, Pos::new(5, 9)); // after the anchor
        assert_eq!(inner[3].1.kind, inner[2].1.kind);
    }

    #[test]
    fn tags() {
        let root = load("a: !!int 0xff\nb: !!str 1\n")
            .expect("a value")
            .expect("a value");
        let YKind::Map(items) = &root.kind else {
            panic!()
        };
        assert_eq!(items[0].1.kind, YKind::Number(255.0));
        assert!(matches!(items[1].1.kind, YKind::Str { .. }));
        assert!(load("a: !!timestamp 2022-01-01\n").is_err());
        assert!(load("a: !!int \"300\"\n").is_err());
    }
}
