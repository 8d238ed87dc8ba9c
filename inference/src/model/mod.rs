//! Model architectures and the backends that run them.
//!
//! The family list is explicit: [`SUPPORTED_ARCHITECTURES`]. Two backends
//! run it: the native one (SIMD kernels on the GGUF bytes in place, batched
//! across sequences) for the quantization types it has kernels for, and
//! candle-transformers' quantized llama for everything else and as the
//! reference the native one is tested against.

mod candle;
mod config;
mod native;

use bytes::Bytes;

pub use self::candle::{CandleLlama, CandleSeq};
pub use config::LlamaConfig;
pub use native::{AttentionOrder, KvCache, NativeItem, NativeLlama, kv_bytes_per_token};

use crate::error::{Error, Result};
use crate::gguf::Gguf;

/// Architectures (`general.architecture`) this engine runs.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &["llama"];

/// Which backend to run a model on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Native when every weight has a native kernel, else candle.
    #[default]
    Auto,
    /// Native kernels only (fails to load otherwise).
    Native,
    /// candle-transformers' quantized llama.
    Candle,
}

impl std::str::FromStr for BackendKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "native" => Ok(Self::Native),
            "candle" => Ok(Self::Candle),
            other => Err(Error::InvalidParameter(format!(
                "backend `{other}` (expected auto, native or candle)"
            ))),
        }
    }
}

/// How to load a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Backend choice.
    pub backend: BackendKind,
    /// Compute threads (0: one per available core).
    pub threads: usize,
    /// Cap on the context length (the model's own length if larger is never used).
    pub max_context: Option<usize>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            backend: BackendKind::Auto,
            threads: 0,
            max_context: None,
        }
    }
}

enum Backend {
    Native(Box<NativeLlama>),
    Candle(Box<CandleLlama>),
}

/// A loaded network: configuration, weights and the thread pool it runs on.
pub struct Model {
    config: LlamaConfig,
    backend: Backend,
    pool: rayon::ThreadPool,
    context: usize,
}

/// One sequence's state (its KV cache) on the model's backend.
pub enum Sequence {
    /// Native backend cache.
    Native(KvCache),
    /// candle backend state.
    Candle(Box<CandleSeq>),
}

impl Sequence {
    /// Tokens already processed.
    pub fn len(&self) -> usize {
        match self {
            Sequence::Native(c) => c.len(),
            Sequence::Candle(c) => c.len(),
        }
    }

    /// Whether nothing has been processed yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Maximum tokens this sequence can hold.
    pub fn capacity(&self) -> usize {
        match self {
            Sequence::Native(c) => c.capacity(),
            Sequence::Candle(c) => c.capacity(),
        }
    }
}

/// Tokens to append to one sequence in a forward pass.
pub struct Step<'a> {
    /// Tokens to append.
    pub tokens: &'a [u32],
    /// The sequence.
    pub seq: &'a mut Sequence,
    /// Whether the last token's logits are needed.
    pub want_logits: bool,
    /// Whether these are prompt tokens (true) or generated ones (false).
    pub prompt: bool,
}

impl Model {
    /// Loads the network from a parsed GGUF.
    pub fn load(g: &Gguf, opts: &LoadOptions) -> Result<Self> {
        let config = LlamaConfig::from_gguf(g)?;
        let backend = match opts.backend {
            BackendKind::Native => Backend::Native(Box::new(NativeLlama::load(g, &config)?)),
            BackendKind::Candle => Backend::Candle(Box::new(CandleLlama::load(g)?)),
            BackendKind::Auto => match NativeLlama::load(g, &config) {
                Ok(n) => Backend::Native(Box::new(n)),
                Err(Error::Tensor { name, problem }) => {
                    tracing::info!(tensor = %name, %problem, "native kernels do not cover this model; using candle");
                    Backend::Candle(Box::new(CandleLlama::load(g)?))
                }
                Err(e) => return Err(e),
            },
        };
        let threads = if opts.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            opts.threads
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("confidant-compute-{i}"))
            .build()
            .map_err(|e| Error::InvalidParameter(format!("thread pool: {e}")))?;
        let mut context = config.context_length;
        if let Backend::Candle(_) = backend {
            context = context.min(CandleLlama::max_context());
        }
        if let Some(max) = opts.max_context {
            context = context.min(max.max(1));
        }
        Ok(Self {
            config,
            backend,
            pool,
            context,
        })
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// Context length in use (model's own, capped by options and backend).
    pub fn context_length(&self) -> usize {
        self.context
    }

