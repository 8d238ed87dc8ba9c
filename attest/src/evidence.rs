//! Evidence as it travels (JSON): what attesters produce and the server's
//! `/v1/attestation` returns.

use serde::{Deserialize, Serialize};

use crate::claims::Hex;
use crate::tpm::TpmQuote;
use crate::{Error, Result};

/// Largest evidence bundle accepted.
pub const MAX_BUNDLE_LEN: usize = 256 * 1024;

/// Evidence produced by an [`crate::attester::Attester`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub enum EvidenceBundle {
    /// SEV-SNP report, with the VCEK/VLEK and chain when the host supplied them.
    Snp {
        /// The 1184-byte report.
        report: Hex,
        /// VCEK or VLEK (DER), from the certificate table.
        vek: Option<Hex>,
        /// ASK/ASVK + ARK (PEM), from the certificate table.
        chain: Option<String>,
    },
    /// TDX quote (collateral comes from the verifier's cache or bundle).
    Tdx {
        /// The quote.
        quote: Hex,
    },
    /// TPM quote and the AK's public area.
    Tpm {
        /// The quote.
        quote: TpmQuote,
        /// Marshalled TPMT_PUBLIC of the AK (to find its enrolment).
        ak_public: Hex,
    },
    /// Insecure development evidence: proves nothing.
    InsecureDev {
        /// The REPORT_DATA requested.
        report_data: Hex,
    },
}

impl EvidenceBundle {
    /// Parse JSON, bounded.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_BUNDLE_LEN {
            return Err(Error::TooLarge {
                what: "evidence bundle",
                len: bytes.len(),
                max: MAX_BUNDLE_LEN,
            });
        }
        serde_json::from_slice(bytes)
            .map_err(|e| Error::malformed("evidence bundle", e.to_string()))
    }

    /// Serialize to JSON.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing these plain data types cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }
}
