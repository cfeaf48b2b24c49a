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

#[cfg(test)]
mod tests {
    use super::*;

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
