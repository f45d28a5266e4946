//! `POST /v1/responses` on the real model, in process on 127.0.0.1:0: JSON and named SSE
//! (event order, one id, sequence numbers, one terminal event), instructions and the developer
//! role, a function tool round trip, `text.format` json_schema, truncation, and the 400s and
//! 404s naming the field.

use serde_json::{json, Value};

use crate::common::{post, real_server_url};

async fn create(url: &str, body: Value) -> (u16, Value) {
    let r = post(&format!("{url}/v1/responses"), body).await;
    let status = r.status().as_u16();
    (status, r.json().await.expect("json"))
}

async fn ok(url: &str, body: Value) -> Value {
    let (status, v) = create(url, body).await;
    assert_eq!(status, 200, "{v}");
    v
}

/// `(event name, data)` of each named server-sent event.
async fn events(url: &str, mut body: Value) -> Vec<(String, Value)> {
    body["stream"] = json!(true);
    let r = post(&format!("{url}/v1/responses"), body).await;
    assert_eq!(r.status().as_u16(), 200);
    let text = r.text().await.expect("body");
    assert!(
        !text.contains("[DONE]"),
        "the Responses API sends no [DONE]"
    );
    let mut out = Vec::new();
    let mut name = None;
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("event: ") {
            name = Some(n.to_string());
        } else if let Some(d) = line.strip_prefix("data: ") {
            let n = name.take().expect("every data line has its event line");
            out.push((n, serde_json::from_str(d).expect("event JSON")));
        }
    }
    out
}

