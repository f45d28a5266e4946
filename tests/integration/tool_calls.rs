//! Tool calls as real clients force them (issue 16, items 1-4), on the real model in process
//! on 127.0.0.1:0: a named `tool_choice` and `parallel_tool_calls: false` give exactly one
//! call, `required` a bounded number; a string holding `</tool_call>` stays inside the call; a
//! call cut by `max_tokens` is a `tool_calls` entry with `length`; arguments stream as
//! OpenAI-shaped deltas on the chat route and as `function_call_arguments` deltas on the
//! Responses route, with one call id in the stream and the stored response.

use serde_json::{json, Value};

use crate::common::{post, real_server_url, sse_data};

async fn chat(url: &str, body: Value) -> Value {
    let r = post(&format!("{url}/v1/chat/completions"), body).await;
    let status = r.status().as_u16();
    let v: Value = r.json().await.expect("json");
    assert_eq!(status, 200, "{v}");
    v
}

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

fn function(name: &str, description: &str, parameters: Value) -> Value {
    json!({"type": "function", "function": {"name": name, "description": description,
        "parameters": parameters}})
}

fn weather() -> Value {
    function(
        "get_weather",
        "Current weather in a city",
        json!({"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}},
            "required": ["city"], "additionalProperties": false}),
    )
}

fn note() -> Value {
    function(
        "save_note",
        "Saves a note",
        json!({"type": "object",
            "properties": {"text": {"type": "string", "minLength": 80, "maxLength": 120}},
            "required": ["text"], "additionalProperties": false}),
    )
}

fn named(name: &str) -> Value {
    json!({"type": "function", "function": {"name": name}})
}

/// `(name, arguments)` of a choice's calls; `content` is null and no tag leaks.
fn calls_of(choice: &Value) -> Vec<(String, String)> {
    let msg = &choice["message"];
    assert!(msg["content"].is_null(), "{msg}");
    msg["tool_calls"]
        .as_array()
        .unwrap_or_else(|| panic!("tool_calls: {choice}"))
        .iter()
        .map(|c| {
            assert!(
                c["id"].as_str().is_some_and(|i| i.starts_with("call_")),
                "{c}"
            );
            assert_eq!(c["type"], "function");
            let f = &c["function"];
            let args = f["arguments"].as_str().expect("arguments").to_string();
            (f["name"].as_str().expect("name").to_string(), args)
        })
        .collect()
}

/// Issue 16.1: at temperature 0 a forced choice gave two identical calls, or repeated them up
/// to `max_tokens`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_choice_or_no_parallel_calls_gives_exactly_one_call() {
    let Some(url) = real_server_url() else { return };
    let question = user("What is the weather in Paris, in London and in Rome?");
    let bodies = [
        json!({"tool_choice": named("get_weather")}),
        json!({"tool_choice": "required", "parallel_tool_calls": false}),
        json!({"tool_choice": named("get_weather"), "parallel_tool_calls": false}),
    ];
    for extra in bodies {
        let mut body = json!({"messages": question.clone(), "temperature": 0, "max_tokens": 200,
            "tools": [weather(), note()]});
        for (k, v) in extra.as_object().expect("object") {
            body[k] = v.clone();
        }
        let v = chat(&url, body).await;
        let choice = &v["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls", "{extra}: {choice}");
        let calls = calls_of(choice);
        assert_eq!(calls.len(), 1, "{extra}: {calls:?}");
        assert_eq!(calls[0].0, "get_weather", "{extra}");
        let args: Value = serde_json::from_str(&calls[0].1).expect("arguments are JSON");
        assert!(args["city"].is_string(), "{args}");
    }
}

/// Issue 16.1: `required` with parallel calls allowed is one or more calls, never an unbounded
/// run: the grammar ends the output after `MAX_PARALLEL_CALLS` at most.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_with_parallel_calls_is_a_bounded_number_of_calls() {
    let Some(url) = real_server_url() else { return };
    let v = chat(
        &url,
        json!({"messages": user("What is the weather in Paris, in London and in Rome?"),
            "temperature": 0, "max_tokens": 400, "tools": [weather()],
            "tool_choice": "required"}),
    )
    .await;
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{choice}");
    let calls = calls_of(choice);
    let most = wick::api::validate::tools::MAX_PARALLEL_CALLS;
    assert!((1..=most).contains(&calls.len()), "{calls:?}");
}

