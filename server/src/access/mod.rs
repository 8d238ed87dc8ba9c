//! Access control for `confidant serve`: API keys, permissions, quotas,
//! request limits and the audit log, as one axum middleware.
//!
//! - `/healthz`, `/readyz`, `/metrics`, `/v1/attestation` and unknown URLs
//!   need no key; they are rate limited per source address.
//! - Every other route needs `Authorization: Bearer KEY` with a live key:
//!   `/v1/watermark/detect` the `detect` permission, the rest `chat`.
//!   Failed authentication also spends the source address's quota, so key
//!   guessing is rate limited too.
//! - A key's requests/min and in-flight quota are spent here; its tokens/min
//!   in the completion handler, through the [`Caller`] request extension
//!   (see [`quota`] for how tokens are counted).
//! - Each request (but health, readiness and metrics probes that access
//!   control let through) becomes one audit line when its response has
//!   been sent.
//!
//! With `[auth] required = false` (development only; logged as a warning)
//! requests without a valid key pass as anonymous, limited per address.

pub mod body;
mod caller;
pub mod headers;
pub mod keys;
pub mod quota;
pub mod store;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::sync::OwnedSemaphorePermit;

use crate::api::error::ApiError;
use crate::audit::{AuditLog, Record, rfc3339};
use crate::config::ServeConfig;
use crate::state::AppState;
use keys::{KeyId, Permission};
use quota::{AddressLimiter, Denied, KeyQuota, KeyQuotas, RateInfo};
use store::{KeyStore, Lookup};

pub use caller::Caller;

/// `[auth]` configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Require an API key on every route but the open ones. `false` is for
    /// development only.
    pub required: bool,
    /// The API key store (default: `api-keys.json` in the state directory).
    pub keys_file: Option<PathBuf>,
    /// Requests per minute per source address on routes without a key and
    /// for failed authentication.
    pub per_address_rpm: u32,
    /// Of those, how many may come at once.
    pub per_address_burst: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            required: true,
            keys_file: None,
            per_address_rpm: 600,
            per_address_burst: 60,
        }
    }
}

impl AuthConfig {
    /// The key store of a server whose state directory is `state_dir`.
    pub fn keys_path_in(&self, state_dir: &Path) -> PathBuf {
        self.keys_file
            .clone()
            .unwrap_or_else(|| state_dir.join("api-keys.json"))
    }
}

/// Why access control refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization: Bearer` key (401).
    MissingKey,
    /// A key this server does not know (401).
    InvalidKey,
    /// A revoked key (401).
    RevokedKey,
    /// A valid key without the route's permission (403).
    Forbidden(Permission),
    /// A quota is spent (429).
    Limited(Denied),
}

impl Refusal {
    /// Metric label and audit `reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingKey => "missing_key",
            Self::InvalidKey => "invalid_key",
            Self::RevokedKey => "revoked_key",
            Self::Forbidden(_) => "permission",
            Self::Limited(d) => d.reason(),
        }
    }
}

/// What a route needs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Need {
    Open,
    Key(Permission),
}

fn need(route: &str) -> Need {
    match route {
        "/healthz" | "/readyz" | "/metrics" | "/v1/attestation" | UNMATCHED => Need::Open,
        "/v1/watermark/detect" => Need::Key(Permission::Detect),
        // Everything else, routes added later included, needs a key.
        _ => Need::Key(Permission::Chat),
    }
}

const UNMATCHED: &str = "unmatched";

fn is_probe(route: &str) -> bool {
    matches!(route, "/healthz" | "/readyz" | "/metrics")
}

/// Access control state, built once at start-up.
pub struct Access {
    required: bool,
    keys: KeyStore,
    quotas: KeyQuotas,
    addresses: AddressLimiter,
    audit: Option<AuditLog>,
    idle: Duration,
    total: Duration,
    rejections: Mutex<BTreeMap<(u16, &'static str), u64>>,
    warned_no_addr: AtomicBool,
}

impl Access {
    /// Opens the key store and the audit log that `config` names.
    pub fn from_config(config: &ServeConfig) -> anyhow::Result<Self> {
        let auth = &config.auth;
        let keys_path = auth.keys_path_in(&config.state_dir);
        let keys = KeyStore::open(&keys_path)?;
        if auth.required {
            tracing::info!(
                store = %keys_path.display(),
                live_keys = keys.live_keys(),
                "API keys required"
            );
            if keys.live_keys() == 0 {
                tracing::warn!(
                    store = %keys_path.display(),
                    "no API keys yet: every API request is refused until `confidant apikey create` adds one"
                );
            }
        } else {
            tracing::warn!(
                "API keys are NOT required ([auth] required = false): development only; requests without a valid key pass as anonymous"
            );
        }
        let audit = if config.audit.enabled {
            let p = config.audit.path_in(&config.state_dir);
            let log = AuditLog::open(&p, &config.audit)?;
            if log.include_content() {
                tracing::warn!(path = %p.display(), "the audit log records prompt and completion TEXT");
            }
            Some(log)
        } else {
            tracing::warn!("audit log disabled ([audit] enabled = false)");
            None
        };
        Ok(Self {
            required: auth.required,
            keys,
            quotas: KeyQuotas::default(),
            addresses: AddressLimiter::new(
                auth.per_address_rpm,
                auth.per_address_burst,
                Default::default(),
            ),
            audit,
            idle: Duration::from_secs(config.idle_timeout_secs.max(1)),
            total: Duration::from_secs(config.request_timeout_secs.max(1)),
            rejections: Mutex::new(BTreeMap::new()),
            warned_no_addr: AtomicBool::new(false),
        })
    }

