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

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::datakey::{DataKey, fill_random};
use crate::error::{Error, Result};
use crate::header::{
    ChunkSize, Header, KeyId, MetadataText, ModelFormat, NONCE_PREFIX_LEN, TAG_LEN,
};

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

/// Parameters of a container to write.
#[derive(Clone, Debug)]
pub struct EncryptParams {
    /// Names the data key (bound into the header and into the wrapping).
    pub key_id: KeyId,
    /// What the plaintext is.
    pub format: ModelFormat,
    /// Metadata: model name (may be empty).
    pub name: MetadataText,
    /// Metadata: license (may be empty).
    pub license: MetadataText,
    /// Plaintext bytes per chunk.
    pub chunk_size: ChunkSize,
}

impl EncryptParams {
    /// Parameters with empty metadata and the default chunk size.
    pub fn new(key_id: KeyId, format: ModelFormat) -> Self {
        EncryptParams {
            key_id,
            format,
            name: MetadataText::default(),
            license: MetadataText::default(),
            chunk_size: ChunkSize::default(),
        }
    }
}

/// Length and SHA-256 of a plaintext, measured before encrypting it (the
/// header, which is authenticated with every chunk, carries both).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlaintextInfo {
    /// Length in bytes.
    pub len: u64,
    /// SHA-256 digest.
    pub sha256: [u8; 32],
}

impl PlaintextInfo {
    /// Hashes a whole reader with a 1 MiB buffer.
    pub fn compute<R: Read>(mut reader: R) -> Result<Self> {
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut len = 0u64;
        loop {
            let k = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("reading the plaintext")(e)),
            };
            h.update(&buf[..k]);
            len += k as u64;
        }
        Ok(PlaintextInfo {
            len,
            sha256: h.finalize().into(),
        })
    }

    /// Info of an in-memory plaintext.
    pub fn of(bytes: &[u8]) -> Self {
        PlaintextInfo {
            len: bytes.len() as u64,
            sha256: Sha256::digest(bytes).into(),
        }
    }
}

/// Encrypts `reader` (which must yield exactly the plaintext described by
/// `info`) into a container written to `writer`, with a fresh random nonce
/// prefix. Memory use is one chunk.
///
/// If the reader's bytes turn out not to match `info`, this returns
/// [`Error::InputChanged`] *after* having written a container that will
/// fail its digest check: the caller must discard the output.
pub fn encrypt<R: Read, W: Write>(
    key: &DataKey,
    params: &EncryptParams,
    info: &PlaintextInfo,
    reader: R,
    writer: W,
) -> Result<Header> {
    let mut prefix = [0u8; NONCE_PREFIX_LEN];
    fill_random(&mut prefix)?;
    encrypt_with_prefix(key, params, info, prefix, reader, writer)
}

/// Like [`encrypt`], with a caller-chosen nonce prefix. Only for producing
/// reproducible test vectors: reusing a prefix with the same data key
/// destroys the confidentiality of both containers.
#[doc(hidden)]
pub fn encrypt_with_fixed_nonce_prefix_for_test_vectors<R: Read, W: Write>(
    key: &DataKey,
    params: &EncryptParams,
    info: &PlaintextInfo,
    prefix: [u8; NONCE_PREFIX_LEN],
    reader: R,
    writer: W,
) -> Result<Header> {
    encrypt_with_prefix(key, params, info, prefix, reader, writer)
}

fn encrypt_with_prefix<R: Read, W: Write>(
    key: &DataKey,
    params: &EncryptParams,
    info: &PlaintextInfo,
    prefix: [u8; NONCE_PREFIX_LEN],
    mut reader: R,
    mut writer: W,
) -> Result<Header> {
    let cipher = ChunkCipher::new(key, prefix);
    let mut header = Header::build(
        params.format,
        params.chunk_size,
        info.len,
        prefix,
        info.sha256,
        key_commitment(key, &prefix),
        params.key_id.clone(),
        params.name.clone(),
        params.license.clone(),
    )?;
    let tag = cipher.seal(&cipher.header_nonce(), header.tag_aad(), &mut [])?;
    header.set_tag(tag);
    let write_err = Error::io("writing the container");
    writer.write_all(header.as_bytes()).map_err(write_err)?;

    let n = header.chunk_count();
    let mut buf = Zeroizing::new(vec![0u8; header.chunk_size() as usize]);
    let mut hasher = Sha256::new();
    for i in 0..n {
        let len = header.chunk_plain_len(i);
        let chunk = &mut buf[..len];
        let got = read_up_to(&mut reader, chunk).map_err(Error::io("reading the plaintext"))?;
        if got < len {
            return Err(Error::InputChanged {
                reason: format!(
                    "plaintext ended after {} bytes, {} were announced",
                    i * u64::from(header.chunk_size()) + got as u64,
                    info.len
                ),
            });
        }
        hasher.update(&*chunk);
        let nonce = cipher.chunk_nonce(i, n)?;
        let tag = cipher.seal(&nonce, header.as_bytes(), chunk)?;
        writer
            .write_all(chunk)
            .map_err(Error::io("writing the container"))?;
        writer
            .write_all(&tag)
            .map_err(Error::io("writing the container"))?;
    }
    let mut probe = [0u8; 1];
    if read_up_to(&mut reader, &mut probe).map_err(Error::io("reading the plaintext"))? != 0 {
        return Err(Error::InputChanged {
            reason: format!("plaintext is longer than the {} bytes announced", info.len),
        });
    }
    let digest: [u8; 32] = hasher.finalize().into();
    if digest != info.sha256 {
        return Err(Error::InputChanged {
            reason: "plaintext SHA-256 differs from the one announced".into(),
        });
    }
    writer.flush().map_err(Error::io("writing the container"))?;
    Ok(header)
}

