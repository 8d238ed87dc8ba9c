//! Keyed green-list watermark (Kirchenbauer et al. 2023, "A Watermark for
//! Large Language Models"), applied as a [`LogitProcessor`], and its
//! detector.
//!
//! At every generation step the vocabulary is split, by a pseudo-random
//! function keyed with the deployment's secret and seeded by the preceding
//! context tokens, into a "green" fraction γ and a "red" rest; δ is added to
//! every green logit before sampling. Text from the deployment then holds far
//! more green tokens than the γ expected by chance, which a holder of the key
//! measures with a one-proportion z-test. Without the key the split is
//! unpredictable, so the mark can be neither verified nor forged cheaply.
//!
//! # The scheme, precisely (version `confidant-wm-v1`)
//!
//! Enough to implement a compatible detector from this page alone.
//!
//! * Key `K`: 32 random bytes. Its public id is the first 8 bytes of
//!   `SHA-256(K)`, in lowercase hex.
//! * Parameters: γ ∈ (0, 1) (green fraction), δ > 0 (logit bias), context
//!   width `h` ∈ 1..=16, seeding scheme (below).
//! * Token ids are `u32`; integers are encoded little-endian.
//! * `mix(x)` is MurmurHash3's 64-bit finaliser:
//!   `x ^= x >> 33; x *= 0xff51afd7ed558ccd; x ^= x >> 33;
//!   x *= 0xc4ceb9fe1a85ec53; x ^= x >> 33` (wrapping multiplication).
//! * `hash(k0, k1, t) = mix(mix(t as u64 ^ k0) ^ k1)`.
//! * Per-step seed, from the `h` tokens `c_1 … c_h` (oldest first) that
//!   precede the position:
//!   * `hmac-sha256-lefthash`:
//!     `S = HMAC-SHA256(K, "confidant-wm-v1" || 0x01 || u8(h) || u32(c_1) || … || u32(c_h))`.
//!     With `h = 1` this is the paper's LeftHash.
//!   * `hmac-sha256-minhash`: let `R = HMAC-SHA256(K, "confidant-wm-v1/minhash-rank")`,
//!     `r0, r1` its first two 8-byte words; `c*` is the context token with the
//!     smallest `hash(r0, r1, c)`; then
//!     `S = HMAC-SHA256(K, "confidant-wm-v1" || 0x02 || u8(h) || u32(c*))`.
//!     The paper's "Min" scheme: robust to edits of the other context tokens.
//! * `k0, k1` are the first two 8-byte words of `S` (little-endian).
//! * Token `t` is green at that position iff `hash(k0, k1, t) < floor(γ · 2^64)`
//!   (γ · 2^64 computed in IEEE-754 double precision, then truncated).
//! * Generation adds δ to the logit of every green token (after the
//!   request's own penalties, before temperature and sampling). A position
//!   with fewer than `h` preceding tokens (prompt included) is left alone,
//!   and so is, when the entropy gate `min_entropy` is above 0, a step whose
//!   next-token distribution (softmax of the logits as they reach the
//!   processor) has less Shannon entropy than `min_entropy` nats: there the
//!   bias would mostly swap a near-certain token for an unlikely one, which
//!   costs quality and gains little detection. Detection is unaffected (it
//!   scores every position; the gate only makes a low-entropy token's colour
//!   as random as in unwatermarked text).
//! * Detection tokenizes the text with the model's tokenizer (no special
//!   tokens, no BOS) and scores every position `i ≥ h` whose window
//!   `(t_{i-h} … t_{i-1}, t_i)` has not been scored before in this text
//!   (repeated n-grams count once, so a repeated phrase cannot inflate the
//!   score). With `T` scored positions of which `G` are green,
//!   `z = (G − γT) / sqrt(T γ (1 − γ))` and the p-value is the standard
//!   normal upper tail `P(Z ≥ z) = erfc(z / √2) / 2`. The verdict is
//!   "watermarked" when `z ≥` threshold (default 4), "insufficient" when
//!   `T` is below a minimum (default [`DEFAULT_MIN_TOKENS`]).
//!
//! ## Kind `gumbel-max` (exponential-minimum sampling)
//!
//! The same key, context width and seeding schemes, with the seed's tag
//! byte or-ed with `0x10` (so `S = HMAC-SHA256(K, "confidant-wm-v1" || 0x11
//! || …)` for LeftHash, `0x12` for MinHash), and the same `k0, k1`.
//!
//! * Token `t`'s uniform at that position is
//!   `u_t = ((hash(k0, k1, t) >> 11) + 0.5) · 2^-53`, in (0, 1).
//! * Generation at temperature `T > 0`: with `w_t = exp((l_t − max_l) / T)`
//!   over the logits as they reach the processor, the token taken is
//!   `argmin_t −ln(u_t) / w_t` (that is `argmax_t u_t^(1/q_t)` for the
//!   sampler's distribution `q`), and every other logit becomes `−inf`, so
//!   the sampler returns it whatever it does next. Over the key this is an
//!   exact draw from `q`: no quality cost in expectation. Request `top_k` /
//!   `top_p` truncation does not apply (the draw is over the whole
//!   distribution at `T`). Left alone: greedy steps (`T = 0`), positions with
//!   fewer than `h` preceding tokens, and a context (the `h` preceding tokens)
//!   already watermarked earlier in the same sequence — there the sampler
//!   draws normally, since the same context and distribution would give the
//!   same token again.
//! * Detection scores every position `i ≥ h` whose context
//!   `(t_{i-h} … t_{i-1})` has not been scored before in the text, with
//!   `s_i = −ln(1 − u_{t_i})`: Exp(1) without the key, larger with it. Over
//!   `T` positions `S = Σ s_i` is Gamma(T, 1) without the key; the z-score is
//!   Wilson–Hilferty's `z = ((S/T)^(1/3) − (1 − 1/(9T))) / sqrt(1/(9T))`,
//!   which keeps the gamma's right skew, and the p-value, threshold and
//!   "insufficient" rule are as above. γ, δ and the entropy gate are unused.
//!
//! Membership is computed per token with two multiplications per `mix`; no
//! green list is ever materialised. One step costs one HMAC plus one pass
//! of integer operations over the logits.
//!
//! # Example
//!
//! ```
//! use confidant_inference::sampling::{LogitProcessor, ProcessContext};
//! use confidant_inference::watermark::{DetectOptions, Watermark, WatermarkKey, WatermarkParams};
//!
//! let key = WatermarkKey::generate().unwrap();
//! let wm = Watermark::new(key, WatermarkParams::default());
//! let mut logits = vec![0.0f32; 1000];
//! wm.processor().process(&ProcessContext::new(&[7], 1), &mut logits);
//! let green = logits.iter().filter(|&&l| l > 0.0).count();
//! assert!((150..350).contains(&green)); // about γ = 0.25 of them
//! let d = wm.detect_tokens(&[1, 2, 3], &DetectOptions::default());
//! assert_eq!(d.verdict, confidant_inference::watermark::Verdict::Insufficient);
//! println!("{}", serde_json::to_string(&wm.public_params()).unwrap());
//! ```

