//! TDX and SGX vectors from ../shared/vectors: verdicts of vectors/README.md.

use confidant_attest::{Evidence, ExpectedReportData, Policy, Rejection, UnixTime, Verifier};

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/vectors");
/// "Today" for the vectors' README: 2026-11-23T00:00:00Z.
const TODAY: UnixTime = UnixTime::from_secs(1_795_392_000);

fn read(p: &str) -> Vec<u8> {
    std::fs::read(format!("{VECTORS}/{p}")).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn tdx(
    v: &Verifier,
    dir: &str,
    at: u64,
) -> Result<confidant_attest::Verified<confidant_attest::Claims>, Rejection> {
    let q = read(&format!("{dir}/quote.bin"));
    let c = read(&format!("{dir}/collateral.json"));
    v.appraise(
        &Evidence::Tdx {
            quote: &q,
            collateral: &c,
        },
        &ExpectedReportData::NotCheckedInspectionOnly,
        UnixTime::from_secs(at),
    )
}

fn verifier() -> Verifier {
    Verifier::new(Policy::default()).unwrap()
}

#[test]
fn dcap_sample_v4_is_up_to_date_at_1751000000() {
    let ok =
        tdx(&verifier(), "tdx/dcap-sample-v4", 1_751_000_000).unwrap_or_else(|e| panic!("{e:?}"));
    let c = ok.get();
    assert_eq!(c.tee, confidant_attest::TeeKind::Tdx);
    for m in ["mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3"] {
        assert_eq!(c.measurements[m].as_bytes().len(), 48);
    }
    let json = serde_json::to_value(c).unwrap();
    assert_eq!(json["detail"]["tcb_status"], "UpToDate");
}

#[test]
fn every_tdx_and_sgx_vector_fails_today_with_an_expired_crl() {
    let v = verifier();
    for dir in [
        "tdx/dcap-sample-v4",
        "tdx/dcap-outdated-v5",
        "tdx/spr-e4-2023",
        "tdx/bad-debug-td",
        "sgx/dcap-sample",
    ] {
        let rej = tdx(&v, dir, TODAY.as_secs()).expect_err(dir);
        assert!(!rej.authentic);
        assert!(
            rej.reasons[0].starts_with("CRL expired"),
            "{dir}: {:?}",
            rej.reasons
        );
    }
}

#[test]
fn outdated_v5_has_no_matching_tcb_level_at_1771500000() {
    let rej = tdx(&verifier(), "tdx/dcap-outdated-v5", 1_771_500_000).expect_err("no TCB level");
    assert!(
        rej.reasons[0].contains("No matching TCB level"),
        "{:?}",
        rej.reasons
    );
}

#[test]
fn spr_e4_passes_chains_and_crls_then_has_no_matching_tcb_level() {
    let rej = tdx(&verifier(), "tdx/spr-e4-2023", 1_688_173_200).expect_err("no TCB level");
    assert!(
        rej.reasons[0].contains("No matching TCB level"),
        "{:?}",
        rej.reasons
    );
}

#[test]
fn debug_td_is_rejected_as_debug() {
    let rej = tdx(&verifier(), "tdx/bad-debug-td", 1_688_173_200).expect_err("debug TD");
    assert!(
        rej.reasons.iter().any(|r| r.contains("debug TD")),
        "{:?}",
        rej.reasons
    );
}

#[test]
fn sgx_quote_is_refused_where_tdx_is_expected_and_verifies_as_sgx() {
    let v = verifier();
    let rej = tdx(&v, "sgx/dcap-sample", 1_751_000_000).expect_err("wrong TEE");
    assert!(
        rej.reasons.iter().any(|r| r.contains("wrong TEE type")),
        "{:?}",
        rej.reasons
    );
    let q = read("sgx/dcap-sample/quote.bin");
    let c = read("sgx/dcap-sample/collateral.json");
    let claims = v
        .authenticate(
            &Evidence::Sgx {
                quote: &q,
                collateral: &c,
            },
            UnixTime::from_secs(1_751_000_000),
        )
        .unwrap();
    let json = serde_json::to_value(&claims).unwrap();
    assert_eq!(
        json["detail"]["tcb_status"],
        "ConfigurationAndSWHardeningNeeded"
    );
    let adv = json["detail"]["advisory_ids"].as_array().unwrap();
    assert!(
        adv.iter().any(|a| a == "INTEL-SA-00289") && adv.iter().any(|a| a == "INTEL-SA-00615"),
        "{adv:?}"
    );
}

#[test]
fn expected_report_data_must_match_for_tdx() {
    let v = verifier();
    let q = read("tdx/dcap-sample-v4/quote.bin");
    let c = read("tdx/dcap-sample-v4/collateral.json");
    let ev = Evidence::Tdx {
        quote: &q,
        collateral: &c,
    };
    let at = UnixTime::from_secs(1_751_000_000);
    let rd = v
        .authenticate(&ev, at)
        .unwrap()
        .report_data
        .as_bytes()
        .to_vec();
    v.verify(&ev, &ExpectedReportData::Exact(rd.clone()), at)
        .unwrap();
    let mut other = rd;
    other[0] ^= 0x80;
    assert!(
        v.verify(&ev, &ExpectedReportData::Exact(other), at)
            .is_err()
    );
}

/// Flip bits across the header, TD report body and signature section
/// (at least 2000 positions, spread over the whole quote): all rejected.
#[test]
fn bit_flips_across_the_tdx_quote_are_rejected() {
    let v = verifier();
    let q = read("tdx/dcap-sample-v4/quote.bin");
    let c = read("tdx/dcap-sample-v4/collateral.json");
    let at = UnixTime::from_secs(1_751_000_000);
    let mut positions: Vec<(usize, u8)> = Vec::new();
    // Every bit of the header (48 bytes) and of the first 64 bytes of the signature section.
    for byte in 0..48 {
        for bit in 0..8 {
            positions.push((byte, bit));
        }
    }
    let sig_start = 48 + 584;
    for byte in sig_start..sig_start + 64 {
        for bit in 0..8 {
            positions.push((byte, bit));
        }
    }
    // A stride over the whole quote, body and certification data included.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while positions.len() < 2400 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        positions.push(((x % q.len() as u64) as usize, (x >> 32) as u8 % 8));
    }
    let mut accepted = Vec::new();
    let mut m = q.clone();
    for &(byte, bit) in &positions {
        m[byte] ^= 1 << bit;
        if v.appraise(
            &Evidence::Tdx {
                quote: &m,
                collateral: &c,
            },
            &ExpectedReportData::NotCheckedInspectionOnly,
            at,
        )
        .is_ok()
        {
            accepted.push((byte, bit));
        }
        m[byte] ^= 1 << bit;
    }
    assert!(accepted.is_empty(), "flips accepted at {accepted:?}");
    // The sample carries 70 bytes of zero padding after its signature data:
    // zeros may be added or removed, anything else may not, and cutting into
    // the signature data is refused.
    let end = q.len() - 70;
    assert!(q[end..].iter().all(|&b| b == 0));
    assert!(tdx_raw(&v, &q[..end], &c, at).is_ok());
    let mut long = q.clone();
    long.push(1);
    assert!(tdx_raw(&v, &long, &c, at).is_err());
    assert!(tdx_raw(&v, &q[..end - 1], &c, at).is_err());
}

fn tdx_raw(
    v: &Verifier,
    q: &[u8],
    c: &[u8],
    at: UnixTime,
) -> Result<confidant_attest::Verified<confidant_attest::Claims>, Rejection> {
    v.appraise(
        &Evidence::Tdx {
            quote: q,
            collateral: c,
        },
        &ExpectedReportData::NotCheckedInspectionOnly,
        at,
    )
}

#[test]
fn smt_platform_is_refused_when_policy_forbids_smt() {
    let strict = Verifier::new(Policy::from_toml("[tdx]\nallow_smt = false\n").unwrap()).unwrap();
    let rej = tdx(&strict, "tdx/dcap-sample-v4", 1_751_000_000).expect_err("SMT refused");
    assert!(rej.authentic);
    assert!(
        rej.reasons.iter().any(|r| r.starts_with("tdx.smt")),
        "{:?}",
        rej.reasons
    );
    tdx(&verifier(), "tdx/dcap-sample-v4", 1_751_000_000).expect("SMT allowed by default");
}
