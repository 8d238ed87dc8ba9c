//! End to end with swtpm, the key broker and the real default model:
//! BME280 readings from a mock I2C bus flow into local inference and
//! come out as records signed by the device's AK, which the broker
//! verifies (and refuses once tampered with or replayed). Then the
//! `confidant-edge` binary restarts with the broker gone: it unseals the
//! key, runs one inference and writes a signed record to a file, which
//! verifies under the enrolled AK.

mod common;

use std::process::Command;

use common::{Swtpm, default_model, device_policy, encrypt_model, have_swtpm, start_broker};
use confidant_edge_agent::agent::{Agent, Trigger};
use confidant_edge_agent::config::Config;
use confidant_edge_agent::enrol;
use confidant_edge_agent::key::KeySource;
use confidant_edge_agent::publish::sign;
use confidant_edge_agent::seal::SealingTpm;
use confidant_edge_agent::sensor::bme280::{ADDRESS_PRIMARY as A, Bme280, Settings, reg};
use confidant_edge_agent::state::StateDir;
use confidant_keys::FileKek;
use confidant_keys::kbs::client::{ClientConfig, KbsClient};
use confidant_keys::kbs::device::{DeviceId, SignedStatement, Statement, statement_message};
use embedded_hal_mock::eh1::delay::NoopDelay;
use embedded_hal_mock::eh1::i2c::{Mock as I2cMock, Transaction as I};

fn calib() -> (Vec<u8>, Vec<u8>) {
    let words: [i32; 12] = [
        27504, 26435, -1000, 36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000,
    ];
    let mut tp: Vec<u8> = words
        .iter()
        .flat_map(|w| (*w as u16).to_le_bytes())
        .collect();
    tp.extend([0, 75]);
    let h = vec![0x6A, 0x01, 0, 0x13, 0x29, 0x03, 30];
    (tp, h)
}

fn bus() -> Vec<I> {
    let (tp, h) = calib();
    let mut t = vec![
        I::write_read(A, vec![reg::ID], vec![0x60]),
        I::write(A, vec![reg::RESET, 0xB6]),
        I::write_read(A, vec![reg::STATUS], vec![0x00]),
        I::write_read(A, vec![reg::CALIB_TP], tp),
        I::write_read(A, vec![reg::CALIB_H], h),
        I::write(A, vec![reg::CTRL_HUM, 0x01]),
        I::write(A, vec![reg::CONFIG, 0x00]),
    ];
    // 25.08 °C, then about 3 °C warmer (adc_T 519888 → 527888).
    for temp in [[0x7E, 0xED, 0x00], [0x80, 0xE1, 0x00]] {
        t.push(I::write(A, vec![reg::CTRL_MEAS, 0x25]));
        t.push(I::write_read(A, vec![reg::STATUS], vec![0x00]));
        t.push(I::write_read(
            A,
            vec![reg::DATA],
            vec![0x65, 0x5A, 0xC0, temp[0], temp[1], temp[2], 0x69, 0x78],
        ));
    }
    t
}

