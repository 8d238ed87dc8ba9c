//! What the client adds around tough (src/updater.rs): trusted copies
//! instead of downloads, the equal-version timestamp rule, expiry of a
//! delegated role against the injectable clock, the exact verified bytes on
//! disk, and use of the blocking API from inside an async runtime.

mod common;

use confidant_firmware_update::crypto::Signer;
use std::sync::{Arc, Mutex};

use common::{Device, Fixture, NOW, resign, script};
use confidant_firmware_update::transport::{FetchError, FileTransport, Transport};
use confidant_firmware_update::updater::{Config, Updater};
use confidant_firmware_update::{Error, FixedClock, UnixTime};
use serde_json::json;

/// The file system, recording the file name of every request.
#[derive(Debug, Clone, Default)]
struct Recording(Arc<Mutex<Vec<String>>>);

impl Recording {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl Transport for Recording {
    fn fetch(&self, url: &str, max_len: u64) -> Result<Vec<u8>, FetchError> {
        let name = url.rsplit('/').next().unwrap_or(url).to_owned();
        self.0.lock().unwrap().push(name);
        FileTransport.fetch(url, max_len)
    }

    fn clone_box(&self) -> Box<dyn Transport> {
        Box::new(self.clone())
    }
}

fn updater<'a>(dev: &Device, fx: &Fixture, t: &'a dyn Transport, now: UnixTime) -> Updater<'a> {
    Updater::new(
        dev.root.join("tuf"),
        &fx.metadata_url(),
        t,
        &FixedClock(now),
        Config::default(),
    )
    .unwrap()
}

fn versioned(fx: &Fixture, role: &str) -> String {
    format!("{}.{role}.json", fx.latest(role))
}

#[test]
fn an_unchanged_repository_is_refreshed_from_trusted_copies() {
    let fx = Fixture::new();
    let dev = Device::new(&fx, "device");
    let rec = Recording::default();
    updater(&dev, &fx, &rec, NOW)
        .target_info("server/confidant")
        .unwrap();
    assert_eq!(
        rec.take(),
        [
            "2.root.json".to_owned(),
            "timestamp.json".into(),
            versioned(&fx, "snapshot"),
            versioned(&fx, "targets"),
            versioned(&fx, "server"),
        ]
    );
    // What tough verified is on disk byte for byte, under unversioned names.
    for role in ["snapshot", "targets", "server"] {
        assert_eq!(
            std::fs::read(dev.root.join(format!("tuf/{role}.json"))).unwrap(),
            std::fs::read(fx.md(&versioned(&fx, role))).unwrap(),
            "{role}"
        );
    }

    // Nothing new: only the next root and the timestamp are asked for.
    let info = updater(&dev, &fx, &rec, NOW)
        .target_info("server/confidant")
        .unwrap();
    assert_eq!(rec.take(), ["2.root.json", "timestamp.json"]);
    assert_eq!(info.length, script("1.0.0").len() as u64);

    // A new release: the changed roles are downloaded, the rest is not.
    fx.release("2.0.0", 2, &script("2.0.0"));
    let info = updater(&dev, &fx, &rec, NOW)
        .target_info("server/confidant")
        .unwrap();
    assert_eq!(info.custom.unwrap()["version"], "2.0.0");
    assert_eq!(
        rec.take(),
        [
            "2.root.json".to_owned(),
            "timestamp.json".into(),
            versioned(&fx, "snapshot"),
            versioned(&fx, "server"),
        ]
    );
}

#[test]
fn a_trusted_copy_that_no_longer_matches_is_downloaded_again() {
    let fx = Fixture::new();
    let dev = Device::new(&fx, "device");
    let rec = Recording::default();
    updater(&dev, &fx, &rec, NOW).refresh().unwrap();
    rec.take();
    // The local snapshot is damaged: its signature no longer verifies.
    let local = dev.root.join("tuf/snapshot.json");
    resign(&local, &[], |_| {});
    updater(&dev, &fx, &rec, NOW).refresh().unwrap();
    assert_eq!(
        rec.take(),
        [
            "2.root.json".to_owned(),
            "timestamp.json".into(),
            versioned(&fx, "snapshot")
        ]
    );
    assert_eq!(
        std::fs::read(&local).unwrap(),
        std::fs::read(fx.md(&versioned(&fx, "snapshot"))).unwrap()
    );
}

