//! One verified connection: TLS 1.3 to the server, the attestation document
//! fetched with a fresh nonce over that same connection, verified, and the
//! connection kept for requests only if it passed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use confidant_attest::UnixTime;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime as TlsTime};

use crate::document::{AttestationDocument, MAX_DOCUMENT_LEN};
use crate::error::{Error, Result};
use crate::policy::ClientPolicy;
use crate::verify::{Report, verify_document};

/// Request and response bodies on verified connections.
pub type ClientBody = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Nonce length clients send.
pub const CLIENT_NONCE_LEN: usize = 32;

/// An empty body.
pub fn empty_body() -> ClientBody {
    Empty::<Bytes>::new().map_err(|e| match e {}).boxed_unsync()
}

/// A body with these bytes.
pub fn full_body(b: impl Into<Bytes>) -> ClientBody {
    Full::new(b.into()).map_err(|e| match e {}).boxed_unsync()
}

/// `https://HOST:PORT` split up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl Target {
    /// Parses `https://HOST[:PORT][/]` (port 443 by default). Plain
    /// `http://` is refused: attestation binds the TLS key.
    pub fn parse(url: &str) -> Result<Self> {
        let rest = url.strip_prefix("https://").ok_or_else(|| {
            Error::Http(format!(
                "{url:?}: the server URL must start with https:// (attestation binds its TLS key)"
            ))
        })?;
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') || rest.is_empty() {
            return Err(Error::Http(format!("{url:?}: expected https://HOST:PORT")));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => match p.parse::<u16>() {
                Ok(p) => (h, p),
                Err(_) => return Err(Error::Http(format!("{url:?}: bad port"))),
            },
            _ => (rest, 443),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        Ok(Target {
            host: host.to_owned(),
            port,
        })
    }

    /// `host:port` for `connect` and the `Host` header.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Accepts whatever certificate the server presents (trust comes from the
/// attestation, not from a CA), records its public key, and checks the
/// TLS 1.3 handshake signature with it, so the server proved it holds the
/// private key. With a pin, any other key fails the handshake.
#[derive(Debug)]
struct KeyCapture {
    provider: Arc<CryptoProvider>,
    seen: Mutex<Option<Vec<u8>>>,
    pin: Option<Vec<u8>>,
}

fn spki_of(cert: &CertificateDer<'_>) -> std::result::Result<Vec<u8>, rustls::Error> {
    use x509_cert::der::{Decode, Encode};
    let c = x509_cert::Certificate::from_der(cert.as_ref())
        .map_err(|_| rustls::Error::General("unparsable server certificate".into()))?;
    c.tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|_| rustls::Error::General("unencodable server key".into()))
}

impl ServerCertVerifier for KeyCapture {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: TlsTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let spki = spki_of(end_entity)?;
        if let Some(pin) = &self.pin
            && pin != &spki
        {
            return Err(rustls::Error::General(
                "the server's TLS key is not the attested key".into(),
            ));
        }
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(spki);
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not accepted".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS connection whose server key was captured (and matched `pin`).
pub struct TlsConn {
    /// The stream.
    pub stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    /// The server's SubjectPublicKeyInfo (DER).
    pub spki_der: Vec<u8>,
}

/// Opens TLS 1.3 to `target`, capturing the server's key; with `pin`,
/// refuses any other key.
pub async fn connect_tls(
    target: &Target,
    pin: Option<&[u8]>,
    timeout: Duration,
) -> Result<TlsConn> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let capture = Arc::new(KeyCapture {
        provider: provider.clone(),
        seen: Mutex::new(None),
        pin: pin.map(<[u8]>::to_vec),
    });
    let tls_err = |detail: String| Error::Tls {
        addr: target.authority(),
        detail,
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_err(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(capture.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let addr = target.authority();
    let tcp = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&addr))
        .await
        .map_err(|_| Error::Connect {
            addr: addr.clone(),
            detail: "timed out".into(),
        })?
        .map_err(|e| Error::Connect {
            addr: addr.clone(),
            detail: e.to_string(),
        })?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(target.host.clone())
        .map_err(|e| tls_err(format!("bad server name: {e}")))?;
    let stream = tokio::time::timeout(timeout, connector.connect(name, tcp))
        .await
        .map_err(|_| tls_err("handshake timed out".into()))?
        .map_err(|e| tls_err(e.to_string()))?;
    let spki_der = capture
        .seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .ok_or_else(|| tls_err("the server presented no certificate".into()))?;
    Ok(TlsConn { stream, spki_der })
}

/// A connection that passed verification, ready for requests.
pub struct AttestedConnection {
    /// Send requests here (HTTP/1.1; one at a time).
    pub sender: SendRequest<ClientBody>,
    /// What was verified.
    pub report: Report,
    /// The verified document (its key signs receipts).
    pub document: AttestationDocument,
}

/// Reads a response body up to `max` bytes.
pub async fn read_body(
    body: hyper::body::Incoming,
    max: usize,
    what: &'static str,
) -> Result<Bytes> {
    match Limited::new(body, max).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Error::TooLarge { what, max }),
        Err(e) => Err(Error::Http(format!("reading the {what}: {e}"))),
    }
}

/// Connects to `target`, fetches the attestation document with a fresh
/// nonce over that connection and verifies it against `policy` now.
/// Refused evidence returns [`Error::Refused`] and the connection is
/// closed: nothing else is ever sent on it.
pub async fn open_verified(
    target: &Target,
    policy: &ClientPolicy,
    timeout: Duration,
) -> Result<AttestedConnection> {
    let tls = connect_tls(target, None, timeout).await?;
    let spki = tls.spki_der.clone();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls.stream))
        .await
        .map_err(|e| Error::Http(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection ended");
        }
    });
    let nonce: [u8; CLIENT_NONCE_LEN] = rand::random();
    let req = hyper::Request::get(format!("/v1/attestation?nonce={}", hex::encode(nonce)))
        .header(hyper::header::HOST, target.authority())
        .body(empty_body())
        .map_err(|e| Error::Http(e.to_string()))?;
    let resp = tokio::time::timeout(timeout, sender.send_request(req))
        .await
        .map_err(|_| Error::Http("attestation request timed out".into()))?
        .map_err(|e| Error::Http(format!("attestation request: {e}")))?;
    let status = resp.status();
    let body = tokio::time::timeout(
        timeout,
        read_body(resp.into_body(), MAX_DOCUMENT_LEN, "attestation document"),
    )
    .await
    .map_err(|_| Error::Http("attestation document timed out".into()))??;
    if !status.is_success() {
        return Err(Error::Http(format!(
            "GET /v1/attestation answered {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(512)])
        )));
    }
    let document: AttestationDocument =
        serde_json::from_slice(&body).map_err(|e| Error::Document(format!("malformed: {e}")))?;
    let report = verify_document(&document, &nonce, &spki, policy, UnixTime::now())?;
    Ok(AttestedConnection {
        sender,
        report,
        document,
    })
}
