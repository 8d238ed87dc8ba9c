//! The TUF client (TUF 1.0 section 5), built on awslabs/tough.
//!
//! tough's `RepositoryLoader` runs the workflow: the trusted root, the root
//! rotation chain (each new root signed by a threshold of the old and of its
//! own root keys, versions N+1), timestamp → snapshot → targets, delegated
//! targets roles, rollback and mix-and-match checks against the trusted
//! metadata, and a size or hash bound on every download. tough also
//! searches the delegations for a target and downloads it, reading at most
//! its signed length and checking its SHA-256. This module adds what tough
//! does not do:
//!
//! - **Expiry against an injectable [`Clock`].** tough only knows the system
//!   clock, so it runs with `ExpirationEnforcement::Unsafe`, and every role
//!   it accepted is checked here against `clock.now()` before it is trusted
//!   or persisted (a freeze is refused with [`Error::Freeze`]).
//! - **Durable trusted state.** The exact bytes tough verified are written
//!   atomically (fsync'd) to `metadata_dir` under unversioned names
//!   (`root.json`, `timestamp.json`, `snapshot.json`, `targets.json`, and
//!   delegated roles as `<quoted name>.json`), each as soon as it is
//!   accepted. tough works in a scratch datastore seeded from them on every
//!   refresh, so its rollback checks run against our trusted copies.
//! - **Trusted copies.** A snapshot, targets or delegated role that is
//!   exactly what the just-accepted metadata requires, and that verifies, is
//!   given to tough from `metadata_dir` instead of being downloaded.
//! - **Equal-version timestamps** are not followed (python-tuf, go-tuf).
//! - **One [`Error`] variant per attack**, recovered from tough's error
//!   chain and the file tough was working on.
//! - **Target URLs per TUF 5.7.3.** Under consistent snapshots a target
//!   `dir/name` is fetched as `dir/<sha256>.name`; tough 0.24 would ask for
//!   `<sha256>.dir/name`. The bridge transport points tough's request at the
//!   right file, and tough still bounds and hashes what it reads.
//!
//! Differences from python-tuf that come from tough (firmware-update/README.md,
//! "Client"): every delegated role is fetched and verified at refresh, so a
//! delegated role that cannot be fetched or verified, or that lists a target
//! outside its paths, fails the refresh even for targets it does not cover;
//! targets must carry a SHA-256 hash; RSA PKCS#1 v1.5 keys are not parsed;
//! key IDs must be the hash of their key.

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tough::error::Error as ToughError;
use tough::schema::{DelegatedRole, PathSet, RoleType, Signed, Target, Targets as ToughTargets};
use tough::{
    Bytes, ExpirationEnforcement, Limits, RepositoryLoader, TargetName, TransportError,
    TransportErrorKind, TransportStream,
};
use url::Url;

use crate::clock::{Clock, UnixTime};
use crate::crypto::PublicKey;
use crate::error::{Error, Result};
use crate::fsutil::{create_dir_durable, write_atomic};
use crate::metadata::{
    Envelope, RoleKeys, Root, Snapshot, TargetFile, Targets, Timestamp, check_length_and_hashes,
    digest_algorithm,
};
use crate::transport::{Body, FetchError, Transport, percent_decode};

/// Limits and knobs; the defaults are python-tuf's.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Most root versions fetched in one refresh (TUF 5.3.3).
    pub max_root_rotations: u64,
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
            root_max_len: 512_000,
            timestamp_max_len: 16_384,
            snapshot_max_len: 2_000_000,
            targets_max_len: 5_000_000,
            prefix_targets_with_hash: true,
        }
    }
}

/// Percent-encodes everything but `A-Z a-z 0-9 _ . - ~` (Python's
/// `urllib.parse.quote(s, "")`, and tough's file names for roles): role
/// names become safe file and URL parts.
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

/// tough sees the repository under these bases; the bridge maps them back
/// to the caller's URLs (which may be plain paths, which `url` cannot hold).
const METADATA_BASE: &str = "confidant-metadata://repository/";
const TARGETS_BASE: &str = "confidant-targets://repository/";

/// A metadata file name as requested (`timestamp.json`, `7.snapshot.json`,
/// `3.%3F.json`): its role name and the version prefix, if any.
fn parse_file_name(file: &str) -> (Option<u64>, String) {
    let stem = file.strip_suffix(".json").unwrap_or(file);
    let (version, quoted) = match stem.split_once('.') {
        Some((v, rest)) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
            (v.parse().ok(), rest)
        }
        _ => (None, stem),
    };
    (version, percent_decode(quoted))
}

/// A delegated role name whose file (`<quoted name>.json`) would be a
/// top-level role's (`root`, `snapshot`; in any case, for file systems that
/// ignore it) or, without consistent snapshots (where delegated files carry
/// no version), would read as a versioned file (`7.targets`, `12.server`).
fn reserved_role_name(name: &str, consistent_snapshot: bool) -> bool {
    ["root", "timestamp", "snapshot", "targets"]
        .iter()
        .any(|t| t.eq_ignore_ascii_case(name))
        || (!consistent_snapshot
            && parse_file_name(&format!("{}.json", quote(name))) != (None, name.to_owned()))
}

/// What the bridge saw: every metadata request in order (with the bytes
/// when it succeeded), and where the next target request must go.
#[derive(Debug, Default)]
struct BridgeState {
    requests: Vec<(String, Option<Vec<u8>>)>,
    target: Option<(String, u64)>,
    /// The snapshot given to tough, parsed once (by request index): every
    /// delegated role's trusted copy is checked against it.
    snapshot: Option<(usize, Arc<Snapshot>)>,
}

/// Why the bridge failed a request (the cause inside tough's
/// `TransportError`).
#[derive(Debug)]
enum BridgeError {
    TooLarge { limit: u64 },
    Malformed(String),
    Other(String),
}

impl std::fmt::Display for BridgeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLarge { limit } => write!(f, "more than {limit} bytes"),
            Self::Malformed(r) | Self::Other(r) => f.write_str(r),
        }
    }
}

impl StdError for BridgeError {}

/// tough's transport: our [`Transport`] behind tough's URL space, with a
/// record of the metadata bytes tough was given.
#[derive(Debug, Clone)]
struct Bridge {
    inner: Arc<dyn Transport>,
    metadata_url: String,
    config: Config,
    state: Arc<Mutex<BridgeState>>,
    /// The root the refresh starts from and our trusted timestamp, for the
    /// equal-version rule (see [`Bridge::keep_trusted_timestamp`]).
    start_root: Arc<Vec<u8>>,
    trusted_timestamp: Option<Arc<Vec<u8>>>,
    /// Where our trusted snapshot and targets are (see
    /// [`Bridge::trusted_copy`]).
    metadata_dir: Arc<PathBuf>,
}

