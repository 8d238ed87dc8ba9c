//! PKCS#11 signing keys: an Ed25519 or ECDSA P-256 key pair held in a
//! token, for signing TUF metadata (the update repository's offline root
//! and targets keys). The private key is sensitive and non-extractable and
//! signs inside the token; this process only sees the public key object.
//!
//! - Ed25519: `CKK_EC_EDWARDS`, signed with `CKM_EDDSA` over the message
//!   (RFC 8032 pure Ed25519); the signature is the 64-byte `R||S`.
//! - ECDSA P-256: `CKK_EC` on `prime256v1`, signed with `CKM_ECDSA` over
//!   the SHA-256 digest of the message (computed here); the token's raw
//!   `r||s` (PKCS#11 3.0 §2.3.1) is re-encoded as a DER `Ecdsa-Sig-Value`
//!   (RFC 3279 §2.2.3), the form TUF's `ecdsa-sha2-nistp256` carries.
//!
//! Every signature is verified against the public key object before it is
//! returned, so a private and a public object that do not belong together
//! (or a faulty token) are caught at signing time, not by a client.
//!
//! Sessions, slots and PINs are handled as for the KEK ([`super::Pkcs11Kek`]):
//! the same URI syntax, parsed with [`Pkcs11Uri::parse_key_pair`].

use std::fmt;

use aws_lc_rs::digest;
use aws_lc_rs::signature::{self as sig, UnparsedPublicKey};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use super::pkcs11::{login, new_object_id, object_error, open_session, refuse_existing};
use super::uri::Pkcs11Uri;
use crate::error::{Error, Result};

/// Longest message signed. Ed25519 sends the whole message to the token;
/// TUF metadata is far smaller than this.
pub const MAX_SIGN_INPUT: usize = 32 << 20;
/// DER OID 1.2.840.10045.3.1.7 (prime256v1), the `CKA_EC_PARAMS` of P-256.
const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER OID 1.3.101.112 (id-Ed25519, RFC 8410).
const ED25519_OID_PARAMS: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];
/// DER PrintableString "edwards25519" (PKCS#11 3.0 §2.3.10 allows the curve
/// name; SoftHSM2 2.6 accepts only this form when generating).
const ED25519_NAME_PARAMS: &[u8] = b"\x13\x0cedwards25519";

/// The signature algorithms a token key may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigningAlgorithm {
    /// Ed25519 (`CKM_EDDSA`); public key 32 bytes.
    Ed25519,
    /// ECDSA P-256 with SHA-256 (`CKM_ECDSA` over the digest); public key
    /// the 65-byte uncompressed SEC1 point.
    EcdsaP256,
}

impl SigningAlgorithm {
    /// `ed25519` or `p256`.
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlgorithm::Ed25519 => "ed25519",
            SigningAlgorithm::EcdsaP256 => "p256",
        }
    }

    fn public_len(self) -> usize {
        match self {
            SigningAlgorithm::Ed25519 => 32,
            SigningAlgorithm::EcdsaP256 => 65,
        }
    }
}

impl std::str::FromStr for SigningAlgorithm {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "ed25519" => Ok(SigningAlgorithm::Ed25519),
            "p256" | "ecdsa-p256" => Ok(SigningAlgorithm::EcdsaP256),
            _ => Err(Error::invalid(
                "signing algorithm",
                "expected ed25519 or p256",
            )),
        }
    }
}

/// The public half of a token key pair, read from its public key object.
#[derive(Clone, PartialEq, Eq)]
pub struct Pkcs11PublicKey {
    algorithm: SigningAlgorithm,
    bytes: Vec<u8>,
}

impl fmt::Debug for Pkcs11PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11PublicKey")
            .field("algorithm", &self.algorithm)
            .field("public", &hex::encode(&self.bytes))
            .finish()
    }
}

