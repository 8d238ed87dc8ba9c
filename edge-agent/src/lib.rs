//! TPM-backed edge device agent: enrol, attest, sealed model key, sensors, local inference, signed updates.
//!
//! Not implemented yet: this crate is a placeholder in the workspace until its
//! issue lands. It exposes nothing and pretends nothing.
#![forbid(unsafe_code)]
