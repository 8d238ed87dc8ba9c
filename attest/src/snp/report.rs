//! SEV-SNP `ATTESTATION_REPORT` parsing.
//!
//! Layout: AMD SEV Secure Nested Paging Firmware ABI Specification (#56860),
//! Table 23 "ATTESTATION_REPORT Structure"; TCB_VERSION in Table 3; guest
//! POLICY in Table 9; signature format in Table 139 ("ECDSA P-384 with
//! SHA-384 Signature"). Every field is read at a fixed offset from a buffer
//! whose length is checked first, so no input can make this code panic.

use crate::{Error, Result};

/// Size of an attestation report (Table 23: 0x4A0 bytes).
pub const REPORT_LEN: usize = 0x4A0;
/// Signed part of the report: bytes 0x000-0x29F (Table 23, "SIGNATURE ... over bytes 0h-29Fh").
pub const SIGNED_LEN: usize = 0x2A0;

/// Processor generation (determines the AMD root and the TCB_VERSION layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Generation {
    /// 3rd gen EPYC.
    Milan,
    /// 4th gen EPYC.
    Genoa,
    /// 5th gen EPYC.
    Turin,
}

impl Generation {
    /// Name as used by AMD KDS and in the VCEK `productName` extension.
    pub fn name(self) -> &'static str {
        match self {
            Generation::Milan => "Milan",
            Generation::Genoa => "Genoa",
            Generation::Turin => "Turin",
        }
    }

    /// From a VCEK/VLEK `productName` (e.g. `Milan-B0`, `Genoa`).
    pub fn from_product_name(s: &str) -> Option<Self> {
        let base = s.split('-').next().unwrap_or(s);
        match base {
            "Milan" => Some(Generation::Milan),
            "Genoa" => Some(Generation::Genoa),
            "Turin" => Some(Generation::Turin),
            _ => None,
        }
    }

    /// All generations with built-in roots.
    pub const ALL: [Generation; 3] = [Generation::Milan, Generation::Genoa, Generation::Turin];
}

/// A TCB_VERSION decoded for a generation (Table 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct TcbVersion {
    /// FMC SPL (Turin only).
    pub fmc: Option<u8>,
    /// Boot loader SPL.
    pub bootloader: u8,
    /// TEE (PSP OS) SPL.
    pub tee: u8,
    /// SNP firmware SPL.
    pub snp: u8,
    /// Microcode SPL.
    pub microcode: u8,
}

impl TcbVersion {
    /// Decode the 64-bit little-endian TCB_VERSION for `generation`.
    ///
    /// Milan/Genoa: byte 0 BOOT_LOADER, 1 TEE, 2-5 reserved, 6 SNP, 7 MICROCODE.
    /// Turin: byte 0 FMC, 1 BOOT_LOADER, 2 TEE, 3 SNP, 4-6 reserved, 7 MICROCODE.
    pub fn decode(raw: u64, generation: Generation) -> Self {
        let b = raw.to_le_bytes();
        match generation {
            Generation::Milan | Generation::Genoa => TcbVersion {
                fmc: None,
                bootloader: b[0],
                tee: b[1],
                snp: b[6],
                microcode: b[7],
            },
            Generation::Turin => TcbVersion {
                fmc: Some(b[0]),
                bootloader: b[1],
                tee: b[2],
                snp: b[3],
                microcode: b[7],
            },
        }
    }

    /// Whether every component is at least `min`'s.
    pub fn meets(&self, min: &TcbVersion) -> bool {
        self.bootloader >= min.bootloader
            && self.tee >= min.tee
            && self.snp >= min.snp
            && self.microcode >= min.microcode
            && self.fmc.unwrap_or(0) >= min.fmc.unwrap_or(0)
    }
}

/// Which key signed the report (Table 23, offset 0x48 bits 4:2, SIGNING_KEY).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SigningKey {
    /// Versioned Chip Endorsement Key.
    Vcek,
    /// Versioned Loaded Endorsement Key.
    Vlek,
    /// 7: the report is not signed.
    None,
}

/// A parsed attestation report. Produced by [`SnpReport::parse`]; the raw
/// bytes are kept, since the signature covers them and not a re-encoding.
#[derive(Debug, Clone)]
pub struct SnpReport {
    raw: Box<[u8; REPORT_LEN]>,
}

