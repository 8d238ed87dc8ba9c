//! The reference backend: candle-transformers' quantized llama.
//!
//! It runs any quantization type candle supports (K-quants included) and is
//! the yardstick the native backend is tested against. It processes one
//! sequence at a time and copies the weights out of the GGUF buffer into
//! candle tensors.

use std::io::Cursor;

use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::{MAX_SEQ_LEN, ModelWeights};

use crate::error::Result;
use crate::gguf::Gguf;

/// The candle backend.
pub struct CandleLlama {
    weights: ModelWeights,
}

/// One sequence's state in the candle backend (its own KV cache).
pub struct CandleSeq {
    weights: ModelWeights,
    len: usize,
    cap: usize,
}

impl CandleSeq {
    /// Tokens already processed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing has been processed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maximum tokens.
    pub fn capacity(&self) -> usize {
        self.cap
    }
}

impl CandleLlama {
    /// Loads all tensors through candle.
    pub fn load(g: &Gguf) -> Result<Self> {
        let content =
            candle_core::quantized::gguf_file::Content::read(&mut Cursor::new(&g.bytes()[..]))?;
        let weights =
            ModelWeights::from_gguf(content, &mut Cursor::new(&g.bytes()[..]), &Device::Cpu)?;
        Ok(Self { weights })
    }

    /// candle's rotary table stops at this many positions.
    pub fn max_context() -> usize {
        MAX_SEQ_LEN
    }

    /// A fresh sequence (weights are shared, the KV cache is its own).
    pub fn new_seq(&self, capacity: usize) -> CandleSeq {
        let mut weights = self.weights.clone();
        weights.clear_kv_cache();
        CandleSeq {
            weights,
            len: 0,
            cap: capacity.min(MAX_SEQ_LEN),
        }
    }

    /// Appends tokens and returns the last token's logits.
    pub fn forward(&self, seq: &mut CandleSeq, tokens: &[u32]) -> Result<Vec<f32>> {
        let x = Tensor::new(tokens, &Device::Cpu)?.unsqueeze(0)?;
        let logits = seq.weights.forward(&x, seq.len)?;
        seq.len += tokens.len();
        Ok(logits
            .squeeze(0)?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1()?)
    }
}
