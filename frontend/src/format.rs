//! Small pure helpers for display (tested natively).

use still_api::{HIT_END, HIT_START};

/// `1234567` → `"1,234,567"`.
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// A number typed into a form: empty is `None`; anything else must parse as `T`, or the error
/// names the field and the text.
pub fn optional_number<T: std::str::FromStr>(what: &str, text: &str) -> Result<Option<T>, String> {
    match text.trim() {
        "" => Ok(None),
        t => t
            .parse()
            .map(Some)
            .map_err(|_| format!("{what}: '{t}' is not a number of the kind it takes")),
    }
}

/// Bytes for people: `"1.5 MiB"`.
pub fn bytes(n: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `"2026-11-25T16:17:13.123Z"` → `"2026-11-25 16:17"`.
pub fn timestamp(iso: &str) -> String {
    let trimmed = iso.replace('T', " ");
    trimmed.chars().take(16).collect()
}

/// Splits a search snippet into (is_hit, text) parts.
pub fn snippet_parts(snippet: &str) -> Vec<(bool, String)> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut in_hit = false;
    for c in snippet.chars() {
        if c == HIT_START || c == HIT_END {
            if !current.is_empty() {
                parts.push((in_hit, std::mem::take(&mut current)));
            }
            in_hit = c == HIT_START;
        } else {
            current.push(c);
        }
    }
    if !current.is_empty() {
        parts.push((in_hit, current));
    }
    parts
}

/// A dataset name suggested by a file name: its stem.
pub fn name_from_file(file_name: &str) -> String {
    match file_name.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem.to_string(),
        _ => file_name.to_string(),
    }
}

/// Cuts text to `max` characters with an ellipsis.
pub fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut out: String = text.chars().take(max).collect();
        out.push('…');
        out
    }
}

/// A piece of budget-forced thinking: the model's text, a forced `Wait`, or where it was cut.
#[derive(Debug, Clone, PartialEq)]
pub enum Marked {
    Text(String),
    Wait(String),
    Cut,
}

/// Splits thinking at its forced `Wait`s (byte offsets where `wait` was inserted) and its cut.
/// An offset that is not on a character boundary, or where `wait` does not follow, is ignored.
pub fn marked_segments(text: &str, waits: &[usize], wait: &str, cut: Option<usize>) -> Vec<Marked> {
    let mut marks: Vec<(usize, bool)> = waits.iter().map(|&w| (w, true)).collect();
    if let Some(c) = cut {
        marks.push((c, false));
    }
    marks.sort();
    let mut out = Vec::new();
    let mut pos = 0;
    for (at, is_wait) in marks {
        let at = at.min(text.len());
        if at < pos
            || !text.is_char_boundary(at)
            || is_wait && (wait.is_empty() || !text[at..].starts_with(wait))
        {
            continue;
        }
        if at > pos {
            out.push(Marked::Text(text[pos..at].to_string()));
        }
        pos = at;
        if is_wait {
            out.push(Marked::Wait(wait.to_string()));
            pos = at + wait.len();
        } else {
            out.push(Marked::Cut);
        }
    }
    if pos < text.len() {
        out.push(Marked::Text(text[pos..].to_string()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thinking_is_split_at_forced_waits_and_the_cut() {
        let text = "so 12Wait no, 13Wait";
        assert_eq!(
            marked_segments(text, &[5, 16], "Wait", Some(20)),
            vec![
                Marked::Text("so 12".into()),
                Marked::Wait("Wait".into()),
                Marked::Text(" no, 13".into()),
                Marked::Wait("Wait".into()),
                Marked::Cut,
            ]
        );
        // A mark off a character boundary, or without the string after it, is ignored.
        assert_eq!(
            marked_segments("é x", &[1, 2], "Wait", None),
            vec![Marked::Text("é x".into())]
        );
    }

    #[test]
    fn numbers_and_sizes() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(-1000), "-1,000");
        assert_eq!(bytes(2048), "2.0 KiB");
        assert_eq!(timestamp("2026-11-25T16:17:13.123Z"), "2026-11-25 16:17");
    }

    #[test]
    fn snippets_split_at_hit_markers() {
        let s = format!("a {HIT_START}clip{HIT_END} b");
        assert_eq!(
            snippet_parts(&s),
            vec![
                (false, "a ".into()),
                (true, "clip".into()),
                (false, " b".into())
            ]
        );
    }

    #[test]
    fn names_and_cuts() {
        assert_eq!(name_from_file("train.jsonl"), "train");
        assert_eq!(name_from_file("noext"), "noext");
        assert_eq!(cut("abcdef", 3), "abc…");
        assert_eq!(cut("ab", 3), "ab");
    }
}
