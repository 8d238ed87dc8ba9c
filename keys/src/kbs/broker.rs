//! The broker's decisions, independent of HTTP: sessions and challenges,
//! appraisal of evidence against the model's policy, release of the sealed
//! data key, and the log row of every release and refusal.
//!
//! Order of checks at `attest` (first failure wins, each its own code):
//! session known → session not expired → body well-formed → nonce is this
//! session's → nonce not used before (then consumed, whatever follows) →
//! nonce not older than its time to live → evidence of the declared TEE →
//! model still registered → evidence authentic and bound to
//! `Binding { nonce, tls_spki_der, hpke_public_key }` → policy.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use confidant_attest::{Binding, Hex, UnixTime};

use super::Clock;
use super::appraise::Appraisal;
use super::limit::{Limiter, RateLimit};
use super::protocol::{
    AttestRequest, AttestResponse, AuthRequest, AuthResponse, MAX_TLS_SPKI_LEN, NONCE_LEN,
    ReasonCode, ResourceResponse, Tee,
};
use super::store::{NewEvent, Outcome, Store};
use crate::HPKE_PUBLIC_KEY_LEN;
use crate::header::KeyId;
use crate::kek::Kek;

/// Broker settings. [`KbsConfig::default`] is what `confidant kbs serve`
/// uses unless told otherwise.
#[derive(Debug, Clone)]
pub struct KbsConfig {
    /// How long a session lives from `auth` (attest and resource must both
    /// happen within it). Default 300 s.
    pub session_ttl: Duration,
    /// How long a challenge nonce may wait for `attest`. Default 60 s. The
    /// model policy's `max_age_seconds` applies as well.
    pub nonce_ttl: Duration,
    /// Most sessions open at once. Default 10,000.
    pub max_sessions: usize,
    /// Per-source limit of `auth`. Default 20 at once, 2/s.
    pub auth_rate: RateLimit,
    /// Per-source limit of `attest`. Default 10 at once, 1/s.
    pub attest_rate: RateLimit,
    /// Per-source limit of `resource`. Default 20 at once, 2/s.
    pub resource_rate: RateLimit,
    /// Apply [`confidant_attest::Policy::insecure_allow_dev_attester`] to every model policy:
    /// evidence of the insecure dev attester is then accepted. Development
    /// only; logged at start and at every use.
    pub insecure_allow_dev_attester: bool,
    /// DCAP collateral (`QuoteCollateralV3` JSON) for TDX quotes. Without
    /// it, TDX evidence is refused (`evidence_invalid`): the broker does
    /// not fetch collateral from the network.
    pub tdx_collateral: Option<Vec<u8>>,
    /// The device policy (`kbs serve --device-policy`): its `[tpm]
    /// ek_ca_files` are the CAs device EK certificates must chain to, and
    /// its PCR rules apply, on top of the model's policy, to every quote
    /// signed by a device's AK. Without it devices cannot enrol.
    pub device_policy: Option<confidant_attest::Policy>,
    /// Per-source limit of the device routes. Default 10 at once, 1/s.
    pub device_rate: RateLimit,
}

impl Default for KbsConfig {
    fn default() -> Self {
        KbsConfig {
            session_ttl: Duration::from_secs(300),
            nonce_ttl: Duration::from_secs(60),
            max_sessions: 10_000,
            auth_rate: RateLimit::new(20, 2.0),
            attest_rate: RateLimit::new(10, 1.0),
            resource_rate: RateLimit::new(20, 2.0),
            insecure_allow_dev_attester: false,
            tdx_collateral: None,
            device_policy: None,
            device_rate: RateLimit::new(10, 1.0),
        }
    }
}

/// A route of the protocol, for rate limits and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `POST /kbs/v1/auth`.
    Auth,
    /// `POST /kbs/v1/attest`.
    Attest,
    /// `GET /kbs/v1/resource/{key_id}`.
    Resource,
    /// `POST /kbs/v1/device/...` (enrol, activate, checkin, record).
    Device,
}

impl Route {
    /// The path as logged.
    pub fn path(self) -> &'static str {
        match self {
            Route::Auth => super::protocol::AUTH_PATH,
            Route::Attest => super::protocol::ATTEST_PATH,
            Route::Resource => "/kbs/v1/resource",
            Route::Device => "/kbs/v1/device",
        }
    }
}