/// Reads until `buf` is full or the reader ends; returns the bytes read.
fn read_up_to<R: Read + ?Sized>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Random-access source of container bytes for parallel decryption:
/// a file (positional reads) or a byte slice.
pub trait ChunkSource: Sync {
    /// Total length in bytes.
    fn byte_len(&self) -> io::Result<u64>;
    /// Fills `buf` from `offset`; fails with `UnexpectedEof` past the end.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

impl ChunkSource for [u8] {
    fn byte_len(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let src = usize::try_from(offset)
            .ok()
            .and_then(|start| self.get(start..start.checked_add(buf.len())?))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

#[cfg(unix)]
impl ChunkSource for std::fs::File {
    fn byte_len(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
}

/// Proof that a plaintext was fully authenticated and its SHA-256 matches
/// the header. Only [`Decryptor`] constructs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifiedPlaintext {
    len: u64,
    sha256: [u8; 32],
}

impl VerifiedPlaintext {
    /// Length of the plaintext.
    pub fn len(&self) -> u64 {
        self.len
    }
    /// True for an empty plaintext.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// SHA-256 of the plaintext (equal to the header's).
    pub fn sha256(&self) -> &[u8; 32] {
        &self.sha256
    }
}

/// Decrypts one container. Built by [`Decryptor::new`], which has already
/// checked the key (commitment) and the header (tag).
pub struct Decryptor {
    header: Header,
    cipher: ChunkCipher,
}

impl std::fmt::Debug for Decryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decryptor")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

/// State of the in-order SHA-256 over chunks that finish out of order.
struct HashState<'a> {
    /// `None` while one worker is hashing.
    hasher: Option<Sha256>,
    /// Next chunk index to hash.
    next: u64,
    /// Decrypted chunks waiting for their turn.
    ready: BTreeMap<u64, &'a [u8]>,
}

impl<'a> HashState<'a> {
    fn pop_run(&mut self) -> Vec<&'a [u8]> {
        let mut run = Vec::new();
        while let Some(chunk) = self.ready.remove(&self.next) {
            run.push(chunk);
            self.next += 1;
        }
        run
    }
}

type ChunkQueue<'a> = std::iter::Enumerate<std::slice::ChunksMut<'a, u8>>;

struct Shared<'a> {
    queue: Mutex<ChunkQueue<'a>>,
    hash: Mutex<HashState<'a>>,
    failed: AtomicBool,
    /// First failure by chunk index.
    error: Mutex<Option<(u64, Error)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock means a worker panicked; the scope re-raises that
    // panic on join, so the data behind the lock is never used for a result.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Decryptor {
    /// Checks `key` against the header's key commitment
    /// ([`Error::WrongKey`]) and then the header tag ([`Error::HeaderAuth`]).
    pub fn new(header: Header, key: &DataKey) -> Result<Self> {
        let commitment = key_commitment(key, &header.nonce_prefix);
        if !bool::from(subtle_eq(&commitment, &header.key_commitment)) {
            return Err(Error::WrongKey {
                key_id: header.key_id.to_string(),
            });
        }
        let cipher = ChunkCipher::new(key, header.nonce_prefix);
        if !cipher.open(
            &cipher.header_nonce(),
            header.tag_aad(),
            &mut [],
            &header.header_tag,
        ) {
            return Err(Error::HeaderAuth);
        }
        Ok(Decryptor { header, cipher })
    }