impl Bridge {
    fn state(&self) -> MutexGuard<'_, BridgeState> {
        // A poisoned lock only means a panic elsewhere; the record is plain data.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A repository may re-sign a timestamp without raising its version.
    /// python-tuf and go-tuf then keep the trusted one (and do not follow
    /// the new one to a snapshot); tough would accept it, as its version is
    /// not lower. When the fetched timestamp has the trusted one's version
    /// and the trusted one still verifies under the newest root seen in
    /// this refresh, tough is given the trusted bytes: it verifies them as
    /// it would any others.
    fn keep_trusted_timestamp(&self, fetched: &[u8]) -> Option<Vec<u8>> {
        let trusted = self.trusted_timestamp.as_deref()?;
        if trusted.as_slice() == fetched {
            return None;
        }
        let (v_new, _) = version_and_expiry(fetched, "timestamp").ok()?;
        let (v_old, _) = version_and_expiry(trusted, "timestamp").ok()?;
        if v_new != v_old {
            return None;
        }
        let root = self.newest_root()?;
        let env = Envelope::parse(trusted, "timestamp").ok()?;
        env.verify("timestamp", root.role("timestamp"), &root.keys)
            .ok()?;
        Some(trusted.clone())
    }

    /// The newest root seen in this refresh (tough asks for the root chain
    /// first and stops at the first bad link, so a later request means it
    /// accepted every root it was given).
    fn newest_root(&self) -> Option<Root> {
        let state = self.state();
        let bytes = state
            .requests
            .iter()
            .rev()
            .find_map(|(file, bytes)| match parse_file_name(file) {
                (Some(_), role) if role == "root" => bytes.as_deref(),
                _ => None,
            })
            .unwrap_or(self.start_root.as_slice());
        Root::from_signed(&Envelope::parse(bytes, "root").ok()?.signed).ok()
    }

    /// The bytes most recently given to tough for a top-level role.
    fn last_given(&self, role: &str) -> Option<Vec<u8>> {
        self.state()
            .requests
            .iter()
            .rev()
            .find_map(|(file, bytes)| (parse_file_name(file).1 == role).then(|| bytes.clone()))
            .flatten()
    }

    /// The snapshot most recently given to tough, parsed.
    fn given_snapshot(&self) -> Option<Arc<Snapshot>> {
        let mut state = self.state();
        let index = state
            .requests
            .iter()
            .rposition(|(file, _)| parse_file_name(file).1 == "snapshot")?;
        if let Some((i, snap)) = &state.snapshot
            && *i == index
        {
            return Some(Arc::clone(snap));
        }
        let bytes = state.requests[index].1.as_deref()?;
        let env = Envelope::parse(bytes, "snapshot").ok()?;
        let snap = Arc::new(Snapshot::from_signed(&env.signed).ok()?);
        state.snapshot = Some((index, Arc::clone(&snap)));
        Some(snap)
    }

    /// The keys a targets role given to tough in this refresh delegates to
    /// `role` with: (the role's key ids and threshold, the key map).
    fn delegator_keys(&self, role: &str) -> Option<(RoleKeys, BTreeMap<String, PublicKey>)> {
        let state = self.state();
        state.requests.iter().rev().find_map(|(file, bytes)| {
            let (_, name) = parse_file_name(file);
            if ["root", "timestamp", "snapshot"].contains(&name.as_str()) {
                return None;
            }
            let env = Envelope::parse(bytes.as_deref()?, &name).ok()?;
            let d = Targets::from_signed(&env.signed, &name).ok()?.delegations?;
            Some((d.role_keys(role)?, d.keys))
        })
    }

    /// Our trusted copy of a snapshot, targets or delegated targets role,
    /// when it is exactly what the metadata tough just accepted requires:
    /// the version, the length and hashes if stated, and signatures that
    /// verify under the newest root (or the delegating role). tough is then
    /// given it instead of a download, and verifies it as any other; this
    /// is python-tuf's use of its local copies: no request, and a mirror
    /// cannot swap in a different file of that version. Anything else is
    /// downloaded.
    fn trusted_copy(&self, file: &str) -> Option<Vec<u8>> {
        let (_, role) = parse_file_name(file);
        let (meta, keys) = match role.as_str() {
            "root" | "timestamp" => return None,
            "snapshot" => {
                let ts = self.last_given("timestamp")?;
                let meta = Timestamp::from_signed(&Envelope::parse(&ts, "timestamp").ok()?.signed)
                    .ok()?
                    .snapshot_meta;
                let root = self.newest_root()?;
                (meta, (root.role("snapshot").clone(), root.keys))
            }
            _ => {
                let meta = self
                    .given_snapshot()?
                    .meta
                    .get(&format!("{role}.json"))?
                    .clone();
                let keys = if role == "targets" {
                    let root = self.newest_root()?;
                    (root.role("targets").clone(), root.keys)
                } else {
                    self.delegator_keys(&role)?
                };
                (meta, keys)
            }
        };
        let local = std::fs::read(self.metadata_dir.join(format!("{}.json", quote(&role)))).ok()?;
        let env = Envelope::parse(&local, &role).ok()?;
        if env.signed.get("version").and_then(Value::as_u64) != Some(meta.version) {
            return None;
        }
        check_length_and_hashes(&local, meta.length, meta.hashes.as_ref(), file).ok()?;
        env.verify(&role, &keys.0, &keys.1).ok()?;
        Some(local)
    }

    /// The largest body worth reading for a metadata file; tough applies
    /// the exact bound (signed length or the configured limit) on top.
    fn metadata_cap(&self, file: &str) -> u64 {
        let c = &self.config;
        match parse_file_name(file) {
            (_, role) if role == "timestamp" => c.timestamp_max_len,
            (Some(_), role) if role == "root" => c.root_max_len,
            _ => c.snapshot_max_len.max(c.targets_max_len),
        }
    }
}

/// A body as tough's stream, in pieces of at most 64 KiB (blocking reads:
/// tough runs on a runtime of its own, one future at a time).
fn body_stream(body: Body, url: String) -> TransportStream {
    Box::pin(futures_util::stream::unfold(Some(body), move |body| {
        let url = url.clone();
        async move {
            let mut body = body?;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                return match body.read(&mut buf) {
                    Ok(0) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        Some((Ok(Bytes::from(buf)), Some(body)))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        let err = TransportError::new_with_cause(
                            TransportErrorKind::Other,
                            url,
                            BridgeError::Other(e.to_string()),
                        );
                        Some((Err(err), None))
                    }
                };
            }
        }
    }))
}

