//! [`Caller`]: the request extension through which handlers spend a key's
//! tokens and report usage (and, with `include_content`, text) for the
//! audit log.

use std::sync::{Arc, Mutex};

use super::Refusal;
use super::keys::KeyId;
use super::quota::{Denied, KeyQuota, RateInfo};
use crate::api::error::ApiError;
use crate::audit::Record;

/// The request extension handlers use to spend tokens and report usage.
#[derive(Clone)]
pub struct Caller(Arc<CallerInner>);

struct CallerInner {
    key_id: Option<KeyId>,
    quota: Option<Arc<KeyQuota>>,
    content: bool,
    state: Mutex<CallerState>,
}

#[derive(Default)]
struct CallerState {
    tokens: Option<RateInfo>,
    denied: Option<Denied>,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    prompt: Option<String>,
    completion: Option<String>,
}

impl Caller {
    pub(super) fn new(key_id: Option<KeyId>, quota: Option<Arc<KeyQuota>>, content: bool) -> Self {
        Self(Arc::new(CallerInner {
            key_id,
            quota,
            content,
            state: Mutex::new(CallerState::default()),
        }))
    }

    /// The key's token quota as the response headers report it: what the
    /// handler's reservation left, else the quota as it stands.
    pub(super) fn tokens_info(&self) -> Option<RateInfo> {
        let q = self.0.quota.as_ref()?;
        Some(self.state().tokens.unwrap_or_else(|| q.tokens_info()))
    }

    /// Why the handler's token reservation was refused, if it was.
    pub(super) fn denied(&self) -> Option<Denied> {
        self.state().denied
    }

    /// Moves token counts and text into the audit record.
    pub(super) fn fill(&self, rec: &mut Record) {
        let mut s = self.state();
        rec.prompt_tokens = s.prompt_tokens;
        rec.completion_tokens = s.completion_tokens;
        rec.prompt = s.prompt.take();
        rec.completion = s.completion.take();
    }

    fn state(&self) -> std::sync::MutexGuard<'_, CallerState> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The key's id (`None`: anonymous, development mode).
    pub fn key_id(&self) -> Option<&KeyId> {
        self.0.key_id.as_ref()
    }

    /// Reserves `prompt_tokens + max_tokens` of the key's tokens/min (429
    /// when spent). Call before the request reaches the engine.
    pub fn reserve_tokens(&self, prompt_tokens: usize, max_tokens: usize) -> Result<(), ApiError> {
        let Some(q) = &self.0.quota else {
            return Ok(());
        };
        let n = (prompt_tokens as u64).saturating_add(max_tokens as u64);
        let r = q.charge_tokens(n);
        let mut s = self.state();
        match r {
            Ok(info) => {
                s.tokens = Some(info);
                Ok(())
            }
            Err(d) => {
                if let Denied::Tokens(i, _) = d {
                    s.tokens = Some(i);
                }
                s.denied = Some(d);
                Err(Refusal::Limited(d).into())
            }
        }
    }

    /// Records the token counts of the finished request.
    pub fn record_usage(&self, prompt_tokens: usize, completion_tokens: usize) {
        let mut s = self.state();
        s.prompt_tokens = Some(prompt_tokens as u64);
        s.completion_tokens = Some(completion_tokens as u64);
    }

    /// Whether the audit log wants the text (`include_content`).
    pub fn wants_content(&self) -> bool {
        self.0.content
    }

    /// The prompt text, for the audit log (ignored unless `include_content`).
    pub fn record_prompt(&self, text: &str) {
        if self.0.content {
            self.state().prompt = Some(text.to_owned());
        }
    }

    /// Appends generated text, for the audit log (ignored unless
    /// `include_content`).
    pub fn record_completion(&self, text: &str) {
        if self.0.content {
            self.state()
                .completion
                .get_or_insert_with(String::new)
                .push_str(text);
        }
    }
}
