//! The update pipeline: TUF refresh → find the target → anti-rollback
//! counter check → bounded, hash-checked download → A/B install on trial.
//!
//! A target's `custom` object carries what TUF itself does not:
//! `{"version": "1.4.0", "security_counter": 7}`. Its kind comes from its
//! path prefix (`server/`, `edge-agent/`, `models/`), which is also what the
//! repository's delegations are scoped to.

use std::time::Duration;

use crate::clock::Clock;
use crate::counter::{self, ArtifactKind, CounterStore};
use crate::error::{Error, Result};
use crate::metadata::TargetFile;
use crate::slots::{HealthCheck, InstallPoint, SlotMeta, Slots};
use crate::updater::Updater;

/// What a target says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// TUF target path.
    pub target: String,
    /// Kind, from the path prefix.
    pub kind: ArtifactKind,
    /// Version string (display only).
    pub version: String,
    /// Anti-rollback counter.
    pub security_counter: u64,
    /// Signed length and SHA-256.
    pub length: u64,
    /// Signed SHA-256 (hex).
    pub sha256: String,
}

impl Release {
    /// Reads kind, version and counter of a target.
    pub fn from_target(target: &str, info: &TargetFile) -> Result<Self> {
        let kind = ArtifactKind::from_target(target).ok_or_else(|| {
            Error::malformed(
                target,
                "target path must start with server/, edge-agent/ or models/",
            )
        })?;
        let custom = info.custom.as_ref().ok_or_else(|| {
            Error::malformed(target, "target has no custom {version, security_counter}")
        })?;
        let version = custom
            .get("version")
            .and_then(|v| v.as_str())
            .ok_or_else(|| Error::malformed(target, "custom.version missing"))?
            .to_owned();
        let security_counter = custom
            .get("security_counter")
            .and_then(|v| v.as_u64())
            .ok_or_else(|| Error::malformed(target, "custom.security_counter missing"))?;
        let sha256 = info
            .hashes
            .get("sha256")
            .ok_or_else(|| Error::malformed(target, "target has no sha256 hash"))?
            .to_ascii_lowercase();
        Ok(Self {
            target: target.to_owned(),
            kind,
            version,
            security_counter,
            length: info.length,
            sha256,
        })
    }

    fn slot_meta(&self) -> SlotMeta {
        let file = self
            .target
            .rsplit('/')
            .next()
            .unwrap_or("artifact")
            .to_owned();
        SlotMeta {
            target: self.target.clone(),
            kind: self.kind.to_string(),
            version: self.version.clone(),
            security_counter: self.security_counter,
            sha256: self.sha256.clone(),
            length: self.length,
            file,
        }
    }
}

/// Result of `check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// The current slot already holds this release.
    UpToDate(Release),
    /// A release that passes the counter check is available.
    Available {
        /// The release.
        release: Release,
        /// What runs now.
        installed: Option<SlotMeta>,
    },
}

/// Trial policy for a newly installed version.
#[derive(Debug, Clone, Copy)]
pub struct TrialPolicy {
    /// Starts allowed without `mark-good`.
    pub max_starts: u32,
    /// Time allowed without `mark-good`.
    pub window: Duration,
}

impl Default for TrialPolicy {
    fn default() -> Self {
        Self {
            max_starts: 3,
            window: Duration::from_secs(15 * 60),
        }
    }
}

/// Refreshes metadata and says whether `target` offers an installable update.
pub fn check(
    updater: &mut Updater<'_>,
    slots: &Slots,
    counters: &mut dyn CounterStore,
    target: &str,
) -> Result<(Check, TargetFile)> {
    let info = updater.target_info(target)?;
    let release = Release::from_target(target, &info)?;
    let installed = match slots.current()? {
        Some(s) => slots.meta(&s)?,
        None => None,
    };
    if installed
        .as_ref()
        .is_some_and(|m| m.sha256 == release.sha256 && m.target == release.target)
    {
        return Ok((Check::UpToDate(release), info));
    }
    counter::check(counters, release.kind, release.security_counter)?;
    Ok((Check::Available { release, installed }, info))
}

/// Checks, downloads and installs `target` on trial. Returns the release if
/// something was installed, `None` if already up to date.
#[allow(clippy::too_many_arguments)]
pub fn apply(
    updater: &mut Updater<'_>,
    target_base_url: &str,
    slots: &Slots,
    counters: &mut dyn CounterStore,
    health: &dyn HealthCheck,
    clock: &dyn Clock,
    policy: TrialPolicy,
    target: &str,
    hook: &mut dyn FnMut(InstallPoint),
) -> Result<Option<Release>> {
    let (check, info) = check(updater, slots, counters, target)?;
    let release = match check {
        Check::UpToDate(_) => return Ok(None),
        Check::Available { release, .. } => release,
    };
    // Streamed to disk: a model may be larger than memory.
    slots.install_from(
        &release.slot_meta(),
        &mut |w| updater.fetch_target_into(target_base_url, target, &info, w),
        health,
        policy.max_starts,
        policy.window,
        clock.now(),
        hook,
    )?;
    Ok(Some(release))
}
