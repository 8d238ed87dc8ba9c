//! The model key sealed in the TPM under a PCR policy.
//!
//! The key becomes the sensitive data of a KeyedHash object (TPM 2.0 Part 1,
//! 27.2.2 "Sealed data") under a storage primary key the TPM derives from
//! the owner seed, so the blob is useless outside this TPM. The object has
//! no `userWithAuth`: only its policy opens it, and the policy is
//! TPM2_PolicyPCR (Part 3, 23.7) over the SHA-256 PCR values the broker
//! accepted in the quote. After any of those PCRs is extended, the policy
//! digest of an unseal session no longer equals the object's `authPolicy`
//! and TPM2_Unseal fails (TPM_RC_POLICY_FAIL).
//!
//! The unseal session is salted with the storage primary key and sets
//! `encrypt`, so the key crosses the bus to the TPM encrypted
//! (Part 1, 21 "Session-based encryption").

use std::collections::BTreeMap;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tss_esapi::Context;
use tss_esapi::attributes::{ObjectAttributesBuilder, SessionAttributesBuilder};
use tss_esapi::constants::SessionType;
use tss_esapi::handles::{KeyHandle, ObjectHandle, SessionHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    Digest, EccPoint, KeyedHashScheme, PcrSelectionList, PcrSelectionListBuilder, PcrSlot, Private,
    Public, PublicBuilder, PublicEccParametersBuilder, PublicKeyedHashParameters, SensitiveData,
    SymmetricDefinition, SymmetricDefinitionObject,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::{Marshall, UnMarshall};
use zeroize::Zeroizing;

use confidant_attest::Hex;

use crate::error::{Error, Result};

/// A sealed object as the device keeps it on disk: the TPM's wrapped blobs
/// and the PCR state they open in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedBlob {
    /// Marshalled TPMT_PUBLIC of the sealed object.
    pub public: Hex,
    /// TPM2B_PRIVATE contents (encrypted under the storage primary key).
    pub private: Hex,
    /// The SHA-256 PCR indices of the policy.
    pub pcrs: Vec<u8>,
    /// SHA-256 over their values at sealing (what TPM2_PolicyPCR compares).
    pub pcr_digest: Hex,
}

/// A connection to the device's TPM for sealing.
pub struct SealingTpm {
    ctx: Context,
}

impl std::fmt::Debug for SealingTpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealingTpm").finish_non_exhaustive()
    }
}

fn selection(pcrs: &[u8]) -> Result<PcrSelectionList> {
    let slots = pcrs
        .iter()
        .map(|&i| {
            PcrSlot::try_from(1u32.checked_shl(u32::from(i)).unwrap_or(0))
                .map_err(Error::tpm("PCR selection"))
        })
        .collect::<Result<Vec<_>>>()?;
    PcrSelectionListBuilder::new()
        .with_selection(HashingAlgorithm::Sha256, &slots)
        .build()
        .map_err(Error::tpm("PCR selection"))
}

/// SHA-256 over the values of `pcrs` in ascending index: the digest
/// TPM2_PolicyPCR computes for a single SHA-256 bank (Part 3, 23.7).
pub fn pcr_digest(values: &BTreeMap<u8, [u8; 32]>) -> [u8; 32] {
    let mut h = Sha256::new();
    for v in values.values() {
        h.update(v);
    }
    h.finalize().into()
}

impl SealingTpm {
    /// Opens the TPM at `tcti` (`device:/dev/tpmrm0`, `swtpm:port=2321`).
    pub fn open(tcti: &str) -> Result<Self> {
        let conf = TctiNameConf::from_str(tcti).map_err(Error::tpm("TCTI"))?;
        let ctx = Context::new(conf).map_err(Error::tpm("opening the TPM"))?;
        Ok(SealingTpm { ctx })
    }

