//! TUF keys (TUF 4.2 KEYTYPE/SCHEME/KEYVAL), signature verification with
//! aws-lc-rs (the provider tough 0.24 uses), canonical JSON, and the
//! [`Signer`] trait repository tooling signs through.

use aws_lc_rs::digest;
use aws_lc_rs::signature::{self as sig, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};

use crate::error::{Error, Result};

/// Canonical JSON (OLPC) of a value: the bytes TUF signatures cover.
pub fn canonical_json(value: &Value) -> Result<Vec<u8>> {
    use serde::Serialize;
    let mut out = Vec::new();
    let mut ser =
        serde_json::Serializer::with_formatter(&mut out, olpc_cjson::CanonicalFormatter::new());
    value
        .serialize(&mut ser)
        .map_err(|e| Error::malformed("metadata", format!("no canonical JSON form: {e}")))?;
    Ok(out)
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, data))
}

/// Which verification a key does; unknown types are kept (so metadata that
/// lists them still parses) but never verify anything.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Alg {
    Ed25519,
    EcdsaP256,
    EcdsaP384,
    RsaPss256,
    RsaPkcs1v15Sha256,
    Unsupported,
}

/// A public key as listed in root or delegating targets metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    alg: Alg,
    /// Raw key for aws-lc-rs: Ed25519 32 bytes, EC point, RSA PKCS#1 DER.
    raw: Vec<u8>,
    /// The key object exactly as it appears in metadata.
    json: Value,
}

impl PublicKey {
    /// Parses a TUF key object. Unknown key types or schemes parse as keys
    /// that never verify (TUF: clients ignore keys they do not support).
    pub fn from_json(v: &Value) -> Result<Self> {
        let obj = v
            .as_object()
            .ok_or_else(|| Error::malformed("key", "not an object"))?;
        let s = |k: &str| {
            obj.get(k)
                .and_then(Value::as_str)
                .ok_or_else(|| Error::malformed("key", format!("missing string {k:?}")))
        };
        let keytype = s("keytype")?;
        let scheme = s("scheme")?;
        let public = obj
            .get("keyval")
            .and_then(Value::as_object)
            .ok_or_else(|| Error::malformed("key", "missing keyval object"))?
            .get("public")
            .and_then(Value::as_str);
        let decoded = public.and_then(|p| decode_public(keytype, scheme, p));
        let (alg, raw) = match decoded {
            Some(x) => x,
            None => (Alg::Unsupported, Vec::new()),
        };
        Ok(Self {
            alg,
            raw,
            json: v.clone(),
        })
    }

    /// The key object as it appears in metadata.
    pub fn to_json(&self) -> &Value {
        &self.json
    }

    /// TUF key id: hex SHA-256 of the canonical JSON of the key object
    /// (what python-tuf/securesystemslib compute).
    pub fn key_id(&self) -> Result<String> {
        Ok(sha256_hex(&canonical_json(&self.json)?))
    }

    /// Ed25519 public key bytes, if this is an Ed25519 key.
    pub fn ed25519_bytes(&self) -> Option<[u8; 32]> {
        (self.alg == Alg::Ed25519)
            .then(|| self.raw.as_slice().try_into().ok())
            .flatten()
    }

    /// Whether `signature` over `msg` verifies with this key.
    pub fn verify(&self, msg: &[u8], signature: &[u8]) -> bool {
        let alg: &dyn sig::VerificationAlgorithm = match self.alg {
            Alg::Ed25519 => &sig::ED25519,
            Alg::EcdsaP256 => &sig::ECDSA_P256_SHA256_ASN1,
            Alg::EcdsaP384 => &sig::ECDSA_P384_SHA384_ASN1,
            Alg::RsaPss256 => &sig::RSA_PSS_2048_8192_SHA256,
            Alg::RsaPkcs1v15Sha256 => &sig::RSA_PKCS1_2048_8192_SHA256,
            Alg::Unsupported => return false,
        };
        sig::UnparsedPublicKey::new(alg, &self.raw)
            .verify(msg, signature)
            .is_ok()
    }

    /// The TUF key object (`ed25519`/`ed25519`, hex key) of a raw Ed25519
    /// public key, e.g. one read from a PKCS#11 token's `CKA_EC_POINT`.
    pub fn ed25519(raw: &[u8; 32]) -> Self {
        Self {
            alg: Alg::Ed25519,
            raw: raw.to_vec(),
            json: json!({
                "keytype": "ed25519",
                "scheme": "ed25519",
                "keyval": {"public": hex::encode(raw)},
            }),
        }
    }

