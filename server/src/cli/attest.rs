//! `confidant attest`: produce and verify attestation evidence.
//!
//! Exit codes: 0 accepted, 1 rejected (malformed or tampered evidence is a
//! rejection), 2 usage error (bad flags, unreadable file, invalid policy).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use confidant_attest::attester::{self, BoundData, Choice};
use confidant_attest::snp::SnpEvidence;
use confidant_attest::tpm::EnrolledAk;
use confidant_attest::{Evidence, EvidenceBundle, ExpectedReportData, Policy, UnixTime, Verifier};

/// Largest evidence, certificate or collateral file read.
const MAX_FILE: usize = 1024 * 1024;

#[derive(Subcommand)]
pub enum AttestCmd {
    /// Verify evidence against a policy (default policy without --policy).
    Verify(VerifyArgs),
    /// Produce evidence with the local attester.
    Evidence(EvidenceArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// AMD SEV-SNP report + VCEK/VLEK.
    Snp,
    /// Intel TDX quote + DCAP collateral.
    Tdx,
    /// Intel SGX quote + DCAP collateral.
    Sgx,
    /// TPM 2.0 quote + enrolled AK.
    Tpm,
}

#[derive(Args)]
pub struct VerifyArgs {
    /// Kind of evidence.
    #[arg(long, value_enum)]
    kind: Kind,
    /// SNP: attestation report (1184 bytes).
    #[arg(long, required_if_eq("kind", "snp"))]
    report: Option<PathBuf>,
    /// SNP: VCEK or VLEK certificate (DER or PEM).
    #[arg(long, required_if_eq("kind", "snp"))]
    cert: Option<PathBuf>,
    /// SNP: ASK/ASVK + ARK chain (PEM); the ARK must be a built-in AMD root.
    #[arg(long)]
    chain: Option<PathBuf>,
    /// TDX/SGX: quote.
    #[arg(long, required_if_eq_any([("kind", "tdx"), ("kind", "sgx")]))]
    quote: Option<PathBuf>,
    /// TDX/SGX: collateral JSON (QuoteCollateralV3).
    #[arg(long, required_if_eq_any([("kind", "tdx"), ("kind", "sgx")]))]
    collateral: Option<PathBuf>,
    /// TPM: evidence JSON (`confidant attest evidence` output or a bare quote).
    #[arg(long, required_if_eq("kind", "tpm"))]
    evidence: Option<PathBuf>,
    /// TPM: the enrolled AK record from the verifier's registry (without it
    /// the AK is not bound to an EK and the quote is refused).
    #[arg(long)]
    ak: Option<PathBuf>,
    /// Policy TOML (default: authenticity, dates, TCB status UpToDate, debug off).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Expected REPORT_DATA (SNP/TDX, 64 bytes) or TPM extraData, hex.
    #[arg(long)]
    report_data: Option<String>,
    /// Verification time, Unix seconds (default: now).
    #[arg(long)]
    at: Option<u64>,
    /// Print the verdict as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AttesterArg {
    /// configfs-tsm if present, else a TPM; never the insecure one.
    Auto,
    /// TPM 2.0 (TCTI from TPM2TOOLS_TCTI/TCTI/TEST_TCTI, else /dev/tpmrm0).
    Tpm,
    /// Linux configfs-tsm (SEV-SNP, TDX).
    Configfs,
    /// Insecure development attester: proves nothing, refused by default policies.
    InsecureDev,
}

#[derive(Args)]
pub struct EvidenceArgs {
    /// Nonce to bind (hex, at most 64 bytes).
    #[arg(long)]
    nonce: String,
    /// Which attester.
    #[arg(long, value_enum, default_value = "auto")]
    attester: AttesterArg,
    /// Write the evidence JSON here instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// A usage error: exit code 2.
struct Usage(String);

fn read(path: &Path) -> Result<Vec<u8>, Usage> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| Usage(format!("{}: {e}", path.display())))?;
    let mut buf = Vec::new();
    f.take(MAX_FILE as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Usage(format!("{}: {e}", path.display())))?;
    if buf.len() > MAX_FILE {
        return Err(Usage(format!(
            "{}: larger than {MAX_FILE} bytes",
            path.display()
        )));
    }
    Ok(buf)
}

fn need<'a>(p: &'a Option<PathBuf>, flag: &str) -> Result<&'a Path, Usage> {
    p.as_deref()
        .ok_or_else(|| Usage(format!("{flag} is required for this --kind")))
}

