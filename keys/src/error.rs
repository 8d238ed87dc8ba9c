//! The one error type of this crate.
//!
//! No variant carries key material, plaintext or a PIN. Variants that name a
//! chunk give its index so an operator can see *where* a container is damaged.

use std::io;

/// Everything that can go wrong while parsing, encrypting, decrypting or
/// (un)wrapping.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation failed; `context` says which.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The input does not start with the container (or wrapped-key) magic.
    #[error("not a {what}: bad magic bytes")]
    BadMagic {
        /// "Confidant model container" or "Confidant wrapped key".
        what: &'static str,
    },

    /// The format version is not one this implementation reads.
    #[error("unsupported {what} version {found} (this build reads version {supported})")]
    UnsupportedVersion {
        /// Which format.
        what: &'static str,
        /// Version found in the input.
        found: u16,
        /// Version this build reads.
        supported: u16,
    },

    /// A header or wrapped-key file is structurally invalid.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// Which structure.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// A parameter given by the caller is out of range (chunk size, metadata,
    /// key id, plaintext length, URI).
    #[error("invalid {what}: {reason}")]
    InvalidParameter {
        /// Which parameter.
        what: &'static str,
        /// Why it was refused.
        reason: String,
    },

    /// The data key does not match the container's key commitment: the key is
    /// the wrong one (or the commitment field itself was altered).
    #[error("wrong data key for container with key id {key_id:?}")]
    WrongKey {
        /// The container's key id.
        key_id: String,
    },

    /// The key matches but the header's authentication tag does not: the
    /// header was edited after encryption.
    #[error("container header failed authentication (header was modified)")]
    HeaderAuth,

    /// The container ends before its last chunk does.
    #[error("container truncated: {actual} bytes, the header announces {expected}")]
    Truncated {
        /// Length implied by the header.
        expected: u64,
        /// Length found.
        actual: u64,
    },

    /// Bytes follow the final chunk.
    #[error("container has trailing data: {actual} bytes, the header announces {expected}")]
    TrailingData {
        /// Length implied by the header.
        expected: u64,
        /// Length found (at least).
        actual: u64,
    },

    /// The chunk at `position` is an authentic chunk of this container that
    /// belongs at `belongs_at`: chunks were reordered.
    #[error("chunk {position} is chunk {belongs_at} of this container: chunks were reordered")]
    ChunkReordered {
        /// Where the chunk was found.
        position: u64,
        /// Where it verifies.
        belongs_at: u64,
    },

    /// The chunk at `index` failed authentication at every nearby position:
    /// it was modified or spliced in from another container.
    #[error("chunk {index} failed authentication (modified, or spliced from another container)")]
    ChunkAuth {
        /// Index of the chunk.
        index: u64,
    },

    /// Every chunk authenticated but the plaintext's SHA-256 differs from
    /// the header's. Only a faulty or malicious encryptor produces this.
    #[error(
        "plaintext SHA-256 mismatch: header says {expected}, decrypted data hashes to {actual}"
    )]
    DigestMismatch {
        /// Hex digest from the header.
        expected: String,
        /// Hex digest of the output.
        actual: String,
    },

    /// The caller's output buffer does not have the plaintext's length.
    #[error("output buffer is {actual} bytes, plaintext is {expected}")]
    OutputLength {
        /// Plaintext length.
        expected: u64,
        /// Buffer length.
        actual: u64,
    },

    /// The plaintext fed to the encryptor differs from the length/digest it
    /// was announced with (the input changed while being encrypted).
    #[error("plaintext changed during encryption: {reason}")]
    InputChanged {
        /// What differed.
        reason: String,
    },

    /// The wrapped key is for another key id than the container.
    #[error("wrapped key is for key id {wrapped:?}, container has key id {container:?}")]
    KeyIdMismatch {
        /// Key id of the container.
        container: String,
        /// Key id of the wrapped key.
        wrapped: String,
    },

    /// The wrapped key was made by another kind of KEK than the one given.
    #[error("wrapped key was made with a {wrapped} KEK, not a {given} KEK")]
    KekKindMismatch {
        /// Kind recorded in the wrapped key.
        wrapped: &'static str,
        /// Kind of the KEK given.
        given: &'static str,
    },

    /// The wrapped key names another KEK (its KEK id differs).
    #[error("wrapped key was made with KEK {wrapped}, this KEK is {given}")]
    WrongKek {
        /// Hex KEK id recorded in the wrapped key.
        wrapped: String,
        /// Hex id of the KEK given.
        given: String,
    },

    /// Unwrapping failed authentication: the wrapped key was modified, or
    /// the KEK is not the one it was wrapped with.
    #[error("wrapped key failed authentication (modified, or wrapped under another KEK)")]
    WrappedKeyAuth,

    /// A KEK file is unusable (permissions, length, already exists).
    #[error("KEK file {path}: {reason}")]
    KekFile {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },

    /// A PKCS#11 call failed.
    #[error("PKCS#11 {operation} failed: {source}")]
    Pkcs11 {
        /// The operation (`C_Initialize`, `C_Login`, ...).
        operation: &'static str,
        /// The error from the module.
        #[source]
        source: cryptoki::error::Error,
    },

    /// The PKCS#11 token, slot or key object could not be used.
    #[error("PKCS#11: {reason}")]
    Pkcs11Object {
        /// What was not found or is unacceptable.
        reason: String,
    },

    /// The operating system's random number generator failed.
    #[error("random number generator failed: {0}")]
    Rng(String),

    /// HPKE sealing or opening failed.
    #[error("HPKE {operation} failed: {reason}")]
    Hpke {
        /// "seal" or "open".
        operation: &'static str,
        /// What went wrong.
        reason: String,
    },

    /// The key broker's database (registry and release log) failed.
    #[cfg(feature = "kbs")]
    #[error("key broker database: {context}: {source}")]
    Store {
        /// What was being done.
        context: &'static str,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },

    /// The key broker's registry has no model with this key id.
    #[error("no model with key id {key_id:?} in the key broker registry")]
    UnknownModel {
        /// The key id asked for.
        key_id: String,
    },

    /// A model with this key id is already registered.
    #[error("a model with key id {key_id:?} is already registered")]
    ModelExists {
        /// The key id.
        key_id: String,
    },

    /// Producing evidence, parsing a policy or setting up verification failed.
    #[cfg(feature = "kbs")]
    #[error("attestation: {0}")]
    Attestation(#[from] confidant_attest::Error),

    /// A TLS certificate or key is unusable.
    #[error("TLS: {reason}")]
    Tls {
        /// What is wrong.
        reason: String,
    },

    /// The key broker refused a request and said why (a reason code of
    /// `keys/KBS.md`; the broker's log holds the detail).
    #[error("key broker refused {route} (HTTP {status}): {code}")]
    KbsRefused {
        /// The route (`/kbs/v1/auth`, ...).
        route: &'static str,
        /// HTTP status.
        status: u16,
        /// The reason code, e.g. `policy_measurement`.
        code: String,
        /// `Retry-After` seconds, for `rate_limited`.
        retry_after: Option<u64>,
    },

    /// The key broker could not be reached, or the exchange broke off.
    #[error("key broker at {url}: {reason}")]
    KbsTransport {
        /// The URL requested.
        url: String,
        /// What failed.
        reason: String,
    },

    /// The key broker answered outside the protocol.
    #[error("key broker protocol violation: {reason}")]
    KbsProtocol {
        /// What was wrong with the answer.
        reason: String,
    },
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(context: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Io { context, source }
    }

    pub(crate) fn malformed(what: &'static str, reason: impl Into<String>) -> Error {
        Error::Malformed {
            what,
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> Error {
        Error::InvalidParameter {
            what,
            reason: reason.into(),
        }
    }

    #[cfg(feature = "kbs")]
    pub(crate) fn store(context: &'static str) -> impl FnOnce(rusqlite::Error) -> Error {
        move |source| Error::Store { context, source }
    }

    pub(crate) fn pkcs11(operation: &'static str) -> impl FnOnce(cryptoki::error::Error) -> Error {
        move |source| Error::Pkcs11 { operation, source }
    }
}
