//! x86-64 SIMD kernels: AVX2 + FMA + F16C, and the same kernels with AVX-512
//! VNNI (`vpdpbusd` on 256-bit registers) for the 8-bit dot products.
//!
//! Every entry point here is called only after `super::isa()` confirmed the
//! CPU features at run time, and after `super` checked slice lengths; the
//! `unsafe` blocks rely on exactly those two facts.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use crate::quant::{QK, QuantActs, WeightFormat};

/// Horizontal sum of eight f32 lanes.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Horizontal sum of eight i32 lanes.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn hsum_epi32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

pub(super) fn vectorised<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: AVX2/FMA/F16C presence was checked by `isa()`; `f` is safe code.
    unsafe { run_avx2(f) }
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn run_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

pub(super) fn quantize_acts(x: &[f32], qs: &mut [i8], d: &mut [f32], s: &mut [f32]) {
    // SAFETY: AVX2/FMA/F16C presence was checked by `isa()`; `super` asserted
    // x.len() == qs.len() == 32 * d.len() == 32 * s.len().
    unsafe { quantize_acts_avx2(x, qs, d, s) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_acts_avx2(x: &[f32], qs: &mut [i8], d: &mut [f32], s: &mut [f32]) {
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for b in 0..d.len() {
        // SAFETY: block b covers x[32b..32b+32] and qs[32b..32b+32], in bounds
        // because x.len() == qs.len() == 32 * d.len().
        unsafe {
            let p = x.as_ptr().add(b * QK);
            let v0 = _mm256_loadu_ps(p);
            let v1 = _mm256_loadu_ps(p.add(8));
            let v2 = _mm256_loadu_ps(p.add(16));
            let v3 = _mm256_loadu_ps(p.add(24));
            let m = _mm256_max_ps(
                _mm256_max_ps(_mm256_and_ps(v0, abs_mask), _mm256_and_ps(v1, abs_mask)),
                _mm256_max_ps(_mm256_and_ps(v2, abs_mask), _mm256_and_ps(v3, abs_mask)),
            );
            let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
            let m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            let m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
            let amax = _mm_cvtss_f32(m4);
            let dd = amax / 127.0;
            let id = _mm256_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
            const R: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
            let i0 = _mm256_cvtps_epi32(_mm256_round_ps::<R>(_mm256_mul_ps(v0, id)));
            let i1 = _mm256_cvtps_epi32(_mm256_round_ps::<R>(_mm256_mul_ps(v1, id)));
            let i2 = _mm256_cvtps_epi32(_mm256_round_ps::<R>(_mm256_mul_ps(v2, id)));
            let i3 = _mm256_cvtps_epi32(_mm256_round_ps::<R>(_mm256_mul_ps(v3, id)));
            let sum = hsum_epi32(_mm256_add_epi32(
                _mm256_add_epi32(i0, i1),
                _mm256_add_epi32(i2, i3),
            ));
            let packed = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
            let packed = _mm256_permutevar8x32_epi32(packed, perm);
            _mm256_storeu_si256(qs.as_mut_ptr().add(b * QK) as *mut __m256i, packed);
            // Stored as ggml stores q8_1: d and s = d·Σq, both in f16.
            d[b] = half::f16::from_f32(dd).to_f32();
            s[b] = half::f16::from_f32(dd * sum as f32).to_f32();
        }
    }
}

pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    // SAFETY: features checked by `isa()`; `super` asserted equal lengths.
    unsafe { dot_avx2(a, b) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len();
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    let mut i = 0;
    // SAFETY: every load reads [i, i+8) or [i+8, i+16) with i + 16 <= n
    // (or i + 8 <= n below), and a.len() == b.len() == n.
    unsafe {
        while i + 16 <= n {
            acc0 = _mm256_fmadd_ps(
                _mm256_loadu_ps(a.as_ptr().add(i)),
                _mm256_loadu_ps(b.as_ptr().add(i)),
                acc0,
            );
            acc1 = _mm256_fmadd_ps(
                _mm256_loadu_ps(a.as_ptr().add(i + 8)),
                _mm256_loadu_ps(b.as_ptr().add(i + 8)),
                acc1,
            );
            i += 16;
        }
        if i + 8 <= n {
            acc0 = _mm256_fmadd_ps(
                _mm256_loadu_ps(a.as_ptr().add(i)),
                _mm256_loadu_ps(b.as_ptr().add(i)),
                acc0,
            );
            i += 8;
        }
    }
    let mut sum = hsum_ps(_mm256_add_ps(acc0, acc1));
    while i < n {
        sum += a[i] * b[i];
        i += 1;
    }
    sum
}

pub(super) fn dot_f16(a: &[f32], b: &[half::f16]) -> f32 {
    // SAFETY: features checked by `isa()`; `super` asserted equal lengths.
    unsafe { dot_f16_avx2(a, b) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f16_avx2(a: &[f32], b: &[half::f16]) -> f32 {
    let n = a.len();
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    // SAFETY: each access covers [i, i+8) with i + 8 <= n == a.len() ==
    // b.len(); f16 is two bytes, so 8 of them are one 128-bit load.
    unsafe {
        while i + 8 <= n {
            let h = _mm256_cvtph_ps(_mm_loadu_si128(b.as_ptr().add(i) as *const __m128i));
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(a.as_ptr().add(i)), h, acc);
            i += 8;
        }
    }
    let mut sum = hsum_ps(acc);
    while i < n {
        sum += a[i] * b[i].to_f32();
        i += 1;
    }
    sum
}

pub(super) fn dot_f16_strided(a: &[f32], b: &[half::f16]) -> f32 {
    // SAFETY: features checked by `isa()`; `super` asserted equal lengths.
    unsafe { dot_f16_strided_avx2(a, b) }
}

/// `ggml_vec_dot_f16`'s exact order: four 8-lane accumulators over 32-element
/// steps, folded (0+2)+(1+3), lo+hi, two `hadd`s, leftovers added in f64.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f16_strided_avx2(a: &[f32], b: &[half::f16]) -> f32 {
    let n = a.len();
    let np = n & !31;
    let mut s = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    // SAFETY: each access covers [i + 8j, i + 8j + 8) with i + 32 <= np <= n
    // == a.len() == b.len().
    unsafe {
        while i < np {
            for (j, sj) in s.iter_mut().enumerate() {
                let h =
                    _mm256_cvtph_ps(_mm_loadu_si128(b.as_ptr().add(i + 8 * j) as *const __m128i));
                *sj = _mm256_fmadd_ps(_mm256_loadu_ps(a.as_ptr().add(i + 8 * j)), h, *sj);
            }
            i += 32;
        }
    }
    let u = _mm256_add_ps(_mm256_add_ps(s[0], s[2]), _mm256_add_ps(s[1], s[3]));
    let t = _mm_add_ps(_mm256_castps256_ps128(u), _mm256_extractf128_ps::<1>(u));
    let t = _mm_hadd_ps(t, t);
    let t = _mm_hadd_ps(t, t);
    let mut sum = f64::from(_mm_cvtss_f32(t));
    for e in np..n {
        sum += f64::from(a[e] * b[e].to_f32());
    }
    sum as f32
}

pub(super) fn axpy_f16(alpha: f32, x: &[half::f16], y: &mut [f32]) {
    // SAFETY: features checked by `isa()`; `super` asserted equal lengths.
    unsafe { axpy_f16_avx2(alpha, x, y) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn axpy_f16_avx2(alpha: f32, x: &[half::f16], y: &mut [f32]) {
    let n = x.len();
    let a = _mm256_set1_ps(alpha);
    let mut i = 0;
    // SAFETY: each access covers [i, i+8) with i + 8 <= n == x.len() == y.len().
    unsafe {
        while i + 8 <= n {
            let yp = y.as_mut_ptr().add(i);
            let h = _mm256_cvtph_ps(_mm_loadu_si128(x.as_ptr().add(i) as *const __m128i));
            _mm256_storeu_ps(yp, _mm256_fmadd_ps(a, h, _mm256_loadu_ps(yp)));
            i += 8;
        }
    }
    while i < n {
        y[i] += alpha * x[i].to_f32();
        i += 1;
    }
}

/// ggml's vectorised `expf` (`ggml_v_expf`, AVX2 + FMA), bit for bit.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn exp_ps(x: __m256) -> __m256 {
    let r = _mm256_set1_ps(f32::from_bits(0x4b40_0000)); // 0x1.8p23
    let z = _mm256_fmadd_ps(x, _mm256_set1_ps(f32::from_bits(0x3fb8_aa3b)), r); // 0x1.715476p+0
    let n = _mm256_sub_ps(z, r);
    let b = _mm256_fnmadd_ps(
        n,
        _mm256_set1_ps(f32::from_bits(0x35bf_be8e)), // 0x1.7f7d1cp-20
        _mm256_fnmadd_ps(n, _mm256_set1_ps(f32::from_bits(0x3f31_7200)), x), // 0x1.62e4p-1
    );
    let e = _mm256_slli_epi32::<23>(_mm256_castps_si256(z));
    let k = _mm256_castsi256_ps(_mm256_add_epi32(
        e,
        _mm256_castps_si256(_mm256_set1_ps(1.0)),
    ));
    let abs_n = _mm256_andnot_ps(_mm256_set1_ps(-0.0), n);
    let c = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GT_OQ>(abs_n, _mm256_set1_ps(126.0)));
    let u = _mm256_mul_ps(b, b);
    let j = _mm256_fmadd_ps(
        _mm256_fmadd_ps(
            _mm256_fmadd_ps(
                _mm256_set1_ps(f32::from_bits(0x3c07_2010)), // 0x1.0e4020p-7
                b,
                _mm256_set1_ps(f32::from_bits(0x3d2b_9f17)), // 0x1.573e2ep-5
            ),
            u,
            _mm256_fmadd_ps(
                _mm256_set1_ps(f32::from_bits(0x3e2a_af33)), // 0x1.555e66p-3
                b,
                _mm256_set1_ps(f32::from_bits(0x3eff_fedb)), // 0x1.fffdb6p-2
            ),
        ),
        u,
        _mm256_mul_ps(_mm256_set1_ps(f32::from_bits(0x3f7f_fff6)), b), // 0x1.ffffecp-1
    );
    if _mm256_movemask_ps(_mm256_castsi256_ps(c)) == 0 {
        return _mm256_fmadd_ps(j, k, k);
    }
    let g = _mm256_and_si256(
        _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(n, _mm256_setzero_ps())),
        _mm256_set1_epi32(0x8200_0000u32 as i32),
    );
    let s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f00_0000)));
    let s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
    let d = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GT_OQ>(abs_n, _mm256_set1_ps(192.0)));
    _mm256_or_ps(
        _mm256_and_ps(_mm256_castsi256_ps(d), _mm256_mul_ps(s1, s1)),
        _mm256_andnot_ps(
            _mm256_castsi256_ps(d),
            _mm256_or_ps(
                _mm256_and_ps(
                    _mm256_castsi256_ps(c),
                    _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1),
                ),
                _mm256_andnot_ps(_mm256_castsi256_ps(c), _mm256_fmadd_ps(k, j, k)),
            ),
        ),
    )
}

