//! Evaluation of the output watermark on the default model, in one run:
//! detection and false-positive rates, z-score distributions, robustness to
//! token substitution and deletion, quality cost (log-likelihood under the
//! unbiased model), wrong-key behaviour, and decode speed with and without
//! the watermark.
//!
//! `cargo bench --profile dev -p confidant-benches --bench watermark_eval`
//! (the dev profile builds dependencies and `confidant-inference` at
//! opt-level 3, so the figures match a release build's hot path). Results:
//! `BENCHMARKS.md` (output watermark); histogram: `scripts/watermark-histogram`.
//!
//! Env: `WM_GENERATIONS` (200), `WM_TOKENS` (200), `WM_BATCH` (16),
//! `BENCH_THREADS` (2), `WM_KIND`/`WM_GAMMA`/`WM_DELTA`/`WM_CONTEXT_WIDTH`/`WM_SCHEME`/`WM_MIN_ENTROPY`
//! (the deployment defaults otherwise), `WM_SPEED_RUNS` (6),
//! `WM_HUMAN_TEXT` (a text file; default: `scripts/fetch-human-text`, Pride
//! and Prejudice from Debian's r-cran-janeaustenr), `WM_OUT` (where the
//! z-scores go as JSON, default `$CARGO_TARGET_DIR/watermark_eval.json`).
//!
//! Every request runs through one engine (continuous batching); a bench-only
//! processor factory decides per request whether the watermark applies, so
//! watermarked and plain generations share the model, the prompts and the
//! machine's load. A recorder processor placed before the watermark stores
//! the unbiased model's log-probability of each sampled token (temperature
//! 1, nothing added), which gives the quality figure without a second pass.
//! End-of-generation tokens are banned (after the recorder) so that every
//! generation has exactly `WM_TOKENS` tokens, as in the paper's T = 200.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use confidant_inference::engine::{
    Engine, EngineConfig, Event, GenerationRequest, ProcessorFactory,
};
use confidant_inference::model::{BackendKind, LoadOptions, Model};
use confidant_inference::sampling::{LogitProcessor, ProcessContext, SamplingParams};
use confidant_inference::watermark::{
    DetectOptions, SeedingScheme, Verdict, Watermark, WatermarkKey, WatermarkKind, WatermarkParams,
};
use confidant_inference::{ChatMessage, ChatTemplate, Gguf, Tokenizer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[path = "watermark/prompts.rs"]
mod prompts;

fn env_usize(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs a fetch script and returns the path it prints last.
fn fetched(env: &str, script: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return p.into();
    }
    let out = Command::new(root().join(script))
        .output()
        .unwrap_or_else(|e| panic!("{script}: {e}"));
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .expect("a path")
            .trim(),
    )
}

/// Per sampled token: `(log p(token), entropy of the distribution it was
/// drawn from)` under the unbiased model, in nats.
type Sink = Arc<Mutex<Vec<(f64, f64)>>>;

/// Records, for every sampled token but the last, its log-probability and
/// the Shannon entropy of the step, under the logits it sees: the unbiased
/// model at temperature 1, since it runs first in the chain.
struct Recorder {
    sink: Sink,
    prev: Vec<f32>,
    prev_lse: f64,
    prev_entropy: f64,
}

impl LogitProcessor for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }
    fn process(&mut self, ctx: &ProcessContext<'_>, logits: &mut [f32]) {
        if !self.prev.is_empty()
            && let Some(&t) = ctx.tokens.last()
        {
            let lp = self.prev[t as usize] as f64 - self.prev_lse;
            self.sink.lock().unwrap().push((lp, self.prev_entropy));
        }
        let max = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
        let (mut z, mut zl) = (0f64, 0f64);
        for &l in logits.iter() {
            let d = l as f64 - max;
            if d > -60.0 {
                let e = d.exp();
                z += e;
                zl += e * d;
            }
        }
        self.prev_lse = max + z.ln();
        self.prev_entropy = z.ln() - zl / z;
        self.prev.clear();
        self.prev.extend_from_slice(logits);
    }
}

/// Bans end-of-generation tokens (fixed-length generations).
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

/// What the next submitted request gets.
#[derive(Clone)]
struct Spec {
    watermark: bool,
    sink: Option<Sink>,
}

struct BenchFactory {
    wm: Watermark,
    eog: Vec<u32>,
    next: Mutex<Option<Spec>>,
}