fn failed_stream(url: &str, cause: BridgeError) -> TransportStream {
    let err = TransportError::new_with_cause(TransportErrorKind::Other, url, cause);
    Box::pin(futures_util::stream::iter([Err(err)]))
}

#[tough::async_trait]
impl tough::Transport for Bridge {
    async fn fetch(&self, url: Url) -> std::result::Result<TransportStream, TransportError> {
        let requested = url.as_str();
        if let Some(file) = requested.strip_prefix(METADATA_BASE)
            && let Some(local) = self.trusted_copy(file)
        {
            self.state()
                .requests
                .push((file.to_owned(), Some(local.clone())));
            return Ok(Box::pin(futures_util::stream::iter([Ok(Bytes::from(
                local,
            ))])));
        }
        let (real, cap, record) = if let Some(file) = requested.strip_prefix(METADATA_BASE) {
            let real = format!("{}/{file}", self.metadata_url);
            (real, self.metadata_cap(file), Some(file.to_owned()))
        } else if requested.starts_with(TARGETS_BASE) {
            match self.state().target.clone() {
                Some((real, len)) => (real, len, None),
                None => {
                    return Err(TransportError::new(TransportErrorKind::FileNotFound, url));
                }
            }
        } else {
            return Err(TransportError::new(
                TransportErrorKind::UnsupportedUrlScheme,
                url,
            ));
        };
        if record.is_none() {
            // A target: read in pieces, never whole (it may be a model
            // larger than memory). tough bounds it by the signed length and
            // hashes it as it goes.
            return match self.inner.open(&real, cap) {
                Ok(body) => Ok(body_stream(body, real)),
                Err(FetchError::NotFound) => {
                    Err(TransportError::new(TransportErrorKind::FileNotFound, real))
                }
                Err(FetchError::TooLarge) => {
                    Ok(failed_stream(&real, BridgeError::TooLarge { limit: cap }))
                }
                Err(FetchError::Other(reason)) => {
                    Ok(failed_stream(&real, BridgeError::Other(reason)))
                }
            };
        }
        let mut result = self.inner.fetch(&real, cap);
        if record.as_deref() == Some("timestamp.json")
            && let Ok(fetched) = &result
            && let Some(trusted) = self.keep_trusted_timestamp(fetched)
        {
            result = Ok(trusted);
        }
        let metadata = record.is_some();
        if let Some(file) = record {
            let bytes = result.as_ref().ok().cloned();
            self.state().requests.push((file, bytes));
        }
        match result {
            Ok(bytes) => {
                if metadata && let Some(reason) = nonconforming(&bytes) {
                    return Ok(failed_stream(&real, BridgeError::Malformed(reason)));
                }
                Ok(Box::pin(futures_util::stream::iter([Ok(Bytes::from(
                    bytes,
                ))])))
            }
            Err(FetchError::NotFound) => {
                Err(TransportError::new(TransportErrorKind::FileNotFound, real))
            }
            // Failures other than "not found" are returned inside the stream:
            // tough treats a failed request for the next root as "no newer
            // root", which must not hide endless data or a broken mirror.
            Err(FetchError::TooLarge) => {
                Ok(failed_stream(&real, BridgeError::TooLarge { limit: cap }))
            }
            Err(FetchError::Other(reason)) => Ok(failed_stream(&real, BridgeError::Other(reason))),
        }
    }
}

/// Runs a tough future to completion on a current-thread runtime of its
/// own, in a scoped thread: callers inside an async runtime can use this
/// blocking API too (a runtime may be neither entered nor dropped there).
fn block_on<F>(fut: F) -> std::io::Result<F::Output>
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    let run = || {
        let rt = tokio::runtime::Builder::new_current_thread().build()?;
        Ok(rt.block_on(fut))
    };
    std::thread::scope(|s| match s.spawn(run).join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

fn role_name(role: RoleType) -> &'static str {
    match role {
        RoleType::Root => "root",
        RoleType::Snapshot => "snapshot",
        RoleType::Targets => "targets",
        RoleType::Timestamp => "timestamp",
        RoleType::DelegatedTargets => "delegated targets",
    }
}

/// A metadata file as tough parses it (`role` a top-level role name, or
/// anything else for a targets role), as JSON: tough keeps a
/// re-serialization of what it parsed, so two files are the same document
/// for tough when these are equal (map order aside).
fn tough_document(role: &str, bytes: &[u8]) -> Option<Value> {
    tough_meta(role, bytes).map(|(doc, _, _)| doc)
}

/// [`tough_document`] with the version and expiry tough read.
fn tough_meta(role: &str, bytes: &[u8]) -> Option<(Value, u64, UnixTime)> {
    fn parsed<T: serde::de::DeserializeOwned + serde::Serialize>(
        bytes: &[u8],
        meta: impl Fn(&T) -> (u64, i64),
    ) -> Option<(Value, u64, UnixTime)> {
        let signed = serde_json::from_slice::<Signed<T>>(bytes).ok()?;
        let (version, expires) = meta(&signed.signed);
        Some((
            serde_json::to_value(&signed).ok()?,
            version,
            UnixTime(expires),
        ))
    }
    use tough::schema::{Root as R, Snapshot as S, Timestamp as T};
    match role {
        "root" => parsed::<R>(bytes, |r| (r.version.get(), r.expires.as_second())),
        "timestamp" => parsed::<T>(bytes, |t| (t.version.get(), t.expires.as_second())),
        "snapshot" => parsed::<S>(bytes, |s| (s.version.get(), s.expires.as_second())),
        _ => parsed::<ToughTargets>(bytes, |t| (t.version.get(), t.expires.as_second())),
    }
}

/// Why a metadata response that tough would parse is still refused: an
/// `expires` not in the specification's form. tough parses it leniently
/// (`+00:00`, other offsets) and checks signatures over its own
/// re-serialization, which writes `Z`, so a signed file with its expiry
/// respelled would verify in tough; python-tuf refuses it.
fn nonconforming(bytes: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    let expires = v.get("signed")?.get("expires")?;
    match expires.as_str() {
        Some(e) if UnixTime::parse_rfc3339(e).is_some() => None,
        _ => Some(format!(
            "expires {expires} is not of the form YYYY-MM-DDTHH:MM:SSZ"
        )),
    }
}

/// `signed.version` and `signed.expires` of a metadata file.
fn version_and_expiry(bytes: &[u8], what: &str) -> Result<(u64, UnixTime)> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| Error::malformed(what, e))?;
    let signed = &v["signed"];
    let version = signed["version"]
        .as_u64()
        .ok_or_else(|| Error::malformed(what, "no version"))?;
    let expires = signed["expires"]
        .as_str()
        .and_then(UnixTime::parse_rfc3339)
        .ok_or_else(|| Error::malformed(what, "no valid expires"))?;
    Ok((version, expires))
}

