//! Producing evidence: configfs-tsm (SEV-SNP, TDX), TPM 2.0, insecure dev.

mod configfs;
mod insecure;
mod tpm;

use std::path::PathBuf;

pub use configfs::{ConfigfsTsm, DEFAULT_CONFIGFS_TSM, Provider};
pub use insecure::InsecureDev;
pub(crate) use insecure::insecure_claims;
pub use tpm::{TpmAttester, TpmKeys};

use crate::{Error, EvidenceBundle, Result};

/// What evidence must be bound to: 64 bytes of REPORT_DATA for SNP/TDX and
/// 32 bytes of extraData for a TPM. [`crate::Binding`] gives both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundData {
    /// REPORT_DATA.
    pub report_data: [u8; 64],
    /// TPM extraData.
    pub tpm_extra_data: Vec<u8>,
}

impl BoundData {
    /// From the DESIGN.md binding.
    pub fn from_binding(b: &crate::Binding<'_>) -> Self {
        BoundData {
            report_data: b.report_data(),
            tpm_extra_data: b.tpm_extra_data().to_vec(),
        }
    }

    /// A raw nonce (at most 64 bytes): REPORT_DATA is the nonce zero-padded
    /// to 64 bytes; the TPM extraData is the nonce itself (at most 32 bytes;
    /// longer nonces are hashed with SHA-256).
    pub fn from_raw_nonce(nonce: &[u8]) -> Result<Self> {
        if nonce.len() > 64 {
            return Err(Error::TooLarge {
                what: "nonce",
                len: nonce.len(),
                max: 64,
            });
        }
        let mut report_data = [0u8; 64];
        report_data[..nonce.len()].copy_from_slice(nonce);
        let tpm_extra_data = if nonce.len() <= 32 {
            nonce.to_vec()
        } else {
            use sha2::Digest;
            sha2::Sha256::digest(nonce).to_vec()
        };
        Ok(BoundData {
            report_data,
            tpm_extra_data,
        })
    }
}

/// Something that produces evidence bound to given data.
pub trait Attester: Send {
    /// Short name (`configfs-tsm/sev_guest`, `tpm`, `insecure-dev`).
    fn name(&self) -> String;
    /// Produce evidence bound to `data`.
    fn evidence(&mut self, data: &BoundData) -> Result<EvidenceBundle>;
}

/// Which attester to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// Best available: configfs-tsm, then TPM; never the insecure one.
    Auto,
    /// configfs-tsm at this root.
    Configfs(PathBuf),
    /// TPM via this TCTI (e.g. `device:/dev/tpmrm0`, `swtpm:port=2321`).
    Tpm(String),
    /// The insecure dev attester (logged at every use).
    InsecureDev,
}

/// TCTI of the local TPM: `TPM2TOOLS_TCTI`, `TCTI`, `TEST_TCTI`, else the resource manager.
pub fn default_tcti() -> Option<String> {
    for var in ["TPM2TOOLS_TCTI", "TCTI", "TEST_TCTI"] {
        if let Ok(v) = std::env::var(var)
            && !v.is_empty()
        {
            return Some(v);
        }
    }
    std::path::Path::new("/dev/tpmrm0")
        .exists()
        .then(|| "device:/dev/tpmrm0".to_string())
}

/// Open the attester `choice`. `Auto` picks configfs-tsm when a provider is
/// present, else a TPM, and fails rather than fall back to the insecure one.
pub fn detect(choice: &Choice) -> Result<Box<dyn Attester>> {
    match choice {
        Choice::Configfs(root) => Ok(Box::new(ConfigfsTsm::new(root.clone())?)),
        Choice::Tpm(tcti) => Ok(Box::new(TpmAttester::open(tcti)?)),
        Choice::InsecureDev => Ok(Box::new(InsecureDev::new())),
        Choice::Auto => {
            let mut why = Vec::new();
            match ConfigfsTsm::new(PathBuf::from(DEFAULT_CONFIGFS_TSM)) {
                Ok(a) => return Ok(Box::new(a)),
                Err(e) => why.push(e.to_string()),
            }
            match default_tcti() {
                Some(t) => match TpmAttester::open(&t) {
                    Ok(a) => return Ok(Box::new(a)),
                    Err(e) => why.push(e.to_string()),
                },
                None => why.push("no TPM (no /dev/tpmrm0, no TCTI variable)".into()),
            }
            Err(Error::Attester {
                attester: "auto",
                detail: format!("no attester available: {}", why.join("; ")),
            })
        }
    }
}
