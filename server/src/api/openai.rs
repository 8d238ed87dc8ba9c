//! `/v1/chat/completions`, `/v1/completions` and `/v1/models`.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use confidant_client::receipt::{
    RECEIPT_HEADER, RECEIPT_VERSION, Receipt, ReceiptBody, sha256_hex,
};
use confidant_inference::engine::{Event, FinishReason, GenerationRequest};
use futures_util::stream::{self, Stream};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

use super::error::ApiError;
use super::prompt;
use super::types::{ChatRequest, Common, CompletionRequest, Prompt, UsageOut};
use crate::access::Caller;
use crate::state::{AppState, unix_now};

/// Which endpoint a response is for (they differ only in shape).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Completion,
}

pub(super) fn body_or_error(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<Bytes, ApiError> {
    body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(limit)
        } else {
            ApiError::invalid(format!("Cannot read the request body: {}", r.body_text()))
        }
    })
}

pub(super) fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            ApiError::malformed(e)
        } else {
            ApiError::invalid(format!("Invalid request: {e}"))
        }
    })
}

fn random_id(prefix: &str) -> String {
    let n: u128 = rand::random();
    format!("{prefix}-{n:032x}")
}

fn finish_str(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    }
}

/// Everything both endpoints need once the prompt is tokenized.
struct Prepared {
    kind: Kind,
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    stream: bool,
    rx: UnboundedReceiver<Event>,
    arrived: Instant,
    /// SHA-256 of the request body, hex (receipts).
    request_sha256: String,
    /// Sampling parameters as applied (receipts).
    sampling: Value,
    /// Access control's hook: token quota, usage and content for the audit log.
    caller: Option<Caller>,
}

/// Request fields that shape sampling, as sent, plus the effective
/// `max_tokens`: what a receipt commits to.
const SAMPLING_FIELDS: &[&str] = &[
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "logit_bias",
    "ignore_eos",
    "n",
];

fn sampling_json(body: &[u8], max_tokens: usize) -> Value {
    let req: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let mut m = serde_json::Map::new();
    for k in SAMPLING_FIELDS {
        if let Some(v) = req.get(*k).filter(|v| !v.is_null()) {
            m.insert((*k).to_owned(), v.clone());
        }
    }
    m.insert("max_tokens".to_owned(), json!(max_tokens));
    Value::Object(m)
}

/// A receipt over this request and response, signed by the attested key;
/// `None` when the server has no attestation (development).
fn receipt(
    st: &AppState,
    p: &Prepared,
    text: &str,
    finish: FinishReason,
    usage: &UsageOut,
) -> Option<Receipt> {
    let svc = st.attestation()?;
    let model = svc.model()?;
    let body = ReceiptBody {
        version: RECEIPT_VERSION.to_owned(),
        id: p.id.clone(),
        created: p.created,
        model: p.model.clone(),
        model_sha256: model.sha256,
        request_sha256: p.request_sha256.clone(),
        response_sha256: sha256_hex(text.as_bytes()),
        sampling: p.sampling.clone(),
        finish_reason: finish_str(finish).to_owned(),
        prompt_tokens: usage.prompt_tokens as u64,
        completion_tokens: usage.completion_tokens as u64,
        watermark_key_id: st.watermark().map(|w| w.key_id().to_string()),
        tls_spki_sha256: hex::encode(svc.tls().spki_sha256()),
    };
    match svc.sign_receipt(body) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::error!(error = %e, "cannot sign a receipt");
            None
        }
    }
}

