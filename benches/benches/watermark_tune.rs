//! Parameter sweep for the output watermark: the detection/quality
//! trade-off of many (γ, δ, entropy gate) settings from one set of
//! unwatermarked generations.
//!
//! `cargo bench --profile dev -p confidant-benches --bench watermark_tune`
//!
//! It generates `WM_GENERATIONS` (48) texts of `WM_TOKENS` (200) tokens with
//! the prompts and temperatures of `watermark_eval`, and at every step takes
//! the unbiased model's logits and, for each γ, the green list the
//! deployment's scheme gives there (LeftHash, `h` = 1, a fresh key). For
//! each δ it then computes, in closed form at the step's temperature:
//!
//! * the probability that the sampled token is green with the bias (the
//!   step's expected contribution to the green count) and without it;
//! * the expected log-likelihood, under the unbiased model at temperature
//!   1, of the sampled token with and without the bias.
//!
//! A step below the entropy gate keeps its unbiased figures. Summing over a
//! text gives its expected z-score and its log-likelihood cost. This is a
//! one-step approximation: the watermarked text would follow other contexts
//! after the first biased choice, and detection skips repeated bigrams,
//! which this ignores; `watermark_eval` measures the chosen setting for
//! real. It has no sampling noise, so it ranks settings with far fewer
//! generations than a measured sweep would need.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

use confidant_inference::engine::{
    Engine, EngineConfig, Event, GenerationRequest, ProcessorFactory,
};
use confidant_inference::model::{BackendKind, LoadOptions, Model};
use confidant_inference::sampling::{LogitProcessor, ProcessContext, SamplingParams};
use confidant_inference::watermark::{SeedingScheme, Watermark, WatermarkKey, WatermarkParams};
use confidant_inference::{ChatMessage, ChatTemplate, Gguf, Tokenizer};

#[path = "watermark/prompts.rs"]
mod prompts;

const GAMMAS: &[f64] = &[0.1, 0.25, 0.5];
const DELTAS: &[f64] = &[0.5, 1.0, 1.5, 2.0, 3.0];
const GATES: &[f64] = &[0.0, 1.0, 2.0, 3.0];

/// One step's sums for one γ: unnormalised mass and mass × log p₁ of the
/// red and green tokens at the step's temperature.
#[derive(Clone, Copy, Default)]
struct Sums {
    z_red: f64,
    z_green: f64,
    a_red: f64,
    a_green: f64,
}

/// One step: entropy at temperature 1 (what the gate sees) and the sums per γ.
struct Step {
    entropy: f64,
    sums: Vec<Sums>,
}

type Sink = Arc<Mutex<Vec<Step>>>;

struct Analyzer {
    sink: Sink,
    /// Green indicators per γ: δ = 1 on a zeroed vector marks the green tokens.
    marks: Vec<confidant_inference::watermark::WatermarkProcessor>,
    inv_t: f64,
    buf: Vec<f32>,
}

impl LogitProcessor for Analyzer {
    fn name(&self) -> &'static str {
        "analyzer"
    }
    fn process(&mut self, ctx: &ProcessContext<'_>, logits: &mut [f32]) {
        let max = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
        let (mut z1, mut zl1) = (0f64, 0f64);
        for &l in logits.iter() {
            let d = l as f64 - max;
            if d > -60.0 {
                let e = d.exp();
                z1 += e;
                zl1 += e * d;
            }
        }
        let lse1 = max + z1.ln();
        let entropy = z1.ln() - zl1 / z1;
        let mut sums = Vec::with_capacity(self.marks.len());
        for m in &mut self.marks {
            self.buf.clear();
            self.buf.resize(logits.len(), 0.0);
            m.process(ctx, &mut self.buf);
            let mut s = Sums::default();
            for (&l, &g) in logits.iter().zip(&self.buf) {
                let d = (l as f64 - max) * self.inv_t;
                if d > -60.0 {
                    let e = d.exp();
                    let lp1 = l as f64 - lse1;
                    if g > 0.5 {
                        s.z_green += e;
                        s.a_green += e * lp1;
                    } else {
                        s.z_red += e;
                        s.a_red += e * lp1;
                    }
                }
            }
            sums.push(s);
        }
        self.sink.lock().unwrap().push(Step { entropy, sums });
    }
}

struct Factory {
    key_bytes: [u8; 32],
    eog: Vec<u32>,
    next: Mutex<Option<(Sink, f32)>>,
}

impl ProcessorFactory for Factory {
    fn processors(&self) -> Vec<Box<dyn LogitProcessor>> {
        let (sink, t) = self.next.lock().unwrap().take().expect("a spec");
        let marks = GAMMAS
            .iter()
            .map(|&g| {
                // No gate: the mask must be the green list at every step.
                let p = WatermarkParams::new(g, 1.0, 1, SeedingScheme::LeftHash)
                    .and_then(|p| p.with_min_entropy(0.0))
                    .unwrap();
                Watermark::new(WatermarkKey::from_bytes(&self.key_bytes).unwrap(), p).processor()
            })
            .collect();
        vec![
            Box::new(Analyzer {
                sink,
                marks,
                inv_t: 1.0 / f64::from(t),
                buf: Vec::new(),
            }),
            Box::new(BanEog(self.eog.clone())),
        ]
    }
}

struct BanEog(Vec<u32>);

impl LogitProcessor for BanEog {
    fn name(&self) -> &'static str {
        "ban_eog"
    }
    fn process(&mut self, _: &ProcessContext<'_>, logits: &mut [f32]) {
        for &t in &self.0 {
            logits[t as usize] = f32::NEG_INFINITY;
        }
    }
}

