//! The validation stage against small limits: defaults, field mapping, every limit with the
//! field it names, score-only requests, embeddings inputs, `response_format`.

use serde_json::json;

use super::*;
use crate::api::openai::{ChatCompletionRequest, ChatMessage, CompletionRequest, EmbeddingRequest};
use crate::tokenizer::testing::{byte_level, chatml_template};

/// A byte-level tokenizer over 96 ids, ChatML, a context of 100 tokens and a KV cache of 80.
fn validator() -> Validator {
    let limits = ModelLimits::new(96, 100, 8, 80);
    Validator::new(
        Arc::new(byte_level(96)),
        Some(Arc::new(chatml_template())),
        limits,
    )
}

fn completion(v: serde_json::Value) -> Result<ValidCompletion, ValidationError> {
    validator().completion(serde_json::from_value::<CompletionRequest>(v).expect("parses"))
}

fn chat(v: serde_json::Value) -> Result<ValidChat, ValidationError> {
    validator().chat(serde_json::from_value::<ChatCompletionRequest>(v).expect("parses"))
}

fn param_of(r: Result<impl std::fmt::Debug, ValidationError>) -> (String, bool) {
    let e = r.expect_err("refused");
    let context = matches!(e, ValidationError::ContextLength { .. });
    (e.param().to_string(), context)
}

/// Regression (issue 16, item 8): a completions request without `max_tokens` generated up to
/// the whole context; OpenAI and vLLM default legacy completions to 16 tokens.
#[test]
fn max_tokens_defaults_to_16_for_completions_and_to_what_is_left_for_chat() {
    let p = completion(json!({"prompt": [1, 2, 3]})).expect("ok");
    assert_eq!(p.prompts[0].request.max_tokens, 16);
    let c = chat(json!({"messages": [{"role": "user", "content": "a"}]})).expect("ok");
    let left = 80 - c.request.prompt.len();
    assert_eq!(c.request.max_tokens, left, "80 KV tokens - the prompt");
    let p = completion(json!({"prompt": [[1], [2, 3]], "max_tokens": 5})).expect("ok");
    assert_eq!(p.prompts.len(), 2);
    assert_eq!(p.prompts[1].request.max_tokens, 5);
    assert_eq!(p.prompts[1].request.prompt, vec![2, 3]);
}

#[test]
fn fields_map_to_the_engine_request() {
    let p = completion(
        json!({"prompt": [1], "temperature": 0, "logit_bias": {"5": -100},
        "stop": "x", "n": 2, "top_k": -1, "seed": 7, "logprobs": 3, "priority": 4,
        "unknown": true}),
    )
    .expect("ok");
    let r = &p.prompts[0].request;
    assert_eq!(r.sampling.logit_bias, vec![(5, -100.0)]);
    assert_eq!(r.sampling.top_k, 0);
    assert_eq!(r.sampling.logprobs, Some(3));
    assert_eq!(r.sampling.seed, Some(7));
    assert_eq!((r.n, r.priority), (2, -4), "vLLM's priority 4 runs after 0");
    assert!(r.stop_ids.contains(&2), "the tokenizer's end of turn");
    assert_eq!(p.stops, vec!["x".to_string()]);
    assert!(p.reply.logprobs && !p.reply.stream);
    let p = completion(json!({"prompt": [1], "ignore_eos": true})).expect("ok");
    assert!(p.prompts[0].request.stop_ids.is_empty());
}

