//! The official OpenAI Python SDK (real peer) against `confidant serve` on
//! loopback, serving the default model.

mod common;

use common::{Server, python};
use confidant_inference::{ChatMessage, ChatTemplate, Gguf, Tokenizer};

const QUESTION: &str = "Which city is the capital of France?";

fn tokenizer_and_template() -> (Tokenizer, ChatTemplate) {
    let g = Gguf::parse(std::fs::read(common::model_path()).expect("model").into()).expect("gguf");
    let tok = Tokenizer::from_gguf(&g).expect("tokenizer");
    let tpl = ChatTemplate::from_gguf(&g, &tok)
        .expect("template")
        .expect("has template");
    (tok, tpl)
}

#[test]
fn openai_python_sdk_chat_completions_streaming_and_errors() {
    // Usage must match our tokenizer, computed here independently of the
    // server: the prompt as the GGUF's template renders it, and the
    // completion's text plus the end-of-turn token that stopped it.
    let (tok, tpl) = tokenizer_and_template();
    let rendered = tpl
        .render(
            &[ChatMessage {
                role: "user".into(),
                content: QUESTION.into(),
            }],
            true,
        )
        .expect("render");
    let prompt_tokens = tok.encode(&rendered, true).expect("encode").len();
    let server = Server::start(&["--model-id", "SmolLM2-135M-Instruct"]);
    let env = [
        ("CONFIDANT_BASE_URL", server.base_url()),
        ("CONFIDANT_MODEL_ID", "SmolLM2-135M-Instruct".to_string()),
        ("EXPECTED_PROMPT_TOKENS", prompt_tokens.to_string()),
    ];
    let out = python("openai_sdk.py", &["basic"], &env);
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .expect("RESULT line");
    let v: serde_json::Value = serde_json::from_str(line).expect("json");
    let text = v["text"].as_str().expect("text");
    let completion = v["completion_tokens"].as_u64().expect("count") as usize;
    assert_eq!(
        tok.encode(text, false).expect("encode").len() + 1,
        completion,
        "text {text:?}"
    );
}

#[test]
fn openai_python_sdk_sixteen_concurrent_streams_and_disconnect_frees_slot() {
    let server = Server::start(&["--model-id", "SmolLM2-135M-Instruct", "--max-batch", "16"]);
    let env = [
        ("CONFIDANT_BASE_URL", server.base_url()),
        ("CONFIDANT_MODEL_ID", "SmolLM2-135M-Instruct".to_string()),
    ];
    python("openai_sdk.py", &["concurrency"], &env);
    // The server is still healthy and ready afterwards.
    assert_eq!(server.get("/readyz").expect("readyz").0, 200);
}
