//! `confidant update …`: install signed updates (TUF client, A/B slots,
//! anti-rollback counters) and maintain update repositories.
//!
//! On a host, the install root (default `/var/lib/confidant/update`) holds
//! `slots/{a,b}`, the `current` link, `state.json`, the trusted TUF metadata
//! (`tuf/`) and the file security counters (`counters/`). Run
//! `confidant update boot` before starting the service (systemd
//! `ExecStartPre=`), and `confidant update mark-good` once the new version
//! is healthy; a version not marked good is rolled back at a later start.
//!
//! Every repository key argument takes a PEM file or a `pkcs11:` URI naming
//! a key pair in a token (see [`super::update_keys`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use confidant_firmware_update::counter::FileCounters;
use confidant_firmware_update::crypto::{FileSigner, PublicKey};
use confidant_firmware_update::install::{self, Check, TrialPolicy};
use confidant_firmware_update::repo::{DelegationSpec, Repo, RoleSpec, RootEdit};
use confidant_firmware_update::slots::{DefaultHealthCheck, Slots, StartDecision};
use confidant_firmware_update::transport::DefaultTransport;
use confidant_firmware_update::updater::{Config, Updater};
use confidant_firmware_update::{Clock, SystemClock};
use confidant_keys::{Pkcs11SigningKey, Pkcs11Uri, SigningAlgorithm};
use serde_json::json;

use super::update_keys::{
    KeyArg, TokenSigner, as_dyn, key_id_of, parse_algorithm, parse_key_pair_uri, public_keys,
    signer, signers,
};

/// Where installs live.
#[derive(clap::Args, Debug)]
pub struct InstallRoot {
    /// Install root: slots, current link, state, trusted metadata, counters.
    #[arg(
        long,
        env = "CONFIDANT_UPDATE_ROOT",
        default_value = "/var/lib/confidant/update"
    )]
    root: PathBuf,
}

/// Where updates come from.
#[derive(clap::Args, Debug)]
pub struct Source {
    /// Repository metadata URL (http:// or a directory).
    #[arg(long, env = "CONFIDANT_UPDATE_METADATA_URL")]
    metadata_url: String,
    /// Trusted root.json to start from when the install root has none yet.
    #[arg(long)]
    trusted_root: Option<PathBuf>,
    /// TUF target to install, e.g. `server/confidant`.
    #[arg(long, default_value = "server/confidant")]
    target: String,
}

/// `confidant update` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum UpdateCmd {
    /// Show the current and the known-good slot, and any version on trial.
    Status {
        #[command(flatten)]
        root: InstallRoot,
    },
    /// Refresh signed metadata and report whether an update is available.
    Check {
        #[command(flatten)]
        root: InstallRoot,
        #[command(flatten)]
        source: Source,
    },
    /// Download, verify and install an update into the inactive slot, on trial.
    Apply {
        #[command(flatten)]
        root: InstallRoot,
        #[command(flatten)]
        source: Source,
        /// Repository targets URL (http:// or a directory).
        #[arg(long, env = "CONFIDANT_UPDATE_TARGETS_URL")]
        targets_url: String,
        /// Starts allowed before an unconfirmed version is rolled back.
        #[arg(long, default_value_t = 3)]
        trial_starts: u32,
        /// Minutes allowed before an unconfirmed version is rolled back.
        #[arg(long, default_value_t = 15)]
        trial_minutes: u64,
    },
    /// Accept the version on trial and advance its security counter.
    MarkGood {
        #[command(flatten)]
        root: InstallRoot,
    },
    /// Switch back to the previous slot.
    Rollback {
        #[command(flatten)]
        root: InstallRoot,
    },
    /// Start-up check: count a start on trial, roll back an expired trial.
    Boot {
        #[command(flatten)]
        root: InstallRoot,
    },
    /// Maintain a TUF repository.
    Repo {
        #[command(subcommand)]
        cmd: RepoCmd,
    },
}

