//! AK enrolment: EK certificate check and TPM2_MakeCredential in software.
//!
//! TPM 2.0 Part 1, 24 "Credential Protection" and 11.4.10.2 (KDFa); Part 3,
//! 12.6 TPM2_MakeCredential. For the RSA-2048 EK of the TCG EK Credential
//! Profile template L-1 (nameAlg SHA-256, AES-128-CFB):
//! ```text
//! seed            random, 32 bytes (size of the EK nameAlg digest)
//! encryptedSecret RSA-OAEP-SHA256(EK, seed, label "IDENTITY\0")
//! symKey          KDFa(SHA-256, seed, "STORAGE", Name(AK), "", 128)
//! encIdentity     AES-128-CFB(symKey, IV = 0, TPM2B_DIGEST(credential))
//! hmacKey         KDFa(SHA-256, seed, "INTEGRITY", "", "", 256)
//! outerHMAC       HMAC-SHA256(hmacKey, encIdentity || Name(AK))
//! credentialBlob  TPM2B_DIGEST(outerHMAC) || encIdentity
//! ```

use der::{Decode, DecodePem, Encode};
use hmac::{Hmac, Mac};
use rsa::signature::Verifier as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use x509_cert::Certificate;
use zeroize::Zeroizing;

use super::wire::{self, attr};
use crate::claims::Hex;
use crate::time::{UnixTime, check_window};
use crate::{Error, Result};

/// PEM or DER certificate to DER, bounded.
pub(crate) fn cert_to_der(bytes: &[u8]) -> Result<Vec<u8>> {
    if bytes.len() > 16 * 1024 {
        return Err(Error::TooLarge {
            what: "certificate",
            len: bytes.len(),
            max: 16 * 1024,
        });
    }
    let cert = if bytes.starts_with(b"-----BEGIN") {
        Certificate::from_pem(bytes)
    } else {
        Certificate::from_der(bytes)
    }
    .map_err(|e| Error::malformed("certificate", e.to_string()))?;
    cert.to_der()
        .map_err(|e| Error::malformed("certificate", e.to_string()))
}

fn kdfa(seed: &[u8], label: &[u8], context_u: &[u8], bits: u32) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::new());
    let mut counter: u32 = 1;
    while out.len() * 8 < bits as usize {
        // Seed is 32 bytes; HMAC accepts keys of any length.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(seed) else {
            break;
        };
        mac.update(&counter.to_be_bytes());
        mac.update(label);
        mac.update(&[0]);
        mac.update(context_u);
        mac.update(&bits.to_be_bytes());
        out.extend_from_slice(&mac.finalize().into_bytes());
        counter += 1;
    }
    out.truncate(bits as usize / 8);
    out
}

/// Verify `cert`'s signature by `issuer` (RSA PKCS#1 v1.5 or ECDSA, SHA-256/384).
fn verify_x509(cert: &Certificate, issuer: &Certificate) -> Result<()> {
    use der::asn1::ObjectIdentifier as Oid;
    const RSA_SHA256: Oid = Oid::new_unwrap("1.2.840.113549.1.1.11");
    const RSA_SHA384: Oid = Oid::new_unwrap("1.2.840.113549.1.1.12");
    const ECDSA_SHA256: Oid = Oid::new_unwrap("1.2.840.10045.4.3.2");
    const ECDSA_SHA384: Oid = Oid::new_unwrap("1.2.840.10045.4.3.3");
    if cert.tbs_certificate.issuer != issuer.tbs_certificate.subject {
        return Err(Error::Chain(
            "EK certificate issuer is not the EK CA".into(),
        ));
    }
    let tbs = cert
        .tbs_certificate
        .to_der()
        .map_err(|e| Error::Chain(e.to_string()))?;
    let sig = cert.signature.raw_bytes();
    let spki = &issuer.tbs_certificate.subject_public_key_info;
    let key = spki.subject_public_key.raw_bytes();
    let bad = || Error::Chain("EK certificate is not signed by the EK CA".into());
    match cert.signature_algorithm.oid {
        o @ (RSA_SHA256 | RSA_SHA384) => {
            use der::referenced::OwnedToRef;
            let k = rsa::RsaPublicKey::try_from(spki.owned_to_ref()).map_err(|_| bad())?;
            let (scheme, digest) = if o == RSA_SHA256 {
                (
                    rsa::Pkcs1v15Sign::new::<Sha256>(),
                    Sha256::digest(&tbs).to_vec(),
                )
            } else {
                (
                    rsa::Pkcs1v15Sign::new::<sha2::Sha384>(),
                    sha2::Sha384::digest(&tbs).to_vec(),
                )
            };
            k.verify(scheme, &digest, sig).map_err(|_| bad())
        }
        ECDSA_SHA256 => {
            let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(key).map_err(|_| bad())?;
            let s = p256::ecdsa::Signature::from_der(sig).map_err(|_| bad())?;
            vk.verify(&tbs, &s).map_err(|_| bad())
        }
        ECDSA_SHA384 => {
            let vk = p384::ecdsa::VerifyingKey::from_sec1_bytes(key).map_err(|_| bad())?;
            let s = p384::ecdsa::Signature::from_der(sig).map_err(|_| bad())?;
            vk.verify(&tbs, &s).map_err(|_| bad())
        }
        other => Err(Error::Chain(format!(
            "EK certificate signature algorithm {other} not supported"
        ))),
    }
}

