//! What the device keeps on disk, in its state directory: its identity
//! (device id, broker, the AK as the TPM wrapped it), the model key sealed
//! by the TPM, and the statement sequence number. Nothing here is secret
//! outside this TPM: the AK private part and the sealed key are encrypted
//! under TPM-resident keys.
//!
//! Files are written to a temporary name, fsync'd and renamed.

use std::io::Write;
use std::path::{Path, PathBuf};

use confidant_attest::Hex;
use confidant_attest::attester::TpmKeys;
use confidant_keys::KeyId;
use confidant_keys::kbs::device::DeviceId;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::seal::SealedBlob;

/// The device's enrolment, written by `confidant-edge enrol`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// The id the broker knows this device by.
    pub device_id: DeviceId,
    /// The broker it enrolled with.
    pub kbs_url: String,
    /// The AK's TPMT_PUBLIC.
    pub ak_public: Hex,
    /// The AK's TPM2B_PRIVATE contents (wrapped by the TPM under the EK).
    pub ak_private: Hex,
    /// The AK's TPM Name.
    pub ak_name: Hex,
}

impl Identity {
    /// The AK, to hand to the TPM attester.
    pub fn ak(&self) -> Result<TpmKeys> {
        Ok(TpmKeys::from_parts(
            self.ak_public.as_bytes(),
            self.ak_private.as_bytes(),
        )?)
    }
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

/// Largest state file read.
const MAX_STATE_FILE: u64 = 64 * 1024;

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    use std::io::Read;
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::file(path, e)),
    };
    let mut buf = Vec::new();
    f.take(MAX_STATE_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::file(path, e))?;
    if buf.len() as u64 > MAX_STATE_FILE {
        return Err(Error::file(path, "larger than 64 KiB"));
    }
    serde_json::from_slice(&buf)
        .map(Some)
        .map_err(|e| Error::file(path, e))
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename,
/// fsync of the directory).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, e))?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp).map_err(|e| Error::file(&tmp, e))?;
        f.write_all(bytes).map_err(|e| Error::file(&tmp, e))?;
        f.sync_all().map_err(|e| Error::file(&tmp, e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::file(path, e))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

impl StateDir {
    /// The state directory at `root` (created when first written).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StateDir { root: root.into() }
    }

    /// Its path.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn identity_path(&self) -> PathBuf {
        self.root.join("identity.json")
    }

    fn sealed_path(&self, key_id: &KeyId) -> PathBuf {
        self.root.join("sealed").join(format!("{key_id}.json"))
    }

    /// The enrolment, or [`Error::NotEnrolled`].
    pub fn identity(&self) -> Result<Identity> {
        read_json(&self.identity_path())?.ok_or_else(|| Error::NotEnrolled(self.identity_path()))
    }

    /// Records the enrolment.
    pub fn save_identity(&self, id: &Identity) -> Result<()> {
        let json =
            serde_json::to_vec_pretty(id).map_err(|e| Error::file(&self.identity_path(), e))?;
        write_atomic(&self.identity_path(), &json)
    }

    /// The sealed key of model `key_id`, if one was sealed.
    pub fn sealed(&self, key_id: &KeyId) -> Result<Option<SealedBlob>> {
        read_json(&self.sealed_path(key_id))
    }

    /// Keeps the sealed key of model `key_id`.
    pub fn save_sealed(&self, key_id: &KeyId, blob: &SealedBlob) -> Result<()> {
        let p = self.sealed_path(key_id);
        let json = serde_json::to_vec_pretty(blob).map_err(|e| Error::file(&p, e))?;
        write_atomic(&p, &json)
    }

    /// Forgets the sealed key of model `key_id` (it no longer opens).
    pub fn drop_sealed(&self, key_id: &KeyId) -> Result<()> {
        let p = self.sealed_path(key_id);
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::file(&p, e)),
        }
    }

    /// The next statement sequence number, persisted before it is used so
    /// that a crash never reuses one.
    pub fn next_seq(&self) -> Result<u64> {
        let p = self.root.join("seq");
        let last = match std::fs::read_to_string(&p) {
            Ok(s) => s.trim().parse::<u64>().map_err(|e| Error::file(&p, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(Error::file(&p, e)),
        };
        let next = last
            .checked_add(1)
            .ok_or_else(|| Error::file(&p, "sequence number exhausted"))?;
        write_atomic(&p, next.to_string().as_bytes())?;
        Ok(next)
    }
}