fn output_text(r: &Value) -> String {
    r["output"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["type"] == "message")
        .flat_map(|i| i["content"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["text"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_string_input_gets_a_complete_response_object() {
    let Some(url) = real_server_url() else { return };
    let r = ok(
        &url,
        json!({"input": "Say hello.", "max_output_tokens": 16, "temperature": 0,
               "metadata": {"k": "v"}}),
    )
    .await;
    assert!(
        r["id"].as_str().is_some_and(|id| id.starts_with("resp_")),
        "{r}"
    );
    assert_eq!(r["object"], "response");
    assert!(
        matches!(r["status"].as_str(), Some("completed" | "incomplete")),
        "{r}"
    );
    assert_eq!(r["model"], "smol");
    assert_eq!(r["metadata"], json!({"k": "v"}));
    assert_eq!(r["max_output_tokens"], 16);
    assert_eq!(r["temperature"], 0.0);
    assert_eq!(r["tool_choice"], "auto");
    assert_eq!(r["tools"], json!([]));
    assert_eq!(r["parallel_tool_calls"], true);
    let msg = &r["output"][0];
    assert!(msg["id"].as_str().is_some_and(|id| id.starts_with("msg_")));
    assert_eq!(msg["role"], "assistant");
    assert_eq!(msg["content"][0]["type"], "output_text");
    assert_eq!(msg["content"][0]["annotations"], json!([]));
    assert!(!output_text(&r).is_empty());
    let u = &r["usage"];
    assert!(u["input_tokens"].as_u64().is_some_and(|n| n > 0));
    assert!(u["output_tokens"]
        .as_u64()
        .is_some_and(|n| n > 0 && n <= 16));
    assert!(u["input_tokens_details"]["cached_tokens"].is_u64());
    assert_eq!(u["output_tokens_details"]["reasoning_tokens"], 0);
    assert_eq!(
        u["total_tokens"].as_u64(),
        Some(u["input_tokens"].as_u64().unwrap_or(0) + u["output_tokens"].as_u64().unwrap_or(0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_is_openais_event_sequence_and_adds_up_to_the_json_answer() {
    let Some(url) = real_server_url() else { return };
    let body = json!({"input": [{"role": "user", "content": "Count to five."}],
                      "max_output_tokens": 12, "temperature": 0});
    let ev = events(&url, body.clone()).await;
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names[..4],
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added"
        ]
    );
    let terminal = [
        "response.completed",
        "response.incomplete",
        "response.failed",
    ];
    assert_eq!(names.iter().filter(|n| terminal.contains(n)).count(), 1);
    assert!(terminal.contains(names.last().expect("events")));
    for (i, (name, data)) in ev.iter().enumerate() {
        assert_eq!(data["type"], name.as_str());
        assert_eq!(data["sequence_number"], i as u64);
    }
    let id = &ev[0].1["response"]["id"];
    assert!(ev
        .iter()
        .filter_map(|(_, d)| d.get("response"))
        .all(|r| &r["id"] == id));
    let deltas: String = ev
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .map(|(_, d)| d["delta"].as_str().expect("delta").to_string())
        .collect();
    let last = &ev.last().expect("events").1["response"];
    assert_eq!(deltas, output_text(last));
    let done = ev
        .iter()
        .find(|(n, _)| n == "response.output_text.done")
        .expect("text done");
    assert_eq!(done.1["text"].as_str(), Some(deltas.as_str()));
    // Greedy: the JSON answer is the same text.
    assert_eq!(output_text(&ok(&url, body).await), deltas);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_output_tokens_ends_in_response_incomplete() {
    let Some(url) = real_server_url() else { return };
    let body = json!({"input": "Write a long story about a dragon.", "max_output_tokens": 3,
                      "temperature": 0});
    let ev = events(&url, body.clone()).await;
    let (name, last) = ev.last().expect("events");
    assert_eq!(name, "response.incomplete");
    assert_eq!(
        last["response"]["incomplete_details"]["reason"],
        "max_output_tokens"
    );
    let r = ok(&url, body).await;
    assert_eq!(r["status"], "incomplete");
    assert_eq!(r["usage"]["output_tokens"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instructions_and_the_developer_role_reach_the_prompt() {
    let Some(url) = real_server_url() else { return };
    let question = json!({"role": "user", "content": "What is your name?"});
    let developer = json!({"role": "developer",
        "content": "Your name is Wick. You always answer in French, in one short sentence."});
    let plain = json!({"input": [question], "instructions": "Be brief.",
                       "max_output_tokens": 1, "temperature": 0});
    let with = json!({"input": [developer, question], "instructions": "Be brief.",
                      "max_output_tokens": 1, "temperature": 0});
    let a = ok(&url, plain).await;
    let b = ok(&url, with).await;
    let n = |r: &Value| r["usage"]["input_tokens"].as_u64().expect("input tokens");
    // The developer text joins the instructions' system message.
    assert!(
        n(&b) >= n(&a) + 12,
        "the developer text is in the prompt: {} vs {}",
        n(&b),
        n(&a)
    );
    assert_eq!(b["instructions"], "Be brief.");
}

fn weather_tool() -> Value {
    json!([{"type": "function", "name": "get_weather", "description": "Current weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"], "additionalProperties": false},
            "strict": true},
           {"type": "web_search"}])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_tool_round_trip() {
    let Some(url) = real_server_url() else { return };
    let question = json!({"role": "user", "content": "What is the weather in Paris?"});
    let r = ok(
        &url,
        json!({"input": [question], "tools": weather_tool(), "tool_choice": "required",
                            "temperature": 0, "max_output_tokens": 60}),
    )
    .await;
    let call = r["output"]
        .as_array()
        .and_then(|o| o.iter().find(|i| i["type"] == "function_call"))
        .cloned();
    let call = call.unwrap_or_else(|| panic!("a function call: {r}"));
    assert!(call["id"].as_str().is_some_and(|id| id.starts_with("fc_")));
    assert_eq!(call["name"], "get_weather");
    let args: Value = serde_json::from_str(call["arguments"].as_str().expect("arguments"))
        .expect("JSON arguments");
    assert!(args["city"].is_string(), "{args}");
    assert_eq!(
        r["tools"].as_array().map(Vec::len),
        Some(2),
        "tools echoed as sent"
    );
    // Streamed, the call comes as a function_call item with argument events.
    let ev = events(
        &url,
        json!({"input": [question], "tools": weather_tool(), "tool_choice": "required",
                                  "temperature": 0, "max_output_tokens": 60}),
    )
    .await;
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    let added = names
        .iter()
        .position(|n| *n == "response.output_item.added")
        .expect("added");
    assert_eq!(ev[added].1["item"]["type"], "function_call");
    assert!(names.contains(&"response.function_call_arguments.delta"));
    assert!(names.contains(&"response.function_call_arguments.done"));
    // The round trip: the call and its output go back, and the model answers in text.
    let output = json!({"type": "function_call_output", "call_id": call["call_id"], "output": "{\"temp_c\": 21}"});
    let r2 = ok(
        &url,
        json!({"input": [question, call, output], "tools": weather_tool(),
                             "temperature": 0, "max_output_tokens": 24}),
    )
    .await;
    assert!(r2["usage"]["input_tokens"].as_u64() > r["usage"]["input_tokens"].as_u64());
    assert!(!output_text(&r2).is_empty(), "{r2}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_format_json_schema_constrains_the_output() {
    let Some(url) = real_server_url() else { return };
    let schema = json!({"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
                        "required": ["name", "age"], "additionalProperties": false});
    let r = ok(&url, json!({"input": "Make up a person.", "temperature": 0, "max_output_tokens": 60,
                            "text": {"format": {"type": "json_schema", "name": "person", "schema": schema, "strict": true}}})).await;
    assert_eq!(r["status"], "completed", "{r}");
    let v: Value = serde_json::from_str(&output_text(&r)).expect("the text is JSON");
    assert!(v["name"].is_string() && v["age"].is_i64(), "{v}");
    assert_eq!(r["text"]["format"]["type"], "json_schema");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncation_disabled_refuses_an_overflow_and_auto_drops_the_oldest_items() {
    let Some(url) = real_server_url() else { return };
    let long = "word ".repeat(600);
    let mut input: Vec<Value> = (0..6)
        .map(|_| json!({"role": "user", "content": long}))
        .collect();
    input.push(json!({"role": "user", "content": "Hi"}));
    let body = json!({"input": input, "instructions": "Be brief.", "max_output_tokens": 8});
    let (status, v) = create(&url, body.clone()).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    assert_eq!(v["error"]["param"], "input");
    let mut auto = body;
    auto["truncation"] = json!("auto");
    let r = ok(&url, auto).await;
    assert_eq!(r["truncation"], "auto");
    assert!(
        r["usage"]["input_tokens"]
            .as_u64()
            .is_some_and(|n| n < 3000),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_400s_and_unknown_ids_404s_naming_the_field() {
    let Some(url) = real_server_url() else { return };
    let cases = [
        (
            json!({"input": [{"role": "robot", "content": "x"}]}),
            "input[0].role",
        ),
        (
            json!({"input": "x", "tools": [{"type": "function", "name": "bad name"}]}),
            "tools[0].name",
        ),
        (
            json!({"input": "x", "tools": [{"type": "file_search"}], "tool_choice": {"type": "file_search"}}),
            "tools[0]",
        ),
        (
            json!({"input": "x", "text": {"format": {"type": "xml"}}}),
            "text.format",
        ),
        (json!({"input": "x", "truncation": "middle"}), "truncation"),
        (
            json!({"input": "x", "max_output_tokens": 0}),
            "max_output_tokens",
        ),
        (json!({"input": "x", "metadata": {"k": 1}}), "metadata.k"),
        (json!({}), "input"),
        (
            json!({"input": "x", "background": true, "store": false}),
            "background",
        ),
    ];
    for (body, param) in cases {
        let (status, v) = create(&url, body.clone()).await;
        assert_eq!(status, 400, "{body}: {v}");
        assert_eq!(v["error"]["param"], param, "{body}: {v}");
    }
    let (status, v) = create(
        &url,
        json!({"input": "x", "previous_response_id": "resp_nope"}),
    )
    .await;
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["error"]["param"], "previous_response_id");
    assert_eq!(v["error"]["type"], "invalid_request_error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_response_is_queued_at_once_and_can_be_cancelled_while_it_runs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = wick::store::ResponseStore::open(&dir.path().join("wick.db")).expect("store");
    let options = wick::api::HttpOptions {
        responses: Some(store),
        ..wick::api::HttpOptions::default()
    };
    let state = wick::api::AppState::with_options("tiny", options);
    state.set_ready(crate::common::slow_served(
        std::time::Duration::from_millis(20),
    ));
    let server = crate::common::TestServer::start(state).await;
    let r = ok(
        &server.url,
        json!({"input": "hi", "background": true, "max_output_tokens": 400}),
    )
    .await;
    assert_eq!(r["status"], "queued", "{r}");
    assert_eq!(r["background"], true);
    let id = r["id"].as_str().expect("an id").to_string();
    let cancel = format!("{}/v1/responses/{id}/cancel", server.url);
    let c = post(&cancel, json!({})).await;
    assert_eq!(c.status().as_u16(), 200);
    let c: Value = c.json().await.expect("json");
    assert_eq!(c["status"], "cancelled", "{c}");
    assert_eq!(c["id"], id.as_str());
    let again = post(&cancel, json!({})).await;
    assert_eq!(again.status().as_u16(), 400, "it is no longer running");
    let (status, stored) = get(&format!("{}/v1/responses/{id}", server.url)).await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(
        stored["status"], "cancelled",
        "the poll sees the cancellation"
    );
    server.stop().await;
}

async fn get(url: &str) -> (u16, Value) {
    let r = reqwest::get(url).await.expect("GET");
    let status = r.status().as_u16();
    (status, r.json().await.expect("json"))
}

fn cached(r: &Value) -> u64 {
    r["usage"]["input_tokens_details"]["cached_tokens"]
        .as_u64()
        .expect("cached_tokens")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_previous_response_id_chain_of_three_turns_is_stored_and_reuses_the_cache() {
    let Some(url) = real_server_url() else { return };
    let turn = |input: &str, prev: Option<&str>| {
        let mut body = json!({"input": input, "instructions": "Be brief.",
            "max_output_tokens": 12, "temperature": 0});
        if let Some(p) = prev {
            body["previous_response_id"] = json!(p);
        }
        body
    };
    let r1 = ok(&url, turn("My name is Ada. Say hello.", None)).await;
    let id1 = r1["id"].as_str().expect("id");
    let r2 = ok(&url, turn("Name a colour.", Some(id1))).await;
    let id2 = r2["id"].as_str().expect("id");
    let r3 = ok(&url, turn("What is my name?", Some(id2))).await;
    assert_eq!(r3["previous_response_id"], id2);
    let tokens = |r: &Value| r["usage"]["input_tokens"].as_u64().expect("input_tokens");
    assert!(tokens(&r1) < tokens(&r2) && tokens(&r2) < tokens(&r3));
    assert!(cached(&r2) > 0, "turn 2 reuses turn 1's blocks: {r2}");
    assert!(cached(&r3) > cached(&r2), "turn 3 reuses more: {r3}");
    // Each turn is retrievable at once, with the input it was given.
    let (status, got) = get(&format!("{url}/v1/responses/{id2}")).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["output"], r2["output"]);
    let (_, items) = get(&format!("{url}/v1/responses/{id2}/input_items")).await;
    let texts: Vec<&str> = items["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|i| i["content"][0]["text"].as_str())
        .collect();
    assert_eq!(texts, ["Name a colour."], "{items}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_false_leaves_nothing_and_a_streamed_response_is_retrievable_at_its_end() {
    let Some(url) = real_server_url() else { return };
    let r = ok(
        &url,
        json!({"input": "Hi", "store": false, "max_output_tokens": 4}),
    )
    .await;
    assert_eq!(r["store"], false);
    let (status, v) = get(&format!(
        "{url}/v1/responses/{}",
        r["id"].as_str().expect("id")
    ))
    .await;
    assert_eq!(status, 404, "store false writes nothing: {v}");
    let (status, v) = create(
        &url,
        json!({"input": "More", "previous_response_id": r["id"], "max_output_tokens": 4}),
    )
    .await;
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["error"]["param"], "previous_response_id");

    let evs = events(&url, json!({"input": "Hi", "max_output_tokens": 4})).await;
    let (name, last) = evs.last().expect("events");
    assert_eq!(name, "response.incomplete");
    let id = last["response"]["id"].as_str().expect("id");
    let (status, got) = get(&format!("{url}/v1/responses/{id}")).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["status"], "incomplete");
    assert_eq!(got["output"], last["response"]["output"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_in_a_conversation_reads_its_items_and_appends_its_turn() {
    let Some(url) = real_server_url() else { return };
    let conv = post(
        &format!("{url}/v1/conversations"),
        json!({"items": [{"type": "message", "role": "user", "content": "My name is Ada."}]}),
    )
    .await;
    assert_eq!(conv.status().as_u16(), 200);
    let conv: Value = conv.json().await.expect("json");
    let cid = conv["id"].as_str().expect("id");
    let r = ok(
        &url,
        json!({"input": "What is my name?", "conversation": cid, "max_output_tokens": 8,
               "temperature": 0}),
    )
    .await;
    assert_eq!(r["conversation"]["id"], cid, "{r}");
    let alone = ok(
        &url,
        json!({"input": "What is my name?", "max_output_tokens": 8, "temperature": 0}),
    )
    .await;
    let tokens = |r: &Value| r["usage"]["input_tokens"].as_u64().expect("input_tokens");
    assert!(
        tokens(&r) > tokens(&alone),
        "the conversation's items are in the prompt"
    );
    let (_, items) = get(&format!("{url}/v1/conversations/{cid}/items?order=asc")).await;
    let data = items["data"].as_array().expect("data");
    assert_eq!(
        data.len(),
        3,
        "the first item, this input and the reply: {items}"
    );
    assert_eq!(data[1]["content"][0]["text"], "What is my name?");
    assert_eq!(data[2]["role"], "assistant");
}

/// A response that fails after `response.created` (here `--request-timeout` passing while the
/// slow model generates), on the raw SSE frames: the lifecycle events, then exactly one
/// terminal event, `response.failed` with the error and the text so far, sequence numbers
/// +1 each, one response id throughout; the WebSocket frames are the same events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_after_created_ends_the_frames_with_one_response_failed() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let options = wick::api::HttpOptions {
        request_timeout: Some(std::time::Duration::from_millis(400)),
        ..wick::api::HttpOptions::default()
    };
    let state = wick::api::AppState::with_options("tiny", options);
    state.set_ready(crate::common::slow_served(
        std::time::Duration::from_millis(20),
    ));
    let server = crate::common::TestServer::start(state).await;
    let body = json!({"model": "tiny", "input": "hi", "max_output_tokens": 200, "temperature": 0});
    let sse = events(&server.url, body.clone()).await;

    let (ws_url, _) = (
        format!("{}/v1/responses", server.url.replace("http://", "ws://")),
        (),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url)
        .await
        .expect("handshake");
    let mut create = body;
    create["type"] = json!("response.create");
    ws.send(Message::Text(create.to_string().into()))
        .await
        .expect("send");
    let mut frames = Vec::new();
    while let Some(Ok(msg)) = ws.next().await {
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(t.as_str()).expect("JSON");
            let done = v["type"] == "response.failed" || v["type"] == "response.completed";
            frames.push(v);
            if done {
                break;
            }
        }
    }

    for (how, events) in [
        (
            "sse",
            sse.iter()
                .map(|(n, d)| (n.clone(), d.clone()))
                .collect::<Vec<_>>(),
        ),
        (
            "ws",
            frames
                .iter()
                .map(|f| (f["type"].as_str().unwrap_or("").to_string(), f.clone()))
                .collect(),
        ),
    ] {
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            &names[..2],
            ["response.created", "response.in_progress"],
            "{how}"
        );
        assert!(
            names.contains(&"response.output_text.delta"),
            "{how}: {names:?}"
        );
        let terminals: Vec<&&str> = names
            .iter()
            .filter(|n| {
                [
                    "response.completed",
                    "response.incomplete",
                    "response.failed",
                    "error",
                ]
                .contains(n)
            })
            .collect();
        assert_eq!(terminals, [&"response.failed"], "{how}: {names:?}");
        assert_eq!(names.last(), Some(&"response.failed"), "{how}");
        for (i, (n, d)) in events.iter().enumerate() {
            assert_eq!(&d["type"], n, "{how}");
            assert_eq!(d["sequence_number"], i as u64, "{how}: {n}");
        }
        let id = &events[0].1["response"]["id"];
        let failed = &events.last().expect("terminal").1["response"];
        assert_eq!(
            (&failed["id"], &failed["status"]),
            (id, &json!("failed")),
            "{how}"
        );
        assert_eq!(failed["error"]["code"], "server_error", "{how}: {failed}");
        let message = failed["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("timeout") || message.contains("took longer"),
            "{how}: {message}"
        );
    }
    drop(ws);
    server.stop().await;
}
