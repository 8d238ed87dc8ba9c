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
//! AES-GCM and SHA-256 are aws-lc-rs (AES-NI/VAES + PCLMULQDQ and SHA-NI
//! assembly). Its AES-GCM decrypts and authenticates in one pass, so a
//! failing chunk's buffer may briefly hold unauthenticated plaintext:
//! [`ChunkCipher::open`] zeroes it before reporting the failure, so the
//! bytes of a failing chunk never reach the caller. On any error,
//! [`Decryptor::decrypt_into`] additionally zeroes the whole output buffer, so
//! the caller never keeps plaintext from a container that did not verify.

mod decrypt;
mod encrypt;

pub use decrypt::{ChunkSource, Decryptor, DigestCheck, VerifiedPlaintext};
pub use encrypt::{
    EncryptParams, PlaintextInfo, encrypt, encrypt_with_fixed_nonce_prefix_for_test_vectors,
};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::digest;
use zeroize::Zeroize;

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
    h.finish()
}

/// Incremental SHA-256 (aws-lc-rs, SHA-NI where the CPU has it).
#[derive(Clone)]
struct Sha256(digest::Context);

impl Sha256 {
    fn new() -> Self {
        Sha256(digest::Context::new(&digest::SHA256))
    }

    fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    fn finish(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        // A SHA-256 digest is 32 bytes.
        out.copy_from_slice(self.0.finish().as_ref());
        out
    }

    fn digest(data: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(data);
        h.finish()
    }
}

/// A 96-bit AES-GCM nonce: `prefix(7) ‖ be32(counter) ‖ flag`.
#[derive(Clone, Copy)]
struct ChunkNonce([u8; 12]);

impl ChunkNonce {
    fn get(self) -> Nonce {
        Nonce::assume_unique_for_key(self.0)
    }
}

/// AES-256-GCM keyed with the data key, plus the nonce prefix.
struct ChunkCipher {
    /// aws-lc-rs wipes the expanded key when it is dropped.
    aead: LessSafeKey,
    prefix: [u8; NONCE_PREFIX_LEN],
}

impl ChunkCipher {
    fn new(key: &DataKey, prefix: [u8; NONCE_PREFIX_LEN]) -> Result<Self> {
        // The key bytes are read in place from the `ZeroizeOnDrop` data key;
        // no copy is made here. `new` fails only for a key that is not 32
        // bytes (excluded by the type) or if aws-lc cannot set up a context.
        let key = UnboundKey::new(&AES_256_GCM, key.expose())
            .map_err(|_| Error::invalid("data key", "AES-256-GCM key setup failed"))?;
        Ok(ChunkCipher {
            aead: LessSafeKey::new(key),
            prefix,
        })
    }

    fn nonce(&self, counter: u32, flag: u8) -> ChunkNonce {
        let mut n = [0u8; 12];
        n[..NONCE_PREFIX_LEN].copy_from_slice(&self.prefix);
        n[7..11].copy_from_slice(&counter.to_be_bytes());
        n[11] = flag;
        ChunkNonce(n)
    }

    fn chunk_nonce(&self, index: u64, count: u64) -> Result<ChunkNonce> {
        let counter = u32::try_from(index)
            .map_err(|_| Error::malformed("container", "chunk index beyond 2^32"))?;
        let flag = if index + 1 == count {
            FLAG_FINAL
        } else {
            FLAG_CHUNK
        };
        Ok(self.nonce(counter, flag))
    }

    fn seal(&self, nonce: &ChunkNonce, aad: &[u8], buf: &mut [u8]) -> Result<[u8; TAG_LEN]> {
        let tag = self
            .aead
            .seal_in_place_separate_tag(nonce.get(), Aad::from(aad), buf)
            // Only fails for inputs beyond GCM's 2^36-byte limit; chunks are <= 16 MiB.
            .map_err(|_| Error::invalid("chunk", "too long for AES-GCM"))?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Verifies and decrypts `buf` in place. On failure `buf` is zeroed:
    /// its ciphertext is gone, and no unauthenticated plaintext is left.
    fn open(&self, nonce: &ChunkNonce, aad: &[u8], buf: &mut [u8], tag: &[u8; TAG_LEN]) -> bool {
        let ok = self
            .aead
            .open_in_place_separate_tag(nonce.get(), Aad::from(aad), tag, buf)
            .is_ok();
        if !ok {
            buf.zeroize();
        }
        ok
    }

    /// Verifies and decrypts `ciphertext` into `out` (of the same length),
    /// leaving `ciphertext` untouched. On failure `out` is zeroed.
    fn open_to(
        &self,
        nonce: &ChunkNonce,
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8; TAG_LEN],
        out: &mut [u8],
    ) -> bool {
        let ok = self
            .aead
            .open_separate_gather(nonce.get(), Aad::from(aad), ciphertext, tag, out)
            .is_ok();
        if !ok {
            out.zeroize();
        }
        ok
    }

    fn header_nonce(&self) -> ChunkNonce {
        self.nonce(u32::MAX, FLAG_HEADER)
    }
}

/// Constant-time equality of two 32-byte values.
fn subtle_eq(a: &[u8; 32], b: &[u8; 32]) -> subtle::Choice {
    use subtle::ConstantTimeEq;
    a.ct_eq(b)
}
