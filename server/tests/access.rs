//! API keys, permissions and quotas over real HTTP on loopback: the
//! `confidant` binary serving the default model, keys made with
//! `confidant apikey`; and the router in-process for per-address limits.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Server;
use common::http::{Resp, request};

/// `confidant apikey create` into `store`; returns the key.
fn create_key(store: &Path, name: &str, extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_confidant"))
        .args(["apikey", "create", "--name", name, "--store"])
        .arg(store)
        .args(extra)
        .output()
        .expect("run confidant apikey create");
    assert!(
        out.status.success(),
        "apikey create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(key.starts_with("sk-cfd-"), "{key}");
    key
}

fn apikey(store: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_confidant"))
        .arg("apikey")
        .args(args)
        .arg("--store")
        .arg(store)
        .output()
        .expect("run confidant apikey");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Starts a server requiring keys, with its state in `dir`.
fn start(dir: &Path, extra_toml: &str, flags: &[&str]) -> Server {
    let cfg = dir.join("serve.toml");
    std::fs::write(
        &cfg,
        format!(
            // Test clients poll /readyz and /metrics freely.
            "state_dir = {:?}\n{extra_toml}\n[auth]\nper_address_rpm = 100000\nper_address_burst = 10000\n",
            dir.display().to_string()
        ),
    )
    .unwrap();
    let cfg = cfg.display().to_string();
    let mut args = vec![
        "--config",
        cfg.as_str(),
        "--model-id",
        "m",
        "--threads",
        "2",
    ];
    args.extend_from_slice(flags);
    Server::start(&args)
}

fn completion(max_tokens: u32) -> String {
    serde_json::json!({"model": "m", "prompt": "Hello", "max_tokens": max_tokens}).to_string()
}

fn num(r: &Resp, h: &str) -> u64 {
    r.header(h)
        .unwrap_or_else(|| panic!("no {h} in {:?}", r.headers))
        .parse()
        .unwrap_or_else(|_| panic!("{h} not a number"))
}

fn assert_rate_headers(r: &Resp) {
    for h in [
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
    ] {
        assert!(
            r.header(h).is_some(),
            "{h} missing on {}: {:?}",
            r.status,
            r.headers
        );
    }
}

/// Whether `text` holds a key id (`key_` and 16 hex digits).
fn has_key_id(text: &str) -> bool {
    text.match_indices("key_").any(|(i, _)| {
        let rest = &text[i + 4..];
        rest.len() >= 16 && rest.as_bytes()[..16].iter().all(u8::is_ascii_hexdigit)
    })
}

fn assert_error(r: &Resp, status: u16, kind: &str, code: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    let v = r.json();
    assert_eq!(v["error"]["type"], kind, "{}", r.body);
    assert_eq!(v["error"]["code"], code, "{}", r.body);
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
}

#[test]
fn one_key_past_its_rpm_and_tpm_gets_429_with_headers_and_another_key_is_unaffected() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("api-keys.json");
    // Reservations are prompt tokens + max_tokens: "Hello" + 16 is about 18
    // tokens, so 30 tokens/min pass one such request and refuse the next
    // until enough has come back (half a token a second).
    let a = create_key(&store, "alice", &["--rpm", "8", "--tpm", "30"]);
    let b = create_key(&store, "bob", &["--rpm", "100", "--tpm", "100000"]);
    let srv = start(dir.path(), "", &[]);
    let addr = srv.addr;
    let post =
        |key: &str, body: &str| request(addr, "POST", "/v1/completions", Some(key), Some(body));

    // Tokens per minute.
    let first = post(&a, &completion(16));
    assert_eq!(first.status, 200, "{}", first.body);
    assert_rate_headers(&first);
    assert_eq!(num(&first, "x-ratelimit-limit-requests"), 8);
    assert_eq!(num(&first, "x-ratelimit-remaining-requests"), 7);
    assert_eq!(num(&first, "x-ratelimit-limit-tokens"), 30);
    let usage = &first.json()["usage"];
    let reserved = usage["prompt_tokens"].as_u64().unwrap() + 16;
    assert_eq!(num(&first, "x-ratelimit-remaining-tokens"), 30 - reserved);
    let mut spent_requests = 1;
    let limited = loop {
        let r = post(&a, &completion(16));
        spent_requests += 1;
        if r.status != 200 {
            break r;
        }
        assert!(spent_requests < 5, "tokens/min never ran out");
    };
    assert_error(&limited, 429, "tokens", "rate_limit_exceeded");
    assert_rate_headers(&limited);
    assert!(num(&limited, "x-ratelimit-remaining-tokens") < reserved);
    let retry = num(&limited, "retry-after");
    assert!((1..=60).contains(&retry), "Retry-After {retry}");

    // A request larger than the whole quota can never pass: no Retry-After.
    let huge = post(&a, &completion(64));
    spent_requests += 1;
    assert_error(&huge, 429, "tokens", "rate_limit_exceeded");
    assert!(
        huge.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Request too large")
    );
    assert!(huge.header("retry-after").is_none());

    // Requests per minute: routes that spend no tokens still spend requests
    // (one comes back every 7.5 s, so a slow machine may see one more).
    let mut seen = spent_requests;
    let r = loop {
        let r = request(addr, "GET", "/v1/models", Some(&a), None);
        assert_rate_headers(&r);
        if r.status != 200 {
            break r;
        }
        seen += 1;
        assert!(seen <= 10, "requests/min never ran out");
    };
    assert!(seen >= 8, "refused after {seen} of 8");
    assert_error(&r, 429, "requests", "rate_limit_exceeded");
    assert_eq!(num(&r, "x-ratelimit-limit-requests"), 8);
    assert_eq!(num(&r, "x-ratelimit-remaining-requests"), 0);
    assert!(r.header("x-ratelimit-reset-requests").is_some());
    // One request comes back every 7.5 s.
    let retry = num(&r, "retry-after");
    assert!((1..=8).contains(&retry), "Retry-After {retry}");

    // Bob's quotas are his own.
    let rb = post(&b, &completion(16));
    assert_eq!(rb.status, 200, "{}", rb.body);
    assert_eq!(num(&rb, "x-ratelimit-limit-requests"), 100);
    assert_eq!(num(&rb, "x-ratelimit-remaining-requests"), 99);
    assert_eq!(num(&rb, "x-ratelimit-limit-tokens"), 100_000);
    assert_eq!(
        num(&rb, "x-ratelimit-remaining-tokens"),
        100_000 - reserved,
        "bob's tokens"
    );

    // The refusals are counted by reason, without key material.
    let m = request(addr, "GET", "/metrics", None, None).body;
    assert!(
        m.contains(r#"confidant_access_rejections_total{status="429",reason="tokens"} 1"#),
        "{m}"
    );
    assert!(m.contains(
        r#"confidant_access_rejections_total{status="429",reason="tokens_request_too_large"} 1"#
    ));
    assert!(m.contains(r#"confidant_access_rejections_total{status="429",reason="requests"} 1"#));
    assert!(
        !m.contains("sk-cfd-") && !has_key_id(&m),
        "key material in metrics"
    );
}

#[test]
fn missing_invalid_and_revoked_keys_get_401_detect_needs_its_permission_and_concurrency_is_capped()
{
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("api-keys.json");
    let chat = create_key(&store, "chat-only", &[]);
    let detect = create_key(&store, "detector", &["--permissions", "detect"]);
    let single = create_key(&store, "single", &["--concurrency", "1"]);
    let srv = start(dir.path(), "", &[]);
    let addr = srv.addr;

    // Open routes need no key.
    for p in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(request(addr, "GET", p, None, None).status, 200, "{p}");
    }
    // Missing, malformed and unknown keys.
    let r = request(addr, "GET", "/v1/models", None, None);
    assert_error(&r, 401, "invalid_request_error", "invalid_api_key");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let r = request(addr, "GET", "/v1/models", Some("not-a-key"), None);
    assert_error(&r, 401, "invalid_request_error", "invalid_api_key");
    let forged = format!("sk-cfd-{}", "0".repeat(64));
    let r = request(
        addr,
        "POST",
        "/v1/completions",
        Some(&forged),
        Some(&completion(4)),
    );
    assert_error(&r, 401, "invalid_request_error", "invalid_api_key");

    // Permissions: chat cannot detect, detect cannot chat.
    let body = serde_json::json!({"text": "some text to score"}).to_string();
    let r = request(
        addr,
        "POST",
        "/v1/watermark/detect",
        Some(&chat),
        Some(&body),
    );
    assert_error(&r, 403, "invalid_request_error", "insufficient_permissions");
    assert!(r.body.contains("`detect`"));
    let r = request(
        addr,
        "POST",
        "/v1/watermark/detect",
        Some(&detect),
        Some(&body),
    );
    // Past access control; this server simply does not watermark.
    assert_error(&r, 404, "invalid_request_error", "watermark_not_configured");
    let r = request(addr, "GET", "/v1/models", Some(&detect), None);
    assert_error(&r, 403, "invalid_request_error", "insufficient_permissions");

    // Concurrency 1: while one stream runs, a second request is refused.
    let long = serde_json::json!({
        "model": "m", "prompt": "Count:", "max_tokens": 3000, "ignore_eos": true, "stream": true
    })
    .to_string();
    let mut held = std::net::TcpStream::connect(addr).unwrap();
    held.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    common::http::send(
        &mut held,
        addr,
        "POST",
        "/v1/completions",
        Some(&single),
        Some(&long),
    )
    .unwrap();
    let mut reader = std::io::BufReader::new(held.try_clone().unwrap());
    let (status, _) = common::http::read_head(&mut reader).unwrap();
    assert_eq!(status, 200);
    let r = request(addr, "GET", "/v1/models", Some(&single), None);
    assert_error(&r, 429, "requests", "concurrency_limit_exceeded");
    assert_eq!(r.header("retry-after"), Some("1"));
    drop(reader);
    held.shutdown(std::net::Shutdown::Both).unwrap();
    drop(held);
    let t = Instant::now();
    loop {
        let r = request(addr, "GET", "/v1/models", Some(&single), None);
        if r.status == 200 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "slot not freed: {}",
            r.body
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Revocation on the running server: refused within about a second.
    assert_eq!(
        request(addr, "GET", "/v1/models", Some(&chat), None).status,
        200
    );
    let (ok, _) = apikey(&store, &["revoke", "chat-only"]);
    assert!(ok);
    let t = Instant::now();
    let r = loop {
        let r = request(addr, "GET", "/v1/models", Some(&chat), None);
        if r.status != 200 || t.elapsed() > Duration::from_secs(5) {
            break r;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_error(&r, 401, "invalid_request_error", "invalid_api_key");
    assert!(r.body.contains("revoked"), "{}", r.body);
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );
    // Other keys keep working; a key created now works without a restart.
    assert_eq!(
        request(
            addr,
            "POST",
            "/v1/watermark/detect",
            Some(&detect),
            Some(&body)
        )
        .status,
        404
    );
    let fresh = create_key(&store, "fresh", &[]);
    let t = Instant::now();
    while request(addr, "GET", "/v1/models", Some(&fresh), None).status != 200 {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "new key not picked up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // `apikey list` names keys and shows revocation, never the key.
    let (ok, list) = apikey(&store, &["list", "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    let names: Vec<_> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["chat-only", "detector", "single", "fresh"]);
    assert!(v[0]["revoked"].is_string() && v[1]["revoked"].is_null());
    assert!(!list.contains(&detect) && !list.contains("sk-cfd-"));
    let stored = std::fs::read_to_string(&store).unwrap();
    assert!(
        !stored.contains(&detect) && !stored.contains("sk-cfd-"),
        "plaintext key in the store"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&store).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // Names stay unique among live keys; revoking an unknown key fails.
    let (ok, _) = apikey(&store, &["create", "--name", "detector"]);
    assert!(!ok);
    let (ok, _) = apikey(&store, &["revoke", "nobody"]);
    assert!(!ok);

    let m = request(addr, "GET", "/metrics", None, None).body;
    for reason in ["missing_key", "invalid_key", "revoked_key"] {
        assert!(
            m.contains(&format!(
                r#"confidant_access_rejections_total{{status="401",reason="{reason}"}}"#
            )),
            "{reason}: {m}"
        );
    }
    assert!(m.contains(r#"confidant_access_rejections_total{status="403",reason="permission"} 2"#));
    // At least the one above; more while the held stream was ending.
    assert!(m.contains(r#"confidant_access_rejections_total{status="429",reason="concurrency"} "#));
}

/// In-process router (no model): the listener reports client addresses
/// the way the server's does.
fn in_process(toml_extra: &str) -> (tokio::runtime::Runtime, SocketAddr, tempfile::TempDir) {
    use confidant_server::{access::Access, config::ServeConfig, state::AppState};
    let dir = tempfile::tempdir().unwrap();
    let mut cfg: ServeConfig = toml::from_str(toml_extra).unwrap();
    cfg.state_dir = dir.path().to_owned();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let addr = rt.block_on(async {
        let state = Arc::new(AppState::new(cfg.clone()));
        state.set_access(Access::from_config(&cfg).unwrap());
        let app = confidant_server::api::router(state);
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(l, app.into_make_service_with_connect_info::<SocketAddr>())
                .await
                .unwrap()
        });
        addr
    });
    (rt, addr, dir)
}

#[test]
fn open_routes_and_failed_keys_are_rate_limited_per_address() {
    let (_rt, addr, _dir) = in_process("[auth]\nper_address_rpm = 60\nper_address_burst = 3\n");
    for _ in 0..3 {
        assert_eq!(request(addr, "GET", "/healthz", None, None).status, 200);
    }
    let r = request(addr, "GET", "/readyz", None, None);
    assert_error(&r, 429, "requests", "rate_limit_exceeded");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(num(&r, "x-ratelimit-limit-requests"), 60);
    // Failed authentication spends the same quota: guessing keys is limited.
    let r = request(addr, "GET", "/v1/models", Some("sk-cfd-guess"), None);
    assert_eq!(r.status, 429, "{}", r.body);
    std::thread::sleep(Duration::from_millis(1100));
    let r = request(addr, "GET", "/v1/models", Some("sk-cfd-guess"), None);
    assert_error(&r, 401, "invalid_request_error", "invalid_api_key");
}

#[test]
fn without_access_control_installed_keyed_routes_fail_closed() {
    use confidant_server::{config::ServeConfig, state::AppState};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let addr = rt.block_on(async {
        let state = Arc::new(AppState::new(ServeConfig::default()));
        let app = confidant_server::api::router(state);
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        addr
    });
    assert_eq!(request(addr, "GET", "/healthz", None, None).status, 200);
    let r = request(addr, "GET", "/v1/models", None, None);
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.header("retry-after").is_some());
}

#[test]
fn prompt_token_cap_and_request_body_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("api-keys.json");
    let k = create_key(&store, "k", &[]);
    let srv = start(
        dir.path(),
        "max_prompt_tokens = 8\nidle_timeout_secs = 1\n",
        &[],
    );
    let addr = srv.addr;
    let long = serde_json::json!({"model": "m", "prompt": "one two three four five six seven eight nine ten", "max_tokens": 2}).to_string();
    let r = request(addr, "POST", "/v1/completions", Some(&k), Some(&long));
    assert_error(&r, 400, "invalid_request_error", "prompt_too_long");
    assert_eq!(
        request(
            addr,
            "POST",
            "/v1/completions",
            Some(&k),
            Some(&completion(2))
        )
        .status,
        200
    );

    // A body announced but not sent: refused after the idle timeout, not held.
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {k}\r\nContent-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{{\"model\""
    )
    .unwrap();
    let t = Instant::now();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "held for {:?}",
        t.elapsed()
    );
}
