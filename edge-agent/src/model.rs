//! The model on the device: the encrypted container decrypted into memory
//! (never to disk) and loaded into the inference engine; one generation
//! per sensor-driven prompt.

use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use confidant_inference::Gguf;
use confidant_inference::engine::{Engine, EngineConfig, GenerationRequest};
use confidant_inference::model::{LoadOptions, Model};
use confidant_inference::sampling::SamplingParams;
use confidant_inference::template::{ChatMessage, ChatTemplate};
use confidant_inference::tokenizer::Tokenizer;
use confidant_keys::{DataKey, Decryptor, Header, KeyId};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::sensor::Reading;

/// Largest model the agent decrypts into memory.
pub const MAX_MODEL_LEN: u64 = 8 << 30;

/// Plaintext weights, wiped when the last reference goes.
struct Plain(Zeroizing<Vec<u8>>);

impl AsRef<[u8]> for Plain {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Decrypts the container at `path` with `key` into memory. Returns the
/// plaintext, its key id and its SHA-256 (checked against the header).
pub fn decrypt(path: &Path, key: &DataKey) -> Result<(Bytes, KeyId, [u8; 32])> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::file(path, e))?;
    let header = Header::read_from(&mut f)?;
    let len = header.plaintext_len();
    if len > MAX_MODEL_LEN {
        return Err(Error::file(
            path,
            format!("model is {len} bytes, the agent takes at most {MAX_MODEL_LEN}"),
        ));
    }
    let key_id = header.key_id().clone();
    let dec = Decryptor::new(header, key)?;
    let mut out = Zeroizing::new(vec![0u8; len as usize]);
    let threads = std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN);
    let verified = dec.decrypt_into(&f, &mut out, threads)?;
    Ok((Bytes::from_owner(Plain(out)), key_id, *verified.sha256()))
}

/// How the agent runs the model.
#[derive(Debug, Clone)]
pub struct InferenceSettings {
    /// Compute threads (0: one per core).
    pub threads: usize,
    /// Context cap (bounds the KV cache).
    pub max_context: usize,
    /// Tokens generated per record.
    pub max_tokens: usize,
    /// System prompt.
    pub system: String,
    /// User prompt; `{readings}` is replaced by the readings.
    pub prompt: String,
}

impl Default for InferenceSettings {
    fn default() -> Self {
        InferenceSettings {
            threads: 1,
            max_context: 512,
            max_tokens: 24,
            system: "You watch an environmental sensor. Answer in one short sentence.".into(),
            prompt: "Readings: {readings}. Is anything unusual?".into(),
        }
    }
}

/// A loaded model.
pub struct LocalModel {
    engine: Engine,
    template: Option<Arc<ChatTemplate>>,
    tokenizer: Arc<Tokenizer>,
    digest: [u8; 32],
    settings: InferenceSettings,
}

impl std::fmt::Debug for LocalModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalModel")
            .field("digest", &hex::encode(self.digest))
            .finish_non_exhaustive()
    }
}

/// One generation's result.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The prompt as rendered.
    pub prompt: String,
    /// The text.
    pub output: String,
    /// Tokens generated.
    pub completion_tokens: usize,
    /// Prefill plus decode.
    pub latency_ms: u64,
}

/// The readings as the prompt shows them.
pub fn describe(r: &Reading) -> String {
    let mut s = format!(
        "temperature {:.2} °C, pressure {:.1} hPa",
        r.temperature_c,
        r.pressure_pa / 100.0
    );
    if let Some(h) = r.humidity_pct {
        s.push_str(&format!(", humidity {h:.1} %RH"));
    }
    s
}

impl LocalModel {
    /// Loads the GGUF `bytes` (whose SHA-256 is `digest`) with one
    /// sequence at a time and a KV budget for `max_context` tokens.
    pub fn load(bytes: Bytes, digest: [u8; 32], settings: InferenceSettings) -> Result<Self> {
        let g = Gguf::parse(bytes)?;
        let opts = LoadOptions {
            threads: settings.threads,
            max_context: Some(settings.max_context),
            ..LoadOptions::default()
        };
        let model = Model::load(&g, &opts)?;
        let kv = model
            .kv_bytes_per_token()
            .saturating_mul(model.context_length());
        let tokenizer = Arc::new(Tokenizer::from_gguf(&g)?);
        let template = ChatTemplate::from_gguf(&g, &tokenizer)?;
        let engine = Engine::start(
            model,
            tokenizer.clone(),
            template,
            EngineConfig {
                max_batch: 1,
                max_queue: 4,
                prefill_chunk: 256,
                kv_budget_bytes: kv.max(1),
            },
            None,
        )?;
        Ok(LocalModel {
            template: engine.template().cloned(),
            engine,
            tokenizer,
            digest,
            settings,
        })
    }

    /// SHA-256 of the plaintext model.
    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }

    /// Renders the prompt for `reading`.
    pub fn prompt(&self, reading: &Reading) -> Result<String> {
        let user = self
            .settings
            .prompt
            .replace("{readings}", &describe(reading));
        match &self.template {
            Some(t) => Ok(t.render(
                &[
                    ChatMessage::new("system", self.settings.system.clone()),
                    ChatMessage::new("user", user),
                ],
                true,
            )?),
            None => Ok(format!("{}\n{user}\n", self.settings.system)),
        }
    }

    /// Greedy generation of at most `max_tokens` for `reading`.
    pub fn infer(&self, reading: &Reading) -> Result<Generated> {
        let prompt = self.prompt(reading)?;
        let mut ids = self.tokenizer.encode(&prompt, true)?;
        if self.tokenizer.add_bos()
            && let Some(b) = self.tokenizer.bos_id()
            && ids.first() != Some(&b)
        {
            ids.insert(0, b);
        }
        let start = Instant::now();
        let (output, finish) = self.engine.generate_blocking(GenerationRequest {
            prompt: ids,
            max_tokens: self.settings.max_tokens,
            params: SamplingParams::greedy(),
            stop: Vec::new(),
            ignore_eos: false,
        })?;
        Ok(Generated {
            prompt,
            output,
            completion_tokens: finish.usage.completion_tokens,
            latency_ms: start.elapsed().as_millis().min(u128::from(u64::MAX)) as u64,
        })
    }
}
