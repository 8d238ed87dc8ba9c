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

/// Runs `f` with the instruction set of [`isa`] enabled, so that the plain
/// loops it inlines are vectorised for that set (AVX2 on x86-64) instead of
/// the SSE2 baseline. For hot loops without intrinsics, such as the
/// watermark's green-list pass; the result does not depend on the set.
#[inline]
pub(crate) fn vectorised<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if isa() != Isa::Scalar {
        return x86::vectorised(f);
    }
    f()
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

/// `a · b` with `b` in half precision (KV cache rows), accumulated in f32.
#[inline]
pub fn dot_f16(a: &[f32], b: &[half::f16]) -> f32 {
    assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if isa() != Isa::Scalar {
        return x86::dot_f16(a, b);
    }
    let mut acc = [0f32; 8];
    let mut i = 0;
    while i + 8 <= a.len() {
        for l in 0..8 {
            acc[l] = a[i + l].mul_add(b[i + l].to_f32(), acc[l]);
        }
        i += 8;
    }
    let mut sum = hsum8(&acc);
    while i < a.len() {
        sum += a[i] * b[i].to_f32();
        i += 1;
    }
    sum
}

/// `a · b` in `ggml_vec_dot_f16`'s summation order: four 8-lane accumulators
/// over 32-element steps, folded (0+2)+(1+3), then lo+hi and two horizontal
/// adds; elements past the last full step are added in f64.
pub fn dot_f16_strided(a: &[f32], b: &[half::f16]) -> f32 {
    assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if isa() != Isa::Scalar {
        return x86::dot_f16_strided(a, b);
    }
    let n = a.len();
    let np = n & !31;
    let mut acc = [[0f32; 8]; 4];
    let mut i = 0;
    while i < np {
        for (j, accj) in acc.iter_mut().enumerate() {
            for (l, al) in accj.iter_mut().enumerate() {
                let e = i + j * 8 + l;
                *al = a[e].mul_add(b[e].to_f32(), *al);
            }
        }
        i += 32;
    }
    let mut u = [0f32; 8];
    for (l, ul) in u.iter_mut().enumerate() {
        *ul = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
    }
    let mut sum = f64::from(hsum8_hadd(&u));
    for e in np..n {
        sum += f64::from(a[e] * b[e].to_f32());
    }
    sum as f32
}

/// Eight lanes summed as `lo+hi` then two horizontal adds (ggml's F32x8 reduce).
pub fn hsum8_hadd(u: &[f32; 8]) -> f32 {
    let t = [u[0] + u[4], u[1] + u[5], u[2] + u[6], u[3] + u[7]];
    (t[0] + t[1]) + (t[2] + t[3])
}

/// `y += alpha * x` with `x` in half precision (KV cache rows).
#[inline]
pub fn axpy_f16(alpha: f32, x: &[half::f16], y: &mut [f32]) {
    assert_eq!(x.len(), y.len());
    #[cfg(target_arch = "x86_64")]
    if isa() != Isa::Scalar {
        x86::axpy_f16(alpha, x, y);
        return;
    }
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi = alpha.mul_add(xi.to_f32(), *yi);
    }
}

/// ggml's `ggml_v_expf` for one value (the scalar twin of the SIMD
/// version, bit for bit: same constants, same fused multiply-adds).
pub fn exp_ggml(x: f32) -> f32 {
    let r = f32::from_bits(0x4b40_0000);
    let z = x.mul_add(f32::from_bits(0x3fb8_aa3b), r);
    let n = z - r;
    let b = (-n).mul_add(
        f32::from_bits(0x35bf_be8e),
        (-n).mul_add(f32::from_bits(0x3f31_7200), x),
    );
    let e = z.to_bits().wrapping_shl(23);
    let k = f32::from_bits(e.wrapping_add(1f32.to_bits()));
    let c = n.abs() > 126.0;
    let u = b * b;
    let j = f32::from_bits(0x3c07_2010)
        .mul_add(b, f32::from_bits(0x3d2b_9f17))
        .mul_add(
            u,
            f32::from_bits(0x3e2a_af33).mul_add(b, f32::from_bits(0x3eff_fedb)),
        )
        .mul_add(u, f32::from_bits(0x3f7f_fff6) * b);
    if !c {
        return j.mul_add(k, k);
    }
    let g: u32 = if n <= 0.0 { 0x8200_0000 } else { 0 };
    let s1 = f32::from_bits(g.wrapping_add(0x7f00_0000));
    let s2 = f32::from_bits(e.wrapping_sub(g));
    if n.abs() > 192.0 {
        s1 * s1
    } else {
        s2.mul_add(j, s2) * s1
    }
}

/// `x[i] = exp(x[i] - max)` (ggml's exp), returning the sum accumulated as
/// ggml's softmax does: eight lanes at a time, each group summed in f32 in
/// the SIMD horizontal order, groups summed in f64. `x.len()` must be a
/// multiple of 8 (pad with `-inf`).
pub fn exp_sub_sum(x: &mut [f32], max: f32) -> f64 {
    assert_eq!(x.len() % 8, 0);
    #[cfg(target_arch = "x86_64")]
    if isa() != Isa::Scalar {
        return x86::exp_sub_sum(x, max);
    }
    let mut sum = 0f64;
    for c in x.chunks_exact_mut(8) {
        for v in c.iter_mut() {
            *v = exp_ggml(*v - max);
        }
        sum += f64::from(hsum8(c));
    }
    sum
}