impl Pkcs11PublicKey {
    /// Reads the public key object named by `uri` (label, and id if given).
    /// Logs in when a PIN is available (some tokens hide public objects
    /// until then), else reads as a public session.
    pub fn read(uri: &Pkcs11Uri) -> Result<Self> {
        let session = if uri.resolve_pin().is_ok() {
            login(uri, false)?
        } else {
            open_session(uri, false)?
        };
        let handle = find_public(&session, uri, &uri.object, uri.id.as_deref())?;
        Ok(read_public(&session, handle, uri)?.1)
    }

    /// Which algorithm the key is for.
    pub fn algorithm(&self) -> SigningAlgorithm {
        self.algorithm
    }

    /// Ed25519: the 32-byte key. P-256: the 65-byte uncompressed point
    /// (`04 || X || Y`).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Whether `signature` (Ed25519 `R||S`, or a DER ECDSA signature over
    /// SHA-256) over `msg` verifies with this key.
    pub fn verify(&self, msg: &[u8], signature: &[u8]) -> bool {
        let alg: &dyn sig::VerificationAlgorithm = match self.algorithm {
            SigningAlgorithm::Ed25519 => &sig::ED25519,
            SigningAlgorithm::EcdsaP256 => &sig::ECDSA_P256_SHA256_ASN1,
        };
        UnparsedPublicKey::new(alg, &self.bytes)
            .verify(msg, signature)
            .is_ok()
    }
}

/// A signing key pair inside a PKCS#11 token. Holds a logged-in session and
/// object handles, never key material; `Debug` shows the label, id and
/// public key only.
pub struct Pkcs11SigningKey {
    session: Session,
    key: ObjectHandle,
    public: Pkcs11PublicKey,
    label: String,
    id: Vec<u8>,
}

impl fmt::Debug for Pkcs11SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11SigningKey")
            .field("object", &self.label)
            .field("id", &hex::encode(&self.id))
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

fn find_one(
    session: &Session,
    template: &[Attribute],
    what: &str,
    uri: &Pkcs11Uri,
) -> Result<Option<ObjectHandle>> {
    let found = session
        .find_objects(template)
        .map_err(Error::pkcs11("C_FindObjects"))?;
    match found.as_slice() {
        [] => Ok(None),
        [h] => Ok(Some(*h)),
        _ => Err(object_error(format!(
            "several {what} objects labelled {:?} on token {:?}; add id= to the URI",
            uri.object, uri.token
        ))),
    }
}

/// The public key object beside a private key: by its id when it has one
/// (labels of the two halves may differ), else by label.
fn find_public(
    session: &Session,
    uri: &Pkcs11Uri,
    label: &str,
    id: Option<&[u8]>,
) -> Result<ObjectHandle> {
    let mut t = vec![Attribute::Class(ObjectClass::PUBLIC_KEY)];
    let by_id = match id {
        Some(id) if !id.is_empty() => {
            t.push(Attribute::Id(id.to_vec()));
            true
        }
        _ => {
            t.push(Attribute::Label(label.as_bytes().to_vec()));
            false
        }
    };
    let found = match find_one(session, &t, "public key", uri) {
        // Several with that id: narrow by label as well.
        Err(_) if by_id => {
            t.push(Attribute::Label(label.as_bytes().to_vec()));
            find_one(session, &t, "public key", uri)?
        }
        other => other?,
    };
    found.ok_or_else(|| {
        object_error(format!(
            "no public key object labelled {label:?} on token {:?} (the token must hold the \
             public half beside the private key)",
            uri.token
        ))
    })
}

