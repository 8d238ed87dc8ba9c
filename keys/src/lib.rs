//! BYOK for Confidant: the encrypted model container, key-encryption keys
//! (file and PKCS#11), PKCS#11 signing keys for the update repository
//! ([`Pkcs11SigningKey`]), sealing data keys to an attested TEE, and the key
//! broker that releases them ([`kbs`], feature `kbs`, on by default;
//! protocol in `keys/KBS.md`).
//!
//! The format is specified in `keys/FORMAT.md`. In short: a model is
//! encrypted under a fresh random [`DataKey`] as a sequence of AES-256-GCM
//! chunks (STREAM construction) after an authenticated header; the data key
//! is stored only wrapped by the owner's [`Kek`].
//!
//! ```
//! use std::num::NonZeroUsize;
//! use confidant_keys::{encrypt, DataKey, Decryptor, EncryptParams, Header, KeyId, ModelFormat, PlaintextInfo};
//!
//! let model = b"GGUF\x03\0\0\0 pretend weights".to_vec();
//! let key = DataKey::generate()?;
//! let params = EncryptParams::new(KeyId::new("demo")?, ModelFormat::Gguf);
//! let mut container = Vec::new();
//! encrypt(&key, &params, &PlaintextInfo::of(&model), &model[..], &mut container)?;
//!
//! // Server side: parse, check key and header, decrypt into a (locked) buffer.
//! let header = Header::parse(&container)?;
//! let decryptor = Decryptor::new(header, &key)?;
//! let mut out = vec![0u8; decryptor.header().plaintext_len() as usize];
//! let verified = decryptor.decrypt_into(&container[..], &mut out, NonZeroUsize::MIN)?;
//! assert_eq!(out, model);
//! assert_eq!(verified.len(), model.len() as u64);
//! # Ok::<(), confidant_keys::Error>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod container;
mod datakey;
mod error;
mod header;
#[cfg(feature = "kbs")]
pub mod kbs;
mod kek;
mod transport;

pub use container::{
    ChunkSource, Decryptor, DigestCheck, EncryptParams, PlaintextInfo, VerifiedPlaintext, encrypt,
    encrypt_with_fixed_nonce_prefix_for_test_vectors,
};
pub use datakey::{DATA_KEY_LEN, DataKey};
pub use error::{Error, Result};
pub use header::{
    ChunkSize, DEFAULT_CHUNK_SIZE, Header, KeyId, MAGIC, MAX_CHUNK_SIZE, MAX_HEADER_LEN,
    MAX_KEY_ID_LEN, MAX_METADATA_LEN, MIN_CHUNK_SIZE, MetadataText, ModelFormat, NONCE_PREFIX_LEN,
    TAG_LEN, VERSION,
};
pub use kek::{
    FileKek, Kek, KekAttributes, KekKind, KekRef, MAX_SIGN_INPUT, PIN_ENV, Pkcs11Kek,
    Pkcs11PublicKey, Pkcs11SigningKey, Pkcs11Uri, SigningAlgorithm, WRAPPED_MAGIC, WRAPPED_VERSION,
    WrappedKey, unwrap_for_container,
};
pub use transport::{
    HPKE_PUBLIC_KEY_LEN, HpkeKeyPair, SealedDataKey, open_from_hpke, seal_to_hpke,
};
