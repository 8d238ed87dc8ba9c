//! AMD certificates: ARK, ASK/ASVK, VCEK/VLEK.
//!
//! References: "Versioned Chip Endorsement Key (VCEK) Certificate and KDS
//! Interface Specification" (#57230) and "Versioned Loaded Endorsement Key
//! (VLEK) Certificate Specification" (#58369): chapter 3 (certificate
//! fields, RSASSA-PSS SHA-384 signatures by the ASK/ASVK, P-384 subject key)
//! and the extension table (OIDs 1.3.6.1.4.1.3704.1.*).

use der::asn1::{Ia5StringRef, ObjectIdentifier, OctetStringRef, UintRef};
use der::referenced::OwnedToRef;
use der::{Decode, DecodePem, Encode};
use rsa::signature::Verifier;
use x509_cert::Certificate;

use super::report::{Generation, TcbVersion};
use crate::{Error, Result};

const RSASSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_PRODUCT_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.2");
const OID_BL_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.1");
const OID_TEE_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.2");
const OID_SNP_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.3");
const OID_UCODE_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.8");
const OID_FMC_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.9");
const OID_HWID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.4");
const OID_CSP_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.5");

/// Largest certificate accepted (AMD's are about 1.4 KiB; ARK/ASK 1.6 KiB).
pub const MAX_CERT_LEN: usize = 8 * 1024;
/// Largest chain file accepted.
pub const MAX_CHAIN_LEN: usize = 32 * 1024;

/// Parse one DER or PEM certificate, bounded.
pub fn parse_cert(bytes: &[u8], what: &'static str) -> Result<Certificate> {
    if bytes.len() > MAX_CERT_LEN {
        return Err(Error::TooLarge {
            what,
            len: bytes.len(),
            max: MAX_CERT_LEN,
        });
    }
    if bytes.starts_with(b"-----BEGIN") {
        Certificate::from_pem(bytes).map_err(|e| Error::malformed(what, e.to_string()))
    } else {
        Certificate::from_der(bytes).map_err(|e| Error::malformed(what, e.to_string()))
    }
}

/// Parse a PEM bundle (at most 4 certificates).
pub fn parse_pem_chain(bytes: &[u8]) -> Result<Vec<Certificate>> {
    if bytes.len() > MAX_CHAIN_LEN {
        return Err(Error::TooLarge {
            what: "SNP certificate chain",
            len: bytes.len(),
            max: MAX_CHAIN_LEN,
        });
    }
    let certs = Certificate::load_pem_chain(bytes)
        .map_err(|e| Error::malformed("SNP certificate chain", e.to_string()))?;
    if certs.is_empty() || certs.len() > 4 {
        return Err(Error::malformed(
            "SNP certificate chain",
            format!("{} certificates, expected 1 to 4", certs.len()),
        ));
    }
    Ok(certs)
}

/// Subject common name, for messages and classification.
pub fn common_name(cert: &Certificate) -> String {
    cn_of(&cert.tbs_certificate.subject)
}

fn cn_of(name: &x509_cert::name::Name) -> String {
    const CN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
    for rdn in name.0.iter() {
        for atv in rdn.0.iter() {
            if atv.oid == CN {
                if let Ok(s) = atv.value.decode_as::<der::asn1::Utf8StringRef<'_>>() {
                    return s.to_string();
                }
                if let Ok(s) = atv.value.decode_as::<der::asn1::PrintableStringRef<'_>>() {
                    return s.to_string();
                }
            }
        }
    }
    String::from("?")
}

