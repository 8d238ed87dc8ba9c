//! TPM 2.0 attester through tss-esapi 7.x: EK (RSA-2048, template L-1), an
//! ECC P-256 AK under it, credential activation, quotes over SHA-256 PCRs.

use std::str::FromStr;

use tss_esapi::Context;
use tss_esapi::abstraction::{AsymmetricAlgorithmSelection, ak, ek, pcr};
use tss_esapi::attributes::SessionAttributesBuilder;
use tss_esapi::constants::SessionType;
use tss_esapi::handles::KeyHandle;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, SignatureSchemeAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    Data, EncryptedSecret, IdObject, PcrSelectionListBuilder, PcrSlot, Private, Public,
    SignatureScheme, SymmetricDefinition,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::{Marshall, UnMarshall};

use crate::claims::Hex;
use crate::tpm::{CredentialChallenge, TpmQuote};
use crate::{Error, EvidenceBundle, Result};

fn err(e: impl std::fmt::Display) -> Error {
    Error::Attester {
        attester: "tpm",
        detail: e.to_string(),
    }
}

/// An AK created under the EK: its public area and wrapped private part.
#[derive(Debug, Clone)]
pub struct TpmKeys {
    public: Public,
    private: Private,
}

impl TpmKeys {
    /// Marshalled TPMT_PUBLIC of the AK (what the verifier enrols).
    pub fn public_bytes(&self) -> Result<Vec<u8>> {
        self.public.marshall().map_err(err)
    }

    /// Encode for storage, so a serving process can quote with the AK
    /// enrolled earlier:
    /// ```text
    /// magic   "CFAK"              4 bytes
    /// version 1                   1 byte
    /// u16 BE  length, TPMT_PUBLIC (marshalled)
    /// u16 BE  length, TPM2B_PRIVATE contents
    /// ```
    /// The private part is wrapped by the TPM under the EK (it loads only in
    /// the TPM that made it), so the encoding is not secret; still store it
    /// readable by its owner only.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let public = self.public_bytes()?;
        let private = self.private.value();
        let mut out = Vec::with_capacity(KEYS_MAGIC.len() + 5 + public.len() + private.len());
        out.extend_from_slice(KEYS_MAGIC);
        out.push(KEYS_VERSION);
        for (what, part, max) in [
            ("AK public area", public.as_slice(), MAX_KEYS_PUBLIC),
            ("AK private blob", private, MAX_KEYS_PRIVATE),
        ] {
            if part.is_empty() || part.len() > max {
                return Err(Error::malformed(
                    "TPM AK keys",
                    format!("{what} of {} bytes (1..={max} expected)", part.len()),
                ));
            }
            // Bounded by `max` (< 65536) just above.
            out.extend_from_slice(&(part.len() as u16).to_be_bytes());
            out.extend_from_slice(part);
        }
        Ok(out)
    }

    /// Decode what [`TpmKeys::to_bytes`] wrote. Checks the magic, version
    /// and bounds, that nothing trails, and that the public area is a
    /// well-formed TPMT_PUBLIC in its one canonical encoding. Whether the
    /// private blob belongs to this TPM shows when it is loaded.
    pub fn from_bytes(b: &[u8]) -> Result<TpmKeys> {
        let bad = |d: String| Error::malformed("TPM AK keys", d);
        if b.len() > MAX_KEYS_LEN {
            return Err(Error::TooLarge {
                what: "TPM AK keys",
                len: b.len(),
                max: MAX_KEYS_LEN,
            });
        }
        let rest = b
            .strip_prefix(KEYS_MAGIC.as_slice())
            .ok_or_else(|| bad("not a Confidant AK keys file (bad magic)".into()))?;
        let (&version, mut rest) = rest
            .split_first()
            .ok_or_else(|| bad("truncated before the version".into()))?;
        if version != KEYS_VERSION {
            return Err(bad(format!(
                "version {version}, only {KEYS_VERSION} is understood"
            )));
        }
        let mut part = |what: &str, max: usize| -> Result<&[u8]> {
            let (len, tail) = rest
                .split_first_chunk::<2>()
                .ok_or_else(|| bad(format!("truncated before the {what} length")))?;
            let len = u16::from_be_bytes(*len) as usize;
            if len == 0 || len > max {
                return Err(bad(format!("{what} of {len} bytes (1..={max} expected)")));
            }
            let (v, tail) = tail
                .split_at_checked(len)
                .ok_or_else(|| bad(format!("truncated {what}")))?;
            rest = tail;
            Ok(v)
        };
        let public = part("AK public area", MAX_KEYS_PUBLIC)?;
        let private = part("AK private blob", MAX_KEYS_PRIVATE)?;
        if !rest.is_empty() {
            return Err(bad(format!("{} bytes after the private blob", rest.len())));
        }
        // The crate's own bounded parser first, then the TSS unmarshaller;
        // marshalling back must give the same bytes (nothing ignored).
        crate::tpm::wire::parse_public(public)?;
        let parsed = Public::unmarshall(public).map_err(|e| bad(format!("AK public area: {e}")))?;
        if parsed.marshall().map_err(err)? != public {
            return Err(bad("AK public area is not canonically encoded".into()));
        }
        let private = Private::try_from(private.to_vec())
            .map_err(|e| bad(format!("AK private blob: {e}")))?;
        Ok(TpmKeys {
            public: parsed,
            private,
        })
    }

    /// The AK's private part as the TPM wrapped it under the EK
    /// (TPM2B_PRIVATE contents): useless outside this TPM, kept by the
    /// device so it can load the same AK after a restart.
    pub fn private_bytes(&self) -> Vec<u8> {
        self.private.value().to_vec()
    }

    /// An AK saved earlier with [`TpmKeys::public_bytes`] and
    /// [`TpmKeys::private_bytes`]. The TPM checks the pair when it loads it.
    pub fn from_parts(public: &[u8], private: &[u8]) -> Result<Self> {
        use tss_esapi::traits::UnMarshall;
        Ok(TpmKeys {
            public: Public::unmarshall(public).map_err(err)?,
            private: Private::try_from(private.to_vec()).map_err(err)?,
        })
    }
}

