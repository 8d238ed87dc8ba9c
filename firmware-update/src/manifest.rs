//! Signed manifests for sensor MCUs, in the wire format of the `no_std`
//! core (`confidant-update-core`). The repository publishes a manifest as a
//! TUF target beside the firmware it describes; the gateway verifies both
//! with TUF and the sensor verifies the manifest with the core alone.

use crate::crypto::{Signer, sha256_hex};
use crate::error::{Error, Result};

/// Builds and signs a manifest for `payload` with an Ed25519 key (a file
/// key, or a token key through its [`Signer`]).
pub fn sign_manifest(
    kind: u8,
    version: &str,
    security_counter: u64,
    payload: &[u8],
    key: &dyn Signer,
) -> Result<Vec<u8>> {
    let public = key
        .public_key()
        .ed25519_bytes()
        .ok_or_else(|| Error::Key("sensor manifests are signed with Ed25519 keys".into()))?;
    let vk =
        ed25519_dalek::VerifyingKey::from_bytes(&public).map_err(|e| Error::Key(e.to_string()))?;
    let mut digest = [0u8; 32];
    let hex_digest = sha256_hex(payload);
    hex::decode_to_slice(hex_digest, &mut digest).map_err(|e| Error::Key(e.to_string()))?;
    let fields = confidant_update_core::ManifestFields {
        kind,
        version,
        security_counter,
        payload_len: payload.len() as u64,
        payload_sha256: digest,
        key_id: confidant_update_core::key_id(&vk),
    };
    let mut buf = [0u8; confidant_update_core::MAX_MANIFEST_LEN];
    let n = fields
        .encode_unsigned(&mut buf)
        .map_err(|e| Error::Key(e.to_string()))?;
    // An Ed25519 Signer signs the message itself (RFC 8032): 64 bytes.
    let sig = key.sign(&buf[..n])?;
    if sig.len() != 64 {
        return Err(Error::Key(format!(
            "Ed25519 signer returned {} bytes, expected 64",
            sig.len()
        )));
    }
    let mut out = buf[..n].to_vec();
    out.extend_from_slice(&sig);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::FileSigner;

    #[test]
    fn manifest_signed_here_verifies_in_the_no_std_core() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.pem");
        std::fs::write(&p, FileSigner::generate_ed25519_pem().unwrap()).unwrap();
        let key = FileSigner::from_pem_file(&p).unwrap();
        let payload = b"sensor firmware image";
        let m = sign_manifest(4, "0.9.1", 12, payload, &key).unwrap();
        let vk =
            ed25519_dalek::VerifyingKey::from_bytes(&key.public.ed25519_bytes().unwrap()).unwrap();
        let v = confidant_update_core::Manifest::verify(&m, &vk).unwrap();
        assert_eq!(v.fields().security_counter, 12);
        let mut d = [0u8; 32];
        hex::decode_to_slice(sha256_hex(payload), &mut d).unwrap();
        v.check_payload(payload.len() as u64, &d).unwrap();
        let mut bad = m.clone();
        bad[12] ^= 1;
        assert!(confidant_update_core::Manifest::verify(&bad, &vk).is_err());
    }
}