    /// The audit log, if enabled.
    pub fn audit(&self) -> Option<&AuditLog> {
        self.audit.as_ref()
    }

    fn count(&self, status: StatusCode, reason: &'static str) {
        let mut m = self.rejections.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((status.as_u16(), reason)).or_default() += 1;
    }

    /// Access metrics in the Prometheus text format. Labels are statuses and
    /// fixed reason names only: never key material or key ids.
    pub fn render_metrics(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP confidant_access_rejections_total Requests refused by access control, by status and reason.\n# TYPE confidant_access_rejections_total counter"
        );
        for ((status, reason), n) in self
            .rejections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "confidant_access_rejections_total{{status=\"{status}\",reason=\"{reason}\"}} {n}"
            );
        }
        let mut one = |name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        one(
            "confidant_api_keys_live",
            "gauge",
            "Live (not revoked) API keys in the store.",
            self.keys.live_keys() as u64,
        );
        one(
            "confidant_api_key_store_reload_errors_total",
            "counter",
            "Failed re-reads of the API key store.",
            self.keys.reload_errors.load(Ordering::Relaxed),
        );
        one(
            "confidant_rate_limit_tracked_addresses",
            "gauge",
            "Source addresses with rate-limit state.",
            self.addresses.tracked() as u64,
        );
        if let Some(a) = &self.audit {
            let s = &a.stats;
            one(
                "confidant_audit_lines_written_total",
                "counter",
                "Audit log lines written.",
                s.written.load(Ordering::Relaxed),
            );
            one(
                "confidant_audit_lines_dropped_total",
                "counter",
                "Audit log lines lost to write errors.",
                s.dropped.load(Ordering::Relaxed),
            );
            one(
                "confidant_audit_seq",
                "gauge",
                "seq of the last audit line written.",
                s.seq.load(Ordering::Relaxed),
            );
        }
    }

    fn client(&self, req: &Request) -> Option<IpAddr> {
        let a = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        if a.is_none() && !self.warned_no_addr.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "the listener does not report client addresses (ConnectInfo): all clients share one per-address rate limit"
            );
        }
        a
    }

    /// Decides on a request: `Ok` with what the handler and the response
    /// need, or the refusal with the request rate to report.
    fn admit(
        &self,
        need: Need,
        req: &Request,
        client: Option<IpAddr>,
    ) -> Result<Admitted, Refused> {
        let limited = |d: Denied, key: Option<(&KeyId, &Arc<KeyQuota>)>| Refused {
            refusal: Refusal::Limited(d),
            requests: match d {
                Denied::Requests(i, _) | Denied::Address(i, _) => Some(i),
                _ => None,
            },
            key_id: key.map(|k| k.0.clone()),
            quota: key.map(|k| k.1.clone()),
        };
        let Need::Key(perm) = need else {
            return match self.addresses.check(client) {
                Ok(_) => Ok(Admitted::default()),
                Err(d) => Err(limited(d, None)),
            };
        };
        let presented = headers::bearer(req.headers());
        let refusal = match presented.map(|k| self.keys.lookup(k, Instant::now())) {
            Some(Lookup::Valid(key)) => {
                if !key.permissions.allows(perm) {
                    return Err(Refused {
                        refusal: Refusal::Forbidden(perm),
                        requests: None,
                        key_id: Some(key.id.clone()),
                        quota: None,
                    });
                }
                let q = self.quotas.get(&key);
                let permit = q.acquire().map_err(|d| limited(d, Some((&key.id, &q))))?;
                let requests = q
                    .check_request()
                    .map_err(|d| limited(d, Some((&key.id, &q))))?;
                return Ok(Admitted {
                    key_id: Some(key.id.clone()),
                    quota: Some(q),
                    requests: Some(requests),
                    permit: Some(permit),
                });
            }
            Some(Lookup::Revoked(_)) => Refusal::RevokedKey,
            Some(Lookup::Unknown) => Refusal::InvalidKey,
            None => Refusal::MissingKey,
        };
        // No valid key: spend the address's quota either way.
        if let Err(d) = self.addresses.check(client) {
            return Err(limited(d, None));
        }
        if self.required {
            Err(Refused {
                refusal,
                requests: None,
                key_id: None,
                quota: None,
            })
        } else {
            Ok(Admitted::default())
        }
    }
}

