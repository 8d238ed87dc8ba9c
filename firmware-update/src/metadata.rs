//! TUF metadata (TUF 4.x): the signed envelope and the four role types,
//! parsed from JSON into checked types. Signatures are verified over the
//! canonical JSON of the `signed` object exactly as received, never over a
//! re-serialisation of these types.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::clock::UnixTime;
use crate::crypto::{PublicKey, canonical_json};
use crate::error::{Error, Result};

/// Names of the top-level roles.
pub const TOP_LEVEL: [&str; 4] = ["root", "timestamp", "snapshot", "targets"];

/// A metadata file: `{"signed": {...}, "signatures": [...]}` (TUF 4.2).
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The signed object as received.
    pub signed: Value,
    /// `(keyid, signature bytes)`; `None` when the signature is not hex.
    pub signatures: Vec<(String, Option<Vec<u8>>)>,
    canonical: Vec<u8>,
}

impl Envelope {
    /// Parses the envelope of a metadata file.
    pub fn parse(bytes: &[u8], what: &str) -> Result<Self> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| Error::malformed(what, e))?;
        let Value::Object(mut obj) = v else {
            return Err(Error::malformed(what, "not a JSON object"));
        };
        let signed = obj
            .remove("signed")
            .filter(Value::is_object)
            .ok_or_else(|| Error::malformed(what, "missing \"signed\" object"))?;
        let sigs = obj
            .remove("signatures")
            .and_then(|v| {
                if let Value::Array(a) = v {
                    Some(a)
                } else {
                    None
                }
            })
            .ok_or_else(|| Error::malformed(what, "missing \"signatures\" array"))?;
        let mut signatures = Vec::with_capacity(sigs.len());
        let mut seen = BTreeSet::new();
        for s in sigs {
            let keyid = s.get("keyid").and_then(Value::as_str);
            let sig = s.get("sig").and_then(Value::as_str);
            let (Some(keyid), Some(sig)) = (keyid, sig) else {
                return Err(Error::malformed(
                    what,
                    "signature without keyid/sig strings",
                ));
            };
            // Several signatures for one key id: refuse the file (as
            // python-tuf does) rather than pick one.
            if !seen.insert(keyid.to_owned()) {
                return Err(Error::malformed(
                    what,
                    format!("two signatures for key id {keyid}"),
                ));
            }
            signatures.push((keyid.to_owned(), hex::decode(sig).ok()));
        }
        let canonical = canonical_json(&signed)?;
        Ok(Self {
            signed,
            signatures,
            canonical,
        })
    }

    /// Checks that at least `role.threshold` distinct keys of `role` signed
    /// (TUF 5.3.4 and friends). Returns the number of valid signatures.
    pub fn verify(
        &self,
        role_name: &str,
        role: &RoleKeys,
        keys: &BTreeMap<String, PublicKey>,
    ) -> Result<usize> {
        let valid = self.count_valid(role, keys);
        if (valid as u64) < role.threshold {
            return Err(Error::Threshold {
                role: role_name.to_owned(),
                valid,
                threshold: role.threshold,
            });
        }
        Ok(valid)
    }

    /// How many distinct keys of `role` made a valid signature.
    pub fn count_valid(&self, role: &RoleKeys, keys: &BTreeMap<String, PublicKey>) -> usize {
        role.keyids
            .iter()
            .filter(|id| {
                let Some(key) = keys.get(*id) else {
                    return false;
                };
                self.signatures.iter().any(|(kid, sig)| {
                    kid == *id
                        && sig
                            .as_deref()
                            .is_some_and(|s| key.verify(&self.canonical, s))
                })
            })
            .count()
    }
}

/// Fields every role has (TUF 4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Common {
    /// Metadata version, ≥ 1.
    pub version: u64,
    /// Expiry.
    pub expires: UnixTime,
}

/// Keys and threshold of a role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleKeys {
    /// Key ids, distinct.
    pub keyids: Vec<String>,
    /// Signatures required, ≥ 1.
    pub threshold: u64,
}

