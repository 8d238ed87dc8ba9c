//! Test helper: small GGUF files with metadata only, and a toy byte-level
//! vocabulary to put in them.

use bytes::Bytes;

use super::bpe::BYTE_TO_CHAR;
use crate::gguf::Gguf;

/// A metadata value to write.
#[derive(Clone, Debug)]
pub(crate) enum Meta {
    U32(u32),
    I32(i32),
    Bool(bool),
    Str(String),
    Strs(Vec<String>),
    I32s(Vec<i32>),
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A GGUF v3 file with these key-value pairs and no tensors.
pub(crate) fn write(kvs: &[(&str, Meta)]) -> Bytes {
    let mut out = b"GGUF".to_vec();
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
    for (key, value) in kvs {
        put_str(&mut out, key);
        match value {
            Meta::U32(x) => {
                out.extend_from_slice(&4u32.to_le_bytes());
                out.extend_from_slice(&x.to_le_bytes());
            }
            Meta::I32(x) => {
                out.extend_from_slice(&5u32.to_le_bytes());
                out.extend_from_slice(&x.to_le_bytes());
            }
            Meta::Bool(x) => {
                out.extend_from_slice(&7u32.to_le_bytes());
                out.push(u8::from(*x));
            }
            Meta::Str(s) => {
                out.extend_from_slice(&8u32.to_le_bytes());
                put_str(&mut out, s);
            }
            Meta::Strs(v) => {
                out.extend_from_slice(&9u32.to_le_bytes());
                out.extend_from_slice(&8u32.to_le_bytes());
                out.extend_from_slice(&(v.len() as u64).to_le_bytes());
                for s in v {
                    put_str(&mut out, s);
                }
            }
            Meta::I32s(v) => {
                out.extend_from_slice(&9u32.to_le_bytes());
                out.extend_from_slice(&5u32.to_le_bytes());
                out.extend_from_slice(&(v.len() as u64).to_le_bytes());
                for x in v {
                    out.extend_from_slice(&x.to_le_bytes());
                }
            }
        }
    }
    Bytes::from(out)
}

/// Control tokens of the toy vocabulary, ids 0, 1, 2.
pub(crate) const CONTROL: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
/// A user-defined token of the toy vocabulary, id 3.
pub(crate) const USER_DEFINED: &str = "<think>";
/// Id of the first byte token (byte 0); byte `b` is `FIRST_BYTE + b`.
pub(crate) const FIRST_BYTE: u32 = 4;

/// Metadata of a toy SmolLM-like vocabulary: the control tokens, one
/// user-defined token, the 256 byte tokens and then one token per merge
/// (merges in byte-level form, e.g. `"Ġ t"`).
pub(crate) fn toy_metadata(merges: &[&str]) -> Vec<(&'static str, Meta)> {
    let mut tokens: Vec<String> = CONTROL.iter().map(|s| (*s).to_owned()).collect();
    tokens.push(USER_DEFINED.to_owned());
    tokens.extend(BYTE_TO_CHAR.iter().map(|c| c.to_string()));
    for m in merges {
        let joined = m.replacen(' ', "", 1);
        if !tokens.contains(&joined) {
            tokens.push(joined);
        }
    }
    let mut types = vec![3, 3, 3, 4];
    types.resize(tokens.len(), 1);
    vec![
        ("general.architecture", Meta::Str("llama".into())),
        ("tokenizer.ggml.model", Meta::Str("gpt2".into())),
        ("tokenizer.ggml.pre", Meta::Str("smollm".into())),
        ("tokenizer.ggml.tokens", Meta::Strs(tokens)),
        ("tokenizer.ggml.token_type", Meta::I32s(types)),
        (
            "tokenizer.ggml.merges",
            Meta::Strs(merges.iter().map(|m| (*m).to_owned()).collect()),
        ),
        ("tokenizer.ggml.bos_token_id", Meta::U32(1)),
        ("tokenizer.ggml.eos_token_id", Meta::U32(2)),
        ("tokenizer.ggml.add_bos_token", Meta::Bool(false)),
    ]
}

/// Replaces (or adds) one key.
pub(crate) fn with(
    mut kvs: Vec<(&'static str, Meta)>,
    key: &'static str,
    value: Meta,
) -> Vec<(&'static str, Meta)> {
    kvs.retain(|(k, _)| *k != key);
    kvs.push((key, value));
    kvs
}

/// Parses the written file.
pub(crate) fn gguf(kvs: &[(&str, Meta)]) -> Gguf {
    Gguf::parse(write(kvs)).expect("a well-formed test GGUF")
}
