//! The broker on HTTP(S): axum routes over hyper's HTTP/1.1 connections,
//! optionally inside rustls (ring provider, chosen explicitly: with
//! aws-lc-rs also in the workspace, rustls has no unambiguous default).
//!
//! Plain HTTP is served on loopback addresses only (development); any
//! other address needs a certificate. Bounds: request bodies
//! ([`MAX_REQUEST_LEN`]), header size, header and body read times, time per
//! connection, and open connections. HTTP status codes are mapped from
//! reason codes in one place, [`status_of`].

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use zeroize::Zeroizing;

use super::broker::{Kbs, Refusal, Route};
use super::device::StatementKind;
use super::device::protocol as device;
use super::protocol::{
    ATTEST_PATH, AUTH_PATH, ErrorResponse, MAX_REQUEST_LEN, ReasonCode, SESSION_COOKIE,
};
use crate::error::{Error, Result};

/// The TLS configuration [`serve`] takes (rustls, re-exported so callers
/// need not depend on it).
pub use rustls::ServerConfig;

/// Most connections served at once; more are closed at accept.
pub const MAX_CONNECTIONS: usize = 512;
/// Time allowed for a TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed to receive a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed to receive a request body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a connection stays open.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest `Retry-After` sent.
const MAX_RETRY_AFTER: u64 = 3600;

/// The one mapping from reason codes to HTTP statuses.
pub fn status_of(code: ReasonCode) -> StatusCode {
    use ReasonCode::*;
    match code {
        BadRequest | UnsupportedVersion => StatusCode::BAD_REQUEST,
        PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        UnknownResource | UnknownDevice => StatusCode::NOT_FOUND,
        DeviceExists => StatusCode::CONFLICT,
        UnknownSession | SessionExpired | NotAttested => StatusCode::UNAUTHORIZED,
        RateLimited => StatusCode::TOO_MANY_REQUESTS,
        TooManySessions => StatusCode::SERVICE_UNAVAILABLE,
        Internal => StatusCode::INTERNAL_SERVER_ERROR,
        NonceReplayed
        | NonceExpired
        | TeeMismatch
        | TeeNotAccepted
        | InsecureAttester
        | EvidenceInvalid
        | TpmAkUnknown
        | BindingMismatch
        | PolicyMeasurement
        | PolicyDebug
        | PolicyTcb
        | PolicyOther
        | ResourceNotAuthorized
        | EnrolmentRefused
        | DeviceRevoked
        | SignatureInvalid
        | StatementReplayed => StatusCode::FORBIDDEN,
    }
}

fn refused(code: ReasonCode, retry_after: Option<u64>) -> Response {
    let mut r = (
        status_of(code),
        axum::Json(ErrorResponse {
            error: code.as_str().to_owned(),
        }),
    )
        .into_response();
    if let Some(s) = retry_after {
        r.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(s.min(MAX_RETRY_AFTER)),
        );
    }
    r
}

/// The peer's address, attached to each request by the accept loop.
#[derive(Debug, Clone, Copy)]
struct Peer(SocketAddr);

#[derive(Clone)]
struct App {
    kbs: Arc<Kbs>,
    tls: bool,
}

/// The session id from the `kbs-session-id` cookie, if it looks like one
/// (64 hex digits).
fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_owned())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

async fn read_body(body: Body) -> std::result::Result<Vec<u8>, Refusal> {
    let read = async {
        let mut stream = body.into_data_stream();
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| Refusal::new(ReasonCode::BadRequest, e.to_string()))?;
            if out.len() + chunk.len() > MAX_REQUEST_LEN {
                return Err(Refusal::new(
                    ReasonCode::PayloadTooLarge,
                    format!("body over {MAX_REQUEST_LEN} bytes"),
                ));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    };
    tokio::time::timeout(BODY_TIMEOUT, read)
        .await
        .unwrap_or_else(|_| Err(Refusal::new(ReasonCode::BadRequest, "body read timed out")))
}

/// Runs a blocking broker call (SQLite, verification, KEK) off the reactor.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::result::Result<T, ReasonCode> + Send + 'static,
) -> std::result::Result<T, ReasonCode> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or(Err(ReasonCode::Internal))
}

