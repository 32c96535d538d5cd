//! Which Debian mirror an image's packages come from: the one this host's apt uses.

use std::path::PathBuf;

/// The Debian mirror named in this host's apt sources (first `debian` URI
/// serving `suite`), else `http://deb.debian.org/debian`.
pub(super) fn host_mirror(suite: &str) -> String {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(rd) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        if let Some(m) = mirror_from_sources(&text, suite) {
            return m;
        }
    }
    "http://deb.debian.org/debian".into()
}

/// Parses one-line (`deb URI suite …`) and deb822 (`URIs:`/`Suites:`) apt
/// sources; returns the first URI for `suite` that looks like a Debian
/// archive (not the security archive).
fn mirror_from_sources(text: &str, suite: &str) -> Option<String> {
    let usable = |uri: &str| uri.contains("debian") && !uri.contains("security");
    // One-line format.
    for line in text.lines() {
        let mut words = line.split_whitespace().peekable();
        if words.next() != Some("deb") {
            continue;
        }
        if words.peek().is_some_and(|w| w.starts_with('[')) {
            for w in words.by_ref() {
                if w.ends_with(']') {
                    break;
                }
            }
        }
        if let (Some(uri), Some(s)) = (words.next(), words.next()) {
            if s == suite && usable(uri) {
                return Some(uri.trim_end_matches('/').to_string());
            }
        }
    }
    // deb822 stanzas.
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        let (Some(uris), Some(suites)) = (field("URIs"), field("Suites")) else {
            continue;
        };
        if field("Types").is_some_and(|t| !t.split_whitespace().any(|t| t == "deb")) {
            continue;
        }
        if suites.split_whitespace().any(|s| s == suite) {
            if let Some(uri) = uris.split_whitespace().find(|u| usable(u)) {
                return Some(uri.trim_end_matches('/').to_string());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_is_read_from_deb822_and_one_line_sources() {
        let deb822 = "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n\
                      Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n";
        assert_eq!(
            mirror_from_sources(deb822, "bookworm").as_deref(),
            Some("http://deb.debian.org/debian")
        );
        let one =
            "# c\ndeb [arch=amd64 signed-by=/x] http://ftp.fr.debian.org/debian/ bookworm main\n";
        assert_eq!(
            mirror_from_sources(one, "bookworm").as_deref(),
            Some("http://ftp.fr.debian.org/debian")
        );
        assert_eq!(
            mirror_from_sources(
                "deb https://packages.cloud.google.com/apt cloud-sdk main",
                "bookworm"
            ),
            None
        );
    }
}
