use super::*;
use crate::tokenizer::test_gguf::{Meta, gguf, toy_metadata, with};

/// ChatML, as SmolLM2 and Qwen write it.
const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

fn msgs(pairs: &[(&str, &str)]) -> Vec<ChatMessage> {
    pairs
        .iter()
        .map(|(r, c)| ChatMessage::new(*r, *c))
        .collect()
}

#[test]
fn renders_chatml_with_and_without_generation_prompt() {
    let t = ChatTemplate::new(CHATML, "<s>", "</s>").unwrap();
    let m = msgs(&[("system", "Be brief."), ("user", "Hi")]);
    assert_eq!(
        t.render(&m, true).unwrap(),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(
        t.render(&m, false).unwrap(),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    );
    assert_eq!(t.render(&[], false).unwrap(), "");
}

#[test]
fn trim_blocks_and_lstrip_blocks_are_on() {
    let src = "{% for m in messages %}\n    {% if m.role == 'user' %}\n[{{ m.content }}]\n    {% endif %}\n{% endfor %}";
    let t = ChatTemplate::new(src, "", "").unwrap();
    assert_eq!(
        t.render(
            &msgs(&[("user", "a"), ("assistant", "b"), ("user", "c")]),
            true
        )
        .unwrap(),
        "[a]\n[c]\n"
    );
}

#[test]
fn bos_and_eos_tokens_are_available() {
    let t = ChatTemplate::new(
        "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}",
        "<s>",
        "</s>",
    )
    .unwrap();
    assert_eq!(t.render(&msgs(&[("user", "x")]), true).unwrap(), "<s>x</s>");
}

#[test]
fn raise_exception_is_a_template_error() {
    let src = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversation must start with user') }}{% endif %}ok";
    let t = ChatTemplate::new(src, "", "").unwrap();
    assert_eq!(t.render(&msgs(&[("user", "x")]), true).unwrap(), "ok");
    let err = t.render(&msgs(&[("assistant", "x")]), true).unwrap_err();
    assert!(
        matches!(&err, Error::Template(m) if m.contains("Conversation must start with user")),
        "{err}"
    );
}

#[test]
fn syntax_errors_are_reported_at_construction() {
    let err = ChatTemplate::new("{% for m in messages %}", "", "").unwrap_err();
    assert!(matches!(err, Error::Template(_)), "{err}");
    let err = ChatTemplate::new(&"x".repeat(MAX_TEMPLATE_BYTES + 1), "", "").unwrap_err();
    assert!(
        matches!(&err, Error::Template(m) if m.contains("limit")),
        "{err}"
    );
}

#[test]
fn endless_templates_run_out_of_fuel() {
    // range() is capped by minijinja, nesting multiplies it.
    let src = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}";
    let t = ChatTemplate::new(src, "", "").unwrap();
    let err = t.render(&[], true).unwrap_err();
    assert!(
        matches!(&err, Error::Template(m) if m.contains("fuel")),
        "{err}"
    );
}

#[test]
fn huge_output_is_refused() {
    let src = "{% for a in range(100) %}{{ 'x' * 1000000 }}{% endfor %}";
    let t = ChatTemplate::new(src, "", "").unwrap();
    let err = t.render(&[], true).unwrap_err();
    assert!(matches!(err, Error::Template(_)), "{err}");
}

#[test]
fn python_string_and_dict_methods() {
    let src = "{{ messages[0].content.strip() }}|{{ messages[0].content.lstrip(' ') }}|\
               {{ messages[0].role.upper() }}|{{ messages[0].content.startswith('  he') }}|\
               {{ messages[0].content.split() | join(',') }}|{{ 'a-b-c'.split('-', 1) | join(';') }}|\
               {{ messages[0].content.replace('l', 'L') }}|\
               {% for k, v in messages[0].items() %}{{ k }}={{ v | length }} {% endfor %}|\
               {{ messages[0].get('name', 'anon') }}|{{ messages[0] | tojson }}";
    let t = ChatTemplate::new(src, "", "").unwrap();
    let out = t
        .render(&msgs(&[("user", "  hello world ")]), true)
        .unwrap();
    assert_eq!(
        out,
        "hello world|hello world |USER|True|hello,world|a;b-c|  heLLo worLd |\
         role=4 content=14 |anon|{\"role\":\"user\",\"content\":\"  hello world \"}"
    );
}

#[test]
fn strftime_formats_known_dates() {
    // 2024-11-22 13:05:09 UTC, a Friday, day 327.
    let t = 1_732_280_709;
    assert_eq!(strftime("%d %b %Y", t).unwrap(), "22 Nov 2024");
    assert_eq!(
        strftime("%A %B %e %H:%M:%S %j %y %m %%", t).unwrap(),
        "Friday November 22 13:05:09 327 24 11 %"
    );
    assert_eq!(strftime("%Y-%m-%d %a", 0).unwrap(), "1970-01-01 Thu");
    assert_eq!(
        strftime("%Y-%m-%d %j", 951_782_400).unwrap(),
        "2000-02-29 060"
    );
    assert!(strftime("%Q", t).is_err());
    let t = ChatTemplate::new("{{ strftime_now('%Y') | length }}", "", "").unwrap();
    assert_eq!(t.render(&[], true).unwrap(), "4");
}

#[test]
fn from_gguf_reads_the_template_and_token_texts() {
    let kvs = toy_metadata(&[]);
    let g = gguf(&kvs);
    let tok = Tokenizer::from_gguf(&g).unwrap();
    assert!(ChatTemplate::from_gguf(&g, &tok).unwrap().is_none());

    let kvs = with(
        kvs,
        "tokenizer.chat_template",
        Meta::Str("{{ bos_token }}|{{ eos_token }}".into()),
    );
    let g = gguf(&kvs);
    let t = ChatTemplate::from_gguf(&g, &tok)
        .unwrap()
        .expect("a template");
    assert_eq!(t.render(&[], true).unwrap(), "<|im_start|>|<|im_end|>");

    let g = gguf(&with(kvs, "tokenizer.chat_template", Meta::U32(7)));
    assert!(ChatTemplate::from_gguf(&g, &tok).is_err());
}

#[test]
fn template_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<ChatTemplate>();
}

#[test]
fn chat_message_serde() {
    let m: ChatMessage = serde_json::from_str(r#"{"role":"user","content":"hi"}"#).unwrap();
    assert_eq!(m, ChatMessage::new("user", "hi"));
    assert_eq!(
        serde_json::to_string(&m).unwrap(),
        r#"{"role":"user","content":"hi"}"#
    );
}