/// A refreshed repository: tough's verified view and the bridge it talks
/// through.
struct Loaded {
    repo: tough::Repository,
    bridge: Bridge,
    /// tough's datastore; it holds the path for as long as the repository.
    _datastore: tempfile::TempDir,
    /// One target download at a time: the bridge has one target slot.
    fetching: Mutex<()>,
}

/// A TUF client bound to a metadata directory and a repository.
pub struct Updater<'a> {
    metadata_dir: PathBuf,
    metadata_url: String,
    transport: &'a dyn Transport,
    config: Config,
    now: UnixTime,
    root: Root,
    loaded: Option<Loaded>,
}

impl std::fmt::Debug for Updater<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Updater")
            .field("metadata_dir", &self.metadata_dir)
            .field("metadata_url", &self.metadata_url)
            .finish_non_exhaustive()
    }
}

/// The top-level roles after root, in workflow order.
const TOP_LEVEL: [&str; 3] = ["timestamp", "snapshot", "targets"];

impl<'a> Updater<'a> {
    /// Opens a client whose trusted root is `metadata_dir/root.json`.
    /// Expiry is checked against `clock.now()`, read once here.
    pub fn new(
        metadata_dir: impl Into<PathBuf>,
        metadata_url: &str,
        transport: &'a dyn Transport,
        clock: &dyn Clock,
        config: Config,
    ) -> Result<Self> {
        let metadata_dir = metadata_dir.into();
        let root = Self::read_root(&metadata_dir)?.1;
        Ok(Self {
            metadata_dir,
            metadata_url: metadata_url.trim_end_matches('/').to_owned(),
            transport,
            config,
            now: clock.now(),
            root,
            loaded: None,
        })
    }

    /// Writes the initial trusted root into `metadata_dir` (no network).
    pub fn init(metadata_dir: &Path, trusted_root: &[u8]) -> Result<()> {
        create_dir_durable(metadata_dir)?;
        write_atomic(&metadata_dir.join("root.json"), trusted_root)
    }

    /// The trusted root (after [`Self::refresh`], the newest).
    pub fn root(&self) -> &Root {
        &self.root
    }

