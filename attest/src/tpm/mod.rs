//! TPM 2.0: quote verification, AK enrolment by credential activation.
//!
//! An AK is trusted only after it was bound to an EK whose certificate chains
//! to a configured CA, by TPM2_MakeCredential on the verifier side and
//! TPM2_ActivateCredential on the device (TPM 2.0 Part 1, 24 "Credential
//! Protection"). The result is an [`EnrolledAk`], which only
//! [`Enrolment::finish`] creates. Quotes are then verified against it:
//! signature, `extraData` (the nonce), PCR digest recomputed from the values.

mod credential;
pub mod wire;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub(crate) use credential::cert_to_der;
pub use credential::{CredentialChallenge, EnrolledAk, Enrolment};

/// A PEM or DER certificate as DER (EK CA certificates for [`Enrolment::start`]).
pub fn certificate_der(bytes: &[u8]) -> Result<Vec<u8>> {
    cert_to_der(bytes)
}

use crate::claims::{Claims, Detail, Hex, TeeKind};
use crate::{Error, Result};

/// A TPM quote as it travels: marshalled TPMS_ATTEST and TPMT_SIGNATURE, and
/// the SHA-256 PCR values it covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TpmQuote {
    /// Marshalled TPMS_ATTEST.
    pub attest: Hex,
    /// Marshalled TPMT_SIGNATURE.
    pub signature: Hex,
    /// SHA-256 bank PCR values by index.
    #[serde(deserialize_with = "pcr_values")]
    pub pcrs: BTreeMap<u8, Hex>,
}

/// PCR indices arrive as JSON object keys, i.e. strings (`"7"`). They are
/// parsed here: serde's integer-key support does not work once the quote
/// is inside the internally tagged [`crate::EvidenceBundle`], where serde
/// buffers the content and hands the keys over as strings. Only canonical
/// decimal keys are taken, so two spellings of one index cannot collide.
fn pcr_values<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<BTreeMap<u8, Hex>, D::Error> {
    use serde::de::Error as _;
    BTreeMap::<String, Hex>::deserialize(d)?
        .into_iter()
        .map(|(k, v)| match k.parse::<u8>() {
            Ok(i) if i.to_string() == k => Ok((i, v)),
            _ => Err(D::Error::custom(format!(
                "PCR index {k:?} is not a decimal number 0..=255"
            ))),
        })
        .collect()
}

/// TPM-specific claims.
#[derive(Debug, Clone, Serialize)]
pub struct TpmDetail {
    /// clockInfo.clock (ms since the TPM's last clear).
    pub clock: u64,
    /// clockInfo.resetCount.
    pub reset_count: u32,
    /// clockInfo.restartCount.
    pub restart_count: u32,
    /// clockInfo.safe.
    pub clock_safe: bool,
    /// firmwareVersion.
    pub firmware_version: String,
    /// Name of the AK that signed.
    pub ak_name: Hex,
    /// SHA-256 of the EK certificate the AK was bound to.
    pub ek_cert_sha256: Hex,
}

fn verify_signature(public: &wire::Public, attest: &[u8], sig: &wire::Signature) -> Result<()> {
    use p256::ecdsa::signature::Verifier as _;
    match (&public.key, sig) {
        (wire::PublicKey::EccP256 { x, y }, wire::Signature::EcdsaSha256 { r, s }) => {
            let mut sec1 = vec![0x04];
            sec1.extend_from_slice(&pad32(x)?);
            sec1.extend_from_slice(&pad32(y)?);
            let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
                .map_err(|_| Error::Tpm("AK is not a valid P-256 point".into()))?;
            let sig = p256::ecdsa::Signature::from_scalars(pad32(r)?, pad32(s)?)
                .map_err(|_| Error::Tpm("quote signature r/s out of range".into()))?;
            vk.verify(attest, &sig).map_err(|_| {
                Error::Tpm("quote signature does not verify under the enrolled AK".into())
            })
        }
        (wire::PublicKey::Rsa { n, e }, wire::Signature::RsassaSha256(s)) => {
            let key =
                rsa::RsaPublicKey::new(rsa::BigUint::from_bytes_be(n), rsa::BigUint::from(*e))
                    .map_err(|e| Error::Tpm(format!("AK RSA key: {e}")))?;
            key.verify(
                rsa::Pkcs1v15Sign::new::<Sha256>(),
                &Sha256::digest(attest),
                s,
            )
            .map_err(|_| Error::Tpm("quote signature does not verify under the enrolled AK".into()))
        }
        _ => Err(Error::Tpm(
            "quote signature algorithm does not match the AK's key type".into(),
        )),
    }
}

fn pad32(v: &[u8]) -> Result<[u8; 32]> {
    if v.len() > 32 {
        return Err(Error::malformed(
            "TPM ECC value",
            format!("{} bytes", v.len()),
        ));
    }
    let mut out = [0u8; 32];
    out[32 - v.len()..].copy_from_slice(v);
    Ok(out)
}

