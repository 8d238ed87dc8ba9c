//! The wire protocol of the key broker (`keys/KBS.md`): JSON bodies, the
//! session cookie, the bounds, and the reason codes of refusals.
//!
//! Shaped after the Confidential Containers KBS protocol (trustee,
//! `kbs/docs/kbs_attestation_protocol.md`): `auth` → challenge, `attest` →
//! evidence, `resource` → the secret, with a session cookie tying the three
//! together. It differs where Confidant's trust flow differs: the evidence
//! binds the requester's TLS SPKI and HPKE public key (DESIGN.md, trust flow
//! step 2), and the resource is a data key sealed with HPKE (RFC 9180), not
//! a JWE.

use std::fmt;

use confidant_attest::{EvidenceBundle, Hex, TeeKind};
use serde::{Deserialize, Serialize};

/// Protocol version sent in [`AuthRequest::version`]; the broker accepts
/// any `0.1.x`.
pub const PROTOCOL_VERSION: &str = "0.1.0";
/// Name of the session cookie (as in the CoCo KBS).
pub const SESSION_COOKIE: &str = "kbs-session-id";
/// Length of a challenge nonce.
pub const NONCE_LEN: usize = 32;
/// Largest request body the broker reads: an evidence bundle plus the
/// surrounding fields.
pub const MAX_REQUEST_LEN: usize = confidant_attest::MAX_BUNDLE_LEN + 16 * 1024;
/// Largest response body the client reads (every response is small JSON).
pub const MAX_RESPONSE_LEN: usize = 16 * 1024;
/// Largest TLS `SubjectPublicKeyInfo` accepted in an attest request.
pub const MAX_TLS_SPKI_LEN: usize = 4096;

/// Route of the challenge request.
pub const AUTH_PATH: &str = "/kbs/v1/auth";
/// Route of the evidence submission.
pub const ATTEST_PATH: &str = "/kbs/v1/attest";
/// Route prefix of resources: `/kbs/v1/resource/{key_id}`.
pub const RESOURCE_PREFIX: &str = "/kbs/v1/resource/";

/// The kind of TEE a requester declares (and its evidence must be).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tee {
    /// AMD SEV-SNP.
    Snp,
    /// Intel TDX.
    Tdx,
    /// TPM 2.0.
    Tpm,
    /// The insecure development attester (refused unless the broker runs
    /// with `insecure_allow_dev_attester`).
    InsecureDev,
}

impl Tee {
    /// `snp`, `tdx`, `tpm` or `insecure-dev`.
    pub fn as_str(self) -> &'static str {
        match self {
            Tee::Snp => "snp",
            Tee::Tdx => "tdx",
            Tee::Tpm => "tpm",
            Tee::InsecureDev => "insecure-dev",
        }
    }

    /// The kind of an evidence bundle (`None` for kinds the broker does not
    /// take).
    pub fn of_bundle(b: &EvidenceBundle) -> Option<Tee> {
        match b {
            EvidenceBundle::Snp { .. } => Some(Tee::Snp),
            EvidenceBundle::Tdx { .. } => Some(Tee::Tdx),
            EvidenceBundle::Tpm { .. } => Some(Tee::Tpm),
            EvidenceBundle::InsecureDev { .. } => Some(Tee::InsecureDev),
            _ => None,
        }
    }

    /// The attest crate's name for this kind.
    pub fn tee_kind(self) -> TeeKind {
        match self {
            Tee::Snp => TeeKind::Snp,
            Tee::Tdx => TeeKind::Tdx,
            Tee::Tpm => TeeKind::Tpm,
            Tee::InsecureDev => TeeKind::InsecureDev,
        }
    }
}

impl fmt::Display for Tee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Tee {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "snp" => Ok(Tee::Snp),
            "tdx" => Ok(Tee::Tdx),
            "tpm" => Ok(Tee::Tpm),
            "insecure-dev" => Ok(Tee::InsecureDev),
            other => Err(crate::Error::invalid(
                "TEE kind",
                format!("{other:?} (expected snp, tdx, tpm or insecure-dev)"),
            )),
        }
    }
}

/// `POST /kbs/v1/auth` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthRequest {
    /// [`PROTOCOL_VERSION`].
    pub version: String,
    /// The TEE the requester will attest with.
    pub tee: Tee,
    /// The model key the session is for; its policy appraises the evidence.
    pub key_id: String,
}