fn prepare(
    st: &AppState,
    kind: Kind,
    common: &Common,
    tokens: Vec<u32>,
    arrived: Instant,
    body: &[u8],
    caller: Option<Caller>,
) -> Result<Prepared, ApiError> {
    let engine = st
        .engine()
        .ok_or_else(|| ApiError::not_ready(&st.not_ready_reason()))?;
    let params = common.sampling()?;
    let stop = common.stops()?;
    let context = engine.context_length();
    let room = context.saturating_sub(tokens.len());
    let cap = match st.config.max_tokens_cap {
        0 => usize::MAX,
        c => c,
    };
    let max_tokens = match common.max_tokens {
        Some(0) => {
            return Err(ApiError::invalid_param(
                "max_tokens",
                "max_tokens must be at least 1.",
            ));
        }
        Some(m) if m as usize > cap => {
            return Err(ApiError::invalid_param(
                "max_tokens",
                format!("max_tokens is {m}, the server allows at most {cap}."),
            ));
        }
        Some(m) => m as usize,
        None => room.min(cap),
    };
    let prompt_cap = st.config.max_prompt_tokens;
    if prompt_cap > 0 && tokens.len() > prompt_cap {
        return Err(ApiError::prompt_too_long(tokens.len(), prompt_cap));
    }
    if let Some(c) = &caller {
        // Tokens/min: prompt + max_tokens reserved up front.
        c.reserve_tokens(tokens.len(), max_tokens)?;
    }
    let rx = engine.submit(GenerationRequest {
        prompt: tokens,
        max_tokens,
        params,
        stop,
        ignore_eos: common.ignore_eos.unwrap_or(false),
    })?;
    Ok(Prepared {
        kind,
        id: random_id(if kind == Kind::Chat {
            "chatcmpl"
        } else {
            "cmpl"
        }),
        model: common.model.clone(),
        created: unix_now(),
        include_usage: common.include_usage(),
        stream: common.streaming(),
        rx,
        arrived,
        request_sha256: sha256_hex(body),
        sampling: sampling_json(body, max_tokens),
        caller,
    })
}

fn check_model(st: &AppState, model: &str) -> Result<(), ApiError> {
    let Some(id) = st.model_id() else {
        return Err(ApiError::not_ready(&st.not_ready_reason()));
    };
    if model != id {
        return Err(ApiError::model_not_found(model));
    }
    Ok(())
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    State(st): State<Arc<AppState>>,
    caller: Option<Extension<Caller>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let body = body_or_error(body, st.config.max_body_bytes)?;
    let req: ChatRequest = parse(&body)?;
    let common = req.common()?;
    check_model(&st, &common.model)?;
    let engine = st
        .engine()
        .ok_or_else(|| ApiError::not_ready(&st.not_ready_reason()))?;
    let msgs = prompt::messages(&req.messages)?;
    let (rendered, tokens) = prompt::chat_tokens(engine, &msgs)?;
    let caller = caller.map(|Extension(c)| c);
    if let Some(c) = &caller {
        c.record_prompt(&rendered);
    }
    let p = prepare(&st, Kind::Chat, &common, tokens, arrived, &body, caller)?;
    Ok(respond(st, p).await)
}

/// `POST /v1/completions`.
pub async fn completions(
    State(st): State<Arc<AppState>>,
    caller: Option<Extension<Caller>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let body = body_or_error(body, st.config.max_body_bytes)?;
    let req: CompletionRequest = parse(&body)?;
    let common = req.common()?;
    check_model(&st, &common.model)?;
    let engine = st
        .engine()
        .ok_or_else(|| ApiError::not_ready(&st.not_ready_reason()))?;
    let tokens = match &req.prompt {
        Prompt::Text(t) => prompt::completion_tokens(engine, t)?,
        Prompt::Texts(v) if v.len() == 1 => prompt::completion_tokens(engine, &v[0])?,
        Prompt::Texts(_) => {
            return Err(ApiError::invalid_param(
                "prompt",
                "Exactly one prompt is supported (n = 1).",
            ));
        }
        Prompt::Tokens(t) => t.clone(),
    };
    let caller = caller.map(|Extension(c)| c);
    if let (Some(c), Prompt::Text(t)) = (&caller, &req.prompt) {
        c.record_prompt(t);
    } else if let (Some(c), Prompt::Texts(v)) = (&caller, &req.prompt) {
        c.record_prompt(&v[0]);
    }
    let p = prepare(
        &st,
        Kind::Completion,
        &common,
        tokens,
        arrived,
        &body,
        caller,
    )?;
    Ok(respond(st, p).await)
}

async fn respond(st: Arc<AppState>, p: Prepared) -> Response {
    let timeout = Duration::from_secs(st.config.request_timeout_secs.max(1));
    if p.stream {
        stream_response(st, p, timeout).into_response()
    } else {
        match tokio::time::timeout(timeout, collect(st.clone(), p)).await {
            Ok(r) => r,
            Err(_) => ApiError {
                status: StatusCode::GATEWAY_TIMEOUT,
                kind: "server_error",
                code: Some("timeout"),
                param: None,
                message: format!("The request took longer than {} s.", timeout.as_secs()),
                retry_after: None,
            }
            .into_response(),
        }
    }
}

/// Records token timing metrics as deltas arrive.
struct Timing {
    arrived: Instant,
    last: Option<Instant>,
}

