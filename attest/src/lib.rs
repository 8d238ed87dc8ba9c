//! Attestation evidence: produce it (configfs-tsm for SEV-SNP/TDX, TPM 2.0) and verify it against a policy.
//!
//! Not implemented yet: this crate is a placeholder in the workspace until its
//! issue lands. It exposes nothing and pretends nothing.
#![forbid(unsafe_code)]
