//! `confidant-edge enrol --kbs URL`: enrol this device's TPM with the
//! broker and keep the identity in the state directory.

use confidant_attest::Hex;
use confidant_attest::attester::TpmAttester;
use confidant_keys::kbs::client::{ClientConfig, KbsClient};
use confidant_keys::kbs::device::DeviceId;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::state::{Identity, StateDir};

/// The default device id: `tpm-` and the first 16 hex digits of the
/// SHA-256 of the EK certificate (stable for the life of the TPM).
pub fn default_device_id(ek_cert: &[u8]) -> Result<DeviceId> {
    Ok(DeviceId::new(&format!(
        "tpm-{}",
        &hex::encode(Sha256::digest(ek_cert))[..16]
    ))?)
}

/// Enrols the TPM at `tcti` with the broker of `kbs` as `device_id` (or
/// the default id) and writes `identity.json`. Refuses to enrol over an
/// existing identity.
pub fn enrol(
    state: &StateDir,
    tcti: &str,
    kbs: &ClientConfig,
    device_id: Option<DeviceId>,
) -> Result<Identity> {
    if state.identity().is_ok() {
        return Err(Error::Config(format!(
            "{} already holds an enrolment; remove it to enrol again",
            state.root().display()
        )));
    }
    let client = KbsClient::new(kbs)?;
    let mut tpm = TpmAttester::open(tcti)?;
    let device_id = match device_id {
        Some(d) => d,
        None => default_device_id(&tpm.ek_certificate()?)?,
    };
    let e = confidant_keys::kbs::device::client::enrol(&client, &mut tpm, &device_id)?;
    let identity = Identity {
        device_id: e.device_id,
        kbs_url: kbs.url.clone(),
        ak_public: Hex(e.ak.public_bytes()?),
        ak_private: Hex(e.ak.private_bytes()),
        ak_name: Hex(e.ak_name),
    };
    state.save_identity(&identity)?;
    Ok(identity)
}
