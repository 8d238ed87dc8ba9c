//! Key-encryption keys (KEKs) and the wrapped-key file (`keys/FORMAT.md` §4).
//!
//! A data key is stored only wrapped: AES-256-GCM under the model owner's
//! KEK, with the wrapped-key file's own header (which names the key id, the
//! kind of KEK and the KEK's id) as associated data. Two backends:
//! [`FileKek`] (a 32-byte key file, for development) and [`Pkcs11Kek`] (a
//! non-extractable AES key inside an HSM; the wrapping runs in the token).
//!
//! The same token code also holds signing key pairs ([`Pkcs11SigningKey`]:
//! Ed25519 or ECDSA P-256, signing inside the token) for the update
//! repository's offline keys.

mod file;
mod pkcs11;
mod pkcs11_sign;
mod uri;

use std::fmt;
use std::path::{Path, PathBuf};

pub use file::FileKek;
pub use pkcs11::{KekAttributes, Pkcs11Kek};
pub use pkcs11_sign::{MAX_SIGN_INPUT, Pkcs11PublicKey, Pkcs11SigningKey, SigningAlgorithm};
pub use uri::{PIN_ENV, Pkcs11Uri};

use crate::datakey::{DATA_KEY_LEN, DataKey};
use crate::error::{Error, Result};
use crate::header::{Header, KeyId, MAX_KEY_ID_LEN};

/// Magic bytes of a wrapped-key file: `CMDLKEY\n`.
pub const WRAPPED_MAGIC: [u8; 8] = *b"CMDLKEY\n";
/// Wrapped-key file version.
pub const WRAPPED_VERSION: u16 = 1;
/// Longest KEK id.
pub const MAX_KEK_ID_LEN: usize = 64;
/// IV length of the AES-GCM wrapping.
pub const WRAP_IV_LEN: usize = 12;
/// Sealed data key length: 32 bytes of ciphertext and a 16-byte tag.
pub const SEALED_LEN: usize = DATA_KEY_LEN + 16;
const WHAT: &str = "wrapped key";

/// Which backend wrapped a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KekKind {
    /// [`FileKek`]: AES-256-GCM computed in this process.
    File,
    /// [`Pkcs11Kek`]: `CKM_AES_GCM` computed inside a PKCS#11 token.
    Pkcs11,
}

impl KekKind {
    fn to_byte(self) -> u8 {
        match self {
            KekKind::File => 1,
            KekKind::Pkcs11 => 2,
        }
    }
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(KekKind::File),
            2 => Some(KekKind::Pkcs11),
            _ => None,
        }
    }
    /// `file` or `pkcs11`.
    pub fn as_str(self) -> &'static str {
        match self {
            KekKind::File => "file",
            KekKind::Pkcs11 => "pkcs11",
        }
    }
}

/// A data key wrapped by a KEK, as stored in a `.cmdl.key` file. Holds no
/// secret: the sealed bytes are useless without the KEK.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedKey {
    kind: KekKind,
    key_id: KeyId,
    kek_id: Vec<u8>,
    iv: [u8; WRAP_IV_LEN],
    sealed: [u8; SEALED_LEN],
}

impl fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappedKey")
            .field("kind", &self.kind)
            .field("key_id", &self.key_id)
            .field("kek_id", &hex::encode(&self.kek_id))
            .finish_non_exhaustive()
    }
}

impl WrappedKey {
    /// Associated data of the wrapping: the file's bytes before the IV.
    fn aad_for(kind: KekKind, key_id: &KeyId, kek_id: &[u8]) -> Vec<u8> {
        let mut b = Vec::with_capacity(14 + MAX_KEY_ID_LEN + MAX_KEK_ID_LEN);
        b.extend_from_slice(&WRAPPED_MAGIC);
        b.extend_from_slice(&WRAPPED_VERSION.to_be_bytes());
        b.push(kind.to_byte());
        b.push(0);
        // Both lengths are bounded by 64 (checked types / constructor).
        b.push(key_id.as_str().len() as u8);
        b.extend_from_slice(key_id.as_str().as_bytes());
        b.push(kek_id.len() as u8);
        b.extend_from_slice(kek_id);
        b
    }

    /// Associated data for this wrapped key.
    pub(crate) fn aad(&self) -> Vec<u8> {
        Self::aad_for(self.kind, &self.key_id, &self.kek_id)
    }