/// Issue 16.2: the parser stopped at the first `</tool_call>`, even inside a JSON string, so a
/// complete forced call came back as content with `stop`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_string_holding_the_close_tag_is_still_a_call() {
    let Some(url) = real_server_url() else { return };
    let tag = function(
        "tag",
        "Records a markup tag",
        json!({"type": "object",
            "properties": {"tag": {"const": "</tool_call>"},
                           "label": {"enum": ["end </tool_call> tag", "other"]}},
            "required": ["tag", "label"], "additionalProperties": false}),
    );
    for stream in [false, true] {
        let body = json!({"messages": user("Record the closing tool call tag."),
            "temperature": 0, "max_tokens": 80, "tools": [tag], "tool_choice": named("tag")});
        let (calls, finish) = match stream {
            false => {
                let v = chat(&url, body).await;
                let c = &v["choices"][0];
                (calls_of(c), c["finish_reason"].clone())
            }
            true => streamed(&url, body).await,
        };
        assert_eq!(finish, "tool_calls", "stream {stream}");
        assert_eq!(calls.len(), 1, "{calls:?}");
        let args: Value = serde_json::from_str(&calls[0].1).expect("arguments are JSON");
        assert_eq!(args["tag"], "</tool_call>", "{args}");
        assert!(args["label"].is_string(), "{args}");
    }
}

/// Issue 16.3: a call cut by `max_tokens` came back as raw `<tool_call>` text in `content`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_cut_by_max_tokens_is_a_tool_call_with_length() {
    let Some(url) = real_server_url() else { return };
    let body = |max_tokens: u64| {
        json!({"messages": user("Save a note about the meeting with Anna on Monday."),
            "temperature": 0, "max_tokens": max_tokens, "tools": [note()],
            "tool_choice": named("save_note")})
    };
    let whole = chat(&url, body(200)).await;
    let choice = &whole["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{choice}");
    let full = calls_of(choice).remove(0).1;
    let n = whole["usage"]["completion_tokens"].as_u64().expect("usage");
    // `"}}`, the newline and `</tool_call>` are the last few tokens: cut well before them.
    let cut = chat(&url, body(n - 12)).await;
    let choice = &cut["choices"][0];
    assert_eq!(choice["finish_reason"], "length", "{choice}");
    let calls = calls_of(choice);
    assert_eq!(calls.len(), 1, "{choice}");
    assert_eq!(calls[0].0, "save_note");
    let part = &calls[0].1;
    assert!(
        full.starts_with(part.as_str()) && part.len() < full.len() && part.len() > 10,
        "{part:?} is a proper prefix of {full:?}"
    );
    assert!(!cut.to_string().contains("<tool_call>"), "{cut}");
    // Streamed alike.
    let mut b = body(n - 12);
    b["stream"] = json!(true);
    let (calls, finish) = streamed(&url, b).await;
    assert_eq!(finish, "length");
    assert_eq!(calls, [("save_note".to_string(), part.clone())]);
}

/// A streamed chat response's calls, checked delta by delta against OpenAI's shape (first
/// delta: index, id, type, name, arguments ""; later: index and arguments only), with its
/// finish reason. No content delta carries text.
async fn streamed(url: &str, mut body: Value) -> (Vec<(String, String)>, Value) {
    body["stream"] = json!(true);
    let r = post(&format!("{url}/v1/chat/completions"), body).await;
    assert_eq!(r.status().as_u16(), 200);
    let data = sse_data(&r.text().await.expect("body"));
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let mut calls: Vec<(String, String)> = Vec::new();
    let mut finish = Value::Null;
    for d in &data[..data.len() - 1] {
        let c: Value = serde_json::from_str(d).expect("chunk");
        let ch = &c["choices"][0];
        if !ch["finish_reason"].is_null() {
            finish = ch["finish_reason"].clone();
        }
        let delta = &ch["delta"];
        assert!(delta["content"].as_str().is_none_or(str::is_empty), "{c}");
        for t in delta["tool_calls"].as_array().into_iter().flatten() {
            let k = t["index"].as_u64().expect("index") as usize;
            if k == calls.len() {
                assert!(
                    t["id"].as_str().is_some_and(|i| i.starts_with("call_")),
                    "{t}"
                );
                assert_eq!(t["type"], "function", "{t}");
                assert_eq!(t["function"]["arguments"], "", "{t}");
                calls.push((
                    t["function"]["name"].as_str().expect("name").into(),
                    String::new(),
                ));
            } else {
                assert_eq!(k + 1, calls.len(), "deltas of the open call only: {t}");
                assert!(t.get("id").is_none() && t.get("type").is_none(), "{t}");
                assert!(t["function"].get("name").is_none(), "{t}");
                calls[k]
                    .1
                    .push_str(t["function"]["arguments"].as_str().expect("args"));
            }
        }
    }
    (calls, finish)
}

