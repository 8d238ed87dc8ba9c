//! Decrypt-and-verify throughput of the model container against a plain
//! memory copy of the same bytes (the peer: the fastest anything can put
//! the weights into the server's buffer).
//!
//! Uses the default model (`$CONFIDANT_MODEL`, else `scripts/fetch-model`'s
//! last output line). Run: `cargo bench --profile dev -p confidant-benches --bench container`
//! (the dev profile builds dependencies at opt-level 3).

use std::hint::black_box;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use confidant_keys::{
    ChunkSize, DataKey, Decryptor, DigestCheck, EncryptParams, Header, KeyId, ModelFormat,
    PlaintextInfo, encrypt,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sha2::Digest;

fn model() -> Vec<u8> {
    let path = std::env::var_os("CONFIDANT_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/fetch-model");
            let out = std::process::Command::new(script)
                .output()
                .expect("scripts/fetch-model runs");
            assert!(
                out.status.success(),
                "fetch-model: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            PathBuf::from(
                String::from_utf8(out.stdout)
                    .unwrap()
                    .lines()
                    .last()
                    .unwrap(),
            )
        });
    std::fs::read(path).expect("model readable")
}

fn bench(c: &mut Criterion) {
    let plain = model();
    let key = DataKey::generate().unwrap();
    let cores = std::thread::available_parallelism().unwrap();
    let mut g = c.benchmark_group("model_container");
    g.throughput(Throughput::Bytes(plain.len() as u64));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(8));
    g.warm_up_time(Duration::from_secs(2));

    let mut out = vec![0u8; plain.len()];
    g.bench_function("memcpy", |b| {
        b.iter(|| {
            out.copy_from_slice(black_box(&plain));
            black_box(&out);
        })
    });

    // The format's floor: one sequential SHA-256 over the plaintext, with
    // the implementation the container uses (aws-lc-rs) and with `sha2`.
    g.bench_function("sha256_only", |b| {
        b.iter(|| {
            black_box(aws_lc_rs::digest::digest(
                &aws_lc_rs::digest::SHA256,
                black_box(&plain),
            ))
        })
    });
    g.bench_function("sha256_only_sha2", |b| {
        b.iter(|| black_box(sha2::Sha256::digest(black_box(&plain))))
    });

    for chunk in [256 * 1024, 1024 * 1024] {
        let mut params = EncryptParams::new(KeyId::new("bench").unwrap(), ModelFormat::Gguf);
        params.chunk_size = ChunkSize::new(chunk).unwrap();
        let mut container = Vec::with_capacity(plain.len() + plain.len() / 1000 + 4096);
        encrypt(
            &key,
            &params,
            &PlaintextInfo::of(&plain),
            &plain[..],
            &mut container,
        )
        .unwrap();
        let d = Decryptor::new(Header::parse(&container).unwrap(), &key).unwrap();
        for threads in [1, cores.get()] {
            let name = format!("decrypt_verify/chunk_{}k/threads_{threads}", chunk / 1024);
            let t = NonZeroUsize::new(threads).unwrap();
            g.bench_function(name, |b| {
                b.iter(|| {
                    d.decrypt_into(black_box(&container[..]), &mut out, t)
                        .unwrap();
                })
            });
            // Every chunk tag verified; the digest taken from the
            // authenticated header instead of hashing the plaintext again.
            let name = format!("decrypt_aead/chunk_{}k/threads_{threads}", chunk / 1024);
            g.bench_function(name, |b| {
                b.iter(|| {
                    d.decrypt_into_with(
                        black_box(&container[..]),
                        &mut out,
                        t,
                        DigestCheck::AuthenticatedHeader,
                    )
                    .unwrap();
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
