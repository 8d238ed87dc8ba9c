//! Turning logits into the next token: an ordered chain of logit processors
//! (repetition penalties here, the watermark elsewhere), then temperature,
//! top-k and top-p sampling with a seedable generator.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};

/// Sampling parameters of one request.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SamplingParams {
    /// 0 means greedy (argmax).
    pub temperature: f32,
    /// Keep only the k most likely tokens (0: off).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (1: off).
    pub top_p: f32,
    /// CTRL-style penalty on tokens in the last `repeat_last_n` (1: off).
    pub repetition_penalty: f32,
    /// Window of the repetition penalty.
    pub repeat_last_n: usize,
    /// OpenAI `presence_penalty` over generated tokens (0: off).
    pub presence_penalty: f32,
    /// OpenAI `frequency_penalty` over generated tokens (0: off).
    pub frequency_penalty: f32,
    /// Seed for reproducible sampling; the same seed gives the same output.
    pub seed: Option<u64>,
    /// OpenAI `logit_bias`: added to the logit of each listed token.
    pub logit_bias: Vec<(u32, f32)>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            repeat_last_n: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: None,
            logit_bias: Vec::new(),
        }
    }
}

impl SamplingParams {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    /// Checks ranges (the OpenAI API's where it has them).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidParameter(m));
        if !(0.0..=2.0).contains(&self.temperature) {
            return bad(format!(
                "temperature {} is outside [0, 2]",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p {} is outside (0, 1]", self.top_p));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty <= 10.0) {
            return bad(format!(
                "repetition_penalty {} is outside (0, 10]",
                self.repetition_penalty
            ));
        }
        if !(-2.0..=2.0).contains(&self.presence_penalty) {
            return bad(format!(
                "presence_penalty {} is outside [-2, 2]",
                self.presence_penalty
            ));
        }
        if !(-2.0..=2.0).contains(&self.frequency_penalty) {
            return bad(format!(
                "frequency_penalty {} is outside [-2, 2]",
                self.frequency_penalty
            ));
        }
        if self.logit_bias.len() > 1024 {
            return bad(format!(
                "logit_bias has {} entries (at most 1024)",
                self.logit_bias.len()
            ));
        }
        if let Some((t, b)) = self
            .logit_bias
            .iter()
            .find(|(_, b)| !(-100.0..=100.0).contains(b))
        {
            return bad(format!(
                "logit_bias for token {t} is {b}, outside [-100, 100]"
            ));
        }
        if self.repeat_last_n > 1 << 16 {
            return bad(format!("repeat_last_n {} is too large", self.repeat_last_n));
        }
        Ok(())
    }
}

/// What a logit processor may look at.
#[derive(Debug, Clone, Copy)]
pub struct ProcessContext<'a> {
    /// Every token so far: prompt then generated.
    pub tokens: &'a [u32],
    /// How many of `tokens` are the prompt.
    pub prompt_len: usize,
    /// The temperature the token will be sampled at (0: greedy).
    /// [`Sampler::sample`] sets it from its parameters before running the
    /// chain, so processors that must know how the sampler will draw (the
    /// Gumbel-max watermark) see the real value.
    pub temperature: f32,
}

impl<'a> ProcessContext<'a> {
    /// A context at temperature 1.
    pub fn new(tokens: &'a [u32], prompt_len: usize) -> Self {
        Self {
            tokens,
            prompt_len,
            temperature: 1.0,
        }
    }
}

impl ProcessContext<'_> {
    /// The generated tokens.
    pub fn generated(&self) -> &[u32] {
        &self.tokens[self.prompt_len.min(self.tokens.len())..]
    }
}

/// A step that adjusts logits before sampling. Processors run in the order
/// they were added to a [`LogitChain`]; the sampler never special-cases one.
pub trait LogitProcessor: Send {
    /// A short name (for logs and metrics).
    fn name(&self) -> &'static str;
    /// Adjusts `logits` (one per vocabulary entry) in place.
    fn process(&mut self, ctx: &ProcessContext<'_>, logits: &mut [f32]);
}

/// An ordered chain of logit processors.
#[derive(Default)]
pub struct LogitChain {
    processors: Vec<Box<dyn LogitProcessor>>,
}

impl LogitChain {
    /// An empty chain.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a processor (it runs after those already present).
    pub fn push(&mut self, p: Box<dyn LogitProcessor>) {
        self.processors.push(p);
    }

