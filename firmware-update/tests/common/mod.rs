//! Shared fixtures: a repository made with our tooling (root, targets,
//! snapshot, timestamp keys; `server/*` delegated to role `server`), and an
//! install root with a version installed and marked good.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use confidant_firmware_update::counter::FileCounters;
use confidant_firmware_update::crypto::{FileSigner, Signer, canonical_json};
use confidant_firmware_update::install::{self, TrialPolicy};
use confidant_firmware_update::repo::{DelegationSpec, Repo, RoleSpec};
use confidant_firmware_update::slots::{DefaultHealthCheck, Slots};
use confidant_firmware_update::transport::FileTransport;
use confidant_firmware_update::updater::{Config, Updater};
use confidant_firmware_update::{Error, FixedClock, UnixTime};
use serde_json::{Value, json};

/// 2030-01-01T00:00:00Z: tests pin the clock.
pub const NOW: UnixTime = UnixTime(1_893_456_000);

pub fn key(dir: &Path, name: &str) -> FileSigner {
    let p = dir.join(format!("{name}.pem"));
    std::fs::write(&p, FileSigner::generate_ed25519_pem().unwrap()).unwrap();
    FileSigner::from_pem_file(&p).unwrap()
}

pub fn script(version: &str) -> Vec<u8> {
    format!("#!/bin/sh\necho confidant {version}\n").into_bytes()
}

pub struct Keys {
    pub root: FileSigner,
    pub targets: FileSigner,
    pub snapshot: FileSigner,
    pub timestamp: FileSigner,
    pub server: FileSigner,
}

pub struct Fixture {
    pub tmp: tempfile::TempDir,
    pub repo: Repo,
    pub keys: Keys,
    /// root.json v1, what devices ship with.
    pub initial_root: Vec<u8>,
    /// The time the repository signs at (expiries count from it).
    pub now: UnixTime,
}

impl Fixture {
    /// A repository with `server/confidant` 1.0.0 (counter 1) published,
    /// signed at [`NOW`].
    pub fn new() -> Self {
        Self::new_at(NOW)
    }

    /// The same, signed at `now`.
    pub fn new_at(now: UnixTime) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let kd = tmp.path().join("keys");
        std::fs::create_dir_all(&kd).unwrap();
        let keys = Keys {
            root: key(&kd, "root"),
            targets: key(&kd, "targets"),
            snapshot: key(&kd, "snapshot"),
            timestamp: key(&kd, "timestamp"),
            server: key(&kd, "server"),
        };
        let mut roles = BTreeMap::new();
        for (r, k) in [
            ("root", &keys.root),
            ("targets", &keys.targets),
            ("snapshot", &keys.snapshot),
            ("timestamp", &keys.timestamp),
        ] {
            roles.insert(
                r.to_owned(),
                RoleSpec {
                    keys: vec![k.public_key().clone()],
                    threshold: 1,
                },
            );
        }
        let repo = Repo::init(tmp.path().join("repo"), &roles, now).unwrap();
        repo.delegate(
            "targets",
            &DelegationSpec {
                name: "server".into(),
                paths: vec!["server/*".into()],
                keys: vec![keys.server.public_key().clone()],
                threshold: 1,
                terminating: true,
            },
            now,
        )
        .unwrap();
        repo.sign("root", &[&keys.root]).unwrap();
        repo.sign("targets", &[&keys.targets]).unwrap();
        let f = Self {
            initial_root: Vec::new(),
            tmp,
            repo,
            keys,
            now,
        };
        f.release("1.0.0", 1, &script("1.0.0"));
        let initial_root = std::fs::read(f.repo.metadata_dir().join("1.root.json")).unwrap();
        Self { initial_root, ..f }
    }

    /// Publishes `server/confidant` with this content, version and counter.
    pub fn release(&self, version: &str, counter: u64, content: &[u8]) {
        self.repo
            .add_target(
                "server",
                "server/confidant",
                content,
                Some(json!({"version": version, "security_counter": counter})),
            )
            .unwrap();
        self.repo.sign("server", &[&self.keys.server]).unwrap();
        self.publish();
    }

    /// Delegates `paths` from `targets` to a role `name` held by the
    /// server key (not terminating), and re-signs `targets`.
    pub fn delegate_to(&self, names: &[&str], paths: &[&str]) {
        for name in names {
            self.repo
                .delegate(
                    "targets",
                    &DelegationSpec {
                        name: (*name).into(),
                        paths: paths.iter().map(|p| (*p).into()).collect(),
                        keys: vec![self.keys.server.public_key().clone()],
                        threshold: 1,
                        terminating: false,
                    },
                    self.now,
                )
                .unwrap();
        }
        self.repo.sign("targets", &[&self.keys.targets]).unwrap();
    }

    /// Replaces the published `server/confidant` whose signed content is
    /// `signed` with `served` on the mirror (the hash-prefixed file name).
    pub fn serve_instead(&self, signed: &[u8], served: &[u8]) {
        let hash = confidant_firmware_update::crypto::sha256_hex(signed);
        let path = self
            .repo
            .targets_dir()
            .join(format!("server/{hash}.confidant"));
        std::fs::write(path, served).unwrap();
    }

    /// New snapshot and timestamp with the online keys.
    pub fn publish(&self) {
        self.repo
            .publish(&[&self.keys.snapshot], &[&self.keys.timestamp], self.now)
            .unwrap();
    }

    pub fn metadata_url(&self) -> String {
        self.repo.metadata_dir().display().to_string()
    }

    pub fn targets_url(&self) -> String {
        self.repo.targets_dir().display().to_string()
    }

    pub fn md(&self, name: &str) -> PathBuf {
        self.repo.metadata_dir().join(name)
    }

    /// Version of the published snapshot/targets file names.
    pub fn latest(&self, role: &str) -> u64 {
        let mut best = 0;
        for e in std::fs::read_dir(self.repo.metadata_dir()).unwrap() {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            if let Some(v) = n.strip_suffix(&format!(".{role}.json"))
                && let Ok(v) = v.parse::<u64>()
            {
                best = best.max(v);
            }
        }
        best
    }
}

