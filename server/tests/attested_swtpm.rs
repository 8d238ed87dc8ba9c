//! The attested flow with a real software TPM (swtpm, started by
//! `scripts/run-swtpm`): the AK enrolled against the EK by credential
//! activation, PCRs 0-7 pinned in the key broker's and the client's policy.
//! The key broker releases the model key to the TPM-attested server;
//! `confidant verify` accepts it; a policy pinning a different PCR value is
//! refused by `confidant verify` and by `confidant proxy` (the OpenAI SDK
//! gets the 502).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::flow::{BIN, Proc, ok, run, spawn_reading, wait_verified};
use common::{free_addr, model_path, python, workspace};

/// `NAME='value'` lines of scripts/run-swtpm.
fn var(out: &str, name: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .map(|v| v.trim_matches('\'').to_owned())
        .unwrap_or_else(|| panic!("{name} missing in {out}"))
}

/// Kills the swtpm the script started.
struct Swtpm(String);

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(&self.0).status();
    }
}

#[test]
fn attested_serving_with_swtpm_and_pcr_policy() {
    let dir = tempfile::tempdir().unwrap();
    let o = |f: &str| dir.path().join(f).to_str().unwrap().to_owned();
    let out = Command::new(workspace().join("scripts/run-swtpm"))
        .arg(o("tpm"))
        .arg(BIN)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scripts/run-swtpm: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let vars = String::from_utf8(out.stdout).unwrap();
    let _swtpm = Swtpm(var(&vars, "SWTPM_PID"));
    let (tcti, ak_record, ak_keys, pcr_policy) = (
        var(&vars, "TCTI"),
        var(&vars, "AK_RECORD"),
        var(&vars, "AK_KEYS"),
        var(&vars, "PCR_POLICY"),
    );
    let plain_sha = confidant_client::receipt::sha256_hex(&std::fs::read(model_path()).unwrap());

    ok(&run(&["kek", "generate", "--out", &o("owner.kek")]));
    ok(&run(&[
        "model",
        "encrypt",
        "--in",
        model_path().to_str().unwrap(),
        "--out",
        &o("m.cmdl"),
        "--key-id",
        "smollm2",
        "--kek",
        &format!("file:{}", o("owner.kek")),
        "--name",
        "SmolLM2-135M-Instruct",
    ]));
    ok(&run(&[
        "kbs",
        "model",
        "add",
        "--key-id",
        "smollm2",
        "--wrapped",
        &o("m.cmdl.key"),
        "--policy",
        &pcr_policy,
        "--db",
        &o("kbs.db"),
    ]));
    ok(&run(&[
        "kbs",
        "ak",
        "add",
        "--record",
        &ak_record,
        "--db",
        &o("kbs.db"),
    ]));
    // No --insecure-allow-dev-attester: only the enrolled TPM gets the key.
    let (_kbs, kbs_url) = spawn_reading(
        &[
            "kbs",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--db",
            &o("kbs.db"),
            "--kek",
            &format!("file:{}", o("owner.kek")),
        ],
        "confidant kbs listening on ",
        &dir.path().join("kbs.log"),
    );
    let addr = free_addr();
    let log = dir.path().join("serve.log");
    let _server = Proc(
        Command::new(BIN)
            .args(["serve", "--model", &o("m.cmdl"), "--kbs-url", &kbs_url])
            .args([
                "--attester",
                "tpm",
                "--tpm-tcti",
                &tcti,
                "--tpm-ak-keys",
                &ak_keys,
            ])
            .args(["--listen", &addr.to_string(), "--state-dir", &o("state")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let url = format!("https://{addr}");
    let policy = std::fs::read_to_string(&pcr_policy).unwrap();
    std::fs::write(
        o("client.toml"),
        format!("{policy}\n[client]\ntpm_ak_records = [\"{ak_record}\"]\nmodel_sha256 = [\"{plain_sha}\"]\n"),
    )
    .unwrap();
    // The same policy with PCR 0 pinned to another value.
    let wrong = policy
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("measurements.pcr0") || l.trim_start().starts_with("pcr0")
            {
                let (k, _) = l.split_once('=').unwrap();
                format!("{k}= [\"{}\"]", "ab".repeat(32))
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_ne!(wrong, policy, "the PCR policy pins pcr0: {policy}");
    std::fs::write(
        o("wrong.toml"),
        format!("{wrong}\n[client]\ntpm_ak_records = [\"{ak_record}\"]\n"),
    )
    .unwrap();
    wait_verified(
        &url,
        Path::new(&o("client.toml")),
        &log,
        Duration::from_secs(240),
    );

    let json = ok(&run(&[
        "verify",
        &url,
        "--policy",
        &o("client.toml"),
        "--json",
    ]));
    let r: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(r["verdict"], "accepted", "{r:#}");
    assert_eq!(r["tee"], "tpm");
    assert_eq!(r["model"]["sha256"], plain_sha.as_str());
    assert!(r["measurements"]["pcr0"].is_string(), "{r:#}");

    let out = run(&["verify", &url, "--policy", &o("wrong.toml"), "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        r["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["rule"] == "tpm.pcr0" && x["pass"] == false),
        "{r:#}"
    );

    // The OpenAI SDK through a proxy with the wrong measurement: 502.
    let a = free_addr();
    let (_p, purl) = spawn_reading(
        &[
            "proxy",
            "--upstream",
            &url,
            "--policy",
            &o("wrong.toml"),
            "--listen",
            &a.to_string(),
        ],
        "confidant proxy listening on ",
        &dir.path().join("proxy.log"),
    );
    let env = [
        ("CONFIDANT_BASE_URL", format!("{purl}/v1")),
        ("CONFIDANT_MODEL_ID", "SmolLM2-135M-Instruct".to_owned()),
    ];
    python("attested_proxy.py", &["refused"], &env);
}