/// Magic of [`TpmKeys::to_bytes`].
const KEYS_MAGIC: &[u8; 4] = b"CFAK";
/// Version of [`TpmKeys::to_bytes`].
const KEYS_VERSION: u8 = 1;
/// Largest marshalled TPMT_PUBLIC stored (an RSA-4096 key needs about 600 bytes).
const MAX_KEYS_PUBLIC: usize = 1024;
/// Largest TPM2B_PRIVATE contents stored (sizeof(_PRIVATE) is below this).
const MAX_KEYS_PRIVATE: usize = 2048;
/// Largest encoding accepted.
const MAX_KEYS_LEN: usize = KEYS_MAGIC.len() + 1 + 2 + MAX_KEYS_PUBLIC + 2 + MAX_KEYS_PRIVATE;

/// TPM attester.
pub struct TpmAttester {
    ctx: Context,
    keys: Option<TpmKeys>,
    /// PCRs quoted by [`super::Attester::evidence`] (SHA-256 bank).
    pub pcrs: Vec<u8>,
}

impl std::fmt::Debug for TpmAttester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TpmAttester")
            .field("pcrs", &self.pcrs)
            .finish_non_exhaustive()
    }
}

fn slot(i: u8) -> Result<PcrSlot> {
    PcrSlot::try_from(1u32.checked_shl(i as u32).unwrap_or(0)).map_err(err)
}

impl TpmAttester {
    /// Open the TPM at `tcti` (`device:/dev/tpmrm0`, `swtpm:port=2321`, ...).
    pub fn open(tcti: &str) -> Result<Self> {
        let conf = TctiNameConf::from_str(tcti).map_err(err)?;
        let ctx = Context::new(conf).map_err(err)?;
        Ok(TpmAttester {
            ctx,
            keys: None,
            pcrs: (0..8).collect(),
        })
    }

    fn ek(&mut self) -> Result<KeyHandle> {
        ek::create_ek_object_2(
            &mut self.ctx,
            AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
            None,
        )
        .map_err(err)
    }

    /// The RSA-2048 EK certificate (NV index 0x01c00002).
    pub fn ek_certificate(&mut self) -> Result<Vec<u8>> {
        ek::retrieve_ek_pubcert(
            &mut self.ctx,
            AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
        )
        .map_err(err)
    }