/// What the verifier sends the device: the TPM2_ActivateCredential inputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialChallenge {
    /// TPM2B_ID_OBJECT contents (credentialBlob).
    pub credential_blob: Hex,
    /// TPM2B_ENCRYPTED_SECRET contents (secret).
    pub encrypted_secret: Hex,
}

/// An enrolment in progress: holds the secret the device must recover.
pub struct Enrolment {
    ak_public: Vec<u8>,
    ak_name: Vec<u8>,
    ek_cert_sha256: [u8; 32],
    secret: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Enrolment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrolment")
            .field("ak_name", &hex::encode(&self.ak_name))
            .finish_non_exhaustive()
    }
}

impl Enrolment {
    /// Start enrolling the AK `ak_public` (marshalled TPMT_PUBLIC) of the
    /// device whose RSA-2048 EK certificate is `ek_cert` (DER or PEM).
    ///
    /// Checks: the EK certificate is within its validity at `at` and signed
    /// by one of `ek_cas` (DER); the AK is a restricted signing key that is
    /// fixedTPM, fixedParent and sensitiveDataOrigin (Part 2, 8.3.3: only such
    /// a key can sign TPM_GENERATED attestations).
    pub fn start(
        ek_cert: &[u8],
        ek_cas: &[Vec<u8>],
        ak_public: &[u8],
        at: UnixTime,
    ) -> Result<(Enrolment, CredentialChallenge)> {
        let ek_der = cert_to_der(ek_cert)?;
        let ek = Certificate::from_der(&ek_der)
            .map_err(|e| Error::malformed("EK certificate", e.to_string()))?;
        if ek_cas.is_empty() {
            return Err(Error::Chain(
                "no EK CA configured ([tpm] ek_ca_files)".into(),
            ));
        }
        let mut chained = Err(Error::Chain(
            "EK certificate is not issued by a configured EK CA".into(),
        ));
        for ca_der in ek_cas {
            let ca = Certificate::from_der(ca_der)
                .map_err(|e| Error::malformed("EK CA certificate", e.to_string()))?;
            if ca.tbs_certificate.subject != ek.tbs_certificate.issuer {
                continue;
            }
            let v = &ca.tbs_certificate.validity;
            check_window(
                "EK CA certificate",
                UnixTime::from_der_time(&v.not_before),
                UnixTime::from_der_time(&v.not_after),
                at,
            )?;
            chained = verify_x509(&ek, &ca);
            if chained.is_ok() {
                break;
            }
        }
        chained?;
        let v = &ek.tbs_certificate.validity;
        check_window(
            "EK certificate",
            UnixTime::from_der_time(&v.not_before),
            UnixTime::from_der_time(&v.not_after),
            at,
        )?;

        let ak = wire::parse_public(ak_public)?;
        let need = attr::FIXED_TPM
            | attr::FIXED_PARENT
            | attr::SENSITIVE_DATA_ORIGIN
            | attr::RESTRICTED
            | attr::SIGN;
        if ak.attributes & need != need || ak.attributes & attr::DECRYPT != 0 {
            return Err(Error::Tpm(format!(
                "AK attributes {:#x} are not those of a restricted, fixed, TPM-generated signing key",
                ak.attributes
            )));
        }
        let ak_name = wire::name_of(ak_public);

        // EK public key from its certificate (RSA, EK template L-1).
        use der::referenced::OwnedToRef;
        let ek_key =
            rsa::RsaPublicKey::try_from(ek.tbs_certificate.subject_public_key_info.owned_to_ref())
                .map_err(|_| {
                    Error::Tpm(
                        "EK certificate key is not RSA (only RSA-2048 EKs are enrolled)".into(),
                    )
                })?;

        let mut rng = rand_core::OsRng;
        let mut seed = Zeroizing::new([0u8; 32]);
        rand_core::RngCore::fill_bytes(&mut rng, seed.as_mut());
        let mut secret = Zeroizing::new(vec![0u8; 32]);
        rand_core::RngCore::fill_bytes(&mut rng, secret.as_mut_slice());

        let encrypted_secret = ek_key
            .encrypt(
                &mut rng,
                rsa::Oaep::new_with_label::<Sha256, _>("IDENTITY\0"),
                seed.as_ref(),
            )
            .map_err(|e| Error::Tpm(format!("RSA-OAEP to the EK: {e}")))?;
        let sym = kdfa(seed.as_ref(), b"STORAGE", &ak_name, 128);
        let mut plain = Zeroizing::new((secret.len() as u16).to_be_bytes().to_vec());
        plain.extend_from_slice(&secret);
        let mut enc = plain.to_vec();
        let key: [u8; 16] = sym
            .as_slice()
            .try_into()
            .map_err(|_| Error::Tpm("KDFa output length".into()))?;
        {
            use cfb_mode::cipher::{AsyncStreamCipher, KeyIvInit};
            cfb_mode::Encryptor::<aes::Aes128>::new(&key.into(), &[0u8; 16].into())
                .encrypt(&mut enc);
        }
        let hmac_key = kdfa(seed.as_ref(), b"INTEGRITY", &[], 256);
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&hmac_key).map_err(|_| Error::Tpm("HMAC key".into()))?;
        mac.update(&enc);
        mac.update(&ak_name);
        let outer = mac.finalize().into_bytes();
        let mut blob = 32u16.to_be_bytes().to_vec();
        blob.extend_from_slice(&outer);
        blob.extend_from_slice(&enc);