fn u32_at(b: &[u8; REPORT_LEN], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8; REPORT_LEN], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

impl SnpReport {
    /// Parse and sanity-check a report.
    ///
    /// Rejects: wrong length; VERSION other than 2, 3 or 5 (v4 was never
    /// issued); SIGNATURE_ALGO other than 1 (ECDSA P-384/SHA-384); a
    /// SIGNING_KEY value other than 0 (VCEK), 1 (VLEK); non-zero bytes where
    /// Table 139 puts no signature material (the upper 24 bytes of R and S
    /// and the reserved tail), so that every bit of the 1184 bytes matters.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let raw: [u8; REPORT_LEN] = bytes.try_into().map_err(|_| {
            Error::malformed(
                "SNP report",
                format!("{} bytes, expected {REPORT_LEN}", bytes.len()),
            )
        })?;
        let r = SnpReport { raw: Box::new(raw) };
        let version = r.version();
        if !matches!(version, 2 | 3 | 5) {
            return Err(Error::malformed(
                "SNP report",
                format!("VERSION {version} not supported (2, 3, 5)"),
            ));
        }
        let algo = u32_at(&r.raw, 0x34);
        if algo != 1 {
            return Err(Error::malformed(
                "SNP report",
                format!("SIGNATURE_ALGO {algo}, expected 1 (ECDSA P-384 with SHA-384)"),
            ));
        }
        if r.signing_key_raw() > 1 {
            return Err(Error::malformed(
                "SNP report",
                format!(
                    "SIGNING_KEY {} (only 0 = VCEK and 1 = VLEK are verifiable)",
                    r.signing_key_raw()
                ),
            ));
        }
        // Table 139: R at 0h-47h, S at 48h-8Fh (little-endian, 384-bit values
        // zero-extended to 72 bytes), 90h-1FFh reserved.
        let sig = &r.raw[SIGNED_LEN..];
        let nonzero = sig[48..72].iter().any(|&b| b != 0)
            || sig[72 + 48..144].iter().any(|&b| b != 0)
            || sig[144..].iter().any(|&b| b != 0);
        if nonzero {
            return Err(Error::malformed(
                "SNP report",
                "non-zero bytes in the unused part of the signature (Table 139)",
            ));
        }
        Ok(r)
    }

    /// The raw report.
    pub fn as_bytes(&self) -> &[u8] {
        &self.raw[..]
    }
    /// The signed bytes 0x000-0x29F.
    pub fn signed_bytes(&self) -> &[u8] {
        &self.raw[..SIGNED_LEN]
    }
    /// R and S as big-endian 48-byte scalars.
    pub fn signature_rs(&self) -> ([u8; 48], [u8; 48]) {
        let mut r = [0u8; 48];
        let mut s = [0u8; 48];
        r.copy_from_slice(&self.raw[SIGNED_LEN..SIGNED_LEN + 48]);
        s.copy_from_slice(&self.raw[SIGNED_LEN + 72..SIGNED_LEN + 120]);
        r.reverse();
        s.reverse();
        (r, s)
    }
    /// VERSION (0x00).
    pub fn version(&self) -> u32 {
        u32_at(&self.raw, 0x00)
    }
    /// GUEST_SVN (0x04).
    pub fn guest_svn(&self) -> u32 {
        u32_at(&self.raw, 0x04)
    }
    /// Guest POLICY (0x08, Table 9).
    pub fn policy(&self) -> u64 {
        u64_at(&self.raw, 0x08)
    }
    /// POLICY.DEBUG (bit 19).
    pub fn debug_allowed(&self) -> bool {
        self.policy() & (1 << 19) != 0
    }
    /// POLICY.MIGRATE_MA (bit 18).
    pub fn migrate_ma_allowed(&self) -> bool {
        self.policy() & (1 << 18) != 0
    }
    /// POLICY.SMT (bit 16).
    pub fn smt_allowed(&self) -> bool {
        self.policy() & (1 << 16) != 0
    }
    /// FAMILY_ID (0x10).
    pub fn family_id(&self) -> &[u8] {
        &self.raw[0x10..0x20]
    }
    /// IMAGE_ID (0x20).
    pub fn image_id(&self) -> &[u8] {
        &self.raw[0x20..0x30]
    }
    /// VMPL (0x30).
    pub fn vmpl(&self) -> u32 {
        u32_at(&self.raw, 0x30)
    }
    /// CURRENT_TCB (0x38), raw.
    pub fn current_tcb_raw(&self) -> u64 {
        u64_at(&self.raw, 0x38)
    }
    /// PLATFORM_INFO (0x40).
    pub fn platform_info(&self) -> u64 {
        u64_at(&self.raw, 0x40)
    }
    /// PLATFORM_INFO.SMT_EN (bit 0).
    pub fn smt_enabled(&self) -> bool {
        self.platform_info() & 1 != 0
    }
    fn signing_key_raw(&self) -> u32 {
        (u32_at(&self.raw, 0x48) >> 2) & 0x7
    }
    /// SIGNING_KEY (0x48 bits 4:2).
    pub fn signing_key(&self) -> SigningKey {
        match self.signing_key_raw() {
            0 => SigningKey::Vcek,
            1 => SigningKey::Vlek,
            _ => SigningKey::None,
        }
    }
    /// MASK_CHIP_KEY (0x48 bit 1): CHIP_ID is zeroed.
    pub fn mask_chip_key(&self) -> bool {
        u32_at(&self.raw, 0x48) & 0b10 != 0
    }
    /// AUTHOR_KEY_EN (0x48 bit 0).
    pub fn author_key_en(&self) -> bool {
        u32_at(&self.raw, 0x48) & 1 != 0
    }
    /// REPORT_DATA (0x50).
    pub fn report_data(&self) -> &[u8] {
        &self.raw[0x50..0x90]
    }
    /// MEASUREMENT (0x90).
    pub fn measurement(&self) -> &[u8] {
        &self.raw[0x90..0xC0]
    }
    /// HOST_DATA (0xC0).
    pub fn host_data(&self) -> &[u8] {
        &self.raw[0xC0..0xE0]
    }
    /// ID_KEY_DIGEST (0xE0).
    pub fn id_key_digest(&self) -> &[u8] {
        &self.raw[0xE0..0x110]
    }
    /// AUTHOR_KEY_DIGEST (0x110).
    pub fn author_key_digest(&self) -> &[u8] {
        &self.raw[0x110..0x140]
    }
    /// REPORT_ID (0x140).
    pub fn report_id(&self) -> &[u8] {
        &self.raw[0x140..0x160]
    }
    /// REPORTED_TCB (0x180), raw: the TCB the VCEK was derived from.
    pub fn reported_tcb_raw(&self) -> u64 {
        u64_at(&self.raw, 0x180)
    }
    /// CPUID_FAM_ID, CPUID_MOD_ID, CPUID_STEP (0x188-0x18A, version 3 and later).
    pub fn cpuid(&self) -> Option<(u8, u8, u8)> {
        (self.version() >= 3).then(|| (self.raw[0x188], self.raw[0x189], self.raw[0x18A]))
    }
    /// CHIP_ID (0x1A0).
    pub fn chip_id(&self) -> &[u8] {
        &self.raw[0x1A0..0x1E0]
    }
    /// COMMITTED_TCB (0x1E0), raw.
    pub fn committed_tcb_raw(&self) -> u64 {
        u64_at(&self.raw, 0x1E0)
    }
    /// LAUNCH_TCB (0x1F0), raw.
    pub fn launch_tcb_raw(&self) -> u64 {
        u64_at(&self.raw, 0x1F0)
    }
    /// Firmware version CURRENT_MAJOR.CURRENT_MINOR.CURRENT_BUILD (0x1E8-0x1EA).
    pub fn current_firmware(&self) -> (u8, u8, u8) {
        (self.raw[0x1EA], self.raw[0x1E9], self.raw[0x1E8])
    }
    /// LAUNCH_MIT_VECTOR and CURRENT_MIT_VECTOR (0x1F8, 0x200; version 5).
    pub fn mit_vectors(&self) -> Option<(u64, u64)> {
        (self.version() >= 5).then(|| (u64_at(&self.raw, 0x1F8), u64_at(&self.raw, 0x200)))
    }
}