#[test]
fn each_limit_is_refused_naming_its_field() {
    let cases = [
        (
            json!({"prompt": [1], "logit_bias": {"a": 1}}),
            "logit_bias",
            false,
        ),
        (json!({"prompt": [1], "n": 0}), "n", false),
        (json!({"prompt": [1], "n": 17}), "n", false),
        (json!({"prompt": [1], "max_tokens": 0}), "max_tokens", false),
        (json!({"prompt": [1], "top_p": 1.5}), "top_p", false),
        (
            json!({"prompt": [1], "temperature": 9}),
            "temperature",
            false,
        ),
        (json!({"prompt": [1], "logprobs": 21}), "logprobs", false),
        (
            json!({"prompt": [1], "echo": true, "logprobs": 21}),
            "logprobs",
            false,
        ),
        (json!({"prompt": []}), "prompt", false),
        (json!({"prompt": [[]]}), "prompt", false),
        (json!({"prompt": [1, 999]}), "prompt", false),
        (json!({"prompt": [1], "max_tokens": 100}), "prompt", true),
        (json!({"prompt": [1], "max_tokens": 85}), "prompt", true),
        (json!({"prompt": vec![1; 80]}), "prompt", true),
    ];
    for (req, param, context) in cases {
        assert_eq!(
            param_of(completion(req.clone())),
            (param.to_string(), context),
            "{req}"
        );
    }
    let e = completion(json!({"prompt": [1], "max_tokens": 100})).expect_err("too long");
    assert_eq!(
        e.to_string(),
        "prompt has 1 tokens + max_tokens 100 > context 100"
    );
    let e = completion(json!({"prompt": [1], "max_tokens": 85})).expect_err("too long");
    assert!(e.to_string().contains("KV cache capacity 80"), "{e}");
    let e = completion(json!({"prompt": [1, 999]})).expect_err("bad id");
    assert!(e.to_string().contains("token id 999"), "{e}");
}

#[test]
fn the_servers_max_tokens_cap_refuses_more_and_caps_the_default() {
    let v = validator().with_max_tokens_cap(Some(10));
    let req =
        |j: serde_json::Value| serde_json::from_value::<CompletionRequest>(j).expect("parses");
    let p = v.completion(req(json!({"prompt": [1, 2]}))).expect("ok");
    assert_eq!(p.prompts[0].request.max_tokens, 10);
    let p = v
        .completion(req(json!({"prompt": [1, 2], "max_tokens": 10})))
        .expect("ok");
    assert_eq!(p.prompts[0].request.max_tokens, 10);
    let e = v
        .completion(req(json!({"prompt": [1, 2], "max_tokens": 11})))
        .expect_err("over");
    assert_eq!(e.param(), "max_tokens");
    assert!(e.to_string().contains("at most 10"), "{e}");
    let p = v
        .completion(req(
            json!({"prompt": [1, 2], "echo": true, "max_tokens": 0}),
        ))
        .expect("ok");
    assert_eq!(
        p.prompts[0].request.max_tokens, 0,
        "scoring only is not capped away"
    );
}

#[test]
fn score_only_is_its_own_case_not_a_max_tokens_trick() {
    let p = completion(json!({"prompt": [1, 2], "echo": true, "logprobs": 2})).expect("ok");
    assert_eq!(p.prompts[0].request.prompt_logprobs, Some(2));
    assert_eq!(p.prompts[0].echo.as_deref(), Some("<|im_start|><|im_end|>"));
    let p = completion(json!({"prompt": [1, 2], "echo": true, "max_tokens": 0})).expect("ok");
    let r = &p.prompts[0].request;
    assert_eq!((r.max_tokens, r.prompt_logprobs), (0, Some(0)));
    let p = completion(json!({"prompt": [1], "logprobs": 2})).expect("ok");
    assert_eq!(
        p.prompts[0].request.prompt_logprobs, None,
        "no echo: no prompt scores"
    );
    assert_eq!(
        param_of(completion(json!({"prompt": [1], "max_tokens": 0}))).0,
        "max_tokens"
    );
}

#[test]
fn text_prompts_parse_special_tokens_and_echo_their_text() {
    let p = completion(json!({"prompt": "<|im_start|>ab", "echo": true})).expect("ok");
    let ids = &p.prompts[0].request.prompt;
    assert_eq!(ids[0], 1, "<|im_start|> is one special token: {ids:?}");
    assert_eq!(ids.len(), 3);
    assert_eq!(p.prompts[0].echo.as_deref(), Some("<|im_start|>ab"));
}