mod detect;
mod gumbel;
mod key;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::engine::ProcessorFactory;
use crate::error::{Error, Result};
use crate::sampling::{LogitProcessor, ProcessContext};

pub use detect::{DEFAULT_MIN_TOKENS, DEFAULT_Z_THRESHOLD, DetectOptions, Detection, Verdict};
pub use key::{KeyId, WatermarkKey};

/// Version tag of the scheme described in the module documentation; part of
/// every HMAC input and of the public parameters.
pub const SCHEME_VERSION: &str = "confidant-wm-v1";

/// How the per-step seed is derived from the context tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeedingScheme {
    /// HMAC over all `h` preceding tokens (the paper's LeftHash when `h = 1`).
    #[serde(rename = "hmac-sha256-lefthash")]
    LeftHash,
    /// HMAC over the preceding token of smallest keyed rank (the paper's "Min").
    #[serde(rename = "hmac-sha256-minhash")]
    MinHash,
}

impl SeedingScheme {
    /// The name used in configuration and public parameters.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LeftHash => "hmac-sha256-lefthash",
            Self::MinHash => "hmac-sha256-minhash",
        }
    }

    fn tag(self) -> u8 {
        match self {
            Self::LeftHash => 1,
            Self::MinHash => 2,
        }
    }
}

