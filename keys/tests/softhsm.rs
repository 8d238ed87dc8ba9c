//! PKCS#11 KEK against a real SoftHSM2 token, initialised by this test in a
//! temporary directory (in a child process: see `common/softhsm.rs`).

#[path = "common/softhsm.rs"]
mod softhsm;

use confidant_keys::{
    DataKey, Decryptor, EncryptParams, Error, Header, Kek, KekKind, KekRef, KeyId, ModelFormat,
    Pkcs11Kek, Pkcs11Uri, PlaintextInfo, WrappedKey, encrypt, unwrap_for_container,
};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use softhsm::MODULE;

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
    if softhsm::is_child() {
        return child();
    }
    softhsm::run_as_child(
        "softhsm2_kek_wraps_and_unwraps_inside_the_token",
        TOKEN,
        PIN,
    );
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
    let session = softhsm::user_session(TOKEN, PIN);
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
    softhsm::assert_value_unreadable(&session, found[0], "KEK");

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
