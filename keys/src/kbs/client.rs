//! The requester's side of the protocol: what `confidant serve` runs at
//! start-up to obtain its model's data key.
//!
//! HTTP client: `ureq` 3 (blocking, rustls with the ring provider given
//! explicitly). The exchange is three small requests made once at start-up,
//! before the server has anything else to do, so a blocking client is the
//! leanest fit: no second async stack (hyper-util's client would need a
//! connector, hyper-rustls or hand-written TLS glue, and a runtime at the
//! call site), and the `Attester` it drives is itself blocking (TPM and
//! configfs calls). Call it before starting the runtime, or from
//! `spawn_blocking`.
//!
//! ```no_run
//! use confidant_attest::attester::{Choice, detect};
//! use confidant_keys::kbs::client::{ClientConfig, fetch_data_key};
//! use confidant_keys::{HpkeKeyPair, KeyId};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut attester = detect(&Choice::Auto)?;
//! let hpke = HpkeKeyPair::generate();
//! let tls_spki_der: Vec<u8> = vec![/* the server's TLS SubjectPublicKeyInfo */];
//! let mut cfg = ClientConfig::new("https://kbs.example:8443");
//! cfg.ca_certs_pem = Some(std::fs::read("kbs-ca.pem")?);
//! let key = fetch_data_key(&cfg, &KeyId::new("smollm2")?, attester.as_mut(), &tls_spki_der, &hpke)?;
//! # let _ = key; Ok(()) }
//! ```

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use confidant_attest::attester::{Attester, BoundData};
use confidant_attest::{Binding, Hex};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::Serialize;
use serde::de::DeserializeOwned;
use ureq::http::Response;

use super::protocol::{
    ATTEST_PATH, AUTH_PATH, AttestRequest, AttestResponse, AuthRequest, AuthResponse,
    ErrorResponse, MAX_RESPONSE_LEN, NONCE_LEN, PROTOCOL_VERSION, RESOURCE_PREFIX,
    ResourceResponse, SESSION_COOKIE, Tee,
};
use crate::datakey::DataKey;
use crate::error::{Error, Result};
use crate::header::KeyId;
use crate::transport::{HPKE_PUBLIC_KEY_LEN, HpkeKeyPair, SealedDataKey, open_from_hpke};

/// Where the broker is and how to reach it.
#[derive(Clone)]
pub struct ClientConfig {
    /// Base URL, `https://host:port` (or `http://` on a loopback address,
    /// for development).
    pub url: String,
    /// PEM certificates to trust for the broker's TLS certificate instead
    /// of the Mozilla roots (a private CA, or the broker's own certificate).
    pub ca_certs_pem: Option<Vec<u8>>,
    /// Time allowed for each request, connect to last byte. Default 30 s.
    pub timeout: Duration,
    /// TEE to declare; `None` asks [`tee_of`] the attester.
    pub tee: Option<Tee>,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("url", &self.url)
            .field("custom_ca", &self.ca_certs_pem.is_some())
            .field("timeout", &self.timeout)
            .field("tee", &self.tee)
            .finish()
    }
}

impl ClientConfig {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        ClientConfig {
            url: url.into(),
            ca_certs_pem: None,
            timeout: Duration::from_secs(30),
            tee: None,
        }
    }
}

/// The TEE an attester produces evidence for: `tpm`, `insecure-dev`, and
/// for configfs-tsm the guest device present (`/dev/sev-guest` → SNP,
/// `/dev/tdx_guest` → TDX). `None` when it cannot tell; then set
/// [`ClientConfig::tee`].
pub fn tee_of(attester: &dyn Attester) -> Option<Tee> {
    match attester.name().as_str() {
        "tpm" => Some(Tee::Tpm),
        "insecure-dev" => Some(Tee::InsecureDev),
        n if n.starts_with("configfs-tsm") => {
            let sev = std::path::Path::new("/dev/sev-guest").exists();
            let tdx = std::path::Path::new("/dev/tdx_guest").exists();
            match (sev, tdx) {
                (true, false) => Some(Tee::Snp),
                (false, true) => Some(Tee::Tdx),
                _ => None,
            }
        }
        _ => None,
    }
}

/// A session opened by `auth`: the cookie and the challenge.
pub struct Challenge {
    session: String,
    /// The broker's nonce, to bind into the evidence.
    pub nonce: [u8; NONCE_LEN],
    /// What the broker announced.
    pub response: AuthResponse,
}

impl fmt::Debug for Challenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The session id is a bearer credential: not printed.
        f.debug_struct("Challenge")
            .field("nonce", &hex::encode(self.nonce))
            .finish_non_exhaustive()
    }
}

