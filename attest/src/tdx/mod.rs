//! Intel TDX (quote v4/v5) and SGX (quote v3) with DCAP collateral, offline.
//!
//! The cryptographic work (PCK chain and CRLs, TCB info and QE identity
//! signatures, QE report, quote signature, TCB level matching, following
//! Intel's "Intel TDX DCAP Quoting Library API" appendix "Quote Format" and
//! the QVL verification steps) is `dcap-qvl` without its network client.
//! Around it this module adds: size bounds, an exact-length layout check
//! (no trailing or ignored bytes), CRL validity windows checked first so an
//! expired CRL is reported as such, and policy on the claims.

use serde::Serialize;

use crate::claims::{Claims, Detail, Hex, TeeKind};
use crate::time::UnixTime;
use crate::{Error, Result};

/// Largest quote accepted (real ones are about 5 KiB with the PCK chain).
pub const MAX_QUOTE_LEN: usize = 64 * 1024;
/// Largest collateral JSON accepted (real ones are 15-20 KiB).
pub const MAX_COLLATERAL_LEN: usize = 1024 * 1024;

/// Quote header length (Quote Format, "Quote Header": 48 bytes).
const HEADER_LEN: usize = 48;
/// TEE_TYPE values in the header.
const TEE_TYPE_SGX: u32 = 0x0000_0000;
const TEE_TYPE_TDX: u32 = 0x0000_0081;
/// SGX enclave report body (384 bytes), TD report 1.0 body (584 bytes),
/// TD report 1.5 body (648 bytes).
const SGX_REPORT_LEN: usize = 384;
const TD10_LEN: usize = 584;

/// Where the parts of a quote are, after an exact-length check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteLayout {
    /// Header VERSION (3 SGX, 4 or 5 TDX).
    pub version: u16,
    /// Header TEE_TYPE.
    pub tee_type: u32,
    /// Body type for v5 (2 = TD 1.0, 3 = TD 1.5, 4 = TD 1.5ex); 0 otherwise.
    pub body_type: u16,
    /// Length of the signed part (header + body descriptor + body).
    pub signed_len: usize,
    /// Length of the signature data.
    pub sig_len: usize,
}

