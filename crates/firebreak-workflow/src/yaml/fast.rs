//! A hand-written YAML scanner for the subset of YAML that workflow files use, building the
//! same [`YNode`] tree (values, kinds, styles and positions) as the `saphyr-parser` path in
//! [`super`], several times faster.
//!
//! Why hand-written: every YAML crate we measured spends more time producing its event
//! stream than our whole parse budget (≤ 50 µs per realistic workflow). Measured on
//! 2026-11-27 on the benchmark machine, idle, iterating the 283 events of
//! `benches/realistic.yml` without building anything: saphyr-parser 97–102 µs,
//! libyaml-safer 90 µs, unsafe-libyaml 107 µs; callgrind put saphyr's events at 55% of the
//! instructions of a whole parse. This scanner builds the tree directly from the bytes in a
//! single pass with one allocation per collection (strings borrow the source text unless
//! escapes or folding changed them): 135 k instructions for the fixture's tree against 735 k
//! for the `saphyr-parser` path (callgrind, same day; 193 k while every string was copied).
//!
//! What it understands: block mappings and sequences (including sequences at the indentation
//! of their parent key and `- key: value` compact mappings), plain scalars (multi-line ones
//! folded), single- and double-quoted scalars on one line, literal and folded block scalars
//! with chomping indicators, single-line flow sequences and mappings, comments, and a leading
//! `---`.
//!
//! What it does not: anything else — anchors, aliases, tags, directives, complex (`?`) keys,
//! several documents, `...`, multi-line quoted scalars and flow collections, explicit block
//! indentation indicators, tabs outside quoted and block scalars, carriage returns other than
//! in `\r\n` line breaks, control characters, a byte-order mark, odd indentation, and every construct that is an error.
//! On any of these it gives up ([`load`] returns `None`) and the caller runs the complete
//! `saphyr-parser` path, which also produces every YAML error message. Correctness therefore
//! never depends on this scanner: it either produces exactly what the slow path would, or
//! nothing. `tests/yaml_fast.rs` checks that on every YAML file of the regression corpus and
//! of the shared conformance corpora (GitHub's parser tests, act's workflows) and on random
//! and generated inputs; the `no_panic` fuzzers check it on every input they try.

use super::{resolve_plain_cow, resolve_plain_owned, Style, YKind, YNode, MAX_NODES};
use crate::diag::Pos;

/// The scanner gave up: the input is outside the subset (or invalid); use the full parser.
struct Bail;

type R<T> = Result<T, Bail>;

/// Longest implicit key YAML allows (in characters; we count bytes, which is stricter).
const MAX_KEY_LEN: usize = 1024;

/// Parses `src` when it is in the supported subset. `None`: use the full parser.
pub(super) fn load(src: &str, max_depth: usize) -> Option<YNode<'_>> {
    let ascii = src.is_ascii();
    if !printable(src, ascii) {
        return None;
    }
    let mut s = Scanner {
        src,
        b: src.as_bytes(),
        ascii,
        i: 0,
        line: 1,
        line_start: 0,
        max_depth,
        nodes: 0,
        // Room for the open collections of a usual workflow, so that these stacks do not
        // regrow from empty for every file.
        seq_items: Vec::with_capacity(32),
        map_items: Vec::with_capacity(64),
    };
    s.document().ok()
}

/// Only characters the scanner handles: printable ASCII, line breaks (`\n` or `\r\n`), tabs,
/// and non-ASCII characters that YAML treats as ordinary printable text.
fn printable(src: &str, ascii: bool) -> bool {
    let ok = |b: u8| (0x20..0x7f).contains(&b) || b == b'\n' || b == b'\t' || b == b'\r';
    let b = src.as_bytes();
    // Every `\r` starts a `\r\n`, so the scanner can take either byte as the end of a line.
    let crlf_only = || {
        b.iter()
            .enumerate()
            .all(|(i, &c)| c != b'\r' || b.get(i + 1) == Some(&b'\n'))
    };
    if ascii {
        // No early exit: the compiler turns this into vector compares.
        let (all_ok, any_cr) = b.iter().fold((true, false), |(ok_so_far, cr), &c| {
            (ok_so_far & ok(c), cr | (c == b'\r'))
        });
        return all_ok && (!any_cr || crlf_only());
    }
    crlf_only()
        && src.chars().all(|c| {
            if c.is_ascii() {
                return ok(c as u8);
            }
            let c = c as u32;
            // YAML's printable set, minus characters some parsers treat as line breaks or as a
            // byte-order mark.
            (0xA0..=0xD7FF).contains(&c) && c != 0x2028 && c != 0x2029
                || (0xE000..=0xFFFD).contains(&c) && c != 0xFEFF
                || c >= 0x10000
        })
}

