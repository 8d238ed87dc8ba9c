//! The attestation document `GET /v1/attestation?nonce=HEX` returns.
//!
//! It carries fresh evidence whose REPORT_DATA binds the client's nonce, the
//! server's TLS public key and its HPKE public key (DESIGN.md, trust flow),
//! and describes what runs: the model digest, the watermark's public
//! parameters and the security-relevant configuration. Everything except the
//! evidence is only as trustworthy as the binding the client checks.

use serde::{Deserialize, Serialize};

/// Version tag of the document format.
pub const DOCUMENT_VERSION: &str = "confidant/v1";

/// Largest document a client accepts, in bytes.
pub const MAX_DOCUMENT_LEN: usize = 4 << 20;

/// `GET /v1/attestation` response body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AttestationDocument {
    /// [`DOCUMENT_VERSION`].
    pub version: String,
    /// The client's nonce, hex.
    pub nonce: String,
    /// SHA-256 of the server's TLS SubjectPublicKeyInfo, hex.
    pub tls_spki_sha256: String,
    /// The server's TLS SubjectPublicKeyInfo (DER), hex: the key the evidence
    /// binds and the key receipts are signed with.
    pub tls_spki: String,
    /// The server's HPKE public key (X25519), hex.
    pub hpke_public_key: String,
    /// The evidence bundle as `confidant_attest::EvidenceBundle` serialises it.
    pub evidence: serde_json::Value,
    /// What is being served.
    pub model: ModelInfo,
    /// The watermark's public parameters, when one is applied.
    pub watermark: Option<serde_json::Value>,
    /// Security-relevant configuration.
    pub config: ServedConfig,
}

/// The served model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ModelInfo {
    /// Model id used in API requests.
    pub id: String,
    /// SHA-256 of the plaintext model file, hex.
    pub sha256: String,
    /// Key id of the encrypted container it came from (none in plaintext mode).
    pub key_id: Option<String>,
}

/// Server configuration a client policy may care about.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ServedConfig {
    /// The model was loaded from a plaintext file (development only).
    pub insecure_plaintext_model: bool,
    /// The attester that produced the evidence (`snp`, `tdx`, `tpm`, `insecure-dev`).
    pub attester: String,
    /// Whether the watermark is enforced on every completion.
    pub watermark_enforced: bool,
    /// Whether prompts and completions can appear in the audit log.
    pub audit_includes_content: bool,
    /// Version of the server software.
    pub server_version: String,
}
