//! Trace lengths in tokens: the built-in Qwen2.5 tokenizer (the one s1's models use, carried in
//! `tests/data/tokenizers/qwen2.5/`) or a model's `tokenizer.json`.
//!
//! Counting is exact. For tokenizers built like Qwen2's (NFC, the Qwen2 split pattern, byte-level
//! BPE) the split runs here instead of in the `tokenizers` crate's backtracking regex: a scanner
//! that follows the pattern's alternatives in order, with each piece's token count cached (traces
//! repeat their words), and the pieces handed to the tokenizer's own BPE model. A text holding
//! one of the tokenizer's added tokens (`<|im_end|>` …) goes through the whole tokenizer. Any
//! other tokenizer is always run whole. Both paths are compared count for count in the tests.

use std::collections::HashMap;

use tokenizers::{Model, NormalizedString, Normalizer, Tokenizer};

/// The Qwen2.5 tokenizer, built into the binary.
const QWEN25: &[u8] = include_bytes!("../../tests/data/tokenizers/qwen2.5/tokenizer.json");

/// The name of the built-in tokenizer.
pub const BUILT_IN: &str = "qwen2.5";

/// Qwen2's split pattern, as its `tokenizer.json` writes it.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Pieces remembered per thread before the cache is emptied (bounds its memory).
const CACHE_PIECES: usize = 1 << 20;

/// Counts tokens.
pub struct Counter {
    tokenizer: Tokenizer,
    /// Set when the tokenizer splits as Qwen2's does: its added tokens' texts.
    fast: Option<Vec<String>>,
}

impl Counter {
    pub fn qwen25() -> Result<Self, String> {
        Self::from_bytes(QWEN25)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let tokenizer =
            Tokenizer::from_bytes(bytes).map_err(|e| format!("tokenizer.json unreadable: {e}"))?;
        let fast = serde_json::from_slice::<serde_json::Value>(bytes)
            .ok()
            .filter(splits_like_qwen2)
            .map(|_| {
                tokenizer
                    .get_added_tokens_decoder()
                    .values()
                    .map(|t| t.content.clone())
                    .filter(|c| !c.is_empty())
                    .collect()
            });
        Ok(Self { tokenizer, fast })
    }

    pub fn from_file(path: &std::path::Path) -> Result<Self, String> {
        let bytes =
            std::fs::read(path).map_err(|e| format!("{} unreadable: {e}", path.display()))?;
        Self::from_bytes(&bytes).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Whether counts take the scanner's path (else the whole tokenizer runs on each text).
    pub fn is_fast(&self) -> bool {
        self.fast.is_some()
    }

    /// Tokens in each text, counted on every core.
    pub fn count_batch(&self, texts: &[&str]) -> Result<Vec<u32>, String> {
        let Some(added) = &self.fast else {
            return self.count_whole(texts);
        };
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(texts.len().max(1));
        let chunk = texts.len().div_ceil(threads).max(1);
        let parts: Vec<Result<Vec<u32>, String>> = std::thread::scope(|scope| {
            let handles: Vec<_> = texts
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        let mut scanner = Scanner::default();
                        part.iter()
                            .map(|text| self.count_one(text, added, &mut scanner))
                            .collect::<Result<Vec<u32>, String>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("a counting thread panicked".into()))
                })
                .collect()
        });
        let mut out = Vec::with_capacity(texts.len());
        for part in parts {
            out.extend(part?);
        }
        Ok(out)
    }

    /// The whole tokenizer on each text (the reference the scanner's path is checked against).
    pub fn count_whole(&self, texts: &[&str]) -> Result<Vec<u32>, String> {
        let inputs: Vec<tokenizers::EncodeInput> = texts.iter().map(|t| (*t).into()).collect();
        self.tokenizer
            .encode_batch_fast(inputs, false)
            .map(|all| all.iter().map(|e| e.len() as u32).collect())
            .map_err(|e| format!("tokenizing: {e}"))
    }

    fn count_one(
        &self,
        text: &str,
        added: &[String],
        scanner: &mut Scanner,
    ) -> Result<u32, String> {
        if text.contains('<') && added.iter().any(|a| text.contains(a.as_str())) {
            return self.count_whole(&[text]).map(|c| c[0]);
        }
        let normalized;
        let text = if text.is_ascii() {
            text
        } else {
            let mut n = NormalizedString::from(text);
            if let Some(normalizer) = self.tokenizer.get_normalizer() {
                normalizer
                    .normalize(&mut n)
                    .map_err(|e| format!("normalizing: {e}"))?;
            }
            normalized = n.get().to_string();
            normalized.as_str()
        };
        scanner.count(text, self.tokenizer.get_model())
    }
}

