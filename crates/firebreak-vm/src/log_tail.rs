//! The end of a VMM's log or a guest's console, for error messages: the last
//! lines say why a VM died; the rest would drown them.

/// The last `lines` lines of `text`, joined with `\n`.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// The last `lines` lines of the file at `path`, reading at most its last 64 KiB (a guest
/// may have written gigabytes to its console); empty when it cannot be read.
pub(crate) fn file_tail(path: &std::path::Path, lines: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    const WINDOW: u64 = 64 << 10;
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if f.seek(SeekFrom::Start(len.saturating_sub(WINDOW))).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = f.take(WINDOW).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    // A window that starts mid-line loses that line's start: drop it.
    let text = if len > WINDOW {
        text.split_once('\n').map_or("", |(_, rest)| rest)
    } else {
        &text
    };
    tail(text, lines)
}

#[cfg(test)]
mod tests {
    use super::{file_tail, tail};

    #[test]
    fn a_files_tail_reads_only_its_end() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("console.log");
        let mut text = "x".repeat(200 << 10);
        text.push_str("\nlast but one\nlast\n");
        std::fs::write(&p, text).expect("write");
        assert_eq!(file_tail(&p, 2), "last but one\nlast");
        assert_eq!(file_tail(&d.path().join("none"), 2), "");
    }

    #[test]
    fn keeps_the_last_lines_or_all_of_a_short_text() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a\nb", 5), "a\nb");
        assert_eq!(tail("", 3), "");
    }
}
