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
//!
//! ```
//! use std::collections::BTreeMap;
//! use confidant_firmware_update::crypto::{FileSigner, Signer};
//! use confidant_firmware_update::repo::{Repo, RoleSpec};
//! use confidant_firmware_update::transport::FileTransport;
//! use confidant_firmware_update::updater::{Config, Updater};
//! use confidant_firmware_update::{FixedClock, UnixTime};
//!
//! let dir = tempfile::tempdir()?;
//! let key_path = dir.path().join("key.pem");
//! std::fs::write(&key_path, FileSigner::generate_ed25519_pem()?)?;
//! let key = FileSigner::from_pem_file(&key_path)?; // one key for every role, for brevity
//! let now = UnixTime::parse_rfc3339("2030-01-01T00:00:00Z").unwrap();
//!
//! // Repository side: init, add a target, sign, publish.
//! let spec = RoleSpec { keys: vec![key.public_key().clone()], threshold: 1 };
//! let roles: BTreeMap<String, RoleSpec> =
//!     ["root", "targets", "snapshot", "timestamp"].map(|r| (r.to_owned(), spec.clone())).into();
//! let repo = Repo::init(dir.path().join("repo"), &roles, now)?;
//! let custom = serde_json::json!({"version": "1.0.0", "security_counter": 1});
//! repo.add_target("targets", "server/confidant", b"binary", Some(custom))?;
//! repo.sign("root", &[&key])?;
//! repo.sign("targets", &[&key])?;
//! repo.publish(&[&key], &[&key], now)?;
//!
//! // Client side: trust root v1, refresh, find and download the target.
//! let md = dir.path().join("client");
//! Updater::init(&md, &std::fs::read(repo.metadata_dir().join("1.root.json"))?)?;
//! let url = repo.metadata_dir().display().to_string();
//! let mut updater = Updater::new(&md, &url, &FileTransport, &FixedClock(now), Config::default())?;
//! let info = updater.target_info("server/confidant")?;
//! let bytes = updater.fetch_target(&repo.targets_dir().display().to_string(), "server/confidant", &info)?;
//! assert_eq!(bytes, b"binary");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

pub mod clock;
pub mod counter;
pub mod crypto;
mod error;
pub mod fsutil;
pub mod install;
pub mod manifest;
pub mod metadata;
mod pathmatch;
pub mod repo;
pub mod slots;
pub mod transport;
pub mod updater;

pub use clock::{Clock, FixedClock, SystemClock, UnixTime};
pub use error::{Error, Result};