/// Verify that `issuer` signed `subject` with RSASSA-PSS/SHA-384, salt 48
/// (#57230 chapter 3: "signatureAlgorithm RSASSA-PSS ... SHA-384, MGF1
/// SHA-384, salt length 48"), and that the subject names the issuer.
pub fn verify_signed_by(subject: &Certificate, issuer: &Certificate, what: &str) -> Result<()> {
    if subject.tbs_certificate.issuer != issuer.tbs_certificate.subject {
        return Err(Error::Chain(format!(
            "{what}: issuer {:?} is not {:?}",
            cn_of(&subject.tbs_certificate.issuer),
            common_name(issuer)
        )));
    }
    let alg = &subject.signature_algorithm;
    if alg.oid != RSASSA_PSS || subject.tbs_certificate.signature != *alg {
        return Err(Error::Chain(format!(
            "{what}: signature algorithm {} is not RSASSA-PSS",
            alg.oid
        )));
    }
    let params = alg
        .parameters
        .as_ref()
        .ok_or_else(|| Error::Chain(format!("{what}: RSASSA-PSS without parameters")))?;
    let pss: rsa::pkcs1::RsaPssParams<'_> = params
        .decode_as()
        .map_err(|e| Error::Chain(format!("{what}: bad RSASSA-PSS parameters: {e}")))?;
    const SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
    const MGF1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.8");
    let mgf_hash = pss.mask_gen.parameters.as_ref().map(|p| p.oid);
    if pss.hash.oid != SHA384
        || pss.mask_gen.oid != MGF1
        || mgf_hash != Some(SHA384)
        || pss.salt_len != 48
    {
        return Err(Error::Chain(format!(
            "{what}: RSASSA-PSS parameters are not SHA-384/MGF1-SHA-384/salt 48"
        )));
    }
    let key = rsa::RsaPublicKey::try_from(
        issuer
            .tbs_certificate
            .subject_public_key_info
            .owned_to_ref(),
    )
    .map_err(|e| Error::Chain(format!("{what}: issuer key is not RSA: {e}")))?;
    let vk = rsa::pss::VerifyingKey::<sha2::Sha384>::new(key);
    let sig = rsa::pss::Signature::try_from(subject.signature.raw_bytes())
        .map_err(|e| Error::Chain(format!("{what}: bad signature encoding: {e}")))?;
    let tbs = subject
        .tbs_certificate
        .to_der()
        .map_err(|e| Error::Chain(format!("{what}: {e}")))?;
    vk.verify(&tbs, &sig)
        .map_err(|_| Error::Chain(format!("{what} is not signed by {}", common_name(issuer))))
}

/// Kind of endorsement key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VekKind {
    /// VCEK (chip-unique, signed by the ASK).
    Vcek,
    /// VLEK (loaded by a cloud provider, signed by the ASVK).
    Vlek,
}

impl VekKind {
    /// "VCEK" / "VLEK".
    pub fn name(self) -> &'static str {
        match self {
            VekKind::Vcek => "VCEK",
            VekKind::Vlek => "VLEK",
        }
    }
}

/// What a VCEK/VLEK certifies, read from its extensions.
#[derive(Debug, Clone)]
pub struct VekInfo {
    /// VCEK or VLEK.
    pub kind: VekKind,
    /// productName (e.g. `Milan-B0`).
    pub product: String,
    /// Generation named by productName.
    pub generation: Generation,
    /// The SPLs the key was derived for.
    pub tcb: TcbVersion,
    /// hwID (VCEK only).
    pub hwid: Option<Vec<u8>>,
    /// csp_id (VLEK only).
    pub csp_id: Option<String>,
    /// The P-384 public key, SEC1 uncompressed (checked to be on the curve).
    pub public_key_sec1: Vec<u8>,
}

fn spl(value: &[u8], name: &str) -> Result<u8> {
    let int = UintRef::from_der(value)
        .map_err(|e| Error::malformed("VEK certificate", format!("{name}: {e}")))?;
    match int.as_bytes() {
        [] => Ok(0),
        [b] => Ok(*b),
        _ => Err(Error::malformed(
            "VEK certificate",
            format!("{name} does not fit in 8 bits"),
        )),
    }
}