impl Timing {
    fn delta(&mut self, st: &AppState, tokens: usize) {
        let now = Instant::now();
        match self.last {
            None => st
                .metrics
                .time_to_first_token
                .observe(now.duration_since(self.arrived).as_secs_f64()),
            Some(prev) if tokens > 0 => {
                let per = now.duration_since(prev).as_secs_f64() / tokens as f64;
                st.metrics.time_per_output_token.observe(per);
            }
            Some(_) => {}
        }
        self.last = Some(now);
    }
}

fn count_usage(st: &AppState, u: &UsageOut, arrived: Instant) {
    st.metrics
        .prompt_tokens
        .fetch_add(u.prompt_tokens as u64, Ordering::Relaxed);
    st.metrics
        .completion_tokens
        .fetch_add(u.completion_tokens as u64, Ordering::Relaxed);
    st.metrics
        .request_duration
        .observe(arrived.elapsed().as_secs_f64());
}

async fn collect(st: Arc<AppState>, mut p: Prepared) -> Response {
    let mut text = String::new();
    let mut timing = Timing {
        arrived: p.arrived,
        last: None,
    };
    while let Some(ev) = p.rx.recv().await {
        match ev {
            Event::Delta { text: t, tokens } => {
                timing.delta(&st, tokens);
                text.push_str(&t);
            }
            Event::Done(f) => {
                let usage = UsageOut::from(f.usage);
                count_usage(&st, &usage, p.arrived);
                if let Some(c) = &p.caller {
                    c.record_usage(usage.prompt_tokens, usage.completion_tokens);
                    c.record_completion(&text);
                }
                let choice = match p.kind {
                    Kind::Chat => json!({
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "logprobs": null,
                        "finish_reason": finish_str(f.reason),
                    }),
                    Kind::Completion => json!({
                        "index": 0,
                        "text": text,
                        "logprobs": null,
                        "finish_reason": finish_str(f.reason),
                    }),
                };
                let receipt = receipt(&st, &p, &text, f.reason, &usage);
                let mut out = json!({
                    "id": p.id,
                    "object": if p.kind == Kind::Chat { "chat.completion" } else { "text_completion" },
                    "created": p.created,
                    "model": p.model,
                    "choices": [choice],
                    "usage": usage,
                    "system_fingerprint": null,
                });
                let mut resp = match &receipt {
                    Some(r) => {
                        out["receipt"] = serde_json::to_value(r).unwrap_or(Value::Null);
                        axum::Json(out).into_response()
                    }
                    None => axum::Json(out).into_response(),
                };
                if let Some(v) = receipt
                    .and_then(|r| axum::http::HeaderValue::from_str(&r.to_header_value()).ok())
                {
                    resp.headers_mut().insert(RECEIPT_HEADER, v);
                }
                return resp;
            }
            Event::Error(e) => return ApiError::from(e).into_response(),
        }
    }
    ApiError::from(confidant_inference::Error::EngineStopped).into_response()
}

enum Phase {
    Role,
    Running,
    Usage(UsageOut),
    DoneMarker,
    End,
}

struct StreamState {
    st: Arc<AppState>,
    p: Prepared,
    phase: Phase,
    timing: Timing,
    deadline: tokio::time::Instant,
    /// Everything sent so far (the receipt covers it).
    text: String,
}