/// Reads a public key object: (key type, the key).
fn read_public(
    session: &Session,
    handle: ObjectHandle,
    uri: &Pkcs11Uri,
) -> Result<(KeyType, Pkcs11PublicKey)> {
    let attrs = session
        .get_attributes(
            handle,
            &[
                AttributeType::KeyType,
                AttributeType::EcParams,
                AttributeType::EcPoint,
            ],
        )
        .map_err(Error::pkcs11("C_GetAttributeValue"))?;
    let (mut key_type, mut params, mut point) = (None, Vec::new(), Vec::new());
    for a in attrs {
        match a {
            Attribute::KeyType(t) => key_type = Some(t),
            Attribute::EcParams(p) => params = p,
            Attribute::EcPoint(p) => point = p,
            _ => {}
        }
    }
    let key_type = key_type
        .ok_or_else(|| object_error(format!("public key {:?} reports no key type", uri.object)))?;
    let algorithm = if key_type == KeyType::EC && params == P256_PARAMS {
        SigningAlgorithm::EcdsaP256
    } else if key_type == KeyType::EC_EDWARDS
        && (params == ED25519_OID_PARAMS || params == ED25519_NAME_PARAMS)
    {
        SigningAlgorithm::Ed25519
    } else {
        return Err(object_error(format!(
            "key {:?} is {key_type} with parameters {}; only Ed25519 and ECDSA P-256 sign TUF \
             metadata here",
            uri.object,
            hex::encode(&params)
        )));
    };
    let bytes = ec_point(algorithm, &point).ok_or_else(|| {
        object_error(format!(
            "public key {:?} has a malformed CKA_EC_POINT ({} bytes)",
            uri.object,
            point.len()
        ))
    })?;
    Ok((key_type, Pkcs11PublicKey { algorithm, bytes }))
}

/// The key from `CKA_EC_POINT`: a DER OCTET STRING holding the point
/// (PKCS#11 3.0 §2.3.3), or the bare point as some tokens return it. The
/// lengths differ, so the two forms cannot be confused.
fn ec_point(algorithm: SigningAlgorithm, value: &[u8]) -> Option<Vec<u8>> {
    let n = algorithm.public_len();
    let key = match value {
        [0x04, len, rest @ ..] if usize::from(*len) == n && rest.len() == n => rest,
        _ if value.len() == n => value,
        _ => return None,
    };
    if algorithm == SigningAlgorithm::EcdsaP256 && key[0] != 0x04 {
        // Compressed points are not what TUF key objects carry.
        return None;
    }
    Some(key.to_vec())
}

/// A raw `r||s` ECDSA P-256 signature as a DER `Ecdsa-Sig-Value`
/// (`SEQUENCE { INTEGER r, INTEGER s }`, minimal positive integers).
fn der_ecdsa_signature(raw: &[u8; 64]) -> Vec<u8> {
    fn integer(out: &mut Vec<u8>, be: &[u8]) {
        let first = be.iter().position(|&b| b != 0).unwrap_or(be.len() - 1);
        let v = &be[first..];
        out.push(0x02);
        // At most 33 bytes: short-form lengths.
        if v[0] & 0x80 != 0 {
            out.push(v.len() as u8 + 1);
            out.push(0);
        } else {
            out.push(v.len() as u8);
        }
        out.extend_from_slice(v);
    }
    let mut body = Vec::with_capacity(70);
    integer(&mut body, &raw[..32]);
    integer(&mut body, &raw[32..]);
    // At most 70 bytes: a short-form length.
    let mut out = vec![0x30, body.len() as u8];
    out.extend_from_slice(&body);
    out
}

