//! The minimal update verifier for devices too small for TUF: parse a signed
//! update manifest, check its Ed25519 signature against a key built into the
//! device, and refuse a security counter lower than the one the device stores.
//!
//! `#![no_std]`, no allocation, no panics on input: it builds for
//! `thumbv7em-none-eabihf` (`cargo build -p confidant-update-core
//! --no-default-features --target thumbv7em-none-eabihf`).
//!
//! A manifest is released through the TUF repository like any other target
//! (so gateways and the edge agent verify it with the full TUF workflow) and
//! is then handed to the sensor, which checks only what this crate checks.
//!
//! # Wire format (little-endian)
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0  | 8  | magic `CFUMAN\0\x01` |
//! | 8  | 1  | artifact kind (application-defined) |
//! | 9  | 1  | version string length `n` (1..=32, printable ASCII) |
//! | 10 | 8  | security counter |
//! | 18 | 8  | payload length |
//! | 26 | 32 | payload SHA-256 |
//! | 58 | 8  | key id: first 8 bytes of SHA-512 of the Ed25519 public key |
//! | 66 | n  | version string |
//! | 66+n | 64 | Ed25519 signature over bytes `0..66+n` |
//!
//! ```
//! use confidant_update_core::{check_counter, Manifest, ManifestFields};
//! use ed25519_dalek::{Signer, SigningKey};
//!
//! let key = SigningKey::from_bytes(&[7; 32]);
//! let fields = ManifestFields {
//!     kind: 3,
//!     version: "1.4.0",
//!     security_counter: 9,
//!     payload_len: 4,
//!     payload_sha256: [0xab; 32],
//!     key_id: confidant_update_core::key_id(&key.verifying_key()),
//! };
//! let mut buf = [0u8; confidant_update_core::MAX_MANIFEST_LEN];
//! let n = fields.encode_unsigned(&mut buf).unwrap();
//! let sig = key.sign(&buf[..n]).to_bytes();
//! buf[n..n + 64].copy_from_slice(&sig);
//!
//! let verified = Manifest::verify(&buf[..n + 64], &key.verifying_key()).unwrap();
//! assert_eq!(verified.fields().version, "1.4.0");
//! assert!(check_counter(8, verified.fields().security_counter).is_ok());
//! assert!(check_counter(10, verified.fields().security_counter).is_err());
//! ```
#![no_std]
#![forbid(unsafe_code)]

#[cfg(feature = "std")]
extern crate std;

use core::fmt;

use ed25519_dalek::{Signature, VerifyingKey};

/// First bytes of every manifest.
pub const MAGIC: [u8; 8] = *b"CFUMAN\0\x01";
/// Longest version string a manifest carries.
pub const MAX_VERSION_LEN: usize = 32;
const HEADER_LEN: usize = 66;
const SIG_LEN: usize = 64;
/// Largest encoded manifest, signature included.
pub const MAX_MANIFEST_LEN: usize = HEADER_LEN + MAX_VERSION_LEN + SIG_LEN;

/// Why a manifest was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CoreError {
    /// Shorter than its fixed header plus version plus signature.
    Truncated { len: usize, needed: usize },
    /// Bytes follow the signature.
    TrailingBytes { len: usize, expected: usize },
    /// Does not start with [`MAGIC`].
    BadMagic,
    /// Version string empty, too long, or not printable ASCII.
    BadVersion,
    /// Signed by a key other than the device's (key id mismatch).
    WrongKey { manifest: [u8; 8], device: [u8; 8] },
    /// The Ed25519 signature does not verify.
    BadSignature,
    /// Security counter below the one the device stores (anti-rollback).
    CounterRollback { stored: u64, offered: u64 },
    /// The payload does not match the manifest's length or digest.
    PayloadMismatch,
    /// The output buffer is too small to encode into.
    BufferTooSmall,
}

