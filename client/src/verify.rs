//! Verification of an attestation document fetched over one TLS connection.

use std::collections::BTreeMap;
use std::fmt;

use confidant_attest::tpm::wire::name_of;
use confidant_attest::{
    Binding, Claims, Evidence, EvidenceBundle, ExpectedReportData, TeeKind, UnixTime, Verifier,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::document::{AttestationDocument, DOCUMENT_VERSION, ModelInfo, ServedConfig};
use crate::error::{Error, Result};
use crate::policy::ClientPolicy;

/// One checked rule.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Rule {
    /// Rule name (`binding.tls_key`, `snp.debug`, `client.model_sha256`, ...).
    pub rule: String,
    /// Whether it holds.
    pub pass: bool,
    /// What was compared.
    pub detail: String,
}

/// What `confidant verify` prints: everything checked, and the verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `accepted` or `refused`.
    pub verdict: &'static str,
    /// Evidence signatures, chains and dates verified.
    pub authentic: bool,
    /// TEE of the evidence.
    pub tee: Option<String>,
    /// Attester the server reports.
    pub attester: String,
    /// Measurements from the evidence, hex.
    pub measurements: BTreeMap<String, String>,
    /// TCB and TEE-specific claims.
    pub tcb: Option<serde_json::Value>,
    /// Chip or platform id.
    pub platform_id: Option<String>,
    /// SHA-256 of the TLS key of the connection, hex.
    pub tls_spki_sha256: String,
    /// The served model.
    pub model: ModelInfo,
    /// Public watermark parameters.
    pub watermark: Option<serde_json::Value>,
    /// The server's security-relevant configuration.
    pub config: ServedConfig,
    /// Every rule, in order.
    pub rules: Vec<Rule>,
}

impl Report {
    /// Whether every rule passed.
    pub fn accepted(&self) -> bool {
        self.verdict == "accepted"
    }

    /// Names and details of the failed rules.
    pub fn failed_rules(&self) -> Vec<String> {
        self.rules
            .iter()
            .filter(|r| !r.pass)
            .map(|r| format!("{}: {}", r.rule, r.detail))
            .collect()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "verdict:      {}", self.verdict.to_uppercase())?;
        writeln!(
            f,
            "TEE:          {} (attester {})",
            self.tee.as_deref().unwrap_or("unknown"),
            self.attester
        )?;
        for (k, v) in &self.measurements {
            writeln!(f, "measurement:  {k} = {v}")?;
        }
        if let Some(t) = &self.tcb {
            writeln!(f, "TCB:          {t}")?;
        }
        if let Some(p) = &self.platform_id {
            writeln!(f, "platform id:  {p}")?;
        }
        writeln!(f, "TLS key:      sha256 {}", self.tls_spki_sha256)?;
        writeln!(
            f,
            "model:        {} sha256 {}{}",
            self.model.id,
            self.model.sha256,
            self.model
                .key_id
                .as_deref()
                .map_or(" (PLAINTEXT file)".to_owned(), |k| format!(
                    " (encrypted, key id {k})"
                ))
        )?;
        match &self.watermark {
            Some(w) => writeln!(
                f,
                "watermark:    {} {w}",
                if self.config.watermark_enforced {
                    "enforced"
                } else {
                    "on"
                }
            )?,
            None => writeln!(f, "watermark:    none")?,
        }
        writeln!(
            f,
            "audit log:    {}",
            if self.config.audit_includes_content {
                "includes prompts and completions"
            } else {
                "metadata only"
            }
        )?;
        writeln!(f, "server:       confidant {}", self.config.server_version)?;
        writeln!(f, "rules:")?;
        for r in &self.rules {
            writeln!(
                f,
                "  [{}] {}: {}",
                if r.pass { "pass" } else { "FAIL" },
                r.rule,
                r.detail
            )?;
        }
        Ok(())
    }
}

fn rule(rules: &mut Vec<Rule>, name: &str, pass: bool, detail: impl Into<String>) {
    rules.push(Rule {
        rule: name.to_owned(),
        pass,
        detail: detail.into(),
    });
}

