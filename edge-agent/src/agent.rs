//! The agent: model key (unsealed, or from the broker), the model
//! decrypted in memory, then a loop of sensor reads, inferences on a
//! schedule or on sensor events, signed records and check-ins.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use confidant_attest::Hex;
use confidant_keys::KeyId;
use confidant_keys::kbs::client::{ClientConfig, KbsClient};
use confidant_keys::kbs::device::{CheckIn, InferenceRecord, Statement};
use sha2::{Digest, Sha256};

use crate::config::{Config, PublishTo, SensorConfig};
use crate::error::{Error, Result};
use crate::key::{KeyRequest, KeySource, model_key};
use crate::model::{InferenceSettings, LocalModel, decrypt};
use crate::publish::{Published, Publisher, sign};
use crate::sensor::{Reading, Replay, Sensor};
use crate::state::{Identity, StateDir};

/// Why an inference ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// `[trigger] every_seconds` elapsed.
    Schedule,
    /// A reading moved past a `[trigger]` delta.
    SensorEvent,
}

impl Trigger {
    /// `schedule` or `sensor_event`, as records carry it.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::SensorEvent => "sensor_event",
        }
    }
}

/// The running agent.
pub struct Agent {
    cfg: Config,
    state: StateDir,
    identity: Identity,
    model: LocalModel,
    key_source: KeySource,
    sensor: Box<dyn Sensor>,
    publisher: Publisher,
    last_inferred: Option<Reading>,
    last_inference: Option<Instant>,
    last_checkin: Option<Instant>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("device_id", &self.identity.device_id)
            .field("key_source", &self.key_source)
            .finish_non_exhaustive()
    }
}

/// The broker's client configuration from `[kbs]` and the enrolment.
pub fn kbs_client_config(cfg: &Config, identity: &Identity) -> Result<ClientConfig> {
    let url = cfg
        .kbs
        .url
        .clone()
        .unwrap_or_else(|| identity.kbs_url.clone());
    let mut c = ClientConfig::new(url);
    if let Some(p) = &cfg.kbs.ca_file {
        c.ca_certs_pem = Some(std::fs::read(p).map_err(|e| Error::file(p, e))?);
    }
    Ok(c)
}

