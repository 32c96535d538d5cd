//! The end of a VMM's log or a guest's console, for error messages: the last
//! lines say why a VM died; the rest would drown them.

/// The last `lines` lines of `text`, joined with `\n`.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::tail;

    #[test]
    fn keeps_the_last_lines_or_all_of_a_short_text() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a\nb", 5), "a\nb");
        assert_eq!(tail("", 3), "");
    }
}