impl Drop for StreamState {
    fn drop(&mut self) {
        // Dropped before the end: the client went away (or the server is
        // shutting down). Dropping `p.rx` tells the engine to stop generating.
        if !matches!(self.phase, Phase::End) {
            self.st
                .metrics
                .client_disconnects
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl StreamState {
    fn chunk(&self, delta_or_text: Value, finish: Option<FinishReason>) -> SseEvent {
        self.chunk_with(delta_or_text, finish, None)
    }

    fn chunk_with(
        &self,
        delta_or_text: Value,
        finish: Option<FinishReason>,
        receipt: Option<&Receipt>,
    ) -> SseEvent {
        let finish = finish.map(finish_str);
        let choice = match self.p.kind {
            Kind::Chat => {
                json!({"index": 0, "delta": delta_or_text, "logprobs": null, "finish_reason": finish})
            }
            Kind::Completion => {
                json!({"index": 0, "text": delta_or_text, "logprobs": null, "finish_reason": finish})
            }
        };
        let mut v = json!({
            "id": self.p.id,
            "object": if self.p.kind == Kind::Chat { "chat.completion.chunk" } else { "text_completion" },
            "created": self.p.created,
            "model": self.p.model,
            "system_fingerprint": null,
            "choices": [choice],
        });
        if self.p.include_usage {
            v["usage"] = Value::Null;
        }
        if let Some(r) = receipt {
            v["receipt"] = serde_json::to_value(r).unwrap_or(Value::Null);
        }
        SseEvent::default().data(v.to_string())
    }

    fn usage_chunk(&self, u: &UsageOut) -> SseEvent {
        let v = json!({
            "id": self.p.id,
            "object": if self.p.kind == Kind::Chat { "chat.completion.chunk" } else { "text_completion" },
            "created": self.p.created,
            "model": self.p.model,
            "system_fingerprint": null,
            "choices": [],
            "usage": u,
        });
        SseEvent::default().data(v.to_string())
    }

    fn text_value(&self, text: String) -> Value {
        match self.p.kind {
            Kind::Chat => json!({"content": text}),
            Kind::Completion => Value::String(text),
        }
    }
}

fn stream_response(
    st: Arc<AppState>,
    p: Prepared,
    timeout: Duration,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let phase = if p.kind == Kind::Chat {
        Phase::Role
    } else {
        Phase::Running
    };
    let state = StreamState {
        timing: Timing {
            arrived: p.arrived,
            last: None,
        },
        st,
        p,
        phase,
        deadline: tokio::time::Instant::now() + timeout,
        text: String::new(),
    };
    let s = stream::unfold(state, |mut s| async move {
        if matches!(s.phase, Phase::End) {
            return None;
        }
        let ev = match std::mem::replace(&mut s.phase, Phase::Running) {
            Phase::Role => s.chunk(json!({"role": "assistant", "content": ""}), None),
            Phase::Running => match tokio::time::timeout_at(s.deadline, s.p.rx.recv()).await {
                Ok(Some(Event::Delta { text, tokens })) => {
                    s.timing.delta(&s.st, tokens);
                    s.text.push_str(&text);
                    if let Some(c) = &s.p.caller {
                        c.record_completion(&text);
                    }
                    s.chunk(s.text_value(text), None)
                }
                Ok(Some(Event::Done(f))) => {
                    let usage = UsageOut::from(f.usage);
                    count_usage(&s.st, &usage, s.p.arrived);
                    if let Some(c) = &s.p.caller {
                        c.record_usage(usage.prompt_tokens, usage.completion_tokens);
                    }
                    s.phase = if s.p.include_usage {
                        Phase::Usage(usage)
                    } else {
                        Phase::DoneMarker
                    };
                    let empty = match s.p.kind {
                        Kind::Chat => json!({}),
                        Kind::Completion => json!(""),
                    };
                    // The finish chunk carries the receipt (an extra field
                    // OpenAI SDKs keep and ignore).
                    match receipt(&s.st, &s.p, &s.text, f.reason, &usage) {
                        Some(r) => s.chunk_with(empty, Some(f.reason), Some(&r)),
                        None => s.chunk(empty, Some(f.reason)),
                    }
                }
                Ok(Some(Event::Error(e))) => {
                    s.phase = Phase::DoneMarker;
                    SseEvent::default().data(ApiError::from(e).body().to_string())
                }
                Ok(None) => {
                    s.phase = Phase::DoneMarker;
                    let e = ApiError::from(confidant_inference::Error::EngineStopped);
                    SseEvent::default().data(e.body().to_string())
                }
                Err(_) => {
                    s.phase = Phase::DoneMarker;
                    let body = json!({"error": {"message": "The request took too long.", "type": "server_error", "param": null, "code": "timeout"}});
                    SseEvent::default().data(body.to_string())
                }
            },
            Phase::Usage(u) => {
                s.phase = Phase::DoneMarker;
                s.usage_chunk(&u)
            }
            Phase::DoneMarker => {
                s.phase = Phase::End;
                SseEvent::default().data("[DONE]")
            }
            Phase::End => unreachable!("handled above"),
        };
        Some((Ok(ev), s))
    });
    Sse::new(s).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// `GET /v1/models`.
pub async fn list_models(State(st): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let id = st
        .model_id()
        .ok_or_else(|| ApiError::not_ready(&st.not_ready_reason()))?;
    Ok(axum::Json(json!({
        "object": "list",
        "data": [model_object(&st, id)],
    }))
    .into_response())
}

/// `GET /v1/models/{id}`.
pub async fn get_model(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    check_model(&st, &id)?;
    Ok(axum::Json(model_object(&st, &id)).into_response())
}

fn model_object(st: &AppState, id: &str) -> Value {
    json!({"id": id, "object": "model", "created": st.started_unix, "owned_by": "confidant"})
}
