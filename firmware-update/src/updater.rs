//! The TUF client workflow (TUF 1.0 section 5): root rotation chain,
//! timestamp → snapshot → targets, delegations searched in pre-order, and
//! target download with length and hash checks. Trusted metadata lives in a
//! directory under unversioned names (`root.json`, `timestamp.json`, …),
//! each written atomically.
//!
//! Local metadata is loaded first as *intermediate* trust: it is not
//! accepted as final if expired or superseded, but new metadata must not roll
//! back from it (python-tuf's `TrustedMetadataSet` does the same). Local
//! metadata that no longer verifies under the newest root (keys rotated) is
//! dropped, which is how a client recovers from a fast-forward attack.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::clock::{Clock, UnixTime};
use crate::crypto::PublicKey;
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::metadata::{
    Envelope, MetaFile, RoleKeys, Root, Snapshot, TargetFile, Targets, Timestamp,
    check_length_and_hashes,
};
use crate::transport::{FetchError, Transport};

/// Limits and knobs; the defaults are python-tuf's.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Most root versions fetched in one refresh (TUF 5.3.3).
    pub max_root_rotations: u64,
    /// Most targets roles visited in one search (TUF 5.6.7.1).
    pub max_delegations: usize,
    /// Largest root.json accepted.
    pub root_max_len: u64,
    /// Largest timestamp.json accepted.
    pub timestamp_max_len: u64,
    /// Largest snapshot.json accepted when the timestamp states no length.
    pub snapshot_max_len: u64,
    /// Largest targets role accepted when the snapshot states no length.
    pub targets_max_len: u64,
    /// Fetch targets as `<dir>/<sha256>.<name>` under consistent snapshots.
    pub prefix_targets_with_hash: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_root_rotations: 32,
            max_delegations: 32,
            root_max_len: 512_000,
            timestamp_max_len: 16_384,
            snapshot_max_len: 2_000_000,
            targets_max_len: 5_000_000,
            prefix_targets_with_hash: true,
        }
    }
}

/// Percent-encodes everything but `A-Z a-z 0-9 _ . - ~` (Python's
/// `urllib.parse.quote(s, "")`): role names become safe file and URL parts.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A trusted root and the metadata verified under it.
struct TrustedSet {
    root: Root,
    /// The root the refresh started from, to recognise metadata signed by
    /// keys a rotation revoked (fast-forward).
    start_root: Root,
    timestamp: Option<Timestamp>,
    snapshot: Option<Snapshot>,
    targets: BTreeMap<String, Targets>,
    now: UnixTime,
}

impl TrustedSet {
    fn new(root_bytes: &[u8], now: UnixTime) -> Result<Self> {
        let env = Envelope::parse(root_bytes, "trusted root")?;
        let root = Root::from_signed(&env.signed)?;
        // TUF 5.2: the trusted root must be signed by its own threshold.
        env.verify("root", root.role("root"), &root.keys)?;
        Ok(Self {
            start_root: root.clone(),
            root,
            timestamp: None,
            snapshot: None,
            targets: BTreeMap::new(),
            now,
        })
    }

    /// Verifies a top-level role; on failure, tells a fast-forward (signed
    /// by keys an accepted rotation revoked) from a plain threshold miss.
    fn verify_top(&self, env: &Envelope, role: &str) -> Result<()> {
        match env.verify(role, self.root.role(role), &self.root.keys) {
            Ok(_) => Ok(()),
            Err(e) => {
                if self.start_root.common.version != self.root.common.version {
                    let old = self.start_root.role(role);
                    let revoked_ids: Vec<String> = old
                        .keyids
                        .iter()
                        .filter(|id| !self.root.role(role).keyids.contains(id))
                        .cloned()
                        .collect();
                    let revoked_role = RoleKeys {
                        keyids: revoked_ids,
                        threshold: old.threshold,
                    };
                    let revoked = env.count_valid(&revoked_role, &self.start_root.keys);
                    if revoked as u64 >= old.threshold {
                        return Err(Error::FastForward {
                            role: role.to_owned(),
                            revoked,
                            valid: env.count_valid(self.root.role(role), &self.root.keys),
                            threshold: self.root.role(role).threshold,
                        });
                    }
                }
                Err(e)
            }
        }
    }