    /// The TUF key object (`ecdsa`/`ecdsa-sha2-nistp256`, SPKI PEM) of a
    /// P-256 public key given as its 65-byte uncompressed SEC1 point
    /// (`04 || X || Y`), e.g. one read from a PKCS#11 token. Only the form
    /// is checked here; a point off the curve verifies nothing.
    pub fn ecdsa_p256(point: &[u8]) -> Result<Self> {
        if point.len() != 65 || point[0] != 0x04 {
            return Err(Error::Key(format!(
                "P-256 public key is {} bytes, expected a 65-byte uncompressed point",
                point.len()
            )));
        }
        let mut der = P256_SPKI_PREFIX.to_vec();
        der.extend_from_slice(point);
        let pem = pem::encode(&pem::Pem::new("PUBLIC KEY", der));
        Ok(Self {
            alg: Alg::EcdsaP256,
            raw: point.to_vec(),
            json: json!({
                "keytype": "ecdsa",
                "scheme": "ecdsa-sha2-nistp256",
                "keyval": {"public": pem},
            }),
        })
    }

    /// Reads a public key from a PEM file: an SPKI `PUBLIC KEY` (Ed25519 or
    /// P-256) or a PKCS#8 `PRIVATE KEY` (its public half).
    pub fn from_pem(text: &str) -> Result<Self> {
        let p = pem::parse(text).map_err(|e| Error::Key(format!("not PEM: {e}")))?;
        match p.tag() {
            "PUBLIC KEY" => {
                let der = p.contents();
                if let Some(raw) = der.strip_prefix(ED25519_SPKI_PREFIX.as_slice())
                    && let Ok(raw) = raw.try_into()
                {
                    return Ok(Self::ed25519(raw));
                }
                if let Some(raw) = der.strip_prefix(P256_SPKI_PREFIX.as_slice()) {
                    return Self::ecdsa_p256(raw);
                }
                Err(Error::Key(
                    "public key is neither Ed25519 nor ECDSA P-256".into(),
                ))
            }
            "PRIVATE KEY" => Ok(FileSigner::from_pkcs8_der(p.contents())?.public),
            other => Err(Error::Key(format!("unexpected PEM block {other:?}"))),
        }
    }
}

// DER prefixes of SubjectPublicKeyInfo for the two key types we create.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

fn decode_public(keytype: &str, scheme: &str, public: &str) -> Option<(Alg, Vec<u8>)> {
    match (keytype, scheme) {
        ("ed25519", "ed25519") => {
            let raw = hex::decode(public).ok()?;
            (raw.len() == 32).then_some((Alg::Ed25519, raw))
        }
        ("ecdsa" | "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp256") => {
            Some((Alg::EcdsaP256, ec_point(public)?))
        }
        ("ecdsa" | "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp384") => {
            Some((Alg::EcdsaP384, ec_point(public)?))
        }
        ("rsa", "rsassa-pss-sha256") => Some((Alg::RsaPss256, spki_key(public)?)),
        ("rsa", "rsa-pkcs1v15-sha256") => Some((Alg::RsaPkcs1v15Sha256, spki_key(public)?)),
        _ => None,
    }
}

fn ec_point(public: &str) -> Option<Vec<u8>> {
    if public.starts_with("-----BEGIN") {
        spki_key(public)
    } else {
        hex::decode(public).ok()
    }
}

/// The subjectPublicKey BIT STRING contents of a PEM SubjectPublicKeyInfo.
fn spki_key(pem_text: &str) -> Option<Vec<u8>> {
    let p = pem::parse(pem_text).ok()?;
    if p.tag() != "PUBLIC KEY" {
        return None;
    }
    let der = p.contents();
    let (tag, spki, rest) = der_tlv(der)?;
    if tag != 0x30 || !rest.is_empty() {
        return None;
    }
    let (tag, _alg, rest) = der_tlv(spki)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, bits, rest) = der_tlv(rest)?;
    if tag != 0x03 || !rest.is_empty() || bits.first() != Some(&0) {
        return None;
    }
    Some(bits[1..].to_vec())
}

/// One DER TLV: (tag, contents, remainder). Definite lengths only.
fn der_tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *b.first()?;
    let first = *b.get(1)?;
    let (len, hdr) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | usize::from(*b.get(2 + i)?);
        }
        (len, 2 + n)
    };
    let end = hdr.checked_add(len)?;
    Some((tag, b.get(hdr..end)?, &b[end..]))
}

/// Anything that can sign TUF metadata: a key file here, a PKCS#11 token
/// (the `keys` crate's `Pkcs11SigningKey`, adapted in the `confidant`
/// binary's `update_keys` module) or a cloud KMS elsewhere.
///
/// A PKCS#11 implementation holds a session and an object handle, reports
/// the token key's public half as a [`PublicKey`] (Ed25519 via
/// `CKM_EDDSA`, or P-256 via `CKM_ECDSA` over a SHA-256 digest, with the raw
/// `r||s` re-encoded as a DER `Ecdsa-Sig-Value`, the form TUF's
/// `ecdsa-sha2-nistp256` scheme carries).
pub trait Signer {
    /// The public key, as it is listed in metadata.
    fn public_key(&self) -> &PublicKey;
    /// Signs `msg` (the canonical JSON of a role's `signed` object).
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>>;
}

enum FileKey {
    Ed25519(Ed25519KeyPair),
    EcdsaP256(EcdsaKeyPair),
}

