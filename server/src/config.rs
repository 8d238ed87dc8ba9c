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
    /// Model: an encrypted container (`.cmdl`, key from the key broker), or
    /// with `insecure_plaintext_model` a GGUF file. Read into locked memory.
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
    /// INSECURE, development only: `model` may be a plaintext GGUF file
    /// (no key broker, no decryption). Logged as a warning at every start
    /// and reported in the attestation document.
    pub insecure_plaintext_model: bool,
    /// INSECURE, development only: plain HTTP instead of TLS. Clients
    /// cannot verify such a server (attestation binds the TLS key).
    pub insecure_plain_http: bool,
    /// Expected SHA-256 (hex) of the plaintext model; checked after
    /// decryption (the container's own digest is always checked).
    pub model_sha256: Option<String>,
    /// Local attester: `auto` (configfs-tsm, else TPM), `tpm`, `configfs`,
    /// or `insecure-dev` (proves nothing; development only).
    pub attester: AttesterKind,
    /// TPM TCTI for the `tpm` attester (default: `TPM2TOOLS_TCTI`, `TCTI`,
    /// `TEST_TCTI`, else `device:/dev/tpmrm0`).
    pub tpm_tcti: Option<String>,
    /// TPM: the enrolled AK's key blobs (`confidant attest enrol` writes
    /// `ak.keys`); without it a fresh AK is created, which no verifier has
    /// enrolled.
    pub tpm_ak_keys: Option<PathBuf>,
    /// The model owner's key broker.
    pub kbs: KbsConfig,
    /// API keys and per-address limits.
    pub auth: crate::access::AuthConfig,
    /// Audit log.
    pub audit: crate::audit::AuditConfig,
}

/// Which attester produces the server's evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum AttesterKind {
    /// configfs-tsm if present, else a TPM; never the insecure one.
    #[default]
    Auto,
    /// TPM 2.0.
    Tpm,
    /// Linux configfs-tsm (SEV-SNP, TDX).
    Configfs,
    /// Insecure development attester: proves nothing.
    InsecureDev,
}

/// Where the model key comes from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KbsConfig {
    /// Key broker URL (`https://…`, or `http://` on loopback).
    pub url: Option<String>,
    /// PEM CA certificate(s) to trust for the broker's TLS certificate.
    pub ca_cert: Option<PathBuf>,
    /// Seconds allowed for each broker request.
    pub timeout_secs: u64,
    /// Longest wait between retries (the wait doubles from 1 s up to this).
    pub retry_max_secs: u64,
}

impl Default for KbsConfig {
    fn default() -> Self {
        Self {
            url: None,
            ca_cert: None,
            timeout_secs: 30,
            retry_max_secs: 60,
        }
    }
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
            insecure_plaintext_model: false,
            insecure_plain_http: false,
            model_sha256: None,
            attester: AttesterKind::Auto,
            tpm_tcti: None,
            tpm_ak_keys: None,
            kbs: KbsConfig::default(),
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
