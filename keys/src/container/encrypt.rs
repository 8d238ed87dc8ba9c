//! Writing a container: one chunk of memory, one pass over a plaintext
//! whose length and digest were measured beforehand.

use std::io::{self, Read, Write};

use zeroize::Zeroizing;

use super::{ChunkCipher, Sha256, key_commitment};
use crate::datakey::{DataKey, fill_random};
use crate::error::{Error, Result};
use crate::header::{ChunkSize, Header, KeyId, MetadataText, ModelFormat, NONCE_PREFIX_LEN};

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
            sha256: h.finish(),
        })
    }

    /// Info of an in-memory plaintext.
    pub fn of(bytes: &[u8]) -> Self {
        PlaintextInfo {
            len: bytes.len() as u64,
            sha256: Sha256::digest(bytes),
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
    let cipher = ChunkCipher::new(key, prefix)?;
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
    let digest = hasher.finish();
    if digest != info.sha256 {
        return Err(Error::InputChanged {
            reason: "plaintext SHA-256 differs from the one announced".into(),
        });
    }
    writer.flush().map_err(Error::io("writing the container"))?;
    Ok(header)
}

/// Reads until `buf` is full or the reader ends; returns the bytes read.
pub(super) fn read_up_to<R: Read + ?Sized>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
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
