//! PKCS#11 signing keys (Ed25519 and ECDSA P-256) against a real SoftHSM2
//! token initialised by this test in a temporary directory. Signatures are
//! checked with aws-lc-rs, the private keys' attributes through a separate
//! cryptoki session.
//!
//! As in `softhsm.rs`, the work runs in a child process (`common/softhsm.rs`).

#[path = "common/softhsm.rs"]
mod softhsm;

use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, ED25519, UnparsedPublicKey};
use confidant_keys::{
    Error, Pkcs11Kek, Pkcs11PublicKey, Pkcs11SigningKey, Pkcs11Uri, SigningAlgorithm,
};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::Session;
use softhsm::MODULE;
const TOKEN: &str = "confidant-sign";
const PIN: &str = "1234";
const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

fn uri(object: &str) -> Pkcs11Uri {
    Pkcs11Uri::parse_key_pair(&format!(
        "pkcs11:token={TOKEN};object={object}?module-path={MODULE}"
    ))
    .unwrap()
}

#[test]
fn softhsm2_signing_keys_sign_inside_the_token() {
    if softhsm::is_child() {
        return child();
    }
    softhsm::run_as_child("softhsm2_signing_keys_sign_inside_the_token", TOKEN, PIN);
}

fn child() {
    let msg = br#"{"_type":"root","version":1}"#;
    for (label, alg) in [
        ("p256-key", SigningAlgorithm::EcdsaP256),
        ("ed-key", SigningAlgorithm::Ed25519),
    ] {
        let made = Pkcs11SigningKey::generate(&uri(label), alg).unwrap();
        assert_eq!(made.public_key().algorithm(), alg);
        assert_eq!(made.id().len(), 16);
        let public = made.public_key().as_bytes().to_vec();
        drop(made);

        // A fresh handle finds the same pair; its signatures verify with an
        // independent verifier and the public key object's bytes.
        let key = Pkcs11SigningKey::open(&uri(label)).unwrap();
        assert_eq!(key.public_key().as_bytes(), public);
        assert_eq!(
            Pkcs11PublicKey::read(&uri(label)).unwrap(),
            *key.public_key()
        );
        let sig = key.sign(msg).unwrap();
        let verifier = match alg {
            SigningAlgorithm::EcdsaP256 => {
                assert_eq!(public.len(), 65);
                assert_eq!(public[0], 0x04);
                UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &public)
            }
            SigningAlgorithm::Ed25519 => {
                assert_eq!(public.len(), 32);
                assert_eq!(sig.len(), 64);
                UnparsedPublicKey::new(&ED25519, &public)
            }
        };
        verifier.verify(msg, &sig).unwrap();
        assert!(verifier.verify(b"another message", &sig).is_err());
        let shown = format!("{key:?}");
        assert!(shown.contains(label) && !shown.contains(PIN), "{shown}");

        assert!(
            matches!(
                Pkcs11SigningKey::generate(&uri(label), alg).map(|_| ()),
                Err(Error::Pkcs11Object { .. })
            ),
            "no second key pair with that label"
        );
    }

    let session = softhsm::user_session(TOKEN, PIN);
    private_key_stays_in_the_token(&session, b"p256-key");
    private_key_stays_in_the_token(&session, b"ed-key");
    make_weak_and_mismatched_pairs(&session);

    // An extractable private key is refused.
    let got = Pkcs11SigningKey::open(&uri("weak")).map(|_| ());
    assert!(
        matches!(got, Err(Error::Pkcs11Object { ref reason }) if reason.contains("extractable")),
        "{got:?}"
    );
    // A private key beside a public object of another pair: its signature
    // does not verify, and is not returned.
    let mixed = Pkcs11SigningKey::open(&uri("mixed")).unwrap();
    let got = mixed.sign(msg).map(|_| ());
    assert!(
        matches!(got, Err(Error::Pkcs11Object { ref reason }) if reason.contains("does not verify")),
        "{got:?}"
    );
    // Unknown objects are refused; a signing key is not a KEK.
    assert!(matches!(
        Pkcs11SigningKey::open(&uri("no-such-key")).map(|_| ()),
        Err(Error::Pkcs11Object { .. })
    ));
    let as_kek: Pkcs11Uri = format!("pkcs11:token={TOKEN};object=p256-key?module-path={MODULE}")
        .parse()
        .unwrap();
    assert!(matches!(
        Pkcs11Kek::open(&as_kek).map(|_| ()),
        Err(Error::Pkcs11Object { .. })
    ));
    println!("softhsm2 signing child: all checks passed");
}

fn private_key_stays_in_the_token(session: &Session, label: &[u8]) {
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(label.to_vec()),
        ])
        .unwrap();
    assert_eq!(found.len(), 1);
    let attrs = session
        .get_attributes(
            found[0],
            &[
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::NeverExtractable,
                AttributeType::Token,
                AttributeType::Decrypt,
            ],
        )
        .unwrap();
    for want in [
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::NeverExtractable(true),
        Attribute::Token(true),
        Attribute::Decrypt(false),
    ] {
        assert!(attrs.contains(&want), "{want:?} not in {attrs:?}");
    }
    softhsm::assert_value_unreadable(session, found[0], "private key");
}

/// `weak`: an extractable, non-sensitive P-256 pair. `mixed`: the private
/// key of one pair and the public key of another, under one label and id.
fn make_weak_and_mismatched_pairs(session: &Session) {
    let pair = |pub_label: &[u8], pub_id: u8, priv_label: &[u8], priv_id: u8, weak: bool| {
        session
            .generate_key_pair(
                &Mechanism::EccKeyPairGen,
                &[
                    Attribute::Token(true),
                    Attribute::Verify(true),
                    Attribute::EcParams(P256_PARAMS.to_vec()),
                    Attribute::Label(pub_label.to_vec()),
                    Attribute::Id(vec![pub_id]),
                ],
                &[
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(!weak),
                    Attribute::Extractable(weak),
                    Attribute::Sign(true),
                    Attribute::Label(priv_label.to_vec()),
                    Attribute::Id(vec![priv_id]),
                ],
            )
            .unwrap();
    };
    pair(b"weak", 0x01, b"weak", 0x01, true);
    pair(b"mixed-other", 0x0b, b"mixed", 0x0a, false);
    pair(b"mixed", 0x0a, b"mixed-other-private", 0x0c, false);
}
