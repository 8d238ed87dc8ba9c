//! `confidant kek` / `confidant model` end to end, through the built binary.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_confidant");
const SOFTHSM: &str = "/usr/lib/softhsm/libsofthsm2.so";

fn run(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args);
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

/// A fake GGUF file spanning several 64 KiB chunks.
fn fake_model(dir: &Path) -> (PathBuf, Vec<u8>) {
    let mut bytes = b"GGUF\x03\0\0\0".to_vec();
    bytes.extend((0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    let p = dir.join("model.gguf");
    std::fs::write(&p, &bytes).unwrap();
    (p, bytes)
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".confidant-partial-"))
        .collect()
}

#[test]
fn file_kek_encrypt_inspect_decrypt_and_tamper() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let kek = d.join("owner.kek");
    let kek_s = kek.to_str().unwrap();
    ok(&run(&["kek", "generate", "--out", kek_s], &[]));
    assert_eq!(
        std::fs::metadata(&kek).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let before = std::fs::read(&kek).unwrap();
    failed(&run(&["kek", "generate", "--out", kek_s], &[]));
    assert_eq!(
        std::fs::read(&kek).unwrap(),
        before,
        "kek generate must not overwrite"
    );

    let (model, plain) = fake_model(d);
    let cmdl = d.join("model.cmdl");
    let kek_arg = format!("file:{kek_s}");
    let encrypt = [
        "model",
        "encrypt",
        "--in",
        model.to_str().unwrap(),
        "--out",
        cmdl.to_str().unwrap(),
        "--key-id",
        "smol-1",
        "--kek",
        &kek_arg,
        "--name",
        "Fake model",
        "--license",
        "Apache-2.0",
        "--chunk-size",
        "65536",
    ];
    ok(&run(&encrypt, &[]));
    assert!(d.join("model.cmdl.key").is_file());
    // Never overwrites.
    failed(&run(&encrypt, &[]));

    let text = ok(&run(&["model", "inspect", cmdl.to_str().unwrap()], &[]));
    assert!(
        text.contains("smol-1") && text.contains("gguf") && text.contains("Fake model"),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&ok(&run(
        &["model", "inspect", cmdl.to_str().unwrap(), "--json"],
        &[],
    )))
    .unwrap();
    assert_eq!(json["key_id"], "smol-1");
    assert_eq!(json["format"], "gguf");
    assert_eq!(json["license"], "Apache-2.0");
    assert_eq!(json["plaintext_len"], plain.len() as u64);
    assert_eq!(json["chunk_count"], 5);
    assert_eq!(json["length"], "ok");
    assert_eq!(json["wrapped_key"]["kek_kind"], "file");
    let sha = sha256_hex(&plain);
    assert_eq!(json["plaintext_sha256"], sha.as_str());

    let out = d.join("model.out");
    let dec = |input: &Path, out: &Path| {
        run(
            &[
                "model",
                "decrypt",
                "--in",
                input.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "--kek",
                &kek_arg,
                "--wrapped-key",
                d.join("model.cmdl.key").to_str().unwrap(),
            ],
            &[],
        )
    };
    let said = ok(&dec(&cmdl, &out));
    assert!(said.contains(&sha), "{said}");
    assert_eq!(std::fs::read(&out).unwrap(), plain);

    // Tampered chunk: non-zero exit, a precise reason, no output, no temp file.
    let mut bytes = std::fs::read(&cmdl).unwrap();
    let header_len = usize::from(u16::from_be_bytes([bytes[10], bytes[11]]));
    bytes[header_len + (65536 + 16) + 100] ^= 1;
    let bad = d.join("tampered.cmdl");
    std::fs::write(&bad, &bytes).unwrap();
    let out2 = d.join("tampered.out");
    let err = failed(&dec(&bad, &out2));
    assert!(err.contains("chunk 1 failed authentication"), "{err}");
    assert!(!out2.exists(), "no output after a failed decryption");
    assert!(
        leftovers(d).is_empty(),
        "temp files left: {:?}",
        leftovers(d)
    );

    // Truncated: same.
    let short = d.join("short.cmdl");
    std::fs::write(&short, &std::fs::read(&cmdl).unwrap()[..bytes.len() - 10]).unwrap();
    let err = failed(&dec(&short, &out2));
    assert!(err.contains("truncated"), "{err}");
    assert!(!out2.exists());
    let json: serde_json::Value = serde_json::from_slice(
        &run(
            &["model", "inspect", short.to_str().unwrap(), "--json"],
            &[],
        )
        .stdout,
    )
    .unwrap();
    assert_eq!(json["length"], "truncated");

    // Another KEK: refused before any decryption.
    let other = d.join("other.kek");
    ok(&run(
        &["kek", "generate", "--out", other.to_str().unwrap()],
        &[],
    ));
    let err = failed(&run(
        &[
            "model",
            "decrypt",
            "--in",
            cmdl.to_str().unwrap(),
            "--out",
            out2.to_str().unwrap(),
            "--kek",
            &format!("file:{}", other.display()),
        ],
        &[],
    ));
    assert!(err.contains("wrapped key was made with KEK"), "{err}");
    assert!(!out2.exists());
}

#[test]
fn pkcs11_kek_through_the_cli() {
    if !Path::new(SOFTHSM).exists() {
        eprintln!("SKIPPED pkcs11_kek_through_the_cli: {SOFTHSM} missing (scripts/deps/keys.sh)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("tokens")).unwrap();
    let conf = d.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nslots.removable = false\n",
            d.join("tokens").display()
        ),
    )
    .unwrap();
    let init = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            "cli",
            "--pin",
            "4321",
            "--so-pin",
            "8765",
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
        ("CONFIDANT_PKCS11_PIN", Path::new("4321")),
    ];
    let uri = format!("pkcs11:token=cli;object=owner-kek?module-path={SOFTHSM}");
    let said = ok(&run(&["kek", "generate", "--pkcs11", &uri], &env));
    assert!(said.contains("extractable=false"), "{said}");
    assert!(!said.contains("4321"));

    let (model, plain) = fake_model(d);
    let cmdl = d.join("m.cmdl");
    ok(&run(
        &[
            "model",
            "encrypt",
            "--in",
            model.to_str().unwrap(),
            "--out",
            cmdl.to_str().unwrap(),
            "--key-id",
            "hsm",
            "--kek",
            &uri,
        ],
        &env,
    ));
    let out = d.join("m.out");
    ok(&run(
        &[
            "model",
            "decrypt",
            "--in",
            cmdl.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--kek",
            &uri,
        ],
        &env,
    ));
    assert_eq!(std::fs::read(&out).unwrap(), plain);
}

fn sha256_hex(b: &[u8]) -> String {
    // The CLI's digest is checked against an independent implementation.
    let out = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn();
    let mut child = out.expect("sha256sum available");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b).unwrap();
    let o = child.wait_with_output().unwrap();
    String::from_utf8(o.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}
