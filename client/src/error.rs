//! The client's error type.

use crate::verify::Report;

/// Why talking to an attested server failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The client policy file is unusable.
    #[error("client policy: {0}")]
    Policy(String),
    /// TCP connection failed.
    #[error("cannot connect to {addr}: {detail}")]
    Connect {
        /// Where.
        addr: String,
        /// Why.
        detail: String,
    },
    /// TLS failed (handshake, or the server presented no usable key).
    #[error("TLS with {addr}: {detail}")]
    Tls {
        /// Where.
        addr: String,
        /// Why.
        detail: String,
    },
    /// An HTTP exchange failed or answered an error.
    #[error("HTTP: {0}")]
    Http(String),
    /// The attestation document is malformed or inconsistent.
    #[error("attestation document: {0}")]
    Document(String),
    /// The evidence is not authentic or fails the policy.
    #[error("attestation refused: {}", .report.failed_rules().join("; "))]
    Refused {
        /// Everything that was checked.
        report: Box<Report>,
    },
    /// A receipt does not verify.
    #[error("receipt: {0}")]
    Receipt(String),
    /// Something larger than its bound.
    #[error("{what} is larger than {max} bytes")]
    TooLarge {
        /// What.
        what: &'static str,
        /// The bound.
        max: usize,
    },
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