        Ok((
            Enrolment {
                ak_public: ak_public.to_vec(),
                ak_name,
                ek_cert_sha256: Sha256::digest(&ek_der).into(),
                secret,
            },
            CredentialChallenge {
                credential_blob: Hex(blob),
                encrypted_secret: Hex(encrypted_secret),
            },
        ))
    }

    /// Finish: the device returned `activated`, what TPM2_ActivateCredential
    /// recovered. Only the TPM holding the EK, with the AK loaded, can.
    pub fn finish(self, activated: &[u8]) -> Result<EnrolledAk> {
        if activated.len() != self.secret.len() || !bool::from(activated.ct_eq(&self.secret)) {
            return Err(Error::Tpm(
                "AK not bound to the EK: credential activation returned the wrong secret".into(),
            ));
        }
        Ok(EnrolledAk {
            ak_public: Hex(self.ak_public),
            ak_name: Hex(self.ak_name),
            ek_cert_sha256: Hex(self.ek_cert_sha256.to_vec()),
        })
    }
}

/// An AK bound to an EK by credential activation.
///
/// Created by [`Enrolment::finish`]; a verifier may persist it in its own
/// registry ([`EnrolledAk::to_record`]) and read it back with
/// [`EnrolledAk::from_trusted_record`] — that store is trusted like a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrolledAk {
    ak_public: Hex,
    ak_name: Hex,
    ek_cert_sha256: Hex,
}

impl EnrolledAk {
    /// Marshalled TPMT_PUBLIC of the AK.
    pub fn public(&self) -> &[u8] {
        self.ak_public.as_bytes()
    }
    /// Name of the AK.
    pub fn name(&self) -> &[u8] {
        self.ak_name.as_bytes()
    }
    /// SHA-256 of the EK certificate.
    pub fn ek_cert_sha256(&self) -> &[u8] {
        self.ek_cert_sha256.as_bytes()
    }
    /// JSON record for the verifier's own registry.
    pub fn to_record(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }
    /// Read a record written by [`EnrolledAk::to_record`] from the verifier's
    /// own registry. Never feed it a record that came with the evidence.
    pub fn from_trusted_record(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > 16 * 1024 {
            return Err(Error::TooLarge {
                what: "AK record",
                len: bytes.len(),
                max: 16 * 1024,
            });
        }
        let r: EnrolledAk = serde_json::from_slice(bytes)
            .map_err(|e| Error::malformed("AK record", e.to_string()))?;
        wire::parse_public(r.public())?;
        if wire::name_of(r.public()) != r.name() {
            return Err(Error::malformed(
                "AK record",
                "name does not match the public area",
            ));
        }
        Ok(r)
    }
}
