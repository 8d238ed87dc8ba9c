//! Linux configfs-tsm (`Documentation/ABI/testing/configfs-tsm-report`):
//! `mkdir report/$name`, write 64 bytes to `inblob`, read `outblob` (the SNP
//! report or TDX quote) and `auxblob` (SNP certificate table), check
//! `provider` and `generation`.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::claims::Hex;
use crate::{Error, EvidenceBundle, Result};

/// Where the kernel mounts configfs-tsm.
pub const DEFAULT_CONFIGFS_TSM: &str = "/sys/kernel/config/tsm";

/// Largest outblob/auxblob read (an SNP cert table is a few KiB, a TDX quote ~5 KiB).
const MAX_BLOB: usize = 64 * 1024;

/// The provider behind configfs-tsm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// `sev_guest`.
    SevGuest,
    /// `tdx_guest`.
    TdxGuest,
}

/// configfs-tsm attester.
#[derive(Debug)]
pub struct ConfigfsTsm {
    root: PathBuf,
}

fn err(detail: impl Into<String>) -> Error {
    Error::Attester {
        attester: "configfs-tsm",
        detail: detail.into(),
    }
}

fn read_attr(path: &Path) -> Result<Vec<u8>> {
    // configfs creates an entry's attributes with its directory; a test
    // fixture standing in for the kernel may lag a little, so retry briefly.
    for _ in 0..100 {
        match crate::bounded::read_bounded(path, MAX_BLOB) {
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            other => return other,
        }
    }
    crate::bounded::read_bounded(path, MAX_BLOB)
}

fn read_u64(path: &Path) -> Result<u64> {
    let b = read_attr(path)?;
    std::str::from_utf8(&b)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| err(format!("{} is not a number", path.display())))
}