impl ProcessorFactory for BenchFactory {
    fn processors(&self) -> Vec<Box<dyn LogitProcessor>> {
        let spec = self
            .next
            .lock()
            .unwrap()
            .take()
            .expect("a spec per request");
        let mut v: Vec<Box<dyn LogitProcessor>> = Vec::new();
        if let Some(sink) = spec.sink {
            v.push(Box::new(Recorder {
                sink,
                prev: Vec::new(),
                prev_lse: 0.0,
                prev_entropy: 0.0,
            }));
        }
        v.push(Box::new(BanEog(self.eog.clone())));
        if spec.watermark {
            v.extend(self.wm.processors());
        }
        v
    }
}

struct Bench {
    engine: Engine,
    factory: Arc<BenchFactory>,
    /// Serialises "set spec, submit" pairs.
    submit_lock: Mutex<()>,
}

impl Bench {
    fn submit(
        &self,
        spec: Spec,
        req: GenerationRequest,
    ) -> tokio::sync::mpsc::UnboundedReceiver<Event> {
        let _g = self.submit_lock.lock().unwrap();
        *self.factory.next.lock().unwrap() = Some(spec);
        self.engine.submit(req).expect("submit")
    }
}

struct Output {
    text: String,
    tokens: usize,
    decode: Duration,
}

fn collect(mut rx: tokio::sync::mpsc::UnboundedReceiver<Event>) -> Output {
    let mut text = String::new();
    while let Some(ev) = rx.blocking_recv() {
        match ev {
            Event::Delta { text: t, .. } => text.push_str(&t),
            Event::Done(f) => {
                return Output {
                    text,
                    tokens: f.usage.completion_tokens,
                    decode: f.decode,
                };
            }
            Event::Error(e) => panic!("generation failed: {e}"),
        }
    }
    panic!("the engine stopped")
}

fn quantiles(v: &[f64]) -> String {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return "n/a".into();
    }
    let q = |p: f64| s[((s.len() - 1) as f64 * p).round() as usize];
    format!(
        "min {:.2} p5 {:.2} median {:.2} p95 {:.2} max {:.2} (mean {:.2}, n {})",
        q(0.0),
        q(0.05),
        q(0.5),
        q(0.95),
        q(1.0),
        mean(&s),
        s.len()
    )
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn sd(v: &[f64]) -> f64 {
    let m = mean(v);
    (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len().max(2) - 1) as f64).sqrt()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn rate(z: &[f64], thr: f64) -> String {
    let n = z.iter().filter(|&&z| z >= thr).count();
    format!(
        "{n}/{} ({:.1}%)",
        z.len(),
        100.0 * n as f64 / z.len().max(1) as f64
    )
}

fn params_from_env() -> WatermarkParams {
    let d = WatermarkParams::default();
    let f = |k: &str| std::env::var(k).ok();
    WatermarkParams::new(
        f("WM_GAMMA").map_or(d.gamma(), |v| v.parse().expect("WM_GAMMA")),
        f("WM_DELTA").map_or(d.delta(), |v| v.parse().expect("WM_DELTA")),
        f("WM_CONTEXT_WIDTH").map_or(d.context_width(), |v| v.parse().expect("WM_CONTEXT_WIDTH")),
        f("WM_SCHEME").map_or(d.scheme(), |v| {
            v.parse::<SeedingScheme>().expect("WM_SCHEME")
        }),
    )
    .and_then(|p| {
        p.with_min_entropy(
            f("WM_MIN_ENTROPY").map_or(d.min_entropy(), |v| v.parse().expect("WM_MIN_ENTROPY")),
        )
    })
    .map(|p| {
        p.with_kind(f("WM_KIND").map_or(d.kind(), |v| v.parse::<WatermarkKind>().expect("WM_KIND")))
    })
    .expect("watermark parameters")
}

