//! Pre-tokenization: splitting text into the pieces BPE runs on.
//!
//! Follows llama.cpp (`llama-vocab.cpp`, `unicode.cpp`): a vocabulary's
//! `tokenizer.ggml.pre` names a list of regular expressions applied in turn.
//! Each one splits every piece the previous ones made into its matches and
//! the unmatched text between them; BPE then runs on each final piece alone.
//!
//! The two stages every supported type uses are hand-written, as llama.cpp
//! does: GPT-2's regex (`unicode_regex_split_custom_gpt2`) and "each digit
//! alone". A backtracking regex engine spends most of an `encode` call on
//! the GPT-2 regex's lookahead; the hand-written splitter is several times
//! faster and is checked against the regex in the tests below.

use std::sync::OnceLock;

use fancy_regex::Regex;

use crate::error::{Error, Result};

/// GPT-2's pre-tokenizer regex. llama.cpp writes it without the final `|\s+`
/// and keeps unmatched text as pieces, which splits text the same way.
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// Every digit alone (`LLAMA_VOCAB_PRE_TYPE_SMOLLM`, `_STARCODER`, ...).
const DIGITS: &str = r"\p{N}";

/// The regex lists, keyed by the `tokenizer.ggml.pre` values that use them
/// (names as llama.cpp's `llama_vocab::impl::load` maps them).
const PRE_TYPES: &[(&[&str], &[&str])] = &[
    // LLAMA_VOCAB_PRE_TYPE_SMOLLM and the types sharing its regexes.
    (
        &[
            "smollm",
            "starcoder",
            "refact",
            "command-r",
            "codeshell",
            "exaone",
        ],
        &[DIGITS, GPT2],
    ),
    // LLAMA_VOCAB_PRE_TYPE_GPT2 and the types sharing its regex.
    (&["gpt-2", "gpt2", "phi-2", "mpt", "olmo", "jais"], &[GPT2]),
    // LLAMA_VOCAB_PRE_TYPE_DEFAULT: llama.cpp's fallback for BPE vocabularies
    // without a `pre` type.
    (
        &["default"],
        &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"],
    ),
];

/// One splitting step.
enum Stage {
    /// GPT-2's regex, hand-written.
    Gpt2,
    /// `\p{N}`: every numeric character alone.
    EachDigit,
    /// Any other regex.
    Regex(Regex),
}

/// A compiled pre-tokenizer.
pub(crate) struct PreTokenizer {
    name: String,
    stages: Vec<Stage>,
}

impl PreTokenizer {
    /// The pre-tokenizer llama.cpp uses for `pre`.
    pub(crate) fn for_pre_type(pre: &str) -> Result<Self> {
        let patterns = PRE_TYPES
            .iter()
            .find(|(names, _)| names.contains(&pre))
            .map(|(_, patterns)| *patterns)
            .ok_or_else(|| {
                let known: Vec<&str> = PRE_TYPES
                    .iter()
                    .flat_map(|(n, _)| n.iter().copied())
                    .collect();
                Error::Tokenizer(format!(
                    "pre-tokenizer `{pre}` is not supported (supported: {})",
                    known.join(", ")
                ))
            })?;
        let stages = patterns
            .iter()
            .map(|&p| match p {
                GPT2 => Ok(Stage::Gpt2),
                DIGITS => Ok(Stage::EachDigit),
                _ => Regex::new(p).map(Stage::Regex).map_err(|e| {
                    Error::Tokenizer(format!("pre-tokenizer regex `{p}` does not compile: {e}"))
                }),
            })
            .collect::<Result<Vec<_>>>()?;
        if stages.iter().any(|s| matches!(s, Stage::Gpt2)) {
            // Build the letter table now rather than in the first `encode`.
            letter_ranges();
        }
        Ok(Self {
            name: pre.to_owned(),
            stages,
        })
    }

    /// The `tokenizer.ggml.pre` value this was built for.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Calls `f` on each piece of `text`, in order. Pieces are non-empty and
    /// concatenate to `text`.
    pub(crate) fn for_each_piece<'t>(
        &self,
        text: &'t str,
        f: &mut dyn FnMut(&'t str),
    ) -> Result<()> {
        let mut chars = Vec::new();
        self.split(0, text, &mut chars, f)
    }

