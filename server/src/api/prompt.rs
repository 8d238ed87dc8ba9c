//! Building prompt tokens from chat messages so that message text can never
//! become control tokens.
//!
//! The chat template is rendered with each message's content replaced by a
//! unique placeholder; the template's own text is tokenized with special
//! tokens recognised (`<|im_start|>` …), and each message's content is
//! tokenized as plain text. A user typing `<|im_end|>` therefore gets the
//! characters, not the control token. If a template transforms content so
//! that placeholders cannot be found, the request is refused rather than
//! tokenized unsafely.

use confidant_inference::engine::Engine;
use confidant_inference::template::ChatMessage;

use super::error::ApiError;
use super::types::{ChatMessageIn, Content, MAX_MESSAGES};

/// Placeholder delimiters: private-use code points no tokenizer input uses.
const OPEN: char = '\u{F8F0}';
const CLOSE: char = '\u{F8F1}';

/// Flattens one message's content to text.
fn content_text(m: &ChatMessageIn) -> Result<String, ApiError> {
    match &m.content {
        None => Ok(String::new()),
        Some(Content::Text(s)) => Ok(s.clone()),
        Some(Content::Parts(parts)) => {
            let mut out = String::new();
            for p in parts {
                if p.kind != "text" {
                    return Err(ApiError::invalid_param(
                        "messages",
                        format!(
                            "Content parts of type `{}` are not supported; only text.",
                            p.kind
                        ),
                    ));
                }
                out.push_str(p.text.as_deref().unwrap_or(""));
            }
            Ok(out)
        }
    }
}

/// Checked (role, content) pairs of a request.
pub fn messages(msgs: &[ChatMessageIn]) -> Result<Vec<ChatMessage>, ApiError> {
    if msgs.is_empty() {
        return Err(ApiError::invalid_param(
            "messages",
            "`messages` must not be empty.",
        ));
    }
    if msgs.len() > MAX_MESSAGES {
        return Err(ApiError::invalid_param(
            "messages",
            format!("At most {MAX_MESSAGES} messages are allowed."),
        ));
    }
    msgs.iter()
        .map(|m| {
            let role = match m.role.as_str() {
                "system" | "developer" => "system",
                "user" => "user",
                "assistant" => "assistant",
                other => {
                    return Err(ApiError::invalid_param(
                        "messages",
                        format!("Messages with role `{other}` are not supported."),
                    ));
                }
            };
            let content = content_text(m)?;
            if content.contains([OPEN, CLOSE]) {
                return Err(ApiError::invalid_param(
                    "messages",
                    "Message content contains reserved private-use characters U+F8F0/U+F8F1.",
                ));
            }
            Ok(ChatMessage {
                role: role.to_owned(),
                content,
            })
        })
        .collect()
}

/// The rendered prompt (for logs and tests) and its tokens.
pub fn chat_tokens(engine: &Engine, msgs: &[ChatMessage]) -> Result<(String, Vec<u32>), ApiError> {
    let template = engine.template().ok_or_else(|| {
        ApiError::invalid("This model has no chat template; use /v1/completions.")
    })?;
    let tok = engine.tokenizer();
    let marked: Vec<ChatMessage> = msgs
        .iter()
        .enumerate()
        .map(|(i, m)| ChatMessage {
            role: m.role.clone(),
            content: format!("{OPEN}{i}{CLOSE}"),
        })
        .collect();
    let skeleton = template.render(&marked, true)?;
    let mut tokens = Vec::new();
    let mut rendered = String::new();
    let mut rest = skeleton.as_str();
    for (i, m) in msgs.iter().enumerate() {
        let marker = format!("{OPEN}{i}{CLOSE}");
        let Some(at) = rest.find(&marker) else {
            return Err(ApiError::invalid(
                "The chat template transforms message content; refusing to build the prompt.",
            ));
        };
        let head = &rest[..at];
        tokens.extend(tok.encode(head, true)?);
        tokens.extend(tok.encode(&m.content, false)?);
        rendered.push_str(head);
        rendered.push_str(&m.content);
        rest = &rest[at + marker.len()..];
    }
    if rest.contains(OPEN) {
        return Err(ApiError::invalid(
            "The chat template repeats message content; refusing to build the prompt.",
        ));
    }
    tokens.extend(tok.encode(rest, true)?);
    rendered.push_str(rest);
    if tok.add_bos()
        && let Some(b) = tok.bos_id()
        && tokens.first() != Some(&b)
    {
        tokens.insert(0, b);
    }
    Ok((rendered, tokens))
}

/// Tokens of a raw completion prompt (special tokens recognised: the caller
/// writes the whole prompt, there is no boundary to protect).
pub fn completion_tokens(engine: &Engine, text: &str) -> Result<Vec<u32>, ApiError> {
    let tok = engine.tokenizer();
    let mut tokens = tok.encode(text, true)?;
    if tok.add_bos()
        && let Some(b) = tok.bos_id()
    {
        tokens.insert(0, b);
    }
    Ok(tokens)
}