/// root.json (TUF 4.3).
#[derive(Debug, Clone)]
pub struct Root {
    /// Version and expiry.
    pub common: Common,
    /// Whether metadata and targets are fetched by versioned/hashed names.
    pub consistent_snapshot: bool,
    /// Keys by key id.
    pub keys: BTreeMap<String, PublicKey>,
    /// The four top-level roles.
    pub roles: BTreeMap<String, RoleKeys>,
}

/// A METAFILES entry (TUF 4.4/4.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaFile {
    /// Version the file must have.
    pub version: u64,
    /// Length, if the repository states it.
    pub length: Option<u64>,
    /// Hashes, if the repository states them.
    pub hashes: Option<BTreeMap<String, String>>,
}

/// timestamp.json (TUF 4.6).
#[derive(Debug, Clone)]
pub struct Timestamp {
    /// Version and expiry.
    pub common: Common,
    /// The `snapshot.json` entry.
    pub snapshot_meta: MetaFile,
}

/// snapshot.json (TUF 4.4).
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Version and expiry.
    pub common: Common,
    /// `"<role>.json"` → version (and optional length and hashes).
    pub meta: BTreeMap<String, MetaFile>,
}

/// A TARGETS entry (TUF 4.5).
#[derive(Debug, Clone, PartialEq)]
pub struct TargetFile {
    /// Exact length.
    pub length: u64,
    /// Algorithm → lower-case hex digest; at least one.
    pub hashes: BTreeMap<String, String>,
    /// Opaque application data (`custom`).
    pub custom: Option<Value>,
}

/// A delegated role (TUF 4.5 DELEGATIONS).
#[derive(Debug, Clone)]
pub struct DelegatedRole {
    /// Role name.
    pub name: String,
    /// Keys and threshold.
    pub keys: RoleKeys,
    /// Stop searching other delegations when this one matches.
    pub terminating: bool,
    /// Glob patterns.
    pub paths: Option<Vec<String>>,
    /// Hex prefixes of SHA-256 of the target path.
    pub path_hash_prefixes: Option<Vec<String>>,
}

/// TAP 15 hash-bin delegation.
#[derive(Debug, Clone)]
pub struct Succinct {
    /// Keys and threshold shared by all bins.
    pub keys: RoleKeys,
    /// Bits of SHA-256(target path) that pick the bin.
    pub bit_length: u32,
    /// Bin role names are `<prefix>-<hex bin>`.
    pub name_prefix: String,
}

/// DELEGATIONS of a targets role.
#[derive(Debug, Clone)]
pub struct Delegations {
    /// Keys by key id.
    pub keys: BTreeMap<String, PublicKey>,
    /// Ordered delegated roles.
    pub roles: Vec<DelegatedRole>,
    /// Hash-bin delegation (instead of `roles`).
    pub succinct: Option<Succinct>,
}

/// targets.json or a delegated targets role (TUF 4.5).
#[derive(Debug, Clone)]
pub struct Targets {
    /// Version and expiry.
    pub common: Common,
    /// Target path → file info.
    pub targets: BTreeMap<String, TargetFile>,
    /// Delegations, if any.
    pub delegations: Option<Delegations>,
}

fn obj<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| Error::malformed(what, "not an object"))
}

fn uint(m: &Map<String, Value>, key: &str, what: &str) -> Result<u64> {
    m.get(key)
        .and_then(Value::as_u64)
        .ok_or_else(|| Error::malformed(what, format!("{key:?} is not a non-negative integer")))
}

fn string<'a>(m: &'a Map<String, Value>, key: &str, what: &str) -> Result<&'a str> {
    m.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| Error::malformed(what, format!("{key:?} is not a string")))
}