#[test]
fn a_resigned_timestamp_with_the_trusted_version_is_not_followed() {
    let fx = Fixture::new();
    let dev = Device::new(&fx, "device");
    let rec = Recording::default();
    updater(&dev, &fx, &rec, NOW).refresh().unwrap();
    let trusted = std::fs::read(dev.root.join("tuf/timestamp.json")).unwrap();
    rec.take();
    // Same version, different content (a snapshot that does not exist).
    resign(&fx.md("timestamp.json"), &[&fx.keys.timestamp], |s| {
        s["meta"]["snapshot.json"] = json!({"version": 999});
    });
    updater(&dev, &fx, &rec, NOW)
        .target_info("server/confidant")
        .unwrap();
    assert_eq!(rec.take(), ["2.root.json", "timestamp.json"]);
    assert_eq!(
        std::fs::read(dev.root.join("tuf/timestamp.json")).unwrap(),
        trusted
    );
}

#[test]
fn an_expired_delegated_role_is_refused_as_a_freeze() {
    let fx = Fixture::new();
    let dev = Device::new(&fx, "device");
    dev.install_good(&fx);
    let before = dev.snapshot();
    let trusted_server = std::fs::read(dev.root.join("tuf/server.json")).unwrap();
    fx.release("2.0.0", 2, &script("2.0.0"));
    // The new server role expired a day before the device's clock.
    resign(&fx.md(&versioned(&fx, "server")), &[&fx.keys.server], |s| {
        s["expires"] = json!(UnixTime(NOW.0 - 86_400).to_string())
    });
    let err = dev.apply(&fx).unwrap_err();
    assert!(
        matches!(&err, Error::Freeze { role, .. } if role == "server"),
        "{err}"
    );
    assert_eq!(dev.snapshot(), before);
    assert_eq!(
        std::fs::read(dev.root.join("tuf/server.json")).unwrap(),
        trusted_server
    );
    // The same metadata is fine for a clock before that expiry.
    let r = dev
        .apply_at(&fx, UnixTime(NOW.0 - 2 * 86_400))
        .unwrap()
        .expect("2.0.0 installs");
    assert_eq!(r.version, "2.0.0");
}

#[test]
fn a_delegated_role_listing_a_target_outside_its_paths_stops_the_refresh() {
    // tough 0.24 refuses the whole repository (README, "Security notes"):
    // clearly, and with nothing installed or trusted from it.
    let fx = Fixture::new();
    let dev = Device::new(&fx, "device");
    dev.install_good(&fx);
    let before = dev.snapshot();
    // Our tooling refuses to write such an entry ...
    let err = fx
        .repo
        .add_target("server", "models/not-yours", b"weights", None)
        .unwrap_err();
    assert!(
        matches!(&err, Error::Repo(m) if m.contains("outside the paths")),
        "{err}"
    );
    // ... and one that tough's glob would take (`*` matching `/`) but the
    // specification's matching (python-tuf, go-tuf) would not find.
    let err = fx
        .repo
        .add_target("server", "server/nested/confidant", b"bin", None)
        .unwrap_err();
    assert!(
        matches!(&err, Error::Repo(m) if m.contains("`*` does not match `/`")),
        "{err}"
    );
    // ... so the holder of the server role's key writes it by hand.
    fx.release("2.0.0", 2, &script("2.0.0"));
    resign(&fx.md(&versioned(&fx, "server")), &[&fx.keys.server], |s| {
        s["targets"]["models/not-yours"] = json!({
            "length": 7,
            "hashes": {"sha256": confidant_firmware_update::crypto::sha256_hex(b"weights")},
        })
    });
    let err = dev.apply(&fx).unwrap_err();
    assert!(
        matches!(&err, Error::Malformed { reason, .. } if reason.contains("not delegated")),
        "{err}"
    );
    assert_eq!(dev.snapshot(), before);
    assert_eq!(dev.run_current(), "confidant 1.0.0");
}