    /// Serialises the wrapped key (`keys/FORMAT.md` §4).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = self.aad();
        b.extend_from_slice(&self.iv);
        b.extend_from_slice(&self.sealed);
        b
    }

    /// Parses a wrapped-key file's bytes; the whole input must be consumed.
    pub fn parse(input: &[u8]) -> Result<Self> {
        let fail = |r: &str| Error::malformed(WHAT, r.to_owned());
        let take = |pos: &mut usize, n: usize| -> Result<&[u8]> {
            let end = pos
                .checked_add(n)
                .filter(|&e| e <= input.len())
                .ok_or_else(|| fail("input ends early"))?;
            let s = &input[*pos..end];
            *pos = end;
            Ok(s)
        };
        let mut pos = 0usize;
        if take(&mut pos, 8)? != WRAPPED_MAGIC {
            return Err(Error::BadMagic {
                what: "Confidant wrapped key",
            });
        }
        let v = take(&mut pos, 2)?;
        let version = u16::from_be_bytes([v[0], v[1]]);
        if version != WRAPPED_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "wrapped key",
                found: version,
                supported: WRAPPED_VERSION,
            });
        }
        let kind_byte = take(&mut pos, 1)?[0];
        let kind = KekKind::from_byte(kind_byte)
            .ok_or_else(|| fail(&format!("unknown KEK kind {kind_byte}")))?;
        if take(&mut pos, 1)?[0] != 0 {
            return Err(fail("reserved byte is not zero"));
        }
        let k = usize::from(take(&mut pos, 1)?[0]);
        let key_id = std::str::from_utf8(take(&mut pos, k)?)
            .map_err(|_| fail("key id is not UTF-8"))
            .and_then(|s| KeyId::new(s).map_err(|e| fail(&e.to_string())))?;
        let m = usize::from(take(&mut pos, 1)?[0]);
        if m > MAX_KEK_ID_LEN {
            return Err(fail("KEK id longer than 64 bytes"));
        }
        let kek_id = take(&mut pos, m)?.to_vec();
        let mut iv = [0u8; WRAP_IV_LEN];
        iv.copy_from_slice(take(&mut pos, WRAP_IV_LEN)?);
        let mut sealed = [0u8; SEALED_LEN];
        sealed.copy_from_slice(take(&mut pos, SEALED_LEN)?);
        if pos != input.len() {
            return Err(fail("trailing bytes"));
        }
        Ok(WrappedKey {
            kind,
            key_id,
            kek_id,
            iv,
            sealed,
        })
    }

    /// Reads and parses a wrapped-key file (at most 4 KiB are read).
    pub fn read_file(path: &Path) -> Result<Self> {
        use std::io::Read;
        let f = std::fs::File::open(path).map_err(Error::io("opening the wrapped key file"))?;
        let mut buf = Vec::new();
        f.take(4096)
            .read_to_end(&mut buf)
            .map_err(Error::io("reading the wrapped key file"))?;
        WrappedKey::parse(&buf)
    }

    /// Writes the wrapped key to a new file (never overwrites).
    pub fn write_new_file(&self, path: &Path) -> Result<()> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(Error::io("creating the wrapped key file"))?;
        f.write_all(&self.to_bytes())
            .and_then(|()| f.sync_all())
            .map_err(Error::io("writing the wrapped key file"))
    }

    /// Kind of KEK that wrapped the key.
    pub fn kind(&self) -> KekKind {
        self.kind
    }
    /// Key id the wrapping is bound to.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }
    /// Id of the KEK (file KEK: a digest of the key; PKCS#11: `CKA_ID`).
    pub fn kek_id(&self) -> &[u8] {
        &self.kek_id
    }
}

pub(crate) mod sealed {
    use zeroize::Zeroizing;

    use super::{SEALED_LEN, WRAP_IV_LEN};
    use crate::datakey::DATA_KEY_LEN;
    use crate::error::Result;

    /// The raw AES-256-GCM primitive of a backend. Not nameable outside the
    /// crate, so raw key bytes never cross the crate boundary and no other
    /// crate can implement [`super::Kek`].
    pub trait KekOps {
        fn seal_raw(
            &self,
            iv: &[u8; WRAP_IV_LEN],
            aad: &[u8],
            key: &[u8; DATA_KEY_LEN],
        ) -> Result<[u8; SEALED_LEN]>;
        /// `Ok(None)` when authentication fails.
        fn open_raw(
            &self,
            iv: &[u8; WRAP_IV_LEN],
            aad: &[u8],
            sealed: &[u8; SEALED_LEN],
        ) -> Result<Option<Zeroizing<[u8; DATA_KEY_LEN]>>>;
    }
}