    /// The storage primary key (ECC P-256, AES-128-CFB, owner hierarchy):
    /// the same template always yields the same key.
    fn primary(&mut self) -> Result<KeyHandle> {
        let attrs = ObjectAttributesBuilder::new()
            .with_fixed_tpm(true)
            .with_fixed_parent(true)
            .with_sensitive_data_origin(true)
            .with_user_with_auth(true)
            .with_decrypt(true)
            .with_restricted(true)
            .build()
            .map_err(Error::tpm("primary template"))?;
        let public = PublicBuilder::new()
            .with_public_algorithm(PublicAlgorithm::Ecc)
            .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
            .with_object_attributes(attrs)
            .with_ecc_parameters(
                PublicEccParametersBuilder::new_restricted_decryption_key(
                    SymmetricDefinitionObject::AES_128_CFB,
                    EccCurve::NistP256,
                )
                .build()
                .map_err(Error::tpm("primary template"))?,
            )
            .with_ecc_unique_identifier(EccPoint::default())
            .build()
            .map_err(Error::tpm("primary template"))?;
        self.ctx
            .execute_with_nullauth_session(|ctx| {
                ctx.create_primary(Hierarchy::Owner, public, None, None, None, None)
            })
            .map(|r| r.key_handle)
            .map_err(Error::tpm("creating the storage primary key"))
    }

    fn session(&mut self, ty: SessionType, salt: Option<KeyHandle>) -> Result<AuthSession> {
        let s = self
            .ctx
            .start_auth_session(
                salt,
                None,
                None,
                ty,
                SymmetricDefinition::AES_128_CFB,
                HashingAlgorithm::Sha256,
            )
            .map_err(Error::tpm("starting a session"))?
            .ok_or_else(|| Error::Tpm {
                operation: "starting a session",
                detail: "no session returned".into(),
            })?;
        Ok(s)
    }

    fn flush_session(&mut self, s: AuthSession) {
        let _ = self.ctx.flush_context(SessionHandle::from(s).into());
    }

    /// The policy digest of `TPM2_PolicyPCR(pcrs, digest)` from a trial
    /// session.
    fn policy_digest(&mut self, sel: &PcrSelectionList, digest: &[u8; 32]) -> Result<Digest> {
        let trial = self.session(SessionType::Trial, None)?;
        let r = (|| {
            let ps = PolicySession::try_from(trial).map_err(Error::tpm("trial session"))?;
            self.ctx
                .policy_pcr(
                    ps,
                    Digest::try_from(digest.to_vec()).map_err(Error::tpm("PCR digest"))?,
                    sel.clone(),
                )
                .map_err(Error::tpm("PolicyPCR (trial)"))?;
            self.ctx
                .policy_get_digest(ps)
                .map_err(Error::tpm("PolicyGetDigest"))
        })();
        self.flush_session(trial);
        r
    }

    /// Seals `secret` (at most 128 bytes) so that it opens only while the
    /// SHA-256 PCRs in `values` hold those values.
    pub fn seal(&mut self, secret: &[u8], values: &BTreeMap<u8, [u8; 32]>) -> Result<SealedBlob> {
        if values.is_empty() {
            return Err(Error::Config("sealing needs at least one PCR".into()));
        }
        let pcrs: Vec<u8> = values.keys().copied().collect();
        let sel = selection(&pcrs)?;
        let digest = pcr_digest(values);
        let policy = self.policy_digest(&sel, &digest)?;
        let attrs = ObjectAttributesBuilder::new()
            .with_fixed_tpm(true)
            .with_fixed_parent(true)
            .with_no_da(true)
            .build()
            .map_err(Error::tpm("sealed object template"))?;
        let public = PublicBuilder::new()
            .with_public_algorithm(PublicAlgorithm::KeyedHash)
            .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
            .with_object_attributes(attrs)
            .with_auth_policy(policy)
            .with_keyed_hash_parameters(PublicKeyedHashParameters::new(KeyedHashScheme::Null))
            .with_keyed_hash_unique_identifier(Digest::default())
            .build()
            .map_err(Error::tpm("sealed object template"))?;
        let data = SensitiveData::try_from(secret.to_vec()).map_err(Error::tpm("sealed data"))?;
        let parent = self.primary()?;
        let r = self.ctx.execute_with_nullauth_session(|ctx| {
            ctx.create(parent, public, None, Some(data), None, None)
        });
        let _ = self.ctx.flush_context(parent.into());
        let created = r.map_err(Error::tpm("creating the sealed object"))?;
        Ok(SealedBlob {
            public: Hex(created
                .out_public
                .marshall()
                .map_err(Error::tpm("marshalling"))?),
            private: Hex(created.out_private.value().to_vec()),
            pcrs,
            pcr_digest: Hex(digest.to_vec()),
        })
    }

