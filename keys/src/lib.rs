//! BYOK: encrypted model container, key wrapping (file, PKCS#11) and the attestation-gated key broker.
//!
//! Not implemented yet: this crate is a placeholder in the workspace until its
//! issue lands. It exposes nothing and pretends nothing.
#![forbid(unsafe_code)]
