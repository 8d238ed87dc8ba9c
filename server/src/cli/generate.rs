//! `confidant generate`: one-shot generation from the command line.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use confidant_inference::engine::{EngineConfig, Event, GenerationRequest, ProcessorFactory};
use confidant_inference::model::{BackendKind, LoadOptions};
use confidant_inference::sampling::SamplingParams;
use confidant_inference::template::ChatMessage;
use confidant_server::api::prompt;

/// Arguments of `confidant generate`.
#[derive(clap::Args)]
pub struct GenerateArgs {
    /// GGUF model file.
    #[arg(long, env = "CONFIDANT_MODEL")]
    model: PathBuf,
    /// Prompt text.
    #[arg(long)]
    prompt: String,
    /// Tokens to generate at most.
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// Sampling temperature (0: greedy).
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    /// Nucleus sampling threshold.
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Top-k sampling (0: off).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Seed (same seed, same output).
    #[arg(long)]
    seed: Option<u64>,
    /// Wrap the prompt as a user message in the model's chat template.
    #[arg(long)]
    chat: bool,
    /// Print one JSON object with the text and speeds.
    #[arg(long)]
    json: bool,
    /// Keep generating past end-of-generation tokens (benchmarks).
    #[arg(long)]
    ignore_eos: bool,
    /// Compute threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Backend: auto, native or candle.
    #[arg(long, default_value = "auto")]
    backend: BackendKind,
    /// Watermark the output with this key (`confidant watermark keygen`).
    #[arg(long)]
    watermark_key: Option<PathBuf>,
    #[command(flatten)]
    watermark: super::watermark::ParamArgs,
}

/// Runs one generation.
pub fn run(a: GenerateArgs) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(&a.model)
        .with_context(|| format!("cannot read model {}", a.model.display()))?;
    let opts = LoadOptions {
        backend: a.backend,
        threads: a.threads,
        max_context: None,
    };
    let watermark = match &a.watermark_key {
        Some(k) => Some(super::watermark::load(k, &a.watermark)?),
        None => None,
    };
    let factory = watermark
        .clone()
        .map(|w| std::sync::Arc::new(w) as std::sync::Arc<dyn ProcessorFactory>);
    let loaded = confidant_server::loader::load_engine(
        bytes.into(),
        &opts,
        EngineConfig::default(),
        None,
        factory,
    )?;
    let engine = loaded.engine;
    let tokens = if a.chat {
        let msgs = [ChatMessage {
            role: "user".into(),
            content: a.prompt.clone(),
        }];
        prompt::chat_tokens(&engine, &msgs)
            .map_err(|e| anyhow::anyhow!(e.message))?
            .1
    } else {
        prompt::completion_tokens(&engine, &a.prompt).map_err(|e| anyhow::anyhow!(e.message))?
    };
    let req = GenerationRequest {
        prompt: tokens,
        max_tokens: a.max_tokens,
        params: SamplingParams {
            temperature: a.temperature,
            top_p: a.top_p,
            top_k: a.top_k,
            seed: a.seed,
            ..SamplingParams::default()
        },
        stop: vec![],
        ignore_eos: a.ignore_eos,
    };
    let mut rx = engine.submit(req)?;
    let mut text = String::new();
    let mut out = std::io::stdout().lock();
    while let Some(ev) = rx.blocking_recv() {
        match ev {
            Event::Delta { text: t, .. } => {
                if !a.json {
                    out.write_all(t.as_bytes())?;
                    out.flush()?;
                }
                text.push_str(&t);
            }
            Event::Done(f) => {
                let prefill = f.prefill.as_secs_f64();
                let decode = f.decode.as_secs_f64();
                let prefill_tps = f.usage.prompt_tokens as f64 / prefill.max(1e-9);
                // The first token comes out of the prompt pass; decode speed
                // counts the tokens after it.
                let decode_tps =
                    f.usage.completion_tokens.saturating_sub(1) as f64 / decode.max(1e-9);
                if a.json {
                    let v = serde_json::json!({
                        "text": text,
                        "prompt_tokens": f.usage.prompt_tokens,
                        "completion_tokens": f.usage.completion_tokens,
                        "prefill_tokens_per_s": prefill_tps,
                        "decode_tokens_per_s": decode_tps,
                        "finish_reason": f.reason,
                        "backend": engine.backend(),
                        "threads": engine.threads(),
                        "watermark": watermark.as_ref().map(|w| w.public_params()),
                    });
                    writeln!(out, "{v}")?;
                } else {
                    writeln!(out)?;
                    eprintln!(
                        "[{} prompt tokens at {prefill_tps:.1} tok/s, {} generated at {decode_tps:.1} tok/s]",
                        f.usage.prompt_tokens, f.usage.completion_tokens
                    );
                }
                return Ok(ExitCode::SUCCESS);
            }
            Event::Error(e) => return Err(e.into()),
        }
    }
    anyhow::bail!("the engine stopped")
}
