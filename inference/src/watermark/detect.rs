//! Detection: count green tokens, z-test, verdict.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::{KeyId, Watermark, WatermarkKind, gumbel};
use crate::error::Result;
use crate::tokenizer::Tokenizer;

/// Default verdict threshold on the z-score.
pub const DEFAULT_Z_THRESHOLD: f64 = 4.0;
/// Default minimum of scored tokens for a verdict.
pub const DEFAULT_MIN_TOKENS: usize = 32;

/// How to decide.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectOptions {
    /// "watermarked" when `z ≥ threshold`.
    pub z_threshold: f64,
    /// "insufficient" below this many scored tokens.
    pub min_tokens: usize,
}

impl Default for DetectOptions {
    fn default() -> Self {
        Self {
            z_threshold: DEFAULT_Z_THRESHOLD,
            min_tokens: DEFAULT_MIN_TOKENS,
        }
    }
}

/// The decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// `z ≥ threshold` over enough tokens.
    Watermarked,
    /// `z < threshold` over enough tokens.
    NotWatermarked,
    /// Too few scored tokens to decide.
    Insufficient,
}

/// What detection found in one text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// `(G − γT) / sqrt(T γ (1 − γ))`; 0 when nothing was scored.
    pub z: f64,
    /// One-sided p-value `P(Z ≥ z)` under "not watermarked".
    pub p_value: f64,
    /// `T`: positions scored (repeated n-grams once).
    pub scored_tokens: usize,
    /// `G`: scored positions whose token is green (`green-list`; 0 for
    /// `gumbel-max`, which scores with [`Detection::score`]).
    pub green_tokens: usize,
    /// `gumbel-max`: `Σ −ln(1 − u)` over the scored positions (a
    /// Gamma(T, 1) variable without the key). Absent for `green-list`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Tokens in the text.
    pub total_tokens: usize,
    /// The decision.
    pub verdict: Verdict,
    /// The threshold the verdict used.
    pub threshold: f64,
    /// Which key was tested.
    pub key_id: KeyId,
}

impl Watermark {
    /// Scores a token sequence (see the module documentation).
    pub fn detect_tokens(&self, tokens: &[u32], opts: &DetectOptions) -> Detection {
        let inner = &*self.inner;
        let h = inner.params.context_width;
        let gumbel = inner.params.kind == WatermarkKind::GumbelMax;
        let mut seen: HashSet<&[u32]> = HashSet::new();
        let (mut scored, mut green, mut sum) = (0usize, 0usize, 0f64);
        for i in h..tokens.len() {
            // green-list: each (context, token) window once; gumbel-max:
            // each context once (generation samples a repeated context
            // without the key, so its token carries no signal).
            let window = if gumbel {
                &tokens[i - h..i]
            } else {
                &tokens[i - h..=i]
            };
            if !seen.insert(window) {
                continue;
            }
            // i ≥ h, so the context is complete.
            let Some(k) = inner.step_key(&tokens[..i]) else {
                continue;
            };
            scored += 1;
            if gumbel {
                sum += gumbel::score(&k, tokens[i]);
            } else if k.is_green(tokens[i], inner.threshold) {
                green += 1;
            }
        }
        let z = if gumbel {
            gumbel::z_score(sum, scored)
        } else {
            z_score(green, scored, inner.params.gamma)
        };
        let verdict = if scored < opts.min_tokens.max(1) {
            Verdict::Insufficient
        } else if z >= opts.z_threshold {
            Verdict::Watermarked
        } else {
            Verdict::NotWatermarked
        };
        Detection {
            z,
            p_value: normal_upper_tail(z),
            scored_tokens: scored,
            green_tokens: green,
            score: gumbel.then_some(sum),
            total_tokens: tokens.len(),
            verdict,
            threshold: opts.z_threshold,
            key_id: inner.key_id.clone(),
        }
    }

    /// Tokenizes `text` (no special tokens, no BOS) and scores it.
    pub fn detect_text(
        &self,
        tokenizer: &Tokenizer,
        text: &str,
        opts: &DetectOptions,
    ) -> Result<Detection> {
        let tokens = tokenizer.encode(text, false)?;
        Ok(self.detect_tokens(&tokens, opts))
    }
}

/// One-proportion z-score of `green` out of `scored` against γ.
pub(super) fn z_score(green: usize, scored: usize, gamma: f64) -> f64 {
    if scored == 0 {
        return 0.0;
    }
    let t = scored as f64;
    (green as f64 - gamma * t) / (t * gamma * (1.0 - gamma)).sqrt()
}

/// `P(Z ≥ z)` for a standard normal `Z`.
pub(super) fn normal_upper_tail(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// Complementary error function, with fractional error below 1.2e-7
/// everywhere (Numerical Recipes' `erfcc`, a Chebyshev fit), which keeps
/// small tail probabilities accurate where `1 − erf` would cancel to 0.
pub(super) fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}
