//! Incremental decoding for streamed output.

use super::Tokenizer;

/// Turns generated token ids into text as they arrive.
///
/// Byte-level tokens can end in the middle of a UTF-8 character (an emoji is
/// often three or four tokens), so bytes of an incomplete character are held
/// back until the character is complete. Bytes that can never become valid
/// UTF-8 are emitted as U+FFFD at once.
///
/// ```
/// # use confidant_inference::tokenizer::StreamDecoder;
/// let d = StreamDecoder::new();
/// assert_eq!(d.pending_bytes(), 0);
/// ```
#[derive(Debug, Clone)]
pub struct StreamDecoder {
    pending: Vec<u8>,
    skip_special: bool,
}

impl Default for StreamDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamDecoder {
    /// A decoder that leaves out control tokens (`<|im_end|>` and the like),
    /// as a chat completion's text does.
    pub fn new() -> Self {
        Self {
            pending: Vec::new(),
            skip_special: true,
        }
    }

    /// A decoder that also writes control tokens' text.
    pub fn with_special_tokens() -> Self {
        Self {
            pending: Vec::new(),
            skip_special: false,
        }
    }

    /// Adds one token; returns the text it completes, if any.
    ///
    /// An id outside the vocabulary adds nothing (the model's output layer
    /// can be wider than the vocabulary; such ids never carry text).
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Option<String> {
        if self.skip_special && tok.is_special(id) {
            return None;
        }
        self.pending.extend_from_slice(tok.token_bytes(id)?);
        self.take_complete()
    }

    /// Returns whatever is held back, invalid or incomplete bytes replaced
    /// by U+FFFD, and empties the decoder.
    pub fn finish(&mut self) -> Option<String> {
        if self.pending.is_empty() {
            return None;
        }
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        Some(text)
    }

    /// How many bytes are held back.
    pub fn pending_bytes(&self) -> usize {
        self.pending.len()
    }

    fn take_complete(&mut self) -> Option<String> {
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // `valid_up_to` marks the end of valid UTF-8.
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        // Incomplete character at the end: keep it.
                        None => {
                            rest = after;
                            break;
                        }
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[bad..];
                        }
                    }
                }
            }
        }
        let keep = rest.len();
        let start = self.pending.len() - keep;
        self.pending.drain(..start);
        (!out.is_empty()).then_some(out)
    }
}
