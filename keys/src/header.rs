//! The container header: checked value types and the byte layout of
//! `keys/FORMAT.md` §2. Parsing never panics and never allocates more than
//! [`MAX_HEADER_LEN`] bytes.

use std::fmt;
use std::io::Read;

use crate::error::{Error, Result};

/// Magic bytes that open every container: `CMDL\r\n\x1a\n`.
pub const MAGIC: [u8; 8] = *b"CMDL\r\n\x1a\n";
/// The container format version this build writes and reads.
pub const VERSION: u16 = 1;
/// Length of the fixed-size header prefix (through `key_commitment`).
pub const FIXED_LEN: usize = 97;
/// Upper bound on a header's total length.
pub const MAX_HEADER_LEN: usize = 4096;
/// Smallest accepted chunk size (plaintext bytes per chunk).
pub const MIN_CHUNK_SIZE: u32 = 4 * 1024;
/// Largest accepted chunk size.
pub const MAX_CHUNK_SIZE: u32 = 16 * 1024 * 1024;
/// Default chunk size: 256 KiB. A chunk is read, GHASHed, decrypted and
/// hashed in turn; at this size it stays in a core's L2 cache for all four
/// passes (measured 3–5 % faster than 1 MiB, see BENCHMARKS.md), and the tag
/// overhead is 0.006 %.
pub const DEFAULT_CHUNK_SIZE: u32 = 256 * 1024;
/// Largest number of chunks (the nonce's counter is 32 bits).
pub const MAX_CHUNKS: u64 = 1 << 32;
/// AES-GCM tag length appended to every chunk.
pub const TAG_LEN: usize = 16;
/// Length of the random nonce prefix.
pub const NONCE_PREFIX_LEN: usize = 7;
/// Longest key id.
pub const MAX_KEY_ID_LEN: usize = 64;
/// Longest `name` or `license` metadata field, in bytes of UTF-8.
pub const MAX_METADATA_LEN: usize = 1024;

const WHAT: &str = "container header";

/// A key id: 1–64 bytes of `[A-Za-z0-9._:-]`. It names the model's data key
/// in wrapped-key files and in the key broker, and is bound into every
/// wrapping as associated data.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KeyId(String);

impl KeyId {
    /// Checks and wraps a key id.
    pub fn new(s: &str) -> Result<Self> {
        if s.is_empty() || s.len() > MAX_KEY_ID_LEN {
            return Err(Error::invalid(
                "key id",
                format!("must be 1..={MAX_KEY_ID_LEN} bytes, got {}", s.len()),
            ));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
        {
            return Err(Error::invalid(
                "key id",
                format!("character {c:?} not allowed (use A-Z a-z 0-9 . _ : -)"),
            ));
        }
        Ok(KeyId(s.to_owned()))
    }

    /// The key id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({:?})", self.0)
    }
}

impl std::str::FromStr for KeyId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        KeyId::new(s)
    }
}

/// What kind of model file the plaintext is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelFormat {
    /// GGUF (llama.cpp / candle quantized).
    Gguf,
    /// safetensors.
    Safetensors,
}

impl ModelFormat {
    pub(crate) fn to_byte(self) -> u8 {
        match self {
            ModelFormat::Gguf => 1,
            ModelFormat::Safetensors => 2,
        }
    }

    pub(crate) fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(ModelFormat::Gguf),
            2 => Some(ModelFormat::Safetensors),
            _ => None,
        }
    }

    /// Lower-case name: `gguf` or `safetensors`.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelFormat::Gguf => "gguf",
            ModelFormat::Safetensors => "safetensors",
        }
    }

    /// Guesses the format from a file's first bytes: GGUF starts with
    /// `GGUF`; safetensors with a little-endian u64 JSON length then `{`.
    pub fn sniff(prefix: &[u8]) -> Option<Self> {
        if prefix.starts_with(b"GGUF") {
            return Some(ModelFormat::Gguf);
        }
        if prefix.len() >= 9 && prefix[8] == b'{' {
            let mut n = [0u8; 8];
            n.copy_from_slice(&prefix[..8]);
            if u64::from_le_bytes(n) >= 2 {
                return Some(ModelFormat::Safetensors);
            }
        }
        None
    }
}

impl fmt::Display for ModelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ModelFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "gguf" => Ok(ModelFormat::Gguf),
            "safetensors" => Ok(ModelFormat::Safetensors),
            other => Err(Error::invalid(
                "model format",
                format!("{other:?} (expected gguf or safetensors)"),
            )),
        }
    }
}

