//! Chunked AEAD: AES-256-GCM in the STREAM construction (`keys/FORMAT.md` §3).
//!
//! * Chunk `i` of `n` is sealed with nonce
//!   `prefix(7) ‖ be32(i) ‖ flag`, flag `0x01` on the final chunk and `0x00`
//!   otherwise, and associated data = the whole header as on disk.
//! * The header carries its own tag (nonce `prefix ‖ FFFFFFFF ‖ 02`, empty
//!   plaintext, associated data = the header before the tag), and a key
//!   commitment, so that a wrong key and an edited header are told apart
//!   before any chunk is touched.
//!
//! Decryption verifies each chunk's tag *before* producing its plaintext
//! (AES-GCM as implemented by `aes-gcm` computes GHASH over the ciphertext,
//! compares in constant time, and only then applies the keystream), so the
//! bytes of a failing chunk are never plaintext. On any error,
//! [`Decryptor::decrypt_into`] additionally zeroes the whole output buffer, so
//! the caller never keeps plaintext from a container that did not verify.

mod decrypt;
mod encrypt;

pub use decrypt::{ChunkSource, Decryptor, VerifiedPlaintext};
pub use encrypt::{
    EncryptParams, PlaintextInfo, encrypt, encrypt_with_fixed_nonce_prefix_for_test_vectors,
};

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use sha2::{Digest, Sha256};

use crate::datakey::DataKey;
use crate::error::{Error, Result};
use crate::header::{NONCE_PREFIX_LEN, TAG_LEN};

/// Flag byte of every chunk but the last.
const FLAG_CHUNK: u8 = 0x00;
/// Flag byte of the final chunk.
const FLAG_FINAL: u8 = 0x01;
/// Flag byte of the header tag's nonce (counter `0xFFFF_FFFF`).
const FLAG_HEADER: u8 = 0x02;
/// Domain separation label of the key commitment.
const COMMITMENT_LABEL: &[u8] = b"confidant/cmdl/v1/key-commitment\0";
/// When a chunk fails, nearby positions are tried to tell reordering from
/// modification; this bounds the bytes re-authenticated for that.
const DIAGNOSIS_BUDGET: u64 = 64 * 1024 * 1024;

/// `SHA-256(label ‖ nonce_prefix ‖ key)`: commits the container to its key.
fn key_commitment(key: &DataKey, prefix: &[u8; NONCE_PREFIX_LEN]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(COMMITMENT_LABEL);
    h.update(prefix);
    h.update(key.expose());
    h.finalize().into()
}

/// AES-256-GCM keyed with the data key, plus the nonce prefix.
struct ChunkCipher {
    aead: Aes256Gcm,
    prefix: [u8; NONCE_PREFIX_LEN],
}

impl ChunkCipher {
    fn new(key: &DataKey, prefix: [u8; NONCE_PREFIX_LEN]) -> Self {
        ChunkCipher {
            aead: Aes256Gcm::new(&(*key.expose()).into()),
            prefix,
        }
    }

    fn nonce(&self, counter: u32, flag: u8) -> Nonce<aes_gcm::aead::consts::U12> {
        let mut n = [0u8; 12];
        n[..NONCE_PREFIX_LEN].copy_from_slice(&self.prefix);
        n[7..11].copy_from_slice(&counter.to_be_bytes());
        n[11] = flag;
        n.into()
    }

    fn chunk_nonce(&self, index: u64, count: u64) -> Result<Nonce<aes_gcm::aead::consts::U12>> {
        let counter = u32::try_from(index)
            .map_err(|_| Error::malformed("container", "chunk index beyond 2^32"))?;
        let flag = if index + 1 == count {
            FLAG_FINAL
        } else {
            FLAG_CHUNK
        };
        Ok(self.nonce(counter, flag))
    }

    fn seal(
        &self,
        nonce: &Nonce<aes_gcm::aead::consts::U12>,
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN]> {
        let tag = self
            .aead
            .encrypt_inout_detached(nonce, aad, buf.into())
            // Only fails for inputs beyond GCM's 2^36-byte limit; chunks are <= 16 MiB.
            .map_err(|_| Error::invalid("chunk", "too long for AES-GCM"))?;
        Ok(tag.into())
    }

    /// Verifies then decrypts in place; on failure `buf` still holds the
    /// ciphertext (no keystream was applied).
    fn open(
        &self,
        nonce: &Nonce<aes_gcm::aead::consts::U12>,
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> bool {
        let tag: Tag = (*tag).into();
        self.aead
            .decrypt_inout_detached(nonce, aad, buf.into(), &tag)
            .is_ok()
    }

    fn header_nonce(&self) -> Nonce<aes_gcm::aead::consts::U12> {
        self.nonce(u32::MAX, FLAG_HEADER)
    }
}

/// Constant-time equality of two 32-byte values.
fn subtle_eq(a: &[u8; 32], b: &[u8; 32]) -> subtle::Choice {
    use subtle::ConstantTimeEq;
    a.ct_eq(b)
}
