//! Edge devices in the key broker (`keys/KBS.md` §8): enrolment by EK
//! certificate and credential activation, revocation, and the statements
//! devices sign with their AK (check-ins and inference records).
//!
//! * Enrolment: `enrol` checks the EK certificate against the EK CAs of the
//!   device policy (`kbs serve --device-policy`) and the AK's attributes,
//!   and answers with TPM2_MakeCredential to that EK for that AK's Name
//!   ([`confidant_attest::tpm::Enrolment`]); `activate` takes what
//!   TPM2_ActivateCredential recovered. Only the TPM holding that EK, with
//!   that AK loaded, can recover it. Then EK, AK and device id are stored as
//!   one record.
//! * Key release to a device is the ordinary auth → attest → resource
//!   exchange with `tee = "tpm"`: a quote signed by a device's AK is
//!   appraised against the model's policy *and* the device policy (PCRs),
//!   and refused once the device is revoked.
//! * Statements: a device signs `"confidant/edge-statement/v1\0" ‖
//!   SHA-256(payload)` with its AK (TPM2_Hash + TPM2_Sign); the broker
//!   verifies it with the enrolled AK, refuses a sequence number it has
//!   seen, and keeps the last check-in.
//!
//! Every device request, accepted or refused, is written to the
//! append-only device log; key releases stay in the release log.

pub mod client;
pub mod protocol;
mod store;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use confidant_attest::tpm::{CredentialChallenge, Enrolment};
use confidant_attest::{Hex, UnixTime};
use sha2::{Digest, Sha256};

pub use protocol::{
    ActivateRequest, ActivateResponse, CheckIn, DeviceId, EnrolRequest, EnrolResponse,
    InferenceRecord, SignedStatement, Statement, StatementAccepted, statement_message,
};
pub use store::{Device, DeviceEvent};
pub(crate) use store::{NewDeviceEvent, SCHEMA};

use super::Kbs;
use super::broker::Refusal;
use super::protocol::ReasonCode;

/// How long an enrolment waits for `activate`, milliseconds.
const ENROLMENT_TTL_MS: u64 = 60_000;
/// Most enrolments waiting at once.
const MAX_PENDING: usize = 1024;

struct Pending {
    device_id: DeviceId,
    ek_cert_der: Vec<u8>,
    enrolment: Enrolment,
    created_ms: u64,
}

/// Enrolments waiting for `activate`.
#[derive(Default)]
pub(crate) struct PendingEnrolments(Mutex<HashMap<String, Pending>>);

/// Which statement a route takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatementKind {
    Checkin,
    Record,
}

impl StatementKind {
    fn path(self) -> &'static str {
        match self {
            StatementKind::Checkin => protocol::CHECKIN_PATH,
            StatementKind::Record => protocol::RECORD_PATH,
        }
    }
}

fn parse<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> Result<T, Refusal> {
    serde_json::from_slice(body).map_err(|e| Refusal::new(ReasonCode::BadRequest, e.to_string()))
}

impl Kbs {
    /// Runs a device route and logs its outcome in the device log.
    fn device_logged<T>(
        &self,
        route: &'static str,
        source: IpAddr,
        f: impl FnOnce(&mut Option<String>) -> Result<(T, String, String), Refusal>,
    ) -> Result<T, ReasonCode> {
        let mut device = None;
        let r = f(&mut device);
        let (ev, out) = match r {
            Ok((v, reason, detail)) => (
                NewDeviceEvent {
                    source: Some(source.to_string()),
                    route,
                    device_id: device,
                    accepted: true,
                    reason,
                    detail: Some(detail),
                },
                Ok(v),
            ),
            Err(refusal) => {
                let code = refusal.code.unwrap_or(ReasonCode::Internal);
                tracing::info!(route, %source, device = device.as_deref().unwrap_or("-"),
                    code = code.as_str(), detail = %refusal.detail, "device request refused");
                (
                    NewDeviceEvent {
                        source: Some(source.to_string()),
                        route,
                        device_id: device,
                        accepted: false,
                        reason: code.as_str().to_owned(),
                        detail: Some(refusal.detail),
                    },
                    Err(code),
                )
            }
        };
        if let Err(e) = self.store().record_device_event(&ev, self.now()) {
            tracing::error!("could not write the device log: {e}");
            // No log row, no acceptance.
            return Err(ReasonCode::Internal);
        }
        out
    }

