//! Attack fixtures: each attack on a repository made by our tooling is
//! refused with its own error, and the installed slot is left untouched.

mod common;

use common::{Device, Fixture, NOW, resign, script};
use confidant_firmware_update::crypto::Signer;
use confidant_firmware_update::repo::RootEdit;
use confidant_firmware_update::{Error, UnixTime};
use serde_json::json;

/// A device with 1.0.0 installed and good, and 2.0.0 (counter 2) published.
fn setup() -> (Fixture, Device) {
    let fx = Fixture::new();
    let dev = Device::new(&fx, "device");
    dev.install_good(&fx);
    assert_eq!(dev.run_current(), "confidant 1.0.0");
    (fx, dev)
}

fn assert_untouched(dev: &Device, before: &(String, String, Vec<u8>)) {
    assert_eq!(&dev.snapshot(), before, "installed slot changed");
    assert_eq!(dev.run_current(), "confidant 1.0.0");
    assert!(dev.slots().status().unwrap().trial.is_none());
}

#[test]
fn timestamp_rollback_is_refused() {
    let (fx, dev) = setup();
    let old_ts = std::fs::read(fx.md("timestamp.json")).unwrap();
    fx.release("2.0.0", 2, &script("2.0.0"));
    // The device sees the new timestamp (and installs 2.0.0, marks it good) ...
    dev.install_good(&fx);
    let before = dev.snapshot();
    // ... then a mirror replays the old one.
    std::fs::write(fx.md("timestamp.json"), old_ts).unwrap();
    let err = dev.apply(&fx).unwrap_err();
    assert!(
        matches!(&err, Error::Rollback { role, .. } if role == "timestamp"),
        "{err}"
    );
    assert_eq!(dev.snapshot(), before);
}

#[test]
fn snapshot_rollback_is_refused() {
    let (fx, dev) = setup();
    let before = dev.snapshot();
    // A holder of the timestamp key names an older snapshot in a newer timestamp.
    let old_snap = fx.latest("snapshot");
    fx.release("2.0.0", 2, &script("2.0.0"));
    dev.apply(&fx).unwrap();
    dev.slots().rollback(&mut dev.counters()).unwrap();
    resign(&fx.md("timestamp.json"), &[&fx.keys.timestamp], |s| {
        s["version"] = json!(s["version"].as_u64().unwrap() + 1);
        s["meta"]["snapshot.json"] = json!({"version": old_snap});
    });
    let err = dev.apply(&fx).unwrap_err();
    assert!(
        matches!(&err, Error::Rollback { role, .. } if role == "snapshot"),
        "{err}"
    );
    assert_untouched(&dev, &before);
}

#[test]
fn targets_rollback_is_refused() {
    let (fx, dev) = setup();
    let before = dev.snapshot();
    let old_server = fx.latest("server");
    fx.release("2.0.0", 2, &script("2.0.0"));
    dev.apply(&fx).unwrap();
    dev.slots().rollback(&mut dev.counters()).unwrap();
    // Holders of the online keys publish a snapshot naming the old server role.
    let snap_v = fx.latest("snapshot");
    let new_snap = fx.md(&format!("{}.snapshot.json", snap_v + 1));
    std::fs::copy(fx.md(&format!("{snap_v}.snapshot.json")), &new_snap).unwrap();
    resign(&new_snap, &[&fx.keys.snapshot], |s| {
        s["version"] = json!(snap_v + 1);
        s["meta"]["server.json"] = json!({"version": old_server});
    });
    resign(&fx.md("timestamp.json"), &[&fx.keys.timestamp], |s| {
        s["version"] = json!(s["version"].as_u64().unwrap() + 1);
        s["meta"]["snapshot.json"] = json!({"version": snap_v + 1});
    });
    let err = dev.apply(&fx).unwrap_err();
    assert!(
        matches!(&err, Error::Rollback { role, .. } if role == "server"),
        "{err}"
    );
    assert_untouched(&dev, &before);
}

