use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::detect::{erfc, normal_upper_tail};
use super::*;
use crate::sampling::{LogitChain, Sampler, SamplingParams};

fn key(b: u8) -> WatermarkKey {
    let bytes: Vec<u8> = (0..32u8).map(|i| i.wrapping_add(b)).collect();
    WatermarkKey::from_bytes(&bytes).unwrap()
}

fn wm(b: u8) -> Watermark {
    Watermark::new(key(b), WatermarkParams::default())
}

fn params(h: usize, scheme: SeedingScheme) -> WatermarkParams {
    WatermarkParams::new(DEFAULT_GAMMA, DEFAULT_DELTA, h, scheme).unwrap()
}

fn greens(w: &Watermark, ctx: &[u32], vocab: u32) -> Vec<u32> {
    (0..vocab)
        .filter(|&t| w.is_green(ctx, t).unwrap())
        .collect()
}

/// Known answers computed by an independent implementation of the module
/// documentation (Python's `hmac` and `hashlib`), key = bytes 0..32.
#[test]
fn the_documented_scheme_gives_the_known_answers() {
    let w = |h, s| Watermark::new(key(0), params(h, s));
    let left1 = w(1, SeedingScheme::LeftHash);
    assert_eq!(left1.key_id().as_str(), "630dcd2966c43366");
    assert_eq!(
        greens(&left1, &[42], 64),
        [
            3, 11, 18, 19, 20, 25, 26, 27, 30, 37, 39, 46, 49, 53, 56, 62
        ]
    );
    assert_eq!(greens(&left1, &[42], 49152).len(), 12259);
    let left3 = w(3, SeedingScheme::LeftHash);
    assert_eq!(
        greens(&left3, &[7, 8, 9], 64),
        [
            5, 7, 16, 17, 19, 24, 31, 33, 36, 39, 40, 43, 45, 50, 51, 53, 57, 58
        ]
    );
    let min3 = w(3, SeedingScheme::MinHash);
    assert_eq!(
        greens(&min3, &[7, 8, 9], 64),
        [
            1, 4, 7, 8, 19, 20, 23, 28, 29, 33, 35, 36, 39, 40, 41, 42, 43, 45, 55, 59, 62
        ]
    );
    assert_eq!(greens(&min3, &[7, 8, 9], 49152).len(), 12304);
}

#[test]
fn the_processor_adds_delta_to_exactly_the_green_tokens() {
    let w = wm(1);
    let ctx = [5u32, 17, 99];
    let mut logits = vec![0.5f32; 49152];
    logits[3] = f32::NEG_INFINITY;
    w.processor()
        .process(&ProcessContext::new(&ctx, 3), &mut logits);
    for (t, &l) in logits.iter().enumerate().skip(4) {
        let green = w.is_green(&ctx, t as u32).unwrap();
        assert_eq!(
            l,
            if green { 0.5 + DEFAULT_DELTA } else { 0.5 },
            "token {t}"
        );
    }
    assert_eq!(logits[3], f32::NEG_INFINITY);
    let frac = logits.iter().filter(|&&l| l > 1.0).count() as f64 / 49152.0;
    assert!((frac - 0.25).abs() < 0.01, "green fraction {frac}");
}

#[test]
fn a_context_shorter_than_h_is_left_alone() {
    let w = Watermark::new(key(1), params(4, SeedingScheme::LeftHash));
    let mut logits = vec![1.0f32; 100];
    w.processor()
        .process(&ProcessContext::new(&[1, 2, 3], 3), &mut logits);
    assert!(logits.iter().all(|&l| l == 1.0));
    assert_eq!(w.is_green(&[1, 2, 3], 0), None);
}

#[test]
fn lists_are_deterministic_and_depend_on_key_and_context() {
    let (a, a2, b) = (wm(1), wm(1), wm(2));
    let ga = greens(&a, &[10], 20000);
    assert_eq!(ga, greens(&a2, &[10], 20000));
    // Another key: independent lists, so about γ of A's greens are green under B.
    let gb = greens(&b, &[10], 20000);
    let both = ga.iter().filter(|t| gb.binary_search(t).is_ok()).count();
    let overlap = both as f64 / ga.len() as f64;
    assert!((overlap - 0.25).abs() < 0.03, "overlap {overlap}");
    // Another context under the same key: likewise.
    let gc = greens(&a, &[11], 20000);
    let both = ga.iter().filter(|t| gc.binary_search(t).is_ok()).count();
    let overlap = both as f64 / ga.len() as f64;
    assert!((overlap - 0.25).abs() < 0.03, "overlap {overlap}");
}

