//! Byte-level BPE tokenizer built from GGUF metadata.
//!
//! Everything comes from the `tokenizer.ggml.*` keys of the model file; there
//! is no `tokenizer.json`. The behaviour is llama.cpp's, which the reference
//! tests check id for id:
//!
//! 1. Special tokens written literally in the input are cut out first
//!    (longest first). Control and unknown tokens only when the caller asks
//!    for it (`parse_special`); user-defined tokens always, as in llama.cpp
//!    and Hugging Face `tokenizers`.
//! 2. The remaining text is pre-tokenized by the regex list that
//!    `tokenizer.ggml.pre` names, as in llama.cpp.
//! 3. Each piece is encoded with the merges, starting from its bytes. A
//!    byte the vocabulary has no token for is dropped, as llama.cpp does
//!    (SmolLM2 lacks 21 of them: some C0 controls and bytes that never occur
//!    in UTF-8, but also 0xF1 and 0xF2, the lead bytes of U+40000..U+BFFFF).
//!
//! No prefix space is added (`Hello` is the token `Hello`, not `ĠHello`).
//! BOS is never added by [`Tokenizer::encode`]; [`Tokenizer::add_bos`] says
//! whether the model wants it.

mod bpe;
mod metadata;
mod pretokenize;
mod special;
mod stream;
#[cfg(test)]
pub(crate) mod test_gguf;

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;

use crate::error::{Error, Result};
use crate::gguf::{Gguf, meta_err};

use bpe::{BYTE_TO_CHAR, Bpe, Scratch, byte_level_decode};
use metadata::{int_array, parse_merges, string_array};
use pretokenize::PreTokenizer;
use special::{Fragment, SpecialMatcher};
pub use stream::StreamDecoder;

/// Largest vocabulary accepted (the largest real ones have ~262k tokens).
pub const MAX_VOCAB: usize = 1 << 20;
/// Largest number of merges accepted.
pub const MAX_MERGES: usize = 1 << 21;
/// Longest token text accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;
/// Longest text [`Tokenizer::encode`] accepts, in bytes.
pub const MAX_TEXT_BYTES: usize = 64 << 20;

const KEY_MODEL: &str = "tokenizer.ggml.model";
const KEY_PRE: &str = "tokenizer.ggml.pre";
const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
const KEY_TYPES: &str = "tokenizer.ggml.token_type";
const KEY_MERGES: &str = "tokenizer.ggml.merges";

/// Texts of tokens that end generation when they are control tokens; the
/// list llama.cpp uses to find end-of-generation tokens.
const EOG_TEXTS: &[&str] = &[
    "<|im_end|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end|>",
    "<end_of_turn>",
    "<|end_of_text|>",
    "<EOT>",
];

/// What a token is, from `tokenizer.ggml.token_type` (llama.cpp's
/// `llama_token_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenKind {
    /// Ordinary text (type 1, and 0 "undefined").
    Normal,
    /// The unknown token (type 2).
    Unknown,
    /// A control token such as `<|im_start|>` (type 3).
    Control,
    /// A token added by the model's authors that is matched literally in
    /// text, never produced by merges (type 4).
    UserDefined,
    /// An unused slot (type 5).
    Unused,
    /// A raw byte (type 6).
    Byte,
}

impl TokenKind {
    fn from_gguf(t: i64) -> Option<Self> {
        Some(match t {
            0 | 1 => Self::Normal,
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            _ => return None,
        })
    }

    /// Byte-level text that merges may produce.
    fn is_bpe(self) -> bool {
        matches!(self, Self::Normal | Self::Unused | Self::Byte)
    }

    /// Control and unknown tokens: parsed from text only on request, left
    /// out of decoded text on request.
    fn is_special(self) -> bool {
        matches!(self, Self::Control | Self::Unknown)
    }
}

/// A byte-level BPE tokenizer. Immutable once built: share it in an `Arc`.
pub struct Tokenizer {
    texts: Vec<String>,
    kinds: Vec<TokenKind>,
    /// The bytes each token stands for, concatenated; token `i` is
    /// `bytes[offsets[i]..offsets[i + 1]]`.
    bytes: Vec<u8>,
    offsets: Vec<usize>,
    token_to_id: HashMap<String, u32>,
    bpe: Bpe,
    pre: PreTokenizer,
    specials: SpecialMatcher,
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    eom: Option<u32>,
    unk: Option<u32>,
    pad: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    eog: Vec<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("pre", &self.pre.name())
            .field("vocab_size", &self.texts.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("eog", &self.eog)
            .finish_non_exhaustive()
    }
}