/// `confidant update repo` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum RepoCmd {
    /// Create a repository: stage root v1 and an empty targets role.
    Init {
        /// Repository directory.
        #[arg(long)]
        repo: PathBuf,
        /// Root key (PEM, public or private, or a pkcs11: URI); repeat for several.
        #[arg(long = "root-key", required = true)]
        root_keys: Vec<KeyArg>,
        #[arg(long, default_value_t = 1)]
        root_threshold: u64,
        /// Targets key (PEM or pkcs11: URI); repeat for several.
        #[arg(long = "targets-key", required = true)]
        targets_keys: Vec<KeyArg>,
        #[arg(long, default_value_t = 1)]
        targets_threshold: u64,
        /// Snapshot (online) key (PEM or pkcs11: URI).
        #[arg(long = "snapshot-key", required = true)]
        snapshot_keys: Vec<KeyArg>,
        #[arg(long, default_value_t = 1)]
        snapshot_threshold: u64,
        /// Timestamp (online) key (PEM or pkcs11: URI).
        #[arg(long = "timestamp-key", required = true)]
        timestamp_keys: Vec<KeyArg>,
        #[arg(long, default_value_t = 1)]
        timestamp_threshold: u64,
    },
    /// Add a file as a target of a role (staged; sign and publish after).
    #[command(disable_version_flag = true)]
    AddTarget {
        #[arg(long)]
        repo: PathBuf,
        /// Role that lists it (`targets` or a delegated role).
        #[arg(long, default_value = "targets")]
        role: String,
        /// Target path, e.g. `server/confidant`.
        #[arg(long)]
        name: String,
        /// The artifact.
        #[arg(long)]
        file: PathBuf,
        /// Version string shown to operators.
        #[arg(long)]
        version: String,
        /// Anti-rollback counter; raise it for security fixes.
        #[arg(long)]
        security_counter: u64,
        /// Also publish `<name>.manifest`, signed with this Ed25519 key
        /// (PEM or pkcs11: URI) for sensors running the no_std verifier.
        #[arg(long)]
        sensor_manifest_key: Option<KeyArg>,
        /// Artifact kind byte written into the sensor manifest.
        #[arg(long, default_value_t = 0)]
        sensor_kind: u8,
    },
    /// Delegate target paths from a role to a new or existing role.
    Delegate {
        #[arg(long)]
        repo: PathBuf,
        /// Delegating role.
        #[arg(long, default_value = "targets")]
        from: String,
        /// Delegated role name, e.g. `server`.
        #[arg(long)]
        name: String,
        /// Path pattern, e.g. `server/*`; repeat for several.
        #[arg(long = "path", required = true)]
        paths: Vec<String>,
        /// Key of the delegated role (PEM or pkcs11: URI); repeat for several.
        #[arg(long = "key", required = true)]
        keys: Vec<KeyArg>,
        #[arg(long, default_value_t = 1)]
        threshold: u64,
        /// Stop searching other roles when this one matches.
        #[arg(long)]
        terminating: bool,
    },
    /// Add signatures to a staged role (one key holder at a time).
    Sign {
        #[arg(long)]
        repo: PathBuf,
        #[arg(long)]
        role: String,
        /// Private key (PKCS#8 PEM or pkcs11: URI); repeat for several.
        #[arg(long = "key", required = true)]
        keys: Vec<KeyArg>,
    },
    /// Publish staged roles that meet their thresholds, with a new snapshot
    /// and timestamp signed by the online keys.
    Publish {
        #[arg(long)]
        repo: PathBuf,
        #[arg(long = "snapshot-key", required = true)]
        snapshot_keys: Vec<KeyArg>,
        #[arg(long = "timestamp-key", required = true)]
        timestamp_keys: Vec<KeyArg>,
    },
    /// Stage the next root with a changed key assignment for one role; sign
    /// it with a threshold of the old and of the new root keys.
    RotateRoot {
        #[arg(long)]
        repo: PathBuf,
        /// Top-level role whose keys change.
        #[arg(long)]
        role: String,
        /// Key to add (PEM or pkcs11: URI); repeat for several.
        #[arg(long = "add-key")]
        add: Vec<KeyArg>,
        /// Key to remove (PEM file, pkcs11: URI or key id); repeat for several.
        #[arg(long = "remove-key")]
        remove: Vec<String>,
        #[arg(long)]
        threshold: Option<u64>,
        /// Days until the new root expires.
        #[arg(long)]
        expires_days: Option<i64>,
    },
    /// Write a new Ed25519 private key (PKCS#8 PEM, mode 0600), or generate
    /// a key pair inside a PKCS#11 token (`--pkcs11`; the URI's object= is
    /// the label). Prints the TUF key id.
    Keygen {
        #[arg(long, required_unless_present = "pkcs11", conflicts_with = "pkcs11")]
        out: Option<PathBuf>,
        /// Token and label of the new key pair, e.g.
        /// `pkcs11:token=repo;object=root-1?module-path=...`.
        #[arg(long, value_parser = parse_key_pair_uri)]
        pkcs11: Option<Pkcs11Uri>,
        /// Algorithm of a token key pair: `p256` (default) or `ed25519`.
        #[arg(long, requires = "pkcs11", value_parser = parse_algorithm)]
        algo: Option<SigningAlgorithm>,
    },
}

fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn open_updater<'a>(
    root: &Path,
    source: &Source,
    transport: &'a DefaultTransport,
) -> anyhow::Result<Updater<'a>> {
    let md = root.join("tuf");
    if !md.join("root.json").exists() {
        let trusted = source.trusted_root.as_ref().context(
            "no trusted metadata yet: pass --trusted-root with the repository's root.json",
        )?;
        let bytes =
            std::fs::read(trusted).with_context(|| format!("reading {}", trusted.display()))?;
        Updater::init(&md, &bytes)?;
    }
    Ok(Updater::new(
        &md,
        &source.metadata_url,
        transport,
        &SystemClock,
        Config::default(),
    )?)
}

/// Runs one `confidant update` subcommand.
pub fn run(cmd: UpdateCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        UpdateCmd::Status { root } => {
            let slots = Slots::open(&root.root)?;
            print_json(&serde_json::to_value(slots.status()?)?);
        }
        UpdateCmd::Check { root, source } => {
            let transport = DefaultTransport;
            let mut updater = open_updater(&root.root, &source, &transport)?;
            let slots = Slots::open(&root.root)?;
            let mut counters = FileCounters::new(root.root.join("counters"))?;
            match install::check(&mut updater, &slots, &mut counters, &source.target)?.0 {
                Check::UpToDate(r) => {
                    print_json(&json!({"up_to_date": true, "version": r.version}))
                }
                Check::Available { release, installed } => print_json(&json!({
                    "up_to_date": false,
                    "target": release.target,
                    "version": release.version,
                    "security_counter": release.security_counter,
                    "installed": installed.map(|m| m.version),
                })),
            }
        }
        UpdateCmd::Apply {
            root,
            source,
            targets_url,
            trial_starts,
            trial_minutes,
        } => {
            let transport = DefaultTransport;
            let mut updater = open_updater(&root.root, &source, &transport)?;
            let slots = Slots::open(&root.root)?;
            let mut counters = FileCounters::new(root.root.join("counters"))?;
            let policy = TrialPolicy {
                max_starts: trial_starts,
                window: Duration::from_secs(trial_minutes.saturating_mul(60)),
            };
            let installed = install::apply(
                &mut updater,
                &targets_url,
                &slots,
                &mut counters,
                &DefaultHealthCheck::default(),
                &SystemClock,
                policy,
                &source.target,
                &mut |_| {},
            )?;
            match installed {
                None => print_json(&json!({"installed": false, "reason": "up to date"})),
                Some(r) => print_json(&json!({
                    "installed": true,
                    "version": r.version,
                    "on_trial": true,
                    "next": "run `confidant update mark-good` once the new version is healthy",
                })),
            }
        }
        UpdateCmd::MarkGood { root } => {
            let slots = Slots::open(&root.root)?;
            let mut counters = FileCounters::new(root.root.join("counters"))?;
            let meta = slots.mark_good(&mut counters)?;
            print_json(&json!({"good": meta.version, "security_counter": meta.security_counter}));
        }
        UpdateCmd::Rollback { root } => {
            let slots = Slots::open(&root.root)?;
            let mut counters = FileCounters::new(root.root.join("counters"))?;
            let to = slots.rollback(&mut counters)?;
            print_json(&json!({"rolled_back_to": to}));
        }
        UpdateCmd::Boot { root } => {
            let slots = Slots::open(&root.root)?;
            match slots.on_start(SystemClock.now())? {
                StartDecision::Good => print_json(&json!({"trial": false})),
                StartDecision::OnTrial { starts } => {
                    print_json(&json!({"trial": true, "starts": starts}))
                }
                StartDecision::RolledBack { to, reason } => {
                    tracing::warn!(slot = %to, %reason, "update not confirmed; rolled back");
                    print_json(&json!({"rolled_back_to": to, "reason": reason}));
                }
            }
        }
        UpdateCmd::Repo { cmd } => run_repo(cmd)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn run_repo(cmd: RepoCmd) -> anyhow::Result<()> {
    let now = SystemClock.now();
    match cmd {
        RepoCmd::Init {
            repo,
            root_keys,
            root_threshold,
            targets_keys,
            targets_threshold,
            snapshot_keys,
            snapshot_threshold,
            timestamp_keys,
            timestamp_threshold,
        } => {
            let mut roles = BTreeMap::new();
            for (name, keys, threshold) in [
                ("root", &root_keys, root_threshold),
                ("targets", &targets_keys, targets_threshold),
                ("snapshot", &snapshot_keys, snapshot_threshold),
                ("timestamp", &timestamp_keys, timestamp_threshold),
            ] {
                roles.insert(
                    name.to_owned(),
                    RoleSpec {
                        keys: public_keys(keys)?,
                        threshold,
                    },
                );
            }
            Repo::init(&repo, &roles, now)?;
            println!(
                "staged root v1 and targets v1 in {}: sign them, then publish",
                repo.display()
            );
        }
        RepoCmd::AddTarget {
            repo,
            role,
            name,
            file,
            version,
            security_counter,
            sensor_manifest_key,
            sensor_kind,
        } => {
            let r = Repo::open(&repo)?;
            let data =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let custom = json!({"version": version, "security_counter": security_counter});
            r.add_target(&role, &name, &data, Some(custom.clone()))?;
            if let Some(k) = sensor_manifest_key {
                let key = signer(&k)?;
                let m = confidant_firmware_update::manifest::sign_manifest(
                    sensor_kind,
                    &version,
                    security_counter,
                    &data,
                    key.as_ref(),
                )?;
                r.add_target(&role, &format!("{name}.manifest"), &m, Some(custom))?;
            }
        }
        RepoCmd::Delegate {
            repo,
            from,
            name,
            paths,
            keys,
            threshold,
            terminating,
        } => {
            let spec = DelegationSpec {
                name,
                paths,
                keys: public_keys(&keys)?,
                threshold,
                terminating,
            };
            Repo::open(&repo)?.delegate(&from, &spec, now)?;
        }
        RepoCmd::Sign { repo, role, keys } => {
            let s = signers(&keys)?;
            Repo::open(&repo)?.sign(&role, &as_dyn(&s))?;
        }
        RepoCmd::Publish {
            repo,
            snapshot_keys,
            timestamp_keys,
        } => {
            let snap = signers(&snapshot_keys)?;
            let ts = signers(&timestamp_keys)?;
            Repo::open(&repo)?.publish(&as_dyn(&snap), &as_dyn(&ts), now)?;
        }
        RepoCmd::RotateRoot {
            repo,
            role,
            add,
            remove,
            threshold,
            expires_days,
        } => {
            let mut remove_ids = Vec::new();
            for r in remove {
                remove_ids.push(key_id_of(&r)?);
            }
            let edit = RootEdit {
                role,
                add: public_keys(&add)?,
                remove: remove_ids,
                threshold,
            };
            Repo::open(&repo)?.rotate_root(&[edit], now, expires_days)?;
        }
        RepoCmd::Keygen {
            out: None,
            pkcs11: Some(uri),
            algo,
        } => {
            let key = Pkcs11SigningKey::generate(&uri, algo.unwrap_or(SigningAlgorithm::EcdsaP256))
                .with_context(|| format!("generating a key pair at {uri}"))?;
            let s = TokenSigner::new(key)?;
            println!(
                "{}",
                confidant_firmware_update::crypto::Signer::public_key(&s).key_id()?
            );
        }
        RepoCmd::Keygen { out, .. } => {
            let out = out.context("--out or --pkcs11 is required")?;
            if out.exists() {
                bail!("{} exists; not overwriting a key", out.display());
            }
            let pem = FileSigner::generate_ed25519_pem()?;
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&out)
                .with_context(|| format!("creating {}", out.display()))?;
            f.write_all(pem.as_bytes())?;
            f.sync_all()?;
            let public = PublicKey::from_pem(&pem)?;
            println!("{}", public.key_id()?);
        }
    }
    Ok(())
}