/// The horizontal sum of eight lanes in the order AVX code sums them.
pub fn hsum8(v: &[f32]) -> f32 {
    let s = [v[4] + v[0], v[5] + v[1], v[6] + v[2], v[7] + v[3]];
    (s[0] + s[2]) + (s[1] + s[3])
}

/// `g[i] = silu(g[i]) * u[i]` with ggml's exp (SwiGLU).
pub fn silu_mul(g: &mut [f32], u: &[f32]) {
    assert_eq!(g.len(), u.len());
    #[cfg(target_arch = "x86_64")]
    if isa() != Isa::Scalar {
        x86::silu_mul(g, u);
        return;
    }
    for (gi, ui) in g.iter_mut().zip(u) {
        *gi = *gi / (1.0 + exp_ggml(0.0 - *gi)) * ui;
    }
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
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
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
        assert_eq!(a.qs, qs);
        assert_eq!(a.d, d);
        assert_eq!(a.s, s);
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
                        let exact: f32 = deq
                            .iter()
                            .zip(&x[i * cols..(i + 1) * cols])
                            .map(|(a, b)| a * b)
                            .sum();
                        // Quantizing activations moves each by at most half a
                        // step (d/2); weights are exact, so the error is bounded
                        // by Σ|w| · d/2 per block (f16 rounding of d adds a little).
                        let bound: f32 = deq
                            .chunks_exact(QK)
                            .enumerate()
                            .map(|(b, wb)| {
                                wb.iter().map(|v| v.abs()).sum::<f32>() * acts.d[i * nb + b] * 0.51
                            })
                            .sum::<f32>()
                            + 1e-3 * (1.0 + exact.abs());
                        let got = out[r * t + i];
                        assert_eq!(
                            got.to_bits(),
                            scalar.to_bits(),
                            "{fmt:?} t={t} r={r}: simd {got} scalar {scalar}"
                        );
                        assert!(
                            (got - exact).abs() <= bound,
                            "{fmt:?} t={t} r={r}: simd {got} exact {exact}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn exp_matches_ggml_on_its_range_and_edges() {
        for x in [
            -200.0f32, -104.0, -88.0, -20.0, -1.5, -1e-3, 0.0, 1e-3, 0.7, 5.0, 80.0,
        ] {
            let got = exp_ggml(x);
            let want = x.exp();
            assert!(
                (got - want).abs() <= 2e-6 * want.abs().max(f32::MIN_POSITIVE),
                "exp({x}) = {got}, libm {want}"
            );
        }
        assert_eq!(exp_ggml(f32::NEG_INFINITY), 0.0);
        let mut v = vec![0.5f32, -1.0, 2.0, f32::NEG_INFINITY, 0.0, -3.0, 1.0, -0.25];
        let expect: Vec<f32> = v.iter().map(|&x| exp_ggml(x - 2.0)).collect();
        let sum = exp_sub_sum(&mut v, 2.0);
        assert_eq!(v, expect);
        assert_eq!(sum, f64::from(hsum8(&expect)));
        let mut g = vec![-3.0f32, -0.5, 0.0, 0.5, 1.0, 2.0, 4.0, 9.0, 1.5];
        let u = vec![1.0f32; 9];
        let want: Vec<f32> = g.iter().map(|&x| x / (1.0 + exp_ggml(-x))).collect();
        silu_mul(&mut g, &u);
        for (a, b) in g.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{a} vs {b}");
        }
    }

    #[test]
    fn vector_ops_match_scalar() {
        let mut seed = 3;
        for n in [1usize, 7, 8, 64, 67, 256] {
            let a = random_acts(1, n, &mut seed);
            let b = random_acts(1, n, &mut seed);
            let want: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - want).abs() < 1e-4);
            let mut y = b.clone();
            axpy(0.5, &a, &mut y);
            for i in 0..n {
                assert!((y[i] - (b[i] + 0.5 * a[i])).abs() < 1e-6);
            }
            let bh: Vec<half::f16> = b.iter().map(|&v| half::f16::from_f32(v)).collect();
            let want: f32 = a.iter().zip(&bh).map(|(x, y)| x * y.to_f32()).sum();
            assert!((dot_f16(&a, &bh) - want).abs() < 1e-4);
            if n >= 32 {
                let mut acc = [[0f32; 8]; 4];
                for (e, (x, y)) in a.iter().zip(&bh).enumerate().take(n & !31) {
                    acc[(e / 8) % 4][e % 8] = x.mul_add(y.to_f32(), acc[(e / 8) % 4][e % 8]);
                }
                let u: [f32; 8] =
                    std::array::from_fn(|l| (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]));
                let mut want = f64::from(hsum8_hadd(&u));
                for e in (n & !31)..n {
                    want += f64::from(a[e] * bh[e].to_f32());
                }
                assert_eq!(dot_f16_strided(&a, &bh).to_bits(), (want as f32).to_bits());
            }
            let mut y = a.clone();
            axpy_f16(0.25, &bh, &mut y);
            for i in 0..n {
                assert!((y[i] - (a[i] + 0.25 * bh[i].to_f32())).abs() < 1e-6);
            }
        }
    }
}