struct Attested {
    hpke_public_key: [u8; HPKE_PUBLIC_KEY_LEN],
    tee: Tee,
    measurement: Option<String>,
    device: Option<String>,
}

struct Session {
    key_id: KeyId,
    tee: Tee,
    created_ms: u64,
    nonce: [u8; NONCE_LEN],
    nonce_used: bool,
    attested: Option<Attested>,
}

#[derive(Default)]
struct Sessions {
    map: HashMap<String, Session>,
    /// Nonces consumed by `attest`, with when they may be forgotten: a
    /// request replayed on another session is told `nonce_replayed`.
    used_nonces: HashMap<[u8; NONCE_LEN], u64>,
    /// When expired entries were last swept.
    last_prune_ms: u64,
}

/// Expired sessions and used nonces are swept at most this often (and
/// whenever the session table is full).
const PRUNE_EVERY_MS: u64 = 10_000;

/// Why a request was refused, with what the log keeps about it.
#[derive(Debug, Default)]
pub(crate) struct Refusal {
    pub(crate) code: Option<ReasonCode>,
    pub(crate) detail: String,
    pub(crate) key_id: Option<String>,
    pub(crate) tee: Option<Tee>,
    pub(crate) measurement: Option<String>,
}

impl Refusal {
    pub(crate) fn new(code: ReasonCode, detail: impl Into<String>) -> Self {
        Refusal {
            code: Some(code),
            detail: detail.into(),
            ..Default::default()
        }
    }
    fn key(mut self, k: &KeyId) -> Self {
        self.key_id = Some(k.to_string());
        self
    }
    fn tee(mut self, t: Tee) -> Self {
        self.tee = Some(t);
        self
    }
    fn code(&self) -> ReasonCode {
        self.code.unwrap_or(ReasonCode::Internal)
    }
}

/// The key broker: registry, KEK, sessions, limits and the clock.
pub struct Kbs {
    store: Arc<Store>,
    kek: Mutex<Box<dyn Kek + Send>>,
    config: KbsConfig,
    clock: Arc<dyn Clock>,
    sessions: Mutex<Sessions>,
    auth_limit: Limiter,
    attest_limit: Limiter,
    resource_limit: Limiter,
    device_limit: Limiter,
    pub(crate) pending_enrolments: super::device::PendingEnrolments,
}

impl std::fmt::Debug for Kbs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kbs")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded maps stay consistent at every await-free step, so a
    // panic elsewhere does not make them unusable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn random_bytes<const N: usize>() -> Result<[u8; N], Refusal> {
    let mut b = [0u8; N];
    crate::datakey::fill_random(&mut b)
        .map_err(|e| Refusal::new(ReasonCode::Internal, e.to_string()))?;
    Ok(b)
}

fn parse_json<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> Result<T, Refusal> {
    serde_json::from_slice(body).map_err(|e| Refusal::new(ReasonCode::BadRequest, e.to_string()))
}

impl Kbs {
    /// A broker over `store`, releasing keys wrapped by `kek`.
    pub fn new(
        store: Arc<Store>,
        kek: Box<dyn Kek + Send>,
        config: KbsConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        if config.insecure_allow_dev_attester {
            tracing::warn!(
                "key broker accepts the INSECURE dev attester for every model: \
                 keys are released to evidence that proves nothing"
            );
        }
        Kbs {
            auth_limit: Limiter::new(config.auth_rate),
            attest_limit: Limiter::new(config.attest_rate),
            resource_limit: Limiter::new(config.resource_rate),
            device_limit: Limiter::new(config.device_rate),
            pending_enrolments: Default::default(),
            store,
            kek: Mutex::new(kek),
            config,
            clock,
            sessions: Mutex::new(Sessions::default()),
        }
    }

