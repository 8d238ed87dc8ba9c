//! Confidant's inference engine.
//!
//! Models are loaded from an in-memory GGUF buffer (never a path: encrypted
//! models are decrypted into locked memory only). The tokenizer and the chat
//! template come from the GGUF metadata.
#![deny(unsafe_code)]

pub mod engine;
pub mod error;
pub mod gguf;
pub mod kernels;
pub mod model;
pub mod quant;
pub mod sampling;
pub mod template;
pub mod tokenizer;
pub mod watermark;

pub use error::{Error, Result};
pub use gguf::Gguf;
pub use template::{ChatMessage, ChatTemplate};
pub use tokenizer::{StreamDecoder, TokenKind, Tokenizer};
