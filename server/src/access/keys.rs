//! API keys: generation, the key store file, and lookup by a presented key.
//!
//! A key is `sk-cfd-` followed by 64 hex digits (256 random bits from the
//! operating system). The store keeps only its SHA-256. A slow password
//! hash (Argon2, scrypt) is not needed: those defend low-entropy secrets
//! against offline guessing, and nobody guesses 256 random bits however fast
//! the hash is. A fast hash also keeps the check of every request cheap; a
//! deliberately slow one would hand anyone without a key a way to burn CPU.
//!
//! The store is a JSON file (mode 0600) that `confidant apikey` rewrites
//! atomically (temporary file, fsync, rename) under a lock file; a running
//! server holds it as a [`super::store::KeyStore`].

use std::collections::BTreeSet;
use std::fmt;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::SystemTime;

use anyhow::{Context, bail};
use rand::TryRngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Prefix of every key (lets secret scanners find leaked keys).
pub const KEY_PREFIX: &str = "sk-cfd-";
/// Largest store file read.
const MAX_STORE_BYTES: u64 = 16 << 20;
/// The store's format version.
const STORE_VERSION: u32 = 1;

/// A key's public identifier (`key_` and 16 hex digits): what the audit log,
/// `apikey list` and metrics name. Not derived from the key.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyId(String);

impl KeyId {
    fn random() -> anyhow::Result<Self> {
        let mut b = [0u8; 8];
        rand::rngs::OsRng
            .try_fill_bytes(&mut b)
            .context("operating system random source")?;
        Ok(Self(format!("key_{}", hex::encode(b))))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for KeyId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.strip_prefix("key_") {
            Some(h) if h.len() == 16 && h.bytes().all(|c| c.is_ascii_hexdigit()) => Ok(Self(s)),
            _ => Err(format!(
                "invalid key id {s:?} (want key_ and 16 hex digits)"
            )),
        }
    }
}

impl From<KeyId> for String {
    fn from(k: KeyId) -> String {
        k.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A key's human name: 1 to 64 of `A-Z a-z 0-9 . _ -`, not starting with
/// `key_` (so a name never reads as an id).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyName(String);

impl KeyName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for KeyName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let ok_chars = s
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
        if s.is_empty() || s.len() > 64 || !ok_chars || s.starts_with("key_") {
            return Err(format!(
                "invalid key name {s:?}: 1 to 64 of A-Z a-z 0-9 . _ -, not starting with key_"
            ));
        }
        Ok(Self(s))
    }
}

impl FromStr for KeyName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::try_from(s.to_owned())
    }
}

impl From<KeyName> for String {
    fn from(k: KeyName) -> String {
        k.0
    }
}

/// What a key may do.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// `/v1/chat/completions`, `/v1/completions`, `/v1/models`.
    Chat,
    /// `/v1/watermark/detect`.
    Detect,
}

impl Permission {
    /// The name used in flags, the store and error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Detect => "detect",
        }
    }
}

/// A non-empty set of permissions (`chat,detect`).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(try_from = "Vec<Permission>", into = "Vec<Permission>")]
pub struct Permissions(BTreeSet<Permission>);

impl Permissions {
    /// Whether the set holds `p`.
    pub fn allows(&self, p: Permission) -> bool {
        self.0.contains(&p)
    }
}

impl Default for Permissions {
    fn default() -> Self {
        Self([Permission::Chat].into())
    }
}

impl TryFrom<Vec<Permission>> for Permissions {
    type Error = String;
    fn try_from(v: Vec<Permission>) -> Result<Self, String> {
        if v.is_empty() {
            return Err("a key needs at least one permission".into());
        }
        Ok(Self(v.into_iter().collect()))
    }
}

impl From<Permissions> for Vec<Permission> {
    fn from(p: Permissions) -> Self {
        p.0.into_iter().collect()
    }
}

impl FromStr for Permissions {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let v = s
            .split(',')
            .map(|p| match p.trim() {
                "chat" => Ok(Permission::Chat),
                "detect" => Ok(Permission::Detect),
                other => Err(format!(
                    "unknown permission {other:?} (known: chat, detect)"
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::try_from(v)
    }
}

impl fmt::Display for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v: Vec<&str> = self.0.iter().map(|p| p.as_str()).collect();
        f.write_str(&v.join(","))
    }
}

/// A freshly generated API key. Shown once, never stored; no `Debug`, no
/// `Clone`, wiped on drop.
pub struct ApiKey(Zeroizing<String>);

impl ApiKey {
    /// A new key from the operating system's random source.
    pub fn generate() -> anyhow::Result<Self> {
        let mut b = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng
            .try_fill_bytes(b.as_mut())
            .context("operating system random source")?;
        Ok(Self(Zeroizing::new(format!(
            "{KEY_PREFIX}{}",
            hex::encode(b.as_ref())
        ))))
    }

    /// The key, to hand to its owner.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What the store keeps.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }
}

/// One key in the store file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    /// Public identifier.
    pub id: KeyId,
    /// Human name, unique among keys not revoked.
    pub name: KeyName,
    /// Hex SHA-256 of the key.
    pub sha256: String,
    /// What the key may do.
    pub permissions: Permissions,
    /// Requests per minute.
    pub rpm: u32,
    /// Prompt plus completion tokens per minute.
    pub tpm: u32,
    /// Requests in flight at once.
    pub concurrency: u32,
    /// RFC 3339 creation time.
    pub created: String,
    /// RFC 3339 revocation time; a revoked key is refused.
    #[serde(default)]
    pub revoked: Option<String>,
}