/// A connection to one broker.
pub struct KbsClient {
    agent: ureq::Agent,
    base: String,
}

impl fmt::Debug for KbsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KbsClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// The host of `http(s)://host[:port][/...]`, brackets removed.
fn host_of(rest: &str) -> &str {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.split(':').next().unwrap_or("")
    }
}

fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl KbsClient {
    /// Checks the URL and builds the HTTP agent (no request yet).
    pub fn new(cfg: &ClientConfig) -> Result<Self> {
        let bad = |r: &str| Error::invalid("key broker URL", format!("{}: {r}", cfg.url));
        let base = cfg.url.trim_end_matches('/').to_owned();
        let (tls, rest) = if let Some(r) = base.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = base.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(bad("must start with https:// (or http:// on loopback)"));
        };
        let host = host_of(rest);
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let loopback = is_loopback_host(host);
        if !tls && !loopback {
            return Err(bad("plain http:// is allowed on loopback only"));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls_cfg = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .unversioned_rustls_crypto_provider(provider);
        if let Some(pem) = &cfg.ca_certs_pem {
            let certs = CertificateDer::pem_slice_iter(pem)
                .map(|c| c.map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned()))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| Error::Tls {
                    reason: format!("CA certificates: {e}"),
                })?;
            if certs.is_empty() {
                return Err(Error::Tls {
                    reason: "CA file holds no CERTIFICATE".into(),
                });
            }
            tls_cfg = tls_cfg.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        let mut builder = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(cfg.timeout))
            .max_response_header_size(16 * 1024)
            .user_agent(concat!("confidant/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls_cfg.build());
        if loopback {
            // A proxy from the environment must not see loopback traffic.
            builder = builder.proxy(None);
        }
        Ok(KbsClient {
            agent: builder.build().into(),
            base,
        })
    }

    fn transport(&self, e: ureq::Error) -> Error {
        match e {
            ureq::Error::BodyExceedsLimit(n) => Error::KbsProtocol {
                reason: format!("response body over {n} bytes"),
            },
            e => Error::KbsTransport {
                url: self.base.clone(),
                reason: e.to_string(),
            },
        }
    }

    /// Reads a bounded JSON answer, or turns a refusal into
    /// [`Error::KbsRefused`].
    fn answer<T: DeserializeOwned>(
        &self,
        route: &'static str,
        resp: std::result::Result<Response<ureq::Body>, ureq::Error>,
    ) -> Result<(T, Response<()>)> {
        let mut resp = resp.map_err(|e| self.transport(e))?;
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_LEN as u64)
            .read_to_vec()
            .map_err(|e| self.transport(e))?;
        let (parts, _) = resp.into_parts();
        let status = parts.status.as_u16();
        if status != 200 {
            let code = serde_json::from_slice::<ErrorResponse>(&body)
                .map(|e| e.error)
                .map_err(|_| Error::KbsProtocol {
                    reason: format!("{route}: HTTP {status} without a reason code"),
                })?;
            let retry_after = parts
                .headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok());
            return Err(Error::KbsRefused {
                route,
                status,
                code,
                retry_after,
            });
        }
        let v = serde_json::from_slice(&body).map_err(|e| Error::KbsProtocol {
            reason: format!("{route}: {e}"),
        })?;
        Ok((v, Response::from_parts(parts, ())))
    }

    pub(crate) fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        route: &'static str,
        session: Option<&Challenge>,
        body: &B,
    ) -> Result<(T, Response<()>)> {
        let body = serde_json::to_vec(body).map_err(|e| Error::KbsProtocol {
            reason: format!("encoding the request: {e}"),
        })?;
        let mut req = self
            .agent
            .post(format!("{}{route}", self.base))
            .content_type("application/json");
        if let Some(s) = session {
            req = req.header("cookie", format!("{SESSION_COOKIE}={}", s.session));
        }
        self.answer(route, req.send(&body[..]))
    }

    /// `POST /kbs/v1/auth`: opens a session for `key_id` and gets its challenge.
    pub fn auth(&self, tee: Tee, key_id: &KeyId) -> Result<Challenge> {
        let req = AuthRequest {
            version: PROTOCOL_VERSION.into(),
            tee,
            key_id: key_id.to_string(),
        };
        let (response, head): (AuthResponse, _) = self.post(AUTH_PATH, None, &req)?;
        let session = head
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next())
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| *k == SESSION_COOKIE)
            .map(|(_, v)| v.to_owned())
            .filter(|v| !v.is_empty() && v.len() <= 256)
            .ok_or_else(|| Error::KbsProtocol {
                reason: format!("{AUTH_PATH}: no {SESSION_COOKIE} cookie"),
            })?;
        let nonce = <[u8; NONCE_LEN]>::try_from(response.nonce.as_bytes()).map_err(|_| {
            Error::KbsProtocol {
                reason: format!(
                    "{AUTH_PATH}: nonce is {} bytes, expected {NONCE_LEN}",
                    response.nonce.as_bytes().len()
                ),
            }
        })?;
        Ok(Challenge {
            session,
            nonce,
            response,
        })
    }

    /// `POST /kbs/v1/attest` on `session`'s cookie.
    pub fn attest(&self, session: &Challenge, req: &AttestRequest) -> Result<AttestResponse> {
        self.post(ATTEST_PATH, Some(session), req).map(|(v, _)| v)
    }

    /// `GET /kbs/v1/resource/{key_id}` on `session`'s cookie: the sealed key.
    pub fn resource(&self, session: &Challenge, key_id: &KeyId) -> Result<SealedDataKey> {
        let req = self
            .agent
            .get(format!("{}{RESOURCE_PREFIX}{key_id}", self.base))
            .header("cookie", format!("{SESSION_COOKIE}={}", session.session));
        let (r, _): (ResourceResponse, _) = self.answer("/kbs/v1/resource", req.call())?;
        if r.key_id != key_id.as_str() {
            return Err(Error::KbsProtocol {
                reason: format!("resource is for key id {:?}, asked {key_id}", r.key_id),
            });
        }
        let enc = <[u8; HPKE_PUBLIC_KEY_LEN]>::try_from(r.enc.as_bytes()).map_err(|_| {
            Error::KbsProtocol {
                reason: "HPKE enc is not 32 bytes".into(),
            }
        })?;
        if r.ciphertext.as_bytes().len() > 1024 {
            return Err(Error::KbsProtocol {
                reason: "HPKE ciphertext too long".into(),
            });
        }
        Ok(SealedDataKey {
            enc,
            ciphertext: r.ciphertext.0,
        })
    }
}