fn common(signed: &Value, expected_type: &str, what: &str) -> Result<Common> {
    let m = obj(signed, what)?;
    let ty = string(m, "_type", what)?;
    if ty != expected_type {
        return Err(Error::malformed(
            what,
            format!("_type is {ty:?}, expected {expected_type:?}"),
        ));
    }
    let spec = string(m, "spec_version", what)?;
    let parts: Vec<&str> = spec.split('.').collect();
    if !(2..=3).contains(&parts.len())
        || parts
            .iter()
            .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(Error::malformed(
            what,
            format!("spec_version {spec:?} is not a version"),
        ));
    }
    if parts[0] != "1" {
        return Err(Error::malformed(
            what,
            format!("unsupported spec_version {spec:?}"),
        ));
    }
    let version = uint(m, "version", what)?;
    if version == 0 {
        return Err(Error::malformed(what, "version must be at least 1"));
    }
    let expires = string(m, "expires", what)?;
    let expires = UnixTime::parse_rfc3339(expires).ok_or_else(|| {
        Error::malformed(
            what,
            format!("expires {expires:?} is not YYYY-MM-DDTHH:MM:SSZ"),
        )
    })?;
    Ok(Common { version, expires })
}

fn keys_map(v: Option<&Value>, what: &str) -> Result<BTreeMap<String, PublicKey>> {
    let m = obj(
        v.ok_or_else(|| Error::malformed(what, "missing keys"))?,
        what,
    )?;
    m.iter()
        .map(|(id, k)| Ok((id.clone(), PublicKey::from_json(k)?)))
        .collect()
}

fn role_keys(m: &Map<String, Value>, what: &str) -> Result<RoleKeys> {
    let ids = m
        .get("keyids")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::malformed(what, "keyids is not an array"))?;
    let mut keyids = Vec::with_capacity(ids.len());
    for id in ids {
        let id = id
            .as_str()
            .ok_or_else(|| Error::malformed(what, "key id is not a string"))?;
        if keyids.iter().any(|k| k == id) {
            return Err(Error::malformed(what, format!("key id {id} listed twice")));
        }
        keyids.push(id.to_owned());
    }
    let threshold = uint(m, "threshold", what)?;
    if threshold == 0 {
        return Err(Error::malformed(what, "threshold must be at least 1"));
    }
    Ok(RoleKeys { keyids, threshold })
}

fn hashes(v: &Value, what: &str) -> Result<BTreeMap<String, String>> {
    let m = obj(v, what)?;
    if m.is_empty() {
        return Err(Error::malformed(what, "hashes is empty"));
    }
    m.iter()
        .map(|(alg, h)| {
            let h = h
                .as_str()
                .ok_or_else(|| Error::malformed(what, "hash is not a string"))?;
            Ok((alg.clone(), h.to_owned()))
        })
        .collect()
}

fn metafile(v: &Value, what: &str) -> Result<MetaFile> {
    let m = obj(v, what)?;
    let version = uint(m, "version", what)?;
    if version == 0 {
        return Err(Error::malformed(what, "meta version must be at least 1"));
    }
    let length = match m.get("length") {
        None => None,
        Some(l) => Some(
            l.as_u64()
                .ok_or_else(|| Error::malformed(what, "length is not a non-negative integer"))?,
        ),
    };
    let hashes = m.get("hashes").map(|h| hashes(h, what)).transpose()?;
    Ok(MetaFile {
        version,
        length,
        hashes,
    })
}

impl Root {
    /// Parses the `signed` object of root.json.
    pub fn from_signed(signed: &Value) -> Result<Self> {
        let what = "root";
        let common = common(signed, "root", what)?;
        let m = obj(signed, what)?;
        let consistent_snapshot = match m.get("consistent_snapshot") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(Error::malformed(
                    what,
                    "consistent_snapshot is not a boolean",
                ));
            }
        };
        let keys = keys_map(m.get("keys"), what)?;
        let roles_v = obj(
            m.get("roles")
                .ok_or_else(|| Error::malformed(what, "missing roles"))?,
            what,
        )?;
        let mut roles = BTreeMap::new();
        for (name, r) in roles_v {
            roles.insert(name.clone(), role_keys(obj(r, what)?, what)?);
        }
        if roles.len() != 4 || TOP_LEVEL.iter().any(|r| !roles.contains_key(*r)) {
            return Err(Error::malformed(
                what,
                "roles must be exactly root, timestamp, snapshot, targets",
            ));
        }
        Ok(Self {
            common,
            consistent_snapshot,
            keys,
            roles,
        })
    }

    /// Keys and threshold of a top-level role.
    pub fn role(&self, name: &str) -> &RoleKeys {
        // Invariant: from_signed checked all four top-level roles exist, and
        // callers only pass top-level names.
        &self.roles[name]
    }
}

