//! The key broker over HTTP with the insecure dev attester (which runs
//! anywhere) under an explicit dev policy: the default model's round trip;
//! each refusal with its code, in the log with its reason, followed by a
//! request that still succeeds; the attest rate limit; TLS with a private CA.
//! Time is a `ManualClock`, so expiries are exact and instant.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use confidant_attest::Hex;
use confidant_attest::attester::InsecureDev;
use confidant_keys::kbs::client::{ClientConfig, KbsClient, attest_request, fetch_data_key};
use confidant_keys::kbs::{
    Kbs, KbsConfig, ManualClock, Outcome, RateLimit, Store, SystemClock, Tee,
};
use confidant_keys::{Error, FileKek, HpkeKeyPair, KeyId};

const TLS_SPKI: &[u8] = b"\x30\x2a\x30\x05\x06\x03\x2b\x65\x70\x03\x21\x00 server TLS key";

struct Owner {
    dir: tempfile::TempDir,
    store: Arc<Store>,
}

impl Owner {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        FileKek::generate(&dir.path().join("owner.kek")).unwrap();
        let store = Arc::new(Store::open(&dir.path().join("kbs.db")).unwrap());
        Owner { dir, store }
    }
    fn kek(&self) -> FileKek {
        FileKek::load(&self.dir.path().join("owner.kek")).unwrap()
    }
    /// Encrypts and registers `plain` as `key_id` under the default policy.
    fn register(&self, key_id: &str, plain: &[u8]) -> common::Model {
        let m = common::encrypt_model(self.dir.path(), &self.kek(), key_id, plain);
        self.store
            .add_model(&m.wrapped, "", false, common::now())
            .unwrap();
        m
    }
    fn broker(&self, config: KbsConfig, clock: Arc<dyn confidant_keys::kbs::Clock>) -> Arc<Kbs> {
        Arc::new(Kbs::new(
            self.store.clone(),
            Box::new(self.kek()),
            config,
            clock,
        ))
    }
}

fn dev_config() -> KbsConfig {
    KbsConfig {
        insecure_allow_dev_attester: true,
        ..KbsConfig::default()
    }
}

fn code_of<T>(r: Result<T, Error>) -> (String, u16) {
    match r {
        Err(Error::KbsRefused { code, status, .. }) => (code, status),
        Err(e) => panic!("expected a refusal, got {e}"),
        Ok(_) => panic!("expected a refusal, got an answer"),
    }
}

fn key_id(s: &str) -> KeyId {
    KeyId::new(s).unwrap()
}

#[test]
fn kbs_insecure_dev_round_trip_default_model() {
    let owner = Owner::new();
    let plain = common::default_or_small_model("kbs_insecure_dev_round_trip");
    let model = owner.register("smollm2", &plain);
    drop(plain);
    let server = common::start(owner.broker(dev_config(), Arc::new(SystemClock)), None);
    let hpke = HpkeKeyPair::generate();
    let key = fetch_data_key(
        &ClientConfig::new(&server.url),
        &key_id("smollm2"),
        &mut InsecureDev::new(),
        TLS_SPKI,
        &hpke,
    )
    .expect("key released under the explicit dev policy");
    assert_eq!(common::decrypt_sha256(&model.container, &key), model.sha256);
    let log = owner.store.recent_events(1).unwrap();
    assert_eq!(log[0].outcome, Outcome::Release);
    assert_eq!(log[0].tee.as_deref(), Some("insecure-dev"));
    assert_eq!(log[0].key_id.as_deref(), Some("smollm2"));
}