/// The attest request for `challenge`: evidence from `attester` bound to
/// the challenge, `tls_spki_der` and `hpke_public_key`.
pub fn attest_request(
    challenge: &Challenge,
    attester: &mut dyn Attester,
    tls_spki_der: &[u8],
    hpke_public_key: &[u8; HPKE_PUBLIC_KEY_LEN],
) -> Result<AttestRequest> {
    let binding = Binding {
        nonce: &challenge.nonce,
        tls_spki_der,
        hpke_public_key,
    };
    let evidence = attester.evidence(&BoundData::from_binding(&binding))?;
    Ok(AttestRequest {
        nonce: Hex(challenge.nonce.to_vec()),
        tls_spki_der: Hex(tls_spki_der.to_vec()),
        hpke_public_key: Hex(hpke_public_key.to_vec()),
        evidence,
    })
}

/// The whole exchange: `auth` for `key_id`, evidence from `attester` bound
/// to the nonce, `tls_spki_der` and `hpke`'s public key, `attest`, then
/// `resource`, and the data key opened with `hpke`.
pub fn fetch_data_key(
    cfg: &ClientConfig,
    key_id: &KeyId,
    attester: &mut dyn Attester,
    tls_spki_der: &[u8],
    hpke: &HpkeKeyPair,
) -> Result<DataKey> {
    let tee = cfg.tee.or_else(|| tee_of(attester)).ok_or_else(|| {
        Error::invalid(
            "TEE kind",
            format!(
                "cannot tell which TEE the {} attester is for; set it explicitly",
                attester.name()
            ),
        )
    })?;
    let client = KbsClient::new(cfg)?;
    let challenge = client.auth(tee, key_id)?;
    let req = attest_request(&challenge, attester, tls_spki_der, &hpke.public_key())?;
    client.attest(&challenge, &req)?;
    let sealed = client.resource(&challenge, key_id)?;
    open_from_hpke(hpke, key_id, &sealed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_rules() {
        for ok in [
            "https://kbs.example:8443",
            "https://kbs.example/",
            "http://127.0.0.1:8080",
            "http://localhost:1",
            "http://[::1]:9/",
        ] {
            KbsClient::new(&ClientConfig::new(ok)).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "http://kbs.example:8080",
            "http://10.0.0.1",
            "ftp://x",
            "kbs.example",
            "https://",
            "http://127.0.0.1.evil.example",
        ] {
            assert!(KbsClient::new(&ClientConfig::new(bad)).is_err(), "{bad}");
        }
    }
}