struct Entry(PathBuf);
impl Drop for Entry {
    fn drop(&mut self) {
        // rmdir releases the kernel object; on a fixture it may hold files.
        if fs::remove_dir(&self.0).is_err() {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

impl ConfigfsTsm {
    /// configfs-tsm at `root` (normally [`DEFAULT_CONFIGFS_TSM`]).
    pub fn new(root: PathBuf) -> Result<Self> {
        if !root.join("report").is_dir() {
            return Err(err(format!(
                "{}/report not found (no configfs-tsm)",
                root.display()
            )));
        }
        Ok(ConfigfsTsm { root })
    }

    /// Request a report for `report_data`; returns (provider, outblob, auxblob).
    pub fn request(&self, report_data: &[u8; 64]) -> Result<(Provider, Vec<u8>, Option<Vec<u8>>)> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "confidant-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let dir = self.root.join("report").join(name);
        fs::create_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        let entry = Entry(dir);
        let provider = read_attr(&entry.0.join("provider"))?;
        let provider = match String::from_utf8_lossy(&provider).trim() {
            "sev_guest" => Provider::SevGuest,
            "tdx_guest" => Provider::TdxGuest,
            other => return Err(err(format!("unknown provider {other:?}"))),
        };
        let inblob = entry.0.join("inblob");
        fs::write(&inblob, report_data).map_err(|e| Error::io(&inblob, e))?;
        // ABI: "generation ... increments each time inblob or any option is
        // written"; equal before and after reading outblob means no other
        // writer changed the request between our write and our read.
        let gen_written = read_u64(&entry.0.join("generation"))?;
        let out = read_attr(&entry.0.join("outblob"))?;
        let aux = match provider {
            Provider::SevGuest => match read_attr(&entry.0.join("auxblob")) {
                Ok(a) if !a.is_empty() => Some(a),
                _ => None,
            },
            Provider::TdxGuest => None,
        };
        let gen_read = read_u64(&entry.0.join("generation"))?;
        if gen_read != gen_written {
            return Err(err(format!(
                "generation changed from {gen_written} to {gen_read}: another writer raced this request"
            )));
        }
        // The evidence must carry what we asked for.
        let got = match provider {
            Provider::SevGuest => out.get(0x50..0x90),
            // Quote v4/v5: REPORT_DATA is the last 64 bytes of the TD report body.
            Provider::TdxGuest => match out.first().copied() {
                Some(4) => out.get(48 + 520..48 + 584),
                Some(5) => out.get(54 + 520..54 + 584),
                _ => None,
            },
        };
        if got != Some(&report_data[..]) {
            return Err(err("outblob does not carry the requested REPORT_DATA"));
        }
        Ok((provider, out, aux))
    }
}

// GUIDs of the SNP certificate table (SNP ABI / GHCB spec, "SNP Extended Guest Request").
const GUID_VCEK: [u8; 16] = guid("63da758d-e664-4564-adc5-f4b93be8accd");
const GUID_VLEK: [u8; 16] = guid("a8074bc2-a25a-483e-aae6-39c045a0b8a1");
const GUID_ASK: [u8; 16] = guid("4ab7b379-bbac-4fe4-a02f-05aef327c782");
const GUID_ARK: [u8; 16] = guid("c0b406a4-a803-4952-9743-3fb6014cd0ae");

const fn hexval(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => 0,
    }
}

/// RFC 4122 GUID string to its little-endian (Microsoft) byte layout, as
/// the certificate table stores it.
const fn guid(s: &str) -> [u8; 16] {
    let b = s.as_bytes();
    let mut hexd = [0u8; 32];
    let (mut i, mut j) = (0, 0);
    while i < b.len() {
        if b[i] != b'-' {
            hexd[j] = b[i];
            j += 1;
        }
        i += 1;
    }
    let mut raw = [0u8; 16];
    let mut k = 0;
    while k < 16 {
        raw[k] = hexval(hexd[2 * k]) << 4 | hexval(hexd[2 * k + 1]);
        k += 1;
    }
    [
        raw[3], raw[2], raw[1], raw[0], raw[5], raw[4], raw[7], raw[6], raw[8], raw[9], raw[10],
        raw[11], raw[12], raw[13], raw[14], raw[15],
    ]
}

/// Parse an SNP certificate table: entries (GUID, offset u32, length u32)
/// ending with an all-zero entry; returns (VEK DER, chain PEM).
pub(crate) fn parse_cert_table(t: &[u8]) -> Result<(Option<Vec<u8>>, Option<String>)> {
    let mut vek = None;
    let mut ask = None;
    let mut ark = None;
    for i in 0..64 {
        let e = t
            .get(i * 24..i * 24 + 24)
            .ok_or_else(|| err("certificate table truncated"))?;
        if e.iter().all(|&b| b == 0) {
            let pem = |d: &Vec<u8>| -> Option<String> {
                use der::{Decode, EncodePem};
                let c = x509_cert::Certificate::from_der(d).ok()?;
                c.to_pem(der::pem::LineEnding::LF).ok()
            };
            let chain = match (&ask, &ark) {
                (Some(a), Some(r)) => Some(format!(
                    "{}{}",
                    pem(a).unwrap_or_default(),
                    pem(r).unwrap_or_default()
                )),
                _ => None,
            };
            return Ok((vek, chain));
        }
        let off = u32::from_le_bytes([e[16], e[17], e[18], e[19]]) as usize;
        let len = u32::from_le_bytes([e[20], e[21], e[22], e[23]]) as usize;
        let data = t
            .get(off..off.saturating_add(len))
            .ok_or_else(|| err("certificate table entry out of bounds"))?
            .to_vec();
        let g: [u8; 16] = e[..16].try_into().map_err(|_| err("GUID"))?;
        match g {
            GUID_VCEK | GUID_VLEK => vek = Some(data),
            GUID_ASK => ask = Some(data),
            GUID_ARK => ark = Some(data),
            _ => {}
        }
    }
    Err(err("certificate table has no terminating entry"))
}

impl super::Attester for ConfigfsTsm {
    fn name(&self) -> String {
        "configfs-tsm".into()
    }
    fn evidence(&mut self, data: &super::BoundData) -> Result<EvidenceBundle> {
        let (provider, out, aux) = self.request(&data.report_data)?;
        Ok(match provider {
            Provider::SevGuest => {
                let (vek, chain) = match aux {
                    Some(a) => parse_cert_table(&a)?,
                    None => (None, None),
                };
                EvidenceBundle::Snp {
                    report: Hex(out),
                    vek: vek.map(Hex),
                    chain,
                }
            }
            Provider::TdxGuest => EvidenceBundle::Tdx { quote: Hex(out) },
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn guid_layout_is_little_endian_for_the_first_three_fields() {
        assert_eq!(
            super::guid("63da758d-e664-4564-adc5-f4b93be8accd")[..8],
            [0x8d, 0x75, 0xda, 0x63, 0x64, 0xe6, 0x64, 0x45]
        );
    }
}
