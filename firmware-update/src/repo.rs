//! Repository tooling: create and maintain a TUF repository with
//! thresholds, offline root/targets keys and online snapshot/timestamp keys.
//!
//! Layout of a repository directory:
//!
//! ```text
//! metadata/   published: N.root.json, root.json, N.targets.json,
//!             N.<role>.json, N.snapshot.json, timestamp.json
//! targets/    <dir>/<sha256>.<name> (consistent snapshots)
//! staged/     <role>.json: next version of a role being edited or signed
//! ```
//!
//! Editing a role stages its next version with no signatures; `sign` adds
//! signatures (one key holder at a time, so offline keys never meet);
//! `publish` checks every staged role against its threshold, writes it, and
//! then signs a new snapshot and timestamp with the online keys.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use crate::clock::UnixTime;
use crate::crypto::{PublicKey, Signer, canonical_json, sha256_hex};
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::metadata::{Envelope, RoleKeys, Root, Snapshot, TOP_LEVEL, Targets, Timestamp};
use crate::updater::quote;

/// TUF specification version this tooling writes.
pub const SPEC_VERSION: &str = "1.0.31";

/// Default lifetimes in days: root, targets (and delegated), snapshot, timestamp.
pub const DEFAULT_EXPIRY_DAYS: [(&str, i64); 4] = [
    ("root", 365),
    ("targets", 90),
    ("snapshot", 7),
    ("timestamp", 1),
];

fn default_days(role: &str) -> i64 {
    DEFAULT_EXPIRY_DAYS
        .iter()
        .find(|(r, _)| *r == role)
        .map_or(90, |(_, d)| *d)
}

/// Keys and threshold for one top-level role at `init`.
#[derive(Debug, Clone)]
pub struct RoleSpec {
    /// Public keys.
    pub keys: Vec<PublicKey>,
    /// Signatures required.
    pub threshold: u64,
}

/// A delegation from one targets role to another.
#[derive(Debug, Clone)]
pub struct DelegationSpec {
    /// Delegated role name (e.g. `server`).
    pub name: String,
    /// Path patterns it is trusted for (e.g. `server/*`).
    pub paths: Vec<String>,
    /// Its keys.
    pub keys: Vec<PublicKey>,
    /// Its threshold.
    pub threshold: u64,
    /// Stop the search at this role when it matches.
    pub terminating: bool,
}

/// A change to root's key assignment (`rotate-root`).
#[derive(Debug, Clone, Default)]
pub struct RootEdit {
    /// Top-level role the edit is for.
    pub role: String,
    /// Keys to add to it.
    pub add: Vec<PublicKey>,
    /// Key ids to remove from it.
    pub remove: Vec<String>,
    /// New threshold, if changing.
    pub threshold: Option<u64>,
}

/// A repository directory.
#[derive(Debug, Clone)]
pub struct Repo {
    dir: PathBuf,
}

fn signed_of(env: &Value) -> Result<&Map<String, Value>> {
    env.get("signed")
        .and_then(Value::as_object)
        .ok_or_else(|| Error::Repo("envelope without signed object".into()))
}

fn version_of(signed: &Map<String, Value>) -> u64 {
    signed.get("version").and_then(Value::as_u64).unwrap_or(0)
}

fn key_entry(k: &PublicKey) -> Result<(String, Value)> {
    Ok((k.key_id()?, k.to_json().clone()))
}

fn read_json(path: &Path) -> Result<Value> {
    let b = std::fs::read(path).map_err(Error::io("reading", path))?;
    serde_json::from_slice(&b).map_err(|e| Error::malformed(path.display().to_string(), e))
}

fn write_json(path: &Path, v: &Value) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(v).map_err(|e| Error::Repo(e.to_string()))?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

