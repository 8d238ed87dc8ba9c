//! PKCS#11 KEK against a real SoftHSM2 token, initialised by this test in a
//! temporary directory.
//!
//! SoftHSM2 reads its configuration from `$SOFTHSM2_CONF` when the module is
//! initialised. Changing the environment of a running multi-threaded test
//! process is unsound, so the test re-runs itself as a child process with
//! the variable set (`CONFIDANT_SOFTHSM_CHILD=1`); the child does the work.

use std::path::Path;
use std::process::Command;

use confidant_keys::{
    DataKey, Decryptor, EncryptParams, Error, Header, Kek, KekKind, KekRef, KeyId, ModelFormat,
    Pkcs11Kek, Pkcs11Uri, PlaintextInfo, WrappedKey, encrypt, unwrap_for_container,
};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const TOKEN: &str = "confidant-test";
const PIN: &str = "1234";

fn uri(object: &str, pin: bool) -> String {
    let pin = if pin {
        format!("&pin-value={PIN}")
    } else {
        String::new()
    };
    format!("pkcs11:token={TOKEN};object={object}?module-path={MODULE}{pin}")
}

#[test]
fn softhsm2_kek_wraps_and_unwraps_inside_the_token() {
    if std::env::var_os("CONFIDANT_SOFTHSM_CHILD").is_some() {
        return child();
    }
    if !Path::new(MODULE).exists() {
        eprintln!(
            "SKIPPED softhsm2 test: {MODULE} is missing (apt-get install softhsm2; scripts/deps/keys.sh)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tokens")).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nslots.removable = false\nlog.level = ERROR\n",
            dir.path().join("tokens").display()
        ),
    )
    .unwrap();
    let init = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            TOKEN,
            "--pin",
            PIN,
            "--so-pin",
            "5678",
        ])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .expect("softhsm2-util runs");
    assert!(
        init.status.success(),
        "init-token: {}",
        String::from_utf8_lossy(&init.stderr)
    );

    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "softhsm2_kek_wraps_and_unwraps_inside_the_token",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SOFTHSM2_CONF", &conf)
        .env("CONFIDANT_SOFTHSM_CHILD", "1")
        .env("CONFIDANT_PKCS11_PIN", PIN)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(text.contains("1 passed"), "child ran no test:\n{text}");
}

fn child() {
    let u: Pkcs11Uri = uri("model-kek", true).parse().unwrap();
    let kek = Pkcs11Kek::generate(&u).unwrap();
    let attrs = kek.attributes().unwrap();
    assert!(attrs.sensitive && attrs.always_sensitive);
    assert!(!attrs.extractable);
    assert!(attrs.never_extractable);
    assert_eq!(kek.kek_id().len(), 16);
    assert!(
        matches!(
            Pkcs11Kek::generate(&u).map(|_| ()),
            Err(Error::Pkcs11Object { .. })
        ),
        "no second KEK with that label"
    );

    independent_attribute_check();

    // Encrypt a model and wrap its key in the token.
    let key = DataKey::generate().unwrap();
    let id = KeyId::new("hsm-model").unwrap();
    let plain = b"safetensors? no, GGUF".repeat(5000);
    let mut container = Vec::new();
    encrypt(
        &key,
        &EncryptParams::new(id.clone(), ModelFormat::Gguf),
        &PlaintextInfo::of(&plain),
        &plain[..],
        &mut container,
    )
    .unwrap();
    let wrapped = kek.wrap(&id, &key).unwrap();
    assert_eq!(wrapped.kind(), KekKind::Pkcs11);
    drop(kek);

    // Unwrap through a fresh handle, PIN from $CONFIDANT_PKCS11_PIN.
    let kek_ref: KekRef = uri("model-kek", false).parse().unwrap();
    let kek = kek_ref.open().unwrap();
    let wrapped = WrappedKey::parse(&wrapped.to_bytes()).unwrap();
    let header = Header::parse(&container).unwrap();
    let unwrapped = unwrap_for_container(kek.as_ref(), &wrapped, &header).unwrap();
    let d = Decryptor::new(header, &unwrapped).unwrap();
    let mut out = vec![0u8; plain.len()];
    d.decrypt_into(
        &container[..],
        &mut out,
        std::num::NonZeroUsize::new(2).unwrap(),
    )
    .unwrap();
    assert_eq!(out, plain);

    // Tampered wrapping: the token's GCM check fails.
    let mut t = wrapped.to_bytes();
    *t.last_mut().unwrap() ^= 1;
    let got = kek.unwrap(&WrappedKey::parse(&t).unwrap()).map(|_| ());
    assert!(matches!(got, Err(Error::WrappedKeyAuth)), "{got:?}");

    // With type= and id= the same object is found; an unknown object or an
    // extractable key is refused.
    let id_pct: String = kek.kek_id().iter().map(|b| format!("%{b:02x}")).collect();
    let typed: Pkcs11Uri = uri("model-kek", true)
        .replace('?', &format!(";type=secret-key;id={id_pct}?"))
        .parse()
        .unwrap();
    assert!(Pkcs11Kek::open(&typed).is_ok());
    let missing: Pkcs11Uri = uri("no-such-kek", true).parse().unwrap();
    assert!(matches!(
        Pkcs11Kek::open(&missing).map(|_| ()),
        Err(Error::Pkcs11Object { .. })
    ));
    let weak: Pkcs11Uri = uri("weak-kek", true).parse().unwrap();
    let got = Pkcs11Kek::open(&weak).map(|_| ());
    assert!(
        matches!(got, Err(Error::Pkcs11Object { ref reason }) if reason.contains("extractable")),
        "{got:?}"
    );
    println!("softhsm2 child: all checks passed");
}

/// Reads the KEK's attributes through a separate cryptoki session, and
/// creates an extractable AES key (`weak-kek`) that `open` must refuse.
fn independent_attribute_check() {
    let ctx = Pkcs11::new(MODULE).unwrap();
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => panic!("C_Initialize: {e}"),
    }
    let slot = ctx
        .get_slots_with_initialized_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label().trim_end() == TOKEN)
        .unwrap();
    let session = ctx.open_rw_session(slot).unwrap();
    match session.login(UserType::User, Some(&AuthPin::from(PIN))) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("C_Login: {e}"),
    }
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(b"model-kek".to_vec()),
        ])
        .unwrap();
    assert_eq!(found.len(), 1);
    let attrs = session
        .get_attributes(
            found[0],
            &[
                AttributeType::Extractable,
                AttributeType::NeverExtractable,
                AttributeType::Token,
            ],
        )
        .unwrap();
    assert!(attrs.contains(&Attribute::Extractable(false)), "{attrs:?}");
    assert!(
        attrs.contains(&Attribute::NeverExtractable(true)),
        "{attrs:?}"
    );
    assert!(attrs.contains(&Attribute::Token(true)), "{attrs:?}");
    // The value cannot be read out.
    let value = session
        .get_attributes(found[0], &[AttributeType::Value])
        .unwrap();
    assert!(
        !value
            .iter()
            .any(|a| matches!(a, Attribute::Value(v) if !v.is_empty())),
        "KEK value readable"
    );

    session
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::ValueLen(32u64.into()),
                Attribute::Token(true),
                Attribute::Sensitive(false),
                Attribute::Extractable(true),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
                Attribute::Label(b"weak-kek".to_vec()),
            ],
        )
        .unwrap();
}
