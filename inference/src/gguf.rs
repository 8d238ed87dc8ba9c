//! A GGUF file held in memory.
//!
//! Encrypted models are decrypted into (locked) memory only, so a model is
//! always loaded from a byte buffer, never from a path. Parsing is delegated
//! to candle's GGUF reader, which bounds every count and length against the
//! buffer size; tensor data is then borrowed straight from the buffer.

use std::collections::HashMap;
use std::io::Cursor;

use bytes::Bytes;
use candle_core::quantized::GgmlDType;
use candle_core::quantized::gguf_file::{Content, Value};

use crate::error::{Error, Result};

/// A parsed GGUF file whose tensor data stays in the caller's buffer.
pub struct Gguf {
    bytes: Bytes,
    content: Content,
}

/// Where one tensor's data lives in the buffer, and what it is.
#[derive(Debug, Clone)]
pub struct TensorRef {
    /// The tensor's name in the file.
    pub name: String,
    /// ggml storage type.
    pub dtype: GgmlDType,
    /// Dimensions, outermost first (rows, cols for a matrix).
    pub dims: Vec<usize>,
    /// Byte range in the buffer.
    pub range: std::ops::Range<usize>,
}

impl Gguf {
    /// Parses the GGUF header and tensor table of `bytes`.
    pub fn parse(bytes: Bytes) -> Result<Self> {
        let content =
            Content::read(&mut Cursor::new(&bytes[..])).map_err(|e| Error::Gguf(e.to_string()))?;
        Ok(Self { bytes, content })
    }

    /// The whole buffer.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// candle's view of the file (metadata, tensor infos).
    pub fn content(&self) -> &Content {
        &self.content
    }

    /// All metadata.
    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.content.metadata
    }

    /// A metadata value, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    /// A required string value.
    pub fn str(&self, key: &str) -> Result<&str> {
        match self.get(key) {
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(meta_err(key, "is not a string")),
            None => Err(meta_err(key, "is missing")),
        }
    }

    /// A required unsigned integer (any integer width, non-negative).
    pub fn usize(&self, key: &str) -> Result<usize> {
        let v = self.get(key).ok_or_else(|| meta_err(key, "is missing"))?;
        value_to_usize(v).ok_or_else(|| meta_err(key, "is not a non-negative integer"))
    }

    /// An optional unsigned integer.
    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => value_to_usize(v)
                .map(Some)
                .ok_or_else(|| meta_err(key, "is not a non-negative integer")),
        }
    }

    /// A required float (f32 or f64).
    pub fn f32(&self, key: &str) -> Result<f32> {
        match self.get(key) {
            Some(Value::F32(v)) => Ok(*v),
            Some(Value::F64(v)) => Ok(*v as f32),
            Some(_) => Err(meta_err(key, "is not a float")),
            None => Err(meta_err(key, "is missing")),
        }
    }

    /// An optional float.
    pub fn opt_f32(&self, key: &str) -> Result<Option<f32>> {
        match self.get(key) {
            None => Ok(None),
            Some(_) => self.f32(key).map(Some),
        }
    }

    /// An optional boolean.
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(meta_err(key, "is not a boolean")),
        }
    }

    /// A tensor's location, bounds-checked against the buffer.
    pub fn tensor(&self, name: &str) -> Result<TensorRef> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| tensor_err(name, "is missing"))?;
        let dims = info.shape.dims().to_vec();
        let elems = dims
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| tensor_err(name, "element count overflows"))?;
        let block = info.ggml_dtype.block_size();
        if elems % block != 0 {
            return Err(tensor_err(
                name,
                &format!("{elems} elements are not a multiple of the block size {block}"),
            ));
        }
        let size = (elems / block)
            .checked_mul(info.ggml_dtype.type_size())
            .ok_or_else(|| tensor_err(name, "size overflows"))?;
        let start = usize::try_from(self.content.tensor_data_offset)
            .ok()
            .and_then(|o| o.checked_add(usize::try_from(info.offset).ok()?))
            .ok_or_else(|| tensor_err(name, "offset overflows"))?;
        let end = start
            .checked_add(size)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| {
                tensor_err(
                    name,
                    &format!(
                        "needs {size} bytes at offset {start}, the file has {}",
                        self.bytes.len()
                    ),
                )
            })?;
        Ok(TensorRef {
            name: name.to_owned(),
            dtype: info.ggml_dtype,
            dims,
            range: start..end,
        })
    }

    /// The bytes of a tensor.
    pub fn tensor_bytes(&self, t: &TensorRef) -> &[u8] {
        &self.bytes[t.range.clone()]
    }

    /// Whether a tensor exists.
    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }
}

fn value_to_usize(v: &Value) -> Option<usize> {
    match *v {
        Value::U8(x) => Some(x as usize),
        Value::U16(x) => Some(x as usize),
        Value::U32(x) => usize::try_from(x).ok(),
        Value::U64(x) => usize::try_from(x).ok(),
        Value::I8(x) => usize::try_from(x).ok(),
        Value::I16(x) => usize::try_from(x).ok(),
        Value::I32(x) => usize::try_from(x).ok(),
        Value::I64(x) => usize::try_from(x).ok(),
        _ => None,
    }
}

pub(crate) fn meta_err(key: &str, problem: &str) -> Error {
    Error::Metadata {
        key: key.to_owned(),
        problem: problem.to_owned(),
    }
}

pub(crate) fn tensor_err(name: &str, problem: &str) -> Error {
    Error::Tensor {
        name: name.to_owned(),
        problem: problem.to_owned(),
    }
}
