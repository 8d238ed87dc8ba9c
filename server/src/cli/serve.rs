//! `confidant serve`: the OpenAI-compatible server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use confidant_inference::engine::ProcessorFactory;
use confidant_inference::model::{BackendKind, LoadOptions};
use confidant_server::config::ServeConfig;
use confidant_server::state::AppState;

/// Flags and `CONFIDANT_*` variables; each overrides the config file.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "CONFIDANT_CONFIG")]
    config: Option<PathBuf>,
    /// GGUF model file.
    #[arg(long, env = "CONFIDANT_MODEL")]
    model: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "CONFIDANT_LISTEN")]
    listen: Option<SocketAddr>,
    /// Model id clients use.
    #[arg(long, env = "CONFIDANT_MODEL_ID")]
    model_id: Option<String>,
    /// Backend: auto, native or candle.
    #[arg(long, env = "CONFIDANT_BACKEND")]
    backend: Option<BackendKind>,
    /// Compute threads (0: one per core).
    #[arg(long, env = "CONFIDANT_THREADS")]
    threads: Option<usize>,
    /// Cap on the context length.
    #[arg(long, env = "CONFIDANT_MAX_CONTEXT")]
    max_context: Option<usize>,
    /// Sequences generating at once.
    #[arg(long, env = "CONFIDANT_MAX_BATCH")]
    max_batch: Option<usize>,
    /// Requests allowed to wait; more get 503.
    #[arg(long, env = "CONFIDANT_MAX_QUEUE")]
    max_queue: Option<usize>,
    /// Directory for what the server generates itself (the enforced watermark key).
    #[arg(long, env = "CONFIDANT_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Watermark every output with this key (`confidant watermark keygen`).
    #[arg(long, env = "CONFIDANT_WATERMARK_KEY")]
    watermark_key: Option<PathBuf>,
    /// Refuse to serve without a watermark (generates a key in the state directory if none is given).
    #[arg(long, env = "CONFIDANT_WATERMARK_ENFORCED")]
    watermark_enforced: bool,
    #[command(flatten)]
    watermark: super::watermark::ParamArgs,
}

impl ServeArgs {
    fn config(&self) -> anyhow::Result<ServeConfig> {
        let mut c = match &self.config {
            Some(p) => ServeConfig::from_file(p)?,
            None => ServeConfig::default(),
        };
        if let Some(v) = &self.model {
            c.model = Some(v.clone());
        }
        if let Some(v) = self.listen {
            c.listen = v;
        }
        if let Some(v) = &self.model_id {
            c.model_id = Some(v.clone());
        }
        if let Some(v) = self.backend {
            c.backend = v;
        }
        if let Some(v) = self.threads {
            c.threads = v;
        }
        if let Some(v) = self.max_context {
            c.max_context = Some(v);
        }
        if let Some(v) = self.max_batch {
            c.engine.max_batch = v;
        }
        if let Some(v) = self.max_queue {
            c.engine.max_queue = v;
        }
        if let Some(v) = &self.state_dir {
            c.state_dir = v.clone();
        }
        let w = &mut c.watermark;
        if let Some(v) = &self.watermark_key {
            w.key_file = Some(v.clone());
        }
        w.enforced |= self.watermark_enforced;
        let p = self.watermark.apply(w.params()?)?;
        (w.gamma, w.delta, w.context_width, w.scheme, w.min_entropy) = (
            p.gamma(),
            p.delta(),
            p.context_width(),
            p.scheme(),
            p.min_entropy(),
        );
        Ok(c)
    }
}

/// Runs the server until SIGINT or SIGTERM.
pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = args.config()?;
    let model_path = config
        .model
        .clone()
        .context("no model: pass --model PATH, set CONFIDANT_MODEL or `model` in the config")?;
    tracing::info!("configuration:\n{}", config.printable());
    // Model id: configured, else the file name up to its first dot
    // (`SmolLM2-135M-Instruct.Q4_1.gguf` → `SmolLM2-135M-Instruct`).
    let model_id = config.model_id.clone().or_else(|| {
        model_path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split('.').next())
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
    });
    let watermark = config.watermark.open(&config.state_dir)?;
    match &watermark {
        Some(w) => tracing::info!(
            key_id = %w.key_id(),
            params = ?w.params(),
            enforced = config.watermark.enforced,
            "every output is watermarked"
        ),
        None => {
            tracing::warn!("outputs are NOT watermarked (no [watermark] key_file, not enforced)")
        }
    }
    tracing::warn!(
        "running WITHOUT attestation: the model is read from a plaintext file and no key broker is involved"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let state = Arc::new(AppState::new(config.clone()));
        state.set_access(confidant_server::access::Access::from_config(&config)?);
        if let Some(w) = &watermark {
            state.set_watermark(w.clone());
        }
        let factory = watermark.map(|w| Arc::new(w) as Arc<dyn ProcessorFactory>);
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, "listening (not ready until the model is loaded)");
        // Load in the background: /healthz answers at once, /readyz when loaded.
        let st = state.clone();
        tokio::task::spawn_blocking(move || {
            let opts = LoadOptions {
                backend: config.backend,
                threads: config.threads,
                max_context: config.max_context,
            };
            let loaded = std::fs::read(&model_path)
                .with_context(|| format!("cannot read model {}", model_path.display()))
                .and_then(|b| {
                    confidant_server::loader::load_engine(
                        b.into(),
                        &opts,
                        config.engine.clone(),
                        model_id,
                        factory,
                    )
                });
            match loaded {
                Ok(l) => {
                    tracing::info!(model = %l.model_id, "ready");
                    st.set_ready(l.engine, l.model_id);
                }
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "cannot load the model");
                    st.set_not_ready(format!("{e:#}"));
                }
            }
        });
        let app = confidant_server::api::router(state);
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown())
        .await?;
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}

async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
}