#[test]
fn minhash_depends_only_on_the_smallest_ranked_context_token() {
    let w = Watermark::new(key(3), params(3, SeedingScheme::MinHash));
    let g = greens(&w, &[100, 200, 300], 5000);
    assert_eq!(g, greens(&w, &[300, 100, 200], 5000));
    // Replacing one context token keeps the list unless it was the minimum.
    let same = [[1u32, 200, 300], [100, 1, 300], [100, 200, 1]]
        .iter()
        .filter(|c| greens(&w, &c[..], 5000) == g)
        .count();
    assert!(same >= 1, "no substitution kept the list");
}

/// A stand-in language model: fresh random logits each step, spread enough
/// that sampling has a few bits of entropy per token.
fn simulate(w: Option<&Watermark>, n: usize, seed: u64) -> Vec<u32> {
    let vocab = 4000;
    let mut chain = LogitChain::new();
    if let Some(w) = w {
        chain.push(Box::new(w.processor()));
    }
    let params = SamplingParams {
        temperature: 1.0,
        seed: Some(seed),
        ..Default::default()
    };
    let mut sampler = Sampler::new(params, chain).unwrap();
    let mut rng = StdRng::seed_from_u64(seed ^ 0xabcdef);
    let mut tokens = vec![1u32];
    for _ in 0..n {
        let mut logits: Vec<f32> = (0..vocab).map(|_| rng.random::<f32>() * 6.0).collect();
        let ctx = ProcessContext::new(&tokens, 1);
        let t = sampler.sample(&ctx, &mut logits);
        tokens.push(t);
    }
    tokens
}

#[test]
fn watermarked_text_is_detected_and_other_keys_see_nothing() {
    let (w, other) = (wm(7), wm(8));
    let opts = DetectOptions::default();
    let marked = simulate(Some(&w), 1000, 1);
    let d = w.detect_tokens(&marked, &opts);
    assert_eq!(d.verdict, Verdict::Watermarked, "{d:?}");
    assert!(d.z > 10.0 && d.p_value < 1e-20, "{d:?}");
    let wrong = other.detect_tokens(&marked, &opts);
    assert_eq!(wrong.verdict, Verdict::NotWatermarked, "{wrong:?}");
    assert!(wrong.z.abs() < 3.0, "wrong key z = {}", wrong.z);
    let plain = simulate(None, 1000, 1);
    let d = w.detect_tokens(&plain, &opts);
    assert_eq!(d.verdict, Verdict::NotWatermarked, "{d:?}");
    assert!(d.z.abs() < 3.0, "unwatermarked z = {}", d.z);
}

#[test]
fn short_texts_are_insufficient() {
    let w = wm(7);
    let marked = simulate(Some(&w), 200, 2);
    let opts = DetectOptions::default();
    let short = w.detect_tokens(&marked[..DEFAULT_MIN_TOKENS], &opts);
    assert_eq!(short.scored_tokens, DEFAULT_MIN_TOKENS - 1);
    assert_eq!(short.verdict, Verdict::Insufficient);
    let enough = w.detect_tokens(&marked[..=DEFAULT_MIN_TOKENS], &opts);
    assert_ne!(enough.verdict, Verdict::Insufficient);
    let empty = w.detect_tokens(&[], &opts);
    assert_eq!(empty.z, 0.0);
    assert!((empty.p_value - 0.5).abs() < 1e-7);
    assert_eq!(empty.verdict, Verdict::Insufficient);
}

#[test]
fn repeated_windows_are_scored_once() {
    let w = wm(7);
    // A green bigram repeated over and over cannot make a text "watermarked".
    let (a, b) = (0..1000u32)
        .flat_map(|a| (0..1000u32).map(move |b| (a, b)))
        .find(|&(a, b)| a != b && w.is_green(&[a], b).unwrap() && w.is_green(&[b], a).unwrap())
        .unwrap();
    let text: Vec<u32> = [a, b].iter().copied().cycle().take(400).collect();
    let d = w.detect_tokens(&text, &DetectOptions::default());
    assert_eq!((d.scored_tokens, d.green_tokens), (2, 2));
    assert_eq!(d.verdict, Verdict::Insufficient);
}

