//! `confidant attest`: produce and verify attestation evidence.
//!
//! Exit codes: 0 accepted, 1 rejected (malformed or tampered evidence is a
//! rejection), 2 usage error (bad flags, unreadable file, invalid policy).
//! `enrol`: 0 enrolled (or, with `--check`, still valid), 1 the TPM or the
//! enrolment failed, 2 usage error.

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
    /// Enrol this machine's own TPM: a new AK bound to the EK by credential
    /// activation (both sides run here), and a policy pinning PCRs 0-7.
    Enrol(EnrolArgs),
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

#[derive(Args)]
pub struct EnrolArgs {
    /// TPM to enrol (`device:/dev/tpmrm0`, `swtpm:host=127.0.0.1,port=2321`).
    #[arg(long)]
    tcti: String,
    /// CA certificate (PEM or DER) the EK certificate in NV must be issued by.
    #[arg(long, required_unless_present = "check")]
    ek_ca: Option<PathBuf>,
    /// Where to write ak.json, ak.keys and pcr-policy.toml (created if missing).
    #[arg(long)]
    out_dir: PathBuf,
    /// Do not enrol: check that the enrolment in --out-dir still works with
    /// this TPM (the AK loads, and a fresh quote verifies against ak.json and
    /// pcr-policy.toml). Exit 0 if it does, 1 if not.
    #[arg(long)]
    check: bool,
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
        AttestCmd::Enrol(a) => enrol(a),
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

/// Files `confidant attest enrol` writes into `--out-dir`.
const AK_RECORD: &str = "ak.json";
const AK_KEYS: &str = "ak.keys";
const PCR_POLICY: &str = "pcr-policy.toml";

fn enrol(a: EnrolArgs) -> Result<ExitCode, Usage> {
    if a.check {
        return enrol_check(&a);
    }
    let ca_path = need(&a.ek_ca, "--ek-ca")?;
    let ek_ca = confidant_attest::tpm::certificate_der(&read(ca_path)?)
        .map_err(|e| Usage(format!("--ek-ca {}: {e}", ca_path.display())))?;
    match enrol_tpm(&a.tcti, &ek_ca) {
        Ok(e) => {
            std::fs::create_dir_all(&a.out_dir)
                .map_err(|e| Usage(format!("--out-dir {}: {e}", a.out_dir.display())))?;
            write_enrolment(&a.out_dir, &e, ca_path)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(msg) => {
            eprintln!("error: enrolling the TPM at {}: {msg}", a.tcti);
            Ok(ExitCode::from(1))
        }
    }
}

/// The outcome of an enrolment, before it is written.
struct Enrolled {
    ak: EnrolledAk,
    keys: Vec<u8>,
    /// PCR index and SHA-256 value, as quoted and verified.
    pcrs: Vec<(u8, String)>,
}

/// Both sides of credential activation against one TPM (TPM 2.0 Part 1, 24):
/// the verifier's checks of the EK certificate and TPM2_MakeCredential
/// (`Enrolment::start`), the device's TPM2_ActivateCredential, then a quote
/// with a fresh nonce verified under the new AK, whose PCR values the
/// policy pins.
fn enrol_tpm(tcti: &str, ek_ca: &[u8]) -> Result<Enrolled, String> {
    use confidant_attest::attester::TpmAttester;
    use confidant_attest::tpm::Enrolment;
    let s = |e: confidant_attest::Error| e.to_string();
    let mut t = TpmAttester::open(tcti).map_err(s)?;
    let ek_cert = t
        .ek_certificate()
        .map_err(|e| format!("reading the EK certificate from NV: {e}"))?;
    let keys = t.create_ak().map_err(s)?;
    let (enrolment, challenge) = Enrolment::start(
        &ek_cert,
        &[ek_ca.to_vec()],
        &keys.public_bytes().map_err(s)?,
        UnixTime::now(),
    )
    .map_err(s)?;
    let secret = t
        .activate_credential(&challenge)
        .map_err(|e| format!("TPM2_ActivateCredential: {e}"))?;
    let ak = enrolment.finish(&secret).map_err(s)?;

    let policy = Policy::from_toml("tees = [\"tpm\"]\n").map_err(s)?;
    let claims = quote_and_verify(&mut t, &ak, policy)?;
    let pcrs = t
        .pcrs
        .iter()
        .map(|&i| {
            claims
                .measurements
                .get(&format!("pcr{i}"))
                .map(|v| (i, hex::encode(v.as_bytes())))
                .ok_or_else(|| format!("PCR {i} missing from the verified quote"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Enrolled {
        ak,
        keys: keys.to_bytes().map_err(s)?,
        pcrs,
    })
}

/// Quote the attester's PCRs with a random nonce and appraise the quote
/// under `ak` and `policy`, the nonce expected exactly.
fn quote_and_verify(
    t: &mut confidant_attest::attester::TpmAttester,
    ak: &EnrolledAk,
    policy: Policy,
) -> Result<confidant_attest::Claims, String> {
    use confidant_attest::attester::Attester as _;
    let nonce: [u8; 32] = rand::random();
    let data = BoundData::from_raw_nonce(&nonce).map_err(|e| e.to_string())?;
    let EvidenceBundle::Tpm { quote, .. } = t.evidence(&data).map_err(|e| e.to_string())? else {
        return Err("the TPM attester produced non-TPM evidence".into());
    };
    let verifier = Verifier::new(policy).map_err(|e| e.to_string())?;
    verifier
        .appraise(
            &Evidence::Tpm {
                quote: &quote,
                ak: Some(ak),
            },
            &ExpectedReportData::Exact(data.tpm_extra_data),
            UnixTime::now(),
        )
        .map(|v| v.into_inner())
        .map_err(|r| format!("quote under the AK rejected: {}", r.reasons.join("; ")))
}

fn policy_toml(pcrs: &[(u8, String)], ca: &Path) -> String {
    // Not named as `ek_ca_files`: key-broker policies must not name EK CAs
    // (they belong to enrolment, and quotes are verified under ak.json).
    let mut t = format!(
        "# Written by `confidant attest enrol`: TPM quotes only, signed by an\n\
         # enrolled AK (ak.json, given to the verifier apart), with SHA-256 PCRs\n\
         # holding the values read at enrolment. EK CA checked at enrolment:\n\
         # {:?}\n\
         tees = [\"tpm\"]\n\n[tpm]\n",
        ca.display().to_string()
    );
    for (i, v) in pcrs {
        t.push_str(&format!("measurements.pcr{i} = [\"{v}\"]\n"));
    }
    t
}

/// Write `bytes` to `path` through a temporary file in the same directory,
/// renamed into place with `mode`: a reader never sees half a file.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Usage> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let fail = |e: std::io::Error| Usage(format!("{}: {e}", path.display()));
    // NamedTempFile is created mode 0600; widened below only if asked.
    let mut f = tempfile::NamedTempFile::new_in(dir).map_err(fail)?;
    f.write_all(bytes).map_err(fail)?;
    f.as_file().sync_all().map_err(fail)?;
    f.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(fail)?;
    f.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}

fn write_enrolment(dir: &Path, e: &Enrolled, ca: &Path) -> Result<(), Usage> {
    let policy = policy_toml(&e.pcrs, ca);
    // The policy written must load and be what was verified.
    Policy::from_toml(&policy).map_err(|err| Usage(format!("generated policy: {err}")))?;
    // Keys first, policy last: a directory with all three files is complete.
    let (keys, record, pol) = (dir.join(AK_KEYS), dir.join(AK_RECORD), dir.join(PCR_POLICY));
    write_atomic(&keys, &e.keys, 0o600)?;
    write_atomic(&record, &e.ak.to_record(), 0o644)?;
    write_atomic(&pol, policy.as_bytes(), 0o644)?;
    println!(
        "enrolled AK {} (EK certificate SHA-256 {})",
        hex::encode(e.ak.name()),
        hex::encode(e.ak.ek_cert_sha256())
    );
    println!(
        "wrote {} (AK record: `confidant kbs ak add --record`, [client] tpm_ak_records)",
        record.display()
    );
    println!(
        "wrote {} (AK public area and TPM-wrapped private blob, mode 0600)",
        keys.display()
    );
    let list: Vec<String> = e.pcrs.iter().map(|(i, _)| i.to_string()).collect();
    println!(
        "wrote {} (tees = [\"tpm\"], SHA-256 PCRs {} pinned)",
        pol.display(),
        list.join(",")
    );
    Ok(())
}

/// `--check`: the enrolment in the directory still works with this TPM.
fn enrol_check(a: &EnrolArgs) -> Result<ExitCode, Usage> {
    use confidant_attest::attester::{TpmAttester, TpmKeys};
    let d = &a.out_dir;
    let keys = TpmKeys::from_bytes(&read(&d.join(AK_KEYS))?)
        .map_err(|e| Usage(format!("{}: {e}", d.join(AK_KEYS).display())))?;
    let ak = EnrolledAk::from_trusted_record(&read(&d.join(AK_RECORD))?)
        .map_err(|e| Usage(format!("{}: {e}", d.join(AK_RECORD).display())))?;
    let policy = Policy::load(&d.join(PCR_POLICY)).map_err(|e| Usage(e.to_string()))?;
    let r = (|| {
        let public = keys.public_bytes().map_err(|e| e.to_string())?;
        if public != ak.public() {
            return Err(format!("{AK_KEYS} does not hold the AK of {AK_RECORD}"));
        }
        let mut t = TpmAttester::open(&a.tcti).map_err(|e| e.to_string())?;
        t.use_ak(keys);
        quote_and_verify(&mut t, &ak, policy)
    })();
    match r {
        Ok(_) => {
            println!("enrolment in {} verifies with {}", d.display(), a.tcti);
            Ok(ExitCode::SUCCESS)
        }
        Err(msg) => {
            eprintln!("enrolment in {} does not verify: {msg}", d.display());
            Ok(ExitCode::from(1))
        }
    }
}
