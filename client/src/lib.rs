//! Client side of Confidant: attestation verifier, SDK and local attested proxy for OpenAI SDKs.
//!
//! Not implemented yet: this crate is a placeholder in the workspace until its
//! issue lands. It exposes nothing and pretends nothing.
#![forbid(unsafe_code)]