    fn check_expiry(&self, role: &str, expires: UnixTime) -> Result<()> {
        if self.now >= expires {
            return Err(Error::Freeze {
                role: role.to_owned(),
                expires,
                now: self.now,
            });
        }
        Ok(())
    }

    /// TUF 5.3.4–5.3.8: the next root in the chain.
    fn update_root(&mut self, bytes: &[u8], expected_version: u64) -> Result<()> {
        if self.timestamp.is_some() {
            return Err(Error::Slots(
                "root update after timestamp (client bug)".into(),
            ));
        }
        let chain = |reason: String| Error::BadRootChain {
            version: expected_version,
            reason,
        };
        let env = Envelope::parse(bytes, "root").map_err(|e| chain(e.to_string()))?;
        let new = Root::from_signed(&env.signed).map_err(|e| chain(e.to_string()))?;
        // 5.3.4: signed by a threshold of the trusted root's root keys ...
        env.verify("root", self.root.role("root"), &self.root.keys)
            .map_err(|e| {
                chain(format!(
                    "not signed by root v{} keys: {e}",
                    self.root.common.version
                ))
            })?;
        // 5.3.5: ... and is exactly the next version ...
        if new.common.version != expected_version {
            return Err(chain(format!(
                "file {expected_version}.root.json holds version {}",
                new.common.version
            )));
        }
        // 5.3.4: ... and by a threshold of its own root keys.
        env.verify("root", new.role("root"), &new.keys)
            .map_err(|e| chain(format!("not signed by its own root keys: {e}")))?;
        self.root = new;
        Ok(())
    }

    /// TUF 5.4: timestamp. Returns whether the new timestamp replaced the
    /// trusted one (false when it has the same version).
    fn update_timestamp(&mut self, bytes: &[u8]) -> Result<bool> {
        if self.snapshot.is_some() {
            return Err(Error::Slots(
                "timestamp update after snapshot (client bug)".into(),
            ));
        }
        // 5.3.10: the final root must not be expired.
        self.check_expiry("root", self.root.common.expires)?;
        let env = Envelope::parse(bytes, "timestamp")?;
        let new = Timestamp::from_signed(&env.signed)?;
        self.verify_top(&env, "timestamp")?;
        if let Some(old) = &self.timestamp {
            // 5.4.3.1: no rollback of the timestamp version.
            if new.common.version < old.common.version {
                return Err(Error::Rollback {
                    role: "timestamp".into(),
                    trusted: old.common.version,
                    offered: new.common.version,
                });
            }
            if new.common.version == old.common.version {
                self.check_expiry("timestamp", old.common.expires)?;
                return Ok(false);
            }
            // 5.4.3.2: no rollback of the snapshot version it names.
            if new.snapshot_meta.version < old.snapshot_meta.version {
                return Err(Error::Rollback {
                    role: "snapshot".into(),
                    trusted: old.snapshot_meta.version,
                    offered: new.snapshot_meta.version,
                });
            }
        }
        let expires = new.common.expires;
        // Kept as intermediate even if expired, so later fetches in this
        // refresh are checked against it; 5.4.4 then refuses it as final.
        self.timestamp = Some(new);
        self.check_expiry("timestamp", expires)?;
        Ok(true)
    }

    fn final_timestamp(&self) -> Result<&Timestamp> {
        let ts = self
            .timestamp
            .as_ref()
            .ok_or_else(|| Error::Slots("snapshot before timestamp (client bug)".into()))?;
        self.check_expiry("timestamp", ts.common.expires)?;
        Ok(ts)
    }