    fn read_root(metadata_dir: &Path) -> Result<(Vec<u8>, Root)> {
        let path = metadata_dir.join("root.json");
        let bytes = std::fs::read(&path).map_err(Error::io("reading trusted root", &path))?;
        let env = Envelope::parse(&bytes, "trusted root")?;
        let root = Root::from_signed(&env.signed)?;
        Ok((bytes, root))
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

    fn local_path(&self, role: &str) -> PathBuf {
        self.metadata_dir.join(format!("{}.json", quote(role)))
    }

    /// Updates root, timestamp, snapshot, targets and the delegated roles
    /// (TUF 5.3–5.6) through tough, then checks expiry with the clock and
    /// persists what was accepted.
    pub fn refresh(&mut self) -> Result<()> {
        self.loaded = None;
        let (root_bytes, start_root) = Self::read_root(&self.metadata_dir)?;
        // tough's datastore, seeded with our trusted timestamp and snapshot
        // (its rollback checks read them; it fetches everything else anew).
        let datastore = tempfile::Builder::new()
            .prefix("confidant-tuf-")
            .tempdir()
            .map_err(Error::io("creating a datastore", std::env::temp_dir()))?;
        let mut trusted_timestamp = None;
        for role in ["timestamp", "snapshot"] {
            let local = self.local_path(role);
            if let Ok(bytes) = std::fs::read(&local) {
                let to = datastore.path().join(format!("{role}.json"));
                std::fs::write(&to, &bytes).map_err(Error::io("seeding the datastore", &to))?;
                if role == "timestamp" {
                    trusted_timestamp = Some(Arc::new(bytes));
                }
            }
        }
        let bridge = Bridge {
            inner: Arc::from(self.transport.clone_box()),
            metadata_url: self.metadata_url.clone(),
            config: self.config,
            state: Arc::default(),
            start_root: Arc::new(root_bytes.clone()),
            trusted_timestamp,
            metadata_dir: Arc::new(self.metadata_dir.clone()),
        };
        let bases = Url::parse(METADATA_BASE).and_then(|m| Ok((m, Url::parse(TARGETS_BASE)?)));
        let (metadata_base, targets_base) =
            bases.map_err(|e| Error::malformed("repository base URL", e))?;
        let limits = Limits {
            max_root_size: self.config.root_max_len,
            max_targets_size: self.config.targets_max_len,
            max_timestamp_size: self.config.timestamp_max_len,
            max_snapshot_size: self.config.snapshot_max_len,
            max_root_updates: self.config.max_root_rotations,
        };
        let loader = RepositoryLoader::new(&root_bytes, metadata_base, targets_base)
            .transport(bridge.clone())
            .limits(limits)
            .datastore(datastore.path())
            .expiration_enforcement(ExpirationEnforcement::Unsafe);
        let result = block_on(loader.load()).map_err(Error::io(
            "starting the TUF client runtime",
            &self.metadata_dir,
        ))?;

        // A delegated role whose file we could not tell from a top-level
        // role's would overwrite our trusted root, timestamp or snapshot:
        // refused before anything is kept (python-tuf refuses top-level
        // names for delegated roles too).
        if let Ok(repo) = &result {
            let mut roles = Vec::new();
            all_delegated(&repo.targets().signed, &mut roles, 0);
            let consistent = repo.root().signed.consistent_snapshot;
            if let Some((name, _)) = roles
                .iter()
                .find(|(name, _)| reserved_role_name(name, consistent))
            {
                return Err(Error::Malformed {
                    what: "delegations".into(),
                    reason: format!(
                        "delegated role name {name:?} is a top-level role's name \
                         or reads as a versioned one's file"
                    ),
                });
            }
        }

        // Whatever tough accepted before it stopped is kept, as python-tuf
        // keeps each metadata file as soon as it is verified: first the root
        // chain, then the top-level roles in order, each only if unexpired.
        let accepted =
            self.persist_accepted(&bridge, datastore.path(), &start_root, result.is_ok());
        match result {
            Ok(repo) => {
                accepted?;
                // tough verified every delegated role: the unexpired ones
                // are kept, so the next refresh has trusted copies of them.
                let mut roles = Vec::new();
                all_delegated(&repo.targets().signed, &mut roles, 0);
                roles.retain(|(_, signed)| self.now < UnixTime(signed.signed.expires.as_second()));
                self.persist_delegated(&bridge, &roles)?;
                self.loaded = Some(Loaded {
                    repo,
                    bridge,
                    _datastore: datastore,
                    fetching: Mutex::new(()),
                });
                Ok(())
            }
            Err(e) => {
                // A freeze found among what was accepted comes first: the
                // workflow stops there before the step that failed.
                accepted?;
                Err(self.classify(&e, &bridge, &start_root, None))
            }
        }
    }

    /// Persists the root and the top-level roles tough accepted in this
    /// load (the bytes it verified), checking each one's expiry first.
    fn persist_accepted(
        &mut self,
        bridge: &Bridge,
        datastore: &Path,
        start: &Root,
        loaded: bool,
    ) -> Result<()> {
        let requests = bridge.state().requests.clone();
        // The final root's expiry counts once the chain is done (TUF 5.3.10):
        // a failure inside the chain is reported as such.
        let past_root = loaded || requests.iter().any(|(f, _)| f == "timestamp.json");
        // What tough kept for a role (its datastore copy, as tough parses
        // it: document, version, expiry), and the response that is that
        // very document, if any. Responses tough refused are in the record
        // too, and may claim the kept version; they never match. Version
        // and expiry come from tough's parse: they are what it verified.
        let kept = |role: &str| -> Option<(Value, u64, UnixTime, Option<Vec<u8>>)> {
            let bytes = std::fs::read(datastore.join(format!("{role}.json"))).ok()?;
            let (doc, version, expires) = tough_meta(role, &bytes)?;
            let response = requests.iter().rev().find_map(|(file, b)| {
                let b = b.as_ref()?;
                let (file_version, r) = parse_file_name(file);
                let same = r == role
                    && file_version.is_none_or(|fv| fv == version)
                    && tough_meta(role, b).is_some_and(|(d, _, _)| d == doc);
                same.then(|| b.clone())
            });
            Some((doc, version, expires, response))
        };
        let unmatched = |role: &str| Error::Malformed {
            what: format!("{role}.json"),
            reason: "the document tough accepted is none of the responses it was given; \
                     nothing from this refresh was kept"
                .into(),
        };
        // Root chain: tough rewrites root.json after every root it accepts.
        if let Some((_, version, expires, response)) = kept("root")
            && version > start.common.version
        {
            let bytes = response.ok_or_else(|| unmatched("root"))?;
            write_atomic(&self.metadata_dir.join("root.json"), &bytes)?;
            self.root = Self::read_root(&self.metadata_dir)?.1;
            if past_root {
                self.check_expiry("root", expires)?;
            }
        } else if past_root {
            self.check_expiry("root", self.root.common.expires)?;
        }
        for role in TOP_LEVEL {
            // Not in the datastore: tough never reached it, or dropped it
            // because the timestamp or snapshot keys rotated (TUF 5.3.11).
            // Our copy is then left as python-tuf leaves it: it no longer
            // verifies under the new keys, so the next refresh ignores it
            // for rollback checks (a fast-forward is recovered from); if it
            // still verifies, its keys were not revoked and it stays valid
            // evidence.
            let Some((doc, _, expires, response)) = kept(role) else {
                return Ok(());
            };
            let local = self.local_path(role);
            let local_bytes = std::fs::read(&local).ok();
            let Some(bytes) = response else {
                // Our seeded copy, not accepted again: the load stopped
                // before this role (its own error says why).
                let seeded = local_bytes
                    .as_deref()
                    .and_then(|b| tough_meta(role, b))
                    .is_some_and(|(d, _, _)| d == doc);
                return if seeded { Ok(()) } else { Err(unmatched(role)) };
            };
            self.check_expiry(role, expires)?;
            if local_bytes.as_ref() != Some(&bytes) {
                write_atomic(&local, &bytes)?;
            }
        }
        // Delegated roles are kept later, for the roles a target search
        // relies on.
        Ok(())
    }

    /// Maps tough's error to the attack it refused. `target` names the
    /// target being downloaded, if any.
    fn classify(
        &self,
        err: &ToughError,
        bridge: &Bridge,
        start: &Root,
        target: Option<&str>,
    ) -> Error {
        let state = bridge.state();
        // The file tough was working on: its last metadata request.
        let last = state.requests.last();
        let file = target
            .map(str::to_owned)
            .or_else(|| last.map(|(f, _)| f.clone()))
            .unwrap_or_else(|| "metadata".into());
        let (file_version, file_role) = match target {
            Some(t) => (None, t.to_owned()),
            None => last.map_or((None, "metadata".into()), |(f, _)| parse_file_name(f)),
        };
        let what = if target.is_some() || file_role == "root" {
            file.clone()
        } else {
            format!("{file_role}.json")
        };
        let mut chain: Vec<&(dyn StdError + 'static)> = Vec::new();
        let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
        while let Some(e) = cur {
            chain.push(e);
            cur = e.source();
        }
        // The innermost error that names an attack decides.
        for e in chain.iter().rev() {
            if let Some(BridgeError::TooLarge { limit }) = e.downcast_ref::<BridgeError>() {
                return Error::EndlessData {
                    what,
                    limit: *limit,
                };
            }
            if let Some(BridgeError::Malformed(reason)) = e.downcast_ref::<BridgeError>() {
                return Error::Malformed {
                    what,
                    reason: reason.clone(),
                };
            }
            if let Some(tough::schema::Error::SignatureThreshold {
                threshold, valid, ..
            }) = e.downcast_ref::<tough::schema::Error>()
            {
                if file_role == "root" {
                    return Error::BadRootChain {
                        version: file_version.unwrap_or(0),
                        reason: chain_message(err),
                    };
                }
                if let Some(ff) = fast_forward(&self.root, start, &file_role, last) {
                    return ff;
                }
                return Error::Threshold {
                    role: file_role,
                    valid: usize::try_from(*valid).unwrap_or(usize::MAX),
                    threshold: *threshold,
                };
            }
            let Some(t) = e.downcast_ref::<ToughError>() else {
                continue;
            };
            let mapped = match t {
                ToughError::MaxSizeExceeded { max_size, .. } => Error::EndlessData {
                    what: what.clone(),
                    limit: *max_size,
                },
                ToughError::HashMismatch {
                    calculated,
                    expected,
                    ..
                } => Error::HashMismatch {
                    what: what.clone(),
                    detail: format!("sha256 {calculated}, signed {expected}"),
                },
                ToughError::OlderMetadata {
                    role: RoleType::Root,
                    ..
                }
                | ToughError::MaxUpdatesExceeded { .. } => Error::BadRootChain {
                    version: file_version.unwrap_or(0),
                    reason: chain_message(err),
                },
                ToughError::VerifyMetadata {
                    role: RoleType::Root,
                    ..
                }
                | ToughError::ParseMetadata {
                    role: RoleType::Root,
                    ..
                } if file_role == "root" => Error::BadRootChain {
                    version: file_version.unwrap_or(0),
                    reason: chain_message(err),
                },
                ToughError::OlderMetadata {
                    role,
                    current_version,
                    new_version,
                    ..
                } => Error::Rollback {
                    role: role_name(*role).into(),
                    trusted: *current_version,
                    offered: *new_version,
                },
                ToughError::OlderSnapshotInTimestamp {
                    snapshot_new,
                    snapshot_old,
                    ..
                } => Error::Rollback {
                    role: "snapshot".into(),
                    trusted: *snapshot_old,
                    offered: *snapshot_new,
                },
                ToughError::SnapshotRoleRollback {
                    role,
                    old_role_version,
                    new_role_version,
                    ..
                } => Error::Rollback {
                    role: role.trim_end_matches(".json").into(),
                    trusted: *old_role_version,
                    offered: *new_role_version,
                },
                ToughError::SnapshotRoleMissing {
                    role, old_version, ..
                } => Error::Rollback {
                    role: role.trim_end_matches(".json").into(),
                    trusted: *old_version,
                    offered: 0,
                },
                ToughError::VersionMismatch {
                    role,
                    fetched,
                    expected,
                    ..
                } => Error::MixAndMatch {
                    role: if *role == RoleType::Snapshot {
                        "snapshot".into()
                    } else {
                        file_role.clone()
                    },
                    by: if *role == RoleType::Snapshot {
                        "timestamp".into()
                    } else {
                        "snapshot".into()
                    },
                    expected: *expected,
                    got: *fetched,
                },
                ToughError::ParseMetadata { .. }
                | ToughError::ParseTrustedMetadata { .. }
                | ToughError::VerifyTrustedMetadata { .. }
                | ToughError::VerifyMetadata { .. }
                | ToughError::VerifyRoleMetadata { .. }
                | ToughError::TimestampMetaLength { .. }
                | ToughError::MissingSnapshotMeta { .. }
                | ToughError::SnapshotTargetsMetaMissing { .. }
                | ToughError::MetaMissing { .. }
                | ToughError::SpecVersion { .. }
                | ToughError::InvalidPath { .. } => Error::Malformed {
                    what: what.clone(),
                    reason: chain_message(err),
                },
                ToughError::Transport { url, .. } => Error::Transport {
                    url: url.to_string(),
                    reason: chain_message(err),
                },
                _ => continue,
            };
            return mapped;
        }
        Error::Transport {
            url: file,
            reason: chain_message(err),
        }
    }

    /// Writes the bytes tough verified for these delegated roles (each
    /// under `<quoted name>.json`), unless our copy is already those bytes.
    fn persist_delegated(
        &self,
        bridge: &Bridge,
        roles: &[(String, &Signed<ToughTargets>)],
    ) -> Result<()> {
        let requests = bridge.state().requests.clone();
        for (role, signed) in roles {
            let version = signed.signed.version.get();
            // As for the top-level roles: only the response that is the
            // document tough verified.
            let Ok(kept) = serde_json::to_value(signed) else {
                continue;
            };
            let bytes = requests.iter().rev().find_map(|(file, bytes)| {
                let (v, r) = parse_file_name(file);
                let b = bytes.as_ref()?;
                let matches = &r == role
                    && v.is_none_or(|v| v == version)
                    && tough_document("delegated", b).as_ref() == Some(&kept);
                matches.then_some(b)
            });
            let local = self.local_path(role);
            if let Some(bytes) = bytes
                && std::fs::read(&local).ok().as_ref() != Some(bytes)
            {
                write_atomic(&local, bytes)?;
            }
        }
        Ok(())
    }

    /// Finds `target` in the verified metadata (tough's pre-order search of
    /// the delegation graph, TUF 5.6.7), refreshing first if needed. The
    /// roles that vouch for it (the delegation chain from `targets` to the
    /// role listing it) must be unexpired; they are persisted.
    pub fn target_info(&mut self, target: &str) -> Result<TargetFile> {
        if self.loaded.is_none() {
            self.refresh()?;
        }
        let loaded = self
            .loaded
            .as_ref()
            .ok_or_else(|| Error::Slots("refresh left no repository (client bug)".into()))?;
        let name = TargetName::new(target)
            .map_err(|e| Error::malformed(format!("target name {target:?}"), e))?;
        let top = &loaded.repo.targets().signed;
        let found = top.find_target(&name, false).map_err(|_| {
            // When the snapshot leaves out a role of a delegation list,
            // tough 0.24 loads none of that list; say so, as the target
            // may be behind it.
            let mut unloaded = Vec::new();
            unloaded_roles(top, &mut unloaded, 0);
            unloaded.truncate(16);
            if unloaded.is_empty() {
                Error::TargetNotFound(target.to_owned())
            } else {
                Error::TargetNotFound(format!(
                    "{target} (delegated roles not loaded: {unloaded:?}; tough loads no role \
                     of a delegation list when the snapshot leaves one of them out)"
                ))
            }
        })?;
        let mut links = Vec::new();
        if !role_chain(top, found, &mut links) {
            return Err(Error::Slots(format!(
                "{target}: found by tough but not in its role tree (client bug)"
            )));
        }
        // tough's glob lets `*` match `/`; the specification's does not.
        // A role is trusted for a target only when both say so.
        for link in &links {
            if let PathSet::Paths(patterns) = &link.paths
                && !patterns
                    .iter()
                    .any(|p| crate::pathmatch::matches(p.value(), target))
            {
                return Err(Error::TargetNotFound(format!(
                    "{target} (role {:?} lists it, but its delegated paths {:?} do not cover it \
                     as the TUF specification matches them: `*` does not match `/`)",
                    link.name,
                    patterns.iter().map(|p| p.value()).collect::<Vec<_>>()
                )));
            }
        }
        let chain: Vec<(String, &Signed<ToughTargets>)> = links
            .iter()
            .filter_map(|l| Some((l.name.clone(), l.targets.as_ref()?)))
            .collect();
        for (role, signed) in &chain {
            let expires = UnixTime(signed.signed.expires.as_second());
            self.check_expiry(role, expires)?;
        }
        self.check_visited_expiry(top, &name, found)?;
        self.persist_delegated(&loaded.bridge, &chain)?;
        Ok(target_file(found))
    }

    /// python-tuf's target search (TUF 5.6.7) refuses an expired role as
    /// soon as it visits it, also one that does not list the target. tough
    /// loaded every role without a clock, so the search is walked again
    /// here on the loaded roles, in the same order (pre-order, children in
    /// delegation order, whose paths match by the specification; a
    /// matching terminating role ends the search below its parent), up to
    /// the role that lists `target`, and every role visited must be
    /// unexpired.
    fn check_visited_expiry(
        &self,
        top: &ToughTargets,
        target: &TargetName,
        found: &Target,
    ) -> Result<()> {
        let mut loaded = Vec::new();
        all_delegated(top, &mut loaded, 0);
        let mut by_name: BTreeMap<&str, &Signed<ToughTargets>> = BTreeMap::new();
        for (name, signed) in &loaded {
            by_name.entry(name.as_str()).or_insert(signed);
        }
        let mut to_visit: Vec<&str> = vec!["targets"];
        let mut visited = std::collections::BTreeSet::new();
        // python-tuf's bound on visited roles.
        while let Some(name) = to_visit.pop()
            && visited.len() <= 32
        {
            if !visited.insert(name) {
                continue;
            }
            let role = if name == "targets" {
                top
            } else {
                let Some(signed) = by_name.get(name) else {
                    // python-tuf cannot load it either, and stops there.
                    return Err(Error::TargetNotFound(format!(
                        "{} (delegated role {name:?}, on the search path, was not loaded: \
                         the snapshot leaves it or a sibling out)",
                        target.raw()
                    )));
                };
                self.check_expiry(name, UnixTime(signed.signed.expires.as_second()))?;
                &signed.signed
            };
            if let Some(entry) = role.targets.get(target) {
                // The entry python-tuf would take must be the one tough
                // returned (a role loaded under another parent can make
                // tough skip a role python-tuf visits).
                return if std::ptr::eq(entry, found) {
                    Ok(())
                } else {
                    Err(Error::TargetNotFound(format!(
                        "{} (tough and the specification's search order disagree on which \
                         role's entry counts, first {name:?}; refused)",
                        target.raw()
                    )))
                };
            }
            let mut children = Vec::new();
            for d in role.delegations.iter().flat_map(|d| &d.roles) {
                if !delegates(d, target) {
                    continue;
                }
                children.push(d.name.as_str());
                if d.terminating {
                    to_visit.clear();
                    break;
                }
            }
            to_visit.extend(children.into_iter().rev());
        }
        Ok(())
    }

    /// The URL of a target under `target_base_url` (TUF 5.7.3: hash-prefixed
    /// under consistent snapshots).
    pub fn target_url(&self, target_base_url: &str, target: &str, info: &TargetFile) -> String {
        let mut path = target.to_owned();
        if self.root.consistent_snapshot && self.config.prefix_targets_with_hash {
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

    /// Downloads a target through tough, which reads at most its signed
    /// length and checks its SHA-256 (TUF 5.7.3); the length and every other
    /// signed hash are checked again here. Nothing unverified is returned.
    pub fn fetch_target(
        &self,
        target_base_url: &str,
        target: &str,
        info: &TargetFile,
    ) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.fetch_target_into(target_base_url, target, info, &mut out)?;
        Ok(out)
    }

    /// [`Self::fetch_target`] piece by piece into `out`, for targets larger
    /// than memory: tough bounds and hashes the stream, and the length and
    /// every signed hash are checked here as it is written. What was
    /// written to `out` must not be used unless this returns `Ok`.
    pub fn fetch_target_into(
        &self,
        target_base_url: &str,
        target: &str,
        info: &TargetFile,
        out: &mut dyn std::io::Write,
    ) -> Result<()> {
        use futures_util::StreamExt;
        let loaded = self
            .loaded
            .as_ref()
            .ok_or_else(|| Error::Slots("fetch_target before target_info (client bug)".into()))?;
        let url = self.target_url(target_base_url, target, info);
        let name = TargetName::new(target)
            .map_err(|e| Error::malformed(format!("target name {target:?}"), e))?;
        let start = self.root.clone();
        let mismatch = |detail: String| Error::HashMismatch {
            what: target.to_owned(),
            detail,
        };
        let mut hashers = Vec::new();
        for (alg, expected) in &info.hashes {
            let algorithm = digest_algorithm(alg)
                .ok_or_else(|| mismatch(format!("unsupported hash algorithm {alg:?}")))?;
            hashers.push((alg, expected, aws_lc_rs::digest::Context::new(algorithm)));
        }
        let _one_at_a_time = loaded.fetching.lock().unwrap_or_else(|p| p.into_inner());
        loaded.bridge.state().target = Some((url.clone(), info.length));
        // tough's stream runs on its own runtime in a scoped thread (see
        // `block_on`); its pieces come here, a few at a time, to be written.
        let mut written = 0u64;
        let mut failed: Option<Error> = None;
        let result = std::thread::scope(|s| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Bytes>(4);
            let producer = s.spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().build()?;
                Ok::<_, std::io::Error>(rt.block_on(async {
                    let Some(stream) = loaded.repo.read_target(&name).await? else {
                        return Ok(false);
                    };
                    let mut stream = std::pin::pin!(stream);
                    while let Some(piece) = stream.next().await {
                        if tx.send(piece?).is_err() {
                            // The writer gave up; its error is reported.
                            break;
                        }
                    }
                    Ok::<_, ToughError>(true)
                }))
            });
            for piece in rx.iter() {
                written = written.saturating_add(piece.len() as u64);
                if written > info.length {
                    failed = Some(mismatch(format!(
                        "longer than the signed length {}",
                        info.length
                    )));
                    break;
                }
                for (_, _, h) in &mut hashers {
                    h.update(&piece);
                }
                if let Err(e) = out.write_all(&piece) {
                    failed = Some(Error::io("writing target", target)(e));
                    break;
                }
            }
            drop(rx);
            match producer.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        });
        loaded.bridge.state().target = None;
        if let Some(e) = failed {
            return Err(e);
        }
        let result = result.map_err(Error::io(
            "starting the TUF client runtime",
            &self.metadata_dir,
        ))?;
        match result {
            Ok(true) => {}
            Ok(false) => return Err(Error::TargetNotFound(target.to_owned())),
            Err(e) => {
                if let Some(not_found) = find_not_found(&e) {
                    return Err(Error::Transport {
                        url,
                        reason: not_found,
                    });
                }
                return Err(self.classify(&e, &loaded.bridge, &start, Some(target)));
            }
        }
        if written != info.length {
            return Err(mismatch(format!(
                "length {written} differs from the signed length {}",
                info.length
            )));
        }
        for (alg, expected, h) in hashers {
            let got = hex::encode(h.finish());
            if !got.eq_ignore_ascii_case(expected) {
                return Err(mismatch(format!(
                    "{alg} is {got}, signed metadata says {expected}"
                )));
            }
        }
        Ok(())
    }
}

