//! Releasing a data key to an attested TEE: HPKE (RFC 9180) base mode with
//! DHKEM(X25519, HKDF-SHA256), HKDF-SHA256 and AES-256-GCM
//! (`keys/FORMAT.md` §5). The key broker seals; the server, holding the
//! private key it generated in memory and bound into its evidence, opens.
//!
//! The HPKE `info` is `"confidant/v1/data-key\0" ‖ key_id`, so a sealed key
//! released for one model cannot be presented as another's.

use std::fmt;

use hpke::aead::AesGcm256;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use zeroize::Zeroizing;

use crate::datakey::{DATA_KEY_LEN, DataKey};
use crate::error::{Error, Result};
use crate::header::KeyId;

type KemT = X25519HkdfSha256;
const INFO_LABEL: &[u8] = b"confidant/v1/data-key\0";
/// Length of an X25519 public key and of an encapsulated key.
pub const HPKE_PUBLIC_KEY_LEN: usize = 32;

fn info(key_id: &KeyId) -> Vec<u8> {
    let mut v = INFO_LABEL.to_vec();
    v.extend_from_slice(key_id.as_str().as_bytes());
    v
}

/// An HPKE recipient key pair (X25519), generated in memory by the server.
/// The private half is wiped on drop and never printed.
pub struct HpkeKeyPair {
    sk: <KemT as hpke::Kem>::PrivateKey,
    pk: <KemT as hpke::Kem>::PublicKey,
}

impl fmt::Debug for HpkeKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HpkeKeyPair")
            .field("public_key", &hex::encode(self.public_key()))
            .finish_non_exhaustive()
    }
}

impl HpkeKeyPair {
    /// Generates a key pair from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let (sk, pk) = KemT::gen_keypair();
        HpkeKeyPair { sk, pk }
    }

    /// The public key, to be bound into attestation evidence and sent to
    /// the key broker.
    pub fn public_key(&self) -> [u8; HPKE_PUBLIC_KEY_LEN] {
        let mut out = [0u8; HPKE_PUBLIC_KEY_LEN];
        out.copy_from_slice(&self.pk.to_bytes());
        out
    }
}

/// A data key sealed to an HPKE public key: the encapsulated key and the
/// AEAD ciphertext (32 bytes + 16-byte tag). Not secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedDataKey {
    /// HPKE `enc`.
    pub enc: [u8; HPKE_PUBLIC_KEY_LEN],
    /// HPKE ciphertext.
    pub ciphertext: Vec<u8>,
}

/// Seals `key` (named `key_id`) to `recipient_public_key`.
pub fn seal_to_hpke(
    key: &DataKey,
    key_id: &KeyId,
    recipient_public_key: &[u8; HPKE_PUBLIC_KEY_LEN],
) -> Result<SealedDataKey> {
    let hpke_err = |e: hpke::HpkeError| Error::Hpke {
        operation: "seal",
        reason: e.to_string(),
    };
    let pk = <KemT as hpke::Kem>::PublicKey::from_bytes(recipient_public_key).map_err(hpke_err)?;
    let (enc, ciphertext) = hpke::single_shot_seal::<AesGcm256, HkdfSha256, KemT>(
        &OpModeS::Base,
        &pk,
        &info(key_id),
        key.expose(),
        b"",
    )
    .map_err(hpke_err)?;
    let mut e = [0u8; HPKE_PUBLIC_KEY_LEN];
    e.copy_from_slice(&enc.to_bytes());
    Ok(SealedDataKey { enc: e, ciphertext })
}

/// Opens a data key sealed to `recipient` for `key_id`.
pub fn open_from_hpke(
    recipient: &HpkeKeyPair,
    key_id: &KeyId,
    sealed: &SealedDataKey,
) -> Result<DataKey> {
    let hpke_err = |e: hpke::HpkeError| Error::Hpke {
        operation: "open",
        reason: e.to_string(),
    };
    let enc = <KemT as hpke::Kem>::EncappedKey::from_bytes(&sealed.enc).map_err(hpke_err)?;
    let plain = Zeroizing::new(
        hpke::single_shot_open::<AesGcm256, HkdfSha256, KemT>(
            &OpModeR::Base,
            &recipient.sk,
            &enc,
            &info(key_id),
            &sealed.ciphertext,
            b"",
        )
        .map_err(hpke_err)?,
    );
    DataKey::from_slice(&plain).ok_or_else(|| Error::Hpke {
        operation: "open",
        reason: format!(
            "plaintext is {} bytes, a data key is {DATA_KEY_LEN}",
            plain.len()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_binding() {
        let kp = HpkeKeyPair::generate();
        let key = DataKey::generate().unwrap();
        let id = KeyId::new("m1").unwrap();
        let sealed = seal_to_hpke(&key, &id, &kp.public_key()).unwrap();
        let opened = open_from_hpke(&kp, &id, &sealed).unwrap();
        assert_eq!(opened.expose(), key.expose());
        // Bound to the key id.
        assert!(open_from_hpke(&kp, &KeyId::new("m2").unwrap(), &sealed).is_err());
        // Bound to the recipient.
        assert!(open_from_hpke(&HpkeKeyPair::generate(), &id, &sealed).is_err());
    }
}
