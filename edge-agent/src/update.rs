//! Signed updates of the agent binary and its models through
//! `confidant-firmware-update`: TUF refresh, the anti-rollback counter in
//! TPM NV memory, A/B install on trial, mark-good, rollback.

use std::path::{Path, PathBuf};
use std::time::Duration;

use confidant_firmware_update::counter::tpm::{DEFAULT_BASE_INDEX, TpmCounters};
use confidant_firmware_update::install::{self, Check, Release, TrialPolicy};
use confidant_firmware_update::slots::{DefaultHealthCheck, Slots, StartDecision, Status};
use confidant_firmware_update::transport::DefaultTransport;
use confidant_firmware_update::updater::{Config, Updater};
use confidant_firmware_update::{Clock, SystemClock};
use serde::Deserialize;

use crate::error::{Error, Result};

/// `[update]` of the agent's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateConfig {
    /// Slot root: `tuf/` (trusted metadata), `a/`, `b/`, `current`.
    /// One root per target.
    pub root: PathBuf,
    /// TUF metadata base URL (`http://…` or a directory).
    pub metadata_url: String,
    /// TUF targets base URL.
    pub targets_url: String,
    /// The repository's root.json, trusted on first use only.
    pub trusted_root: Option<PathBuf>,
    /// TUF target paths to keep current, e.g. `edge-agent/confidant-edge`,
    /// `models/smollm2.cmdl`. Each gets `root/<target with / as _>`.
    pub targets: Vec<String>,
    /// First TPM NV index of the anti-rollback counters (one per artifact
    /// kind). Default 0x0150C0F0.
    #[serde(default = "default_nv_base")]
    pub nv_base: u32,
    /// Starts allowed before the new version marks itself good. Default 3.
    #[serde(default = "default_trial_starts")]
    pub trial_starts: u32,
    /// Minutes allowed before the new version marks itself good. Default 15.
    #[serde(default = "default_trial_minutes")]
    pub trial_minutes: u64,
}

fn default_nv_base() -> u32 {
    DEFAULT_BASE_INDEX
}
fn default_trial_starts() -> u32 {
    3
}
fn default_trial_minutes() -> u64 {
    15
}

impl UpdateConfig {
    /// The slot root of `target`.
    pub fn slot_root(&self, target: &str) -> PathBuf {
        self.root.join(target.replace('/', "_"))
    }

    /// Makes relative paths relative to `base`.
    pub(crate) fn resolve(&mut self, base: &Path) {
        if self.root.is_relative() {
            self.root = base.join(&self.root);
        }
        if let Some(p) = &self.trusted_root
            && p.is_relative()
        {
            self.trusted_root = Some(base.join(p));
        }
    }
}

fn updater<'a>(cfg: &UpdateConfig, transport: &'a DefaultTransport) -> Result<Updater<'a>> {
    let md = cfg.root.join("tuf");
    if !md.join("root.json").exists() {
        let trusted = cfg.trusted_root.as_ref().ok_or_else(|| {
            Error::Config("[update] trusted_root is needed until the first refresh".into())
        })?;
        let bytes = std::fs::read(trusted).map_err(|e| Error::file(trusted, e))?;
        Updater::init(&md, &bytes)?;
    }
    Ok(Updater::new(
        &md,
        &cfg.metadata_url,
        transport,
        &SystemClock,
        Config::default(),
    )?)
}

/// What `update apply` did for one target.
#[derive(Debug, Clone)]
pub enum Applied {
    /// Nothing newer.
    UpToDate(String),
    /// Installed on trial.
    Installed(Release),
}

/// Refreshes TUF metadata and installs every configured target that has
/// a newer release whose security counter is not below the one in the
/// TPM. New versions run on trial until [`mark_good`].
pub fn apply(cfg: &UpdateConfig, tcti: &str) -> Result<Vec<Applied>> {
    let transport = DefaultTransport;
    let mut up = updater(cfg, &transport)?;
    let mut counters = TpmCounters::connect(tcti, cfg.nv_base)?;
    let policy = TrialPolicy {
        max_starts: cfg.trial_starts,
        window: Duration::from_secs(cfg.trial_minutes.saturating_mul(60)),
    };
    let mut out = Vec::new();
    for target in &cfg.targets {
        let slots = Slots::open(cfg.slot_root(target))?;
        let r = install::apply(
            &mut up,
            &cfg.targets_url,
            &slots,
            &mut counters,
            &DefaultHealthCheck::default(),
            &SystemClock,
            policy,
            target,
            &mut |_| {},
        )?;
        out.push(match r {
            Some(rel) => Applied::Installed(rel),
            None => Applied::UpToDate(target.clone()),
        });
    }
    Ok(out)
}

/// Says which targets have an installable release (counter checked).
pub fn check(cfg: &UpdateConfig, tcti: &str) -> Result<Vec<(String, Check)>> {
    let transport = DefaultTransport;
    let mut up = updater(cfg, &transport)?;
    let mut counters = TpmCounters::connect(tcti, cfg.nv_base)?;
    let mut out = Vec::new();
    for target in &cfg.targets {
        let slots = Slots::open(cfg.slot_root(target))?;
        let (c, _) = install::check(&mut up, &slots, &mut counters, target)?;
        out.push((target.clone(), c));
    }
    Ok(out)
}

/// Confirms the running versions: advances the TPM counters to them.
pub fn mark_good(cfg: &UpdateConfig, tcti: &str) -> Result<()> {
    let mut counters = TpmCounters::connect(tcti, cfg.nv_base)?;
    for target in &cfg.targets {
        let slots = Slots::open(cfg.slot_root(target))?;
        if slots.status()?.trial.is_some() {
            slots.mark_good(&mut counters)?;
        }
    }
    Ok(())
}

/// At agent start: counts a start of a version on trial, and rolls back
/// one that was not marked good in time.
pub fn on_start(cfg: &UpdateConfig) -> Result<Vec<(String, StartDecision)>> {
    let mut out = Vec::new();
    for target in &cfg.targets {
        let slots = Slots::open(cfg.slot_root(target))?;
        out.push((target.clone(), slots.on_start(SystemClock.now())?));
    }
    Ok(out)
}

/// Slot state of every target, one line each (`target: slot version
/// [trial]`), for check-ins.
pub fn slot_state(cfg: &UpdateConfig) -> Result<String> {
    let mut parts = Vec::new();
    for target in &cfg.targets {
        let slots = Slots::open(cfg.slot_root(target))?;
        let s: Status = slots.status()?;
        parts.push(summary(target, &s));
    }
    Ok(parts.join("; "))
}

fn summary(target: &str, s: &Status) -> String {
    let current = s.current.as_deref().unwrap_or("-");
    let version = s.current_meta.as_ref().map_or("-", |m| m.version.as_str());
    let trial = if s.trial.is_some() { " trial" } else { "" };
    format!("{target}: {current} {version}{trial}")
}
