//! The key store as a running server holds it: digests and what they
//! grant, re-read when the file changes (its inode, size or mtime), looking
//! at most once every [`RELOAD_CHECK`], so a revocation takes effect within
//! about a second without a restart.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::keys::{KEY_PREFIX, KeyFile, KeyId, Limits, Permissions};

/// How often, at most, the server looks at the store file for changes.
pub const RELOAD_CHECK: Duration = Duration::from_secs(1);
/// Longest presented key looked at; longer ones are refused unhashed.
const MAX_PRESENTED_LEN: usize = 256;

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
    pub reload_errors: AtomicU64,
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
                self.reload_errors.fetch_add(1, Ordering::Relaxed);
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
    use crate::access::keys::{ApiKey, KeyRecord};
    use std::time::SystemTime;

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
    fn revocation_is_seen_once_the_check_interval_has_passed() {
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
        let store = KeyStore::open(&path).unwrap();
        let t0 = Instant::now();
        assert!(matches!(store.lookup(k.expose(), t0), Lookup::Valid(_)));
        KeyFile::modify(&path, |kf| {
            kf.keys[0].revoked = Some("2026-01-01T00:00:00.000Z".into());
            Ok(())
        })
        .unwrap();
        // Within the interval the store is not looked at again.
        assert!(matches!(store.lookup(k.expose(), t0), Lookup::Valid(_)));
        let later = t0 + RELOAD_CHECK + Duration::from_millis(1);
        assert!(matches!(
            store.lookup(k.expose(), later),
            Lookup::Revoked(_)
        ));
        // An unreadable store refuses every key.
        std::fs::write(&path, "{not json").unwrap();
        let later = later + RELOAD_CHECK + Duration::from_millis(1);
        assert!(matches!(store.lookup(k.expose(), later), Lookup::Unknown));
        assert_eq!(store.reload_errors.load(Ordering::Relaxed), 1);
    }
}