    /// `POST /kbs/v1/device/enrol`.
    pub(crate) fn device_enrol(
        &self,
        source: IpAddr,
        body: &[u8],
    ) -> Result<EnrolResponse, ReasonCode> {
        self.device_logged(protocol::ENROL_PATH, source, |dev| {
            let req: EnrolRequest = parse(body)?;
            *dev = Some(req.device_id.to_string());
            let policy = self.config().device_policy.as_ref().ok_or_else(|| {
                Refusal::new(
                    ReasonCode::EnrolmentRefused,
                    "no device policy configured (kbs serve --device-policy)",
                )
            })?;
            let internal = |e: crate::Error| Refusal::new(ReasonCode::Internal, e.to_string());
            if self
                .store()
                .device(&req.device_id)
                .map_err(internal)?
                .is_some()
            {
                return Err(Refusal::new(
                    ReasonCode::DeviceExists,
                    format!("device id {} is enrolled already", req.device_id),
                ));
            }
            let ek_der = confidant_attest::tpm::certificate_der(req.ek_cert.as_bytes())
                .map_err(|e| Refusal::new(ReasonCode::EnrolmentRefused, e.to_string()))?;
            let (
                enrolment,
                CredentialChallenge {
                    credential_blob,
                    encrypted_secret,
                },
            ) = Enrolment::start(
                &ek_der,
                &policy.tpm.ek_cas_der,
                req.ak_public.as_bytes(),
                self.now(),
            )
            .map_err(|e| Refusal::new(ReasonCode::EnrolmentRefused, e.to_string()))?;
            let mut id = [0u8; 32];
            crate::datakey::fill_random(&mut id).map_err(internal)?;
            let id = hex::encode(id);
            let now = self.now_ms();
            let mut pending = self
                .pending_enrolments
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            pending.retain(|_, p| now.saturating_sub(p.created_ms) < ENROLMENT_TTL_MS);
            if pending.len() >= MAX_PENDING {
                return Err(Refusal::new(
                    ReasonCode::TooManySessions,
                    format!("{} enrolments waiting", pending.len()),
                ));
            }
            let detail = format!(
                "credential for AK {} to EK certificate sha256 {}",
                hex::encode(confidant_attest::tpm::wire::name_of(
                    req.ak_public.as_bytes()
                )),
                hex::encode(Sha256::digest(&ek_der))
            );
            pending.insert(
                id.clone(),
                Pending {
                    device_id: req.device_id,
                    ek_cert_der: ek_der,
                    enrolment,
                    created_ms: now,
                },
            );
            Ok((
                EnrolResponse {
                    enrolment_id: id,
                    credential_blob,
                    encrypted_secret,
                    ttl_seconds: ENROLMENT_TTL_MS / 1000,
                },
                "challenged".to_owned(),
                detail,
            ))
        })
    }

