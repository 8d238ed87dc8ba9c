//! A/B installation: two slots under `<root>/slots/{a,b}` and a `current`
//! symlink switched atomically with `rename`, every step fsync'd.
//!
//! A new version is staged into the slot `current` does not point to,
//! health-checked there, recorded as on *trial*, and only then switched to.
//! It stays on trial until `mark-good`; if it is not marked good within a
//! deadline or a number of starts, the next start switches back. Killed at
//! any point, the root still has a bootable good slot: before the rename,
//! `current` still names the old slot; after it, the trial record names the
//! old slot to fall back to.
//!
//! ```text
//! <root>/current -> slots/a        the running version
//! <root>/slots/a/{slot.json, <artifact>}
//! <root>/slots/b/…                 the next version / previous version
//! <root>/staging/.<artifact>.partial   a download in progress
//! <root>/state.json                {"trial": {...}} while a version is on trial
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::UnixTime;
use crate::counter::{ArtifactKind, CounterStore};
use crate::error::{Error, Result};
use crate::fsutil::{fsync_dir, write_atomic};

/// What a slot holds (its `slot.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotMeta {
    /// TUF target path it came from.
    pub target: String,
    /// Artifact kind.
    pub kind: String,
    /// Human-readable version (from the target's `custom`).
    pub version: String,
    /// Anti-rollback counter (from the target's `custom`).
    pub security_counter: u64,
    /// SHA-256 of the artifact.
    pub sha256: String,
    /// Length of the artifact.
    pub length: u64,
    /// File name of the artifact inside the slot.
    pub file: String,
}

/// `<root>/staging/`, emptied when made and removed when dropped.
struct Staging(PathBuf);

impl Staging {
    fn new(path: PathBuf) -> Result<Self> {
        crate::fsutil::remove_dir_if_present(&path)?;
        crate::fsutil::create_dir_durable(&path)?;
        Ok(Self(path))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Empties a slot directory: `slot.json` first (made durable), so a crash
/// part-way never leaves a slot that claims an artifact it lost.
fn clear_slot(dir: &Path) -> Result<()> {
    let record = dir.join("slot.json");
    match std::fs::remove_file(&record) {
        Ok(()) => fsync_dir(dir)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("removing", &record)(e)),
    }
    crate::fsutil::remove_dir_if_present(dir)?;
    std::fs::create_dir_all(dir).map_err(Error::io("creating", dir))
}

/// The staging file's writer: tells the hook [`InstallPoint::Downloading`]
/// once half of the artifact is written (the crash tests stop there).
struct Halfway<'a> {
    file: &'a mut std::fs::File,
    written: u64,
    half: u64,
    fired: bool,
    hook: &'a mut dyn FnMut(InstallPoint),
}

impl Write for Halfway<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !self.fired && self.written.saturating_add(buf.len() as u64) > self.half {
            let before = usize::try_from(self.half - self.written).unwrap_or(usize::MAX);
            if before > 0 {
                let n = self.file.write(&buf[..before.min(buf.len())])?;
                self.written += n as u64;
                return Ok(n);
            }
            self.file.flush()?;
            (self.hook)(InstallPoint::Downloading);
            self.fired = true;
        }
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// A version on trial after a switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trial {
    /// Slot on trial.
    pub slot: String,
    /// Slot to fall back to (None on a first install).
    pub previous: Option<String>,
    /// Starts seen so far.
    pub starts: u32,
    /// Starts allowed before falling back.
    pub max_starts: u32,
    /// Falls back at the first start after this instant (Unix seconds).
    pub deadline: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct State {
    trial: Option<Trial>,
    /// Last automatic or manual rollback, for `status`.
    last_rollback: Option<String>,
}

/// Where an install is; the hook sees each point (the crash test kills the
/// process at each one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallPoint {
    /// Part of the artifact is written into the staging slot.
    Downloading,
    /// Artifact and slot.json are written and durable.
    Staged,
    /// The trial record is durable; `current` not yet switched.
    TrialRecorded,
    /// The new link exists beside `current`; not yet renamed over it.
    Switching,
    /// `current` points to the new slot.
    Switched,
}