impl KeyRecord {
    /// A record for a new key.
    pub fn new(
        key: &ApiKey,
        name: KeyName,
        permissions: Permissions,
        limits: Limits,
        now: SystemTime,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            id: KeyId::random()?,
            name,
            sha256: hex::encode(key.digest()),
            permissions,
            rpm: limits.rpm,
            tpm: limits.tpm,
            concurrency: limits.concurrency,
            created: crate::audit::rfc3339(now),
            revoked: None,
        })
    }

    /// The key's quotas.
    pub fn limits(&self) -> Limits {
        Limits {
            rpm: self.rpm,
            tpm: self.tpm,
            concurrency: self.concurrency,
        }
    }

    pub(super) fn digest(&self) -> anyhow::Result<[u8; 32]> {
        let mut d = [0u8; 32];
        hex::decode_to_slice(&self.sha256, &mut d)
            .with_context(|| format!("key {}: sha256 is not 64 hex digits", self.id))?;
        Ok(d)
    }
}

/// A key's quotas; each at least 1 (there is no "unlimited").
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Limits {
    /// Requests per minute.
    pub rpm: u32,
    /// Prompt plus completion tokens per minute.
    pub tpm: u32,
    /// Requests in flight at once.
    pub concurrency: u32,
}

/// The store file's contents.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    /// Format version (1).
    pub version: u32,
    /// Every key ever created, revoked ones included (their ids stay
    /// meaningful in the audit log).
    pub keys: Vec<KeyRecord>,
}

impl KeyFile {
    /// Reads and checks a store; a missing file is an empty store.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let f = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self {
                    version: STORE_VERSION,
                    keys: Vec::new(),
                });
            }
            Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
        };
        let mut text = String::new();
        f.take(MAX_STORE_BYTES + 1)
            .read_to_string(&mut text)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if text.len() as u64 > MAX_STORE_BYTES {
            bail!(
                "key store {} is larger than {MAX_STORE_BYTES} bytes",
                path.display()
            );
        }
        let kf: KeyFile =
            serde_json::from_str(&text).with_context(|| format!("key store {}", path.display()))?;
        kf.check()
            .with_context(|| format!("key store {}", path.display()))?;
        Ok(kf)
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.version != STORE_VERSION {
            bail!(
                "version {} (this build reads {STORE_VERSION})",
                self.version
            );
        }
        let mut ids = BTreeSet::new();
        let mut live = BTreeSet::new();
        for k in &self.keys {
            k.digest()?;
            if k.rpm == 0 || k.tpm == 0 || k.concurrency == 0 {
                bail!("key {}: rpm, tpm and concurrency must be at least 1", k.id);
            }
            if !ids.insert(&k.id) {
                bail!("key id {} appears twice", k.id);
            }
            if k.revoked.is_none() && !live.insert(k.name.as_str()) {
                bail!("two live keys are named {}", k.name.as_str());
            }
        }
        Ok(())
    }

    /// Reads the store, applies `f` and writes it back atomically, holding
    /// `<store>.lock` so that concurrent `confidant apikey` runs serialise.
    pub fn modify<T>(
        path: &Path,
        f: impl FnOnce(&mut KeyFile) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let lock_path = sibling(path, ".lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .with_context(|| format!("cannot open {}", lock_path.display()))?;
        lock.lock()
            .with_context(|| format!("cannot lock {}", lock_path.display()))?;
        let mut kf = Self::load(path)?;
        let out = f(&mut kf)?;
        kf.check()?;
        let tmp = sibling(path, ".tmp");
        {
            let mut w = std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(0o600)
                .open(&tmp)
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            // Mode of an existing temporary file is not changed by `mode`.
            w.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            let mut text = serde_json::to_vec_pretty(&kf)?;
            text.push(b'\n');
            w.write_all(&text)?;
            w.sync_all()?;
        }
        std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot replace {}", path.display()))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Make the rename itself durable.
            std::fs::File::open(dir).and_then(|d| d.sync_all()).ok();
        }
        Ok(out)
    }
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            rpm: 1,
            tpm: 1,
            concurrency: 1,
        }
    }

    #[test]
    fn names_ids_and_permissions_parse_strictly() {
        assert!("alice-1.prod_x".parse::<KeyName>().is_ok());
        for bad in ["", "a b", "key_0123", "ä", &"x".repeat(65)] {
            assert!(bad.parse::<KeyName>().is_err(), "{bad:?}");
        }
        assert!(KeyId::try_from("key_0123456789abcdef".to_owned()).is_ok());
        assert!(KeyId::try_from("key_0123".to_owned()).is_err());
        let p: Permissions = "chat,detect".parse().unwrap();
        assert!(p.allows(Permission::Chat) && p.allows(Permission::Detect));
        assert!("admin".parse::<Permissions>().is_err());
        assert!(Permissions::default().allows(Permission::Chat));
        assert!(!Permissions::default().allows(Permission::Detect));
    }

    #[test]
    fn store_round_trips_with_mode_0600_and_rejects_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let k = ApiKey::generate().unwrap();
        KeyFile::modify(&path, |kf| {
            kf.keys.push(KeyRecord::new(
                &k,
                "a".parse().unwrap(),
                Permissions::default(),
                limits(),
                SystemTime::now(),
            )?);
            Ok(())
        })
        .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(KeyFile::load(&path).unwrap().keys.len(), 1);
        let dup = KeyFile::modify(&path, |kf| {
            let k2 = ApiKey::generate()?;
            kf.keys.push(KeyRecord::new(
                &k2,
                "a".parse().unwrap(),
                Permissions::default(),
                limits(),
                SystemTime::now(),
            )?);
            Ok(())
        });
        assert!(dup.is_err(), "two live keys with one name");
        assert_eq!(KeyFile::load(&path).unwrap().keys.len(), 1);
    }
}