pub fn run(cmd: AttestCmd) -> anyhow::Result<ExitCode> {
    let r = match cmd {
        AttestCmd::Verify(a) => verify(a),
        AttestCmd::Evidence(a) => evidence(a),
    };
    Ok(match r {
        Ok(code) => code,
        Err(Usage(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
    })
}

fn verify(a: VerifyArgs) -> Result<ExitCode, Usage> {
    let policy = match &a.policy {
        Some(p) => Policy::load(p).map_err(|e| Usage(e.to_string()))?,
        None => Policy::default(),
    };
    let expected = match &a.report_data {
        Some(h) => ExpectedReportData::Exact(
            hex::decode(h.trim()).map_err(|e| Usage(format!("--report-data: {e}")))?,
        ),
        None => ExpectedReportData::NotCheckedInspectionOnly,
    };
    let at = a.at.map(UnixTime::from_secs).unwrap_or_else(UnixTime::now);
    let verifier = Verifier::new(policy).map_err(|e| Usage(e.to_string()))?;

    // Read every file first: an unreadable file is a usage error.
    let mut bufs: Vec<Vec<u8>> = Vec::new();
    let outcome = match a.kind {
        Kind::Snp => {
            bufs.push(read(need(&a.report, "--report")?)?);
            bufs.push(read(need(&a.cert, "--cert")?)?);
            if let Some(c) = &a.chain {
                bufs.push(read(c)?);
            }
            let ev = Evidence::Snp(SnpEvidence {
                report: &bufs[0],
                vek: &bufs[1],
                chain: bufs.get(2).map(|v| v.as_slice()),
            });
            verifier.appraise(&ev, &expected, at)
        }
        Kind::Tdx | Kind::Sgx => {
            let q = read(need(&a.quote, "--quote")?)?;
            let c = read(need(&a.collateral, "--collateral")?)?;
            let ev = if a.kind == Kind::Tdx {
                Evidence::Tdx {
                    quote: &q,
                    collateral: &c,
                }
            } else {
                Evidence::Sgx {
                    quote: &q,
                    collateral: &c,
                }
            };
            verifier.appraise(&ev, &expected, at)
        }
        Kind::Tpm => {
            let raw = read(need(&a.evidence, "--evidence")?)?;
            let ak = match &a.ak {
                Some(p) => Some(
                    EnrolledAk::from_trusted_record(&read(p)?)
                        .map_err(|e| Usage(format!("--ak: {e}")))?,
                ),
                None => None,
            };
            let quote = match EvidenceBundle::from_json(&raw) {
                Ok(EvidenceBundle::Tpm { quote, .. }) => Ok(quote),
                Ok(_) => Err("evidence file does not hold TPM evidence".to_string()),
                Err(_) => {
                    serde_json::from_slice(&raw).map_err(|e| format!("malformed TPM evidence: {e}"))
                }
            };
            match quote {
                Ok(q) => verifier.appraise(
                    &Evidence::Tpm {
                        quote: &q,
                        ak: ak.as_ref(),
                    },
                    &expected,
                    at,
                ),
                Err(reason) => Err(confidant_attest::Rejection {
                    authentic: false,
                    reasons: vec![reason],
                    claims: None,
                }),
            }
        }
    };

    let (accepted, authentic, mut reasons, claims) = match outcome {
        Ok(v) => (true, true, Vec::new(), Some(v.into_inner())),
        Err(r) => (false, r.authentic, r.reasons, r.claims.map(|c| *c)),
    };
    if matches!(expected, ExpectedReportData::NotCheckedInspectionOnly) && accepted {
        reasons.push(
            "REPORT_DATA not checked (no --report-data): freshness and key binding unproven".into(),
        );
    }
    if a.json {
        let v = serde_json::json!({
            "verdict": if accepted { "accepted" } else { "rejected" },
            "authentic": authentic,
            "reasons": reasons,
            "claims": claims,
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        println!(
            "verdict: {}",
            if accepted { "accepted" } else { "rejected" }
        );
        println!("authentic: {authentic}");
        for r in &reasons {
            println!("reason: {r}");
        }
        if let Some(c) = &claims {
            println!("tee: {}", c.tee);
            for (k, v) in &c.measurements {
                println!("{k}: {v}");
            }
            println!("report_data: {}", c.report_data);
        }
    }
    Ok(ExitCode::from(if accepted { 0 } else { 1 }))
}

fn evidence(a: EvidenceArgs) -> Result<ExitCode, Usage> {
    let nonce = hex::decode(a.nonce.trim()).map_err(|e| Usage(format!("--nonce: {e}")))?;
    let data = BoundData::from_raw_nonce(&nonce).map_err(|e| Usage(format!("--nonce: {e}")))?;
    let choice = match a.attester {
        AttesterArg::Auto => Choice::Auto,
        AttesterArg::Configfs => Choice::Configfs(attester::DEFAULT_CONFIGFS_TSM.into()),
        AttesterArg::Tpm => match attester::default_tcti() {
            Some(t) => Choice::Tpm(t),
            None => {
                eprintln!("error: no TPM (no /dev/tpmrm0 and no TPM2TOOLS_TCTI/TCTI/TEST_TCTI)");
                return Ok(ExitCode::from(1));
            }
        },
        AttesterArg::InsecureDev => {
            eprintln!("WARNING: insecure-dev attester: this evidence proves nothing");
            Choice::InsecureDev
        }
    };
    let produced = attester::detect(&choice).and_then(|mut at| at.evidence(&data));
    let bundle = match produced {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let json = bundle.to_json();
    match &a.out {
        Some(p) => std::fs::write(p, &json).map_err(|e| Usage(format!("{}: {e}", p.display())))?,
        None => println!("{}", String::from_utf8_lossy(&json)),
    }
    Ok(ExitCode::SUCCESS)
}