impl Repo {
    /// Opens an existing repository directory.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        if !dir.join("staged").is_dir() {
            return Err(Error::Repo(format!(
                "{} is not a repository (no staged/)",
                dir.display()
            )));
        }
        Ok(Self { dir })
    }

    /// Creates a repository: stages root v1 and an empty targets v1.
    /// Consistent snapshots are always on.
    pub fn init(
        dir: impl Into<PathBuf>,
        roles: &BTreeMap<String, RoleSpec>,
        now: UnixTime,
    ) -> Result<Self> {
        let dir = dir.into();
        if dir.join("metadata").exists() || dir.join("staged").exists() {
            return Err(Error::Repo(format!(
                "{} already holds a repository",
                dir.display()
            )));
        }
        for sub in ["metadata", "targets", "staged"] {
            let p = dir.join(sub);
            std::fs::create_dir_all(&p).map_err(Error::io("creating", &p))?;
        }
        let mut keys = Map::new();
        let mut role_map = Map::new();
        for r in TOP_LEVEL {
            let spec = roles
                .get(r)
                .ok_or_else(|| Error::Repo(format!("init needs keys for the {r} role")))?;
            if spec.keys.is_empty()
                || spec.threshold == 0
                || spec.threshold > spec.keys.len() as u64
            {
                return Err(Error::Repo(format!(
                    "{r}: threshold {} with {} key(s)",
                    spec.threshold,
                    spec.keys.len()
                )));
            }
            let mut ids = Vec::new();
            for k in &spec.keys {
                let (id, v) = key_entry(k)?;
                keys.insert(id.clone(), v);
                ids.push(Value::String(id));
            }
            role_map.insert(
                r.into(),
                json!({"keyids": ids, "threshold": spec.threshold}),
            );
        }
        let root = json!({
            "_type": "root",
            "spec_version": SPEC_VERSION,
            "version": 1,
            "expires": now.plus_secs(default_days("root") * 86_400).to_string(),
            "consistent_snapshot": true,
            "keys": keys,
            "roles": role_map,
        });
        let targets = json!({
            "_type": "targets",
            "spec_version": SPEC_VERSION,
            "version": 1,
            "expires": now.plus_secs(default_days("targets") * 86_400).to_string(),
            "targets": {},
        });
        let repo = Self { dir };
        repo.write_staged("root", root)?;
        repo.write_staged("targets", targets)?;
        Ok(repo)
    }

    /// The repository directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Directory clients fetch metadata from.
    pub fn metadata_dir(&self) -> PathBuf {
        self.dir.join("metadata")
    }

    /// Directory clients fetch targets from.
    pub fn targets_dir(&self) -> PathBuf {
        self.dir.join("targets")
    }

    fn staged_path(&self, role: &str) -> PathBuf {
        self.dir
            .join("staged")
            .join(format!("{}.json", quote(role)))
    }

    fn write_staged(&self, role: &str, signed: Value) -> Result<()> {
        write_json(
            &self.staged_path(role),
            &json!({"signed": signed, "signatures": []}),
        )
    }

    /// Latest published envelope of a role, if any.
    fn published(&self, role: &str) -> Result<Option<Value>> {
        let md = self.metadata_dir();
        let path = match role {
            "root" => md.join("root.json"),
            "timestamp" => md.join("timestamp.json"),
            _ => {
                let Some(snap) = self.published_snapshot()? else {
                    return Ok(None);
                };
                if role == "snapshot" {
                    md.join(format!("{}.snapshot.json", snap.common.version))
                } else {
                    let Some(m) = snap.meta.get(&format!("{role}.json")) else {
                        return Ok(None);
                    };
                    md.join(format!("{}.{}.json", m.version, quote(role)))
                }
            }
        };
        if !path.exists() {
            return Ok(None);
        }
        read_json(&path).map(Some)
    }

    fn published_snapshot(&self) -> Result<Option<Snapshot>> {
        let ts_path = self.metadata_dir().join("timestamp.json");
        if !ts_path.exists() {
            return Ok(None);
        }
        let ts = read_json(&ts_path)?;
        let ts = Timestamp::from_signed(&Value::Object(signed_of(&ts)?.clone()))?;
        let path = self
            .metadata_dir()
            .join(format!("{}.snapshot.json", ts.snapshot_meta.version));
        let snap = read_json(&path)?;
        Ok(Some(Snapshot::from_signed(&Value::Object(
            signed_of(&snap)?.clone(),
        ))?))
    }

    /// The staged envelope of `role`, staging its next version (copied from
    /// the published one, version + 1, no signatures) if needed.
    fn stage(&self, role: &str) -> Result<Value> {
        let p = self.staged_path(role);
        if p.exists() {
            return read_json(&p);
        }
        let published = self
            .published(role)?
            .ok_or_else(|| Error::Repo(format!("role {role:?} does not exist")))?;
        let mut signed = signed_of(&published)?.clone();
        let v = version_of(&signed);
        signed.insert("version".into(), json!(v + 1));
        let env = json!({"signed": signed, "signatures": []});
        write_json(&p, &env)?;
        Ok(env)
    }

    /// Applies `edit` to the staged `role` and drops its signatures (the
    /// content changed).
    fn edit_staged(
        &self,
        role: &str,
        edit: impl FnOnce(&mut Map<String, Value>) -> Result<()>,
    ) -> Result<()> {
        let env = self.stage(role)?;
        let mut signed = signed_of(&env)?.clone();
        edit(&mut signed)?;
        self.write_staged(role, Value::Object(signed))
    }

    /// Sets the expiry of the staged `role` to `now + days`.
    pub fn set_expiry(&self, role: &str, now: UnixTime, days: i64) -> Result<()> {
        self.edit_staged(role, |s| {
            s.insert(
                "expires".into(),
                json!(now.plus_secs(days * 86_400).to_string()),
            );
            Ok(())
        })
    }

    /// Adds (or replaces) a target in `role`: copies the file under
    /// `targets/` by its hash and lists it with `custom`.
    pub fn add_target(
        &self,
        role: &str,
        name: &str,
        data: &[u8],
        custom: Option<Value>,
    ) -> Result<()> {
        if name.is_empty()
            || name.starts_with('/')
            || name
                .split('/')
                .any(|p| p == ".." || p == "." || p.is_empty())
        {
            return Err(Error::Repo(format!("bad target name {name:?}")));
        }
        self.check_delegated(role, name)?;
        let hash = sha256_hex(data);
        let (dir, base) = name.rsplit_once('/').map_or(("", name), |(d, b)| (d, b));
        let tdir = self.targets_dir().join(dir);
        std::fs::create_dir_all(&tdir).map_err(Error::io("creating", &tdir))?;
        write_atomic(&tdir.join(format!("{hash}.{base}")), data)?;
        let mut entry = json!({"length": data.len(), "hashes": {"sha256": hash}});
        if let Some(c) = custom {
            entry["custom"] = c;
        }
        self.edit_staged(role, |s| {
            let t = s
                .entry("targets")
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .ok_or_else(|| Error::Repo("targets is not an object".into()))?;
            t.insert(name.to_owned(), entry);
            Ok(())
        })
    }

    /// Refuses a target that `role` is not trusted for: every delegation on
    /// the way from `targets` to `role` must cover `name`, as the client
    /// (tough) checks. A role listing a target outside its paths would make
    /// every client refuse the whole repository, not only that target.
    fn check_delegated(&self, role: &str, name: &str) -> Result<()> {
        let target = tough::TargetName::new(name)
            .map_err(|e| Error::Repo(format!("bad target name {name:?}: {e}")))?;
        let mut current = role.to_owned();
        // Delegation chains are short; the bound stops a cycle.
        for _ in 0..64 {
            if current == "targets" {
                return Ok(());
            }
            let Some((delegator, entry)) = self.delegation_entry(&current)? else {
                return Err(Error::Repo(format!(
                    "no role delegates to {current:?} (delegate it first)"
                )));
            };
            let paths = entry
                .get("paths")
                .or_else(|| entry.get("path_hash_prefixes"))
                .cloned()
                .unwrap_or(Value::Null);
            // `None` for hash-prefix delegations, where tough and the
            // specification agree.
            let spec_ok = entry
                .get("paths")
                .and_then(entry_paths)
                .map(|patterns| patterns.iter().any(|p| crate::pathmatch::matches(p, name)));
            let role_entry: tough::schema::DelegatedRole = serde_json::from_value(entry)
                .map_err(|e| Error::Repo(format!("delegation of {current:?}: {e}")))?;
            let one = tough::schema::Delegations {
                keys: std::collections::HashMap::new(),
                roles: vec![role_entry],
            };
            if !one.target_is_delegated(&target) {
                return Err(Error::Repo(format!(
                    "{name:?} is outside the paths {paths} that {delegator:?} delegates to {current:?}; \
                     clients would refuse the whole repository"
                )));
            }
            // tough's glob lets `*` match `/`; the specification's does
            // not (python-tuf, go-tuf), and those clients would not find
            // the target. Accept only what both accept.
            if spec_ok == Some(false) {
                return Err(Error::Repo(format!(
                    "{name:?} is outside the paths {paths} that {delegator:?} delegates to {current:?} \
                     as the TUF specification matches them (`*` does not match `/`); \
                     python-tuf and go-tuf clients would not find it"
                )));
            }
            current = delegator;
        }
        Err(Error::Repo(format!(
            "delegation chain of {role:?} is too deep or cyclic"
        )))
    }

    /// The entry of `delegations.roles` for `role`, and the name of the role
    /// holding it: staged metadata first, then published.
    fn delegation_entry(&self, role: &str) -> Result<Option<(String, Value)>> {
        let mut candidates: Vec<(String, PathBuf)> = Vec::new();
        if let Ok(rd) = std::fs::read_dir(self.dir.join("staged")) {
            for e in rd.flatten() {
                let file = e.file_name().to_string_lossy().into_owned();
                if let Some(q) = file.strip_suffix(".json") {
                    candidates.push((crate::transport::percent_decode(q), e.path()));
                }
            }
        }
        if let Some(snap) = self.published_snapshot()? {
            for (file, m) in &snap.meta {
                let r = file.trim_end_matches(".json");
                let path = self
                    .metadata_dir()
                    .join(format!("{}.{}.json", m.version, quote(r)));
                candidates.push((r.to_owned(), path));
            }
        }
        for (delegator, path) in candidates {
            if TOP_LEVEL.contains(&delegator.as_str()) && delegator != "targets" {
                continue;
            }
            let Ok(env) = read_json(&path) else {
                continue;
            };
            let roles = env["signed"]["delegations"]["roles"].as_array();
            if let Some(entry) = roles
                .into_iter()
                .flatten()
                .find(|r| r["name"].as_str() == Some(role))
            {
                return Ok(Some((delegator, entry.clone())));
            }
        }
        Ok(None)
    }

    /// Delegates `spec.paths` from `from` to a new (or updated) role, and
    /// stages the delegated role's first version if it has none.
    pub fn delegate(&self, from: &str, spec: &DelegationSpec, now: UnixTime) -> Result<()> {
        if TOP_LEVEL.contains(&spec.name.as_str()) {
            return Err(Error::Repo(format!(
                "cannot delegate to top-level name {:?}",
                spec.name
            )));
        }
        if spec.keys.is_empty() || spec.threshold == 0 || spec.threshold > spec.keys.len() as u64 {
            return Err(Error::Repo(format!(
                "{}: threshold {} with {} key(s)",
                spec.name,
                spec.threshold,
                spec.keys.len()
            )));
        }
        let mut ids = Vec::new();
        let mut new_keys = Vec::new();
        for k in &spec.keys {
            let (id, v) = key_entry(k)?;
            ids.push(Value::String(id.clone()));
            new_keys.push((id, v));
        }
        self.edit_staged(from, |s| {
            let d = s
                .entry("delegations")
                .or_insert_with(|| json!({"keys": {}, "roles": []}));
            let keys = d["keys"]
                .as_object_mut()
                .ok_or_else(|| Error::Repo("delegations.keys is not an object".into()))?;
            for (id, v) in new_keys {
                keys.insert(id, v);
            }
            let roles = d["roles"].as_array_mut().ok_or_else(|| {
                Error::Repo(
                    "delegations.roles is not an array (succinct roles are not edited here)".into(),
                )
            })?;
            roles.retain(|r| r["name"] != spec.name.as_str());
            roles.push(json!({
                "name": spec.name,
                "keyids": ids,
                "threshold": spec.threshold,
                "terminating": spec.terminating,
                "paths": spec.paths,
            }));
            Ok(())
        })?;
        if !self.staged_path(&spec.name).exists() && self.published(&spec.name)?.is_none() {
            self.write_staged(
                &spec.name,
                json!({
                    "_type": "targets",
                    "spec_version": SPEC_VERSION,
                    "version": 1,
                    "expires": now.plus_secs(default_days("targets") * 86_400).to_string(),
                    "targets": {},
                }),
            )?;
        }
        Ok(())
    }

    /// Stages root N+1 with `edits` applied to its key assignment. Root N+1
    /// then needs signatures from a threshold of root N's root keys *and* of
    /// its own (`sign --role root` with both sets).
    pub fn rotate_root(&self, edits: &[RootEdit], now: UnixTime, days: Option<i64>) -> Result<()> {
        self.edit_staged("root", |s| {
            for e in edits {
                if !TOP_LEVEL.contains(&e.role.as_str()) {
                    return Err(Error::Repo(format!("{:?} is not a top-level role", e.role)));
                }
                let mut add = Vec::new();
                for k in &e.add {
                    add.push(key_entry(k)?);
                }
                let keys = s
                    .get_mut("keys")
                    .and_then(Value::as_object_mut)
                    .ok_or_else(|| Error::Repo("root.keys is not an object".into()))?;
                for (id, v) in &add {
                    keys.insert(id.clone(), v.clone());
                }
                let role = s
                    .get_mut("roles")
                    .and_then(|r| r.get_mut(&e.role))
                    .ok_or_else(|| Error::Repo(format!("root has no {} role", e.role)))?;
                let mut ids: Vec<String> = role["keyids"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                ids.retain(|id| !e.remove.contains(id));
                for (id, _) in &add {
                    if !ids.contains(id) {
                        ids.push(id.clone());
                    }
                }
                let threshold = e
                    .threshold
                    .unwrap_or_else(|| role["threshold"].as_u64().unwrap_or(1));
                if ids.is_empty() || threshold == 0 || threshold > ids.len() as u64 {
                    return Err(Error::Repo(format!(
                        "{}: threshold {threshold} with {} key(s)",
                        e.role,
                        ids.len()
                    )));
                }
                role["keyids"] = json!(ids);
                role["threshold"] = json!(threshold);
            }
            // Drop keys no role uses any more.
            let used: Vec<String> = s["roles"]
                .as_object()
                .map(|r| {
                    r.values()
                        .flat_map(|v| v["keyids"].as_array().cloned().unwrap_or_default())
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            if let Some(keys) = s.get_mut("keys").and_then(Value::as_object_mut) {
                keys.retain(|id, _| used.contains(id));
            }
            s.insert(
                "expires".into(),
                json!(
                    now.plus_secs(days.unwrap_or(default_days("root")) * 86_400)
                        .to_string()
                ),
            );
            Ok(())
        })
    }

    /// Adds signatures by `signers` to the staged `role` (staging its next
    /// version unchanged if nothing is staged, e.g. to re-sign).
    pub fn sign(&self, role: &str, signers: &[&dyn Signer]) -> Result<()> {
        let env = self.stage(role)?;
        let signed = Value::Object(signed_of(&env)?.clone());
        let msg = canonical_json(&signed)?;
        let mut sigs: Vec<Value> = env["signatures"].as_array().cloned().unwrap_or_default();
        for s in signers {
            let id = s.public_key().key_id()?;
            let sig = hex::encode(s.sign(&msg)?);
            sigs.retain(|x| x["keyid"] != id.as_str());
            sigs.push(json!({"keyid": id, "sig": sig}));
        }
        write_json(
            &self.staged_path(role),
            &json!({"signed": signed, "signatures": sigs}),
        )
    }

    /// Roles currently staged.
    pub fn staged_roles(&self) -> Result<Vec<String>> {
        let dir = self.dir.join("staged");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).map_err(Error::io("listing", &dir))? {
            let e = e.map_err(Error::io("listing", &dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(".json")
                && !stem.starts_with('.')
            {
                let env = read_json(&e.path())?;
                if let Some(n) = self.role_name_of(stem, &env) {
                    out.push(n);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn role_name_of(&self, quoted: &str, env: &Value) -> Option<String> {
        // Staged files are named by the quoted role; recover the name by
        // matching, since quoting is not reversed here.
        let ty = env["signed"]["_type"].as_str()?;
        if ty == "root" {
            return Some("root".into());
        }
        Some(crate::transport::percent_decode(quoted))
    }

    /// Publishes all staged roles (each must meet its threshold), then a new
    /// snapshot and timestamp signed by the online keys.
    pub fn publish(
        &self,
        snapshot_signers: &[&dyn Signer],
        timestamp_signers: &[&dyn Signer],
        now: UnixTime,
    ) -> Result<()> {
        let md = self.metadata_dir();
        let staged = self.staged_roles()?;
        let _ = std::fs::remove_dir_all(self.dir.join("published-during-publish"));
        // 1. root: chained to the published one.
        let mut root_env: Option<Value> = self.published("root")?;
        if staged.iter().any(|r| r == "root") {
            let bytes = std::fs::read(self.staged_path("root"))
                .map_err(Error::io("reading", self.staged_path("root")))?;
            let env = Envelope::parse(&bytes, "staged root")?;
            let new = Root::from_signed(&env.signed)?;
            if let Some(old_env) = &root_env {
                let old = Root::from_signed(&Value::Object(signed_of(old_env)?.clone()))?;
                if new.common.version != old.common.version + 1 {
                    return Err(Error::Repo(format!(
                        "staged root is v{}, published is v{}",
                        new.common.version, old.common.version
                    )));
                }
                env.verify("root (by previous root keys)", old.role("root"), &old.keys)?;
            }
            env.verify("root", new.role("root"), &new.keys)?;
            let out = md.join(format!("{}.root.json", new.common.version));
            write_atomic(&out, &bytes)?;
            write_atomic(&md.join("root.json"), &bytes)?;
            root_env =
                Some(serde_json::from_slice(&bytes).map_err(|e| Error::Repo(e.to_string()))?);
        }
        let root_env =
            root_env.ok_or_else(|| Error::Repo("no root: run init and sign root".into()))?;
        let root = Root::from_signed(&Value::Object(signed_of(&root_env)?.clone()))?;

        // 2. targets roles, delegators first (targets, then by depth).
        let old_snapshot = self.published_snapshot()?;
        let mut versions: BTreeMap<String, u64> = old_snapshot
            .as_ref()
            .map(|s| s.meta.iter().map(|(k, m)| (k.clone(), m.version)).collect())
            .unwrap_or_default();
        let mut pending: Vec<String> = staged.into_iter().filter(|r| r != "root").collect();
        let mut progressed = true;
        while !pending.is_empty() && progressed {
            progressed = false;
            let mut rest = Vec::new();
            let pending_names = pending.clone();
            for role in pending {
                let bytes = std::fs::read(self.staged_path(&role))
                    .map_err(Error::io("reading", self.staged_path(&role)))?;
                let env = Envelope::parse(&bytes, &role)?;
                let t = Targets::from_signed(&env.signed, &role)?;
                if role != "targets" && self.staged_delegator_pending(&role, &pending_names)? {
                    rest.push(role);
                    continue;
                }
                let (role_keys, keys) = if role == "targets" {
                    (root.role("targets").clone(), root.keys.clone())
                } else {
                    match self.delegator_of(&role)? {
                        Some(x) => x,
                        None => {
                            rest.push(role);
                            continue;
                        }
                    }
                };
                env.verify(&role, &role_keys, &keys)?;
                write_atomic(
                    &md.join(format!("{}.{}.json", t.common.version, quote(&role))),
                    &bytes,
                )?;
                versions.insert(format!("{role}.json"), t.common.version);
                // Published: the delegator lookup for children now finds it.
                self.publish_marker(&role, t.common.version)?;
                progressed = true;
            }
            pending = rest;
        }
        if !pending.is_empty() {
            return Err(Error::Repo(format!(
                "no published delegator delegates to {pending:?}"
            )));
        }

        // 3. snapshot and timestamp with the online keys.
        let snap_version = old_snapshot.as_ref().map_or(1, |s| s.common.version + 1);
        let meta: Map<String, Value> = versions
            .iter()
            .map(|(k, v)| (k.clone(), json!({"version": v})))
            .collect();
        let snapshot = json!({
            "_type": "snapshot",
            "spec_version": SPEC_VERSION,
            "version": snap_version,
            "expires": now.plus_secs(default_days("snapshot") * 86_400).to_string(),
            "meta": meta,
        });
        let snap_bytes = sign_envelope(&snapshot, snapshot_signers)?;
        check_threshold(&snap_bytes, "snapshot", &root)?;
        write_atomic(
            &md.join(format!("{snap_version}.snapshot.json")),
            &snap_bytes,
        )?;

        let ts_version = self
            .published("timestamp")?
            .map_or(1, |ts| signed_of(&ts).map(version_of).unwrap_or(0) + 1);
        let timestamp = json!({
            "_type": "timestamp",
            "spec_version": SPEC_VERSION,
            "version": ts_version,
            "expires": now.plus_secs(default_days("timestamp") * 86_400).to_string(),
            "meta": {"snapshot.json": {
                "version": snap_version,
                "length": snap_bytes.len(),
                "hashes": {"sha256": sha256_hex(&snap_bytes)},
            }},
        });
        let ts_bytes = sign_envelope(&timestamp, timestamp_signers)?;
        check_threshold(&ts_bytes, "timestamp", &root)?;
        write_atomic(&md.join("timestamp.json"), &ts_bytes)?;

        // 4. staged files are now published.
        let staged_dir = self.dir.join("staged");
        for e in std::fs::read_dir(&staged_dir).map_err(Error::io("listing", &staged_dir))? {
            let p = e.map_err(Error::io("listing", &staged_dir))?.path();
            std::fs::remove_file(&p).map_err(Error::io("removing", &p))?;
        }
        let _ = std::fs::remove_dir_all(self.dir.join("published-during-publish"));
        Ok(())
    }

    /// Whether a role still waiting to be published (other than `role`)
    /// delegates to `role`: it must be published first.
    fn staged_delegator_pending(&self, role: &str, pending: &[String]) -> Result<bool> {
        for other in pending.iter().filter(|p| p.as_str() != role) {
            let env = read_json(&self.staged_path(other))?;
            let Ok(t) = Targets::from_signed(&Value::Object(signed_of(&env)?.clone()), other)
            else {
                continue;
            };
            if t.delegations.is_some_and(|d| d.role_keys(role).is_some()) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Records a role published in this `publish` run so its children's
    /// delegator can be found before the new snapshot exists.
    fn publish_marker(&self, role: &str, version: u64) -> Result<()> {
        let d = self.dir.join("published-during-publish");
        std::fs::create_dir_all(&d).map_err(Error::io("creating", &d))?;
        write_atomic(&d.join(quote(role)), version.to_string().as_bytes())
    }

    /// Finds which role delegates to `role` (staged/just-published or
    /// published), returning the role's keys and the delegator's key map.
    fn delegator_of(
        &self,
        role: &str,
    ) -> Result<Option<(RoleKeys, BTreeMap<String, crate::crypto::PublicKey>)>> {
        let md = self.metadata_dir();
        let mut candidates: Vec<Value> = Vec::new();
        let marker_dir = self.dir.join("published-during-publish");
        if let Ok(rd) = std::fs::read_dir(&marker_dir) {
            for e in rd.flatten() {
                let q = e.file_name().to_string_lossy().into_owned();
                let v: u64 = std::fs::read_to_string(e.path())
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let p = md.join(format!("{v}.{q}.json"));
                if let Ok(x) = read_json(&p) {
                    candidates.push(x);
                }
            }
        }
        if let Some(snap) = self.published_snapshot()? {
            for (name, m) in &snap.meta {
                let r = name.trim_end_matches(".json");
                let p = md.join(format!("{}.{}.json", m.version, quote(r)));
                if let Ok(x) = read_json(&p) {
                    candidates.push(x);
                }
            }
        }
        for env in candidates {
            let Ok(t) = Targets::from_signed(&Value::Object(signed_of(&env)?.clone()), "delegator")
            else {
                continue;
            };
            if let Some(d) = t.delegations
                && let Some(k) = d.role_keys(role)
            {
                return Ok(Some((k, d.keys)));
            }
        }
        Ok(None)
    }
}

fn sign_envelope(signed: &Value, signers: &[&dyn Signer]) -> Result<Vec<u8>> {
    let msg = canonical_json(signed)?;
    let mut sigs = Vec::new();
    for s in signers {
        sigs.push(json!({"keyid": s.public_key().key_id()?, "sig": hex::encode(s.sign(&msg)?)}));
    }
    let mut bytes = serde_json::to_vec_pretty(&json!({"signed": signed, "signatures": sigs}))
        .map_err(|e| Error::Repo(e.to_string()))?;
    bytes.push(b'\n');
    Ok(bytes)
}

fn check_threshold(bytes: &[u8], role: &str, root: &Root) -> Result<()> {
    Envelope::parse(bytes, role)?
        .verify(role, root.role(role), &root.keys)
        .map(|_| ())
}

/// The patterns of a delegation's `paths` list (`None` unless a list of strings).
fn entry_paths(paths: &Value) -> Option<Vec<&str>> {
    paths.as_array()?.iter().map(Value::as_str).collect()
}