    /// Create a new ECC P-256 ECDSA AK under the EK and use it from now on.
    pub fn create_ak(&mut self) -> Result<TpmKeys> {
        let ek = self.ek()?;
        let r = ak::create_ak_2(
            &mut self.ctx,
            ek,
            HashingAlgorithm::Sha256,
            AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
            SignatureSchemeAlgorithm::EcDsa,
            None,
            None,
        );
        let _ = self.ctx.flush_context(ek.into());
        let r = r.map_err(err)?;
        let keys = TpmKeys {
            public: r.out_public,
            private: r.out_private,
        };
        self.keys = Some(keys.clone());
        Ok(keys)
    }

    /// Use an AK created earlier.
    pub fn use_ak(&mut self, keys: TpmKeys) {
        self.keys = Some(keys);
    }

    fn load_ak(&mut self) -> Result<(KeyHandle, KeyHandle)> {
        let keys = match &self.keys {
            Some(k) => k.clone(),
            None => self.create_ak()?,
        };
        let ek = self.ek()?;
        match ak::load_ak(&mut self.ctx, ek, None, keys.private, keys.public) {
            Ok(h) => Ok((ek, h)),
            Err(e) => {
                let _ = self.ctx.flush_context(ek.into());
                Err(err(e))
            }
        }
    }

    /// TPM2_ActivateCredential with the current AK and the EK: returns the
    /// secret the verifier sealed (TPM 2.0 Part 3, 12.5).
    pub fn activate_credential(&mut self, ch: &CredentialChallenge) -> Result<Vec<u8>> {
        let (ek, ak_h) = self.load_ak()?;
        let r = self.activate_inner(ek, ak_h, ch);
        let _ = self.ctx.flush_context(ak_h.into());
        let _ = self.ctx.flush_context(ek.into());
        r
    }

    fn activate_inner(
        &mut self,
        ek: KeyHandle,
        ak_h: KeyHandle,
        ch: &CredentialChallenge,
    ) -> Result<Vec<u8>> {
        let (attrs, mask) = SessionAttributesBuilder::new().build();
        let start = |ctx: &mut Context, ty| -> Result<AuthSession> {
            let s = ctx
                .start_auth_session(
                    None,
                    None,
                    None,
                    ty,
                    SymmetricDefinition::AES_128_CFB,
                    HashingAlgorithm::Sha256,
                )
                .map_err(err)?
                .ok_or_else(|| err("no session"))?;
            ctx.tr_sess_set_attributes(s, attrs, mask).map_err(err)?;
            Ok(s)
        };
        let hmac = start(&mut self.ctx, SessionType::Hmac)?;
        let policy = start(&mut self.ctx, SessionType::Policy)?;
        // The EK's authPolicy is PolicySecret(TPM_RH_ENDORSEMENT) (EK profile, template L-1).
        let policy_session = PolicySession::try_from(policy).map_err(err)?;
        self.ctx
            .execute_with_session(Some(hmac), |ctx| {
                ctx.policy_secret(
                    policy_session,
                    tss_esapi::handles::AuthHandle::Endorsement,
                    Default::default(),
                    Default::default(),
                    Default::default(),
                    None,
                )
            })
            .map_err(err)?;
        self.ctx.set_sessions((Some(hmac), Some(policy), None));
        let blob = IdObject::try_from(ch.credential_blob.as_bytes().to_vec()).map_err(err)?;
        let secret =
            EncryptedSecret::try_from(ch.encrypted_secret.as_bytes().to_vec()).map_err(err)?;
        let r = self.ctx.activate_credential(ak_h, ek, blob, secret);
        self.ctx.clear_sessions();
        let _ = self
            .ctx
            .flush_context(tss_esapi::handles::SessionHandle::from(hmac).into());
        let _ = self
            .ctx
            .flush_context(tss_esapi::handles::SessionHandle::from(policy).into());
        Ok(r.map_err(err)?.value().to_vec())
    }

