//! Signed updates for Confidant: a TUF client (root rotation, timestamp →
//! snapshot → targets, delegations), repository tooling, A/B slot install
//! with health check and automatic rollback, and anti-rollback security
//! counters (fsync'd file, or a TPM NV counter with the `tpm` feature).
//!
//! The client refuses each TUF attack with its own [`Error`] variant:
//! rollback, freeze, mix-and-match, fast-forward, endless data, hash
//! mismatch, signature threshold, a broken root chain, and a correctly
//! signed update whose security counter is below the stored one.
//!
//! Time is always a parameter ([`Clock`]); every download is bounded.
#![forbid(unsafe_code)]

pub mod clock;
pub mod counter;
pub mod crypto;
mod error;
pub mod fsutil;
pub mod install;
pub mod manifest;
pub mod metadata;
pub mod repo;
pub mod slots;
pub mod transport;
pub mod updater;

pub use clock::{Clock, FixedClock, SystemClock, UnixTime};
pub use error::{Error, Result};