impl InstallPoint {
    /// Stable name (used by the crash-test helper).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Downloading => "download",
            Self::Staged => "staged",
            Self::TrialRecorded => "trial-recorded",
            Self::Switching => "switch",
            Self::Switched => "switched",
        }
    }
}

/// How a new artifact proves it works before it is switched to.
pub trait HealthCheck {
    /// Checks the staged artifact at `path`.
    fn check(&self, meta: &SlotMeta, path: &Path) -> Result<()>;
}

/// The default check: binaries must run `--version` successfully within a
/// timeout; models must carry the encrypted container magic (their digest
/// was already checked against signed metadata).
#[derive(Debug, Clone, Copy)]
pub struct DefaultHealthCheck {
    /// How long a binary may take to answer `--version`.
    pub timeout: Duration,
}

impl Default for DefaultHealthCheck {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
        }
    }
}

/// First bytes of a Confidant model container (the `keys` crate's format).
pub const MODEL_CONTAINER_MAGIC: [u8; 8] = *b"CMDL\r\n\x1a\n";

impl HealthCheck for DefaultHealthCheck {
    fn check(&self, meta: &SlotMeta, path: &Path) -> Result<()> {
        let fail = |reason: String| Error::HealthCheck {
            artifact: path.to_owned(),
            reason,
        };
        if meta.kind == ArtifactKind::Model.as_str() {
            let mut head = [0u8; 8];
            use std::io::Read;
            std::fs::File::open(path)
                .and_then(|mut f| f.read_exact(&mut head))
                .map_err(|e| fail(e.to_string()))?;
            if head != MODEL_CONTAINER_MAGIC {
                return Err(fail("not a Confidant model container".into()));
            }
            return Ok(());
        }
        let mut child = std::process::Command::new(path)
            .arg("--version")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| fail(format!("cannot run: {e}")))?;
        let start = std::time::Instant::now();
        loop {
            match child.try_wait().map_err(|e| fail(e.to_string()))? {
                Some(status) if status.success() => return Ok(()),
                Some(status) => return Err(fail(format!("--version exited with {status}"))),
                None if start.elapsed() > self.timeout => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(fail(format!(
                        "--version did not finish in {:?}",
                        self.timeout
                    )));
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

/// What `status` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// Slot `current` points to.
    pub current: Option<String>,
    /// What it holds.
    pub current_meta: Option<SlotMeta>,
    /// The slot known good: `current`, or the fallback while on trial.
    pub good: Option<String>,
    /// What the good slot holds.
    pub good_meta: Option<SlotMeta>,
    /// Trial in progress, if any.
    pub trial: Option<Trial>,
    /// Last rollback, if any.
    pub last_rollback: Option<String>,
}

/// What the start-up check decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartDecision {
    /// Nothing on trial.
    Good,
    /// Still on trial; this was start number `starts`.
    OnTrial { starts: u32 },
    /// Trial failed; switched back to `to`.
    RolledBack { to: String, reason: String },
}

/// A/B slots under a root directory.
#[derive(Debug, Clone)]
pub struct Slots {
    root: PathBuf,
}

fn other(slot: &str) -> &'static str {
    if slot == "a" { "b" } else { "a" }
}

impl Slots {
    /// Slots under `root` (created if missing).
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        for s in ["slots/a", "slots/b"] {
            crate::fsutil::create_dir_durable(&root.join(s))?;
        }
        Ok(Self { root })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Directory of a slot.
    pub fn slot_dir(&self, slot: &str) -> PathBuf {
        self.root.join("slots").join(slot)
    }