    fn split<'t>(
        &self,
        stage: usize,
        text: &'t str,
        chars: &mut Vec<(usize, char)>,
        f: &mut dyn FnMut(&'t str),
    ) -> Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        let Some(kind) = self.stages.get(stage) else {
            f(text);
            return Ok(());
        };
        let next = stage + 1;
        match kind {
            Stage::Gpt2 => {
                // Ranges come from `gpt2_split` on `text` itself and lie on
                // character boundaries.
                let mut ranges = Vec::new();
                gpt2_split(text, chars, &mut |a, b| ranges.push((a, b)));
                for (a, b) in ranges {
                    if let Some(piece) = text.get(a..b) {
                        self.split(next, piece, chars, f)?;
                    }
                }
            }
            Stage::EachDigit => {
                let mut last = 0;
                for (i, c) in text.char_indices().filter(|(_, c)| c.is_numeric()) {
                    let end = i + c.len_utf8();
                    self.split(next, &text[last..i], chars, f)?;
                    self.split(next, &text[i..end], chars, f)?;
                    last = end;
                }
                self.split(next, &text[last..], chars, f)?;
            }
            Stage::Regex(re) => {
                let mut last = 0;
                for m in re.find_iter(text) {
                    // An error means the backtracking limit was hit, which
                    // these fixed patterns do not reach; still, report it.
                    let m =
                        m.map_err(|e| Error::Tokenizer(format!("pre-tokenizer failed: {e}")))?;
                    if m.start() == m.end() {
                        continue;
                    }
                    // Match offsets are character boundaries of `text`.
                    self.split(next, &text[last..m.start()], chars, f)?;
                    self.split(next, m.as_str(), chars, f)?;
                    last = m.end();
                }
                self.split(next, &text[last..], chars, f)?;
            }
        }
        Ok(())
    }
}

/// What GPT-2's regex sees in a character.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Letter,
    Number,
    Space,
    Other,
    /// Past the end of the text.
    End,
}

fn class_of(c: Option<char>) -> Class {
    match c {
        None => Class::End,
        Some(c) if c.is_ascii() => match c {
            'a'..='z' | 'A'..='Z' => Class::Letter,
            '0'..='9' => Class::Number,
            '\t' | '\n' | '\x0B' | '\x0C' | '\r' | ' ' => Class::Space,
            _ => Class::Other,
        },
        // `\s` is Unicode White_Space, as `char::is_whitespace`; `\p{N}` is
        // general category N, as `char::is_numeric`.
        Some(c) if c.is_whitespace() => Class::Space,
        Some(c) if is_letter(c) => Class::Letter,
        Some(c) if c.is_numeric() => Class::Number,
        Some(_) => Class::Other,
    }
}

/// Whether `c` is in general category L (`\p{L}`).
fn is_letter(c: char) -> bool {
    let ranges = letter_ranges();
    let c = c as u32;
    let i = ranges.partition_point(|&(_, hi)| hi < c);
    ranges.get(i).is_some_and(|&(lo, _)| lo <= c)
}

/// The code point ranges of `\p{L}`, taken once from the regex engine's
/// Unicode tables (the standard library has no general-category lookup).
/// Letters are assigned only in planes 0 to 3.
fn letter_ranges() -> &'static [(u32, u32)] {
    static RANGES: OnceLock<Vec<(u32, u32)>> = OnceLock::new();
    RANGES.get_or_init(|| {
        let all: String = (0..0x4_0000u32).filter_map(char::from_u32).collect();
        let mut ranges = Vec::new();
        // A fixed, simple pattern over a fixed text: it compiles and cannot
        // hit the backtracking limit (it runs on the DFA engine).
        if let Ok(re) = Regex::new(r"\p{L}+") {
            for m in re.find_iter(&all).flatten() {
                let s = m.as_str();
                if let (Some(a), Some(b)) = (s.chars().next(), s.chars().next_back()) {
                    ranges.push((a as u32, b as u32));
                }
            }
        }
        ranges
    })
}