#[test]
fn kbs_refusals_are_coded_logged_and_a_later_request_succeeds() {
    let owner = Owner::new();
    let model = owner.register("m1", &common::small_model());
    owner.register("m2", &common::small_model());
    let clock = Arc::new(ManualClock::starting_now());
    let config = dev_config();
    let (nonce_ttl, session_ttl) = (config.nonce_ttl, config.session_ttl);
    let dev = common::start(owner.broker(config, clock.clone()), None);
    // Same registry, the default handling of policies: no dev attester.
    let strict = common::start(owner.broker(KbsConfig::default(), clock.clone()), None);
    let c = KbsClient::new(&ClientConfig::new(&dev.url)).unwrap();
    let hpke = HpkeKeyPair::generate();
    let pk = hpke.public_key();
    let dev_req = |ch| attest_request(ch, &mut InsecureDev::new(), TLS_SPKI, &pk).unwrap();
    let mut expected = Vec::new();

    // Unknown model.
    let (code, status) = code_of(c.auth(Tee::InsecureDev, &key_id("nope")));
    assert_eq!((code.as_str(), status), ("unknown_resource", 404));
    expected.push("unknown_resource");

    // Replayed nonce, on the same session: the challenge is single-use.
    let a = c.auth(Tee::InsecureDev, &key_id("m1")).unwrap();
    let req_a = dev_req(&a);
    c.attest(&a, &req_a).expect("first use of the nonce");
    let (code, status) = code_of(c.attest(&a, &req_a));
    assert_eq!((code.as_str(), status), ("nonce_replayed", 403));
    // ...and the same request replayed on a new session.
    let b = c.auth(Tee::InsecureDev, &key_id("m1")).unwrap();
    assert_eq!(code_of(c.attest(&b, &req_a)).0, "nonce_replayed");
    expected.push("nonce_replayed");

    // Evidence bound to a different HPKE key than the one presented.
    let d = c.auth(Tee::InsecureDev, &key_id("m1")).unwrap();
    let mut req = dev_req(&d);
    req.hpke_public_key = Hex(HpkeKeyPair::generate().public_key().to_vec());
    assert_eq!(code_of(c.attest(&d, &req)).0, "binding_mismatch");
    // ...and to a different TLS key.
    let e = c.auth(Tee::InsecureDev, &key_id("m1")).unwrap();
    let mut req = dev_req(&e);
    req.tls_spki_der = Hex(b"another TLS key".to_vec());
    assert_eq!(code_of(c.attest(&e, &req)).0, "binding_mismatch");
    expected.push("binding_mismatch");

    // The nonce outlives its time to live before attest.
    let f = c.auth(Tee::InsecureDev, &key_id("m1")).unwrap();
    let req = dev_req(&f);
    clock.advance(nonce_ttl + Duration::from_secs(1));
    assert_eq!(code_of(c.attest(&f, &req)).0, "nonce_expired");
    expected.push("nonce_expired");

    // The session expires between attest and resource.
    let g = c.auth(Tee::InsecureDev, &key_id("m1")).unwrap();
    c.attest(&g, &dev_req(&g)).unwrap();
    clock.advance(session_ttl);
    let (code, status) = code_of(c.resource(&g, &key_id("m1")));
    assert_eq!((code.as_str(), status), ("session_expired", 401));
    expected.push("session_expired");

    // Resource before attest; resource of another model than the session's.
    let h = c.auth(Tee::InsecureDev, &key_id("m1")).unwrap();
    assert_eq!(code_of(c.resource(&h, &key_id("m1"))).0, "not_attested");
    c.attest(&h, &dev_req(&h)).unwrap();
    assert_eq!(
        code_of(c.resource(&h, &key_id("m2"))).0,
        "resource_not_authorized"
    );
    expected.extend(["not_attested", "resource_not_authorized"]);

    // Evidence of another TEE than declared.
    let i = c.auth(Tee::Snp, &key_id("m1")).unwrap();
    assert_eq!(code_of(c.attest(&i, &dev_req(&i))).0, "tee_mismatch");
    expected.push("tee_mismatch");

    // Insecure dev evidence under the default policy handling.
    let cfg_strict = ClientConfig::new(&strict.url);
    let code = code_of(fetch_data_key(
        &cfg_strict,
        &key_id("m1"),
        &mut InsecureDev::new(),
        TLS_SPKI,
        &hpke,
    ));
    assert_eq!(code, ("insecure_attester".into(), 403));
    expected.push("insecure_attester");

    // After all that, a valid request still gets the key.
    let key = fetch_data_key(
        &ClientConfig::new(&dev.url),
        &key_id("m1"),
        &mut InsecureDev::new(),
        TLS_SPKI,
        &hpke,
    )
    .expect("a valid request succeeds");
    assert_eq!(common::decrypt_sha256(&model.container, &key), model.sha256);
    // A session releases its key once.
    let j = c.auth(Tee::InsecureDev, &key_id("m1")).unwrap();
    c.attest(&j, &dev_req(&j)).unwrap();
    c.resource(&j, &key_id("m1")).unwrap();
    assert_eq!(code_of(c.resource(&j, &key_id("m1"))).0, "unknown_session");

    // Each refusal is in the log with its reason, source and detail.
    let log = owner.store.recent_events(100).unwrap();
    for code in expected {
        let row = log
            .iter()
            .find(|e| e.reason == code)
            .unwrap_or_else(|| panic!("{code} not logged: {log:#?}"));
        assert_eq!(row.outcome, Outcome::Refusal, "{row:?}");
        assert_eq!(row.source.as_deref(), Some("127.0.0.1"));
        assert!(!row.detail.as_deref().unwrap_or("").is_empty(), "{row:?}");
        if code != "unknown_resource" {
            assert!(row.key_id.is_some(), "{row:?}");
        }
    }
    let insecure = log
        .iter()
        .find(|e| e.reason == "insecure_attester")
        .unwrap();
    assert!(
        insecure
            .detail
            .as_deref()
            .unwrap()
            .contains("insecure-dev not accepted"),
        "{insecure:?}"
    );
    assert_eq!(
        log.iter().filter(|e| e.outcome == Outcome::Release).count(),
        2
    );
}

