//! Load on loopback: 500 concurrent completion requests against
//! `confidant serve` (default model) with a small engine queue. Every
//! request must end in 200, 429 (key quota) or 503 (overloaded) within the
//! time bound, refusals must say when to retry, and the server must stay
//! ready. The client is in-process (tokio, raw HTTP/1.1) rather than
//! wrk/oha: the test needs the status of each of exactly 500 requests sent
//! at once, not throughput figures.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Server;
use common::http::request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const REQUESTS: usize = 500;
const BOUND: Duration = Duration::from_secs(120);

fn create_key(store: &Path, name: &str, extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_confidant"))
        .args(["apikey", "create", "--name", name, "--store"])
        .arg(store)
        .args(extra)
        .output()
        .expect("apikey create");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// One request; `Ok((status, has Retry-After))` or what went wrong.
async fn one(addr: SocketAddr, key: String, body: String) -> Result<(u16, bool), String> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let req = format!(
        "POST /v1/completions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&out);
    let (head, _) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no response head: {text:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line: {head:?}"))?;
    let retry = head
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with("retry-after:"));
    Ok((status, retry))
}

#[test]
fn five_hundred_concurrent_requests_get_200_429_or_503_and_the_server_stays_ready() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("api-keys.json");
    let big = create_key(
        &store,
        "big",
        &[
            "--rpm",
            "100000",
            "--tpm",
            "10000000",
            "--concurrency",
            "1000",
        ],
    );
    let small = create_key(
        &store,
        "small",
        &["--rpm", "1000", "--tpm", "10000000", "--concurrency", "4"],
    );
    let cfg = dir.path().join("serve.toml");
    std::fs::write(
        &cfg,
        format!("state_dir = {:?}\n", dir.path().display().to_string()),
    )
    .unwrap();
    let c = cfg.display().to_string();
    let mut srv = Server::start(&[
        "--config",
        &c,
        "--model-id",
        "m",
        "--threads",
        "2",
        "--max-batch",
        "4",
        "--max-queue",
        "4",
    ]);
    let addr = srv.addr;
    let body = serde_json::json!({"model": "m", "prompt": "Hello", "max_tokens": 4}).to_string();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let t = Instant::now();
    let results = rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..REQUESTS {
            let key = if i % 2 == 0 {
                big.clone()
            } else {
                small.clone()
            };
            set.spawn(tokio::time::timeout(BOUND, one(addr, key, body.clone())));
        }
        let mut results = Vec::with_capacity(REQUESTS);
        while let Some(r) = set.join_next().await {
            results.push(match r {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => Err("timed out (hang)".to_owned()),
                Err(e) => Err(format!("task: {e}")),
            });
        }
        results
    });
    let elapsed = t.elapsed();

    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for r in &results {
        match r {
            Ok((status, retry)) => {
                *by_status.entry(*status).or_default() += 1;
                if matches!(status, 429 | 503) {
                    assert!(retry, "{status} without Retry-After");
                }
            }
            Err(e) => failures.push(e.clone()),
        }
    }
    eprintln!(
        "{REQUESTS} requests in {elapsed:?}: {by_status:?}, failures {}",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "failures: {:?}",
        &failures[..failures.len().min(10)]
    );
    assert_eq!(results.len(), REQUESTS);
    assert!(
        by_status.keys().all(|s| matches!(s, 200 | 429 | 503)),
        "unexpected statuses: {by_status:?}"
    );
    assert!(
        by_status.get(&200).copied().unwrap_or(0) > 0,
        "nothing served: {by_status:?}"
    );
    assert!(elapsed < BOUND);

    // Still ready, still serving, and the overload was counted.
    assert_eq!(srv.get("/readyz").unwrap().0, 200);
    let r = request(addr, "POST", "/v1/completions", Some(&big), Some(&body));
    assert_eq!(r.status, 200, "{}", r.body);
    let m = request(addr, "GET", "/metrics", None, None).body;
    if by_status.contains_key(&429) {
        assert!(
            m.contains(r#"confidant_access_rejections_total{status="429",reason="concurrency"}"#)
        );
    }

    // Every request left one audit line, and concurrent writers did not
    // break the chain.
    srv.terminate();
    let log = dir.path().join("audit.jsonl");
    let out = Command::new(env!("CARGO_BIN_EXE_confidant"))
        .args(["audit", "verify", "--json"])
        .arg(&log)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "{v}");
    assert_eq!(v["lines"], REQUESTS as u64 + 1, "{v}");
}
