//! The file KEK and the wrapped-key file.

use std::os::unix::fs::PermissionsExt;

use confidant_keys::{
    DataKey, Decryptor, EncryptParams, Error, FileKek, Header, Kek, KekKind, KeyId, ModelFormat,
    PlaintextInfo, WrappedKey, encrypt, unwrap_for_container,
};

#[test]
fn generate_writes_32_bytes_mode_0600_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("kek");
    FileKek::generate(&p).unwrap();
    let meta = std::fs::metadata(&p).unwrap();
    assert_eq!(meta.len(), 32);
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let before = std::fs::read(&p).unwrap();
    assert!(matches!(FileKek::generate(&p), Err(Error::KekFile { .. })));
    assert_eq!(std::fs::read(&p).unwrap(), before, "existing KEK untouched");
}

#[test]
fn load_refuses_readable_by_others_and_wrong_length() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("kek");
    FileKek::generate(&p).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(matches!(FileKek::load(&p), Err(Error::KekFile { .. })));
    let short = dir.path().join("short");
    std::fs::write(&short, [0u8; 31]).unwrap();
    std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(matches!(FileKek::load(&short), Err(Error::KekFile { .. })));
}

#[test]
fn wrapped_key_round_trip_through_a_file_and_a_container() {
    let dir = tempfile::tempdir().unwrap();
    let kek_path = dir.path().join("kek");
    let kek = FileKek::generate(&kek_path).unwrap();
    let key = DataKey::generate().unwrap();
    let id = KeyId::new("smollm2-135m").unwrap();
    let plain = b"GGUF pretend weights".repeat(1000);
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
    let wpath = dir.path().join("m.cmdl.key");
    wrapped.write_new_file(&wpath).unwrap();
    assert!(wrapped.write_new_file(&wpath).is_err(), "never overwrites");

    // A fresh process would do this: load KEK, read wrapped key, unwrap, decrypt.
    let kek = FileKek::load(&kek_path).unwrap();
    let wrapped = WrappedKey::read_file(&wpath).unwrap();
    assert_eq!(wrapped.kind(), KekKind::File);
    assert_eq!(wrapped.key_id(), &id);
    let header = Header::parse(&container).unwrap();
    let unwrapped = unwrap_for_container(&kek, &wrapped, &header).unwrap();
    let d = Decryptor::new(header, &unwrapped).unwrap();
    let mut out = vec![0u8; plain.len()];
    d.decrypt_into(&container[..], &mut out, std::num::NonZeroUsize::MIN)
        .unwrap();
    assert_eq!(out, plain);
}

#[test]
fn wrapped_key_failures_are_distinct() {
    let dir = tempfile::tempdir().unwrap();
    let kek = FileKek::generate(&dir.path().join("a")).unwrap();
    let other = FileKek::generate(&dir.path().join("b")).unwrap();
    let key = DataKey::generate().unwrap();
    let id = KeyId::new("model-a").unwrap();
    let bytes = kek.wrap(&id, &key).unwrap().to_bytes();

    // Another KEK: named by its id before any decryption is tried.
    let w = WrappedKey::parse(&bytes).unwrap();
    assert!(matches!(other.unwrap(&w), Err(Error::WrongKek { .. })));

    // Sealed bytes modified.
    let mut t = bytes.clone();
    *t.last_mut().unwrap() ^= 1;
    assert!(matches!(
        kek.unwrap(&WrappedKey::parse(&t).unwrap()),
        Err(Error::WrappedKeyAuth)
    ));

    // Key id rewritten in the file: the id is associated data.
    let mut t = bytes.clone();
    let at = 13; // first byte of the key id
    t[at] = b'M';
    let w = WrappedKey::parse(&t).unwrap();
    assert_eq!(w.key_id().as_str(), "Model-a");
    assert!(matches!(kek.unwrap(&w), Err(Error::WrappedKeyAuth)));

    // Used for another container's key id.
    let mut container = Vec::new();
    let other_id = KeyId::new("model-b").unwrap();
    encrypt(
        &key,
        &EncryptParams::new(other_id, ModelFormat::Gguf),
        &PlaintextInfo::of(b"x"),
        &b"x"[..],
        &mut container,
    )
    .unwrap();
    let header = Header::parse(&container).unwrap();
    assert!(matches!(
        unwrap_for_container(&kek, &WrappedKey::parse(&bytes).unwrap(), &header),
        Err(Error::KeyIdMismatch { .. })
    ));

    // Structure.
    let mut t = bytes.clone();
    t.push(0);
    assert!(matches!(
        WrappedKey::parse(&t),
        Err(Error::Malformed { .. })
    ));
    assert!(matches!(
        WrappedKey::parse(&bytes[..20]),
        Err(Error::Malformed { .. })
    ));
    assert!(matches!(
        WrappedKey::parse(b"nonsense-bytes"),
        Err(Error::BadMagic { .. })
    ));
}

/// The key broker's path without attestation: unwrap with the owner's KEK,
/// seal to the server's HPKE key, open in the server, decrypt.
#[test]
fn unwrap_then_release_over_hpke() {
    use confidant_keys::{HpkeKeyPair, open_from_hpke, seal_to_hpke};
    let dir = tempfile::tempdir().unwrap();
    let kek = FileKek::generate(&dir.path().join("kek")).unwrap();
    let id = KeyId::new("released").unwrap();
    let key = DataKey::generate().unwrap();
    let plain = b"GGUF weights for the TEE".repeat(500);
    let mut container = Vec::new();
    encrypt(
        &key,
        &EncryptParams::new(id.clone(), ModelFormat::Gguf),
        &PlaintextInfo::of(&plain),
        &plain[..],
        &mut container,
    )
    .unwrap();
    let wrapped = kek.wrap(&id, &key).unwrap().to_bytes();
    drop(key);

    // Key broker: registry holds `wrapped`; the server sent its HPKE public key.
    let server = HpkeKeyPair::generate();
    let dk = kek.unwrap(&WrappedKey::parse(&wrapped).unwrap()).unwrap();
    let sealed = seal_to_hpke(&dk, &id, &server.public_key()).unwrap();
    assert_eq!(sealed.ciphertext.len(), 48);

    // Server: open, check, decrypt into its buffer.
    let header = Header::parse(&container).unwrap();
    let dk = open_from_hpke(&server, header.key_id(), &sealed).unwrap();
    let d = Decryptor::new(header, &dk).unwrap();
    let mut out = vec![0u8; plain.len()];
    d.decrypt_into(
        &container[..],
        &mut out,
        std::num::NonZeroUsize::new(2).unwrap(),
    )
    .unwrap();
    assert_eq!(out, plain);
    // Another server cannot open it.
    assert!(matches!(
        open_from_hpke(&HpkeKeyPair::generate(), &id, &sealed),
        Err(Error::Hpke { .. })
    ));
}
