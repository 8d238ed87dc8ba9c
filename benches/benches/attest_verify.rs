//! Verification latency per evidence kind (targets: SNP <= 1 ms, TDX <= 5 ms,
//! TPM <= 1 ms). Run: `cargo bench -p confidant-benches --bench attest_verify`.
//!
//! * SNP: milan-virtee report + VCEK, chain cached by the verifier (the ARK,
//!   ASK and VCEK signatures are checked once; dates, report signature and
//!   endorsement every time).
//! * TDX: dcap-sample-v4 quote with its collateral, everything every time.
//! * TPM: a P-256 AK quote over 8 SHA-256 PCRs, signed in software with the
//!   exact TPMS_ATTEST/TPMT_SIGNATURE encoding a TPM produces (swtpm is not
//!   started in a bench), verified against an enrolled-AK record.
//! * Peer: the `sev` crate verifying the same SNP vector (full chain each call).

use std::collections::BTreeMap;

use confidant_attest::snp::SnpEvidence;
use confidant_attest::tpm::{EnrolledAk, TpmQuote};
use confidant_attest::{Evidence, ExpectedReportData, Hex, Policy, UnixTime, Verifier};
use criterion::{Criterion, criterion_group, criterion_main};
use sha2::Digest;

const V: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/vectors");

fn read(p: &str) -> Vec<u8> {
    std::fs::read(format!("{V}/{p}")).expect("vector")
}

fn tpm_fixture() -> (TpmQuote, EnrolledAk, Vec<u8>) {
    use p256::ecdsa::signature::Signer;
    let sk = p256::ecdsa::SigningKey::from_slice(&[0x42; 32]).unwrap();
    let pt = sk.verifying_key().to_encoded_point(false);
    // TPMT_PUBLIC: ECC, nameAlg SHA-256, restricted|sign|fixedTPM|fixedParent|
    // sensitiveDataOrigin|userWithAuth, empty policy, NULL sym, ECDSA-SHA256,
    // NIST P-256, NULL kdf, unique (x, y).
    let mut public = Vec::new();
    public.extend_from_slice(&0x0023u16.to_be_bytes());
    public.extend_from_slice(&0x000Bu16.to_be_bytes());
    public.extend_from_slice(&0x0005_0072u32.to_be_bytes());
    public.extend_from_slice(&0u16.to_be_bytes());
    public.extend_from_slice(&0x0010u16.to_be_bytes());
    public.extend_from_slice(&0x0018u16.to_be_bytes());
    public.extend_from_slice(&0x000Bu16.to_be_bytes());
    public.extend_from_slice(&0x0003u16.to_be_bytes());
    public.extend_from_slice(&0x0010u16.to_be_bytes());
    for c in [pt.x().unwrap(), pt.y().unwrap()] {
        public.extend_from_slice(&32u16.to_be_bytes());
        public.extend_from_slice(c);
    }
    let mut name = 0x000Bu16.to_be_bytes().to_vec();
    name.extend_from_slice(&sha2::Sha256::digest(&public));
    let record = serde_json::json!({
        "ak_public": hex::encode(&public),
        "ak_name": hex::encode(&name),
        "ek_cert_sha256": hex::encode([0u8; 32]),
    });
    let ak = EnrolledAk::from_trusted_record(record.to_string().as_bytes()).unwrap();

    let nonce = [7u8; 32];
    let mut pcrs = BTreeMap::new();
    let mut h = sha2::Sha256::new();
    for i in 0..8u8 {
        let v = [i; 32];
        h.update(v);
        pcrs.insert(i, Hex(v.to_vec()));
    }
    let digest = h.finalize();
    let mut a = Vec::new();
    a.extend_from_slice(&0xff54_4347u32.to_be_bytes());
    a.extend_from_slice(&0x8018u16.to_be_bytes());
    a.extend_from_slice(&(name.len() as u16).to_be_bytes());
    a.extend_from_slice(&name);
    a.extend_from_slice(&32u16.to_be_bytes());
    a.extend_from_slice(&nonce);
    a.extend_from_slice(&1234u64.to_be_bytes());
    a.extend_from_slice(&1u32.to_be_bytes());
    a.extend_from_slice(&0u32.to_be_bytes());
    a.push(1);
    a.extend_from_slice(&0x2019_1023_0016_3636u64.to_be_bytes());
    a.extend_from_slice(&1u32.to_be_bytes());
    a.extend_from_slice(&0x000Bu16.to_be_bytes());
    a.extend_from_slice(&[3, 0xff, 0, 0]);
    a.extend_from_slice(&32u16.to_be_bytes());
    a.extend_from_slice(&digest);
    let sig: p256::ecdsa::Signature = sk.sign(&a);
    let (r, s) = sig.split_bytes();
    let mut t = Vec::new();
    t.extend_from_slice(&0x0018u16.to_be_bytes());
    t.extend_from_slice(&0x000Bu16.to_be_bytes());
    for c in [r, s] {
        t.extend_from_slice(&32u16.to_be_bytes());
        t.extend_from_slice(&c);
    }
    (
        TpmQuote {
            attest: Hex(a),
            signature: Hex(t),
            pcrs,
        },
        ak,
        nonce.to_vec(),
    )
}