/// Read a VCEK or VLEK: key type, extensions.
pub fn read_vek(cert: &Certificate) -> Result<VekInfo> {
    let spki = &cert.tbs_certificate.subject_public_key_info;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
    if spki.algorithm.oid != ID_EC_PUBLIC_KEY || curve != Some(SECP384R1) {
        return Err(Error::malformed(
            "VEK certificate",
            "subject key is not ECDSA P-384 (#57230 chapter 3)",
        ));
    }
    let public_key_sec1 = spki.subject_public_key.raw_bytes().to_vec();
    if public_key_sec1.first() != Some(&0x04)
        || p384::ecdsa::VerifyingKey::from_sec1_bytes(&public_key_sec1).is_err()
    {
        return Err(Error::malformed(
            "VEK certificate",
            "invalid uncompressed P-384 point",
        ));
    }
    let mut product = None;
    let (mut bl, mut tee, mut snp, mut ucode, mut fmc) = (None, None, None, None, None);
    let mut hwid = None;
    let mut csp_id = None;
    let mut seen = std::collections::BTreeSet::new();
    for ext in cert.tbs_certificate.extensions.iter().flatten() {
        if !seen.insert(ext.extn_id) {
            return Err(Error::malformed(
                "VEK certificate",
                format!("duplicate extension {}", ext.extn_id),
            ));
        }
        let v = ext.extn_value.as_bytes();
        match ext.extn_id {
            OID_PRODUCT_NAME => {
                let s = Ia5StringRef::from_der(v).map_err(|e| {
                    Error::malformed("VEK certificate", format!("productName: {e}"))
                })?;
                product = Some(s.to_string());
            }
            OID_BL_SPL => bl = Some(spl(v, "blSPL")?),
            OID_TEE_SPL => tee = Some(spl(v, "teeSPL")?),
            OID_SNP_SPL => snp = Some(spl(v, "snpSPL")?),
            OID_UCODE_SPL => ucode = Some(spl(v, "ucodeSPL")?),
            OID_FMC_SPL => fmc = Some(spl(v, "fmcSPL")?),
            OID_HWID => {
                // KDS puts the raw hwID bytes in the extension value; accept a
                // DER OCTET STRING wrapping too (as go-sev-guest does).
                let id = if v.len() == 64 || v.len() == 8 {
                    v.to_vec()
                } else {
                    OctetStringRef::from_der(v)
                        .map_err(|e| Error::malformed("VEK certificate", format!("hwID: {e}")))?
                        .as_bytes()
                        .to_vec()
                };
                hwid = Some(id);
            }
            OID_CSP_ID => {
                let s = Ia5StringRef::from_der(v)
                    .map_err(|e| Error::malformed("VEK certificate", format!("csp_id: {e}")))?;
                csp_id = Some(s.to_string());
            }
            _ => {}
        }
    }
    let product =
        product.ok_or_else(|| Error::malformed("VEK certificate", "no productName extension"))?;
    let generation = Generation::from_product_name(&product).ok_or_else(|| {
        Error::malformed(
            "VEK certificate",
            format!("unknown productName {product:?}"),
        )
    })?;
    let missing = |n: &str| Error::malformed("VEK certificate", format!("no {n} extension"));
    let tcb = TcbVersion {
        fmc: match generation {
            Generation::Turin => Some(fmc.ok_or_else(|| missing("fmcSPL"))?),
            _ => None,
        },
        bootloader: bl.ok_or_else(|| missing("blSPL"))?,
        tee: tee.ok_or_else(|| missing("teeSPL"))?,
        snp: snp.ok_or_else(|| missing("snpSPL"))?,
        microcode: ucode.ok_or_else(|| missing("ucodeSPL"))?,
    };
    let cn = common_name(cert);
    let kind = match (cn.as_str(), &hwid, &csp_id) {
        ("SEV-VCEK", Some(_), None) => VekKind::Vcek,
        ("SEV-VLEK", None, Some(_)) => VekKind::Vlek,
        _ => {
            return Err(Error::malformed(
                "VEK certificate",
                format!(
                    "subject CN {cn:?} with hwID and csp_id extensions not those of a VCEK or a VLEK"
                ),
            ));
        }
    };
    Ok(VekInfo {
        kind,
        product,
        generation,
        tcb,
        hwid,
        csp_id,
        public_key_sec1,
    })
}