/// `POST /kbs/v1/auth` answer (the session id travels in the
/// `kbs-session-id` cookie).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthResponse {
    /// Fresh 32-byte challenge, hex; single use.
    pub nonce: Hex,
    /// Seconds the nonce stays valid for `attest`.
    pub nonce_ttl_seconds: u64,
    /// Seconds the session stays valid (auth, attest and resource).
    pub session_ttl_seconds: u64,
}

/// `POST /kbs/v1/attest` body. The broker recomputes
/// `Binding { nonce, tls_spki_der, hpke_public_key }` and requires the
/// evidence's REPORT_DATA (TPM: extraData) to equal it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestRequest {
    /// The session's challenge, echoed (hex).
    pub nonce: Hex,
    /// DER `SubjectPublicKeyInfo` of the requester's TLS key (hex).
    pub tls_spki_der: Hex,
    /// The requester's X25519 HPKE public key, 32 bytes (hex); the data key
    /// is sealed to it.
    pub hpke_public_key: Hex,
    /// The evidence, as `confidant_attest::EvidenceBundle` JSON.
    pub evidence: EvidenceBundle,
}

/// `POST /kbs/v1/attest` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestResponse {
    /// The TEE whose evidence was accepted.
    pub tee: Tee,
    /// The key id the session may now fetch.
    pub key_id: String,
}

/// `GET /kbs/v1/resource/{key_id}` answer: the data key sealed to the
/// attested HPKE key (`keys/FORMAT.md` §5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceResponse {
    /// The key id (also bound into the HPKE `info`).
    pub key_id: String,
    /// HPKE encapsulated key, 32 bytes (hex).
    pub enc: Hex,
    /// HPKE ciphertext of the data key, 48 bytes (hex).
    pub ciphertext: Hex,
}

/// Body of every refusal: a reason code and nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorResponse {
    /// A [`ReasonCode`] string.
    pub error: String,
}

/// Why the broker refused a request. The code is all the requester learns;
/// the broker's log keeps the detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReasonCode {
    /// The body is not the JSON the route takes, or a field is out of range.
    BadRequest,
    /// The body exceeds [`MAX_REQUEST_LEN`].
    PayloadTooLarge,
    /// `version` is not `0.1.x`.
    UnsupportedVersion,
    /// No model with that key id is registered.
    UnknownResource,
    /// No session cookie, or one the broker never issued (or already closed).
    UnknownSession,
    /// The session outlived its time to live.
    SessionExpired,
    /// The challenge was already used (a second attest on a session, or a
    /// request replayed from another session).
    NonceReplayed,
    /// The challenge is older than the nonce time to live or the policy's
    /// `max_age_seconds`.
    NonceExpired,
    /// The evidence is not of the TEE kind declared at `auth`.
    TeeMismatch,
    /// The policy does not accept this TEE kind.
    TeeNotAccepted,
    /// Evidence of the insecure dev attester under a policy that refuses it.
    InsecureAttester,
    /// The evidence is not authentic (signature, chain, dates, structure).
    EvidenceInvalid,
    /// A TPM quote signed by an AK that was never enrolled with this broker.
    TpmAkUnknown,
    /// REPORT_DATA (TPM extraData) does not bind this nonce, TLS key and
    /// HPKE key.
    BindingMismatch,
    /// A measurement (SNP measurement, TDX MRTD/RTMR, TPM PCR) is not allowed.
    PolicyMeasurement,
    /// A debug guest where the policy refuses debug.
    PolicyDebug,
    /// TCB below the policy's minimum (SNP TCB/SVN, TDX TCB status or advisory).
    PolicyTcb,
    /// Another policy rule failed.
    PolicyOther,
    /// `resource` before a successful `attest` on this session.
    NotAttested,
    /// `resource` for a key id other than the session's.
    ResourceNotAuthorized,
    /// Too many requests from this source; retry after `Retry-After` seconds.
    RateLimited,
    /// The broker holds its maximum number of open sessions.
    TooManySessions,
    /// The broker failed (database, KEK); nothing was released.
    Internal,
    /// Enrolment refused: EK certificate not from a configured EK CA,
    /// AK not a restricted TPM-resident signing key, credential activation
    /// returned the wrong secret, or the enrolment is unknown or expired.
    EnrolmentRefused,
    /// The device id, or this TPM, is enrolled already.
    DeviceExists,
    /// No device with that id is enrolled.
    UnknownDevice,
    /// The device was revoked.
    DeviceRevoked,
    /// A statement's signature does not verify under the device's AK.
    SignatureInvalid,
    /// A statement's sequence number is not above the last one accepted.
    StatementReplayed,
}

