//! Compute kernels for the native backend: quantized matrix products,
//! activation quantization and the small f32 vector ops of attention.
//!
//! Each kernel has a portable scalar version and, on x86-64, an AVX2 version
//! selected once at run time (`is_x86_feature_detected!`). Setting
//! `CONFIDANT_KERNELS=scalar` forces the portable path (tests compare both).

use std::sync::OnceLock;

use crate::quant::{QK, QuantActs, WeightFormat};

#[cfg(target_arch = "x86_64")]
mod x86;

/// Instruction sets the kernels can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// Portable Rust.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// AVX2 path with AVX-512 VNNI (256-bit `vpdpbusd`) for the integer dots.
    Avx512Vnni,
}

/// The instruction set in use (detected once; `CONFIDANT_KERNELS=scalar|avx2` overrides downwards).
pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        let forced = std::env::var("CONFIDANT_KERNELS").ok();
        let detected = detect();
        match forced.as_deref() {
            Some("scalar") => Isa::Scalar,
            Some("avx2") if detected != Isa::Scalar => Isa::Avx2,
            _ => detected,
        }
    })
}

fn detect() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c")
        {
            if std::is_x86_feature_detected!("avx512vnni")
                && std::is_x86_feature_detected!("avx512vl")
                && std::is_x86_feature_detected!("avx512bw")
            {
                return Isa::Avx512Vnni;
            }
            return Isa::Avx2;
        }
    }
    Isa::Scalar
}

/// Quantizes activations (see [`QuantActs`]).
pub(crate) fn quantize_acts(x: &[f32], qs: &mut [i8], d: &mut [f32], s: &mut [f32]) {
    assert!(x.len() == qs.len() && d.len() * QK == x.len() && s.len() == d.len());
    #[cfg(target_arch = "x86_64")]
    if isa() != Isa::Scalar {
        x86::quantize_acts(x, qs, d, s);
        return;
    }
    crate::quant::quantize_acts_scalar(x, qs, d, s)
}

/// Multiplies a block of weight rows by every activation row.
///
/// `w` holds `nrows` consecutive rows in `fmt`, each `acts.cols` wide.
/// The result is weight-major: `out[r * acts.rows + t] = w[r] · acts[t]`.
pub fn matmul_rows(fmt: WeightFormat, w: &[u8], nrows: usize, acts: &QuantActs, out: &mut [f32]) {
    let nb = acts.blocks_per_row();
    let row_bytes = nb * fmt.block_bytes();
    // Checked once here so the kernels can index without bounds checks.
    assert!(w.len() >= nrows * row_bytes, "weight slice too short");
    assert!(out.len() >= nrows * acts.rows, "output slice too short");
    assert!(acts.qs.len() >= acts.rows * acts.cols && acts.d.len() >= acts.rows * nb);
    #[cfg(target_arch = "x86_64")]
    if isa() != Isa::Scalar {
        x86::matmul_rows(fmt, w, nrows, acts, out, isa() == Isa::Avx512Vnni);
        return;
    }
    let t = acts.rows;
    for r in 0..nrows {
        let row = &w[r * row_bytes..(r + 1) * row_bytes];
        for i in 0..t {
            out[r * t + i] = crate::quant::dot_row_scalar(
                fmt,
                row,
                &acts.qs[i * acts.cols..(i + 1) * acts.cols],
                &acts.d[i * nb..(i + 1) * nb],
                &acts.s[i * nb..(i + 1) * nb],
            );
        }
    }
}

