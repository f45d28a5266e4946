//! Special tokens in raw prompts and `POST /tokenize` over HTTP: a hand-formatted ChatML prompt
//! to `/v1/completions` is the chat route's prompt (issue 9, item 7: it used to be 12 chars of
//! text per `<|im_start|>`), and `/tokenize` gives llama.cpp's reference ids for the strings
//! with special-token text, in both modes and in vLLM's fields and llama.cpp's alike.

use std::collections::HashSet;

use serde_json::{json, Value};
use wick::api::AppState;

use crate::common::{post, real_server_url, reference, tiny_config, tiny_served, TestServer};

/// The body of a 200 from `POST {url}/tokenize`.
async fn tokenize(url: &str, body: Value) -> Value {
    let r = post(&format!("{url}/tokenize"), body.clone()).await;
    assert_eq!(r.status().as_u16(), 200, "{body}");
    r.json().await.expect("json")
}

fn u64s(v: &Value) -> Vec<u64> {
    let items = v.as_array().expect("an array");
    items.iter().map(|x| x.as_u64().expect("an id")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_chatml_prompt_has_the_chat_routes_prompt_tokens() {
    let Some(url) = real_server_url() else { return };
    let chat_cases = reference("chat_template_cases.json");
    let case = chat_cases["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .find(|c| c["id"] == "single-user")
        .expect("the single-user case");
    // The exact text the model's template renders for the messages, generation prompt included.
    let prompt = case["prompt"].as_str().expect("prompt");
    let chat: Value = post(
        &format!("{url}/v1/chat/completions"),
        json!({"messages": case["messages"], "max_tokens": 4, "temperature": 0}),
    )
    .await
    .json()
    .await
    .expect("json");
    let raw: Value = post(
        &format!("{url}/v1/completions"),
        json!({"prompt": prompt, "max_tokens": 4, "temperature": 0}),
    )
    .await
    .json()
    .await
    .expect("json");
    let tokens = &raw["usage"]["prompt_tokens"];
    assert_eq!(tokens, &chat["usage"]["prompt_tokens"], "{raw}\n{chat}");
    assert_eq!(tokens, &case["n_tokens"]);
    // The same prompt ids, so the same greedy answer.
    assert_eq!(
        raw["choices"][0]["text"],
        chat["choices"][0]["message"]["content"]
    );
    // What the completions route used to count: the special tokens as text.
    let plain = tokenize(&url, json!({"prompt": prompt, "parse_special": false})).await;
    assert!(plain["count"].as_u64() > tokens.as_u64(), "{plain}");
    let messages = tokenize(&url, json!({"messages": case["messages"]})).await;
    assert_eq!(&messages["count"], tokens);
    assert_eq!(u64s(&messages["tokens"]), u64s(&case["ids"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokenize_gives_the_reference_ids_of_special_token_text_in_both_modes() {
    let Some(url) = real_server_url() else { return };
    let file = reference("tokenizer_cases.json");
    let cases = file["cases"].as_array().expect("cases");
    // The strings with special-token text: those the reference also tokenized unparsed.
    let special_texts: HashSet<&str> = cases
        .iter()
        .filter(|c| c["parse_special"] == false)
        .map(|c| c["text"].as_str().expect("text"))
        .collect();
    assert_eq!(special_texts.len(), 6);
    let mut checked = 0;
    for case in cases {
        let text = case["text"].as_str().expect("text");
        if !special_texts.contains(text) {
            continue;
        }
        let (ids, parse) = (u64s(&case["ids"]), case["parse_special"].clone());
        let with_pieces: Vec<Value> = case["ids"]
            .as_array()
            .expect("ids")
            .iter()
            .zip(case["pieces"].as_array().expect("pieces"))
            .map(|(id, piece)| json!({"id": id, "piece": piece}))
            .collect();
        let add = case["add_special"].clone();
        let bodies = [
            json!({"prompt": text, "add_special_tokens": add, "parse_special": parse}),
            json!({"content": text, "add_special": add, "parse_special": parse}),
        ];
        for body in bodies {
            let v = tokenize(&url, body.clone()).await;
            assert_eq!(u64s(&v["tokens"]), ids, "{}: {body}", case["id"]);
            assert_eq!(v["count"].as_u64(), Some(ids.len() as u64));
        }
        // llama.cpp's own request for the parsed cases (its defaults), and its pieces.
        let mut body = json!({"content": text, "with_pieces": true});
        if parse == false {
            body["parse_special"] = json!(false);
        }
        let v = tokenize(&url, body.clone()).await;
        assert_eq!(v["tokens"], json!(with_pieces), "{}: {body}", case["id"]);
        if parse == true {
            // vLLM's defaults parse too (and this model adds no BOS).
            let v = tokenize(&url, json!({"prompt": text})).await;
            assert_eq!(u64s(&v["tokens"]), ids, "{}", case["id"]);
        } else {
            // Unparsed, `<|im_start|>` and the like are text: none comes out as its id.
            assert!(!ids.iter().any(|id| [0, 1, 2].contains(id)), "{ids:?}");
        }
        checked += 1;
    }
    assert_eq!(checked, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokenize_fields_are_400s_naming_the_param() {
    // The tiny model, with the tokenizer and template built in code.
    let served = tiny_served(tiny_config());
    let state = AppState::new("tiny", 4096);
    state.set_ready(served);
    let server = TestServer::start(state).await;
    let url = server.url.clone();
    let msgs = json!([{"role": "user", "content": "Hi"}]);
    for (body, param) in [
        (json!({"prompt": 1}), "prompt"),
        (json!({"content": "x", "add_special": "no"}), "add_special"),
        (
            json!({"prompt": "x", "add_special_tokens": 0}),
            "add_special_tokens",
        ),
        (
            json!({"content": "x", "parse_special": "yes"}),
            "parse_special",
        ),
        (json!({"content": "x", "with_pieces": 1}), "with_pieces"),
        (json!({"messages": {"role": "user"}}), "messages"),
        (json!({"prompt": "x", "content": "x"}), "content"),
        (
            json!({"prompt": "x", "add_special_tokens": false, "add_special": true}),
            "add_special",
        ),
        (json!({"messages": msgs, "prompt": "x"}), "messages"),
        (
            json!({"messages": msgs, "parse_special": false}),
            "parse_special",
        ),
        (json!({}), "prompt"),
        // `|` is outside the 96-id vocabulary: unparsed special-token text cannot encode.
        (
            json!({"content": "<|im_end|>", "parse_special": false}),
            "content",
        ),
    ] {
        let r = post(&format!("{url}/tokenize"), body.clone()).await;
        assert_eq!(r.status().as_u16(), 400, "{body}");
        let v: Value = r.json().await.expect("json error");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        assert_eq!(v["error"]["param"], param, "{body} -> {v}");
    }
    // The same tokenizer answers the good requests: the chat prompt, with pieces.
    let v = tokenize(&url, json!({"messages": msgs, "with_pieces": true})).await;
    let pieces: String = v["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .map(|t| t["piece"].as_str().expect("a text piece"))
        .collect();
    assert_eq!(
        pieces,
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    let v = tokenize(&url, json!({"content": "<|im_end|>"})).await;
    assert_eq!(v["tokens"], json!([2]));
    server.stop().await;
}
