//! HTTP routes: the OpenAI-compatible API, health, readiness and metrics.

pub mod attestation;
pub mod error;
pub mod openai;
pub mod prompt;
pub mod types;
pub mod watermark;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::state::AppState;
use error::ApiError;

/// The server's router.
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.config.max_body_bytes;
    Router::new()
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/models", get(openai::list_models))
        .route("/v1/models/{id}", get(openai::get_model))
        // Needs an API key with the `detect` permission (access::need).
        .route("/v1/watermark/detect", post(watermark::detect))
        .route("/v1/attestation", get(attestation::attestation))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|req: Request| async move { ApiError::no_route(req.uri().path()) })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::access::middleware,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

/// Counts every answered request by route template and status.
async fn track(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let t = Instant::now();
    let resp = next.run(req).await;
    st.metrics.request(&route, resp.status().as_u16());
    if route.starts_with("/v1/") && route.ends_with("completions") && !resp.status().is_success() {
        st.metrics
            .request_duration
            .observe(t.elapsed().as_secs_f64());
    }
    resp
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

async fn readyz(State(st): State<Arc<AppState>>) -> Response {
    match st.engine() {
        Some(e) => axum::Json(serde_json::json!({
            "status": "ready",
            "model": st.model_id(),
            "backend": e.backend(),
        }))
        .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"status": "not_ready", "reason": st.not_ready_reason()})),
        )
            .into_response(),
    }
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let mut body = st
        .metrics
        .render(st.engine().map(|e| e.stats()), st.engine().is_some());
    if let Some(a) = st.access() {
        a.render_metrics(&mut body);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
