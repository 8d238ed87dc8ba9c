//! OpenAI request and response bodies (the subset Confidant serves), with
//! the checks that turn a request into engine parameters.

use std::collections::HashMap;

use confidant_inference::sampling::SamplingParams;
use serde::{Deserialize, Serialize};

use super::error::ApiError;

/// Most stop sequences per request (OpenAI's limit).
pub const MAX_STOP: usize = 4;
/// Longest stop sequence, in bytes.
pub const MAX_STOP_LEN: usize = 256;
/// Most chat messages per request.
pub const MAX_MESSAGES: usize = 1024;

/// `stop`: one string or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One sequence.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    /// Send a final chunk with usage.
    #[serde(default)]
    pub include_usage: bool,
}

/// A chat message's content: a string or a list of text parts.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Content parts.
    Parts(Vec<ContentPart>),
}

/// One content part; only text is accepted.
#[derive(Debug, Clone, Deserialize)]
pub struct ContentPart {
    /// Part type (`text`).
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a text part.
    #[serde(default)]
    pub text: Option<String>,
}

/// One chat message of a request.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatMessageIn {
    /// `system`, `developer`, `user` or `assistant`.
    pub role: String,
    /// Content (may be null for an assistant message).
    #[serde(default)]
    pub content: Option<Content>,
    /// Participant name (accepted, not used by the template).
    #[serde(default)]
    pub name: Option<String>,
}

/// Parameters shared by both completion endpoints.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Common {
    /// Model id.
    pub model: String,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub max_tokens: Option<u32>,
    pub stop: Option<Stop>,
    pub seed: Option<i64>,
    pub n: Option<u32>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub user: Option<String>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub logprobs: Option<serde_json::Value>,
    pub logit_bias: Option<HashMap<String, f32>>,
    /// Extension: top-k sampling.
    pub top_k: Option<u32>,
    /// Extension: llama.cpp-style repetition penalty.
    pub repetition_penalty: Option<f32>,
    /// Extension: keep generating past end-of-generation tokens.
    pub ignore_eos: Option<bool>,
}

/// `POST /v1/chat/completions` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessageIn>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub max_tokens: Option<u32>,
    pub max_completion_tokens: Option<u32>,
    pub stop: Option<Stop>,
    pub seed: Option<i64>,
    pub n: Option<u32>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub user: Option<String>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<u32>,
    pub logit_bias: Option<HashMap<String, f32>>,
    pub tools: Option<serde_json::Value>,
    pub tool_choice: Option<serde_json::Value>,
    pub parallel_tool_calls: Option<serde_json::Value>,
    pub functions: Option<serde_json::Value>,
    pub function_call: Option<serde_json::Value>,
    pub response_format: Option<serde_json::Value>,
    pub top_k: Option<u32>,
    pub repetition_penalty: Option<f32>,
    pub ignore_eos: Option<bool>,
}

/// `POST /v1/completions` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: Prompt,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub max_tokens: Option<u32>,
    pub stop: Option<Stop>,
    pub seed: Option<i64>,
    pub n: Option<u32>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub user: Option<String>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub logprobs: Option<serde_json::Value>,
    pub logit_bias: Option<HashMap<String, f32>>,
    pub echo: Option<bool>,
    pub suffix: Option<String>,
    pub best_of: Option<u32>,
    pub top_k: Option<u32>,
    pub repetition_penalty: Option<f32>,
    pub ignore_eos: Option<bool>,
}

/// A completion prompt: text, one-element text list, or token ids.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    /// Text.
    Text(String),
    /// A list of texts (exactly one accepted, since n = 1).
    Texts(Vec<String>),
    /// Token ids.
    Tokens(Vec<u32>),
}

impl ChatRequest {
    /// Refuses what Confidant does not do, clearly, and returns the shared part.
    pub fn common(&self) -> Result<Common, ApiError> {
        let refuse = |p: &str, what: &str| Err(ApiError::invalid_param(p, what.to_string()));
        if self.tools.is_some() || self.functions.is_some() {
            return refuse("tools", "Tool and function calling are not supported.");
        }
        if self.tool_choice.is_some()
            || self.function_call.is_some()
            || self.parallel_tool_calls.is_some()
        {
            return refuse(
                "tool_choice",
                "Tool and function calling are not supported.",
            );
        }
        if let Some(rf) = &self.response_format
            && rf.get("type").and_then(|t| t.as_str()) != Some("text")
        {
            return refuse(
                "response_format",
                "Only the `text` response format is supported.",
            );
        }
        if self.logprobs == Some(true) || self.top_logprobs.is_some() {
            return refuse("logprobs", "logprobs are not supported.");
        }
        if let (Some(a), Some(b)) = (self.max_tokens, self.max_completion_tokens)
            && a != b
        {
            return refuse(
                "max_completion_tokens",
                "max_tokens and max_completion_tokens disagree; send one.",
            );
        }
        Ok(Common {
            model: self.model.clone(),
            temperature: self.temperature,
            top_p: self.top_p,
            max_tokens: self.max_completion_tokens.or(self.max_tokens),
            stop: self.stop.clone(),
            seed: self.seed,
            n: self.n,
            stream: self.stream,
            stream_options: self.stream_options.clone(),
            user: self.user.clone(),
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            logprobs: None,
            logit_bias: self.logit_bias.clone(),
            top_k: self.top_k,
            repetition_penalty: self.repetition_penalty,
            ignore_eos: self.ignore_eos,
        })
    }
}