impl std::fmt::Display for SeedingScheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SeedingScheme {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "hmac-sha256-lefthash" | "lefthash" => Ok(Self::LeftHash),
            "hmac-sha256-minhash" | "minhash" => Ok(Self::MinHash),
            other => Err(Error::Watermark(format!(
                "unknown seeding scheme `{other}` (expected hmac-sha256-lefthash or hmac-sha256-minhash)"
            ))),
        }
    }
}

/// What the watermark does to a generation step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum WatermarkKind {
    /// Kirchenbauer et al.: δ added to a keyed green fraction γ of the
    /// vocabulary. Costs quality (the distribution is shifted) and keeps
    /// sampling random.
    #[default]
    #[serde(rename = "green-list")]
    GreenList,
    /// Exponential-minimum (Gumbel-max) sampling: the token is chosen by
    /// keyed uniforms so that, over the key, it is an exact sample of the
    /// model's distribution — no quality cost in expectation — but the same
    /// context and distribution always give the same token. γ, δ and the
    /// entropy gate do not apply.
    #[serde(rename = "gumbel-max")]
    GumbelMax,
}

impl WatermarkKind {
    /// The name used in configuration and public parameters.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GreenList => "green-list",
            Self::GumbelMax => "gumbel-max",
        }
    }

    /// Bits or-ed into the seeding tag byte, so that the two kinds never
    /// derive the same per-step key.
    fn tag_bits(self) -> u8 {
        match self {
            Self::GreenList => 0,
            Self::GumbelMax => 0x10,
        }
    }
}

impl std::fmt::Display for WatermarkKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for WatermarkKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "green-list" | "green_list" | "kirchenbauer" => Ok(Self::GreenList),
            "gumbel-max" | "gumbel_max" | "gumbel" => Ok(Self::GumbelMax),
            other => Err(Error::Watermark(format!(
                "unknown watermark kind `{other}` (expected green-list or gumbel-max)"
            ))),
        }
    }
}

/// Largest context width accepted.
pub const MAX_CONTEXT_WIDTH: usize = 16;

/// Checked watermark parameters; built only through [`WatermarkParams::new`]
/// (or deserialised through the same checks).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawParams", into = "RawParams")]
pub struct WatermarkParams {
    kind: WatermarkKind,
    gamma: f64,
    delta: f32,
    context_width: usize,
    scheme: SeedingScheme,
    min_entropy: f32,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParams {
    #[serde(default)]
    kind: WatermarkKind,
    gamma: f64,
    delta: f32,
    context_width: usize,
    scheme: SeedingScheme,
    #[serde(default)]
    min_entropy: f32,
}

impl TryFrom<RawParams> for WatermarkParams {
    type Error = Error;
    fn try_from(r: RawParams) -> Result<Self> {
        Ok(Self::new(r.gamma, r.delta, r.context_width, r.scheme)?
            .with_min_entropy(r.min_entropy)?
            .with_kind(r.kind))
    }
}

impl From<WatermarkParams> for RawParams {
    fn from(p: WatermarkParams) -> Self {
        Self {
            kind: p.kind,
            gamma: p.gamma,
            delta: p.delta,
            context_width: p.context_width,
            scheme: p.scheme,
            min_entropy: p.min_entropy,
        }
    }
}

impl Default for WatermarkParams {
    /// γ = 0.25, δ = 1.75, `h` = 1, LeftHash, entropy gate 1 nat: the
    /// setting `BENCHMARKS.md` (output watermark) measured on the default model (the
    /// paper's γ = 0.25, δ = 2 detects as well but costs far more quality).
    fn default() -> Self {
        Self {
            kind: WatermarkKind::GreenList,
            gamma: DEFAULT_GAMMA,
            delta: DEFAULT_DELTA,
            context_width: DEFAULT_CONTEXT_WIDTH,
            scheme: SeedingScheme::LeftHash,
            min_entropy: DEFAULT_MIN_ENTROPY,
        }
    }
}

/// Default green fraction.
pub const DEFAULT_GAMMA: f64 = 0.25;
/// Default logit bias (see `BENCHMARKS.md` (output watermark) for the trade-off).
pub const DEFAULT_DELTA: f32 = 1.75;
/// Default context width.
pub const DEFAULT_CONTEXT_WIDTH: usize = 1;
/// Default entropy gate, in nats (0 would bias every step): the 1-nat gate
/// leaves about a fifth of the steps alone, where the bias costs the most
/// quality for the least signal.
pub const DEFAULT_MIN_ENTROPY: f32 = 1.0;
/// Largest entropy gate accepted, in nats (ln of a 2^20-token vocabulary is 13.9).
pub const MAX_MIN_ENTROPY: f32 = 10.0;

impl WatermarkParams {
    /// Checks the ranges: γ in [0.01, 0.99], δ in (0, 20], `h` in
    /// 1..=[`MAX_CONTEXT_WIDTH`]. The entropy gate is the default,
    /// [`DEFAULT_MIN_ENTROPY`]; see [`WatermarkParams::with_min_entropy`].
    pub fn new(
        gamma: f64,
        delta: f32,
        context_width: usize,
        scheme: SeedingScheme,
    ) -> Result<Self> {
        if !(0.01..=0.99).contains(&gamma) {
            return Err(Error::Watermark(format!(
                "gamma {gamma} is outside [0.01, 0.99]"
            )));
        }
        if !(delta > 0.0 && delta <= 20.0) {
            return Err(Error::Watermark(format!(
                "delta {delta} is outside (0, 20]"
            )));
        }
        if !(1..=MAX_CONTEXT_WIDTH).contains(&context_width) {
            return Err(Error::Watermark(format!(
                "context width {context_width} is outside 1..={MAX_CONTEXT_WIDTH}"
            )));
        }
        Ok(Self {
            kind: WatermarkKind::GreenList,
            gamma,
            delta,
            context_width,
            scheme,
            min_entropy: DEFAULT_MIN_ENTROPY,
        })
    }

