//! Wire types of the device routes (`keys/KBS.md` §8) and the statements
//! devices sign: check-ins and inference records.

use std::fmt;

use confidant_attest::Hex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// `POST` here to start enrolment: EK certificate and AK → credential.
pub const ENROL_PATH: &str = "/kbs/v1/device/enrol";
/// `POST` here to finish enrolment with the activated credential.
pub const ACTIVATE_PATH: &str = "/kbs/v1/device/activate";
/// `POST` a signed check-in here.
pub const CHECKIN_PATH: &str = "/kbs/v1/device/checkin";
/// `POST` a signed inference record here.
pub const RECORD_PATH: &str = "/kbs/v1/device/record";

/// Longest device id.
pub const MAX_DEVICE_ID_LEN: usize = 64;
/// Largest signed statement payload.
pub const MAX_PAYLOAD_LEN: usize = 64 * 1024;
/// Domain of the message a device's AK signs for a statement.
pub const STATEMENT_DOMAIN: &[u8] = b"confidant/edge-statement/v1\0";

/// A device id: 1 to 64 characters of `A-Z a-z 0-9 . _ -`, starting with
/// a letter or digit.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct DeviceId(String);

impl DeviceId {
    /// Checks and wraps a device id.
    pub fn new(s: &str) -> Result<Self> {
        if s.is_empty() || s.len() > MAX_DEVICE_ID_LEN {
            return Err(Error::invalid(
                "device id",
                format!("must be 1..={MAX_DEVICE_ID_LEN} bytes, got {}", s.len()),
            ));
        }
        if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err(Error::invalid(
                "device id",
                "must start with a letter or a digit",
            ));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(Error::invalid(
                "device id",
                format!("character {c:?} not allowed (use A-Z a-z 0-9 . _ -)"),
            ));
        }
        Ok(DeviceId(s.to_owned()))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for DeviceId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DeviceId::new(&s).map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for DeviceId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        DeviceId::new(s)
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({:?})", self.0)
    }
}

/// `POST /kbs/v1/device/enrol` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrolRequest {
    /// The id the device asks to be known by.
    pub device_id: DeviceId,
    /// The TPM's RSA-2048 EK certificate, DER (hex).
    pub ek_cert: Hex,
    /// The AK's marshalled TPMT_PUBLIC (hex).
    pub ak_public: Hex,
}

/// `POST /kbs/v1/device/enrol` answer: the TPM2_ActivateCredential inputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrolResponse {
    /// Names this enrolment at `activate` (64 hex digits; single use).
    pub enrolment_id: String,
    /// TPM2B_ID_OBJECT contents (hex).
    pub credential_blob: Hex,
    /// TPM2B_ENCRYPTED_SECRET contents (hex).
    pub encrypted_secret: Hex,
    /// Seconds the enrolment waits for `activate`.
    pub ttl_seconds: u64,
}

/// `POST /kbs/v1/device/activate` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivateRequest {
    /// From [`EnrolResponse::enrolment_id`].
    pub enrolment_id: String,
    /// What TPM2_ActivateCredential returned (hex).
    pub activated: Hex,
}

/// `POST /kbs/v1/device/activate` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivateResponse {
    /// The enrolled device.
    pub device_id: DeviceId,
    /// TPM Name of its AK (hex).
    pub ak_name: Hex,
}

/// A statement signed by a device's AK, as it travels: the payload is the
/// exact JSON text of a [`Statement`] the signature covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedStatement {
    /// Who signed (the broker looks its AK up by this id).
    pub device_id: DeviceId,
    /// JSON text of a [`Statement`].
    pub payload: String,
    /// Marshalled TPMT_SIGNATURE by the device's AK over
    /// [`statement_message`]`(payload)` (hex).
    pub signature: Hex,
}

/// Answer to an accepted statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatementAccepted {
    /// The device.
    pub device_id: DeviceId,
    /// The statement's sequence number.
    pub seq: u64,
    /// SHA-256 of the payload (hex).
    pub payload_sha256: Hex,
}

/// What the device's AK signs for a statement:
/// `"confidant/edge-statement/v1\0" ‖ SHA-256(payload)` (60 bytes; it does
/// not start with TPM_GENERATED_VALUE, so it can never pass for a quote).
pub fn statement_message(payload: &[u8]) -> Vec<u8> {
    let mut m = STATEMENT_DOMAIN.to_vec();
    m.extend_from_slice(&Sha256::digest(payload));
    m
}