#[test]
fn the_blocking_client_runs_inside_an_async_runtime() {
    let fx = Fixture::new();
    let dev = Device::new(&fx, "device");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let info = rt.block_on(async {
        let mut u = updater(&dev, &fx, &FileTransport, NOW);
        let info = u.target_info("server/confidant").unwrap();
        let bytes = u
            .fetch_target(&fx.targets_url(), "server/confidant", &info)
            .unwrap();
        assert_eq!(bytes, script("1.0.0"));
        info
    });
    assert_eq!(info.length, script("1.0.0").len() as u64);
}

#[test]
fn a_delegated_role_named_like_a_top_level_role_is_refused_and_trusted_files_stay() {
    let fx = Fixture::new();
    let dev = Device::new(&fx, "device");
    dev.install_good(&fx);
    let before = dev.snapshot();
    let tuf = dev.root.join("tuf");
    let trusted = |role: &str| std::fs::read(tuf.join(format!("{role}.json"))).unwrap();
    let kept: Vec<_> = ["root", "timestamp", "snapshot", "targets"]
        .iter()
        .map(|r| trusted(r))
        .collect();
    fx.release("2.0.0", 2, &script("2.0.0"));
    let snapshot = fx.latest("snapshot");
    // The targets key's holder delegates to a role named "snapshot" (our
    // tooling refuses to), whose file sits at 1000.snapshot.json ...
    let server_id = fx.keys.server.public_key().key_id().unwrap();
    let targets = fx.latest("targets") + 1;
    let targets_file = fx.md(&format!("{targets}.targets.json"));
    std::fs::copy(fx.md(&versioned(&fx, "targets")), &targets_file).unwrap();
    resign(&targets_file, &[&fx.keys.targets], |s| {
        s["version"] = json!(targets);
        let roles = s["delegations"]["roles"].as_array_mut().unwrap();
        roles.push(json!({
            "name": "snapshot", "keyids": [server_id], "threshold": 1,
            "paths": ["other/*"], "terminating": false,
        }));
    });
    let role_file = fx.md("1000.snapshot.json");
    std::fs::copy(fx.md(&versioned(&fx, "server")), &role_file).unwrap();
    resign(&role_file, &[&fx.keys.server], |s| {
        s["version"] = json!(1000);
        s["targets"] = json!({});
    });
    // ... listed in the snapshot.
    let snapshot_file = fx.md(&format!("{snapshot}.snapshot.json"));
    resign(&snapshot_file, &[&fx.keys.snapshot], |s| {
        s["meta"]["snapshot.json"] = json!({"version": 1000});
        s["meta"]["targets.json"] = json!({"version": targets});
    });
    resign(&fx.md("timestamp.json"), &[&fx.keys.timestamp], |s| {
        s["meta"]["snapshot.json"] = json!({"version": snapshot});
    });
    let err = dev.apply(&fx).unwrap_err();
    assert!(
        matches!(&err, Error::Malformed { what, reason } if what == "delegations" && reason.contains("\"snapshot\"")),
        "{err}"
    );
    assert_eq!(dev.snapshot(), before);
    for (role, bytes) in ["root", "timestamp", "snapshot", "targets"]
        .iter()
        .zip(&kept)
    {
        assert_eq!(&trusted(role), bytes, "trusted {role}.json changed");
    }
}

#[test]
fn a_target_outside_the_specification_paths_of_its_chain_is_not_found() {
    // tough's glob lets `server/*` cover `server/nested/confidant`; the
    // specification's matching (python-tuf, go-tuf) does not, and neither
    // does our client.
    let fx = Fixture::new();
    let dev = Device::new(&fx, "device");
    fx.release("2.0.0", 2, &script("2.0.0"));
    let content = script("nested");
    resign(&fx.md(&versioned(&fx, "server")), &[&fx.keys.server], |s| {
        s["targets"]["server/nested/confidant"] = json!({
            "length": content.len(),
            "hashes": {"sha256": confidant_firmware_update::crypto::sha256_hex(&content)},
        })
    });
    let mut u = updater(&dev, &fx, &FileTransport, NOW);
    let err = u.target_info("server/nested/confidant").unwrap_err();
    assert!(
        matches!(&err, Error::TargetNotFound(m) if m.contains("`*` does not match `/`")),
        "{err}"
    );
    // The role's other targets are found as before.
    assert!(u.target_info("server/confidant").is_ok());
}