    /// TUF 5.5: snapshot. `trusted` skips the length/hash check for the
    /// local copy (it may predate the current timestamp).
    fn update_snapshot(&mut self, bytes: &[u8], trusted: bool) -> Result<()> {
        if !self.targets.is_empty() {
            return Err(Error::Slots(
                "snapshot update after targets (client bug)".into(),
            ));
        }
        let meta = self.final_timestamp()?.snapshot_meta.clone();
        if !trusted {
            // 5.5.1
            check_length_and_hashes(bytes, meta.length, meta.hashes.as_ref(), "snapshot.json")?;
        }
        let env = Envelope::parse(bytes, "snapshot")?;
        let new = Snapshot::from_signed(&env.signed)?;
        // 5.5.3
        self.verify_top(&env, "snapshot")?;
        // 5.5.5: no targets role may disappear or roll back.
        if let Some(old) = &self.snapshot {
            for (name, old_meta) in &old.meta {
                let new_version = new.meta.get(name).map_or(0, |m| m.version);
                if new_version < old_meta.version {
                    return Err(Error::Rollback {
                        role: name.trim_end_matches(".json").to_owned(),
                        trusted: old_meta.version,
                        offered: new_version,
                    });
                }
            }
        }
        self.snapshot = Some(new);
        self.final_snapshot().map(|_| ())
    }

    fn final_snapshot(&self) -> Result<&Snapshot> {
        let snap = self
            .snapshot
            .as_ref()
            .ok_or_else(|| Error::Slots("targets before snapshot (client bug)".into()))?;
        // 5.5.6
        self.check_expiry("snapshot", snap.common.expires)?;
        // 5.5.2: the version the timestamp names.
        let expected = self.final_timestamp()?.snapshot_meta.version;
        if snap.common.version != expected {
            return Err(Error::MixAndMatch {
                role: "snapshot".into(),
                by: "timestamp".into(),
                expected,
                got: snap.common.version,
            });
        }
        Ok(snap)
    }

    fn snapshot_meta(&self, role: &str) -> Result<MetaFile> {
        self.final_snapshot()?
            .meta
            .get(&format!("{role}.json"))
            .cloned()
            .ok_or_else(|| Error::MixAndMatch {
                role: role.to_owned(),
                by: "snapshot".into(),
                expected: 0,
                got: 0,
            })
    }

    /// TUF 5.6: a targets role delegated by `parent` ("root" for targets).
    fn update_targets(
        &mut self,
        bytes: &[u8],
        role: &str,
        parent: &str,
        trusted: bool,
    ) -> Result<()> {
        let meta = self.snapshot_meta(role)?;
        if !trusted {
            check_length_and_hashes(
                bytes,
                meta.length,
                meta.hashes.as_ref(),
                &format!("{role}.json"),
            )?;
        }
        let env = Envelope::parse(bytes, role)?;
        let new = Targets::from_signed(&env.signed, role)?;
        if parent == "root" {
            self.verify_top(&env, "targets")?;
        } else {
            let delegations = self
                .targets
                .get(parent)
                .and_then(|p| p.delegations.as_ref())
                .ok_or_else(|| {
                    Error::Slots(format!("delegator {parent} not loaded (client bug)"))
                })?;
            let keys: &BTreeMap<String, PublicKey> = &delegations.keys;
            let role_keys = delegations.role_keys(role).ok_or_else(|| {
                Error::malformed(role, format!("{parent} does not delegate to it"))
            })?;
            env.verify(role, &role_keys, keys)?;
        }
        // 5.6.2: the version the snapshot names.
        if new.common.version != meta.version {
            return Err(Error::MixAndMatch {
                role: role.to_owned(),
                by: "snapshot".into(),
                expected: meta.version,
                got: new.common.version,
            });
        }
        // 5.6.6
        self.check_expiry(role, new.common.expires)?;
        self.targets.insert(role.to_owned(), new);
        Ok(())
    }
}

/// A TUF client bound to a metadata directory and a repository.
pub struct Updater<'a> {
    metadata_dir: PathBuf,
    metadata_url: String,
    transport: &'a dyn Transport,
    config: Config,
    trusted: TrustedSet,
    refreshed: bool,
}

impl std::fmt::Debug for Updater<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Updater")
            .field("metadata_dir", &self.metadata_dir)
            .field("metadata_url", &self.metadata_url)
            .finish_non_exhaustive()
    }
}

