//! The key broker against a real software TPM (swtpm): the AK is enrolled
//! by credential activation, the server's evidence is a TPM quote over a
//! fresh nonce bound to its TLS and HPKE keys. Round trip with the default
//! model, and refusals of a wrong PCR and of an AK never enrolled.

mod common;

use std::sync::Arc;

use common::swtpm;
use confidant_keys::kbs::client::{ClientConfig, fetch_data_key};
use confidant_keys::kbs::{Kbs, KbsConfig, Outcome, Store, SystemClock, Tee};
use confidant_keys::{Error, FileKek, HpkeKeyPair, KeyId};

const TLS_SPKI: &[u8] = b"\x30\x2a\x30\x05\x06\x03\x2b\x65\x70\x03\x21\x00 server TLS key";

fn refused_code(r: Result<confidant_keys::DataKey, Error>) -> String {
    match r {
        Err(Error::KbsRefused { code, .. }) => code,
        Err(e) => panic!("expected a refusal, got {e}"),
        Ok(_) => panic!("expected a refusal, got a key"),
    }
}

#[test]
fn kbs_swtpm_round_trip_default_model_and_pcr_refusal() {
    if !swtpm::have_swtpm() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let kek = FileKek::generate(&dir.path().join("owner.kek")).unwrap();
    let plain = common::default_or_small_model("kbs_swtpm");
    let model = common::encrypt_model(dir.path(), &kek, "smollm2", &plain);
    drop(plain);
    let other = common::encrypt_model(dir.path(), &kek, "pinned-elsewhere", &common::small_model());

    // The device: a TPM with an AK enrolled by credential activation and a
    // measured PCR 7.
    let tpm = swtpm::start();
    let mut t = tpm.attester();
    let ak = tpm.enrol(&mut t);
    t.pcr_extend(7, &[0x42; 32]).unwrap();
    let pcr7 = hex::encode(t.quote(&[0; 32], &[7]).unwrap().pcrs[&7].as_bytes());

    let store = Arc::new(Store::open(&dir.path().join("kbs.db")).unwrap());
    store.add_tpm_ak(&ak, common::now()).unwrap();
    store
        .add_model(
            &model.wrapped,
            &format!("tees = [\"tpm\"]\n[tpm]\nmeasurements.pcr7 = [\"{pcr7}\"]\n"),
            false,
            common::now(),
        )
        .unwrap();
    store
        .add_model(
            &other.wrapped,
            &format!("[tpm]\nmeasurements.pcr7 = [\"{}\"]\n", "00".repeat(32)),
            false,
            common::now(),
        )
        .unwrap();
    let kbs = Arc::new(Kbs::new(
        store.clone(),
        Box::new(FileKek::load(&dir.path().join("owner.kek")).unwrap()),
        KbsConfig::default(),
        Arc::new(SystemClock),
    ));
    let server = common::start(kbs, None);
    let cfg = ClientConfig::new(&server.url);

    // Wrong PCR 7 for this model's policy.
    let hpke = HpkeKeyPair::generate();
    let code = refused_code(fetch_data_key(
        &cfg,
        &KeyId::new("pinned-elsewhere").unwrap(),
        &mut t,
        TLS_SPKI,
        &hpke,
    ));
    assert_eq!(code, "policy_measurement");

    // A quote from an AK this broker never enrolled.
    let mut stranger = tpm.attester();
    stranger.create_ak().unwrap();
    let code = refused_code(fetch_data_key(
        &cfg,
        &KeyId::new("smollm2").unwrap(),
        &mut stranger,
        TLS_SPKI,
        &hpke,
    ));
    assert_eq!(code, "tpm_ak_unknown");

    // The enrolled AK, the right PCRs: the key is released, the model decrypts.
    let key = fetch_data_key(
        &cfg,
        &KeyId::new("smollm2").unwrap(),
        &mut t,
        TLS_SPKI,
        &hpke,
    )
    .expect("key released");
    assert_eq!(common::decrypt_sha256(&model.container, &key), model.sha256);

    let log = store.recent_events(10).unwrap();
    let release = &log[0];
    assert_eq!(release.outcome, Outcome::Release);
    assert_eq!(release.key_id.as_deref(), Some("smollm2"));
    assert_eq!(release.tee.as_deref(), Some(Tee::Tpm.as_str()));
    assert!(
        release.measurement.as_deref().unwrap().contains(&pcr7),
        "{release:?}"
    );
    assert_eq!(release.source.as_deref(), Some("127.0.0.1"));
    let pcr_refusal = log
        .iter()
        .find(|e| e.reason == "policy_measurement")
        .expect("PCR refusal logged");
    assert_eq!(pcr_refusal.outcome, Outcome::Refusal);
    assert_eq!(pcr_refusal.key_id.as_deref(), Some("pinned-elsewhere"));
    assert!(pcr_refusal.detail.as_deref().unwrap().contains("tpm.pcr7"));
    let ak_refusal = log
        .iter()
        .find(|e| e.reason == "tpm_ak_unknown")
        .expect("unknown AK logged");
    assert_eq!(ak_refusal.tee.as_deref(), Some("tpm"));
}
