//! The attested flow end to end through the built binary, with the insecure
//! dev attester (the only attester that exists on every machine; the TPM
//! variant runs in `attested_swtpm.rs`): model owner encrypts the default
//! model and runs the key broker; `confidant serve` obtains the key with
//! evidence, decrypts into locked memory and serves over attested TLS;
//! `confidant verify`, `confidant proxy` with the official OpenAI SDK, the
//! Rust `AttestedClient`, receipts, a man in the middle, a policy the
//! server does not satisfy, and a scan of what the server wrote to disk.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::flow::{BIN, Proc, ok, run, spawn_reading, wait_verified};
use common::{free_addr, model_path, python};
use confidant_client::conn::{Target, connect_tls};
use confidant_client::{AttestedClient, ClientPolicy, Error, Receipt};

const MODEL_ID: &str = "SmolLM2-135M-Instruct";

/// A TLS relay with its own key that forwards everything, byte for byte,
/// to `upstream` over a separate TLS connection: it relays the real
/// attestation document but cannot present the attested key.
fn start_mitm(upstream: SocketAddr) -> SocketAddr {
    let identity = Arc::new(confidant_server::tls::TlsIdentity::generate().unwrap());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(identity.config());
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut down) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let target = Target {
                        host: "127.0.0.1".into(),
                        port: upstream.port(),
                    };
                    let Ok(up) = connect_tls(&target, None, Duration::from_secs(10)).await else {
                        return;
                    };
                    let mut up = up.stream;
                    let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                });
            }
        });
    });
    addr
}

/// Samples of the plaintext model and markers of private keys: none may
/// appear in any file the server process wrote.
fn secrets_to_look_for(plain: &[u8]) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = Vec::new();
    v.push(plain[..64].to_vec());
    let step = plain.len() / 40;
    for i in 1..40 {
        v.push(plain[i * step..i * step + 48].to_vec());
    }
    v.push(b"PRIVATE KEY".to_vec());
    // DER prefix of a PKCS#8 EC P-256 private key.
    v.push(vec![
        0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
    ]);
    v
}

fn scan(dir: &Path, needles: &[Vec<u8>], skip: &[PathBuf]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if skip.contains(&p) {
                continue;
            }
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                let mut data = Vec::new();
                std::fs::File::open(&p)
                    .unwrap()
                    .read_to_end(&mut data)
                    .unwrap();
                for (i, n) in needles.iter().enumerate() {
                    if data.windows(n.len()).any(|w| w == n.as_slice()) {
                        found.push(format!("{} contains secret sample {i}", p.display()));
                    }
                }
            }
        }
    }
    found
}