    /// The authenticated header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Decrypts the container in `src` into `out`, which must be exactly
    /// `header().plaintext_len()` bytes, using `threads` threads. Each chunk
    /// is read straight into its place in `out` and decrypted there after
    /// its tag verifies; the plaintext SHA-256 is computed in order as
    /// chunks complete and compared before returning.
    ///
    /// On any error every byte of `out` is zeroed.
    pub fn decrypt_into<S: ChunkSource + ?Sized>(
        &self,
        src: &S,
        out: &mut [u8],
        threads: NonZeroUsize,
    ) -> Result<VerifiedPlaintext> {
        if out.len() as u64 != self.header.plaintext_len {
            return Err(Error::OutputLength {
                expected: self.header.plaintext_len,
                actual: out.len() as u64,
            });
        }
        let result = self.decrypt_into_inner(src, out, threads);
        if result.is_err() {
            out.zeroize();
        }
        result
    }

    fn decrypt_into_inner<S: ChunkSource + ?Sized>(
        &self,
        src: &S,
        out: &mut [u8],
        threads: NonZeroUsize,
    ) -> Result<VerifiedPlaintext> {
        let expected = self.header.container_len();
        let actual = src
            .byte_len()
            .map_err(Error::io("reading the container length"))?;
        if actual < expected {
            return Err(Error::Truncated { expected, actual });
        }
        if actual > expected {
            return Err(Error::TrailingData { expected, actual });
        }
        // The chunks are authenticated against `self.header`; a source that
        // starts with another header is a caller mix-up, reported as such
        // rather than as a failing chunk 0.
        let mut on_disk = vec![0u8; self.header.len()];
        src.read_exact_at(&mut on_disk, 0)
            .map_err(Error::io("reading the container header"))?;
        if on_disk != self.header.as_bytes() {
            return Err(Error::malformed(
                "container",
                "its header differs from the one this decryptor was built from",
            ));
        }
        if out.is_empty() {
            // One empty final chunk: only its tag.
            self.decrypt_chunk_at(src, 0, &mut [])?;
            return self.finish(Sha256::new());
        }
        let n = self.header.chunk_count();
        let shared = Shared {
            queue: Mutex::new(
                out.chunks_mut(self.header.chunk_size() as usize)
                    .enumerate(),
            ),
            hash: Mutex::new(HashState {
                hasher: Some(Sha256::new()),
                next: 0,
                ready: BTreeMap::new(),
            }),
            failed: AtomicBool::new(false),
            error: Mutex::new(None),
        };
        let workers = usize::try_from(n).unwrap_or(usize::MAX).min(threads.get());
        std::thread::scope(|s| {
            for _ in 1..workers {
                s.spawn(|| self.worker(src, &shared));
            }
            self.worker(src, &shared);
        });
        if let Some((_, e)) = shared.error.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
        let state = shared.hash.into_inner().unwrap_or_else(|p| p.into_inner());
        match state.hasher {
            Some(h) if state.next == n && state.ready.is_empty() => self.finish(h),
            // Unreachable when no worker failed: every chunk was hashed.
            _ => Err(Error::malformed(
                "container",
                "internal: not every chunk was hashed",
            )),
        }
    }