impl fmt::Display for CoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { len, needed } => {
                write!(f, "manifest truncated: {len} bytes, need {needed}")
            }
            Self::TrailingBytes { len, expected } => {
                write!(f, "manifest has {len} bytes, expected {expected}")
            }
            Self::BadMagic => f.write_str("not an update manifest (bad magic)"),
            Self::BadVersion => {
                f.write_str("manifest version string is empty, too long or not printable ASCII")
            }
            Self::WrongKey { .. } => {
                f.write_str("manifest signed by a key this device does not trust")
            }
            Self::BadSignature => f.write_str("manifest signature does not verify"),
            Self::CounterRollback { stored, offered } => write!(
                f,
                "security counter {offered} is below the stored counter {stored} (rollback refused)"
            ),
            Self::PayloadMismatch => {
                f.write_str("payload length or SHA-256 differs from the manifest")
            }
            Self::BufferTooSmall => f.write_str("output buffer too small"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for CoreError {}

/// The fields of a manifest, borrowed from its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManifestFields<'a> {
    /// Artifact kind; its meaning is the application's.
    pub kind: u8,
    /// Human-readable version; never used for ordering.
    pub version: &'a str,
    /// Monotonic anti-rollback counter.
    pub security_counter: u64,
    /// Payload length in bytes.
    pub payload_len: u64,
    /// Payload SHA-256.
    pub payload_sha256: [u8; 32],
    /// Which key signed it (see [`key_id`]).
    pub key_id: [u8; 8],
}

impl ManifestFields<'_> {
    /// Writes the signed part (everything but the signature) into `out` and
    /// returns its length; the signer appends 64 signature bytes.
    pub fn encode_unsigned(&self, out: &mut [u8]) -> Result<usize, CoreError> {
        let v = self.version.as_bytes();
        if !valid_version(v) {
            return Err(CoreError::BadVersion);
        }
        let n = HEADER_LEN + v.len();
        if out.len() < n + SIG_LEN {
            return Err(CoreError::BufferTooSmall);
        }
        out[0..8].copy_from_slice(&MAGIC);
        out[8] = self.kind;
        // Cannot truncate: valid_version bounds the length by MAX_VERSION_LEN (32).
        out[9] = v.len() as u8;
        out[10..18].copy_from_slice(&self.security_counter.to_le_bytes());
        out[18..26].copy_from_slice(&self.payload_len.to_le_bytes());
        out[26..58].copy_from_slice(&self.payload_sha256);
        out[58..66].copy_from_slice(&self.key_id);
        out[66..n].copy_from_slice(v);
        Ok(n)
    }
}

/// A manifest whose signature has been verified; only [`Manifest::verify`]
/// constructs one.
#[derive(Debug, Clone, Copy)]
pub struct Manifest<'a> {
    fields: ManifestFields<'a>,
}

impl<'a> Manifest<'a> {
    /// Parses `bytes` and verifies its signature with the device's key.
    pub fn verify(bytes: &'a [u8], key: &VerifyingKey) -> Result<Self, CoreError> {
        let (fields, signed_len) = parse(bytes)?;
        let device = key_id(key);
        if fields.key_id != device {
            return Err(CoreError::WrongKey {
                manifest: fields.key_id,
                device,
            });
        }
        let mut sig = [0u8; SIG_LEN];
        sig.copy_from_slice(&bytes[signed_len..signed_len + SIG_LEN]);
        let sig = Signature::from_bytes(&sig);
        key.verify_strict(&bytes[..signed_len], &sig)
            .map_err(|_| CoreError::BadSignature)?;
        Ok(Self { fields })
    }

    /// The verified fields.
    pub fn fields(&self) -> &ManifestFields<'a> {
        &self.fields
    }

    /// Checks a payload the device has measured (its length and SHA-256,
    /// typically from a hardware hash engine) against the manifest.
    pub fn check_payload(&self, len: u64, sha256: &[u8; 32]) -> Result<(), CoreError> {
        // Not secret data, but compare without early exit anyway.
        let diff = self
            .fields
            .payload_sha256
            .iter()
            .zip(sha256)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 || len != self.fields.payload_len {
            return Err(CoreError::PayloadMismatch);
        }
        Ok(())
    }
}

/// Anti-rollback: an update is acceptable only if its security counter is at
/// least the stored one (equal counters allow re-installing and fixes that
/// are not security relevant).
pub fn check_counter(stored: u64, offered: u64) -> Result<(), CoreError> {
    if offered < stored {
        return Err(CoreError::CounterRollback { stored, offered });
    }
    Ok(())
}

/// Key id carried in the manifest: the first 8 bytes of SHA-512 over the
/// 32-byte Ed25519 public key (SHA-512 because Ed25519 already needs it).
pub fn key_id(key: &VerifyingKey) -> [u8; 8] {
    use ed25519_dalek::Digest;
    let digest = ed25519_dalek::Sha512::digest(key.as_bytes());
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    id
}