#[test]
fn every_request_gets_the_watermark_whatever_its_parameters() {
    let w = wm(9);
    let ctx = [123u32];
    // Logits where the best token is red and a green one is within δ of
    // it, over a spread-out rest (high entropy, so the default gate lets
    // the step through).
    let vocab = 2000u32;
    let red = (0..vocab).find(|&t| !w.is_green(&ctx, t).unwrap()).unwrap();
    let green = (0..vocab).find(|&t| w.is_green(&ctx, t).unwrap()).unwrap();
    let attempts = [
        SamplingParams::greedy(),
        SamplingParams {
            top_k: 1,
            seed: Some(3),
            ..Default::default()
        },
        SamplingParams {
            temperature: 0.0,
            repetition_penalty: 1.3,
            presence_penalty: 1.0,
            frequency_penalty: 1.0,
            ..Default::default()
        },
    ];
    for p in attempts {
        let chain = {
            let mut c = LogitChain::new();
            for proc in ProcessorFactory::processors(&w) {
                c.push(proc);
            }
            c
        };
        let mut s = Sampler::new(p.clone(), chain).unwrap();
        assert_eq!(s.chain().names().last(), Some(&"watermark"), "{p:?}");
        let mut logits = vec![-3.0f32; vocab as usize];
        logits[red as usize] = 1.0;
        logits[green as usize] = 0.0;
        let got = s.sample(&ProcessContext::new(&ctx, 1), &mut logits);
        assert_eq!(got, green, "{p:?}");
    }
}

#[test]
fn tail_probabilities_are_accurate() {
    assert!((erfc(0.0) - 1.0).abs() < 1e-7);
    assert!((erfc(1.0) - 0.157_299_207_050_285_1).abs() < 1e-7);
    assert!((erfc(-1.0) - 1.842_700_792_949_715).abs() < 1e-7);
    // P(Z ≥ 4) = 3.167124183e-5, P(Z ≥ 10) = 7.619853e-24: relative accuracy in the tail.
    let p4 = normal_upper_tail(4.0);
    assert!((p4 / 3.167_124_183_311_992e-5 - 1.0).abs() < 1e-6, "{p4}");
    let p10 = normal_upper_tail(10.0);
    assert!(
        (p10 / 7.619_853_024_160_527e-24 - 1.0).abs() < 1e-6,
        "{p10}"
    );
    assert!((normal_upper_tail(-1.959_963_985) - 0.975).abs() < 1e-7);
}

#[test]
fn parameters_are_checked_and_round_trip() {
    use SeedingScheme::*;
    assert!(WatermarkParams::new(0.0, 2.0, 1, LeftHash).is_err());
    assert!(WatermarkParams::new(1.0, 2.0, 1, LeftHash).is_err());
    assert!(WatermarkParams::new(f64::NAN, 2.0, 1, LeftHash).is_err());
    assert!(WatermarkParams::new(0.25, 0.0, 1, LeftHash).is_err());
    assert!(WatermarkParams::new(0.25, f32::INFINITY, 1, LeftHash).is_err());
    assert!(WatermarkParams::new(0.25, 2.0, 0, LeftHash).is_err());
    assert!(WatermarkParams::new(0.25, 2.0, MAX_CONTEXT_WIDTH + 1, MinHash).is_err());
    let p = WatermarkParams::new(0.5, 1.5, 4, MinHash).unwrap();
    let json = serde_json::to_string(&p).unwrap();
    assert_eq!(
        json,
        r#"{"kind":"green-list","gamma":0.5,"delta":1.5,"context_width":4,"scheme":"hmac-sha256-minhash","min_entropy":1.0}"#
    );
    assert_eq!(serde_json::from_str::<WatermarkParams>(&json).unwrap(), p);
    let bad = json.replace("0.5", "1.5");
    assert!(serde_json::from_str::<WatermarkParams>(&bad).is_err());
    let gated = p.with_min_entropy(2.0).unwrap();
    assert_eq!(gated.min_entropy(), 2.0);
    assert!(p.with_min_entropy(-1.0).is_err());
    assert!(p.with_min_entropy(f32::NAN).is_err());
    // Parameters written before the gate existed had none.
    let older = r#"{"gamma":0.5,"delta":1.5,"context_width":4,"scheme":"hmac-sha256-minhash"}"#;
    assert_eq!(
        serde_json::from_str::<WatermarkParams>(older).unwrap(),
        p.with_min_entropy(0.0).unwrap()
    );
    assert_eq!("lefthash".parse::<SeedingScheme>().unwrap(), LeftHash);
    assert!("sha1".parse::<SeedingScheme>().is_err());
}

