//! The inference crate's one error type.

/// Everything that can go wrong while loading a model or generating text.
///
/// Variants carry the context a user needs to act; none carries model bytes,
/// prompt text or other request content.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The GGUF container could not be parsed.
    #[error("malformed GGUF: {0}")]
    Gguf(String),
    /// A metadata key the model needs is missing or has the wrong type.
    #[error("GGUF metadata `{key}`: {problem}")]
    Metadata { key: String, problem: String },
    /// The model's `general.architecture` is not one we run.
    #[error("unsupported model architecture `{0}` (supported: {supported})", supported = crate::model::SUPPORTED_ARCHITECTURES.join(", "))]
    UnsupportedArchitecture(String),
    /// A tensor is missing, has an unexpected shape, or a type we cannot run.
    #[error("tensor `{name}`: {problem}")]
    Tensor { name: String, problem: String },
    /// The tokenizer metadata is inconsistent or a token id is out of range.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The chat template failed to compile or render.
    #[error("chat template: {0}")]
    Template(String),
    /// Sampling parameters out of range.
    #[error("invalid sampling parameter: {0}")]
    InvalidParameter(String),
    /// The prompt and the requested completion do not fit in the context.
    #[error(
        "this model's maximum context length is {context} tokens, but the prompt has {prompt} tokens and {requested} more were requested"
    )]
    ContextLength {
        context: usize,
        prompt: usize,
        requested: usize,
    },
    /// The prompt is empty after tokenization.
    #[error("the prompt is empty")]
    EmptyPrompt,
    /// The request queue is full; try again later.
    #[error("the engine queue is full ({0} requests waiting)")]
    QueueFull(usize),
    /// The engine has shut down.
    #[error("the engine has stopped")]
    EngineStopped,
    /// A forward pass failed; the sequences in it were ended.
    #[error("forward pass failed: {0}")]
    Forward(String),
    /// Watermark parameters out of range, or a key that cannot be read or
    /// written. Never carries key material.
    #[error("watermark: {0}")]
    Watermark(String),
    /// An error inside candle (reference backend).
    #[error("candle: {0}")]
    Candle(String),
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Candle(e.to_string())
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
