//! TPM 2.0 wire structures (big-endian), parsed with bounds on every read.
//!
//! TPM 2.0 Library Part 2 "Structures": TPMS_ATTEST (10.12.12),
//! TPMS_CLOCK_INFO (10.11.1), TPMS_QUOTE_INFO (10.12.4), TPML_PCR_SELECTION
//! (10.9.7), TPMT_SIGNATURE (11.3.4), TPMT_PUBLIC (12.2.4), TPMS_ECC_PARMS
//! (12.2.3.6), TPMS_RSA_PARMS (12.2.3.5), TPMA_OBJECT (8.3).

use crate::{Error, Result};

/// TPM_GENERATED_VALUE (Part 2, 6.2): only the TPM writes it into attestations.
pub const TPM_GENERATED_VALUE: u32 = 0xff54_4347;
/// TPM_ST_ATTEST_QUOTE (Part 2, 6.9).
pub const TPM_ST_ATTEST_QUOTE: u16 = 0x8018;
/// TPM_ALG_* (Part 2, 6.3).
pub const TPM_ALG_RSA: u16 = 0x0001;
/// SHA-256.
pub const TPM_ALG_SHA256: u16 = 0x000B;
/// NULL.
pub const TPM_ALG_NULL: u16 = 0x0010;
/// RSASSA-PKCS1-v1_5.
pub const TPM_ALG_RSASSA: u16 = 0x0014;
/// ECDSA.
pub const TPM_ALG_ECDSA: u16 = 0x0018;
/// ECC.
pub const TPM_ALG_ECC: u16 = 0x0023;
/// TPM_ECC_NIST_P256 (Part 2, 6.4).
pub const TPM_ECC_NIST_P256: u16 = 0x0003;

/// Largest structure this parser accepts.
pub const MAX_STRUCT_LEN: usize = 4096;

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Result<Self> {
        if buf.len() > MAX_STRUCT_LEN {
            return Err(Error::TooLarge {
                what,
                len: buf.len(),
                max: MAX_STRUCT_LEN,
            });
        }
        Ok(Reader { buf, pos: 0, what })
    }
    fn err(&self, d: &str) -> Error {
        Error::malformed(self.what, format!("{d} at offset {}", self.pos))
    }
    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or_else(|| self.err("length overflow"))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or_else(|| self.err("truncated"))?;
        self.pos = end;
        Ok(s)
    }
    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.bytes(1)?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16> {
        let b = self.bytes(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    pub(crate) fn u32(&mut self) -> Result<u32> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(crate) fn u64(&mut self) -> Result<u64> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    /// TPM2B_*: u16 size then bytes, at most `max`.
    pub(crate) fn tpm2b(&mut self, max: usize) -> Result<&'a [u8]> {
        let n = self.u16()? as usize;
        if n > max {
            return Err(self.err(&format!("TPM2B of {n} bytes, at most {max}")));
        }
        self.bytes(n)
    }
    pub(crate) fn finish(self) -> Result<()> {
        if self.pos != self.buf.len() {
            return Err(self.err(&format!("{} trailing bytes", self.buf.len() - self.pos)));
        }
        Ok(())
    }
}

/// One bank of a TPML_PCR_SELECTION.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrBank {
    /// Hash algorithm (TPM_ALG_*).
    pub hash: u16,
    /// Selected PCR indices, ascending.
    pub pcrs: Vec<u8>,
}

/// A parsed TPMS_ATTEST of type TPM_ST_ATTEST_QUOTE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attest {
    /// qualifiedSigner (TPM2B_NAME).
    pub qualified_signer: Vec<u8>,
    /// extraData (TPM2B_DATA): the verifier's nonce.
    pub extra_data: Vec<u8>,
    /// clockInfo.clock (ms).
    pub clock: u64,
    /// clockInfo.resetCount.
    pub reset_count: u32,
    /// clockInfo.restartCount.
    pub restart_count: u32,
    /// clockInfo.safe.
    pub safe: bool,
    /// firmwareVersion.
    pub firmware_version: u64,
    /// pcrSelect.
    pub pcr_select: Vec<PcrBank>,
    /// pcrDigest.
    pub pcr_digest: Vec<u8>,
}

