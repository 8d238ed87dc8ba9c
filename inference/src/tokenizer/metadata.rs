//! Reading the vocabulary out of GGUF metadata.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;

use super::bpe::{Merge, MergeMap};
use crate::error::{Error, Result};
use crate::gguf::{Gguf, meta_err};

/// Parses `"left right"` merges into id pairs ranked by position.
///
/// A merge naming a text that is not in the vocabulary is an error (as in
/// Hugging Face `tokenizers`). A merge that involves a special token is
/// dropped: special tokens are never produced by merges.
pub(super) fn parse_merges(
    merges: &[&str],
    bpe_ids: &HashMap<&str, u32>,
    token_to_id: &HashMap<String, u32>,
) -> Result<MergeMap> {
    let mut out = MergeMap::with_capacity_and_hasher(merges.len(), Default::default());
    let mut joined = String::new();
    for (rank, m) in merges.iter().enumerate() {
        // As llama.cpp: split at the first space after the first byte.
        // A space byte is always a character boundary.
        let parts = m
            .bytes()
            .skip(1)
            .position(|b| b == b' ')
            .and_then(|i| Some((m.get(..i + 1)?, m.get(i + 2..)?)));
        let Some((left, right)) = parts else {
            return Err(Error::Tokenizer(format!(
                "merge {rank} `{m}` is not two tokens separated by a space"
            )));
        };
        joined.clear();
        joined.push_str(left);
        joined.push_str(right);
        let ids = (
            bpe_ids.get(left),
            bpe_ids.get(right),
            bpe_ids.get(joined.as_str()),
        );
        let (Some(&l), Some(&r), Some(&result)) = ids else {
            if let Some(missing) = [left, right, joined.as_str()]
                .into_iter()
                .find(|t| !token_to_id.contains_key(*t))
            {
                return Err(Error::Tokenizer(format!(
                    "merge {rank} `{m}`: `{missing}` is not in the vocabulary"
                )));
            }
            continue;
        };
        // rank < MAX_MERGES fits in u32. Of duplicate merges the first
        // (lowest) rank counts, as in llama.cpp.
        out.entry((l, r)).or_insert(Merge {
            rank: rank as u32,
            result,
        });
    }
    Ok(out)
}

/// A string array from the metadata, `None` if the key is absent.
pub(super) fn string_array<'a>(
    gguf: &'a Gguf,
    key: &str,
    max: usize,
) -> Result<Option<Vec<&'a str>>> {
    let Some(v) = gguf.get(key) else {
        return Ok(None);
    };
    let Value::Array(items) = v else {
        return Err(meta_err(key, "is not an array"));
    };
    if items.len() > max {
        return Err(meta_err(
            key,
            &format!("has {} entries, more than the limit of {max}", items.len()),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) => Ok(s.as_str()),
            _ => Err(meta_err(key, &format!("entry {i} is not a string"))),
        })
        .collect::<Result<_>>()
        .map(Some)
}

/// An integer array from the metadata, `None` if the key is absent.
pub(super) fn int_array(gguf: &Gguf, key: &str, max: usize) -> Result<Option<Vec<i64>>> {
    let Some(v) = gguf.get(key) else {
        return Ok(None);
    };
    let Value::Array(items) = v else {
        return Err(meta_err(key, "is not an array"));
    };
    if items.len() > max {
        return Err(meta_err(
            key,
            &format!("has {} entries, more than the limit of {max}", items.len()),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let x = match *item {
                Value::U8(x) => Some(i64::from(x)),
                Value::I8(x) => Some(i64::from(x)),
                Value::U16(x) => Some(i64::from(x)),
                Value::I16(x) => Some(i64::from(x)),
                Value::U32(x) => Some(i64::from(x)),
                Value::I32(x) => Some(i64::from(x)),
                Value::U64(x) => i64::try_from(x).ok(),
                Value::I64(x) => Some(x),
                _ => None,
            };
            x.ok_or_else(|| meta_err(key, &format!("entry {i} is not an integer")))
        })
        .collect::<Result<_>>()
        .map(Some)
}