#[test]
fn e2e_mock_sensor_to_local_inference_to_signed_record_verified_by_broker() {
    if !have_swtpm() {
        return;
    }
    let Some(plain) = default_model() else {
        eprintln!(
            "\n!!!! SKIPPED: default model unavailable (CONFIDANT_MODEL or scripts/fetch-model) !!!!\n"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let kek_path = dir.path().join("owner.kek");
    let kek = FileKek::generate(&kek_path).unwrap();
    let model = encrypt_model(dir.path(), &kek, "smollm2", &plain);
    drop(plain);

    let tpm = Swtpm::start();
    let tcti = tpm.tcti();
    SealingTpm::open(&tcti)
        .unwrap()
        .pcr_extend(7, &[0x42; 32])
        .unwrap();
    let pcr7 = hex::encode(SealingTpm::open(&tcti).unwrap().read_pcrs(&[7]).unwrap()[&7]);
    let broker = start_broker(
        &dir.path().join("kbs.db"),
        &kek_path,
        Some(device_policy(dir.path(), &[tpm.ek_ca_pem()], &[(7, pcr7)])),
    );
    broker
        .store
        .add_model(&model.wrapped, "tees = [\"tpm\"]\n", false, common::now())
        .unwrap();
    let state = StateDir::new(dir.path().join("state"));
    let id = enrol::enrol(
        &state,
        &tcti,
        &ClientConfig::new(&broker.url),
        Some(DeviceId::new("gw-1").unwrap()),
    )
    .unwrap();

    std::fs::write(
        dir.path().join("readings.jsonl"),
        "{\"temperature_c\":21.5,\"pressure_pa\":101325.0,\"humidity_pct\":40.0}\n",
    )
    .unwrap();
    let config = |publish: &str| {
        format!(
            "state_dir = \"state\"\ntcti = \"{tcti}\"\n\
             [model]\ncontainer = \"smollm2.cmdl\"\nkey_id = \"smollm2\"\npcrs = [7]\n\
             threads = 1\nmax_context = 256\nmax_tokens = 8\n\
             [sensor]\nkind = \"replay\"\nfile = \"readings.jsonl\"\n\
             [trigger]\nsample_seconds = 1\nevery_seconds = 3600\ntemperature_delta_c = 1.0\n\
             {publish}"
        )
    };
    let cfg_path = dir.path().join("agent.toml");
    std::fs::write(&cfg_path, config("[publish]\nto = \"broker\"\n")).unwrap();
    let cfg = Config::load(&cfg_path).unwrap();

    let i2c = I2cMock::new(&bus());
    let sensor = Bme280::new(i2c.clone(), NoopDelay::new(), A, Settings::default()).unwrap();
    let mut agent = Agent::start_with_sensor(cfg, Box::new(sensor)).unwrap();
    assert_eq!(agent.key_source(), KeySource::Broker);
    assert_eq!(agent.model_digest(), &model.sha256);

    // First reading: nothing inferred yet → scheduled inference (and the
    // first check-in). Second reading, 3 °C warmer → sensor event.
    let first = agent.tick().unwrap().expect("scheduled inference");
    assert_eq!(first.trigger, "schedule");
    assert_eq!(first.inputs["temperature_c"], 25.08);
    assert!((first.inputs["pressure_pa"].as_f64().unwrap() - 100653.25).abs() < 0.01);
    assert!(!first.output.trim().is_empty(), "the model said nothing");
    assert!(first.completion_tokens >= 1 && first.completion_tokens <= 8);
    assert_eq!(first.model_digest.as_bytes(), &model.sha256);
    let second = agent.tick().unwrap().expect("sensor event");
    assert_eq!(second.trigger, "sensor_event");
    assert!(second.inputs["temperature_c"].as_f64().unwrap() > 27.0);
    assert!(second.seq > first.seq);
    let mut i2c = i2c;
    i2c.done();
    eprintln!(
        "record: {:?} ({} tokens, {} ms)",
        first.output, first.completion_tokens, first.latency_ms
    );

    // The broker verified both records and the check-in.
    let log = broker.store.recent_device_events(10).unwrap();
    let reasons: Vec<&str> = log.iter().map(|e| e.reason.as_str()).collect();
    assert_eq!(
        &reasons[..3],
        ["record_verified", "record_verified", "checked_in"],
        "{log:?}"
    );
    let dev = broker.store.device(&id.device_id).unwrap().unwrap();
    assert_eq!(dev.last_seq, second.seq);
    assert_eq!(
        dev.checkin.as_ref().unwrap()["model_digest"],
        hex::encode(model.sha256)
    );

    // Tampered with: refused. Replayed: refused.
    let client = KbsClient::new(&ClientConfig::new(&broker.url)).unwrap();
    let mut forged = second.clone();
    forged.seq = second.seq + 1;
    let st = Statement::Record(forged.clone());
    let mut signed = sign(&tcti, &id, &st).unwrap();
    assert!(signed.payload.contains("\"trigger\":\"sensor_event\""));
    signed.payload = signed
        .payload
        .replace("\"trigger\":\"sensor_event\"", "\"trigger\":\"schedule\"");
    let code = |r: Result<_, confidant_keys::Error>| match r {
        Err(confidant_keys::Error::KbsRefused { code, .. }) => code,
        Err(e) => panic!("expected a refusal, got {e}"),
        Ok(_) => panic!("expected a refusal, got acceptance"),
    };
    assert_eq!(
        code(client.device_submit(&st, &signed)),
        "signature_invalid"
    );
    let st = Statement::Record(second.clone());
    let resent = sign(&tcti, &id, &st).unwrap();
    assert_eq!(
        code(client.device_submit(&st, &resent)),
        "statement_replayed"
    );
    drop(agent);
    drop(broker);

    // The binary, broker gone: unseal offline, one record to a file.
    std::fs::write(
        &cfg_path,
        config("[publish]\nto = \"file\"\nfile = \"records.jsonl\"\ncheckin_every_seconds = 0\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_confidant-edge"))
        .args(["run", "--once", "--config"])
        .arg(&cfg_path)
        .env("TSS2_LOG", "all+none")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "confidant-edge run: {stderr}");
    assert!(stderr.contains("unsealed"), "{stderr}");
    if let Some(l) = stderr.lines().find(|l| l.contains("one record done")) {
        eprintln!("confidant-edge run --once: {l}");
    }
    let lines = std::fs::read_to_string(dir.path().join("records.jsonl")).unwrap();
    // Check-ins go to the same file: every line is a signed statement.
    let store = confidant_keys::kbs::Store::open(&dir.path().join("kbs.db")).unwrap();
    let ak = store.device(&id.device_id).unwrap().unwrap().ak;
    let mut records = 0;
    for line in lines.lines() {
        let s: SignedStatement = serde_json::from_str(line).unwrap();
        confidant_attest::tpm::verify_ak_signature(
            &ak,
            &statement_message(s.payload.as_bytes()),
            s.signature.as_bytes(),
        )
        .expect("signed by the enrolled AK");
        if let Statement::Record(r) = serde_json::from_str(&s.payload).unwrap() {
            assert_eq!(r.inputs["temperature_c"], 21.5);
            assert_eq!(r.trigger, Trigger::Schedule.as_str());
            records += 1;
        }
    }
    assert_eq!(records, 1);
}