/// Parse a TPMS_ATTEST that must be a quote (Part 2, 10.12.12).
pub fn parse_attest(bytes: &[u8]) -> Result<Attest> {
    let mut r = Reader::new(bytes, "TPMS_ATTEST")?;
    let magic = r.u32()?;
    if magic != TPM_GENERATED_VALUE {
        return Err(Error::malformed(
            "TPMS_ATTEST",
            format!("magic {magic:#x} is not TPM_GENERATED_VALUE"),
        ));
    }
    let ty = r.u16()?;
    if ty != TPM_ST_ATTEST_QUOTE {
        return Err(Error::malformed(
            "TPMS_ATTEST",
            format!("type {ty:#x} is not TPM_ST_ATTEST_QUOTE"),
        ));
    }
    let qualified_signer = r.tpm2b(2 + 64)?.to_vec();
    let extra_data = r.tpm2b(64)?.to_vec();
    let clock = r.u64()?;
    let reset_count = r.u32()?;
    let restart_count = r.u32()?;
    let safe = match r.u8()? {
        0 => false,
        1 => true,
        v => {
            return Err(Error::malformed(
                "TPMS_ATTEST",
                format!("clockInfo.safe {v}"),
            ));
        }
    };
    let firmware_version = r.u64()?;
    let count = r.u32()?;
    if count > 16 {
        return Err(Error::malformed(
            "TPMS_ATTEST",
            format!("{count} PCR banks"),
        ));
    }
    let mut pcr_select = Vec::new();
    for _ in 0..count {
        let hash = r.u16()?;
        let n = r.u8()? as usize;
        if !(3..=4).contains(&n) {
            return Err(Error::malformed("TPMS_ATTEST", format!("sizeofSelect {n}")));
        }
        let sel = r.bytes(n)?;
        let mut pcrs = Vec::new();
        for (i, byte) in sel.iter().enumerate() {
            for bit in 0..8 {
                if byte & (1 << bit) != 0 {
                    pcrs.push((i * 8 + bit) as u8);
                }
            }
        }
        pcr_select.push(PcrBank { hash, pcrs });
    }
    let pcr_digest = r.tpm2b(64)?.to_vec();
    r.finish()?;
    Ok(Attest {
        qualified_signer,
        extra_data,
        clock,
        reset_count,
        restart_count,
        safe,
        firmware_version,
        pcr_select,
        pcr_digest,
    })
}

/// A parsed TPMT_SIGNATURE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    /// TPM_ALG_ECDSA with SHA-256: r, s.
    EcdsaSha256 {
        /// r (big-endian, unpadded as the TPM sends it).
        r: Vec<u8>,
        /// s.
        s: Vec<u8>,
    },
    /// TPM_ALG_RSASSA with SHA-256.
    RsassaSha256(Vec<u8>),
}

/// Parse a TPMT_SIGNATURE (Part 2, 11.3.4); only SHA-256 ECDSA and RSASSA.
pub fn parse_signature(bytes: &[u8]) -> Result<Signature> {
    let mut r = Reader::new(bytes, "TPMT_SIGNATURE")?;
    let alg = r.u16()?;
    let hash = r.u16()?;
    if hash != TPM_ALG_SHA256 {
        return Err(Error::malformed(
            "TPMT_SIGNATURE",
            format!("hash {hash:#x} is not SHA-256"),
        ));
    }
    let sig = match alg {
        TPM_ALG_ECDSA => Signature::EcdsaSha256 {
            r: r.tpm2b(66)?.to_vec(),
            s: r.tpm2b(66)?.to_vec(),
        },
        TPM_ALG_RSASSA => Signature::RsassaSha256(r.tpm2b(512)?.to_vec()),
        other => {
            return Err(Error::malformed(
                "TPMT_SIGNATURE",
                format!("algorithm {other:#x} not supported"),
            ));
        }
    };
    r.finish()?;
    Ok(sig)
}

