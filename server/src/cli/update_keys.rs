//! Keys of `confidant update repo …`: a PKCS#8 PEM file (as before) or a
//! key pair in a PKCS#11 token, named by a `pkcs11:` URI. Token keys sign
//! inside the token through the `keys` crate ([`Pkcs11SigningKey`]), and
//! [`TokenSigner`] adapts them to firmware-update's [`Signer`] trait (the
//! adapter lives here so that firmware-update does not depend on cryptoki).
//!
//! ```text
//! --root-key root.pem
//! --root-key 'pkcs11:token=repo;object=root-1?module-path=/usr/lib/softhsm/libsofthsm2.so'
//! ```
//!
//! Without `pin-value` in the URI the PIN comes from `$CONFIDANT_PKCS11_PIN`,
//! as for PKCS#11 KEKs. A key's public half (for `init`, `delegate`,
//! `rotate-root --add-key`) comes from the token's public key object.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use confidant_firmware_update::crypto::{FileSigner, PublicKey, Signer};
use confidant_keys::{Pkcs11PublicKey, Pkcs11SigningKey, Pkcs11Uri, SigningAlgorithm};

/// A key as written on the command line: a PEM file or a `pkcs11:` URI.
#[derive(Clone, Debug)]
pub enum KeyArg {
    /// A PEM file: SPKI public key, or PKCS#8 private key.
    File(PathBuf),
    /// A key pair in a PKCS#11 token.
    Pkcs11(Pkcs11Uri),
}

impl std::str::FromStr for KeyArg {
    type Err = confidant_keys::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.starts_with("pkcs11:") {
            Ok(KeyArg::Pkcs11(Pkcs11Uri::parse_key_pair(s)?))
        } else {
            // Anything else is a path, exactly as before (a file whose name
            // starts with `pkcs11:` is reached as `./pkcs11:…`).
            Ok(KeyArg::File(PathBuf::from(s)))
        }
    }
}

/// The path, or the URI with its PIN redacted.
impl fmt::Display for KeyArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyArg::File(p) => write!(f, "{}", p.display()),
            KeyArg::Pkcs11(u) => fmt::Display::fmt(u, f),
        }
    }
}

/// `--pkcs11` of `repo keygen`: a URI naming a key pair.
pub fn parse_key_pair_uri(s: &str) -> Result<Pkcs11Uri, String> {
    Pkcs11Uri::parse_key_pair(s).map_err(|e| e.to_string())
}

/// `--algo` of `repo keygen`.
pub fn parse_algorithm(s: &str) -> Result<SigningAlgorithm, String> {
    s.parse().map_err(|e: confidant_keys::Error| e.to_string())
}

/// The TUF key object of a token public key.
fn tuf_public(p: &Pkcs11PublicKey) -> anyhow::Result<PublicKey> {
    Ok(match p.algorithm() {
        SigningAlgorithm::Ed25519 => {
            let raw: &[u8; 32] = p
                .as_bytes()
                .try_into()
                .context("Ed25519 public key is not 32 bytes")?;
            PublicKey::ed25519(raw)
        }
        SigningAlgorithm::EcdsaP256 => PublicKey::ecdsa_p256(p.as_bytes())?,
    })
}

/// A key pair in a PKCS#11 token, as a TUF [`Signer`].
#[derive(Debug)]
pub struct TokenSigner {
    key: Pkcs11SigningKey,
    public: PublicKey,
}

impl TokenSigner {
    /// Logs in and finds the key pair named by `uri`.
    pub fn open(uri: &Pkcs11Uri) -> anyhow::Result<Self> {
        Self::new(Pkcs11SigningKey::open(uri).with_context(|| format!("key {uri}"))?)
    }

    /// Wraps an opened (or just generated) token key.
    pub fn new(key: Pkcs11SigningKey) -> anyhow::Result<Self> {
        let public = tuf_public(key.public_key())?;
        Ok(Self { key, public })
    }
}

impl Signer for TokenSigner {
    fn public_key(&self) -> &PublicKey {
        &self.public
    }

    fn sign(&self, msg: &[u8]) -> confidant_firmware_update::Result<Vec<u8>> {
        // The keys crate's errors carry no PIN or key material.
        self.key
            .sign(msg)
            .map_err(|e| confidant_firmware_update::Error::Key(e.to_string()))
    }
}

fn public_key(arg: &KeyArg) -> anyhow::Result<PublicKey> {
    match arg {
        KeyArg::File(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading key {}", p.display()))?;
            PublicKey::from_pem(&text).with_context(|| format!("key {}", p.display()))
        }
        KeyArg::Pkcs11(u) => {
            let p = Pkcs11PublicKey::read(u).with_context(|| format!("key {u}"))?;
            tuf_public(&p).with_context(|| format!("key {u}"))
        }
    }
}

/// Public keys: from PEM files, or from the tokens' public key objects.
pub fn public_keys(args: &[KeyArg]) -> anyhow::Result<Vec<PublicKey>> {
    args.iter().map(public_key).collect()
}

/// The key id a `--remove-key` value names: a PEM file, a `pkcs11:` URI,
/// or the key id itself.
pub fn key_id_of(value: &str) -> anyhow::Result<String> {
    if value.starts_with("pkcs11:") {
        let uri = Pkcs11Uri::parse_key_pair(value)?;
        return Ok(public_key(&KeyArg::Pkcs11(uri))?.key_id()?);
    }
    let p = Path::new(value);
    if p.exists() {
        return Ok(public_key(&KeyArg::File(p.to_owned()))?.key_id()?);
    }
    Ok(value.to_owned())
}

/// Opens one signing key.
pub fn signer(arg: &KeyArg) -> anyhow::Result<Box<dyn Signer>> {
    Ok(match arg {
        KeyArg::File(p) => {
            Box::new(FileSigner::from_pem_file(p).with_context(|| format!("key {}", p.display()))?)
        }
        KeyArg::Pkcs11(u) => Box::new(TokenSigner::open(u)?),
    })
}

/// Opens signing keys: PKCS#8 PEM files, or token key pairs.
pub fn signers(args: &[KeyArg]) -> anyhow::Result<Vec<Box<dyn Signer>>> {
    args.iter().map(signer).collect()
}

/// Borrows opened keys as the slice `Repo` takes.
pub fn as_dyn(s: &[Box<dyn Signer>]) -> Vec<&dyn Signer> {
    s.iter().map(|x| x.as_ref()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_paths_and_uris_are_key_pairs() {
        assert!(
            matches!("root.pem".parse::<KeyArg>(), Ok(KeyArg::File(p)) if p == Path::new("root.pem"))
        );
        assert!(matches!(
            "./pkcs11:x".parse::<KeyArg>(),
            Ok(KeyArg::File(_))
        ));
        let u = "pkcs11:token=repo;object=root-1;type=private?module-path=/m.so&pin-value=9876";
        let k: KeyArg = u.parse().unwrap();
        assert!(matches!(k, KeyArg::Pkcs11(_)));
        let shown = format!("{k} {k:?}");
        assert!(!shown.contains("9876"), "{shown}");
        // A KEK-style URI is refused where a key pair is expected.
        assert!(
            "pkcs11:token=t;object=o;type=secret-key?module-path=/m.so"
                .parse::<KeyArg>()
                .is_err()
        );
    }
}
