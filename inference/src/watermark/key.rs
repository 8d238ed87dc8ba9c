//! The watermark key: 32 random bytes, its public id, and its file format.
//!
//! A key file is two lines of ASCII, created with mode 0600 and never
//! overwritten:
//!
//! ```text
//! confidant-watermark-key v1
//! <64 lowercase hex digits>
//! ```

use std::io::{Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{Error, Result};

const HEADER: &str = "confidant-watermark-key v1";
/// A key file is never larger than this (header, 64 hex digits, newlines).
const MAX_FILE_BYTES: u64 = 256;

/// A deployment's secret watermark key. No `Debug`, no `Clone`; wiped on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct WatermarkKey([u8; 32]);

/// Public id of a key: the first 8 bytes of SHA-256 of the key, hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyId(String);

impl KeyId {
    /// The hex string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl WatermarkKey {
    /// A fresh key from the operating system's random generator.
    pub fn generate() -> Result<Self> {
        let mut k = Self([0; 32]);
        getrandom::fill(&mut k.0)
            .map_err(|e| Error::Watermark(format!("random generator: {e}")))?;
        Ok(k)
    }

    /// A key from 32 bytes (for keys released by a key broker). The caller
    /// wipes its own copy.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != 32 {
            return Err(Error::Watermark(format!(
                "a watermark key has 32 bytes, not {}",
                bytes.len()
            )));
        }
        let mut k = Self([0; 32]);
        k.0.copy_from_slice(bytes);
        Ok(k)
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The public id.
    pub fn id(&self) -> KeyId {
        let d = Sha256::digest(self.0);
        KeyId(hex::encode(&d[..8]))
    }

    /// Reads a key file. Refuses files that others can read or write, files
    /// that are too large and anything but the exact format.
    pub fn load(path: &Path) -> Result<Self> {
        let err = |m: String| Error::Watermark(format!("key file {}: {m}", path.display()));
        let f = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = f
                .metadata()
                .map_err(|e| err(e.to_string()))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(err(format!(
                    "mode {:04o} lets others access it; `chmod 600` it",
                    mode & 0o7777
                )));
            }
        }
        let mut text = Zeroizing::new(String::new());
        f.take(MAX_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|e| err(e.to_string()))?;
        if text.len() as u64 > MAX_FILE_BYTES {
            return Err(err("too large to be a watermark key".into()));
        }
        Self::parse(&text).map_err(err)
    }

    fn parse(text: &str) -> std::result::Result<Self, String> {
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return Err(format!(
                "not a watermark key (first line must be `{HEADER}`)"
            ));
        }
        let hex_line = lines.next().unwrap_or("").trim();
        if lines.any(|l| !l.trim().is_empty()) {
            return Err("unexpected content after the key".into());
        }
        let mut k = Self([0; 32]);
        if hex_line.len() != 64 || hex::decode_to_slice(hex_line, &mut k.0).is_err() {
            return Err("the second line must be 64 hex digits".into());
        }
        Ok(k)
    }

    /// Writes the key to a new file with mode 0600 (an existing file is an
    /// error, never overwritten).
    pub fn write_new(&self, path: &Path) -> Result<()> {
        let err = |m: String| Error::Watermark(format!("key file {}: {m}", path.display()));
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(path).map_err(|e| err(e.to_string()))?;
        let mut text = Zeroizing::new(String::with_capacity(HEADER.len() + 66));
        text.push_str(HEADER);
        text.push('\n');
        let mut hex_buf = Zeroizing::new([0u8; 64]);
        // 64 output bytes for 32 input bytes: cannot fail.
        hex::encode_to_slice(self.0, &mut hex_buf[..]).expect("64 hex digits for 32 bytes");
        text.push_str(std::str::from_utf8(&hex_buf[..]).expect("hex is ASCII"));
        text.push('\n');
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| err(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_key_loads_back_with_mode_0600_and_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("wm.key");
        let k = WatermarkKey::generate().unwrap();
        k.write_new(&p).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let back = WatermarkKey::load(&p).unwrap();
        assert_eq!(back.bytes(), k.bytes());
        assert_eq!(back.id(), k.id());
        let other = WatermarkKey::generate().unwrap();
        assert!(
            other.write_new(&p).is_err(),
            "an existing key file was overwritten"
        );
        assert_eq!(WatermarkKey::load(&p).unwrap().bytes(), k.bytes());
    }

    #[cfg(unix)]
    #[test]
    fn a_key_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("wm.key");
        WatermarkKey::generate().unwrap().write_new(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = WatermarkKey::load(&p).err().expect("refused").to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }

    #[test]
    fn malformed_key_files_are_refused_and_errors_hold_no_key_material() {
        let good = format!("{HEADER}\n{}\n", "ab".repeat(32));
        assert!(WatermarkKey::parse(&good).is_ok());
        for bad in [
            String::new(),
            format!("{HEADER}\n"),
            format!("{HEADER}\n{}\n", "ab".repeat(31)),
            format!("{HEADER}\n{}zz\n", "ab".repeat(31)),
            format!("{HEADER}\n{}\nextra\n", "ab".repeat(32)),
            format!("other header\n{}\n", "ab".repeat(32)),
        ] {
            let e = WatermarkKey::parse(&bad).err().expect("refused");
            assert!(!e.contains("abab"), "error quotes the key: {e}");
        }
        assert!(WatermarkKey::from_bytes(&[0; 31]).is_err());
    }

    #[test]
    fn the_key_id_is_the_truncated_sha256_of_the_key() {
        let k = WatermarkKey::from_bytes(&[0u8; 32]).unwrap();
        // SHA-256 of 32 zero bytes starts 66687aadf862bd77.
        assert_eq!(k.id().as_str(), "66687aadf862bd77");
    }
}
