//! `confidant serve` configuration: defaults, then a TOML file (`--config`),
//! then `CONFIDANT_*` environment variables and flags (clap reads both; a
//! flag wins over its variable).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use confidant_inference::engine::EngineConfig;
use confidant_inference::model::BackendKind;
use serde::{Deserialize, Serialize};

/// Largest configuration file read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Server configuration. Holds no secret today; fields that will (keys,
/// tokens) must be skipped in `Debug` and in [`ServeConfig::printable`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// GGUF model file (plaintext; loaded into memory, never mapped).
    pub model: Option<PathBuf>,
    /// Model id clients use (`model` field); defaults to the GGUF's `general.name`.
    pub model_id: Option<String>,
    /// Inference backend.
    pub backend: BackendKind,
    /// Compute threads (0: one per core).
    pub threads: usize,
    /// Cap on the context length.
    pub max_context: Option<usize>,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Largest `max_tokens` a request may ask for (0: up to the context).
    pub max_tokens_cap: usize,
    /// Seconds a request may take in total before it is ended.
    pub request_timeout_secs: u64,
    /// Largest prompt, in tokens (0: up to the context length).
    pub max_prompt_tokens: usize,
    /// Seconds a client may send nothing while sending its request body.
    pub idle_timeout_secs: u64,
    /// Scheduler limits.
    pub engine: EngineConfig,
    /// Where the server keeps what it generates for itself (the enforced
    /// watermark's key).
    pub state_dir: PathBuf,
    /// Output watermark.
    pub watermark: crate::watermark::WatermarkConfig,
    /// API keys and per-address limits.
    pub auth: crate::access::AuthConfig,
    /// Audit log.
    pub audit: crate::audit::AuditConfig,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            model: None,
            model_id: None,
            backend: BackendKind::Auto,
            threads: 0,
            max_context: Some(8192),
            max_body_bytes: 1 << 20,
            max_tokens_cap: 4096,
            request_timeout_secs: 600,
            max_prompt_tokens: 0,
            idle_timeout_secs: 30,
            engine: EngineConfig::default(),
            state_dir: PathBuf::from("/var/lib/confidant"),
            watermark: Default::default(),
            auth: Default::default(),
            audit: Default::default(),
        }
    }
}

impl ServeConfig {
    /// Reads a TOML file (bounded in size; unknown keys are an error).
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        use std::io::Read;
        let f = std::fs::File::open(path)
            .map_err(|e| anyhow::anyhow!("cannot open config {}: {e}", path.display()))?;
        let mut text = String::new();
        f.take(MAX_CONFIG_BYTES + 1).read_to_string(&mut text)?;
        if text.len() as u64 > MAX_CONFIG_BYTES {
            anyhow::bail!(
                "config {} is larger than {MAX_CONFIG_BYTES} bytes",
                path.display()
            );
        }
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))
    }

    /// The configuration as TOML for the start-up log (no secrets in it).
    pub fn printable(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("<unprintable: {e}>"))
    }
}