/// GPT-2's regex,
/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`,
/// as llama.cpp's `unicode_regex_split_custom_gpt2` implements it. Calls
/// `emit` with the byte range of each piece.
fn gpt2_split(text: &str, chars: &mut Vec<(usize, char)>, emit: &mut dyn FnMut(usize, usize)) {
    chars.clear();
    chars.extend(text.char_indices());
    let n = chars.len();
    let at = |i: usize| chars.get(i).map(|&(_, c)| c);
    let class = |i: usize| class_of(at(i));
    let offset = |i: usize| chars.get(i).map_or(text.len(), |&(o, _)| o);
    let mut start = 0;
    let mut pos = 0;
    let mut piece = |end: usize, start: &mut usize| {
        if end > *start {
            emit(offset(*start), offset(end));
        }
        *start = end;
    };
    while pos < n {
        let c = at(pos);
        // 's|'t|'re|'ve|'m|'ll|'d
        if c == Some('\'') {
            match (at(pos + 1), at(pos + 2)) {
                (Some('s' | 't' | 'm' | 'd'), _) => {
                    pos += 2;
                    piece(pos, &mut start);
                    continue;
                }
                (Some('r'), Some('e')) | (Some('v'), Some('e')) | (Some('l'), Some('l')) => {
                    pos += 3;
                    piece(pos, &mut start);
                    continue;
                }
                _ => {}
            }
        }
        let space = usize::from(c == Some(' '));
        // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`
        let run = class(pos + space);
        if matches!(run, Class::Letter | Class::Number | Class::Other) {
            pos += space;
            while class(pos) == run {
                pos += 1;
            }
            piece(pos, &mut start);
            continue;
        }
        let mut spaces = 0;
        while class(pos + spaces) == Class::Space {
            spaces += 1;
        }
        if spaces > 1 && pos + spaces < n {
            // `\s+(?!\S)`: leave the last space to the word that follows.
            pos += spaces - 1;
        } else if spaces > 0 {
            // `\s+`
            pos += spaces;
        } else {
            pos += 1;
        }
        piece(pos, &mut start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(pre: &str, text: &str) -> Vec<String> {
        let p = PreTokenizer::for_pre_type(pre).expect("known pre type");
        let mut out = Vec::new();
        p.for_each_piece(text, &mut |s| out.push(s.to_owned()))
            .expect("split");
        out
    }

    #[test]
    fn smollm_splits_digits_then_gpt2() {
        assert_eq!(
            pieces("smollm", "It's 3.14 and 2024!"),
            [
                "It", "'s", " ", "3", ".", "1", "4", " and", " ", "2", "0", "2", "4", "!"
            ]
        );
        // GPT-2 alone keeps digit runs together, with their leading space.
        assert_eq!(
            pieces("gpt2", "It's 3.14 and 2024!"),
            ["It", "'s", " 3", ".", "14", " and", " 2024", "!"]
        );
    }

    #[test]
    fn whitespace_runs_leave_one_space_for_the_next_word() {
        assert_eq!(
            pieces("smollm", "a   b  \n\tc   "),
            ["a", "  ", " b", "  \n", "\t", "c", "   "]
        );
        assert_eq!(pieces("smollm", "   "), ["   "]);
        assert!(pieces("smollm", "").is_empty());
    }

    #[test]
    fn pieces_cover_the_text() {
        let text = "Ünïcödé 漢字 🤖🔐 ok\r\n<|im_start|> x**2  # y";
        for pre in ["smollm", "gpt2", "default"] {
            let got = pieces(pre, text);
            assert!(got.iter().all(|p| !p.is_empty()));
            assert_eq!(got.concat(), text, "{pre}");
        }
    }

    /// The hand-written GPT-2 splitter agrees with the regex.
    #[test]
    fn gpt2_splitter_matches_the_regex() {
        let re = Regex::new(GPT2).expect("GPT-2 regex");
        let samples = [
            "Hello world",
            "  leading and trailing  ",
            "It's they're we've I'm you'll he'd 'x ''s",
            " 'll 's",
            "a\n\nb\n \t c \r\n",
            "x**2  # square\n\n\tindented",
            "Ünïcödé 漢字 emoji 🤖🔐 ok",
            "Привет мир, γειά σου κόσμε, שלום עולם, مرحبا بالعالم",
            "नमस्ते दुनिया",
            "ⅫⅣ ½ ٣٤ x²",
            "\u{a0}nbsp\u{3000}ideo\u{2028}",
            "trailing space ",
            " ",
            "   ",
            "!!! ??? ... --",
            "\u{1F600}\u{200D}\u{1F469}",
            "𝐀𝐁 𠀀𠀁",
        ];
        let mut chars = Vec::new();
        for text in samples {
            let mut ours = Vec::new();
            gpt2_split(text, &mut chars, &mut |a, b| ours.push(&text[a..b]));
            let theirs: Vec<&str> = re
                .find_iter(text)
                .map(|m| m.expect("regex").as_str())
                .collect();
            assert_eq!(ours, theirs, "{text:?}");
        }
    }

    #[test]
    fn letter_table_is_general_category_l() {
        for c in [
            'a', 'Z', 'é', 'ß', 'Ж', 'ש', 'م', '漢', 'ᄀ', '𝐀', '𠀀', 'ǅ', 'ʰ',
        ] {
            assert!(is_letter(c), "{c}");
        }
        // Combining marks, numbers and symbols are not letters.
        for c in ['\u{94d}', '\u{301}', 'Ⅻ', '½', '٣', '🤖', '€', ' ', '_'] {
            assert!(!is_letter(c), "{c:?}");
        }
    }

    #[test]
    fn unknown_pre_type_is_refused() {
        let err = PreTokenizer::for_pre_type("llama-bpe")
            .err()
            .expect("refused");
        assert!(
            matches!(&err, Error::Tokenizer(m) if m.contains("`llama-bpe`") && m.contains("smollm")),
            "{err}"
        );
    }
}