    /// The database.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The settings.
    pub fn config(&self) -> &KbsConfig {
        &self.config
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    pub(crate) fn now(&self) -> UnixTime {
        UnixTime::from_secs(self.now_ms() / 1000)
    }

    /// Takes a rate-limit token for `route` from `source`; `Err(seconds)`
    /// to wait. Rate-limited requests are not written to the log (that is
    /// what the limit protects it from); they are counted in tracing.
    pub(crate) fn rate_check(&self, route: Route, source: IpAddr) -> Result<(), u64> {
        let l = match route {
            Route::Auth => &self.auth_limit,
            Route::Attest => &self.attest_limit,
            Route::Resource => &self.resource_limit,
            Route::Device => &self.device_limit,
        };
        l.check(source, self.now_ms())
    }

    /// Writes a refusal to the log and returns its code.
    pub(crate) fn refuse(&self, route: Route, source: IpAddr, r: Refusal) -> ReasonCode {
        let code = r.code();
        tracing::info!(
            route = route.path(),
            %source,
            key_id = r.key_id.as_deref().unwrap_or("-"),
            code = code.as_str(),
            detail = %r.detail,
            "key broker refusal"
        );
        let ev = NewEvent {
            source: Some(source.to_string()),
            route: route.path(),
            key_id: r.key_id,
            tee: r.tee.map(|t| t.as_str().to_owned()),
            measurement: r.measurement,
            reason: code.as_str().to_owned(),
            detail: Some(r.detail),
        };
        if let Err(e) = self.store.record(Outcome::Refusal, &ev, self.now()) {
            tracing::error!("could not log a refusal: {e}");
        }
        code
    }

    fn logged<T>(
        &self,
        route: Route,
        source: IpAddr,
        f: impl FnOnce() -> Result<T, Refusal>,
    ) -> Result<T, ReasonCode> {
        f().map_err(|r| self.refuse(route, source, r))
    }

    fn session_ttl_ms(&self) -> u64 {
        self.config
            .session_ttl
            .as_millis()
            .min(u128::from(u64::MAX)) as u64
    }

    fn nonce_ttl_ms(&self) -> u64 {
        self.config.nonce_ttl.as_millis().min(u128::from(u64::MAX)) as u64
    }

    /// Forgets expired sessions (kept one extra time to live, so a late
    /// request still hears `session_expired`) and used nonces past their
    /// horizon.
    fn prune(&self, s: &mut Sessions, now: u64) {
        let ttl = self.session_ttl_ms();
        s.map
            .retain(|_, v| now < v.created_ms.saturating_add(ttl).saturating_add(ttl));
        s.used_nonces.retain(|_, until| now < *until);
        s.last_prune_ms = now;
    }

    /// `POST /kbs/v1/auth`: a new session for a registered model, and its
    /// challenge. Returns the session id (the cookie value).
    pub(crate) fn auth(
        &self,
        source: IpAddr,
        body: &[u8],
    ) -> Result<(String, AuthResponse), ReasonCode> {
        self.logged(Route::Auth, source, || {
            let req: AuthRequest = parse_json(body)?;
            if !req.version.starts_with("0.1.") {
                return Err(Refusal::new(
                    ReasonCode::UnsupportedVersion,
                    format!("protocol version {:?}", req.version),
                )
                .tee(req.tee));
            }
            let key_id = KeyId::new(&req.key_id)
                .map_err(|e| Refusal::new(ReasonCode::BadRequest, e.to_string()).tee(req.tee))?;
            let known = self
                .store
                .model(&key_id)
                .map_err(|e| Refusal::new(ReasonCode::Internal, e.to_string()))?
                .is_some();
            if !known {
                return Err(
                    Refusal::new(ReasonCode::UnknownResource, "no such model registered")
                        .key(&key_id)
                        .tee(req.tee),
                );
            }
            let id = hex::encode(random_bytes::<32>()?);
            let nonce = random_bytes::<NONCE_LEN>()?;
            let now = self.now_ms();
            let mut s = lock(&self.sessions);
            if s.map.len() >= self.config.max_sessions
                || now.saturating_sub(s.last_prune_ms) >= PRUNE_EVERY_MS
            {
                self.prune(&mut s, now);
                if s.map.len() >= self.config.max_sessions {
                    return Err(Refusal::new(
                        ReasonCode::TooManySessions,
                        format!("{} sessions open", s.map.len()),
                    )
                    .key(&key_id)
                    .tee(req.tee));
                }
            }
            s.map.insert(
                id.clone(),
                Session {
                    key_id,
                    tee: req.tee,
                    created_ms: now,
                    nonce,
                    nonce_used: false,
                    attested: None,
                },
            );
            Ok((
                id,
                AuthResponse {
                    nonce: Hex(nonce.to_vec()),
                    nonce_ttl_seconds: self.config.nonce_ttl.as_secs(),
                    session_ttl_seconds: self.config.session_ttl.as_secs(),
                },
            ))
        })
    }

    /// Looks a session up; expired ones are removed and refused.
    fn with_session<T>(
        &self,
        map: &mut HashMap<String, Session>,
        id: Option<&str>,
        now: u64,
        f: impl FnOnce(&mut Session) -> Result<T, Refusal>,
    ) -> Result<T, Refusal> {
        let Some(id) = id else {
            return Err(Refusal::new(
                ReasonCode::UnknownSession,
                "no kbs-session-id cookie",
            ));
        };
        let Some(sess) = map.get_mut(id) else {
            return Err(Refusal::new(
                ReasonCode::UnknownSession,
                "session id not issued, or closed",
            ));
        };
        let age = now.saturating_sub(sess.created_ms);
        if age >= self.session_ttl_ms() {
            let r = Refusal::new(
                ReasonCode::SessionExpired,
                format!(
                    "session is {} ms old, time to live {} ms",
                    age,
                    self.session_ttl_ms()
                ),
            )
            .key(&sess.key_id)
            .tee(sess.tee);
            map.remove(id);
            return Err(r);
        }
        f(sess)
    }

    /// `POST /kbs/v1/attest`.
    pub(crate) fn attest(
        &self,
        source: IpAddr,
        session: Option<&str>,
        body: &[u8],
    ) -> Result<AttestResponse, ReasonCode> {
        self.logged(Route::Attest, source, || self.attest_inner(session, body))
    }

    fn attest_inner(&self, session: Option<&str>, body: &[u8]) -> Result<AttestResponse, Refusal> {
        let now = self.now_ms();
        // Under the lock: find the session, check and consume its nonce.
        let (key_id, tee, nonce, issued_ms, req) = {
            let mut s = lock(&self.sessions);
            let used_until = now
                .saturating_add(self.session_ttl_ms())
                .saturating_add(self.nonce_ttl_ms());
            let Sessions {
                map, used_nonces, ..
            } = &mut *s;
            self.with_session(map, session, now, |sess| {
                let ctx = |r: Refusal| r.key(&sess.key_id).tee(sess.tee);
                let req: AttestRequest = parse_json(body).map_err(ctx)?;
                if req.nonce.as_bytes() != sess.nonce {
                    let replayed = <[u8; NONCE_LEN]>::try_from(req.nonce.as_bytes())
                        .is_ok_and(|n| used_nonces.contains_key(&n));
                    return Err(ctx(if replayed {
                        Refusal::new(
                            ReasonCode::NonceReplayed,
                            "the request carries a nonce consumed by another session",
                        )
                    } else {
                        Refusal::new(
                            ReasonCode::BindingMismatch,
                            "the request's nonce is not this session's challenge",
                        )
                    }));
                }
                if sess.nonce_used {
                    return Err(ctx(Refusal::new(
                        ReasonCode::NonceReplayed,
                        "this session's challenge was already used",
                    )));
                }
                sess.nonce_used = true;
                used_nonces.insert(sess.nonce, used_until);
                Ok((
                    sess.key_id.clone(),
                    sess.tee,
                    sess.nonce,
                    sess.created_ms,
                    req,
                ))
            })?
        };
        let ctx = |r: Refusal| r.key(&key_id).tee(tee);

        let age = now.saturating_sub(issued_ms);
        if age > self.nonce_ttl_ms() {
            return Err(ctx(Refusal::new(
                ReasonCode::NonceExpired,
                format!(
                    "challenge is {age} ms old, time to live {} ms",
                    self.nonce_ttl_ms()
                ),
            )));
        }
        let got = Tee::of_bundle(&req.evidence);
        if got != Some(tee) {
            return Err(ctx(Refusal::new(
                ReasonCode::TeeMismatch,
                format!(
                    "declared {tee}, evidence is {}",
                    got.map_or("of an unsupported kind", |t| t.as_str())
                ),
            )));
        }
        let hpke_public_key: [u8; HPKE_PUBLIC_KEY_LEN] =
            req.hpke_public_key.as_bytes().try_into().map_err(|_| {
                ctx(Refusal::new(
                    ReasonCode::BadRequest,
                    format!(
                        "HPKE public key is {} bytes, X25519 takes {HPKE_PUBLIC_KEY_LEN}",
                        req.hpke_public_key.as_bytes().len()
                    ),
                ))
            })?;
        let spki = req.tls_spki_der.as_bytes();
        if spki.is_empty() || spki.len() > MAX_TLS_SPKI_LEN {
            return Err(ctx(Refusal::new(
                ReasonCode::BadRequest,
                format!("TLS SPKI is {} bytes (1..={MAX_TLS_SPKI_LEN})", spki.len()),
            )));
        }
        let model = self
            .store
            .model(&key_id)
            .map_err(|e| ctx(Refusal::new(ReasonCode::Internal, e.to_string())))?
            .ok_or_else(|| {
                ctx(Refusal::new(
                    ReasonCode::UnknownResource,
                    "model removed after auth",
                ))
            })?;
        let binding = Binding {
            nonce: &nonce,
            tls_spki_der: spki,
            hpke_public_key: &hpke_public_key,
        };
        let appraisal = Appraisal {
            policy_toml: &model.policy_toml,
            insecure_allow_dev_attester: self.config.insecure_allow_dev_attester,
            tdx_collateral: self.config.tdx_collateral.as_deref(),
            device_policy: self.config.device_policy.as_ref(),
            store: &self.store,
        };
        let issued_at = UnixTime::from_secs(issued_ms / 1000);
        match appraisal.appraise(tee, &binding, issued_at, &req.evidence, self.now()) {
            Ok(super::appraise::Appraised {
                measurement,
                device,
            }) => {
                let mut s = lock(&self.sessions);
                // The session may have been closed meanwhile; then there is
                // nothing to attach the verdict to.
                let sess = session.and_then(|id| s.map.get_mut(id)).ok_or_else(|| {
                    ctx(Refusal::new(
                        ReasonCode::UnknownSession,
                        "session closed during verification",
                    ))
                })?;
                sess.attested = Some(Attested {
                    hpke_public_key,
                    tee,
                    measurement,
                    device,
                });
                tracing::info!(key_id = %key_id, %tee, "evidence accepted");
                Ok(AttestResponse {
                    tee,
                    key_id: key_id.to_string(),
                })
            }
            Err(r) => Err(ctx(r)),
        }
    }

    /// `GET /kbs/v1/resource/{key_id}`: the data key sealed to the attested
    /// HPKE key. A session releases its key once, then is closed.
    pub(crate) fn resource(
        &self,
        source: IpAddr,
        session: Option<&str>,
        key_id: &str,
    ) -> Result<ResourceResponse, ReasonCode> {
        self.logged(Route::Resource, source, || {
            self.resource_inner(source, session, key_id)
        })
    }

    fn resource_inner(
        &self,
        source: IpAddr,
        session: Option<&str>,
        key_id: &str,
    ) -> Result<ResourceResponse, Refusal> {
        let now = self.now_ms();
        let asked = KeyId::new(key_id).map_err(|e| {
            let mut r = Refusal::new(ReasonCode::BadRequest, e.to_string());
            r.key_id = Some(key_id.chars().take(64).collect());
            r
        })?;
        let (tee, hpke_pk, measurement, device) = {
            let mut s = lock(&self.sessions);
            let id = session;
            let out = self.with_session(&mut s.map, id, now, |sess| {
                let ctx = |r: Refusal| r.key(&asked).tee(sess.tee);
                if sess.key_id != asked {
                    return Err(ctx(Refusal::new(
                        ReasonCode::ResourceNotAuthorized,
                        format!("session is for key id {}", sess.key_id),
                    )));
                }
                let Some(a) = &sess.attested else {
                    return Err(ctx(Refusal::new(
                        ReasonCode::NotAttested,
                        "no accepted evidence on this session",
                    )));
                };
                Ok((
                    a.tee,
                    a.hpke_public_key,
                    a.measurement.clone(),
                    a.device.clone(),
                ))
            });
            let out = out.map_err(|mut r| {
                if r.key_id.is_none() {
                    r.key_id = Some(asked.to_string());
                }
                r
            })?;
            // Close the session: one release per attestation.
            if let Some(id) = id {
                s.map.remove(id);
            }
            out
        };
        let ctx = |r: Refusal| {
            let mut r = r.key(&asked).tee(tee);
            r.measurement = measurement.clone();
            r
        };
        let model = self
            .store
            .model(&asked)
            .map_err(|e| ctx(Refusal::new(ReasonCode::Internal, e.to_string())))?
            .ok_or_else(|| {
                ctx(Refusal::new(
                    ReasonCode::UnknownResource,
                    "model removed after attest",
                ))
            })?;
        let sealed = {
            let kek = lock(&self.kek);
            let key = kek.unwrap(&model.wrapped).map_err(|e| {
                ctx(Refusal::new(
                    ReasonCode::Internal,
                    format!("unwrapping: {e}"),
                ))
            })?;
            crate::seal_to_hpke(&key, &asked, &hpke_pk)
                .map_err(|e| ctx(Refusal::new(ReasonCode::Internal, e.to_string())))?
        };
        // The release is logged before the key leaves; no log row, no key.
        let ev = NewEvent {
            source: Some(source.to_string()),
            route: Route::Resource.path(),
            key_id: Some(asked.to_string()),
            tee: Some(tee.as_str().to_owned()),
            measurement: measurement.clone(),
            reason: "released".into(),
            detail: Some(match &device {
                None => format!("sealed to HPKE key {}", hex::encode(hpke_pk)),
                Some(d) => format!("sealed to HPKE key {} for device {d}", hex::encode(hpke_pk)),
            }),
        };
        self.store
            .record(Outcome::Release, &ev, self.now())
            .map_err(|e| ctx(Refusal::new(ReasonCode::Internal, e.to_string())))?;
        tracing::info!(key_id = %asked, %tee, %source, "data key released");
        Ok(ResourceResponse {
            key_id: asked.to_string(),
            enc: Hex(sealed.enc.to_vec()),
            ciphertext: Hex(sealed.ciphertext),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_table_is_bounded_and_swept() {
        let dir = tempfile::tempdir().unwrap();
        let kek = crate::FileKek::generate(&dir.path().join("k")).unwrap();
        let id = KeyId::new("m").unwrap();
        let store = Arc::new(Store::open_in_memory().unwrap());
        let wrapped = kek.wrap(&id, &crate::DataKey::generate().unwrap()).unwrap();
        store
            .add_model(&wrapped, "", false, UnixTime::from_secs(0))
            .unwrap();
        let clock = Arc::new(super::super::ManualClock::new(Duration::from_secs(1_000)));
        let kbs = Kbs::new(
            store.clone(),
            Box::new(kek),
            KbsConfig {
                max_sessions: 2,
                ..KbsConfig::default()
            },
            clock.clone(),
        );
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let body = br#"{"version":"0.1.0","tee":"tpm","key_id":"m"}"#;
        kbs.auth(ip, body).unwrap();
        kbs.auth(ip, body).unwrap();
        assert_eq!(kbs.auth(ip, body).unwrap_err(), ReasonCode::TooManySessions);
        // Expired sessions are swept (after one extra time to live).
        clock.advance(kbs.config().session_ttl * 2);
        kbs.auth(ip, body).unwrap();
        assert_eq!(
            kbs.auth(ip, br#"{"version":"0.2.0","tee":"tpm","key_id":"m"}"#)
                .unwrap_err(),
            ReasonCode::UnsupportedVersion
        );
        assert_eq!(
            kbs.auth(ip, br#"{"version":"0.1.0","tee":"tpm","key_id":"m","x":1}"#)
                .unwrap_err(),
            ReasonCode::BadRequest
        );
        let log = store.recent_events(10).unwrap();
        let reasons: Vec<&str> = log.iter().map(|e| e.reason.as_str()).collect();
        assert_eq!(
            reasons,
            ["bad_request", "unsupported_version", "too_many_sessions"]
        );
    }
}