    /// Names, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.processors.iter().map(|p| p.name()).collect()
    }

    /// Runs every processor in order.
    pub fn apply(&mut self, ctx: &ProcessContext<'_>, logits: &mut [f32]) {
        for p in &mut self.processors {
            p.process(ctx, logits);
        }
    }
}

/// CTRL-style repetition penalty over the last `last_n` tokens (llama.cpp's
/// `repeat_penalty`): positive logits are divided, negative multiplied.
pub struct RepetitionPenalty {
    /// Penalty factor (> 1 discourages repeats).
    pub penalty: f32,
    /// Window.
    pub last_n: usize,
    seen: Vec<u32>,
}

impl RepetitionPenalty {
    /// A penalty over the last `last_n` tokens.
    pub fn new(penalty: f32, last_n: usize) -> Self {
        Self {
            penalty,
            last_n,
            seen: Vec::new(),
        }
    }
}

impl LogitProcessor for RepetitionPenalty {
    fn name(&self) -> &'static str {
        "repetition_penalty"
    }

    fn process(&mut self, ctx: &ProcessContext<'_>, logits: &mut [f32]) {
        let start = ctx.tokens.len().saturating_sub(self.last_n);
        self.seen.clear();
        self.seen.extend_from_slice(&ctx.tokens[start..]);
        self.seen.sort_unstable();
        self.seen.dedup();
        for &t in &self.seen {
            if let Some(l) = logits.get_mut(t as usize) {
                *l = if *l > 0.0 {
                    *l / self.penalty
                } else {
                    *l * self.penalty
                };
            }
        }
    }
}

/// OpenAI's presence and frequency penalties over the generated tokens:
/// `logit -= count * frequency + (count > 0) * presence`.
pub struct PresenceFrequencyPenalty {
    presence: f32,
    frequency: f32,
    counts: std::collections::HashMap<u32, u32>,
}

impl PresenceFrequencyPenalty {
    /// Builds the processor.
    pub fn new(presence: f32, frequency: f32) -> Self {
        Self {
            presence,
            frequency,
            counts: Default::default(),
        }
    }
}

impl LogitProcessor for PresenceFrequencyPenalty {
    fn name(&self) -> &'static str {
        "presence_frequency_penalty"
    }

    fn process(&mut self, ctx: &ProcessContext<'_>, logits: &mut [f32]) {
        self.counts.clear();
        for &t in ctx.generated() {
            *self.counts.entry(t).or_default() += 1;
        }
        for (&t, &c) in &self.counts {
            if let Some(l) = logits.get_mut(t as usize) {
                *l -= c as f32 * self.frequency + self.presence;
            }
        }
    }
}

/// OpenAI's `logit_bias`: a fixed offset per listed token.
pub struct LogitBias(pub Vec<(u32, f32)>);

impl LogitProcessor for LogitBias {
    fn name(&self) -> &'static str {
        "logit_bias"
    }

    fn process(&mut self, _: &ProcessContext<'_>, logits: &mut [f32]) {
        for &(t, b) in &self.0 {
            if let Some(l) = logits.get_mut(t as usize) {
                *l += b;
            }
        }
    }
}

/// Samples tokens for one sequence.
pub struct Sampler {
    params: SamplingParams,
    chain: LogitChain,
    rng: StdRng,
    idx: Vec<u32>,
    probs: Vec<f32>,
}