impl Pkcs11SigningKey {
    /// Logs in to the token and finds the private key named by the URI and
    /// its public key object. Refuses a private key that is extractable or
    /// not sensitive, cannot sign, or needs a login per signature
    /// (`CKA_ALWAYS_AUTHENTICATE`, not supported).
    pub fn open(uri: &Pkcs11Uri) -> Result<Self> {
        let session = login(uri, false)?;
        let mut t = vec![
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(uri.object.as_bytes().to_vec()),
        ];
        if let Some(id) = &uri.id {
            t.push(Attribute::Id(id.clone()));
        }
        let key = find_one(&session, &t, "private key", uri)?.ok_or_else(|| {
            object_error(format!(
                "no private key labelled {:?} on token {:?}",
                uri.object, uri.token
            ))
        })?;
        let attrs = session
            .get_attributes(
                key,
                &[
                    AttributeType::KeyType,
                    AttributeType::Sign,
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::AlwaysAuthenticate,
                    AttributeType::Id,
                ],
            )
            .map_err(Error::pkcs11("C_GetAttributeValue"))?;
        let (mut key_type, mut can_sign, mut sensitive, mut extractable, mut always_auth) =
            (None, false, false, true, false);
        let mut id = Vec::new();
        for a in attrs {
            match a {
                Attribute::KeyType(v) => key_type = Some(v),
                Attribute::Sign(v) => can_sign = v,
                Attribute::Sensitive(v) => sensitive = v,
                Attribute::Extractable(v) => extractable = v,
                Attribute::AlwaysAuthenticate(v) => always_auth = v,
                Attribute::Id(v) => id = v,
                _ => {}
            }
        }
        if extractable || !sensitive {
            return Err(object_error(format!(
                "private key {:?} is extractable or not sensitive; refusing to use it",
                uri.object
            )));
        }
        if !can_sign {
            return Err(object_error(format!(
                "private key {:?} may not sign (CKA_SIGN is false)",
                uri.object
            )));
        }
        if always_auth {
            return Err(object_error(format!(
                "private key {:?} needs a login per signature (CKA_ALWAYS_AUTHENTICATE), \
                 which is not supported",
                uri.object
            )));
        }
        let public_handle = find_public(&session, uri, &uri.object, Some(&id))?;
        let (public_type, public) = read_public(&session, public_handle, uri)?;
        if key_type != Some(public_type) {
            return Err(object_error(format!(
                "private and public key objects {:?} have different key types",
                uri.object
            )));
        }
        Ok(Pkcs11SigningKey {
            session,
            key,
            public,
            label: uri.object.clone(),
            id,
        })
    }