#[test]
fn expired_timestamp_freeze_is_refused() {
    let (fx, dev) = setup();
    let before = dev.snapshot();
    fx.release("2.0.0", 2, &script("2.0.0"));
    // A frozen mirror keeps serving metadata past its expiry (timestamp: 1 day).
    let later = UnixTime(NOW.0 + 2 * 86_400);
    let err = dev.apply_at(&fx, later).unwrap_err();
    assert!(
        matches!(&err, Error::Freeze { role, .. } if role == "timestamp"),
        "{err}"
    );
    assert_untouched(&dev, &before);
}

#[test]
fn snapshot_not_matching_targets_mix_and_match_is_refused() {
    let (fx, dev) = setup();
    let before = dev.snapshot();
    let old = fx.latest("server");
    fx.release("2.0.0", 2, &script("2.0.0"));
    // The mirror serves the old server role under the new version's name.
    let new = fx.latest("server");
    std::fs::copy(
        fx.md(&format!("{old}.server.json")),
        fx.md(&format!("{new}.server.json")),
    )
    .unwrap();
    let err = dev.apply(&fx).unwrap_err();
    assert!(
        matches!(&err, Error::MixAndMatch { role, by, .. } if role == "server" && by == "snapshot"),
        "{err}"
    );
    assert_untouched(&dev, &before);
}

#[test]
fn fast_forward_is_refused_and_recovered_from_after_key_rotation() {
    let (fx, dev) = setup();
    // A stolen timestamp key fast-forwards the device to timestamp v1000.
    let ts_path = fx.md("timestamp.json");
    let legit_ts = std::fs::read(&ts_path).unwrap();
    resign(&ts_path, &[&fx.keys.timestamp], |s| {
        s["version"] = json!(1000)
    });
    assert!(dev.apply(&fx).unwrap().is_none());
    // The legitimate repository moves on; its timestamp now looks like a rollback.
    std::fs::write(&ts_path, &legit_ts).unwrap();
    fx.release("2.0.0", 2, &script("2.0.0"));
    let err = dev.apply(&fx).unwrap_err();
    assert!(
        matches!(&err, Error::Rollback { role, .. } if role == "timestamp"),
        "{err}"
    );
    let before = dev.snapshot();

    // Recovery: root v2 rotates the timestamp key.
    let new_ts = common::key(fx.tmp.path(), "timestamp2");
    fx.repo
        .rotate_root(
            &[RootEdit {
                role: "timestamp".into(),
                add: vec![new_ts.public_key().clone()],
                remove: vec![fx.keys.timestamp.public_key().key_id().unwrap()],
                threshold: None,
            }],
            NOW,
            None,
        )
        .unwrap();
    fx.repo.sign("root", &[&fx.keys.root]).unwrap();
    fx.repo
        .publish(&[&fx.keys.snapshot], &[&new_ts], NOW)
        .unwrap();
    let recovered_ts = std::fs::read(&ts_path).unwrap();

    // The attacker keeps serving a fast-forwarded timestamp with the revoked key.
    resign(&ts_path, &[&fx.keys.timestamp], |s| {
        s["version"] = json!(1001)
    });
    let err = dev.apply(&fx).unwrap_err();
    assert!(
        matches!(&err, Error::FastForward { role, .. } if role == "timestamp"),
        "{err}"
    );
    assert_eq!(dev.snapshot(), before);

    // With the rotated key's timestamp, the device recovers and updates.
    std::fs::write(&ts_path, recovered_ts).unwrap();
    let r = dev
        .apply(&fx)
        .unwrap()
        .expect("2.0.0 installs after recovery");
    assert_eq!(r.version, "2.0.0");
    assert_eq!(dev.run_current(), "confidant 2.0.0");
}

#[test]
fn oversized_metadata_endless_data_is_refused() {
    let (fx, dev) = setup();
    let before = dev.snapshot();
    resign(&fx.md("timestamp.json"), &[&fx.keys.timestamp], |s| {
        s["version"] = json!(s["version"].as_u64().unwrap() + 1);
        s["padding"] = json!("x".repeat(20_000));
    });
    let err = dev.apply(&fx).unwrap_err();
    assert!(
        matches!(&err, Error::EndlessData { what, .. } if what == "timestamp.json"),
        "{err}"
    );
    assert_untouched(&dev, &before);
}