    /// Name of the backend in use.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Native(_) => "native",
            Backend::Candle(_) => "candle",
        }
    }

    /// Compute threads.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Memory one cached token takes (native backend; an estimate for candle).
    pub fn kv_bytes_per_token(&self) -> usize {
        kv_bytes_per_token(&self.config)
    }

    /// A new, empty sequence able to hold `capacity` tokens (capped by the context).
    pub fn new_sequence(&self, capacity: usize) -> Sequence {
        let cap = capacity.min(self.context);
        match &self.backend {
            Backend::Native(n) => Sequence::Native(n.new_cache(cap)),
            Backend::Candle(c) => Sequence::Candle(Box::new(c.new_seq(cap))),
        }
    }

    /// Appends each step's tokens to its sequence, all in one batched pass
    /// where the backend can, and returns logits where asked.
    pub fn forward(&self, steps: &mut [Step<'_>]) -> Result<Vec<Option<Vec<f32>>>> {
        let mut buf = Vec::new();
        let rows = self.forward_into(steps, &mut buf)?;
        let v = self.config.vocab_size;
        Ok(rows
            .into_iter()
            .map(|r| r.map(|r| buf[r * v..(r + 1) * v].to_vec()))
            .collect())
    }

    /// Like [`Model::forward`], but writes the requested logits into `logits`
    /// (one row of `vocab_size` per step that asked, reusing the buffer's
    /// allocation) and returns each step's row.
    pub fn forward_into(
        &self,
        steps: &mut [Step<'_>],
        logits: &mut Vec<f32>,
    ) -> Result<Vec<Option<usize>>> {
        for s in steps.iter() {
            if s.seq.len() + s.tokens.len() > s.seq.capacity() {
                return Err(Error::ContextLength {
                    context: s.seq.capacity(),
                    prompt: s.seq.len(),
                    requested: s.tokens.len(),
                });
            }
            if let Some(&t) = s
                .tokens
                .iter()
                .find(|&&t| t as usize >= self.config.vocab_size)
            {
                return Err(Error::Tokenizer(format!("token id {t} is out of range")));
            }
        }
        self.pool.install(|| match &self.backend {
            Backend::Native(n) => {
                let mut items = Vec::with_capacity(steps.len());
                for s in steps.iter_mut() {
                    let Sequence::Native(cache) = &mut *s.seq else {
                        return Err(Error::InvalidParameter(
                            "sequence belongs to another backend".into(),
                        ));
                    };
                    items.push(NativeItem {
                        tokens: s.tokens,
                        cache,
                        want_logits: s.want_logits,
                        prompt: s.prompt,
                    });
                }
                n.forward(&mut items, logits)
            }
            Backend::Candle(c) => {
                logits.clear();
                let mut rows = Vec::with_capacity(steps.len());
                for s in steps.iter_mut() {
                    let Sequence::Candle(seq) = &mut *s.seq else {
                        return Err(Error::InvalidParameter(
                            "sequence belongs to another backend".into(),
                        ));
                    };
                    if s.tokens.is_empty() {
                        rows.push(None);
                        continue;
                    }
                    let l = c.forward(seq, s.tokens)?;
                    if s.want_logits {
                        rows.push(Some(logits.len() / self.config.vocab_size));
                        logits.extend_from_slice(&l);
                    } else {
                        rows.push(None);
                    }
                }
                Ok(rows)
            }
        })
    }
}

/// Parses a GGUF buffer and loads its network.
pub fn load(bytes: Bytes, opts: &LoadOptions) -> Result<(Gguf, Model)> {
    let g = Gguf::parse(bytes)?;
    let m = Model::load(&g, opts)?;
    Ok((g, m))
}