/// "not found" if tough's error is a request that found nothing.
fn find_not_found(err: &ToughError) -> Option<String> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<TransportError>()
            && t.kind() == TransportErrorKind::FileNotFound
        {
            return Some("not found".into());
        }
        cur = e.source();
    }
    None
}

/// The whole error chain on one line.
fn chain_message(err: &dyn StdError) -> String {
    let mut msg = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !msg.contains(&s) {
            msg.push_str(": ");
            msg.push_str(&s);
        }
        cur = e.source();
    }
    msg
}

/// A timestamp/snapshot/targets file that failed verification after a root
/// rotation in this refresh, and that a threshold of the keys the rotation
/// revoked did sign: a fast-forward attack (TUF 5.3.11), not a plain
/// threshold miss.
fn fast_forward(
    root: &Root,
    start: &Root,
    role: &str,
    last: Option<&(String, Option<Vec<u8>>)>,
) -> Option<Error> {
    if !["timestamp", "snapshot", "targets"].contains(&role)
        || start.common.version == root.common.version
    {
        return None;
    }
    let env = Envelope::parse(last?.1.as_ref()?, role).ok()?;
    let old = start.role(role);
    let revoked_role = RoleKeys {
        keyids: old
            .keyids
            .iter()
            .filter(|id| !root.role(role).keyids.contains(id))
            .cloned()
            .collect(),
        threshold: old.threshold,
    };
    let revoked = env.count_valid(&revoked_role, &start.keys);
    (revoked as u64 >= old.threshold).then(|| Error::FastForward {
        role: role.to_owned(),
        revoked,
        valid: env.count_valid(root.role(role), &root.keys),
        threshold: root.role(role).threshold,
    })
}

