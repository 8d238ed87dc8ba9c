//! `GET /v1/attestation?nonce=HEX`: fresh evidence bound to the client's
//! nonce and this process's TLS and HPKE keys, with the model digest, the
//! watermark's public parameters and the policy-relevant configuration.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::error::ApiError;
use crate::attestation::{DocumentError, MIN_NONCE_LEN};
use crate::state::AppState;

/// Query string.
#[derive(Deserialize)]
pub struct NonceQuery {
    nonce: Option<String>,
}

/// The handler.
pub async fn attestation(
    State(st): State<Arc<AppState>>,
    Query(q): Query<NonceQuery>,
) -> Result<Response, ApiError> {
    let svc = st
        .attestation()
        .cloned()
        .ok_or_else(|| ApiError::not_ready("this server has no attester: it cannot be verified"))?;
    let nonce = q.nonce.ok_or_else(|| {
        ApiError::invalid_param(
            "nonce",
            format!("Pass ?nonce= with {MIN_NONCE_LEN} to 64 random bytes as hex."),
        )
    })?;
    let doc = tokio::task::spawn_blocking(move || svc.document(&nonce))
        .await
        .map_err(|e| ApiError::internal(format!("attestation task failed: {e}")))?;
    match doc {
        Ok(d) => Ok((
            [(axum::http::header::CACHE_CONTROL, "no-store")],
            axum::Json(d),
        )
            .into_response()),
        Err(DocumentError::BadNonce) => Err(ApiError::invalid_param(
            "nonce",
            DocumentError::BadNonce.to_string(),
        )),
        Err(DocumentError::NotReady) => Err(ApiError::not_ready(&st.not_ready_reason())),
        Err(e @ DocumentError::Attester(_)) => {
            tracing::error!(error = %e, "attestation failed");
            let mut err = ApiError::internal(e.to_string());
            err.status = StatusCode::SERVICE_UNAVAILABLE;
            Err(err)
        }
    }
}
