//! A software TPM (swtpm) per test, on a free port in a temp dir, with an
//! EK certificate from a local CA kept in that dir (NOTES-deps.md). Mirrors
//! attest/tests/swtpm.rs.

use std::net::TcpListener;
use std::process::Command;

use confidant_attest::attester::TpmAttester;
use confidant_attest::tpm::{EnrolledAk, Enrolment};

pub struct Swtpm {
    dir: tempfile::TempDir,
    port: u16,
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        // Stop only the swtpm this test started, by its pid file.
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("swtpm.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

pub fn have_swtpm() -> bool {
    let ok = Command::new("swtpm").arg("--version").output().is_ok()
        && Command::new("swtpm_setup")
            .arg("--version")
            .output()
            .is_ok();
    if !ok {
        eprintln!(
            "\n!!!! SKIPPED: swtpm/swtpm_setup not installed; run scripts/deps/attest.sh !!!!\n"
        );
    }
    ok
}

fn free_port_pair() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if p < 65000 && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

pub fn start() -> Swtpm {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let dd = d.display();
    std::fs::create_dir_all(d.join("localca")).unwrap();
    std::fs::create_dir_all(d.join("state")).unwrap();
    std::fs::write(
        d.join("swtpm-localca.conf"),
        format!(
            "statedir = {dd}/localca\nsigningkey = {dd}/localca/signkey.pem\n\
             issuercert = {dd}/localca/issuercert.pem\ncertserial = {dd}/localca/certserial\n"
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("swtpm-localca.options"),
        "--platform-manufacturer Confidant\n--platform-version 2.1\n--platform-model swtpm\n",
    )
    .unwrap();
    std::fs::write(
        d.join("swtpm_setup.conf"),
        format!(
            "create_certs_tool = /usr/bin/swtpm_localca\n\
             create_certs_tool_config = {dd}/swtpm-localca.conf\n\
             create_certs_tool_options = {dd}/swtpm-localca.options\n\
             active_pcr_banks = sha256\n"
        ),
    )
    .unwrap();
    let out = Command::new("swtpm_setup")
        .args(["--tpm2", "--tpmstate"])
        .arg(d.join("state"))
        .arg("--config")
        .arg(d.join("swtpm_setup.conf"))
        .args([
            "--createek",
            "--create-ek-cert",
            "--create-platform-cert",
            "--pcr-banks",
            "sha256",
            "--overwrite",
        ])
        .output()
        .expect("swtpm_setup");
    assert!(
        out.status.success(),
        "swtpm_setup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for _ in 0..5 {
        let port = free_port_pair();
        let st = Command::new("swtpm")
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={dd}/state"))
            .args(["--flags", "startup-clear", "--server"])
            .arg(format!("type=tcp,port={port}"))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={}", port + 1))
            .arg("--daemon")
            .arg("--pid")
            .arg(format!("file={dd}/swtpm.pid"))
            .status()
            .expect("swtpm");
        if st.success() {
            return Swtpm { dir, port };
        }
    }
    panic!("could not start swtpm");
}

impl Swtpm {
    pub fn attester(&self) -> TpmAttester {
        TpmAttester::open(&format!("swtpm:port={}", self.port)).expect("open swtpm")
    }

    pub fn ek_ca(&self) -> Vec<u8> {
        let pem = std::fs::read(self.dir.path().join("localca/issuercert.pem")).unwrap();
        confidant_attest::tpm::certificate_der(&pem).expect("EK CA certificate")
    }

    /// Enrols a new AK of `t` by credential activation (the broker's side
    /// and the device's side, as an enrolment service would run them).
    pub fn enrol(&self, t: &mut TpmAttester) -> EnrolledAk {
        let ek_cert = t.ek_certificate().expect("EK certificate in NV");
        let keys = t.create_ak().expect("AK");
        let (enrolment, challenge) = Enrolment::start(
            &ek_cert,
            &[self.ek_ca()],
            &keys.public_bytes().unwrap(),
            super::now(),
        )
        .expect("enrolment");
        let secret = t
            .activate_credential(&challenge)
            .expect("ActivateCredential");
        enrolment.finish(&secret).expect("AK bound to EK")
    }
}