    /// `POST /kbs/v1/device/activate`.
    pub(crate) fn device_activate(
        &self,
        source: IpAddr,
        body: &[u8],
    ) -> Result<ActivateResponse, ReasonCode> {
        self.device_logged(protocol::ACTIVATE_PATH, source, |dev| {
            let req: ActivateRequest = parse(body)?;
            // Single use: taken out whatever the outcome.
            let p = self
                .pending_enrolments
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&req.enrolment_id)
                .ok_or_else(|| {
                    Refusal::new(
                        ReasonCode::EnrolmentRefused,
                        "no such enrolment waiting (unknown, used, or expired)",
                    )
                })?;
            *dev = Some(p.device_id.to_string());
            let age = self.now_ms().saturating_sub(p.created_ms);
            if age >= ENROLMENT_TTL_MS {
                return Err(Refusal::new(
                    ReasonCode::EnrolmentRefused,
                    format!("enrolment is {age} ms old, time to live {ENROLMENT_TTL_MS} ms"),
                ));
            }
            let ak = p
                .enrolment
                .finish(req.activated.as_bytes())
                .map_err(|e| Refusal::new(ReasonCode::EnrolmentRefused, e.to_string()))?;
            match self
                .store()
                .add_device(&p.device_id, &p.ek_cert_der, &ak, self.now())
            {
                Ok(()) => {}
                Err(store::AddDevice::Exists(why)) => {
                    return Err(Refusal::new(ReasonCode::DeviceExists, why));
                }
                Err(store::AddDevice::Failed(e)) => {
                    return Err(Refusal::new(ReasonCode::Internal, e.to_string()));
                }
            }
            tracing::info!(device = %p.device_id, ak = %hex::encode(ak.name()), "device enrolled");
            Ok((
                ActivateResponse {
                    device_id: p.device_id,
                    ak_name: Hex(ak.name().to_vec()),
                },
                "enrolled".to_owned(),
                format!("AK {}", hex::encode(ak.name())),
            ))
        })
    }

    /// `POST /kbs/v1/device/checkin` and `/kbs/v1/device/record`.
    pub(crate) fn device_statement(
        &self,
        kind: StatementKind,
        source: IpAddr,
        body: &[u8],
    ) -> Result<StatementAccepted, ReasonCode> {
        self.device_logged(kind.path(), source, |dev| {
            let req: SignedStatement = parse(body)?;
            *dev = Some(req.device_id.to_string());
            if req.payload.len() > protocol::MAX_PAYLOAD_LEN {
                return Err(Refusal::new(
                    ReasonCode::PayloadTooLarge,
                    format!("payload over {} bytes", protocol::MAX_PAYLOAD_LEN),
                ));
            }
            let device = self
                .store()
                .device(&req.device_id)
                .map_err(|e| Refusal::new(ReasonCode::Internal, e.to_string()))?
                .ok_or_else(|| Refusal::new(ReasonCode::UnknownDevice, "not enrolled"))?;
            if let Some(at) = device.revoked_at {
                return Err(Refusal::new(
                    ReasonCode::DeviceRevoked,
                    format!("revoked at {}", UnixTime::from_secs(at)),
                ));
            }
            let message = statement_message(req.payload.as_bytes());
            confidant_attest::tpm::verify_ak_signature(
                &device.ak,
                &message,
                req.signature.as_bytes(),
            )
            .map_err(|e| Refusal::new(ReasonCode::SignatureInvalid, e.to_string()))?;
            let statement: Statement = parse(req.payload.as_bytes())?;
            if statement.device_id() != &req.device_id {
                return Err(Refusal::new(
                    ReasonCode::BadRequest,
                    format!("statement is about device {}", statement.device_id()),
                ));
            }
            let (checkin, reason) = match (&statement, kind) {
                (Statement::Checkin(_), StatementKind::Checkin) => {
                    (Some(req.payload.as_str()), "checked_in")
                }
                (Statement::Record(_), StatementKind::Record) => (None, "record_verified"),
                _ => {
                    return Err(Refusal::new(
                        ReasonCode::BadRequest,
                        "statement type does not match the route",
                    ));
                }
            };
            let seq = statement.seq();
            let fresh = self
                .store()
                .accept_statement(&req.device_id, seq, checkin, self.now())
                .map_err(|e| Refusal::new(ReasonCode::Internal, e.to_string()))?;
            if !fresh {
                return Err(Refusal::new(
                    ReasonCode::StatementReplayed,
                    format!("sequence number {seq} not above {}", device.last_seq),
                ));
            }
            let digest = Sha256::digest(req.payload.as_bytes()).to_vec();
            let detail = match &statement {
                Statement::Record(r) => format!(
                    "seq {seq}, payload sha256 {}, model {}, trigger {}",
                    hex::encode(&digest),
                    r.model_digest,
                    r.trigger
                ),
                Statement::Checkin(c) => {
                    format!("seq {seq}, agent {}, health {}", c.agent_version, c.health)
                }
            };
            Ok((
                StatementAccepted {
                    device_id: req.device_id,
                    seq,
                    payload_sha256: Hex(digest),
                },
                reason.to_owned(),
                detail,
            ))
        })
    }
}
