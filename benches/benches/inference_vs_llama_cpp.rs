//! Single-stream prefill and decode speed of Confidant's native engine
//! against llama.cpp (llama-cpp-python) on the same prompt, same model file
//! and the same thread count, measured in one run.
//!
//! `cargo bench -p confidant-benches --bench inference_vs_llama_cpp`
//! Needs a Python with `llama_cpp` importable: `LLAMA_CPP_PYTHON` (default
//! `python3`); `scripts/bench-setup` builds one as the issue prescribes.
//! Env: `BENCH_THREADS` (2), `BENCH_DECODE` (128), `BENCH_RUNS` (5).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use confidant_inference::model::{BackendKind, LoadOptions, Model, Step};
use confidant_inference::sampling::argmax;
use confidant_inference::{Gguf, Tokenizer};

/// About a hundred tokens of ordinary prose.
const PROMPT: &str = "Confidential computing protects data while it is being processed. \
A confidential virtual machine encrypts its memory with keys that the host cannot read, \
and the processor signs a report describing the software that was loaded. A client that \
receives such a report can check the signature against the vendor's certificates, compare \
the measurement with the value it expects, and only then send its prompt. The server never \
sees the model weights in plain text on disk, because they are decrypted in memory after \
the key broker has verified the report. Explain in simple words why this matters for a \
hospital that wants to use a language model.";

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
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(root.join("scripts/fetch-model"))
        .output()
        .expect("fetch-model");
    PathBuf::from(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .expect("path")
            .trim(),
    )
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let threads = env_usize("BENCH_THREADS", 2);
    let decode_n = env_usize("BENCH_DECODE", 128);
    let runs = env_usize("BENCH_RUNS", 5);
    let path = model_path();
    let bytes = std::fs::read(&path).expect("read model");
    let g = Gguf::parse(bytes.into()).expect("gguf");
    let tok = Tokenizer::from_gguf(&g).expect("tokenizer");
    let prompt = tok.encode(PROMPT, false).expect("encode");
    let model = Model::load(
        &g,
        &LoadOptions {
            backend: BackendKind::Native,
            threads,
            max_context: Some(1024),
        },
    )
    .expect("load");

    let (mut ours_p, mut ours_d) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let mut seq = model.new_sequence(prompt.len() + decode_n + 1);
        let t = Instant::now();
        let l = model
            .forward(&mut [Step {
                tokens: &prompt,
                seq: &mut seq,
                want_logits: true,
                prompt: true,
            }])
            .expect("prefill")
            .remove(0)
            .expect("logits");
        ours_p.push(prompt.len() as f64 / t.elapsed().as_secs_f64());
        let mut next = argmax(&l);
        let t = Instant::now();
        for _ in 0..decode_n {
            let l = model
                .forward(&mut [Step {
                    tokens: &[next],
                    seq: &mut seq,
                    want_logits: true,
                    prompt: false,
                }])
                .expect("decode")
                .remove(0)
                .expect("logits");
            next = argmax(&l);
        }
        ours_d.push(decode_n as f64 / t.elapsed().as_secs_f64());
    }

    let py = std::env::var("LLAMA_CPP_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("llama_cpp_peer.py");
    let mut child = Command::new(&py)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {py}: {e} (set LLAMA_CPP_PYTHON)"));
    let cfg = serde_json::json!({
        "model": path, "threads": threads, "prompt_ids": prompt,
        "decode_tokens": decode_n, "runs": runs,
    });
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(cfg.to_string().as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("llama.cpp peer");
    assert!(out.status.success(), "llama.cpp peer failed");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("peer json");
    let nums = |k: &str| -> Vec<f64> {
        v[k].as_array()
            .expect(k)
            .iter()
            .map(|x| x.as_f64().expect("number"))
            .collect()
    };
    let (mut peer_p, mut peer_d) = (nums("prefill_tokens_per_s"), nums("decode_tokens_per_s"));

    let (op, od, pp, pd) = (
        median(&mut ours_p),
        median(&mut ours_d),
        median(&mut peer_p),
        median(&mut peer_d),
    );
    println!("model: {}", path.display());
    println!(
        "prompt: {} tokens; decode: {decode_n} tokens; threads: {threads}; runs: {runs} (medians); kernels: {:?}",
        prompt.len(),
        confidant_inference::kernels::isa()
    );
    println!(
        "llama.cpp: {}",
        v["system_info"].as_str().unwrap_or("?").trim()
    );
    println!("| engine | prefill tok/s | decode tok/s |");
    println!("|---|---|---|");
    println!("| Confidant (native) | {op:.1} | {od:.1} |");
    println!("| llama.cpp | {pp:.1} | {pd:.1} |");
    println!("| ratio | {:.2}x | {:.2}x |", op / pp, od / pd);
}