    /// The same parameters with an entropy gate: generation adds δ only at
    /// steps whose next-token distribution has at least `nats` of Shannon
    /// entropy (0 biases every step; at most [`MAX_MIN_ENTROPY`]).
    /// Detection does not depend on it.
    pub fn with_min_entropy(self, nats: f32) -> Result<Self> {
        if !(0.0..=MAX_MIN_ENTROPY).contains(&nats) {
            return Err(Error::Watermark(format!(
                "min_entropy {nats} is outside [0, {MAX_MIN_ENTROPY}]"
            )));
        }
        Ok(Self {
            min_entropy: nats,
            ..self
        })
    }

    /// The same parameters with another [`WatermarkKind`] (γ, δ and the
    /// entropy gate are kept, and unused by `gumbel-max`).
    pub fn with_kind(self, kind: WatermarkKind) -> Self {
        Self { kind, ..self }
    }

    /// What the watermark does to a step.
    pub fn kind(&self) -> WatermarkKind {
        self.kind
    }

    /// Entropy gate in nats (0: none).
    pub fn min_entropy(&self) -> f32 {
        self.min_entropy
    }

    /// Green fraction γ.
    pub fn gamma(&self) -> f64 {
        self.gamma
    }

    /// Logit bias δ.
    pub fn delta(&self) -> f32 {
        self.delta
    }

    /// Context width `h`.
    pub fn context_width(&self) -> usize {
        self.context_width
    }

    /// Seeding scheme.
    pub fn scheme(&self) -> SeedingScheme {
        self.scheme
    }

    /// `floor(γ · 2^64)`: a token is green when its hash is below it.
    fn threshold(&self) -> u64 {
        // γ ≤ 0.99, so the product is below 2^64 and the cast is exact truncation.
        (self.gamma * 18_446_744_073_709_551_616.0) as u64
    }
}

/// What a deployment publishes about its watermark (for the attestation
/// document and for third-party detectors): everything but the key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublicParams {
    /// Scheme version, [`SCHEME_VERSION`].
    pub version: String,
    /// What the watermark does to a step (`green-list` when absent, as
    /// documents from before `gumbel-max` existed).
    #[serde(default)]
    pub kind: WatermarkKind,
    /// Seeding scheme.
    pub scheme: SeedingScheme,
    /// Green fraction γ.
    pub gamma: f64,
    /// Logit bias δ.
    pub delta: f32,
    /// Context width `h`.
    pub context_width: usize,
    /// Entropy gate of generation, in nats (0: none).
    pub min_entropy: f32,
    /// First 8 bytes of SHA-256 of the key, hex.
    pub key_id: KeyId,
}