/// The `tokenizer.ggml.*` metadata, read but not yet checked.
struct Spec<'a> {
    pre: &'a str,
    tokens: Vec<&'a str>,
    types: Option<Vec<i64>>,
    merges: Vec<&'a str>,
    bos: Option<usize>,
    eos: Option<usize>,
    eot: Option<usize>,
    eom: Option<usize>,
    unk: Option<usize>,
    pad: Option<usize>,
    add_bos: bool,
    add_eos: bool,
}

impl Tokenizer {
    /// Builds the tokenizer from a model's `tokenizer.ggml.*` metadata.
    ///
    /// Refuses anything but byte-level BPE (`tokenizer.ggml.model = "gpt2"`)
    /// with a `tokenizer.ggml.pre` type listed in the pre-tokenizer table,
    /// and checks the vocabulary: sizes bounded, every byte has a token,
    /// every merge names tokens of the vocabulary, every special id in range.
    /// A missing `pre` means llama.cpp's `default`.
    pub fn from_gguf(gguf: &Gguf) -> Result<Self> {
        let model = gguf.str(KEY_MODEL)?;
        if model != "gpt2" {
            return Err(Error::Tokenizer(format!(
                "tokenizer model `{model}` is not supported; only byte-level BPE (`gpt2`) is"
            )));
        }
        let pre = match gguf.get(KEY_PRE) {
            None => "default",
            Some(Value::String(s)) => s.as_str(),
            Some(_) => return Err(meta_err(KEY_PRE, "is not a string")),
        };
        let tokens = string_array(gguf, KEY_TOKENS, MAX_VOCAB)?
            .ok_or_else(|| meta_err(KEY_TOKENS, "is missing"))?;
        let merges = string_array(gguf, KEY_MERGES, MAX_MERGES)?
            .ok_or_else(|| meta_err(KEY_MERGES, "is missing"))?;
        let types = int_array(gguf, KEY_TYPES, MAX_VOCAB)?;
        let id = |name: &str| gguf.opt_usize(&format!("tokenizer.ggml.{name}_token_id"));
        let flag = |name: &str| gguf.opt_bool(&format!("tokenizer.ggml.add_{name}_token"));
        Self::build(Spec {
            pre,
            tokens,
            types,
            merges,
            bos: id("bos")?,
            eos: id("eos")?,
            eot: id("eot")?,
            eom: id("eom")?,
            unk: id("unknown")?,
            pad: id("padding")?,
            // llama.cpp's defaults for BPE vocabularies.
            add_bos: flag("bos")?.unwrap_or(false),
            add_eos: flag("eos")?.unwrap_or(false),
        })
    }

    fn build(spec: Spec<'_>) -> Result<Self> {
        let n = spec.tokens.len();
        if n == 0 {
            return Err(Error::Tokenizer("the vocabulary is empty".into()));
        }
        if n > MAX_VOCAB {
            return Err(Error::Tokenizer(format!(
                "the vocabulary has {n} tokens, more than the limit of {MAX_VOCAB}"
            )));
        }
        if let Some((i, t)) = spec
            .tokens
            .iter()
            .enumerate()
            .find(|(_, t)| t.len() > MAX_TOKEN_BYTES)
        {
            return Err(Error::Tokenizer(format!(
                "token {i} is {} bytes long, more than the limit of {MAX_TOKEN_BYTES}",
                t.len()
            )));
        }
        let kinds: Vec<TokenKind> = match &spec.types {
            None => vec![TokenKind::Normal; n],
            Some(types) if types.len() != n => {
                return Err(Error::Tokenizer(format!(
                    "{KEY_TYPES} has {} entries for {n} tokens",
                    types.len()
                )));
            }
            Some(types) => types
                .iter()
                .enumerate()
                .map(|(i, &t)| {
                    TokenKind::from_gguf(t).ok_or_else(|| {
                        Error::Tokenizer(format!("token {i} has unknown token type {t}"))
                    })
                })
                .collect::<Result<_>>()?,
        };

        // Ids fit in u32: n <= MAX_VOCAB. Of equal texts the last id wins,
        // as in llama.cpp.
        let mut token_to_id = HashMap::with_capacity(n);
        let mut bpe_ids: HashMap<&str, u32> = HashMap::with_capacity(n);
        for (i, (&text, &kind)) in spec.tokens.iter().zip(&kinds).enumerate() {
            token_to_id.insert(text.to_owned(), i as u32);
            if kind.is_bpe() {
                bpe_ids.insert(text, i as u32);
            }
        }

        // Real vocabularies lack some bytes (SmolLM2 has no token for 0x04
        // or 0xFF, among others); llama.cpp drops such bytes from the input,
        // and so does the merge loop. Printable ASCII must be there.
        let mut byte_ids = [bpe::NO_TOKEN; 256];
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            let c = BYTE_TO_CHAR[b];
            match bpe_ids.get(c.encode_utf8(&mut [0; 4]) as &str) {
                Some(&id) => *slot = id,
                None if (0x20..0x7F).contains(&b) => {
                    return Err(Error::Tokenizer(format!(
                        "no token for byte 0x{b:02x} (`{c}`): not a byte-level BPE vocabulary"
                    )));
                }
                None => {}
            }
        }