fn le16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}
fn le32(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

/// Check the framing of a quote: header, body size by version and type,
/// signature length, and that nothing but zero padding follows the
/// signature data. Bounded, panic-free; the fuzz target drives it.
pub fn quote_layout(q: &[u8]) -> Result<QuoteLayout> {
    let bad = |d: String| Error::malformed("DCAP quote", d);
    if q.len() > MAX_QUOTE_LEN {
        return Err(Error::TooLarge {
            what: "DCAP quote",
            len: q.len(),
            max: MAX_QUOTE_LEN,
        });
    }
    let version = le16(q, 0).ok_or_else(|| bad("shorter than its header".into()))?;
    let tee_type = le32(q, 4).ok_or_else(|| bad("shorter than its header".into()))?;
    if q.len() < HEADER_LEN {
        return Err(bad("shorter than its header".into()));
    }
    let (body_type, body_start, body_len) = match (version, tee_type) {
        (3, TEE_TYPE_SGX) => (0, HEADER_LEN, SGX_REPORT_LEN),
        (4, TEE_TYPE_TDX) => (0, HEADER_LEN, TD10_LEN),
        (5, TEE_TYPE_TDX) | (5, TEE_TYPE_SGX) => {
            // v5: "Body Descriptor" = type (u16) + size (u32), then the body.
            let t = le16(q, HEADER_LEN).ok_or_else(|| bad("truncated body descriptor".into()))?;
            let size = le32(q, HEADER_LEN + 2)
                .ok_or_else(|| bad("truncated body descriptor".into()))?
                as usize;
            let want = match t {
                1 => SGX_REPORT_LEN,
                2 => TD10_LEN,
                3 => TD10_LEN + 64,
                4 => TD10_LEN + 64 + 314,
                _ => return Err(bad(format!("unknown body type {t}"))),
            };
            if size != want {
                return Err(bad(format!(
                    "body type {t} with size {size}, expected {want}"
                )));
            }
            (t, HEADER_LEN + 6, size)
        }
        (v, t) => {
            return Err(bad(format!(
                "version {v} with TEE type {t:#x} not supported"
            )));
        }
    };
    let signed_len = body_start + body_len;
    let sig_len =
        le32(q, signed_len).ok_or_else(|| bad("truncated before signature data".into()))? as usize;
    let total = signed_len
        .checked_add(4)
        .and_then(|t| t.checked_add(sig_len))
        .ok_or_else(|| bad("signature data length overflows".into()))?;
    if q.len() < total {
        return Err(bad(format!(
            "{} bytes, but its signature data length says {total}",
            q.len()
        )));
    }
    let auth = &q[signed_len + 4..total];
    check_auth_data(version, auth)?;
    // Quoting services hand out quotes in fixed-size buffers, zero-padded
    // (both real TDX vectors carry such padding). Padding is not signed, so
    // anything but zeros there is refused.
    if q[total..].iter().any(|&b| b != 0) {
        return Err(bad(format!(
            "non-zero bytes after the end of the quote at {total}"
        )));
    }
    Ok(QuoteLayout {
        version,
        tee_type,
        body_type,
        signed_len,
        sig_len,
    })
}

/// Intel SGX Root CA (DER), the DCAP trust anchor: the same certificate
/// dcap-qvl trusts (`QuoteVerifier::new_prod`), SHA-256 fingerprint
/// 44A0196B2B99F889B8E149E95B807A350E7424964399E885A7CBB8CCFAB674D3.
pub const INTEL_ROOT_CA_DER: &[u8] = include_bytes!("intel_sgx_root_ca.der");

/// Certification data types (Quote Format, "Certification Data"):
/// 5 = PCK certificate chain (PEM), 6 = QE report certification data.
const CERT_TYPE_PCK_CHAIN: u16 = 5;
const CERT_TYPE_QE_REPORT: u16 = 6;

/// The signature data must be exactly as long as its parts say: ECDSA
/// signature (64), attestation key (64), then for v3 the QE report (384),
/// its signature (64), QE auth data (u16 size + data) and certification
/// data; for v4/v5 certification data of type 6 wrapping the same QE
/// fields. The innermost certification data must be a canonical PCK chain.
fn check_auth_data(version: u16, a: &[u8]) -> Result<()> {
    let bad = |d: &str| Error::malformed("DCAP quote signature data", d.to_string());
    let qe_part = |b: &[u8]| -> Result<()> {
        // QE report (384) + QE report signature (64) + QE auth data + cert data.
        let rest = b
            .get(384 + 64..)
            .ok_or_else(|| bad("truncated QE report"))?;
        let n = le16(rest, 0).ok_or_else(|| bad("truncated QE auth data"))? as usize;
        let rest = rest
            .get(2 + n..)
            .ok_or_else(|| bad("truncated QE auth data"))?;
        let ty = le16(rest, 0).ok_or_else(|| bad("truncated certification data"))?;
        let size = le32(rest, 2).ok_or_else(|| bad("truncated certification data"))? as usize;
        if rest.len() != 6 + size {
            return Err(bad(
                "certification data length disagrees with the signature data length",
            ));
        }
        if ty != CERT_TYPE_PCK_CHAIN {
            return Err(bad("only PCK certificate chains (type 5) are supported"));
        }
        check_pck_chain(&rest[6..])
    };
    let body = a.get(128..).ok_or_else(|| bad("truncated signature"))?;
    match version {
        3 => qe_part(body),
        _ => {
            let ty = le16(body, 0).ok_or_else(|| bad("truncated certification data"))?;
            let size = le32(body, 2).ok_or_else(|| bad("truncated certification data"))? as usize;
            if ty != CERT_TYPE_QE_REPORT || body.len() != 6 + size {
                return Err(bad(
                    "outer certification data is not a QE report of the stated length",
                ));
            }
            qe_part(&body[6..])
        }
    }
}

/// The PCK chain in a quote must be exactly leaf, PCK CA and Intel's root,
/// in canonical PEM (64-column base64, LF), optionally NUL-terminated; each
/// certificate signed by the next. A byte that does not affect verification
/// is a byte an attacker can use; none is allowed.
fn check_pck_chain(data: &[u8]) -> Result<()> {
    use der::{Decode, Encode, EncodePem};
    use p256::ecdsa::signature::Verifier as _;
    let bad = |d: &str| Error::malformed("PCK certificate chain", d.to_string());
    let end = data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let (pem, _nuls) = data.split_at(end);
    let certs = x509_cert::Certificate::load_pem_chain(pem).map_err(|e| bad(&e.to_string()))?;
    if certs.len() != 3 {
        return Err(bad(&format!("{} certificates, expected 3", certs.len())));
    }
    let mut canonical = String::new();
    for c in &certs {
        canonical.push_str(
            &c.to_pem(der::pem::LineEnding::LF)
                .map_err(|e| bad(&e.to_string()))?,
        );
    }
    if canonical.as_bytes() != pem {
        return Err(bad("not in canonical PEM form"));
    }
    let root_der = certs[2].to_der().map_err(|e| bad(&e.to_string()))?;
    if root_der != INTEL_ROOT_CA_DER {
        return Err(bad("the last certificate is not Intel's SGX root CA"));
    }
    for i in 0..2 {
        let (sub, iss) = (&certs[i], &certs[i + 1]);
        let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(
            iss.tbs_certificate
                .subject_public_key_info
                .subject_public_key
                .raw_bytes(),
        )
        .map_err(|_| bad("issuer key is not P-256"))?;
        let sig = p256::ecdsa::Signature::from_der(sub.signature.raw_bytes())
            .map_err(|_| bad("bad signature encoding"))?;
        let tbs = sub
            .tbs_certificate
            .to_der()
            .map_err(|e| bad(&e.to_string()))?;
        key.verify(&tbs, &sig)
            .map_err(|_| bad("certificate not signed by the next one in the chain"))?;
    }
    let _ = x509_cert::Certificate::from_der(INTEL_ROOT_CA_DER).map_err(|e| bad(&e.to_string()))?;
    Ok(())
}

/// Parse collateral (dcap-qvl's `QuoteCollateralV3` JSON), bounded.
pub fn parse_collateral(json: &[u8]) -> Result<dcap_qvl::QuoteCollateralV3> {
    if json.len() > MAX_COLLATERAL_LEN {
        return Err(Error::TooLarge {
            what: "DCAP collateral",
            len: json.len(),
            max: MAX_COLLATERAL_LEN,
        });
    }
    serde_json::from_slice(json).map_err(|e| Error::malformed("DCAP collateral", e.to_string()))
}

/// Check a CRL's thisUpdate/nextUpdate window (RFC 5280 §5.1.2.4-5). A CRL
/// without nextUpdate is refused: Intel's always carry one.
fn check_crl(der_bytes: &[u8], what: &'static str, at: UnixTime) -> Result<()> {
    use der::Decode;
    let crl = x509_cert::crl::CertificateList::from_der(der_bytes)
        .map_err(|e| Error::malformed(what, e.to_string()))?;
    let this = UnixTime::from_der_time(&crl.tbs_cert_list.this_update);
    let next = crl
        .tbs_cert_list
        .next_update
        .as_ref()
        .map(UnixTime::from_der_time)
        .ok_or_else(|| Error::malformed(what, "no nextUpdate"))?;
    if at < this {
        return Err(Error::NotYetValid {
            what: what.to_string(),
            not_before: this.to_string(),
            at: at.to_string(),
        });
    }
    if at > next {
        return Err(Error::CrlExpired {
            what,
            next_update: next.to_string(),
            at: at.to_string(),
        });
    }
    Ok(())
}

/// TDX/SGX-specific claims.
#[derive(Debug, Clone, Serialize)]
pub struct DcapDetail {
    /// Quote version.
    pub quote_version: u16,
    /// TCB status from TCB info and QE identity, converged.
    pub tcb_status: String,
    /// Intel security advisories that apply at that TCB level.
    pub advisory_ids: Vec<String>,
    /// TCB evaluation data number.
    pub tcb_eval_data_number: u32,
    /// FMSPC of the platform.
    pub fmspc: Hex,
    /// TEE_TCB_SVN (TDX) or CPUSVN (SGX).
    pub tcb_svn: Hex,
    /// TD_ATTRIBUTES (TDX) or ATTRIBUTES (SGX).
    pub attributes: Hex,
    /// XFAM (TDX).
    pub xfam: Option<Hex>,
    /// MRCONFIGID, MROWNER, MROWNERCONFIG (TDX).
    pub mr_config_id: Option<Hex>,
    /// MROWNER (TDX).
    pub mr_owner: Option<Hex>,
    /// MROWNERCONFIG (TDX).
    pub mr_owner_config: Option<Hex>,
    /// MRSEAM of the TDX module.
    pub mr_seam: Option<Hex>,
    /// ISVPRODID / ISVSVN of an SGX enclave.
    pub isv_svn: Option<u16>,
    /// Earliest expiration over all collateral (Unix seconds).
    pub collateral_expires: u64,
    /// Latest issue date over all collateral (Unix seconds).
    pub collateral_issued: u64,
    /// PCK SMT flag, as dcap-qvl reports it.
    pub smt: String,
}

struct CollectClaims;
impl dcap_qvl::policy::Policy for CollectClaims {
    // Policy is ours (crate::policy); this only lets dcap-qvl hand back claims.
    fn validate(&self, _: &dcap_qvl::policy::QuoteClaims) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Verify a DCAP quote with its collateral at `at`, offline, against Intel's
/// production root CA. Policy is not applied here (debug is a policy rule).
pub fn authenticate(quote: &[u8], collateral_json: &[u8], at: UnixTime) -> Result<Claims> {
    if quote.len() > MAX_QUOTE_LEN {
        return Err(Error::TooLarge {
            what: "DCAP quote",
            len: quote.len(),
            max: MAX_QUOTE_LEN,
        });
    }
    let mut collateral = parse_collateral(collateral_json)?;
    // CRLs first (DCAP "Collateral" — root CA CRL and PCK CRL must be current).
    check_crl(&collateral.root_ca_crl, "Intel root CA CRL", at)?;
    check_crl(&collateral.pck_crl, "Intel PCK CRL", at)?;
    let parsed = dcap_qvl::quote::Quote::parse(quote)
        .map_err(|e| Error::malformed("DCAP quote", format!("{e:#}")))?;
    // With the PCK chain inside the quote (certification data type 5), the
    // quote's own chain is verified, never a substitute from the collateral.
    if parsed.raw_cert_chain().is_ok() {
        collateral.pck_certificate_chain = None;
    }
    let verifier = dcap_qvl::verify::QuoteVerifier::new_prod().allow_debug(true);
    let qc = verifier
        .verify_with_policy(quote, collateral, at.as_secs(), &CollectClaims)
        .map_err(|e| Error::Dcap(format!("{e:#}")))?;
    // Then our stricter framing: exact lengths, canonical chain, zero padding.
    let layout = quote_layout(quote)?;
    if parsed.signed_length() != layout.signed_len {
        return Err(Error::malformed(
            "DCAP quote",
            "body length disagrees with its type",
        ));
    }
    claims_from(&layout, &qc)
}

fn claims_from(layout: &QuoteLayout, qc: &dcap_qvl::policy::QuoteClaims) -> Result<Claims> {
    use dcap_qvl::quote::Report;
    let mut d = DcapDetail {
        quote_version: layout.version,
        tcb_status: qc.tcb.status.to_string(),
        advisory_ids: qc.tcb.advisory_ids.clone(),
        tcb_eval_data_number: qc.tcb.eval_data_number,
        fmspc: Hex::from(&qc.platform.pck.fmspc[..]),
        tcb_svn: Hex::default(),
        attributes: Hex::default(),
        xfam: None,
        mr_config_id: None,
        mr_owner: None,
        mr_owner_config: None,
        mr_seam: None,
        isv_svn: None,
        collateral_expires: qc.earliest_expiration_date,
        collateral_issued: qc.latest_issue_date,
        smt: format!("{:?}", qc.platform.pck.smt_enabled),
    };
    let td = match &qc.report {
        Report::TD10(r) => Some(r),
        Report::TD15(r) => Some(&r.base),
        Report::TD15Ex(r) => Some(&r.base.base),
        Report::SgxEnclave(_) => None,
    };
    let mut claims;
    if let Some(r) = td {
        d.tcb_svn = Hex::from(&r.tee_tcb_svn[..]);
        d.attributes = Hex::from(&r.td_attributes[..]);
        d.xfam = Some(Hex::from(&r.xfam[..]));
        d.mr_config_id = Some(Hex::from(&r.mr_config_id[..]));
        d.mr_owner = Some(Hex::from(&r.mr_owner[..]));
        d.mr_owner_config = Some(Hex::from(&r.mr_owner_config[..]));
        d.mr_seam = Some(Hex::from(&r.mr_seam[..]));
        // TD_ATTRIBUTES bit 0: DEBUG (TDX Module ABI, "TD_ATTRIBUTES").
        let debug = r.td_attributes[0] & 0x01 != 0;
        claims = Claims::new(TeeKind::Tdx, &r.report_data, Detail::Dcap(d));
        claims.debug = debug;
        for (k, v) in [
            ("mrtd", &r.mr_td),
            ("rtmr0", &r.rt_mr0),
            ("rtmr1", &r.rt_mr1),
            ("rtmr2", &r.rt_mr2),
            ("rtmr3", &r.rt_mr3),
        ] {
            claims.measurements.insert(k.into(), Hex::from(&v[..]));
        }
    } else if let Report::SgxEnclave(r) = &qc.report {
        d.tcb_svn = Hex::from(&r.cpu_svn[..]);
        d.attributes = Hex::from(&r.attributes[..]);
        d.isv_svn = Some(r.isv_svn);
        // SGX ATTRIBUTES.DEBUG is bit 1 (SDM Vol. 3D, "SECS.ATTRIBUTES").
        let debug = r.attributes[0] & 0x02 != 0;
        claims = Claims::new(TeeKind::Sgx, &r.report_data, Detail::Dcap(d));
        claims.debug = debug;
        claims
            .measurements
            .insert("mrenclave".into(), Hex::from(&r.mr_enclave[..]));
        claims
            .measurements
            .insert("mrsigner".into(), Hex::from(&r.mr_signer[..]));
    } else {
        return Err(Error::malformed("DCAP quote", "unknown report body"));
    }
    let mut pid = qc.platform.pck.ppid.clone();
    if pid.is_empty() {
        pid = qc.platform.pck.fmspc.to_vec();
    }
    claims.platform_id = Some(Hex(pid));
    Ok(claims)
}