    /// The slot `current` points to.
    pub fn current(&self) -> Result<Option<String>> {
        let link = self.root.join("current");
        match std::fs::read_link(&link) {
            Ok(t) => {
                let name = t.file_name().map(|n| n.to_string_lossy().into_owned());
                match name.as_deref() {
                    Some("a") | Some("b") => Ok(name),
                    _ => Err(Error::Slots(format!("current points to {}", t.display()))),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("reading link", &link)(e)),
        }
    }

    /// What a slot holds, if it holds a complete install.
    pub fn meta(&self, slot: &str) -> Result<Option<SlotMeta>> {
        let p = self.slot_dir(slot).join("slot.json");
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| Error::malformed(p.display().to_string(), e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("reading", &p)(e)),
        }
    }

    fn state(&self) -> Result<State> {
        let p = self.root.join("state.json");
        match std::fs::read(&p) {
            Ok(b) => {
                serde_json::from_slice(&b).map_err(|e| Error::malformed(p.display().to_string(), e))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(Error::io("reading", &p)(e)),
        }
    }

    fn save_state(&self, s: &State) -> Result<()> {
        let b = serde_json::to_vec_pretty(s).map_err(|e| Error::Slots(e.to_string()))?;
        write_atomic(&self.root.join("state.json"), &b)
    }

    /// State with a stale trial dropped: a trial whose slot is not current
    /// was recorded by an install killed before its switch.
    fn reconciled(&self) -> Result<(Option<String>, State)> {
        let current = self.current()?;
        let mut state = self.state()?;
        if state
            .trial
            .as_ref()
            .is_some_and(|t| Some(&t.slot) != current.as_ref())
        {
            state.trial = None;
            self.save_state(&state)?;
        }
        Ok((current, state))
    }

    /// Current, good slot, trial.
    pub fn status(&self) -> Result<Status> {
        let current = self.current()?;
        let state = self.state()?;
        let trial = state
            .trial
            .clone()
            .filter(|t| Some(&t.slot) == current.as_ref());
        let good = match &trial {
            Some(t) => t.previous.clone(),
            None => current.clone(),
        };
        Ok(Status {
            current_meta: current
                .as_deref()
                .map(|s| self.meta(s))
                .transpose()?
                .flatten(),
            good_meta: good.as_deref().map(|s| self.meta(s)).transpose()?.flatten(),
            current,
            good,
            trial,
            last_rollback: state.last_rollback,
        })
    }

    /// Holds `<root>/lock` exclusively: one install, mark-good, rollback
    /// or start-up check at a time, across processes (a timer and the CLI).
    fn lock(&self) -> Result<std::fs::File> {
        let path = self.root.join("lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(Error::io("opening", &path))?;
        match f.try_lock() {
            Ok(()) => Ok(f),
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::Slots(
                "another update operation holds the lock; try again when it is done".into(),
            )),
            Err(std::fs::TryLockError::Error(e)) => Err(Error::io("locking", &path)(e)),
        }
    }

    fn switch(&self, slot: &str, hook: &mut dyn FnMut(InstallPoint)) -> Result<()> {
        let tmp = self.root.join("current.new");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(Path::new("slots").join(slot), &tmp)
            .map_err(Error::io("creating link", &tmp))?;
        hook(InstallPoint::Switching);
        std::fs::rename(&tmp, self.root.join("current"))
            .map_err(Error::io("switching", self.root.join("current")))?;
        fsync_dir(&self.root)
    }

    /// Stages `data` into the inactive slot, health-checks it, records a
    /// trial and switches to it. `hook` is told each [`InstallPoint`].
    #[allow(clippy::too_many_arguments)]
    pub fn install(
        &self,
        meta: &SlotMeta,
        data: &[u8],
        health: &dyn HealthCheck,
        trial_starts: u32,
        trial_window: Duration,
        now: UnixTime,
        hook: &mut dyn FnMut(InstallPoint),
    ) -> Result<()> {
        self.install_from(
            meta,
            &mut |w| {
                w.write_all(data)
                    .map_err(Error::io("writing the artifact", &meta.file))
            },
            health,
            trial_starts,
            trial_window,
            now,
            hook,
        )
    }

    /// [`Self::install`] with the artifact written by `fill` (a download
    /// streamed to disk, [`crate::updater::Updater::fetch_target_into`]).
    /// It is written to `<root>/staging/` first: the inactive slot is
    /// cleared only once `fill` succeeded, so a failed or refused download
    /// leaves both slots as they were.
    #[allow(clippy::too_many_arguments)]
    pub fn install_from(
        &self,
        meta: &SlotMeta,
        fill: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
        health: &dyn HealthCheck,
        trial_starts: u32,
        trial_window: Duration,
        now: UnixTime,
        hook: &mut dyn FnMut(InstallPoint),
    ) -> Result<()> {
        let _lock = self.lock()?;
        let (current, mut state) = self.reconciled()?;
        if state.trial.is_some() {
            return Err(Error::Slots(
                "a version is on trial: mark it good or roll back before installing another".into(),
            ));
        }
        if meta.file.is_empty()
            || meta.file.contains('/')
            || meta.file.starts_with('.')
            || meta.file == "slot.json"
        {
            return Err(Error::Slots(format!(
                "bad artifact file name {:?}",
                meta.file
            )));
        }
        let target = current.as_deref().map_or("a", other).to_owned();
        let dir = self.slot_dir(&target);
        // Leftovers of an interrupted download go first; whatever happens
        // below, staging is removed on the way out.
        let staging = Staging::new(self.root.join("staging"))?;
        let partial = staging.0.join(format!(".{}.partial", meta.file));
        let mut fired = false;
        let mut cleared = false;
        loop {
            let mut f = std::fs::File::create(&partial).map_err(Error::io("creating", &partial))?;
            let mut w = Halfway {
                file: &mut f,
                written: 0,
                half: meta.length / 2,
                fired,
                hook: &mut *hook,
            };
            let filled = fill(&mut w);
            fired = w.fired;
            match filled {
                Ok(()) => {}
                // The previous version in the inactive slot is kept while
                // the next one downloads; when the disk has no room for
                // three, it goes first (as it must in the end) and the
                // download starts again.
                Err(Error::Io { ref source, .. })
                    if source.kind() == std::io::ErrorKind::StorageFull && !cleared =>
                {
                    drop(f);
                    clear_slot(&dir)?;
                    cleared = true;
                    continue;
                }
                Err(e) => return Err(e),
            }
            if !fired {
                hook(InstallPoint::Downloading);
            }
            if meta.kind != ArtifactKind::Model.as_str() {
                use std::os::unix::fs::PermissionsExt;
                f.set_permissions(std::fs::Permissions::from_mode(0o755))
                    .map_err(Error::io("chmod", &partial))?;
            }
            f.sync_all().map_err(Error::io("fsync", &partial))?;
            break;
        }
        // The inactive slot is ours to overwrite: nothing runs from it.
        clear_slot(&dir)?;
        let artifact = dir.join(&meta.file);
        std::fs::rename(&partial, &artifact).map_err(Error::io("renaming", &artifact))?;
        let mb = serde_json::to_vec_pretty(meta).map_err(|e| Error::Slots(e.to_string()))?;
        write_atomic(&dir.join("slot.json"), &mb)?;
        fsync_dir(&self.root.join("slots"))?;
        hook(InstallPoint::Staged);

        health.check(meta, &artifact)?;

        state.trial = Some(Trial {
            slot: target.clone(),
            previous: current,
            starts: 0,
            max_starts: trial_starts.max(1),
            deadline: now
                .plus_secs(i64::try_from(trial_window.as_secs()).unwrap_or(i64::MAX))
                .0,
        });
        self.save_state(&state)?;
        hook(InstallPoint::TrialRecorded);
        self.switch(&target, hook)?;
        hook(InstallPoint::Switched);
        Ok(())
    }

    /// Start-up check (run before the service starts, e.g. systemd
    /// `ExecStartPre=confidant update boot`): counts a start of a version on
    /// trial and switches back when it used up its starts or its deadline.
    pub fn on_start(&self, now: UnixTime) -> Result<StartDecision> {
        let _lock = self.lock()?;
        let (_current, mut state) = self.reconciled()?;
        let Some(mut trial) = state.trial.clone() else {
            return Ok(StartDecision::Good);
        };
        trial.starts += 1;
        let reason = if trial.starts > trial.max_starts {
            Some(format!(
                "not marked good within {} starts",
                trial.max_starts
            ))
        } else if now.0 > trial.deadline {
            Some(format!("not marked good by {}", UnixTime(trial.deadline)))
        } else {
            None
        };
        match (reason, trial.previous.clone()) {
            (Some(reason), Some(prev)) => {
                self.rollback_to(&prev, &mut state, &reason)?;
                Ok(StartDecision::RolledBack { to: prev, reason })
            }
            (_, _) => {
                let starts = trial.starts;
                state.trial = Some(trial);
                self.save_state(&state)?;
                Ok(StartDecision::OnTrial { starts })
            }
        }
    }

    fn rollback_to(&self, slot: &str, state: &mut State, reason: &str) -> Result<()> {
        if self.meta(slot)?.is_none() {
            return Err(Error::Slots(format!(
                "slot {slot} holds no complete install"
            )));
        }
        // Switch first: killed between the two steps, the trial names a slot
        // that is no longer current and is dropped as stale.
        self.switch(slot, &mut |_| {})?;
        state.trial = None;
        state.last_rollback = Some(format!("to slot {slot}: {reason}"));
        self.save_state(state)
    }

    /// Accepts the version on trial and advances its security counter.
    pub fn mark_good(&self, counters: &mut dyn CounterStore) -> Result<SlotMeta> {
        let _lock = self.lock()?;
        let (current, mut state) = self.reconciled()?;
        let current = current.ok_or_else(|| Error::Slots("nothing installed".into()))?;
        let meta = self
            .meta(&current)?
            .ok_or_else(|| Error::Slots(format!("slot {current} holds no complete install")))?;
        if let Some(kind) = ArtifactKind::parse(&meta.kind) {
            counters.advance(kind, meta.security_counter)?;
        }
        if state.trial.take().is_some() {
            self.save_state(&state)?;
        }
        Ok(meta)
    }

    /// Switches back: to the fallback of a version on trial, or (manually)
    /// to the other slot if its security counter is not below the stored one.
    pub fn rollback(&self, counters: &mut dyn CounterStore) -> Result<String> {
        let _lock = self.lock()?;
        let (current, mut state) = self.reconciled()?;
        let current = current.ok_or_else(|| Error::Slots("nothing installed".into()))?;
        if let Some(t) = state.trial.clone() {
            let prev = t.previous.ok_or_else(|| {
                Error::Slots("first install on trial: nothing to roll back to".into())
            })?;
            self.rollback_to(&prev, &mut state, "rolled back by operator during trial")?;
            return Ok(prev);
        }
        let to = other(&current);
        let meta = self
            .meta(to)?
            .ok_or_else(|| Error::Slots(format!("slot {to} holds no complete install")))?;
        if let Some(kind) = ArtifactKind::parse(&meta.kind) {
            crate::counter::check(counters, kind, meta.security_counter)?;
        }
        self.rollback_to(to, &mut state, "rolled back by operator")?;
        Ok(to.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counter::FileCounters;

    struct Accept;

    impl HealthCheck for Accept {
        fn check(&self, _: &SlotMeta, _: &Path) -> Result<()> {
            Ok(())
        }
    }

    fn meta(version: &str, counter: u64) -> SlotMeta {
        SlotMeta {
            target: "models/m.cmdl".into(),
            kind: ArtifactKind::Model.as_str().into(),
            version: version.into(),
            security_counter: counter,
            sha256: String::new(),
            length: 4,
            file: "m.cmdl".into(),
        }
    }

    /// Installs version `version` (counter `n`) with `fill` writing it.
    fn install_with(
        slots: &Slots,
        version: &str,
        n: u64,
        fill: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
        hook: &mut dyn FnMut(InstallPoint),
    ) -> Result<()> {
        let trial = Duration::from_secs(60);
        slots.install_from(
            &meta(version, n),
            fill,
            &Accept,
            1,
            trial,
            UnixTime(0),
            hook,
        )
    }

    fn install_good(slots: &Slots, counters: &mut FileCounters, version: &str, n: u64) {
        let data = format!("v{version}!!");
        let write = &mut |w: &mut dyn Write| {
            w.write_all(data.as_bytes())
                .map_err(Error::io("writing", "m.cmdl"))
        };
        install_with(slots, version, n, write, &mut |_| {}).unwrap();
        slots.mark_good(counters).unwrap();
    }

    fn artifact(slots: &Slots, slot: &str) -> Option<Vec<u8>> {
        std::fs::read(slots.slot_dir(slot).join("m.cmdl")).ok()
    }

    #[test]
    fn a_full_disk_gives_up_the_previous_version_and_downloads_again() {
        let t = tempfile::tempdir().unwrap();
        let slots = Slots::open(t.path().join("root")).unwrap();
        let mut counters = FileCounters::new(t.path().join("counters")).unwrap();
        install_good(&slots, &mut counters, "1", 1);
        install_good(&slots, &mut counters, "2", 2);
        let current = slots.current().unwrap().unwrap();
        let inactive = other(&current);
        assert_eq!(artifact(&slots, inactive).unwrap(), b"v1!!");
        let mut calls = 0;
        let mut downloading = 0;
        let fill = &mut |w: &mut dyn Write| {
            calls += 1;
            if calls == 1 {
                w.write_all(b"v3").unwrap();
                return Err(Error::Io {
                    op: "writing",
                    path: "m.cmdl".into(),
                    source: std::io::ErrorKind::StorageFull.into(),
                });
            }
            w.write_all(b"v3!!").map_err(Error::io("writing", "m.cmdl"))
        };
        let hook = &mut |p| downloading += usize::from(p == InstallPoint::Downloading);
        install_with(&slots, "3", 3, fill, hook).unwrap();
        assert_eq!(calls, 2, "downloaded again after the slot was cleared");
        assert_eq!(downloading, 1, "the crash-test point is passed once");
        assert_eq!(slots.current().unwrap().as_deref(), Some(inactive));
        assert_eq!(artifact(&slots, inactive).unwrap(), b"v3!!");
        assert_eq!(artifact(&slots, &current).unwrap(), b"v2!!");
        assert!(!slots.root().join("staging").exists());
    }

    #[test]
    fn a_failed_download_changes_neither_slot() {
        let t = tempfile::tempdir().unwrap();
        let slots = Slots::open(t.path().join("root")).unwrap();
        let mut counters = FileCounters::new(t.path().join("counters")).unwrap();
        install_good(&slots, &mut counters, "1", 1);
        install_good(&slots, &mut counters, "2", 2);
        let before = (artifact(&slots, "a"), artifact(&slots, "b"));
        let fill = &mut |w: &mut dyn Write| {
            w.write_all(b"v3").unwrap();
            Err(Error::HashMismatch {
                what: "m.cmdl".into(),
                detail: "test".into(),
            })
        };
        let err = install_with(&slots, "3", 3, fill, &mut |_| {}).unwrap_err();
        assert!(matches!(err, Error::HashMismatch { .. }));
        assert_eq!((artifact(&slots, "a"), artifact(&slots, "b")), before);
        assert!(!slots.root().join("staging").exists());
    }

    #[test]
    fn one_update_operation_at_a_time() {
        let t = tempfile::tempdir().unwrap();
        let slots = Slots::open(t.path().join("root")).unwrap();
        let mut counters = FileCounters::new(t.path().join("counters")).unwrap();
        install_good(&slots, &mut counters, "1", 1);
        let held = slots.lock().unwrap();
        let err = slots.mark_good(&mut counters).unwrap_err();
        assert!(
            matches!(&err, Error::Slots(m) if m.contains("lock")),
            "{err}"
        );
        drop(held);
        slots.mark_good(&mut counters).unwrap();
    }
}