#[test]
fn public_parameters_name_the_key_but_never_hold_it() {
    let w = wm(0);
    let json = serde_json::to_value(w.public_params()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "version": "confidant-wm-v1",
            "kind": "green-list",
            "scheme": "hmac-sha256-lefthash",
            "gamma": 0.25,
            "delta": DEFAULT_DELTA,
            "context_width": 1,
            "min_entropy": DEFAULT_MIN_ENTROPY,
            "key_id": "630dcd2966c43366",
        })
    );
    let text = format!("{json} {w:?}");
    assert!(!text.contains("000102030405"), "{text}");
}

#[test]
fn entropy_is_measured_in_nats() {
    let mut scratch = Vec::new();
    let h = super::entropy(&[0.0; 1000], &mut scratch);
    assert!((h - 1000f64.ln()).abs() < 1e-4, "{h}");
    let mut peaked = vec![f32::NEG_INFINITY; 13];
    peaked[3] = 1.0;
    assert!(super::entropy(&peaked, &mut scratch).abs() < 1e-6);
    // Two equal tokens among negligible ones: ln 2.
    let mut two = vec![-100.0f32; 50];
    two[0] = 5.0;
    two[1] = 5.0;
    let h = super::entropy(&two, &mut scratch);
    assert!((h - 2f64.ln()).abs() < 1e-3, "{h}");
}

#[test]
fn the_entropy_gate_skips_only_low_entropy_steps() {
    let params = WatermarkParams::default().with_min_entropy(2.0).unwrap();
    let w = Watermark::new(key(4), params);
    let ctx = ProcessContext::new(&[9], 1);
    // One dominant token: entropy near 0, left alone.
    let mut peaked = vec![0.0f32; 5000];
    peaked[17] = 30.0;
    let before = peaked.clone();
    w.processor().process(&ctx, &mut peaked);
    assert_eq!(peaked, before);
    // Flat: ln 5000 = 8.5 nats, biased as usual.
    let mut flat = vec![0.0f32; 5000];
    w.processor().process(&ctx, &mut flat);
    for (t, &l) in flat.iter().enumerate() {
        let green = w.is_green(&[9], t as u32).unwrap();
        assert_eq!(l, if green { DEFAULT_DELTA } else { 0.0 });
    }
    assert_eq!(w.public_params().min_entropy, 2.0);
}

fn gumbel(b: u8, h: usize) -> Watermark {
    Watermark::new(
        key(b),
        params(h, SeedingScheme::LeftHash).with_kind(WatermarkKind::GumbelMax),
    )
}

fn at_temperature(tokens: &[u32], prompt_len: usize, temperature: f32) -> ProcessContext<'_> {
    ProcessContext {
        temperature,
        ..ProcessContext::new(tokens, prompt_len)
    }
}

/// Known answers computed by an independent implementation of the module
/// documentation (Python's `hmac`, `hashlib` and `math`), key = bytes 0..32.
#[test]
fn gumbel_max_gives_the_documented_known_answers() {
    let w = gumbel(0, 1);
    let k = w.inner.step_key(&[42]).unwrap();
    let want = [
        0.2476783023371087,
        0.440732890807402,
        0.9797644740612288,
        0.32922963030384295,
        0.4704247627229466,
        0.1983734949619151,
    ];
    for (t, u) in want.iter().enumerate() {
        assert_eq!(k.uniform(t as u32), *u, "token {t}");
    }
    // argmin −ln(u)/w at T = 0.7 is token 2 (Python: c = 0.0853 against 1.62
    // for the largest logit, token 5).
    let mut logits = vec![0.0f32, 1.0, 2.0, 0.5, -1.0, 3.0];
    w.processor()
        .process(&at_temperature(&[42], 1, 0.7), &mut logits);
    let kept: Vec<usize> = (0..6).filter(|&i| logits[i].is_finite()).collect();
    assert_eq!(kept, [2]);
    assert_eq!(logits[2], 2.0, "the chosen logit is untouched");
    // The green-list kind derives other step keys from the same key.
    let g = Watermark::new(key(0), params(1, SeedingScheme::LeftHash));
    assert_ne!(g.inner.step_key(&[42]).unwrap().k0, k.k0);
}

