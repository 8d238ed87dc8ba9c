//! `confidant kbs serve --device-policy` and `confidant kbs device
//! list|revoke|log` through the built binary, with a device enrolled from a
//! software TPM (swtpm, its own EK CA): `device list` shows the device and
//! its last check-in, `device revoke` makes the broker refuse it.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use confidant_attest::Hex;
use confidant_attest::attester::TpmAttester;
use confidant_keys::kbs::client::{ClientConfig, KbsClient};
use confidant_keys::kbs::device::client::{enrol, sign_statement};
use confidant_keys::kbs::device::{CheckIn, DeviceId, Statement};

const BIN: &str = env!("CARGO_BIN_EXE_confidant");

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run(args: &[&str], db: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--db")
        .arg(db)
        .env_remove("CONFIDANT_KBS_DB")
        .output()
        .expect("confidant runs")
}

/// Children killed by their own pid on drop.
struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// swtpm with its own local EK CA (NOTES-deps.md), stopped by pid on drop.
struct Swtpm {
    dir: tempfile::TempDir,
    port: u16,
}
impl Drop for Swtpm {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("swtpm.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

fn swtpm() -> Option<Swtpm> {
    if Command::new("swtpm_setup")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("\n!!!! SKIPPED: swtpm not installed; run scripts/deps/edge.sh !!!!\n");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let dd = d.display();
    std::fs::create_dir_all(d.join("localca")).unwrap();
    std::fs::write(
        d.join("ca.conf"),
        format!(
            "statedir = {dd}/localca\nsigningkey = {dd}/localca/signkey.pem\n\
             issuercert = {dd}/localca/issuercert.pem\ncertserial = {dd}/localca/certserial\n"
        ),
    )
    .unwrap();
    std::fs::write(d.join("ca.options"), "--platform-manufacturer Confidant\n").unwrap();
    std::fs::write(
        d.join("setup.conf"),
        format!(
            "create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = {dd}/ca.conf\n\
             create_certs_tool_options = {dd}/ca.options\nactive_pcr_banks = sha256\n"
        ),
    )
    .unwrap();
    std::fs::create_dir_all(d.join("state")).unwrap();
    let st = Command::new("swtpm_setup")
        .args(["--tpm2", "--tpmstate"])
        .arg(d.join("state"))
        .arg("--config")
        .arg(d.join("setup.conf"))
        .args([
            "--createek",
            "--create-ek-cert",
            "--pcr-banks",
            "sha256",
            "--overwrite",
        ])
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if port >= 65000 || TcpListener::bind(("127.0.0.1", port + 1)).is_err() {
            continue;
        }
        let ok = Command::new("swtpm")
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={dd}/state"))
            .args(["--flags", "startup-clear", "--server"])
            .arg(format!("type=tcp,port={port}"))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={}", port + 1))
            .args(["--daemon", "--pid"])
            .arg(format!("file={dd}/swtpm.pid"))
            .status()
            .unwrap()
            .success();
        if ok {
            return Some(Swtpm { dir, port });
        }
    }
}

#[test]
fn kbs_device_cli_list_checkin_revoke_with_swtpm() {
    let Some(tpm) = swtpm() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = d.join("kbs.db");
    ok(&Command::new(BIN)
        .args(["kek", "generate", "--out"])
        .arg(d.join("owner.kek"))
        .output()
        .unwrap());
    std::fs::copy(
        tpm.dir.path().join("localca/issuercert.pem"),
        d.join("ek-ca.pem"),
    )
    .unwrap();
    std::fs::write(
        d.join("device-policy.toml"),
        "tees = [\"tpm\"]\n[tpm]\nek_ca_files = [\"ek-ca.pem\"]\n",
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["kbs", "serve", "--listen", "127.0.0.1:0", "--kek"])
        .arg(format!("file:{}", d.join("owner.kek").display()))
        .arg("--db")
        .arg(&db)
        .arg("--device-policy")
        .arg(d.join("device-policy.toml"))
        .env_remove("CONFIDANT_KBS_DB")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _serving = Killed(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("confidant kbs listening on ")
        .unwrap_or_else(|| panic!("unexpected {line:?}"))
        .to_owned();

    let out = ok(&run(&["kbs", "device", "list"], &db));
    assert_eq!(out.lines().count(), 1, "only the header: {out}");

    let client = KbsClient::new(&ClientConfig::new(&url)).unwrap();
    let mut t = TpmAttester::open(&format!("swtpm:port={}", tpm.port)).unwrap();
    let id = DeviceId::new("sensor-7").unwrap();
    let e = enrol(&client, &mut t, &id).unwrap();
    let out = ok(&run(&["kbs", "device", "list"], &db));
    let row = out.lines().nth(1).expect("the device");
    assert!(
        row.starts_with("sensor-7") && row.contains("active") && row.contains("never"),
        "{row}"
    );
    assert!(row.contains(&hex::encode(&e.ak_name)[..16]), "{row}");

    let st = Statement::Checkin(CheckIn {
        device_id: id.clone(),
        seq: 1,
        at: 1_795_000_000,
        agent_version: "0.1.0".into(),
        model_digest: Some(Hex(vec![0xab; 32])),
        slot_state: Some("edge-agent/confidant-edge: a 0.1.0".into()),
        health: "ok".into(),
        peak_rss_kib: Some(190_000),
    });
    client
        .device_submit(&st, &sign_statement(&mut t, &st).unwrap())
        .unwrap();
    let out = ok(&run(&["kbs", "device", "list"], &db));
    let row = out.lines().nth(1).unwrap();
    assert!(
        !row.contains("never")
            && row.contains("0.1.0")
            && row.contains("abababababab")
            && row.ends_with("ok"),
        "{row}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&run(&["kbs", "device", "list", "--json"], &db))).unwrap();
    assert_eq!(json[0]["checkin"]["peak_rss_kib"], 190_000);

    ok(&run(
        &["kbs", "device", "revoke", "--device-id", "sensor-7"],
        &db,
    ));
    let out = ok(&run(&["kbs", "device", "list"], &db));
    assert!(out.lines().nth(1).unwrap().contains("REVOKED"), "{out}");
    let st2 = Statement::Checkin(CheckIn {
        seq: 2,
        ..match st {
            Statement::Checkin(c) => c,
            Statement::Record(_) => unreachable!(),
        }
    });
    let r = client.device_submit(&st2, &sign_statement(&mut t, &st2).unwrap());
    assert!(
        matches!(&r, Err(confidant_keys::Error::KbsRefused { code, status: 403, .. }) if code == "device_revoked"),
        "{r:?}"
    );
    let out = run(&["kbs", "device", "revoke", "--device-id", "nobody"], &db);
    assert!(!out.status.success());
    let log = ok(&run(&["kbs", "device", "log"], &db));
    for reason in [
        "device_revoked",
        "revoked",
        "checked_in",
        "enrolled",
        "challenged",
    ] {
        assert!(log.contains(reason), "{reason} missing from\n{log}");
    }
}
