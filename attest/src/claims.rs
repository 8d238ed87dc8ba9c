//! What verification yields: claims, the proof type, and rejections.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Serialize, Serializer};

/// Bytes that serialize as lowercase hex.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hex(pub Vec<u8>);

impl Hex {
    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

impl fmt::Display for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

impl Serialize for Hex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(&self.0))
    }
}

impl<'de> serde::Deserialize<'de> for Hex {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        hex::decode(s.as_ref())
            .map(Hex)
            .map_err(serde::de::Error::custom)
    }
}

impl From<&[u8]> for Hex {
    fn from(b: &[u8]) -> Self {
        Hex(b.to_vec())
    }
}

/// Which kind of trusted execution environment produced the evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum TeeKind {
    /// AMD SEV-SNP.
    Snp,
    /// Intel TDX.
    Tdx,
    /// Intel SGX (verified only to be refused where TDX is expected).
    Sgx,
    /// TPM 2.0 quote.
    Tpm,
    /// The insecure development attester: no hardware, no trust.
    InsecureDev,
}

impl fmt::Display for TeeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TeeKind::Snp => "snp",
            TeeKind::Tdx => "tdx",
            TeeKind::Sgx => "sgx",
            TeeKind::Tpm => "tpm",
            TeeKind::InsecureDev => "insecure-dev",
        })
    }
}

/// Outcome of one policy rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleOutcome {
    /// Rule name, e.g. `snp.debug`, `tdx.tcb_status`, `report_data`.
    pub rule: String,
    /// Whether the evidence satisfies it.
    pub pass: bool,
    /// What was checked against what.
    pub detail: String,
}

/// Claims extracted from authentic evidence.
///
/// `measurements` holds what a user pins in a policy: `measurement` (SNP),
/// `mrtd` and `rtmr0..3` (TDX), `pcr<N>` in the SHA-256 bank (TPM).
#[derive(Debug, Clone, Serialize)]
pub struct Claims {
    /// TEE kind.
    pub tee: TeeKind,
    /// REPORT_DATA (64 bytes) or TPM extraData.
    pub report_data: Hex,
    /// Named measurements, hex.
    pub measurements: BTreeMap<String, Hex>,
    /// Chip or platform identifier (SNP CHIP_ID, TDX PPID / FMSPC, TPM AK name).
    pub platform_id: Option<Hex>,
    /// Debug enabled in the guest (SNP POLICY.DEBUG, TDX TD_ATTRIBUTES.DEBUG).
    pub debug: bool,
    /// TEE-specific claims: TCB (SNP SPLs, TDX status and advisories, TPM
    /// clock), flags (VMPL, migration agent, SMT, signing key, ...).
    pub detail: Detail,
    /// Verdict per policy rule.
    pub policy: Vec<RuleOutcome>,
}

impl Claims {
    pub(crate) fn new(tee: TeeKind, report_data: &[u8], detail: Detail) -> Self {
        Claims {
            tee,
            report_data: Hex(report_data.to_vec()),
            measurements: BTreeMap::new(),
            platform_id: None,
            debug: false,
            detail,
            policy: Vec::new(),
        }
    }

    /// Whether every policy rule passed.
    pub fn policy_passed(&self) -> bool {
        self.policy.iter().all(|r| r.pass)
    }
}

/// Proof that evidence was authentic and accepted by a policy at a given time.
///
/// Only this crate's verifier constructs it: the field is private and there
/// is no public constructor. Functions that must only run on verified
/// evidence (releasing a key, pinning a TLS key) take a `&Verified<Claims>`.
#[derive(Debug, Clone)]
pub struct Verified<T> {
    inner: T,
}

impl<T> Verified<T> {
    pub(crate) fn new(inner: T) -> Self {
        Verified { inner }
    }

    /// The verified value.
    pub fn get(&self) -> &T {
        &self.inner
    }

    /// Consume the proof, keeping the value (it no longer proves anything).
    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl<T> std::ops::Deref for Verified<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

/// Why evidence was refused, with whatever was learned before refusing it.
#[derive(Debug, Clone, Serialize)]
pub struct Rejection {
    /// Whether signatures, chains and dates all verified (the refusal came from policy).
    pub authentic: bool,
    /// Every reason, most fundamental first.
    pub reasons: Vec<String>,
    /// Claims, when the evidence was authentic.
    pub claims: Option<Box<Claims>>,
}

/// The REPORT_DATA (or TPM nonce) the evidence must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpectedReportData {
    /// Exactly these bytes (64 for SNP/TDX REPORT_DATA, the extraData for TPM).
    Exact(Vec<u8>),
    /// A challenge: these bytes, issued at this time (policy `max_age_seconds` applies).
    Challenge {
        /// Expected REPORT_DATA / extraData.
        report_data: Vec<u8>,
        /// When the verifier issued the nonce.
        issued_at: crate::UnixTime,
    },
    /// Not checked: inspecting evidence by hand (`confidant attest verify`
    /// without `--report-data`). The outcome records that freshness and key
    /// binding were not checked; a key broker or client never uses this.
    NotCheckedInspectionOnly,
}

/// TEE-specific claims.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum Detail {
    /// SEV-SNP.
    Snp(crate::snp::SnpDetail),
    /// TDX or SGX.
    Dcap(crate::tdx::DcapDetail),
    /// TPM 2.0.
    Tpm(crate::tpm::TpmDetail),
    /// Insecure development attester.
    InsecureDev {
        /// Always the same warning.
        warning: &'static str,
    },
}