    /// Unseals `blob` in the current PCR state: [`Error::UnsealRefused`]
    /// when the PCRs differ from those it was sealed to.
    pub fn unseal(&mut self, blob: &SealedBlob) -> Result<Zeroizing<Vec<u8>>> {
        let public =
            Public::unmarshall(blob.public.as_bytes()).map_err(Error::tpm("sealed public"))?;
        let private = Private::try_from(blob.private.as_bytes().to_vec())
            .map_err(Error::tpm("sealed private"))?;
        let sel = selection(&blob.pcrs)?;
        let parent = self.primary()?;
        let loaded = self
            .ctx
            .execute_with_nullauth_session(|ctx| ctx.load(parent, private, public));
        let handle = match loaded {
            Ok(h) => h,
            Err(e) => {
                let _ = self.ctx.flush_context(parent.into());
                return Err(Error::UnsealRefused(format!(
                    "loading the sealed object: {e}"
                )));
            }
        };
        let session = self.session(SessionType::Policy, Some(parent));
        let r = session.and_then(|s| {
            let out = self.unseal_in(s, handle, sel);
            self.flush_session(s);
            out
        });
        let _ = self.ctx.flush_context(ObjectHandle::from(handle));
        let _ = self.ctx.flush_context(parent.into());
        r
    }

    fn unseal_in(
        &mut self,
        s: AuthSession,
        handle: KeyHandle,
        sel: PcrSelectionList,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let (attrs, mask) = SessionAttributesBuilder::new()
            .with_encrypt(true)
            .with_continue_session(true)
            .build();
        self.ctx
            .tr_sess_set_attributes(s, attrs, mask)
            .map_err(Error::tpm("session attributes"))?;
        let ps = PolicySession::try_from(s).map_err(Error::tpm("policy session"))?;
        // An empty pcrDigest: the TPM takes the current PCR values; the
        // comparison is with the object's authPolicy at TPM2_Unseal.
        self.ctx
            .policy_pcr(ps, Digest::default(), sel)
            .map_err(Error::tpm("PolicyPCR"))?;
        let data = self
            .ctx
            .execute_with_session(Some(s), |ctx| ctx.unseal(ObjectHandle::from(handle)))
            .map_err(|e| Error::UnsealRefused(e.to_string()))?;
        Ok(Zeroizing::new(data.value().to_vec()))
    }

    /// Reads the SHA-256 PCRs `pcrs`.
    pub fn read_pcrs(&mut self, pcrs: &[u8]) -> Result<BTreeMap<u8, [u8; 32]>> {
        let sel = selection(pcrs)?;
        let values = tss_esapi::abstraction::pcr::read_all(&mut self.ctx, sel)
            .map_err(Error::tpm("reading PCRs"))?;
        let mut out = BTreeMap::new();
        if let Some(bank) = values.pcr_bank(HashingAlgorithm::Sha256) {
            for (s, d) in bank {
                let idx = u32::from(*s).trailing_zeros() as u8;
                let v: [u8; 32] = d.value().try_into().map_err(|_| Error::Tpm {
                    operation: "reading PCRs",
                    detail: format!("PCR {idx} is not 32 bytes"),
                })?;
                out.insert(idx, v);
            }
        }
        Ok(out)
    }

    /// Extends SHA-256 PCR `index` with `digest` (measured-boot tools; tests).
    pub fn pcr_extend(&mut self, index: u8, digest: &[u8; 32]) -> Result<()> {
        use tss_esapi::structures::DigestValues;
        let mut vals = DigestValues::new();
        vals.set(
            HashingAlgorithm::Sha256,
            Digest::try_from(digest.to_vec()).map_err(Error::tpm("PCR extend"))?,
        );
        let handle = tss_esapi::handles::PcrHandle::try_from(u32::from(index))
            .map_err(Error::tpm("PCR extend"))?;
        self.ctx
            .execute_with_nullauth_session(|ctx| ctx.pcr_extend(handle, vals))
            .map_err(Error::tpm("PCR extend"))
    }
}
