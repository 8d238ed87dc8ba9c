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
//! atomically (temporary file, fsync, rename) under a lock file; the server
//! re-reads it when its inode, size or mtime changes, checking at most once
//! a second, so a revocation takes effect on a running server within about
//! a second.

use std::collections::BTreeSet;
use std::fmt;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use rand::TryRngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Prefix of every key (lets secret scanners find leaked keys).
pub const KEY_PREFIX: &str = "sk-cfd-";
/// Longest `Authorization` value looked at; longer ones are refused unhashed.
const MAX_PRESENTED_LEN: usize = 256;
/// Largest store file read.
const MAX_STORE_BYTES: u64 = 16 << 20;
/// The store's format version.
const STORE_VERSION: u32 = 1;
/// How often, at most, the server looks at the store file for changes.
pub const RELOAD_CHECK: Duration = Duration::from_secs(1);

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

    fn digest(&self) -> anyhow::Result<[u8; 32]> {
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

/// A live key as the server sees it.
#[derive(Debug)]
pub struct ActiveKey {
    /// Public identifier.
    pub id: KeyId,
    /// What it may do.
    pub permissions: Permissions,
    /// Its quotas.
    pub limits: Limits,
}

/// Result of looking up a presented key.
pub enum Lookup {
    /// A live key.
    Valid(Arc<ActiveKey>),
    /// A key that was revoked.
    Revoked(KeyId),
    /// Not a key of this store (or not a well-formed key at all).
    Unknown,
}

/// The parsed store: digests and what they grant.
#[derive(Default)]
struct Table {
    entries: Vec<([u8; 32], Option<Arc<ActiveKey>>, KeyId)>,
}

impl Table {
    fn from_file(kf: &KeyFile) -> anyhow::Result<Self> {
        let mut entries = Vec::with_capacity(kf.keys.len());
        for k in &kf.keys {
            let active = k.revoked.is_none().then(|| {
                Arc::new(ActiveKey {
                    id: k.id.clone(),
                    permissions: k.permissions.clone(),
                    limits: k.limits(),
                })
            });
            entries.push((k.digest()?, active, k.id.clone()));
        }
        Ok(Self { entries })
    }

    /// Compares the presented key's digest with every stored digest in
    /// constant time, without stopping at a match.
    fn lookup(&self, presented: &str) -> Lookup {
        if presented.len() > MAX_PRESENTED_LEN || !presented.starts_with(KEY_PREFIX) {
            return Lookup::Unknown;
        }
        let d: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found: Option<usize> = None;
        for (i, (stored, _, _)) in self.entries.iter().enumerate() {
            let eq: bool = stored[..].ct_eq(&d[..]).into();
            if eq {
                found = Some(i);
            }
        }
        match found.map(|i| &self.entries[i]) {
            Some((_, Some(active), _)) => Lookup::Valid(active.clone()),
            Some((_, None, id)) => Lookup::Revoked(id.clone()),
            None => Lookup::Unknown,
        }
    }
}

/// What identifies one version of the store file.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Stamp {
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        ino: m.ino(),
        len: m.len(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
    })
}

/// The store as a running server holds it, re-read when the file changes.
pub struct KeyStore {
    path: PathBuf,
    table: RwLock<Arc<Table>>,
    checked: Mutex<(Instant, Option<Stamp>)>,
    /// Failed re-reads (the server then refuses every key until the file is
    /// readable again: failing open would undo revocations).
    pub reload_errors: std::sync::atomic::AtomicU64,
}

impl KeyStore {
    /// Opens the store at `path` (a missing file is an empty store).
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let st = stamp(path);
        let kf = KeyFile::load(path)?;
        if let Ok(m) = std::fs::metadata(path)
            && m.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", m.permissions().mode() & 0o777),
                "the API key store is readable by group or others; it should be 0600"
            );
        }
        Ok(Self {
            path: path.to_owned(),
            table: RwLock::new(Arc::new(Table::from_file(&kf)?)),
            checked: Mutex::new((Instant::now(), st)),
            reload_errors: Default::default(),
        })
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of live keys.
    pub fn live_keys(&self) -> usize {
        self.current()
            .entries
            .iter()
            .filter(|e| e.1.is_some())
            .count()
    }

    fn current(&self) -> Arc<Table> {
        self.table.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Re-reads the file if it changed and the last look is older than
    /// [`RELOAD_CHECK`]. One caller looks; the others use the current table.
    fn refresh(&self, now: Instant) {
        let Ok(mut c) = self.checked.try_lock() else {
            return;
        };
        if now.duration_since(c.0) < RELOAD_CHECK {
            return;
        }
        c.0 = now;
        let st = stamp(&self.path);
        if st == c.1 {
            return;
        }
        c.1 = st;
        let table = KeyFile::load(&self.path).and_then(|kf| Table::from_file(&kf));
        let table = match table {
            Ok(t) => {
                tracing::info!(path = %self.path.display(), "API key store re-read");
                t
            }
            Err(e) => {
                self.reload_errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::error!(
                    path = %self.path.display(),
                    error = %format!("{e:#}"),
                    "cannot re-read the API key store; refusing every key until it is fixed"
                );
                Table::default()
            }
        };
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(table);
    }

    /// Looks up a presented key, re-reading the store first if it is due.
    pub fn lookup(&self, presented: &str, now: Instant) -> Lookup {
        self.refresh(now);
        self.current().lookup(presented)
    }
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
    fn generated_keys_are_found_and_others_are_not() {
        let k = ApiKey::generate().unwrap();
        assert!(k.expose().starts_with(KEY_PREFIX));
        assert_eq!(k.expose().len(), KEY_PREFIX.len() + 64);
        let rec = KeyRecord::new(
            &k,
            "a".parse().unwrap(),
            Permissions::default(),
            limits(),
            SystemTime::now(),
        )
        .unwrap();
        let kf = KeyFile {
            version: 1,
            keys: vec![rec],
        };
        let t = Table::from_file(&kf).unwrap();
        assert!(matches!(t.lookup(k.expose()), Lookup::Valid(_)));
        let mut wrong = k.expose().to_owned();
        wrong.pop();
        wrong.push('x');
        assert!(matches!(t.lookup(&wrong), Lookup::Unknown));
        assert!(matches!(t.lookup(""), Lookup::Unknown));
        let mut kf = kf;
        kf.keys[0].revoked = Some("2026-01-01T00:00:00Z".into());
        let t = Table::from_file(&kf).unwrap();
        assert!(matches!(t.lookup(k.expose()), Lookup::Revoked(_)));
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
