//! The Responses API's WebSocket mode on the real test model: `GET /v1/responses` upgraded,
//! driven by tokio-tungstenite as a client would: chains of `store: false` turns through the
//! connection's own history, the event order on the frames, the one-response-at-a-time rule,
//! bad frames, a closed connection freeing its sequence, auth on the handshake, `generate:
//! false`, and shutdown closing with 1001.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as Msg;
use wick::api::auth::{ApiKeys, AuthConfig};
use wick::api::AppState;

use crate::common::{model_path, real_server_url, tiny_config, tiny_served, TestServer};

type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn ws_url(http: &str) -> String {
    format!("{}/v1/responses", http.replace("http://", "ws://"))
}

async fn connect(http: &str) -> Client {
    let mut req = ws_url(http).into_client_request().expect("request");
    req.headers_mut().insert(
        "openai-beta",
        "responses_websockets=2026-02-06".parse().expect("header"),
    );
    let (ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("handshake");
    assert_eq!(resp.status().as_u16(), 101);
    ws
}

async fn send(ws: &mut Client, v: Value) {
    ws.send(Msg::Text(v.to_string().into()))
        .await
        .expect("send");
}

/// The next text frame as JSON (pings skipped), within 120 s.
async fn recv(ws: &mut Client) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(120), ws.next())
            .await
            .expect("a frame within 120 s")
            .expect("the socket is open")
            .expect("a frame");
        match msg {
            Msg::Text(t) => return serde_json::from_str(t.as_str()).expect("JSON"),
            Msg::Ping(_) | Msg::Pong(_) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

fn terminal(v: &Value) -> bool {
    matches!(
        v["type"].as_str(),
        Some("response.completed" | "response.incomplete" | "response.failed" | "error")
    )
}

/// Frames up to and including the terminal one (or an error event).
async fn turn(ws: &mut Client) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let v = recv(ws).await;
        let done = terminal(&v);
        out.push(v);
        if done {
            return out;
        }
    }
}

fn create(input: &str, extra: Value) -> Value {
    let mut v = json!({"type": "response.create", "model": "smol", "input": input,
        "max_output_tokens": 12, "temperature": 0});
    if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
        o.extend(e);
    }
    v
}

