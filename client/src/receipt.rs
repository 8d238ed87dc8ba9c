//! Completion receipts: a signature by the attested server's TLS key (the
//! key the evidence binds) over SHA-256 of the request body, of the
//! response text, the model digest and the sampling parameters.
//!
//! Wire form: the JSON `{"body": {...}, "signature": "HEX"}`; in the
//! `x-confidant-receipt` header as base64url (no padding) of that JSON. The
//! signed message is `"confidant-receipt/v1\n"` followed by the compact
//! JSON serialisation of `body` with its fields in the order of
//! [`ReceiptBody`] (object keys inside `sampling` sorted). Signature:
//! ECDSA P-256 with SHA-256, ASN.1 DER.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::document::AttestationDocument;
use crate::error::{Error, Result};

/// Version tag of receipts.
pub const RECEIPT_VERSION: &str = "confidant-receipt/v1";
/// Response header carrying the receipt.
pub const RECEIPT_HEADER: &str = "x-confidant-receipt";
/// Largest receipt accepted, in bytes of JSON.
pub const MAX_RECEIPT_LEN: usize = 16 * 1024;

/// What the server signs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReceiptBody {
    /// [`RECEIPT_VERSION`].
    pub version: String,
    /// Completion id (`chatcmpl-…`).
    pub id: String,
    /// Unix time of the completion.
    pub created: u64,
    /// Model id.
    pub model: String,
    /// SHA-256 of the plaintext model, hex (the attestation document's).
    pub model_sha256: String,
    /// SHA-256 of the exact request body bytes, hex.
    pub request_sha256: String,
    /// SHA-256 of the response text (UTF-8: the message content, or the
    /// concatenated deltas when streamed), hex.
    pub response_sha256: String,
    /// Sampling parameters as the server applied them.
    pub sampling: serde_json::Value,
    /// `stop` or `length`.
    pub finish_reason: String,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Key id of the watermark applied, if any.
    pub watermark_key_id: Option<String>,
    /// SHA-256 of the signing key's SubjectPublicKeyInfo, hex.
    pub tls_spki_sha256: String,
}

/// A signed receipt.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// What was signed.
    pub body: ReceiptBody,
    /// ECDSA P-256 / SHA-256 signature, DER, hex.
    pub signature: String,
}

/// SHA-256, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl ReceiptBody {
    /// The bytes the signature covers.
    pub fn signed_message(&self) -> Vec<u8> {
        let mut m = format!("{RECEIPT_VERSION}\n").into_bytes();
        // Plain data: serialisation cannot fail.
        m.extend_from_slice(&serde_json::to_vec(self).unwrap_or_default());
        m
    }
}

impl Receipt {
    /// base64url (no padding) of the JSON, for the header.
    pub fn to_header_value(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Parses a header value.
    pub fn from_header_value(v: &str) -> Result<Self> {
        if v.len() > MAX_RECEIPT_LEN * 4 / 3 + 4 {
            return Err(Error::TooLarge {
                what: "receipt",
                max: MAX_RECEIPT_LEN,
            });
        }
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(v.trim())
            .map_err(|e| Error::Receipt(format!("header is not base64url: {e}")))?;
        Self::from_json(&json)
    }

    /// Parses receipt JSON.
    pub fn from_json(json: &[u8]) -> Result<Self> {
        if json.len() > MAX_RECEIPT_LEN {
            return Err(Error::TooLarge {
                what: "receipt",
                max: MAX_RECEIPT_LEN,
            });
        }
        serde_json::from_slice(json).map_err(|e| Error::Receipt(format!("malformed: {e}")))
    }

    /// Checks the receipt against the attestation document (verified
    /// beforehand: its key is the attested one), the request body sent and
    /// the response text received.
    pub fn verify(
        &self,
        doc: &AttestationDocument,
        request_body: &[u8],
        response_text: &str,
    ) -> Result<()> {
        let b = &self.body;
        let fail = |m: String| Err(Error::Receipt(m));
        if b.version != RECEIPT_VERSION {
            return fail(format!("version {:?}", b.version));
        }
        let spki = hex::decode(&doc.tls_spki)
            .map_err(|_| Error::Document("tls_spki is not hex".into()))?;
        if b.tls_spki_sha256 != sha256_hex(&spki) {
            return fail("signed by another key than the document's".into());
        }
        if b.model_sha256 != doc.model.sha256 {
            return fail(format!(
                "model {} is not the attested model {}",
                b.model_sha256, doc.model.sha256
            ));
        }
        if b.request_sha256 != sha256_hex(request_body) {
            return fail("the request body differs from the one the server signed".into());
        }
        if b.response_sha256 != sha256_hex(response_text.as_bytes()) {
            return fail("the response text differs from the one the server signed".into());
        }
        let sig = hex::decode(&self.signature)
            .map_err(|_| Error::Receipt("signature is not hex".into()))?;
        verify_p256(&spki, &b.signed_message(), &sig)
            .map_err(|BadSignature| Error::Receipt("bad signature".into()))
    }
}

/// Why a signature did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadSignature;

/// Verifies an ECDSA P-256/SHA-256 DER signature with a key given as
/// SubjectPublicKeyInfo DER.
pub fn verify_p256(
    spki_der: &[u8],
    msg: &[u8],
    sig: &[u8],
) -> std::result::Result<(), BadSignature> {
    use spki::der::Decode;
    let info = spki::SubjectPublicKeyInfoRef::from_der(spki_der).map_err(|_| BadSignature)?;
    // id-ecPublicKey with the P-256 curve.
    const EC: spki::ObjectIdentifier = spki::ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
    const P256: spki::ObjectIdentifier = spki::ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
    if info.algorithm.oid != EC || info.algorithm.parameters_oid().ok() != Some(P256) {
        return Err(BadSignature);
    }
    let point = info.subject_public_key.as_bytes().ok_or(BadSignature)?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, point)
        .verify(msg, sig)
        .map_err(|_| BadSignature)
}