    /// Generates a key pair in the token: the private key a token object,
    /// private, sensitive, non-extractable, usable only to sign; the public
    /// key a public token object. Both get the URI's label and its id (or
    /// a random 16-byte id). Refuses if a key with that label exists.
    pub fn generate(uri: &Pkcs11Uri, algorithm: SigningAlgorithm) -> Result<Self> {
        let session = login(uri, true)?;
        let label = uri.object.as_bytes().to_vec();
        for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
            let t = [Attribute::Class(class), Attribute::Label(label.clone())];
            refuse_existing(&session, &t, "a key", uri)?;
        }
        let id = new_object_id(uri)?;
        let (mechanism, params) = match algorithm {
            SigningAlgorithm::Ed25519 => (
                Mechanism::EccEdwardsKeyPairGen,
                ED25519_NAME_PARAMS.to_vec(),
            ),
            SigningAlgorithm::EcdsaP256 => (Mechanism::EccKeyPairGen, P256_PARAMS.to_vec()),
        };
        let public_template = [
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::Encrypt(false),
            Attribute::Wrap(false),
            Attribute::Derive(false),
            Attribute::EcParams(params),
            Attribute::Label(label.clone()),
            Attribute::Id(id.clone()),
        ];
        let private_template = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Decrypt(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
            Attribute::Label(label),
            Attribute::Id(id.clone()),
        ];
        let (public_handle, key) = session
            .generate_key_pair(&mechanism, &public_template, &private_template)
            .map_err(Error::pkcs11("C_GenerateKeyPair"))?;
        let (_, public) = read_public(&session, public_handle, uri)?;
        Ok(Pkcs11SigningKey {
            session,
            key,
            public,
            label: uri.object.clone(),
            id,
        })
    }

    /// The public key, from the token's public key object.
    pub fn public_key(&self) -> &Pkcs11PublicKey {
        &self.public
    }

    /// The key pair's `CKA_ID`.
    pub fn id(&self) -> &[u8] {
        &self.id
    }

    /// Signs `msg` inside the token. Ed25519: the 64-byte signature.
    /// P-256: a DER ECDSA signature over SHA-256(`msg`). The signature is
    /// checked against the public key before it is returned.
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>> {
        if msg.len() > MAX_SIGN_INPUT {
            return Err(Error::invalid(
                "message to sign",
                format!("{} bytes, the limit is {MAX_SIGN_INPUT}", msg.len()),
            ));
        }
        let hash;
        let (mechanism, input) = match self.public.algorithm {
            SigningAlgorithm::Ed25519 => (
                Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                msg,
            ),
            SigningAlgorithm::EcdsaP256 => {
                hash = digest::digest(&digest::SHA256, msg);
                (Mechanism::Ecdsa, hash.as_ref())
            }
        };
        let raw = self
            .session
            .sign(&mechanism, self.key, input)
            .map_err(Error::pkcs11("C_Sign"))?;
        let raw: &[u8; 64] = raw.as_slice().try_into().map_err(|_| {
            object_error(format!(
                "token returned a {}-byte signature for {:?}, expected 64",
                raw.len(),
                self.label
            ))
        })?;
        let signature = match self.public.algorithm {
            SigningAlgorithm::Ed25519 => raw.to_vec(),
            SigningAlgorithm::EcdsaP256 => der_ecdsa_signature(raw),
        };
        if !self.public.verify(msg, &signature) {
            return Err(object_error(format!(
                "the token's signature with {:?} does not verify with its public key object \
                 (do the private and public objects belong together?)",
                self.label
            )));
        }
        Ok(signature)
    }
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair};

    use super::*;

    #[test]
    fn raw_ecdsa_signatures_become_der_that_verifies() {
        let rng = SystemRandom::new();
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
            .unwrap();
        let public = Pkcs11PublicKey {
            algorithm: SigningAlgorithm::EcdsaP256,
            bytes: key.public_key().as_ref().to_vec(),
        };
        // Enough signatures that some have r or s with the high bit set
        // or a leading zero byte.
        for i in 0..64u8 {
            let msg = [i; 40];
            let raw: [u8; 64] = key.sign(&rng, &msg).unwrap().as_ref().try_into().unwrap();
            let der = der_ecdsa_signature(&raw);
            assert!(public.verify(&msg, &der), "signature {i}");
            assert!(!public.verify(b"other", &der));
        }
    }

    #[test]
    fn der_integers_are_minimal_and_positive() {
        let mut raw = [0u8; 64];
        raw[31] = 1; // r = 1
        raw[32] = 0x80; // s has its high bit set
        let der = der_ecdsa_signature(&raw);
        assert_eq!(&der[..5], &[0x30, 3 + 35, 0x02, 0x01, 0x01]);
        assert_eq!(&der[5..8], &[0x02, 33, 0x00]);
        assert_eq!(der[8], 0x80);
        assert_eq!(der.len(), 2 + 3 + 35);
        let zero = der_ecdsa_signature(&[0u8; 64]);
        assert_eq!(zero, [0x30, 6, 0x02, 1, 0, 0x02, 1, 0]);
    }

    #[test]
    fn ec_points_in_both_encodings() {
        let mut p256 = vec![0x04];
        p256.extend([7u8; 64]);
        let mut wrapped = vec![0x04, 65];
        wrapped.extend(&p256);
        assert_eq!(
            ec_point(SigningAlgorithm::EcdsaP256, &wrapped),
            Some(p256.clone())
        );
        assert_eq!(
            ec_point(SigningAlgorithm::EcdsaP256, &p256),
            Some(p256.clone())
        );
        let mut compressed = vec![0x02];
        compressed.extend([7u8; 64]);
        assert_eq!(ec_point(SigningAlgorithm::EcdsaP256, &compressed), None);
        assert_eq!(ec_point(SigningAlgorithm::EcdsaP256, &wrapped[..66]), None);
        let ed = [9u8; 32];
        let mut wrapped = vec![0x04, 32];
        wrapped.extend(ed);
        assert_eq!(
            ec_point(SigningAlgorithm::Ed25519, &wrapped),
            Some(ed.to_vec())
        );
        assert_eq!(ec_point(SigningAlgorithm::Ed25519, &ed), Some(ed.to_vec()));
        assert_eq!(ec_point(SigningAlgorithm::Ed25519, &[]), None);
    }

    #[test]
    fn algorithms_by_name() {
        assert_eq!(
            "p256".parse::<SigningAlgorithm>().unwrap(),
            SigningAlgorithm::EcdsaP256
        );
        assert_eq!(
            "ed25519".parse::<SigningAlgorithm>().unwrap(),
            SigningAlgorithm::Ed25519
        );
        assert!("rsa".parse::<SigningAlgorithm>().is_err());
    }
}
