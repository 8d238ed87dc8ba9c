//! The model key: unsealed locally when the PCRs are those it was sealed
//! to, otherwise asked of the broker (attestation with a fresh quote) and
//! sealed again to the PCR values the broker accepted.

use std::collections::BTreeMap;

use confidant_attest::attester::{Attester, BoundData, TpmAttester};
use confidant_attest::{EvidenceBundle, Result as AttestResult};
use confidant_keys::kbs::Tee;
use confidant_keys::kbs::client::{ClientConfig, fetch_data_key};
use confidant_keys::{DATA_KEY_LEN, DataKey, HpkeKeyPair, KeyId};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::seal::SealingTpm;
use crate::state::{Identity, StateDir};

/// Where the key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// Unsealed by the TPM: no network needed.
    Unsealed,
    /// Released by the broker after attestation, then sealed.
    Broker,
}

/// What getting the key needs.
#[derive(Debug, Clone)]
pub struct KeyRequest<'a> {
    /// TPM TCTI.
    pub tcti: &'a str,
    /// State directory (identity, sealed key).
    pub state: &'a StateDir,
    /// The broker.
    pub kbs: ClientConfig,
    /// The model's key id.
    pub key_id: KeyId,
    /// SHA-256 PCRs quoted to the broker and sealed to.
    pub pcrs: Vec<u8>,
}

/// The TPM attester with the device's AK, remembering the PCR values of
/// the quote it produced (the values the key is then sealed to).
struct Quoting {
    tpm: TpmAttester,
    quoted: Option<BTreeMap<u8, [u8; 32]>>,
}

impl Attester for Quoting {
    fn name(&self) -> String {
        self.tpm.name()
    }
    fn evidence(&mut self, data: &BoundData) -> AttestResult<EvidenceBundle> {
        let b = self.tpm.evidence(data)?;
        if let EvidenceBundle::Tpm { quote, .. } = &b {
            self.quoted = quote
                .pcrs
                .iter()
                .map(|(i, v)| Some((*i, <[u8; 32]>::try_from(v.as_bytes()).ok()?)))
                .collect();
        }
        Ok(b)
    }
}

/// Opens the TPM attester with the enrolled AK, quoting `pcrs`.
pub fn attester(tcti: &str, identity: &Identity, pcrs: &[u8]) -> Result<TpmAttester> {
    let mut tpm = TpmAttester::open(tcti)?;
    tpm.use_ak(identity.ak()?);
    tpm.pcrs = pcrs.to_vec();
    Ok(tpm)
}

/// Unseals the key from the TPM. `Ok(None)` when nothing is sealed or the
/// TPM refuses (PCRs changed); other failures are errors.
pub fn unseal(req: &KeyRequest<'_>) -> Result<Option<DataKey>> {
    let Some(blob) = req.state.sealed(&req.key_id)? else {
        return Ok(None);
    };
    match SealingTpm::open(req.tcti)?.unseal(&blob) {
        Ok(bytes) => {
            let arr: Zeroizing<[u8; DATA_KEY_LEN]> =
                Zeroizing::new(bytes.as_slice().try_into().map_err(|_| {
                    Error::UnsealRefused(format!(
                        "sealed data is {} bytes, not a data key",
                        bytes.len()
                    ))
                })?);
            Ok(Some(DataKey::from_bytes(&arr)))
        }
        Err(Error::UnsealRefused(why)) => {
            tracing::warn!(key_id = %req.key_id, "unsealing failed: {why}");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Attests to the broker, receives the key, and seals it to the PCR values
/// the broker accepted.
pub fn from_broker(req: &KeyRequest<'_>) -> Result<DataKey> {
    let identity = req.state.identity()?;
    let mut q = Quoting {
        tpm: attester(req.tcti, &identity, &req.pcrs)?,
        quoted: None,
    };
    let mut cfg = req.kbs.clone();
    cfg.tee = Some(Tee::Tpm);
    let hpke = HpkeKeyPair::generate();
    // A device has no TLS key of its own; it binds its AK's public area in
    // that place of the binding (KBS.md §8).
    let key = fetch_data_key(
        &cfg,
        &req.key_id,
        &mut q,
        identity.ak_public.as_bytes(),
        &hpke,
    )?;
    let quoted = q.quoted.take().ok_or_else(|| Error::Tpm {
        operation: "quote",
        detail: "no PCR values in the quote".into(),
    })?;
    // One TPM connection at a time (a socket TPM serves one client).
    drop(q);
    let blob = key.seal_with(|k| SealingTpm::open(req.tcti)?.seal(k, &quoted))?;
    req.state.save_sealed(&req.key_id, &blob)?;
    tracing::info!(key_id = %req.key_id, pcrs = ?req.pcrs, "model key released by the broker and sealed in the TPM");
    Ok(key)
}

/// Unseal, or else the broker.
pub fn model_key(req: &KeyRequest<'_>) -> Result<(DataKey, KeySource)> {
    if let Some(k) = unseal(req)? {
        tracing::info!(key_id = %req.key_id, "model key unsealed by the TPM");
        return Ok((k, KeySource::Unsealed));
    }
    Ok((from_broker(req)?, KeySource::Broker))
}
