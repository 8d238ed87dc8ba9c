//! Pre-tokenization: splitting text into the pieces BPE runs on.
//!
//! Follows llama.cpp (`llama-vocab.cpp`, `unicode.cpp`): a vocabulary's
//! `tokenizer.ggml.pre` names a list of regular expressions applied in turn.
//! Each one splits every piece the previous ones made into its matches and
//! the unmatched text between them; BPE then runs on each final piece alone.

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

/// A compiled pre-tokenizer.
pub(crate) struct PreTokenizer {
    name: String,
    stages: Vec<Regex>,
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
            .map(|p| {
                Regex::new(p).map_err(|e| {
                    Error::Tokenizer(format!("pre-tokenizer regex `{p}` does not compile: {e}"))
                })
            })
            .collect::<Result<_>>()?;
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
        self.split(0, text, f)
    }

    fn split<'t>(&self, stage: usize, text: &'t str, f: &mut dyn FnMut(&'t str)) -> Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        let Some(re) = self.stages.get(stage) else {
            f(text);
            return Ok(());
        };
        let mut last = 0;
        for m in re.find_iter(text) {
            // The regexes are fixed and simple; an error here means the
            // backtracking limit was hit, which these patterns cannot reach
            // in practice, but an error is still reported, not hidden.
            let m = m.map_err(|e| Error::Tokenizer(format!("pre-tokenizer failed: {e}")))?;
            if m.start() == m.end() {
                continue;
            }
            self.split(stage + 1, &text[last..m.start()], f)?;
            self.split(stage + 1, m.as_str(), f)?;
            last = m.end();
        }
        self.split(stage + 1, &text[last..], f)
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
