//! `confidant-edge run --config FILE`: the agent's TOML configuration.
//!
//! ```toml
//! state_dir = "/var/lib/confidant-edge"   # identity.json, sealed/, seq
//! tcti = "device:/dev/tpmrm0"
//!
//! [kbs]
//! url = "https://kbs.example:8443"        # default: the one enrolled with
//! ca_file = "kbs-ca.pem"                  # optional private CA
//!
//! [model]
//! container = "models/smollm2.cmdl"       # encrypted model container
//! key_id = "smollm2"
//! pcrs = [0, 1, 2, 3, 4, 5, 6, 7]         # quoted to the broker and sealed to
//! threads = 1
//! max_context = 512
//! max_tokens = 24
//!
//! [sensor]
//! kind = "bme280"                         # needs the `linux` feature
//! bus = "/dev/i2c-1"
//! address = 0x76
//! # kind = "replay"; file = "readings.jsonl"
//!
//! [trigger]
//! sample_seconds = 5                      # how often the sensor is read
//! every_seconds = 300                     # scheduled inference
//! temperature_delta_c = 1.0               # sensor event: change since the last inference
//!
//! [publish]
//! to = "broker"                           # or "file"
//! # file = "records.jsonl"
//! checkin_every_seconds = 300
//!
//! [update]                                # optional, see update.rs
//! ```
//! Relative paths are relative to the configuration file.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::update::UpdateConfig;

/// Largest configuration file.
const MAX_CONFIG_LEN: u64 = 64 * 1024;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// State directory.
    pub state_dir: PathBuf,
    /// TPM TCTI.
    #[serde(default = "default_tcti")]
    pub tcti: String,
    /// The broker.
    #[serde(default)]
    pub kbs: KbsConfig,
    /// The model.
    pub model: ModelConfig,
    /// The sensor.
    pub sensor: SensorConfig,
    /// When to run inference.
    #[serde(default)]
    pub trigger: TriggerConfig,
    /// Where statements go.
    #[serde(default)]
    pub publish: PublishConfig,
    /// Signed updates.
    pub update: Option<UpdateConfig>,
}

/// `$TPM2TOOLS_TCTI`, `$TCTI`, else the kernel resource manager.
pub fn default_tcti() -> String {
    std::env::var("TPM2TOOLS_TCTI")
        .or_else(|_| std::env::var("TCTI"))
        .unwrap_or_else(|_| "device:/dev/tpmrm0".into())
}

/// `[kbs]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KbsConfig {
    /// Base URL; default: the URL the device enrolled with.
    pub url: Option<String>,
    /// PEM CA certificates for the broker's TLS certificate.
    pub ca_file: Option<PathBuf>,
}

/// `[model]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The encrypted container.
    pub container: PathBuf,
    /// Its key id at the broker.
    pub key_id: String,
    /// SHA-256 PCRs quoted and sealed to.
    #[serde(default = "default_pcrs")]
    pub pcrs: Vec<u8>,
    /// Compute threads (0: one per core).
    #[serde(default = "one")]
    pub threads: usize,
    /// Context cap.
    #[serde(default = "default_context")]
    pub max_context: usize,
    /// Tokens per record.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
    /// System prompt.
    pub system: Option<String>,
    /// User prompt with `{readings}`.
    pub prompt: Option<String>,
}

fn default_pcrs() -> Vec<u8> {
    (0..8).collect()
}
fn one() -> usize {
    1
}
fn default_context() -> usize {
    512
}
fn default_max_tokens() -> usize {
    24
}

/// `[sensor]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SensorConfig {
    /// A BME280 on a Linux I2C bus (feature `linux`).
    Bme280 {
        /// `/dev/i2c-N`.
        bus: PathBuf,
        /// 0x76 or 0x77.
        #[serde(default = "default_address")]
        address: u8,
    },
    /// Readings from a JSON-lines file.
    Replay {
        /// The file.
        file: PathBuf,
    },
}

fn default_address() -> u8 {
    crate::sensor::bme280::ADDRESS_PRIMARY
}

/// `[trigger]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TriggerConfig {
    /// Seconds between sensor reads.
    pub sample_seconds: u64,
    /// Seconds between scheduled inferences (0: none).
    pub every_seconds: u64,
    /// Temperature change since the last inference that triggers one.
    pub temperature_delta_c: Option<f64>,
    /// Pressure change since the last inference that triggers one.
    pub pressure_delta_pa: Option<f64>,
}

impl Default for TriggerConfig {
    fn default() -> Self {
        TriggerConfig {
            sample_seconds: 5,
            every_seconds: 300,
            temperature_delta_c: Some(1.0),
            pressure_delta_pa: None,
        }
    }
}

/// `[publish]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PublishConfig {
    /// `broker` or `file`.
    pub to: PublishTo,
    /// The file for `to = "file"`.
    pub file: Option<PathBuf>,
    /// Seconds between check-ins with the broker (0: none).
    pub checkin_every_seconds: u64,
}

impl Default for PublishConfig {
    fn default() -> Self {
        PublishConfig {
            to: PublishTo::Broker,
            file: None,
            checkin_every_seconds: 300,
        }
    }
}

/// Where records go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PublishTo {
    /// The broker, which verifies them.
    Broker,
    /// A local JSON-lines file.
    File,
}

impl Config {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self> {
        use std::io::Read;
        let f = std::fs::File::open(path).map_err(|e| Error::file(path, e))?;
        let mut text = String::new();
        f.take(MAX_CONFIG_LEN + 1)
            .read_to_string(&mut text)
            .map_err(|e| Error::file(path, e))?;
        if text.len() as u64 > MAX_CONFIG_LEN {
            return Err(Error::file(path, "larger than 64 KiB"));
        }
        let mut c: Config = toml::from_str(&text).map_err(|e| Error::file(path, e))?;
        c.resolve(path.parent().unwrap_or(Path::new(".")));
        c.check()?;
        Ok(c)
    }

    fn resolve(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.state_dir);
        fix(&mut self.model.container);
        if let Some(p) = &mut self.kbs.ca_file {
            fix(p);
        }
        match &mut self.sensor {
            SensorConfig::Replay { file } => fix(file),
            SensorConfig::Bme280 { .. } => {}
        }
        if let Some(p) = &mut self.publish.file {
            fix(p);
        }
        if let Some(u) = &mut self.update {
            u.resolve(base);
        }
    }

    fn check(&self) -> Result<()> {
        if self.model.pcrs.is_empty() || self.model.pcrs.iter().any(|&p| p > 23) {
            return Err(Error::Config("[model] pcrs must name PCRs 0..=23".into()));
        }
        if self.model.max_tokens == 0 || self.model.max_tokens > 4096 {
            return Err(Error::Config("[model] max_tokens must be 1..=4096".into()));
        }
        if self.publish.to == PublishTo::File && self.publish.file.is_none() {
            return Err(Error::Config("[publish] to = \"file\" needs file".into()));
        }
        if self.trigger.sample_seconds == 0 {
            return Err(Error::Config(
                "[trigger] sample_seconds must be at least 1".into(),
            ));
        }
        Ok(())
    }
}