        let merges = parse_merges(&spec.merges, &bpe_ids, &token_to_id)?;

        let check_id = |what: &str, id: Option<usize>| -> Result<Option<u32>> {
            match id {
                Some(i) if i >= n => Err(Error::Tokenizer(format!(
                    "{what} token id {i} is out of range (the vocabulary has {n} tokens)"
                ))),
                // In range, so it fits in u32.
                other => Ok(other.map(|i| i as u32)),
            }
        };
        let bos = check_id("BOS", spec.bos)?;
        let eos = check_id("EOS", spec.eos)?;
        let eot = check_id("EOT", spec.eot)?;
        let eom = check_id("EOM", spec.eom)?;
        let unk = check_id("unknown", spec.unk)?;
        let pad = check_id("padding", spec.pad)?;

        let mut bytes = Vec::new();
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0);
        for (&text, &kind) in spec.tokens.iter().zip(&kinds) {
            if kind.is_bpe() {
                bytes.extend_from_slice(&byte_level_decode(text));
            } else {
                bytes.extend_from_slice(text.as_bytes());
            }
            offsets.push(bytes.len());
        }

        let special_list: Vec<(u32, &str, bool)> = spec
            .tokens
            .iter()
            .zip(&kinds)
            .enumerate()
            .filter_map(|(i, (&text, &kind))| match kind {
                TokenKind::Control | TokenKind::Unknown => Some((i as u32, text, true)),
                TokenKind::UserDefined => Some((i as u32, text, false)),
                _ => None,
            })
            .collect();
        let specials = SpecialMatcher::new(&special_list);

        let mut eog: Vec<u32> = [eos, eot, eom].into_iter().flatten().collect();
        for text in EOG_TEXTS {
            if let Some(&id) = token_to_id.get(*text)
                && kinds[id as usize] == TokenKind::Control
            {
                eog.push(id);
            }
        }
        eog.sort_unstable();
        eog.dedup();

        Ok(Self {
            texts: spec.tokens.iter().map(|t| (*t).to_owned()).collect(),
            kinds,
            bytes,
            offsets,
            token_to_id,
            bpe: Bpe::new(byte_ids, merges),
            pre: PreTokenizer::for_pre_type(spec.pre)?,
            specials,
            bos,
            eos,
            eot,
            eom,
            unk,
            pad,
            add_bos: spec.add_bos,
            add_eos: spec.add_eos,
            eog,
        })
    }

    /// Tokenizes `text`. No BOS is added.
    ///
    /// With `parse_special`, control tokens written in the text
    /// (`<|im_start|>`) become their ids; without it they are plain text.
    /// This is how a chat prompt (rendered by the template, special tokens
    /// parsed) is kept apart from user content (not parsed), when they are
    /// tokenized separately.
    pub fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<u32>> {
        if text.len() > MAX_TEXT_BYTES {
            return Err(Error::Tokenizer(format!(
                "text of {} bytes is longer than the limit of {MAX_TEXT_BYTES}",
                text.len()
            )));
        }
        let mut out = Vec::with_capacity(text.len() / 4 + 1);
        let mut scratch = Scratch::default();
        for fragment in self.specials.partition(text, parse_special) {
            match fragment {
                Fragment::Special(id) => out.push(id),
                Fragment::Text(t) => self.pre.for_each_piece(t, &mut |piece| {
                    self.bpe
                        .encode_piece(piece.as_bytes(), &mut scratch, &mut out)
                })?,
            }
        }
        Ok(out)
    }

    /// Turns ids back into text. With `skip_special`, control and unknown
    /// tokens are left out. Bytes that do not form valid UTF-8 become U+FFFD.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        let mut buf = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            let kind = self.token_kind(id).ok_or_else(|| self.out_of_range(id))?;
            if skip_special && kind.is_special() {
                continue;
            }
            buf.extend_from_slice(self.token_bytes(id).unwrap_or_default());
        }
        Ok(match String::from_utf8(buf) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    fn out_of_range(&self, id: u32) -> Error {
        Error::Tokenizer(format!(
            "token id {id} is out of range (the vocabulary has {} tokens)",
            self.texts.len()
        ))
    }

    /// The bytes a token stands for: byte-level decoded for ordinary tokens,
    /// the text itself for control, unknown and user-defined tokens.
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        let i = usize::try_from(id).ok()?;
        let start = *self.offsets.get(i)?;
        let end = *self.offsets.get(i + 1)?;
        self.bytes.get(start..end)
    }

    /// The id of a token, given its text as the vocabulary stores it
    /// (byte-level form for ordinary tokens: `ĠHello`).
    pub fn token_to_id(&self, text: &str) -> Option<u32> {
        self.token_to_id.get(text).copied()
    }

    /// A token's text as the vocabulary stores it.
    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        self.texts
            .get(usize::try_from(id).ok()?)
            .map(String::as_str)
    }

    /// A token's kind, `None` for an id outside the vocabulary.
    pub fn token_kind(&self, id: u32) -> Option<TokenKind> {
        self.kinds.get(usize::try_from(id).ok()?).copied()
    }

    /// Whether a token is a control or unknown token: never produced from
    /// text unless special tokens are parsed, left out of decoded text when
    /// special tokens are skipped.
    pub fn is_special(&self, id: u32) -> bool {
        self.token_kind(id).is_some_and(TokenKind::is_special)
    }

    /// Number of tokens.
    pub fn vocab_size(&self) -> usize {
        self.texts.len()
    }

    /// Beginning-of-sequence id (`tokenizer.ggml.bos_token_id`).
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// End-of-sequence id (`tokenizer.ggml.eos_token_id`).
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// End-of-turn id (`tokenizer.ggml.eot_token_id`), if the model has one.
    pub fn eot_id(&self) -> Option<u32> {
        self.eot
    }

    /// End-of-message id (`tokenizer.ggml.eom_token_id`), if the model has one.
    pub fn eom_id(&self) -> Option<u32> {
        self.eom
    }

    /// Unknown-token id (`tokenizer.ggml.unknown_token_id`).
    pub fn unk_id(&self) -> Option<u32> {
        self.unk
    }

    /// Padding id (`tokenizer.ggml.padding_token_id`).
    pub fn pad_id(&self) -> Option<u32> {
        self.pad
    }

    /// Whether the model expects BOS before a prompt
    /// (`tokenizer.ggml.add_bos_token`, default false).
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether the model expects EOS after a prompt
    /// (`tokenizer.ggml.add_eos_token`, default false).
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }

    /// Ids that end generation, sorted: the EOS, EOT and EOM ids from the
    /// metadata, and every control token whose text is one that llama.cpp
    /// treats as end of generation (`<|im_end|>`, `<|endoftext|>`,
    /// `<|eot_id|>`, `<|eom_id|>`, `<|end|>`, `<end_of_turn>`,
    /// `<|end_of_text|>`, `<EOT>`). Chat models end a turn with one token and
    /// a document with another; either stops generation.
    pub fn eog_ids(&self) -> &[u32] {
        &self.eog
    }

    /// Whether `id` ends generation.
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }

    /// The `tokenizer.ggml.pre` type in use.
    pub fn pre_type(&self) -> &str {
        self.pre.name()
    }
}

#[cfg(test)]
mod tests;
