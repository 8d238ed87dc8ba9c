//! Interoperability with python-tuf (PyPI `tuf`, the reference
//! implementation), driven through `tests/python_tuf_peer.py`:
//! a repository python-tuf builds is consumed by our client (from disk and
//! over our HTTP transport), and a repository our tooling builds is consumed
//! by python-tuf's ngclient. `scripts/deps/update.sh` installs the peer.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use common::{Device, Fixture, script};
use confidant_firmware_update::counter::FileCounters;
use confidant_firmware_update::install::{self, TrialPolicy};
use confidant_firmware_update::slots::{DefaultHealthCheck, Slots};
use confidant_firmware_update::transport::{DefaultTransport, FileTransport, Transport};
use confidant_firmware_update::updater::{Config, Updater};
use confidant_firmware_update::{Clock, FixedClock, SystemClock};
use serde_json::Value;

const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python_tuf_peer.py");

fn python(args: &[&str]) -> Value {
    let out = Command::new("python3")
        .arg(PEER)
        .args(args)
        .output()
        .expect("python3 runs (scripts/deps/update.sh installs python-tuf)");
    assert!(
        out.status.success(),
        "python-tuf peer {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

fn python_repo(dir: &Path) -> Value {
    python(&["make-repo", &dir.display().to_string()])
}

fn install_from(
    repo: &Path,
    metadata_url: &str,
    targets_url: &str,
    transport: &dyn Transport,
) -> (Slots, install::Release) {
    let root = repo.parent().unwrap().join("device");
    let initial = std::fs::read(repo.join("initial_root.json")).unwrap();
    Updater::init(&root.join("tuf"), &initial).unwrap();
    // python-tuf dates its metadata from the real clock.
    let mut u = Updater::new(
        root.join("tuf"),
        metadata_url,
        transport,
        &SystemClock,
        Config::default(),
    )
    .unwrap();
    let slots = Slots::open(&root).unwrap();
    let release = install::apply(
        &mut u,
        targets_url,
        &slots,
        &mut FileCounters::new(root.join("counters")).unwrap(),
        &DefaultHealthCheck::default(),
        &SystemClock,
        TrialPolicy::default(),
        "server/confidant",
        &mut |_| {},
    )
    .unwrap()
    .expect("installed");
    // Root v1 -> v2 (rotated timestamp key) was followed.
    assert_eq!(u.root().common.version, 2);
    (slots, release)
}

#[test]
fn python_tuf_repository_is_consumed_by_our_client() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let made = python_repo(&repo);
    let (slots, release) = install_from(
        &repo,
        &repo.join("metadata").display().to_string(),
        &repo.join("targets").display().to_string(),
        &FileTransport,
    );
    assert_eq!(release.version, made["custom"]["version"]);
    assert_eq!(release.security_counter, 3);
    let installed = std::fs::read(slots.root().join("current/confidant")).unwrap();
    assert_eq!(
        hex::encode(installed),
        made["content_hex"].as_str().unwrap()
    );
}

#[test]
fn python_tuf_repository_over_http_is_consumed_by_our_client() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    python_repo(&repo);
    let mut server = Command::new("python3")
        .args([PEER, "serve", &repo.display().to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut port = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut port)
        .unwrap();
    let base = format!("http://127.0.0.1:{}", port.trim());
    let result = std::panic::catch_unwind(|| {
        install_from(
            &repo,
            &format!("{base}/metadata"),
            &format!("{base}/targets"),
            &DefaultTransport,
        )
    });
    server.kill().unwrap();
    let _ = server.wait();
    let (_, release) = result.unwrap();
    assert_eq!(release.version, "2.0.0");
}

#[test]
fn our_repository_is_consumed_by_python_tuf_ngclient() {
    // python-tuf checks expiry against the real clock: sign at real time.
    let fx = Fixture::new_at(SystemClock.now());
    // Exercise the chain: 2.0.0 released and root rotated to v2.
    fx.release("2.0.0", 2, &script("2.0.0"));
    let new_ts = common::key(fx.tmp.path(), "timestamp2");
    fx.repo
        .rotate_root(
            &[confidant_firmware_update::repo::RootEdit {
                role: "timestamp".into(),
                add: vec![confidant_firmware_update::crypto::Signer::public_key(&new_ts).clone()],
                remove: vec![],
                threshold: None,
            }],
            fx.now,
            None,
        )
        .unwrap();
    fx.repo.sign("root", &[&fx.keys.root]).unwrap();
    fx.repo
        .publish(&[&fx.keys.snapshot], &[&new_ts], fx.now)
        .unwrap();

    let initial = fx.tmp.path().join("initial_root.json");
    std::fs::write(&initial, &fx.initial_root).unwrap();
    let out = fx.tmp.path().join("dl/confidant");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let custom = python(&[
        "consume",
        &initial.display().to_string(),
        &fx.repo.dir().display().to_string(),
        "server/confidant",
        &out.display().to_string(),
    ]);
    assert_eq!(custom["version"], "2.0.0");
    assert_eq!(custom["security_counter"], 2);
    assert_eq!(std::fs::read(&out).unwrap(), script("2.0.0"));

    // And our own client agrees on the same repository.
    let dev = Device::new(&fx, "device");
    let transport = FileTransport;
    let mut u = Updater::new(
        dev.root.join("tuf"),
        &fx.metadata_url(),
        &transport,
        &FixedClock(fx.now),
        Config::default(),
    )
    .unwrap();
    assert_eq!(
        u.target_info("server/confidant").unwrap().length,
        script("2.0.0").len() as u64
    );
    assert_eq!(u.root().common.version, 2);
}