/// MurmurHash3's 64-bit finaliser (a bijection on `u64`).
#[inline(always)]
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// The keyed per-token hash of the module documentation.
#[inline(always)]
fn token_hash(k0: u64, k1: u64, t: u32) -> u64 {
    mix(mix(t as u64 ^ k0) ^ k1)
}

/// One position's green-list key, derived from its context.
#[derive(Zeroize, ZeroizeOnDrop)]
struct StepKey {
    k0: u64,
    k1: u64,
}

impl StepKey {
    #[inline]
    fn is_green(&self, t: u32, threshold: u64) -> bool {
        token_hash(self.k0, self.k1, t) < threshold
    }
}

/// Key-derived values; wiped on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
struct Secrets {
    key: WatermarkKey,
    /// MinHash rank key `[r0, r1]`.
    rank: [u64; 2],
}

struct Inner {
    secrets: Secrets,
    params: WatermarkParams,
    threshold: u64,
    key_id: KeyId,
}

/// A deployment's watermark: key and parameters. Cheap to clone (shared);
/// the key is never exposed, only its [`KeyId`].
///
/// It is a [`ProcessorFactory`]: hand it to
/// [`Engine::start`](crate::engine::Engine::start) and every request gets a
/// [`WatermarkProcessor`], whatever its sampling parameters say.
#[derive(Clone)]
pub struct Watermark {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Watermark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watermark")
            .field("params", &self.inner.params)
            .field("key_id", &self.inner.key_id)
            .finish_non_exhaustive()
    }
}

fn hmac(key: &WatermarkKey, parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail here.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.bytes())
        .expect("HMAC-SHA256 accepts a 32-byte key");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

fn words(b: &[u8; 32]) -> (u64, u64) {
    let mut w0 = [0u8; 8];
    let mut w1 = [0u8; 8];
    w0.copy_from_slice(&b[..8]);
    w1.copy_from_slice(&b[8..16]);
    (u64::from_le_bytes(w0), u64::from_le_bytes(w1))
}

impl Watermark {
    /// A watermark with this key and these parameters.
    pub fn new(key: WatermarkKey, params: WatermarkParams) -> Self {
        let mut r = hmac(&key, &[b"confidant-wm-v1/minhash-rank"]);
        let (r0, r1) = words(&r);
        r.zeroize();
        let rank = [r0, r1];
        let key_id = key.id();
        Self {
            inner: Arc::new(Inner {
                secrets: Secrets { key, rank },
                threshold: params.threshold(),
                params,
                key_id,
            }),
        }
    }

    /// The parameters.
    pub fn params(&self) -> &WatermarkParams {
        &self.inner.params
    }

    /// The key's public id.
    pub fn key_id(&self) -> &KeyId {
        &self.inner.key_id
    }

    /// Everything but the key, for the attestation document.
    pub fn public_params(&self) -> PublicParams {
        let p = &self.inner.params;
        PublicParams {
            version: SCHEME_VERSION.to_owned(),
            kind: p.kind,
            scheme: p.scheme,
            gamma: p.gamma,
            delta: p.delta,
            context_width: p.context_width,
            min_entropy: p.min_entropy,
            key_id: self.inner.key_id.clone(),
        }
    }

    /// A processor for one request.
    pub fn processor(&self) -> WatermarkProcessor {
        WatermarkProcessor {
            wm: self.inner.clone(),
            scratch: Vec::new(),
            gumbel: gumbel::GumbelState::default(),
        }
    }

    /// Whether `token` is green after `context` (the `h` preceding tokens).
    /// `None` when `context` is shorter than `h`.
    pub fn is_green(&self, context: &[u32], token: u32) -> Option<bool> {
        let k = self.inner.step_key(context)?;
        Some(k.is_green(token, self.inner.threshold))
    }
}

