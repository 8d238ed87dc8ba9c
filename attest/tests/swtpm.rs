//! TPM 2.0 against a real software TPM: swtpm, started per test on a free
//! port in a temp dir, with an EK certificate from a local CA (NOTES-deps.md).
//! `scripts/deps/attest.sh` installs swtpm; without it these tests say so
//! loudly and do nothing.

use std::net::TcpListener;
use std::process::Command;

use confidant_attest::attester::TpmAttester;
use confidant_attest::tpm::{EnrolledAk, Enrolment, TpmQuote};
use confidant_attest::{Binding, Evidence, ExpectedReportData, Policy, UnixTime, Verifier};

struct Swtpm {
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

fn have_swtpm() -> bool {
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

fn start_swtpm() -> Swtpm {
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
    fn attester(&self) -> TpmAttester {
        TpmAttester::open(&format!("swtpm:port={}", self.port)).expect("open swtpm")
    }
    fn ek_ca(&self) -> Vec<u8> {
        let pem = std::fs::read(self.dir.path().join("localca/issuercert.pem")).unwrap();
        confidant_attest::tpm::certificate_der(&pem).expect("EK CA certificate")
    }
}

fn now() -> UnixTime {
    UnixTime::now()
}

fn enrol(t: &mut TpmAttester, ek_ca: &[u8]) -> EnrolledAk {
    let ek_cert = t.ek_certificate().expect("EK certificate in NV");
    let keys = t.create_ak().expect("AK");
    let (enrolment, challenge) = Enrolment::start(
        &ek_cert,
        &[ek_ca.to_vec()],
        &keys.public_bytes().unwrap(),
        now(),
    )
    .expect("enrolment");
    let secret = t
        .activate_credential(&challenge)
        .expect("ActivateCredential");
    enrolment.finish(&secret).expect("AK bound to EK")
}

fn verify(
    v: &Verifier,
    q: &TpmQuote,
    ak: Option<&EnrolledAk>,
    expected: &[u8],
) -> Result<confidant_attest::Verified<confidant_attest::Claims>, confidant_attest::Rejection> {
    v.appraise(
        &Evidence::Tpm { quote: q, ak },
        &ExpectedReportData::Exact(expected.to_vec()),
        now(),
    )
}

#[test]
fn swtpm_enrol_activate_quote_verify_and_reject_tampering() {
    if !have_swtpm() {
        return;
    }
    let tpm = start_swtpm();
    let mut t = tpm.attester();
    let ak = enrol(&mut t, &tpm.ek_ca());
    t.pcr_extend(7, &[0x42; 32]).unwrap();

    let nonce = [7u8; 32];
    let binding = Binding {
        nonce: &nonce,
        tls_spki_der: b"tls",
        hpke_public_key: &[1; 32],
    };
    let extra = binding.tpm_extra_data();
    let q = t.quote(&extra, &[0, 1, 7]).expect("quote");

    // Accepted, with a policy pinning PCR 7.
    let pcr7 = hex::encode(q.pcrs[&7].as_bytes());
    let v = Verifier::new(
        Policy::from_toml(&format!("[tpm]\nmeasurements.pcr7 = [\"{pcr7}\"]\n")).unwrap(),
    )
    .unwrap();
    let ok = verify(&v, &q, Some(&ak), &extra).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(ok.report_data.as_bytes(), &extra[..]);
    assert_eq!(ok.measurements["pcr7"].to_string(), pcr7);

    // Replayed nonce: the same quote checked against a fresh challenge.
    let fresh = Binding {
        nonce: &[8u8; 32],
        ..binding.clone()
    }
    .tpm_extra_data();
    let rej = verify(&v, &q, Some(&ak), &fresh).expect_err("replay");
    assert!(rej.authentic);
    assert!(
        rej.reasons
            .iter()
            .any(|r| r.starts_with("report_data") && r.contains("nonce")),
        "{:?}",
        rej.reasons
    );

    // Tampered PCR value.
    let mut bad = q.clone();
    bad.pcrs.get_mut(&7).unwrap().0[0] ^= 1;
    let rej = verify(&v, &bad, Some(&ak), &extra).expect_err("tampered PCR");
    assert!(
        rej.reasons[0].contains("PCR digest mismatch"),
        "{:?}",
        rej.reasons
    );

    // A quote signed by a different AK (enrolled too, but not this device's record).
    let mut t2 = tpm.attester();
    let ak2 = enrol(&mut t2, &tpm.ek_ca());
    let q2 = t2.quote(&extra, &[0, 1, 7]).unwrap();
    verify(&v, &q2, Some(&ak2), &extra).expect("second AK verifies against its own record");
    let rej = verify(&v, &q2, Some(&ak), &extra).expect_err("different AK");
    assert!(
        rej.reasons[0].contains("does not verify under the enrolled AK"),
        "{:?}",
        rej.reasons
    );

    // An AK that was not bound to the EK: no enrolment record at all...
    let rej = verify(&v, &q, None, &extra).expect_err("unbound AK");
    assert!(
        rej.reasons[0].contains("AK not bound to an EK"),
        "{:?}",
        rej.reasons
    );
    // ...and an enrolment whose activation answer is wrong (the AK is not
    // in the TPM holding that EK) is refused.
    let keys3 = t.create_ak().unwrap();
    let (enrolment, _challenge) = Enrolment::start(
        &t.ek_certificate().unwrap(),
        &[tpm.ek_ca()],
        &keys3.public_bytes().unwrap(),
        now(),
    )
    .unwrap();
    let e = enrolment.finish(&[0u8; 32]).expect_err("wrong activation");
    assert!(e.to_string().contains("AK not bound to the EK"), "{e}");

    // An EK certificate from another CA is refused at enrolment.
    let other = start_swtpm();
    let e = Enrolment::start(
        &t.ek_certificate().unwrap(),
        &[other.ek_ca()],
        &keys3.public_bytes().unwrap(),
        now(),
    )
    .expect_err("EK CA");
    assert!(e.to_string().contains("EK"), "{e}");
}

#[test]
fn swtpm_activation_under_a_different_ek_fails() {
    if !have_swtpm() {
        return;
    }
    // The challenge is made for TPM A's EK and AK; TPM B cannot answer it.
    let a = start_swtpm();
    let b = start_swtpm();
    let mut ta = a.attester();
    let mut tb = b.attester();
    let keys_b = tb.create_ak().unwrap();
    let (_enrolment, challenge) = Enrolment::start(
        &ta.ek_certificate().unwrap(),
        &[a.ek_ca()],
        &keys_b.public_bytes().unwrap(),
        now(),
    )
    .unwrap();
    assert!(
        tb.activate_credential(&challenge).is_err(),
        "TPM B must not recover A's credential"
    );
    let _ = ta.create_ak();
}

#[test]
fn swtpm_enrolled_ak_record_round_trips() {
    if !have_swtpm() {
        return;
    }
    let tpm = start_swtpm();
    let mut t = tpm.attester();
    let ak = enrol(&mut t, &tpm.ek_ca());
    let back = EnrolledAk::from_trusted_record(&ak.to_record()).unwrap();
    assert_eq!(back, ak);
}
