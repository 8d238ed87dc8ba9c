//! The device flow against real software TPMs (swtpm) and an in-process
//! key broker: enrol (EK certificate from swtpm's own CA, AK by credential
//! activation), attest, get the model key, seal it under PolicyPCR,
//! restart offline and unseal, extend a PCR → unseal fails and the broker
//! refuses, power cycle back into the good state, revoke → refused.
//! Enrolment refuses an AK from another TPM and an EK certificate from an
//! unknown CA.

mod common;

use common::{Swtpm, device_policy, encrypt_model, have_swtpm, small_model, start_broker};
use confidant_attest::Hex;
use confidant_attest::attester::TpmAttester;
use confidant_attest::tpm::CredentialChallenge;
use confidant_edge_agent::key::{self, KeyRequest, KeySource};
use confidant_edge_agent::model::decrypt;
use confidant_edge_agent::seal::SealingTpm;
use confidant_edge_agent::state::StateDir;
use confidant_edge_agent::{Error, enrol};
use confidant_keys::kbs::client::{ClientConfig, KbsClient};
use confidant_keys::kbs::device::client::sign_statement;
use confidant_keys::kbs::device::{ActivateRequest, CheckIn, DeviceId, EnrolRequest, Statement};
use confidant_keys::{FileKek, KeyId};

const BOOT: [u8; 32] = [0x42; 32];

fn refused(r: Result<impl Sized, Error>) -> String {
    match r {
        Err(Error::Keys(confidant_keys::Error::KbsRefused { code, .. })) => code,
        Err(e) => panic!("expected a broker refusal, got {e}"),
        Ok(_) => panic!("expected a broker refusal, got success"),
    }
}

fn keys_refused<T>(r: Result<T, confidant_keys::Error>) -> String {
    match r {
        Err(confidant_keys::Error::KbsRefused { code, .. }) => code,
        Err(e) => panic!("expected a broker refusal, got {e}"),
        Ok(_) => panic!("expected a broker refusal, got success"),
    }
}