#[test]
fn attested_serving_end_to_end_with_insecure_dev_attester() {
    let owner = tempfile::tempdir().unwrap();
    let o = |f: &str| owner.path().join(f).to_str().unwrap().to_owned();
    let plain = std::fs::read(model_path()).unwrap();
    let model_sha = confidant_client::receipt::sha256_hex(&plain);

    // The model owner: KEK, encrypted model, registry, key broker.
    ok(&run(&["kek", "generate", "--out", &o("owner.kek")]));
    ok(&run(&[
        "model",
        "encrypt",
        "--in",
        model_path().to_str().unwrap(),
        "--out",
        &o("m.cmdl"),
        "--key-id",
        "smollm2",
        "--kek",
        &format!("file:{}", o("owner.kek")),
        "--name",
        "SmolLM2-135M-Instruct",
    ]));
    std::fs::write(o("kbs-policy.toml"), "").unwrap();
    ok(&run(&[
        "kbs",
        "model",
        "add",
        "--key-id",
        "smollm2",
        "--wrapped",
        &o("m.cmdl.key"),
        "--policy",
        &o("kbs-policy.toml"),
        "--db",
        &o("kbs.db"),
    ]));
    let (_kbs, kbs_url) = spawn_reading(
        &[
            "kbs",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--db",
            &o("kbs.db"),
            "--kek",
            &format!("file:{}", o("owner.kek")),
            "--insecure-allow-dev-attester",
        ],
        "confidant kbs listening on ",
        &owner.path().join("kbs.log"),
    );

    // The server, in its own directory (cwd, TMPDIR, state) so that every
    // file it writes can be scanned afterwards.
    let srv = tempfile::tempdir().unwrap();
    let sd = |f: &str| srv.path().join(f);
    std::fs::create_dir_all(sd("tmp")).unwrap();
    std::fs::create_dir_all(sd("state")).unwrap();
    // An API key (stored hashed in the server's state directory).
    let api_key = ok(&run(&[
        "apikey",
        "create",
        "--name",
        "tester",
        "--store",
        sd("state/api-keys.json").to_str().unwrap(),
        "--permissions",
        "chat",
    ]))
    .trim()
    .lines()
    .last()
    .unwrap()
    .to_owned();
    let addr = free_addr();
    let log = owner.path().join("serve.log");
    let _server = Proc(
        Command::new(BIN)
            .current_dir(srv.path())
            .env("TMPDIR", sd("tmp"))
            .args(["serve", "--model", &o("m.cmdl"), "--kbs-url", &kbs_url])
            .args(["--attester", "insecure-dev", "--listen", &addr.to_string()])
            .arg("--state-dir")
            .arg(sd("state"))
            .args(["--model-sha256", &model_sha])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let url = format!("https://{addr}");

    // Client policies: the right one, and one pinning another model.
    std::fs::write(
        o("client.toml"),
        format!("[client]\ninsecure_allow_dev_attester = true\nmodel_sha256 = [\"{model_sha}\"]\n"),
    )
    .unwrap();
    std::fs::write(
        o("wrong.toml"),
        format!(
            "[client]\ninsecure_allow_dev_attester = true\nmodel_sha256 = [\"{}\"]\n",
            "00".repeat(32)
        ),
    )
    .unwrap();
    std::fs::write(o("strict.toml"), "").unwrap();
    wait_verified(
        &url,
        Path::new(&o("client.toml")),
        &log,
        Duration::from_secs(240),
    );

    // `confidant verify`: human report, JSON, saved document.
    let human = ok(&run(&["verify", &url, "--policy", &o("client.toml")]));
    assert!(human.contains("verdict:      ACCEPTED"), "{human}");
    assert!(human.contains("binding.tls_key"), "{human}");
    let json = ok(&run(&[
        "verify",
        &url,
        "--policy",
        &o("client.toml"),
        "--json",
        "--save-document",
        &o("doc.json"),
    ]));
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["verdict"], "accepted");
    assert_eq!(report["tee"], "insecure-dev");
    assert_eq!(report["model"]["id"], MODEL_ID);
    assert_eq!(report["model"]["sha256"], model_sha.as_str());
    assert_eq!(report["model"]["key_id"], "smollm2");
    assert_eq!(report["config"]["insecure_plaintext_model"], false);

    // A policy the server does not satisfy: exit 1, the failing rule named.
    let out = run(&["verify", &url, "--policy", &o("wrong.toml"), "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["verdict"], "refused");
    assert!(
        r["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["rule"] == "client.model_sha256" && x["pass"] == false),
        "{r:#}"
    );
    // The strict default policy refuses the dev attester.
    assert_eq!(
        run(&["verify", &url, "--policy", &o("strict.toml")])
            .status
            .code(),
        Some(1)
    );

    // A man in the middle relaying the real document with its own TLS key.
    let mitm = start_mitm(addr);
    let out = run(&[
        "verify",
        &format!("https://{mitm}"),
        "--policy",
        &o("client.toml"),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "MITM accepted");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        r["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["rule"] == "binding.tls_key" && x["pass"] == false),
        "{r:#}"
    );

    // The official OpenAI SDK through `confidant proxy`.
    let paddr = free_addr();
    let (_proxy, purl) = spawn_reading(
        &[
            "proxy",
            "--upstream",
            &url,
            "--policy",
            &o("client.toml"),
            "--listen",
            &paddr.to_string(),
        ],
        "confidant proxy listening on ",
        &owner.path().join("proxy.log"),
    );
    let env = [
        ("CONFIDANT_BASE_URL", format!("{purl}/v1")),
        ("CONFIDANT_MODEL_ID", MODEL_ID.to_owned()),
        ("CONFIDANT_API_KEY", api_key.clone()),
    ];
    python("attested_proxy.py", &["ok"], &env);
    // Through a proxy whose policy the server fails, and through one whose
    // upstream is the man in the middle: 502, nothing forwarded.
    for (upstream, policy, name) in [
        (url.clone(), o("wrong.toml"), "wrong-policy"),
        (format!("https://{mitm}"), o("client.toml"), "mitm"),
    ] {
        let a = free_addr();
        let (_p, purl) = spawn_reading(
            &[
                "proxy",
                "--upstream",
                &upstream,
                "--policy",
                &policy,
                "--listen",
                &a.to_string(),
            ],
            "confidant proxy listening on ",
            &owner.path().join(format!("proxy-{name}.log")),
        );
        let env = [
            ("CONFIDANT_BASE_URL", format!("{purl}/v1")),
            ("CONFIDANT_MODEL_ID", MODEL_ID.to_owned()),
            ("CONFIDANT_API_KEY", api_key.clone()),
        ];
        python("attested_proxy.py", &["refused"], &env);
    }

    // The Rust SDK: verified connection, receipt checked on every answer.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let policy = ClientPolicy::load(Path::new(&o("client.toml"))).unwrap();
    let request = serde_json::json!({
        "model": MODEL_ID,
        "messages": [{"role": "user", "content": "Which city is the capital of France?"}],
        "temperature": 0,
        "max_tokens": 16,
    });
    let done = rt.block_on(async {
        let c = AttestedClient::connect(&url, policy.clone(), Some(api_key.clone()))
            .await
            .expect("verified");
        assert!(c.report().await.unwrap().accepted());
        c.chat_completion(&request).await.expect("receipt verifies")
    });
    assert!(done.text.contains("Paris"), "{}", done.text);
    let doc = rt.block_on(async {
        AttestedClient::connect(&url, policy.clone(), None)
            .await
            .unwrap()
            .document()
            .await
            .unwrap()
    });
    let body = serde_json::to_vec(&request).unwrap();
    done.receipt.verify(&doc, &body, &done.text).unwrap();
    let tampered = format!("{} (edited)", done.text);
    assert!(matches!(
        done.receipt.verify(&doc, &body, &tampered),
        Err(Error::Receipt(_))
    ));
    let mut forged = done.receipt.clone();
    forged.body.completion_tokens += 1;
    assert!(forged.verify(&doc, &body, &done.text).is_err());
    // The SDK refuses the man in the middle before sending anything.
    let mitm_err = rt
        .block_on(AttestedClient::connect(
            &format!("https://{mitm}"),
            policy,
            None,
        ))
        .unwrap_err();
    assert!(matches!(mitm_err, Error::Refused { .. }), "{mitm_err}");

    // `confidant receipt verify` against the saved document.
    std::fs::write(o("req.json"), &body).unwrap();
    let mut resp = done.json.clone();
    resp["receipt"] = serde_json::to_value(&done.receipt).unwrap();
    std::fs::write(o("resp.json"), serde_json::to_vec(&resp).unwrap()).unwrap();
    let out = ok(&run(&[
        "receipt",
        "verify",
        "--document",
        &o("doc.json"),
        "--request",
        &o("req.json"),
        "--response",
        &o("resp.json"),
    ]));
    assert!(out.contains("VALID"), "{out}");
    resp["choices"][0]["message"]["content"] = serde_json::json!(tampered);
    std::fs::write(o("resp.json"), serde_json::to_vec(&resp).unwrap()).unwrap();
    let out = run(&[
        "receipt",
        "verify",
        "--document",
        &o("doc.json"),
        "--request",
        &o("req.json"),
        "--response",
        &o("resp.json"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    // Header form.
    std::fs::write(o("receipt.b64"), done.receipt.to_header_value()).unwrap();
    std::fs::write(o("text.txt"), &done.text).unwrap();
    ok(&run(&[
        "receipt",
        "verify",
        "--document",
        &o("doc.json"),
        "--request",
        &o("req.json"),
        "--receipt",
        &o("receipt.b64"),
        "--response-text",
        &o("text.txt"),
    ]));
    assert_eq!(
        Receipt::from_header_value(&done.receipt.to_header_value()).unwrap(),
        done.receipt
    );

    // Nothing secret on disk: every file in the server's cwd, TMPDIR and
    // state directory, and every regular file it holds open, is free of
    // plaintext model bytes and private keys.
    let pid = _server.0.id();
    let needles = secrets_to_look_for(&plain);
    let found = scan(srv.path(), &needles, &[]);
    assert!(found.is_empty(), "{found:?}");
    let mut open_files = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        if let Ok(t) = std::fs::read_link(fd.path())
            && t.is_file()
        {
            open_files.push(t);
        }
    }
    for f in &open_files {
        let p = f.to_str().unwrap();
        // The container, its log, or a file in its directories (scanned above:
        // the audit log).
        assert!(
            p == o("m.cmdl") || p == log.to_str().unwrap() || f.starts_with(srv.path()),
            "the server holds an unexpected file open: {p}"
        );
    }
    // The process is not dumpable into a core file with the weights: the
    // locked buffer is excluded from core dumps (MADV_DONTDUMP) and locked.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let locked_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    assert!(
        locked_kb * 1024 >= plain.len() as u64,
        "locked {locked_kb} kB < model {} bytes",
        plain.len()
    );
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    let _ = writeln!(f, "test done");
}