fn bench(c: &mut Criterion) {
    let v = Verifier::new(Policy::default()).unwrap();
    let today = UnixTime::from_secs(1_795_392_000);

    let report = read("snp/milan-virtee/report.bin");
    let vcek = read("snp/milan-virtee/vcek.der");
    let rd = report[0x50..0x90].to_vec();
    let snp = Evidence::Snp(SnpEvidence {
        report: &report,
        vek: &vcek,
        chain: None,
    });
    let exp = ExpectedReportData::Exact(rd);
    v.verify(&snp, &exp, today).expect("SNP vector verifies");
    c.bench_function("attest_verify/snp_cached_chain", |b| {
        b.iter(|| v.verify(&snp, &exp, today).unwrap())
    });

    // Peer, same run: the `sev` crate's own chain + report verification
    // (RustCrypto P-384, chain re-verified on every call, no dates, no
    // endorsement checks).
    {
        use sev::certs::snp::{Chain, Verifiable, builtin::milan, ca};
        use sev::parser::ByteParser;
        let chain = Chain {
            ca: ca::Chain {
                ark: milan::ark().unwrap(),
                ask: milan::ask().unwrap(),
            },
            vek: sev::certs::snp::Certificate::from_der(&vcek).unwrap(),
        };
        let r = sev::firmware::guest::AttestationReport::from_bytes(&report).unwrap();
        (&chain, &r)
            .verify()
            .expect("sev crate verifies the vector");
        c.bench_function("attest_verify/peer_sev_crate_snp", |b| {
            b.iter(|| (&chain, &r).verify().unwrap())
        });
    }

    let quote = read("tdx/dcap-sample-v4/quote.bin");
    let coll = read("tdx/dcap-sample-v4/collateral.json");
    let tdx = Evidence::Tdx {
        quote: &quote,
        collateral: &coll,
    };
    let at = UnixTime::from_secs(1_751_000_000);
    let trd = v
        .authenticate(&tdx, at)
        .unwrap()
        .report_data
        .as_bytes()
        .to_vec();
    let texp = ExpectedReportData::Exact(trd);
    v.verify(&tdx, &texp, at).expect("TDX vector verifies");
    c.bench_function("attest_verify/tdx_with_collateral", |b| {
        b.iter(|| v.verify(&tdx, &texp, at).unwrap())
    });

    let (q, ak, nonce) = tpm_fixture();
    let tpm = Evidence::Tpm {
        quote: &q,
        ak: Some(&ak),
    };
    let nexp = ExpectedReportData::Exact(nonce);
    v.verify(&tpm, &nexp, today).expect("TPM quote verifies");
    c.bench_function("attest_verify/tpm_quote", |b| {
        b.iter(|| v.verify(&tpm, &nexp, today).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