pub(super) fn exp_sub_sum(x: &mut [f32], max: f32) -> f64 {
    // SAFETY: features checked by `isa()`; `super` asserted x.len() % 8 == 0.
    unsafe { exp_sub_sum_avx2(x, max) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn exp_sub_sum_avx2(x: &mut [f32], max: f32) -> f64 {
    let m = _mm256_set1_ps(max);
    let mut sum = 0f64;
    for c in x.chunks_exact_mut(8) {
        // SAFETY: c has exactly 8 elements.
        unsafe {
            let v = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), m));
            _mm256_storeu_ps(c.as_mut_ptr(), v);
            sum += f64::from(hsum_ps(v));
        }
    }
    sum
}

pub(super) fn silu_mul(g: &mut [f32], u: &[f32]) {
    // SAFETY: features checked by `isa()`; `super` asserted equal lengths.
    unsafe { silu_mul_avx2(g, u) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn silu_mul_avx2(g: &mut [f32], u: &[f32]) {
    let n = g.len();
    let one = _mm256_set1_ps(1.0);
    let mut i = 0;
    // SAFETY: each access covers [i, i+8) with i + 8 <= n == g.len() == u.len().
    unsafe {
        while i + 8 <= n {
            let x = _mm256_loadu_ps(g.as_ptr().add(i));
            let e = exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), x));
            let silu = _mm256_div_ps(x, _mm256_add_ps(one, e));
            let y = _mm256_mul_ps(silu, _mm256_loadu_ps(u.as_ptr().add(i)));
            _mm256_storeu_ps(g.as_mut_ptr().add(i), y);
            i += 8;
        }
    }
    while i < n {
        g[i] = g[i] / (1.0 + (-g[i]).exp()) * u[i];
        i += 1;
    }
}

