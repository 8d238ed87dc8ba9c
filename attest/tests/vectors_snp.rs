//! SEV-SNP vectors from ../shared/vectors/snp: verdicts of vectors/README.md.

use confidant_attest::snp::SnpEvidence;
use confidant_attest::{Evidence, ExpectedReportData, Policy, UnixTime, Verifier};

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/vectors/snp");
/// "Today" for the vectors' README: 2026-11-23T00:00:00Z.
const TODAY: UnixTime = UnixTime::from_secs(1_795_392_000);

fn read(p: &str) -> Vec<u8> {
    std::fs::read(format!("{VECTORS}/{p}")).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn verifier() -> Verifier {
    Verifier::new(Policy::default()).expect("built-in roots verify")
}

fn appraise(
    v: &Verifier,
    report: &[u8],
    vek: &[u8],
    chain: Option<&[u8]>,
    at: UnixTime,
) -> Result<confidant_attest::Verified<confidant_attest::Claims>, confidant_attest::Rejection> {
    v.appraise(
        &Evidence::Snp(SnpEvidence { report, vek, chain }),
        &ExpectedReportData::NotCheckedInspectionOnly,
        at,
    )
}

#[test]
fn milan_vcek_reports_are_accepted_today() {
    let v = verifier();
    for dir in ["milan-virtee", "milan-trustee"] {
        let r = appraise(
            &v,
            &read(&format!("{dir}/report.bin")),
            &read(&format!("{dir}/vcek.der")),
            None,
            TODAY,
        );
        let c = r.unwrap_or_else(|e| panic!("{dir}: {e:?}"));
        assert!(!c.debug);
        assert_eq!(c.measurements["measurement"].as_bytes().len(), 48);
    }
}

#[test]
fn gosevguest_debug_guest_is_authentic_but_refused_by_default() {
    let v = verifier();
    let rej = appraise(
        &v,
        &read("milan-gosevguest/report.bin"),
        &read("milan-gosevguest/vcek.der"),
        None,
        TODAY,
    )
    .expect_err("debug guest must be refused");
    assert!(rej.authentic);
    assert!(
        rej.reasons.iter().any(|r| r.starts_with("snp.debug")),
        "{:?}",
        rej.reasons
    );
    let lax = Verifier::new(Policy::from_toml("[snp]\nallow_debug = true\n").unwrap()).unwrap();
    let ok = appraise(
        &lax,
        &read("milan-gosevguest/report.bin"),
        &read("milan-gosevguest/vcek.der"),
        None,
        TODAY,
    )
    .expect("accepted when debug is explicitly allowed");
    assert!(ok.debug);
}

#[test]
fn vlek_report_is_expired_today_and_valid_on_2025_01_01() {
    let v = verifier();
    let chain = read("roots/asvk_ark_milan.pem");
    let report = read("milan-vlek-trustee/report.bin");
    let vlek = read("milan-vlek-trustee/vlek.der");
    let rej = appraise(&v, &report, &vlek, Some(&chain), TODAY).expect_err("VLEK expired");
    assert!(!rej.authentic);
    assert!(
        rej.reasons[0].contains("VLEK expired at 2025-12-10"),
        "{:?}",
        rej.reasons
    );
    let ok = appraise(
        &v,
        &report,
        &vlek,
        Some(&chain),
        UnixTime::from_secs(1_735_689_600),
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(ok.get().tee, confidant_attest::TeeKind::Snp);
    // Without the ASVK the VLEK cannot be chained.
    assert!(appraise(&v, &report, &vlek, None, UnixTime::from_secs(1_735_689_600)).is_err());
}

#[test]
fn forged_vceks_are_rejected() {
    let v = verifier();
    for bad in ["bad/vcek-invalid-legacy.der", "bad/vcek-invalid-new.der"] {
        for dir in ["milan-virtee", "milan-trustee", "milan-gosevguest"] {
            let rej = appraise(
                &v,
                &read(&format!("{dir}/report.bin")),
                &read(bad),
                None,
                TODAY,
            )
            .expect_err("forged VCEK");
            assert!(!rej.authentic, "{bad} with {dir}");
        }
    }
}

#[test]
fn every_report_paired_with_another_vcek_is_rejected() {
    let v = verifier();
    let dirs = ["milan-virtee", "milan-trustee", "milan-gosevguest"];
    for a in dirs {
        for b in dirs {
            if a == b {
                continue;
            }
            let rej = appraise(
                &v,
                &read(&format!("{a}/report.bin")),
                &read(&format!("{b}/vcek.der")),
                None,
                TODAY,
            )
            .expect_err("wrong VCEK");
            assert!(!rej.authentic, "{a} report with {b} VCEK");
        }
        // And the VLEK.
        let chain = read("roots/asvk_ark_milan.pem");
        assert!(
            appraise(
                &v,
                &read(&format!("{a}/report.bin")),
                &read("milan-vlek-trustee/vlek.der"),
                Some(&chain),
                UnixTime::from_secs(1_735_689_600)
            )
            .is_err()
        );
    }
}

#[test]
fn milan_report_against_the_genoa_chain_is_rejected() {
    let v = verifier();
    let mut genoa = read("roots/ask_genoa.pem");
    genoa.extend_from_slice(&read("roots/ark_genoa.pem"));
    let rej = appraise(
        &v,
        &read("milan-virtee/report.bin"),
        &read("milan-virtee/vcek.der"),
        Some(&genoa),
        TODAY,
    )
    .expect_err("Genoa chain");
    assert!(!rej.authentic);
    assert!(rej.reasons[0].contains("Genoa"), "{:?}", rej.reasons);
    // The Milan chain given explicitly works.
    let mut milan = read("roots/ask_milan.pem");
    milan.extend_from_slice(&read("roots/ark_milan.pem"));
    appraise(
        &v,
        &read("milan-virtee/report.bin"),
        &read("milan-virtee/vcek.der"),
        Some(&milan),
        TODAY,
    )
    .unwrap();
    // Milan ASK under the Genoa ARK is not a chain.
    let mut mixed = read("roots/ask_milan.pem");
    mixed.extend_from_slice(&read("roots/ark_genoa.pem"));
    assert!(
        appraise(
            &v,
            &read("milan-virtee/report.bin"),
            &read("milan-virtee/vcek.der"),
            Some(&mixed),
            TODAY
        )
        .is_err()
    );
}

#[test]
fn expected_report_data_must_match_exactly() {
    for (dir, prefix) in [
        ("milan-gosevguest", "0102030405"),
        ("milan-trustee", "ec6c52d7"),
        ("milan-virtee", "d447b55d"),
    ] {
        let report = read(&format!("{dir}/report.bin"));
        let vcek = read(&format!("{dir}/vcek.der"));
        let rd = report[0x50..0x90].to_vec();
        assert!(hex::encode(&rd).starts_with(prefix));
        let lax = Verifier::new(Policy::from_toml("[snp]\nallow_debug = true\n").unwrap()).unwrap();
        let ev = Evidence::Snp(SnpEvidence {
            report: &report,
            vek: &vcek,
            chain: None,
        });
        lax.verify(&ev, &ExpectedReportData::Exact(rd.clone()), TODAY)
            .unwrap();
        let mut other = rd.clone();
        other[63] ^= 1;
        let e = lax
            .verify(&ev, &ExpectedReportData::Exact(other), TODAY)
            .unwrap_err();
        assert!(e.to_string().contains("report_data"), "{e}");
        assert!(
            lax.verify(&ev, &ExpectedReportData::Exact(rd[..32].to_vec()), TODAY)
                .is_err()
        );
    }
}

#[test]
fn every_single_bit_flip_in_every_report_is_rejected() {
    let v = Verifier::new(Policy::from_toml("[snp]\nallow_debug = true\n").unwrap()).unwrap();
    let chain = read("roots/asvk_ark_milan.pem");
    let cases: [(&str, &str, Option<&[u8]>, UnixTime); 4] = [
        (
            "milan-virtee/report.bin",
            "milan-virtee/vcek.der",
            None,
            TODAY,
        ),
        (
            "milan-trustee/report.bin",
            "milan-trustee/vcek.der",
            None,
            TODAY,
        ),
        (
            "milan-gosevguest/report.bin",
            "milan-gosevguest/vcek.der",
            None,
            TODAY,
        ),
        (
            "milan-vlek-trustee/report.bin",
            "milan-vlek-trustee/vlek.der",
            Some(&chain),
            UnixTime::from_secs(1_735_689_600),
        ),
    ];
    for (rp, vp, chain, at) in cases {
        let report = read(rp);
        let vek = read(vp);
        assert_eq!(report.len(), 1184);
        appraise(&v, &report, &vek, chain, at).unwrap_or_else(|e| panic!("{rp} unmodified: {e:?}"));
        let mut accepted = Vec::new();
        let mut m = report.clone();
        for byte in 0..report.len() {
            for bit in 0..8 {
                m[byte] ^= 1 << bit;
                if appraise(&v, &m, &vek, chain, at).is_ok() {
                    accepted.push((byte, bit));
                }
                m[byte] ^= 1 << bit;
            }
        }
        assert!(accepted.is_empty(), "{rp}: flips accepted at {accepted:?}");
    }
}

#[test]
fn truncated_and_oversized_reports_are_rejected_without_panic() {
    let v = verifier();
    let report = read("milan-virtee/report.bin");
    let vcek = read("milan-virtee/vcek.der");
    for n in [0, 1, 0x2A0, 1183] {
        assert!(appraise(&v, &report[..n], &vcek, None, TODAY).is_err());
    }
    let mut long = report.clone();
    long.push(0);
    assert!(appraise(&v, &long, &vcek, None, TODAY).is_err());
    assert!(appraise(&v, &report, &vcek[..100], None, TODAY).is_err());
}

#[test]
fn parser_agrees_with_the_sev_crate() {
    use sev::parser::ByteParser;
    for dir in [
        "milan-virtee",
        "milan-trustee",
        "milan-gosevguest",
        "milan-vlek-trustee",
    ] {
        let raw = read(&format!("{dir}/report.bin"));
        let ours = confidant_attest::snp::SnpReport::parse(&raw).unwrap();
        let theirs = sev::firmware::guest::AttestationReport::from_bytes(&raw).unwrap();
        assert_eq!(ours.measurement(), &theirs.measurement[..]);
        assert_eq!(ours.report_data(), &theirs.report_data[..]);
        assert_eq!(ours.chip_id(), &theirs.chip_id[..]);
        assert_eq!(ours.vmpl(), theirs.vmpl);
        assert_eq!(ours.policy(), u64::from(theirs.policy));
    }
}
