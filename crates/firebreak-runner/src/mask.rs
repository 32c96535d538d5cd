//! Secret masking for every line of output and every log.
//!
//! [`Masker`] holds the values to hide: secrets registered by the executor and
//! values from `::add-mask::`. Like GitHub's runner it also hides
//! * each line of a multi-line value (output is masked line by line, so a
//!   multi-line secret only ever appears one line at a time), trimmed;
//! * common encodings of each value: base64 (also of the value shifted by one
//!   and two bytes, so it is found inside `base64("user:" + secret)`), JSON
//!   string escaping, URI data escaping, XML escaping, command-line `"`
//!   escaping, expression `'` escaping, and the value without surrounding
//!   double quotes (when longer than 8 characters).
//!
//! Every occurrence of every registered string is replaced; overlapping or
//! adjacent matches merge into a single `***`, so the longest covering span is
//! always hidden whatever the registration order. Matching uses one
//! Aho-Corasick automaton (rebuilt lazily after additions), so masking a line
//! costs one linear scan whatever the number of secrets.
//!
//! `Masker` is a cheap-to-clone handle; clones share the same set.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use aho_corasick::AhoCorasick;

/// The replacement text.
pub const MASK: &str = "***";

#[derive(Default)]
struct Inner {
    originals: BTreeSet<String>,
    patterns: BTreeSet<String>,
    automaton: Option<Arc<AhoCorasick>>,
}

/// A shared set of values to hide. See the module docs.
#[derive(Clone, Default)]
pub struct Masker {
    inner: Arc<RwLock<Inner>>,
}

impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secrets themselves.
        f.debug_struct("Masker")
            .field("patterns", &self.len())
            .finish()
    }
}

impl Masker {
    /// An empty masker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a secret value (with its lines and encodings). Empty and
    /// whitespace-only values are ignored.
    pub fn add(&self, value: &str) {
        if value.trim().is_empty() {
            return;
        }
        let mut inner = match self.inner.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if !inner.originals.insert(value.to_string()) {
            return;
        }
        let mut new = Vec::new();
        push_with_encodings(&mut new, value);
        for line in value.split(['\r', '\n']) {
            let line = line.trim();
            if !line.is_empty() && line != value {
                push_with_encodings(&mut new, line);
            }
        }
        let mut changed = false;
        for p in new {
            if !p.is_empty() {
                changed |= inner.patterns.insert(p);
            }
        }
        if changed {
            inner.automaton = None;
        }
    }

    /// Number of strings searched for (values plus lines and encodings).
    pub fn len(&self) -> usize {
        match self.inner.read() {
            Ok(g) => g.patterns.len(),
            Err(p) => p.into_inner().patterns.len(),
        }
    }

    /// True when nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn automaton(&self) -> Option<Arc<AhoCorasick>> {
        {
            let g = match self.inner.read() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            if g.patterns.is_empty() {
                return None;
            }
            if let Some(a) = &g.automaton {
                return Some(a.clone());
            }
        }
        let mut g = match self.inner.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some(a) = &g.automaton {
            return Some(a.clone());
        }
        match AhoCorasick::new(g.patterns.iter()) {
            Ok(a) => {
                let a = Arc::new(a);
                g.automaton = Some(a.clone());
                Some(a)
            }
            Err(e) => {
                // Only possible past aho-corasick's size limits; fall back to
                // nothing rather than crash, loudly.
                tracing::error!("cannot build secret masker: {e}");
                None
            }
        }
    }

    /// Replaces every registered value in `text` with `***`.
    pub fn mask<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let Some(ac) = self.automaton() else {
            return Cow::Borrowed(text);
        };
        let mut spans: Vec<(usize, usize)> = Vec::new();
        for m in ac.find_overlapping_iter(text) {
            match spans.last_mut() {
                // Matches come ordered by end; merge anything touching the last span.
                Some(last) if m.start() <= last.1 => {
                    last.0 = last.0.min(m.start());
                    last.1 = last.1.max(m.end());
                }
                _ => spans.push((m.start(), m.end())),
            }
        }
        if spans.is_empty() {
            return Cow::Borrowed(text);
        }
        // A later, longer match can start before earlier spans: merge properly.
        spans.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(spans.len());
        for (s, e) in spans {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (s, e) in merged {
            out.push_str(&text[at..s]);
            out.push_str(MASK);
            at = e;
        }
        out.push_str(&text[at..]);
        Cow::Owned(out)
    }
}

