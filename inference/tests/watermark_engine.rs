//! The watermark on real text: the default model generates through the
//! engine with and without the watermark factory, and detection on the
//! decoded text (re-tokenized) separates the two.

mod common;

use std::sync::Arc;

use confidant_inference::engine::{Engine, EngineConfig, Event, GenerationRequest};
use confidant_inference::model::{BackendKind, LoadOptions, Model};
use confidant_inference::sampling::SamplingParams;
use confidant_inference::watermark::{
    DetectOptions, Verdict, Watermark, WatermarkKey, WatermarkParams,
};
use confidant_inference::{ChatMessage, ChatTemplate, Gguf, Tokenizer};

const PROMPTS: &[&str] = &[
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Explain how bread rises, for a ten-year-old.",
    "Describe a busy market in a small town on a Saturday morning.",
    "Give advice to someone starting to learn the violin.",
    "Write a letter from a sailor to his sister about a storm at sea.",
    "What makes a good neighbour? Answer in a few paragraphs.",
];

fn key(b: u8) -> WatermarkKey {
    WatermarkKey::from_bytes(&[b; 32]).unwrap()
}

fn start(factory: Option<Watermark>) -> Engine {
    let g = Gguf::parse(common::model_bytes()).expect("parse GGUF");
    let model = Model::load(
        &g,
        &LoadOptions {
            backend: BackendKind::Auto,
            threads: 2,
            max_context: Some(1024),
        },
    )
    .expect("load model");
    let tok = Arc::new(Tokenizer::from_gguf(&g).expect("tokenizer"));
    let template = ChatTemplate::from_gguf(&g, &tok).expect("template");
    let factory = factory.map(|w| Arc::new(w) as Arc<_>);
    Engine::start(model, tok, template, EngineConfig::default(), factory).expect("engine")
}

/// All prompts at once (batched), 150 tokens each at temperature 0.9.
fn generate(engine: &Engine) -> Vec<String> {
    let tmpl = engine
        .template()
        .expect("the default model has a chat template");
    let rxs: Vec<_> = PROMPTS
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let text = tmpl
                .render(&[ChatMessage::new("user", *p)], true)
                .expect("render");
            let prompt = engine.tokenizer().encode(&text, true).expect("encode");
            engine
                .submit(GenerationRequest {
                    prompt,
                    max_tokens: 150,
                    params: SamplingParams {
                        temperature: 0.9,
                        seed: Some(100 + i as u64),
                        ..Default::default()
                    },
                    stop: vec![],
                    ignore_eos: true,
                })
                .expect("submit")
        })
        .collect();
    rxs.into_iter()
        .map(|mut rx| {
            let mut text = String::new();
            while let Some(ev) = rx.blocking_recv() {
                match ev {
                    Event::Delta { text: t, .. } => text.push_str(&t),
                    Event::Done(_) => break,
                    Event::Error(e) => panic!("generation failed: {e}"),
                }
            }
            text
        })
        .collect()
}

#[test]
fn detection_separates_watermarked_from_plain_generations() {
    let params = WatermarkParams::default();
    let wm = Watermark::new(key(1), params);
    let wrong = Watermark::new(key(2), params);
    let opts = DetectOptions::default();

    let engine = start(Some(wm.clone()));
    let marked = generate(&engine);
    let tok = engine.tokenizer().clone();
    drop(engine);
    let plain = generate(&start(None));

    for text in &marked {
        let d = wm.detect_text(&tok, text, &opts).unwrap();
        assert_eq!(d.verdict, Verdict::Watermarked, "{d:?}\n{text}");
        let w = wrong.detect_text(&tok, text, &opts).unwrap();
        assert!(w.z < 4.0, "another key sees a watermark: {w:?}");
    }
    for text in &plain {
        let d = wm.detect_text(&tok, text, &opts).unwrap();
        assert_ne!(d.verdict, Verdict::Watermarked, "{d:?}\n{text}");
    }
    let mean = |v: &[String], w: &Watermark| {
        v.iter()
            .map(|t| w.detect_text(&tok, t, &opts).unwrap().z)
            .sum::<f64>()
            / v.len() as f64
    };
    let (zm, zp, zw) = (mean(&marked, &wm), mean(&plain, &wm), mean(&marked, &wrong));
    eprintln!("mean z: watermarked {zm:.2}, plain {zp:.2}, wrong key {zw:.2}");
    assert!(zp.abs() < 2.0 && zw.abs() < 2.0, "{zp} {zw}");
}
