//! Small borrowing helpers shared by the parsers.

use crate::ParseError;

/// Split `==> PATH <==`-headed output into `(path, content)` blocks.
/// Text before the first header is returned with path `None`.
pub fn file_blocks(text: &str) -> Vec<(Option<&str>, &str)> {
    let mut out = Vec::new();
    let mut current: Option<&str> = None;
    let mut start = 0usize;
    let mut pos = 0usize;
    for line in text.split_inclusive('\n') {
        let l = line.trim_end_matches(['\n', '\r']);
        if let Some(path) = header(l) {
            if pos > start || current.is_some() {
                out.push((current, &text[start..pos]));
            }
            current = Some(path);
            start = pos + line.len();
        }
        pos += line.len();
    }
    if pos > start || current.is_some() {
        out.push((current, &text[start.min(text.len())..]));
    }
    out
}

fn header(line: &str) -> Option<&str> {
    let path = line.strip_prefix("==> ")?.strip_suffix(" <==")?;
    if path.starts_with('/') {
        Some(path)
    } else {
        None
    }
}

/// `key=value` lines (blank lines skipped); a line without `=` is a [`ParseError::Line`]
/// numbered among the non-blank lines.
pub fn kv_lines(text: &str) -> impl Iterator<Item = Result<(&str, &str), ParseError>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| match l.split_once('=') {
            Some((k, v)) => Ok((k.trim(), v.trim())),
            None => Err(ParseError::Line {
                line: i + 1,
                reason: format!("unexpected {l:?}"),
            }),
        })
}

/// Trimmed, non-empty value or `None`.
pub fn non_empty(s: &str) -> Option<&str> {
    let t = s.trim();
    if t.is_empty() {
        None
    } else {
        Some(t)
    }
}

/// `Some(owned)` for a non-empty trimmed value.
pub fn owned(s: &str) -> Option<String> {
    non_empty(s).map(str::to_owned)
}

/// Cut a message taken from a host to a sane length for error reports.
pub fn excerpt(s: &str) -> String {
    const MAX: usize = 200;
    let t = s.trim();
    let mut end = t.len().min(MAX);
    while !t.is_char_boundary(end) {
        end -= 1;
    }
    let first = t[..end].lines().next().unwrap_or("");
    first.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks() {
        let b = file_blocks("pre\n==> /a <==\nx\ny\n==> /b <==\n==> /c <==\nz");
        assert_eq!(
            b,
            vec![
                (None, "pre\n"),
                (Some("/a"), "x\ny\n"),
                (Some("/b"), ""),
                (Some("/c"), "z")
            ]
        );
        assert!(file_blocks("").is_empty());
        assert_eq!(file_blocks("==> /a <=="), vec![(Some("/a"), "")]);
    }

    #[test]
    fn excerpt_is_bounded() {
        let long = "é".repeat(500);
        assert!(excerpt(&long).len() <= 200);
        assert_eq!(excerpt("  a\nb"), "a");
    }
}