#[test]
fn kbs_attest_rate_limit_answers_429() {
    let owner = Owner::new();
    owner.register("m1", &common::small_model());
    let clock = Arc::new(ManualClock::starting_now());
    let server = common::start(
        owner.broker(
            KbsConfig {
                attest_rate: RateLimit::new(3, 0.5),
                ..dev_config()
            },
            clock.clone(),
        ),
        None,
    );
    let c = KbsClient::new(&ClientConfig::new(&server.url)).unwrap();
    let pk = HpkeKeyPair::generate().public_key();
    let attest = || {
        let ch = c.auth(Tee::InsecureDev, &key_id("m1")).unwrap();
        let req = attest_request(&ch, &mut InsecureDev::new(), TLS_SPKI, &pk).unwrap();
        c.attest(&ch, &req)
    };
    for _ in 0..3 {
        attest().expect("within the burst");
    }
    match attest() {
        Err(Error::KbsRefused {
            status,
            code,
            retry_after,
            ..
        }) => {
            assert_eq!(status, 429);
            assert_eq!(code, "rate_limited");
            assert_eq!(retry_after, Some(2));
        }
        other => panic!("expected 429, got {other:?}"),
    }
    clock.advance(Duration::from_secs(2));
    attest().expect("one token refilled after 2 s");
    assert!(attest().is_err());
}

/// A private CA and a server certificate it issued for 127.0.0.1 and
/// localhost, made by openssl: (CA PEM, chain PEM, key PEM).
fn private_ca(dir: &std::path::Path) -> Option<(Vec<u8>, Vec<u8>, Vec<u8>)> {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    std::fs::write(
        dir.join("leaf.ext"),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    let steps: [Vec<&str>; 3] = [
        [
            &["req", "-x509"][..],
            &ec,
            &["-days", "2", "-subj", "/CN=test KBS CA"],
        ]
        .concat()
        .into_iter()
        .chain(["-keyout", "ca.key", "-out", "ca.crt"])
        .collect(),
        [&["req"][..], &ec, &["-subj", "/CN=kbs"]]
            .concat()
            .into_iter()
            .chain(["-keyout", "kbs.key", "-out", "kbs.csr"])
            .collect(),
        vec![
            "x509",
            "-req",
            "-in",
            "kbs.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
            "-out",
            "kbs.crt",
        ],
    ];
    for args in steps {
        let ok = Command::new("openssl")
            .args(&args)
            .current_dir(dir)
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            eprintln!("\n!!!! SKIPPED: openssl could not make test certificates !!!!\n");
            return None;
        }
    }
    let read = |n: &str| std::fs::read(dir.join(n)).unwrap();
    Some((read("ca.crt"), read("kbs.crt"), read("kbs.key")))
}