impl Sampler {
    /// A sampler; `extra` processors run after the built-in penalties
    /// (deployment-wide ones, such as the watermark, go there).
    pub fn new(params: SamplingParams, extra: LogitChain) -> Result<Self> {
        params.validate()?;
        let mut chain = LogitChain::new();
        if !params.logit_bias.is_empty() {
            chain.push(Box::new(LogitBias(params.logit_bias.clone())));
        }
        if params.repetition_penalty != 1.0 {
            chain.push(Box::new(RepetitionPenalty::new(
                params.repetition_penalty,
                params.repeat_last_n,
            )));
        }
        if params.presence_penalty != 0.0 || params.frequency_penalty != 0.0 {
            chain.push(Box::new(PresenceFrequencyPenalty::new(
                params.presence_penalty,
                params.frequency_penalty,
            )));
        }
        for p in extra.processors {
            chain.push(p);
        }
        let rng = match params.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_os_rng(),
        };
        Ok(Self {
            params,
            chain,
            rng,
            idx: Vec::new(),
            probs: Vec::new(),
        })
    }

    /// The processor chain, in order.
    pub fn chain(&self) -> &LogitChain {
        &self.chain
    }

    /// Runs the processor chain on `logits`, then picks a token.
    pub fn sample(&mut self, ctx: &ProcessContext<'_>, logits: &mut [f32]) -> u32 {
        let ctx = ProcessContext {
            temperature: self.params.temperature,
            ..*ctx
        };
        self.chain.apply(&ctx, logits);
        if self.params.temperature == 0.0 || self.params.top_k == 1 {
            return argmax(logits);
        }
        let inv_t = 1.0 / self.params.temperature;
        // Candidate set: top-k if set, else a bounded prefix that covers
        // top-p in all but flat distributions (full sort as the fallback).
        let v = logits.len();
        let want = if self.params.top_k > 0 {
            self.params.top_k.min(v)
        } else if self.params.top_p < 1.0 {
            256.min(v)
        } else {
            v
        };
        let max = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        self.idx.clear();
        self.idx.extend(0..v as u32);
        if want < v {
            self.select_top(logits, want);
        }
        let mut total: f32 = logits.iter().map(|&l| ((l - max) * inv_t).exp()).sum();
        if !total.is_finite() || total <= 0.0 {
            return argmax(logits);
        }
        if self.params.top_k > 0 {
            // Renormalise over the kept tokens.
            total = self
                .idx
                .iter()
                .map(|&i| ((logits[i as usize] - max) * inv_t).exp())
                .sum();
        }
        if self.params.top_p < 1.0 {
            self.idx
                .sort_unstable_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
            let mut cum = 0.0;
            let mut keep = 0;
            for &i in &self.idx {
                cum += ((logits[i as usize] - max) * inv_t).exp() / total;
                keep += 1;
                if cum >= self.params.top_p {
                    break;
                }
            }
            if cum < self.params.top_p && self.idx.len() < v {
                // The prefix did not reach top_p: redo over the whole vocabulary.
                self.idx.clear();
                self.idx.extend(0..v as u32);
                self.idx
                    .sort_unstable_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
                cum = 0.0;
                keep = 0;
                for &i in &self.idx {
                    cum += ((logits[i as usize] - max) * inv_t).exp() / total;
                    keep += 1;
                    if cum >= self.params.top_p {
                        break;
                    }
                }
            }
            self.idx.truncate(keep.max(1));
        }
        self.probs.clear();
        self.probs.extend(
            self.idx
                .iter()
                .map(|&i| ((logits[i as usize] - max) * inv_t).exp()),
        );
        let sum: f32 = self.probs.iter().sum();
        let mut r = self.rng.random::<f32>() * sum;
        for (k, &p) in self.probs.iter().enumerate() {
            if r < p {
                return self.idx[k];
            }
            r -= p;
        }
        // Rounding left r just above the last bucket.
        *self.idx.last().unwrap_or(&0)
    }

    fn select_top(&mut self, logits: &[f32], k: usize) {
        self.idx.select_nth_unstable_by(k - 1, |&a, &b| {
            logits[b as usize].total_cmp(&logits[a as usize])
        });
        self.idx.truncate(k);
    }
}

