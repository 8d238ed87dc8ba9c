//! `confidant watermark keygen|detect`, `confidant generate --watermark-key`
//! and `confidant serve --watermark-key` with `POST /v1/watermark/detect`,
//! end to end through the built binary and the default model.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_confidant");

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("CONFIDANT_MODEL", common::model_path())
        .output()
        .expect("confidant runs")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn keygen(path: &Path) {
    ok(&run(&[
        "watermark",
        "keygen",
        "--out",
        path.to_str().unwrap(),
    ]));
}

fn detect(key: &Path, text: &str) -> Value {
    let out = ok(&run(&[
        "watermark",
        "detect",
        "--key",
        key.to_str().unwrap(),
        "--text",
        text,
        "--json",
    ]));
    serde_json::from_str(out.trim()).expect("detect --json prints one JSON object")
}

fn assert_shape(d: &Value) {
    assert!(d["z"].is_f64(), "{d}");
    assert!(d["p_value"].is_f64(), "{d}");
    assert!(d["scored_tokens"].is_u64(), "{d}");
    let v = d["verdict"].as_str().expect("verdict");
    assert!(
        ["watermarked", "not_watermarked", "insufficient"].contains(&v),
        "{d}"
    );
}

/// `confidant generate` with the watermark: 160 tokens at temperature 0.9.
fn generate(key: Option<&Path>, seed: &str) -> String {
    let mut args = generate_args(seed);
    if let Some(k) = key {
        args.extend(["--watermark-key", k.to_str().unwrap()]);
    }
    let v: Value = serde_json::from_str(ok(&run(&args)).trim()).expect("JSON");
    if key.is_some() {
        assert_eq!(v["watermark"]["scheme"], "hmac-sha256-lefthash", "{v}");
    }
    v["text"].as_str().expect("text").to_owned()
}

fn generate_args(seed: &str) -> Vec<&str> {
    vec![
        "generate",
        "--chat",
        "--prompt",
        "Write a short story about a fox who learns to read.",
        "--max-tokens",
        "160",
        "--temperature",
        "0.9",
        "--seed",
        seed,
        "--ignore-eos",
        "--json",
        "--threads",
        "2",
    ]
}

#[test]
fn keygen_then_detect_generated_text() {
    let dir = tempfile::tempdir().unwrap();
    let (key, other) = (dir.path().join("wm.key"), dir.path().join("other.key"));
    keygen(&key);
    keygen(&other);
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let again = run(&["watermark", "keygen", "--out", key.to_str().unwrap()]);
    assert!(!again.status.success(), "keygen overwrote an existing key");
    assert!(
        !String::from_utf8_lossy(&again.stderr).contains(&std::fs::read_to_string(&key).unwrap())
    );

    let short = detect(&key, "Hello there.");
    assert_shape(&short);
    assert_eq!(short["verdict"], "insufficient");

    let marked = generate(Some(&key), "5");
    let d = detect(&key, &marked);
    assert_shape(&d);
    assert_eq!(d["verdict"], "watermarked", "{d}\n{marked}");
    let w = detect(&other, &marked);
    assert_eq!(w["verdict"], "not_watermarked", "{w}");
    let plain = generate(None, "5");
    let p = detect(&key, &plain);
    assert_eq!(p["verdict"], "not_watermarked", "{p}\n{plain}");

    // --file, and the human-readable form.
    let f = dir.path().join("text.txt");
    std::fs::write(&f, &marked).unwrap();
    let out = ok(&run(&[
        "watermark",
        "detect",
        "--key",
        key.to_str().unwrap(),
        "--file",
        f.to_str().unwrap(),
    ]));
    assert!(out.starts_with("watermarked: z = "), "{out}");
    // Parameters must match the generator's.
    let out = ok(&run(&[
        "watermark",
        "detect",
        "--key",
        key.to_str().unwrap(),
        "--file",
        f.to_str().unwrap(),
        "--watermark-context-width",
        "2",
        "--json",
    ]));
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["verdict"], "not_watermarked", "{v}");
}

/// The `gumbel-max` kind end to end: generated with it, detected with it,
/// not with the green-list kind or the wrong context width; the attested
/// public parameters name it.
#[test]
fn gumbel_max_kind_generates_and_detects() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("wm.key");
    keygen(&key);
    let k = key.to_str().unwrap();
    let kind = [
        "--watermark-kind",
        "gumbel-max",
        "--watermark-context-width",
        "2",
    ];
    let mut args = generate_args("7");
    args.extend(["--watermark-key", k]);
    args.extend(kind);
    let v: Value = serde_json::from_str(ok(&run(&args)).trim()).expect("JSON");
    assert_eq!(v["watermark"]["kind"], "gumbel-max", "{v}");
    assert_eq!(v["watermark"]["context_width"], 2, "{v}");
    let text = v["text"].as_str().unwrap();
    let detect_with = |extra: &[&str]| -> Value {
        let mut a = vec!["watermark", "detect", "--key", k, "--text", text, "--json"];
        a.extend(extra);
        serde_json::from_str(ok(&run(&a)).trim()).unwrap()
    };
    let d = detect_with(&kind);
    assert_shape(&d);
    assert_eq!(d["verdict"], "watermarked", "{d}\n{text}");
    assert!(d["score"].is_f64(), "{d}");
    let green = detect_with(&[]);
    assert_eq!(green["verdict"], "not_watermarked", "{green}");
    let h1 = detect_with(&["--watermark-kind", "gumbel-max"]);
    assert_eq!(h1["verdict"], "not_watermarked", "{h1}");
}

