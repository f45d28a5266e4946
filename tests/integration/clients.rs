//! Requests as real clients send them (issue 16, items 5-8), on the real model over HTTP:
//! pydantic's `uniqueItems` accepted, the `developer` role as the system prompt and system texts
//! merged, an unknown role a 400, legacy function calling (`functions`, `function_call`,
//! `role: "function"`) in and out, and the smaller items: completions default to 16 tokens, a
//! non-text part is a 400, 404 and 405 carry the envelope, `/tokenize` counts `tools`, a
//! reused `x-request-id` never repeats a response id.

use serde_json::{json, Value};

use crate::common::{post, real_server_url, sse_data};

async fn chat(url: &str, body: Value) -> (u16, Value) {
    let r = post(&format!("{url}/v1/chat/completions"), body).await;
    let status = r.status().as_u16();
    (status, r.json().await.expect("json"))
}

async fn ok_chat(url: &str, body: Value) -> Value {
    let (status, v) = chat(url, body).await;
    assert_eq!(status, 200, "{v}");
    v
}

/// The `param` of a 400 from the chat route, checking the envelope.
async fn bad_chat(url: &str, body: Value) -> String {
    let (status, v) = chat(url, body).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    v["error"]["param"].as_str().unwrap_or_default().to_string()
}

/// The prompt ids `/tokenize` gives for a chat body (`messages`, maybe `tools`).
async fn prompt_ids(url: &str, body: Value) -> Vec<u64> {
    let r = post(&format!("{url}/tokenize"), body.clone()).await;
    assert_eq!(r.status().as_u16(), 200, "{body}");
    let v: Value = r.json().await.expect("json");
    let ids = v["tokens"].as_array().expect("tokens");
    ids.iter().map(|x| x.as_u64().expect("id")).collect()
}

fn weather_function() -> Value {
    json!({"name": "get_weather", "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
            "required": ["city"], "additionalProperties": false}})
}