/// A signing key read from a PKCS#8 PEM file (Ed25519 or ECDSA P-256, as
/// `openssl genpkey` writes them). For development and offline ceremonies;
/// production root and targets keys belong in a token.
pub struct FileSigner {
    key: FileKey,
    pub(crate) public: PublicKey,
}

impl std::fmt::Debug for FileSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private key.
        f.debug_struct("FileSigner")
            .field("public", &self.public.json)
            .finish_non_exhaustive()
    }
}

impl FileSigner {
    /// Reads a PKCS#8 PEM private key file.
    pub fn from_pem_file(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(Error::io("reading key", path))?;
        let p = pem::parse(text.as_bytes())
            .map_err(|e| Error::Key(format!("{}: not PEM: {e}", path.display())))?;
        if p.tag() != "PRIVATE KEY" {
            return Err(Error::Key(format!(
                "{}: expected a PKCS#8 PRIVATE KEY",
                path.display()
            )));
        }
        Self::from_pkcs8_der(p.contents())
    }

    fn from_pkcs8_der(der: &[u8]) -> Result<Self> {
        if let Ok(k) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
            let raw = k
                .public_key()
                .as_ref()
                .try_into()
                .map_err(|_| Error::Key("Ed25519 public key is not 32 bytes".into()))?;
            let public = PublicKey::ed25519(raw);
            return Ok(Self {
                key: FileKey::Ed25519(k),
                public,
            });
        }
        if let Ok(k) = EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P256_SHA256_ASN1_SIGNING, der) {
            let public = PublicKey::ecdsa_p256(k.public_key().as_ref())?;
            return Ok(Self {
                key: FileKey::EcdsaP256(k),
                public,
            });
        }
        Err(Error::Key(
            "private key is neither Ed25519 nor ECDSA P-256 PKCS#8".into(),
        ))
    }

    /// Generates a new Ed25519 key and returns it as PKCS#8 PEM.
    pub fn generate_ed25519_pem() -> Result<String> {
        let k = Ed25519KeyPair::generate()
            .map_err(|_| Error::Key("Ed25519 key generation failed".into()))?;
        let doc = k
            .to_pkcs8v1()
            .map_err(|_| Error::Key("Ed25519 PKCS#8 encoding failed".into()))?;
        Ok(pem::encode(&pem::Pem::new(
            "PRIVATE KEY",
            doc.as_ref().to_vec(),
        )))
    }
}

impl Signer for FileSigner {
    fn public_key(&self) -> &PublicKey {
        &self.public
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>> {
        match &self.key {
            FileKey::Ed25519(k) => Ok(k.sign(msg).as_ref().to_vec()),
            FileKey::EcdsaP256(k) => {
                let rng = aws_lc_rs::rand::SystemRandom::new();
                k.sign(&rng, msg)
                    .map(|s| s.as_ref().to_vec())
                    .map_err(|_| Error::Key("ECDSA signing failed".into()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_key_signs_and_public_key_round_trips() {
        let pem_text = FileSigner::generate_ed25519_pem().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        std::fs::write(&path, &pem_text).unwrap();
        let s = FileSigner::from_pem_file(&path).unwrap();
        let sig = s.sign(b"hello").unwrap();
        let parsed = PublicKey::from_json(s.public_key().to_json()).unwrap();
        assert!(parsed.verify(b"hello", &sig));
        assert!(!parsed.verify(b"hellO", &sig));
        assert_eq!(PublicKey::from_pem(&pem_text).unwrap(), *s.public_key());
    }

    #[test]
    fn public_keys_from_raw_bytes_match_the_pem_forms() {
        let pem_text = FileSigner::generate_ed25519_pem().unwrap();
        let from_pem = PublicKey::from_pem(&pem_text).unwrap();
        let raw = from_pem.ed25519_bytes().unwrap();
        assert_eq!(PublicKey::ed25519(&raw), from_pem);

        let rng = aws_lc_rs::rand::SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&sig::ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let signer = FileSigner::from_pkcs8_der(doc.as_ref()).unwrap();
        let point = signer.public_key().raw.clone();
        let rebuilt = PublicKey::ecdsa_p256(&point).unwrap();
        assert_eq!(&rebuilt, signer.public_key());
        let sig = signer.sign(b"m").unwrap();
        assert!(rebuilt.verify(b"m", &sig));
        assert!(PublicKey::ecdsa_p256(&point[1..]).is_err());
        let mut compressed = point[..33].to_vec();
        compressed[0] = 0x02;
        assert!(PublicKey::ecdsa_p256(&compressed).is_err());
    }

    #[test]
    fn unknown_key_types_parse_but_never_verify() {
        let k = PublicKey::from_json(
            &json!({"keytype": "sphincs", "scheme": "x", "keyval": {"public": "00"}}),
        )
        .unwrap();
        assert!(!k.verify(b"m", b"s"));
        assert!(PublicKey::from_json(&json!({"keytype": "ed25519"})).is_err());
    }
}
