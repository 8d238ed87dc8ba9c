//! Unit tests on a toy vocabulary; the real model is checked against
//! llama.cpp's output in `tests/reference_tokenizer.rs`.

use super::test_gguf::{FIRST_BYTE, Meta, gguf, toy_metadata, with};
use super::*;

const MERGES: &[&str] = &["Ġ t", "h e", "Ġt he", "Ġ Ġ", "Ġ a"];

fn toy() -> Tokenizer {
    Tokenizer::from_gguf(&gguf(&toy_metadata(MERGES))).expect("toy vocabulary")
}

fn byte(b: u8) -> u32 {
    FIRST_BYTE + u32::from(b)
}

fn id(t: &Tokenizer, text: &str) -> u32 {
    t.token_to_id(text).expect("token in toy vocabulary")
}

fn refused(kvs: Vec<(&'static str, Meta)>) -> String {
    match Tokenizer::from_gguf(&gguf(&kvs)) {
        Ok(_) => panic!("tokenizer metadata accepted"),
        Err(e @ (Error::Tokenizer(_) | Error::Metadata { .. })) => e.to_string(),
        Err(e) => panic!("wrong error kind: {e}"),
    }
}

#[test]
fn merges_apply_by_rank_without_prefix_space() {
    let t = toy();
    assert_eq!(t.encode(" the", false).unwrap(), [id(&t, "Ġthe")]);
    // No prefix space is added: "the" is t + he, not Ġthe.
    assert_eq!(t.encode("the", false).unwrap(), [byte(b't'), id(&t, "he")]);
    assert_eq!(
        t.encode("a the", false).unwrap(),
        [byte(b'a'), id(&t, "Ġthe")]
    );
}

#[test]
fn empty_and_whitespace_only_text() {
    let t = toy();
    assert_eq!(t.encode("", true).unwrap(), Vec::<u32>::new());
    assert_eq!(t.decode(&[], false).unwrap(), "");
    // One pre-token; merged left to right.
    let ids = t.encode("   ", true).unwrap();
    assert_eq!(ids, [id(&t, "ĠĠ"), byte(b' ')]);
    let text = " \n\t  \r\n ";
    let ids = t.encode(text, true).unwrap();
    assert_eq!(t.decode(&ids, false).unwrap(), text);
}

#[test]
fn decode_refuses_ids_outside_the_vocabulary() {
    let t = toy();
    let n = t.vocab_size() as u32;
    let err = t.decode(&[byte(b'a'), n], false).unwrap_err();
    assert!(
        matches!(&err, Error::Tokenizer(m) if m.contains(&n.to_string())),
        "{err}"
    );
    assert!(t.decode(&[u32::MAX], true).is_err());
    assert_eq!(t.token_bytes(n), None);
    assert_eq!(t.id_to_token(n), None);
    assert!(!t.is_special(n));
}

#[test]
fn control_token_text_is_plain_text_unless_parsed() {
    let t = toy();
    let text = "<|im_start|>user<|im_end|>";
    let plain = t.encode(text, false).unwrap();
    assert!(plain.iter().all(|&i| !t.is_special(i)), "{plain:?}");
    assert_eq!(plain.len(), text.len(), "one byte token each: {plain:?}");
    assert_eq!(t.decode(&plain, false).unwrap(), text);

    let parsed = t.encode(text, true).unwrap();
    let user: Vec<u32> = b"user".iter().map(|&b| byte(b)).collect();
    assert_eq!(parsed, [&[1][..], &user, &[2]].concat());
    assert_eq!(t.decode(&parsed, false).unwrap(), text);
    assert_eq!(t.decode(&parsed, true).unwrap(), "user");
}

#[test]
fn user_defined_tokens_are_always_matched_and_decoded() {
    let t = toy();
    assert_eq!(t.token_kind(3), Some(TokenKind::UserDefined));
    assert_eq!(t.encode("<think>", false).unwrap(), [3]);
    assert!(!t.is_special(3));
    assert_eq!(t.decode(&[3], true).unwrap(), "<think>");
}

#[test]
fn stream_decoder_holds_back_split_characters() {
    let t = toy();
    // No merges cover it: the emoji is four byte tokens.
    let ids = t.encode("a🤖b", false).unwrap();
    assert_eq!(ids.len(), 6);
    let mut d = StreamDecoder::new();
    let out: Vec<Option<String>> = ids.iter().map(|&i| d.push(&t, i)).collect();
    assert_eq!(
        out,
        [
            Some("a".into()),
            None,
            None,
            None,
            Some("🤖".into()),
            Some("b".into())
        ]
    );
    assert_eq!(d.finish(), None);

    // Cut short: finish() flushes lossily.
    let mut d = StreamDecoder::new();
    assert_eq!(d.push(&t, ids[1]), None);
    assert_eq!(d.push(&t, ids[2]), None);
    assert_eq!(d.pending_bytes(), 2);
    assert_eq!(d.finish().as_deref(), Some("\u{FFFD}"));
    assert_eq!(d.pending_bytes(), 0);

    // A byte that can never start a character is replaced at once.
    let mut d = StreamDecoder::new();
    assert_eq!(d.push(&t, byte(0xFF)).as_deref(), Some("\u{FFFD}"));
    assert_eq!(d.push(&t, u32::MAX), None);
}

#[test]
fn stream_decoder_skips_control_tokens_by_default() {
    let t = toy();
    let mut d = StreamDecoder::new();
    assert_eq!(d.push(&t, 2), None);
    let mut d = StreamDecoder::with_special_tokens();
    assert_eq!(d.push(&t, 2).as_deref(), Some("<|im_end|>"));
}

#[test]
fn special_ids_and_eog() {
    let t = toy();
    assert_eq!(t.bos_id(), Some(1));
    assert_eq!(t.eos_id(), Some(2));
    assert!(!t.add_bos());
    assert_eq!(t.pre_type(), "smollm");
    // EOS, plus <|endoftext|> because it is a control token.
    assert_eq!(t.eog_ids(), [0, 2]);
    assert!(t.is_eog(0) && t.is_eog(2) && !t.is_eog(1));
    assert_eq!(t.token_bytes(byte(b' ')), Some(&b" "[..]));
    assert_eq!(t.token_bytes(id(&t, "Ġthe")), Some(&b" the"[..]));
    assert_eq!(t.token_bytes(1), Some(&b"<|im_start|>"[..]));
}

#[test]
fn only_byte_level_bpe_is_accepted() {
    let base = toy_metadata(MERGES);
    let msg = refused(with(
        base.clone(),
        "tokenizer.ggml.model",
        Meta::Str("llama".into()),
    ));
    assert!(msg.contains("`llama`") && msg.contains("gpt2"), "{msg}");
    let msg = refused(with(base, "tokenizer.ggml.pre", Meta::Str("qwen2".into())));
    assert!(msg.contains("`qwen2`"), "{msg}");
}

#[test]
fn inconsistent_vocabularies_are_refused() {
    let base = toy_metadata(MERGES);
    let n = match &base[3].1 {
        Meta::Strs(v) => v.len(),
        other => panic!("tokens: {other:?}"),
    };
    let msg = refused(with(
        base.clone(),
        "tokenizer.ggml.eos_token_id",
        Meta::U32(n as u32),
    ));
    assert!(msg.contains("EOS") && msg.contains("out of range"), "{msg}");
    let msg = refused(with(
        base.clone(),
        "tokenizer.ggml.bos_token_id",
        Meta::I32(-1),
    ));
    assert!(msg.contains("bos_token_id"), "{msg}");

    let msg = refused(with(
        base.clone(),
        "tokenizer.ggml.merges",
        Meta::Strs(vec!["Ġ zz".into()]),
    ));
    assert!(msg.contains("`zz`"), "{msg}");
    let msg = refused(with(
        base.clone(),
        "tokenizer.ggml.merges",
        Meta::Strs(vec!["nospace".into()]),
    ));
    assert!(msg.contains("separated by a space"), "{msg}");

    let msg = refused(with(
        base.clone(),
        "tokenizer.ggml.token_type",
        Meta::I32s(vec![1; 3]),
    ));
    assert!(msg.contains("3 entries"), "{msg}");
    let mut types = vec![1; n];
    types[7] = 42;
    let msg = refused(with(
        base.clone(),
        "tokenizer.ggml.token_type",
        Meta::I32s(types),
    ));
    assert!(msg.contains("token type 42"), "{msg}");

    // Without a token for 'A' it is not a byte-level vocabulary.
    let tokens = match &base[3].1 {
        Meta::Strs(v) => v.clone(),
        _ => unreachable!("checked above"),
    };
    let mut no_a = tokens.clone();
    no_a[byte(b'A') as usize] = "Ā-renamed".into();
    let msg = refused(with(
        base.clone(),
        "tokenizer.ggml.tokens",
        Meta::Strs(no_a),
    ));
    assert!(msg.contains("byte 0x41"), "{msg}");

    // Some bytes may lack a token (as in SmolLM2): they are dropped.
    let mut no_nul = tokens;
    no_nul[FIRST_BYTE as usize] = "Ā-renamed".into();
    let t = Tokenizer::from_gguf(&gguf(&with(
        base.clone(),
        "tokenizer.ggml.tokens",
        Meta::Strs(no_nul),
    )))
    .expect("vocabulary without byte 0x00");
    assert_eq!(t.encode("a\0b", false).unwrap(), [byte(b'a'), byte(b'b')]);

    let msg = refused(with(base, "tokenizer.ggml.tokens", Meta::Strs(Vec::new())));
    assert!(msg.contains("entries") || msg.contains("empty"), "{msg}");
}

#[test]
fn merges_into_special_tokens_are_dropped() {
    // A merge whose result is a control token must never produce it.
    let mut kvs = toy_metadata(&[]);
    if let Some((_, Meta::Strs(tokens))) =
        kvs.iter_mut().find(|(k, _)| *k == "tokenizer.ggml.tokens")
    {
        tokens[0] = "<|".into();
    }
    let kvs = with(kvs, "tokenizer.ggml.merges", Meta::Strs(vec!["< |".into()]));
    let t = Tokenizer::from_gguf(&gguf(&kvs)).expect("vocabulary");
    assert_eq!(t.encode("<|", false).unwrap(), [byte(b'<'), byte(b'|')]);
}

#[test]
fn tokenizer_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Tokenizer>();
    check::<StreamDecoder>();
}

#[test]
fn text_size_is_bounded() {
    let t = toy();
    let big = " ".repeat(MAX_TEXT_BYTES + 1);
    assert!(matches!(t.encode(&big, false), Err(Error::Tokenizer(_))));
}