/// TPM_GENERATED_VALUE, the first four bytes of every TPMS_ATTEST (Part 2, 6.2).
const TPM_GENERATED_VALUE: [u8; 4] = [0xff, 0x54, 0x43, 0x47];

/// Verify a signature made by an enrolled AK over `message` with TPM2_Sign
/// (what [`crate::attester::TpmAttester::sign`] returns). A message that
/// starts with TPM_GENERATED_VALUE is refused: a TPM never signs such data
/// with a restricted key outside TPM2_Quote and its siblings, so it would be
/// an attestation, not a message (Part 1, 29.2 and Part 3, 15.4).
pub fn verify_ak_signature(ak: &EnrolledAk, message: &[u8], signature: &[u8]) -> Result<()> {
    if message.starts_with(&TPM_GENERATED_VALUE) {
        return Err(Error::Tpm(
            "message starts with TPM_GENERATED_VALUE: an attestation structure, not a message"
                .into(),
        ));
    }
    let public = wire::parse_public(ak.public())?;
    let sig = wire::parse_signature(signature)?;
    verify_signature(&public, message, &sig)
        .map_err(|_| Error::Tpm("signature does not verify under the enrolled AK".into()))
}

/// Verify a quote against an enrolled AK. Nonce and PCR values are policy.
pub fn authenticate(q: &TpmQuote, ak: &EnrolledAk) -> Result<Claims> {
    let attest = wire::parse_attest(q.attest.as_bytes())?;
    let sig = wire::parse_signature(q.signature.as_bytes())?;
    let public = wire::parse_public(ak.public())?;
    // Part 3, TPM2_Quote: the signature covers the marshalled TPMS_ATTEST.
    verify_signature(&public, q.attest.as_bytes(), &sig)?;
    // Part 3, TPM2_Quote: pcrDigest = H(concatenation of the selected PCRs,
    // banks in selection order, PCRs in ascending index).
    let mut h = Sha256::new();
    let mut covered = Vec::new();
    for bank in &attest.pcr_select {
        if bank.hash != wire::TPM_ALG_SHA256 {
            return Err(Error::Tpm(format!(
                "PCR bank {:#x} selected; only SHA-256 is verified",
                bank.hash
            )));
        }
        for i in &bank.pcrs {
            let v = q
                .pcrs
                .get(i)
                .ok_or_else(|| Error::Tpm(format!("PCR {i} is quoted but its value is missing")))?;
            if v.as_bytes().len() != 32 {
                return Err(Error::malformed(
                    "TPM PCR value",
                    format!("PCR {i}: {} bytes", v.as_bytes().len()),
                ));
            }
            h.update(v.as_bytes());
            covered.push(*i);
        }
    }
    if let Some(extra) = q.pcrs.keys().find(|k| !covered.contains(k)) {
        return Err(Error::Tpm(format!(
            "PCR {extra} is given but not covered by the quote"
        )));
    }
    if h.finalize().as_slice() != attest.pcr_digest.as_slice() {
        return Err(Error::Tpm(
            "PCR digest mismatch: the PCR values given are not the ones quoted (tampered PCR value)"
                .into(),
        ));
    }
    let detail = TpmDetail {
        clock: attest.clock,
        reset_count: attest.reset_count,
        restart_count: attest.restart_count,
        clock_safe: attest.safe,
        firmware_version: format!("{:#018x}", attest.firmware_version),
        ak_name: Hex(ak.name().to_vec()),
        ek_cert_sha256: Hex(ak.ek_cert_sha256().to_vec()),
    };
    let mut claims = Claims::new(TeeKind::Tpm, &attest.extra_data, Detail::Tpm(detail));
    for i in covered {
        if let Some(v) = q.pcrs.get(&i) {
            claims.measurements.insert(format!("pcr{i}"), v.clone());
        }
    }
    claims.platform_id = Some(Hex(ak.name().to_vec()));
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tpm_bundle_json_round_trips() {
        let quote = TpmQuote {
            attest: Hex(vec![1]),
            signature: Hex(vec![2]),
            pcrs: [(0u8, Hex(vec![3])), (7, Hex(vec![4]))]
                .into_iter()
                .collect(),
        };
        let b = crate::EvidenceBundle::Tpm {
            quote: quote.clone(),
            ak_public: Hex(vec![5]),
        };
        assert_eq!(crate::EvidenceBundle::from_json(&b.to_json()).unwrap(), b);
        let bare = serde_json::to_vec(&quote).unwrap();
        assert_eq!(serde_json::from_slice::<TpmQuote>(&bare).unwrap(), quote);
        let odd = br#"{"attest":"01","signature":"02","pcrs":{"07":"03"}}"#;
        assert!(serde_json::from_slice::<TpmQuote>(odd).is_err());
    }
}
