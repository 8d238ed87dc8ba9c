//! AMD SEV-SNP: report + VCEK/VLEK + AMD chain.
//!
//! Trust anchors are the ARKs of Milan, Genoa and Turin built into the `sev`
//! crate. A chain given by the caller is used only if its ARK is
//! byte-identical to a built-in one; the ASK/ASVK in it is then verified
//! under that ARK. VLEK chains need the ASVK, which the caller supplies.

mod certs;
mod report;

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use x509_cert::Certificate;

pub use certs::{
    MAX_CERT_LEN, MAX_CHAIN_LEN, VekInfo, VekKind, parse_cert, parse_pem_chain, read_vek,
};
pub use report::{Generation, REPORT_LEN, SIGNED_LEN, SigningKey, SnpReport, TcbVersion};

use crate::claims::{Claims, Detail, Hex, TeeKind};
use crate::time::UnixTime;
use crate::{Error, Result};

/// SNP evidence as it travels: the report, the VCEK/VLEK (DER or PEM), and
/// optionally the ASK/ASVK + ARK chain (PEM).
#[derive(Debug, Clone, Copy)]
pub struct SnpEvidence<'a> {
    /// The 1184-byte report.
    pub report: &'a [u8],
    /// VCEK or VLEK certificate.
    pub vek: &'a [u8],
    /// ASK (or ASVK) and ARK, PEM. Without it the built-in ASKs are used.
    pub chain: Option<&'a [u8]>,
}

/// SNP-specific claims.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SnpDetail {
    /// Report VERSION.
    pub version: u32,
    /// Processor generation (from the VEK's productName, proven by the chain).
    pub generation: &'static str,
    /// productName of the VEK.
    pub product: String,
    /// Which key signed the report.
    pub signing_key: VekKind,
    /// GUEST_SVN.
    pub guest_svn: u32,
    /// Guest POLICY (hex).
    pub policy: String,
    /// POLICY.SMT.
    pub policy_smt_allowed: bool,
    /// POLICY.MIGRATE_MA.
    pub policy_migrate_ma: bool,
    /// PLATFORM_INFO.SMT_EN.
    pub smt_enabled: bool,
    /// VMPL the report was requested from.
    pub vmpl: u32,
    /// REPORTED_TCB (matches the VEK's SPLs).
    pub reported_tcb: TcbVersion,
    /// CURRENT_TCB.
    pub current_tcb: TcbVersion,
    /// COMMITTED_TCB.
    pub committed_tcb: TcbVersion,
    /// LAUNCH_TCB.
    pub launch_tcb: TcbVersion,
    /// HOST_DATA.
    pub host_data: Hex,
    /// ID_KEY_DIGEST.
    pub id_key_digest: Hex,
    /// AUTHOR_KEY_DIGEST.
    pub author_key_digest: Hex,
    /// FAMILY_ID.
    pub family_id: Hex,
    /// IMAGE_ID.
    pub image_id: Hex,
    /// csp_id of a VLEK.
    pub csp_id: Option<String>,
}

struct Root {
    generation: Generation,
    ark: Certificate,
    ark_der: Vec<u8>,
    ask: Certificate,
}

#[derive(Clone)]
struct CachedVek {
    info: VekInfo,
    not_before: UnixTime,
    not_after: UnixTime,
    inter_cn: String,
    inter_window: (UnixTime, UnixTime),
    ark_window: (UnixTime, UnixTime),
}

/// Verifies SNP evidence. Build once ([`SnpVerifier::new`] verifies the
/// built-in ARK/ASK signatures) and reuse: VEK chains that verified are
/// cached by certificate digest, their validity windows rechecked per call.
pub struct SnpVerifier {
    roots: Vec<Root>,
    cache: Mutex<HashMap<[u8; 32], CachedVek>>,
}

impl std::fmt::Debug for SnpVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnpVerifier").finish_non_exhaustive()
    }
}

const MAX_CACHE: usize = 256;

fn window(c: &Certificate) -> (UnixTime, UnixTime) {
    let v = &c.tbs_certificate.validity;
    (
        UnixTime::from_der_time(&v.not_before),
        UnixTime::from_der_time(&v.not_after),
    )
}