    fn worker<'a, S: ChunkSource + ?Sized>(&self, src: &S, sh: &Shared<'a>) {
        loop {
            if sh.failed.load(Ordering::Relaxed) {
                return;
            }
            let Some((i, region)) = lock(&sh.queue).next() else {
                return;
            };
            let i = i as u64;
            if let Err(e) = self.decrypt_chunk_at(src, i, region) {
                sh.failed.store(true, Ordering::Relaxed);
                let mut slot = lock(&sh.error);
                if slot.as_ref().is_none_or(|(j, _)| i < *j) {
                    *slot = Some((i, e));
                }
                return;
            }
            let done: &'a [u8] = region;
            let (mut hasher, mut run) = {
                let mut st = lock(&sh.hash);
                st.ready.insert(i, done);
                if st.hasher.is_none() {
                    continue; // another worker is hashing and will pick it up
                }
                let run = st.pop_run();
                if run.is_empty() {
                    continue;
                }
                (st.hasher.take().unwrap_or_default(), run)
            };
            loop {
                for chunk in run {
                    hasher.update(chunk);
                }
                let mut st = lock(&sh.hash);
                run = st.pop_run();
                if run.is_empty() {
                    st.hasher = Some(hasher);
                    break;
                }
            }
        }
    }

    /// Reads chunk `i` into `region` (its plaintext length) and decrypts it
    /// there. On failure `region` holds ciphertext only.
    fn decrypt_chunk_at<S: ChunkSource + ?Sized>(
        &self,
        src: &S,
        i: u64,
        region: &mut [u8],
    ) -> Result<()> {
        let off = self.header.chunk_offset(i);
        src.read_exact_at(region, off)
            .map_err(Error::io("reading a chunk"))?;
        let mut tag = [0u8; TAG_LEN];
        src.read_exact_at(&mut tag, off + region.len() as u64)
            .map_err(Error::io("reading a chunk"))?;
        let nonce = self.cipher.chunk_nonce(i, self.header.chunk_count())?;
        if self
            .cipher
            .open(&nonce, self.header.as_bytes(), region, &tag)
        {
            Ok(())
        } else {
            Err(self.diagnose(i, region, &tag))
        }
    }

    /// Chunk `i` failed: find whether it is another position's chunk
    /// (reordering) by trying nearby positions of the same length, in a
    /// scratch buffer that is wiped afterwards.
    fn diagnose(&self, i: u64, ciphertext: &[u8], tag: &[u8; TAG_LEN]) -> Error {
        let n = self.header.chunk_count();
        let radius = (DIAGNOSIS_BUDGET / u64::from(self.header.chunk_size())).max(2) / 2;
        let lo = i.saturating_sub(radius);
        let hi = i.saturating_add(radius).min(n - 1);
        let mut scratch = Zeroizing::new(vec![0u8; ciphertext.len()]);
        for j in (lo..=hi).filter(|&j| j != i) {
            if self.header.chunk_plain_len(j) != ciphertext.len() {
                continue;
            }
            let Ok(nonce) = self.cipher.chunk_nonce(j, n) else {
                continue;
            };
            scratch.copy_from_slice(ciphertext);
            if self
                .cipher
                .open(&nonce, self.header.as_bytes(), &mut scratch, tag)
            {
                return Error::ChunkReordered {
                    position: i,
                    belongs_at: j,
                };
            }
        }
        Error::ChunkAuth { index: i }
    }

    fn finish(&self, hasher: Sha256) -> Result<VerifiedPlaintext> {
        let digest: [u8; 32] = hasher.finalize().into();
        if !bool::from(subtle_eq(&digest, &self.header.plaintext_sha256)) {
            return Err(Error::DigestMismatch {
                expected: hex::encode(self.header.plaintext_sha256),
                actual: hex::encode(digest),
            });
        }
        Ok(VerifiedPlaintext {
            len: self.header.plaintext_len,
            sha256: digest,
        })
    }

    /// Streams the chunks that follow the header in `reader` to `writer`,
    /// one chunk of memory at a time. A chunk is written only after its tag
    /// verified; the digest is checked after the last one, so on error the
    /// caller must discard what was written (the CLI writes to a temporary
    /// file that it removes).
    pub fn decrypt_stream<R: Read, W: Write>(
        &self,
        mut reader: R,
        mut writer: W,
    ) -> Result<VerifiedPlaintext> {
        let n = self.header.chunk_count();
        let expected = self.header.container_len();
        let mut buf = Zeroizing::new(vec![0u8; self.header.chunk_size() as usize + TAG_LEN]);
        let mut hasher = Sha256::new();
        let mut consumed = self.header.len() as u64;
        for i in 0..n {
            let len = self.header.chunk_plain_len(i);
            let want = len + TAG_LEN;
            let got = read_up_to(&mut reader, &mut buf[..want])
                .map_err(Error::io("reading the container"))?;
            consumed += got as u64;
            if got < want {
                return Err(Error::Truncated {
                    expected,
                    actual: consumed,
                });
            }
            let (chunk, rest) = buf[..want].split_at_mut(len);
            let mut tag = [0u8; TAG_LEN];
            tag.copy_from_slice(rest);
            let nonce = self.cipher.chunk_nonce(i, n)?;
            if !self
                .cipher
                .open(&nonce, self.header.as_bytes(), chunk, &tag)
            {
                return Err(self.diagnose(i, chunk, &tag));
            }
            hasher.update(&*chunk);
            writer
                .write_all(chunk)
                .map_err(Error::io("writing the plaintext"))?;
        }
        let mut probe = [0u8; 1];
        if read_up_to(&mut reader, &mut probe).map_err(Error::io("reading the container"))? != 0 {
            return Err(Error::TrailingData {
                expected,
                actual: consumed + 1,
            });
        }
        let verified = self.finish(hasher)?;
        writer.flush().map_err(Error::io("writing the plaintext"))?;
        Ok(verified)
    }
}

/// Constant-time equality of two 32-byte values.
fn subtle_eq(a: &[u8; 32], b: &[u8; 32]) -> subtle::Choice {
    use subtle::ConstantTimeEq;
    a.ct_eq(b)
}