/// Opens the sensor `[sensor]` names.
pub fn open_sensor(cfg: &SensorConfig) -> Result<Box<dyn Sensor>> {
    match cfg {
        SensorConfig::Replay { file } => Ok(Box::new(Replay::open(file)?)),
        #[cfg(feature = "linux")]
        SensorConfig::Bme280 { bus, address } => crate::sensor::open_bme280_linux(bus, *address),
        #[cfg(not(feature = "linux"))]
        SensorConfig::Bme280 { .. } => Err(Error::Config(
            "[sensor] kind = \"bme280\" needs a build with the `linux` feature".into(),
        )),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Agent {
    /// Starts with the sensor of `[sensor]`.
    pub fn start(cfg: Config) -> Result<Self> {
        let sensor = open_sensor(&cfg.sensor)?;
        Self::start_with_sensor(cfg, sensor)
    }

    /// Gets the model key (unsealing it, or from the broker), decrypts the
    /// model into memory and loads it. No key, no start.
    pub fn start_with_sensor(cfg: Config, sensor: Box<dyn Sensor>) -> Result<Self> {
        let state = StateDir::new(&cfg.state_dir);
        let identity = state.identity()?;
        let kbs = kbs_client_config(&cfg, &identity)?;
        let key_id = KeyId::new(&cfg.model.key_id)?;
        let (key, key_source) = model_key(&KeyRequest {
            tcti: &cfg.tcti,
            state: &state,
            kbs: kbs.clone(),
            key_id: key_id.clone(),
            pcrs: cfg.model.pcrs.clone(),
        })?;
        let (bytes, container_key_id, digest) = decrypt(&cfg.model.container, &key)?;
        drop(key);
        if container_key_id != key_id {
            return Err(Error::Config(format!(
                "{} is model {container_key_id}, [model] key_id says {key_id}",
                cfg.model.container.display()
            )));
        }
        let d = InferenceSettings::default();
        let settings = InferenceSettings {
            threads: cfg.model.threads,
            max_context: cfg.model.max_context,
            max_tokens: cfg.model.max_tokens,
            system: cfg.model.system.clone().unwrap_or(d.system),
            prompt: cfg.model.prompt.clone().unwrap_or(d.prompt),
        };
        let model = LocalModel::load(bytes, digest, settings)?;
        let publisher = match cfg.publish.to {
            PublishTo::Broker => Publisher::Broker(KbsClient::new(&kbs)?),
            PublishTo::File => Publisher::File(
                cfg.publish
                    .file
                    .clone()
                    .ok_or_else(|| Error::Config("[publish] file missing".into()))?,
            ),
        };
        tracing::info!(device = %identity.device_id, model = %hex::encode(digest), ?key_source, "agent ready");
        Ok(Agent {
            cfg,
            state,
            identity,
            model,
            key_source,
            sensor,
            publisher,
            last_inferred: None,
            last_inference: None,
            last_checkin: None,
        })
    }

    /// Where the model key came from at start.
    pub fn key_source(&self) -> KeySource {
        self.key_source
    }

    /// SHA-256 of the plaintext model.
    pub fn model_digest(&self) -> &[u8; 32] {
        self.model.digest()
    }

    /// The loaded model.
    pub fn model(&self) -> &LocalModel {
        &self.model
    }

    /// Signs `statement` with the AK and publishes it.
    pub fn publish(&self, statement: &Statement) -> Result<Published> {
        let signed = sign(&self.cfg.tcti, &self.identity, statement)?;
        self.publisher.publish(statement, &signed)
    }

    /// One inference on `reading`, as a signed, published record.
    pub fn record(
        &mut self,
        reading: &Reading,
        trigger: Trigger,
    ) -> Result<(InferenceRecord, Published)> {
        let g = self.model.infer(reading)?;
        let record = InferenceRecord {
            device_id: self.identity.device_id.clone(),
            seq: self.state.next_seq()?,
            at: unix_now(),
            trigger: trigger.as_str().into(),
            inputs: serde_json::to_value(reading)
                .map_err(|e| Error::Sensor(format!("encoding a reading: {e}")))?,
            model_digest: Hex(self.model.digest().to_vec()),
            prompt_sha256: Hex(Sha256::digest(g.prompt.as_bytes()).to_vec()),
            output: g.output,
            completion_tokens: g.completion_tokens,
            latency_ms: g.latency_ms,
        };
        let published = self.publish(&Statement::Record(record.clone()))?;
        self.last_inferred = Some(*reading);
        self.last_inference = Some(Instant::now());
        tracing::info!(seq = record.seq, trigger = %record.trigger, latency_ms = record.latency_ms, "record published");
        Ok((record, published))
    }

    /// A signed check-in: version, model, slots, health, peak memory.
    pub fn checkin(&mut self) -> Result<Published> {
        let slot_state = self
            .cfg
            .update
            .as_ref()
            .map(|u| crate::update::slot_state(u).unwrap_or_else(|e| format!("error: {e}")));
        let c = CheckIn {
            device_id: self.identity.device_id.clone(),
            seq: self.state.next_seq()?,
            at: unix_now(),
            agent_version: env!("CARGO_PKG_VERSION").into(),
            model_digest: Some(Hex(self.model.digest().to_vec())),
            slot_state,
            health: "ok".into(),
            peak_rss_kib: crate::memory::peak_rss_kib(),
        };
        let p = self.publish(&Statement::Checkin(c))?;
        self.last_checkin = Some(Instant::now());
        Ok(p)
    }

    /// What a new reading calls for: an inference on schedule, on a
    /// sensor event, or none.
    pub fn trigger_for(&self, reading: &Reading) -> Option<Trigger> {
        let t = &self.cfg.trigger;
        let due = |last: Option<Instant>, every: u64| {
            every > 0 && last.is_none_or(|l| l.elapsed() >= Duration::from_secs(every))
        };
        if let Some(prev) = &self.last_inferred {
            let moved = t
                .temperature_delta_c
                .is_some_and(|d| (reading.temperature_c - prev.temperature_c).abs() >= d)
                || t.pressure_delta_pa
                    .is_some_and(|d| (reading.pressure_pa - prev.pressure_pa).abs() >= d);
            if moved {
                return Some(Trigger::SensorEvent);
            }
        }
        due(self.last_inference, t.every_seconds).then_some(Trigger::Schedule)
    }

    /// Reads the sensor once and acts on it.
    pub fn tick(&mut self) -> Result<Option<InferenceRecord>> {
        let reading = self.sensor.read()?;
        let every = self.cfg.publish.checkin_every_seconds;
        if every > 0
            && self
                .last_checkin
                .is_none_or(|l| l.elapsed() >= Duration::from_secs(every))
            && let Err(e) = self.checkin()
        {
            tracing::warn!("check-in failed: {e}");
            // Try again at the next interval, not at every tick.
            self.last_checkin = Some(Instant::now());
        }
        match self.trigger_for(&reading) {
            Some(t) => Ok(Some(self.record(&reading, t)?.0)),
            None => Ok(None),
        }
    }

    /// Runs until stopped (`once`: one tick with a scheduled inference).
    pub fn run(&mut self, once: bool) -> Result<()> {
        if once {
            let reading = self.sensor.read()?;
            if let Err(e) = self.checkin() {
                tracing::warn!("check-in failed: {e}");
            }
            let (r, _) = self.record(&reading, Trigger::Schedule)?;
            tracing::info!(
                latency_ms = r.latency_ms,
                completion_tokens = r.completion_tokens,
                peak_rss_kib = crate::memory::peak_rss_kib().unwrap_or(0),
                "one record done"
            );
            return Ok(());
        }
        loop {
            if let Err(e) = self.tick() {
                // A failed publish (broker unreachable) is retried at the
                // next trigger; a sensor error at the next sample.
                tracing::warn!("{e}");
            }
            std::thread::sleep(Duration::from_secs(self.cfg.trigger.sample_seconds));
        }
    }
}