impl Inner {
    /// The green-list key for the position after `tokens` (its last `h`
    /// are the context), or `None` if there are fewer than `h`.
    fn step_key(&self, tokens: &[u32]) -> Option<StepKey> {
        let h = self.params.context_width;
        let ctx = tokens.get(tokens.len().checked_sub(h)?..)?;
        let head = [
            self.params.scheme.tag() | self.params.kind.tag_bits(),
            h as u8,
        ];
        let mut s = match self.params.scheme {
            SeedingScheme::LeftHash => {
                let mut buf = [0u8; 4 * MAX_CONTEXT_WIDTH];
                for (chunk, t) in buf.chunks_exact_mut(4).zip(ctx) {
                    chunk.copy_from_slice(&t.to_le_bytes());
                }
                hmac(
                    &self.secrets.key,
                    &[SCHEME_VERSION.as_bytes(), &head, &buf[..4 * h]],
                )
            }
            SeedingScheme::MinHash => {
                let [r0, r1] = self.secrets.rank;
                // Not empty: h ≥ 1.
                let min = *ctx.iter().min_by_key(|&&t| token_hash(r0, r1, t))?;
                hmac(
                    &self.secrets.key,
                    &[SCHEME_VERSION.as_bytes(), &head, &min.to_le_bytes()],
                )
            }
        };
        let (k0, k1) = words(&s);
        s.zeroize();
        Some(StepKey { k0, k1 })
    }
}

/// Adds `delta` to the logit of every green token, vectorised for the CPU
/// at hand; `-inf` logits stay `-inf`.
fn bias_green(logits: &mut [f32], key: &StepKey, threshold: u64, delta: f32) {
    let (k0, k1) = (key.k0, key.k1);
    crate::kernels::vectorised(|| bias_green_loop(logits, k0, k1, threshold, delta));
}

/// Branch-free so that it vectorises.
#[inline(always)]
fn bias_green_loop(logits: &mut [f32], k0: u64, k1: u64, threshold: u64, delta: f32) {
    for (i, l) in logits.iter_mut().enumerate() {
        let green = (token_hash(k0, k1, i as u32) < threshold) as u32 as f32;
        *l += green * delta;
    }
}

/// Shannon entropy, in nats, of `softmax(logits)`; `scratch` is reused
/// between calls. Uses the engine's vectorised `exp`.
fn entropy(logits: &[f32], scratch: &mut Vec<f32>) -> f64 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    if !max.is_finite() {
        return 0.0;
    }
    scratch.clear();
    scratch.extend_from_slice(logits);
    scratch.resize(logits.len().next_multiple_of(8), f32::NEG_INFINITY);
    let z = crate::kernels::exp_sub_sum(scratch, max);
    // Σ e_i (l_i − max), skipping e_i = 0 (where l_i − max may be −inf).
    let s = crate::kernels::vectorised(|| {
        let mut s = 0f64;
        for (e, l) in scratch.chunks(8).zip(logits.chunks(8)) {
            let mut part = 0f32;
            for (&e, &l) in e.iter().zip(l) {
                part += if e > 0.0 { e * (l - max) } else { 0.0 };
            }
            s += f64::from(part);
        }
        s
    });
    z.ln() - s / z
}

/// The per-request logit processor (see the module documentation).
pub struct WatermarkProcessor {
    wm: Arc<Inner>,
    scratch: Vec<f32>,
    gumbel: gumbel::GumbelState,
}

impl LogitProcessor for WatermarkProcessor {
    fn name(&self) -> &'static str {
        "watermark"
    }

    fn process(&mut self, ctx: &ProcessContext<'_>, logits: &mut [f32]) {
        let p = &self.wm.params;
        if p.kind == WatermarkKind::GumbelMax {
            self.gumbel.process(&self.wm, ctx, logits);
            return;
        }
        if let Some(k) = self.wm.step_key(ctx.tokens) {
            if p.min_entropy > 0.0 && entropy(logits, &mut self.scratch) < f64::from(p.min_entropy)
            {
                return;
            }
            bias_green(logits, &k, self.wm.threshold, p.delta);
        }
    }
}

impl ProcessorFactory for Watermark {
    fn processors(&self) -> Vec<Box<dyn LogitProcessor>> {
        vec![Box::new(self.processor())]
    }
}
