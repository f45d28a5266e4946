//! `response_format` and `tools` over HTTP, in process on 127.0.0.1:0: the real model's output
//! under a grammar parses and validates; forced tool calls come back as `tool_calls`, streamed
//! and non-streamed alike; bad schemas, tools and tool choices are 400s naming the field.

use serde_json::{json, Value};
use wick::api::AppState;

use crate::common::{real_server_url, sse_data, tiny_config, tiny_served, TestServer};

async fn post(url: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{url}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .expect("request")
}

async fn ok_json(url: &str, body: Value) -> Value {
    let r = post(url, body).await;
    let status = r.status().as_u16();
    let v: Value = r.json().await.expect("json");
    assert_eq!(status, 200, "{v}");
    v
}

/// The 400 envelope; returns its `param`.
async fn bad_request(url: &str, body: Value) -> String {
    let r = post(url, body).await;
    assert_eq!(r.status().as_u16(), 400);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    assert!(v["error"]["message"].is_string(), "{v}");
    v["error"]["param"].as_str().unwrap_or_default().to_string()
}

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

fn weather_tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {"type": "object",
                "properties": {"city": {"type": "string"},
                               "unit": {"enum": ["celsius", "fahrenheit"]}},
                "required": ["city", "unit"], "additionalProperties": false}}},
        {"type": "function", "function": {"name": "get_time",
            "description": "Current time in a timezone",
            "parameters": {"type": "object",
                "properties": {"timezone": {"type": "string"}},
                "required": ["timezone"], "additionalProperties": false}}}
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_model_json_object_output_parses() {
    let Some(url) = real_server_url() else { return };
    let v = ok_json(
        &url,
        json!({"messages": user("Reply with a JSON object with the keys \"name\" and \"age\" for a cat called Tom who is 3."),
            "temperature": 0,
            "max_tokens": 200, "response_format": {"type": "json_object"}}),
    )
    .await;
    let choice = &v["choices"][0];
    let text = choice["message"]["content"].as_str().expect("content");
    assert_eq!(choice["finish_reason"], "stop", "{text}");
    let parsed: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    assert!(parsed.is_object(), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_model_json_schema_output_validates_in_every_choice() {
    let Some(url) = real_server_url() else { return };
    let schema = json!({"type": "object",
        "properties": {"name": {"type": "string", "maxLength": 40},
                       "age": {"type": "integer", "minimum": 0, "maximum": 120},
                       "pet": {"enum": ["cat", "dog", "fish"]}},
        "required": ["name", "age", "pet"], "additionalProperties": false});
    let v = ok_json(
        &url,
        json!({"messages": user("Invent a person and their pet."), "n": 2, "seed": 5,
            "temperature": 0.8, "max_tokens": 120,
            "response_format": {"type": "json_schema",
                "json_schema": {"name": "person", "schema": schema, "strict": true}}}),
    )
    .await;
    for choice in v["choices"].as_array().expect("choices") {
        let text = choice["message"]["content"].as_str().expect("content");
        assert_eq!(choice["finish_reason"], "stop", "{text}");
        let p: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert!(
            p["name"].as_str().is_some_and(|n| n.chars().count() <= 40),
            "{text}"
        );
        let age = p["age"].as_f64().expect("age");
        assert!(age.fract() == 0.0 && (0.0..=120.0).contains(&age), "{text}");
        assert!(
            ["cat", "dog", "fish"].contains(&p["pet"].as_str().expect("pet")),
            "{text}"
        );
        assert_eq!(p.as_object().map(|o| o.len()), Some(3), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_model_unsupported_schemas_are_400_naming_the_field() {
    let Some(url) = real_server_url() else { return };
    let format = |schema: Value| {
        json!({"messages": user("hi"), "max_tokens": 4, "response_format":
            {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}})
    };
    for schema in [
        json!({"type": "strin"}),
        json!({"$ref": "#/$defs/nowhere"}),
        json!({"type": "string", "pattern": "(unclosed"}),
        json!(42),
    ] {
        assert_eq!(bad_request(&url, format(schema)).await, "response_format");
    }
    let body = json!({"messages": user("hi"), "response_format": {"type": "yaml"}});
    assert_eq!(bad_request(&url, body).await, "response_format");
    let body = json!({"messages": user("hi"), "tools": [{"type": "function", "function":
        {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "nope"}}}}}]});
    assert_eq!(
        bad_request(&url, body).await,
        "tools[0].function.parameters"
    );
}

/// Checks one choice's calls against the weather tools; returns `(name, arguments)`.
fn check_calls(choice: &Value) -> Vec<(String, Value)> {
    assert_eq!(choice["finish_reason"], "tool_calls", "{choice}");
    let msg = &choice["message"];
    assert!(msg["content"].is_null(), "{msg}");
    let calls = msg["tool_calls"].as_array().expect("tool_calls");
    assert!(!calls.is_empty());
    calls
        .iter()
        .map(|c| {
            assert!(c["id"].as_str().expect("id").starts_with("call_"), "{c}");
            assert_eq!(c["type"], "function");
            let name = c["function"]["name"].as_str().expect("name").to_string();
            let args: Value = serde_json::from_str(c["function"]["arguments"].as_str().expect("s"))
                .expect("arguments are JSON");
            match name.as_str() {
                "get_weather" => {
                    assert!(args["city"].is_string(), "{args}");
                    assert!(args["unit"] == "celsius" || args["unit"] == "fahrenheit");
                }
                "get_time" => assert!(args["timezone"].is_string(), "{args}"),
                other => panic!("unknown tool {other}"),
            }
            (name, args)
        })
        .collect()
}

/// The calls of a streamed response, rebuilt from the deltas, checking OpenAI's shape.
async fn streamed_calls(url: &str, mut body: Value) -> Vec<(String, Value)> {
    body["stream"] = json!(true);
    let r = post(url, body).await;
    assert_eq!(r.status().as_u16(), 200);
    let data = sse_data(&r.text().await.expect("body"));
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).expect("chunk"))
        .collect();
    let mut calls: Vec<(String, String)> = Vec::new();
    let last = chunks.len() - 1;
    for (i, c) in chunks.iter().enumerate() {
        let ch = &c["choices"][0];
        let delta = &ch["delta"];
        if i == last {
            assert_eq!(*delta, json!({}));
            assert_eq!(ch["finish_reason"], "tool_calls");
            continue;
        }
        assert!(ch["finish_reason"].is_null(), "{c}");
        if let Some(text) = delta["content"].as_str() {
            assert!(i == 0 && text.is_empty(), "no content leaks: {c}");
        }
        for d in delta["tool_calls"].as_array().into_iter().flatten() {
            let k = d["index"].as_u64().expect("index") as usize;
            if k == calls.len() {
                assert!(d["id"].as_str().expect("id").starts_with("call_"), "{d}");
                assert_eq!(d["type"], "function");
                assert_eq!(d["function"]["arguments"], "", "{d}");
                calls.push((
                    d["function"]["name"].as_str().expect("name").into(),
                    String::new(),
                ));
            } else {
                assert!(
                    d.get("id").is_none() && d["function"].get("name").is_none(),
                    "{d}"
                );
                calls[k]
                    .1
                    .push_str(d["function"]["arguments"].as_str().expect("args"));
            }
        }
    }
    calls
        .into_iter()
        .map(|(n, a)| (n, serde_json::from_str(&a).expect("arguments are JSON")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_model_required_and_named_tool_choice_force_valid_calls() {
    let Some(url) = real_server_url() else { return };
    let body = json!({"messages": user("What is the weather in Paris?"), "temperature": 0,
        "max_tokens": 120, "tools": weather_tools(), "tool_choice": "required"});
    let v = ok_json(&url, body.clone()).await;
    let calls = check_calls(&v["choices"][0]);
    assert_eq!(
        streamed_calls(&url, body).await,
        calls,
        "streamed = non-streamed"
    );

    let body = json!({"messages": user("What is the weather in Paris?"), "temperature": 0,
        "max_tokens": 120, "tools": weather_tools(),
        "tool_choice": {"type": "function", "function": {"name": "get_time"}}});
    let v = ok_json(&url, body.clone()).await;
    let calls = check_calls(&v["choices"][0]);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].0, "get_time");
    assert_eq!(
        streamed_calls(&url, body).await,
        calls,
        "streamed = non-streamed"
    );

    // none: plain text, no tools in the prompt.
    let v = ok_json(
        &url,
        json!({"messages": user("Hi"), "temperature": 0, "max_tokens": 8,
            "tools": weather_tools(), "tool_choice": "none"}),
    )
    .await;
    assert!(v["choices"][0]["message"]["content"].is_string());
    assert!(v["choices"][0]["message"].get("tool_calls").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_history_renders_and_the_model_answers() {
    let Some(url) = real_server_url() else { return };
    let messages = json!([
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\", \"unit\": \"celsius\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "22 degrees, sunny"}
    ]);
    let v = ok_json(
        &url,
        json!({"messages": messages, "tools": weather_tools(), "temperature": 0, "max_tokens": 8}),
    )
    .await;
    assert!(
        v["usage"]["prompt_tokens"].as_u64().expect("n") > 100,
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tools_and_tool_choices_are_400_naming_the_field() {
    let state = AppState::new("tiny", 1 << 16);
    state.set_ready(tiny_served(tiny_config()));
    let server = TestServer::start(state).await;
    let url = &server.url;
    let base = |extra: Value| {
        let mut b = json!({"messages": user("hi"), "max_tokens": 2});
        for (k, v) in extra.as_object().expect("object") {
            b[k] = v.clone();
        }
        b
    };
    let cases = [
        (json!({"tools": [{"type": "retrieval"}]}), "tools[0].type"),
        (
            json!({"tools": [{"type": "function", "function": {"description": "no name"}}]}),
            "tools[0].function.name",
        ),
        (json!({"tools": "get_weather"}), "tools"),
        (
            json!({"tools": weather_tools(), "tool_choice":
                {"type": "function", "function": {"name": "get_nothing"}}}),
            "tool_choice",
        ),
        (
            json!({"tools": weather_tools(), "tool_choice": "always"}),
            "tool_choice",
        ),
        (json!({"tool_choice": "required"}), "tool_choice"),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"schema": "str"}}}),
            "response_format",
        ),
    ];
    for (extra, param) in cases {
        assert_eq!(
            bad_request(url, base(extra.clone())).await,
            param,
            "{extra}"
        );
    }
    server.stop().await;
}