    /// TPM2_Quote over SHA-256 `pcrs` with `extra_data` as qualifying data.
    pub fn quote(&mut self, extra_data: &[u8], pcrs: &[u8]) -> Result<TpmQuote> {
        let slots = pcrs.iter().map(|&i| slot(i)).collect::<Result<Vec<_>>>()?;
        let selection = PcrSelectionListBuilder::new()
            .with_selection(HashingAlgorithm::Sha256, &slots)
            .build()
            .map_err(err)?;
        let (ek, ak_h) = self.load_ak()?;
        let _ = self.ctx.flush_context(ek.into());
        let data = Data::try_from(extra_data.to_vec()).map_err(err)?;
        let r = self.ctx.execute_with_nullauth_session(|ctx| {
            ctx.quote(ak_h, data, SignatureScheme::Null, selection.clone())
        });
        let values = pcr::read_all(&mut self.ctx, selection);
        let _ = self.ctx.flush_context(ak_h.into());
        let (attest, sig) = r.map_err(err)?;
        let values = values.map_err(err)?;
        let mut out = std::collections::BTreeMap::new();
        if let Some(bank) = values.pcr_bank(HashingAlgorithm::Sha256) {
            for (s, d) in bank {
                let idx = u32::from(*s).trailing_zeros() as u8;
                out.insert(idx, Hex(d.value().to_vec()));
            }
        }
        Ok(TpmQuote {
            attest: Hex(attest.marshall().map_err(err)?),
            signature: Hex(sig.marshall().map_err(err)?),
            pcrs: out,
        })
    }

    /// Sign `message` (at most 1024 bytes) with the AK: TPM2_Hash over the
    /// owner hierarchy, then TPM2_Sign with its validation ticket (TPM 2.0
    /// Part 3, 15.4 and 20.2). A restricted key signs only digests the TPM
    /// computed itself, and TPM2_Hash gives no ticket for data that starts
    /// with TPM_GENERATED_VALUE, so such a signature never passes for a
    /// quote. Returns the marshalled TPMT_SIGNATURE; verify it with
    /// [`crate::tpm::verify_ak_signature`].
    pub fn sign(&mut self, message: &[u8]) -> Result<Vec<u8>> {
        use tss_esapi::interface_types::resource_handles::Hierarchy;
        use tss_esapi::structures::MaxBuffer;
        let data = MaxBuffer::try_from(message.to_vec()).map_err(err)?;
        let (ek, ak_h) = self.load_ak()?;
        let _ = self.ctx.flush_context(ek.into());
        let r = self
            .ctx
            .execute_without_session(|ctx| {
                ctx.hash(data, HashingAlgorithm::Sha256, Hierarchy::Owner)
            })
            .and_then(|(digest, ticket)| {
                self.ctx.execute_with_nullauth_session(|ctx| {
                    ctx.sign(ak_h, digest, SignatureScheme::Null, ticket)
                })
            });
        let _ = self.ctx.flush_context(ak_h.into());
        r.map_err(err)?.marshall().map_err(err)
    }

    /// Extend SHA-256 PCR `index` with `digest` (for tests and measured boot tools).
    pub fn pcr_extend(&mut self, index: u8, digest: &[u8; 32]) -> Result<()> {
        use tss_esapi::structures::{Digest, DigestValues};
        let mut vals = DigestValues::new();
        vals.set(
            HashingAlgorithm::Sha256,
            Digest::try_from(digest.to_vec()).map_err(err)?,
        );
        let handle = tss_esapi::handles::PcrHandle::try_from(index as u32).map_err(err)?;
        self.ctx
            .execute_with_nullauth_session(|ctx| ctx.pcr_extend(handle, vals))
            .map_err(err)
    }
}