fn hex32(what: &str, s: &str) -> Result<Vec<u8>> {
    hex::decode(s).map_err(|_| Error::Document(format!("{what} is not hex")))
}

/// Verifies `doc`, fetched with `nonce` over a TLS connection whose server
/// key was `observed_spki_der`, against `policy` at time `now`.
///
/// Returns the report when every rule passes, [`Error::Refused`] with the
/// report otherwise, and [`Error::Document`] when the document cannot be
/// read at all.
pub fn verify_document(
    doc: &AttestationDocument,
    nonce: &[u8],
    observed_spki_der: &[u8],
    policy: &ClientPolicy,
    now: UnixTime,
) -> Result<Report> {
    if doc.version != DOCUMENT_VERSION {
        return Err(Error::Document(format!(
            "version {:?}, expected {DOCUMENT_VERSION:?}",
            doc.version
        )));
    }
    let doc_spki = hex32("tls_spki", &doc.tls_spki)?;
    let hpke_pk = hex32("hpke_public_key", &doc.hpke_public_key)?;
    let mut rules = Vec::new();

    // The key the evidence binds is the key of this very connection: a
    // relay that forwards the real document but terminates TLS itself
    // presents another key and fails here.
    let observed_sha = hex::encode(Sha256::digest(observed_spki_der));
    rule(
        &mut rules,
        "binding.tls_key",
        doc_spki == observed_spki_der && doc.tls_spki_sha256 == observed_sha,
        if doc_spki == observed_spki_der {
            format!("the connection's TLS key (sha256 {observed_sha}) is the bound key")
        } else {
            format!(
                "the connection's TLS key (sha256 {observed_sha}) is NOT the key the document binds (sha256 {}): possible man in the middle",
                hex::encode(Sha256::digest(&doc_spki))
            )
        },
    );
    rule(
        &mut rules,
        "binding.nonce",
        doc.nonce == hex::encode(nonce),
        "the document answers this client's nonce",
    );

    // Evidence, bound to nonce + the document's keys.
    let binding = Binding {
        nonce,
        tls_spki_der: &doc_spki,
        hpke_public_key: &hpke_pk,
    };
    let bundle_json =
        serde_json::to_vec(&doc.evidence).map_err(|e| Error::Document(format!("evidence: {e}")))?;
    let bundle = EvidenceBundle::from_json(&bundle_json)
        .map_err(|e| Error::Document(format!("evidence: {e}")))?;
    let mut authentic = false;
    let mut claims: Option<Claims> = None;
    let ak = match &bundle {
        EvidenceBundle::Tpm { ak_public, .. } => {
            let name = name_of(ak_public.as_bytes());
            let found = policy.tpm_aks.iter().find(|a| a.name() == name.as_slice());
            if found.is_none() {
                rule(
                    &mut rules,
                    "tpm.ak_enrolled",
                    false,
                    format!(
                        "AK {} is not among the policy's enrolled AK records",
                        hex::encode(&name)
                    ),
                );
            }
            found
        }
        _ => None,
    };
    let evidence = match &bundle {
        EvidenceBundle::Snp { report, vek, chain } => match vek {
            Some(vek) => Some(Evidence::Snp(confidant_attest::snp::SnpEvidence {
                report: report.as_bytes(),
                vek: vek.as_bytes(),
                chain: chain.as_deref().map(str::as_bytes),
            })),
            None => {
                rule(
                    &mut rules,
                    "snp.vek",
                    false,
                    "SNP evidence without a VCEK/VLEK",
                );
                None
            }
        },
        EvidenceBundle::Tdx { quote } => match &policy.tdx_collateral {
            Some(c) => Some(Evidence::Tdx {
                quote: quote.as_bytes(),
                collateral: c,
            }),
            None => {
                rule(
                    &mut rules,
                    "tdx.collateral",
                    false,
                    "TDX evidence but the client policy names no DCAP collateral",
                );
                None
            }
        },
        EvidenceBundle::Tpm { quote, .. } => ak.map(|ak| Evidence::Tpm {
            quote,
            ak: Some(ak),
        }),
        EvidenceBundle::InsecureDev { report_data } => Some(Evidence::InsecureDev {
            report_data: report_data.as_bytes(),
        }),
        _ => {
            rule(
                &mut rules,
                "evidence.kind",
                false,
                "evidence of an unsupported kind",
            );
            None
        }
    };
    if let Some(evidence) = evidence {
        let expected = if matches!(bundle, EvidenceBundle::Tpm { .. }) {
            ExpectedReportData::Exact(binding.tpm_extra_data().to_vec())
        } else {
            ExpectedReportData::Exact(binding.report_data().to_vec())
        };
        let verifier =
            Verifier::new(policy.attest.clone()).map_err(|e| Error::Policy(e.to_string()))?;
        match verifier.appraise(&evidence, &expected, now) {
            Ok(v) => {
                authentic = true;
                let c = v.into_inner();
                for r in &c.policy {
                    rule(&mut rules, &r.rule, r.pass, r.detail.clone());
                }
                claims = Some(c);
            }
            Err(rej) => {
                authentic = rej.authentic;
                if let Some(c) = rej.claims {
                    for r in &c.policy {
                        rule(&mut rules, &r.rule, r.pass, r.detail.clone());
                    }
                    claims = Some(*c);
                }
                let listed: Vec<String> = rules.iter().map(|r| r.detail.clone()).collect();
                for reason in rej.reasons {
                    if !listed.iter().any(|d| d == &reason) {
                        rule(&mut rules, "evidence", false, reason);
                    }
                }
            }
        }
    }

    // What only a client checks.
    if !policy.model_sha256.is_empty() {
        let ok = policy
            .model_sha256
            .iter()
            .any(|m| hex::encode(m) == doc.model.sha256);
        rule(
            &mut rules,
            "client.model_sha256",
            ok,
            format!(
                "model sha256 {} {}",
                doc.model.sha256,
                if ok {
                    "is allowed"
                } else {
                    "is not in the policy"
                }
            ),
        );
    }
    if doc.config.insecure_plaintext_model || doc.model.key_id.is_none() {
        rule(
            &mut rules,
            "client.encrypted_model",
            policy.allow_insecure_plaintext_model,
            "the server loaded a PLAINTEXT model file (no key broker involved)",
        );
    }
    if policy.require_watermark {
        rule(
            &mut rules,
            "client.watermark",
            doc.config.watermark_enforced && doc.watermark.is_some(),
            "every output must carry the deployment's watermark",
        );
    }
    if matches!(claims.as_ref().map(|c| c.tee), Some(TeeKind::InsecureDev)) {
        tracing::warn!(
            "the server's evidence comes from the INSECURE dev attester: it proves nothing"
        );
    }

    let pass = authentic && !rules.is_empty() && rules.iter().all(|r| r.pass);
    let report = Report {
        verdict: if pass { "accepted" } else { "refused" },
        authentic,
        tee: claims.as_ref().map(|c| c.tee.to_string()),
        attester: doc.config.attester.clone(),
        measurements: claims
            .as_ref()
            .map(|c| {
                c.measurements
                    .iter()
                    .map(|(k, v)| (k.clone(), hex::encode(v.as_bytes())))
                    .collect()
            })
            .unwrap_or_default(),
        tcb: claims
            .as_ref()
            .and_then(|c| serde_json::to_value(&c.detail).ok()),
        platform_id: claims
            .as_ref()
            .and_then(|c| c.platform_id.as_ref())
            .map(|p| hex::encode(p.as_bytes())),
        tls_spki_sha256: observed_sha,
        model: doc.model.clone(),
        watermark: doc.watermark.clone(),
        config: doc.config.clone(),
        rules,
    };
    if pass {
        Ok(report)
    } else {
        Err(Error::Refused {
            report: Box::new(report),
        })
    }
}
