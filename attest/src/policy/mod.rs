//! Appraisal policy: one TOML format for the key broker and the client.
//!
//! ```toml
//! # TEEs accepted at all (default: snp, tdx, tpm).
//! tees = ["snp", "tdx"]
//!
//! [freshness]
//! max_age_seconds = 300          # challenge age; 0 = not checked
//!
//! [snp]
//! allow_debug = false
//! allow_migration_agent = false
//! allow_smt = true
//! allow_vlek = true
//! max_vmpl = 3
//! min_guest_svn = 0
//! min_tcb = { bootloader = 3, tee = 0, snp = 8, microcode = 115 }
//! measurements.measurement = ["<96 hex chars>"]
//!
//! [tdx]
//! accepted_tcb_statuses = ["UpToDate"]
//! allow_debug = false
//! allow_smt = true
//! rejected_advisories = ["INTEL-SA-00837"]
//! max_collateral_age_seconds = 2592000
//! measurements.mrtd = ["<96 hex chars>"]
//! measurements.rtmr0 = ["<96 hex chars>"]
//!
//! [tpm]
//! measurements.pcr7 = ["<64 hex chars>"]   # SHA-256 bank
//! ek_ca_files = ["ek-ca.pem"]              # relative to the policy file
//! ```
//! Unknown keys are errors: a misspelt rule must not silently vanish.
//! Measurements are checked for length when the policy is loaded.

mod appraise;

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::claims::TeeKind;
use crate::snp::TcbVersion;
use crate::{Error, Result};

/// Largest policy file accepted.
pub const MAX_POLICY_LEN: usize = 256 * 1024;

/// A measurement value allowed by policy, length-checked at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measurement(Vec<u8>);