impl super::Attester for TpmAttester {
    fn name(&self) -> String {
        "tpm".into()
    }
    fn evidence(&mut self, data: &super::BoundData) -> Result<EvidenceBundle> {
        let pcrs = self.pcrs.clone();
        let quote = self.quote(&data.tpm_extra_data, &pcrs)?;
        let ak_public = match &self.keys {
            Some(k) => k.public_bytes()?,
            None => return Err(err("no AK")),
        };
        Ok(EvidenceBundle::Tpm {
            quote,
            ak_public: Hex(ak_public),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tss_esapi::attributes::ObjectAttributesBuilder;
    use tss_esapi::interface_types::algorithm::PublicAlgorithm;
    use tss_esapi::structures::{
        EccParameter, EccPoint, EccScheme, HashScheme, KeyDerivationFunctionScheme, PublicBuilder,
        PublicEccParametersBuilder,
    };

    /// An AK-shaped public area (restricted ECDSA P-256 signing key) and an
    /// opaque private blob, as `create_ak` returns them, without a TPM.
    fn keys() -> TpmKeys {
        let params = PublicEccParametersBuilder::new()
            .with_ecc_scheme(EccScheme::EcDsa(HashScheme::new(HashingAlgorithm::Sha256)))
            .with_curve(EccCurve::NistP256)
            .with_is_signing_key(true)
            .with_is_decryption_key(false)
            .with_restricted(true)
            .with_key_derivation_function_scheme(KeyDerivationFunctionScheme::Null)
            .build()
            .unwrap();
        let attrs = ObjectAttributesBuilder::new()
            .with_fixed_tpm(true)
            .with_fixed_parent(true)
            .with_sensitive_data_origin(true)
            .with_user_with_auth(true)
            .with_sign_encrypt(true)
            .with_restricted(true)
            .build()
            .unwrap();
        let public = PublicBuilder::new()
            .with_public_algorithm(PublicAlgorithm::Ecc)
            .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
            .with_object_attributes(attrs)
            .with_ecc_parameters(params)
            .with_ecc_unique_identifier(EccPoint::new(
                EccParameter::try_from(vec![0x11; 32]).unwrap(),
                EccParameter::try_from(vec![0x22; 32]).unwrap(),
            ))
            .build()
            .unwrap();
        let private = Private::try_from((0..200u8).collect::<Vec<u8>>()).unwrap();
        TpmKeys { public, private }
    }

    #[test]
    fn keys_round_trip() {
        let k = keys();
        let b = k.to_bytes().unwrap();
        assert_eq!(&b[..5], b"CFAK\x01");
        let back = TpmKeys::from_bytes(&b).unwrap();
        assert_eq!(back.public_bytes().unwrap(), k.public_bytes().unwrap());
        assert_eq!(back.private.value(), k.private.value());
        assert_eq!(back.to_bytes().unwrap(), b);
    }

    #[test]
    fn keys_reject_truncated_extended_and_garbage_input() {
        let b = keys().to_bytes().unwrap();
        for n in 0..b.len() {
            assert!(TpmKeys::from_bytes(&b[..n]).is_err(), "prefix of {n} bytes");
        }
        let mut longer = b.clone();
        longer.push(0);
        assert!(TpmKeys::from_bytes(&longer).is_err(), "trailing byte");

        let public_len = u16::from_be_bytes([b[5], b[6]]) as usize;
        let mutated = |at: usize, v: u8| {
            let mut m = b.clone();
            m[at] = v;
            m
        };
        for (what, m) in [
            ("magic", mutated(0, b'X')),
            ("version", mutated(4, 2)),
            ("public length zero", {
                let mut m = mutated(5, 0);
                m[6] = 0;
                m
            }),
            ("public length past the end", mutated(5, 0xff)),
            // TPMT_PUBLIC.type (first two bytes of the public area) unknown.
            ("public area type", mutated(7, 0x7f)),
            // nameAlg SHA-1 instead of SHA-256.
            ("public area nameAlg", mutated(7 + 3, 0x04)),
            ("private length past the end", mutated(7 + public_len, 0xff)),
        ] {
            assert!(TpmKeys::from_bytes(&m).is_err(), "accepted bad {what}");
        }

        // Deterministic garbage, with and without a valid header.
        let mut x: u32 = 0x9e37_79b9;
        for len in [0usize, 1, 7, 64, 300, 4000] {
            let g: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            assert!(TpmKeys::from_bytes(&g).is_err());
            let mut h = b"CFAK\x01".to_vec();
            h.extend_from_slice(&g);
            assert!(TpmKeys::from_bytes(&h).is_err());
        }
        assert!(matches!(
            TpmKeys::from_bytes(&vec![0; MAX_KEYS_LEN + 1]),
            Err(Error::TooLarge { .. })
        ));
    }
}