/// A device's signed statement: a check-in or an inference record. Each
/// carries the device id and a sequence number that must grow from one
/// statement to the next (the broker refuses replays).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Statement {
    /// Agent version, model, slots and health.
    Checkin(CheckIn),
    /// The result of one local inference.
    Record(InferenceRecord),
}

impl Statement {
    /// The device the statement is about.
    pub fn device_id(&self) -> &DeviceId {
        match self {
            Statement::Checkin(c) => &c.device_id,
            Statement::Record(r) => &r.device_id,
        }
    }
    /// Its sequence number.
    pub fn seq(&self) -> u64 {
        match self {
            Statement::Checkin(c) => c.seq,
            Statement::Record(r) => r.seq,
        }
    }
}

/// A device's periodic report (`confidant kbs device list` shows the last).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckIn {
    /// The device.
    pub device_id: DeviceId,
    /// Sequence number (shared with records).
    pub seq: u64,
    /// Device clock, Unix seconds.
    pub at: u64,
    /// `confidant-edge` version.
    pub agent_version: String,
    /// SHA-256 of the plaintext model the agent runs (hex), if loaded.
    pub model_digest: Option<Hex>,
    /// A/B slot state (`firmware-update`), e.g. `b good v1.2.0`.
    pub slot_state: Option<String>,
    /// `ok`, or what is wrong.
    pub health: String,
    /// Peak resident memory of the agent, KiB (VmHWM).
    pub peak_rss_kib: Option<u64>,
}

/// One local inference: what went in, which model, what came out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceRecord {
    /// The device.
    pub device_id: DeviceId,
    /// Sequence number (shared with check-ins).
    pub seq: u64,
    /// Device clock, Unix seconds.
    pub at: u64,
    /// What started it: `schedule` or `sensor_event`.
    pub trigger: String,
    /// Sensor readings the prompt was made from.
    pub inputs: serde_json::Value,
    /// SHA-256 of the plaintext model (hex).
    pub model_digest: Hex,
    /// SHA-256 of the prompt text (hex).
    pub prompt_sha256: Hex,
    /// The generated text.
    pub output: String,
    /// Tokens generated.
    pub completion_tokens: usize,
    /// Prefill plus decode time, milliseconds.
    pub latency_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids() {
        for ok in ["cam-17", "tpm-0123456789abcdef", "a", "gw.site_3"] {
            DeviceId::new(ok).unwrap();
        }
        for bad in ["", "-x", ".x", "a/b", "a b", "ä", &"x".repeat(65)] {
            assert!(DeviceId::new(bad).is_err(), "{bad:?}");
        }
        assert!(serde_json::from_str::<DeviceId>("\"../x\"").is_err());
    }

    #[test]
    fn statement_message_is_domain_separated_and_never_a_quote() {
        let m = statement_message(b"{}");
        assert_eq!(m.len(), STATEMENT_DOMAIN.len() + 32);
        assert!(m.starts_with(STATEMENT_DOMAIN));
        assert_ne!(&m[..4], &[0xff, 0x54, 0x43, 0x47]);
        assert_ne!(statement_message(b"{} "), m);
    }

    #[test]
    fn statements_round_trip_and_refuse_unknown_fields() {
        let c = Statement::Checkin(CheckIn {
            device_id: DeviceId::new("d").unwrap(),
            seq: 3,
            at: 1,
            agent_version: "0.1.0".into(),
            model_digest: None,
            slot_state: None,
            health: "ok".into(),
            peak_rss_kib: Some(1),
        });
        let j = serde_json::to_string(&c).unwrap();
        assert!(j.starts_with("{\"type\":\"checkin\""), "{j}");
        assert_eq!(serde_json::from_str::<Statement>(&j).unwrap(), c);
        assert_eq!(c.seq(), 3);
        let extra = j.replacen("\"seq\":3", "\"seq\":3,\"admin\":true", 1);
        assert!(serde_json::from_str::<Statement>(&extra).is_err());
        let other = j.replacen("checkin", "firmware", 1);
        assert!(serde_json::from_str::<Statement>(&other).is_err());
    }
}