pub(super) fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    // SAFETY: features checked by `isa()`; `super` asserted equal lengths.
    unsafe { axpy_avx2(alpha, x, y) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn axpy_avx2(alpha: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len();
    let a = _mm256_set1_ps(alpha);
    let mut i = 0;
    // SAFETY: each access covers [i, i+8) with i + 8 <= n == x.len() == y.len().
    unsafe {
        while i + 8 <= n {
            let yp = y.as_mut_ptr().add(i);
            _mm256_storeu_ps(
                yp,
                _mm256_fmadd_ps(a, _mm256_loadu_ps(x.as_ptr().add(i)), _mm256_loadu_ps(yp)),
            );
            i += 8;
        }
    }
    while i < n {
        y[i] += alpha * x[i];
        i += 1;
    }
}

pub(super) fn matmul_rows(
    fmt: WeightFormat,
    w: &[u8],
    nrows: usize,
    acts: &QuantActs,
    out: &mut [f32],
    vnni: bool,
) {
    // SAFETY: features checked by `isa()` (VNNI only when `vnni` is set);
    // `super::matmul_rows` asserted that `w` holds `nrows` rows of
    // `acts.cols` weights, that `out` has `nrows * acts.rows` slots and that
    // `acts` is consistent.
    unsafe {
        if vnni {
            vnni::matmul_rows(fmt, w, nrows, acts, out)
        } else {
            avx2::matmul_rows(fmt, w, nrows, acts, out)
        }
    }
}

/// Format tags for the const-generic kernels (no run-time dispatch inside loops).
const F_Q4_0: u8 = 0;
const F_Q4_1: u8 = 1;
const F_Q8_0: u8 = 2;

/// Generates the quantized matmul kernels for one instruction set. `$dot`
/// turns (unsigned bytes, signed bytes) into eight i32 sums of four products.
///
/// Per (weight row, activation row) the arithmetic is always the same —
/// one f32 accumulator of eight lanes updated with one fused multiply-add
/// per block, the Q4_1 minimum term fused into a scalar, then the
/// horizontal sum — which is ggml's order; the kernels only differ in how
/// many rows and tokens they interleave to keep the units busy.
macro_rules! qmatmul_kernels {
    ($name:ident, $features:literal, $dot:item) => {
        mod $name {
            use super::*;

            $dot

            /// One weight block: (weights for the u8 side, signs for the
            /// i8 side, scale, minimum). For signed formats the u8 side is
            /// |w| and the activations take w's signs; Q4_1 is unsigned.
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn block<const F: u8>(p: *const u8) -> (__m256i, __m256i, f32, f32) {
                // SAFETY: the caller guarantees a whole block is readable at p.
                unsafe {
                    let nib = |q: *const u8| {
                        let q = _mm_loadu_si128(q as *const __m128i);
                        let m = _mm_set1_epi8(0x0F);
                        _mm256_set_m128i(
                            _mm_and_si128(_mm_srli_epi16::<4>(q), m),
                            _mm_and_si128(q, m),
                        )
                    };
                    if F == F_Q4_1 {
                        let dm = _mm_cvtph_ps(_mm_cvtsi32_si128(std::ptr::read_unaligned(
                            p as *const i32,
                        )));
                        let w = nib(p.add(4));
                        (w, w, _mm_cvtss_f32(dm), _mm_cvtss_f32(_mm_movehdup_ps(dm)))
                    } else {
                        let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
                            std::ptr::read_unaligned(p as *const u16) as i32,
                        )));
                        let w = if F == F_Q4_0 {
                            _mm256_sub_epi8(nib(p.add(2)), _mm256_set1_epi8(8))
                        } else {
                            _mm256_loadu_si256(p.add(2) as *const __m256i)
                        };
                        (_mm256_sign_epi8(w, w), w, d, 0.0)
                    }
                }
            }

            /// Eight i32 partial dot products of a weight block with 32 activations.
            #[target_feature(enable = $features)]
            #[inline]
            fn prod<const F: u8>(wu: __m256i, ws: __m256i, a: __m256i) -> __m256i {
                if F == F_Q4_1 {
                    dot_u8i8(wu, a)
                } else {
                    dot_u8i8(wu, _mm256_sign_epi8(a, ws))
                }
            }

            const fn bytes<const F: u8>() -> usize {
                match F {
                    F_Q4_0 => 18,
                    F_Q4_1 => 20,
                    _ => 34,
                }
            }

            /// One token: four weight rows at a time (four independent
            /// accumulation chains sharing each activation load).
            #[target_feature(enable = $features)]
            unsafe fn rows_one_token<const F: u8>(
                w: *const u8,
                nrows: usize,
                nb: usize,
                qs: *const i8,
                ad: *const f32,
                asum: *const f32,
                out: *mut f32,
            ) {
                let bb = bytes::<F>();
                let rb = nb * bb;
                let mut r = 0;
                // SAFETY: rows r..r+4 < nrows lie in w (nrows * rb bytes);
                // block b < nb of the activation row is at qs[32b..], ad[b],
                // asum[b]; out has nrows slots.
                unsafe {
                    while r + 4 <= nrows {
                        let base = w.add(r * rb);
                        let mut acc = [_mm256_setzero_ps(); 4];
                        let mut mins = [0f32; 4];
                        for b in 0..nb {
                            let a = _mm256_loadu_si256(qs.add(b * QK) as *const __m256i);
                            let dx = *ad.add(b);
                            let sx = *asum.add(b);
                            for i in 0..4 {
                                let (wu, ws, dw, mw) = block::<F>(base.add(i * rb + b * bb));
                                let p = prod::<F>(wu, ws, a);
                                acc[i] = _mm256_fmadd_ps(
                                    _mm256_set1_ps(dw * dx),
                                    _mm256_cvtepi32_ps(p),
                                    acc[i],
                                );
                                if F == F_Q4_1 {
                                    // ggml's compiled kernel fuses this multiply-add.
                                    mins[i] = mw.mul_add(sx, mins[i]);
                                }
                            }
                        }
                        for i in 0..4 {
                            *out.add(r + i) = hsum_ps(acc[i]) + mins[i];
                        }
                        r += 4;
                    }
                    while r < nrows {
                        let base = w.add(r * rb);
                        let mut acc = _mm256_setzero_ps();
                        let mut mins = 0f32;
                        for b in 0..nb {
                            let a = _mm256_loadu_si256(qs.add(b * QK) as *const __m256i);
                            let (wu, ws, dw, mw) = block::<F>(base.add(b * bb));
                            let p = prod::<F>(wu, ws, a);
                            acc = _mm256_fmadd_ps(
                                _mm256_set1_ps(dw * *ad.add(b)),
                                _mm256_cvtepi32_ps(p),
                                acc,
                            );
                            if F == F_Q4_1 {
                                mins = mw.mul_add(*asum.add(b), mins);
                            }
                        }
                        *out.add(r) = hsum_ps(acc) + mins;
                        r += 1;
                    }
                }
            }

            /// Several tokens: each weight block is unpacked once and used
            /// for up to four tokens.
            #[target_feature(enable = $features)]
            unsafe fn rows_tokens<const F: u8, const N: usize>(
                row: *const u8,
                nb: usize,
                acts: &QuantActs,
                t0: usize,
                out: *mut f32,
            ) {
                let bb = bytes::<F>();
                let cols = acts.cols;
                let qs = acts.qs.as_ptr();
                let ad = acts.d.as_ptr();
                let asum = acts.s.as_ptr();
                let mut acc = [_mm256_setzero_ps(); N];
                let mut mins = [0f32; N];
                // SAFETY: block b < nb of this row is at row + b*bb; token
                // t0 + t < acts.rows has block b at qs[(t0+t)*cols + 32b..],
                // ad/asum[(t0+t)*nb + b]; out has N slots.
                unsafe {
                    for b in 0..nb {
                        let (wu, ws, dw, mw) = block::<F>(row.add(b * bb));
                        for t in 0..N {
                            let a = _mm256_loadu_si256(
                                qs.add((t0 + t) * cols + b * QK) as *const __m256i,
                            );
                            let p = prod::<F>(wu, ws, a);
                            let ti = (t0 + t) * nb + b;
                            acc[t] = _mm256_fmadd_ps(
                                _mm256_set1_ps(dw * *ad.add(ti)),
                                _mm256_cvtepi32_ps(p),
                                acc[t],
                            );
                            if F == F_Q4_1 {
                                mins[t] = mw.mul_add(*asum.add(ti), mins[t]);
                            }
                        }
                    }
                    for t in 0..N {
                        *out.add(t) = hsum_ps(acc[t]) + mins[t];
                    }
                }
            }

            #[target_feature(enable = $features)]
            unsafe fn matmul_fmt<const F: u8>(
                w: &[u8],
                nrows: usize,
                acts: &QuantActs,
                out: &mut [f32],
            ) {
                let nb = acts.blocks_per_row();
                let rb = nb * bytes::<F>();
                let t_all = acts.rows;
                // SAFETY: the caller checked that w holds nrows rows, out
                // nrows * t_all slots, and acts is consistent.
                unsafe {
                    if t_all == 1 {
                        rows_one_token::<F>(
                            w.as_ptr(),
                            nrows,
                            nb,
                            acts.qs.as_ptr(),
                            acts.d.as_ptr(),
                            acts.s.as_ptr(),
                            out.as_mut_ptr(),
                        );
                        return;
                    }
                    for r in 0..nrows {
                        let row = w.as_ptr().add(r * rb);
                        let o = out.as_mut_ptr().add(r * t_all);
                        let mut t = 0;
                        while t + 4 <= t_all {
                            rows_tokens::<F, 4>(row, nb, acts, t, o.add(t));
                            t += 4;
                        }
                        match t_all - t {
                            3 => rows_tokens::<F, 3>(row, nb, acts, t, o.add(t)),
                            2 => rows_tokens::<F, 2>(row, nb, acts, t, o.add(t)),
                            1 => rows_tokens::<F, 1>(row, nb, acts, t, o.add(t)),
                            _ => {}
                        }
                    }
                }
            }

            #[target_feature(enable = $features)]
            pub(super) unsafe fn matmul_rows(
                fmt: WeightFormat,
                w: &[u8],
                nrows: usize,
                acts: &QuantActs,
                out: &mut [f32],
            ) {
                // SAFETY: forwarded caller guarantees (see `matmul_fmt`).
                unsafe {
                    match fmt {
                        WeightFormat::Q4_0 => matmul_fmt::<F_Q4_0>(w, nrows, acts, out),
                        WeightFormat::Q4_1 => matmul_fmt::<F_Q4_1>(w, nrows, acts, out),
                        WeightFormat::Q8_0 => matmul_fmt::<F_Q8_0>(w, nrows, acts, out),
                    }
                }
            }
        }
    };
}

qmatmul_kernels!(
    avx2,
    "avx2,fma,f16c",
    /// u8 × i8 products summed in fours: `maddubs` (no saturation: the
    /// unsigned side is at most 128 here) then `madd` with ones.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn dot_u8i8(u: __m256i, s: __m256i) -> __m256i {
        _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
    }
);

qmatmul_kernels!(
    vnni,
    "avx2,fma,f16c,avx512vnni,avx512vl,avx512bw,avx512f",
    /// u8 × i8 products summed in fours with one `vpdpbusd`.
    #[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl,avx512bw,avx512f")]
    #[inline]
    fn dot_u8i8(u: __m256i, s: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s)
    }
);