fn push_with_encodings(out: &mut Vec<String>, v: &str) {
    out.push(v.to_string());
    let bytes = v.as_bytes();
    out.push(base64(bytes));
    for shift in [1, 2] {
        if bytes.len() > shift {
            out.push(base64(&bytes[shift..]));
        }
    }
    out.push(v.replace('"', "\\\""));
    out.push(v.replace('\'', "''"));
    out.push(json_escape(v));
    out.push(uri_escape(v));
    out.push(xml_escape(v));
    if v.len() > 8 && v.starts_with('"') && v.ends_with('"') {
        out.push(v[1..v.len() - 1].to_string());
    }
}

/// Standard base64 with padding.
pub(crate) fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let idx = |shift: u32| char::from(T[((n >> shift) & 63) as usize]);
        out.push(idx(18));
        out.push(idx(12));
        out.push(if chunk.len() > 1 { idx(6) } else { '=' });
        out.push(if chunk.len() > 2 { idx(0) } else { '=' });
    }
    out
}

/// The inside of a JSON string literal for `v` (quotes, backslashes and
/// control characters escaped; other characters kept).
fn json_escape(v: &str) -> String {
    let s = serde_json::Value::String(v.to_string()).to_string();
    s.get(1..s.len().saturating_sub(1))
        .unwrap_or_default()
        .to_string()
}

/// RFC 3986 data escaping: everything but unreserved characters as `%XX`.
fn uri_escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn xml_escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '&' => out.push_str("&amp;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_every_occurrence() {
        let m = Masker::new();
        m.add("hunter2");
        assert_eq!(m.mask("pw=hunter2 again hunter2"), "pw=*** again ***");
        assert_eq!(m.mask("nothing here"), "nothing here");
        assert!(matches!(m.mask("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn overlapping_and_nested_values_merge_longest() {
        let m = Masker::new();
        m.add("abc");
        m.add("abcdef");
        m.add("defgh");
        assert_eq!(m.mask("xabcdefghx"), "x***x");
        let m2 = Masker::new();
        m2.add("secret");
        m2.add("my-secret-value");
        assert_eq!(m2.mask("[my-secret-value]"), "[***]");
    }

    #[test]
    fn multi_line_secret_masks_each_line() {
        let m = Masker::new();
        m.add("-----BEGIN KEY-----\nMIIEabc\n  line3  \n-----END KEY-----\n");
        assert_eq!(m.mask("MIIEabc"), "***");
        assert_eq!(m.mask("    line3"), "    ***");
        assert_eq!(m.mask("-----END KEY-----"), "***");
    }

    #[test]
    fn encodings_are_masked() {
        let m = Masker::new();
        m.add("p\"a/ss word");
        assert_eq!(m.mask(r#"{"pw":"p\"a/ss word"}"#), r#"{"pw":"***"}"#);
        assert_eq!(m.mask("url?p=p%22a%2Fss%20word"), "url?p=***");
        assert_eq!(m.mask("<p>p&quot;a/ss word</p>"), "<p>***</p>");
        let b = Masker::new();
        b.add("hunter2hunter2");
        assert_eq!(b.mask(&base64(b"hunter2hunter2")), "***");
        // base64("user:" + secret) contains a shifted encoding of the secret.
        let enc = base64(b"user:hunter2hunter2");
        assert!(b.mask(&enc).contains("***"), "{enc}");
    }

    #[test]
    fn json_escaped_newlines_masked() {
        let m = Masker::new();
        m.add("line1\nline2");
        assert_eq!(m.mask(r#"{"k":"line1\nline2"}"#), r#"{"k":"***"}"#);
    }

    #[test]
    fn empty_and_whitespace_ignored() {
        let m = Masker::new();
        m.add("");
        m.add("   ");
        assert!(m.is_empty());
        assert_eq!(m.mask("a b"), "a b");
    }

    #[test]
    fn unicode_boundaries_are_respected() {
        let m = Masker::new();
        m.add("日本");
        assert_eq!(m.mask("こんにちは日本語"), "こんにちは***語");
    }

    #[test]
    fn base64_matches_reference() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn many_secrets_many_lines() {
        let m = Masker::new();
        for i in 0..500 {
            m.add(&format!("secret-number-{i:04}"));
        }
        let started = std::time::Instant::now();
        for i in 0..5000 {
            let line = format!("line {i} has secret-number-{:04} and text", i % 500);
            assert_eq!(m.mask(&line), format!("line {i} has *** and text"));
        }
        // One automaton, not one scan per secret: this stays well under a second.
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }

    #[test]
    fn clones_share_state_and_debug_hides_values() {
        let m = Masker::new();
        let c = m.clone();
        c.add("topsecret");
        assert_eq!(m.mask("topsecret"), "***");
        assert!(!format!("{m:?}").contains("topsecret"));
    }
}