fn main() {
    let n_gen = env_usize("WM_GENERATIONS", 200);
    let n_tok = env_usize("WM_TOKENS", 200);
    let batch = env_usize("WM_BATCH", 16);
    let threads = env_usize("BENCH_THREADS", 2);
    let speed_runs = env_usize("WM_SPEED_RUNS", 6);
    let params = params_from_env();
    let started = Instant::now();

    let model_path = fetched("CONFIDANT_MODEL", "scripts/fetch-model");
    let human_path = fetched("WM_HUMAN_TEXT", "scripts/fetch-human-text");
    let g = Gguf::parse(std::fs::read(&model_path).expect("read model").into()).expect("gguf");
    let tok = Arc::new(Tokenizer::from_gguf(&g).expect("tokenizer"));
    let template = ChatTemplate::from_gguf(&g, &tok)
        .expect("template")
        .expect("the default model has a chat template");
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

    let key = WatermarkKey::generate().expect("key");
    let wm = Watermark::new(key, params);
    let wrong = Watermark::new(WatermarkKey::generate().expect("key"), params);
    let factory = Arc::new(BenchFactory {
        wm: wm.clone(),
        eog: tok.eog_ids().to_vec(),
        next: Mutex::new(None),
    });
    let cfg = EngineConfig {
        max_batch: batch,
        max_queue: 4 * n_gen + 64,
        ..EngineConfig::default()
    };
    let engine = Engine::start(
        model,
        tok.clone(),
        None,
        cfg,
        Some(factory.clone() as Arc<dyn ProcessorFactory>),
    )
    .expect("engine");
    let bench = Bench {
        engine,
        factory,
        submit_lock: Mutex::new(()),
    };

    println!("# Watermark evaluation");
    println!(
        "model {} | {} threads | batch {batch} | params {}",
        model_path.display(),
        threads,
        serde_json::to_string(&wm.public_params()).unwrap()
    );

    // 1. The processor alone, per step, on this vocabulary.
    let mut p = wm.processor();
    let mut logits = vec![0.0f32; tok.vocab_size()];
    let mut ctx_tokens: Vec<u32> = vec![1, 2, 3];
    let mut per_step = Vec::new();
    for i in 0..2000u32 {
        ctx_tokens.push(i % 5000);
        let t = Instant::now();
        p.process(&ProcessContext::new(&ctx_tokens, 3), &mut logits);
        per_step.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let step_us = median(&mut per_step);
    println!(
        "processor: {step_us:.1} µs per step over {} logits (median of 2000)",
        tok.vocab_size()
    );

    let prompt_tokens = |i: usize| -> Vec<u32> {
        let text = template
            .render(&[ChatMessage::new("user", prompts::message(i))], true)
            .expect("render");
        tok.encode(&text, true).expect("encode")
    };
    let request = |i: usize, max_tokens: usize, temperature: f32, seed: u64| GenerationRequest {
        prompt: prompt_tokens(i),
        max_tokens,
        params: SamplingParams {
            temperature,
            seed: Some(seed),
            ..Default::default()
        },
        stop: vec![],
        ignore_eos: true,
    };

    // 2. Decode speed with and without the watermark, alternating runs:
    //    single stream (decode tokens/s of one request) and a full batch.
    let (mut single_wm, mut single_plain, mut batch_wm, mut batch_plain) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..speed_runs {
        for on in [run % 2 == 0, run % 2 != 0] {
            let o = collect(bench.submit(
                Spec {
                    watermark: on,
                    sink: None,
                },
                request(run, 128, 0.8, run as u64),
            ));
            let tps = (o.tokens - 1) as f64 / o.decode.as_secs_f64();
            if on {
                &mut single_wm
            } else {
                &mut single_plain
            }
            .push(tps);
            let t = Instant::now();
            let rxs: Vec<_> = (0..batch)
                .map(|j| {
                    bench.submit(
                        Spec {
                            watermark: on,
                            sink: None,
                        },
                        request(run * batch + j, 64, 0.8, j as u64),
                    )
                })
                .collect();
            let total: usize = rxs.into_iter().map(|rx| collect(rx).tokens).sum();
            let tps = total as f64 / t.elapsed().as_secs_f64();
            if on { &mut batch_wm } else { &mut batch_plain }.push(tps);
        }
    }
    if speed_runs > 0 {
        let (s_wm, s_pl) = (median(&mut single_wm), median(&mut single_plain));
        let (b_wm, b_pl) = (median(&mut batch_wm), median(&mut batch_plain));
        println!(
            "decode, one stream: {s_pl:.1} tok/s plain, {s_wm:.1} tok/s watermarked ({:+.1}%); \
             processor share of a plain step {:.2}% (medians of {speed_runs} runs each)",
            100.0 * (s_wm / s_pl - 1.0),
            100.0 * step_us * 1e-6 * s_pl
        );
        println!(
            "decode, batch of {batch}: {b_pl:.1} tok/s plain, {b_wm:.1} tok/s watermarked ({:+.1}%)",
            100.0 * (b_wm / b_pl - 1.0)
        );
    }

    // 3. The evaluation set: n_gen prompts, each with and without the
    //    watermark, interleaved, temperatures 0.7..1.0.
    let t = Instant::now();
    let mut pending = Vec::new();
    for i in 0..n_gen {
        let temp = prompts::temperature(i);
        for on in [true, false] {
            let sink: Sink = Arc::default();
            let rx = bench.submit(
                Spec {
                    watermark: on,
                    sink: Some(sink.clone()),
                },
                request(i, n_tok, temp, 1000 + i as u64),
            );
            pending.push((on, sink, rx));
        }
    }
    let mut marked = Vec::new();
    let mut plain = Vec::new();
    // Per text: (mean log-likelihood, mean entropy) under the unbiased model.
    let (mut q_wm, mut q_plain) = (Vec::new(), Vec::new());
    let mut generated = 0;
    for (on, sink, rx) in pending {
        let o = collect(rx);
        generated += o.tokens;
        let rec = sink.lock().unwrap().clone();
        let n = rec.len().max(1) as f64;
        let per_text = (
            rec.iter().map(|r| r.0).sum::<f64>() / n,
            rec.iter().map(|r| r.1).sum::<f64>() / n,
        );
        if on {
            marked.push(o.text);
            q_wm.push(per_text);
        } else {
            plain.push(o.text);
            q_plain.push(per_text);
        }
    }
    let gen_secs = t.elapsed().as_secs_f64();
    println!(
        "generated {} texts of {n_tok} tokens ({generated} tokens) in {gen_secs:.0} s ({:.1} tok/s batched)",
        2 * n_gen,
        generated as f64 / gen_secs
    );

    // 4. Detection: every text re-tokenized from its characters, as a
    //    third party holding the key would.
    let opts = DetectOptions::default();
    let detect = |w: &Watermark, text: &str| w.detect_text(&tok, text, &opts).expect("detect");
    let d_marked: Vec<_> = marked.iter().map(|t| detect(&wm, t)).collect();
    let z_marked: Vec<f64> = d_marked.iter().map(|d| d.z).collect();
    let scored: Vec<f64> = d_marked.iter().map(|d| d.scored_tokens as f64).collect();
    let insufficient = d_marked
        .iter()
        .filter(|d| d.verdict == Verdict::Insufficient)
        .count();
    let z_plain: Vec<f64> = plain.iter().map(|t| detect(&wm, t).z).collect();
    let z_wrong: Vec<f64> = marked.iter().map(|t| detect(&wrong, t).z).collect();
    // The first 24 tokens of each watermarked text: too short for a verdict.
    let short = marked
        .iter()
        .filter(|t| {
            let ids = tok.encode(t, false).expect("encode");
            let head = &ids[..ids.len().min(24)];
            wm.detect_tokens(head, &opts).verdict == Verdict::Insufficient
        })
        .count();

    // Human text: the book cut into consecutive passages of n_tok tokens
    // (decoded, so that detection re-tokenizes them like any other text).
    let book = std::fs::read_to_string(&human_path).expect("read the human text");
    let book_tokens = tok.encode(&book, false).expect("encode");
    let z_human: Vec<f64> = book_tokens
        .chunks_exact(n_tok)
        .map(|c| detect(&wm, &tok.decode(c, true).expect("decode")).z)
        .collect();

    // 5. Robustness: edit the watermarked texts' tokens (random positions,
    //    random non-special replacement tokens), decode, re-detect.
    let mut rng = StdRng::seed_from_u64(42);
    let normal: Vec<u32> = (0..tok.vocab_size() as u32)
        .filter(|&t| !tok.is_special(t))
        .collect();
    let mut attacked = |sub: f64, del: f64| -> Vec<f64> {
        marked
            .iter()
            .map(|text| {
                let mut ids = tok.encode(text, false).expect("encode");
                let n = ids.len();
                let mut pos: Vec<usize> = (0..n).collect();
                for i in 0..n {
                    let j = rng.random_range(i..n);
                    pos.swap(i, j);
                }
                let k_sub = (sub * n as f64).round() as usize;
                for &p in &pos[..k_sub] {
                    ids[p] = normal[rng.random_range(0..normal.len())];
                }
                let k_del = (del * n as f64).round() as usize;
                let mut gone: Vec<usize> = pos[k_sub..k_sub + k_del].to_vec();
                gone.sort_unstable_by(|a, b| b.cmp(a));
                for p in gone {
                    ids.remove(p);
                }
                detect(&wm, &tok.decode(&ids, true).expect("decode")).z
            })
            .collect()
    };
    let z_sub10 = attacked(0.10, 0.0);
    let z_sub25 = attacked(0.25, 0.0);
    let z_del10 = attacked(0.0, 0.10);

    // 6. Quality: mean per-token log-likelihood under the unbiased model,
    //    over all tokens of a class; the paired difference per prompt gives
    //    its standard error (same prompt, temperature and seed).
    let ll = |q: &[(f64, f64)]| q.iter().map(|x| x.0).collect::<Vec<f64>>();
    let (ll_wm, ll_plain) = (ll(&q_wm), ll(&q_plain));
    let (m_wm, m_pl) = (mean(&ll_wm), mean(&ll_plain));
    let diff: Vec<f64> = ll_wm.iter().zip(&ll_plain).map(|(a, b)| a - b).collect();
    let se = sd(&diff) / (diff.len().max(1) as f64).sqrt();
    let (ppl_wm, ppl_pl) = ((-m_wm).exp(), (-m_pl).exp());
    let ent_plain = mean(&q_plain.iter().map(|x| x.1).collect::<Vec<f64>>());

    let rows = [
        ("watermarked", &z_marked),
        ("unwatermarked", &z_plain),
        ("human (Pride and Prejudice)", &z_human),
        ("watermarked, wrong key", &z_wrong),
        ("watermarked, 10% substituted", &z_sub10),
        ("watermarked, 25% substituted", &z_sub25),
        ("watermarked, 10% deleted", &z_del10),
    ];
    println!(
        "\n## Results ({:.0} s in all)\n",
        started.elapsed().as_secs_f64()
    );
    println!(
        "threshold z >= {}; {n_tok}-token texts; scored tokens per watermarked text: {}",
        opts.z_threshold,
        quantiles(&scored)
    );
    println!(
        "insufficient verdicts among full watermarked texts: {insufficient}; \
         first 24 tokens only: {short}/{} insufficient\n",
        marked.len()
    );
    println!("| texts | n | z ≥ 4 | z min | z median | z max | z mean |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, z) in rows {
        let mut s = z.to_vec();
        s.sort_by(f64::total_cmp);
        let (lo, mid, hi) = match s.len() {
            0 => (f64::NAN, f64::NAN, f64::NAN),
            n => (s[0], s[n / 2], s[n - 1]),
        };
        println!(
            "| {name} | {} | {} | {lo:.2} | {mid:.2} | {hi:.2} | {:.2} |",
            z.len(),
            rate(z, opts.z_threshold),
            mean(z)
        );
    }
    println!();
    for (name, z) in rows {
        println!("{name}: z {}", quantiles(z));
    }
    println!(
        "wrong key on watermarked: z mean {:.2} sd {:.2}",
        mean(&z_wrong),
        sd(&z_wrong)
    );
    println!(
        "quality: mean log-likelihood per token {m_pl:.4} plain, {m_wm:.4} watermarked \
         (difference {:+.4} ± {se:.4} s.e., {} texts each); perplexity {ppl_pl:.3} -> {ppl_wm:.3} ({:+.1}%); \
         mean entropy of the unbiased model at plain-text steps {ent_plain:.2} nats",
        m_wm - m_pl,
        ll_plain.len(),
        100.0 * (ppl_wm / ppl_pl - 1.0)
    );

    let out = std::env::var_os("WM_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("CARGO_TARGET_DIR").unwrap_or_else(|| "target".into()))
                .join("watermark_eval.json")
        });
    let json = serde_json::json!({
        "params": wm.public_params(),
        "tokens": n_tok,
        "threshold": opts.z_threshold,
        "z_watermarked": z_marked,
        "z_unwatermarked": z_plain,
        "z_human": z_human,
        "z_wrong_key": z_wrong,
        "z_sub10": z_sub10,
        "z_sub25": z_sub25,
        "z_del10": z_del10,
        "loglik_watermarked": ll_wm,
        "loglik_unwatermarked": ll_plain,
    });
    std::fs::write(&out, json.to_string()).expect("write the z-scores");
    println!("z-scores written to {}", out.display());
}
