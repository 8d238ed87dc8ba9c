//! The one error type of this crate.

/// Everything that can go wrong while producing or verifying evidence.
///
/// Variants carry the context a user needs to act ("VCEK expired at …, checked
/// at …"). Verification failures are never panics: malformed input is an
/// [`Error::Malformed`], an unauthentic one an [`Error::Signature`] or
/// [`Error::Chain`], and a policy refusal an [`Error::Rejected`] that lists
/// every reason.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Evidence or collateral could not be parsed (wrong size, bad field, bad encoding).
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// Which structure.
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// A certificate chain did not verify up to a trusted root.
    #[error("certificate chain rejected: {0}")]
    Chain(String),
    /// A signature over evidence did not verify.
    #[error("signature invalid: {0}")]
    Signature(String),
    /// A certificate, CRL or collateral item is outside its validity window.
    #[error("{what} expired at {not_after}, checked at {at}")]
    Expired {
        /// What expired ("VCEK", "Intel root CA CRL", ...).
        what: String,
        /// End of its validity (RFC 3339).
        not_after: String,
        /// Verification time (RFC 3339).
        at: String,
    },
    /// A certificate, CRL or collateral item is not valid yet.
    #[error("{what} not valid before {not_before}, checked at {at}")]
    NotYetValid {
        /// What is not valid yet.
        what: String,
        /// Start of its validity (RFC 3339).
        not_before: String,
        /// Verification time (RFC 3339).
        at: String,
    },
    /// A CRL has expired (its nextUpdate is before the verification time).
    #[error("CRL expired: {what} nextUpdate {next_update}, checked at {at}")]
    CrlExpired {
        /// Which CRL.
        what: &'static str,
        /// Its nextUpdate (RFC 3339).
        next_update: String,
        /// Verification time (RFC 3339).
        at: String,
    },
    /// The evidence is authentic but inconsistent with its endorsement
    /// (TCB in the VCEK differs from REPORTED_TCB, chip id differs, ...).
    #[error("endorsement mismatch: {0}")]
    Endorsement(String),
    /// Intel DCAP quote verification failed (chain, CRL, QE identity, TCB level, ...).
    #[error("DCAP verification failed: {0}")]
    Dcap(String),
    /// TPM evidence did not verify (nonce, PCR digest, AK, credential).
    #[error("TPM evidence rejected: {0}")]
    Tpm(String),
    /// The evidence was verified and then refused; every reason is listed.
    #[error("evidence rejected: {}", .0.reasons.join("; "))]
    Rejected(Box<crate::Rejection>),
    /// The policy file is invalid.
    #[error("invalid policy: {0}")]
    Policy(String),
    /// No attester could produce evidence, or the chosen one failed.
    #[error("attester {attester}: {detail}")]
    Attester {
        /// Which attester.
        attester: &'static str,
        /// What failed.
        detail: String,
    },
    /// A file or device could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// Path involved.
        path: String,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An input exceeds the bound this crate accepts.
    #[error("{what} is {len} bytes, more than the {max} allowed")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size.
        len: usize,
        /// The bound.
        max: usize,
    },
}

impl Error {
    pub(crate) fn malformed(what: &'static str, detail: impl Into<String>) -> Self {
        Error::Malformed {
            what,
            detail: detail.into(),
        }
    }

    pub(crate) fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}

/// Convenience alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