#[test]
fn kbs_over_tls_with_a_private_ca() {
    let owner = Owner::new();
    let model = owner.register("m1", &common::small_model());
    let Some((ca, cert, key)) = private_ca(owner.dir.path()) else {
        return;
    };
    let tls = confidant_keys::kbs::server::tls_config(&cert, &key).unwrap();
    let server = common::start(owner.broker(dev_config(), Arc::new(SystemClock)), Some(tls));
    assert!(server.url.starts_with("https://"));
    let hpke = HpkeKeyPair::generate();

    // Without the CA the broker's certificate is not trusted.
    let untrusted = fetch_data_key(
        &ClientConfig::new(&server.url),
        &key_id("m1"),
        &mut InsecureDev::new(),
        TLS_SPKI,
        &hpke,
    );
    match untrusted {
        Err(Error::KbsTransport { reason, .. }) => {
            assert!(reason.contains("certificate"), "{reason}")
        }
        Err(e) => panic!("expected a TLS failure, got {e}"),
        Ok(_) => panic!("an untrusted broker was used"),
    }

    let mut cfg = ClientConfig::new(&server.url);
    cfg.ca_certs_pem = Some(ca);
    let key = fetch_data_key(
        &cfg,
        &key_id("m1"),
        &mut InsecureDev::new(),
        TLS_SPKI,
        &hpke,
    )
    .expect("key over TLS");
    assert_eq!(common::decrypt_sha256(&model.container, &key), model.sha256);
}

/// Refusal bodies are `{"error": code}` and nothing more, whatever the
/// input; oversized bodies are cut off at the bound.
#[test]
fn kbs_refusal_bodies_carry_only_the_code() {
    let owner = Owner::new();
    owner.register("m1", &common::small_model());
    let server = common::start(owner.broker(dev_config(), Arc::new(SystemClock)), None);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .build()
        .into();
    let body_of = |mut r: ureq::http::Response<ureq::Body>| {
        let status = r.status().as_u16();
        (status, r.body_mut().read_to_string().unwrap())
    };
    let post = |path: &str, body: &[u8]| {
        body_of(
            agent
                .post(format!("{}{path}", server.url))
                .content_type("application/json")
                .send(body)
                .unwrap(),
        )
    };
    assert_eq!(
        post("/kbs/v1/auth", b"{not json"),
        (400, r#"{"error":"bad_request"}"#.into())
    );
    assert_eq!(
        post(
            "/kbs/v1/auth",
            br#"{"version":"0.1.0","tee":"tpm","key_id":"m1","extra":1}"#
        ),
        (400, r#"{"error":"bad_request"}"#.into())
    );
    assert_eq!(
        post(
            "/kbs/v1/attest",
            &vec![b' '; confidant_keys::kbs::protocol::MAX_REQUEST_LEN + 1]
        ),
        (413, r#"{"error":"payload_too_large"}"#.into())
    );
    assert_eq!(
        post("/kbs/v1/attest", b"{}"),
        (401, r#"{"error":"unknown_session"}"#.into())
    );
    let get = |path: &str| body_of(agent.get(format!("{}{path}", server.url)).call().unwrap());
    assert_eq!(
        get("/kbs/v1/resource/m1"),
        (401, r#"{"error":"unknown_session"}"#.into())
    );
    assert_eq!(
        get("/kbs/v1/resource/bad%20id"),
        (400, r#"{"error":"bad_request"}"#.into())
    );
    let log = owner.store.recent_events(10).unwrap();
    assert_eq!(log.len(), 6, "{log:#?}");
    assert!(log.iter().all(|e| e.outcome == Outcome::Refusal));
}
