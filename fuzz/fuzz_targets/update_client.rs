//! The TUF client (tough plus our layer: trusted copies, the equal-version
//! rule, error classification, persistence) on untrusted repository bytes:
//! nothing may panic, hang or allocate without bound, and nothing unverified
//! may come out.
//!
//! A valid repository (root v1 and v2, a delegated `server` role, one
//! target) is built once. The first input byte picks a file (low six bits),
//! whether the rest of the input replaces it or edits it in place as
//! (offset, byte) triples (bit 6), and whether the client starts from a fresh
//! metadata directory or from one that already trusts the repository
//! (bit 7); the client then refreshes and downloads the target.
#![no_main]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use confidant_firmware_update::crypto::{FileSigner, Signer};
use confidant_firmware_update::repo::{DelegationSpec, Repo, RoleSpec, RootEdit};
use confidant_firmware_update::transport::{FetchError, Transport};
use confidant_firmware_update::updater::{Config, Updater};
use confidant_firmware_update::{FixedClock, UnixTime};
use libfuzzer_sys::fuzz_target;

const NOW: UnixTime = UnixTime(1_893_456_000);
const TARGET: &str = "server/confidant";

/// Repository files by path relative to the metadata or targets base.
#[derive(Debug, Clone)]
struct Memory(Arc<HashMap<String, Vec<u8>>>);

impl Transport for Memory {
    fn fetch(&self, url: &str, max_len: u64) -> Result<Vec<u8>, FetchError> {
        match self.0.get(url) {
            None => Err(FetchError::NotFound),
            Some(b) if b.len() as u64 > max_len => Err(FetchError::TooLarge),
            Some(b) => Ok(b.clone()),
        }
    }

    fn clone_box(&self) -> Box<dyn Transport> {
        Box::new(self.clone())
    }
}

struct Fixture {
    files: HashMap<String, Vec<u8>>,
    /// Names of the files an input may replace.
    names: Vec<String>,
    initial_root: Vec<u8>,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let key = |n: &str| {
            let p = dir.path().join(format!("{n}.pem"));
            std::fs::write(&p, FileSigner::generate_ed25519_pem().unwrap()).unwrap();
            FileSigner::from_pem_file(&p).unwrap()
        };
        let (root, online, server, root2) =
            (key("root"), key("online"), key("server"), key("root2"));
        let spec = |k: &FileSigner| RoleSpec {
            keys: vec![k.public_key().clone()],
            threshold: 1,
        };
        let roles: BTreeMap<String, RoleSpec> = [
            ("root", spec(&root)),
            ("targets", spec(&online)),
            ("snapshot", spec(&online)),
            ("timestamp", spec(&online)),
        ]
        .map(|(r, s)| (r.to_owned(), s))
        .into();
        let repo = Repo::init(dir.path().join("repo"), &roles, NOW).unwrap();
        repo.delegate(
            "targets",
            &DelegationSpec {
                name: "server".into(),
                paths: vec!["server/*".into()],
                keys: vec![server.public_key().clone()],
                threshold: 1,
                terminating: true,
            },
            NOW,
        )
        .unwrap();
        let custom = serde_json::json!({"version": "1.0.0", "security_counter": 1});
        repo.add_target("server", TARGET, CONTENT, Some(custom))
            .unwrap();
        repo.sign("root", &[&root]).unwrap();
        repo.sign("targets", &[&online]).unwrap();
        repo.sign("server", &[&server]).unwrap();
        repo.publish(&[&online], &[&online], NOW).unwrap();
        repo.rotate_root(
            &[RootEdit {
                role: "root".into(),
                add: vec![root2.public_key().clone()],
                remove: vec![],
                threshold: None,
            }],
            NOW,
            None,
        )
        .unwrap();
        repo.sign("root", &[&root, &root2]).unwrap();
        repo.publish(&[&online], &[&online], NOW).unwrap();

        let mut files = HashMap::new();
        for (base, d) in [("md", repo.metadata_dir()), ("tg", repo.targets_dir())] {
            let mut stack = vec![d.clone()];
            while let Some(p) = stack.pop() {
                for e in std::fs::read_dir(&p).unwrap().flatten() {
                    let path = e.path();
                    if path.is_dir() {
                        stack.push(path);
                    } else {
                        let rel = path.strip_prefix(&d).unwrap().display().to_string();
                        files.insert(format!("mem://{base}/{rel}"), std::fs::read(&path).unwrap());
                    }
                }
            }
        }
        let mut names: Vec<String> = files.keys().cloned().collect();
        names.sort();
        let initial_root = files["mem://md/1.root.json"].clone();
        Fixture {
            files,
            names,
            initial_root,
            _dir: dir,
        }
    })
}

const CONTENT: &[u8] = b"#!/bin/sh\necho 1\n";

/// Refreshes and downloads; whatever comes out must be what was signed.
fn run(files: HashMap<String, Vec<u8>>, md: &std::path::Path) {
    let transport = Memory(Arc::new(files));
    let Ok(mut u) = Updater::new(
        md,
        "mem://md",
        &transport,
        &FixedClock(NOW),
        Config::default(),
    ) else {
        return;
    };
    let Ok(info) = u.target_info(TARGET) else {
        return;
    };
    if let Ok(bytes) = u.fetch_target("mem://tg", TARGET, &info) {
        assert_eq!(bytes, CONTENT, "unsigned content came out");
    }
}

fuzz_target!(|data: &[u8]| {
    let fx = fixture();
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let name = &fx.names[usize::from(pick & 0x3f) % fx.names.len()];
    let mut files = fx.files.clone();
    let replaced = if pick & 0x40 != 0 {
        // Edit the genuine file: (offset u16 LE, byte) triples, so short
        // inputs reach the checks behind the JSON parser.
        let mut b = fx.files[name].clone();
        for e in rest.chunks_exact(3) {
            let at = usize::from(u16::from_le_bytes([e[0], e[1]]));
            if let Some(slot) = b.get_mut(at) {
                *slot = e[2];
            } else {
                b.push(e[2]);
            }
        }
        b
    } else {
        rest.to_vec()
    };
    files.insert(name.clone(), replaced);

    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("tuf");
    Updater::init(&md, &fx.initial_root).unwrap();
    if pick & 0x80 != 0 {
        // A device that already trusts the genuine repository (trusted
        // copies, rollback checks and the equal-version rule are in play).
        run(fx.files.clone(), &md);
    }
    run(files, &md);
});