#[test]
fn chat_requests_render_the_template_and_name_their_fields() {
    let c = chat(json!({"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 4,
        "logprobs": true, "top_logprobs": 2, "stream": true, "stream_options": {"include_usage": true}}))
    .expect("ok");
    assert_eq!(c.request.max_tokens, 4);
    assert_eq!(c.request.sampling.logprobs, Some(2));
    assert_eq!(
        c.reply,
        Reply {
            stream: true,
            include_usage: true,
            logprobs: true,
            legacy_functions: false,
        }
    );
    let text = validator().tokenizer().decode(&c.request.prompt, false);
    assert!(text.ends_with("<|im_start|>assistant\n"), "{text:?}");
    let cases = [
        (json!({"messages": []}), "messages"),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 0}),
            "max_completion_tokens",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "logprobs": true, "top_logprobs": 30}),
            "top_logprobs",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "tool_choice": "required"}),
            "tool_choice",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "xml"}}),
            "response_format",
        ),
    ];
    for (req, param) in cases {
        assert_eq!(param_of(chat(req.clone())).0, param, "{req}");
    }
    let long = "y".repeat(120);
    assert_eq!(
        param_of(chat(
            json!({"messages": [{"role": "user", "content": long}]})
        )),
        ("messages".to_string(), true)
    );
}

#[test]
fn embeddings_inputs_are_checked() {
    let v = validator();
    let embed = |input: serde_json::Value| {
        let req: EmbeddingRequest =
            serde_json::from_value(json!({"input": input})).expect("parses");
        v.embeddings(&req)
    };
    for bad in [
        json!(""),
        json!([]),
        json!([[]]),
        json!([[1], []]),
        json!(["a", ""]),
    ] {
        assert_eq!(
            param_of(embed(bad.clone())),
            ("input".to_string(), false),
            "{bad}"
        );
    }
    assert_eq!(param_of(embed(json!([[1, 500]]))).0, "input");
    assert_eq!(
        param_of(embed(json!([vec![1; 81]]))),
        ("input".to_string(), true)
    );
    assert_eq!(
        embed(json!([[1, 2], [3]])).expect("ok").inputs,
        vec![vec![1, 2], vec![3]]
    );
    assert_eq!(embed(json!("ab")).expect("ok").inputs[0].len(), 2);
    let req: EmbeddingRequest =
        serde_json::from_value(json!({"input": [1], "dimensions": 9})).expect("parses");
    assert_eq!(param_of(v.embeddings(&req)).0, "dimensions");
    let req: EmbeddingRequest =
        serde_json::from_value(json!({"input": [1], "encoding_format": "hex"})).expect("parses");
    assert_eq!(param_of(v.embeddings(&req)).0, "encoding_format");
}

#[test]
fn content_parts_flatten_to_a_string() {
    let m: ChatMessage = serde_json::from_value(json!({"role": "user",
        "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}))
    .expect("parses");
    assert_eq!(flatten_message(&m)["content"], "a\nb");
    // An image is not dropped silently: this model takes text only (issue 16, item 8).
    let image = json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
        {"type": "image_url", "image_url": {"url": "https://example.com/x.png"}}]}]});
    assert_eq!(param_of(chat(image)).0, "messages[0].content[1]");
}

#[test]
fn response_format_maps_to_a_grammar_or_an_error_naming_it() {
    use crate::constraint::Grammar;
    assert_eq!(response_format(None).expect("ok"), None);
    assert_eq!(
        response_format(Some(&json!({"type": "text"}))).expect("ok"),
        None
    );
    assert_eq!(
        response_format(Some(&json!({"type": "json_object"}))).expect("ok"),
        Some(Grammar::JsonObject)
    );
    let s = json!({"type": "object"});
    let v =
        json!({"type": "json_schema", "json_schema": {"name": "x", "schema": s, "strict": true}});
    assert_eq!(
        response_format(Some(&v)).expect("ok"),
        Some(Grammar::JsonSchema(s))
    );
    for bad in [
        json!({"type": "json_schema", "json_schema": {"name": "x"}}),
        json!({"type": "json_schema", "json_schema": {"schema": "str"}}),
        json!({"type": "xml"}),
        json!("json_object"),
    ] {
        let e = response_format(Some(&bad)).expect_err("refused");
        assert_eq!(e.param(), "response_format", "{bad} -> {e:?}");
    }
}