#[test]
fn swtpm_enrol_attest_seal_offline_unseal_pcr_change_and_revoke() {
    if !have_swtpm() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let kek_path = dir.path().join("owner.kek");
    let kek = FileKek::generate(&kek_path).unwrap();
    let model = encrypt_model(dir.path(), &kek, "sensor-model", &small_model());

    // The device's measured boot: PCR 7 extended once.
    let tpm = Swtpm::start();
    let tcti = tpm.tcti();
    SealingTpm::open(&tcti)
        .unwrap()
        .pcr_extend(7, &BOOT)
        .unwrap();
    let good = SealingTpm::open(&tcti).unwrap().read_pcrs(&[0, 7]).unwrap();
    let good7 = hex::encode(good[&7]);

    let db = dir.path().join("kbs.db");
    let policy = || device_policy(dir.path(), &[tpm.ek_ca_pem()], &[(7, good7.clone())]);
    let broker = start_broker(&db, &kek_path, Some(policy()));
    broker
        .store
        .add_model(&model.wrapped, "tees = [\"tpm\"]\n", false, common::now())
        .unwrap();

    // Enrol.
    let state = StateDir::new(dir.path().join("device"));
    let kbs = ClientConfig::new(&broker.url);
    let id = enrol::enrol(&state, &tcti, &kbs, Some(DeviceId::new("cam-17").unwrap())).unwrap();
    assert_eq!(id.device_id.as_str(), "cam-17");
    let devices = broker.store.devices().unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].ak_name, hex::encode(id.ak_name.as_bytes()));
    assert!(devices[0].revoked_at.is_none());
    // Enrolling again over the same state is refused locally; the broker
    // refuses the same TPM under another id.
    assert!(enrol::enrol(&state, &tcti, &kbs, None).is_err());
    let other_state = StateDir::new(dir.path().join("device-again"));
    assert_eq!(
        refused(enrol::enrol(
            &other_state,
            &tcti,
            &kbs,
            Some(DeviceId::new("cam-18").unwrap())
        )),
        "device_exists"
    );

    // Attest, get the key, seal it.
    let mut req = KeyRequest {
        tcti: &tcti,
        state: &state,
        kbs: kbs.clone(),
        key_id: KeyId::new("sensor-model").unwrap(),
        pcrs: vec![0, 7],
    };
    let (k, source) = key::model_key(&req).unwrap();
    assert_eq!(source, KeySource::Broker);
    assert_eq!(decrypt(&model.container, &k).unwrap().2, model.sha256);
    let blob = state
        .sealed(&req.key_id)
        .unwrap()
        .expect("sealed blob kept");
    assert_eq!(blob.pcrs, vec![0, 7]);
    let release = &broker.store.recent_events(1).unwrap()[0];
    assert_eq!(release.reason, "released");
    assert!(
        release.detail.as_deref().unwrap().contains("device cam-17"),
        "{release:?}"
    );

    // Restart without the broker: the TPM unseals the key.
    drop(broker);
    let (k, source) = key::model_key(&req).unwrap();
    assert_eq!(source, KeySource::Unsealed);
    assert_eq!(decrypt(&model.container, &k).unwrap().2, model.sha256);

    // Someone changes what was measured: unsealing fails, the broker
    // refuses while PCR 7 is not allowed.
    SealingTpm::open(&tcti)
        .unwrap()
        .pcr_extend(7, &[0x66; 32])
        .unwrap();
    assert!(matches!(
        SealingTpm::open(&tcti).unwrap().unseal(&blob),
        Err(Error::UnsealRefused(_))
    ));
    assert!(key::unseal(&req).unwrap().is_none());
    let broker = start_broker(&db, &kek_path, Some(policy()));
    let kbs = ClientConfig::new(&broker.url);
    req.kbs = kbs.clone();
    assert_eq!(refused(key::model_key(&req)), "policy_measurement");
    let refusal = &broker.store.recent_events(1).unwrap()[0];
    assert_eq!(refusal.reason, "policy_measurement");
    assert!(
        refusal
            .detail
            .as_deref()
            .unwrap()
            .contains("device cam-17, device policy")
    );

    // Power cycle into the measured state again: offline unseal works.
    tpm.power_cycle();
    SealingTpm::open(&tcti)
        .unwrap()
        .pcr_extend(7, &BOOT)
        .unwrap();
    assert_eq!(key::model_key(&req).unwrap().1, KeySource::Unsealed);

    // Signed check-in accepted; revoke; then key requests and statements
    // are refused, though the PCRs are good.
    let client = KbsClient::new(&kbs).unwrap();
    let checkin = |seq| {
        let st = Statement::Checkin(CheckIn {
            device_id: id.device_id.clone(),
            seq,
            at: 1,
            agent_version: "test".into(),
            model_digest: Some(Hex(model.sha256.to_vec())),
            slot_state: None,
            health: "ok".into(),
            peak_rss_kib: None,
        });
        let mut t = key::attester(&tcti, &id, &[]).unwrap();
        let signed = sign_statement(&mut t, &st).unwrap();
        (st, signed)
    };
    let (st, signed) = checkin(1);
    client.device_submit(&st, &signed).unwrap();
    assert_eq!(
        keys_refused(client.device_submit(&st, &signed)),
        "statement_replayed"
    );
    let dev = broker.store.device(&id.device_id).unwrap().unwrap();
    assert!(dev.checkin_at.is_some());
    assert_eq!(dev.checkin.unwrap()["health"], "ok");
    assert!(
        broker
            .store
            .revoke_device(&id.device_id, common::now())
            .unwrap()
    );
    assert_eq!(refused(key::from_broker(&req)), "device_revoked");
    let (st, signed) = checkin(2);
    assert_eq!(
        keys_refused(client.device_submit(&st, &signed)),
        "device_revoked"
    );
    let log = broker.store.recent_device_events(10).unwrap();
    assert_eq!(log[0].reason, "device_revoked");
    assert!(
        log.iter()
            .any(|e| e.reason == "revoked" && e.route == "cli")
    );
    assert!(log.iter().any(|e| e.reason == "checked_in"));
    // A revoked TPM cannot come back under a new id.
    let again = StateDir::new(dir.path().join("device-new"));
    assert_eq!(
        refused(enrol::enrol(
            &again,
            &tcti,
            &kbs,
            Some(DeviceId::new("cam-19").unwrap())
        )),
        "device_exists"
    );
}

