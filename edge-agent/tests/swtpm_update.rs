//! Signed updates of the agent and its model through firmware-update, with
//! the anti-rollback counters in the TPM's NV memory (swtpm): install on
//! trial, mark good (the TPM counters advance), then an older release
//! signed by the same repository is refused, even after the slots on disk
//! are wiped.

mod common;

use std::collections::BTreeMap;

use common::{Swtpm, encrypt_model, have_swtpm, small_model};
use confidant_edge_agent::Error;
use confidant_edge_agent::update::{self, Applied, UpdateConfig};
use confidant_firmware_update::crypto::{FileSigner, Signer};
use confidant_firmware_update::repo::{Repo, RoleSpec};
use confidant_firmware_update::{Clock, SystemClock};
use confidant_keys::FileKek;
use serde_json::json;

fn cfg(root: &std::path::Path, repo: &Repo, trusted_root: std::path::PathBuf) -> UpdateConfig {
    UpdateConfig {
        root: root.to_owned(),
        metadata_url: repo.metadata_dir().display().to_string(),
        targets_url: repo.targets_dir().display().to_string(),
        trusted_root: Some(trusted_root),
        targets: vec![
            "edge-agent/confidant-edge".into(),
            "models/sensor-model.cmdl".into(),
        ],
        // A test-only NV range, away from the default.
        nv_base: 0x0150_1000,
        trial_starts: 3,
        trial_minutes: 15,
    }
}

#[test]
fn swtpm_update_agent_and_model_with_tpm_anti_rollback_counter() {
    if !have_swtpm() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("repo-key.pem");
    std::fs::write(&key_path, FileSigner::generate_ed25519_pem().unwrap()).unwrap();
    let key = FileSigner::from_pem_file(&key_path).unwrap();
    let now = SystemClock.now();
    let spec = RoleSpec {
        keys: vec![key.public_key().clone()],
        threshold: 1,
    };
    let roles: BTreeMap<String, RoleSpec> = ["root", "targets", "snapshot", "timestamp"]
        .map(|r| (r.to_owned(), spec.clone()))
        .into();
    let repo = Repo::init(dir.path().join("repo"), &roles, now).unwrap();
    let kek = FileKek::generate(&dir.path().join("owner.kek")).unwrap();
    let model = encrypt_model(dir.path(), &kek, "sensor-model", &small_model());
    let release = |version: &str, counter: u64| {
        let custom = Some(json!({"version": version, "security_counter": counter}));
        let agent = format!("#!/bin/sh\necho confidant-edge {version}\n");
        repo.add_target(
            "targets",
            "edge-agent/confidant-edge",
            agent.as_bytes(),
            custom.clone(),
        )
        .unwrap();
        let mut container = std::fs::read(&model.container).unwrap();
        if version != "1.0.0" {
            // Another container (same key); only its bytes matter here.
            container = std::fs::read(
                encrypt_model(dir.path(), &kek, "sensor-model", &small_model()).container,
            )
            .unwrap();
        }
        repo.add_target("targets", "models/sensor-model.cmdl", &container, custom)
            .unwrap();
        repo.sign("root", &[&key as &dyn Signer]).unwrap();
        repo.sign("targets", &[&key as &dyn Signer]).unwrap();
        repo.publish(&[&key as &dyn Signer], &[&key as &dyn Signer], now)
            .unwrap();
    };
    release("1.0.0", 2);
    let trusted = repo.metadata_dir().join("1.root.json");

    let tpm = Swtpm::start();
    let tcti = tpm.tcti();
    let c = cfg(&dir.path().join("slots"), &repo, trusted.clone());
    let applied = update::apply(&c, &tcti).unwrap();
    assert_eq!(applied.len(), 2);
    assert!(
        applied
            .iter()
            .all(|a| matches!(a, Applied::Installed(r) if r.version == "1.0.0"))
    );
    assert!(update::slot_state(&c).unwrap().contains("1.0.0 trial"));
    update::mark_good(&c, &tcti).unwrap();
    let state = update::slot_state(&c).unwrap();
    assert!(
        state.contains("1.0.0") && !state.contains("trial"),
        "{state}"
    );
    assert!(matches!(
        &update::apply(&c, &tcti).unwrap()[0],
        Applied::UpToDate(_)
    ));

    // An older release, correctly signed: the TPM counter (2) refuses it.
    release("0.9.0", 1);
    let rollback = |c: &UpdateConfig| match update::apply(c, &tcti) {
        Err(Error::Update(confidant_firmware_update::Error::SecurityCounter {
            stored,
            offered,
            ..
        })) => (stored, offered),
        other => panic!("expected a security counter refusal, got {other:?}"),
    };
    assert_eq!(rollback(&c), (2, 1));
    // Wiping the slots and metadata on disk does not help: the counter
    // lives in the TPM.
    let wiped = cfg(&dir.path().join("slots-wiped"), &repo, trusted);
    assert_eq!(rollback(&wiped), (2, 1));
}