impl CompletionRequest {
    /// Refuses what Confidant does not do, clearly, and returns the shared part.
    pub fn common(&self) -> Result<Common, ApiError> {
        let refuse = |p: &str, what: &str| Err(ApiError::invalid_param(p, what.to_string()));
        if self.echo == Some(true) {
            return refuse("echo", "echo is not supported.");
        }
        if self.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
            return refuse("suffix", "suffix (insertion) is not supported.");
        }
        if self.best_of.is_some_and(|b| b != 1) {
            return refuse("best_of", "Only best_of = 1 is supported.");
        }
        if self
            .logprobs
            .as_ref()
            .is_some_and(|v| !v.is_null() && v != &serde_json::json!(0))
        {
            return refuse("logprobs", "logprobs are not supported.");
        }
        Ok(Common {
            model: self.model.clone(),
            temperature: self.temperature,
            top_p: self.top_p,
            max_tokens: self.max_tokens,
            stop: self.stop.clone(),
            seed: self.seed,
            n: self.n,
            stream: self.stream,
            stream_options: self.stream_options.clone(),
            user: self.user.clone(),
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            logprobs: None,
            logit_bias: self.logit_bias.clone(),
            top_k: self.top_k,
            repetition_penalty: self.repetition_penalty,
            ignore_eos: self.ignore_eos,
        })
    }
}

impl Common {
    /// Sampling parameters, checked (OpenAI's defaults: temperature 1, top_p 1).
    pub fn sampling(&self) -> Result<SamplingParams, ApiError> {
        if let Some(n) = self.n
            && n != 1
        {
            return Err(ApiError::invalid_param(
                "n",
                format!("Only n = 1 is supported, got {n}."),
            ));
        }
        let mut logit_bias = Vec::new();
        for (k, &b) in self.logit_bias.iter().flatten() {
            let id = k.parse::<u32>().map_err(|_| {
                ApiError::invalid_param("logit_bias", format!("`{k}` is not a token id."))
            })?;
            logit_bias.push((id, b));
        }
        let p = SamplingParams {
            logit_bias,
            temperature: self.temperature.unwrap_or(1.0),
            top_p: self.top_p.unwrap_or(1.0),
            top_k: self.top_k.unwrap_or(0) as usize,
            repetition_penalty: self.repetition_penalty.unwrap_or(1.0),
            presence_penalty: self.presence_penalty.unwrap_or(0.0),
            frequency_penalty: self.frequency_penalty.unwrap_or(0.0),
            seed: self.seed.map(|s| s as u64),
            ..SamplingParams::default()
        };
        p.validate().map_err(|e| ApiError::invalid(e.to_string()))?;
        Ok(p)
    }

    /// Stop sequences, checked.
    pub fn stops(&self) -> Result<Vec<String>, ApiError> {
        let v = match &self.stop {
            None => vec![],
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        };
        if v.len() > MAX_STOP {
            return Err(ApiError::invalid_param(
                "stop",
                format!("At most {MAX_STOP} stop sequences are allowed."),
            ));
        }
        if v.iter().any(|s| s.is_empty() || s.len() > MAX_STOP_LEN) {
            return Err(ApiError::invalid_param(
                "stop",
                format!("Stop sequences must be 1 to {MAX_STOP_LEN} bytes long."),
            ));
        }
        Ok(v)
    }

    /// Whether to stream.
    pub fn streaming(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Whether a streamed response ends with a usage chunk.
    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
    }
}

/// Token counts in a response.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct UsageOut {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

impl From<confidant_inference::engine::Usage> for UsageOut {
    fn from(u: confidant_inference::engine::Usage) -> Self {
        Self {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.prompt_tokens + u.completion_tokens,
        }
    }
}
