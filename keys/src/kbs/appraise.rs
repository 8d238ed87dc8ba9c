//! Appraisal of a requester's evidence against a model's policy: the
//! evidence is authentic (`confidant_attest`), bound to the session's
//! nonce and the requester's TLS and HPKE keys, fresh, and satisfies every
//! rule; otherwise the refusal gets the code of its most fundamental
//! failing rule.

use confidant_attest::attester::BoundData;
use confidant_attest::tpm::EnrolledAk;
use confidant_attest::{
    Binding, Claims, Evidence, EvidenceBundle, ExpectedReportData, Policy, Rejection, TeeKind,
    UnixTime, Verifier,
};

use super::broker::Refusal;
use super::protocol::{ReasonCode, Tee};
use super::store::Store;

/// What evidence for one model is appraised with.
pub(crate) struct Appraisal<'a> {
    /// The model's policy (attest TOML).
    pub(crate) policy_toml: &'a str,
    /// Accept the insecure dev attester (development).
    pub(crate) insecure_allow_dev_attester: bool,
    /// DCAP collateral for TDX quotes.
    pub(crate) tdx_collateral: Option<&'a [u8]>,
    /// The device policy, applied on top when a device's AK signed.
    pub(crate) device_policy: Option<&'a Policy>,
    /// Where enrolled TPM AKs are.
    pub(crate) store: &'a Store,
}

/// What an accepted appraisal yields for the log.
pub(crate) struct Appraised {
    /// The evidence's measurements (JSON).
    pub(crate) measurement: Option<String>,
    /// The enrolled device whose AK signed, if one did.
    pub(crate) device: Option<String>,
}

impl Appraisal<'_> {
    /// Appraises `bundle` (declared `tee`) at `at` against the binding of
    /// the challenge issued at `issued_at`. On success, the evidence's
    /// measurements (JSON) for the log.
    pub(crate) fn appraise(
        &self,
        tee: Tee,
        binding: &Binding<'_>,
        issued_at: UnixTime,
        bundle: &EvidenceBundle,
        at: UnixTime,
    ) -> Result<Appraised, Refusal> {
        let mut policy = Policy::from_toml(self.policy_toml)
            .map_err(|e| Refusal::new(ReasonCode::Internal, format!("model policy: {e}")))?;
        if self.insecure_allow_dev_attester {
            policy = policy.insecure_allow_dev_attester();
        }
        let verifier =
            Verifier::new(policy).map_err(|e| Refusal::new(ReasonCode::Internal, e.to_string()))?;
        let bound = BoundData::from_binding(binding);
        // DESIGN.md trust flow step 2: SNP/TDX carry the 64-byte
        // REPORT_DATA, a TPM quote its SHA-256 sibling as extraData.
        let expected = ExpectedReportData::Challenge {
            report_data: if tee == Tee::Tpm {
                bound.tpm_extra_data.clone()
            } else {
                bound.report_data.to_vec()
            },
            issued_at,
        };
        let (ak, device) = match self.enrolled_ak(bundle)? {
            Some((ak, device)) => (Some(ak), device),
            None => (None, None),
        };
        let evidence = self.evidence(bundle, ak.as_ref())?;
        let refusal = |rej: Rejection, prefix: &str| {
            let mut r = Refusal::new(
                rejection_code(&rej),
                format!("{prefix}{}", rej.reasons.join("; ")),
            );
            r.measurement = rej.claims.as_deref().and_then(measurements_json);
            r
        };
        let verified = verifier
            .appraise(&evidence, &expected, at)
            .map_err(|rej| refusal(rej, ""))?;
        // A device's quote must also satisfy the device policy (its PCRs);
        // without one configured, devices get nothing (fail closed).
        if let Some(d) = &device {
            let device_policy = self.device_policy.ok_or_else(|| {
                Refusal::new(
                    ReasonCode::Internal,
                    format!("device {d}: no device policy configured (kbs serve --device-policy)"),
                )
            })?;
            let dv = Verifier::new(device_policy.clone())
                .map_err(|e| Refusal::new(ReasonCode::Internal, e.to_string()))?;
            dv.appraise(&evidence, &expected, at)
                .map_err(|rej| refusal(rej, &format!("device {d}, device policy: ")))?;
        }
        Ok(Appraised {
            measurement: measurements_json(&verified),
            device,
        })
    }

    /// The AK a TPM quote must be verified with: the enrolled record whose
    /// Name is the Name of the AK public area the evidence names.
    /// An enrolled device's AK comes with the device id; a revoked
    /// device's quotes are refused here.
    fn enrolled_ak(
        &self,
        b: &EvidenceBundle,
    ) -> Result<Option<(EnrolledAk, Option<String>)>, Refusal> {
        let EvidenceBundle::Tpm { ak_public, .. } = b else {
            return Ok(None);
        };
        let name = confidant_attest::tpm::wire::name_of(ak_public.as_bytes());
        match self.store.device_by_ak(&name) {
            Ok(Some(d)) => {
                if let Some(at) = d.revoked_at {
                    return Err(Refusal::new(
                        ReasonCode::DeviceRevoked,
                        format!(
                            "device {} revoked at {}",
                            d.device_id,
                            UnixTime::from_secs(at)
                        ),
                    ));
                }
                return Ok(Some((d.ak, Some(d.device_id.to_string()))));
            }
            Ok(None) => {}
            Err(e) => return Err(Refusal::new(ReasonCode::Internal, e.to_string())),
        }
        match self.store.tpm_ak(&name) {
            Ok(Some(ak)) => Ok(Some((ak, None))),
            Ok(None) => Err(Refusal::new(
                ReasonCode::TpmAkUnknown,
                format!("no enrolled AK named {}", hex::encode(&name)),
            )),
            Err(e) => Err(Refusal::new(ReasonCode::Internal, e.to_string())),
        }
    }

    fn evidence<'b>(
        &'b self,
        b: &'b EvidenceBundle,
        ak: Option<&'b EnrolledAk>,
    ) -> Result<Evidence<'b>, Refusal> {
        Ok(match b {
            EvidenceBundle::Snp { report, vek, chain } => {
                let vek = vek.as_ref().ok_or_else(|| {
                    Refusal::new(
                        ReasonCode::EvidenceInvalid,
                        "SNP evidence without a VCEK/VLEK (the broker does not fetch from AMD KDS)",
                    )
                })?;
                Evidence::Snp(confidant_attest::snp::SnpEvidence {
                    report: report.as_bytes(),
                    vek: vek.as_bytes(),
                    chain: chain.as_deref().map(str::as_bytes),
                })
            }
            EvidenceBundle::Tdx { quote } => {
                let collateral = self.tdx_collateral.ok_or_else(|| {
                    Refusal::new(
                        ReasonCode::EvidenceInvalid,
                        "TDX evidence but no DCAP collateral configured (--tdx-collateral)",
                    )
                })?;
                Evidence::Tdx {
                    quote: quote.as_bytes(),
                    collateral,
                }
            }
            EvidenceBundle::Tpm { quote, .. } => Evidence::Tpm { quote, ak },
            EvidenceBundle::InsecureDev { report_data } => Evidence::InsecureDev {
                report_data: report_data.as_bytes(),
            },
            _ => {
                return Err(Refusal::new(
                    ReasonCode::EvidenceInvalid,
                    "evidence of an unsupported kind",
                ));
            }
        })
    }
}