/// Index of the largest logit (the lowest index among equals).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(t: &[u32]) -> ProcessContext<'_> {
        ProcessContext::new(t, 0)
    }

    fn logits() -> Vec<f32> {
        (0..1000)
            .map(|i| ((i * 7919) % 1000) as f32 / 100.0)
            .collect()
    }

    #[test]
    fn greedy_picks_the_maximum() {
        let mut s = Sampler::new(SamplingParams::greedy(), LogitChain::new()).unwrap();
        let mut l = logits();
        let want = argmax(&l);
        assert_eq!(s.sample(&ctx(&[]), &mut l), want);
    }

    #[test]
    fn same_seed_same_tokens_different_seed_differs() {
        let p = |seed| SamplingParams {
            temperature: 1.0,
            seed: Some(seed),
            ..Default::default()
        };
        let run = |seed| {
            let mut s = Sampler::new(p(seed), LogitChain::new()).unwrap();
            (0..50)
                .map(|_| s.sample(&ctx(&[]), &mut logits()))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn top_k_and_top_p_restrict_the_candidates() {
        let l = logits();
        let mut sorted: Vec<u32> = (0..1000).collect();
        sorted.sort_by(|&a, &b| l[b as usize].total_cmp(&l[a as usize]));
        let p = SamplingParams {
            temperature: 1.0,
            top_k: 3,
            seed: Some(1),
            ..Default::default()
        };
        let mut s = Sampler::new(p, LogitChain::new()).unwrap();
        for _ in 0..200 {
            assert!(sorted[..3].contains(&s.sample(&ctx(&[]), &mut l.clone())));
        }
        // Logits 9.99, 9.98, ... : top_p 0.05 keeps only a handful.
        let p = SamplingParams {
            temperature: 0.1,
            top_p: 0.5,
            seed: Some(1),
            ..Default::default()
        };
        let mut s = Sampler::new(p, LogitChain::new()).unwrap();
        for _ in 0..200 {
            let t = s.sample(&ctx(&[]), &mut l.clone());
            assert!(sorted[..10].contains(&t), "token {t} outside the nucleus");
        }
    }

    #[test]
    fn repetition_penalty_lowers_seen_tokens() {
        let mut l = vec![2.0, -2.0, 2.0];
        let mut p = RepetitionPenalty::new(2.0, 64);
        p.process(&ctx(&[0, 1]), &mut l);
        assert_eq!(l, vec![1.0, -4.0, 2.0]);
    }

    #[test]
    fn presence_and_frequency_penalties_follow_openai() {
        let mut l = vec![1.0, 1.0, 1.0];
        let mut p = PresenceFrequencyPenalty::new(0.5, 0.25);
        p.process(&ProcessContext::new(&[2, 0, 0, 1], 1), &mut l);
        assert_eq!(l, vec![1.0 - 0.5 - 0.5, 1.0 - 0.25 - 0.5, 1.0]);
    }

    struct Ban(u32);
    impl LogitProcessor for Ban {
        fn name(&self) -> &'static str {
            "ban"
        }
        fn process(&mut self, _: &ProcessContext<'_>, l: &mut [f32]) {
            l[self.0 as usize] = f32::NEG_INFINITY;
        }
    }

    #[test]
    fn chain_runs_in_order_before_sampling() {
        let mut l = logits();
        let best = argmax(&l);
        let mut chain = LogitChain::new();
        chain.push(Box::new(Ban(best)));
        let mut s = Sampler::new(SamplingParams::greedy(), chain).unwrap();
        assert_ne!(s.sample(&ctx(&[]), &mut l), best);
        assert_eq!(s.chain().names(), vec!["ban"]);
    }

    #[test]
    fn out_of_range_parameters_are_refused() {
        for p in [
            SamplingParams {
                temperature: 3.0,
                ..Default::default()
            },
            SamplingParams {
                top_p: 0.0,
                ..Default::default()
            },
            SamplingParams {
                temperature: f32::NAN,
                ..Default::default()
            },
        ] {
            assert!(Sampler::new(p, LogitChain::new()).is_err());
        }
    }
}
