//! ggml block formats the native backend runs, their scalar reference
//! arithmetic, and quantized activations.
//!
//! Weights stay in the GGUF buffer in ggml's block layout (no load-time
//! conversion, so output quality is exactly the file's). Activations are
//! quantized per 32-element block to 8 bits, the way llama.cpp does for the
//! same formats (`q8_0`/`q8_1`), so integer dot products can be used.

use half::f16;

/// Elements per block for every format here.
pub const QK: usize = 32;

/// Weight formats the native kernels handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    /// 4-bit, scale only: `x = d * (q - 8)`; 18 bytes per block.
    Q4_0,
    /// 4-bit, scale and minimum: `x = d * q + m`; 20 bytes per block.
    Q4_1,
    /// 8-bit, scale only: `x = d * q`; 34 bytes per block.
    Q8_0,
}

impl WeightFormat {
    /// Bytes per block of 32 weights.
    pub const fn block_bytes(self) -> usize {
        match self {
            WeightFormat::Q4_0 => 18,
            WeightFormat::Q4_1 => 20,
            WeightFormat::Q8_0 => 34,
        }
    }

    /// Maps a ggml type to a native format, if there is one.
    pub fn from_ggml(dtype: candle_core::quantized::GgmlDType) -> Option<Self> {
        use candle_core::quantized::GgmlDType as D;
        match dtype {
            D::Q4_0 => Some(WeightFormat::Q4_0),
            D::Q4_1 => Some(WeightFormat::Q4_1),
            D::Q8_0 => Some(WeightFormat::Q8_0),
            _ => None,
        }
    }
}

#[inline(always)]
pub(crate) fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Dequantizes one block into `out` (32 values).
pub fn dequantize_block(fmt: WeightFormat, block: &[u8], out: &mut [f32]) {
    match fmt {
        WeightFormat::Q4_0 => {
            let d = f16_at(block, 0);
            let qs = &block[2..18];
            for j in 0..16 {
                out[j] = d * ((qs[j] & 0x0F) as i32 - 8) as f32;
                out[j + 16] = d * ((qs[j] >> 4) as i32 - 8) as f32;
            }
        }
        WeightFormat::Q4_1 => {
            let d = f16_at(block, 0);
            let m = f16_at(block, 2);
            let qs = &block[4..20];
            for j in 0..16 {
                out[j] = d * (qs[j] & 0x0F) as f32 + m;
                out[j + 16] = d * (qs[j] >> 4) as f32 + m;
            }
        }
        WeightFormat::Q8_0 => {
            let d = f16_at(block, 0);
            for j in 0..32 {
                out[j] = d * block[2 + j] as i8 as f32;
            }
        }
    }
}

/// Dequantizes a whole row of `cols` weights.
pub fn dequantize_row(fmt: WeightFormat, row: &[u8], out: &mut [f32]) {
    let bb = fmt.block_bytes();
    for (b, o) in out.chunks_exact_mut(QK).enumerate() {
        dequantize_block(fmt, &row[b * bb..(b + 1) * bb], o);
    }
}

/// A batch of activation rows quantized to 8 bits per 32-element block.
///
/// Per block: `d` (scale, rounded through f16 as llama.cpp stores it) and
/// `s = d * Σq` (used by formats with a minimum, like Q4_1).
#[derive(Debug, Default)]
pub struct QuantActs {
    /// Elements per row (a multiple of 32).
    pub cols: usize,
    /// Number of rows (tokens).
    pub rows: usize,
    /// `rows * cols` quantized values.
    pub qs: Vec<i8>,
    /// `rows * cols / 32` scales.
    pub d: Vec<f32>,
    /// `rows * cols / 32` scaled sums.
    pub s: Vec<f32>,
}

impl QuantActs {
    /// Quantizes `rows` rows of `cols` values from `x` (row-major), reusing
    /// this buffer's allocations.
    pub fn quantize(&mut self, x: &[f32], rows: usize, cols: usize) {
        debug_assert_eq!(x.len(), rows * cols);
        debug_assert_eq!(cols % QK, 0);
        self.rows = rows;
        self.cols = cols;
        let nb = rows * cols / QK;
        self.qs.resize(rows * cols, 0);
        self.d.resize(nb, 0.0);
        self.s.resize(nb, 0.0);
        crate::kernels::quantize_acts(x, &mut self.qs, &mut self.d, &mut self.s);
    }

    /// Blocks per row.
    pub fn blocks_per_row(&self) -> usize {
        self.cols / QK
    }
}

/// Scalar reference for activation quantization (what the SIMD paths match).
pub(crate) fn quantize_acts_scalar(x: &[f32], qs: &mut [i8], d: &mut [f32], s: &mut [f32]) {
    for (b, xb) in x.chunks_exact(QK).enumerate() {
        let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
        let dd = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let mut sum = 0i32;
        for (j, v) in xb.iter().enumerate() {
            let q = (v * id).round_ties_even() as i32;
            qs[b * QK + j] = q as i8;
            sum += q;
        }
        d[b] = f16::from_f32(dd).to_f32();
        s[b] = f16::from_f32(dd * sum as f32).to_f32();
    }
}

/// Portable dot product of one weight row with one activation row.
///
/// It follows the SIMD kernels' arithmetic exactly (eight lanes of four
/// exact integer products each, one fused multiply-add per lane and block,
/// the same horizontal sum), so every instruction set gives the same bits.
pub(crate) fn dot_row_scalar(
    fmt: WeightFormat,
    row: &[u8],
    qs: &[i8],
    d: &[f32],
    s: &[f32],
) -> f32 {
    let bb = fmt.block_bytes();
    let mut lanes = [0f32; 8];
    let mut mins = 0f32;
    let mut w = [0i32; QK];
    for b in 0..d.len() {
        let blk = &row[b * bb..(b + 1) * bb];
        let a = &qs[b * QK..(b + 1) * QK];
        let scale = match fmt {
            WeightFormat::Q4_0 => {
                for j in 0..16 {
                    w[j] = (blk[2 + j] & 0x0F) as i32 - 8;
                    w[j + 16] = (blk[2 + j] >> 4) as i32 - 8;
                }
                f16_at(blk, 0)
            }
            WeightFormat::Q4_1 => {
                for j in 0..16 {
                    w[j] = (blk[4 + j] & 0x0F) as i32;
                    w[j + 16] = (blk[4 + j] >> 4) as i32;
                }
                mins = f16_at(blk, 2).mul_add(s[b], mins);
                f16_at(blk, 0)
            }
            WeightFormat::Q8_0 => {
                for j in 0..32 {
                    w[j] = blk[2 + j] as i8 as i32;
                }
                f16_at(blk, 0)
            }
        };
        let dd = scale * d[b];
        for (l, lane) in lanes.iter_mut().enumerate() {
            let p: i32 = (4 * l..4 * l + 4).map(|j| w[j] * a[j] as i32).sum();
            *lane = dd.mul_add(p as f32, *lane);
        }
    }
    crate::kernels::hsum8(&lanes) + mins
}