/// Rewrites a metadata file: `edit` changes `signed`, then it is signed by
/// `signers` (none: signatures dropped).
pub fn resign(path: &Path, signers: &[&dyn Signer], edit: impl FnOnce(&mut Value)) {
    let mut env: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    edit(&mut env["signed"]);
    let msg = canonical_json(&env["signed"]).unwrap();
    let sigs: Vec<Value> = signers
        .iter()
        .map(|s| json!({"keyid": s.public_key().key_id().unwrap(), "sig": hex::encode(s.sign(&msg).unwrap())}))
        .collect();
    env["signatures"] = json!(sigs);
    std::fs::write(path, serde_json::to_vec_pretty(&env).unwrap()).unwrap();
}

/// A device: install root with trusted metadata in `<root>/tuf`.
pub struct Device {
    pub root: PathBuf,
}

impl Device {
    pub fn new(fx: &Fixture, name: &str) -> Self {
        let root = fx.tmp.path().join(name);
        Updater::init(&root.join("tuf"), &fx.initial_root).unwrap();
        Self { root }
    }

    pub fn slots(&self) -> Slots {
        Slots::open(&self.root).unwrap()
    }

    pub fn counters(&self) -> FileCounters {
        FileCounters::new(self.root.join("counters")).unwrap()
    }

    /// `confidant update apply` with a pinned clock.
    pub fn apply_at(&self, fx: &Fixture, now: UnixTime) -> Result<Option<install::Release>, Error> {
        let transport = FileTransport;
        let clock = FixedClock(now);
        let mut u = Updater::new(
            self.root.join("tuf"),
            &fx.metadata_url(),
            &transport,
            &clock,
            Config::default(),
        )?;
        install::apply(
            &mut u,
            &fx.targets_url(),
            &self.slots(),
            &mut self.counters(),
            &DefaultHealthCheck::default(),
            &clock,
            TrialPolicy::default(),
            "server/confidant",
            &mut |_| {},
        )
    }

    pub fn apply(&self, fx: &Fixture) -> Result<Option<install::Release>, Error> {
        self.apply_at(fx, NOW)
    }

    /// Applies and marks good: the version becomes the installed good one.
    pub fn install_good(&self, fx: &Fixture) {
        self.apply(fx).unwrap().expect("something to install");
        self.slots().mark_good(&mut self.counters()).unwrap();
    }

    /// What `current/confidant --version` prints.
    pub fn run_current(&self) -> String {
        let out = std::process::Command::new(self.root.join("current/confidant"))
            .arg("--version")
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// Slot state and the running artifact, to show a refusal changed nothing.
    pub fn snapshot(&self) -> (String, String, Vec<u8>) {
        let st = self.slots().status().unwrap();
        let cur = st.current.clone().unwrap();
        let meta = serde_json::to_string(&st.current_meta).unwrap();
        let bytes = std::fs::read(self.root.join("current/confidant")).unwrap();
        assert_eq!(st.good, st.current, "installed slot must be the good one");
        (cur, meta, bytes)
    }
}

impl Device {
    /// Installs what the repository's first release was (1.0.0) by copying
    /// `seed`'s good install root and trusted metadata.
    pub fn install_good_at_version(&self, _fx: &Fixture, seed: &Device) {
        let status = std::process::Command::new("cp")
            .args([
                "-a",
                &format!("{}/.", seed.root.display()),
                &self.root.display().to_string(),
            ])
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(self.run_current(), "confidant 1.0.0");
    }
}