struct Scanner<'s> {
    src: &'s str,
    b: &'s [u8],
    ascii: bool,
    /// Current byte offset.
    i: usize,
    /// 1-based line of `line_start`.
    line: u32,
    /// Byte offset where the current line starts.
    line_start: usize,
    max_depth: usize,
    nodes: usize,
    /// Items of the open sequences (each sequence owns the tail from its start index).
    seq_items: Vec<YNode<'s>>,
    /// Pairs of the open mappings.
    map_items: Vec<(YNode<'s>, YNode<'s>)>,
}

/// A scalar read from one line: where it starts, its style and its text (decoded when quoted).
struct Tok<'s> {
    start: usize,
    style: Style,
    text: std::borrow::Cow<'s, str>,
    /// Byte offset just after the token (after the closing quote, or after the plain text
    /// without trailing spaces).
    end: usize,
    /// A plain scalar stopped at ` #` (a comment follows on its line).
    comment: bool,
}

/// Bytes a plain scalar in block context has to look at: line breaks, tabs, `:` and `#`
/// (spaces are ordinary: trailing ones are trimmed at the end).
static SPECIAL: [bool; 256] = special_table(b"\n\r\t:#");

/// [`SPECIAL`] plus the flow indicators, for plain scalars inside `[…]` and `{…}`.
static SPECIAL_FLOW: [bool; 256] = special_table(b"\n\r\t:#,[]{}");

const fn special_table(special: &[u8]) -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < special.len() {
        t[special[i] as usize] = true;
        i += 1;
    }
    t
}

fn is_flow_indicator(c: u8) -> bool {
    matches!(c, b',' | b'[' | b']' | b'{' | b'}')
}

/// Characters that may not start a plain scalar (when not followed by a safe character for
/// `-`, `?` and `:`).
fn is_indicator(c: u8) -> bool {
    matches!(
        c,
        b'-' | b'?'
            | b':'
            | b','
            | b'['
            | b']'
            | b'{'
            | b'}'
            | b'#'
            | b'&'
            | b'*'
            | b'!'
            | b'|'
            | b'>'
            | b'\''
            | b'"'
            | b'%'
            | b'@'
            | b'`'
    )
}

impl<'s> Scanner<'s> {
    fn at(&self, p: usize) -> u8 {
        self.b.get(p).copied().unwrap_or(b'\n')
    }

    /// True at the end of a line (or of the input). A `\r` is always the start of a `\r\n`
    /// (checked by [`printable`]).
    fn eol(&self, p: usize) -> bool {
        p >= self.b.len() || matches!(self.b[p], b'\n' | b'\r')
    }

    /// Blank after an indicator: a space, the end of the line or of the input.
    fn blank(&self, p: usize) -> bool {
        p >= self.b.len() || matches!(self.b[p], b' ' | b'\n' | b'\r')
    }

    /// The 1-based column of byte `p` on the current line, in UTF-16 units as GitHub counts.
    fn col(&self, p: usize) -> u32 {
        let n = if self.ascii {
            p - self.line_start
        } else {
            self.src[self.line_start..p].encode_utf16().count()
        };
        n as u32 + 1
    }

    fn pos(&self, p: usize) -> Pos {
        Pos::new(self.line, self.col(p))
    }