impl<'a> Updater<'a> {
    /// Opens a client whose trusted root is `metadata_dir/root.json`.
    pub fn new(
        metadata_dir: impl Into<PathBuf>,
        metadata_url: &str,
        transport: &'a dyn Transport,
        clock: &dyn Clock,
        config: Config,
    ) -> Result<Self> {
        let metadata_dir = metadata_dir.into();
        let root_path = metadata_dir.join("root.json");
        let bytes =
            std::fs::read(&root_path).map_err(Error::io("reading trusted root", &root_path))?;
        let trusted = TrustedSet::new(&bytes, clock.now())?;
        Ok(Self {
            metadata_dir,
            metadata_url: metadata_url.trim_end_matches('/').to_owned(),
            transport,
            config,
            trusted,
            refreshed: false,
        })
    }

    /// Writes the initial trusted root into `metadata_dir` (no network).
    pub fn init(metadata_dir: &Path, trusted_root: &[u8]) -> Result<()> {
        std::fs::create_dir_all(metadata_dir).map_err(Error::io("creating", metadata_dir))?;
        write_atomic(&metadata_dir.join("root.json"), trusted_root)
    }

    /// The trusted root (after [`Self::refresh`], the newest).
    pub fn root(&self) -> &Root {
        &self.trusted.root
    }

    /// The trusted top-level targets, after a refresh.
    pub fn targets(&self) -> Option<&Targets> {
        self.trusted.targets.get("targets")
    }

    fn fetch(&self, url: &str, max_len: u64, what: &str) -> Result<Option<Vec<u8>>> {
        match self.transport.fetch(url, max_len) {
            Ok(b) => Ok(Some(b)),
            Err(FetchError::NotFound) => Ok(None),
            Err(FetchError::TooLarge) => Err(Error::EndlessData {
                what: what.to_owned(),
                limit: max_len,
            }),
            Err(FetchError::Other(reason)) => Err(Error::Transport {
                url: url.to_owned(),
                reason,
            }),
        }
    }

    fn fetch_required(&self, url: &str, max_len: u64, what: &str) -> Result<Vec<u8>> {
        self.fetch(url, max_len, what)?
            .ok_or_else(|| Error::Transport {
                url: url.to_owned(),
                reason: "not found".into(),
            })
    }

    fn persist(&self, role: &str, bytes: &[u8]) -> Result<()> {
        write_atomic(
            &self.metadata_dir.join(format!("{}.json", quote(role))),
            bytes,
        )
    }

    fn local(&self, role: &str) -> Option<Vec<u8>> {
        std::fs::read(self.metadata_dir.join(format!("{}.json", quote(role)))).ok()
    }

    /// Updates root, timestamp, snapshot and top-level targets (TUF 5.3–5.6).
    pub fn refresh(&mut self) -> Result<()> {
        self.load_root()?;
        self.load_timestamp()?;
        self.load_snapshot()?;
        self.load_targets("targets", "root")?;
        self.refreshed = true;
        Ok(())
    }

    fn load_root(&mut self) -> Result<()> {
        let first = self.trusted.root.common.version + 1;
        for v in first..first.saturating_add(self.config.max_root_rotations) {
            let url = format!("{}/{v}.root.json", self.metadata_url);
            let Some(bytes) =
                self.fetch(&url, self.config.root_max_len, &format!("{v}.root.json"))?
            else {
                break;
            };
            self.trusted.update_root(&bytes, v)?;
            self.persist("root", &bytes)?;
        }
        Ok(())
    }

    fn load_timestamp(&mut self) -> Result<()> {
        if let Some(local) = self.local("timestamp") {
            // Intermediate trust only; failures (expired, rotated keys) are
            // expected and leave nothing behind except what verified.
            let _ = self.trusted.update_timestamp(&local);
        }
        let url = format!("{}/timestamp.json", self.metadata_url);
        let bytes = self.fetch_required(&url, self.config.timestamp_max_len, "timestamp.json")?;
        if self.trusted.update_timestamp(&bytes)? {
            self.persist("timestamp", &bytes)?;
        }
        Ok(())
    }