impl Timestamp {
    /// Parses the `signed` object of timestamp.json.
    pub fn from_signed(signed: &Value) -> Result<Self> {
        let what = "timestamp";
        let common = common(signed, "timestamp", what)?;
        let meta = obj(
            obj(signed, what)?
                .get("meta")
                .ok_or_else(|| Error::malformed(what, "missing meta"))?,
            what,
        )?;
        let snap = meta
            .get("snapshot.json")
            .ok_or_else(|| Error::malformed(what, "meta has no snapshot.json"))?;
        Ok(Self {
            common,
            snapshot_meta: metafile(snap, what)?,
        })
    }
}

impl Snapshot {
    /// Parses the `signed` object of snapshot.json.
    pub fn from_signed(signed: &Value) -> Result<Self> {
        let what = "snapshot";
        let common = common(signed, "snapshot", what)?;
        let meta_v = obj(
            obj(signed, what)?
                .get("meta")
                .ok_or_else(|| Error::malformed(what, "missing meta"))?,
            what,
        )?;
        let meta = meta_v
            .iter()
            .map(|(k, v)| Ok((k.clone(), metafile(v, what)?)))
            .collect::<Result<_>>()?;
        Ok(Self { common, meta })
    }
}

impl Targets {
    /// Parses the `signed` object of a targets role.
    pub fn from_signed(signed: &Value, what: &str) -> Result<Self> {
        let common = common(signed, "targets", what)?;
        let m = obj(signed, what)?;
        let tv = obj(
            m.get("targets")
                .ok_or_else(|| Error::malformed(what, "missing targets"))?,
            what,
        )?;
        let mut targets = BTreeMap::new();
        for (path, t) in tv {
            let tm = obj(t, what)?;
            targets.insert(
                path.clone(),
                TargetFile {
                    length: uint(tm, "length", what)?,
                    hashes: hashes(
                        tm.get("hashes")
                            .ok_or_else(|| Error::malformed(what, "target without hashes"))?,
                        what,
                    )?,
                    custom: tm.get("custom").cloned(),
                },
            );
        }
        let delegations = match m.get("delegations") {
            None | Some(Value::Null) => None,
            Some(d) => Some(Delegations::from_json(d, what)?),
        };
        Ok(Self {
            common,
            targets,
            delegations,
        })
    }
}

impl Delegations {
    fn from_json(v: &Value, what: &str) -> Result<Self> {
        let m = obj(v, what)?;
        let keys = keys_map(m.get("keys"), what)?;
        let roles_v = m.get("roles");
        let succ_v = m.get("succinct_roles");
        if roles_v.is_some() == succ_v.is_some() {
            return Err(Error::malformed(
                what,
                "delegations need exactly one of roles, succinct_roles",
            ));
        }
        let mut roles = Vec::new();
        if let Some(rv) = roles_v {
            let arr = rv
                .as_array()
                .ok_or_else(|| Error::malformed(what, "roles is not an array"))?;
            let mut names = BTreeSet::new();
            for r in arr {
                let rm = obj(r, what)?;
                let name = string(rm, "name", what)?.to_owned();
                if TOP_LEVEL.contains(&name.as_str()) {
                    return Err(Error::malformed(
                        what,
                        format!("delegated role may not be named {name:?}"),
                    ));
                }
                if !names.insert(name.clone()) {
                    return Err(Error::malformed(
                        what,
                        format!("delegated role {name:?} listed twice"),
                    ));
                }
                let strings = |k: &str| -> Result<Option<Vec<String>>> {
                    rm.get(k)
                        .map(|p| {
                            p.as_array()
                                .ok_or_else(|| {
                                    Error::malformed(what, format!("{k} is not an array"))
                                })?
                                .iter()
                                .map(|s| {
                                    s.as_str().map(str::to_owned).ok_or_else(|| {
                                        Error::malformed(what, format!("{k} entry is not a string"))
                                    })
                                })
                                .collect()
                        })
                        .transpose()
                };
                let paths = strings("paths")?;
                let path_hash_prefixes = strings("path_hash_prefixes")?;
                if paths.is_some() && path_hash_prefixes.is_some() {
                    return Err(Error::malformed(
                        what,
                        "role has both paths and path_hash_prefixes",
                    ));
                }
                let terminating = match rm.get("terminating") {
                    Some(Value::Bool(b)) => *b,
                    _ => return Err(Error::malformed(what, "terminating is not a boolean")),
                };
                roles.push(DelegatedRole {
                    name,
                    keys: role_keys(rm, what)?,
                    terminating,
                    paths,
                    path_hash_prefixes,
                });
            }
        }
        let succinct = match succ_v {
            None => None,
            Some(s) => {
                let sm = obj(s, what)?;
                let bit_length = uint(sm, "bit_length", what)?;
                if !(1..=32).contains(&bit_length) {
                    return Err(Error::malformed(what, "succinct bit_length must be 1..=32"));
                }
                Some(Succinct {
                    keys: role_keys(sm, what)?,
                    // Checked 1..=32 just above.
                    bit_length: bit_length as u32,
                    name_prefix: string(sm, "name_prefix", what)?.to_owned(),
                })
            }
        };
        Ok(Self {
            keys,
            roles,
            succinct,
        })
    }

