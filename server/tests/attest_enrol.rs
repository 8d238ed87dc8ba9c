//! `scripts/run-swtpm` with the built `confidant` against swtpm: the script
//! starts a software TPM and enrols an AK with `confidant attest enrol`;
//! a serving process then quotes with the stored AK and a verifier accepts
//! the quote under the written AK record and PCR policy, across restarts.
//! Needs swtpm and swtpm_setup (skipped, loudly, without them).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use confidant_attest::attester::{Attester, BoundData, TpmAttester, TpmKeys};
use confidant_attest::tpm::EnrolledAk;
use confidant_attest::{
    Binding, Claims, Evidence, EvidenceBundle, ExpectedReportData, Policy, Rejection, UnixTime,
    Verifier,
};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/run-swtpm");
const BIN: &str = env!("CARGO_BIN_EXE_confidant");
const VARS: [&str; 5] = ["TCTI", "AK_RECORD", "AK_KEYS", "PCR_POLICY", "SWTPM_PID"];

fn have_swtpm() -> bool {
    let ok = ["swtpm", "swtpm_setup"]
        .iter()
        .all(|t| Command::new(t).arg("--version").output().is_ok());
    if !ok {
        eprintln!(
            "\n!!!! SKIPPED: swtpm/swtpm_setup not installed; run scripts/deps/attest.sh !!!!\n"
        );
    }
    ok
}

/// Stops the swtpm started into `dir` (by its pid file) when the test ends,
/// passed or not.
struct StopSwtpm(PathBuf);