fn valid_version(v: &[u8]) -> bool {
    !v.is_empty() && v.len() <= MAX_VERSION_LEN && v.iter().all(|b| (0x21..0x7f).contains(b))
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Parses without verifying; returns the fields and the signed length.
fn parse(bytes: &[u8]) -> Result<(ManifestFields<'_>, usize), CoreError> {
    if bytes.len() < HEADER_LEN {
        return Err(CoreError::Truncated {
            len: bytes.len(),
            needed: HEADER_LEN + 1 + SIG_LEN,
        });
    }
    if bytes[0..8] != MAGIC {
        return Err(CoreError::BadMagic);
    }
    let vlen = usize::from(bytes[9]);
    let signed_len = HEADER_LEN + vlen;
    let total = signed_len + SIG_LEN;
    if bytes.len() < total {
        return Err(CoreError::Truncated {
            len: bytes.len(),
            needed: total,
        });
    }
    if bytes.len() > total {
        return Err(CoreError::TrailingBytes {
            len: bytes.len(),
            expected: total,
        });
    }
    let v = &bytes[HEADER_LEN..signed_len];
    if !valid_version(v) {
        return Err(CoreError::BadVersion);
    }
    let version = core::str::from_utf8(v).map_err(|_| CoreError::BadVersion)?;
    let mut payload_sha256 = [0u8; 32];
    payload_sha256.copy_from_slice(&bytes[26..58]);
    let mut key_id = [0u8; 8];
    key_id.copy_from_slice(&bytes[58..66]);
    Ok((
        ManifestFields {
            kind: bytes[8],
            version,
            security_counter: le_u64(&bytes[10..18]),
            payload_len: le_u64(&bytes[18..26]),
            payload_sha256,
            key_id,
        },
        signed_len,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn signed(key: &SigningKey, counter: u64) -> ([u8; MAX_MANIFEST_LEN], usize) {
        let fields = ManifestFields {
            kind: 1,
            version: "2.0.1",
            security_counter: counter,
            payload_len: 10,
            payload_sha256: [3; 32],
            key_id: key_id(&key.verifying_key()),
        };
        let mut buf = [0u8; MAX_MANIFEST_LEN];
        let n = fields.encode_unsigned(&mut buf).unwrap();
        let sig = key.sign(&buf[..n]).to_bytes();
        buf[n..n + 64].copy_from_slice(&sig);
        (buf, n + 64)
    }

    #[test]
    fn round_trip_and_every_bit_flip_is_refused() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let (buf, n) = signed(&key, 5);
        let m = Manifest::verify(&buf[..n], &key.verifying_key()).unwrap();
        assert_eq!(m.fields().security_counter, 5);
        assert_eq!(m.fields().payload_len, 10);
        m.check_payload(10, &[3; 32]).unwrap();
        assert_eq!(
            m.check_payload(10, &[4; 32]),
            Err(CoreError::PayloadMismatch)
        );
        for byte in 0..n {
            for bit in 0..8 {
                let mut b = buf;
                b[byte] ^= 1 << bit;
                assert!(
                    Manifest::verify(&b[..n], &key.verifying_key()).is_err(),
                    "flip {byte}:{bit}"
                );
            }
        }
    }

    #[test]
    fn truncation_extension_and_other_keys_are_refused() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let other = SigningKey::from_bytes(&[2; 32]);
        let (buf, n) = signed(&key, 5);
        for len in 0..n {
            assert!(Manifest::verify(&buf[..len], &key.verifying_key()).is_err());
        }
        assert!(matches!(
            Manifest::verify(&buf[..n + 1], &key.verifying_key()),
            Err(CoreError::TrailingBytes { .. })
        ));
        assert!(matches!(
            Manifest::verify(&buf[..n], &other.verifying_key()),
            Err(CoreError::WrongKey { .. })
        ));
    }

    #[test]
    fn counter_rollback_is_refused() {
        assert_eq!(
            check_counter(6, 5),
            Err(CoreError::CounterRollback {
                stored: 6,
                offered: 5
            })
        );
        assert!(check_counter(5, 5).is_ok());
        assert!(check_counter(5, 6).is_ok());
    }
}
