//! API errors in OpenAI's JSON shape. HTTP statuses are mapped from errors
//! here and nowhere else.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use confidant_inference::Error as EngineError;

use crate::access::Refusal;
use crate::access::quota::{Denied, reset_text, retry_after_secs};
use std::time::Duration;

/// An error answered to an API client.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// OpenAI `error.type`.
    pub kind: &'static str,
    /// OpenAI `error.code`.
    pub code: Option<&'static str>,
    /// OpenAI `error.param`.
    pub param: Option<String>,
    /// Human-readable message (never contains prompt text or secrets).
    pub message: String,
    /// Seconds for `Retry-After`, when retrying later can help.
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            code: None,
            param: None,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400 for a request the API does not accept.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// 400 naming the offending parameter.
    pub fn invalid_param(param: &str, message: impl Into<String>) -> Self {
        Self {
            param: Some(param.to_owned()),
            ..Self::invalid(message)
        }
    }

    /// 400 for a body that is not the JSON we expect.
    pub fn malformed(detail: impl std::fmt::Display) -> Self {
        Self {
            code: Some("invalid_json"),
            ..Self::invalid(format!(
                "We could not parse the JSON body of your request: {detail}"
            ))
        }
    }

    /// 404 for an unknown model.
    pub fn model_not_found(model: &str) -> Self {
        Self {
            code: Some("model_not_found"),
            param: Some("model".into()),
            ..Self::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                format!("The model `{model}` does not exist or you do not have access to it."),
            )
        }
    }

    /// 413 for a body over the limit.
    pub fn too_large(limit: usize) -> Self {
        Self {
            code: Some("request_too_large"),
            ..Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                format!("The request body exceeds the limit of {limit} bytes."),
            )
        }
    }

    /// 503 while the model is not loaded.
    pub fn not_ready(reason: &str) -> Self {
        Self {
            code: Some("not_ready"),
            retry_after: Some(5),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                format!("The model is not ready: {reason}"),
            )
        }
    }

    /// 404 for watermark detection on a server that does not watermark.
    pub fn watermark_not_configured() -> Self {
        Self {
            code: Some("watermark_not_configured"),
            ..Self::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "This server does not watermark its outputs.",
            )
        }
    }

    /// 500 for a failure on our side.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    /// 404 for an unknown route.
    pub fn no_route(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("Unknown request URL: {path}."),
        )
    }

    /// 405 for a known route with the wrong method.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "Method not allowed for this URL.",
        )
    }
}

impl ApiError {
    /// 400 for a prompt over `max_prompt_tokens`.
    pub fn prompt_too_long(tokens: usize, cap: usize) -> Self {
        Self {
            code: Some("prompt_too_long"),
            ..Self::invalid(format!(
                "The prompt is {tokens} tokens long; this server accepts at most {cap}."
            ))
        }
    }

    /// 504 when a request runs past `request_timeout_secs`.
    pub fn timeout(secs: u64) -> Self {
        Self {
            code: Some("timeout"),
            ..Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                "server_error",
                format!("The request took longer than {secs} s."),
            )
        }
    }

    /// 503 when the server was started without access control.
    pub fn access_not_configured() -> Self {
        Self {
            code: Some("not_ready"),
            retry_after: Some(5),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "Access control is not set up yet.",
            )
        }
    }
}

/// Refusals by access control: 401 (no valid key), 403 (permission), 429
/// (quota), in OpenAI's shapes.
impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        let unauthorized = |message: &str| Self {
            code: Some("invalid_api_key"),
            ..Self::new(StatusCode::UNAUTHORIZED, "invalid_request_error", message)
        };
        let limited = |kind, code, message: String, retry: Option<Duration>| Self {
            code: Some(code),
            retry_after: retry.map(retry_after_secs),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, kind, message)
        };
        match r {
            Refusal::MissingKey => unauthorized(
                "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            ),
            Refusal::InvalidKey => unauthorized("Incorrect API key provided."),
            Refusal::RevokedKey => unauthorized("This API key has been revoked."),
            Refusal::Forbidden(p) => Self {
                code: Some("insufficient_permissions"),
                ..Self::new(
                    StatusCode::FORBIDDEN,
                    "invalid_request_error",
                    format!(
                        "This API key lacks the `{}` permission needed for this route.",
                        p.as_str()
                    ),
                )
            },
            Refusal::Limited(d) => match d {
                Denied::Requests(i, wait) => limited(
                    "requests",
                    "rate_limit_exceeded",
                    format!(
                        "Rate limit reached for requests per minute (RPM): Limit {}. Please try again in {}.",
                        i.limit,
                        reset_text(wait)
                    ),
                    Some(wait),
                ),
                Denied::Tokens(i, wait) => limited(
                    "tokens",
                    "rate_limit_exceeded",
                    format!(
                        "Rate limit reached for tokens per minute (TPM): Limit {}. Please try again in {}.",
                        i.limit,
                        reset_text(wait)
                    ),
                    Some(wait),
                ),
                Denied::TooLarge { limit, requested } => limited(
                    "tokens",
                    "rate_limit_exceeded",
                    format!(
                        "Request too large for tokens per minute (TPM): Limit {limit}, Requested {requested} (prompt tokens plus max_tokens). Lower max_tokens or shorten the prompt."
                    ),
                    None,
                ),
                Denied::Concurrency(n) => limited(
                    "requests",
                    "concurrency_limit_exceeded",
                    format!("Too many requests in flight for this API key (limit {n})."),
                    Some(Duration::from_secs(1)),
                ),
                Denied::Address(i, wait) => limited(
                    "requests",
                    "rate_limit_exceeded",
                    format!(
                        "Too many requests from your address: Limit {} per minute. Please try again in {}.",
                        i.limit,
                        reset_text(wait)
                    ),
                    Some(wait),
                ),
            },
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::ContextLength {
                context,
                prompt,
                requested,
            } => Self {
                code: Some("context_length_exceeded"),
                param: Some("messages".into()),
                ..Self::invalid(format!(
                    "This model's maximum context length is {context} tokens. However, you requested {} tokens ({prompt} in the prompt, {requested} for the completion). Please reduce the length of the prompt or of max_tokens.",
                    prompt + requested
                ))
            },
            EngineError::EmptyPrompt => Self::invalid_param("messages", "The prompt is empty."),
            EngineError::InvalidParameter(m) => Self::invalid(m),
            EngineError::Template(m) => {
                Self::invalid_param("messages", format!("Chat template: {m}"))
            }
            EngineError::Tokenizer(m) => Self::invalid(format!("Tokenizer: {m}")),
            EngineError::QueueFull(n) => Self {
                code: Some("overloaded"),
                retry_after: Some(1),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "server_error",
                    format!("The server is overloaded ({n} requests waiting). Please retry."),
                )
            },
            other => {
                tracing::error!(error = %other, "engine error");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    other.to_string(),
                )
            }
        }
    }
}

impl ApiError {
    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}