/// Every delegated role tough loaded under `t`, in pre-order.
fn all_delegated<'t>(
    t: &'t ToughTargets,
    out: &mut Vec<(String, &'t Signed<ToughTargets>)>,
    depth: usize,
) {
    // tough loads each role once, so the tree is finite; the depth bound is
    // belt and braces.
    if depth > 64 {
        return;
    }
    for role in t.delegations.iter().flat_map(|d| &d.roles) {
        if let Some(signed) = &role.targets {
            out.push((role.name.clone(), signed));
            all_delegated(&signed.signed, out, depth + 1);
        }
    }
}

/// Whether a delegation covers `target`: path patterns by the
/// specification's matching, hash prefixes as tough computes them.
fn delegates(role: &DelegatedRole, target: &TargetName) -> bool {
    match &role.paths {
        PathSet::Paths(patterns) => patterns
            .iter()
            .any(|p| crate::pathmatch::matches(p.value(), target.raw())),
        PathSet::PathHashPrefixes(_) => {
            let one = tough::schema::Delegations {
                keys: std::collections::HashMap::new(),
                roles: vec![DelegatedRole {
                    name: role.name.clone(),
                    keyids: role.keyids.clone(),
                    threshold: role.threshold,
                    paths: role.paths.clone(),
                    terminating: role.terminating,
                    targets: None,
                }],
            };
            one.target_is_delegated(target)
        }
    }
}