#[test]
fn oversized_target_endless_data_is_refused() {
    let (fx, dev) = setup();
    let before = dev.snapshot();
    let content = script("2.0.0");
    fx.release("2.0.0", 2, &content);
    let hash = confidant_firmware_update::crypto::sha256_hex(&content);
    let path = fx
        .repo
        .targets_dir()
        .join(format!("server/{hash}.confidant"));
    let mut big = content.clone();
    big.extend(std::iter::repeat_n(b'#', 1 << 20));
    std::fs::write(&path, big).unwrap();
    let err = dev.apply(&fx).unwrap_err();
    assert!(
        matches!(&err, Error::EndlessData { what, .. } if what == "server/confidant"),
        "{err}"
    );
    assert_untouched(&dev, &before);
}

#[test]
fn target_hash_mismatch_arbitrary_software_is_refused() {
    let (fx, dev) = setup();
    let before = dev.snapshot();
    let content = script("2.0.0");
    fx.release("2.0.0", 2, &content);
    // Same length, different bytes: a malicious binary.
    fx.serve_instead(&content, &script("6.6.6"));
    let err = dev.apply(&fx).unwrap_err();
    assert!(
        matches!(&err, Error::HashMismatch { what, .. } if what == "server/confidant"),
        "{err}"
    );
    assert_untouched(&dev, &before);
}

#[test]
fn below_threshold_signatures_are_refused() {
    let (fx, dev) = setup();
    let before = dev.snapshot();
    fx.release("2.0.0", 2, &script("2.0.0"));
    // The delegated role's signature is replaced by one from an unknown key.
    let rogue = common::key(fx.tmp.path(), "rogue");
    let v = fx.latest("server");
    resign(&fx.md(&format!("{v}.server.json")), &[&rogue], |_| {});
    let err = dev.apply(&fx).unwrap_err();
    assert!(
        matches!(&err, Error::Threshold { role, valid: 0, threshold: 1 } if role == "server"),
        "{err}"
    );
    assert_untouched(&dev, &before);
}

#[test]
fn root_chain_with_a_bad_link_is_refused() {
    let (fx, dev) = setup();
    let before = dev.snapshot();
    // Root v2 replaces the root key but is signed only by the new key.
    let attacker = common::key(fx.tmp.path(), "attacker");
    fx.repo
        .rotate_root(
            &[RootEdit {
                role: "root".into(),
                add: vec![attacker.public_key().clone()],
                remove: vec![fx.keys.root.public_key().key_id().unwrap()],
                threshold: None,
            }],
            NOW,
            None,
        )
        .unwrap();
    fx.repo.sign("root", &[&attacker]).unwrap();
    // publish() itself refuses the broken chain ...
    assert!(
        fx.repo
            .publish(&[&fx.keys.snapshot], &[&fx.keys.timestamp], NOW)
            .is_err()
    );
    // ... so the attacker writes 2.root.json directly.
    let staged = fx.repo.dir().join("staged/root.json");
    std::fs::copy(&staged, fx.md("2.root.json")).unwrap();
    let err = dev.apply(&fx).unwrap_err();
    assert!(
        matches!(&err, Error::BadRootChain { version: 2, .. }),
        "{err}"
    );
    assert_untouched(&dev, &before);
    // The trusted root did not move.
    let trusted: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dev.root.join("tuf/root.json")).unwrap()).unwrap();
    assert_eq!(trusted["signed"]["version"], 1);
}

#[test]
fn correctly_signed_update_with_lower_security_counter_is_refused() {
    let fx = Fixture::new();
    let dev = Device::new(&fx, "device");
    dev.install_good(&fx);
    fx.release("1.1.0", 5, &script("1.1.0"));
    dev.install_good(&fx);
    let before = dev.snapshot();
    // A correctly signed, newer-looking release that re-opens a fixed hole.
    fx.release("1.2.0", 4, &script("1.2.0"));
    let err = dev.apply(&fx).unwrap_err();
    assert!(
        matches!(&err, Error::SecurityCounter { stored: 5, offered: 4, kind } if kind == "server"),
        "{err}"
    );
    assert_eq!(dev.snapshot(), before);
    assert_eq!(dev.run_current(), "confidant 1.1.0");
    // Nor can an operator roll back to the slot below the counter.
    assert!(matches!(
        dev.slots().rollback(&mut dev.counters()),
        Err(Error::SecurityCounter { .. })
    ));
}