fn completed(events: &[Value]) -> &Value {
    let last = events.last().expect("a terminal event");
    assert!(
        matches!(
            last["type"].as_str(),
            Some("response.completed" | "response.incomplete")
        ),
        "{last}"
    );
    &last["response"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_store_false_turns_continues_over_one_connection() {
    let Some(url) = real_server_url() else { return };
    let mut ws = connect(&url).await;
    send(
        &mut ws,
        create("My name is Ana. Say hello to me.", json!({"store": false})),
    )
    .await;
    let first = turn(&mut ws).await;
    let r1 = completed(&first).clone();
    let mut prev = r1["id"].as_str().expect("id").to_string();
    let mut input_tokens = r1["usage"]["input_tokens"].as_u64().expect("usage");
    for question in ["What is my name?", "Say it once more."] {
        send(
            &mut ws,
            create(
                question,
                json!({"store": false, "previous_response_id": prev}),
            ),
        )
        .await;
        let events = turn(&mut ws).await;
        let r = completed(&events);
        assert_eq!(r["previous_response_id"], prev.as_str());
        let usage = &r["usage"];
        let now = usage["input_tokens"].as_u64().expect("usage");
        // The earlier turns are in the prompt, and their full blocks come from the cache.
        assert!(now > input_tokens, "{now} <= {input_tokens}");
        assert!(
            usage["input_tokens_details"]["cached_tokens"]
                .as_u64()
                .is_some_and(|c| c >= 16),
            "{usage}"
        );
        input_tokens = now;
        prev = r["id"].as_str().expect("id").to_string();
    }
    // The history lives on that connection only: with store false nothing else knows it.
    let mut other = connect(&url).await;
    send(
        &mut other,
        create(
            "And now?",
            json!({"store": false, "previous_response_id": prev}),
        ),
    )
    .await;
    let e = recv(&mut other).await;
    assert_eq!(e["type"], "error", "{e}");
    assert_eq!(e["status"], 404, "{e}");
    assert_eq!(e["error"]["param"], "previous_response_id", "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_frames_are_the_sse_events_in_order() {
    let Some(url) = real_server_url() else { return };
    let mut ws = connect(&url).await;
    send(&mut ws, create("Count to five.", json!({"store": false}))).await;
    let events = turn(&mut ws).await;
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(types[0], "response.created", "{types:?}");
    assert_eq!(types[1], "response.in_progress", "{types:?}");
    assert!(types.contains(&"response.output_item.added"), "{types:?}");
    assert!(types.contains(&"response.output_text.done"), "{types:?}");
    assert!(types.contains(&"response.output_item.done"), "{types:?}");
    let last = types.last().expect("terminal");
    assert!(
        *last == "response.completed" || *last == "response.incomplete",
        "{types:?}"
    );
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["sequence_number"], i as u64, "{e}");
    }
    let id = &events[0]["response"]["id"];
    assert!(id.as_str().is_some_and(|s| s.starts_with("resp_")));
    assert_eq!(&events.last().expect("terminal")["response"]["id"], id);
    let deltas: String = events
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .filter_map(|e| e["delta"].as_str())
        .collect();
    let done = events
        .iter()
        .find(|e| e["type"] == "response.output_text.done")
        .expect("text done");
    assert_eq!(done["text"].as_str(), Some(deltas.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_create_while_one_runs_is_refused_and_the_first_completes() {
    let Some(url) = real_server_url() else { return };
    let mut ws = connect(&url).await;
    send(
        &mut ws,
        create(
            "Write a long story.",
            json!({"store": false, "max_output_tokens": 48}),
        ),
    )
    .await;
    assert_eq!(recv(&mut ws).await["type"], "response.created");
    send(&mut ws, create("Hi", json!({"store": false}))).await;
    let events = turn_past_errors(&mut ws).await;
    let refused: Vec<&Value> = events.iter().filter(|e| e["type"] == "error").collect();
    assert_eq!(refused.len(), 1, "{events:?}");
    assert_eq!(
        refused[0]["error"]["code"],
        "conversation_already_has_active_response"
    );
    let r = completed(&events);
    assert!(r["output"].as_array().is_some_and(|o| !o.is_empty()), "{r}");
}

/// Frames up to the response's terminal event, error events included on the way.
async fn turn_past_errors(ws: &mut Client) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let v = recv(ws).await;
        let done = terminal(&v) && v["type"] != "error";
        out.push(v);
        if done {
            return out;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_error_events_and_the_connection_stays_usable() {
    let Some(url) = real_server_url() else { return };
    let mut ws = connect(&url).await;
    let big = create(&"x".repeat((1 << 20) + 1), json!({}));
    for (frame, code) in [
        (big.to_string(), "message_too_large"),
        ("not json at all".to_string(), "invalid_json"),
        (
            json!({"type": "session.update"}).to_string(),
            "unknown_event_type",
        ),
    ] {
        ws.send(Msg::Text(frame.into())).await.expect("send");
        let e = recv(&mut ws).await;
        assert_eq!(e["type"], "error", "{e}");
        assert_eq!(e["error"]["code"], code, "{e}");
    }
    // A request the Responses API refuses: the POST route's 400, naming the field.
    send(&mut ws, create("Hi", json!({"temperature": 7}))).await;
    let e = recv(&mut ws).await;
    assert_eq!(e["status"], 400, "{e}");
    assert_eq!(e["error"]["param"], "temperature", "{e}");
    send(&mut ws, create("Hi", json!({"store": false}))).await;
    let events = turn(&mut ws).await;
    completed(&events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_false_warms_the_cache_for_the_next_turn() {
    let Some(url) = real_server_url() else { return };
    let mut ws = connect(&url).await;
    let long = "Here is some context about lighthouses, their keepers and the sea. ".repeat(4);
    send(
        &mut ws,
        create(&long, json!({"store": false, "generate": false})),
    )
    .await;
    let events = turn(&mut ws).await;
    let warm = completed(&events);
    assert_eq!(warm["output"], json!([]), "{warm}");
    let id = warm["id"].as_str().expect("id").to_string();
    send(
        &mut ws,
        create(
            "Summarise it.",
            json!({"store": false, "previous_response_id": id}),
        ),
    )
    .await;
    let events = turn(&mut ws).await;
    let usage = &completed(&events)["usage"];
    assert!(
        usage["input_tokens_details"]["cached_tokens"]
            .as_u64()
            .is_some_and(|c| c >= 32),
        "{usage}"
    );
}

/// A server of its own on the real model, so that its engine's counts are this test's.
async fn own_real_server() -> Option<TestServer> {
    let path = model_path()?;
    let loaded = wick::model::load(path.to_str().expect("utf-8"), &candle_core::Device::Cpu)
        .expect("test model loads");
    let config = wick::engine::EngineConfig {
        kv_cache_bytes: Some(64 << 20),
        ..wick::engine::EngineConfig::default()
    };
    let engine = wick::engine::Engine::start(loaded.model, config).expect("engine starts");
    let state = AppState::new("smol", wick::api::DEFAULT_MAX_BODY_BYTES);
    let template = loaded.chat_template.map(std::sync::Arc::new);
    state.set_ready(wick::api::Served::new(
        engine,
        std::sync::Arc::new(loaded.tokenizer),
        template,
    ));
    Some(TestServer::start(state).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_connection_mid_generation_frees_the_sequence() {
    let Some(server) = own_real_server().await else {
        return;
    };
    let mut ws = connect(&server.url).await;
    send(
        &mut ws,
        create(
            "Tell me everything about the sea.",
            json!({"store": false, "max_output_tokens": 2000}),
        ),
    )
    .await;
    loop {
        let e = recv(&mut ws).await;
        assert!(!terminal(&e), "{e}");
        if e["type"] == "response.output_text.delta" {
            break;
        }
    }
    let engine = server.state.engine().expect("engine").clone();
    drop(ws);
    let deadline = Instant::now() + Duration::from_secs(5);
    while engine.stats().running != 0 || engine.stats().waiting != 0 {
        assert!(
            Instant::now() < deadline,
            "still running: {:?}",
            engine.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The next request, on a new connection, is served at once.
    let started = Instant::now();
    let mut ws = connect(&server.url).await;
    send(
        &mut ws,
        create("Hi", json!({"store": false, "max_output_tokens": 4})),
    )
    .await;
    completed(&turn(&mut ws).await);
    assert!(started.elapsed() < Duration::from_secs(30));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handshake_needs_a_key_when_keys_are_set() {
    let auth = AuthConfig {
        keys: ApiKeys::from_plain(&["sk-ws-right"]).expect("keys"),
        metrics_require_key: false,
    };
    let state = AppState::with_auth("tiny", 4096, auth);
    state.set_ready(tiny_served(tiny_config()));
    let server = TestServer::start(state).await;
    match tokio_tungstenite::connect_async(ws_url(&server.url)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 401);
            let body: Value =
                serde_json::from_slice(resp.body().as_deref().unwrap_or_default()).expect("JSON");
            assert_eq!(body["error"]["code"], "invalid_api_key");
        }
        other => panic!("expected a 401, got {other:?}"),
    }
    let mut req = ws_url(&server.url).into_client_request().expect("request");
    req.headers_mut().insert(
        "authorization",
        "Bearer sk-ws-right".parse().expect("header"),
    );
    let (_ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("handshake");
    assert_eq!(resp.status().as_u16(), 101);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_get_is_an_error_and_shutdown_closes_sockets_with_1001() {
    let state = AppState::new("tiny", 4096);
    state.set_ready(tiny_served(tiny_config()));
    let server = TestServer::start(state).await;
    let r = reqwest::get(format!("{}/v1/responses", server.url))
        .await
        .expect("request");
    assert!(
        matches!(r.status().as_u16(), 400 | 405 | 426),
        "{}",
        r.status()
    );
    let v: Value = r.json().await.expect("JSON");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let mut ws = connect(&server.url).await;
    let stopping = tokio::spawn(server.stop());
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Msg::Close(f)))) => break f.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(code, Some(1001));
    stopping.await.expect("the server stops");
}

/// `url`'s socket with `key` as the bearer.
async fn connect_as(http: &str, key: &str) -> Client {
    let mut req = ws_url(http).into_client_request().expect("request");
    let bearer = format!("Bearer {key}").parse().expect("header");
    req.headers_mut().insert("authorization", bearer);
    let (ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("handshake");
    assert_eq!(resp.status().as_u16(), 101);
    ws
}

/// The requests `/v1/usage?group_by=key` counts for `key`, once it has counted `n` in all.
async fn usage_rows(url: &str, admin: &str, key: &str, n: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v: Value = reqwest::Client::new()
            .get(format!("{url}/v1/usage?group_by=key"))
            .bearer_auth(admin)
            .send()
            .await
            .expect("usage")
            .json()
            .await
            .expect("JSON");
        let data = v["data"].as_array().cloned().unwrap_or_default();
        let count = |k: Option<&str>| -> u64 {
            data.iter()
                .filter(|d| k.is_none_or(|k| d["key"] == k))
                .filter_map(|d| d["requests"].as_u64())
                .sum()
        };
        if count(None) >= n || Instant::now() > deadline {
            return count(Some(key));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A turn on a socket is a request of its key: while it runs it holds the key's one
/// concurrency slot (an HTTP request of that key gets 429, and a turn while an HTTP request
/// runs gets a 429 error event), and each turn writes its own usage row; the handshake none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_turns_hold_the_keys_concurrency_slot_and_write_usage_rows() {
    use wick::store::{UsageWriter, WriterConfig, DB_FILE};
    let dir = tempfile::tempdir().expect("tempdir");
    let fast = WriterConfig {
        flush_every: Duration::from_millis(20),
        ..WriterConfig::default()
    };
    let (log, writer) = UsageWriter::start(dir.path().join(DB_FILE), fast).expect("writer");
    let keys = ApiKeys::from_toml(
        "[[keys]]\nname = \"ops\"\nkey = \"sk-ws-ops\"\nadmin = true\n\n\
         [[keys]]\nname = \"team\"\nkey = \"sk-ws-team\"\nmax_concurrent_requests = 1\n",
    )
    .expect("keys");
    let options = wick::api::HttpOptions {
        auth: std::sync::Arc::new(AuthConfig {
            keys,
            metrics_require_key: false,
        }),
        usage: Some(log),
        ..wick::api::HttpOptions::default()
    };
    let state = AppState::with_options("tiny", options);
    state.set_ready(crate::common::slow_served(Duration::from_millis(20)));
    let server = TestServer::start(state).await;
    let http = reqwest::Client::new();
    let chat = |stream: bool| {
        http.post(format!("{}/v1/chat/completions", server.url))
            .bearer_auth("sk-ws-team")
            .json(&json!({"messages": [{"role": "user", "content": "hi"}],
                          "max_tokens": 30, "stream": stream}))
            .send()
    };

    let mut ws = connect_as(&server.url, "sk-ws-team").await;
    let long = json!({"model": "tiny", "store": false, "max_output_tokens": 30});
    send(&mut ws, create("hello", long.clone())).await;
    assert_eq!(recv(&mut ws).await["type"], "response.created");
    let refused = chat(false).await.expect("request");
    assert_eq!(refused.status().as_u16(), 429, "the turn holds the slot");
    completed(&turn(&mut ws).await);
    assert_eq!(chat(false).await.expect("request").status().as_u16(), 200);

    // An HTTP stream of the key runs (its head is out): the socket's turn is refused.
    let running = chat(true).await.expect("request");
    assert_eq!(running.status().as_u16(), 200);
    send(&mut ws, create("hello", long)).await;
    let event = recv(&mut ws).await;
    assert_eq!(
        (&event["type"], &event["status"]),
        (&json!("error"), &json!(429)),
        "{event}"
    );
    running.text().await.expect("the stream ends");

    // Two turns, three HTTP requests; the handshake is no usage of its own.
    assert_eq!(usage_rows(&server.url, "sk-ws-ops", "team", 5).await, 5);
    drop(ws);
    server.stop().await;
    writer.finish();
}

/// An open socket keeps its connection's `--max-connections` place: with one place, another
/// client waits until the socket closes, then is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_socket_holds_its_connection_place() {
    let options = wick::api::HttpOptions {
        connections: wick::api::ConnLimits {
            max_connections: 1,
            ..wick::api::ConnLimits::default()
        },
        ..wick::api::HttpOptions::default()
    };
    let state = AppState::with_options("tiny", options);
    state.set_ready(tiny_served(tiny_config()));
    let server = TestServer::start(state).await;
    let health = format!("{}/health/live", server.url);
    let mut ws = connect(&server.url).await;
    let waited = tokio::time::timeout(Duration::from_millis(700), reqwest::get(&health)).await;
    assert!(
        waited.is_err(),
        "a second client was served beside the open socket"
    );
    ws.close(None).await.expect("close");
    let served = tokio::time::timeout(Duration::from_secs(10), reqwest::get(&health))
        .await
        .expect("served once the socket closed")
        .expect("request");
    assert_eq!(served.status().as_u16(), 200);
    server.stop().await;
}
