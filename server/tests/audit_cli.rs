//! The audit log of a real `confidant serve` (default model, API keys) and
//! `confidant audit verify` on it and on mutated copies: an edited line, a
//! deleted line, a file cut inside a line and one cut at a line boundary.

mod common;

use std::path::Path;
use std::process::Command;

use common::Server;
use common::http::request;

const SECRET: &str = "platypus";

fn confidant(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_confidant"))
        .args(args)
        .output()
        .expect("run confidant");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn verify(file: &Path, extra: &[&str]) -> (i32, serde_json::Value) {
    let f = file.display().to_string();
    let mut args = vec!["audit", "verify", f.as_str(), "--json"];
    args.extend_from_slice(extra);
    let (code, out) = confidant(&args);
    (
        code,
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}")),
    )
}

/// Starts a server with its state in `dir`, makes a few requests (two
/// completions with `key`, a model list, one without a key) and stops it.
fn serve_some(dir: &Path, key: &str, extra_toml: &str) -> Server {
    let cfg = dir.join("serve.toml");
    std::fs::write(
        &cfg,
        format!("state_dir = {:?}\n{extra_toml}", dir.display().to_string()),
    )
    .unwrap();
    let c = cfg.display().to_string();
    let mut srv = Server::start(&["--config", &c, "--model-id", "m", "--threads", "2"]);
    let body = serde_json::json!({
        "model": "m",
        "messages": [{"role": "user", "content": format!("The secret word is {SECRET}. Say it.")}],
        "max_tokens": 8,
    })
    .to_string();
    for _ in 0..2 {
        let r = request(
            srv.addr,
            "POST",
            "/v1/chat/completions",
            Some(key),
            Some(&body),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(
        request(srv.addr, "GET", "/v1/models", Some(key), None).status,
        200
    );
    assert_eq!(
        request(srv.addr, "GET", "/v1/models", None, None).status,
        401
    );
    // Probes are not audited (readiness polls while loading included).
    assert_eq!(request(srv.addr, "GET", "/healthz", None, None).status, 200);
    srv.terminate();
    srv
}

fn create_key(store: &Path) -> (String, String) {
    let s = store.display().to_string();
    let (code, out) = confidant(&[
        "apikey", "create", "--name", "auditor", "--store", &s, "--json",
    ]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    (
        v["key"].as_str().unwrap().to_owned(),
        v["id"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn audit_log_records_requests_without_text_and_verify_locates_every_mutation() {
    let dir = tempfile::tempdir().unwrap();
    let (key, id) = create_key(&dir.path().join("api-keys.json"));
    serve_some(dir.path(), &key, "");
    let log = dir.path().join("audit.jsonl");
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(!text.contains(SECRET), "prompt text in the log");
    assert!(
        !text.contains(&key) && !text.contains("sk-cfd-"),
        "key in the log"
    );
    let v: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(v[0]["prev"], "0".repeat(64));
    for (i, e) in v.iter().enumerate() {
        assert_eq!(e["seq"], i as u64 + 1);
        assert_eq!(e["event"], "request");
        let t = e["time"].as_str().unwrap();
        assert!(
            t.len() == 24 && t.ends_with('Z') && &t[10..11] == "T",
            "{t}"
        );
        assert!(e["latency_ms"].is_u64());
        assert_eq!(e["client"], "127.0.0.1");
    }
    let chats: Vec<_> = v
        .iter()
        .filter(|e| e["route"] == "/v1/chat/completions")
        .collect();
    assert_eq!(chats.len(), 2);
    for c in chats {
        assert_eq!(
            (c["status"].as_u64(), c["key_id"].as_str()),
            (Some(200), Some(id.as_str()))
        );
        assert!(c["prompt_tokens"].as_u64().unwrap() > 5);
        assert!((1..=8).contains(&c["completion_tokens"].as_u64().unwrap()));
        assert_eq!(c["complete"], true);
        assert!(c.get("prompt").is_none() && c.get("completion").is_none());
    }
    let refused = v.iter().find(|e| e["status"] == 401).expect("the 401");
    assert_eq!(refused["reason"], "missing_key");
    assert!(refused["key_id"].is_null());

    // Intact.
    let (code, ok) = verify(&log, &[]);
    assert_eq!(code, 0, "{ok}");
    assert_eq!(
        (ok["status"].as_str(), ok["lines"].as_u64()),
        (Some("intact"), Some(4))
    );
    let head = ok["head"]["hash"].as_str().unwrap().to_owned();
    let f = log.display().to_string();
    let (code, human) = confidant(&["audit", "verify", &f]);
    assert_eq!(code, 0);
    assert!(human.contains("intact, 4 lines"), "{human}");

    let broken = |content: String| {
        let p = dir.path().join("mutated.jsonl");
        std::fs::write(&p, content).unwrap();
        verify(&p, &[])
    };
    let join = |ls: &[&str]| ls.join("\n") + "\n";

    // One line edited: that line is named.
    let mut edited = lines.clone();
    let l2 = edited[1].replacen("\"status\":200", "\"status\":500", 1);
    assert_ne!(l2, edited[1]);
    edited[1] = &l2;
    let (code, b) = broken(join(&edited));
    assert_eq!(code, 1, "{b}");
    assert_eq!(
        (b["line"].as_u64(), b["problem"].as_str()),
        (Some(2), Some("altered")),
        "{b}"
    );
    let p = dir.path().join("mutated.jsonl").display().to_string();
    let (code, human) = confidant(&["audit", "verify", &p]);
    assert_eq!(code, 1);
    assert!(human.contains("BROKEN at line 2"), "{human}");

    // One line deleted.
    let mut cut = lines.clone();
    cut.remove(1);
    let (code, b) = broken(join(&cut));
    assert_eq!(code, 1);
    assert_eq!(
        (b["line"].as_u64(), b["problem"].as_str()),
        (Some(2), Some("missing")),
        "{b}"
    );

    // Cut inside the last line.
    let (code, b) = broken(text[..text.len() - 20].to_owned());
    assert_eq!(code, 1);
    assert_eq!(
        (b["line"].as_u64(), b["problem"].as_str()),
        (Some(4), Some("truncated")),
        "{b}"
    );

    // Cut at a line boundary: a valid shorter chain, caught by the head.
    let shorter = dir.path().join("shorter.jsonl");
    std::fs::write(&shorter, join(&lines[..2])).unwrap();
    assert_eq!(verify(&shorter, &[]).0, 0);
    let (code, b) = verify(&shorter, &["--head", &head]);
    assert_eq!(code, 1);
    assert_eq!(b["problem"], "head_not_found", "{b}");
    assert_eq!(verify(&log, &["--head", &head]).0, 0);

    // A server never appends to a broken chain: it sets the file aside and
    // starts a new one that says so.
    std::fs::write(&log, join(&edited)).unwrap();
    let srv = serve_some(dir.path(), &key, "");
    let server_log = std::fs::read_to_string(&srv.log).unwrap();
    assert!(
        server_log.contains("AUDIT LOG CHAIN IS BROKEN"),
        "{server_log}"
    );
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("audit.jsonl.broken-")
        })
        .collect();
    assert_eq!(aside.len(), 1);
    assert_eq!(verify(&aside[0].path(), &[]).0, 1, "set aside unchanged");
    let fresh = std::fs::read_to_string(&log).unwrap();
    let first: serde_json::Value = serde_json::from_str(fresh.lines().next().unwrap()).unwrap();
    assert_eq!(first["event"], "log_restarted");
    let (code, v) = verify(&log, &[]);
    assert_eq!((code, v["lines"].as_u64()), (0, Some(5)), "{v}");

    // A healthy chain is continued across a restart.
    let before = std::fs::read_to_string(&log).unwrap();
    serve_some(dir.path(), &key, "");
    let after = std::fs::read_to_string(&log).unwrap();
    assert!(after.starts_with(&before));
    let (code, v) = verify(&log, &[]);
    assert_eq!((code, v["lines"].as_u64()), (0, Some(9)), "{v}");
}

#[test]
fn include_content_logs_prompt_and_completion_text() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = create_key(&dir.path().join("api-keys.json"));
    serve_some(dir.path(), &key, "[audit]\ninclude_content = true\n");
    let text = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    let chat: serde_json::Value = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["route"] == "/v1/chat/completions")
        .unwrap();
    assert!(chat["prompt"].as_str().unwrap().contains(SECRET));
    assert!(chat["completion"].is_string());
    assert_eq!(verify(&dir.path().join("audit.jsonl"), &[]).0, 0);
}
