//! Cost of TLS + attestation for a client: time to first token on a fresh
//! connection (TCP + TLS 1.3 handshake + attestation document for a fresh
//! nonce + evidence verification + the request) against the same request
//! on an established, already verified connection. One run, same server.
//!
//! `cargo bench --profile dev --workspace --bench attested_ttft`
//! (the dev profile builds dependencies at opt-level 3; no second build).
//! Env: `TTFT_RUNS` (20), `CONFIDANT_MODEL` (else `scripts/fetch-model`),
//! `TTFT_ATTESTER` (`insecure-dev`; `tpm` needs `TTFT_TCTI` and
//! `TTFT_AK_KEYS`, `TTFT_AK_RECORD`, `TTFT_PCR_POLICY` from `scripts/run-swtpm`).
//!
//! The request asks for one token (`max_tokens: 1`, non-streamed), so its
//! latency is the time to the first token.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use confidant_client::{AttestedClient, ClientPolicy};

const BIN: &str = env!("CARGO_BIN_EXE_confidant");

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn model() -> PathBuf {
    if let Some(p) = std::env::var_os("CONFIDANT_MODEL") {
        return p.into();
    }
    let out = Command::new(root().join("scripts/fetch-model"))
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

fn confidant(args: &[&str]) {
    let out = Command::new(BIN).args(args).output().expect("confidant");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn first_line(child: &mut Child, prefix: &str) -> String {
    let out = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(out).lines();
    for l in lines.by_ref() {
        let l = l.expect("line");
        if let Some(rest) = l.strip_prefix(prefix) {
            std::thread::spawn(move || for _ in lines {});
            return rest.trim().to_owned();
        }
    }
    panic!("no {prefix:?} line");
}

fn stats(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2], v[v.len() * 9 / 10])
}

fn main() {
    let runs: usize = std::env::var("TTFT_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().expect("tempdir");
    let d = |f: &str| dir.path().join(f).to_str().expect("utf-8").to_owned();
    let model = model();
    confidant(&["kek", "generate", "--out", &d("kek")]);
    confidant(&[
        "model",
        "encrypt",
        "--in",
        model.to_str().expect("utf-8"),
        "--out",
        &d("m.cmdl"),
        "--key-id",
        "bench",
        "--kek",
        &format!("file:{}", d("kek")),
    ]);
    let tpm = std::env::var("TTFT_ATTESTER").as_deref() == Ok("tpm");
    let kbs_policy = if tpm {
        std::env::var("TTFT_PCR_POLICY").expect("TTFT_PCR_POLICY")
    } else {
        std::fs::write(d("policy.toml"), "").expect("write");
        d("policy.toml")
    };
    confidant(&[
        "kbs",
        "model",
        "add",
        "--key-id",
        "bench",
        "--wrapped",
        &d("m.cmdl.key"),
        "--policy",
        &kbs_policy,
        "--db",
        &d("kbs.db"),
    ]);
    let mut client_policy = std::fs::read_to_string(&kbs_policy).expect("policy");
    if tpm {
        let rec = std::env::var("TTFT_AK_RECORD").expect("TTFT_AK_RECORD");
        confidant(&["kbs", "ak", "add", "--record", &rec, "--db", &d("kbs.db")]);
        client_policy.push_str(&format!("\n[client]\ntpm_ak_records = [\"{rec}\"]\n"));
    } else {
        client_policy.push_str("\n[client]\ninsecure_allow_dev_attester = true\n");
    }
    std::fs::write(d("client.toml"), client_policy).expect("write");
    let mut kbs = Command::new(BIN);
    kbs.args([
        "kbs",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--db",
        &d("kbs.db"),
        "--kek",
    ])
    .arg(format!("file:{}", d("kek")));
    if !tpm {
        kbs.arg("--insecure-allow-dev-attester");
    }
    let mut kbs = kbs
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kbs");
    let kbs_url = first_line(&mut kbs, "confidant kbs listening on ");
    let _kbs = Proc(kbs);
    std::fs::create_dir_all(d("state")).expect("state dir");
    let key_out = Command::new(BIN)
        .args([
            "apikey",
            "create",
            "--name",
            "bench",
            "--rpm",
            "100000",
            "--tpm",
            "100000000",
        ])
        .args(["--concurrency", "8", "--store", &d("state/api-keys.json")])
        .output()
        .expect("apikey");
    assert!(key_out.status.success(), "apikey create failed");
    let api_key = String::from_utf8_lossy(&key_out.stdout)
        .lines()
        .last()
        .expect("key")
        .trim()
        .to_owned();
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port");
    let mut serve = Command::new(BIN);
    serve
        .args([
            "serve",
            "--model",
            &d("m.cmdl"),
            "--kbs-url",
            &kbs_url,
            "--listen",
        ])
        .arg(addr.to_string())
        .args(["--state-dir", &d("state")]);
    if tpm {
        serve
            .args(["--attester", "tpm", "--tpm-tcti"])
            .arg(std::env::var("TTFT_TCTI").expect("TTFT_TCTI"))
            .arg("--tpm-ak-keys")
            .arg(std::env::var("TTFT_AK_KEYS").expect("TTFT_AK_KEYS"));
    } else {
        serve.args(["--attester", "insecure-dev"]);
    }
    let _serve = Proc(
        serve
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("serve"),
    );
    let url = format!("https://{addr}");
    let policy = ClientPolicy::load(Path::new(&d("client.toml"))).expect("policy");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let req = serde_json::json!({
        "model": "m",
        "messages": [{"role": "user", "content": "Which city is the capital of France?"}],
        "temperature": 0,
        "max_tokens": 1,
    });
    rt.block_on(async {
        // Ready and verified.
        let t0 = Instant::now();
        let established = loop {
            match AttestedClient::connect(&url, policy.clone(), Some(api_key.clone())).await {
                Ok(c) => break c,
                Err(_) if t0.elapsed() < Duration::from_secs(300) => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Err(e) => panic!("server not verified: {e}"),
            }
        };
        let model_id = established.report().await.expect("report").model.id;
        let mut req = req;
        req["model"] = serde_json::json!(model_id);
        // Warm-up.
        for _ in 0..3 {
            established.chat_completion(&req).await.expect("completion");
        }
        let (mut fresh, mut warm, mut connect_only) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            let t = Instant::now();
            let c = AttestedClient::connect(&url, policy.clone(), Some(api_key.clone()))
                .await
                .expect("verified");
            connect_only.push(t.elapsed().as_secs_f64() * 1e3);
            c.chat_completion(&req).await.expect("completion");
            fresh.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            established.chat_completion(&req).await.expect("completion");
            warm.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let attester = if tpm { "tpm (swtpm)" } else { "insecure-dev" };
        let (a, b, c) = stats(&mut fresh);
        let (e, f, g) = stats(&mut warm);
        let (h, i, j) = stats(&mut connect_only);
        println!("attester: {attester}, runs: {runs}, request: 1 token, receipt verified");
        println!("| case | min ms | median ms | p90 ms |");
        println!("|---|---|---|---|");
        println!(
            "| fresh connection: TLS + attestation + verify + request | {a:.1} | {b:.1} | {c:.1} |"
        );
        println!("| established verified connection: request | {e:.1} | {f:.1} | {g:.1} |");
        println!("| of which connect + attest + verify | {h:.1} | {i:.1} | {j:.1} |");
    });
}