impl SnpVerifier {
    /// A verifier trusting AMD's Milan, Genoa and Turin ARKs.
    pub fn new() -> Result<Self> {
        use sev::certs::snp::builtin::{genoa, milan, turin};
        let mut roots = Vec::new();
        for (generation, ark, ask) in [
            (Generation::Milan, milan::ARK, milan::ASK),
            (Generation::Genoa, genoa::ARK, genoa::ASK),
            (Generation::Turin, turin::ARK, turin::ASK),
        ] {
            let ark = parse_cert(ark, "built-in ARK")?;
            let ask = parse_cert(ask, "built-in ASK")?;
            // The ARK is self-signed; the ASK is signed by the ARK (#57230 §2.1).
            certs::verify_signed_by(&ark, &ark, "built-in ARK")?;
            certs::verify_signed_by(&ask, &ark, "built-in ASK")?;
            let ark_der = der::Encode::to_der(&ark).map_err(|e| Error::Chain(e.to_string()))?;
            roots.push(Root {
                generation,
                ark,
                ark_der,
                ask,
            });
        }
        Ok(SnpVerifier {
            roots,
            cache: Mutex::new(HashMap::new()),
        })
    }

    fn root(&self, g: Generation) -> Result<&Root> {
        self.roots
            .iter()
            .find(|r| r.generation == g)
            .ok_or_else(|| Error::Chain(format!("no built-in ARK for {}", g.name())))
    }