/// Over the key (here: over many contexts), the chosen token is an exact
/// sample of the sampler's distribution at its temperature.
#[test]
fn gumbel_max_samples_exactly_the_models_distribution() {
    let w = gumbel(3, 1);
    let logits = [2.0f32, 1.0, 0.5, 0.0, -1.0, f32::NEG_INFINITY, 1.5];
    let t = 0.8f32;
    let m = 2.0f32;
    let z: f64 = logits.iter().map(|&l| f64::from(((l - m) / t).exp())).sum();
    let q: Vec<f64> = logits
        .iter()
        .map(|&l| f64::from(((l - m) / t).exp()) / z)
        .collect();
    let n = 60_000u32;
    let mut counts = [0u32; 7];
    for c in 0..n {
        let mut l = logits.to_vec();
        let mut p = w.processor();
        p.process(&at_temperature(&[c], 1, t), &mut l);
        let kept: Vec<usize> = (0..7).filter(|&i| l[i].is_finite()).collect();
        assert_eq!(kept.len(), 1);
        counts[kept[0]] += 1;
    }
    assert_eq!(counts[5], 0, "a -inf logit is never chosen");
    // Pearson's chi-square over the 6 possible tokens (5 degrees of freedom):
    // P(χ² > 25) ≈ 1.4e-4.
    let chi2: f64 = (0..7)
        .filter(|&i| q[i] > 0.0)
        .map(|i| {
            let e = q[i] * f64::from(n);
            (f64::from(counts[i]) - e).powi(2) / e
        })
        .sum();
    assert!(chi2 < 25.0, "chi2 = {chi2}, counts {counts:?}, q {q:?}");
}

#[test]
fn gumbel_max_leaves_greedy_short_and_repeated_contexts_alone() {
    let w = gumbel(4, 2);
    let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
    let mut p = w.processor();
    for (tokens, t) in [(&[1u32, 2][..], 0.0f32), (&[1u32][..], 1.0)] {
        let mut l = logits.clone();
        p.process(&at_temperature(tokens, 1, t), &mut l);
        assert_eq!(l, logits, "greedy or short context: untouched");
    }
    let mut l = logits.clone();
    p.process(&at_temperature(&[1, 2], 1, 1.0), &mut l);
    assert_eq!(l.iter().filter(|x| x.is_finite()).count(), 1);
    // The same context again later in the sequence: sampled normally.
    let mut l = logits.clone();
    p.process(&at_temperature(&[1, 2, 9, 1, 2], 1, 1.0), &mut l);
    assert_eq!(l, logits);
    // A fresh request watermarks that context again.
    let mut l = logits.clone();
    w.processor()
        .process(&at_temperature(&[1, 2], 1, 1.0), &mut l);
    assert_eq!(l.iter().filter(|x| x.is_finite()).count(), 1);
}

#[test]
fn gumbel_max_text_is_detected_and_other_keys_see_nothing() {
    let (w, other) = (gumbel(7, 1), gumbel(8, 1));
    let opts = DetectOptions::default();
    let marked = simulate(Some(&w), 300, 1);
    let d = w.detect_tokens(&marked, &opts);
    assert_eq!(d.verdict, Verdict::Watermarked, "{d:?}");
    assert!(d.z > 10.0 && d.p_value < 1e-20, "{d:?}");
    assert_eq!(d.green_tokens, 0);
    assert!(d.score.is_some());
    let wrong = other.detect_tokens(&marked, &opts);
    assert_eq!(wrong.verdict, Verdict::NotWatermarked, "{wrong:?}");
    assert!(wrong.z.abs() < 3.5, "wrong key z = {}", wrong.z);
    // Green-list detection with the same key sees nothing either.
    let g = Watermark::new(key(7), WatermarkParams::default());
    assert!(g.detect_tokens(&marked, &opts).z.abs() < 3.5);
}