/// `a · b` for f32 slices of equal length.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if isa() != Isa::Scalar {
        return x86::dot(a, b);
    }
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `y += alpha * x`.
#[inline]
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len());
    #[cfg(target_arch = "x86_64")]
    if isa() != Isa::Scalar {
        x86::axpy(alpha, x, y);
        return;
    }
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{dequantize_row, dot_row_scalar, quantize_acts_scalar};

    fn lcg(seed: &mut u64) -> u32 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (*seed >> 33) as u32
    }

    fn random_rows(fmt: WeightFormat, rows: usize, cols: usize, seed: &mut u64) -> Vec<u8> {
        let nb = cols / QK;
        let mut w = Vec::new();
        for _ in 0..rows * nb {
            let d = half::f16::from_f32((lcg(seed) % 1000) as f32 / 20000.0 + 0.001);
            let m = half::f16::from_f32(-((lcg(seed) % 1000) as f32) / 10000.0);
            w.extend_from_slice(&d.to_le_bytes());
            match fmt {
                WeightFormat::Q4_1 => {
                    w.extend_from_slice(&m.to_le_bytes());
                    w.extend((0..16).map(|_| lcg(seed) as u8));
                }
                WeightFormat::Q4_0 => w.extend((0..16).map(|_| lcg(seed) as u8)),
                WeightFormat::Q8_0 => w.extend((0..32).map(|_| lcg(seed) as u8)),
            }
        }
        w
    }

    fn random_acts(rows: usize, cols: usize, seed: &mut u64) -> Vec<f32> {
        (0..rows * cols)
            .map(|_| (lcg(seed) % 20001) as f32 / 10000.0 - 1.0)
            .collect()
    }

    #[test]
    fn quantize_matches_scalar_reference() {
        let mut seed = 7;
        let x = random_acts(3, 96, &mut seed);
        let mut a = QuantActs::default();
        a.quantize(&x, 3, 96);
        let (mut qs, mut d, mut s) = (vec![0i8; 288], vec![0f32; 9], vec![0f32; 9]);
        quantize_acts_scalar(&x, &mut qs, &mut d, &mut s);
        // Round-half cases may differ by one step between round() and the
        // SIMD nearest-even rounding; nothing else may.
        for (p, q) in a.qs.iter().zip(&qs) {
            assert!((*p as i32 - *q as i32).abs() <= 1);
        }
        assert_eq!(a.d, d);
    }

    #[test]
    fn simd_matmul_matches_scalar_and_dequantized_reference() {
        for fmt in [WeightFormat::Q4_0, WeightFormat::Q4_1, WeightFormat::Q8_0] {
            let mut seed = 42;
            let (rows, cols) = (13, 256);
            let w = random_rows(fmt, rows, cols, &mut seed);
            for t in [1usize, 2, 3, 4, 5, 9] {
                let x = random_acts(t, cols, &mut seed);
                let mut acts = QuantActs::default();
                acts.quantize(&x, t, cols);
                let mut out = vec![0f32; rows * t];
                matmul_rows(fmt, &w, rows, &acts, &mut out);
                let nb = cols / QK;
                let rb = nb * fmt.block_bytes();
                let mut deq = vec![0f32; cols];
                for r in 0..rows {
                    dequantize_row(fmt, &w[r * rb..(r + 1) * rb], &mut deq);
                    for i in 0..t {
                        let scalar = dot_row_scalar(
                            fmt,
                            &w[r * rb..(r + 1) * rb],
                            &acts.qs[i * cols..(i + 1) * cols],
                            &acts.d[i * nb..(i + 1) * nb],
                            &acts.s[i * nb..(i + 1) * nb],
                        );
                        let exact: f32 =
                            deq.iter().zip(&x[i * cols..(i + 1) * cols]).map(|(a, b)| a * b).sum();
                        let got = out[r * t + i];
                        assert!(
                            (got - scalar).abs() <= 1e-3 * (1.0 + scalar.abs()),
                            "{fmt:?} t={t} r={r}: simd {got} scalar {scalar}"
                        );
                        assert!(
                            (got - exact).abs() <= 0.02 * (1.0 + exact.abs()),
                            "{fmt:?} t={t} r={r}: simd {got} exact {exact}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn vector_ops_match_scalar() {
        let mut seed = 3;
        for n in [1usize, 7, 8, 64, 67] {
            let a = random_acts(1, n, &mut seed);
            let b = random_acts(1, n, &mut seed);
            let want: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - want).abs() < 1e-4);
            let mut y = b.clone();
            axpy(0.5, &a, &mut y);
            for i in 0..n {
                assert!((y[i] - (b[i] + 0.5 * a[i])).abs() < 1e-6);
            }
        }
    }
}