#[test]
fn a_target_behind_a_role_missing_from_the_snapshot_is_not_found_and_says_why() {
    let fx = Fixture::new();
    let dev = Device::new(&fx, "device");
    fx.delegate_to(&["extra"], &["extra/*"]);
    fx.repo.add_target("extra", "extra/x", b"x", None).unwrap();
    fx.repo.sign("extra", &[&fx.keys.server]).unwrap();
    fx.publish();
    // The snapshot leaves the role out.
    let snapshot = fx.latest("snapshot");
    resign(
        &fx.md(&versioned(&fx, "snapshot")),
        &[&fx.keys.snapshot],
        |s| {
            s["meta"].as_object_mut().unwrap().remove("extra.json");
        },
    );
    resign(&fx.md("timestamp.json"), &[&fx.keys.timestamp], |s| {
        s["meta"]["snapshot.json"] = json!({"version": snapshot});
    });
    let mut u = updater(&dev, &fx, &FileTransport, NOW);
    let err = u.target_info("extra/x").unwrap_err();
    assert!(
        matches!(&err, Error::TargetNotFound(m) if m.contains("not loaded") && m.contains("\"extra\"")),
        "{err}"
    );
    // tough 0.24 drops the whole delegation list the role is in, so its
    // siblings' targets are not found either (python-tuf would find them).
    let err = u.target_info("server/confidant").unwrap_err();
    assert!(
        matches!(&err, Error::TargetNotFound(m) if m.contains("\"server\"")),
        "{err}"
    );
}

#[test]
fn an_expired_role_the_search_visits_before_the_target_is_a_freeze() {
    // python-tuf refuses an expired role as soon as its search visits it,
    // also when the target is found in a later role.
    let fx = Fixture::new();
    let dev = Device::new(&fx, "device");
    fx.delegate_to(&["a", "b"], &["other/*"]);
    fx.repo.add_target("b", "other/x", b"x", None).unwrap();
    for name in ["a", "b"] {
        fx.repo.sign(name, &[&fx.keys.server]).unwrap();
    }
    fx.publish();
    resign(&fx.md(&versioned(&fx, "a")), &[&fx.keys.server], |s| {
        s["expires"] = json!(UnixTime(NOW.0 - 86_400).to_string())
    });
    let err = updater(&dev, &fx, &FileTransport, NOW)
        .target_info("other/x")
        .unwrap_err();
    assert!(
        matches!(&err, Error::Freeze { role, .. } if role == "a"),
        "{err}"
    );
    // A role the search does not visit does not matter, and neither does
    // "a" before its expiry.
    let mut u = updater(&dev, &fx, &FileTransport, NOW);
    assert!(u.target_info("server/confidant").is_ok());
    let mut u = updater(&dev, &fx, &FileTransport, UnixTime(NOW.0 - 2 * 86_400));
    assert!(u.target_info("other/x").is_ok());
}

#[test]
fn a_target_larger_than_a_piece_streams_to_the_slot() {
    // 300 KiB: several of the bridge's 64 KiB pieces, written to staging
    // as they come and checked against the signed length and hashes.
    let fx = Fixture::new();
    let dev = Device::new(&fx, "device");
    dev.install_good(&fx);
    let mut content = script("2.0.0");
    content.extend(std::iter::repeat_n(b'#', 300 * 1024));
    content.push(b'\n');
    fx.release("2.0.0", 2, &content);
    let r = dev.apply(&fx).unwrap().expect("2.0.0 installs");
    assert_eq!(r.version, "2.0.0");
    assert_eq!(dev.run_current(), "confidant 2.0.0");
    assert_eq!(
        std::fs::read(dev.root.join("current/confidant")).unwrap(),
        content
    );
    let mut u = updater(&dev, &fx, &FileTransport, NOW);
    let info = u.target_info("server/confidant").unwrap();
    let mut out = Vec::new();
    u.fetch_target_into(&fx.targets_url(), "server/confidant", &info, &mut out)
        .unwrap();
    assert_eq!(out, content);
}
