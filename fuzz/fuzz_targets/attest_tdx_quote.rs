//! DCAP quote framing and verification of arbitrary bytes.
#![no_main]

use confidant_attest::tdx;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = tdx::quote_layout(data);
    // A collateral that parses but is empty: verification must fail cleanly.
    let _ = tdx::authenticate(data, b"{}", confidant_attest::UnixTime::from_secs(1_751_000_000));
});