/// Rate limit, then the body; the refusal of either is logged (except 429s).
async fn admit(
    app: &App,
    route: Route,
    peer: SocketAddr,
    body: Option<Body>,
) -> std::result::Result<Vec<u8>, Response> {
    if let Err(wait) = app.kbs.rate_check(route, peer.ip()) {
        tracing::warn!(route = route.path(), source = %peer.ip(), "rate limited");
        return Err(refused(ReasonCode::RateLimited, Some(wait)));
    }
    match body {
        None => Ok(Vec::new()),
        Some(b) => match read_body(b).await {
            Ok(v) => Ok(v),
            Err(r) => Err(refused(app.kbs.refuse(route, peer.ip(), r), None)),
        },
    }
}

async fn auth(
    State(app): State<App>,
    axum::Extension(Peer(peer)): axum::Extension<Peer>,
    body: Body,
) -> Response {
    let bytes = match admit(&app, Route::Auth, peer, Some(body)).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let kbs = app.kbs.clone();
    match blocking(move || kbs.auth(peer.ip(), &bytes)).await {
        Ok((id, resp)) => {
            let secure = if app.tls { "; Secure" } else { "" };
            let cookie = format!(
                "{SESSION_COOKIE}={id}; Path=/kbs/v1; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
                app.kbs.config().session_ttl.as_secs()
            );
            let mut r = axum::Json(resp).into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err(code) => refused(code, None),
    }
}

async fn attest(
    State(app): State<App>,
    axum::Extension(Peer(peer)): axum::Extension<Peer>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let bytes = match admit(&app, Route::Attest, peer, Some(body)).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let kbs = app.kbs.clone();
    let session = session_id(&headers);
    match blocking(move || kbs.attest(peer.ip(), session.as_deref(), &bytes)).await {
        Ok(resp) => axum::Json(resp).into_response(),
        Err(code) => refused(code, None),
    }
}

async fn resource(
    State(app): State<App>,
    axum::Extension(Peer(peer)): axum::Extension<Peer>,
    key_id: std::result::Result<UrlPath<String>, axum::extract::rejection::PathRejection>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admit(&app, Route::Resource, peer, None).await {
        return r;
    }
    let key_id = match key_id {
        Ok(UrlPath(k)) => k,
        Err(e) => {
            let r = Refusal::new(ReasonCode::BadRequest, format!("key id in the path: {e}"));
            return refused(app.kbs.refuse(Route::Resource, peer.ip(), r), None);
        }
    };
    let kbs = app.kbs.clone();
    let session = session_id(&headers);
    match blocking(move || kbs.resource(peer.ip(), session.as_deref(), &key_id)).await {
        Ok(resp) => {
            let mut r = axum::Json(resp).into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(code) => refused(code, None),
    }
}

/// Device routes: JSON in, JSON out, logged in the device log.
async fn device_route(
    app: App,
    peer: SocketAddr,
    body: Body,
    f: fn(&Kbs, std::net::IpAddr, &[u8]) -> std::result::Result<serde_json::Value, ReasonCode>,
) -> Response {
    let bytes = match admit(&app, Route::Device, peer, Some(body)).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let kbs = app.kbs.clone();
    match blocking(move || f(&kbs, peer.ip(), &bytes)).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(code) => refused(code, None),
    }
}

fn json<T: serde::Serialize>(
    r: std::result::Result<T, ReasonCode>,
) -> std::result::Result<serde_json::Value, ReasonCode> {
    r.and_then(|v| serde_json::to_value(v).map_err(|_| ReasonCode::Internal))
}

/// The broker's routes. Requests must carry a `Peer` extension (the accept
/// loop of [`serve`] adds it).
fn router(kbs: Arc<Kbs>, tls: bool) -> Router {
    Router::new()
        .route(AUTH_PATH, post(auth))
        .route(ATTEST_PATH, post(attest))
        .route("/kbs/v1/resource/{key_id}", get(resource))
        .route(
            device::ENROL_PATH,
            post(
                |State(app): State<App>,
                 axum::Extension(Peer(p)): axum::Extension<Peer>,
                 b: Body| {
                    device_route(app, p, b, |k, ip, b| json(k.device_enrol(ip, b)))
                },
            ),
        )
        .route(
            device::ACTIVATE_PATH,
            post(
                |State(app): State<App>,
                 axum::Extension(Peer(p)): axum::Extension<Peer>,
                 b: Body| {
                    device_route(app, p, b, |k, ip, b| json(k.device_activate(ip, b)))
                },
            ),
        )
        .route(
            device::CHECKIN_PATH,
            post(
                |State(app): State<App>,
                 axum::Extension(Peer(p)): axum::Extension<Peer>,
                 b: Body| {
                    device_route(app, p, b, |k, ip, b| {
                        json(k.device_statement(StatementKind::Checkin, ip, b))
                    })
                },
            ),
        )
        .route(
            device::RECORD_PATH,
            post(
                |State(app): State<App>,
                 axum::Extension(Peer(p)): axum::Extension<Peer>,
                 b: Body| {
                    device_route(app, p, b, |k, ip, b| {
                        json(k.device_statement(StatementKind::Record, ip, b))
                    })
                },
            ),
        )
        .with_state(App { kbs, tls })
}

/// A rustls server configuration (ring provider, TLS 1.2 and 1.3,
/// HTTP/1.1 over ALPN) from a PEM certificate chain and PEM private key.
pub fn tls_config(cert_chain_pem: &[u8], key_pem: &[u8]) -> Result<Arc<rustls::ServerConfig>> {
    let tls = |reason: String| Error::Tls { reason };
    let certs = CertificateDer::pem_slice_iter(cert_chain_pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| tls(format!("certificate chain: {e}")))?;
    if certs.is_empty() {
        return Err(tls("certificate file holds no CERTIFICATE".into()));
    }
    let key =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| tls(format!("private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| tls(format!("certificate and key: {e}")))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// [`tls_config`] from files (each read up to 1 MiB).
pub fn load_tls_config(cert_chain: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>> {
    use std::io::Read;
    let read = |p: &Path, what: &'static str| -> Result<Zeroizing<Vec<u8>>> {
        let f = std::fs::File::open(p).map_err(Error::io(what))?;
        let mut buf = Zeroizing::new(Vec::new());
        f.take(1 << 20)
            .read_to_end(&mut buf)
            .map_err(Error::io(what))?;
        Ok(buf)
    };
    tls_config(
        &read(cert_chain, "reading the TLS certificate")?,
        &read(key, "reading the TLS key")?,
    )
}

/// Serves the broker on `listener` until `shutdown` completes. With `tls`,
/// every connection is TLS; without, the listener must be on a loopback
/// address.
pub async fn serve(
    kbs: Arc<Kbs>,
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let local = listener
        .local_addr()
        .map_err(Error::io("reading the listening address"))?;
    if tls.is_none() && !local.ip().is_loopback() {
        return Err(Error::invalid(
            "listen address",
            format!(
                "{local}: plain HTTP is served on loopback only; give a TLS certificate and key"
            ),
        ));
    }
    let app = router(kbs, tls.is_some());
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(64 * 1024);
    let http = Arc::new(http);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off, go on.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(source = %peer.ip(), "too many connections; closing");
            continue;
        };
        let (app, acceptor, http) = (app.clone(), acceptor.clone(), http.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let svc = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
                req.extensions_mut().insert(Peer(peer));
                tower::Service::call(&mut app.clone(), req)
            });
            let conn = async {
                match acceptor {
                    Some(a) => {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, a.accept(stream)).await {
                            Ok(Ok(s)) => {
                                let _ = http.serve_connection(TokioIo::new(s), svc).await;
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(source = %peer.ip(), "TLS handshake: {e}")
                            }
                            Err(_) => {
                                tracing::debug!(source = %peer.ip(), "TLS handshake timed out")
                            }
                        }
                    }
                    None => {
                        let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                    }
                }
            };
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_refusal_status() {
        for c in ReasonCode::ALL {
            let s = status_of(c);
            assert!(s.is_client_error() || s.is_server_error(), "{c}: {s}");
        }
        assert_eq!(status_of(ReasonCode::RateLimited), 429);
    }

    #[test]
    fn session_cookie_parsing() {
        let id = "ab".repeat(32);
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("a=b; {SESSION_COOKIE}={id}")).unwrap(),
        );
        assert_eq!(session_id(&h), Some(id));
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("{SESSION_COOKIE}=../etc")).unwrap(),
        );
        assert_eq!(session_id(&h), None);
    }
}