    fn load_snapshot(&mut self) -> Result<()> {
        if let Some(local) = self.local("snapshot")
            && self.trusted.update_snapshot(&local, true).is_ok()
        {
            return Ok(());
        }
        let meta = self.trusted.final_timestamp()?.snapshot_meta.clone();
        let max = meta.length.unwrap_or(self.config.snapshot_max_len);
        let name = if self.trusted.root.consistent_snapshot {
            format!("{}.snapshot.json", meta.version)
        } else {
            "snapshot.json".into()
        };
        let url = format!("{}/{name}", self.metadata_url);
        let bytes = self.fetch_required(&url, max, "snapshot.json")?;
        self.trusted.update_snapshot(&bytes, false)?;
        self.persist("snapshot", &bytes)
    }

    fn load_targets(&mut self, role: &str, parent: &str) -> Result<()> {
        if self.trusted.targets.contains_key(role) {
            return Ok(());
        }
        if let Some(local) = self.local(role)
            && self
                .trusted
                .update_targets(&local, role, parent, true)
                .is_ok()
        {
            return Ok(());
        }
        let meta = self.trusted.snapshot_meta(role)?;
        let max = meta.length.unwrap_or(self.config.targets_max_len);
        let name = if self.trusted.root.consistent_snapshot {
            format!("{}.{}.json", meta.version, quote(role))
        } else {
            format!("{}.json", quote(role))
        };
        let url = format!("{}/{name}", self.metadata_url);
        let bytes = self.fetch_required(&url, max, &format!("{role}.json"))?;
        self.trusted.update_targets(&bytes, role, parent, false)?;
        self.persist(role, &bytes)
    }

    /// Finds `target` by a pre-order depth-first search of the delegation
    /// graph (TUF 5.6.7), refreshing first if needed.
    pub fn target_info(&mut self, target: &str) -> Result<TargetFile> {
        if !self.refreshed {
            self.refresh()?;
        }
        let mut stack: Vec<(String, String)> = vec![("targets".into(), "root".into())];
        let mut visited = BTreeSet::new();
        let mut budget = self.config.max_delegations;
        while budget > 0 {
            let Some((role, parent)) = stack.pop() else {
                break;
            };
            if visited.contains(&role) {
                continue;
            }
            self.load_targets(&role, &parent)?;
            let t = &self.trusted.targets[&role];
            if let Some(info) = t.targets.get(target) {
                return Ok(info.clone());
            }
            visited.insert(role.clone());
            budget -= 1;
            if let Some(d) = &t.delegations {
                let mut children = Vec::new();
                for (child, _keys, terminating) in d.roles_for_target(target) {
                    children.push((child, role.clone()));
                    if terminating {
                        stack.clear();
                        break;
                    }
                }
                children.reverse();
                stack.extend(children);
            }
        }
        Err(Error::TargetNotFound(target.to_owned()))
    }

    /// The URL of a target under `target_base_url` (TUF 5.7.3: hash-prefixed
    /// under consistent snapshots).
    pub fn target_url(&self, target_base_url: &str, target: &str, info: &TargetFile) -> String {
        let mut path = target.to_owned();
        if self.trusted.root.consistent_snapshot && self.config.prefix_targets_with_hash {
            let hash = info
                .hashes
                .get("sha256")
                .or_else(|| info.hashes.values().next());
            if let Some(h) = hash {
                path = match target.rsplit_once('/') {
                    Some((dir, base)) => format!("{dir}/{h}.{base}"),
                    None => format!("{h}.{target}"),
                };
            }
        }
        format!("{}/{path}", target_base_url.trim_end_matches('/'))
    }

    /// Downloads a target, reading at most its signed length, and checks
    /// its hashes (TUF 5.7.3). Nothing unverified is returned.
    pub fn fetch_target(
        &self,
        target_base_url: &str,
        target: &str,
        info: &TargetFile,
    ) -> Result<Vec<u8>> {
        let url = self.target_url(target_base_url, target, info);
        let bytes = self.fetch_required(&url, info.length, target)?;
        check_length_and_hashes(&bytes, Some(info.length), Some(&info.hashes), target)?;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn quoting_matches_python_quote_with_no_safe_chars() {
        assert_eq!(quote("?"), "%3F");
        assert_eq!(quote("../delegatedrole"), "..%2Fdelegatedrole");
        assert_eq!(quote("a b/#"), "a%20b%2F%23");
        assert_eq!(quote("role-1_x.y~"), "role-1_x.y~");
    }
}
