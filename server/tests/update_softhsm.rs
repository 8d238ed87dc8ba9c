//! `confidant update repo …` with root, targets and a delegated role's keys
//! in a real PKCS#11 token (SoftHSM2, initialised by the test in a temporary
//! directory), snapshot and timestamp keys in files. The repository is read
//! by our client (firmware-update's `Updater`) and by python-tuf's ngclient
//! (`firmware-update/tests/python_tuf_peer.py`); metadata signed by a token
//! key the root does not list is refused by the publisher and by both
//! clients.
//!
//! Peers: SoftHSM2 and OpenSC's pkcs11-tool (`scripts/deps/keys.sh`),
//! python-tuf 7.0.0 (`scripts/deps/update.sh`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::flow::{BIN, failed, ok};
use confidant_firmware_update::crypto::{FileSigner, Signer, canonical_json, sha256_hex};
use confidant_firmware_update::transport::FileTransport;
use confidant_firmware_update::updater::{Config, Updater};
use confidant_firmware_update::{Error, SystemClock};
use serde_json::{Value, json};

const SOFTHSM: &str = "/usr/lib/softhsm/libsofthsm2.so";
const TOKEN: &str = "tuf-repo";
const PIN: &str = "2468";
const TARGET: &str = "server/confidant";

fn peer() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware-update/tests/python_tuf_peer.py")
}

fn uri(object: &str) -> String {
    format!("pkcs11:token={TOKEN};object={object}?module-path={SOFTHSM}")
}

struct Token {
    conf: PathBuf,
}

