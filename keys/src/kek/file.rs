//! File KEK: 32 random bytes in a file readable by its owner only.

use std::fmt;
use std::io::{Read, Write};
use std::path::Path;

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Tag};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::sealed::KekOps;
use super::{Kek, KekKind, SEALED_LEN, WRAP_IV_LEN};
use crate::datakey::{DATA_KEY_LEN, random_secret};
use crate::error::{Error, Result};

/// Length of a file KEK.
pub const FILE_KEK_LEN: usize = 32;
const KEK_ID_LABEL: &[u8] = b"confidant/kek-id/v1\0";

/// A KEK held in a file of exactly 32 random bytes, mode 0600. For
/// development and tests; production keeps its KEK in an HSM
/// ([`super::Pkcs11Kek`]).
pub struct FileKek {
    aead: Aes256Gcm,
    id: [u8; 16],
}

impl fmt::Debug for FileKek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileKek")
            .field("kek_id", &hex::encode(self.id))
            .finish_non_exhaustive()
    }
}

fn kek_file_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::KekFile {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

impl FileKek {
    fn from_secret(key: &Zeroizing<[u8; FILE_KEK_LEN]>) -> Self {
        let mut h = Sha256::new();
        h.update(KEK_ID_LABEL);
        h.update(&key[..]);
        let digest = h.finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        FileKek {
            aead: Aes256Gcm::new(&(**key).into()),
            id,
        }
    }

    /// Creates a new KEK file with mode 0600 (refuses to overwrite) and
    /// returns the KEK.
    pub fn generate(path: &Path) -> Result<Self> {
        let key = random_secret::<FILE_KEK_LEN>()?;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                kek_file_error(path, "already exists; refusing to overwrite a key")
            } else {
                Error::io("creating the KEK file")(e)
            }
        })?;
        let written = f.write_all(&key[..]).and_then(|()| f.sync_all());
        if let Err(e) = written {
            drop(f);
            let _ = std::fs::remove_file(path);
            return Err(Error::io("writing the KEK file")(e));
        }
        Ok(FileKek::from_secret(&key))
    }

    /// Loads a KEK file. Refuses a file that group or others can access,
    /// and one that is not exactly 32 bytes.
    pub fn load(path: &Path) -> Result<Self> {
        let f = std::fs::File::open(path).map_err(Error::io("opening the KEK file"))?;
        let meta = f
            .metadata()
            .map_err(Error::io("reading the KEK file metadata"))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(kek_file_error(
                    path,
                    format!("mode {mode:03o} lets group/others read it; chmod 600"),
                ));
            }
        }
        if meta.len() != FILE_KEK_LEN as u64 {
            return Err(kek_file_error(
                path,
                format!(
                    "{} bytes, a KEK file has exactly {FILE_KEK_LEN}",
                    meta.len()
                ),
            ));
        }
        let mut key = Zeroizing::new([0u8; FILE_KEK_LEN]);
        f.take(FILE_KEK_LEN as u64)
            .read_exact(&mut key[..])
            .map_err(Error::io("reading the KEK file"))?;
        Ok(FileKek::from_secret(&key))
    }
}

impl KekOps for FileKek {
    fn seal_raw(
        &self,
        iv: &[u8; WRAP_IV_LEN],
        aad: &[u8],
        key: &[u8; DATA_KEY_LEN],
    ) -> Result<[u8; SEALED_LEN]> {
        let mut out = [0u8; SEALED_LEN];
        out[..DATA_KEY_LEN].copy_from_slice(key);
        let tag = self
            .aead
            .encrypt_inout_detached(&(*iv).into(), aad, (&mut out[..DATA_KEY_LEN]).into())
            .map_err(|_| Error::invalid("wrapping", "AES-GCM refused the input"))?;
        out[DATA_KEY_LEN..].copy_from_slice(&tag);
        Ok(out)
    }

    fn open_raw(
        &self,
        iv: &[u8; WRAP_IV_LEN],
        aad: &[u8],
        sealed: &[u8; SEALED_LEN],
    ) -> Result<Option<Zeroizing<[u8; DATA_KEY_LEN]>>> {
        let mut key = Zeroizing::new([0u8; DATA_KEY_LEN]);
        key.copy_from_slice(&sealed[..DATA_KEY_LEN]);
        let mut tag = [0u8; 16];
        tag.copy_from_slice(&sealed[DATA_KEY_LEN..]);
        let tag: Tag = tag.into();
        let ok = self
            .aead
            .decrypt_inout_detached(&(*iv).into(), aad, (&mut key[..]).into(), &tag)
            .is_ok();
        Ok(ok.then_some(key))
    }
}

impl Kek for FileKek {
    fn kind(&self) -> KekKind {
        KekKind::File
    }
    fn kek_id(&self) -> &[u8] {
        &self.id
    }
}
