//! The one error type of this crate: one variant per attack the client
//! refuses, so callers (and tests) can tell a rollback from a freeze.

use std::path::PathBuf;

use crate::clock::UnixTime;

/// Every way an update can be refused or fail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Rollback attack: a version lower than the trusted one (TUF 5.3.5,
    /// 5.4.3, 5.5.5).
    #[error("rollback refused: {role} version {offered} is below the trusted version {trusted}")]
    Rollback {
        role: String,
        trusted: u64,
        offered: u64,
    },

    /// Freeze attack: metadata past its expiry (TUF 5.3.10, 5.4.4, 5.5.6, 5.6.6).
    #[error("freeze refused: {role} expired at {expires}, checked at {now}")]
    Freeze {
        role: String,
        expires: UnixTime,
        now: UnixTime,
    },

    /// Mix-and-match attack: metadata whose version differs from what the
    /// signed timestamp/snapshot says it must be (TUF 5.5.2, 5.5.7, 5.6.2).
    #[error("mix-and-match refused: {role} is version {got}, {by} requires version {expected}")]
    MixAndMatch {
        role: String,
        by: String,
        expected: u64,
        got: u64,
    },

    /// Fast-forward attack after key rotation: metadata signed only by keys
    /// that a newer root revoked (the client already dropped what those keys
    /// had fast-forwarded; TUF 5.3.11).
    #[error(
        "fast-forward refused: {role} is signed by {revoked} key(s) revoked in root rotation and {valid} of {threshold} current key(s)"
    )]
    FastForward {
        role: String,
        revoked: usize,
        valid: usize,
        threshold: u64,
    },

    /// Endless-data attack: a download larger than its limit.
    #[error("endless data refused: {what} exceeds its limit of {limit} bytes")]
    EndlessData { what: String, limit: u64 },

    /// Arbitrary software / mix-and-match: content whose length or hash
    /// differs from the signed metadata.
    #[error("hash mismatch refused: {what}: {detail}")]
    HashMismatch { what: String, detail: String },

    /// Fewer valid signatures than the role's threshold.
    #[error("signature threshold not met for {role}: {valid} valid of {threshold} required")]
    Threshold {
        role: String,
        valid: usize,
        threshold: u64,
    },

    /// A root in the rotation chain is not version N+1, or is not signed by
    /// a threshold of both the old and the new root keys (TUF 5.3.4, 5.3.5).
    #[error("bad root rotation chain at version {version}: {reason}")]
    BadRootChain { version: u64, reason: String },

    /// Anti-rollback: a correctly signed update whose security counter is
    /// below the stored one.
    #[error(
        "security counter rollback refused: {kind} update carries counter {offered}, device stores {stored}"
    )]
    SecurityCounter {
        kind: String,
        stored: u64,
        offered: u64,
    },

    /// Metadata that is not well formed TUF metadata.
    #[error("malformed {what}: {reason}")]
    Malformed { what: String, reason: String },

    /// The requested target is not listed by any role that may list it.
    #[error("target {0:?} not found in signed metadata")]
    TargetNotFound(String),

    /// The repository could not be reached or answered with an error.
    #[error("fetching {url}: {reason}")]
    Transport { url: String, reason: String },

    /// The new artifact failed its own health check; it was not switched to.
    #[error("health check of {artifact} failed: {reason}")]
    HealthCheck { artifact: PathBuf, reason: String },

    /// Slot or state bookkeeping is inconsistent or a request does not apply.
    #[error("slots: {0}")]
    Slots(String),

    /// Repository tooling: the edit cannot be made as asked.
    #[error("repository: {0}")]
    Repo(String),

    /// Key material could not be read or used.
    #[error("key: {0}")]
    Key(String),

    /// The TPM counter backend failed.
    #[error("TPM: {0}")]
    Tpm(String),

    /// A file system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn malformed(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Self::Malformed {
            what: what.into(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { op, path, source }
    }
}

/// Shorthand used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
