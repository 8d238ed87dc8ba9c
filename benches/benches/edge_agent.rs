//! The edge agent's model path with the default model: resident memory
//! (VmHWM from /proc/self/status) and inference latency.
//!
//! What runs is the agent's own code: the encrypted container decrypted
//! into memory (`confidant_edge_agent::model::decrypt`), the engine loaded
//! as the agent loads it (`LocalModel::load`: one sequence, KV cache for
//! `max_context` tokens), and greedy generations on sensor readings. The
//! TPM steps (unseal, AK signature) are not in it: they take
//! milliseconds and a few MB, and need a TPM.
//!
//! The container is encrypted by streaming file to file, then the peak is
//! reset (`5` > /proc/self/clear_refs) so VmHWM counts the agent's work
//! only. Peer measured in the same run: the plaintext GGUF's size.
//!
//! Run: `cargo bench -p confidant-benches --bench edge_agent`
//! (`EDGE_BENCH_RUNS`, `EDGE_BENCH_MAX_TOKENS`, `EDGE_BENCH_THREADS`,
//! `EDGE_BENCH_MAX_CONTEXT` override the defaults 5, 24, 1, 512).

use std::path::PathBuf;
use std::time::Instant;

use confidant_edge_agent::memory::{peak_rss_kib, rss_kib};
use confidant_edge_agent::model::{InferenceSettings, LocalModel, decrypt};
use confidant_edge_agent::sensor::Reading;
use confidant_keys::{DataKey, EncryptParams, KeyId, ModelFormat, PlaintextInfo, encrypt};

fn model_path() -> PathBuf {
    if let Some(p) = std::env::var_os("CONFIDANT_MODEL") {
        return PathBuf::from(p);
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/fetch-model");
    let out = std::process::Command::new(script)
        .output()
        .expect("scripts/fetch-model runs");
    assert!(out.status.success(), "fetch-model failed");
    PathBuf::from(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .last()
            .unwrap(),
    )
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let runs = env_or("EDGE_BENCH_RUNS", 5).max(1);
    let max_tokens = env_or("EDGE_BENCH_MAX_TOKENS", 24);
    let threads = env_or("EDGE_BENCH_THREADS", 1);
    let max_context = env_or("EDGE_BENCH_MAX_CONTEXT", 512);
    let src = model_path();
    let model_len = std::fs::metadata(&src).unwrap().len();
    let dir = tempfile::tempdir().unwrap();
    let container = dir.path().join("model.cmdl");
    let key = DataKey::generate().unwrap();
    let info = PlaintextInfo::compute(std::fs::File::open(&src).unwrap()).unwrap();
    encrypt(
        &key,
        &EncryptParams::new(KeyId::new("bench").unwrap(), ModelFormat::Gguf),
        &info,
        std::fs::File::open(&src).unwrap(),
        std::io::BufWriter::new(std::fs::File::create(&container).unwrap()),
    )
    .unwrap();
    // Reset the peak: what follows is what the agent does.
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM (Linux)");
    let base = peak_rss_kib();

    let t = Instant::now();
    let (bytes, _, digest) = decrypt(&container, &key).unwrap();
    let decrypt_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let m = LocalModel::load(
        bytes,
        digest,
        InferenceSettings {
            threads,
            max_context,
            max_tokens,
            ..InferenceSettings::default()
        },
    )
    .unwrap();
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let loaded_rss = rss_kib();

    let readings = [
        Reading {
            temperature_c: 25.08,
            pressure_pa: 100_653.25,
            humidity_pct: Some(46.3),
        },
        Reading {
            temperature_c: 31.7,
            pressure_pa: 99_870.0,
            humidity_pct: Some(71.0),
        },
    ];
    let _warm = m.infer(&readings[0]).unwrap();
    let mut lat = Vec::new();
    let mut tokens = 0;
    for i in 0..runs {
        let g = m.infer(&readings[i % readings.len()]).unwrap();
        tokens += g.completion_tokens;
        lat.push(g.latency_ms as f64);
    }
    lat.sort_by(f64::total_cmp);
    let p50 = lat[lat.len() / 2];
    let total_s: f64 = lat.iter().sum::<f64>() / 1e3;
    let peak = peak_rss_kib();
    println!(
        "edge agent, default model ({:.1} MiB GGUF), threads {threads}, max_context {max_context}, max_tokens {max_tokens}, {runs} runs",
        model_len as f64 / (1 << 20) as f64
    );
    println!("  VmHWM before the model path   {}", mib(base));
    println!("  decrypt in memory             {decrypt_ms:.0} ms");
    println!("  load (GGUF, tokenizer, engine) {load_ms:.0} ms");
    println!("  VmRSS after load              {}", mib(loaded_rss));
    println!("  VmHWM (peak, whole process)   {}", mib(peak));
    println!(
        "  latency per record            p50 {p50:.0} ms, min {:.0} ms, max {:.0} ms",
        lat[0],
        lat[lat.len() - 1]
    );
    println!(
        "  generated                     {tokens} tokens, {:.1} tokens/s (prefill included)",
        tokens as f64 / total_s.max(1e-9)
    );
}
