//! Appraisal: one [`RuleOutcome`] per policy rule, over authentic claims.

use std::collections::BTreeMap;

use super::{Measurement, Policy};
use crate::claims::{Claims, Detail, ExpectedReportData, RuleOutcome, TeeKind};
use crate::time::UnixTime;

impl Policy {
    /// Appraise authentic claims; one outcome per rule.
    pub(crate) fn appraise(
        &self,
        claims: &Claims,
        expected_kind: Option<TeeKind>,
        expected: &ExpectedReportData,
        at: UnixTime,
    ) -> Vec<RuleOutcome> {
        let mut out = Vec::new();
        let mut rule = |rule: &str, pass: bool, detail: String| {
            out.push(RuleOutcome {
                rule: rule.to_string(),
                pass,
                detail,
            })
        };
        if let Some(k) = expected_kind {
            rule(
                "tee",
                claims.tee == k,
                if claims.tee == k {
                    format!("{k} evidence")
                } else {
                    format!(
                        "wrong TEE type: {} evidence where {k} is expected",
                        claims.tee
                    )
                },
            );
        }
        let accepted = self.tees.contains(&claims.tee);
        rule(
            "tee.accepted",
            accepted,
            format!(
                "{} {} by policy",
                claims.tee,
                if accepted { "accepted" } else { "not accepted" }
            ),
        );
        match expected {
            ExpectedReportData::Exact(want) => {
                let ok = claims.report_data.as_bytes() == want.as_slice();
                rule(
                    "report_data",
                    ok,
                    if ok {
                        "equals the expected value".into()
                    } else {
                        mismatch(claims, want)
                    },
                );
            }
            ExpectedReportData::Challenge {
                report_data,
                issued_at,
            } => {
                let ok = claims.report_data.as_bytes() == report_data.as_slice();
                rule(
                    "report_data",
                    ok,
                    if ok {
                        "equals the expected value".into()
                    } else {
                        mismatch(claims, report_data)
                    },
                );
                if self.max_age_seconds > 0 {
                    let age = at.as_secs().saturating_sub(issued_at.as_secs());
                    rule(
                        "freshness",
                        age <= self.max_age_seconds && *issued_at <= at,
                        format!(
                            "challenge is {age} s old, at most {} s allowed",
                            self.max_age_seconds
                        ),
                    );
                }
            }
            ExpectedReportData::NotCheckedInspectionOnly => {}
        }
        let check_measurements =
            |rule: &mut dyn FnMut(&str, bool, String),
             sect: &str,
             m: &BTreeMap<String, Vec<Measurement>>| {
                for (name, allowed) in m {
                    let got = claims.measurements.get(name);
                    let ok = match got {
                        Some(v) => allowed.is_empty() || allowed.iter().any(|a| a.0 == v.0),
                        None => false,
                    };
                    let got_s = got
                        .map(|g| g.to_string())
                        .unwrap_or_else(|| "absent".into());
                    rule(
                        &format!("{sect}.{name}"),
                        ok,
                        if ok {
                            format!("{got_s} is allowed")
                        } else {
                            format!("{got_s} is not an allowed value")
                        },
                    );
                }
            };
        match &claims.detail {
            Detail::Snp(d) => {
                let p = &self.snp;
                rule(
                    "snp.debug",
                    !claims.debug || p.allow_debug,
                    format!(
                        "guest POLICY.DEBUG is {}; policy {} debug guests",
                        if claims.debug { "set" } else { "clear" },
                        if p.allow_debug { "allows" } else { "refuses" }
                    ),
                );
                rule(
                    "snp.migration_agent",
                    !d.policy_migrate_ma || p.allow_migration_agent,
                    format!("POLICY.MIGRATE_MA is {}", d.policy_migrate_ma),
                );
                rule(
                    "snp.smt",
                    !d.smt_enabled || p.allow_smt,
                    format!("PLATFORM_INFO.SMT_EN is {}", d.smt_enabled),
                );
                rule(
                    "snp.vmpl",
                    d.vmpl <= p.max_vmpl,
                    format!("VMPL {} (at most {})", d.vmpl, p.max_vmpl),
                );
                rule(
                    "snp.signing_key",
                    d.signing_key == crate::snp::VekKind::Vcek || p.allow_vlek,
                    format!("signed by a {}", d.signing_key.name()),
                );
                rule(
                    "snp.min_tcb",
                    d.reported_tcb.meets(&p.min_tcb),
                    format!("REPORTED_TCB {:?}, minimum {:?}", d.reported_tcb, p.min_tcb),
                );
                rule(
                    "snp.guest_svn",
                    d.guest_svn >= p.min_guest_svn,
                    format!("GUEST_SVN {} (minimum {})", d.guest_svn, p.min_guest_svn),
                );
                check_measurements(&mut rule, "snp", &p.measurements);
            }
            Detail::Dcap(d) => {
                let (sect, p) = if claims.tee == TeeKind::Sgx {
                    ("sgx", &self.sgx)
                } else {
                    ("tdx", &self.tdx)
                };
                rule(
                    &format!("{sect}.debug"),
                    !claims.debug || p.allow_debug,
                    format!(
                        "{} {}",
                        if sect == "tdx" {
                            "debug TD:"
                        } else {
                            "debug enclave:"
                        },
                        if claims.debug { "yes" } else { "no" }
                    ),
                );
                // PCK certificate SGX extension "SMTEnabled" (Platform CA
                // certificates only; "Undefined" for Processor CA ones).
                rule(
                    &format!("{sect}.smt"),
                    d.smt != "True" || p.allow_smt,
                    format!("PCK SMT flag {}", d.smt),
                );
                let ok = p.accepted_tcb_statuses.contains(&d.tcb_status);
                rule(
                    &format!("{sect}.tcb_status"),
                    ok,
                    format!(
                        "TCB status {} (advisories: {}); accepted: {}",
                        d.tcb_status,
                        if d.advisory_ids.is_empty() {
                            "none".to_string()
                        } else {
                            d.advisory_ids.join(", ")
                        },
                        p.accepted_tcb_statuses.join(", ")
                    ),
                );
                let bad: Vec<_> = d
                    .advisory_ids
                    .iter()
                    .filter(|a| p.rejected_advisories.contains(a))
                    .cloned()
                    .collect();
                if !p.rejected_advisories.is_empty() {
                    rule(
                        &format!("{sect}.advisories"),
                        bad.is_empty(),
                        format!("refused advisories present: {}", bad.join(", ")),
                    );
                }
                if p.max_collateral_age_seconds > 0 {
                    let age = at.as_secs().saturating_sub(d.collateral_issued);
                    rule(
                        &format!("{sect}.collateral_age"),
                        age <= p.max_collateral_age_seconds,
                        format!(
                            "collateral is {age} s old, at most {} s",
                            p.max_collateral_age_seconds
                        ),
                    );
                }
                check_measurements(&mut rule, sect, &p.measurements);
            }
            Detail::Tpm(_) => {
                check_measurements(&mut rule, "tpm", &self.tpm.measurements);
            }
            Detail::InsecureDev { .. } => {
                tracing::warn!("appraising evidence from the INSECURE dev attester");
            }
        }
        out
    }
}

fn mismatch(claims: &Claims, want: &[u8]) -> String {
    if claims.tee == TeeKind::Tpm {
        format!(
            "nonce mismatch: quote extraData is {}, expected {} (replayed or foreign quote)",
            claims.report_data,
            hex::encode(want)
        )
    } else {
        format!(
            "evidence is bound to {}, expected {}",
            claims.report_data,
            hex::encode(want)
        )
    }
}