struct Refused {
    refusal: Refusal,
    requests: Option<RateInfo>,
    key_id: Option<KeyId>,
    quota: Option<Arc<KeyQuota>>,
}

#[derive(Default)]
struct Admitted {
    key_id: Option<KeyId>,
    quota: Option<Arc<KeyQuota>>,
    requests: Option<RateInfo>,
    permit: Option<OwnedSemaphorePermit>,
}

/// The middleware: `.layer(axum::middleware::from_fn_with_state(state, access::middleware))`.
pub async fn middleware(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED.to_owned(), |m| m.as_str().to_owned());
    let Some(access) = st.access() else {
        // Fail closed: without access control only the open routes answer.
        return match need(&route) {
            Need::Open => next.run(req).await,
            Need::Key(_) => ApiError::access_not_configured().into_response(),
        };
    };
    let arrived = SystemTime::now();
    let t0 = Instant::now();
    let client = access.client(&req);
    let mut rec = Record {
        time: rfc3339(arrived),
        method: req.method().to_string(),
        route: route.clone(),
        client: client.map(|c| c.to_string()),
        ..Default::default()
    };
    let n = need(&route);
    let (mut resp, caller, permit) = match access.admit(n, &req, client) {
        Err(r) => {
            let err = ApiError::from(r.refusal);
            let status = err.status;
            access.count(status, r.refusal.reason());
            rec.reason = Some(r.refusal.reason());
            rec.key_id = r.key_id.map(String::from);
            let mut resp = err.into_response();
            let h = resp.headers_mut();
            if status == StatusCode::UNAUTHORIZED {
                headers::challenge(h);
            }
            if let Some(i) = r.requests {
                headers::set(h, &headers::REQUESTS, &i);
            }
            if let Some(q) = r.quota {
                headers::set(h, &headers::TOKENS, &q.tokens_info());
            }
            (resp, None, None)
        }
        Ok(a) => {
            let content = access.audit.as_ref().is_some_and(|l| l.include_content());
            let caller = Caller::new(a.key_id, a.quota, content);
            let (mut parts, body) = req.into_parts();
            parts.extensions.insert(caller.clone());
            let req = Request::from_parts(parts, Body::new(body::IdleBody::new(body, access.idle)));
            let mut resp = match tokio::time::timeout(access.total, next.run(req)).await {
                Ok(r) => r,
                Err(_) => ApiError::timeout(access.total.as_secs()).into_response(),
            };
            let h = resp.headers_mut();
            if let Some(i) = a.requests {
                headers::set(h, &headers::REQUESTS, &i);
            }
            if let Some(tokens) = caller.tokens_info() {
                headers::set(h, &headers::TOKENS, &tokens);
            }
            if let Some(d) = caller.denied() {
                let r = Refusal::Limited(d);
                access.count(resp.status(), r.reason());
                rec.reason = Some(r.reason());
            }
            (resp, Some(caller), a.permit)
        }
    };
    rec.status = resp.status().as_u16();
    rec.key_id = rec.key_id.or_else(|| {
        caller
            .as_ref()
            .and_then(|c| c.key_id().map(|k| k.to_string()))
    });
    // Probes (health, readiness, metrics) are operations, not API use: they
    // are logged only when access control refused them.
    let audited = access.audit.is_some() && (!is_probe(&route) || rec.reason.is_some());
    if audited || permit.is_some() {
        let end = End {
            st: audited.then(|| st.clone()),
            rec,
            caller,
            t0,
            _permit: permit,
        };
        let (parts, b) = resp.into_parts();
        resp = Response::from_parts(parts, Body::new(body::Tracked::new(b, Box::new(end))));
    }
    resp
}

/// What happens when a response has been sent: the audit line, and the
/// in-flight slot comes back (dropping the permit).
struct End {
    st: Option<Arc<AppState>>,
    rec: Record,
    caller: Option<Caller>,
    t0: Instant,
    _permit: Option<OwnedSemaphorePermit>,
}

impl body::OnEnd for End {
    fn end(self: Box<Self>, complete: bool) {
        let End {
            st,
            mut rec,
            caller,
            t0,
            _permit: permit,
        } = *self;
        drop(permit);
        let Some(st) = st else { return };
        let Some(log) = st.access().and_then(|a| a.audit()) else {
            return;
        };
        rec.complete = complete;
        rec.latency_ms = t0.elapsed().as_millis() as u64;
        if let Some(c) = caller {
            c.fill(&mut rec);
        }
        log.record(rec);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_need_what_the_contract_says() {
        for open in [
            "/healthz",
            "/readyz",
            "/metrics",
            "/v1/attestation",
            UNMATCHED,
        ] {
            assert_eq!(need(open), Need::Open, "{open}");
        }
        assert_eq!(need("/v1/watermark/detect"), Need::Key(Permission::Detect));
        for chat in [
            "/v1/chat/completions",
            "/v1/completions",
            "/v1/models",
            "/v1/models/{id}",
            "/v1/some/new/route",
        ] {
            assert_eq!(need(chat), Need::Key(Permission::Chat), "{chat}");
        }
    }
}