impl Measurement {
    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFreshness {
    max_age_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTcb {
    bootloader: Option<u8>,
    tee: Option<u8>,
    snp: Option<u8>,
    microcode: Option<u8>,
    fmc: Option<u8>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSnp {
    allow_debug: Option<bool>,
    allow_migration_agent: Option<bool>,
    allow_smt: Option<bool>,
    allow_vlek: Option<bool>,
    max_vmpl: Option<u32>,
    min_guest_svn: Option<u32>,
    min_tcb: Option<FileTcb>,
    #[serde(default)]
    measurements: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDcap {
    accepted_tcb_statuses: Option<Vec<String>>,
    allow_debug: Option<bool>,
    allow_smt: Option<bool>,
    #[serde(default)]
    rejected_advisories: Vec<String>,
    max_collateral_age_seconds: Option<u64>,
    #[serde(default)]
    measurements: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTpm {
    #[serde(default)]
    measurements: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    ek_ca_files: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePolicy {
    tees: Option<Vec<String>>,
    #[serde(default)]
    freshness: FileFreshness,
    #[serde(default)]
    snp: FileSnp,
    #[serde(default)]
    tdx: FileDcap,
    #[serde(default)]
    sgx: FileDcap,
    #[serde(default)]
    tpm: FileTpm,
}

/// SNP rules.
#[derive(Debug, Clone)]
pub struct SnpRules {
    /// Accept guests whose POLICY.DEBUG is set (default false).
    pub allow_debug: bool,
    /// Accept guests whose POLICY.MIGRATE_MA is set (default false).
    pub allow_migration_agent: bool,
    /// Accept hosts with SMT enabled (default true).
    pub allow_smt: bool,
    /// Accept VLEK-signed reports (default true).
    pub allow_vlek: bool,
    /// Highest VMPL accepted (default 3: any).
    pub max_vmpl: u32,
    /// Minimum GUEST_SVN.
    pub min_guest_svn: u32,
    /// Minimum REPORTED_TCB.
    pub min_tcb: TcbVersion,
    /// Allowed values per measurement name (`measurement`); empty = any.
    pub measurements: BTreeMap<String, Vec<Measurement>>,
}

/// TDX or SGX rules.
#[derive(Debug, Clone)]
pub struct DcapRules {
    /// TCB statuses accepted (default: `UpToDate` only).
    pub accepted_tcb_statuses: Vec<String>,
    /// Accept debug TDs / enclaves (default false).
    pub allow_debug: bool,
    /// Accept platforms whose PCK certificate says SMT is enabled (default true).
    /// Migratable TDs are always refused (dcap-qvl), whatever the policy.
    pub allow_smt: bool,
    /// Advisories that refuse the evidence whatever the status.
    pub rejected_advisories: Vec<String>,
    /// Oldest collateral accepted, seconds since its latest issue date (0: not checked).
    pub max_collateral_age_seconds: u64,
    /// Allowed values per measurement (`mrtd`, `rtmr0`..`rtmr3`; SGX `mrenclave`, `mrsigner`).
    pub measurements: BTreeMap<String, Vec<Measurement>>,
}

/// TPM rules.
#[derive(Debug, Clone, Default)]
pub struct TpmRules {
    /// Allowed values per PCR (`pcr0`..`pcr23`, SHA-256 bank).
    pub measurements: BTreeMap<String, Vec<Measurement>>,
    /// EK CA certificates (DER) an EK certificate must chain to.
    pub ek_cas_der: Vec<Vec<u8>>,
}

/// An appraisal policy. [`Policy::default`] is the strict default: SNP, TDX
/// and TPM accepted; debug refused; TDX TCB status `UpToDate` only; SGX and
/// the insecure dev attester refused; measurements not pinned.
#[derive(Debug, Clone)]
pub struct Policy {
    /// TEEs accepted.
    pub tees: Vec<TeeKind>,
    /// Maximum challenge age in seconds (0: not checked).
    pub max_age_seconds: u64,
    /// SEV-SNP rules.
    pub snp: SnpRules,
    /// TDX rules.
    pub tdx: DcapRules,
    /// SGX rules (SGX is refused unless listed in `tees`).
    pub sgx: DcapRules,
    /// TPM rules.
    pub tpm: TpmRules,
}

impl Default for DcapRules {
    fn default() -> Self {
        DcapRules {
            accepted_tcb_statuses: vec!["UpToDate".into()],
            allow_debug: false,
            allow_smt: true,
            rejected_advisories: Vec::new(),
            max_collateral_age_seconds: 0,
            measurements: BTreeMap::new(),
        }
    }
}

impl Default for SnpRules {
    fn default() -> Self {
        SnpRules {
            allow_debug: false,
            allow_migration_agent: false,
            allow_smt: true,
            allow_vlek: true,
            max_vmpl: 3,
            min_guest_svn: 0,
            min_tcb: TcbVersion::default(),
            measurements: BTreeMap::new(),
        }
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            tees: vec![TeeKind::Snp, TeeKind::Tdx, TeeKind::Tpm],
            max_age_seconds: 300,
            snp: SnpRules::default(),
            tdx: DcapRules::default(),
            sgx: DcapRules::default(),
            tpm: TpmRules::default(),
        }
    }
}

const TCB_STATUSES: &[&str] = &[
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
    "TDRelaunchAdvised",
    "TDRelaunchAdvisedConfigurationNeeded",
];

fn measurements(
    section: &str,
    m: BTreeMap<String, Vec<String>>,
    allowed: &dyn Fn(&str) -> Option<usize>,
) -> Result<BTreeMap<String, Vec<Measurement>>> {
    let mut out = BTreeMap::new();
    for (name, values) in m {
        let len = allowed(&name).ok_or_else(|| {
            Error::Policy(format!("[{section}] has no measurement named {name:?}"))
        })?;
        let mut v = Vec::with_capacity(values.len());
        for h in values {
            let b = hex::decode(h.trim())
                .map_err(|e| Error::Policy(format!("[{section}] {name}: {h:?} is not hex: {e}")))?;
            if b.len() != len {
                return Err(Error::Policy(format!(
                    "[{section}] {name}: {} bytes, expected {len}",
                    b.len()
                )));
            }
            v.push(Measurement(b));
        }
        out.insert(name, v);
    }
    Ok(out)
}

fn dcap_rules(section: &str, f: FileDcap, names: &[&str]) -> Result<DcapRules> {
    let d = DcapRules::default();
    let statuses = f.accepted_tcb_statuses.unwrap_or(d.accepted_tcb_statuses);
    for s in &statuses {
        if !TCB_STATUSES.contains(&s.as_str()) {
            return Err(Error::Policy(format!(
                "[{section}] unknown TCB status {s:?} (Revoked is never accepted)"
            )));
        }
    }
    let sgx = section == "sgx";
    Ok(DcapRules {
        accepted_tcb_statuses: statuses,
        allow_debug: f.allow_debug.unwrap_or(false),
        allow_smt: f.allow_smt.unwrap_or(true),
        rejected_advisories: f.rejected_advisories,
        max_collateral_age_seconds: f.max_collateral_age_seconds.unwrap_or(0),
        measurements: measurements(section, f.measurements, &|n| {
            names.contains(&n).then_some(if sgx { 32 } else { 48 })
        })?,
    })
}

impl Policy {
    /// Parse a policy from TOML text. Paths in `ek_ca_files` cannot be
    /// resolved here; use [`Policy::load`] for a file that names them.
    pub fn from_toml(text: &str) -> Result<Self> {
        Self::parse(text, None)
    }

    /// Load a policy file; `ek_ca_files` are resolved relative to it.
    pub fn load(path: &Path) -> Result<Self> {
        let text = crate::bounded::read_bounded(path, MAX_POLICY_LEN)?;
        let text = String::from_utf8(text)
            .map_err(|_| Error::Policy(format!("{} is not UTF-8", path.display())))?;
        Self::parse(&text, Some(path.parent().unwrap_or(Path::new("."))))
    }

    /// Parse policy text whose `ek_ca_files` are relative to `dir` (a
    /// policy embedded in a larger file, such as a client policy).
    pub fn from_toml_in(text: &str, dir: &Path) -> Result<Self> {
        Self::parse(text, Some(dir))
    }

    fn parse(text: &str, dir: Option<&Path>) -> Result<Self> {
        if text.len() > MAX_POLICY_LEN {
            return Err(Error::TooLarge {
                what: "policy",
                len: text.len(),
                max: MAX_POLICY_LEN,
            });
        }
        let f: FilePolicy = toml::from_str(text).map_err(|e| Error::Policy(e.to_string()))?;
        let d = Policy::default();
        let tees = match f.tees {
            None => d.tees,
            Some(list) => list
                .iter()
                .map(|t| match t.as_str() {
                    "snp" => Ok(TeeKind::Snp),
                    "tdx" => Ok(TeeKind::Tdx),
                    "sgx" => Ok(TeeKind::Sgx),
                    "tpm" => Ok(TeeKind::Tpm),
                    "insecure-dev" => Err(Error::Policy(
                        "insecure-dev cannot be enabled from a policy file; \
                         call Policy::insecure_allow_dev_attester() in code"
                            .into(),
                    )),
                    other => Err(Error::Policy(format!("unknown TEE {other:?}"))),
                })
                .collect::<Result<_>>()?,
        };
        let sd = SnpRules::default();
        let mt = f.snp.min_tcb.unwrap_or_default();
        let snp = SnpRules {
            allow_debug: f.snp.allow_debug.unwrap_or(sd.allow_debug),
            allow_migration_agent: f
                .snp
                .allow_migration_agent
                .unwrap_or(sd.allow_migration_agent),
            allow_smt: f.snp.allow_smt.unwrap_or(sd.allow_smt),
            allow_vlek: f.snp.allow_vlek.unwrap_or(sd.allow_vlek),
            max_vmpl: f.snp.max_vmpl.unwrap_or(sd.max_vmpl),
            min_guest_svn: f.snp.min_guest_svn.unwrap_or(0),
            min_tcb: TcbVersion {
                fmc: mt.fmc,
                bootloader: mt.bootloader.unwrap_or(0),
                tee: mt.tee.unwrap_or(0),
                snp: mt.snp.unwrap_or(0),
                microcode: mt.microcode.unwrap_or(0),
            },
            measurements: measurements("snp", f.snp.measurements, &|n| {
                (n == "measurement").then_some(48)
            })?,
        };
        if snp.max_vmpl > 3 {
            return Err(Error::Policy("[snp] max_vmpl must be 0..=3".into()));
        }
        let tdx = dcap_rules("tdx", f.tdx, &["mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3"])?;
        let sgx = dcap_rules("sgx", f.sgx, &["mrenclave", "mrsigner"])?;
        let mut ek_cas_der = Vec::new();
        if !f.tpm.ek_ca_files.is_empty() {
            let dir = dir.ok_or_else(|| {
                Error::Policy("ek_ca_files needs Policy::load (paths are file-relative)".into())
            })?;
            for p in &f.tpm.ek_ca_files {
                let bytes = crate::bounded::read_bounded(&dir.join(p), 64 * 1024)?;
                ek_cas_der.push(crate::tpm::cert_to_der(&bytes)?);
            }
        }
        let tpm = TpmRules {
            measurements: measurements("tpm", f.tpm.measurements, &|n| {
                let i: u8 = n.strip_prefix("pcr")?.parse().ok()?;
                (i < 24).then_some(32)
            })?,
            ek_cas_der,
        };
        Ok(Policy {
            tees,
            max_age_seconds: f.freshness.max_age_seconds.unwrap_or(d.max_age_seconds),
            snp,
            tdx,
            sgx,
            tpm,
        })
    }

    /// Accept evidence from the insecure development attester. Never use in
    /// production: it proves nothing. Logged at every call.
    pub fn insecure_allow_dev_attester(mut self) -> Self {
        tracing::warn!("policy accepts the INSECURE dev attester: evidence proves nothing");
        if !self.tees.contains(&TeeKind::InsecureDev) {
            self.tees.push(TeeKind::InsecureDev);
        }
        self
    }
}
