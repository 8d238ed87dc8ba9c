//! Policy file parsing and the default policy's refusals.

use confidant_attest::{Evidence, ExpectedReportData, Policy, UnixTime, Verifier};

#[test]
fn unknown_keys_bad_lengths_and_bad_statuses_are_errors() {
    for bad in [
        "[snp]\nallow_debugg = true\n",
        "tees = [\"sev\"]\n",
        "[snp]\nmeasurements.measurement = [\"00\"]\n",
        "[snp]\nmeasurements.mrtd = [\"00\"]\n",
        "[tdx]\naccepted_tcb_statuses = [\"Revoked\"]\n",
        "[tdx]\nmeasurements.rtmr4 = []\n",
        "[tpm]\nmeasurements.pcr24 = []\n",
        "[tpm]\nmeasurements.pcr7 = [\"zz\"]\n",
        "[snp]\nmax_vmpl = 4\n",
        "tees = [\"insecure-dev\"]\n",
        "[tpm]\nek_ca_files = [\"ca.pem\"]\n",
        "not toml",
    ] {
        assert!(Policy::from_toml(bad).is_err(), "accepted: {bad}");
    }
    let p = Policy::from_toml(&format!(
        "tees = [\"snp\"]\n[snp]\nmeasurements.measurement = [\"{}\"]\nmin_tcb = {{ snp = 8 }}\n\
         [tdx]\naccepted_tcb_statuses = [\"UpToDate\", \"SWHardeningNeeded\"]\n\
         [tpm]\nmeasurements.pcr7 = [\"{}\"]\n",
        "ab".repeat(48),
        "cd".repeat(32)
    ))
    .unwrap();
    assert_eq!(p.snp.min_tcb.snp, 8);
    assert_eq!(p.tdx.accepted_tcb_statuses.len(), 2);
}

#[test]
fn default_policy_refuses_the_insecure_dev_attester() {
    let rd = [1u8; 64];
    let ev = Evidence::InsecureDev { report_data: &rd };
    let at = UnixTime::from_secs(1_795_392_000);
    let v = Verifier::new(Policy::default()).unwrap();
    let rej = v
        .appraise(&ev, &ExpectedReportData::Exact(rd.to_vec()), at)
        .unwrap_err();
    assert!(
        rej.reasons.iter().any(|r| r.starts_with("tee.accepted")),
        "{:?}",
        rej.reasons
    );
    let dev = Verifier::new(Policy::default().insecure_allow_dev_attester()).unwrap();
    dev.verify(&ev, &ExpectedReportData::Exact(rd.to_vec()), at)
        .unwrap();
}

#[test]
fn challenge_age_is_enforced() {
    let rd = [1u8; 64];
    let ev = Evidence::InsecureDev { report_data: &rd };
    let v = Verifier::new(
        Policy::from_toml("[freshness]\nmax_age_seconds = 60\n")
            .unwrap()
            .insecure_allow_dev_attester(),
    )
    .unwrap();
    let issued = UnixTime::from_secs(1000);
    let ch = ExpectedReportData::Challenge {
        report_data: rd.to_vec(),
        issued_at: issued,
    };
    v.verify(&ev, &ch, UnixTime::from_secs(1060)).unwrap();
    let e = v.verify(&ev, &ch, UnixTime::from_secs(1061)).unwrap_err();
    assert!(e.to_string().contains("freshness"), "{e}");
}
