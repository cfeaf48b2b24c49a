//! Words, their hashes and n-grams: the one reading of text that duplicates and
//! decontamination share. A word is a run of alphanumeric characters, lowercased, so
//! punctuation, LaTeX spacing and case never hide a copy.

/// SplitMix64's finalizer: a bijective mix of 64 bits.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// FNV-1a over the bytes, then mixed: a fixed hash (the same on every machine and release).
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix64(h)
}

/// Calls `f` with each word of `text`, lowercased.
fn each_word(text: &str, mut f: impl FnMut(&str)) {
    let mut word = String::new();
    for c in text.chars() {
        if c.is_alphanumeric() {
            if c.is_ascii() {
                word.push(c.to_ascii_lowercase());
            } else {
                word.extend(c.to_lowercase());
            }
        } else if !word.is_empty() {
            f(&word);
            word.clear();
        }
    }
    if !word.is_empty() {
        f(&word);
    }
}

/// The words of `text`, lowercased.
pub fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    each_word(text, |w| out.push(w.to_string()));
    out
}

/// The hashes of `text`'s words, in order.
pub fn word_hashes(text: &str) -> Vec<u64> {
    let mut out = Vec::new();
    each_word(text, |w| out.push(hash_bytes(w.as_bytes())));
    out
}

/// The hashes of every run of `n` consecutive words; a text of fewer (but some) words is one
/// gram of all of them, so short questions still compare.
pub fn grams(words: &[u64], n: usize) -> Vec<u64> {
    let n = n.max(1);
    if words.is_empty() {
        return Vec::new();
    }
    if words.len() < n {
        return vec![gram(words)];
    }
    words.windows(n).map(gram).collect()
}

/// One gram's hash: order matters, and its length is part of it.
pub fn gram(words: &[u64]) -> u64 {
    let mut h = mix64(words.len() as u64 ^ 0x9e37_79b9_7f4a_7c15);
    for &w in words {
        h = mix64(h.rotate_left(17) ^ w);
    }
    h
}

/// A question as the exact-duplicate rule compares it: whitespace runs collapsed, trimmed.
pub fn collapse_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for part in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(part);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_ignore_case_and_punctuation() {
        assert_eq!(
            words("What is $x^2$, Étienne?"),
            ["what", "is", "x", "2", "étienne"]
        );
        assert_eq!(word_hashes("A b"), word_hashes("a,  B!"));
    }

    #[test]
    fn grams_are_ordered_and_short_texts_are_one_gram() {
        let w = word_hashes("one two three four");
        assert_eq!(grams(&w, 2).len(), 3);
        assert_ne!(grams(&w, 2)[0], grams(&word_hashes("two one"), 2)[0]);
        assert_eq!(grams(&w, 8), vec![gram(&w)]);
        assert!(grams(&[], 8).is_empty());
    }

    #[test]
    fn whitespace_collapses() {
        assert_eq!(collapse_whitespace("  a \n\t b  "), "a b");
    }
}