#[test]
fn detect_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("wm.key");
    keygen(&key);
    let k = key.to_str().unwrap();
    // No text, both texts, a bad parameter, a missing key, a readable key.
    for args in [
        vec!["watermark", "detect", "--key", k],
        vec![
            "watermark",
            "detect",
            "--key",
            k,
            "--text",
            "a",
            "--file",
            "b",
        ],
        vec![
            "watermark",
            "detect",
            "--key",
            k,
            "--text",
            "a",
            "--watermark-gamma",
            "2",
        ],
        vec![
            "watermark",
            "detect",
            "--key",
            "/nonexistent",
            "--text",
            "a",
        ],
    ] {
        assert!(!run(&args).status.success(), "{args:?} succeeded");
    }
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(&["watermark", "detect", "--key", k, "--text", "a"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
}

/// Minimal HTTP/1.1 POST of a JSON body, returning (status, body).
fn post(addr: std::net::SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    let body = body.to_string();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    let code = status
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut rest = String::new();
    r.read_to_string(&mut rest).unwrap();
    let body = rest.split_once("\r\n\r\n").map(|x| x.1).unwrap_or_default();
    (code, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[test]
fn serve_watermarks_every_completion_and_detects_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("wm.key");
    keygen(&key);
    let srv = common::Server::start(&["--watermark-key", key.to_str().unwrap(), "--threads", "2"]);
    let completion = |extra: Value| {
        let mut req = json!({
            "model": "SmolLM2-135M-Instruct",
            "messages": [{"role": "user", "content": "Tell me about the history of tea."}],
            "max_tokens": 160,
            "temperature": 0.9,
            "seed": 11,
            "ignore_eos": true,
        });
        for (k, v) in extra.as_object().unwrap() {
            req[k] = v.clone();
        }
        post(srv.addr, "/v1/chat/completions", &req)
    };
    // No request field turns the watermark off.
    let (code, body) = completion(json!({"watermark": false}));
    assert_eq!(code, 400, "{body}");
    // Whatever the sampling parameters, the output carries the mark.
    let (code, body) = completion(json!({"presence_penalty": 0.5, "top_p": 0.95}));
    assert_eq!(code, 200, "{body}");
    let text = body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();

    let (code, d) = post(srv.addr, "/v1/watermark/detect", &json!({"text": text}));
    assert_eq!(code, 200, "{d}");
    assert_shape(&d);
    assert_eq!(d["verdict"], "watermarked", "{d}\n{text}");
    assert_eq!(detect(&key, &text)["z"], d["z"], "CLI and API disagree");
    let (_, strict) = post(
        srv.addr,
        "/v1/watermark/detect",
        &json!({"text": text, "threshold": 1000}),
    );
    assert_eq!(strict["error"]["param"], "threshold", "{strict}");
    let (code, short) = post(srv.addr, "/v1/watermark/detect", &json!({"text": "Hi."}));
    assert_eq!(
        (code, short["verdict"].as_str()),
        (200, Some("insufficient"))
    );
    let (code, bad) = post(srv.addr, "/v1/watermark/detect", &json!({"txt": "Hi."}));
    assert_eq!(code, 400, "{bad}");
    let log = std::fs::read_to_string(&srv.log).unwrap();
    let secret = std::fs::read_to_string(&key).unwrap();
    let hex = secret.lines().nth(1).unwrap();
    assert!(!log.contains(hex), "the key reached the log");
    drop(srv);

    let plain = common::Server::start(&["--threads", "2"]);
    let (code, e) = post(plain.addr, "/v1/watermark/detect", &json!({"text": "Hi."}));
    assert_eq!(code, 404, "{e}");
    assert_eq!(e["error"]["code"], "watermark_not_configured");
}

#[test]
fn serve_enforced_generates_its_key_once_in_the_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let s = state.to_str().unwrap();
    let srv = common::Server::start(&["--watermark-enforced", "--state-dir", s, "--threads", "2"]);
    let key = state.join("watermark.key");
    let first = std::fs::read_to_string(&key).expect("a generated key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let log = std::fs::read_to_string(&srv.log).unwrap();
    assert!(
        !log.contains(first.lines().nth(1).unwrap()),
        "the key reached the log"
    );
    drop(srv);
    let _again =
        common::Server::start(&["--watermark-enforced", "--state-dir", s, "--threads", "2"]);
    assert_eq!(
        std::fs::read_to_string(&key).unwrap(),
        first,
        "the key changed"
    );
}