    /// Whether `name` is one of the roles these delegations define.
    pub fn role_keys(&self, name: &str) -> Option<RoleKeys> {
        if let Some(s) = &self.succinct {
            let rest = name.strip_prefix(&s.name_prefix)?.strip_prefix('-')?;
            let width = (s.bit_length as usize).div_ceil(4);
            let bin = u32::from_str_radix(rest, 16).ok()?;
            let ok = rest.len() == width
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                && u64::from(bin) < (1u64 << s.bit_length);
            return ok.then(|| s.keys.clone());
        }
        self.roles
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.keys.clone())
    }
}

/// Checks `data` against a stated length and hashes (TUF 5.5.1, 5.6.1,
/// 5.7.3). Unknown hash algorithms fail closed.
pub fn check_length_and_hashes(
    data: &[u8],
    length: Option<u64>,
    hashes: Option<&BTreeMap<String, String>>,
    what: &str,
) -> Result<()> {
    if let Some(len) = length
        && data.len() as u64 != len
    {
        return Err(Error::HashMismatch {
            what: what.to_owned(),
            detail: format!("length {} differs from the signed length {len}", data.len()),
        });
    }
    for (alg, expected) in hashes.into_iter().flatten() {
        let got = hash_hex(alg, data).ok_or_else(|| Error::HashMismatch {
            what: what.to_owned(),
            detail: format!("unsupported hash algorithm {alg:?}"),
        })?;
        if !got.eq_ignore_ascii_case(expected) {
            return Err(Error::HashMismatch {
                what: what.to_owned(),
                detail: format!("{alg} is {got}, signed metadata says {expected}"),
            });
        }
    }
    Ok(())
}

/// Hex digest of `data` with a TUF hash algorithm name.
pub fn hash_hex(alg: &str, data: &[u8]) -> Option<String> {
    Some(hex::encode(aws_lc_rs::digest::digest(
        digest_algorithm(alg)?,
        data,
    )))
}

/// The digest for a TUF hash algorithm name, if we have it.
pub fn digest_algorithm(alg: &str) -> Option<&'static aws_lc_rs::digest::Algorithm> {
    use aws_lc_rs::digest::{SHA256, SHA384, SHA512};
    match alg {
        "sha256" => Some(&SHA256),
        "sha384" => Some(&SHA384),
        "sha512" => Some(&SHA512),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_signature_key_ids_are_refused() {
        let doc = br#"{"signed": {"_type": "x"}, "signatures": [{"keyid": "a", "sig": "00"}, {"keyid": "a", "sig": "01"}]}"#;
        assert!(matches!(
            Envelope::parse(doc, "x"),
            Err(Error::Malformed { .. })
        ));
    }
}
