//! `POST /v1/watermark/detect`: does a text carry this deployment's watermark?

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use confidant_inference::watermark::{DEFAULT_MIN_TOKENS, DetectOptions, Detection};
use serde::Deserialize;

use super::error::ApiError;
use super::openai::{body_or_error, parse};
use crate::state::AppState;

/// Request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectRequest {
    /// The text to test.
    pub text: String,
    /// z-score at or above which the text is "watermarked" (default 4).
    pub threshold: Option<f64>,
}

/// Scores `text` against the deployment's key. The answer holds the
/// z-score, p-value, scored and green token counts, the verdict and the
/// key id; never the key or the green lists.
/// Needs an API key with the `detect` permission (enforced by the access
/// middleware before this runs).
pub async fn detect(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Detection>, ApiError> {
    let body = body_or_error(body, st.config.max_body_bytes)?;
    let req: DetectRequest = parse(&body)?;
    let threshold = req
        .threshold
        .unwrap_or(confidant_inference::watermark::DEFAULT_Z_THRESHOLD);
    if !(threshold.is_finite() && threshold > 0.0 && threshold <= 100.0) {
        return Err(ApiError::invalid_param(
            "threshold",
            format!("threshold {threshold} is outside (0, 100]."),
        ));
    }
    let wm = st
        .watermark()
        .cloned()
        .ok_or_else(ApiError::watermark_not_configured)?;
    let engine = st
        .engine()
        .ok_or_else(|| ApiError::not_ready(&st.not_ready_reason()))?;
    let tokenizer = engine.tokenizer().clone();
    let opts = DetectOptions {
        z_threshold: threshold,
        min_tokens: DEFAULT_MIN_TOKENS,
    };
    // Tokenizing and scoring a large body takes a while: off the async workers.
    let d = tokio::task::spawn_blocking(move || wm.detect_text(&tokenizer, &req.text, &opts))
        .await
        .map_err(|e| ApiError::internal(format!("detection failed: {e}")))??;
    Ok(Json(d))
}
