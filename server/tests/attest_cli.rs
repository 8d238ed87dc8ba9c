//! `confidant attest verify` on the real vectors: exit codes and `--json` shape.

use std::process::Command;

const V: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/vectors");
const TODAY: &str = "1795392000"; // 2026-11-23

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_confidant"))
        .arg("attest")
        .args(args)
        .output()
        .expect("run confidant");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(args: &[&str]) -> (i32, serde_json::Value) {
    let mut a = args.to_vec();
    a.push("--json");
    let (code, out, err) = run(&a);
    let v: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out} {err}"));
    // The shape is a contract.
    assert!(
        v["verdict"] == "accepted" || v["verdict"] == "rejected",
        "{v}"
    );
    assert!(v["authentic"].is_boolean());
    assert!(v["reasons"].is_array());
    assert!(v.get("claims").is_some());
    (code, v)
}

fn p(rel: &str) -> String {
    format!("{V}/{rel}")
}

fn snp(dir: &str, cert: &str, at: &str) -> Vec<String> {
    vec![
        "verify".into(),
        "--kind".into(),
        "snp".into(),
        "--report".into(),
        p(&format!("{dir}/report.bin")),
        "--cert".into(),
        p(&format!("{dir}/{cert}")),
        "--at".into(),
        at.into(),
    ]
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(|s| s.as_str()).collect()
}

#[test]
fn snp_vectors_get_their_verdicts_through_the_cli() {
    for dir in ["snp/milan-virtee", "snp/milan-trustee"] {
        let (code, v) = json(&refs(&snp(dir, "vcek.der", TODAY)));
        assert_eq!(code, 0, "{dir}: {v}");
        assert_eq!(v["verdict"], "accepted");
        assert_eq!(v["claims"]["tee"], "snp");
        assert_eq!(
            v["claims"]["measurements"]["measurement"]
                .as_str()
                .unwrap()
                .len(),
            96
        );
    }
    // Debug guest: authentic, rejected by the default policy.
    let (code, v) = json(&refs(&snp("snp/milan-gosevguest", "vcek.der", TODAY)));
    assert_eq!(code, 1);
    assert_eq!(v["authentic"], true);
    assert!(
        v["reasons"][0].as_str().unwrap().starts_with("snp.debug"),
        "{v}"
    );
    // ...accepted by a policy that allows debug.
    let dir = tempfile::tempdir().unwrap();
    let pol = dir.path().join("policy.toml");
    std::fs::write(&pol, "[snp]\nallow_debug = true\n").unwrap();
    let mut a = snp("snp/milan-gosevguest", "vcek.der", TODAY);
    a.extend(["--policy".into(), pol.display().to_string()]);
    assert_eq!(json(&refs(&a)).0, 0);
    // VLEK: expired today, valid on 2025-01-01.
    let mut a = snp("snp/milan-vlek-trustee", "vlek.der", TODAY);
    a.extend(["--chain".into(), p("snp/roots/asvk_ark_milan.pem")]);
    let (code, v) = json(&refs(&a));
    assert_eq!(code, 1);
    assert!(
        v["reasons"][0].as_str().unwrap().contains("VLEK expired"),
        "{v}"
    );
    let mut a = snp("snp/milan-vlek-trustee", "vlek.der", "1735689600");
    a.extend(["--chain".into(), p("snp/roots/asvk_ark_milan.pem")]);
    assert_eq!(json(&refs(&a)).0, 0);
    // Forged VCEK.
    let (code, v) = json(&refs(&snp(
        "snp/milan-virtee",
        "../bad/vcek-invalid-new.der",
        TODAY,
    )));
    assert_eq!(code, 1);
    assert_eq!(v["authentic"], false);
}

#[test]
fn report_data_flag_is_enforced() {
    let good = "d447b55d";
    let (_, v) = json(&refs(&snp("snp/milan-virtee", "vcek.der", TODAY)));
    let rd = v["claims"]["report_data"].as_str().unwrap().to_string();
    assert!(rd.starts_with(good));
    let mut a = snp("snp/milan-virtee", "vcek.der", TODAY);
    a.extend(["--report-data".into(), rd.clone()]);
    assert_eq!(json(&refs(&a)).0, 0);
    let mut other = rd.into_bytes();
    other[0] = if other[0] == b'0' { b'1' } else { b'0' };
    let mut a = snp("snp/milan-virtee", "vcek.der", TODAY);
    a.extend(["--report-data".into(), String::from_utf8(other).unwrap()]);
    let (code, v) = json(&refs(&a));
    assert_eq!(code, 1);
    assert!(
        v["reasons"][0].as_str().unwrap().starts_with("report_data"),
        "{v}"
    );
}

