//! TPM 2.0 structures: TPMS_ATTEST, TPMT_SIGNATURE, TPMT_PUBLIC.
#![no_main]

use confidant_attest::tpm::wire;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = wire::parse_attest(data);
    let _ = wire::parse_signature(data);
    let _ = wire::parse_public(data);
    let _ = confidant_attest::EvidenceBundle::from_json(data);
});