/// Public key of an AK or EK read from a TPMT_PUBLIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// ECC P-256 point (x, y, 32 bytes each).
    EccP256 {
        /// x.
        x: Vec<u8>,
        /// y.
        y: Vec<u8>,
    },
    /// RSA modulus and exponent.
    Rsa {
        /// n, big-endian.
        n: Vec<u8>,
        /// e.
        e: u32,
    },
}

/// A parsed TPMT_PUBLIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Public {
    /// nameAlg.
    pub name_alg: u16,
    /// objectAttributes (TPMA_OBJECT).
    pub attributes: u32,
    /// The key.
    pub key: PublicKey,
}

/// TPMA_OBJECT bits (Part 2, 8.3.2).
pub mod attr {
    /// fixedTPM.
    pub const FIXED_TPM: u32 = 1 << 1;
    /// fixedParent.
    pub const FIXED_PARENT: u32 = 1 << 4;
    /// sensitiveDataOrigin.
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    /// restricted.
    pub const RESTRICTED: u32 = 1 << 16;
    /// decrypt.
    pub const DECRYPT: u32 = 1 << 17;
    /// sign.
    pub const SIGN: u32 = 1 << 18;
}

fn sym_def(r: &mut Reader<'_>) -> Result<()> {
    // TPMT_SYM_DEF_OBJECT: algorithm, then keyBits and mode unless NULL.
    if r.u16()? != TPM_ALG_NULL {
        r.u16()?;
        r.u16()?;
    }
    Ok(())
}

fn scheme(r: &mut Reader<'_>) -> Result<()> {
    // TPMT_*_SCHEME: scheme, then details (hashAlg) unless NULL.
    if r.u16()? != TPM_ALG_NULL {
        r.u16()?;
    }
    Ok(())
}

/// Parse a TPMT_PUBLIC (Part 2, 12.2.4) of an ECC P-256 or RSA key.
pub fn parse_public(bytes: &[u8]) -> Result<Public> {
    let mut r = Reader::new(bytes, "TPMT_PUBLIC")?;
    let ty = r.u16()?;
    let name_alg = r.u16()?;
    if name_alg != TPM_ALG_SHA256 {
        return Err(Error::malformed(
            "TPMT_PUBLIC",
            format!("nameAlg {name_alg:#x} is not SHA-256"),
        ));
    }
    let attributes = r.u32()?;
    r.tpm2b(64)?; // authPolicy
    let key = match ty {
        TPM_ALG_ECC => {
            sym_def(&mut r)?;
            scheme(&mut r)?;
            let curve = r.u16()?;
            scheme(&mut r)?; // kdf
            if curve != TPM_ECC_NIST_P256 {
                return Err(Error::malformed(
                    "TPMT_PUBLIC",
                    format!("curve {curve:#x} is not P-256"),
                ));
            }
            let x = r.tpm2b(32)?.to_vec();
            let y = r.tpm2b(32)?.to_vec();
            PublicKey::EccP256 { x, y }
        }
        TPM_ALG_RSA => {
            sym_def(&mut r)?;
            scheme(&mut r)?;
            let bits = r.u16()?;
            let e = match r.u32()? {
                0 => 65537,
                e => e,
            };
            let n = r.tpm2b(512)?.to_vec();
            if n.len() * 8 != bits as usize || bits < 2048 {
                return Err(Error::malformed(
                    "TPMT_PUBLIC",
                    format!("RSA key of {bits} bits"),
                ));
            }
            PublicKey::Rsa { n, e }
        }
        other => {
            return Err(Error::malformed(
                "TPMT_PUBLIC",
                format!("type {other:#x} not supported"),
            ));
        }
    };
    r.finish()?;
    Ok(Public {
        name_alg,
        attributes,
        key,
    })
}

/// The Name of an object: nameAlg || H(TPMT_PUBLIC) (Part 1, 16 "Names").
pub fn name_of(public_bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    let mut n = TPM_ALG_SHA256.to_be_bytes().to_vec();
    n.extend_from_slice(&sha2::Sha256::digest(public_bytes));
    n
}
