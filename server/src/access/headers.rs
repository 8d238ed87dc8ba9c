//! OpenAI's rate-limit response headers and the bearer key of a request.

use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderName, HeaderValue};

use super::quota::{RateInfo, reset_text};

/// `x-ratelimit-{limit,remaining,reset}-requests`.
pub const REQUESTS: [HeaderName; 3] = [
    HeaderName::from_static("x-ratelimit-limit-requests"),
    HeaderName::from_static("x-ratelimit-remaining-requests"),
    HeaderName::from_static("x-ratelimit-reset-requests"),
];

/// `x-ratelimit-{limit,remaining,reset}-tokens`.
pub const TOKENS: [HeaderName; 3] = [
    HeaderName::from_static("x-ratelimit-limit-tokens"),
    HeaderName::from_static("x-ratelimit-remaining-tokens"),
    HeaderName::from_static("x-ratelimit-reset-tokens"),
];

/// Sets one rate's three headers.
pub fn set(h: &mut HeaderMap, names: &[HeaderName; 3], info: &RateInfo) {
    h.insert(names[0].clone(), HeaderValue::from(info.limit));
    h.insert(names[1].clone(), HeaderValue::from(info.remaining));
    // Digits, letters and dots only: always a valid header value.
    if let Ok(v) = HeaderValue::from_str(&reset_text(info.reset)) {
        h.insert(names[2].clone(), v);
    }
}

/// RFC 6750 challenge on 401s.
pub fn challenge(h: &mut HeaderMap) {
    h.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
}

/// The key of `Authorization: Bearer KEY` (scheme case-insensitive), if the
/// header is there and well-formed.
pub fn bearer(h: &HeaderMap) -> Option<&str> {
    let v = h.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = v.split_once(' ')?;
    let key = key.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !key.is_empty()).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer sk-cfd-x"));
        assert_eq!(bearer(&h), Some("sk-cfd-x"));
        h.insert(AUTHORIZATION, HeaderValue::from_static("bearer  sk-cfd-y "));
        assert_eq!(bearer(&h), Some("sk-cfd-y"));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&h), None);
    }
}
