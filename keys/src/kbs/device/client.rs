//! The device's side of the device routes: enrolment with the TPM
//! (credential activation) and submitting signed statements.
//!
//! ```no_run
//! use confidant_attest::attester::TpmAttester;
//! use confidant_keys::kbs::client::{ClientConfig, KbsClient};
//! use confidant_keys::kbs::device::{DeviceId, client::enrol};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut tpm = TpmAttester::open("device:/dev/tpmrm0")?;
//! let client = KbsClient::new(&ClientConfig::new("https://kbs.example:8443"))?;
//! let enrolled = enrol(&client, &mut tpm, &DeviceId::new("cam-17")?)?;
//! // keep enrolled.ak (public and private bytes) to load the same AK later
//! # let _ = enrolled; Ok(()) }
//! ```

use confidant_attest::Hex;
use confidant_attest::attester::{TpmAttester, TpmKeys};
use confidant_attest::tpm::CredentialChallenge;

use super::protocol::{
    ACTIVATE_PATH, ActivateRequest, ActivateResponse, CHECKIN_PATH, DeviceId, ENROL_PATH,
    EnrolRequest, EnrolResponse, RECORD_PATH, SignedStatement, Statement, StatementAccepted,
    statement_message,
};
use crate::error::{Error, Result};
use crate::kbs::client::KbsClient;

impl KbsClient {
    /// `POST /kbs/v1/device/enrol`.
    pub fn device_enrol(&self, req: &EnrolRequest) -> Result<EnrolResponse> {
        self.post(ENROL_PATH, None, req).map(|(v, _)| v)
    }

    /// `POST /kbs/v1/device/activate`.
    pub fn device_activate(&self, req: &ActivateRequest) -> Result<ActivateResponse> {
        self.post(ACTIVATE_PATH, None, req).map(|(v, _)| v)
    }

    /// `POST /kbs/v1/device/checkin` or `/kbs/v1/device/record`, by the
    /// statement's type.
    pub fn device_submit(
        &self,
        statement: &Statement,
        signed: &SignedStatement,
    ) -> Result<StatementAccepted> {
        let route = match statement {
            Statement::Checkin(_) => CHECKIN_PATH,
            Statement::Record(_) => RECORD_PATH,
        };
        self.post(route, None, signed).map(|(v, _)| v)
    }
}

/// A device enrolled with a broker.
pub struct Enrolled {
    /// The id the broker knows it by.
    pub device_id: DeviceId,
    /// The AK, to persist and load again ([`TpmKeys::from_parts`]).
    pub ak: TpmKeys,
    /// Its TPM Name.
    pub ak_name: Vec<u8>,
}

impl std::fmt::Debug for Enrolled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrolled")
            .field("device_id", &self.device_id)
            .field("ak_name", &hex::encode(&self.ak_name))
            .finish_non_exhaustive()
    }
}

/// Enrols the TPM behind `tpm` as `device_id`: reads the EK certificate,
/// creates an AK under the EK, asks the broker for a credential and
/// activates it in the TPM. From then on `tpm` uses that AK.
pub fn enrol(client: &KbsClient, tpm: &mut TpmAttester, device_id: &DeviceId) -> Result<Enrolled> {
    let ek_cert = tpm.ek_certificate()?;
    let ak = tpm.create_ak()?;
    let ch = client.device_enrol(&EnrolRequest {
        device_id: device_id.clone(),
        ek_cert: Hex(ek_cert),
        ak_public: Hex(ak.public_bytes()?),
    })?;
    let activated = tpm.activate_credential(&CredentialChallenge {
        credential_blob: ch.credential_blob,
        encrypted_secret: ch.encrypted_secret,
    })?;
    let done = client.device_activate(&ActivateRequest {
        enrolment_id: ch.enrolment_id,
        activated: Hex(activated),
    })?;
    if &done.device_id != device_id {
        return Err(Error::KbsProtocol {
            reason: format!("enrolled as {} instead of {device_id}", done.device_id),
        });
    }
    Ok(Enrolled {
        device_id: done.device_id,
        ak,
        ak_name: done.ak_name.as_bytes().to_vec(),
    })
}

/// Serialises `statement` and signs it with the AK `tpm` uses.
pub fn sign_statement(tpm: &mut TpmAttester, statement: &Statement) -> Result<SignedStatement> {
    let payload = serde_json::to_string(statement).map_err(|e| Error::KbsProtocol {
        reason: format!("encoding the statement: {e}"),
    })?;
    let signature = tpm.sign(&statement_message(payload.as_bytes()))?;
    Ok(SignedStatement {
        device_id: statement.device_id().clone(),
        payload,
        signature: Hex(signature),
    })
}
