//! [`AttestedClient`]: the Rust SDK. It verifies the server before the
//! first byte of a request, re-verifies on every new connection, pins the
//! attested TLS key, and checks the receipt of every completion.

use std::time::Duration;

use bytes::Bytes;
use hyper::StatusCode;
use tokio::sync::Mutex;

use crate::conn::{AttestedConnection, Target, full_body, open_verified, read_body};
use crate::document::AttestationDocument;
use crate::error::{Error, Result};
use crate::policy::ClientPolicy;
use crate::receipt::{RECEIPT_HEADER, Receipt};
use crate::verify::Report;

/// Largest response body read.
pub const MAX_RESPONSE_LEN: usize = 16 << 20;

/// A response from the server.
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status.
    pub status: StatusCode,
    /// Headers.
    pub headers: hyper::HeaderMap,
    /// Body.
    pub body: Bytes,
}

/// A chat completion whose receipt verified.
#[derive(Debug, Clone)]
pub struct VerifiedCompletion {
    /// The response JSON.
    pub json: serde_json::Value,
    /// The assistant's text.
    pub text: String,
    /// Its receipt (verified against the attested key).
    pub receipt: Receipt,
}

/// A client for one attested server.
pub struct AttestedClient {
    target: Target,
    policy: ClientPolicy,
    api_key: Option<String>,
    timeout: Duration,
    conn: Mutex<Option<AttestedConnection>>,
}

impl std::fmt::Debug for AttestedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttestedClient")
            .field("target", &self.target)
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .finish_non_exhaustive()
    }
}

impl AttestedClient {
    /// Connects to `url` (`https://HOST:PORT`) and verifies it against
    /// `policy` before returning.
    pub async fn connect(url: &str, policy: ClientPolicy, api_key: Option<String>) -> Result<Self> {
        let c = AttestedClient {
            target: Target::parse(url)?,
            policy,
            api_key,
            timeout: Duration::from_secs(30),
            conn: Mutex::new(None),
        };
        let first = open_verified(&c.target, &c.policy, c.timeout).await?;
        *c.conn.lock().await = Some(first);
        Ok(c)
    }

    /// Time allowed to connect and for each request (default 30 s; a
    /// streamed or long completion may need more).
    pub fn with_timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// The verification report of the current connection.
    pub async fn report(&self) -> Option<Report> {
        self.conn.lock().await.as_ref().map(|c| c.report.clone())
    }

    /// The attestation document of the current connection.
    pub async fn document(&self) -> Option<AttestationDocument> {
        self.conn.lock().await.as_ref().map(|c| c.document.clone())
    }

    /// Sends a request on a verified connection (a new connection is
    /// verified first). Returns the response and the document of the
    /// connection it went over.
    pub async fn request(
        &self,
        method: hyper::Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(Response, AttestationDocument)> {
        let mut guard = self.conn.lock().await;
        let reusable = match guard.as_mut() {
            Some(c) => c.sender.ready().await.is_ok(),
            None => false,
        };
        if !reusable {
            *guard = None;
            *guard = Some(open_verified(&self.target, &self.policy, self.timeout).await?);
        }
        let Some(conn) = guard.as_mut() else {
            return Err(Error::Http("no connection".into()));
        };
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, self.target.authority());
        if let Some(k) = &self.api_key {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {k}"));
        }
        if body.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(full_body(body.unwrap_or_default()))
            .map_err(|e| Error::Http(e.to_string()))?;
        let resp = tokio::time::timeout(self.timeout, conn.sender.send_request(req))
            .await
            .map_err(|_| Error::Http("request timed out".into()))?
            .map_err(|e| Error::Http(e.to_string()))?;
        let (parts, body) = resp.into_parts();
        let body =
            tokio::time::timeout(self.timeout, read_body(body, MAX_RESPONSE_LEN, "response"))
                .await
                .map_err(|_| Error::Http("response timed out".into()))??;
        Ok((
            Response {
                status: parts.status,
                headers: parts.headers,
                body,
            },
            conn.document.clone(),
        ))
    }

    /// `POST /v1/chat/completions` (non-streamed) and verification of its
    /// receipt: the answer is signed by the attested key over this request
    /// body, this text, the attested model and the sampling parameters.
    pub async fn chat_completion(&self, request: &serde_json::Value) -> Result<VerifiedCompletion> {
        let body =
            Bytes::from(serde_json::to_vec(request).map_err(|e| Error::Http(e.to_string()))?);
        let (resp, doc) = self
            .request(
                hyper::Method::POST,
                "/v1/chat/completions",
                Some(body.clone()),
            )
            .await?;
        if !resp.status.is_success() {
            return Err(Error::Http(format!(
                "{}: {}",
                resp.status,
                String::from_utf8_lossy(&resp.body[..resp.body.len().min(1024)])
            )));
        }
        let json: serde_json::Value = serde_json::from_slice(&resp.body)
            .map_err(|e| Error::Http(format!("response is not JSON: {e}")))?;
        let text = json["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let header = resp
            .headers
            .get(RECEIPT_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Error::Receipt("the response carries no receipt".into()))?;
        let receipt = Receipt::from_header_value(header)?;
        receipt.verify(&doc, &body, &text)?;
        Ok(VerifiedCompletion {
            json,
            text,
            receipt,
        })
    }
}