/// Plaintext bytes per chunk, within [`MIN_CHUNK_SIZE`]..=[`MAX_CHUNK_SIZE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkSize(u32);

impl ChunkSize {
    /// Checks a chunk size.
    pub fn new(n: u32) -> Result<Self> {
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&n) {
            return Err(Error::invalid(
                "chunk size",
                format!("{n} is outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}"),
            ));
        }
        Ok(ChunkSize(n))
    }

    /// The size in bytes.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for ChunkSize {
    fn default() -> Self {
        ChunkSize(DEFAULT_CHUNK_SIZE)
    }
}

/// One free-form metadata field (`name`, `license`): UTF-8, at most
/// [`MAX_METADATA_LEN`] bytes, no control characters (so that `inspect`
/// cannot be used to inject terminal escapes).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct MetadataText(String);

impl MetadataText {
    /// Checks a metadata string.
    pub fn new(s: &str) -> Result<Self> {
        check_metadata(s).map_err(|r| Error::invalid("metadata", r))?;
        Ok(MetadataText(s.to_owned()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for MetadataText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

fn check_metadata(s: &str) -> std::result::Result<(), String> {
    if s.len() > MAX_METADATA_LEN {
        return Err(format!(
            "{} bytes, at most {MAX_METADATA_LEN} allowed",
            s.len()
        ));
    }
    if s.chars().any(char::is_control) {
        return Err("control characters are not allowed".into());
    }
    Ok(())
}

/// A parsed container header. It is built only by [`Header::parse`] (or the
/// encryptor), so every field is within bounds. Parsing does **not**
/// authenticate: that needs the data key, see [`crate::Decryptor::new`].
#[derive(Clone, PartialEq, Eq)]
pub struct Header {
    pub(crate) bytes: Vec<u8>,
    pub(crate) format: ModelFormat,
    pub(crate) chunk_size: ChunkSize,
    pub(crate) plaintext_len: u64,
    pub(crate) nonce_prefix: [u8; NONCE_PREFIX_LEN],
    pub(crate) plaintext_sha256: [u8; 32],
    pub(crate) key_commitment: [u8; 32],
    pub(crate) key_id: KeyId,
    pub(crate) name: MetadataText,
    pub(crate) license: MetadataText,
    pub(crate) header_tag: [u8; TAG_LEN],
}

impl fmt::Debug for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Header")
            .field("key_id", &self.key_id)
            .field("format", &self.format)
            .field("chunk_size", &self.chunk_size.get())
            .field("plaintext_len", &self.plaintext_len)
            .field("plaintext_sha256", &hex::encode(self.plaintext_sha256))
            .field("name", &self.name)
            .field("license", &self.license)
            .finish_non_exhaustive()
    }
}

/// Number of chunks for a plaintext length: at least one (an empty
/// plaintext is one empty final chunk).
pub(crate) fn chunk_count(plaintext_len: u64, chunk_size: u32) -> u64 {
    plaintext_len.div_ceil(u64::from(chunk_size)).max(1)
}

impl Header {
    /// Parses a header from the start of `input` and returns it with its
    /// length. Trailing bytes (the chunks) are left alone.
    pub fn parse(input: &[u8]) -> Result<Self> {
        let mut r = Cursor { buf: input, pos: 0 };
        let magic = r.take(8)?;
        if magic != MAGIC {
            return Err(Error::BadMagic {
                what: "Confidant model container",
            });
        }
        let version = r.u16()?;
        if version != VERSION {
            return Err(Error::UnsupportedVersion {
                what: "container",
                found: version,
                supported: VERSION,
            });
        }
        let header_len = usize::from(r.u16()?);
        if !(FIXED_LEN + 1 + 2 + 2 + TAG_LEN..=MAX_HEADER_LEN).contains(&header_len) {
            return Err(Error::malformed(
                WHAT,
                format!("header_len {header_len} outside the allowed range"),
            ));
        }
        if input.len() < header_len {
            return Err(Error::malformed(
                WHAT,
                format!(
                    "input ends at {} bytes, header_len is {header_len}",
                    input.len()
                ),
            ));
        }
        // From here on, only the header's own bytes are read.
        let mut r = Cursor {
            buf: &input[..header_len],
            pos: 12,
        };
        let format_byte = r.u8()?;
        let format = ModelFormat::from_byte(format_byte)
            .ok_or_else(|| Error::malformed(WHAT, format!("unknown model format {format_byte}")))?;
        let reserved = r.u8()?;
        if reserved != 0 {
            return Err(Error::malformed(WHAT, "reserved byte is not zero"));
        }
        let chunk_size =
            ChunkSize::new(r.u32()?).map_err(|e| Error::malformed(WHAT, e.to_string()))?;
        let plaintext_len = r.u64()?;
        if plaintext_len.div_ceil(u64::from(chunk_size.get())) > MAX_CHUNKS {
            return Err(Error::malformed(WHAT, "more than 2^32 chunks"));
        }
        let nonce_prefix = r.array::<NONCE_PREFIX_LEN>()?;
        let plaintext_sha256 = r.array::<32>()?;
        let key_commitment = r.array::<32>()?;
        let key_id_len = usize::from(r.u8()?);
        let key_id = std::str::from_utf8(r.take(key_id_len)?)
            .map_err(|_| Error::malformed(WHAT, "key id is not UTF-8"))
            .and_then(|s| KeyId::new(s).map_err(|e| Error::malformed(WHAT, e.to_string())))?;
        let name = r.text()?;
        let license = r.text()?;
        let header_tag = r.array::<TAG_LEN>()?;
        if r.pos != header_len {
            return Err(Error::malformed(
                WHAT,
                format!("fields end at {} but header_len is {header_len}", r.pos),
            ));
        }
        Ok(Header {
            bytes: input[..header_len].to_vec(),
            format,
            chunk_size,
            plaintext_len,
            nonce_prefix,
            plaintext_sha256,
            key_commitment,
            key_id,
            name,
            license,
            header_tag,
        })
    }

    /// Reads exactly one header from `reader` (at most [`MAX_HEADER_LEN`]
    /// bytes), leaving it positioned at the first chunk.
    pub fn read_from<R: Read + ?Sized>(reader: &mut R) -> Result<Self> {
        let mut buf = vec![0u8; 12];
        read_full(reader, &mut buf)?;
        // Check magic and version before trusting header_len.
        if buf[..8] != MAGIC {
            return Err(Error::BadMagic {
                what: "Confidant model container",
            });
        }
        let len = usize::from(u16::from_be_bytes([buf[10], buf[11]]));
        if !(12..=MAX_HEADER_LEN).contains(&len) {
            return Header::parse(&buf);
        }
        buf.resize(len, 0);
        read_full(reader, &mut buf[12..])?;
        Header::parse(&buf)
    }

    /// Serialises a header from its fields (everything but the tag, which
    /// the caller fills in afterwards).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn build(
        format: ModelFormat,
        chunk_size: ChunkSize,
        plaintext_len: u64,
        nonce_prefix: [u8; NONCE_PREFIX_LEN],
        plaintext_sha256: [u8; 32],
        key_commitment: [u8; 32],
        key_id: KeyId,
        name: MetadataText,
        license: MetadataText,
    ) -> Result<Self> {
        if plaintext_len.div_ceil(u64::from(chunk_size.get())) > MAX_CHUNKS {
            return Err(Error::invalid(
                "plaintext length",
                format!(
                    "{plaintext_len} bytes need more than 2^32 chunks of {}",
                    chunk_size.get()
                ),
            ));
        }
        let total =
            FIXED_LEN + 1 + key_id.0.len() + 2 + name.0.len() + 2 + license.0.len() + TAG_LEN;
        debug_assert!(total <= MAX_HEADER_LEN);
        let mut b = Vec::with_capacity(total);
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(&VERSION.to_be_bytes());
        // total <= 97 + 1 + 64 + 2 + 1024 + 2 + 1024 + 16 = 2230 < u16::MAX.
        b.extend_from_slice(&(total as u16).to_be_bytes());
        b.push(format.to_byte());
        b.push(0);
        b.extend_from_slice(&chunk_size.get().to_be_bytes());
        b.extend_from_slice(&plaintext_len.to_be_bytes());
        b.extend_from_slice(&nonce_prefix);
        b.extend_from_slice(&plaintext_sha256);
        b.extend_from_slice(&key_commitment);
        b.push(key_id.0.len() as u8);
        b.extend_from_slice(key_id.0.as_bytes());
        b.extend_from_slice(&(name.0.len() as u16).to_be_bytes());
        b.extend_from_slice(name.0.as_bytes());
        b.extend_from_slice(&(license.0.len() as u16).to_be_bytes());
        b.extend_from_slice(license.0.as_bytes());
        b.extend_from_slice(&[0u8; TAG_LEN]);
        Ok(Header {
            bytes: b,
            format,
            chunk_size,
            plaintext_len,
            nonce_prefix,
            plaintext_sha256,
            key_commitment,
            key_id,
            name,
            license,
            header_tag: [0; TAG_LEN],
        })
    }

    pub(crate) fn set_tag(&mut self, tag: [u8; TAG_LEN]) {
        let n = self.bytes.len();
        self.bytes[n - TAG_LEN..].copy_from_slice(&tag);
        self.header_tag = tag;
    }

    /// The header's bytes up to (not including) the header tag: the
    /// associated data of the header tag.
    pub(crate) fn tag_aad(&self) -> &[u8] {
        &self.bytes[..self.bytes.len() - TAG_LEN]
    }

    /// The header exactly as on disk (the associated data of every chunk).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
    /// Header length in bytes; the first chunk starts here.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
    /// Always false: a header is never empty. (Present for clippy's sake.)
    pub fn is_empty(&self) -> bool {
        false
    }
    /// The key id of the data key.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }
    /// The model format.
    pub fn format(&self) -> ModelFormat {
        self.format
    }
    /// Plaintext bytes per chunk.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size.get()
    }
    /// Plaintext length in bytes.
    pub fn plaintext_len(&self) -> u64 {
        self.plaintext_len
    }
    /// SHA-256 of the plaintext, as announced by the encryptor.
    pub fn plaintext_sha256(&self) -> &[u8; 32] {
        &self.plaintext_sha256
    }
    /// The random nonce prefix (public).
    pub fn nonce_prefix(&self) -> &[u8; NONCE_PREFIX_LEN] {
        &self.nonce_prefix
    }
    /// Metadata: model name.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }
    /// Metadata: license.
    pub fn license(&self) -> &str {
        self.license.as_str()
    }
    /// Number of chunks.
    pub fn chunk_count(&self) -> u64 {
        chunk_count(self.plaintext_len, self.chunk_size.get())
    }
    /// Total container length that the header announces.
    pub fn container_len(&self) -> u64 {
        // Bounded: plaintext_len <= 2^32 * 16 MiB = 2^56, tags add 2^36.
        self.bytes.len() as u64 + self.plaintext_len + self.chunk_count() * TAG_LEN as u64
    }
    /// Plaintext length of chunk `i` (which must be < `chunk_count()`).
    pub(crate) fn chunk_plain_len(&self, i: u64) -> usize {
        let cs = u64::from(self.chunk_size.get());
        let start = i * cs;
        // <= chunk_size <= 16 MiB, fits usize.
        (self.plaintext_len.saturating_sub(start)).min(cs) as usize
    }
    /// Offset in the container of chunk `i`.
    pub(crate) fn chunk_offset(&self, i: u64) -> u64 {
        self.bytes.len() as u64 + i * (u64::from(self.chunk_size.get()) + TAG_LEN as u64)
    }
}

