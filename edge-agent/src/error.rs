//! The one error type of the agent library.

use std::path::PathBuf;

/// What went wrong on the device.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A TPM command failed.
    #[error("TPM {operation}: {detail}")]
    Tpm {
        /// What was asked of the TPM.
        operation: &'static str,
        /// The TSS error.
        detail: String,
    },
    /// The TPM refused to unseal the model key: the PCRs are not those it
    /// was sealed to (or the sealed blob is not this TPM's).
    #[error("the TPM refused to unseal the model key (PCRs changed since it was sealed?): {0}")]
    UnsealRefused(String),
    /// Attestation, enrolment or AK signing.
    #[error(transparent)]
    Attest(#[from] confidant_attest::Error),
    /// The key broker (transport, refusal) or the model container.
    #[error(transparent)]
    Keys(#[from] confidant_keys::Error),
    /// The inference engine.
    #[error("inference: {0}")]
    Inference(#[from] confidant_inference::Error),
    /// Updates.
    #[error("update: {0}")]
    Update(#[from] confidant_firmware_update::Error),
    /// A sensor.
    #[error("sensor: {0}")]
    Sensor(String),
    /// A file of the agent's state or configuration.
    #[error("{}: {reason}", path.display())]
    File {
        /// Which file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The configuration.
    #[error("configuration: {0}")]
    Config(String),
    /// The device is not enrolled yet.
    #[error("not enrolled: run `confidant-edge enrol --kbs URL` first ({})", .0.display())]
    NotEnrolled(PathBuf),
}

impl Error {
    pub(crate) fn tpm(operation: &'static str) -> impl FnOnce(tss_esapi::Error) -> Error {
        move |e| Error::Tpm {
            operation,
            detail: e.to_string(),
        }
    }

    pub(crate) fn file(path: &std::path::Path, reason: impl std::fmt::Display) -> Error {
        Error::File {
            path: path.to_owned(),
            reason: reason.to_string(),
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