fn tdx(kind: &str, dir: &str, at: &str) -> (i32, serde_json::Value) {
    json(&[
        "verify",
        "--kind",
        kind,
        "--quote",
        &p(&format!("{dir}/quote.bin")),
        "--collateral",
        &p(&format!("{dir}/collateral.json")),
        "--at",
        at,
    ])
}

#[test]
fn tdx_and_sgx_vectors_get_their_verdicts_through_the_cli() {
    let (code, v) = tdx("tdx", "tdx/dcap-sample-v4", "1751000000");
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["claims"]["detail"]["tcb_status"], "UpToDate");
    assert!(v["claims"]["measurements"]["mrtd"].is_string());
    for dir in [
        "tdx/dcap-sample-v4",
        "tdx/dcap-outdated-v5",
        "tdx/spr-e4-2023",
        "tdx/bad-debug-td",
    ] {
        let (code, v) = tdx("tdx", dir, TODAY);
        assert_eq!(code, 1);
        assert!(
            v["reasons"][0].as_str().unwrap().starts_with("CRL expired"),
            "{dir}: {v}"
        );
    }
    let (code, v) = tdx("sgx", "sgx/dcap-sample", TODAY);
    assert_eq!(code, 1);
    assert!(
        v["reasons"][0].as_str().unwrap().starts_with("CRL expired"),
        "{v}"
    );
    let (code, v) = tdx("tdx", "tdx/dcap-outdated-v5", "1771500000");
    assert_eq!(code, 1);
    assert!(
        v["reasons"][0]
            .as_str()
            .unwrap()
            .contains("No matching TCB level"),
        "{v}"
    );
    let (code, v) = tdx("tdx", "tdx/spr-e4-2023", "1688173200");
    assert_eq!(code, 1);
    assert!(
        v["reasons"][0]
            .as_str()
            .unwrap()
            .contains("No matching TCB level"),
        "{v}"
    );
    let (code, v) = tdx("tdx", "tdx/bad-debug-td", "1688173200");
    assert_eq!(code, 1);
    assert!(
        v["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().contains("debug TD")),
        "{v}"
    );
    let (code, v) = tdx("tdx", "sgx/dcap-sample", "1751000000");
    assert_eq!(code, 1);
    assert!(
        v["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().contains("wrong TEE type")),
        "{v}"
    );
}

#[test]
fn usage_errors_exit_2() {
    // Unreadable file.
    let (code, _, err) = run(&[
        "verify",
        "--kind",
        "snp",
        "--report",
        "/nonexistent",
        "--cert",
        "/nonexistent",
    ]);
    assert_eq!(code, 2, "{err}");
    // Missing flag for the kind (clap).
    let (code, _, _) = run(&[
        "verify",
        "--kind",
        "tdx",
        "--quote",
        &p("tdx/dcap-sample-v4/quote.bin"),
    ]);
    assert_eq!(code, 2);
    // Bad hex.
    let mut a = snp("snp/milan-virtee", "vcek.der", TODAY);
    a.extend(["--report-data".into(), "zz".into()]);
    assert_eq!(run(&refs(&a)).0, 2);
    // Unknown kind.
    assert_eq!(run(&["verify", "--kind", "sev"]).0, 2);
}

#[test]
fn malformed_evidence_is_a_rejection_not_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.bin");
    std::fs::write(&junk, b"not a report").unwrap();
    let (code, v) = json(&[
        "verify",
        "--kind",
        "snp",
        "--report",
        junk.to_str().unwrap(),
        "--cert",
        &p("snp/milan-virtee/vcek.der"),
    ]);
    assert_eq!(code, 1);
    assert_eq!(v["authentic"], false);
    let (code, v) = json(&[
        "verify",
        "--kind",
        "tpm",
        "--evidence",
        junk.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert_eq!(v["verdict"], "rejected");
}

#[test]
fn insecure_dev_evidence_is_produced_and_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ev.json");
    let (code, _, err) = run(&[
        "evidence",
        "--nonce",
        "00112233",
        "--attester",
        "insecure-dev",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("proves nothing"));
    let ev: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(ev["kind"], "insecure-dev");
    assert!(ev["report_data"].as_str().unwrap().starts_with("00112233"));
    assert_eq!(run(&["evidence", "--nonce", "xyz"]).0, 2);
}
