//! Client side of Confidant: the attestation document, its verification
//! against a client policy over the very TLS connection it came on, signed
//! completion receipts, and the [`AttestedClient`] SDK (the local proxy for
//! OpenAI SDKs, `confidant proxy`, is built on the same pieces).
#![forbid(unsafe_code)]

pub mod conn;
pub mod document;
pub mod error;
pub mod policy;
pub mod receipt;
pub mod sdk;
pub mod verify;

pub use document::{
    AttestationDocument, DOCUMENT_VERSION, MAX_DOCUMENT_LEN, ModelInfo, ServedConfig,
};
pub use error::{Error, Result};
pub use policy::ClientPolicy;
pub use receipt::{RECEIPT_HEADER, Receipt, ReceiptBody};
pub use sdk::AttestedClient;
pub use verify::{Report, Rule, verify_document};
