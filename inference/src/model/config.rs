//! Hyper-parameters of a llama-family model, read from GGUF metadata.

use crate::error::{Error, Result};
use crate::gguf::{Gguf, meta_err};

/// Upper bounds that keep a hostile GGUF from asking for absurd allocations.
const MAX_DIM: usize = 1 << 16;
const MAX_LAYERS: usize = 512;
const MAX_HEADS: usize = 1024;

/// Shape and numerics of a llama-family transformer.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// `general.architecture`.
    pub architecture: String,
    /// Hidden size.
    pub embedding_length: usize,
    /// Number of transformer blocks.
    pub block_count: usize,
    /// Query heads.
    pub head_count: usize,
    /// Key/value heads (grouped-query attention).
    pub head_count_kv: usize,
    /// Size of one head.
    pub head_dim: usize,
    /// Feed-forward inner size.
    pub feed_forward_length: usize,
    /// Rotary embedding dimensions per head.
    pub rope_dimension_count: usize,
    /// Rotary embedding base.
    pub rope_freq_base: f32,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f32,
    /// Context length the model was trained for.
    pub context_length: usize,
    /// Vocabulary size (rows of the embedding matrix).
    pub vocab_size: usize,
}

impl LlamaConfig {
    /// Reads and validates the `llama.*` keys (or `<arch>.*` for the same family).
    pub fn from_gguf(g: &Gguf) -> Result<Self> {
        let arch = g.str("general.architecture")?.to_owned();
        if !super::SUPPORTED_ARCHITECTURES.contains(&arch.as_str()) {
            return Err(Error::UnsupportedArchitecture(arch));
        }
        let k = |s: &str| format!("{arch}.{s}");
        let embedding_length = g.usize(&k("embedding_length"))?;
        let block_count = g.usize(&k("block_count"))?;
        let head_count = g.usize(&k("attention.head_count"))?;
        let head_count_kv = g
            .opt_usize(&k("attention.head_count_kv"))?
            .unwrap_or(head_count);
        let feed_forward_length = g.usize(&k("feed_forward_length"))?;
        let context_length = g.usize(&k("context_length"))?;
        let rms_norm_eps = g.f32(&k("attention.layer_norm_rms_epsilon"))?;
        let rope_freq_base = g.opt_f32(&k("rope.freq_base"))?.unwrap_or(10_000.0);
        if let Some(v) = g.get(&k("rope.scaling.type")) {
            let kind = match v {
                candle_core::quantized::gguf_file::Value::String(s) => s.as_str(),
                _ => "?",
            };
            if kind != "none" {
                return Err(meta_err(
                    &k("rope.scaling.type"),
                    &format!("rope scaling `{kind}` is not supported"),
                ));
            }
        }
        let bounded = |key: &str, v: usize, max: usize| {
            if v == 0 || v > max {
                Err(meta_err(&k(key), &format!("{v} is outside 1..={max}")))
            } else {
                Ok(())
            }
        };
        bounded("embedding_length", embedding_length, MAX_DIM)?;
        bounded("block_count", block_count, MAX_LAYERS)?;
        bounded("attention.head_count", head_count, MAX_HEADS)?;
        bounded("attention.head_count_kv", head_count_kv, head_count)?;
        bounded("feed_forward_length", feed_forward_length, 4 * MAX_DIM)?;
        bounded("context_length", context_length, 1 << 24)?;
        if !embedding_length.is_multiple_of(head_count) || !head_count.is_multiple_of(head_count_kv)
        {
            return Err(meta_err(
                &k("attention.head_count"),
                &format!(
                    "{embedding_length} hidden units cannot be split into {head_count} heads with {head_count_kv} key/value heads"
                ),
            ));
        }
        let head_dim = embedding_length / head_count;
        let rope_dimension_count = g.opt_usize(&k("rope.dimension_count"))?.unwrap_or(head_dim);
        if rope_dimension_count > head_dim || !rope_dimension_count.is_multiple_of(2) {
            return Err(meta_err(
                &k("rope.dimension_count"),
                &format!("{rope_dimension_count} does not fit a head of {head_dim}"),
            ));
        }
        if !(rms_norm_eps > 0.0 && rms_norm_eps < 1.0) {
            return Err(meta_err(
                &k("attention.layer_norm_rms_epsilon"),
                &format!("{rms_norm_eps} is outside (0, 1)"),
            ));
        }
        if rope_freq_base.is_nan() || rope_freq_base <= 1.0 {
            return Err(meta_err(
                &k("rope.freq_base"),
                &format!("{rope_freq_base} must be above 1"),
            ));
        }
        let emb = g.tensor("token_embd.weight")?;
        let [vocab_size, cols] = emb.dims[..] else {
            return Err(crate::gguf::tensor_err(
                "token_embd.weight",
                "is not a matrix",
            ));
        };
        if cols != embedding_length {
            return Err(crate::gguf::tensor_err(
                "token_embd.weight",
                &format!("has {cols} columns, expected {embedding_length}"),
            ));
        }
        Ok(Self {
            architecture: arch,
            embedding_length,
            block_count,
            head_count,
            head_count_kv,
            head_dim,
            feed_forward_length,
            rope_dimension_count,
            rope_freq_base,
            rms_norm_eps,
            context_length,
            vocab_size,
        })
    }

    /// Key/value width (all kv heads).
    pub fn kv_dim(&self) -> usize {
        self.head_count_kv * self.head_dim
    }
}