#[test]
fn failed_health_check_is_not_switched_to() {
    let (fx, dev) = setup();
    let before = dev.snapshot();
    fx.release("2.0.0", 2, b"#!/bin/sh\nexit 3\n");
    let err = dev.apply(&fx).unwrap_err();
    assert!(matches!(err, Error::HealthCheck { .. }), "{err}");
    assert_untouched(&dev, &before);
}

#[test]
fn unconfirmed_version_is_rolled_back_after_its_starts_or_deadline() {
    use confidant_firmware_update::slots::StartDecision;
    let (fx, dev) = setup();
    fx.release("2.0.0", 2, &script("2.0.0"));
    dev.apply(&fx).unwrap();
    assert_eq!(dev.run_current(), "confidant 2.0.0");
    let slots = dev.slots();
    for n in 1..=3 {
        assert_eq!(
            slots.on_start(NOW).unwrap(),
            StartDecision::OnTrial { starts: n }
        );
    }
    assert!(matches!(
        slots.on_start(NOW).unwrap(),
        StartDecision::RolledBack { .. }
    ));
    assert_eq!(dev.run_current(), "confidant 1.0.0");
    assert!(slots.status().unwrap().last_rollback.is_some());

    // Deadline: one start well after the trial window.
    let fx2 = Fixture::new();
    let dev2 = Device::new(&fx2, "device2");
    dev2.install_good(&fx2);
    fx2.release("2.0.0", 2, &script("2.0.0"));
    dev2.apply(&fx2).unwrap();
    let late = UnixTime(NOW.0 + 3600);
    assert!(matches!(
        dev2.slots().on_start(late).unwrap(),
        StartDecision::RolledBack { .. }
    ));
    assert_eq!(dev2.run_current(), "confidant 1.0.0");
    // A counter is only advanced by mark-good: 2.0.0 never was.
    assert_eq!(
        confidant_firmware_update::counter::CounterStore::read(
            &mut dev2.counters(),
            confidant_firmware_update::counter::ArtifactKind::Server
        )
        .unwrap(),
        1
    );
}

/// A root the client rejected is never kept as trusted, even when it claims
/// the version of a root accepted earlier in the same refresh.
#[test]
fn a_rejected_next_root_claiming_the_accepted_version_is_not_kept() {
    let (fx, dev) = setup();
    let before = dev.snapshot();
    // A legitimate root v2 (same keys) ...
    fx.repo.rotate_root(&[], NOW, None).unwrap();
    fx.repo.sign("root", &[&fx.keys.root]).unwrap();
    fx.publish();
    let legit_v2 = std::fs::read(fx.md("2.root.json")).unwrap();
    // ... and, at 3.root.json, a root claiming to be v2 that hands the
    // root role to the attacker, signed by the attacker only.
    let attacker = common::key(fx.tmp.path(), "attacker");
    let attacker_id = attacker.public_key().key_id().unwrap();
    let attacker_key: serde_json::Value = {
        let mut env: serde_json::Value = serde_json::from_slice(&legit_v2).unwrap();
        let root_id = fx.keys.root.public_key().key_id().unwrap();
        env["signed"]["keys"][&root_id].take()
    };
    std::fs::copy(fx.md("2.root.json"), fx.md("3.root.json")).unwrap();
    resign(&fx.md("3.root.json"), &[&attacker], |s| {
        s["keys"][&attacker_id] = attacker_key;
        s["roles"]["root"]["keyids"] = json!([attacker_id]);
    });
    let err = dev.apply(&fx).unwrap_err();
    assert!(
        matches!(&err, Error::BadRootChain { version: 3, .. }),
        "{err}"
    );
    assert_untouched(&dev, &before);
    // The trusted root is the legitimate v2, byte for byte.
    assert_eq!(
        std::fs::read(dev.root.join("tuf/root.json")).unwrap(),
        legit_v2
    );
}