fn measurements_json(c: &Claims) -> Option<String> {
    serde_json::to_string(&c.measurements).ok()
}

/// The code of a rejection by [`Verifier::appraise`], most fundamental
/// failing rule first.
fn rejection_code(r: &Rejection) -> ReasonCode {
    let Some(claims) = r.claims.as_deref().filter(|_| r.authentic) else {
        return ReasonCode::EvidenceInvalid;
    };
    let failed: Vec<&str> = claims
        .policy
        .iter()
        .filter(|o| !o.pass)
        .map(|o| o.rule.as_str())
        .collect();
    let any = |f: &dyn Fn(&str) -> bool| failed.iter().any(|r| f(r));
    if any(&|r| r == "tee") {
        ReasonCode::TeeMismatch
    } else if any(&|r| r == "tee.accepted") {
        if claims.tee == TeeKind::InsecureDev {
            ReasonCode::InsecureAttester
        } else {
            ReasonCode::TeeNotAccepted
        }
    } else if any(&|r| r == "report_data") {
        ReasonCode::BindingMismatch
    } else if any(&|r| r == "freshness") {
        ReasonCode::NonceExpired
    } else if any(&|r| r.ends_with(".debug")) {
        ReasonCode::PolicyDebug
    } else if any(&|r| {
        matches!(
            r,
            "snp.min_tcb" | "snp.guest_svn" | "tdx.tcb_status" | "tdx.advisories"
        ) || r.ends_with(".collateral_age")
    }) {
        ReasonCode::PolicyTcb
    } else if any(&|r| {
        r == "snp.measurement"
            || r.starts_with("tpm.pcr")
            || r.starts_with("tdx.mr")
            || r.starts_with("tdx.rtmr")
            || r.starts_with("sgx.mr")
    }) {
        ReasonCode::PolicyMeasurement
    } else {
        ReasonCode::PolicyOther
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use confidant_attest::RuleOutcome;

    fn rej(tee: TeeKind, failed: &[&str]) -> Rejection {
        // Claims has no public constructor: take the insecure-dev claims
        // from the verifier and adjust them.
        let v = Verifier::new(Policy::default().insecure_allow_dev_attester()).unwrap();
        let mut c: Claims = v
            .appraise(
                &Evidence::InsecureDev {
                    report_data: &[0; 64],
                },
                &ExpectedReportData::NotCheckedInspectionOnly,
                UnixTime::from_secs(0),
            )
            .unwrap()
            .into_inner();
        c.tee = tee;
        c.policy = failed
            .iter()
            .map(|r| RuleOutcome {
                rule: r.to_string(),
                pass: false,
                detail: String::new(),
            })
            .collect();
        Rejection {
            authentic: true,
            reasons: vec![],
            claims: Some(Box::new(c)),
        }
    }

    #[test]
    fn rejection_codes_by_rule() {
        use ReasonCode::*;
        for (tee, rules, code) in [
            (
                TeeKind::InsecureDev,
                &["tee.accepted"][..],
                InsecureAttester,
            ),
            (TeeKind::Snp, &["tee.accepted"], TeeNotAccepted),
            (TeeKind::Tpm, &["tpm.pcr7", "report_data"], BindingMismatch),
            (TeeKind::Tpm, &["tpm.pcr7"], PolicyMeasurement),
            (TeeKind::Snp, &["snp.measurement", "snp.debug"], PolicyDebug),
            (TeeKind::Tdx, &["tdx.tcb_status", "tdx.mrtd"], PolicyTcb),
            (TeeKind::Tdx, &["tdx.rtmr2"], PolicyMeasurement),
            (TeeKind::Snp, &["freshness"], NonceExpired),
            (TeeKind::Snp, &["snp.vmpl"], PolicyOther),
        ] {
            assert_eq!(rejection_code(&rej(tee, rules)), code, "{rules:?}");
        }
        let mut r = rej(TeeKind::Snp, &["snp.debug"]);
        r.authentic = false;
        assert_eq!(rejection_code(&r), EvidenceInvalid);
    }
}
