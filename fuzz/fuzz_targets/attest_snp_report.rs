//! SEV-SNP report parsing and full verification of arbitrary bytes.
#![no_main]

use std::sync::OnceLock;

use confidant_attest::snp::{SnpEvidence, SnpReport};
use confidant_attest::{Evidence, ExpectedReportData, Policy, UnixTime, Verifier};
use libfuzzer_sys::fuzz_target;

static VERIFIER: OnceLock<Verifier> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = SnpReport::parse(data) {
        let _ = (r.measurement(), r.cpuid(), r.mit_vectors(), r.signature_rs());
    }
    // Split into report and certificate: exercises the X.509/extension code too.
    let v = VERIFIER.get_or_init(|| Verifier::new(Policy::default()).expect("roots"));
    let split = data.len().min(1184);
    let (report, cert) = data.split_at(split);
    let _ = v.appraise(
        &Evidence::Snp(SnpEvidence { report, vek: cert, chain: None }),
        &ExpectedReportData::NotCheckedInspectionOnly,
        UnixTime::from_secs(1_795_392_000),
    );
});