/// A snapshot the client rejected is never kept as trusted, even when it
/// claims the trusted snapshot's version.
#[test]
fn a_rejected_snapshot_claiming_the_trusted_version_is_not_kept() {
    let (fx, dev) = setup();
    let before = dev.snapshot();
    let trusted = std::fs::read(dev.root.join("tuf/snapshot.json")).unwrap();
    let old = fx.latest("snapshot");
    fx.release("2.0.0", 2, &script("2.0.0"));
    // The mirror serves, as the new snapshot, one re-signed by a key the
    // root does not list that claims the trusted version and names an
    // old targets version.
    let attacker = common::key(fx.tmp.path(), "attacker");
    let new = fx.latest("snapshot");
    std::fs::copy(
        fx.md(&format!("{old}.snapshot.json")),
        fx.md(&format!("{new}.snapshot.json")),
    )
    .unwrap();
    resign(&fx.md(&format!("{new}.snapshot.json")), &[&attacker], |s| {
        s["expires"] = json!("2099-01-01T00:00:00Z");
    });
    assert!(dev.apply(&fx).is_err());
    assert_untouched(&dev, &before);
    assert_eq!(
        std::fs::read(dev.root.join("tuf/snapshot.json")).unwrap(),
        trusted,
        "the trusted snapshot changed"
    );
}

/// tough parses `expires` leniently and checks signatures over its own
/// re-serialization: a signed timestamp with its expiry respelled
/// (`+00:00` for `Z`) would still verify there. It is refused, and an
/// expired timestamp cannot slip past the freeze check that way.
#[test]
fn a_timestamp_with_its_expiry_respelled_is_refused() {
    let (fx, dev) = setup();
    let before = dev.snapshot();
    fx.release("2.0.0", 2, &script("2.0.0"));
    let path = fx.md("timestamp.json");
    let mut env: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let expires = env["signed"]["expires"].as_str().unwrap().to_owned();
    let at = UnixTime::parse_rfc3339(&expires).unwrap();
    env["signed"]["expires"] = json!(expires.replace('Z', "+00:00"));
    std::fs::write(&path, serde_json::to_vec_pretty(&env).unwrap()).unwrap();
    let err = dev.apply_at(&fx, UnixTime(at.0 + 1)).unwrap_err();
    assert!(
        matches!(&err, Error::Malformed { reason, .. } if reason.contains("YYYY-MM-DDTHH:MM:SSZ")),
        "{err}"
    );
    assert_untouched(&dev, &before);
    // Before that instant too: the file is refused, not trusted.
    let err = dev.apply(&fx).unwrap_err();
    assert!(matches!(&err, Error::Malformed { .. }), "{err}");
    assert_untouched(&dev, &before);
}

/// Targets are streamed to `<root>/staging/` and only then moved into the
/// inactive slot: a refused download leaves the previous version there too
/// (what `rollback` would go back to), and no partial file behind.
#[test]
fn a_refused_download_leaves_both_slots_as_they_were() {
    let (fx, dev) = setup();
    fx.release("2.0.0", 2, &script("2.0.0"));
    dev.install_good(&fx);
    let slots = |dev: &Device| -> Vec<(String, Vec<u8>)> {
        let mut files = Vec::new();
        for slot in ["a", "b"] {
            let dir = dev.root.join("slots").join(slot);
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                files.push((p.display().to_string(), std::fs::read(&p).unwrap()));
            }
        }
        files.sort();
        files
    };
    let before = (dev.snapshot(), slots(&dev));
    assert!(
        before.1.iter().any(|(_, b)| b == &script("1.0.0")),
        "the inactive slot holds 1.0.0"
    );
    let content = script("3.0.0");
    fx.release("3.0.0", 3, &content);
    fx.serve_instead(&content, &script("6.6.6"));
    let err = dev.apply(&fx).unwrap_err();
    assert!(matches!(&err, Error::HashMismatch { .. }), "{err}");
    assert_eq!((dev.snapshot(), slots(&dev)), before);
    assert!(!dev.root.join("staging").exists(), "staging left behind");
}