impl Drop for StopSwtpm {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.0.join("swtpm.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

fn alive(pid: &str) -> bool {
    Path::new("/proc").join(pid).exists()
}

struct Run {
    vars: BTreeMap<String, String>,
    stderr: String,
}

/// Runs the script; its stdout must be exactly the five assignments.
fn run_script(dir: &Path) -> Run {
    let out = Command::new(SCRIPT)
        .arg(dir)
        .arg(BIN)
        .output()
        .expect("run scripts/run-swtpm");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "run-swtpm failed:\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), VARS.len(), "stdout: {stdout}");
    let mut vars = BTreeMap::new();
    for (line, name) in lines.iter().zip(VARS) {
        let quoted = line
            .strip_prefix(&format!("{name}="))
            .unwrap_or_else(|| panic!("expected {name}=…, got {line:?}"));
        let value = quoted
            .strip_prefix('\'')
            .and_then(|v| v.strip_suffix('\''))
            .unwrap_or_else(|| panic!("{name} is not single-quoted: {line:?}"))
            .replace(r"'\''", "'");
        vars.insert(name.to_string(), value);
    }
    Run { vars, stderr }
}

/// What a serving process and a verifier do with the script's output: quote
/// with the stored AK for a binding, appraise against the record and policy.
fn attest(vars: &BTreeMap<String, String>, nonce: u8) -> Result<Claims, Box<Rejection>> {
    let keys = TpmKeys::from_bytes(&std::fs::read(&vars["AK_KEYS"]).unwrap()).expect("ak.keys");
    let ak = EnrolledAk::from_trusted_record(&std::fs::read(&vars["AK_RECORD"]).unwrap())
        .expect("ak.json");
    let policy = Policy::load(Path::new(&vars["PCR_POLICY"])).expect("pcr-policy.toml");
    let binding = Binding {
        nonce: &[nonce; 32],
        tls_spki_der: b"server TLS SPKI",
        hpke_public_key: &[9; 32],
    };
    let mut t = TpmAttester::open(&vars["TCTI"]).expect("open the TPM at TCTI");
    t.use_ak(keys);
    let bundle = t
        .evidence(&BoundData::from_binding(&binding))
        .expect("quote with the stored AK");
    let EvidenceBundle::Tpm { quote, ak_public } = bundle else {
        panic!("not TPM evidence");
    };
    assert_eq!(ak_public.as_bytes(), ak.public());
    Verifier::new(policy)
        .unwrap()
        .appraise(
            &Evidence::Tpm {
                quote: &quote,
                ak: Some(&ak),
            },
            &ExpectedReportData::Exact(binding.tpm_extra_data().to_vec()),
            UnixTime::now(),
        )
        .map(|v| v.into_inner())
        .map_err(Box::new)
}

fn mode(p: &str) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn run_swtpm_enrols_once_and_the_stored_ak_verifies_across_restarts() {
    if !have_swtpm() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tpm");
    let _stop = StopSwtpm(dir.clone());

    // First run: TPM manufactured, swtpm started, AK enrolled.
    let first = run_script(&dir);
    let v = &first.vars;
    let port = v["TCTI"]
        .strip_prefix("swtpm:host=127.0.0.1,port=")
        .expect("TCTI form");
    assert!(port.parse::<u16>().is_ok(), "{}", v["TCTI"]);
    let d = dir.canonicalize().unwrap();
    for (name, file) in [
        ("AK_RECORD", "ak.json"),
        ("AK_KEYS", "ak.keys"),
        ("PCR_POLICY", "pcr-policy.toml"),
    ] {
        assert_eq!(Path::new(&v[name]), d.join(file));
    }
    assert_eq!(mode(d.to_str().unwrap()), 0o700);
    assert_eq!(mode(&v["AK_KEYS"]), 0o600, "ak.keys must be owner-only");
    assert!(alive(&v["SWTPM_PID"]));
    assert!(first.stderr.contains("wrote"), "{}", first.stderr);

    // The policy pins all of PCRs 0-7 and accepts only TPM evidence.
    let policy = Policy::load(Path::new(&v["PCR_POLICY"])).unwrap();
    let pinned: Vec<&str> = policy.tpm.measurements.keys().map(String::as_str).collect();
    assert_eq!(
        pinned,
        [
            "pcr0", "pcr1", "pcr2", "pcr3", "pcr4", "pcr5", "pcr6", "pcr7"
        ]
    );
    assert_eq!(policy.tees, [confidant_attest::TeeKind::Tpm]);

    let claims = attest(v, 1).expect("quote under the enrolled AK verifies");
    assert_eq!(claims.measurements.len(), 8);

    // A quote for one binding is refused for another.
    {
        let keys = TpmKeys::from_bytes(&std::fs::read(&v["AK_KEYS"]).unwrap()).unwrap();
        let ak = EnrolledAk::from_trusted_record(&std::fs::read(&v["AK_RECORD"]).unwrap()).unwrap();
        let mut t = TpmAttester::open(&v["TCTI"]).unwrap();
        t.use_ak(keys);
        let EvidenceBundle::Tpm { quote, .. } = t
            .evidence(&BoundData::from_raw_nonce(&[1; 32]).unwrap())
            .unwrap()
        else {
            panic!("not TPM evidence");
        };
        let verifier = Verifier::new(policy).unwrap();
        let r = verifier.appraise(
            &Evidence::Tpm {
                quote: &quote,
                ak: Some(&ak),
            },
            &ExpectedReportData::Exact(vec![2; 32]),
            UnixTime::now(),
        );
        let rej = r.expect_err("quote accepted for the wrong nonce");
        assert!(rej.authentic);
        assert!(
            rej.reasons.iter().any(|r| r.starts_with("report_data")),
            "{rej:?}"
        );

        // A changed PCR is refused by the policy written at enrolment.
        t.pcr_extend(7, &[7; 32]).unwrap();
    }
    let rej = attest(v, 3).expect_err("changed PCR 7 accepted");
    assert!(
        rej.reasons.iter().any(|r| r.starts_with("tpm.pcr7")),
        "{rej:?}"
    );

    // Second run: the old swtpm is stopped, the new one starts with PCRs
    // reset (startup-clear), and the enrolment is kept and still verifies.
    let record = std::fs::read(&v["AK_RECORD"]).unwrap();
    let keys = std::fs::read(&v["AK_KEYS"]).unwrap();
    let second = run_script(&dir);
    let v2 = &second.vars;
    assert!(!alive(&v["SWTPM_PID"]), "stale swtpm left running");
    assert_ne!(v2["SWTPM_PID"], v["SWTPM_PID"]);
    assert!(
        second.stderr.contains("stopping swtpm"),
        "{}",
        second.stderr
    );
    assert!(
        !second.stderr.contains("enrolling again") && !second.stderr.contains("wrote"),
        "re-enrolled although the enrolment was valid:\n{}",
        second.stderr
    );
    assert_eq!(std::fs::read(&v2["AK_RECORD"]).unwrap(), record);
    assert_eq!(std::fs::read(&v2["AK_KEYS"]).unwrap(), keys);
    let again = attest(v2, 4).expect("stored AK verifies after a swtpm restart");
    assert_eq!(again.measurements, claims.measurements, "PCRs 0-7 changed");

    // Third run with a damaged keys file: enrolled again, and that verifies.
    let mut bad = keys.clone();
    bad.truncate(bad.len() / 2);
    std::fs::write(&v["AK_KEYS"], &bad).unwrap();
    let third = run_script(&dir);
    assert!(third.stderr.contains("enrolling again"), "{}", third.stderr);
    assert_ne!(std::fs::read(&third.vars["AK_RECORD"]).unwrap(), record);
    attest(&third.vars, 5).expect("new enrolment verifies");
    assert_eq!(mode(&third.vars["AK_KEYS"]), 0o600);
}

#[test]
fn run_swtpm_fails_clearly_without_swtpm() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("bin");
    std::fs::create_dir(&empty).unwrap();
    let out = Command::new("/bin/bash")
        .arg(SCRIPT)
        .arg(tmp.path().join("tpm"))
        .arg(BIN)
        .env("PATH", &empty)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "printed assignments on failure");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("swtpm not found"), "{err}");
    assert!(!tmp.path().join("tpm").exists(), "created state anyway");
}