fn env_usize(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn model_path() -> PathBuf {
    if let Some(p) = std::env::var_os("CONFIDANT_MODEL") {
        return p.into();
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/fetch-model");
    let out = Command::new(&script).output().expect("scripts/fetch-model");
    assert!(out.status.success(), "scripts/fetch-model failed");
    PathBuf::from(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .expect("a path")
            .trim(),
    )
}

fn main() {
    let n_gen = env_usize("WM_GENERATIONS", 48);
    let n_tok = env_usize("WM_TOKENS", 200);
    let threads = env_usize("BENCH_THREADS", 2);
    let path = model_path();
    let g = Gguf::parse(std::fs::read(&path).expect("read model").into()).expect("gguf");
    let tok = Arc::new(Tokenizer::from_gguf(&g).expect("tokenizer"));
    let template = ChatTemplate::from_gguf(&g, &tok)
        .expect("template")
        .expect("a chat template");
    let model = Model::load(
        &g,
        &LoadOptions {
            backend: BackendKind::Native,
            threads,
            max_context: Some(1024),
        },
    )
    .expect("load");
    drop(g);
    let mut key_bytes = [0u8; 32];
    getrandom_key(&mut key_bytes);
    let factory = Arc::new(Factory {
        key_bytes,
        eog: tok.eog_ids().to_vec(),
        next: Mutex::new(None),
    });
    let engine = Engine::start(
        model,
        tok.clone(),
        None,
        EngineConfig {
            max_queue: n_gen + 8,
            ..EngineConfig::default()
        },
        Some(factory.clone() as Arc<dyn ProcessorFactory>),
    )
    .expect("engine");

    let mut pending = Vec::new();
    for i in 0..n_gen {
        let t = prompts::temperature(i);
        let prompt = template
            .render(&[ChatMessage::new("user", prompts::message(i))], true)
            .expect("render");
        let sink: Sink = Arc::default();
        *factory.next.lock().unwrap() = Some((sink.clone(), t));
        let rx = engine
            .submit(GenerationRequest {
                prompt: tok.encode(&prompt, true).expect("encode"),
                max_tokens: n_tok,
                params: SamplingParams {
                    temperature: t,
                    seed: Some(1000 + i as u64),
                    ..Default::default()
                },
                stop: vec![],
                ignore_eos: true,
            })
            .expect("submit");
        pending.push((sink, t, rx));
    }
    let mut texts = Vec::new();
    for (sink, t, mut rx) in pending {
        while let Some(ev) = rx.blocking_recv() {
            match ev {
                Event::Done(_) => break,
                Event::Error(e) => panic!("{e}"),
                Event::Delta { .. } => {}
            }
        }
        let steps = std::mem::take(&mut *sink.lock().unwrap());
        texts.push((t, steps));
    }
    let entropies: Vec<f64> = texts
        .iter()
        .flat_map(|(_, s)| s.iter().map(|s| s.entropy))
        .collect();
    println!(
        "# Watermark parameter sweep (one-step expectation)\n\n{n_gen} unwatermarked texts of {n_tok} tokens, \
         {} steps; entropy at temperature 1: mean {:.2} nats, {:.0}% of steps below 1 nat, {:.0}% below 2\n",
        entropies.len(),
        entropies.iter().sum::<f64>() / entropies.len() as f64,
        100.0 * entropies.iter().filter(|&&e| e < 1.0).count() as f64 / entropies.len() as f64,
        100.0 * entropies.iter().filter(|&&e| e < 2.0).count() as f64 / entropies.len() as f64,
    );
    println!(
        "| γ | δ | gate (nats) | biased steps | z mean | z p5 | texts z ≥ 4 | Δ log-lik/token | perplexity |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (gi, &gamma) in GAMMAS.iter().enumerate() {
        for &delta in DELTAS {
            for &gate in GATES {
                let mut zs = Vec::new();
                let (mut cost, mut steps, mut biased) = (0f64, 0usize, 0usize);
                for (t, text) in &texts {
                    let boost = (delta / f64::from(*t)).exp();
                    let mut green = 0f64;
                    for s in text {
                        let x = s.sums[gi];
                        let plain_green = x.z_green / (x.z_green + x.z_red);
                        let plain_ll = (x.a_green + x.a_red) / (x.z_green + x.z_red);
                        steps += 1;
                        if s.entropy < gate {
                            green += plain_green;
                            continue;
                        }
                        biased += 1;
                        let zq = x.z_green * boost + x.z_red;
                        green += x.z_green * boost / zq;
                        cost += plain_ll - (x.a_green * boost + x.a_red) / zq;
                    }
                    let n = text.len() as f64;
                    zs.push((green - gamma * n) / (n * gamma * (1.0 - gamma)).sqrt());
                }
                zs.sort_by(f64::total_cmp);
                let dll = cost / steps as f64;
                println!(
                    "| {gamma} | {delta} | {gate} | {:.0}% | {:.2} | {:.2} | {:.0}% | {:.3} | {:+.1}% |",
                    100.0 * biased as f64 / steps as f64,
                    zs.iter().sum::<f64>() / zs.len() as f64,
                    zs[zs.len() / 20],
                    100.0 * zs.iter().filter(|&&z| z >= 4.0).count() as f64 / zs.len() as f64,
                    -dll,
                    100.0 * (dll.exp() - 1.0),
                );
            }
        }
    }
}

/// A fresh random key's bytes (the sweep needs several processors per
/// request under one key, so it keeps the bytes).
fn getrandom_key(out: &mut [u8; 32]) {
    use rand::RngCore;
    rand::rng().fill_bytes(out);
}