/// Delegated roles named under `t` that tough did not load.
fn unloaded_roles(t: &ToughTargets, out: &mut Vec<String>, depth: usize) {
    if depth > 64 {
        return;
    }
    for role in t.delegations.iter().flat_map(|d| &d.roles) {
        match &role.targets {
            Some(signed) => unloaded_roles(&signed.signed, out, depth + 1),
            None => out.push(role.name.clone()),
        }
    }
}

/// The delegation chain (each link's delegation entry, with its loaded
/// metadata) from `top` to the role whose `targets` holds `found` (the very
/// entry tough's search returned).
fn role_chain<'t>(
    top: &'t ToughTargets,
    found: &Target,
    chain: &mut Vec<&'t DelegatedRole>,
) -> bool {
    fn walk<'t>(
        t: &'t ToughTargets,
        found: &Target,
        chain: &mut Vec<&'t DelegatedRole>,
        depth: usize,
    ) -> bool {
        if t.targets.values().any(|v| std::ptr::eq(v, found)) {
            return true;
        }
        // tough loads each role once, so the tree is finite; the depth
        // bound is belt and braces.
        if depth > 64 {
            return false;
        }
        let Some(d) = &t.delegations else {
            return false;
        };
        for role in &d.roles {
            if let Some(signed) = &role.targets {
                chain.push(role);
                if walk(&signed.signed, found, chain, depth + 1) {
                    return true;
                }
                chain.pop();
            }
        }
        false
    }
    walk(top, found, chain, 0)
}

/// Our view of a tough target entry.
fn target_file(t: &Target) -> TargetFile {
    let mut hashes: std::collections::BTreeMap<String, String> = t
        .hashes
        ._extra
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_ascii_lowercase())))
        .collect();
    hashes.insert("sha256".into(), hex::encode(&t.hashes.sha256));
    let custom = (!t.custom.is_empty()).then(|| {
        Value::Object(
            t.custom
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    });
    TargetFile {
        length: t.length,
        hashes,
        custom,
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_file_name, quote, reserved_role_name};

    #[test]
    fn quoting_matches_python_quote_with_no_safe_chars() {
        assert_eq!(quote("?"), "%3F");
        assert_eq!(quote("../delegatedrole"), "..%2Fdelegatedrole");
        assert_eq!(quote("a b/#"), "a%20b%2F%23");
        assert_eq!(quote("role-1_x.y~"), "role-1_x.y~");
    }

    #[test]
    fn requested_file_names_give_role_and_version() {
        assert_eq!(
            parse_file_name("timestamp.json"),
            (None, "timestamp".into())
        );
        assert_eq!(
            parse_file_name("7.snapshot.json"),
            (Some(7), "snapshot".into())
        );
        assert_eq!(parse_file_name("3.%3F.json"), (Some(3), "?".into()));
        assert_eq!(
            parse_file_name("..%2Fdelegatedrole.json"),
            (None, "../delegatedrole".into())
        );
        assert_eq!(parse_file_name("12.root.json"), (Some(12), "root".into()));
    }

    #[test]
    fn delegated_roles_cannot_take_top_level_or_versioned_file_names() {
        for consistent in [true, false] {
            for name in [
                "root",
                "timestamp",
                "snapshot",
                "targets",
                "Root",
                "SNAPSHOT",
            ] {
                assert!(reserved_role_name(name, consistent), "{name}");
            }
            for name in [
                "server",
                "models",
                "?",
                "../delegatedrole",
                "a.b",
                "v1.2",
                "%41",
            ] {
                assert!(!reserved_role_name(name, consistent), "{name}");
            }
        }
        for name in ["7.snapshot", "12.server", "1.0"] {
            assert!(reserved_role_name(name, false), "{name}");
            assert!(!reserved_role_name(name, true), "{name}");
        }
    }
}
