//! Loading a model buffer into a running engine.

use std::sync::Arc;

use bytes::Bytes;
use confidant_inference::Gguf;
use confidant_inference::engine::{Engine, EngineConfig, ProcessorFactory};
use confidant_inference::model::{LoadOptions, Model};
use confidant_inference::template::ChatTemplate;
use confidant_inference::tokenizer::Tokenizer;

/// A loaded engine and what describes it.
pub struct Loaded {
    /// The running engine.
    pub engine: Engine,
    /// The model id clients use.
    pub model_id: String,
}

/// Parses a GGUF buffer, loads the network, tokenizer and chat template,
/// and starts the engine. `model_id` overrides the id derived from the
/// GGUF's `general.name`.
pub fn load_engine(
    bytes: Bytes,
    opts: &LoadOptions,
    engine_cfg: EngineConfig,
    model_id: Option<String>,
    factory: Option<Arc<dyn ProcessorFactory>>,
) -> anyhow::Result<Loaded> {
    let g = Gguf::parse(bytes)?;
    let model = Model::load(&g, opts)?;
    let tokenizer = Arc::new(Tokenizer::from_gguf(&g)?);
    let template = ChatTemplate::from_gguf(&g, &tokenizer)?;
    let model_id = model_id.unwrap_or_else(|| derive_id(&g));
    tracing::info!(
        model = %model_id,
        backend = model.backend_name(),
        threads = model.threads(),
        context = model.context_length(),
        kernels = ?confidant_inference::kernels::isa(),
        "model loaded"
    );
    let engine = Engine::start(model, tokenizer, template, engine_cfg, factory)?;
    Ok(Loaded { engine, model_id })
}

/// `general.name` with anything but `[A-Za-z0-9._-]` turned into `-`.
fn derive_id(g: &Gguf) -> String {
    let name = g.str("general.name").unwrap_or("model");
    let id: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    if id.is_empty() { "model".into() } else { id }
}
