//! Plain awslabs/tough (the library the client is built on), with its own
//! file transport and the system clock, loads a repository made by our
//! tooling — root rotation, thresholds, delegations, consistent snapshots —
//! and finds the target we signed: the repositories are usable by any tough
//! user, not only through our client's layer.
//!
//! It does not download it: under consistent snapshots tough 0.24 requests
//! `<sha256>.server/confidant`, prefixing the whole target path, where TUF
//! 5.7.3 (and python-tuf, and our client's transport) use
//! `server/<sha256>.confidant`.

mod common;

use common::{Fixture, script};
use confidant_firmware_update::crypto::Signer;
use confidant_firmware_update::repo::RootEdit;
use confidant_firmware_update::{Clock, SystemClock};
use tough::{RepositoryLoader, TargetName};

#[test]
fn tough_reads_a_repository_made_by_our_tooling() {
    // tough checks expiry against the system clock.
    let fx = Fixture::new_at(SystemClock.now());
    fx.release("2.0.0", 2, &script("2.0.0"));
    let new_ts = common::key(fx.tmp.path(), "timestamp2");
    fx.repo
        .rotate_root(
            &[RootEdit {
                role: "timestamp".into(),
                add: vec![new_ts.public_key().clone()],
                remove: vec![fx.keys.timestamp.public_key().key_id().unwrap()],
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

    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let found = rt.block_on(async {
        let metadata = url::Url::from_directory_path(fx.repo.metadata_dir()).unwrap();
        let targets = url::Url::from_directory_path(fx.repo.targets_dir()).unwrap();
        let repo = RepositoryLoader::new(&fx.initial_root, metadata, targets)
            .load()
            .await
            .expect("tough loads our repository");
        assert_eq!(repo.root().signed.version.get(), 2);
        let name = TargetName::new("server/confidant").unwrap();
        let t = repo
            .targets()
            .signed
            .find_target(&name, false)
            .expect("tough finds the delegated target");
        (t.length, hex::encode(&t.hashes.sha256))
    });
    let content = script("2.0.0");
    assert_eq!(
        found,
        (
            content.len() as u64,
            confidant_firmware_update::crypto::sha256_hex(&content)
        )
    );
}
