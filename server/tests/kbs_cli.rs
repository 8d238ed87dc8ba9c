//! `confidant kbs` end to end through the built binary: the dev walkthrough
//! of keys/KBS.md (kek generate → model encrypt → kbs model add → kbs
//! serve), a key fetched with the start-up client, `kbs log`, and the
//! refusals of the command line itself.

use std::io::{BufRead, BufReader};
use std::num::NonZeroUsize;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use confidant_attest::attester::InsecureDev;
use confidant_keys::kbs::client::{ClientConfig, fetch_data_key};
use confidant_keys::{DataKey, Decryptor, Header, HpkeKeyPair, KeyId};

const BIN: &str = env!("CARGO_BIN_EXE_confidant");

fn run(args: &[&str]) -> Output {
    run_env(args, &[])
}

fn run_env(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args).env_remove("CONFIDANT_KBS_DB");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("confidant runs")
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

fn failed(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "unexpected success: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A `kbs serve` child, killed (by its own pid) on drop.
struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(db: &Path, kek: &str, env: &[(&str, &Path)]) -> (Serving, String) {
    let mut cmd = Command::new(BIN);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .args(["kbs", "serve", "--listen", "127.0.0.1:0", "--kek", kek])
        .arg("--db")
        .arg(db)
        .arg("--insecure-allow-dev-attester")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kbs serve starts");
    let stdout = child.stdout.take().unwrap();
    let child = Serving(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("confidant kbs listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (child, url)
}

#[test]
fn kbs_cli_dev_walkthrough() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |n: &str| d.join(n).to_str().unwrap().to_owned();
    let mut plain = b"GGUF\x03\0\0\0".to_vec();
    plain.extend((0..150_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8));
    std::fs::write(d.join("model.gguf"), &plain).unwrap();
    std::fs::write(d.join("policy.toml"), "# strict default policy\n").unwrap();
    let kek = format!("file:{}", p("owner.kek"));

    ok(&run(&["kek", "generate", "--out", &p("owner.kek")]));
    ok(&run(&[
        "model",
        "encrypt",
        "--in",
        &p("model.gguf"),
        "--out",
        &p("model.cmdl"),
        "--key-id",
        "demo",
        "--kek",
        &kek,
    ]));
    let out = ok(&run(&[
        "kbs",
        "model",
        "add",
        "--key-id",
        "demo",
        "--wrapped",
        &p("model.cmdl.key"),
        "--policy",
        &p("policy.toml"),
        "--db",
        &p("kbs.db"),
    ]));
    assert!(out.contains("registered demo"), "{out}");
    // Registration refusals: twice without --replace, a key id that is not
    // the wrapped key's, a policy that tries to enable insecure-dev.
    let again = [
        "kbs",
        "model",
        "add",
        "--key-id",
        "demo",
        "--wrapped",
        &p("model.cmdl.key"),
        "--policy",
        &p("policy.toml"),
        "--db",
        &p("kbs.db"),
    ];
    assert!(failed(&run(&again)).contains("already registered"));
    let mut replace = again.to_vec();
    replace.push("--replace");
    ok(&run(&replace));
    let e = failed(&run(&[
        "kbs",
        "model",
        "add",
        "--key-id",
        "other",
        "--wrapped",
        &p("model.cmdl.key"),
        "--policy",
        &p("policy.toml"),
        "--db",
        &p("kbs.db"),
    ]));
    assert!(e.contains("not \"other\""), "{e}");
    std::fs::write(d.join("bad.toml"), "tees = [\"insecure-dev\"]\n").unwrap();
    let e = failed(&run(&[
        "kbs",
        "model",
        "add",
        "--key-id",
        "demo",
        "--wrapped",
        &p("model.cmdl.key"),
        "--policy",
        &p("bad.toml"),
        "--db",
        &p("kbs.db"),
        "--replace",
    ]));
    assert!(e.contains("insecure-dev"), "{e}");
    assert_eq!(
        ok(&run(&["kbs", "model", "list", "--db", &p("kbs.db")])),
        "demo\n"
    );

    // Plain HTTP off loopback is refused.
    let e = failed(&run(&[
        "kbs",
        "serve",
        "--listen",
        "0.0.0.0:0",
        "--db",
        &p("kbs.db"),
        "--kek",
        &kek,
    ]));
    assert!(e.contains("loopback"), "{e}");

    let (server, url) = serve(&d.join("kbs.db"), &kek, &[]);
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let hpke = HpkeKeyPair::generate();
    let key = fetch_data_key(
        &ClientConfig::new(&url),
        &KeyId::new("demo").unwrap(),
        &mut InsecureDev::new(),
        b"server TLS SPKI",
        &hpke,
    )
    .expect("key released");
    let container = std::fs::read(d.join("model.cmdl")).unwrap();
    let dec = Decryptor::new(Header::parse(&container).unwrap(), &key).unwrap();
    let mut out = vec![0u8; plain.len()];
    dec.decrypt_into(&container[..], &mut out, NonZeroUsize::MIN)
        .unwrap();
    assert!(out == plain);
    // A model the registry does not hold.
    let refused = fetch_data_key(
        &ClientConfig::new(&url),
        &KeyId::new("absent").unwrap(),
        &mut InsecureDev::new(),
        b"server TLS SPKI",
        &hpke,
    );
    assert!(
        matches!(&refused, Err(confidant_keys::Error::KbsRefused { code, .. }) if code == "unknown_resource")
    );
    drop(server);

    let log: serde_json::Value =
        serde_json::from_str(&ok(&run(&["kbs", "log", "--json", "--db", &p("kbs.db")]))).unwrap();
    let rows = log.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{log:#}");
    assert_eq!(rows[0]["reason"], "unknown_resource");
    assert_eq!(rows[0]["outcome"], "refusal");
    assert_eq!(rows[1]["reason"], "released");
    assert_eq!(rows[1]["key_id"], "demo");
    assert_eq!(rows[1]["tee"], "insecure-dev");
    let text = ok(&run(&["kbs", "log", "--db", &p("kbs.db"), "--limit", "1"]));
    assert_eq!(text.lines().count(), 1);
    assert!(
        text.contains("refusal") && text.contains("unknown_resource"),
        "{text}"
    );
}

fn decrypts(container: &Path, key: &DataKey) -> Vec<u8> {
    let c = std::fs::read(container).unwrap();
    let dec = Decryptor::new(Header::parse(&c).unwrap(), key).unwrap();
    let mut out = vec![0u8; dec.header().plaintext_len() as usize];
    dec.decrypt_into(&c[..], &mut out, NonZeroUsize::MIN)
        .unwrap();
    out
}

/// The broker releasing a key wrapped by a non-extractable KEK inside a
/// SoftHSM2 token: unwrapping happens in the token, at each release.
#[test]
fn kbs_cli_softhsm2_kek_release() {
    const SOFTHSM: &str = "/usr/lib/softhsm/libsofthsm2.so";
    if !Path::new(SOFTHSM).exists() {
        eprintln!("SKIPPED kbs_cli_softhsm2_kek_release: {SOFTHSM} missing (scripts/deps/keys.sh)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |n: &str| d.join(n).to_str().unwrap().to_owned();
    std::fs::create_dir(d.join("tokens")).unwrap();
    let conf = d.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nslots.removable = false\nlog.level = ERROR\n",
            d.join("tokens").display()
        ),
    )
    .unwrap();
    let init = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            "kbs",
            "--pin",
            "2468",
            "--so-pin",
            "1357",
        ])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let env: [(&str, &Path); 2] = [
        ("SOFTHSM2_CONF", &conf),
        ("CONFIDANT_PKCS11_PIN", Path::new("2468")),
    ];
    let uri = format!("pkcs11:token=kbs;object=owner-kek?module-path={SOFTHSM}");
    let said = ok(&run_env(&["kek", "generate", "--pkcs11", &uri], &env));
    assert!(said.contains("extractable=false"), "{said}");

    let mut plain = b"GGUF\x03\0\0\0".to_vec();
    plain.extend((0..70_000u32).map(|i| (i.wrapping_mul(40_503) >> 7) as u8));
    std::fs::write(d.join("m.gguf"), &plain).unwrap();
    std::fs::write(d.join("policy.toml"), "").unwrap();
    ok(&run_env(
        &[
            "model",
            "encrypt",
            "--in",
            &p("m.gguf"),
            "--out",
            &p("m.cmdl"),
            "--key-id",
            "hsm-model",
            "--kek",
            &uri,
        ],
        &env,
    ));
    ok(&run(&[
        "kbs",
        "model",
        "add",
        "--key-id",
        "hsm-model",
        "--wrapped",
        &p("m.cmdl.key"),
        "--policy",
        &p("policy.toml"),
        "--db",
        &p("kbs.db"),
    ]));
    let (server, url) = serve(&d.join("kbs.db"), &uri, &env);
    let key = fetch_data_key(
        &ClientConfig::new(&url),
        &KeyId::new("hsm-model").unwrap(),
        &mut InsecureDev::new(),
        b"server TLS SPKI",
        &HpkeKeyPair::generate(),
    )
    .expect("key released through the token");
    assert!(decrypts(&d.join("m.cmdl"), &key) == plain);
    drop(server);
    let log = ok(&run(&["kbs", "log", "--db", &p("kbs.db")]));
    assert!(
        log.contains("RELEASE") && log.contains("hsm-model"),
        "{log}"
    );
}