/// Without the key the z-scores are standard normal, tails included: the
/// Wilson–Hilferty transform keeps the gamma's skew, so z ≥ 4 stays as rare
/// as it should even at the minimum token count.
#[test]
fn gumbel_max_null_z_scores_are_calibrated() {
    let w = gumbel(5, 1);
    let mut rng = StdRng::seed_from_u64(11);
    let opts = DetectOptions::default();
    let (mut sum, mut sum2, mut above3) = (0.0, 0.0, 0);
    let texts = 4000;
    for _ in 0..texts {
        // Distinct tokens: every context is new, so all 32 positions count.
        let mut text: Vec<u32> = Vec::new();
        while text.len() <= DEFAULT_MIN_TOKENS {
            let t = rng.random_range(0..50_000);
            if !text.contains(&t) {
                text.push(t);
            }
        }
        let d = w.detect_tokens(&text, &opts);
        assert_eq!(d.scored_tokens, DEFAULT_MIN_TOKENS);
        assert_ne!(d.verdict, Verdict::Watermarked, "{d:?}");
        sum += d.z;
        sum2 += d.z * d.z;
        above3 += usize::from(d.z >= 3.0);
    }
    let mean = sum / f64::from(texts);
    let sd = (sum2 / f64::from(texts) - mean * mean).sqrt();
    assert!(mean.abs() < 0.06, "mean {mean}");
    assert!((sd - 1.0).abs() < 0.05, "sd {sd}");
    // P(Z ≥ 3) = 0.00135: about 5 of 4000; a normal approximation of the
    // raw sum would give about three times as many.
    assert!(above3 <= 14, "{above3} texts at z ≥ 3");
}

#[test]
fn gumbel_max_scores_each_context_once() {
    let w = gumbel(7, 1);
    let text: Vec<u32> = [5u32, 6].iter().copied().cycle().take(400).collect();
    let d = w.detect_tokens(&text, &DetectOptions::default());
    assert_eq!(d.scored_tokens, 2);
    assert_eq!(d.verdict, Verdict::Insufficient);
}

#[test]
fn the_kind_is_configuration_and_public() {
    let p: WatermarkParams = serde_json::from_value(serde_json::json!({
        "kind": "gumbel-max", "gamma": 0.25, "delta": 1.0,
        "context_width": 2, "scheme": "hmac-sha256-lefthash"
    }))
    .unwrap();
    assert_eq!(p.kind(), WatermarkKind::GumbelMax);
    let old: WatermarkParams = serde_json::from_value(serde_json::json!({
        "gamma": 0.25, "delta": 1.0, "context_width": 2, "scheme": "hmac-sha256-lefthash"
    }))
    .unwrap();
    assert_eq!(old.kind(), WatermarkKind::GreenList);
    let w = Watermark::new(key(1), p);
    let v = serde_json::to_value(w.public_params()).unwrap();
    assert_eq!(v["kind"], "gumbel-max");
    assert_eq!(
        "gumbel".parse::<WatermarkKind>().unwrap(),
        WatermarkKind::GumbelMax
    );
    assert!("blue".parse::<WatermarkKind>().is_err());
}

/// The candidate filter is exact: the processor picks the same token as a
/// brute-force `argmin −ln(u)/w` over the whole vocabulary.
#[test]
fn gumbel_max_choice_equals_brute_force() {
    let w = gumbel(6, 1);
    let mut rng = StdRng::seed_from_u64(5);
    for c in 0..1500u32 {
        let t = [0.3f32, 0.7, 1.0, 1.6][c as usize % 4];
        let spread = [2.0f32, 8.0, 20.0][c as usize % 3];
        let logits: Vec<f32> = (0..3000)
            .map(|i| {
                if i % 97 == 0 {
                    f32::NEG_INFINITY
                } else {
                    rng.random::<f32>() * spread
                }
            })
            .collect();
        let k = w.inner.step_key(&[c]).unwrap();
        let top = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let want = (0..logits.len())
            .filter(|&i| logits[i].is_finite())
            .map(|i| {
                let wi = crate::kernels::exp_ggml(logits[i] * (1.0 / t) - top * (1.0 / t));
                (i, -k.uniform(i as u32).ln() / f64::from(wi))
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap()
            .0;
        let mut l = logits.clone();
        w.processor().process(&at_temperature(&[c], 1, t), &mut l);
        let got: Vec<usize> = (0..l.len()).filter(|&i| l[i].is_finite()).collect();
        assert_eq!(got, [want], "context {c}, T {t}, spread {spread}");
    }
}