    fn count(&mut self) -> R<()> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(Bail);
        }
        Ok(())
    }

    /// Moves to the start of the next line (or the end of the input).
    fn next_line(&mut self) {
        let rest = &self.b[self.i.min(self.b.len())..];
        match rest.iter().position(|&c| c == b'\n') {
            Some(n) => {
                self.i += n + 1;
                self.line += 1;
                self.line_start = self.i;
            }
            None => self.i = self.b.len(),
        }
    }

    /// Skips spaces from `p` (a tab gives up).
    fn spaces(&self, mut p: usize) -> R<usize> {
        // Eight bytes at a time through indentation.
        while let Some(chunk) = self.b.get(p..p + 8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            let other = u64::from_le_bytes(word) ^ u64::from_le_bytes([b' '; 8]);
            if other != 0 {
                p += (other.trailing_zeros() / 8) as usize;
                break;
            }
            p += 8;
        }
        while p < self.b.len() {
            match self.b[p] {
                b' ' => p += 1,
                b'\t' => return Err(Bail),
                _ => break,
            }
        }
        Ok(p)
    }

    /// After a node on the current line: only spaces and a comment may follow. Moves to the
    /// next line.
    fn end_of_line(&mut self, p: usize) -> R<()> {
        let q = self.spaces(p)?;
        if !self.eol(q) && !(self.at(q) == b'#' && (q > p || q == self.line_start)) {
            return Err(Bail);
        }
        self.i = q;
        self.next_line();
        Ok(())
    }

    /// From the start of a line, skips blank and comment lines. Returns the indentation of the
    /// next content line (with `i` at its start), or `None` at the end of the input.
    fn content_line(&mut self) -> R<Option<usize>> {
        loop {
            if self.i >= self.b.len() {
                return Ok(None);
            }
            let p = self.spaces(self.i)?;
            if self.eol(p) || self.b[p] == b'#' {
                self.i = p;
                self.next_line();
                continue;
            }
            let indent = p - self.i;
            if indent == 0 {
                let head = &self.b[p..];
                if (head.starts_with(b"---") || head.starts_with(b"...")) && self.blank(p + 3) {
                    return Err(Bail);
                }
            }
            return Ok(Some(indent));
        }
    }

    fn document(&mut self) -> R<YNode<'s>> {
        // An explicit document start on its own line.
        let Some(indent) = self.content_line_allowing_start()? else {
            return Err(Bail);
        };
        let root = self.block_node(indent, -1, 1)?;
        if self.content_line()?.is_some() {
            return Err(Bail);
        }
        Ok(root)
    }

    /// [`Self::content_line`] for the first line: a `---` line is skipped once.
    fn content_line_allowing_start(&mut self) -> R<Option<usize>> {
        loop {
            if self.i >= self.b.len() {
                return Ok(None);
            }
            let p = self.spaces(self.i)?;
            if self.eol(p) || self.b[p] == b'#' {
                self.i = p;
                self.next_line();
                continue;
            }
            if p == self.i && self.b[p] == b'%' {
                return Err(Bail);
            }
            if p == self.i && self.b[p..].starts_with(b"---") && self.blank(p + 3) {
                self.end_of_line(p + 3)?;
                return self.content_line();
            }
            return self.content_line();
        }
    }

    /// A node starting on a fresh line at indentation `indent` (> `parent`, or equal for a
    /// sequence under a mapping key), `i` at the line start. Returns at the start of the line
    /// after the node.
    fn block_node(&mut self, indent: usize, parent: isize, depth: usize) -> R<YNode<'s>> {
        let p = self.i + indent;
        if self.at(p) == b'-' && self.blank(p + 1) {
            return self.block_seq(p, depth);
        }
        if parent < 0 {
            // The root: a mapping (a scalar root is left to the full parser).
            let tok = self.line_scalar(p, false)?;
            return match self.key_colon(&tok)? {
                Some(after) => self.block_map(tok, after, depth),
                None => Err(Bail),
            };
        }
        self.inline_node(p, parent, depth, true)
    }

    /// A node starting at `p` (not at the start of its line unless `fresh`) inside a block
    /// collection of indentation `parent`: a compact mapping or sequence, or a scalar or flow
    /// value. Returns at the start of the line after the node.
    fn inline_node(&mut self, p: usize, parent: isize, depth: usize, fresh: bool) -> R<YNode<'s>> {
        let c = self.at(p);
        match c {
            b'|' | b'>' if fresh => return Err(Bail),
            b'|' | b'>' => return self.block_scalar(p, parent),
            b'[' | b'{' => {
                let (node, end) = self.flow(p, depth)?;
                if self.at(self.spaces(end)?) == b':' {
                    return Err(Bail);
                }
                self.end_of_line(end)?;
                return Ok(node);
            }
            b'-' if self.blank(p + 1) => {
                // `- - x`: a sequence starting on the line of its parent's entry.
                if fresh {
                    return Err(Bail);
                }
                return self.block_seq(p, depth);
            }
            _ => {}
        }
        let tok = self.line_scalar(p, false)?;
        if let Some(after) = self.key_colon(&tok)? {
            return self.block_map(tok, after, depth);
        }
        self.scalar_value(tok, parent)
    }

    /// When `tok` is followed by `:` and a blank, the offset after the `:`.
    fn key_colon(&self, tok: &Tok<'_>) -> R<Option<usize>> {
        if tok.comment {
            return Ok(None);
        }
        let q = self.spaces(tok.end)?;
        if self.at(q) == b':' && self.blank(q + 1) {
            if tok.end - tok.start > MAX_KEY_LEN {
                return Err(Bail);
            }
            return Ok(Some(q + 1));
        }
        Ok(None)
    }

    fn scalar_node(&mut self, tok: Tok<'s>) -> R<YNode<'s>> {
        self.count()?;
        let pos = self.pos(tok.start);
        let kind = match tok.style {
            Style::Plain => resolve_plain_cow(tok.text),
            style => YKind::Str {
                value: tok.text,
                style,
            },
        };
        Ok(YNode { pos, kind })
    }

    /// A scalar value whose first line was read as `tok`: a plain scalar may continue on more
    /// indented lines. Returns at the start of the next line.
    fn scalar_value(&mut self, tok: Tok<'s>, parent: isize) -> R<YNode<'s>> {
        if tok.style != Style::Plain || tok.comment {
            let end = tok.end;
            let node = self.scalar_node(tok)?;
            self.end_of_line(end)?;
            return Ok(node);
        }
        if !self.eol(self.spaces(tok.end)?) {
            return Err(Bail);
        }
        // Continuation lines (more indented than the parent collection).
        self.i = tok.end;
        let start = self.pos(tok.start);
        let first = tok.text;
        let mut text: Option<String> = None;
        let mut blank_lines = 0usize;
        loop {
            let save = (self.i, self.line, self.line_start);
            self.next_line();
            if self.i >= self.b.len() {
                (self.i, self.line, self.line_start) = save;
                break;
            }
            let q = self.spaces(self.i)?;
            if self.eol(q) {
                blank_lines += 1;
                continue;
            }
            let indent = (q - self.i) as isize;
            if indent <= parent {
                (self.i, self.line, self.line_start) = save;
                // blank lines before the next content belong to nobody
                break;
            }
            // `-x`, `?x` and `:x` continue the text; other indicators (`- x`, `#`, quotes…)
            // are left to the full parser.
            let c = self.b[q];
            if is_indicator(c)
                && !(matches!(c, b'-' | b'?' | b':')
                    && !self.blank(q + 1)
                    && self.at(q + 1) != b'\t')
            {
                return Err(Bail);
            }
            let part = self.plain(q, false)?;
            if part.comment || part.style != Style::Plain || !self.eol(self.spaces(part.end)?) {
                return Err(Bail);
            }
            let t = text.get_or_insert_with(|| first.to_string());
            if blank_lines == 0 {
                t.push(' ');
            } else {
                for _ in 0..blank_lines {
                    t.push('\n');
                }
            }
            blank_lines = 0;
            t.push_str(&part.text);
            self.i = part.end;
        }
        // `i` is on the last line of the scalar: move past it.
        self.next_line();
        self.count()?;
        let kind = match text {
            Some(t) => resolve_plain_owned(t),
            None => resolve_plain_cow(first),
        };
        Ok(YNode { pos: start, kind })
    }

    /// Reads a scalar that must end on its line: quoted, or the plain text up to `: `, ` #`
    /// or the end of the line (`flow`: also up to a flow indicator or any `:`).
    fn line_scalar(&self, p: usize, flow: bool) -> R<Tok<'s>> {
        match self.at(p) {
            b'\'' => self.single_quoted(p),
            b'"' => self.double_quoted(p),
            c => {
                if is_indicator(c) {
                    let next = self.at(p + 1);
                    let safe = matches!(c, b'-' | b'?' | b':')
                        && !self.blank(p + 1)
                        && next != b'\t'
                        && !(flow && is_flow_indicator(next));
                    if !safe {
                        return Err(Bail);
                    }
                }
                self.plain(p, flow)
            }
        }
    }

    fn plain(&self, p: usize, flow: bool) -> R<Tok<'s>> {
        let b = self.b;
        let special = if flow { &SPECIAL_FLOW } else { &SPECIAL };
        let mut q = p;
        let mut comment = false;
        while q < b.len() {
            // Skip ordinary characters (spaces included) in bulk (an iterator: no bounds
            // check per byte).
            if !special[b[q] as usize] {
                q += b[q..]
                    .iter()
                    .position(|&c| special[c as usize])
                    .unwrap_or(b.len() - q);
                continue;
            }
            match b[q] {
                b'\n' | b'\r' => break,
                b'\t' => return Err(Bail),
                b'#' if q > p && b[q - 1] == b' ' => {
                    comment = true;
                    break;
                }
                b':' if flow || self.blank(q + 1) => break,
                c if flow && is_flow_indicator(c) => break,
                _ => {}
            }
            q += 1;
        }
        // The scalar ends before the spaces that precede its end.
        let end = p + b[p..q]
            .iter()
            .rposition(|&c| c != b' ')
            .map_or(0, |i| i + 1);
        if end == p {
            return Err(Bail);
        }
        Ok(Tok {
            start: p,
            style: Style::Plain,
            text: self.src[p..end].into(),
            end,
            comment,
        })
    }

    fn single_quoted(&self, p: usize) -> R<Tok<'s>> {
        let b = self.b;
        let mut q = p + 1;
        let mut out: Option<String> = None;
        let mut seg = q;
        loop {
            match b.get(q) {
                None | Some(b'\n' | b'\r') => return Err(Bail),
                Some(b'\'') => {
                    if b.get(q + 1) == Some(&b'\'') {
                        let o = out.get_or_insert_with(String::new);
                        o.push_str(&self.src[seg..=q]);
                        q += 2;
                        seg = q;
                        continue;
                    }
                    let text = match out {
                        Some(mut o) => {
                            o.push_str(&self.src[seg..q]);
                            o.into()
                        }
                        None => self.src[seg..q].into(),
                    };
                    return Ok(Tok {
                        start: p,
                        style: Style::SingleQuoted,
                        text,
                        end: q + 1,
                        comment: false,
                    });
                }
                Some(_) => q += 1,
            }
        }
    }

    fn double_quoted(&self, p: usize) -> R<Tok<'s>> {
        let b = self.b;
        let mut q = p + 1;
        let mut out: Option<String> = None;
        let mut seg = q;
        loop {
            match b.get(q) {
                None | Some(b'\n' | b'\r') => return Err(Bail),
                Some(b'"') => {
                    let text = match out {
                        Some(mut o) => {
                            o.push_str(&self.src[seg..q]);
                            o.into()
                        }
                        None => self.src[seg..q].into(),
                    };
                    return Ok(Tok {
                        start: p,
                        style: Style::DoubleQuoted,
                        text,
                        end: q + 1,
                        comment: false,
                    });
                }
                Some(b'\\') => {
                    let o = out.get_or_insert_with(String::new);
                    o.push_str(&self.src[seg..q]);
                    let (c, len) = match b.get(q + 1) {
                        Some(b'\\') => ('\\', 2),
                        Some(b'"') => ('"', 2),
                        Some(b'/') => ('/', 2),
                        Some(b'n') => ('\n', 2),
                        Some(b't') => ('\t', 2),
                        Some(b'r') => ('\r', 2),
                        Some(b'0') => ('\0', 2),
                        Some(b' ') => (' ', 2),
                        Some(b'x') => (self.hex(q + 2, 2)?, 4),
                        Some(b'u') => (self.hex(q + 2, 4)?, 6),
                        _ => return Err(Bail),
                    };
                    o.push(c);
                    q += len;
                    seg = q;
                }
                Some(_) => q += 1,
            }
        }
    }

    fn hex(&self, p: usize, n: usize) -> R<char> {
        let digits = self.b.get(p..p + n).ok_or(Bail)?;
        let mut v = 0u32;
        for &d in digits {
            v = v * 16 + (d as char).to_digit(16).ok_or(Bail)?;
        }
        char::from_u32(v).ok_or(Bail)
    }

    /// A block mapping whose first key was read as `key` (at its column, the mapping's
    /// indentation); `after` is the offset after the key's `:`.
    fn block_map(&mut self, key: Tok<'s>, after: usize, depth: usize) -> R<YNode<'s>> {
        if depth > self.max_depth {
            return Err(Bail);
        }
        self.count()?;
        let pos = self.pos(key.start);
        let indent = key.start - self.line_start;
        let start = self.map_items.len();
        let mut key = key;
        let mut after = after;
        loop {
            let k = self.scalar_node(key)?;
            let v = self.map_value(after, indent, depth)?;
            self.map_items.push((k, v));
            match self.content_line()? {
                Some(n) if n == indent => {}
                Some(n) if n < indent => break,
                None => break,
                Some(_) => return Err(Bail),
            }
            let p = self.i + indent;
            if self.at(p) == b'-' && self.blank(p + 1) {
                return Err(Bail);
            }
            if matches!(self.at(p), b'[' | b'{' | b'?' | b'|' | b'>') {
                return Err(Bail);
            }
            key = self.line_scalar(p, false)?;
            after = self.key_colon(&key)?.ok_or(Bail)?;
        }
        let items = self.map_items.drain(start..).collect();
        Ok(YNode {
            pos,
            kind: YKind::Map(items),
        })
    }

    /// The value after a key's `:` at `after`, in a mapping of indentation `indent`.
    fn map_value(&mut self, after: usize, indent: usize, depth: usize) -> R<YNode<'s>> {
        let p = self.spaces(after)?;
        if self.eol(p) || self.b[p] == b'#' {
            if self.b.get(p) == Some(&b'#') && p == after {
                return Err(Bail);
            }
            // The value is on the next lines, or empty.
            let colon = after - 1;
            let empty_pos = Pos::new(self.line, self.col(colon) + 1);
            self.i = p;
            self.next_line();
            return match self.content_line()? {
                Some(n) if n > indent => self.block_node(n, indent as isize, depth + 1),
                Some(n)
                    if n == indent && self.at(self.i + n) == b'-' && self.blank(self.i + n + 1) =>
                {
                    // A sequence at its key's indentation (positioned, as any, at its `-`).
                    let entry = self.spaces(self.i + n + 1)?;
                    if self.eol(entry) || self.b[entry] == b'#' {
                        return Err(Bail);
                    }
                    self.block_seq(self.i + n, depth + 1)
                }
                _ => {
                    self.count()?;
                    Ok(YNode {
                        pos: empty_pos,
                        kind: YKind::Null,
                    })
                }
            };
        }
        if self.at(p) == b'-' && self.blank(p + 1) {
            return Err(Bail);
        }
        self.inline_value(p, indent as isize, depth + 1)
    }

    /// A value on the line of its key or entry: no compact collection allowed except after
    /// `- `.
    fn inline_value(&mut self, p: usize, parent: isize, depth: usize) -> R<YNode<'s>> {
        match self.at(p) {
            b'|' | b'>' => self.block_scalar(p, parent),
            b'[' | b'{' => {
                let (node, end) = self.flow(p, depth)?;
                self.end_of_line(end)?;
                Ok(node)
            }
            _ => {
                let tok = self.line_scalar(p, false)?;
                if self.key_colon(&tok)?.is_some() {
                    return Err(Bail);
                }
                self.scalar_value(tok, parent)
            }
        }
    }

    /// A block sequence whose first `-` is at `p` (its column is the indentation).
    fn block_seq(&mut self, p: usize, depth: usize) -> R<YNode<'s>> {
        if depth > self.max_depth {
            return Err(Bail);
        }
        self.count()?;
        let pos = self.pos(p);
        let indent = p - self.line_start;
        let start = self.seq_items.len();
        let mut dash = p;
        loop {
            let q = self.spaces(dash + 1)?;
            let item = if self.eol(q) || self.b[q] == b'#' {
                if self.b.get(q) == Some(&b'#') && q == dash + 1 {
                    return Err(Bail);
                }
                self.i = q;
                self.next_line();
                match self.content_line()? {
                    Some(n) if n > indent => self.block_node(n, indent as isize, depth + 1)?,
                    _ => return Err(Bail), // an empty entry: left to the full parser
                }
            } else {
                self.inline_node(q, indent as isize, depth + 1, false)?
            };
            self.seq_items.push(item);
            match self.content_line()? {
                Some(n) if n == indent => {}
                Some(n) if n < indent => break,
                None => break,
                Some(_) => return Err(Bail),
            }
            let d = self.i + indent;
            if !(self.at(d) == b'-' && self.blank(d + 1)) {
                // The parent mapping continues (only valid when it has this indentation).
                break;
            }
            dash = d;
        }
        let items = self.seq_items.drain(start..).collect();
        Ok(YNode {
            pos,
            kind: YKind::Seq(items),
        })
    }

    /// A literal (`|`) or folded (`>`) block scalar whose header is at `p`, inside a
    /// collection of indentation `parent`.
    fn block_scalar(&mut self, p: usize, parent: isize) -> R<YNode<'s>> {
        let folded = self.b[p] == b'>';
        let pos = self.pos(p);
        let mut q = p + 1;
        let mut chomp = 0i8; // -1 strip, 0 clip, 1 keep
        match self.at(q) {
            b'-' => {
                chomp = -1;
                q += 1;
            }
            b'+' => {
                chomp = 1;
                q += 1;
            }
            _ => {}
        }
        if self.at(q).is_ascii_digit() {
            return Err(Bail);
        }
        let r = self.spaces(q)?;
        if !(self.eol(r) || self.at(r) == b'#' && r > q) {
            return Err(Bail);
        }
        if parent < 0 {
            return Err(Bail);
        }
        self.i = r;
        self.next_line();
        // Leading blank lines, then the first content line fixes the indentation.
        let mut leading = 0usize;
        let mut max_blank = 0usize;
        let indent;
        loop {
            if self.i >= self.b.len() {
                return Err(Bail); // empty content
            }
            let mut s = self.i;
            while self.at(s) == b' ' {
                s += 1;
            }
            if self.eol(s) {
                if s >= self.b.len() {
                    return Err(Bail);
                }
                max_blank = max_blank.max(s - self.i);
                leading += 1;
                self.next_line();
                continue;
            }
            if self.b[s] == b'\t' {
                return Err(Bail);
            }
            indent = s - self.i;
            break;
        }
        if indent as isize <= parent || max_blank > indent {
            return Err(Bail);
        }
        let mut out = String::new();
        for _ in 0..leading {
            out.push('\n');
        }
        // Content lines, with the blank lines seen since the last one.
        let mut blanks = 0usize;
        let mut any = false;
        let mut unterminated = false;
        loop {
            let ls = self.i;
            let mut s = ls;
            while s < ls + indent && self.at(s) == b' ' {
                s += 1;
            }
            let n = s - ls;
            if n < indent {
                if self.eol(s) {
                    if s >= self.b.len() {
                        if s > ls {
                            return Err(Bail);
                        }
                        break;
                    }
                    blanks += 1;
                    self.next_line();
                    continue;
                }
                // A less indented line ends the scalar.
                break;
            }
            // At the content indentation.
            let e = self.b[s..]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(self.b.len(), |x| s + x);
            // The input ends on this line without a line break.
            let last = e == self.b.len();
            let text = &self.src[s..e];
            let text = text.strip_suffix('\r').unwrap_or(text);
            if text.bytes().all(|c| c == b' ') && (!text.is_empty() || last) {
                return Err(Bail);
            }
            if text.is_empty() {
                blanks += 1;
                self.next_line();
                continue;
            }
            if folded && matches!(text.as_bytes()[0], b' ' | b'\t') {
                return Err(Bail);
            }
            if any {
                if folded {
                    if blanks == 0 {
                        out.push(' ');
                    }
                } else {
                    out.push('\n');
                }
                for _ in 0..blanks {
                    out.push('\n');
                }
            }
            blanks = 0;
            any = true;
            out.push_str(text);
            self.next_line();
            if last {
                unterminated = true;
                break;
            }
        }
        match chomp {
            // Like a final line break (what the full parser does).
            0 | 1 if unterminated => out.push('\n'),
            -1 => {}
            0 => out.push('\n'),
            _ => {
                for _ in 0..=blanks {
                    out.push('\n');
                }
            }
        }
        self.count()?;
        let style = if folded {
            Style::Folded
        } else {
            Style::Literal
        };
        Ok(YNode {
            pos,
            kind: YKind::Str {
                value: out.into(),
                style,
            },
        })
    }

    /// A flow collection on one line starting at `p` (`[` or `{`). Returns the node and the
    /// offset after its closing bracket.
    fn flow(&mut self, p: usize, depth: usize) -> R<(YNode<'s>, usize)> {
        if depth > self.max_depth {
            return Err(Bail);
        }
        self.count()?;
        let pos = self.pos(p);
        let seq = self.b[p] == b'[';
        let close = if seq { b']' } else { b'}' };
        let mut q = self.spaces(p + 1)?;
        if seq {
            let start = self.seq_items.len();
            if self.at(q) != close {
                loop {
                    let (item, end) = self.flow_item(q, depth)?;
                    self.seq_items.push(item);
                    q = self.spaces(end)?;
                    match self.flow_next(q, close)? {
                        Some(next) => q = next,
                        None => break,
                    }
                }
            }
            let items = self.seq_items.drain(start..).collect();
            Ok((
                YNode {
                    pos,
                    kind: YKind::Seq(items),
                },
                q + 1,
            ))
        } else {
            let start = self.map_items.len();
            if self.at(q) != close {
                loop {
                    if matches!(self.at(q), b'[' | b'{') {
                        return Err(Bail);
                    }
                    let key = self.line_scalar(q, true)?;
                    let c = self.spaces(key.end)?;
                    if !(self.at(c) == b':' && self.at(c + 1) == b' ') {
                        return Err(Bail);
                    }
                    let k = self.scalar_node(key)?;
                    let v_at = self.spaces(c + 1)?;
                    let (v, end) = self.flow_item(v_at, depth)?;
                    self.map_items.push((k, v));
                    q = self.spaces(end)?;
                    match self.flow_next(q, close)? {
                        Some(next) => q = next,
                        None => break,
                    }
                }
            }
            let items = self.map_items.drain(start..).collect();
            Ok((
                YNode {
                    pos,
                    kind: YKind::Map(items),
                },
                q + 1,
            ))
        }
    }

    /// After an entry of a flow collection, at `q`: where the next entry
    /// starts, or `None` at the closing bracket (a trailing comma bails).
    fn flow_next(&self, q: usize, close: u8) -> R<Option<usize>> {
        match self.at(q) {
            b',' => {
                let next = self.spaces(q + 1)?;
                if self.at(next) == close {
                    Err(Bail)
                } else {
                    Ok(Some(next))
                }
            }
            c if c == close => Ok(None),
            _ => Err(Bail),
        }
    }

    /// One entry of a flow collection: a scalar or a nested flow collection.
    fn flow_item(&mut self, p: usize, depth: usize) -> R<(YNode<'s>, usize)> {
        match self.at(p) {
            b'[' | b'{' => self.flow(p, depth + 1),
            b',' | b']' | b'}' | b'\n' | b'\r' => Err(Bail),
            _ => {
                let tok = self.line_scalar(p, true)?;
                if tok.comment {
                    return Err(Bail);
                }
                let end = tok.end;
                if self.at(self.spaces(end)?) == b':' {
                    return Err(Bail);
                }
                Ok((self.scalar_node(tok)?, end))
            }
        }
    }
}