/// pydantic's `set[str]` field: an array with `uniqueItems`.
fn tagged_schema() -> Value {
    json!({"type": "object", "title": "Tagged",
        "properties": {"name": {"type": "string", "maxLength": 20},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 12},
                "uniqueItems": true, "maxItems": 3}},
        "required": ["name", "tags"], "additionalProperties": false})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_model_unique_items_is_accepted_for_response_format_and_tools() {
    let Some(url) = real_server_url() else { return };
    let user = json!([{"role": "user", "content": "Describe a cat called Tom with some tags."}]);
    let v = ok_chat(
        &url,
        json!({"messages": user, "temperature": 0, "max_tokens": 80, "response_format":
            {"type": "json_schema", "json_schema": {"name": "Tagged", "schema": tagged_schema()}}}),
    )
    .await;
    let text = v["choices"][0]["message"]["content"]
        .as_str()
        .expect("content");
    let parsed: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    assert!(parsed["tags"].is_array(), "{parsed}");

    let tools = json!([{"type": "function", "function": {"name": "Tagged",
        "parameters": tagged_schema()}}]);
    let v = ok_chat(
        &url,
        json!({"messages": user, "temperature": 0, "max_tokens": 100, "tools": tools,
            "tool_choice": {"type": "function", "function": {"name": "Tagged"}}}),
    )
    .await;
    let call = &v["choices"][0]["message"]["tool_calls"][0]["function"];
    assert_eq!(call["name"], "Tagged", "{v}");
    let args: Value =
        serde_json::from_str(call["arguments"].as_str().expect("arguments")).expect("JSON");
    assert!(args["tags"].is_array(), "{args}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_model_developer_is_the_system_role_and_system_texts_merge_at_the_front() {
    let Some(url) = real_server_url() else { return };
    let user = json!({"role": "user", "content": "Hi"});
    let as_system = prompt_ids(
        &url,
        json!({"messages": [{"role": "system", "content": "Be brief."}, user]}),
    )
    .await;
    let as_developer = prompt_ids(
        &url,
        json!({"messages": [{"role": "developer", "content": "Be brief."}, user]}),
    )
    .await;
    assert_eq!(as_developer, as_system, "developer renders as system");
    // Not the template's default system prompt beside a literal `developer` turn.
    let text: Value = post(
        &format!("{url}/detokenize"),
        json!({"tokens": as_developer}),
    )
    .await
    .json()
    .await
    .expect("json");
    let text = text["prompt"].as_str().expect("prompt");
    assert!(!text.contains("developer"), "{text}");
    assert_eq!(text.matches("<|im_start|>system").count(), 1, "{text}");

    let merged = prompt_ids(
        &url,
        json!({"messages": [{"role": "system", "content": "Be brief.\n\nBe kind."}, user]}),
    )
    .await;
    let several = prompt_ids(
        &url,
        json!({"messages": [{"role": "system", "content": "Be brief."}, user,
            {"role": "developer", "content": [{"type": "text", "text": "Be kind."}]}]}),
    )
    .await;
    assert_eq!(
        several, merged,
        "system texts merged, in order, at the front"
    );
    // The chat route renders the same prompt.
    let v = ok_chat(
        &url,
        json!({"messages": [{"role": "developer", "content": "Be brief."}, user],
            "max_tokens": 2}),
    )
    .await;
    assert_eq!(v["usage"]["prompt_tokens"], as_system.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_model_unknown_roles_and_non_text_parts_are_400s_naming_them() {
    let Some(url) = real_server_url() else { return };
    let body = json!({"messages": [{"role": "user", "content": "Hi"},
        {"role": "wizard", "content": "abracadabra"}], "max_tokens": 2});
    assert_eq!(bad_chat(&url, body.clone()).await, "messages[1].role");
    let r = post(&format!("{url}/tokenize"), body).await;
    assert_eq!(r.status().as_u16(), 400);
    for part in [
        json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}),
        json!({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}),
        json!({"type": "file", "file": {"file_id": "file-1"}}),
    ] {
        let body = json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is this?"}, part]}], "max_tokens": 2});
        let (status, v) = chat(&url, body).await;
        assert_eq!(status, 400, "{v}");
        assert_eq!(v["error"]["param"], "messages[0].content[1]", "{v}");
        let message = v["error"]["message"].as_str().expect("message");
        assert!(message.contains("text only"), "{message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_model_legacy_functions_come_back_as_function_call() {
    let Some(url) = real_server_url() else { return };
    let body = json!({"messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "temperature": 0, "max_tokens": 60, "functions": [weather_function()],
        "function_call": {"name": "get_weather"}});
    let v = ok_chat(&url, body.clone()).await;
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "function_call", "{v}");
    let msg = &choice["message"];
    assert!(msg.get("tool_calls").is_none(), "{msg}");
    assert!(msg["content"].is_null(), "{msg}");
    assert_eq!(msg["function_call"]["name"], "get_weather", "{msg}");
    let arguments = msg["function_call"]["arguments"]
        .as_str()
        .expect("arguments");
    let args: Value = serde_json::from_str(arguments).expect("arguments are JSON");
    assert!(args["city"].is_string(), "{args}");

    // Streamed: the name first, then argument pieces that add up to the same call.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let r = post(&format!("{url}/v1/chat/completions"), streamed).await;
    let data = sse_data(&r.text().await.expect("body"));
    let (mut name, mut args, mut finish) = (String::new(), String::new(), Value::Null);
    for d in data.iter().filter(|d| d.as_str() != "[DONE]") {
        let c: Value = serde_json::from_str(d).expect("chunk");
        let ch = &c["choices"][0];
        assert!(ch["delta"].get("tool_calls").is_none(), "{c}");
        if let Some(f) = ch["delta"].get("function_call") {
            assert!(
                name.is_empty() || f.get("name").is_none(),
                "the name comes once: {c}"
            );
            name.push_str(f["name"].as_str().unwrap_or(""));
            args.push_str(f["arguments"].as_str().expect("arguments"));
        }
        if !ch["finish_reason"].is_null() {
            finish = ch["finish_reason"].clone();
        }
    }
    assert_eq!((name.as_str(), args.as_str()), ("get_weather", arguments));
    assert_eq!(finish, "function_call");

    // `none`: text, no call; a bad `function_call` names the field.
    let mut none = body.clone();
    none["function_call"] = json!("none");
    let v = ok_chat(&url, none).await;
    assert!(v["choices"][0]["message"]["content"].is_string(), "{v}");
    assert!(v["choices"][0]["message"].get("function_call").is_none());
    let mut bad = body.clone();
    bad["function_call"] = json!({"nom": "get_weather"});
    assert_eq!(bad_chat(&url, bad).await, "function_call");
    let mut both = body;
    both["tools"] = json!([{"type": "function", "function": weather_function()}]);
    assert_eq!(bad_chat(&url, both).await, "functions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_model_function_messages_render_as_tool_messages() {
    let Some(url) = real_server_url() else { return };
    let question = json!({"role": "user", "content": "Weather in Paris?"});
    let legacy = json!([question,
        {"role": "assistant", "content": null, "function_call":
            {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
        {"role": "function", "name": "get_weather", "content": "22 degrees, sunny"}]);
    let tools = json!([question,
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "22 degrees, sunny"}]);
    let legacy_ids = prompt_ids(&url, json!({"messages": legacy})).await;
    assert_eq!(
        legacy_ids,
        prompt_ids(&url, json!({"messages": tools})).await
    );
    // It used to be a raw template error ("tried to use + operator on ...").
    let v = ok_chat(
        &url,
        json!({"messages": legacy, "functions": [weather_function()], "temperature": 0,
            "max_tokens": 8}),
    )
    .await;
    assert!(v["usage"]["prompt_tokens"].as_u64().expect("n") > legacy_ids.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_model_completions_default_to_16_tokens() {
    let Some(url) = real_server_url() else { return };
    let r = post(
        &format!("{url}/v1/completions"),
        json!({"prompt": "Once upon a time", "temperature": 0, "ignore_eos": true}),
    )
    .await;
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["usage"]["completion_tokens"], 16, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_model_tokenize_counts_tools_as_the_chat_route_does() {
    let Some(url) = real_server_url() else { return };
    let messages = json!([{"role": "user", "content": "Weather in Paris?"}]);
    let tools = json!([{"type": "function", "function": weather_function()}]);
    let with_tools = prompt_ids(&url, json!({"messages": messages, "tools": tools})).await;
    let without = prompt_ids(&url, json!({"messages": messages})).await;
    assert!(
        with_tools.len() > without.len() + 20,
        "the tools are in the prompt"
    );
    let v = ok_chat(
        &url,
        json!({"messages": messages, "tools": tools, "max_tokens": 1}),
    )
    .await;
    assert_eq!(v["usage"]["prompt_tokens"], with_tools.len());
    let none = prompt_ids(
        &url,
        json!({"messages": messages, "tools": tools, "tool_choice": "none"}),
    )
    .await;
    assert_eq!(
        none, without,
        "tool_choice none leaves them out, as on the chat route"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_model_a_reused_request_id_never_repeats_a_response_id() {
    let Some(url) = real_server_url() else { return };
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for (path, body) in [
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}),
        ),
        ("/v1/completions", json!({"prompt": "Hi", "max_tokens": 1})),
        ("/v1/completions", json!({"prompt": "Hi", "max_tokens": 1})),
    ] {
        let r = client
            .post(format!("{url}{path}"))
            .header("x-request-id", "retry-1")
            .json(&body)
            .send()
            .await
            .expect("send");
        assert_eq!(r.headers()["x-request-id"], "retry-1", "still echoed");
        let v: Value = r.json().await.expect("json");
        ids.push(v["id"].as_str().expect("id").to_string());
    }
    assert!(
        ids[0].starts_with("chatcmpl-") && ids[2].starts_with("cmpl-"),
        "{ids:?}"
    );
    let unique: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "{ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_methods_get_the_error_envelope() {
    let Some(url) = real_server_url() else { return };
    let client = reqwest::Client::new();
    for (method, path, status) in [
        (reqwest::Method::GET, "/v1/nothing", 404),
        (reqwest::Method::POST, "/v2/chat/completions", 404),
        (reqwest::Method::GET, "/v1/chat/completions", 405),
        (reqwest::Method::DELETE, "/v1/models", 405),
        (reqwest::Method::PUT, "/v1/completions", 405),
    ] {
        let r = client
            .request(method.clone(), format!("{url}{path}"))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status().as_u16(), status, "{method} {path}");
        let v: Value = r.json().await.expect("an envelope, not an empty body");
        assert!(v["error"]["message"].is_string(), "{method} {path}: {v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    }
}