fn read_full<R: Read + ?Sized>(reader: &mut R, buf: &mut [u8]) -> Result<()> {
    reader.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::malformed(WHAT, "input ends inside the header")
        } else {
            Error::Io {
                context: "reading the container header",
                source: e,
            }
        }
    })
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                Error::malformed(
                    WHAT,
                    format!("field at offset {} runs past the header", self.pos),
                )
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn text(&mut self) -> Result<MetadataText> {
        let n = usize::from(self.u16()?);
        if n > MAX_METADATA_LEN {
            return Err(Error::malformed(
                WHAT,
                format!("metadata field of {n} bytes"),
            ));
        }
        let s = std::str::from_utf8(self.take(n)?)
            .map_err(|_| Error::malformed(WHAT, "metadata is not UTF-8"))?;
        check_metadata(s).map_err(|r| Error::malformed(WHAT, r))?;
        Ok(MetadataText(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_id_rules() {
        assert!(KeyId::new("model-1:v2.q4_1").is_ok());
        assert!(KeyId::new("").is_err());
        assert!(KeyId::new(&"a".repeat(65)).is_err());
        assert!(KeyId::new("a b").is_err());
        assert!(KeyId::new("a/b").is_err());
    }

    #[test]
    fn sniff_formats() {
        assert_eq!(
            ModelFormat::sniff(b"GGUF\x03\0\0\0"),
            Some(ModelFormat::Gguf)
        );
        let mut st = 20u64.to_le_bytes().to_vec();
        st.extend_from_slice(b"{\"__metadata__\":{}}");
        assert_eq!(ModelFormat::sniff(&st), Some(ModelFormat::Safetensors));
        assert_eq!(ModelFormat::sniff(b"hello world"), None);
    }

    #[test]
    fn metadata_rejects_control_characters() {
        assert!(MetadataText::new("Apache-2.0").is_ok());
        assert!(MetadataText::new("evil\x1b[2J").is_err());
        assert!(MetadataText::new(&"x".repeat(MAX_METADATA_LEN + 1)).is_err());
    }
}