impl Token {
    fn init(dir: &Path) -> Self {
        std::fs::create_dir(dir.join("tokens")).unwrap();
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nslots.removable = false\nlog.level = ERROR\n",
                dir.join("tokens").display()
            ),
        )
        .unwrap();
        let out = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", TOKEN])
            .args(["--pin", PIN, "--so-pin", "1357"])
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .expect("softhsm2-util runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { conf }
    }

    /// `confidant …` with the token's configuration and PIN.
    fn confidant(&self, args: &[&str]) -> Output {
        self.confidant_with_pin(args, PIN)
    }

    fn confidant_with_pin(&self, args: &[&str], pin: &str) -> Output {
        Command::new(BIN)
            .args(args)
            .env("SOFTHSM2_CONF", &self.conf)
            .env("CONFIDANT_PKCS11_PIN", pin)
            .output()
            .expect("confidant runs")
    }

    /// A P-256 key pair made by an independent tool (OpenSC's pkcs11-tool).
    fn pkcs11_tool_p256(&self, label: &str, id: &str) {
        let out = Command::new("pkcs11-tool")
            .args(["--module", SOFTHSM, "--token-label", TOKEN, "--login"])
            .args(["--pin", PIN, "--keypairgen", "--key-type", "EC:prime256v1"])
            .args(["--label", label, "--id", id])
            .env("SOFTHSM2_CONF", &self.conf)
            .output()
            .expect("pkcs11-tool runs (scripts/deps/keys.sh installs opensc)");
        assert!(
            out.status.success(),
            "pkcs11-tool: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn keyids(root: &Value, role: &str) -> Vec<String> {
    root["signed"]["roles"][role]["keyids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// Our client, from trusted root v1: the target's bytes, or the error.
fn our_client(repo: &Path, device: &Path) -> Result<Vec<u8>, Error> {
    let md = device.join("tuf");
    Updater::init(
        &md,
        &std::fs::read(repo.join("metadata/1.root.json")).unwrap(),
    )
    .unwrap();
    let url = repo.join("metadata").display().to_string();
    let mut u = Updater::new(&md, &url, &FileTransport, &SystemClock, Config::default())?;
    let info = u.target_info(TARGET)?;
    u.fetch_target(&repo.join("targets").display().to_string(), TARGET, &info)
}

/// python-tuf's ngclient over HTTP, from trusted root v1.
fn python_tuf(repo: &Path, out: &Path) -> Output {
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    Command::new("python3")
        .arg(peer())
        .args(["consume", s(&repo.join("metadata/1.root.json")), s(repo)])
        .args([TARGET, s(out)])
        .output()
        .expect("python3 runs (scripts/deps/update.sh installs python-tuf)")
}

/// Re-signs a published snapshot or timestamp with a file key after `edit`.
fn resign(path: &Path, key: &FileSigner, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut env = read_json(path);
    edit(&mut env["signed"]);
    let sig = key.sign(&canonical_json(&env["signed"]).unwrap()).unwrap();
    env["signatures"] =
        json!([{"keyid": key.public_key().key_id().unwrap(), "sig": hex::encode(sig)}]);
    let bytes = serde_json::to_vec_pretty(&env).unwrap();
    std::fs::write(path, &bytes).unwrap();
    bytes
}

#[test]
fn repository_keys_in_softhsm2_are_trusted_by_our_client_and_python_tuf() {
    if !Path::new(SOFTHSM).exists() {
        eprintln!("SKIPPED update_softhsm: {SOFTHSM} missing (scripts/deps/keys.sh)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let token = Token::init(d);
    let repo = d.join("repo");

    // Token keys: root and a stray key made by our CLI (P-256), the
    // delegated role's key by our CLI (Ed25519, CKM_EDDSA), the targets key
    // by pkcs11-tool (P-256).
    let root_hsm = uri("root-hsm");
    let rogue = uri("rogue");
    let server_ed = uri("server-ed");
    // Looked up by label and id, as a key made elsewhere is often named.
    let targets_hsm =
        format!("pkcs11:token={TOKEN};object=targets-hsm;id=%02?module-path={SOFTHSM}");
    let root_hsm_id = ok(&token.confidant(&[
        "update", "repo", "keygen", "--pkcs11", &root_hsm, "--algo", "p256",
    ]));
    let rogue_id = ok(&token.confidant(&["update", "repo", "keygen", "--pkcs11", &rogue]));
    ok(&token.confidant(&[
        "update", "repo", "keygen", "--pkcs11", &server_ed, "--algo", "ed25519",
    ]));
    let refused = failed(&token.confidant(&["update", "repo", "keygen", "--pkcs11", &rogue]));
    assert!(refused.contains("already exists"), "{refused}");
    token.pkcs11_tool_p256("targets-hsm", "02");

    // File keys: the second root key, snapshot and timestamp (online).
    let mut files = Vec::new();
    for name in ["root", "snapshot", "timestamp"] {
        let p = d.join(format!("{name}.pem"));
        ok(&token.confidant(&["update", "repo", "keygen", "--out", s(&p)]));
        files.push(p);
    }
    let [root_pem, snap_pem, ts_pem] = [&files[0], &files[1], &files[2]];

    // init: root threshold 2 = one token key + one file key.
    ok(&token.confidant(&[
        "update",
        "repo",
        "init",
        "--repo",
        s(&repo),
        "--root-key",
        &root_hsm,
        "--root-key",
        s(root_pem),
        "--root-threshold",
        "2",
        "--targets-key",
        &targets_hsm,
        "--snapshot-key",
        s(snap_pem),
        "--timestamp-key",
        s(ts_pem),
    ]));
    let staged_root = read_json(&repo.join("staged/root.json"));
    let root_ids = keyids(&staged_root, "root");
    assert_eq!(root_ids.len(), 2);
    assert!(
        root_ids.contains(&root_hsm_id.trim().to_owned()),
        "{root_ids:?}"
    );
    let targets_key = &staged_root["signed"]["keys"][&keyids(&staged_root, "targets")[0]];
    assert_eq!(targets_key["scheme"], "ecdsa-sha2-nistp256");

    ok(&token.confidant(&[
        "update",
        "repo",
        "delegate",
        "--repo",
        s(&repo),
        "--name",
        "server",
        "--path",
        "server/*",
        "--key",
        &server_ed,
        "--terminating",
    ]));
    let artifact = d.join("confidant-1.0.0");
    std::fs::write(
        &artifact,
        b"#!/bin/sh\necho confidant 1.0.0 signed in a token\n",
    )
    .unwrap();
    ok(&token.confidant(&[
        "update",
        "repo",
        "add-target",
        "--repo",
        s(&repo),
        "--role",
        "server",
        "--name",
        TARGET,
        "--file",
        s(&artifact),
        "--version",
        "1.0.0",
        "--security-counter",
        "1",
    ]));

    // One key holder at a time. With one of the two root keys, publishing
    // is refused.
    let publish = [
        "update",
        "repo",
        "publish",
        "--repo",
        s(&repo),
        "--snapshot-key",
        s(snap_pem),
        "--timestamp-key",
        s(ts_pem),
    ];
    let sign = |role: &str, key: &str| {
        ok(&token.confidant(&[
            "update",
            "repo",
            "sign",
            "--repo",
            s(&repo),
            "--role",
            role,
            "--key",
            key,
        ]))
    };
    sign("root", s(root_pem));
    sign("targets", &targets_hsm);
    sign("server", &server_ed);
    let refused = failed(&token.confidant(&publish));
    assert!(refused.contains("threshold"), "{refused}");

    // A wrong PIN is reported without the PIN.
    let wrong = failed(&token.confidant_with_pin(
        &[
            "update",
            "repo",
            "sign",
            "--repo",
            s(&repo),
            "--role",
            "root",
            "--key",
            &root_hsm,
        ],
        "97531",
    ));
    assert!(wrong.contains("PIN"), "{wrong}");
    assert!(!wrong.contains("97531"), "{wrong}");

    sign("root", &root_hsm);
    ok(&token.confidant(&publish));
    let published_root = read_json(&repo.join("metadata/1.root.json"));
    assert_eq!(published_root["signatures"].as_array().unwrap().len(), 2);

    // Our client and python-tuf agree on the repository.
    let content = std::fs::read(&artifact).unwrap();
    let got = our_client(&repo, &d.join("device-1")).expect("our client accepts the repository");
    assert_eq!(got, content);
    let dl = d.join("dl/confidant");
    let out = python_tuf(&repo, &dl);
    let stdout = ok(&out);
    let custom: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(custom["version"], "1.0.0");
    assert_eq!(std::fs::read(&dl).unwrap(), content);

    // A targets role signed by a token key the root does not list: the
    // publisher refuses it ...
    let evil = d.join("evil");
    std::fs::write(&evil, b"#!/bin/sh\necho not from the targets key\n").unwrap();
    ok(&token.confidant(&[
        "update",
        "repo",
        "add-target",
        "--repo",
        s(&repo),
        "--role",
        "targets",
        "--name",
        "evil/payload",
        "--file",
        s(&evil),
        "--version",
        "6.6.6",
        "--security-counter",
        "9",
    ]));
    sign("targets", &rogue);
    let refused = failed(&token.confidant(&publish));
    assert!(refused.contains("threshold"), "{refused}");

    // ... and so do both clients when a mirror serves it anyway, with a
    // snapshot and timestamp correctly signed by the online keys.
    let md = repo.join("metadata");
    std::fs::copy(repo.join("staged/targets.json"), md.join("2.targets.json")).unwrap();
    let snap_key = FileSigner::from_pem_file(snap_pem).unwrap();
    let ts_key = FileSigner::from_pem_file(ts_pem).unwrap();
    std::fs::copy(md.join("1.snapshot.json"), md.join("2.snapshot.json")).unwrap();
    let snap_bytes = resign(&md.join("2.snapshot.json"), &snap_key, |sg| {
        sg["version"] = json!(2);
        sg["meta"]["targets.json"]["version"] = json!(2);
    });
    resign(&md.join("timestamp.json"), &ts_key, |sg| {
        sg["version"] = json!(2);
        sg["meta"]["snapshot.json"] = json!({
            "version": 2,
            "length": snap_bytes.len(),
            "hashes": {"sha256": sha256_hex(&snap_bytes)},
        });
    });
    match our_client(&repo, &d.join("device-2")) {
        Err(Error::Threshold { role, valid: 0, .. }) => assert_eq!(role, "targets"),
        other => panic!("expected a threshold refusal of targets, got {other:?}"),
    }
    let refused = failed(&python_tuf(&repo, &d.join("dl2/confidant")));
    assert!(refused.contains("targets"), "{refused}");

    // rotate-root names token keys by URI too: public halves from the token.
    let old_targets_id = keyids(&staged_root, "targets")[0].clone();
    std::fs::remove_file(repo.join("staged/targets.json")).unwrap();
    ok(&token.confidant(&[
        "update",
        "repo",
        "rotate-root",
        "--repo",
        s(&repo),
        "--role",
        "targets",
        "--add-key",
        &rogue,
        "--remove-key",
        &targets_hsm,
    ]));
    let rotated = read_json(&repo.join("staged/root.json"));
    assert_eq!(keyids(&rotated, "targets"), [rogue_id.trim().to_owned()]);
    assert!(rotated["signed"]["keys"].get(&old_targets_id).is_none());
}