/// Issue 16.4: a call was sent whole when it closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arguments_stream_as_deltas_that_add_up_to_the_json_answer() {
    let Some(url) = real_server_url() else { return };
    let body = json!({"messages": user("Save a note about the meeting with Anna on Monday."),
        "temperature": 0, "max_tokens": 200, "tools": [note(), weather()],
        "tool_choice": named("save_note")});
    let whole = chat(&url, body.clone()).await;
    let want = calls_of(&whole["choices"][0]);
    let mut b = body;
    b["stream"] = json!(true);
    let r = post(&format!("{url}/v1/chat/completions"), b.clone()).await;
    let data = sse_data(&r.text().await.expect("body"));
    let arg_deltas = data
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|c| c["choices"][0]["delta"]["tool_calls"][0]["id"].is_null())
        .filter(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].is_string())
        .count();
    assert!(
        arg_deltas > 10,
        "arguments in pieces, got {arg_deltas} deltas"
    );
    let (calls, finish) = streamed(&url, b).await;
    assert_eq!(finish, "tool_calls");
    assert_eq!(
        calls, want,
        "the deltas concatenate to the JSON answer's arguments"
    );
}

/// Issue 16.4 on the Responses route: one `function_call_arguments.delta` per piece, then
/// `.done` with the name and the whole arguments; the call id is the stored response's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_responses_stream_sends_argument_deltas_and_keeps_the_call_id() {
    let Some(url) = real_server_url() else { return };
    let tool = json!({"type": "function", "name": "save_note", "description": "Saves a note",
        "parameters": note()["function"]["parameters"]});
    let body = json!({"input": "Save a note about the meeting with Anna on Monday.",
        "temperature": 0, "max_output_tokens": 200, "tools": [tool],
        "tool_choice": "required", "parallel_tool_calls": false, "stream": true});
    let r = post(&format!("{url}/v1/responses"), body).await;
    assert_eq!(r.status().as_u16(), 200);
    let text = r.text().await.expect("body");
    let events: Vec<Value> = sse_data(&text)
        .iter()
        .map(|d| serde_json::from_str(d).expect("event"))
        .collect();
    let kind = |e: &Value| e["type"].as_str().unwrap_or_default().to_string();
    let added = events
        .iter()
        .find(|e| kind(e) == "response.output_item.added" && e["item"]["type"] == "function_call")
        .unwrap_or_else(|| panic!("a function call item: {text}"));
    assert_eq!(added["item"]["arguments"], "");
    let item_id = added["item"]["id"].clone();
    let deltas: Vec<&Value> = events
        .iter()
        .filter(|e| kind(e) == "response.function_call_arguments.delta")
        .collect();
    assert!(deltas.len() > 10, "{} deltas", deltas.len());
    assert!(deltas.iter().all(|d| d["item_id"] == item_id));
    let joined: String = deltas.iter().filter_map(|d| d["delta"].as_str()).collect();
    let done = events
        .iter()
        .find(|e| kind(e) == "response.function_call_arguments.done")
        .expect("done");
    assert_eq!(done["arguments"], joined.as_str());
    assert_eq!(done["name"], "save_note");
    let last_delta = events
        .iter()
        .rposition(|e| kind(e).ends_with("arguments.delta"));
    let done_at = events
        .iter()
        .position(|e| kind(e).ends_with("arguments.done"));
    assert!(last_delta < done_at, "the deltas come before .done");
    let completed = events.last().expect("terminal");
    assert_eq!(kind(completed), "response.completed");
    let call = &completed["response"]["output"][0];
    assert_eq!(call["arguments"], joined.as_str());
    assert_eq!(call["call_id"], added["item"]["call_id"]);
    serde_json::from_str::<Value>(&joined).expect("the arguments are JSON");
    // The stored response has the same call id.
    let id = completed["response"]["id"].as_str().expect("id");
    let stored: Value = reqwest::get(format!("{url}/v1/responses/{id}"))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(stored["output"][0]["call_id"], call["call_id"], "{stored}");
    assert_eq!(stored["output"][0]["arguments"], joined.as_str());
}
