//! Signed statements out of the device: inference records and check-ins,
//! signed by the device's AK in the TPM, sent to the broker (which verifies
//! them) or appended to a local JSON-lines file (verifiable later with the
//! device's enrolled AK).

use std::io::Write;
use std::path::PathBuf;

use confidant_keys::kbs::client::KbsClient;
use confidant_keys::kbs::device::client::sign_statement;
use confidant_keys::kbs::device::{SignedStatement, Statement};

use crate::error::{Error, Result};
use crate::key::attester;
use crate::state::Identity;

/// Where statements go.
#[derive(Debug)]
pub enum Publisher {
    /// `POST` to the broker's device routes.
    Broker(KbsClient),
    /// One [`SignedStatement`] JSON per line, appended and fsync'd.
    File(PathBuf),
}

/// What happened to a statement.
#[derive(Debug, Clone)]
pub enum Published {
    /// The broker verified it; its SHA-256 of the payload.
    Verified(Vec<u8>),
    /// Written to the file.
    Written,
}

impl Publisher {
    /// Sends or writes `signed`.
    pub fn publish(&self, statement: &Statement, signed: &SignedStatement) -> Result<Published> {
        match self {
            Publisher::Broker(c) => {
                let ok = c.device_submit(statement, signed)?;
                Ok(Published::Verified(ok.payload_sha256.as_bytes().to_vec()))
            }
            Publisher::File(p) => {
                let mut line = serde_json::to_vec(signed).map_err(|e| Error::file(p, e))?;
                line.push(b'\n');
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| Error::file(p, e))?;
                f.write_all(&line).map_err(|e| Error::file(p, e))?;
                f.sync_data().map_err(|e| Error::file(p, e))?;
                Ok(Published::Written)
            }
        }
    }
}

/// Signs `statement` with the device's AK (TPM2_Hash + TPM2_Sign).
pub fn sign(tcti: &str, identity: &Identity, statement: &Statement) -> Result<SignedStatement> {
    let mut tpm = attester(tcti, identity, &[])?;
    Ok(sign_statement(&mut tpm, statement)?)
}