    /// Verify the chain of `vek_der` (or take it from the cache).
    fn endorse(&self, vek_der: &[u8], chain: Option<&[u8]>) -> Result<CachedVek> {
        let mut key_in = Vec::with_capacity(vek_der.len() + 64);
        key_in.extend_from_slice(vek_der);
        if let Some(c) = chain {
            key_in.extend_from_slice(&Sha256::digest(c));
        }
        let key: [u8; 32] = Sha256::digest(&key_in).into();
        if let Ok(cache) = self.cache.lock()
            && let Some(hit) = cache.get(&key)
        {
            return Ok(hit.clone());
        }
        let vek = parse_cert(vek_der, "VEK certificate")?;
        let info = read_vek(&vek)?;
        let root = self.root(info.generation)?;
        let what = info.kind.name();
        let (ark, inter) = match chain {
            None => {
                if info.kind == VekKind::Vlek {
                    return Err(Error::Chain(
                        "a VLEK needs its ASVK: give the ASVK+ARK chain".into(),
                    ));
                }
                (&root.ark, root.ask.clone())
            }
            Some(pem) => {
                let certs = parse_pem_chain(pem)?;
                // The trust anchor is the built-in ARK: the chain's ARK must be
                // byte-identical, whatever the chain says about itself.
                let mut ark_found = None;
                let mut inter = None;
                for c in certs {
                    let d = der::Encode::to_der(&c).map_err(|e| Error::Chain(e.to_string()))?;
                    if let Some(r) = self.roots.iter().find(|r| r.ark_der == d) {
                        ark_found = Some(r);
                    } else if inter.is_none() {
                        inter = Some(c);
                    } else {
                        return Err(Error::Chain(
                            "chain holds more than one intermediate certificate".into(),
                        ));
                    }
                }
                let r = ark_found.ok_or_else(|| {
                    Error::Chain("chain has no ARK matching a built-in AMD root".into())
                })?;
                if r.generation != info.generation {
                    return Err(Error::Chain(format!(
                        "{what} is for {} but the chain's root is ARK-{}",
                        info.product,
                        r.generation.name()
                    )));
                }
                let inter = inter.unwrap_or_else(|| r.ask.clone());
                (&r.ark, inter)
            }
        };
        let inter_cn = certs::common_name(&inter);
        let expected_inter = match info.kind {
            VekKind::Vcek => format!("SEV-{}", info.generation.name()),
            VekKind::Vlek => format!("SEV-VLEK-{}", info.generation.name()),
        };
        if inter_cn != expected_inter {
            return Err(Error::Chain(format!(
                "{what} needs intermediate {expected_inter}, chain has {inter_cn}"
            )));
        }
        certs::verify_signed_by(&inter, ark, &inter_cn)?;
        certs::verify_signed_by(&vek, &inter, what)?;
        let (not_before, not_after) = window(&vek);
        let entry = CachedVek {
            info,
            not_before,
            not_after,
            inter_window: window(&inter),
            ark_window: window(ark),
            inter_cn,
        };
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= MAX_CACHE {
                cache.clear();
            }
            cache.insert(key, entry.clone());
        }
        Ok(entry)
    }

    /// Check authenticity at `at`: chain, validity windows, report signature,
    /// VEK extensions against the report. Policy is not applied here.
    pub fn authenticate(&self, ev: &SnpEvidence<'_>, at: UnixTime) -> Result<Claims> {
        let report = SnpReport::parse(ev.report)?;
        let vek = self.endorse(ev.vek, ev.chain)?;
        let info = &vek.info;
        let what = info.kind.name();
        crate::time::check_window("ARK", vek.ark_window.0, vek.ark_window.1, at)?;
        crate::time::check_window(&vek.inter_cn, vek.inter_window.0, vek.inter_window.1, at)?;
        crate::time::check_window(what, vek.not_before, vek.not_after, at)?;

        // Table 23 SIGNING_KEY: the report says which key signed it; it must be
        // the kind of certificate we were given.
        let expected = match report.signing_key() {
            SigningKey::Vcek => VekKind::Vcek,
            SigningKey::Vlek => VekKind::Vlek,
            SigningKey::None => {
                return Err(Error::Signature(
                    "report is unsigned (SIGNING_KEY 7)".into(),
                ));
            }
        };
        if expected != info.kind {
            return Err(Error::Endorsement(format!(
                "report SIGNING_KEY says {} but a {what} was given",
                expected.name()
            )));
        }

        // Table 23 SIGNATURE: ECDSA P-384 over bytes 0h-29Fh with SHA-384, on
        // the raw bytes received (never on a re-encoding).
        // (aws-lc-rs: fixed-size big-endian r || s, range-checked.)
        let (r, s) = report.signature_rs();
        let mut rs = [0u8; 96];
        rs[..48].copy_from_slice(&r);
        rs[48..].copy_from_slice(&s);
        aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::ECDSA_P384_SHA384_FIXED,
            &info.public_key_sec1,
        )
        .verify(report.signed_bytes(), &rs)
        .map_err(|_| Error::Signature(format!("SNP report is not signed by this {what}")))?;

        // #57230 Table "VCEK extensions": the SPLs the VEK was derived for must
        // be the report's REPORTED_TCB (the TCB the firmware derived the key from).
        let reported = TcbVersion::decode(report.reported_tcb_raw(), info.generation);
        if reported != info.tcb {
            return Err(Error::Endorsement(format!(
                "REPORTED_TCB {reported:?} differs from the {what}'s SPLs {:?}",
                info.tcb
            )));
        }
        // VCEK hwID must be the report's CHIP_ID (for Turin the hwID is 8
        // bytes: the first 8 of CHIP_ID, the rest zero).
        if let Some(hwid) = &info.hwid {
            if report.mask_chip_key() {
                return Err(Error::Endorsement(
                    "MASK_CHIP_KEY set: CHIP_ID is zero and cannot be bound to the VCEK".into(),
                ));
            }
            let chip = report.chip_id();
            let (head, tail) = chip.split_at(hwid.len().min(chip.len()));
            if head != hwid.as_slice() || tail.iter().any(|&b| b != 0) {
                return Err(Error::Endorsement(
                    "VCEK hwID differs from the report's CHIP_ID".into(),
                ));
            }
        }
        // Report version 3+ carries CPUID family; Milan/Genoa are family 19h,
        // Turin 1Ah.
        if let Some((fam, _, _)) = report.cpuid() {
            let want = match info.generation {
                Generation::Milan | Generation::Genoa => 0x19,
                Generation::Turin => 0x1A,
            };
            if fam != want {
                return Err(Error::Endorsement(format!(
                    "CPUID_FAM_ID {fam:#x} is not {} (family {want:#x})",
                    info.generation.name()
                )));
            }
        }

        let g = info.generation;
        let detail = SnpDetail {
            version: report.version(),
            generation: g.name(),
            product: info.product.clone(),
            signing_key: info.kind,
            guest_svn: report.guest_svn(),
            policy: format!("{:#x}", report.policy()),
            policy_smt_allowed: report.smt_allowed(),
            policy_migrate_ma: report.migrate_ma_allowed(),
            smt_enabled: report.smt_enabled(),
            vmpl: report.vmpl(),
            reported_tcb: reported,
            current_tcb: TcbVersion::decode(report.current_tcb_raw(), g),
            committed_tcb: TcbVersion::decode(report.committed_tcb_raw(), g),
            launch_tcb: TcbVersion::decode(report.launch_tcb_raw(), g),
            host_data: Hex::from(report.host_data()),
            id_key_digest: Hex::from(report.id_key_digest()),
            author_key_digest: Hex::from(report.author_key_digest()),
            family_id: Hex::from(report.family_id()),
            image_id: Hex::from(report.image_id()),
            csp_id: info.csp_id.clone(),
        };
        let mut claims = Claims::new(TeeKind::Snp, report.report_data(), Detail::Snp(detail));
        claims
            .measurements
            .insert("measurement".into(), Hex::from(report.measurement()));
        claims.platform_id = Some(Hex::from(report.chip_id()));
        claims.debug = report.debug_allowed();
        Ok(claims)
    }
}
