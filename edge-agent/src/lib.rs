//! `confidant-edge`: the TPM-backed agent of an edge device (DESIGN.md,
//! "Edge devices").
//!
//! ```text
//! enrol    EK certificate + AK ──▶ broker: EK CA check, MakeCredential
//!          ActivateCredential in the TPM ──▶ broker stores EK+AK+device id
//! start    sealed key? ── TPM2_Unseal under PolicyPCR ──▶ key (offline)
//!             └─ refused (PCRs changed) or none ──▶ quote over a fresh nonce
//!                ──▶ broker: device not revoked, model + device policy (PCRs)
//!                ──▶ key sealed with HPKE ──▶ sealed again in the TPM to the
//!                    quoted PCR values
//!          model container decrypted in memory ──▶ inference engine
//! loop     sensor (embedded-hal) ──▶ schedule / sensor event ──▶ inference
//!          ──▶ record signed by the AK (TPM2_Hash + TPM2_Sign) ──▶ broker
//!              (verifies) or a local file; signed check-ins
//! update   TUF (firmware-update) ──▶ TPM NV anti-rollback counter ──▶ A/B slot
//! ```
//!
//! Modules: [`enrol`], [`key`] (unseal or broker), [`seal`] (PolicyPCR
//! sealing), [`model`] (decrypt + inference), [`sensor`] (BME280 driver),
//! [`publish`] (signed statements), [`agent`] (the loop), [`update`],
//! [`state`], [`config`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod agent;
pub mod config;
pub mod enrol;
mod error;
pub mod key;
pub mod memory;
pub mod model;
pub mod publish;
pub mod seal;
pub mod sensor;
pub mod state;
pub mod update;

pub use error::{Error, Result};
