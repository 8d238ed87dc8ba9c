//! Client side of Confidant: the attestation document, its verification,
//! an SDK and a local attested proxy for OpenAI SDKs.
#![forbid(unsafe_code)]

pub mod document;

pub use document::{
    AttestationDocument, DOCUMENT_VERSION, MAX_DOCUMENT_LEN, ModelInfo, ServedConfig,
};
