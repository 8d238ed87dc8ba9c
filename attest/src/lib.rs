//! Attestation evidence: produce it (configfs-tsm for SEV-SNP/TDX, TPM 2.0)
//! and verify it against a policy.
//!
//! This crate is the root of trust of Confidant: the key broker releases
//! model keys on its verdict, and clients send data on its verdict.
//!
//! * Verify: [`Verifier::verify`] takes [`Evidence`], the
//!   [`ExpectedReportData`] (always an input) and the verification time, and
//!   returns a [`Verified<Claims>`] that only this crate can construct.
//! * Policy: [`Policy::load`] / [`Policy::from_toml`]; [`Policy::default`]
//!   refuses debug guests and TDX TCB statuses other than `UpToDate`.
//! * Bind keys to evidence: [`Binding::report_data`] (DESIGN.md, trust flow step 2).
//! * Produce: [`attester::detect`] picks the best available [`attester::Attester`].
//!
//! ```no_run
//! use confidant_attest::{Binding, Evidence, ExpectedReportData, Policy, UnixTime, Verifier};
//! # fn main() -> Result<(), confidant_attest::Error> {
//! let verifier = Verifier::new(Policy::default())?;
//! let expected = Binding { nonce: &[0; 32], tls_spki_der: b"..", hpke_public_key: &[0; 32] }
//!     .report_data();
//! let (report, vcek) = (std::fs::read("report.bin").unwrap(), std::fs::read("vcek.der").unwrap());
//! let evidence = Evidence::Snp(confidant_attest::snp::SnpEvidence { report: &report, vek: &vcek, chain: None });
//! let verified = verifier.verify(&evidence, &ExpectedReportData::Exact(expected.to_vec()), UnixTime::now())?;
//! println!("measurement {}", verified.measurements["measurement"]);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod attester;
mod binding;
mod bounded;
mod claims;
mod error;
mod evidence;
pub mod policy;
pub mod snp;
pub mod tdx;
mod time;
pub mod tpm;

pub use binding::{BINDING_DOMAIN, Binding, MAX_NONCE_LEN};
pub use claims::{
    Claims, Detail, ExpectedReportData, Hex, Rejection, RuleOutcome, TeeKind, Verified,
};
pub use error::{Error, Result};
pub use evidence::{EvidenceBundle, MAX_BUNDLE_LEN};
pub use policy::Policy;
pub use time::UnixTime;

/// Evidence to verify, borrowed.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Evidence<'a> {
    /// SEV-SNP report and VCEK/VLEK.
    Snp(snp::SnpEvidence<'a>),
    /// A DCAP quote where TDX is expected (an SGX quote is refused).
    Tdx {
        /// Quote v4/v5.
        quote: &'a [u8],
        /// Collateral JSON (`QuoteCollateralV3`).
        collateral: &'a [u8],
    },
    /// A DCAP quote where SGX is expected.
    Sgx {
        /// Quote v3.
        quote: &'a [u8],
        /// Collateral JSON.
        collateral: &'a [u8],
    },
    /// A TPM quote and the AK it must be signed by. The AK is trusted only if
    /// it was bound to an EK by credential activation ([`tpm::Enrolment`]).
    Tpm {
        /// Quote, signature, PCR values.
        quote: &'a tpm::TpmQuote,
        /// The AK, if one was enrolled for this device.
        ak: Option<&'a tpm::EnrolledAk>,
    },
    /// Evidence of the insecure dev attester: no hardware, proves nothing.
    InsecureDev {
        /// The REPORT_DATA it claims.
        report_data: &'a [u8],
    },
}

impl Evidence<'_> {
    fn expected_kind(&self) -> TeeKind {
        match self {
            Evidence::Snp(_) => TeeKind::Snp,
            Evidence::Tdx { .. } => TeeKind::Tdx,
            Evidence::Sgx { .. } => TeeKind::Sgx,
            Evidence::Tpm { .. } => TeeKind::Tpm,
            Evidence::InsecureDev { .. } => TeeKind::InsecureDev,
        }
    }
}

/// Verifies evidence of every kind against one policy.
#[derive(Debug)]
pub struct Verifier {
    snp: snp::SnpVerifier,
    policy: Policy,
}

impl Verifier {
    /// A verifier with AMD's and Intel's built-in roots and `policy`.
    pub fn new(policy: Policy) -> Result<Self> {
        Ok(Verifier {
            snp: snp::SnpVerifier::new()?,
            policy,
        })
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Authenticity only: signatures, chains, dates, endorsements. No policy.
    pub fn authenticate(&self, evidence: &Evidence<'_>, at: UnixTime) -> Result<Claims> {
        match evidence {
            Evidence::Snp(e) => self.snp.authenticate(e, at),
            Evidence::Tdx { quote, collateral } | Evidence::Sgx { quote, collateral } => {
                tdx::authenticate(quote, collateral, at)
            }
            Evidence::Tpm { quote, ak } => match ak {
                Some(ak) => tpm::authenticate(quote, ak),
                None => Err(Error::Tpm(
                    "AK not bound to an EK by credential activation: no enrolled AK for this quote"
                        .into(),
                )),
            },
            Evidence::InsecureDev { report_data } => {
                tracing::warn!("verifying evidence of the INSECURE dev attester");
                Ok(attester::insecure_claims(report_data))
            }
        }
    }

    /// Verify and appraise: the verdict with every reason. `Ok` only when
    /// the evidence is authentic and every policy rule passed.
    pub fn appraise(
        &self,
        evidence: &Evidence<'_>,
        expected: &ExpectedReportData,
        at: UnixTime,
    ) -> std::result::Result<Verified<Claims>, Rejection> {
        let mut claims = match self.authenticate(evidence, at) {
            Ok(c) => c,
            Err(e) => {
                return Err(Rejection {
                    authentic: false,
                    reasons: vec![e.to_string()],
                    claims: None,
                });
            }
        };
        claims.policy = self
            .policy
            .appraise(&claims, Some(evidence.expected_kind()), expected, at);
        if claims.policy_passed() {
            Ok(Verified::new(claims))
        } else {
            let reasons = claims
                .policy
                .iter()
                .filter(|r| !r.pass)
                .map(|r| format!("{}: {}", r.rule, r.detail))
                .collect();
            Err(Rejection {
                authentic: true,
                reasons,
                claims: Some(Box::new(claims)),
            })
        }
    }

    /// Like [`Verifier::appraise`], with the rejection as an [`Error::Rejected`].
    pub fn verify(
        &self,
        evidence: &Evidence<'_>,
        expected: &ExpectedReportData,
        at: UnixTime,
    ) -> Result<Verified<Claims>> {
        self.appraise(evidence, expected, at)
            .map_err(|r| Error::Rejected(Box::new(r)))
    }
}
