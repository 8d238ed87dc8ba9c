//! The client policy: the attest policy TOML (the same format the key
//! broker uses) plus an optional `[client]` table with what only a client
//! checks.
//!
//! ```toml
//! tees = ["snp", "tdx", "tpm"]
//! [snp]
//! measurements.measurement = ["…"]
//!
//! [client]
//! # SHA-256 of the plaintext models this client accepts (empty: any).
//! model_sha256 = ["b179c952…"]
//! # Refuse servers that do not watermark every output (default false).
//! require_watermark = false
//! # TPM servers: enrolled AK records (`EnrolledAk::to_record` JSON) trusted
//! # to sign quotes, relative to this file.
//! tpm_ak_records = ["ak.json"]
//! # TDX servers: DCAP collateral (QuoteCollateralV3 JSON), relative to this file.
//! tdx_collateral = "collateral.json"
//! # INSECURE, development only: accept the insecure dev attester.
//! insecure_allow_dev_attester = false
//! # INSECURE: accept a server that loaded a plaintext model file.
//! allow_insecure_plaintext_model = false
//! ```

use std::path::{Path, PathBuf};

use confidant_attest::Policy;
use confidant_attest::tpm::EnrolledAk;
use serde::Deserialize;

use crate::error::{Error, Result};

/// Largest policy file read.
pub const MAX_POLICY_FILE_LEN: u64 = 256 * 1024;
/// Largest AK record or collateral file read.
const MAX_SIDE_FILE_LEN: u64 = 4 << 20;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileClient {
    #[serde(default)]
    model_sha256: Vec<String>,
    #[serde(default)]
    require_watermark: bool,
    #[serde(default)]
    tpm_ak_records: Vec<PathBuf>,
    tdx_collateral: Option<PathBuf>,
    #[serde(default)]
    insecure_allow_dev_attester: bool,
    #[serde(default)]
    allow_insecure_plaintext_model: bool,
}

/// What a client requires of a server.
#[derive(Debug, Clone)]
pub struct ClientPolicy {
    /// Evidence appraisal (attest).
    pub attest: Policy,
    /// Accepted plaintext model digests (empty: any).
    pub model_sha256: Vec<[u8; 32]>,
    /// Refuse servers whose watermark is not enforced.
    pub require_watermark: bool,
    /// AKs trusted to sign TPM quotes.
    pub tpm_aks: Vec<EnrolledAk>,
    /// DCAP collateral for TDX quotes.
    pub tdx_collateral: Option<Vec<u8>>,
    /// Accept a server that runs a plaintext model (development).
    pub allow_insecure_plaintext_model: bool,
}

fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path)
        .map_err(|e| Error::Policy(format!("cannot open {}: {e}", path.display())))?;
    let mut buf = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::Policy(format!("cannot read {}: {e}", path.display())))?;
    if buf.len() as u64 > max {
        return Err(Error::Policy(format!(
            "{} is larger than {max} bytes",
            path.display()
        )));
    }
    Ok(buf)
}

impl ClientPolicy {
    /// The strict default: attest's default policy, nothing else required.
    pub fn strict() -> Self {
        ClientPolicy {
            attest: Policy::default(),
            model_sha256: Vec::new(),
            require_watermark: false,
            tpm_aks: Vec::new(),
            tdx_collateral: None,
            allow_insecure_plaintext_model: false,
        }
    }

    /// Loads a policy file; relative paths in it are relative to the file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = read_bounded(path, MAX_POLICY_FILE_LEN)?;
        let text = String::from_utf8(text)
            .map_err(|_| Error::Policy(format!("{} is not UTF-8", path.display())))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, dir).map_err(|e| match e {
            Error::Policy(m) => Error::Policy(format!("{}: {m}", path.display())),
            e => e,
        })
    }

    /// Parses policy text; relative paths are relative to `dir`.
    pub fn parse(text: &str, dir: &Path) -> Result<Self> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| Error::Policy(e.to_string()))?;
        let client: FileClient = match table.remove("client") {
            Some(v) => v
                .try_into()
                .map_err(|e: toml::de::Error| Error::Policy(format!("[client]: {e}")))?,
            None => FileClient::default(),
        };
        let rest = toml::to_string(&table).map_err(|e| Error::Policy(e.to_string()))?;
        let mut attest =
            Policy::from_toml_in(&rest, dir).map_err(|e| Error::Policy(e.to_string()))?;
        if client.insecure_allow_dev_attester {
            tracing::warn!(
                "client policy accepts the INSECURE dev attester: its evidence proves nothing"
            );
            attest = attest.insecure_allow_dev_attester();
        }
        let mut model_sha256 = Vec::with_capacity(client.model_sha256.len());
        for h in &client.model_sha256 {
            let b = hex::decode(h.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| {
                    Error::Policy(format!(
                        "[client] model_sha256 {h:?} is not 32 bytes of hex"
                    ))
                })?;
            model_sha256.push(b);
        }
        let mut tpm_aks = Vec::new();
        for p in &client.tpm_ak_records {
            let p = dir.join(p);
            let rec = read_bounded(&p, MAX_SIDE_FILE_LEN)?;
            tpm_aks.push(
                EnrolledAk::from_trusted_record(&rec).map_err(|e| {
                    Error::Policy(format!("[client] AK record {}: {e}", p.display()))
                })?,
            );
        }
        let tdx_collateral = match &client.tdx_collateral {
            Some(p) => Some(read_bounded(&dir.join(p), MAX_SIDE_FILE_LEN)?),
            None => None,
        };
        Ok(ClientPolicy {
            attest,
            model_sha256,
            require_watermark: client.require_watermark,
            tpm_aks,
            tdx_collateral,
            allow_insecure_plaintext_model: client.allow_insecure_plaintext_model,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_table_is_split_from_the_attest_policy() {
        let p = ClientPolicy::parse(
            "tees = [\"tpm\"]\n[client]\nrequire_watermark = true\nmodel_sha256 = [\"b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53\"]\n",
            Path::new("."),
        )
        .unwrap();
        assert!(p.require_watermark);
        assert_eq!(p.model_sha256.len(), 1);
        assert_eq!(p.attest.tees.len(), 1);
    }

    #[test]
    fn unknown_client_keys_and_bad_digests_are_errors() {
        assert!(ClientPolicy::parse("[client]\nfoo = 1\n", Path::new(".")).is_err());
        assert!(
            ClientPolicy::parse("[client]\nmodel_sha256 = [\"abcd\"]\n", Path::new(".")).is_err()
        );
        assert!(ClientPolicy::parse("[snp]\nbogus = 1\n", Path::new(".")).is_err());
    }
}