/// NFC (or none), Qwen2's split isolating its matches, byte-level without its own regex, and a
/// plain BPE model.
fn splits_like_qwen2(json: &serde_json::Value) -> bool {
    use serde_json::json;
    let normalizer = &json["normalizer"];
    let model = &json["model"];
    let plain_bpe = model["type"] == "BPE"
        && model["dropout"].is_null()
        && model["byte_fallback"] != true
        && model["ignore_merges"] != true
        && model["continuing_subword_prefix"]
            .as_str()
            .is_none_or(str::is_empty)
        && model["end_of_word_suffix"]
            .as_str()
            .is_none_or(str::is_empty);
    let pre = json!({"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": QWEN2_SPLIT}, "behavior": "Isolated", "invert": false},
        {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}
    ]});
    (normalizer.is_null() || *normalizer == json!({"type": "NFC"}))
        && json["pre_tokenizer"] == pre
        && plain_bpe
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Class {
    Letter,
    Number,
    Space,
    Other,
}

/// One thread's split state: classes of the characters seen, token counts of pieces seen.
#[derive(Default)]
struct Scanner {
    chars: Vec<(usize, char, Class)>,
    classes: HashMap<char, Class>,
    pieces: HashMap<String, u32>,
    mapped: String,
}

/// `\p{L}`, `\p{N}` and `\s` from the Unicode tables (`regex-syntax`) the tokenizer's regex
/// engine reads too.
struct UnicodeClasses {
    letter: regex::Regex,
    number: regex::Regex,
    space: regex::Regex,
}

fn unicode_classes() -> &'static UnicodeClasses {
    static CLASSES: std::sync::OnceLock<UnicodeClasses> = std::sync::OnceLock::new();
    CLASSES.get_or_init(|| UnicodeClasses {
        letter: regex::Regex::new(r"\A\p{L}\z").expect("pattern"),
        number: regex::Regex::new(r"\A\p{N}\z").expect("pattern"),
        space: regex::Regex::new(r"\A\s\z").expect("pattern"),
    })
}

fn classify(c: char, cache: &mut HashMap<char, Class>) -> Class {
    if c.is_ascii() {
        return if c.is_ascii_alphabetic() {
            Class::Letter
        } else if c.is_ascii_digit() {
            Class::Number
        } else if matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r') {
            Class::Space
        } else {
            Class::Other
        };
    }
    *cache.entry(c).or_insert_with(|| {
        let classes = unicode_classes();
        let s = c.to_string();
        let full = |r: &regex::Regex| r.is_match(&s);
        if full(&classes.letter) {
            Class::Letter
        } else if full(&classes.number) {
            Class::Number
        } else if full(&classes.space) {
            Class::Space
        } else {
            Class::Other
        }
    })
}

/// GPT-2's byte-to-character table, as byte-level BPE spells bytes.
fn byte_chars() -> &'static [char; 256] {
    static TABLE: std::sync::OnceLock<[char; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
        let mut table = ['\0'; 256];
        let mut next = 256u32;
        for b in 0..256u32 {
            table[b as usize] = if printable(b) {
                char::from_u32(b).expect("latin-1")
            } else {
                let c = char::from_u32(next).expect("below the surrogates");
                next += 1;
                c
            };
        }
        table
    })
}

fn crlf(c: char) -> bool {
    c == '\r' || c == '\n'
}

impl Scanner {
    fn count(&mut self, text: &str, model: &impl Model) -> Result<u32, String> {
        let mut chars = std::mem::take(&mut self.chars);
        chars.clear();
        for (at, c) in text.char_indices() {
            chars.push((at, c, classify(c, &mut self.classes)));
        }
        let mut total = 0u32;
        let mut i = 0;
        while i < chars.len() {
            let end = next_piece(&chars, i);
            let from = chars[i].0;
            let to = chars.get(end).map_or(text.len(), |c| c.0);
            total += self.piece(&text[from..to], model)?;
            i = end;
        }
        self.chars = chars;
        Ok(total)
    }

    fn piece(&mut self, piece: &str, model: &impl Model) -> Result<u32, String> {
        if let Some(&n) = self.pieces.get(piece) {
            return Ok(n);
        }
        let table = byte_chars();
        self.mapped.clear();
        self.mapped.extend(piece.bytes().map(|b| table[b as usize]));
        let n = model
            .tokenize(&self.mapped)
            .map_err(|e| format!("tokenizing: {e}"))?
            .len() as u32;
        if self.pieces.len() >= CACHE_PIECES {
            self.pieces.clear();
        }
        self.pieces.insert(piece.to_string(), n);
        Ok(n)
    }
}