impl ReasonCode {
    /// Every code, for documentation and tests.
    pub const ALL: [ReasonCode; 29] = [
        ReasonCode::BadRequest,
        ReasonCode::PayloadTooLarge,
        ReasonCode::UnsupportedVersion,
        ReasonCode::UnknownResource,
        ReasonCode::UnknownSession,
        ReasonCode::SessionExpired,
        ReasonCode::NonceReplayed,
        ReasonCode::NonceExpired,
        ReasonCode::TeeMismatch,
        ReasonCode::TeeNotAccepted,
        ReasonCode::InsecureAttester,
        ReasonCode::EvidenceInvalid,
        ReasonCode::TpmAkUnknown,
        ReasonCode::BindingMismatch,
        ReasonCode::PolicyMeasurement,
        ReasonCode::PolicyDebug,
        ReasonCode::PolicyTcb,
        ReasonCode::PolicyOther,
        ReasonCode::NotAttested,
        ReasonCode::ResourceNotAuthorized,
        ReasonCode::RateLimited,
        ReasonCode::TooManySessions,
        ReasonCode::Internal,
        ReasonCode::EnrolmentRefused,
        ReasonCode::DeviceExists,
        ReasonCode::UnknownDevice,
        ReasonCode::DeviceRevoked,
        ReasonCode::SignatureInvalid,
        ReasonCode::StatementReplayed,
    ];

    /// The code as sent in [`ErrorResponse::error`] and kept in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::BadRequest => "bad_request",
            ReasonCode::PayloadTooLarge => "payload_too_large",
            ReasonCode::UnsupportedVersion => "unsupported_version",
            ReasonCode::UnknownResource => "unknown_resource",
            ReasonCode::UnknownSession => "unknown_session",
            ReasonCode::SessionExpired => "session_expired",
            ReasonCode::NonceReplayed => "nonce_replayed",
            ReasonCode::NonceExpired => "nonce_expired",
            ReasonCode::TeeMismatch => "tee_mismatch",
            ReasonCode::TeeNotAccepted => "tee_not_accepted",
            ReasonCode::InsecureAttester => "insecure_attester",
            ReasonCode::EvidenceInvalid => "evidence_invalid",
            ReasonCode::TpmAkUnknown => "tpm_ak_unknown",
            ReasonCode::BindingMismatch => "binding_mismatch",
            ReasonCode::PolicyMeasurement => "policy_measurement",
            ReasonCode::PolicyDebug => "policy_debug",
            ReasonCode::PolicyTcb => "policy_tcb",
            ReasonCode::PolicyOther => "policy_other",
            ReasonCode::NotAttested => "not_attested",
            ReasonCode::ResourceNotAuthorized => "resource_not_authorized",
            ReasonCode::RateLimited => "rate_limited",
            ReasonCode::TooManySessions => "too_many_sessions",
            ReasonCode::Internal => "internal_error",
            ReasonCode::EnrolmentRefused => "enrolment_refused",
            ReasonCode::DeviceExists => "device_exists",
            ReasonCode::UnknownDevice => "unknown_device",
            ReasonCode::DeviceRevoked => "device_revoked",
            ReasonCode::SignatureInvalid => "signature_invalid",
            ReasonCode::StatementReplayed => "statement_replayed",
        }
    }

    /// Parses a code string.
    pub fn from_code(s: &str) -> Option<ReasonCode> {
        ReasonCode::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for c in ReasonCode::ALL {
            assert!(seen.insert(c.as_str()), "duplicate {c}");
            assert_eq!(ReasonCode::from_code(c.as_str()), Some(c));
        }
        assert_eq!(ReasonCode::from_code("nope"), None);
    }

    #[test]
    fn tee_names_round_trip() {
        for t in [Tee::Snp, Tee::Tdx, Tee::Tpm, Tee::InsecureDev] {
            assert_eq!(t.as_str().parse::<Tee>().unwrap(), t);
            let j = serde_json::to_string(&t).unwrap();
            assert_eq!(j, format!("\"{}\"", t.as_str()));
            assert_eq!(t.tee_kind().to_string(), t.as_str());
        }
    }
}
