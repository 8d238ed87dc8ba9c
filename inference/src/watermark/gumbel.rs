//! The `gumbel-max` kind: exponential-minimum sampling (Aaronson 2022;
//! Kuditipudi et al. 2023, "Robust Distortion-free Watermarks for Language
//! Models"; Fernandez et al. 2023, "Three Bricks to Consolidate Watermarks
//! for LLMs"). Specified in the module documentation of
//! [`crate::watermark`]; this file is the generation step and the score.
//!
//! Each position draws a keyed uniform `u_t` per token `t`; the token taken
//! is `argmax_t u_t^(1/q_t)` where `q` is the distribution the sampler would
//! have drawn from. Over the key, that is an exact sample of `q` (the
//! Gumbel-max trick in disguise), so the mark costs no quality in
//! expectation; the chosen token's `u` is biased towards 1, which the
//! detector measures as `Σ −ln(1 − u)`.

use std::collections::HashSet;

use super::{Inner, StepKey};
use crate::sampling::ProcessContext;

/// `2^-53`: the spacing of the uniforms.
const ULP: f64 = 1.0 / 9_007_199_254_740_992.0;

impl StepKey {
    /// The keyed uniform of token `t` at this position, in (0, 1): the top
    /// 53 bits of the token hash, plus half a step.
    #[inline(always)]
    pub(super) fn uniform(&self, t: u32) -> f64 {
        ((super::token_hash(self.k0, self.k1, t) >> 11) as f64 + 0.5) * ULP
    }
}

/// Per-request state of the `gumbel-max` processor.
#[derive(Default)]
pub(super) struct GumbelState {
    /// Contexts already watermarked in this sequence: a repeated context is
    /// sampled normally, or the deterministic choice would repeat too and
    /// could lock the text into a loop.
    seen: HashSet<Vec<u32>>,
    /// Scaled logits, then their exponentials.
    scratch: Vec<f32>,
}

impl GumbelState {
    /// Replaces `logits` by a one-hot choice (every other logit `-inf`), or
    /// leaves them alone: greedy steps (nothing to choose), contexts shorter
    /// than `h`, repeated contexts, and logits with nothing finite.
    pub(super) fn process(&mut self, wm: &Inner, ctx: &ProcessContext<'_>, logits: &mut [f32]) {
        let h = wm.params.context_width;
        let t = ctx.temperature;
        // Greedy (0) or not a number: nothing to draw.
        if t.is_nan() || t <= 0.0 || logits.is_empty() {
            return;
        }
        let Some(window) = ctx.tokens.len().checked_sub(h).map(|s| &ctx.tokens[s..]) else {
            return;
        };
        if self.seen.contains(window) {
            return;
        }
        let Some(key) = wm.step_key(ctx.tokens) else {
            return;
        };
        let Some(chosen) = self.choose(&key, logits, t) else {
            return;
        };
        self.seen.insert(window.to_vec());
        for (i, l) in logits.iter_mut().enumerate() {
            if i != chosen {
                *l = f32::NEG_INFINITY;
            }
        }
    }

    /// `argmin_t −ln(u_t) / w_t` with `w_t = exp((l_t − max) / T)` (the
    /// sampler's distribution up to its normaliser, which does not move the
    /// argmin). Exact, without a logarithm per token: `−ln(u)/w < b` needs
    /// `u > exp(−b·w) ≥ 1 − b·w`, so only tokens passing that cheap test
    /// (about `b · Σw` of them, a handful) get the exact comparison.
    fn choose(&mut self, key: &StepKey, logits: &[f32], t: f32) -> Option<usize> {
        let (top, &top_l) = logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))?;
        if !top_l.is_finite() {
            return None;
        }
        let inv_t = 1.0 / t;
        self.scratch.clear();
        self.scratch.extend(logits.iter().map(|&l| l * inv_t));
        self.scratch
            .resize(logits.len().next_multiple_of(8), f32::NEG_INFINITY);
        // exp((l − max) / T): the top token has weight 1.
        crate::kernels::exp_sub_sum(&mut self.scratch, top_l * inv_t);
        let w = &self.scratch[..logits.len()];
        let mut best = top;
        let mut bound = -key.uniform(top as u32).ln() / f64::from(w[top]);
        for (i, &wi) in w.iter().enumerate() {
            if wi <= 0.0 || i == top {
                continue;
            }
            let wi = f64::from(wi);
            let u = key.uniform(i as u32);
            if u > 1.0 - bound * wi {
                let c = -u.ln() / wi;
                if c < bound {
                    bound = c;
                    best = i;
                }
            }
        }
        Some(best)
    }
}

/// The score of one scored position: `−ln(1 − u)`, an Exp(1) variable for
/// text made without the key.
pub(super) fn score(key: &StepKey, token: u32) -> f64 {
    -(-key.uniform(token)).ln_1p()
}

/// The z-score of a sum `s` of `n` Exp(1) scores (a Gamma(n, 1) variable
/// without the key), by the Wilson–Hilferty transform, which keeps the
/// gamma's right skew: `z = ((s/n)^(1/3) − (1 − 1/(9n))) / sqrt(1/(9n))`.
pub(super) fn z_score(s: f64, n: usize) -> f64 {
    if n == 0 {
        return 0.0;
    }
    let n = n as f64;
    let v = 1.0 / (9.0 * n);
    ((s / n).cbrt() - (1.0 - v)) / v.sqrt()
}