/// A key-encryption key: wraps and unwraps data keys, bound to their key id.
/// Implemented by [`FileKek`] and [`Pkcs11Kek`] (sealed).
pub trait Kek: sealed::KekOps {
    /// Which backend this is.
    fn kind(&self) -> KekKind;
    /// Public identifier of the KEK, recorded in wrapped keys (may be empty).
    fn kek_id(&self) -> &[u8];

    /// Wraps `key` for `key_id` under this KEK, with a fresh random IV.
    fn wrap(&self, key_id: &KeyId, key: &DataKey) -> Result<WrappedKey> {
        let mut iv = [0u8; WRAP_IV_LEN];
        crate::datakey::fill_random(&mut iv)?;
        let kek_id = self.kek_id().to_vec();
        let aad = WrappedKey::aad_for(self.kind(), key_id, &kek_id);
        let sealed = self.seal_raw(&iv, &aad, key.expose())?;
        Ok(WrappedKey {
            kind: self.kind(),
            key_id: key_id.clone(),
            kek_id,
            iv,
            sealed,
        })
    }

    /// Unwraps a data key. Distinguishes a KEK of the wrong kind, a KEK with
    /// another id, and a failed authentication.
    fn unwrap(&self, wrapped: &WrappedKey) -> Result<DataKey> {
        if wrapped.kind != self.kind() {
            return Err(Error::KekKindMismatch {
                wrapped: wrapped.kind.as_str(),
                given: self.kind().as_str(),
            });
        }
        if !wrapped.kek_id.is_empty()
            && !self.kek_id().is_empty()
            && wrapped.kek_id != self.kek_id()
        {
            return Err(Error::WrongKek {
                wrapped: hex::encode(&wrapped.kek_id),
                given: hex::encode(self.kek_id()),
            });
        }
        let bytes = self
            .open_raw(&wrapped.iv, &wrapped.aad(), &wrapped.sealed)?
            .ok_or(Error::WrappedKeyAuth)?;
        Ok(DataKey::from_bytes(&bytes))
    }
}

/// Unwraps the data key of `header`'s container: checks that the wrapped
/// key is for the container's key id first ([`Error::KeyIdMismatch`]).
pub fn unwrap_for_container(
    kek: &dyn Kek,
    wrapped: &WrappedKey,
    header: &Header,
) -> Result<DataKey> {
    if wrapped.key_id() != header.key_id() {
        return Err(Error::KeyIdMismatch {
            container: header.key_id().to_string(),
            wrapped: wrapped.key_id().to_string(),
        });
    }
    kek.unwrap(wrapped)
}

/// Where a KEK lives, as written on the command line:
/// `file:PATH` or a `pkcs11:` URI.
#[derive(Clone, Debug)]
pub enum KekRef {
    /// A key file.
    File(PathBuf),
    /// A key object in a PKCS#11 token.
    Pkcs11(Pkcs11Uri),
}

impl std::str::FromStr for KekRef {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        if let Some(path) = s.strip_prefix("file:") {
            if path.is_empty() {
                return Err(Error::invalid("KEK", "file: needs a path"));
            }
            Ok(KekRef::File(PathBuf::from(path)))
        } else if s.starts_with("pkcs11:") {
            Ok(KekRef::Pkcs11(s.parse()?))
        } else {
            Err(Error::invalid("KEK", "expected file:PATH or a pkcs11: URI"))
        }
    }
}

impl fmt::Display for KekRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KekRef::File(p) => write!(f, "file:{}", p.display()),
            KekRef::Pkcs11(u) => fmt::Display::fmt(u, f),
        }
    }
}

impl KekRef {
    /// Opens the KEK (loads the file, or logs in to the token and finds the
    /// key object).
    pub fn open(&self) -> Result<Box<dyn Kek + Send>> {
        Ok(match self {
            KekRef::File(p) => Box::new(FileKek::load(p)?),
            KekRef::Pkcs11(u) => Box::new(Pkcs11Kek::open(u)?),
        })
    }
}