#[test]
fn swtpm_enrolment_refuses_foreign_ak_and_unknown_ek_ca() {
    if !have_swtpm() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let kek_path = dir.path().join("owner.kek");
    FileKek::generate(&kek_path).unwrap();
    let a = Swtpm::start();
    let b = Swtpm::start();

    // Both EK CAs trusted: what is refused is the AK, not the certificate.
    let broker = start_broker(
        &dir.path().join("kbs.db"),
        &kek_path,
        Some(device_policy(
            dir.path(),
            &[a.ek_ca_pem(), b.ek_ca_pem()],
            &[],
        )),
    );
    let client = KbsClient::new(&ClientConfig::new(&broker.url)).unwrap();
    let mut ta = TpmAttester::open(&a.tcti()).unwrap();
    let mut tb = TpmAttester::open(&b.tcti()).unwrap();
    let ek_a = ta.ek_certificate().unwrap();
    let ak_b = tb.create_ak().unwrap();
    ta.create_ak().unwrap();
    let enrol_foreign = |client: &KbsClient| {
        client
            .device_enrol(&EnrolRequest {
                device_id: DeviceId::new("mixed").unwrap(),
                ek_cert: Hex(ek_a.clone()),
                ak_public: Hex(ak_b.public_bytes().unwrap()),
            })
            .unwrap()
    };
    // The credential is for TPM A's EK and TPM B's AK: neither TPM can
    // activate it (B lacks the EK, A lacks the AK).
    let ch = enrol_foreign(&client);
    let cred = CredentialChallenge {
        credential_blob: ch.credential_blob.clone(),
        encrypted_secret: ch.encrypted_secret.clone(),
    };
    assert!(
        tb.activate_credential(&cred).is_err(),
        "TPM B has not got EK A"
    );
    assert!(
        ta.activate_credential(&cred).is_err(),
        "TPM A has not got AK B"
    );
    // Whatever the device answers, the broker refuses, and only once.
    let guess = ActivateRequest {
        enrolment_id: ch.enrolment_id.clone(),
        activated: Hex(vec![0u8; 32]),
    };
    assert_eq!(
        keys_refused(client.device_activate(&guess)),
        "enrolment_refused"
    );
    assert_eq!(
        keys_refused(client.device_activate(&guess)),
        "enrolment_refused"
    );
    assert!(broker.store.devices().unwrap().is_empty());
    let log = broker.store.recent_device_events(10).unwrap();
    assert_eq!(log[0].outcome, "refused");
    assert!(
        log[1]
            .detail
            .as_deref()
            .unwrap()
            .contains("AK not bound to the EK"),
        "{log:?}"
    );

    // An EK certificate from a CA the broker does not know.
    let broker_a = start_broker(
        &dir.path().join("kbs-a.db"),
        &kek_path,
        Some(device_policy(dir.path(), &[a.ek_ca_pem()], &[])),
    );
    let state = StateDir::new(dir.path().join("device-b"));
    drop(tb);
    drop(ta);
    assert_eq!(
        refused(enrol::enrol(
            &state,
            &b.tcti(),
            &ClientConfig::new(&broker_a.url),
            Some(DeviceId::new("from-b").unwrap())
        )),
        "enrolment_refused"
    );
    let log = broker_a.store.recent_device_events(1).unwrap();
    // swtpm's local CAs share a subject name: B's certificate names A's
    // CA as issuer but is not signed by it.
    assert!(
        log[0].detail.as_deref().unwrap().contains("EK CA"),
        "{log:?}"
    );
    // TPM A, whose CA it knows, enrols.
    let state = StateDir::new(dir.path().join("device-a"));
    enrol::enrol(
        &state,
        &a.tcti(),
        &ClientConfig::new(&broker_a.url),
        Some(DeviceId::new("from-a").unwrap()),
    )
    .unwrap();
    assert_eq!(broker_a.store.devices().unwrap().len(), 1);
}