/// Where the piece starting at `i` ends: the first of the pattern's alternatives that matches.
fn next_piece(cs: &[(usize, char, Class)], i: usize) -> usize {
    let n = cs.len();
    let (c, k) = (cs[i].1, cs[i].2);
    let class = |j: usize| cs[j].2;
    let run = |mut j: usize, of: Class| {
        while j < n && cs[j].2 == of {
            j += 1;
        }
        j
    };
    // (?i:'s|'t|'re|'ve|'m|'ll|'d)
    if c == '\'' && i + 1 < n {
        let c1 = cs[i + 1].1;
        if matches!(c1, 's' | 'S' | 'ſ' | 't' | 'T' | 'm' | 'M' | 'd' | 'D') {
            return i + 2;
        }
        if i + 2 < n {
            let c2 = cs[i + 2].1.to_ascii_lowercase();
            match (c1.to_ascii_lowercase(), c2) {
                ('r', 'e') | ('v', 'e') | ('l', 'l') => return i + 3,
                _ => {}
            }
        }
    }
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if k == Class::Letter {
        return run(i, Class::Letter);
    }
    if !crlf(c) && k != Class::Number && i + 1 < n && class(i + 1) == Class::Letter {
        return run(i + 1, Class::Letter);
    }
    // \p{N}
    if k == Class::Number {
        return i + 1;
    }
    // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
    let j = if c == ' ' { i + 1 } else { i };
    if j < n && class(j) == Class::Other {
        let mut end = run(j, Class::Other);
        while end < n && crlf(cs[end].1) {
            end += 1;
        }
        return end;
    }
    // Whitespace from here on.
    let w = run(i, Class::Space);
    // \s*[\r\n]+ : through the run's last line break.
    if let Some(last) = (i..w).rev().find(|&j| crlf(cs[j].1)) {
        return last + 1;
    }
    // \s+(?!\S) : the whole run at the end, else all but its last character.
    if w == n {
        return w;
    }
    if w - i >= 2 {
        return w - 1;
    }
    // \s+
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both(counter: &Counter, texts: &[&str]) -> (Vec<u32>, Vec<u32>) {
        (
            counter.count_batch(texts).unwrap(),
            counter.count_whole(texts).unwrap(),
        )
    }

    #[test]
    fn the_scanner_counts_what_the_tokenizer_counts_on_awkward_text() {
        let counter = Counter::qwen25().unwrap();
        assert!(counter.is_fast());
        let texts = [
            "",
            " ",
            "\n",
            "Hello world",
            "  two spaces,\tthen a tab\t\tand\n\n\nlines \n \n  ",
            "It's, I'M, we're, they've, I'll, he'd, 'S 'ſ 'LL 'Re",
            "x = 12345.678 + (3/4) - 2^{10} \\frac{a}{b} $$\\sum_{i=1}^n i$$",
            "café naïve Ünïcödé — “quotes” … ½ ² ٣ 四 𝔸 e\u{301} ﬁ",
            "tabs\t\n\r\nwindows\r\nline\rbreaks  \u{a0}nbsp \u{3000}ideographic",
            "end with spaces   ",
            "!!!\n\n?? ...\n",
            "mixed<|im_end|>special",
            "<b>not a special</b> <tool_call>",
            "中文字符和English混合123",
            "🙂 emoji 👍🏽 zwj 👨‍👩‍👧",
            "'quote at start and 'x",
            "a'b 's's",
        ];
        let (fast, whole) = both(&counter, &texts);
        for ((t, f), w) in texts.iter().zip(&fast).zip(&whole) {
            assert_eq!(f, w, "{t:?}");
        }
    }

    #[test]
    fn random_text_from_an_awkward_alphabet_counts_the_same() {
        let counter = Counter::qwen25().unwrap();
        let alphabet: Vec<char> =
            "ab Z9 0\t\n\r'sStLl.,!?(){}\\$^_-+=é漢٣½\u{a0}\u{2003}\u{301}🙂<|>mdrve"
                .chars()
                .collect();
        let mut rng = crate::diversity::Rng::new(7);
        let texts: Vec<String> = (0..2000)
            .map(|_| {
                let len = (rng.next_u64() % 40) as usize;
                (0..len)
                    .map(|_| alphabet[(rng.next_u64() % alphabet.len() as u64) as usize])
                    .collect()
            })
            .collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let (fast, whole) = both(&counter, &refs);
        for ((t, f), w) in refs.iter().zip(&fast).zip(&whole) {
            assert_eq!(f, w, "{t:?}");
        }
    }

    #[test]
    fn another_tokenizer_is_run_whole() {
        let json: serde_json::Value = serde_json::from_slice(QWEN25).unwrap();
        let mut changed = json.clone();
        changed["normalizer"] = serde_json::json!({"type": "NFKC"});
        let counter = Counter::from_bytes(&serde_json::to_vec(&changed).unwrap()).unwrap();
        assert!(!counter.is_fast());
        assert_eq!(
            counter.count_batch(&["ﬁ ½"]).unwrap(),
            counter.count_whole(&["ﬁ ½"]).unwrap()
        );
    }
}
