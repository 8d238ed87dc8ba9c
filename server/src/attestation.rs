//! Fresh attestation documents for clients (`GET /v1/attestation`).
//!
//! Each document carries evidence produced for the client's own nonce whose
//! REPORT_DATA is `SHA-512("confidant/v1" ‖ nonce ‖ SHA-256(TLS SPKI) ‖
//! SHA-256(HPKE pk))` (DESIGN.md), so a client that checks it against the TLS
//! key of the very connection it used knows it talks to the attested process.

use std::sync::{Arc, Mutex};

use confidant_attest::attester::{Attester, BoundData};
use confidant_attest::{Binding, MAX_NONCE_LEN};
use confidant_client::{
    AttestationDocument, DOCUMENT_VERSION, ModelInfo, Receipt, ReceiptBody, ServedConfig,
};
use confidant_keys::HpkeKeyPair;

use crate::tls::TlsIdentity;

/// Shortest nonce accepted from a client.
pub const MIN_NONCE_LEN: usize = 16;

/// What the server binds into evidence and describes in documents.
pub struct AttestationService {
    tls: Arc<TlsIdentity>,
    hpke: Arc<HpkeKeyPair>,
    attester: Mutex<Option<Box<dyn Attester>>>,
    attester_name: String,
    model: Mutex<Option<ModelInfo>>,
    config: ServedConfig,
    watermark: Option<serde_json::Value>,
}

/// Why a document could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    /// The nonce is not hex or has the wrong length.
    #[error("nonce must be {MIN_NONCE_LEN} to {MAX_NONCE_LEN} bytes of hex")]
    BadNonce,
    /// The model is not loaded yet.
    #[error("the model is not loaded yet")]
    NotReady,
    /// The attester failed.
    #[error("cannot produce evidence: {0}")]
    Attester(String),
}

impl AttestationService {
    /// A service for this process's keys and attester.
    pub fn new(
        tls: Arc<TlsIdentity>,
        hpke: Arc<HpkeKeyPair>,
        attester: Option<Box<dyn Attester>>,
        config: ServedConfig,
        watermark: Option<serde_json::Value>,
    ) -> Self {
        let attester_name = attester
            .as_ref()
            .map_or_else(|| "none".to_owned(), |a| a.name());
        Self {
            tls,
            hpke,
            attester: Mutex::new(attester),
            attester_name,
            model: Mutex::new(None),
            config,
            watermark,
        }
    }

    /// The attester's name.
    pub fn attester_name(&self) -> &str {
        &self.attester_name
    }

    /// The HPKE key pair (the key broker seals the model key to it).
    pub fn hpke(&self) -> &Arc<HpkeKeyPair> {
        &self.hpke
    }

    /// The TLS identity.
    pub fn tls(&self) -> &Arc<TlsIdentity> {
        &self.tls
    }

    /// Runs `f` with the attester (start-up: the key broker's challenge).
    /// `None` when the server has no attester.
    pub fn with_attester<R>(&self, f: impl FnOnce(&mut dyn Attester) -> R) -> Option<R> {
        let mut a = self.attester.lock().unwrap_or_else(|p| p.into_inner());
        a.as_mut().map(|a| f(a.as_mut()))
    }

    /// The loaded model, once loaded.
    pub fn model(&self) -> Option<ModelInfo> {
        self.model.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Signs a receipt with the attested TLS key.
    pub fn sign_receipt(&self, body: ReceiptBody) -> anyhow::Result<Receipt> {
        let sig = self.tls.sign(&body.signed_message())?;
        Ok(Receipt {
            body,
            signature: hex::encode(sig),
        })
    }

    /// Records the loaded model (documents are refused before).
    pub fn set_model(&self, m: ModelInfo) {
        *self.model.lock().unwrap_or_else(|p| p.into_inner()) = Some(m);
    }

    /// Evidence bound to `nonce` and this process's keys.
    pub fn evidence(
        &self,
        nonce: &[u8],
    ) -> Result<confidant_attest::EvidenceBundle, DocumentError> {
        let hpke_pk = self.hpke.public_key();
        let binding = Binding {
            nonce,
            tls_spki_der: self.tls.spki_der(),
            hpke_public_key: &hpke_pk,
        };
        self.with_attester(|a| a.evidence(&BoundData::from_binding(&binding)))
            .ok_or_else(|| DocumentError::Attester("this server has no attester".into()))?
            .map_err(|e| DocumentError::Attester(e.to_string()))
    }

    /// A fresh document for a client's hex nonce. Blocking (the attester
    /// may talk to a TPM): call from a blocking thread.
    pub fn document(&self, nonce_hex: &str) -> Result<AttestationDocument, DocumentError> {
        let nonce = hex::decode(nonce_hex).map_err(|_| DocumentError::BadNonce)?;
        if !(MIN_NONCE_LEN..=MAX_NONCE_LEN).contains(&nonce.len()) {
            return Err(DocumentError::BadNonce);
        }
        let model = self
            .model
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(DocumentError::NotReady)?;
        let evidence = self.evidence(&nonce)?;
        let evidence = serde_json::from_slice(&evidence.to_json())
            .map_err(|e| DocumentError::Attester(format!("evidence is not JSON: {e}")))?;
        Ok(AttestationDocument {
            version: DOCUMENT_VERSION.to_owned(),
            nonce: hex::encode(&nonce),
            tls_spki_sha256: hex::encode(self.tls.spki_sha256()),
            tls_spki: hex::encode(self.tls.spki_der()),
            hpke_public_key: hex::encode(self.hpke.public_key()),
            evidence,
            model,
            watermark: self.watermark.clone(),
            config: self.config.clone(),
        })
    }
}
